"""Entry points: the event loop policy and evpy.run().

Nothing here is needed to use evpy: asyncio.run(main(),
loop_factory=evpy.new_event_loop) works on 3.12+, and evpy.run() on every
supported Python. The policy is for code that still installs one (policies
are deprecated from Python 3.14 on).
"""

import asyncio
import asyncio.events

from .loop import Loop, new_event_loop

# On Unix the default policy also manages child watchers (3.11-3.13): keep
# that API working for code that calls it, though evpy reaps its children
# itself. 3.14 renamed the base classes with a leading underscore and
# deprecated the public aliases; the private names are looked up first so
# no DeprecationWarning fires.
_BasePolicy = (getattr(asyncio, 'unix_events', None)
               and getattr(asyncio.unix_events, '_UnixDefaultEventLoopPolicy',
                           None))
if not _BasePolicy:
    _BasePolicy = getattr(asyncio.events, '_BaseDefaultEventLoopPolicy', None)
if not _BasePolicy:
    _BasePolicy = asyncio.events.BaseDefaultEventLoopPolicy


class EventLoopPolicy(_BasePolicy):
    """asyncio event loop policy whose loops are evpy loops.

    ``asyncio.set_event_loop_policy(evpy.EventLoopPolicy())``
    """

    _loop_factory = Loop

    def __repr__(self):
        return f'<{type(self).__name__}>'


def run(main, *, debug=None):
    """Run coroutine `main` on a new evpy loop and return its result, as
    asyncio.run() does (the loop is closed afterwards)."""
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError(
            'evpy.run() cannot be called from a running event loop')
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
