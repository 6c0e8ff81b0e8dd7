"""Normalisation kernels: fast vs reference, hand-computed cases, cv2.dnn single layers
(LRN, MVN, Normalize), BatchNorm/Scale folding checked through a convolution."""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np
import pytest
from conftest import assert_close, cv2_layer
from hypothesis import given, settings
from hypothesis import strategies as st

import refnet.kernels as K
from refnet.errors import ShapeError
from refnet.kernels import norm as N

HYP = settings(max_examples=25, deadline=None, derandomize=True)
DTYPES = st.sampled_from(["float32", "float64"])
SEEDS = st.integers(0, 2**31 - 1)
nchw = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(1, 7))
any_rank = st.lists(st.integers(1, 5), min_size=2, max_size=5).map(tuple)


def _tol(dt: str) -> str:
    return "f32_vs_f64" if dt == "float32" else "f64_vs_oracle"


def _pair(fast, ref, x, dt, *args, **kw):
    """fast(x in dt) vs ref(same values in float64); returns the fast output."""
    cast = [a.astype(dt) if isinstance(a, np.ndarray) else a for a in args]
    y = fast(x.astype(dt), *cast, **kw)
    r = ref(x.astype(dt).astype(np.float64), *[a.astype(dt).astype(np.float64) if isinstance(
        a, np.ndarray) else a for a in args], **kw)
    assert y.dtype == np.dtype(dt) and y.shape == x.shape
    assert_close(y, r, _tol(dt), fast.__name__)
    return y


# ====================================================================== fast vs reference


@HYP
@given(shape=any_rank, seed=SEEDS, dt=DTYPES, affine=st.booleans())
def test_batch_norm_fast_vs_reference(shape, seed, dt, affine):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.normal(1.0, 2.0, shape)
    mean, var = rng.normal(0, 1, c), rng.uniform(0.05, 4.0, c)
    w, b = (rng.normal(0, 1, c), rng.normal(0, 1, c)) if affine else (None, None)
    args = [mean, var] + ([w, b] if affine else [])
    _pair(N.batch_norm, N.batch_norm_reference, x, dt, *args, eps=1e-3)


@HYP
@given(shape=any_rank, seed=SEEDS, dt=DTYPES, affine=st.booleans(), eps=st.sampled_from([1e-5, 0.5]))
def test_instance_norm_fast_vs_reference(shape, seed, dt, affine, eps):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.normal(0.5, 3.0, shape)
    args = [rng.normal(0, 1, c), rng.normal(0, 1, c)] if affine else []
    _pair(N.instance_norm, N.instance_norm_reference, x, dt, *args, eps=eps)


@HYP
@given(shape=any_rank, seed=SEEDS, dt=DTYPES, nv=st.booleans(), ac=st.booleans(),
       eps=st.sampled_from([1e-9, 0.1]))
def test_mvn_fast_vs_reference(shape, seed, dt, nv, ac, eps):
    x = np.random.default_rng(seed).normal(2.0, 3.0, shape)
    _pair(N.mvn, N.mvn_reference, x, dt, normalize_variance=nv, across_channels=ac, eps=eps)


@HYP
@given(shape=any_rank, seed=SEEDS, dt=DTYPES, asp=st.booleans(), shared=st.booleans(),
       has_scale=st.booleans(), eps=st.sampled_from([1e-10, 0.3]))
def test_l2_normalize_fast_vs_reference(shape, seed, dt, asp, shared, has_scale, eps):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2.0, shape)
    kw = {"across_spatial": asp, "channel_shared": shared, "eps": eps}
    if has_scale:
        sc = rng.uniform(0.5, 20.0, 1 if shared else shape[1])
        _pair(N.l2_normalize, N.l2_normalize_reference, x, dt, sc, **kw)
    else:
        _pair(N.l2_normalize, N.l2_normalize_reference, x, dt, **kw)


@HYP
@given(shape=nchw, seed=SEEDS, dt=DTYPES, size=st.sampled_from([1, 3, 5, 7]),
       region=st.sampled_from(["across", "within"]), k=st.sampled_from([1.0, 2.0]),
       beta=st.sampled_from([0.75, 0.5]))
def test_lrn_fast_vs_reference(shape, seed, dt, size, region, k, beta):
    x = np.random.default_rng(seed).normal(0, 3.0, shape)
    _pair(N.lrn, N.lrn_reference, x, dt, size=size, alpha=0.3, beta=beta, k=k, region=region)


