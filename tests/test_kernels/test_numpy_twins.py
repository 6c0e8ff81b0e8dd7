"""NumPy twins of the jitted helpers (refnet.kernels._numpy_twins, issue 17): every public fast
kernel they serve, run inside ``numpy_kernels()``, against the same kernel on numba (equal, or
equal to float32 rounding where the twin sums in another order) and against the ``_reference``
kernels (the independent float64 oracle). Shapes cover strides, pads, dilations, channel
multipliers, ceil-mode windows past the input, every fused activation and NaN."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import assert_close

import refnet.kernels as K
import refnet.kernels.conv as C
import refnet.kernels.detection as D
import refnet.kernels.norm as N
import refnet.kernels.pool as P
from refnet.kernels._lazyjit import load_numba, numpy_kernels, numpy_kernels_on

RNG = np.random.default_rng(17)


@pytest.fixture(autouse=True)
def _own_rng(request, monkeypatch):
    """Each test draws from its own generator, seeded from its name: the draws do not depend on
    which tests of this module ran before it in the same process (pytest -n 2 distributes them)."""
    import zlib

    monkeypatch.setitem(globals(), "RNG", np.random.default_rng(zlib.crc32(request.node.nodeid.encode())))
# compiled numba sums the general depthwise kernel's border columns in float64 (the twin does
# too); run as plain Python (NUMBA_DISABLE_JIT=1, CI) that kernel sums them in float32
COMPILED = os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")

ACTS = [(None, 0.0), ("relu", 0.0), ("relu", 0.1), ("prelu", None), ("relu6", 0.0)]


def _both(fn, *args, **kw):
    with numpy_kernels():
        assert numpy_kernels_on()
        a = fn(*args, **kw)
    assert not numpy_kernels_on()
    load_numba()  # (some twins also serve calls outside numpy_kernels() while numba is not loaded)
    with numpy_kernels(False):
        b = fn(*args, **kw)
    return a, b


def _act_kw(act, slope, co):
    if act == "prelu":
        return {"activation": "prelu", "negative_slope": RNG.uniform(-0.5, 0.5, co).astype(np.float32)}
    return {"activation": act, "negative_slope": slope}


def _ref_act(y, act, slope):
    if act is None:
        return y
    if act == "relu6":
        return np.clip(y, 0, 6)
    s = np.asarray(slope, np.float64).reshape(1, -1, 1, 1) if act == "prelu" else slope
    return np.where(y > 0, y, y * s)


CONV_CASES = [
    # (x shape, w shape, stride, pad, dilation, groups, algorithm)
    ((1, 3, 11, 13), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "im2col"),
    ((2, 4, 12, 9), (6, 4, 5, 3), (2, 1), (2, 0, 1, 1), (1, 2), 1, "im2col"),
    ((1, 2, 7, 7), (4, 1, 3, 3), (3, 2), (0, 2, 1, 0), (2, 1), 2, "im2col"),
    ((1, 8, 10, 14), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "winograd"),
    ((2, 5, 9, 7), (3, 5, 3, 3), (1, 1), (0, 1, 2, 0), (1, 1), 1, "winograd"),
    ((1, 8, 13, 14), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "winograd4"),
    ((2, 5, 9, 7), (3, 5, 3, 3), (1, 1), (0, 1, 2, 0), (1, 1), 1, "winograd4"),  # partial tiles
    ((1, 6, 9, 11), (6, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6, "depthwise"),
    ((1, 4, 40, 50), (8, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4, "depthwise"),  # multiplier 2
    ((2, 3, 64, 70), (3, 1, 3, 3), (2, 1), (0, 1, 1, 0), (2, 2), 3, "depthwise"),
    ((1, 3, 12, 10), (6, 1, 5, 3), (1, 2), (2, 1, 2, 1), (1, 1), 3, "depthwise"),
    # planes up to DW_FLAT_MAX_PIXELS with a kernel other than 3x3: the flat kernel (PP-OCR's 5x5)
    ((1, 4, 20, 20), (4, 1, 5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 4, "depthwise"),
    ((2, 3, 17, 13), (6, 1, 5, 5), (2, 2), (2, 1, 3, 2), (2, 1), 3, "depthwise"),
    ((1, 2, 10, 9), (2, 1, 7, 7), (1, 3), (3, 3, 3, 3), (1, 1), 2, "depthwise"),
    ((1, 2, 9, 9), (2, 1, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2, "depthwise"),  # dilated 3x3: the row kernel
    ((2, 6, 9, 8), (2, 6, 3, 3), (1, 2), (1, 1, 0, 1), (1, 1), 1, "direct"),
    ((1, 4, 6, 6), (5, 4, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "gemm1x1"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[-1]}-{c[0]}-{c[1]}")
@pytest.mark.parametrize("act,slope", ACTS, ids=["none", "relu", "leaky", "prelu", "relu6"])
def test_conv_numpy_twin_equals_numba_and_reference(case, act, slope):
    xs, ws, stride, pad, dil, groups, alg = case
    x = RNG.normal(0, 1, xs).astype(np.float32)
    w = RNG.normal(0, 0.5, ws).astype(np.float32)
    b = RNG.normal(0, 0.5, ws[0]).astype(np.float32)
    kw = _act_kw(act, slope, ws[0])
    plan = C.conv2d_plan(xs, w, b, stride=stride, pad=pad, dilation=dil, groups=groups, algorithm=alg, **kw)
    got, fast = _both(plan, x)
    ref = _ref_act(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                      stride=stride, pad=pad, dilation=dil, groups=groups),
                   act, kw["negative_slope"])
    assert_close(got, ref, "f32_vs_f64")
    if alg in ("direct", "winograd4") or (alg == "depthwise" and not COMPILED):  # another sum order: float32 rounding
        assert_close(got, fast, "f32_vs_f64")
    else:
        np.testing.assert_array_equal(got, fast)


def test_conv_numpy_twin_nan_propagates():
    x = RNG.normal(0, 1, (1, 8, 9, 9)).astype(np.float32)
    x[0, 2, 4, 4] = np.nan
    for alg, w in (("winograd", RNG.normal(0, 1, (8, 8, 3, 3))), ("winograd4", RNG.normal(0, 1, (8, 8, 3, 3))),
                   ("im2col", RNG.normal(0, 1, (8, 8, 3, 3))),
                   ("depthwise", RNG.normal(0, 1, (8, 1, 3, 3)))):
        w = w.astype(np.float32)
        plan = C.conv2d_plan(x.shape, w, None, pad=(1, 1, 1, 1), groups=8 if alg == "depthwise" else 1,
                             algorithm=alg, activation="relu", negative_slope=0.1)
        got, fast = _both(plan, x)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(fast))
        assert np.isnan(got).any()


@pytest.mark.parametrize("stride,dil", [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((1, 2), (2, 1))])
def test_depthwise_border_columns_nonfinite_bit_exact(stride, dil):
    """The general 3x3 depthwise kernel (planes over DW_FLAT_MAX_PIXELS) sums its border
    columns from ``row[0] * 0``: an inf or NaN at a row's start makes them NaN, in the twin too."""
    x = RNG.normal(0, 1, (1, 4, 70, 72)).astype(np.float32)
    x[0, 1, 10, 0] = np.inf
    x[0, 2, 33, 0] = np.nan
    x[0, 3, 50, 40] = -np.inf
    w = RNG.normal(0, 1, (8, 1, 3, 3)).astype(np.float32)
    b = RNG.normal(0, 1, 8).astype(np.float32)
    assert 70 * 72 > C.DW_FLAT_MAX_PIXELS
    plan = C.conv2d_plan(x.shape, w, b, stride=stride, pad=(1, 1, 1, 1), dilation=dil, groups=4,
                         algorithm="depthwise", activation="relu", negative_slope=0.2)
    got, fast = _both(plan, x)
    if COMPILED:
        np.testing.assert_array_equal(got, fast)
    else:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(fast))
        assert_close(np.nan_to_num(got), np.nan_to_num(fast), "f32_vs_f64")
    assert np.isnan(got).any() and np.isfinite(got).any()


