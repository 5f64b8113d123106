"""The loop's low-level socket coroutines: sock_recv, sock_recv_into,
sock_sendall, sock_connect, sock_accept — data, EOF, errors, name
resolution, refusing blocking/SSL sockets in debug mode, and removing the
reader/writer registration when an operation is cancelled."""
import asyncio
import hashlib
import os
import socket
import ssl

import pytest
from nethelpers import run

TIMEOUT = 20.0


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_recv_and_sendall(loop, sockpair):
    a, b = sockpair

    async def main():
        await loop.sock_sendall(a, b'hello')
        assert await loop.sock_recv(b, 100) == b'hello'
        # recv waits for data that is not there yet.
        task = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        assert not task.done()
        await loop.sock_sendall(a, bytearray(b'later'))
        assert await task == b'later'
        await loop.sock_sendall(a, memoryview(b'view'))
        assert await loop.sock_recv(b, 2) == b'vi'
        assert await loop.sock_recv(b, 100) == b'ew'
        a.shutdown(socket.SHUT_WR)
        assert await loop.sock_recv(b, 100) == b''
    run(loop, main())


def test_recv_into(loop, sockpair):
    a, b = sockpair

    async def main():
        buf = bytearray(10)
        task = asyncio.ensure_future(loop.sock_recv_into(b, buf))
        await asyncio.sleep(0.01)
        assert not task.done()
        await loop.sock_sendall(a, b'0123456789abc')
        assert await task == 10
        assert buf == b'0123456789'
        view = memoryview(buf)[2:5]
        assert await loop.sock_recv_into(b, view) == 3
        assert buf[2:5] == b'abc'
    run(loop, main())


def test_sendall_large_with_checksum(loop, sockpair):
    a, b = sockpair
    payload = os.urandom(10 * 1024 * 1024)

    async def reader():
        digest = hashlib.sha256()
        buf = bytearray(256 * 1024)
        total = 0
        while total < len(payload):
            n = await loop.sock_recv_into(b, buf)
            assert n > 0
            digest.update(memoryview(buf)[:n])
            total += n
        return total, digest.digest()

    async def main():
        task = asyncio.ensure_future(reader())
        await loop.sock_sendall(a, payload)
        total, digest = await task
        assert total == len(payload)
        assert digest == hashlib.sha256(payload).digest()
    run(loop, main())


def test_sendall_empty(loop, sockpair):
    a, b = sockpair
    run(loop, loop.sock_sendall(a, b''))


def test_sendall_to_closed_peer(loop, sockpair):
    a, b = sockpair

    async def main():
        b.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                await loop.sock_sendall(a, b'x' * 65536)
    run(loop, main())


def test_recv_reset(loop, listener):
    async def main():
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        b'\x01\x00\x00\x00\x00\x00\x00\x00')
        task = asyncio.ensure_future(loop.sock_recv(client, 100))
        await asyncio.sleep(0.01)
        conn.close()
        with pytest.raises(ConnectionResetError):
            await task
        client.close()
    run(loop, main())


def test_connect_and_accept(loop, listener):
    async def main():
        client = socket.socket()
        client.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        assert not accept.done()
        assert await loop.sock_connect(client, listener.getsockname()) \
            is None
        conn, addr = await accept
        assert conn.gettimeout() == 0  # accepted sockets are non-blocking
        assert addr == client.getsockname()
        await loop.sock_sendall(client, b'abc')
        assert await loop.sock_recv(conn, 10) == b'abc'
        conn.close()
        client.close()
    run(loop, main())


def test_accept_already_pending(loop, listener):
    async def main():
        client = socket.create_connection(listener.getsockname())
        conn, addr = await loop.sock_accept(listener)
        assert addr == client.getsockname()
        conn.close()
        client.close()
    run(loop, main())


def test_connect_resolves_names(loop, listener):
    async def main():
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client,
                                ('localhost', listener.getsockname()[1]))
        assert client.getpeername() == listener.getsockname()
        conn, _ = await loop.sock_accept(listener)
        conn.close()
        client.close()
    run(loop, main())


def test_connect_unix(loop, tmp_path):
    path = str(tmp_path / 'u.sock')

    async def main():
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(path)
        lsock.listen(1)
        lsock.setblocking(False)
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        await loop.sock_connect(client, path)
        conn, _ = await loop.sock_accept(lsock)
        await loop.sock_sendall(conn, b'unix')
        assert await loop.sock_recv(client, 10) == b'unix'
        for s in (conn, client, lsock):
            s.close()
    run(loop, main())


