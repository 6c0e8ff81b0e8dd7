"""A direct conv that pools its own output (refnet.kernels._direct.direct_pool_rows, the one step a
compiled program makes of a "direct_cin" conv read only by a 3x3 / stride 2 max pool) and the pool
rows it shares with the even/odd pool kernel (refnet.kernels._poolrow): against the float64
reference convolution and reference pool, bit for bit against the two float32 steps (the same
conv tiles, an exact maximum), NaN/inf, padding 0 and 1, windows cut by the bottom / right edge,
the program wiring and its switch. The kernels run as Python under NUMBA_DISABLE_JIT=1."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import refnet.kernels.conv as C
import refnet.kernels.window as W
from refnet.kernels import _direct as D
from refnet.kernels import _leanconv, _poolrow
from refnet.kernels._lazyjit import load_numba

# (x shape, w shape, conv kwargs, pool pads, pool output): conv outputs 34..56 wide (Wo >= 32)
CASES = {
    "s2_nopad_odd": ((1, 3, 9, 71), (16, 3, 3, 3), dict(stride=2), (0, 0, 0, 0), (1, 16)),  # 4x35 -> 1x16 (floor)
    "nopad_even": ((1, 3, 10, 36), (8, 3, 3, 3), {}, (0, 0, 0, 0), (3, 16)),  # 8x34 -> 3x16, last row dropped
    "7x7_pad1": ((1, 3, 12, 72), (8, 3, 7, 7), dict(stride=2, pad=3), (1, 1, 1, 1), (3, 18)),  # 6x36 -> 3x18
    "pad1_odd": ((1, 2, 7, 37), (16, 2, 3, 3), dict(pad=1), (1, 1, 1, 1), (4, 19)),  # 7x37 -> 4x19
    "ceil_past_edge": ((1, 3, 9, 36), (8, 3, 3, 3), {}, (0, 0, 1, 1), (4, 17)),  # 7x34 -> 4x17 (ceil mode)
    "top_pad_only": ((1, 1, 8, 34), (8, 1, 3, 3), {}, (1, 0, 0, 0), (3, 15)),  # 6x32
}
POOL_ARGS = ((3, 3), (2, 2), (1, 1))


def _case(name, rng, nan=False):
    xs, ws, kw, pads, out = CASES[name]
    x = rng.standard_normal(xs).astype(np.float32) * 3
    if nan:
        x[0, 0, 2, 5] = np.nan
        x[0, -1, -1, -1] = np.inf
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, activation="relu", algorithm="direct_cin", **kw)
    y64 = np.maximum(C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw), 0)
    want = W.pool_nd_reference(y64, "max", *POOL_ARGS, pads, out)
    return x, plan, pads, out, want


@pytest.mark.parametrize("name", list(CASES))
def test_direct_pool_rows_vs_reference_and_the_two_steps(name, rng):
    x, plan, pads, out, want = _case(name, rng)
    # (unpadded pools with every window inside stay two steps: the pool step's even/odd kernel)
    assert D.pool_fits(plan.y_shape, *POOL_ARGS, pads, out) == (name not in ("s2_nopad_odd", "nopad_even"))
    d = plan.direct
    got = np.full((1, plan.y_shape[1]) + out, np.nan, np.float32)
    s = np.empty((D.CB,) + plan.y_shape[2:], np.float32)
    D.direct_pool_rows(d.wp, d._phases(x[0]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, s, pads[0], pads[1],
                       got[0])
    assert_close(got, want, "f32_vs_f64", name)
    conv = np.empty(plan.y_shape, np.float32)  # the two steps: the conv kernel's map, then the pool
    D.direct_rows(d.wp, d._phases(x[0]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, conv[0])
    np.testing.assert_array_equal(got, W.pool_nd_reference(conv, "max", *POOL_ARGS, pads, out))
    heap = np.full_like(got, np.nan)  # the pool rows' scratch on the heap (_poolrow.STACK_ROWS off): the same
    D.direct_pool_rows(d.wp, d._phases(x[0]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, s, pads[0], pads[1],
                       heap[0], False)
    np.testing.assert_array_equal(heap, got)


def test_direct_pool_rows_nonfinite_like_the_two_steps(rng):
    """A NaN / inf in the input makes non-finite conv outputs; pooled in the conv they give what
    the conv kernel's map pooled by the float64 reference gives, bit for bit (a NaN never wins a
    window, an inf does)."""
    x, plan, pads, out, want = _case("pad1_odd", rng, nan=True)
    d = plan.direct
    got = np.empty((1, plan.y_shape[1]) + out, np.float32)
    s = np.empty((D.CB,) + plan.y_shape[2:], np.float32)
    conv = np.empty(plan.y_shape, np.float32)
    with np.errstate(invalid="ignore"):  # (the bodies as Python, under NUMBA_DISABLE_JIT=1: -inf * 0)
        D.direct_pool_rows(d.wp, d._phases(x[0]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, s, 1, 1, got[0])
        D.direct_rows(d.wp, d._phases(x[0]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, conv[0])
    assert np.isnan(conv).any() and np.isinf(conv).any()
    two = W.pool_nd_reference(conv.astype(np.float64), "max", *POOL_ARGS, pads, out).astype(np.float32)
    np.testing.assert_array_equal(got, two)
    assert np.isinf(got).any() and not np.isnan(got).any()
    fin = np.isfinite(want) & np.isfinite(got)
    assert fin.mean() > 0.9
    assert_close(got[fin], want[fin], "f32_vs_f64", "finite outputs")


@pytest.mark.parametrize("hw,pads,out", [((9, 9), (1, 1, 1, 1), (5, 5)), ((8, 7), (0, 0, 0, 0), (3, 3)),
                                         ((6, 5), (1, 0, 1, 1), (4, 3)), ((5, 6), (0, 1, 0, 0), (2, 3)),
                                         ((5, 260), (1, 1, 1, 1), (3, 131))])  # (rows > STACK_ROW: heap)
def test_pool_rows_of_every_plane_vs_the_reference(hw, pads, out, rng):
    """``pool3s2_planes`` (padding 0 / 1, ceil-mode windows; scratch rows on the stack, the
    default, or the heap) equals the float64 reference bit for bit, NaN never winning, a window
    of NaN only giving -inf."""
    x = rng.standard_normal((4,) + hw).astype(np.float32)
    x[1].flat[rng.integers(0, x[1].size, 3)] = (np.nan, np.inf, -np.inf)
    x[2, :2, :2] = np.nan
    want = W.pool_nd_reference(x[None].astype(np.float64), "max", *POOL_ARGS, pads, out)[0].astype(np.float32)
    for stack in (None, True, False):
        y = np.full((6,) + out, 7.0, np.float32)
        if stack is None:
            _poolrow.pool3s2_planes(x, pads[0], pads[1], y, 2)
        else:
            _poolrow.pool3s2_planes(x, pads[0], pads[1], y, 2, stack)
        np.testing.assert_array_equal(y[2:], want)
        assert (y[:2] == 7.0).all()


def test_conv_pool_step_and_its_fallbacks(rng):
    x, plan, pads, out, want = _case("7x7_pad1", rng)
    pool = W.pool_nd_step(plan.y_shape, np.float32, "max", *POOL_ARGS, pads, out)
    step = _leanconv.conv_pool_step(plan, pool, *POOL_ARGS, pads, out, python_kernels=True)
    assert step is not None
    into = np.full((1, plan.y_shape[1]) + out, np.nan, np.float32)
    assert step(x, into) is into
    assert_close(into, want, "f32_vs_f64", "step")
    assert_close(step(x), want, "f32_vs_f64", "no out: the two steps")
    # geometries the kernel does not take, and an unpadded pool inside the map: no fused step
    for kernel, strides, p, o in (((2, 2), (2, 2), (0, 0, 0, 0), (3, 18)), ((3, 3), (1, 1), (0, 0, 0, 0), (4, 34)),
                                  ((3, 3), (2, 2), (2, 2, 2, 2), (5, 19)), ((3, 3), (2, 2), (0, 0, 0, 0), (2, 17))):
        assert not D.pool_fits(plan.y_shape, kernel, strides, (1, 1), p, o)
        assert _leanconv.conv_pool_step(plan, pool, kernel, strides, (1, 1), p, o, python_kernels=True) is None
    d = plan.direct
    im2col = C.conv2d_plan(plan.x_shape, d.w, d.b, activation="relu", algorithm="im2col", stride=2, pad=3)
    assert _leanconv.conv_pool_step(im2col, pool, *POOL_ARGS, pads, out, python_kernels=True) is None


def _conv_pool_net(rng):
    from refnet.graph import Graph, Node
    from refnet.net import Net

    w, b = rng.normal(size=(16, 3, 3, 3)), rng.normal(size=16)
    nodes = [
        Node("c", "conv", ["data"], ["c"], {"stride": (2, 2)}, {"weight": w, "bias": b}),
        Node("r", "relu", ["c"], ["r"], {}),
        Node("p", "pool_nd", ["r"], ["p"], {"mode": "max", "kernel": (3, 3), "strides": (2, 2), "dilations": (1, 1),
                                            "pads": (1, 1, 1, 1), "out": (3, 18)}),
        Node("f", "flatten", ["p"], ["f"], {"axis": 1}),
    ]
    return Net(Graph(nodes, ["data"], {"data": (1, 3, 11, 71)})), w, b  # conv 5x35


@pytest.mark.skipif(bool(load_numba().config.DISABLE_JIT), reason="programs pair the steps with numba only")
def test_programs_run_the_conv_and_its_pool_as_one_step(rng, monkeypatch):
    """A program runs the pair as one step under the conv's name (values as the reference's, and
    as the two steps' bit for bit); asking for the conv's output, or the switch off, keeps two."""
    x = rng.normal(size=(1, 3, 11, 71))
    net, w, b = _conv_pool_net(np.random.default_rng(1))
    y64 = np.maximum(C.conv2d_reference(x, w, b, stride=2), 0)
    want = W.pool_nd_reference(y64, "max", *POOL_ARGS, (1, 1, 1, 1), (3, 18)).reshape(1, -1)
    got = net.forward(x)["f"]
    assert_close(got, want, "f32_vs_f64", "fused program")
    prog = next(iter(net._programs.values()))
    assert prog.layers == ["c", "f"] and prog.ops == ["conv", "flatten"]
    mid = net.forward(x, outputs=["r", "f"])
    assert_close(mid["f"], want, "f32_vs_f64", "conv requested")
    monkeypatch.setattr(D, "POOL", False)
    two, _, _ = _conv_pool_net(np.random.default_rng(1))
    np.testing.assert_array_equal(two.forward(x)["f"], got)
    assert next(iter(two._programs.values())).layers == ["c", "p", "f"]
