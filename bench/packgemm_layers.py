"""Conv layers on small maps: the packed-weight GEMM (``algorithm="packed"``,
refnet.kernels._packgemm) vs the algorithm the plan picks without it, one thread (issue 17).

    python bench/packgemm_layers.py [--repeat 15] [--only resnet50,googlenet,squeezenet]

Per layer (ResNet-50 v1 stages 3-4, GoogLeNet/inception_v1's 14x14 and 7x7 convs, SqueezeNet
1.1's 13x13 convs; ReLU and bias as in the nets): plans of both kinds, alternating timed calls,
each call on a different copy of the weights out of > 64 MB (cold, as in a forward pass).
Prints min / median ms and the median of per-round ratios packed / base. Not collected by
``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from refnet.kernels import _packgemm
from refnet.kernels.conv import Conv2dPlan
from refnet.runtime.threads import set_num_threads

# (name, input shape, cout, k, stride, pad)
LAYERS = {
    "resnet50": [
        ("s3 1x1 512->256 s2", (1, 512, 28, 28), 256, 1, 2, 0),
        ("s3 3x3 256->256", (1, 256, 14, 14), 256, 3, 1, 1),
        ("s3 1x1 256->1024", (1, 256, 14, 14), 1024, 1, 1, 0),
        ("s3 proj 512->1024 s2", (1, 512, 28, 28), 1024, 1, 2, 0),
        ("s3 1x1 1024->256", (1, 1024, 14, 14), 256, 1, 1, 0),
        ("s4 1x1 1024->512 s2", (1, 1024, 14, 14), 512, 1, 2, 0),
        ("s4 3x3 512->512", (1, 512, 7, 7), 512, 3, 1, 1),
        ("s4 1x1 512->2048", (1, 512, 7, 7), 2048, 1, 1, 0),
        ("s4 proj 1024->2048 s2", (1, 1024, 14, 14), 2048, 1, 2, 0),
        ("s4 1x1 2048->512", (1, 2048, 7, 7), 512, 1, 1, 0),
    ],
    "googlenet": [
        ("4a 1x1 480->192", (1, 480, 14, 14), 192, 1, 1, 0),
        ("4a 3x3 96->208", (1, 96, 14, 14), 208, 3, 1, 1),
        ("4e 1x1 528->256", (1, 528, 14, 14), 256, 1, 1, 0),
        ("4e 3x3 160->320", (1, 160, 14, 14), 320, 3, 1, 1),
        ("5b 1x1 832->384", (1, 832, 7, 7), 384, 1, 1, 0),
        ("5b 3x3 192->384", (1, 192, 7, 7), 384, 3, 1, 1),
        ("5b 5x5 48->128", (1, 48, 7, 7), 128, 5, 1, 2),
    ],
    "squeezenet": [
        ("fire9 1x1 512->64", (1, 512, 13, 13), 64, 1, 1, 0),
        ("fire9 expand 1x1 64->256", (1, 64, 13, 13), 256, 1, 1, 0),
        ("fire9 expand 3x3 64->256", (1, 64, 13, 13), 256, 3, 1, 1),
        ("conv10 1x1 512->1000", (1, 512, 13, 13), 1000, 1, 1, 0),
    ],
}


def plans(xs, co, k, s, p, packed: bool, copies: int, rng) -> list[Conv2dPlan]:
    out = []
    for _ in range(copies):
        w = (rng.standard_normal((co, xs[1], k, k)) * 0.05).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32)
        out.append(Conv2dPlan(xs, w, b, stride=(s, s), pad=(p,) * 4, activation="relu",
                              algorithm="packed" if packed else None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--only", default=",".join(LAYERS))
    a = ap.parse_args()
    set_num_threads(1)
    os.environ[_packgemm.ENV] = "0"  # the base plans: the algorithm chosen without the packed GEMM
    rng = np.random.default_rng(0)
    for net in a.only.split(","):
        print(net)
        for name, xs, co, k, s, p in LAYERS[net]:
            copies = max(1, (64 << 20) // (co * xs[1] * k * k * 4) + 1)
            base, pk = plans(xs, co, k, s, p, False, copies, rng), plans(xs, co, k, s, p, True, copies, rng)
            x = rng.random(xs, dtype=np.float32)
            y = base[0](x)
            pk[0](x, y)
            tb, tp = [], []
            for r in range(a.repeat):
                for lst, ts in ((base, tb), (pk, tp)) if r % 2 == 0 else ((pk, tp), (base, tb)):
                    pl = lst[r % copies]
                    t0 = time.perf_counter()
                    pl(x, y)
                    ts.append(time.perf_counter() - t0)
            ratio = statistics.median(q / b for q, b in zip(tp, tb))
            print(f"  {name:26s} base {base[0].algorithm:9s} min {min(tb) * 1e3:6.3f} "
                  f"med {statistics.median(tb) * 1e3:6.3f}  packed min {min(tp) * 1e3:6.3f} "
                  f"med {statistics.median(tp) * 1e3:6.3f} ms  ratio {ratio:4.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
