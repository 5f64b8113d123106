/* epoll backend (Linux).
 *
 * Kernel quirks this file defends against:
 *  a) epoll registers the open file description, not the fd number. When a
 *     registered fd is closed the kernel drops the registration silently, so
 *     MOD can fail with ENOENT for an fd that was closed and reopened under
 *     the same number: we retry as ADD.
 *  b) ADD of an fd the kernel still tracks (a dup kept the description
 *     alive) fails with EEXIST: we retry as MOD.
 *  c) DEL of an fd that is already closed fails with EBADF or ENOENT: the
 *     registration is gone either way, so that is success.
 *  d) Regular files and directories cannot be polled (EPERM): reported to
 *     the caller, who raises it as asyncio does.
 *  e) EPOLLERR and EPOLLHUP are reported even when not asked for: they are
 *     delivered as read+write readiness, so the callback sees the error on
 *     its next syscall instead of the loop spinning.
 *  g) Because of (a) and (b), an event can belong to a registration made
 *     for an earlier file under the same fd number (its fd closed while a
 *     dup kept it open): each registration's data carries the caller's
 *     generation next to the fd, so the caller can ignore such events.
 *  f) epoll_wait's timeout is in whole milliseconds, which turns a 100 us
 *     timer into a 1 ms sleep: epoll_pwait2 (Linux 5.11) takes a timespec,
 *     and we fall back to rounding up when the kernel lacks it (ENOSYS).
 */
#include "config.h"
#include "poller.h"
#include "faults.h"

#if EVPY_HAVE_EPOLL

#  include <errno.h>
#  include <stdlib.h>
#  include <sys/epoll.h>
#  include <sys/syscall.h>
#  include <time.h>
#  include <unistd.h>

typedef struct {
    evpy_poller_t base;
    int epfd;
    int cap;
    int have_pwait2;
    struct epoll_event *buf;
} epoll_poller_t;

static int
epoll_open(evpy_poller_t **out)
{
    epoll_poller_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        int err = errno;
        free(p);
        return -err;
    }
    p->base.ops = &evpy_poller_epoll_ops;
#  ifdef SYS_epoll_pwait2
    p->have_pwait2 = 1;
#  endif
    *out = &p->base;
    return 0;
}

static void
epoll_close(evpy_poller_t *base)
{
    epoll_poller_t *p = (epoll_poller_t *)base;
    close(p->epfd);
    free(p->buf);
    free(p);
}

static uint32_t
to_epoll(unsigned mask)
{
    return ((mask & EVPY_READ) ? EPOLLIN : 0)
           | ((mask & EVPY_WRITE) ? EPOLLOUT : 0);
}

/* The event data: the fd in the low half, the generation in the high
 * half (g). */
static int
epoll_ctl_op(epoll_poller_t *p, int op, int fd, unsigned mask, uint32_t gen)
{
    struct epoll_event ev = {
        .events = to_epoll(mask),
        .data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd,
    };
    return epoll_ctl(p->epfd, op, fd, &ev) == 0 ? 0 : -errno;
}

static int
epoll_ctl_change(evpy_poller_t *base, int fd, unsigned old, unsigned new_,
                 uint32_t gen)
{
    epoll_poller_t *p = (epoll_poller_t *)base;
    int rc;
    if (new_ == 0) {
        if (old == 0) {
            return 0;
        }
        rc = epoll_ctl_op(p, EPOLL_CTL_DEL, fd, 0, gen);
        return (rc == -ENOENT || rc == -EBADF) ? 0 : rc; /* (c) */
    }
    if (old == 0) {
        rc = epoll_ctl_op(p, EPOLL_CTL_ADD, fd, new_, gen);
        if (rc == -EEXIST) { /* (b) */
            rc = epoll_ctl_op(p, EPOLL_CTL_MOD, fd, new_, gen);
        }
        return rc;
    }
    rc = epoll_ctl_op(p, EPOLL_CTL_MOD, fd, new_, gen);
    if (rc == -ENOENT) { /* (a) */
        rc = epoll_ctl_op(p, EPOLL_CTL_ADD, fd, new_, gen);
    }
    return rc;
}

static int
epoll_do_wait(epoll_poller_t *p, int max, int64_t timeout_ns)
{
#  ifdef SYS_epoll_pwait2
    if (p->have_pwait2 && timeout_ns > 0) { /* (f) */
        struct timespec ts = {
            .tv_sec = (time_t)(timeout_ns / 1000000000),
            .tv_nsec = (long)(timeout_ns % 1000000000),
        };
        long n = EVPY_FAULT(
            EVPY_FAULT_WAIT,
            syscall(SYS_epoll_pwait2, p->epfd, p->buf, max, &ts, NULL, 0));
        if (n >= 0 || errno != ENOSYS) {
            return (int)n;
        }
        p->have_pwait2 = 0;
    }
#  endif
    int ms;
    if (timeout_ns < 0) {
        ms = -1;
    }
    else if (timeout_ns >= (int64_t)INT32_MAX * 1000000) {
        ms = INT32_MAX;
    }
    else {
        ms = (int)((timeout_ns + 999999) / 1000000);
    }
    return EVPY_FAULT(EVPY_FAULT_WAIT, epoll_wait(p->epfd, p->buf, max, ms));
}

static int
epoll_wait_events(evpy_poller_t *base, evpy_event_t *events, int max,
                  int64_t timeout_ns)
{
    epoll_poller_t *p = (epoll_poller_t *)base;
    if (max > p->cap) {
        struct epoll_event *nb = realloc(p->buf, sizeof(*nb) * (size_t)max);
        if (nb == NULL) {
            return -ENOMEM;
        }
        p->buf = nb;
        p->cap = max;
    }
    int n = epoll_do_wait(p, max, timeout_ns);
    if (n < 0) {
        return -errno;
    }
    for (int i = 0; i < n; i++) {
        uint32_t e = p->buf[i].events;
        unsigned mask = 0;
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
            mask |= EVPY_READ;
        }
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) { /* (e) */
            mask |= EVPY_WRITE;
        }
        uint64_t data = p->buf[i].data.u64;
        events[i].fd = (int)(uint32_t)data;
        events[i].gen = (uint32_t)(data >> 32);
        events[i].events = mask;
    }
    return n;
}

const evpy_poller_ops_t evpy_poller_epoll_ops = {
    .name = "epoll",
    .open = epoll_open,
    .close = epoll_close,
    .ctl = epoll_ctl_change,
    .wait = epoll_wait_events,
};

#endif /* EVPY_HAVE_EPOLL */
