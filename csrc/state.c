/* Module state and the shared helpers: see state.h. */
#include "state.h"

#include <errno.h>

evpy_state *
evpy_get_state(PyObject *module)
{
    return (evpy_state *)PyModule_GetState(module);
}

evpy_state *
evpy_state_of_type(PyTypeObject *type)
{
    PyObject *mod = PyType_GetModuleByDef(type, &evpy_module_def);
    return mod == NULL ? NULL : evpy_get_state(mod);
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
    if (m == NULL || attr == NULL) {
        return m;
    }
    PyObject *r = PyObject_GetAttrString(m, attr);
    Py_DECREF(m);
    return r;
}

int
evpy_state_init(evpy_state *st)
{
#define EVPY_X(field, module, attr)                      \
  if ((st->field = import_attr(module, attr)) == NULL) { \
    return -1;                                           \
  }
    EVPY_STATE_IMPORTS(EVPY_X)
#undef EVPY_X
#define EVPY_X(field, text)                                     \
  if ((st->field = PyUnicode_InternFromString(text)) == NULL) { \
    return -1;                                                  \
  }
    EVPY_STATE_STRINGS(EVPY_X)
#undef EVPY_X
    st->empty_tuple = PyTuple_New(0);
    st->kwnames_loop = PyTuple_Pack(1, st->str_loop);
    if (st->empty_tuple == NULL || st->kwnames_loop == NULL) {
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
    return 0;
}

static int
state_traverse(PyObject *mod, visitproc visit, void *arg)
{
    evpy_state *st = evpy_get_state(mod);
    Py_VISIT(st->LoopType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->TimerHandleType);
    Py_VISIT(st->TransportBaseType);
    Py_VISIT(st->StreamType);
    Py_VISIT(st->DatagramType);
#define EVPY_X(field, module, attr) Py_VISIT(st->field);
    EVPY_STATE_IMPORTS(EVPY_X)
#undef EVPY_X
    Py_VISIT(st->format_module);
    Py_VISIT(st->ts_handle_type);
    return 0;
}

static int
state_clear(PyObject *mod)
{
    evpy_state *st = evpy_get_state(mod);
    Py_CLEAR(st->LoopType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->TimerHandleType);
    Py_CLEAR(st->TransportBaseType);
    Py_CLEAR(st->StreamType);
    Py_CLEAR(st->DatagramType);
#define EVPY_X(field, module, attr) Py_CLEAR(st->field);
    EVPY_STATE_IMPORTS(EVPY_X)
#undef EVPY_X
#define EVPY_X(field, text) Py_CLEAR(st->field);
    EVPY_STATE_STRINGS(EVPY_X)
#undef EVPY_X
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->format_module);
    Py_CLEAR(st->kwnames_loop);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(st->kwnames_task[i]);
    }
    Py_CLEAR(st->ts_handle_type);
    return 0;
}

static void
state_free(void *mod)
{
    (void)state_clear((PyObject *)mod);
}

PyModuleDef evpy_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "evpy._core",
    .m_doc = "The C core of evpy: reactor, loop, handles.",
    .m_size = sizeof(evpy_state),
    .m_traverse = state_traverse,
    .m_clear = state_clear,
    .m_free = state_free,
};
