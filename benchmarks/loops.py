"""The event loops under comparison.

Each entry knows how to create a fresh loop and how to recognise one of its
own loops, so that a worker can refuse to run when it would silently get a
different implementation (e.g. evpy falling back to the stdlib loop).
"""

import asyncio
import importlib

LOOP_NAMES = ("evpy", "asyncio", "uvloop")


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


def new_loop(name):
    """Create a fresh event loop of implementation ``name``."""
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
        mod = importlib.import_module(name)
        info["file"] = getattr(mod, "__file__", None)
        info["version"] = _module_version(mod)
    return info
