/* Socket addresses as Python values, the way the socket module shows them
 * (so `accept()` and `getsockname()` done in C give what Python code would
 * have seen), and the accept(2) that evpy's servers use.
 */
#ifndef EVPY_SOCKADDR_H
#define EVPY_SOCKADDR_H

#include "evpy.h"

#include <sys/socket.h>

/* AF_INET: (host, port); AF_INET6: (host, port, flowinfo, scope_id);
 * AF_UNIX: str path, bytes for Linux's abstract namespace. Returns a new
 * reference, NULL with an exception on failure, or NULL with no exception
 * for any other family (the caller asks the socket module instead). */
PyObject *evpy_sockaddr_to_py(const struct sockaddr *sa, socklen_t len);

/* getsockname() (peer == 0) or getpeername() (peer != 0) of fd as above.
 * NULL with OSError set on failure; NULL with no exception for a family
 * this file does not convert. */
PyObject *evpy_sockaddr_of_fd(int fd, int peer);

/* A numeric IPv4 (host, port) or IPv6 (host, port[, flowinfo[, scope_id]])
 * address of family as a sockaddr: 0, or 1 (no exception) for anything
 * else (names, other families, out-of-range values: the socket module
 * handles and reports those), -1 with an exception. */
int evpy_sockaddr_from_py(int family, PyObject *address,
                          struct sockaddr_storage *ss, socklen_t *len);

/* A socket's kind, (family, type, proto) ints, as C ints: 0, or -1 with
 * an exception. */
int evpy_sockaddr_kind(PyObject *kind, int *family, int *type, int *proto);

/* Module functions: accept(fd), connect(family, type, proto, address),
 * sock_error(fd). */
extern PyMethodDef evpy_sockaddr_methods[];

#endif /* EVPY_SOCKADDR_H */
