"""Transport factories: the one place where evpy's loop makes transports.

The loop's mixins (connect.py, server.py, datagram.py, pipes.py) call these
functions with the loop as first argument, so the package reads top-down:
``loop.py`` -> the mixins -> this module -> ``transports.py`` (and
``tls_records.py`` for TLS).  ``evpy.Loop`` keeps asyncio's private method
names (``loop._make_socket_transport`` and the others, with
selector_events' and unix_events' signatures) as thin methods over these,
for code that calls them.

    socket_transport      a connected stream socket (TCP or Unix)
    ssl_transport         TLS over such a socket (asyncio's SSLProtocol,
                          evpy's record data path)
    datagram_transport    a datagram socket
    read_pipe_transport   the read end of a pipe, FIFO or socket
    write_pipe_transport  the write end of one
    adopt_accepted        a bare accepted fd attached to a Server
    adopt_connected       a bare fd connected by ``_core.connect``
    SocketTransport       the stream transport class, for the C accept loop
                          (``_core.accept_connections``), which makes the
                          transports of a server itself
"""

from asyncio import constants

from . import _core, tls_records, transports

__all__ = [
    'socket_transport', 'ssl_transport', 'datagram_transport',
    'read_pipe_transport', 'write_pipe_transport', 'adopt_accepted',
    'adopt_connected', 'SocketTransport',
]

SocketTransport = transports.SocketTransport


def socket_transport(loop, sock, protocol, waiter=None, *, extra=None,
                     server=None, context=None):
    """Wrap a connected non-blocking stream socket in a transport (whose
    protocol callbacks run in `context`, when given)."""
    return transports.SocketTransport(loop, sock, protocol, waiter, extra,
                                      server, context)


def ssl_transport(loop, rawsock, protocol, sslcontext, waiter=None, *,
                  server_side=False, server_hostname=None, extra=None,
                  server=None,
                  ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                  ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
                  context=None):
    """Wrap a connected socket in a TLS transport for protocol; the
    handshake starts when the socket transport calls
    SSLProtocol.connection_made, and waiter gets its outcome. With a
    context (3.15), the protocols' callbacks run in it."""
    ssl_protocol = tls_records.protocol_class()(
        loop, protocol, sslcontext, waiter,
        server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
    socket_transport(loop, rawsock, ssl_protocol, extra=extra,
                     server=server, context=context)
    return ssl_protocol._app_transport


def datagram_transport(loop, sock, protocol, address=None, waiter=None,
                       extra=None):
    """Wrap a datagram socket in a transport; `address` is the default
    peer of sendto() (asyncio's remote_addr)."""
    return transports.DatagramTransport(loop, sock, protocol, address,
                                        waiter, extra)


def read_pipe_transport(loop, pipe, protocol, waiter=None, extra=None):
    """Wrap the read end of a pipe (or FIFO, socket, character device)."""
    return transports.ReadPipeTransport(loop, pipe, protocol, waiter, extra)


def write_pipe_transport(loop, pipe, protocol, waiter=None, extra=None):
    """Wrap the write end of a pipe (or FIFO, socket, character device)."""
    return transports.WritePipeTransport(loop, pipe, protocol, waiter,
                                         extra)


def adopt_pipe(loop, pipe, fd, protocol, *, write):
    """A pipe transport over one end _core.spawn() made (non-blocking,
    close-on-exec, known to be a pipe): no checks, no waiter."""
    cls = transports.WritePipeTransport if write else \
        transports.ReadPipeTransport
    return cls._adopt(loop, pipe, fd, protocol)


def adopt_accepted(loop, fd, kind, protocol, extra, *, server=None,
                   context=None):
    """A transport over a bare accepted fd (``_core.accept``), attached
    to server; it owns fd from the start (closes it if this raises).
    ``kind`` is (family, type, proto)."""
    return transports.SocketTransport._adopt(loop, fd, kind, protocol, extra,
                                             server=server, context=context)


def adopt_connected(loop, fd, kind, protocol, extra, waiter, context=None):
    """A transport over a bare fd connected by ``_core.connect``, made in
    C; it owns fd from the start (closes it if this raises). waiter gets
    None once connection_made() has run."""
    return _core.adopt_stream(
        loop, transports.SocketTransport, fd, kind, protocol, extra, waiter,
        transports._set_result_unless_cancelled, context)
