"""Bimodal forward passes at N threads: per-step times of fast vs slow passes (issue 17).

    python bench/pass_modes.py mobilenet_ssd [--threads 2] [--passes 200] [--gap 0.1] [--show 15]

Loads the model as bench/split_ab.py does, sets the thread count, then runs ``--passes``
forward passes step by step (``Program.steps``), each after a ``--gap`` s pause and an untimed
warm-up pass (split_ab's protocol; ``--gap 0``: back to back, no warm-up), recording per pass the
wall clock, the process CPU time and each step's time. Passes within 1.25x of the fastest count
as fast, those within 1.45-2.2x as slow (the second mode; longer ones: other load); the steps that grew most are
listed (mean us fast / slow), and per op type the summed growth; per pass, how long this
process's other threads ran (the TBB worker's share) and how long its threads waited runnable
(the scheduler's queue: other processes on the cores), from /proc/self/task/*/schedstat. Prints the load average before
and after: two-thread numbers need both cores free. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_ab import _load, feeds_for  # noqa: E402


def _sched() -> dict[int, tuple[int, int]]:
    """{thread id: (ns run, ns runnable but waiting)} of this process's threads (Linux
    /proc/self/task/*/schedstat; {} elsewhere)."""
    out = {}
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run, wait = f.read().split()[:2]
            out[int(tid)] = (int(run), int(wait))
    except OSError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.1)
    ap.add_argument("--show", type=int, default=15)
    ap.add_argument("--warm", choices=("forward", "here"), default="forward",
                    help="the warm-up pass through Net.forward (a heavy net: in refnet's forward thread) or "
                         "step by step in this thread, as the timed pass")
    a = ap.parse_args(argv)

    from refnet.net import _ctx
    from refnet.runtime.program import RUN_LOCK
    from refnet.runtime.threads import set_num_threads

    print(f"load before {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="refnet-modes-") as wd:
        net, size = _load(a.model, wd)
        feeds = feeds_for(net, size)
        set_num_threads(a.threads)
        ctx = _ctx("float32")
        for _ in range(3):
            net.forward(feeds)
        fd = net._feeds(feeds, ctx)
        prog = net._program(tuple(net.output_names), True, fd, ctx)
        steps = np.zeros((a.passes, len(prog.code)))
        wall, cpu = np.zeros(a.passes), np.zeros(a.passes)
        # per pass: this process's other threads' run time (the TBB worker), the calling thread's and
        # the other threads' time runnable but not running (ms)
        others_ms, wait_ms, owait_ms = np.zeros(a.passes), np.zeros(a.passes), np.zeros(a.passes)
        me = threading.get_native_id()
        for r in range(a.passes):
            if a.gap > 0:
                time.sleep(a.gap)
                if a.warm == "forward":
                    net.forward(feeds)
                else:
                    with RUN_LOCK:
                        for _ in prog.steps(prog.start(fd)):
                            pass
            s0 = _sched()
            with RUN_LOCK:
                c0, w0 = time.process_time(), time.perf_counter()
                t0 = w0
                for j in prog.steps(prog.start(fd)):
                    t1 = time.perf_counter()
                    steps[r, j] = (t1 - t0) * 1e6
                    t0 = t1
                wall[r] = (time.perf_counter() - w0) * 1e3
                cpu[r] = (time.process_time() - c0) * 1e3
            s1 = _sched()
            d = {k: (v[0] - s0.get(k, (0, 0))[0], v[1] - s0.get(k, (0, 0))[1]) for k, v in s1.items()}
            others_ms[r] = sum(v[0] for k, v in d.items() if k != me) / 1e6
            wait_ms[r] = d.get(me, (0, 0))[1] / 1e6
            owait_ms[r] = sum(v[1] for k, v in d.items() if k != me) / 1e6
    print(f"load after {os.getloadavg()}")
    p10, p90 = np.percentile(wall, [10, 90])
    lo = wall.min()
    fast_m = wall <= 1.25 * lo
    slow = (wall > 1.45 * lo) & (wall <= 2.2 * lo)  # (the second mode; longer passes: other load)
    cut = 1.45 * lo
    print(f"{a.model} {a.threads} thr: pass wall min {wall.min():.2f} p10 {p10:.2f} median {np.median(wall):.2f} "
          f"p90 {p90:.2f} ms; cpu median {np.median(cpu):.2f} ms")
    print(f"cpu slow {np.median(cpu[slow]) if slow.any() else float('nan'):.2f} fast "
          f"{np.median(cpu[fast_m]) if fast_m.any() else float('nan'):.2f} ms (cut {cut:.2f} ms)")
    print("histogram (ms):", np.histogram(wall, bins=12)[1].round(1).tolist(), np.histogram(wall, bins=12)[0].tolist())
    print(f"fast (<= 1.25 min) {int(fast_m.sum())}, slow (1.45-2.2 min) {int(slow.sum())}, rest "
          f"{int(a.passes - fast_m.sum() - slow.sum())}")
    if s0:
        for name, m in (("fast", fast_m), ("slow", slow)):
            if m.any():
                print(f"  {name}: per pass (medians) our other threads ran {np.median(others_ms[m]):.2f} ms; waited "
                      f"runnable: the caller {np.median(wait_ms[m]):.2f} ms, the others "
                      f"{np.median(owait_ms[m]):.2f} ms")
    if slow.any() and fast_m.any():
        fast_us, slow_us = steps[fast_m].mean(0), steps[slow].mean(0)
        for j in np.argsort(fast_us - slow_us)[: a.show]:
            print(f"  {j:3d} {prog.layers[j]:28s} {prog.ops[j]:10s} fast {fast_us[j]:8.1f} us  "
                  f"slow {slow_us[j]:8.1f} us")
        by_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for j in range(len(prog.code)):
            by_op[prog.ops[j]][0] += fast_us[j]
            by_op[prog.ops[j]][1] += slow_us[j]
        for op, (f, s) in sorted(by_op.items(), key=lambda kv: kv[1][0] - kv[1][1])[:8]:
            print(f"  op {op:12s} fast {f / 1e3:7.2f} ms  slow {s / 1e3:7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
