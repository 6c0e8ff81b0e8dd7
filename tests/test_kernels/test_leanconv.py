"""The lean executor steps of conv plans (refnet.kernels._leanconv): for "packedwide", "packed"
(1x1) and "direct_cin" plans of one image, the step writes what the plan writes (the same kernels,
bit for bit) and agrees with the float64 reference convolution; without ``out``, with a
non-contiguous input, with several threads and inside ``numpy_kernels()`` it calls the plan; the
other algorithms, residual plans and batches have none; the switch. Small shapes: under
NUMBA_DISABLE_JIT=1 the kernels run as Python (``python_kernels=True``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from split_fixtures import split_pool  # noqa: F401 - the `pool` fixture

import refnet.kernels.conv as C
from refnet.kernels import _leanconv as L
from refnet.kernels._lazyjit import load_numba, numpy_kernels


def _same(got, ref):
    """Bit for bit with numba (the plan runs the same kernels); under NUMBA_DISABLE_JIT=1 the plan
    runs its NumPy twins and the step the kernels' bodies: float32 rounding apart."""
    if load_numba().config.DISABLE_JIT:
        assert_close(got, ref.astype(np.float64), "f32_vs_f64", "python kernels vs twin")
    else:
        assert np.array_equal(got, ref)

# (x shape, C_out, kernel, stride, pad, the plan's algorithm)
CASES = {
    "packedwide": ((1, 40, 6, 7), 20, 1, 1, 0, "packedwide"),
    "packed_1x1": ((1, 48, 5, 5), 70, 1, 1, 0, "packed"),
    "direct_cin": ((1, 3, 9, 70), 16, 3, 2, 1, "direct_cin"),
}


def _plan(name, rng, activation="relu"):
    xs, co, k, s, p, alg = CASES[name]
    w = rng.standard_normal((co, xs[1], k, k)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    x = rng.standard_normal(xs).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, stride=s, pad=p, activation=activation, algorithm=alg)
    want = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride=s, pad=p)
    if activation == "relu":
        want = np.maximum(want, 0)
    return plan, x, want


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("activation", [None, "relu"])
def test_lean_step_matches_the_plan_and_the_reference(name, activation, rng):
    plan, x, want = _plan(name, rng, activation)
    step = L.lean_step(plan, python_kernels=True)
    assert step is not None
    ref = plan(x)
    for _ in range(2):  # (the packed plan makes its offsets on its first call)
        out = np.full(plan.y_shape, np.nan, np.float32)
        assert step(x, out) is out
        _same(out, ref)
    assert_close(out, want, "f32_vs_f64", name)
    # into a channel span of a larger (concat) buffer, as the executor passes it
    big = np.full((1, plan.y_shape[1] + 5) + plan.y_shape[2:], np.nan, np.float32)
    span = big[:, 2 : 2 + plan.y_shape[1]]
    step(x, span)
    _same(span, ref)
    assert np.isnan(big[:, :2]).all() and np.isnan(big[:, 2 + plan.y_shape[1] :]).all()


@pytest.mark.parametrize("name", list(CASES))
def test_lean_step_falls_back_to_the_plan(name, rng, monkeypatch):
    plan, x, _ = _plan(name, rng)
    step = L.lean_step(plan, python_kernels=True)
    ref = plan(x)
    calls = []
    real = type(plan).__call__
    monkeypatch.setattr(type(plan), "__call__", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    assert np.array_equal(step(x), ref) and len(calls) == 1  # no out buffer
    xt = np.asfortranarray(x)
    out = np.empty(plan.y_shape, np.float32)
    assert np.array_equal(step(xt, out), ref) and len(calls) == 2  # a non-contiguous input
    with numpy_kernels():
        step(x, out)
    assert len(calls) == 3
    assert_close(out, ref, "f32_vs_f64", "twin")


@pytest.mark.parametrize("name", list(CASES))
def test_several_threads_call_the_plan(name, pool, rng, monkeypatch):
    plan, x, want = _plan(name, rng)
    step = L.lean_step(plan, python_kernels=True)
    calls = []
    real = type(plan).__call__
    monkeypatch.setattr(type(plan), "__call__", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    out = np.empty(plan.y_shape, np.float32)
    step(x, out)
    assert calls == [1]
    assert_close(out, want, "f32_vs_f64", name)


def test_no_lean_step_elsewhere_and_the_switch(rng, monkeypatch):
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    assert L.lean_step(C.conv2d_plan((1, 8, 20, 20), w, pad=1, algorithm="winograd"), python_kernels=True) is None
    assert L.lean_step(C.conv2d_plan((1, 8, 20, 20), w, pad=1, algorithm="im2col"), python_kernels=True) is None
    assert L.lean_step(C.conv2d_plan((1, 8, 20, 20), w, pad=1, algorithm="packed"), python_kernels=True) is None
    w1 = rng.standard_normal((40, 8, 1, 1)).astype(np.float32)
    assert L.lean_step(C.conv2d_plan((2, 8, 6, 7), w1, algorithm="packedwide"), python_kernels=True) is None
    assert L.lean_step(C.conv2d_plan((1, 8, 6, 7), w1, algorithm="packedwide", residual=True),
                       python_kernels=True) is None
    assert L.lean_step(C.conv2d_plan((1, 8, 6, 7), w1.astype(np.float64), algorithm="gemm1x1"),
                       python_kernels=True) is None
    plan = C.conv2d_plan((1, 8, 6, 7), w1, algorithm="packedwide")
    assert L.lean_step(plan, python_kernels=True) is not None
    monkeypatch.setattr(L, "USE", False)
    assert L.lean_step(plan, python_kernels=True) is None
    monkeypatch.setattr(L, "USE", True)
    monkeypatch.setenv(L.ENV, "0")
    assert L.lean_step(plan, python_kernels=True) is None
