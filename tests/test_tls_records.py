"""The TLS data path under load: big single writes, bytes-like objects of
every shape, reads paused by the application, close() with data in
flight.  On evpy these go through evpy/tls_records.py (bounded record
batches); asyncio's own SSLProtocol must give the same results."""
import array
import asyncio
import hashlib
import os
import ssl
import types
from asyncio import sslproto

import pytest
from tlshelpers import close_all, run, tls_pair


class Sink(asyncio.Protocol):
    """Hashes what it receives; pauses reading every `every` deliveries
    for a moment; answers the digest once `total` bytes arrived (if
    given)."""

    def __init__(self, loop, total, every=0):
        self.loop = loop
        self.total = total
        self.every = every
        self.got = 0
        self.calls = 0
        self.pauses = 0
        self.hash = hashlib.sha256()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert type(data) is bytes and data
        self.calls += 1
        self.got += len(data)
        self.hash.update(data)
        if self.got == self.total:
            self.transport.write(self.hash.hexdigest().encode())
        elif self.every and self.calls % self.every == 0:
            self.pauses += 1
            self.transport.pause_reading()
            self.loop.call_later(0.001, self.transport.resume_reading)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def recording(cls, *args):
    """A protocol factory making cls(*args), and the list of what it made."""
    made = []

    def factory():
        made.append(cls(*args))
        return made[-1]
    return factory, made


async def sink_pair(loop, total=None, every=0):
    factory, sinks = recording(Sink, loop, total, every)
    server, tr, client = await tls_pair(loop, factory)
    return server, tr, client, sinks


def test_bytes_like_writes_of_every_shape(loop, errors):
    """One big bytes write, a bytearray, a memoryview slice and a
    memoryview of 4-byte items arrive intact and in order, and the write
    buffer accounting returns to zero."""
    big = os.urandom(5 * 1024 * 1024 + 7)
    items = array.array('I', range(300_000))
    parts = [big, bytearray(b'ab' * 70_000),
             memoryview(big)[3:200_003], memoryview(items), b'tail']
    blob = b''.join(bytes(p) if not isinstance(p, memoryview) else
                    p.tobytes() for p in parts)

    async def main():
        server, tr, client, sinks = await sink_pair(loop, len(blob), 13)
        for part in parts:
            tr.write(part)
        digest = await client.wait_for(64)
        assert digest == hashlib.sha256(blob).hexdigest().encode()
        assert sinks[0].pauses > 0
        assert tr.get_write_buffer_size() == 0
        await close_all(server, tr)
        assert await client.lost is None

    run(loop, main())
    assert errors == []


def test_close_right_after_big_write_flushes_everything(loop, errors):
    """close() with megabytes still unencrypted or unsent: every byte goes
    out before close_notify (the peer sees all data, then EOF)."""
    blob = os.urandom(6 * 1024 * 1024)

    async def main():
        server, tr, client, sinks = await sink_pair(loop)
        tr.write(blob)
        tr.close()
        assert await client.lost is None
        await asyncio.wait_for(sinks[0].lost, 10)
        assert sinks[0].got == len(blob)
        assert sinks[0].hash.digest() == hashlib.sha256(blob).digest()
        await close_all(server)

    run(loop, main())
    assert errors == []


class Pump(asyncio.Protocol):
    """Writes `blob` in 1 MiB pieces as fast as flow control lets it,
    recording pause_writing/resume_writing."""

    def __init__(self, blob):
        self.blob = blob
        self.sent = 0
        self.paused = False
        self.events = []

    def connection_made(self, transport):
        self.transport = transport
        self.pump()

    def pump(self):
        while not self.paused and self.sent < len(self.blob):
            self.transport.write(self.blob[self.sent:self.sent + (1 << 20)])
            self.sent += 1 << 20

    def pause_writing(self):
        self.paused = True
        self.events.append('pause')

    def resume_writing(self):
        self.paused = False
        self.events.append('resume')
        self.pump()


