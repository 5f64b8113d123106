"""loop.sock_sendfile() and loop.sendfile().

sock_sendfile() uses os.sendfile() (zero copy) and, when the file or the
platform cannot do that and fallback=True, reads the file in the default
executor and sends it with sock_sendall(), as asyncio does.

loop.sendfile() sends over a transport.  evpy's socket transports declare
``_sendfile_compatible = _SendfileMode.TRY_NATIVE`` and get the zero-copy
path: reading paused, the write buffer drained (``_make_empty_waiter()``),
the fd lent to sock_sendfile() (``_release_fd()`` / ``_reclaim_fd()``).
Every other stream transport gets the fallback, which writes through
transport.write() and waits for the protocol's flow control
(pause_writing / resume_writing) between blocks.
"""

import asyncio
import errno
import io
import os
import socket
import sys

from asyncio import constants
from asyncio.exceptions import SendfileNotAvailableError

from ._compat import PY314
from .sock import check_ssl_socket

_Mode = constants._SendfileMode
_HAS_SENDFILE = hasattr(os, 'sendfile')
_TRANSPORT_BLOCK = 16384
_MAX_BLOCK = sys.maxsize // 2 + 1  # sendfile() count limit on 32-bit
# asyncio 3.14 defines the file position after every sendfile: the
# fallbacks always start at `offset` (not at the current position when
# offset is 0), and the native path leaves the position at offset + sent
# even when nothing was sent. Before 3.14 both followed the bytes sent.
_POSITION_ALWAYS = PY314


def _check_sendfile_params(sock, file, offset, count):
    if 'b' not in getattr(file, 'mode', 'b'):
        raise ValueError('file should be opened in binary mode')
    if sock.type != socket.SOCK_STREAM:
        raise ValueError('only SOCK_STREAM type sockets are supported')
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(
                f'count must be a positive integer (got {count!r})')
        if count <= 0:
            raise ValueError(
                f'count must be a positive integer (got {count!r})')
    if not isinstance(offset, int):
        raise TypeError(
            f'offset must be a non-negative integer (got {offset!r})')
    if offset < 0:
        raise ValueError(
            f'offset must be a non-negative integer (got {offset!r})')


class _SendfileProtocol(asyncio.Protocol):
    """Stands in for the transport's protocol while loop.sendfile() writes
    through it: reading is paused, pause_writing/resume_writing gate the
    writes, connection_lost is passed on."""

    def __init__(self, transport):
        self._transport = transport
        self._proto = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        paused = getattr(transport, '_protocol_paused', None)
        if paused is None:
            high = transport.get_write_buffer_limits()[1]
            paused = transport.get_write_buffer_size() > high
        self._resume_writing = paused
        self._loop = asyncio.get_running_loop()
        self._write_ready = self._loop.create_future() if paused else None
        transport.pause_reading()
        transport.set_protocol(self)

    async def drain(self):
        """Wait until the transport takes more data (raise if it
        closed)."""
        if self._transport.is_closing():
            raise ConnectionError('Connection closed by peer')
        if self._write_ready is not None:
            await self._write_ready

    def connection_made(self, transport):
        """Never called: the connection exists already."""
        raise RuntimeError('Invalid state: '
                           'connection should have been established already.')

    def connection_lost(self, exc):
        """Fail a pending drain() and pass exc on to the transport's
        protocol."""
        fut = self._write_ready
        if fut is not None and not fut.done():
            fut.set_exception(exc if exc is not None else
                              ConnectionError('Connection is closed by peer'))
        self._proto.connection_lost(exc)

    def pause_writing(self):
        """Make drain() wait."""
        if self._write_ready is None:
            self._write_ready = self._loop.create_future()

    def resume_writing(self):
        """Release drain()."""
        fut = self._write_ready
        if fut is None:
            return
        self._write_ready = None
        if not fut.done():
            fut.set_result(False)

    def data_received(self, data):
        """Never called: reading is paused."""
        raise RuntimeError('Invalid state: reading should be paused')

    def eof_received(self):
        """Never called: reading is paused."""
        raise RuntimeError('Invalid state: reading should be paused')

    def restore(self):
        """Give the transport its protocol back, with reading and
        writing as they were before sendfile()."""
        self._transport.set_protocol(self._proto)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._write_ready is not None:
            self._write_ready.cancel()  # nobody waits on it any more
        if self._resume_writing:
            self._proto.resume_writing()


