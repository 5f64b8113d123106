"""call_later / call_at: ordering, call_later(0), cancel, when(), accuracy.

No test asserts an upper bound on latency; timers are only required to fire
no earlier than their deadline and in deadline order.
"""
import asyncio
import contextvars
import gc
import random
import sys
import threading
import time
import weakref

import pytest

from conftest import run_briefly

# asyncio runs timers whose deadline is within the clock resolution.
RES = time.get_clock_info("monotonic").resolution

cv = contextvars.ContextVar("timer_cv", default="default")


def test_time_is_monotonic_clock(loop):
    before = time.monotonic()
    now = loop.time()
    after = time.monotonic()
    assert before <= now <= after


def test_time_advances(loop):
    t1 = loop.time()
    time.sleep(0.002)
    t2 = loop.time()
    assert t2 >= t1 + 0.002 - RES


def test_call_later_returns_timer_handle(loop):
    before = loop.time()
    h = loop.call_later(10, lambda: None)
    after = loop.time()
    assert callable(h.when)
    assert before + 10 <= h.when() <= after + 10
    h.cancel()


def test_call_at_when_is_exact(loop):
    when = loop.time() + 123.25
    h = loop.call_at(when, lambda: None)
    assert h.when() == when
    h.cancel()


def test_timers_fire_in_deadline_order(loop):
    order = []
    base = loop.time()
    for delay in (0.03, 0.01, 0.02, 0.0):
        loop.call_at(base + delay, order.append, delay)
    loop.call_at(base + 0.04, loop.stop)
    loop.run_forever()
    assert order == [0.0, 0.01, 0.02, 0.03]


def test_equal_deadlines_all_fire(loop):
    order = []
    when = loop.time() + 0.005
    for i in range(50):
        loop.call_at(when, order.append, i)
    loop.call_at(when + 0.001, loop.stop)
    loop.run_forever()
    assert sorted(order) == list(range(50))


def test_two_equal_deadlines_fifo(loop):
    order = []
    when = loop.time() + 0.002
    loop.call_at(when, order.append, "first")
    loop.call_at(when, order.append, "second")
    loop.call_at(when + 0.001, loop.stop)
    loop.run_forever()
    assert order == ["first", "second"]


@pytest.mark.evpy_only
def test_equal_deadlines_fire_fifo(loop):
    """evpy guarantees FIFO among equal deadlines.  asyncio does not (its
    heapq is not stable beyond three entries), so this is evpy-only."""
    order = []
    when = loop.time() + 0.005
    for i in range(50):
        loop.call_at(when, order.append, i)
    loop.call_at(when, loop.stop)
    loop.run_forever()
    assert order == list(range(50))


def test_call_later_zero_is_timer(loop):
    h = loop.call_later(0, lambda: None)
    before = loop.time()
    assert h.when() <= before
    assert not h.cancelled()
    soon = loop.call_soon(lambda: None)
    # A ready-queue handle has no deadline; a timer handle does.
    assert not hasattr(soon, "when")
    run_briefly(loop)


def test_call_later_zero_runs_after_ready_callbacks(loop):
    order = []
    loop.call_later(0, order.append, "timer")
    loop.call_soon(order.append, "soon-1")
    loop.call_soon(order.append, "soon-2")
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert order == ["soon-1", "soon-2", "timer"]


def test_negative_delay_fires(loop):
    order = []
    loop.call_later(0, order.append, "zero")
    loop.call_later(-1, order.append, "minus-one")
    loop.call_later(-0.5, order.append, "minus-half")
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    # Earlier (more negative) deadlines first.
    assert order == ["minus-one", "minus-half", "zero"]


def test_call_at_in_the_past_fires(loop):
    fired = []
    loop.call_at(loop.time() - 100, fired.append, 1)
    loop.call_at(0, fired.append, 2)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert fired == [2, 1]


def test_timer_args_and_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "ctx-value")
    got = []
    loop.call_later(0, lambda a, b: got.append((a, b, cv.get())), 1, 2,
                    context=ctx)
    loop.call_at(loop.time(), lambda: got.append(cv.get()), context=ctx)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert got == [(1, 2, "ctx-value"), "ctx-value"]


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="Handle.get_context() is 3.12+")
def test_timer_get_context(loop):
    ctx = contextvars.copy_context()
    h = loop.call_later(1, lambda: None, context=ctx)
    assert h.get_context() is ctx
    h.cancel()


