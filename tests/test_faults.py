"""evpy under injected syscall faults (an EVPY_FAULTS build only).

Build with ``EVPY_FAULTS=1`` in the environment (setup.py then defines
EVPY_FAULTS; csrc/core/faults.h) and every wrapped syscall of the C core
(recv/read, send/sendmsg/write/writev, recvfrom/sendto, accept4, connect,
epoll_wait/poll, the waker's read/write) can be made to fail at a seeded
random rate with an errno it can really return there: EINTR, EAGAIN,
ECONNRESET, EPIPE, ENOBUFS, ENOMEM, EMFILE.

Each test switches injection on around a workload of many concurrent
connections on one evpy loop (server and clients), then checks:

- nothing hangs (each run has a deadline) or crashes;
- every connection on either side ends with exactly one connection_lost();
- bytes are never corrupted, duplicated or reordered: what a client got
  back is a prefix of what it sent, and all of it when neither side of
  that connection saw an error;
- every error reached the protocol (connection_lost(exc) or a failed
  create_connection) or the exception handler, and only OSErrors did:
  no TypeError/SystemError from an error path;
- with only EINTR/EAGAIN injected, nothing at all is visible;
- no fd is left behind (conftest's leak guard) and the loop closes.

Normal builds skip this file (``FAULTS`` is False); CI runs it on a
faults build (.ci/test.sh), together with the transport tests in the
"transient" mode (EVPY_FAULT_MODE=transient EVPY_FAULT_RATE=...).
"""
import asyncio
import errno
import os
import random
import struct

import pytest

from conftest import import_evpy

try:
    import evpy._core as _core
    FAULTS = bool(getattr(_core, "FAULTS", False))
except ImportError:  # conftest makes every evpy test ERROR then
    FAULTS = False

# CI's faults run sets EVPY_REQUIRE_FAULTS=1: a build without them then
# fails here instead of skipping.
REQUIRED = os.environ.get("EVPY_REQUIRE_FAULTS") == "1"
if REQUIRED and not FAULTS:
    raise RuntimeError("EVPY_REQUIRE_FAULTS=1 but evpy was built without "
                       "EVPY_FAULTS=1")

pytestmark = [
    pytest.mark.skipif(not FAULTS, reason="evpy was built without "
                       "EVPY_FAULTS=1 (fault injection is test-only)"),
    pytest.mark.timeout(180),
]

DEADLINE = 120.0
FATAL = {errno.ECONNRESET, errno.EPIPE, errno.ENOBUFS, errno.ENOMEM,
         errno.EMFILE}
HEADER = struct.Struct("!QI")  # connection id, payload length


class EchoServer(asyncio.Protocol):
    """Echoes everything; closes (after the echo) on EOF. Records its
    outcome under the client's connection id (its first 8 bytes)."""

    def __init__(self, outcomes):
        self.outcomes = outcomes
        self.head = b""
        self.cid = None
        self.lost_calls = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.outcomes.setdefault("_all", []).append(self)

    def data_received(self, data):
        if self.cid is None:
            self.head += data
            if len(self.head) >= 8:
                self.cid = struct.unpack("!Q", self.head[:8])[0]
        self.transport.write(data)

    def eof_received(self):
        # Closes once the echo is flushed: the client then sees EOF.
        return None

    def connection_lost(self, exc):
        self.lost_calls += 1
        self.exc = exc
        if self.cid is not None:
            self.outcomes[self.cid] = exc


class Client(asyncio.Protocol):
    def __init__(self, loop, payload, rng):
        self.payload = payload
        self.rng = rng
        self.got = bytearray()
        self.eof = False
        self.lost_calls = 0
        self.lost = loop.create_future()
        self.loop = loop

    def connection_made(self, transport):
        self.transport = transport
        self.loop.create_task(self.send())

    async def send(self):
        # Random chunks with random pauses; write_eof at the end.
        view = memoryview(self.payload)
        pos = 0
        while pos < len(view) and not self.transport.is_closing():
            n = self.rng.randint(1, 64 * 1024)
            self.transport.write(view[pos:pos + n])
            pos += n
            if self.rng.random() < 0.3:
                await asyncio.sleep(self.rng.random() * 0.002)
        if not self.transport.is_closing():
            self.transport.write_eof()

    def data_received(self, data):
        self.got += data

    def eof_received(self):
        self.eof = True
        self.transport.close()

    def connection_lost(self, exc):
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)


