/* Handle and TimerHandle: the objects call_soon / call_later return and the
 * ready queue runs.
 *
 * One allocation per handle: the callback's arguments live inline after the
 * struct (a var-sized object), so running a handle is one vectorcall on
 * that array. A TimerHandle has the same layout; its embedded evpy_timer_t
 * is the timer heap's entry, so cancel() unschedules it in O(log n).
 */
#include "evpy.h"

#include <float.h>
#include <pythread.h>

HandleObject *
evpy_handle_new(LoopObject *loop, PyTypeObject *type, PyObject *callback,
                PyObject *const *args, Py_ssize_t nargs, PyObject *context)
{
    HandleObject *h = PyObject_GC_NewVar(HandleObject, type, nargs);
    if (h == NULL) {
        return NULL;
    }
    h->callback = Py_NewRef(callback);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        h->args[i] = Py_NewRef(args[i]);
    }
    h->loop = (LoopObject *)Py_NewRef((PyObject *)loop);
    h->source_traceback = NULL;
    h->repr = NULL;
    h->weakreflist = NULL;
    h->cancelled = 0;
    h->running = 0;
    h->is_timer = 0;
    h->threadsafe = 0;
    h->timer.index = EVPY_TIMER_UNSCHEDULED;
    h->timer.deadline_ns = 0;
    h->timer.seq = 0;
    h->when = 0.0;
    if (context == NULL || context == Py_None) {
        h->context = PyContext_CopyCurrent();
        if (h->context == NULL) {
            goto error;
        }
    }
    else {
        h->context = Py_NewRef(context);
    }
    if (loop->debug) {
        PyObject *f = evpy_format_func(loop->st, loop->st->str_extract_stack);
        if (f == NULL) {
            goto error;
        }
        h->source_traceback = PyObject_CallNoArgs(f);
        Py_DECREF(f);
        if (h->source_traceback == NULL) {
            goto error;
        }
    }
    PyObject_GC_Track(h);
    return h;

error:
    PyObject_GC_Track(h);
    Py_DECREF(h);
    return NULL;
}

void
evpy_handle_clear_callback(HandleObject *h)
{
    Py_CLEAR(h->callback);
    for (Py_ssize_t i = 0; i < Py_SIZE(h); i++) {
        Py_CLEAR(h->args[i]);
    }
}

static int
handle_report_error(HandleObject *h)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
        || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    LoopObject *loop = h->loop;
    if (loop == NULL) {
        /* Cleared by the GC while running: nobody left to report to. */
        PyErr_WriteUnraisable((PyObject *)h);
        return 0;
    }
    Py_INCREF(loop);
    PyObject *exc = evpy_fetch_exc();
    PyObject *res = PyObject_CallMethodObjArgs((PyObject *)loop,
                                               loop->st->str_on_callback_error,
                                               (PyObject *)h, exc, NULL);
    Py_DECREF(exc);
    if (res == NULL) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)loop);
        Py_DECREF(loop);
        return 0;
    }
    Py_DECREF(loop);
    Py_DECREF(res);
    return 0;
}

/* Cold path: a handle whose context is not a contextvars.Context. */
static PyObject *
handle_run_in_object(PyObject *context, PyObject *callback,
                     PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *run = PyObject_GetAttrString(context, "run");
    if (run == NULL) {
        return NULL;
    }
    PyObject *call_args = PyTuple_New(nargs + 1);
    if (call_args == NULL) {
        Py_DECREF(run);
        return NULL;
    }
    PyTuple_SET_ITEM(call_args, 0, Py_NewRef(callback));
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(call_args, i + 1, Py_NewRef(args[i]));
    }
    PyObject *res = PyObject_Call(run, call_args, NULL);
    Py_DECREF(call_args);
    Py_DECREF(run);
    return res;
}

