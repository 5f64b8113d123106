/* Timer heap: see timerheap.h. */
#include "timerheap.h"

#include <errno.h>
#include <stdlib.h>

static inline int
timer_less(const evpy_timer_t *a, const evpy_timer_t *b)
{
    if (a->deadline_ns != b->deadline_ns) {
        return a->deadline_ns < b->deadline_ns;
    }
    return a->seq < b->seq;
}

static inline void
heap_set(evpy_timerheap_t *h, size_t i, evpy_timer_t *t)
{
    h->items[i] = t;
    t->index = i;
}

static void
sift_up(evpy_timerheap_t *h, size_t i)
{
    evpy_timer_t *t = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_less(t, h->items[parent])) {
            break;
        }
        heap_set(h, i, h->items[parent]);
        i = parent;
    }
    heap_set(h, i, t);
}

static void
sift_down(evpy_timerheap_t *h, size_t i)
{
    evpy_timer_t *t = h->items[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len) {
            break;
        }
        if (child + 1 < h->len
            && timer_less(h->items[child + 1], h->items[child])) {
            child++;
        }
        if (!timer_less(h->items[child], t)) {
            break;
        }
        heap_set(h, i, h->items[child]);
        i = child;
    }
    heap_set(h, i, t);
}

void
evpy_timerheap_init(evpy_timerheap_t *h)
{
    h->items = NULL;
    h->len = 0;
    h->cap = 0;
    h->next_seq = 0;
}

void
evpy_timerheap_free(evpy_timerheap_t *h)
{
    free(h->items);
    evpy_timerheap_init(h);
}

int
evpy_timerheap_push(evpy_timerheap_t *h, evpy_timer_t *t)
{
    if (h->len == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        evpy_timer_t **ni = realloc(h->items, sizeof(*ni) * ncap);
        if (ni == NULL) {
            return -ENOMEM;
        }
        h->items = ni;
        h->cap = ncap;
    }
    t->seq = h->next_seq++;
    h->items[h->len] = t;
    t->index = h->len;
    h->len++;
    sift_up(h, h->len - 1);
    return 0;
}

int
evpy_timerheap_remove(evpy_timerheap_t *h, evpy_timer_t *t)
{
    size_t i = t->index;
    if (i == EVPY_TIMER_UNSCHEDULED || i >= h->len || h->items[i] != t) {
        return 0;
    }
    t->index = EVPY_TIMER_UNSCHEDULED;
    h->len--;
    if (i != h->len) {
        evpy_timer_t *last = h->items[h->len];
        heap_set(h, i, last);
        if (i > 0 && timer_less(last, h->items[(i - 1) / 2])) {
            sift_up(h, i);
        }
        else {
            sift_down(h, i);
        }
    }
    return 1;
}

evpy_timer_t *
evpy_timerheap_pop(evpy_timerheap_t *h)
{
    if (h->len == 0) {
        return NULL;
    }
    evpy_timer_t *top = h->items[0];
    evpy_timerheap_remove(h, top);
    return top;
}
