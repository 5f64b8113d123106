"""asyncio's streams API (open_connection, start_server,
open_unix_connection, start_unix_server) running unmodified on the loop."""
import asyncio
import hashlib
import os
import socket

import pytest
from nethelpers import run

TIMEOUT = 20.0


async def echo_lines(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line.upper())
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


async def digest_handler(reader, writer):
    data = await reader.read()  # until EOF
    writer.write(hashlib.sha256(data).hexdigest().encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_tcp_streams_lines(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, '127.0.0.1', 0)
        addr = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(*addr)
        assert writer.get_extra_info('peername') == addr
        for word in (b'alpha', b'beta', b'gamma'):
            writer.write(word + b'\n')
            await writer.drain()
            assert await reader.readline() == word.upper() + b'\n'
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.read() == b''
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        assert writer.is_closing()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_streams_large_upload_checksum(loop):
    payload = os.urandom(10 * 1024 * 1024)

    async def main():
        server = await asyncio.start_server(digest_handler, '127.0.0.1', 0)
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname())
        view = memoryview(payload)
        for i in range(0, len(payload), 256 * 1024):
            writer.write(view[i:i + 256 * 1024])
            await writer.drain()
        writer.write_eof()
        assert await reader.read() == hashlib.sha256(
            payload).hexdigest().encode()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_streams_large_download_readexactly(loop):
    payload = os.urandom(10 * 1024 * 1024)

    async def handler(reader, writer):
        writer.write(len(payload).to_bytes(8, 'big'))
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, '127.0.0.1', 0)
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname())
        size = int.from_bytes(await reader.readexactly(8), 'big')
        data = await reader.readexactly(size)
        assert hashlib.sha256(data).digest() == hashlib.sha256(
            payload).digest()
        with pytest.raises(asyncio.IncompleteReadError):
            await reader.readexactly(1)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_streams_many_clients(loop):
    async def client(addr, i):
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b'client %d\n' % i)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    async def main():
        server = await asyncio.start_server(echo_lines, '127.0.0.1', 0,
                                            backlog=200)
        addr = server.sockets[0].getsockname()
        lines = await asyncio.gather(*[client(addr, i) for i in range(200)])
        assert lines == [b'CLIENT %d\n' % i for i in range(200)]
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_unix_streams(loop, tmp_path):
    path = str(tmp_path / 'st.sock')

    async def main():
        server = await asyncio.start_unix_server(echo_lines, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'over unix\n')
        assert await reader.readline() == b'OVER UNIX\n'
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_streams_with_sock(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        server = await asyncio.start_server(echo_lines, sock=lsock)
        csock = socket.create_connection(lsock.getsockname())
        reader, writer = await asyncio.open_connection(sock=csock)
        writer.write(b'sock\n')
        assert await reader.readline() == b'SOCK\n'
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_drain_waits_for_slow_reader(loop):
    async def main():
        release = asyncio.Event()
        received = []

        async def slow(reader, writer):
            await release.wait()
            received.append(len(await reader.read()))
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(slow, '127.0.0.1', 0)
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname())
        writer.transport.set_write_buffer_limits(high=64 * 1024)
        chunk = b'd' * (1024 * 1024)
        total = 0
        drain = None
        for _ in range(64):
            writer.write(chunk)
            total += len(chunk)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.sleep(0.01)
            if not drain.done():
                break
        assert not drain.done(), 'drain() never blocked'
        assert writer.transport.get_write_buffer_size() > 64 * 1024
        release.set()
        await drain
        writer.write_eof()
        await reader.read()
        assert received == [total]
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_open_connection_refused(loop):
    async def main():
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection('127.0.0.1', port)
    run(loop, main())


def test_reader_sees_reset(loop):
    async def handler(reader, writer):
        sock = writer.get_extra_info('socket')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        b'\x01\x00\x00\x00\x00\x00\x00\x00')
        writer.transport.abort()

    async def main():
        server = await asyncio.start_server(handler, '127.0.0.1', 0)
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname())
        with pytest.raises(ConnectionResetError):
            await reader.read()
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_serve_forever_streams(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, '127.0.0.1', 0)
        addr = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b'x\n')
        assert await reader.readline() == b'X\n'
        writer.close()
        await writer.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
    run(loop, main())


def test_streams_with_asyncio_run(kind):
    """The whole stack through asyncio.Runner with the loop as factory."""
    from conftest import make_loop

    async def main():
        server = await asyncio.start_server(echo_lines, '127.0.0.1', 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                *server.sockets[0].getsockname())
            writer.write(b'runner\n')
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
        return line

    with asyncio.Runner(loop_factory=lambda: make_loop(kind)) as runner:
        assert runner.run(main()) == b'RUNNER\n'
