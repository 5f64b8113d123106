"""Run one benchmark case on one event loop and print one JSON result line.

    python -m benchmarks._worker --case call_soon_chain --loop uvloop --n 1000
    python -m benchmarks._worker --probe evpy
    python -m benchmarks._worker --case echo_protocol_1k_c10 --loop c --n 2000
    python -m benchmarks._worker --case call_soon_chain --loop evpy --n 1000 \
        --cost

``--cost`` runs the case's cost function (see registry.case) once, with no
warm-up, and reports the number of ops it did; the runner runs that under
valgrind and perf (benchmarks/cost.py).

``--loop c`` runs the case's C floor (a plain C server under the same
client) instead of a Python event loop.

The runner starts a fresh process of this module for every measurement.
The result is the last stdout line starting with ``RESULT_MARKER``; anything
else the case prints is ignored.  Exit status 0 means success; on failure the
JSON line still says why (``"ok": false``) unless the process crashed.
"""

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import sysconfig
import time
import traceback

RESULT_MARKER = "@@benchmark-result@@ "
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arrange_sys_path():
    """Choose which evpy gets imported.

    ``python -m`` from the repo root puts the checkout first on sys.path,
    so ``import evpy`` finds the source tree.  That is what we want after
    ``setup.py build_ext --inplace``; without an in-place extension for
    this interpreter, the checkout would shadow an installed evpy (e.g. the
    venv of ``make bench``) and fail, so move the checkout to the end.
    """
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    if os.path.exists(os.path.join(REPO, "evpy", "_core" + suffix)):
        return "in-place"
    here = [p for p in sys.path
            if os.path.abspath(p or os.curdir) == REPO]
    if here:
        sys.path[:] = [p for p in sys.path if p not in here] + [REPO]
    return "installed"


def emit(obj):
    sys.stdout.write(RESULT_MARKER + json.dumps(obj) + "\n")
    sys.stdout.flush()


def probe_floor():
    """The C floor: build the C tools (cached in benchmarks/.build/)."""
    from benchmarks import netutil
    try:
        paths = netutil.build_all()
    except Exception as exc:
        emit({"ok": False, "loop": "c",
              "error": "%s: %s" % (type(exc).__name__, exc)})
        return 1
    cc = netutil.compiler()
    version = ""
    try:
        import subprocess
        version = subprocess.run([cc, "--version"], capture_output=True,
                                 text=True, timeout=30).stdout.splitlines()[0]
    except Exception:
        pass
    emit({"ok": True, "loop": "c", "class": "C epoll (benchmarks/c)",
          "version": version, "file": paths.get("echo_server"),
          "tools": paths})
    return 0


def run_floor(case_name, n):
    """Run the case's C floor measurement (no Python event loop)."""
    from benchmarks import registry
    out = {"ok": False, "case": case_name, "loop": "c", "n": n,
           "pid": os.getpid(), "loop_class": "C"}
    try:
        spec = registry.get(case_name)
    except KeyError:
        out["error"] = "unknown case %r" % case_name
        emit(out)
        return 2
    t_start = time.perf_counter()
    try:
        if spec.floor is None:
            raise RuntimeError("case %s has no C floor" % case_name)
        metrics = spec.floor(n)
        missing = [m.name for m in spec.metrics if m.name not in metrics]
        if missing:
            raise RuntimeError("floor returned no value for %s" % missing)
        out["metrics"] = {k: float(v) for k, v in metrics.items()}
        out["ok"] = True
    except BaseException as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
        out["traceback"] = traceback.format_exc()
    out["wall_s"] = out["run_wall_s"] = time.perf_counter() - t_start
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit(out)
    return 0 if out["ok"] else 1


def probe(loop_name):
    from benchmarks import loops
    if loop_name == "c":
        return probe_floor()
    try:
        info = loops.describe(loop_name)
    except loops.LoopUnavailable as exc:
        emit({"ok": False, "loop": loop_name, "error": str(exc)})
        return 2
    except Exception as exc:
        emit({"ok": False, "loop": loop_name,
              "error": "%s: %s" % (type(exc).__name__, exc),
              "traceback": traceback.format_exc()})
        return 1
    info["ok"] = True
    emit(info)
    return 0


def _cost_once(spec, loop_name, n):
    """Run the case (or its cost function) once with ``n``, no warm-up, on
    a fresh loop; returns the number of ops done."""
    from benchmarks import loops
    loop = loops.new_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        if spec.cost is True:
            spec.fn(loop, n)
            return float(n)
        return float(spec.cost(loop, n)["cost_ops"])
    finally:
        try:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        except Exception:
            pass
        asyncio.set_event_loop(None)


