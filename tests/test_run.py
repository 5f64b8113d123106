"""run_forever / run_until_complete / stop / close / is_running / is_closed."""
import asyncio
import os
import signal
import threading
import time

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
        # Far enough out that a slow machine (debug mode, CI load) cannot
        # reach it before run_until_complete() returns.
        loop.call_later(0.2, calls.append, "late")
        return "ok"

    assert loop.run_until_complete(main()) == "ok"
    assert calls == []
    loop.call_later(0.3, loop.stop)
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


def test_closed_attribute(new_loop):
    # asyncio's private flag, which some third-party code reads.
    lp = new_loop()
    assert lp._closed is False
    lp.close()
    assert lp._closed is True


@pytest.mark.evpy_only
def test_closed_attribute_is_read_only(new_loop):
    lp = new_loop()
    with pytest.raises(AttributeError):
        lp._closed = True
    assert not lp.is_closed()
    lp.close()


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
    assert "debug={}".format(loop.get_debug()) in r


@pytest.fixture
def sigusr1_handler():
    """Install a plain Python SIGUSR1 handler for the test; restored after."""
    old = signal.getsignal(signal.SIGUSR1)
    installed = []

    def install(func):
        installed.append(signal.signal(signal.SIGUSR1, func))

    yield install
    signal.signal(signal.SIGUSR1, old)


def _kill_later(delay):
    t = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGUSR1))
    t.start()
    return t


def test_python_signal_handler_exception_interrupts_blocked_loop(
        loop, sigusr1_handler):
    """Ctrl-C style: a Python signal handler that raises while the loop is
    blocked in its poller gets its exception out of run_forever() at once
    (not after the next timer)."""
    def handler(signum, frame):
        raise KeyboardInterrupt("from signal handler")

    sigusr1_handler(handler)
    failsafe = []
    loop.call_later(10, lambda: (failsafe.append(1), loop.stop()))
    t = _kill_later(0.02)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
    finally:
        t.join()
    assert failsafe == []
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    assert loop.run_until_complete(asyncio.sleep(0, "usable")) == "usable"


def test_python_signal_handler_runs_while_loop_blocked(loop, sigusr1_handler):
    """A plain Python signal handler runs while the loop is blocked (EINTR
    must run Python's signal handlers), so it can wake the loop itself."""
    ran = []

    def handler(signum, frame):
        ran.append(signum)
        loop.call_soon_threadsafe(loop.stop)

    sigusr1_handler(handler)
    failsafe = []
    h = loop.call_later(10, lambda: (failsafe.append(1), loop.stop()))
    t = _kill_later(0.02)
    try:
        loop.run_forever()
    finally:
        t.join()
        h.cancel()
    assert ran == [signal.SIGUSR1]
    assert failsafe == []


def test_loops_in_several_threads(kind):
    """Independent loops run concurrently in threads, each with its own
    running-loop state, and talk to each other with call_soon_threadsafe."""
    n = 4
    loops = [make_loop(kind) for _ in range(n)]
    results = [None] * n
    errors = []

    async def main(i):
        me = asyncio.get_running_loop()
        assert me is loops[i]
        nxt = loops[(i + 1) % n]
        got = []
        for k in range(20):
            fut = me.create_future()
            # Ask the next loop to bounce a value back to us.
            nxt.call_soon_threadsafe(
                lambda k=k, fut=fut: me.call_soon_threadsafe(
                    fut.set_result, k))
            got.append(await asyncio.wait_for(fut, 10))
            await asyncio.sleep(0.001)
        return got

    def runner(i):
        try:
            results[i] = loops[i].run_until_complete(main(i))
            # Keep serving bounce requests until everybody is done.
            loops[i].run_until_complete(done_evt[i])
        except BaseException as exc:  # noqa: B902 - reported below
            errors.append(exc)

    done_evt = [lp.create_future() for lp in loops]
    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while (any(r is None for r in results) and not errors
               and time.monotonic() < deadline):
            time.sleep(0.005)
    finally:
        for lp, fut in zip(loops, done_evt):
            try:
                lp.call_soon_threadsafe(
                    lambda fut=fut: fut.done() or fut.set_result(None))
            except RuntimeError:
                pass
        for t in threads:
            t.join(20)
        for lp in loops:
            if not lp.is_running():
                lp.close()
    assert errors == []
    assert results == [list(range(20))] * n
    assert all(lp.is_closed() for lp in loops)
