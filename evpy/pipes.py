"""PipesMixin: loop.connect_read_pipe and loop.connect_write_pipe.

The transports come from the loop's ``_make_read_pipe_transport`` and
``_make_write_pipe_transport`` (the C pipe transports, with asyncio's
unix_events private signatures). This layer checks the pipe, waits for the
transport's waiter and closes the transport if that wait fails, as
asyncio's base_events does.
"""

import logging
import os
import stat

logger = logging.getLogger('asyncio')

_READ_ERROR = 'Pipe transport is for pipes/sockets only.'
_WRITE_ERROR = ('Pipe transport is only for pipes, sockets and character '
                'devices')


def check_pipe(pipe, message):
    """ValueError unless pipe is a pipe/FIFO, a socket or a character
    device, the file types asyncio's pipe transports accept."""
    mode = os.fstat(pipe.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
            or stat.S_ISCHR(mode)):
        raise ValueError(message)


class PipesMixin:
    """connect_read_pipe / connect_write_pipe for evpy.Loop."""

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Register the read end of pipe; return (transport, protocol)."""
        protocol = protocol_factory()
        check_pipe(pipe, _READ_ERROR)
        waiter = self.create_future()
        transport = self._make_read_pipe_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self._debug:
            logger.debug('Read pipe %r connected: (%r, %r)',
                         pipe.fileno(), transport, protocol)
        return transport, protocol

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Register the write end of pipe; return (transport, protocol)."""
        protocol = protocol_factory()
        check_pipe(pipe, _WRITE_ERROR)
        waiter = self.create_future()
        transport = self._make_write_pipe_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self._debug:
            logger.debug('Write pipe %r connected: (%r, %r)',
                         pipe.fileno(), transport, protocol)
        return transport, protocol
