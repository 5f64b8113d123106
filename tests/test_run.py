"""run_forever / run_until_complete / stop / close / is_running / is_closed."""
import asyncio

import pytest

from conftest import KINDS, make_loop, run_briefly


def test_run_until_complete_returns_result(loop):
    async def main():
        await asyncio.sleep(0)
        return 42

    assert loop.run_until_complete(main()) == 42
    assert not loop.is_running()


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_already_done_future(loop):
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_raises_exception(loop):
    class Boom(Exception):
        pass

    async def main():
        await asyncio.sleep(0)
        raise Boom("x")

    with pytest.raises(Boom):
        loop.run_until_complete(main())
    assert not loop.is_running()


def test_run_until_complete_cancelled(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_non_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_run_until_complete_foreign_future(loop, kind):
    other = make_loop(kind)
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="stopped before Future completed"):
        loop.run_until_complete(fut)
    fut.cancel()


def test_run_until_complete_leaves_other_callbacks_pending(loop):
    calls = []

    async def main():
        loop.call_later(0.001, calls.append, "late")
        return "ok"

    assert loop.run_until_complete(main()) == "ok"
    assert calls == []
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    assert calls == ["late"]


def test_run_sequentially_many_times(loop):
    async def add(x):
        await asyncio.sleep(0)
        return x + 1

    v = 0
    for _ in range(100):
        v = loop.run_until_complete(add(v))
    assert v == 100


def test_stop_before_run_runs_one_iteration(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.stop()
    loop.call_soon(calls.append, 2)
    loop.run_forever()
    assert calls == [1, 2]
    # The stop request was consumed; the loop can run again.
    loop.call_soon(calls.append, 3)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1, 2, 3]


def test_stop_before_run_with_nothing_scheduled(loop):
    loop.stop()
    loop.run_forever()
    assert not loop.is_running()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, None)
    assert loop.run_until_complete(fut) is None


def test_stop_twice(loop):
    calls = []
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, "x")
    loop.run_forever()
    assert calls == ["x"]
    assert not loop.is_running()


def test_stop_leaves_pending_callbacks_for_next_run(loop):
    calls = []

    def first():
        loop.stop()
        loop.call_soon(calls.append, "next-run")

    loop.call_soon(first)
    loop.run_forever()
    assert calls == []
    run_briefly(loop)
    assert calls == ["next-run"]


def test_stop_wakes_loop_blocked_on_timer(loop):
    # A stop requested from a callback while a far timer is pending returns
    # promptly (the timer does not fire).
    fired = []
    h = loop.call_later(3600, fired.append, 1)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert fired == []
    h.cancel()


def test_is_running(loop):
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_briefly(loop)
    assert seen == [True]
    assert not loop.is_running()


def test_get_running_loop(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
    run_briefly(loop)
    assert seen == [loop]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_get_event_loop_inside_coroutine(loop):
    async def main():
        return asyncio.get_event_loop(), asyncio.get_running_loop()

    assert loop.run_until_complete(main()) == (loop, loop)


def test_run_forever_while_running(loop):
    errors = []

    def nested():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(nested)
    loop.run_forever()
    assert len(errors) == 1
    assert "already running" in str(errors[0])
    assert not loop.is_running()


def test_run_until_complete_while_running(loop):
    errors = []

    async def inner():
        pass

    def nested():
        coro = inner()
        try:
            loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(exc)
        finally:
            coro.close()
        loop.stop()

    loop.call_soon(nested)
    loop.run_forever()
    assert len(errors) == 1
    assert "already running" in str(errors[0])


@pytest.mark.parametrize("inner_kind", KINDS)
def test_nested_run_of_other_loop(loop, inner_kind):
    """Running any loop while another runs in the same thread fails."""
    inner = make_loop(inner_kind)
    errors = []

    def nested():
        try:
            inner.run_forever()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    try:
        loop.call_soon(nested)
        loop.run_forever()
        assert len(errors) == 1
        assert "another loop is running" in str(errors[0])
        # The inner loop is still usable once the outer one stopped.
        assert not inner.is_running()
        assert inner.run_until_complete(asyncio.sleep(0, "x")) == "x"
    finally:
        inner.close()


def test_running_loop_reset_after_run(loop):
    run_briefly(loop)
    assert asyncio._get_running_loop() is None
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_close(new_loop):
    lp = new_loop()
    assert not lp.is_closed()
    lp.close()
    assert lp.is_closed()
    lp.close()  # idempotent
    assert lp.is_closed()


def test_close_discards_pending_callbacks(new_loop):
    lp = new_loop()
    calls = []
    lp.call_soon(calls.append, 1)
    lp.call_later(0, calls.append, 2)
    lp.close()
    assert calls == []


def test_closed_loop_errors(new_loop):
    lp = new_loop()
    lp.close()
    with pytest.raises(RuntimeError, match="closed"):
        lp.run_forever()
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match="closed"):
            lp.run_until_complete(coro)
    finally:
        coro.close()
    with pytest.raises(RuntimeError, match="closed"):
        lp.call_soon(lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        lp.call_later(1, lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        lp.call_at(1, lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        lp.call_soon_threadsafe(lambda: None)
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match="closed"):
            lp.create_task(coro)
    finally:
        coro.close()
    with pytest.raises(RuntimeError, match="closed"):
        lp.run_in_executor(None, print)
    # Harmless on a closed loop.
    lp.stop()
    assert not lp.is_running()
    lp.time()


def test_close_while_running(loop):
    errors = []

    def closer():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(closer)
    loop.run_forever()
    assert len(errors) == 1
    assert "running" in str(errors[0])
    assert not loop.is_closed()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_propagates(loop, exc_type):
    calls = []

    def boom():
        raise exc_type()

    loop.call_soon(calls.append, "before")
    loop.call_soon(boom)
    loop.call_soon(calls.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert calls == ["before"]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    # The loop is still usable and did not lose the remaining callback.
    run_briefly(loop)
    assert calls == ["before", "after"]
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_timer_propagates(loop, exc_type):
    def boom():
        raise exc_type()

    loop.call_later(0.001, boom)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0.001, "ok")) == "ok"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_task_propagates(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_run_forever_after_run_until_complete_exception(loop):
    async def fail():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(fail())
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not loop.is_running()


def test_create_future_belongs_to_loop(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_future_callbacks_run_via_loop(loop):
    fut = loop.create_future()
    seen = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    fut.set_result(5)
    # Done callbacks are scheduled with call_soon, not run synchronously.
    assert seen == []
    run_briefly(loop)
    assert seen == [5]


def test_loop_repr(loop):
    r = repr(loop)
    assert "running=False" in r
    assert "closed=False" in r
    assert "debug=False" in r
