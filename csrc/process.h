/* Starting child processes in C: _core.spawn(), the fork/exec behind
 * loop.subprocess_exec()'s common case (see csrc/process.c).
 */
#ifndef EVPY_PROCESS_H
#define EVPY_PROCESS_H

#include "evpy.h"

/* Module functions: spawn(...). */
extern PyMethodDef evpy_process_methods[];

#endif /* EVPY_PROCESS_H */
