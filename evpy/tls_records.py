"""The TLS record path: asyncio's SSLProtocol with evpy's data path.

asyncio's ``sslproto.SSLProtocol`` pumps records between the socket
transport and an ``ssl.SSLObject`` through two ``MemoryBIO``s.  Its state
machine (handshake, shutdown, timeouts, flow control, the app transport) is
what every loop shares, uvloop's included, and evpy keeps it.  Its data path
allocates big, though: every ``SSLObject.read()`` asks for a 256 KiB bytes
object (then shrinks it to the ~16 KiB record), and a large write is
encrypted whole into the outgoing BIO and read back as one bytes object of
the same size.  Blocks that big come from mmap or from the top of glibc's
heap, which malloc keeps trimming and growing again, so a bulk transfer
spends most of its CPU in page faults (measured: ~500,000 faults and 2x the
CPU of the fast case per GiB uploaded; which case a process lands in depends
on its allocation history).

``RecordProtocol`` changes only the data path:

* reads: the socket transport reads up to 256 KiB of records into a buffer
  the loop shares between all its connections (asyncio allocates 256 KiB
  per connection); they are decrypted into a 64 KiB buffer, also the
  loop's, and handed to ``data_received`` as one exact-size bytes object
  per 64 KiB -- one allocation and one copy per delivery, never more than
  64 KiB (below glibc's mmap threshold);
* writes: application data is encrypted at most 112 KiB (seven records)
  at a time, by offset into the backlog (no slice copies); the records are
  read out of the BIO in pieces under 128 KiB and handed to the socket
  transport up to four pieces per ``writelines()`` (one writev() for about
  480 KiB instead of a send() per piece).  What reaches the socket transport
  within one write call, and so pause_writing()/get_write_buffer_size()
  after it, is asyncio's;
* so a connection holds no read buffer of its own.

``BufferedProtocol`` applications keep asyncio's path: the records are
decrypted straight into the application's buffer there.
"""

import ssl
from asyncio import sslproto

READ_SIZE = 256 * 1024     # ciphertext per socket read (shared buffer)
CHUNK = 64 * 1024          # plaintext per data_received (shared buffer)
WRITE_CHUNK = 112 * 1024   # plaintext per SSL write: 7 records
OUT_CHUNK = 120 * 1024     # ciphertext per transport.write (< 128 KiB)
OUT_BATCH = 4              # pieces per transport.writelines (one writev)

_WRAPPED = sslproto.SSLProtocolState.WRAPPED
_FLUSHING = sslproto.SSLProtocolState.FLUSHING
_AGAIN = sslproto.SSLAgainErrors


def _raw(sslobj):
    """The C object behind an ssl.SSLObject: its read() and write() are
    what SSLObject's Python methods call, one frame per record less."""
    return getattr(sslobj, '_sslobj', sslobj)


def _flat(data):
    """data as a flat view of bytes if it is a contiguous memoryview."""
    if type(data) is memoryview and data.c_contiguous:
        return data.cast('B')
    return data


def _loop_buffers(loop):
    """The loop's (ciphertext, plaintext) read buffers, made on first use.
    One pair per loop serves every connection: the ciphertext is copied
    into the connection's incoming BIO first thing in buffer_updated(), and
    the plaintext into a bytes object before any application code runs."""
    buffers = loop._tls_buffers
    if buffers is None:
        buffers = loop._tls_buffers = (memoryview(bytearray(READ_SIZE)),
                                       memoryview(bytearray(CHUNK)))
    return buffers


