"""contextvars in protocol callbacks: which context connection_made,
data_received, eof_received and connection_lost run in, for transports made
by create_server, connect_accepted_socket, create_connection, pipes,
datagram endpoints and subprocess_exec.

asyncio's rule, which these tests pin down on both loops: connection_made
runs in a copy of the context the transport was made in; reads run in one
context per transport (a copy taken when reading starts), so what
data_received sets is seen by the next data_received and eof_received but
not by connection_made's copy; connection_lost runs in a copy of the
context that closed the transport.  A server makes each connection in its
own copy of the context create_server() was called in.  Nothing a
callback sets leaks into the context run_until_complete() was called in.
"""
import asyncio
import contextvars
import os
import socket
import subprocess
import sys

import pytest
from nethelpers import run

PY = sys.executable
PIPE = subprocess.PIPE


class _Var:
    """The ContextVar the tests use: a new one per test, so a value leaked
    into the test runner's context by one test cannot poison the next."""

    def __init__(self):
        self.new()

    def new(self):
        self.cv = contextvars.ContextVar('var', default='unset')

    def get(self):
        return self.cv.get()

    def set(self, value):
        return self.cv.set(value)


var = _Var()


@pytest.fixture(autouse=True)
def fresh_var():
    var.new()


class Recorder(asyncio.Protocol):
    """Logs (event, var seen) and sets var to the event's name."""

    def __init__(self, loop, name='made'):
        self.log = []
        self.name = name
        self.got_data = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.log.append(('made', var.get()))
        var.set(self.name)

    def data_received(self, data):
        self.log.append(('data', var.get()))
        var.set('data')
        self.got_data.set()

    def eof_received(self):
        self.log.append(('eof', var.get()))
        var.set('eof')

    def connection_lost(self, exc):
        self.log.append(('lost', var.get()))
        self.lost.set_result(exc)


# asyncio: connection_made in a copy of the caller's context; both reads and
# the EOF in the reader's own context (not connection_made's); the close
# that eof_received() causes comes from the reader's context.
STREAM_LOG = [('made', 'caller'), ('data', 'caller'), ('data', 'data'),
              ('eof', 'data'), ('lost', 'eof')]
# asyncio 3.15: a stream connection (server's or client's) runs every
# protocol callback in one context of its own, a copy of the one it was
# made in: data_received sees what connection_made set, and neither
# resume_reading() nor close() brings in its caller's context.
PY315 = sys.version_info >= (3, 15)
if PY315:
    STREAM_LOG = [('made', 'caller'), ('data', 'made'), ('data', 'data'),
                  ('eof', 'data'), ('lost', 'eof')]


async def feed(peer, pr):
    """Two separate reads, then EOF, from a blocking-free peer socket."""
    loop = asyncio.get_running_loop()
    for chunk in (b'x', b'y'):
        pr.got_data.clear()
        await loop.sock_sendall(peer, chunk)
        await asyncio.wait_for(pr.got_data.wait(), 10)
    peer.shutdown(socket.SHUT_WR)
    return await pr.lost


def test_create_server(loop):
    protos = []

    def factory():
        # What the factory sets is the connection's own: connection_made
        # sees it, the next connection's factory does not.
        protos.append(Recorder(loop))
        assert var.get() == 'caller'
        var.set('factory')
        return protos[-1]

    async def main():
        var.set('caller')
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        var.set('after')
        addr = srv.sockets[0].getsockname()
        for i in range(2):
            with socket.create_connection(addr) as peer:
                peer.setblocking(False)
                while (len(protos) <= i
                       or not hasattr(protos[-1], 'transport')):
                    await asyncio.sleep(0.005)
                await feed(peer, protos[-1])
        srv.close()
        await srv.wait_closed()

    run(loop, main())
    expected = [('made', 'factory'),
                ('data', 'made' if PY315 else 'factory')] + STREAM_LOG[2:]
    assert [p.log for p in protos] == [expected, expected]
    assert var.get() == 'unset'


