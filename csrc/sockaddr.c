/* Socket addresses for Python, and fd-level address queries: see
 * sockaddr.h. */
#include "sockaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
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

PyMethodDef evpy_sockaddr_methods[] = {
    {"accept", (PyCFunction)sockaddr_accept, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
