/* Unit tests of the pure-C reactor core (csrc/core): ring, timer heap, fd
 * table, every poller backend compiled in, waker, clock. A runner of its
 * own: each test is a function, CHECK reports file:line and counts the
 * failures. Built and run by tests/c/run.sh (ASan + UBSan).
 */
#include "clock.h"
#include "config.h"
#include "fdtable.h"
#include "poller.h"
#include "ring.h"
#include "timerheap.h"
#include "waker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int failures;
static const char *current;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "FAIL %s: %s:%d: %s\n", current, __FILE__, __LINE__, \
              #cond);                                                      \
      failures++;                                                          \
    }                                                                      \
  } while (0)

/* -- ring ----------------------------------------------------------------- */

static void
test_ring_pointers_fifo_across_growth(void)
{
    evpy_ring_t r;
    evpy_ring_init(&r, sizeof(void *), 4);
    uintptr_t next_in = 1, next_out = 1;
    /* Interleave pushes and pops so the ring wraps before each growth. */
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 7; i++) {
            CHECK(evpy_ring_push(&r, (void *)next_in++) == 0);
        }
        for (int i = 0; i < 5; i++) {
            CHECK((uintptr_t)evpy_ring_pop(&r) == next_out++);
        }
        for (size_t i = 0; i < r.len; i++) {
            CHECK((uintptr_t)evpy_ring_at(&r, i) == next_out + i);
        }
    }
    CHECK(r.len == 100);
    CHECK((r.cap & (r.cap - 1)) == 0 && r.cap >= r.len);
    while (r.len) {
        CHECK((uintptr_t)evpy_ring_pop(&r) == next_out++);
    }
    CHECK(next_out == next_in);
    evpy_ring_free(&r);
    CHECK(r.items == NULL && r.len == 0 && r.cap == 0);
}

typedef struct {
    int a;
    double b;
    char c[13];
} item_t;

static void
test_ring_structs_and_drop_back(void)
{
    evpy_ring_t r;
    evpy_ring_init(&r, sizeof(item_t), 2);
    for (int i = 0; i < 3; i++) {
        item_t *it = evpy_ring_push_slot(&r);
        it->a = i;
        it->b = i * 0.5;
        snprintf(it->c, sizeof(it->c), "n%d", i);
    }
    evpy_ring_drop_front(&r); /* 0 */
    for (int i = 3; i < 20; i++) {
        item_t *it = evpy_ring_push_slot(&r);
        CHECK(it != NULL);
        it->a = i;
        it->b = i * 0.5;
        snprintf(it->c, sizeof(it->c), "n%d", i);
    }
    evpy_ring_drop_back(&r); /* 19 */
    evpy_ring_drop_back(&r); /* 18 */
    CHECK(r.len == 17);
    for (size_t i = 0; i < r.len; i++) {
        item_t *it = evpy_ring_slot(&r, i);
        char want[13];
        snprintf(want, sizeof(want), "n%d", (int)i + 1);
        CHECK(it->a == (int)i + 1 && it->b == it->a * 0.5
              && strcmp(it->c, want) == 0);
    }
    evpy_ring_free(&r);
}

/* -- timer heap ----------------------------------------------------------- */

static void
test_timerheap_order_and_remove(void)
{
    enum { N = 500 };
    static evpy_timer_t t[N];
    evpy_timerheap_t h;
    evpy_timerheap_init(&h);
    srand(7);
    for (int i = 0; i < N; i++) {
        t[i].index = EVPY_TIMER_UNSCHEDULED;
        t[i].deadline_ns = rand() % 50; /* many equal deadlines */
        CHECK(evpy_timerheap_push(&h, &t[i]) == 0);
        CHECK(evpy_timer_scheduled(&t[i]));
    }
    /* Remove every third timer, then pop the rest. */
    for (int i = 0; i < N; i += 3) {
        CHECK(evpy_timerheap_remove(&h, &t[i]) == 1);
        CHECK(!evpy_timer_scheduled(&t[i]));
        CHECK(evpy_timerheap_remove(&h, &t[i]) == 0);
    }
    int64_t last_deadline = -1;
    uint64_t last_seq = 0;
    size_t popped = 0;
    evpy_timer_t *x;
    while ((x = evpy_timerheap_pop(&h)) != NULL) {
        CHECK((x - t) % 3 != 0);
        CHECK(x->deadline_ns >= last_deadline);
        if (x->deadline_ns == last_deadline) {
            CHECK(x->seq > last_seq); /* equal deadlines: FIFO */
        }
        last_deadline = x->deadline_ns;
        last_seq = x->seq;
        popped++;
    }
    CHECK(popped == N - (N + 2) / 3);
    CHECK(evpy_timerheap_peek(&h) == NULL);
    evpy_timerheap_free(&h);
}

