/* TransportBase: state and behaviour shared by evpy's C transports; see
 * transport.h. Semantics follow asyncio's selector_events._SelectorTransport.
 */
#include "transport.h"

#include "sockaddr.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

int
evpy_tr_init(TransportObject *t, PyTypeObject *type, const evpy_io_vtable *vt,
             const evpy_transport_ops *ops)
{
    t->st = evpy_state_of_type(type);
    if (t->st == NULL) {
        return -1;
    }
    t->io.vt = vt;
    t->io.fd = -1;
    t->ops = ops;
    t->high_water = EVPY_DEFAULT_HIGH_WATER;
    t->low_water = EVPY_DEFAULT_HIGH_WATER / 4;
    return 0;
}

int
evpy_tr_traverse(TransportObject *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->io.extra);
    Py_VISIT(t->io.loop);
    Py_VISIT(t->io.ctx[EVPY_IO_CTX_READ]);
    Py_VISIT(t->io.ctx[EVPY_IO_CTX_WRITE]);
    Py_VISIT(t->sock);
    Py_VISIT(t->protocol);
    Py_VISIT(t->empty_waiter);
    Py_VISIT(t->server);
    return 0;
}

void
evpy_tr_clear(TransportObject *t)
{
    if (t->io.loop != NULL) {
        evpy_loop_io_detach(t->io.loop, &t->io);
    }
    if (t->ops != NULL) {
        t->ops->clear_queue(t);
        t->ops->clear_protocol(t);
    }
    Py_CLEAR(t->io.extra);
    Py_CLEAR(t->io.ctx[EVPY_IO_CTX_READ]);
    Py_CLEAR(t->io.ctx[EVPY_IO_CTX_WRITE]);
    if (t->fd_owned) {
        /* Never closed (the Python side warns and closes first when it
         * can): the fd must not outlive its only owner. */
        t->fd_owned = 0;
        (void)close(t->io.fd);
    }
    Py_CLEAR(t->sock);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->empty_waiter);
    Py_CLEAR(t->server);
}

int
evpy_tr_set_want(TransportObject *t, unsigned set, unsigned clear)
{
    LoopObject *loop = TR_LOOP(t);
    if (loop == NULL || t->released) {
        return 0;
    }
    unsigned want = evpy_loop_io_wanted(loop, &t->io);
    unsigned nw = (want | set) & ~clear;
    if (nw == want) {
        return 0;
    }
    return evpy_loop_io_want(loop, &t->io, nw);
}

int
evpy_tr_want_write(TransportObject *t)
{
    /* Waiting for writability needs the loop: once it is closed, data that
     * cannot be written now is refused, as asyncio's _add_writer does. */
    if (TR_LOOP(t) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    /* Write events run in a copy of the context that started the wait,
     * as asyncio's _add_writer() Handle does. */
    if (!t->released && !(evpy_loop_io_wanted(TR_LOOP(t), &t->io) & EVPY_WRITE)
        && evpy_io_copy_context(&t->io, EVPY_IO_CTX_WRITE) < 0) {
        return -1;
    }
    return evpy_tr_set_want(t, EVPY_WRITE, 0);
}

int
evpy_tr_is_fatal_to_loop(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit)
           || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

static int
report_failure(TransportObject *t)
{
    if (evpy_tr_is_fatal_to_loop()) {
        return -1;
    }
    PyErr_WriteUnraisable((PyObject *)t);
    return 0;
}

int
evpy_tr_fatal(TransportObject *t, PyObject *exc, const char *message)
{
    /* self._fatal_error(exc, message) in Python reports, then closes
     * through _force_close() or _close_now() (the lifecycle below). */
    PyObject *msg = PyUnicode_FromString(message);
    PyObject *r = msg == NULL
                      ? NULL
                      : PyObject_CallMethodObjArgs((PyObject *)t,
                                                   t->st->str_fatal_error, exc,
                                                   msg, NULL);
    Py_XDECREF(msg);
    Py_DECREF(exc);
    if (r == NULL) {
        return report_failure(t);
    }
    Py_DECREF(r);
    return 0;
}

int
evpy_tr_fatal_errno(TransportObject *t, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return evpy_tr_fatal(t, evpy_fetch_exc(), message);
}

int
evpy_tr_callback_failed(TransportObject *t, const char *message)
{
    if (evpy_tr_is_fatal_to_loop()) {
        return -1;
    }
    return evpy_tr_fatal(t, evpy_fetch_exc(), message);
}

int
evpy_tr_python_hook(TransportObject *t, PyObject *name, int with_exc)
{
    PyObject *r;
    if (with_exc) {
        if (evpy_tr_is_fatal_to_loop()) {
            return -1;
        }
        PyObject *exc = evpy_fetch_exc();
        r = PyObject_CallMethodOneArg((PyObject *)t, name, exc);
        Py_DECREF(exc);
    }
    else {
        r = PyObject_CallMethodNoArgs((PyObject *)t, name);
    }
    if (r == NULL) {
        return report_failure(t);
    }
    Py_DECREF(r);
    return 0;
}

PyObject *
evpy_tr_call_protocol(TransportObject *t, PyObject *name)
{
    if (t->protocol == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "transport has no protocol");
        return NULL;
    }
    PyObject *protocol = Py_NewRef(t->protocol);
    PyObject *r = PyObject_CallMethodNoArgs(protocol, name);
    Py_DECREF(protocol);
    return r;
}

