"""Every public loop, server and transport method fed bad input.

The method lists come from asyncio's ABCs (``AbstractEventLoop``,
``AbstractServer`` and the transport classes), so a method asyncio adds is
covered as soon as it exists: the test fails until it has a base call in
``LOOP_CALLS`` / ``TRANSPORT_CALLS``.

For each method a *base call* (arguments that work) is built, then each
parameter in turn is replaced by a value of a wrong type or out of range,
calls get one argument too many or too few, and the base call runs on a
closed loop, on a closed or aborted transport and (loop methods, debug
mode) from another thread.  Each case runs on a fresh evpy loop and a fresh
asyncio loop; the outcome (where it raised: at the call or when awaited,
and the exception type; the exception handler's calls) must be the same,
apart from the differences listed in ``DIFFERENCES`` (each with its
reason).  A crash of the interpreter fails the run, which also runs under
ASan in CI.
"""
import asyncio
import concurrent.futures
import contextlib
import inspect
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import warnings

import pytest

from conftest import make_loop, run_briefly

AWAIT_TIMEOUT = 1.0
TRANSPORT_ABCS = (asyncio.BaseTransport, asyncio.ReadTransport,
                  asyncio.WriteTransport, asyncio.Transport,
                  asyncio.DatagramTransport, asyncio.SubprocessTransport)

# Wrong-type and out-of-range values tried for each parameter.
BAD_VALUES = {
    "None": None,
    "object": object(),
    "str": "x",
    "bytes": b"x",
    "neg": -1,
    "huge": 2 ** 70,
    "float": 1.5,
    "nan": math.nan,
    "inf": math.inf,
}
# Values that would reach DNS or the file system (a host name, a relative
# path, a shell command) are not tried for these parameters.
SKIP_VALUES = {
    "host": {"str", "bytes"},
    "path": {"str", "bytes"},
    "cmd": {"str", "bytes"},
}


def _noop(*args):
    pass


async def _coro():
    pass


class Env:
    """The resources the base calls use, on one loop; closed by close()."""

    def __init__(self, loop):
        self.loop = loop
        self.closers = []
        self.tmp = tempfile.mkdtemp(prefix="evpy-badargs-")
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(100)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.addr = ("127.0.0.1", self.port)
        self.unix_path = os.path.join(self.tmp, "listen.sock")
        self.unix_listener = socket.socket(socket.AF_UNIX)
        self.unix_listener.bind(self.unix_path)
        self.unix_listener.listen(100)
        self.file = open(__file__, "rb")
        self.closers += [self.listener.close, self.unix_listener.close,
                         self.file.close]
        self._n = 0

    def later(self, fn):
        self.closers.append(fn)

    def sock(self, *args, **kwargs):
        s = socket.socket(*args, **kwargs)
        s.setblocking(False)
        self.later(s.close)
        return s

    def pair(self, data=b""):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        if data:
            b.send(data)
        self.later(a.close)
        self.later(b.close)
        return a, b

    def connected(self):
        """A connected TCP socket (with a byte to read) and its peer."""
        c = socket.create_connection(self.addr)
        s, _ = self.listener.accept()
        s.send(b"x")
        c.setblocking(False)
        self.later(c.close)
        self.later(s.close)
        return c

    def udp(self, data=False):
        s = self.sock(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        if data:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as o:
                o.sendto(b"x", s.getsockname())
        return s

    def pipe_files(self):
        r, w = os.pipe()
        rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
        self.later(rf.close)
        self.later(wf.close)
        return rf, wf

    def fresh_path(self):
        self._n += 1
        return os.path.join(self.tmp, "s{}.sock".format(self._n))

    def transport(self, peer_data=b""):
        """A socket transport on this loop (over a socketpair); the peer
        sends peer_data."""
        a, b = self.pair()
        tr, _ = self.loop.run_until_complete(
            self.loop.connect_accepted_socket(asyncio.Protocol, a))
        if peer_data:
            b.send(peer_data)
        self.later(tr.abort)
        return tr

    def close(self):
        for fn in reversed(self.closers):
            with contextlib.suppress(Exception):
                fn()
        self.closers.clear()
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)


def _ssl_context():
    import ssl
    return ssl.create_default_context()


