"""Where the machine's "slow state" costs refnet time: per-step times, rounds split by onnxruntime.

    python bench/slow_steps.py [--seconds 120] [--model squeezenet]

Each round times onnxruntime's pass (one thread), refnet's pass and then refnet's steps one by
one (``net.profile``), back to back, for ``--seconds``; the rounds are split by onnxruntime's
pass time as in bench/slow_state.py (fast: within 6% of its minimum, slow: over 12% above) and
each step's median is printed for both, with the difference in us and the factor: which layers
the slow state's extra time goes to. 2026-12-06 23:50 (main 0fba63c, SqueezeNet, 6592 rounds, 643
slow): pass 7.20 -> 9.59 ms (onnxruntime 7.11 -> 8.07); of the 2.25 ms more, the eight Winograd
3x3 expands 1.19 ms (x1.35-1.59), the sixteen 1x1s ~0.4 ms (x1.2-1.35), conv1 0.21 (x1.32),
conv10 0.29 (x1.18), the pools and the softmax 0.13 (x1.4-1.6), the Python-only concat steps
x1.8. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import sys
import time

import _slowsplit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--model", default="squeezenet", help="an onnx light zoo name (default squeezenet)")
    a = ap.parse_args(argv)
    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    net, x, ort_pass = _slowsplit.light_model(a.model)
    for _ in range(3):
        net.forward(x)
        ort_pass()
        net.profile(x, repeat=1)
    rows: list[dict[str, float]] = []
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        row = {}
        t0 = time.perf_counter()
        ort_pass()
        row["onnxruntime pass"] = (time.perf_counter() - t0) * 1e6
        t0 = time.perf_counter()
        net.forward(x)
        row["refnet pass"] = (time.perf_counter() - t0) * 1e6
        steps = net.profile(x, repeat=1)
        for j, (layer, op, sec) in enumerate(steps):
            row[f"{j:02d} {layer} ({op})"] = sec * 1e6
        row["sum of the steps"] = sum(sec for _, _, sec in steps) * 1e6
        rows.append(row)
    _slowsplit.report(rows, "onnxruntime pass", a.seconds, 42)
    return 0


if __name__ == "__main__":
    sys.exit(main())
