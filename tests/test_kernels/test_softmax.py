"""Softmax / log-softmax: fast vs reference, scipy.special oracle, cv2.dnn Softmax layer."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import scipy.special as sps
from conftest import assert_close, cv2_layer
from hypothesis import given, settings
from hypothesis import strategies as st

import refnet.kernels as K
from refnet.errors import ShapeError

# ``refnet.kernels.softmax`` the attribute is the function (the package star-imports it over
# the submodule), so the module is taken from the import system
S = importlib.import_module("refnet.kernels.softmax")

HYP = settings(max_examples=40, deadline=None, derandomize=True)
PAIRS = [(S.softmax, S.softmax_reference, sps.softmax),
         (S.log_softmax, S.log_softmax_reference, sps.log_softmax)]
IDS = ["softmax", "log_softmax"]


@st.composite
def shape_axis(draw):
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return shape, axis


@pytest.mark.parametrize(("fast", "ref", "oracle"), PAIRS, ids=IDS)
@HYP
@given(sa=shape_axis(), seed=st.integers(0, 2**31 - 1), dt=st.sampled_from(["float32", "float64"]),
       spread=st.sampled_from([1.0, 10.0, 100.0]))
def test_fast_vs_reference_vs_scipy(fast, ref, oracle, sa, seed, dt, spread):
    shape, axis = sa
    x = (np.random.default_rng(seed).normal(0, spread, shape)).astype(dt)
    x64 = x.astype(np.float64)
    want = oracle(x64, axis=axis)
    r = ref(x64, axis)
    assert_close(r, want, "f64_vs_oracle", "reference vs scipy")
    y = fast(x, axis)
    assert y.dtype == np.dtype(dt) and y.shape == x.shape
    assert_close(y, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle", "fast vs reference")


@pytest.mark.parametrize(("fast", "ref", "oracle"), PAIRS, ids=IDS)
@pytest.mark.parametrize("shape_axis", [((1, 21, 8732), 1), ((3, 1000), 1), ((2, 4096), -1),
                                        ((2, 5, 300, 3), 2), ((1, 600, 2), 0)])
def test_larger_shapes(fast, ref, oracle, shape_axis, rng):
    shape, axis = shape_axis  # SSD-like conf, long rows, wide inner extent, axis 0
    x = rng.normal(0, 4, shape)
    want = oracle(x, axis=axis)
    assert_close(ref(x, axis), want, "f64_vs_oracle")
    assert_close(fast(x, axis), want, "f64_vs_oracle")
    assert_close(fast(x.astype(np.float32), axis), want, "f32_vs_f64")


def test_sums_to_one_and_default_axis(rng):
    x = rng.normal(0, 3, (2, 5, 3, 4)).astype(np.float32)
    for f in (S.softmax, S.softmax_reference):
        y = f(x)  # default axis 1 (Caffe)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
        assert np.all(y > 0)
    for f in (S.log_softmax, S.log_softmax_reference):
        np.testing.assert_allclose(np.exp(f(x).astype(np.float64)).sum(axis=1), 1.0, rtol=1e-6)


def test_hand_values():
    x = np.array([[0.0, np.log(3.0)]])
    for f in (S.softmax, S.softmax_reference):
        assert_close(f(x), np.array([[0.25, 0.75]]), 1e-15)
    for f in (S.log_softmax, S.log_softmax_reference):
        assert_close(f(x), np.log([[0.25, 0.75]]), 1e-15)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_huge_inputs_do_not_overflow(dt):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4 - np.log(2)]], dtype=dt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in (S.softmax, S.softmax_reference):
            y = f(x, 1)
            assert np.all(np.isfinite(y))
            np.testing.assert_allclose(y[0], [1, 0, 0])
            np.testing.assert_allclose(y[1], [1 / 3] * 3, rtol=1e-6)
        for f in (S.log_softmax, S.log_softmax_reference):
            y = f(x, 1)
            assert np.all(np.isfinite(y))
            np.testing.assert_allclose(y[0], [0, -2e4, -1e4], rtol=1e-7)


@pytest.mark.parametrize("f", [S.softmax, S.softmax_reference, S.log_softmax, S.log_softmax_reference])
def test_nan_row_is_nan_and_others_untouched(f):
    x = np.array([[1.0, np.nan, 0.0], [1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]], dtype=np.float32)
    y = f(x, 1)
    assert np.all(np.isnan(y[0])) and np.all(np.isnan(y[2]))
    assert_close(y[1], (sps.softmax if "log" not in f.__name__ else sps.log_softmax)(
        x[1].astype(np.float64)), "f32_vs_f64")
    # the same along a non-last axis
    yt = f(np.ascontiguousarray(x.T), 0)
    assert np.all(np.isnan(yt[:, 0])) and np.all(np.isfinite(yt[:, 1]))


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("shape,axis", [((1, 1000), 1), ((1000,), 0), ((1, 37, 1, 1), 1), ((1, 1, 20), -1)])
def test_one_row_kernel_vs_scipy(shape, axis, dt, rng, monkeypatch):
    """One softmax row (a classifier's output) runs the jitted row pass once numba is loaded;
    it agrees with scipy in float64 and with the NumPy path (ROW_KERNEL off) to rounding; a NaN
    or an inf - inf makes the row NaN, as on the NumPy path."""
    from refnet.kernels._lazyjit import load_numba

    load_numba()
    calls = []
    real = S._softmax_row
    monkeypatch.setattr(S, "_softmax_row", lambda x, out: (calls.append(x.size), real(x, out)))
    x = (rng.standard_normal(shape) * 20).astype(dt)
    got = S.softmax(x, axis)
    assert calls == [x.size] and got.shape == x.shape and got.dtype == x.dtype
    tol = "f32_vs_f64" if dt == "float32" else "f64_vs_oracle"
    assert_close(got, sps.softmax(x.astype(np.float64), axis=axis), tol)
    monkeypatch.setattr(S, "ROW_KERNEL", False)
    assert_close(got, S.softmax(x, axis), tol)
    assert len(calls) == 1
    monkeypatch.setattr(S, "ROW_KERNEL", True)
    for bad in (np.nan, np.inf):
        xb = x.copy().reshape(-1)
        xb[3] = bad
        assert np.isnan(S.softmax(xb.reshape(shape), axis)).all()
    assert np.isnan(S.softmax(np.full(shape, -np.inf, dt), axis)).all()


def test_non_contiguous_and_empty(rng):
    x = rng.normal(0, 1, (4, 6, 5))[:, ::2, ::-1]
    assert_close(S.softmax(x, 1), sps.softmax(x, axis=1), "f64_vs_oracle")
    e = np.zeros((2, 0, 3), np.float32)
    for f in (S.softmax, S.log_softmax, S.softmax_reference, S.log_softmax_reference):
        assert f(e, 1).shape == (2, 0, 3)


def _cv2_softmax(tmp_path, x: np.ndarray, axis: int) -> np.ndarray:
    layer = f'layer {{ name: "l" type: "Softmax" bottom: "data" top: "l" softmax_param {{ axis: {axis} }} }}'
    return cv2_layer(tmp_path, layer, {"data": x}).astype(np.float64)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_vs_cv2_softmax(tmp_path, rng, axis):
    x = rng.normal(0, 5, (2, 5, 3, 4)).astype(np.float32)
    want = _cv2_softmax(tmp_path, x, axis)
    assert_close(S.softmax(x, axis), want, "vs_cv2", "fast")
    assert_close(S.softmax_reference(x.astype(np.float64), axis), want, "vs_cv2", "reference")


@pytest.mark.parametrize("f", [S.softmax, S.softmax_reference, S.log_softmax, S.log_softmax_reference])
def test_bad_input(f):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ShapeError, match=r"axis 2.*\(2, 3\)"):
        f(x, 2)
    with pytest.raises(ShapeError, match="axis"):
        f(x, -3)
    with pytest.raises(TypeError, match="float32 or float64"):
        f(np.zeros((2, 3), np.int32), 1)
    with pytest.raises(TypeError, match="x"):
        f([[1.0, 2.0]], 1)
    with pytest.raises(ShapeError):
        f(np.ones((), np.float32), 0)


def test_package_exports():
    for name in S.__all__:
        assert getattr(K, name) is getattr(S, name)
