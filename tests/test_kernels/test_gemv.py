"""The packed matrix-vector product (refnet.kernels._gemv) and the batch-1 Gemm / InnerProduct steps
that use it: against float64 products, the packed GEMM's bits, and the generic ops' values (the
kernel as Python under NUMBA_DISABLE_JIT=1; the steps then run their fallback)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import refnet.kernels as K
from refnet.kernels import _gemv, _workers
from refnet.kernels import _packgemm as PG
from refnet.kernels._lazyjit import numpy_kernels
from refnet.ops import registry


# one panel, a partial one, one group of 4 panels and a partial second group; K: one and three blocks
@pytest.mark.parametrize("m,k", [(1, 3), (70, 130), (130, 9), (160, 257)])
def test_gemv_packed_vs_float64_and_the_packed_gemm(m, k, rng):
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal(k).astype(np.float32)
    wp = PG.pack_weights(w)
    got = np.full(m, np.nan, np.float32)
    _gemv.gemv_packed(wp, x, got)
    assert_close(got, w.astype(np.float64) @ x.astype(np.float64), 1e-6, "gemv")
    same = np.full((m, 1), np.nan, np.float32)
    PG.packed_gemm(wp, x, *PG.matrix_offsets(k, 1), same)
    assert np.array_equal(got, same[:, 0])  # the same blocked sums


class _Ctx:
    dtype = np.float32
    fast = True


def _node(op, **attrs):
    class _Node:
        pass

    n = _Node()
    n.attrs, n.name, n.op = attrs, op, op
    return n


@pytest.mark.parametrize("trans_b,beta", [(True, 1.0), (False, 0.5), (True, None)])
def test_gemm_step_one_row_against_float64(trans_b, beta, monkeypatch, rng):
    """A float32 program's Gemm step at batch 1 (packed GEMV, then + beta * C): the float64
    product, and the generic op's values within float32 rounding; fewer weights than MIN_WEIGHTS,
    more than MAX_WEIGHTS, two rows, alpha != 1 or USE False: no step."""
    monkeypatch.setattr(_gemv, "MIN_WEIGHTS", 64)
    k, m = 150, 70
    w = rng.standard_normal((m, k)).astype(np.float32)
    p = {"b": w if trans_b else np.ascontiguousarray(w.T)}
    attrs = {"trans_b": trans_b}
    want = None
    x = rng.standard_normal((1, k)).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    if beta is not None:
        p["c"] = rng.standard_normal(m).astype(np.float32)
        attrs["beta"] = beta
        want = want + beta * p["c"].astype(np.float64)
    spec = registry.OPS["gemm"]
    step, takes_out = spec.prepare(_node("gemm", **attrs), p, [(1, k)], _Ctx())
    assert takes_out is False
    got = step(x)
    assert got.shape == (1, m) and got.dtype == np.float32
    assert_close(got, want, 1e-6, "gemm step")
    generic = K.gemm(x, p["b"], p.get("c"), beta=beta or 1.0, trans_b=trans_b)
    assert_close(got, generic.astype(np.float64), 1e-6, "generic gemm")
    with numpy_kernels():  # the fallback: the generic op itself
        assert np.array_equal(step(x), generic)
    with monkeypatch.context() as mp:  # several worker threads: the generic op (its split) too
        mp.setattr(_workers, "workers", lambda: 2)
        assert np.array_equal(step(x), generic)
    assert spec.prepare(_node("gemm", **attrs), p, [(2, k)], _Ctx()) is None
    assert spec.prepare(_node("gemm", **attrs, alpha=2.0), p, [(1, k)], _Ctx()) is None
    monkeypatch.setattr(_gemv, "MAX_WEIGHTS", m * k - 1)
    assert spec.prepare(_node("gemm", **attrs), p, [(1, k)], _Ctx()) is None
    monkeypatch.setattr(_gemv, "MAX_WEIGHTS", m * k)
    monkeypatch.setattr(_gemv, "USE", False)
    assert spec.prepare(_node("gemm", **attrs), p, [(1, k)], _Ctx()) is None
    monkeypatch.undo()
    assert spec.prepare(_node("gemm", **attrs), p, [(1, k)], _Ctx()) is None  # 10500 weights < MIN_WEIGHTS


@pytest.mark.parametrize("bias", [True, False])
def test_inner_product_step_one_row_against_float64(bias, monkeypatch, rng):
    """The linear (InnerProduct) step at batch 1 on a (1, C, H, W) input flattened from axis 1."""
    monkeypatch.setattr(_gemv, "MIN_WEIGHTS", 64)
    w = rng.standard_normal((40, 36)).astype(np.float32)
    p = {"weight": w}
    if bias:
        p["bias"] = rng.standard_normal(40).astype(np.float32)
    x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    step, _ = registry.OPS["linear"].prepare(_node("linear", axis=1), p, [x.shape], _Ctx())
    got = step(x)
    want = x.reshape(1, -1).astype(np.float64) @ w.T.astype(np.float64) + (p["bias"] if bias else 0)
    assert got.shape == (1, 40)
    assert_close(got, want, 1e-6, "linear step")
    assert_close(got, K.linear(x, w, p.get("bias")).astype(np.float64), 1e-6, "generic linear")
    assert registry.OPS["linear"].prepare(_node("linear", axis=1), p, [(2, 4, 3, 3)], _Ctx()) is None
