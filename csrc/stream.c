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
#include "evpy.h"

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define WQ_IOV_MAX 64
#define DEFAULT_HIGH_WATER (64 * 1024)
#define CONNLOST_WARN_THRESHOLD 5

typedef struct {
    PyObject *obj;     /* owned bytes object holding the data */
    const char *ptr;   /* first unsent byte inside obj */
    Py_ssize_t len;    /* unsent bytes */
} wq_item;

typedef struct {
    IOObject io;                 /* must be first */
    evpy_state *st;              /* borrowed: the type keeps the module */
    PyObject *sock;              /* socket.socket (or None for pipes) */
    PyObject *protocol;
    PyObject *data_received;     /* bound methods cached by set_protocol */
    PyObject *get_buffer;
    PyObject *buffer_updated;
    PyObject *empty_waiter;      /* sendfile support, or NULL */
    PyObject *server;
    wq_item *wq;                 /* write queue: a ring of wq_cap items */
    size_t wq_head;
    size_t wq_len;
    size_t wq_cap;
    Py_ssize_t wsize;            /* bytes queued */
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    int conn_lost;
    char buffered;               /* protocol is a BufferedProtocol */
    char closing;
    char eof;                    /* write_eof() called */
    char paused;                 /* pause_reading() called */
    char protocol_paused;        /* pause_writing() called */
    char kind;                   /* STREAM_SOCKET, STREAM_READ_PIPE, ... */
} StreamObject;

/* The three shapes of asyncio's fd transports share this data path; where
 * asyncio's pipe transports behave differently from its socket ones the
 * code below says so. */
enum {
    STREAM_SOCKET = 0,      /* selector_events._SelectorSocketTransport */
    STREAM_READ_PIPE = 1,   /* unix_events._UnixReadPipeTransport */
    STREAM_WRITE_PIPE = 2,  /* unix_events._UnixWritePipeTransport */
};

#define IS_SOCKET(self) ((self)->kind == STREAM_SOCKET)

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

#define STREAM_LOOP(self) ((self)->io.loop)

/* -- helpers ------------------------------------------------------------ */

static int
stream_set_want(StreamObject *self, unsigned set, unsigned clear)
{
    LoopObject *loop = STREAM_LOOP(self);
    if (loop == NULL) {
        return 0;
    }
    unsigned want = evpy_loop_io_wanted(loop, &self->io);
    unsigned nw = (want | set) & ~clear;
    if (nw == want) {
        return 0;
    }
    return evpy_loop_io_want(loop, &self->io, nw);
}

static void
wq_clear(StreamObject *self)
{
    while (self->wq_len) {
        wq_item *it = &self->wq[self->wq_head];
        Py_CLEAR(it->obj);
        self->wq_head = (self->wq_head + 1) % self->wq_cap;
        self->wq_len--;
    }
    self->wq_head = 0;
    self->wsize = 0;
}

/* Queues len bytes at ptr. If owner is a bytes object the bytes are
 * referenced, otherwise copied. */
static int
wq_push(StreamObject *self, PyObject *owner, const char *ptr, Py_ssize_t len)
{
    if (self->wq_len == self->wq_cap) {
        size_t ncap = self->wq_cap ? self->wq_cap * 2 : 8;
        wq_item *nq = PyMem_Malloc(sizeof(wq_item) * ncap);
        if (nq == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < self->wq_len; i++) {
            nq[i] = self->wq[(self->wq_head + i) % self->wq_cap];
        }
        PyMem_Free(self->wq);
        self->wq = nq;
        self->wq_head = 0;
        self->wq_cap = ncap;
    }
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
    wq_item *it = &self->wq[(self->wq_head + self->wq_len) % self->wq_cap];
    it->obj = obj;
    it->ptr = ptr;
    it->len = len;
    self->wq_len++;
    self->wsize += len;
    return 0;
}