/* -- fd table over a recording poller ------------------------------------- */

typedef struct {
    evpy_poller_t base;
    int calls;
    int fail_fd; /* ctl on this fd fails with EPERM */
    int last_fd;
    unsigned last_old, last_new;
    uint32_t last_gen;
} rec_poller_t;

static int
rec_ctl(evpy_poller_t *base, int fd, unsigned old, unsigned new_, uint32_t gen)
{
    rec_poller_t *p = (rec_poller_t *)base;
    p->calls++;
    p->last_fd = fd;
    p->last_old = old;
    p->last_new = new_;
    p->last_gen = gen;
    return fd == p->fail_fd ? -EPERM : 0;
}

static const evpy_poller_ops_t rec_ops = {.name = "rec", .ctl = rec_ctl};

static void
test_fdtable_batches_and_generations(void)
{
    rec_poller_t p = {.base = {.ops = &rec_ops}, .fail_fd = -1};
    evpy_fdtable_t t;
    evpy_fdtable_init(&t);
    /* Pause and resume within one iteration: no syscall. */
    CHECK(evpy_fdtable_want(&t, 5, EVPY_READ) == 0);
    CHECK(evpy_fdtable_want(&t, 5, 0) == 0);
    CHECK(evpy_fdtable_flush(&t, &p.base) == 0);
    CHECK(p.calls == 0 && t.nactive == 0);
    /* A new registration gets a new generation. */
    CHECK(evpy_fdtable_want(&t, 5, EVPY_READ) == 0);
    CHECK(evpy_fdtable_want(&t, 300, EVPY_WRITE) == 0); /* grows */
    CHECK(evpy_fdtable_flush(&t, &p.base) == 0);
    CHECK(p.calls == 2 && t.nactive == 2);
    uint32_t gen1 = evpy_fdtable_get(&t, 5)->gen;
    evpy_event_t ev = {.fd = 5, .gen = gen1, .events = EVPY_READ};
    CHECK(evpy_fdtable_event_current(&t, &ev));
    /* A change of interest keeps it. */
    CHECK(evpy_fdtable_want(&t, 5, EVPY_READ | EVPY_WRITE) == 0);
    CHECK(evpy_fdtable_apply(&t, &p.base, 5) == 0);
    CHECK(p.last_old == EVPY_READ && p.last_gen == gen1);
    /* Unregistered, then registered again (the fd number reused): events
     * of the old registration are stale. */
    CHECK(evpy_fdtable_want(&t, 5, 0) == 0);
    CHECK(evpy_fdtable_apply(&t, &p.base, 5) == 0);
    CHECK(!evpy_fdtable_event_current(&t, &ev));
    CHECK(evpy_fdtable_want(&t, 5, EVPY_READ) == 0);
    CHECK(evpy_fdtable_flush(&t, &p.base) == 0);
    CHECK(evpy_fdtable_get(&t, 5)->gen != gen1);
    CHECK(!evpy_fdtable_event_current(&t, &ev));
    ev.gen = evpy_fdtable_get(&t, 5)->gen;
    CHECK(evpy_fdtable_event_current(&t, &ev));
    ev.fd = 100000;
    CHECK(!evpy_fdtable_event_current(&t, &ev));
    /* A refused change is rolled back. */
    p.fail_fd = 7;
    CHECK(evpy_fdtable_want(&t, 7, EVPY_READ) == 0);
    CHECK(evpy_fdtable_apply(&t, &p.base, 7) == -EPERM);
    CHECK(evpy_fdtable_get(&t, 7)->want == 0 && t.nactive == 2);
    CHECK(evpy_fdtable_want(&t, -1, EVPY_READ) == -EBADF);
    evpy_fdtable_free(&t);
}

