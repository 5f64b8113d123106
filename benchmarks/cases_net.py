"""Networking cases: echo servers, HTTP with wrk, idle connections at scale.

The worker process is the server: it pins itself to one core, starts the
server under test on the loop it was given (127.0.0.1, ephemeral port) and
runs the loop while a load generator, pinned to the other core, drives it:

* ``echo_<style>_<size>_c<conns>``: ``benchmarks/c/loadgen.c`` keeps
  ``conns`` connections doing request/response (send ``size`` bytes, wait
  for the whole echo, repeat) for 0.5 s of warm-up plus ``n`` ms, and reads
  the server's utime+stime from /proc/<pid>/stat at both ends of the timed
  window.  Styles: sock, streams, protocol, buffered (benchmarks/servers.py).
  The "C floor" column is the same client against benchmarks/c/echo_server.c.
* ``http_keepalive_c100``: an httptools-based HTTP/1.1 keep-alive server,
  loaded by ``wrk -t1 -c100`` (1 s warm-up run, then ``n`` ms rounded to
  whole seconds); server CPU is read from /proc before and after.
* ``idle_15k``: ``n`` connections held by a Protocol echo server; RSS growth
  per connection, accept rate, time to wake them all (loadgen --mode idle).

``n`` is a duration in ms for echo/http and a number of connections for
idle.  Nothing leaves 127.0.0.1; every helper process ends by itself
(alarm/duration) and dies with the worker (PR_SET_PDEATHSIG).
"""

import asyncio
import importlib.util
import os
import shutil
import time

from benchmarks import netutil
from benchmarks.registry import (Metric, case, max_target, ratio_target)
from benchmarks.servers import ECHO_STYLES, start_http, start_protocol

WARMUP_S = 0.5
FLOOR = "c"
COST_SECONDS = 240          # limit for one cost run's load generator

RPS = Metric("rps", "req/s")
P50 = Metric("p50_us", "us", higher_is_better=False, label="p50 us")
P99 = Metric("p99_us", "us", higher_is_better=False, label="p99 us")
CPU_PER_REQ = Metric("cpu_us", "us", higher_is_better=False,
                     label="srv CPU us/req")

STYLE_API = {
    "sock": "loop.sock_accept/sock_recv/sock_sendall",
    "streams": "asyncio.start_server (loop.create_server)",
    "protocol": "loop.create_server",
    "buffered": "loop.create_server (BufferedProtocol)",
}
SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024}
CONCS = (1, 10, 100)
STYLE_ORDER = ("protocol", "buffered", "streams", "sock")
DEFAULT_ECHO = {
    ("1k", 10): STYLE_ORDER,
    ("100k", 10): STYLE_ORDER,
    ("1k", 1): ("protocol",),
    ("1k", 100): ("protocol",),
}


def _need_cc():
    if not netutil.compiler():
        return "no C compiler (cc) to build benchmarks/c/*.c"
    return None


def _need_wrk():
    if not shutil.which("wrk"):
        return ("wrk not found - install it (Debian/Ubuntu: "
                "apt-get install -y wrk) to run the HTTP benchmark")
    if importlib.util.find_spec("httptools") is None:
        return "httptools not installed (pip install httptools)"
    return _need_cc()


# -- plumbing ----------------------------------------------------------------

def _server_process_setup(nofile_needed=0):
    client_cpu, server_cpu = netutil.cpus()
    netutil.pin_self(server_cpu)
    limit = netutil.raise_nofile()
    if nofile_needed and limit < nofile_needed:
        raise RuntimeError("open-file limit %d < %d needed"
                           % (limit, nofile_needed))
    return client_cpu, server_cpu


def _start(loop, starter, api, **kw):
    try:
        return loop.run_until_complete(starter(loop, **kw))
    except NotImplementedError as exc:
        raise NotImplementedError(
            "%s: not implemented by %s.%s%s"
            % (api, type(loop).__module__, type(loop).__qualname__,
               " (%s)" % exc if str(exc) else "")) from None


def _settle(loop, running):
    """Close the server and give the loop a moment to drop connections."""
    running.close()
    try:
        loop.run_until_complete(asyncio.sleep(0.05))
    except Exception:
        pass


def _echo_metrics(res):
    if not res.get("ok"):
        raise RuntimeError("loadgen: %s" % (res.get("error") or res))
    msgs = res["messages"]
    out = {"rps": res["rps"], "p50_us": res["p50_us"],
           "p99_us": res["p99_us"]}
    if res.get("server_cpu_s") is not None and msgs:
        out["cpu_us"] = res["server_cpu_s"] * 1e6 / msgs
        out["server_busy"] = res["server_cpu_s"] / res["duration_s"]
    # Not shown in the table: how busy the load generator's core was (near
    # 1.0 = the client, not the server, limits req/s; see the footer).
    out["client_busy"] = res["client_cpu_s"] / res["duration_s"]
    return out


