/* The bottom of evpy._core's C units: the per-module state (types, the
 * Python objects the C code calls, interned names) and the small helpers
 * every other unit shares (errno -> OSError, the lazily imported Python
 * formatters, exceptions across Python versions). It calls no other unit;
 * module.c assembles the module on top of it.
 *
 * Ownership: every PyObject * field is owned.
 */
#ifndef EVPY_STATE_H
#define EVPY_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_T_DOUBLE T_DOUBLE
#  define Py_T_BOOL T_BOOL
#  define Py_READONLY READONLY
#endif

/* Names the C code looks up or calls: (field, text), interned once. */
#define EVPY_STATE_STRINGS(X)                                       \
  X(str_loop, "loop")                                               \
  X(str_context, "context")                                         \
  X(str_func, "func")                                               \
  X(str_name, "name")                                               \
  X(str_on_callback_error, "_on_callback_error")                    \
  X(str_on_slow_callback, "_on_slow_callback")                      \
  X(str_extract_stack, "extract_stack")                             \
  X(str_handle_repr, "handle_repr")                                 \
  X(str_handle, "_handle")                                          \
  X(str_Task, "Task")                                               \
  X(str_create_task_slow, "_create_task_slow")                      \
  X(str_cancel, "cancel")                                           \
  X(str_fileno, "fileno")                                           \
  X(str_clients, "_clients")                                        \
  /* asyncio protocol methods */                                    \
  X(str_connection_made, "connection_made")                         \
  X(str_connection_lost, "connection_lost")                         \
  X(str_data_received, "data_received")                             \
  X(str_eof_received, "eof_received")                               \
  X(str_get_buffer, "get_buffer")                                   \
  X(str_buffer_updated, "buffer_updated")                           \
  X(str_datagram_received, "datagram_received")                     \
  X(str_error_received, "error_received")                           \
  X(str_pause_writing, "pause_writing")                             \
  X(str_resume_writing, "resume_writing")                           \
  /* the Python halves of evpy's transports (evpy/transports.py) */ \
  X(str_call_connection_lost, "_call_connection_lost")              \
  X(str_start_reading, "_start_reading")                            \
  X(str_detach, "_detach")                                          \
  X(str_fatal_error, "_fatal_error")                                \
  X(str_flow_control_failed, "_flow_control_failed")                \
  X(str_warn_write_after_close, "_warn_write_after_close")          \
  X(str_callback_failed, "_callback_failed")                        \
  X(str_on_pipe_eof, "_on_pipe_eof")                                \
  X(str_read_ready, "_read_ready")                                  \
  /* sockets, futures, extra info */                                \
  X(str_sockname, "sockname")                                       \
  X(str_peername, "peername")                                       \
  X(str_socket, "socket")                                           \
  X(str_getsockname, "getsockname")                                 \
  X(str_getpeername, "getpeername")                                 \
  X(str_sendto, "sendto")                                           \
  X(str_setblocking, "setblocking")                                 \
  X(str_close, "close")                                             \
  X(str_done, "done")                                               \
  X(str_set_result, "set_result")                                   \
  X(str_set_exception, "set_exception")                             \
  /* the subprocess transport (csrc/proctransport.c) */             \
  X(str_m_process_exited, "_process_exited")                        \
  X(str_process_exited, "process_exited")                           \
  X(str_pipe_data_received, "pipe_data_received")                   \
  X(str_pipe_connection_lost, "pipe_connection_lost")               \
  X(str_kill_if_running, "_kill_if_running")                        \
  X(str_disconnected, "disconnected")                               \
  X(str_pipe, "pipe")                                               \
  X(str_create_future, "create_future")                             \
  X(str_cancelled, "cancelled")                                     \
  X(str_returncode, "returncode")                                   \
  X(str_call_soon, "call_soon")                                     \
  X(str_append, "append")                                           \
  X(str_get_debug, "get_debug")                                     \
  X(str_is_closed, "is_closed")                                     \
  X(str_waitpid, "waitpid")                                         \
  X(str_reap_with, "_reap_with")

/* Python objects imported once: (field, module, attribute or NULL for the
 * module itself). */
#define EVPY_STATE_IMPORTS(X)                                           \
  X(Future, "asyncio", "Future")                                        \
  X(BufferedProtocol, "asyncio", "BufferedProtocol")                    \
  X(iscoroutine, "asyncio", "iscoroutine")                              \
  X(partial_type, "functools", "partial")                               \
  X(socket_type, "socket", "socket")                                    \
  X(TransportSocket, "asyncio.trsock", "TransportSocket")               \
  X(tasks_module, "asyncio.tasks", NULL)  /* Task looked up per call */ \
  X(get_exec_path, "os", "get_exec_path") /* _core.spawn's PATH */      \
  X(os_module, "os", NULL)                                              \
  X(os_waitpid, "os", "waitpid") /* the reaper's: is it replaced? */

typedef struct {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyTypeObject *TransportBaseType;
    PyTypeObject *StreamType;
    PyTypeObject *DatagramType;
#define EVPY_X(field, module, attr) PyObject *field;
    EVPY_STATE_IMPORTS(EVPY_X)
#undef EVPY_X
#define EVPY_X(field, text) PyObject *field;
    EVPY_STATE_STRINGS(EVPY_X)
#undef EVPY_X
    PyObject *empty_tuple;
    PyObject *format_module; /* evpy._format, imported lazily */
    PyObject *kwnames_loop;  /* ("loop",) */
    /* Task(coro, loop=, [name=], [context=]): index bit 0 name, bit 1
     * context */
    PyObject *kwnames_task[4];
    /* What call_soon_threadsafe() returns where asyncio has a thread-safe
     * handle class: evpy.loop.ThreadSafeHandle, a subclass of it wrapping
     * our Handle (set from Python; NULL: the Handle itself). */
    PyObject *ts_handle_type;
    /* asyncio's BaseSubprocessTransport wakes _wait()'s futures when the
     * child exits and keeps them in a set (gh-119710; 3.14+), not once
     * the pipes are closed too (set from Python: evpy.process). */
    int proc_wake_at_exit;
} evpy_state;

/* The module definition: its state's size and GC hooks are set here;
 * module.c adds the exec slot and the functions before it is used. */
extern PyModuleDef evpy_module_def;

evpy_state *evpy_get_state(PyObject *module);
/* The state of the module that made `type` (one of ours or a subclass):
 * borrowed; NULL with an exception. */
evpy_state *evpy_state_of_type(PyTypeObject *type);
/* Imports and interns everything above; -1 with an exception. */
int evpy_state_init(evpy_state *st);

/* evpy._format.<name>, the Python side of the cold paths (repr, logging). */
PyObject *evpy_format_func(evpy_state *st, PyObject *name);

/* Sets OSError from a negative errno, as CPython would for that errno. */
void *evpy_set_errno(int neg_errno);

/* -- exceptions across Python versions ------------------------------------ */

static inline PyObject *
evpy_fetch_exc(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(v, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(t);
    return v;
#endif
}

static inline void
evpy_restore_exc(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL) {
        return;
    }
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
#endif
}

/* A Python int that fits a C int: 0, or -1 with an exception
 * (OverflowError when it does not fit). */
static inline int
evpy_as_int(PyObject *obj, int *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "int out of range");
        return -1;
    }
    *out = (int)v;
    return 0;
}

#endif /* EVPY_STATE_H */
