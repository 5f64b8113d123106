/* evpy benchmark load generator: single-threaded epoll client.
 *
 * Modes
 *   echo  C connections; each sends a message of S bytes and waits for the
 *         complete S-byte echo before sending the next one (request /
 *         response).  Runs --warmup seconds, then measures for --duration
 *         seconds (or until --messages responses were counted).
 *   idle  opens C connections, at most --window of them unconfirmed at a
 *         time; a connection is confirmed when the 1-byte echo of a 1-byte
 *         message came back (connect + accept + first read/write).  Then it
 *         reads the server's RSS, sends 1 byte on every connection and times
 *         until all C echoes are back ("wake").
 *   connect  C sequential connections, one at a time: connect, send 1 byte,
 *         wait for its echo, close (FIN); connections/s and the server's
 *         CPU time over the whole sequence.
 *
 * Prints exactly one JSON object on stdout.  With --server-pid it reads the
 * server's CPU time (the sum over its threads of /proc/PID/task/TID/schedstat,
 * ns) at the start and end of the timed window, and its RSS
 * (/proc/PID/statm) in idle mode.
 *
 * It always ends by itself: alarm(--max-seconds) and PR_SET_PDEATHSIG.
 * Echo and idle connections are closed with SO_LINGER 0 (RST) so that
 * thousands of short benchmark connections don't pile up in TIME_WAIT
 * (connect mode closes normally; loopback reuses TIME_WAIT ports).
 *
 * Build: cc -O2 -o loadgen loadgen.c   (no other dependencies)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HIST_MAX_US 1000000          /* 1 us buckets up to 1 s */
#define MAX_EVENTS 1024

enum { ST_CONNECTING, ST_SENDING, ST_WAITING, ST_IDLE, ST_DEAD };

typedef struct {
    int fd;
    int state;
    size_t sent;       /* bytes of the current message sent */
    size_t rcvd;       /* bytes of the current message received */
    uint64_t t_start;  /* ns, when the current message started */
    uint32_t events;   /* epoll events currently registered */
} conn_t;

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_unix = NULL;
static const char *opt_mode = "echo";
static int opt_conns = 10;
static size_t opt_size = 1024;
static double opt_warmup = 0.5;
static double opt_duration = 2.0;
static long opt_messages = 0;
static int opt_cpu = -1;
static long opt_server_pid = 0;
static int opt_max_seconds = 60;
static int opt_window = 1000;

static int epfd;
static conn_t *conns;
static unsigned char *sendbuf;
static unsigned char *recvbuf;
static size_t recvbuf_size;
static uint32_t *hist;
static uint64_t hist_over, max_lat_ns;
static long errors, connect_errors, mismatches;
static char first_error[256];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void note_error(const char *what, int err) {
    errors++;
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s: %s", what,
                 err ? strerror(err) : "unexpected");
}

