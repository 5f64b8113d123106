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

All of that leans on private parts of asyncio's SSLProtocol.  At import,
``check_sslproto()`` verifies each one this module uses on the running
Python: the methods with their parameters, the attributes (assigned
somewhere in SSLProtocol's code), the module names, and that asyncio still
calls the methods overridden here from where this module expects.  If any
is missing, ``FAST_PATH`` is False, ``FAST_PATH_PROBLEMS`` says why, and
``protocol_class()`` hands out asyncio's stock SSLProtocol (its data path:
slower, correct); ``loop._tls_fast_path`` shows which one a loop uses.
"""

import inspect
import os
import ssl

from asyncio import sslproto

READ_SIZE = 256 * 1024     # ciphertext per socket read (shared buffer)
CHUNK = 64 * 1024          # plaintext per data_received (shared buffer)
WRITE_CHUNK = 112 * 1024   # plaintext per SSL write: 7 records
OUT_CHUNK = 120 * 1024     # ciphertext per transport.write (< 128 KiB)
OUT_BATCH = 4              # pieces per transport.writelines (one writev)

# -- what this module needs from asyncio.sslproto ----------------------------

# SSLProtocol methods used or overridden here: their parameters (self
# included), as asyncio 3.11-3.15 define them.
_METHODS = {
    'connection_lost': ('self', 'exc'),
    'get_buffer': ('self', 'n'),
    'buffer_updated': ('self', 'nbytes'),
    '_do_read': ('self',),
    '_do_read__copied': ('self',),
    '_do_read__buffered': ('self',),
    '_get_read_buffer_size': ('self',),
    '_do_shutdown': ('self',),
    '_write_appdata': ('self', 'list_of_data'),
    '_do_write': ('self',),
    '_process_outgoing': ('self',),
    '_call_eof_received': ('self',),
    '_start_shutdown': ('self',),
    '_control_app_writing': ('self',),
}
# Instance attributes read or written here.
_ATTRIBUTES = (
    '_ssl_buffer_view', '_loop', '_sslobj', '_app_protocol',
    '_app_reading_paused', '_state', '_write_backlog', '_ssl_writing_paused',
    '_write_buffer_size', '_outgoing', '_transport', '_incoming',
    '_eof_received', '_app_protocol_get_buffer',
    '_app_protocol_buffer_updated',
)
# (caller, callee): asyncio's own code must still reach the overridden
# method (or read the attribute) from there, or the override is dead code.
_CALLS = (
    ('buffer_updated', '_ssl_buffer_view'),
    ('_do_read', '_do_read__copied'),
    ('_do_read', '_do_read__buffered'),
    ('buffer_updated', '_do_shutdown'),
    ('_do_write', '_process_outgoing'),
)


def _names(func):
    code = getattr(func, '__code__', None)
    return set(code.co_names) if code is not None else set()


def check_sslproto(module):
    """Problems (a list of str) that keep this module's data path from
    working with `module` (asyncio.sslproto or a stand-in); [] if none."""
    problems = []
    proto = getattr(module, 'SSLProtocol', None)
    if not isinstance(proto, type):
        return ['sslproto.SSLProtocol is missing']
    state = getattr(module, 'SSLProtocolState', None)
    for name in ('WRAPPED', 'FLUSHING'):
        if not hasattr(state, name):
            problems.append(f'sslproto.SSLProtocolState.{name} is missing')
    again = getattr(module, 'SSLAgainErrors', None)
    if not (isinstance(again, tuple) and again
            and all(isinstance(e, type) and issubclass(e, BaseException)
                    for e in again)):
        problems.append('sslproto.SSLAgainErrors is not a tuple of '
                        'exception classes')
    assigned = set()
    for name in dir(proto):
        assigned |= _names(getattr(proto, name, None))
    for name, params in _METHODS.items():
        func = getattr(proto, name, None)
        if not callable(func):
            problems.append(f'SSLProtocol.{name}() is missing')
            continue
        try:
            got = tuple(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            got = None
        if got != params:
            problems.append(f'SSLProtocol.{name}{got} is not '
                            f'{name}({", ".join(params)})')
    for name in _ATTRIBUTES:
        if name not in assigned:
            problems.append(f'SSLProtocol no longer uses self.{name}')
    for caller, callee in _CALLS:
        if callee not in _names(getattr(proto, caller, None)):
            problems.append(f'SSLProtocol.{caller}() no longer uses {callee}')
    transport = getattr(module, '_SSLProtocolTransport', None)
    if '_write_appdata' not in (_names(getattr(transport, 'write', None))
                                | _names(getattr(transport, 'writelines',
                                                 None))):
        problems.append("the SSL transport's write() no longer calls "
                        "_write_appdata()")
    return problems


FAST_PATH_PROBLEMS = check_sslproto(sslproto)
if os.environ.get('EVPY_TLS_FAST_PATH') == '0':
    FAST_PATH_PROBLEMS.append('disabled by EVPY_TLS_FAST_PATH=0')
# Read by protocol_class() at every connection; tests flip it.
FAST_PATH = not FAST_PATH_PROBLEMS

if FAST_PATH:
    _WRAPPED = sslproto.SSLProtocolState.WRAPPED
    _FLUSHING = sslproto.SSLProtocolState.FLUSHING
    _AGAIN = sslproto.SSLAgainErrors
else:  # RecordProtocol is never instantiated then
    _WRAPPED = _FLUSHING = None
    _AGAIN = ()


def protocol_class():
    """The SSLProtocol class for new TLS connections: RecordProtocol, or
    asyncio's own when this Python's SSLProtocol has not the expected
    shape (see FAST_PATH_PROBLEMS)."""
    return RecordProtocol if FAST_PATH else sslproto.SSLProtocol


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
        """asyncio's connection_lost, with the partial-write offset
        reset."""
        self._write_pos = 0  # asyncio clears the backlog
        return super().connection_lost(exc)

    # -- reads ---------------------------------------------------------------

    def get_buffer(self, n):
        """The loop's shared TLS read buffer (asyncio's buffer_updated()
        reads it back through _ssl_buffer_view)."""
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
