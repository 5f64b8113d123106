"""Loop types, evpy.EventLoopPolicy, evpy.run, asyncio.run / Runner."""
import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import warnings

import pytest

from conftest import make_loop


# Python 3.14 deprecates the policy API (removed in 3.16): the tests that
# exercise it filter asyncio's DeprecationWarning themselves (evpy adds no
# warning of its own: test_policy_adds_no_warning).
policy_api = pytest.mark.filterwarnings(
    r"ignore:'asyncio\.\w*[Pp]olicy\w*' is deprecated:DeprecationWarning")


@contextlib.contextmanager
def policy(pol):
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(pol)
    try:
        yield pol
    finally:
        asyncio.set_event_loop_policy(old)
        asyncio.set_event_loop(None)


def _factory(kind):
    return lambda: make_loop(kind)


async def _running_loop_type():
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


# ---------------------------------------------------------------- both loops

def test_loop_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_runner_with_loop_factory(kind):
    with asyncio.Runner(loop_factory=_factory(kind)) as runner:
        lp = runner.get_loop()
        assert runner.run(_running_loop_type()) is type(lp)
        assert runner.run(asyncio.sleep(0, "again")) == "again"
    assert lp.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_loop_factory(kind):
    probe = make_loop(kind)
    expected = type(probe)
    probe.close()
    assert asyncio.run(_running_loop_type(),
                       loop_factory=_factory(kind)) is expected


def test_set_event_loop_get_event_loop(loop):
    asyncio.set_event_loop(loop)
    try:
        assert asyncio.get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)


def test_asyncio_run_finalizes_asyncgens_and_executor(kind):
    log = []
    threads = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("finalized")

    async def main():
        g = agen()
        await g.__anext__()
        threads.append(await asyncio.get_running_loop().run_in_executor(
            None, threading.current_thread))
        main.g = g  # keep it alive past main()

    with asyncio.Runner(loop_factory=_factory(kind)) as runner:
        runner.run(main())
    assert log == ["finalized"]
    assert not threads[0].is_alive()


# -------------------------------------------------------------- evpy only

@pytest.mark.evpy_only
def test_evpy_loop_type(loop, evpy_mod):
    assert isinstance(loop, evpy_mod.Loop)
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert issubclass(evpy_mod.Loop, asyncio.AbstractEventLoop)
    # evpy.Loop subclasses the C type from evpy._core.
    bases = evpy_mod.Loop.__mro__[1:]
    assert any(b.__module__.startswith("evpy._core") for b in bases), bases


@pytest.mark.evpy_only
def test_policy_alias(kind, evpy_mod):
    assert evpy_mod.Policy is evpy_mod.EventLoopPolicy


@pytest.mark.evpy_only
@policy_api
def test_policy_new_event_loop(kind, evpy_mod):
    with policy(evpy_mod.EventLoopPolicy()):
        lp = asyncio.new_event_loop()
        try:
            assert isinstance(lp, evpy_mod.Loop)
        finally:
            lp.close()


@pytest.mark.evpy_only
@policy_api
def test_policy_is_asyncio_policy(kind, evpy_mod):
    assert isinstance(evpy_mod.EventLoopPolicy(),
                      asyncio.AbstractEventLoopPolicy)


@pytest.mark.evpy_only
@policy_api
def test_policy_asyncio_run(kind, evpy_mod):
    with policy(evpy_mod.EventLoopPolicy()):
        assert issubclass(asyncio.run(_running_loop_type()), evpy_mod.Loop)


@pytest.mark.evpy_only
@policy_api
def test_policy_set_and_get_event_loop(kind, evpy_mod):
    with policy(evpy_mod.EventLoopPolicy()):
        lp = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(lp)
            assert asyncio.get_event_loop() is lp
        finally:
            asyncio.set_event_loop(None)
            lp.close()


