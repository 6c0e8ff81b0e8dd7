"""Activation kernels: fast vs reference, scipy / hand-computed oracles, cv2.dnn single layers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.special as sps
from conftest import assert_close, cv2_layer
from hypothesis import given, settings
from hypothesis import strategies as st

import refnet.kernels as K
from refnet.errors import ShapeError
from refnet.kernels import activation as A

HYP = settings(max_examples=25, deadline=None, derandomize=True)

# name -> (kwargs, how to draw test inputs: "any" = N(0, 3^2), "pos" = (0.05, 5))
OPS = {
    "relu": ({}, "any"),
    "relu_leaky": ({"negative_slope": 0.1}, "any"),
    "clip": ({"lo": -1.5, "hi": 2.0}, "any"),
    "relu6": ({}, "any"),
    "elu": ({"alpha": 0.7}, "any"),
    "sigmoid": ({}, "any"),
    "tanh": ({}, "any"),
    "bnll": ({}, "any"),
    "abs": ({}, "any"),
    "power": ({"power": 3.0, "scale": 0.5, "shift": 0.25}, "any"),
    "power_frac": ({"power": 0.75, "scale": 2.0, "shift": 0.5}, "pos"),
    "power_sq": ({"power": 2.0, "scale": -1.5, "shift": 1.0}, "any"),
    "exp": ({}, "any"),
    "exp_base": ({"base": 2.0, "scale": 0.5, "shift": 1.0}, "any"),
    "log": ({}, "pos"),
    "log_base": ({"base": 10.0, "scale": 2.0, "shift": 0.5}, "pos"),
    "mish": ({}, "any"),
    "swish": ({}, "any"),
}


def _fns(name: str):
    base = name.split("_")[0]  # "power_frac" -> power, "relu_leaky" -> relu
    return getattr(A, base), getattr(A, base + "_reference")


def _draw(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "pos":
        return rng.uniform(0.05, 5.0, shape)
    return rng.normal(0.0, 3.0, shape)


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


# ------------------------------------------------------------------ fast vs reference


@pytest.mark.parametrize("name", sorted(OPS))
@HYP
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), dt=st.sampled_from(["float32", "float64"]))
def test_fast_matches_reference(name, shape, seed, dt):
    kw, kind = OPS[name]
    fast, ref = _fns(name)
    x64 = _draw(np.random.default_rng(seed), shape, kind)
    x = x64.astype(dt)
    y = fast(x, **kw)
    r = ref(x.astype(np.float64), **kw)
    assert y.dtype == np.dtype(dt) and y.shape == x.shape
    assert ref(x, **kw).dtype == np.dtype(dt)
    # float32 fast vs float64 reference on the same (rounded) input; float64 fast must agree
    # with the reference to rounding
    assert_close(y, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle", f"{name} {dt}")


def test_prelu_fast_vs_reference_and_hand(rng):
    x = rng.normal(0, 2, (2, 4, 3, 5))
    slope = np.array([0.0, 0.1, -0.5, 2.0])
    # hand rule, channel by channel
    want = x.copy()
    for c in range(4):
        neg = x[:, c] < 0
        want[:, c][neg] = slope[c] * x[:, c][neg]
    assert_close(A.prelu_reference(x, slope), want, "f64_vs_oracle", "prelu ref")
    assert_close(A.prelu(x, slope), want, "f64_vs_oracle", "prelu fast f64")
    y32 = A.prelu(x.astype(np.float32), slope.astype(np.float32))
    assert y32.dtype == np.float32
    assert_close(y32, want, "f32_vs_f64", "prelu fast f32")
    # shared slope (1,) on any rank, including 2-D (N, C)
    s1 = np.array([0.25])
    x2 = rng.normal(0, 1, (3, 7))
    assert_close(A.prelu(x2, s1), np.where(x2 > 0, x2, 0.25 * x2), "f64_vs_oracle", "prelu shared")
    assert_close(A.prelu_reference(x2, s1), np.where(x2 > 0, x2, 0.25 * x2), "f64_vs_oracle")
    # a strided view, 1-D, 0-D and empty inputs (the one-pass kernel runs over N * C planes)
    xs = x.astype(np.float32)[:, ::2, :, ::2]
    assert_close(A.prelu(xs, slope[::2].astype(np.float32)), want[:, ::2, :, ::2], "f32_vs_f64", "prelu strided")
    x1 = rng.normal(0, 1, 6)
    assert_close(A.prelu(x1, s1), np.where(x1 > 0, x1, 0.25 * x1), "f64_vs_oracle", "prelu 1-D")
    assert A.prelu(np.array(-2.0), s1) == -0.5
    assert A.prelu(np.zeros((2, 4, 0, 3)), slope).shape == (2, 4, 0, 3)


# ------------------------------------------------------------------ independent oracles


def test_sigmoid_swish_vs_scipy_expit(rng):
    x = np.concatenate([rng.normal(0, 8, 500), [-745.0, -100.0, -30.0, 0.0, 30.0, 100.0, 745.0]])
    e = sps.expit(x)
    assert_close(A.sigmoid_reference(x), e, "f64_vs_oracle", "sigmoid ref")
    assert_close(A.sigmoid(x), e, "f64_vs_oracle", "sigmoid fast")
    assert_close(A.sigmoid(x.astype(np.float32)), sps.expit(x.astype(np.float32).astype(float)), "f32_vs_f64")
    # small values keep relative accuracy (no 1 - tiny cancellation)
    assert abs(A.sigmoid(np.array([-30.0]))[0] / sps.expit(-30.0) - 1) < 1e-14
    assert_close(A.swish(x), x * e, "f64_vs_oracle", "swish fast")
    assert_close(A.swish_reference(x), x * e, "f64_vs_oracle", "swish ref")


def test_bnll_mish_vs_scipy_log1p_exp(rng):
    x = rng.normal(0, 4, 1000)  # |x| < ~16: log1p(exp(x)) is exact enough here
    sp = sps.log1p(np.exp(x))
    assert_close(A.bnll(x), sp, "f64_vs_oracle", "bnll fast")
    assert_close(A.bnll_reference(x), sp, "f64_vs_oracle", "bnll ref")
    m = x * np.tanh(sp)
    assert_close(A.mish(x), m, "f64_vs_oracle", "mish fast")
    assert_close(A.mish_reference(x), m, "f64_vs_oracle", "mish ref")
    # far tails by hand: softplus(x) = x for x >> 0, exp(x) for x << 0
    big = np.array([50.0, 800.0, 1e4, -50.0, -800.0])
    want_sp = np.array([50.0, 800.0, 1e4, math.exp(-50.0), 0.0])
    for f in (A.bnll, A.bnll_reference):
        np.testing.assert_allclose(f(big), want_sp, rtol=1e-15, atol=0)
    want_mish = np.array([50.0, 800.0, 1e4, -50.0 * math.exp(-50.0), 0.0])
    for f in (A.mish, A.mish_reference):
        np.testing.assert_allclose(f(big), want_mish, rtol=1e-13, atol=1e-300)
    assert A.bnll(np.array([0.0]))[0] == pytest.approx(math.log(2), rel=1e-15)


def test_elu_tanh_relu_clip_hand():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0, 7.0])
    for f in (A.elu, A.elu_reference):
        want = [0.3 * math.expm1(-2.0), 0.3 * math.expm1(-0.5), 0.0, 0.5, 3.0, 7.0]
        assert_close(f(x, alpha=0.3), np.array(want), "f64_vs_oracle", f.__name__)
    for f in (A.tanh, A.tanh_reference):
        assert_close(f(x), np.array([math.tanh(v) for v in x]), "f64_vs_oracle", f.__name__)
    for f in (A.relu, A.relu_reference):
        assert f(x).tolist() == [0.0, 0.0, 0.0, 0.5, 3.0, 7.0]
        assert f(x, 0.5).tolist() == [-1.0, -0.25, 0.0, 0.5, 3.0, 7.0]
    for f in (A.relu6, A.relu6_reference):
        assert f(x).tolist() == [0.0, 0.0, 0.0, 0.5, 3.0, 6.0]
    for f in (A.clip, A.clip_reference):
        assert f(x, -1.0, 1.0).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0, 1.0]
    for f in (A.abs, A.abs_reference):
        assert f(x).tolist() == [2.0, 0.5, 0.0, 0.5, 3.0, 7.0]


def test_power_exp_log_hand():
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    for f in (A.power, A.power_reference):
        # (shift + scale x)^power = (1 + 0.5 x)^3
        assert_close(f(x, power=3.0, scale=0.5, shift=1.0), np.array([0.125, 1.0, 3.375, 8.0]), 1e-15)
        assert_close(f(x, power=0.5, scale=2.0, shift=2.0), np.sqrt([0.0, 2.0, 4.0, 6.0]), 1e-15)
        assert_close(f(x), x, 0.0)  # defaults: identity
    for f in (A.exp, A.exp_reference):
        # base^(shift + scale x) = 2^(1 + 3x)
        assert_close(f(x, base=2.0, scale=3.0, shift=1.0), np.array([0.25, 2.0, 16.0, 128.0]), 1e-14)
        assert_close(f(x), np.array([math.exp(v) for v in x]), 1e-15)
    y = np.array([0.25, 4.75, 49.75])
    for f in (A.log, A.log_reference):
        # log10(shift + scale y) = log10(0.5 + 2y) = log10([1, 10, 100])
        assert_close(f(y, base=10.0, scale=2.0, shift=0.5), np.array([0.0, 1.0, 2.0]), 1e-15)
        assert_close(f(np.array([1.0, math.e, 10.0])), np.array([0.0, 1.0, math.log(10.0)]), 1e-15)
        assert_close(f(np.array([1.0, 8.0, 0.5]), base=2.0), np.array([0.0, 3.0, -1.0]), 1e-15)


# ------------------------------------------------------------------ cv2.dnn single-layer nets


def _cv2_layer(tmp_path, layer_type: str, params: str, x: np.ndarray) -> np.ndarray:
    layer = f'layer {{ name: "l" type: "{layer_type}" bottom: "data" top: "l" {params} }}'
    return cv2_layer(tmp_path, layer, {"data": x}).astype(np.float64)


CV2_CASES = [
    ("ReLU", "", "relu", {}, "any"),
    ("ReLU", "relu_param { negative_slope: 0.2 }", "relu", {"negative_slope": 0.2}, "any"),
    ("ELU", "elu_param { alpha: 0.6 }", "elu", {"alpha": 0.6}, "any"),
    ("Sigmoid", "", "sigmoid", {}, "any"),
    ("TanH", "", "tanh", {}, "any"),
    ("BNLL", "", "bnll", {}, "any"),
    ("AbsVal", "", "abs", {}, "any"),
    ("Power", "power_param { power: 2 scale: 0.5 shift: -0.25 }", "power",
     {"power": 2.0, "scale": 0.5, "shift": -0.25}, "any"),
    ("Power", "power_param { power: 0.5 scale: 1.5 shift: 0.1 }", "power",
     {"power": 0.5, "scale": 1.5, "shift": 0.1}, "pos"),
    ("Exp", "", "exp", {}, "any"),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", "exp",
     {"base": 2.0, "scale": 0.5, "shift": 1.0}, "any"),
    ("Log", "", "log", {}, "pos"),
    ("Mish", "", "mish", {}, "any"),
    ("Swish", "", "swish", {}, "any"),
    ("ReLU6", "", "relu6", {}, "any"),
]


@pytest.mark.parametrize(("ltype", "params", "name", "kw", "kind"), CV2_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CV2_CASES)])
def test_vs_cv2_single_layer(tmp_path, rng, ltype, params, name, kw, kind):
    x = _draw(rng, (2, 3, 5, 7), kind).astype(np.float32)
    if kind == "any":
        x = (x * 1.5).astype(np.float32)  # reach ReLU6's 6 and the tails
    want = _cv2_layer(tmp_path, ltype, params, x)
    fast, ref = getattr(A, name), getattr(A, name + "_reference")
    assert_close(fast(x, **kw), want, "vs_cv2", f"{ltype} fast")
    assert_close(ref(x.astype(np.float64), **kw), want, "vs_cv2", f"{ltype} reference")


def test_cv2_log_ignores_caffe_log_params(tmp_path, rng):
    """Known cv2 deviation: cv2.dnn's Log layer computes ln(x) and ignores Caffe's
    log_param base/scale/shift; refnet follows Caffe."""
    x = rng.uniform(0.2, 3.0, (1, 2, 3, 4)).astype(np.float32)
    got = _cv2_layer(tmp_path, "Log", "log_param { base: 2 scale: 0.5 shift: 3 }", x)
    caffe = A.log(x, base=2.0, scale=0.5, shift=3.0)
    assert_close(caffe, np.log2(3.0 + 0.5 * x.astype(np.float64)), "f32_vs_f64")
    assert_close(got, np.log(x.astype(np.float64)), "vs_cv2", "cv2 = ln(x)")
    assert np.max(np.abs(got - caffe)) > 0.5


# ------------------------------------------------------------------ edge cases and bad input

UNARY = ["relu", "relu6", "elu", "sigmoid", "tanh", "bnll", "abs", "power", "exp", "log",
         "mish", "swish"]


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("impl", ["", "_reference"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_nan_in_nan_out_and_extremes_quiet(name, impl, dt):
    f = getattr(A, name + impl)
    x = np.array([np.nan, -1e4, -50.0, 0.0, 50.0, 1e4, np.nan], dtype=dt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid warnings leak out
        y = f(np.abs(x) + 1 if name == "log" else x)
    assert y.dtype == dt
    assert np.isnan(y[0]) and np.isnan(y[-1])
    if name in ("sigmoid", "tanh", "bnll", "mish", "swish", "relu", "relu6", "abs", "elu"):
        assert np.all(np.isfinite(y[1:-1])), y
    if name == "sigmoid":
        assert y[1] == 0.0 and y[5] == 1.0
    if name == "tanh":
        assert y[1] == -1.0 and y[5] == 1.0
    if name in ("bnll", "mish", "swish"):
        assert y[5] == dt(1e4) and abs(float(y[1])) <= 1e-300


def test_prelu_nan_and_clip_nan():
    x = np.array([[np.nan, -1.0, 2.0]])
    for f in (A.prelu, A.prelu_reference):
        y = f(x, np.array([0.5]))
        assert np.isnan(y[0, 0]) and y[0, 1:].tolist() == [-0.5, 2.0]
    for f in (A.clip, A.clip_reference):
        assert np.isnan(f(x, 0.0, 1.0)[0, 0])


@pytest.mark.parametrize("impl", ["", "_reference"])
def test_bad_input(impl):
    relu = getattr(A, "relu" + impl)
    prelu = getattr(A, "prelu" + impl)
    with pytest.raises(TypeError, match="x"):
        relu([1.0, -1.0])
    with pytest.raises(TypeError, match="float32 or float64"):
        relu(np.arange(3))
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ShapeError, match=r"slope.*\(4,\).*\(2, 3, 4\)"):
        prelu(x, np.ones(4, np.float32))
    with pytest.raises(ShapeError, match="slope"):
        prelu(x, np.ones((3, 1), np.float32))
    with pytest.raises(TypeError, match="slope"):
        prelu(x, np.ones(3, np.float64))
    with pytest.raises(ValueError, match="lo <= hi"):
        getattr(A, "clip" + impl)(x, 1.0, 0.0)
    with pytest.raises(ValueError, match="base"):
        getattr(A, "exp" + impl)(x, base=-2.0)
    with pytest.raises(ValueError, match="base"):
        getattr(A, "log" + impl)(x, base=1.0)


def test_package_exports():
    for name in A.__all__:
        assert getattr(K, name) is getattr(A, name)
    assert {"relu", "prelu", "mish", "swish", "power_reference"} <= set(A.__all__)


def test_scalar_params_do_not_promote_float32():
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    for f, kw in ((A.relu, {"negative_slope": np.float64(0.1)}), (A.elu, {"alpha": np.float64(2)}),
                  (A.power, {"power": np.float64(2), "scale": np.float64(3)}),
                  (A.exp, {"scale": np.float64(0.5)}), (A.clip, {"lo": np.float64(0), "hi": 1})):
        assert f(x, **kw).dtype == np.float32, f.__name__


@pytest.mark.parametrize("scale,shift", [(None, None), ("chan", None), (None, "one"), ("chan", "chan"),
                                         ("one", "one")])
def test_hard_swish_affine_is_the_unfused_float32_chain_bit_for_bit(rng, scale, shift):
    """hard_swish_affine (the fused Add(3), Clip(0, 6), Mul(x), Div(6), Mul(a), Add(b) of exporters'
    graphs) gives exactly what NumPy's float32 ufuncs give step by step in that order, NaN and
    +-inf included, a per-channel / single / absent scale and shift; the reference is the formula
    in float64. Also the NumPy twin (CI's NUMBA_DISABLE_JIT run)."""
    x = (rng.standard_normal((2, 3, 5, 4)) * 4).astype(np.float32)
    x[0, 1, 2, 3], x[1, 0, 0, 0], x[1, 2, 4, 1] = np.nan, np.inf, -np.inf
    vals = {None: None, "chan": rng.standard_normal((1, 3, 1, 1)).astype(np.float32),
            "one": np.array([0.75], np.float32)}
    a, b = vals[scale], vals[shift] if shift != "chan" else rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    f = np.float32
    with np.errstate(invalid="ignore"):
        want = np.minimum(np.maximum(x + f(3), f(0)), f(6))
        want = (x * want) / f(6)
        if a is not None:
            want = want * a.reshape((1, -1, 1, 1) if a.size > 1 else (1,))
        if b is not None:
            want = want + b.reshape((1, -1, 1, 1) if b.size > 1 else (1,))
    got = K.hard_swish_affine(x, a, b)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    out = np.empty_like(x)
    assert K.hard_swish_affine(x, a, b, out=out) is out
    np.testing.assert_array_equal(out, want)
    ref = K.hard_swish_affine_reference(x.astype(np.float64), a, b)
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.isnan(ref), np.isnan(want))
    assert_close(ref[fin], want[fin], "f32_vs_f64", "reference")
    with pytest.raises(ShapeError):
        K.hard_swish_affine(x, np.ones(4, np.float32))
