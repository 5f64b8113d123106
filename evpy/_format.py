"""Cold-path formatting for the C core: handle reprs, creation stacks and
the text of asyncio's log messages. Called from C only when needed (repr,
debug mode, errors), never per callback in the normal path."""

import sys
from asyncio import format_helpers

_DEBUG_ARG = sys.version_info >= (3, 13)


def callback_source(callback, args, debug=False):
    """``func(args) at file:line`` as asyncio prints callbacks."""
    if _DEBUG_ARG:
        return format_helpers._format_callback_source(callback, args,
                                                      debug=debug)
    return format_helpers._format_callback_source(callback, args)


def handle_repr(handle):
    """The repr asyncio gives a Handle or TimerHandle."""
    info = [type(handle).__name__]
    if handle.cancelled():
        info.append('cancelled')
    if hasattr(handle, 'when'):
        info.append(f'when={handle._when}')
    callback = handle._callback
    if callback is not None:
        info.append(callback_source(callback, handle._args,
                                    debug=handle._loop.get_debug()))
    tb = handle._source_traceback
    if tb:
        frame = tb[-1]
        info.append(f'created at {frame[0]}:{frame[1]}')
    return '<{}>'.format(' '.join(info))


def extract_stack():
    """Creation stack of a handle, from the Python frame that called into
    the loop (C methods have no frame of their own)."""
    return format_helpers.extract_stack(sys._getframe(1))


def format_handle(handle):
    """What asyncio names in a slow-callback warning: the task a step
    belongs to, or the handle."""
    callback = handle._callback
    owner = getattr(callback, '__self__', None)
    from asyncio import Task
    if isinstance(owner, Task):
        return repr(owner)
    return str(handle)
