"""Outgoing stream connections: create_connection (with Happy Eyeballs),
create_unix_connection and connect_accepted_socket.

Every connected socket becomes a transport through
``factories.socket_transport`` (evpy's C stream transport), or
``factories.ssl_transport`` with ``ssl``.
"""

import collections
import contextvars
import functools
import itertools
import logging
import os
import socket

from asyncio import staggered

from . import _core, factories
from ._compat import PY312, PY313, PY315
from .sock import _future_set_result, check_ssl_socket, numeric_addrinfo
from .sockutil import check_ssl_timeouts

logger = logging.getLogger('asyncio')


def _interleave_addrinfos(infos, first_family_count=1):
    """Reorder infos so that address families alternate, the first family
    keeping `first_family_count` addresses in front (RFC 8305)."""
    by_family = collections.OrderedDict()
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    groups = list(by_family.values())
    result = []
    if first_family_count > 1:
        result.extend(groups[0][:first_family_count - 1])
        del groups[0][:first_family_count - 1]
    result.extend(info for info in itertools.chain.from_iterable(
        itertools.zip_longest(*groups)) if info is not None)
    return result


def _bind_error(laddr, exc):
    text = str(exc).lower() if PY313 else exc.strerror.lower()
    return OSError(exc.errno,
                   f'error while attempting to bind on address {laddr!r}: '
                   f'{text}')


_NOT_GIVEN = object()
_numeric_targets = {}


def _numeric_target(host, port, family, proto):
    """The one address create_connection() connects to when host is
    numeric (no resolution, one socket), or None; remembered for the hosts
    a program connects to again and again."""
    key = (host, port, family, proto)
    cacheable = type(host) is str and type(port) is int
    info = _numeric_targets.get(key) if cacheable else None
    if info is None:
        info = numeric_addrinfo(host, port, family, socket.SOCK_STREAM,
                                proto)
        if info is None or not 0 <= info[4][1] <= 65535:
            return None
        if cacheable:
            if len(_numeric_targets) >= 256:
                _numeric_targets.clear()
            _numeric_targets[key] = info
    return info


