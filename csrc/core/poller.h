/* Readiness poller interface, implemented by one file per backend.
 *
 * A poller holds level-triggered interest (read and/or write) per fd and
 * waits for readiness with a nanosecond timeout. Several backends can be
 * compiled in at once (epoll and poll on Linux, kqueue and poll on BSD), so
 * the backend is picked at run time by name ("epoll", "kqueue", "poll"; the
 * module passes $EVPY_POLLER), otherwise the best available is used.
 *
 * All functions return 0 (or a count) on success and a negative errno on
 * failure. No function retries EINTR from a wait: the caller must get a
 * chance to run signal handlers.
 */
#ifndef EVPY_POLLER_H
#define EVPY_POLLER_H

#include <stdint.h>

#define EVPY_READ 1u
#define EVPY_WRITE 2u

/* Each registration carries a generation chosen by the caller (the fd
 * table's), returned with its events. A registration belongs to an open
 * file, not to an fd number: epoll and kqueue can still report events of a
 * file whose fd was closed while a dup kept it open, under a number that
 * now names another file. The generation tells those stale events apart. */
typedef struct {
    int fd;
    uint32_t gen;    /* the generation the registration was made with */
    unsigned events; /* EVPY_READ | EVPY_WRITE; errors and hang-ups
                        are reported as both */
} evpy_event_t;

typedef struct evpy_poller evpy_poller_t;

typedef struct {
    const char *name;
    int (*open)(evpy_poller_t **out);
    void (*close)(evpy_poller_t *p);
    /* Change fd's interest from `old` to `new_` (either may be 0); events
     * of fd report `gen` from then on. */
    int (*ctl)(evpy_poller_t *p, int fd, unsigned old, unsigned new_,
               uint32_t gen);
    /* timeout_ns < 0 waits forever; returns the number of events. */
    int (*wait)(evpy_poller_t *p, evpy_event_t *events, int max,
                int64_t timeout_ns);
} evpy_poller_ops_t;

/* Every backend's state starts with this header. */
struct evpy_poller {
    const evpy_poller_ops_t *ops;
};

extern const evpy_poller_ops_t evpy_poller_epoll_ops;
extern const evpy_poller_ops_t evpy_poller_kqueue_ops;
extern const evpy_poller_ops_t evpy_poller_poll_ops;

/* name NULL or "" picks the best backend. Unknown or unavailable names
 * give -EINVAL. The core reads no environment: the caller chooses. */
int evpy_poller_open(evpy_poller_t **out, const char *name);

static inline void
evpy_poller_close(evpy_poller_t *p)
{
    p->ops->close(p);
}

static inline const char *
evpy_poller_name(const evpy_poller_t *p)
{
    return p->ops->name;
}

static inline int
evpy_poller_ctl(evpy_poller_t *p, int fd, unsigned old, unsigned new_,
                uint32_t gen)
{
    return p->ops->ctl(p, fd, old, new_, gen);
}

static inline int
evpy_poller_wait(evpy_poller_t *p, evpy_event_t *events, int max,
                 int64_t timeout_ns)
{
    return p->ops->wait(p, events, max, timeout_ns);
}

#endif /* EVPY_POLLER_H */
