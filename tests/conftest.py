"""Shared fixtures for the evpy behaviour suite.

Every behaviour test runs twice: once on asyncio's default loop
(SelectorEventLoop) and once on evpy, via the ``kind`` parametrization
(ids exactly ``asyncio`` and ``evpy``).  Tests marked ``evpy_only`` are
parametrized with ``evpy`` alone.

If ``import evpy`` fails, every evpy test ERRORs (never skips): a skipped
test would hide a missing feature.

Every test is checked for leaks: open fds, live threads, child processes,
loops created through ``new_loop`` and not closed, and a changed event loop
policy / current loop.

Loops from the ``loop`` and ``new_loop`` fixtures record every
``call_exception_handler()`` call (whatever handler is installed); a test
fails if any happened, unless it is marked ``expect_handler_calls`` (it
then checks them itself, through the ``errors`` fixture or its own
handler).
"""
import asyncio
import gc
import os
import signal
import socket
import sys
import threading
import time
import warnings

import pytest

KINDS = ("asyncio", "evpy")
# asyncio's debug mode is on for new loops (PYTHONASYNCIODEBUG, -X dev).
ASYNCIO_DEBUG = sys.flags.dev_mode or (
    not sys.flags.ignore_environment
    and bool(os.environ.get("PYTHONASYNCIODEBUG")))

try:
    import evpy as _evpy
    EVPY_IMPORT_ERROR = None
except Exception as exc:  # reported in the header; evpy tests then ERROR
    _evpy = None
    EVPY_IMPORT_ERROR = exc


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "evpy_only: run this test with the evpy loop only")
    config.addinivalue_line(
        "markers", "expect_handler_calls: the test's loops may call their "
        "exception handler (the test checks those calls itself)")


def pytest_report_header(config):
    if EVPY_IMPORT_ERROR is not None:
        return ("evpy: CANNOT IMPORT ({!r}); every evpy test will ERROR"
                .format(EVPY_IMPORT_ERROR))
    return "evpy: {}".format(getattr(_evpy, "__file__", _evpy))


def pytest_generate_tests(metafunc):
    if "kind" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("evpy_only"):
            kinds = ["evpy"]
        else:
            kinds = list(KINDS)
        metafunc.parametrize("kind", kinds, ids=kinds)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def import_evpy():
    """Import evpy, raising (so the test ERRORs) if it is not built."""
    if EVPY_IMPORT_ERROR is not None:
        raise RuntimeError(
            "evpy cannot be imported: {!r}".format(EVPY_IMPORT_ERROR)
        ) from EVPY_IMPORT_ERROR
    return _evpy


