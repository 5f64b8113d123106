"""NetMixin: the socket half of asyncio's AbstractEventLoop for evpy.Loop.

    connect.py   create_connection, create_unix_connection,
                 connect_accepted_socket
    server.py    Server, create_server, create_unix_server, the accept loop
    sock.py      getaddrinfo, getnameinfo, sock_recv, sock_recv_into,
                 sock_sendall, sock_connect, sock_accept
    sendfile.py  sock_sendfile, sendfile
    tls.py       start_tls and the TLS accept path (asyncio's SSLProtocol
                 state machine; tls_records.py its data path)

Transports come from factories.py: ``socket_transport`` (the C stream
transport) and, with ``ssl``, ``ssl_transport`` (asyncio's SSLProtocol over
that transport).
"""

from .connect import ConnectMixin
from .sendfile import SendfileMixin
from .server import Server, ServerMixin
from .sock import SockMixin
from .tls import TLSMixin

__all__ = ['NetMixin', 'Server']


class NetMixin(ConnectMixin, ServerMixin, SendfileMixin, SockMixin,
               TLSMixin):
    """Sockets, servers, sendfile and TLS for evpy.Loop."""
