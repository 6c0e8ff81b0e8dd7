"""refnet's load-aware default thread count against fixed counts, with simulated neighbours (issue 17).

    python bench/auto_threads_ab.py bvlc-googlenet,enet-cityscapes-cpu [--neighbours spin|burst|spin+burst|none]
        [--engines auto,1,2] [--repeat 9]

Per zoo model (seeded weights where it has none; ENet at 512x256), alternating rounds of the
engines (``auto``: ``set_num_threads("auto")``; a number: ``set_num_threads(n)``) with the fair
protocol of :func:`refnet.bench.alternate` (set-up, 0.1 s pause, untimed warm-up call), while
neighbour processes run: ``spin`` holds one core (like ``refnet bench --busy-neighbour``),
``burst`` spins 80 ms and sleeps 80 ms (another benchmark pausing between its calls, the case
the snapshot of the running count missed). Prints medians, minima, the medians of per-round
ratios against the first fixed count, the load average and the auto decisions
(threads, others running at the look, cores others used lately: refnet.runtime.threads).
The machine's other jobs count as neighbours too: compare within a run, repeat.
Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time

import numpy as np

_SPIN = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"
_BURST = ("import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n"
          "    t = time.monotonic() + 0.08\n    while time.monotonic() < t:\n        pass\n    time.sleep(0.08)\n")


@contextlib.contextmanager
def neighbours(kinds: str):
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN if k == "spin" else _BURST])
             for k in kinds.split("+") if k in ("spin", "burst")]
    try:
        time.sleep(0.3)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_model(zoo: str, engines: list[str], repeat: int, kinds: str) -> None:
    from refnet.bench import alternate, input_shapes_for, load_average, random_inputs
    from refnet.resolver import resolve_model
    from refnet.runtime import threads as T

    rm = resolve_model((), zoo, seeded_weights=1, workdir=tempfile.mkdtemp(prefix="refnet-ab-"))
    size = (512, 256) if zoo.startswith("enet") else (
        tuple(rm.entry.preprocess.size) if rm.entry is not None and rm.entry.preprocess.size else None)
    feeds = random_inputs(input_shapes_for(rm.net, 1, size))
    fwd = lambda: rm.net.forward(feeds)  # noqa: E731
    prep = [(lambda e=e: T.set_num_threads(e if e == "auto" else int(e))) for e in engines]
    load0 = load_average()
    with neighbours(kinds):
        t0 = time.monotonic()
        times = alternate([fwd] * len(engines), repeat, 2, pause=0.1, warm_each=True, prepare=prep)
        chosen = T.decisions(since=t0)
    ms = [np.array(t) * 1e3 for t in times]
    ref = next((i for i, e in enumerate(engines) if e != "auto"), 0)
    cols = "  ".join(f"{e}: {np.median(t):.1f} (min {t.min():.1f})" for e, t in zip(engines, ms))
    rat = "  ".join(f"{e}/{engines[ref]} {np.median(t / ms[ref]):.2f}" for i, (e, t) in enumerate(zip(engines, ms))
                    if i != ref)
    print(f"{zoo} [{kinds}] load {load0:.2f} -> {load_average():.2f}: {cols}  | per-round {rat}")
    print(f"    auto decisions (threads, others now, others lately): {chosen}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", help="comma-separated zoo names")
    p.add_argument("--neighbours", default="spin", help="spin, burst, spin+burst or none")
    p.add_argument("--engines", default="auto,1,2")
    p.add_argument("--repeat", type=int, default=9)
    a = p.parse_args(argv)
    for zoo in a.models.split(","):
        run_model(zoo, a.engines.split(","), a.repeat, a.neighbours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