/* pause_writing()/resume_writing(); failures go to the exception handler
 * as asyncio reports them. */
static int
flow_call(TransportObject *t, PyObject *name)
{
    PyObject *r = evpy_tr_call_protocol(t, name);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (evpy_tr_is_fatal_to_loop()) {
        return -1;
    }
    PyObject *exc = evpy_fetch_exc();
    r = PyObject_CallMethodObjArgs(
        (PyObject *)t, t->st->str_flow_control_failed, name, exc, NULL);
    Py_DECREF(exc);
    if (r == NULL) {
        return report_failure(t);
    }
    Py_DECREF(r);
    return 0;
}

int
evpy_tr_maybe_pause_protocol(TransportObject *t)
{
    if (t->protocol_paused || t->ops->queued(t) <= t->high_water) {
        return 0;
    }
    t->protocol_paused = 1;
    return flow_call(t, t->st->str_pause_writing);
}

int
evpy_tr_maybe_resume_protocol(TransportObject *t)
{
    if (!t->protocol_paused || t->ops->queued(t) > t->low_water) {
        return 0;
    }
    t->protocol_paused = 0;
    return flow_call(t, t->st->str_resume_writing);
}

static int
require_loop(TransportObject *t)
{
    if (TR_LOOP(t) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* -- lifecycle: the one state machine (transport.h has the picture) ------ */

/* The one place that schedules connection_lost(exc): no more interest,
 * optionally no more queued data, and the call from the loop. */
static int
tr_lose(TransportObject *t, PyObject *exc, int drop_queue, int count_lost)
{
    if (require_loop(t) < 0) {
        return -1;
    }
    if (drop_queue) {
        t->ops->clear_queue(t);
    }
    t->state = EVPY_TR_LOST;
    if (evpy_tr_set_want(t, 0, EVPY_READ | EVPY_WRITE) < 0) {
        return -1;
    }
    if (count_lost) {
        t->conn_lost++;
    }
    PyObject *cb = PyObject_GetAttr((PyObject *)t,
                                    t->st->str_call_connection_lost);
    if (cb == NULL) {
        return -1;
    }
    /* 3.15: in the transport's own context, like all its callbacks;
     * before, in a copy of the closing caller's, as asyncio. */
    int rc = evpy_loop_call_soon_in(
        TR_LOOP(t), cb, exc,
        t->io.ctx_bound ? t->io.ctx[EVPY_IO_CTX_READ] : NULL);
    Py_DECREF(cb);
    return rc;
}

/* close(): OPEN -> CLOSING (no more reading), then LOST once nothing is
 * queued (now, or when the data path has drained the queue). */
int
evpy_tr_do_close(TransportObject *t)
{
    if (t->state != EVPY_TR_OPEN) {
        return 0;
    }
    if (require_loop(t) < 0) {
        return -1;
    }
    t->state = EVPY_TR_CLOSING;
    if (evpy_tr_set_want(t, 0, EVPY_READ) < 0) {
        return -1;
    }
    if (t->ops->queued(t) == 0) {
        return tr_lose(t, Py_None, 0, 1);
    }
    return 0;
}

/* abort() and _force_close(exc) (fatal errors): LOST now, queued data
 * dropped; once only. */
static int
force_close(TransportObject *t, PyObject *exc)
{
    if (t->conn_lost || t->state >= EVPY_TR_LOST) {
        /* Nothing left to abort (a close() that flushed its queue lost
         * the connection without counting it, as asyncio's does; there
         * abort() then fails on the dropped loop). */
        return 0;
    }
    return tr_lose(t, exc, 1, 1);
}

/* The data path emptied the queue: a closing transport is lost now, and
 * connection_lost runs right away (as asyncio's _write_ready calls it). */
int
evpy_tr_drained(TransportObject *t)
{
    if (t->state == EVPY_TR_OPEN) {
        return 0;
    }
    t->state = EVPY_TR_LOST;
    PyObject *r = PyObject_CallMethodOneArg(
        (PyObject *)t, t->st->str_call_connection_lost, Py_None);
    if (r == NULL) {
        return report_failure(t);
    }
    Py_DECREF(r);
    return 0;
}

PyObject *
evpy_tr_write_after_close(TransportObject *t)
{
    if (t->conn_lost >= EVPY_CONNLOST_WARN_THRESHOLD) {
        PyObject *r = PyObject_CallMethodNoArgs(
            (PyObject *)t, t->st->str_warn_write_after_close);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    t->conn_lost++;
    Py_RETURN_NONE;
}

int
evpy_tr_check_bytes_like(PyObject *data)
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

/* -- methods -------------------------------------------------------------- */

static PyObject *
tr_get_write_buffer_size(TransportObject *t, PyObject *Py_UNUSED(ig))
{
    return PyLong_FromSsize_t(t->ops->queued(t));
}

static PyObject *
tr_get_write_buffer_limits(TransportObject *t, PyObject *Py_UNUSED(ig))
{
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

static PyObject *
tr_set_limits_core(TransportObject *t, PyObject *args)
{
    Py_ssize_t high, low;
    if (!PyArg_ParseTuple(args, "nn:_set_write_buffer_limits", &high, &low)) {
        return NULL;
    }
    t->high_water = high;
    t->low_water = low;
    if (evpy_tr_maybe_pause_protocol(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_is_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->paused && !EVPY_TR_CLOSING(t));
}

static PyObject *
tr_pause_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->paused || EVPY_TR_CLOSING(t)) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    if (evpy_tr_set_want(t, 0, EVPY_READ) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_resume_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (EVPY_TR_CLOSING(t) || !t->paused) {
        Py_RETURN_NONE;
    }
    /* Reads from now on run in a copy of the caller's context: asyncio
     * registers a new reader Handle here. */
    if (TR_LOOP(t) != NULL
        && evpy_io_copy_context(&t->io, EVPY_IO_CTX_READ) < 0) {
        return NULL;
    }
    t->paused = 0;
    if (evpy_tr_set_want(t, EVPY_READ, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_start_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->paused || EVPY_TR_CLOSING(t)) {
        Py_RETURN_NONE;
    }
    /* Reads run in a copy of this call's context (scheduled with
     * call_soon when the transport is made), as asyncio's reader Handle. */
    if (TR_LOOP(t) != NULL
        && evpy_io_copy_context(&t->io, EVPY_IO_CTX_READ) < 0) {
        return NULL;
    }
    if (evpy_tr_set_want(t, EVPY_READ, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_is_closing(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(EVPY_TR_CLOSING(t));
}

static PyObject *
tr_close(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (evpy_tr_do_close(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_force_close(TransportObject *t, PyObject *exc)
{
    if (force_close(t, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_abort(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return tr_force_close(t, Py_None);
}

/* asyncio's pipe transports' _close(exc): closing, drop queued data and
 * interest, connection_lost(exc) from the loop. */
static PyObject *
tr_close_now(TransportObject *t, PyObject *exc)
{
    if (tr_lose(t, exc, 1, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_get_protocol(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

/* _attach(loop, sock, fd, kind): registers with the loop; kind is the
 * subtype's flavour (0: a stream socket, which gets TCP_NODELAY). */
static PyObject *
tr_attach(TransportObject *t, PyObject *args)
{
    PyObject *loop, *sock;
    int fd, kind;
    if (!PyArg_ParseTuple(args, "OOii:_attach", &loop, &sock, &fd, &kind)) {
        return NULL;
    }
    if (t->io.loop != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "transport already attached");
        return NULL;
    }
    if (!PyObject_TypeCheck(loop, t->st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "_attach() needs an evpy loop");
        return NULL;
    }
    t->io.fd = fd;
    t->kind = (char)kind;
    if (evpy_loop_io_attach((LoopObject *)loop, &t->io) < 0) {
        t->io.fd = -1;
        return NULL;
    }
    Py_XSETREF(t->sock, Py_NewRef(sock));
    t->family = -1;
#ifdef SO_DOMAIN
    if (kind == 3) {
        /* Datagram transports parse numeric addresses themselves. */
        socklen_t len = sizeof(t->family);
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &t->family, &len) < 0) {
            t->family = -1;
        }
    }
#endif
    if (kind == 0) {
        /* TCP_NODELAY, as asyncio sets on every TCP transport; on other
         * stream sockets (Unix) the kernel refuses it, which is fine. */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    Py_RETURN_NONE;
}

static int set_obj(PyObject **slot, PyObject *value);

/* _attach_fd(loop, fd, family, type, proto): a stream socket transport
 * over a bare fd (an accepted connection, non-blocking and close-on-exec
 * already): the transport owns the fd and makes the socket.socket only if
 * something asks for it. */
int
evpy_tr_attach_fd(TransportObject *t, LoopObject *loop, int fd, int family,
                  int socktype, int proto)
{
    if (t->io.loop != NULL || t->sock != NULL || t->fd_owned) {
        PyErr_SetString(PyExc_RuntimeError, "transport already attached");
        return -1;
    }
    t->io.fd = fd;
    t->kind = 0;
    if (evpy_loop_io_attach(loop, &t->io) < 0) {
        t->io.fd = -1;
        return -1;
    }
    t->fd_owned = 1;
    t->family = family;
    t->socktype = socktype;
    t->proto = proto;
    if (family == AF_INET || family == AF_INET6) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return 0;
}

static PyObject *
tr_attach_fd(TransportObject *t, PyObject *args)
{
    PyObject *loop;
    int fd, family, socktype, proto;
    if (!PyArg_ParseTuple(args, "Oiiii:_attach_fd", &loop, &fd, &family,
                          &socktype, &proto)) {
        return NULL;
    }
    if (!PyObject_TypeCheck(loop, t->st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "_attach_fd() needs an evpy loop");
        return NULL;
    }
    if (evpy_tr_attach_fd(t, (LoopObject *)loop, fd, family, socktype, proto)
        < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The socket.socket over an fd the transport owns, made on first use:
 * from then on the socket object owns the fd. */
static PyObject *
tr_materialize_sock(TransportObject *t)
{
    PyObject *sock = PyObject_CallFunction(t->st->socket_type, "iiii",
                                           t->family, t->socktype, t->proto,
                                           t->io.fd);
    if (sock == NULL) {
        return NULL;
    }
    t->fd_owned = 0;
    t->sock = sock;
    /* The fd is non-blocking already; this tells the socket object. */
    PyObject *r = PyObject_CallMethodOneArg(sock, t->st->str_setblocking,
                                            Py_False);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    return Py_NewRef(sock);
}

static PyObject *
tr_get_sock(TransportObject *t, void *Py_UNUSED(c))
{
    if (t->sock != NULL) {
        return Py_NewRef(t->sock);
    }
    if (t->fd_owned) {
        return tr_materialize_sock(t);
    }
    Py_RETURN_NONE;
}

static int
tr_set_sock(TransportObject *t, PyObject *v, void *Py_UNUSED(c))
{
    if (t->fd_owned) {
        PyErr_SetString(PyExc_AttributeError,
                        "the transport owns its fd: use _close_sock()");
        return -1;
    }
    return set_obj(&t->sock, v);
}

/* _has_sock: the transport still has its socket (or pipe) open. */
static PyObject *
tr_get_has_sock(TransportObject *t, void *Py_UNUSED(c))
{
    return PyBool_FromLong(t->sock != NULL || t->fd_owned);
}

/* _sock_made: the socket object exists (asking for _sock would not make
 * one). */
static PyObject *
tr_get_sock_made(TransportObject *t, void *Py_UNUSED(c))
{
    return PyBool_FromLong(t->sock != NULL);
}

/* Closes the socket or pipe (the caller has detached it from the loop)
 * and forgets it. */
static int
tr_close_sock_impl(TransportObject *t)
{
    if (t->fd_owned) {
        t->fd_owned = 0;
        if (close(t->io.fd) < 0 && errno != EINTR) {
            evpy_set_errno(-errno);
            return -1;
        }
        return 0;
    }
    PyObject *sock = t->sock;
    if (sock == NULL) {
        return 0;
    }
    t->sock = NULL; /* our reference, dropped below */
    PyObject *r = PyObject_CallMethodNoArgs(sock, t->st->str_close);
    Py_DECREF(sock);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* _close_sock() */
static PyObject *
tr_close_sock(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (tr_close_sock_impl(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _sockaddr(peer): getpeername() (peer true) or getsockname() of the open
 * socket, as the socket module would give it; None once closed or if the
 * call fails (asyncio's value for an address it could not get). */
static PyObject *
tr_sockaddr(TransportObject *t, PyObject *peer)
{
    if (t->sock == NULL && !t->fd_owned) {
        Py_RETURN_NONE;
    }
    int is_peer = PyObject_IsTrue(peer);
    if (is_peer < 0) {
        return NULL;
    }
    PyObject *addr = evpy_sockaddr_of_fd(t->io.fd, is_peer);
    if (addr != NULL) {
        return addr;
    }
    if (!PyErr_Occurred()) {
        /* A family this file does not convert: ask the socket module. */
        PyObject *sock = tr_get_sock(t, NULL);
        if (sock == NULL) {
            return NULL;
        }
        addr = PyObject_CallMethodNoArgs(
            sock, is_peer ? t->st->str_getpeername : t->st->str_getsockname);
        Py_DECREF(sock);
        if (addr != NULL) {
            return addr;
        }
    }
    if (PyErr_ExceptionMatches(PyExc_OSError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return NULL;
}

/* Unregisters the fd (before it is closed) and drops the queue and the
 * protocol. */
static void
tr_detach_impl(TransportObject *t)
{
    if (t->io.loop != NULL) {
        evpy_loop_io_detach(t->io.loop, &t->io);
    }
    t->ops->clear_queue(t);
    t->ops->clear_protocol(t);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->io.ctx[EVPY_IO_CTX_READ]);
    Py_CLEAR(t->io.ctx[EVPY_IO_CTX_WRITE]);
}

/* _detach() */
static PyObject *
tr_detach(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    tr_detach_impl(t);
    Py_RETURN_NONE;
}

/* Stores extra[key] = value unless the key is there; value is stolen. */
static int
extra_default(PyObject *extra, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetDefault(extra, key, value) == NULL ? -1 : 0;
    Py_DECREF(value);
    return rc;
}

/* The addresses asyncio's transports compute when they are made, and the
 * socket object if it was made: filled in (if missing) while the socket is
 * still open, so they stay readable after the close. */
static int
tr_fill_extra(TransportObject *t)
{
    PyObject *extra = t->io.extra;
    if (extra == NULL || !PyDict_Check(extra)) {
        return 0;
    }
    evpy_state *st = t->st;
    PyObject *keys[2] = {st->str_sockname, st->str_peername};
    for (int peer = 0; peer < 2; peer++) {
        int has = PyDict_Contains(extra, keys[peer]);
        if (has < 0) {
            return -1;
        }
        if (!has
            && extra_default(extra, keys[peer],
                             tr_sockaddr(t, peer ? Py_True : Py_False))
                   < 0) {
            return -1;
        }
    }
    if (t->sock != NULL) {
        int has = PyDict_Contains(extra, st->str_socket);
        if (has < 0) {
            return -1;
        }
        if (!has
            && extra_default(extra, st->str_socket,
                             PyObject_CallOneArg(st->TransportSocket, t->sock))
                   < 0) {
            return -1;
        }
    }
    return 0;
}

/* Keeps the first failure of a cleanup sequence: *err takes the current
 * exception unless it holds one already (a later one is reported). */
static void
keep_first_error(TransportObject *t, PyObject **err)
{
    if (*err == NULL) {
        *err = evpy_fetch_exc();
    }
    else {
        PyErr_WriteUnraisable((PyObject *)t);
    }
}

#define RELEASE_FILL_EXTRA 1  /* keep the addresses readable after */
#define RELEASE_FAIL_WAITER 2 /* fail a pending sendfile wait */

/* The one place that releases the fd (-> CLOSED): unregister, optionally
 * keep the addresses readable, close the socket or pipe, leave the
 * server, optionally fail a pending sendfile wait. Every step runs; the
 * first failure is kept in *err (later ones are reported). */
static void
tr_release(TransportObject *t, int how, PyObject **err)
{
    evpy_state *st = t->st;
    tr_detach_impl(t);
    t->state = EVPY_TR_CLOSED;
    /* Pipes (kinds 1 and 2) have no addresses. */
    if ((how & RELEASE_FILL_EXTRA) && (t->kind == 0 || t->kind == 3)
        && tr_fill_extra(t) < 0) {
        keep_first_error(t, err);
    }
    if (tr_close_sock_impl(t) < 0) {
        keep_first_error(t, err);
    }
    PyObject *server = t->server;
    if (server != NULL) {
        t->server = NULL; /* our reference, dropped below */
        PyObject *r = PyObject_CallMethodOneArg(server, st->str_detach,
                                                (PyObject *)t);
        Py_DECREF(server);
        if (r == NULL) {
            keep_first_error(t, err);
        }
        Py_XDECREF(r);
    }
    PyObject *waiter = t->empty_waiter;
    if ((how & RELEASE_FAIL_WAITER) && waiter != NULL) {
        Py_INCREF(waiter);
        PyObject *r = PyObject_CallMethodNoArgs(waiter, st->str_done);
        int done = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (done == 0) {
            PyObject *exc = PyObject_CallFunction(
                PyExc_ConnectionError, "s", "Connection is closed by peer");
            r = exc == NULL ? NULL
                            : PyObject_CallMethodOneArg(
                                waiter, st->str_set_exception, exc);
            Py_XDECREF(exc);
            done = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(waiter);
        if (done < 0) {
            keep_first_error(t, err);
        }
    }
}

/* _call_connection_lost(exc): LOST -> CLOSED, as asyncio's transports'
 * _call_connection_lost: tell the protocol, then (whatever it raised)
 * release the fd. */
static PyObject *
tr_call_connection_lost(TransportObject *t, PyObject *exc)
{
    if (t->sock == NULL && !t->fd_owned) {
        Py_RETURN_NONE;
    }
    PyObject *err = NULL;
    if (t->protocol != NULL) {
        PyObject *protocol = Py_NewRef(t->protocol);
        PyObject *r = PyObject_CallMethodOneArg(
            protocol, t->st->str_connection_lost, exc);
        Py_DECREF(protocol);
        if (r == NULL) {
            err = evpy_fetch_exc();
        }
        Py_XDECREF(r);
    }
    tr_release(t, RELEASE_FILL_EXTRA | RELEASE_FAIL_WAITER, &err);
    if (err != NULL) {
        evpy_restore_exc(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

void
evpy_tr_discard(TransportObject *t)
{
    PyObject *exc = evpy_fetch_exc();
    PyObject *err = NULL;
    tr_release(t, 0, &err);
    if (err != NULL) {
        evpy_restore_exc(err);
        PyErr_WriteUnraisable((PyObject *)t);
    }
    evpy_restore_exc(exc);
}

/* An unclosed transport being collected: warn (ResourceWarning, as
 * asyncio's __del__) and release the fd; a closed one costs nothing. */
static void
tr_finalize(TransportObject *t)
{
    if (t->sock == NULL && !t->fd_owned) {
        return;
    }
    PyObject *exc = evpy_fetch_exc();
    if (PyErr_ResourceWarning((PyObject *)t, 1, "unclosed transport %R",
                              (PyObject *)t)
        < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    PyObject *err = NULL;
    tr_release(t, 0, &err);
    if (err != NULL) {
        evpy_restore_exc(err);
        PyErr_WriteUnraisable((PyObject *)t);
    }
    evpy_restore_exc(exc);
}

/* _release_fd(): lend the fd to loop.sock_sendfile() (which registers it
 * itself): the transport leaves the fd table but keeps its loop. The
 * caller has paused reading and drained the write buffer. */
static PyObject *
tr_release_fd(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->released) {
        Py_RETURN_NONE;
    }
    if (require_loop(t) < 0) {
        return NULL;
    }
    LoopObject *loop = (LoopObject *)Py_NewRef((PyObject *)t->io.loop);
    evpy_loop_io_detach(loop, &t->io); /* drops io.loop's reference */
    t->io.loop = loop;                 /* ... and this one replaces it */
    t->released = 1;
    Py_RETURN_NONE;
}

/* _reclaim_fd(): take the fd back and restore the interest the state
 * calls for. */
static PyObject *
tr_reclaim_fd(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (!t->released) {
        Py_RETURN_NONE;
    }
    LoopObject *loop = t->io.loop; /* our reference */
    t->io.loop = NULL;
    if (evpy_loop_io_attach(loop, &t->io) < 0) {
        t->io.loop = loop;
        return NULL;
    }
    Py_DECREF(loop);
    t->released = 0;
    unsigned want = 0;
    if (!t->paused && !EVPY_TR_CLOSING(t)) {
        want |= EVPY_READ;
    }
    if (t->ops->queued(t) > 0) {
        want |= EVPY_WRITE;
    }
    if (evpy_tr_set_want(t, want, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- attributes ----------------------------------------------------------- */

static PyObject *
get_obj(PyObject *o)
{
    return Py_NewRef(o ? o : Py_None);
}

static int
set_obj(PyObject **slot, PyObject *value)
{
    Py_XSETREF(*slot,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

#define OBJ_ATTR(name, field)                                        \
  static PyObject *tr_get_##name(TransportObject *t, void *c)        \
  {                                                                  \
    (void)c;                                                         \
    return get_obj((PyObject *)t->field);                            \
  }                                                                  \
  static int tr_set_##name(TransportObject *t, PyObject *v, void *c) \
  {                                                                  \
    (void)c;                                                         \
    return set_obj((PyObject **)&t->field, v);                       \
  }
OBJ_ATTR(empty_waiter, empty_waiter)
OBJ_ATTR(server, server)
#undef OBJ_ATTR

/* _context (3.15): the context the transport's events and protocol
 * callbacks run in; None unless set (then each direction copies the
 * context current when it starts waiting, as asyncio before 3.15). */
static PyObject *
tr_get_context(TransportObject *t, void *c)
{
    (void)c;
    return get_obj(t->io.ctx_bound ? t->io.ctx[EVPY_IO_CTX_READ] : NULL);
}

static int
tr_set_context(TransportObject *t, PyObject *v, void *c)
{
    (void)c;
    if (v != NULL && v != Py_None && !PyContext_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError,
                        "_context must be a contextvars.Context or None");
        return -1;
    }
    if (v == NULL || v == Py_None) {
        t->io.ctx_bound = 0;
        return 0; /* the next wait in each direction copies a context */
    }
    Py_XSETREF(t->io.ctx[EVPY_IO_CTX_READ], Py_NewRef(v));
    Py_XSETREF(t->io.ctx[EVPY_IO_CTX_WRITE], Py_NewRef(v));
    t->io.ctx_bound = 1;
    return 0;
}

#define FLAG_GETTER(name)                                     \
  static PyObject *tr_get_##name(TransportObject *t, void *c) \
  {                                                           \
    (void)c;                                                  \
    return PyBool_FromLong(t->name);                          \
  }
FLAG_GETTER(paused)
FLAG_GETTER(protocol_paused)
#undef FLAG_GETTER

static PyObject *
tr_get_loop(TransportObject *t, void *Py_UNUSED(c))
{
    return get_obj((PyObject *)t->io.loop);
}

static PyObject *
tr_get_fd(TransportObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->io.fd);
}

static PyObject *
tr_get_protocol_attr(TransportObject *t, void *Py_UNUSED(c))
{
    return get_obj(t->protocol);
}

static PyObject *
tr_get_conn_lost(TransportObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->conn_lost);
}

static int
tr_set_conn_lost(TransportObject *t, PyObject *v, void *Py_UNUSED(c))
{
    long n = v ? PyLong_AsLong(v) : 0;
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    t->conn_lost = (int)n;
    return 0;
}

static PyObject *
tr_polled(TransportObject *t, unsigned which)
{
    return PyBool_FromLong(
        t->io.loop && (evpy_loop_io_wanted(t->io.loop, &t->io) & which));
}

static PyObject *
tr_get_read_polled(TransportObject *t, void *Py_UNUSED(c))
{
    return tr_polled(t, EVPY_READ);
}

static PyObject *
tr_get_write_polled(TransportObject *t, void *Py_UNUSED(c))
{
    return tr_polled(t, EVPY_WRITE);
}

static PyMethodDef tr_methods[] = {
    {"get_write_buffer_size", (PyCFunction)tr_get_write_buffer_size,
     METH_NOARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)tr_get_write_buffer_limits,
     METH_NOARGS, NULL},
    {"_set_write_buffer_limits", (PyCFunction)tr_set_limits_core, METH_VARARGS,
     NULL},
    {"is_reading", (PyCFunction)tr_is_reading, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)tr_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)tr_resume_reading, METH_NOARGS, NULL},
    {"_start_reading", (PyCFunction)tr_start_reading, METH_NOARGS,
     "Start reading (scheduled after connection_made)."},
    {"is_closing", (PyCFunction)tr_is_closing, METH_NOARGS, NULL},
    {"close", (PyCFunction)tr_close, METH_NOARGS,
     "Close after the queued data is sent."},
    {"abort", (PyCFunction)tr_abort, METH_NOARGS,
     "Close now, dropping queued data."},
    {"_force_close", (PyCFunction)tr_force_close, METH_O, NULL},
    {"_close_now", (PyCFunction)tr_close_now, METH_O, NULL},
    {"get_protocol", (PyCFunction)tr_get_protocol, METH_NOARGS, NULL},
    {"_attach", (PyCFunction)tr_attach, METH_VARARGS, NULL},
    {"_attach_fd", (PyCFunction)tr_attach_fd, METH_VARARGS, NULL},
    {"_close_sock", (PyCFunction)tr_close_sock, METH_NOARGS, NULL},
    {"_sockaddr", (PyCFunction)tr_sockaddr, METH_O, NULL},
    {"_detach", (PyCFunction)tr_detach, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)tr_call_connection_lost, METH_O,
     NULL},
    {"_release_fd", (PyCFunction)tr_release_fd, METH_NOARGS,
     "Lend the fd out (native sendfile)."},
    {"_reclaim_fd", (PyCFunction)tr_reclaim_fd, METH_NOARGS,
     "Take the fd back after _release_fd()."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tr_getset[] = {
    {"_loop", (getter)tr_get_loop, NULL, NULL, NULL},
    {"_sock", (getter)tr_get_sock, (setter)tr_set_sock, NULL, NULL},
    {"_sock_fd", (getter)tr_get_fd, NULL, NULL, NULL},
    {"_has_sock", (getter)tr_get_has_sock, NULL, NULL, NULL},
    {"_sock_made", (getter)tr_get_sock_made, NULL, NULL, NULL},
    {"_protocol", (getter)tr_get_protocol_attr, NULL, NULL, NULL},
    {"_empty_waiter", (getter)tr_get_empty_waiter, (setter)tr_set_empty_waiter,
     NULL, NULL},
    {"_server", (getter)tr_get_server, (setter)tr_set_server, NULL, NULL},
    {"_context", (getter)tr_get_context, (setter)tr_set_context, NULL, NULL},
    {"_conn_lost", (getter)tr_get_conn_lost, (setter)tr_set_conn_lost, NULL,
     NULL},
    {"_closing", (getter)tr_is_closing, NULL, NULL, NULL},
    {"_paused", (getter)tr_get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)tr_get_protocol_paused, NULL, NULL, NULL},
    {"_read_polled", (getter)tr_get_read_polled, NULL, NULL, NULL},
    {"_write_polled", (getter)tr_get_write_polled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef tr_members[] = {
    {"_high_water", Py_T_PYSSIZET, offsetof(TransportObject, high_water),
     Py_READONLY, NULL},
    {"_low_water", Py_T_PYSSIZET, offsetof(TransportObject, low_water),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int
tr_traverse_slot(TransportObject *t, visitproc visit, void *arg)
{
    return evpy_tr_traverse(t, visit, arg);
}

static int
tr_clear_slot(TransportObject *t)
{
    evpy_tr_clear(t);
    return 0;
}

static PyType_Slot tr_slots[] = {
    {Py_tp_doc, "State and methods shared by evpy's C transports."},
    {Py_tp_methods, tr_methods},
    {Py_tp_getset, tr_getset},
    {Py_tp_members, tr_members},
    {Py_tp_traverse, tr_traverse_slot},
    {Py_tp_clear, tr_clear_slot},
    {Py_tp_finalize, tr_finalize},
    {0, NULL},
};

static PyType_Spec evpy_transport_spec = {
    .name = "evpy._core.TransportBase",
    .basicsize = sizeof(TransportObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tr_slots,
};

/* asyncio.BaseTransport is `object` plus one slot (`_extra`): our
 * IOObject.extra must be exactly that slot. */
static int
check_base_layout(PyObject *base)
{
    Py_ssize_t want = (Py_ssize_t)(offsetof(IOObject, extra)
                                   + sizeof(PyObject *));
    if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_basicsize != want) {
        PyErr_SetString(PyExc_ImportError,
                        "evpy: unexpected layout of asyncio.BaseTransport");
        return -1;
    }
    return 0;
}

static PyObject *
asyncio_attr(const char *name)
{
    PyObject *m = PyImport_ImportModule("asyncio");
    if (m == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return r;
}

int
evpy_transport_add_base_type(PyObject *mod, evpy_state *st)
{
    PyObject *base = asyncio_attr("BaseTransport");
    if (base == NULL || check_base_layout(base) < 0) {
        Py_XDECREF(base);
        return -1;
    }
    st->TransportBaseType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &evpy_transport_spec, base);
    Py_DECREF(base);
    if (st->TransportBaseType == NULL) {
        return -1;
    }
    return PyModule_AddType(mod, st->TransportBaseType);
}

PyTypeObject *
evpy_transport_make_type(PyObject *mod, evpy_state *st, PyType_Spec *spec,
                         const char *asyncio_name, const char *asyncio_name2)
{
    PyObject *other = asyncio_attr(asyncio_name);
    PyObject *other2 = asyncio_name2 ? asyncio_attr(asyncio_name2) : NULL;
    if (other == NULL || (asyncio_name2 != NULL && other2 == NULL)) {
        Py_XDECREF(other);
        Py_XDECREF(other2);
        return NULL;
    }
    PyObject *base = (PyObject *)st->TransportBaseType;
    PyObject *bases = other2 ? PyTuple_Pack(3, base, other, other2)
                             : PyTuple_Pack(2, base, other);
    Py_DECREF(other);
    Py_XDECREF(other2);
    if (bases == NULL) {
        return NULL;
    }
    PyObject *tp = PyType_FromModuleAndSpec(mod, spec, bases);
    Py_DECREF(bases);
    if (tp == NULL || PyModule_AddType(mod, (PyTypeObject *)tp) < 0) {
        Py_XDECREF(tp);
        return NULL;
    }
    return (PyTypeObject *)tp;
}
