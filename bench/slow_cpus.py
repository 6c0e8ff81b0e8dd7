"""Is this machine's "slow state" per CPU? One probe process pinned to each CPU, side by side.

    python bench/slow_cpus.py [--seconds 300] [--window 5] [--cpus 0,1]

Issue 17's slow phases (bench/slow_state.py, slow_steps.py) were found by splitting rounds of one
process. This script asks where they live: it starts one child process per CPU, each pinned to
its CPU (``os.sched_setaffinity``), and each times, every ~30 ms, an L1-resident numba ReLU over
16 KB (load, max, store; 400 passes: the probe the slow state hits hardest, x1.6-1.7). Per window
of ``--window`` seconds it prints each CPU's median; a window is *slow* on a CPU when its median
is over 1.25x the CPU's fastest window. The summary gives, per CPU, the share of slow windows and
the runs of slow windows, and the share of windows in which both / neither / just one CPU was slow.

2026-12-07 01:46 (2 vCPUs, KVM, AMD EPYC family 25; 300 s, 5 s windows): the slow state is per
vCPU -- cpu0 and cpu1 each slow in about half of the windows, in runs of 5-30 s, often one slow
while the other is fast; the ReLU probe 100-104 -> 150-175 us (x1.5-1.7), and a 4-chain FMA loop
reading L1 27 -> 35-44 us. The machine reports no steal time meanwhile (/proc/stat). So on this
VM a one-thread benchmark's state depends on which vCPU its process is on, and changes within
seconds; compare engines round by round in one process (refnet.bench's alternating rounds, the
per-round ratios), not runs minutes apart. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SLOW = 1.25


def _child(cpu: int, seconds: float) -> None:
    """Pinned to ``cpu``: print one JSON line per probe (seconds since start, us)."""
    os.sched_setaffinity(0, {cpu})
    import numpy as np

    from refnet.kernels._lazyjit import load_numba

    numba = load_numba()

    @numba.njit(fastmath=True)
    def relu(src, dst, reps):
        for _ in range(reps):
            for i in range(src.size):
                v = src[i]
                dst[i] = v if v > 0 else np.float32(0)

    a = np.random.default_rng(cpu).random(4096, dtype=np.float32) - 0.5
    b = np.empty_like(a)
    relu(a, b, 2)
    t_start = time.monotonic()
    print("ready", flush=True)
    while (now := time.monotonic()) < t_start + seconds:
        t0 = time.perf_counter()
        relu(a, b, 400)
        print(json.dumps([now - t_start, (time.perf_counter() - t0) * 1e6]), flush=True)
        time.sleep(0.03)


def _runs(flags: list[bool], window: float) -> str:
    """The lengths of the runs of True in ``flags`` (seconds): count, median, max."""
    runs, n = [], 0
    for f in flags + [False]:
        if f:
            n += 1
        elif n:
            runs.append(n * window)
            n = 0
    if not runs:
        return "no slow runs"
    return f"{len(runs)} slow runs, median {statistics.median(runs):.0f} s, longest {max(runs):.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--cpus", help="comma-separated CPU numbers (default: every CPU this process may use)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        _child(a.child, a.seconds)
        return 0
    cpus = sorted(os.sched_getaffinity(0)) if not a.cpus else [int(c) for c in a.cpus.split(",")]
    if len(cpus) < 2:
        print(f"only CPU(s) {cpus} to probe: the per-CPU comparison needs two", file=sys.stderr)
        return 1
    kids = {c: subprocess.Popen([sys.executable, __file__, "--child", str(c), "--seconds", str(a.seconds)],
                                stdout=subprocess.PIPE, text=True) for c in cpus}
    times: dict[int, list[tuple[float, float]]] = {}
    for c, p in kids.items():
        out, _ = p.communicate()
        lines = out.splitlines()
        if p.returncode or not lines or lines[0] != "ready":
            print(f"the probe on CPU {c} failed (exit {p.returncode})", file=sys.stderr)
            return 1
        times[c] = [tuple(json.loads(s)) for s in lines[1:]]
    n_win = int(a.seconds // a.window)
    med: dict[int, list[float | None]] = {}
    for c, rows in times.items():
        per: list[list[float]] = [[] for _ in range(n_win)]
        for t, us in rows:
            if int(t // a.window) < n_win:
                per[int(t // a.window)].append(us)
        med[c] = [statistics.median(v) if v else None for v in per]
    best = {c: min(m for m in med[c] if m is not None) for c in cpus}
    print("window " + "".join(f"  cpu{c} ReLU us" for c in cpus))
    slow = {c: [] for c in cpus}
    for w in range(n_win):
        cells = []
        for c in cpus:
            m = med[c][w]
            s = m is not None and m > SLOW * best[c]
            slow[c].append(s)
            cells.append(f"{'-':>9s}      " if m is None else f"{m:9.1f} {'slow' if s else '    '} ")
        print(f"{w * a.window:5.0f}s " + "".join(cells))
    print(f"\nslow window: median over {SLOW}x the CPU's fastest window ({a.window:.0f} s windows, {n_win} of them)")
    for c in cpus:
        share = sum(slow[c]) / n_win
        print(f"  cpu{c}: fastest {best[c]:.1f} us, slow in {share:.0%} of the windows; {_runs(slow[c], a.window)}")
    n_slow = [sum(slow[c][w] for c in cpus) for w in range(n_win)]
    print(f"  windows with every CPU slow {sum(k == len(cpus) for k in n_slow) / n_win:.0%}, "
          f"none slow {sum(k == 0 for k in n_slow) / n_win:.0%}, "
          f"some but not all {sum(0 < k < len(cpus) for k in n_slow) / n_win:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
