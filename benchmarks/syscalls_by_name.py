"""Syscalls per op by name, for one case and loop (Linux, perf).

    python -m benchmarks.syscalls_by_name CASE LOOP N_LO N_HI [--reps R]

Runs the worker in cost mode (as benchmarks/cost.py does) under ``perf
record -e raw_syscalls:sys_enter`` at N_LO and N_HI, names each syscall of
the worker's pid (its threads included, not its children) from the
kernel's ``asm/unistd_64.h``, and prints (count at N_HI - count at N_LO) /
(ops at N_HI - ops at N_LO) per name: which syscalls make a difference in
the cost table's ``sys/op`` column.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

from benchmarks._worker import RESULT_MARKER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNISTD = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"


def syscall_names(path=UNISTD):
    """{number: name} from the kernel header."""
    names = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"#define __NR_(\w+)\s+(\d+)", line)
            if m:
                names[int(m.group(2))] = m.group(1)
    return names


def count(python, case, loop, n, names):
    """(Counter of syscall names, ops) of one cost run of the worker."""
    with tempfile.TemporaryDirectory(prefix="evpy-sys-") as tmp:
        data = os.path.join(tmp, "perf.data")
        cmd = ["perf", "record", "-q", "-m", "1024", "-e",
               "raw_syscalls:sys_enter", "-o", data, "--", python, "-m",
               "benchmarks._worker", "--case", case, "--loop", loop,
               "--n", str(n), "--cost"]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, check=True)
        line = [x for x in r.stdout.splitlines()
                if x.startswith(RESULT_MARKER)][-1]
        result = json.loads(line[len(RESULT_MARKER):])
        pid = str(result["pid"])
        out = subprocess.run(["perf", "script", "-i", data, "-F",
                              "pid,trace"], capture_output=True, text=True,
                             check=True).stdout
    counts = collections.Counter()
    for row in out.splitlines():
        parts = row.split()
        m = re.search(r"NR (\d+)", row)
        if parts and parts[0] == pid and m:
            nr = int(m.group(1))
            counts[names.get(nr, str(nr))] += 1
    return counts, result["cost_ops"]


def main(argv=None):
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case")
    ap.add_argument("loop")
    ap.add_argument("n_lo", type=int)
    ap.add_argument("n_hi", type=int)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args(argv)
    names = syscall_names()
    total = collections.Counter()
    ops = 0
    for _ in range(args.reps):
        hi, ops_hi = count(sys.executable, args.case, args.loop, args.n_hi,
                           names)
        lo, ops_lo = count(sys.executable, args.case, args.loop, args.n_lo,
                           names)
        total.update(hi)
        total.subtract(lo)
        ops += ops_hi - ops_lo
    rows = sorted(total.items(), key=lambda kv: -kv[1])
    per = " ".join("%s %.3f" % (k, v / ops) for k, v in rows
                   if abs(v / ops) >= 0.005)
    print("%s %s per op: %s | total %.3f"
          % (args.case, args.loop, per, sum(total.values()) / ops))


if __name__ == "__main__":
    main()
