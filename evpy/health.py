"""Loop health: statistics, lag histograms, Prometheus text and the
blocking detector.

The counters live in the C core (``csrc/stats.c``) and are always on; see
docs/health.md for what each costs.  This module turns them into
``LoopStats`` (``Loop.stats()``), renders Prometheus' text exposition format
(``prometheus_text``) and runs the opt-in blocking detector: a watchdog
thread that notices a callback still running past a threshold and captures
the loop thread's Python stack while it blocks.
"""

import collections
import dataclasses
import logging
import math
import os
import sys
import threading
import time
import traceback
import weakref

__all__ = ['BlockingDetector', 'BlockingIncident', 'Histogram', 'LoopStats',
           'SlowCallback', 'prometheus_text']

logger = logging.getLogger('evpy')

_NS = 1e9


# -- statistics ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Histogram:
    """A latency histogram in seconds.

    ``bounds`` are the buckets' upper bounds (``le``), ``counts`` the
    samples per bucket (not cumulative), one more than ``bounds``: the last
    is ``+Inf``."""

    bounds: tuple
    counts: tuple
    count: int
    sum: float

    @classmethod
    def _from_raw(cls, bounds_ns, raw):
        counts, count, sum_ns = raw
        return cls(tuple(b / _NS for b in bounds_ns), tuple(counts), count,
                   sum_ns / _NS)

    def cumulative(self):
        """``[(le, cumulative count)]`` ending with ``(inf, count)``."""
        out, acc = [], 0
        for le, c in zip(self.bounds + (math.inf,), self.counts):
            acc += c
            out.append((le, acc))
        return out

    def quantile(self, q):
        """Upper bound of the bucket holding quantile ``q`` (0..1), or
        None without samples (``inf`` when it lies past the last bound)."""
        if not self.count:
            return None
        rank = q * self.count
        for le, acc in self.cumulative():
            if acc >= rank:
                return le
        return math.inf

    @property
    def mean(self):
        """The mean of the recorded values (None when empty)."""
        return self.sum / self.count if self.count else None


class SlowCallback(collections.namedtuple('SlowCallback', 'duration what')):
    """One of the slowest timed callbacks: seconds, and what it ran
    (``qualname() at file:line``)."""


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """A snapshot of a loop's health counters (``Loop.stats()``).

    Counters only grow over the loop's life.  Times are in seconds.
    ``busy_time`` is time inside ``run_forever`` not spent waiting for
    events: running callbacks plus the loop's own work.  ``timer_lag``:
    how late each timer was dispatched after its deadline (always on).
    ``callback_lag`` and ``callback_time`` need detailed mode
    (``Loop.set_stats_detail(True)``): lag of every callback from when it
    became due (call_soon, deadline, poll wake-up) to its start, and each
    callback's duration.  ``slowest``: the slowest callbacks that were
    timed (at least ``slow_floor`` seconds): in detailed mode every
    callback is timed; otherwise a callback is timed when it ran alone
    right after the loop woke from a wait (a loop that idles between
    events), and in debug mode.
    """

    iterations: int
    callbacks: int
    io_events: int
    timers_scheduled: int
    timers_fired: int
    timers_cancelled: int
    timers_pending: int
    ready: int
    run_time: float
    wait_time: float
    busy_time: float
    timer_lag: Histogram
    callback_lag: Histogram
    callback_time: Histogram
    slowest: tuple
    slow_floor: float
    detailed: bool
    blocking_incidents: int
    recent_blocking: tuple
    enabled: bool = True

    @classmethod
    def _from_loop(cls, loop):
        raw = loop._stats()
        bounds = raw['bounds_ns']
        run = raw['run_ns'] / _NS
        wait = raw['wait_ns'] / _NS
        slowest = sorted((SlowCallback(ns / _NS, what)
                          for ns, what in raw['slowest']), reverse=True)
        history = getattr(loop, '_health_incidents', None) or ()
        count = getattr(loop, '_health_incident_count', 0)
        cancelled = (raw['timers_scheduled'] - raw['timers_fired']
                     - raw['timers_pending'])
        return cls(
            iterations=raw['iterations'], callbacks=raw['callbacks'],
            io_events=raw['io_events'],
            timers_scheduled=raw['timers_scheduled'],
            timers_fired=raw['timers_fired'],
            timers_cancelled=max(0, cancelled),
            timers_pending=raw['timers_pending'], ready=raw['ready'],
            run_time=run, wait_time=wait, busy_time=max(0.0, run - wait),
            timer_lag=Histogram._from_raw(bounds, raw['timer_lag']),
            callback_lag=Histogram._from_raw(bounds, raw['ready_lag']),
            callback_time=Histogram._from_raw(bounds, raw['callback_time']),
            slowest=tuple(slowest), slow_floor=raw['slow_floor_ns'] / _NS,
            detailed=bool(raw['detail']), blocking_incidents=count,
            recent_blocking=tuple(history), enabled=bool(raw['enabled']))

    def as_dict(self):
        """Plain data (for JSON)."""
        d = dataclasses.asdict(self)
        d['slowest'] = [s._asdict() for s in self.slowest]
        d['recent_blocking'] = [i.as_dict() for i in self.recent_blocking]
        return d

    def prometheus(self, labels=None, prefix='evpy_loop'):
        """This snapshot in Prometheus' text exposition format."""
        return _render_prometheus([(self, labels or {})], prefix)


