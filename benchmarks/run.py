"""Benchmark runner: every case on evpy, the stock asyncio loop and uvloop.

    python -m benchmarks [--quick] [--rounds N] [--cases SUBSTR,...]
                         [--loops evpy,asyncio,uvloop] [--json PATH]
    python benchmarks/run.py ...          (same thing)

Every measurement is one fresh worker process (``benchmarks._worker``).
Measurements are interleaved: for each case, round r runs every loop once,
the loop order rotated by one each round, so slow drifts of a shared
machine hit all loops alike.  The table shows medians over the rounds and
evpy's speed-up over the other loops (higher is better for every ratio).
Results, with all raw samples, go to benchmarks/results/<timestamp>.json.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):          # python benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    __package__ = "benchmarks"

from benchmarks import registry                                  # noqa: E402
from benchmarks._worker import RESULT_MARKER                     # noqa: E402
from benchmarks.loops import LOOP_NAMES                          # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_ROUNDS = 7
QUICK_ROUNDS = 3
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
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=worker_env(),
                              stdin=subprocess.DEVNULL,
                              capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {"ok": False, "error": "timed out after %gs" % timeout,
                "timed_out": True,
                "stderr": _tail(exc.stderr), "returncode": None,
                "process_s": time.perf_counter() - t0}
    result = None
    for line in proc.stdout.splitlines():
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
    if proc.stderr.strip():
        result["stderr"] = _tail(proc.stderr)
    return result


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
    """Medians per metric and loop, speed-ups and target status."""
    summary = {}
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
                    "spread": ((max(values) - min(values)) / med
                               if med else None)}
        speedup, paired = {}, {}
        subj = per_loop.get(SUBJECT)
        for other in loops:
            if other == SUBJECT or other not in per_loop or not subj:
                continue
            speedup[other] = _speedup(metric, subj["median"],
                                      per_loop[other]["median"])
            paired[other] = _paired_speedups(metric, samples, other)
        targets = []
        for tgt in case.targets:
            if tgt.applies_to(metric.name):
                targets.append(_check_target(tgt, subj, speedup))
        summary[metric.name] = {"loops": per_loop, "speedup": speedup,
                                "paired_speedups": paired,
                                "targets": targets}
    return summary


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
    if metric.unit == "ops/s":
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if value >= scale:
                return "%.3g%s" % (value / scale, suffix)
        return "%.3g" % value
    if metric.unit == "ms":
        return "%.3f" % value
    return "%.4g" % value


def fmt_ratio(value):
    return "n/a" if value is None else "%.2fx" % value


def build_table(results, loops, probes):
    subject_on = SUBJECT in loops
    others = [lp for lp in loops if lp != SUBJECT] if subject_on else []
    header = ["case", "metric"] + list(loops)
    header += ["%s vs %s" % (SUBJECT, o) for o in others]
    header += ["noise", "target"]
    rows = []
    for res in results:
        case = res["case_obj"]
        for metric in case.metrics:
            summ = res["summary"][metric.name]
            row = [case.name, metric.display]
            for lp in loops:
                if not probes[lp].get("ok"):
                    row.append("n/a")
                elif lp in summ["loops"]:
                    cell = fmt_value(metric, summ["loops"][lp]["median"])
                    nerr = sum(1 for s in res["samples"]
                               if s["loop"] == lp and not s.get("ok"))
                    row.append(cell + ("*" if nerr else ""))
                else:
                    row.append("ERR")
            for o in others:
                row.append(fmt_ratio(summ["speedup"].get(o)))
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


# -- main --------------------------------------------------------------------

def select_cases(all_cases, patterns):
    if not patterns:
        return all_cases
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    return [c for c in all_cases
            if any(p in c.name or p == c.group for p in pats)]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare evpy with the stock asyncio loop and uvloop.")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per case (default %d, %d with --quick)"
                    % (DEFAULT_ROUNDS, QUICK_ROUNDS))
    ap.add_argument("--quick", action="store_true",
                    help="%d rounds and smaller sizes" % QUICK_ROUNDS)
    ap.add_argument("--cases", default="",
                    help="comma-separated substrings of case names "
                    "(or group names) to run")
    ap.add_argument("--loops", default=",".join(LOOP_NAMES),
                    help="comma-separated subset of %s" % ",".join(LOOP_NAMES))
    ap.add_argument("--json", metavar="PATH",
                    help="also write the results to PATH")
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
    bad = [lp for lp in loops if lp not in LOOP_NAMES]
    if bad or not loops:
        ap.error("--loops: unknown %s (choose from %s)"
                 % (", ".join(bad) or "(empty)", ", ".join(LOOP_NAMES)))
    args.loop_list = list(dict.fromkeys(loops))
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cases = select_cases(registry.load_all(), args.cases)
    if args.list:
        for c in registry.load_all():
            print("%-28s %-6s n=%-7d quick_n=%-6d %s"
                  % (c.name, c.group, c.n, c.quick_n, c.description))
        return 0
    if not cases:
        log("no case matches --cases %r (see --list)" % args.cases)
        return 2

    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    loops = args.loop_list
    log("probing loops with %s ..." % args.python)
    probes = probe_loops(args.python, loops)
    active = []
    for lp in loops:
        p = probes[lp]
        if p.get("ok"):
            active.append(lp)
            log("  %-8s %s %s %s" % (lp, p.get("class"), p.get("version", ""),
                                     p.get("file") or ""))
        else:
            log("  %-8s NOT AVAILABLE - shown as n/a: %s"
                % (lp, p.get("error")))
    if not active:
        log("no loop available; nothing to do")
        return 2

    doc = {
        "schema": 1,
        "started": started.isoformat(),
        "command": [sys.executable, "-m", "benchmarks"] + list(
            sys.argv[1:] if argv is None else argv),
        "config": {"rounds": args.rounds, "quick": args.quick,
                   "cases": args.cases, "loops": loops,
                   "scale": args.scale, "python": args.python},
        "python": python_info(args.python),
        "machine": machine_info(),
        "git": git_info(),
        "loops": probes,
        "cases": [],
        "interrupted": False,
    }

    results = []
    try:
        for ci, case in enumerate(cases, 1):
            res = run_case(case, ci, len(cases), active, loops, args)
            results.append(res)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        log("\ninterrupted; reporting the finished cases")

    for res in results:
        res["summary"] = summarize(res["case_obj"], res["samples"], loops)
    header, rows = build_table(results, loops, probes)
    doc["finished"] = datetime.datetime.now(
        datetime.timezone.utc).isoformat()
    doc["duration_s"] = time.perf_counter() - t_start
    doc["machine"]["loadavg_end"] = _loadavg()
    doc["cases"] = [_case_doc(r) for r in results]
    doc["table"] = {"header": header, "rows": rows}

    print()
    print(render(header, rows))
    print()
    print(footer(doc, loops, probes, args))
    save(doc, started, args)
    return 130 if doc["interrupted"] else 0


def run_case(case, ci, ncases, active, loops, args):
    n = max(1, int(case.size(args.quick) * args.scale))
    warmup_n = max(1, n // 10) if case.warmup else 0
    res = {"case_obj": case, "n": n, "warmup_n": warmup_n, "samples": [],
           "skipped": None}
    if case.available is not None:
        why = case.available()
        if why:
            res["skipped"] = why
            log("[%d/%d] %s: skipped (%s)" % (ci, ncases, case.name, why))
            return res
    log("[%d/%d] %s (n=%d, %d rounds)"
        % (ci, ncases, case.name, n, args.rounds))
    timeout = args.timeout or case.timeout
    hung = set()
    for rnd in range(args.rounds):
        k = rnd % len(active)
        order = active[k:] + active[:k]
        for pos, lp in enumerate(order):
            if lp in hung:
                continue
            r = run_worker(args.python,
                           ["--case", case.name, "--loop", lp, "--n", str(n),
                            "--warmup-n", str(warmup_n)],
                           timeout=timeout)
            r.update(round=rnd, order=pos, loop=lp)
            res["samples"].append(r)
            if r.get("timed_out"):
                hung.add(lp)
                log("    round %d %s: TIMED OUT after %gs; not retrying %s "
                    "for this case" % (rnd + 1, lp, timeout, lp))
            elif not r.get("ok"):
                log("    round %d %s: FAILED: %s" % (rnd + 1, lp,
                                                     r.get("error")))
                if args.verbose and r.get("traceback"):
                    log(r["traceback"])
            elif args.verbose:
                vals = ", ".join(
                    "%s=%s" % (m.display, fmt_value(m, r["metrics"][m.name]))
                    for m in case.metrics)
                log("    round %d %-8s %s" % (rnd + 1, lp, vals))
    return res


def _case_doc(res):
    case = res["case_obj"]
    return {
        "name": case.name, "group": case.group,
        "description": case.description,
        "n": res["n"], "warmup_n": res["warmup_n"],
        "skipped": res["skipped"],
        "metrics": [{"name": m.name, "unit": m.unit, "label": m.display,
                     "higher_is_better": m.higher_is_better}
                    for m in case.metrics],
        "targets": [{"kind": t.kind, "value": t.value, "against": t.against,
                     "metric": t.metric, "text": t.describe()}
                    for t in case.targets],
        "summary": res.get("summary", {}),
        "samples": res["samples"],
    }


def footer(doc, loops, probes, args):
    lines = []
    py = doc["python"]
    lines.append("python %s | %s, %s CPUs | commit %s%s | %d rounds%s | %.0fs"
                 % (py.get("version", "?").split()[0],
                    doc["machine"]["cpu_model"], doc["machine"]["cpu_count"],
                    (doc["git"]["commit"] or "?")[:10],
                    " (dirty)" if doc["git"]["dirty"] else "",
                    args.rounds, ", quick sizes" if args.quick else "",
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
    if SUBJECT in loops and len(loops) > 1:
        lines.append("'%s vs X' = %s's speed-up over X (higher is better; "
                     "X/%s for time metrics)." % (SUBJECT, SUBJECT, SUBJECT))
    for lp in loops:
        if not probes[lp].get("ok"):
            lines.append("NOTE: %s is not available (%s); its columns show "
                         "n/a." % (lp, probes[lp].get("error")))
    failed = {}
    for case in doc["cases"]:
        for s in case["samples"]:
            if not s.get("ok"):
                failed.setdefault((case["name"], s["loop"]),
                                  s.get("error"))
    if failed:
        lines.append("* = some rounds failed; ERR = all rounds failed:")
    for (name, lp), err in sorted(failed.items()):
        lines.append("FAILED: %s on %s: %s" % (name, lp, err))
    for case in doc["cases"]:
        if case["skipped"]:
            lines.append("SKIPPED: %s: %s" % (case["name"], case["skipped"]))
    if SUBJECT in loops:
        lines.append("Targets (issue): call_soon chain >=1.4x uvloop, timers "
                     ">=1.7x uvloop, sleep(0) >=1.2x uvloop, "
                     "call_soon_threadsafe >=1.0x uvloop, median 1 ms timer "
                     "overshoot <=0.1 ms.")
    return "\n".join(lines)


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
