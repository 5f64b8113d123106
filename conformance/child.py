"""Run one test.test_asyncio module in this process and stream results.

This script is started by ``conformance/runner.py`` once per (module, side)
in a fresh interpreter.  It is not meant to be run by hand, but it can be:

    python conformance/child.py --module test_tasks --loop uvloop \\
        --out /tmp/progress.jsonl

It writes one JSON object per line to ``--out`` (flushed after every line so
that a crash or a watchdog exit loses nothing that was already recorded):

    {"event": "meta", ...}            hooks applied, classes replaced, ...
    {"event": "plan", "ids": [...]}   every test id that will be run
    {"event": "start", "id": ...}
    {"event": "end", "id": ..., "outcome": ..., "loops": {...}, ...}
    {"event": "done"}

``loops`` counts the event loops the test created, by kind:

    target   an instance of the loop under test (evpy.Loop, uvloop.Loop);
             on the baseline side (--loop asyncio) asyncio's own loops
    default  one of asyncio's real loop classes (SelectorEventLoop, ...)
    stub     test doubles: test_utils.TestLoop, bare BaseEventLoop,
             loop classes defined by the test module itself
    leak     asyncio's loop created through an *implicitly* re-created
             default policy: the test wanted "the" loop and silently got
             asyncio's instead of the target's.  Counted as a failure.

Stdlib only; must work on Python 3.11 - 3.15.  asyncio's private names
move between versions (3.14 renamed BaseDefaultEventLoopPolicy to
_BaseDefaultEventLoopPolicy): look them up with fallbacks and by behaviour,
never by one spelling.
"""

import argparse
import asyncio
import faulthandler
import importlib
import inspect
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import unittest
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = 'test.test_asyncio'

# ---------------------------------------------------------------------------
# Loop hooks.
#
# Test classes that build their own loop instead of asking the policy.  Each
# entry is (kind, stock class names, hook attribute).
#
#   subclass  A family of stock classes that differ only in the loop their
#             hook returns (EPoll/Poll/Select/Kqueue...).  One new class,
#             "<Prefix><first existing stock class>", derived from the first
#             existing one, gets a hook returning the target loop.  The stock
#             classes keep testing asyncio's own loops; they are left out of
#             the target side (the baseline side runs them) to save time.
#   patch     A single class whose hook is replaced in place (same test ids).
#   setup     A class whose setUp() builds ``asyncio.SelectorEventLoop()``
#             directly; setUp is replaced in place by one building the target.
#   runners   test_runners.BaseTest.new_loop: returns a target loop with the
#             ``shutdown_ag_run`` probe the tests assert on.
#
# Classes that still define create_event_loop/new_loop but are not listed
# here are reported as "unhandled hooks" in the results so the table can be
# kept up to date with new CPython versions.
# ---------------------------------------------------------------------------
_SELECTOR_FAMILY = ['EPollEventLoopTests', 'PollEventLoopTests',
                    'SelectEventLoopTests', 'KqueueEventLoopTests']

HOOKS = {
    'test_events': [('subclass', _SELECTOR_FAMILY, 'create_event_loop')],
    'test_sock_lowlevel': [('subclass', _SELECTOR_FAMILY,
                            'create_event_loop')],
    'test_sendfile': [('subclass', _SELECTOR_FAMILY, 'create_event_loop')],
    'test_server': [('subclass', ['SelectorStartServerTests'], 'new_loop')],
    'test_buffered_proto': [('subclass', ['BufferedProtocolSelectorTests'],
                             'new_loop')],
    'test_sslproto': [('subclass', ['SelectorStartTLSTests'], 'new_loop')],
    'test_ssl': [('patch', ['TestSSL'], 'new_loop')],
    'test_runners': [('runners', ['BaseTest'], 'new_loop')],
    'test_unix_events': [('setup', ['SelectorEventLoopUnixSocketTests'],
                          'setUp')],
}

# Classes that define a loop hook but are deliberately not retargeted:
# Windows-only (skipped on POSIX) or hooks that return mocks by design.
KNOWN_UNHOOKED = {
    'ProactorEventLoopTests', 'ProactorStartServerTests',
    'BufferedProtocolProactorTests', 'ProactorStartTLSTests',
    'SubprocessProactorTests',
}

