"""Edge cases found by reading evpy's C code: failures half-way through a
call, and callbacks that change what the C code is looking at. Each one
behaves the same on both loops."""
import asyncio
import socket

import evpy
from nethelpers import run


class Received(asyncio.Protocol):
    """Collects what arrives; `done` resolves at EOF."""

    def __init__(self, loop):
        self.data = bytearray()
        self.done = loop.create_future()

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.done.set_result(bytes(self.data))


def test_failed_writelines_queues_nothing(loop):
    # An item that cannot be read (a released memoryview) fails the whole
    # call: nothing of it is sent, and what is written next still is (a
    # queued first item used to strand the queue behind it).
    async def main():
        a, b = socket.socketpair()
        wt, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        rt, rp = await loop.create_connection(lambda: Received(loop), sock=b)
        gone = memoryview(b'lost')
        gone.release()
        try:
            wt.writelines([b'first', gone])
        except (ValueError, TypeError):  # asyncio 3.11 joins: TypeError
            pass
        else:
            raise AssertionError('writelines() took a released memoryview')
        wt.write(b'second')
        wt.writelines([b'-', b'third'])
        wt.write_eof()
        got = await rp.done
        if got == b'firstsecond-third' and not isinstance(loop, evpy.Loop):
            # asyncio 3.15 (gh-155888) queues the items one by one and
            # fails at the released view with 'first' already queued.
            got = got[len(b'first'):]
        assert got == b'second-third'
        wt.close()
        rt.close()
        await asyncio.sleep(0)
    run(loop, main())


class CancelsOnEq:
    """An argument whose comparison cancels the handles being compared
    (which drops their callbacks and arguments)."""

    def __init__(self, handles):
        self.handles = handles

    def __eq__(self, other):
        for h in self.handles:
            h.cancel()
        return True

    __hash__ = object.__hash__


def test_timer_handle_compare_survives_cancel_in_eq(loop):
    handles = []
    when = loop.time() + 3600

    def callback(*args):
        raise AssertionError('a cancelled timer ran')

    h1 = loop.call_at(when, callback, CancelsOnEq(handles), 1)
    h2 = loop.call_at(when, callback, CancelsOnEq(handles), 1)
    handles += [h1, h2]
    assert isinstance(h1 == h2, bool)
    assert h1.cancelled() and h2.cancelled()
    assert not (h1 < h2) and h1 <= h2
    loop.run_until_complete(asyncio.sleep(0))
