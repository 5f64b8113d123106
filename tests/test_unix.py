"""Unix stream sockets: create_unix_server / create_unix_connection (paths,
sock=, abstract names, stale socket files, cleanup on close) and their
argument checking; connect_accepted_socket."""
import asyncio
import hashlib
import os
import pathlib
import socket
import sys

import pytest
from nethelpers import Client, Echo, run

TIMEOUT = 20.0
PY313 = sys.version_info >= (3, 13)


@pytest.fixture
def sockpath(tmp_path):
    # Short: AF_UNIX paths are limited to ~107 bytes.
    path = tmp_path / 's.sock'
    yield str(path)


async def roundtrip(loop, path, msg=b'ping', **kw):
    tr, pr = await loop.create_unix_connection(lambda: Client(loop), path,
                                               **kw)
    tr.write(msg)
    tr.write_eof()
    await pr.lost
    tr.close()
    return bytes(pr.data)


def test_unix_echo(loop, sockpath):
    async def main():
        server = await loop.create_unix_server(Echo, sockpath)
        assert server.is_serving()
        assert server.sockets[0].family == socket.AF_UNIX
        assert server.sockets[0].getsockname() == sockpath
        tr, pr = await loop.create_unix_connection(lambda: Client(loop),
                                                   sockpath)
        assert tr.get_extra_info('peername') == sockpath
        assert tr.get_extra_info('socket').family == socket.AF_UNIX
        tr.write(b'over unix')
        while len(pr.data) < 9:
            await asyncio.sleep(0.01)
        assert pr.data == b'over unix'
        tr.close()
        assert await pr.lost is None
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_pathlike(loop, sockpath):
    async def main():
        path = pathlib.Path(sockpath)
        server = await loop.create_unix_server(Echo, path)
        assert await roundtrip(loop, path) == b'ping'
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_large_transfer(loop, sockpath):
    payload = os.urandom(10 * 1024 * 1024)

    async def main():
        server = await loop.create_unix_server(Echo, sockpath)
        got = await roundtrip(loop, sockpath, msg=payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(
            payload).digest()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_many_unix_clients(loop, sockpath):
    async def main():
        server = await loop.create_unix_server(Echo, sockpath, backlog=200)
        results = await asyncio.gather(*[
            roundtrip(loop, sockpath, msg=b'%d' % i) for i in range(100)])
        assert results == [b'%d' % i for i in range(100)]
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_abstract_socket(loop):
    name = '\0evpy-test-%d' % os.getpid()

    async def main():
        server = await loop.create_unix_server(Echo, name)
        assert await roundtrip(loop, name) == b'ping'
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_server_and_connection_with_sock(loop, sockpath):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sockpath)
        server = await loop.create_unix_server(Echo, sock=lsock)
        csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        csock.connect(sockpath)
        tr, pr = await loop.create_unix_connection(lambda: Client(loop),
                                                   sock=csock)
        assert csock.gettimeout() == 0
        tr.write(b'sock')
        tr.write_eof()
        await pr.lost
        assert pr.data == b'sock'
        tr.close()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_stale_socket_file_is_replaced(loop, sockpath):
    async def main():
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(sockpath)
        stale.close()  # leaves the file behind
        assert os.path.exists(sockpath)
        server = await loop.create_unix_server(Echo, sockpath)
        assert await roundtrip(loop, sockpath) == b'ping'
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_regular_file_in_the_way(loop, sockpath):
    async def main():
        with open(sockpath, 'w') as f:
            f.write('not a socket')
        with pytest.raises(OSError, match='already in use'):
            await loop.create_unix_server(Echo, sockpath)
        with open(sockpath) as f:
            assert f.read() == 'not a socket'  # left alone
    run(loop, main())


def test_socket_file_after_close(loop, sockpath):
    async def main():
        server = await loop.create_unix_server(Echo, sockpath)
        server.close()
        await server.wait_closed()
        # 3.13 removes the socket file by default; 3.11/3.12 leave it.
        assert os.path.exists(sockpath) == (not PY313)
    run(loop, main())


@pytest.mark.skipif(not PY313, reason='cleanup_socket is new in 3.13')
def test_cleanup_socket_false_keeps_file(loop, sockpath):
    async def main():
        server = await loop.create_unix_server(Echo, sockpath,
                                               cleanup_socket=False)
        server.close()
        await server.wait_closed()
        assert os.path.exists(sockpath)
    run(loop, main())


@pytest.mark.skipif(not PY313, reason='cleanup_socket is new in 3.13')
def test_cleanup_skips_replaced_file(loop, sockpath):
    async def main():
        server = await loop.create_unix_server(Echo, sockpath)
        os.unlink(sockpath)
        with open(sockpath, 'w') as f:
            f.write('someone else')
        server.close()
        await server.wait_closed()
        assert os.path.exists(sockpath)  # not our socket: kept
    run(loop, main())


@pytest.mark.skipif(not PY313, reason='cleanup_socket is new in 3.13')
def test_cleanup_with_sock(loop, sockpath):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sockpath)
        server = await loop.create_unix_server(Echo, sock=lsock)
        server.close()
        await server.wait_closed()
        assert not os.path.exists(sockpath)
    run(loop, main())


