/* _core.FAULTS, and in an EVPY_FAULTS build (tests only) the functions
 * that switch fault injection on and off and count what was injected.
 * The environment is read once, here, when the module is loaded:
 *   EVPY_FAULT_SEED  (integer, default 1)
 *   EVPY_FAULT_RATE  (fraction of syscalls failed, default 0: off)
 *   EVPY_FAULT_MODE  ("all", the default, or "transient": EINTR/EAGAIN)
 */
#include "faultsmod.h"
#include "faults.h"

#include <stdlib.h>
#include <string.h>

#ifdef EVPY_FAULTS
static PyObject *
faults_set(PyObject *mod, PyObject *args)
{
    unsigned long long seed;
    double rate;
    int transient = 0;
    if (!PyArg_ParseTuple(args, "Kd|p:faults_set", &seed, &rate, &transient)) {
        return NULL;
    }
    evpy_faults_configure(seed, rate, transient);
    Py_RETURN_NONE;
}

static PyObject *
faults_counts(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    for (int i = 0; i < EVPY_FAULT_NSITES; i++) {
        for (int k = 0; k < 8; k++) {
            int err = 0;
            unsigned long count = evpy_faults_count(i, k, &err);
            if (err == 0) {
                break;
            }
            PyObject *key = Py_BuildValue("(si)", evpy_faults_site_name(i),
                                          err);
            PyObject *n = PyLong_FromUnsignedLong(count);
            if (key == NULL || n == NULL || PyDict_SetItem(d, key, n) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(n);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(n);
        }
    }
    return d;
}

static PyMethodDef faults_methods[] = {
    {"faults_set", faults_set, METH_VARARGS,
     "faults_set(seed, rate, transient=False): fail this fraction of the "
     "wrapped syscalls (0: off)."},
    {"faults_counts", faults_counts, METH_NOARGS,
     "Faults injected so far: {(site, errno): count}."},
    {NULL, NULL, 0, NULL},
};
#endif

int
evpy_faults_module_init(PyObject *mod)
{
#ifdef EVPY_FAULTS
    if (PyModule_AddFunctions(mod, faults_methods) < 0) {
        return -1;
    }
    const char *seed = getenv("EVPY_FAULT_SEED");
    const char *rate = getenv("EVPY_FAULT_RATE");
    const char *mode = getenv("EVPY_FAULT_MODE");
    evpy_faults_configure(seed ? strtoull(seed, NULL, 10) : 1,
                          rate ? strtod(rate, NULL) : 0.0,
                          mode != NULL && strcmp(mode, "transient") == 0);
    return PyModule_AddObjectRef(mod, "FAULTS", Py_True);
#else
    return PyModule_AddObjectRef(mod, "FAULTS", Py_False);
#endif
}
