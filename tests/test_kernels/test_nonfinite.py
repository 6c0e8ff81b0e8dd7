"""Inf and NaN inputs through the kernels that compute with NumPy (conv, normalisation, pooling,
activations, softmax, style losses, resize, eltwise, detection, YOLO), fast and ``_reference``:
IEEE results are the semantics, so no RuntimeWarning (overflow / invalid value / divide) may
escape, and the fast output has the reference's NaN, +Inf and -Inf positions and its finite
values. Runs with NUMBA_DISABLE_JIT=1 too (the jitted loops then compute on NumPy scalars)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import refnet.kernels as K

# where the non-finite values go in an (N, C, H, W) input: some outputs stay finite, some
# windows see +inf and -inf together (nan), one sits on a corner (reaches the zero padding)
POISON = (((0, 1, 2, 3), np.inf), ((0, 5, 6, 7), np.nan), ((1, 2, 4, 4), -np.inf), ((1, 2, 4, 5), np.inf),
          ((1, 3, 0, 8), np.inf))


def _x(dt, shape=(2, 8, 9, 9), seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(dt)
    for idx, v in POISON:
        x[tuple(i % s for i, s in zip(idx, shape))] = v
    return x


def _w(dt, *shape, seed=1, positive=False) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal(shape).astype(dt)
    return np.abs(w) + dt(0.1) if positive else w


def _poison_flat(a: np.ndarray) -> np.ndarray:
    f = a.reshape(-1)
    f[1], f[6], f[11], f[17] = np.inf, np.nan, -np.inf, np.inf
    return a


# name, kernel, call(f, dt) -- the fast kernel is getattr(K, kernel), the reference kernel + "_reference"
CASES = [
    ("conv_im2col", "conv2d", lambda f, dt: f(_x(dt), _w(dt, 6, 8, 3, 3), _w(dt, 6), stride=2, pad=1)),
    ("conv_gemm1x1_relu6", "conv2d", lambda f, dt: f(_x(dt), _w(dt, 6, 8, 1, 1), _w(dt, 6), activation="relu6")),
    ("conv_direct_leaky", "conv2d", lambda f, dt: f(_x(dt), _w(dt, 2, 8, 3, 3), _w(dt, 2), pad=1,
                                                    activation="relu", negative_slope=0.1)),
    ("conv_depthwise3x3_prelu", "conv2d", lambda f, dt: f(_x(dt), _w(dt, 8, 1, 3, 3), _w(dt, 8), pad=1, groups=8,
                                                          activation="prelu", negative_slope=_w(dt, 8))),
    ("conv_depthwise3x3_rows", "conv2d", lambda f, dt: f(_x(dt, (1, 2, 70, 70)), _w(dt, 2, 1, 3, 3), _w(dt, 2),
                                                         stride=2, pad=1, groups=2, activation="relu")),
    ("conv_depthwise5x5", "conv2d", lambda f, dt: f(_x(dt), _w(dt, 8, 1, 5, 5), _w(dt, 8), pad=2, groups=8)),
    ("conv_grouped_dilated", "conv2d", lambda f, dt: f(_x(dt), _w(dt, 4, 4, 3, 3), None, pad=2, dilation=2,
                                                       groups=2)),
    ("conv_transpose", "conv_transpose2d", lambda f, dt: f(_x(dt), _w(dt, 8, 3, 3, 3), _w(dt, 3), stride=2, pad=1)),
    ("separable", "separable_conv2d", lambda f, dt: f(_x(dt), _w(dt, 8, 1, 3, 3), _w(dt, 4, 8, 1, 1), _w(dt, 8),
                                                      _w(dt, 4), pad=1)),
    ("linear", "linear", lambda f, dt: f(_x(dt).reshape(6, -1), _w(dt, 5, 216), _w(dt, 5))),
    ("batch_norm", "batch_norm", lambda f, dt: f(_x(dt), _w(dt, 8), _w(dt, 8, positive=True), _w(dt, 8),
                                                 _w(dt, 8))),
    ("scale", "scale", lambda f, dt: f(_x(dt), _w(dt, 8), _w(dt, 8))),
    ("bias", "bias", lambda f, dt: f(_x(dt), _w(dt, 8))),
    ("instance_norm", "instance_norm", lambda f, dt: f(_x(dt), _w(dt, 8), _w(dt, 8))),
    ("instance_norm_relu", "instance_norm", lambda f, dt: f(_x(dt), None, None, activation="relu",
                                                            negative_slope=0.1)),
    ("mvn", "mvn", lambda f, dt: f(_x(dt))),
    ("mvn_across_channels", "mvn", lambda f, dt: f(_x(dt), across_channels=True)),
    ("mvn_mean_only", "mvn", lambda f, dt: f(_x(dt), normalize_variance=False)),
    ("l2_normalize", "l2_normalize", lambda f, dt: f(_x(dt), _w(dt, 1))),
    ("l2_normalize_per_pixel", "l2_normalize", lambda f, dt: f(_x(dt), _w(dt, 8), across_spatial=False,
                                                               channel_shared=False)),
    ("lrn_across", "lrn", lambda f, dt: f(_x(dt), 5, 1e-2, 0.75, 2.0)),
    ("lrn_within", "lrn", lambda f, dt: f(_x(dt), 3, 1e-2, 0.6, 1.0, "within")),
    ("avg_pool", "avg_pool", lambda f, dt: f(_x(dt), 3, 2, 1)),
    ("max_pool", "max_pool", lambda f, dt: f(_x(dt), 3, 2, 1)),
    ("global_avg_pool", "global_avg_pool2d", lambda f, dt: f(_x(dt))),
    ("relu_leaky", "relu", lambda f, dt: f(_x(dt), 0.1)),
    pytest.param("relu", "relu", lambda f, dt: f(_x(dt)), marks=pytest.mark.xfail(strict=True, reason=(
        "-inf with slope 0: relu_reference (x * 0), Caffe's max(x, 0) + 0 * min(x, 0), cv2 4.14 and the "
        "fused conv epilogue give NaN; the fast relu's np.maximum(x, 0) gives 0 (Torch's rule)")), id="relu"),
    ("prelu", "prelu", lambda f, dt: f(_x(dt), np.zeros(8, dt))),
    ("elu", "elu", lambda f, dt: f(_x(dt))),
    ("mish", "mish", lambda f, dt: f(_x(dt))),
    ("swish", "swish", lambda f, dt: f(_x(dt))),
    ("bnll", "bnll", lambda f, dt: f(_x(dt))),
    ("power", "power", lambda f, dt: f(_x(dt), 2.0, 1.5, 0.1)),
    ("softmax", "softmax", lambda f, dt: f(_x(dt))),
    ("log_softmax", "log_softmax", lambda f, dt: f(_x(dt))),
    ("eltwise_prod", "eltwise", lambda f, dt: f([_x(dt), _x(dt, seed=3)[:, ::-1].copy()], "prod")),
    ("eltwise_coeffs", "eltwise", lambda f, dt: f([_x(dt), _x(dt, seed=3)[::-1].copy()], "sum", [1.0, -1.0])),
    ("gram_matrix", "gram_matrix", lambda f, dt: f(_x(dt))),
    ("tv_loss_grad", "tv_loss_grad", lambda f, dt: f(_x(dt))),
    ("content_loss_grad", "content_loss_grad", lambda f, dt: f(_x(dt), _x(dt, seed=4)[::-1].copy())),
    ("iou", "iou", lambda f, dt: f(_poison_flat(np.abs(_w(dt, 6, 4)) + np.array([0, 0, 1, 1], dt)),
                                   np.abs(_w(dt, 5, 4, seed=2)) + np.array([0, 0, 1, 1], dt))),
    ("decode_boxes", "decode_boxes", lambda f, dt: f(_poison_flat(_w(dt, 12, 4)), _w(dt, 12, 4, positive=True),
                                                     _w(dt, 12, 4, seed=2, positive=True))),
    ("yolo", "yolo", lambda f, dt: f(_poison_flat(_w(dt, 1, 4, 4, 14)), [10, 10, 20, 20], 2, norm_hw=(32, 32))),
]

# Winograd F(2x2, 3x3) mixes the four outputs of a tile in its transforms: a NaN/Inf reaches
# every output of its 2x2 tile (conv.py's docstring), so there the fast output is non-finite
# wherever the reference is, and may be NaN where the reference is still +-Inf or finite.
# 16 input channels: the planner picks Winograd from C_in >= 16 on small maps (kernels/conv.py)
WINOGRAD = ("conv_winograd", "conv2d", lambda f, dt: f(_x(dt, (2, 16, 9, 9)), _w(dt, 6, 16, 3, 3), _w(dt, 6), pad=1,
                                                       activation="relu"))


def _quiet(f, call, dt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        return call(f, dt)


def _scale(ref: np.ndarray) -> float:
    fin = ref[np.isfinite(ref)]
    return max(1.0, float(np.max(np.abs(fin)))) if fin.size else 1.0


def assert_same_ieee(got: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    """Same shape and dtype, the same NaN / +Inf / -Inf positions, finite values within rtol."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg="NaN positions differ")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref), err_msg="+Inf positions differ")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref), err_msg="-Inf positions differ")
    fin = np.isfinite(ref)
    err = float(np.max(np.abs(got[fin].astype(np.float64) - ref[fin]), initial=0.0))
    assert err <= rtol * _scale(ref), f"finite values differ by {err:.3g}"


