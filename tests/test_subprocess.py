"""Subprocesses: asyncio.create_subprocess_exec/_shell and
loop.subprocess_exec/_shell (every stdio mode, large communicate(), exit
codes, signals, many concurrent children, a loop in another thread, the
transport/protocol API and its call order) and argument checking."""
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
from asyncio import base_subprocess

import pytest
from nethelpers import runner

TIMEOUT = 30.0
PY = sys.executable
PIPE = subprocess.PIPE


run = runner(TIMEOUT)


def assert_reaped(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# -------------------------------------------------------------- stdio modes

def test_pipes_for_all_three(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; data = sys.stdin.buffer.read(); '
                      'sys.stdout.buffer.write(data.upper()); '
                      'sys.stderr.buffer.write(b"err:" + data)',
            stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert proc.pid > 0
        out, err = await proc.communicate(b'some input')
        assert (out, err) == (b'SOME INPUT', b'err:some input')
        assert proc.returncode == 0
        assert_reaped(proc.pid)
    run(loop, main())


def test_devnull_and_stderr_to_stdout(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; print(repr(sys.stdin.read()), end=""); '
                      'print("E", end="", file=sys.stderr)',
            stdin=subprocess.DEVNULL, stdout=PIPE, stderr=subprocess.STDOUT)
        assert proc.stdin is None and proc.stderr is None
        out, err = await proc.communicate()
        assert out == b"''E" and err is None
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'print("lost")', stdout=subprocess.DEVNULL)
        assert proc.stdout is None
        assert await proc.wait() == 0
    run(loop, main())


def test_fd_and_file_objects(loop, tmp_path):
    out_path = tmp_path / 'out'
    in_path = tmp_path / 'in'
    in_path.write_bytes(b'from a file')

    async def main():
        # A file object for stdin, an fd for stdout, a pipe's fd for stderr.
        r, w = os.pipe()
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT)
        with open(in_path, 'rb') as stdin:
            proc = await asyncio.create_subprocess_exec(
                PY, '-c', 'import sys; d = sys.stdin.buffer.read(); '
                          'sys.stdout.buffer.write(d); '
                          'sys.stderr.buffer.write(d[::-1])',
                stdin=stdin, stdout=fd, stderr=w)
        os.close(fd)
        os.close(w)
        assert proc.stdin is proc.stdout is proc.stderr is None
        assert await proc.wait() == 0
        with open(r, 'rb') as rf:
            assert rf.read() == b'elif a morf'
        assert out_path.read_bytes() == b'from a file'
    run(loop, main())


def test_large_communicate(loop):
    size = 20 * 1024 * 1024
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest().encode()
    child = ('import sys, hashlib\n'
             'h = hashlib.sha256()\n'
             'r, w = sys.stdin.buffer, sys.stdout.buffer\n'
             'while True:\n'
             '    chunk = r.read1(1 << 16)\n'
             '    if not chunk:\n'
             '        break\n'
             '    h.update(chunk)\n'
             '    w.write(chunk)\n'
             'w.flush()\n'
             'sys.stderr.write(h.hexdigest())\n')

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', child, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate(data)
        assert proc.returncode == 0
        assert err == digest  # the child got every input byte, in order
        assert len(out) == size
        assert hashlib.sha256(out).hexdigest().encode() == digest
    run(loop, main(), timeout=60)


