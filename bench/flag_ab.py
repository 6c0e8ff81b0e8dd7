"""Paired A/B of one module flag of refnet at a fixed thread count, in one process.

    python bench/flag_ab.py squeezenet,inception_v1,resnet50 refnet.runtime.program:CONCAT_INTO
        [--threads 1] [--rounds 15] [--caffe googlenet] [--zoo yufacedetectnet-v2] [--passes 1]

Each model is loaded twice (onnx's light zoo graphs with ``refnet.archs.seed_onnx_weights(seed=0)``,
or ``--caffe googlenet,...``: the arch-only prototxts of REFNET_MODELS with the test suite's seeded
caffemodels, or ``--zoo NAME,...``: zoo models, seeded weights where they have none, at their
preprocessing size, on numba, as ``refnet bench``). Variant A runs with the flag False, B with it
True: the flag is set before every call of that variant (so it holds both when the program is
compiled and when it runs); several flags (``mod:A,mod:B``) are set together. Rounds alternate A
and B (order flipped every round), each timed call (``--passes`` forward passes) after an
untimed warm-up call of the same variant; prints the medians (wall clock, and the process CPU time, which a
descheduling by other processes does not inflate: 1 thread only), the median and spread
(min..max) of the per-round ratios B/A, and the load average. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _nets(kind: str, name: str, wd: Path):
    import numpy as np
    import onnx

    import refnet

    if kind == "zoo":
        from refnet.bench import input_shapes_for, random_inputs
        from refnet.resolver import resolve_model
        from refnet.runtime.smallnet import end_numpy_phase

        end_numpy_phase()
        rms = [resolve_model((), name, seeded_weights=1, workdir=str(wd)) for _ in range(2)]
        pre = rms[0].entry.preprocess.size if rms[0].entry is not None else None
        feeds = random_inputs(input_shapes_for(rms[0].net, 1, tuple(pre) if pre else None))
        return [rm.net for rm in rms], next(iter(feeds.values()))
    if kind == "onnx":
        light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
        p = refnet.archs.seed_onnx_weights(light / f"light_{name}.onnx", wd / f"{name}.onnx", seed=0)
        nets = [refnet.load(str(p)) for _ in range(2)]
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        from peer_rows import PROTOS

        sys.path.insert(0, str(ROOT / "tests"))
        from writers.caffe_writer import write_random_caffemodel

        models = Path(os.environ.get("REFNET_MODELS", ROOT.parent / "shared" / "models"))
        proto = models / PROTOS[name]
        weights = wd / f"{name}.caffemodel"
        write_random_caffemodel(proto, weights, seed=0)
        nets = [refnet.load_caffe(str(proto), str(weights)) for _ in range(2)]
    shape = nets[0].graph.input_shapes[nets[0].input_names[0]]
    x = np.random.default_rng(0).random(tuple(shape)).astype(np.float32)
    return nets, x


def paired_rounds(nets, x, setvariant, rounds: int, passes: int = 1) -> tuple[list[list[float]], list[list[float]]]:
    """Per variant v = 0, 1 (``nets[v]``, ``setvariant(v)`` called before each of its calls) the
    seconds per forward pass, wall clock and process CPU time: rounds alternate the variants
    (order flipped every round), each timed call of ``passes`` passes after an untimed warm-up
    call of the same variant and a 0.05 s pause."""
    times: list[list[float]] = [[], []]
    cpu: list[list[float]] = [[], []]
    for r in range(rounds):
        for v in ((0, 1) if r % 2 == 0 else (1, 0)):
            setvariant(v)
            nets[v].forward(x)
            time.sleep(0.05)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(passes):
                nets[v].forward(x)
            cpu[v].append((time.process_time() - c0) / passes)
            times[v].append((time.perf_counter() - t0) / passes)
    return times, cpu


def summary(ts: list[list[float]], a: str, b: str) -> str:
    """"a X ms, b Y ms (min ..); B/A median r (min .., max .., n rounds)" of :func:`paired_rounds`'
    seconds ``ts`` (medians, and the per-round ratios B/A)."""
    ratios = [y / x for x, y in zip(*ts)]
    ma, mb = (statistics.median(t) * 1e3 for t in ts)
    return (f"{a} {ma:.2f} ms, {b} {mb:.2f} ms (min {min(ts[0]) * 1e3:.2f} / {min(ts[1]) * 1e3:.2f}); B/A median "
            f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} rounds)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", help="comma-separated onnx light zoo names ('' for none)")
    ap.add_argument("flag", help="module:ATTRIBUTE, a bool read by refnet (several: comma-separated)")
    ap.add_argument("--caffe", default="", help="comma-separated caffe arch names (googlenet, mobilenet_ssd)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--zoo", default="", help="comma-separated zoo names (yufacedetectnet-v2)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--passes", type=int, default=1, help="forward passes per timed call")
    a = ap.parse_args(argv)

    from refnet.runtime.threads import set_num_threads

    set_num_threads(a.threads)
    flags = [(importlib.import_module(f.split(":")[0]), f.split(":")[1]) for f in a.flag.split(",")]
    attr = "+".join(at for _, at in flags)

    def setflags(v: int) -> None:
        for mod, at in flags:
            setattr(mod, at, bool(v))

    cases = [("onnx", n) for n in a.models.split(",") if n] + [("caffe", n) for n in a.caffe.split(",") if n] + [
        ("zoo", n) for n in a.zoo.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="refnet-flag-ab-") as wd:
        for kind, name in cases:
            nets, x = _nets(kind, name, Path(wd))
            outs = []
            for v in (0, 1):
                setflags(v)
                outs.append(next(iter(nets[v].forward(x).values())))
            diff = float(abs(outs[0].astype("f8") - outs[1]).max() / max(abs(outs[0]).max(), 1e-30))
            times, cpu = paired_rounds(nets, x, setflags, a.rounds, a.passes)
            for what, ts in (("wall", times), ("cpu", cpu)):
                print(f"{kind} {name} {what}: {summary(ts, f'{attr}=False', 'True')}, {a.threads} thread(s); output "
                      f"max rel diff {diff:.2e}; load {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
