/* fd interest table: see fdtable.h. */
#include "fdtable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
evpy_fdtable_init(evpy_fdtable_t *t)
{
    memset(t, 0, sizeof(*t));
}

void
evpy_fdtable_free(evpy_fdtable_t *t)
{
    free(t->slots);
    free(t->dirty);
    evpy_fdtable_init(t);
}

evpy_fdslot_t *
evpy_fdtable_slot(evpy_fdtable_t *t, int fd)
{
    if (fd < 0) {
        return NULL;
    }
    if (fd >= t->cap) {
        int ncap = t->cap ? t->cap : 64;
        while (ncap <= fd) {
            ncap *= 2;
        }
        evpy_fdslot_t *ns = realloc(t->slots, sizeof(*ns) * (size_t)ncap);
        if (ns == NULL) {
            return NULL;
        }
        memset(ns + t->cap, 0, sizeof(*ns) * (size_t)(ncap - t->cap));
        t->slots = ns;
        t->cap = ncap;
    }
    return &t->slots[fd];
}

int
evpy_fdtable_want(evpy_fdtable_t *t, int fd, unsigned want)
{
    evpy_fdslot_t *s = evpy_fdtable_slot(t, fd);
    if (s == NULL) {
        return fd < 0 ? -EBADF : -ENOMEM;
    }
    if ((s->want != 0) != (want != 0)) {
        t->nactive += want ? 1 : -1;
    }
    s->want = (unsigned char)want;
    if (!s->dirty && s->want != s->have) {
        if (t->ndirty == t->dirty_cap) {
            int ncap = t->dirty_cap ? t->dirty_cap * 2 : 64;
            int *nd = realloc(t->dirty, sizeof(int) * (size_t)ncap);
            if (nd == NULL) {
                return -ENOMEM;
            }
            t->dirty = nd;
            t->dirty_cap = ncap;
        }
        t->dirty[t->ndirty++] = fd;
        s->dirty = 1;
    }
    return 0;
}

static int
apply_slot(evpy_fdtable_t *t, evpy_poller_t *p, int fd, evpy_fdslot_t *s)
{
    if (s->want == s->have) {
        return 0;
    }
    if (s->have == 0) {
        s->gen++; /* a new registration: events of older ones are stale */
    }
    int rc = evpy_poller_ctl(p, fd, s->have, s->want, s->gen);
    if (rc < 0) {
        if ((s->want != 0) != (s->have != 0)) {
            t->nactive += s->have ? 1 : -1;
        }
        s->want = s->have;
        return rc;
    }
    s->have = s->want;
    return 0;
}

int
evpy_fdtable_apply(evpy_fdtable_t *t, evpy_poller_t *p, int fd)
{
    evpy_fdslot_t *s = evpy_fdtable_get(t, fd);
    if (s == NULL) {
        return 0;
    }
    /* Stays in the dirty list if it is there; flush skips clean slots. */
    return apply_slot(t, p, fd, s);
}

int
evpy_fdtable_flush(evpy_fdtable_t *t, evpy_poller_t *p)
{
    int failures = 0;
    for (int i = 0; i < t->ndirty; i++) {
        int fd = t->dirty[i];
        evpy_fdslot_t *s = &t->slots[fd];
        s->dirty = 0;
        if (apply_slot(t, p, fd, s) < 0) {
            failures++;
        }
    }
    t->ndirty = 0;
    return failures;
}
