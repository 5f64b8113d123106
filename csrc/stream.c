/* StreamTransport: the data path of stream transports (TCP and Unix
 * sockets), as the C base of evpy.transports.SocketTransport.
 *
 * The type subclasses asyncio.Transport (its layout starts with
 * BaseTransport's `_extra` slot, see IOObject), so isinstance checks and
 * get_extra_info work as on the default loop. What runs per message lives
 * here: reads into the loop's shared buffer and one exact-size bytes per
 * read (or straight into a BufferedProtocol's buffer), writes tried
 * immediately and the rest queued and flushed with one writev, flow
 * control, pause/resume reading as interest bits flushed in one batch
 * before the loop waits. Connection set-up, the close sequence's protocol
 * call and error reporting are Python (evpy/transports.py).
 */
#include "transport.h"
#include "faults.h"

#include <errno.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define WQ_IOV_MAX 64

typedef struct {
    PyObject *obj;   /* owned bytes object holding the data */
    const char *ptr; /* first unsent byte inside obj */
    Py_ssize_t len;  /* unsent bytes */
} wq_item;

typedef struct {
    TransportObject t;       /* must be first */
    PyObject *data_received; /* bound methods cached by set_protocol */
    PyObject *get_buffer;
    PyObject *buffer_updated;
    evpy_ring_t wq;   /* write queue: wq_item elements */
    Py_ssize_t wsize; /* bytes queued (wq's per-use count) */
    char buffered;    /* protocol is a BufferedProtocol */
    char eof;         /* write_eof() called */
    char big_reads;   /* last read was big: read in place */
} StreamObject;

/* Reads at least this big are worth a FIONREAD to skip the copy. */
#define STREAM_BIG_READ (32 * 1024)

/* The three shapes of asyncio's fd transports share this data path; where
 * asyncio's pipe transports behave differently from its socket ones the
 * code below says so. */
enum {
    STREAM_SOCKET = 0,     /* selector_events._SelectorSocketTransport */
    STREAM_READ_PIPE = 1,  /* unix_events._UnixReadPipeTransport */
    STREAM_WRITE_PIPE = 2, /* unix_events._UnixWritePipeTransport */
};

#define IS_SOCKET(self) ((self)->t.kind == STREAM_SOCKET)
#define TR(self) (&(self)->t)

static const char *
read_error_msg(StreamObject *self)
{
    return IS_SOCKET(self) ? "Fatal read error on socket transport"
                           : "Fatal read error on pipe transport";
}

static const char *
write_error_msg(StreamObject *self)
{
    return IS_SOCKET(self) ? "Fatal write error on socket transport"
                           : "Fatal write error on pipe transport";
}


/* -- helpers ------------------------------------------------------------ */

#define WQ_LEN(self) ((self)->wq.len)
#define WQ_AT(self, i) ((wq_item *)evpy_ring_slot(&(self)->wq, (i)))

static void
wq_clear(StreamObject *self)
{
    while (WQ_LEN(self)) {
        Py_CLEAR(WQ_AT(self, 0)->obj);
        evpy_ring_drop_front(&self->wq);
    }
    self->wsize = 0;
}

/* Queues len bytes at ptr. If owner is a bytes object the bytes are
 * referenced, otherwise copied. */
static int
wq_push(StreamObject *self, PyObject *owner, const char *ptr, Py_ssize_t len)
{
    PyObject *obj;
    if (owner != NULL && PyBytes_CheckExact(owner)) {
        obj = Py_NewRef(owner);
    }
    else {
        obj = PyBytes_FromStringAndSize(ptr, len);
        if (obj == NULL) {
            return -1;
        }
        ptr = PyBytes_AS_STRING(obj);
    }
    wq_item *it = evpy_ring_push_slot(&self->wq);
    if (it == NULL) {
        Py_DECREF(obj);
        PyErr_NoMemory();
        return -1;
    }
    it->obj = obj;
    it->ptr = ptr;
    it->len = len;
    self->wsize += len;
    return 0;
}

