"""Event-loop primitive cases: callbacks, timers, futures, tasks, threads.

Every case gets a fresh, not-running loop and a size ``n``, times only the
part under test with ``time.perf_counter`` and returns its metrics.  Only
the public ``asyncio.AbstractEventLoop`` API is used, so the same code runs
on evpy, the stock asyncio loop and uvloop.
"""

import asyncio
import random
import threading
from time import perf_counter

from benchmarks.registry import Metric, case, max_target, ratio_target


def _elapsed_ops(n, t0):
    return {"ops": n / (perf_counter() - t0)}


# -- callbacks ---------------------------------------------------------------

@case("call_soon_chain", n=100_000, quick_n=50_000,
      targets=[ratio_target("uvloop", 1.4)],
      cost=True, cost_n=(5000, 50000), cost_unit="callback")
def call_soon_chain(loop, n):
    """Each callback schedules the next with call_soon; ops/s."""
    remaining = n
    call_soon = loop.call_soon
    stop = loop.stop

    def cb():
        nonlocal remaining
        remaining -= 1
        if remaining:
            call_soon(cb)
        else:
            stop()

    t0 = perf_counter()
    call_soon(cb)
    loop.run_forever()
    res = _elapsed_ops(n, t0)
    assert remaining == 0, remaining
    return res


@case("call_soon_burst", n=100_000, quick_n=50_000,
      cost=True, cost_n=(5000, 50000), cost_unit="callback")
def call_soon_burst(loop, n):
    """Schedule n call_soon callbacks up front, then run them all; ops/s."""
    count = 0

    def cb():
        nonlocal count
        count += 1

    call_soon = loop.call_soon
    t0 = perf_counter()
    for _ in range(n):
        call_soon(cb)
    call_soon(loop.stop)
    loop.run_forever()
    res = _elapsed_ops(n, t0)
    assert count == n, count
    return res


# -- timers ------------------------------------------------------------------

@case("call_later_fire", n=50_000, quick_n=25_000,
      targets=[ratio_target("uvloop", 1.7)],
      cost=True, cost_n=(2000, 20000), cost_unit="timer")
def call_later_fire(loop, n):
    """n call_later timers, random distinct delays in [0, 10 ms); ops/s.

    Timed from the first call_later until the last timer fired, so the
    10 ms spread is a floor on the elapsed time.
    """
    span = 0.010
    order = list(range(n))
    random.Random(12345).shuffle(order)
    delays = [i * span / n for i in order]
    remaining = n
    stop = loop.stop

    def cb():
        nonlocal remaining
        remaining -= 1
        if not remaining:
            stop()

    def schedule():
        call_later = loop.call_later
        for d in delays:
            call_later(d, cb)

    t0 = perf_counter()
    loop.call_soon(schedule)
    loop.run_forever()
    res = _elapsed_ops(n, t0)
    assert remaining == 0, remaining
    return res


@case("call_later_cancel", n=100_000, quick_n=50_000,
      targets=[ratio_target("uvloop", 1.7)],
      cost=True, cost_n=(5000, 50000), cost_unit="timer")
def call_later_cancel(loop, n):
    """n x (call_later(10, cb) then cancel()), plus one loop pass; ops/s."""
    fired = 0

    def cb():
        nonlocal fired
        fired += 1

    def work():
        call_later = loop.call_later
        for _ in range(n):
            call_later(10, cb).cancel()
        # One more iteration, so loops that purge cancelled timers lazily
        # pay for it inside the measurement.
        loop.call_soon(loop.stop)

    t0 = perf_counter()
    loop.call_soon(work)
    loop.run_forever()
    res = _elapsed_ops(n, t0)
    assert fired == 0
    return res


# -- threads -----------------------------------------------------------------

@case("call_soon_threadsafe", n=50_000, quick_n=25_000,
      targets=[ratio_target("uvloop", 1.0)],
      cost=True, cost_n=(5000, 30000), cost_unit="callback")
def call_soon_threadsafe(loop, n):
    """A worker thread posts n call_soon_threadsafe callbacks; ops/s.

    Timed from starting the thread until the loop ran the last callback.
    """
    remaining = n
    stop = loop.stop

    def cb():
        nonlocal remaining
        remaining -= 1
        if not remaining:
            stop()

    def producer():
        post = loop.call_soon_threadsafe
        for _ in range(n):
            post(cb)

    thread = threading.Thread(target=producer, daemon=True)
    t0 = [0.0]

    def start():
        t0[0] = perf_counter()
        thread.start()

    loop.call_soon(start)
    loop.run_forever()
    res = {"ops": n / (perf_counter() - t0[0])}
    thread.join()
    assert remaining == 0, remaining
    return res


@case("run_in_executor", n=3_000, quick_n=1_500,
      cost=True, cost_n=(200, 1000), cost_unit="call")
def run_in_executor(loop, n):
    """n sequential run_in_executor(None, f) round trips; ops/s."""

    def trivial():
        return None

    async def main():
        run = loop.run_in_executor
        # Spin up the default executor outside the timing.
        await run(None, trivial)
        t0 = perf_counter()
        for _ in range(n):
            await run(None, trivial)
        return _elapsed_ops(n, t0)

    # The worker shuts the default executor down after the case.
    return loop.run_until_complete(main())