class SendfileMixin:
    """sock_sendfile() and sendfile()."""

    # -- sockets --------------------------------------------------------------

    async def sock_sendfile(self, sock, file, offset=0, count=None,
                            *, fallback=True):
        """Send file over sock; return the number of bytes sent."""
        if self._debug and sock.gettimeout() != 0:
            raise ValueError('the socket must be non-blocking')
        check_ssl_socket(sock)
        _check_sendfile_params(sock, file, offset, count)
        self._check_closed()
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        if not _HAS_SENDFILE:
            raise SendfileNotAvailableError('os.sendfile() is not available')
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise SendfileNotAvailableError('not a regular file')
        try:
            size = os.fstat(fileno).st_size
        except OSError:
            raise SendfileNotAvailableError('not a regular file')
        blocksize = min(count if count else size, _MAX_BLOCK)
        if not blocksize:
            return 0  # empty file
        fd = sock.fileno()
        total = 0
        waited = False
        try:
            while True:
                if count:
                    blocksize = min(count - total, _MAX_BLOCK)
                    if blocksize <= 0:
                        return total
                try:
                    sent = os.sendfile(fd, fileno, offset + total, blocksize)
                except (BlockingIOError, InterruptedError):
                    await self._wait_writable(fd)
                    waited = True
                    continue
                except OSError as exc:
                    if total == 0:
                        # Most likely a file that sendfile() cannot map:
                        # let the caller fall back to send().
                        raise SendfileNotAvailableError(
                            'os.sendfile call failed')
                    if (waited and exc.errno == errno.ENOTCONN
                            and type(exc) is not ConnectionError):
                        # The peer went away mid-transfer: the same error
                        # on every POSIX system.
                        new = ConnectionError('socket is not connected',
                                              errno.ENOTCONN)
                        new.__cause__ = exc
                        raise new
                    raise
                if sent == 0:
                    return total  # end of file
                total += sent
        finally:
            if total > 0 or _POSITION_ALWAYS:
                os.lseek(fileno, offset + total, os.SEEK_SET)

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset or (_POSITION_ALWAYS and hasattr(file, 'seek')):
            file.seek(offset)
        limit = constants.SENDFILE_FALLBACK_READBUFFER_SIZE
        blocksize = min(count, limit) if count else limit
        buf = bytearray(blocksize)
        total = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break
                await self.sock_sendall(sock, view[:read])
                total += read
            return total
        finally:
            if total > 0 and hasattr(file, 'seek'):
                file.seek(offset + total)

    # -- transports -----------------------------------------------------------

    async def sendfile(self, transport, file, offset=0, count=None,
                       *, fallback=True):
        """Send file over a transport; return the number of bytes sent."""
        if transport.is_closing():
            raise RuntimeError('Transport is closing')
        self._check_closed()
        # As asyncio: a transport that declares nothing is unsupported
        # (evpy's socket transports declare TRY_NATIVE; TLS ones FALLBACK).
        mode = getattr(transport, '_sendfile_compatible', _Mode.UNSUPPORTED)
        if mode is _Mode.UNSUPPORTED:
            raise RuntimeError(
                f'sendfile is not supported for transport {transport!r}')
        if mode is _Mode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file,
                                                   offset, count)
            except SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f'fallback is disabled and native sendfile is not '
                f'supported for transport {transport!r}')
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transport, file, offset, count):
        # evpy transports lend their fd to sock_sendfile() (which registers
        # it itself) once reading is paused and the write buffer is empty.
        resume_reading = transport.is_reading()
        transport.pause_reading()
        try:
            await transport._make_empty_waiter()
            try:
                transport._release_fd()
                try:
                    return await self.sock_sendfile(
                        transport._sock, file, offset, count, fallback=False)
                finally:
                    transport._reclaim_fd()
            finally:
                transport._reset_empty_waiter()
        finally:
            if resume_reading:
                transport.resume_reading()

    async def _sendfile_fallback(self, transport, file, offset, count):
        if offset or (_POSITION_ALWAYS and hasattr(file, 'seek')):
            file.seek(offset)
        blocksize = min(count, _TRANSPORT_BLOCK) if count else (
            _TRANSPORT_BLOCK)
        buf = bytearray(blocksize)
        total = 0
        proto = _SendfileProtocol(transport)
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        return total
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total
                await proto.drain()
                transport.write(bytes(view[:read]))
                total += read
        finally:
            if total > 0 and hasattr(file, 'seek'):
                file.seek(offset + total)
            proto.restore()
