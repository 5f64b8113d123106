"""Socket set-up and argument checks shared by the loop's network mixins
(connect.py, server.py, datagram.py), as asyncio's base_events and
unix_events do them."""

import logging
import os
import socket
import stat

logger = logging.getLogger('asyncio')


def check_ssl_timeouts(with_ssl, ssl_handshake_timeout,
                       ssl_shutdown_timeout):
    """asyncio's ValueError for a TLS timeout given without TLS
    (`with_ssl` is the caller's own test of its ssl argument)."""
    if with_ssl:
        return
    if ssl_handshake_timeout is not None:
        raise ValueError('ssl_handshake_timeout is only meaningful with ssl')
    if ssl_shutdown_timeout is not None:
        raise ValueError('ssl_shutdown_timeout is only meaningful with ssl')


def set_reuseport(sock):
    """Set SO_REUSEPORT on sock, or raise asyncio's ValueError where the
    platform lacks it."""
    if not hasattr(socket, 'SO_REUSEPORT'):
        raise ValueError('reuse_port not supported by socket module')
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError('reuse_port not supported by socket module, '
                         'SO_REUSEPORT defined but not implemented.')


def is_abstract(path):
    """True for a Linux abstract socket name (a leading NUL)."""
    return path[0] in (0, '\x00')


def remove_stale_unix_socket(path):
    """Remove a socket file left at path before binding there, as asyncio
    does (abstract names and other file types are left alone)."""
    if is_abstract(path):
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        # The directory may only allow creating the socket.
        logger.error('Unable to check or remove stale UNIX socket %r: %r',
                     path, err)
