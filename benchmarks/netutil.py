"""Helpers for the networking benchmarks: C tools, CPU pinning, processes.

* ``tool_path("loadgen")`` compiles ``benchmarks/c/loadgen.c`` with
  ``cc -O2`` into ``benchmarks/.build/`` on first use (the file name carries
  a hash of the source, so an edited source is rebuilt) and returns the path.
* ``cpus()`` picks one core for the load generator (client) and another one
  for the server under test; ``pin_self()`` pins the calling process.
* ``spawn()`` starts a helper process that can't outlive the worker
  (``PR_SET_PDEATHSIG``); ``wait_on_loop()`` runs an event loop until such a
  process has exited, polling it with ``call_later`` (no threads, no child
  watchers: only APIs every loop under test has).
* ``proc_cpu_s(pid)`` (schedstat, ns) / ``proc_rss(pid)`` read ``/proc``.

Everything here talks only to 127.0.0.1 or Unix sockets.
"""

import ctypes
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
C_DIR = os.path.join(HERE, "c")
BUILD_DIR = os.path.join(HERE, ".build")
CC_FLAGS = ["-O2"]
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ToolError(RuntimeError):
    pass


def compiler():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def tool_path(name):
    """Path of the compiled C tool ``name`` (``loadgen``, ``echo_server``).

    Compiled with ``cc -O2`` on first use; cached by source hash.
    """
    src = os.path.join(C_DIR, name + ".c")
    with open(src, "rb") as f:
        digest = hashlib.sha1(f.read() + repr(CC_FLAGS).encode()).hexdigest()
    exe = os.path.join(BUILD_DIR, "%s-%s" % (name, digest[:12]))
    if os.path.exists(exe):
        return exe
    cc = compiler()
    if not cc:
        raise ToolError("no C compiler (cc) found to build %s" % src)
    os.makedirs(BUILD_DIR, exist_ok=True)
    tmp = "%s.tmp%d" % (exe, os.getpid())
    proc = subprocess.run([cc] + CC_FLAGS + ["-o", tmp, src],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ToolError("building %s failed:\n%s" % (src, proc.stderr[-2000:]))
    os.replace(tmp, exe)           # atomic: concurrent builds are harmless
    return exe


def build_all():
    return {name: tool_path(name) for name in ("loadgen", "echo_server")}


# -- CPUs, limits ------------------------------------------------------------

def cpus():
    """(client_cpu, server_cpu); None for both if fewer than 2 CPUs.

    Override with BENCH_CLIENT_CPU / BENCH_SERVER_CPU; BENCH_NO_PIN=1 (set
    for the cost runs, which may run two at a time) pins nothing.
    """
    if os.environ.get("BENCH_NO_PIN"):
        return None, None
    env_c = os.environ.get("BENCH_CLIENT_CPU")
    env_s = os.environ.get("BENCH_SERVER_CPU")
    if env_c is not None and env_s is not None:
        return int(env_c), int(env_s)
    try:
        avail = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(avail) < 2:
        return None, None
    return avail[0], avail[1]


def pin_self(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- /proc -------------------------------------------------------------------

def proc_cpu_s(pid):
    """CPU time of process ``pid`` in seconds: the sum of its threads' run
    time from /proc/PID/task/*/schedstat (ns resolution), or utime + stime
    from /proc/PID/stat (10 ms clock ticks) where schedstat is missing."""
    try:
        total = 0
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                continue                    # the thread exited
        return total / 1e9
    except OSError:
        pass
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime, stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE_SIZE


# -- processes ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the worker dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def spawn(cmd, cpu=None, stdout=subprocess.PIPE):
    """Start a helper process (pinned to ``cpu`` with taskset if given)."""
    if cpu is not None and not os.path.basename(cmd[0]).startswith(
            ("loadgen", "echo_server")):
        taskset = shutil.which("taskset")
        if taskset:
            cmd = [taskset, "-c", str(cpu)] + list(cmd)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent)


def stop_process(proc, grace=2.0):
    """Terminate ``proc`` if still running and reap it; returns (out, err)."""
    if proc.poll() is None:
        try:
            proc.terminate()
        except OSError:
            pass
    try:
        return proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def wait_on_loop(loop, proc, timeout, interval=0.02):
    """Run ``loop`` until ``proc`` exits (or ``timeout`` s); kill on timeout.

    Returns the process' (stdout, stderr).
    """
    done = loop.create_future()
    deadline = time.monotonic() + timeout

    def poll():
        if done.done():
            return
        if proc.poll() is not None:
            done.set_result(None)
        elif time.monotonic() > deadline:
            proc.kill()
            done.set_exception(TimeoutError(
                "%s did not finish within %gs" % (os.path.basename(
                    proc.args[0]), timeout)))
        else:
            loop.call_later(interval, poll)

    loop.call_later(interval, poll)
    try:
        loop.run_until_complete(done)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.communicate()


def wait_exit_on_loop(loop, proc, timeout):
    """Run ``loop`` until ``proc`` writes its result to stdout, then reap it.

    Unlike ``wait_on_loop`` this does not poll: one ``add_reader`` on the
    process' stdout pipe (the C tools print their JSON line when done) and
    one timer, so the loop's work doesn't grow with the run's duration
    (what the cost runs need).  Returns the process' (stdout, stderr).
    """
    done = loop.create_future()
    fd = proc.stdout.fileno()

    def readable():
        if not done.done():
            done.set_result(None)

    def expired():
        if not done.done():
            proc.kill()
            done.set_exception(TimeoutError(
                "%s did not finish within %gs" % (os.path.basename(
                    proc.args[0]), timeout)))

    loop.add_reader(fd, readable)
    timer = loop.call_later(timeout, expired)
    try:
        loop.run_until_complete(done)
    finally:
        timer.cancel()
        loop.remove_reader(fd)
        if not done.done() and proc.poll() is None:
            proc.kill()
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def parse_json_line(out, err, what):
    """The last line of ``out`` that parses as a JSON object."""
    for line in reversed((out or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise RuntimeError("%s produced no result (stderr: %s)"
                       % (what, (err or "").strip()[-500:] or "empty"))


def loadgen_cmd(port, *, mode="echo", conns, size=1, warmup=0.5,
                duration=2.0, cpu=None, server_pid=None, window=None,
                max_seconds=None, unix=None, messages=None):
    cmd = [tool_path("loadgen"), "--mode", mode, "--conns", str(conns),
           "--size", str(size), "--warmup", repr(float(warmup)),
           "--duration", repr(float(duration))]
    if messages:
        cmd += ["--messages", str(int(messages))]
    cmd += ["--unix", unix] if unix else ["--host", HOST, "--port", str(port)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    if window:
        cmd += ["--window", str(window)]
    cmd += ["--max-seconds",
            str(int(max_seconds or (warmup + duration + 15)))]
    return cmd


def start_c_echo_server(cpu=None, max_seconds=60, backlog=4096):
    """Start the C echo server on 127.0.0.1:0; returns (proc, port)."""
    proc = spawn([tool_path("echo_server"), "--port", "0",
                  "--backlog", str(backlog),
                  "--max-seconds", str(int(max_seconds))]
                 + (["--cpu", str(cpu)] if cpu is not None else []))
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        out, err = stop_process(proc)
        raise RuntimeError("echo_server did not start: %s %s"
                           % (line, err.strip()[-500:]))
    return proc, int(line.split()[1])
