/* _core's view of the test-only fault injection (csrc/core/faults.h). */
#ifndef EVPY_FAULTSMOD_H
#define EVPY_FAULTSMOD_H

#include <Python.h>

/* Adds FAULTS (True in an EVPY_FAULTS build) and, in such a build,
 * faults_set() / faults_counts(); applies EVPY_FAULT_SEED, EVPY_FAULT_RATE
 * and EVPY_FAULT_MODE from the environment. */
int evpy_faults_module_init(PyObject *mod);

#endif /* EVPY_FAULTSMOD_H */
