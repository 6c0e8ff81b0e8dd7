"""The one-thread Winograd panel path (refnet.kernels._winopanel): the kernel (as Python under
NUMBA_DISABLE_JIT=1) against the float64 reference convolution for F(2,3) and F(4,3), with a
last panel of fewer than 32 rows, a batch, bias and activations; the conv plan's choice, its
plan-time and call-time switches, and the np.matmul path's result."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import refnet.kernels.conv as C
from refnet.kernels import _winopanel as WP
from refnet.kernels._lazyjit import jit_disabled, numpy_kernels


def _scratch(n: int, dtype: np.dtype, role: str) -> np.ndarray:
    return np.full(n, np.nan, dtype)  # (NaN: the kernel must write before it reads)


# small enough for the kernel body as plain Python (CI's NUMBA_DISABLE_JIT run): F(2,3) / F(4,3),
# C_out 40 (a last panel of 8 rows) and 32, odd map sizes (partial tiles), a batch of 2
@pytest.mark.parametrize("nk,xs,co,act", [(16, (1, 8, 6, 7), 40, "relu"), (36, (2, 5, 9, 6), 32, None),
                                          (16, (2, 3, 5, 5), 33, "prelu"), (36, (1, 4, 4, 9), 64, "relu6")])
@pytest.mark.parametrize("mb_bytes", [1, 1 << 18])
def test_wino_panels_vs_float64(nk, xs, co, act, mb_bytes, monkeypatch, rng):
    """One row panel per group and as many as fit (a last partial group of panels)."""
    monkeypatch.setattr(WP, "MB_BYTES", mb_bytes)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal((co, xs[1], 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    slope = rng.uniform(0.05, 0.3, co).astype(np.float32) if act == "prelu" else 0.0
    u = C.winograd_weights(w) if nk == 16 else C.winograd4_weights(w)
    f = 2 if nk == 16 else 4
    th_n, tw_n = -(-xs[2] // f), -(-xs[3] // f)
    acode, aslope = C._activation(act, slope, co, np.dtype(np.float32))
    g = WP.WinoPanels(u, b, aslope, (xs[0], co, xs[2], xs[3]), (1, 1, 1, 1), th_n, tw_n)
    gr = g.group
    assert g.up.shape == (-(-co // (32 * gr)), nk * gr, xs[1], 32) and g.nbytes == g.up.nbytes
    for p in range(-(-co // 32)):  # row panel p of element e: group p // gr, panel p % gr, k-major
        for e in (0, 3, nk - 1):
            got = g.up[p // gr, e * gr + p % gr]
            assert np.array_equal(got[:, :min(32, co - 32 * p)], u[e, 32 * p:32 * p + 32].T)
            assert not got[:, min(32, co - 32 * p):].any()
    y = np.full((xs[0], co, xs[2], xs[3]), np.nan, np.float32)
    monkeypatch.setattr(WP, "_scratch", _scratch)  # (in place of the conv kernels' reused arrays)
    g(x, y, acode, np.float32(6))
    ref = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), pad=1)
    want = C._activate_reference(ref, act, slope if act == "prelu" else 0.0)
    assert_close(y, want, "f32_vs_f64_long", f"panels nk={nk}")


@pytest.mark.skipif(jit_disabled(), reason="the plan takes the panel path only with numba jitting")
@pytest.mark.parametrize("alg,xs,co", [("winograd", (1, 64, 13, 13), 256), ("winograd4", (1, 32, 27, 27), 128),
                                       ("winograd", (2, 48, 13, 13), 200)])
def test_plan_panels_and_switches(alg, xs, co, monkeypatch, rng):
    """SqueezeNet's 13x13 expand convs (and a batch, C_out not a multiple of 32; its 27x27 F(4,3)
    ones with KINDS widened) take the panel path: against float64, and the call-time switch gives
    the np.matmul path's result within float32 rounding; off at plan time (env), for float64 and for too large a v."""
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal((co, xs[1], 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    if alg == "winograd4":  # (F(4,3) stays on np.matmul unless KINDS has it)
        assert C.conv2d_plan(xs, w, b, pad=1, algorithm=alg).wino_panels is None
        monkeypatch.setattr(WP, "KINDS", (16, 36))
    plan = C.conv2d_plan(xs, w, b, pad=1, activation="relu", algorithm=alg)
    assert isinstance(plan.wino_panels, WP.WinoPanels)
    want = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), pad=1), 0)
    got = plan(x)
    assert_close(got, want, "f32_vs_f64_long", "panels")
    monkeypatch.setattr(WP, "PANELS", False)
    assert_close(plan(x), got, 1e-5, "np.matmul path")
    monkeypatch.setattr(WP, "PANELS", True)
    with numpy_kernels():  # (small nets without numba: the NumPy path)
        assert_close(plan(x), got, 1e-5, "inside numpy_kernels()")
    assert C.conv2d_plan(xs, w.astype(np.float64), pad=1, algorithm=alg).wino_panels is None
    monkeypatch.setenv(WP.ENV, "0")
    assert C.conv2d_plan(xs, w, pad=1, algorithm=alg).wino_panels is None
    monkeypatch.delenv(WP.ENV)
    big = (1, 256, 14, 14)
    assert C.conv2d_plan(big, np.zeros((64, 256, 3, 3), np.float32), pad=1, algorithm="winograd").wino_panels is None