int
evpy_handle_run(HandleObject *h)
{
    /* Beware: the callback may cancel this handle (clearing its callback
     * and args) or drop the last other reference to anything it holds, so
     * keep our own references until the call returns. */
    if (h->callback == NULL || h->context == NULL) {
        return 0; /* cancelled, or cleared by the GC */
    }
    PyObject *callback = Py_NewRef(h->callback);
    PyObject *context = Py_NewRef(h->context);
    PyObject *res = NULL;
    /* Ours until the end: the callback may drop every other reference. */
    LoopObject *loop = (LoopObject *)Py_XNewRef((PyObject *)h->loop);
    /* A thread-safe handle runs holding the loop's ts_lock, so another
     * thread's cancel()/cancelled() can wait for it. Its holder never
     * waits for the GIL with it held (only here, and waiters release the
     * GIL before taking it), so taking it with the GIL held is safe. One
     * at a time: a thread-safe callback that runs another one's _run()
     * does not take it twice. */
    int locked = 0;
    if (h->threadsafe && loop != NULL && loop->ts_lock != NULL
        && !loop->ts_held) {
        PyThread_acquire_lock(loop->ts_lock, WAIT_LOCK);
        loop->ts_held = 1;
        locked = 1;
    }
    /* A counter: the callback may run this handle's _run() again. */
    h->running++;
    if (!PyContext_CheckExact(context)) {
        /* asyncio runs context.run(callback, *args): any object with a
         * run() method works, anything else fails with its
         * AttributeError. */
        res = handle_run_in_object(context, callback, h->args, Py_SIZE(h));
    }
    else if (PyContext_Enter(context) == 0) {
        res = PyObject_Vectorcall(callback, h->args, Py_SIZE(h), NULL);
        if (PyContext_Exit(context) < 0) {
            Py_CLEAR(res);
        }
    }
    h->running--;
    if (locked) {
        loop->ts_held = 0;
        PyThread_release_lock(loop->ts_lock);
    }
    Py_XDECREF(loop);
    Py_DECREF(context);
    Py_DECREF(callback);
    int rc = 0;
    if (res == NULL) {
        rc = handle_report_error(h);
    }
    else {
        Py_DECREF(res);
    }
    if (h->cancelled && !h->running) {
        evpy_handle_clear_callback(h);
    }
    return rc;
}

/* -- Python-visible API --------------------------------------------------- */

/* A thread-safe handle whose callback is running in the loop thread is
 * neither cancellable nor "not cancelled" from another thread until the
 * callback returns: wait for it, without the GIL. */
static void
handle_wait_not_running(HandleObject *self)
{
    LoopObject *loop = self->loop;
    if (!self->threadsafe || !self->running || loop == NULL
        || loop->ts_lock == NULL || !loop->ts_held
        || loop->thread_id == PyThread_get_thread_ident()) {
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(loop->ts_lock, WAIT_LOCK);
    PyThread_release_lock(loop->ts_lock);
    Py_END_ALLOW_THREADS
}

static PyObject *
handle_cancel(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    handle_wait_not_running(self);
    if (self->cancelled) {
        Py_RETURN_NONE;
    }
    LoopObject *loop = self->loop; /* NULL once cleared by the GC */
    self->cancelled = 1;
    if (self->is_timer && loop != NULL
        && evpy_timerheap_remove(&loop->timers, &self->timer)) {
        Py_DECREF(self); /* the heap's reference; the caller holds one */
    }
    if (loop != NULL && loop->debug && self->repr == NULL) {
        /* asyncio keeps the repr of a cancelled handle (taken once it is
         * marked cancelled) for debugging. */
        self->repr = PyObject_Repr((PyObject *)self);
        if (self->repr == NULL) {
            return NULL;
        }
    }
    if (!self->running) {
        evpy_handle_clear_callback(self);
    }
    Py_RETURN_NONE;
}

static PyObject *
handle_cancelled(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    handle_wait_not_running(self);
    return PyBool_FromLong(self->cancelled);
}

static PyObject *
handle_get_context(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->context ? self->context : Py_None);
}

static PyObject *
handle_run_method(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->callback == NULL) {
        Py_RETURN_NONE;
    }
    if (evpy_handle_run(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
timerhandle_when(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(self->when);
}

static PyObject *
handle_get_callback(HandleObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->callback ? self->callback : Py_None);
}

static PyObject *
handle_get_args(HandleObject *self, void *Py_UNUSED(closure))
{
    if (self->callback == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *t = PyTuple_New(Py_SIZE(self));
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        PyTuple_SET_ITEM(t, i, Py_NewRef(self->args[i]));
    }
    return t;
}

static PyObject *
handle_get_cancelled(HandleObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->cancelled);
}

static PyObject *
handle_get_loop(HandleObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->loop ? (PyObject *)self->loop : Py_None);
}

static PyObject *
handle_get_context_attr(HandleObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->context ? self->context : Py_None);
}

static PyObject *
handle_get_source_traceback(HandleObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->source_traceback ? self->source_traceback
                                            : Py_None);
}

static PyObject *
handle_get_repr(HandleObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->repr ? self->repr : Py_None);
}

static PyObject *
timerhandle_get_when(HandleObject *self, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(self->when);
}

static PyObject *
timerhandle_get_scheduled(HandleObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(evpy_timer_scheduled(&self->timer));
}

