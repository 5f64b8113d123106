"""Pipes: loop.connect_read_pipe / loop.connect_write_pipe over os.pipe(),
FIFOs, socketpairs and ptys (EOF, pause/resume_reading, write-side flow
control, write_eof, BrokenPipeError, detection of the reader closing) and
their argument checking."""
import asyncio
import os
import socket

import pytest
from nethelpers import run

TIMEOUT = 20.0


async def until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.transport = None
        self.data = bytearray()
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def data_received(self, data):
        assert isinstance(data, bytes)
        if self.events[-1] != 'data':
            self.events.append('data')
        self.data += data

    def eof_received(self):
        self.events.append('eof')

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.transport = None
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def pause_writing(self):
        self.events.append('pause')

    def resume_writing(self):
        self.events.append('resume')

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)


def pipe_files():
    """(read file, write file) of a new pipe, unbuffered."""
    r, w = os.pipe()
    return open(r, 'rb', buffering=0), open(w, 'wb', buffering=0)


def test_read_pipe_data_then_eof(loop):
    async def main():
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        assert isinstance(tr, asyncio.ReadTransport)
        assert pr.transport is tr and pr.events == ['made']
        assert tr.get_extra_info('pipe') is rfile
        assert tr.is_reading() and not tr.is_closing()
        os.write(wfile.fileno(), b'hello ')
        await until(lambda: len(pr.data) == 6)
        wfile.write(b'world')
        wfile.close()
        assert await pr.lost is None
        assert pr.data == b'hello world'
        assert pr.events == ['made', 'data', 'eof', 'lost']
        assert tr.is_closing()
        assert rfile.closed  # the transport closed the pipe
    run(loop, main())


def test_read_pipe_pause_resume(loop):
    async def main():
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        tr.pause_reading()
        assert not tr.is_reading()
        tr.pause_reading()  # idempotent
        wfile.write(b'x' * 1000)
        await asyncio.sleep(0.05)
        assert pr.data == b''
        tr.resume_reading()
        assert tr.is_reading()
        await until(lambda: len(pr.data) == 1000)
        wfile.close()
        assert await pr.lost is None
    run(loop, main())


def test_read_pipe_close_and_protocol_errors(loop):
    async def main():
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        tr.close()
        tr.close()  # idempotent
        assert tr.is_closing()
        assert await pr.lost is None
        assert pr.events == ['made', 'lost']
        assert rfile.closed
        wfile.close()
    run(loop, main())


WRITE_SIDE = ('write', 'writelines', 'write_eof', 'can_write_eof', 'abort',
              'get_write_buffer_size', 'get_write_buffer_limits',
              'set_write_buffer_limits')


def test_read_pipe_has_no_write_side(loop):
    async def main():
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        assert isinstance(tr, asyncio.ReadTransport)
        assert [n for n in WRITE_SIDE if hasattr(tr, n)] == []
        with pytest.raises(AttributeError):
            tr.write(b'x')
        for name in ('is_reading', 'pause_reading', 'resume_reading',
                     'close', 'is_closing', 'get_extra_info'):
            assert callable(getattr(tr, name))
        tr.close()
        assert await pr.lost is None
        wfile.close()
    run(loop, main())


def test_write_pipe_flow_control(loop):
    payload = os.urandom(1 << 20)

    async def main():
        rfile, wfile = pipe_files()
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                                 wfile)
        assert isinstance(wtr, asyncio.WriteTransport)
        assert wtr.get_extra_info('pipe') is wfile
        assert wtr.can_write_eof()
        wtr.set_write_buffer_limits(high=64 * 1024)
        assert wtr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        wtr.write(payload[:1000])
        wtr.write(memoryview(payload)[1000:])  # nobody reads: it queues
        assert wpr.events == ['made', 'pause']
        assert wtr.get_write_buffer_size() > 64 * 1024
        rtr, rpr = await loop.connect_read_pipe(lambda: ReadProto(loop),
                                                rfile)
        await until(lambda: 'resume' in wpr.events)
        wtr.write_eof()
        assert wtr.is_closing()
        assert await wpr.lost is None
        assert await rpr.lost is None
        assert wpr.events == ['made', 'pause', 'resume', 'lost']
        assert rpr.data == payload
    run(loop, main())


