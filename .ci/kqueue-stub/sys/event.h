/* A stand-in <sys/event.h> with FreeBSD's declarations, used by .ci/test.sh
 * to compile-check csrc/core/poller_kqueue.c on Linux (no kqueue here).
 * Not a kqueue implementation: nothing is linked or run against it. */
#ifndef EVPY_KQUEUE_STUB_H
#define EVPY_KQUEUE_STUB_H
#include <stdint.h>
#include <time.h>

struct kevent {
    uintptr_t ident;
    short filter;
    unsigned short flags;
    unsigned int fflags;
    int64_t data;
    void *udata;
};

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ERROR 0x4000
#define EV_EOF 0x8000
#define EV_SET(kevp, a, b, c, d, e, f)                                     \
    do {                                                                   \
        struct kevent *kev_ = (kevp);                                      \
        kev_->ident = (a);                                                 \
        kev_->filter = (b);                                                \
        kev_->flags = (c);                                                 \
        kev_->fflags = (d);                                                \
        kev_->data = (e);                                                  \
        kev_->udata = (f);                                                 \
    } while (0)

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges,
           struct kevent *eventlist, int nevents,
           const struct timespec *timeout);

#endif
