"""Datagrams: loop.create_datagram_endpoint (UDP over IPv4 and IPv6,
connected and unconnected, ICMP errors, broadcast, reuse_port, sock=,
AF_UNIX datagram sockets), the datagram transport (sendto, extra info,
close/abort) and loop.sock_sendto / sock_recvfrom / sock_recvfrom_into."""
import asyncio
import os
import socket
import sys

import pytest
from nethelpers import run

TIMEOUT = 20.0
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


async def until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(('::1', 0))
    except OSError:
        return False
    return True


def closed_udp_port():
    """A UDP port on 127.0.0.1 nobody listens on (until reused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Proto(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.transport = None
        self.received = []
        self.errors = []
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def datagram_received(self, data, addr):
        assert isinstance(data, bytes)
        self.received.append((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)


def test_sendto_unconnected(loop):
    async def main():
        a_tr, a = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        b_tr, b = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        assert isinstance(a_tr, asyncio.BaseTransport)
        if PY312:  # 3.11's selector datagram transport lacks the base
            assert isinstance(a_tr, asyncio.DatagramTransport)
        assert a.events == ['made'] and a.transport is a_tr
        a_addr = a_tr.get_extra_info('sockname')
        b_addr = b_tr.get_extra_info('sockname')
        assert a_addr[0] == '127.0.0.1' and a_addr[1] > 0
        assert a_tr.get_extra_info('peername') is None
        sock = a_tr.get_extra_info('socket')
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_DGRAM
        assert sock.getsockname() == a_addr
        for i in range(5):
            a_tr.sendto(b'msg %d' % i, b_addr)
        # Empty datagrams are sent from 3.13 on, silently dropped before.
        a_tr.sendto(b'', b_addr)
        a_tr.sendto(b'end', b_addr)
        expected = [(b'msg %d' % i, a_addr) for i in range(5)]
        if PY313:
            expected.append((b'', a_addr))
        expected.append((b'end', a_addr))
        await until(lambda: len(b.received) == len(expected))
        assert b.received == expected
        b_tr.sendto(b'reply', a_addr)
        await until(lambda: a.received)
        assert a.received == [(b'reply', b_addr)]
        assert a_tr.get_write_buffer_size() == 0
        with pytest.raises(TypeError):
            a_tr.sendto('text', b_addr)
        a_tr.close()
        b_tr.close()
        assert await a.lost is None and await b.lost is None
        assert a.errors == [] and b.errors == []
    run(loop, main())


def test_sendto_connected(loop):
    async def main():
        srv_tr, srv = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        srv_addr = srv_tr.get_extra_info('sockname')
        cli_tr, cli = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=srv_addr)
        assert cli_tr.get_extra_info('peername') == srv_addr
        cli_addr = cli_tr.get_extra_info('sockname')
        cli_tr.sendto(b'one')
        cli_tr.sendto(b'two', srv_addr)  # the peer's own address is fine
        cli_tr.sendto(b'three', None)
        await until(lambda: len(srv.received) == 3)
        assert srv.received == [(b'one', cli_addr), (b'two', cli_addr),
                                (b'three', cli_addr)]
        with pytest.raises(ValueError, match='Invalid address'):
            cli_tr.sendto(b'elsewhere', ('127.0.0.1', 9))
        srv_tr.sendto(b'back', cli_addr)
        await until(lambda: cli.received)
        assert cli.received == [(b'back', srv_addr)]
        cli_tr.close()
        srv_tr.close()
        await cli.lost
        await srv.lost
    run(loop, main())


def test_error_received_on_icmp_refused(loop):
    async def main():
        port = closed_udp_port()
        tr, pr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=('127.0.0.1', port))
        tr.sendto(b'anyone?')
        await until(lambda: pr.errors)
        assert isinstance(pr.errors[0], ConnectionRefusedError)
        assert not tr.is_closing()  # an ICMP error does not close it
        tr.close()
        assert await pr.lost is None
    run(loop, main())


def test_allow_broadcast(loop):
    async def main():
        rtr, rpr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        raddr = rtr.get_extra_info('sockname')
        tr, pr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=raddr, allow_broadcast=True)
        sock = tr.get_extra_info('socket')
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        # With allow_broadcast the socket is not connected, but sendto()
        # without an address goes to remote_addr.
        assert tr.get_extra_info('peername') is None
        tr.sendto(b'to everyone')
        await until(lambda: rpr.received)
        assert rpr.received[0][0] == b'to everyone'
        tr.close()
        rtr.close()
        await pr.lost
        await rpr.lost
    run(loop, main())


def test_ipv6(loop):
    if not has_ipv6():
        pytest.skip('::1 is not available')

    async def main():
        a_tr, a = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('::1', 0))
        a_addr = a_tr.get_extra_info('sockname')
        assert a_tr.get_extra_info('socket').family == socket.AF_INET6
        b_tr, b = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=a_addr[:2])
        b_addr = b_tr.get_extra_info('sockname')
        b_tr.sendto(b'six')
        await until(lambda: a.received)
        assert a.received == [(b'six', b_addr)]
        a_tr.sendto(b'back', b_addr)
        await until(lambda: b.received)
        assert b.received[0][0] == b'back'
        a_tr.close()
        b_tr.close()
        await a.lost
        await b.lost
    run(loop, main())


@pytest.mark.expect_handler_calls
def test_sendto_address_forms(loop, errors):
    """The address forms sendto() takes on an unconnected endpoint: numeric
    IPv4, a host name, IPv6 2- and 4-tuples; and what a bad one gives."""
    async def main():
        a_tr, a = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        port = a_tr.get_extra_info('sockname')[1]
        b_tr, b = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        b_tr.sendto(b'1', ('127.0.0.1', port))
        b_tr.sendto(b'2', ('localhost', port))
        await until(lambda: len(a.received) == 2)
        assert sorted(d for d, _ in a.received) == [b'1', b'2']
        # Out of range: the socket module's OverflowError is not an
        # OSError, so it is a fatal write error that closes the transport.
        b_tr.sendto(b'3', ('127.0.0.1', 70000))
        await b.lost
        assert b_tr.is_closing() and not b.errors
        a_tr.close()
        await a.lost

    run(loop, main())
    assert [type(c.get('exception')) for c in errors] == [OverflowError]


@pytest.mark.skipif(not has_ipv6(), reason='::1 is not available')
def test_sendto_ipv6_four_tuple(loop):
    async def main():
        a_tr, a = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('::1', 0))
        host, port = a_tr.get_extra_info('sockname')[:2]
        b_tr, b = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('::1', 0))
        b_tr.sendto(b'two', (host, port))
        b_tr.sendto(b'four', (host, port, 0, 0))
        await until(lambda: len(a.received) == 2)
        assert [d for d, _ in a.received] == [b'two', b'four']
        a_tr.close()
        b_tr.close()
        await a.lost
        await b.lost
    run(loop, main())


def test_resolves_host_names(loop):
    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('localhost', 0),
            family=socket.AF_INET)
        assert tr.get_extra_info('sockname')[0] == '127.0.0.1'
        tr.close()
        await pr.lost
    run(loop, main())


def test_unix_datagrams(loop, tmp_path):
    srv_path = str(tmp_path / 'srv.sock')
    cli_path = str(tmp_path / 'cli.sock')
    # A stale socket file where the server binds: it is removed.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(srv_path)
    stale.close()
    assert os.path.exists(srv_path)

    async def main():
        srv_tr, srv = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=srv_path, family=socket.AF_UNIX)
        assert srv_tr.get_extra_info('sockname') == srv_path
        cli_tr, cli = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=cli_path, remote_addr=srv_path,
            family=socket.AF_UNIX)
        assert cli_tr.get_extra_info('peername') == srv_path
        cli_tr.sendto(b'unix datagram')
        await until(lambda: srv.received)
        assert srv.received == [(b'unix datagram', cli_path)]
        srv_tr.sendto(b'answer', cli_path)
        await until(lambda: cli.received)
        assert cli.received == [(b'answer', srv_path)]
        srv_tr.close()
        cli_tr.close()
        await srv.lost
        await cli.lost
        with pytest.raises(TypeError, match='string is expected'):
            await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=('127.0.0.1', 0),
                family=socket.AF_UNIX)
    run(loop, main())


class FlowProto(Proto):
    def __init__(self, loop):
        super().__init__(loop)
        self.flow = []

    def pause_writing(self):
        self.flow.append('pause')

    def resume_writing(self):
        self.flow.append('resume')


def test_flow_control(loop, tmp_path):
    path = str(tmp_path / 'sink.sock')

    async def main():
        # A Unix datagram receiver nobody reads: its queue fills, sendto()
        # would block and the transport buffers (and pauses the protocol).
        sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sink.bind(path)
        sink.setblocking(False)
        with sink:
            tr, pr = await loop.create_datagram_endpoint(
                lambda: FlowProto(loop), remote_addr=path,
                family=socket.AF_UNIX)
            tr.set_write_buffer_limits(high=16 * 1024)
            sent = 0
            while not pr.flow and sent < 100000:
                tr.sendto(b'%08d' % sent + b'.' * 1016)
                sent += 1
            assert pr.flow == ['pause']
            assert tr.get_write_buffer_size() > 16 * 1024
            received = []
            async with asyncio.timeout(10):
                while len(received) < sent:
                    received.append(await loop.sock_recv(sink, 2048))
            assert received == [b'%08d' % i + b'.' * 1016
                                for i in range(sent)]
            assert pr.flow == ['pause', 'resume']
            # Below the low-water mark (not 0: asyncio 3.13.0 never takes
            # the 8 header bytes of datagrams sent from its buffer off).
            assert tr.get_write_buffer_size() < 4 * 1024
            tr.close()
            assert await pr.lost is None
    run(loop, main())


def test_existing_socket(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(('127.0.0.1', 0))
        tr, pr = await loop.create_datagram_endpoint(lambda: Proto(loop),
                                                     sock=sock)
        assert sock.gettimeout() == 0
        assert tr.get_extra_info('sockname') == sock.getsockname()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b'in', sock.getsockname())
            await until(lambda: pr.received)
        assert pr.received[0][0] == b'in'
        tr.close()
        await pr.lost
        assert sock.fileno() == -1  # the transport owns the socket
    run(loop, main())


def test_existing_connected_socket(loop):
    # sock= already connected: sendto() goes to the peer, with or without
    # an address (the socket's peer wins, as asyncio sends with send()).
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(('127.0.0.1', 0))
            peer.setblocking(False)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(peer.getsockname())
            tr, pr = await loop.create_datagram_endpoint(
                lambda: Proto(loop), sock=sock)
            assert tr.get_extra_info('peername') == peer.getsockname()
            tr.sendto(b'one')
            tr.sendto(b'two', None)
            tr.sendto(b'three', peer.getsockname())
            got = []
            while len(got) < 3:
                got.append(await loop.sock_recv(peer, 100))
            assert got == [b'one', b'two', b'three']
            peer.sendto(b'back', sock.getsockname())
            await until(lambda: pr.received)
            assert pr.received == [(b'back', peer.getsockname())]
            tr.close()
            await pr.lost
            assert pr.errors == []
    run(loop, main())


@pytest.mark.evpy_only
def test_socketpair_endpoint(loop, errors):
    # Beyond asyncio: on a socketpair(AF_UNIX, SOCK_DGRAM) socket the peer
    # has no name (getpeername() is ''), and asyncio's loop (3.11-3.13)
    # then calls sock.sendto(data, None): a fatal TypeError, nothing sent.
    # evpy sends to the connected peer.
    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with b:
            b.setblocking(False)
            tr, pr = await loop.create_datagram_endpoint(
                lambda: Proto(loop), sock=a)
            assert tr.get_extra_info('peername') == ''
            tr.sendto(b'one')
            tr.sendto(b'two', None)
            got = []
            while len(got) < 2:
                got.append(await loop.sock_recv(b, 100))
            assert got == [b'one', b'two']
            b.send(b'back')
            await until(lambda: pr.received)
            assert pr.received[0][0] == b'back'
            tr.close()
            assert await pr.lost is None
            assert pr.errors == []
    run(loop, main())
    assert errors == []


def test_reuse_port(loop):
    if not hasattr(socket, 'SO_REUSEPORT'):
        pytest.skip('no SO_REUSEPORT')

    async def main():
        tr1, pr1 = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0), reuse_port=True)
        addr = tr1.get_extra_info('sockname')
        tr2, pr2 = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=addr, reuse_port=True)
        assert tr2.get_extra_info('sockname') == addr
        assert tr2.get_extra_info('socket').getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT)
        tr1.close()
        tr2.close()
        await pr1.lost
        await pr2.lost
    run(loop, main())


def test_bad_arguments(loop):
    async def main():
        cde = loop.create_datagram_endpoint
        P = asyncio.DatagramProtocol
        with pytest.raises(ValueError, match='unexpected address family'):
            await cde(P)
        with pytest.raises(TypeError):
            await cde(P, local_addr=('127.0.0.1', 0), reuse_address=True)
        with pytest.raises(TypeError, match='2-tuple is expected'):
            await cde(P, local_addr='127.0.0.1')
        with pytest.raises(TypeError, match='2-tuple is expected'):
            await cde(P, remote_addr=('127.0.0.1', 1, 2))
        with pytest.raises(ValueError,
                           match='can not get address information'):
            await cde(P, local_addr=('127.0.0.1', 0),
                      remote_addr=('::1', 1), family=0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match='socket modifier'):
                await cde(P, sock=sock, local_addr=('127.0.0.1', 0))
            with pytest.raises(ValueError, match='reuse_port=True'):
                await cde(P, sock=sock, reuse_port=True)
        with socket.socket() as stream:
            with pytest.raises(ValueError, match='expected'):
                await cde(P, sock=stream)
        # A failing bind is an OSError and leaves nothing open.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(('127.0.0.1', 0))
            with pytest.raises(OSError):
                await cde(P, local_addr=busy.getsockname())
    run(loop, main())


def test_close_and_abort(loop):
    async def main():
        rtr, rpr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=('127.0.0.1', 0))
        raddr = rtr.get_extra_info('sockname')

        tr, pr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=raddr)
        tr.sendto(b'before close')
        tr.close()
        assert tr.is_closing()
        tr.close()  # idempotent
        assert await pr.lost is None
        assert pr.events == ['made', 'lost']
        assert tr.get_extra_info('socket').fileno() == -1
        tr.sendto(b'after close')  # dropped, not raised

        tr, pr = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=raddr)
        tr.abort()
        assert tr.is_closing()
        assert await pr.lost is None
        await until(lambda: rpr.received)
        await asyncio.sleep(0.02)
        assert [d for d, _ in rpr.received] == [b'before close']
        rtr.abort()
        assert await rpr.lost is None
    run(loop, main())


# ----------------------------------------------------- sock_* coroutines

def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        s.bind(('127.0.0.1', 0))
    return a, b


def test_sock_sendto_recvfrom(loop):
    async def main():
        a, b = udp_pair()
        with a, b:
            # Nothing to read yet: sock_recvfrom waits for the datagram.
            task = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.01)
            assert not task.done()
            n = await loop.sock_sendto(a, b'hello', b.getsockname())
            assert n == 5
            assert await task == (b'hello', a.getsockname())
            # Already there: returned without waiting; bufsize truncates.
            await loop.sock_sendto(a, b'0123456789', b.getsockname())
            data, addr = await loop.sock_recvfrom(b, 4)
            assert data == b'0123' and addr == a.getsockname()
    run(loop, main())


def test_sock_recvfrom_into(loop):
    async def main():
        a, b = udp_pair()
        with a, b:
            buf = bytearray(10)
            task = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
            await asyncio.sleep(0.01)
            await loop.sock_sendto(a, b'abc', b.getsockname())
            assert await task == (3, a.getsockname())
            assert buf[:3] == b'abc'
            # nbytes limits the bytes written into the buffer.
            buf = bytearray(10)
            task = asyncio.ensure_future(
                loop.sock_recvfrom_into(b, memoryview(buf), 2))
            await loop.sock_sendto(a, b'xyz', b.getsockname())
            assert await task == (2, a.getsockname())
            assert buf == b'xy' + bytes(8)
    run(loop, main())


def test_sock_recvfrom_cancelled_unregisters(loop):
    async def main():
        a, b = udp_pair()
        with a, b:
            task = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The cancelled call consumed nothing: the next one gets it.
            await loop.sock_sendto(a, b'kept', b.getsockname())
            assert await loop.sock_recvfrom(b, 100) == (
                b'kept', a.getsockname())
            # And the fd can be watched again by someone else.
            got = loop.create_future()
            loop.add_reader(b.fileno(), lambda: got.done() or
                            got.set_result(b.recvfrom(100)))
            try:
                await loop.sock_sendto(a, b'more', b.getsockname())
                assert (await got)[0] == b'more'
            finally:
                loop.remove_reader(b.fileno())
    run(loop, main())


def test_sock_sendto_waits_when_full(loop, tmp_path):
    path = str(tmp_path / 'r.sock')

    async def main():
        r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        w = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with r, w:
            r.bind(path)
            r.setblocking(False)
            w.setblocking(False)
            w.connect(path)  # writability then follows r's queue
            sent = 0
            while True:  # fill r's receive queue
                try:
                    w.send(b'x' * 1024)
                except BlockingIOError:
                    break
                sent += 1
            task = asyncio.ensure_future(loop.sock_sendto(w, b'last', path))
            await asyncio.sleep(0.02)
            assert not task.done()
            for _ in range(sent):
                data, _ = await loop.sock_recvfrom(r, 2048)
                assert data == b'x' * 1024
            assert await task == 4
            data, _ = await loop.sock_recvfrom(r, 2048)
            assert data == b'last'
    run(loop, main())


def test_sock_methods_reject_blocking_socket_in_debug(loop):
    async def main():
        loop.set_debug(True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(ValueError, match='non-blocking'):
                await loop.sock_recvfrom(s, 10)
            with pytest.raises(ValueError, match='non-blocking'):
                await loop.sock_recvfrom_into(s, bytearray(10))
            with pytest.raises(ValueError, match='non-blocking'):
                await loop.sock_sendto(s, b'x', ('127.0.0.1', 9))
        loop.set_debug(False)
    run(loop, main())
