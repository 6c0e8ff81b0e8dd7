"""The packed-weight GEMM (refnet.kernels._packgemm) and the conv plan's "packed" algorithm:
the kernel (as Python under NUMBA_DISABLE_JIT=1) and its NumPy twin against float64 matmul
on ragged shapes, conv plans against the float64 reference convolution (1x1, strided 1x1,
3x3, 5x5, batches, activations, residual), NaN/inf propagation, the plan's choice and the A/B
switch, and the several-thread fallback."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from split_fixtures import counting_pool_runs, split_pool  # noqa: F401 - the `pool` fixture

import refnet.kernels.conv as C
from refnet.kernels import _packgemm as PG
from refnet.kernels import _workers
from refnet.kernels._lazyjit import numpy_kernels


# small enough for the kernel body as plain Python (CI's NUMBA_DISABLE_JIT run)
@pytest.mark.parametrize("m,k,n", [(32, 5, 7), (40, 9, 10), (1, 3, 1), (70, 17, 3), (64, 8, 15)])
def test_packed_gemm_vs_float64(m, k, n, rng):
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    want = w.astype(np.float64) @ x.astype(np.float64)
    wp = PG.pack_weights(w)
    assert wp.shape == (-(-m // PG.MR), k, PG.MR)
    assert np.array_equal(wp.transpose(0, 2, 1).reshape(-1, k)[:m], w)  # panels hold W^T, rows padded with 0
    assert not wp.transpose(0, 2, 1).reshape(-1, k)[m:].any()
    got = np.full((m, n), np.nan, np.float32)
    PG.packed_gemm(wp, x.reshape(-1), *PG.matrix_offsets(k, n), got)
    assert_close(got, want, 1e-6, "kernel")
    twin = np.full((m, n), np.nan, np.float32)
    PG.packed_gemm_numpy(wp, x.reshape(-1), *PG.matrix_offsets(k, n), twin)
    assert_close(twin, want, 1e-6, "twin")
    g = PG.PackedGemm(w)
    assert g.nbytes == wp.nbytes
    out = np.empty((m, n), np.float32)
    g(x, out)
    assert_close(out, want, 1e-6, "PackedGemm")


# one column tile (the tile prefetches the whole next panel), several, a partial last panel
@pytest.mark.parametrize("m,k,n", [(96, 6, 5), (70, 9, 22), (64, 130, 8)])
def test_packed_gemm_prefetch_gives_the_same_product(m, k, n, rng):
    """The next-panel prefetch is a hint only: bit-identical results with and without it, and
    the float64 product; the module switch reaches PackedGemm."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    want = w.astype(np.float64) @ x.astype(np.float64)
    wp = PG.pack_weights(w)
    got = {}
    for pf in (False, True, 0, 1, 2):  # (2: into all cache levels, PREFETCH_L1)
        got[pf] = np.full((m, n), np.nan, np.float32)
        PG.packed_gemm(wp, x.reshape(-1), *PG.matrix_offsets(k, n), got[pf], pf)
        assert np.array_equal(got[pf], got[False]), pf
    assert_close(got[True], want, 1e-6, "prefetching kernel")
    assert PG.PREFETCH == PG.enabled(PG.PREFETCH_ENV)
    b, six = np.zeros(m, np.float32), np.float32(6)
    for pf in (0, 1, 2):  # the 16 x 13 tiles' driver (its last columns on the 32 x 7 tile)
        c = np.full((m, n), np.nan, np.float32)
        PG.packed_gemm16_epi(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, pf, False, b, b, False, 0, b, six)
        assert np.array_equal(c, got[False]), pf


@pytest.mark.parametrize("l1", [False, True])
def test_packed_gemm_prefetch_l1_switch(l1, monkeypatch, rng):
    """PackedGemm with the prefetch into L1 (PREFETCH_L1) or L2: the same bits, the float64 product
    (several panels: the prefetch runs; 7 x 7 and 13 x 13 columns: both drivers)."""
    monkeypatch.setattr(PG, "PREFETCH_L1", l1)
    for m, k, n in ((100, 140, 49), (70, 33, 39)):
        w = rng.standard_normal((m, k)).astype(np.float32)
        x = rng.standard_normal((k, n)).astype(np.float32)
        got = np.full((m, n), np.nan, np.float32)
        PG.PackedGemm(w)(x, got)
        assert_close(got, w.astype(np.float64) @ x.astype(np.float64), 1e-6, "PackedGemm")
        plain = np.full((m, n), np.nan, np.float32)
        PG.packed_gemm(PG.pack_weights(w), x.reshape(-1), *PG.matrix_offsets(k, n), plain, False)
        if not PG.load_numba().config.DISABLE_JIT:  # (else PackedGemm runs the NumPy twin)
            assert np.array_equal(got, plain)