static void die(const char *what) {
    printf("{\"ok\": false, \"error\": \"%s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

/* CPU time of a process in ns, or -1: the sum of its threads' run time
 * from /proc/PID/task/TID/schedstat (first field, ns), so a 1 s window is
 * measured to the microsecond, not in 10 ms clock ticks. */
static long long proc_cpu_ns(long pid) {
    char path[96], buf[128];
    if (pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    long long total = 0;
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%ld/task/%.20s/schedstat", pid,
                 de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;                  /* the thread exited */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        total += strtoll(buf, NULL, 10);
        found = 1;
    }
    closedir(d);
    return found ? total : -1;
}

static long long proc_rss_bytes(long pid) {
    char path[64];
    long long size, rss;
    if (pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%ld/statm", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = fscanf(f, "%lld %lld", &size, &rss) == 2;
    fclose(f);
    return ok ? rss * sysconf(_SC_PAGESIZE) : -1;
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void set_events(conn_t *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl MOD");
    c->events = ev;
}

static void kill_conn(conn_t *c) {
    if (c->state == ST_DEAD) return;
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_DEAD;
}

static int start_connect(conn_t *c) {
    int fd;
    if (opt_unix) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strncpy(sa.sun_path, opt_unix, sizeof sa.sun_path - 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
            errno != EINPROGRESS && errno != EAGAIN) {
            int e = errno; close(fd); return -e;
        }
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(opt_port)};
        inet_pton(AF_INET, opt_host, &sa.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return -errno;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
            errno != EINPROGRESS) {
            int e = errno; close(fd); return -e;
        }
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->sent = c->rcvd = 0;
    c->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl ADD");
    return 0;
}

/* returns 0 when connected, -1 on failure (connection killed) */
static int finish_connect(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        connect_errors++;
        note_error("connect", err);
        kill_conn(c);
        return -1;
    }
    return 0;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + 7); }

/* --- echo mode ----------------------------------------------------------- */

static uint64_t t_measure_start, t_measure_end;
static int measuring, stopping;
static long counted;

static void begin_message(conn_t *c) {
    c->state = ST_SENDING;
    c->sent = c->rcvd = 0;
    c->t_start = now_ns();
}

/* push as much of the current message as the socket takes */
static void pump_send(conn_t *c) {
    while (c->sent < opt_size) {
        ssize_t n = send(c->fd, sendbuf + c->sent, opt_size - c->sent,
                         MSG_NOSIGNAL);
        if (n > 0) { c->sent += (size_t)n; continue; }
        if (n < 0 && errno == EAGAIN) break;
        if (n < 0 && errno == EINTR) continue;
        note_error("send", n < 0 ? errno : 0);
        kill_conn(c);
        return;
    }
    set_events(c, c->sent < opt_size ? (EPOLLIN | EPOLLOUT) : EPOLLIN);
}

static void record(uint64_t lat_ns) {
    uint64_t us = lat_ns / 1000;
    if (lat_ns > max_lat_ns) max_lat_ns = lat_ns;
    if (us < HIST_MAX_US) hist[us]++;
    else hist_over++;
}

static void on_echo_readable(conn_t *c) {
    for (;;) {
        ssize_t n = recv(c->fd, recvbuf, recvbuf_size, 0);
        if (n > 0) {
            size_t k = (size_t)n;
            if (c->rcvd + k > c->sent) {      /* more than we sent */
                mismatches++;
                note_error("echo longer than the request", 0);
                kill_conn(c);
                return;
            }
            /* spot-check the content: first 16 bytes of every chunk */
            size_t chk = k < 16 ? k : 16;
            for (size_t i = 0; i < chk; i++)
                if (recvbuf[i] != pattern(c->rcvd + i)) {
                    mismatches++;
                    note_error("echo content differs", 0);
                    kill_conn(c);
                    return;
                }
            c->rcvd += k;
            if (c->rcvd == opt_size) {
                uint64_t t = now_ns();
                if (measuring && t < t_measure_end) {
                    record(t - c->t_start);
                    counted++;
                    if (opt_messages && counted >= opt_messages) {
                        t_measure_end = t;
                        stopping = 1;
                    }
                }
                if (stopping) { c->state = ST_IDLE; set_events(c, EPOLLIN); return; }
                begin_message(c);
                pump_send(c);
                if (c->state == ST_DEAD) return;
            }
            if ((size_t)n < recvbuf_size) return;   /* probably drained */
            continue;
        }
        if (n < 0 && errno == EAGAIN) return;
        if (n < 0 && errno == EINTR) continue;
        note_error(n == 0 ? "server closed the connection" : "recv",
                   n < 0 ? errno : 0);
        kill_conn(c);
        return;
    }
}

static long alive_count(void) {
    long k = 0;
    for (int i = 0; i < opt_conns; i++) k += conns[i].state != ST_DEAD;
    return k;
}

static void pct(double q, double *out_us) {
    uint64_t total = hist_over;
    for (int i = 0; i < HIST_MAX_US; i++) total += hist[i];
    if (!total) { *out_us = -1; return; }
    uint64_t rank = (uint64_t)(q * total + 0.999999999);
    if (rank < 1) rank = 1;
    uint64_t acc = 0;
    for (int i = 0; i < HIST_MAX_US; i++) {
        acc += hist[i];
        if (acc >= rank) { *out_us = i + 0.5; return; }
    }
    *out_us = max_lat_ns / 1000.0;
}

static void json_str(const char *key, const char *s) {
    printf("\"%s\": \"", key);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        putchar((unsigned char)*s >= 32 ? *s : ' ');
    }
    printf("\"");
}

