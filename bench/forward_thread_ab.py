"""Where a heavy forward pass runs: refnet's persistent worker thread vs a new thread per pass
(refnet before 2026-12) vs a plain call in the main thread; paired, one process (issue 17).

    python bench/forward_thread_ab.py [resnet50] [--rounds 25] [--threads 1] [--neighbour]

The onnx light zoo model with ``refnet.archs.seed_onnx_weights(seed=0)``; each round runs the
three modes in turn (order flipped every round), each timed call after a 0.1 s pause and an
untimed warm-up call of the same mode (bench_model's protocol). Prints per mode the median and
minimum wall clock, the median process CPU time and the median of wall minus CPU time (the
time the process waited for a core), and the median per-round ratios worker / new thread and worker / main thread.
``--neighbour``: a busy-looping process beside it (refnet.bench.busy_neighbour). Not collected
by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _new_thread(run: Any, lock: Any) -> Any:
    """The pre-2026-12 path: a new thread per pass (no Ctrl-C handling needed here)."""
    box: dict[str, Any] = {}

    def work() -> None:
        with lock:
            box["r"] = run(None)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join()
    return box["r"]


def _main_thread(run: Any, lock: Any) -> Any:
    with lock:
        return run(None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="resnet50")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--neighbour", action="store_true")
    a = ap.parse_args(argv)

    import contextlib

    import numpy as np
    import onnx

    import refnet
    import refnet.runtime.program as prog
    from refnet.bench import busy_neighbour

    refnet.set_num_threads(a.threads)
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    with tempfile.TemporaryDirectory(prefix="refnet-fwd-thread-") as wd:
        net = refnet.load(str(refnet.archs.seed_onnx_weights(light / f"light_{a.model}.onnx",
                                                              Path(wd) / "m.onnx", seed=0)))
    feeds = {name: np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
             for name, shape in net.input_shapes.items()}
    modes = {"worker": prog.run_interruptibly, "new-thread": _new_thread, "main": _main_thread}
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    real = prog.run_interruptibly
    ctx = busy_neighbour(600) if a.neighbour else contextlib.nullcontext()
    try:
        with ctx:
            for m in modes:  # warm-up
                prog.run_interruptibly = modes[m]
                net.forward(feeds)
            order = list(modes)
            for r in range(a.rounds):
                for m in order if r % 2 == 0 else order[::-1]:
                    prog.run_interruptibly = modes[m]
                    time.sleep(0.1)
                    net.forward(feeds)
                    c0, t0 = time.process_time(), time.perf_counter()
                    net.forward(feeds)
                    t1, c1 = time.perf_counter(), time.process_time()
                    times[m].append((t1 - t0, c1 - c0))
    finally:
        prog.run_interruptibly = real

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2] * 1e3

    for m, v in times.items():
        print(f"{a.model} {m:10s} wall median {med([w for w, _ in v]):7.2f} min {min(w for w, _ in v) * 1e3:7.2f} "
              f"cpu median {med([c for _, c in v]):7.2f} wall-cpu median {med([w - c for w, c in v]):6.2f} ms")
    for other in ("new-thread", "main"):
        rat = sorted(w / o for (w, _), (o, _) in zip(times["worker"], times[other]))
        print(f"{a.model} per-round wall worker / {other}: median {rat[len(rat) // 2]:.3f} "
              f"(quartiles {rat[len(rat) // 4]:.3f}..{rat[3 * len(rat) // 4]:.3f}, {a.rounds} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