@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_packed_gemm_epilogue_vs_float64(act, residual, rng):
    """packed_gemm_epi: act((W @ X + bias) [+ R]) per row panel (partial last panel, a partial
    column tile), NaN from R kept; against float64 and the NumPy twin's epilogue."""
    m, k, n = 40, 9, 10
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = (rng.standard_normal((k, n)) * 2).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if residual else None
    if residual:
        r[3, 4] = np.nan
    want = w.astype(np.float64) @ x.astype(np.float64) + b[:, None]
    if residual:
        want = want + r
    if act == 1:
        want = np.where(want > 0, want, want * slope[:, None])
    elif act == 2:
        want = np.clip(want, 0, 6)
    got = np.full((m, n), np.nan, np.float32)
    cf = got.reshape(-1)
    PG.packed_gemm_epi(PG.pack_weights(w), x.reshape(-1), *PG.matrix_offsets(k, n), got, True, True, b,
                       cf if r is None else r.reshape(-1), residual, act, slope, np.float32(6))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert_close(np.nan_to_num(got), np.nan_to_num(want), 1e-6, "kernel")
    # one pass per panel (_panel_epi), R prefetched (a hint): the same bits
    for step, pepi, pfr in ((0, True, True), (7, True, False), (7, False, False), (0, False, True)):
        again = np.full((m, n), np.nan, np.float32)
        PG.packed_gemm_epi(PG.pack_weights(w), x.reshape(-1), *PG.matrix_offsets(k, n), again, True, True, b,
                           again.reshape(-1) if r is None else r.reshape(-1), residual, act, slope, np.float32(6),
                           step, pepi, pfr)
        assert np.array_equal(again, got, equal_nan=True), (step, pepi, pfr)
    twin = np.full((m, n), np.nan, np.float32)
    PG.PackedGemm(w).offsets(x.reshape(-1), *PG.matrix_offsets(k, n), twin, (b, r, act, slope, np.float32(6)))
    assert_close(np.nan_to_num(twin), np.nan_to_num(want), 1e-6, "PackedGemm")


# m: a partial last panel with rows in its first half only (40, 70) and in both (60); n: whole 16 x 13
# tiles only (39, 52), with a 7-column remainder (33) and a partial one (30); k: two blocks of 128
@pytest.mark.parametrize("m,k,n,act,residual", [(40, 130, 39, 1, True), (60, 9, 52, 0, False), (64, 5, 33, 2, False),
                                                (70, 4, 30, 1, False)])
