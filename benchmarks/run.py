"""Benchmark runner: every case on evpy, the stock asyncio loop and uvloop.

    python -m benchmarks [--quick] [--rounds N] [--cases SUBSTR,...]
                         [--loops evpy,asyncio,uvloop] [--json PATH]
    python benchmarks/run.py ...          (same thing)
    python -m benchmarks ... --plot DIR   also PNG charts (benchmarks/plot.py)
    python -m benchmarks --load FILE --plot DIR   charts of a saved run

Every measurement is one fresh worker process (``benchmarks._worker``).
Measurements are interleaved: for each case, round r runs every loop once,
the loop order rotated by one each round, so slow drifts of a shared
machine hit all loops alike.  The table shows medians over the rounds and
evpy's speed-up over the other loops (higher is better for every ratio).
Results, with all raw samples, go to benchmarks/results/<timestamp>.json.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):          # python benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    __package__ = "benchmarks"

from benchmarks import cost as costmod                           # noqa: E402
from benchmarks import registry                                  # noqa: E402
from benchmarks._worker import RESULT_MARKER                     # noqa: E402
from benchmarks.loops import EVPY_VARIANTS, LOOP_NAMES           # noqa: E402
from benchmarks.registry import FLOOR, display_name              # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_ROUNDS = 5
QUICK_ROUNDS = 3
BOOTSTRAP = 2000                        # resamples for the 95% intervals
COST_JOBS = 2                           # cost runs at a time
IR_TARGET = 1.05                        # uvloop Ir/op / evpy Ir/op >= this
SYS_SLACK = 0.05                        # "no more syscalls": evpy <= X + this
SUBJECT = "evpy"                        # the loop the speed-ups are about


# -- worker processes --------------------------------------------------------

def worker_env():
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = REPO + (os.pathsep + path if path else "")
    # Debug modes would slow some loops down far more than others.
    for var in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONMALLOC"):
        env.pop(var, None)
    return env


def run_worker(python, args, timeout):
    """Run ``python -m benchmarks._worker ARGS``; return the parsed result."""
    cmd = [python, "-m", "benchmarks._worker"] + args
    t0 = time.perf_counter()
    # Own session/process group: on a timeout or Ctrl-C the worker and
    # anything it started (servers, load generators, wrk) are killed
    # together.
    proc = subprocess.Popen(cmd, cwd=REPO, env=worker_env(),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        return {"ok": False, "error": "timed out after %gs" % timeout,
                "timed_out": True,
                "stderr": _tail(stderr), "returncode": None,
                "process_s": time.perf_counter() - t0}
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    result = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            try:
                result = json.loads(line[len(RESULT_MARKER):])
            except ValueError:
                pass
    if result is None:
        rc = proc.returncode
        why = ("killed by signal %d" % -rc if rc < 0
               else "exited with status %d" % rc)
        result = {"ok": False, "error": "worker %s without a result" % why}
    result["returncode"] = proc.returncode
    result["process_s"] = time.perf_counter() - t0
    if stderr.strip():
        result["stderr"] = _tail(stderr)
    return result


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(text, limit=4000):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text or ""
    return text if len(text) <= limit else "..." + text[-limit:]


def probe_loops(python, names):
    info = {}
    for name in names:
        res = run_worker(python, ["--probe", name], timeout=60)
        info[name] = res
    return info


# -- run metadata ------------------------------------------------------------

def _cmd_output(cmd, cwd=REPO):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_info():
    commit = _cmd_output(["git", "rev-parse", "HEAD"])
    status = _cmd_output(["git", "status", "--porcelain",
                          "--untracked-files=no"])
    branch = _cmd_output(["git", "rev-parse", "--abbrev-ref", "HEAD"])
    return {"commit": commit, "branch": branch,
            "dirty": bool(status) if status is not None else None}


def python_info(python):
    code = ("import json, platform, sys; print(json.dumps({"
            "'executable': sys.executable, 'version': sys.version, "
            "'implementation': platform.python_implementation(), "
            "'gil_enabled': getattr(sys, '_is_gil_enabled', lambda: True)()"
            "}))")
    out = _cmd_output([python, "-c", code])
    try:
        return json.loads(out)
    except (TypeError, ValueError):
        return {"executable": python, "error": "could not run interpreter"}


def machine_info():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    uname = platform.uname()
    return {"system": uname.system, "release": uname.release,
            "machine": uname.machine, "node": uname.node,
            "cpu_model": cpu or platform.processor(),
            "cpu_count": os.cpu_count(),
            "affinity": (len(os.sched_getaffinity(0))
                         if hasattr(os, "sched_getaffinity") else None),
            "loadavg_start": _loadavg()}


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# -- statistics --------------------------------------------------------------

def summarize(case, samples, loops):
    """Medians per metric and loop, speed-ups with 95% intervals and
    target status."""
    summary = {}
    saturated = [lp for lp in saturated_loops(samples) if lp != FLOOR]
    for metric in case.metrics:
        per_loop = {}
        for loop in loops:
            values = [s["metrics"][metric.name] for s in samples
                      if s["loop"] == loop and s.get("ok")]
            if values:
                med = statistics.median(values)
                per_loop[loop] = {
                    "median": med, "min": min(values), "max": max(values),
                    "count": len(values),
                    "median_ci95": bootstrap_median(values),
                    "spread": ((max(values) - min(values)) / med
                               if med else None)}
        speedup, paired, interval = {}, {}, {}
        subj = per_loop.get(SUBJECT)
        for other in loops:
            if other == SUBJECT or other not in per_loop or not subj:
                continue
            speedup[other] = _speedup(metric, subj["median"],
                                      per_loop[other]["median"])
            paired[other] = _paired_speedups(metric, samples, other)
            interval[other] = bootstrap_speedup(metric, samples, other)
        sat = saturated and metric.unit.endswith("/s")
        targets = []
        for tgt in case.targets:
            if tgt.applies_to(metric.name):
                t = _check_target(tgt, subj, speedup)
                if sat and tgt.kind == "ratio":
                    t["met"] = None
                    t["saturated"] = True
                targets.append(t)
        summary[metric.name] = {"loops": per_loop, "speedup": speedup,
                                "paired_speedups": paired,
                                "speedup_ci95": interval,
                                "saturated": bool(sat),
                                "targets": targets}
    return summary


def saturated_loops(samples):
    """Loops whose load generator used >= CLIENT_BUSY of its core (median
    over the rounds): req/s is then the client's limit, not the loop's."""
    per_loop = {}
    for s in samples:
        v = s.get("ok") and (s.get("metrics") or {}).get("client_busy")
        if v:
            per_loop.setdefault(s["loop"], []).append(v)
    return sorted(lp for lp, vals in per_loop.items()
                  if statistics.median(vals) >= CLIENT_BUSY)


def _percentile(sorted_vals, q):
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def bootstrap_speedup(metric, samples, other, seed=1):
    """95% interval of evpy's speed-up over ``other`` (ratio of medians),
    from a bootstrap over the rounds.  Rounds are interleaved (every loop
    once per round), so rounds are resampled as pairs.  None with fewer
    than 3 paired rounds."""
    by_round = {}
    for s in samples:
        if s.get("ok") and metric.name in (s.get("metrics") or {}):
            by_round.setdefault(s["round"], {})[s["loop"]] = \
                s["metrics"][metric.name]
    pairs = [(v[SUBJECT], v[other]) for _, v in sorted(by_round.items())
             if SUBJECT in v and other in v]
    if len(pairs) < 3:
        return None
    rng = random.Random(seed)
    k = len(pairs)
    stats = []
    for _ in range(BOOTSTRAP):
        pick = [pairs[rng.randrange(k)] for _ in range(k)]
        r = _speedup(metric, statistics.median(p[0] for p in pick),
                     statistics.median(p[1] for p in pick))
        if r is not None:
            stats.append(r)
    if not stats:
        return None
    stats.sort()
    return [_percentile(stats, 0.025), _percentile(stats, 0.975)]


def bootstrap_median(values, seed=1):
    """95% interval of the median of ``values`` (bootstrap)."""
    if len(values) < 3:
        return None
    rng = random.Random(seed)
    stats = sorted(statistics.median(rng.choice(values) for _ in values)
                   for _ in range(BOOTSTRAP))
    return [_percentile(stats, 0.025), _percentile(stats, 0.975)]


def bootstrap_median_ratio(new, old, seed=1):
    """95% interval of median(new) / median(old), unpaired bootstrap
    (None with fewer than 3 rounds on either side)."""
    if len(new) < 3 or len(old) < 3:
        return None
    rng = random.Random(seed)
    stats = []
    for _ in range(BOOTSTRAP):
        a = statistics.median(rng.choice(new) for _ in new)
        b = statistics.median(rng.choice(old) for _ in old)
        if b:
            stats.append(a / b)
    if not stats:
        return None
    stats.sort()
    return [_percentile(stats, 0.025), _percentile(stats, 0.975)]


def _speedup(metric, subject, other):
    """How many times better the subject is (> 1 means evpy wins)."""
    if metric.higher_is_better:
        return subject / other if other else None
    return other / subject if subject else None


def _paired_speedups(metric, samples, other):
    """Per-round speed-ups (measurements of the same round are adjacent)."""
    by_round = {}
    for s in samples:
        if s.get("ok"):
            by_round.setdefault(s["round"], {})[s["loop"]] = \
                s["metrics"][metric.name]
    out = []
    for rnd in sorted(by_round):
        vals = by_round[rnd]
        if SUBJECT in vals and other in vals:
            out.append(_speedup(metric, vals[SUBJECT], vals[other]))
    return out


def _check_target(tgt, subj, speedup):
    res = {"target": tgt.describe(), "kind": tgt.kind, "value": tgt.value,
           "against": tgt.against, "met": None}
    if tgt.kind == "ratio":
        got = speedup.get(tgt.against)
    else:
        got = subj["median"] if subj else None
    if got is not None:
        res["actual"] = got
        res["met"] = (got >= tgt.value if tgt.kind == "ratio"
                      else got <= tgt.value)
    return res


# -- output ------------------------------------------------------------------

def fmt_value(metric, value):
    if value is None:
        return "n/a"
    if metric.unit.endswith("/s"):
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if value >= scale:
                return "%.3g%s" % (value / scale, suffix)
        return "%.3g" % value
    if metric.unit == "ms":
        return "%.3f" % value
    if metric.unit in ("us", "B"):
        return "%.4g" % value if value < 100 else "%.0f" % value
    return "%.4g" % value


def fmt_ratio(value):
    return "n/a" if value is None else "%.2fx" % value


def fmt_ratio_ci(value, ci, flag_below=False):
    """'1.12x [0.98-1.25]'; a trailing '!' when flag_below and the whole
    interval lies below 1.0."""
    if value is None:
        return "n/a"
    if not ci:
        return "%.2fx" % value
    cell = "%.2fx [%.2f-%.2f]" % (value, ci[0], ci[1])
    if flag_below and ci[1] < 1.0:
        cell += " !"
    return cell


def build_table(results, loops, probes):
    subject_on = SUBJECT in loops
    others = [lp for lp in loops if lp != SUBJECT] if subject_on else []
    header = ["case", "metric", "rounds"] + [display_name(lp) for lp in loops]
    header += ["%s vs %s" % (SUBJECT, display_name(o)) for o in others]
    header += ["noise", "target"]
    rows = []
    for res in results:
        case = res["case_obj"]
        if res["skipped"]:
            continue
        for metric in case.metrics:
            summ = res["summary"][metric.name]
            label = metric.display + (" SAT" if summ.get("saturated")
                                      else "")
            row = [case.name, label, str(res["rounds"])]
            for lp in loops:
                if lp == FLOOR and case.floor is None:
                    row.append("-")
                elif not probes[lp].get("ok"):
                    row.append("n/a")
                elif lp in summ["loops"]:
                    cell = fmt_value(metric, summ["loops"][lp]["median"])
                    nerr = sum(1 for s in res["samples"]
                               if s["loop"] == lp and not s.get("ok"))
                    row.append(cell + ("*" if nerr else ""))
                else:
                    row.append("ERR")
            for o in others:
                if o == FLOOR and case.floor is None:
                    row.append("-")
                else:
                    row.append(fmt_ratio_ci(
                        summ["speedup"].get(o),
                        summ.get("speedup_ci95", {}).get(o),
                        flag_below=(o == "uvloop"
                                    and not summ.get("saturated"))))
            spreads = [v["spread"] for v in summ["loops"].values()
                       if v.get("spread") is not None and v["count"] > 1]
            row.append("%.0f%%" % (100 * max(spreads)) if spreads else "")
            row.append(_target_cell(summ["targets"]))
            rows.append(row)
    return header, rows


def _target_cell(targets):
    cells = []
    for t in targets:
        mark = {True: "ok", False: "MISS", None: "n/a"}[t["met"]]
        if t.get("saturated"):
            mark = "n/a (client saturated)"
        cells.append("%s %s" % (t["target"], mark))
    return "; ".join(cells)


def render(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    right = set(range(2, len(header) - 1))

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            c = str(c)
            out.append(c.rjust(widths[i]) if i in right
                       else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


# -- deterministic costs -----------------------------------------------------

def cost_loops(loops):
    """Python loops for the cost table, in the order evpy, uvloop,
    asyncio, then any other."""
    py = [lp for lp in loops if lp != FLOOR]
    first = [lp for lp in (SUBJECT, "uvloop", "asyncio") if lp in py]
    return first + [lp for lp in py if lp not in first]


def run_costs(results, loops, args, tool_info):
    """Run every cost measurement (COST_JOBS at a time) and store
    res["cost"] for each case with a cost."""
    jobs = []
    for res in results:
        case = res["case_obj"]
        if res["skipped"] or not case.has_cost:
            continue
        res["cost"] = {"n": list(case.cost_n), "unit": case.cost_unit,
                       "loops": {lp: {"runs": []} for lp in loops}}
        for lp in loops:
            for kind, n in costmod.jobs_for(case, lp, tool_info):
                jobs.append((res, lp, kind, n))
    if not jobs:
        return
    env = costmod.cost_env(worker_env())
    log("cost: %d runs (valgrind: %s, syscalls: %s), %d at a time ..."
        % (len(jobs), tool_info["ir"] or tool_info["why_ir"],
           tool_info["sys"][0] if tool_info["sys"] else tool_info["why_sys"],
           COST_JOBS))
    lock = threading.Lock()
    done = [0]

    unsupported = set()

    def one(job):
        res, lp, kind, n = job
        key = (res["case_obj"].name, lp)
        sizes = list(n) if isinstance(n, tuple) else [n]
        if key in unsupported:
            recs = [{"kind": kind, "n": k, "ok": False, "unsupported": True,
                     "error": "not supported by %s (see the other runs)"
                     % lp} for k in sizes]
        else:
            recs = costmod.run_job(kind, tool_info, args.python,
                                   res["case_obj"], lp, n, env)
            if "NotImplementedError" in (recs[0].get("error") or ""):
                for rec in recs:
                    rec["unsupported"] = True
                unsupported.add(key)
        with lock:
            res["cost"]["loops"][lp]["runs"].extend(recs)
            done[0] += 1
            rec = recs[0]
            sz = "/".join(str(k) for k in sizes)
            if rec.get("unsupported"):
                pass
            elif not rec["ok"]:
                log("  [cost %d/%d] %s %s %s n=%s: FAILED: %s"
                    % (done[0], len(jobs), res["case_obj"].name, lp,
                       kind, sz, rec.get("error")))
            elif args.verbose:
                log("  [cost %d/%d] %s %s %s n=%s: %s in %.1fs"
                    % (done[0], len(jobs), res["case_obj"].name, lp,
                       kind, sz, "/".join(str(r["count"]) for r in recs),
                       rec["seconds"]))
        return recs

    ex = concurrent.futures.ThreadPoolExecutor(COST_JOBS)
    try:
        for _ in ex.map(one, jobs):
            pass
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    for res in results:
        c = res.get("cost")
        if not c:
            continue
        for lp, d in c["loops"].items():
            for kind in ("ir", "sys"):
                if not tool_info[kind]:
                    d[kind + "_per_op"] = None
                    d[kind + "_error"] = tool_info["why_" + kind]
                    continue
                val, err = costmod.per_op(d["runs"], kind)
                d[kind + "_per_op"] = val
                if err:
                    d[kind + "_error"] = err
        c["target"] = cost_target(res["case_obj"], c["loops"])


def cost_target(case, per):
    """Issue 13's goal on the costs: evpy >= IR_TARGET x fewer instructions
    per op than uvloop and no more syscalls (+ SYS_SLACK); sock_* cases
    also below asyncio's loop."""
    ev = per.get(SUBJECT) or {}
    checks = [("uvloop", True)]
    if "_sock_" in case.name:
        checks.append(("asyncio", False))
    misses, measured = [], False
    for other, need_ratio in checks:
        o = per.get(other) or {}
        if ev.get("ir_per_op") and o.get("ir_per_op"):
            measured = True
            ratio = o["ir_per_op"] / ev["ir_per_op"]
            if ratio < (IR_TARGET if need_ratio else 1.0):
                misses.append("Ir %.2fx %s" % (ratio, other))
        if ev.get("sys_per_op") is not None and \
                o.get("sys_per_op") is not None:
            measured = True
            if ev["sys_per_op"] > o["sys_per_op"] + SYS_SLACK:
                misses.append("sys > %s" % other)
    if not measured:
        return {"met": None, "text": "n/a"}
    return {"met": not misses,
            "text": "ok" if not misses else "MISS (%s)" % ", ".join(misses)}


