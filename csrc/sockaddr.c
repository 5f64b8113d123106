/* Socket addresses for Python, and fd-level address queries: see
 * sockaddr.h. */
#include "sockaddr.h"
#include "faults.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

static PyObject *
inet_host(int family, const void *addr)
{
    char buf[INET6_ADDRSTRLEN];
    if (family == AF_INET) {
        /* dotted quad by hand: inet_ntop() formats through sprintf() */
        const unsigned char *b = addr;
        char *p = buf;
        for (int i = 0; i < 4; i++) {
            unsigned v = b[i];
            if (v >= 100) {
                *p++ = (char)('0' + v / 100);
                v %= 100;
                *p++ = (char)('0' + v / 10);
            }
            else if (v >= 10) {
                *p++ = (char)('0' + v / 10);
            }
            *p++ = (char)('0' + v % 10);
            *p++ = '.';
        }
        return PyUnicode_FromStringAndSize(buf, p - buf - 1);
    }
    if (inet_ntop(family, addr, buf, sizeof(buf)) == NULL) {
        return evpy_set_errno(-errno);
    }
    return PyUnicode_FromString(buf);
}

/* (a, b), both references stolen (NULL: an exception is set). */
static PyObject *
pair(PyObject *a, PyObject *b)
{
    PyObject *t = a != NULL && b != NULL ? PyTuple_New(2) : NULL;
    if (t == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

int
evpy_sockaddr_kind(PyObject *kind, int *family, int *type, int *proto)
{
    if (!PyTuple_Check(kind) || PyTuple_GET_SIZE(kind) != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "a (family, type, proto) tuple is required");
        return -1;
    }
    if (evpy_as_int(PyTuple_GET_ITEM(kind, 0), family) < 0
        || evpy_as_int(PyTuple_GET_ITEM(kind, 1), type) < 0
        || evpy_as_int(PyTuple_GET_ITEM(kind, 2), proto) < 0) {
        return -1;
    }
    return 0;
}

PyObject *
evpy_sockaddr_to_py(const struct sockaddr *sa, socklen_t len)
{
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        PyObject *host = inet_host(AF_INET, &a->sin_addr);
        if (host == NULL) {
            return NULL;
        }
        return pair(host, PyLong_FromLong(ntohs(a->sin_port)));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        PyObject *host = inet_host(AF_INET6, &a->sin6_addr);
        if (host == NULL) {
            return NULL;
        }
        return Py_BuildValue("NiII", host, (int)ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t plen = (size_t)len > off ? (size_t)len - off : 0;
        if (plen > sizeof(a->sun_path)) {
            plen = sizeof(a->sun_path);
        }
#ifdef __linux__
        if (plen > 0 && a->sun_path[0] == '\0') {
            return PyBytes_FromStringAndSize(a->sun_path, (Py_ssize_t)plen);
        }
#endif
        return PyUnicode_DecodeFSDefaultAndSize(
            a->sun_path, (Py_ssize_t)strnlen(a->sun_path, plen));
    }
    default:
        return NULL;
    }
}

PyObject *
evpy_sockaddr_of_fd(int fd, int peer)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
                  : getsockname(fd, (struct sockaddr *)&ss, &len);
    if (rc < 0) {
        return evpy_set_errno(-errno);
    }
    return evpy_sockaddr_to_py((struct sockaddr *)&ss, len);
}

/* accept(fd) -> (conn_fd, address) or None: one accept4() on a listening
 * socket, the new fd already non-blocking and close-on-exec (what
 * socket.accept() + setblocking(False) cost three syscalls for). None when
 * nothing is pending (EAGAIN), the call was interrupted or the connection
 * was aborted before it was accepted; OSError for anything else. */
