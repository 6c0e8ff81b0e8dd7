"""Packed-weight GEMM (refnet.kernels._packgemm) vs OpenBLAS ``np.matmul`` on ResNet-50's small-map
GEMM shapes, one thread (issue 17).

    OPENBLAS_NUM_THREADS=1 python bench/packgemm_feasibility.py [--repeat 15] [--cold]

Shapes (M = output channels, K = input channels x kh x kw, N = output pixels): stage 4 (7x7,
N = 49) and stage 3 (14x14, N = 196) of ResNet-50 v1. Per shape, alternating calls of both
(each timed call preceded by the other engine's), min and median ms, GFLOPS and the median of
per-round ratios packed / BLAS. ``--cold``: every timed call uses a different copy of the
weights out of a pool of more than 64 MB (as in a forward pass, where every layer's weights
come from DRAM). Not collected by ``pytest bench``.

Measured 13:10 UTC on the shared 2-core Zen 4 box (load 1.5-2.2, so +-5%), first kernel version
(one FMA chain, tile buffer), ratio packed / BLAS, median of 15: hot stage 4 0.84-0.90 (BLAS
69-87 GFLOPS, packed 80-105), stage 3 0.92-1.04; cold stage 4 0.77-0.91, stage 3 0.89-1.06.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from refnet.kernels._packgemm import PackedGemm  # noqa: E402

STAGE4 = [(512, 1024, 49), (512, 4608, 49), (2048, 512, 49), (2048, 1024, 49), (512, 2048, 49)]
STAGE3 = [(256, 512, 196), (256, 2304, 196), (1024, 256, 196), (1024, 512, 196), (256, 1024, 196)]


def run(shapes: list[tuple[int, int, int]], repeat: int, cold: bool) -> None:
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        copies = max(1, (64 << 20) // (m * k * 4) + 1) if cold else 1
        ws = [rng.standard_normal((m, k), dtype=np.float32) for _ in range(copies)]
        gs = [PackedGemm(w) for w in ws]
        x = rng.standard_normal((k, n), dtype=np.float32)
        c1, c2 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        gs[0](x, c1)
        np.matmul(ws[0], x, out=c2)
        err = float(np.abs(c1 - c2).max() / np.abs(c2).max())
        tb, tp = [], []
        for r in range(repeat):
            i = r % copies
            t0 = time.perf_counter()
            np.matmul(ws[i], x, out=c2)
            tb.append(time.perf_counter() - t0)
            i = (r + copies // 2) % copies
            t0 = time.perf_counter()
            gs[i](x, c1)
            tp.append(time.perf_counter() - t0)
        ratio = statistics.median(p / b for p, b in zip(tp, tb))
        gf = 2 * m * k * n / 1e9
        print(f"M {m:5d} K {k:5d} N {n:4d}  blas min {min(tb) * 1e3:6.3f} med {statistics.median(tb) * 1e3:6.3f} ms "
              f"({gf / statistics.median(tb):5.1f} GF)  packed min {min(tp) * 1e3:6.3f} "
              f"med {statistics.median(tp) * 1e3:6.3f} ms ({gf / statistics.median(tp):5.1f} GF)  "
              f"ratio {ratio:4.2f}  max rel diff {err:.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--cold", action="store_true", help="rotate through > 64 MB of weight copies")
    a = ap.parse_args()
    print("stage 4 (7x7)" + (" cold weights" if a.cold else ""))
    run(STAGE4, a.repeat, a.cold)
    print("stage 3 (14x14)" + (" cold weights" if a.cold else ""))
    run(STAGE3, a.repeat, a.cold)


if __name__ == "__main__":
    main()
