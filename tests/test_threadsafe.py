"""call_soon_threadsafe and cross-thread wakeups."""
import asyncio
import contextvars
import threading
import time

import pytest

from conftest import run_briefly

# Generous failsafe: a loop that is never woken stops here and the test
# fails on its assertion instead of hanging until the global timeout.
FAILSAFE = 10.0


def _run_with_failsafe(loop):
    timed_out = []

    def failsafe():
        timed_out.append(True)
        loop.stop()

    h = loop.call_later(FAILSAFE, failsafe)
    loop.run_forever()
    h.cancel()
    return not timed_out


def test_threadsafe_wakes_blocked_loop(loop):
    got = []

    def worker():
        time.sleep(0.02)  # let the loop block in its poller
        loop.call_soon_threadsafe(lambda: (got.append("woken"), loop.stop()))

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert _run_with_failsafe(loop), "loop was never woken"
    finally:
        t.join()
    assert got == ["woken"]


def test_threadsafe_wakes_loop_blocked_on_far_timer(loop):
    far = loop.call_later(3600, lambda: None)
    got = []

    def worker():
        time.sleep(0.02)
        loop.call_soon_threadsafe(lambda: (got.append(1), loop.stop()))

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert _run_with_failsafe(loop), "loop was never woken"
    finally:
        t.join()
        far.cancel()
    assert got == [1]


def test_threadsafe_sets_future_result(loop):
    fut = loop.create_future()

    def worker():
        time.sleep(0.01)
        loop.call_soon_threadsafe(fut.set_result, "from-thread")

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert loop.run_until_complete(
            asyncio.wait_for(fut, FAILSAFE)) == "from-thread"
    finally:
        t.join()


def test_threadsafe_returns_handle_and_cancel(loop):
    calls = []
    h = loop.call_soon_threadsafe(calls.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    loop.call_soon_threadsafe(calls.append, 2)
    run_briefly(loop)
    assert calls == [2]


def test_threadsafe_before_run_is_queued(loop):
    calls = []

    def worker():
        loop.call_soon_threadsafe(calls.append, "queued")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert calls == []
    run_briefly(loop)
    assert calls == ["queued"]


def test_threadsafe_preserves_order_with_call_soon(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_soon_threadsafe(calls.append, 2)
    loop.call_soon(calls.append, 3)
    run_briefly(loop)
    assert calls == [1, 2, 3]


def test_threadsafe_context(loop):
    var = contextvars.ContextVar("ts_var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")
    seen = []
    loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
    run_briefly(loop)
    assert seen == ["ctx"]


def test_many_threads(loop):
    nthreads, per_thread = 8, 500
    total = nthreads * per_thread
    received = {i: [] for i in range(nthreads)}
    count = [0]

    def record(tid, seq):
        received[tid].append(seq)
        count[0] += 1
        if count[0] == total:
            loop.stop()

    barrier = threading.Barrier(nthreads)

    def worker(tid):
        barrier.wait()
        for seq in range(per_thread):
            loop.call_soon_threadsafe(record, tid, seq)

    threads = [threading.Thread(target=worker, args=(i,))
               for i in range(nthreads)]
    for t in threads:
        t.start()
    try:
        assert _run_with_failsafe(loop), "not all callbacks arrived"
    finally:
        for t in threads:
            t.join()
    assert count[0] == total
    # Per-thread FIFO order is preserved.
    for tid in range(nthreads):
        assert received[tid] == list(range(per_thread))


def test_many_threadsafe_calls_while_not_running_do_not_block(loop):
    """The wakeup channel filling up must never block the caller."""
    n = 100000
    count = [0]

    def inc():
        count[0] += 1

    done = threading.Event()

    def worker():
        for _ in range(n):
            loop.call_soon_threadsafe(inc)
        done.set()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(FAILSAFE)
    assert done.is_set(), "call_soon_threadsafe blocked"
    run_briefly(loop)
    assert count[0] == n


def test_run_coroutine_threadsafe(loop):
    async def compute(x):
        await asyncio.sleep(0.001)
        return x * 2

    results = []

    def worker():
        fut = asyncio.run_coroutine_threadsafe(compute(21), loop)
        results.append(fut.result(FAILSAFE))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert _run_with_failsafe(loop)
    finally:
        t.join()
    assert results == [42]


def test_threadsafe_on_closed_loop_from_thread(new_loop):
    lp = new_loop()
    lp.close()
    errors = []

    def worker():
        try:
            lp.call_soon_threadsafe(lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1


def test_threadsafe_noncallable_in_debug(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon_threadsafe(42)


def test_repeated_wakeups(loop):
    """Many separate block/wake cycles all get through."""
    rounds = 30
    got = []

    def worker():
        for i in range(rounds):
            ev = threading.Event()
            loop.call_soon_threadsafe(lambda i=i, ev=ev: (got.append(i),
                                                          ev.set()))
            if not ev.wait(FAILSAFE):
                break
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert _run_with_failsafe(loop)
    finally:
        t.join()
    assert got == list(range(rounds))


# asyncio's thread-safe handle contract (3.14, some 3.13 releases): a
# handle from call_soon_threadsafe() is an asyncio.events._ThreadSafeHandle;
# another thread's cancel() or cancelled() waits while its callback runs.
_needs_ts_handle = pytest.mark.skipif(
    not hasattr(asyncio.events, "_ThreadSafeHandle"),
    reason="asyncio has no thread-safe handle class on this Python")


@_needs_ts_handle
@pytest.mark.parametrize("op", ["cancel", "cancelled"])
def test_threadsafe_handle_other_thread_waits_for_callback(loop, op):
    started = threading.Event()
    finished = threading.Event()
    seen = []

    def callback():
        started.set()
        time.sleep(0.2)  # releases the GIL: the other thread gets to run
        finished.set()

    def worker():
        handle = loop.call_soon_threadsafe(callback)
        seen.append(isinstance(handle, asyncio.events._ThreadSafeHandle))
        seen.append(isinstance(handle, asyncio.Handle))
        started.wait(FAILSAFE)
        result = getattr(handle, op)()
        seen.append((result, finished.is_set()))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert _run_with_failsafe(loop)
    finally:
        t.join()
    # cancel() returns None; cancelled() is False: the callback ran.
    assert seen == [True, True, (None if op == "cancel" else False, True)]


@_needs_ts_handle
def test_threadsafe_handle_cancel_before_run_from_other_thread(loop):
    ran = []
    gate = threading.Event()

    def worker():
        handle = loop.call_soon_threadsafe(ran.append, "ran")
        handle.cancel()
        assert handle.cancelled()
        gate.set()
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(gate.wait, FAILSAFE)  # the loop is busy meanwhile
    t = threading.Thread(target=worker)
    t.start()
    try:
        assert _run_with_failsafe(loop)
    finally:
        t.join()
    assert ran == []


@_needs_ts_handle
def test_threadsafe_handle_cancels_itself(loop):
    box = []

    def callback():
        box[0].cancel()  # from the loop thread: no wait, no effect now
        box.append(box[0].cancelled())
        loop.stop()

    box.append(loop.call_soon_threadsafe(callback))
    assert _run_with_failsafe(loop)
    assert box[1] is True
    assert "cancelled" in repr(box[0])
    assert box[0].get_context() is not None