def test_packed_gemm16_vs_float64_and_the_32x7_tile(m, k, n, act, residual, rng):
    """packed_gemm16_epi (16 x 13 tiles on contiguous columns, the remainder on the 32 x 7 tile):
    against float64, and the same bits as packed_gemm_epi (each output the same chain of blocked
    sums), with and without the epilogue."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if residual else None
    want = w.astype(np.float64) @ x.astype(np.float64) + b[:, None] + (r if residual else 0)
    want = np.where(want > 0, want, want * slope[:, None]) if act == 1 else np.clip(want, 0, 6) if act == 2 else want
    wp = PG.pack_weights(w)
    got = {}
    for name in ("packed_gemm16_epi", "packed_gemm_epi"):
        for epi in (True, False):
            c = got[name, epi] = np.full((m, n), np.nan, np.float32)
            getattr(PG, name)(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, True, epi, b,
                   c.reshape(-1) if r is None else r.reshape(-1), residual, act, slope, np.float32(6))
    for step in (0, 1, 2):  # its epilogue by _panel_epi, R prefetched; one call per half panel or per tile(s)
        c = np.full((m, n), np.nan, np.float32)
        PG.packed_gemm16_epi(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, True, True, b,
                             c.reshape(-1) if r is None else r.reshape(-1), residual, act, slope, np.float32(6), True,
                             True, step)
        assert np.array_equal(c, got["packed_gemm16_epi", True]), step
    assert_close(got["packed_gemm16_epi", True], want, 1e-6, "16 x 13 tiles")
    assert_close(got["packed_gemm16_epi", False], w.astype(np.float64) @ x.astype(np.float64), 1e-6, "no epilogue")
    for epi in (True, False):
        assert np.array_equal(got["packed_gemm16_epi", epi], got["packed_gemm_epi", epi])


def test_tall16_rule_and_switch(monkeypatch, rng):
    """PackedGemm takes the 16 x 13 tiles on contiguous columns of 13 x 13 maps (SqueezeNet conv10)
    while TALL16, not on strided columns, other maps (7 x 7, 14 x 14) or one row; same product."""
    assert PG.tall16_fits(np.arange(169, dtype=np.uint64) + np.uint64(5))
    assert not PG.tall16_fits(np.arange(169, dtype=np.uint64) * np.uint64(2))
    assert not PG.tall16_fits(np.arange(49, dtype=np.uint64))
    assert not PG.tall16_fits(np.arange(196, dtype=np.uint64))
    assert not PG.tall16_fits(np.arange(13, dtype=np.uint64))
    assert PG.tall16_fits(np.arange(26, dtype=np.uint64))
    monkeypatch.setattr(PG, "TALL16", False)
    assert not PG.tall16_fits(np.arange(169, dtype=np.uint64))
    monkeypatch.undo()
    w = rng.standard_normal((70, 3)).astype(np.float32)
    x = rng.standard_normal((3, 169)).astype(np.float32)
    got = np.empty((70, 169), np.float32)
    PG.PackedGemm(w)(x, got)
    assert_close(got, w.astype(np.float64) @ x.astype(np.float64), 1e-6, "PackedGemm")

@pytest.mark.parametrize("residual", [False, True])
def test_fused_epilogue_switch_gives_the_same_bits(residual, monkeypatch, rng):
    """The conv plan's packed path with the epilogue per row panel (FUSED) or as a pass over C
    afterwards: bit-identical."""
    xs, ws = (2, 12, 6, 7), (70, 12, 3, 3)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, pad=1, algorithm="packed", activation="relu6", residual=residual)
    r = rng.standard_normal(plan.y_shape).astype(np.float32) * 4 if residual else None
    got = []
    for fused in (True, False):
        monkeypatch.setattr(PG, "FUSED", fused)
        got.append(plan(x, residual=r) if residual else plan(x))
    assert np.array_equal(got[0], got[1])


def test_long_reductions_round_like_the_blas():
    """K = 9216 positive products (rounding errors add up): summed in blocks of 128, the packed
    GEMM stays within 2x np.matmul's float32 error against float64 (one FMA chain over all K:
    13x here, and yolov2-tiny's 4x4 layers broke the suite's float32 tolerance)."""
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 1, (64, 9216)).astype(np.float32)
    x = rng.uniform(0, 1, (9216, 7)).astype(np.float32)
    want = w.astype(np.float64) @ x.astype(np.float64)
    got = np.empty((64, 7), np.float32)
    PG.PackedGemm(w)(x, got)
    blas = float(np.abs(w @ x - want).max() / want.max())
    assert float(np.abs(got - want).max() / want.max()) <= 2 * blas + 1e-7


def test_conv_offsets_read_the_im2col(rng):
    """X[k, j] = img[kofs[k] + coffs[j]] is the im2col (rows (ci, p, q), columns (oh, ow)),
    against explicit loops; a strided, dilated 2x3 kernel on a 3-channel 7x8 image."""
    c, h, w, kh, kw, sh, sw, dh, dw = 3, 7, 8, 2, 3, 2, 1, 2, 2
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    img = rng.standard_normal((c, h, w)).astype(np.float32)
    kofs, coffs = PG.conv_offsets(c, h, w, kh, kw, sh, sw, dh, dw, ho, wo)
    got = img.reshape(-1)[kofs[:, None] + coffs[None, :]]
    want = np.empty((c * kh * kw, ho * wo), np.float32)
    for ci in range(c):
        for p in range(kh):
            for q in range(kw):
                for oh in range(ho):
                    for ow in range(wo):
                        want[(ci * kh + p) * kw + q, oh * wo + ow] = img[ci, oh * sh + p * dh, ow * sw + q * dw]
    assert np.array_equal(got, want)


def test_packed_gemm_propagates_nan_and_inf(rng):
    w = rng.standard_normal((33, 6)).astype(np.float32)
    x = rng.standard_normal((6, 9)).astype(np.float32)
    x[2, 4] = np.nan
    x[5, 7] = np.inf
    want = w.astype(np.float64) @ x.astype(np.float64)
    got = np.empty((33, 9), np.float32)
    PG.packed_gemm(PG.pack_weights(w), x.reshape(-1), *PG.matrix_offsets(6, 9), got)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
    assert np.isnan(got[:, 4]).all() and np.array_equal(np.sign(got[:, 7]), np.sign(want[:, 7]))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-5, atol=1e-5)


# (x shape, w shape, kwargs): 1x1, strided 1x1, 3x3 and 5x5 with padding, stride 2, batches
CONVS = {
    "1x1": ((1, 40, 5, 5), (70, 40, 1, 1), {}),
    "1x1_s2_batch": ((2, 24, 7, 6), (33, 24, 1, 1), dict(stride=2)),
    "3x3_pad": ((2, 12, 6, 7), (64, 12, 3, 3), dict(pad=1)),
    "3x3_s2_asym": ((1, 9, 9, 8), (40, 9, 3, 3), dict(stride=2, pad=(1, 0, 1, 1))),
    "5x5_dilated": ((1, 6, 9, 9), (35, 6, 5, 5), dict(pad=2, dilation=(1, 2))),
}


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("activation", [None, "relu", "prelu", "relu6"])
@pytest.mark.parametrize("residual", [False, True])
def test_packed_conv_vs_reference(name, activation, residual, rng):
    xs, ws, kw = CONVS[name]
    x = rng.standard_normal(xs).astype(np.float32) * 2
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, ws[0]).astype(np.float32) if activation == "prelu" else 0.1
    plan = C.conv2d_plan(xs, w, b, algorithm="packed", activation=activation, negative_slope=slope,
                         residual=residual, **kw)
    assert plan.algorithm == "packed"
    y = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    r = rng.standard_normal(y.shape).astype(np.float32) if residual else None
    if residual:
        y = y + r
    if activation in ("relu", "prelu"):
        s = np.asarray(slope, np.float64)
        y = np.where(y > 0, y, y * (s.reshape(1, -1, 1, 1) if s.ndim else s))
    elif activation == "relu6":
        y = np.clip(y, 0.0, 6.0)
    got = plan(x, residual=r) if residual else plan(x)
    assert got.dtype == np.float32
    assert_close(got, y, "f32_vs_f64_long", name)
    with numpy_kernels():  # the NumPy twins (small nets without numba)
        assert_close(plan(x, residual=r) if residual else plan(x), y, "f32_vs_f64_long", f"{name} twins")


@pytest.mark.parametrize("stride", [2, (3, 2)])
def test_strided_1x1_on_a_subsampled_copy(stride, monkeypatch, rng):
    """Strided unpadded 1x1 convs read a contiguous copy of their pixels (SUBSAMPLE) or the
    input in place: the same sums (bit-identical), the float64 reference, a batch of 2; the
    plan follows the switch between calls."""
    xs, ws = (2, 24, 9, 7), (40, 24, 1, 1)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, stride=stride, algorithm="packed", activation="relu")
    want = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                         stride=stride), 0)
    got = {}
    for sub in (True, False, True):
        monkeypatch.setattr(PG, "SUBSAMPLE", sub)
        got[sub] = plan(x)
        assert_close(got[sub], want, "f32_vs_f64_long", f"subsample {sub}")
    assert np.array_equal(got[True], got[False])


def test_packed_conv_nonfinite_like_reference(rng):
    xs, ws = (1, 8, 6, 6), (40, 8, 3, 3)
    x = rng.standard_normal(xs).astype(np.float32)
    x[0, 3, 2, 2] = np.nan
    x[0, 5, 4, 1] = -np.inf
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    got = C.conv2d_plan(xs, w, b, algorithm="packed", pad=1)(x)
    want = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), pad=1)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want)) and np.isnan(want).any()
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)


def test_choice_and_switch(monkeypatch):
    f32 = np.float32
    monkeypatch.delenv(PG.ENV, raising=False)
    # ResNet-50's 7x7 stage: 1x1 and the 3x3 that was Winograd; 14x14 1x1 with K >= 256
    assert PG.choose("gemm1x1", f32, 1, 2048, 512, 49) == "packed"
    assert PG.choose("winograd", f32, 1, 512, 4608, 49) == "packed"
    assert PG.choose("gemm1x1", f32, 1, 256, 1024, 196) == "packed"
    assert PG.choose("gemm1x1", f32, 1, 1024, 256, 196, stride1=True, residual=True) == "packed"
    # strided 1x1 on larger maps with K >= 256 (on a subsampled copy)
    assert PG.choose("gemm1x1", f32, 1, 512, 256, 784) == "packed"
    assert C.conv2d_plan((1, 256, 56, 56), np.zeros((512, 256, 1, 1), f32), stride=2).algorithm == "packed"
    # not: larger maps with short K, short K, Winograd on 14x14, float64, groups, depthwise/direct
    assert PG.choose("gemm1x1", f32, 1, 256, 128, 784) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 1024, 128, 196) == "gemm1x1"
    assert PG.choose("winograd", f32, 1, 256, 2304, 196) == "winograd"
    assert PG.choose("gemm1x1", np.float64, 1, 2048, 512, 49) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 2, 2048, 512, 49) == "gemm1x1"
    assert PG.choose("direct", f32, 1, 4, 4608, 49) == "direct"
    w = np.zeros((512, 1024, 1, 1), f32)
    assert C.conv2d_plan((1, 1024, 7, 7), w).algorithm == "packed"
    assert C.conv2d_plan((1, 1024, 7, 7), w.astype(np.float64)).algorithm == "gemm1x1"
    monkeypatch.setenv(PG.ENV, "0")
    assert C.conv2d_plan((1, 1024, 7, 7), w).algorithm == "gemm1x1"


@pytest.mark.parametrize("name", ["1x1", "3x3_s2_asym"])
def test_several_threads_fall_back_to_the_split_blas_paths(pool, name, rng):
    """With the worker pool the packed plan runs the 1x1 / im2col split paths (float32
    rounding-level differences from the one-thread packed GEMM)."""
    xs, ws, kw = CONVS[name]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, algorithm="packed", activation="relu", **kw)
    want = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw), 0)
    split, runs = counting_pool_runs(plan, x)
    assert runs, "the split path ran"
    assert_close(split, want, "f32_vs_f64_long", name)
    _workers.set_workers(1)
    assert_close(plan(x), want, "f32_vs_f64_long", name)


@pytest.mark.parametrize("n", [1, 2])
def test_winograd_gemms_on_packed_weights(n, monkeypatch, rng):
    """One-thread F(2,3) convs with K >= MIN_K input channels run their 16 GEMMs on packed
    weights (WinoGemms): against the float64 reference, with bias and ReLU, a batch of 2; the
    call-time switch gives np.matmul's result within rounding; narrow convs keep np.matmul."""
    xs, ws = (n, 256, 6, 5), (64, 256, 3, 3)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, pad=1, algorithm="winograd", activation="relu")
    assert isinstance(plan.wino_packed, PG.WinoGemms) and len(plan.wino_packed.gemms) == 16
    want = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                         pad=1), 0)
    got = plan(x)
    assert_close(got, want, "f32_vs_f64_long", "packed Winograd GEMMs")
    monkeypatch.setattr(PG, "WINO_PACKED", False)
    assert_close(plan(x), got, 1e-5, "np.matmul Winograd GEMMs")
    narrow = C.conv2d_plan((1, 128, 6, 5), w[:, :128], b, pad=1, algorithm="winograd")
    assert narrow.wino_packed is None
    monkeypatch.setattr(PG, "WINO_PACKED", True)
    assert C.conv2d_plan(xs, w.astype(np.float64), pad=1, algorithm="winograd").wino_packed is None


