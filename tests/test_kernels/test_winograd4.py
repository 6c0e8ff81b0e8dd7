"""Winograd F(4x4, 3x3) (refnet.kernels.conv, algorithm "winograd4", issue 17): the transform
matrices against a direct 1-D correlation and against their definition by the interpolation
points, then the plan against the float64 reference convolution (tight in float64, the float32
tolerance in float32) over random geometries, activations, residuals and batches; the choice
rule; and with several worker threads, the fallback to F(2,3)'s split path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from split_fixtures import split_pool  # noqa: F401 - the `pool` fixture

import refnet.kernels.conv as C

RNG = np.random.default_rng(43)


def test_matrices_compute_a_1d_correlation_exactly():
    """y[i] = sum_k d[i + k] g[k], i < 4, for the unit vectors d and g (so for every d, g)."""
    for a in range(6):
        for k in range(3):
            d, g = np.eye(6)[a], np.eye(3)[k]
            want = np.array([d[i : i + 3] @ g for i in range(4)])
            got = C._WINO4_AT @ ((C._WINO4_G @ g) * (C._WINO4_BT @ d))
            np.testing.assert_allclose(got, want, atol=1e-15)


def test_matrices_follow_from_the_interpolation_points():
    """Points 0, 1, -1, 2, -2 (and infinity): A^T[i, j] = p_j^i, G's rows evaluate g at p_j
    (scaled), and B^T's rows are the Lagrange basis of the finite points times those scales."""
    pts = [0.0, 1.0, -1.0, 2.0, -2.0]
    at = np.array([[p**i for p in pts] + [1.0 if i == 3 else 0.0] for i in range(4)])
    np.testing.assert_array_equal(C._WINO4_AT, at)
    scale = np.array([np.prod([p - q for q in pts if q != p]) for p in pts])  # 4, -6, -6, 24, 24
    g = np.array([[p**k for k in range(3)] for p in pts]) / scale[:, None]
    np.testing.assert_allclose(C._WINO4_G[:5], g, atol=1e-15)
    np.testing.assert_array_equal(C._WINO4_G[5], [0, 0, 1])


def _ref(x, w, b, pad, act, slope, res=None):
    y = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                           pad=pad)
    if res is not None:
        y = y + res.astype(np.float64)
    if act == "relu6":
        return np.clip(y, 0, 6)
    if act in ("relu", "prelu"):
        s = np.asarray(slope, np.float64).reshape(1, -1, 1, 1) if act == "prelu" else slope
        return np.where(y > 0, y, y * s)
    return y


# float32: F(4,3)'s transforms (coefficients up to 8 and 1/24) round a few times more than
# F(2,3)'s; with up to 70 input channels (K = 630) that is a long reduction's tolerance (seen:
# 1.0e-5 for 68 channels, 3e-6 to 6e-6 on ResNet/SqueezeNet shapes with 16..128 channels).


