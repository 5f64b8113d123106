/* kqueue backend (macOS and the BSDs).
 *
 * Kernel quirks this file defends against:
 *  a) Read and write interest are two separate filters: a change of mask is
 *     up to two kevent changes, submitted in one kevent() call.
 *  b) A closed fd's filters are dropped by the kernel: deleting them later
 *     fails with ENOENT or EBADF, which we treat as success.
 *  c) An fd may come back as two events (read and write filters) in one
 *     wait; each is delivered separately and the owner handles both.
 *  d) EV_ERROR in a returned event, and EV_EOF, are delivered as readiness
 *     so the owner's next syscall sees the error.
 *  f) kqueue drops an fd's filters when the fd is closed, so no event
 *     outlives its fd number; each filter's udata still carries the
 *     caller's generation, reported with its events as on epoll.
 *  e) kqueue descriptors are not inherited across fork, and do not need
 *     CLOEXEC; we still set it where the system has kqueue1/O_CLOEXEC.
 */
#include "config.h"
#include "poller.h"

#if EVPY_HAVE_KQUEUE

#  include <errno.h>
#  include <fcntl.h>
#  include <stdlib.h>
#  include <sys/event.h>
#  include <sys/time.h>
#  include <sys/types.h>
#  include <time.h>
#  include <unistd.h>

typedef struct {
    evpy_poller_t base;
    int kq;
    int cap;
    struct kevent *buf;
} kq_poller_t;

static int
kq_open(evpy_poller_t **out)
{
    kq_poller_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->kq = kqueue();
    if (p->kq < 0) {
        int err = errno;
        free(p);
        return -err;
    }
    (void)fcntl(p->kq, F_SETFD, FD_CLOEXEC); /* (e) */
    p->base.ops = &evpy_poller_kqueue_ops;
    *out = &p->base;
    return 0;
}

static void
kq_close(evpy_poller_t *base)
{
    kq_poller_t *p = (kq_poller_t *)base;
    close(p->kq);
    free(p->buf);
    free(p);
}

/* The generation rides in udata (f), whose type differs between the
 * BSDs (void * or intptr_t): converted through uintptr_t both ways. */
#  define KQ_UDATA(gen) ((void *)(uintptr_t)(gen))

static int
kq_ctl(evpy_poller_t *base, int fd, unsigned old, unsigned new_, uint32_t gen)
{
    kq_poller_t *p = (kq_poller_t *)base;
    struct kevent ch[2];
    int n = 0;
    /* The generation is new only when old == 0 (see fdtable.c): filters
     * that stay keep theirs. */
    unsigned diff = old ^ new_;
    if (diff & EVPY_READ) {
        EV_SET(&ch[n], (uintptr_t)fd, EVFILT_READ,
               (new_ & EVPY_READ) ? EV_ADD : EV_DELETE, 0, 0, KQ_UDATA(gen));
        n++;
    }
    if (diff & EVPY_WRITE) {
        EV_SET(&ch[n], (uintptr_t)fd, EVFILT_WRITE,
               (new_ & EVPY_WRITE) ? EV_ADD : EV_DELETE, 0, 0, KQ_UDATA(gen));
        n++;
    }
    if (n == 0) {
        return 0;
    }
    if (kevent(p->kq, ch, n, NULL, 0, NULL) < 0) {
        int err = errno;
        if ((err == ENOENT || err == EBADF) && new_ == 0) { /* (b) */
            return 0;
        }
        return -err;
    }
    return 0;
}

static int
kq_wait(evpy_poller_t *base, evpy_event_t *events, int max, int64_t timeout_ns)
{
    kq_poller_t *p = (kq_poller_t *)base;
    if (max > p->cap) {
        struct kevent *nb = realloc(p->buf, sizeof(*nb) * (size_t)max);
        if (nb == NULL) {
            return -ENOMEM;
        }
        p->buf = nb;
        p->cap = max;
    }
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    int n = kevent(p->kq, NULL, 0, p->buf, max, tsp);
    if (n < 0) {
        return -errno;
    }
    for (int i = 0; i < n; i++) {
        struct kevent *k = &p->buf[i];
        unsigned mask;
        if (k->flags & EV_ERROR) { /* (d) */
            mask = EVPY_READ | EVPY_WRITE;
        }
        else if (k->filter == EVFILT_READ) {
            mask = EVPY_READ;
        }
        else {
            mask = EVPY_WRITE;
        }
        events[i].fd = (int)k->ident;
        events[i].gen = (uint32_t)(uintptr_t)k->udata;
        events[i].events = mask;
    }
    return n;
}

const evpy_poller_ops_t evpy_poller_kqueue_ops = {
    .name = "kqueue",
    .open = kq_open,
    .close = kq_close,
    .ctl = kq_ctl,
    .wait = kq_wait,
};

#endif /* EVPY_HAVE_KQUEUE */
