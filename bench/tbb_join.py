"""Does numba's second TBB thread join a parallel region, and how late (issue 17)?

    python bench/tbb_join.py [--units 16] [--unit-us 35] [--regions 300]

At 2 threads on numba's TBB layer, a region of ``--units`` equal units (a busy loop of about
``--unit-us`` us each) is handed out from an atomic counter to ``prange(2)``'s two iterations,
as the split convs' drivers do (:mod:`refnet.kernels._packsplit`); each unit records the numba
thread id that ran it (0: the caller's). Per gap before the region (none, a Python busy loop of
30 us / 200 us / 1 ms, a sleep of 1 / 10 ms: the worker's chance to fall asleep) it prints the
second thread's mean share of the units, the fraction of regions it did none of, the region's
wall time (serial: units x unit time) and the process CPU time per region (both threads: above
the wall time when the second thread works or spins). Then, back to back, the wall time by the
second thread's share: ~serial wall with a share near 0.5 means both threads ran on one core
(the other core busy); a long tail means a thread was descheduled holding a unit. Prints the
load average: needs both cores free for the quiet-machine answer. Last, ``--chains`` chains
of 30 back-to-back regions each after a 0.1 s sleep, with the 2nd thread's part per region (quiet
machine, 17:37: the first ~15 regions of most chains had it in only every ~5th region).
Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--unit-us", type=float, default=35.0)
    ap.add_argument("--regions", type=int, default=300)
    ap.add_argument("--chains", type=int, default=20, help="chains of 30 regions, each after a 0.1 s sleep")
    a = ap.parse_args(argv)

    import numpy as np

    from refnet.kernels._lazyjit import load_numba
    from refnet.kernels._parallel import choose_threading_layer

    numba = load_numba()
    choose_threading_layer(2)
    numba.set_num_threads(2)
    from refnet.kernels._spin import _atomic_inc

    @numba.njit(nogil=True, cache=False)
    def busy(x, n):
        s = 0.0
        for i in range(n):
            s += x[i % x.size] * 1.0000001
        return s

    @numba.njit(parallel=True, nogil=True, cache=False)
    def region(nt, counter, owner, x, n):
        for _t in numba.prange(nt):
            tid = numba.get_thread_id()
            while True:
                j = _atomic_inc(counter, 0)
                if j >= owner.size:
                    break
                owner[j] = tid
                x[1] += 0 * busy(x, n)

    x = np.ones(1000)
    owner = np.zeros(a.units, np.int64)
    counter = np.zeros(1, np.int64)
    region(2, counter, owner, x, 10)
    t0 = time.perf_counter()
    busy(x, 1_000_000)
    n = max(1, int(a.unit_us / ((time.perf_counter() - t0) * 1e6 / 1_000_000)))
    print(f"numba layer {numba.threading_layer()}, {a.units} units of ~{a.unit_us:.0f} us; load {os.getloadavg()}")

    def spin_py(us: float) -> None:
        t = time.perf_counter() + us * 1e-6
        while time.perf_counter() < t:
            pass

    def run(gap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return run_n(gap, a.regions)

    def run_n(gap, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        share, wall, cpu = np.zeros(count), np.zeros(count), np.zeros(count)
        for r in range(count):
            gap()
            counter[0] = 0
            c0, t0 = time.process_time(), time.perf_counter()
            region(2, counter, owner, x, n)
            wall[r] = (time.perf_counter() - t0) * 1e6
            cpu[r] = (time.process_time() - c0) * 1e6
            share[r] = np.mean(owner != 0)
        return share, wall, cpu

    gaps = [("none", lambda: None), ("py 30us", lambda: spin_py(30)), ("py 200us", lambda: spin_py(200)),
            ("py 1ms", lambda: spin_py(1000)), ("sleep 1ms", lambda: time.sleep(0.001)),
            ("sleep 10ms", lambda: time.sleep(0.01))]
    print(f"  serial estimate {a.units * a.unit_us:.0f} us")
    for name, gap in gaps:
        share, wall, cpu = run(gap)
        print(f"  gap {name:10s}: 2nd thread share {share.mean():.2f}, none in {np.mean(share == 0):.2f} of regions; "
              f"wall us median {np.median(wall):6.0f} min {wall.min():6.0f}; cpu us median {np.median(cpu):6.0f}",
              flush=True)
    share, wall, _ = run(lambda: None)
    print("  back to back, wall by the 2nd thread's share:")
    for lo, hi in ((0, 1e-9), (1e-9, 0.3), (0.3, 0.7), (0.7, 1.01)):
        m = (share >= lo) & (share < hi)
        if m.any():
            print(f"    share [{lo:.1f}, {hi:.1f}): {int(m.sum()):4d} regions, wall us median "
                  f"{np.median(wall[m]):6.0f} "
                  f"p90 {np.percentile(wall[m], 90):6.0f} max {wall[m].max():6.0f}")
    print("  chains of 30 back-to-back regions after a 0.1 s sleep (x / s / 0: the 2nd thread took >= 30% /"
          " some / none of a region's units):")
    for _ in range(a.chains):
        time.sleep(0.1)
        share, wall, _ = run_n(lambda: None, 30)
        print(f"    {wall.sum() / 1e3:6.2f} ms  " + "".join("0" if v == 0 else "x" if v >= 0.3 else "s" for v in share))
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
