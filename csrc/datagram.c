/* DatagramTransport: the data path of datagram transports (UDP and
 * AF_UNIX datagram sockets), as the C base of
 * evpy.transports.DatagramTransport. Semantics follow asyncio's
 * selector_events._SelectorDatagramTransport.
 *
 * Receiving is one recvfrom into the loop's shared buffer and an
 * exact-size bytes per datagram, with the sender's address built here for
 * AF_INET, AF_INET6 and AF_UNIX. Sending to a connected peer is send();
 * otherwise the socket object's sendto() parses the address (hostnames,
 * "<broadcast>") exactly as the socket module does. A datagram that would
 * block is queued whole and sent when the socket is writable.
 */
#include "sockaddr.h"
#include "transport.h"
#include "faults.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* From Python 3.13 on, empty datagrams are sent and 8 header bytes are
 * counted per queued datagram. */
#if PY_VERSION_HEX >= 0x030D0000
#  define DGRAM_HEADER_BYTES 8
#  define SEND_EMPTY_DATAGRAMS 1
#else
#  define DGRAM_HEADER_BYTES 0
#  define SEND_EMPTY_DATAGRAMS 0
#endif

typedef struct {
    PyObject *data; /* bytes */
    PyObject *addr; /* destination, or None */
} dq_item;

typedef struct {
    TransportObject t;           /* must be first */
    PyObject *datagram_received; /* bound method cached by set_protocol */
    PyObject *address;           /* the peer given at creation, or NULL */
    evpy_ring_t dq;              /* queued datagrams: dq_item elements */
    Py_ssize_t qsize;            /* queued bytes (+ header bytes): dq's
                                  * per-use count */
    char connected;              /* the socket has a peer: use send() */
} DatagramObject;

#define TR(self) (&(self)->t)

static const char read_error[] = "Fatal read error on datagram transport";
static const char write_error[] = "Fatal write error on datagram transport";

/* -- queue ---------------------------------------------------------------- */

#define DQ_LEN(self) ((self)->dq.len)
#define DQ_AT(self, i) ((dq_item *)evpy_ring_slot(&(self)->dq, (i)))

static void
dq_pop_front(DatagramObject *self)
{
    dq_item *it = DQ_AT(self, 0);
    self->qsize -= PyBytes_GET_SIZE(it->data) + DGRAM_HEADER_BYTES;
    Py_CLEAR(it->data);
    Py_CLEAR(it->addr);
    evpy_ring_drop_front(&self->dq);
}

static void
dq_clear(DatagramObject *self)
{
    while (DQ_LEN(self)) {
        dq_pop_front(self);
    }
    self->qsize = 0;
}

/* Queues (data, addr); data is copied unless it is bytes. */
static int
dq_push(DatagramObject *self, PyObject *data, PyObject *addr)
{
    PyObject *copy = PyBytes_CheckExact(data) ? Py_NewRef(data)
                                              : PyBytes_FromObject(data);
    if (copy == NULL) {
        return -1;
    }
    dq_item *it = evpy_ring_push_slot(&self->dq);
    if (it == NULL) {
        Py_DECREF(copy);
        PyErr_NoMemory();
        return -1;
    }
    it->data = copy;
    it->addr = Py_NewRef(addr);
    self->qsize += PyBytes_GET_SIZE(copy) + DGRAM_HEADER_BYTES;
    return 0;
}

/* -- addresses ------------------------------------------------------------ */

/* -- readiness ------------------------------------------------------------ */

/* protocol.error_received(exc); steals exc. Its own failure is reported as
 * a failed callback (the transport stays open), as asyncio does. */
static int
dgram_error_received(DatagramObject *self, PyObject *exc)
{
    if (self->t.protocol == NULL) {
        /* Detached: nobody to tell. */
        Py_DECREF(exc);
        return 0;
    }
    PyObject *protocol = Py_NewRef(self->t.protocol);
    PyObject *r = PyObject_CallMethodOneArg(
        protocol, self->t.st->str_error_received, exc);
    Py_DECREF(protocol);
    Py_DECREF(exc);
    if (r == NULL) {
        return evpy_tr_python_hook(TR(self), self->t.st->str_callback_failed,
                                   1);
    }
    Py_DECREF(r);
    return 0;
}

