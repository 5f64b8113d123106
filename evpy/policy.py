"""Entry points: the event loop policy and evpy.run().

Nothing here is needed to use evpy: asyncio.run(main(),
loop_factory=evpy.new_event_loop) works on 3.12+, and evpy.run() on every
supported Python. The policy is for code that still installs one (policies
are deprecated from Python 3.14 on).
"""

import asyncio
import asyncio.events

from .loop import Loop, new_event_loop

_NO_POLICIES = ('asyncio has no event loop policies on this Python (3.14 '
                'deprecated them, 3.16 removes them): use evpy.run(main()) '
                'or asyncio.run(main(), loop_factory=evpy.new_event_loop)')


def _base_policy():
    """asyncio's default policy class, or None where asyncio has none.

    On Unix the default policy also manages child watchers (3.11-3.13):
    subclassing it keeps that API working for code that calls it, though
    evpy reaps its children itself. 3.14 renamed the base classes with a
    leading underscore and deprecated the public aliases; the private
    names are looked up first so no DeprecationWarning fires."""
    base = getattr(getattr(asyncio, 'unix_events', None),
                   '_UnixDefaultEventLoopPolicy', None)
    if base is None:
        base = getattr(asyncio.events, '_BaseDefaultEventLoopPolicy', None)
    if base is None:
        base = getattr(asyncio.events, 'BaseDefaultEventLoopPolicy', None)
    return base


def _policy_class(base):
    if base is None:
        class EventLoopPolicy:
            """Stands in where asyncio has no policies any more (3.16):
            `import evpy` keeps working, and making a policy says what to
            use instead."""

            def __init__(self):
                raise RuntimeError(_NO_POLICIES)
        return EventLoopPolicy

    class EventLoopPolicy(base):
        """asyncio event loop policy whose loops are evpy loops.

        ``asyncio.set_event_loop_policy(evpy.EventLoopPolicy())``
        """

        _loop_factory = Loop

        def __repr__(self):
            return f'<{type(self).__name__}>'
    return EventLoopPolicy


EventLoopPolicy = _policy_class(_base_policy())


def run(main, *, debug=None):
    """Run coroutine `main` on a new evpy loop and return its result, as
    asyncio.run() does (the loop is closed afterwards)."""
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError(
            'evpy.run() cannot be called from a running event loop')
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