def _cost_missing(d):
    if not d.get("runs"):
        return "n/a"
    if any(r.get("unsupported") for r in d["runs"]):
        return "unsup"
    return "ERR"


def fmt_ir(d):
    if d is None:
        return "n/a"
    if d.get("ir_per_op") is None:
        return _cost_missing(d)
    return "{:,.0f}".format(d["ir_per_op"])


def fmt_sys(d):
    if d is None:
        return "n/a"
    if d.get("sys_per_op") is None:
        return _cost_missing(d)
    return "%.2f" % (round(d["sys_per_op"], 2) + 0.0)   # no "-0.00"


def build_cost_table(results, loops):
    lps = cost_loops(loops)
    header = ["case", "per"] + ["%s Ir/op" % lp for lp in lps]
    if SUBJECT in lps and "uvloop" in lps:
        header.append("uvloop/%s Ir" % SUBJECT)
    header += ["%s sys/op" % lp for lp in lps] + ["target"]
    rows = []
    for res in results:
        case = res["case_obj"]
        if res["skipped"]:
            continue
        c = res.get("cost")
        row = [case.name, case.cost_unit if c else "-"]
        per = c["loops"] if c else {}
        row += [fmt_ir(per.get(lp)) if c else "n/a" for lp in lps]
        if SUBJECT in lps and "uvloop" in lps:
            ev, uv = per.get(SUBJECT) or {}, per.get("uvloop") or {}
            if ev.get("ir_per_op") and uv.get("ir_per_op"):
                row.append("%.2fx" % (uv["ir_per_op"] / ev["ir_per_op"]))
            else:
                row.append("n/a")
        row += [fmt_sys(per.get(lp)) if c else "n/a" for lp in lps]
        row.append(c["target"]["text"] if c and c.get("target") else
                   "n/a")
        rows.append(row)
    return header, rows


