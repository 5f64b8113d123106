/* Loop: the C base of evpy.Loop. It owns the reactor (poller, fd table,
 * timer heap, ready queue, waker) and implements the hot half of asyncio's
 * AbstractEventLoop: call_soon[_threadsafe], call_later, call_at, time,
 * create_future, add/remove_reader/writer, and the run loop itself (the
 * equivalent of BaseEventLoop._run_once). Everything cold lives in
 * evpy/loop.py on top of it.
 */
#include "evpy.h"

#include <errno.h>
#include <pythread.h>
#include <stdlib.h>

#define EVENTS_INITIAL 64
#define EVENTS_MAX 4096

/* -- checks shared by the scheduling methods ------------------------------ */

static int
loop_check_closed(LoopObject *self)
{
    return evpy_loop_check_closed(self);
}

static int
loop_check_thread(LoopObject *self)
{
    if (self->thread_id != 0
        && self->thread_id != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop "
                        "other than the current one");
        return -1;
    }
    return 0;
}

/* 1 if `func` is a coroutine function (as inspect.iscoroutinefunction sees
 * plain functions, bound methods and functools.partial), else 0; -1 with
 * an exception. */
static int
is_coroutine_function(evpy_state *st, PyObject *func)
{
    for (int depth = 0; depth < 16; depth++) {
        if (PyMethod_Check(func)) {
            func = PyMethod_GET_FUNCTION(func);
            continue;
        }
        if (PyFunction_Check(func)) {
            PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(func);
            return (code->co_flags & CO_COROUTINE) != 0;
        }
        if ((PyObject *)Py_TYPE(func) == st->partial_type) {
            PyObject *inner = PyObject_GetAttr(func, st->str_func);
            if (inner == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                    return -1;
                }
                PyErr_Clear();
                return 0;
            }
            /* Borrowed from here on: the partial keeps it alive. */
            Py_DECREF(inner);
            func = inner;
            continue;
        }
        return 0;
    }
    return 0;
}

static int
loop_check_callback(LoopObject *self, PyObject *callback, const char *method)
{
    if (PyCallable_Check(callback)) {
        int is_coro_func = is_coroutine_function(self->st, callback);
        if (is_coro_func < 0) {
            return -1;
        }
        if (is_coro_func) {
            PyErr_Format(PyExc_TypeError,
                         "coroutines cannot be used with %s()", method);
            return -1;
        }
        return 0;
    }
    PyObject *r = PyObject_CallOneArg(self->st->iscoroutine, callback);
    if (r == NULL) {
        return -1;
    }
    int is_coro = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (is_coro < 0) {
        return -1;
    }
    if (is_coro) {
        PyErr_Format(PyExc_TypeError, "coroutines cannot be used with %s()",
                     method);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "a callable object was expected by %s(), got %R", method,
                     callback);
    }
    return -1;
}

/* The call shape the scheduling methods share:
 *     method(<fixed parameters>, *args, context=None)
 * The fixed parameters (callback, delay, when) may also be passed by
 * keyword, as Python allows for asyncio's signatures. */
typedef struct {
    PyObject *fixed[2];     /* borrowed */
    PyObject *const *extra; /* the callback's arguments, borrowed */
    Py_ssize_t nextra;
    PyObject *context; /* borrowed, NULL if not given */
} sched_args_t;

static int
kw_is(PyObject *name, PyObject *interned, const char *ascii)
{
    return name == interned
           || PyUnicode_CompareWithASCIIString(name, ascii) == 0;
}

static int
parse_sched_args(LoopObject *self, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames, const char *method,
                 const char *const *names, int nfixed, sched_args_t *out)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    out->context = NULL;
    for (int j = 0; j < nfixed; j++) {
        out->fixed[j] = j < nargs ? args[j] : NULL;
    }
    out->extra = args + nfixed;
    out->nextra = nargs > nfixed ? nargs - nfixed : 0;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (kw_is(name, self->st->str_context, "context")) {
            out->context = args[nargs + i];
            continue;
        }
        int j = 0;
        while (j < nfixed
               && PyUnicode_CompareWithASCIIString(name, names[j]) != 0) {
            j++;
        }
        if (j == nfixed) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         method, name);
            return -1;
        }
        if (out->fixed[j] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", method,
                         names[j]);
            return -1;
        }
        out->fixed[j] = args[nargs + i];
    }
    for (int j = 0; j < nfixed; j++) {
        if (out->fixed[j] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required positional argument: '%s'",
                         method, names[j]);
            return -1;
        }
    }
    return 0;
}

static const char *const names_soon[] = {"callback"};
static const char *const names_later[] = {"delay", "callback"};
static const char *const names_at[] = {"when", "callback"};

