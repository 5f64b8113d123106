"""evpy.Loop: the C core (``evpy._core.Loop``) plus the cold half of
asyncio's AbstractEventLoop, written in Python: running and closing, tasks,
executors, async generator hooks, signals and exception handling.

The hot methods (call_soon, call_later, call_at, time, create_future,
add_reader and friends, the run loop) are inherited from the C base class.
"""

import asyncio
import collections
import concurrent.futures
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
import weakref

from asyncio import constants

from . import _core, _format, factories, health, tls_records
from ._compat import PY312, PY313, PY314
from .net import NetMixin
from .datagram import DatagramMixin
from .pipes import PipesMixin
from .subprocess import SubprocessMixin

logger = logging.getLogger('asyncio')


# asyncio.iscoroutinefunction() is deprecated from 3.14 (it warns); asyncio
# itself calls its private twin, which older versions do not have.
_iscoroutinefunction = getattr(asyncio.coroutines, '_iscoroutinefunction',
                               None) or asyncio.iscoroutinefunction


def _debug_mode_default():
    """asyncio's default: -X dev or PYTHONASYNCIODEBUG (asked through
    asyncio's own helper where it has one, so patching it works alike)."""
    is_debug = getattr(asyncio.coroutines, '_is_debug_mode', None)
    if is_debug is not None:
        return is_debug()
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment
        and bool(os.environ.get('PYTHONASYNCIODEBUG')))


def _sighandler_noop(signum, frame):
    """Python-level handler for signals the loop watches: the C-level
    handler writes the signal number to the wakeup fd, which is all the
    loop needs."""


def _run_until_complete_cb(fut):
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # The loop stops by itself when the exception propagates.
            return
    fut.get_loop().stop()


_set_result_unless_cancelled = _core.set_result_unless_cancelled


def _delegate(name):
    return property(lambda self: getattr(self._handle, name))


# asyncio (3.14 on, some 3.13 releases) returns a _ThreadSafeHandle from
# call_soon_threadsafe(), and code checks for it. Where that class exists,
# evpy's call_soon_threadsafe() returns an instance of this subclass of it,
# which wraps the C Handle the loop runs; the blocking cancel()/cancelled()
# from other threads is the C Handle's own (csrc/handle.c).
_AsyncioThreadSafeHandle = getattr(asyncio.events, '_ThreadSafeHandle', None)
if (isinstance(_AsyncioThreadSafeHandle, type)
        and issubclass(_AsyncioThreadSafeHandle, asyncio.Handle)):
    class ThreadSafeHandle(_AsyncioThreadSafeHandle):
        """What call_soon_threadsafe() returns: asyncio's thread-safe
        handle type around evpy's Handle (made by the loop, in C)."""

        __slots__ = ('_handle',)

        def __init__(self, *args, **kwargs):
            raise TypeError('ThreadSafeHandle is made by '
                            'loop.call_soon_threadsafe()')

        def cancel(self):
            """Cancel the callback (from any thread; waits while it runs)."""
            self._handle.cancel()

        def cancelled(self):
            """True once the callback was cancelled."""
            return self._handle.cancelled()

        def get_context(self):
            """The contextvars.Context the callback runs in."""
            return self._handle.get_context()

        def _run(self):
            self._handle._run()

        def __repr__(self):
            return repr(self._handle)

        _callback = _delegate('_callback')
        _args = _delegate('_args')
        _cancelled = _delegate('_cancelled')
        _loop = _delegate('_loop')
        _context = _delegate('_context')
        _source_traceback = _delegate('_source_traceback')
        _repr = _delegate('_repr')

    _core._set_threadsafe_handle_type(ThreadSafeHandle)
else:
    ThreadSafeHandle = None


