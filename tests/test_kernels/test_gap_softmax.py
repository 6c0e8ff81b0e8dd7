"""A classifier's tail as one step (refnet.kernels.window.gap_softmax_step, which compiled programs
make of a global average pool read only, through reshapes, by a one-row softmax): the kernel
(as Python under NUMBA_DISABLE_JIT=1) against float64 formulas written here, NaN / inf, the two
steps' values bit for bit, the fallbacks, and the program wiring with its switch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import refnet.kernels.window as W
from refnet.kernels._lazyjit import load_numba


def _want(x):
    m = x.astype(np.float64).mean(axis=(2, 3)).astype(np.float32).astype(np.float64)  # the GAP step's float32 means
    e = np.exp(m - m.max())
    return e / e.sum()


@pytest.mark.parametrize("c,hw", [(1000, (13, 13)), (10, (7, 7)), (17, (1, 1)), (40, (3, 5))])
def test_gap_softmax_kernel_vs_float64(c, hw, rng):
    x = (rng.standard_normal((1, c) + hw) * 4).astype(np.float32)
    m = np.empty(c, np.float32)
    out = np.full(c, np.nan, np.float32)
    W._gap_softmax(x.reshape(c, -1), m, out)
    assert_close(m, x.astype(np.float64).mean(axis=(0, 2, 3)), "f32_vs_f64", "means")
    assert_close(out[None], _want(x), "f32_vs_f64", "softmax")
    # the two kernels the separate steps run, bit for bit
    gap = W.pool_nd(x, "avg", hw, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    from refnet.kernels.softmax import softmax

    np.testing.assert_array_equal(out, softmax(gap.reshape(1, c), axis=1).reshape(-1))


def test_gap_softmax_nonfinite(rng):
    x = rng.standard_normal((1, 12, 3, 3)).astype(np.float32)
    x[0, 4, 1, 1] = np.inf
    out = np.empty(12, np.float32)
    with np.errstate(invalid="ignore"):  # (the body as Python, under NUMBA_DISABLE_JIT=1)
        W._gap_softmax(x.reshape(12, -1), np.empty(12, np.float32), out)
    assert np.isnan(out).all()  # inf - inf in the max shift: NaN everywhere, as the formulas give
    with np.errstate(invalid="ignore"):
        assert np.isnan(_want(x)).all()


def test_gap_softmax_step_and_fallbacks(rng, monkeypatch):
    from refnet.kernels import _workers

    x = rng.standard_normal((1, 30, 4, 4)).astype(np.float32)
    calls = []

    def plain(v):
        calls.append(1)
        return _want(v).astype(np.float32).reshape(1, 30, 1, 1)

    step = W.gap_softmax_step(x.shape, np.float32, (1, 30, 1, 1), plain, python_kernels=True)
    got = step(x)
    assert got.shape == (1, 30, 1, 1) and got.dtype == np.float32
    assert_close(got.reshape(1, 30), _want(x), "f32_vs_f64", "step")
    assert calls == []  # the kernel, not the steps
    step(np.asfortranarray(x[0])[None])  # not C-contiguous: the steps
    before = _workers.workers()
    _workers.set_workers(2)
    try:
        step(x)  # several workers: the steps (their GAP sums differently)
    finally:
        _workers.set_workers(before)
    assert len(calls) == 2
    for shape, dtype, out in (((1, 30, 4, 4), np.float64, (1, 30)), ((2, 30, 4, 4), np.float32, (2, 30)),
                              ((1, 8, 4, 4), np.float32, (1, 8))):  # (the row softmax: more than 8 values)
        assert W.gap_softmax_step(shape, dtype, out, plain, python_kernels=True) is None
    monkeypatch.setattr(W, "GAP_SOFTMAX", False)
    assert W.gap_softmax_step(x.shape, np.float32, (1, 30), plain, python_kernels=True) is None


def _tail_net(rng):
    from refnet.graph import Graph, Node
    from refnet.net import Net

    w, b = rng.normal(size=(24, 3, 1, 1)), rng.normal(size=24)
    nodes = [
        Node("c", "conv", ["data"], ["c"], {}, {"weight": w, "bias": b}),
        Node("g", "pool_nd", ["c"], ["g"], {"mode": "avg", "kernel": (5, 6), "strides": (1, 1), "dilations": (1, 1),
                                            "pads": (0, 0, 0, 0), "out": (1, 1)}),
        Node("f", "flatten", ["g"], ["f"], {"axis": 1}),
        Node("s", "softmax", ["f"], ["s"], {"axis": 1}),
        Node("r", "reshape", ["s"], ["r"], {"shape": (1, 24, 1, 1)}),
    ]
    return Net(Graph(nodes, ["data"], {"data": (1, 3, 5, 6)})), w, b


@pytest.mark.skipif(bool(load_numba().config.DISABLE_JIT), reason="programs fuse the tail with numba only")
def test_programs_run_the_tail_as_one_step(rng, monkeypatch):
    x = rng.normal(size=(1, 3, 5, 6))
    net, w, b = _tail_net(np.random.default_rng(2))
    conv = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]
    got = net.forward(x)["r"]
    assert got.shape == (1, 24, 1, 1)
    assert_close(got.reshape(1, 24), _want(conv), "f32_vs_f64", "fused tail")
    prog = next(iter(net._programs.values()))
    assert prog.ops == ["conv", "softmax", "reshape"] and prog.layers == ["c", "s", "r"]
    assert net.forward(x, outputs=["f", "r"])["f"].shape == (1, 24)  # an intermediate asked for: steps kept
    monkeypatch.setattr(W, "GAP_SOFTMAX", False)
    steps, _, _ = _tail_net(np.random.default_rng(2))
    np.testing.assert_array_equal(steps.forward(x)["r"], got)
    assert next(iter(steps._programs.values())).ops == ["conv", "pool_nd", "flatten", "softmax", "reshape"]
