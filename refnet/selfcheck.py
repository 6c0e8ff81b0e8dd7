"""Kernel self-check: every fast float32 kernel against its float64 reference on seeded data.

``refnet selfcheck`` prints, per kernel, max|fast - ref| / max|ref| and a verdict against
the per-layer tolerance of DESIGN.md (1e-5; 5e-5 for long reductions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from refnet.tolerances import F32_VS_F64 as TOL
from refnet.tolerances import F32_VS_F64_LONG as TOL_LONG


@dataclass
class Case:
    name: str
    run: Callable[[Callable[[str], Callable], Callable[[np.ndarray], np.ndarray]], object]
    tol: float = TOL


# _cases is a table (seeded inputs, then one Case row per kernel), longer than 80 lines on purpose:
# one list a reader scans for "is kernel X checked?", not logic to split
def _cases() -> list[Case]:
    r = np.random.default_rng(2024)

    def a(*shape, lo=-1.0, hi=1.0):
        return r.uniform(lo, hi, size=shape)

    x = a(2, 6, 17, 19)
    w33 = a(8, 6, 3, 3) * 0.3
    wdw = a(12, 1, 3, 3) * 0.3
    w11 = a(16, 6, 1, 1) * 0.3
    wt = a(6, 4, 3, 3) * 0.3
    b8, b12, b16, b4 = a(8), a(12), a(16), a(4)
    fc = a(10, 6 * 17 * 19) * 0.05
    feat = a(1, 4, 5, 5)
    boxes = np.sort(a(50, 4, lo=0, hi=1).reshape(50, 2, 2), axis=1).reshape(50, 4)[:, [0, 2, 1, 3]]
    scores = a(50, lo=0, hi=1)
    # per-channel parameters drawn once (inside a lambda, a(6) would draw new values for each precision)
    c6a, c6b, c6c, c6d, var6 = a(6), a(6), a(6), a(6), a(6, lo=0.5, hi=2)
    rois = np.array([[0, 0, 0, 150, 120], [1, 20.4, 30.5, 250, 200], [0, 60, 10, 300, 280], [1, 5, 5, 9, 9]])
    ps = a(2, 18, 17, 19)
    logits = a(1, 2, 9 * 5 * 6, lo=-3, hi=3)
    rpn = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).reshape(1, 18, 5, 6)
    deltas = a(1, 36, 5, 6, lo=-0.3, hi=0.3)
    return [
        Case("conv2d 3x3 s1 pad1", lambda k, c: k("conv2d")(c(x), c(w33), c(b8), pad=1)),
        Case("conv2d 3x3 s2 dil2 asym-pad", lambda k, c: k("conv2d")(c(x), c(w33), c(b8), stride=2, dilation=2,
                                                                    pad=(2, 1, 0, 3))),
        Case("conv2d 1x1 (GEMM)", lambda k, c: k("conv2d")(c(x), c(w11), c(b16))),
        Case("conv2d depthwise x2 (groups=6)", lambda k, c: k("conv2d")(c(x), c(wdw), c(b12), pad=1, groups=6)),
        Case("conv2d + fused relu", lambda k, c: k("conv2d")(c(x), c(w33), c(b8), pad=1, activation="relu")),
        Case("conv_transpose2d s2 adj1", lambda k, c: k("conv_transpose2d")(c(x), c(wt), c(b4), stride=2, pad=1,
                                                                           output_padding=(1, 1))),
        Case("linear", lambda k, c: k("linear")(c(x), c(fc), None), TOL_LONG),
        Case("max_pool2d 3x3 s2 ceil", lambda k, c: k("max_pool2d")(c(x), (3, 3), (2, 2), (1, 1, 1, 1))),
        Case("avg_pool2d 3x3 s2 caffe", lambda k, c: k("avg_pool2d")(c(x), (3, 3), (2, 2), (1, 1, 1, 1))),
        Case("relu leaky", lambda k, c: k("relu")(c(x), 0.1)),
        Case("prelu", lambda k, c: k("prelu")(c(x), c(c6a))),
        Case("elu", lambda k, c: k("elu")(c(x), 1.0)),
        Case("sigmoid", lambda k, c: k("sigmoid")(c(x))),
        Case("tanh", lambda k, c: k("tanh")(c(x))),
        Case("bnll", lambda k, c: k("bnll")(c(x * 10))),
        Case("power", lambda k, c: k("power")(c(x + 2), 1.5, 0.5, 0.2)),
        Case("softmax axis 1", lambda k, c: k("softmax")(c(x * 5), axis=1)),
        Case("log_softmax axis -1", lambda k, c: k("log_softmax")(c(x * 5), axis=-1)),
        Case("batch_norm", lambda k, c: k("batch_norm")(c(x), c(c6a), c(var6), c(c6b), c(c6c))),
        Case("instance_norm", lambda k, c: k("instance_norm")(c(x), c(c6b), c(c6d))),
        Case("lrn across", lambda k, c: k("lrn")(c(x), size=5, alpha=1e-2, beta=0.75, k=2.0)),
        Case("lrn within", lambda k, c: k("lrn")(c(x), size=3, alpha=1e-2, beta=0.75, region="within")),
        Case("l2_normalize", lambda k, c: k("l2_normalize")(c(x), c(c6d), across_spatial=False,
                                                            channel_shared=False)),
        Case("mvn", lambda k, c: k("mvn")(c(x))),
        Case("mvn_cv2 (eps inside the root)", lambda k, c: k("mvn_cv2")(c(x), eps=0.25)),
        Case("lp_normalize p=2 (Torch nn.Normalize)", lambda k, c: k("lp_normalize")(c(x), 2.0)),
        Case("shortcut alpha/beta (Darknet)", lambda k, c: k("shortcut")(c(x), [c(x[:, :4]), c(ps[:, :8])], 0.5, 2.0)),
        Case("torch_padding + torch_narrow",
             lambda k, c: k("torch_narrow")(k("torch_padding")(c(x), 2, 3, 5, 1.0), 3, 2, 9)),
        Case("concat", lambda k, c: k("concat")([c(x), c(x[:, :2])], axis=1)),
        Case("permute", lambda k, c: k("permute")(c(x), (0, 2, 3, 1))),
        Case("pad reflect", lambda k, c: k("pad")(c(x), ((0, 0), (0, 0), (2, 3), (1, 4)), mode="reflect")),
        Case("resize_bilinear align_corners", lambda k, c: k("resize_bilinear")(c(x), (33, 40), align_corners=True)),
        Case("eltwise sum coeffs", lambda k, c: k("eltwise")([c(x), c(x * 2)], operation="sum", coeffs=(0.5, -1.0))),
        Case("shuffle_channel", lambda k, c: k("shuffle_channel")(c(x), 3)),
        Case("iou", lambda k, c: k("iou")(c(boxes), c(boxes))),
        Case("prior_box", lambda k, c: k("prior_box")((5, 5), (40, 40), min_sizes=(8.0,), max_sizes=(16.0,),
                                                      aspect_ratios=(2.0,), flip=True, clip=True,
                                                      variance=(0.1, 0.1, 0.2, 0.2))),
        Case("gram_matrix", lambda k, c: k("gram_matrix")(c(feat)), TOL_LONG),
        Case("nms (indices equal)", lambda k, c: k("nms")(c(boxes), c(scores), 0.3).astype(np.float64)),
        Case("roi_pool 7x7 (Fast R-CNN)", lambda k, c: k("roi_pool")(c(x), c(rois), (7, 7), 0.0625)),
        Case("psroi_pool 3x3 (R-FCN)", lambda k, c: k("psroi_pool")(c(ps), c(rois), 2, 3, 0.0625)),
        Case("proposal (RPN, cv2 layout)", lambda k, c: k("proposal")(c(rpn), c(deltas), np.array([[80, 96, 1.0]]),
                                                                      post_nms_topn=50, quirks="cv2")),
        # kernels added for ONNX (several fast names are their reference: see each module's docstring)
        Case("broadcast_binary div", lambda k, c: k("broadcast_binary")("div", [c(x), c(c6a.reshape(6, 1, 1) + 2)])),
        Case("unary softplus", lambda k, c: k("unary")("softplus", c(x * 10))),
        Case("clip_range", lambda k, c: k("clip_range")(c(x), -0.5, 0.25)),
        Case("gemm transB", lambda k, c: k("gemm")(c(x.reshape(2, -1)), c(fc), c(c6a[:1]), trans_b=True),
             TOL_LONG),
        Case("matmul batched", lambda k, c: k("matmul")(c(x), c(x[0, 0].T))),
        Case("strided_slice", lambda k, c: k("strided_slice")(c(x), (0, 5, 1, 18), (2, -1, 17, 0), (1, -2, 3, -4))),
        Case("gather", lambda k, c: k("gather")(c(x), np.array([[3, 1], [0, 5]]), 1)),
        Case("depth_to_space CRD", lambda k, c: k("depth_to_space")(c(x[:, :4]), 2, "CRD")),
        Case("lrn_onnx size 4", lambda k, c: k("lrn_onnx")(c(x), 4, 1e-2, 0.75, 2.0)),
        Case("max_pool2d indices + max_unpool2d",
             lambda k, c: k("max_unpool2d")(*k("max_pool2d")(c(x), (2, 2), (2, 2), 0, return_indices=True),
                                            (17, 19))),
    ]


def run(verbose: bool = True) -> list[tuple[str, float, float, bool]]:
    """Run every case; return (name, rel error, seconds, ok) rows and print a table."""
    from refnet import kernels as K

    def fast(name):
        return getattr(K, name)

    def ref(name):
        return getattr(K, name + "_reference")

    rows = []
    if verbose:
        print(f"{'kernel':38s} {'max rel err f32 vs f64':>24s} {'time':>8s}  verdict")
    for case in _cases():
        t0 = time.perf_counter()
        try:
            got = case.run(fast, lambda v: np.asarray(v, np.float32))
            want = case.run(ref, lambda v: np.asarray(v, np.float64))
            got_l = got if isinstance(got, (tuple, list)) else [got]
            want_l = want if isinstance(want, (tuple, list)) else [want]
            err = 0.0
            for g, w in zip(got_l, want_l):
                g = np.asarray(g, np.float64)
                w = np.asarray(w, np.float64)
                if g.shape != w.shape:
                    raise AssertionError(f"shape {g.shape} vs {w.shape}")
                scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-30)
                err = max(err, float(np.max(np.abs(g - w))) / scale if w.size else 0.0)
            ok = err <= case.tol
        except Exception as e:  # noqa: BLE001 - a self-check reports, it does not crash
            err, ok = float("nan"), False
            if verbose:
                print(f"{case.name:38s} {'ERROR':>24s}  {type(e).__name__}: {e}")
            rows.append((case.name, err, time.perf_counter() - t0, ok))
            continue
        dt = time.perf_counter() - t0
        rows.append((case.name, err, dt, ok))
        if verbose:
            print(f"{case.name:38s} {err:24.3e} {dt:7.2f}s  {'ok' if ok else 'FAIL'} (tol {case.tol:g})")
    if verbose:
        bad = sum(1 for r in rows if not r[3])
        print(f"self-check: {len(rows) - bad}/{len(rows)} kernels within tolerance"
              + ("" if not bad else f"; {bad} FAILED"))
    return rows