# -- Prometheus text exposition -----------------------------------------------

def _escape(value):
    return (str(value).replace('\\', '\\\\').replace('\n', '\\n')
            .replace('"', '\\"'))


def _labels(labels):
    if not labels:
        return ''
    return '{' + ','.join(f'{k}="{_escape(v)}"'
                          for k, v in labels.items()) + '}'


def _num(v):
    if isinstance(v, float):
        if math.isinf(v):
            return '+Inf' if v > 0 else '-Inf'
        return repr(v)
    return str(v)


_COUNTERS = [
    ('iterations_total', 'iterations', 'Loop iterations.'),
    ('callbacks_total', 'callbacks', 'Callbacks (handles) run.'),
    ('io_events_total', 'io_events', 'Transport I/O events dispatched.'),
    ('timers_scheduled_total', 'timers_scheduled', 'Timers scheduled.'),
    ('timers_fired_total', 'timers_fired', 'Timers dispatched when due.'),
    ('timers_cancelled_total', 'timers_cancelled',
     'Timers cancelled before they were due.'),
    ('run_seconds_total', 'run_time', 'Time spent inside run_forever.'),
    ('wait_seconds_total', 'wait_time', 'Time spent waiting for events.'),
    ('busy_seconds_total', 'busy_time',
     'Time running callbacks and loop work (run minus wait).'),
    ('blocking_incidents_total', 'blocking_incidents',
     'Callbacks the blocking detector caught running past its threshold.'),
]
_GAUGES = [
    ('timers_pending', 'timers_pending', 'Timers scheduled, not yet due.'),
    ('ready', 'ready', 'Callbacks and I/O events in the ready queue.'),
]
_HISTOGRAMS = [
    ('lag_seconds', 'How late callbacks ran after they became due '
     '(kind="timer": deadline to dispatch, always on; kind="callback": '
     'due to start, detailed mode).',
     [('timer_lag', {'kind': 'timer'}),
      ('callback_lag', {'kind': 'callback'})]),
    ('callback_duration_seconds', 'Duration of each callback '
     '(detailed mode).', [('callback_time', {})]),
]


