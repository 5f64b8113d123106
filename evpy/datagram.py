"""DatagramMixin: loop.create_datagram_endpoint and the datagram sock_*
coroutines (sock_sendto, sock_recvfrom, sock_recvfrom_into).

Transports come from ``factories.datagram_transport`` (the C datagram
transport). Argument
checking, address resolution and socket set-up follow asyncio 3.11-3.13
(base_events.create_datagram_endpoint); the sock_* coroutines try the
system call first and watch the descriptor only when it would block, as
selector_events does, removing the watch when the future is done
(including on cancellation).
"""

import logging
from operator import methodcaller
import socket

from . import factories
from ._compat import PY313
from .sock import _SSLSocket, numeric_addrinfo
from .sockutil import remove_stale_unix_socket, set_reuseport

logger = logging.getLogger('asyncio')

_HAS_IPv6 = hasattr(socket, 'AF_INET6')
_HAS_AF_UNIX = hasattr(socket, 'AF_UNIX')


class DatagramMixin:
    """create_datagram_endpoint and sock_sendto/recvfrom/recvfrom_into."""

    # -- create_datagram_endpoint ---------------------------------------------

    async def _resolve_dgram(self, address, family, proto, flags):
        host, port = address[:2]
        info = numeric_addrinfo(host, port, family, socket.SOCK_DGRAM,
                                proto, *address[2:])
        if info is not None:
            return [info]
        return await self.getaddrinfo(host, port, family=family,
                                      type=socket.SOCK_DGRAM, proto=proto,
                                      flags=flags)

    async def create_datagram_endpoint(self, protocol_factory,
                                       local_addr=None, remote_addr=None, *,
                                       family=0, proto=0, flags=0,
                                       reuse_port=None,
                                       allow_broadcast=None, sock=None):
        """Create a datagram endpoint; return (transport, protocol)."""
        r_addr = None
        if sock is not None:
            if PY313:
                if sock.type == socket.SOCK_STREAM:
                    raise ValueError(
                        f'A datagram socket was expected, got {sock!r}')
            elif sock.type != socket.SOCK_DGRAM:
                raise ValueError(f'A UDP Socket was expected, got {sock!r}')
            if (local_addr or remote_addr or family or proto or flags
                    or reuse_port or allow_broadcast):
                opts = dict(local_addr=local_addr, remote_addr=remote_addr,
                            family=family, proto=proto, flags=flags,
                            reuse_port=reuse_port,
                            allow_broadcast=allow_broadcast)
                problems = ', '.join(f'{k}={v}' for k, v in opts.items()
                                     if v)
                raise ValueError(
                    'socket modifier keyword arguments can not be used '
                    f'when sock is specified. ({problems})')
            sock.setblocking(False)
        else:
            pairs = await self._datagram_address_pairs(
                local_addr, remote_addr, family, proto, flags)
            sock, r_addr = await self._open_datagram_socket(
                pairs, local_addr, remote_addr, reuse_port, allow_broadcast)

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = factories.datagram_transport(self, sock, protocol,
                                                 r_addr, waiter)
        if self._debug:
            if local_addr:
                logger.info('Datagram endpoint local_addr=%r remote_addr=%r '
                            'created: (%r, %r)',
                            local_addr, remote_addr, transport, protocol)
            else:
                logger.debug('Datagram endpoint remote_addr=%r created: '
                             '(%r, %r)', remote_addr, transport, protocol)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_address_pairs(self, local_addr, remote_addr, family,
                                      proto, flags):
        """[((family, proto), (local_address, remote_address)), ...] to
        try in order."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError('unexpected address family')
            return [((family, proto), (None, None))]
        if _HAS_AF_UNIX and family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError('string is expected')
            if local_addr:
                remove_stale_unix_socket(local_addr)
            return [((family, proto), (local_addr, remote_addr))]

        # Group the resolved addresses by (family, proto), in order.
        by_key = {}
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError('2-tuple is expected')
            infos = await self._resolve_dgram(addr, family, proto, flags)
            if not infos:
                raise OSError('getaddrinfo() returned empty list')
            for fam, _, pro, _, address in infos:
                pair = by_key.setdefault((fam, pro), [None, None])
                pair[index] = address
        # Every address given must have an entry for the pair's key.
        pairs = [(key, pair) for key, pair in by_key.items()
                 if not ((local_addr and pair[0] is None)
                         or (remote_addr and pair[1] is None))]
        if not pairs:
            raise ValueError('can not get address information')
        return pairs

    async def _open_datagram_socket(self, pairs, local_addr, remote_addr,
                                    reuse_port, allow_broadcast):
        """Create, bind and connect a socket for the first pair that
        works; return (sock, remote address or None)."""
        exceptions = []
        for (family, proto), (local_address, remote_address) in pairs:
            sock = None
            try:
                sock = socket.socket(family=family, type=socket.SOCK_DGRAM,
                                     proto=proto)
                if reuse_port:
                    set_reuseport(sock)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if local_addr:
                    sock.bind(local_address)
                r_addr = None
                if remote_addr:
                    if not allow_broadcast:
                        await self.sock_connect(sock, remote_address)
                    r_addr = remote_address
            except OSError as exc:
                if sock is not None:
                    sock.close()
                exceptions.append(exc)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            else:
                return sock, r_addr
        try:
            raise exceptions[0]
        finally:
            exceptions = None  # break the traceback cycle

    # -- sock_sendto / sock_recvfrom / sock_recvfrom_into ---------------------

    async def sock_sendto(self, sock, data, address):
        """Send one datagram to address; return the number of bytes
        sent."""
        if isinstance(sock, _SSLSocket) or self._debug:
            self._check_sock(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(
            sock, True, methodcaller('sendto', data, address))

    async def sock_recvfrom(self, sock, bufsize):
        """Receive one datagram: return (data, address)."""
        if isinstance(sock, _SSLSocket) or self._debug:
            self._check_sock(sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, False,
                                     methodcaller('recvfrom', bufsize))

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive one datagram into buf: return (nbytes, address)."""
        if isinstance(sock, _SSLSocket) or self._debug:
            self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(
            sock, False, methodcaller('recvfrom_into', buf, nbytes))
