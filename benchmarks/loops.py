"""The event loops under comparison.

Each entry knows how to create a fresh loop and how to recognise one of its
own loops, so that a worker can refuse to run when it would silently get a
different implementation (e.g. evpy falling back to the stdlib loop).
"""

import asyncio
import importlib

LOOP_NAMES = ("evpy", "asyncio", "uvloop")

# evpy configured for the loop-health overhead rows (docs/health.md); only
# run when named in --loops, e.g.
#   python -m benchmarks --cases call_soon_chain,echo_protocol_1k_c10 \
#       --loops evpy,evpy-off,evpy-detector,evpy-detail --no-floor
# "evpy vs evpy-off" is then the cost of the always-on counters.
#   evpy-off       evpy built with -DEVPY_STATS=0: every health hook compiled
#                  out (built on demand into benchmarks/.build/evpy-off-*)
#   evpy-detector  evpy with the blocking detector on (threshold 100 ms)
#   evpy-detail    evpy in detailed statistics mode (per-callback timing)
EVPY_VARIANTS = ("evpy-off", "evpy-detector", "evpy-detail")


class LoopUnavailable(Exception):
    pass


def _module_version(mod):
    version = getattr(mod, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata
        return metadata.version(mod.__name__)
    except Exception:
        return "unknown"


def _import(name):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken extension
        raise LoopUnavailable("cannot import %s: %s: %s"
                              % (name, type(exc).__name__, exc)) from exc


def _check_module(loop, prefix):
    mod = type(loop).__module__ or ""
    if not (mod == prefix or mod.startswith(prefix + ".")):
        loop.close()
        raise LoopUnavailable(
            "%s.new_event_loop() returned %s.%s, not a loop from %s"
            % (prefix, mod, type(loop).__qualname__, prefix))


def _evpy_off_dir():
    """A copy of the evpy package whose extension is built with
    -DEVPY_STATS=0, rebuilt when the sources are newer."""
    import glob
    import os
    import shutil
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "benchmarks", ".build",
                       "evpy-off-" + sys.implementation.cache_tag)
    sources = (glob.glob(os.path.join(repo, "csrc", "*.[ch]"))
               + glob.glob(os.path.join(repo, "csrc", "core", "*.[ch]"))
               + glob.glob(os.path.join(repo, "evpy", "*.py")))
    stamp = os.path.join(out, "stamp")
    newest = max(os.path.getmtime(p) for p in sources)
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= newest:
        return out
    pkg = os.path.join(out, "evpy")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(pkg)
    for p in glob.glob(os.path.join(repo, "evpy", "*.py")):
        shutil.copy(p, pkg)
    env = dict(os.environ, CPPFLAGS="-DEVPY_STATS=0")
    res = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", out,
         "--build-temp", os.path.join(out, "tmp"), "-q"],
        cwd=repo, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise LoopUnavailable(
            "building evpy-off failed: " + res.stderr[-2000:])
    with open(stamp, "w"):
        pass
    return out


def new_loop(name):
    """Create a fresh event loop of implementation ``name``."""
    if name == "evpy-off":
        import sys
        if "evpy" not in sys.modules:
            sys.path.insert(0, _evpy_off_dir())
        loop = new_loop("evpy")
        if loop._stats()["enabled"]:
            loop.close()
            raise LoopUnavailable("evpy-off: got an evpy with statistics")
        return loop
    if name == "evpy-detector":
        loop = new_loop("evpy")
        loop.enable_blocking_detector(0.1)
        return loop
    if name == "evpy-detail":
        loop = new_loop("evpy")
        loop.set_stats_detail(True)
        return loop
    if name == "evpy":
        evpy = _import("evpy")
        if not hasattr(evpy, "new_event_loop"):
            raise LoopUnavailable(
                "evpy (%s) has no new_event_loop(); is it built? "
                "(python setup.py build_ext --inplace)"
                % (getattr(evpy, "__file__", None)
                   or sorted(set(getattr(evpy, "__path__", [])))))
        loop = evpy.new_event_loop()
        _check_module(loop, "evpy")
        return loop
    if name == "uvloop":
        uvloop = _import("uvloop")
        loop = uvloop.new_event_loop()
        _check_module(loop, "uvloop")
        return loop
    if name == "asyncio":
        # The stock selector loop, whatever policy might be installed.
        return asyncio.SelectorEventLoop()
    raise LoopUnavailable("unknown loop %r (choose from %s)"
                          % (name, ", ".join(LOOP_NAMES)))


def describe(name):
    """Import ``name``, make one loop and report what it is (for the JSON)."""
    info = {"loop": name}
    loop = new_loop(name)
    try:
        info["class"] = "%s.%s" % (type(loop).__module__,
                                   type(loop).__qualname__)
    finally:
        loop.close()
    if name == "asyncio":
        import sys
        info["version"] = sys.version.split()[0]
    else:
        mod = importlib.import_module(name.split("-")[0])
        info["file"] = getattr(mod, "__file__", None)
        info["version"] = _module_version(mod)
    return info