def _echo_on_loop(loop, style, size, conns, n):
    duration = n / 1000.0
    client_cpu, _ = _server_process_setup(conns + 64)
    running = _start(loop, ECHO_STYLES[style], STYLE_API[style])
    try:
        proc = netutil.spawn(netutil.loadgen_cmd(
            running.port, conns=conns, size=size, warmup=WARMUP_S,
            duration=duration, cpu=client_cpu, server_pid=os.getpid()))
        out, err = netutil.wait_on_loop(loop, proc,
                                        timeout=WARMUP_S + duration + 20)
    finally:
        _settle(loop, running)
    return _echo_metrics(netutil.parse_json_line(out, err, "loadgen"))


def _echo_cost(loop, style, size, conns, n):
    """Cost run: the same server, loadgen stops after ``n`` responses (no
    warm-up, unpinned); ops = responses.  Requests still in flight when it
    stops are the same in both cost runs and cancel out."""
    _server_process_setup(conns + 64)
    running = _start(loop, ECHO_STYLES[style], STYLE_API[style])
    try:
        proc = netutil.spawn(netutil.loadgen_cmd(
            running.port, conns=conns, size=size, warmup=0,
            duration=COST_SECONDS, messages=n, max_seconds=COST_SECONDS + 10))
        out, err = netutil.wait_exit_on_loop(loop, proc,
                                             timeout=COST_SECONDS + 5)
    finally:
        _settle(loop, running)
    res = netutil.parse_json_line(out, err, "loadgen")
    if not res.get("ok") or res["messages"] != n:
        raise RuntimeError("loadgen: %s" % (res.get("error") or res))
    return {"cost_ops": res["messages"]}


def _echo_floor(size, conns, n):
    duration = n / 1000.0
    client_cpu, server_cpu = netutil.cpus()
    netutil.raise_nofile()
    server, port = netutil.start_c_echo_server(
        cpu=server_cpu, max_seconds=WARMUP_S + duration + 30)
    try:
        proc = netutil.spawn(netutil.loadgen_cmd(
            port, conns=conns, size=size, warmup=WARMUP_S,
            duration=duration, cpu=client_cpu, server_pid=server.pid))
        try:
            out, err = proc.communicate(timeout=WARMUP_S + duration + 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        netutil.stop_process(server)
    return _echo_metrics(netutil.parse_json_line(out, err, "loadgen"))


# -- echo matrix -------------------------------------------------------------

def _register_echo(style, size_name, conns):
    size = SIZES[size_name]
    name = "echo_%s_%s_c%d" % (style, size_name, conns)
    targets = []
    if style == "protocol" and size_name == "1k" and conns == 10:
        targets.append(ratio_target(FLOOR, 0.95, metric="rps"))
    if style == "streams":
        targets.append(ratio_target("uvloop", 1.35, metric="rps"))
    if style == "sock":
        targets.append(ratio_target("uvloop", 2.0, metric="rps"))

    def fn(loop, n):
        return _echo_on_loop(loop, style, size, conns, n)

    def floor(n):
        return _echo_floor(size, conns, n)

    def cost(loop, n):
        return _echo_cost(loop, style, size, conns, n)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = ("%s echo, %s B messages, %d connection%s, "
                  "request/response." % (style, size, conns,
                                         "" if conns == 1 else "s"))
    case(name, n=500, quick_n=300,
         metrics=[RPS, P50, P99, CPU_PER_REQ], targets=targets,
         warmup=False, available=_need_cc, timeout=45,
         floor=floor, floor_key=("echo", size, conns),
         full_only=style not in DEFAULT_ECHO.get((size_name, conns), ()),
         unit_note="n = measured ms", cost=cost,
         cost_n=(500, 3000) if size < 65536 else (100, 600),
         cost_unit="req")(fn)


def _echo_order():
    # Default rows first (in DEFAULT_ECHO order), then the rest of the
    # matrix; within a size/concurrency the Protocol row comes first, so
    # the shared C floor is measured next to it.
    seen = []
    for (size_name, conns) in DEFAULT_ECHO:
        for style in STYLE_ORDER:
            seen.append((style, size_name, conns))
    for size_name in SIZES:
        for conns in CONCS:
            for style in STYLE_ORDER:
                if (style, size_name, conns) not in seen:
                    seen.append((style, size_name, conns))
    return seen


for _style, _size_name, _conns in _echo_order():
    _register_echo(_style, _size_name, _conns)


# -- HTTP --------------------------------------------------------------------

WRK_CONNS = 100
WRK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "wrk", "report.lua")


