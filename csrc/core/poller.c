/* Backend selection: the one place that knows which backends exist. */
#include "config.h"
#include "poller.h"

#include <errno.h>
#include <string.h>

static const evpy_poller_ops_t *const backends[] = {
#if EVPY_HAVE_EPOLL
    &evpy_poller_epoll_ops,
#endif
#if EVPY_HAVE_KQUEUE
    &evpy_poller_kqueue_ops,
#endif
    &evpy_poller_poll_ops,
};

int
evpy_poller_open(evpy_poller_t **out, const char *name)
{
    size_t n = sizeof(backends) / sizeof(backends[0]);
    if (name == NULL || name[0] == '\0') {
        return backends[0]->open(out);
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(backends[i]->name, name) == 0) {
            return backends[i]->open(out);
        }
    }
    return -EINVAL;
}
