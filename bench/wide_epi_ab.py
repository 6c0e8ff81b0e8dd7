"""Hot A/B of the wide packed GEMM's two epilogues on SqueezeNet's 1x1 shapes, one thread.

    python bench/wide_epi_ab.py [--rounds 300]

kernels/_packgemm.py's wide tile (the "packedwide" 1x1 convs) stores a whole tile without a
residual row by row straight from its accumulators (``WIDE_FAST_EPI``, a vector row store per
row); the general epilogue goes through a stack copy of the tile with per-row set-up and lane
masks. For each shape (M x K x N: SqueezeNet's expand and squeeze 1x1s, ReLU, random bias) the
two are timed in alternating calls, hot; prints the medians and fast / general. Results are
checked against float64. 2026-12-07 (session 10): 64x16x3025 104.5 -> 86.1 us (0.82), K = 32..64
0.89-0.95, K >= 128 0.96-0.99; in the net (bench/flag_ab.py squeezenet
refnet.kernels._packgemm:WIDE_FAST_EPI --threads 1) the expand 1x1s 111 -> 92 us (55x55),
83 -> 75 (27x27). Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

SHAPES = [(64, 16, 3025), (16, 64, 3025), (16, 128, 3025), (128, 32, 729), (32, 128, 729), (32, 256, 729),
          (192, 48, 169), (256, 64, 169), (48, 384, 169)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    a = ap.parse_args(argv)
    from refnet.kernels import _packgemm as G
    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    rng = np.random.default_rng(0)
    six = np.float32(6)
    for m, k, n in SHAPES:
        w = rng.random((m, k), dtype=np.float32) - 0.5
        x = rng.random((k, n), dtype=np.float32)
        b = rng.random(m, dtype=np.float32) - 0.5
        slope = np.zeros(m, np.float32)
        c = np.empty((m, n), np.float32)
        g = G.WideGemm(w)
        want = np.maximum(w.astype(np.float64) @ x + b[:, None], 0)
        times: dict[bool, list[float]] = {True: [], False: []}
        for fe in (True, False):  # compile, warm, check
            G.WIDE_FAST_EPI = fe
            g(x, c, b, None, 1, slope, six)
            g(x, c, b, None, 1, slope, six)
            err = float(np.abs(c - want).max() / max(1.0, np.abs(want).max()))
            if err > 1e-5:
                print(f"{m}x{k}x{n}: WIDE_FAST_EPI={fe} off by {err:.1e}")
                return 1
        for i in range(a.rounds):
            for fe in ((True, False) if i % 2 else (False, True)):
                G.WIDE_FAST_EPI = fe
                t0 = time.perf_counter()
                g(x, c, b, None, 1, slope, six)
                times[fe].append(time.perf_counter() - t0)
        G.WIDE_FAST_EPI = True
        f, s = (float(np.median(times[v])) * 1e6 for v in (True, False))
        print(f"{m:4d} x {k:4d} x {n:5d}  general {s:7.1f} us  fast {f:7.1f} us  fast / general {f / s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
