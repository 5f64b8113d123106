/* fd-indexed interest table.
 *
 * Each slot holds the interest the owner wants (`want`), what the poller
 * currently has (`have`) and two opaque owner pointers (reader, writer).
 * Changes are recorded by evpy_fdtable_want() and applied in one batch by
 * evpy_fdtable_flush() just before the loop waits, so a transport that
 * pauses and resumes reading within one iteration costs no syscall. Callers
 * that need an error right away (add_reader on a regular file) use
 * evpy_fdtable_apply() for that fd.
 */
#ifndef EVPY_FDTABLE_H
#define EVPY_FDTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "poller.h"

typedef struct {
    void *reader; /* owner data for read readiness (the type layer) */
    void *writer; /* owner data for write readiness */
    uint32_t gen; /* the poller registration's generation: a new one
                     * each time the fd goes from no interest to some */
    unsigned char want;
    unsigned char have;
    unsigned char dirty;
} evpy_fdslot_t;

typedef struct {
    evpy_fdslot_t *slots;
    int cap;
    int *dirty; /* fds whose want != have may be pending */
    int ndirty;
    int dirty_cap;
    int nactive; /* slots with want != 0 */
} evpy_fdtable_t;

void evpy_fdtable_init(evpy_fdtable_t *t);
void evpy_fdtable_free(evpy_fdtable_t *t);

/* Slot for fd, growing the table; NULL on ENOMEM or fd < 0. */
evpy_fdslot_t *evpy_fdtable_slot(evpy_fdtable_t *t, int fd);

/* Existing slot or NULL, never grows. */
static inline evpy_fdslot_t *
evpy_fdtable_get(evpy_fdtable_t *t, int fd)
{
    return (fd >= 0 && fd < t->cap) ? &t->slots[fd] : NULL;
}

/* Records the wanted interest for fd (deferred). 0 or -ENOMEM. */
int evpy_fdtable_want(evpy_fdtable_t *t, int fd, unsigned want);

/* Applies fd's pending change now. On failure `want` is rolled back to
 * `have` and the negative errno returned. */
int evpy_fdtable_apply(evpy_fdtable_t *t, evpy_poller_t *p, int fd);

/* 1 if an event the poller reported for fd belongs to the fd's current
 * registration, 0 if it is stale (an earlier file under the same number,
 * see poller.h) or fd has no registration. */
static inline int
evpy_fdtable_event_current(const evpy_fdtable_t *t, const evpy_event_t *ev)
{
    return ev->fd >= 0 && ev->fd < t->cap && t->slots[ev->fd].have != 0
           && t->slots[ev->fd].gen == ev->gen;
}

/* Applies every pending change. Failures (a transport's fd closed behind
 * its back) are dropped: the slot keeps want == have == what the kernel
 * accepted. Returns the number of failures. */
int evpy_fdtable_flush(evpy_fdtable_t *t, evpy_poller_t *p);

#endif /* EVPY_FDTABLE_H */
