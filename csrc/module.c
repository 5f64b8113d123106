/* evpy._core: assembles the module from the units below it. The state
 * (state.c) is filled first, then each unit adds its types and functions.
 * The few module functions defined here are settings evpy's Python side
 * makes once and the two waiter callbacks the transports schedule.
 * Multi-phase init; all types are heap types created from specs.
 */
#include "accept.h"
#include "faultsmod.h"
#include "process.h"
#include "sockaddr.h"
#include "transport.h"

/* evpy.loop registers its ThreadSafeHandle class here (see evpy_state). */
static PyObject *
module_set_threadsafe_handle_type(PyObject *mod, PyObject *cls)
{
    if (cls != Py_None && !PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "a type or None is required");
        return NULL;
    }
    evpy_state *st = evpy_get_state(mod);
    Py_XSETREF(st->ts_handle_type, cls == Py_None ? NULL : Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* evpy.process says which exit bookkeeping asyncio has (see evpy_state). */
static PyObject *
module_set_process_wake_at_exit(PyObject *mod, PyObject *flag)
{
    int yes = PyObject_IsTrue(flag);
    if (yes < 0) {
        return NULL;
    }
    evpy_get_state(mod)->proc_wake_at_exit = yes;
    Py_RETURN_NONE;
}

/* asyncio's futures._set_result_unless_cancelled, and the same guarded by
 * done(): callbacks the loop schedules to complete a waiter (C: no frame
 * per call). */
static PyObject *
set_result_unless(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                  int done)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    evpy_state *st = evpy_get_state(mod);
    PyObject *r = PyObject_CallMethodNoArgs(args[0], done ? st->str_done
                                                          : st->str_cancelled);
    int yes = r == NULL ? -1 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    if (yes != 0) {
        return yes < 0 ? NULL : Py_NewRef(Py_None);
    }
    r = PyObject_CallMethodOneArg(args[0], st->str_set_result, args[1]);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
module_set_result_unless_cancelled(PyObject *mod, PyObject *const *args,
                                   Py_ssize_t nargs)
{
    return set_result_unless(mod, args, nargs, 0);
}

static PyObject *
module_set_result_unless_done(PyObject *mod, PyObject *const *args,
                              Py_ssize_t nargs)
{
    return set_result_unless(mod, args, nargs, 1);
}

static PyMethodDef module_methods[] = {
    {"set_result_unless_cancelled",
     (PyCFunction)(void (*)(void))module_set_result_unless_cancelled,
     METH_FASTCALL,
     "set_result_unless_cancelled(fut, result): fut.set_result(result) "
     "unless fut.cancelled()."},
    {"set_result_unless_done",
     (PyCFunction)(void (*)(void))module_set_result_unless_done, METH_FASTCALL,
     "set_result_unless_done(fut, result): fut.set_result(result) unless "
     "fut.done()."},
    {"_set_threadsafe_handle_type", module_set_threadsafe_handle_type, METH_O,
     "What call_soon_threadsafe() wraps its Handle in (None: "
     "nothing)."},
    {"_set_process_wake_at_exit", module_set_process_wake_at_exit, METH_O,
     "True: ProcessTransport wakes _wait() when the child exits, as "
     "asyncio since gh-119710; False: once its pipes are closed too."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject *
add_type(PyObject *mod, PyType_Spec *spec, PyTypeObject *base)
{
    PyObject *tp = PyType_FromModuleAndSpec(mod, spec, (PyObject *)base);
    if (tp == NULL || PyModule_AddType(mod, (PyTypeObject *)tp) < 0) {
        Py_XDECREF(tp);
        return NULL;
    }
    return (PyTypeObject *)tp;
}

static int
module_exec(PyObject *mod)
{
    evpy_state *st = evpy_get_state(mod);
    if (evpy_state_init(st) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(mod, module_methods) < 0
        || PyModule_AddFunctions(mod, evpy_sockaddr_methods) < 0
        || PyModule_AddFunctions(mod, evpy_accept_methods) < 0
        || PyModule_AddFunctions(mod, evpy_process_methods) < 0) {
        return -1;
    }
    st->LoopType = add_type(mod, &evpy_loop_spec, NULL);
    if (st->LoopType == NULL) {
        return -1;
    }
    st->HandleType = add_type(mod, &evpy_handle_spec, NULL);
    if (st->HandleType == NULL) {
        return -1;
    }
    st->TimerHandleType = add_type(mod, &evpy_timerhandle_spec,
                                   st->HandleType);
    if (st->TimerHandleType == NULL) {
        return -1;
    }
    if (evpy_transport_add_base_type(mod, st) < 0
        || evpy_stream_add_type(mod, st) < 0
        || evpy_datagram_add_type(mod, st) < 0
        || evpy_process_add_types(mod) < 0) {
        return -1;
    }
    const char *backends =
#if EVPY_HAVE_EPOLL
        "epoll "
#endif
#if EVPY_HAVE_KQUEUE
        "kqueue "
#endif
        "poll";
    if (PyModule_AddStringConstant(mod, "BACKENDS", backends) < 0) {
        return -1;
    }
    return evpy_faults_module_init(mod);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Not Py_MOD_GIL_NOT_USED: call_soon_threadsafe() and the loop share
     * the ready ring, protected by the GIL only (docs/free-threading.md). */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyMODINIT_FUNC
PyInit__core(void)
{
    /* The definition's state parts are state.c's; the slots are ours. */
    evpy_module_def.m_slots = module_slots;
    return PyModuleDef_Init(&evpy_module_def);
}
