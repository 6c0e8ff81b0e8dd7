"""refnet's default thread count against one thread and cv2.dnn's default, quiet or beside a busy
neighbour, keeping only the rounds in which the machine's *other* processes were idle (issue 17).

    python bench/default_threads_ab.py yufacedetectnet-v2,bvlc-googlenet,mobilenet-ssd,enet-cityscapes-cpu
        [--busy-neighbour] [--engines auto,1,2,cv2] [--rounds 9] [--max-seconds 120] [--others 0.15] [--fallback]

Per zoo model (seeded weights where it has none; ENet at 512x256, the others at their zoo
size): rounds of every engine in turn -- ``auto`` (``set_num_threads("auto")``, refnet's
default), a number (``set_num_threads(n)``), ``cv2`` (cv2.dnn with its default thread count) --
each after its set-up, an untimed warm-up call and a 0.1 s pause (bench/quiet_ab.py's rounds; each
round starts with the next engine).
A round is kept only if the CPU time of the other processes during it, not counting this
process and the spinning neighbour of ``--busy-neighbour`` (refnet.bench.busy_neighbour: one
core), stayed under ``--others`` cores (on the shared 2-core machine other engineers' jobs
come and go; bench/quiet_ab.py's rounds). Rounds repeat until ``--rounds`` are kept or
``--max-seconds`` pass (``--fallback``: if none was kept, ``--rounds`` more whatever the load,
reported with it). Prints rounds kept of tried, the others' load, medians and the medians
of per-round ratios auto/cv2, auto/1 and 2/1. Linux only; not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quiet_ab import quiet_rounds  # noqa: E402


def _engines(zoo: str, names: list[str], workdir: str) -> dict[str, tuple[Callable, Callable]]:
    """name -> (set-up, forward) for the model ``zoo``."""
    import cv2

    from refnet.bench import _cv2_runner, input_shapes_for, random_inputs
    from refnet.resolver import resolve_model
    from refnet.runtime import threads as T
    from refnet.runtime.smallnet import end_numpy_phase

    rm = resolve_model((), zoo, seeded_weights=1, workdir=workdir)
    size = (512, 256) if zoo.startswith("enet") else (
        tuple(rm.entry.preprocess.size) if rm.entry is not None and rm.entry.preprocess.size else None)
    feeds = random_inputs(input_shapes_for(rm.net, 1, size))
    fwd = lambda: rm.net.forward(feeds)  # noqa: E731
    out: dict[str, tuple[Callable, Callable]] = {}
    for k in names:
        if k == "cv2":
            out[k] = (lambda: cv2.setNumThreads(-1), _cv2_runner(rm.net, feeds))
        else:
            out[k] = ((lambda k=k: T.set_num_threads(k if k == "auto" else int(k))), fwd)
    for prep, fn in out.values():  # first runs: planning, cv2 set-up, numba's start
        prep()
        fn()
    end_numpy_phase()  # the steady state of a stream (refnet.runtime.smallnet)
    return out


def _ratio(kept: dict[str, list[float]], p: str, q: str) -> str:
    return f"{p}/{q} {statistics.median(x / y for x, y in zip(kept[p], kept[q])):.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", help="comma-separated zoo names")
    ap.add_argument("--engines", default="auto,1,2,cv2")
    ap.add_argument("--busy-neighbour", action="store_true", help="a process spinning on one core throughout")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--others", type=float, default=0.15, help="most cores other processes may use in a kept round")
    ap.add_argument("--fallback", action="store_true", help="if no round was quiet: --rounds rounds whatever the load")
    a = ap.parse_args(argv)
    from refnet.bench import busy_neighbour
    from refnet.runtime import threads as T

    names = a.engines.split(",")
    with tempfile.TemporaryDirectory(prefix="refnet-default-ab-") as wd:
        for zoo in a.models.split(","):
            eng = _engines(zoo, names, wd)
            with busy_neighbour() if a.busy_neighbour else contextlib.nullcontext(None) as pid:
                small0, limit = T.small_passes(), a.others
                kept, tried, loads = quiet_rounds(eng, names, a.rounds, a.max_seconds, a.others, [pid] if pid else [],
                                                  rotate=True)
                if not kept[names[0]] and a.fallback:  # never quiet: every round, with the load it saw
                    print(f"{zoo}: 0 of {tried} rounds under {a.others} cores (others' median "
                          f"{statistics.median(loads):.2f}); {a.rounds} rounds whatever the load:")
                    limit = float("inf")
                    kept, tried, loads = quiet_rounds(eng, names, a.rounds, a.max_seconds, limit,
                                                      [pid] if pid else [], rotate=True)
            n = len(kept[names[0]])
            print(f"{zoo}{' [busy neighbour]' if a.busy_neighbour else ''}: {n} of {tried} rounds kept (others "
                  f"< {limit} cores; per round min {min(loads):.2f} median {statistics.median(loads):.2f} max "
                  f"{max(loads):.2f}); auto ran {T.small_passes() - small0} passes on one thread by AUTO_MIN_WORK")
            if not n:
                continue
            print("  median ms  " + "  ".join(f"{k} {statistics.median(kept[k]) * 1e3:.2f}" for k in names))
            rat = [_ratio(kept, p, q) for p, q in (("auto", "cv2"), ("auto", "1"), ("2", "1"), ("1", "cv2"))
                   if p in kept and q in kept]
            print("  per-round ratio medians  " + "  ".join(rat), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
