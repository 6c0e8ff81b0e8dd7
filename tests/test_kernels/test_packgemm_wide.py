"""The wide packed GEMM (refnet.kernels._packgemm.packed_gemm_wide) and the conv plan's
"packedwide" algorithm (stride-1 1x1 convs on wide maps, bias / residual / activation in the
stores): the kernel (as Python under NUMBA_DISABLE_JIT=1) and its NumPy twin against float64
on ragged shapes (partial row panels, a last column tile that overlaps, K over one block of
128), conv plans against the float64 reference convolution, NaN/inf propagation, the plan's
choice and the A/B switch, and the several-thread fallback."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from split_fixtures import counting_pool_runs, split_pool  # noqa: F401 - the `pool` fixture

import refnet.kernels.conv as C
from refnet.kernels import _packgemm as PG
from refnet.kernels import _workers
from refnet.kernels._lazyjit import jit_disabled, numpy_kernels

ACTS = {None: 0, "relu": 1, "prelu": 1, "relu6": 2}


def _epilogue(y, r, act, slope):
    """act(y [+ r]) in float64, y (M, ...) and slope (M,) per row; act as the kernels code it."""
    if r is not None:
        y = y + r
    if act == 1:
        s = np.asarray(slope, np.float64).reshape((-1,) + (1,) * (y.ndim - 1))
        y = np.where(y > 0, y, y * s)
    elif act == 2:
        y = np.clip(y, 0.0, 6.0)
    return y


def _want(w, x, b, r, act, slope):
    """act((w @ x + b) [+ r]) in float64 (the epilogue's order)."""
    return _epilogue(w.astype(np.float64) @ x.astype(np.float64) + b.astype(np.float64)[:, None], r, act, slope)


# small enough for the kernel body as plain Python (CI's NUMBA_DISABLE_JIT run)
@pytest.mark.parametrize("m,k,n,nbw", [(8, 5, 32, 32), (13, 9, 40, 32), (16, 130, 33, 64), (3, 4, 100, 64),
                                       (9, 3, 70, 128)])
@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_packed_gemm_wide_vs_float64(m, k, n, nbw, act, residual, rng):
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = (rng.standard_normal((k, n)) * 2).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if residual else None
    want = _want(w, x, b, r, act, slope)
    wq = PG.pack_weights(w, PG.MRW)
    assert wq.shape == (-(-m // PG.MRW), k, PG.MRW)
    got = np.full((m, n), np.nan, np.float32)
    PG.packed_gemm_wide(wq, x, got, b, got if r is None else r, residual, act, slope, np.float32(6), nbw)
    assert_close(got, want, "f32_vs_f64", "kernel")
    twin = np.full((m, n), np.nan, np.float32)
    PG.packed_gemm_wide_numpy(w, x, twin, b, r, act, slope, np.float32(6))
    assert_close(twin, want, "f32_vs_f64", "twin")
    out = np.full((m, n), np.nan, np.float32)
    PG.WideGemm(w)(x, out, b, r, act, slope, np.float32(6))
    assert_close(out, want, "f32_vs_f64", "WideGemm")


@pytest.mark.parametrize("m,k,n,nbw", [(13, 9, 100, 64), (16, 5, 70, 32)])
def test_packed_gemm_wide_prefetch_gives_the_same_result(m, k, n, nbw, monkeypatch, rng):
    """The prefetches of C / R rows (pfe: 1 a tile's own, 2 the next tile's or the next row
    panel's, WIDE_PF_NEXT) and of X's next column tile (pfx) are hints only:
    bit-identical results in every combination, and the float64 result; the module switches
    reach WideGemm."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    slope = np.full(m, 0.1, np.float32)
    wq = PG.pack_weights(w, PG.MRW)
    got = []
    for pfe, pfx in ((False, False), (True, False), (False, True), (True, True), (2, False), (2, True)):
        got.append(np.full((m, n), np.nan, np.float32))
        PG.packed_gemm_wide(wq, x, got[-1], b, r, True, 1, slope, np.float32(6), nbw, pfe, pfx)
        assert np.array_equal(got[-1], got[0])
    assert_close(got[0], _want(w, x, b, r, 1, slope), "f32_vs_f64", "kernel")
    assert PG.WIDE_PREFETCH == PG.WIDE_PREFETCH_X == PG.enabled(PG.PREFETCH_ENV)
    for on in (True, False):
        monkeypatch.setattr(PG, "WIDE_PF_NEXT", on)
        out = np.full((m, n), np.nan, np.float32)
        PG.WideGemm(w)(x, out, b, r, 1, slope, np.float32(6))
        assert_close(out, _want(w, x, b, r, 1, slope), "f32_vs_f64", f"WideGemm WIDE_PF_NEXT={on}")



@pytest.mark.parametrize("act", [0, 1, 2])
def test_residual_in_place(act, rng):
    """R may be C itself (the residual's buffer written over): the last partial tile, which
    recomputes columns of the tile before, must not store those from the R it finds there."""
    m, k, n = 10, 6, 75
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    slope = np.full(m, 0.2, np.float32)
    c = r.copy()
    PG.packed_gemm_wide(PG.pack_weights(w, PG.MRW), x, c, b, c, True, act, slope, np.float32(6), 64)
    assert_close(c, _want(w, x, b, r, act, slope), "f32_vs_f64", "in place")

@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_one_call_per_tile_or_per_block_give_the_same_result(act, residual, monkeypatch, rng):
    """The tile function over a whole column block (WIDE_RUN, step 0) or called per 32-column
    tile (step NRW): bit-identical results, partial last tiles included, and the float64 result;
    the switch reaches WideGemm."""
    m, k, n, nbw = 11, 7, 101, 64
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if residual else None
    slope = np.full(m, 0.1, np.float32)
    wq = PG.pack_weights(w, PG.MRW)
    got = []
    for step in (0, PG.NRW):
        got.append(np.full((m, n), np.nan, np.float32))
        PG.packed_gemm_wide(wq, x, got[-1], b, got[-1] if r is None else r, residual, act, slope, np.float32(6), nbw,
                            True, True, step)
    assert np.array_equal(got[1], got[0])
    assert_close(got[0], _want(w, x, b, r, act, slope), "f32_vs_f64", "kernel")
    for on in (True, False):
        monkeypatch.setattr(PG, "WIDE_RUN", on)
        out = np.full((m, n), np.nan, np.float32)
        PG.WideGemm(w)(x, out, b, r, act, slope, np.float32(6))
        assert_close(out, _want(w, x, b, r, act, slope), "f32_vs_f64", f"WideGemm WIDE_RUN={on}")


@pytest.mark.parametrize("n,nbw,step", [(41, 32, 0), (48, 64, 0), (169, 64, 0), (169, 64, 32), (57, 32, 0),
                                         (70, 64, 0)])
@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("residual", [False, True, "in place"])
def test_16_column_tail_tile(n, nbw, step, act, residual, monkeypatch, rng):
    """At most 16 columns after the last whole 32-column tile (N % 32 in 1..16: 41, 48, 169; not
    57, 70) are one 16-column tile (tail=True, _tile_wide16 at N - 16): bit-identical to the
    32-column tile at N - 32 (same accumulation order per column), per block or per tile, with
    a residual (also in place: C is R, the lanes before the tail read already-stored columns)
    and the float64 result; the switch reaches WideGemm."""
    m, k = 13, 133  # (a partial row panel; K over one block of 128)
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if residual else None
    slope = np.full(m, 0.15, np.float32)
    want = _want(w, x, b, r, act, slope)
    wq = PG.pack_weights(w, PG.MRW)
    got = []
    for tail in (False, True):
        c = r.copy() if residual == "in place" else np.full((m, n), np.nan, np.float32)
        res = c if r is None or residual == "in place" else r
        PG.packed_gemm_wide(wq, x, c, b, res, r is not None, act, slope, np.float32(6), nbw, 2, True, step, tail)
        got.append(c)
    assert np.array_equal(got[1], got[0])
    assert_close(got[1], want, "f32_vs_f64", "tail")
    for on in (True, False):
        monkeypatch.setattr(PG, "WIDE_TAIL16", on)
        out = np.full((m, n), np.nan, np.float32)
        PG.WideGemm(w)(x, out, b, r, act, slope, np.float32(6))
        assert_close(out, want, "f32_vs_f64", f"WideGemm WIDE_TAIL16={on}")


def test_long_reductions_round_like_the_blas():
    """K = 4608 positive products: blocks of 128 keep the error within 2x np.matmul's."""
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 1, (16, 4608)).astype(np.float32)
    x = rng.uniform(0, 1, (4608, 32)).astype(np.float32)
    want = w.astype(np.float64) @ x.astype(np.float64)
    got = np.empty((16, 32), np.float32)
    zero = np.zeros(16, np.float32)
    PG.WideGemm(w)(x, got, zero, None, 0, zero, np.float32(6))
    blas = float(np.abs(w @ x - want).max() / want.max())
    assert float(np.abs(got - want).max() / want.max()) <= 2 * blas + 1e-7


@pytest.mark.parametrize("m,k,n,nbw", [(16, 16, 64, 64), (24, 7, 41, 32), (8, 130, 169, 64)])
@pytest.mark.parametrize("act", [0, 1])
def test_whole_tiles_store_straight_from_the_accumulators(m, k, n, nbw, act, monkeypatch, rng):
    """Whole tiles (8 rows, 32 or 16 columns) without a residual and with ReLU / leaky ReLU /
    none store each row straight from the accumulators (WIDE_FAST_EPI, a vector row store):
    the float64 result, NaN / inf / -inf where the float64 sum has them, and bit for bit what
    the general per-row epilogue stores (including the overlapping last tiles: n = 41, 169)."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    x[1, 3] = np.nan
    x[min(k - 1, 4), n - 1] = np.inf
    b = rng.standard_normal(m).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, m).astype(np.float32)
    want = _want(w, x, b, None, act, slope)
    wq = PG.pack_weights(w, PG.MRW)
    outs = {}
    for fe in (True, False):
        got = np.full((m, n), np.nan, np.float32)
        PG.packed_gemm_wide(wq, x, got, b, got, False, act, slope, np.float32(6), nbw, 0, False, 0, True, fe)
        outs[fe] = got
    for g in outs.values():
        assert np.array_equal(np.isnan(g), np.isnan(want)) and np.array_equal(np.isinf(g), np.isinf(want))
        assert np.isnan(want).any() and np.isinf(want).any()
        fin = np.isfinite(want)
        assert_close(g[fin], want[fin], "f32_vs_f64", f"fast epilogue {fe}")
    assert np.array_equal(outs[True], outs[False], equal_nan=True)
    monkeypatch.setattr(PG, "WIDE_FAST_EPI", True)
    viaplan = np.full((m, n), np.nan, np.float32)
    PG.WideGemm(w)(x, viaplan, b, None, act, slope, np.float32(6))
    if jit_disabled():  # (WideGemm runs its NumPy twin there: rounding-level differences)
        assert_close(viaplan[fin], want[fin], "f32_vs_f64", "WideGemm")
    else:
        assert np.array_equal(viaplan, outs[True], equal_nan=True)


@pytest.mark.parametrize("act", [0, 1, 2])
def test_packed_gemm_wide_propagates_nan_and_inf(act, rng):
    """NaN and inf from X and from the residual reach exactly the outputs they reach in the
    float64 sum (ReLU6 and leaky ReLU keep NaN)."""
    m, k, n = 11, 6, 37
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    x[2, 4] = np.nan
    x[5, 36] = np.inf  # (a column of the overlapping last tile)
    b = rng.standard_normal(m).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    r[3, 10] = -np.inf
    r[9, 0] = np.nan
    slope = np.full(m, 0.1, np.float32)
    want = _want(w, x, b, r, act, slope)
    got = np.empty((m, n), np.float32)
    PG.packed_gemm_wide(PG.pack_weights(w, PG.MRW), x, got, b, r, True, act, slope, np.float32(6), 32)
    twin = np.empty((m, n), np.float32)
    PG.packed_gemm_wide_numpy(w, x, twin, b, r, act, slope, np.float32(6))
    for g in (got, twin):
        assert np.array_equal(np.isnan(g), np.isnan(want)) and np.array_equal(np.isinf(g), np.isinf(want))
        assert np.isnan(want).any()
        fin = np.isfinite(want)
        np.testing.assert_allclose(g[fin], want[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xs,co", [((1, 40, 6, 7), 70), ((2, 24, 5, 9), 33)])
@pytest.mark.parametrize("activation", [None, "relu", "prelu", "relu6"])
@pytest.mark.parametrize("residual", [False, True])
def test_packedwide_conv_vs_reference(xs, co, activation, residual, rng):
    x = rng.standard_normal(xs).astype(np.float32) * 2
    w = rng.standard_normal((co, xs[1], 1, 1)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, co).astype(np.float32) if activation == "prelu" else np.full(co, 0.1, np.float32)
    plan = C.conv2d_plan(xs, w, b, algorithm="packedwide", activation=activation,
                         negative_slope=slope if activation == "prelu" else 0.1, residual=residual)
    assert plan.algorithm == "packedwide"
    y = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    r = rng.standard_normal(y.shape).astype(np.float32) if residual else None
    # (channels first for the per-row epilogue)
    y = _epilogue(y.transpose(1, 0, 2, 3), None if r is None else r.transpose(1, 0, 2, 3), ACTS[activation],
                  slope).transpose(1, 0, 2, 3)
    got = plan(x, residual=r) if residual else plan(x)
    assert got.dtype == np.float32
    assert_close(got, y, "f32_vs_f64_long", "packedwide")
    with numpy_kernels():  # the NumPy twins (small nets without numba)
        assert_close(plan(x, residual=r) if residual else plan(x), y, "f32_vs_f64_long", "packedwide twins")


@pytest.mark.parametrize("xs,co", [((1, 64, 13, 13), 16), ((1, 32, 14, 13), 72)])
def test_plain_packedwide_is_chosen_and_matches_the_reference(xs, co, rng):
    """A stride-1 1x1 conv without a residual on few rows (a fire module's squeeze, an expand1x1
    on a small map) plans as "packedwide" by itself and agrees with the float64 reference."""
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((co, xs[1], 1, 1)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, activation="relu")
    assert plan.algorithm == "packedwide"
    want = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)), 0)
    assert_close(plan(x), want, "f32_vs_f64_long", "plain packedwide")


def test_packedwide_needs_its_shape():
    w = np.zeros((40, 8, 1, 1), np.float32)
    with pytest.raises(ValueError, match="packedwide"):
        C.conv2d_plan((1, 8, 8, 8), w, stride=2, algorithm="packedwide")
    with pytest.raises(ValueError, match="packedwide"):
        C.conv2d_plan((1, 8, 4, 4), w, algorithm="packedwide")  # 16 < NRW pixels
    with pytest.raises(ValueError, match="packedwide"):
        C.conv2d_plan((1, 8, 8, 8), w.astype(np.float64), algorithm="packedwide")
    with pytest.raises(ValueError, match="packedwide"):
        C.conv2d_plan((1, 8, 8, 8), np.zeros((40, 8, 3, 3), np.float32), pad=1, algorithm="packedwide")


def test_choice_and_switch(monkeypatch):
    f32 = np.float32
    monkeypatch.delenv(PG.ENV, raising=False)
    # ResNet-50's 56x56 / 28x28 1x1 convs with a residual, 14x14 with K < 256 (the packed GEMM
    # takes K >= 256 on 14x14)
    wide = dict(stride1=True, residual=True)
    assert PG.choose("gemm1x1", f32, 1, 256, 64, 3136, **wide) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 512, 128, 784, **wide) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 1024, 128, 196, **wide) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 1024, 256, 196, **wide) == "packed"
    assert PG.choose("gemm1x1", f32, 1, 256, 1024, 196, **wide) == "packed"
    # without a residual: at least WIDE_PLAIN_MIN_M rows, switch WIDE_PLAIN
    assert PG.choose("gemm1x1", f32, 1, 64, 256, 3136, stride1=True) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 32, 256, 729, stride1=True) == "packedwide"  # (the few-row rule below)
    assert PG.choose("gemm1x1", f32, 1, 512, 512, 361, stride1=True) == "packedwide"  # (WIDE_PLAIN_MID: 197..783 px)
    monkeypatch.setattr(PG, "WIDE_PLAIN_MID", False)  # (then the BLAS below 784 pixels)
    assert PG.choose("gemm1x1", f32, 1, 512, 512, 361, stride1=True) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 512, 128, 784, stride1=True) == "packedwide"
    monkeypatch.setattr(PG, "WIDE_PLAIN_MID", True)
    assert PG.choose("gemm1x1", f32, 1, 512, 512, 196, stride1=True) == "packed"  # (the packed GEMM up to MAX_N)
    assert PG.choose("gemm1x1", f32, 1, 128, 64, 5625, stride1=True) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 128, 512, 784, stride1=True) == "packedwide"
    monkeypatch.setattr(PG, "WIDE_PLAIN", False)
    assert PG.choose("gemm1x1", f32, 1, 64, 256, 3136, stride1=True) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 256, 64, 3136, **wide) == "packedwide"
    monkeypatch.setattr(PG, "WIDE_PLAIN", True)
    # not: strided, short K, few rows, small maps, float64, groups
    assert PG.choose("gemm1x1", f32, 1, 256, 64, 3136, residual=True) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 64, 16, 3025, **wide) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 16, 96, 3025, **wide) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 256, 64, 169, **wide) == "gemm1x1"
    assert PG.choose("gemm1x1", np.float64, 1, 256, 64, 3136, **wide) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 2, 256, 64, 3136, **wide) == "gemm1x1"
    # without a residual: few rows (SqueezeNet's squeeze convs), or up to 256 rows on maps up to 1024
    # pixels (its expand1x1 convs); not K < 16, small maps, many rows on a wide map, or with the switch off
    plain = dict(stride1=True)
    assert PG.choose("gemm1x1", f32, 1, 16, 64, 3025, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 48, 384, 169, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 256, 64, 169, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 128, 32, 729, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 64, 16, 3025, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 64, 8, 3025, **plain) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 64, 64, 49, **plain) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 512, 128, 5625, **plain) == "gemm1x1"
    assert PG.choose("gemm1x1", f32, 1, 512, 128, 784, **plain) == "packedwide"  # (the 784..3136-pixel rule)
    assert PG.choose("gemm1x1", f32, 1, 128, 256, 3136, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 512, 256, 1600, **plain) == "packedwide"
    assert PG.choose("gemm1x1", f32, 1, 512, 256, 361, **plain) == "packedwide"  # (WIDE_PLAIN_MID)
    assert PG.choose("gemm1x1", f32, 1, 16, 64, 3025) == "gemm1x1"  # strided
    monkeypatch.setattr(PG, "WIDE_PLAIN", False)
    assert PG.choose("gemm1x1", f32, 1, 16, 64, 3025, **plain) == "gemm1x1"
    monkeypatch.setattr(PG, "WIDE_PLAIN", True)
    # im2col convs on any map (no im2col copy): conv1-like shapes and 3x3/2 on 56x56; not K < 128 (plans
    # below: 8 input channels, since RGB convs take kernels/_direct.py's direct_cin first)
    assert PG.choose("im2col", f32, 1, 64, 147, 12544) == "packed"
    assert PG.choose("im2col", f32, 1, 128, 1152, 784) == "packed"
    assert PG.choose("im2col", f32, 1, 64, 27, 12321) == "im2col"
    assert PG.choose("im2col", f32, 1, 32, 800, 784) == "packed"  # (from one panel of rows: IM2COL_MIN_M)
    assert PG.choose("im2col", f32, 1, 48, 400, 196) == "packed"
    assert PG.choose("im2col", f32, 1, 16, 800, 784) == "im2col"
    w = np.zeros((256, 64, 1, 1), f32)
    assert C.conv2d_plan((1, 64, 56, 56), w, residual=True).algorithm == "packedwide"
    assert C.conv2d_plan((1, 64, 56, 56), w).algorithm == "packedwide"
    assert C.conv2d_plan((1, 64, 56, 56), w[:32]).algorithm == "packedwide"  # (few rows)
    assert C.conv2d_plan((1, 64, 75, 75), w[:128]).algorithm == "gemm1x1"  # (many rows, a wide map)
    assert C.conv2d_plan((1, 8, 64, 64), np.zeros((64, 8, 7, 7), f32), stride=2, pad=3).algorithm == "packed"
    assert C.conv2d_plan((1, 64, 56, 56), w, stride=2, residual=True).algorithm == "gemm1x1"
    monkeypatch.setenv(PG.LARGE_ENV, "0")
    assert C.conv2d_plan((1, 64, 56, 56), w, residual=True).algorithm == "gemm1x1"
    assert C.conv2d_plan((1, 8, 64, 64), np.zeros((64, 8, 7, 7), f32), stride=2, pad=3).algorithm == "im2col"
    monkeypatch.setenv(PG.LARGE_ENV, "1")
    monkeypatch.setenv(PG.ENV, "0")
    assert C.conv2d_plan((1, 64, 56, 56), w, residual=True).algorithm == "gemm1x1"


def test_several_threads_fall_back_to_the_split_blas_path(pool, rng):
    xs, co = (1, 64, 16, 16), 96
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((co, 64, 1, 1)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, algorithm="packedwide", activation="relu")
    want = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)), 0)
    split, runs = counting_pool_runs(plan, x)
    assert runs, "the split path ran"
    assert_close(split, want, "f32_vs_f64_long", "split")
    _workers.set_workers(1)
    assert_close(plan(x), want, "f32_vs_f64_long", "one thread")
