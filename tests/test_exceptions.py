"""Exception handler API and the default handler's logging."""
import asyncio
import gc
import logging

import pytest

from conftest import run_briefly


class MyError(Exception):
    pass


def test_default_handler_is_none(loop):
    assert loop.get_exception_handler() is None


def test_set_get_exception_handler(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("bad", [42, "handler", object()])
def test_set_exception_handler_non_callable(loop, bad):
    with pytest.raises(TypeError):
        loop.set_exception_handler(bad)
    assert loop.get_exception_handler() is None


@pytest.mark.expect_handler_calls
def test_call_exception_handler_invokes_handler(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    ctx = {"message": "hello", "extra": 1}
    loop.call_exception_handler(ctx)
    assert len(calls) == 1
    assert calls[0][0] is loop
    assert calls[0][1]["message"] == "hello"
    assert calls[0][1]["extra"] == 1


@pytest.mark.expect_handler_calls
def test_exception_in_callback_reported(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))

    def bad():
        raise MyError("boom")

    h = loop.call_soon(bad)
    run_briefly(loop)
    assert len(calls) == 1
    ctx = calls[0]
    assert isinstance(ctx["exception"], MyError)
    assert ctx["message"].startswith("Exception in callback")
    assert ctx["handle"] is h


@pytest.mark.expect_handler_calls
def test_exception_in_timer_reported(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))

    def bad():
        raise MyError("timer")

    h = loop.call_later(0, bad)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert len(calls) == 1
    assert isinstance(calls[0]["exception"], MyError)
    assert calls[0]["handle"] is h


@pytest.mark.expect_handler_calls
def test_exception_in_callback_does_not_stop_loop(loop):
    errors = []
    calls = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    def bad():
        raise MyError

    loop.call_soon(bad)
    loop.call_soon(calls.append, "same-iteration")
    loop.call_soon(bad)
    loop.call_later(0.001, calls.append, "later")
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert calls == ["same-iteration", "later"]
    assert len(errors) == 2


@pytest.mark.expect_handler_calls
def test_custom_base_exception_reported_not_propagated(loop):
    class MyBase(BaseException):
        pass

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    def bad():
        raise MyBase

    loop.call_soon(bad)
    run_briefly(loop)
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], MyBase)


@pytest.mark.expect_handler_calls
def test_default_handler_logs_exception(loop, caplog):
    def bad():
        raise MyError("logged boom")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert "Exception in callback" in rec.getMessage()
    assert "handle: <" in rec.getMessage()
    assert rec.exc_info is not None
    assert rec.exc_info[0] is MyError
    assert "logged boom" in caplog.text


def test_default_exception_handler_direct(loop, caplog):
    try:
        raise MyError("direct")
    except MyError as exc:
        err = exc
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({
            "message": "custom message",
            "exception": err,
            "custom_key": "custom_value",
        })
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert "custom message" in msg
    assert "custom_key" in msg
    assert "custom_value" in msg
    assert records[0].exc_info[1] is err


def test_default_exception_handler_without_message(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert "Unhandled exception in event loop" in records[0].getMessage()


@pytest.mark.expect_handler_calls
def test_call_exception_handler_without_handler_logs(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "via call_exception_handler"})
    assert "via call_exception_handler" in caplog.text


@pytest.mark.expect_handler_calls
def test_custom_handler_can_delegate_to_default(loop, caplog):
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "delegated"})
    assert seen == ["delegated"]
    assert "delegated" in caplog.text


@pytest.mark.expect_handler_calls
def test_handler_that_raises_is_logged(loop, caplog):
    def handler(lp, ctx):
        raise RuntimeError("handler failed")

    loop.set_exception_handler(handler)

    def bad():
        raise MyError("original")

    calls = []
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        loop.call_soon(calls.append, "still running")
        run_briefly(loop)
    assert calls == ["still running"]
    assert "Unhandled error in exception handler" in caplog.text
    assert "handler failed" in caplog.text


@pytest.mark.expect_handler_calls
def test_handler_that_raises_from_call_exception_handler(loop, caplog):
    def handler(lp, ctx):
        raise RuntimeError("handler failed directly")

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        # Must not raise.
        loop.call_exception_handler({"message": "m"})
    assert "Unhandled error in exception handler" in caplog.text


@pytest.mark.expect_handler_calls
def test_handler_raising_keyboard_interrupt_propagates(loop):
    def handler(lp, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)
    with pytest.raises(KeyboardInterrupt):
        loop.call_exception_handler({"message": "m"})


@pytest.mark.expect_handler_calls
def test_task_exception_never_retrieved(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))

    async def fail():
        raise MyError("unretrieved")

    task = loop.create_task(fail())
    run_briefly(loop, 2)
    assert task.done()
    del task
    gc.collect()
    assert len(calls) == 1
    assert "never retrieved" in calls[0]["message"]
    assert isinstance(calls[0]["exception"], MyError)


@pytest.mark.expect_handler_calls
def test_future_exception_never_retrieved(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    fut = loop.create_future()
    fut.set_exception(MyError("fut"))
    del fut
    gc.collect()
    assert len(calls) == 1
    assert "never retrieved" in calls[0]["message"]


@pytest.mark.expect_handler_calls
def test_exception_handler_runs_in_callback_context(loop):
    """The handler is called synchronously, inside the failing iteration."""
    order = []
    loop.set_exception_handler(lambda lp, ctx: order.append("handler"))

    def bad():
        order.append("bad")
        raise MyError

    loop.call_soon(bad)
    loop.call_soon(order.append, "next")
    run_briefly(loop)
    assert order == ["bad", "handler", "next"]


@pytest.mark.expect_handler_calls
def test_exception_in_done_callback_reported(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    fut = loop.create_future()

    def cb(f):
        raise MyError("done cb")

    fut.add_done_callback(cb)
    fut.set_result(1)
    run_briefly(loop)
    assert len(calls) == 1
    assert isinstance(calls[0]["exception"], MyError)


@pytest.mark.expect_handler_calls
def test_exception_in_callback_scheduled_by_task(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))

    async def main():
        loop.call_soon(lambda: 1 / 0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert len(calls) == 1
    assert isinstance(calls[0]["exception"], ZeroDivisionError)
