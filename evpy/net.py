"""NetMixin: the socket half of asyncio's AbstractEventLoop for evpy.Loop.

    connect.py   create_connection, create_unix_connection,
                 connect_accepted_socket
    server.py    Server, create_server, create_unix_server, the accept loop
    sock.py      getaddrinfo, getnameinfo, sock_recv, sock_recv_into,
                 sock_sendall, sock_connect, sock_accept
    sendfile.py  sock_sendfile, sendfile

Transports come from the loop's ``_make_socket_transport`` (the C stream
transport). TLS is not supported yet: a true ``ssl`` argument raises
NotImplementedError after asyncio's argument checks.
"""

from .connect import ConnectMixin
from .sendfile import SendfileMixin
from .server import Server, ServerMixin
from .sock import SockMixin

__all__ = ['NetMixin', 'Server']


class NetMixin(ConnectMixin, ServerMixin, SendfileMixin, SockMixin):
    """Sockets, servers and sendfile for evpy.Loop."""
