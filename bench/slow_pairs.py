"""The same conv in refnet and in onnxruntime, fast state against slow state (one thread).

    python bench/slow_pairs.py [--seconds 120]

For SqueezeNet's conv shapes (conv1, a squeeze, the 55x55 / 27x27 / 13x13 expands, conv10) it
builds refnet's conv plan (ReLU fused) and a one-node Conv + Relu onnxruntime session of the same
weights, checks they agree, then times -- round after round for ``--seconds``, back to back in
one thread -- onnxruntime's SqueezeNet pass, refnet's, and every pair, and splits the rounds by
onnxruntime's pass time as bench/slow_state.py does (fast: within 6% of its minimum, slow: over
12% above). Prints each probe's median in both states and the factor: which kernels are
sensitive to the machine's slow state, with onnxruntime's kernel for the same work beside it.
2026-12-07 00:05 (main b52bb8b, 10281 rounds, 131 slow): onnxruntime's direct 3x3s x1.12-1.14,
refnet's Winograd x1.27-1.35; the 1x1s x1.26-1.35 in both (onnxruntime's one-node sessions
include its NCHWc reorders); conv10 x1.08 against x1.16; conv1 x1.22 against x1.35. Not collected
by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import _slowsplit

# name: (C_in, map, C_out, kernel, stride, pad)
SHAPES = {
    "conv1 3->64 3x3/2 224": (3, 224, 64, 3, 2, 0),
    "squeeze 64->16 55": (64, 55, 16, 1, 1, 0),
    "expand1x1 16->64 55": (16, 55, 64, 1, 1, 0),
    "expand3x3 16->64 55": (16, 55, 64, 3, 1, 1),
    "expand3x3 32->128 27": (32, 27, 128, 3, 1, 1),
    "expand3x3 64->256 13": (64, 13, 256, 3, 1, 1),
    "expand1x1 64->256 13": (64, 13, 256, 1, 1, 0),
    "conv10 512->1000 13": (512, 13, 1000, 1, 1, 0),
}


def _pair(rng, c: int, h: int, co: int, k: int, stride: int, pad: int) -> tuple[Callable, Callable, str]:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import refnet.kernels.conv as C

    x = rng.random((1, c, h, h), dtype=np.float32)
    w = (rng.random((co, c, k, k), dtype=np.float32) - 0.5) * 0.1
    b = rng.random(co, dtype=np.float32) * 0.1
    plan = C.conv2d_plan(x.shape, w, b, stride=stride, pad=pad, activation="relu")
    y = plan(x)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["t"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4),
         helper.make_node("Relu", ["t"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    diff = float(np.abs(sess.run(None, {"x": x})[0] - y).max())
    if diff > 1e-4 * max(1.0, float(np.abs(y).max())):
        raise SystemExit(f"refnet and onnxruntime disagree on {c}->{co} k{k} {h}x{h}: {diff:.1e}")
    return (lambda: plan(x, y)), (lambda: sess.run(None, {"x": x})), plan.algorithm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    a = ap.parse_args(argv)
    import numpy as np

    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    net, x0, ort_pass = _slowsplit.light_model("squeezenet")
    probes: dict[str, Callable[[], object]] = {"onnxruntime pass": ort_pass, "refnet pass": lambda: net.forward(x0)}
    rng = np.random.default_rng(0)
    for name, shape in SHAPES.items():
        mine, theirs, alg = _pair(rng, *shape)
        probes[f"{name} refnet ({alg})"] = mine
        probes[f"{name} onnxruntime"] = theirs
    _slowsplit.report(_slowsplit.run(probes, a.seconds), "onnxruntime pass", a.seconds, 46)
    return 0


if __name__ == "__main__":
    sys.exit(main())
