"""Tasks on the loop: create_task, task factories, gather, contextvars."""
import asyncio
import contextvars
import sys

import pytest

cv = contextvars.ContextVar("task_cv", default="default")


async def _value(v):
    return v


def test_create_task(loop):
    async def main():
        task = loop.create_task(_value(1))
        assert isinstance(task, asyncio.Task)
        assert task.get_loop() is loop
        return await task

    assert loop.run_until_complete(main()) == 1


def test_create_task_outside_running_loop(loop):
    task = loop.create_task(_value("x"))
    assert not task.done()
    assert loop.run_until_complete(task) == "x"


def test_create_task_name(loop):
    async def main():
        named = loop.create_task(_value(1), name="my-task")
        unnamed = loop.create_task(_value(2))
        await asyncio.gather(named, unnamed)
        return named.get_name(), unnamed.get_name()

    named, unnamed = loop.run_until_complete(main())
    assert named == "my-task"
    assert unnamed.startswith("Task-")


def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "given")

    async def read():
        return cv.get()

    async def main():
        cv.set("outer")
        t1 = loop.create_task(read(), context=ctx)
        t2 = loop.create_task(read())
        return await t1, await t2

    assert loop.run_until_complete(main()) == ("given", "outer")


def test_create_task_name_and_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "both")

    async def read():
        return cv.get()

    async def main():
        task = loop.create_task(read(), name="n", context=ctx)
        assert task.get_name() == "n"
        return await task

    assert loop.run_until_complete(main()) == "both"


def test_create_task_closed_loop(loop):
    loop.close()
    coro = _value(1)
    with pytest.raises(RuntimeError, match="closed"):
        loop.create_task(coro)
    coro.close()


def test_create_task_bad_arguments(loop):
    coro = _value(1)
    with pytest.raises(TypeError):
        loop.create_task(coro, no_such_keyword=1)
    with pytest.raises(TypeError):
        loop.create_task()
    with pytest.raises(TypeError):
        loop.create_task(coro, None)
    coro.close()


def test_create_task_debug_source_traceback(loop):
    """In debug mode the task's creation traceback ends at the caller,
    not inside the loop."""
    loop.set_debug(True)

    async def main():
        task = loop.create_task(_value(1))  # this line
        tb = task._source_traceback
        await task
        return tb

    tb = loop.run_until_complete(main())
    assert tb and tb[-1].name == "main"
    assert tb[-1].line.endswith("# this line")


def test_create_task_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(42)
    with pytest.raises(TypeError):
        loop.create_task(_value)


def test_task_context_isolated_from_parent(loop):
    async def child():
        cv.set("child")
        return cv.get()

    async def main():
        cv.set("parent")
        got = await loop.create_task(child())
        return got, cv.get()

    assert loop.run_until_complete(main()) == ("child", "parent")
    assert cv.get() == "default"


def test_context_copied_at_creation(loop):
    async def read():
        await asyncio.sleep(0)
        return cv.get()

    async def main():
        cv.set("before")
        task = loop.create_task(read())
        cv.set("after")
        return await task

    assert loop.run_until_complete(main()) == "before"


def test_context_propagates_to_callbacks_from_task(loop):
    seen = []

    async def main():
        cv.set("in-task")
        fut = loop.create_future()
        loop.call_soon(lambda: (seen.append(cv.get()), fut.set_result(None)))
        await fut

    loop.run_until_complete(main())
    assert seen == ["in-task"]


def test_current_task_and_all_tasks(loop):
    async def main():
        me = asyncio.current_task()
        other = loop.create_task(asyncio.sleep(0.001))
        tasks = asyncio.all_tasks()
        await other
        return me, other, tasks

    me, other, tasks = loop.run_until_complete(main())
    assert isinstance(me, asyncio.Task)
    assert me in tasks and other in tasks
    assert asyncio.current_task(loop) is None


def test_gather_results_in_order(loop):
    async def delayed(v, d):
        await asyncio.sleep(d)
        return v

    async def main():
        return await asyncio.gather(delayed("a", 0.01), delayed("b", 0),
                                    delayed("c", 0.005))

    assert loop.run_until_complete(main()) == ["a", "b", "c"]


def test_gather_return_exceptions(loop):
    async def fail():
        raise KeyError("k")

    async def main():
        return await asyncio.gather(_value(1), fail(), return_exceptions=True)

    res = loop.run_until_complete(main())
    assert res[0] == 1
    assert isinstance(res[1], KeyError)


def test_sleep_completion_order(loop):
    order = []

    async def sleeper(d):
        await asyncio.sleep(d)
        order.append(d)

    async def main():
        await asyncio.gather(*(sleeper(d) for d in (0.02, 0.0, 0.01, 0.005)))

    loop.run_until_complete(main())
    assert order == [0.0, 0.005, 0.01, 0.02]


