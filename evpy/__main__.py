"""python -m evpy: run a program, or asyncio's REPL, with evpy as the loop.

    python -m evpy script.py [args]     run a script
    python -m evpy -m module [args]     run a module (as python -m module)
    python -m evpy -c code [args]       run a string of code
    python -m evpy                      the asyncio REPL on an evpy loop

Before the program runs, evpy becomes the loop for everything that makes
one without naming a loop: asyncio.run(), asyncio.Runner(),
asyncio.new_event_loop() and the policy's get_event_loop(). On 3.11-3.15
that is done by installing evpy.EventLoopPolicy (3.14 and 3.15 deprecate
asyncio.set_event_loop_policy(); the warning from this one call is kept
from the program, and the program's own policy calls warn as usual). A
Python without policies (3.16 removes them) has nothing to install a
policy into: there asyncio.new_event_loop itself, which asyncio.run()
and asyncio.Runner() call when given no loop_factory, is replaced by
evpy.new_event_loop.
"""

import asyncio
import asyncio.events
import os
import runpy
import sys
import warnings

from .loop import new_event_loop
from .policy import EventLoopPolicy, _base_policy

USAGE = """\
usage: python -m evpy [script.py | -m module | -c code] [args ...]

Runs the program with evpy as asyncio's event loop (asyncio.run(),
asyncio.Runner(), asyncio.new_event_loop() and event loop policies all
give evpy loops). With no program, opens the asyncio REPL on an evpy loop
(top-level await, as python -m asyncio).
"""


def install(use_policy=None):
    """Make evpy the loop asyncio creates when no loop is named.

    Installs evpy.EventLoopPolicy where asyncio has policies (3.11-3.15),
    without letting 3.14's DeprecationWarning for that call reach the
    program; elsewhere (or with use_policy=False) replaces
    asyncio.new_event_loop, which asyncio.run() and Runner() call when they
    are given no loop_factory, by evpy's. Returns 'policy' or 'factory'."""
    if use_policy is None:
        use_policy = _base_policy() is not None
    if use_policy:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            asyncio.set_event_loop_policy(EventLoopPolicy())
        return 'policy'
    asyncio.events.new_event_loop = new_event_loop
    asyncio.new_event_loop = new_event_loop
    return 'factory'


def _run_script(path, args):
    sys.argv = [path, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    runpy.run_path(path, run_name='__main__')


def _run_module(name, args):
    sys.argv = [name, *args]   # runpy puts the module's file in argv[0]
    sys.path[0] = os.getcwd()
    runpy.run_module(name, run_name='__main__', alter_sys=True)


def _run_code(source, args):
    sys.argv = ['-c', *args]
    sys.path[0] = ''
    module = type(sys)('__main__')
    sys.modules['__main__'] = module
    exec(compile(source, '<string>', 'exec'), module.__dict__)


def main(argv=None):
    """Run `python -m evpy` with the arguments argv (sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ('-h', '--help'):
        sys.stdout.write(USAGE)
        return 0
    if argv and argv[0] in ('-m', '-c') and len(argv) < 2:
        sys.stderr.write(f'python -m evpy: {argv[0]} needs an argument\n'
                         + USAGE)
        return 2
    if argv and argv[0].startswith('-') and argv[0] not in ('-m', '-c'):
        sys.stderr.write(f'python -m evpy: unknown option {argv[0]}\n'
                         + USAGE)
        return 2
    install()
    if not argv:
        from .repl import main as repl_main
        return repl_main()
    if argv[0] == '-m':
        _run_module(argv[1], argv[2:])
    elif argv[0] == '-c':
        _run_code(argv[1], argv[2:])
    else:
        _run_script(argv[0], argv[1:])
    return 0


if __name__ == '__main__':
    sys.exit(main())
