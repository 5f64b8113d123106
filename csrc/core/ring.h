/* Growable FIFO ring of opaque pointers: the loop's ready queue. */
#ifndef EVPY_RING_H
#define EVPY_RING_H

#include <stddef.h>

typedef struct {
    void **items;
    size_t head; /* index of the oldest item */
    size_t len;
    size_t cap;  /* always a power of two (or 0) */
} evpy_ring_t;

void evpy_ring_init(evpy_ring_t *r);
void evpy_ring_free(evpy_ring_t *r);
int evpy_ring_grow(evpy_ring_t *r);

/* Returns 0 or -ENOMEM. */
static inline int
evpy_ring_push(evpy_ring_t *r, void *item)
{
    if (r->len == r->cap && evpy_ring_grow(r) < 0) {
        return -12; /* -ENOMEM without pulling errno.h into every user */
    }
    r->items[(r->head + r->len) & (r->cap - 1)] = item;
    r->len++;
    return 0;
}

/* The caller checks len first. */
static inline void *
evpy_ring_pop(evpy_ring_t *r)
{
    void *item = r->items[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
    return item;
}

/* i-th oldest item, 0 <= i < len. */
static inline void *
evpy_ring_at(const evpy_ring_t *r, size_t i)
{
    return r->items[(r->head + i) & (r->cap - 1)];
}

#endif /* EVPY_RING_H */