def test_timer_fires_not_early(loop):
    fired = []
    h = loop.call_later(0.02, lambda: fired.append(loop.time()))
    start = time.monotonic()
    loop.call_later(0.021, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    assert fired[0] >= h.when() - RES
    assert time.monotonic() - start >= 0.02 - RES


@pytest.mark.parametrize("delay", [0.0001, 0.0005, 0.0009, 0.0015])
def test_sub_millisecond_timer_fires_not_early(loop, delay):
    fired = []
    handles = []

    def cb():
        fired.append((time.monotonic(), loop.time()))
        loop.stop()

    handles.append(loop.call_later(delay, cb))
    loop.run_forever()
    assert len(fired) == 1
    mono, lt = fired[0]
    when = handles[0].when()
    assert lt >= when - RES
    assert mono >= when - RES


def test_sleep_not_early(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.015)
        return loop.time() - t0

    elapsed = loop.run_until_complete(main())
    assert elapsed >= 0.015 - RES


def test_cancel_timer(loop):
    fired = []
    h = loop.call_later(0.001, fired.append, "cancelled")
    loop.call_later(0.002, fired.append, "kept")
    h.cancel()
    assert h.cancelled()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert fired == ["kept"]


def test_cancel_timer_from_earlier_timer(loop):
    fired = []
    when = loop.time() + 0.002
    victim = []
    loop.call_at(when, lambda: victim[0].cancel())
    victim.append(loop.call_at(when, fired.append, "victim"))
    loop.call_at(when, fired.append, "survivor")
    loop.call_at(when + 0.005, loop.stop)
    loop.run_forever()
    assert fired == ["survivor"]


def test_cancel_after_fire_is_harmless(loop):
    fired = []
    h = loop.call_later(0, fired.append, 1)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    h.cancel()
    h.cancel()
    assert fired == [1]


def test_cancel_many_timers(loop):
    fired = []
    handles = [loop.call_later(0.001 + i * 1e-6, fired.append, i)
               for i in range(2000)]
    for h in handles[::2]:
        h.cancel()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert fired == list(range(1, 2000, 2))


def _many_timers(loop, n=5000):
    rnd = random.Random(1234)
    base = loop.time()
    entries = [(round(rnd.uniform(0, 0.03), 4), i) for i in range(n)]
    fired = []
    for when, i in entries:
        loop.call_at(base + when, fired.append, (when, i))
    loop.call_at(base + 0.04, loop.stop)
    loop.run_forever()
    return entries, fired


def test_many_timers_fire_in_deadline_order(loop):
    entries, fired = _many_timers(loop)
    assert len(fired) == len(entries)
    assert sorted(fired) == sorted(entries)
    whens = [when for when, _ in fired]
    assert whens == sorted(whens)


@pytest.mark.evpy_only
def test_many_timers_fire_in_stable_order(loop):
    """Deadline order, and equal deadlines keep scheduling order (evpy)."""
    entries, fired = _many_timers(loop)
    assert fired == sorted(entries)


def test_timer_scheduled_from_timer(loop):
    order = []

    def outer():
        order.append("outer")
        loop.call_later(0, inner)

    def inner():
        order.append("inner")
        loop.stop()

    loop.call_later(0, outer)
    loop.run_forever()
    assert order == ["outer", "inner"]


def test_zero_delay_timer_chain_does_not_starve_ready_queue(loop):
    """A timer re-arming itself with delay 0 must not run forever inside a
    single iteration: callbacks scheduled with call_soon still progress."""
    counts = {"timer": 0, "soon": 0}

    def timer():
        counts["timer"] += 1
        loop.call_later(0, timer)

    def soon():
        counts["soon"] += 1
        if counts["soon"] == 20:
            loop.stop()
        else:
            loop.call_soon(soon)

    loop.call_later(0, timer)
    loop.call_soon(soon)
    loop.run_forever()
    assert counts["soon"] == 20
    assert counts["timer"] >= 1


def test_far_future_timer_does_not_fire(loop):
    """Huge delays must not overflow into an immediate wakeup."""
    fired = []
    handles = [loop.call_later(d, fired.append, d)
               for d in (3600, 86400 * 365, 1e9, 1e12, 1e300,
                         float("inf"))]
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    assert fired == []
    for h in handles:
        h.cancel()


def test_far_future_timer_does_not_block_threadsafe_wakeup(loop):
    fired = []
    h = loop.call_later(1e9, fired.append, "far")
    t = threading.Timer(0.01, loop.call_soon_threadsafe, (loop.stop,))
    t.start()
    try:
        loop.run_forever()
    finally:
        t.join()
    assert fired == []
    h.cancel()


def test_pending_cancelled_timer_does_not_keep_loop_blocked(loop):
    h = loop.call_later(3600, lambda: None)
    h.cancel()
    done = []
    loop.call_later(0.001, lambda: (done.append(1), loop.stop()))
    loop.run_forever()
    assert done == [1]


def test_timer_handle_repr(loop):
    def my_timer_cb():
        pass

    h = loop.call_later(10, my_timer_cb)
    r = repr(h)
    assert r.startswith("<") and "Handle" in r
    assert "when=" in r
    assert "my_timer_cb" in r
    h.cancel()
    assert "cancelled" in repr(h)


@pytest.mark.parametrize("bad", ["1", None, object()])
def test_call_later_bad_delay_type_error(loop, bad):
    with pytest.raises(TypeError):
        loop.call_later(bad, lambda: None)


def test_call_later_closed_loop(new_loop):
    lp = new_loop()
    lp.close()
    with pytest.raises(RuntimeError):
        lp.call_later(0, lambda: None)
    with pytest.raises(RuntimeError):
        lp.call_at(0, lambda: None)


def test_call_later_coroutine_type_error_in_debug(loop):
    async def coro():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_later(0, coro)
    with pytest.raises(TypeError):
        loop.call_at(loop.time(), coro)


def test_random_cancels_including_from_callbacks(loop):
    """Timer heap stress: random deadlines, random cancels before running
    and from inside firing callbacks.  Exactly the timers never cancelled
    fire, in deadline order."""
    rnd = random.Random(99)
    base = loop.time()
    n = 3000
    handles = {}
    cancelled = set()
    fired = []

    def cb(i):
        assert i not in cancelled
        fired.append(i)
        # Cancel a random timer that has not fired yet (maybe an equal
        # deadline already queued in this very iteration).
        victim = rnd.randrange(n)
        if victim not in fired_set and victim != i:
            handles[victim].cancel()
            cancelled.add(victim)
        fired_set.add(i)

    fired_set = set()
    whens = {}
    for i in range(n):
        whens[i] = base + rnd.randrange(0, 200) * 1e-4
        handles[i] = loop.call_at(whens[i], cb, i)
    for i in rnd.sample(range(n), n // 3):
        handles[i].cancel()
        cancelled.add(i)
    loop.call_at(base + 0.03, loop.stop)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    loop.run_forever()
    assert errors == []
    assert set(fired) == set(range(n)) - cancelled
    fired_whens = [whens[i] for i in fired]
    assert fired_whens == sorted(fired_whens)


def test_cancel_timer_releases_callback_and_args(loop):
    class Obj:
        def __call__(self, *args):
            pass

    cb, arg = Obj(), Obj()
    refs = weakref.ref(cb), weakref.ref(arg)
    h = loop.call_later(3600, cb, arg)
    del cb, arg
    h.cancel()
    gc.collect()
    assert [r() for r in refs] == [None, None]
    # when() still answers after cancel.
    assert h.when() > loop.time()


def test_fired_timer_releases_callback(loop):
    class Obj:
        def __call__(self):
            pass

    cb = Obj()
    ref = weakref.ref(cb)
    loop.call_later(0, cb)
    del cb
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_call_at_accepts_int_and_float_subclass(loop):
    class F(float):
        pass

    fired = []
    h1 = loop.call_at(int(loop.time()) - 1, fired.append, "int")
    loop.call_at(F(loop.time()), fired.append, "float-subclass")
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert fired == ["int", "float-subclass"]
    assert h1.when() == int(h1.when())