def cost_footer(results, tool_info):
    lines = [
        "Costs: Ir/op = user-space instructions per op (valgrind "
        "cachegrind, whole worker process, child processes such as the "
        "load generator not counted); sys/op = syscalls per op of the "
        "worker process and its threads (%s). Both from runs at two sizes "
        "without warm-up: (count(n_hi) - count(n_lo)) / (ops(n_hi) - "
        "ops(n_lo))."
        % (tool_info["sys"][0] + " raw_syscalls:sys_enter"
           if tool_info["sys"] and tool_info["sys"][0] == "perf"
           else "strace -f" if tool_info["sys"] else "not measured"),
        "Cost target (issue 13): evpy >= %.2fx fewer Ir/op than uvloop and "
        "sys/op <= uvloop's (+%.2f); echo_sock_*/udp_sock_* also below "
        "asyncio's loop." % (IR_TARGET, SYS_SLACK)]
    if not tool_info["ir"]:
        lines.append("Ir/op not measured: %s." % tool_info["why_ir"])
    if not tool_info["sys"]:
        lines.append("sys/op not measured: %s." % tool_info["why_sys"])
    nocost = [(r["case_obj"].name, r["case_obj"].cost_why or "no cost "
               "function") for r in results
              if not r["skipped"] and not r["case_obj"].has_cost]
    if nocost:
        lines.append("No cost (n/a): %s." % "; ".join(
            "%s (%s)" % nc for nc in nocost))
    unsup = sorted({"%s on %s" % (r["case_obj"].name, lp) for r in results
                    for lp, d in ((r.get("cost") or {}).get("loops")
                                  or {}).items()
                    if any(x.get("unsupported") for x in d.get("runs", []))})
    if unsup:
        lines.append("unsup = the loop raises NotImplementedError: %s."
                     % ", ".join(unsup))
    errs = []
    for r in results:
        for lp, d in ((r.get("cost") or {}).get("loops") or {}).items():
            for kind in ("ir", "sys"):
                if d.get(kind + "_error") and d.get("runs") and not any(
                        r.get("unsupported") for r in d["runs"]):
                    errs.append("%s %s %s: %s" % (r["case_obj"].name, lp,
                                                  kind, d[kind + "_error"]))
    for e in errs:
        lines.append("COST ERR " + e)
    return "\n".join(lines)


