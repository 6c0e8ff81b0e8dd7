"""The float32 fast paths of the ONNX kernels (issue 17): max ``pool_nd`` in float32 in place
(a maximum is exact, so it must equal a brute-force maximum over the same float32 values bit
for bit, NaN handling included) and ``lrn_onnx`` through Caffe's fast LRN for odd sizes
(against the float64 reference of the ONNX rule)."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest

import refnet.kernels as K


def _max_oracle(x, k, s, d, pads, out):
    """Brute force: the largest in-range value of each window, ignoring NaN (as the reference's
    ``v > acc`` does); -inf when a window holds no number."""
    n, c, h, w = x.shape
    y = np.full((n, c) + tuple(out), -np.inf, np.float32)
    for i, j in itertools.product(range(out[0]), range(out[1])):
        for a, b in itertools.product(range(k[0]), range(k[1])):
            hh, ww = i * s[0] - pads[0] + a * d[0], j * s[1] - pads[1] + b * d[1]
            if 0 <= hh < h and 0 <= ww < w:
                v = x[:, :, hh, ww]
                y[:, :, i, j] = np.where(v > y[:, :, i, j], v, y[:, :, i, j])
    return y


@pytest.mark.parametrize("k,s,d,pads,out", [
    ((3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (4, 5)),
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (7, 8)),   # GoogLeNet's inception pool branch
    ((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (4, 4)),   # ceil mode: the last window reaches past the end
    ((2, 3), (1, 2), (2, 1), (0, 1, 1, 0), (5, 4)),
])
def test_max_pool_nd_float32_is_exact(k, s, d, pads, out):
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 8)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    y = K.pool_nd(x, "max", k, s, d, pads, out)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, _max_oracle(x, k, s, d, pads, out))
    np.testing.assert_array_equal(y, K.pool_nd_reference(x, "max", k, s, d, pads, out))


def test_max_pool_nd_2d_kernel_random_geometries():
    """The 2-D numba kernel over random kernels, strides, dilations, pads and ceil-mode output
    sizes (windows past the end, windows of padding only: -inf), NaNs and infinities included."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        out = tuple(max(1, -(-(size + pads[i] + pads[i + 2] - (k[i] - 1) * d[i] - 1) // s[i]) + 1)
                    for i, size in enumerate((h, w)))
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        x.flat[rng.integers(0, x.size, 3)] = (np.nan, np.inf, -np.inf)
        y = K.pool_nd(x, "max", k, s, d, pads, out)
        np.testing.assert_array_equal(y, _max_oracle(x, k, s, d, pads, out), err_msg=f"{k} {s} {d} {pads} {out}")


