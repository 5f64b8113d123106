/* poll backend: the portable fallback, also forceable on Linux
 * (EVPY_POLLER=poll) so the test suite checks backend parity.
 *
 * Kernel quirks this file defends against:
 *  a) poll has no kernel-side registration: interest lives in our pollfd
 *     array, with an fd -> slot index so changes are O(1) (swap-remove).
 *  b) A closed fd left in the set reports POLLNVAL on every wait. It is
 *     delivered as read+write readiness, as selectors.PollSelector does, so
 *     the owner notices; the set is never edited behind the owner's back.
 *  c) poll's timeout is in milliseconds: ppoll takes a timespec where the
 *     system has it; otherwise we round up so a timer never fires early.
 *  d) More fds may be ready than the caller's buffer holds: the rest stay
 *     level-triggered and are reported by the next wait.
 *  f) Interest lives here, per fd number, so an event never belongs to an
 *     earlier file: each entry still reports the generation it was given,
 *     as the other backends do.
 *  e) poll accepts any fd number, open or not, and regular files (always
 *     "ready"). epoll refuses both (EBADF, EPERM) when interest is added and
 *     asyncio users see those errors from add_reader, so a new fd is checked
 *     with fstat to give the same errors on every backend.
 */
#include "config.h"
#include "poller.h"
#include "faults.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
    evpy_poller_t base;
    struct pollfd *fds;
    uint32_t *gens; /* generation of each fds[] entry (f) */
    int nfds;
    int cap;
    int *slot; /* fd -> index in fds, -1 if absent */
    int slot_cap;
} poll_poller_t;

static int
pp_open(evpy_poller_t **out)
{
    poll_poller_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->base.ops = &evpy_poller_poll_ops;
    *out = &p->base;
    return 0;
}

static void
pp_close(evpy_poller_t *base)
{
    poll_poller_t *p = (poll_poller_t *)base;
    free(p->fds);
    free(p->gens);
    free(p->slot);
    free(p);
}

static int
pp_slot_reserve(poll_poller_t *p, int fd)
{
    if (fd < p->slot_cap) {
        return 0;
    }
    int ncap = p->slot_cap ? p->slot_cap : 64;
    while (ncap <= fd) {
        ncap *= 2;
    }
    int *ns = realloc(p->slot, sizeof(int) * (size_t)ncap);
    if (ns == NULL) {
        return -ENOMEM;
    }
    for (int i = p->slot_cap; i < ncap; i++) {
        ns[i] = -1;
    }
    p->slot = ns;
    p->slot_cap = ncap;
    return 0;
}

static short
to_poll(unsigned mask)
{
    return (short)(((mask & EVPY_READ) ? POLLIN : 0)
                   | ((mask & EVPY_WRITE) ? POLLOUT : 0));
}

static int
pp_ctl(evpy_poller_t *base, int fd, unsigned old, unsigned new_, uint32_t gen)
{
    poll_poller_t *p = (poll_poller_t *)base;
    (void)old;
    if (fd < 0) {
        return -EBADF;
    }
    int rc = pp_slot_reserve(p, fd);
    if (rc < 0) {
        return rc;
    }
    int i = p->slot[fd];
    if (new_ == 0) {
        if (i >= 0) {
            p->nfds--;
            if (i != p->nfds) {
                p->fds[i] = p->fds[p->nfds];
                p->gens[i] = p->gens[p->nfds];
                p->slot[p->fds[i].fd] = i;
            }
            p->slot[fd] = -1;
        }
        return 0;
    }
    if (i < 0) {
        struct stat st;
        if (fstat(fd, &st) < 0) { /* (e) */
            return -errno;
        }
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
            return -EPERM;
        }
        if (p->nfds == p->cap) {
            int ncap = p->cap ? p->cap * 2 : 64;
            struct pollfd *nf = realloc(p->fds, sizeof(*nf) * (size_t)ncap);
            if (nf == NULL) {
                return -ENOMEM;
            }
            p->fds = nf;
            uint32_t *ng = realloc(p->gens, sizeof(*ng) * (size_t)ncap);
            if (ng == NULL) {
                return -ENOMEM; /* fds[] grew: harmless, cap unchanged */
            }
            p->gens = ng;
            p->cap = ncap;
        }
        i = p->nfds++;
        p->fds[i].fd = fd;
        p->slot[fd] = i;
    }
    p->fds[i].events = to_poll(new_);
    p->fds[i].revents = 0;
    p->gens[i] = gen;
    return 0;
}

static int
pp_wait(evpy_poller_t *base, evpy_event_t *events, int max, int64_t timeout_ns)
{
    poll_poller_t *p = (poll_poller_t *)base;
    int n;
#if EVPY_HAVE_PPOLL
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    n = EVPY_FAULT(EVPY_FAULT_WAIT, ppoll(p->fds, (nfds_t)p->nfds, tsp, NULL));
#else
    int ms;
    if (timeout_ns < 0) {
        ms = -1;
    }
    else if (timeout_ns >= (int64_t)INT_MAX * 1000000) {
        ms = INT_MAX;
    }
    else {
        ms = (int)((timeout_ns + 999999) / 1000000);
    }
    n = EVPY_FAULT(EVPY_FAULT_WAIT, poll(p->fds, (nfds_t)p->nfds, ms));
#endif
    if (n < 0) {
        return -errno;
    }
    int out = 0;
    for (int i = 0; i < p->nfds && out < max && n > 0; i++) {
        short re = p->fds[i].revents;
        if (re == 0) {
            continue;
        }
        n--;
        unsigned mask = 0;
        if (re & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
            mask |= EVPY_READ;
        }
        if (re & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) {
            mask |= EVPY_WRITE;
        }
        events[out].fd = p->fds[i].fd;
        events[out].gen = p->gens[i];
        events[out].events = mask;
        out++;
    }
    return out;
}

const evpy_poller_ops_t evpy_poller_poll_ops = {
    .name = "poll",
    .open = pp_open,
    .close = pp_close,
    .ctl = pp_ctl,
    .wait = pp_wait,
};