# -- compare with a saved run ------------------------------------------------

def _values(case_doc, metric, loop):
    return [s["metrics"][metric] for s in case_doc.get("samples", [])
            if s.get("ok") and s.get("loop") == loop
            and metric in (s.get("metrics") or {})]


def compare(new_doc, old_doc):
    """Text tables: per case, metric and loop old vs new medians (95%
    intervals) and new/old; per case and loop old vs new cost per op."""
    old_cases = {c["name"]: c for c in old_doc.get("cases", [])}
    header = ["case", "metric", "loop", "old median [95%]",
              "new median [95%]", "new/old [95%]", "verdict"]
    rows, crows = [], []
    for c in new_doc.get("cases", []):
        o = old_cases.get(c["name"])
        if not o or c.get("skipped"):
            continue
        for m in c.get("metrics", []):
            metric = registry.Metric(m["name"], m["unit"],
                                     m["higher_is_better"], m["label"])
            loops = list(dict.fromkeys(s["loop"] for s in c["samples"]))
            for lp in loops:
                new = _values(c, m["name"], lp)
                old = _values(o, m["name"], lp)
                if not new or not old:
                    continue
                nm, om = statistics.median(new), statistics.median(old)
                ci = bootstrap_median_ratio(new, old)
                verdict = ""
                if ci and om:
                    better = ci[0] > 1.0 if metric.higher_is_better \
                        else ci[1] < 1.0
                    worse = ci[1] < 1.0 if metric.higher_is_better \
                        else ci[0] > 1.0
                    verdict = ("better" if better else "worse" if worse
                               else "same")
                rows.append([
                    c["name"], metric.display, display_name(lp),
                    _fmt_ci(metric, om, bootstrap_median(old)),
                    _fmt_ci(metric, nm, bootstrap_median(new)),
                    ("%.3f" % (nm / om) if om else "n/a")
                    + (" [%.3f-%.3f]" % tuple(ci) if ci else ""),
                    verdict])
        nc, oc = c.get("cost") or {}, o.get("cost") or {}
        for lp, d in (nc.get("loops") or {}).items():
            od = (oc.get("loops") or {}).get(lp) or {}
            cells = []
            for kind, fmt in (("ir", "{:,.0f}"), ("sys", "{:.2f}")):
                a, b = od.get(kind + "_per_op"), d.get(kind + "_per_op")
                cells += [fmt.format(a) if a is not None else "n/a",
                          fmt.format(b) if b is not None else "n/a",
                          "%+.1f%%" % (100 * (b / a - 1)) if a and b
                          is not None else "n/a"]
            crows.append([c["name"], display_name(lp)] + cells)
    out = ["Compared with %s (commit %s):" % (
        old_doc.get("started", "?"),
        ((old_doc.get("git") or {}).get("commit") or "?")[:10])]
    out.append(render(header, rows) if rows else "(no common timings)")
    if crows:
        out.append("")
        out.append(render(["case", "loop", "old Ir/op", "new Ir/op",
                           "Ir change", "old sys/op", "new sys/op",
                           "sys change"], crows))
    out.append("verdict: better/worse when the 95% interval of new/old "
               "(bootstrap over rounds) excludes 1.0, else same.")
    return "\n".join(out)


