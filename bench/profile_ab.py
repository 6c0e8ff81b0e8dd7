"""Per-layer time at 1 and 2 threads in one sitting (issue 17: which layers scale).

    python bench/profile_ab.py googlenet[,mobilenet_ssd,...] [--rounds 3] [--layers max_pool,lrn]

Per model (loaded as in bench/split_ab.py), alternating rounds of ``Net.profile(repeat=5)``
at 1 and at 2 threads (each after ``set_num_threads``, an untimed pass and a 0.1 s pause), then
per op type the medians over rounds of its summed time at 1 and 2 threads and their ratio
(``--layers OPS``: also every layer of those ops), and the process CPU time per forward pass
at each thread count. Ratios near 2 need a second free core: the load average is printed
before and after. Run from the checkout with REFNET_MODELS set. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_ab import _load, feeds_for  # noqa: E402


def _load_avg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def profile_model(net, feeds, rounds: int, layer_ops: set[str]) -> None:
    from refnet.runtime.threads import set_num_threads

    prof: dict[int, list] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):
        for n in (1, 2):
            set_num_threads(n)
            net.forward(feeds)
            time.sleep(0.1)
            prof[n].append(net.profile(feeds, repeat=5))
            for _ in range(3):
                time.sleep(0.05)
                c0 = time.process_time()
                net.forward(feeds)
                cpu[n].append(time.process_time() - c0)
    steps = prof[1][0]
    med = {n: [float(np.median([r[i][2] for r in prof[n]])) for i in range(len(steps))] for n in (1, 2)}
    by_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for i, (layer, op, _) in enumerate(steps):
        by_op[op][0] += med[1][i]
        by_op[op][1] += med[2][i]
        if op in layer_ops:
            t1, t2 = med[1][i], med[2][i]
            print(f"    {layer:30s} {op:10s} {t1 * 1e3:8.3f} {t2 * 1e3:8.3f} {t1 / t2:5.2f}")
    print(f"  {'op':32s} {'1 thr ms':>8s} {'2 thr ms':>8s} {'1/2':>5s}")
    for op, (a, b) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        if a > 5e-5:
            print(f"  {op:32s} {a * 1e3:8.2f} {b * 1e3:8.2f} {a / b:5.2f}")
    a, b = sum(med[1]), sum(med[2])
    print(f"  {'total':32s} {a * 1e3:8.2f} {b * 1e3:8.2f} {a / b:5.2f}")
    print(f"  CPU ms per forward: 1 thread {np.median(cpu[1]) * 1e3:.1f}, 2 threads {np.median(cpu[2]) * 1e3:.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", default="", help="op types whose layers to list one by one")
    a = ap.parse_args(argv)
    from refnet.kernels._parallel import choose_threading_layer

    # numba's layer for the whole process as for 2 threads (as bench/split_ab.py: TBB where
    # installed, so the 2-thread rounds run the split drivers in numba regions), started now: the
    # first round's set_num_threads(1) would choose OpenMP while no parallel region ran yet, and
    # the 2-thread rounds then ran on it (so did this tool's numbers before session 7)
    print(f"numba threading layer: {choose_threading_layer(2)}")
    import numpy as np

    from refnet.kernels.conv import _bias_act_cols

    z = np.zeros((2, 4), np.float32)
    _bias_act_cols.parallel(z, z[:, 0], 0, z[:, 0], 0, 4)  # (one parallel region: the layer starts)
    with tempfile.TemporaryDirectory(prefix="refnet-profile-ab-") as wd:
        for name in a.models.split(","):
            net, size = _load(name, wd)
            feeds = feeds_for(net, size)
            load0 = _load_avg()
            print(f"{name}: per layer, medians of {a.rounds} alternating rounds (1 thread, 2 threads)")
            profile_model(net, feeds, a.rounds, set(filter(None, a.layers.split(","))))
            print(f"  load {load0} -> {_load_avg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
