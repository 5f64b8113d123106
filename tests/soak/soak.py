"""Soak: many concurrent connections doing checksummed echo against one
server process (evpy's loop, then asyncio's for comparison, then TLS).

usage: python tests/soak/soak.py [--conns N] [--seconds S]
           [--tls-conns N] [--loops evpy,asyncio] [--report FILE]

Each client connection (this process, on evpy's loop) runs rounds: a
random size from 1 B to 1 MiB (log-uniform), written in random chunks,
echoed back by the server; between rounds a random pause; during a round
it may pause reading for a while (the server's write buffer fills and its
flow control pauses reading from us); at its end it half-closes
(write_eof) and waits for the echo of everything and the server's EOF.
Some connections abort instead (transport.abort()) at a random moment.

A running CRC-32 and byte count of what was sent and of what came back
are compared at every round's end and at EOF: any byte lost, duplicated
or reordered fails the run. The server process reports its RSS and open
fds before and after; every connection must have been closed on its side
exactly once. Exit status 0 only if every check passed. Per-connection
bytes sent/received go to --report (CSV) when given.
"""
import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
import zlib

from server import raise_fd_limit, rss_bytes  # tests/soak/server.py

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(os.path.dirname(HERE), "certs")
MAX_ROUND = 1 << 20
CHUNK = 256 * 1024


class Failure(Exception):
    pass


class Conn(asyncio.Protocol):
    """One client connection's state and checks."""

    def __init__(self, loop, cid, rng):
        self.loop = loop
        self.cid = cid
        self.rng = rng
        self.sent = self.recvd = 0
        self.crc_sent = self.crc_recvd = 0
        self.waiter = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.aborted = False
        self.error = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.recvd += len(data)
        self.crc_recvd = zlib.crc32(data, self.crc_recvd)
        if self.recvd > self.sent:
            self.error = "got {} bytes back, sent {}".format(
                self.recvd, self.sent)
        if self.waiter is not None and self.recvd >= self.sent \
                and not self.waiter.done():
            self.waiter.set_result(None)

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    def eof_received(self):
        if not self.eof.done():
            self.eof.set_result(None)

    def connection_lost(self, exc):
        if self.lost.done():
            self.error = "connection_lost called twice"
            return
        self.lost.set_result(exc)
        for fut in (self.waiter, self.eof):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def check(self, where):
        if self.error:
            raise Failure("conn {} {}: {}".format(self.cid, where,
                                                  self.error))
        if (self.recvd, self.crc_recvd) != (self.sent, self.crc_sent):
            raise Failure(
                "conn {} {}: sent {} bytes (crc {:08x}), got back {} "
                "(crc {:08x})".format(self.cid, where, self.sent,
                                      self.crc_sent, self.recvd,
                                      self.crc_recvd))

    async def round(self):
        size = int(2 ** self.rng.uniform(0, math.log2(MAX_ROUND)))
        data = self.rng.randbytes(size)
        self.waiter = self.loop.create_future()
        pause_at = self.rng.random() < 0.2
        pos = 0
        while pos < size:
            n = min(size - pos, self.rng.randint(1, CHUNK))
            piece = data[pos:pos + n]
            await self.can_write.wait()
            if self.lost.done():
                return False
            self.sent += n
            self.crc_sent = zlib.crc32(piece, self.crc_sent)
            self.transport.write(piece)
            pos += n
            if pause_at and self.transport.is_reading():
                self.transport.pause_reading()
                await asyncio.sleep(self.rng.random() * 0.05)
                self.transport.resume_reading()
        await self.waiter
        if self.lost.done():
            return False
        self.check("after a round")
        return True

    async def run(self, until, abort_p):
        abort_at = (self.loop.time() + self.rng.random()
                    * (until - self.loop.time())
                    if self.rng.random() < abort_p else None)
        while self.loop.time() < until:
            if abort_at is not None and self.loop.time() >= abort_at:
                self.aborted = True
                self.transport.abort()
                await self.lost
                return
            if not await self.round():
                raise Failure("conn {}: lost during a round: {!r}".format(
                    self.cid, self.lost.result()))
            if self.rng.random() < 0.5:
                await asyncio.sleep(self.rng.random() * 0.5)
        if self.transport.can_write_eof():
            # Half-close: everything comes back, then the server's EOF.
            self.transport.write_eof()
            await self.eof
            self.check("at EOF")
        # (TLS: the last round was checked; close_notify on close.)
        self.transport.close()
        exc = await self.lost
        if exc is not None:
            raise Failure("conn {}: closed with {!r}".format(self.cid, exc))


class ServerProc:
    def __init__(self, loop_kind, tls):
        cmd = [sys.executable, os.path.join(HERE, "server.py"), loop_kind]
        if tls:
            cmd += ["--tls", os.path.join(CERTS, "localhost.pem"),
                    os.path.join(CERTS, "localhost.key")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def stats(self):
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self):
        self.proc.stdin.close()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("server process did not exit")