def _run_wrk(loop, port, seconds, cpu):
    cmd = [shutil.which("wrk"), "-t1", "-c%d" % WRK_CONNS,
           "-d%ds" % seconds, "--timeout", "5s", "-s", WRK_SCRIPT,
           "http://%s:%d/" % (netutil.HOST, port)]
    proc = netutil.spawn(cmd, cpu=cpu)
    out, err = netutil.wait_on_loop(loop, proc, timeout=seconds + 20)
    res = netutil.parse_json_line(out, err, "wrk")
    if proc.returncode != 0:
        raise RuntimeError("wrk exited with %s: %s"
                           % (proc.returncode, (err or "").strip()[-300:]))
    return res


@case("http_keepalive_c100", n=1000, quick_n=1000,
      metrics=[RPS, CPU_PER_REQ, P99],
      targets=[ratio_target("uvloop", 1.2, metric="cpu_us")],
      warmup=False, available=_need_wrk, timeout=60,
      unit_note="n = measured ms (whole seconds for wrk)",
      cost_why="wrk has no fixed request count")
def http_keepalive_c100(loop, n):
    """HTTP/1.1 keep-alive (httptools) under wrk -t1 -c100; req/s, CPU/req."""
    import httptools  # noqa: F401  (fail early if it's missing)
    seconds = max(1, int(round(n / 1000.0)))
    client_cpu, _ = _server_process_setup(WRK_CONNS + 64)
    running = _start(loop, start_http, "loop.create_server")
    try:
        _run_wrk(loop, running.port, 1, client_cpu)          # warm-up
        pid = os.getpid()
        cpu0 = netutil.proc_cpu_s(pid)
        res = _run_wrk(loop, running.port, seconds, client_cpu)
        cpu1 = netutil.proc_cpu_s(pid)
    finally:
        _settle(loop, running)
    errors = sum(res[k] for k in ("connect_errors", "read_errors",
                                  "write_errors", "status_errors"))
    if errors or not res["requests"]:
        raise RuntimeError("wrk: %d requests, errors: %s" % (
            res["requests"], {k: v for k, v in res.items()
                              if k.endswith("errors") and v}))
    return {"rps": res["requests"] / (res["duration_us"] / 1e6),
            "cpu_us": (cpu1 - cpu0) * 1e6 / res["requests"],
            "p99_us": res["p99_us"]}


# -- idle connections at scale -----------------------------------------------

IDLE_WINDOW = 1000


def _idle_metrics(res):
    if not res.get("ok"):
        raise RuntimeError("loadgen: %s" % (res.get("error") or res))
    n = res["conns"]
    return {"rss_per_conn": res["rss_per_conn"],
            "accept_rate": res["accept_rate"],
            "accept_cpu_us": res["accept_cpu_s"] * 1e6 / n,
            "wake_ms": res["wake_s"] * 1e3,
            "wake_cpu_us": res["wake_cpu_s"] * 1e6 / n}


def _idle_loadgen(port, n, client_cpu, server_pid, duration=30):
    return netutil.spawn(netutil.loadgen_cmd(
        port, mode="idle", conns=n, warmup=0, duration=duration,
        cpu=client_cpu, server_pid=server_pid, window=IDLE_WINDOW,
        max_seconds=duration + 30))


def _idle_cost(loop, n):
    """Cost run: loadgen --mode idle with n connections (accept, 1-byte
    echo, later one more 1-byte echo each, close); ops = connections."""
    _server_process_setup(n + 64)
    running = _start(loop, start_protocol, "loop.create_server")
    try:
        proc = _idle_loadgen(running.port, n, None, None,
                             duration=COST_SECONDS)
        out, err = netutil.wait_exit_on_loop(loop, proc,
                                             timeout=COST_SECONDS + 40)
    finally:
        _settle(loop, running)
    res = netutil.parse_json_line(out, err, "loadgen")
    if not res.get("ok"):
        raise RuntimeError("loadgen: %s" % (res.get("error") or res))
    return {"cost_ops": res["conns"]}


def _idle_floor(n):
    client_cpu, server_cpu = netutil.cpus()
    netutil.raise_nofile()
    server, port = netutil.start_c_echo_server(cpu=server_cpu,
                                               max_seconds=90)
    try:
        proc = _idle_loadgen(port, n, client_cpu, server.pid)
        try:
            out, err = proc.communicate(timeout=70)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        netutil.stop_process(server)
    return _idle_metrics(netutil.parse_json_line(out, err, "loadgen"))