def test_task_cancel(loop):
    async def main():
        task = loop.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert loop.run_until_complete(main()) is True


def test_wait_for_timeout(loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.01)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_asyncio_timeout(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(3600)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_task_group(loop):
    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_value(i)) for i in range(10)]
        return [t.result() for t in tasks]

    assert loop.run_until_complete(main()) == list(range(10))


def test_queue_producer_consumer(loop):
    async def main():
        q = asyncio.Queue(maxsize=3)
        got = []

        async def producer():
            for i in range(50):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                got.append(item)

        await asyncio.gather(producer(), consumer())
        return got

    assert loop.run_until_complete(main()) == list(range(50))


def test_many_tasks(loop):
    async def worker(i):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(worker(i) for i in range(5000)))

    assert loop.run_until_complete(main()) == list(range(5000))


def _make_factory(created):
    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    return factory


def test_task_factory(loop):
    created = []
    factory = _make_factory(created)
    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        return await loop.create_task(_value(5), name="factory-made")

    assert loop.run_until_complete(main()) == 5
    # run_until_complete's own task and the explicit one.
    assert len(created) == 2
    assert created[1].get_name() == "factory-made"
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_task_factory_with_context(loop):
    created = []
    loop.set_task_factory(_make_factory(created))
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "factory-ctx")

    async def read():
        return cv.get()

    async def main():
        return await loop.create_task(read(), context=ctx)

    assert loop.run_until_complete(main()) == "factory-ctx"
    assert len(created) == 2


def test_ensure_future_uses_task_factory(loop):
    created = []
    loop.set_task_factory(_make_factory(created))

    async def main():
        return await asyncio.ensure_future(_value(3))

    assert loop.run_until_complete(main()) == 3
    assert len(created) == 2


@pytest.mark.parametrize("bad", [42, "factory"])
def test_set_task_factory_non_callable(loop, bad):
    with pytest.raises(TypeError):
        loop.set_task_factory(bad)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.eager_task_factory is 3.12+")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    steps = []

    async def no_suspend():
        steps.append("ran")
        return "eager"

    async def suspends():
        steps.append("start")
        await asyncio.sleep(0)
        steps.append("resumed")
        return "lazy"

    async def main():
        t1 = loop.create_task(no_suspend())
        # Ran synchronously inside create_task.
        assert t1.done()
        assert steps == ["ran"]
        t2 = loop.create_task(suspends())
        assert steps == ["ran", "start"]
        assert not t2.done()
        return t1.result(), await t2

    assert loop.run_until_complete(main()) == ("eager", "lazy")
    assert steps == ["ran", "start", "resumed"]


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.eager_task_factory is 3.12+")
def test_eager_task_context_and_name(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "eager-ctx")

    async def read():
        return cv.get()

    async def main():
        t = loop.create_task(read(), name="eager-named", context=ctx)
        return t.done(), t.get_name(), await t

    assert loop.run_until_complete(main()) == (True, "eager-named",
                                               "eager-ctx")


@pytest.mark.skipif(sys.version_info < (3, 14),
                    reason="create_task(eager_start=) is 3.14+")
@pytest.mark.timeout(10)
def test_eager_start_per_task(loop):
    # eager_start given to create_task wins over the task factory's mode,
    # both ways; other keywords reach the factory as given.
    started = []

    async def record(tag):
        started.append(tag)
        return asyncio.current_task().get_name()

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        lazy = loop.create_task(record("lazy"), eager_start=False,
                                name="lazy-task")
        assert not lazy.done() and started == []
        assert await lazy == "lazy-task"
        loop.set_task_factory(None)
        eager = loop.create_task(record("eager"), eager_start=True,
                                 name="eager-task")
        assert eager.done() and started == ["lazy", "eager"]
        return eager.result()

    assert loop.run_until_complete(main()) == "eager-task"


@pytest.mark.skipif(sys.version_info < (3, 14),
                    reason="task factories get **kwargs from 3.14")
def test_task_factory_gets_keywords(loop):
    seen = []

    def factory(lp, coro, **kwargs):
        seen.append(sorted(kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    loop.run_until_complete(loop.create_task(_value(1), name="n"))
    assert seen == [["name"]]


def test_future_set_result_wakes_awaiting_task(loop):
    async def main():
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, "woken")
        return await fut

    assert loop.run_until_complete(main()) == "woken"


def test_shield_and_cancel(loop):
    async def main():
        inner = loop.create_task(asyncio.sleep(0.005, "inner"))
        outer = asyncio.ensure_future(asyncio.shield(inner))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner

    assert loop.run_until_complete(main()) == "inner"
