"""Pipe and subprocess cases (issue 5).

* ``pipe_64k``: one ``os.pipe()`` pair inside one loop: the write end
  through ``loop.connect_write_pipe``, the read end through
  ``loop.connect_read_pipe``.  A coroutine writes ``n`` MiB in 64 KiB
  ``transport.write()`` calls with flow control (it waits for
  ``resume_writing`` after ``pause_writing``, i.e. what ``drain()`` does),
  the read protocol counts the bytes in ``data_received``; timed until the
  last byte arrived.  Both transports are the loop's, so this measures its
  pipe transports and nothing else.  The process is pinned to one core.
* ``spawn_true_c50``: ``n`` x ``asyncio.create_subprocess_exec('true')`` at
  most 50 at a time, ``await proc.wait()`` for each; processes/s.
* ``spawn_echo_pipe_c50``: the same with ``echo hi`` and ``stdout=PIPE``,
  ``await proc.communicate()`` (checks the output).

CPU is the worker's own utime+stime (getrusage, all its threads; children
not included) over the timed part.  Every child exits by itself; the worker
runs in its own process group, killed by the runner on a timeout.
"""

import asyncio
import os
import resource
import shutil
from time import perf_counter

from benchmarks import netutil
from benchmarks.registry import Metric, case, ratio_target

MIB = 1024 * 1024
CHUNK = 64 * 1024
SPAWN_CONCURRENCY = 50

PIPE_RATE = Metric("mib_s", "MiB/s")
PIPE_CPU = Metric("cpu_us_mib", "us", higher_is_better=False,
                  label="CPU us/MiB")
PROCS = Metric("procs", "proc/s")
SPAWN_CPU = Metric("cpu_us", "us", higher_is_better=False,
                   label="parent CPU us/proc")
UVLOOP_1X = ratio_target("uvloop", 1.0)


def _cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- pipes -------------------------------------------------------------------

class _Writer(asyncio.BaseProtocol):
    """Write-pipe protocol with drain()-style flow control."""

    def __init__(self, loop):
        self.loop = loop
        self.resumed = None
        self.lost = loop.create_future()

    def pause_writing(self):
        if self.resumed is None or self.resumed.done():
            self.resumed = self.loop.create_future()

    def resume_writing(self):
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)
        self.resume_writing()


class _Reader(asyncio.Protocol):
    def __init__(self, loop, total):
        self.total = total
        self.got = 0
        self.done = loop.create_future()

    def data_received(self, data):
        self.got += len(data)
        if self.got >= self.total and not self.done.done():
            self.done.set_result(None)

    def eof_received(self):
        if not self.done.done():
            self.done.set_exception(RuntimeError(
                "EOF after %d of %d bytes" % (self.got, self.total)))

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or RuntimeError(
                "pipe closed after %d of %d bytes" % (self.got, self.total)))


async def _pipe_transfer(loop, total):
    rfd, wfd = os.pipe()
    rfile, wfile = os.fdopen(rfd, "rb", 0), os.fdopen(wfd, "wb", 0)
    rtrans = wtrans = None
    try:
        reader = _Reader(loop, total)
        rtrans, _ = await loop.connect_read_pipe(lambda: reader, rfile)
        writer = _Writer(loop)
        wtrans, _ = await loop.connect_write_pipe(lambda: writer, wfile)
        chunk = b"x" * CHUNK
        write = wtrans.write
        cpu0, t0 = _cpu_s(), perf_counter()
        for _ in range(total // CHUNK):
            write(chunk)
            if writer.resumed is not None and not writer.resumed.done():
                await writer.resumed                      # drain()
        await asyncio.wait_for(reader.done, 60)
        t1, cpu1 = perf_counter(), _cpu_s()
    finally:
        for t in (wtrans, rtrans):
            if t is not None:
                t.close()
        await asyncio.sleep(0)
        for f in (rfile, wfile):
            f.close()         # no-op if the transport closed it already
    return t1 - t0, cpu1 - cpu0


@case("pipe_64k", n=512, quick_n=256, metrics=[PIPE_RATE, PIPE_CPU],
      targets=[ratio_target("uvloop", 1.0, metric="mib_s")], timeout=60,
      unit_note="n = MiB", cost=True, cost_n=(16, 64), cost_unit="MiB")
def pipe_64k(loop, n):
    """os.pipe(), connect_write_pipe -> connect_read_pipe, 64 KiB writes."""
    _, server_cpu = netutil.cpus()
    netutil.pin_self(server_cpu)
    total = n * MIB
    wall, cpu = loop.run_until_complete(_pipe_transfer(loop, total))
    return {"mib_s": n / wall, "cpu_us_mib": cpu * 1e6 / n,
            "cpu_per_wall": cpu / wall}


# -- subprocesses ------------------------------------------------------------

def _need(prog):
    def check():
        return None if shutil.which(prog) else "%s not found" % prog
    return check


async def _spawn_many(n, make_one):
    sem = asyncio.Semaphore(SPAWN_CONCURRENCY)

    async def one():
        async with sem:
            await make_one()

    cpu0, t0 = _cpu_s(), perf_counter()
    await asyncio.gather(*[one() for _ in range(n)])
    return perf_counter() - t0, _cpu_s() - cpu0


def _spawn_case(loop, n, make_one):
    wall, cpu = loop.run_until_complete(asyncio.wait_for(
        _spawn_many(n, make_one), 30 + n * 0.05))
    return {"procs": n / wall, "cpu_us": cpu * 1e6 / n,
            "cpu_per_wall": cpu / wall}


@case("spawn_true_c50", n=500, quick_n=300, metrics=[PROCS, SPAWN_CPU],
      targets=[ratio_target("uvloop", 1.0, metric="procs")],
      available=_need("true"), timeout=120, unit_note="n = processes",
      cost=True, cost_n=(20, 80), cost_unit="proc")
def spawn_true_c50(loop, n):
    """n x create_subprocess_exec('true'), 50 at a time, wait(); proc/s."""
    true = shutil.which("true")

    async def make_one():
        proc = await asyncio.create_subprocess_exec(true)
        rc = await proc.wait()
        if rc != 0:
            raise RuntimeError("true exited with %r" % rc)

    return _spawn_case(loop, n, make_one)


@case("spawn_echo_pipe_c50", n=500, quick_n=300, metrics=[PROCS, SPAWN_CPU],
      targets=[ratio_target("uvloop", 1.0, metric="procs")],
      available=_need("echo"), timeout=120, unit_note="n = processes",
      cost=True, cost_n=(20, 80), cost_unit="proc")
def spawn_echo_pipe_c50(loop, n):
    """n x exec('echo', 'hi', stdout=PIPE), 50 at a time, communicate()."""
    echo = shutil.which("echo")
    pipe = asyncio.subprocess.PIPE

    async def make_one():
        proc = await asyncio.create_subprocess_exec(echo, "hi", stdout=pipe)
        out, _ = await proc.communicate()
        if out != b"hi\n" or proc.returncode != 0:
            raise RuntimeError("echo hi gave %r, exit %r"
                               % (out, proc.returncode))

    return _spawn_case(loop, n, make_one)