def _render_prometheus(items, prefix):
    lines = []
    for name, attr, doc in _COUNTERS:
        lines.append(f'# HELP {prefix}_{name} {doc}')
        lines.append(f'# TYPE {prefix}_{name} counter')
        for st, labels in items:
            lines.append(f'{prefix}_{name}{_labels(labels)} '
                         f'{_num(getattr(st, attr))}')
    for name, attr, doc in _GAUGES:
        lines.append(f'# HELP {prefix}_{name} {doc}')
        lines.append(f'# TYPE {prefix}_{name} gauge')
        for st, labels in items:
            lines.append(f'{prefix}_{name}{_labels(labels)} '
                         f'{_num(getattr(st, attr))}')
    for name, doc, parts in _HISTOGRAMS:
        full = f'{prefix}_{name}'
        lines.append(f'# HELP {full} {doc}')
        lines.append(f'# TYPE {full} histogram')
        for st, labels in items:
            for attr, extra in parts:
                h = getattr(st, attr)
                base = dict(labels, **extra)
                for le, acc in h.cumulative():
                    le_text = '+Inf' if math.isinf(le) else repr(le)
                    lines.append(f'{full}_bucket'
                                 f'{_labels(dict(base, le=le_text))} {acc}')
                lines.append(f'{full}_sum{_labels(base)} {_num(h.sum)}')
                lines.append(f'{full}_count{_labels(base)} {h.count}')
    name = f'{prefix}_slowest_callback_seconds'
    lines.append(f'# HELP {name} The slowest timed callbacks (rank 1 is the '
                 'slowest).')
    lines.append(f'# TYPE {name} gauge')
    for st, labels in items:
        for rank, slow in enumerate(st.slowest[:5], 1):
            lab = dict(labels, rank=rank, callback=slow.what)
            lines.append(f'{name}{_labels(lab)} {_num(slow.duration)}')
    return '\n'.join(lines) + '\n'


def prometheus_text(*loops, labels=None, prefix='evpy_loop'):
    """Prometheus text exposition (version 0.0.4) of the loops' stats.

    Each argument is an evpy loop or a ``LoopStats``, or a ``(loop_or_stats,
    labels_dict)`` pair; ``labels`` are added to every series.  Serve the
    text with any HTTP server (``Content-Type: text/plain;
    version=0.0.4``)."""
    items = []
    for item in loops:
        extra = {}
        if isinstance(item, tuple):
            item, extra = item
        st = item if isinstance(item, LoopStats) else item.stats()
        items.append((st, dict(labels or {}, **extra)))
    return _render_prometheus(items, prefix)


# -- blocking detector --------------------------------------------------------

class BlockingIncident:
    """One stretch in which the loop's thread stayed inside one callback
    (or in the loop's own code) for longer than the detector's threshold.

    ``duration`` is an estimate, within the sampling period
    (threshold / 4): while ``ended`` is false it is how long the callback
    has been running so far.  ``stack`` is the loop thread's stack when
    the block was noticed (``traceback.StackSummary``, most recent call
    last, trimmed to the frames above the loop); ``callback`` names its
    outermost frame, ``blocking_line`` its innermost.  ``task`` is the
    repr of the task running then, if any."""

    def __init__(self, loop, started, stack, task):
        self.loop_repr = repr(loop)
        self.thread_id = loop._thread_id
        self.started = started          # time.monotonic() estimate
        self.detected = time.monotonic()
        self.duration = self.detected - started
        self.ended = False
        self.stack = stack
        self.task = task

    @property
    def callback(self):
        """``func() at file:line`` of the callback that blocked (the
        outermost frame of the stack), or None without a stack."""
        if not self.stack:
            return None
        f = self.stack[0]
        return f'{f.name}() at {f.filename}:{f.lineno}'

    @property
    def blocking_line(self):
        """``file:line in func`` where the loop thread was when the
        incident was detected (the innermost frame), or None."""
        if not self.stack:
            return None
        f = self.stack[-1]
        return f'{f.filename}:{f.lineno} in {f.name}'

    def format(self):
        """The log message: duration, state, callback, task and (while
        still running) the loop thread's stack."""
        state = 'ended' if self.ended else 'still running'
        head = (f'Event loop blocked for {self.duration:.3f} seconds '
                f'({state})')
        if self.callback:
            head += f' in {self.callback}'
        if self.task:
            head += f'; task {self.task}'
        if not self.ended and self.stack:
            head += ('\nStack of the loop thread (most recent call last):\n'
                     + ''.join(self.stack.format()).rstrip())
        return head

    def as_dict(self):
        """The incident as plain data (for JSON)."""
        return {'duration': self.duration, 'ended': self.ended,
                'callback': self.callback,
                'blocking_line': self.blocking_line, 'task': self.task,
                'stack': [(f.filename, f.lineno, f.name, f.line)
                          for f in (self.stack or ())]}

    def __repr__(self):
        return (f'<BlockingIncident {self.duration:.3f}s '
                f'{"ended" if self.ended else "running"} '
                f'{self.blocking_line}>')


