/* evpy benchmark UDP load generator: single-threaded, one UDP socket.
 *
 *   udp_loadgen --port P [--host H] [--outstanding N] [--size BYTES]
 *               [--warmup S] [--duration S] [--cpu K] [--server-pid PID]
 *               [--max-seconds T] [--resend-ms MS] [--messages N]
 *
 * Keeps N datagrams of S bytes outstanding against a UDP echo server: N
 * slots, each sends one datagram and waits for its echo before sending the
 * next (request/response per slot).  Every datagram starts with a 16-byte
 * header (slot, generation, send time), the rest is a byte pattern; echoes
 * are checked (length, header, first bytes of the pattern).  A slot whose
 * echo hasn't come back after --resend-ms is counted as lost and sends a
 * new datagram (new generation; a late echo of the old one is ignored).
 *
 * Runs --warmup seconds, then measures for --duration seconds: datagrams/s
 * (echoes received in the window), latency histogram (1 us buckets, p50 /
 * p99), and the server's CPU time (sum of its threads' schedstat, ns, as
 * in loadgen.c) at both ends of the window.  With --messages N it stops
 * after N echoes instead.  Receives with recvmmsg and sends with sendmmsg
 * in batches, so the client costs little per datagram.
 *
 * Prints exactly one JSON object on stdout.  Always ends by itself:
 * alarm(--max-seconds) and PR_SET_PDEATHSIG.
 *
 * Build: cc -O2 -o udp_loadgen udp_loadgen.c   (no other dependencies)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_MAX_US 1000000          /* 1 us buckets up to 1 s */
#define BATCH 64
#define HDR 16
#define MAX_SIZE 65507

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_outstanding = 1;
static size_t opt_size = 64;
static double opt_warmup = 0.5;
static double opt_duration = 2.0;
static long opt_messages = 0;
static int opt_cpu = -1;
static long opt_server_pid = 0;
static int opt_max_seconds = 60;
static double opt_resend_ms = 200;

typedef struct {
    uint32_t gen;
    uint64_t t_sent;
} slot_t;

static slot_t *slots;
static uint32_t *hist;
static uint64_t hist_over, max_lat_ns;
static long lost, stale, mismatches, send_errors;
static char first_error[256];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    printf("{\"ok\": false, \"error\": \"%s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void note_error(const char *what, int err) {
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s%s%s", what,
                 err ? ": " : "", err ? strerror(err) : "");
}

/* CPU time of a process in ns, or -1: the sum over its threads of
 * /proc/PID/task/TID/schedstat (first field, ns), as in loadgen.c. */
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

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + 7); }

static void record(uint64_t lat_ns) {
    uint64_t us = lat_ns / 1000;
    if (lat_ns > max_lat_ns) max_lat_ns = lat_ns;
    if (us < HIST_MAX_US) hist[us]++;
    else hist_over++;
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

/* send buffers: one per slot (header differs), pattern after the header */
static unsigned char *sbufs;
static struct mmsghdr smsgs[BATCH];
static struct iovec siov[BATCH];
static int nqueued;
static int fd;

static void flush_sends(void) {
    int off = 0;
    while (off < nqueued) {
        int n = sendmmsg(fd, smsgs + off, (unsigned)(nqueued - off), 0);
        if (n > 0) { off += n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 10);
            continue;
        }
        /* ECONNREFUSED (server gone / not yet there) or similar: the
         * datagram is lost; the resend timer will retry it. */
        send_errors++;
        note_error("sendmmsg", n < 0 ? errno : 0);
        off++;
    }
    nqueued = 0;
}

static void queue_send(int s, uint64_t t) {
    unsigned char *b = sbufs + (size_t)s * opt_size;
    slots[s].gen++;
    slots[s].t_sent = t;
    uint32_t sl = (uint32_t)s, g = slots[s].gen;
    memcpy(b, &sl, 4);
    memcpy(b + 4, &g, 4);
    memcpy(b + 8, &t, 8);
    siov[nqueued].iov_base = b;
    siov[nqueued].iov_len = opt_size;
    memset(&smsgs[nqueued].msg_hdr, 0, sizeof smsgs[nqueued].msg_hdr);
    smsgs[nqueued].msg_hdr.msg_iov = &siov[nqueued];
    smsgs[nqueued].msg_hdr.msg_iovlen = 1;
    nqueued++;
    if (nqueued == BATCH) flush_sends();
}