def test_lrn_onnx_float32_odd_sizes_against_the_float64_rule():
    x = np.random.default_rng(4).standard_normal((2, 9, 5, 6))
    for size in (1, 3, 5, 7):
        want = K.lrn_onnx_reference(x, size, 1e-2, 0.75, 2.0)
        got = K.lrn_onnx(x.astype(np.float32), size, 1e-2, 0.75, 2.0)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    got = K.lrn_onnx(x.astype(np.float32), 4, 1e-2, 0.6, 1.5)  # even size: the cumulative-sum path
    np.testing.assert_allclose(got, K.lrn_onnx_reference(x, 4, 1e-2, 0.6, 1.5), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_average_pool_nd_by_formula(dtype):
    x = np.random.default_rng(5).standard_normal((2, 4, 13, 11)).astype(dtype)
    y = K.pool_nd(x, "avg", (13, 11), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    want = np.array([[[[sum(float(v) for v in x[n, c].ravel()) / 143]] for c in range(4)] for n in range(2)])
    assert y.dtype == dtype and y.shape == (2, 4, 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-7)


@pytest.mark.parametrize("k,pads,cip", [((7, 7), (0, 0, 1, 1), False),   # GoogLeNet's last pool on 6x6
                                        ((8, 7), (1, 0, 1, 2), False),
                                        ((7, 7), (0, 0, 1, 1), True)])    # padding counted: not global
def test_padded_window_over_the_whole_input_is_a_global_average(k, pads, cip):
    x = np.random.default_rng(6).standard_normal((2, 5, 6, 6)).astype(np.float32)
    y = K.pool_nd(x, "avg", k, (1, 1), (1, 1), pads, (1, 1), count_include_pad=cip)
    want = K.pool_nd_reference(x.astype(np.float64), "avg", k, (1, 1), (1, 1), pads, (1, 1), count_include_pad=cip)
    if not cip:
        np.testing.assert_allclose(want, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), rtol=1e-12)
    assert y.shape == (2, 5, 1, 1) and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k,s,d,pads,out", [
    ((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (4, 5)),   # SqueezeNet's pools (no padding)
    ((3, 3), (2, 2), (1, 1), (0, 0, 1, 1), (4, 5)),   # ceil mode: the last windows hang over
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (9, 11)),  # GoogLeNet's inception pool branch
    ((2, 3), (2, 1), (2, 1), (1, 0, 1, 2), (5, 12)),
])
def test_max_pool_step_is_pool_nd_and_exact(k, s, d, pads, out, rng, monkeypatch):
    """The executor's step for a float32 2-D max pool (``pool_nd_step``) gives the brute-force
    maximum bit for bit (NaN never wins), into its ``out`` and without one, and falls back to
    pool_nd with several worker threads or a non-contiguous input."""
    from refnet.kernels import _workers

    x = rng.standard_normal((1, 3, 9, 11)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    want = _max_oracle(x, k, s, d, pads, out)
    step = K.pool_nd_step(x.shape, np.float32, "max", k, s, d, pads, out)
    assert step.__name__ == "maxpool"
    buf = np.full(want.shape, np.nan, np.float32)
    assert step(x, out=buf) is buf
    np.testing.assert_array_equal(buf, want)
    np.testing.assert_array_equal(step(x), want)
    np.testing.assert_array_equal(step(np.asfortranarray(x), out=buf), want)
    calls = []
    window = importlib.import_module("refnet.kernels.window")
    monkeypatch.setattr(window, "pool_nd", lambda *a, **kw: calls.append(1) or want.copy())
    monkeypatch.setattr(_workers, "workers", lambda: 2)
    step(x, out=buf)
    assert calls == [1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_average_step_is_pool_nd(dtype, rng, monkeypatch):
    """The step of a global average pool writes pool_nd's values (a float64 sum per plane) into
    ``out``; with the switch off (``LEAN_STEP``) the step is pool_nd itself; other pools too."""
    W = importlib.import_module("refnet.kernels.window")
    x = rng.standard_normal((1, 5, 13, 11)).astype(dtype)
    step = W.pool_nd_step(x.shape, dtype, "avg", (13, 11), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    assert step.__name__ == "means"
    buf = np.full((1, 5, 1, 1), np.nan, dtype)
    step(x, out=buf)
    np.testing.assert_array_equal(buf, K.pool_nd(x, "avg", (13, 11), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)))
    np.testing.assert_allclose(buf[:, :, 0, 0], x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6)
    assert W.pool_nd_step(x.shape, dtype, "avg", (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), (11, 9)).__name__ == "plain"
    assert W.pool_nd_step(x.shape, np.float64, "max", (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (6, 5)).__name__ == "plain"
    monkeypatch.setattr(W, "LEAN_STEP", False)
    assert W.pool_nd_step(x.shape, dtype, "avg", (13, 11), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)).__name__ == "plain"


@pytest.mark.parametrize("h,w,ho,wo", [
    (111, 111, 55, 55), (55, 55, 27, 27), (27, 27, 13, 13),  # SqueezeNet 1.1's three pools
    (8, 9, 3, 4),  # floor mode drops the last row (even h: 2*ho + 1 < h)
    (3, 3, 1, 1), (5, 20, 2, 9), (7, 40, 3, 18),
    (3, 259, 1, 129),  # output rows longer than _poolrow.STACK_ROW: heap rows either way
])
def test_max_pool_3x3_stride2_even_odd_kernel(h, w, ho, wo):
    """``_max_pool3s2`` (3x3 / 2, no padding, windows inside): equals the brute-force oracle,
    the float64 reference and the general kernel (switch off) bit for bit, serial and parallel,
    scratch rows on the stack or the heap; NaNs (never win, a window of NaNs only gives -inf),
    +-inf; output rows wider than one vector and narrower, and wider than the stack rows."""
    import refnet.kernels.window as W

    rng = np.random.default_rng(h * 100 + w)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    x.flat[rng.integers(0, x.size, 5)] = (np.nan, np.inf, -np.inf, np.nan, np.inf)
    x[1, 2, :3, :3] = np.nan  # the first window all NaN
    args = ((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (ho, wo))
    assert W._is_3s2(*args[:4], x.shape, (ho, wo))
    y = K.pool_nd(x, "max", *args)
    oracle = _max_oracle(x, *args)
    assert oracle[1, 2, 0, 0] == -np.inf
    np.testing.assert_array_equal(y, oracle)
    np.testing.assert_array_equal(y, K.pool_nd_reference(x.astype(np.float64), "max", *args).astype(np.float32))
    step = W.pool_nd_step(x.shape, np.float32, "max", *args)
    into = np.full_like(y, 7.0)
    assert step(x, into) is into
    np.testing.assert_array_equal(into, oracle)
    for stack in (True, False):  # scratch rows on the stack (STACK_ROWS) or on the heap: the same
        for kernel in (W._max_pool3s2.serial, W._max_pool3s2.parallel):
            got = np.full_like(y, 7.0)
            kernel(x, got, stack)
            np.testing.assert_array_equal(got, oracle)
    old = W.EVEN_ODD
    try:
        W.EVEN_ODD = False
        assert not W._is_3s2(*args[:4], x.shape, (ho, wo))
        np.testing.assert_array_equal(K.pool_nd(x, "max", *args), y)
    finally:
        W.EVEN_ODD = old


def test_max_pool_3x3_stride2_geometries_outside_the_even_odd_kernel():
    """Padding, a window past the end (ceil mode), dilation: not the even/odd kernel, still exact."""
    import refnet.kernels.window as W

    x = np.random.default_rng(5).standard_normal((1, 2, 9, 9)).astype(np.float32)
    for pads, out, d in (((1, 1, 1, 1), (5, 5), (1, 1)), ((0, 0, 0, 0), (5, 5), (1, 1)),
                         ((0, 0, 1, 1), (5, 5), (1, 1)), ((0, 0, 0, 0), (3, 3), (2, 2))):
        args = ((3, 3), (2, 2), d, pads, out)
        assert not W._is_3s2(*args[:4], x.shape, out)
        np.testing.assert_array_equal(K.pool_nd(x, "max", *args), _max_oracle(x, *args))


@pytest.mark.parametrize("hw", [(13, 13), (7, 7), (1, 1), (2, 3), (4, 4), (33, 31)])
def test_global_average_lanes_kernel_against_the_float64_mean(hw, rng, monkeypatch):
    """float32 global averages in one thread (``_plane_means_lanes``, a reassociated float64
    sum): the float64 mean rounded to float32 (to one rounding), NaN / +-inf propagate; equal to
    the plain ``_plane_means`` to float32 rounding; the switch off: ``_plane_means`` itself."""
    W = importlib.import_module("refnet.kernels.window")
    x = (rng.standard_normal((2, 7) + hw) * 3 + 1).astype(np.float32)
    x[1, 2].flat[0] = np.nan
    x[0, 3].flat[-1] = np.inf
    x[1, 4].flat[-1] = -np.inf
    args = (x, "avg", hw, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    y = K.pool_nd(*args)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y, want, rtol=1.2e-7, atol=0)
    lanes = np.empty(14, np.float32)
    W._plane_means_lanes(x.reshape(14, -1), lanes)
    np.testing.assert_array_equal(lanes, y.reshape(14))
    monkeypatch.setattr(W, "MEAN_LANES", False)
    plain = K.pool_nd(*args)
    np.testing.assert_allclose(plain, y, rtol=1.2e-7, atol=0)
    step = W.pool_nd_step(x.shape, np.float32, "avg", hw, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    into = np.empty_like(y)
    step(x, out=into)
    np.testing.assert_array_equal(into, plain)


@pytest.mark.parametrize("shape,axis", [((1, 1000), 1), ((1, 1000), -1), ((1, 1, 37), 2), ((1, 9, 1, 1), 1)])
def test_softmax_step_one_row_against_the_float64_softmax(shape, axis, rng, monkeypatch):
    """The executor's one-row softmax step (``softmax_step``): softmax's values bit for bit (the
    same row kernel), the float64 softmax to float32 rounding, NaN rows NaN, a fresh array per
    call; other shapes / float64 / the switch off: no lean step; a wrong input: softmax itself."""
    S = importlib.import_module("refnet.kernels.softmax")
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    step = S.softmax_step(shape, np.float32, axis)
    assert step is not None
    y = step(x)
    np.testing.assert_array_equal(y, K.softmax(x, axis))
    np.testing.assert_allclose(y, K.softmax_reference(x.astype(np.float64), axis), rtol=3e-6, atol=1e-12)
    assert step(x) is not y and y.shape == shape and y.dtype == np.float32
    x.flat[5] = np.nan
    assert np.isnan(step(x)).all()
    x.flat[5] = np.inf
    np.testing.assert_array_equal(step(x), K.softmax(x, axis))
    assert S.softmax_step((2, 1000), np.float32, 1) is None
    assert S.softmax_step((1, 8), np.float32, 1) is None
    assert S.softmax_step(shape, np.float64, axis) is None
    monkeypatch.setattr(S, "LEAN_STEP", False)
    assert S.softmax_step(shape, np.float32, axis) is None


def test_softmax_step_in_a_program_matches_the_unplanned_softmax(rng):
    """A float32 program's softmax step (planned) gives the generic op's values."""
    from refnet.ops import registry

    spec = registry.OPS["softmax"]
    assert spec.prepare is not None

    class _Node:
        attrs = {"axis": 1}
        name, op = "sm", "softmax"

    class _Ctx:
        dtype = np.float32

    step, takes_out = spec.prepare(_Node(), {}, [(1, 1000)], _Ctx())
    assert takes_out is False
    x = rng.standard_normal((1, 1000)).astype(np.float32)
    np.testing.assert_array_equal(step(x), K.softmax(x, 1))


def test_even_odd_pool_and_global_average_over_worker_threads(monkeypatch):
    """With 3 worker threads (plane blocks, however small: the serial build on each block) the
    even/odd 3x3/2 pool gives the one-thread result bit for bit, and the global average (then
    ``_plane_means``, not the lanes kernel) the float64 mean to float32 rounding."""
    from refnet.kernels import _workers

    W = importlib.import_module("refnet.kernels.window")
    x = np.random.default_rng(9).standard_normal((2, 5, 27, 27)).astype(np.float32)
    x[1, 3, 4, 4] = np.nan
    args = ((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), (13, 13))
    one = K.pool_nd(x, "max", *args)
    monkeypatch.setattr(_workers, "MIN_BLOCK_WORK", 1)
    monkeypatch.setattr(_workers, "SPLIT_PLANES", True)
    before = _workers.workers()
    _workers.set_workers(3)
    try:
        assert len(_workers.ranges(10, x.size)) > 1
        assert W._is_3s2(*args[:4], x.shape, (13, 13))
        np.testing.assert_array_equal(K.pool_nd(x, "max", *args), one)
        np.testing.assert_array_equal(one, _max_oracle(x, *args))
        gap = K.pool_nd(x, "avg", (27, 27), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    finally:
        _workers.set_workers(before)
    np.testing.assert_allclose(gap, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), rtol=1.2e-7)
