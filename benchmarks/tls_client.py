"""TLS load client for benchmarks/cases_tls.py (stdlib only; run as a
script in its own process, pinned to the client core).

    --mode echo  C connections, each sends SIZE bytes and waits for the
                 whole SIZE-byte echo before sending again; warm-up, then
                 a timed window; req/s, p50/p99 latency, and the server's
                 utime+stime over the window (/proc/<server-pid>/stat)
    --mode bulk  one connection: upload BYTES (the server answers b'K' once
                 it has them all), then download BYTES; MiB/s each way and
                 the server's CPU time for each

Prints one JSON line.  TLS is done by the ssl module (OpenSSL) in C, so
the client costs far less per message than the Python-level TLS record
handling of the servers under test.
"""

import argparse
import json
import os
import selectors
import socket
import ssl
import sys
import time

TICK = os.sysconf('SC_CLK_TCK')


def proc_cpu_s(pid):
    """CPU time of process pid: the sum of its threads' run time from
    /proc/<pid>/task/*/schedstat (ns resolution; a 100 MiB transfer takes
    ~0.1 s, which clock ticks would measure in 10 ms steps), or utime +
    stime from /proc/<pid>/stat where schedstat is missing."""
    try:
        total = 0
        for tid in os.listdir('/proc/%d/task' % pid):
            try:
                with open('/proc/%d/task/%s/schedstat' % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                continue  # the thread exited
        return total / 1e9
    except OSError:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu_s():
    t = os.times()
    return t.user + t.system


def connect(port, ctx):
    sock = socket.create_connection(('127.0.0.1', port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(sock, server_hostname='localhost')


def send_all(ss, data):
    view = memoryview(data)
    while view:
        try:
            n = ss.send(view)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError,
                BlockingIOError):
            selectors.select.select([], [ss], [], 5)
            continue
        view = view[n:]


def echo(args, ctx):
    payload = os.urandom(args.size)
    conns = [connect(args.port, ctx) for _ in range(args.conns)]
    sel = selectors.DefaultSelector()
    state = {}
    for ss in conns:
        ss.setblocking(False)
        sel.register(ss, selectors.EVENT_READ)
        state[ss] = [0, time.perf_counter()]  # bytes received, sent at
        send_all(ss, payload)
    t_start = time.perf_counter()
    t_window = t_start + args.warmup
    t_end = t_window + args.duration
    lat = []
    count = 0
    in_window = False
    cpu0 = scpu0 = None
    size = args.size
    while True:
        now = time.perf_counter()
        if not in_window and now >= t_window:
            in_window = True
            cpu0 = proc_cpu_s(args.server_pid)
            scpu0 = self_cpu_s()
            t_window = now
        if now >= t_end:
            break
        for key, _ in sel.select(1.0):
            ss = key.fileobj
            st = state[ss]
            while True:
                try:
                    data = ss.recv(262144)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not data:
                    raise RuntimeError('server closed the connection')
                st[0] += len(data)
                if st[0] >= size:
                    if st[0] != size:
                        raise RuntimeError('echo longer than the request')
                    now = time.perf_counter()
                    if in_window:
                        count += 1
                        lat.append(now - st[1])
                    st[0] = 0
                    st[1] = now
                    send_all(ss, payload)
    t1 = time.perf_counter()
    cpu1 = proc_cpu_s(args.server_pid)
    scpu1 = self_cpu_s()
    for ss in conns:
        sel.unregister(ss)
        ss.close()
    lat.sort()

    def pct(p):
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6

    dur = t1 - t_window
    return {'ok': True, 'messages': count, 'rps': count / dur,
            'p50_us': pct(0.50), 'p99_us': pct(0.99),
            'server_cpu_s': cpu1 - cpu0, 'client_cpu_s': scpu1 - scpu0,
            'duration_s': dur}


def bulk(args, ctx):
    ss = connect(args.port, ctx)
    total = args.bytes
    chunk = os.urandom(256 * 1024)
    # Upload.
    cpu0 = proc_cpu_s(args.server_pid)
    t0 = time.perf_counter()
    ss.sendall(b'U' + total.to_bytes(8, 'big'))
    left = total
    while left:
        n = min(left, len(chunk))
        ss.sendall(chunk[:n] if n < len(chunk) else chunk)
        left -= n
    if ss.recv(1) != b'K':
        raise RuntimeError('no upload ack')
    t1 = time.perf_counter()
    cpu1 = proc_cpu_s(args.server_pid)
    # Download.
    ss.sendall(b'D' + total.to_bytes(8, 'big'))
    buf = bytearray(1024 * 1024)
    left = total
    while left:
        n = ss.recv_into(buf, min(left, len(buf)))
        if not n:
            raise RuntimeError('server closed during download')
        left -= n
    t2 = time.perf_counter()
    cpu2 = proc_cpu_s(args.server_pid)
    ss.close()
    mib = total / (1024 * 1024)
    return {'ok': True, 'up_mibs': mib / (t1 - t0),
            'down_mibs': mib / (t2 - t1),
            'up_cpu_s': cpu1 - cpu0, 'down_cpu_s': cpu2 - cpu1}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--mode', choices=('echo', 'bulk'), default='echo')
    p.add_argument('--conns', type=int, default=10)
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--bytes', type=int, default=100 * 1024 * 1024)
    p.add_argument('--warmup', type=float, default=0.5)
    p.add_argument('--duration', type=float, default=2.0)
    p.add_argument('--server-pid', type=int, required=True)
    p.add_argument('--cafile', required=True)
    args = p.parse_args()
    ctx = ssl.create_default_context(cafile=args.cafile)
    try:
        res = echo(args, ctx) if args.mode == 'echo' else bulk(args, ctx)
    except Exception as exc:
        res = {'ok': False, 'error': '%s: %s' % (type(exc).__name__, exc)}
    sys.stdout.write(json.dumps(res) + '\n')


if __name__ == '__main__':
    main()
