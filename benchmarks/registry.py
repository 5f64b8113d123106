"""Registry of benchmark cases.

A case is a module-level function ``fn(loop, n) -> dict`` living in one of
the modules listed in ``CASE_MODULES`` (one module per group: loop
primitives, networking, ...).  It receives a fresh, not-running event loop
(already installed with ``asyncio.set_event_loop``) and a size ``n``; it sets
itself up, times the interesting part with ``time.perf_counter`` and returns
``{metric_name: value}`` for every metric it declares.

Register a case with the ``@case(...)`` decorator::

    @case("call_soon_chain", n=200_000, quick_n=50_000,
          metrics=[OPS], target=Target("uvloop", 1.4))
    def call_soon_chain(loop, n):
        ...
        return {"ops": n / elapsed}

The runner never imports the loops itself; it starts one fresh worker
process (``python -m benchmarks._worker``) per (case, loop, round).
"""

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional

# Modules holding cases, in display order.  Networking cases (echo servers
# with an external load generator, HTTP with wrk, ...) go into their own
# module, e.g. "benchmarks.cases_net", appended here.
CASE_MODULES = [
    "benchmarks.cases_loop",
    "benchmarks.cases_net",
    "benchmarks.cases_dgram",
    "benchmarks.cases_proc",
    "benchmarks.cases_tls",
]

# Pseudo-loop for the "C floor" column: a plain C implementation of the same
# server (e.g. benchmarks/c/echo_server.c) under the same client.
FLOOR = "c"
DISPLAY_NAMES = {FLOOR: "C floor"}


def display_name(loop):
    return DISPLAY_NAMES.get(loop, loop)


@dataclass(frozen=True)
class Metric:
    """One number a case reports."""

    name: str                 # key in the dict returned by the case
    unit: str                 # "ops/s", "s", "ms", ...
    higher_is_better: bool = True
    label: str = ""           # shown in the table; defaults to unit

    @property
    def display(self):
        return self.label or self.unit


@dataclass(frozen=True)
class Target:
    """Goal for evpy on one metric, shown in the table (never asserted).

    kind "ratio": evpy must be at least ``value`` times faster than the
    loop ``against`` (speed-up as printed in the table).
    kind "max": evpy's median must be at most ``value`` (in metric units).
    """

    kind: str
    value: float
    against: str = ""
    metric: str = ""          # metric name; "" = every metric of the case

    def describe(self):
        if self.kind == "ratio":
            return ">=%sx %s" % (("%.2f" % self.value).rstrip("0").rstrip(
                ".") if self.value % 1 else "%.1f" % self.value,
                display_name(self.against))
        return "<=%g" % self.value

    def applies_to(self, metric_name):
        return not self.metric or self.metric == metric_name


def ratio_target(against, value, metric=""):
    return Target("ratio", value, against=against, metric=metric)


def max_target(value, metric=""):
    return Target("max", value, metric=metric)


OPS = Metric("ops", "ops/s")


@dataclass
class Case:
    name: str
    fn: Callable
    group: str
    n: int
    quick_n: int
    metrics: list
    targets: list = field(default_factory=list)
    description: str = ""
    warmup: bool = True       # run the case once with a small n first
    # Returns None when the case can run here, else a reason to skip it
    # (e.g. a missing external load generator).  Called in the runner.
    available: Optional[Callable[[], Optional[str]]] = None
    timeout: float = 60.0    # seconds for one worker process
    # floor(n) -> metrics: the same measurement against a plain C server,
    # shown in the "C floor" column; cases with the same floor_key share
    # one floor measurement per round within a run.
    floor: Optional[Callable] = None
    floor_key: Optional[tuple] = None
    full_only: bool = False  # only with --full (or when named exactly)
    rounds: Optional[int] = None   # cap on rounds unless --rounds is given
    unit_note: str = ""       # what n means, for --list
    # Deterministic cost per op (valgrind instructions, perf syscalls):
    # True = run fn itself, n is already an op count; a function
    # cost_fn(loop, n) -> {"cost_ops": k, ...} for cases whose n is a
    # duration; None = no cost (cost_why says why, shown as n/a).
    cost: object = None
    cost_n: tuple = ()        # (n_lo, n_hi) for the two cost runs
    cost_unit: str = "op"     # what one op is, for the cost table
    cost_why: str = ""        # why a case has no cost

    def size(self, quick):
        return self.quick_n if quick else self.n

    @property
    def has_cost(self):
        return bool(self.cost) and len(self.cost_n) == 2


_CASES = {}


def case(name, *, n, quick_n=None, metrics=(OPS,), targets=(),
         warmup=True, available=None, timeout=60.0, floor=None,
         floor_key=None, full_only=False, rounds=None, unit_note="",
         cost=None, cost_n=(), cost_unit="op", cost_why=""):
    """Decorator registering a module-level function as a case.

    ``cost=True`` (``n`` counts ops) or ``cost=fn(loop, n) -> {"cost_ops":
    k}`` plus ``cost_n=(n_lo, n_hi)`` give the case a deterministic cost per
    op (instructions and syscalls, see benchmarks/cost.py).
    """
    if cost and len(cost_n) != 2:
        raise ValueError("case %r: cost needs cost_n=(n_lo, n_hi)" % name)

    def register(fn):
        if name in _CASES:
            raise ValueError("duplicate benchmark case %r" % name)
        group = fn.__module__.rsplit(".", 1)[-1]
        if group.startswith("cases_"):
            group = group[len("cases_"):]
        doc = (fn.__doc__ or "").strip()
        _CASES[name] = Case(
            name=name, fn=fn, group=group, n=n,
            quick_n=quick_n if quick_n is not None else max(1, n // 4),
            metrics=list(metrics), targets=list(targets),
            description=doc.splitlines()[0] if doc else "",
            warmup=warmup, available=available, timeout=timeout,
            floor=floor, floor_key=floor_key or (
                ("case", name) if floor else None),
            full_only=full_only, rounds=rounds, unit_note=unit_note,
            cost=cost, cost_n=tuple(cost_n), cost_unit=cost_unit,
            cost_why=cost_why)
        return fn

    return register


def load_all():
    """Import every case module; returns the cases in registration order."""
    for mod in CASE_MODULES:
        importlib.import_module(mod)
    return list(_CASES.values())


def get(name):
    load_all()
    return _CASES[name]
