/* The accept loop and the transport over a connected fd: see accept.h.
 * The Python side (evpy/server.py, evpy/connect.py) keeps the cold paths:
 * debug mode, servers made through asyncio's private API, running out of
 * descriptors, and connections that need resolving, TLS or a local
 * address. */
#include "accept.h"

#include "sockaddr.h"
#include "transport.h"
#include "faults.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    LoopObject *loop;
    PyObject *factory;
    PyTypeObject *transport_type;
    PyObject *sockname; /* None unless the listener's is fixed */
    PyObject *server;
    int family, socktype, proto;
    int bind_context; /* 3.15: each connection runs in its ctx */
} accept_args;

/* Server._attach(transport) without its Python frame: the Server keeps
 * its clients as {id(transport): weakref} (evpy/server.py). */
static int
server_attach(PyObject *server, PyObject *t)
{
    evpy_state *st = ((TransportObject *)t)->st;
    PyObject *clients = PyObject_GetAttr(server, st->str_clients);
    if (clients == NULL) {
        return -1;
    }
    int rc = -1;
    PyObject *key = PyLong_FromVoidPtr(t);
    PyObject *ref = key ? PyWeakref_NewRef(t, NULL) : NULL;
    if (ref != NULL) {
        rc = PyDict_SetItem(clients, key, ref);
    }
    Py_XDECREF(ref);
    Py_XDECREF(key);
    Py_DECREF(clients);
    return rc;
}

/* A stream transport of type over the connected fd (non-blocking,
 * close-on-exec), which this owns from the start (closed if it fails):
 * extra as its extra info, protocol set, registered with server (or
 * none), then connection_made, the first read and waiter_cb(waiter, None)
 * scheduled as asyncio's transports schedule them. A new reference, or
 * NULL with an exception. */
static TransportObject *
adopt(LoopObject *loop, PyTypeObject *type, int fd, int family, int socktype,
      int proto, PyObject *protocol, PyObject *extra, PyObject *server,
      PyObject *waiter, PyObject *waiter_cb, PyObject *context)
{
    evpy_state *st = loop->st;
    PyObject *cb = NULL;
    /* cls.__new__(cls): StreamTransport's tp_new, which the Python
     * subclass inherits (it defines no __new__). */
    TransportObject *t = (TransportObject *)type->tp_new(type, st->empty_tuple,
                                                         NULL);
    if (t == NULL) {
        (void)close(fd);
        return NULL;
    }
    Py_XSETREF(t->io.extra, Py_NewRef(extra));
    if (evpy_tr_attach_fd(t, loop, fd, family, socktype, proto) < 0) {
        (void)close(fd);
        Py_DECREF(t);
        return NULL;
    }
    /* From here the transport owns fd. */
    if (evpy_stream_set_protocol(t, protocol) < 0) {
        goto fail;
    }
    if (server != NULL) {
        if (server_attach(server, (PyObject *)t) < 0) {
            goto fail;
        }
        t->server = Py_NewRef(server);
    }
    if (context != NULL) {
        /* transport._context = context: both directions' events run in
         * it, as do the callbacks scheduled below. */
        Py_XSETREF(t->io.ctx[EVPY_IO_CTX_READ], Py_NewRef(context));
        Py_XSETREF(t->io.ctx[EVPY_IO_CTX_WRITE], Py_NewRef(context));
        t->io.ctx_bound = 1;
    }
    cb = PyObject_GetAttr(protocol, st->str_connection_made);
    if (cb == NULL
        || evpy_loop_call_soon_in(loop, cb, (PyObject *)t, context) < 0) {
        goto fail;
    }
    Py_SETREF(cb, PyObject_GetAttr((PyObject *)t, st->str_start_reading));
    if (cb == NULL || evpy_loop_call_soon_in(loop, cb, NULL, context) < 0) {
        goto fail;
    }
    Py_CLEAR(cb);
    if (waiter != NULL && waiter != Py_None) {
        PyObject *args[2] = {waiter, Py_None};
        if (evpy_loop_call_soon_n(loop, waiter_cb, args, 2, context) < 0) {
            goto fail;
        }
    }
    return t;

fail:
    evpy_tr_discard(t);
    Py_XDECREF(cb);
    Py_DECREF(t);
    return NULL;
}

/* Makes the transport for one accepted fd (which this owns from the
 * start): protocol_factory(), then adopt() with asyncio's extra info and
 * the server's bookkeeping. -1 with an exception. */
static int
accept_one(accept_args *a, int fd, PyObject *addr, PyObject *ctx)
{
    evpy_state *st = a->loop->st;
    PyObject *protocol = PyObject_CallNoArgs(a->factory);
    PyObject *extra = protocol ? PyDict_New() : NULL;
    if (extra == NULL || PyDict_SetItem(extra, st->str_peername, addr) < 0
        || (a->sockname != Py_None
            && PyDict_SetItem(extra, st->str_sockname, a->sockname) < 0)) {
        (void)close(fd);
        Py_XDECREF(extra);
        Py_XDECREF(protocol);
        return -1;
    }
    /* 3.15: the protocol's callbacks and the I/O events run in ctx itself
     * (what connection_made() sets, data_received() sees); before, each
     * handle runs in a copy of it, as asyncio's do. */
    TransportObject *t = adopt(
        a->loop, a->transport_type, fd, a->family, a->socktype, a->proto,
        protocol, extra, a->server, NULL, NULL, a->bind_context ? ctx : NULL);
    Py_DECREF(extra);
    Py_DECREF(protocol);
    if (t == NULL) {
        return -1;
    }
    Py_DECREF(t);
    return 0;
}

