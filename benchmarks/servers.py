"""Servers under test for the networking benchmarks, one per API style.

Each ``start_*`` coroutine runs on the loop under test, listens on
127.0.0.1:0 and returns a ``Running`` with the port and a ``close()``.
Only public asyncio APIs are used, so the same code runs on every loop.

Echo styles (every one echoes bytes as they arrive, whatever the framing):

* ``sock``      ``loop.sock_accept`` + a task per connection doing
                ``loop.sock_recv`` / ``loop.sock_sendall``
* ``streams``   ``asyncio.start_server``; ``reader.read`` / ``writer.write``
                + ``await writer.drain()``
* ``protocol``  ``loop.create_server`` with an ``asyncio.Protocol`` writing
                back in ``data_received``
* ``buffered``  ``loop.create_server`` with an ``asyncio.BufferedProtocol``
                (``get_buffer`` / ``buffer_updated``), writing back a view of
                its receive buffer

HTTP: ``start_http`` is an HTTP/1.1 keep-alive server (``asyncio.Protocol``
+ ``httptools.HttpRequestParser``) answering every request with a small
fixed body.
"""

import asyncio
import socket

from benchmarks.netutil import HOST

READ_SIZE = 256 * 1024       # same as the transports' read size in asyncio
BACKLOG = 4096


class Running:
    def __init__(self, port, close):
        self.port = port
        self.close = close


def _nodelay(sock):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


# -- Protocol ----------------------------------------------------------------

class EchoProtocol(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


async def start_protocol(loop, backlog=BACKLOG):
    server = await loop.create_server(EchoProtocol, HOST, 0, backlog=backlog)
    return Running(server.sockets[0].getsockname()[1], server.close)


# -- BufferedProtocol --------------------------------------------------------

class EchoBufferedProtocol(asyncio.BufferedProtocol):
    __slots__ = ("transport", "view")

    def connection_made(self, transport):
        self.transport = transport
        self.view = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(self.view[:nbytes])
        if self.transport.get_write_buffer_size():
            # The transport kept (a view of) our buffer to send later:
            # receive into a fresh one until then.
            self.view = memoryview(bytearray(READ_SIZE))

    def connection_lost(self, exc):
        self.transport = None


async def start_buffered(loop, backlog=BACKLOG):
    server = await loop.create_server(EchoBufferedProtocol, HOST, 0,
                                      backlog=backlog)
    return Running(server.sockets[0].getsockname()[1], server.close)


# -- streams -----------------------------------------------------------------

async def _stream_echo(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def start_streams(loop, backlog=BACKLOG):
    server = await asyncio.start_server(_stream_echo, HOST, 0,
                                        backlog=backlog)
    return Running(server.sockets[0].getsockname()[1], server.close)


# -- sock_* ------------------------------------------------------------------

async def _sock_echo(loop, conn):
    try:
        while True:
            data = await loop.sock_recv(conn, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


async def start_sock(loop, backlog=BACKLOG):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((HOST, 0))
    lsock.listen(backlog)
    lsock.setblocking(False)
    tasks = set()

    async def accept_loop():
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            _nodelay(conn)
            task = loop.create_task(_sock_echo(loop, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = loop.create_task(accept_loop())

    def close():
        acceptor.cancel()
        for t in list(tasks):
            t.cancel()
        lsock.close()

    return Running(lsock.getsockname()[1], close)


ECHO_STYLES = {
    "sock": start_sock,
    "streams": start_streams,
    "protocol": start_protocol,
    "buffered": start_buffered,
}


# -- HTTP --------------------------------------------------------------------

_BODY = b"Hello, World!\n"


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, parsed by httptools."""

    __slots__ = ("transport", "parser", "url", "headers")

    def connection_made(self, transport):
        import httptools
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers = []

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except Exception:           # httptools.HttpParserError & co.
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\n"
                                 b"Content-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_message_complete(self):
        keep_alive = self.parser.should_keep_alive()
        body = _BODY if self.url == b"/" else b"not found\n"
        status = b"200 OK" if self.url == b"/" else b"404 Not Found"
        self.transport.write(b"".join((
            b"HTTP/1.1 ", status, b"\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: ", str(len(body)).encode(), b"\r\n",
            b"Connection: keep-alive\r\n\r\n" if keep_alive
            else b"Connection: close\r\n\r\n",
            body)))
        self.url = b""
        self.headers = []
        if not keep_alive:
            self.transport.close()

    def connection_lost(self, exc):
        self.transport = None


async def start_http(loop, backlog=BACKLOG):
    server = await loop.create_server(HttpProtocol, HOST, 0, backlog=backlog)
    return Running(server.sockets[0].getsockname()[1], server.close)