def test_write_pipe_broken_pipe(loop):
    async def main():
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                               wfile)
        rfile.close()
        tr.write(b'into the void')  # EPIPE at once: SIGPIPE is ignored
        exc = await pr.lost
        assert isinstance(exc, BrokenPipeError)
        assert tr.is_closing()
        assert wfile.closed
    run(loop, main())


def test_write_pipe_notices_reader_closing(loop):
    async def main():
        # Idle writer: the reader going away closes the transport.
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                               wfile)
        rfile.close()
        assert await pr.lost is None
        assert wfile.closed

        # Writer with queued data: connection_lost(BrokenPipeError).
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                               wfile)
        tr.write(b'y' * (1 << 20))
        assert tr.get_write_buffer_size() > 0
        rfile.close()
        assert isinstance(await pr.lost, BrokenPipeError)
        assert wfile.closed
    run(loop, main())


def test_write_pipe_abort_drops_buffer(loop):
    async def main():
        rfile, wfile = pipe_files()
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                               wfile)
        tr.write(b'z' * (1 << 20))
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert await pr.lost is None
        assert tr.get_write_buffer_size() == 0
        assert wfile.closed
        rfile.close()
    run(loop, main())


def test_fifo(loop, tmp_path):
    path = tmp_path / 'fifo'
    os.mkfifo(path)

    async def main():
        rfile = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), 'rb',
                     buffering=0)
        wfile = open(os.open(path, os.O_WRONLY | os.O_NONBLOCK), 'wb',
                     buffering=0)
        rtr, rpr = await loop.connect_read_pipe(lambda: ReadProto(loop),
                                                rfile)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                                 wfile)
        for i in range(10):
            wtr.write(b'line %d\n' % i)
        wtr.close()
        assert await wpr.lost is None
        assert await rpr.lost is None
        assert rpr.data == b''.join(b'line %d\n' % i for i in range(10))
        assert rpr.events == ['made', 'data', 'eof', 'lost']
    run(loop, main())


def test_socketpair_as_pipes(loop):
    async def main():
        a, b = socket.socketpair()
        rtr, rpr = await loop.connect_read_pipe(lambda: ReadProto(loop), a)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteProto(loop), b)
        assert rtr.get_extra_info('pipe') is a
        wtr.write(b'through a socketpair')
        await until(lambda: len(rpr.data) == 20)
        wtr.write_eof()  # closes the writing socket: EOF on the other end
        assert await wpr.lost is None
        assert await rpr.lost is None
        assert rpr.data == b'through a socketpair'
        assert a.fileno() == -1 and b.fileno() == -1
    run(loop, main())


def test_pty_is_accepted(loop):
    async def main():
        master, slave = os.openpty()
        os.set_blocking(slave, False)
        mfile = open(master, 'wb', buffering=0)
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                               mfile)
        tr.write(b'abc\n')
        await asyncio.sleep(0)
        data = b''
        async with asyncio.timeout(5):
            while b'abc' not in data:
                try:
                    data += os.read(slave, 100)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        tr.close()
        assert await pr.lost is None
        os.close(slave)
    run(loop, main())


@pytest.mark.parametrize('direction', ['read', 'write'])
def test_regular_file_rejected(loop, tmp_path, direction):
    path = tmp_path / 'regular'
    path.write_bytes(b'data')

    async def main():
        with open(path, 'rb' if direction == 'read' else 'ab') as f:
            connect = (loop.connect_read_pipe if direction == 'read'
                       else loop.connect_write_pipe)
            with pytest.raises(ValueError, match='Pipe transport is'):
                await connect(asyncio.Protocol, f)
            assert not f.closed  # not taken over
    run(loop, main())
