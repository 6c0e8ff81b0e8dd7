"""Which code slows in this machine's "slow state", each probe timed alone, rounds classified by onnxruntime.

    python bench/slow_state.py [--seconds 90] [--model squeezenet]

Issue 17: in stretches the host's core runs refnet's SqueezeNet passes 1.3-1.5x slower while
onnxruntime's slow ~1.13x (the one-thread row then reads 1.16-1.25). This script times, round
after round for ``--seconds``, a set of probes back to back in one thread -- refnet's whole pass,
onnxruntime's, refnet's SqueezeNet conv plans alone (hot), OpenBLAS's sgemm of conv10's shape,
streaming element-wise passes, and register-resident latency-bound numba loops -- then splits the
rounds by onnxruntime's pass time (fast: within 6% of its minimum, slow: over 12% above it) and
prints each probe's median in both and the factor. 2026-12-06 22:35 (main b53569b):

    refnet pass x1.35, onnxruntime x1.13-1.14; refnet's conv plans alone x1.27-1.52 (conv1 1.45,
    1x1 squeezes/expands 1.29-1.52, Winograd 3x3s 1.32-1.41, conv10 packed 1.23-1.27); OpenBLAS
    sgemm of conv10's shape x1.09; a 1 MB numba ReLU x1.58, np.maximum x1.35; a register-resident
    FMA chain x0.97 and an integer chain x1.04 (the core's clock is not lower); a Python loop x1.59.

Session 10 (2026-12-06 23:40, the same split, 14882 rounds, 1521 slow): L1-resident numba loops that
store slow most -- a 16 KB ReLU (load, max, store) x1.70, one scalar store per cache line x1.43,
an axpy x1.26, a fill x1.18 -- and loads least (a 16 KB sum x1.09, 512 KB x1.16); the ReLU and sum
probes are in the set below. So it is not only the L2 spill: the core's store path (and the
Python interpreter) is contended, most likely by a sibling hyperthread's tenant.

So the slow state is contention for throughput outside the core's registers, not a slower clock:
code that works from L1/L2 in blocks with few stores (OpenBLAS, onnxruntime's NCHWc convolutions)
loses ~10%, code whose working set spills L2 (1 MB per core here: lscpu's "L2 2 MiB" counts both
cores) or that stores much per flop (Winograd transforms, element-wise passes) loses 25-70%. Not collected by
``pytest bench``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import _slowsplit


def _probes(model: str) -> dict[str, Callable[[], object]]:
    import numba
    import numpy as np

    from refnet.kernels import conv as C

    net, x, ort_pass = _slowsplit.light_model(model)
    rng = np.random.default_rng(0)

    def plan(c: int, h: int, co: int, k: int, stride: int = 1, pad: int = 0) -> Callable[[], object]:
        xi = rng.random((1, c, h, h), dtype=np.float32)
        w = rng.random((co, c, k, k), dtype=np.float32) - 0.5
        p = C.conv2d_plan(xi.shape, w, np.zeros(co, np.float32), stride=stride, pad=pad, activation="relu")
        y = p(xi)
        return lambda: p(xi, y)

    wm = rng.random((1000, 512), dtype=np.float32)
    xm = rng.random((512, 169), dtype=np.float32)
    ym = np.empty((1000, 169), np.float32)
    a = rng.random(1 << 18, dtype=np.float32)
    b = np.empty_like(a)

    @numba.njit
    def relu(src, dst):  # pragma: no cover - compiled
        for i in range(src.size):
            v = src[i]
            dst[i] = v if v > 0 else np.float32(0)

    @numba.njit(fastmath=True)
    def relu_reps(src, dst, reps):  # pragma: no cover - compiled; an L1-resident load-max-store stream
        for _ in range(reps):
            for i in range(src.size):
                v = src[i]
                dst[i] = v if v > 0 else np.float32(0)

    @numba.njit(fastmath=True)
    def sum_reps(src, reps):  # pragma: no cover - compiled; an L1-resident load-only stream
        s = np.float32(0)
        for _ in range(reps):
            for i in range(src.size):
                s += src[i]
        return s

    a16 = rng.random(4096, dtype=np.float32) - 0.5
    b16 = np.empty_like(a16)

    @numba.njit
    def fma_chain(c, n):  # pragma: no cover - compiled; 8 independent register-resident chains
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0)
        for _ in range(n):
            s0 = s0 * c[0] + c[1]
            s1 = s1 * c[2] + c[3]
            s2 = s2 * c[4] + c[5]
            s3 = s3 * c[6] + c[7]
            s4 = s4 * c[0] + c[1]
            s5 = s5 * c[2] + c[3]
            s6 = s6 * c[4] + c[5]
            s7 = s7 * c[6] + c[7]
        return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7

    @numba.njit
    def int_chain(n):  # pragma: no cover - compiled
        h = 0
        for i in range(n):
            h = (h * 31 + i) & 0xFFFFFF
        return h

    def py_loop() -> int:
        t = 0
        for i in range(20000):
            t += i
        return t

    c8 = np.full(8, 0.5, np.float32)
    return {
        "refnet pass": lambda: net.forward(x),
        "onnxruntime pass": ort_pass,
        "conv1 3->64 3x3/2 224": plan(3, 224, 64, 3, 2),
        "1x1 64->16 55x55": plan(64, 55, 16, 1),
        "1x1 16->64 55x55": plan(16, 55, 64, 1),
        "3x3 16->64 55x55": plan(16, 55, 64, 3, 1, 1),
        "3x3 32->128 27x27": plan(32, 27, 128, 3, 1, 1),
        "3x3 64->256 13x13": plan(64, 13, 256, 3, 1, 1),
        "1x1 512->1000 13x13": plan(512, 13, 1000, 1),
        "OpenBLAS sgemm 1000x512x169": lambda: np.matmul(wm, xm, out=ym),
        "numba ReLU 1 MB": lambda: relu(a, b),
        "np.maximum 1 MB": lambda: np.maximum(a, 0, out=b),
        "numba ReLU 16 KB x200 (L1)": lambda: relu_reps(a16, b16, 200),
        "numba sum 16 KB x200 (L1)": lambda: sum_reps(a16, 200),
        "numba FMA chain": lambda: fma_chain(c8, 200000),
        "numba integer chain": lambda: int_chain(300000),
        "Python loop": py_loop,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--model", default="squeezenet", help="an onnx light zoo name (default squeezenet)")
    a = ap.parse_args(argv)
    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    probes = _probes(a.model)
    _slowsplit.report(_slowsplit.run(probes, a.seconds), "onnxruntime pass", a.seconds, 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
