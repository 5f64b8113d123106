/* evpy benchmark floor: a plain single-threaded epoll UDP echo server in C.
 *
 *   udp_echo_server --port P [--host H] [--cpu K] [--max-seconds T]
 *
 * Binds (port 0 = any free port), prints "PORT <n>" on stdout and serves
 * until SIGTERM/SIGINT, the --max-seconds alarm or its parent's death
 * (PR_SET_PDEATHSIG).  Level-triggered epoll; on readable it does
 * recvfrom() / sendto() per datagram until EAGAIN (at most 64 per wake-up,
 * then back to epoll_wait), the same system calls per datagram as an
 * asyncio datagram transport.  A datagram the socket won't take (EAGAIN)
 * is dropped, as UDP allows.
 *
 * Build: cc -O2 -o udp_echo_server udp_echo_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }
static unsigned char buf[65536];

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = -1, cpu = -1, max_seconds = 120;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--cpu")) cpu = atoi(v);
        else if (!strcmp(a, "--max-seconds")) max_seconds = atoi(v);
        else {
            fprintf(stderr, "udp_echo_server: unknown option %s\n", a);
            return 2;
        }
    }
    if (port < 0) {
        fprintf(stderr, "usage: udp_echo_server --port P [--host H] "
                "[--cpu K] [--max-seconds T]\n");
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 1;
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
            perror("udp_echo_server: sched_setaffinity");
    }
    struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &si.sin_addr) != 1) {
        fprintf(stderr, "udp_echo_server: bad host %s\n", host);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&si, sizeof si) < 0) {
        perror("udp_echo_server: bind");
        return 1;
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
    socklen_t len = sizeof si;
    getsockname(fd, (struct sockaddr *)&si, &len);
    printf("PORT %d\n", ntohs(si.sin_port));
    fflush(stdout);

    struct epoll_event evs[4];
    while (!stop) {
        int n = epoll_wait(epfd, evs, 4, 1000);
        if (n <= 0) continue;
        for (int k = 0; k < 64; k++) {
            struct sockaddr_storage from;
            socklen_t flen = sizeof from;
            ssize_t r = recvfrom(fd, buf, sizeof buf, 0,
                                 (struct sockaddr *)&from, &flen);
            if (r < 0) break;             /* EAGAIN, EINTR, ICMP errors */
            sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
        }
    }
    return 0;
}
