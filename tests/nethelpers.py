"""Helpers the networking test files share (run on both loops)."""
import asyncio
import functools
import socket


def run(loop, coro, timeout=20.0):
    """Run coro on loop, failing the test if it takes longer than timeout."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def runner(timeout):
    """run() with another default timeout."""
    return functools.partial(run, timeout=timeout)


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
    except OSError:
        return False
    return True


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class Collect(asyncio.Protocol):
    """Records what the transport delivers; futures for connection_made,
    EOF and connection_lost, and wait_for(n) for the first n bytes.
    eof_received() returns `eof_result` (True keeps the transport open
    after EOF)."""

    def __init__(self, loop, eof_result=None):
        self.loop = loop
        self.transport = None
        self.data = bytearray()
        self.events = []
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.eof_result = eof_result
        self.paused = 0
        self.resumed = 0
        self.want = None
        self.got = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, (bytes, bytearray))
        self.data += data
        if self.want is not None and len(self.data) >= self.want:
            if not self.got.done():
                self.got.set_result(bytes(self.data))

    def wait_for(self, n):
        """A future for the data once at least n bytes have arrived."""
        self.want = n
        self.got = self.loop.create_future()
        if len(self.data) >= n:
            self.got.set_result(bytes(self.data))
        return self.got

    def eof_received(self):
        self.events.append('eof')
        self.eof.set_result(bytes(self.data))
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1


def port_of(server):
    """The port of a server's first listening socket."""
    return server.sockets[0].getsockname()[1]


async def close_server(server):
    """Close server and wait until it has closed."""
    server.close()
    await server.wait_closed()


async def tcp_pair(loop, server_factory=None):
    """A TCP server on 127.0.0.1 and one Collect client connected to it.

    Returns (server, transport, protocol, accepted): the client's
    transport and protocol, and a future for the server side's protocol
    (made by `server_factory`, a Collect by default), done once its
    connection_made() has run."""
    if server_factory is None:
        def server_factory():
            return Collect(loop)
    accepted = loop.create_future()

    def factory():
        proto = server_factory()

        def made(_):
            if not accepted.done():
                accepted.set_result(proto)
        proto.made.add_done_callback(made)
        return proto

    server = await loop.create_server(factory, '127.0.0.1', 0)
    try:
        tr, pr = await loop.create_connection(
            lambda: Collect(loop), '127.0.0.1', port_of(server))
    except BaseException:
        await close_server(server)
        raise
    return server, tr, pr, accepted


async def raw_peer_pair(loop):
    """A Collect client connected to a plain socket accepted on
    127.0.0.1. Returns (conn, transport, protocol): conn is the
    non-blocking accepted socket, which the caller closes."""
    with socket.socket() as lsock:
        lsock.bind(('127.0.0.1', 0))
        lsock.listen(1)
        lsock.setblocking(False)
        connect = asyncio.ensure_future(loop.create_connection(
            lambda: Collect(loop), *lsock.getsockname()))
        try:
            conn, _ = await loop.sock_accept(lsock)
        except BaseException:
            connect.cancel()
            raise
    tr, pr = await connect
    return conn, tr, pr
