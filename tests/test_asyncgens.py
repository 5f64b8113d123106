"""Async generator hooks and shutdown_asyncgens."""
import asyncio
import gc
import sys

import pytest


def _make_agen(log, name="agen"):
    async def agen():
        try:
            log.append(name + ":start")
            for i in range(10):
                yield i
                await asyncio.sleep(0)
        finally:
            log.append(name + ":finally")
            # Finalization runs on the loop: awaiting must work here.
            await asyncio.sleep(0)
            log.append(name + ":finally-done")

    return agen()


def test_hooks_installed_while_running(loop):
    before = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    hooks = seen[0]
    assert hooks.firstiter is not None
    assert hooks.finalizer is not None
    assert hooks != before
    assert sys.get_asyncgen_hooks() == before


def test_hooks_restored_after_exception(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == before


def test_hooks_restored_after_keyboard_interrupt(loop):
    before = sys.get_asyncgen_hooks()

    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert sys.get_asyncgen_hooks() == before


def test_shutdown_asyncgens_finalizes_suspended_generator(loop):
    log = []
    gens = []

    async def main():
        g = _make_agen(log)
        gens.append(g)
        assert await g.__anext__() == 0

    loop.run_until_complete(main())
    assert log == ["agen:start"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["agen:start", "agen:finally", "agen:finally-done"]


def test_shutdown_asyncgens_many(loop):
    log = []
    gens = []

    async def main():
        for i in range(20):
            g = _make_agen(log, "g%d" % i)
            gens.append(g)
            await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sum(1 for e in log if e.endswith(":finally-done")) == 20


def test_shutdown_asyncgens_nothing_to_do(loop):
    assert loop.run_until_complete(loop.shutdown_asyncgens()) is None


def test_finished_generator_not_finalized_again(loop):
    log = []

    async def main():
        g = _make_agen(log)
        async for _ in g:
            pass

    loop.run_until_complete(main())
    assert log.count("agen:finally-done") == 1
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log.count("agen:finally-done") == 1


def test_garbage_collected_generator_finalized_on_loop(loop):
    log = []

    async def main():
        g = _make_agen(log)
        await g.__anext__()
        del g
        gc.collect()
        # The finalizer schedules aclose() as a task on this loop.
        for _ in range(10):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert log == ["agen:start", "agen:finally", "agen:finally-done"]


def test_aclose_on_loop(loop):
    log = []

    async def main():
        g = _make_agen(log)
        await g.__anext__()
        await g.aclose()
        return log[:]

    assert loop.run_until_complete(main()) == [
        "agen:start", "agen:finally", "agen:finally-done"]


def test_asend_athrow(loop):
    async def echo():
        received = None
        while True:
            try:
                received = yield received
            except KeyError:
                received = "caught"

    async def main():
        g = echo()
        await g.asend(None)
        a = await g.asend("x")
        b = await g.athrow(KeyError)
        await g.aclose()
        return a, b

    assert loop.run_until_complete(main()) == ("x", "caught")


@pytest.mark.expect_handler_calls
def test_shutdown_asyncgens_error_reported(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    gens = []

    async def bad_agen():
        try:
            yield 1
        finally:
            raise ZeroDivisionError("in finally")

    async def main():
        g = bad_agen()
        gens.append(g)
        await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    assert "asynchronous generator" in errors[0]["message"]
    assert errors[0]["asyncgen"] is gens[0]


def test_asyncgen_after_shutdown_warns(loop):
    gens = []

    async def agen():
        yield 1

    async def main():
        await loop.shutdown_asyncgens()
        g = agen()
        gens.append(g)
        with pytest.warns(ResourceWarning, match="shutdown_asyncgens"):
            await g.__anext__()
        await g.aclose()

    loop.run_until_complete(main())
