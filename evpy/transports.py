"""Stream transports: the Python half of evpy._core.StreamTransport.

The C base class does everything per message (reads, writes, flow control,
pause/resume) and owns the lifecycle (close, abort, the connection_lost call,
releasing the fd, the unclosed-transport warning; see csrc/transport.h);
these classes do set-up, error reporting and repr, and give each transport
its place in asyncio's class hierarchy. Behaviour follows asyncio's selector
transports (selector_events._SelectorSocketTransport).
"""

import asyncio
import errno
import logging
import os
import stat
import sys

from asyncio import constants, trsock

from . import _core

logger = logging.getLogger('asyncio')


_set_result_unless_cancelled = _core.set_result_unless_cancelled


# asyncio fills these in when a socket transport is made; evpy computes
# them on first use (a syscall and ~200 bytes saved per connection) and at
# the latest just before the socket is closed, so they stay readable after.
_LAZY_EXTRA = ('socket', 'sockname', 'peername')


class _Common:
    """What every evpy transport shares on the Python side."""

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the high and low water marks of the write buffer
        (asyncio's defaults: high 64 KiB, low high // 4)."""
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(
                f'high ({high!r}) must be >= low ({low!r}) must be >= 0')
        # asyncio compares sizes with any numbers: a float or an int past
        # ssize_t means the same as its floor, capped.
        self._set_write_buffer_limits(int(min(high, sys.maxsize)),
                                      int(min(low, sys.maxsize)))

    def _flow_control_failed(self, name, exc):
        self._loop.call_exception_handler({
            'message': f'protocol.{name}() failed',
            'exception': exc,
            'transport': self,
            'protocol': self._protocol,
        })

    def _callback_failed(self, exc):
        """A protocol callback asyncio does not guard raised: reported as
        a failed callback; the transport stays open."""
        self._loop.call_exception_handler({
            'message': f'Exception in callback {type(self).__name__}.'
                       '_read_ready()',
            'exception': exc,
            'transport': self,
            'protocol': self._protocol,
        })


class _SocketTransportBase(_Common):
    """The once-per-connection half of asyncio's _SelectorTransport, for
    the stream and datagram socket transports."""

    def _start(self, loop, sock, protocol, waiter, extra, kind):
        self._extra = {} if extra is None else extra
        self._attach(loop, sock, sock.fileno(), kind)
        self.set_protocol(protocol)

    def get_extra_info(self, name, default=None):
        """Transport information (asyncio's extra: 'socket',
        'sockname', 'peername', ...); socket and addresses are looked up on
        first use."""
        extra = self._extra
        try:
            return extra[name]
        except KeyError:
            pass
        if name not in _LAZY_EXTRA or not self._has_sock:
            return default
        if name == 'socket':
            value = trsock.TransportSocket(self._sock)
        else:
            value = self._sockaddr(name == 'peername')
        extra[name] = value
        return value

    def _connect(self, loop, protocol, waiter, context=None):
        # With a context (3.15: a server's or a client's connection), every
        # protocol callback runs in it: these through their handles, the
        # I/O events because the C core enters self._context.
        if context is not None:
            self._context = context
        loop.call_soon(protocol.connection_made, self, context=context)
        # Reading starts only after connection_made() has run.
        loop.call_soon(self._start_reading, context=context)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None,
                           context=context)

    def __repr__(self):
        info = [type(self).__name__]
        if not self._has_sock:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._sock_fd}')
        loop = self._loop
        if loop is not None and not loop.is_closed():
            info.append('read=polling' if self._read_polled else 'read=idle')
            state = 'polling' if self._write_polled else 'idle'
            info.append(f'write=<{state}, '
                        f'bufsize={self.get_write_buffer_size()}>')
        return '<{}>'.format(' '.join(info))

    def _fatal_error(self, exc, message='Fatal error on transport'):
        """Report exc (OSErrors only in debug mode) and close now."""
        if isinstance(exc, OSError):
            if self._loop is not None and self._loop.get_debug():
                logger.debug('%r: %s', self, message, exc_info=True)
        elif self._loop is not None:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self,
                'protocol': self._protocol,
            })
        self._force_close(exc)

    def _warn_write_after_close(self):
        logger.warning('socket.send() raised exception.')