@pytest.mark.parametrize("xs,size,beta,k", [
    ((1, 7, 5, 6), 5, 0.75, 1.0),
    ((2, 4, 3, 3), 7, 0.75, 2.0),  # window wider than the channels
    ((1, 9, 4, 4), 3, 0.6, 1.5),
])
def test_lrn_across_numpy_twin(xs, size, beta, k):
    x = RNG.normal(0, 3, xs).astype(np.float32)
    x.flat[5] = np.nan
    got, fast = _both(N.lrn, x, size, 0.3, beta, k)
    if beta == 0.75:
        np.testing.assert_array_equal(got, fast)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(fast))
    np.testing.assert_allclose(got, fast, rtol=2e-7)
    ref = N.lrn_reference(x.astype(np.float64), size, 0.3, beta, k)
    np.testing.assert_allclose(got, ref, rtol=2e-6)


@pytest.mark.parametrize("xs,k,s,p,ceil", [
    ((1, 3, 10, 11), (3, 3), (2, 2), (0, 0, 0, 0), True),
    ((2, 4, 9, 9), (2, 2), (2, 2), (1, 1, 1, 1), True),
    ((1, 2, 7, 12), (3, 2), (1, 3), (1, 0, 1, 0), False),
    ((1, 1, 5, 5), (1, 1), (2, 2), (0, 0, 0, 0), True),
    ((1, 2, 6, 6), (2, 2), (3, 3), (0, 0, 0, 0), True),  # a ceil-mode window past the input
    ((1, 3, 15, 20), (2, 2), (2, 2), (0, 0, 0, 0), True),  # 2x2/2 kernel, last row clipped
    ((2, 2, 8, 9), (2, 2), (2, 2), (0, 0, 0, 0), True),  # 2x2/2 kernel, last column clipped
])
def test_max_pool_numpy_twin(xs, k, s, p, ceil):
    x = RNG.normal(0, 1, xs).astype(np.float32)
    x.flat[3] = np.nan
    x.flat[7] = -np.inf
    got, fast = _both(P.max_pool, x, k, s, p, ceil_mode=ceil)
    np.testing.assert_array_equal(got, fast)
    ref = P.max_pool_reference(x.astype(np.float64), k, s, p, ceil_mode=ceil)
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("xs,k,s,d,pads,out", [
    ((1, 3, 11, 11), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (5, 5)),
    ((2, 2, 9, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (9, 8)),
    ((1, 2, 7, 9), (2, 3), (3, 2), (2, 1), (1, 0, 2, 2), (3, 5)),  # windows past the end
])
def test_onnx_max_pool_nd_numpy_twin(xs, k, s, d, pads, out):
    """ONNX MaxPool (pool_nd's 2-D kernel): the twin equals numba and the reference (NaN never
    wins, padding-only windows give -inf)."""
    x = RNG.normal(0, 1, xs).astype(np.float32)
    x.flat[3] = np.nan
    x.flat[7] = -np.inf
    got, fast = _both(K.pool_nd, x, "max", k, s, d, pads, out)
    np.testing.assert_array_equal(got, fast)
    np.testing.assert_array_equal(got, K.pool_nd_reference(x, "max", k, s, d, pads, out))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(13, 13), (7, 7), (2, 3), (1, 1), (4, 4)])  # 169, 49, 6, 1, 16 per plane
