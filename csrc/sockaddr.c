/* Socket addresses for Python, and fd-level address queries: see
 * sockaddr.h. */
#include "sockaddr.h"

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
    if (inet_ntop(family, addr, buf, sizeof(buf)) == NULL) {
        return evpy_set_errno(-errno);
    }
    return PyUnicode_FromString(buf);
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
        return Py_BuildValue("Ni", host, (int)ntohs(a->sin_port));
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
    int conn = accept4(fd, (struct sockaddr *)&ss, &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
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
    return Py_BuildValue("iN", conn, addr);
}

/* A numeric (host, port[, flowinfo, scope_id]) address of family as a
 * sockaddr; -1 with ValueError/TypeError if it is not one. */
static int
sockaddr_from_py(int family, PyObject *address, struct sockaddr_storage *ss,
                 socklen_t *len)
{
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (!PyArg_ParseTuple(address, "si:connect", &host, &port)) {
            return -1;
        }
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            goto not_numeric;
        }
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof(*a);
    }
    else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (!PyArg_ParseTuple(address, "si|II:connect", &host, &port,
                              &flowinfo, &scope_id)) {
            return -1;
        }
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            goto not_numeric;
        }
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_flowinfo = htonl(flowinfo);
        a->sin6_scope_id = scope_id;
        *len = sizeof(*a);
    }
    else {
        PyErr_SetString(PyExc_ValueError, "connect(): IPv4 or IPv6 only");
        return -1;
    }
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_OverflowError,
                        "connect(): port must be 0-65535.");
        return -1;
    }
    return 0;
not_numeric:
    PyErr_Format(PyExc_ValueError, "connect(): %s is not a numeric address",
                 host);
    return -1;
}

/* connect(family, type, proto, address) -> (fd, in_progress): a new
 * non-blocking, close-on-exec socket connecting to a numeric IPv4/IPv6
 * address. in_progress: wait for writability, then sock_error(fd). OSError
 * (as socket.connect() raises it) if the connection fails at once. */
static PyObject *
sockaddr_connect(PyObject *mod, PyObject *args)
{
    int family, socktype, proto;
    PyObject *address;
    if (!PyArg_ParseTuple(args, "iiiO!:connect", &family, &socktype, &proto,
                          &PyTuple_Type, &address)) {
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    if (sockaddr_from_py(family, address, &ss, &len) < 0) {
        return NULL;
    }
    int fd = socket(family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    if (fd < 0) {
        return evpy_set_errno(-errno);
    }
    int rc = connect(fd, (struct sockaddr *)&ss, len);
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
    return Py_BuildValue("iO", fd, in_progress ? Py_True : Py_False);
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
    {"connect", (PyCFunction)sockaddr_connect, METH_VARARGS, NULL},
    {"sock_error", (PyCFunction)sockaddr_sock_error, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