HOOK_NAMES = ('create_event_loop', 'new_loop')

# Private names of asyncio's own loop machinery; used to hint that a failing
# test belongs to the "internals" category.
_PRIVATE_RE = re.compile(
    r'\b(?:loop|self\.loop)\.(_(?!_)[A-Za-z]\w*)'
    r'|\b(BaseSelectorEventLoop|TestSelector|_UnixSelectorEventLoop)\b'
    r"|mock\.patch(?:\.object)?\(\s*['\"]?([\w.]*(?:selector|select|"
    r"base_events|selector_events|unix_events)[\w.]*)")
_TEST_PRIVATE = {'_testMethodName', '_outcome', '_cleanups', '_callSetUp',
                 '_callTestMethod', '_callTearDown', '_callCleanup',
                 '_thread_cleanup', '_asyncioRunner', '_asyncioTestContext'}


class Recorder:
    """Counts loops created during the current test."""

    def __init__(self):
        self.counts = {}
        self.tls = threading.local()

    def reset(self):
        self.counts = {'target': 0, 'default': 0, 'stub': 0, 'leak': 0}

    def add(self, kind):
        self.counts[kind] = self.counts.get(kind, 0) + 1


REC = Recorder()
REC.reset()


def restore_signals():
    """Undo dispositions inherited from a background shell.

    A child started from ``cmd &`` inherits SIGINT/SIGQUIT as SIG_IGN and
    Python then keeps SIGINT ignored, which makes test_runners hang.
    """
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    except (AttributeError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ('SIGQUIT', 'SIGTERM', 'SIGHUP', 'SIGTSTP', 'SIGTTIN',
                 'SIGTTOU', 'SIGCHLD', 'SIGUSR1', 'SIGUSR2', 'SIGALRM'):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass


def in_place_build(root):
    """True if `root` has evpy built in place for this interpreter (then
    that build is tested; otherwise the installed evpy is)."""
    import glob
    import sysconfig
    suffix = sysconfig.get_config_var('EXT_SUFFIX')
    return bool(glob.glob(os.path.join(root, 'evpy', '_core' + suffix)))


def load_target(name):
    """Return (factory, policy class, loop type, class-name prefix)."""
    if name == 'asyncio':
        return None, None, None, ''
    if name == 'evpy':
        if in_place_build(REPO_ROOT):
            sys.path.insert(0, REPO_ROOT)
        import evpy
        return evpy.new_event_loop, evpy.EventLoopPolicy, evpy.Loop, 'Evpy'
    if name == 'uvloop':
        # Stand-in used to develop the runner before evpy builds.  uvloop
        # has no ``_default_executor`` (test_utils.TestCase.close_loop reads
        # it; evpy keeps one), so a thin subclass provides the attribute.
        import uvloop

        class Loop(uvloop.Loop):
            _default_executor = None

        class EventLoopPolicy(uvloop.EventLoopPolicy):
            def _loop_factory(self):
                return Loop()

        Loop.__module__ = EventLoopPolicy.__module__ = 'uvloop'
        return Loop, EventLoopPolicy, Loop, 'Uvloop'
    raise SystemExit('unknown loop %r' % name)


def set_policy(policy):
    """asyncio.set_event_loop_policy() without 3.14's DeprecationWarning
    (the suite's own tests that check the warning are unaffected)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        asyncio.set_event_loop_policy(policy)


def find_base_policy(events):
    """asyncio's default policy base: the class whose new_event_loop()
    builds ``self._loop_factory()``.  Known spellings first (3.14 renamed
    it and deprecated the old name), then any policy class of
    asyncio.events that defines both new_event_loop and _loop_factory."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        for name in ('_BaseDefaultEventLoopPolicy',
                     'BaseDefaultEventLoopPolicy'):
            cls = getattr(events, name, None)
            if isinstance(cls, type) and 'new_event_loop' in vars(cls):
                return cls
    for obj in vars(events).values():
        if (isinstance(obj, type) and 'new_event_loop' in vars(obj)
                and hasattr(obj, '_loop_factory')):
            return obj
    raise RuntimeError('cannot find asyncio\'s default event loop policy '
                       'class in asyncio.events')


