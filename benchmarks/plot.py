"""PNG charts of a benchmark run (``python -m benchmarks --plot DIR``).

Reads the run's JSON document (the one ``--save FILE`` writes, or the run
just made) and draws, with matplotlib:

- ``overview.png``: every case's first metric, evpy's speed-up over uvloop
  and over asyncio's loop (> 1: evpy is better) with the 95% intervals the
  run computed (bootstrap over the interleaved rounds), evpy relative to
  the C floor as a tick where the case has one, and the run's noise band
  (the largest max-min spread of the loops' samples) around 1.0;
- ``<case>.png``: the same for each metric of one case.

The caption names the date, machine, Python, commit and the run's
settings: timings from a shared or loaded machine are noisy, compare the
ratios in one chart, not absolute numbers across runs.
"""

import os

SUBJECT = 'evpy'
FLOOR = 'c'
OTHERS = (('uvloop', 'tab:blue', 'o'), ('asyncio', 'tab:orange', 's'))


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib "
                         "(or '.[plot]')") from None
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def caption(doc):
    """Two lines saying when, where and how the run was made."""
    machine = doc.get('machine') or {}
    python = doc.get('python') or {}
    version = python.get('version', '?') if isinstance(python, dict) \
        else str(python)
    git = doc.get('git') or {}
    config = doc.get('config') or {}
    load = machine.get('loadavg_start') or []
    rounds = sorted({c['rounds'] for c in doc.get('cases', [])
                     if c.get('rounds')})
    when = (doc.get('started') or '?')[:16].replace('T', ' ')
    commit = (git.get('commit') or '?')[:10] + (
        ' (dirty)' if git.get('dirty') else '')
    first = (f"{when} UTC; {machine.get('cpu_model', '?')}, "
             f"{machine.get('cpu_count', '?')} cores, "
             f"{machine.get('system', '')} {machine.get('release', '')}; "
             f"Python {version.split()[0]}; commit {commit}")
    second = (f"{'--quick, ' if config.get('quick') else ''}"
              f"{'/'.join(map(str, rounds)) or '?'} rounds per case; "
              f"load average at start "
              f"{f'{load[0]:.1f}' if load else '?'} on a shared machine: "
              f"timings are noisy (bars: 95% intervals)")
    return first + '\n' + second


def _rows(case, metrics):
    """(label, summary) for the metrics to draw of one case."""
    out = []
    for m in metrics:
        summ = (case.get('summary') or {}).get(m['name'])
        if summ and summ.get('speedup'):
            out.append((m, summ))
    return out


def _noise(summ):
    spreads = [v['spread'] for v in summ['loops'].values()
               if v.get('spread') is not None and v.get('count', 0) > 1]
    return max(spreads) if spreads else None


def _draw(ax, rows):
    """Horizontal chart: one row per (case, metric), log x axis of evpy's
    speed-up."""
    ax.set_xscale('log')
    ax.axvline(1.0, color='black', linewidth=0.8)
    labels = []
    seen = set()

    def once(name):
        # Each kind of mark in the legend once, wherever it first shows.
        if name in seen:
            return None
        seen.add(name)
        return name
    lo, hi = 0.8, 1.25
    for y, (label, summ) in enumerate(rows):
        labels.append(label)
        noise = _noise(summ)
        if noise:
            band = 1.0 + noise
            ax.fill_betweenx([y - 0.4, y + 0.4], 1 / band, band,
                             color='0.85', zorder=0,
                             label=once('noise band'))
        for k, (loop, color, marker) in enumerate(OTHERS):
            ratio = summ['speedup'].get(loop)
            if not ratio or ratio <= 0:   # none, or not on a log axis
                continue
            ci = (summ.get('speedup_ci95') or {}).get(loop)
            offset = (k - 0.5) * 0.3
            err = None
            if ci and ci[0] > 0:
                err = [[max(ratio - ci[0], 0)], [max(ci[1] - ratio, 0)]]
                lo, hi = min(lo, ci[0]), max(hi, ci[1])
            lo, hi = min(lo, ratio), max(hi, ratio)
            ax.errorbar([ratio], [y + offset], xerr=err, fmt=marker,
                        color=color, capsize=3, markersize=5,
                        label=once(f'vs {loop}'))
        floor = summ['speedup'].get(FLOOR)
        if floor:
            ax.plot([floor, floor], [y - 0.4, y + 0.4], color='tab:red',
                    linewidth=2, label=once('vs C floor'))
            lo, hi = min(lo, floor), max(hi, floor)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(lo / 1.15, hi * 1.15)
    # Fewer ticks on a wide axis, so their labels don't overlap.
    choices = ((0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if hi / lo > 8 else
               (0.25, 0.5, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5))
    ticks = [t for t in choices if lo / 1.15 <= t <= hi * 1.15]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f'{t:g}x' for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("evpy's speed-up (> 1x: evpy better; log scale)")
    ax.grid(axis='x', color='0.9')
    ax.legend(loc='lower right', fontsize=8)


def _figure(plt, rows, title, doc):
    height = 1.6 + 0.42 * len(rows)
    fig, ax = plt.subplots(figsize=(9, height))
    _draw(ax, rows)
    ax.set_title(title, fontsize=11)
    fig.text(0.01, 0.005, caption(doc), fontsize=7, va='bottom',
             color='0.3')
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))
    return fig


def _safe(name):
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)


def plot(doc, outdir):
    """Write overview.png and one PNG per timed case to outdir; return the
    paths written."""
    plt = _pyplot()
    os.makedirs(outdir, exist_ok=True)
    cases = [c for c in doc.get('cases', [])
             if not c.get('skipped') and c.get('summary')]
    written = []
    overview = []
    for case in cases:
        rows = _rows(case, case.get('metrics', []))
        if not rows:
            continue
        overview.append((f"{case['name']} ({rows[0][0]['label']})",
                         rows[0][1]))
        fig = _figure(plt, [(m['label'], s) for m, s in rows],
                      f"{case['name']}: {case.get('description', '')}",
                      doc)
        path = os.path.join(outdir, _safe(case['name']) + '.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if overview:
        fig = _figure(plt, overview, 'evpy vs uvloop and asyncio, per case '
                      '(median ratio, 95% interval)', doc)
        path = os.path.join(outdir, 'overview.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.insert(0, path)
    return written
