/* evpy._core: module definition, per-module state and the helpers every
 * type shares (errno -> OSError, the lazily imported Python formatters).
 * Multi-phase init; all types are heap types created from specs.
 */
#include "accept.h"
#include "faultsmod.h"
#include "sockaddr.h"
#include "transport.h"

#include <errno.h>

evpy_state *
evpy_get_state(PyObject *module)
{
    return (evpy_state *)PyModule_GetState(module);
}

void *
evpy_set_errno(int neg_errno)
{
    errno = -neg_errno;
    PyErr_SetFromErrno(PyExc_OSError);
    return NULL;
}

PyObject *
evpy_format_func(evpy_state *st, PyObject *name)
{
    if (st->format_module == NULL) {
        st->format_module = PyImport_ImportModule("evpy._format");
        if (st->format_module == NULL) {
            return NULL;
        }
    }
    return PyObject_GetAttr(st->format_module, name);
}

static PyObject *
import_attr(const char *module, const char *attr)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_GetAttrString(m, attr);
    Py_DECREF(m);
    return r;
}

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

/* TransportBase extends asyncio.BaseTransport; each concrete transport
 * type has it and the matching asyncio classes as bases. */
static PyTypeObject *
transport_type(PyObject *mod, PyType_Spec *spec, PyTypeObject *base,
               const char *asyncio_name, const char *asyncio_name2)
{
    PyObject *other = import_attr("asyncio", asyncio_name);
    PyObject *other2 = asyncio_name2 ? import_attr("asyncio", asyncio_name2)
                                     : NULL;
    if (other == NULL || (asyncio_name2 != NULL && other2 == NULL)) {
        Py_XDECREF(other);
        Py_XDECREF(other2);
        return NULL;
    }
    PyObject *bases = other2 ? PyTuple_Pack(3, (PyObject *)base, other, other2)
                             : PyTuple_Pack(2, (PyObject *)base, other);
    Py_DECREF(other);
    Py_XDECREF(other2);
    if (bases == NULL) {
        return NULL;
    }
    PyObject *tp = PyType_FromModuleAndSpec(mod, spec, bases);
    Py_DECREF(bases);
    return (PyTypeObject *)tp;
}

static int
add_transport_types(PyObject *mod, evpy_state *st)
{
    PyObject *base = import_attr("asyncio", "BaseTransport");
    if (base == NULL || evpy_transport_check_layout(base) < 0) {
        Py_XDECREF(base);
        return -1;
    }
    st->TransportBaseType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &evpy_transport_spec, base);
    Py_DECREF(base);
    if (st->TransportBaseType == NULL) {
        return -1;
    }
    st->StreamType = transport_type(mod, &evpy_stream_spec,
                                    st->TransportBaseType, "Transport", NULL);
    if (st->StreamType == NULL) {
        return -1;
    }
    /* asyncio's datagram transport is a Transport too (its selector
     * base class is), and a DatagramTransport from 3.12 on. */
    st->DatagramType = transport_type(mod, &evpy_datagram_spec,
                                      st->TransportBaseType, "Transport",
                                      "DatagramTransport");
    return st->DatagramType == NULL ? -1 : 0;
}

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

static PyMethodDef module_methods[] = {
    {"_set_threadsafe_handle_type", module_set_threadsafe_handle_type,
     METH_O, "What call_soon_threadsafe() wraps its Handle in (None: "
             "nothing)."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *mod)
{
    evpy_state *st = evpy_get_state(mod);

    if (PyModule_AddFunctions(mod, module_methods) < 0) {
        return -1;
    }
    st->LoopType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &evpy_loop_spec, NULL);
    if (st->LoopType == NULL) {
        return -1;
    }
    st->HandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &evpy_handle_spec, NULL);
    if (st->HandleType == NULL) {
        return -1;
    }
    st->TimerHandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &evpy_timerhandle_spec, (PyObject *)st->HandleType);
    if (st->TimerHandleType == NULL) {
        return -1;
    }
    if (add_transport_types(mod, st) < 0) {
        return -1;
    }
    if (PyModule_AddType(mod, st->LoopType) < 0
        || PyModule_AddType(mod, st->HandleType) < 0
        || PyModule_AddType(mod, st->TimerHandleType) < 0
        || PyModule_AddType(mod, st->TransportBaseType) < 0
        || PyModule_AddType(mod, st->StreamType) < 0
        || PyModule_AddType(mod, st->DatagramType) < 0) {
        return -1;
    }

    st->Future = import_attr("asyncio", "Future");
    st->BufferedProtocol = import_attr("asyncio", "BufferedProtocol");
    st->partial_type = import_attr("functools", "partial");
    st->iscoroutine = import_attr("asyncio", "iscoroutine");
    st->socket_type = import_attr("socket", "socket");
    st->tasks_module = PyImport_ImportModule("asyncio.tasks");
    st->TransportSocket = import_attr("asyncio.trsock", "TransportSocket");
    st->empty_tuple = PyTuple_New(0);
    if (st->Future == NULL || st->BufferedProtocol == NULL
        || st->partial_type == NULL || st->iscoroutine == NULL
        || st->socket_type == NULL || st->tasks_module == NULL
        || st->TransportSocket == NULL || st->empty_tuple == NULL) {
        return -1;
    }
    if (intern(&st->str_loop, "loop") < 0
        || intern(&st->str_context, "context") < 0
        || intern(&st->str_func, "func") < 0
        || intern(&st->str_on_callback_error, "_on_callback_error") < 0
        || intern(&st->str_on_slow_callback, "_on_slow_callback") < 0
        || intern(&st->str_extract_stack, "extract_stack") < 0
        || intern(&st->str_handle_repr, "handle_repr") < 0
        || intern(&st->str_handle, "_handle") < 0) {
        return -1;
    }
    st->kwnames_loop = PyTuple_Pack(1, st->str_loop);
    if (st->kwnames_loop == NULL
        || intern(&st->str_Task, "Task") < 0
        || intern(&st->str_create_task_slow, "_create_task_slow") < 0
        || intern(&st->str_name, "name") < 0
        || intern(&st->str_connection_lost, "connection_lost") < 0
        || intern(&st->str_call_connection_lost, "_call_connection_lost") < 0
        || intern(&st->str_detach, "_detach") < 0
        || intern(&st->str_sockname, "sockname") < 0
        || intern(&st->str_peername, "peername") < 0
        || intern(&st->str_socket, "socket") < 0
        || intern(&st->str_unclosed, "_unclosed") < 0
        || intern(&st->str_connection_made, "connection_made") < 0
        || intern(&st->str_start_reading, "_start_reading") < 0
        || intern(&st->str_fileno, "fileno") < 0
        || intern(&st->str_clients, "_clients") < 0
        || intern(&st->str_data_received, "data_received") < 0
        || intern(&st->str_get_buffer, "get_buffer") < 0
        || intern(&st->str_buffer_updated, "buffer_updated") < 0) {
        return -1;
    }
    st->kwnames_task[0] = Py_NewRef(st->kwnames_loop);
    st->kwnames_task[1] = PyTuple_Pack(2, st->str_loop, st->str_name);
    st->kwnames_task[2] = PyTuple_Pack(2, st->str_loop, st->str_context);
    st->kwnames_task[3] = PyTuple_Pack(3, st->str_loop, st->str_name,
                                       st->str_context);
    for (int i = 1; i < 4; i++) {
        if (st->kwnames_task[i] == NULL) {
            return -1;
        }
    }

    const char *backends =
