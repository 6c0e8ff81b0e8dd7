"""Stretches of forward passes in one process: wall clock vs thread CPU time, and which steps grow.

    python bench/step_stretches.py squeezenet [--blocks 40] [--reload 0]

Runs ``--blocks`` blocks of 30 forward passes (one thread, the onnx light zoo model with
``refnet.archs.seed_onnx_weights(seed=0)``), each pass step by step (``Program.steps``), and prints
per block the median wall clock and thread CPU time of a pass; ``--reload N`` loads the model
afresh every N blocks (new arena and plan buffers). Then the blocks are split at the midpoint of
their medians into fast and slow ones and the steps that grew most are listed (mean of the
blocks' per-step medians, us). A slow block whose CPU time stayed put was descheduled (other
processes on the cores); one whose CPU time grew ran slower itself. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--blocks", type=int, default=40)
    ap.add_argument("--reload", type=int, default=0)
    ap.add_argument("--show", type=int, default=12, help="steps listed")
    a = ap.parse_args(argv)

    import numpy as np
    import onnx

    import refnet
    from refnet.net import _ctx
    from refnet.runtime.program import RUN_LOCK

    refnet.set_num_threads(1)
    ctx = _ctx("float32")
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    with tempfile.TemporaryDirectory(prefix="refnet-stretches-") as wd:
        path = str(refnet.archs.seed_onnx_weights(light / f"light_{a.model}.onnx", Path(wd) / "m.onnx", seed=0))

        def load():
            net = refnet.load(path)
            x = np.random.default_rng(0).standard_normal(tuple(net.graph.input_shapes[net.input_names[0]]))
            feeds = net._feeds(x.astype(np.float32), ctx)
            for _ in range(3):
                net.forward(x.astype(np.float32))
            return net._program(tuple(net.output_names), True, feeds, ctx), feeds

        prog, feeds = load()
        walls, cpus, per = [], [], []
        for blk in range(a.blocks):
            if a.reload and blk and blk % a.reload == 0:
                prog, feeds = load()
            steps = np.zeros((30, len(prog.code)))
            w, c = [], []
            with RUN_LOCK:
                for r in range(30):
                    c0, w0 = time.thread_time(), time.perf_counter()
                    t0 = w0
                    for j in prog.steps(prog.start(feeds)):
                        t1 = time.perf_counter()
                        steps[r, j] = (t1 - t0) * 1e6
                        t0 = t1
                    w.append((time.perf_counter() - w0) * 1e3)
                    c.append((time.thread_time() - c0) * 1e3)
            walls.append(float(np.median(w)))
            cpus.append(float(np.median(c)))
            per.append(np.median(steps, axis=0))
            print(f"block {blk:3d}: wall median {walls[-1]:6.2f} ms (min {min(w):6.2f}), cpu median "
                  f"{cpus[-1]:6.2f} ms; load {os.getloadavg()[0]:.2f}", flush=True)
    walls_a, per_a = np.array(walls), np.array(per)
    cut = (walls_a.min() + walls_a.max()) / 2
    slow = walls_a > cut
    print(f"{int(slow.sum())} slow / {int((~slow).sum())} fast blocks (cut {cut:.2f} ms); cpu median slow "
          f"{np.median(np.array(cpus)[slow]) if slow.any() else float('nan'):.2f}, fast "
          f"{np.median(np.array(cpus)[~slow]):.2f} ms")
    if slow.any() and (~slow).any():
        fast_us, slow_us = per_a[~slow].mean(0), per_a[slow].mean(0)
        for j in np.argsort(fast_us - slow_us)[: a.show]:
            print(f"  {prog.layers[j]:20s} {prog.ops[j]:10s} fast {fast_us[j]:8.1f} us  slow {slow_us[j]:8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