/* Drops n sent bytes from the front of the queue. */
static void
wq_consume(StreamObject *self, Py_ssize_t n)
{
    self->wsize -= n;
    while (n > 0 && self->wq_len) {
        wq_item *it = &self->wq[self->wq_head];
        if (it->len > n) {
            it->ptr += n;
            it->len -= n;
            return;
        }
        n -= it->len;
        Py_CLEAR(it->obj);
        self->wq_head = (self->wq_head + 1) % self->wq_cap;
        self->wq_len--;
    }
}

static Py_ssize_t
stream_send(StreamObject *self, const char *buf, Py_ssize_t len)
{
    Py_ssize_t n;
    do {
        n = IS_SOCKET(self)
                ? send(self->io.fd, buf, (size_t)len, MSG_NOSIGNAL)
                : write(self->io.fd, buf, (size_t)len);
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
            n = sendmsg(self->io.fd, &msg, MSG_NOSIGNAL);
        }
        else {
            n = writev(self->io.fd, iov, niov);
        }
    } while (n < 0 && errno == EINTR);
    return n;
}

static inline int
is_fatal_to_loop(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit)
           || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

/* self._fatal_error(exc, message) in Python: reports and force-closes.
 * Steals exc. Returns -1 only for SystemExit/KeyboardInterrupt. */
