/* Shared declarations of the evpy._core extension: the object layouts that
 * more than one file touches (Loop, Handle, I/O objects). Module state and
 * the small shared helpers are one unit below (state.h).
 *
 * Ownership: every PyObject * field is owned unless marked borrowed.
 */
#ifndef EVPY_H
#define EVPY_H

#include "state.h" /* module state and the helpers every unit shares */

#include "config.h"
#include "clock.h"
#include "fdtable.h"
#include "poller.h"
#include "ring.h"
#include "timerheap.h"
#include "waker.h"

#include "stats.h" /* health: counters, lag, slowest callbacks */

/* -- Loop ----------------------------------------------------------------- */

typedef struct LoopObject {
    PyObject_HEAD
    evpy_state *st;          /* borrowed: the type keeps the module */
    evpy_poller_t *poller;   /* NULL once closed */
    evpy_fdtable_t fds;      /* reader/writer: owned Handle refs */
    evpy_timerheap_t timers; /* each entry owns a ref to its handle */
    evpy_ring_t ready;       /* owned Handle refs */
    evpy_waker_t waker;
    evpy_event_t *events;
    int events_cap;
    unsigned long thread_id; /* 0 unless running */
    char closed;
    char running;
    char stopping;
    char debug;
    char sleeping;     /* blocked in the poller, GIL released */
    char wake_pending; /* waker written, not yet drained */
    size_t io_queued;  /* readiness events queued by this poll */
    double slow_callback_duration;
    char *readbuf;            /* shared by every transport's reads */
    PyObject *current_handle; /* debug mode only */
    PyObject *task_factory;   /* set_task_factory(), NULL for none */
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

/* RuntimeError("Event loop is closed") and -1 once closed, else 0. */
static inline int
evpy_loop_check_closed(LoopObject *loop)
{
    if (loop->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* Readers and writers (csrc/readers.c), the Loop methods of those names
 * (the _handle variants return the new Handle, as asyncio's private
 * _add_reader/_add_writer). */
PyObject *evpy_loop_add_reader(LoopObject *self, PyObject *const *args,
                               Py_ssize_t nargs);
PyObject *evpy_loop_add_writer(LoopObject *self, PyObject *const *args,
                               Py_ssize_t nargs);
PyObject *evpy_loop_add_reader_handle(LoopObject *self, PyObject *const *args,
                                      Py_ssize_t nargs);
PyObject *evpy_loop_add_writer_handle(LoopObject *self, PyObject *const *args,
                                      Py_ssize_t nargs);
PyObject *evpy_loop_remove_reader(LoopObject *self, PyObject *fileobj);
PyObject *evpy_loop_remove_writer(LoopObject *self, PyObject *fileobj);
/* Drops fd's reader or writer Handle (which: EVPY_READ or EVPY_WRITE),
 * cancelling it; 1 if there was one. */
int evpy_loop_drop_io(LoopObject *self, int fd, unsigned which);
/* RuntimeError and -1 if a transport owns fd. */
int evpy_loop_check_no_transport(LoopObject *self, int fd);

/* -- I/O objects: what the reactor calls directly ------------------------- */

/* Transports are I/O objects: the loop registers them in the fd table and
 * queues their readiness in the ready ring like handles, as tagged
 * pointers (objects are at least 8-byte aligned, so the low bits are free):
 *   fd slot reader/writer: Handle *, or IOObject * | EVPY_TAG_IO
 *   ready ring entry:      Handle *, or IOObject * | EVPY_READ/EVPY_WRITE */
#define EVPY_TAG_IO ((uintptr_t)1)
#define EVPY_TAG_MASK ((uintptr_t)3)
#define EVPY_TAG(p) ((uintptr_t)(p)&EVPY_TAG_MASK)
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
    PyObject *extra; /* BaseTransport.__slots__ '_extra' */
    const evpy_io_vtable *vt;
    LoopObject *loop; /* NULL when not attached */
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
int evpy_loop_call_soon_in(LoopObject *loop, PyObject *callable, PyObject *arg,
                           PyObject *context);
/* Schedules callable(*args) in `context` (NULL: a copy of the current
 * one) with call_soon semantics. */
int evpy_loop_call_soon_n(LoopObject *loop, PyObject *callable,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *context);
/* The loop's shared read buffer of EVPY_READBUF_SIZE bytes. */
#define EVPY_READBUF_SIZE (256 * 1024)
char *evpy_loop_readbuf(LoopObject *loop);


/* -- Handle / TimerHandle ------------------------------------------------- */

typedef struct HandleObject {
    PyObject_VAR_HEAD   /* ob_size: number of args */
    PyObject *callback; /* NULL once cancelled */
    PyObject *context;
    LoopObject *loop;
    PyObject *source_traceback; /* debug mode only */
    PyObject *repr;             /* debug: repr saved at cancel */
    PyObject *weakreflist;
    int running; /* _run() calls in progress (re-entrant) */
    char cancelled;
    char is_timer;
    char threadsafe;    /* made by call_soon_threadsafe() */
    evpy_timer_t timer; /* TimerHandle: heap entry */
    double when;        /* TimerHandle: float time as given */
    PyObject *args[1];  /* ob_size items, owned */
} HandleObject;

extern PyType_Spec evpy_handle_spec;
extern PyType_Spec evpy_timerhandle_spec;

#define EVPY_HANDLE_FROM_TIMER(t) \
  ((HandleObject *)((char *)(t)-offsetof(HandleObject, timer)))

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
