/* Test-only fault injection (see faults.h): which errno each syscall site
 * may fail with, and the seeded generator that decides. Empty unless the
 * build defines EVPY_FAULTS. */
#include "faults.h"

#ifdef EVPY_FAULTS
#  include <errno.h>
#  include <stdatomic.h>

typedef struct {
    const char *name;
    int errnos[8]; /* 0-terminated; the transient ones first */
    int ntransient;
} site_t;

/* What each call can really fail with. Not injected: EINTR for connect()
 * (the kernel goes on connecting; faking it would leave the socket
 * unconnected) and EAGAIN for the waker's write (the kernel returns it
 * only when a wake-up is already pending; faking it would lose one). */
static const site_t sites[EVPY_FAULT_NSITES] = {
    [EVPY_FAULT_RECV] = {"recv", {EINTR, EAGAIN, ECONNRESET, ENOMEM}, 2},
    [EVPY_FAULT_READ] = {"read", {EINTR, EAGAIN}, 2},
    [EVPY_FAULT_SEND] = {"send",
                         {EINTR, EAGAIN, ECONNRESET, EPIPE, ENOBUFS, ENOMEM},
                         2},
    [EVPY_FAULT_WRITE] = {"write", {EINTR, EAGAIN, EPIPE}, 2},
    [EVPY_FAULT_RECVFROM] = {"recvfrom", {EINTR, EAGAIN, ENOMEM}, 2},
    [EVPY_FAULT_SENDTO] = {"sendto", {EINTR, EAGAIN, ENOBUFS, ENOMEM}, 2},
    [EVPY_FAULT_ACCEPT] = {"accept",
                           {EINTR, EAGAIN, EMFILE, ENOBUFS, ENOMEM},
                           2},
    [EVPY_FAULT_CONNECT] = {"connect", {ENOBUFS, ENOMEM}, 0},
    [EVPY_FAULT_WAIT] = {"wait", {EINTR}, 1},
    [EVPY_FAULT_WAKE] = {"wake", {EINTR}, 1},
    [EVPY_FAULT_DRAIN] = {"drain", {EINTR, EAGAIN}, 2},
};

static uint64_t fault_seed;
static uint64_t fault_threshold; /* fail when a draw is below this */
static int fault_transient;
static _Atomic uint64_t fault_draws;
static _Atomic unsigned long fault_counts[EVPY_FAULT_NSITES][8];

/* splitmix64: one draw per call from a shared counter, so the sequence
 * is fixed by the seed and threads (the waker) can draw too. */
static uint64_t
mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void
evpy_faults_configure(uint64_t seed, double rate, int transient)
{
    fault_seed = seed;
    fault_transient = transient;
    if (!(rate > 0)) {
        fault_threshold = 0;
    }
    else if (rate >= 1) {
        fault_threshold = UINT64_MAX;
    }
    else {
        fault_threshold = (uint64_t)(rate * 18446744073709551615.0);
    }
    atomic_store(&fault_draws, 0);
}

int
evpy_fault_pick(int site)
{
    if (fault_threshold == 0) {
        return 0;
    }
    uint64_t x = mix(fault_seed ^ mix(atomic_fetch_add(&fault_draws, 1)));
    if (x >= fault_threshold) {
        return 0;
    }
    const site_t *s = &sites[site];
    int n = 0;
    while (n < 8 && s->errnos[n] != 0) {
        n++;
    }
    if (fault_transient) {
        n = s->ntransient;
    }
    if (n == 0) {
        return 0;
    }
    int k = (int)(mix(x) % (uint64_t)n);
    int e = s->errnos[k];
    atomic_fetch_add(&fault_counts[site][k], 1);
    errno = e;
    return e;
}

unsigned long
evpy_faults_count(int site, int k, int *err)
{
    if (k < 0 || k >= 8 || sites[site].errnos[k] == 0) {
        return 0;
    }
    *err = sites[site].errnos[k];
    return atomic_load(&fault_counts[site][k]);
}

const char *
evpy_faults_site_name(int site)
{
    return sites[site].name;
}
#else
/* ISO C wants something in a translation unit. */
typedef int evpy_faults_unused;
#endif