static int run_echo(void) {
    struct epoll_event evs[MAX_EVENTS];
    int connected = 0;
    hist = calloc(HIST_MAX_US, sizeof *hist);
    sendbuf = malloc(opt_size);
    recvbuf_size = opt_size > 262144 ? opt_size : 262144;
    recvbuf = malloc(recvbuf_size);
    if (!hist || !sendbuf || !recvbuf) die("malloc");
    for (size_t i = 0; i < opt_size; i++) sendbuf[i] = pattern(i);

    for (int i = 0; i < opt_conns; i++) {
        int r = start_connect(&conns[i]);
        if (r < 0) {
            errno = -r;
            die("connect");
        }
    }
    /* wait until every connection is up (5 s at most) */
    uint64_t deadline = now_ns() + 5000000000ull;
    while (connected + connect_errors < opt_conns && now_ns() < deadline) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state != ST_CONNECTING) continue;
            if (finish_connect(c) == 0) {
                c->state = ST_IDLE;
                set_events(c, EPOLLIN);
                connected++;
            }
        }
    }
    if (connected < opt_conns) {
        printf("{\"ok\": false, \"error\": \"only %d of %d connections "
               "established (%s)\"}\n", connected, opt_conns,
               first_error[0] ? first_error : "timeout");
        return 1;
    }
    uint64_t t0 = now_ns();
    uint64_t t_warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
    t_measure_end = t_warm_end + (uint64_t)(opt_duration * 1e9);
    long long cpu0 = -1, cpu1 = -1;
    double ccpu0 = 0, ccpu1 = 0;
    if (opt_warmup <= 0) {
        measuring = 1;
        t_measure_start = t0;
        cpu0 = proc_cpu_ns(opt_server_pid);
        ccpu0 = self_cpu_s();
    }
    for (int i = 0; i < opt_conns; i++) {
        begin_message(&conns[i]);
        pump_send(&conns[i]);
    }
    while (!stopping) {
        uint64_t t = now_ns();
        if (!measuring && t >= t_warm_end) {
            measuring = 1;
            t_measure_start = t;
            cpu0 = proc_cpu_ns(opt_server_pid);
            ccpu0 = self_cpu_s();
        }
        if (measuring && t >= t_measure_end) break;
        uint64_t next = measuring ? t_measure_end : t_warm_end;
        int timeout_ms = (int)((next - t) / 1000000) + 1;
        if (timeout_ms > 100) timeout_ms = 100;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == ST_DEAD) continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_echo_readable(c);
            if (c->state == ST_SENDING && (evs[i].events & EPOLLOUT))
                pump_send(c);
        }
        if (!alive_count()) break;
    }
    uint64_t t_end = now_ns();
    if (t_end > t_measure_end) t_end = t_measure_end;
    if (measuring) {
        cpu1 = proc_cpu_ns(opt_server_pid);
        ccpu1 = self_cpu_s();
    }
    long alive = alive_count();
    for (int i = 0; i < opt_conns; i++) kill_conn(&conns[i]);

    double secs = measuring ? (t_end - t_measure_start) / 1e9 : 0;
    double p50, p90, p99, p999;
    pct(0.50, &p50); pct(0.90, &p90); pct(0.99, &p99); pct(0.999, &p999);
    printf("{\"ok\": %s, \"mode\": \"echo\", \"conns\": %d, \"size\": %zu, "
           "\"alive\": %ld, \"duration_s\": %.6f, \"messages\": %ld, "
           "\"rps\": %.3f, \"mb_per_s\": %.3f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
           "\"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"errors\": %ld, \"mismatches\": %ld, ",
           (counted > 0 && alive == opt_conns) ? "true" : "false",
           opt_conns, opt_size, alive, secs, counted,
           secs > 0 ? counted / secs : 0.0,
           secs > 0 ? counted * (double)opt_size / secs / 1e6 : 0.0,
           p50, p90, p99, p999, max_lat_ns / 1000.0, errors, mismatches);
    if (cpu0 >= 0 && cpu1 >= 0)
        printf("\"server_cpu_s\": %.6f, ", (cpu1 - cpu0) / 1e9);
    printf("\"client_cpu_s\": %.6f, \"cpu_source\": \"schedstat\", ",
           ccpu1 - ccpu0);
    json_str("first_error", first_error);
    if (counted == 0 || alive != opt_conns) {
        printf(", ");
        json_str("error", first_error[0] ? first_error
                 : counted == 0 ? "no response in the measured window"
                                : "connections lost");
    }
    printf("}\n");
    return 0;
}

/* --- idle mode ----------------------------------------------------------- */

