/* Ready-queue ring: see ring.h. */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
evpy_ring_init(evpy_ring_t *r)
{
    r->items = NULL;
    r->head = 0;
    r->len = 0;
    r->cap = 0;
}

void
evpy_ring_free(evpy_ring_t *r)
{
    free(r->items);
    evpy_ring_init(r);
}

int
evpy_ring_grow(evpy_ring_t *r)
{
    size_t ncap = r->cap ? r->cap * 2 : 256;
    void **ni = malloc(sizeof(void *) * ncap);
    if (ni == NULL) {
        return -ENOMEM;
    }
    /* Unwrap into the new array so the oldest item lands at index 0. */
    for (size_t i = 0; i < r->len; i++) {
        ni[i] = r->items[(r->head + i) & (r->cap - 1)];
    }
    free(r->items);
    r->items = ni;
    r->head = 0;
    r->cap = ncap;
    return 0;
}