def run_cost(case_name, loop_name, n, n_lo=None):
    """Cost mode: run the case (or its cost function) once with ``n`` and
    no warm-up; report how many ops it did (``cost_ops``).  The runner
    runs this under valgrind / perf at two sizes and divides the difference
    in instructions / syscalls by the difference in ops.

    With ``n_lo`` (the valgrind pair mode) the process forks once the
    modules are imported: the child runs ``n``, the parent waits for it,
    then runs ``n_lo``.  Each process gets its own valgrind summary (the
    child's counts include what was done before the fork, like the
    parent's), so one valgrind start-up serves both sizes.  The result has
    ``pid``/``cost_ops`` for ``n_lo`` and ``pid_hi``/``cost_ops_hi``.
    """
    from benchmarks import loops, registry
    out = {"ok": False, "case": case_name, "loop": loop_name, "n": n,
           "pid": os.getpid(), "cost": True}
    try:
        spec = registry.get(case_name)
        if not spec.has_cost:
            raise KeyError(case_name)
    except KeyError:
        out["error"] = "case %r has no cost" % case_name
        emit(out)
        return 2
    try:
        loops.describe(loop_name)          # imports the loop's package
    except loops.LoopUnavailable as exc:
        out["error"] = str(exc)
        emit(out)
        return 2
    except Exception:
        pass
    try:
        if n_lo is None:
            out["cost_ops"] = _cost_once(spec, loop_name, n)
        else:
            out.update(n=n_lo, n_hi=n)
            hi = _cost_in_child(spec, loop_name, n)
            if not hi.get("ok"):
                raise RuntimeError("n=%d: %s" % (n, hi.get("error")))
            out["pid_hi"], out["cost_ops_hi"] = hi["pid"], hi["cost_ops"]
            out["cost_ops"] = _cost_once(spec, loop_name, n_lo)
        out["ok"] = True
    except BaseException as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
        out["traceback"] = traceback.format_exc()
    emit(out)
    code = 0 if out["ok"] else 1
    if n_lo is not None:
        # The child ended with os._exit(): skip the interpreter's
        # finalization here too, or only this count would include it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _cost_in_child(spec, loop_name, n):
    """Fork; the child runs ``n`` and reports through a pipe."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = {"pid": os.getpid(), "ok": False}
        code = 1
        try:
            res["cost_ops"] = _cost_once(spec, loop_name, n)
            res["ok"] = True
            code = 0
        except BaseException as exc:
            res["error"] = "%s: %s" % (type(exc).__name__, exc)
        try:
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {"ok": False, "error": "child gave no result"}


def run_case(case_name, loop_name, n, warmup_n):
    from benchmarks import loops, registry
    out = {"ok": False, "case": case_name, "loop": loop_name, "n": n,
           "pid": os.getpid()}
    try:
        spec = registry.get(case_name)
    except KeyError:
        out["error"] = "unknown case %r" % case_name
        emit(out)
        return 2
    try:
        loop = loops.new_loop(loop_name)
    except loops.LoopUnavailable as exc:
        out["error"] = str(exc)
        emit(out)
        return 2
    out["loop_class"] = "%s.%s" % (type(loop).__module__,
                                   type(loop).__qualname__)
    asyncio.set_event_loop(loop)
    t_start = time.perf_counter()
    try:
        if spec.warmup and warmup_n > 0:
            spec.fn(loop, warmup_n)
        gc.collect()
        ru0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        metrics = spec.fn(loop, n)
        ru1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        # CPU vs wall time of the measured run: for single-threaded cases a
        # cpu/wall well below 1 means the process was descheduled (noise).
        out["run_wall_s"] = w1 - w0
        out["run_cpu_s"] = (ru1.ru_utime - ru0.ru_utime
                            + ru1.ru_stime - ru0.ru_stime)
        out["run_ctx_switches_invol"] = ru1.ru_nivcsw - ru0.ru_nivcsw
        missing = [m.name for m in spec.metrics if m.name not in metrics]
        if missing:
            raise RuntimeError("case returned no value for %s" % missing)
        out["metrics"] = {k: float(v) for k, v in metrics.items()}
        out["ok"] = True
    except BaseException as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
        out["traceback"] = traceback.format_exc()
    finally:
        try:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        except Exception as exc:
            out.setdefault("shutdown_error",
                           "%s: %s" % (type(exc).__name__, exc))
        try:
            loop.close()
        except Exception as exc:
            out.setdefault("close_error", "%s: %s" % (type(exc).__name__, exc))
        asyncio.set_event_loop(None)
    out["wall_s"] = time.perf_counter() - t_start
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit(out)
    return 0 if out["ok"] else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks._worker")
    ap.add_argument("--probe", metavar="LOOP",
                    help="only report whether LOOP is importable")
    ap.add_argument("--case")
    ap.add_argument("--loop")
    ap.add_argument("--n", type=int)
    ap.add_argument("--warmup-n", type=int, default=0)
    ap.add_argument("--cost", action="store_true",
                    help="cost mode: no warm-up, report the op count")
    ap.add_argument("--cost-n-lo", type=int, default=None,
                    help="cost mode: fork, run --n in the child and this "
                    "in the parent (one valgrind start-up for both)")
    args = ap.parse_args(argv)
    arrange_sys_path()
    if args.probe:
        return probe(args.probe)
    if not (args.case and args.loop and args.n):
        ap.error("--case, --loop and --n are required (or --probe)")
    if args.cost:
        return run_cost(args.case, args.loop, args.n, args.cost_n_lo)
    if args.loop == "c":
        return run_floor(args.case, args.n)
    return run_case(args.case, args.loop, args.n, args.warmup_n)


if __name__ == "__main__":
    sys.exit(main())