@st.composite
def scale_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    axis = draw(st.integers(0, len(shape) - 1))
    n_axes = draw(st.integers(0, len(shape) - axis))
    neg = draw(st.booleans())
    return shape, (axis - len(shape) if neg else axis), tuple(shape[axis : axis + n_axes])


@HYP
@given(case=scale_case(), seed=SEEDS, dt=DTYPES, with_bias=st.booleans())
def test_scale_and_bias_fast_vs_reference_vs_broadcast(case, seed, dt, with_bias):
    shape, axis, wshape = case
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, shape)
    w, b = rng.normal(0, 2, wshape), rng.normal(0, 2, wshape)
    # independent oracle: explicit broadcasting by index arithmetic
    a = axis % len(shape)
    bshape = (1,) * a + wshape + (1,) * (len(shape) - a - len(wshape))
    xd = x.astype(dt).astype(np.float64)
    wd, bd = w.astype(dt).astype(np.float64), b.astype(dt).astype(np.float64)
    want = xd * wd.reshape(bshape) + (bd.reshape(bshape) if with_bias else 0.0)
    args = (w.astype(dt), b.astype(dt)) if with_bias else (w.astype(dt),)
    y = N.scale(x.astype(dt), *args, axis=axis)
    assert y.dtype == np.dtype(dt)
    assert_close(y, want, _tol(dt), "scale fast")
    assert_close(N.scale_reference(xd, *[q.astype(np.float64) for q in args], axis=axis), want,
                 "f64_vs_oracle", "scale reference")
    yb = N.bias(x.astype(dt), b.astype(dt), axis=axis)
    assert_close(yb, xd + bd.reshape(bshape), _tol(dt), "bias fast")
    assert_close(N.bias_reference(xd, bd, axis=axis), xd + bd.reshape(bshape), "f64_vs_oracle")


# ====================================================================== hand-computed cases


def test_batch_norm_hand_and_batch_statistics(rng):
    x = np.array([[[5.0]], [[-1.0]]]).reshape(2, 1, 1)  # (N=2, C=1, 1)
    mean, var = np.array([1.0]), np.array([3.0])
    for f in (N.batch_norm, N.batch_norm_reference):
        # (x - 1) / sqrt(3 + 1) * 3 + 1
        got = f(x, mean, var, np.array([3.0]), np.array([1.0]), eps=1.0)
        assert_close(got, np.array([7.0, -2.0]).reshape(2, 1, 1), 1e-15, f.__name__)
    # with the batch's own statistics and eps = 0 each channel comes out standardised
    x = rng.normal(3.0, 5.0, (4, 3, 6, 5))
    m, v = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    for f in (N.batch_norm, N.batch_norm_reference):
        y = f(x, m, v, eps=0.0)
        np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
        np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-12)


def test_instance_norm_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0]).reshape(1, 2, 2, 2)
    w, b = np.array([2.0, 3.0]), np.array([0.5, -1.0])
    # channel 0: mean 2.5, biased var 1.25, eps 0.75 -> sqrt(2); channel 1: zero variance
    want0 = (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(2.0) * 2.0 + 0.5
    for f in (N.instance_norm, N.instance_norm_reference):
        y = f(x, w, b, eps=0.75)
        assert_close(y[0, 0].ravel(), want0, 1e-15, f.__name__)
        assert np.all(np.isfinite(y[0, 1])) and np.allclose(y[0, 1], -1.0, atol=1e-12)
        y0 = f(x, eps=0.75)  # no affine
        assert_close(y0[0, 0].ravel(), (np.arange(1.0, 5.0) - 2.5) / math.sqrt(2.0), 1e-15)


def test_mvn_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 8.0]).reshape(1, 2, 1, 4)
    for f in (N.mvn, N.mvn_reference):
        # per channel: ch0 mean 2.5, std sqrt(1.25); Caffe adds eps to the std
        y = f(x, eps=0.5)
        assert_close(y[0, 0, 0], (np.arange(1.0, 5.0) - 2.5) / (math.sqrt(1.25) + 0.5), 1e-15)
        assert_close(y[0, 1, 0], (x[0, 1, 0] - 2.0) / (math.sqrt(12.0) + 0.5), 1e-15)
        # mean only
        assert_close(f(x, normalize_variance=False)[0, 1, 0], x[0, 1, 0] - 2.0, 1e-15)
        # across channels: mean 18/8 = 2.25 over all 8 values
        flat = x.ravel()
        std = math.sqrt(np.mean((flat - 2.25) ** 2))
        assert_close(f(x, across_channels=True, eps=0.0).ravel(), (flat - 2.25) / std, 1e-14)


