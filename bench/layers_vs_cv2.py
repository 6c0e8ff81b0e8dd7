"""Per-layer time of refnet (float32, ``Net.profile``) beside cv2.dnn 4.x's (``getPerfProfile``), one
thread each by default (issue 17: which layers keep a model behind cv2).

    python bench/layers_vs_cv2.py yufacedetectnet-v2 [--threads 1] [--rounds 5] [--top 10]

The zoo model (seeded weights where it has none; ENet at 512x256) on one random input; rounds
alternate refnet's ``Net.profile(repeat=5)`` and five cv2 forward passes; per layer, the medians
over all passes. A refnet step that fused or merged layers (``a+b``; its ``:split`` slice) is set
beside the sum of cv2's layers of those names; layers cv2 fused away show 0. Prints every step,
then the ``--top`` largest differences refnet - cv2, and the sums (refnet's steps vs cv2's
layers: per-layer overhead outside the layers is in neither). The load average is printed
before and after: compare within a run. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile


def _load_avg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a zoo name")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args(argv)
    import cv2

    from refnet.bench import _cv2_net, input_shapes_for, random_inputs
    from refnet.resolver import resolve_model
    from refnet.runtime.smallnet import end_numpy_phase
    from refnet.runtime.threads import set_num_threads

    set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    with tempfile.TemporaryDirectory(prefix="refnet-layers-") as wd:
        rm = resolve_model((), a.model, seeded_weights=1, workdir=wd)
        net = rm.net
        size = (512, 256) if a.model.startswith("enet") else (
            tuple(rm.entry.preprocess.size) if rm.entry is not None and rm.entry.preprocess.size else None)
        feeds = random_inputs(input_shapes_for(net, 1, size))
        x = feeds if len(feeds) > 1 else next(iter(feeds.values()))
        cv = _cv2_net(net)
        end_numpy_phase()
        net.forward(x)
        names = list(cv.getLayerNames())

        def cv_pass() -> list[float]:
            for k, v in feeds.items():
                cv.setInput(v, k) if len(feeds) > 1 else cv.setInput(v)
            cv.forward()
            return [t / cv2.getTickFrequency() for t in cv.getPerfProfile()[1].ravel()]

        cv_pass()
        load0 = _load_avg()
        ours: dict[str, list[float]] = {}
        theirs: dict[str, list[float]] = {n: [] for n in names}
        steps: list[tuple[str, str]] = []
        for _ in range(a.rounds):
            prof = net.profile(x, repeat=5)
            steps = [(layer, op) for layer, op, _ in prof]
            for layer, _, t in prof:
                ours.setdefault(layer, []).append(t)
            for _ in range(5):
                for n, t in zip(names, cv_pass()):
                    theirs[n].append(t)
        load1 = _load_avg()
    cvt = {n: statistics.median(v) for n, v in theirs.items()}
    rows = []
    for layer, op in steps:
        parts = layer.split(":")[0].split("+") if ":split" not in layer else []
        c = sum(cvt.get(p, 0.0) for p in parts)
        rows.append((layer, op, statistics.median(ours[layer]) * 1e3, c * 1e3))
    print(f"{a.model}: refnet float32 vs cv2.dnn {cv2.__version__}, {a.threads} thread(s), ms per layer "
          f"(medians of {5 * a.rounds} passes); load average {load0} -> {load1}")
    for layer, op, r, c in rows:
        print(f"  {layer[:48]:48s} {op:18s} {r:7.3f} {c:7.3f}")
    print("  largest differences refnet - cv2 (ms): " + ", ".join(
        f"{layer} {r - c:+.3f}" for layer, _, r, c in sorted(rows, key=lambda t: t[3] - t[2])[: a.top]))
    print(f"  sums: refnet steps {sum(r for *_, r, _ in rows):.2f} ms, cv2 layers {sum(cvt.values()) * 1e3:.2f} ms "
          f"({len(rows)} refnet steps, {len(names)} cv2 layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
