"""websockets (its asyncio implementation): server and client on one loop,
10,000 echoed messages, ping/pong, close codes."""
from integration.support import loop_module, need, run

MESSAGES = 10_000


def test_echo_ping_close(kind):
    need('websockets')
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def handler(ws):
        async for message in ws:
            if message == 'bye':
                await ws.close(4001, 'asked to leave')
                return
            await ws.send(message)

    async def main():
        async with serve(handler, '127.0.0.1', 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f'ws://127.0.0.1:{port}') as ws:
                # Pipelined in batches: text and binary frames.
                for start in range(0, MESSAGES, 500):
                    batch = [f'msg {i}' if i % 2 else b'%d' % i
                             for i in range(start, start + 500)]
                    for message in batch:
                        await ws.send(message)
                    for message in batch:
                        assert await ws.recv() == message
                latency = await (await ws.ping(b'evpy'))
                assert latency >= 0
                await ws.send('bye')
                try:
                    await ws.recv()
                except ConnectionClosed as exc:
                    closed = exc
                else:
                    raise AssertionError('server did not close')
            assert closed.rcvd.code == 4001
            assert closed.rcvd.reason == 'asked to leave'
        import asyncio
        return type(asyncio.get_running_loop()).__module__

    assert run(kind, main) == loop_module(kind)