def test_global_average_pool_nd_numpy_twin(dtype, hw):
    """pool_nd's global average (8 interleaved float64 partial sums per plane): twin = numba to
    rounding, both = the float64 mean rounded once, into ``into`` too; NaN / inf propagate."""
    x = RNG.normal(0, 1, (2, 5) + hw).astype(dtype)
    x[1, 2].flat[0] = np.nan
    x[0, 3].flat[-1] = np.inf
    args = (x, "avg", hw, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    got, fast = _both(K.pool_nd, *args)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    assert fast.dtype == dtype and fast.shape == (2, 5, 1, 1)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(want))
    np.testing.assert_allclose(fast, want, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    np.testing.assert_allclose(got, fast, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    into = np.full((2, 5, 1, 1), 7.0, dtype)
    assert K.pool_nd(*args, into=into) is into
    np.testing.assert_array_equal(into, fast)


@pytest.mark.parametrize("alg", ["gemm1x1", "im2col"])
@pytest.mark.parametrize("act,slope", ACTS, ids=["none", "relu", "leaky", "prelu", "relu6"])
def test_conv_residual_numpy_twin(alg, act, slope):
    """The residual epilogue (refnet.runtime.fusion's conv + add + activation): twin = numba,
    and the float64 formula."""
    xs, ws = (1, 4, 9, 8), (6, 4, 1, 1) if alg == "gemm1x1" else (6, 4, 3, 3)
    x = RNG.normal(0, 1, xs).astype(np.float32)
    w = RNG.normal(0, 0.5, ws).astype(np.float32)
    b = RNG.normal(0, 0.5, ws[0]).astype(np.float32)
    kw = _act_kw(act, slope, ws[0])
    plan = C.conv2d_plan(xs, w, b, stride=2, algorithm=alg, residual=True, **kw)
    r = RNG.normal(0, 1, plan.y_shape).astype(np.float32)
    got, fast = _both(plan, x, residual=r)
    np.testing.assert_array_equal(got, fast)
    y = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride=2)
    assert_close(got, _ref_act(y + r, act, kw["negative_slope"]), "f32_vs_f64")


@pytest.mark.parametrize("eta", [1.0, 0.7])
def test_nms_numpy_twin(eta):
    xy = RNG.uniform(0, 50, (300, 2))
    wh = RNG.uniform(1, 30, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[5, 0] = np.nan
    scores = RNG.uniform(0, 1, 300).astype(np.float32)
    got, fast = _both(D.nms, boxes, scores, 0.4, 0.1, None, eta)
    np.testing.assert_array_equal(got, fast)
    np.testing.assert_array_equal(got, D.nms_reference(boxes, scores, 0.4, 0.1, None, eta))
    cls = RNG.integers(0, 3, 300)
    got, fast = _both(D.batched_nms, boxes, scores, cls, 0.5, 0.2, 100)
    np.testing.assert_array_equal(got, fast)
    np.testing.assert_array_equal(got, D.batched_nms_reference(boxes, scores, cls, 0.5, 0.2, 100))


def test_detection_output_numpy_twin():
    p = 200
    c = RNG.uniform(0.1, 0.9, (p, 2))
    s = RNG.uniform(0.05, 0.3, (p, 2))
    priors = np.stack([np.concatenate([c - s / 2, c + s / 2], 1).reshape(-1),
                       np.full(4 * p, 0.1)]).reshape(1, 2, 4 * p).astype(np.float32)
    loc = RNG.normal(0, 0.5, (1, 4 * p)).astype(np.float32)
    conf = RNG.uniform(0, 1, (1, 3 * p)).astype(np.float32)
    kw = dict(num_classes=3, nms_threshold=0.45, top_k=100, keep_top_k=50, confidence_threshold=0.3)
    got, fast = _both(D.detection_output, loc, conf, priors, **kw)
    np.testing.assert_array_equal(got, fast)
    assert_close(got, D.detection_output_reference(loc, conf, priors, **kw), "f32_vs_f64")


@pytest.mark.parametrize("rule", sorted(D._RULE_CODE))
@pytest.mark.parametrize("matrix", [True, False])
def test_greedy_nms_twin_every_rule(rule, matrix, monkeypatch):
    """The NMS twin against the jitted loop on every overlap rule, both of its paths (overlap
    matrix, one row per kept box), with NaN, inverted and zero-area boxes, classes and a limit."""
    import refnet.kernels._numpy_twins as T

    monkeypatch.setattr(T, "_NMS_MATRIX_MAX", 10**6 if matrix else 0)
    xy = RNG.integers(0, 20, (150, 2)).astype(np.float64)
    wh = RNG.integers(-2, 12, (150, 2)).astype(np.float64)  # some inverted, some empty
    boxes = np.ascontiguousarray(np.concatenate([xy, xy + wh], 1))
    boxes[7, 2] = np.nan
    boxes[20] = boxes[21]  # identical boxes
    order = RNG.permutation(150)[:120].astype(np.int64)
    cls = RNG.integers(0, 2, 150).astype(np.int64)
    load_numba()  # the oracle is the jitted loop, not the twin serving calls while numba is unloaded
    for thr, limit in ((0.3, 121), (0.6, 121), (0.5, 9)):
        want = D._greedy_nms_jit(boxes, order, cls, thr, 1.0, D._RULE_CODE[rule], limit)
        got = D._greedy_nms_jit.numpy(boxes, order, cls, thr, 1.0, D._RULE_CODE[rule], limit)
        np.testing.assert_array_equal(got, want)


def test_twin_serial_follows_the_mode():
    """``Twin.serial`` (taken by code that hands blocks of a call to other threads) is the
    NumPy twin inside numpy_kernels() and the serial numba build outside it."""
    with numpy_kernels():
        assert C._im2col.serial is C._im2col.numpy
    assert C._im2col.serial is C._im2col._serial


def test_nms_twin_serves_calls_while_numba_is_unloaded():
    """Outside numpy_kernels(), NMS of up to _NMS_MATRIX_MAX candidates (eta 1) uses the twin
    while numba is not loaded (a small net's post-processing then needs no numba either)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from refnet.kernels import nms\n"
            "r = np.random.default_rng(0); xy = r.uniform(0, 50, (200, 2))\n"
            "b = np.concatenate([xy, xy + r.uniform(1, 20, (200, 2))], 1).astype(np.float32)\n"
            "k = nms(b, r.uniform(0, 1, 200).astype(np.float32), 0.4)\n"
            "print('numba' in sys.modules, len(k))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    loaded, n = r.stdout.split()
    assert loaded == "False" and int(n) > 0


@pytest.mark.parametrize("act,slope", ACTS, ids=["none", "relu", "leaky", "prelu", "relu6"])
def test_add_act_numpy_twin(act, slope):
    """The fused eltwise sum / add + activation (refnet.kernels.add_act): twin = numba bit for bit
    (NaN and infinities included), and the float64 formula."""
    rng = np.random.default_rng(29)  # not the module's RNG: the other tests' data stay as they were
    a = rng.normal(0, 4, (2, 3, 5, 4)).astype(np.float32)
    b = rng.normal(0, 4, (2, 3, 5, 4)).astype(np.float32)
    a[0, 0, 0, :3] = [np.nan, -np.inf, np.inf]
    s = rng.uniform(-0.5, 0.5, 3).astype(np.float32) if act == "prelu" else slope
    got, fast = _both(K.add_act, a, b, act, s)
    np.testing.assert_array_equal(got, fast)
    want = _ref_act(a[1:].astype(np.float64) + b[1:], act, s)
    assert_close(got[1:], want, "f32_vs_f64")


def test_prelu_numpy_twin():
    """The one-pass PReLU (refnet.kernels.prelu): twin = numba bit for bit (NaN, infinities, a
    shared slope), and the float64 formula."""
    rng = np.random.default_rng(31)
    x = rng.normal(0, 4, (2, 3, 5, 4)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, -np.inf, np.inf]
    for s in (rng.uniform(-0.5, 0.5, 3).astype(np.float32), np.array([0.2], np.float32)):
        got, fast = _both(K.prelu, x, s)
        np.testing.assert_array_equal(got, fast)
        assert_close(got[1:], _ref_act(x[1:].astype(np.float64), "prelu", np.broadcast_to(s, (3,))), "f32_vs_f64")
