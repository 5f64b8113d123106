/* Loop health: the cold half of the counters loop.c keeps (csrc/stats.h):
 * the slowest-callback table, the snapshot Loop.stats() is built from, the
 * probe the blocking detector samples, and the detailed-mode switch.
 */
#include "evpy.h"

const int64_t evpy_hist_bounds_ns[EVPY_HIST_NBOUNDS] = {
    INT64_C(10000),       INT64_C(25000),      INT64_C(50000),
    INT64_C(100000),      INT64_C(250000),     INT64_C(500000),
    INT64_C(1000000),     INT64_C(2500000),    INT64_C(5000000),
    INT64_C(10000000),    INT64_C(25000000),   INT64_C(50000000),
    INT64_C(100000000),   INT64_C(250000000),  INT64_C(500000000),
    INT64_C(1000000000),  INT64_C(2500000000), INT64_C(5000000000),
    INT64_C(10000000000),
};

void
evpy_stats_init(evpy_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->slow_floor_ns = EVPY_SLOW_FLOOR_NS;
    s->slow_min_ns = EVPY_SLOW_FLOOR_NS;
}

int
evpy_stats_traverse(evpy_stats_t *s, visitproc visit, void *arg)
{
    for (int i = 0; i < s->nslow; i++) {
        Py_VISIT(s->slow[i].what);
    }
    return 0;
}

void
evpy_stats_clear(evpy_stats_t *s)
{
    int n = s->nslow;
    s->nslow = 0;
    s->slow_min_ns = s->slow_floor_ns;
    for (int i = 0; i < n; i++) {
        Py_CLEAR(s->slow[i].what);
    }
}

/* Index of the table's fastest entry (the one a slower callback evicts). */
static int
slow_argmin(const evpy_stats_t *s)
{
    int m = 0;
    for (int i = 1; i < s->nslow; i++) {
        if (s->slow[i].ns < s->slow[m].ns) {
            m = i;
        }
    }
    return m;
}

/* evpy._format.<name>(obj, tag[, io kind]) as a str: the cold naming of
 * ready-queue entries. */
static PyObject *
call_format(LoopObject *loop, const char *name, void *entry)
{
    PyObject *pname = PyUnicode_InternFromString(name);
    if (pname == NULL) {
        return NULL;
    }
    PyObject *f = evpy_format_func(loop->st, pname);
    Py_DECREF(pname);
    if (f == NULL) {
        return NULL;
    }
    PyObject *obj = EVPY_UNTAG(entry);
    unsigned long tag = (unsigned long)EVPY_TAG(entry);
    PyObject *r;
    if (tag != 0) {
        r = PyObject_CallFunction(f, "Oks", obj, tag,
                                  ((IOObject *)obj)->vt->name);
    }
    else {
        r = PyObject_CallFunction(f, "Oks", obj, tag, "");
    }
    Py_DECREF(f);
    if (r != NULL && !PyUnicode_Check(r)) {
        Py_SETREF(r, PyObject_Str(r));
    }
    return r;
}

PyObject *
evpy_stats_describe_io(LoopObject *loop, void *entry)
{
    return call_format(loop, "io_event_repr", entry);
}

void
evpy_stats_note_slow(LoopObject *loop, void *entry, int64_t ns)
{
    evpy_stats_t *s = &loop->stats;
    /* Beware: describing runs Python code, which may clear the table:
     * read its state only after. */
    PyObject *what = call_format(loop, "describe_entry", entry);
    if (what == NULL) {
        PyErr_WriteUnraisable((PyObject *)loop);
        return;
    }
    int i;
    if (s->nslow < EVPY_SLOWEST_MAX) {
        i = s->nslow++;
        s->slow[i].what = what;
    }
    else {
        i = slow_argmin(s);
        if (ns <= s->slow[i].ns) {
            Py_DECREF(what);
            return;
        }
        Py_SETREF(s->slow[i].what, what);
    }
    s->slow[i].ns = ns;
    if (s->nslow == EVPY_SLOWEST_MAX) {
        int64_t m = s->slow[slow_argmin(s)].ns;
        s->slow_min_ns = m + 1 > s->slow_floor_ns ? m + 1 : s->slow_floor_ns;
    }
}

/* -- Python-visible ------------------------------------------------------ */

