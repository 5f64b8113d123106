"""Listening servers: the Server object, create_server, create_unix_server
and the accept loop.

The accept loop watches each listening socket with add_reader, accepts up to
`backlog` connections per readiness event and makes each one a transport
(evpy's C stream transport, through ``factories``), which attaches it to the
server.  When accept() runs out of descriptors or memory the error goes
to the exception handler and accepting pauses for
``asyncio.constants.ACCEPT_RETRY_DELAY`` seconds, as in asyncio.
"""

import asyncio
import collections.abc
import errno
import itertools
import logging
import os
import socket
import sys
import weakref

from asyncio import constants, trsock
from contextvars import copy_context

from . import _core, factories
from ._compat import PY312, PY313, PY315
from .sock import check_ssl_socket
from .sockutil import (check_ssl_timeouts, is_abstract,
                       remove_stale_unix_socket, set_reuseport)
from .tls import tls_server_factory

logger = logging.getLogger('asyncio')

_HAS_IPv6 = hasattr(socket, 'AF_INET6')
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _listener_info(sock):
    """What each connection accepted on ``sock`` inherits: its (family,
    type, proto) and, where it is fixed, its local address (a TCP listener
    bound to one IPv4 address, or a Unix socket path): asyncio's
    ``sockname`` extra without a getsockname() per connection."""
    kind = (int(sock.family), int(sock.type), sock.proto)
    sockname = None
    try:
        addr = sock.getsockname()
    except OSError:
        addr = None
    if sock.family == socket.AF_INET and addr and addr[0] != '0.0.0.0':
        sockname = addr
    elif sock.family == socket.AF_UNIX and addr and isinstance(addr, str):
        sockname = addr
    return kind, sockname


