"""run_in_executor / set_default_executor / shutdown_default_executor."""
import asyncio
import concurrent.futures
import contextvars
import multiprocessing
import sys
import threading

import pytest

FAILSAFE = 10.0


def test_run_in_executor_result(loop):
    async def main():
        return await loop.run_in_executor(None, pow, 2, 10)

    assert loop.run_until_complete(main()) == 1024


def test_run_in_executor_returns_asyncio_future(loop):
    fut = loop.run_in_executor(None, lambda: 1)
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert loop.run_until_complete(fut) == 1


def test_run_in_executor_runs_in_other_thread(loop):
    main_ident = threading.get_ident()

    async def main():
        return await loop.run_in_executor(None, threading.get_ident)

    assert loop.run_until_complete(main()) != main_ident


def test_run_in_executor_exception(loop):
    def fail():
        raise KeyError("in thread")

    with pytest.raises(KeyError):
        loop.run_until_complete(loop.run_in_executor(None, fail))


def test_run_in_executor_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="explicit-pool") as pool:
        name = loop.run_until_complete(loop.run_in_executor(
            pool, lambda: threading.current_thread().name))
    assert name.startswith("explicit-pool")


def test_set_default_executor(loop):
    pool = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="default-pool")
    loop.set_default_executor(pool)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("default-pool")
    loop.run_until_complete(loop.shutdown_default_executor())
    # shutdown_default_executor shut the pool we gave it down.
    with pytest.raises(RuntimeError):
        pool.submit(print)


@pytest.mark.parametrize("bad", [
    None, object(), "executor",
])
def test_set_default_executor_type_error(loop, bad):
    with pytest.raises(TypeError):
        loop.set_default_executor(bad)


def test_set_default_executor_process_pool_type_error(loop):
    # Only a ThreadPoolExecutor is accepted (the pool never starts: no
    # worker processes are created before the first submit). The "fork"
    # context: 3.14's default (forkserver) starts multiprocessing's
    # resource tracker process as soon as the pool makes its queues.
    pool = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("fork"))
    try:
        with pytest.raises(TypeError):
            loop.set_default_executor(pool)
    finally:
        pool.shutdown(wait=True)


def test_many_concurrent_jobs(loop):
    async def main():
        futs = [loop.run_in_executor(None, lambda i=i: i * i)
                for i in range(200)]
        return await asyncio.gather(*futs)

    assert loop.run_until_complete(main()) == [i * i for i in range(200)]


def test_job_completion_wakes_blocked_loop(loop):
    ev = threading.Event()

    async def main():
        fut = loop.run_in_executor(None, ev.wait, FAILSAFE)
        loop.call_later(0.01, ev.set)
        return await fut

    assert loop.run_until_complete(main()) is True


def test_cancel_executor_future(loop):
    release = threading.Event()

    async def main():
        fut = loop.run_in_executor(None, release.wait, FAILSAFE)
        await asyncio.sleep(0.001)
        fut.cancel()
        try:
            await fut
        except asyncio.CancelledError:
            return "cancelled"
        finally:
            release.set()

    assert loop.run_until_complete(main()) == "cancelled"


def test_run_in_executor_closed_loop(new_loop):
    lp = new_loop()
    lp.close()
    with pytest.raises(RuntimeError):
        lp.run_in_executor(None, print)


def test_run_in_executor_coroutine_function_in_debug(loop):
    async def coro():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.run_in_executor(None, coro)


def test_shutdown_default_executor_without_executor(loop):
    assert loop.run_until_complete(loop.shutdown_default_executor()) is None


def test_shutdown_default_executor_joins_threads(loop):
    names = set()

    async def main():
        for _ in range(5):
            names.add(await loop.run_in_executor(
                None, lambda: threading.current_thread().name))
        await loop.shutdown_default_executor()

    loop.run_until_complete(main())
    alive = {t.name for t in threading.enumerate()}
    assert names and not (names & alive)


def test_run_in_executor_after_shutdown(loop):
    async def main():
        await loop.run_in_executor(None, int)
        await loop.shutdown_default_executor()
        loop.run_in_executor(None, int)

    with pytest.raises(RuntimeError, match="shutdown"):
        loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="shutdown_default_executor(timeout=) is 3.12+")
def test_shutdown_default_executor_timeout_arg(loop):
    async def main():
        await loop.run_in_executor(None, int)
        await loop.shutdown_default_executor(timeout=FAILSAFE)

    assert loop.run_until_complete(main()) is None


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="3.12's timeout only bounds the final join")
def test_shutdown_default_executor_timeout_expires(loop):
    release = threading.Event()

    async def main():
        loop.run_in_executor(None, release.wait, FAILSAFE)
        with pytest.warns(RuntimeWarning, match="did not finish"):
            await loop.shutdown_default_executor(timeout=0.02)

    try:
        loop.run_until_complete(main())
    finally:
        release.set()


def test_to_thread_propagates_context(loop):
    var = contextvars.ContextVar("exec_var", default="default")

    async def main():
        var.set("task-value")
        return await asyncio.to_thread(var.get)

    assert loop.run_until_complete(main()) == "task-value"


def test_close_shuts_default_executor_down(new_loop):
    lp = new_loop()
    worker = lp.run_until_complete(
        lp.run_in_executor(None, threading.current_thread))
    assert worker.is_alive()
    lp.close()
    # close() shuts the executor down (without waiting): the idle worker
    # exits by itself.
    worker.join(FAILSAFE)
    assert not worker.is_alive()
