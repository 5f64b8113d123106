"""PipesMixin: loop.connect_read_pipe and loop.connect_write_pipe.

The transports come from ``factories.read_pipe_transport`` and
``factories.write_pipe_transport`` (the C pipe transports); they check the
file type and raise asyncio's ValueError. This layer waits for the
transport's waiter and closes the transport if that wait fails, as
asyncio's base_events does.
"""

import logging

from . import factories

logger = logging.getLogger('asyncio')


class PipesMixin:
    """connect_read_pipe / connect_write_pipe for evpy.Loop."""

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Register the read end of pipe; return (transport, protocol)."""
        return await self._connect_pipe(
            factories.read_pipe_transport, 'Read', protocol_factory, pipe)

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Register the write end of pipe; return (transport, protocol)."""
        return await self._connect_pipe(
            factories.write_pipe_transport, 'Write', protocol_factory, pipe)

    async def _connect_pipe(self, make_transport, what, protocol_factory,
                            pipe):
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make_transport(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self._debug:
            logger.debug('%s pipe %r connected: (%r, %r)',
                         what, pipe.fileno(), transport, protocol)
        return transport, protocol
