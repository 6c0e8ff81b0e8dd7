"""Fast paths added for the performance work outside conv/pool: instance norm with a fused
(leaky) ReLU and an ``out`` buffer (vs the explicit Torch formula), plane padding
(``PlanePad``, vs ``numpy.pad``), bad input and NaN."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from refnet.errors import ShapeError
from refnet.kernels import PlanePad, instance_norm, instance_norm_reference, pad


def torch_instance_norm(x, w, b, eps):
    x = x.astype(np.float64)
    mu = x.mean(axis=(2, 3), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(2, 3), keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_instance_norm_fused_relu_and_out(slope, dt, rng):
    x = (rng.normal(3.0, 2.0, (2, 5, 9, 11))).astype(dt)
    w, b = rng.normal(size=5).astype(dt), rng.normal(size=5).astype(dt)
    lin = torch_instance_norm(x, w, b, 1e-5)
    want = np.where(lin > 0, lin, slope * lin)
    tol = "f32_vs_f64" if dt == np.float32 else 1e-12
    got = instance_norm(x, w, b, eps=1e-5, activation="relu", negative_slope=slope)
    assert got.dtype == dt
    assert_close(got, want, tol, "fast")
    assert_close(instance_norm_reference(x, w, b, eps=1e-5, activation="relu", negative_slope=slope), want,
                 tol, "reference")
    out = np.full_like(x, np.nan)
    assert instance_norm(x, w, b, eps=1e-5, out=out) is out
    assert_close(out, lin, tol, "out=")
    with pytest.raises(ValueError, match="activation"):
        instance_norm(x, activation="tanh")
    with pytest.raises(ShapeError, match="out must be"):
        instance_norm(x, out=np.empty((2, 5, 9, 10), dt))


def test_instance_norm_constant_plane_and_nan(rng):
    x = np.full((1, 2, 4, 4), 7.25, np.float32)
    x[0, 1] = rng.normal(size=(4, 4))
    x[0, 1, 2, 2] = np.nan
    y = instance_norm(x, eps=1e-9)
    np.testing.assert_array_equal(y[0, 0], 0.0)  # (x - mean) is exactly zero
    assert np.isnan(y[0, 1]).all()


@pytest.mark.parametrize("mode,value", [("reflect", 0.0), ("edge", 0.0), ("constant", -1.5)])
def test_plane_pad_vs_numpy(mode, value, rng):
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    pads = ((0, 0), (0, 0), (2, 1), (3, 4))
    np_mode = {"reflect": "reflect", "edge": "edge", "constant": "constant"}[mode]
    kw = {"constant_values": value} if mode == "constant" else {}
    want = np.pad(x, pads, mode=np_mode, **kw)
    np.testing.assert_array_equal(pad(x, pads, mode=mode, value=value), want)
    plan = PlanePad(x.shape, (2, 1), (3, 4), mode, value, np.float32)
    out = np.empty(want.shape, np.float32)
    assert plan(x, out) is out
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="mode"):
        PlanePad(x.shape, (1, 1), (1, 1), "wrap", 0.0, np.float32)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_softmax_short_last_axis_vs_scipy(k, rng):
    import scipy.special

    from refnet.kernels import softmax

    x = rng.normal(0, 3, (2, 300, k))
    x[0, 7] = [1e30] + [0.0] * (k - 1)  # huge values stay finite
    x[1, 3, 0] = np.nan  # a NaN makes its row NaN
    want = scipy.special.softmax(x, axis=-1)
    for dt, tol in ((np.float64, 1e-13), (np.float32, "f32_vs_f64")):
        got = softmax(x.astype(dt), axis=2)
        assert got.dtype == dt
        assert np.isnan(got[1, 3]).all() and not np.isnan(np.delete(got.reshape(-1, k), 303, axis=0)).any()
        ok = ~np.isnan(want)
        assert_close(np.where(ok, got, 0), np.where(ok, want, 0), tol, f"softmax k={k} {dt.__name__}")
