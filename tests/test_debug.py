"""Debug mode: get/set_debug, slow callbacks, thread checks, ResourceWarning,
PYTHONASYNCIODEBUG."""
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import warnings

import pytest

from conftest import make_loop, run_briefly

HERE = os.path.dirname(os.path.abspath(__file__))


def test_debug_default_follows_dev_mode(loop):
    expected = sys.flags.dev_mode or bool(
        os.environ.get("PYTHONASYNCIODEBUG"))
    assert loop.get_debug() is expected


def test_set_get_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    assert "debug=True" in repr(loop)
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == pytest.approx(0.1)
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == pytest.approx(0.5)


def _asyncio_records(caplog, level=logging.WARNING):
    return [r for r in caplog.records
            if r.name == "asyncio" and r.levelno == level]


def test_slow_callback_logged_in_debug(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_callback_xyz():
        time.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback_xyz)
        run_briefly(loop)
    records = [r for r in _asyncio_records(caplog)
               if "slow_callback_xyz" in r.getMessage()]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert msg.startswith("Executing <")
    assert "took" in msg and msg.endswith("seconds")
    took = float(msg.rsplit("took", 1)[1].split()[0])
    assert took >= 0.05 - 0.001


def test_slow_timer_callback_logged_in_debug(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_timer_abc():
        time.sleep(0.03)
        loop.stop()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_later(0, slow_timer_abc)
        loop.run_forever()
    assert any("slow_timer_abc" in r.getMessage() and "took" in r.getMessage()
               for r in _asyncio_records(caplog))


def test_slow_callback_not_logged_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(time.sleep, 0.03)
        run_briefly(loop)
    assert not [r for r in caplog.records if "took" in r.getMessage()]


def test_fast_callback_not_logged_in_debug(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 5.0
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(lambda: None)
        run_briefly(loop)
    assert not [r for r in caplog.records if "took" in r.getMessage()]


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_other_thread_in_debug(loop, method):
    loop.set_debug(True)
    errors = []
    results = []

    def worker():
        try:
            if method == "call_soon":
                loop.call_soon(results.append, 1)
            elif method == "call_later":
                loop.call_later(0, results.append, 1)
            else:
                loop.call_at(loop.time(), results.append, 1)
        except RuntimeError as exc:
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    def start_worker():
        threads.append(threading.Thread(target=worker))
        threads[0].start()

    threads = []
    loop.call_soon(start_worker)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    threads[0].join()
    assert len(errors) == 1
    assert "thread" in str(errors[0]).lower()


def test_threadsafe_call_from_other_thread_in_debug_ok(loop):
    loop.set_debug(True)
    got = []

    def worker():
        loop.call_soon_threadsafe(lambda: (got.append(1), loop.stop()))

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    h = loop.call_later(10, loop.stop)
    loop.run_forever()
    t.join()
    h.cancel()
    assert got == [1]


def test_handle_repr_has_source_in_debug(loop):
    loop.set_debug(True)

    def some_cb():
        pass

    h = loop.call_soon(some_cb)
    r = repr(h)
    assert "created at" in r
    assert os.path.basename(__file__) in r
    run_briefly(loop)


def test_unclosed_loop_resource_warning(kind):
    lp = make_loop(kind)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del lp
        gc.collect()


def test_closed_loop_no_resource_warning(kind):
    lp = make_loop(kind)
    lp.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del lp
        gc.collect()


_CHILD = r"""
import asyncio, sys
kind = sys.argv[1]
if kind == "evpy":
    import evpy
    loop = evpy.new_event_loop()
    assert isinstance(loop, evpy.Loop), type(loop)
else:
    loop = asyncio.SelectorEventLoop()
print(loop.get_debug())
loop.close()
"""


def _child_debug(kind, env_extra, args=()):
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    env.update(env_extra)
    # The child must import the evpy this process tests (installed, or
    # built in place), not whatever the current directory holds.
    import evpy
    evpy_root = os.path.dirname(os.path.dirname(evpy.__file__))
    env["PYTHONPATH"] = evpy_root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, *args, "-c", _CHILD, kind],
        env=env, cwd=HERE, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pythonasynciodebug_env(kind):
    assert _child_debug(kind, {"PYTHONASYNCIODEBUG": "1"}) == "True"


def test_no_debug_by_default_in_child(kind):
    assert _child_debug(kind, {}) == "False"


def test_dev_mode_enables_debug(kind):
    assert _child_debug(kind, {}, ("-X", "dev")) == "True"


def test_slow_task_step_logged_in_debug(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_coro_name():
        time.sleep(0.03)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coro_name())
    msgs = [r.getMessage() for r in _asyncio_records(caplog)]
    assert any(m.startswith("Executing <Task") and "slow_coro_name" in m
               and "took" in m for m in msgs), msgs


@pytest.mark.expect_handler_calls
def test_exception_context_has_source_traceback_in_debug(loop):
    loop.set_debug(True)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    def bad():
        raise ValueError

    loop.call_soon(bad)
    run_briefly(loop)
    assert len(errors) == 1
    tb = errors[0].get("source_traceback")
    assert tb, "debug mode records where the handle was created"
    assert any(os.path.basename(__file__) in str(frame) for frame in tb)


def test_coroutine_origin_tracking_in_debug(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(True)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_no_coroutine_origin_tracking_without_debug(loop):
    loop.set_debug(False)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) == \
        sys.get_coroutine_origin_tracking_depth()


def test_set_debug_while_running(loop, caplog):
    loop.slow_callback_duration = 0.01

    def slow_after_enable():
        time.sleep(0.03)
        loop.stop()

    def enable():
        loop.set_debug(True)
        loop.call_soon(slow_after_enable)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(enable)
        loop.run_forever()
    assert loop.get_debug() is True
    assert any("slow_after_enable" in r.getMessage()
               for r in _asyncio_records(caplog))


def test_slow_callback_duration_accepts_int(loop):
    loop.slow_callback_duration = 1
    assert loop.slow_callback_duration == 1