class ConnectMixin:
    """create_connection, create_unix_connection, connect_accepted_socket."""

    async def _connect_sock(self, exceptions, addr_info,
                            local_addr_infos=None):
        """Create, optionally bind, and connect one socket."""
        mine = []
        exceptions.append(mine)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_addr_infos is not None:
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        mine.append(_bind_error(laddr, exc))
                else:
                    if mine:
                        raise mine.pop()
                    raise OSError(
                        f'no matching local address with {family=} found')
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            mine.append(exc)
            if sock is not None:
                sock.close()
            raise
        except:  # noqa: E722 - close the socket on cancellation too
            if sock is not None:
                sock.close()
            raise
        finally:
            exceptions = mine = None

    async def create_connection(
            self, protocol_factory, host=None, port=None,
            *, ssl=None, family=0, proto=0, flags=0, sock=None,
            local_addr=None, server_hostname=None,
            ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
            happy_eyeballs_delay=None, interleave=None,
            all_errors=_NOT_GIVEN):
        """Open a TCP connection to host:port (or wrap a connected sock);
        return (transport, protocol)."""
        if all_errors is _NOT_GIVEN:
            all_errors = False
        elif not PY312:
            raise TypeError("create_connection() got an unexpected keyword "
                            "argument 'all_errors'")
        if (host is not None and ssl is None and sock is None
                and local_addr is None and not all_errors
                and server_hostname is None and ssl_handshake_timeout is None
                and ssl_shutdown_timeout is None and not self._debug
                and happy_eyeballs_delay is None and interleave is None):
            info = _numeric_target(host, port, family, proto)
            if info is not None:
                return await self._connect_numeric(protocol_factory, info)
        return await self._create_connection(
            protocol_factory, host, port, ssl, family, proto, flags, sock,
            local_addr, server_hostname, ssl_handshake_timeout,
            ssl_shutdown_timeout, happy_eyeballs_delay, interleave,
            all_errors)

    async def _create_connection(
            self, protocol_factory, host, port, ssl, family, proto, flags,
            sock, local_addr, server_hostname, ssl_handshake_timeout,
            ssl_shutdown_timeout, happy_eyeballs_delay, interleave,
            all_errors):
        if server_hostname is not None and not ssl:
            raise ValueError('server_hostname is only meaningful with ssl')
        if server_hostname is None and ssl:
            if not host:
                raise ValueError('You must set server_hostname '
                                 'when using ssl without a host')
            server_hostname = host
        check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            check_ssl_socket(sock)

        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1  # Happy Eyeballs alternates families by default

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError(
                    'host/port and sock can not be specified at the same time')
            sock = await self._connect_host(
                host, port, family, proto, flags, local_addr,
                happy_eyeballs_delay, interleave, all_errors)
        else:
            if sock is None:
                raise ValueError(
                    'host and port was not specified and no sock specified')
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(
                    f'A Stream Socket was expected, got {sock!r}')

        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if self._debug:
            logger.debug('%r connected to %s:%r: (%r, %r)',
                         transport.get_extra_info('socket'), host, port,
                         transport, protocol)
        return transport, protocol

    async def _connect_numeric(self, protocol_factory, addr_info):
        """create_connection() to one numeric address, no TLS, no local
        address: the socket is made and connected in C and the transport
        owns the bare fd (no socket object unless one is asked for).  What
        the caller sees (errors, extra info, ordering) is the general
        path's."""
        family, type_, proto, _, address = addr_info
        fd, in_progress = _core.connect(family, type_, proto, address)
        try:
            if in_progress:
                fut = self.create_future()
                handle = self._add_writer(fd, _future_set_result, fut, None)
                try:
                    await fut
                finally:
                    # Unless a later registration replaced ours.
                    if not handle.cancelled():
                        self.remove_writer(fd)
                err = _core.sock_error(fd)
                if err:
                    raise OSError(err, f'Connect call failed {address}')
            protocol = protocol_factory()
        except BaseException:
            os.close(fd)
            raise
        waiter = self.create_future()
        # getpeername() would give back exactly this IPv4 address.
        extra = {'peername': address} if family == socket.AF_INET else {}
        # 3.15: as in _create_connection_transport. Owns fd from here
        # (closes it if this raises).
        context = contextvars.copy_context() if PY315 else None
        transport = factories.adopt_connected(
            self, fd, (family, type_, proto), protocol, extra, waiter,
            context)
        try:
            await waiter
        except:  # noqa: E722 - also on cancellation
            transport.close()
            raise
        return transport, protocol

    async def _connect_host(self, host, port, family, proto, flags,
                            local_addr, happy_eyeballs_delay, interleave,
                            all_errors):
        infos = await self._ensure_resolved(
            (host, port), family=family, type=socket.SOCK_STREAM,
            proto=proto, flags=flags, loop=self)
        if not infos:
            raise OSError('getaddrinfo() returned empty list')
        if local_addr is not None:
            laddr_infos = await self._ensure_resolved(
                local_addr, family=family, type=socket.SOCK_STREAM,
                proto=proto, flags=flags, loop=self)
            if not laddr_infos:
                raise OSError('getaddrinfo() returned empty list')
        else:
            laddr_infos = None
        if interleave:
            infos = _interleave_addrinfos(infos, interleave)

        exceptions = []
        sock = None
        if happy_eyeballs_delay is None:
            for info in infos:
                try:
                    sock = await self._connect_sock(exceptions, info,
                                                    laddr_infos)
                    break
                except OSError:
                    continue
        else:
            sock, _, _ = await staggered.staggered_race(
                (functools.partial(self._connect_sock, exceptions, info,
                                   laddr_infos) for info in infos),
                happy_eyeballs_delay, loop=self)
        if sock is not None:
            return sock

        errors = [exc for group in exceptions for exc in group]
        try:
            if all_errors:
                raise ExceptionGroup('create_connection failed', errors)
            if len(errors) == 1:
                raise errors[0]
            first = str(errors[0])
            if all(str(exc) == first for exc in errors):
                raise errors[0]
            raise OSError('Multiple exceptions: {}'.format(
                ', '.join(str(exc) for exc in errors)))
        finally:
            errors = exceptions = None

    async def _create_connection_transport(
            self, sock, protocol_factory, ssl=None, server_hostname=None,
            server_side=False, ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None, context=None):
        sock.setblocking(False)
        if context is None and PY315:
            # 3.15: the connection's protocol runs in a copy of the
            # context it was made in (its I/O events too).
            context = contextvars.copy_context()
        protocol = protocol_factory()
        waiter = self.create_future()
        if ssl:
            sslcontext = None if isinstance(ssl, bool) else ssl
            transport = factories.ssl_transport(
                self, sock, protocol, sslcontext, waiter,
                server_side=server_side, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout, context=context)
        else:
            transport = factories.socket_transport(self, sock, protocol,
                                                   waiter, context=context)
        try:
            await waiter
        except:  # noqa: E722 - also on cancellation
            transport.close()
            raise
        return transport, protocol

    async def create_unix_connection(
            self, protocol_factory, path=None, *, ssl=None, sock=None,
            server_hostname=None, ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None):
        """Connect to the Unix socket at path (or wrap a connected sock);
        return (transport, protocol)."""
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl:
            if server_hostname is None:
                raise ValueError(
                    'you have to pass server_hostname when using ssl')
        else:
            if server_hostname is not None:
                raise ValueError(
                    'server_hostname is only meaningful with ssl')
            check_ssl_timeouts(False, ssl_handshake_timeout,
                               ssl_shutdown_timeout)

        if path is not None:
            if sock is not None:
                raise ValueError(
                    'path and sock can not be specified at the same time')
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except:  # noqa: E722 - also on cancellation
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError('no path and sock were specified')
            if (sock.family != socket.AF_UNIX
                    or sock.type != socket.SOCK_STREAM):
                raise ValueError(
                    f'A UNIX Domain Stream Socket was expected, got {sock!r}')
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)

    async def connect_accepted_socket(
            self, protocol_factory, sock, *, ssl=None,
            ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        """Wrap a socket accepted outside asyncio in a transport."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f'A Stream Socket was expected, got {sock!r}')
        check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        check_ssl_socket(sock)
        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, '', server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if self._debug:
            logger.debug('%r handled: (%r, %r)',
                         transport.get_extra_info('socket'), transport,
                         protocol)
        return transport, protocol
