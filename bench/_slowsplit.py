"""The fast / slow split of bench/slow_state.py, slow_steps.py and slow_pairs.py.

Rounds of probe timings (one dict per round, us) are split by onnxruntime's pass time in the
same round: fast within 6% of its minimum over the run, slow over 12% above it. The model the
rounds classify by: :func:`light_model`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

FAST = 1.06
SLOW = 1.12


def light_model(model: str) -> tuple[Any, Any, Callable[[], object]]:
    """(refnet net, input, onnxruntime pass): the onnx package's light zoo graph ``model`` with
    ``refnet.archs.seed_onnx_weights(seed=0)``, loaded by refnet, a random input of the graph's
    shape (seed 1) and a one-thread onnxruntime call on it (``refnet.bench_peers.ort_runner``, as
    bench/peer_rows.py times it)."""
    import numpy as np
    import onnx

    import refnet
    from refnet.bench_peers import ort_runner

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    if not (light / f"light_{model}.onnx").is_file():
        names = sorted(p.stem.removeprefix("light_") for p in light.glob("light_*.onnx"))
        raise SystemExit(f"no onnx light zoo model {model!r}; one of: {', '.join(names)}")
    path = refnet.archs.seed_onnx_weights(light / f"light_{model}.onnx",
                                          Path(tempfile.mkdtemp(prefix="refnet-slow-")) / f"{model}.onnx", seed=0)
    net = refnet.load(str(path))
    shape = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    ort_pass, _ = ort_runner(str(path), {net.input_names[0]: x}, 1)
    return net, x, ort_pass


def run(probes: Mapping[str, Callable[[], object]], seconds: float) -> list[dict[str, float]]:
    """Each probe called twice (compile, plan, warm), then rounds of every probe timed back to
    back, in order, for ``seconds``: one dict per round, us."""
    for f in probes.values():
        f()
        f()
    rows: list[dict[str, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        row = {}
        for k, f in probes.items():
            t0 = time.perf_counter()
            f()
            row[k] = (time.perf_counter() - t0) * 1e6
        rows.append(row)
    return rows


def split(rows: Sequence[dict[str, float]], ref: str) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(fast rounds, slow rounds) by ``row[ref]``."""
    lo = min(r[ref] for r in rows)
    return [r for r in rows if r[ref] < lo * FAST], [r for r in rows if r[ref] > lo * SLOW]


def report(rows: Sequence[dict[str, float]], ref: str, seconds: float, width: int = 40) -> bool:
    """Print the split's sizes and each probe's fast and slow medians, their difference and
    factor; False (after saying so) when the run has no slow or no fast rounds."""
    fast, slow = split(rows, ref)
    print(f"{len(rows)} rounds in {seconds:.0f} s: fast (onnxruntime within {FAST - 1:.0%} of its minimum) "
          f"{len(fast)}, slow (over {SLOW - 1:.0%} above) {len(slow)}")
    if not fast or not slow:
        print("no slow (or no fast) rounds this time: the machine stayed in one state; run again later")
        return False
    for k in rows[0]:
        f = statistics.median(r[k] for r in fast)
        s = statistics.median(r[k] for r in slow)
        print(f"  {k:{width}s} fast {f:9.1f} us   slow {s:9.1f} us   +{s - f:8.1f}   x{s / f:.2f}")
    return True
