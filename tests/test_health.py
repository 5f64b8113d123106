"""Loop health (evpy only: asyncio's loop has no such API): statistics,
lag histograms, Prometheus text, the blocking detector, and naming of slow
callbacks (protocol methods included) in debug mode."""
import asyncio
import logging
import math
import re
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.evpy_only


def _sleep_cb():
    time.sleep(0.3)  # BLOCKING-LINE-CB


async def _blocking_coro():
    await asyncio.sleep(0)
    time.sleep(0.3)  # BLOCKING-LINE-CORO
    return 7


def _line_of(marker):
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "time.sleep" in line:
                return i
    raise AssertionError(marker)


# -- statistics ---------------------------------------------------------------

def test_stats_count_callbacks(kind, loop):
    before = loop.stats()
    n = 1000
    for _ in range(n):
        loop.call_soon(lambda: None)
    h = loop.call_soon(lambda: None)
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    after = loop.stats()
    # n callbacks + loop.stop; the cancelled one is not run.
    assert after.callbacks - before.callbacks == n + 1
    assert after.iterations > before.iterations
    assert after.io_events == before.io_events
    assert after.ready == 0


def test_stats_timers(kind, loop):
    fired = []
    for i in range(5):
        loop.call_later(0.001 * i, fired.append, i)
    cancelled = [loop.call_later(10, fired.append, -1) for _ in range(3)]
    for h in cancelled:
        h.cancel()
    pending = loop.call_later(10, fired.append, -2)
    loop.run_until_complete(asyncio.sleep(0.05))
    st = loop.stats()
    assert fired == [0, 1, 2, 3, 4]
    # + the timer asyncio.sleep() itself scheduled
    assert st.timers_scheduled == 5 + 3 + 1 + 1
    assert st.timers_fired == 5 + 1
    assert st.timers_cancelled == 3
    assert st.timers_pending == 1
    assert st.timer_lag.count == st.timers_fired
    assert sum(st.timer_lag.counts) == st.timer_lag.count
    assert st.timer_lag.sum >= 0
    pending.cancel()


def test_stats_time_accounting(kind, loop):
    loop.run_until_complete(asyncio.sleep(0.1))

    def busy():
        time.sleep(0.05)

    loop.call_soon(busy)
    loop.call_soon(busy)
    loop.call_soon(loop.stop)
    loop.run_forever()
    st = loop.stats()
    assert st.wait_time >= 0.08          # the sleep(0.1) waited
    assert st.busy_time >= 0.09          # the two busy callbacks
    assert abs(st.run_time - st.wait_time - st.busy_time) < 1e-6
    assert st.run_time >= 0.18


def test_timer_lag_shows_blocking(kind, loop):
    loop.call_later(0.01, lambda: None)
    loop.call_soon(time.sleep, 0.1)
    loop.run_until_complete(asyncio.sleep(0.15))
    st = loop.stats()
    # the 10 ms timer ran ~90 ms late
    assert st.timer_lag.count >= 1
    late = [le for le, acc in st.timer_lag.cumulative()]
    assert st.timer_lag.quantile(1.0) >= 0.05, (late, st.timer_lag)


def test_slowest_lone_callback_after_wait(kind, loop):
    # A callback that runs alone right after a wait is timed always-on.
    async def main():
        await asyncio.sleep(0.01)
        loop.call_later(0.01, _sleep_cb)
        await asyncio.sleep(0.5)

    loop.run_until_complete(main())
    st = loop.stats()
    assert st.slowest, st
    top = st.slowest[0]
    assert top.duration >= 0.29
    assert "_sleep_cb" in top.what and "test_health.py" in top.what
    assert not st.detailed


def test_detailed_mode(kind, loop):
    loop.set_stats_detail(True, slow_floor=0.01)
    try:
        def quick():
            pass

        def slowish():
            time.sleep(0.03)

        for _ in range(50):
            loop.call_soon(quick)
        loop.call_soon(slowish)
        loop.call_soon(loop.stop)
        loop.run_forever()
        st = loop.stats()
        assert st.detailed
        assert st.callback_time.count == 52
        assert st.callback_lag.count == 52
        # slowish delayed loop.stop by its 30 ms
        assert st.callback_lag.quantile(1.0) >= 0.025
        assert st.callback_time.sum >= 0.03
        assert [s for s in st.slowest if "slowish" in s.what]
        assert not [s for s in st.slowest if "quick" in s.what]
    finally:
        loop.set_stats_detail(False)
    assert not loop.stats().detailed


