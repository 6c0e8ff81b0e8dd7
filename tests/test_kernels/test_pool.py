"""Pooling: hand-computed rounding / last-window / divisor cases, cv2.dnn single-layer Pooling
nets (prototxt only) as an oracle, max indices, global pooling, max-unpool round trip, fast vs
reference on hypothesis-drawn shapes, bad input and NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, cv2_layer, pool_window
from hypothesis import given, settings
from hypothesis import strategies as st

from refnet.errors import ShapeError
from refnet.kernels.pool import (
    EMPTY_MAX,
    avg_pool,
    avg_pool_reference,
    global_avg_pool2d,
    global_avg_pool2d_reference,
    global_max_pool2d,
    global_max_pool2d_reference,
    max_pool,
    max_pool_reference,
    max_unpool,
    max_unpool_reference,
    pool_output_size,
)

HYP = settings(max_examples=40, deadline=None, derandomize=True)
MAX_FNS = [max_pool, max_pool_reference]
AVG_FNS = [avg_pool, avg_pool_reference]


# --------------------------------------------------------------------------------------
# output size: hand-computed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,k,s,pb,pe,ceil,want",
    [
        (5, 2, 2, 0, 0, True, 3),  # 1 + ceil(3/2)
        (5, 2, 2, 0, 0, False, 2),  # 1 + floor(3/2)
        (112, 3, 2, 0, 0, True, 56),  # GoogLeNet pool1: ceil keeps the partial window
        (112, 3, 2, 0, 0, False, 55),
        (6, 3, 2, 1, 1, True, 4),  # 1 + ceil(5/2) = 4; last start 6 < 6 + 1: kept
        (6, 3, 2, 1, 1, False, 3),
        (5, 2, 2, 1, 1, True, 3),  # 1 + ceil(5/2) = 4; last start 6 >= 5 + 1: dropped
        (5, 2, 2, 1, 1, False, 3),
        (4, 3, 2, 1, 1, True, 3),  # 1 + ceil(3/2) = 3; last start 4 < 5: kept (clipped)
        (5, 1, 3, 0, 0, True, 3),  # no padding: no rule, last window starts past the input
        (6, 2, 2, 0, 1, True, 3),  # asymmetric: 4 windows, the last would start at 6 = size
        (6, 3, 2, 2, 0, True, 4),  # asymmetric: last start 6 < 6 + 2: kept
        (7, 7, 1, 0, 0, True, 1),
        (1, 1, 1, 0, 0, True, 1),
        (3, 2, 1, 1, 1, True, 4),
    ],
)
def test_pool_output_size_hand(size, k, s, pb, pe, ceil, want):
    assert pool_output_size(size, k, s, pb, pe, ceil) == want


def test_pool_output_size_errors():
    with pytest.raises(ShapeError, match="larger than the padded input"):
        pool_output_size(2, 4, 1, 0, 1)
    with pytest.raises(ShapeError):
        pool_output_size(5, 2, 0, 0, 0)


# --------------------------------------------------------------------------------------
# values: hand-computed
# --------------------------------------------------------------------------------------

# x = 1..16 on a 4x4 plane, kernel 3, stride 2, pad 1, ceil: window starts -1, 1, 3 on each
# axis; row/col groups inside the input: {0,1}, {1,2,3}, {3}; padded-extent sizes 3, 3, 2
# (the last window [3, 6) is clipped to H + pad = 5); in-input counts 2, 3, 1.
X16 = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
SUMS = np.array([[14.0, 30.0, 12.0], [57.0, 99.0, 36.0], [27.0, 45.0, 16.0]])
DIV = {
    "padded": np.array([[9.0, 9.0, 6.0], [9.0, 9.0, 6.0], [6.0, 6.0, 4.0]]),
    "valid": np.array([[4.0, 6.0, 2.0], [6.0, 9.0, 3.0], [2.0, 3.0, 1.0]]),
    "kernel": np.full((3, 3), 9.0),
}
MAX16 = np.array([[6.0, 8.0, 8.0], [14.0, 16.0, 16.0], [14.0, 16.0, 16.0]])
IDX16 = np.array([[5, 7, 7], [13, 15, 15], [13, 15, 15]])


@pytest.mark.parametrize("divisor", list(DIV))
@pytest.mark.parametrize("f", AVG_FNS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avg_pool_hand_computed_divisors(divisor, f, dtype):
    y = f(X16.astype(dtype), 3, 2, 1, divisor=divisor)
    assert y.dtype == dtype and y.shape == (1, 1, 3, 3)
    assert_close(y[0, 0], SUMS / DIV[divisor], 1e-15 if dtype == np.float64 else 1e-7, divisor)
    # floor mode keeps the two full-stride windows only
    y = f(X16.astype(dtype), 3, 2, 1, ceil_mode=False, divisor=divisor)
    assert_close(y[0, 0], (SUMS / DIV[divisor])[:2, :2], 1e-7, f"{divisor} floor")


@pytest.mark.parametrize("f", MAX_FNS)
def test_max_pool_hand_computed_with_indices(f):
    y, idx = f(X16, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], MAX16)
    np.testing.assert_array_equal(idx[0, 0], IDX16)
    assert idx.dtype == np.int64
    y, idx = f(X16, (3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=False, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], IDX16[:2, :2])


@pytest.mark.parametrize("f", MAX_FNS)
def test_max_pool_ties_first_in_row_major_order(f):
    x = np.array([[1.0, 5.0, 0.0, 2.0], [5.0, 2.0, 2.0, 2.0]]).reshape(1, 1, 2, 4)
    y, idx = f(x, 2, 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[5.0, 2.0]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 3]])  # (0,1) before (1,0); (0,3) first 2
    z, zi = f(np.zeros((1, 1, 3, 3)), 2, 2, 1, return_indices=True)  # all ties incl. padding
    np.testing.assert_array_equal(zi[0, 0], [[0, 1], [3, 4]])  # first element in the input
    m, mi = f(np.full((1, 1, 2, 2), -np.inf), 2, return_indices=True)
    assert m[0, 0, 0, 0] == -np.inf and mi[0, 0, 0, 0] == 0
    assert f(np.full((1, 1, 2, 2), -np.inf), 2)[0, 0, 0, 0] == -np.inf


def test_avg_pool_stride_larger_than_kernel_and_rectangular():
    x = np.arange(1.0, 25.0).reshape(1, 1, 4, 6)
    # kernel (1, 2), stride (3, 4), no pad, ceil: rows 0, 3 and cols {0,1}, {4,5}
    want = np.array([[1.5, 5.5], [19.5, 23.5]])
    for f in AVG_FNS:
        np.testing.assert_allclose(f(x, (1, 2), (3, 4))[0, 0], want, rtol=1e-15)
    for f in MAX_FNS:
        np.testing.assert_array_equal(f(x, (1, 2), (3, 4))[0, 0], [[2.0, 6.0], [20.0, 24.0]])


@pytest.mark.parametrize("f", MAX_FNS + AVG_FNS)
def test_window_past_the_input_without_padding(f):
    """kernel 1 < stride 3 on 5 pixels, ceil: the third window (start 6) covers nothing. MAX
    gives Caffe's -FLT_MAX (index -1) there, AVE 0 (Caffe divides 0 by a non-positive window
    size: -0 or NaN); cv2 writes 0 for both."""
    x = np.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    out = f(x, 1, 3)
    y = out if isinstance(out, np.ndarray) else out[0]
    empty = EMPTY_MAX if f in MAX_FNS else 0.0
    want = np.array([[1.0, 4.0, empty], [16.0, 19.0, empty], [empty, empty, empty]])
    np.testing.assert_array_equal(y[0, 0], want)
    if f in MAX_FNS:
        _, idx = f(x, 1, 3, return_indices=True)
        np.testing.assert_array_equal(idx[0, 0], [[0, 3, -1], [15, 18, -1], [-1, -1, -1]])


# --------------------------------------------------------------------------------------
# cv2.dnn single-layer Pooling nets (prototxt only) as an oracle
# --------------------------------------------------------------------------------------


def cv2_pool(tmp_path: Path, x: np.ndarray, params: str) -> np.ndarray:
    return cv2_layer(tmp_path, f'layer {{ name: "l" type: "Pooling" bottom: "data" top: "l" '
                               f"pooling_param {{ {params} }} }}", {"data": x})


CV2_CASES = [
    # (input HxW, prototxt pooling_param, refnet kwargs)
    ((8, 8), "kernel_size: 3 stride: 2", dict(kernel=3, stride=2)),
    ((7, 9), "kernel_size: 3 stride: 2 pad: 1", dict(kernel=3, stride=2, pad=1)),
    ((6, 7), "kernel_size: 3 stride: 2 pad_h: 1 pad_w: 0", dict(kernel=3, stride=2, pad=(1, 0))),
    ((5, 5), "kernel_size: 2 stride: 2 pad: 1", dict(kernel=2, stride=2, pad=1)),  # rule
    ((10, 11), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad: 1",
     dict(kernel=(3, 2), stride=(2, 1), pad=1)),
    ((13, 11), "kernel_size: 2 stride: 3", dict(kernel=2, stride=3)),  # stride > kernel
    ((9, 9), "kernel_size: 3 stride: 1 pad: 1", dict(kernel=3, stride=1, pad=1)),
    ((14, 14), "kernel_size: 5 stride: 3 pad: 2", dict(kernel=5, stride=3, pad=2)),
    ((8, 8), "kernel_size: 3 stride: 2 ceil_mode: false",
     dict(kernel=3, stride=2, ceil_mode=False)),
    ((6, 7), "kernel_h: 3 kernel_w: 3 stride_h: 2 stride_w: 2 pad_t: 2 pad_b: 0 pad_l: 1 pad_r: 1",
     dict(kernel=3, stride=2, pad=(2, 1, 0, 1))),
    ((1, 1), "kernel_size: 1 stride: 1", dict(kernel=1, stride=1)),
]


@pytest.mark.parametrize("case", range(len(CV2_CASES)))
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pool_vs_cv2(case, pool, tmp_path, rng):
    (h, w), params, kw = CV2_CASES[case]
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    want = cv2_pool(tmp_path, x, f"pool: {pool} {params}")
    fns = MAX_FNS if pool == "MAX" else AVG_FNS
    for f in fns:
        got = f(x.astype(np.float64), **kw)
        assert got.shape == want.shape, (params, got.shape, want.shape)
        assert_close(got, want, "vs_cv2", f"{f.__name__} {params}")
    assert_close(fns[0](x, **kw), want, "vs_cv2", f"fast float32 {params}")


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_global_pool_vs_cv2_and_numpy(pool, tmp_path, rng):
    x = rng.standard_normal((2, 5, 7, 6))
    want = cv2_pool(tmp_path, x, f"pool: {pool} global_pooling: true")
    npy = (x.max(axis=(2, 3)) if pool == "MAX" else x.mean(axis=(2, 3)))[:, :, None, None]
    fns = ((global_max_pool2d, global_max_pool2d_reference) if pool == "MAX"
           else (global_avg_pool2d, global_avg_pool2d_reference))
    for f in fns:
        got = f(x)
        assert got.shape == (2, 5, 1, 1) and got.dtype == np.float64
        assert_close(got, npy, "f64_vs_oracle", f.__name__)
        assert_close(got, want, "vs_cv2", f.__name__)
        g32 = f(x.astype(np.float32))
        assert g32.dtype == np.float32
        assert_close(g32, npy, "f32_vs_f64", f.__name__)


def test_cv2_quirk_asymmetric_pad_last_window(tmp_path):
    """cv2 4.x tests the last-window rule against size + pad_end, Caffe's intent (and refnet)
    against size + pad_begin. With pad_b > pad_t cv2 keeps a window that lies entirely in the
    bottom padding and writes 0 there: 6 rows, kernel 2, stride 2, pads (t=0, b=1)."""
    x = np.arange(1.0, 43.0).reshape(1, 1, 6, 7).astype(np.float32)
    cvy = cv2_pool(tmp_path, x, "pool: MAX kernel_h: 2 kernel_w: 2 stride_h: 2 stride_w: 2 "
                                "pad_t: 0 pad_b: 1 pad_l: 1 pad_r: 0")
    ours = max_pool(x, 2, 2, (0, 1, 1, 0))
    assert cvy.shape == (1, 1, 4, 4) and ours.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(cvy[0, 0, 3], 0.0)  # the all-padding row
    np.testing.assert_array_equal(cvy[:, :, :3], ours)


def test_cv2_quirk_empty_window_max_is_zero(tmp_path):
    x = np.arange(1.0, 26.0).reshape(1, 1, 5, 5).astype(np.float32)
    cvy = cv2_pool(tmp_path, x, "pool: MAX kernel_size: 1 stride: 3")
    ours = max_pool(x, 1, 3)
    assert cvy[0, 0, 2, 2] == 0.0 and ours[0, 0, 2, 2] == EMPTY_MAX
    np.testing.assert_array_equal(cvy[0, 0, :2, :2], ours[0, 0, :2, :2])


# --------------------------------------------------------------------------------------
# fast vs reference, hypothesis
# --------------------------------------------------------------------------------------


@st.composite
def pool_params(draw):
    (kh, kw), (sh, sw), pad = draw(pool_window(5, 4))
    h = draw(st.integers(max(1, kh - pad[0] - pad[2]), 13))
    w = draw(st.integers(max(1, kw - pad[1] - pad[3]), 13))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 4)), h, w),
                kernel=(kh, kw), stride=(sh, sw), pad=pad, ceil_mode=draw(st.booleans()),
                divisor=draw(st.sampled_from(["padded", "valid", "kernel"])),
                ties=draw(st.booleans()), nans=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@HYP
@given(pool_params())
def test_pool_fast_vs_reference_hypothesis(p):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal(p["shape"])
    if p["ties"]:
        x = np.round(x)  # many equal values: exercises the first-max rule
    kw = dict(kernel=p["kernel"], stride=p["stride"], pad=p["pad"], ceil_mode=p["ceil_mode"])
    xm = x.copy()
    if p["nans"]:
        xm.flat[rng.choice(x.size, size=min(3, x.size), replace=False)] = np.nan
    for dt in (np.float64, np.float32):
        xd = xm.astype(dt)
        yf, jf = max_pool(xd, return_indices=True, **kw)
        yr, jr = max_pool_reference(xd, return_indices=True, **kw)
        assert yf.dtype == dt and yf.shape == yr.shape
        np.testing.assert_array_equal(yf, yr)
        np.testing.assert_array_equal(jf, jr)
        np.testing.assert_array_equal(max_pool(xd, **kw), yr)  # the max-only kernel
        # every index points at its value (valid windows) in the plane
        flat = xd.reshape(xd.shape[0], xd.shape[1], -1)
        ok = jr >= 0
        picked = np.take_along_axis(flat, np.where(ok, jr, 0).reshape(flat.shape[:2] + (-1,)),
                                    axis=2).reshape(jr.shape)
        np.testing.assert_array_equal(picked[ok], yr[ok])
    ref = avg_pool_reference(x, divisor=p["divisor"], **kw)
    assert_close(avg_pool(x, divisor=p["divisor"], **kw), ref, 1e-14, "fast64")
    got32 = avg_pool(x.astype(np.float32), divisor=p["divisor"], **kw)
    ref_of_32 = avg_pool_reference(x.astype(np.float32).astype(np.float64),
                                     divisor=p["divisor"], **kw)
    assert got32.dtype == np.float32
    assert_close(got32, ref_of_32, "f32_vs_f64", f"avg fast32 {p}")


# --------------------------------------------------------------------------------------
# max unpool
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("unpool", [max_unpool, max_unpool_reference])
def test_max_unpool_round_trip(unpool, rng):
    x = np.abs(rng.standard_normal((2, 3, 6, 8))) + 0.1  # positive: the zeros never win
    y, idx = max_pool(x, 2, 2, return_indices=True)
    u = unpool(y, idx, (6, 8))
    # independent: keep x where it is the maximum of its 2x2 block, zero elsewhere
    blocks = x.reshape(2, 3, 3, 2, 4, 2)
    bmax = blocks.max(axis=(3, 5), keepdims=True)
    want = np.where(blocks == bmax, blocks, 0.0).reshape(x.shape)
    np.testing.assert_array_equal(u, want)
    np.testing.assert_array_equal(max_pool(u, 2, 2), y)  # pooling the unpooled gives y back
    u32 = unpool(y.astype(np.float32), idx, (6, 8))
    assert u32.dtype == np.float32


def test_max_unpool_overlapping_windows_and_odd_size(rng):
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    y, idx = max_pool(x, 3, 2, 1, return_indices=True)  # overlapping: repeated indices
    a = max_unpool(y, idx, (7, 7))
    b = max_unpool_reference(y, idx, (7, 7))
    np.testing.assert_array_equal(a, b)
    nz = a != 0
    np.testing.assert_array_equal(a[nz], x[nz])  # every scattered value sits where it came from
    assert set(np.flatnonzero(nz[0, 0])) == set(idx[0, 0].ravel())


# --------------------------------------------------------------------------------------
# bad input, NaN
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("f", MAX_FNS + AVG_FNS)
def test_pool_bad_input(f):
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ShapeError, match="x must be 4-D"):
        f(x[0], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        f(x.astype(np.int64), 2)
    with pytest.raises(ShapeError, match="smaller than the kernel"):
        f(x, 2, 1, 2)
    with pytest.raises(ShapeError, match="does not fit"):
        f(x, 7)
    with pytest.raises(ShapeError, match="stride"):
        f(x, 2, 0)
    with pytest.raises(ShapeError, match="kernel"):
        f(x, (2, 2, 2))
    if f in AVG_FNS:
        with pytest.raises(ValueError, match="divisor"):
            f(x, 2, divisor="same")


@pytest.mark.parametrize("f", [global_max_pool2d, global_avg_pool2d, global_max_pool2d_reference,
                               global_avg_pool2d_reference])
def test_global_pool_bad_input_and_nan(f):
    with pytest.raises(ShapeError):
        f(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError):
        f(np.zeros((1, 1, 2, 2), np.int32))
    x = np.ones((1, 2, 3, 3))
    x[0, 1, 2, 0] = np.nan
    y = f(x)
    assert y[0, 0, 0, 0] == 1.0 and np.isnan(y[0, 1, 0, 0])


@pytest.mark.parametrize("unpool", [max_unpool, max_unpool_reference])
def test_max_unpool_bad_input(unpool):
    x = np.ones((1, 1, 2, 2))
    with pytest.raises(TypeError, match="integer"):
        unpool(x, np.zeros((1, 1, 2, 2)), (4, 4))
    with pytest.raises(ShapeError, match="shape of x"):
        unpool(x, np.zeros((1, 1, 2, 3), np.int64), (4, 4))
    with pytest.raises(ShapeError, match="out_h"):
        unpool(x, np.full((1, 1, 2, 2), 16, np.int64), (4, 4))
    with pytest.raises(ShapeError, match="out_h"):
        unpool(x, np.full((1, 1, 2, 2), -1, np.int64), (4, 4))
    with pytest.raises(ShapeError, match="out_hw"):
        unpool(x, np.zeros((1, 1, 2, 2), np.int64), (0, 4))


@pytest.mark.parametrize("f", MAX_FNS)
def test_max_pool_nan(f):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = np.nan
    y, idx = f(x, 2, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 4  # the first NaN
    np.testing.assert_array_equal(y[0, 0, 0, 1:], [7.0])
    np.testing.assert_array_equal(y[0, 0, 1], [13.0, 15.0])
    x2 = np.zeros((1, 1, 2, 2))
    x2[0, 0, 1, 1] = np.nan  # NaN last in the window, after larger values
    x2[0, 0, 0, 0] = 5.0
    assert np.isnan(f(x2, 2)[0, 0, 0, 0])


@pytest.mark.parametrize("f", AVG_FNS)
def test_avg_pool_nan(f):
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    y = f(x, 2, 2)
    assert np.isnan(y[0, 0, 0, 0]) and np.isfinite(y[0, 0].ravel()[1:]).all()


@pytest.mark.parametrize("xs,k,p", [
    ((1, 6, 14, 14), (3, 3), (1, 1, 1, 1)),  # GoogLeNet's inception pools
    ((2, 3, 7, 9), (3, 2), (1, 0, 1, 1)),
    ((1, 4, 5, 6), (2, 3), (0, 1, 1, 2)),
    ((1, 2, 3, 4), (1, 3), (0, 2, 0, 1)),
    ((1, 2, 4, 4), (4, 4), (3, 3, 3, 3)),  # windows mostly padding
])
def test_stride1_max_pool_kernel_bitwise_equals_separable(xs, k, p, rng):
    """The stride-1 kernel (-inf padded plane, flat loops) gives the separable kernel's bits,
    signed zeros, NaN and -inf included, and the reference's values."""
    from refnet.kernels import pool as P

    x = rng.standard_normal(xs).astype(np.float32)
    x.flat[::7] = -0.0
    x.flat[::11] = 0.0
    x.flat[3] = np.nan
    x.flat[5] = -np.inf
    ref = max_pool_reference(x, k, 1, p)
    a, b = np.empty_like(ref), np.empty_like(ref)
    e = np.float32(EMPTY_MAX)
    P._max_pool_s1(x, k[0], k[1], 1, 1, p[0], p[1], a, e)
    P._max_pool_sep.serial(x, k[0], k[1], 1, 1, p[0], p[1], b, e)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(max_pool(x, k, 1, p), ref)


