"""python -m benchmarks --load FILE --plot DIR: PNG charts from a saved run
(a small synthetic one: no benchmark runs here)."""
import json
import os
import subprocess
import sys

from integration.support import need

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def summary(speedups, intervals):
    loops = {lp: {'median': 1.0, 'min': 0.9, 'max': 1.1, 'count': 3,
                  'spread': 0.2} for lp in ('evpy', *speedups)}
    return {'loops': loops, 'speedup': speedups,
            'speedup_ci95': intervals, 'targets': []}


DOC = {
    'started': '2026-12-06T22:33:26+00:00',
    'machine': {'cpu_model': 'AMD EPYC', 'cpu_count': 2, 'system': 'Linux',
                'release': '6.1', 'loadavg_start': [1.5, 1, 1]},
    'python': {'version': '3.12.1 (main)'},
    'git': {'commit': '0123456789abcdef', 'dirty': False},
    'config': {'quick': True},
    'cases': [
        {'name': 'echo_protocol_1k_c10', 'description': 'echo',
         'rounds': 3, 'skipped': None,
         'metrics': [{'name': 'rps', 'label': 'req/s'},
                     {'name': 'p99_us', 'label': 'p99 us'}],
         'summary': {
             'rps': summary({'uvloop': 1.2, 'asyncio': 2.5, 'c': 0.9},
                            {'uvloop': [1.1, 1.3],
                             'asyncio': [2.2, 2.8],
                             'c': [0.85, 0.95]}),
             'p99_us': summary({'uvloop': 1.05, 'asyncio': 1.9},
                               {'uvloop': [0.9, 1.2]})}},
        {'name': 'spawn', 'description': 'spawn', 'rounds': 3,
         'skipped': 'no uvloop', 'metrics': [], 'summary': {}},
    ],
}


def test_charts_from_a_saved_run(tmp_path):
    need('matplotlib')
    saved = tmp_path / 'run.json'
    saved.write_text(json.dumps(DOC))
    out = tmp_path / 'charts'
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks', '--load', str(saved),
         '--plot', str(out)], cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ['echo_protocol_1k_c10.png',
                                       'overview.png']
    for name in os.listdir(out):
        with open(out / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'chart written to' in proc.stderr
