"""call_soon: ordering, snapshot semantics, args, context=, Handle API."""
import contextvars
import functools
import gc
import sys
import weakref

import pytest

from conftest import run_briefly

cv = contextvars.ContextVar("cv", default="default")


def test_call_soon_fifo_order(loop):
    calls = []
    for i in range(100):
        loop.call_soon(calls.append, i)
    run_briefly(loop)
    assert calls == list(range(100))


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(lambda: None)
    assert not h.cancelled()
    assert not hasattr(h, "when")
    run_briefly(loop)


def test_call_soon_positional_args(loop):
    got = []
    loop.call_soon(lambda *a: got.append(a), 1, "two", None)
    loop.call_soon(lambda: got.append(()))
    run_briefly(loop)
    assert got == [(1, "two", None), ()]


def test_call_soon_rejects_keyword_args(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, end="")


def test_callbacks_scheduled_during_iteration_run_next_iteration(loop):
    """Snapshot semantics: the ready queue is drained only up to its length
    at the start of the iteration."""
    events = []

    def first():
        events.append("first")
        loop.call_soon(events.append, "scheduled-by-first")

    loop.call_soon(first)
    loop.call_soon(events.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # stop() lets the current iteration finish; the callback that 'first'
    # scheduled belongs to the next iteration, so it has not run yet.
    assert events == ["first", "second"]
    run_briefly(loop)
    assert events == ["first", "second", "scheduled-by-first"]


def test_stop_runs_whole_current_iteration(loop):
    events = []
    loop.call_soon(loop.stop)
    loop.call_soon(events.append, "after-stop-same-iteration")
    loop.run_forever()
    assert events == ["after-stop-same-iteration"]


def test_self_rescheduling_callback_does_not_starve(loop):
    count = 0

    def again():
        nonlocal count
        count += 1
        loop.call_soon(again)

    fired = []

    def timer():
        fired.append(count)
        loop.stop()

    loop.call_soon(again)
    loop.call_later(0.001, timer)
    loop.run_forever()
    # The timer got its chance even though the ready queue is never empty.
    assert len(fired) == 1
    assert fired[0] >= 1


def test_call_soon_context_kwarg(loop):
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "in-ctx")
    seen = []
    loop.call_soon(lambda: seen.append(cv.get()), context=ctx)
    loop.call_soon(lambda: seen.append(cv.get()))
    run_briefly(loop)
    assert seen == ["in-ctx", "default"]


def test_call_soon_copies_current_context_by_default(loop):
    seen = []
    token = cv.set("caller")
    try:
        loop.call_soon(lambda: seen.append(cv.get()))
    finally:
        cv.reset(token)
    cv.set("changed-after-scheduling")
    try:
        run_briefly(loop)
    finally:
        cv.set("default")
    assert seen == ["caller"]


def test_callback_context_changes_are_isolated(loop):
    seen = []

    def setter():
        cv.set("set-in-callback")
        seen.append(cv.get())

    loop.call_soon(setter)
    loop.call_soon(lambda: seen.append(cv.get()))
    run_briefly(loop)
    assert seen == ["set-in-callback", "default"]
    assert cv.get() == "default"


def test_shared_context_changes_persist(loop):
    ctx = contextvars.copy_context()
    seen = []

    def setter():
        cv.set("shared")

    loop.call_soon(setter, context=ctx)
    loop.call_soon(lambda: seen.append(cv.get()), context=ctx)
    run_briefly(loop)
    assert seen == ["shared"]
    assert ctx[cv] == "shared"


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="Handle.get_context() is 3.12+")
def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(lambda: None, context=ctx)
    assert h.get_context() is ctx
    h2 = loop.call_soon(lambda: None)
    assert isinstance(h2.get_context(), contextvars.Context)
    assert h2.get_context() is not ctx
    run_briefly(loop)


