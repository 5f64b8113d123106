"""Cold-path formatting for the C core: handle reprs, creation stacks and
the text of asyncio's log messages. Called from C only when needed (repr,
debug mode, errors), never per callback in the normal path."""

import sys
from asyncio import format_helpers

from ._compat import PY313

# format_helpers' functions take a `debug` argument from 3.13 on.
_DEBUG_ARG = PY313


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
    belongs to, or the handle (I/O events arrive already named, as a
    str: see io_event_repr)."""
    if isinstance(handle, str):
        return handle
    callback = handle._callback
    owner = getattr(callback, '__self__', None)
    from asyncio import Task
    if isinstance(owner, Task):
        return repr(owner)
    return str(handle)


# -- naming callbacks for health reports and slow-callback warnings -----------
# (called from C only when a callback was slow: never on the hot path)

def _code_site(code):
    return f'{code.co_filename}:{code.co_firstlineno}'


def _unwrap(func):
    """The function behind partials and bound methods."""
    import functools
    for _ in range(16):
        if isinstance(func, functools.partial):
            func = func.func
        elif hasattr(func, '__func__'):
            func = func.__func__
        else:
            break
    return func


def _coro_site(coro):
    """``qualname() running at file:line`` for a coroutine (its current
    line while suspended, its first line once done)."""
    name = getattr(coro, '__qualname__', None) or type(coro).__qualname__
    frame = (getattr(coro, 'cr_frame', None)
             or getattr(coro, 'gi_frame', None))
    if frame is not None:
        return (f'{name}() running at '
                f'{frame.f_code.co_filename}:{frame.f_lineno}')
    code = getattr(coro, 'cr_code', None) or getattr(coro, 'gi_code', None)
    if code is not None:
        return f'{name}() at {_code_site(code)}'
    return f'{name}()'


def callable_site(callback):
    """``qualname() at file:line`` for any callable (defined at)."""
    func = _unwrap(callback)
    name = (getattr(callback, '__qualname__', None)
            or getattr(func, '__qualname__', None) or repr(callback))
    code = getattr(func, '__code__', None)
    if code is None:
        return f'{name}()'
    return f'{name}() at {_code_site(code)}'


def _handle_site(handle):
    callback = handle._callback
    if callback is None:
        return repr(handle)
    from asyncio import Task
    owner = getattr(callback, '__self__', None)
    if isinstance(owner, Task):
        return f'{owner.get_name()} {_coro_site(owner.get_coro())}'
    return callable_site(callback)


_READ, _WRITE = 1, 2


def _io_method(transport, tag, kind):
    """The protocol method an I/O event ends in, bound."""
    protocol = getattr(transport, '_protocol', None)
    if protocol is None:
        return None
    if tag == _WRITE:
        return getattr(protocol, 'resume_writing', None)
    if kind == 'datagram':
        return getattr(protocol, 'datagram_received', None)
    from asyncio import BufferedProtocol
    if isinstance(protocol, BufferedProtocol):
        return getattr(protocol, 'buffer_updated', None)
    return getattr(protocol, 'data_received', None)


def _io_site(transport, tag, kind):
    method = _io_method(transport, tag, kind)
    if method is None:
        return f'{type(transport).__name__} I/O'
    return callable_site(method)


def describe_entry(obj, tag, kind=''):
    """What a ready-queue entry runs: a Handle (tag 0) or a transport's
    read/write event; ``qualname() at file:line``."""
    try:
        if tag == 0:
            return _handle_site(obj)
        return _io_site(obj, tag, kind)
    except Exception as exc:  # naming must never break the loop
        return f'<{type(obj).__name__}: {exc!r}>'


def io_event_repr(transport, tag, kind=''):
    """An I/O event as slow-callback warnings name it."""
    what = 'read' if tag == _READ else 'write'
    return (f'<I/O {kind} {what}: {describe_entry(transport, tag, kind)} '
            f'of {transport!r}>')
