"""create_server and the Server object: addresses, socket options, serving
control, closing semantics, the accept loop (backlog bursts, EMFILE) and
argument checking."""
import asyncio
import errno
import os
import resource
import socket
import sys

import pytest
from nethelpers import Client, Echo, has_ipv6, run

TIMEOUT = 20.0
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
PY314 = sys.version_info >= (3, 14)


async def roundtrip(loop, addr, family=socket.AF_INET, msg=b'ping'):
    """Connect, send msg, half-close, return the echoed bytes."""
    if family == socket.AF_UNIX:
        tr, pr = await loop.create_unix_connection(lambda: Client(loop),
                                                   addr)
    else:
        tr, pr = await loop.create_connection(lambda: Client(loop), *addr[:2])
    tr.write(msg)
    tr.write_eof()
    await pr.lost
    tr.close()
    return bytes(pr.data)


def test_server_object(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert server.get_loop() is loop
        assert server.is_serving()
        socks = server.sockets
        assert len(socks) == 1
        assert isinstance(socks[0], asyncio.trsock.TransportSocket)
        addr = socks[0].getsockname()
        assert addr[0] == '127.0.0.1' and addr[1] != 0
        assert 'sockets=' in repr(server)
        assert await roundtrip(loop, addr) == b'ping'
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # idempotent
        await server.wait_closed()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await roundtrip(loop, addr)
    run(loop, main())


def test_async_with_closes(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        async with server as srv:
            assert srv is server
            assert server.is_serving()
        assert not server.is_serving()
        assert server.sockets == ()
    run(loop, main())


def test_accepted_connection_extra_peername(loop):
    async def main():
        seen = loop.create_future()

        class P(asyncio.Protocol):
            def connection_made(self, transport):
                seen.set_result(transport.get_extra_info('peername'))
                transport.close()

        server = await loop.create_server(P, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Client(loop), *server.sockets[0].getsockname())
        assert await seen == tr.get_extra_info('sockname')
        await pr.lost
        tr.close()
        server.close()
        await server.wait_closed()
    run(loop, main())


def _extra_snapshot(transport):
    return {name: transport.get_extra_info(name)
            for name in ('sockname', 'peername')}


@pytest.mark.parametrize('host', ['127.0.0.1', '0.0.0.0', '::1', 'unix'])
@pytest.mark.parametrize('ask_socket', [False, True])
def test_accepted_extra_info_open_and_closed(loop, tmp_path, host,
                                             ask_socket):
    """sockname/peername of an accepted connection, while open and after
    connection_lost, whether or not the socket object was asked for; the
    socket object, when asked for, is the connection's and is closed with
    the transport."""
    if host == '::1' and not has_ipv6():
        pytest.skip('no IPv6 loopback')

    async def main():
        seen = {}
        lost = loop.create_future()

        class P(asyncio.Protocol):
            def connection_made(self, transport):
                self.tr = transport
                if ask_socket:
                    sock = transport.get_extra_info('socket')
                    seen['socket'] = sock
                    seen['family'] = sock.family
                    seen['sock_sockname'] = sock.getsockname()
                seen['open'] = _extra_snapshot(transport)

            def data_received(self, data):
                self.tr.write(data)
                self.tr.close()

            def connection_lost(self, exc):
                seen['lost'] = _extra_snapshot(self.tr)
                lost.set_result(None)

        if host == 'unix':
            path = str(tmp_path / 's.sock')
            server = await loop.create_unix_server(P, path)
            tr, pr = await loop.create_unix_connection(lambda: Client(loop),
                                                       path)
        else:
            server = await loop.create_server(P, host, 0)
            port = server.sockets[0].getsockname()[1]
            dest = '127.0.0.1' if host == '0.0.0.0' else host
            tr, pr = await loop.create_connection(lambda: Client(loop),
                                                  dest, port)
        client_view = {'sockname': tr.get_extra_info('peername'),
                       'peername': tr.get_extra_info('sockname')}
        tr.write(b'x')
        await lost
        await pr.lost
        tr.close()
        server.close()
        await server.wait_closed()
        return seen, client_view

    seen, client_view = run(loop, main())
    if host == 'unix':
        # The accepting side's name is the listener's path; the client's
        # socket is unnamed.
        assert seen['open']['sockname'] == client_view['sockname']
        assert seen['open']['peername'] == ''
    else:
        assert seen['open'] == client_view
    assert seen['lost'] == seen['open']
    if ask_socket:
        assert isinstance(seen['socket'], asyncio.trsock.TransportSocket)
        want = {'unix': socket.AF_UNIX, '::1': socket.AF_INET6}.get(
            host, socket.AF_INET)
        assert seen['family'] == want
        assert seen['sock_sockname'] == seen['open']['sockname']
        assert seen['socket'].fileno() == -1  # closed with the transport


@pytest.mark.skipif(not has_ipv6(), reason='no IPv6 loopback')
def test_several_hosts(loop):
    async def main():
        server = await loop.create_server(Echo, ['127.0.0.1', '::1'], 0)
        families = sorted(s.family for s in server.sockets)
        assert families == sorted([socket.AF_INET, socket.AF_INET6])
        for s in server.sockets:
            if s.family == socket.AF_INET6:
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            assert await roundtrip(loop, s.getsockname(), msg=b'x') == b'x'
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_duplicate_hosts_bound_once(loop):
    async def main():
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            port = probe.getsockname()[1]
        server = await loop.create_server(
            Echo, ['127.0.0.1', '127.0.0.1'], port)
        assert len(server.sockets) == 1
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_port_in_use(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(OSError) as info:
            await loop.create_server(Echo, '127.0.0.1', port)
        assert info.value.errno == errno.EADDRINUSE
        assert 'error while attempting to bind on address' in str(
            info.value)
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_server_with_sock(loop):
    async def main():
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        server = await loop.create_server(Echo, sock=sock)
        assert sock.gettimeout() == 0
        assert server.sockets[0].fileno() == sock.fileno()
        assert await roundtrip(loop, sock.getsockname()) == b'ping'
        server.close()
        await server.wait_closed()
        assert sock.fileno() == -1
    run(loop, main())


def test_socket_options(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        s = server.sockets[0]
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        server.close()
        await server.wait_closed()

        server = await loop.create_server(Echo, '127.0.0.1', 0,
                                          reuse_address=False)
        assert not server.sockets[0].getsockopt(socket.SOL_SOCKET,
                                                socket.SO_REUSEADDR)
        server.close()
        await server.wait_closed()

        server = await loop.create_server(Echo, '127.0.0.1', 0,
                                          reuse_port=True)
        port = server.sockets[0].getsockname()[1]
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET,
                                            socket.SO_REUSEPORT)
        # A second server on the same port is allowed with reuse_port.
        server2 = await loop.create_server(Echo, '127.0.0.1', port,
                                           reuse_port=True)
        assert server2.sockets[0].getsockname()[1] == port
        assert await roundtrip(loop, ('127.0.0.1', port)) == b'ping'
        for srv in (server, server2):
            srv.close()
            await srv.wait_closed()
    run(loop, main())


@pytest.mark.skipif(not PY313, reason='keep_alive is new in 3.13')
def test_keep_alive(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0,
                                          keep_alive=True)
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET,
                                            socket.SO_KEEPALIVE)
        server.close()
        await server.wait_closed()
    run(loop, main())


@pytest.mark.skipif(PY313, reason='keep_alive is accepted from 3.13')
def test_keep_alive_rejected_before_313(loop):
    async def main():
        with pytest.raises(TypeError):
            await loop.create_server(Echo, '127.0.0.1', 0, keep_alive=True)
    run(loop, main())


def test_accept_burst_larger_than_backlog(loop):
    async def main():
        # 20 connections are already queued in the kernel when the server
        # starts; it accepts at most `backlog` of them per readiness event.
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen(64)
        addr = lsock.getsockname()
        clients = []
        try:
            for _ in range(20):
                c = socket.socket()
                c.setblocking(False)
                clients.append(c)
                await loop.sock_connect(c, addr)
            accepted = []

            class P(Echo):
                def connection_made(self, transport):
                    super().connection_made(transport)
                    accepted.append(transport)

            server = await loop.create_server(P, sock=lsock, backlog=5)
            for i, c in enumerate(clients):
                await loop.sock_sendall(c, b'%d' % i)
                assert await loop.sock_recv(c, 10) == b'%d' % i
            assert len(accepted) == 20
        finally:
            for c in clients:
                c.close()
        server.close()
        await server.wait_closed()
    run(loop, main())


@pytest.mark.expect_handler_calls  # debug mode reports the failed set-up
def test_protocol_factory_error_drops_connection(loop, kind):
    """A protocol factory that raises costs that connection only: it is
    closed (the fixture checks no fd is left), the server goes on."""
    if kind == 'asyncio' and loop.get_debug():
        pytest.skip("asyncio's loop keeps the accepted socket open in debug "
                    "mode (the reported traceback holds it)")

    async def main():
        calls = []

        def factory():
            calls.append(1)
            if len(calls) == 1:
                raise ZeroDivisionError('first one fails')
            return Echo()

        server = await loop.create_server(factory, '127.0.0.1', 0)
        addr = server.sockets[0].getsockname()
        with socket.socket() as c:
            c.setblocking(False)
            await loop.sock_connect(c, addr)
            # The server closes it at once: EOF or a reset.
            try:
                assert await loop.sock_recv(c, 10) == b''
            except ConnectionResetError:
                pass
        assert await roundtrip(loop, addr) == b'ping'
        assert server.is_serving()
        server.close()
        await server.wait_closed()
    run(loop, main())


@pytest.mark.expect_handler_calls  # debug mode: attaching to a closed server
# asyncio 3.13's own Server._wakeup() fails when a transport made after the
# close is collected ("'NoneType' object is not iterable", unraisable).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_protocol_factory_closing_server_mid_burst(loop, kind):
    """A factory that closes the server: whatever was accepted is served
    or closed, nothing leaks (asyncio accepts the whole burst before any
    factory runs; evpy stops accepting when the listener is closed)."""
    if kind == 'asyncio' and loop.get_debug():
        pytest.skip("asyncio's loop keeps the accepted sockets open in debug "
                    "mode (the reported tracebacks hold them)")

    async def main():
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen(64)
        addr = lsock.getsockname()
        clients = []
        made = []
        try:
            for _ in range(5):
                c = socket.socket()
                c.setblocking(False)
                clients.append(c)
                await loop.sock_connect(c, addr)

            def factory():
                made.append(1)
                server.close()
                return Echo()

            server = await loop.create_server(factory, sock=lsock,
                                              start_serving=False)
            await server.start_serving()
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert 1 <= len(made) <= 5
            assert not server.is_serving()
            await server.wait_closed()
        finally:
            for c in clients:
                c.close()
    run(loop, main())


def test_start_serving_false(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0,
                                          start_serving=False)
        assert not server.is_serving()
        addr = server.sockets[0].getsockname()
        with pytest.raises(ConnectionRefusedError):
            await roundtrip(loop, addr)  # not listening yet
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # idempotent
        assert await roundtrip(loop, addr) == b'ping'
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_serve_forever(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0,
                                          start_serving=False)
        addr = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match='already being awaited'):
            await server.serve_forever()
        assert await roundtrip(loop, addr) == b'ping'
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(RuntimeError, match='is closed'):
            await server.serve_forever()
    run(loop, main())


def test_close_stops_serve_forever(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()
    run(loop, main())


@pytest.mark.skipif(not PY314, reason="3.14: a cancelled serve_forever() "
                    "closes the server's connections")
def test_cancelled_serve_forever_closes_idle_clients(loop):
    async def main():
        connected = loop.create_future()

        class Idle(asyncio.Protocol):
            def connection_made(self, transport):
                connected.set_result(transport)

        server = await loop.create_server(Idle, '127.0.0.1', 0)
        task = asyncio.ensure_future(server.serve_forever())
        tr, pr = await loop.create_connection(
            lambda: Client(loop), *server.sockets[0].getsockname())
        accepted = await connected
        task.cancel()
        async with asyncio.timeout(5):
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.wait_closed()
            await pr.lost
        assert accepted.is_closing()
        assert not server.is_serving()
        tr.close()
    run(loop, main())


def test_close_keeps_accepted_connections(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Client(loop), *server.sockets[0].getsockname())
        await asyncio.sleep(0.01)
        server.close()
        tr.write(b'still here')
        while len(pr.data) < 10:
            await asyncio.sleep(0.01)
        assert pr.data == b'still here'
        tr.close()
        await pr.lost
        await server.wait_closed()
    run(loop, main())


@pytest.mark.skipif(not PY312, reason='3.11 wait_closed does not wait')
def test_wait_closed_waits_for_connections(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Client(loop), *server.sockets[0].getsockname())
        await asyncio.sleep(0.01)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()   # a connection is still open
        tr.close()                 # server side sees EOF and closes
        await asyncio.wait_for(waiter, 5)
        await pr.lost
    run(loop, main())


@pytest.mark.skipif(not PY312, reason='3.12 semantics')
def test_wait_closed_waits_for_close(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()   # still open, no connections
        server.close()
        await asyncio.wait_for(waiter, 5)
    run(loop, main())


@pytest.mark.skipif(PY312, reason='3.11 semantics')
def test_wait_closed_returns_when_closed_311(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Client(loop), *server.sockets[0].getsockname())
        await asyncio.sleep(0.01)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 1)
        tr.close()
        await pr.lost
    run(loop, main())


@pytest.mark.skipif(not PY313, reason='close_clients is new in 3.13')
@pytest.mark.parametrize('how', ['close_clients', 'abort_clients'])
def test_close_and_abort_clients(loop, how):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        addr = server.sockets[0].getsockname()
        clients = [await loop.create_connection(lambda: Client(loop), *addr)
                   for _ in range(3)]
        await asyncio.sleep(0.02)
        server.close()
        getattr(server, how)()
        await asyncio.wait_for(server.wait_closed(), 5)
        for tr, pr in clients:
            await pr.lost
            tr.close()
    run(loop, main())


def test_many_clients(loop):
    async def main():
        server = await loop.create_server(Echo, '127.0.0.1', 0, backlog=200)
        addr = server.sockets[0].getsockname()
        results = await asyncio.gather(*[
            roundtrip(loop, addr, msg=b'%d' % i * 100) for i in range(200)])
        assert results == [b'%d' % i * 100 for i in range(200)]
        server.close()
        await server.wait_closed()
    run(loop, main())


async def connect_out_of_fds(loop, client, addr, contexts, then=None):
    """Connect client to the server at addr with RLIMIT_NOFILE lowered to
    the lowest free descriptor, so the server's accept() fails (EMFILE);
    wait until the exception handler has filled contexts, call then()
    while still at the limit, and restore the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.dup(0)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        await loop.sock_connect(client, addr)
        for _ in range(200):
            if contexts:
                break
            await asyncio.sleep(0.01)
        if then is not None:
            then()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.expect_handler_calls
def test_accept_emfile_pauses_and_recovers(loop, monkeypatch):
    monkeypatch.setattr(asyncio.constants, 'ACCEPT_RETRY_DELAY', 0.05)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    contexts = []

    def handler(lp, context):
        contexts.append(context)
        # Give descriptors back at once so nothing else runs out.
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    async def main():
        loop.set_exception_handler(handler)
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        addr = server.sockets[0].getsockname()
        client = socket.socket()
        client.setblocking(False)
        try:
            await connect_out_of_fds(loop, client, addr, contexts)
            assert contexts, 'accept() never failed'
            ctx = contexts[0]
            assert ctx['message'] == 'socket.accept() out of system resource'
            assert isinstance(ctx['exception'], OSError)
            assert ctx['exception'].errno == errno.EMFILE
            assert isinstance(ctx['socket'], asyncio.trsock.TransportSocket)
            # After the pause the pending connection is accepted and
            # served.
            await loop.sock_sendall(client, b'after emfile')
            client.shutdown(socket.SHUT_WR)
            got = b''
            while True:
                chunk = await loop.sock_recv(client, 100)
                if not chunk:
                    break
                got += chunk
            assert got == b'after emfile'
            assert server.is_serving()
            assert await roundtrip(loop, addr, msg=b'again') == b'again'
            assert len(contexts) == 1
        finally:
            client.close()
            server.close()
            await server.wait_closed()
    try:
        run(loop, main())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.expect_handler_calls
def test_close_while_accept_paused(loop, monkeypatch):
    monkeypatch.setattr(asyncio.constants, 'ACCEPT_RETRY_DELAY', 0.3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    contexts = []

    def handler(lp, context):
        contexts.append(context)

    async def main():
        loop.set_exception_handler(handler)
        server = await loop.create_server(Echo, '127.0.0.1', 0)
        addr = server.sockets[0].getsockname()
        client = socket.socket()
        client.setblocking(False)
        try:
            # Closed while accepting is paused: the retry must not
            # resurrect the listening socket.
            await connect_out_of_fds(loop, client, addr, contexts,
                                     then=server.close)
            await server.wait_closed()
            await asyncio.sleep(0.4)  # past the retry
        finally:
            client.close()
        return list(contexts)

    try:
        contexts = run(loop, main())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [c['message'] for c in contexts][:1] == [
        'socket.accept() out of system resource']


def test_create_server_bad_arguments(loop):
    async def main():
        with socket.socket() as sock, \
                socket.socket(type=socket.SOCK_DGRAM) as dgram:
            with pytest.raises(ValueError, match='at the same time'):
                await loop.create_server(Echo, '127.0.0.1', 0, sock=sock)
            with pytest.raises(ValueError, match='Neither host/port nor sock'):
                await loop.create_server(Echo)
            with pytest.raises(ValueError, match='Stream Socket'):
                await loop.create_server(Echo, sock=dgram)
            with pytest.raises(TypeError, match='ssl argument'):
                await loop.create_server(Echo, '127.0.0.1', 0, ssl=True)
            with pytest.raises(ValueError, match='ssl_handshake_timeout'):
                await loop.create_server(Echo, '127.0.0.1', 0,
                                         ssl_handshake_timeout=1)
            with pytest.raises(ValueError, match='ssl_shutdown_timeout'):
                await loop.create_server(Echo, '127.0.0.1', 0,
                                         ssl_shutdown_timeout=1)
            with pytest.raises(socket.gaierror):
                await loop.create_server(Echo, 'no-such-host.invalid', 0)
    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 15),
                    reason="3.15: servers run connections in their context")
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_connections_run_in_copies_of_server_context(loop, tls):
    # Each connection's protocol runs in its own copy of the context the
    # server was created in: what connection_made() sets, data_received()
    # sees, and no other connection (nor the caller) does.
    import contextvars
    from tlshelpers import client_ctx, server_ctx
    var = contextvars.ContextVar("var", default="unset")

    class Proto(asyncio.Protocol):
        def __init__(self):
            self.at_factory = var.get()

        def connection_made(self, transport):
            self.transport = transport
            self.at_made = var.get()
            var.set(f"conn-{id(self)}")

        def data_received(self, data):
            mine = var.get() == f"conn-{id(self)}"
            self.transport.write(f"{self.at_factory},{self.at_made},"
                                 f"{mine}".encode())
            self.transport.close()

    async def main():
        var.set("at-server")
        server = await loop.create_server(
            Proto, '127.0.0.1', 0, ssl=server_ctx() if tls else None)
        var.set("after-server")
        port = server.sockets[0].getsockname()[1]
        replies = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(
                '127.0.0.1', port, ssl=client_ctx() if tls else None,
                server_hostname='localhost' if tls else None)
            writer.write(b'x')
            replies.append(await reader.read())
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert var.get() == "after-server"
        return replies

    assert run(loop, main()) == [b"at-server,at-server,True"] * 2
