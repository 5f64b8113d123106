/* Connections in C: the accept loop of evpy's servers (on a readable
 * listening socket, accept connections and make each one a stream
 * transport over the bare fd, as asyncio's _accept_connection does with
 * socket objects) and the same transport for a connection create_connection
 * made in C.
 */
#ifndef EVPY_ACCEPT_H
#define EVPY_ACCEPT_H

#include "evpy.h"

/* Module functions: accept_connections(...), adopt_stream(...). */
extern PyMethodDef evpy_accept_methods[];

#endif /* EVPY_ACCEPT_H */