def test_handle_cancel_prevents_call(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    loop.call_soon(calls.append, 2)
    h.cancel()
    assert h.cancelled()
    run_briefly(loop)
    assert calls == [2]


def test_cancel_twice_is_harmless(loop):
    h = loop.call_soon(lambda: None)
    h.cancel()
    h.cancel()
    assert h.cancelled()
    run_briefly(loop)


def test_cancel_from_earlier_callback_same_iteration(loop):
    calls = []
    handles = []
    loop.call_soon(lambda: handles[0].cancel())
    handles.append(loop.call_soon(calls.append, "cancelled"))
    loop.call_soon(calls.append, "kept")
    run_briefly(loop)
    assert calls == ["kept"]


def test_cancel_after_run_is_harmless(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    run_briefly(loop)
    h.cancel()
    assert calls == [1]


def test_cancel_releases_callback_and_args(loop):
    class Obj:
        def __call__(self):
            pass

    cb, arg = Obj(), Obj()
    cb_ref, arg_ref = weakref.ref(cb), weakref.ref(arg)
    h = loop.call_soon(cb, arg)
    del cb, arg
    h.cancel()
    gc.collect()
    assert cb_ref() is None
    assert arg_ref() is None
    run_briefly(loop)


def test_handle_released_after_run(loop):
    class Obj:
        def __call__(self):
            pass

    cb = Obj()
    ref = weakref.ref(cb)
    loop.call_soon(cb)
    del cb
    run_briefly(loop)
    gc.collect()
    assert ref() is None


def test_handle_repr_shows_callback(loop):
    def my_callback_name():
        pass

    h = loop.call_soon(my_callback_name)
    r = repr(h)
    assert r.startswith("<") and "Handle" in r
    assert "my_callback_name" in r
    h.cancel()
    assert "cancelled" in repr(h)
    run_briefly(loop)


def test_handle_repr_partial(loop):
    def target(a, b):
        pass

    h = loop.call_soon(functools.partial(target, 1), 2)
    assert "target" in repr(h)
    h.cancel()
    run_briefly(loop)


@pytest.mark.parametrize("bad", [42, None, "str"])
def test_call_soon_non_callable_type_error_in_debug(loop, bad):
    loop.set_debug(True)
    with pytest.raises(TypeError, match="callable"):
        loop.call_soon(bad)


def test_call_soon_coroutine_function_type_error_in_debug(loop):
    async def coro():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError, match="coroutine"):
        loop.call_soon(coro)


def test_call_soon_coroutine_object_type_error_in_debug(loop):
    async def coro():
        pass

    loop.set_debug(True)
    c = coro()
    try:
        with pytest.raises(TypeError):
            loop.call_soon(c)
    finally:
        c.close()


@pytest.mark.expect_handler_calls
def test_call_soon_non_callable_without_debug(loop):
    """Without debug asyncio accepts the value and reports the TypeError to
    the exception handler when the handle runs; a stricter loop may raise at
    call time.  Either way the loop keeps working."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    try:
        loop.call_soon(42)
    except TypeError:
        errors.append({"exception": TypeError("raised eagerly")})
    after = []
    loop.call_soon(after.append, "ok")
    run_briefly(loop)
    assert after == ["ok"]
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], TypeError)


def test_call_soon_closed_loop(new_loop):
    lp = new_loop()
    lp.close()
    with pytest.raises(RuntimeError):
        lp.call_soon(lambda: None)


def test_callback_return_value_ignored(loop):
    loop.call_soon(lambda: 12345)
    calls = []
    loop.call_soon(calls.append, 1)
    run_briefly(loop)
    assert calls == [1]


def test_builtin_and_bound_method_callbacks(loop):
    out = []
    loop.call_soon(out.append, "bound")
    loop.call_soon(functools.partial(out.append, "partial"))
    loop.call_soon(out.extend, ["a", "b"])
    run_briefly(loop)
    assert out == ["bound", "partial", "a", "b"]


def test_many_callbacks_in_one_iteration(loop):
    n = 50000
    counter = [0]

    def inc():
        counter[0] += 1

    for _ in range(n):
        loop.call_soon(inc)
    run_briefly(loop)
    assert counter[0] == n


def test_call_soon_context_none_means_current(loop):
    seen = []
    token = cv.set("current")
    try:
        loop.call_soon(lambda: seen.append(cv.get()), context=None)
    finally:
        cv.reset(token)
    run_briefly(loop)
    assert seen == ["current"]


def test_scheduling_methods_accept_keyword_arguments(loop):
    """asyncio's signatures are plain Python ones: the leading parameters
    can be passed by keyword."""
    got = []
    loop.call_soon(got.append, "soon")
    loop.call_later(delay=0, callback=lambda: got.append("later"))
    loop.call_at(when=loop.time(), callback=lambda: got.append("at"))
    loop.call_soon_threadsafe(callback=lambda: got.append("threadsafe"))
    loop.call_soon(callback=lambda: got.append("soon-kw"))
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert sorted(got) == ["at", "later", "soon", "soon-kw", "threadsafe"]