def _fmt_ci(metric, value, ci):
    cell = fmt_value(metric, value)
    if ci:
        cell += " [%s-%s]" % (fmt_value(metric, ci[0]),
                              fmt_value(metric, ci[1]))
    return cell


# -- main --------------------------------------------------------------------

def select_cases(all_cases, patterns, full=False):
    """Cases matching ``patterns``; full-matrix-only cases need ``full``
    (or their exact name)."""
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    out = []
    for c in all_cases:
        exact = c.name in pats
        if c.full_only and not (full or exact):
            continue
        if not pats or exact or any(p in c.name or p == c.group
                                    for p in pats):
            out.append(c)
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare evpy with the stock asyncio loop and uvloop.")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per case (default %d, %d with --quick)"
                    % (DEFAULT_ROUNDS, QUICK_ROUNDS))
    ap.add_argument("--quick", action="store_true",
                    help="%d rounds and smaller sizes" % QUICK_ROUNDS)
    ap.add_argument("--full", action="store_true",
                    help="include the full networking matrix (all echo "
                    "styles x 1/10/100 KiB x 1/10/100 connections)")
    ap.add_argument("--no-floor", action="store_true",
                    help="don't run the C floor column of networking cases")
    ap.add_argument("--cases", default="",
                    help="comma-separated substrings of case names "
                    "(or group names) to run")
    ap.add_argument("--loops", default=",".join(LOOP_NAMES),
                    help="comma-separated subset of %s" % ",".join(LOOP_NAMES))
    ap.add_argument("--save", "--json", dest="json", metavar="FILE",
                    help="also write the results (JSON) to FILE")
    ap.add_argument("--compare", metavar="FILE",
                    help="compare this run with a saved one (--save FILE "
                    "or benchmarks/results/*.json)")
    ap.add_argument("--plot", metavar="DIR",
                    help="write PNG charts of the timings to DIR "
                    "(matplotlib; see benchmarks/plot.py)")
    ap.add_argument("--load", metavar="FILE",
                    help="no run: chart a saved one (--save FILE or "
                    "benchmarks/results/*.json); needs --plot")
    ap.add_argument("--no-cost", action="store_true",
                    help="skip the deterministic costs (valgrind, perf)")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the deterministic costs, no timings")
    ap.add_argument("--no-save", action="store_true",
                    help="don't write benchmarks/results/<timestamp>.json")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the workers (default: this one)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed per worker process (default: "
                    "per case, usually 60); a loop that times out is not "
                    "retried for that case")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every case size by this factor")
    ap.add_argument("--list", action="store_true",
                    help="list the cases and exit")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print every sample")
    args = ap.parse_args(argv)
    loops = [lp.strip() for lp in args.loops.split(",") if lp.strip()]
    bad = [lp for lp in loops if lp not in LOOP_NAMES + EVPY_VARIANTS]
    if bad or not loops:
        ap.error("--loops: unknown %s (choose from %s)"
                 % (", ".join(bad) or "(empty)",
                    ", ".join(LOOP_NAMES + EVPY_VARIANTS)))
    args.loop_list = list(dict.fromkeys(loops))
    if args.no_cost and args.cost_only:
        ap.error("--no-cost and --cost-only exclude each other")
    if args.load and not args.plot:
        ap.error("--load needs --plot DIR")
    args.cost = not args.no_cost
    args.timings = not args.cost_only
    args.rounds_explicit = args.rounds is not None
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cases = select_cases(registry.load_all(), args.cases, args.full)
    if args.list:
        for c in registry.load_all():
            extra = []
            if c.full_only:
                extra.append("--full")
            if c.rounds:
                extra.append("<=%d rounds" % c.rounds)
            if c.floor:
                extra.append("C floor")
            if c.unit_note:
                extra.append(c.unit_note)
            if c.has_cost:
                extra.append("cost per %s at n=%d/%d" % (
                    c.cost_unit, c.cost_n[0], c.cost_n[1]))
            else:
                extra.append("no cost: %s" % (c.cost_why or "not defined"))
            print("%-28s %-6s n=%-7d quick_n=%-6d %s%s"
                  % (c.name, c.group, c.n, c.quick_n, c.description,
                     " [%s]" % ", ".join(extra) if extra else ""))
        return 0
    if args.load:
        with open(args.load) as f:
            return _plot(json.load(f), args.plot)
    if not cases:
        log("no case matches --cases %r (see --list)" % args.cases)
        return 2

    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    loops = list(args.loop_list)
    if args.timings and not args.no_floor and any(c.floor for c in cases):
        loops.append(FLOOR)
    log("probing loops with %s ..." % args.python)
    probes = probe_loops(args.python, loops)
    active = []
    for lp in loops:
        p = probes[lp]
        if p.get("ok"):
            active.append(lp)
            log("  %-8s %s %s %s" % (display_name(lp), p.get("class"),
                                     p.get("version", ""),
                                     p.get("file") or ""))
        else:
            log("  %-8s NOT AVAILABLE - shown as n/a: %s"
                % (display_name(lp), p.get("error")))
    if not [lp for lp in active if lp != FLOOR]:
        log("no loop available; nothing to do")
        return 2

    doc = {
        "schema": 2,
        "started": started.isoformat(),
        "command": [sys.executable, "-m", "benchmarks"] + list(
            sys.argv[1:] if argv is None else argv),
        "config": {"rounds": args.rounds, "quick": args.quick,
                   "cases": args.cases, "loops": loops,
                   "scale": args.scale, "python": args.python,
                   "timings": args.timings, "cost": args.cost},
        "python": python_info(args.python),
        "machine": machine_info(),
        "git": git_info(),
        "loops": probes,
        "cases": [],
        "interrupted": False,
    }

    old_doc = None
    if args.compare:
        with open(args.compare) as f:
            old_doc = json.load(f)
    tool_info = None
    if args.cost:
        tool_info = costmod.tools()
        doc["cost_tools"] = {
            "ir": tool_info["ir"], "why_ir": tool_info["why_ir"],
            "sys": list(tool_info["sys"]) if tool_info["sys"] else None,
            "why_sys": tool_info["why_sys"]}
    results = []
    floor_cache = {}
    try:
        for ci, case in enumerate(cases, 1):
            res = run_case(case, ci, len(cases), active, loops, args,
                           floor_cache)
            results.append(res)
        if args.cost:
            run_costs(results, [lp for lp in active if lp != FLOOR], args,
                      tool_info)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        log("\ninterrupted; reporting the finished cases")

    for res in results:
        res["summary"] = summarize(res["case_obj"], res["samples"], loops)
    doc["finished"] = datetime.datetime.now(
        datetime.timezone.utc).isoformat()
    doc["duration_s"] = time.perf_counter() - t_start
    doc["machine"]["loadavg_end"] = _loadavg()
    doc["cases"] = [_case_doc(r) for r in results]

    if args.timings:
        header, rows = build_table(results, loops, probes)
        doc["table"] = {"header": header, "rows": rows}
        print()
        print(render(header, rows))
    if args.cost:
        cheader, crows = build_cost_table(
            results, [lp for lp in loops if lp != FLOOR])
        doc["cost_table"] = {"header": cheader, "rows": crows}
        print()
        print(render(cheader, crows))
    print()
    print(footer(doc, loops, probes, args))
    if args.cost:
        print(cost_footer(results, tool_info))
    if old_doc is not None:
        print()
        print(compare(doc, old_doc))
    save(doc, started, args)
    if args.plot and args.timings:
        _plot(doc, args.plot)
    return 130 if doc["interrupted"] else 0