/* Drops the items queued after the first `len` (a failed writelines()
 * takes back what it queued). */
static void
wq_truncate(StreamObject *self, size_t len)
{
    while (WQ_LEN(self) > len) {
        wq_item *it = WQ_AT(self, WQ_LEN(self) - 1);
        self->wsize -= it->len;
        Py_CLEAR(it->obj);
        evpy_ring_drop_back(&self->wq);
    }
}

/* Drops n sent bytes from the front of the queue. */
static void
wq_consume(StreamObject *self, Py_ssize_t n)
{
    self->wsize -= n;
    while (n > 0 && WQ_LEN(self)) {
        wq_item *it = WQ_AT(self, 0);
        if (it->len > n) {
            it->ptr += n;
            it->len -= n;
            return;
        }
        n -= it->len;
        Py_CLEAR(it->obj);
        evpy_ring_drop_front(&self->wq);
    }
}

#define STREAM_READ_SITE(s) (IS_SOCKET(s) ? EVPY_FAULT_RECV : EVPY_FAULT_READ)

static Py_ssize_t
stream_send(StreamObject *self, const char *buf, Py_ssize_t len)
{
    Py_ssize_t n;
    do {
        n = EVPY_FAULT(
            IS_SOCKET(self) ? EVPY_FAULT_SEND : EVPY_FAULT_WRITE,
            IS_SOCKET(self)
                ? send(self->t.io.fd, buf, (size_t)len, MSG_NOSIGNAL)
                : write(self->t.io.fd, buf, (size_t)len));
    } while (n < 0 && errno == EINTR);
    return n;
}

static Py_ssize_t
stream_sendv(StreamObject *self, struct iovec *iov, int niov)
{
    Py_ssize_t n;
    do {
        if (IS_SOCKET(self)) {
            struct msghdr msg = {0};
            msg.msg_iov = iov;
            msg.msg_iovlen = (size_t)niov;
            n = EVPY_FAULT(EVPY_FAULT_SEND,
                           sendmsg(self->t.io.fd, &msg, MSG_NOSIGNAL));
        }
        else {
            n = EVPY_FAULT(EVPY_FAULT_WRITE, writev(self->t.io.fd, iov, niov));
        }
    } while (n < 0 && errno == EINTR);
    return n;
}

/* self._fatal_error(exc, message) in Python: reports and force-closes.
 * Steals exc. Returns -1 only for SystemExit/KeyboardInterrupt. */
/* A protocol callback raised: SystemExit/KeyboardInterrupt propagate,
 * anything else is a fatal error of the transport. */
