"""Paired A/B of the im2col kernels (refnet.kernels.conv._im2col_phased and _im2col) against a
saved older copy of kernels/conv.py, one thread, on conv shapes of ResNet-50, inception_v1 and
SqueezeNet: alternating calls, medians in ms, and whether all outputs are equal.

    git show REV:kernels/conv.py > /tmp/conv_old.py
    python bench/im2col_ab.py /tmp/conv_old.py [--rounds 21]

Not collected by ``pytest bench``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from _oldnew import old_and_new

# (C, H, W, kernel, stride, pad) of a conv input (one image)
CASES = [(128, 56, 56, 3, 2, 1), (256, 28, 28, 3, 2, 1), (3, 224, 224, 3, 2, 0), (3, 224, 224, 7, 2, 3),
         (64, 56, 56, 3, 1, 1), (192, 28, 28, 5, 1, 2), (16, 10, 11, 3, 2, 1)]


def main() -> None:
    a, old, new = old_and_new(__doc__, "refnet.kernels.conv", 21)

    for c, h, w, k, s, pad in CASES:
        x = np.random.default_rng(0).random((c, h, w)).astype(np.float32)
        ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        xd = np.ascontiguousarray(new._phases(x, s, "phases") if s > 1 else x.reshape(c, h, 1, w))
        cols = [np.full((c * k * k, ho * wo), 7, np.float32) for _ in range(4)]
        geo = (k, k, s, s, pad, pad, 1, 1, 0, ho, wo)
        calls = [(old._im2col_phased, (xd, w)), (new._im2col_phased, (xd, w)), (old._im2col, (x,)), (new._im2col, (x,))]
        ts: list[list[float]] = [[] for _ in calls]
        for i, (fn, args) in enumerate(calls):
            fn(*args, *geo, cols[i])
        for r in range(a.rounds):
            for i in (range(4) if r % 2 == 0 else range(3, -1, -1)):
                fn, args = calls[i]
                t0 = time.perf_counter()
                fn(*args, *geo, cols[i])
                ts[i].append(time.perf_counter() - t0)
        m = [statistics.median(t) * 1e3 for t in ts]
        same = all(np.array_equal(cols[0], o) for o in cols[1:])
        print(f"{(c, h, w, k, s, pad)} phased old {m[0]:.3f} new {m[1]:.3f} ms; plain old {m[2]:.3f} new {m[3]:.3f} ms;"
              f" all equal {same}")
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