def _rtol(dt) -> float:
    return 1e-4 if dt == np.float32 else 1e-10


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("name", "kernel", "call"), CASES, ids=[c.id if hasattr(c, "marks") else c[0] for c in CASES])
def test_inf_nan_inputs_quiet_and_fast_matches_reference(name, kernel, call, dt):
    ref = _quiet(getattr(K, kernel + "_reference"), call, dt)
    got = _quiet(getattr(K, kernel), call, dt)
    if isinstance(ref, tuple):  # max pooling with indices
        ref, got = ref[0], got[0]
    assert not np.all(np.isfinite(ref)), "the case must produce non-finite outputs"
    assert_same_ieee(got, ref, _rtol(dt))


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_inf_nan_inputs_winograd_covers_the_reference_non_finite_outputs(dt):
    name, kernel, call = WINOGRAD
    plan = K.conv2d_plan((2, 16, 9, 9), _w(dt, 6, 16, 3, 3), _w(dt, 6), pad=1, activation="relu")
    assert plan.algorithm == "winograd"
    ref = _quiet(K.conv2d_reference, call, dt)
    got = _quiet(K.conv2d, call, dt)
    bad = ~np.isfinite(ref)
    assert bad.any() and np.isfinite(ref).any()
    assert not np.isfinite(got[bad]).any()
    # Inf at the reference's Inf positions may become NaN, never a finite value or the wrong sign
    assert not np.isposinf(got[np.isneginf(ref)]).any() and not np.isneginf(got[np.isposinf(ref)]).any()
    same = np.isfinite(got)
    assert same[~bad].mean() > 0.5  # most outputs are outside the poisoned tiles
    assert np.max(np.abs(got[same] - ref[same])) <= _rtol(dt) * _scale(ref) * 10


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_huge_finite_inputs_overflow_quietly(dt):
    """Overflow to inf on the way (squares in LRN / L2 / MVN / Gram, exp in decode) is IEEE too."""
    big = np.finfo(dt).max / 4
    x = _x(dt)
    x[0, 0] = big
    x[1, 7, 1:3] = -big
    calls = [
        lambda: K.lrn(x), lambda: K.lrn_reference(x), lambda: K.l2_normalize(x), lambda: K.l2_normalize_reference(x),
        lambda: K.mvn(x), lambda: K.mvn_reference(x), lambda: K.instance_norm(x), lambda: K.instance_norm_reference(x),
        lambda: K.gram_matrix(x), lambda: K.gram_matrix_reference(x), lambda: K.tv_loss(x),
        lambda: K.tv_loss_reference(x), lambda: K.eltwise([x, x], "prod"), lambda: K.eltwise_reference([x, x], "prod"),
        lambda: K.power(x, 2.0), lambda: K.power_reference(x, 2.0),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for c in calls:
            out = np.asarray(c())
            assert not np.all(np.isfinite(out))
