"""sys.gettotalrefcount() stays flat over evpy workloads (a debug build of
CPython only, e.g. Debian's python3.11-dbg; `make refcount`).

usage: python3.11-dbg tests/soak/refcount.py [SCALE]

Each workload runs once to warm up, then SCALE times more; the total
reference count after the second run must be within a few references of
the one after the first (a leaked reference per operation would show as
thousands). Workloads: call_soon, call_later + cancel, futures,
call_soon_threadsafe, create_connection/close, TLS handshakes, UDP
datagrams, pipes, subprocesses.
"""
import asyncio
import gc
import os
import ssl
import sys

import evpy

CERTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "certs")
SLACK = 50  # references that may move between runs (caches, interning)


def noop(*args):
    pass


def w_call_soon(loop, n):
    for _ in range(n):
        loop.call_soon(noop, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()


def w_call_later_cancel(loop, n):
    hs = [loop.call_later(3600, noop) for _ in range(n)]
    for h in hs:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()


def w_futures(loop, n):
    async def go():
        for i in range(n):
            f = loop.create_future()
            loop.call_soon(f.set_result, i)
            await f
    loop.run_until_complete(go())


def w_threadsafe(loop, n):
    for _ in range(n):
        loop.call_soon_threadsafe(noop)
    loop.call_soon(loop.stop)
    loop.run_forever()


class Closer(asyncio.Protocol):
    def connection_made(self, transport):
        transport.close()


def _connect(loop, n, tls):
    sctx = cctx = None
    if tls:
        sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sctx.load_cert_chain(os.path.join(CERTS, "localhost.pem"),
                             os.path.join(CERTS, "localhost.key"))
        cctx = ssl.create_default_context(
            cafile=os.path.join(CERTS, "ca.pem"))

    async def go():
        server = await loop.create_server(Closer, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        for _ in range(n):
            tr, _ = await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, ssl=cctx,
                server_hostname="localhost" if tls else None)
            tr.close()
            await asyncio.sleep(0)
        server.close()
        await server.wait_closed()
        for _ in range(10):
            await asyncio.sleep(0)
    loop.run_until_complete(go())


def w_connect(loop, n):
    _connect(loop, n, False)


def w_tls(loop, n):
    _connect(loop, max(1, n // 20), True)


def w_udp(loop, n):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, data, addr):
            self.tr.sendto(data, addr)

    async def go():
        srv, _ = await loop.create_datagram_endpoint(
            Echo, local_addr=("127.0.0.1", 0))
        waiter = [None]

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                waiter[0].set_result(data)
        cli, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=srv.get_extra_info("sockname"))
        for i in range(n):  # ping-pong: UDP may drop a burst
            waiter[0] = loop.create_future()
            cli.sendto(b"x")
            await asyncio.wait_for(waiter[0], 5)
        cli.close()
        srv.close()
        await asyncio.sleep(0)
    loop.run_until_complete(go())


def w_pipes(loop, n):
    async def go():
        r, w = os.pipe()
        rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
        done = loop.create_future()
        total = [0]

        class Reader(asyncio.Protocol):
            def data_received(self, data):
                total[0] += len(data)

            def connection_lost(self, exc):
                done.set_result(None)
        rtr, _ = await loop.connect_read_pipe(Reader, rf)
        wtr, _ = await loop.connect_write_pipe(asyncio.Protocol, wf)
        for _ in range(n):
            wtr.write(b"y" * 100)
            await asyncio.sleep(0)
        wtr.close()
        await done
    loop.run_until_complete(go())


def w_subprocess(loop, n):
    # the C ProcessTransport: spawn, pipes, a cancelled wait() (pruned
    # from the waiters when the next one comes), communicate, reaping
    pipe = asyncio.subprocess.PIPE

    async def go():
        for _ in range(max(1, n // 200)):
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", "read x; echo $x", stdin=pipe, stdout=pipe)
            try:
                await asyncio.wait_for(proc.wait(), 0.0001)
            except asyncio.TimeoutError:
                pass
            out, _ = await proc.communicate(b"hi\n")
            assert out == b"hi\n" and proc.returncode == 0
    loop.run_until_complete(go())


WORKLOADS = [w_call_soon, w_call_later_cancel, w_futures, w_threadsafe,
             w_connect, w_tls, w_udp, w_pipes, w_subprocess]


def main():
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    if not hasattr(sys, "gettotalrefcount"):
        sys.exit("needs a debug build of CPython (sys.gettotalrefcount)")
    bad = []
    for work in WORKLOADS:
        n = 2000 * scale
        loop = evpy.new_event_loop()
        try:
            work(loop, n)  # warm-up: caches, interned names, freelists
            gc.collect()
            r1 = sys.gettotalrefcount()
            work(loop, n)
            gc.collect()
            r2 = sys.gettotalrefcount()
        finally:
            loop.close()
        print("{:22s} n={:7d} refs {} -> {} ({:+d})".format(
            work.__name__[2:], n, r1, r2, r2 - r1), flush=True)
        if r2 - r1 > SLACK:
            bad.append(work.__name__)
    if bad:
        sys.exit("total refcount grew: {}".format(", ".join(bad)))


if __name__ == "__main__":
    main()