class Server(asyncio.AbstractServer):
    """What create_server() and create_unix_server() return."""

    def __init__(self, loop, sockets, protocol_factory, ssl_context, backlog,
                 ssl_handshake_timeout, ssl_shutdown_timeout=None):
        self._loop = loop
        self._sockets = sockets
        # {id(transport): weakref}: an abandoned transport must stay
        # collectable (and warn). Cheaper per connection than a WeakSet: no
        # callback per reference; dead entries are skipped where the set is
        # read, and an id reused by a new transport replaces its entry.
        # The C accept loop (csrc/accept.c) adds to it directly.
        self._clients = {}
        # 3.11/3.12's Server API attaches without naming the transport.
        self._anonymous_clients = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None
        # Unix socket files to unlink on close: {sock: inode}.
        self._unix_files = {}
        # 3.15: each accepted connection runs its protocol in a copy of
        # the context the server was created in.
        self._context = copy_context() if PY315 else None

    def __repr__(self):
        return f'<{type(self).__name__} sockets={self.sockets!r}>'

    # -- called by the transports ---------------------------------------------

    def _attach(self, transport=None):
        assert self._sockets is not None
        if transport is None:
            self._anonymous_clients += 1
        else:
            self._clients[id(transport)] = weakref.ref(transport)

    def _detach(self, transport=None):
        if transport is None:
            self._anonymous_clients -= 1
        else:
            self._clients.pop(id(transport), None)
        if self._sockets is None and not self._has_clients():
            self._wakeup()

    def _live_clients(self):
        clients = [ref() for ref in self._clients.values()]
        return [t for t in clients if t is not None]

    def _has_clients(self):
        return self._anonymous_clients > 0 or bool(self._live_clients())

    def _wakeup(self):
        waiters = self._waiters
        if waiters is None:
            return  # woken already (a connection set up while closing)
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- public API -----------------------------------------------------------

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_serving(
                self._protocol_factory, sock, self._ssl_context, self,
                self._backlog, self._ssl_handshake_timeout,
                self._ssl_shutdown_timeout, context=self._context)

    def get_loop(self):
        """The loop the server runs on."""
        return self._loop

    def is_serving(self):
        """True while the server accepts connections."""
        return self._serving

    @property
    def sockets(self):
        """The listening sockets (asyncio.trsock.TransportSocket
        wrappers); empty once closed."""
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self):
        """Stop listening; connections already accepted stay open."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            self._loop._stop_serving(sock)
            self._unlink_unix_file(sock)
        self._serving = False
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        if not self._has_clients():
            self._wakeup()

    def _unlink_unix_file(self, sock):
        entry = self._unix_files.pop(sock, None)
        if entry is None:
            return
        path, inode = entry
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger.error('Unable to clean up listening UNIX socket %r: %r',
                         path, err)

    if PY313:
        def close_clients(self):
            """Close every connection accepted by this server."""
            for transport in self._live_clients():
                transport.close()

        def abort_clients(self):
            """Abort every connection accepted by this server."""
            for transport in self._live_clients():
                transport.abort()

    async def start_serving(self):
        """Start accepting connections (no-op when already serving)."""
        self._start_serving()
        await asyncio.sleep(0)  # let the add_reader calls take effect

    async def serve_forever(self):
        """Accept connections until cancelled; the server is closed
        then."""
        if self._serving_forever_fut is not None:
            raise RuntimeError(
                f'server {self!r} is already being awaited on '
                f'serve_forever()')
        if self._sockets is None:
            raise RuntimeError(f'server {self!r} is closed')
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                if PY313:
                    # As asyncio from 3.14 (and 3.13's later releases): a
                    # cancelled server closes its connections too, so
                    # waiting for them cannot hang on an idle client.
                    self.close_clients()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        """Wait until the server is closed and (3.12+) every connection it
        accepted is gone.  On 3.11 a closed server returns at once, as
        asyncio does there."""
        if self._waiters is None:
            return
        if not PY312 and self._sockets is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


class ServerMixin:
    """create_server, create_unix_server and the accept loop."""

    # -- the accept loop ------------------------------------------------------

    def _start_serving(self, protocol_factory, sock, sslcontext=None,
                       server=None, backlog=100, ssl_handshake_timeout=None,
                       ssl_shutdown_timeout=None, context=None):
        if sslcontext:
            protocol_factory = tls_server_factory(
                self, protocol_factory, sslcontext, ssl_handshake_timeout,
                ssl_shutdown_timeout)
        args = (sock.fileno(), self._accept_connection, protocol_factory,
                sock, server, backlog, _listener_info(sock))
        if context is None:
            self.add_reader(*args)
        else:
            # 3.15: the accept loop runs in (a copy of) the context the
            # server was created in, and each connection in its own copy.
            context.run(self.add_reader, *args)

    def _resume_accepting(self, protocol_factory, sock, server, backlog,
                          info):
        if sock.fileno() == -1 or (server is not None
                                   and not server.is_serving()):
            return  # closed while accepting was paused
        self.add_reader(sock.fileno(), self._accept_connection,
                        protocol_factory, sock, server, backlog, info)

    def _accept_connection(self, protocol_factory, sock, server, backlog,
                           info=None):
        if info is None:
            info = _listener_info(sock)
        if server is None or self._debug:
            self._accept_connection_py(protocol_factory, sock, server,
                                       backlog, info)
            return
        try:
            _core.accept_connections(self, sock, backlog, protocol_factory,
                                     factories.SocketTransport, info[0],
                                     info[1],
                                     server, PY315)
        except OSError as exc:
            self._accept_failed(exc, protocol_factory, sock, server, backlog,
                                info)

    def _accept_connection_py(self, protocol_factory, sock, server, backlog,
                              info):
        """The accept loop with debug logging, or for asyncio's private API
        without a Server (the C one above serves everything else)."""
        for _ in range(backlog):
            fd = sock.fileno()
            if fd == -1:
                return  # a protocol factory closed the server
            try:
                accepted = _core.accept(fd)
            except OSError as exc:
                self._accept_failed(exc, protocol_factory, sock, server,
                                    backlog, info)
                return
            if accepted is None:
                return
            conn_fd, addr = accepted
            if self._debug:
                logger.debug('%r got a new connection from %r: fd=%d',
                             server, addr, conn_fd)
            # Each connection is set up in its own copy of the server's
            # context (asyncio runs it in a new task): what the protocol
            # factory sets belongs to that connection only. On 3.15 the
            # connection also runs in it, as the C accept loop does.
            conn_context = copy_context()
            conn_context.run(self._accepted, protocol_factory, conn_fd, addr,
                             info, server, conn_context if PY315 else None)

    def _accept_failed(self, exc, protocol_factory, sock, server, backlog,
                       info):
        if exc.errno not in _OUT_OF_RESOURCES:
            raise exc  # logged by the loop's callback error handling
        # Linux keeps reporting the socket readable: stop watching it for a
        # while instead of spinning.
        self.call_exception_handler({
            'message': 'socket.accept() out of system resource',
            'exception': exc,
            'socket': trsock.TransportSocket(sock),
        })
        self.remove_reader(sock.fileno())
        self.call_later(constants.ACCEPT_RETRY_DELAY,
                        self._resume_accepting, protocol_factory,
                        sock, server, backlog, info)

    def _accepted(self, protocol_factory, fd, addr, info, server,
                  conn_context=None):
        kind, sockname = info
        extra = {'peername': addr}
        if sockname is not None:
            extra['sockname'] = sockname
        protocol = None
        try:
            try:
                protocol = protocol_factory()
            except BaseException:
                os.close(fd)
                raise
            if server is None:
                # Only asyncio's private API accepts without a Server.
                conn = socket.socket(*kind, fileno=fd)
                conn.setblocking(False)
                try:
                    factories.socket_transport(self, conn, protocol,
                                               extra=extra,
                                               context=conn_context)
                except BaseException:
                    conn.close()
                    raise
            else:
                # Owns fd from here (closes it if it raises).
                factories.adopt_accepted(self, fd, kind, protocol, extra,
                                         server=server, context=conn_context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {
                    'message': 'Error on transport creation for incoming '
                               'connection',
                    'exception': exc,
                }
                if protocol is not None:
                    context['protocol'] = protocol
                self.call_exception_handler(context)

    def _stop_serving(self, sock):
        if sock.fileno() != -1:
            self.remove_reader(sock.fileno())
        sock.close()

    # -- TCP ------------------------------------------------------------------

    async def _server_addrinfos(self, host, port, family, flags):
        infos = await self._ensure_resolved(
            (host, port), family=family, type=socket.SOCK_STREAM,
            flags=flags, loop=self)
        if not infos:
            raise OSError(f'getaddrinfo({host!r}) returned empty list')
        return infos

    async def _bound_sockets(self, host, port, family, flags, reuse_address,
                             reuse_port, keep_alive):
        if reuse_address is None:
            reuse_address = os.name == 'posix' and sys.platform != 'cygwin'
        if host == '':
            hosts = [None]
        elif (isinstance(host, str)
              or not isinstance(host, collections.abc.Iterable)):
            hosts = [host]
        else:
            hosts = host
        infos = await asyncio.gather(*[
            self._server_addrinfos(h, port, family, flags) for h in hosts])
        infos = set(itertools.chain.from_iterable(infos))

        sockets = []
        completed = False
        try:
            for af, socktype, proto, _, sa in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    if self._debug:
                        logger.warning('create_server() failed to create '
                                       'socket.socket(%r, %r, %r)',
                                       af, socktype, proto, exc_info=True)
                    continue
                sockets.append(sock)
                if reuse_address:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                    True)
                if reuse_port:
                    set_reuseport(sock)
                if keep_alive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE,
                                    True)
                if (_HAS_IPv6 and af == socket.AF_INET6
                        and hasattr(socket, 'IPPROTO_IPV6')):
                    # One socket per family, as on every platform.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                    True)
                try:
                    sock.bind(sa)
                except OSError as err:
                    text = str(err).lower() if PY313 else (
                        err.strerror.lower())
                    msg = ('error while attempting to bind on address '
                           f'{sa!r}: {text}')
                    if PY313 and err.errno == errno.EADDRNOTAVAIL:
                        # The family is probably disabled (bpo-30945).
                        sockets.pop()
                        sock.close()
                        if self._debug:
                            logger.warning(msg)
                        continue
                    raise OSError(err.errno, msg) from None
            if PY313 and not sockets:
                raise OSError('could not bind on any address out of %r'
                              % ([info[4] for info in infos],))
            completed = True
        finally:
            if not completed:
                for sock in sockets:
                    sock.close()
        return sockets

    async def _create_server(self, protocol_factory, host, port, family,
                             flags, sock, backlog, ssl, reuse_address,
                             reuse_port, keep_alive, ssl_handshake_timeout,
                             ssl_shutdown_timeout, start_serving):
        if isinstance(ssl, bool):
            raise TypeError('ssl argument must be an SSLContext or None')
        check_ssl_timeouts(ssl is not None, ssl_handshake_timeout,
                           ssl_shutdown_timeout)
        if sock is not None:
            check_ssl_socket(sock)

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError(
                    'host/port and sock can not be specified at the same time')
            sockets = await self._bound_sockets(
                host, port, family, flags, reuse_address, reuse_port,
                keep_alive)
        else:
            if sock is None:
                raise ValueError('Neither host/port nor sock were specified')
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f'A Stream Socket was expected, got {sock!r}')
            sockets = [sock]
        for s in sockets:
            s.setblocking(False)

        server = Server(self, sockets, protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        if self._debug:
            logger.info('%r is serving', server)
        return server

    if PY313:
        async def create_server(
                self, protocol_factory, host=None, port=None, *,
                family=socket.AF_UNSPEC, flags=socket.AI_PASSIVE, sock=None,
                backlog=100, ssl=None, reuse_address=None, reuse_port=None,
                keep_alive=None, ssl_handshake_timeout=None,
                ssl_shutdown_timeout=None, start_serving=True):
            """Listen on host:port (every address it resolves to; host may
            be a sequence) or on sock; return a Server."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog,
                ssl, reuse_address, reuse_port, keep_alive,
                ssl_handshake_timeout, ssl_shutdown_timeout, start_serving)
    else:
        async def create_server(
                self, protocol_factory, host=None, port=None, *,
                family=socket.AF_UNSPEC, flags=socket.AI_PASSIVE, sock=None,
                backlog=100, ssl=None, reuse_address=None, reuse_port=None,
                ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                start_serving=True):
            """Listen on host:port (every address it resolves to; host may
            be a sequence) or on sock; return a Server."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog,
                ssl, reuse_address, reuse_port, None,
                ssl_handshake_timeout, ssl_shutdown_timeout, start_serving)

    # -- Unix sockets ---------------------------------------------------------

    async def _create_unix_server(self, protocol_factory, path, sock,
                                  backlog, ssl, ssl_handshake_timeout,
                                  ssl_shutdown_timeout, start_serving,
                                  cleanup_socket):
        if isinstance(ssl, bool):
            raise TypeError('ssl argument must be an SSLContext or None')
        check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)

        if path is not None:
            if sock is not None:
                raise ValueError(
                    'path and sock can not be specified at the same time')
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            remove_stale_unix_socket(path)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE,
                                  f'Address {path!r} is already in use'
                                  ) from None
                raise
            except:  # noqa: E722 - close on any other failure too
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError(
                    'path was not specified, and no sock specified')
            if (sock.family != socket.AF_UNIX
                    or sock.type != socket.SOCK_STREAM):
                raise ValueError(
                    f'A UNIX Domain Stream Socket was expected, got {sock!r}')

        unix_file = None
        if cleanup_socket:
            name = sock.getsockname()
            if name and not is_abstract(name):
                try:
                    unix_file = (name, os.stat(name).st_ino)
                except FileNotFoundError:
                    pass

        sock.setblocking(False)
        server = Server(self, [sock], protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if unix_file is not None:
            server._unix_files[sock] = unix_file
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server

    if PY313:
        async def create_unix_server(
                self, protocol_factory, path=None, *, sock=None, backlog=100,
                ssl=None, ssl_handshake_timeout=None,
                ssl_shutdown_timeout=None, start_serving=True,
                cleanup_socket=True):
            """Listen on the Unix socket path (a stale socket file there
            is replaced) or on sock; return a Server.  With cleanup_socket
            the socket file is removed when the server closes."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl,
                ssl_handshake_timeout, ssl_shutdown_timeout, start_serving,
                cleanup_socket)
    else:
        async def create_unix_server(
                self, protocol_factory, path=None, *, sock=None, backlog=100,
                ssl=None, ssl_handshake_timeout=None,
                ssl_shutdown_timeout=None, start_serving=True):
            """Listen on the Unix socket path (a stale socket file there
            is replaced) or on sock; return a Server."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl,
                ssl_handshake_timeout, ssl_shutdown_timeout, start_serving,
                False)
