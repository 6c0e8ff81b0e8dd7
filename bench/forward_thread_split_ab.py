"""Paired A/B of how a heavy forward pass runs: a new thread per pass, the persistent forward
thread (refnet.runtime.interrupt.PERSISTENT, the default), or in the calling thread (no Ctrl-C
handling; the floor).

    python bench/forward_thread_split_ab.py googlenet,mobilenet_ssd [--threads 2] [--rounds 15]

Models loaded as in bench/split_ab.py (batch 1); rounds alternate the three variants (order rotated),
each timed call after a 0.1 s pause and an untimed warm-up call of the same variant. Prints per
variant the median and min wall time, the median process CPU time per pass, and the per-round
ratios to the new-thread variant. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_ab import _load, feeds_for  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args(argv)

    import refnet.runtime.interrupt as itr
    import refnet.runtime.program as prog
    from refnet.runtime.threads import set_num_threads

    orig = prog.run_interruptibly

    def direct(run, lock):
        with lock:
            return run(None)

    def use(v: str) -> None:
        prog.run_interruptibly = direct if v == "caller" else orig
        itr.PERSISTENT = v == "persistent"

    names = ("new", "persistent", "caller")
    with tempfile.TemporaryDirectory(prefix="refnet-fwdthread-") as wd:
        for model in a.models.split(","):
            net, size = _load(model, wd)
            feeds = feeds_for(net, size)
            set_num_threads(a.threads)
            wall: dict[str, list[float]] = {v: [] for v in names}
            cpu: dict[str, list[float]] = {v: [] for v in names}
            load0 = os.getloadavg()
            for r in range(a.rounds):
                for v in names[r % 3:] + names[: r % 3]:
                    use(v)
                    time.sleep(0.1)
                    net.forward(feeds)
                    c0, t0 = time.process_time(), time.perf_counter()
                    net.forward(feeds)
                    wall[v].append((time.perf_counter() - t0) * 1e3)
                    cpu[v].append((time.process_time() - c0) * 1e3)
            use("persistent")
            print(f"{model} {a.threads} thread(s), {a.rounds} rounds, load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}")
            for v in names:
                ratio = statistics.median(w / n for w, n in zip(wall[v], wall["new"]))
                cratio = statistics.median(w / n for w, n in zip(cpu[v], cpu["new"]))
                print(f"  {v:10s} wall median {statistics.median(wall[v]):7.2f} min {min(wall[v]):7.2f} ms, cpu median "
                      f"{statistics.median(cpu[v]):7.2f} ms; per round / new: wall {ratio:.3f}, cpu {cratio:.3f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