static int run_idle(void) {
    struct epoll_event evs[MAX_EVENTS];
    unsigned char b = 'x', rb[64];
    long started = 0, pending = 0, confirmed = 0;

    usleep(50000);              /* let the server settle before the baseline */
    long long rss0 = proc_rss_bytes(opt_server_pid);
    long long cpu0 = proc_cpu_ns(opt_server_pid);
    uint64_t t0 = now_ns();
    uint64_t deadline = t0 + (uint64_t)(opt_duration * 1e9);
    while (confirmed < opt_conns) {
        while (started < opt_conns && pending < opt_window) {
            int r = start_connect(&conns[started]);
            if (r < 0) {
                errno = -r;
                die("connect");
            }
            started++;
            pending++;
        }
        if (now_ns() > deadline) break;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == ST_CONNECTING) {
                if (finish_connect(c) < 0) { pending--; continue; }
                if (send(c->fd, &b, 1, MSG_NOSIGNAL) != 1) {
                    note_error("send", errno);
                    kill_conn(c); pending--; continue;
                }
                c->state = ST_WAITING;
                set_events(c, EPOLLIN);
            } else if (c->state == ST_WAITING) {
                ssize_t k = recv(c->fd, rb, sizeof rb, 0);
                if (k == 1) {
                    c->state = ST_IDLE;
                    pending--;
                    confirmed++;
                } else if (k < 0 && errno == EAGAIN) {
                    continue;
                } else {
                    note_error(k == 0 ? "server closed" : "recv",
                               k < 0 ? errno : 0);
                    kill_conn(c); pending--;
                }
            }
        }
        if (started == opt_conns && pending == 0)
            break;              /* the rest failed */
    }
    uint64_t t1 = now_ns();
    long long cpu1 = proc_cpu_ns(opt_server_pid);
    usleep(100000);             /* idle: let the server finish any work */
    long long rss1 = proc_rss_bytes(opt_server_pid);

    /* wake: 1 byte on every connection, wait for every echo */
    uint64_t tw0 = 0, tw1 = 0;
    long woken = 0;
    long long cpu2 = -1, cpu3 = -1;
    if (confirmed == opt_conns) {
        cpu2 = proc_cpu_ns(opt_server_pid);
        tw0 = now_ns();
        for (int i = 0; i < opt_conns; i++) {
            conn_t *c = &conns[i];
            if (send(c->fd, &b, 1, MSG_NOSIGNAL) != 1) {
                note_error("send (wake)", errno);
                kill_conn(c);
                continue;
            }
            c->state = ST_WAITING;
        }
        uint64_t wdeadline = now_ns() + 20000000000ull;
        while (woken < opt_conns && now_ns() < wdeadline) {
            int n = epoll_wait(epfd, evs, MAX_EVENTS, 100);
            for (int i = 0; i < n; i++) {
                conn_t *c = evs[i].data.ptr;
                if (c->state != ST_WAITING) continue;
                ssize_t k = recv(c->fd, rb, sizeof rb, 0);
                if (k == 1) { c->state = ST_IDLE; woken++; }
                else if (k < 0 && errno == EAGAIN) continue;
                else { note_error("recv (wake)", k < 0 ? errno : 0); kill_conn(c); }
            }
        }
        tw1 = now_ns();
        cpu3 = proc_cpu_ns(opt_server_pid);
    }
    for (int i = 0; i < started; i++) kill_conn(&conns[i]);

    int ok = confirmed == opt_conns && woken == opt_conns;
    double accept_s = (t1 - t0) / 1e9;
    printf("{\"ok\": %s, \"mode\": \"idle\", \"conns\": %d, \"window\": %d, "
           "\"confirmed\": %ld, \"woken\": %ld, \"accept_s\": %.6f, "
           "\"accept_rate\": %.1f, \"rss_before\": %lld, \"rss_after\": %lld, "
           "\"rss_per_conn\": %.1f, \"wake_s\": %.6f, "
           "\"accept_cpu_s\": %.6f, \"wake_cpu_s\": %.6f, "
           "\"errors\": %ld, \"connect_errors\": %ld, ",
           ok ? "true" : "false", opt_conns, opt_window, confirmed, woken,
           accept_s, confirmed / accept_s, rss0, rss1,
           confirmed ? (double)(rss1 - rss0) / confirmed : 0.0,
           tw1 > tw0 ? (tw1 - tw0) / 1e9 : 0.0,
           (cpu0 >= 0 && cpu1 >= 0) ? (cpu1 - cpu0) / 1e9 : -1.0,
           (cpu2 >= 0 && cpu3 >= 0) ? (cpu3 - cpu2) / 1e9 : -1.0,
           errors, connect_errors);
    json_str("first_error", first_error);
    if (!ok) {
        char why[400];
        snprintf(why, sizeof why, "%ld/%d confirmed, %ld woken%s%s",
                 confirmed, opt_conns, woken,
                 first_error[0] ? ": " : "", first_error);
        printf(", ");
        json_str("error", why);
    }
    printf("}\n");
    return 0;
}

/* --- connect mode ------------------------------------------------------- */

/* --conns N sequential connections, one at a time: blocking connect(),
 * send 1 byte, wait for its echo, close() (a normal FIN close).  Times the
 * whole sequence and reads the server's CPU time around it. */