/* -- pollers -------------------------------------------------------------- */

static const char *const backends[] = {
#if EVPY_HAVE_EPOLL
    "epoll",
#endif
#if EVPY_HAVE_KQUEUE
    "kqueue",
#endif
    "poll",
};

static void
test_poller_backend(const char *name)
{
    evpy_poller_t *p;
    CHECK(evpy_poller_open(&p, name) == 0);
    CHECK(strcmp(evpy_poller_name(p), name) == 0);
    evpy_event_t ev[8];
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    /* Nothing registered, nothing ready: a zero timeout returns 0. */
    CHECK(evpy_poller_wait(p, ev, 8, 0) == 0);
    CHECK(evpy_poller_ctl(p, sv[0], 0, EVPY_READ, 41) == 0);
    CHECK(evpy_poller_wait(p, ev, 8, 1000000) == 0); /* 1 ms timeout */
    CHECK(write(sv[1], "x", 1) == 1);
    int n = evpy_poller_wait(p, ev, 8, -1);
    CHECK(n == 1 && ev[0].fd == sv[0] && ev[0].gen == 41
          && ev[0].events == EVPY_READ);
    /* Level-triggered: still ready; writable too once asked. */
    CHECK(evpy_poller_ctl(p, sv[0], EVPY_READ, EVPY_READ | EVPY_WRITE, 41)
          == 0);
    n = evpy_poller_wait(p, ev, 8, 0);
    unsigned seen = 0;
    for (int i = 0; i < n; i++) {
        CHECK(ev[i].fd == sv[0] && ev[i].gen == 41);
        seen |= ev[i].events;
    }
    CHECK(seen == (EVPY_READ | EVPY_WRITE));
    CHECK(evpy_poller_ctl(p, sv[0], EVPY_READ | EVPY_WRITE, 0, 41) == 0);
    CHECK(evpy_poller_wait(p, ev, 8, 0) == 0);
    /* Hang-up is reported as readable and writable. */
    CHECK(evpy_poller_ctl(p, sv[0], 0, EVPY_READ, 42) == 0);
    close(sv[1]);
    n = evpy_poller_wait(p, ev, 8, 0);
    CHECK(n >= 1 && ev[0].fd == sv[0] && (ev[0].events & EVPY_READ)
          && ev[0].gen == 42);
    CHECK(evpy_poller_ctl(p, sv[0], EVPY_READ, 0, 42) == 0);
    close(sv[0]);
    /* Regular files cannot be polled; closed fds neither. */
    char path[] = "/tmp/evpy-ctest-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK(evpy_poller_ctl(p, fd, 0, EVPY_READ, 1) == -EPERM);
    close(fd);
    CHECK(evpy_poller_ctl(p, fd, 0, EVPY_READ, 1) == -EBADF);
    /* Removing an fd closed behind our back is not an error. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(evpy_poller_ctl(p, sv[0], 0, EVPY_READ, 2) == 0);
    close(sv[0]);
    CHECK(evpy_poller_ctl(p, sv[0], EVPY_READ, 0, 2) == 0);
    close(sv[1]);
    evpy_poller_close(p);
}

/* epoll keeps the registration of a file whose fd was closed while a dup
 * keeps it open; a new file under the same number gets its own. The
 * generation tells their events apart. */
static void
test_poller_stale_registration(const char *name)
{
    evpy_poller_t *p;
    CHECK(evpy_poller_open(&p, name) == 0);
    int a[2], b[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
    int fd = a[0];
    int keep = dup(fd);
    CHECK(evpy_poller_ctl(p, fd, 0, EVPY_READ, 1) == 0);
    close(fd);                                           /* description kept */
    CHECK(evpy_poller_ctl(p, fd, EVPY_READ, 0, 1) == 0); /* EBADF: ok */
    CHECK(dup2(b[0], fd) == fd); /* same number, new file */
    CHECK(evpy_poller_ctl(p, fd, 0, EVPY_READ, 2) == 0);
    CHECK(write(a[1], "x", 1) == 1); /* the old file: ready */
    evpy_event_t ev[8];
    int n = evpy_poller_wait(p, ev, 8, 0);
    if (strcmp(name, "epoll") == 0) {
        CHECK(n == 1); /* the old file's registration, still there */
    }
    else {
        CHECK(n == 0); /* poll watches numbers; kqueue drops on close */
    }
    for (int i = 0; i < n; i++) {
        /* Whatever reports fd must say which registration it is. */
        CHECK(ev[i].fd == fd);
        CHECK(ev[i].gen == 1 || ev[i].gen == 2);
        CHECK(ev[i].gen != 2); /* the new file has nothing to read */
    }
    CHECK(evpy_poller_ctl(p, fd, EVPY_READ, 0, 2) == 0);
    close(fd);
    close(keep);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    evpy_poller_close(p);
}

static void
test_poller_unknown_name(void)
{
    evpy_poller_t *p = NULL;
    CHECK(evpy_poller_open(&p, "nope") == -EINVAL);
    CHECK(evpy_poller_open(&p, NULL) == 0);
    CHECK(strcmp(evpy_poller_name(p), backends[0]) == 0);
    evpy_poller_close(p);
}

/* -- waker ---------------------------------------------------------------- */

static void
test_waker(const char *name)
{
    evpy_poller_t *p;
    evpy_waker_t w;
    CHECK(evpy_poller_open(&p, name) == 0);
    CHECK(evpy_waker_open(&w) == 0);
    CHECK(evpy_poller_ctl(p, w.rfd, 0, EVPY_READ, 0) == 0);
    evpy_event_t ev[4];
    CHECK(evpy_poller_wait(p, ev, 4, 0) == 0);
    errno = ERANGE;
    for (int i = 0; i < 100000; i++) { /* fills a pipe: EAGAIN inside */
        evpy_waker_wake(&w);
    }
    CHECK(errno == ERANGE); /* left as it was */
    CHECK(evpy_poller_wait(p, ev, 4, -1) == 1 && ev[0].fd == w.rfd);
    errno = EDOM;
    evpy_waker_drain(&w);
    CHECK(errno == EDOM);
    CHECK(evpy_poller_wait(p, ev, 4, 0) == 0); /* drained in one call */
    evpy_waker_drain(&w);                      /* empty: harmless */
    CHECK(evpy_poller_ctl(p, w.rfd, EVPY_READ, 0, 0) == 0);
    evpy_waker_close(&w);
    CHECK(w.rfd == -1 && w.wfd == -1);
    evpy_poller_close(p);
}

/* -- clock ---------------------------------------------------------------- */

static void
test_clock(void)
{
    int64_t a = evpy_clock_now_ns(), b = evpy_clock_now_ns();
    CHECK(a > 0 && b >= a);
    CHECK(evpy_clock_sec_to_ns_ceil(1.5) == 1500000000);
    CHECK(evpy_clock_sec_to_ns_ceil(1e-10) == 1); /* rounded up */
    CHECK(evpy_clock_sec_to_ns_ceil(1e300) == INT64_MAX);
    CHECK(evpy_clock_sec_to_ns_ceil(-1e300) == INT64_MIN + 1);
}

#define RUN(call)    \
  do {               \
    current = #call; \
    call;            \
    ntests++;        \
  } while (0)

int
main(void)
{
    int ntests = 0;
    RUN(test_ring_pointers_fifo_across_growth());
    RUN(test_ring_structs_and_drop_back());
    RUN(test_timerheap_order_and_remove());
    RUN(test_fdtable_batches_and_generations());
    RUN(test_poller_unknown_name());
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        current = backends[i];
        RUN(test_poller_backend(backends[i]));
        RUN(test_poller_stale_registration(backends[i]));
        RUN(test_waker(backends[i]));
    }
    RUN(test_clock());
    printf("csrc/core: %d tests, %d failed checks\n", ntests, failures);
    return failures ? 1 : 0;
}