@pytest.mark.parametrize("xs", [(1, 16, 12, 16), (2, 3, 7, 9), (1, 2, 15, 20), (1, 2, 5, 4), (1, 1, 3, 2)])
def test_2x2_stride2_max_pool_kernel_bitwise_equals_separable(xs, rng):
    """The one-pass 2x2 stride-2 kernel (VGG-style pools; ceil mode clips the last row/column
    windows of odd sizes) gives the separable kernel's bits, signed zeros, NaN and -inf included,
    and the reference's values; max_pool picks it for such pools."""
    from refnet.kernels import pool as P

    x = rng.standard_normal(xs).astype(np.float32)
    x.flat[::7] = -0.0
    x.flat[::11] = 0.0
    x.flat[min(3, x.size - 1)] = np.nan
    x.flat[min(5, x.size - 1)] = -np.inf
    ref = max_pool_reference(x, 2, 2)
    a, b = np.empty_like(ref), np.empty_like(ref)
    e = np.float32(EMPTY_MAX)
    assert P._is_2x2(2, 2, 2, 2, 0, 0, xs, *ref.shape[2:])
    P._max_pool_2x2(x, 2, 2, 2, 2, 0, 0, a, e)
    P._max_pool_sep.serial(x, 2, 2, 2, 2, 0, 0, b, e)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(max_pool(x, 2, 2), ref)
    assert not P._is_2x2(2, 2, 2, 2, 1, 1, xs, *ref.shape[2:]) and not P._is_2x2(3, 3, 2, 2, 0, 0, xs, 4, 4)