#if EVPY_HAVE_EPOLL
        "epoll "
#endif
#if EVPY_HAVE_KQUEUE
        "kqueue "
#endif
        "poll";
    if (PyModule_AddFunctions(mod, evpy_accept_methods) < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(mod, "BACKENDS", backends) < 0) {
        return -1;
    }
    if (evpy_faults_module_init(mod) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    evpy_state *st = evpy_get_state(mod);
    Py_VISIT(st->LoopType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->TimerHandleType);
    Py_VISIT(st->TransportBaseType);
    Py_VISIT(st->StreamType);
    Py_VISIT(st->DatagramType);
    Py_VISIT(st->Future);
    Py_VISIT(st->BufferedProtocol);
    Py_VISIT(st->partial_type);
    Py_VISIT(st->iscoroutine);
    Py_VISIT(st->socket_type);
    Py_VISIT(st->tasks_module);
    Py_VISIT(st->TransportSocket);
    Py_VISIT(st->format_module);
    Py_VISIT(st->ts_handle_type);
    return 0;
}

static int
module_clear(PyObject *mod)
{
    evpy_state *st = evpy_get_state(mod);
    Py_CLEAR(st->LoopType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->TimerHandleType);
    Py_CLEAR(st->TransportBaseType);
    Py_CLEAR(st->StreamType);
    Py_CLEAR(st->DatagramType);
    Py_CLEAR(st->Future);
    Py_CLEAR(st->BufferedProtocol);
    Py_CLEAR(st->partial_type);
    Py_CLEAR(st->iscoroutine);
    Py_CLEAR(st->socket_type);
    Py_CLEAR(st->tasks_module);
    Py_CLEAR(st->TransportSocket);
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->format_module);
    Py_CLEAR(st->str_loop);
    Py_CLEAR(st->str_context);
    Py_CLEAR(st->str_func);
    Py_CLEAR(st->str_on_callback_error);
    Py_CLEAR(st->str_on_slow_callback);
    Py_CLEAR(st->str_extract_stack);
    Py_CLEAR(st->str_handle_repr);
    Py_CLEAR(st->str_handle);
    Py_CLEAR(st->ts_handle_type);
    Py_CLEAR(st->kwnames_loop);
    Py_CLEAR(st->str_Task);
    Py_CLEAR(st->str_create_task_slow);
    Py_CLEAR(st->str_name);
    Py_CLEAR(st->str_connection_lost);
    Py_CLEAR(st->str_call_connection_lost);
    Py_CLEAR(st->str_detach);
    Py_CLEAR(st->str_sockname);
    Py_CLEAR(st->str_peername);
    Py_CLEAR(st->str_socket);
    Py_CLEAR(st->str_unclosed);
    Py_CLEAR(st->str_connection_made);
    Py_CLEAR(st->str_start_reading);
    Py_CLEAR(st->str_fileno);
    Py_CLEAR(st->str_clients);
    Py_CLEAR(st->str_data_received);
    Py_CLEAR(st->str_get_buffer);
    Py_CLEAR(st->str_buffer_updated);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(st->kwnames_task[i]);
    }
    return 0;
}

static void
module_free(void *mod)
{
    (void)module_clear((PyObject *)mod);
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

PyModuleDef evpy_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "evpy._core",
    .m_doc = "The C core of evpy: reactor, loop, handles.",
    .m_size = sizeof(evpy_state),
    .m_methods = evpy_sockaddr_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&evpy_module_def);
}
