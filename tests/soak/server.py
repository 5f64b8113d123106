"""The soak's echo server (a process of its own; see soak.py).

usage: server.py LOOP [--tls CERT KEY]

Prints one JSON line {"port": ...} once listening, then answers each
line on stdin ("stats") with a JSON line: RSS, open fds, open
connections, connections seen, bytes echoed, connection errors. Echoes
with flow control (pauses reading while its write buffer is over the
high-water mark) and closes a connection after echoing its EOF.
"""
import asyncio
import json
import os
import resource
import ssl
import sys
import threading


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fd_count():
    return len(os.listdir("/proc/self/fd"))


class Stats:
    def __init__(self):
        self.open = 0
        self.seen = 0
        self.echoed = 0
        self.errors = {}
        self.lost_twice = 0


class Echo(asyncio.Protocol):
    def __init__(self, stats):
        self.stats = stats
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        self.stats.open += 1
        self.stats.seen += 1

    def data_received(self, data):
        self.stats.echoed += len(data)
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        return None  # close once the echo is flushed

    def connection_lost(self, exc):
        if self.lost:
            self.stats.lost_twice += 1
        self.lost = True
        self.stats.open -= 1
        if exc is not None:
            name = type(exc).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1


def faults_injected():
    """Syscall faults injected in this process so far (an EVPY_FAULTS
    build: csrc/core/faults.h), else None."""
    core = sys.modules.get("evpy._core")
    if core is None or not getattr(core, "FAULTS", False):
        return None
    return sum(core.faults_counts().values())


def main():
    kind = sys.argv[1]
    limit = raise_fd_limit()
    sslctx = None
    if "--tls" in sys.argv:
        i = sys.argv.index("--tls")
        sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sslctx.load_cert_chain(sys.argv[i + 1], sys.argv[i + 2])
    if kind == "evpy":
        import evpy
        loop = evpy.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    stats = Stats()
    handler_calls = []
    loop.set_exception_handler(
        lambda lp, ctx: handler_calls.append(ctx.get("message")))
    server = loop.run_until_complete(loop.create_server(
        lambda: Echo(stats), "127.0.0.1", 0, backlog=4096, ssl=sslctx))
    rss0, fds0 = rss_bytes(), fd_count()
    # Peak RSS, sampled (ru_maxrss would count the client's pages this
    # process was forked with).
    peak = [rss0]

    def sample():
        peak[0] = max(peak[0], rss_bytes())
        loop.call_later(0.2, sample)
    sample()

    def report():
        rss = rss_bytes()
        trimmed = None
        if stats.open == 0:
            # What is still in use once glibc returns its free pages.
            try:
                import ctypes
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                trimmed = rss_bytes()
            except (OSError, AttributeError):
                pass
        print(json.dumps({
            "rss_trimmed": trimmed,
            "rss": rss, "fds": fd_count(), "rss0": rss0,
            "maxrss": peak[0],
            "fds0": fds0, "open": stats.open, "seen": stats.seen,
            "echoed": stats.echoed, "errors": stats.errors,
            "lost_twice": stats.lost_twice, "fd_limit": limit,
            "handler_calls": len(handler_calls),
            "handler_messages": sorted(set(map(str, handler_calls)))[:5],
            "faults": faults_injected(),
        }), flush=True)

    done = loop.create_future()

    def stdin_reader():
        for line in sys.stdin:
            if line.strip() == "stats":
                loop.call_soon_threadsafe(report)
        loop.call_soon_threadsafe(done.set_result, None)

    print(json.dumps({"port": server.sockets[0].getsockname()[1]}),
          flush=True)
    threading.Thread(target=stdin_reader, daemon=True).start()
    loop.run_until_complete(done)
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


if __name__ == "__main__":
    main()