async def soak(loop, port, nconns, seconds, abort_p, sslctx, seed):
    conns = []
    t0 = time.monotonic()
    sem = asyncio.Semaphore(256)  # connects in flight

    async def connect(cid):
        proto = Conn(loop, cid, random.Random(seed * 1000003 + cid))
        async with sem:
            await loop.create_connection(
                lambda: proto, "127.0.0.1", port, ssl=sslctx,
                server_hostname="localhost" if sslctx else None)
        conns.append(proto)
        return proto

    protos = await asyncio.gather(*(connect(i) for i in range(nconns)))
    t_connect = time.monotonic() - t0
    until = loop.time() + seconds
    await asyncio.gather(*(p.run(until, abort_p) for p in protos))
    return protos, t_connect


def run_one(loop_kind, nconns, seconds, tls, abort_p, seed, report):
    evpy = __import__("evpy")
    sslctx = None
    if tls:
        import ssl
        sslctx = ssl.create_default_context(
            cafile=os.path.join(CERTS, "ca.pem"))
    server = ServerProc(loop_kind, tls)
    failures = []
    try:
        before = server.stats()
        loop = evpy.new_event_loop()
        calls = []
        loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
        t0 = time.monotonic()
        try:
            protos, t_connect = loop.run_until_complete(asyncio.wait_for(
                soak(loop, server.port, nconns, seconds, abort_p, sslctx,
                     seed),
                seconds + 120))
        except Failure as exc:
            failures.append(str(exc))
            protos, t_connect = [], 0
        finally:
            loop.close()
        elapsed = time.monotonic() - t0
        for _ in range(100):
            after = server.stats()
            if after["open"] == 0:
                break
            time.sleep(0.1)
    finally:
        rc = server.stop()
    if rc != 0:
        failures.append("server exited with {}".format(rc))
    if after["open"]:
        failures.append("{} server connections still open".format(
            after["open"]))
    if after["lost_twice"]:
        failures.append("connection_lost twice on {} server connections"
                        .format(after["lost_twice"]))
    if after["seen"] != nconns:
        failures.append("server saw {} connections, {} made".format(
            after["seen"], nconns))
    if after["fds"] > before["fds"]:
        failures.append("server fds {} -> {}".format(before["fds"],
                                                     after["fds"]))
    client_faults = None
    core = sys.modules.get("evpy._core")
    if getattr(core, "FAULTS", False):
        client_faults = sum(core.faults_counts().values())
    if float(os.environ.get("EVPY_FAULT_RATE") or 0) > 0 and not (
            client_faults and (after["faults"] or loop_kind != "evpy")):
        failures.append("EVPY_FAULT_RATE is set but no fault was injected"
                        " (not an EVPY_FAULTS build?)")
    if calls:
        failures.append("client exception handler: {}".format(
            sorted(set(c.get("message") for c in calls))[:5]))
    sent = sum(p.sent for p in protos)
    aborted = sum(p.aborted for p in protos)
    result = {
        "loop": loop_kind, "tls": tls, "conns": nconns,
        "seconds": seconds, "elapsed": round(elapsed, 1),
        "connect_s": round(t_connect, 1), "aborted": aborted,
        "bytes_echoed": sent,
        "per_conn_bytes_min": min((p.sent for p in protos), default=0),
        "per_conn_bytes_max": max((p.sent for p in protos), default=0),
        "server_rss_mib_before": round(before["rss"] / 2 ** 20, 1),
        "server_rss_mib_after": round(after["rss"] / 2 ** 20, 1),
        "server_rss_mib_peak": round(after["maxrss"] / 2 ** 20, 1),
        "server_rss_mib_after_trim": (
            round(after["rss_trimmed"] / 2 ** 20, 1)
            if after["rss_trimmed"] else None),
        "server_fds_before": before["fds"], "server_fds_after":
        after["fds"], "server_conn_errors": after["errors"],
        "server_handler_calls": after["handler_calls"],
        "client_rss_mib": round(rss_bytes() / 2 ** 20, 1),
        "server_faults_injected": after["faults"],
        "client_faults_injected": client_faults,
        "failures": failures,
    }
    if report:
        with open(report, "a") as f:
            f.write("# {} tls={} conns={}\n".format(loop_kind, tls, nconns))
            f.write("conn,sent,received,aborted\n")
            for p in protos:
                f.write("{},{},{},{}\n".format(p.cid, p.sent, p.recvd,
                                               int(p.aborted)))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int,
                    default=int(os.environ.get("SOAK_CONNS", 1000)))
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("SOAK_SECONDS", 20)))
    ap.add_argument("--tls-conns", type=int,
                    default=int(os.environ.get("SOAK_TLS_CONNS", 200)))
    ap.add_argument("--loops", default="evpy,asyncio")
    ap.add_argument("--abort", type=float, default=0.05,
                    help="fraction of connections that abort")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", default=None)
    args = ap.parse_args()
    limit = raise_fd_limit()
    if args.conns + 100 > limit:
        sys.exit("--conns {} needs more fds than the limit {}".format(
            args.conns, limit))
    results = []
    for kind in args.loops.split(","):
        results.append(run_one(kind, args.conns, args.seconds, False,
                               args.abort, args.seed, args.report))
        print(json.dumps(results[-1]), flush=True)
    if args.tls_conns:
        for kind in args.loops.split(","):
            results.append(run_one(kind, args.tls_conns, args.seconds, True,
                                   args.abort, args.seed, args.report))
            print(json.dumps(results[-1]), flush=True)
    failed = [r for r in results if r["failures"]]
    for r in failed:
        print("FAILED {} tls={}: {}".format(r["loop"], r["tls"],
                                            r["failures"]))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