/* The listening socket's fd, -1 once it is closed (a protocol factory may
 * close the server). */
static int
listener_fd(evpy_state *st, PyObject *sock)
{
    PyObject *r = PyObject_CallMethodNoArgs(sock, st->str_fileno);
    if (r == NULL) {
        return -2;
    }
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred()) {
        return -2;
    }
    return (int)fd;
}

/* accept_connections(loop, sock, backlog, protocol_factory, transport_type,
 *                    (family, type, proto), sockname, server
 *                    [, bind_context]) -> int
 * Accepts up to backlog connections (until accept() would block), each
 * set up in its own copy of the current context. Returns how many; OSError
 * from accept() itself (the caller handles EMFILE and friends). A
 * connection whose set-up fails is dropped (asyncio reports it only in
 * debug mode, which stays on the Python path); SystemExit and
 * KeyboardInterrupt propagate. */
static PyObject *
accept_connections(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    evpy_state *st = evpy_get_state(mod);
    accept_args a;
    PyObject *sock, *kind;
    Py_ssize_t backlog;
    if (nargs != 8 && nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "accept_connections() takes 8 or 9 arguments");
        return NULL;
    }
    a.bind_context = 0;
    if (nargs == 9) {
        a.bind_context = PyObject_IsTrue(args[8]);
        if (a.bind_context < 0) {
            return NULL;
        }
    }
    a.loop = (LoopObject *)args[0];
    sock = args[1];
    backlog = PyLong_AsSsize_t(args[2]);
    a.factory = args[3];
    a.transport_type = (PyTypeObject *)args[4];
    kind = args[5];
    a.sockname = args[6];
    a.server = args[7];
    if (backlog == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->LoopType) || !PyType_Check(args[4])
        || !PyType_IsSubtype(a.transport_type, st->StreamType)
        || evpy_sockaddr_kind(kind, &a.family, &a.socktype, &a.proto) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "accept_connections(): bad arguments");
        }
        return NULL;
    }
    Py_ssize_t n = 0;
    int lfd = listener_fd(st, sock);
    if (lfd == -2) {
        return NULL;
    }
    while (lfd >= 0 && n < backlog) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        int fd = EVPY_FAULT(EVPY_FAULT_ACCEPT,
                            accept4(lfd, (struct sockaddr *)&ss, &len,
                                    SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
                || errno == ECONNABORTED) {
                break;
            }
            return evpy_set_errno(-errno);
        }
        n++;
        PyObject *addr = len > 0
                             ? evpy_sockaddr_to_py((struct sockaddr *)&ss, len)
                             : PyUnicode_FromString("");
        if (addr == NULL && !PyErr_Occurred()) {
            addr = Py_NewRef(Py_None);
        }
        PyObject *ctx = addr ? PyContext_CopyCurrent() : NULL;
        if (ctx == NULL || PyContext_Enter(ctx) < 0) {
            (void)close(fd);
            Py_XDECREF(addr);
            Py_XDECREF(ctx);
            return NULL;
        }
        int rc = accept_one(&a, fd, addr, ctx);
        PyObject *exc = rc < 0 ? evpy_fetch_exc() : NULL;
        if (PyContext_Exit(ctx) < 0) {
            PyErr_WriteUnraisable(ctx);
        }
        Py_DECREF(ctx);
        Py_DECREF(addr);
        if (exc != NULL) {
            if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
                || PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
                evpy_restore_exc(exc);
                return NULL;
            }
            Py_DECREF(exc); /* dropped, as asyncio does outside debug mode */
        }
        /* The protocol factory may have closed the server. */
        lfd = listener_fd(st, sock);
        if (lfd == -2) {
            return NULL;
        }
    }
    return PyLong_FromSsize_t(n);
}

/* adopt_stream(loop, transport_type, fd, (family, type, proto), protocol,
 *              extra, waiter, waiter_cb[, context]) -> transport
 * The transport of a connection made in C (create_connection's numeric
 * path): see adopt(). The fd is this call's from the start. */
static PyObject *
adopt_stream(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    evpy_state *st = evpy_get_state(mod);
    int family, socktype, proto;
    if (nargs != 8 && nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "adopt_stream() takes 8 or 9 arguments");
        return NULL;
    }
    PyObject *context = nargs == 9 && args[8] != Py_None ? args[8] : NULL;
    long fd = PyLong_AsLong(args[2]);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "adopt_stream(): bad fd");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->LoopType) || !PyType_Check(args[1])
        || !PyType_IsSubtype((PyTypeObject *)args[1], st->StreamType)
        || !PyDict_Check(args[5])
        || (context != NULL && !PyContext_CheckExact(context))
        || evpy_sockaddr_kind(args[3], &family, &socktype, &proto) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "adopt_stream(): bad arguments");
        }
        (void)close((int)fd);
        return NULL;
    }
    return (PyObject *)adopt((LoopObject *)args[0], (PyTypeObject *)args[1],
                             (int)fd, family, socktype, proto, args[4],
                             args[5], NULL, args[6], args[7], context);
}

PyMethodDef evpy_accept_methods[] = {
    {"adopt_stream", (PyCFunction)(void (*)(void))adopt_stream, METH_FASTCALL,
     NULL},
    {"accept_connections", (PyCFunction)(void (*)(void))accept_connections,
     METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};