def test_connect_accepted_socket(loop):
    async def main():
        a, b = socket.socketpair()
        with b:
            b.setblocking(False)
            var.set('caller')
            tr, pr = await loop.connect_accepted_socket(
                lambda: Recorder(loop), a)
            var.set('after')
            await feed(b, pr)
        return pr.log

    assert run(loop, main()) == STREAM_LOG
    assert var.get() == 'unset'


def test_create_connection(loop):
    async def main():
        with socket.socket() as lsock:
            lsock.bind(('127.0.0.1', 0))
            lsock.listen()
            lsock.setblocking(False)
            var.set('caller')
            tr, pr = await loop.create_connection(
                lambda: Recorder(loop), *lsock.getsockname())
            var.set('after')
            peer, _ = await loop.sock_accept(lsock)
            with peer:
                await feed(peer, pr)
        return pr.log

    assert run(loop, main()) == STREAM_LOG
    assert var.get() == 'unset'


def test_close_from_another_context(loop):
    # connection_lost runs in a copy of the context that called close()
    # (3.15: in the connection's own context).
    async def main():
        a, b = socket.socketpair()
        with b:
            var.set('caller')
            tr, pr = await loop.connect_accepted_socket(
                lambda: Recorder(loop), a)
            b.send(b'x')
            await asyncio.wait_for(pr.got_data.wait(), 10)
            var.set('closer')
            tr.close()
            await pr.lost
        return pr.log

    if PY315:
        expected = [('made', 'caller'), ('data', 'made'), ('lost', 'data')]
    else:
        expected = [('made', 'caller'), ('data', 'caller'),
                    ('lost', 'closer')]
    assert run(loop, main()) == expected


def test_resume_reading_takes_the_callers_context(loop):
    # Reading resumed by resume_reading() runs in a copy of its caller's
    # context (asyncio registers a new reader there; 3.15: in the
    # connection's own context).
    async def main():
        a, b = socket.socketpair()
        with b:
            var.set('caller')
            tr, pr = await loop.connect_accepted_socket(
                lambda: Recorder(loop), a)
            b.send(b'x')
            await asyncio.wait_for(pr.got_data.wait(), 10)
            tr.pause_reading()
            var.set('resumer')
            tr.resume_reading()
            pr.got_data.clear()
            b.send(b'y')
            await asyncio.wait_for(pr.got_data.wait(), 10)
            tr.close()
            await pr.lost
        return pr.log

    if PY315:
        expected = [('made', 'caller'), ('data', 'made'), ('data', 'data'),
                    ('lost', 'data')]
    else:
        expected = [('made', 'caller'), ('data', 'caller'),
                    ('data', 'resumer'), ('lost', 'resumer')]
    assert run(loop, main()) == expected


def test_read_pipe(loop):
    async def main():
        r, w = os.pipe()
        var.set('caller')
        tr, pr = await loop.connect_read_pipe(lambda: Recorder(loop),
                                              open(r, 'rb', 0))
        var.set('after')
        for chunk in (b'x', b'y'):
            pr.got_data.clear()
            os.write(w, chunk)
            await asyncio.wait_for(pr.got_data.wait(), 10)
        os.close(w)
        await pr.lost
        return pr.log

    # A read pipe's EOF: eof_received and connection_lost are both
    # scheduled from the reader's context.
    assert run(loop, main()) == [('made', 'caller'), ('data', 'caller'),
                                 ('data', 'data'), ('eof', 'data'),
                                 ('lost', 'data')]
    assert var.get() == 'unset'


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.log = []
        self.got = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.log.append(('made', var.get()))
        var.set('made')

    def datagram_received(self, data, addr):
        self.log.append(('data', var.get()))
        var.set('data')
        self.got.set()

    def connection_lost(self, exc):
        self.log.append(('lost', var.get()))
        self.lost.set_result(exc)


