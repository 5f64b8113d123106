"""add_reader / add_writer / remove_reader / remove_writer."""
import asyncio
import os

import pytest

from conftest import run_briefly, run_until

FAILSAFE = 10.0


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    _close(r)
    _close(w)


def test_reader_on_pipe(loop, pipe):
    r, w = pipe
    got = []

    def on_readable(tag):
        got.append((tag, os.read(r, 100)))
        loop.stop()

    loop.add_reader(r, on_readable, "tag")
    loop.call_later(0.005, os.write, w, b"hello")
    loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    assert got == [("tag", b"hello")]
    assert loop.remove_reader(r) is True


def test_reader_not_called_without_data(loop, pipe):
    r, w = pipe
    got = []
    loop.add_reader(r, got.append, "called")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert got == []
    assert loop.remove_reader(r)


def test_writer_on_pipe(loop, pipe):
    r, w = pipe
    got = []

    def on_writable():
        got.append(os.write(w, b"x"))
        loop.remove_writer(w)
        loop.stop()

    loop.add_writer(w, on_writable)
    loop.call_later(FAILSAFE, loop.stop)
    loop.run_forever()
    assert got == [1]
    assert os.read(r, 10) == b"x"
    assert loop.remove_writer(w) is False


def test_reader_and_writer_on_socketpair(loop, sockpair):
    a, b = sockpair
    received = []

    def on_writable():
        loop.remove_writer(a.fileno())
        a.send(b"ping")

    def on_readable():
        received.append(b.recv(100))

    loop.add_writer(a.fileno(), on_writable)
    loop.add_reader(b.fileno(), on_readable)
    assert run_until(loop, lambda: received)
    assert received == [b"ping"]
    assert loop.remove_reader(b.fileno())


def test_socket_object_with_fileno(loop, sockpair):
    a, b = sockpair
    received = []
    loop.add_reader(b, lambda: received.append(b.recv(100)))
    a.send(b"obj")
    assert run_until(loop, lambda: received)
    assert received == [b"obj"]
    assert loop.remove_reader(b) is True
    assert loop.remove_reader(b) is False


def test_custom_fileno_object(loop, pipe):
    r, w = pipe

    class FileLike:
        def fileno(self):
            return r

    got = []
    obj = FileLike()
    loop.add_reader(obj, lambda: got.append(os.read(r, 10)))
    os.write(w, b"z")
    assert run_until(loop, lambda: got)
    assert got == [b"z"]
    # Registered by fd: removable by the number as well.
    assert loop.remove_reader(r) is True


def test_same_fd_reader_and_writer_independent(loop, sockpair):
    a, b = sockpair
    events = []
    loop.add_reader(a.fileno(), lambda: events.append("r"))
    loop.add_writer(a.fileno(), lambda: events.append("w"))
    assert run_until(loop, lambda: "w" in events)
    assert "r" not in events
    assert loop.remove_writer(a.fileno()) is True
    b.send(b"data")
    events.clear()
    assert run_until(loop, lambda: "r" in events)
    assert "w" not in events
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False


def test_replace_reader(loop, pipe):
    r, w = pipe
    got = []
    loop.add_reader(r, got.append, "old")
    loop.add_reader(r, got.append, "new")
    os.write(w, b"x")
    assert run_until(loop, lambda: got)
    assert set(got) == {"new"}
    assert loop.remove_reader(r) is True
    assert loop.remove_reader(r) is False


def test_replace_writer(loop, pipe):
    r, w = pipe
    got = []
    loop.add_writer(w, got.append, "old")
    loop.add_writer(w, got.append, "new")
    assert run_until(loop, lambda: got)
    assert set(got) == {"new"}
    assert loop.remove_writer(w) is True


def test_remove_unregistered_returns_false(loop, pipe):
    r, w = pipe
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(w) is False
    loop.add_reader(r, lambda: None)
    # Reader registered, writer not.
    assert loop.remove_writer(r) is False
    assert loop.remove_reader(r) is True