# full 32 x 7 tiles only (64, 49), with a partial last column tile (40: 5 full) and a partial last
# panel (70 rows), several k blocks (130), one column (1)
# (16 x 13 tiles: 39 and 52 columns, whole tiles; 40: and a 32 x 7 remainder; 70 rows: a last panel
# of 6 rows, scalar stores)
@pytest.mark.parametrize("m,k,n", [(64, 9, 49), (70, 130, 40), (96, 5, 1), (32, 3, 7), (70, 130, 39), (48, 7, 52)])
def test_packed_gemm_vector_stores_same_bits(m, k, n, rng):
    """The full tiles' vector-transpose stores (_store7 / _store13, VSTORE): the same bits as the
    scalar stores, every element written once (C starts NaN), the float64 product; through
    PackedGemm."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    wp, six = PG.pack_weights(w), np.float32(6)
    got = {}
    for vs in (False, True):
        for step in (0, 7):  # (one call per panel; per tile)
            c = got[vs, step] = np.full((m, n), np.nan, np.float32)
            PG.packed_gemm_epi(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, 1, True, b, b, False, 2, b, six,
                               step, True, False, vs)
    for key, c in got.items():
        assert np.array_equal(c, got[False, 0]), key
    want = np.clip(w.astype(np.float64) @ x.astype(np.float64) + b[:, None], 0, 6)
    assert_close(got[True, 0], want, "f32_vs_f64", "vector stores")
    for vs in (False, True):  # the 16 x 13 tiles (_store13 on full ones), the last columns on the 32 x 7 tile
        for step in (0, 1):
            c = np.full((m, n), np.nan, np.float32)
            PG.packed_gemm16_epi(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, 1, True, b, b, False, 2, b, six, True,
                                 False, step, vs, vs)
            assert np.array_equal(c, got[False, 0]), (vs, step)
    out = np.full((m, n), np.nan, np.float32)
    PG.PackedGemm(w)(x, out)
    assert_close(out, w.astype(np.float64) @ x.astype(np.float64), "f32_vs_f64", "PackedGemm")