@pytest.mark.skipif(PY313, reason='cleanup_socket is accepted from 3.13')
def test_cleanup_socket_rejected_before_313(loop, sockpath):
    async def main():
        with pytest.raises(TypeError):
            await loop.create_unix_server(Echo, sockpath,
                                          cleanup_socket=False)
    run(loop, main())


def test_connect_errors(loop, sockpath):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(asyncio.Protocol, sockpath)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(sockpath)  # bound, never listening
        try:
            with pytest.raises(ConnectionRefusedError):
                await loop.create_unix_connection(asyncio.Protocol, sockpath)
        finally:
            dead.close()
    run(loop, main())


def test_unix_bad_arguments(loop, sockpath):
    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as usock, \
                socket.socket() as tcp, \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
            with pytest.raises(ValueError, match='at the same time'):
                await loop.create_unix_connection(asyncio.Protocol, sockpath,
                                                  sock=usock)
            with pytest.raises(ValueError, match='no path and sock'):
                await loop.create_unix_connection(asyncio.Protocol)
            for bad in (tcp, dgram):
                with pytest.raises(ValueError, match='UNIX Domain Stream'):
                    await loop.create_unix_connection(asyncio.Protocol,
                                                      sock=bad)
                with pytest.raises(ValueError, match='UNIX Domain Stream'):
                    await loop.create_unix_server(Echo, sock=bad)
            with pytest.raises(ValueError, match='server_hostname'):
                await loop.create_unix_connection(
                    asyncio.Protocol, sockpath, server_hostname='x')
            with pytest.raises(ValueError, match='server_hostname'):
                await loop.create_unix_connection(asyncio.Protocol, sockpath,
                                                  ssl=True)
            with pytest.raises(ValueError, match='ssl_handshake_timeout'):
                await loop.create_unix_connection(
                    asyncio.Protocol, sockpath, ssl_handshake_timeout=1)
            with pytest.raises(ValueError, match='ssl_shutdown_timeout'):
                await loop.create_unix_connection(
                    asyncio.Protocol, sockpath, ssl_shutdown_timeout=1)
            with pytest.raises(ValueError, match='at the same time'):
                await loop.create_unix_server(Echo, sockpath, sock=usock)
            with pytest.raises(ValueError, match='path was not specified'):
                await loop.create_unix_server(Echo)
            with pytest.raises(TypeError, match='ssl argument'):
                await loop.create_unix_server(Echo, sockpath, ssl=True)
            with pytest.raises(ValueError, match='ssl_handshake_timeout'):
                await loop.create_unix_server(Echo, sockpath,
                                              ssl_handshake_timeout=1)
            with pytest.raises(ValueError, match='ssl_shutdown_timeout'):
                await loop.create_unix_server(Echo, sockpath,
                                              ssl_shutdown_timeout=1)
        assert not os.path.exists(sockpath)
    run(loop, main())


def test_unix_start_serving_false(loop, sockpath):
    async def main():
        server = await loop.create_unix_server(Echo, sockpath,
                                               start_serving=False)
        assert not server.is_serving()
        await server.start_serving()
        assert await roundtrip(loop, sockpath) == b'ping'
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_connect_accepted_socket(loop):
    async def main():
        a, b = socket.socketpair()
        tr, pr = await loop.connect_accepted_socket(lambda: Client(loop), a)
        assert a.gettimeout() == 0
        assert tr.get_extra_info('socket').fileno() == a.fileno()
        b.sendall(b'to transport')
        while len(pr.data) < 12:
            await asyncio.sleep(0.01)
        tr.write(b'to peer')
        b.setblocking(False)
        assert await loop.sock_recv(b, 100) == b'to peer'
        tr.close()
        await pr.lost
        assert await loop.sock_recv(b, 100) == b''
        b.close()
    run(loop, main())


def test_connect_accepted_tcp_socket(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen(1)
        client = socket.create_connection(lsock.getsockname())
        conn, _ = lsock.accept()
        lsock.close()
        tr, pr = await loop.connect_accepted_socket(Echo, conn)
        client.setblocking(False)
        await loop.sock_sendall(client, b'echo me')
        assert await loop.sock_recv(client, 100) == b'echo me'
        client.close()
        while not tr.is_closing():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
    run(loop, main())


def test_connect_accepted_socket_bad_arguments(loop):
    async def main():
        with socket.socket(type=socket.SOCK_DGRAM) as dgram, \
                socket.socket() as sock:
            with pytest.raises(ValueError, match='Stream Socket'):
                await loop.connect_accepted_socket(asyncio.Protocol, dgram)
            with pytest.raises(ValueError, match='ssl_handshake_timeout'):
                await loop.connect_accepted_socket(
                    asyncio.Protocol, sock, ssl_handshake_timeout=1)
            with pytest.raises(ValueError, match='ssl_shutdown_timeout'):
                await loop.connect_accepted_socket(
                    asyncio.Protocol, sock, ssl_shutdown_timeout=1)
    run(loop, main())
