"""add_signal_handler / remove_signal_handler."""
import asyncio
import os
import signal
import threading

import pytest

from conftest import run_briefly

FAILSAFE = 10.0


@pytest.fixture
def safety_net():
    """Catch SIGUSR1/SIGUSR2 in Python before the loop takes them over, so a
    loop that fails to install its handler fails the test instead of
    killing the test process.  Records what it caught."""
    caught = []

    def net(signum, frame):
        caught.append(signum)

    saved = {}
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        saved[signum] = signal.signal(signum, net)
    yield caught
    for signum, old in saved.items():
        # Leave anything else in place so the leak guard reports it.
        if signal.getsignal(signum) is net:
            signal.signal(signum, old)


def _kill_self(signum):
    os.kill(os.getpid(), signum)


def test_signal_handler_called(loop, safety_net):
    got = []

    def handler(*args):
        got.append(args)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 1)
    loop.call_soon(_kill_self, signal.SIGUSR1)
    h = loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    h.cancel()
    assert got == [("a", 1)]
    assert safety_net == []
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_handler_runs_in_loop_not_in_signal_context(loop, safety_net):
    """The callback is run by the loop, as a normal callback, after the
    signal arrived (not synchronously inside os.kill)."""
    events = []

    def handler():
        events.append(("handler", asyncio.get_running_loop() is loop))
        loop.stop()

    def sender():
        _kill_self(signal.SIGUSR1)
        events.append("after-kill")

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(sender)
    h = loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    h.cancel()
    assert events == ["after-kill", ("handler", True)]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_wakes_blocked_loop(loop, safety_net):
    got = []

    def handler():
        got.append(True)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    timer = threading.Timer(0.02, _kill_self, (signal.SIGUSR1,))
    timer.start()
    h = loop.call_later(FAILSAFE, loop.stop)
    try:
        loop.run_forever()
    finally:
        timer.join()
        h.cancel()
    assert got == [True]
    assert safety_net == []
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_before_run_is_delivered_on_run(loop, safety_net):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "late")
    _kill_self(signal.SIGUSR1)
    assert got == []

    def check():
        if got:
            loop.stop()
        else:
            loop.call_soon(check)

    h = loop.call_later(FAILSAFE, loop.stop)
    loop.call_soon(check)
    loop.run_forever()
    h.cancel()
    assert got == ["late"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_two_signals(loop, safety_net):
    got = []

    def handler(name):
        got.append(name)
        if len(got) == 2:
            loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, handler, "usr2")
    loop.call_soon(_kill_self, signal.SIGUSR1)
    loop.call_later(0.005, _kill_self, signal.SIGUSR2)
    h = loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    h.cancel()
    assert sorted(got) == ["usr1", "usr2"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR2) is True


def test_replace_signal_handler(loop, safety_net):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append("new"),
                                                     loop.stop()))
    loop.call_soon(_kill_self, signal.SIGUSR1)
    h = loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    h.cancel()
    assert got == ["new"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


@pytest.mark.expect_handler_calls
def test_exception_in_signal_handler_reported(loop, safety_net):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: (errors.append(ctx),
                                                lp.stop()))

    def bad():
        raise ZeroDivisionError("sig")

    loop.add_signal_handler(signal.SIGUSR1, bad)
    loop.call_soon(_kill_self, signal.SIGUSR1)
    h = loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    h.cancel()
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    loop.remove_signal_handler(signal.SIGUSR1)


def test_remove_signal_handler_return_values(loop, safety_net):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_restores_default_disposition(loop, safety_net):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL,
                                                    signal.SIG_IGN)
    loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_restores_default_int_handler(loop):
    saved = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        assert loop.remove_signal_handler(signal.SIGINT) is True
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, saved)


def test_last_handler_removed_clears_wakeup_fd(loop, safety_net):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.remove_signal_handler(signal.SIGUSR1)
    # One handler left: the wakeup fd is still in use.
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    assert fd != -1
    loop.remove_signal_handler(signal.SIGUSR2)
    assert signal.set_wakeup_fd(-1) == -1


def test_close_removes_signal_handlers(new_loop, safety_net):
    lp = new_loop()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal_runtime_error(loop, sig):
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(sig, lambda: None)
    assert loop.remove_signal_handler(sig) is False


@pytest.mark.parametrize("sig", [0, -1, 100000])
def test_invalid_signal_value_error(loop, sig):
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", ["SIGUSR1", 10.0, None])
def test_non_int_signal_type_error(loop, sig):
    with pytest.raises(TypeError):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(TypeError):
        loop.remove_signal_handler(sig)


def test_coroutine_callback_type_error(loop):
    async def coro():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro)
    c = coro()
    try:
        with pytest.raises(TypeError):
            loop.add_signal_handler(signal.SIGUSR1, c)
    finally:
        c.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_add_signal_handler_closed_loop(new_loop):
    lp = new_loop()
    lp.close()
    with pytest.raises(RuntimeError):
        lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_add_signal_handler_from_non_main_thread(loop):
    errors = []

    def worker():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)
        except BaseException as exc:  # noqa: B902 - reported below
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError), errors[0]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_signal_handler_with_handle_cancel_semantics(loop, safety_net):
    """Removing the handler before the loop processes a pending signal means
    the callback is not called."""
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    loop.remove_signal_handler(signal.SIGUSR1)
    # Now the safety net is gone too (disposition is SIG_DFL); reinstall it.
    signal.signal(signal.SIGUSR1, lambda s, f: got.append("net"))
    try:
        _kill_self(signal.SIGUSR1)
        run_briefly(loop, 3)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert got == ["net"]