static int
loop_push_ready(LoopObject *self, HandleObject *h)
{
    /* Steals the caller's reference to h, also on failure. */
    if (evpy_ring_push(&self->ready, h) < 0) {
        Py_DECREF(h);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
loop_wakeup(LoopObject *self)
{
    if (self->sleeping && !self->wake_pending && self->poller != NULL) {
        self->wake_pending = 1;
        evpy_waker_wake(&self->waker);
    }
}

/* -- call_soon / call_soon_threadsafe / call_later / call_at -------------- */

/* asyncio's thread-safe handle class (3.14+: the test suite and user code
 * may check isinstance) around h: a bare instance of our Python subclass
 * (no __init__ run) whose `_handle` slot is h. Steals h. */
static PyObject *
loop_wrap_threadsafe_handle(LoopObject *self, PyTypeObject *wrap,
                            HandleObject *h)
{
    PyObject *w = wrap->tp_alloc(wrap, 0);
    if (w == NULL
        || PyObject_SetAttr(w, self->st->str_handle, (PyObject *)h) < 0) {
        Py_XDECREF(w);
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(h);
    return w;
}

static PyObject *
loop_schedule_soon(LoopObject *self, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames, const char *method, int threadsafe)
{
    sched_args_t a;
    if (parse_sched_args(self, args, nargsf, kwnames, method, names_soon, 1,
                         &a)
        < 0) {
        return NULL;
    }
    PyObject *callback = a.fixed[0];
    if (loop_check_closed(self) < 0) {
        return NULL;
    }
    /* As asyncio: the callback is only checked in debug mode (otherwise a
     * bad one fails when it runs, through the exception handler). */
    if (self->debug) {
        if (!threadsafe && loop_check_thread(self) < 0) {
            return NULL;
        }
        if (loop_check_callback(self, callback, method) < 0) {
            return NULL;
        }
    }
    HandleObject *h = evpy_handle_new(self, self->st->HandleType, callback,
                                      a.extra, a.nextra, a.context);
    if (h == NULL) {
        return NULL;
    }
    if (self->detail) {
        /* health: detailed mode measures ready lag from here (a plain
         * Handle's timer fields are otherwise unused). */
        h->timer.deadline_ns = evpy_clock_now_ns();
    }
    if (loop_push_ready(self, (HandleObject *)Py_NewRef(h)) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    if (threadsafe) {
        h->threadsafe = 1;
        loop_wakeup(self);
        PyTypeObject *wrap = (PyTypeObject *)self->st->ts_handle_type;
        if (wrap != NULL) {
            return loop_wrap_threadsafe_handle(self, wrap, h);
        }
    }
    return (PyObject *)h;
}

static PyObject *
loop_call_soon(LoopObject *self, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    return loop_schedule_soon(self, args, nargsf, kwnames, "call_soon", 0);
}

static PyObject *
loop_call_soon_threadsafe(LoopObject *self, PyObject *const *args,
                          size_t nargsf, PyObject *kwnames)
{
    return loop_schedule_soon(self, args, nargsf, kwnames,
                              "call_soon_threadsafe", 1);
}

static PyObject *
loop_schedule_at(LoopObject *self, double when, sched_args_t *a)
{
    PyObject *callback = a->fixed[1];
    if (loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->debug
        && (loop_check_thread(self) < 0
            || loop_check_callback(self, callback, "call_at") < 0)) {
        return NULL;
    }
    HandleObject *h = evpy_handle_new(self, self->st->TimerHandleType,
                                      callback, a->extra, a->nextra,
                                      a->context);
    if (h == NULL) {
        return NULL;
    }
    h->is_timer = 1;
    h->when = when;
    h->timer.deadline_ns = evpy_clock_sec_to_ns_ceil(when);
    if (evpy_timerheap_push(&self->timers, &h->timer) < 0) {
        Py_DECREF(h);
        return PyErr_NoMemory();
    }
    Py_INCREF(h);                          /* the heap's reference */
    EVPY_STAT_INC(self, timers_scheduled); /* health */
    return (PyObject *)h;
}

/* Parses a call_later/call_at call; *value gets its float first argument. */
static int
parse_time_args(LoopObject *self, PyObject *const *args, size_t nargsf,
                PyObject *kwnames, const char *method,
                const char *const *names, const char *none_msg, double *value,
                sched_args_t *a)
{
    if (parse_sched_args(self, args, nargsf, kwnames, method, names, 2, a)
        < 0) {
        return -1;
    }
    if (a->fixed[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, none_msg);
        return -1;
    }
    *value = PyFloat_AsDouble(a->fixed[0]);
    if (*value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

static PyObject *
loop_call_later(LoopObject *self, PyObject *const *args, size_t nargsf,
                PyObject *kwnames)
{
    double delay;
    sched_args_t a;
    if (parse_time_args(self, args, nargsf, kwnames, "call_later", names_later,
                        "delay must not be None", &delay, &a)
        < 0) {
        return NULL;
    }
    double now = (double)evpy_clock_now_ns() / 1e9;
    return loop_schedule_at(self, now + delay, &a);
}

static PyObject *
loop_call_at(LoopObject *self, PyObject *const *args, size_t nargsf,
             PyObject *kwnames)
{
    double when;
    sched_args_t a;
    if (parse_time_args(self, args, nargsf, kwnames, "call_at", names_at,
                        "when cannot be None", &when, &a)
        < 0) {
        return NULL;
    }
    return loop_schedule_at(self, when, &a);
}

/* -- small accessors ------------------------------------------------------ */

static PyObject *
loop_time(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble((double)evpy_clock_now_ns() / 1e9);
}

static PyObject *
loop_get_debug(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

static PyObject *
loop_set_debug(LoopObject *self, PyObject *enabled)
{
    int v = PyObject_IsTrue(enabled);
    if (v < 0) {
        return NULL;
    }
    self->debug = (char)v;
    Py_RETURN_NONE;
}

static PyObject *
loop_is_running(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->running);
}

static PyObject *
loop_is_closed(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_stop(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    self->stopping = 1;
    Py_RETURN_NONE;
}

static PyObject *
loop_create_future(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    /* While this loop runs in this thread it is asyncio's running loop,
     * which is what Future() with no loop= picks: no keyword to build and
     * parse. */
    if (self->running && self->thread_id == PyThread_get_thread_ident()) {
        return PyObject_CallNoArgs(self->st->Future);
    }
    PyObject *args[1] = {(PyObject *)self};
    return PyObject_Vectorcall(self->st->Future, args, 0,
                               self->st->kwnames_loop);
}

/* create_task(coro, *, name=None, context=None, **kwargs): asyncio's
 * Task(coro, loop=self, name=..., context=...) made here when there is no
 * task factory, no debug mode (which trims the source traceback) and no
 * other keyword; everything else goes to the Python side's
 * _create_task_slow with the same arguments. */
static PyObject *
loop_create_task(LoopObject *self, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    evpy_state *st = self->st;
    PyObject *name = NULL, *context = NULL;
    int fast = nargs == 1 && self->task_factory == NULL && !self->debug;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; fast && i < nkw; i++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
        PyObject *v = args[nargs + i];
        if (kw == st->str_name || PyUnicode_Compare(kw, st->str_name) == 0) {
            name = v == Py_None ? NULL : v;
        }
        else if (kw == st->str_context
                 || PyUnicode_Compare(kw, st->str_context) == 0) {
            context = v == Py_None ? NULL : v;
        }
        else {
            fast = 0;
        }
    }
    if (!fast || loop_check_closed(self) < 0) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        PyObject *meth = PyObject_GetAttr((PyObject *)self,
                                          st->str_create_task_slow);
        if (meth == NULL) {
            return NULL;
        }
        PyObject *r = PyObject_Vectorcall(meth, args, nargsf, kwnames);
        Py_DECREF(meth);
        return r;
    }
    PyObject *task_type = PyObject_GetAttr(st->tasks_module, st->str_Task);
    if (task_type == NULL) {
        return NULL;
    }
    PyObject *call[4] = {args[0], (PyObject *)self};
    int which = 0;
    Py_ssize_t n = 2;
    if (name != NULL) {
        call[n++] = name;
        which |= 1;
    }
    if (context != NULL) {
        call[n++] = context;
        which |= 2;
    }
    PyObject *task = PyObject_Vectorcall(task_type, call, 1,
                                         st->kwnames_task[which]);
    Py_DECREF(task_type);
    return task;
}

static PyObject *
loop_get_task_factory_attr(LoopObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->task_factory ? self->task_factory : Py_None);
}

static int
loop_set_task_factory_attr(LoopObject *self, PyObject *value,
                           void *Py_UNUSED(closure))
{
    Py_XSETREF(self->task_factory,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

/* -- I/O objects (transports) ---------------------------------------------- */

int
evpy_loop_io_attach(LoopObject *self, IOObject *io)
{
    if (loop_check_closed(self) < 0) {
        return -1;
    }
    evpy_fdslot_t *slot = evpy_fdtable_slot(&self->fds, io->fd);
    if (slot == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (evpy_loop_check_no_transport(self, io->fd) < 0) {
        return -1;
    }
    if (slot->reader != NULL || slot->writer != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "File descriptor %d has a reader or writer: remove "
                     "it before making a transport of it",
                     io->fd);
        return -1;
    }
    slot->reader = slot->writer = (void *)((uintptr_t)io | EVPY_TAG_IO);
    Py_INCREF(io);
    io->loop = (LoopObject *)Py_NewRef((PyObject *)self);
    return 0;
}

int
evpy_loop_io_want(LoopObject *self, IOObject *io, unsigned want)
{
    int rc = evpy_fdtable_want(&self->fds, io->fd, want);
    if (rc < 0) {
        evpy_set_errno(rc);
        return -1;
    }
    return 0;
}

unsigned
evpy_loop_io_wanted(LoopObject *self, IOObject *io)
{
    evpy_fdslot_t *slot = evpy_fdtable_get(&self->fds, io->fd);
    return slot ? slot->want : 0;
}

void
evpy_loop_io_detach(LoopObject *self, IOObject *io)
{
    evpy_fdslot_t *slot = evpy_fdtable_get(&self->fds, io->fd);
    if (slot != NULL && EVPY_UNTAG(slot->reader) == (PyObject *)io) {
        (void)evpy_fdtable_want(&self->fds, io->fd, 0);
        if (self->poller != NULL) {
            (void)evpy_fdtable_apply(&self->fds, self->poller, io->fd);
        }
        slot->reader = slot->writer = NULL;
        Py_DECREF(io); /* the caller holds its own reference */
    }
    Py_CLEAR(io->loop);
}

int
evpy_io_copy_context(IOObject *io, int which)
{
    if (io->ctx_bound) {
        return 0; /* 3.15: the transport's context, kept */
    }
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        return -1;
    }
    Py_XSETREF(io->ctx[which], ctx);
    return 0;
}

int
evpy_loop_call_soon(LoopObject *self, PyObject *callable, PyObject *arg)
{
    return evpy_loop_call_soon_in(self, callable, arg, NULL);
}

int
evpy_loop_call_soon_in(LoopObject *self, PyObject *callable, PyObject *arg,
                       PyObject *context)
{
    return evpy_loop_call_soon_n(self, callable, &arg, arg != NULL, context);
}

int
evpy_loop_call_soon_n(LoopObject *self, PyObject *callable,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *context)
{
    if (loop_check_closed(self) < 0) {
        return -1;
    }
    HandleObject *h = evpy_handle_new(self, self->st->HandleType, callable,
                                      args, nargs, context);
    if (h == NULL) {
        return -1;
    }
    return loop_push_ready(self, h);
}

char *
evpy_loop_readbuf(LoopObject *self)
{
    if (self->readbuf == NULL) {
        self->readbuf = PyMem_Malloc(EVPY_READBUF_SIZE);
        if (self->readbuf == NULL) {
            PyErr_NoMemory();
        }
    }
    return self->readbuf;
}

/* -- handles made and queued by the Python layer (signals) --------------- */

static PyObject *
loop_make_handle(LoopObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "_make_handle() needs a callback");
        return NULL;
    }
    return (PyObject *)evpy_handle_new(self, self->st->HandleType, args[0],
                                       args + 1, nargs - 1, NULL);
}

static PyObject *
loop_call_handle(LoopObject *self, PyObject *handle)
{
    if (!PyObject_TypeCheck(handle, self->st->HandleType)) {
        PyErr_SetString(PyExc_TypeError, "_call_handle() needs a Handle");
        return NULL;
    }
    if (loop_check_closed(self) < 0) {
        return NULL;
    }
    if (loop_push_ready(self, (HandleObject *)Py_NewRef(handle)) < 0) {
        return NULL;
    }
    loop_wakeup(self);
    Py_RETURN_NONE;
}

/* -- the run loop --------------------------------------------------------- */

static int
loop_queue_io(LoopObject *self, int fd, evpy_fdslot_t *slot, unsigned which)
{
    void *p = (which == EVPY_READ) ? slot->reader : slot->writer;
    if (p == NULL || !(slot->want & which)) {
        return 0;
    }
    self->io_queued++;
    if (EVPY_TAG(p) == EVPY_TAG_IO) {
        PyObject *io = EVPY_UNTAG(p);
        Py_INCREF(io);
        if (evpy_ring_push(&self->ready, (void *)((uintptr_t)io | which))
            < 0) {
            Py_DECREF(io);
            PyErr_NoMemory();
            return -1;
        }
        return 0;
    }
    HandleObject *h = (HandleObject *)p;
    if (h->cancelled) {
        evpy_loop_drop_io(self, fd, which);
        return 0;
    }
    return loop_push_ready(self, (HandleObject *)Py_NewRef(h));
}

static int
loop_poll(LoopObject *self, int64_t timeout_ns)
{
    int n;
    evpy_fdtable_flush(&self->fds, self->poller);
    if (timeout_ns == 0) {
        if (self->fds.nactive == 0) {
            return 0; /* nothing to poll: skip the syscall */
        }
        n = evpy_poller_wait(self->poller, self->events, self->events_cap, 0);
    }
    else {
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        /* health: time the wait; it sleeps in a syscall, so two clock
         * reads are noise next to it. */
        int64_t t_sleep = EVPY_STATS_ON ? evpy_clock_now_ns() : 0;
        self->sleeping = 1;
        Py_BEGIN_ALLOW_THREADS
        n = evpy_poller_wait(self->poller, self->events, self->events_cap,
                             timeout_ns);
        Py_END_ALLOW_THREADS
        self->sleeping = 0;
        if (EVPY_STATS_ON) {
            self->stats.wake_ns = evpy_clock_now_ns();
            self->stats.wait_ns += self->stats.wake_ns - t_sleep;
        }
    }
    if (n < 0) {
        if (n == -EINTR) {
            return PyErr_CheckSignals() < 0 ? -1 : 0;
        }
        evpy_set_errno(n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int fd = self->events[i].fd;
        unsigned ev = self->events[i].events;
        if (fd == self->waker.rfd) {
            evpy_waker_drain(&self->waker);
            self->wake_pending = 0;
            continue;
        }
        evpy_fdslot_t *slot = evpy_fdtable_get(&self->fds, fd);
        if (slot == NULL || slot->have == 0) {
            /* A registration we no longer own (epoll keeps a dup'ed,
             * closed fd's interest): drop it. */
            (void)evpy_poller_ctl(self->poller, fd, EVPY_READ | EVPY_WRITE, 0,
                                  0);
            continue;
        }
        if (!evpy_fdtable_event_current(&self->fds, &self->events[i])) {
            /* An earlier file's registration under this fd number (its fd
             * closed while a dup kept it open): not the current owner's
             * readiness. It cannot be removed by number; ignore it. */
            continue;
        }
        if ((ev & EVPY_READ) && loop_queue_io(self, fd, slot, EVPY_READ) < 0) {
            return -1;
        }
        slot = evpy_fdtable_get(&self->fds, fd);
        if ((ev & EVPY_WRITE)
            && loop_queue_io(self, fd, slot, EVPY_WRITE) < 0) {
            return -1;
        }
    }
    if (n == self->events_cap && self->events_cap < EVENTS_MAX) {
        int ncap = self->events_cap * 2;
        evpy_event_t *ne = PyMem_Realloc(self->events,
                                         sizeof(*ne) * (size_t)ncap);
        if (ne != NULL) {
            self->events = ne;
            self->events_cap = ncap;
        }
    }
    return 0;
}

/* Runs one ready-queue entry: a Handle or a tagged I/O event. */
static inline int
loop_run_entry(LoopObject *self, void *entry)
{
    uintptr_t tag = EVPY_TAG(entry);
    if (tag == 0) {
        HandleObject *h = (HandleObject *)entry;
        if (h->cancelled) {
            return 0;
        }
        /* health: the only per-callback work; also the blocking
         * detector's sequence number. */
        EVPY_STAT_INC(self, callbacks);
        return evpy_handle_run(h);
    }
    EVPY_STAT_INC(self, io_events); /* health */
    IOObject *io = (IOObject *)EVPY_UNTAG(entry);
    PyObject *ctx =
        io->ctx[tag == EVPY_WRITE ? EVPY_IO_CTX_WRITE : EVPY_IO_CTX_READ];
    if (ctx == NULL) {
        return io->vt->on_event(io, (unsigned)tag);
    }
    /* Beware: the event may replace io->ctx (resume_reading()); keep the
     * context we enter until we have left it. */
    Py_INCREF(ctx);
    if (PyContext_Enter(ctx) < 0) {
        /* Only if the context is already entered, which the loop never
         * does; report it and still deliver the event. */
        PyErr_WriteUnraisable((PyObject *)io);
        Py_DECREF(ctx);
        return io->vt->on_event(io, (unsigned)tag);
    }
    int rc = io->vt->on_event(io, (unsigned)tag);
    /* rc < 0 carries SystemExit/KeyboardInterrupt out of the loop. */
    PyObject *exc = rc < 0 ? evpy_fetch_exc() : NULL;
    if (PyContext_Exit(ctx) < 0) {
        PyErr_WriteUnraisable((PyObject *)io);
    }
    evpy_restore_exc(exc);
    Py_DECREF(ctx);
    return rc;
}

/* Runs one entry and times it: debug mode (slow-callback warnings), the
 * health statistics' detailed mode, or a lone entry after a blocking
 * wait (the slowest-callback table). */
static int
loop_run_timed(LoopObject *self, void *entry)
{
    PyObject *obj = EVPY_UNTAG(entry);
    if (EVPY_TAG(entry) == 0) {
        if (((HandleObject *)obj)->cancelled) {
            return 0;
        }
        if (self->debug) {
            Py_XSETREF(self->current_handle, Py_NewRef(obj));
        }
    }
    int64_t t0 = evpy_clock_now_ns();
    if (EVPY_STATS_ON && self->detail) {
        /* health: lag from when the entry became due: a timer's deadline,
         * a call_soon's time (stamped in detailed mode), the wake-up that
         * found an I/O event. */
        int64_t due = EVPY_TAG(entry)
                          ? self->stats.wake_ns
                          : ((HandleObject *)obj)->timer.deadline_ns;
        if (due > 0 && due <= t0) {
            evpy_hist_add(&self->stats.ready_lag, t0 - due);
        }
    }
    int rc = loop_run_entry(self, entry);
    int64_t dt_ns = evpy_clock_now_ns() - t0;
    double dt = (double)dt_ns / 1e9;
    Py_CLEAR(self->current_handle);
    if (EVPY_STATS_ON && rc == 0) {
        /* health */
        if (self->detail) {
            evpy_hist_add(&self->stats.cb_time, dt_ns);
        }
        if (dt_ns >= self->stats.slow_min_ns) {
            evpy_stats_note_slow(self, entry, dt_ns);
        }
    }
    if (rc == 0 && self->debug && dt >= self->slow_callback_duration) {
        PyObject *what = obj;
        if (EVPY_TAG(entry) != 0) {
            what = evpy_stats_describe_io(self, entry);
            if (what == NULL) {
                return -1;
            }
        }
        else {
            Py_INCREF(what);
        }
        PyObject *pdt = PyFloat_FromDouble(dt);
        if (pdt == NULL) {
            Py_DECREF(what);
            return -1;
        }
        PyObject *r = PyObject_CallMethodObjArgs(
            (PyObject *)self, self->st->str_on_slow_callback, what, pdt, NULL);
        Py_DECREF(what);
        Py_DECREF(pdt);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return rc;
}

/* Runs the first ntodo entries of the ready queue. */
static int
loop_run_ready(LoopObject *self, size_t ntodo)
{
    /* health: detailed mode times every entry; a lone entry after a
     * blocking wait is timed always (the wait cost a syscall already). */
    int timed = self->detail
                || (EVPY_STATS_ON && ntodo == 1 && self->stats.wake_ns != 0);
    for (size_t i = 0; i < ntodo && self->ready.len; i++) {
        void *entry = evpy_ring_pop(&self->ready);
        int rc = (timed || self->debug) ? loop_run_timed(self, entry)
                                        : loop_run_entry(self, entry);
        Py_DECREF(EVPY_UNTAG(entry));
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static int
loop_run_once(LoopObject *self)
{
    EVPY_STAT_INC(self, iterations); /* health */
    if (EVPY_STATS_ON) {
        self->stats.wake_ns = 0;
    }
    int64_t timeout = -1;
    if (self->ready.len || self->stopping) {
        timeout = 0;
    }
    else {
        evpy_timer_t *t = evpy_timerheap_peek(&self->timers);
        if (t != NULL) {
            int64_t now = evpy_clock_now_ns();
            timeout = t->deadline_ns > now ? t->deadline_ns - now : 0;
        }
    }
    if (loop_poll(self, timeout) < 0) {
        return -1;
    }

    int64_t now = 0;
    if (self->timers.len) {
        /* health: the wake-up time is fresh; don't read the clock twice */
        now = self->stats.wake_ns ? self->stats.wake_ns : evpy_clock_now_ns();
    }
    evpy_timer_t *t;
    while ((t = evpy_timerheap_peek(&self->timers)) != NULL
           && t->deadline_ns <= now) {
        evpy_timerheap_pop(&self->timers);
        if (EVPY_STATS_ON) {
            /* health: lag as dispatched (a deadline before the clock's
             * epoch counts from the epoch) */
            self->stats.timers_fired++;
            evpy_hist_add(&self->stats.timer_lag,
                          now - (t->deadline_ns > 0 ? t->deadline_ns : 0));
        }
        /* The heap's reference moves to the ready queue. */
        if (loop_push_ready(self, EVPY_HANDLE_FROM_TIMER(t)) < 0) {
            return -1;
        }
    }

    /* Run only what is ready now: callbacks scheduled by these run in the
     * next iteration. */
    size_t had_io = self->io_queued;
    self->io_queued = 0;
    if (loop_run_ready(self, self->ready.len) < 0) {
        return -1;
    }
    /* I/O handlers mostly schedule follow-ups (connection_made after an
     * accept, a task step after data_received fed a stream): when this
     * iteration ran readiness events, run what they scheduled right away
     * instead of polling again with a zero timeout first. It is the next
     * iteration minus its poll (the order of callbacks is asyncio's; new
     * readiness is seen one iteration later), and it happens once, so a
     * busy ready queue still polls every other iteration. */
    if (had_io && self->ready.len && !self->stopping) {
        EVPY_STAT_INC(self, iterations); /* health */
        return loop_run_ready(self, self->ready.len);
    }
    return 0;
}

static PyObject *
loop_run(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    if (loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "This event loop is already running");
        return NULL;
    }
    self->running = 1;
    self->thread_id = PyThread_get_thread_ident();
    if (EVPY_STATS_ON) {
        self->stats.run_start_ns = evpy_clock_now_ns(); /* health */
    }
    int rc;
    for (;;) {
        rc = loop_run_once(self);
        if (rc < 0 || self->stopping) {
            break;
        }
    }
    if (EVPY_STATS_ON) {
        self->stats.run_ns += evpy_clock_now_ns() - self->stats.run_start_ns;
        self->stats.run_start_ns = 0;
    }
    self->stopping = 0;
    self->running = 0;
    self->thread_id = 0;
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- lifetime ------------------------------------------------------------- */

/* Drops one reference for each queued, scheduled or registered entry.
 * Beware: a decref may run a finalizer that schedules or registers again
 * (the loop is not closed yet when the GC clears it), so every entry is
 * unhooked before any reference is dropped, and the whole sweep repeats
 * until it finds nothing. */
static void
loop_drop_queues(LoopObject *self)
{
    /* Dropping a handle can run a finalizer that schedules more work, so
     * this repeats until a pass finds nothing. Bounded: from the 8th pass
     * on the loop counts as closed (call_soon & co. refuse), and after
     * the 64th what is left is left (leaked, never run or freed twice). */
    for (int pass = 0; pass < 64; pass++) {
        if (pass == 8) {
            self->closed = 1;
        }
        evpy_ring_t drop;
        evpy_ring_init(&drop, sizeof(void *), 64);
        int nomem = 0;
        evpy_timer_t *t;
        while ((t = evpy_timerheap_pop(&self->timers)) != NULL) {
            HandleObject *h = EVPY_HANDLE_FROM_TIMER(t);
            if (evpy_ring_push(&drop, h) < 0) {
                nomem = 1;
                Py_DECREF(h);
            }
        }
        while (self->ready.len) {
            void *entry = EVPY_UNTAG(evpy_ring_pop(&self->ready));
            if (evpy_ring_push(&drop, entry) < 0) {
                nomem = 1;
                Py_DECREF((PyObject *)entry);
            }
        }
        for (int fd = 0; fd < self->fds.cap; fd++) {
            evpy_fdslot_t *s = &self->fds.slots[fd];
            void *r = s->reader, *w = s->writer;
            s->reader = s->writer = NULL;
            if (EVPY_TAG(r) == EVPY_TAG_IO) {
                /* One reference for both pointers; the object must no
                 * longer think it is registered. */
                IOObject *io = (IOObject *)EVPY_UNTAG(r);
                PyObject *loop = (PyObject *)io->loop;
                io->loop = NULL;
                r = io;
                w = loop;
            }
            for (int i = 0; i < 2; i++) {
                void *p = i ? w : r;
                if (p != NULL && evpy_ring_push(&drop, p) < 0) {
                    nomem = 1;
                    Py_DECREF((PyObject *)p);
                }
            }
        }
        if (drop.len == 0 && !nomem) {
            evpy_ring_free(&drop);
            return;
        }
        while (drop.len) {
            Py_DECREF((PyObject *)evpy_ring_pop(&drop));
        }
        evpy_ring_free(&drop);
    }
}

static void
loop_release(LoopObject *self)
{
    /* Frees the reactor; the queues must already be empty. */
    if (self->poller != NULL) {
        evpy_poller_close(self->poller);
        self->poller = NULL;
    }
    evpy_waker_close(&self->waker);
    evpy_fdtable_free(&self->fds);
    evpy_timerheap_free(&self->timers);
    evpy_ring_free(&self->ready);
    PyMem_Free(self->events);
    self->events = NULL;
    PyMem_Free(self->readbuf);
    self->readbuf = NULL;
    self->events_cap = 0;
}

static PyObject *
loop_close_core(LoopObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot close a running event loop");
        return NULL;
    }
    if (self->closed) {
        Py_RETURN_NONE;
    }
    self->closed = 1;
    /* Beware: dropping handles may run finalizers that call back into the
     * loop; they find it closed and the queues in a consistent state. */
    loop_drop_queues(self);
    loop_release(self);
    Py_RETURN_NONE;
}

static PyObject *
loop_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    LoopObject *self = (LoopObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* Before any failure path: tp_alloc zeroed the struct, and a zero
     * waker fd would make dealloc close stdin. */
    self->waker.rfd = self->waker.wfd = -1;
    /* Borrowed: the type (and so every instance) keeps the module. */
    self->st = evpy_state_of_type(type);
    if (self->st == NULL) {
        self->closed = 1;
        Py_DECREF(self);
        return NULL;
    }
    self->slow_callback_duration = 0.1;
    evpy_stats_init(&self->stats); /* health */
    evpy_fdtable_init(&self->fds);
    evpy_timerheap_init(&self->timers);
    evpy_ring_init(&self->ready, sizeof(void *), 256);
    /* The backend named by $EVPY_POLLER (read here, not in the core). */
    int rc = evpy_poller_open(&self->poller, getenv("EVPY_POLLER"));
    if (rc == -EINVAL) {
        PyErr_Format(PyExc_ValueError,
                     "unknown or unavailable poller backend in EVPY_POLLER");
        goto error;
    }
    if (rc < 0) {
        evpy_set_errno(rc);
        goto error;
    }
    rc = evpy_waker_open(&self->waker);
    if (rc == 0) {
        rc = evpy_poller_ctl(self->poller, self->waker.rfd, 0, EVPY_READ, 0);
    }
    if (rc < 0) {
        evpy_set_errno(rc);
        goto error;
    }
    self->events = PyMem_Malloc(sizeof(evpy_event_t) * EVENTS_INITIAL);
    if (self->events == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    self->events_cap = EVENTS_INITIAL;
    self->ts_lock = PyThread_allocate_lock();
    if (self->ts_lock == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    return (PyObject *)self;

error:
    self->closed = 1;
    Py_DECREF(self);
    return NULL;
}

static int
loop_traverse(LoopObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->current_handle);
    Py_VISIT(self->task_factory);
    if (evpy_stats_traverse(&self->stats, visit, arg) < 0) { /* health */
        return -1;
    }
    for (size_t i = 0; i < self->ready.len; i++) {
        Py_VISIT(EVPY_UNTAG(evpy_ring_at(&self->ready, i)));
    }
    for (size_t i = 0; i < self->timers.len; i++) {
        Py_VISIT(EVPY_HANDLE_FROM_TIMER(self->timers.items[i]));
    }
    for (int fd = 0; fd < self->fds.cap; fd++) {
        void *r = self->fds.slots[fd].reader;
        Py_VISIT(EVPY_UNTAG(r));
        if (EVPY_TAG(r) != EVPY_TAG_IO) { /* an I/O object fills both */
            Py_VISIT((PyObject *)self->fds.slots[fd].writer);
        }
    }
    return 0;
}

static int
loop_tp_clear(LoopObject *self)
{
    Py_CLEAR(self->current_handle);
    Py_CLEAR(self->task_factory);
    evpy_stats_clear(&self->stats); /* health */
    loop_drop_queues(self);
    return 0;
}

static void
loop_dealloc(LoopObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)loop_tp_clear(self);
    loop_release(self);
    if (self->ts_lock != NULL) {
        PyThread_free_lock(self->ts_lock);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* -- attributes ----------------------------------------------------------- */

static PyObject *
loop_get_thread_id(LoopObject *self, void *Py_UNUSED(closure))
{
    if (self->thread_id == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLong(self->thread_id);
}

static PyObject *
loop_get_stopping(LoopObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->stopping);
}

static PyObject *
loop_get_current_handle(LoopObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->current_handle ? self->current_handle : Py_None);
}

static PyObject *
loop_get_closed(LoopObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_get_backend(LoopObject *self, void *Py_UNUSED(closure))
{
    if (self->poller == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(evpy_poller_name(self->poller));
}

static PyObject *
loop_get_debug_attr(LoopObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->debug);
}

static PyMethodDef loop_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None) -> Handle"},
    {"call_soon_threadsafe",
     (PyCFunction)(void (*)(void))loop_call_soon_threadsafe,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe(callback, *args, context=None) -> Handle"},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later,
     METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None) -> TimerHandle"},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at,
     METH_FASTCALL | METH_KEYWORDS,
     "call_at(when, callback, *args, context=None) -> TimerHandle"},
    {"time", (PyCFunction)loop_time, METH_NOARGS,
     "Return the loop's time: the clock time.monotonic() reads."},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS, NULL},
    {"set_debug", (PyCFunction)loop_set_debug, METH_O, NULL},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS, NULL},
    {"is_closed", (PyCFunction)loop_is_closed, METH_NOARGS, NULL},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS,
     "Stop after the callbacks already ready have run."},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     "Return a new asyncio.Future attached to this loop."},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task,
     METH_FASTCALL | METH_KEYWORDS,
     "create_task(coro, *, name=None, context=None) -> Task"},
    {"add_reader", (PyCFunction)(void (*)(void))evpy_loop_add_reader,
     METH_FASTCALL, "add_reader(fd, callback, *args)"},
    {"add_writer", (PyCFunction)(void (*)(void))evpy_loop_add_writer,
     METH_FASTCALL, "add_writer(fd, callback, *args)"},
    {"_add_reader", (PyCFunction)(void (*)(void))evpy_loop_add_reader_handle,
     METH_FASTCALL, "add_reader() returning the new Handle."},
    {"_add_writer", (PyCFunction)(void (*)(void))evpy_loop_add_writer_handle,
     METH_FASTCALL, "add_writer() returning the new Handle."},
    {"remove_reader", (PyCFunction)evpy_loop_remove_reader, METH_O,
     "remove_reader(fd) -> bool"},
    {"remove_writer", (PyCFunction)evpy_loop_remove_writer, METH_O,
     "remove_writer(fd) -> bool"},
    {"_make_handle", (PyCFunction)(void (*)(void))loop_make_handle,
     METH_FASTCALL, "An unscheduled Handle for callback(*args)."},
    {"_call_handle", (PyCFunction)loop_call_handle, METH_O,
     "Queue an existing Handle to run soon (thread-safe wake-up)."},
    {"_run", (PyCFunction)loop_run, METH_NOARGS,
     "Run iterations until stop(); run_forever's core."},
    {"_close", (PyCFunction)loop_close_core, METH_NOARGS,
     "Drop pending callbacks and free the reactor."},
    /* health (csrc/stats.c) */
    {"_stats", (PyCFunction)evpy_stats_snapshot, METH_NOARGS,
     "Raw health counters as a dict (Loop.stats() wraps them)."},
    {"_health_probe", (PyCFunction)evpy_stats_probe, METH_NOARGS,
     "(running, sleeping, entries run, iterations) for the watchdog."},
    {"_set_stats_detail", (PyCFunction)evpy_stats_set_detail, METH_VARARGS,
     "_set_stats_detail(enabled, slow_floor_seconds=-1)"},
    {"_stats_reset_slowest", (PyCFunction)evpy_stats_reset_slowest,
     METH_NOARGS, "Empty the slowest-callback table."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef loop_getset[] = {
    {"_thread_id", (getter)loop_get_thread_id, NULL, NULL, NULL},
    {"_stopping", (getter)loop_get_stopping, NULL, NULL, NULL},
    {"_current_handle", (getter)loop_get_current_handle, NULL, NULL, NULL},
    {"_debug", (getter)loop_get_debug_attr, NULL, NULL, NULL},
    {"_task_factory", (getter)loop_get_task_factory_attr,
     (setter)loop_set_task_factory_attr, NULL, NULL},
    {"_closed", (getter)loop_get_closed, NULL,
     "asyncio's private closed flag, read-only: is_closed().", NULL},
    {"_backend", (getter)loop_get_backend, NULL,
     "Name of the poller backend (epoll, kqueue or poll).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef loop_members[] = {
    {"slow_callback_duration", Py_T_DOUBLE,
     offsetof(LoopObject, slow_callback_duration), 0,
     "Callbacks slower than this (seconds) are logged in debug mode."},
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(LoopObject, weakreflist),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot loop_slots[] = {
    {Py_tp_doc, "The C core of evpy.Loop."},
    {Py_tp_new, loop_tp_new},
    {Py_tp_methods, loop_methods},
    {Py_tp_getset, loop_getset},
    {Py_tp_members, loop_members},
    {Py_tp_traverse, loop_traverse},
    {Py_tp_clear, loop_tp_clear},
    {Py_tp_dealloc, loop_dealloc},
    {0, NULL},
};

PyType_Spec evpy_loop_spec = {
    .name = "evpy._core.Loop",
    .basicsize = sizeof(LoopObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = loop_slots,
};