def _payload(rng, cid):
    size = rng.randint(1, 256 * 1024)
    body = rng.randbytes(size)
    return HEADER.pack(cid, size) + body


def _check_handler_calls(calls):
    for ctx in calls:
        exc = ctx.get("exception")
        assert exc is None or isinstance(exc, OSError), ctx


def _errnos_of(exc):
    return getattr(exc, "errno", None)


async def _echo_run(loop, seed, rate, transient, nconn, outcomes):
    server = await loop.create_server(lambda: EchoServer(outcomes),
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = {}
    connect_errors = []

    async def one(cid):
        payload = _payload(random.Random(seed * 100003 + cid), cid)
        proto = Client(loop, payload, random.Random(cid))
        try:
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
        except OSError as exc:
            connect_errors.append(exc)
            return
        clients[cid] = proto
        await proto.lost

    _core.faults_set(seed, rate, transient)
    try:
        await asyncio.wait_for(
            asyncio.gather(*(one(cid) for cid in range(nconn))), DEADLINE)
    finally:
        _core.faults_set(0, 0.0)
    # Server sides still closing finish without faults.
    for _ in range(200):
        if all(p.lost_calls for p in outcomes.get("_all", [])):
            break
        await asyncio.sleep(0.01)
    server.close()
    await server.wait_closed()
    return clients, connect_errors


def _counts():
    return {k: v for k, v in _core.faults_counts().items() if v}


def _run_echo(seed, rate, transient, nconn):
    evpy = import_evpy()
    loop = evpy.new_event_loop()
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    outcomes = {}
    before = _core.faults_counts()
    try:
        clients, connect_errors = loop.run_until_complete(
            _echo_run(loop, seed, rate, transient, nconn, outcomes))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    injected = {k: v - before[k] for k, v in _core.faults_counts().items()
                if v - before[k]}
    return clients, connect_errors, outcomes, calls, injected


def _check(clients, connect_errors, outcomes, calls, injected, nconn):
    _check_handler_calls(calls)
    assert len(clients) + len(connect_errors) == nconn
    for exc in connect_errors:
        assert isinstance(exc, OSError)
    servers = outcomes.get("_all", [])
    for srv in servers:
        assert srv.lost_calls == 1, "server side lost {} times".format(
            srv.lost_calls)
        exc = getattr(srv, "exc", None)
        assert exc is None or isinstance(exc, OSError), exc
    complete = 0
    for cid, cl in clients.items():
        assert cl.lost_calls == 1
        exc = cl.lost.result()
        assert exc is None or isinstance(exc, OSError), exc
        got = bytes(cl.got)
        # Never a corrupted, duplicated or reordered byte.
        assert got == cl.payload[:len(got)], (
            "connection {}: bytes differ from what was sent".format(cid))
        server_exc = outcomes.get(cid, "never identified")
        if exc is None and server_exc is None:
            # Neither end saw an error: everything came back.
            assert got == cl.payload, (
                "connection {}: {} of {} bytes back without an error"
                .format(cid, len(got), len(cl.payload)))
            complete += 1
    return complete


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_echo_under_all_faults(seed):
    nconn = 100
    clients, cerrs, outcomes, calls, injected = _run_echo(
        seed, 0.03, False, nconn)
    complete = _check(clients, cerrs, outcomes, calls, injected, nconn)
    print("seed", seed, "injected", injected, "complete", complete,
          "of", nconn, "connect errors", len(cerrs),
          "handler calls", len(calls))
    # The run did inject faults, fatal ones included, and those reached
    # a protocol, a caller or the handler.
    fatal = sum(v for (site, err), v in injected.items() if err in FATAL)
    assert fatal > 0, injected
    errors_seen = (len(cerrs) + len(calls)
                   + sum(1 for c in clients.values()
                         if c.lost.result() is not None)
                   + sum(1 for s in outcomes.get("_all", [])
                         if getattr(s, "exc", None) is not None))
    assert errors_seen > 0


@pytest.mark.parametrize("seed", [4, 5])
def test_echo_under_transient_faults_is_invisible(seed):
    """EINTR and EAGAIN only: every byte of every connection comes back,
    no error anywhere."""
    nconn = 100
    clients, cerrs, outcomes, calls, injected = _run_echo(
        seed, 0.2, True, nconn)
    assert not calls, calls
    assert not cerrs, cerrs
    complete = _check(clients, cerrs, outcomes, calls, injected, nconn)
    assert complete == nconn
    print("seed", seed, "injected", injected)
    assert sum(injected.values()) > 100, injected
    assert all(err in (errno.EINTR, errno.EAGAIN)
               for (_site, err) in injected)


def test_threadsafe_wakeups_under_faults():
    """call_soon_threadsafe from threads while the waker's write and read
    and the poll fail with EINTR/EAGAIN: no wake-up is lost."""
    import threading
    evpy = import_evpy()
    loop = evpy.new_event_loop()
    n_threads, per_thread = 4, 2000
    done = loop.create_future()
    count = [0]

    def bump():
        count[0] += 1
        if count[0] == n_threads * per_thread and not done.done():
            done.set_result(None)

    def worker():
        for _ in range(per_thread):
            loop.call_soon_threadsafe(bump)

    _core.faults_set(7, 0.2, True)
    try:
        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        for t in threads:
            t.start()
        loop.run_until_complete(asyncio.wait_for(done, 30))
        for t in threads:
            t.join()
    finally:
        _core.faults_set(0, 0.0)
        loop.close()
    assert count[0] == n_threads * per_thread


def test_pipe_transfer_under_faults():
    """A read pipe and a write pipe under all faults: what arrives is a
    prefix of what was written, all of it when no error was seen."""
    evpy = import_evpy()
    loop = evpy.new_event_loop()
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    rng = random.Random(11)
    payloads = [rng.randbytes(rng.randint(1, 512 * 1024)) for _ in range(8)]

    class Reader(asyncio.Protocol):
        def __init__(self):
            self.got = bytearray()
            self.lost = loop.create_future()

        def data_received(self, data):
            self.got += data

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    class Writer(asyncio.Protocol):
        def __init__(self):
            self.lost = loop.create_future()

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def one(payload):
        r, w = os.pipe()
        rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
        rtr, rp = await loop.connect_read_pipe(Reader, rf)
        wtr, wp = await loop.connect_write_pipe(Writer, wf)
        for i in range(0, len(payload), 65536):
            wtr.write(payload[i:i + 65536])
            await asyncio.sleep(0)
        wtr.close()
        wexc = await wp.lost
        rexc = await rp.lost
        got = bytes(rp.got)
        assert got == payload[:len(got)]
        if wexc is None and rexc is None:
            assert got == payload
        for exc in (wexc, rexc):
            assert exc is None or isinstance(exc, OSError)
        return wexc is None and rexc is None

    before = _core.faults_counts()
    _core.faults_set(3, 0.2, False)
    try:
        async def main():
            return await asyncio.gather(*(one(p) for p in payloads))
        ok = loop.run_until_complete(asyncio.wait_for(main(), 60))
    finally:
        _core.faults_set(0, 0.0)
        loop.close()
    _check_handler_calls(calls)
    injected = {k: v - before[k] for k, v in _core.faults_counts().items()
                if v - before[k]}
    print("pipes: injected", injected, "clean", sum(ok), "of", len(ok))
    assert any(site in ("read", "write") for site, _ in injected), injected
    assert any(ok)
