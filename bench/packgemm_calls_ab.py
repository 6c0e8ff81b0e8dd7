"""Per conv call inside a forward pass: A/B of a packed-GEMM switch, one thread (issue 17).

    python bench/packgemm_calls_ab.py [resnet50] [--env REFNET_PACKGEMM_LARGE] [--rounds 24]

Two nets of one model in one process (the onnx package's light zoo graph with seeded weights,
as bench/packgemm_ab.py), planned with ``$ENV=1`` and ``=0``; forward passes alternate A, B,
B, A, ... and every conv plan call is timed where it runs (its input, residual and output as
the net leaves them in cache, weights cold), so a layer is measured in the net, not in a loop
that keeps its data hot (on ResNet-50 the wide GEMM without a residual won 0.72-0.95 in such
loops and lost 1.0-1.2 here). Prints, for each call whose algorithm differs, min ms of A and
B and the median of the per-pass ratios, then the sums of the minima. Not collected by
``pytest bench``.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

from packgemm_ab import load  # (bench/: the script's directory)

import refnet.kernels.conv as C
from refnet.kernels import _packgemm
from refnet.runtime.threads import set_num_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="resnet50")
    ap.add_argument("--env", default=_packgemm.LARGE_ENV)
    ap.add_argument("--rounds", type=int, default=24)
    a = ap.parse_args()
    set_num_threads(1)
    wd = Path(tempfile.mkdtemp())
    nets = {}
    for on in (True, False):
        net, x, _, _ = load(a.model, wd, on, a.env)
        nets[on] = net
    os.environ.pop(a.env)
    real = C.Conv2dPlan.__call__
    times: dict = collections.defaultdict(list)
    algs: dict = collections.defaultdict(dict)
    state = {"on": True, "i": 0}

    def spy(self, xx, out=None, *, residual=None):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        y = real(self, xx, out, residual=residual)
        times[(state["on"], state["i"])].append(time.perf_counter() - t0)
        algs[state["on"]][state["i"]] = (self.algorithm, self.x_shape[1], self.y_shape[1], self.y_shape[2],
                                         residual is not None)
        state["i"] += 1
        return y

    C.Conv2dPlan.__call__ = spy
    try:
        for r in range(a.rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                state["on"], state["i"] = on, 0
                nets[on].forward(x)
    finally:
        C.Conv2dPlan.__call__ = real
    sums = {True: 0.0, False: 0.0}
    for i in sorted(algs[True]):
        ta, tb = times[(True, i)], times[(False, i)]
        sums[True] += min(ta)
        sums[False] += min(tb)
        if algs[True][i][0] != algs[False][i][0]:
            alg, cin, cout, hw, res = algs[True][i]
            ratio = statistics.median(p / q for p, q in zip(ta, tb))
            print(f"call {i:3d} {cin}->{cout} {hw}x{hw}{' +residual' if res else ''}: {alg} {min(ta) * 1e3:.3f} ms, "
                  f"{algs[False][i][0]} {min(tb) * 1e3:.3f} ms, paired median {ratio:.2f}")
    print(f"sum of per-call minima: {a.env}=1 {sums[True] * 1e3:.2f} ms, =0 {sums[False] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