static int
dict_set_u64(PyObject *d, const char *key, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong((unsigned long long)v);
    if (o == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static int
dict_set_i64(PyObject *d, const char *key, int64_t v)
{
    PyObject *o = PyLong_FromLongLong((long long)v);
    if (o == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

/* (counts per bucket tuple, count, sum_ns) */
static int
dict_set_hist(PyObject *d, const char *key, const evpy_hist_t *h)
{
    PyObject *counts = PyTuple_New(EVPY_HIST_NBOUNDS + 1);
    if (counts == NULL) {
        return -1;
    }
    for (int i = 0; i <= EVPY_HIST_NBOUNDS; i++) {
        PyObject *c = PyLong_FromUnsignedLongLong(
            (unsigned long long)h->counts[i]);
        if (c == NULL) {
            Py_DECREF(counts);
            return -1;
        }
        PyTuple_SET_ITEM(counts, i, c);
    }
    PyObject *t = Py_BuildValue("(NKL)", counts, (unsigned long long)h->count,
                                (long long)h->sum_ns);
    if (t == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, t);
    Py_DECREF(t);
    return rc;
}

PyObject *
evpy_stats_snapshot(LoopObject *loop, PyObject *Py_UNUSED(unused))
{
    const evpy_stats_t *s = &loop->stats;
    int64_t run_ns = s->run_ns;
    if (s->run_start_ns != 0) {
        run_ns += evpy_clock_now_ns() - s->run_start_ns;
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (dict_set_i64(d, "enabled", EVPY_STATS_ON) < 0
        || dict_set_i64(d, "detail", loop->detail) < 0
        || dict_set_u64(d, "iterations", s->iterations) < 0
        || dict_set_u64(d, "callbacks", s->callbacks) < 0
        || dict_set_u64(d, "io_events", s->io_events) < 0
        || dict_set_u64(d, "timers_scheduled", s->timers_scheduled) < 0
        || dict_set_u64(d, "timers_fired", s->timers_fired) < 0
        || dict_set_u64(d, "timers_pending", (uint64_t)loop->timers.len) < 0
        || dict_set_u64(d, "ready", (uint64_t)loop->ready.len) < 0
        || dict_set_i64(d, "wait_ns", s->wait_ns) < 0
        || dict_set_i64(d, "run_ns", run_ns) < 0
        || dict_set_i64(d, "slow_floor_ns", s->slow_floor_ns) < 0
        || dict_set_hist(d, "timer_lag", &s->timer_lag) < 0
        || dict_set_hist(d, "ready_lag", &s->ready_lag) < 0
        || dict_set_hist(d, "callback_time", &s->cb_time) < 0) {
        goto error;
    }
    PyObject *bounds = PyTuple_New(EVPY_HIST_NBOUNDS);
    if (bounds == NULL) {
        goto error;
    }
    for (int i = 0; i < EVPY_HIST_NBOUNDS; i++) {
        PyObject *b = PyLong_FromLongLong((long long)evpy_hist_bounds_ns[i]);
        if (b == NULL) {
            Py_DECREF(bounds);
            goto error;
        }
        PyTuple_SET_ITEM(bounds, i, b);
    }
    int rc = PyDict_SetItemString(d, "bounds_ns", bounds);
    Py_DECREF(bounds);
    if (rc < 0) {
        goto error;
    }
    PyObject *slow = PyList_New(s->nslow);
    if (slow == NULL) {
        goto error;
    }
    for (int i = 0; i < s->nslow; i++) {
        PyObject *t = Py_BuildValue("(LO)", (long long)s->slow[i].ns,
                                    s->slow[i].what);
        if (t == NULL) {
            Py_DECREF(slow);
            goto error;
        }
        PyList_SET_ITEM(slow, i, t);
    }
    rc = PyDict_SetItemString(d, "slowest", slow);
    Py_DECREF(slow);
    if (rc < 0) {
        goto error;
    }
    return d;

error:
    Py_DECREF(d);
    return NULL;
}

PyObject *
evpy_stats_probe(LoopObject *loop, PyObject *Py_UNUSED(unused))
{
    const evpy_stats_t *s = &loop->stats;
    return Py_BuildValue("(iiKK)", (int)loop->running, (int)loop->sleeping,
                         (unsigned long long)(s->callbacks + s->io_events),
                         (unsigned long long)s->iterations);
}

PyObject *
evpy_stats_set_detail(LoopObject *loop, PyObject *args)
{
    int enabled;
    double floor_s = -1.0;
    if (!PyArg_ParseTuple(args, "p|d:_set_stats_detail", &enabled, &floor_s)) {
        return NULL;
    }
    if (!EVPY_STATS_ON && enabled) {
        PyErr_SetString(PyExc_RuntimeError,
                        "evpy was built without loop statistics "
                        "(EVPY_STATS=0)");
        return NULL;
    }
    loop->detail = (char)enabled;
    if (floor_s >= 0.0) {
        loop->stats.slow_floor_ns = evpy_clock_sec_to_ns_ceil(floor_s);
        int64_t m = loop->stats.slow_floor_ns;
        if (loop->stats.nslow == EVPY_SLOWEST_MAX) {
            int64_t tmin = loop->stats.slow[slow_argmin(&loop->stats)].ns + 1;
            m = tmin > m ? tmin : m;
        }
        loop->stats.slow_min_ns = m;
    }
    Py_RETURN_NONE;
}

PyObject *
evpy_stats_reset_slowest(LoopObject *loop, PyObject *Py_UNUSED(unused))
{
    evpy_stats_clear(&loop->stats);
    Py_RETURN_NONE;
}
