"""python -m evpy: programs run with evpy as the loop; the asyncio REPL.

Each run is a subprocess. The REPL tests feed stdin and run on both
``python -m evpy`` and ``python -m asyncio`` (the behaviour evpy's REPL
copies); running a program is evpy's alone.
"""
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

TIMEOUT = 30

# What a program sees: the loop of asyncio.run(), Runner(),
# new_event_loop() and the policy's get_event_loop(), and whether any
# DeprecationWarning reached it (it runs with -W error).
REPORT = textwrap.dedent('''
    import asyncio, sys, warnings

    async def kind():
        return type(asyncio.get_running_loop()).__module__

    print("run", asyncio.run(kind()))
    with asyncio.Runner() as runner:
        print("runner", runner.run(kind()))
    loop = asyncio.new_event_loop()
    print("new_event_loop", type(loop).__module__)
    loop.close()
    print("argv", sys.argv)
    print("name", __name__)
''')


def run(args, *, cwd=None, input=None, env=None):
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, input=input, capture_output=True,
        timeout=TIMEOUT, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def lines(out):
    return dict(line.split(' ', 1) for line in out.splitlines()
                if ' ' in line)


def expect_evpy(out):
    got = lines(out)
    assert got['run'] == 'evpy.loop'
    assert got['runner'] == 'evpy.loop'
    assert got['new_event_loop'] == 'evpy.loop'
    return got


@pytest.mark.evpy_only
def test_script_runs_on_evpy(kind, tmp_path):
    script = tmp_path / 'prog.py'
    script.write_text(REPORT + 'import helper\nprint("helper", helper.X)\n')
    (tmp_path / 'helper.py').write_text('X = 42\n')
    # -W error: no DeprecationWarning (3.14+: the policy) reaches it; run
    # from elsewhere: the script's directory is sys.path[0].
    rc, out, err = run(['-W', 'error', '-m', 'evpy', str(script), 'a', '-b'],
                       cwd=os.path.dirname(tmp_path))
    assert rc == 0, err
    got = expect_evpy(out)
    assert got['argv'] == repr([str(script), 'a', '-b'])
    assert got['name'] == '__main__'
    assert got['helper'] == '42'


@pytest.mark.evpy_only
def test_module_runs_on_evpy(kind, tmp_path):
    pkg = tmp_path / 'pkg'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / '__main__.py').write_text(REPORT)
    rc, out, err = run(['-W', 'error', '-m', 'evpy', '-m', 'pkg', 'x'],
                       cwd=tmp_path)
    assert rc == 0, err
    got = expect_evpy(out)
    assert got['argv'] == repr([str(pkg / '__main__.py'), 'x'])
    assert got['name'] == '__main__'


@pytest.mark.evpy_only
def test_code_runs_on_evpy(kind):
    rc, out, err = run(['-W', 'error', '-m', 'evpy', '-c', REPORT, 'y'])
    assert rc == 0, err
    got = expect_evpy(out)
    assert got['argv'] == repr(['-c', 'y'])


@pytest.mark.evpy_only
def test_policy_get_event_loop_is_evpy(kind):
    # Code that still asks the policy for the main thread's loop.
    code = ('import asyncio, warnings\n'
            'warnings.simplefilter("ignore", DeprecationWarning)\n'
            'policy = asyncio.get_event_loop_policy()\n'
            'print(type(policy).__module__)\n'
            'loop = policy.new_event_loop()\n'
            'print(type(loop).__module__)\n'
            'loop.close()\n')
    rc, out, err = run(['-m', 'evpy', '-c', code])
    assert rc == 0, err
    assert out.split() == ['evpy.policy', 'evpy.loop']


@pytest.mark.evpy_only
def test_without_policies_new_event_loop_is_replaced(kind):
    # What python -m evpy does where asyncio has no policies (3.16).
    code = ('import asyncio\n'
            'from evpy.__main__ import install\n'
            'print(install(use_policy=False))\n'
            'async def kind():\n'
            '    return type(asyncio.get_running_loop()).__module__\n'
            'print(asyncio.run(kind()))\n'
            'loop = asyncio.new_event_loop()\n'
            'print(type(loop).__module__)\n'
            'loop.close()\n')
    rc, out, err = run(['-W', 'error', '-c', code])
    assert rc == 0, err
    assert out.split() == ['factory', 'evpy.loop', 'evpy.loop']


