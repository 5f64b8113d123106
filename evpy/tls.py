"""TLS for evpy.Loop: asyncio's SSLProtocol state machine over evpy's C
stream transport.

Nothing here reimplements TLS.  As in asyncio's selector loop, a TLS
connection is an ``SSLProtocol`` (a BufferedProtocol driving an
``ssl.MemoryBIO`` pair) installed as the protocol of an ordinary socket
transport; the application gets ``ssl_protocol._app_transport``.  The
protocol is ``tls_records.RecordProtocol``, asyncio's class with a data
path that does not allocate 256 KiB per record.  The C transport reads
straight into its buffer (get_buffer / buffer_updated) and
``set_protocol()`` switches a live connection between data_received and
the buffered path, which is what ``start_tls()`` needs.  New TLS
connections (create_connection, connect_accepted_socket,
create_unix_connection) get their transport from
``factories.ssl_transport``.

    start_tls             base_events.BaseEventLoop.start_tls
    tls_server_factory    the accept path: a protocol factory producing the
                          SSLProtocol of each accepted connection, with
                          asyncio's handling of a failed handshake
"""

import asyncio
import logging

from . import tls_records

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None


logger = logging.getLogger('asyncio')


class TLSMixin:
    """start_tls for evpy.Loop (TLS transports themselves come from
    factories.ssl_transport)."""

    async def start_tls(self, transport, protocol, sslcontext, *,
                        server_side=False, server_hostname=None,
                        ssl_handshake_timeout=None,
                        ssl_shutdown_timeout=None):
        """Upgrade transport to TLS; return the transport protocol must
        use from now on."""
        if ssl is None:
            raise RuntimeError('Python ssl module is not available')
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f'sslcontext is expected to be an instance of '
                f'ssl.SSLContext, got {sslcontext!r}')
        if not getattr(transport, '_start_tls_compatible', False):
            raise TypeError(
                f'transport {transport!r} is not supported by start_tls()')

        waiter = self.create_future()
        ssl_protocol = tls_records.protocol_class()(
            self, protocol, sslcontext, waiter,
            server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False)

        # Pause first so that no data reaches ssl_protocol before its
        # connection_made(); bytes already received stay in the socket.
        transport.pause_reading()
        if server_side:
            _move_stream_buffer(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            # The exception's traceback holds this frame, and the waiter
            # holds the exception: drop the waiter so that a failed
            # handshake leaves no reference cycle keeping the transport.
            waiter = None
            raise
        return ssl_protocol._app_transport


def _move_stream_buffer(protocol, ssl_protocol):
    """A server's StreamReader may already hold the start of the TLS
    handshake (the client sent its ClientHello before the server called
    start_tls()): hand those bytes to the TLS layer, as asyncio does."""
    if not isinstance(protocol, asyncio.StreamReaderProtocol):
        return
    reader = getattr(protocol, '_stream_reader', None)
    buffer = getattr(reader, '_buffer', None)
    if buffer:
        ssl_protocol._incoming.write(buffer)
        buffer.clear()


class _TLSServerProtocol:
    """Called by the accept loop instead of the server's protocol factory:
    returns the SSLProtocol for one accepted connection (server side)."""

    __slots__ = ('loop', 'protocol_factory', 'sslcontext',
                 'ssl_handshake_timeout', 'ssl_shutdown_timeout')

    def __init__(self, loop, protocol_factory, sslcontext,
                 ssl_handshake_timeout, ssl_shutdown_timeout):
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.sslcontext = sslcontext
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.ssl_shutdown_timeout = ssl_shutdown_timeout

    def __call__(self):
        loop = self.loop
        protocol = self.protocol_factory()
        waiter = loop.create_future()
        ssl_protocol = tls_records.protocol_class()(
            loop, protocol, self.sslcontext, waiter, True, None,
            ssl_handshake_timeout=self.ssl_handshake_timeout,
            ssl_shutdown_timeout=self.ssl_shutdown_timeout)
        app_transport = ssl_protocol._app_transport
        waiter.add_done_callback(
            lambda fut: _server_handshake_done(fut, loop, protocol,
                                               app_transport))
        return ssl_protocol


def _server_handshake_done(waiter, loop, protocol, app_transport):
    """asyncio's _accept_connection2 after `await waiter`: a failed
    handshake closes the transport and is reported in debug mode only."""
    if waiter.cancelled():
        exc = asyncio.CancelledError()
    else:
        exc = waiter.exception()
        if exc is None:
            return  # the protocol owns the connection now
    try:
        app_transport.close()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as close_exc:
        # asyncio's try block swallows this too (reported in debug mode).
        exc = close_exc
    if loop.get_debug():
        loop.call_exception_handler({
            'message': 'Error on transport creation for incoming '
                       'connection',
            'exception': exc,
            'protocol': protocol,
            'transport': app_transport,
        })


def tls_server_factory(loop, protocol_factory, sslcontext,
                       ssl_handshake_timeout, ssl_shutdown_timeout):
    """The protocol factory the accept loop uses on a TLS server."""
    return _TLSServerProtocol(loop, protocol_factory, sslcontext,
                              ssl_handshake_timeout, ssl_shutdown_timeout)
