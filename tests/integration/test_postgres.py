"""asyncpg and psycopg 3 (async) against a real PostgreSQL (started for the
session by conftest.py): pools, transactions, LISTEN/NOTIFY, cancelled
queries."""
import asyncio

import pytest

from integration.support import loop_module, need, run


def test_asyncpg(kind, postgres):
    asyncpg = need('asyncpg')

    async def main():
        pool = await asyncpg.create_pool(min_size=2, max_size=5, **postgres)
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    f'DROP TABLE IF EXISTS t_{kind};'
                    f'CREATE TABLE t_{kind} (id int PRIMARY KEY, v text)')
            # Many queries over the pool at once.
            values = await asyncio.gather(
                *(pool.fetchval('SELECT $1::int * 2', i) for i in range(200)))
            assert values == [2 * i for i in range(200)]

            # A transaction commits, a failing one rolls back.
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.executemany(
                        f'INSERT INTO t_{kind} VALUES ($1, $2)',
                        [(i, str(i)) for i in range(100)])
                with pytest.raises(asyncpg.UniqueViolationError):
                    async with conn.transaction():
                        await conn.execute(
                            f"INSERT INTO t_{kind} VALUES (1000, 'x')")
                        await conn.execute(
                            f"INSERT INTO t_{kind} VALUES (1, 'dup')")
                assert await conn.fetchval(
                    f'SELECT count(*) FROM t_{kind}') == 100

                # LISTEN/NOTIFY between two connections.
                got = asyncio.Queue()

                def listener(*args):
                    got.put_nowait(args[3])
                await conn.add_listener('evpy_chan', listener)
                async with pool.acquire() as other:
                    for i in range(5):
                        await other.execute(f"NOTIFY evpy_chan, 'n{i}'")
                assert [await got.get() for _ in range(5)] == [
                    f'n{i}' for i in range(5)]
                await conn.remove_listener('evpy_chan', listener)

                # A cancelled query is cancelled on the server too, and the
                # connection stays usable.
                task = asyncio.ensure_future(conn.fetchval(
                    'SELECT pg_sleep(30)'))
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await conn.fetchval('SELECT 41 + 1') == 42
                with pytest.raises(asyncio.TimeoutError):
                    await conn.fetchval('SELECT pg_sleep(30)', timeout=0.2)
                assert await conn.fetchval('SELECT 1') == 1
                await conn.execute(f'DROP TABLE t_{kind}')
        finally:
            await pool.close()
        return type(asyncio.get_running_loop()).__module__

    assert run(kind, main) == loop_module(kind)


def test_psycopg(kind, postgres):
    need('psycopg')
    need('psycopg_pool')
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    conninfo = ' '.join(f'{k}={v}' for k, v in postgres.items()
                        if k != 'database') + f" dbname={postgres['database']}"

    async def main():
        async with AsyncConnectionPool(conninfo, min_size=2, max_size=5,
                                       open=False) as pool:
            async def double(i):
                async with pool.connection() as conn:
                    cur = await conn.execute('SELECT %s::int * 2', (i,))
                    return (await cur.fetchone())[0]
            assert await asyncio.gather(*(double(i) for i in range(100))) \
                == [2 * i for i in range(100)]

            async with pool.connection() as conn:
                await conn.execute(
                    f'DROP TABLE IF EXISTS p_{kind};'
                    f'CREATE TABLE p_{kind} (id int PRIMARY KEY)')
                await conn.commit()
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            f'INSERT INTO p_{kind} VALUES (%s)',
                            [(i,) for i in range(50)])
                with pytest.raises(psycopg.errors.UniqueViolation):
                    async with conn.transaction():
                        await conn.execute(f'INSERT INTO p_{kind} VALUES (1)')
                cur = await conn.execute(f'SELECT count(*) FROM p_{kind}')
                assert (await cur.fetchone())[0] == 50
                await conn.execute(f'DROP TABLE p_{kind}')
                await conn.commit()

        # LISTEN/NOTIFY, and a cancelled query, on plain connections.
        async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True) as listener, \
                await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True) as talker:
            await listener.execute('LISTEN evpy_chan')
            for i in range(5):
                await talker.execute(f"NOTIFY evpy_chan, 'p{i}'")
            got = []
            async for note in listener.notifies(timeout=10, stop_after=5):
                got.append(note.payload)
            assert got == [f'p{i}' for i in range(5)]

            task = asyncio.ensure_future(
                talker.execute('SELECT pg_sleep(30)'))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cur = await talker.execute('SELECT 41 + 1')
            assert (await cur.fetchone())[0] == 42
        return type(asyncio.get_running_loop()).__module__

    assert run(kind, main) == loop_module(kind)