@pytest.mark.evpy_only
def test_policy_adds_no_warning(kind, evpy_mod):
    # Installing evpy's policy warns exactly as asyncio's own policy does
    # (3.14+: asyncio's DeprecationWarnings; before: nothing), and using
    # the loop it makes warns about nothing.
    def warnings_of(make_policy):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pol = make_policy()
            old = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(pol)
            try:
                lp = asyncio.new_event_loop()
                lp.run_until_complete(asyncio.sleep(0))
                lp.close()
            finally:
                asyncio.set_event_loop_policy(old)
        return [(w.category, str(w.message)) for w in caught]

    base = evpy_mod.EventLoopPolicy.__mro__[1]
    assert warnings_of(evpy_mod.EventLoopPolicy) == warnings_of(base)


@pytest.mark.evpy_only
def test_evpy_run(kind, evpy_mod):
    async def main():
        lp = asyncio.get_running_loop()
        return type(lp), lp.get_debug(), await asyncio.sleep(0, "result")

    typ, debug, result = evpy_mod.run(main())
    assert issubclass(typ, evpy_mod.Loop)
    assert result == "result"
    assert debug is (sys.flags.dev_mode
                     or bool(os.environ.get("PYTHONASYNCIODEBUG")))


@pytest.mark.evpy_only
def test_evpy_run_debug(kind, evpy_mod):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert evpy_mod.run(main(), debug=True) is True
    assert evpy_mod.run(main(), debug=False) is False


@pytest.mark.evpy_only
def test_evpy_run_propagates_exception(kind, evpy_mod):
    async def main():
        raise LookupError("from evpy.run")

    with pytest.raises(LookupError):
        evpy_mod.run(main())


@pytest.mark.evpy_only
def test_evpy_run_closes_loop_and_cancels_tasks(kind, evpy_mod):
    seen = {}

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    async def main():
        seen["loop"] = asyncio.get_running_loop()
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    evpy_mod.run(main())
    assert seen["loop"].is_closed()
    assert seen.get("cancelled") is True


@pytest.mark.evpy_only
def test_evpy_run_inside_running_loop(loop, evpy_mod):
    """Like asyncio.run(): fail fast, before creating a loop, and leave no
    coroutine (such as shutdown_asyncgens()) un-awaited behind."""
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError,
                               match="cannot be called from a running"):
                evpy_mod.run(coro)
        finally:
            coro.close()
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert loop.run_until_complete(main()) == "ok"
        gc.collect()
    never_awaited = [str(w.message) for w in caught
                     if "never awaited" in str(w.message)]
    assert never_awaited == []


@pytest.mark.evpy_only
def test_evpy_run_non_coroutine(kind, evpy_mod):
    with pytest.raises((TypeError, ValueError)):
        evpy_mod.run(42)


@pytest.mark.evpy_only
@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_evpy_factory(kind, evpy_mod):
    typ = asyncio.run(_running_loop_type(),
                      loop_factory=evpy_mod.new_event_loop)
    assert issubclass(typ, evpy_mod.Loop)


def test_runner_ctrl_c_cancels_main_task(kind):
    """asyncio.Runner's SIGINT handling: the first Ctrl-C cancels the main
    task and wakes the loop (from a Python signal handler while the loop is
    blocked), and run() raises KeyboardInterrupt.  Runner only installs
    its handler over Python's default one, which a process started in the
    background by a shell without job control does not have (SIGINT is
    ignored there): the test puts the default in place for its run."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _runner_ctrl_c(kind)
    finally:
        signal.signal(signal.SIGINT, previous)


def _runner_ctrl_c(kind):
    state = {}

    async def main():
        t = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT))
        state["timer"] = t
        t.start()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        state["timed_out"] = True

    try:
        with asyncio.Runner(loop_factory=_factory(kind)) as runner:
            with pytest.raises(KeyboardInterrupt):
                runner.run(main())
    finally:
        state["timer"].join()
    assert state.get("cancelled") is True
    assert "timed_out" not in state
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.evpy_only
def test_policy_without_asyncio_policies(kind, evpy_mod):
    # Python 3.16 removes asyncio's policies: `import evpy` must keep
    # working, and making a policy must say what to use instead.
    from evpy import policy as policy_mod
    stand_in = policy_mod._policy_class(None)
    with pytest.raises(RuntimeError, match="loop_factory"):
        stand_in()
    assert evpy_mod.run(asyncio.sleep(0, "still")) == "still"
