"""bench/split_ab.py's variants, keeping only the rounds during which other processes were idle.

    python bench/quiet_ab.py googlenet,mobilenet_ssd [--rounds 11] [--max-seconds 300]
        [--variants split2,py2,one,cv2] [--others 0.15]

On the shared 2-core machine other engineers' jobs come and go, and a 2-thread run needs the
second core: a round (every variant once, each after its set-up, an untimed warm-up call and a
0.1 s pause, as refnet.bench.alternate does) is kept only if the CPU time of all other processes
during it (/proc/stat minus this process's own /proc/self/stat) stayed under ``--others`` cores.
Rounds are repeated until ``--rounds`` are kept or ``--max-seconds`` pass; prints how many were
kept of how many, medians and minima over the kept rounds and the medians of per-round ratios.
Linux only. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_ab import _load, _variants, feeds_for, reset_env  # noqa: E402


def _ticks(pids: Sequence[int] = ()) -> tuple[int, int]:
    """(busy ticks of all CPUs, ticks of this process and of the processes ``pids``), in USER_HZ."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v) - v[3] - v[4]  # minus idle and iowait
    own = 0
    for pid in ["self", *pids]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read().rsplit(")", 1)[1].split()
        except OSError:  # (a process that ended)
            continue
        own += int(s[11]) + int(s[12])  # utime + stime (all threads)
    return busy, own


def quiet_rounds(var: dict, names: list[str], rounds: int, max_seconds: float, others: float,
                 pids: Sequence[int] = (), rotate: bool = False) -> tuple[dict[str, list[float]], int, list[float]]:
    """Time ``names`` in alternating rounds, keeping the rounds where other processes (not this
    one, nor ``pids``: a neighbour started on purpose) used less than ``others`` cores; returns
    the kept times, the rounds tried and every round's load. ``rotate``: round r starts with the
    r-th name (no engine always first)."""
    hz = os.sysconf("SC_CLK_TCK")
    kept: dict[str, list[float]] = {k: [] for k in names}
    tried, loads = 0, []
    t_end = time.monotonic() + max_seconds
    while len(kept[names[0]]) < rounds and time.monotonic() < t_end:
        tried += 1
        b0, s0 = _ticks(pids)
        w0 = time.monotonic()
        got = {}
        first = (tried - 1) % len(names) if rotate else 0
        for k in names[first:] + names[:first]:
            prep, fn = var[k]
            prep()
            fn()
            time.sleep(0.1)
            t = time.perf_counter()
            fn()
            got[k] = time.perf_counter() - t
        b1, s1 = _ticks(pids)
        load = ((b1 - b0) - (s1 - s0)) / hz / max(1e-3, time.monotonic() - w0)
        loads.append(load)
        if load < others:
            for k in names:
                kept[k].append(got[k])
    return kept, tried, loads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--variants", default="split2,py2,one,cv2")
    ap.add_argument("--others", type=float, default=0.15, help="most cores other processes may use in a kept round")
    a = ap.parse_args(argv)
    from refnet.kernels._parallel import choose_threading_layer

    print(f"numba threading layer: {choose_threading_layer(2)} (region2* variants need tbb)")
    with tempfile.TemporaryDirectory(prefix="refnet-quiet-ab-") as wd:
        for name in a.models.split(","):
            net, size = _load(name, wd)
            var = _variants(net, feeds_for(net, size), "cv2" in a.variants)
            names = [k for k in a.variants.split(",") if k in var]
            kept, tried, loads = quiet_rounds(var, names, a.rounds, a.max_seconds, a.others)
            n = len(kept[names[0]])
            print(f"{name}: {n} of {tried} rounds kept (other processes < {a.others} cores; their load per round "
                  f"min {min(loads):.2f} median {statistics.median(loads):.2f} max {max(loads):.2f})")
            if not n:
                continue
            print("  median ms  " + "  ".join(f"{k} {statistics.median(kept[k]) * 1e3:.1f}" for k in names))
            print("  min ms     " + "  ".join(f"{k} {min(kept[k]) * 1e3:.1f}" for k in names))
            paired = (("split2", "py2"), ("region2", "split2"), ("region2b1", "region2"), ("region2b4", "region2"),
                      ("split2b2", "split2"))
            rat = [f"{p}/{q} {statistics.median(x / y for x, y in zip(kept[p], kept[q])):.2f}"
                   for p in names for q in names if p != q and (q in ("cv2", "one") or (p, q) in paired)]
            print("  per-round ratio medians  " + "  ".join(rat), flush=True)
    reset_env()
    return 0


if __name__ == "__main__":
    sys.exit(main())
