"""loop.sock_sendfile (os.sendfile zero-copy path and the read/send
fallback) and loop.sendfile over transports (with flow control), argument
checking and file positions."""
import asyncio
import hashlib
import io
import os
import socket
import sys

import pytest
from nethelpers import runner

TIMEOUT = 30.0
SIZE = 10 * 1024 * 1024


run = runner(TIMEOUT)


@pytest.fixture(scope='module')
def payload():
    return os.urandom(SIZE)


@pytest.fixture
def datafile(tmp_path, payload):
    path = tmp_path / 'data.bin'
    path.write_bytes(payload)
    with open(path, 'rb') as f:
        yield f


def sha(data):
    return hashlib.sha256(data).hexdigest()


async def drain_socket(loop, sock, expected):
    """Read `expected` bytes from sock; return them."""
    got = bytearray()
    while len(got) < expected:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


# ------------------------------------------------------------- sock_sendfile

def test_sock_sendfile_native(loop, sockpair, datafile, payload):
    a, b = sockpair

    async def main():
        reader = asyncio.ensure_future(drain_socket(loop, b, SIZE))
        sent = await loop.sock_sendfile(a, datafile, fallback=False)
        assert sent == SIZE
        assert datafile.tell() == SIZE
        got = await reader
        assert sha(got) == sha(payload)
    run(loop, main())


def test_sock_sendfile_tcp(loop, datafile, payload):
    async def main():
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen(1)
        lsock.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        try:
            await loop.sock_connect(client, lsock.getsockname())
            conn, _ = await loop.sock_accept(lsock)
            reader = asyncio.ensure_future(drain_socket(loop, conn, SIZE))
            assert await loop.sock_sendfile(client, datafile) == SIZE
            assert sha(await reader) == sha(payload)
            conn.close()
        finally:
            client.close()
            lsock.close()
    run(loop, main())


def test_sock_sendfile_offset_count(loop, sockpair, datafile, payload):
    a, b = sockpair

    async def main():
        reader = asyncio.ensure_future(drain_socket(loop, b, 3000))
        sent = await loop.sock_sendfile(a, datafile, 1000, 3000)
        assert sent == 3000
        assert datafile.tell() == 4000
        assert await reader == payload[1000:4000]
        # Without count: from offset to the end.
        reader = asyncio.ensure_future(drain_socket(loop, b, SIZE - 100))
        assert await loop.sock_sendfile(a, datafile, 100) == SIZE - 100
        assert sha(await reader) == sha(payload[100:])
        assert datafile.tell() == SIZE
    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 14),
                    reason="3.14 defines the file position for offset=0")
@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("offset", [0, 3, 6])
def test_sock_sendfile_offset_ignores_position(loop, sockpair, tmp_path,
                                               offset, fallback):
    # The data sent starts at `offset` whatever the file position, and the
    # position ends at offset + sent, even when nothing was sent.
    a, b = sockpair
    path = tmp_path / 'six'
    path.write_bytes(b'abcdef')

    async def main():
        # A BytesIO has no fd: sock_sendfile() falls back to reading it.
        with (io.BytesIO(b'abcdef') if fallback else open(path, 'rb')) as f:
            f.seek(6)
            sent = await loop.sock_sendfile(a, f, offset, fallback=fallback)
            assert (sent, f.tell()) == (6 - offset, 6)
            got = await drain_socket(loop, b, sent) if sent else b''
            assert got == b'abcdef'[offset:]
    run(loop, main())


def test_sock_sendfile_count_past_end(loop, sockpair, datafile, payload):
    a, b = sockpair

    async def main():
        reader = asyncio.ensure_future(drain_socket(loop, b, 10))
        sent = await loop.sock_sendfile(a, datafile, SIZE - 10, 1000)
        assert sent == 10
        assert await reader == payload[-10:]
        assert datafile.tell() == SIZE
    run(loop, main())


def test_sock_sendfile_empty_file(loop, sockpair, tmp_path):
    a, b = sockpair
    path = tmp_path / 'empty'
    path.write_bytes(b'')

    async def main():
        with open(path, 'rb') as f:
            assert await loop.sock_sendfile(a, f) == 0
            assert f.tell() == 0
    run(loop, main())


def test_sock_sendfile_fallback_for_non_regular_file(loop, sockpair, payload):
    a, b = sockpair
    data = payload[:1024 * 1024 + 17]

    async def main():
        f = io.BytesIO(data)
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, f, fallback=False)
        assert f.tell() == 0
        reader = asyncio.ensure_future(drain_socket(loop, b, len(data)))
        assert await loop.sock_sendfile(a, f) == len(data)
        assert await reader == data
        assert f.tell() == len(data)
        # With offset and count.
        reader = asyncio.ensure_future(drain_socket(loop, b, 100))
        assert await loop.sock_sendfile(a, f, 7, 100) == 100
        assert await reader == data[7:107]
        assert f.tell() == 107
    run(loop, main())


def test_sock_sendfile_peer_closed(loop, sockpair, datafile):
    a, b = sockpair

    async def main():
        b.close()
        with pytest.raises(OSError):
            await loop.sock_sendfile(a, datafile)
    run(loop, main())


def test_sock_sendfile_cancel(loop, sockpair, datafile):
    a, b = sockpair

    async def main():
        # Nobody reads: the socket buffer fills and sendfile waits.
        task = asyncio.ensure_future(loop.sock_sendfile(a, datafile))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert loop.remove_writer(a.fileno()) is False
    run(loop, main())