def test_l2_normalize_hand():
    x = np.array([3.0, 0.0, 4.0, 1.0]).reshape(1, 2, 1, 2)  # channel 0: [3, 0], channel 1: [4, 1]
    for f in (N.l2_normalize, N.l2_normalize_reference):
        # per pixel (over C), eps inside the sqrt: pixel 0 -> sqrt(25 + 11) = 6, pixel 1 -> sqrt(12)
        y = f(x, across_spatial=False, eps=11.0)
        assert_close(y.reshape(2, 2), np.array([[0.5, 0.0], [4 / 6, 1 / math.sqrt(12.0)]]), 1e-15)
        # across spatial: sqrt(9 + 0 + 16 + 1 + 1)
        assert_close(f(x, eps=1.0), x / math.sqrt(27.0), 1e-15)
        # per-channel scale, eps negligible
        y = f(x, np.array([2.0, 10.0]), across_spatial=False, channel_shared=False, eps=0.0)
        assert_close(y.reshape(2, 2), np.array([[1.2, 0.0], [8.0, 10.0]]), 1e-15)
        y = f(x, np.array([20.0]), eps=0.0)  # shared scale (SSD conv4_3_norm style)
        assert_close(y, 20.0 * x / math.sqrt(26.0), 1e-15)
        y = f(x, np.array(20.0), eps=0.0)  # Caffe stores the shared scale as a 0-d blob
        assert_close(y, 20.0 * x / math.sqrt(26.0), 1e-15)
        assert np.all(f(np.zeros((1, 3, 2, 2))) == 0.0)  # eps keeps 0/0 away


def test_lrn_hand_across_with_k():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    for f in (N.lrn, N.lrn_reference):
        # size 3, alpha/size = 1, beta = 1, k = 2: scale = 2 + sum of squares of the neighbours
        y = f(x, size=3, alpha=3.0, beta=1.0, k=2.0, region="across")
        assert_close(y.ravel(), np.array([1 / 7, 2 / 16, 3 / 15]), 1e-15, f.__name__)
        # beta = 0.75 and size 1 (only the channel itself)
        y = f(x, size=1, alpha=0.5, beta=0.75, k=3.0)
        assert_close(y.ravel(), x.ravel() * (3.0 + 0.5 * x.ravel() ** 2) ** -0.75, 1e-15)
        # Caffe's enum spelling is accepted too
        assert_close(f(x, 3, 3.0, 1.0, 2.0, "ACROSS_CHANNELS").ravel(), [1 / 7, 2 / 16, 3 / 15], 1e-15)


def test_lrn_hand_within_ignores_k():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    for f in (N.lrn, N.lrn_reference):
        # size 3, alpha / size^2 = 1, beta = 1: scale = 1 + sum of squares in the 3x3 window
        # (zero padded); Caffe's WITHIN_CHANNEL uses shift 1, never k
        want = np.array([1 / (1 + 5), 2 / (1 + 14), 3 / (1 + 13)])
        for k in (1.0, 2.0, 7.5):
            y = f(x, size=3, alpha=9.0, beta=1.0, k=k, region="within")
            assert_close(y.ravel(), want, 1e-15, f"{f.__name__} k={k}")
        # 2-D window: centre of a 3x3 of ones sees 9 values, a corner 4
        ones = np.ones((1, 1, 3, 3))
        y = f(ones, size=3, alpha=9.0, beta=0.5, region="WITHIN_CHANNEL")
        assert y[0, 0, 1, 1] == pytest.approx(10.0**-0.5, rel=1e-15)
        assert y[0, 0, 0, 0] == pytest.approx(5.0**-0.5, rel=1e-15)


# ====================================================================== cv2.dnn single layers


def _cv2_layer(tmp_path, layer_type: str, params: str, x: np.ndarray) -> np.ndarray:
    layer = f'layer {{ name: "l" type: "{layer_type}" bottom: "data" top: "l" {params} }}'
    return cv2_layer(tmp_path, layer, {"data": x}).astype(np.float64)


