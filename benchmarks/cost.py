"""Deterministic cost per op: user-space instructions and syscalls.

For a case with a cost (``@case(..., cost=..., cost_n=(n_lo, n_hi))``) and
a loop, the worker is run in cost mode (``python -m benchmarks._worker
--case C --loop L --n N --cost``: no warm-up, it reports how many ops it
did) four times:

* under ``valgrind --tool=cachegrind --cache-sim=no`` at ``n_lo`` and
  ``n_hi``: the ``I refs`` summary line of the worker's pid (valgrind does
  not trace child processes, so a load generator the worker starts is not
  counted).  Both sizes come from one valgrind run (``--cost-n-lo``): the
  worker forks after its imports, the child runs ``n_hi`` and exits, then
  the parent runs ``n_lo``; each has its own summary and both counts
  include everything before the fork, so the start-up (most of a
  valgrind run's time) is paid once;
* under ``perf record -e raw_syscalls:sys_enter`` at ``n_lo`` and ``n_hi``:
  ``perf script -F pid`` lists one line per syscall entry; only the
  worker's pid is counted (all its threads, not its child processes).
  Without perf, ``strace -f`` is used and the worker's threads are found
  from its ``clone`` calls.

cost per op = (count(n_hi) - count(n_lo)) / (ops(n_hi) - ops(n_lo)), so
interpreter start-up, imports and the case's set-up cancel out.  Counts
don't depend on the machine's load (syscall counts of cases with several
connections or threads do depend a little on timing: how many events one
wake-up finds), so cost runs may run in parallel with each other.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from benchmarks._worker import RESULT_MARKER

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TIMEOUT = 300.0               # seconds per cost run (valgrind is ~50x slower)

_IREFS = re.compile(r"^==(\d+)==\s+I\s+refs:\s+([\d,]+)", re.M)
_STRACE_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CLONE_THREAD = re.compile(r"^(?:clone3?|<\.\.\. clone3? resumed>).*"
                           r"CLONE_THREAD.*=\s+(\d+)")


def tools():
    """{"ir": tool or None, "sys": tool or None, "why_ir": ..., "why_sys":
    ...}: which external tools measure instructions and syscalls here."""
    valgrind = shutil.which("valgrind")
    perf = shutil.which("perf")
    strace = shutil.which("strace")
    out = {"ir": None, "sys": None, "why_ir": "", "why_sys": ""}
    if valgrind:
        out["ir"] = valgrind
    else:
        out["why_ir"] = "no valgrind (apt-get install valgrind)"
    if perf and _perf_works(perf):
        out["sys"] = ("perf", perf)
    elif strace:
        out["sys"] = ("strace", strace)
    else:
        out["why_sys"] = ("no working perf or strace (apt-get install "
                          "linux-perf strace)")
    return out


_perf_ok = {}


def _perf_works(perf):
    """Debian's /usr/bin/perf is a wrapper that fails without the
    linux-perf package matching the kernel; the tracepoint may also be
    forbidden (perf_event_paranoid).  Try it once."""
    if perf not in _perf_ok:
        with tempfile.TemporaryDirectory(prefix="evpy-perf-") as tmp:
            data = os.path.join(tmp, "perf.data")
            try:
                r = subprocess.run(
                    [perf, "record", "-q", "-e", "raw_syscalls:sys_enter",
                     "-o", data, "--", "true"], capture_output=True,
                    timeout=60)
                ok = r.returncode == 0 and os.path.exists(data)
                if ok:
                    r = subprocess.run([perf, "script", "-i", data, "-F",
                                        "pid"], capture_output=True,
                                       text=True, timeout=60)
                    ok = r.returncode == 0 and bool(r.stdout.strip())
            except (OSError, subprocess.SubprocessError):
                ok = False
        _perf_ok[perf] = ok
    return _perf_ok[perf]


def cost_env(base_env):
    env = dict(base_env)
    env["PYTHONHASHSEED"] = "0"       # same dict/set layout in every run
    env["BENCH_NO_PIN"] = "1"         # cost runs share the cores freely
    return env


def _worker_cmd(python, case, loop, n, n_lo=None):
    cmd = [python, "-m", "benchmarks._worker", "--case", case, "--loop",
           loop, "--n", str(n), "--cost"]
    if n_lo is not None:
        cmd += ["--cost-n-lo", str(n_lo)]
    return cmd


def _run(cmd, env, timeout):
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
        proc.communicate()
        raise RuntimeError("timed out after %gs" % timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
        proc.communicate()
        raise
    result = None
    for line in out.splitlines():
        if line.startswith(RESULT_MARKER):
            try:
                result = json.loads(line[len(RESULT_MARKER):])
            except ValueError:
                pass
    if result is None:
        raise RuntimeError("worker gave no result (exit %s): %s"
                           % (proc.returncode, err.strip()[-300:]))
    if not result.get("ok"):
        raise RuntimeError(result.get("error") or "worker failed")
    return result, err


def count_ir(tool, python, case, loop, n, env, timeout=TIMEOUT):
    """(instructions, ops) of one cost run under cachegrind."""
    cmd = [tool, "--tool=cachegrind", "--cache-sim=no",
           "--cachegrind-out-file=/dev/null"] + _worker_cmd(python, case,
                                                            loop, n)
    result, err = _run(cmd, env, timeout)
    return _irefs(err, result["pid"]), result["cost_ops"]


def count_ir_pair(tool, python, case, loop, n_lo, n_hi, env,
                  timeout=TIMEOUT):
    """((Ir, ops) at n_lo, (Ir, ops) at n_hi) from one valgrind run in
    the worker's pair mode (it forks after its imports: the child runs
    n_hi, then the parent n_lo; each process has its own summary)."""
    cmd = [tool, "--tool=cachegrind", "--cache-sim=no",
           "--cachegrind-out-file=/dev/null"] + _worker_cmd(
               python, case, loop, n_hi, n_lo)
    result, err = _run(cmd, env, timeout)
    return ((_irefs(err, result["pid"]), result["cost_ops"]),
            (_irefs(err, result["pid_hi"]), result["cost_ops_hi"]))


def _irefs(err, pid):
    for m in _IREFS.finditer(err):
        if m.group(1) == str(pid):
            return int(m.group(2).replace(",", ""))
    raise RuntimeError("no 'I refs' line for pid %s in valgrind's output"
                       % pid)


def count_sys(tool, python, case, loop, n, env, timeout=TIMEOUT):
    """(syscalls of the worker process, ops) of one cost run."""
    kind, path = tool
    with tempfile.TemporaryDirectory(prefix="evpy-cost-") as tmp:
        out = os.path.join(tmp, "trace")
        if kind == "perf":
            cmd = [path, "record", "-q", "-m", "1024", "-e",
                   "raw_syscalls:sys_enter", "-o", out, "--"]
        else:
            cmd = [path, "-f", "-qq", "-o", out, "--"]
        result, err = _run(cmd + _worker_cmd(python, case, loop, n), env,
                           timeout)
        pid = int(result["pid"])
        if kind == "perf":
            r = subprocess.run([path, "script", "-i", out, "-F", "pid"],
                               capture_output=True, text=True,
                               timeout=timeout)
            if r.returncode != 0:
                raise RuntimeError("perf script: %s" % r.stderr[-300:])
            if "lost" in r.stderr.lower():
                raise RuntimeError("perf lost events: %s"
                                   % r.stderr.strip()[-300:])
            count = sum(1 for line in r.stdout.splitlines()
                        if line.strip() == str(pid))
        else:
            with open(out, errors="replace") as f:
                count = _strace_count(f, pid)
    return count, result["cost_ops"]


def _strace_count(lines, pid):
    """Syscalls made by ``pid`` and its threads in ``strace -f`` output
    (threads: the ids returned by its clone calls with CLONE_THREAD)."""
    mine = {pid}
    count = 0
    for line in lines:
        m = _STRACE_LINE.match(line)
        if not m:
            continue
        tid, rest = int(m.group(1)), m.group(2)
        if tid not in mine:
            continue
        c = _CLONE_THREAD.match(rest)
        if c:
            mine.add(int(c.group(1)))
        if rest.startswith(("<...", "+++", "---")):
            continue               # resumed halves, exits, signals
        count += 1
    return count


def jobs_for(case, loop, tool_info):
    """The cost runs for (case, loop): [(kind, n)]; ("ir", (lo, hi)) is
    one valgrind run in pair mode."""
    out = []
    if tool_info["ir"]:
        out.append(("ir", tuple(case.cost_n)))
    if tool_info["sys"]:
        for n in case.cost_n:
            out.append(("sys", n))
    return out


def run_job(kind, tool_info, python, case, loop, n, env):
    """One cost run; returns a list of records, one per size (never
    raises)."""
    t0 = time.perf_counter()
    sizes = list(n) if isinstance(n, tuple) else [n]
    recs = [{"kind": kind, "n": k, "ok": False} for k in sizes]
    try:
        if kind == "ir":
            (c_lo, o_lo), (c_hi, o_hi) = count_ir_pair(
                tool_info["ir"], python, case.name, loop, sizes[0],
                sizes[1], env)
            recs[0].update(ok=True, count=c_lo, ops=o_lo, pair=True)
            recs[1].update(ok=True, count=c_hi, ops=o_hi, pair=True)
        else:
            count, ops = count_sys(tool_info["sys"], python, case.name, loop,
                                   n, env)
            recs[0].update(ok=True, count=count, ops=ops,
                           tool=tool_info["sys"][0])
    except Exception as exc:
        for rec in recs:
            rec["error"] = "%s: %s" % (type(exc).__name__, exc)
    for rec in recs:
        rec["seconds"] = time.perf_counter() - t0
    return recs


def per_op(records, kind):
    """(value per op, error) from the two runs of ``kind``."""
    runs = sorted((r for r in records if r["kind"] == kind),
                  key=lambda r: r["n"])
    bad = [r for r in runs if not r["ok"]]
    if bad:
        return None, bad[0].get("error") or "failed"
    if len(runs) != 2:
        return None, "not measured"
    lo, hi = runs
    dops = hi["ops"] - lo["ops"]
    if dops <= 0:
        return None, "no ops difference between n=%d and n=%d" % (
            lo["n"], hi["n"])
    return (hi["count"] - lo["count"]) / dops, None
