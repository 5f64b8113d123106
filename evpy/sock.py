"""Socket operations of the loop: name resolution and the awaitable
sock_* methods (sock_recv, sock_recv_into, sock_sendall, sock_connect,
sock_accept).

Each sock_* method tries the system call first and registers interest in
the descriptor only when the call would block; the registration is removed
as soon as the operation's future is done, including on cancellation.
"""

import logging
import socket
from functools import partial
from operator import methodcaller

from . import _core

try:
    from ssl import SSLSocket as _SSLSocket
except ImportError:  # pragma: no cover - Python built without ssl
    _SSLSocket = ()  # isinstance(x, ()) is always false

logger = logging.getLogger('asyncio')

_HAS_IPv6 = hasattr(socket, 'AF_INET6')


def check_ssl_socket(sock):
    """asyncio refuses ssl.SSLSocket objects in every socket API."""
    if isinstance(sock, _SSLSocket):
        raise TypeError('Socket cannot be of type SSLSocket')


def _accept_nonblocking(sock):
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address


def numeric_addrinfo(host, port, family, type, proto, flowinfo=0, scopeid=0):
    """The getaddrinfo() entry for an already numeric host, or None when
    the host needs resolving (names, service ports, zone indexes)."""
    if type == socket.SOCK_STREAM:
        expected = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        expected = socket.IPPROTO_UDP
    else:
        return None
    if host is None or proto not in (0, expected):
        return None
    proto = expected
    if port is None or port == '' or port == b'':
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None  # a service name such as 'http'
    if family == socket.AF_UNSPEC:
        families = (socket.AF_INET, socket.AF_INET6) if _HAS_IPv6 else (
            socket.AF_INET,)
    else:
        families = (family,)
    if isinstance(host, bytes):
        host = host.decode('idna')
    if not isinstance(host, str) or '%' in host:
        return None  # inet_pton() rejects '::1%lo'
    for af in families:
        try:
            socket.inet_pton(af, host)
        except (OSError, ValueError):
            continue
        if _HAS_IPv6 and af == socket.AF_INET6:
            return af, type, proto, '', (host, port, flowinfo, scopeid)
        return af, type, proto, '', (host, port)
    return None


_BYTE_TYPES = (bytes, bytearray)


_future_set_result = _core.set_result_unless_done


