/* Shared declarations of the evpy._core extension: module state and the
 * object layouts that more than one file touches (Loop, Handle).
 *
 * Ownership: every PyObject * field is owned unless marked borrowed.
 */
#ifndef EVPY_H
#define EVPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_T_DOUBLE T_DOUBLE
#  define Py_T_BOOL T_BOOL
#  define Py_READONLY READONLY
#endif

#include "config.h"
#include "clock.h"
#include "fdtable.h"
#include "poller.h"
#include "ring.h"
#include "timerheap.h"
#include "waker.h"

#include "stats.h" /* health: counters, lag, slowest callbacks */

/* -- module state --------------------------------------------------------- */

#define EVPY_PROC_NAMES 20

typedef struct {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyTypeObject *TransportBaseType;
    PyTypeObject *StreamType;
    PyTypeObject *DatagramType;
    PyObject *Future;          /* asyncio.Future */
    PyObject *BufferedProtocol;/* asyncio.BufferedProtocol */
    PyObject *partial_type;    /* functools.partial */
    PyObject *iscoroutine;     /* asyncio.iscoroutine */
    PyObject *socket_type;     /* socket.socket */
    PyObject *tasks_module;    /* asyncio.tasks (Task looked up per call) */
    PyObject *TransportSocket; /* asyncio.trsock.TransportSocket */
    PyObject *empty_tuple;
    PyObject *format_module;   /* evpy._format, imported lazily */
    /* interned method names */
    PyObject *str_loop;
    PyObject *str_context;
    PyObject *str_func;
    PyObject *str_on_callback_error;
    PyObject *str_on_slow_callback;
    PyObject *str_extract_stack;
    PyObject *str_handle_repr;
    PyObject *str_handle;      /* "_handle" */
    PyObject *kwnames_loop;    /* ("loop",) */
    PyObject *str_Task;
    PyObject *str_create_task_slow;
    PyObject *str_name;
    PyObject *str_connection_lost;
    PyObject *str_call_connection_lost;
    PyObject *str_detach;
    PyObject *str_sockname;
    PyObject *str_peername;
    PyObject *str_socket;
    PyObject *str_unclosed;
    PyObject *str_connection_made;
    PyObject *str_start_reading;
    PyObject *str_fileno;
    PyObject *str_clients;
    PyObject *str_data_received;
    PyObject *str_get_buffer;
    PyObject *str_buffer_updated;
    /* Task(coro, loop=, [name=], [context=]): index bit 0 name, bit 1
     * context */
    PyObject *kwnames_task[4];
    /* What call_soon_threadsafe() returns where asyncio has a thread-safe
     * handle class: evpy.loop.ThreadSafeHandle, a subclass of it wrapping
     * our Handle (set from Python; NULL: the Handle itself). */
    PyObject *ts_handle_type;
    /* csrc/proctransport.c's: os.get_exec_path and the names it looks up
     * per child (set by evpy_process_add_types, cleared by
     * evpy_process_state_clear) */
    PyObject *get_exec_path;
    PyObject *proc_str[EVPY_PROC_NAMES];
} evpy_state;

extern PyModuleDef evpy_module_def;

evpy_state *evpy_get_state(PyObject *module);
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

/* -- Loop ----------------------------------------------------------------- */

typedef struct LoopObject {
    PyObject_HEAD
    evpy_state *st;              /* borrowed: the type keeps the module */
    evpy_poller_t *poller;       /* NULL once closed */
    evpy_fdtable_t fds;          /* reader/writer: owned Handle refs */
    evpy_timerheap_t timers;     /* each entry owns a ref to its handle */
    evpy_ring_t ready;           /* owned Handle refs */
    evpy_waker_t waker;
    evpy_event_t *events;
    int events_cap;
    unsigned long thread_id;     /* 0 unless running */
    char closed;
    char running;
    char stopping;
    char debug;
    char sleeping;               /* blocked in the poller, GIL released */
    char wake_pending;           /* waker written, not yet drained */
    size_t io_queued;            /* readiness events queued by this poll */
    double slow_callback_duration;
    char *readbuf;               /* shared by every transport's reads */
    PyObject *current_handle;    /* debug mode only */
    PyObject *task_factory;      /* set_task_factory(), NULL for none */
    PyObject *weakreflist;
    /* Held by the loop thread while it runs a call_soon_threadsafe()
     * handle: cancel()/cancelled() from another thread wait on it until
     * the callback has returned (asyncio's thread-safe handle contract). */
    PyThread_type_lock ts_lock;
    char ts_held;
    /* health (csrc/stats.h): always-on counters; `detail` = opt-in
     * per-callback timing */
    char detail;
    evpy_stats_t stats;
} LoopObject;

extern PyType_Spec evpy_loop_spec;

/* -- I/O objects: what the reactor calls directly ------------------------- */

/* Transports are I/O objects: the loop registers them in the fd table and
 * queues their readiness in the ready ring like handles, as tagged
 * pointers (objects are at least 8-byte aligned, so the low bits are free):
 *   fd slot reader/writer: Handle *, or IOObject * | EVPY_TAG_IO
 *   ready ring entry:      Handle *, or IOObject * | EVPY_READ/EVPY_WRITE */
