/* Starting child processes in C: _core.spawn(), the fork/exec behind
 * loop.subprocess_exec()'s common case (see csrc/process.c).
 */
#ifndef EVPY_PROCESS_H
#define EVPY_PROCESS_H

#include "evpy.h"

/* Module functions: spawn(...). */
extern PyMethodDef evpy_process_methods[];

#ifdef __linux__
/* spawn()'s work: a[] are its 13 arguments; out[] gets pid, pidfd and the
 * parent's stdin, stdout, stderr pipe ends (-1 where absent).  -1 with an
 * exception, nothing left open (an exec failure was reaped). */
int evpy_spawn(PyObject *const *a, int out[5]);
#endif

/* Adds _core.ProcessTransport (csrc/proctransport.c; Linux only). */
int evpy_process_add_types(PyObject *mod);

#endif /* EVPY_PROCESS_H */
