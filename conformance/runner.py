#!/usr/bin/env python3
"""Run CPython's test.test_asyncio against evpy (or another loop).

See conformance/README.md.  Typical use:

    python conformance/runner.py -j2                     # report
    python conformance/runner.py -j2 --check             # CI gate
    python conformance/runner.py -j2 --update            # rewrite the list
    python conformance/runner.py --loop uvloop --modules test_tasks,test_locks
    python conformance/runner.py --python /path/to/python3.13 --check

Every module runs twice, each time in its own process: once on the target
loop ("target" side) and once on asyncio's own loop ("baseline" side), so a
failure can be told apart from a test that fails on this machine anyway.

Stdlib only (needs Python >= 3.11 for tomllib, as do the tested versions).
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

try:
    import tomllib
except ImportError:  # pragma: no cover
    sys.exit('conformance runner needs Python >= 3.11 (tomllib)')

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, 'child.py')
RESULTS_DIR = os.path.join(HERE, 'results')
DEFAULT_EXPECTED = os.path.join(HERE, 'expected_failures.toml')
KNOWN_PYTHONS = ('3.11', '3.12', '3.13', '3.14', '3.15')
CATEGORIES = ('internals', 'gap')

# Modules whose loop hooks are retargeted (see child.HOOKS): if none of their
# tests got a target loop, the hook silently stopped working.
HOOKED_MODULES = {
    'test_events', 'test_sock_lowlevel', 'test_sendfile', 'test_server',
    'test_buffered_proto', 'test_sslproto', 'test_ssl', 'test_runners',
    'test_unix_events',
}

# The largest modules, measured on the shared 2-core box with -j2 (default
# loop, Python 3.12; the whole suite takes ~33 s there).  None is slow
# enough to leave out of CI: they are only scheduled first so -j2 overlaps
# them with the small ones.  --skip-slow leaves them out for quick runs.
SLOW_MODULES = {
    'test_tasks': '~15 s: ~950 tests (Py/C task x future variants)',
    'test_subprocess': '~12 s: spawns many processes, 4 watcher variants',
    'test_ssl': '~8 s: TLS handshakes',
    'test_events': '~6 s: networking, subprocess, real timers',
    'test_taskgroups': '~6 s: real sleeps',
    'test_sslproto': '~4 s: start_tls functional tests',
}

GOOD = ('pass', 'xfail')
NEUTRAL = ('skip',)
BAD = ('fail', 'error', 'xpass', 'timeout', 'crash', 'notrun', 'leak')

PRINT_LOCK = threading.Lock()


def log(msg):
    with PRINT_LOCK:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Child process management
# ---------------------------------------------------------------------------

def python_info(python):
    code = ('import sys, os, test.test_asyncio as t; '
            'print("%d.%d" % sys.version_info[:2]); '
            'print(sys.version.split()[0]); '
            'print(os.path.dirname(t.__file__))')
    out = subprocess.run([python, '-c', code], check=True,
                         capture_output=True, text=True).stdout.split('\n')
    ver, full, tdir = out[0], out[1], out[2]
    mods = sorted(f[:-3] for f in os.listdir(tdir)
                  if f.startswith('test_') and f.endswith('.py'))
    return ver, full, mods


def parse_events(path, offset):
    events = []
    with open(path, 'rb') as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b'\n') + 1
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events, offset + end


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def run_module(opts, module, side):
    """Run one module on one side, restarting around hung/crashed tests."""
    loop = opts.loop if side == 'target' else 'asyncio'
    workdir = tempfile.mkdtemp(prefix='conf-%s-%s-' % (module, side))
    progress = os.path.join(workdir, 'progress.jsonl')
    skipfile = os.path.join(workdir, 'skip.txt')
    logpath = os.path.join(workdir, 'output.log')
    open(progress, 'w').close()
    env = dict(os.environ)
    env.pop('PYTHONASYNCIODEBUG', None)
    if opts.debug:
        env['PYTHONASYNCIODEBUG'] = '1'
    env['PYTHONUNBUFFERED'] = '1'

    res = {'module': module, 'side': side, 'loop': loop, 'meta': {},
           'plan': [], 'tests': {}, 'fixtures': [], 'status': 'ok',
           'restarts': 0, 'detail': ''}
    skip = set(opts.skip_ids)
    t0 = time.monotonic()
    offset = 0
    while True:
        with open(skipfile, 'w') as f:
            f.write('\n'.join(sorted(skip | set(res['tests']))))
        log_off = os.path.getsize(logpath) if os.path.exists(logpath) else 0
        cmd = [opts.python, CHILD, '--module', module, '--loop', loop,
               '--out', progress, '--skip-file', skipfile,
               '--test-timeout', str(opts.test_timeout)]
        remaining = opts.module_timeout - (time.monotonic() - t0)
        with open(logpath, 'ab') as logf:
            proc = subprocess.Popen(cmd, cwd=workdir, env=env,
                                    stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT,
                                    start_new_session=True)
            timed_out = False
            try:
                rc = proc.wait(timeout=max(remaining, 1))
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(proc)
                rc = proc.returncode
            else:
                # Reap anything the tests left behind in the group.
                kill_group(proc)
        events, offset = parse_events(progress, offset)
        with open(logpath, 'rb') as f:
            f.seek(log_off)
            tail = f.read().decode('utf-8', 'replace')
        done = False
        started = None
        for ev in events:
            kind = ev.get('event')
            if kind == 'meta':
                res['meta'] = ev
            elif kind == 'plan':
                res['plan'] = ev['ids']
            elif kind == 'start':
                started = ev['id']
            elif kind == 'end':
                rec = {k: v for k, v in ev.items() if k not in ('event', 'id')}
                res['tests'][ev['id']] = rec
                started = None
            elif kind == 'fixture':
                res['fixtures'].append(ev)
            elif kind == 'fatal':
                res['status'] = 'fatal'
                res['detail'] = ev.get('detail', '')
            elif kind == 'done':
                done = True
        if done or res['status'] == 'fatal':
            break
        if started is None:
            res['status'] = 'timeout' if timed_out else 'fatal'
            res['detail'] = ('child exited with %s outside a test:\n%s'
                             % (rc, tail[-3000:]))
            break
        if timed_out:
            outcome = 'timeout'
        elif 'Timeout (' in tail:
            outcome = 'timeout'
        else:
            outcome = 'crash'
        res['tests'][started] = {
            'outcome': outcome, 'loops': None, 'time': None,
            'detail': ('%s (exit %s); module restarted without it\n%s'
                       % (outcome, rc, tail[-3000:]))}
        log('  %s [%s]: %s in %s, restarting'
            % (module, loop, outcome, started))
        if timed_out:
            res['status'] = 'timeout'
            res['detail'] = 'module time limit (%ss) hit' % opts.module_timeout
            break
        res['restarts'] += 1
        if res['restarts'] > opts.max_restarts:
            res['status'] = 'fatal'
            res['detail'] = 'too many restarts'
            break
    skipped_fixtures = {fx['id'].rsplit('.', 1)[0] for fx in res['fixtures']
                        if fx['outcome'] == 'skip'}
    for tid in res['plan']:
        if tid not in res['tests'] and tid not in skip:
            owner = tid.rsplit('.', 1)[0]
            if owner in skipped_fixtures or tid.split('.')[0] in \
                    skipped_fixtures:
                res['tests'][tid] = {'outcome': 'skip', 'loops': {},
                                     'time': 0.0,
                                     'detail': 'setUpClass/Module skipped'}
            else:
                res['tests'][tid] = {'outcome': 'notrun', 'loops': None,
                                     'time': None}
    res['wall'] = round(time.monotonic() - t0, 1)
    if opts.keep_logs:
        res['workdir'] = workdir
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------
# Expected failures file
# ---------------------------------------------------------------------------

def load_expected(path):
    if not os.path.exists(path):
        return {}
    with open(path, 'rb') as f:
        data = tomllib.load(f)
    out = {}
    for tid, val in data.get('expected', {}).items():
        if isinstance(val, str):
            val = {'reason': val}
        entry = {'reason': val.get('reason', 'gap: TODO'),
                 'python': list(val.get('python', [])),
                 'run': bool(val.get('run', True))}
        cat = entry['reason'].split(':', 1)[0].strip()
        if cat not in CATEGORIES:
            sys.exit('%s: %s: reason must start with one of %s, got %r'
                     % (path, tid, ', '.join(c + ':' for c in CATEGORIES),
                        entry['reason']))
        out[tid] = entry
    return out


def applies(entry, ver):
    return not entry['python'] or ver in entry['python']


def toml_str(s):
    return json.dumps(s, ensure_ascii=False)


HEADER = """\
# Tests of CPython's test.test_asyncio that fail on evpy but pass on
# asyncio's own loop.  Maintained by conformance/runner.py --update (which
# keeps reasons and adds new entries as "gap: TODO"); edit reasons by hand.
#
# Key: test id (module.Class.test).  Value: a reason string, or an inline
# table {reason = "...", python = ["3.12"], run = false}.
#   reason   "internals: <private name> ..."  the test inspects or mocks the
#                                             default loop's private machinery
#            "gap: ..."                       behaviour evpy does not have yet
#   python   only on these Python versions (absent: all of them)
#   run      false: do not run it at all (it hangs or takes the watchdog
#            time); such entries are never reported as fixed
#
# --check fails on a failure not listed here and on a listed test that now
# passes, so this list only shrinks.
"""


def save_expected(path, entries):
    lines = [HEADER, '[expected]']
    cur_mod = None
    for tid in sorted(entries, key=lambda t: (t.split('.')[0], t)):
        mod = tid.split('.')[0]
        if mod != cur_mod:
            lines.append('\n# --- %s' % mod)
            cur_mod = mod
        e = entries[tid]
        if not e['python'] and e['run']:
            lines.append('%s = %s' % (toml_str(tid), toml_str(e['reason'])))
        else:
            parts = ['reason = %s' % toml_str(e['reason'])]
            if e['python']:
                parts.append('python = [%s]' % ', '.join(
                    toml_str(v) for v in sorted(e['python'])))
            if not e['run']:
                parts.append('run = false')
            lines.append('%s = {%s}' % (toml_str(tid), ', '.join(parts)))
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------

def loop_kind(rec):
    loops = rec.get('loops')
    if loops is None:
        return 'unknown'  # hung or crashed before reporting
    for kind in ('target', 'leak', 'default', 'stub'):
        if loops.get(kind):
            return kind
    return 'none'


def target_outcome(rec):
    out = rec['outcome']
    if out in GOOD + NEUTRAL and loop_kind(rec) == 'leak':
        return 'leak'
    return out


def analyse(opts, ver, tres, bres, expected):
    """Compare target and baseline results of one module."""
    module = tres['module']
    renamed = tres['meta'].get('renamed', {})

    def base_id(tid):
        parts = tid.split('.')
        if len(parts) >= 3 and parts[1] in renamed:
            parts[1] = renamed[parts[1]]
        return '.'.join(parts)

    m = {'module': module, 'target': counts(tres, target=True),
         'baseline': counts(bres) if bres else None,
         'new': [], 'fixed': [], 'listed': [], 'both': [],
         'listed_skipped': [], 'stale': [], 'problems': [],
         'kinds': {}, 'tests': {}}
    for tid, rec in sorted(tres['tests'].items()):
        kind = loop_kind(rec)
        m['kinds'][kind] = m['kinds'].get(kind, 0) + 1
        out = target_outcome(rec)
        brec = bres['tests'].get(base_id(tid)) if bres else None
        bout = brec['outcome'] if brec else None
        entry = expected.get(tid)
        listed = entry is not None and applies(entry, ver)
        m['tests'][tid] = {'outcome': out, 'baseline': bout, 'loop': kind,
                           'listed': listed}
        if out in BAD:
            if bout in BAD:
                m['both'].append(tid)
            elif listed:
                m['listed'].append(tid)
            else:
                m['new'].append(tid)
        elif listed:
            if out in GOOD:
                m['fixed'].append(tid)
            else:
                m['listed_skipped'].append(tid)
    for fx in tres['fixtures']:
        fid = fx['id']
        if fx['outcome'] not in BAD:
            continue
        bad_in_base = bres and any(b['id'] == base_id(fid)
                                   for b in bres['fixtures'])
        if expected.get(fid) and applies(expected[fid], ver):
            m['listed'].append(fid)
        elif not bad_in_base:
            m['new'].append(fid)
            m['tests'][fid] = {'outcome': fx['outcome'], 'baseline': None,
                               'loop': 'none', 'listed': False}
    # Listed tests of this module that did not show up at all.
    ran = set(tres['tests']) | {fx['id'] for fx in tres['fixtures']}
    for tid, entry in expected.items():
        if (tid.split('.')[0] == module and applies(entry, ver)
                and entry['run'] and tid not in ran
                and tres['status'] == 'ok' and tres['plan']):
            m['stale'].append(tid)

    # Module level checks.
    meta = tres['meta']
    if tres['status'] != 'ok':
        m['problems'].append('%s: %s' % (tres['status'],
                                         tres['detail'][:300]))
    if meta.get('unhandled_hooks'):
        m['problems'].append('unhandled loop hooks (classes that build '
                             'their own loop): %s'
                             % ', '.join(meta['unhandled_hooks']))
    for hook in meta.get('hooks', []):
        if hook.get('status') != 'ok':
            m['problems'].append('hook classes not found: %s'
                                 % ', '.join(hook['classes']))
    ran_tests = [r for r in tres['tests'].values()
                 if r['outcome'] not in ('skip', 'notrun')]
    if opts.loop == 'asyncio':
        m['applicable'] = True
    elif m['kinds'].get('target'):
        m['applicable'] = True
    else:
        m['applicable'] = False
        if module in HOOKED_MODULES and ran_tests:
            m['problems'].append('no test got a %s loop although the module '
                                 'has retargeted hooks' % opts.loop)
    if m['kinds'].get('leak'):
        m['problems'].append('%d test(s) silently ran on the default loop'
                             % m['kinds']['leak'])
    return m


def counts(res, target=False):
    c = {'run': 0, 'passed': 0, 'failed': 0, 'errors': 0, 'skipped': 0,
         'na': 0}
    for rec in res['tests'].values():
        out = target_outcome(rec) if target else rec['outcome']
        if out == 'notrun':
            c['errors'] += 1
            continue
        c['run'] += 1
        if out in GOOD:
            c['passed'] += 1
        elif out == 'skip':
            c['skipped'] += 1
        elif out in ('error', 'crash'):
            c['errors'] += 1
        else:
            c['failed'] += 1
        if target and loop_kind(rec) not in ('target', 'unknown') \
                and out != 'skip':
            c['na'] += 1
    c['errors'] += sum(1 for fx in res['fixtures']
                       if fx['outcome'] in BAD)
    return c


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def fmt_row(cols, widths):
    return '  '.join(str(c).rjust(w) if i else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(cols, widths)))


def report(opts, ver, analyses, wall):
    tname = opts.loop
    heads = ['module', 'run', 'pass', 'fail', 'err', 'skip', 'n/a',
             '|', 'run', 'pass', 'fail', 'err', 'skip', '|',
             'listed', 'new', 'fixed', 'verdict']
    widths = [22, 5, 5, 5, 5, 5, 5, 1, 5, 5, 5, 5, 5, 1, 6, 4, 5, 10]
    print()
    print('%s conformance: %s vs asyncio default loop on Python %s'
          % ('CHECK' if opts.check else 'RUN', tname, ver))
    print(' ' * 24 + ('%s (target)' % tname).center(41) + '   '
          + 'asyncio (baseline)'.center(33))
    print(fmt_row(heads, widths))
    print('-' * (sum(widths) + 2 * len(widths)))
    tot_t = dict.fromkeys(('run', 'passed', 'failed', 'errors', 'skipped',
                           'na'), 0)
    tot_b = dict(tot_t)
    tot_l = tot_n = tot_f = 0
    for m in analyses:
        t, b = m['target'], m['baseline']
        if m['problems'] or m['new'] or m['fixed'] or m['stale']:
            verdict = 'FAIL'
        elif not m['applicable']:
            verdict = 'n/a'
        else:
            verdict = 'ok'
        bcols = ([b['run'], b['passed'], b['failed'], b['errors'],
                  b['skipped']] if b else ['-'] * 5)
        print(fmt_row([m['module'], t['run'], t['passed'], t['failed'],
                       t['errors'], t['skipped'], t['na'], '|'] + bcols
                      + ['|', len(m['listed']), len(m['new']),
                         len(m['fixed']), verdict], widths))
        for k in tot_t:
            tot_t[k] += t[k]
            if b:
                tot_b[k] += b[k]
        tot_l += len(m['listed'])
        tot_n += len(m['new'])
        tot_f += len(m['fixed'])
    print('-' * (sum(widths) + 2 * len(widths)))
    print(fmt_row(['TOTAL', tot_t['run'], tot_t['passed'], tot_t['failed'],
                   tot_t['errors'], tot_t['skipped'], tot_t['na'], '|',
                   tot_b['run'], tot_b['passed'], tot_b['failed'],
                   tot_b['errors'], tot_b['skipped'], '|', tot_l, tot_n,
                   tot_f, ''], widths))
    na_mods = [m['module'] for m in analyses if not m['applicable']]
    if na_mods:
        print('\nnot applicable (no test got a %s loop): %s'
              % (tname, ', '.join(na_mods)))
    both = sum(len(m['both']) for m in analyses)
    if both:
        print('failing on both loops (not counted against %s): %d'
              % (tname, both))
    print('wall time: %.0fs' % wall)
    return tot_n, tot_f


def print_problems(opts, analyses, limit=60):
    bad = False
    for m in analyses:
        items = []
        for p in m['problems']:
            items.append('MODULE: ' + p)
        for tid in m['new']:
            items.append('NEW FAILURE (%s): %s'
                         % (m['tests'].get(tid, {}).get('outcome', '?'), tid))
        for tid in m['fixed']:
            items.append('NOW PASSES, remove from the list: ' + tid)
        for tid in m['stale']:
            items.append('LISTED BUT NOT FOUND, remove from the list: '
                         + tid)
        if items:
            bad = True
            print('\n[%s]' % m['module'])
            for line in items[:limit]:
                print('  ' + line)
            if len(items) > limit:
                print('  ... and %d more (see the JSON)'
                      % (len(items) - limit))
    return bad


# ---------------------------------------------------------------------------
# --update
# ---------------------------------------------------------------------------

_NIE_RE = re.compile(r'File "[^"]*asyncio[/\\](\w+)\.py", line \d+, in (\w+)'
                     r'\n(?:.*\n)?\s*raise NotImplementedError')
_ATTR_RE = re.compile(r"AttributeError: '(\w+)' object has no attribute "
                      r"'(\w+)'")


def suggest_reason(rec):
    """A first guess at the category of a failure, for the human."""
    detail = rec.get('detail') or ''
    hints = rec.get('hints') or []
    if rec.get('outcome') == 'timeout':
        return 'gap: hangs (watchdog timeout)'
    if rec.get('outcome') == 'crash':
        return 'gap: crashes the interpreter'
    if hints:
        # The test reaches into asyncio's private loop machinery: it cannot
        # pass on another loop even once the feature exists.
        return 'internals: %s' % ', '.join(
            'loop.' + h if h.startswith('_') else h for h in hints)
    m = _ATTR_RE.search(detail)
    if m and m.group(2).startswith('_'):
        return 'internals: %s.%s' % (m.group(1).lower(), m.group(2))
    nie = _NIE_RE.findall(detail)
    if nie:
        mod, func = nie[-1]
        owner = 'EventLoopPolicy' if 'watcher' in func else 'loop'
        return 'gap: %s.%s() not implemented' % (owner, func)
    if m:
        return 'gap: %s.%s missing' % (m.group(1), m.group(2))
    return ''


def update_expected(opts, ver, analyses, results, expected):
    new = {k: dict(v) for k, v in expected.items()}
    others = [v for v in KNOWN_PYTHONS if v != ver]
    added = removed = narrowed = 0
    for m in analyses:
        tres = results[(m['module'], 'target')]
        if tres['status'] != 'ok' and not tres['tests']:
            continue  # module did not run: keep its entries untouched
        failing = set(m['listed']) | set(m['new'])
        details = {tid: tres['tests'].get(tid, {}) for tid in failing}
        # Listed tests that pass now, or vanished: drop them for this ver.
        for tid in list(new):
            if tid.split('.')[0] != m['module'] or tid in failing:
                continue
            e = new[tid]
            if not applies(e, ver) or not e['run']:
                continue
            if (tid in m['fixed'] or tid in m['stale']):
                e['python'] = [v for v in (e['python'] or others)
                               if v != ver]
                if not e['python']:
                    del new[tid]
                    removed += 1
                else:
                    narrowed += 1
        for tid in failing:
            rec = details.get(tid) or {}
            if tid in new:
                e = new[tid]
                if rec.get('outcome') == 'timeout':
                    e['run'] = False  # hangs now: stop paying the watchdog
                if e['python'] and ver not in e['python']:
                    e['python'] = sorted(set(e['python']) | {ver})
                    if set(e['python']) >= set(KNOWN_PYTHONS):
                        e['python'] = []
                continue
            reason = 'gap: TODO'
            hint = suggest_reason(rec)
            if hint:
                reason += ' -- suggested: ' + hint
            # New entries are pinned to the version they were seen on;
            # runs on the other versions widen the list (all -> no pin).
            new[tid] = {'reason': reason, 'python': [ver],
                        'run': rec.get('outcome') != 'timeout'}
            added += 1
    save_expected(opts.expected, new)
    print('\nupdated %s: +%d new, -%d removed, %d no longer on %s, '
          '%d entries' % (os.path.relpath(opts.expected), added, removed,
                          narrowed, ver, len(new)))


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(
        description='Run test.test_asyncio against evpy.')
    ap.add_argument('--loop', default='evpy',
                    choices=('evpy', 'uvloop', 'asyncio'),
                    help='loop under test (default: evpy)')
    ap.add_argument('--python', default=sys.executable,
                    help='interpreter whose test.test_asyncio is run')
    ap.add_argument('--modules', default='',
                    help='comma/space separated modules (default: all)')
    ap.add_argument('--skip-slow', action='store_true',
                    help='leave out the modules marked slow')
    ap.add_argument('-j', '--jobs', type=int, default=2)
    ap.add_argument('--debug', action='store_true',
                    help='run with PYTHONASYNCIODEBUG=1')
    ap.add_argument('--check', action='store_true',
                    help='exit non-zero on new failures or on listed '
                         'tests that now pass')
    ap.add_argument('--update', action='store_true',
                    help='rewrite the expected-failures file from this run')
    ap.add_argument('--expected', default=None,
                    help='expected-failures file (default: '
                         'conformance/expected_failures.toml for evpy, '
                         'expected_failures-<loop>.toml otherwise)')
    ap.add_argument('--run-all', action='store_true',
                    help='also run entries marked run = false')
    ap.add_argument('--no-baseline', action='store_true',
                    help="don't run the default-loop side")
    ap.add_argument('--test-timeout', type=float, default=30.0,
                    help='per-test watchdog in seconds (default 30)')
    ap.add_argument('--module-timeout', type=float, default=900.0,
                    help='per-module wall time limit (default 900)')
    ap.add_argument('--max-restarts', type=int, default=25)
    ap.add_argument('--json', default=None, help='results JSON path')
    ap.add_argument('--keep-logs', action='store_true',
                    help='keep the per-module work dirs with output.log')
    opts = ap.parse_args(argv)

    if opts.expected is None:
        opts.expected = (DEFAULT_EXPECTED if opts.loop == 'evpy' else
                         os.path.join(HERE, 'expected_failures-%s.toml'
                                      % opts.loop))
    ver, full, all_mods = python_info(opts.python)
    if opts.loop != 'asyncio':
        probe = ('import sys; sys.path.insert(0, %r); import child; '
                 'child.in_place_build(%r) and sys.path.insert(0, %r); '
                 'import %s as m; m.new_event_loop().close(); '
                 'print(m.__file__)'
                 % (HERE, os.path.dirname(HERE), os.path.dirname(HERE),
                    opts.loop))
        # Run from conformance/: `python -c` puts the cwd first on sys.path,
        # and the repository root holds an unbuilt evpy package.
        r = subprocess.run([opts.python, '-c', probe], capture_output=True,
                           text=True, cwd=HERE)
        if r.returncode:
            sys.exit('cannot create a %s loop with %s:\n%s'
                     % (opts.loop, opts.python, r.stderr[-2000:]))
    if opts.modules:
        mods = [m for m in re.split(r'[,\s]+', opts.modules) if m]
        unknown = set(mods) - set(all_mods)
        if unknown:
            sys.exit('unknown modules for Python %s: %s'
                     % (ver, ', '.join(sorted(unknown))))
    else:
        mods = list(all_mods)
    if opts.skip_slow:
        mods = [m for m in mods if m not in SLOW_MODULES]
    expected = load_expected(opts.expected)
    opts.skip_ids = set() if opts.run_all else {
        tid for tid, e in expected.items()
        if not e['run'] and applies(e, ver)}

    sides = ['target']
    if opts.loop != 'asyncio' and not opts.no_baseline:
        sides.append('baseline')
    jobs = [(m, s) for m in sorted(mods, key=lambda m: m not in SLOW_MODULES)
            for s in sides]
    log('conformance: %s on Python %s (%s), %d modules x %d sides, -j%d%s'
        % (opts.loop, full, opts.python, len(mods), len(sides), opts.jobs,
           ', PYTHONASYNCIODEBUG=1' if opts.debug else ''))
    t0 = time.monotonic()
    results = {}
    with concurrent.futures.ThreadPoolExecutor(opts.jobs) as ex:
        futs = {ex.submit(run_module, opts, m, s): (m, s) for m, s in jobs}
        for fut in concurrent.futures.as_completed(futs):
            m, s = futs[fut]
            res = fut.result()
            results[(m, s)] = res
            c = counts(res, target=(s == 'target'))
            log('  done %-22s %-8s %6.1fs  run=%d pass=%d fail=%d err=%d '
                'skip=%d%s' % (m, s, res['wall'], c['run'], c['passed'],
                               c['failed'], c['errors'], c['skipped'],
                               '' if res['status'] == 'ok'
                               else '  [%s]' % res['status']))
    wall = time.monotonic() - t0

    analyses = [analyse(opts, ver, results[(m, 'target')],
                        results.get((m, 'baseline')), expected)
                for m in mods]
    n_new, n_fixed = report(opts, ver, analyses, wall)
    bad = print_problems(opts, analyses)

    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    path = opts.json or os.path.join(
        RESULTS_DIR, '%s-py%s-%s.json' % (opts.loop, ver, stamp))
    doc = {'loop': opts.loop, 'python': full, 'python_path': opts.python,
           'debug': opts.debug, 'wall': round(wall, 1),
           'expected_file': os.path.relpath(opts.expected),
           'modules': {}}
    for m in analyses:
        mod = m['module']
        doc['modules'][mod] = {
            'applicable': m['applicable'], 'target': m['target'],
            'baseline': m['baseline'], 'loop_kinds': m['kinds'],
            'new_failures': m['new'], 'fixed': m['fixed'],
            'listed_failing': m['listed'], 'failing_on_both': m['both'],
            'listed_skipped': m['listed_skipped'], 'stale': m['stale'],
            'problems': m['problems'], 'tests': m['tests'],
            'runs': {s: {k: v for k, v in results[(mod, s)].items()
                         if k != 'plan'}
                     for s in sides},
        }
    with open(path, 'w') as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    latest = os.path.join(RESULTS_DIR, 'latest-%s-py%s.json'
                          % (opts.loop, ver))
    shutil.copyfile(path, latest)
    print('results: %s' % os.path.relpath(path))

    if opts.update:
        update_expected(opts, ver, analyses, results, expected)
        return 0
    if opts.check:
        if bad:
            print('\nCONFORMANCE CHECK FAILED: %d new failure(s), %d listed '
                  'test(s) now passing, see above. Fix the regression, or '
                  'run with --update and classify the new entries in %s.'
                  % (n_new, n_fixed, os.path.relpath(opts.expected)))
            return 1
        print('\nconformance check passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