def test_connect_refused(loop):
    async def main():
        client = socket.socket()
        client.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(client, ('127.0.0.1', free_port()))
        finally:
            client.close()
    run(loop, main())


def test_connect_bad_name(loop):
    async def main():
        client = socket.socket()
        client.setblocking(False)
        try:
            with pytest.raises(socket.gaierror):
                await loop.sock_connect(client, ('no-such-host.invalid', 80))
        finally:
            client.close()
    run(loop, main())


def test_blocking_socket_rejected_in_debug(loop, sockpair):
    a, b = sockpair
    a.setblocking(True)
    loop.set_debug(True)
    listener = socket.socket()

    async def main():
        with pytest.raises(ValueError, match='must be non-blocking'):
            await loop.sock_recv(a, 1)
        with pytest.raises(ValueError, match='must be non-blocking'):
            await loop.sock_recv_into(a, bytearray(1))
        with pytest.raises(ValueError, match='must be non-blocking'):
            await loop.sock_sendall(a, b'x')
        with pytest.raises(ValueError, match='must be non-blocking'):
            await loop.sock_connect(a, ('127.0.0.1', 1))
        with pytest.raises(ValueError, match='must be non-blocking'):
            await loop.sock_accept(listener)
    try:
        run(loop, main())
    finally:
        listener.close()


def test_ssl_socket_rejected(loop):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    raw = socket.socket()
    sslsock = ctx.wrap_socket(raw, server_hostname='x',
                              do_handshake_on_connect=False)
    sslsock.setblocking(False)

    async def main():
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.sock_recv(sslsock, 1)
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.sock_recv_into(sslsock, bytearray(1))
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.sock_sendall(sslsock, b'x')
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.sock_connect(sslsock, ('127.0.0.1', 1))
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.sock_accept(sslsock)
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.create_connection(asyncio.Protocol, sock=sslsock)
        with pytest.raises(TypeError, match='SSLSocket'):
            await loop.create_server(asyncio.Protocol, sock=sslsock)
    try:
        run(loop, main())
    finally:
        sslsock.close()


# ----------------------------------------------- cancellation cleans up

async def _cancel(task):
    await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # done callbacks run


def test_cancel_recv_removes_reader(loop, sockpair):
    a, b = sockpair

    async def main():
        await _cancel(asyncio.ensure_future(loop.sock_recv(b, 10)))
        assert loop.remove_reader(b.fileno()) is False
        await _cancel(asyncio.ensure_future(
            loop.sock_recv_into(b, bytearray(10))))
        assert loop.remove_reader(b.fileno()) is False
        # The socket still works, and no stale callback eats the data.
        await loop.sock_sendall(a, b'after')
        assert await loop.sock_recv(b, 10) == b'after'
    run(loop, main())


def test_cancel_sendall_removes_writer(loop, sockpair):
    a, b = sockpair

    async def main():
        task = asyncio.ensure_future(loop.sock_sendall(a, b'z' * (64 << 20)))
        await _cancel(task)
        assert loop.remove_writer(a.fileno()) is False
    run(loop, main())


def test_cancel_accept_removes_reader(loop, listener):
    async def main():
        await _cancel(asyncio.ensure_future(loop.sock_accept(listener)))
        assert loop.remove_reader(listener.fileno()) is False
        client = socket.create_connection(listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
        conn.close()
        client.close()
    run(loop, main())


def test_cancel_pending_connect_removes_writer(loop):
    async def main():
        # listen(0) admits one connection; later ones stay in progress.
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen(0)
        first = socket.socket()
        first.setblocking(False)
        pending = socket.socket()
        pending.setblocking(False)
        try:
            await loop.sock_connect(first, lsock.getsockname())
            task = asyncio.ensure_future(
                loop.sock_connect(pending, lsock.getsockname()))
            await _cancel(task)
            assert loop.remove_writer(pending.fileno()) is False
        finally:
            for s in (first, pending, lsock):
                s.close()
    run(loop, main())


def test_concurrent_recv_on_two_sockets(loop):
    async def main():
        pairs = [socket.socketpair() for _ in range(20)]
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
        try:
            tasks = [asyncio.ensure_future(loop.sock_recv(b, 100))
                     for a, b in pairs]
            await asyncio.sleep(0.01)
            for i, (a, b) in enumerate(reversed(pairs)):
                await loop.sock_sendall(a, b'%d' % i)
            got = await asyncio.gather(*tasks)
            assert got == [b'%d' % i for i in reversed(range(20))]
        finally:
            for a, b in pairs:
                a.close()
                b.close()
    run(loop, main())