def make_loop(kind):
    """A fresh, untracked loop of the given kind."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "evpy":
        return import_evpy().new_event_loop()
    raise ValueError(kind)


# --------------------------------------------------------------- leak checks

def _get_policy():
    # The guard's own bookkeeping: no 3.14+ DeprecationWarning from it
    # (tests that use policies filter the warning themselves).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop_policy()


def _set_policy(policy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)


def _fd_set():
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fds.add(int(name))
    return fds


def _fd_desc(fd):
    try:
        return os.readlink("/proc/self/fd/{}".format(fd))
    except OSError:
        return "?"


def _children():
    pids = set()
    me = os.getpid()
    try:
        tids = os.listdir("/proc/{}/task".format(me))
    except OSError:
        return pids
    for tid in tids:
        try:
            with open("/proc/{}/task/{}/children".format(me, tid)) as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


def _settle(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        gc.collect()
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _leak_guard(request):
    """Fail the test if it leaks fds, threads, children or loop state."""
    fds_before = _fd_set()
    threads_before = set(threading.enumerate())
    children_before = _children()
    policy_before = _get_policy()
    sigusr1_before = signal.getsignal(signal.SIGUSR1)
    sigusr2_before = signal.getsignal(signal.SIGUSR2)

    yield

    problems = []
    # Restore global state first so one bad test cannot poison the next.
    policy_after = _get_policy()
    _set_policy(policy_before)
    asyncio.set_event_loop(None)
    if policy_after is not policy_before:
        problems.append("event loop policy changed and not restored: {!r}"
                        .format(policy_after))
    for signum, before in ((signal.SIGUSR1, sigusr1_before),
                           (signal.SIGUSR2, sigusr2_before)):
        after = signal.getsignal(signum)
        if after != before:
            signal.signal(signum, before)
            problems.append("signal handler for {} not restored: {!r}"
                            .format(signal.Signals(signum).name, after))
    wakeup = signal.set_wakeup_fd(-1)
    if wakeup != -1:
        problems.append("signal.set_wakeup_fd left set to {}".format(wakeup))

    def new_threads():
        return [t for t in threading.enumerate()
                if t not in threads_before and t.is_alive()]

    if not _settle(lambda: not new_threads()):
        problems.append("thread leak: {}".format(
            [t.name for t in new_threads()]))
    if not _settle(lambda: _fd_set() <= fds_before, timeout=1.0):
        leaked = sorted(_fd_set() - fds_before)
        problems.append("fd leak: {}".format(
            ", ".join("{}->{}".format(fd, _fd_desc(fd)) for fd in leaked)))
    new_children = _children() - children_before
    if new_children:
        for pid in new_children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        problems.append("child process leak: {}".format(sorted(new_children)))

    if problems:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.passed:
            pytest.fail("; ".join(problems), pytrace=False)


# ------------------------------------------------------------ loop fixtures

class HandlerCalls(list):
    """The calls of call_exception_handler() on the test's loops: their
    contexts for tests using the ``errors`` fixture, else a description
    (a kept context would keep its exception's frames, and whatever they
    hold, alive)."""

    keep_contexts = False

    def install(self, loop):
        # On the instance, so it sees every call (the loops' Python and C
        # code and asyncio's futures look the method up on the loop) and
        # leaves the handler itself to the test.
        call = loop.call_exception_handler

        def call_exception_handler(context):
            self.append(context if self.keep_contexts
                        else _describe_call(context))
            return call(context)
        loop.call_exception_handler = call_exception_handler

    def discard(self, message):
        """Drop (and return) the calls with this message: the test says
        it expects them."""
        dropped = [c for c in self if c.get('message') == message]
        self[:] = [c for c in self if c.get('message') != message]
        return dropped


def _describe_call(context):
    if isinstance(context, str):
        return context
    exc = context.get('exception')
    text = context.get('message', '?')
    return text if exc is None else '{} ({!r})'.format(text, exc)


@pytest.fixture
def handler_calls(request):
    """Fails the test on any exception-handler call of its loops, unless
    the test is marked expect_handler_calls."""
    calls = HandlerCalls()
    yield calls
    if calls and not request.node.get_closest_marker("expect_handler_calls"):
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.passed:
            pytest.fail("unexpected exception handler call(s): {}".format(
                "; ".join(_describe_call(c) for c in calls)), pytrace=False)


@pytest.fixture
def new_loop(request, kind, handler_calls):
    """Factory for loops of the parametrized kind.

    Tests must close every loop they create; a loop still open at teardown
    is closed here and fails the (otherwise passing) test.
    """
    created = []

    def factory():
        loop = make_loop(kind)
        handler_calls.install(loop)
        created.append(loop)
        return loop

    factory.kind = kind
    yield factory

    unclosed = []
    for loop in created:
        if not loop.is_closed():
            unclosed.append(loop)
            if loop.is_running():
                loop.stop()
                continue
            loop.close()
    created.clear()
    if unclosed:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.passed:
            pytest.fail("test left {} loop(s) unclosed".format(len(unclosed)),
                        pytrace=False)


@pytest.fixture
def loop(kind, handler_calls):
    """A fresh loop of the parametrized kind, closed after the test."""
    lp = make_loop(kind)
    handler_calls.install(lp)
    try:
        yield lp
    finally:
        if not lp.is_closed():
            if not lp.is_running():
                try:
                    lp.run_until_complete(lp.shutdown_default_executor())
                except Exception:
                    pass
            lp.close()


@pytest.fixture
def evpy_mod():
    return import_evpy()


def run_briefly(loop, steps=1):
    """Run ``steps`` loop iterations (callbacks scheduled now run)."""
    for _ in range(steps):
        loop.call_soon(loop.stop)
        loop.run_forever()


def run_until(loop, predicate, failsafe=10.0):
    """Run the loop until predicate() is true; False if the failsafe
    (seconds) fired first."""
    def check():
        if predicate():
            loop.stop()
        else:
            loop.call_soon(check)

    timed_out = []
    h = loop.call_later(failsafe, lambda: (timed_out.append(1), loop.stop()))
    loop.call_soon(check)
    loop.run_forever()
    h.cancel()
    return not timed_out


@pytest.fixture
def errors(loop, handler_calls):
    """Contexts passed to the loop's exception handler.  Any call fails the
    test unless it is marked expect_handler_calls (most networking tests
    expect none: asyncio reports OSErrors on transports only in debug
    mode).  The handler itself records silently."""
    loop.set_exception_handler(lambda lp, ctx: None)
    handler_calls.keep_contexts = True
    return handler_calls


@pytest.fixture
def sockpair():
    """A connected pair of non-blocking stream sockets (closed after)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()