def install_instrumentation(loop_type):
    from asyncio import base_events, events
    from test.test_asyncio import utils as test_utils

    def classify(loop):
        if loop_type is not None and isinstance(loop, loop_type):
            return 'target'
        cls = type(loop)
        if (issubclass(cls, test_utils.TestLoop)
                or cls is base_events.BaseEventLoop
                or not cls.__module__.startswith('asyncio')):
            return 'stub'
        if getattr(REC.tls, 'implicit_policy', False):
            return 'leak' if loop_type is not None else 'target'
        return 'default' if loop_type is not None else 'target'

    orig_init = base_events.BaseEventLoop.__init__

    def __init__(self, *args, **kwargs):
        REC.add(classify(self))
        orig_init(self, *args, **kwargs)

    base_events.BaseEventLoop.__init__ = __init__

    orig_init_policy = getattr(events, '_init_event_loop_policy', None)

    def _init_event_loop_policy():
        orig_init_policy()
        try:
            events._event_loop_policy._conformance_implicit = True
        except AttributeError:
            pass

    if orig_init_policy is not None:
        events._init_event_loop_policy = _init_event_loop_policy

    base_policy = find_base_policy(events)
    orig_new = base_policy.new_event_loop

    def new_event_loop(self):
        implicit = getattr(self, '_conformance_implicit', False)
        old = getattr(REC.tls, 'implicit_policy', False)
        REC.tls.implicit_policy = implicit or old
        try:
            return orig_new(self)
        finally:
            REC.tls.implicit_policy = old

    base_policy.new_event_loop = new_event_loop
    return classify


def make_target_factory(factory, loop_type):
    def new_target_loop():
        loop = factory()
        if isinstance(loop, loop_type):
            REC.add('target')
        return loop
    return new_target_loop


def make_policy(policy_cls, loop_type):
    class ConformancePolicy(policy_cls):
        def new_event_loop(self):
            # Anything but a target loop made by the target's own policy is
            # a silent fallback to asyncio's loop: count it as a leak.
            old = getattr(REC.tls, 'implicit_policy', False)
            REC.tls.implicit_policy = True
            try:
                loop = super().new_event_loop()
            finally:
                REC.tls.implicit_policy = old
            if isinstance(loop, loop_type):
                REC.add('target')
            return loop
    ConformancePolicy.__name__ = policy_cls.__name__
    ConformancePolicy.__qualname__ = policy_cls.__qualname__
    return ConformancePolicy


def apply_hooks(mod, modname, new_loop, prefix):
    """Retarget loop hooks; return (applied, dropped, renamed)."""
    applied, dropped, renamed = [], set(), {}
    for kind, names, attr in HOOKS.get(modname, ()):
        existing = [n for n in names
                    if isinstance(getattr(mod, n, None), type)]
        if not existing:
            applied.append({'kind': kind, 'classes': names, 'hook': attr,
                            'status': 'missing'})
            continue
        stock = getattr(mod, existing[0])
        if kind == 'subclass':
            def hook(self):
                return new_loop()
            name = prefix + existing[0]
            cls = type(name, (stock,), {
                attr: hook, '__module__': mod.__name__,
                '__qualname__': name,
                '__doc__': 'Conformance: %s on the target loop.'
                           % existing[0]})
            setattr(mod, name, cls)
            dropped.update(existing)
            renamed[name] = existing[0]
            applied.append({'kind': kind, 'classes': existing, 'hook': attr,
                            'new_class': name, 'status': 'ok'})
        elif kind == 'patch':
            def hook(self):
                return new_loop()
            setattr(stock, attr, hook)
            applied.append({'kind': kind, 'classes': existing[:1],
                            'hook': attr, 'status': 'ok'})
        elif kind == 'setup':
            def setUp(self, _stock=stock):
                super(_stock, self).setUp()
                self.loop = new_loop()
                self.set_event_loop(self.loop)
            stock.setUp = setUp
            applied.append({'kind': kind, 'classes': existing[:1],
                            'hook': attr, 'status': 'ok'})
        elif kind == 'runners':
            def runners_new_loop(self):
                loop = new_loop()
                loop.shutdown_ag_run = False
                real = loop.shutdown_asyncgens

                async def shutdown_asyncgens():
                    loop.shutdown_ag_run = True
                    await real()
                loop.shutdown_asyncgens = shutdown_asyncgens
                return loop
            setattr(stock, attr, runners_new_loop)
            applied.append({'kind': kind, 'classes': existing[:1],
                            'hook': attr, 'status': 'ok'})
    return applied, dropped, renamed