def test_communicate_child_not_reading(loop):
    async def main():
        # The child exits without reading: the broken stdin pipe is not an
        # error for communicate().
        proc = await asyncio.create_subprocess_exec(
            'true', stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(b'x' * (8 << 20))
        assert (out, err, proc.returncode) == (b'', None, 0)
    run(loop, main())


def test_streams_readline_and_drain(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            'cat', stdin=PIPE, stdout=PIPE)
        for i in range(100):
            proc.stdin.write(b'line %d\n' % i)
            await proc.stdin.drain()
            assert await proc.stdout.readline() == b'line %d\n' % i
        proc.stdin.close()
        await proc.stdin.wait_closed()
        assert await proc.stdout.read() == b''
        assert await proc.wait() == 0
    run(loop, main())


# ---------------------------------------------------- exit codes and signals

def test_exit_codes(loop):
    async def main():
        p = await asyncio.create_subprocess_exec(PY, '-c',
                                                 'raise SystemExit(7)')
        assert await p.wait() == 7
        p = await asyncio.create_subprocess_shell('exit 3')
        assert await p.wait() == 3
        assert p.returncode == 3
        p = await asyncio.create_subprocess_shell(
            'echo $((6 * 7))', stdout=PIPE)
        assert await p.communicate() == (b'42\n', None)
        assert p.returncode == 0
        p = await asyncio.create_subprocess_exec('true')
        await p.wait()
        assert await p.wait() == 0  # waiting again is fine
    run(loop, main())


def test_signals(loop):
    child = ('import signal, sys, time\n'
             'signal.signal(signal.SIGUSR1, lambda *a: sys.exit(42))\n'
             'print("ready", flush=True)\n'
             'time.sleep(30)\n')

    async def main():
        p = await asyncio.create_subprocess_exec(PY, '-c', child, stdout=PIPE)
        assert await p.stdout.readline() == b'ready\n'
        p.send_signal(signal.SIGUSR1)
        assert await p.wait() == 42

        p = await asyncio.create_subprocess_exec('sleep', '30')
        p.terminate()
        assert await p.wait() == -signal.SIGTERM

        p = await asyncio.create_subprocess_exec('sleep', '30')
        p.kill()
        assert await p.wait() == -signal.SIGKILL
        # The process is gone (and reaped): no signal reaches anyone.
        with pytest.raises(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        assert_reaped(p.pid)
    run(loop, main())


def test_many_concurrent_children(loop):
    async def one():
        p = await asyncio.create_subprocess_exec('true')
        return p.pid, await p.wait()

    async def main():
        results = await asyncio.gather(*(one() for _ in range(200)))
        assert len({pid for pid, _ in results}) == 200
        assert all(code == 0 for _, code in results)
        for pid, _ in results:
            assert_reaped(pid)  # no zombie left behind
    run(loop, main(), timeout=60)


def test_loop_in_another_thread(loop):
    result = {}

    async def main():
        p = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; sys.stdout.write(sys.stdin.read()); '
                      'sys.exit(5)', stdin=PIPE, stdout=PIPE)
        out, _ = await p.communicate(b'threaded')
        s = await asyncio.create_subprocess_exec('sleep', '30')
        s.kill()
        return out, p.returncode, await s.wait()

    def target():
        try:
            result['value'] = run(loop, main())
        except BaseException as exc:
            result['error'] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(TIMEOUT + 5)
    assert not thread.is_alive()
    if 'error' in result:
        raise result['error']
    assert result['value'] == (b'threaded', 5, -signal.SIGKILL)


# ------------------------------------------- transport and protocol interface

class Recorder(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.exited = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def pipe_data_received(self, fd, data):
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(('pipe_lost', fd, exc))

    def process_exited(self):
        self.events.append('exited')
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)


def test_protocol_calls_and_transport_api(loop):
    async def main():
        tr, pr = await loop.subprocess_exec(
            lambda: Recorder(loop), PY, '-c',
            'import sys; sys.stdout.write(sys.stdin.read()); '
            'sys.stderr.write("e"); sys.exit(3)')
        assert isinstance(tr, asyncio.SubprocessTransport)
        assert pr.events == ['made']
        pid = tr.get_pid()
        assert pid > 0 and tr.get_returncode() is None
        assert tr.get_extra_info('subprocess').pid == pid
        stdin = tr.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(tr.get_pipe_transport(1), asyncio.ReadTransport)
        assert isinstance(tr.get_pipe_transport(2), asyncio.ReadTransport)
        assert tr.get_pipe_transport(3) is None
        stdin.write(b'echoed')
        stdin.close()
        assert await pr.exited == 3
        assert await pr.lost is None
        assert tr.get_returncode() == 3
        assert pr.data == {1: bytearray(b'echoed'), 2: bytearray(b'e')}
        ev = pr.events
        assert ev[0] == 'made' and ev[-1] == 'lost'
        assert sorted(e[1] for e in ev if e[0] == 'pipe_lost') == [0, 1, 2]
        assert all(e[2] is None for e in ev if e[0] == 'pipe_lost')
        assert ev.count('exited') == 1 and len(ev) == 6
        tr.close()
        assert tr.is_closing()
        assert_reaped(pid)
    run(loop, main())


def test_stdin_pipe_is_not_readable(loop):
    # The stdin transport is a write pipe: asyncio's refuses the
    # ReadTransport methods with NotImplementedError.
    async def main():
        tr, pr = await loop.subprocess_exec(
            lambda: Recorder(loop), PY, '-c', 'import sys; sys.stdin.read()',
            stdin=PIPE, stdout=None, stderr=None)
        stdin = tr.get_pipe_transport(0)
        for method in (stdin.pause_reading, stdin.resume_reading,
                       stdin.is_reading):
            with pytest.raises(NotImplementedError):
                method()
        stdin.write(b'still writable')
        stdin.close()
        assert await pr.exited == 0
        await pr.lost
        tr.close()
    run(loop, main())


def test_call_order(loop):
    def shape(events):
        """pipe_connection_lost calls with the fd order left out."""
        out = []
        for e in events:
            if isinstance(e, tuple):
                assert e[2] is None
                if out and isinstance(out[-1], set):
                    out[-1].add(e[1])
                    continue
                e = {e[1]}
            out.append(e)
        return out

    async def main():
        # The child closes its output, then exits: pipes first.
        tr, pr = await loop.subprocess_shell(
            lambda: Recorder(loop), 'exec >&- 2>&-; sleep 0.1',
            stdin=subprocess.DEVNULL)
        await pr.lost
        assert shape(pr.events) == ['made', {1, 2}, 'exited', 'lost']
        tr.close()
        # A grandchild keeps the pipes open after the child exits.
        tr, pr = await loop.subprocess_shell(
            lambda: Recorder(loop), 'sleep 0.2 & exit 0',
            stdin=subprocess.DEVNULL)
        await pr.lost
        assert shape(pr.events) == ['made', 'exited', {1, 2}, 'lost']
        tr.close()
    run(loop, main())


def test_transport_close_kills_child(loop):
    async def main():
        tr, pr = await loop.subprocess_shell(
            lambda: Recorder(loop), 'exec sleep 30',
            stdin=None, stdout=None, stderr=None)
        assert tr.get_pipe_transport(0) is None
        tr.close()
        assert await pr.exited == -signal.SIGKILL
        assert await pr.lost is None
        assert pr.events == ['made', 'exited', 'lost']
    run(loop, main())


def test_popen_keywords_pass_through(loop, tmp_path):
    async def main():
        r, w = os.pipe()
        p = await asyncio.create_subprocess_exec(
            PY, '-c', 'import os, sys; os.write(int(sys.argv[1]), b"fd"); '
                      'print(os.getcwd(), os.environ["EVPY_X"], '
                      'os.getsid(0) == os.getpid())', str(w),
            stdout=PIPE, cwd=str(tmp_path), env={'EVPY_X': 'yes'},
            pass_fds=(w,), start_new_session=True)
        os.close(w)
        out, _ = await p.communicate()
        assert out.split() == [str(tmp_path).encode(), b'yes', b'True']
        assert os.read(r, 10) == b'fd'
        os.close(r)
    run(loop, main())


# ------------------------------------------------------------------- errors

def test_bad_arguments(loop):
    P = asyncio.SubprocessProtocol

    async def main():
        bad = [dict(universal_newlines=True), dict(text=True),
               dict(encoding='utf-8'), dict(errors='strict'),
               dict(bufsize=1), dict(bufsize=-1)]
        for kw in bad:
            with pytest.raises(ValueError):
                await loop.subprocess_exec(P, 'true', **kw)
            with pytest.raises(ValueError):
                await loop.subprocess_shell(P, 'true', **kw)
            with pytest.raises(ValueError):
                await asyncio.create_subprocess_exec('true', **kw)
        with pytest.raises(ValueError, match='shell must be False'):
            await loop.subprocess_exec(P, 'true', shell=True)
        with pytest.raises(ValueError, match='shell must be True'):
            await loop.subprocess_shell(P, 'true', shell=False)
        with pytest.raises(ValueError, match='cmd must be a string'):
            await loop.subprocess_shell(P, ['true'])
        with pytest.raises(ValueError, match='cmd must be a string'):
            await asyncio.create_subprocess_shell(['echo', 'x'])
        with pytest.raises(TypeError):
            await asyncio.create_subprocess_exec(['true'])
    run(loop, main())


def test_spawn_failures_leave_nothing_behind(loop, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(
                str(tmp_path / 'no-such-program'),
                stdin=PIPE, stdout=PIPE, stderr=PIPE)
        with pytest.raises(OSError):
            await asyncio.create_subprocess_exec(
                'true', cwd=str(tmp_path / 'no-such-dir'), stdout=PIPE)
        # The loop is still fine afterwards.
        p = await asyncio.create_subprocess_exec('true')
        assert await p.wait() == 0
    run(loop, main())


@pytest.mark.evpy_only
def test_reaper_thread_without_pidfd(loop, monkeypatch):
    # umask= takes the subprocess.Popen path, which needs pidfd_open().
    monkeypatch.delattr(os, 'pidfd_open', raising=False)

    async def main():
        ps = [await asyncio.create_subprocess_exec(
              PY, '-c', f'raise SystemExit({i})', umask=0o022)
              for i in range(5)]
        assert [await p.wait() for p in ps] == list(range(5))
        p = await asyncio.create_subprocess_exec('sleep', '30')
        p.kill()
        assert await p.wait() == -signal.SIGKILL
    run(loop, main())


def _pidfd_links():
    links = []
    for fd in os.listdir('/proc/self/fd'):
        try:
            links.append(os.readlink(f'/proc/self/fd/{fd}'))
        except OSError:
            pass  # the directory listing's own fd
    return [link for link in links if 'pidfd' in link]


@pytest.mark.skipif(not hasattr(os, 'pidfd_open'), reason='needs pidfds')
@pytest.mark.expect_handler_calls
@pytest.mark.parametrize('extra', [{}, {'umask': 0o022}],
                         ids=['spawn', 'popen'])
def test_pidfd_closed_when_waitpid_fails(loop, kind, extra):
    # An unexpected error from os.waitpid (replaced here; evpy's reaper
    # calls a replaced one instead of waitpid() in C) goes to the
    # exception handler, and the pidfd is closed (and no longer polled)
    # all the same.
    if kind == 'asyncio' and sys.version_info < (3, 14):
        pytest.skip("asyncio's loop reaps with pidfds from 3.14")
    from unittest import mock
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; sys.stdin.read()', stdin=PIPE, **extra)
        assert len(_pidfd_links()) == 1
        with mock.patch.object(os, 'waitpid',
                               side_effect=OSError('unexpected')) as m:
            proc.stdin.close()
            while not m.called:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)  # a polled pidfd would fire again
            assert m.call_count == 1
        assert _pidfd_links() == []
        # Nobody reaped the child: do it, and tell the transport.
        os.waitpid(proc.pid, 0)
        proc._transport._process_exited(0)
        assert await proc.wait() == 0

    run(loop, main())
    assert [type(ctx.get('exception')) for ctx in errors] == [OSError]


@pytest.mark.evpy_only
@pytest.mark.expect_handler_calls
def test_reaper_error_closes_pidfd(loop):
    # evpy's reaper (C, csrc/proctransport.c): an exception while reaping
    # goes to the exception handler, and the pidfd is closed and no longer
    # polled all the same.  Injected where the reaper calls back into
    # Python: the child was reaped elsewhere (waitpid() says ECHILD).
    from unittest import mock
    from evpy.process import ProcessTransport
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import time; time.sleep(30)')
        assert len(_pidfd_links()) == 1
        with mock.patch.object(ProcessTransport, '_reaped_elsewhere',
                               side_effect=OSError('unexpected')) as m:
            # Kill and reap it before the loop looks at the pidfd.
            os.kill(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            while not m.called:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)  # a polled pidfd would fire again
            assert m.call_count == 1
        assert _pidfd_links() == []
        assert proc.returncode is None
        proc._transport._process_exited(-9)
        assert await proc.wait() == -9

    run(loop, main())
    assert [type(ctx.get('exception')) for ctx in errors] == [OSError]
    assert errors[0]['transport'] is not None


@pytest.mark.evpy_only
@pytest.mark.filterwarnings('ignore::ResourceWarning')
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_loop_closed_with_running_child(loop):
    # asyncio (3.12+ with its pidfd watcher) leaks the pidfd and leaves the
    # child running here; evpy closes the pidfd and kills the child once
    # the forgotten transport is collected.
    import gc
    import time

    async def main():
        p = await asyncio.create_subprocess_exec('sleep', '30', stdout=PIPE)
        return p.pid

    pid = run(loop, main())
    loop.close()
    gc.collect()
    links = []
    for fd in os.listdir('/proc/self/fd'):
        try:
            links.append(os.readlink(f'/proc/self/fd/{fd}'))
        except OSError:
            pass  # the directory listing's own fd
    assert not [link for link in links if 'pidfd' in link]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break  # reaped by Popen.__del__
        if wpid:
            assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
            break
        time.sleep(0.01)
    else:
        pytest.fail('the child was not killed')


# ------------------------------------- the spawn path and the Popen path
# evpy starts children in C (_core.spawn) unless a keyword needs Popen
# (umask= here); both must behave as asyncio's loop does.

PATHS = [{}, {'umask': 0o022}]


def _open_fds():
    return sorted(os.listdir('/proc/self/fd'))


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_exec_and_cwd_failures(loop, tmp_path, extra):
    script = tmp_path / 'script'
    script.write_text('#!/bin/sh\necho from-path\n')

    async def main():
        before = _open_fds()
        missing = str(tmp_path / 'missing')
        with pytest.raises(FileNotFoundError) as e:
            await asyncio.create_subprocess_exec(missing, stdout=PIPE,
                                                 **extra)
        assert e.value.filename == missing
        with pytest.raises(PermissionError) as e:
            await asyncio.create_subprocess_exec(str(script), stdin=PIPE,
                                                 **extra)
        assert e.value.filename == str(script)
        bad_cwd = str(tmp_path / 'no-dir')
        with pytest.raises(FileNotFoundError) as e:
            await asyncio.create_subprocess_exec('true', cwd=bad_cwd,
                                                 stderr=PIPE, **extra)
        assert e.value.filename == bad_cwd
        os.chmod(script, 0o755)
        # A bare name is looked up in env's PATH, as Popen does.
        p = await asyncio.create_subprocess_exec(
            'script', stdout=PIPE, env={'PATH': f'/nonexistent:{tmp_path}'},
            **extra)
        assert await p.communicate() == (b'from-path\n', None)
        assert _open_fds() == before
    run(loop, main())


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_fds_groups_and_signals(loop, extra):
    code = ('import os, sys, signal\n'
            'def is_open(fd):\n'
            '    try:\n'
            '        os.fstat(fd)\n'
            '        return True\n'
            '    except OSError:\n'
            '        return False\n'
            'fds = [int(a) for a in sys.argv[1:]]\n'
            'print([is_open(fd) for fd in fds], os.getpgid(0) == os.getpid(),'
            ' os.getsid(0) == os.getpid())\n')

    async def sigpipe_ignored(**kw):
        p = await asyncio.create_subprocess_exec(
            'grep', 'SigIgn', '/proc/self/status', stdout=PIPE, **kw, **extra)
        out, _ = await p.communicate()
        return bool(int(out.split()[1], 16) & (1 << (signal.SIGPIPE - 1)))

    async def main():
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        os.set_inheritable(w2, True)
        try:
            fds = [str(w1), str(w2)]
            p = await asyncio.create_subprocess_exec(
                PY, '-c', code, *fds, stdout=PIPE, pass_fds=(w1,),
                process_group=0, **extra)
            out, _ = await p.communicate()
            assert out.split() == [b'[True,', b'False]', b'True', b'False']
            p = await asyncio.create_subprocess_exec(
                PY, '-c', code, *fds, stdout=PIPE, close_fds=False,
                start_new_session=True, restore_signals=False, **extra)
            out, _ = await p.communicate()
            assert out.split() == [b'[False,', b'True]', b'True', b'True']
            assert not await sigpipe_ignored()
            assert await sigpipe_ignored(restore_signals=False)
        finally:
            for fd in (r1, w1, r2, w2):
                os.close(fd)
    run(loop, main())


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_stdio_devnull_stdout_and_files(loop, tmp_path, extra):
    async def main():
        with open(tmp_path / 'out', 'wb') as f:
            p = await asyncio.create_subprocess_exec(
                PY, '-c', 'import sys; print(sys.stdin.read() == "",'
                          ' flush=True); print("e", file=sys.stderr)',
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                **extra)
            assert await p.wait() == 0
        assert (tmp_path / 'out').read_bytes() == b'True\ne\n'
        p = await asyncio.create_subprocess_exec(
            PY, '-c', 'print("x")', stdout=PIPE, stderr=subprocess.DEVNULL,
            stdin=PIPE, **extra)
        assert await p.communicate(b'') == (b'x\n', None)
    run(loop, main())


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_extra_info_subprocess_and_signals_after_exit(loop, extra):
    async def main():
        tr, pr = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, 'sleep', '30', stdin=None,
            stdout=None, stderr=None, **extra)
        popen = tr.get_extra_info('subprocess')
        assert isinstance(popen, subprocess.Popen)
        assert popen.pid == tr.get_pid()
        assert list(popen.args[1:]) == ['30']
        assert popen.poll() is None
        assert 'running' in repr(tr)
        tr.send_signal(signal.SIGTERM)
        assert await tr._wait() == -signal.SIGTERM
        assert popen.returncode == -signal.SIGTERM
        assert tr.get_returncode() == -signal.SIGTERM
        await asyncio.sleep(0)
        # Reaped and connection lost: asyncio raises ProcessLookupError.
        with pytest.raises(ProcessLookupError):
            tr.kill()
        tr.close()
        # A Popen made after the exit knows the return code.
        tr, pr = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, 'true', stdin=None, stdout=None,
            stderr=None, **extra)
        assert await tr._wait() == 0
        assert tr.get_extra_info('subprocess').returncode == 0
        tr.close()
    run(loop, main())


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_cancel_create_subprocess_exec(loop, extra):
    async def main():
        before = _open_fds()
        task = asyncio.ensure_future(asyncio.create_subprocess_exec(
            'sleep', '30', stdin=PIPE, stdout=PIPE, stderr=PIPE, **extra))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await asyncio.sleep(0.01)
            if _open_fds() == before:
                break
        assert _open_fds() == before
    run(loop, main())


