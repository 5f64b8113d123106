/* Growable FIFO ring of fixed-size elements: the one queue of the reactor
 * and the types on top of it. The loop's ready queue is a ring of
 * pointers (the evpy_ring_push/pop/at helpers); a stream's write queue and
 * a datagram transport's queue are rings of their own small structs (the
 * slot functions), with their byte counts kept on top by their owners.
 */
#ifndef EVPY_RING_H
#define EVPY_RING_H

#include <stddef.h>

typedef struct {
    char *items;
    size_t head; /* index of the oldest element */
    size_t len;
    size_t cap;     /* always a power of two (or 0) */
    size_t esize;   /* bytes per element */
    size_t min_cap; /* capacity of the first allocation (a power of 2) */
} evpy_ring_t;

/* An empty ring of esize-byte elements; nothing is allocated until the
 * first push, then min_cap elements (a power of two). */
void evpy_ring_init(evpy_ring_t *r, size_t esize, size_t min_cap);
void evpy_ring_free(evpy_ring_t *r);
/* Doubles the capacity; 0 or -ENOMEM. */
int evpy_ring_grow(evpy_ring_t *r);

/* Address of the i-th oldest element, 0 <= i < len. */
static inline void *
evpy_ring_slot(const evpy_ring_t *r, size_t i)
{
    return r->items + ((r->head + i) & (r->cap - 1)) * r->esize;
}

/* Appends an element and returns its (uninitialised) slot; NULL when out
 * of memory. */
static inline void *
evpy_ring_push_slot(evpy_ring_t *r)
{
    if (r->len == r->cap && evpy_ring_grow(r) < 0) {
        return NULL;
    }
    r->len++;
    return evpy_ring_slot(r, r->len - 1);
}

/* Drop the oldest / the newest element; the caller checks len first and
 * has taken what the slot held. */
static inline void
evpy_ring_drop_front(evpy_ring_t *r)
{
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
}

static inline void
evpy_ring_drop_back(evpy_ring_t *r)
{
    r->len--;
}

/* -- rings of pointers (esize == sizeof(void *)) -------------------------- */

/* Returns 0 or -ENOMEM. */
static inline int
evpy_ring_push(evpy_ring_t *r, void *item)
{
    void **slot = (void **)evpy_ring_push_slot(r);
    if (slot == NULL) {
        return -12; /* -ENOMEM without pulling errno.h into every user */
    }
    *slot = item;
    return 0;
}

/* The caller checks len first. */
static inline void *
evpy_ring_pop(evpy_ring_t *r)
{
    void *item = *(void **)evpy_ring_slot(r, 0);
    evpy_ring_drop_front(r);
    return item;
}

/* i-th oldest item, 0 <= i < len. */
static inline void *
evpy_ring_at(const evpy_ring_t *r, size_t i)
{
    return *(void **)evpy_ring_slot(r, i);
}

#endif /* EVPY_RING_H */