# -- futures and tasks -------------------------------------------------------

@case("future_roundtrip", n=50_000, quick_n=25_000,
      cost=True, cost_n=(2000, 15000), cost_unit="future")
def future_roundtrip(loop, n):
    """In a coroutine: create_future(), set_result(), await it; ops/s."""

    async def main():
        create_future = loop.create_future
        t0 = perf_counter()
        for i in range(n):
            fut = create_future()
            fut.set_result(i)
            await fut
        return _elapsed_ops(n, t0)

    return loop.run_until_complete(main())


@case("sleep0_chain", n=100_000, quick_n=50_000,
      targets=[ratio_target("uvloop", 1.2)],
      cost=True, cost_n=(5000, 30000), cost_unit="sleep")
def sleep0_chain(loop, n):
    """One task awaiting asyncio.sleep(0) n times; ops/s."""

    async def main():
        sleep = asyncio.sleep
        t0 = perf_counter()
        for _ in range(n):
            await sleep(0)
        return _elapsed_ops(n, t0)

    return loop.run_until_complete(main())


@case("future_pingpong", n=50_000, quick_n=25_000,
      cost=True, cost_n=(2000, 10000), cost_unit="round trip")
def future_pingpong(loop, n):
    """Two tasks ping-pong through futures; round trips/s.

    Each round trip wakes the other task once in each direction (two task
    switches, two futures).
    """
    slot = []

    async def ponger():
        create_future = loop.create_future
        waiter = create_future()
        slot.append(waiter)
        while True:
            reply = await waiter
            if reply is None:
                return
            # Park the next waiter before waking the pinger.
            waiter = create_future()
            slot.append(waiter)
            reply.set_result(None)

    async def pinger():
        create_future = loop.create_future
        pong = loop.create_task(ponger())
        await asyncio.sleep(0)      # let ponger park its first waiter
        t0 = perf_counter()
        for _ in range(n):
            reply = create_future()
            slot.pop().set_result(reply)
            await reply
        res = _elapsed_ops(n, t0)
        slot.pop().set_result(None)
        await pong
        return res

    return loop.run_until_complete(pinger())


@case("gather_tasks", n=50_000, quick_n=25_000,
      metrics=[Metric("seconds", "s", higher_is_better=False)],
      cost=True, cost_n=(2000, 15000), cost_unit="task")
def gather_tasks(loop, n):
    """create_task() n trivial coroutines, then gather() them; seconds."""

    async def trivial():
        return None

    async def main():
        create_task = loop.create_task
        t0 = perf_counter()
        tasks = [create_task(trivial()) for _ in range(n)]
        await asyncio.gather(*tasks)
        return {"seconds": perf_counter() - t0}

    return loop.run_until_complete(main())


# -- timer accuracy ----------------------------------------------------------

OVERSHOOT_METRICS = [
    Metric("median_ms", "ms", higher_is_better=False, label="median ms"),
    Metric("p99_ms", "ms", higher_is_better=False, label="p99 ms"),
]
OVERSHOOT_DELAY = 0.001


def _overshoot(samples):
    samples = sorted(samples)
    k = len(samples)
    median = (samples[(k - 1) // 2] + samples[k // 2]) / 2
    p99 = samples[min(k - 1, max(0, -(-99 * k // 100) - 1))]  # nearest rank
    return {"median_ms": median * 1e3, "p99_ms": p99 * 1e3}


@case("timer_overshoot_sleep", n=300, quick_n=200,
      metrics=OVERSHOOT_METRICS,
      targets=[max_target(0.1, metric="median_ms")],
      cost=True, cost_n=(50, 250), cost_unit="sleep")
def timer_overshoot_sleep(loop, n):
    """n sequential asyncio.sleep(0.001): actual - requested; ms."""

    async def main():
        sleep = asyncio.sleep
        samples = []
        for _ in range(n):
            t0 = perf_counter()
            await sleep(OVERSHOOT_DELAY)
            samples.append(perf_counter() - t0 - OVERSHOOT_DELAY)
        return _overshoot(samples)

    return loop.run_until_complete(main())


@case("timer_overshoot_call_later", n=300, quick_n=200,
      metrics=OVERSHOOT_METRICS,
      targets=[max_target(0.1, metric="median_ms")],
      cost=True, cost_n=(50, 250), cost_unit="timer")
def timer_overshoot_call_later(loop, n):
    """Chain of n loop.call_later(0.001): actual - requested; ms."""
    samples = []
    t0 = 0.0

    def cb():
        nonlocal t0
        now = perf_counter()
        samples.append(now - t0 - OVERSHOOT_DELAY)
        if len(samples) < n:
            t0 = perf_counter()
            loop.call_later(OVERSHOOT_DELAY, cb)
        else:
            loop.stop()

    def start():
        nonlocal t0
        t0 = perf_counter()
        loop.call_later(OVERSHOOT_DELAY, cb)

    loop.call_soon(start)
    loop.run_forever()
    return _overshoot(samples)
