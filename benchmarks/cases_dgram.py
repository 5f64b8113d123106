"""Datagram cases (issue 5): UDP echo on 127.0.0.1.

The worker process is the server, pinned to one core like the networking
cases; ``benchmarks/c/udp_loadgen.c`` (pinned to the other core) keeps
``outstanding`` datagrams of ``size`` bytes in flight on one UDP socket
(each slot sends its next datagram when the echo of the previous one is
back), 0.5 s of warm-up then ``n`` ms measured, and reads the server's
utime+stime from /proc/<pid>/stat at both ends of the window.

* ``udp_protocol_<size>_o<N>``: ``loop.create_datagram_endpoint`` with an
  ``asyncio.DatagramProtocol`` calling ``transport.sendto(data, addr)`` in
  ``datagram_received``.
* ``udp_sock_<size>_o<N>``: a non-blocking UDP socket served by one task
  doing ``await loop.sock_recvfrom(sock, 65536)`` /
  ``await loop.sock_sendto(sock, data, addr)`` (Python >= 3.11).

The ``C floor`` column is ``benchmarks/c/udp_echo_server.c`` (epoll,
recvfrom/sendto per datagram) under the same client; it is measured once
per size/outstanding and round and shared by the two styles.
"""

import asyncio
import os
import socket

from benchmarks import netutil
from benchmarks.registry import Metric, case, ratio_target

WARMUP_S = 0.5
FLOOR = "c"
COST_SECONDS = 240
RECV_SIZE = 65536

DGRAMS = Metric("rps", "dgram/s")
P50 = Metric("p50_us", "us", higher_is_better=False, label="p50 us")
P99 = Metric("p99_us", "us", higher_is_better=False, label="p99 us")
CPU_PER_DGRAM = Metric("cpu_us", "us", higher_is_better=False,
                       label="srv CPU us/dgram")

SIZES = {"64": 64, "1k": 1024}
OUTSTANDING = (1, 32)
STYLES = ("protocol", "sock")
STYLE_API = {
    "protocol": "loop.create_datagram_endpoint",
    "sock": "loop.sock_recvfrom/sock_sendto",
}
# (style, size, outstanding) in the default run; the rest with --full.
DEFAULT = {("protocol", "64", 32), ("protocol", "1k", 1),
           ("sock", "64", 32)}


def _need_cc():
    if not netutil.compiler():
        return "no C compiler (cc) to build benchmarks/c/*.c"
    return None


# -- servers under test ------------------------------------------------------

