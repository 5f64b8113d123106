"""redis-py's asyncio client against a real redis-server (started for the
session by conftest.py): commands, pipelines and transactions, a
connection pool, pub/sub, a cancelled blocking command."""
import asyncio

import pytest

from integration.support import loop_module, need, run


def test_redis(kind, redis_server):
    need('redis')
    import redis.asyncio as aioredis

    async def main():
        pool = aioredis.BlockingConnectionPool(port=redis_server,
                                               max_connections=10)
        client = aioredis.Redis(connection_pool=pool)
        try:
            key = f'evpy:{kind}'
            await client.delete(key, key + ':n')
            await asyncio.gather(*(client.rpush(key, i) for i in range(500)))
            assert await client.llen(key) == 500

            async with client.pipeline(transaction=True) as pipe:
                pipe.incr(key + ':n').incrby(key + ':n', 41).get(key + ':n')
                assert (await pipe.execute())[-1] == b'42'

            pubsub = client.pubsub()
            await pubsub.subscribe('evpy-chan')
            assert (await pubsub.get_message(timeout=5))['type'] == \
                'subscribe'
            for i in range(20):
                await client.publish('evpy-chan', f'm{i}')
            got = []
            while len(got) < 20:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=5)
                assert message is not None, got
                got.append(message['data'])
            assert got == [f'm{i}'.encode() for i in range(20)]
            await pubsub.aclose()

            # A blocking pop, cancelled: the pool and client go on.
            task = asyncio.ensure_future(client.blpop(key + ':empty', 30))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await client.ping()
            assert await client.delete(key, key + ':n') == 2
        finally:
            await client.aclose()
            await pool.aclose()
        return type(asyncio.get_running_loop()).__module__

    assert run(kind, main) == loop_module(kind)
