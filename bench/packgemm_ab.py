"""In-process A/B of the packed-weight GEMM (refnet.kernels._packgemm) on whole models, one thread.

    python bench/packgemm_ab.py [resnet50,inception_v1,squeezenet] [--repeat 31] [--env REFNET_PACKGEMM_LARGE]

Per model (the onnx package's light zoo graphs with seeded weights, as bench/peer_rows.py),
two nets in one process: one planned with ``REFNET_PACKGEMM=1`` and one with ``=0`` (the switch
is read when a conv is planned); timed forward calls alternate A, B, B, A, ... and the report
gives min / median ms of each and the median of the per-pair ratios on / off (paired calls
share the machine's load of the moment: the busy 2-core box made separate processes useless).
Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import refnet
import refnet.kernels.conv as C
from refnet.kernels import _packgemm
from refnet.runtime.threads import set_num_threads


def load(name: str, workdir: Path, packed: bool, env: str = _packgemm.ENV):
    import onnx

    light = Path(onnx.__file__).parent / "backend/test/data/light"
    path = refnet.archs.seed_onnx_weights(light / f"light_{name}.onnx", workdir / f"{name}.onnx", seed=0)
    m = onnx.load(str(path))
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    os.environ[env] = "1" if packed else "0"
    made = []
    real = C.Conv2dPlan.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        made.append(self.algorithm)

    C.Conv2dPlan.__init__ = spy
    try:
        net = refnet.load(str(path))
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        y = net.forward(x)
        y = next(iter(y.values())) if isinstance(y, dict) else y
    finally:
        C.Conv2dPlan.__init__ = real
    return net, x, y, made.count("packed") + made.count("packedwide")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="?", default="resnet50,inception_v1,squeezenet")
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--env", default=_packgemm.ENV,
                    help="the switch to turn off in B (REFNET_PACKGEMM_LARGE: only on large maps)")
    a = ap.parse_args()
    set_num_threads(1)
    wd = Path(tempfile.mkdtemp())
    for name in a.models.split(","):
        on, x, y_on, n_on = load(name, wd, True, a.env)
        off, _, y_off, n_off = load(name, wd, False, a.env)
        os.environ.pop(a.env)
        diff = float(np.abs(y_on - y_off).max() / max(1e-30, float(np.abs(y_off).max())))
        ts = {True: [], False: []}
        for r in range(a.repeat):
            for which in ((True, False) if r % 2 == 0 else (False, True)):
                net = on if which else off
                t0 = time.perf_counter()
                net.forward(x)
                ts[which].append(time.perf_counter() - t0)
        ratio = statistics.median(p / q for p, q in zip(ts[True], ts[False]))
        print(f"{name}: packed convs {n_on} (off: {n_off}); on min {min(ts[True]) * 1e3:.2f} "
              f"med {statistics.median(ts[True]) * 1e3:.2f} ms, off min {min(ts[False]) * 1e3:.2f} "
              f"med {statistics.median(ts[False]) * 1e3:.2f} ms; on/off median of paired ratios {ratio:.3f}; "
              f"outputs max rel diff {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