def _plot(doc, outdir):
    from benchmarks import plot
    paths = plot.plot(doc, outdir)
    for path in paths:
        log("chart written to %s" % path)
    if not paths:
        log("no timed case to chart")
    return 0 if paths else 1


def run_case(case, ci, ncases, active, loops, args, floor_cache=None):
    n = max(1, int(case.size(args.quick) * args.scale))
    warmup_n = max(1, n // 10) if case.warmup else 0
    rounds = args.rounds
    if case.rounds and not args.rounds_explicit:
        rounds = min(rounds, case.rounds)
    res = {"case_obj": case, "n": n, "warmup_n": warmup_n, "samples": [],
           "skipped": None, "rounds": rounds if args.timings else 0}
    if case.available is not None:
        why = case.available()
        if why:
            res["skipped"] = why
            log("[%d/%d] %s: skipped (%s)" % (ci, ncases, case.name, why))
            return res
    if not args.timings:
        return res
    # The C floor is one more column for cases that have one; cases sharing
    # a floor_key (same size and concurrency, other API style) reuse the
    # floor samples measured earlier in this run.
    cache = floor_cache if floor_cache is not None else {}
    shared = None
    if case.floor is not None and FLOOR in active:
        shared = cache.setdefault((case.floor_key, n), {})
    case_loops = [lp for lp in active if lp != FLOOR or shared is not None]
    log("[%d/%d] %s (n=%d, %d rounds)" % (ci, ncases, case.name, n, rounds))
    timeout = args.timeout or case.timeout * max(1.0, args.scale)
    hung, unsupported = set(), set()
    for rnd in range(rounds):
        k = rnd % len(case_loops)
        order = case_loops[k:] + case_loops[:k]
        for pos, lp in enumerate(order):
            if lp in hung or lp in unsupported:
                continue
            if lp == FLOOR and rnd in shared:
                r = dict(shared[rnd])
                r["shared_from"] = r.get("shared_from") or r["case"]
                r.update(round=rnd, order=pos, loop=lp)
                res["samples"].append(r)
                continue
            r = run_worker(args.python,
                           ["--case", case.name, "--loop", lp, "--n", str(n),
                            "--warmup-n", str(warmup_n)],
                           timeout=timeout)
            r.update(round=rnd, order=pos, loop=lp)
            r.setdefault("case", case.name)
            res["samples"].append(r)
            if lp == FLOOR and r.get("ok"):
                shared[rnd] = r
            if r.get("timed_out"):
                hung.add(lp)
                log("    round %d %s: TIMED OUT after %gs; not retrying %s "
                    "for this case" % (rnd + 1, display_name(lp), timeout,
                                       display_name(lp)))
            elif not r.get("ok"):
                err = r.get("error") or ""
                if err.startswith("NotImplementedError"):
                    unsupported.add(lp)
                    log("    %s: not supported, skipping its other rounds: "
                        "%s" % (display_name(lp), err))
                else:
                    log("    round %d %s: FAILED: %s"
                        % (rnd + 1, display_name(lp), err))
                if args.verbose and r.get("traceback"):
                    log(r["traceback"])
            elif args.verbose:
                vals = ", ".join(
                    "%s=%s" % (m.display, fmt_value(m, r["metrics"][m.name]))
                    for m in case.metrics)
                log("    round %d %-8s %s" % (rnd + 1, display_name(lp),
                                              vals))
    return res


def _case_doc(res):
    case = res["case_obj"]
    return {
        "name": case.name, "group": case.group,
        "description": case.description,
        "n": res["n"], "warmup_n": res["warmup_n"],
        "skipped": res["skipped"], "rounds": res.get("rounds"),
        "full_only": case.full_only,
        "floor_key": list(case.floor_key) if case.floor_key else None,
        "metrics": [{"name": m.name, "unit": m.unit, "label": m.display,
                     "higher_is_better": m.higher_is_better}
                    for m in case.metrics],
        "targets": [{"kind": t.kind, "value": t.value, "against": t.against,
                     "metric": t.metric, "text": t.describe()}
                    for t in case.targets],
        "summary": res.get("summary", {}),
        "samples": res["samples"],
        "cost": _cost_doc(res),
        "cost_why": case.cost_why if not case.has_cost else "",
    }


def _cost_doc(res):
    c = res.get("cost")
    if not c:
        return None
    return {"n": c["n"], "unit": c["unit"], "target": c.get("target"),
            "loops": c["loops"]}


def footer(doc, loops, probes, args):
    lines = []
    py = doc["python"]
    lines.append("python %s | %s, %s CPUs | commit %s%s | %s%s | %.0fs"
                 % (py.get("version", "?").split()[0],
                    doc["machine"]["cpu_model"], doc["machine"]["cpu_count"],
                    (doc["git"]["commit"] or "?")[:10],
                    " (dirty)" if doc["git"]["dirty"] else "",
                    "%d rounds" % args.rounds if args.timings
                    else "costs only", ", quick sizes" if args.quick else "",
                    doc["duration_s"]))
    load = [doc["machine"].get("loadavg_start"),
            doc["machine"].get("loadavg_end")]
    if all(load):
        busy = max(load[0][0], load[1][0]) > 0.5 * (
            doc["machine"]["cpu_count"] or 1)
        lines.append("load average (1 min) %.2f at start, %.2f at end%s"
                     % (load[0][0], load[1][0],
                        " - machine busy, expect noise" if busy else ""))
    lines.append("Values are medians over rounds, each from a fresh process. "
                 "'noise' = largest (max-min)/median over the loops.")
    if SUBJECT in loops and len(loops) > 1 and args.timings:
        lines.append("'%s vs X' = %s's speed-up over X (higher is better; "
                     "X/%s for time metrics), from the medians; [a-b] = its "
                     "95%% interval (bootstrap over rounds, resampled in "
                     "pairs: the rounds are interleaved; >= 3 rounds). '!' = "
                     "the whole interval is below 1.0 against uvloop. 'SAT' "
                     "= the load generator's core was >= %d%% busy (median "
                     "round) for a Python loop: that req/s is the client's "
                     "limit, no claim and no target."
                     % (SUBJECT, SUBJECT, SUBJECT, CLIENT_BUSY * 100))
    for lp in loops:
        if not probes[lp].get("ok"):
            lines.append("NOTE: %s is not available (%s); its columns show "
                         "n/a." % (display_name(lp), probes[lp].get("error")))
    groups = {c["group"] for c in doc["cases"] if not c["skipped"]}
    capped = {}
    for c in doc["cases"]:
        if c.get("rounds") and c["rounds"] != args.rounds and not c["skipped"]:
            capped.setdefault(c["rounds"], []).append(c["name"])
    if capped:
        lines.append("Fewer rounds for the heavy cases: %s (see the 'rounds' "
                     "column; --rounds N forces N everywhere)."
                     % "; ".join("%d for %s" % (r, _abbrev(names))
                                 for r, names in sorted(capped.items())))
    if "net" in groups:
        lines.append(
            "Networking: server pinned to CPU %s, load generator "
            "(benchmarks/c/loadgen.c, wrk) to CPU %s; 127.0.0.1 only. "
            "Echo: 0.5 s warm-up then n ms; latency per request/response; "
            "'srv CPU us/req' = server CPU time (sum of "
            "/proc/PID/task/*/schedstat, ns) over the timed window / "
            "responses. 'C floor' = "
            "benchmarks/c/echo_server.c under the same client, measured "
            "once per size/concurrency and round and shared by the styles."
            % tuple(reversed(_net_cpus())))
    busy = _client_bound(doc["cases"])
    if busy:
        lines.append("Load generator saturated (its core >=%d%% busy in the "
                     "median round, so req/s is a lower bound there): %s."
                     % (CLIENT_BUSY * 100, "; ".join(
                         "%s (%s)" % (name, ", ".join(lps))
                         for name, lps in busy)))
    failed = {}
    for case in doc["cases"]:
        for s in case["samples"]:
            if not s.get("ok"):
                failed.setdefault((s["loop"], s.get("error")),
                                  []).append(case["name"])
    if failed:
        lines.append("* = some rounds failed; ERR = all rounds failed:")
    for (lp, err), names in sorted(failed.items(),
                                   key=lambda kv: (kv[0][0], str(kv[0][1]))):
        names = list(dict.fromkeys(names))
        lines.append("FAILED on %s (%s): %s"
                     % (display_name(lp), ", ".join(names), err))
    for case in doc["cases"]:
        if case["skipped"]:
            lines.append("SKIPPED: %s: %s" % (case["name"], case["skipped"]))
    if SUBJECT in loops:
        if "loop" in groups:
            lines.append("Targets (issue): call_soon chain >=1.4x uvloop, "
                         "timers >=1.7x uvloop, sleep(0) >=1.2x uvloop, "
                         "call_soon_threadsafe >=1.0x uvloop, median 1 ms "
                         "timer overshoot <=0.1 ms.")
        if "net" in groups:
            lines.append("Targets (issue 4): Protocol echo 1 KiB c=10 >=0.95x "
                         "C floor (req/s); streams >=1.35x uvloop; sock_* "
                         ">=2x uvloop; HTTP >=1.2x uvloop per server "
                         "CPU-second (srv CPU us/req); <=1 KiB RSS per idle "
                         "connection.")
    if "dgram" in groups:
        lines.append("UDP: server pinned to CPU %s, "
                     "benchmarks/c/udp_loadgen.c to CPU %s keeping N "
                     "datagrams outstanding (_o<N>) on one socket; 0.5 s "
                     "warm-up then n ms. 'C floor' = "
                     "benchmarks/c/udp_echo_server.c." % tuple(
                         reversed(_net_cpus())))
    if SUBJECT in loops and groups & {"dgram", "proc"}:
        lines.append("Targets (issue 5): >=1.0x uvloop on UDP echo "
                     "(dgram/s), pipe throughput (MiB/s) and spawn+reap "
                     "(proc/s).")
    return "\n".join(lines)


CLIENT_BUSY = 0.9


def _abbrev(names):
    """'echo_* (10), http_keepalive_c100' for a list of case names."""
    by_prefix = {}
    for n in names:
        by_prefix.setdefault(n.split("_", 1)[0], []).append(n)
    return ", ".join(v[0] if len(v) == 1 else "%s_* (%d)" % (k, len(v))
                     for k, v in by_prefix.items())


def _client_bound(cases):
    """[(case, [loops])] whose load generator used >= CLIENT_BUSY of a core."""
    out = []
    for case in cases:
        per_loop = {}
        for s in case["samples"]:
            v = s.get("ok") and (s.get("metrics") or {}).get("client_busy")
            if v:
                per_loop.setdefault(s["loop"], []).append(v)
        lps = [display_name(lp) for lp, vals in per_loop.items()
               if statistics.median(vals) >= CLIENT_BUSY]
        if lps:
            out.append((case["name"], lps))
    return out


def _net_cpus():
    try:
        from benchmarks import netutil
        c, s = netutil.cpus()
    except Exception:
        c = s = None
    return ("-" if c is None else c), ("-" if s is None else s)


def save(doc, started, args):
    paths = []
    if not args.no_save:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        paths.append(os.path.join(
            RESULTS_DIR, started.strftime("%Y%m%d-%H%M%S") + ".json"))
    if args.json:
        paths.append(args.json)
    for path in paths:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False)
            f.write("\n")
        log("results written to %s" % path)


if __name__ == "__main__":
    sys.exit(main())