static int run_connect(void) {
    unsigned char b = 'x', rb[64];
    long done = 0;
    struct timeval tv = {10, 0};
    hist = calloc(HIST_MAX_US, sizeof *hist);
    if (!hist) die("malloc");
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(opt_port)};
    inet_pton(AF_INET, opt_host, &sa.sin_addr);
    long long cpu0 = proc_cpu_ns(opt_server_pid);
    double ccpu0 = self_cpu_s();
    uint64_t t0 = now_ns();
    for (long i = 0; i < opt_conns; i++) {
        uint64_t ts = now_ns();
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) { note_error("socket", errno); break; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            connect_errors++;
            note_error("connect", errno);
            close(fd);
            break;
        }
        if (send(fd, &b, 1, MSG_NOSIGNAL) != 1) {
            note_error("send", errno);
            close(fd);
            break;
        }
        ssize_t k = recv(fd, rb, sizeof rb, 0);
        if (k != 1) {
            note_error(k == 0 ? "server closed" : "recv", k < 0 ? errno : 0);
            close(fd);
            break;
        }
        close(fd);
        record(now_ns() - ts);
        done++;
    }
    uint64_t t1 = now_ns();
    long long cpu1 = proc_cpu_ns(opt_server_pid);
    double ccpu1 = self_cpu_s();
    double secs = (t1 - t0) / 1e9;
    double p50, p99;
    pct(0.50, &p50); pct(0.99, &p99);
    int ok = done == opt_conns;
    printf("{\"ok\": %s, \"mode\": \"connect\", \"conns\": %d, "
           "\"done\": %ld, \"duration_s\": %.6f, \"rate\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"client_cpu_s\": %.6f, ",
           ok ? "true" : "false", opt_conns, done, secs,
           secs > 0 ? done / secs : 0.0, p50, p99, ccpu1 - ccpu0);
    if (cpu0 >= 0 && cpu1 >= 0)
        printf("\"server_cpu_s\": %.6f, ", (cpu1 - cpu0) / 1e9);
    json_str("first_error", first_error);
    if (!ok) {
        printf(", ");
        json_str("error", first_error[0] ? first_error : "incomplete");
    }
    printf("}\n");
    return 0;
}

/* --- main ---------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
        "usage: loadgen [--mode echo|idle|connect] (--port P [--host H] | --unix PATH)\n"
        "  [--conns C] [--size BYTES] [--warmup S] [--duration S]\n"
        "  [--messages N] [--window W] [--cpu K] [--server-pid PID]\n"
        "  [--max-seconds T]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--mode")) opt_mode = v;
        else if (!strcmp(a, "--host")) opt_host = v;
        else if (!strcmp(a, "--port")) opt_port = atoi(v);
        else if (!strcmp(a, "--unix")) opt_unix = v;
        else if (!strcmp(a, "--conns")) opt_conns = atoi(v);
        else if (!strcmp(a, "--size")) opt_size = (size_t)atol(v);
        else if (!strcmp(a, "--warmup")) opt_warmup = atof(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--messages")) opt_messages = atol(v);
        else if (!strcmp(a, "--window")) opt_window = atoi(v);
        else if (!strcmp(a, "--cpu")) opt_cpu = atoi(v);
        else if (!strcmp(a, "--server-pid")) opt_server_pid = atol(v);
        else if (!strcmp(a, "--max-seconds")) opt_max_seconds = atoi(v);
        else usage();
    }
    if ((!opt_port && !opt_unix) || opt_conns < 1 || opt_size < 1 ||
        opt_window < 1)
        usage();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) return 1;          /* parent already gone */
    alarm(opt_max_seconds > 0 ? opt_max_seconds : 60);
    signal(SIGPIPE, SIG_IGN);
    if (opt_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opt_cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            fprintf(stderr, "loadgen: sched_setaffinity(%d): %s\n", opt_cpu,
                    strerror(errno));
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        (rlim_t)opt_conns + 16 > rl.rlim_cur) {
        printf("{\"ok\": false, \"error\": \"%d connections need more than "
               "the open-file limit %ld\"}\n", opt_conns, (long)rl.rlim_cur);
        return 1;
    }
    conns = calloc((size_t)opt_conns, sizeof *conns);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || epfd < 0) die("setup");
    int rc;
    if (!strcmp(opt_mode, "echo")) rc = run_echo();
    else if (!strcmp(opt_mode, "idle")) rc = run_idle();
    else if (!strcmp(opt_mode, "connect")) rc = run_connect();
    else usage(), rc = 2;
    fflush(stdout);
    return rc;
}