def _both_vs(want, fast, ref, x, **kw):
    assert_close(fast(x.astype(np.float32), **kw), want, "vs_cv2", f"{fast.__name__} {kw}")
    assert_close(ref(x.astype(np.float64), **kw), want, "vs_cv2", f"{ref.__name__} {kw}")


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize(("size", "alpha", "beta"), [(5, 1e-4, 0.75), (3, 0.5, 0.75), (7, 2.0, 0.6)])
def test_lrn_vs_cv2_k1(tmp_path, rng, region, size, alpha, beta):
    x = rng.normal(0, 3, (2, 9, 6, 7)).astype(np.float32)
    params = (f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: 1 "
              f"norm_region: {region} }}")
    want = _cv2_layer(tmp_path, "LRN", params, x)
    _both_vs(want, N.lrn, N.lrn_reference, x, size=size, alpha=alpha, beta=beta, k=1.0, region=region)


def test_lrn_cv2_ignores_k_across(tmp_path, rng):
    """Known cv2 deviation (DESIGN.md): cv2's LRN ignores Caffe's k and uses 1. refnet
    follows Caffe, so with k = 2 it differs from cv2 across channels and cv2 equals refnet
    at k = 1. WITHIN_CHANNEL is unaffected: Caffe itself does not use k there."""
    x = rng.normal(0, 3, (1, 6, 4, 5)).astype(np.float32)
    p = "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 norm_region: %s }"
    cv_across = _cv2_layer(tmp_path, "LRN", p % "ACROSS_CHANNELS", x)
    ours_k2 = N.lrn(x, 3, 0.5, 0.75, 2.0, "across")
    assert np.max(np.abs(ours_k2 - cv_across)) / np.max(np.abs(cv_across)) > 0.1
    assert_close(N.lrn(x, 3, 0.5, 0.75, 1.0, "across"), cv_across, "vs_cv2", "cv2 uses k = 1")
    cv_within = _cv2_layer(tmp_path, "LRN", p % "WITHIN_CHANNEL", x)
    assert_close(N.lrn(x, 3, 0.5, 0.75, 2.0, "within"), cv_within, "vs_cv2", "within, k unused")


def _mvn_cv2(tmp_path, x, nv, across, eps):
    params = (f"mvn_param {{ normalize_variance: {str(nv).lower()} "
              f"across_channels: {str(across).lower()} eps: {eps} }}")
    return _cv2_layer(tmp_path, "MVN", params, x)


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize(("nv", "eps"), [(True, 1e-9), (True, 1e-6), (False, 0.25)])
def test_mvn_vs_cv2(tmp_path, rng, across, nv, eps):
    x = rng.normal(1.5, 2.0, (2, 4, 5, 6)).astype(np.float32)
    want = _mvn_cv2(tmp_path, x, nv, across, eps)
    _both_vs(want, N.mvn, N.mvn_reference, x, normalize_variance=nv, across_channels=across, eps=eps)


@pytest.mark.parametrize("across", [False, True])
def test_mvn_cv2_puts_eps_inside_sqrt(tmp_path, rng, across):
    """Known cv2 deviation (found here, OpenCV 4.14): cv2's MVN divides by sqrt(var + eps);
    Caffe's mvn_layer.cpp divides by sqrt(var) + eps. refnet follows Caffe; the two agree
    only when eps is negligible next to the standard deviation (see test_mvn_vs_cv2)."""
    x = rng.normal(1.5, 2.0, (2, 4, 5, 6)).astype(np.float32)
    got = _mvn_cv2(tmp_path, x, True, across, 0.25)
    xd = x.astype(np.float64)
    axes = (1, 2, 3) if across else (2, 3)
    m, v = xd.mean(axis=axes, keepdims=True), xd.var(axis=axes, keepdims=True)
    assert_close(got, (xd - m) / np.sqrt(v + 0.25), "vs_cv2", "cv2 rule")
    ours = N.mvn(x, across_channels=across, eps=0.25)
    assert_close(ours, (xd - m) / (np.sqrt(v) + 0.25), "f32_vs_f64", "Caffe rule")
    assert np.max(np.abs(ours - got)) / np.max(np.abs(got)) > 0.05


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("eps", [1e-10, 0.5])
def test_normalize_vs_cv2_without_scale(tmp_path, rng, across, eps):
    x = rng.normal(0, 1.0, (2, 5, 4, 3)).astype(np.float32)
    params = f"norm_param {{ across_spatial: {str(across).lower()} eps: {eps} }}"
    want = _cv2_layer(tmp_path, "Normalize", params, x)  # no caffemodel: cv2 applies no scale
    _both_vs(want, N.l2_normalize, N.l2_normalize_reference, x, across_spatial=across, eps=eps)