class EchoDatagramProtocol(asyncio.DatagramProtocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        pass


async def start_protocol(loop):
    transport, _ = await loop.create_datagram_endpoint(
        EchoDatagramProtocol, local_addr=(netutil.HOST, 0))
    return transport.get_extra_info("sockname")[1], transport.close


async def _sock_echo(loop, sock):
    recvfrom, sendto = loop.sock_recvfrom, loop.sock_sendto
    while True:
        data, addr = await recvfrom(sock, RECV_SIZE)
        await sendto(sock, data, addr)


async def start_sock(loop):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((netutil.HOST, 0))
    if not hasattr(loop, "sock_recvfrom"):
        sock.close()
        raise NotImplementedError("no loop.sock_recvfrom (Python < 3.11)")
    task = loop.create_task(_sock_echo(loop, sock))
    # Fail now (not after the whole run) if the loop doesn't implement it.
    await asyncio.sleep(0)
    if task.done():
        sock.close()
        task.result()

    def close():
        task.cancel()
        sock.close()

    return sock.getsockname()[1], close


STARTERS = {"protocol": start_protocol, "sock": start_sock}


# -- plumbing ----------------------------------------------------------------

def _loadgen_cmd(port, size, outstanding, duration, cpu, server_pid,
                 warmup=WARMUP_S, messages=None):
    cmd = [netutil.tool_path("udp_loadgen"), "--host", netutil.HOST,
           "--port", str(port), "--outstanding", str(outstanding),
           "--size", str(size), "--warmup", repr(float(warmup)),
           "--duration", repr(float(duration)),
           "--max-seconds", str(int(warmup + duration + 15))]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    if messages:
        # Count exactly: no resends (a lost datagram would add server work
        # in one cost run only).
        cmd += ["--messages", str(int(messages)), "--resend-ms", "10000"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return cmd


def _metrics(res):
    if not res.get("ok"):
        raise RuntimeError("udp_loadgen: %s" % (res.get("error") or res))
    msgs = res["messages"]
    out = {"rps": res["rps"], "p50_us": res["p50_us"],
           "p99_us": res["p99_us"], "lost": res["lost"]}
    if res.get("server_cpu_s") is not None and msgs:
        out["cpu_us"] = res["server_cpu_s"] * 1e6 / msgs
        out["server_busy"] = res["server_cpu_s"] / res["duration_s"]
    out["client_busy"] = res["client_cpu_s"] / res["duration_s"]
    return out


def _start_server(loop, style):
    try:
        port, close = loop.run_until_complete(STARTERS[style](loop))
    except NotImplementedError as exc:
        raise NotImplementedError(
            "%s: not implemented by %s.%s%s"
            % (STYLE_API[style], type(loop).__module__,
               type(loop).__qualname__,
               " (%s)" % exc if str(exc) else "")) from None
    return port, close


def _on_loop(loop, style, size, outstanding, n):
    duration = n / 1000.0
    client_cpu, server_cpu = netutil.cpus()
    netutil.pin_self(server_cpu)
    port, close = _start_server(loop, style)
    try:
        proc = netutil.spawn(_loadgen_cmd(port, size, outstanding, duration,
                                          client_cpu, os.getpid()))
        out, err = netutil.wait_on_loop(loop, proc,
                                        timeout=WARMUP_S + duration + 20)
    finally:
        close()
        try:
            loop.run_until_complete(asyncio.sleep(0.02))
        except Exception:
            pass
    return _metrics(netutil.parse_json_line(out, err, "udp_loadgen"))


def _cost(loop, style, size, outstanding, n):
    """Cost run: udp_loadgen stops after n echoes (no warm-up, no pinning,
    no resends); ops = echoes."""
    port, close = _start_server(loop, style)
    try:
        proc = netutil.spawn(_loadgen_cmd(port, size, outstanding,
                                          COST_SECONDS, None, None,
                                          warmup=0, messages=n))
        out, err = netutil.wait_exit_on_loop(loop, proc,
                                             timeout=COST_SECONDS + 5)
    finally:
        close()
        try:
            loop.run_until_complete(asyncio.sleep(0.02))
        except Exception:
            pass
    res = netutil.parse_json_line(out, err, "udp_loadgen")
    if not res.get("ok") or res["messages"] != n or res["lost"]:
        raise RuntimeError("udp_loadgen: %s" % (res.get("error") or res))
    return {"cost_ops": res["messages"]}


def _floor(size, outstanding, n):
    duration = n / 1000.0
    client_cpu, server_cpu = netutil.cpus()
    cmd = [netutil.tool_path("udp_echo_server"), "--host", netutil.HOST,
           "--port", "0", "--max-seconds", str(int(WARMUP_S + duration + 30))]
    if server_cpu is not None:
        cmd += ["--cpu", str(server_cpu)]
    server = netutil.spawn(cmd)
    try:
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError("udp_echo_server did not start: %s" % line)
        proc = netutil.spawn(_loadgen_cmd(int(line.split()[1]), size,
                                          outstanding, duration, client_cpu,
                                          server.pid))
        try:
            out, err = proc.communicate(timeout=WARMUP_S + duration + 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        netutil.stop_process(server)
    return _metrics(netutil.parse_json_line(out, err, "udp_loadgen"))


def _register(style, size_name, outstanding):
    size = SIZES[size_name]
    name = "udp_%s_%s_o%d" % (style, size_name, outstanding)

    def fn(loop, n):
        return _on_loop(loop, style, size, outstanding, n)

    def floor(n):
        return _floor(size, outstanding, n)

    def cost(loop, n):
        return _cost(loop, style, size, outstanding, n)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = ("UDP echo (%s), %d B datagrams, %d outstanding; dgram/s."
                  % (STYLE_API[style], size, outstanding))
    case(name, n=500, quick_n=300,
         metrics=[DGRAMS, P50, P99, CPU_PER_DGRAM],
         targets=[ratio_target("uvloop", 1.0, metric="rps")],
         warmup=False, available=_need_cc, timeout=40,
         floor=floor, floor_key=("udp", size, outstanding),
         full_only=(style, size_name, outstanding) not in DEFAULT,
         unit_note="n = measured ms", cost=cost, cost_n=(1000, 6000),
         cost_unit="dgram")(fn)


def _order():
    # Default rows first; within a size/outstanding the protocol row first,
    # so the shared C floor is measured next to it.
    rows = [(st, sz, o) for sz in SIZES for o in OUTSTANDING
            for st in STYLES]
    return ([r for r in rows if r in DEFAULT]
            + [r for r in rows if r not in DEFAULT])


for _style, _size_name, _outstanding in _order():
    _register(_style, _size_name, _outstanding)