def test_datagram_endpoint(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            var.set('caller')
            tr, pr = await loop.create_datagram_endpoint(
                lambda: DatagramRecorder(loop), local_addr=('127.0.0.1', 0))
            var.set('after')
            for chunk in (b'x', b'y'):
                pr.got.clear()
                peer.sendto(chunk, tr.get_extra_info('sockname'))
                await asyncio.wait_for(pr.got.wait(), 10)
            var.set('closer')
            tr.close()
            await pr.lost
        return pr.log

    assert run(loop, main()) == [('made', 'caller'), ('data', 'caller'),
                                 ('data', 'data'), ('lost', 'closer')]
    assert var.get() == 'unset'


class SubprocessRecorder(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.log = []
        self.got = asyncio.Event()
        self.stdout_lost = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.log.append(('made', var.get()))
        var.set('made')

    def pipe_data_received(self, fd, data):
        self.log.append(('data', fd, var.get()))
        var.set('data')
        self.got.set()

    def pipe_connection_lost(self, fd, exc):
        self.log.append(('pipe_lost', fd, var.get()))
        if fd == 1:
            self.stdout_lost.set_result(None)

    def process_exited(self):
        self.log.append(('exited', var.get()))
        var.set('exited')

    def connection_lost(self, exc):
        self.log.append(('lost', var.get()))
        self.lost.set_result(exc)


def test_subprocess_exec(loop, kind):
    child = ('import os, sys; os.write(1, b"a"); sys.stdin.buffer.readline(); '
             'os.write(1, b"b"); os.close(1); sys.stdin.buffer.read()')

    async def main():
        var.set('caller')
        tr, pr = await loop.subprocess_exec(
            lambda: SubprocessRecorder(loop), PY, '-c', child,
            stdin=PIPE, stdout=PIPE, stderr=None)
        var.set('after')
        await asyncio.wait_for(pr.got.wait(), 10)
        stdin = tr.get_pipe_transport(0)
        stdin.write(b'go\n')
        # Deterministic order: stdout closes, then stdin, then the exit.
        await pr.stdout_lost
        var.set('closer')
        stdin.close()
        await pr.lost
        tr.close()
        return pr.log

    # The subprocess transport forwards each pipe event with call_soon, so
    # every pipe_* call runs in a fresh copy of its pipe's reader context
    # (what one sets is not seen by the next).  process_exited and
    # connection_lost (which follows the exit, the last event) run in a copy
    # of the caller's context; on 3.11 asyncio's loop reaps children in a
    # thread (ThreadedChildWatcher) and runs them in that thread's empty
    # context instead.
    exited = 'caller'
    if kind == 'asyncio' and sys.version_info < (3, 12):
        exited = 'unset'
    assert run(loop, main()) == [
        ('made', 'caller'), ('data', 1, 'caller'), ('data', 1, 'caller'),
        ('pipe_lost', 1, 'caller'), ('pipe_lost', 0, 'closer'),
        ('exited', exited), ('lost', exited)]
    assert var.get() == 'unset'


@pytest.mark.parametrize('case', ['server', 'accepted'])
def test_no_leak_into_the_running_context(loop, case):
    # Whatever protocol callbacks set stays out of the context the loop is
    # run from.
    async def main():
        if case == 'server':
            done = loop.create_future()

            class P(Recorder):
                def connection_lost(self, exc):
                    done.set_result(None)

            srv = await loop.create_server(lambda: P(loop), '127.0.0.1', 0)
            with socket.create_connection(srv.sockets[0].getsockname()) as c:
                c.sendall(b'x')
                c.shutdown(socket.SHUT_WR)
                await done
            srv.close()
            await srv.wait_closed()
        else:
            a, b = socket.socketpair()
            with b:
                tr, pr = await loop.connect_accepted_socket(
                    lambda: Recorder(loop), a)
                b.sendall(b'x')
                b.shutdown(socket.SHUT_WR)
                await pr.lost

    run(loop, main())
    assert var.get() == 'unset'