def find_unhandled_hooks(mod, modname):
    handled = set(KNOWN_UNHOOKED)
    for _kind, names, _attr in HOOKS.get(modname, ()):
        handled.update(names)
    out = []
    for name, obj in vars(mod).items():
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)):
            continue
        if obj.__module__ != mod.__name__ or name in handled:
            continue
        if any(h in vars(obj) for h in HOOK_NAMES):
            out.append(name)
    return sorted(out)


def short_id(test):
    tid = test.id()
    if tid.startswith(PKG + '.'):
        tid = tid[len(PKG) + 1:]
    return tid


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def private_hints(test):
    """Private loop names the failing test (or its setUp) touches."""
    names = set()
    cls = type(test)
    srcs = []
    for attr in (getattr(test, '_testMethodName', None), 'setUp'):
        func = getattr(cls, attr, None) if attr else None
        if func is None:
            continue
        try:
            srcs.append(inspect.getsource(func))
        except (OSError, TypeError):
            pass
    for src in srcs:
        for m in _PRIVATE_RE.finditer(src):
            name = next(g for g in m.groups() if g)
            if name not in _TEST_PRIVATE and not name.startswith('_test'):
                names.add(name)
    return sorted(names)[:6]


class StreamingResult(unittest.TestResult):
    """Collects per-test outcomes and streams them as JSON lines."""

    def __init__(self, out, test_timeout, policy_factory):
        super().__init__()
        self.out = out
        self.test_timeout = test_timeout
        self.policy_factory = policy_factory
        self.cur = None

    def emit(self, **rec):
        self.out.write(json.dumps(rec) + '\n')
        self.out.flush()

    # The per-test watchdog: dump all tracebacks and exit the process if
    # one test (or the fixture code around it) runs for too long.  The
    # parent sees a "start" without an "end" and restarts the module
    # without the culprit.
    def arm(self):
        if self.test_timeout:
            faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def startTest(self, test):
        super().startTest(test)
        set_policy(self.policy_factory())
        REC.reset()
        self.cur = {'id': short_id(test), 'outcome': 'pass', 'detail': '',
                    't0': time.monotonic()}
        self.emit(event='start', id=self.cur['id'])
        self.arm()

    def _set(self, test, outcome, err=None, reason=''):
        if self.cur is None or self.cur['id'] != short_id(test):
            if isinstance(test, unittest.TestCase):
                # A test reported without startTest (e.g. skipped class).
                self.emit(event='end', id=short_id(test), outcome=outcome,
                          loops=dict.fromkeys(REC.counts, 0), time=0.0,
                          detail=(self._fmt(err, test) if err
                                  else reason)[:300])
                return
            # Fixture error (setUpClass, tearDownModule, ...): _ErrorHolder.
            self.emit(event='fixture', id=fixture_id(test), outcome=outcome,
                      detail=self._fmt(err, test) if err else reason)
            return
        rank = {'pass': 0, 'skip': 1, 'xfail': 1, 'xpass': 2, 'fail': 3,
                'error': 4}
        if rank[outcome] >= rank[self.cur['outcome']]:
            self.cur['outcome'] = outcome
            self.cur['detail'] = self._fmt(err, test) if err else reason

    def _fmt(self, err, test):
        try:
            text = self._exc_info_to_string(err, test)
        except Exception:  # pragma: no cover - defensive
            text = ''.join(traceback.format_exception(*err))
        return text[-3000:]

    def addSuccess(self, test):
        super().addSuccess(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, 'fail', err)

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, 'error', err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, 'skip', reason=str(reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, 'xfail')

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, 'xpass', reason='unexpected success')

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = 'fail' if issubclass(err[0], test.failureException) \
                else 'error'
            self._set(test, kind, err)

    def stopTest(self, test):
        super().stopTest(test)
        cur, self.cur = self.cur, None
        if cur is None:
            return
        rec = dict(event='end', id=cur['id'], outcome=cur['outcome'],
                   loops=dict(REC.counts),
                   time=round(time.monotonic() - cur['t0'], 3))
        if cur['outcome'] in ('fail', 'error', 'xpass'):
            rec['detail'] = cur['detail']
            rec['hints'] = private_hints(test)
        elif cur['outcome'] == 'skip':
            rec['detail'] = cur['detail'][:200]
        self.emit(**rec)
        # Keep a watchdog armed for fixtures run between tests.
        self.arm()