class RecordProtocol(sslproto.SSLProtocol):
    """asyncio's SSLProtocol with a bounded, allocation-light data path."""

    # asyncio gives each connection a read buffer of max_size bytes (256
    # KiB); here it is never used (get_buffer returns the loop's).
    max_size = 1
    _write_pos = 0  # bytes of _write_backlog[0] already encrypted

    def connection_lost(self, exc):
        self._write_pos = 0  # asyncio clears the backlog
        return super().connection_lost(exc)

    # -- reads ---------------------------------------------------------------

    def get_buffer(self, n):
        # asyncio's buffer_updated() reads _ssl_buffer_view.
        view = self._ssl_buffer_view = _loop_buffers(self._loop)[0]
        return view

    def _do_read__copied(self):
        view = _loop_buffers(self._loop)[1]
        read = _raw(self._sslobj).read
        count = 1
        filled = 0
        try:
            while True:
                count = read(CHUNK - filled, view[filled:])
                if not count:
                    break
                filled += count
                if filled == CHUNK:
                    filled = 0
                    self._app_protocol.data_received(bytes(view))
                    if (self._app_reading_paused or
                            self._state not in (_WRAPPED, _FLUSHING)):
                        return
        except _AGAIN:
            pass
        if filled:
            self._app_protocol.data_received(bytes(view[:filled]))
        if not count:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()

    def _do_read__buffered(self):
        # asyncio's reads the rest of a partly filled buffer into buf[n:],
        # which for a bytearray (what most BufferedProtocols return) is a
        # copy: whenever a record boundary splits the buffer, bytes are lost
        # and the previous ones delivered again.  Here every read goes
        # through a view of the application's buffer.
        buf = self._app_protocol_get_buffer(self._get_read_buffer_size())
        read = _raw(self._sslobj).read
        filled = 0
        count = 1
        with memoryview(buf) as whole, whole.cast('B') as view:
            wants = view.nbytes
            if not wants:
                raise RuntimeError('get_buffer() returned an empty buffer')
            try:
                while filled < wants:
                    with view[filled:] as rest:
                        count = read(wants - filled, rest)
                    if not count:
                        break
                    filled += count
                else:
                    # Full: more may be decrypted already; read it from the
                    # loop, as asyncio does.
                    self._loop.call_soon(self._do_read)
            except _AGAIN:
                pass
        if filled:
            self._app_protocol_buffer_updated(filled)
        if not count:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()

    # -- shutdown ------------------------------------------------------------

    def _do_shutdown(self):
        # Records the peer sent before it saw our close_notify can still
        # hold application data; OpenSSL's unwrap() fails on them
        # (APPLICATION_DATA_AFTER_CLOSE_NOTIFY) and asyncio's shutdown then
        # never completes cleanly (a connection closed while reading was
        # paused always ends that way).  Nothing is delivered once shutdown
        # has begun, so read them out of the way first.
        if not self._eof_received:
            self._discard_appdata()
        super()._do_shutdown()

    def _discard_appdata(self):
        view = _loop_buffers(self._loop)[1]
        read = _raw(self._sslobj).read
        try:
            while read(CHUNK, view):
                pass
        except (*_AGAIN, ssl.SSLZeroReturnError):
            # SSLZeroReturnError: the peer's close_notify, which unwrap()
            # then completes on.
            pass

    # -- writes --------------------------------------------------------------

    def _write_appdata(self, list_of_data):
        # Count and slice every buffer in bytes (a memoryview's len() is
        # in items of its format, and its slices too); bytes pass as is.
        for data in list_of_data:
            if type(data) is memoryview and (data.ndim != 1 or
                                             data.itemsize != 1):
                list_of_data = [_flat(d) for d in list_of_data]
                break
        super()._write_appdata(list_of_data)

    def _do_write(self):
        # asyncio's _do_write, encrypting at most WRITE_CHUNK bytes per
        # SSLObject.write() and passing the records on after each piece.
        # Like asyncio, whether they go to the socket transport now is
        # decided once, up front: a pause it signals midway stops nothing.
        backlog = self._write_backlog
        write = _raw(self._sslobj).write
        flush = not self._ssl_writing_paused
        # Records ready for the socket, handed over a few pieces at a time
        # with writelines(): one writev() instead of a send() per piece.
        out = []
        try:
            while backlog:
                data = backlog[0]
                pos = self._write_pos
                left = len(data) - pos
                if pos or left > WRITE_CHUNK:
                    with memoryview(data) as whole:
                        with whole[pos:pos + WRITE_CHUNK] as piece:
                            count = write(piece)
                else:
                    count = write(data)
                self._write_buffer_size -= count
                if count < left:
                    self._write_pos = pos + count
                else:
                    self._write_pos = 0
                    del backlog[0]
                if flush:
                    self._take_outgoing(out)
                    if len(out) >= OUT_BATCH:
                        self._transport.writelines(out)
                        out.clear()
        except _AGAIN:
            pass
        if out:
            self._transport.writelines(out)
        self._process_outgoing()

    def _take_outgoing(self, out):
        outgoing = self._outgoing
        while outgoing.pending:
            out.append(outgoing.read(OUT_CHUNK))

    def _flush_outgoing(self):
        outgoing = self._outgoing
        while outgoing.pending:
            self._transport.write(outgoing.read(OUT_CHUNK))

    def _process_outgoing(self):
        # asyncio's, handing the outgoing BIO over in OUT_CHUNK pieces
        if not self._ssl_writing_paused:
            self._flush_outgoing()
        self._control_app_writing()
