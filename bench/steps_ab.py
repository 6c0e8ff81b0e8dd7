"""Paired per-step A/B of one module flag of refnet, one thread, in one process.

    python bench/steps_ab.py squeezenet refnet.kernels._packgemm:WIDE_PLAIN [--rounds 60] [--show 3]
    python bench/steps_ab.py squeezenet refnet.kernels._packgemm:PLAIN_MIN_K --values 32,16

The onnx light zoo model (``refnet.archs.seed_onnx_weights(seed=0)``) is loaded twice, variant A
with the flag False, B with it True (or the two ``--values``, Python literals), set before each
call of that variant, as bench/flag_ab.py.
Rounds alternate A and B (order flipped every round); each timed forward pass follows an untimed
one of the same variant and runs step by step (``Program.steps``), so every step's time is taken
inside a whole pass (caches as in a forward, unlike a step timed alone). Prints the medians of the
pass (wall clock and thread CPU time), the median and spread of the per-round CPU-time ratios
B/A, and the steps whose medians differ by more than ``--show`` microseconds. Not collected by
``pytest bench``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="onnx light zoo name (squeezenet, inception_v1, resnet50)")
    ap.add_argument("flag", help="module:ATTRIBUTE, a bool read by refnet")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--show", type=float, default=3.0, help="list steps differing by more than this (us)")
    ap.add_argument("--values", default="False,True", help="the attribute's values for A and B (Python literals)")
    a = ap.parse_args(argv)

    import ast

    import numpy as np
    import onnx

    import refnet
    from refnet.net import _ctx
    from refnet.runtime.program import RUN_LOCK

    refnet.set_num_threads(1)
    modname, attr = a.flag.split(":")
    mod = importlib.import_module(modname)
    vals = [ast.literal_eval(v) for v in a.values.split(",")]
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    ctx = _ctx("float32")
    with tempfile.TemporaryDirectory(prefix="refnet-steps-ab-") as wd:
        p = refnet.archs.seed_onnx_weights(light / f"light_{a.model}.onnx", Path(wd) / "m.onnx", seed=0)
        progs, outs = [], []
        for v in (0, 1):
            setattr(mod, attr, vals[v])
            net = refnet.load(str(p))
            x = np.random.default_rng(0).standard_normal(tuple(net.graph.input_shapes[net.input_names[0]]))
            feeds = net._feeds(x.astype(np.float32), ctx)
            outs.append(next(iter(net.forward(x.astype(np.float32)).values())))
            progs.append(net._program(tuple(net.output_names), True, feeds, ctx))
    diff = float(np.abs(outs[0].astype(np.float64) - outs[1]).max() / max(np.abs(outs[0]).max(), 1e-30))
    per: list[dict[str, list[float]]] = [{}, {}]
    wall: list[list[float]] = [[], []]
    cpu: list[list[float]] = [[], []]
    for r in range(a.rounds):
        for v in (0, 1) if r % 2 == 0 else (1, 0):
            setattr(mod, attr, vals[v])
            prog = progs[v]
            with RUN_LOCK:
                for timed in (False, True):
                    c0, w0 = time.thread_time(), time.perf_counter()
                    t0 = w0
                    for j in prog.steps(prog.start(feeds)):
                        t1 = time.perf_counter()
                        if timed:
                            per[v].setdefault(prog.layers[j], []).append((t1 - t0) * 1e6)
                        t0 = t1
                    if timed:
                        wall[v].append((time.perf_counter() - w0) * 1e3)
                        cpu[v].append((time.thread_time() - c0) * 1e3)
    ratios = np.array(cpu[1]) / np.array(cpu[0])
    print(f"{a.model} {attr}: wall A {np.median(wall[0]):.3f} B {np.median(wall[1]):.3f} ms; cpu A "
          f"{np.median(cpu[0]):.3f} B {np.median(cpu[1]):.3f} ms; cpu B/A median {np.median(ratios):.3f} "
          f"({ratios.min():.2f}..{ratios.max():.2f}, {a.rounds} rounds); output max rel diff {diff:.2e}; "
          f"load {os.getloadavg()[0]:.2f}")
    both = [k for k in per[0] if k in per[1]]
    sums = [[sum(float(f(per[v][k])) for k in both) for v in (0, 1)] for f in (np.median, np.min)]
    print(f"  sum of the steps' medians A {sums[0][0] / 1e3:.3f} B {sums[0][1] / 1e3:.3f} ms (B/A "
          f"{sums[0][1] / sums[0][0]:.3f}), of their minimums A {sums[1][0] / 1e3:.3f} B {sums[1][1] / 1e3:.3f} ms "
          f"(B/A {sums[1][1] / sums[1][0]:.3f})")
    for layer, ts in per[0].items():
        ta, tb = float(np.median(ts)), float(np.median(per[1].get(layer, [np.nan])))
        if not abs(tb - ta) <= a.show:
            print(f"  {layer:24s} A {ta:9.1f} us  B {tb:9.1f} us  {tb - ta:+8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
