"""Paired A/B of ``pool_nd`` (ONNX MaxPool / GlobalAveragePool) against a saved older copy of
kernels/window.py, on the pool shapes of SqueezeNet, inception_v1 and ResNet-50, one thread.

    git show REV:kernels/window.py > /tmp/window_old.py
    python bench/pool_ab.py /tmp/window_old.py [--rounds 41]

Alternating calls (order flipped every round); prints medians, the median and spread of the
per-round ratios new/old and whether the outputs are equal. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from _oldnew import old_and_new

# (name, input shape, kernel, stride, pads) of SqueezeNet 1.1, inception_v1 and ResNet-50 (ONNX)
CASES = [
    ("sq pool1", (1, 64, 111, 111), (3, 3), (2, 2), (0, 0, 0, 0)),
    ("sq pool3", (1, 128, 55, 55), (3, 3), (2, 2), (0, 0, 0, 0)),
    ("inc pool1", (1, 64, 112, 112), (3, 3), (2, 2), (0, 0, 1, 1)),
    ("inc 3a pool", (1, 192, 28, 28), (3, 3), (1, 1), (1, 1, 1, 1)),
    ("inc 4x pool", (1, 512, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1)),
    ("r50 pool", (1, 64, 112, 112), (3, 3), (2, 2), (1, 1, 1, 1)),
    ("sq gap", (1, 1000, 13, 13), (13, 13), (1, 1), (0, 0, 0, 0)),
    ("r50 gap", (1, 2048, 7, 7), (7, 7), (1, 1), (0, 0, 0, 0)),
]


def main() -> None:
    a, old, new = old_and_new(__doc__, "refnet.kernels.window", 41)

    for name, xs, k, s, pads in CASES:
        x = np.random.default_rng(0).standard_normal(xs).astype(np.float32)
        out = tuple((xs[2 + i] + pads[i] + pads[i + 2] - k[i]) // s[i] + 1 for i in range(2))
        mode = "avg" if "gap" in name else "max"
        args = (x, mode, k, s, (1, 1), pads, out)
        ys = [np.empty(xs[:2] + out, np.float32) for _ in range(2)]
        mods = (old, new)
        for v in (0, 1, 0, 1):
            mods[v].pool_nd(*args, into=ys[v])
        ts: list[list[float]] = [[], []]
        for r in range(a.rounds):
            for v in ((0, 1) if r % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                mods[v].pool_nd(*args, into=ys[v])
                ts[v].append(time.perf_counter() - t0)
        diff = float(np.max(np.abs(ys[0] - ys[1]) / np.maximum(np.abs(ys[0]), 1e-30)))
        ratios = [b / a_ for a_, b in zip(*ts)]
        print(f"{name:12s} {xs} old {statistics.median(ts[0]) * 1e3:.3f} new {statistics.median(ts[1]) * 1e3:.3f} ms;"
              f" new/old median {statistics.median(ratios):.2f} (min {min(ratios):.2f} max {max(ratios):.2f});"
              f" max rel diff {diff:.1e}")
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