def test_stats_as_dict(kind, loop):
    import json
    loop.run_until_complete(asyncio.sleep(0))
    d = loop.stats().as_dict()
    json.dumps(d)
    assert d["callbacks"] >= 1


# -- Prometheus ---------------------------------------------------------------

_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r' (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """A strict little parser of the text exposition format: returns
    {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    assert text.endswith("\n")
    families = {}
    current = None
    for line in text.splitlines():
        assert line.strip() == line and line, repr(line)
        if line.startswith("# HELP "):
            name, doc = line[7:].split(" ", 1)
            families.setdefault(name, {"samples": []})["help"] = doc
            continue
        if line.startswith("# TYPE "):
            name, typ = line[7:].split(" ")
            assert typ in ("counter", "gauge", "histogram", "summary",
                           "untyped")
            fam = families.setdefault(name, {"samples": []})
            assert "type" not in fam, "duplicate TYPE for " + name
            fam["type"] = typ
            current = name
            continue
        assert not line.startswith("#")
        m = _SAMPLE.match(line)
        assert m, line
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        base = current
        assert name == base or (
            families[base]["type"] == "histogram"
            and name in (base + "_bucket", base + "_sum", base + "_count")
        ), (name, base)
        value = float(value)  # accepts +Inf
        families[base]["samples"].append(
            (name, dict(_LABEL.findall(labels)), value))
    return families


def check_histograms(families):
    for name, fam in families.items():
        assert "help" in fam and "type" in fam, name
        if fam["type"] != "histogram":
            continue
        series = {}
        for sname, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items()
                               if k != "le"))
            series.setdefault(key, {"buckets": []})
            if sname.endswith("_bucket"):
                series[key]["buckets"].append((float(labels["le"]), value))
            else:
                series[key][sname.rsplit("_", 1)[1]] = value
        assert series, name
        for key, s in series.items():
            les = [le for le, _ in s["buckets"]]
            assert les == sorted(les) and les[-1] == math.inf, les
            counts = [c for _, c in s["buckets"]]
            assert counts == sorted(counts), (name, key, counts)
            assert counts[-1] == s["count"], (name, key)
            assert "sum" in s


def test_prometheus_text_parses(kind, loop):
    loop.call_later(0.001, lambda: None)
    loop.call_soon(time.sleep, 0.02)
    loop.run_until_complete(asyncio.sleep(0.03))
    text = __import__("evpy").health.prometheus_text(
        loop, labels={"loop": 'main "1"\\x'})
    fams = parse_prometheus(text)
    check_histograms(fams)
    cb = fams["evpy_loop_callbacks_total"]
    assert cb["type"] == "counter"
    (_, labels, value), = cb["samples"]
    assert labels == {"loop": 'main \\"1\\"\\\\x'}
    assert value == loop.stats().callbacks
    lag = fams["evpy_loop_lag_seconds"]
    kinds = {lab["kind"] for _, lab, _ in lag["samples"]}
    assert kinds == {"timer", "callback"}
    timer_count = [v for n, lab, v in lag["samples"]
                   if n.endswith("_count") and lab["kind"] == "timer"]
    assert timer_count == [loop.stats().timer_lag.count]
    assert timer_count[0] >= 2


def test_prometheus_several_loops(kind, new_loop):
    from evpy import health
    a, b = new_loop(), new_loop()
    a.run_until_complete(asyncio.sleep(0))
    b.run_until_complete(asyncio.sleep(0))
    text = health.prometheus_text((a, {"loop": "a"}),
                                  (b.stats(), {"loop": "b"}))
    fams = parse_prometheus(text)
    check_histograms(fams)
    assert len(fams["evpy_loop_iterations_total"]["samples"]) == 2
    a.close()
    b.close()


# -- blocking detector --------------------------------------------------------

class _Hook:
    def __init__(self):
        self.calls = []
        self.done = threading.Event()

    def __call__(self, incident):
        self.calls.append((incident.ended, incident))
        if incident.ended:
            self.done.set()


