/* The accept loop of evpy's servers, in C: on a readable listening socket,
 * accept connections and make each one a stream transport over the bare
 * fd, as asyncio's _accept_connection does with socket objects.
 */
#ifndef EVPY_ACCEPT_H
#define EVPY_ACCEPT_H

#include "evpy.h"

/* Module functions: accept_connections(...). */
extern PyMethodDef evpy_accept_methods[];

#endif /* EVPY_ACCEPT_H */