/* Reads one datagram and delivers it: 1 if one was delivered (another
 * may be waiting), 0 if none was or it failed, -1 for SystemExit or
 * KeyboardInterrupt. */
static int
dgram_read(DatagramObject *self)
{
    if (self->t.conn_lost) {
        return 0;
    }
    char *buf = evpy_loop_readbuf(TR_LOOP(self));
    if (buf == NULL) {
        return evpy_tr_callback_failed(TR(self), read_error);
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    Py_ssize_t n;
    do {
        n = EVPY_FAULT(EVPY_FAULT_RECVFROM,
                       recvfrom(self->t.io.fd, buf, EVPY_READBUF_SIZE, 0,
                                (struct sockaddr *)&ss, &sl));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        /* ICMP errors (e.g. ECONNREFUSED) are the protocol's business. */
        PyErr_SetFromErrno(PyExc_OSError);
        return dgram_error_received(self, evpy_fetch_exc());
    }
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    PyObject *addr = NULL;
    if (data != NULL) {
        addr = sl == 0 ? Py_NewRef(Py_None)
                       : evpy_sockaddr_to_py((struct sockaddr *)&ss, sl);
    }
    if (data != NULL && addr == NULL && !PyErr_Occurred()) {
        addr = PyObject_CallMethodNoArgs(self->t.sock,
                                         self->t.st->str_getpeername);
    }
    if (addr == NULL) {
        Py_XDECREF(data);
        return evpy_tr_callback_failed(TR(self), read_error);
    }
    if (self->datagram_received == NULL) {
        self->datagram_received = PyObject_GetAttr(
            self->t.protocol, self->t.st->str_datagram_received);
    }
    PyObject *r = NULL;
    if (self->datagram_received != NULL) {
        /* Beware: the protocol may close the transport from here. */
        PyObject *cb = Py_NewRef(self->datagram_received);
        PyObject *args[2] = {data, addr};
        r = PyObject_Vectorcall(cb, args, 2, NULL);
        Py_DECREF(cb);
    }
    Py_DECREF(data);
    Py_DECREF(addr);
    if (r == NULL) {
        return evpy_tr_python_hook(TR(self), self->t.st->str_callback_failed,
                                   1);
    }
    Py_DECREF(r);
    return 1;
}

/* One sendto() of data to sa (NULL: the connected peer). Returns 1 if
 * sent, 0 if it would block, -1 with an exception set otherwise. */
static int
dgram_send_raw(DatagramObject *self, PyObject *data, const struct sockaddr *sa,
               socklen_t sl)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    Py_ssize_t n;
    do {
        n = EVPY_FAULT(EVPY_FAULT_SENDTO,
                       sendto(self->t.io.fd, view.buf, (size_t)view.len,
                              MSG_NOSIGNAL, sa, sl));
    } while (n < 0 && errno == EINTR);
    PyBuffer_Release(&view);
    if (n >= 0) {
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return 0;
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* One send attempt, as dgram_send_raw(). A numeric address is parsed
 * here (no socket.sendto() call, tuple and argument parsing per datagram);
 * anything else goes through the socket module. */
static int
dgram_send_one(DatagramObject *self, PyObject *data, PyObject *addr)
{
    if (self->connected) {
        return dgram_send_raw(self, data, NULL, 0);
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    int parsed = self->t.family < 0
                     ? 1
                     : evpy_sockaddr_from_py(self->t.family, addr, &ss, &sl);
    if (parsed < 0) {
        return -1;
    }
    if (parsed == 0) {
        return dgram_send_raw(self, data, (struct sockaddr *)&ss, sl);
    }
    PyObject *args[3] = {self->t.sock, data, addr};
    PyObject *r = PyObject_VectorcallMethod(self->t.st->str_sendto, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                            NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_BlockingIOError)
        || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* A send failed with an exception set: OSErrors go to error_received,
 * anything else is fatal. */
static int
dgram_send_failed(DatagramObject *self)
{
    if (evpy_tr_is_fatal_to_loop()) {
        return -1;
    }
    if (PyErr_ExceptionMatches(PyExc_OSError)) {
        return dgram_error_received(self, evpy_fetch_exc());
    }
    return evpy_tr_fatal(TR(self), evpy_fetch_exc(), write_error);
}

static int
dgram_write_ready(DatagramObject *self)
{
    while (DQ_LEN(self)) {
        dq_item *it = DQ_AT(self, 0);
        int rc = dgram_send_one(self, it->data, it->addr);
        if (rc == 0) {
            break;
        }
        dq_pop_front(self);
        if (rc < 0) {
            return dgram_send_failed(self);
        }
    }
    if (evpy_tr_maybe_resume_protocol(TR(self)) < 0) { /* may queue more */
        return -1;
    }
    if (DQ_LEN(self) == 0) {
        if (evpy_tr_set_want(TR(self), 0, EVPY_WRITE) < 0) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        if (EVPY_TR_CLOSING(self)) {
            return evpy_tr_drained(TR(self));
        }
    }
    return 0;
}

/* Datagrams read per readiness event, at most: draining a busy socket in
 * one go saves an epoll round trip per datagram, the bound keeps other
 * sockets and callbacks served. */
#define DGRAM_READS_PER_EVENT 32

static int
dgram_on_event(IOObject *io, unsigned events)
{
    DatagramObject *self = (DatagramObject *)io;
    if (io->loop == NULL || !(evpy_loop_io_wanted(io->loop, io) & events)) {
        return 0;
    }
    if (events == EVPY_WRITE) {
        return dgram_write_ready(self);
    }
    for (int i = 0; i < DGRAM_READS_PER_EVENT; i++) {
        int rc = dgram_read(self);
        /* Beware: the protocol may have closed the transport, paused
         * reading or closed the loop; stop when no more is wanted. */
        if (rc != 1 || io->loop == NULL
            || !(evpy_loop_io_wanted(io->loop, io) & EVPY_READ)) {
            return rc < 0 ? -1 : 0;
        }
    }
    return 0;
}

static const evpy_io_vtable dgram_vtable = {
    .on_event = dgram_on_event,
    .name = "datagram",
};

/* -- Python API ----------------------------------------------------------- */

static PyObject *
dgram_sendto(DatagramObject *self, PyObject *const *args, size_t nargsf,
             PyObject *kwnames)
{
    /* sendto(data, addr=None), either argument by keyword too. */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *data = nargs > 0 ? args[0] : NULL;
    PyObject *addr = nargs > 1 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError,
                        "sendto() takes data and an optional address");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot = NULL;
        if (PyUnicode_CompareWithASCIIString(name, "data") == 0) {
            slot = &data;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "addr") == 0) {
            slot = &addr;
        }
        if (slot == NULL || *slot != NULL) {
            PyErr_Format(PyExc_TypeError,
                         slot ? "sendto() got multiple values for argument "
                                "'%U'"
                              : "sendto() got an unexpected keyword argument "
                                "'%U'",
                         name);
            return NULL;
        }
        *slot = args[nargs + i];
    }
    if (data == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "sendto() missing required argument: 'data'");
        return NULL;
    }
    if (addr == NULL) {
        addr = Py_None;
    }
    if (evpy_tr_check_bytes_like(data) < 0) {
        return NULL;
    }
    Py_ssize_t len = PyObject_Length(data);
    if (len < 0) {
        return NULL;
    }
    if (!SEND_EMPTY_DATAGRAMS && len == 0) {
        Py_RETURN_NONE;
    }
    if (self->address != NULL) {
        if (addr != Py_None) {
            int eq = PyObject_RichCompareBool(addr, self->address, Py_EQ);
            if (eq < 0) {
                return NULL;
            }
            if (!eq) {
                PyErr_Format(PyExc_ValueError,
                             "Invalid address: must be None or %S",
                             self->address);
                return NULL;
            }
        }
        addr = self->address;
    }
    /* As asyncio: once the connection is lost a connected transport
     * drops what it is given, an unconnected one still sends until
     * connection_lost has released its fd (after that the fd number may
     * belong to another file). */
    if (self->t.conn_lost
        && (self->address != NULL || self->t.state == EVPY_TR_CLOSED)) {
        return evpy_tr_write_after_close(TR(self));
    }
    if (DQ_LEN(self) == 0) {
        int rc = dgram_send_one(self, data, addr);
        if (rc == 1) {
            Py_RETURN_NONE;
        }
        if (rc < 0) {
            return dgram_send_failed(self) < 0 ? NULL : Py_NewRef(Py_None);
        }
        if (evpy_tr_want_write(TR(self)) < 0) {
            return NULL;
        }
    }
    if (dq_push(self, data, addr) < 0
        || evpy_tr_maybe_pause_protocol(TR(self)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_set_protocol(DatagramObject *self, PyObject *protocol)
{
    /* datagram_received is looked up when the next datagram arrives (as
     * asyncio calls it): a missing or failing attribute is reported
     * there, nothing is swallowed here. */
    Py_XSETREF(self->t.protocol, Py_NewRef(protocol));
    Py_CLEAR(self->datagram_received);
    Py_RETURN_NONE;
}

static PyObject *
dgram_get_address(DatagramObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->address ? self->address : Py_None);
}

static int
dgram_set_address(DatagramObject *self, PyObject *v, void *Py_UNUSED(c))
{
    Py_XSETREF(self->address,
               (v == NULL || v == Py_None) ? NULL : Py_NewRef(v));
    return 0;
}

static PyObject *
dgram_get_connected(DatagramObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->connected);
}

static int
dgram_set_connected(DatagramObject *self, PyObject *v, void *Py_UNUSED(c))
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0) {
        return -1;
    }
    self->connected = (char)b;
    return 0;
}