def fixture_id(test):
    desc = getattr(test, 'description', None) or str(test)
    # e.g. "setUpClass (test.test_asyncio.test_x.Cls)"
    m = re.match(r'(\w+) \((.*)\)', desc)
    if m:
        target = m.group(2)
        if target.startswith(PKG + '.'):
            target = target[len(PKG) + 1:]
        return '%s.%s' % (target, m.group(1))
    return desc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--module', required=True)
    ap.add_argument('--loop', default='evpy',
                    choices=('evpy', 'uvloop', 'asyncio'))
    ap.add_argument('--out', required=True)
    ap.add_argument('--skip-file')
    ap.add_argument('--test-timeout', type=float, default=60.0)
    ap.add_argument('--list-only', action='store_true')
    args = ap.parse_args()

    restore_signals()
    faulthandler.enable(all_threads=True)

    out = open(args.out, 'a', buffering=1)

    def emit(**rec):
        out.write(json.dumps(rec) + '\n')
        out.flush()

    skip = set()
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file) as f:
            skip = {line.strip() for line in f if line.strip()}

    try:
        factory, policy_cls, loop_type, prefix = load_target(args.loop)
    except Exception:
        emit(event='fatal', phase='import target',
             detail=traceback.format_exc()[-3000:])
        return 3

    install_instrumentation(loop_type)
    if factory is not None:
        new_loop = make_target_factory(factory, loop_type)
        policy_factory = make_policy(policy_cls, loop_type)
    else:
        new_loop = None
        policy_factory = lambda: None  # noqa: E731 - stock default policy

    modname = args.module
    try:
        mod = importlib.import_module('%s.%s' % (PKG, modname))
    except unittest.SkipTest as exc:
        emit(event='meta', module=modname, loop=args.loop,
             module_skip=str(exc))
        emit(event='done')
        return 0
    except Exception:
        emit(event='fatal', phase='import module',
             detail=traceback.format_exc()[-3000:])
        return 3

    applied, dropped, renamed = [], set(), {}
    if factory is not None:
        applied, dropped, renamed = apply_hooks(mod, modname, new_loop,
                                                prefix)
    unhandled = [n for n in find_unhandled_hooks(mod, modname)
                 if n not in renamed]

    loader = unittest.TestLoader()
    suite = loader.loadTestsFromModule(mod)
    tests = []
    for t in iter_tests(suite):
        if type(t).__name__ in dropped and type(t).__module__ == mod.__name__:
            continue
        tests.append(t)
    plan = [short_id(t) for t in tests]

    emit(event='meta', module=modname, loop=args.loop,
         python=sys.version.split()[0],
         loop_type=(None if loop_type is None else
                    '%s.%s' % (loop_type.__module__, loop_type.__qualname__)),
         hooks=applied, dropped=sorted(dropped), renamed=renamed,
         unhandled_hooks=unhandled,
         asyncio_debug=bool(os.environ.get('PYTHONASYNCIODEBUG')))
    emit(event='plan', ids=plan)
    if args.list_only:
        emit(event='done')
        return 0

    run = unittest.TestSuite([t for t in tests if short_id(t) not in skip])
    result = StreamingResult(out, args.test_timeout, policy_factory)
    result.arm()
    run.run(result)
    faulthandler.cancel_dump_traceback_later()
    emit(event='done')
    out.close()
    # Leftover non-daemon threads must not keep a finished module alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    sys.exit(main())