#define EVPY_TAG_IO ((uintptr_t)1)
#define EVPY_TAG_MASK ((uintptr_t)3)
#define EVPY_TAG(p) ((uintptr_t)(p) & EVPY_TAG_MASK)
#define EVPY_UNTAG(p) ((PyObject *)((uintptr_t)(p) & ~EVPY_TAG_MASK))

typedef struct IOObject IOObject;

typedef struct {
    /* Readiness for `events` (EVPY_READ or EVPY_WRITE) reached the front
     * of the ready queue. Returns -1 only to propagate SystemExit or
     * KeyboardInterrupt out of the loop. */
    int (*on_event)(IOObject *self, unsigned events);
    /* Short description for slow-callback logging in debug mode. */
    const char *name;
} evpy_io_vtable;

/* Common head of every I/O object. The first field is asyncio's
 * BaseTransport `_extra` slot: our transport types are subclasses of
 * asyncio's transport classes and extend their layout. */
struct IOObject {
    PyObject_HEAD
    PyObject *extra;               /* BaseTransport.__slots__ '_extra' */
    const evpy_io_vtable *vt;
    LoopObject *loop;              /* NULL when not attached */
    /* The contextvars.Context each direction's events run in, as asyncio
     * runs a reader's or writer's Handle: [EVPY_IO_CTX_READ] is copied when
     * reading starts or resumes, [EVPY_IO_CTX_WRITE] when writing has to
     * wait. NULL: the loop's current context. */
    PyObject *ctx[2];
    /* 3.15: the transport's own context (transport._context), which both
     * directions' events run in, as asyncio 3.15 registers a transport's
     * reader and writer with its context: ctx[] then stays as set. */
    char ctx_bound;
    int fd;
};

#define EVPY_IO_CTX_READ 0
#define EVPY_IO_CTX_WRITE 1
/* Replaces io->ctx[which] with a copy of the current context. */
int evpy_io_copy_context(IOObject *io, int which);

/* Registers io->fd with no interest yet; the fd slot keeps one reference
 * to io until evpy_loop_io_detach. RuntimeError if the fd has readers. */
int evpy_loop_io_attach(LoopObject *loop, IOObject *io);
/* Sets the wanted interest, applied in one batch before the next wait. */
int evpy_loop_io_want(LoopObject *loop, IOObject *io, unsigned want);
unsigned evpy_loop_io_wanted(LoopObject *loop, IOObject *io);
/* Unregisters now (the caller may close the fd next) and drops the slot's
 * reference: the caller must hold its own. */
void evpy_loop_io_detach(LoopObject *loop, IOObject *io);
/* Schedules callable(arg), or callable() if arg is NULL, with call_soon
 * semantics. */
int evpy_loop_call_soon(LoopObject *loop, PyObject *callable, PyObject *arg);
/* The same in `context` (NULL: a copy of the current one). */
int evpy_loop_call_soon_in(LoopObject *loop, PyObject *callable,
                           PyObject *arg, PyObject *context);
/* Schedules callable(*args) in `context` (NULL: a copy of the current
 * one) with call_soon semantics. */
int evpy_loop_call_soon_n(LoopObject *loop, PyObject *callable,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *context);
/* The loop's shared read buffer of EVPY_READBUF_SIZE bytes. */
#define EVPY_READBUF_SIZE (256 * 1024)
char *evpy_loop_readbuf(LoopObject *loop);

extern PyType_Spec evpy_stream_spec;
extern PyType_Spec evpy_datagram_spec;

/* -- Handle / TimerHandle ------------------------------------------------- */

typedef struct HandleObject {
    PyObject_VAR_HEAD            /* ob_size: number of args */
    PyObject *callback;          /* NULL once cancelled */
    PyObject *context;
    LoopObject *loop;
    PyObject *source_traceback;  /* debug mode only */
    PyObject *repr;              /* debug: repr saved at cancel */
    PyObject *weakreflist;
    char cancelled;
    char running;
    char is_timer;
    char threadsafe;             /* made by call_soon_threadsafe() */
    evpy_timer_t timer;          /* TimerHandle: heap entry */
    double when;                 /* TimerHandle: float time as given */
    PyObject *args[1];           /* ob_size items, owned */
} HandleObject;

extern PyType_Spec evpy_handle_spec;
extern PyType_Spec evpy_timerhandle_spec;

#define EVPY_HANDLE_FROM_TIMER(t) \
    ((HandleObject *)((char *)(t) - offsetof(HandleObject, timer)))

/* New handle; args are borrowed and increfed. context NULL copies the
 * current one. Returns a new reference or NULL. */
HandleObject *evpy_handle_new(LoopObject *loop, PyTypeObject *type,
                              PyObject *callback, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *context);

/* Runs the callback in its context; exceptions other than SystemExit and
 * KeyboardInterrupt go to the loop's exception handler. Returns -1 only
 * with SystemExit/KeyboardInterrupt (or a failing handler) set. */
int evpy_handle_run(HandleObject *h);

/* Drops callback and args (after cancel, once not running). */
void evpy_handle_clear_callback(HandleObject *h);

#endif /* EVPY_H */