# Base calls: method name -> function(env) -> (args, kwargs).  Every public
# method of AbstractEventLoop needs one (a new asyncio method fails
# test_every_method_has_a_base_call until it is added here).
LOOP_CALLS = {
    "add_reader": lambda e: ((e.pair()[0].fileno(), _noop), {}),
    "add_writer": lambda e: ((e.pair()[0].fileno(), _noop), {}),
    "remove_reader": lambda e: ((e.pair()[0].fileno(),), {}),
    "remove_writer": lambda e: ((e.pair()[0].fileno(),), {}),
    "add_signal_handler": lambda e: ((signal.SIGUSR1, _noop), {}),
    "remove_signal_handler": lambda e: ((signal.SIGUSR1,), {}),
    "call_at": lambda e: ((e.loop.time(), _noop), {}),
    "call_later": lambda e: ((0, _noop), {}),
    "call_soon": lambda e: ((_noop,), {}),
    "call_soon_threadsafe": lambda e: ((_noop,), {}),
    "call_exception_handler": lambda e: (({"message": "m"},), {}),
    "default_exception_handler": lambda e: (({"message": "m"},), {}),
    "close": lambda e: ((), {}),
    "connect_accepted_socket":
        lambda e: ((asyncio.Protocol, e.pair()[0]), {}),
    "connect_read_pipe":
        lambda e: ((asyncio.Protocol, e.pipe_files()[0]), {}),
    "connect_write_pipe":
        lambda e: ((asyncio.Protocol, e.pipe_files()[1]), {}),
    "create_connection":
        lambda e: ((asyncio.Protocol, "127.0.0.1", e.port), {}),
    "create_datagram_endpoint":
        lambda e: ((asyncio.DatagramProtocol, ("127.0.0.1", 0)), {}),
    "create_future": lambda e: ((), {}),
    "create_server": lambda e: ((asyncio.Protocol, "127.0.0.1", 0), {}),
    "create_task": lambda e: ((_coro(),), {}),
    "create_unix_connection":
        lambda e: ((asyncio.Protocol, e.unix_path), {}),
    "create_unix_server":
        lambda e: ((asyncio.Protocol, e.fresh_path()), {}),
    "get_debug": lambda e: ((), {}),
    "get_exception_handler": lambda e: ((), {}),
    "get_task_factory": lambda e: ((), {}),
    "getaddrinfo": lambda e: (("127.0.0.1", 80), {}),
    "getnameinfo": lambda e: ((("127.0.0.1", 80),
                               socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
                              {}),
    "is_closed": lambda e: ((), {}),
    "is_running": lambda e: ((), {}),
    "run_forever": lambda e: (e.loop.call_soon(e.loop.stop) and (), {}),
    "run_in_executor": lambda e: ((None, _noop), {}),
    "run_until_complete": lambda e: ((_coro(),), {}),
    "sendfile": lambda e: ((e.transport(), e.file), {}),
    "set_debug": lambda e: ((True,), {}),
    "set_default_executor":
        lambda e: ((concurrent.futures.ThreadPoolExecutor(1),), {}),
    "set_exception_handler": lambda e: ((None,), {}),
    "set_task_factory": lambda e: ((None,), {}),
    "shutdown_asyncgens": lambda e: ((), {}),
    "shutdown_default_executor": lambda e: ((), {}),
    "sock_accept": lambda e: ((e.listener,), {}),
    "sock_connect": lambda e: ((e.sock(), e.addr), {}),
    "sock_recv": lambda e: ((e.pair(b"x")[0], 10), {}),
    "sock_recv_into": lambda e: ((e.pair(b"x")[0], bytearray(10)), {}),
    "sock_recvfrom": lambda e: ((e.udp(True), 10), {}),
    "sock_recvfrom_into": lambda e: ((e.udp(True), bytearray(10)), {}),
    "sock_sendall": lambda e: ((e.pair()[0], b"x"), {}),
    "sock_sendfile": lambda e: ((e.connected(), e.file), {}),
    "sock_sendto": lambda e: ((e.udp(), b"x", ("127.0.0.1", 9)), {}),
    # The peer answers the TLS hello with garbage: the handshake fails at
    # once.
    "start_tls": lambda e: ((e.transport(b"not tls\r\n" * 100),
                             asyncio.Protocol(),
                             _ssl_context()), {}),
    "stop": lambda e: ((), {}),
    "subprocess_exec":
        lambda e: ((asyncio.SubprocessProtocol, sys.executable, "-c",
                    "pass"), {}),
    "subprocess_shell":
        lambda e: ((asyncio.SubprocessProtocol, "exit 0"), {}),
    "time": lambda e: ((), {}),
}
# Base calls that must not run on an open loop as they are (they would
# wait for a peer that never comes): only their bad variants run.
NO_BASE_RUN = {"start_tls", "run_forever"}
# On a closed loop asyncio spawns the child before it fails (RuntimeError)
# and leaves the child and its pipes behind; evpy checks first
# (test_subprocess_on_closed_loop_spawns_nothing).
CLOSED_LOOP_LEAKS = {"subprocess_exec", "subprocess_shell"}
# Methods that change the loop in a way the next call must see in the
# same case are still fine: every case has its own loop.

SERVER_CALLS = {
    "close": lambda e: ((), {}),
    "get_loop": lambda e: ((), {}),
    "is_serving": lambda e: ((), {}),
    "serve_forever": lambda e: ((), {}),
    "start_serving": lambda e: ((), {}),
    "wait_closed": lambda e: ((), {}),
    "close_clients": lambda e: ((), {}),
    "abort_clients": lambda e: ((), {}),
}
NO_BASE_RUN_SERVER = {"serve_forever"}

TRANSPORT_CALLS = {
    "close": lambda e, t: ((), {}),
    "abort": lambda e, t: ((), {}),
    "get_extra_info": lambda e, t: (("peername",), {}),
    "get_protocol": lambda e, t: ((), {}),
    "set_protocol": lambda e, t: ((t.get_protocol(),), {}),
    "is_closing": lambda e, t: ((), {}),
    "is_reading": lambda e, t: ((), {}),
    "pause_reading": lambda e, t: ((), {}),
    "resume_reading": lambda e, t: ((), {}),
    "can_write_eof": lambda e, t: ((), {}),
    "get_write_buffer_limits": lambda e, t: ((), {}),
    "get_write_buffer_size": lambda e, t: ((), {}),
    "set_write_buffer_limits": lambda e, t: ((100, 10), {}),
    "write": lambda e, t: ((b"x",), {}),
    "writelines": lambda e, t: (([b"x", b"y"],), {}),
    "write_eof": lambda e, t: ((), {}),
    "sendto": lambda e, t: ((b"x", ("127.0.0.1", 9)), {}),
    "get_pid": lambda e, t: ((), {}),
    "get_pipe_transport": lambda e, t: ((0,), {}),
    "get_returncode": lambda e, t: ((), {}),
    "kill": lambda e, t: ((), {}),
    "send_signal": lambda e, t: ((0,), {}),
    "terminate": lambda e, t: ((), {}),
}


def _make_tcp(env):
    a = env.connected()
    tr, _ = env.loop.run_until_complete(
        env.loop.connect_accepted_socket(asyncio.Protocol, a))
    return tr


def _make_unix(env):
    return env.transport()


def _make_udp(env):
    tr, _ = env.loop.run_until_complete(env.loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", 0)))
    return tr


def _make_read_pipe(env):
    tr, _ = env.loop.run_until_complete(env.loop.connect_read_pipe(
        asyncio.Protocol, env.pipe_files()[0]))
    return tr


def _make_write_pipe(env):
    tr, _ = env.loop.run_until_complete(env.loop.connect_write_pipe(
        asyncio.Protocol, env.pipe_files()[1]))
    return tr


def _make_subprocess(env):
    tr, _ = env.loop.run_until_complete(env.loop.subprocess_exec(
        asyncio.SubprocessProtocol, sys.executable, "-c",
        "import sys; sys.stdin.read()"))
    return tr


TRANSPORT_KINDS = {
    "tcp": _make_tcp,
    "unix": _make_unix,
    "udp": _make_udp,
    "read_pipe": _make_read_pipe,
    "write_pipe": _make_write_pipe,
    "subprocess": _make_subprocess,
}

# Documented differences: (method, case) -> reason.  ``case`` as in the
# failure messages.  Each is a place where asyncio's behaviour is a bug
# or an accident of its implementation that evpy does not copy.
DIFFERENCES = {
    # asyncio takes any `when` and breaks later: the first comparison with
    # another timer or the clock raises TypeError out of run_forever().
    ("call_at", "when=str"): "asyncio accepts, fails later",
    ("call_at", "when=bytes"): "asyncio accepts, fails later",
    ("call_at", "when=object"): "asyncio accepts, fails later",
    # asyncio passes count straight to os.sendfile(), which cannot take
    # a count past ssize_t although it only sends what the file has;
    # evpy sends up to the end of the file.
    ("sendfile", "count=huge"): "asyncio: OverflowError from os.sendfile",
    ("sock_sendfile", "count=huge"):
        "asyncio: OverflowError from os.sendfile",
}
# asyncio's writelines() returns early on an empty argument with
# `if not list_of_data`, so None slips through; evpy asks for an iterable.
# On a closed transport asyncio's writelines() (and an unconnected
# datagram transport's sendto()) reach the socket it already dropped and
# raise AttributeError/TypeError; evpy ignores the call as asyncio's
# write() does.
for _kind in ("tcp", "unix"):
    DIFFERENCES[(_kind + ".writelines", "list_of_data=None")] = (
        "asyncio accepts None")
    DIFFERENCES[(_kind + ".writelines", "closed transport")] = (
        "asyncio raises from its dropped socket")
    DIFFERENCES[(_kind + ".writelines", "aborted transport")] = (
        "asyncio raises from its dropped socket")
# asyncio's write pipe checks the type of write()'s data with an assert
# (AssertionError; nothing under python -O); evpy raises TypeError as both
# loops' socket transports do.  Its abort() after the connection is lost
# fails with AttributeError on its dropped loop; evpy's does nothing.
for _case in ("None", "object", "str", "neg", "huge", "float", "nan", "inf"):
    DIFFERENCES[("write_pipe.write", "data=" + _case)] = "asyncio asserts"
DIFFERENCES[("write_pipe.abort", "closed transport")] = (
    "asyncio raises from its dropped loop")
DIFFERENCES[("write_pipe.abort", "aborted transport")] = (
    "asyncio raises from its dropped loop")
DIFFERENCES[("udp.sendto", "closed transport")] = (
    "asyncio raises from its dropped socket")
DIFFERENCES[("udp.sendto", "aborted transport")] = (
    "asyncio raises from its dropped socket")


# ----------------------------------------------------------------- running

def _public(cls):
    return sorted(n for n, v in vars(cls).items()
                  if not n.startswith("_") and callable(v))


def loop_methods():
    return _public(asyncio.AbstractEventLoop)


def server_methods():
    return _public(asyncio.AbstractServer)


def transport_methods(tr):
    names = set()
    for abc in TRANSPORT_ABCS:
        if isinstance(tr, abc):
            names.update(_public(abc))
    return sorted(names)


def _cleanup_result(loop, res):
    items = res if isinstance(res, tuple) else (res,)
    for item in items:
        if isinstance(item, (asyncio.BaseTransport, asyncio.AbstractServer)):
            _close_target(loop, item)
        elif isinstance(item, socket.socket):
            item.close()
        elif hasattr(item, "cancel"):
            # Handles, timer handles, futures (evpy's handles are its own
            # types).
            item.cancel()


def _drive_closed(aw):
    """Run an awaitable without a loop: the checks before its first
    suspension."""
    it = aw.__await__()
    try:
        it.send(None)
    except StopIteration:
        return ("await", "ok")
    except Exception as exc:
        return ("await", type(exc).__name__)
    with contextlib.suppress(Exception):
        it.close()
    return ("await", "suspended")


def attempt(loop, call, *, run=True):
    """Outcome of call(): ('call'|'await', exception name or 'ok')."""
    try:
        res = call()
    except Exception as exc:
        return ("call", type(exc).__name__), None
    if not inspect.isawaitable(res) or isinstance(res, asyncio.Future):
        return ("call", "ok"), res
    if not run or loop.is_closed():
        if run:
            return _drive_closed(res), None
        with contextlib.suppress(Exception):
            res.close()
        return ("call", "ok"), None

    async def drive():
        return await asyncio.wait_for(res, AWAIT_TIMEOUT)
    try:
        value = loop.run_until_complete(drive())
    except asyncio.TimeoutError:
        return ("await", "timeout"), None
    except Exception as exc:
        return ("await", type(exc).__name__), None
    return ("await", "ok"), value


def _close_target(loop, target):
    if isinstance(target, asyncio.BaseTransport) and target.is_closing():
        pass
    elif isinstance(target, asyncio.BaseTransport):
        getattr(target, "abort", target.close)()
    elif isinstance(target, asyncio.AbstractServer):
        target.close()
    if isinstance(target, asyncio.SubprocessTransport):
        # Reap the child before the loop closes.
        for _ in range(400):
            if target.get_returncode() is not None or loop.is_closed():
                break
            run_briefly(loop)
            if target.get_returncode() is None:
                threading.Event().wait(0.005)
        # The exit is known one iteration before connection_lost runs (on
        # both loops): let it run, so what follows does not depend on
        # which iteration the exit was noticed in.
        if not loop.is_closed():
            run_briefly(loop, 2)


def _settle(loop, env):
    if loop.is_closed():
        return
    with contextlib.suppress(Exception):
        run_briefly(loop, 3)
    with contextlib.suppress(Exception):
        loop.remove_signal_handler(signal.SIGUSR1)
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_default_executor())


def run_case(kind, setup, call_of, *, closed=False, thread=False,
             close_target=False, abort_target=False):
    """Run one case on a fresh loop of ``kind``; returns its outcome and
    the exception types the loop's handler saw."""
    hook = sys.unraisablehook
    if kind == "evpy":
        # Nothing evpy does may end up as an unraisable error (asyncio's
        # half-made pipe transports do, in their __del__).
        sys.unraisablehook = _record_unraisable
    try:
        return _run_case(kind, setup, call_of, closed, thread,
                         close_target, abort_target)
    finally:
        sys.unraisablehook = hook


EVPY_UNRAISABLE = []


def _from_asyncio(u):
    """True if an unraisable error is asyncio's own (its garbage may be
    collected while an evpy case runs)."""
    obj = u.object
    if obj is not None:
        module = getattr(obj, "__module__", None) or type(obj).__module__
        return str(module).startswith("asyncio")
    # 3.14 reports a __del__ failure with object None: look at where it
    # was raised (the outermost frame is the __del__ itself).
    tb = u.exc_traceback
    if tb is None:
        return False
    path = tb.tb_frame.f_code.co_filename
    return os.path.dirname(path) == os.path.dirname(asyncio.__file__)


def _record_unraisable(u):
    if not _from_asyncio(u):
        EVPY_UNRAISABLE.append("{!r} in {!r}".format(u.exc_value, u.object))


@pytest.fixture(autouse=True)
def _no_evpy_unraisable():
    EVPY_UNRAISABLE.clear()
    yield
    assert EVPY_UNRAISABLE == []


def _run_case(kind, setup, call_of, closed, thread, close_target,
              abort_target):
    loop = make_loop(kind)
    seen = []
    loop.set_exception_handler(
        lambda lp, ctx: seen.append(type(ctx.get("exception")).__name__))
    env = Env(loop)
    res = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = setup(env)
            call = call_of(env, target)
            if close_target or abort_target:
                if close_target:
                    target.close()
                else:
                    target.abort()
                run_briefly(loop, 3)
                _close_target(loop, target)  # a child: reaped
            if closed:
                _settle(loop, env)
                loop.close()
            if thread:
                loop.set_debug(True)
                box = []
                t = threading.Thread(
                    target=lambda: box.append(attempt(loop, call, run=False)))
                t.start()
                t.join()
                outcome, res = box[0]
            else:
                outcome, res = attempt(loop, call)
            _cleanup_result(loop, res)
            _close_target(loop, target)
            _settle(loop, env)
            if not loop.is_closed():
                # Servers and subprocess transports finish closing.
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                run_briefly(loop, 5)
    finally:
        with contextlib.suppress(Exception):
            if loop.is_running():
                loop.stop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not loop.is_closed():
                with contextlib.suppress(Exception):
                    run_briefly(loop, 2)
            # The sockets only once the loop no longer polls: a reader on
            # a closed fd is "ready" for poll(2) (POLLNVAL), as for
            # selectors.PollSelector, while epoll forgets the fd.
            env.close()
            loop.close()
    # The kinds of errors the handler saw (how often a failing reader
    # callback ran depends on timing).
    return outcome, tuple(sorted(set(seen)))


def variants(sig, args, kwargs, skip_self=True):
    """(case name, args, kwargs) for each bad variant of a base call."""
    params = [p for p in sig.parameters.values()
              if not (skip_self and p.name == "self")]
    positional = [p for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    out = []
    if not has_varargs:
        extra = list(args) + [p.default for p in positional[len(args):]]
        out.append(("too many args", tuple(extra) + (None,), kwargs))
    required = [p for p in positional if p.default is p.empty]
    if required:
        out.append(("too few args", tuple(args[:len(required) - 1]), {}))
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        skip = SKIP_VALUES.get(p.name, ())
        for vname, value in BAD_VALUES.items():
            if vname in skip:
                continue
            case = "{}={}".format(p.name, vname)
            if p.kind == p.KEYWORD_ONLY:
                kw = dict(kwargs)
                kw[p.name] = value
                out.append((case, args, kw))
            elif i < len(args):
                a = list(args)
                a[i] = value
                out.append((case, tuple(a), kwargs))
            else:
                a = list(args) + [q.default for q in positional[len(args):i]]
                out.append((case, tuple(a) + (value,), kwargs))
    out.append(("unknown keyword", args, dict(kwargs, no_such_arg=1)))
    return out


def _report(name, mismatches):
    bad = []
    for case, a, e in mismatches:
        if isinstance(case, tuple):
            key = case
        else:
            key = (name, case)
        if key in DIFFERENCES:
            continue
        bad.append("{} {}: asyncio {} evpy {}".format(
            key[0], key[1], a, e))
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------- tests

def test_every_method_has_a_base_call():
    assert sorted(set(loop_methods()) - set(LOOP_CALLS)) == []
    assert sorted(set(server_methods()) - set(SERVER_CALLS)) == []
    every = set()
    for abc in TRANSPORT_ABCS:
        every.update(_public(abc))
    assert sorted(every - set(TRANSPORT_CALLS)) == []


def _loop_cases(name):
    sig = inspect.signature(getattr(asyncio.AbstractEventLoop, name))
    base = LOOP_CALLS[name]
    cases = []
    # Each variant rebuilds the base call on its own loop and swaps in
    # the bad value at the same place.
    for case, build in _shape(sig, base):
        cases.append((case, build, {}))
    if name not in NO_BASE_RUN and name not in CLOSED_LOOP_LEAKS:
        cases.append(("closed loop", base, {"closed": True}))
    if name not in ("run_forever", "run_until_complete", "close"):
        cases.append(("other thread, debug", base, {"thread": True}))
    return cases


def _swap(base, args0, kwargs0, args1, kwargs1):
    """A base-call builder that keeps the fresh values where the variant
    kept the base ones and takes the variant's elsewhere."""
    def build(env, *rest):
        args, kwargs = base(env, *rest)
        out = []
        for i, v in enumerate(args1):
            if i < len(args0) and v is args0[i]:
                out.append(args[i])
            else:
                out.append(v)
        for i in range(len(args1), len(args)):
            if inspect.iscoroutine(args[i]):
                args[i].close()
        kw = {}
        for key, v in kwargs1.items():
            if key in kwargs0 and v is kwargs0[key]:
                kw[key] = kwargs[key]
            else:
                kw[key] = v
        return tuple(out), kw
    return build


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", loop_methods())
def test_loop_method(name):
    if name not in LOOP_CALLS:
        pytest.fail("no base call for new method {}".format(name))
    mismatches = []
    for case, build, opts in _loop_cases(name):
        results = {}
        for kind in ("asyncio", "evpy"):
            results[kind] = run_case(
                kind, lambda env: None,
                lambda env, target, b=build: _call_built(
                    getattr(env.loop, name), b, env),
                **opts)
        if results["asyncio"] != results["evpy"]:
            mismatches.append((case, results["asyncio"], results["evpy"]))
    _report(name, mismatches)


def _call_built(method, build, env, *rest):
    args, kwargs = build(env, *rest)
    return lambda: method(*args, **kwargs)


def _shape(sig, base, *extra_setup):
    """The bad variants of a base call, as builders for fresh loops."""
    probe = make_loop("asyncio")
    env = Env(probe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = extra_setup[0](env) if extra_setup else None
            args, kwargs = (base(env, target) if extra_setup
                            else base(env))
            shape = variants(sig, args, kwargs)
            for a in args:
                if inspect.iscoroutine(a):
                    a.close()
            _close_target(probe, target)
            _settle(probe, env)
            run_briefly(probe, 3)
    finally:
        env.close()
        probe.close()
    return [(case, _swap(base, args, kwargs, a, k)) for case, a, k in shape]


def _make_server(env):
    return env.loop.run_until_complete(
        env.loop.create_server(asyncio.Protocol, "127.0.0.1", 0))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", server_methods())
def test_server_method(name):
    if not hasattr(asyncio.base_events.Server, name):
        pytest.skip("asyncio {} has no Server.{}".format(
            sys.version.split()[0], name))
    sig = inspect.signature(getattr(asyncio.AbstractServer, name))
    base = SERVER_CALLS[name]
    cases = [(case, b, {})
             for case, b in _shape(sig, lambda e, t: base(e), _make_server)]
    if name not in NO_BASE_RUN_SERVER:
        cases.append(("closed server", lambda e, t: base(e),
                      {"close_target": True}))
    mismatches = []
    for case, build, opts in cases:
        results = {}
        for kind in ("asyncio", "evpy"):
            results[kind] = run_case(
                kind, _make_server,
                lambda env, srv, b=build: _call_built(
                    getattr(srv, name), b, env, srv),
                **opts)
        if results["asyncio"] != results["evpy"]:
            mismatches.append((case, results["asyncio"], results["evpy"]))
    _report("Server." + name, mismatches)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind_name", sorted(TRANSPORT_KINDS))
def test_transport_methods(kind_name):
    make = TRANSPORT_KINDS[kind_name]
    # The methods of the ABCs asyncio's own transport of this kind is an
    # instance of.
    probe = make_loop("asyncio")
    env = Env(probe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = make(env)
            names = transport_methods(tr)
            _close_target(probe, tr)
            _settle(probe, env)
    finally:
        env.close()
        probe.close()
    mismatches = []
    for name in names:
        sig = inspect.signature(getattr(_abc_owner(name), name))
        base = TRANSPORT_CALLS[name]
        cases = [(case, b, {}) for case, b in _shape(sig, base, make)]
        cases.append(("closed transport", base, {"close_target": True}))
        if "abort" in names:
            cases.append(("aborted transport", base, {"abort_target": True}))
        for case, build, opts in cases:
            results = {}
            for kind in ("asyncio", "evpy"):
                results[kind] = run_case(
                    kind, make,
                    lambda env, t, b=build, n=name: _call_built(
                        getattr(t, n), b, env, t),
                    **opts)
            if results["asyncio"] != results["evpy"]:
                mismatches.append((("{}.{}".format(kind_name, name), case),
                                   results["asyncio"], results["evpy"]))
    _report("transport", mismatches)


def _abc_owner(name):
    for abc in TRANSPORT_ABCS:
        if name in vars(abc):
            return abc
    raise AssertionError(name)


@pytest.mark.evpy_only
@pytest.mark.parametrize("method", sorted(CLOSED_LOOP_LEAKS))
def test_subprocess_on_closed_loop_spawns_nothing(kind, method):
    """RuntimeError before any child exists (see CLOSED_LOOP_LEAKS)."""
    import conftest
    loop = make_loop(kind)
    loop.close()
    before = conftest._children()
    args = ((sys.executable, "-c", "pass") if method == "subprocess_exec"
            else ("exit 0",))
    coro = getattr(loop, method)(asyncio.SubprocessProtocol, *args)
    with pytest.raises(RuntimeError, match="closed"):
        coro.send(None)
    assert conftest._children() == before
