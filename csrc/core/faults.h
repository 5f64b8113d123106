/* Test-only fault injection: compiled in only when the build defines
 * EVPY_FAULTS (setup.py does with EVPY_FAULTS=1 in the environment).
 *
 * Each syscall site in the core and the transports is wrapped as
 *     n = EVPY_FAULT(EVPY_FAULT_SEND, send(fd, buf, len, flags));
 * In a normal build that is just the call. In a faults build, with a rate
 * set (module init reads EVPY_FAULT_SEED / EVPY_FAULT_RATE /
 * EVPY_FAULT_MODE; tests call _core.faults_set()), a seeded pseudo-random
 * fraction of the calls is not made: the wrapper returns -1 with an errno
 * that syscall can really return at that site (faults.c lists them).
 * Mode "transient" injects only EINTR/EAGAIN, which must be invisible to
 * programs; "all" adds ENOMEM, ENOBUFS, ECONNRESET, EPIPE, EMFILE...
 */
#ifndef EVPY_FAULTS_H
#define EVPY_FAULTS_H

#include <stdint.h>

enum {
    EVPY_FAULT_RECV,     /* read()/recv() on a socket */
    EVPY_FAULT_READ,     /* read() on a pipe */
    EVPY_FAULT_SEND,     /* send()/sendmsg() on a socket */
    EVPY_FAULT_WRITE,    /* write()/writev() on a pipe */
    EVPY_FAULT_RECVFROM, /* datagram recvfrom() */
    EVPY_FAULT_SENDTO,   /* datagram sendto() */
    EVPY_FAULT_ACCEPT,   /* accept4() */
    EVPY_FAULT_CONNECT,  /* connect() */
    EVPY_FAULT_WAIT,     /* epoll_wait()/epoll_pwait2()/poll() */
    EVPY_FAULT_WAKE,     /* write() to the waker */
    EVPY_FAULT_DRAIN,    /* read() from the waker */
    EVPY_FAULT_NSITES
};

#ifdef EVPY_FAULTS
/* 0, or the errno to fail this call with (errno is set too). */
int evpy_fault_pick(int site);
/* rate: fraction of calls failed (0 = off); transient: EINTR/EAGAIN
 * only. */
void evpy_faults_configure(uint64_t seed, double rate, int transient);
/* How often site failed with its k-th errno (0..7; *err: that errno). */
unsigned long evpy_faults_count(int site, int k, int *err);
const char *evpy_faults_site_name(int site);
#  define EVPY_FAULT(site, call) (evpy_fault_pick(site) ? -1 : (call))
#else
#  define EVPY_FAULT(site, call) (call)
#endif

#endif /* EVPY_FAULTS_H */
