/* Loop health (issue 7): the counters, lag histograms and slowest-callback
 * table a Loop keeps, and the hooks loop.c calls. Python side:
 * evpy/health.py (Loop.stats(), Prometheus text, the blocking detector).
 *
 * What runs where (each hook in loop.c is marked "health:"):
 *   per callback / I/O event  one counter increment (also the blocking
 *                             detector's sequence number), no clock read
 *   per iteration             one counter increment
 *   per blocking wait         two clock reads around the wait (the wait is a
 *                             syscall that sleeps: microseconds at least);
 *                             a batch of one entry after such a wait is timed
 *                             (one more read) for the slowest-callback table
 *   per timer fired           one histogram update with the `now` the loop
 *                             already read to find due timers
 *   detailed mode (opt-in)    two clock reads per callback: durations, the
 *                             lag of ready callbacks and I/O events
 * Build with -DEVPY_STATS=0 to compile every hook out (the "evpy-off" row
 * of the benchmarks measures exactly that).
 *
 * Everything here is touched with the GIL held: the loop updates it outside
 * its GIL-released wait, the watchdog reads it through _health_probe().
 */
#ifndef EVPY_STATS_H
#define EVPY_STATS_H

#include <stdint.h>

#ifndef EVPY_STATS
#  define EVPY_STATS 1
#endif

/* Histogram upper bounds (ns), Prometheus-style cumulative on export:
 * 10us .. 10s in 1-2.5-5 steps, plus +Inf. */
#define EVPY_HIST_NBOUNDS 19
#define EVPY_SLOWEST_MAX 10
/* Callbacks shorter than this never enter the slowest table by default. */
#define EVPY_SLOW_FLOOR_NS INT64_C(1000000)

extern const int64_t evpy_hist_bounds_ns[EVPY_HIST_NBOUNDS];

typedef struct {
    uint64_t counts[EVPY_HIST_NBOUNDS + 1]; /* per bucket; last is +Inf */
    uint64_t count;
    int64_t sum_ns;
} evpy_hist_t;

typedef struct {
    int64_t ns;
    PyObject *what; /* str naming the callback (qualname at file:line) */
} evpy_slow_t;

typedef struct {
    uint64_t iterations;
    uint64_t callbacks; /* Handles run (cancelled ones are skipped) */
    uint64_t io_events; /* transport readiness events dispatched */
    uint64_t timers_scheduled;
    uint64_t timers_fired; /* moved from the heap to the ready queue */
    int64_t wait_ns;       /* blocked in the poller */
    int64_t run_ns;        /* inside _run(), finished runs */
    int64_t run_start_ns;  /* start of the current _run(), else 0 */
    /* end of this iteration's blocking wait, or
     * 0 when it did not block */
    int64_t wake_ns;
    evpy_hist_t timer_lag; /* deadline -> dispatch */
    /* opt-in detailed mode */
    evpy_hist_t ready_lag; /* call_soon / poll wake-up -> run */
    evpy_hist_t cb_time;   /* duration of each callback */
    /* the slowest timed callbacks, unordered */
    int64_t slow_floor_ns;
    /* a timed callback at least this slow is
     * recorded: the floor, or the table's
     * minimum once it is full */
    int64_t slow_min_ns;
    int nslow;
    evpy_slow_t slow[EVPY_SLOWEST_MAX];
} evpy_stats_t;

#if EVPY_STATS
#  define EVPY_STATS_ON 1
#  define EVPY_STAT_INC(loop, field) ((loop)->stats.field++)
#  define EVPY_STAT_ADD(loop, field, v) ((loop)->stats.field += (v))
#else
#  define EVPY_STATS_ON 0
#  define EVPY_STAT_INC(loop, field) ((void)0)
#  define EVPY_STAT_ADD(loop, field, v) ((void)0)
#endif

static inline void
evpy_hist_add(evpy_hist_t *h, int64_t ns)
{
    int i = 0;
    /* Linear from the bottom: most samples land in the first buckets. */
    while (i < EVPY_HIST_NBOUNDS && ns > evpy_hist_bounds_ns[i]) {
        i++;
    }
    h->counts[i]++;
    h->count++;
    h->sum_ns += ns;
}

struct LoopObject;

void evpy_stats_init(evpy_stats_t *s);
int evpy_stats_traverse(evpy_stats_t *s, visitproc visit, void *arg);
void evpy_stats_clear(evpy_stats_t *s);

/* A timed ready-queue entry (Handle or tagged I/O object, still alive)
 * took `ns`, at least stats.slow_min_ns: describe it and keep it in the
 * slowest table. Cold; never fails (errors are reported as unraisable). */
void evpy_stats_note_slow(struct LoopObject *loop, void *entry, int64_t ns);

/* "<I/O stream read: Proto.data_received() at file:line ...>" for the
 * debug-mode slow-callback warning. New reference or NULL. */
PyObject *evpy_stats_describe_io(struct LoopObject *loop, void *entry);

/* Loop methods (in loop_methods): _stats(), _health_probe(),
 * _set_stats_detail(enabled, slow_floor_seconds), _stats_reset_slowest(). */
PyObject *evpy_stats_snapshot(struct LoopObject *loop, PyObject *unused);
PyObject *evpy_stats_probe(struct LoopObject *loop, PyObject *unused);
PyObject *evpy_stats_set_detail(struct LoopObject *loop, PyObject *args);
PyObject *evpy_stats_reset_slowest(struct LoopObject *loop, PyObject *unused);

#endif /* EVPY_STATS_H */
