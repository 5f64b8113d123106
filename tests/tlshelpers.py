"""TLS helpers the TLS test files share (certificates in tests/certs/,
make_certs.sh regenerates them)."""
import asyncio
import os
import ssl

from conftest import ASYNCIO_DEBUG
from nethelpers import Collect, runner

TIMEOUT = 30.0
CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'certs')


def cert(name):
    return os.path.join(CERTS, name)


run = runner(TIMEOUT)


def server_ctx(name='localhost', *, client_ca=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert(name + '.pem'), cert(name + '.key'))
    if client_ca:
        ctx.load_verify_locations(cert('ca.pem'))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ctx(*, client_cert=False):
    ctx = ssl.create_default_context(cafile=cert('ca.pem'))
    if client_cert:
        ctx.load_cert_chain(cert('client.pem'), cert('client.key'))
    return ctx


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def tls_pair(loop, proto_factory=Echo, sctx=None, cctx=None, **kw):
    """A TLS server on 127.0.0.1 and one client connected to it."""
    server = await loop.create_server(
        proto_factory, '127.0.0.1', 0, ssl=sctx or server_ctx())
    port = server.sockets[0].getsockname()[1]
    client = Collect(loop)
    kw.setdefault('server_hostname', 'localhost')
    try:
        tr, _ = await loop.create_connection(
            lambda: client, '127.0.0.1', port, ssl=cctx or client_ctx(), **kw)
    except BaseException:
        server.close()
        await server.wait_closed()
        raise
    return server, tr, client


async def close_all(server, *transports):
    for tr in transports:
        tr.close()
    server.close()
    await server.wait_closed()


def expect_debug_accept_errors(errors):
    """A server's failed handshake goes to the exception handler in debug
    mode only (asyncio's _accept_connection2); drop those calls."""
    if ASYNCIO_DEBUG:
        errors.discard('Error on transport creation for incoming '
                       'connection')
