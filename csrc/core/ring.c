/* The reactor's ring: see ring.h. */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
evpy_ring_init(evpy_ring_t *r, size_t esize, size_t min_cap)
{
    r->items = NULL;
    r->head = 0;
    r->len = 0;
    r->cap = 0;
    r->esize = esize;
    r->min_cap = min_cap;
}

void
evpy_ring_free(evpy_ring_t *r)
{
    free(r->items);
    evpy_ring_init(r, r->esize, r->min_cap);
}

int
evpy_ring_grow(evpy_ring_t *r)
{
    size_t ncap = r->cap ? r->cap * 2 : r->min_cap;
    char *ni = malloc(r->esize * ncap);
    if (ni == NULL) {
        return -ENOMEM;
    }
    /* Unwrap into the new array so the oldest element lands at index 0:
     * at most two runs of contiguous elements. */
    size_t first = r->len;
    if (r->head + first > r->cap) {
        first = r->cap - r->head;
    }
    if (r->len) {
        memcpy(ni, r->items + r->head * r->esize, first * r->esize);
        memcpy(ni + first * r->esize, r->items, (r->len - first) * r->esize);
    }
    free(r->items);
    r->items = ni;
    r->head = 0;
    r->cap = ncap;
    return 0;
}
