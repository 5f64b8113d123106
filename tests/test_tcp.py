"""TCP connections: create_connection and the stream transport it returns
(echo, extra info, large transfers, many connections, half-close, resets,
refused connections, closing with pending writes, flow control), and
create_connection's argument checking."""
import asyncio
import errno as errno_mod
import hashlib
import os
import socket
import sys

import pytest
from nethelpers import (Collect, Echo, close_server, has_ipv6, port_of,
                        raw_peer_pair, run, tcp_pair)

TIMEOUT = 20.0
PY312 = sys.version_info >= (3, 12)


def free_port():
    """A port on 127.0.0.1 with nothing listening on it."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Digest(asyncio.Protocol):
    """Hashes everything it receives; on EOF replies with the length and
    hex digest, then closes."""

    def connection_made(self, transport):
        self.transport = transport
        self.hash = hashlib.sha256()
        self.size = 0

    def data_received(self, data):
        self.hash.update(data)
        self.size += len(data)

    def eof_received(self):
        self.transport.write(b'%d %s' % (self.size,
                                         self.hash.hexdigest().encode()))
        self.transport.close()
        return True


async def echo_server(loop, host='127.0.0.1', factory=Echo, **kw):
    return await loop.create_server(factory, host, 0, **kw)


async def echo_client(loop):
    """An echo server on 127.0.0.1 and a Collect client connected to it:
    (server, transport, protocol)."""
    server = await echo_server(loop)
    try:
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port_of(server))
    except BaseException:
        await close_server(server)
        raise
    return server, tr, pr


# ---------------------------------------------------------------- basics

def test_echo_and_extra_info(loop):
    async def main():
        server = await echo_server(loop)
        port = port_of(server)
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port)
        assert isinstance(tr, asyncio.Transport)
        assert pr.events == ['made']
        assert not tr.is_closing()
        assert tr.get_protocol() is pr
        sock = tr.get_extra_info('socket')
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == socket.AF_INET
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert tr.get_extra_info('peername') == ('127.0.0.1', port)
        assert tr.get_extra_info('sockname') == sock.getsockname()
        assert tr.get_extra_info('nonexistent', 'dflt') == 'dflt'
        tr.write(b'hello ')
        tr.writelines([b'wor', bytearray(b'ld'), memoryview(b'!')])
        while len(pr.data) < 12:
            await asyncio.sleep(0.01)
        assert bytes(pr.data) == b'hello world!'
        tr.close()
        assert tr.is_closing()
        assert await pr.lost is None
        await close_server(server)
    run(loop, main())


def test_server_side_transport(loop):
    async def main():
        server, tr, pr, accepted = await tcp_pair(loop)
        srv = await accepted
        stran = srv.transport
        assert stran.get_extra_info('peername') == tr.get_extra_info(
            'sockname')
        assert stran.get_extra_info('sockname') == tr.get_extra_info(
            'peername')
        ssock = stran.get_extra_info('socket')
        assert ssock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        stran.write(b'from server')
        tr.write(b'from client')
        while len(pr.data) < 11 or len(srv.data) < 11:
            await asyncio.sleep(0.01)
        assert pr.data == b'from server' and srv.data == b'from client'
        tr.close()
        assert await srv.eof == b'from client'
        assert await srv.lost is None
        await pr.lost
        await close_server(server)
    run(loop, main())


@pytest.mark.skipif(not has_ipv6(), reason='no IPv6 loopback')
def test_ipv6_echo(loop):
    async def main():
        server = await echo_server(loop, host='::1')
        port = port_of(server)
        assert server.sockets[0].family == socket.AF_INET6
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '::1', port)
        assert tr.get_extra_info('peername')[:2] == ('::1', port)
        tr.write(b'six')
        while len(pr.data) < 3:
            await asyncio.sleep(0.01)
        assert pr.data == b'six'
        tr.close()
        await pr.lost
        await close_server(server)
    run(loop, main())


# Loopback addresses whose parts have one, two and three digits (all of
# 127/8 is loopback on Linux): what evpy's C address conversion prints.
LOOPBACK_ADDRS = ['127.0.0.1', '127.10.100.255', '127.255.0.9',
                  '127.99.199.200', '127.1.20.3']


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='127/8 is all loopback on Linux only')
def test_ipv4_addresses_in_extra_info(loop):
    async def main():
        seen = []

        class Server(asyncio.Protocol):
            def connection_made(self, tr):
                seen.append(tr.get_extra_info('peername'))

        server = await loop.create_server(Server, '127.0.0.1', 0)
        port = port_of(server)
        for i, addr in enumerate(LOOPBACK_ADDRS):
            tr, pr = await loop.create_connection(
                lambda: Collect(loop), '127.0.0.1', port,
                local_addr=(addr, 0))
            sockname = tr.get_extra_info('sockname')
            assert sockname[0] == addr
            assert tr.get_extra_info('peername') == ('127.0.0.1', port)
            while len(seen) <= i:
                await asyncio.sleep(0.005)
            assert seen[-1] == sockname
            tr.close()
            await pr.lost
            assert tr.get_extra_info('sockname') == sockname
        await close_server(server)
    run(loop, main())


def test_hostname_resolution(loop):
    async def main():
        server = await echo_server(loop)
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), 'localhost', port_of(server),
            family=socket.AF_INET)
        assert tr.get_extra_info('peername')[0] == '127.0.0.1'
        tr.close()
        await pr.lost
        await close_server(server)
    run(loop, main())


def test_getaddrinfo_getnameinfo(loop):
    async def main():
        infos = await loop.getaddrinfo('127.0.0.1', 80,
                                       type=socket.SOCK_STREAM)
        assert infos == socket.getaddrinfo('127.0.0.1', 80,
                                           type=socket.SOCK_STREAM)
        infos = await loop.getaddrinfo('localhost', 'http',
                                       family=socket.AF_INET,
                                       type=socket.SOCK_STREAM)
        assert infos[0][4] == ('127.0.0.1', 80)
        name = await loop.getnameinfo(
            ('127.0.0.1', 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        assert name == ('127.0.0.1', '80')
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo('no-such-host.invalid', 80)
    run(loop, main())


def test_connection_with_sock(loop):
    async def main():
        server = await echo_server(loop)
        sock = socket.create_connection(('127.0.0.1', port_of(server)))
        tr, pr = await loop.create_connection(lambda: Collect(loop),
                                              sock=sock)
        assert sock.gettimeout() == 0  # made non-blocking
        assert tr.get_extra_info('socket').fileno() == sock.fileno()
        tr.write(b'ping')
        while len(pr.data) < 4:
            await asyncio.sleep(0.01)
        tr.close()
        await pr.lost
        assert sock.fileno() == -1  # the transport closed it
        await close_server(server)
    run(loop, main())


def test_local_addr(loop):
    async def main():
        server = await echo_server(loop)
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            lport = probe.getsockname()[1]
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port_of(server),
            local_addr=('127.0.0.1', lport))
        assert tr.get_extra_info('sockname') == ('127.0.0.1', lport)
        # The same local address again is in use: a bind error.
        with pytest.raises(OSError) as info:
            await loop.create_connection(
                lambda: Collect(loop), '127.0.0.1', port_of(server),
                local_addr=('127.0.0.1', lport))
        assert 'error while attempting to bind on address' in str(
            info.value)
        tr.close()
        await pr.lost
        await close_server(server)
    run(loop, main())


def test_local_addr_family_mismatch(loop):
    async def main():
        server = await echo_server(loop)
        with pytest.raises(OSError, match='no matching local address'):
            await loop.create_connection(
                lambda: Collect(loop), '127.0.0.1', port_of(server),
                local_addr=('::1', 0))
        await close_server(server)
    if not has_ipv6():
        pytest.skip('no IPv6 loopback')
    run(loop, main())


def test_protocol_factory_result_returned(loop):
    async def main():
        server = await echo_server(loop)
        made = []

        def factory():
            p = Collect(loop)
            made.append(p)
            return p
        tr, pr = await loop.create_connection(factory, '127.0.0.1',
                                              port_of(server))
        assert made == [pr]
        tr.abort()
        await pr.lost
        await close_server(server)
    run(loop, main())


# ------------------------------------------------------------ errors

def test_connection_refused(loop):
    async def main():
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, '127.0.0.1',
                                         free_port())
    run(loop, main())


def test_connection_refused_message(loop):
    """The error a refused connection raises, word for word."""
    port = free_port()

    async def main():
        try:
            await loop.create_connection(asyncio.Protocol, '127.0.0.1', port)
        except ConnectionRefusedError as exc:
            return exc.errno, str(exc)
        raise AssertionError('connected')

    err, text = run(loop, main())
    assert err == errno_mod.ECONNREFUSED
    assert text in ('[Errno 111] Connection refused',
                    f"[Errno 111] Connect call failed ('127.0.0.1', {port})")


def test_protocol_factory_error_closes_socket(loop):
    """The fd leak check of the fixture proves the socket is closed."""
    async def main():
        server = await echo_server(loop)

        def factory():
            raise ZeroDivisionError
        with pytest.raises(ZeroDivisionError):
            await loop.create_connection(factory, '127.0.0.1',
                                         port_of(server))
        await close_server(server)
    run(loop, main())


def test_cancel_while_connecting_closes_socket(loop):
    """Cancelled while the connect is in progress (a listener whose
    backlog is full never completes it): the socket is closed."""
    async def main():
        with socket.socket() as lsock:
            lsock.bind(('127.0.0.1', 0))
            lsock.listen(0)
            addr = lsock.getsockname()
            fillers = []
            try:
                # Fill the accept queue so the next connect stays pending.
                for _ in range(8):
                    f = socket.socket()
                    f.setblocking(False)
                    f.connect_ex(addr)
                    fillers.append(f)
                task = asyncio.ensure_future(
                    loop.create_connection(asyncio.Protocol, *addr))
                await asyncio.sleep(0.05)
                if task.done():
                    pytest.skip('the kernel completed the connect anyway')
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                for f in fillers:
                    f.close()
    run(loop, main())


def test_client_extra_info_after_close(loop):
    """sockname/peername stay readable after connection_lost."""
    async def main():
        server = await echo_server(loop)
        port = port_of(server)
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port)
        tr.close()
        await pr.lost
        await close_server(server)
        return tr.get_extra_info('peername'), tr.get_extra_info('sockname')

    peer, name = run(loop, main())
    assert peer[0] == '127.0.0.1' and peer[1] > 0
    assert name[0] == '127.0.0.1' and name[1] > 0


@pytest.mark.skipif(not PY312, reason='all_errors is new in 3.12')
def test_connection_refused_all_errors(loop):
    async def main():
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(asyncio.Protocol, '127.0.0.1',
                                         free_port(), all_errors=True)
        assert len(info.value.exceptions) == 1
        assert isinstance(info.value.exceptions[0], ConnectionRefusedError)
    run(loop, main())


def _fake_getaddrinfo(loop, addrs):
    """Make loop.getaddrinfo return the given (host, port) addresses."""
    async def getaddrinfo(host, port, *, family=0, type=0, proto=0,
                          flags=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                 '', addr) for addr in addrs]
    loop.getaddrinfo = getaddrinfo


def test_multiple_refused_addresses(loop):
    async def main():
        port = free_port()
        _fake_getaddrinfo(loop, [('127.0.0.1', port), ('127.0.0.2', port)])
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, 'example', port)
        assert str(info.value).startswith('Multiple exceptions: ')
        assert '127.0.0.2' in str(info.value)
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo


def test_first_address_refused_second_works(loop):
    async def main():
        server = await echo_server(loop)
        port = port_of(server)
        bad = free_port()

        # host/port name a (fake) service resolving to two addresses.
        async def getaddrinfo(host, p, **kw):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, '',
                     ('127.0.0.1', bad)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, '',
                     ('127.0.0.1', port))]
        loop.getaddrinfo = getaddrinfo
        for delay in (None, 0.05):
            tr, pr = await loop.create_connection(
                lambda: Collect(loop), 'example', 1,
                happy_eyeballs_delay=delay)
            assert tr.get_extra_info('peername') == ('127.0.0.1', port)
            tr.close()
            await pr.lost
        await close_server(server)
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo


@pytest.mark.skipif(not has_ipv6(), reason='no IPv6 loopback')
def test_happy_eyeballs_interleave(loop):
    async def main():
        server = await loop.create_server(Echo, ['127.0.0.1', '::1'], 0)
        ports = {s.family: s.getsockname()[1] for s in server.sockets}
        bad4, bad6 = free_port(), free_port()
        tried = []

        async def getaddrinfo(host, p, **kw):
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, '',
                 ('::1', bad6, 0, 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, '',
                 ('::1', ports[socket.AF_INET6], 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, '',
                 ('127.0.0.1', bad4)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, '',
                 ('127.0.0.1', ports[socket.AF_INET])),
            ]
        loop.getaddrinfo = getaddrinfo
        real_connect = loop.sock_connect

        async def sock_connect(sock, address):
            tried.append(address[:2])
            return await real_connect(sock, address)
        loop.sock_connect = sock_connect
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), 'example', 1, happy_eyeballs_delay=0.05)
        # Interleaved by family: ::1 bad, 127.0.0.1 bad, ::1 good.
        assert tried[:2] == [('::1', bad6), ('127.0.0.1', bad4)]
        assert tr.get_extra_info('peername')[:2] in (
            ('::1', ports[socket.AF_INET6]),
            ('127.0.0.1', ports[socket.AF_INET]))
        tr.close()
        await pr.lost
        await close_server(server)
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo
        del loop.sock_connect


def test_empty_getaddrinfo(loop):
    async def main():
        _fake_getaddrinfo(loop, [])
        with pytest.raises(OSError, match='getaddrinfo.. returned empty'):
            await loop.create_connection(asyncio.Protocol, 'example', 1)
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo


def test_create_connection_bad_arguments(loop):
    async def main():
        server = await echo_server(loop)
        port = port_of(server)
        with socket.socket() as sock, \
                socket.socket(type=socket.SOCK_DGRAM) as dgram:
            with pytest.raises(ValueError, match='at the same time'):
                await loop.create_connection(asyncio.Protocol, '127.0.0.1',
                                             port, sock=sock)
            with pytest.raises(ValueError, match='no sock specified'):
                await loop.create_connection(asyncio.Protocol)
            with pytest.raises(ValueError, match='Stream Socket'):
                await loop.create_connection(asyncio.Protocol, sock=dgram)
            with pytest.raises(ValueError, match='server_hostname'):
                await loop.create_connection(
                    asyncio.Protocol, '127.0.0.1', port,
                    server_hostname='x')
            with pytest.raises(ValueError, match='ssl_handshake_timeout'):
                await loop.create_connection(
                    asyncio.Protocol, '127.0.0.1', port,
                    ssl_handshake_timeout=1)
            with pytest.raises(ValueError, match='ssl_shutdown_timeout'):
                await loop.create_connection(
                    asyncio.Protocol, '127.0.0.1', port,
                    ssl_shutdown_timeout=1)
            with pytest.raises(ValueError, match='You must set '
                                                 'server_hostname'):
                await loop.create_connection(asyncio.Protocol, sock=sock,
                                             ssl=True)
            with pytest.raises(TypeError):
                await loop.create_connection(asyncio.Protocol, '127.0.0.1',
                                             port, bogus=1)
        await close_server(server)
    run(loop, main())


@pytest.mark.skipif(PY312, reason='3.11 has no all_errors')
def test_all_errors_rejected_on_311(loop):
    async def main():
        with pytest.raises(TypeError):
            await loop.create_connection(asyncio.Protocol, '127.0.0.1', 1,
                                         all_errors=False)
    run(loop, main())


def test_cancel_create_connection_leaks_nothing(loop):
    async def main():
        started = asyncio.Event()

        async def slow_getaddrinfo(*args, **kw):
            started.set()
            await asyncio.sleep(10)
        loop.getaddrinfo = slow_getaddrinfo
        task = asyncio.ensure_future(
            loop.create_connection(asyncio.Protocol, 'example', 1))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo


# ------------------------------------------------------- data transfer

def test_large_transfer_checksum(loop):
    payload = os.urandom(10 * 1024 * 1024)
    expected = b'%d %s' % (len(payload),
                           hashlib.sha256(payload).hexdigest().encode())

    async def main():
        server = await loop.create_server(Digest, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port_of(server))
        view = memoryview(payload)
        for i in range(0, len(payload), 1024 * 1024):
            tr.write(view[i:i + 1024 * 1024])
        assert tr.can_write_eof()
        tr.write_eof()
        await pr.lost
        assert bytes(pr.data) == expected
        tr.close()
        await close_server(server)
    run(loop, main())


def test_large_download_checksum(loop):
    payload = os.urandom(10 * 1024 * 1024)

    class Sender(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(payload)
            transport.close()

    async def main():
        server = await loop.create_server(Sender, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port_of(server))
        await pr.eof
        await pr.lost
        assert hashlib.sha256(pr.data).digest() == hashlib.sha256(
            payload).digest()
        await close_server(server)
    run(loop, main())


def test_many_concurrent_connections(loop):
    n = 200

    async def client(port, i):
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port)
        msg = b'client %d ' % i * 50
        tr.write(msg)
        tr.write_eof()
        await pr.lost
        return bytes(pr.data) == msg

    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0, backlog=n)
        results = await asyncio.gather(*[client(port_of(server), i)
                                         for i in range(n)])
        assert all(results)
        await close_server(server)
    run(loop, main())


def test_buffered_protocol(loop):
    payload = os.urandom(1024 * 1024)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(65536)
            self.got = bytearray()
            self.done = loop.create_future()
            self.sizes = []

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            self.sizes.append(sizehint)
            return self.buf

        def buffer_updated(self, nbytes):
            assert 0 < nbytes <= len(self.buf)
            self.got += self.buf[:nbytes]

        def eof_received(self):
            self.done.set_result(bytes(self.got))

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_exception(exc or EOFError())

    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(Buffered, '127.0.0.1',
                                              port_of(server))
        tr.write(payload)
        tr.write_eof()
        assert await pr.done == payload
        tr.close()
        await close_server(server)
    run(loop, main())


# ------------------------------------------------------ closing and EOF

def test_half_close_eof_received_true_keeps_transport_open(loop):
    async def main():
        server, tr, pr, srv_proto = await tcp_pair(
            loop, lambda: Collect(loop, eof_result=True))
        tr.write(b'request')
        tr.write_eof()
        with pytest.raises(RuntimeError):
            tr.write(b'after eof')
        srv = await srv_proto
        assert await srv.eof == b'request'
        # The server side stays open after EOF and can still answer.
        await asyncio.sleep(0.05)
        assert not srv.lost.done()
        assert not srv.transport.is_closing()
        srv.transport.write(b'response')
        srv.transport.write_eof()
        assert await pr.eof == b'response'
        assert await pr.lost is None
        srv.transport.close()
        assert await srv.lost is None
        assert srv.events == ['made', 'eof', 'lost']
        await close_server(server)
    run(loop, main())


def test_eof_received_false_closes(loop):
    async def main():
        server, tr, pr, srv_proto = await tcp_pair(loop)
        tr.write_eof()
        srv = await srv_proto
        await srv.eof
        assert await srv.lost is None
        assert srv.transport.is_closing()
        # The client sees the server's close as EOF.
        await pr.eof
        await pr.lost
        await close_server(server)
    run(loop, main())


def test_peer_reset_reaches_connection_lost(loop):
    async def main():
        conn, tr, pr = await raw_peer_pair(loop)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        b'\x01\x00\x00\x00\x00\x00\x00\x00')
        conn.close()  # RST
        exc = await pr.lost
        assert isinstance(exc, ConnectionResetError)
        assert tr.is_closing()
    run(loop, main())


def test_close_flushes_pending_writes(loop):
    payload = os.urandom(8 * 1024 * 1024)

    async def main():
        conn, tr, pr = await raw_peer_pair(loop)
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0
        tr.close()
        got = bytearray()
        while True:
            chunk = await loop.sock_recv(conn, 1 << 20)
            if not chunk:
                break
            got += chunk
        conn.close()
        assert await pr.lost is None
        assert len(got) == len(payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(
            payload).digest()
    run(loop, main())


def test_abort_drops_pending_writes(loop):
    payload = b'x' * (32 * 1024 * 1024)

    async def main():
        conn, tr, pr = await raw_peer_pair(loop)
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.is_closing()
        assert await pr.lost is None
        got = 0
        while True:
            try:
                chunk = await loop.sock_recv(conn, 1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        conn.close()
        assert got < len(payload)
    run(loop, main())


def test_write_to_closed_transport(loop):
    async def main():
        server, tr, pr, srv_proto = await tcp_pair(loop)
        tr.write(b'before')
        tr.close()
        tr.close()  # idempotent
        tr.write(b'after close')  # ignored, no exception
        assert await pr.lost is None
        for _ in range(3):
            tr.write(b'after lost')  # still ignored
        srv = await srv_proto
        assert await srv.eof == b'before'
        await srv.lost
        assert pr.events == ['made', 'lost']
        await close_server(server)
    run(loop, main())


def test_write_type_errors(loop):
    async def main():
        server, tr, pr = await echo_client(loop)
        with pytest.raises(TypeError):
            tr.write('text is not bytes')
        tr.write(b'')  # no-op
        tr.close()
        await pr.lost
        await close_server(server)
    run(loop, main())


# --------------------------------------------------------- flow control

def test_flow_control_slow_reader(loop):
    async def main():
        class Srv(Collect):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()

        server, tr, pr, srv_proto = await tcp_pair(loop, lambda: Srv(loop))
        srv = await srv_proto
        assert not srv.transport.is_reading()
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b'y' * 65536
        sent = 0
        while not pr.paused:
            tr.write(chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
            assert sent < 512 * 1024 * 1024, 'pause_writing never called'
        assert pr.paused == 1 and pr.resumed == 0
        assert tr.get_write_buffer_size() > 64 * 1024
        srv.transport.resume_reading()
        assert srv.transport.is_reading()
        while len(srv.data) < sent:
            await asyncio.sleep(0.01)
        assert len(srv.data) == sent
        assert pr.resumed == 1
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await pr.lost
        await srv.lost
        await close_server(server)
    run(loop, main())


def test_pause_reading_stops_data_received(loop):
    async def main():
        server, tr, pr = await echo_client(loop)
        assert tr.is_reading()
        tr.pause_reading()
        tr.pause_reading()  # idempotent
        assert not tr.is_reading()
        tr.write(b'abc')
        await asyncio.sleep(0.1)
        assert pr.data == b''
        tr.resume_reading()
        tr.resume_reading()
        while len(pr.data) < 3:
            await asyncio.sleep(0.01)
        assert pr.data == b'abc'
        tr.close()
        await pr.lost
        await close_server(server)
    run(loop, main())


def test_bad_write_buffer_limits(loop):
    async def main():
        server, tr, pr = await echo_client(loop)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=10, low=20)
        tr.close()
        await pr.lost
        await close_server(server)
    run(loop, main())


def test_set_protocol(loop):
    async def main():
        server, tr, pr = await echo_client(loop)
        other = Collect(loop)
        tr.set_protocol(other)
        assert tr.get_protocol() is other
        tr.write(b'switch')
        while len(other.data) < 6:
            await asyncio.sleep(0.01)
        assert other.data == b'switch' and pr.data == b''
        tr.close()
        assert await other.lost is None
        assert not pr.lost.done()
        await close_server(server)
    run(loop, main())


def test_write_that_must_wait_after_loop_close_raises(loop):
    """Data that cannot be written at once needs the loop: once it is
    closed, write() refuses it instead of queueing it forever."""
    a, b = socket.socketpair()
    a.setblocking(False)
    tr = None
    try:
        async def make():
            return loop._make_socket_transport(a, asyncio.Protocol())
        tr = run(loop, make())
        run(loop, asyncio.sleep(0.01))
        loop.close()
        with pytest.raises(RuntimeError, match='Event loop is closed'):
            tr.write(b'x' * (16 * 1024 * 1024))
    finally:
        if tr is not None:  # the socket is closed below, not by tr
            tr._sock = None
        a.close()
        b.close()


@pytest.mark.skipif(sys.version_info < (3, 15),
                    reason="3.15: connections run in a copy of their context")
def test_client_connection_runs_in_its_own_context(loop):
    # What connection_made() sets, data_received() sees; the caller's
    # context is untouched.
    import contextvars
    var = contextvars.ContextVar("var", default="unset")
    seen = loop.create_future()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            var.set("in-connection")
            transport.write(b"x")

        def data_received(self, data):
            if not seen.done():
                seen.set_result(var.get())

    async def main():
        server = await loop.create_server(EchoOnce, '127.0.0.1', 0)
        var.set("caller")
        tr, _ = await loop.create_connection(
            Proto, *server.sockets[0].getsockname()[:2])
        got = await seen
        tr.close()
        server.close()
        await server.wait_closed()
        return got, var.get()

    assert run(loop, main()) == ("in-connection", "caller")


class EchoOnce(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)