def test_writer_paused_by_a_reader_that_stalls(loop, errors):
    """A server pumping 24 MiB to a client that reads nothing for a while
    is paused (the records pile up behind the socket transport), resumed
    when the client reads again, and the client gets every byte in
    order."""
    blob = os.urandom(24 * 1024 * 1024)
    factory, servers = recording(Pump, blob)

    async def main():
        server, tr, client = await tls_pair(loop, factory)
        tr.pause_reading()
        last = -1
        for _ in range(200):  # until the server is stuck paused
            await asyncio.sleep(0.05)
            if servers and servers[0].paused and servers[0].sent == last:
                break
            last = servers[0].sent if servers else -1
        pump = servers[0]
        assert pump.paused and pump.events[-1] == 'pause'
        assert pump.sent < len(blob)
        tr.resume_reading()
        got = await client.wait_for(len(blob))
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        assert pump.events[-1] == 'resume'
        await close_all(server, tr)

    run(loop, main())
    assert errors == []


class Quitter(asyncio.Protocol):
    """Closes its transport on the first data it gets."""

    def __init__(self, loop):
        self.calls = 0
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.calls += 1
        self.transport.close()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_close_inside_data_received_with_more_in_flight(loop, errors):
    """The server closes on the first data while megabytes are still
    arriving: both ends see connection_lost, nothing reaches the exception
    handler."""
    factory, quitters = recording(Quitter, loop)

    async def main():
        server, tr, client = await tls_pair(loop, factory)
        tr.write(os.urandom(4 * 1024 * 1024))
        exc = await asyncio.wait_for(quitters[0].lost, 10)
        # Records that were already on their way after the server's
        # close_notify: OpenSSL 3 refuses them (both loops alike).
        assert exc is None or (
            isinstance(exc, ssl.SSLError) and
            exc.reason == 'APPLICATION_DATA_AFTER_CLOSE_NOTIFY'), exc
        assert quitters[0].calls >= 1
        await asyncio.wait_for(client.lost, 10)
        await close_all(server, tr)

    run(loop, main())
    assert errors == []


# ------------------------------------------- the private parts it relies on

@pytest.mark.evpy_only
def test_fast_path_checked_on_this_python(loop, evpy_mod):
    from evpy import tls_records
    # Every supported Python has what the record path needs.
    assert tls_records.check_sslproto(sslproto) == []
    assert loop._tls_fast_path is tls_records.FAST_PATH is True


def _fake_sslproto(**changes):
    """asyncio.sslproto with SSLProtocol changed: name=None removes the
    method, a function replaces it."""
    proto = type('SSLProtocol', (sslproto.SSLProtocol,), {})
    for name, value in changes.items():
        setattr(proto, name, value)
    return types.SimpleNamespace(
        SSLProtocol=proto, SSLProtocolState=sslproto.SSLProtocolState,
        SSLAgainErrors=sslproto.SSLAgainErrors,
        _SSLProtocolTransport=sslproto._SSLProtocolTransport)


@pytest.mark.evpy_only
@pytest.mark.parametrize('change, expect', [
    ({'_do_read__copied': None}, '_do_read__copied() is missing'),
    ({'_write_appdata': lambda self, data, more: None}, '_write_appdata'),
    ({'_do_read': lambda self: None}, 'no longer uses _do_read__copied'),
    ({'buffer_updated': lambda self, nbytes: None},
     'no longer uses _ssl_buffer_view'),
])
def test_check_sslproto_finds_changes(kind, evpy_mod, change, expect):
    from evpy import tls_records
    problems = tls_records.check_sslproto(_fake_sslproto(**change))
    assert any(expect in p for p in problems), problems


@pytest.mark.evpy_only
def test_forced_fallback_uses_asyncio_data_path(loop, evpy_mod,
                                                monkeypatch):
    # What a Python whose SSLProtocol changed shape gets: asyncio's own
    # data path, working, and the loop saying so.
    from evpy import tls_records
    monkeypatch.setattr(tls_records, 'FAST_PATH', False)
    assert loop._tls_fast_path is False
    data = os.urandom(300 * 1024)

    async def main():
        server, tr, client, sinks = await sink_pair(loop, total=len(data))
        assert type(tr._ssl_protocol) is sslproto.SSLProtocol
        tr.write(data)
        await client.wait_for(64)
        assert type(sinks[0].transport._ssl_protocol) is sslproto.SSLProtocol
        assert bytes(client.data) == hashlib.sha256(data).hexdigest(
            ).encode()
        await close_all(server, tr)

    run(loop, main())