def test_blocking_callback_reported_with_stack(kind, loop, caplog):
    hook = _Hook()
    det = loop.enable_blocking_detector(0.1, hook=hook)
    try:
        with caplog.at_level(logging.WARNING, logger="evpy"):
            loop.call_soon(_sleep_cb)
            loop.run_until_complete(asyncio.sleep(0.15))
            assert hook.done.wait(2)
    finally:
        loop.disable_blocking_detector()
    assert not det.running
    assert [e for e, _ in hook.calls] == [False, True]
    incident = hook.calls[0][1]
    assert incident is hook.calls[1][1]
    line = _line_of("BLOCKING-LINE-CB")
    last = incident.stack[-1]
    assert last.name == "_sleep_cb" and last.lineno == line
    assert "time.sleep(0.3)" in last.line
    assert incident.blocking_line.endswith(
        f"test_health.py:{line} in _sleep_cb")
    assert 0.2 <= incident.duration <= 0.45
    msgs = [r.getMessage() for r in caplog.records if r.name == "evpy"]
    assert len(msgs) == 2, msgs
    assert "still running" in msgs[0] and "time.sleep(0.3)" in msgs[0]
    assert "ended" in msgs[1]
    st = loop.stats()
    assert st.blocking_incidents == 1
    assert st.recent_blocking[-1] is incident


def test_blocking_coroutine_reported_with_frame(kind, loop):
    hook = _Hook()
    loop.enable_blocking_detector(0.1, hook=hook, log=False)
    try:
        task = loop.create_task(_blocking_coro(), name="blocky")
        assert loop.run_until_complete(task) == 7
        loop.run_until_complete(asyncio.sleep(0.1))
        assert hook.done.wait(2)
    finally:
        loop.disable_blocking_detector()
    incident = hook.calls[0][1]
    names = [f.name for f in incident.stack]
    assert names[0] == "_blocking_coro", names
    assert incident.stack[-1].lineno == _line_of("BLOCKING-LINE-CORO")
    assert "blocky" in (incident.task or "")
    assert "_blocking_coro" in incident.callback


def test_no_report_for_healthy_load(kind, loop, caplog):
    hook = _Hook()
    loop.enable_blocking_detector(0.05, hook=hook)

    async def healthy():
        # busy but yielding: many short callbacks and timers for ~0.4 s
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            t = time.monotonic()
            while time.monotonic() - t < 0.005:
                pass
            await asyncio.sleep(0)
            await asyncio.sleep(0.001)

    try:
        with caplog.at_level(logging.WARNING, logger="evpy"):
            loop.run_until_complete(healthy())
            # and an idle loop
            loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        loop.disable_blocking_detector()
    assert hook.calls == []
    assert not [r for r in caplog.records if r.name == "evpy"]
    assert loop.stats().blocking_incidents == 0


def test_detector_stopped_by_close(kind, new_loop):
    lp = new_loop()
    det = lp.enable_blocking_detector(0.1)
    assert det.running
    lp.close()
    assert not det.running
    with pytest.raises(RuntimeError):
        lp.enable_blocking_detector(0.1)


def test_detector_replaced_and_bad_threshold(kind, loop):
    d1 = loop.enable_blocking_detector(0.2)
    d2 = loop.enable_blocking_detector(0.1)
    assert not d1.running and d2.running
    loop.disable_blocking_detector()
    assert not d2.running
    with pytest.raises(ValueError):
        loop.enable_blocking_detector(0)


def test_hook_error_is_logged(kind, loop, caplog):
    def bad_hook(incident):
        raise ZeroDivisionError

    loop.enable_blocking_detector(0.1, hook=bad_hook, log=False)
    try:
        with caplog.at_level(logging.ERROR, logger="evpy"):
            loop.call_soon(time.sleep, 0.25)
            loop.run_until_complete(asyncio.sleep(0.15))
    finally:
        loop.disable_blocking_detector()
    assert any("blocking detector hook" in r.getMessage()
               for r in caplog.records)


# -- slow-callback naming -----------------------------------------------------

class _SlowProto(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        time.sleep(0.06)
        self.transport.close()


def test_debug_slow_io_names_protocol_method(kind, loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    a, b = socket.socketpair()
    try:
        async def main():
            tr, pr = await loop.connect_accepted_socket(_SlowProto, a)
            b.sendall(b"x")
            for _ in range(100):
                if tr.is_closing():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.run_until_complete(main())
    finally:
        b.close()
    msgs = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert any("_SlowProto.data_received() at" in m and "test_health.py:" in m
               for m in msgs), msgs
    # and the always-on table names it the same way
    assert any("_SlowProto.data_received" in s.what
               for s in loop.stats().slowest)


def test_describe_entry_names(kind, loop):
    import functools
    from evpy import _format

    def f(x):
        pass

    h = loop.call_soon(functools.partial(f, 1))
    text = _format.describe_entry(h, 0)
    assert "f() at" in text and "test_health.py:" in text
    h.cancel()
    text = _format.describe_entry(h, 0)  # no callback any more
    assert "Handle" in text
