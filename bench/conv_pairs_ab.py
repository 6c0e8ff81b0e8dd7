"""Paired A/B of two conv algorithms on single conv shapes, one thread, in one process.

    python bench/conv_pairs_ab.py [--rounds 40]

For each shape (SqueezeNet's conv1 and fire2 expand3x3, GoogLeNet's / ResNet-50's 7x7/2 conv1,
a 3x3/2 RGB conv on a wide map) both plans run alternately (order flipped every round), each
timed call after an untimed warm-up call of the same plan; prints the minima and medians (ms),
the median and spread of the per-round ratios B/A, the largest difference between the two
outputs, and the load average. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

# (x shape, C_out, kernel, stride, pad, algorithm A, algorithm B)
SHAPES = [
    ((1, 3, 224, 224), 64, 3, 2, 0, "im2col", "direct_cin"),  # SqueezeNet 1.1 conv1
    ((1, 3, 224, 224), 64, 7, 2, 3, "im2col", "direct_cin"),  # GoogLeNet / ResNet-50 conv1
    ((1, 3, 256, 512), 16, 3, 2, 1, "im2col", "direct_cin"),
    ((1, 16, 55, 55), 64, 3, 1, 1, "winograd", "winograd4"),  # SqueezeNet fire2/3 expand3x3
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    from refnet.kernels.conv import conv2d_plan

    rng = np.random.default_rng(0)
    for xs, co, k, s, p, alg_a, alg_b in SHAPES:
        x = rng.random(xs, dtype=np.float32)
        w = rng.random((co, xs[1], k, k), dtype=np.float32) - 0.5
        b = rng.random(co, dtype=np.float32)
        plans = {a: conv2d_plan(xs, w, b, stride=s, pad=p, activation="relu", algorithm=a) for a in (alg_a, alg_b)}
        ys = {a: plan(x) for a, plan in plans.items()}
        ts: dict[str, list[float]] = {a: [] for a in plans}
        for r in range(args.rounds):
            for a in (alg_a, alg_b) if r % 2 == 0 else (alg_b, alg_a):
                plans[a](x, ys[a])
                t0 = time.perf_counter()
                plans[a](x, ys[a])
                ts[a].append(time.perf_counter() - t0)
        ratios = sorted(tb / ta for ta, tb in zip(ts[alg_a], ts[alg_b]))
        cells = ", ".join(f"{a} min {min(v) * 1e3:.3f} median {float(np.median(v)) * 1e3:.3f}" for a, v in ts.items())
        print(f"{xs} -> {co} {k}x{k}/{s}: {cells} ms; {alg_b}/{alg_a} median {ratios[len(ratios) // 2]:.3f} "
              f"({ratios[0]:.2f}..{ratios[-1]:.2f}); max |diff| {float(np.abs(ys[alg_a] - ys[alg_b]).max()):.2g}; "
              f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
