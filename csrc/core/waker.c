/* Cross-thread waker: see waker.h. */
#include "config.h"
#include "waker.h"
#include "faults.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#if EVPY_HAVE_EVENTFD
#  include <sys/eventfd.h>
#endif

int
evpy_waker_open(evpy_waker_t *w)
{
#if EVPY_HAVE_EVENTFD
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        return -errno;
    }
    w->rfd = w->wfd = fd;
    return 0;
#else
    int fds[2];
    if (pipe(fds) < 0) {
        return -errno;
    }
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0
            || fcntl(fds[i], F_SETFL, O_NONBLOCK) < 0) {
            int err = errno;
            close(fds[0]);
            close(fds[1]);
            return -err;
        }
    }
    w->rfd = fds[0];
    w->wfd = fds[1];
    return 0;
#endif
}

void
evpy_waker_close(evpy_waker_t *w)
{
    if (w->rfd >= 0) {
        close(w->rfd);
    }
    if (w->wfd >= 0 && w->wfd != w->rfd) {
        close(w->wfd);
    }
    w->rfd = w->wfd = -1;
}

/* Both may run in a signal handler or another thread, between a failed
 * call and the caller's look at errno: errno is left as it was. */
void
evpy_waker_wake(evpy_waker_t *w)
{
    int saved_errno = errno;
    ssize_t n;
#if EVPY_HAVE_EVENTFD
    uint64_t one = 1;
    do {
        n = EVPY_FAULT(EVPY_FAULT_WAKE, write(w->wfd, &one, sizeof(one)));
    } while (n < 0 && errno == EINTR);
#else
    char c = 0;
    do {
        n = EVPY_FAULT(EVPY_FAULT_WAKE, write(w->wfd, &c, 1));
    } while (n < 0 && errno == EINTR);
#endif
    (void)n; /* EAGAIN: a wake-up is already pending */
    errno = saved_errno;
}

void
evpy_waker_drain(evpy_waker_t *w)
{
    int saved_errno = errno;
    ssize_t n;
#if EVPY_HAVE_EVENTFD
    /* One read resets an eventfd's counter: no second read to see EAGAIN. */
    uint64_t count;
    do {
        n = EVPY_FAULT(EVPY_FAULT_DRAIN, read(w->rfd, &count, sizeof(count)));
    } while (n < 0 && errno == EINTR);
#else
    /* A pipe: read until a short read says it is empty. */
    char buf[64];
    do {
        n = EVPY_FAULT(EVPY_FAULT_DRAIN, read(w->rfd, buf, sizeof(buf)));
    } while (n == (ssize_t)sizeof(buf) || (n < 0 && errno == EINTR));
#endif
    (void)n;
    errno = saved_errno;
}
