"""Paired A/B of all the packed-GEMM switches of issue 17's session 7 at once, one thread.

    python bench/packgemm_switches_ab.py [resnet50,squeezenet,inception_v1] [--rounds 21]

Variant A runs with the session-7 additions of refnet.kernels._packgemm off (PREFETCH,
WIDE_PREFETCH, WIDE_PREFETCH_X, WIDE_PLAIN, SUBSAMPLE, FUSED, STRIDED, WINO_PACKED False and
MIN_K 384: the choices and kernels of session 6), variant B with them as this checkout sets them.
Per model (the onnx package's light zoo graphs with ``refnet.archs.seed_onnx_weights(seed=0)``)
two nets in one process; the switches are set before every call of a variant (some are read
when a conv is planned, on the first call, the others at each call); rounds alternate A and B
(order flipped every round), each timed call after an untimed warm-up call of the same variant
and a 0.05 s pause (bench/flag_ab.py's ``paired_rounds``). Prints the medians (wall clock and
process CPU time), the median, range and quartiles of the per-round ratios B/A, and the load
average. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from flag_ab import paired_rounds, summary  # (run from the checkout: bench/ is the script's folder)

SWITCHES = ("PREFETCH", "WIDE_PREFETCH", "WIDE_PREFETCH_X", "WIDE_PLAIN", "SUBSAMPLE", "FUSED", "STRIDED",
            "WINO_PACKED")
OLD_MIN_K = 384


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="resnet50,squeezenet,inception_v1")
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args(argv)

    import numpy as np
    import onnx

    import refnet
    from refnet.kernels import _packgemm
    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    new = {k: getattr(_packgemm, k) for k in (*SWITCHES, "MIN_K")}
    old = {**dict.fromkeys(SWITCHES, False), "MIN_K": OLD_MIN_K}

    def variant(v: int) -> None:
        for k, val in (new if v else old).items():
            setattr(_packgemm, k, val)

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    with tempfile.TemporaryDirectory(prefix="refnet-switches-ab-") as wd:
        for name in a.models.split(","):
            p = refnet.archs.seed_onnx_weights(light / f"light_{name}.onnx", Path(wd) / f"{name}.onnx", seed=0)
            nets = [refnet.load(str(p)) for _ in range(2)]
            shape = nets[0].graph.input_shapes[nets[0].input_names[0]]
            x = np.random.default_rng(0).random(tuple(shape)).astype(np.float32)
            for v in (0, 1):
                variant(v)
                nets[v].forward(x)
            wall, cpu = paired_rounds(nets, x, variant, a.rounds)
            variant(1)
            for what, ts in (("wall", wall), ("cpu", cpu)):
                rat = sorted(b / a_ for a_, b in zip(*ts))
                q = len(rat) // 4
                print(f"{name} {what}: {summary(ts, 'session-6 choices', 'this checkout')}; ratio quartiles "
                      f"{rat[q]:.3f}..{rat[-1 - q]:.3f}; load {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