def test_reader_level_triggered(loop, pipe):
    """Unconsumed data keeps the fd readable: the reader is called again."""
    r, w = pipe
    count = [0]

    def on_readable():
        count[0] += 1

    loop.add_reader(r, on_readable)
    os.write(w, b"x")
    assert run_until(loop, lambda: count[0] >= 3)
    assert loop.remove_reader(r)


def test_remove_reader_inside_callback(loop, pipe):
    r, w = pipe
    count = [0]

    def on_readable():
        count[0] += 1
        loop.remove_reader(r)

    loop.add_reader(r, on_readable)
    os.write(w, b"x")
    assert run_until(loop, lambda: count[0] >= 1)
    run_briefly(loop, 3)
    assert count[0] == 1


def test_reader_sees_eof(loop, pipe):
    r, w = pipe
    got = []
    loop.add_reader(r, lambda: got.append(os.read(r, 10)))
    os.close(w)
    assert run_until(loop, lambda: got)
    assert got[0] == b""
    assert loop.remove_reader(r)


def test_many_fds(loop):
    pipes = [os.pipe() for _ in range(100)]
    got = set()
    try:
        for i, (r, w) in enumerate(pipes):
            loop.add_reader(r, lambda i=i, r=r: (got.add(i), os.read(r, 1),
                                                 loop.remove_reader(r)))
        for r, w in pipes:
            os.write(w, b"1")
        assert run_until(loop, lambda: len(got) == 100)
        assert got == set(range(100))
    finally:
        for r, w in pipes:
            loop.remove_reader(r)
            _close(r)
            _close(w)


@pytest.mark.expect_handler_calls
def test_exception_in_reader_is_reported(loop, pipe):
    r, w = pipe
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    def bad():
        loop.remove_reader(r)
        raise ZeroDivisionError("in reader")

    loop.add_reader(r, bad)
    os.write(w, b"x")
    assert run_until(loop, lambda: errors)
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    # The loop still works.
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_remove_after_fd_closed(loop):
    """Closing the fd first and then removing the reader must not raise."""
    r, w = os.pipe()
    try:
        loop.add_reader(r, lambda: None)
        os.close(r)
        assert loop.remove_reader(r) is True
    finally:
        _close(r)
        _close(w)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_negative_fd_value_error(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1, lambda: None)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
@pytest.mark.parametrize("bad", ["not a file", None, 1.5, object()])
def test_bad_file_object_value_error(loop, method, bad):
    with pytest.raises(ValueError):
        getattr(loop, method)(bad, lambda: None)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_negative_fd_value_error(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1)


def test_fileno_raising_value_error(loop):
    class Broken:
        def fileno(self):
            raise ValueError("closed file")

    with pytest.raises(ValueError):
        loop.add_reader(Broken(), lambda: None)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_closed_fd_os_error(loop, method):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        getattr(loop, method)(r, lambda: None)
    # The failed registration left nothing behind.
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(r) is False


def test_closed_loop(new_loop, pipe):
    r, w = pipe
    lp = new_loop()
    lp.add_reader(r, lambda: None)
    lp.close()
    with pytest.raises(RuntimeError):
        lp.add_reader(r, lambda: None)
    with pytest.raises(RuntimeError):
        lp.add_writer(w, lambda: None)
    assert lp.remove_reader(r) is False
    assert lp.remove_writer(w) is False


def test_close_loop_with_registered_fds_keeps_fds_open(new_loop, pipe):
    r, w = pipe
    lp = new_loop()
    lp.add_reader(r, lambda: None)
    lp.add_writer(w, lambda: None)
    lp.close()
    # The loop does not own user fds: they are still usable.
    os.write(w, b"ok")
    assert os.read(r, 10) == b"ok"


def test_unopened_fd_number_os_error(loop):
    with pytest.raises(OSError):
        loop.add_reader(10 ** 6, lambda: None)
    assert loop.remove_reader(10 ** 6) is False


