"""SubprocessMixin: loop.subprocess_exec and loop.subprocess_shell (what
asyncio.create_subprocess_exec/_shell call), and child reaping.

The transport is asyncio's own BaseSubprocessTransport (it reaches the
child's pipes through loop.connect_read_pipe/connect_write_pipe, so the C
pipe transports carry the data) with a subprocess.Popen ``_start``, as
asyncio's _UnixSubprocessTransport.

Children are reaped without asyncio's (deprecated) child watchers:

* a pidfd (os.pidfd_open, Linux >= 5.3) watched with loop.add_reader; when
  it becomes readable the child has exited and os.waitpid(pid, WNOHANG)
  reaps it. No thread, no signal handler, works from any thread's loop.
* otherwise (no pidfd_open, or it failed) one thread per child blocks in
  os.waitpid and reports back with call_soon_threadsafe, as asyncio's
  ThreadedChildWatcher does.

The transport's close() checks whether the child is still running with
waitid(WNOWAIT), which does not reap it, before Popen.kill(); send_signal()
does nothing once the child has been reaped (its pid may be reused). If
something else reaps the child (Popen.poll(), wait()), the return code is
read from the Popen object.
"""

import logging
import os
import subprocess
import threading
import types
import weakref

from asyncio import base_subprocess

from ._compat import PY312 as _PY312
from .process import ChildSignals, ProcessTransport, can_spawn

logger = logging.getLogger('asyncio')


def _format_pipe(fd):
    if fd == subprocess.PIPE:
        return '<pipe>'
    if fd == subprocess.STDOUT:
        return '<stdout>'
    return repr(fd)


def _exitcode(status):
    return os.waitstatus_to_exitcode(status)


