/* Cross-thread waker: wakes a loop blocked in its poller from any thread
 * (or a signal handler). eventfd on Linux, a non-blocking pipe elsewhere. */
#ifndef EVPY_WAKER_H
#define EVPY_WAKER_H

typedef struct {
    int rfd; /* registered for reading in the loop's poller */
    int wfd; /* == rfd for eventfd */
} evpy_waker_t;

int evpy_waker_open(evpy_waker_t *w);
void evpy_waker_close(evpy_waker_t *w);
/* Async-signal-safe; a full pipe or counter means a wake-up is pending.
 * wake and drain leave errno as they found it. */
void evpy_waker_wake(evpy_waker_t *w);
void evpy_waker_drain(evpy_waker_t *w);

#endif /* EVPY_WAKER_H */
