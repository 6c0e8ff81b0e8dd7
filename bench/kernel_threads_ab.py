"""Single kernels at 1 and 2 threads, alternating (issue 17: which kernels scale on the pool).

    python bench/kernel_threads_ab.py                       # default: numba builds for pool/LRN/depthwise
    REFNET_SPLIT_PLANES=1 python bench/kernel_threads_ab.py  # the same kernels split over the worker pool

GoogLeNet's max pools and LRNs, MobileNet-SSD-sized depthwise 3x3 layers and small-map Winograd
layers, each timed (median of 25 calls) after ``set_num_threads(1)`` and ``(2)``, three
alternations; prints both medians and their ratio, and the load average. Not collected by
``pytest bench``.
"""

from __future__ import annotations

import time

import numpy as np

from refnet.kernels import conv, norm, pool
from refnet.runtime.threads import set_num_threads


def _median_ms(f, r: int = 25) -> float:
    f()
    ts = []
    for _ in range(r):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def cases() -> list:
    rng = np.random.default_rng(0)
    out = []
    pools = [("pool1 3x3/2", (1, 64, 112, 112), 3, 2, 0), ("pool2 3x3/2", (1, 192, 56, 56), 3, 2, 0),
             ("3b/pool 3x3/1", (1, 256, 28, 28), 3, 1, 1), ("4a/pool 3x3/1", (1, 480, 14, 14), 3, 1, 1),
             ("5a/pool 3x3/1", (1, 832, 7, 7), 3, 1, 1)]
    for name, shp, k, s, p in pools:
        x = rng.standard_normal(shp).astype(np.float32)
        out.append((name, lambda x=x, k=k, s=s, p=p: pool.max_pool(x, k, s, p)))
    for shp in [(1, 64, 56, 56), (1, 192, 56, 56)]:
        x = rng.standard_normal(shp).astype(np.float32)
        out.append((f"lrn {shp[1]}x56x56", lambda x=x: norm.lrn(x, 5, 1e-4, 0.75, 1.0)))
    for xs in [(1, 32, 150, 150), (1, 256, 38, 38), (1, 512, 19, 19)]:
        w = rng.standard_normal((xs[1], 1, 3, 3)).astype(np.float32)
        plan = conv.conv2d_plan(xs, w, np.zeros(xs[1], np.float32), pad=1, groups=xs[1], activation="relu")
        x = rng.standard_normal(xs).astype(np.float32)
        out.append((f"dw3x3 {xs[1]}x{xs[2]}x{xs[3]}", lambda plan=plan, x=x: plan(x)))
    for xs, co in [((1, 96, 28, 28), 128), ((1, 112, 14, 14), 224), ((1, 160, 7, 7), 320)]:
        w = (rng.standard_normal((co, xs[1], 3, 3)) * 0.1).astype(np.float32)
        plan = conv.conv2d_plan(xs, w, np.zeros(co, np.float32), pad=1, activation="relu", algorithm="winograd")
        x = rng.standard_normal(xs).astype(np.float32)
        out.append((f"wino {xs[1]}->{co} {xs[2]}x{xs[3]}", lambda plan=plan, x=x: plan(x)))
    return out


def main() -> int:
    with open("/proc/loadavg") as f:
        print("load", f.read().strip())
    for name, fn in cases():
        got: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(3):
            for n in (1, 2):
                set_num_threads(n)
                time.sleep(0.02)
                got[n].append(_median_ms(fn))
        a, b = float(np.median(got[1])), float(np.median(got[2]))
        print(f"{name:24s} 1 thr {a:.3f} ms  2 thr {b:.3f} ms  1/2 {a / b:.2f}", flush=True)
    with open("/proc/loadavg") as f:
        print("load", f.read().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
