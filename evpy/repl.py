"""The asyncio REPL on an evpy loop (python -m evpy with no program).

The loop runs in the main thread (so Ctrl-C reaches it as
KeyboardInterrupt); the console reads lines in a second thread and hands
each compiled statement to the loop. A statement that evaluates to a
coroutine (top-level ``await``) runs as a task; Ctrl-C cancels that task
and the REPL goes on. Every statement runs in one context, so context
variables set at the prompt persist (as in asyncio's 3.15 REPL).
"""

import ast
import asyncio
import code
import concurrent.futures
import contextvars
import inspect
import os
import sys
import threading
import types
import warnings

from .loop import new_event_loop


def _banner():
    from . import __version__
    ps1 = getattr(sys, 'ps1', '>>> ')
    return (f'asyncio REPL on evpy {__version__}, Python {sys.version} '
            f'on {sys.platform}\n'
            f'Use "await" directly instead of "asyncio.run()".\n'
            f'Type "help", "copyright", "credits" or "license" for more '
            f'information.\n'
            f'{ps1}import asyncio\n')


class AsyncConsole(code.InteractiveConsole):
    """An interactive console whose code runs on `loop` (another thread),
    with top-level await allowed."""

    def __init__(self, locals, loop):
        super().__init__(locals, filename='<stdin>')
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.context = contextvars.copy_context()
        self.task = None            # the running statement's task
        self.interrupted = False    # Ctrl-C cancelled it
        self.exit_code = None       # set by SystemExit from the code

    def _start(self, compiled, done):
        # On the loop thread, in self.context.
        self.task = None
        self.interrupted = False
        try:
            result = types.FunctionType(compiled, self.locals)()
        except BaseException as exc:
            done.set_exception(exc)
            return
        if not inspect.iscoroutine(result):
            done.set_result(result)
            return
        try:
            self.task = self.loop.create_task(result, context=self.context)
        except BaseException as exc:
            done.set_exception(exc)
            return
        self.task.add_done_callback(
            lambda task: self._finish(task, done))

    def _finish(self, task, done):
        self.task = None
        if task.cancelled():
            done.set_exception(KeyboardInterrupt() if self.interrupted
                               else asyncio.CancelledError())
        elif task.exception() is not None:
            done.set_exception(task.exception())
        else:
            done.set_result(task.result())

    def interrupt(self):
        """Ctrl-C in the loop thread: cancel the running statement."""
        if self.task is not None and not self.task.done():
            self.interrupted = True
            self.task.cancel()

    def runcode(self, compiled):
        """Run one statement on the loop thread and wait for it."""
        done = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._start, compiled, done,
                                       context=self.context)
        try:
            return done.result()
        except SystemExit as exc:
            self.exit_code = exc.code
            raise
        except KeyboardInterrupt:
            self.write('\nKeyboardInterrupt\n')
        except BaseException as exc:
            self._show(exc)

    def _show(self, exc):
        # Start the traceback at the statement: drop the frames of the
        # hand-over to the loop thread.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != '<stdin>':
            tb = tb.tb_next
        try:
            # showtraceback() skips the first entry: this frame's.
            raise exc.with_traceback(tb or exc.__traceback__)
        except BaseException:
            self.showtraceback()


def _read_startup_file(console):
    path = os.environ.get('PYTHONSTARTUP')
    if not path or sys.flags.ignore_environment:
        return
    sys.audit('cpython.run_startup', path)
    with open(path, 'rb') as f:
        source = f.read()
    exec(compile(source, path, 'exec'), console.locals)


def _set_up_readline(console):
    hook = getattr(sys, '__interactivehook__', None)
    if hook is not None:
        sys.audit('cpython.run_interactivehook', hook)
        hook()
    try:
        import readline
        import rlcompleter
    except ImportError:
        return
    readline.set_completer(rlcompleter.Completer(console.locals).complete)


def _console_thread(console, loop):
    try:
        console.write(_banner())
        try:
            _read_startup_file(console)
            console.interact(banner='', exitmsg='')
        except SystemExit as exc:
            if console.exit_code is None:
                console.exit_code = exc.code
    finally:
        # Statements left unawaited when the REPL ends are not errors.
        warnings.filterwarnings(
            'ignore', message=r'^coroutine .* was never awaited$',
            category=RuntimeWarning)
        loop.call_soon_threadsafe(loop.stop)


def _close(loop):
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(
            asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def main():
    """Run the REPL until end of input, exit() or SystemExit; return the
    exit status."""
    sys.audit('cpython.run_stdin')
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    main_module = sys.modules['__main__']
    repl_locals = {'asyncio': asyncio,
                   '__name__': '__main__', '__builtins__': __builtins__,
                   '__doc__': None, '__spec__': None,
                   '__loader__': getattr(main_module, '__loader__', None),
                   '__package__': None}
    console = AsyncConsole(repl_locals, loop)
    _set_up_readline(console)
    thread = threading.Thread(target=_console_thread, args=(console, loop),
                              name='evpy REPL', daemon=True)
    thread.start()
    while True:
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            console.interrupt()
            continue
        break
    console.write('exiting asyncio REPL...\n')
    try:
        _close(loop)
    finally:
        asyncio.set_event_loop(None)
    code_ = console.exit_code
    return 0 if code_ is None else code_
