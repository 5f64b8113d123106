/* Intrusive binary min-heap of timers ordered by (deadline_ns, seq).
 *
 * A timer is embedded in its owner and remembers its heap index, so removal
 * of any timer (cancel) is O(log n): cancelled timers never pile up. The
 * sequence number makes equal deadlines fire in scheduling order.
 */
#ifndef EVPY_TIMERHEAP_H
#define EVPY_TIMERHEAP_H

#include <stddef.h>
#include <stdint.h>

#define EVPY_TIMER_UNSCHEDULED SIZE_MAX

typedef struct {
    int64_t deadline_ns;
    uint64_t seq;
    size_t index; /* position in the heap or EVPY_TIMER_UNSCHEDULED */
} evpy_timer_t;

typedef struct {
    evpy_timer_t **items;
    size_t len;
    size_t cap;
    uint64_t next_seq;
} evpy_timerheap_t;

void evpy_timerheap_init(evpy_timerheap_t *h);
void evpy_timerheap_free(evpy_timerheap_t *h);
/* Schedules t (which must be unscheduled); returns 0 or -ENOMEM. */
int evpy_timerheap_push(evpy_timerheap_t *h, evpy_timer_t *t);
/* Unschedules t if it is in the heap; returns 1 if it was. */
int evpy_timerheap_remove(evpy_timerheap_t *h, evpy_timer_t *t);
/* Unschedules and returns the earliest timer, or NULL when empty. */
evpy_timer_t *evpy_timerheap_pop(evpy_timerheap_t *h);

static inline evpy_timer_t *
evpy_timerheap_peek(const evpy_timerheap_t *h)
{
    return h->len ? h->items[0] : NULL;
}

static inline int
evpy_timer_scheduled(const evpy_timer_t *t)
{
    return t->index != EVPY_TIMER_UNSCHEDULED;
}

#endif /* EVPY_TIMERHEAP_H */
