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