def test_sock_sendfile_bad_arguments(loop, sockpair, datafile, tmp_path):
    a, b = sockpair
    text = tmp_path / 'text.txt'
    text.write_text('hello')

    async def main():
        with open(text) as tf:
            with pytest.raises(ValueError, match='binary mode'):
                await loop.sock_sendfile(a, tf)
        with socket.socket(type=socket.SOCK_DGRAM) as dgram:
            dgram.setblocking(False)
            with pytest.raises(ValueError, match='SOCK_STREAM'):
                await loop.sock_sendfile(dgram, datafile)
        with pytest.raises(TypeError, match='count'):
            await loop.sock_sendfile(a, datafile, 0, '1')
        with pytest.raises(ValueError, match='count'):
            await loop.sock_sendfile(a, datafile, 0, 0)
        with pytest.raises(ValueError, match='count'):
            await loop.sock_sendfile(a, datafile, 0, -1)
        with pytest.raises(TypeError, match='offset'):
            await loop.sock_sendfile(a, datafile, '1')
        with pytest.raises(ValueError, match='offset'):
            await loop.sock_sendfile(a, datafile, -1)
        assert datafile.tell() == 0
    run(loop, main())


def test_sock_sendfile_blocking_socket_debug(loop, sockpair, datafile):
    a, b = sockpair
    a.setblocking(True)
    loop.set_debug(True)

    async def main():
        with pytest.raises(ValueError, match='must be non-blocking'):
            await loop.sock_sendfile(a, datafile)
    run(loop, main())


# -------------------------------------------------------- loop.sendfile

class Sink(asyncio.Protocol):
    """Server side: hashes what it gets, optionally reading slowly."""

    def __init__(self, loop, slow=False):
        self.loop = loop
        self.hash = hashlib.sha256()
        self.size = 0
        self.slow = slow
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        if self.slow == 'stall':
            transport.pause_reading()  # never reads
        elif self.slow:
            self._throttle()

    def _throttle(self):
        # Read in bursts: paused most of the time, so the sender's
        # buffer fills and pause_writing()/resume_writing() happen.
        if self.transport.is_closing():
            return
        if self.transport.is_reading():
            self.transport.pause_reading()
            self.loop.call_later(0.005, self._throttle)
        else:
            self.transport.resume_reading()
            self.loop.call_later(0.001, self._throttle)

    def data_received(self, data):
        self.hash.update(data)
        self.size += len(data)

    def eof_received(self):
        if not self.done.done():
            self.done.set_result((self.size, self.hash.hexdigest()))

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result((self.size, self.hash.hexdigest()))


class Sender(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.lost = loop.create_future()
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def _transport_pair(loop, slow=False):
    sinks = []

    def factory():
        sink = Sink(loop, slow=slow)
        sinks.append(sink)
        return sink

    server = await loop.create_server(factory, '127.0.0.1', 0)
    tr, pr = await loop.create_connection(
        lambda: Sender(loop), *server.sockets[0].getsockname())
    while not sinks:
        await asyncio.sleep(0.001)
    return server, tr, pr, sinks[0]


async def _finish(server, tr, pr):
    tr.close()
    await pr.lost
    server.close()
    await server.wait_closed()


def test_transport_sendfile(loop, datafile, payload):
    async def main():
        server, tr, pr, sink = await _transport_pair(loop)
        tr.write(b'header:')
        sent = await loop.sendfile(tr, datafile)
        assert sent == SIZE
        assert datafile.tell() == SIZE
        tr.write(b':trailer')
        tr.write_eof()
        size, digest = await sink.done
        assert size == SIZE + 15
        assert digest == sha(b'header:' + payload + b':trailer')
        await _finish(server, tr, pr)
    run(loop, main())


def test_transport_sendfile_fallback_with_flow_control(loop, payload):
    data = payload[:4 * 1024 * 1024]

    async def main():
        server, tr, pr, sink = await _transport_pair(loop, slow=True)
        tr.set_write_buffer_limits(high=32 * 1024)
        f = io.BytesIO(data)   # not a regular file: always the fallback
        sent = await loop.sendfile(tr, f, 5, len(data) - 10)
        assert sent == len(data) - 10
        assert f.tell() == len(data) - 5
        # The original protocol is back and reading again.
        assert tr.get_protocol() is pr
        assert tr.is_reading()
        tr.write_eof()
        size, digest = await sink.done
        assert (size, digest) == (len(data) - 10, sha(data[5:-5]))
        await _finish(server, tr, pr)
    run(loop, main())


def test_transport_sendfile_protocol_sees_replies_after(loop, payload):
    class EchoBack(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.size = 0

        def data_received(self, data):
            self.size += len(data)
            if self.size >= 100000:
                self.transport.write(b'got it')
                self.size = -(1 << 60)

    async def main():
        server = await loop.create_server(EchoBack, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(
            lambda: Sender(loop), *server.sockets[0].getsockname())
        f = io.BytesIO(payload[:100000])
        assert await loop.sendfile(tr, f) == 100000
        while pr.data != b'got it':
            await asyncio.sleep(0.005)
        await _finish(server, tr, pr)
    run(loop, main())


def test_transport_sendfile_on_closing_transport(loop, datafile):
    async def main():
        server, tr, pr, sink = await _transport_pair(loop)
        tr.close()
        with pytest.raises(RuntimeError, match='is closing'):
            await loop.sendfile(tr, datafile)
        await pr.lost
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_transport_sendfile_peer_gone(loop, payload):
    async def main():
        server, tr, pr, sink = await _transport_pair(loop, slow='stall')
        tr.set_write_buffer_limits(high=16 * 1024)
        f = io.BytesIO(payload)
        task = asyncio.ensure_future(loop.sendfile(tr, f))
        await asyncio.sleep(0.05)
        assert not task.done()  # stuck: the peer does not read
        sink.transport.abort()
        with pytest.raises(ConnectionError):
            await task
        await pr.lost
        server.close()
        await server.wait_closed()
    run(loop, main())