static PyMethodDef dgram_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))dgram_sendto,
     METH_FASTCALL | METH_KEYWORDS,
     "sendto(data, addr=None): send now if possible, else queue."},
    {"set_protocol", (PyCFunction)dgram_set_protocol, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef dgram_getset[] = {
    {"_address", (getter)dgram_get_address, (setter)dgram_set_address, NULL,
     NULL},
    {"_connected", (getter)dgram_get_connected, (setter)dgram_set_connected,
     NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* -- type ----------------------------------------------------------------- */

static Py_ssize_t
dgram_queued(TransportObject *t)
{
    return ((DatagramObject *)t)->qsize;
}

static void
dgram_clear_queue(TransportObject *t)
{
    dq_clear((DatagramObject *)t);
}

static void
dgram_clear_protocol(TransportObject *t)
{
    Py_CLEAR(((DatagramObject *)t)->datagram_received);
}

static const evpy_transport_ops dgram_ops = {
    .queued = dgram_queued,
    .clear_queue = dgram_clear_queue,
    .clear_protocol = dgram_clear_protocol,
};

static PyObject *
dgram_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    DatagramObject *self = (DatagramObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    evpy_ring_init(&self->dq, sizeof(dq_item), 8);
    if (evpy_tr_init(TR(self), type, &dgram_vtable, &dgram_ops) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
dgram_traverse(DatagramObject *self, visitproc visit, void *arg)
{
    int rc = evpy_tr_traverse(TR(self), visit, arg);
    if (rc) {
        return rc;
    }
    Py_VISIT(self->datagram_received);
    Py_VISIT(self->address);
    for (size_t i = 0; i < DQ_LEN(self); i++) {
        dq_item *it = DQ_AT(self, i);
        Py_VISIT(it->data);
        Py_VISIT(it->addr);
    }
    return 0;
}

static int
dgram_tp_clear(DatagramObject *self)
{
    evpy_tr_clear(TR(self));
    Py_CLEAR(self->address);
    return 0;
}

static void
dgram_dealloc(DatagramObject *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)dgram_tp_clear(self);
    evpy_ring_free(&self->dq);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot dgram_slots[] = {
    {Py_tp_doc, "C base of evpy's datagram transports."},
    {Py_tp_new, dgram_tp_new},
    {Py_tp_methods, dgram_methods},
    {Py_tp_getset, dgram_getset},
    {Py_tp_traverse, dgram_traverse},
    {Py_tp_clear, dgram_tp_clear},
    {Py_tp_dealloc, dgram_dealloc},
    {0, NULL},
};

static PyType_Spec dgram_spec = {
    .name = "evpy._core.DatagramTransport",
    .basicsize = sizeof(DatagramObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = dgram_slots,
};

int
evpy_datagram_add_type(PyObject *mod, evpy_state *st)
{
    /* asyncio's datagram transport is a Transport too (its selector base
     * class is), and a DatagramTransport from 3.12 on. */
    st->DatagramType = evpy_transport_make_type(
        mod, st, &dgram_spec, "Transport", "DatagramTransport");
    return st->DatagramType == NULL ? -1 : 0;
}