def test_replaced_popen_is_called(loop, monkeypatch):
    calls = []
    real = subprocess.Popen

    class Spy(real):
        def __init__(self, *args, **kwargs):
            calls.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(subprocess, 'Popen', Spy)

    async def main():
        p = await asyncio.create_subprocess_exec('true')
        assert await p.wait() == 0
    run(loop, main())
    assert len(calls) == 1


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_transport_state_after_exit(loop, extra):
    # asyncio's BaseSubprocessTransport attributes, which asyncio.subprocess
    # and CPython's tests read: while running, then once connection_lost
    # ran (_loop, _proc and _protocol None; the return code, _wait() and
    # repr still answer).
    async def main():
        tr, pr = await loop.subprocess_exec(
            lambda: Recorder(loop), 'true', stdin=None, stdout=None,
            stderr=None, **extra)
        name = type(tr).__name__
        pid = tr.get_pid()
        assert tr._loop is loop and tr._protocol is pr
        assert tr.get_protocol() is pr
        assert tr._pid == pid and tr._proc is not None
        assert tr._pipes == {} and tr._pending_calls is None
        assert not tr._closed  # (`true` may have exited already)
        assert repr(tr) in (f'<{name} pid={pid} running>',
                            f'<{name} pid={pid} returncode=0>')
        assert await pr.lost is None
        assert tr._returncode == 0 and tr._finished
        assert tr._loop is None and tr._proc is None
        assert tr._protocol is None and tr._exit_waiters is None
        assert await tr._wait() == 0
        assert repr(tr) == f'<{name} pid={pid} returncode=0>'
        with pytest.raises(ProcessLookupError):
            tr.send_signal(signal.SIGTERM)
        assert not tr.is_closing()
        tr.close()
        assert tr.is_closing() and tr._closed
        assert repr(tr) == f'<{name} closed pid={pid} returncode=0>'
        tr.set_protocol(pr)
        assert tr.get_protocol() is pr
        assert_reaped(pid)
    run(loop, main())


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_unclosed_transport_warns(loop, extra):
    import gc

    async def main():
        tr, pr = await loop.subprocess_exec(
            lambda: Recorder(loop), 'true', stdin=None, stdout=None,
            stderr=None, **extra)
        await pr.lost
        return tr

    tr = run(loop, main())
    with pytest.warns(ResourceWarning, match='unclosed transport'):
        del tr
        gc.collect()