static PyObject *
handle_repr(HandleObject *self)
{
    if (self->repr != NULL) {
        return Py_NewRef(self->repr);
    }
    evpy_state *st = evpy_state_of_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    PyObject *f = evpy_format_func(st, st->str_handle_repr);
    if (f == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(f, (PyObject *)self);
    Py_DECREF(f);
    return r;
}

static PyObject *
timerhandle_richcompare(PyObject *a, PyObject *b, int op)
{
    if (Py_TYPE(b) != Py_TYPE(a)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    HandleObject *x = (HandleObject *)a, *y = (HandleObject *)b;
    if (op == Py_EQ || op == Py_NE) {
        int eq = x == y;
        if (!eq && x->when == y->when && x->cancelled == y->cancelled
            && Py_SIZE(x) == Py_SIZE(y)) {
            /* Beware: __eq__ may cancel either handle, which clears its
             * callback and args: compare our own references, and stop
             * at the args once a callback is gone. */
            PyObject *cx = Py_NewRef(x->callback ? x->callback : Py_None);
            PyObject *cy = Py_NewRef(y->callback ? y->callback : Py_None);
            eq = PyObject_RichCompareBool(cx, cy, Py_EQ);
            Py_DECREF(cx);
            Py_DECREF(cy);
            for (Py_ssize_t i = 0;
                 eq == 1 && x->callback && y->callback && i < Py_SIZE(x);
                 i++) {
                PyObject *ax = Py_NewRef(x->args[i]);
                PyObject *ay = Py_NewRef(y->args[i]);
                eq = PyObject_RichCompareBool(ax, ay, Py_EQ);
                Py_DECREF(ax);
                Py_DECREF(ay);
            }
            if (eq < 0) {
                return NULL;
            }
        }
        return PyBool_FromLong(op == Py_EQ ? eq : !eq);
    }
    Py_RETURN_RICHCOMPARE(x->when, y->when, op);
}

static Py_hash_t
timerhandle_hash(HandleObject *self)
{
    /* asyncio hashes a TimerHandle as its float `when`. */
    PyObject *w = PyFloat_FromDouble(self->when);
    if (w == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(w);
    Py_DECREF(w);
    return h;
}

static int
handle_traverse(HandleObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->callback);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_VISIT(self->args[i]);
    }
    Py_VISIT(self->context);
    Py_VISIT(self->loop);
    Py_VISIT(self->source_traceback);
    Py_VISIT(self->repr);
    return 0;
}

static int
handle_clear(HandleObject *self)
{
    evpy_handle_clear_callback(self);
    Py_CLEAR(self->context);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->source_traceback);
    Py_CLEAR(self->repr);
    return 0;
}

static void
handle_dealloc(HandleObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)handle_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef handle_methods[] = {
    {"cancel", (PyCFunction)handle_cancel, METH_NOARGS,
     "Cancel the call; does nothing if it already ran or was cancelled."},
    {"cancelled", (PyCFunction)handle_cancelled, METH_NOARGS,
     "Return True if the handle was cancelled."},
    {"get_context", (PyCFunction)handle_get_context, METH_NOARGS,
     "Return the contextvars.Context the callback runs in."},
    {"_run", (PyCFunction)handle_run_method, METH_NOARGS,
     "Run the callback now (asyncio compatibility)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"_callback", (getter)handle_get_callback, NULL, NULL, NULL},
    {"_args", (getter)handle_get_args, NULL, NULL, NULL},
    {"_cancelled", (getter)handle_get_cancelled, NULL, NULL, NULL},
    {"_loop", (getter)handle_get_loop, NULL, NULL, NULL},
    {"_context", (getter)handle_get_context_attr, NULL, NULL, NULL},
    {"_source_traceback", (getter)handle_get_source_traceback, NULL, NULL,
     NULL},
    {"_repr", (getter)handle_get_repr, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef handle_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(HandleObject, weakreflist),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_doc, "A callback scheduled with call_soon() or add_reader()."},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_tp_members, handle_members},
    {Py_tp_repr, handle_repr},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_dealloc, handle_dealloc},
    {0, NULL},
};

PyType_Spec evpy_handle_spec = {
    .name = "evpy._core.Handle",
    .basicsize = offsetof(HandleObject, args),
    .itemsize = sizeof(PyObject *),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
             | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = handle_slots,
};

static PyMethodDef timerhandle_methods[] = {
    {"when", (PyCFunction)timerhandle_when, METH_NOARGS,
     "Return the scheduled time as a float in loop.time() seconds."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef timerhandle_getset[] = {
    {"_when", (getter)timerhandle_get_when, NULL, NULL, NULL},
    {"_scheduled", (getter)timerhandle_get_scheduled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot timerhandle_slots[] = {
    {Py_tp_doc, "A callback scheduled with call_later() or call_at()."},
    {Py_tp_methods, timerhandle_methods},
    {Py_tp_getset, timerhandle_getset},
    {Py_tp_richcompare, timerhandle_richcompare},
    {Py_tp_hash, timerhandle_hash},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_dealloc, handle_dealloc},
    {0, NULL},
};

PyType_Spec evpy_timerhandle_spec = {
    .name = "evpy._core.TimerHandle",
    .basicsize = offsetof(HandleObject, args),
    .itemsize = sizeof(PyObject *),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = timerhandle_slots,
};
