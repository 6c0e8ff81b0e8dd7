"""Per-conv profile of one ONNX light-zoo model, refnet against onnxruntime, one thread (issue 17).

    python bench/layers_vs_ort.py [resnet50] [--rounds 15] [--set WIDE_PLAIN=0 ...]

The model is the onnx package's light zoo graph with ``refnet.archs.seed_onnx_weights(seed=0)``
(as bench/peer_rows.py). Rounds alternate one onnxruntime run (with its profiler on), one timed
refnet forward and one ``net.profile`` pass; per conv it prints the refnet plan (input channels,
outputs, kernel, stride, pixels, residual, algorithm), refnet's and onnxruntime's median ms and
the difference, then the other steps and the sums per refnet algorithm. onnxruntime's convs are
matched to refnet's by (output channels, pixels) in execution order: where a stage's projection
and its last 1x1 share that key, onnxruntime may run them in the other order (compare the pair's
sum). ``--set NAME=0|1`` sets a flag of refnet.kernels._packgemm first (plans read some at plan
time). Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="resnet50")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--set", nargs="*", default=[], help="NAME=0|1 flags of refnet.kernels._packgemm")
    a = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort

    import refnet
    import refnet.kernels.conv as kconv
    from refnet.kernels import _packgemm
    from refnet.runtime.threads import set_num_threads

    for kv in a.set:
        k, v = kv.split("=")
        setattr(_packgemm, k, bool(int(v)))
    set_num_threads(1)
    plans: list = []
    init = kconv.Conv2dPlan.__init__

    def recording_init(self, *args, **kw):
        init(self, *args, **kw)
        plans.append(self)

    kconv.Conv2dPlan.__init__ = recording_init
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    with tempfile.TemporaryDirectory(prefix="refnet-layers-ort-") as wd:
        p = refnet.archs.seed_onnx_weights(light / f"light_{a.model}.onnx", Path(wd) / f"{a.model}.onnx", seed=0)
        net = refnet.load(str(p))
        inp = onnx.load(str(p)).graph.input[0]
        x = np.random.default_rng(0).random([d.dim_value for d in inp.type.tensor_type.shape.dim]).astype(np.float32)
        net.forward(x)
        kconv.Conv2dPlan.__init__ = init
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(wd) / "ortprof")
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, {inp.name: x})
            net.forward(x)
        tort, tref, profs = [], [], []
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            sess.run(None, {inp.name: x})
            tort.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            net.forward(x)
            tref.append(time.perf_counter() - t0)
            profs.append(net.profile(x, repeat=1))
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = collections.defaultdict(list)
    kind: dict[str, tuple[str, list[int]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nm = e["name"][: -len("_kernel_time")]
            per[nm].append(e["dur"] / 1e3)
            kind[nm] = (e["args"].get("op_name"), list(e["args"]["output_type_shape"][0].values())[0])
    ortl = [(nm, kind[nm][0], kind[nm][1], float(np.median(v[-a.rounds:]))) for nm, v in per.items()]
    print(f"{a.model}: total median ms onnxruntime {np.median(tort) * 1e3:.2f} (min {min(tort) * 1e3:.2f}), refnet "
          f"{np.median(tref) * 1e3:.2f} (min {min(tref) * 1e3:.2f}), {a.rounds} rounds")
    steps = [(lay, op, float(np.median([pr[j][2] for pr in profs])) * 1e3) for j, (lay, op, _) in enumerate(profs[0])]
    keyed = collections.defaultdict(list)
    for _nm, op, dims, t in ortl:
        if op in ("Conv", "FusedConv"):
            keyed[(dims[1] * (dims[4] if len(dims) == 5 else 1), dims[2] * dims[3])].append(t)
    used: collections.Counter = collections.Counter()
    sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    print(f"{'step':6} {'cin':>5} {'cout':>5} k s {'pixels':>6} res {'algorithm':11} {'refnet':>7} "
          f"{'ort':>7} {'diff':>7}")
    for (lay, _, t), pl in zip([s for s in steps if s[1] == "conv"], plans):
        cin, co, ho, wo = pl.x_shape[1], *pl.y_shape[1:]
        key = (co, ho * wo)
        i = used[key]
        used[key] += 1
        ot = keyed[key][i] if i < len(keyed[key]) else float("nan")
        sums[pl.algorithm][0] += t
        sums[pl.algorithm][1] += ot
        print(f"{lay:6} {cin:5} {co:5} {pl.khw[0]} {pl.stride[0]} {ho * wo:6} {int(pl.residual):3} {pl.algorithm:11} "
              f"{t:7.3f} {ot:7.3f} {t - ot:+7.3f}")
    print("other refnet steps:", ", ".join(f"{lay} {op} {t:.3f}" for lay, op, t in steps if op != "conv"))
    print("other onnxruntime nodes:", ", ".join(f"{nm} {op} {t:.3f}" for nm, op, _, t in ortl
                                                if op not in ("Conv", "FusedConv")))
    print("per refnet algorithm (refnet, onnxruntime ms):", ", ".join(f"{k} {r:.2f} / {o:.2f}"
                                                                      for k, (r, o) in sums.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
