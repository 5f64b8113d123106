"""evpy only: poller backends (EVPY_POLLER) behave the same."""
import os
import signal
import socket
import sys
import threading

import pytest

from conftest import make_loop, run_briefly, run_until

pytestmark = pytest.mark.evpy_only

LINUX_BACKENDS = ["epoll", "poll"]
FAILSAFE = 10.0


@pytest.fixture(params=LINUX_BACKENDS)
def backend(request, monkeypatch, kind):
    if not sys.platform.startswith("linux"):
        pytest.fail("backend list below is for Linux; extend it")
    monkeypatch.setenv("EVPY_POLLER", request.param)
    return request.param


def test_backends_constant_lists_available_backends(kind, evpy_mod):
    names = evpy_mod.BACKENDS.split()
    assert set(LINUX_BACKENDS) <= set(names), evpy_mod.BACKENDS


def test_default_backend(kind, evpy_mod, monkeypatch):
    monkeypatch.delenv("EVPY_POLLER", raising=False)
    lp = evpy_mod.new_event_loop()
    try:
        assert lp._backend == "epoll"
        assert lp._backend in evpy_mod.BACKENDS.split()
    finally:
        lp.close()


@pytest.mark.parametrize("bogus", ["bogus", "EPOLL", "select"])
def test_unknown_backend_value_error(kind, evpy_mod, monkeypatch, bogus):
    monkeypatch.setenv("EVPY_POLLER", bogus)
    with pytest.raises(ValueError, match="EVPY_POLLER"):
        evpy_mod.new_event_loop()


def test_empty_env_means_default(kind, evpy_mod, monkeypatch):
    monkeypatch.setenv("EVPY_POLLER", "")
    lp = evpy_mod.new_event_loop()
    try:
        assert lp._backend == "epoll"
    finally:
        lp.close()


def test_backend_selected(backend):
    lp = make_loop("evpy")
    try:
        assert lp._backend == backend
    finally:
        lp.close()


def test_backend_io_workload(backend):
    lp = make_loop("evpy")
    pipes = [os.pipe() for _ in range(50)]
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = set()
    try:
        assert lp._backend == backend
        for i, (r, w) in enumerate(pipes):
            lp.add_reader(r, lambda i=i, r=r: (got.add(i), os.read(r, 10),
                                               lp.remove_reader(r)))
        for r, w in pipes[::2]:
            os.write(w, b"x")
        assert run_until(lp, lambda: len(got) == 25)
        assert got == set(range(0, 50, 2))
        # Unwritten pipes stayed quiet.
        run_briefly(lp, 2)
        assert got == set(range(0, 50, 2))

        # Reader + writer on one fd, then writer removed.
        events = []
        lp.add_reader(a, lambda: events.append(("r", a.recv(100))))
        lp.add_writer(a, lambda: (events.append(("w",)),
                                  lp.remove_writer(a)))
        assert run_until(lp, lambda: ("w",) in events)
        b.send(b"hi")
        assert run_until(lp, lambda: ("r", b"hi") in events)
        # Peer close: reader sees EOF.
        b.close()
        assert run_until(lp, lambda: ("r", b"") in events)
        assert lp.remove_reader(a) is True
        assert lp.remove_writer(a) is False
    finally:
        for r, w in pipes:
            lp.remove_reader(r)
            os.close(r)
            os.close(w)
        a.close()
        b.close()
        lp.close()


def test_backend_broken_pipe_wakes_writer(backend):
    lp = make_loop("evpy")
    r, w = os.pipe()
    os.close(r)
    got = []
    try:
        lp.add_writer(w, lambda: (got.append(1), lp.remove_writer(w)))
        assert run_until(lp, lambda: got)
    finally:
        lp.remove_writer(w)
        os.close(w)
        lp.close()


def test_backend_timers_and_threadsafe(backend):
    lp = make_loop("evpy")
    order = []
    try:
        base = lp.time()
        for d in (0.006, 0.002, 0.004):
            lp.call_at(base + d, order.append, d)
        far = lp.call_later(3600, order.append, "far")

        def worker():
            lp.call_soon_threadsafe(lambda: (order.append("ts"), lp.stop()))

        t = threading.Timer(0.02, worker)
        t.start()
        lp.run_forever()
        t.join()
        far.cancel()
        assert order[:3] == [0.002, 0.004, 0.006]
        assert order[3:] == ["ts"]
        fired = []
        h = lp.call_later(0.0005, lambda: (fired.append(lp.time()),
                                           lp.stop()))
        lp.run_forever()
        assert fired[0] >= h.when() - 1e-9
    finally:
        lp.close()


def test_backend_signal(backend):
    lp = make_loop("evpy")
    got = []
    saved = signal.signal(signal.SIGUSR1, lambda s, f: got.append("net"))
    try:
        lp.add_signal_handler(signal.SIGUSR1, lambda: (got.append("sig"),
                                                       lp.stop()))
        t = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGUSR1))
        t.start()
        h = lp.call_later(FAILSAFE, lp.stop)
        lp.run_forever()
        t.join()
        h.cancel()
        assert got == ["sig"]
        assert lp.remove_signal_handler(signal.SIGUSR1)
    finally:
        lp.close()
        signal.signal(signal.SIGUSR1, saved)