class SocketTransport(_SocketTransportBase, _core.StreamTransport):
    """Transport over a connected stream socket (TCP or Unix)."""

    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # start_tls() accepts transports carrying this flag: a socket transport
    # can be upgraded (pause_reading, set_protocol to a BufferedProtocol).
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, waiter=None, extra=None,
                 server=None, context=None):
        self._start(loop, sock, protocol, waiter, extra, 0)
        self._server = server
        if server is not None:
            server._attach(self)
        self._connect(loop, protocol, waiter, context)

    @classmethod
    def _adopt(cls, loop, fd, kind, protocol, extra, waiter=None,
               server=None, context=None):
        """A transport over a bare connected fd (from ``_core.accept`` or
        ``_core.connect``: non-blocking, close-on-exec), which it owns from
        the start; the socket object is made only if something asks for
        it.  ``kind`` is (family, type, proto).  The fd is this call's from
        the start: closed here if it raises."""
        try:
            self = cls.__new__(cls)
            self._extra = extra
            self._attach_fd(loop, fd, *kind)
        except BaseException:
            os.close(fd)
            raise
        try:
            self.set_protocol(protocol)
            if server is not None:
                server._attach(self)
                self._server = server
            self._connect(loop, protocol, waiter, context)
        except BaseException:
            self._detach()
            self._close_sock()
            if self._server is not None:
                self._server = None
                server._detach(self)
            raise
        return self

    def _make_empty_waiter(self):
        if self._empty_waiter is not None:
            raise RuntimeError('Empty waiter is already set')
        waiter = self._loop.create_future()
        self._empty_waiter = waiter
        if not self.get_write_buffer_size():
            waiter.set_result(None)
        return waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None


class DatagramTransport(_SocketTransportBase, _core.DatagramTransport):
    """Transport over a datagram socket (UDP or AF_UNIX datagrams)."""

    max_size = 256 * 1024  # as asyncio: the largest datagram received

    def __init__(self, loop, sock, protocol, address=None, waiter=None,
                 extra=None):
        self._start(loop, sock, protocol, waiter, extra, 3)
        self._address = address
        # Connected when the socket has a peer, named or not: a socketpair's
        # peer name is '' (asyncio tests truthiness and then fails to send).
        self._connected = self.get_extra_info('peername') is not None
        self._connect(loop, protocol, waiter)


class _PipeTransport(_Common, _core.StreamTransport):
    """What asyncio's two Unix pipe transports share."""

    _kind = None  # 1: read pipe, 2: write pipe (see csrc/stream.c)

    def _setup(self, loop, pipe, protocol, extra, allowed, error):
        if extra is None:
            extra = {}
        extra['pipe'] = pipe
        self._extra = extra
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        if not any(check(mode) for check in allowed):
            raise ValueError(error)
        os.set_blocking(fileno, False)
        self._attach(loop, pipe, fileno, self._kind)
        self.set_protocol(protocol)
        loop.call_soon(protocol.connection_made, self)
        return mode

    @classmethod
    def _adopt(cls, loop, pipe, fd, protocol):
        """A transport over a pipe end _core.spawn() made (a pipe, already
        non-blocking and close-on-exec): no checks, no waiter; what the
        constructor schedules is scheduled the same way."""
        self = cls.__new__(cls)
        self._extra = {'pipe': pipe}
        self._attach(loop, pipe, fd, cls._kind)
        self.set_protocol(protocol)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        return self

    @property
    def _pipe(self):
        return self._sock

    @_pipe.setter
    def _pipe(self, value):
        self._sock = value

    @property
    def _fileno(self):
        return self._sock_fd if self._sock is not None else None

    def __repr__(self):
        info = [type(self).__name__]
        if self._sock is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._sock_fd}')
        if self._sock is not None and self._loop is not None:
            if self._kind == 1:
                info.append('polling' if self._read_polled else 'idle')
            else:
                info.append('polling' if self._write_polled else 'idle')
                info.append(f'bufsize={self.get_write_buffer_size()}')
        elif self._sock is not None:
            info.append('open')
        else:
            info.append('closed')
        return '<{}>'.format(' '.join(info))

    @staticmethod
    def _quiet_error(exc):
        """Errors only logged in debug mode, not reported to the exception
        handler: EIO (a pty's end) for a read pipe."""
        return isinstance(exc, OSError) and exc.errno == errno.EIO

    def _fatal_error(self, exc, message='Fatal error on pipe transport'):
        # asyncio reports the rest (unix_events' pipe transports).
        if self._quiet_error(exc):
            if self._loop.get_debug():
                logger.debug('%r: %s', self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self,
                'protocol': self._protocol,
            })
        self._close_now(exc)