static void json_str(const char *key, const char *s) {
    printf("\"%s\": \"", key);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        putchar((unsigned char)*s >= 32 ? *s : ' ');
    }
    printf("\"");
}

static void usage(void) {
    fprintf(stderr,
        "usage: udp_loadgen --port P [--host H] [--outstanding N] "
        "[--size BYTES]\n  [--warmup S] [--duration S] [--cpu K] "
        "[--server-pid PID] [--max-seconds T]\n  [--resend-ms MS] [--messages N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) opt_host = v;
        else if (!strcmp(a, "--port")) opt_port = atoi(v);
        else if (!strcmp(a, "--outstanding")) opt_outstanding = atoi(v);
        else if (!strcmp(a, "--size")) opt_size = (size_t)atol(v);
        else if (!strcmp(a, "--warmup")) opt_warmup = atof(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--messages")) opt_messages = atol(v);
        else if (!strcmp(a, "--cpu")) opt_cpu = atoi(v);
        else if (!strcmp(a, "--server-pid")) opt_server_pid = atol(v);
        else if (!strcmp(a, "--max-seconds")) opt_max_seconds = atoi(v);
        else if (!strcmp(a, "--resend-ms")) opt_resend_ms = atof(v);
        else usage();
    }
    if (!opt_port || opt_outstanding < 1 || opt_size < HDR ||
        opt_size > MAX_SIZE)
        usage();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) return 1;
    alarm(opt_max_seconds > 0 ? opt_max_seconds : 60);
    if (opt_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opt_cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            fprintf(stderr, "udp_loadgen: sched_setaffinity(%d): %s\n",
                    opt_cpu, strerror(errno));
    }
    hist = calloc(HIST_MAX_US, sizeof *hist);
    slots = calloc((size_t)opt_outstanding, sizeof *slots);
    sbufs = malloc((size_t)opt_outstanding * opt_size);
    size_t rsize = opt_size + 64;
    unsigned char *rbufs = malloc(BATCH * rsize);
    if (!hist || !slots || !sbufs || !rbufs) die("malloc");
    for (int s = 0; s < opt_outstanding; s++)
        for (size_t i = HDR; i < opt_size; i++)
            sbufs[(size_t)s * opt_size + i] = pattern(i);

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int bufsz = 4 << 20;                  /* best effort; capped by rmem_max */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(opt_port)};
    if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1) {
        errno = EINVAL;
        die("bad host");
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");

    struct mmsghdr rmsgs[BATCH];
    struct iovec riov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = rbufs + (size_t)i * rsize;
        riov[i].iov_len = rsize;
    }

    uint64_t t0 = now_ns();
    uint64_t t_warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
    uint64_t t_measure_end = t_warm_end + (uint64_t)(opt_duration * 1e9);
    uint64_t t_measure_start = 0;
    uint64_t resend_ns = (uint64_t)(opt_resend_ms * 1e6);
    uint64_t next_sweep = t0 + resend_ns;
    int measuring = 0;
    long counted = 0, received = 0;
    long long cpu0 = -1, cpu1 = -1;
    double ccpu0 = 0, ccpu1 = 0;

    for (int s = 0; s < opt_outstanding; s++) queue_send(s, now_ns());
    flush_sends();

    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= t_warm_end) {
            measuring = 1;
            t_measure_start = t;
            cpu0 = proc_cpu_ns(opt_server_pid);
            ccpu0 = self_cpu_s();
        }
        if (measuring && t >= t_measure_end) break;
        if (t >= next_sweep) {            /* lost datagrams: send anew */
            for (int s = 0; s < opt_outstanding; s++)
                if (t - slots[s].t_sent >= resend_ns) {
                    if (measuring) lost++;
                    queue_send(s, t);
                }
            flush_sends();
            next_sweep = t + resend_ns / 4 + 1;
        }
        for (int i = 0; i < BATCH; i++) {
            memset(&rmsgs[i].msg_hdr, 0, sizeof rmsgs[i].msg_hdr);
            rmsgs[i].msg_hdr.msg_iov = &riov[i];
            rmsgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, rmsgs, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                uint64_t next = measuring ? t_measure_end : t_warm_end;
                if (next_sweep < next) next = next_sweep;
                int ms = (int)((next - t) / 1000000) + 1;
                if (ms > 50) ms = 50;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                poll(&p, 1, ms);
                continue;
            }
            /* ECONNREFUSED from an ICMP error: note it, keep going */
            note_error("recvmmsg", errno);
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 10);
            continue;
        }
        t = now_ns();
        for (int i = 0; i < n; i++) {
            unsigned char *b = riov[i].iov_base;
            size_t len = rmsgs[i].msg_len;
            uint32_t sl, g;
            uint64_t ts;
            if (len != opt_size) {
                mismatches++;
                note_error("echo has the wrong length", 0);
                continue;
            }
            memcpy(&sl, b, 4);
            memcpy(&g, b + 4, 4);
            memcpy(&ts, b + 8, 8);
            if (sl >= (uint32_t)opt_outstanding) {
                mismatches++;
                note_error("echo has a bad slot number", 0);
                continue;
            }
            if (g != slots[sl].gen || ts != slots[sl].t_sent) {
                stale++;                  /* late echo of a resent datagram */
                continue;
            }
            size_t chk = opt_size - HDR < 16 ? opt_size - HDR : 16;
            int bad = 0;
            for (size_t k = 0; k < chk; k++)
                if (b[HDR + k] != pattern(HDR + k)) { bad = 1; break; }
            if (bad) {
                mismatches++;
                note_error("echo content differs", 0);
                continue;
            }
            received++;
            if (measuring && t < t_measure_end) {
                record(t - ts);
                counted++;
            }
            if (opt_messages && counted >= opt_messages) {
                t_measure_end = t;        /* --messages: stop here */
                break;
            }
            queue_send((int)sl, t);
        }
        flush_sends();
        if (opt_messages && counted >= opt_messages) break;
    }
    uint64_t t_end = now_ns();
    if (t_end > t_measure_end) t_end = t_measure_end;
    cpu1 = proc_cpu_ns(opt_server_pid);
    ccpu1 = self_cpu_s();
    close(fd);

    double secs = (t_end - t_measure_start) / 1e9;
    double p50, p90, p99, p999;
    pct(0.50, &p50); pct(0.90, &p90); pct(0.99, &p99); pct(0.999, &p999);
    int ok = counted > 0 && mismatches == 0;
    printf("{\"ok\": %s, \"mode\": \"udp\", \"outstanding\": %d, "
           "\"size\": %zu, \"duration_s\": %.6f, \"messages\": %ld, "
           "\"rps\": %.3f, \"p50_us\": %.1f, \"p90_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"lost\": %ld, \"stale\": %ld, \"mismatches\": %ld, "
           "\"send_errors\": %ld, ",
           ok ? "true" : "false", opt_outstanding, opt_size, secs, counted,
           secs > 0 ? counted / secs : 0.0, p50, p90, p99, p999,
           max_lat_ns / 1000.0, lost, stale, mismatches, send_errors);
    if (cpu0 >= 0 && cpu1 >= 0)
        printf("\"server_cpu_s\": %.6f, ", (cpu1 - cpu0) / 1e9);
    printf("\"client_cpu_s\": %.6f, \"cpu_source\": \"schedstat\", ",
           ccpu1 - ccpu0);
    json_str("first_error", first_error);
    if (!ok) {
        printf(", ");
        json_str("error", first_error[0] ? first_error
                 : "no echo in the measured window");
    }
    printf("}\n");
    fflush(stdout);
    return 0;
}
