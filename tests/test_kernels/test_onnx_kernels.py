"""The kernels added for ONNX (elementwise, linalg, layout, window, resize, reduce, normalize,
roi): fast twins against their references (where they are separate code), and each against an
independent oracle -- refnet's Caffe-side kernels where the rules coincide (checked here), a
brute-force loop written in this file, or values worked out by hand. (The onnx node test cases
are the further oracle: tests/onnx_reader/test_onnx_conformance.py.)"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refnet.kernels as K

R = np.random.default_rng(7)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b), initial=0.0)) / max(float(np.max(np.abs(b), initial=0.0)), 1e-30)


shapes = st.sampled_from([((2, 3, 4), (3, 1)), ((1, 3, 1, 5), (2, 1, 4, 1)), ((4,), (2, 3, 4)), ((), (3,)),
                          ((2, 1), (1, 2))])


@given(shapes, st.sampled_from(["add", "sub", "mul", "div", "max", "min", "mean", "pow"]),
       st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_broadcast_binary_fast_matches_reference_and_numpy(sh, op, seed):
    r = np.random.default_rng(seed)
    a = r.uniform(0.5, 2, sh[0])
    b = r.uniform(0.5, 2, sh[1])
    oracle = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b, "max": np.fmax(a, b), "min": np.fmin(a, b),
              "mean": (a + b) / 2, "pow": a ** b}[op]
    assert _rel(K.broadcast_binary_reference(op, [a, b]), oracle) < 1e-15
    assert _rel(K.broadcast_binary(op, [a.astype(np.float32), b.astype(np.float32)]), oracle) < 1e-6


def test_unary_by_formula():
    x = np.linspace(-3, 3, 13)
    assert _rel(K.unary_reference("softplus", x), np.log1p(np.exp(x))) < 1e-15
    assert _rel(K.unary("softplus", np.array([-800.0, 0.0, 800.0])), [0.0, np.log(2), 800.0]) < 1e-15
    assert _rel(K.unary_reference("hard_swish", x), x * np.clip(x / 6 + 0.5, 0, 1)) < 1e-15
    assert _rel(K.unary_reference("hard_sigmoid", x, 0.2, 0.5), np.clip(0.2 * x + 0.5, 0, 1)) < 1e-15
    import math
    assert _rel(K.unary_reference("gelu", x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]) < 1e-15
    assert K.unary_reference("round", np.array([0.5, 1.5, 2.5, -0.5])).tolist() == [0, 2, 2, -0.0]


def test_clip_range_and_prelu_nd():
    x = np.array([-2.0, -0.5, 0.5, 2.0, np.nan])
    for f in (K.clip_range, K.clip_range_reference):
        y = f(x, -1.0, 1.0)
        assert y[:4].tolist() == [-1.0, -0.5, 0.5, 1.0] and np.isnan(y[4])
    slope = np.array([[0.1], [0.2]])
    x2 = np.array([[-1.0, 2.0], [-3.0, 4.0]])
    assert K.prelu_nd(x2, slope).tolist() == [[-0.1, 2.0], [-0.6000000000000001, 4.0]]


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_gemm_twins_against_explicit_sum(ta, tb):
    a, b, c = R.standard_normal((4, 5)), R.standard_normal((5, 3)), R.standard_normal(3)
    A = a.T.copy() if ta else a
    B = b.T.copy() if tb else b
    want = np.array([[sum(a[i, k] * b[k, j] for k in range(5)) * 0.5 + 2.0 * c[j] for j in range(3)]
                     for i in range(4)])
    assert _rel(K.gemm_reference(A, B, c, alpha=0.5, beta=2.0, trans_a=ta, trans_b=tb), want) < 1e-14
    assert _rel(K.gemm(A.astype(np.float32), B.astype(np.float32), c.astype(np.float32), alpha=0.5, beta=2.0,
                       trans_a=ta, trans_b=tb), want) < 1e-6


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_twins_against_numpy(sa, sb):
    a, b = R.standard_normal(sa), R.standard_normal(sb)
    want = np.matmul(a, b)
    assert _rel(K.matmul_reference(a, b), want) < 1e-14
    got = K.matmul(a.astype(np.float32), b.astype(np.float32))
    assert isinstance(got, np.ndarray) and _rel(got, want) < 1e-6


def test_layout_twins():
    x = R.standard_normal((2, 8, 4, 6))
    args = ((0, 7, 3, 0), (2, -1, 0, 6), (1, -2, -1, 2))
    assert np.array_equal(K.strided_slice(x, *args), K.strided_slice_reference(x, *args))
    assert np.array_equal(K.strided_slice(x, *args), x[0:2:1, 7::-2, 3:0:-1, 0:6:2])
    idx = np.array([[3, 0], [7, 7]])
    assert np.array_equal(K.gather_reference(x, idx, 1), K.gather(x, idx, 1))
    assert np.array_equal(K.tile_reference(x[:1, :2], (2, 1, 3, 1)), np.tile(x[:1, :2], (2, 1, 3, 1)))
    for mode in ("DCR", "CRD"):
        d2s = K.depth_to_space(x, 2, mode)
        assert np.array_equal(d2s, K.depth_to_space_reference(x, 2, mode))
        assert np.array_equal(K.space_to_depth(d2s, 2, mode), x)  # the inverse, mode for mode
        assert np.array_equal(K.space_to_depth_reference(d2s, 2, mode), x)


def test_depth_to_space_dcr_by_hand():
    x = np.arange(8.0).reshape(1, 8, 1, 1)  # C = 8, b = 2: two output channels of 2x2
    y = K.depth_to_space(x, 2, "DCR")
    assert y[0, 0].tolist() == [[0, 2], [4, 6]] and y[0, 1].tolist() == [[1, 3], [5, 7]]
    y = K.depth_to_space(x, 2, "CRD")
    assert y[0, 0].tolist() == [[0, 1], [2, 3]] and y[0, 1].tolist() == [[4, 5], [6, 7]]


def _pool_oracle(x, mode, k, s, d, pads, out, cip):
    """Brute force: every output element looks at every kernel position one by one."""
    n, c, h, w = x.shape
    y = np.zeros((n, c) + tuple(out))
    for i, j in itertools.product(range(out[0]), range(out[1])):
        vals, cnt_in, cnt_pad = [], 0, 0
        for a, b in itertools.product(range(k[0]), range(k[1])):
            hh, ww = i * s[0] - pads[0] + a * d[0], j * s[1] - pads[1] + b * d[1]
            if -pads[0] <= hh < h + pads[2] and -pads[1] <= ww < w + pads[3]:
                cnt_pad += 1
            if 0 <= hh < h and 0 <= ww < w:
                vals.append(x[:, :, hh, ww])
                cnt_in += 1
        if mode == "max":
            y[:, :, i, j] = np.max(vals, axis=0)
        else:
            y[:, :, i, j] = np.sum(vals, axis=0) / (cnt_pad if cip else cnt_in)
    return y


@pytest.mark.parametrize("mode,k,s,d,pads,out,cip", [
    ("max", (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (4, 5), False),
    ("max", (2, 3), (1, 2), (2, 1), (0, 1, 1, 0), (5, 4), False),
    ("avg", (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (4, 5), True),
    ("avg", (3, 2), (2, 3), (1, 1), (0, 1, 2, 0), (4, 3), False),
    ("avg", (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (4, 4), True),  # ceil: last window past the end
])
def test_pool_nd_against_brute_force(mode, k, s, d, pads, out, cip):
    x = R.standard_normal((2, 3, 7, 8))
    y = K.pool_nd(x, mode, k, s, d, pads, out, count_include_pad=cip)
    assert _rel(y, _pool_oracle(x, mode, k, s, d, pads, out, cip)) < 1e-14


def test_max_pool_indices_and_unpool_round_trip():
    x = R.standard_normal((2, 3, 6, 6))
    y, idx = K.pool_nd(x, "max", (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), (3, 3), with_indices=True)
    assert np.array_equal(x.reshape(-1)[idx], y)  # indices flatten the whole NCHW tensor
    back = K.max_unpool_nd(y, idx, x.shape)
    assert np.array_equal(back[back != 0], y.reshape(-1)[np.argsort(idx.reshape(-1))][y.reshape(-1)[
        np.argsort(idx.reshape(-1))] != 0])


def test_resize_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y = K.resize_nd(x, (1, 1, 4, 4), (1, 1, 2, 2), mode="linear", coordinate_transformation_mode="align_corners")
    assert _rel(y[0, 0, 0], [1, 4 / 3, 5 / 3, 2]) < 1e-15
    y = K.resize_nd(x, (1, 1, 4, 4), (1, 1, 2, 2), mode="linear", coordinate_transformation_mode="half_pixel")
    assert _rel(y[0, 0, 0], [1, 1.25, 1.75, 2]) < 1e-15
    y = K.resize_nd(x, (1, 1, 4, 4), (1, 1, 2, 2), mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
    assert y[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
                                 "tf_half_pixel_for_nn", "half_pixel_symmetric"])
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("out,scales", [((1, 2, 10, 14), (1, 1, 2.0, 2.0)), ((1, 2, 15, 4), (1, 1, 3.0, 4 / 7)),
                                        ((1, 2, 3, 9), (1, 1, 0.6, 9 / 7)), ((1, 2, 20, 21), (1, 1, 4.0, 3.0)),
                                        ((1, 2, 10, 56), (1, 1, 2.0, 8.0))])
def test_resize_nearest_copies_what_the_one_hot_product_selects(ctm, nearest_mode, out, scales):
    """Nearest copies its inputs (repeat for k-fold upsampling, else a gather): the values the
    spec's one-hot weight matrices select, computed here by brute force from resize_weights (an
    explicit loop over outputs), bit for bit, in float32 and float64; an inf stays where a
    nearest copy puts it (the matrix product made NaN of 0 * inf in the other outputs of its
    row; onnxruntime agrees: tests/onnx_reader/test_onnx_reader.py)."""
    x = R.standard_normal((1, 2, 5, 7))
    want = np.empty(out)
    wh, _ = K.resize_weights(5, out[2], scales[2], "nearest", ctm, nearest_mode)
    ww, _ = K.resize_weights(7, out[3], scales[3], "nearest", ctm, nearest_mode)
    for i, j in itertools.product(range(out[2]), range(out[3])):
        want[:, :, i, j] = x[:, :, int(np.argmax(wh[i])), int(np.argmax(ww[j]))]
    from refnet.kernels._lazyjit import numpy_kernels

    for dt in (np.float64, np.float32):
        for fn in (K.resize_nd, K.resize_nd_reference):  # (the fast one upsamples k-fold in one jitted pass)
            y = fn(x.astype(dt), out, scales, mode="nearest", coordinate_transformation_mode=ctm,
                   nearest_mode=nearest_mode)
            assert y.dtype == dt and y.flags.c_contiguous
            np.testing.assert_array_equal(y, want.astype(dt))
        with numpy_kernels():  # the jitted pass's NumPy twin
            y = K.resize_nd(x.astype(dt), out, scales, mode="nearest", coordinate_transformation_mode=ctm,
                            nearest_mode=nearest_mode)
        np.testing.assert_array_equal(y, want.astype(dt))
    xi = x.copy()
    xi[0, 1, 2, 3] = np.inf
    y = K.resize_nd(xi, out, scales, mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest_mode)
    hits = sum(1 for i, j in itertools.product(range(out[2]), range(out[3]))
               if np.argmax(wh[i]) == 2 and np.argmax(ww[j]) == 3)
    assert not np.isnan(y).any() and np.isinf(y).sum() == hits


def test_resize_linear_matches_the_caffe_side_bilinear():
    x = R.standard_normal((1, 2, 5, 7))
    for ac in (True, False):
        mode = "align_corners" if ac else "pytorch_half_pixel"
        y = K.resize_nd(x, (1, 2, 9, 11), (1, 1, 9 / 5, 11 / 7), mode="linear", coordinate_transformation_mode=mode)
        assert _rel(y, K.resize_bilinear_reference(x, (9, 11), align_corners=ac, half_pixel=not ac)) < 1e-12


def test_reduce_arg_topk():
    x = R.standard_normal((3, 4, 5))
    for kind, f in (("mean", np.mean), ("max", np.max), ("sum", np.sum), ("l2", lambda v, **k: np.sqrt(
            np.sum(v * v, **k)))):
        assert _rel(K.reduce(x, kind, (0, 2), keepdims=False), f(x, axis=(0, 2))) < 1e-14
    assert K.reduce(np.zeros((2, 0)), "max", (1,)).tolist() == [[-np.inf], [-np.inf]]
    t = np.array([[1.0, 3.0, 3.0, 2.0]])
    assert K.arg_reduce(t, "max", 1).tolist() == [[1]]
    assert K.arg_reduce(t, "max", 1, select_last_index=True).tolist() == [[2]]
    v, i = K.topk(t, 3, 1)
    assert v.tolist() == [[3, 3, 2]] and i.tolist() == [[1, 2, 3]]


def test_lrn_onnx_twins_and_caffe_lrn_for_odd_sizes():
    x = R.standard_normal((2, 7, 3, 4))
    for size in (1, 3, 5):
        want = K.lrn_reference(x, size=size, alpha=1e-2, beta=0.75, k=2.0)  # Caffe: same rule for odd sizes
        assert _rel(K.lrn_onnx_reference(x, size, 1e-2, 0.75, 2.0), want) < 1e-14
        assert _rel(K.lrn_onnx(x, size, 1e-2, 0.75, 2.0), want) < 1e-14
    assert _rel(K.lrn_onnx(x, 4, 1e-2, 0.75, 2.0), K.lrn_onnx_reference(x, 4, 1e-2, 0.75, 2.0)) < 1e-14


def test_layer_norm_and_lp_norm_by_formula():
    x = R.standard_normal((2, 3, 4))
    sc, b = R.standard_normal(4), R.standard_normal(4)
    mu = x.mean(-1, keepdims=True)
    want = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * sc + b
    assert _rel(K.layer_norm(x, 2, sc, b), want) < 1e-14
    assert K.lp_norm(np.array([[3.0, 4.0], [0.0, 0.0]]), 1, 2).tolist() == [[0.6, 0.8], [0.0, 0.0]]


def test_nms_and_roi_align_by_hand():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3]]], np.float64)
    scores = np.array([[[0.9, 0.8, 0.7]]])
    assert K.nms_onnx(boxes, scores, 10, 0.5).tolist() == [[0, 0, 0], [0, 0, 2]]
    assert K.nms_onnx(boxes, scores, 1, 0.5).tolist() == [[0, 0, 0]]
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = K.roi_align(x, np.array([[0.0, 0.0, 3.0, 3.0]]), np.array([0]), output_height=1, output_width=1,
                    sampling_ratio=1, half_pixel=False)
    assert y.reshape(-1).tolist() == [x[0, 0, 1, 1] * 0.25 + x[0, 0, 1, 2] * 0.25 + x[0, 0, 2, 1] * 0.25
                                      + x[0, 0, 2, 2] * 0.25]  # one sample at the ROI centre (1.5, 1.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ss", [((2, 3, 4, 5), (3, 1, 1)),   # ONNX per-channel slope on NCHW
                                   ((2, 3, 4, 5), (1,)),        # one slope
                                   ((1, 3, 4, 5), (1, 3, 1, 1)),
                                   ((4, 6), (6,)),              # (N, C)
                                   ((2, 3, 4, 5), (4, 5)),      # other broadcasts: the reference
                                   ((2, 3, 4, 5), (2, 3, 1, 1))])
def test_prelu_nd_fast_against_the_formula(dtype, xs, ss):
    """prelu_nd (one pass over planes for per-channel / single slopes) = x if x >= 0 else slope * x
    computed here per element, NaN and infinities included (up to the sign of a zero)."""
    x = R.standard_normal(xs).astype(dtype)
    x.flat[:3] = (np.nan, -np.inf, np.inf)
    slope = R.uniform(-0.5, 0.5, ss).astype(dtype)
    want = np.empty(xs)
    sb = np.broadcast_to(slope, xs)
    for i in np.ndindex(*xs):
        v = float(x[i])
        want[i] = v if v >= 0 else float(sb[i]) * v
    got = K.prelu_nd(x, slope)
    assert got.dtype == dtype and got.shape == xs
    np.testing.assert_array_equal(got, want.astype(dtype))
    np.testing.assert_array_equal(got, K.prelu_nd_reference(x, slope))