@pytest.mark.evpy_only
def test_exit_status_and_errors(kind, tmp_path):
    script = tmp_path / 'exit.py'
    script.write_text('import sys\nsys.exit(7)\n')
    assert run(['-m', 'evpy', str(script)])[0] == 7
    script.write_text('raise ValueError("boom")\n')
    rc, out, err = run(['-m', 'evpy', str(script)])
    assert rc == 1
    assert 'ValueError: boom' in err
    rc, out, err = run(['-m', 'evpy', str(tmp_path / 'missing.py')])
    assert rc != 0 and 'missing.py' in err


@pytest.mark.evpy_only
@pytest.mark.parametrize('args', [['-x'], ['-m'], ['-c']])
def test_usage_errors(kind, args):
    rc, out, err = run(['-m', 'evpy', *args])
    assert rc == 2
    assert 'usage: python -m evpy' in err


@pytest.mark.evpy_only
def test_help(kind):
    rc, out, err = run(['-m', 'evpy', '--help'])
    assert rc == 0 and out.startswith('usage: python -m evpy')


def repl(kind, text):
    env = dict(os.environ)
    env.pop('PYTHONSTARTUP', None)
    return run(['-m', kind], input=text.encode(), env=env)


def test_repl_top_level_await(kind):
    # One-line statements: 3.13.0's own asyncio REPL cannot read a
    # multi-line block from a pipe.
    rc, out, err = repl(kind, textwrap.dedent('''\
        await asyncio.sleep(0.01, result=42)
        loop = asyncio.get_running_loop()
        print(type(loop).__module__)
        nap = asyncio.sleep
        print(sum(await asyncio.gather(nap(0, 1), nap(0, 5))))
        '''))
    assert rc == 0, err
    module = 'evpy.loop' if kind == 'evpy' else 'asyncio.unix_events'
    printed = out.replace('>>> ', '').split()
    assert printed == ['42', module, '6']
    assert 'asyncio REPL' in err
    assert err.rstrip().endswith('exiting asyncio REPL...')


def test_repl_shows_errors_and_goes_on(kind):
    rc, out, err = repl(kind, textwrap.dedent('''\
        await asyncio.to_thread(int, "x")
        1 / 0
        print("still here")
        '''))
    assert rc == 0, err
    assert "ValueError: invalid literal for int() with base 10: 'x'" in err
    assert 'ZeroDivisionError' in err
    assert 'still here' in out


@pytest.mark.evpy_only
def test_repl_blocks_and_clean_tracebacks(kind):
    rc, out, err = repl(kind, textwrap.dedent('''\
        async def fail(x):
            await asyncio.sleep(0)
            raise ValueError(x)

        await fail("in a task")
        '''))
    assert rc == 0, err
    # The traceback starts at the statement, without the REPL's frames.
    tb = err[err.index('Traceback'):]
    assert tb.splitlines()[1:4] == [
        '  File "<stdin>", line 1, in <module>',
        '  File "<stdin>", line 3, in fail',
        'ValueError: in a task']


def test_repl_system_exit_status(kind):
    rc, out, err = repl(kind, 'await asyncio.sleep(0)\nraise SystemExit(3)\n'
                              'print("not reached")\n')
    assert rc == 3
    assert 'not reached' not in out


def test_repl_ctrl_c_cancels_the_statement(kind):
    env = dict(os.environ)
    env.pop('PYTHONSTARTUP', None)
    proc = subprocess.Popen(
        [sys.executable, '-m', kind], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        # SIGINT may be ignored here (a background job): not in the REPL.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        proc.stdin.write(b'print("started", flush=True); '
                         b'await asyncio.sleep(60)\n')
        proc.stdin.flush()
        seen = b''
        deadline = time.monotonic() + TIMEOUT
        while b'started' not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                seen += os.read(proc.stdout.fileno(), 4096)
        assert b'started' in seen
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(b'print("after")\n', timeout=TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert b'KeyboardInterrupt' in err
    assert b'after' in out


@pytest.mark.evpy_only
def test_repl_context_persists(kind):
    # evpy runs every statement in one context (asyncio's REPL does so
    # from 3.15 on).
    rc, out, err = repl(kind, textwrap.dedent('''\
        import contextvars
        var = contextvars.ContextVar("var")
        _ = var.set("kept")
        await asyncio.sleep(0)
        print(var.get("lost"))
        '''))
    assert rc == 0, err
    assert 'kept' in out
