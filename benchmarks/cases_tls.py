"""TLS cases: echo and bulk transfer over ``loop.create_server(ssl=...)``.

As in cases_net, the worker process is the server (pinned to one core) and
a client process pinned to the other core drives it; the client is
``benchmarks/tls_client.py`` (stdlib ``ssl``, OpenSSL doing the records in
C, so the server side -- the loop's TLS layer -- is what is measured; the
``srv CPU`` rows are the most telling).  Certificates: tests/certs/.

* ``tls_echo_protocol_<size>_c10``: 10 connections doing request/response
  of ``size`` bytes for 0.5 s warm-up + ``n`` ms; an ``asyncio.Protocol``
  echo server (transport.write in data_received) over TLS.
* ``tls_bulk_100m``: one connection uploads ``n`` MiB (the server counts
  the bytes, then acknowledges), then downloads ``n`` MiB (the server
  writes 1 MiB chunks honouring pause_writing/resume_writing).
"""

import asyncio
import os
import ssl
import sys

from benchmarks import netutil
from benchmarks.registry import Metric, case, ratio_target
from benchmarks.servers import Running

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(os.path.dirname(HERE), "tests", "certs")
CLIENT = os.path.join(HERE, "tls_client.py")
WARMUP_S = 0.5

RPS = Metric("rps", "req/s")
P50 = Metric("p50_us", "us", higher_is_better=False, label="p50 us")
P99 = Metric("p99_us", "us", higher_is_better=False, label="p99 us")
CPU_PER_REQ = Metric("cpu_us", "us", higher_is_better=False,
                     label="srv CPU us/req")


def _need_certs():
    if not os.path.exists(os.path.join(CERTS, "localhost.pem")):
        return "tests/certs/localhost.pem missing"
    return None


def _server_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(CERTS, "localhost.pem"),
                        os.path.join(CERTS, "localhost.key"))
    return ctx


def _client_cmd(port, **kw):
    cmd = [sys.executable, CLIENT, "--port", str(port), "--server-pid",
           str(os.getpid()), "--cafile", os.path.join(CERTS, "ca.pem")]
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return cmd


def _run_client(loop, port, timeout, **kw):
    client_cpu, server_cpu = netutil.cpus()
    proc = netutil.spawn(_client_cmd(port, **kw), cpu=client_cpu)
    out, err = netutil.wait_on_loop(loop, proc, timeout=timeout)
    res = netutil.parse_json_line(out, err, "tls_client")
    if not res.get("ok"):
        raise RuntimeError("tls_client: %s" % (res.get("error") or res))
    return res


def _setup():
    client_cpu, server_cpu = netutil.cpus()
    netutil.pin_self(server_cpu)
    netutil.raise_nofile()


# -- servers -----------------------------------------------------------------

class TLSEcho(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


class Bulk(asyncio.Protocol):
    """b'U' + size: swallow size bytes, answer b'K'.  b'D' + size: send
    size bytes with write flow control."""

    CHUNK = b"\x5a" * (1024 * 1024)

    def connection_made(self, transport):
        self.transport = transport
        self.head = b""
        self.left = 0
        self.to_send = 0
        self.paused = False

    def data_received(self, data):
        if self.left:
            n = len(data)
            if n <= self.left:
                self.left -= n
                if not self.left:
                    self.transport.write(b"K")
                return
            data = data[self.left:]
            self.left = 0
            self.transport.write(b"K")
        self.head += data
        while len(self.head) >= 9:
            cmd, size = self.head[:1], int.from_bytes(self.head[1:9], "big")
            rest = self.head[9:]
            self.head = b""
            if cmd == b"U":
                self.left = size
                if rest:
                    self.data_received(rest)
                return
            self.to_send = size
            self.pump()
            self.head = rest

    def pump(self):
        chunk = self.CHUNK
        while self.to_send and not self.paused:
            n = min(self.to_send, len(chunk))
            self.transport.write(chunk if n == len(chunk) else chunk[:n])
            self.to_send -= n

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.pump()


async def _start(loop, factory):
    server = await loop.create_server(factory, netutil.HOST, 0,
                                      ssl=_server_ctx(), backlog=128)
    return Running(server.sockets[0].getsockname()[1], server.close)


def _settle(loop, running):
    running.close()
    try:
        loop.run_until_complete(asyncio.sleep(0.05))
    except Exception:
        pass


# -- cases -------------------------------------------------------------------

def _register_echo(size_name, size, conns):
    name = "tls_echo_protocol_%s_c%d" % (size_name, conns)

    def fn(loop, n):
        _setup()
        running = loop.run_until_complete(_start(loop, TLSEcho))
        try:
            res = _run_client(loop, running.port, WARMUP_S + n / 1000 + 30,
                              mode="echo", conns=conns, size=size,
                              warmup=WARMUP_S, duration=n / 1000)
        finally:
            _settle(loop, running)
        msgs = res["messages"]
        if not msgs:
            raise RuntimeError("no request completed")
        return {"rps": res["rps"], "p50_us": res["p50_us"],
                "p99_us": res["p99_us"],
                "cpu_us": res["server_cpu_s"] * 1e6 / msgs,
                "server_busy": res["server_cpu_s"] / res["duration_s"],
                "client_busy": res["client_cpu_s"] / res["duration_s"]}

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = ("TLS Protocol echo, %d B messages, %d connections, "
                  "request/response (Python ssl client)." % (size, conns))
    case(name, n=500, quick_n=300,
         metrics=[RPS, P50, P99, CPU_PER_REQ],
         targets=[ratio_target("uvloop", 1.2, metric="rps")],
         warmup=False, available=_need_certs, timeout=60,
         unit_note="n = measured ms",
         cost_why="the Python ssl client has no fixed message count")(fn)


_register_echo("1k", 1024, 10)
_register_echo("100k", 100 * 1024, 10)


@case("tls_bulk_100m", n=30, quick_n=20,
      metrics=[Metric("up_mibs", "MiB/s", label="upload MiB/s"),
               Metric("down_mibs", "MiB/s", label="download MiB/s"),
               Metric("up_cpu_ms", "ms", higher_is_better=False,
                      label="upload srv CPU ms"),
               Metric("down_cpu_ms", "ms", higher_is_better=False,
                      label="download srv CPU ms")],
      targets=[ratio_target("uvloop", 1.0, metric="up_mibs"),
               ratio_target("uvloop", 1.0, metric="down_mibs")],
      warmup=False, available=_need_certs, timeout=120,
      unit_note="n = MiB each way", cost=True, cost_n=(4, 16),
      cost_unit="MiB up+down")
def tls_bulk_100m(loop, n):
    """One TLS connection: upload n MiB, then download n MiB."""
    _setup()
    running = loop.run_until_complete(_start(loop, Bulk))
    try:
        res = _run_client(loop, running.port, 100, mode="bulk",
                          bytes=n * 1024 * 1024)
    finally:
        _settle(loop, running)
    return {"up_mibs": res["up_mibs"], "down_mibs": res["down_mibs"],
            "up_cpu_ms": res["up_cpu_s"] * 1e3,
            "down_cpu_ms": res["down_cpu_s"] * 1e3}
