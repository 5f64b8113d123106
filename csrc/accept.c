/* The accept loop: see accept.h. The Python side (evpy/server.py) keeps
 * the cold paths: debug mode, servers made through asyncio's private API,
 * and running out of descriptors. */
#include "accept.h"

#include "sockaddr.h"
#include "transport.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    LoopObject *loop;
    PyObject *factory;
    PyTypeObject *transport_type;
    PyObject *sockname;         /* None unless the listener's is fixed */
    PyObject *server;
    int family, socktype, proto;
    int bind_context;           /* 3.15: each connection runs in its ctx */
} accept_args;

/* Makes the transport for one accepted fd (which this owns from the
 * start): protocol_factory(), the transport with asyncio's extra info,
 * the server's bookkeeping, then connection_made and the first read
 * scheduled as asyncio schedules them. -1 with an exception. */
static int
accept_one(accept_args *a, int fd, PyObject *addr, PyObject *ctx)
{
    evpy_state *st = a->loop->st;
    PyObject *protocol = NULL, *extra = NULL, *cb = NULL;
    TransportObject *t = NULL;

    protocol = PyObject_CallNoArgs(a->factory);
    extra = PyDict_New();
    if (protocol == NULL || extra == NULL
        || PyDict_SetItem(extra, st->str_peername, addr) < 0
        || (a->sockname != Py_None
            && PyDict_SetItem(extra, st->str_sockname, a->sockname) < 0)) {
        goto fail_fd;
    }
    /* cls.__new__(cls): StreamTransport's tp_new, which the Python
     * subclass inherits (it defines no __new__). */
    t = (TransportObject *)a->transport_type->tp_new(a->transport_type,
                                                      st->empty_tuple, NULL);
    if (t == NULL) {
        goto fail_fd;
    }
    Py_XSETREF(t->io.extra, extra);
    extra = NULL;
    if (evpy_tr_attach_fd(t, a->loop, fd, a->family, a->socktype, a->proto)
        < 0) {
        goto fail_fd;
    }
    /* From here the transport owns fd. */
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)t,
                                            st->str_set_protocol, protocol);
    if (r == NULL) {
        goto fail_transport;
    }
    Py_DECREF(r);
    r = PyObject_CallMethodOneArg(a->server, st->str_attach, (PyObject *)t);
    if (r == NULL) {
        goto fail_transport;
    }
    Py_DECREF(r);
    t->server = Py_NewRef(a->server);
    /* 3.15: the protocol's callbacks and the I/O events run in ctx itself
     * (what connection_made() sets, data_received() sees); before, each
     * handle runs in a copy of it, as asyncio's do. */
    PyObject *run_in = NULL;
    if (a->bind_context) {
        Py_XSETREF(t->io.ctx[EVPY_IO_CTX_READ], Py_NewRef(ctx));
        Py_XSETREF(t->io.ctx[EVPY_IO_CTX_WRITE], Py_NewRef(ctx));
        t->io.ctx_bound = 1;
        run_in = ctx;
    }
    cb = PyObject_GetAttr(protocol, st->str_connection_made);
    if (cb == NULL
        || evpy_loop_call_soon_in(a->loop, cb, (PyObject *)t, run_in) < 0) {
        goto fail_transport;
    }
    Py_SETREF(cb, PyObject_GetAttr((PyObject *)t, st->str_start_reading));
    if (cb == NULL || evpy_loop_call_soon_in(a->loop, cb, NULL, run_in) < 0) {
        goto fail_transport;
    }
    Py_DECREF(cb);
    Py_DECREF(protocol);
    Py_DECREF(t);
    return 0;

fail_fd:
    (void)close(fd);
    Py_XDECREF(t);
    Py_XDECREF(extra);
    Py_XDECREF(protocol);
    return -1;
fail_transport:
    evpy_tr_discard(t);
    Py_XDECREF(cb);
    Py_DECREF(t);
    Py_DECREF(protocol);
    return -1;
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
    if (!PyObject_TypeCheck(args[0], st->LoopType)
        || !PyType_Check(args[4])
        || !PyType_IsSubtype(a.transport_type, st->StreamType)
        || !PyArg_ParseTuple(kind, "iii", &a.family, &a.socktype,
                             &a.proto)) {
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
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
                || errno == ECONNABORTED) {
                break;
            }
            return evpy_set_errno(-errno);
        }
        n++;
        PyObject *addr = len > 0 ? evpy_sockaddr_to_py((struct sockaddr *)&ss,
                                                       len)
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
                || PyErr_GivenExceptionMatches(exc,
                                               PyExc_KeyboardInterrupt)) {
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

PyMethodDef evpy_accept_methods[] = {
    {"accept_connections", (PyCFunction)(void (*)(void))accept_connections,
     METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};