class SubprocessTransport(ChildSignals,
                          base_subprocess.BaseSubprocessTransport):
    """asyncio.SubprocessTransport for a subprocess.Popen child."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(
            args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=False, bufsize=bufsize, **kwargs)

    def _child_running(self):
        """True while the child has not exited; never reaps it."""
        proc = self._proc
        if proc.returncode is not None:
            return False
        try:
            info = os.waitid(os.P_PID, proc.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False  # reaped by someone else
        except OSError:
            return proc.poll() is None  # pragma: no cover
        return info is None

    def close(self):
        """Close the pipes and kill the child if it is still running."""
        if self._closed:
            return
        self._closed = True
        try:
            for proto in self._pipes.values():
                if proto is None:
                    continue
                proto.pipe.close()
        finally:
            # Kill even if a pipe could not be closed (its loop is closed
            # when an unclosed transport is garbage collected).
            self._kill_if_running()

    def _kill_if_running(self):
        if (self._proc is not None and self._returncode is None
                and self._child_running()):
            if self._loop.get_debug():
                logger.warning('Close running child process: kill %r', self)
            try:
                # Popen.kill() as asyncio does (tests and users hook it);
                # if its poll() reaps the child, the reaper reads the
                # return code from the Popen object.
                self._proc.kill()
            except (ProcessLookupError, PermissionError):
                pass
            # _proc is kept: _connect_pipes() may still be running.

    def _exit_known(self):
        return self._proc.returncode is not None


class SubprocessMixin:
    """subprocess_exec / subprocess_shell and the child reaper."""

    def _log_subprocess(self, msg, stdin, stdout, stderr):
        info = [msg]
        if stdin is not None:
            info.append(f'stdin={_format_pipe(stdin)}')
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f'stdout=stderr={_format_pipe(stdout)}')
        else:
            if stdout is not None:
                info.append(f'stdout={_format_pipe(stdout)}')
            if stderr is not None:
                info.append(f'stderr={_format_pipe(stderr)}')
        logger.debug(' '.join(info))

    async def subprocess_shell(self, protocol_factory, cmd, *,
                               stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               universal_newlines=False,
                               shell=True, bufsize=0,
                               encoding=None, errors=None, text=None,
                               **kwargs):
        """Run cmd through the shell; return (transport, protocol)."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError('cmd must be a string')
        if universal_newlines:
            raise ValueError('universal_newlines must be False')
        if not shell:
            raise ValueError('shell must be True')
        _check_popen_args(bufsize, text, encoding, errors)
        protocol = protocol_factory()
        debug_log = None
        if self._debug:
            # Not the command itself: it may be long or hold secrets.
            debug_log = f'run shell command {cmd!r}'
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, **kwargs)
        if debug_log is not None:
            logger.info('%s: %r', debug_log, transport)
        return transport, protocol

    async def subprocess_exec(self, protocol_factory, program, *args,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              universal_newlines=False,
                              shell=False, bufsize=0,
                              encoding=None, errors=None, text=None,
                              **kwargs):
        """Run program with args; return (transport, protocol)."""
        if universal_newlines:
            raise ValueError('universal_newlines must be False')
        if shell:
            raise ValueError('shell must be False')
        if bufsize or text or encoding is not None or errors is not None:
            _check_popen_args(bufsize, text, encoding, errors)
        popen_args = (program,) + args
        protocol = protocol_factory()
        debug_log = None
        if self._debug:
            debug_log = f'execute program {program!r}'
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        self._check_closed()  # before a child exists
        # _make_subprocess_transport's fast path, inlined: one coroutine
        # frame less per child (the spawn_* cost rows).
        if can_spawn(self, kwargs):
            transport = ProcessTransport(self, protocol, popen_args, False,
                                         stdin, stdout, stderr, kwargs)
            try:
                await _yield()  # connection_made() runs
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                transport.close()
                await transport._wait()
                raise
        else:
            transport = await self._make_subprocess_transport(
                protocol, popen_args, False, stdin, stdout, stderr, bufsize,
                **kwargs)
        if debug_log is not None:
            logger.info('%s: %r', debug_log, transport)
        return transport, protocol

    async def _make_subprocess_transport(self, protocol, args, shell,
                                         stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        # Before the child exists (asyncio spawns it, then fails on the
        # closed loop and leaves the child and its pipes behind).
        self._check_closed()
        if can_spawn(self, kwargs):
            transport = ProcessTransport(self, protocol, args, shell, stdin,
                                         stdout, stderr, kwargs, extra)
            waiter = _yield()  # connection_made() runs
        else:
            waiter = self.create_future()
            transport = SubprocessTransport(
                self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                waiter=waiter, extra=extra, **kwargs)
            self._watch_child(transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    # -- reaping --------------------------------------------------------------

    def _watch_child(self, transport):
        """Arrange for transport._process_exited(returncode) to be called
        once the child has exited and been reaped."""
        pid = transport.get_pid()
        pidfd_open = getattr(os, 'pidfd_open', None)
        if pidfd_open is not None:
            try:
                pidfd = pidfd_open(pid)
            except OSError:
                pass  # ENOSYS (old kernel), EMFILE...: use a thread
            else:
                # Closes the pidfd exactly once: when the child is reaped,
                # or if the transport is garbage collected without that
                # ever happening (its loop was closed first).
                close_pidfd = weakref.finalize(transport, os.close, pidfd)
                try:
                    self.add_reader(pidfd, self._child_pidfd_ready,
                                    transport, pid, pidfd, close_pidfd)
                except BaseException:
                    close_pidfd()
                    raise
                return
        self._start_waitpid_thread(transport, pid)

    def _child_pidfd_ready(self, transport, pid, pidfd, close_pidfd):
        # The pidfd is done with whatever waitpid() says: an unexpected
        # error goes to the exception handler (as on asyncio's loop) but
        # neither leaks the pidfd nor leaves it polled.
        self.remove_reader(pidfd)
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            wpid, status = pid, None  # reaped elsewhere
        finally:
            close_pidfd()
        if wpid == 0:
            # Not reapable yet (cannot happen once the pidfd is readable,
            # but never spin on it): wait in a thread instead.
            self._start_waitpid_thread(transport, pid)
            return
        returncode = _returncode(transport, pid, status)
        if _PY312:
            self.call_soon(transport._process_exited, returncode)
        else:
            # asyncio 3.11 skips one loop iteration here.
            self.call_soon(self.call_soon, transport._process_exited,
                           returncode)

    def _start_waitpid_thread(self, transport, pid):
        thread = threading.Thread(target=_waitpid_thread,
                                  name=f'evpy-waitpid-{pid}',
                                  args=(self, transport, pid), daemon=True)
        thread.start()

    def _child_reaped_in_thread(self, transport, returncode):
        if _PY312:
            transport._process_exited(returncode)
        else:
            self.call_soon(transport._process_exited, returncode)


@types.coroutine
def _yield():
    """Let the loop run what is scheduled (as awaiting a waiter that
    the same callbacks complete would)."""
    yield


def _check_popen_args(bufsize, text, encoding, errors):
    if bufsize != 0:
        raise ValueError('bufsize must be 0')
    if text:
        raise ValueError('text must be False')
    if encoding is not None:
        raise ValueError('encoding must be None')
    if errors is not None:
        raise ValueError('errors must be None')


def _returncode(transport, pid, status):
    """The child's return code from its wait status, recorded on the Popen
    object at once (so nothing signals a reaped, maybe reused, pid)."""
    proc = transport._proc
    if status is not None:
        returncode = _exitcode(status)
    elif proc is not None and proc.returncode is not None:
        returncode = proc.returncode  # reaped by Popen.poll()/wait()
    else:
        returncode = 255
        logger.warning('child process pid %d exit status already read: '
                       'will report returncode 255', pid)
    if proc is not None and proc.returncode is None:
        proc.returncode = returncode
    return returncode


def _waitpid_thread(loop, transport, pid):
    """Body of the fallback reaper thread of one child."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            status = None
        break
    returncode = _returncode(transport, pid, status)
    try:
        loop.call_soon_threadsafe(loop._child_reaped_in_thread, transport,
                                  returncode)
    except RuntimeError:
        # The loop is closed: nobody is left to tell.
        logger.warning('Loop %r that handles pid %r is closed', loop, pid)
