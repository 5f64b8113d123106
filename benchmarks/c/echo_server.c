/* evpy benchmark floor: a plain single-threaded epoll echo server in C.
 *
 *   echo_server (--port P [--host H] | --unix PATH) [--cpu K]
 *               [--backlog N] [--max-seconds T]
 *
 * Binds (port 0 = any free port), then prints "PORT <n>" (or "UNIX <path>")
 * on stdout and serves until SIGTERM/SIGINT, the --max-seconds alarm, or
 * its parent's death (PR_SET_PDEATHSIG).  Level-triggered epoll; reads up to
 * 256 KiB into one shared buffer and writes it straight back; only when the
 * socket doesn't take everything is the rest copied into a per-connection
 * buffer and reading paused until it is flushed (like a transport with
 * flow control).  TCP_NODELAY on accepted sockets, as asyncio and uvloop do.
 *
 * Build: cc -O2 -o echo_server echo_server.c   (no other dependencies)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_SIZE 262144
#define MAX_EVENTS 512

typedef struct {
    unsigned char *pend;     /* unsent rest of an echo, or NULL */
    size_t pend_len, pend_off;
} conn_t;

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int epfd, lfd;
static conn_t *conns;        /* indexed by fd */
static size_t nconns;
static unsigned char buf[BUF_SIZE];

static void close_conn(int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd].pend);
    conns[fd].pend = NULL;
    conns[fd].pend_len = conns[fd].pend_off = 0;
}

static void set_events(int fd, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.fd = fd};
    epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
}

/* write data; keep what doesn't fit.  Returns -1 if the connection died. */
static int echo_out(int fd, const unsigned char *data, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) { off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        close_conn(fd);
        return -1;
    }
    if (off < len) {
        conn_t *c = &conns[fd];
        c->pend = malloc(len - off);
        if (!c->pend) { close_conn(fd); return -1; }
        memcpy(c->pend, data + off, len - off);
        c->pend_len = len - off;
        c->pend_off = 0;
        set_events(fd, EPOLLOUT);          /* pause reading until flushed */
    }
    return 0;
}

static void on_writable(int fd) {
    conn_t *c = &conns[fd];
    while (c->pend_off < c->pend_len) {
        ssize_t n = send(fd, c->pend + c->pend_off, c->pend_len - c->pend_off,
                         MSG_NOSIGNAL);
        if (n > 0) { c->pend_off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        close_conn(fd);
        return;
    }
    free(c->pend);
    c->pend = NULL;
    c->pend_len = c->pend_off = 0;
    set_events(fd, EPOLLIN);
}

static void on_readable(int fd) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) { echo_out(fd, buf, (size_t)n); return; }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    close_conn(fd);                        /* EOF or error */
}

static void on_accept(void) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;                            /* EAGAIN, EMFILE, ... */
        }
        if ((size_t)fd >= nconns) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) close(fd);
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *unix_path = NULL;
    int port = -1, cpu = -1, backlog = 4096, max_seconds = 120;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--unix")) unix_path = v;
        else if (!strcmp(a, "--cpu")) cpu = atoi(v);
        else if (!strcmp(a, "--backlog")) backlog = atoi(v);
        else if (!strcmp(a, "--max-seconds")) max_seconds = atoi(v);
        else { fprintf(stderr, "echo_server: unknown option %s\n", a); return 2; }
    }
    if (port < 0 && !unix_path) {
        fprintf(stderr, "usage: echo_server (--port P | --unix PATH) "
                "[--host H] [--cpu K] [--backlog N] [--max-seconds T]\n");
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 1;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    alarm(max_seconds > 0 ? max_seconds : 120);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            perror("echo_server: sched_setaffinity");
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    nconns = rl.rlim_cur == RLIM_INFINITY ? 1048576 : (size_t)rl.rlim_cur;
    conns = calloc(nconns, sizeof *conns);
    if (!conns) { perror("calloc"); return 1; }

    if (unix_path) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        strncpy(su.sun_path, unix_path, sizeof su.sun_path - 1);
        unlink(unix_path);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&su, sizeof su) < 0) {
            perror("echo_server: bind"); return 1;
        }
    } else {
        struct sockaddr_in si = {.sin_family = AF_INET,
                                 .sin_port = htons(port)};
        if (inet_pton(AF_INET, host, &si.sin_addr) != 1) {
            fprintf(stderr, "echo_server: bad host %s\n", host); return 2;
        }
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&si, sizeof si) < 0) {
            perror("echo_server: bind"); return 1;
        }
    }
    if (listen(lfd, backlog) < 0) { perror("echo_server: listen"); return 1; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e);

    if (unix_path) {
        printf("UNIX %s\n", unix_path);
    } else {
        struct sockaddr_in si;
        socklen_t len = sizeof si;
        getsockname(lfd, (struct sockaddr *)&si, &len);
        printf("PORT %d\n", ntohs(si.sin_port));
    }
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) { on_accept(); continue; }
            if (conns[fd].pend) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_writable(fd);
            } else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(fd);
            }
        }
    }
    if (unix_path) unlink(unix_path);
    return 0;
}