class Loop(_core.Loop, NetMixin, PipesMixin, SubprocessMixin, DatagramMixin,
           asyncio.AbstractEventLoop):
    """An asyncio event loop running on evpy's C reactor."""

    def __init__(self):
        self._default_executor = None
        self._executor_shutdown_called = False
        self._exception_handler = None
        self._task_factory = None
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._signal_handlers = {}
        self._ssock = self._csock = None
        self._old_agen_hooks = None
        self._clock_resolution = time.get_clock_info('monotonic').resolution
        self._tls_buffers = None  # tls_records.py's shared read buffers
        # health (evpy/health.py): the blocking detector and its history
        self._blocking_detector = None
        self._health_incidents = collections.deque(maxlen=10)
        self._health_incident_count = 0
        self.set_debug(_debug_mode_default())

    @property
    def _tls_fast_path(self):
        """True when TLS connections use evpy's record data path
        (tls_records.RecordProtocol), False when asyncio's SSLProtocol on
        this Python lacks what it needs (tls_records.FAST_PATH_PROBLEMS)
        and connections use asyncio's stock data path."""
        return tls_records.FAST_PATH

    def __repr__(self):
        return (f'<{type(self).__name__} running={self.is_running()} '
                f'closed={self.is_closed()} debug={self.get_debug()}>')

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f'unclosed event loop {self!r}', ResourceWarning,
                  source=self)
            if not self.is_running():
                self.close()

    # -- running and stopping -------------------------------------------------

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError('Event loop is closed')

    def _check_running(self):
        if self.is_running():
            raise RuntimeError('This event loop is already running')
        if asyncio.events._get_running_loop() is not None:
            raise RuntimeError(
                'Cannot run the event loop while another loop is running')

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                               finalizer=self._asyncgen_finalizer_hook)
        asyncio.events._set_running_loop(self)

    def _run_forever_cleanup(self):
        asyncio.events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    def run_forever(self):
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            self._run()
        finally:
            self._run_forever_cleanup()

    def run_until_complete(self, future):
        """Run until the future (or coroutine) is done; return its result."""
        self._check_closed()
        self._check_running()
        new_task = not asyncio.isfuture(future)
        future = asyncio.ensure_future(future, loop=self)
        if new_task:
            # An exception raised by the task is raised here: no need to
            # log it as never retrieved.
            future._log_destroy_pending = False
        future.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # Mark the exception retrieved: it propagates from here.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_run_until_complete_cb)
        if not future.done():
            raise RuntimeError('Event loop stopped before Future completed.')
        return future.result()

    def close(self):
        """Close the loop: drop pending callbacks, release the reactor and
        shut the default executor down without waiting."""
        if self.is_running():
            raise RuntimeError('Cannot close a running event loop')
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug('Close %r', self)
        if self._signal_handlers:
            if sys.is_finalizing():
                warnings.warn(f'Closing the loop {self!r} on interpreter '
                              'shutdown stage, skipping signal handlers '
                              'removal', ResourceWarning, source=self)
                self._signal_handlers.clear()
            else:
                for sig in list(self._signal_handlers):
                    self.remove_signal_handler(sig)
        self._close_signal_socket()
        self.disable_blocking_detector()
        self._close()
        self._tls_buffers = None
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def set_debug(self, enabled):
        """Turn debug mode on or off (coroutine origin tracking follows
        it while the loop runs)."""
        super().set_debug(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking,
                                      enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = (
                sys.get_coroutine_origin_tracking_depth())
            sys.set_coroutine_origin_tracking_depth(
                asyncio.coroutines._DEBUG_STACK_DEPTH
                if hasattr(asyncio.coroutines, '_DEBUG_STACK_DEPTH') else 10)
        else:
            sys.set_coroutine_origin_tracking_depth(
                self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    # -- tasks ----------------------------------------------------------------

    # create_task() is C (csrc/loop.c): it makes the plain Task itself when
    # there is no task factory, no debug mode and no keyword but name and
    # context, and calls _create_task_slow() with its arguments otherwise.
    if PY314:
        def _create_task_slow(self, coro, **kwargs):
            """create_task() as asyncio 3.14's: keyword arguments go to the
            task factory or the Task as given (eager_start included)."""
            self._check_closed()
            factory = self._task_factory
            if factory is not None:
                return factory(self, coro, **kwargs)
            task = asyncio.Task(coro, loop=self, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            try:
                return task
            finally:
                # An eagerly started task that failed holds its traceback,
                # which holds this frame: don't let it hold the task too.
                del task
    else:
        def _create_task_slow(self, coro, *, name=None, context=None,
                              **kwargs):
            """create_task() with a task factory, in debug mode, on a
            closed loop or with other keywords (3.13 passes them on)."""
            if kwargs and not PY313:
                raise TypeError('create_task() got an unexpected keyword '
                                f'argument {next(iter(kwargs))!r}')
            self._check_closed()
            factory = self._task_factory
            if factory is None:
                task = asyncio.Task(coro, loop=self, name=name,
                                    context=context, **kwargs)
                if task._source_traceback:
                    del task._source_traceback[-1]
            else:
                if context is None:
                    task = factory(self, coro, **kwargs)
                else:
                    task = factory(self, coro, context=context, **kwargs)
                if PY313:
                    task.set_name(name)
                elif name is not None:
                    task.set_name(name)
            try:
                return task
            finally:
                del task

    def set_task_factory(self, factory):
        """Set the factory create_task() uses (None: asyncio.Task)."""
        if factory is not None and not callable(factory):
            raise TypeError('task factory must be a callable or None')
        self._task_factory = factory

    def get_task_factory(self):
        """The task factory, or None."""
        return self._task_factory

    # -- executors ------------------------------------------------------------

    def run_in_executor(self, executor, func, *args):
        """Run func(*args) in an executor; return an asyncio Future."""
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, 'run_in_executor')
        if executor is None:
            executor = self._default_executor
            if self._executor_shutdown_called:
                raise RuntimeError('Executor shutdown has been called')
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix='asyncio')
                self._default_executor = executor
        return asyncio.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        """Use executor (a ThreadPoolExecutor) for run_in_executor(None)."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError('executor must be ThreadPoolExecutor')
        self._default_executor = executor

    def _check_callback(self, callback, method):
        if (asyncio.iscoroutine(callback)
                or _iscoroutinefunction(callback)):
            raise TypeError(f'coroutines cannot be used with {method}()')
        if not callable(callback):
            raise TypeError(f'a callable object was expected by {method}(), '
                            f'got {callback!r}')

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled,
                                          future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)

    async def _shutdown_default_executor(self, timeout):
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                async with asyncio.timeout(timeout):
                    await future
        except TimeoutError:
            warnings.warn('The executor did not finishing joining its '
                          f'threads within {timeout} seconds.',
                          RuntimeWarning, stacklevel=2)
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    if PY312:
        async def shutdown_default_executor(self, timeout=None):
            """Shut the default executor down and wait for its threads,
            at most `timeout` seconds."""
            await self._shutdown_default_executor(timeout)
    else:
        async def shutdown_default_executor(self):
            """Shut the default executor down and wait for its threads."""
            await self._shutdown_default_executor(None)

    # -- async generators -----------------------------------------------------

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f'asynchronous generator {agen!r} was scheduled after '
                'loop.shutdown_asyncgens() call',
                ResourceWarning, source=self)
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self):
        """Close every async generator still open on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(*[ag.aclose() for ag in closing],
                                       return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler({
                    'message': 'an error occurred during closing of '
                               f'asynchronous generator {agen!r}',
                    'exception': result,
                    'asyncgen': agen,
                })

    # -- exception handling ---------------------------------------------------

    def get_exception_handler(self):
        """The handler set with set_exception_handler(), or None."""
        return self._exception_handler

    def set_exception_handler(self, handler):
        """Set handler(loop, context) as the exception handler (None:
        default_exception_handler())."""
        if handler is not None and not callable(handler):
            raise TypeError('A callable object or None is expected, '
                            f'got {handler!r}')
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log the context at ERROR on the 'asyncio' logger, as asyncio
        does."""
        message = context.get('message') or 'Unhandled exception in event loop'
        exception = context.get('exception')
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        current = self._current_handle
        if ('source_traceback' not in context and current is not None
                and current._source_traceback):
            context['handle_traceback'] = current._source_traceback
        lines = [message]
        for key in sorted(context):
            if key in ('message', 'exception'):
                continue
            value = context[key]
            if key == 'source_traceback':
                tb = ''.join(traceback.format_list(value))
                value = 'Object created at (most recent call last):\n'
                value += tb.rstrip()
            elif key == 'handle_traceback':
                tb = ''.join(traceback.format_list(value))
                value = 'Handle created at (most recent call last):\n'
                value += tb.rstrip()
            else:
                value = repr(value)
            lines.append(f'{key}: {value}')
        logger.error('\n'.join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Pass context to the handler set with set_exception_handler(), or
        to default_exception_handler(); never raises Exceptions."""
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error('Exception in default exception handler',
                             exc_info=True)
            return
        try:
            ctx = None
            if PY312:
                thing = (context.get('task') or context.get('future')
                         or context.get('handle'))
                if thing is not None and hasattr(thing, 'get_context'):
                    ctx = thing.get_context()
            if ctx is not None and hasattr(ctx, 'run'):
                ctx.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler({
                    'message': 'Unhandled error in exception handler',
                    'exception': exc,
                    'context': context,
                })
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error('Exception in default exception handler while '
                             'handling an unexpected error in custom '
                             'exception handler', exc_info=True)

    def _on_callback_error(self, handle, exc):
        """Called by the C core when a callback raised an Exception."""
        source = _format.callback_source(handle._callback, handle._args,
                                         debug=self.get_debug())
        context = {
            'message': f'Exception in callback {source}',
            'exception': exc,
            'handle': handle,
        }
        if handle._source_traceback:
            context['source_traceback'] = handle._source_traceback
        self.call_exception_handler(context)

    def _on_slow_callback(self, handle, seconds):
        """Called by the C core in debug mode for a slow callback."""
        logger.warning('Executing %s took %.3f seconds',
                       _format.format_handle(handle), seconds)

    # -- health (evpy/health.py, docs/health.md) ------------------------------

    def stats(self):
        """A ``evpy.health.LoopStats`` snapshot of this loop's counters:
        iterations, callbacks, I/O events, timers, time running vs waiting,
        the timer lag histogram, the slowest timed callbacks."""
        return health.LoopStats._from_loop(self)

    def set_stats_detail(self, enabled=True, *, slow_floor=None):
        """Detailed statistics: time every callback (two clock reads
        each) for the callback-lag and duration histograms and the slowest
        callbacks table. ``slow_floor`` (seconds, default 0.001): callbacks
        faster than this never enter the table."""
        self._set_stats_detail(bool(enabled),
                               -1.0 if slow_floor is None
                               else float(slow_floor))

    def enable_blocking_detector(self, threshold=0.1, *, hook=None,
                                 log=True):
        """Start a watchdog thread reporting callbacks that run longer
        than ``threshold`` seconds, with the loop thread's stack (logger
        ``evpy``, and ``hook(incident)`` when set). Replaces a detector
        already running. Returns the ``evpy.health.BlockingDetector``."""
        self._check_closed()
        self.disable_blocking_detector()
        detector = health.BlockingDetector(self, threshold, hook=hook,
                                           log=log)
        detector.start()
        self._blocking_detector = detector
        return detector

    def disable_blocking_detector(self):
        """Stop the watchdog thread (close() does it too)."""
        detector = getattr(self, '_blocking_detector', None)
        if detector is not None:
            self._blocking_detector = None
            detector.stop()

    # -- transports -----------------------------------------------------------
    # asyncio's private factory methods (selector_events' and unix_events'
    # signatures), kept for code that calls them; evpy itself makes its
    # transports through evpy/factories.py.

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None, context=None):
        """Wrap a connected non-blocking stream socket in a transport
        (whose protocol callbacks run in `context`, when given)."""
        return factories.socket_transport(self, sock, protocol, waiter,
                                          extra=extra, server=server,
                                          context=context)

    def _make_ssl_transport(
            self, rawsock, protocol, sslcontext, waiter=None,
            *, server_side=False, server_hostname=None,
            extra=None, server=None,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
            context=None):
        """Wrap a connected socket in a TLS transport for protocol (see
        factories.ssl_transport); return the application transport."""
        return factories.ssl_transport(
            self, rawsock, protocol, sslcontext, waiter,
            server_side=server_side, server_hostname=server_hostname,
            extra=extra, server=server,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, context=context)

    def _make_datagram_transport(self, sock, protocol, address=None,
                                 waiter=None, extra=None):
        """Wrap a datagram socket in a transport."""
        return factories.datagram_transport(self, sock, protocol, address,
                                            waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None,
                                  extra=None):
        """Wrap the read end of a pipe in a transport."""
        return factories.read_pipe_transport(self, pipe, protocol, waiter,
                                             extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None,
                                   extra=None):
        """Wrap the write end of a pipe in a transport."""
        return factories.write_pipe_transport(self, pipe, protocol, waiter,
                                              extra)

    # -- signals --------------------------------------------------------------

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f'sig must be an int, not {sig!r}')
        if sig not in signal.valid_signals():
            raise ValueError(f'invalid signal number {sig}')

    def _open_signal_socket(self):
        if self._ssock is not None:
            return
        ssock, csock = socket.socketpair()
        ssock.setblocking(False)
        csock.setblocking(False)
        self._ssock, self._csock = ssock, csock
        self.add_reader(ssock.fileno(), self._read_signals)

    def _close_signal_socket(self):
        if self._ssock is None:
            return
        self.remove_reader(self._ssock.fileno())
        self._ssock.close()
        self._csock.close()
        self._ssock = self._csock = None

    def _read_signals(self):
        while True:
            try:
                data = self._ssock.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            if not data:
                return
            for sig in data:
                self._handle_signal(sig)

    def _handle_signal(self, sig):
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return
        if handle.cancelled():
            self.remove_signal_handler(sig)
        else:
            self._call_handle(handle)

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) from the loop whenever signal sig arrives."""
        if (asyncio.iscoroutine(callback)
                or _iscoroutinefunction(callback)):
            raise TypeError('coroutines cannot be used with '
                            'add_signal_handler()')
        self._check_signal(sig)
        self._check_closed()
        self._open_signal_socket()
        try:
            # Raises ValueError outside the main thread.
            signal.set_wakeup_fd(self._csock.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        self._signal_handlers[sig] = self._make_handle(callback, *args)
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    logger.info('set_wakeup_fd(-1) failed: %s', nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f'sig {sig:d} cannot be caught')
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler for sig; return True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = (signal.default_int_handler if sig == signal.SIGINT
                   else signal.SIG_DFL)
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f'sig {sig:d} cannot be caught')
            raise
        if not self._signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info('set_wakeup_fd(-1) failed: %s', exc)
        return True


def new_event_loop():
    """Return a new evpy loop (usable as asyncio.run's loop_factory)."""
    return Loop()