static int
stream_shutdown_write(StreamObject *self)
{
    if (IS_SOCKET(self)) {
        if (shutdown(self->t.io.fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* -- readiness ------------------------------------------------------------ */

static int
stream_on_eof(StreamObject *self)
{
    if (self->t.kind == STREAM_READ_PIPE) {
        /* asyncio: closing, then eof_received() and connection_lost()
         * from the loop. */
        return evpy_tr_python_hook(TR(self), self->t.st->str_on_pipe_eof, 0);
    }
    PyObject *r = evpy_tr_call_protocol(TR(self),
                                        self->t.st->str_eof_received);
    if (r == NULL) {
        return evpy_tr_callback_failed(
            TR(self), "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return evpy_tr_callback_failed(
            TR(self), "Fatal error: protocol.eof_received() call failed.");
    }
    int rc = keep_open ? evpy_tr_set_want(TR(self), 0, EVPY_READ)
                       : evpy_tr_do_close(TR(self));
    if (rc < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    return 0;
}

static int
stream_read_buffered(StreamObject *self)
{
    static const char get_buffer_failed[] =
        "Fatal error: protocol.get_buffer() call failed.";
    if (self->get_buffer == NULL) {
        self->get_buffer = PyObject_GetAttr(self->t.protocol,
                                            self->t.st->str_get_buffer);
        if (self->get_buffer == NULL) {
            return evpy_tr_callback_failed(TR(self), get_buffer_failed);
        }
    }
    PyObject *cb = Py_NewRef(self->get_buffer);
    PyObject *minus1 = PyLong_FromLong(-1);
    PyObject *buf = minus1 ? PyObject_CallOneArg(cb, minus1) : NULL;
    Py_XDECREF(minus1);
    Py_DECREF(cb);
    if (buf == NULL) {
        return evpy_tr_callback_failed(TR(self), get_buffer_failed);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buf);
        return evpy_tr_callback_failed(TR(self), read_error_msg(self));
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        PyErr_SetString(PyExc_RuntimeError,
                        "get_buffer() returned an empty buffer");
        return evpy_tr_callback_failed(TR(self), get_buffer_failed);
    }
    Py_ssize_t n;
    do {
        n = EVPY_FAULT(STREAM_READ_SITE(self),
                       read(self->t.io.fd, view.buf, (size_t)view.len));
    } while (n < 0 && errno == EINTR);
    int err = errno;
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        return evpy_tr_fatal_errno(TR(self), err, read_error_msg(self));
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    if (self->buffer_updated == NULL) {
        self->buffer_updated = PyObject_GetAttr(
            self->t.protocol, self->t.st->str_buffer_updated);
        if (self->buffer_updated == NULL) {
            return evpy_tr_callback_failed(
                TR(self),
                "Fatal error: protocol.buffer_updated() call failed.");
        }
    }
    cb = Py_NewRef(self->buffer_updated);
    PyObject *pn = PyLong_FromSsize_t(n);
    PyObject *r = pn ? PyObject_CallOneArg(cb, pn) : NULL;
    Py_XDECREF(pn);
    Py_DECREF(cb);
    if (r == NULL) {
        return evpy_tr_callback_failed(
            TR(self), "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

/* Reads what is available into a new exact-size bytes (*out). Small
 * reads go through the loop's shared buffer and are copied out; once a
 * connection reads big chunks, FIONREAD sizes the bytes object and the
 * kernel copies straight into it, saving one copy of every byte. Returns
 * the size, 0 at EOF, or -1 with errno set (errno 0: a Python error). */
static Py_ssize_t
stream_read_bytes(StreamObject *self, PyObject **out)
{
    int fd = self->t.io.fd;
    Py_ssize_t n;
    int avail = 0;
    if (self->big_reads && ioctl(fd, FIONREAD, &avail) == 0
        && avail >= STREAM_BIG_READ) {
        Py_ssize_t want = avail < EVPY_READBUF_SIZE ? avail
                                                    : EVPY_READBUF_SIZE;
        PyObject *data = PyBytes_FromStringAndSize(NULL, want);
        if (data == NULL) {
            errno = 0;
            return -1;
        }
        do {
            n = EVPY_FAULT(STREAM_READ_SITE(self),
                           read(fd, PyBytes_AS_STRING(data), (size_t)want));
        } while (n < 0 && errno == EINTR);
        if (n == want) {
            *out = data;
            return n;
        }
        if (n > 0) { /* less than announced: trim by copying */
            *out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), n);
            Py_DECREF(data);
            if (*out == NULL) {
                errno = 0;
                return -1;
            }
            return n;
        }
        int err = errno;
        Py_DECREF(data);
        errno = err;
        return n;
    }
    char *buf = evpy_loop_readbuf(TR_LOOP(self));
    if (buf == NULL) {
        errno = 0;
        return -1;
    }
    do {
        n = EVPY_FAULT(STREAM_READ_SITE(self),
                       read(fd, buf, EVPY_READBUF_SIZE));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return n;
    }
    self->big_reads = n >= STREAM_BIG_READ;
    *out = PyBytes_FromStringAndSize(buf, n);
    if (*out == NULL) {
        errno = 0;
        return -1;
    }
    return n;
}

static int
stream_read(StreamObject *self)
{
    if (self->buffered) {
        return stream_read_buffered(self);
    }
    PyObject *data = NULL;
    Py_ssize_t n = stream_read_bytes(self, &data);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        if (errno == 0) { /* a Python error (MemoryError) */
            return evpy_tr_callback_failed(TR(self), read_error_msg(self));
        }
        return evpy_tr_fatal_errno(TR(self), errno, read_error_msg(self));
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    if (self->data_received == NULL) {
        self->data_received = PyObject_GetAttr(self->t.protocol,
                                               self->t.st->str_data_received);
        if (self->data_received == NULL) {
            Py_DECREF(data);
            return evpy_tr_callback_failed(
                TR(self),
                "Fatal error: protocol.data_received() call failed.");
        }
    }
    /* Beware: the protocol may call set_protocol() or close() from here. */
    PyObject *cb = Py_NewRef(self->data_received);
    PyObject *r = PyObject_CallOneArg(cb, data);
    Py_DECREF(cb);
    Py_DECREF(data);
    if (r == NULL) {
        if (!IS_SOCKET(self)) {
            /* A pipe transport lets it reach the exception handler as
             * an error of the callback, and stays open. */
            return evpy_tr_python_hook(TR(self),
                                       self->t.st->str_callback_failed, 1);
        }
        return evpy_tr_callback_failed(
            TR(self), "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

static int
stream_write_ready(StreamObject *self)
{
    if (self->t.conn_lost || WQ_LEN(self) == 0) {
        return 0;
    }
    struct iovec iov[WQ_IOV_MAX];
    int niov = 0;
    for (size_t i = 0; i < WQ_LEN(self) && niov < WQ_IOV_MAX; i++) {
        wq_item *it = WQ_AT(self, i);
        iov[niov].iov_base = (void *)it->ptr;
        iov[niov].iov_len = (size_t)it->len;
        niov++;
    }
    Py_ssize_t n = stream_sendv(self, iov, niov);
    if (n < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        (void)evpy_tr_set_want(TR(self), 0, EVPY_WRITE);
        wq_clear(self);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = evpy_fetch_exc();
        if (self->t.empty_waiter != NULL) {
            PyObject *r = PyObject_CallMethodOneArg(
                self->t.empty_waiter, self->t.st->str_set_exception, exc);
            if (r == NULL) {
                PyErr_WriteUnraisable((PyObject *)self);
            }
            Py_XDECREF(r);
        }
        if (!IS_SOCKET(self)) {
            self->t.conn_lost++;
        }
        return evpy_tr_fatal(TR(self), exc, write_error_msg(self));
    }
    wq_consume(self, n);
    if (evpy_tr_maybe_resume_protocol(TR(self)) < 0) { /* may write more */
        return -1;
    }
    if (WQ_LEN(self)) {
        return 0;
    }
    /* Closing also drops a write pipe's read interest (closure watch). */
    if (evpy_tr_set_want(TR(self), 0,
                         EVPY_TR_CLOSING(self) ? EVPY_READ | EVPY_WRITE
                                               : EVPY_WRITE)
        < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    if (self->t.empty_waiter != NULL) {
        PyObject *r = PyObject_CallMethodOneArg(
            self->t.empty_waiter, self->t.st->str_set_result, Py_None);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
    }
    if (EVPY_TR_CLOSING(self)) {
        if (evpy_tr_drained(TR(self)) < 0) {
            return -1;
        }
    }
    else if (self->eof && stream_shutdown_write(self) < 0) {
        return evpy_tr_fatal(TR(self), evpy_fetch_exc(),
                             write_error_msg(self));
    }
    return 0;
}

static int
stream_on_event(IOObject *io, unsigned events)
{
    StreamObject *self = (StreamObject *)io;
    if (io->loop == NULL) {
        return 0;
    }
    /* Interest may have been dropped after this event was queued. */
    if (!(evpy_loop_io_wanted(io->loop, io) & events)) {
        return 0;
    }
    if (events == EVPY_WRITE) {
        return stream_write_ready(self);
    }
    if (self->t.kind == STREAM_WRITE_PIPE) {
        /* The write end polls for reading only to learn that the reader
         * went away. */
        return evpy_tr_python_hook(TR(self), self->t.st->str_read_ready, 0);
    }
    return stream_read(self);
}

static const evpy_io_vtable stream_vtable = {
    .on_event = stream_on_event,
    .name = "stream",
};

/* -- Python API: writing -------------------------------------------------- */

static int
stream_check_writable(StreamObject *self, const char *what)
{
    if (self->eof) {
        PyErr_Format(PyExc_RuntimeError, "Cannot call %s() after write_eof()",
                     what);
        return -1;
    }
    if (self->t.empty_waiter != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "unable to %s; sendfile is in progress", what);
        return -1;
    }
    return 0;
}

/* Sends or queues one buffer; the caller checked state. */
static int
stream_write_buffer(StreamObject *self, PyObject *owner, const char *buf,
                    Py_ssize_t len)
{
    if (WQ_LEN(self) == 0) {
        Py_ssize_t n = stream_send(self, buf, len);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                int err = errno;
                if (!IS_SOCKET(self)) {
                    self->t.conn_lost++;
                }
                return evpy_tr_fatal_errno(TR(self), err,
                                           write_error_msg(self));
            }
            n = 0;
        }
        if (n == len) {
            return 0;
        }
        buf += n;
        len -= n;
        if (evpy_tr_want_write(TR(self)) < 0
            || wq_push(self, n ? NULL : owner, buf, len) < 0) {
            return -1;
        }
    }
    else if (wq_push(self, owner, buf, len) < 0) {
        return -1;
    }
    return evpy_tr_maybe_pause_protocol(TR(self));
}

static PyObject *
stream_write(StreamObject *self, PyObject *data)
{
    if (evpy_tr_check_bytes_like(data) < 0
        || stream_check_writable(self, "write") < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *res = NULL;
    if (view.len == 0) {
        res = Py_NewRef(Py_None);
    }
    else if (self->t.conn_lost
             || (self->t.kind == STREAM_WRITE_PIPE && EVPY_TR_CLOSING(self))) {
        res = evpy_tr_write_after_close(TR(self));
    }
    else if (stream_write_buffer(self, data, view.buf, view.len) == 0) {
        res = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&view);
    return res;
}

static PyObject *
stream_writelines(StreamObject *self, PyObject *list_of_data)
{
    if (stream_check_writable(self, "writelines") < 0) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(list_of_data,
                                    "writelines() argument must be an "
                                    "iterable of bytes-like objects");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (evpy_tr_check_bytes_like(items[i]) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    if (self->t.conn_lost
        || (self->t.kind == STREAM_WRITE_PIPE && EVPY_TR_CLOSING(self))) {
        Py_DECREF(seq);
        return n ? evpy_tr_write_after_close(TR(self)) : Py_NewRef(Py_None);
    }
    /* Queue everything, then flush with one writev. All or nothing: if
     * an item fails, what this call queued is taken back (nothing would
     * send it if the queue was empty before). */
    size_t queued_before = WQ_LEN(self);
    int was_empty = queued_before == 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        int rc = PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE);
        if (rc == 0) {
            rc = view.len ? wq_push(self, items[i], view.buf, view.len) : 0;
            PyBuffer_Release(&view);
        }
        if (rc < 0) {
            wq_truncate(self, queued_before);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    if (WQ_LEN(self) == 0) {
        Py_RETURN_NONE;
    }
    /* Try now; wait for writability (in a copy of this context) only for
     * what is left, as asyncio's writelines(). */
    if (was_empty) {
        if (stream_write_ready(self) < 0
            || (WQ_LEN(self) && evpy_tr_want_write(TR(self)) < 0)) {
            return NULL;
        }
    }
    if (WQ_LEN(self) && evpy_tr_maybe_pause_protocol(TR(self)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_write_eof(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (EVPY_TR_CLOSING(self) || self->eof) {
        Py_RETURN_NONE;
    }
    self->eof = 1;
    if (WQ_LEN(self) == 0 && stream_shutdown_write(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_can_write_eof(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

/* -- Python API: reading and lifetime ------------------------------------- */

/* Caches protocol.name in *slot; a missing method is looked up (and
 * fails) when data arrives, as asyncio does. */
static int
cache_method(PyObject *protocol, PyObject *name, PyObject **slot)
{
    *slot = PyObject_GetAttr(protocol, name);
    if (*slot == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
    }
    return 0;
}

int
evpy_stream_set_protocol(TransportObject *t, PyObject *protocol)
{
    StreamObject *self = (StreamObject *)t;
    evpy_state *st = t->st;
    int buffered = PyObject_IsInstance(protocol, st->BufferedProtocol);
    if (buffered < 0) {
        return -1;
    }
    Py_XSETREF(self->t.protocol, Py_NewRef(protocol));
    self->buffered = (char)buffered;
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    if (buffered) {
        return (cache_method(protocol, st->str_get_buffer, &self->get_buffer)
                    < 0
                || cache_method(protocol, st->str_buffer_updated,
                                &self->buffer_updated)
                       < 0)
                   ? -1
                   : 0;
    }
    return cache_method(protocol, st->str_data_received, &self->data_received);
}

static PyObject *
stream_set_protocol(StreamObject *self, PyObject *protocol)
{
    if (evpy_stream_set_protocol(TR(self), protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- attributes ----------------------------------------------------------- */

static PyObject *
stream_get_eof(StreamObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->eof);
}

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)stream_write, METH_O,
     "Write bytes: sent now if possible, else queued."},
    {"writelines", (PyCFunction)stream_writelines, METH_O,
     "Write a sequence of bytes-like objects with one writev."},
    {"write_eof", (PyCFunction)stream_write_eof, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)stream_can_write_eof, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)stream_set_protocol, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"_eof", (getter)stream_get_eof, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* -- type ----------------------------------------------------------------- */

static Py_ssize_t
stream_queued(TransportObject *t)
{
    return ((StreamObject *)t)->wsize;
}

static void
stream_clear_queue(TransportObject *t)
{
    wq_clear((StreamObject *)t);
}

static void
stream_clear_protocol(TransportObject *t)
{
    StreamObject *self = (StreamObject *)t;
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
}

static const evpy_transport_ops stream_ops = {
    .queued = stream_queued,
    .clear_queue = stream_clear_queue,
    .clear_protocol = stream_clear_protocol,
};

static PyObject *
stream_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    StreamObject *self = (StreamObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    evpy_ring_init(&self->wq, sizeof(wq_item), 8);
    if (evpy_tr_init(TR(self), type, &stream_vtable, &stream_ops) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
stream_traverse(StreamObject *self, visitproc visit, void *arg)
{
    int rc = evpy_tr_traverse(TR(self), visit, arg);
    if (rc) {
        return rc;
    }
    Py_VISIT(self->data_received);
    Py_VISIT(self->get_buffer);
    Py_VISIT(self->buffer_updated);
    for (size_t i = 0; i < WQ_LEN(self); i++) {
        Py_VISIT(WQ_AT(self, i)->obj);
    }
    return 0;
}

static int
stream_tp_clear(StreamObject *self)
{
    evpy_tr_clear(TR(self));
    return 0;
}

static void
stream_dealloc(StreamObject *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    evpy_tr_clear(TR(self));
    evpy_ring_free(&self->wq);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "C base of evpy's stream transports (sockets and pipes)."},
    {Py_tp_new, stream_tp_new},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_tp_clear},
    {Py_tp_dealloc, stream_dealloc},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    .name = "evpy._core.StreamTransport",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = stream_slots,
};

int
evpy_stream_add_type(PyObject *mod, evpy_state *st)
{
    st->StreamType = evpy_transport_make_type(mod, st, &stream_spec,
                                              "Transport", NULL);
    return st->StreamType == NULL ? -1 : 0;
}