@case("idle_15k", n=15000, quick_n=15000,
      metrics=[Metric("rss_per_conn", "B", higher_is_better=False,
                      label="RSS B/conn"),
               Metric("accept_rate", "conn/s", label="accept conn/s"),
               Metric("accept_cpu_us", "us", higher_is_better=False,
                      label="accept srv CPU us/conn"),
               Metric("wake_ms", "ms", higher_is_better=False,
                      label="wake all ms"),
               Metric("wake_cpu_us", "us", higher_is_better=False,
                      label="wake srv CPU us/conn")],
      targets=[max_target(1024, metric="rss_per_conn")],
      warmup=False, available=_need_cc, timeout=120,
      floor=_idle_floor, floor_key=("idle",),
      unit_note="n = connections", cost=_idle_cost, cost_n=(200, 1000),
      cost_unit="conn")
def idle_15k(loop, n):
    """n idle connections on a Protocol echo server: RSS/conn, accept, wake."""
    client_cpu, _ = _server_process_setup(n + 64)
    running = _start(loop, start_protocol, "loop.create_server")
    try:
        proc = _idle_loadgen(running.port, n, client_cpu, os.getpid())
        out, err = netutil.wait_on_loop(loop, proc, timeout=70)
    finally:
        _settle(loop, running)
    return _idle_metrics(netutil.parse_json_line(out, err, "loadgen"))


# -- connection set-up and tear-down -----------------------------------------

CONN_RATE = Metric("rate", "conn/s")
CONN_CPU = Metric("cpu_us", "us", higher_is_better=False,
                  label="CPU us/conn")


class _OneByteClient(asyncio.Protocol):
    __slots__ = ("transport", "got", "lost")

    def __init__(self, got, lost):
        self.got = got
        self.lost = lost

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not self.got.done():
            self.got.set_result(data)

    def connection_lost(self, exc):
        if not self.got.done():
            self.got.set_exception(exc or ConnectionError("closed early"))
        if not self.lost.done():
            self.lost.set_result(None)


@case("connect_close", n=2000, quick_n=500,
      metrics=[CONN_RATE, CONN_CPU],
      targets=[ratio_target("uvloop", 1.0, metric="rate")],
      available=_need_cc, timeout=60, unit_note="n = connections",
      cost=True, cost_n=(200, 1000), cost_unit="conn")
def connect_close(loop, n):
    """Client side: n sequential create_connection + 1-byte echo + close."""
    client_cpu, server_cpu = netutil.cpus()
    netutil.pin_self(server_cpu)            # the loop under test
    netutil.raise_nofile()
    server, port = netutil.start_c_echo_server(cpu=client_cpu,
                                               max_seconds=120)

    async def main():
        create_future = loop.create_future
        create_connection = loop.create_connection
        host = netutil.HOST
        pid = os.getpid()
        cpu0 = netutil.proc_cpu_s(pid)
        t0 = time.perf_counter()
        for _ in range(n):
            got, lost = create_future(), create_future()
            transport, _ = await create_connection(
                lambda: _OneByteClient(got, lost), host, port)
            transport.write(b"x")
            if await got != b"x":
                raise RuntimeError("wrong echo")
            transport.close()
            await lost
        wall = time.perf_counter() - t0
        return {"rate": n / wall,
                "cpu_us": (netutil.proc_cpu_s(pid) - cpu0) * 1e6 / n,
                "server_busy": (netutil.proc_cpu_s(pid) - cpu0) / wall}

    try:
        return loop.run_until_complete(main())
    finally:
        netutil.stop_process(server)


@case("accept_close", n=2000, quick_n=500,
      metrics=[CONN_RATE, Metric("cpu_us", "us", higher_is_better=False,
                                 label="srv CPU us/conn")],
      targets=[ratio_target("uvloop", 1.0, metric="cpu_us")],
      available=_need_cc, timeout=60, unit_note="n = connections",
      cost=True, cost_n=(200, 1000), cost_unit="conn")
def accept_close(loop, n):
    """Server side: a C client makes n sequential connections (connect,
    1-byte echo, close) to a Protocol echo server."""
    client_cpu, _ = _server_process_setup(64)
    running = _start(loop, start_protocol, "loop.create_server")
    try:
        proc = netutil.spawn(netutil.loadgen_cmd(
            running.port, mode="connect", conns=n, cpu=client_cpu,
            server_pid=os.getpid(), max_seconds=120))
        out, err = netutil.wait_exit_on_loop(loop, proc, timeout=110)
    finally:
        _settle(loop, running)
    res = netutil.parse_json_line(out, err, "loadgen")
    if not res.get("ok"):
        raise RuntimeError("loadgen: %s" % (res.get("error") or res))
    out = {"rate": res["rate"],
           "client_busy": res["client_cpu_s"] / res["duration_s"]}
    if res.get("server_cpu_s") is not None:
        out["cpu_us"] = res["server_cpu_s"] * 1e6 / res["done"]
        out["server_busy"] = res["server_cpu_s"] / res["duration_s"]
    return out
