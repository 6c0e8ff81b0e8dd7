"""Cold-cache A/B of one Winograd conv plan (issue 17, session 9), one thread, in one process.

    python bench/wino_cold.py [--rounds 30] [--flush-mb 64] [--shapes squeezenet] [--no-ort]
    python bench/wino_cold.py --flag refnet.kernels._winopanel:MB_BYTES --values 1,262144,1048576

For each shape (SqueezeNet's expand3x3 convs: 55x55 16 -> 64, 27x27 32 -> 128, 13x13 48 -> 192 and
64 -> 256; ``--shapes resnet`` / ``inception`` for ResNet-50's / GoogLeNet's 3x3s) it times, per
variant, calls with the caches cold -- a buffer of ``--flush-mb`` MiB written before every call,
so the weights, the scratch and the input come from memory as in a forward pass under memory
contention -- and hot ones (the same call twice, the second timed): the panel path
(kernels/_winopanel.py, ``panels``) against the np.matmul / WinoGemms path (``matmul``), on the
plan's algorithm and on the other Winograd variant (F(2,3) / F(4,3)), and onnxruntime's Conv
node of the same shape (``ort``, its own session, one thread; ``--no-ort`` skips it). With
``--flag module:ATTR --values a,b,..`` (Python literals) the panel path once per value (the
attribute set before its plan is made and before each of its calls). Rounds
alternate the variants (order flipped every round); prints min / median us per variant, cold and
hot, and each variant's median over the first's. Results are checked against the first variant.
Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHAPES = {
    "squeezenet": [((1, 16, 55, 55), 64), ((1, 32, 27, 27), 128), ((1, 48, 13, 13), 192), ((1, 64, 13, 13), 256)],
    "resnet": [((1, 64, 56, 56), 64), ((1, 128, 28, 28), 128), ((1, 256, 14, 14), 256)],
    "inception": [((1, 64, 56, 56), 192), ((1, 96, 28, 28), 128), ((1, 128, 28, 28), 192), ((1, 112, 14, 14), 224),
                  ((1, 128, 14, 14), 256), ((1, 144, 14, 14), 288), ((1, 160, 14, 14), 320)],
}


def _ort_conv(xs: tuple, w: np.ndarray, b: np.ndarray):  # noqa: ANN202
    """A one-thread onnxruntime session of one Conv (pad 1) + Relu on these weights: f(x) -> y."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    co = w.shape[0]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [xs[0], co, xs[2], xs[3]])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    onnx.checker.check_model(model)
    return lambda x: sess.run(None, {"x": x})[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--flush-mb", type=float, default=64.0)
    ap.add_argument("--shapes", default="squeezenet", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--no-other", action="store_true", help="skip the other Winograd variant")
    ap.add_argument("--flag", default="", help="module:ATTRIBUTE for panel variants")
    ap.add_argument("--values", default="", help="its values (Python literals, comma-separated)")
    a = ap.parse_args(argv)

    import ast
    import importlib

    import refnet
    import refnet.kernels.conv as C
    from refnet.kernels import _winopanel as WP

    refnet.set_num_threads(1)
    flush = np.zeros(int(a.flush_mb * 2**20) // 4, np.float32)
    rng = np.random.default_rng(0)
    for xs, co in [s for name in a.shapes.split(",") for s in SHAPES[name]]:
        x = rng.standard_normal(xs).astype(np.float32)
        w = (rng.standard_normal((co, xs[1], 3, 3)) * 0.1).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32)
        base = C.conv2d_plan(xs, w, b, pad=1, activation="relu")
        algs = [base.algorithm] + ([] if a.no_other or not base.algorithm.startswith("winograd") else
                                   ["winograd4" if base.algorithm == "winograd" else "winograd"])
        fns: dict = {}
        flag = (importlib.import_module(a.flag.split(":")[0]), a.flag.split(":")[1]) if a.flag else None
        vals = [ast.literal_eval(v) for v in a.values.split(",")] if flag else [None]
        for alg in algs:
            for val in vals:
                if flag:
                    setattr(*flag, val)
                p = C.conv2d_plan(xs, w, b, pad=1, activation="relu", algorithm=alg)
                y = p(x)
                if getattr(p, "wino_panels", None) is not None:
                    fns[f"{alg}/panels" + (f"/{val}" if flag else "")] = (p, (True, val), y)
            fns[f"{alg}/matmul"] = (p, (False, None), y.copy())
        if not a.no_ort:
            f = _ort_conv(xs, w, b)
            fns["ort"] = (f, None, f(x))

        def call(name: str, fns: dict = fns, x: np.ndarray = x, fl: tuple | None = flag) -> None:
            p, flag, y = fns[name]
            if flag is None:
                p(x)
                return
            WP.PANELS = flag[0]
            if flag[1] is not None:
                setattr(*fl, flag[1])
            p(x, y)

        cold: dict = {k: [] for k in fns}
        hot: dict = {k: [] for k in fns}
        names = list(fns)
        for r in range(a.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                flush += 1.0
                t = time.perf_counter()
                call(name)
                cold[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                call(name)
                hot[name].append(time.perf_counter() - t)
        WP.PANELS = True
        ref = fns[names[0]][2]
        err = max(float(np.abs(v[2] - ref).max()) for v in fns.values()) / max(float(np.abs(ref).max()), 1e-30)
        print(f"{xs[1]}->{co} {xs[2]}x{xs[3]} (plan: {base.algorithm}; max rel diff {err:.1e})  us min / median")
        c0, h0 = np.median(cold[names[0]]), np.median(hot[names[0]])
        for name in names:
            c, h = cold[name], hot[name]
            print(f"  {name:18s} cold {min(c) * 1e6:7.1f} / {np.median(c) * 1e6:7.1f} ({np.median(c) / c0:.3f})"
                  f"   hot {min(h) * 1e6:7.1f} / {np.median(h) * 1e6:7.1f} ({np.median(h) / h0:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