class SockMixin:
    """getaddrinfo/getnameinfo and the sock_* coroutines."""

    # -- name resolution ------------------------------------------------------

    def _getaddrinfo_logged(self, host, port, family, type, proto, flags):
        parts = [f'{host}:{port!r}']
        for name, value in (('family', family), ('type', type),
                            ('proto', proto), ('flags', flags)):
            if value:
                parts.append(f'{name}={value!r}')
        what = ', '.join(parts)
        logger.debug('Get address info %s', what)
        start = self.time()
        infos = socket.getaddrinfo(host, port, family, type, proto, flags)
        took = self.time() - start
        text = (f'Getting address info {what} took {took * 1e3:.3f}ms: '
                f'{infos!r}')
        if took >= self.slow_callback_duration:
            logger.info(text)
        else:
            logger.debug(text)
        return infos

    async def getaddrinfo(self, host, port, *,
                          family=0, type=0, proto=0, flags=0):
        """socket.getaddrinfo() in the default executor."""
        func = (self._getaddrinfo_logged if self._debug
                else socket.getaddrinfo)
        return await self.run_in_executor(
            None, func, host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        """socket.getnameinfo() in the default executor."""
        return await self.run_in_executor(
            None, socket.getnameinfo, sockaddr, flags)

    async def _ensure_resolved(self, address, *, family=0,
                               type=socket.SOCK_STREAM, proto=0, flags=0,
                               loop=None):
        host, port = address[:2]
        info = numeric_addrinfo(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        loop = self if loop is None else loop
        return await loop.getaddrinfo(host, port, family=family, type=type,
                                      proto=proto, flags=flags)

    # -- helpers --------------------------------------------------------------

    def _check_sock(self, sock):
        # The hot sock_* methods inline this (a method call per operation
        # is measurable on the try-first path).
        check_ssl_socket(sock)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError('the socket must be non-blocking')

    def _watch(self, fut, fd, writer, callback, *args):
        """Register callback(*args) for fd until fut is done."""
        add = self._add_writer if writer else self._add_reader
        handle = add(fd, callback, *args)
        fut.add_done_callback(partial(self._unwatch, fd, writer, handle))

    def _unwatch(self, fd, writer, handle, fut=None):
        # A newer sock_* call on the same fd replaced (and so cancelled)
        # our handle: the registration is no longer ours to remove.
        if self.is_closed() or handle.cancelled():
            return
        if writer:
            self.remove_writer(fd)
        else:
            self.remove_reader(fd)

    # -- reading --------------------------------------------------------------

    def _sock_wait(self, sock, writing, op):
        """A future for op(sock), retried each time sock is ready until it
        stops raising BlockingIOError. The sock_* methods try op first
        themselves: the common path is one coroutine frame, no future. op
        looks the socket method up on each attempt (operator.methodcaller),
        as asyncio does."""
        fut = self.create_future()
        self._watch(fut, sock.fileno(), writing, self._sock_io_ready, fut,
                    op, sock)
        return fut

    def _sock_io_ready(self, fut, op, sock):
        if fut.done():
            return
        try:
            result = op(sock)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    async def sock_recv(self, sock, n):
        """Receive up to n bytes from the (non-blocking) socket."""
        if isinstance(sock, _SSLSocket) or self._debug:
            self._check_sock(sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, False, methodcaller('recv', n))

    async def sock_recv_into(self, sock, buf):
        """Receive into buf; return the number of bytes written."""
        if isinstance(sock, _SSLSocket) or self._debug:
            self._check_sock(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, False,
                                     methodcaller('recv_into', buf))

    # -- writing --------------------------------------------------------------

    async def sock_sendall(self, sock, data):
        """Send all of data; on error nothing tells how much was sent."""
        if isinstance(sock, _SSLSocket) or self._debug:
            self._check_sock(sock)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data) and type(data) in _BYTE_TYPES:
            return  # all of it (len() counts bytes for these types)
        view = memoryview(data).cast('B')
        if sent == len(view):
            return
        fut = self.create_future()
        self._watch(fut, sock.fileno(), True, self._sock_sendall_ready,
                    fut, sock, view, [sent])
        return await fut

    def _sock_sendall_ready(self, fut, sock, view, position):
        if fut.done():
            return
        start = position[0]
        try:
            sent = sock.send(view[start:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            return
        start += sent
        if start == len(view):
            fut.set_result(None)
        else:
            position[0] = start

    # -- connecting and accepting ---------------------------------------------

    async def sock_connect(self, sock, address):
        """Connect the socket to address, resolving host names first."""
        self._check_sock(sock)
        if sock.family == socket.AF_INET or (
                _HAS_IPv6 and sock.family == socket.AF_INET6):
            infos = await self._ensure_resolved(
                address, family=sock.family, type=sock.type,
                proto=sock.proto, loop=self)
            address = infos[0][4]
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            pass  # in progress: wait until writable
        else:
            return None
        fut = self.create_future()
        self._watch(fut, sock.fileno(), True, self._sock_connect_ready,
                    fut, sock, address)
        try:
            return await fut
        finally:
            fut = None  # break the cycle through the exception's traceback

    def _sock_connect_ready(self, fut, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f'Connect call failed {address}')
        except (BlockingIOError, InterruptedError):
            pass
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            fut = None

    async def sock_accept(self, sock):
        """Accept a connection: return (conn, address), conn non-blocking."""
        self._check_sock(sock)
        try:
            return _accept_nonblocking(sock)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, False, _accept_nonblocking)

    async def _wait_writable(self, fd):
        """Wait until fd is writable (the registration ends with the wait)."""
        fut = self.create_future()
        self._watch(fut, fd, True, _future_set_result, fut, None)
        await fut
