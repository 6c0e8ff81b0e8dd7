"""refnet vs onnxruntime at one thread, in one process, by process CPU time as well as wall clock.

    python bench/cpu_vs_ort.py squeezenet[,inception_v1,resnet50] [--rounds 41]

The onnx light zoo model with ``refnet.archs.seed_onnx_weights(seed=0)`` runs in refnet (one
thread; heavy nets in refnet's forward thread, refnet.runtime.interrupt) and in an onnxruntime
session with one intra-op and one inter-op thread, timed by ``time.process_time`` (every thread
of the process; nothing else runs in it). Rounds alternate the engines (order
flipped every round), each timed call after an untimed warm-up call of the same engine. Prints the
medians and minima of wall clock and thread CPU time and the median and spread of the per-round
ratios refnet / onnxruntime. On this project's shared 2-core machine the wall clock of a call
grows whenever another process shares its core (bench/step_stretches.py: 11.3 ms wall for 7.4 ms
of CPU time in such a stretch); CPU time grows only by what that neighbour does to the caches, so
its ratio is the steadier one (peer_rows.py's protocol, engines in their own processes, is the
README's). Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", help="comma-separated onnx light zoo names")
    ap.add_argument("--rounds", type=int, default=41)
    a = ap.parse_args(argv)

    import numpy as np
    import onnx
    import onnxruntime as ort

    import refnet

    refnet.set_num_threads(1)
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    with tempfile.TemporaryDirectory(prefix="refnet-cpu-vs-ort-") as wd:
        for name in a.models.split(","):
            path = str(refnet.archs.seed_onnx_weights(light / f"light_{name}.onnx", Path(wd) / f"{name}.onnx", seed=0))
            net = refnet.load(path)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0].name
            x = np.random.default_rng(0).standard_normal(tuple(net.graph.input_shapes[net.input_names[0]]))
            x = x.astype(np.float32)
            engines = {"refnet": lambda net=net, x=x: net.forward(x),
                       "onnxruntime": lambda sess=sess, feed={inp: x}: sess.run(None, feed)}
            wall: dict[str, list[float]] = {k: [] for k in engines}
            cpu: dict[str, list[float]] = {k: [] for k in engines}
            order = list(engines)
            for r in range(a.rounds):
                for k in order if r % 2 == 0 else order[::-1]:
                    engines[k]()
                    c0, w0 = time.process_time(), time.perf_counter()
                    engines[k]()
                    wall[k].append((time.perf_counter() - w0) * 1e3)
                    cpu[k].append((time.process_time() - c0) * 1e3)
            for what, ts in (("wall", wall), ("cpu", cpu)):
                ratios = sorted(rt / o for rt, o in zip(ts["refnet"], ts["onnxruntime"]))
                cells = ", ".join(f"{k} median {statistics.median(v):.2f} min {min(v):.2f}" for k, v in ts.items())
                print(f"{name} {what}: {cells} ms; refnet/onnxruntime median {statistics.median(ratios):.3f} "
                      f"({ratios[0]:.2f}..{ratios[-1]:.2f}, {a.rounds} rounds); load {os.getloadavg()[0]:.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