def test_reader_removed_by_earlier_callback_same_batch(loop):
    """Two fds ready in the same poll: if the first callback removes the
    second's reader, the second callback must not run."""
    p1, p2 = os.pipe(), os.pipe()
    got = []
    try:
        def first(name, other):
            got.append(name)
            loop.remove_reader(other)

        # Whichever runs first removes the other one.
        loop.add_reader(p1[0], first, "p1", p2[0])
        loop.add_reader(p2[0], first, "p2", p1[0])
        os.write(p1[1], b"x")
        os.write(p2[1], b"x")
        run_briefly(loop, 3)
        # Level-triggered: the survivor runs on every iteration, the
        # removed one never.
        assert got and set(got) == {got[0]}, got
    finally:
        for fd in (*p1, *p2):
            loop.remove_reader(fd)
            _close(fd)


def test_reader_replaced_by_earlier_callback_same_batch(loop):
    p1, p2 = os.pipe(), os.pipe()
    got = []
    try:
        def replace(name, other, other_name):
            got.append(name)
            loop.remove_reader(loop_fd[name])
            loop.add_reader(other, got.append, other_name + "-new")

        loop_fd = {"p1": p1[0], "p2": p2[0]}
        loop.add_reader(p1[0], replace, "p1", p2[0], "p2")
        loop.add_reader(p2[0], replace, "p2", p1[0], "p1")
        os.write(p1[1], b"x")
        os.write(p2[1], b"x")
        run_briefly(loop, 1)
        # The old callback of the replaced reader did not run; the new one
        # runs later (the fd is still readable).
        assert len(got) == 1, got
        run_briefly(loop, 2)
        assert got[1:] and got[1].endswith("-new")
        assert set(got[1:]) == {got[1]}
    finally:
        for fd in (*p1, *p2):
            loop.remove_reader(fd)
            _close(fd)


def test_writer_called_on_broken_pipe(loop):
    """An error condition (EPOLLERR: read end closed) wakes the writer."""
    r, w = os.pipe()
    got = []
    try:
        os.close(r)
        loop.add_writer(w, lambda: (got.append("w"), loop.remove_writer(w)))
        assert run_until(loop, lambda: got)
        assert got == ["w"]
    finally:
        loop.remove_writer(w)
        _close(r)
        _close(w)


def test_reader_and_writer_called_on_peer_close(loop, sockpair):
    a, b = sockpair
    got = set()
    loop.add_reader(a.fileno(), lambda: got.add("r"))
    b.close()
    assert run_until(loop, lambda: "r" in got)
    assert a.recv(10) == b""
    assert loop.remove_reader(a.fileno())


def test_fd_number_reused_after_remove_and_close(loop):
    got = []
    r1, w1 = os.pipe()
    loop.add_reader(r1, got.append, "old")
    assert loop.remove_reader(r1)
    os.close(r1)
    os.close(w1)
    r2, w2 = os.pipe()  # very likely the same numbers
    try:
        loop.add_reader(r2, lambda: (got.append("new"), os.read(r2, 10)))
        os.write(w2, b"x")
        assert run_until(loop, lambda: got)
        assert got == ["new"]
    finally:
        loop.remove_reader(r2)
        _close(r2)
        _close(w2)


def test_writer_args(loop, pipe):
    r, w = pipe
    got = []
    loop.add_writer(w, lambda *a: (got.append(a), loop.remove_writer(w)),
                    1, "two")
    assert run_until(loop, lambda: got)
    assert got == [(1, "two")]


def test_readers_on_two_loops(new_loop, sockpair):
    """Each loop has its own registrations."""
    a, b = sockpair
    lp1, lp2 = new_loop(), new_loop()
    got = []
    try:
        lp1.add_reader(a.fileno(), lambda: got.append(("lp1", a.recv(10))))
        lp2.add_reader(b.fileno(), lambda: got.append(("lp2", b.recv(10))))
        b.send(b"to-a")
        a.send(b"to-b")
        assert run_until(lp1, lambda: got)
        assert got == [("lp1", b"to-a")]
        assert run_until(lp2, lambda: len(got) == 2)
        assert got[1] == ("lp2", b"to-b")
        assert lp1.remove_reader(a.fileno()) is True
        assert lp1.remove_reader(b.fileno()) is False
    finally:
        lp1.close()
        lp2.close()