static PyObject *
sockaddr_accept(PyObject *mod, PyObject *arg)
{
    long lfd = PyLong_AsLong(arg);
    if (lfd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (lfd < 0 || lfd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid file descriptor");
        return NULL;
    }
    int fd = (int)lfd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    int conn = EVPY_FAULT(EVPY_FAULT_ACCEPT,
                          accept4(fd, (struct sockaddr *)&ss, &len,
                                  SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (conn < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
            || errno == ECONNABORTED) {
            Py_RETURN_NONE;
        }
        return evpy_set_errno(-errno);
    }
    PyObject *addr = len > 0 ? evpy_sockaddr_to_py((struct sockaddr *)&ss, len)
                             : PyUnicode_FromString("");
    if (addr == NULL && !PyErr_Occurred()) {
        addr = Py_NewRef(Py_None); /* no conversion for this family */
    }
    if (addr == NULL) {
        (void)close(conn);
        return NULL;
    }
    PyObject *pyconn = PyLong_FromLong(conn);
    if (pyconn == NULL) {
        (void)close(conn);
        Py_DECREF(addr);
        return NULL;
    }
    return pair(pyconn, addr);
}

int
evpy_sockaddr_from_py(int family, PyObject *address,
                      struct sockaddr_storage *ss, socklen_t *len)
{
    if (!PyTuple_Check(address)) {
        return 1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(address);
    if ((family != AF_INET || n != 2)
        && (family != AF_INET6 || n < 2 || n > 4)) {
        return 1;
    }
    PyObject *host = PyTuple_GET_ITEM(address, 0);
    PyObject *port = PyTuple_GET_ITEM(address, 1);
    if (!PyUnicode_Check(host) || !PyLong_Check(port)) {
        return 1;
    }
    const char *h = PyUnicode_AsUTF8(host);
    if (h == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeError)) {
            return -1;
        }
        PyErr_Clear(); /* not encodable: the socket module will say so */
        return 1;
    }
    long p = PyLong_AsLong(port);
    if (p == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
    }
    if (p < 0 || p > 65535) {
        return 1; /* the socket module raises OverflowError for these */
    }
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, h, &a->sin_addr) != 1) {
            return 1;
        }
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)p);
        *len = sizeof(*a);
        return 0;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    unsigned long flowinfo = 0, scope_id = 0;
    if (n > 2) {
        flowinfo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(address, 2));
        if (n > 3 && flowinfo != (unsigned long)-1) {
            scope_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(address, 3));
        }
        if (PyErr_Occurred()) {
            /* Negative, too big or not an int: the socket module says
             * which; anything else is ours to pass on. */
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)
                && !PyErr_ExceptionMatches(PyExc_TypeError)) {
                return -1;
            }
            PyErr_Clear();
            return 1;
        }
        if (flowinfo > 0xfffff) {
            return 1; /* the socket module raises OverflowError */
        }
    }
    if (inet_pton(AF_INET6, h, &a->sin6_addr) != 1) {
        return 1;
    }
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)p);
    a->sin6_flowinfo = htonl((uint32_t)flowinfo);
    a->sin6_scope_id = (uint32_t)scope_id;
    *len = sizeof(*a);
    return 0;
}

/* connect(family, type, proto, address) -> (fd, in_progress): a new
 * non-blocking, close-on-exec socket connecting to a numeric IPv4/IPv6
 * address. in_progress: wait for writability, then sock_error(fd). OSError
 * (as socket.connect() raises it) if the connection fails at once. */
static PyObject *
sockaddr_connect(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    int family, socktype, proto;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "connect() takes exactly 4 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *address = args[3];
    if (evpy_as_int(args[0], &family) < 0
        || evpy_as_int(args[1], &socktype) < 0
        || evpy_as_int(args[2], &proto) < 0) {
        return NULL;
    }
    if (!PyTuple_Check(address)) {
        PyErr_SetString(PyExc_TypeError, "connect(): address must be a tuple");
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = evpy_sockaddr_from_py(family, address, &ss, &len);
    if (rc != 0) {
        if (rc > 0) {
            PyErr_SetString(PyExc_ValueError,
                            "connect(): needs a numeric IPv4/IPv6 address");
        }
        return NULL;
    }
    int fd = socket(family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    if (fd < 0) {
        return evpy_set_errno(-errno);
    }
    rc = EVPY_FAULT(EVPY_FAULT_CONNECT,
                    connect(fd, (struct sockaddr *)&ss, len));
    int in_progress = 0;
    if (rc < 0) {
        if (errno == EINPROGRESS || errno == EINTR) {
            in_progress = 1; /* EINTR: the connect goes on asynchronously */
        }
        else {
            int err = errno;
            (void)close(fd);
            return evpy_set_errno(-err);
        }
    }
    PyObject *pyfd = PyLong_FromLong(fd);
    if (pyfd == NULL) {
        (void)close(fd);
        return NULL;
    }
    return pair(pyfd, PyBool_FromLong(in_progress));
}

/* sock_error(fd) -> int: the socket's pending error (SO_ERROR), 0 if
 * none: how a non-blocking connect() ended. */
static PyObject *
sockaddr_sock_error(PyObject *mod, PyObject *arg)
{
    long lfd = PyLong_AsLong(arg);
    if (lfd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt((int)lfd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        return evpy_set_errno(-errno);
    }
    return PyLong_FromLong(err);
}

PyMethodDef evpy_sockaddr_methods[] = {
    {"accept", (PyCFunction)sockaddr_accept, METH_O, NULL},
    {"connect", (PyCFunction)(void (*)(void))sockaddr_connect, METH_FASTCALL,
     NULL},
    {"sock_error", (PyCFunction)sockaddr_sock_error, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