def _geometries(count):
    out = []
    for _ in range(count):
        h, w = int(RNG.integers(1, 23)), int(RNG.integers(1, 23))
        pad = int(RNG.integers(0, 2))
        if h + 2 * pad < 3 or w + 2 * pad < 3:
            pad = 1
        h, w = max(h, 3 - 2 * pad), max(w, 3 - 2 * pad)
        out.append(((2, int(RNG.integers(1, 71)), h, w), int(RNG.integers(1, 71)), pad))
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", [None, "relu", "prelu", "relu6"])
def test_plan_equals_reference(dtype, act):
    for xs, co, pad in _geometries(6):
        x = RNG.standard_normal(xs).astype(dtype)
        w = (RNG.standard_normal((co, xs[1], 3, 3)) * 0.3).astype(dtype)
        b = None if act == "relu6" else RNG.standard_normal(co).astype(dtype)
        slope = RNG.uniform(0.05, 0.5, co).astype(dtype) if act == "prelu" else 0.1
        plan = C.conv2d_plan(xs, w, b, pad=pad, activation=act, negative_slope=slope, algorithm="winograd4")
        y = plan(x)
        assert y.dtype == dtype and y.shape == plan.y_shape
        assert_close(y, _ref(x, w, b, pad, act, slope), 1e-12 if dtype == np.float64 else "f32_vs_f64_long",
                     f"{xs} -> {co}, pad {pad}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_residual_and_large_map(dtype):
    xs, co = (1, 24, 41, 38), 20
    x = RNG.standard_normal(xs).astype(dtype)
    w = (RNG.standard_normal((co, 24, 3, 3)) * 0.3).astype(dtype)
    b = RNG.standard_normal(co).astype(dtype)
    r = RNG.standard_normal((1, co, 41, 38)).astype(dtype)
    plan = C.conv2d_plan(xs, w, b, pad=1, activation="relu", algorithm="winograd4", residual=True)
    tol = 1e-12 if dtype == np.float64 else "f32_vs_f64_long"
    assert_close(plan(x, residual=r), _ref(x, w, b, 1, "relu", 0.0, r), tol)


def test_bands_of_tile_rows_equal_one_band(monkeypatch):
    """A map cut into several bands of tile rows gives the result of one band, bit for bit."""
    xs, co = (1, 9, 50, 31), 11
    x = RNG.standard_normal(xs).astype(np.float32)
    w = RNG.standard_normal((co, 9, 3, 3)).astype(np.float32)
    whole = C.conv2d_plan(xs, w, None, pad=1, algorithm="winograd4")
    monkeypatch.setattr(C, "_WINO4_MIN_TILES", 8)
    monkeypatch.setattr(C, "_WINO4_BAND_ELEMS", 1)
    banded = C.conv2d_plan(xs, w, None, pad=1, algorithm="winograd4")
    assert banded.band < banded.th_n and whole.band == whole.th_n
    np.testing.assert_array_equal(banded(x), whole(x))


def test_choice():
    def alg(xs, co):
        return C.conv2d_plan(xs, np.zeros((co, xs[1], 3, 3), np.float32), None, pad=1).algorithm

    assert alg((1, 32, 27, 27), 128) == "winograd4"  # SqueezeNet fire4 expand3x3
    assert alg((1, 64, 56, 56), 64) == "winograd4"  # ResNet-50 layer1
    assert alg((1, 128, 28, 28), 128) == "winograd4"  # ResNet-50 layer2
    # few channels: F(4,3) only on large maps (WINOGRAD4_NARROW_*: SqueezeNet fire2/3 expand3x3, 196
    # tiles), not on yufacedetectnet's 16/32 -> 64 30x40 convs (accuracy: see WINOGRAD4_MIN_CIN_COUT)
    assert alg((1, 16, 55, 55), 64) == "winograd4"
    assert alg((1, 16, 30, 40), 64) == "winograd"
    assert alg((1, 32, 55, 55), 64) == "winograd"
    assert alg((1, 64, 15, 20), 64) == "winograd"  # small map (accuracy)
    assert alg((1, 256, 14, 14), 256) == "winograd"  # many channels on a small map
    assert alg((1, 64, 8, 10), 128) == "winograd"  # few tiles
    assert alg((1, 16, 60, 80), 32) == "winograd4"  # few channels on a large map (yufacedetectnet conv2_1)
    assert alg((1, 16, 64, 128), 16) == "winograd4"
    assert alg((1, 16, 30, 40), 32) == "winograd"  # ... but a smaller map: below WINOGRAD4_SMALL_MIN_TILES
    assert alg((1, 32, 60, 80), 32) == "winograd"  # ... more channels: above WINOGRAD4_SMALL_MAX_CIN_COUT


def test_small_channel_choice_matches_the_reference():
    """The small-channel, large-map F(4,3) choice against the float64 reference convolution, in
    float32 (the long-reduction tolerance, as the other F(4,3) choices) and in float64 (tight)."""
    w = RNG.normal(0, np.sqrt(2 / (9 * 16)), (32, 16, 3, 3))
    b = RNG.normal(0, 0.1, 32)
    x = np.maximum(RNG.normal(0, 1, (1, 16, 60, 80)), 0)
    want = C.conv2d_reference(x, w, b, pad=1, activation="relu")
    for dt, tol in ((np.float32, "f32_vs_f64_long"), (np.float64, 1e-12)):
        plan = C.conv2d_plan(x.shape, w.astype(dt), b.astype(dt), pad=1, activation="relu")
        assert plan.algorithm == "winograd4"
        assert_close(plan(x.astype(dt)), want, tol, f"small-channel winograd4 {dt.__name__}")


@pytest.mark.parametrize("drivers", ["0", "1"])
@pytest.mark.parametrize("xs,co,runs", [((2, 10, 45, 39), 7, 1),  # bands of tile rows, one pool run
                                         ((2, 11, 9, 13), 17, 6)])  # small map: per image in, GEMMs, out
def test_several_threads_split_equals_one_thread(pool, monkeypatch, xs, co, runs, drivers):
    """With several workers: bands of tile rows (transforms and GEMMs of a band in one block), or
    for small maps the transforms in bands and the 36 GEMMs in blocks, over the pool; equal to
    the one-thread result (every tile computed the same way; GEMM blocks bit-exact with the real
    block limits, 1e-5 with the test pool's tiny blocks). Python blocks (``REFNET_POOL_DRIVERS=0``:
    ``runs`` pool runs) or, where numba jits, the wino_bands / wino_small drivers (one pool run,
    every phase of every image inside it)."""
    from refnet.kernels import _workers

    monkeypatch.setenv("REFNET_POOL_DRIVERS", drivers)
    x = RNG.standard_normal(xs).astype(np.float32)
    w = (RNG.standard_normal((co, xs[1], 3, 3)) * 0.3).astype(np.float32)
    r = RNG.standard_normal((xs[0], co) + xs[2:]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, None, pad=1, activation="relu", algorithm="winograd4", residual=True)
    plan(x, residual=r)  # (numba loaded: the drivers are decided)
    if C._drivers() is not None:
        runs = 1
    calls = []
    real_run = _workers.run
    monkeypatch.setattr(_workers, "run", lambda fn, n: (calls.append(n), real_run(fn, n))[1])
    split = plan(x, residual=r)
    assert len(calls) == runs and max(calls) >= 3, calls
    _workers.set_workers(1)
    np.testing.assert_allclose(split, plan(x, residual=r), rtol=1e-5, atol=1e-5)
    assert_close(split, _ref(x, w, None, 1, "relu", 0.0, r), "f32_vs_f64")
