"""Memory stays flat over many schedule/run/cancel cycles.

The asyncio run uses smaller counts (pure Python is slower); evpy runs the
full million.  After a warm-up, traced Python memory and RSS must not grow
by more than a generous bound: a leak of even a few bytes per cycle over a
million cycles blows far past it.
"""
import gc
import os
import tracemalloc

import pytest

from conftest import ASYNCIO_DEBUG, make_loop, run_briefly

BATCH = 10000
# Total cycles per kind (the warm-up batches are extra).
CYCLES = {"evpy": 1000000, "asyncio": 200000}
TRACED_CYCLES = {"evpy": 200000, "asyncio": 100000}
WARMUP_BATCHES = 3
RSS_BOUND = 16 * 1024 * 1024
TRACED_BOUND = 1024 * 1024

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _noop(*args):
    pass


def _cycle_call_soon(loop):
    for _ in range(BATCH):
        loop.call_soon(_noop, 1)
    run_briefly(loop)


def _cycle_call_later_cancel(loop):
    handles = [loop.call_later(3600, _noop, 1) for _ in range(BATCH)]
    for h in handles:
        h.cancel()
    run_briefly(loop)


def _cycle_call_later_fire(loop):
    for _ in range(BATCH // 2):
        loop.call_later(0, _noop)
        loop.call_at(0, _noop, 2)
    run_briefly(loop, 2)


def _cycle_call_soon_cancel(loop):
    handles = [loop.call_soon(_noop) for _ in range(BATCH)]
    for h in handles[::2]:
        h.cancel()
    run_briefly(loop)


def _cycle_futures(loop):
    futs = []
    for i in range(BATCH):
        f = loop.create_future()
        f.add_done_callback(_noop)
        futs.append(f)
    for i, f in enumerate(futs):
        if i % 3 == 0:
            f.cancel()
        else:
            f.set_result(i)
    run_briefly(loop)


def _cycle_threadsafe(loop):
    for _ in range(BATCH):
        loop.call_soon_threadsafe(_noop)
    run_briefly(loop)


CYCLE_FUNCS = {
    "call_soon": _cycle_call_soon,
    "call_soon_cancel": _cycle_call_soon_cancel,
    "call_later_cancel": _cycle_call_later_cancel,
    "call_later_fire": _cycle_call_later_fire,
    "futures": _cycle_futures,
    "threadsafe": _cycle_threadsafe,
}


def _n_batches(kind, what, table):
    n = table[kind] // BATCH
    if what == "futures":
        # 100k futures is the target; keep the cost bounded.
        n = min(n, max(1, 100000 // BATCH))
    return n


# AddressSanitizer keeps freed memory in quarantine, so RSS grows on any
# loop; the tracemalloc tests above still run under it.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
# asyncio's debug mode keeps a stack per handle and future: memory grows
# with what is pending on any loop, and a million cycles take minutes.
DEBUG_REASON = "memory bounds are for asyncio's normal mode"


@pytest.mark.skipif(UNDER_ASAN, reason="RSS is not meaningful under ASan")
@pytest.mark.skipif(ASYNCIO_DEBUG, reason=DEBUG_REASON)
@pytest.mark.parametrize("what", sorted(CYCLE_FUNCS))
def test_rss_flat(loop, kind, what):
    cycle = CYCLE_FUNCS[what]
    for _ in range(WARMUP_BATCHES):
        cycle(loop)
    gc.collect()
    before = _rss()
    for _ in range(_n_batches(kind, what, CYCLES)):
        cycle(loop)
    gc.collect()
    growth = _rss() - before
    assert growth < RSS_BOUND, "RSS grew by {} bytes".format(growth)


@pytest.mark.skipif(ASYNCIO_DEBUG, reason=DEBUG_REASON)
@pytest.mark.parametrize("what", sorted(CYCLE_FUNCS))
def test_traced_memory_flat(loop, kind, what):
    cycle = CYCLE_FUNCS[what]
    tracemalloc.start()
    try:
        for _ in range(WARMUP_BATCHES):
            cycle(loop)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(_n_batches(kind, what, TRACED_CYCLES)):
            cycle(loop)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = after - before
    assert growth < TRACED_BOUND, "traced memory grew by {} bytes".format(
        growth)


def _loop_cycle(kind):
    lp = make_loop(kind)
    try:
        lp.call_soon(_noop)
        run_briefly(lp)
    finally:
        lp.close()


def test_many_loops_created_and_closed(kind):
    """Creating and closing loops leaks neither fds nor memory."""
    for _ in range(20):
        _loop_cycle(kind)
    gc.collect()
    before = _rss()
    for _ in range(300):
        _loop_cycle(kind)
    gc.collect()
    assert _rss() - before < RSS_BOUND