_LOOP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'loop.py')


def _trim_stack(stack):
    """Keep the frames above the loop's run_forever (the callback's)."""
    cut = 0
    for i, f in enumerate(stack):
        if (f.name == 'run_forever'
                and os.path.abspath(f.filename) == _LOOP_FILE):
            cut = i + 1
    return traceback.StackSummary.from_list(stack[cut:])


class BlockingDetector:
    """Watchdog thread for one loop (``Loop.enable_blocking_detector``).

    Every ``threshold / 4`` seconds it reads the loop's entry counter
    through ``Loop._health_probe()`` (the loop's only cost is the
    increment it does per callback anyway).  When the counter stayed the
    same for ``threshold`` seconds while the loop was running and not
    waiting for events, it captures the loop thread's stack with
    ``sys._current_frames()``, logs a warning on the ``evpy`` logger and
    calls ``hook(incident)``; when the callback ends it logs the final
    duration and calls ``hook(incident)`` again with ``incident.ended``
    true.  One incident per blocking callback.

    The watchdog needs the GIL to sample: a callback blocked in a system
    call, ``time.sleep`` or Python code is seen (Python code releases the
    GIL every ``sys.getswitchinterval()``); C code that holds the GIL for
    the whole time is not, until it returns.
    """

    def __init__(self, loop, threshold=0.1, hook=None, log=True,
                 history=10):
        if threshold <= 0:
            raise ValueError('threshold must be positive')
        self.threshold = float(threshold)
        self.period = self.threshold / 4
        self.hook = hook
        self.log = log
        self._loop_ref = weakref.ref(loop)
        self._stop = threading.Event()
        self._thread = None
        self.current = None

    def start(self):
        """Start the watchdog thread (no-op when it already runs)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='evpy-blocking-detector')
        self._thread.start()

    def stop(self):
        """Stop and join the watchdog thread; an incident still open is
        reported as ended."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join()

    @property
    def running(self):
        """True while the watchdog thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _report(self, incident):
        if self.log:
            logger.warning('%s', incident.format())
        if self.hook is not None:
            try:
                self.hook(incident)
            except Exception:
                logger.exception('Exception in blocking detector hook %r',
                                 self.hook)

    def _open(self, loop, started):
        frame = sys._current_frames().get(loop._thread_id)
        stack = (_trim_stack(traceback.extract_stack(frame))
                 if frame is not None else None)
        del frame
        task = None
        try:
            import asyncio
            t = asyncio.current_task(loop)
            task = repr(t) if t is not None else None
        except Exception:
            pass
        incident = BlockingIncident(loop, started, stack, task)
        loop._health_incident_count = getattr(
            loop, '_health_incident_count', 0) + 1
        history = getattr(loop, '_health_incidents', None)
        if history is not None:
            history.append(incident)
        self.current = incident
        self._report(incident)

    def _close(self, ended):
        incident, self.current = self.current, None
        incident.duration = max(incident.duration, ended - incident.started)
        incident.ended = True
        self._report(incident)

    def _run(self):
        period = self.period
        prev_state = None
        prev_t = same_since = before_same = time.monotonic()
        while not self._stop.wait(period):
            loop = self._loop_ref()
            if loop is None or loop.is_closed():
                break
            now = time.monotonic()
            running, sleeping, seq, iters = loop._health_probe()
            state = (seq, iters) if running and not sleeping else None
            if state is not None and state == prev_state:
                # Started after before_same, at or before same_since.
                started = (before_same + same_since) / 2
                if self.current is None:
                    if now - same_since >= self.threshold:
                        self._open(loop, started)
                else:
                    self.current.duration = now - self.current.started
            else:
                if self.current is not None:
                    # Ended after prev_t, at or before now.
                    self._close((prev_t + now) / 2)
                before_same, same_since = prev_t, now
            prev_state, prev_t = state, now
            del loop
        if self.current is not None:
            self._close(time.monotonic())