def test_debug_logging(loop, caplog):
    import logging
    loop.set_debug(True)
    caplog.set_level(logging.DEBUG, logger='asyncio')

    async def main():
        tr, pr = await loop.subprocess_exec(
            lambda: Recorder(loop), 'true', stdin=None, stdout=None,
            stderr=None)
        await pr.lost
        tr.close()
        return tr.get_pid(), repr(tr)

    pid, name = run(loop, main())
    messages = [r.getMessage() for r in caplog.records]
    assert f"process 'true' created: pid {pid}" in messages
    assert any(m.endswith('exited with return code 0') for m in messages)


def test_wait_from_many_waiters_and_cancelled_one(loop):
    # Every _wait() gets the return code; a cancelled waiter is skipped.
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; sys.stdin.read(); sys.exit(5)',
            stdin=PIPE)
        waiters = [asyncio.ensure_future(proc.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[1].cancel()
        proc.stdin.close()
        assert await waiters[0] == 5 and await waiters[2] == 5
        assert waiters[1].cancelled()
        assert await proc.wait() == 5
    run(loop, main())


# gh-119710 (asyncio 3.14+, and where it was backported): wait() returns
# when the child exits, even while a grandchild keeps a pipe open, and
# _wait()'s futures are a set a cancelled one leaves; before it, wait()
# returned once the pipes were closed too.  evpy does what this asyncio
# does, on both of its paths.
WAKE_AT_EXIT = ('_exit_waiters' in base_subprocess.BaseSubprocessTransport
                ._process_exited.__code__.co_names)

GRANDCHILD = ("import subprocess, sys; subprocess.Popen([sys.executable, "
              "'-c', 'import sys; sys.stdout.write(\"ready\"); "
              "sys.stdout.flush(); sys.stdin.read()'])")


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_wait_while_a_grandchild_holds_the_pipes(loop, extra):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', GRANDCHILD, stdin=PIPE, stdout=PIPE, **extra)
        waiter = asyncio.ensure_future(proc.wait())
        try:
            assert await proc.stdout.readexactly(5) == b'ready'
            while proc.returncode is None:  # the child exited; not its pipes
                await asyncio.sleep(0.005)
            for _ in range(5):
                await asyncio.sleep(0)
            assert waiter.done() == WAKE_AT_EXIT
            assert proc._transport._exit_waiters is None or not WAKE_AT_EXIT
        finally:
            proc.stdin.close()  # the grandchild exits
            assert await proc.stdout.read() == b''
        assert await waiter == 0
        assert proc._transport._exit_waiters is None
    run(loop, main())


@pytest.mark.parametrize('extra', PATHS, ids=['spawn', 'popen'])
def test_cancelled_waits_are_not_kept(loop, extra):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; sys.stdin.read()', stdin=PIPE, **extra)
        for _ in range(10):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.001)
        last = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        waiters = proc._transport._exit_waiters
        assert type(waiters) is (set if WAKE_AT_EXIT else list)
        assert len(waiters) == (1 if WAKE_AT_EXIT else 11)
        proc.stdin.close()
        assert await last == 0
    run(loop, main())