# ====================================================================== folding


def _conv_einsum(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Valid, stride-1 cross-correlation written independently with sliding windows."""
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # N C Ho Wo kh kw
    y = np.einsum("nchwij,ocij->nohw", win, w)
    return y if b is None else y + b[None, :, None, None]


def _convs():
    out = [_conv_einsum]
    conv_ref = getattr(importlib.import_module("refnet.kernels.conv"), "conv2d_reference", None)
    if conv_ref is not None:
        out.append(lambda x, w, b: conv_ref(x, w, b))
    return out


@pytest.mark.parametrize("conv_i", range(len(_convs())))
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
def test_fold_batch_norm_equals_conv_then_bn(rng, conv_i, affine, has_bias):
    conv = _convs()[conv_i]
    x = rng.normal(0, 1, (2, 3, 7, 6))
    w = rng.normal(0, 0.5, (4, 3, 3, 3))
    b = rng.normal(0, 1, 4) if has_bias else None
    mean, var = rng.normal(0, 1, 4), rng.uniform(0.1, 3.0, 4)
    gamma, beta = (rng.normal(0, 2, 4), rng.normal(0, 1, 4)) if affine else (None, None)
    want = N.batch_norm_reference(conv(x, w, b), mean, var, gamma, beta, eps=1e-3)
    wf, bf = N.fold_batch_norm(w, b, mean, var, gamma, beta, eps=1e-3)
    assert wf.shape == w.shape and bf.shape == (4,)
    assert_close(conv(x, wf, bf), want, "f64_vs_oracle", "folded conv")
    # float32 weights: folded in float64 internally, returned as float32
    wf32, bf32 = N.fold_batch_norm(w.astype(np.float32), None if b is None else b.astype(np.float32),
                                   mean.astype(np.float32), var.astype(np.float32),
                                   None if gamma is None else gamma.astype(np.float32),
                                   None if beta is None else beta.astype(np.float32), eps=1e-3)
    assert wf32.dtype == np.float32 and bf32.dtype == np.float32
    assert_close(wf32, wf, "f32_vs_f64")


def test_fold_scale_equals_conv_then_scale_and_linear(rng):
    x = rng.normal(0, 1, (2, 3, 5, 5))
    w, b = rng.normal(0, 0.5, (4, 3, 1, 1)), rng.normal(0, 1, 4)
    g, beta = rng.normal(0, 2, 4), rng.normal(0, 1, 4)
    y = _conv_einsum(x, w, b)
    wf, bf = N.fold_scale(w, b, g, beta)
    assert_close(_conv_einsum(x, wf, bf), N.scale_reference(y, g, beta), "f64_vs_oracle")
    wf, bf = N.fold_scale(w, None, g)
    assert_close(_conv_einsum(x, wf, bf), N.scale_reference(_conv_einsum(x, w, None), g), "f64_vs_oracle")
    # linear layer (N_out, K): y = v @ W.T + b, then BN over the features
    v = rng.normal(0, 1, (5, 7))
    wl, bl = rng.normal(0, 1, (3, 7)), rng.normal(0, 1, 3)
    m, s = rng.normal(0, 1, 3), rng.uniform(0.5, 2, 3)
    wlf, blf = N.fold_batch_norm(wl, bl, m, s)
    assert_close(v @ wlf.T + blf, N.batch_norm_reference(v @ wl.T + bl, m, s), "f64_vs_oracle")


# ====================================================================== edge cases, bad input

ALL_OPS = [
    ("batch_norm", lambda f, x: f(x, np.zeros(3, x.dtype), np.ones(3, x.dtype))),
    ("instance_norm", lambda f, x: f(x)),
    ("mvn", lambda f, x: f(x)),
    ("l2_normalize", lambda f, x: f(x, across_spatial=False)),
    ("lrn", lambda f, x: f(x, 3, 0.5, 0.75, 2.0, "across")),
    ("scale", lambda f, x: f(x, np.full(3, 2.0, x.dtype))),
    ("bias", lambda f, x: f(x, np.full(3, 2.0, x.dtype))),
]


@pytest.mark.parametrize(("name", "call"), ALL_OPS, ids=[o[0] for o in ALL_OPS])
@pytest.mark.parametrize("impl", ["", "_reference"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_nan_in_nan_out(name, call, impl, dt):
    f = getattr(N, name + impl)
    x = np.arange(2 * 3 * 4 * 5, dtype=dt).reshape(2, 3, 4, 5) / 10
    x[1, 2, 3, 4] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = call(f, x)
    assert y.dtype == dt and y.shape == x.shape
    assert np.isnan(y[1, 2, 3, 4])
    assert np.all(np.isfinite(y[0]))  # the other sample is untouched by the NaN


@pytest.mark.parametrize("impl", ["", "_reference"])
def test_zero_variance_is_finite(impl):
    x = np.full((2, 3, 4, 4), 0.1, np.float32)
    x[1, 1] = np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4)
    for y in (getattr(N, "instance_norm" + impl)(x),
              getattr(N, "mvn" + impl)(x),
              getattr(N, "mvn" + impl)(x, across_channels=True),
              getattr(N, "instance_norm" + impl)(x, np.ones(3, np.float32), np.full(3, 0.5, np.float32))):
        assert np.all(np.isfinite(y))
    y = getattr(N, "instance_norm" + impl)(x)
    assert np.max(np.abs(y[0])) < 1e-3  # constant planes normalise to ~0 (eps 1e-5 guards)


@pytest.mark.parametrize("impl", ["", "_reference"])
def test_bad_input(impl):
    def g(name):
        return getattr(N, name + impl)

    x = np.zeros((2, 3, 4, 5), np.float32)
    c3 = np.ones(3, np.float32)
    with pytest.raises(ShapeError, match=r"mean.*\(3,\).*\(4,\)"):
        g("batch_norm")(x, np.ones(4, np.float32), c3)
    with pytest.raises(TypeError, match="var"):
        g("batch_norm")(x, c3, np.ones(3))
    with pytest.raises(ShapeError, match="rank"):
        g("instance_norm")(np.zeros(5, np.float32))
    with pytest.raises(ShapeError, match=r"weight.*\(4, 5\)"):
        g("scale")(x, np.ones((4, 4), np.float32), axis=2)
    with pytest.raises(ShapeError, match="bias"):
        g("scale")(x, c3, np.ones(4, np.float32))
    with pytest.raises(ShapeError, match="axis"):
        g("bias")(x, c3, axis=4)
    with pytest.raises(ShapeError, match="scale"):
        g("l2_normalize")(x, c3)  # channel_shared needs one value
    with pytest.raises(ShapeError, match="scale"):
        g("l2_normalize")(x, np.ones(1, np.float32), channel_shared=False)
    with pytest.raises(ValueError, match="odd"):
        g("lrn")(x, size=4)
    with pytest.raises(ValueError, match="region"):
        g("lrn")(x, region="sideways")
    with pytest.raises(ShapeError, match="4-D"):
        g("lrn")(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        g("mvn")(np.zeros((2, 3, 4), np.int64))


def test_fold_bad_input():
    w = np.ones((4, 3, 1, 1), np.float32)
    with pytest.raises(ShapeError, match=r"mean.*\(4,\).*\(3,\)"):
        N.fold_batch_norm(w, None, np.zeros(3), np.ones(4))
    with pytest.raises(ShapeError, match="gamma"):
        N.fold_scale(w, None, np.ones(5))
    with pytest.raises(TypeError, match="weight"):
        N.fold_scale([1.0], None, np.ones(1))


def test_package_exports():
    for name in N.__all__:
        assert getattr(K, name) is getattr(N, name)


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize(("nv", "eps"), [(True, 1e-9), (True, 0.25), (False, 0.25)])
def test_mvn_cv2_kernel_vs_cv2(tmp_path, rng, across, nv, eps):
    """The cv2 rule's twins (quirks="cv2" MVN) against cv2.dnn's own MVN layer, eps inside the root."""
    x = rng.normal(1.5, 2.0, (2, 4, 5, 6)).astype(np.float32)
    want = _mvn_cv2(tmp_path, x, nv, across, eps)
    _both_vs(want, N.mvn_cv2, N.mvn_cv2_reference, x, normalize_variance=nv, across_channels=across, eps=eps)
    assert N.mvn_cv2(np.zeros((0, 3, 2, 2), np.float32)).shape == (0, 3, 2, 2)