class _Absent:
    """A method the C base class has but this transport must not: reading
    it raises AttributeError, so hasattr() is False, as on asyncio's."""

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, obj, owner=None):
        raise AttributeError(
            f'{owner.__name__!r} object has no attribute {self._name!r}')


class ReadPipeTransport(_PipeTransport):
    """asyncio.ReadTransport over a pipe, FIFO, socket or character
    device (loop.connect_read_pipe)."""

    _kind = 1

    # asyncio's read pipe is a ReadTransport only: no write side, no abort.
    write = writelines = write_eof = can_write_eof = _Absent()
    get_write_buffer_size = get_write_buffer_limits = _Absent()
    set_write_buffer_limits = abort = _Absent()

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        self._setup(loop, pipe, protocol, extra,
                    (stat.S_ISFIFO, stat.S_ISSOCK, stat.S_ISCHR),
                    'Pipe transport is for pipes/sockets only.')
        # Reading starts only after connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def _on_pipe_eof(self):
        loop = self._loop
        if loop.get_debug():
            logger.info('%r was closed by peer', self)
        loop.call_soon(self._protocol.eof_received)
        self._close_now(None)

    def close(self):
        """Close now (nothing is buffered on a read pipe)."""
        if not self._closing:
            self._close_now(None)


class WritePipeTransport(_PipeTransport):
    """asyncio.WriteTransport over a pipe, FIFO, socket or character
    device (loop.connect_write_pipe)."""

    _kind = 2

    @staticmethod
    def _quiet_error(exc):
        # asyncio's write pipe logs every OSError (EPIPE...) in debug mode
        # only.
        return isinstance(exc, OSError)

    # Not readable: asyncio's write pipe inherits these from ReadTransport,
    # which raises NotImplementedError (reading here is only the C side's
    # watch for the reader going away).
    is_reading = asyncio.ReadTransport.is_reading
    pause_reading = asyncio.ReadTransport.pause_reading
    resume_reading = asyncio.ReadTransport.resume_reading

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        mode = self._setup(
            loop, pipe, protocol, extra,
            (stat.S_ISCHR, stat.S_ISFIFO, stat.S_ISSOCK),
            'Pipe transport is only for pipes, sockets and character '
            'devices')
        # Polling the write end for reading tells when the reader is gone
        # (pipes and sockets; AIX only reports it for sockets).
        if stat.S_ISSOCK(mode) or (stat.S_ISFIFO(mode)
                                   and not sys.platform.startswith('aix')):
            loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def _read_ready(self):
        if self._loop.get_debug():
            logger.info('%r was closed by peer', self)
        if self.get_write_buffer_size():
            self._close_now(BrokenPipeError())
        else:
            self._close_now(None)

    def write_eof(self):
        """Close once the queued data is written (EOF, for a pipe)."""
        _core.StreamTransport.close(self)

    def close(self):
        """Close once the queued data is written."""
        if self._sock is not None and not self._closing:
            self.write_eof()

    def abort(self):
        """Close now, dropping the queued data (nothing once the
        connection is lost: asyncio's write pipe raises AttributeError
        from its dropped loop there)."""
        if self._sock is not None:
            self._close_now(None)

    def _warn_write_after_close(self):
        logger.warning('pipe closed by peer or '
                       'os.write(pipe, data) raised exception.')