static int
stream_fatal(StreamObject *self, PyObject *exc, const char *message)
{
    PyObject *msg = PyUnicode_FromString(message);
    PyObject *r = NULL;
    if (msg != NULL) {
        r = PyObject_CallMethod((PyObject *)self, "_fatal_error", "OO", exc,
                                msg);
        Py_DECREF(msg);
    }
    Py_DECREF(exc);
    if (r == NULL) {
        if (is_fatal_to_loop()) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

static int
stream_fatal_errno(StreamObject *self, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return stream_fatal(self, evpy_fetch_exc(), message);
}

/* A protocol callback raised: SystemExit/KeyboardInterrupt propagate,
 * anything else is a fatal error of the transport. */
static int
stream_callback_failed(StreamObject *self, const char *message)
{
    if (is_fatal_to_loop()) {
        return -1;
    }
    return stream_fatal(self, evpy_fetch_exc(), message);
}

static PyObject *
stream_call_protocol(StreamObject *self, const char *name)
{
    if (self->protocol == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "transport has no protocol");
        return NULL;
    }
    return PyObject_CallMethod(self->protocol, name, NULL);
}

/* pause_writing()/resume_writing(); failures go to the exception handler
 * as asyncio reports them. */
static int
stream_flow_call(StreamObject *self, const char *name)
{
    PyObject *r = stream_call_protocol(self, name);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (is_fatal_to_loop()) {
        return -1;
    }
    PyObject *exc = evpy_fetch_exc();
    r = PyObject_CallMethod((PyObject *)self, "_flow_control_failed", "sO",
                            name, exc);
    Py_DECREF(exc);
    if (r == NULL) {
        return is_fatal_to_loop() ? -1 : (PyErr_WriteUnraisable(
                                              (PyObject *)self), 0);
    }
    Py_DECREF(r);
    return 0;
}

static int
stream_maybe_pause_protocol(StreamObject *self)
{
    if (self->wsize <= self->high_water || self->protocol_paused) {
        return 0;
    }
    self->protocol_paused = 1;
    return stream_flow_call(self, "pause_writing");
}

static int
stream_maybe_resume_protocol(StreamObject *self)
{
    if (!self->protocol_paused || self->wsize > self->low_water) {
        return 0;
    }
    self->protocol_paused = 0;
    return stream_flow_call(self, "resume_writing");
}

static int
stream_schedule_connection_lost(StreamObject *self, PyObject *exc)
{
    PyObject *cb = PyObject_GetAttrString((PyObject *)self,
                                          "_call_connection_lost");
    if (cb == NULL) {
        return -1;
    }
    int rc = evpy_loop_call_soon(STREAM_LOOP(self), cb, exc);
    Py_DECREF(cb);
    return rc;
}

static int
stream_require_loop(StreamObject *self)
{
    if (STREAM_LOOP(self) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

static int
stream_do_close(StreamObject *self)
{
    if (self->closing) {
        return 0;
    }
    if (stream_require_loop(self) < 0) {
        return -1;
    }
    self->closing = 1;
    if (stream_set_want(self, 0, EVPY_READ) < 0) {
        return -1;
    }
    if (self->wq_len == 0) {
        self->conn_lost++;
        if (stream_set_want(self, 0, EVPY_WRITE) < 0) {
            return -1;
        }
        return stream_schedule_connection_lost(self, Py_None);
    }
    return 0;
}

static int
stream_force_close(StreamObject *self, PyObject *exc)
{
    if (self->conn_lost) {
        return 0;
    }
    if (stream_require_loop(self) < 0) {
        return -1;
    }
    wq_clear(self);
    unsigned clear = EVPY_WRITE;
    if (!self->closing) {
        self->closing = 1;
        clear |= EVPY_READ;
    }
    if (stream_set_want(self, 0, clear) < 0) {
        return -1;
    }
    self->conn_lost++;
    return stream_schedule_connection_lost(self, exc);
}

static int
stream_shutdown_write(StreamObject *self)
{
    if (IS_SOCKET(self)) {
        if (shutdown(self->io.fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* Calls self.<name>() (or self.<name>(exc) with the pending exception):
 * the cold paths that differ between socket and pipe transports. */
static int
stream_python_hook(StreamObject *self, const char *name, int with_exc)
{
    PyObject *r;
    if (with_exc) {
        if (is_fatal_to_loop()) {
            return -1;
        }
        PyObject *exc = evpy_fetch_exc();
        r = PyObject_CallMethod((PyObject *)self, name, "O", exc);
        Py_DECREF(exc);
    }
    else {
        r = PyObject_CallMethod((PyObject *)self, name, NULL);
    }
    if (r == NULL) {
        if (is_fatal_to_loop()) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

/* -- readiness ------------------------------------------------------------ */

static int
stream_on_eof(StreamObject *self)
{
    if (self->kind == STREAM_READ_PIPE) {
        /* asyncio: closing, then eof_received() and connection_lost()
         * from the loop. */
        return stream_python_hook(self, "_on_pipe_eof", 0);
    }
    PyObject *r = stream_call_protocol(self, "eof_received");
    if (r == NULL) {
        return stream_callback_failed(
            self, "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return stream_callback_failed(
            self, "Fatal error: protocol.eof_received() call failed.");
    }
    int rc = keep_open ? stream_set_want(self, 0, EVPY_READ)
                       : stream_do_close(self);
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
        self->get_buffer = PyObject_GetAttrString(self->protocol,
                                                  "get_buffer");
        if (self->get_buffer == NULL) {
            return stream_callback_failed(self, get_buffer_failed);
        }
    }
    PyObject *cb = Py_NewRef(self->get_buffer);
    PyObject *minus1 = PyLong_FromLong(-1);
    PyObject *buf = minus1 ? PyObject_CallOneArg(cb, minus1) : NULL;
    Py_XDECREF(minus1);
    Py_DECREF(cb);
    if (buf == NULL) {
        return stream_callback_failed(self, get_buffer_failed);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buf);
        return stream_callback_failed(self, read_error_msg(self));
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        PyErr_SetString(PyExc_RuntimeError,
                        "get_buffer() returned an empty buffer");
        return stream_callback_failed(self, get_buffer_failed);
    }
    Py_ssize_t n;
    do {
        n = read(self->io.fd, view.buf, (size_t)view.len);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        return stream_fatal_errno(self, err, read_error_msg(self));
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    if (self->buffer_updated == NULL) {
        self->buffer_updated = PyObject_GetAttrString(self->protocol,
                                                      "buffer_updated");
        if (self->buffer_updated == NULL) {
            return stream_callback_failed(
                self, "Fatal error: protocol.buffer_updated() call failed.");
        }
    }
    cb = Py_NewRef(self->buffer_updated);
    PyObject *pn = PyLong_FromSsize_t(n);
    PyObject *r = pn ? PyObject_CallOneArg(cb, pn) : NULL;
    Py_XDECREF(pn);
    Py_DECREF(cb);
    if (r == NULL) {
        return stream_callback_failed(
            self, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

static int
stream_read(StreamObject *self)
{
    if (self->buffered) {
        return stream_read_buffered(self);
    }
    char *buf = evpy_loop_readbuf(STREAM_LOOP(self));
    if (buf == NULL) {
        return stream_callback_failed(self, read_error_msg(self));
    }
    Py_ssize_t n;
    do {
        n = read(self->io.fd, buf, EVPY_READBUF_SIZE);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        return stream_fatal_errno(self, errno, read_error_msg(self));
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL) {
        return stream_callback_failed(self, read_error_msg(self));
    }
    if (self->data_received == NULL) {
        self->data_received = PyObject_GetAttrString(self->protocol,
                                                     "data_received");
        if (self->data_received == NULL) {
            Py_DECREF(data);
            return stream_callback_failed(
                self, "Fatal error: protocol.data_received() call failed.");
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
            return stream_python_hook(self, "_callback_failed", 1);
        }
        return stream_callback_failed(
            self, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

static int
stream_write_ready(StreamObject *self)
{
    if (self->conn_lost || self->wq_len == 0) {
        return 0;
    }
    struct iovec iov[WQ_IOV_MAX];
    int niov = 0;
    for (size_t i = 0; i < self->wq_len && niov < WQ_IOV_MAX; i++) {
        wq_item *it = &self->wq[(self->wq_head + i) % self->wq_cap];
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
        (void)stream_set_want(self, 0, EVPY_WRITE);
        wq_clear(self);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = evpy_fetch_exc();
        if (self->empty_waiter != NULL) {
            PyObject *r = PyObject_CallMethod(self->empty_waiter,
                                              "set_exception", "O", exc);
            if (r == NULL) {
                PyErr_WriteUnraisable((PyObject *)self);
            }
            Py_XDECREF(r);
        }
        if (!IS_SOCKET(self)) {
            self->conn_lost++;
        }
        return stream_fatal(self, exc, write_error_msg(self));
    }
    wq_consume(self, n);
    if (stream_maybe_resume_protocol(self) < 0) { /* may write more */
        return -1;
    }
    if (self->wq_len) {
        return 0;
    }
    /* Closing also drops a write pipe's read interest (closure watch). */
    if (stream_set_want(self, 0, self->closing ? EVPY_READ | EVPY_WRITE
                                               : EVPY_WRITE) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    if (self->empty_waiter != NULL) {
        PyObject *r = PyObject_CallMethod(self->empty_waiter, "set_result",
                                          "O", Py_None);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
    }
    if (self->closing) {
        PyObject *r = PyObject_CallMethod((PyObject *)self,
                                          "_call_connection_lost", "O",
                                          Py_None);
        if (r == NULL) {
            if (is_fatal_to_loop()) {
                return -1;
            }
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
    }
    else if (self->eof && stream_shutdown_write(self) < 0) {
        return stream_fatal(self, evpy_fetch_exc(), write_error_msg(self));
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
    if (self->kind == STREAM_WRITE_PIPE) {
        /* The write end polls for reading only to learn that the reader
         * went away. */
        return stream_python_hook(self, "_read_ready", 0);
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
    if (self->empty_waiter != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "unable to %s; sendfile is in progress", what);
        return -1;
    }
    return 0;
}

static int
check_bytes_like(PyObject *data)
{
    if (PyBytes_Check(data) || PyByteArray_Check(data)
        || PyMemoryView_Check(data)) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "data argument must be a bytes-like object, not '%.200s'",
                 Py_TYPE(data)->tp_name);
    return -1;
}

/* Sends or queues one buffer; the caller checked state. */
static int
stream_write_buffer(StreamObject *self, PyObject *owner, const char *buf,
                    Py_ssize_t len)
{
    if (self->wq_len == 0) {
        Py_ssize_t n = stream_send(self, buf, len);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                int err = errno;
                if (!IS_SOCKET(self)) {
                    self->conn_lost++;
                }
                return stream_fatal_errno(self, err, write_error_msg(self));
            }
            n = 0;
        }
        if (n == len) {
            return 0;
        }
        buf += n;
        len -= n;
        if (wq_push(self, n ? NULL : owner, buf, len) < 0) {
            return -1;
        }
        if (stream_set_want(self, EVPY_WRITE, 0) < 0) {
            return -1;
        }
    }
    else if (wq_push(self, owner, buf, len) < 0) {
        return -1;
    }
    return stream_maybe_pause_protocol(self);
}

static PyObject *
stream_write_after_close(StreamObject *self)
{
    if (self->conn_lost >= CONNLOST_WARN_THRESHOLD) {
        PyObject *r = PyObject_CallMethod((PyObject *)self,
                                          "_warn_write_after_close", NULL);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    self->conn_lost++;
    Py_RETURN_NONE;
}

static PyObject *
stream_write(StreamObject *self, PyObject *data)
{
    if (check_bytes_like(data) < 0 || stream_check_writable(self, "write") < 0) {
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
    else if (self->conn_lost
             || (self->kind == STREAM_WRITE_PIPE && self->closing)) {
        res = stream_write_after_close(self);
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
        if (check_bytes_like(items[i]) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    if (self->conn_lost
        || (self->kind == STREAM_WRITE_PIPE && self->closing)) {
        Py_DECREF(seq);
        return n ? stream_write_after_close(self) : Py_NewRef(Py_None);
    }
    /* Queue everything, then flush with one writev. */
    int was_empty = self->wq_len == 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        int rc = view.len ? wq_push(self, items[i], view.buf, view.len) : 0;
        PyBuffer_Release(&view);
        if (rc < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    if (self->wq_len == 0) {
        Py_RETURN_NONE;
    }
    if (was_empty) {
        if (stream_set_want(self, EVPY_WRITE, 0) < 0
            || stream_write_ready(self) < 0) {
            return NULL;
        }
    }
    if (self->wq_len && stream_maybe_pause_protocol(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_write_eof(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closing || self->eof) {
        Py_RETURN_NONE;
    }
    self->eof = 1;
    if (self->wq_len == 0 && stream_shutdown_write(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_can_write_eof(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
stream_get_write_buffer_size(StreamObject *self, PyObject *Py_UNUSED(ig))
{
    return PyLong_FromSsize_t(self->wsize);
}

static PyObject *
stream_get_write_buffer_limits(StreamObject *self, PyObject *Py_UNUSED(ig))
{
    return Py_BuildValue("(nn)", self->low_water, self->high_water);
}

static PyObject *
stream_set_limits_core(StreamObject *self, PyObject *args)
{
    Py_ssize_t high, low;
    if (!PyArg_ParseTuple(args, "nn:_set_write_buffer_limits", &high, &low)) {
        return NULL;
    }
    self->high_water = high;
    self->low_water = low;
    if (stream_maybe_pause_protocol(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- Python API: reading and lifetime -------------------------------------- */

static PyObject *
stream_is_reading(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!self->paused && !self->closing);
}

static PyObject *
stream_pause_reading(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->paused || self->closing) {
        Py_RETURN_NONE;
    }
    self->paused = 1;
    if (stream_set_want(self, 0, EVPY_READ) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_resume_reading(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closing || !self->paused) {
        Py_RETURN_NONE;
    }
    self->paused = 0;
    if (stream_set_want(self, EVPY_READ, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_start_reading(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->paused || self->closing) {
        Py_RETURN_NONE;
    }
    if (stream_set_want(self, EVPY_READ, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_is_closing(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closing);
}

static PyObject *
stream_close(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (stream_do_close(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_force_close_method(StreamObject *self, PyObject *exc)
{
    if (stream_force_close(self, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* asyncio's pipe transports' _close(exc): closing, drop queued data and
 * interest, connection_lost(exc) from the loop. */
static PyObject *
stream_close_now(StreamObject *self, PyObject *exc)
{
    if (stream_require_loop(self) < 0) {
        return NULL;
    }
    self->closing = 1;
    wq_clear(self);
    if (stream_set_want(self, 0, EVPY_READ | EVPY_WRITE) < 0
        || stream_schedule_connection_lost(self, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_abort(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    return stream_force_close_method(self, Py_None);
}

static PyObject *
stream_set_protocol(StreamObject *self, PyObject *protocol)
{
    int buffered = PyObject_IsInstance(protocol, self->st->BufferedProtocol);
    if (buffered < 0) {
        return NULL;
    }
    Py_XSETREF(self->protocol, Py_NewRef(protocol));
    self->buffered = (char)buffered;
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    /* Cache the bound methods; a missing one is looked up (and fails)
     * when data arrives, as asyncio does. */
    if (buffered) {
        self->get_buffer = PyObject_GetAttrString(protocol, "get_buffer");
        self->buffer_updated = PyObject_GetAttrString(protocol,
                                                      "buffer_updated");
    }
    else {
        self->data_received = PyObject_GetAttrString(protocol,
                                                     "data_received");
    }
    PyErr_Clear();
    Py_RETURN_NONE;
}

static PyObject *
stream_get_protocol(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->protocol ? self->protocol : Py_None);
}

/* _attach(loop, sock, fd, kind): registers with the loop; kind is 0 for
 * a socket, 1 for a read pipe, 2 for a write pipe. */
static PyObject *
stream_attach(StreamObject *self, PyObject *args)
{
    PyObject *loop, *sock;
    int fd, kind;
    if (!PyArg_ParseTuple(args, "OOii:_attach", &loop, &sock, &fd, &kind)) {
        return NULL;
    }
    if (kind < STREAM_SOCKET || kind > STREAM_WRITE_PIPE) {
        PyErr_SetString(PyExc_ValueError, "bad transport kind");
        return NULL;
    }
    if (self->io.loop != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "transport already attached");
        return NULL;
    }
    if (!PyObject_TypeCheck(loop, self->st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "_attach() needs an evpy loop");
        return NULL;
    }
    self->io.fd = fd;
    self->kind = (char)kind;
    if (evpy_loop_io_attach((LoopObject *)loop, &self->io) < 0) {
        self->io.fd = -1;
        return NULL;
    }
    Py_XSETREF(self->sock, Py_NewRef(sock));
    Py_RETURN_NONE;
}

/* _detach(): unregisters the fd (before the socket is closed) and drops
 * the queue and the protocol. */
static PyObject *
stream_detach(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->io.loop != NULL) {
        evpy_loop_io_detach(self->io.loop, &self->io);
    }
    wq_clear(self);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    Py_RETURN_NONE;
}

/* -- attributes -------------------------------------------------------------- */

static PyObject *
get_obj(PyObject *o)
{
    return Py_NewRef(o ? o : Py_None);
}

static int
set_obj(PyObject **slot, PyObject *value)
{
    Py_XSETREF(*slot, (value == NULL || value == Py_None) ? NULL
                                                         : Py_NewRef(value));
    return 0;
}

static PyObject *
stream_get_loop(StreamObject *self, void *Py_UNUSED(c))
{
    return get_obj((PyObject *)self->io.loop);
}

static PyObject *
stream_get_sock(StreamObject *self, void *Py_UNUSED(c))
{
    return get_obj(self->sock);
}

static int
stream_set_sock(StreamObject *self, PyObject *v, void *Py_UNUSED(c))
{
    return set_obj(&self->sock, v);
}

static PyObject *
stream_get_fd(StreamObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->io.fd);
}

static PyObject *
stream_get_protocol_attr(StreamObject *self, void *Py_UNUSED(c))
{
    return get_obj(self->protocol);
}

static PyObject *
stream_get_empty_waiter(StreamObject *self, void *Py_UNUSED(c))
{
    return get_obj(self->empty_waiter);
}

static int
stream_set_empty_waiter(StreamObject *self, PyObject *v, void *Py_UNUSED(c))
{
    return set_obj(&self->empty_waiter, v);
}

static PyObject *
stream_get_server(StreamObject *self, void *Py_UNUSED(c))
{
    return get_obj(self->server);
}

static int
stream_set_server(StreamObject *self, PyObject *v, void *Py_UNUSED(c))
{
    return set_obj(&self->server, v);
}

static PyObject *
stream_get_conn_lost(StreamObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->conn_lost);
}

static int
stream_set_conn_lost(StreamObject *self, PyObject *v, void *Py_UNUSED(c))
{
    long n = v ? PyLong_AsLong(v) : 0;
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    self->conn_lost = (int)n;
    return 0;
}

static PyObject *
stream_get_reading_polled(StreamObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->io.loop
                           && (evpy_loop_io_wanted(self->io.loop, &self->io)
                               & EVPY_READ));
}

static PyObject *
stream_get_writing_polled(StreamObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->io.loop
                           && (evpy_loop_io_wanted(self->io.loop, &self->io)
                               & EVPY_WRITE));
}

#define FLAG_GETTER(name)                                               \
    static PyObject *stream_get_##name(StreamObject *self,             \
                                       void *Py_UNUSED(c))             \
    {                                                                   \
        return PyBool_FromLong(self->name);                             \
    }
FLAG_GETTER(closing)
FLAG_GETTER(eof)
FLAG_GETTER(paused)
FLAG_GETTER(protocol_paused)
#undef FLAG_GETTER

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)stream_write, METH_O,
     "Write bytes: sent now if possible, else queued."},
    {"writelines", (PyCFunction)stream_writelines, METH_O,
     "Write a sequence of bytes-like objects with one writev."},
    {"write_eof", (PyCFunction)stream_write_eof, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)stream_can_write_eof, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)stream_get_write_buffer_size,
     METH_NOARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)stream_get_write_buffer_limits,
     METH_NOARGS, NULL},
    {"_set_write_buffer_limits", (PyCFunction)stream_set_limits_core,
     METH_VARARGS, NULL},
    {"is_reading", (PyCFunction)stream_is_reading, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)stream_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)stream_resume_reading, METH_NOARGS,
     NULL},
    {"_start_reading", (PyCFunction)stream_start_reading, METH_NOARGS,
     "Start reading (scheduled after connection_made)."},
    {"is_closing", (PyCFunction)stream_is_closing, METH_NOARGS, NULL},
    {"close", (PyCFunction)stream_close, METH_NOARGS,
     "Close after the queued data is sent."},
    {"abort", (PyCFunction)stream_abort, METH_NOARGS,
     "Close now, dropping queued data."},
    {"_force_close", (PyCFunction)stream_force_close_method, METH_O, NULL},
    {"_close_now", (PyCFunction)stream_close_now, METH_O, NULL},
    {"set_protocol", (PyCFunction)stream_set_protocol, METH_O, NULL},
    {"get_protocol", (PyCFunction)stream_get_protocol, METH_NOARGS, NULL},
    {"_attach", (PyCFunction)stream_attach, METH_VARARGS, NULL},
    {"_detach", (PyCFunction)stream_detach, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"_loop", (getter)stream_get_loop, NULL, NULL, NULL},
    {"_sock", (getter)stream_get_sock, (setter)stream_set_sock, NULL, NULL},
    {"_sock_fd", (getter)stream_get_fd, NULL, NULL, NULL},
    {"_protocol", (getter)stream_get_protocol_attr, NULL, NULL, NULL},
    {"_empty_waiter", (getter)stream_get_empty_waiter,
     (setter)stream_set_empty_waiter, NULL, NULL},
    {"_server", (getter)stream_get_server, (setter)stream_set_server, NULL,
     NULL},
    {"_conn_lost", (getter)stream_get_conn_lost,
     (setter)stream_set_conn_lost, NULL, NULL},
    {"_closing", (getter)stream_get_closing, NULL, NULL, NULL},
    {"_eof", (getter)stream_get_eof, NULL, NULL, NULL},
    {"_paused", (getter)stream_get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)stream_get_protocol_paused, NULL, NULL,
     NULL},
    {"_read_polled", (getter)stream_get_reading_polled, NULL, NULL, NULL},
    {"_write_polled", (getter)stream_get_writing_polled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef stream_members[] = {
    {"_high_water", Py_T_PYSSIZET, offsetof(StreamObject, high_water),
     Py_READONLY, NULL},
    {"_low_water", Py_T_PYSSIZET, offsetof(StreamObject, low_water),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* -- type ---------------------------------------------------------------------- */

static PyObject *
stream_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    StreamObject *self = (StreamObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    PyObject *mod = PyType_GetModuleByDef(type, &evpy_module_def);
    if (mod == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->st = evpy_get_state(mod);
    self->io.vt = &stream_vtable;
    self->io.fd = -1;
    self->high_water = DEFAULT_HIGH_WATER;
    self->low_water = DEFAULT_HIGH_WATER / 4;
    return (PyObject *)self;
}

static int
stream_traverse(StreamObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->io.extra);
    Py_VISIT(self->io.loop);
    Py_VISIT(self->sock);
    Py_VISIT(self->protocol);
    Py_VISIT(self->data_received);
    Py_VISIT(self->get_buffer);
    Py_VISIT(self->buffer_updated);
    Py_VISIT(self->empty_waiter);
    Py_VISIT(self->server);
    for (size_t i = 0; i < self->wq_len; i++) {
        Py_VISIT(self->wq[(self->wq_head + i) % self->wq_cap].obj);
    }
    return 0;
}

static int
stream_tp_clear(StreamObject *self)
{
    if (self->io.loop != NULL) {
        evpy_loop_io_detach(self->io.loop, &self->io);
    }
    Py_CLEAR(self->io.extra);
    Py_CLEAR(self->sock);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    Py_CLEAR(self->empty_waiter);
    Py_CLEAR(self->server);
    wq_clear(self);
    return 0;
}

static void
stream_dealloc(StreamObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)stream_tp_clear(self);
    PyMem_Free(self->wq);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "C base of evpy's stream (socket) transports."},
    {Py_tp_new, stream_tp_new},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_tp_clear},
    {Py_tp_dealloc, stream_dealloc},
    {0, NULL},
};

PyType_Spec evpy_stream_spec = {
    .name = "evpy._core.StreamTransport",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = stream_slots,
};

int
evpy_stream_check_layout(PyObject *base)
{
    /* asyncio.BaseTransport is `object` plus one slot (`_extra`): our
     * IOObject.extra must be exactly that slot. */
    Py_ssize_t want = (Py_ssize_t)(offsetof(IOObject, extra)
                                   + sizeof(PyObject *));
    if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_basicsize != want) {
        PyErr_SetString(PyExc_ImportError,
                        "evpy: unexpected layout of asyncio.Transport");
        return -1;
    }
    return 0;
}
