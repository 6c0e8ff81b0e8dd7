"""The direct conv for few input channels (refnet.kernels._direct, the conv plan's "direct_cin"):
the kernel (as Python under NUMBA_DISABLE_JIT=1) and its NumPy twin against the float64
reference convolution (strides, padding, dilation, batches, activations), NaN/inf propagation,
the phase split and tap offsets, the plan's choice and A/B switches, the several-thread fallback."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from split_fixtures import counting_pool_runs, split_pool  # noqa: F401 - the `pool` fixture

import refnet.kernels.conv as C
from refnet.kernels import _direct as D
from refnet.kernels import _workers
from refnet.kernels._lazyjit import numpy_kernels

# (x shape, w shape, kwargs), small enough for the kernel body as plain Python; Wo >= 32: 40
# (a last tile of 16), 50 (a last tile of 32 overlapping), 32, 32, 34
CONVS = {
    "3x3": ((1, 3, 5, 42), (8, 3, 3, 3), {}),
    "3x3_s2_batch": ((2, 3, 7, 101), (16, 3, 3, 3), dict(stride=2)),
    "3x3_pad_asym": ((1, 2, 4, 33), (8, 2, 3, 3), dict(pad=(1, 0, 2, 1))),
    "7x7_s2_pad3": ((1, 3, 6, 63), (8, 3, 7, 7), dict(stride=2, pad=3)),
    "5x3_dilated_s3": ((1, 1, 9, 100), (24, 1, 5, 3), dict(stride=(1, 3), pad=2, dilation=(1, 2))),
}


def _want(x, w, b, activation, slope, kw):
    y = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    if activation in ("relu", "prelu"):
        s = np.asarray(slope, np.float64)
        return np.where(y > 0, y, y * (s.reshape(1, -1, 1, 1) if s.ndim else s))
    if activation == "relu6":
        return np.clip(y, 0.0, 6.0)
    return y


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("activation", [None, "relu", "prelu", "relu6"])
def test_direct_cin_vs_reference(name, activation, rng):
    xs, ws, kw = CONVS[name]
    x = rng.standard_normal(xs).astype(np.float32) * 4  # (ReLU6 clips both ends)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, ws[0]).astype(np.float32) if activation == "prelu" else 0.1
    plan = C.conv2d_plan(xs, w, b, activation=activation, negative_slope=slope, algorithm="direct_cin", **kw)
    want = _want(x, w, b, activation, slope, kw)
    got = plan(x)
    assert got.dtype == np.float32
    assert_close(got, want, "f32_vs_f64", name)
    # the kernel itself (the plan runs the twin under NUMBA_DISABLE_JIT=1)
    d = plan.direct
    direct = np.full(want.shape, np.nan, np.float32)
    for i in range(xs[0]):
        D.direct_rows(d.wp, d._phases(x[i]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, direct[i])
    assert_close(direct, want, "f32_vs_f64", f"{name} kernel")
    with numpy_kernels():  # the NumPy twin (small nets without numba)
        assert_close(plan(x), want, "f32_vs_f64", f"{name} twin")
    # into a channel slice of a larger (concat) buffer
    buf = np.full((xs[0], ws[0] + 5) + want.shape[2:], np.nan, np.float32)
    plan(x, out=buf[:, 2 : 2 + ws[0]])
    assert_close(buf[:, 2 : 2 + ws[0]], want, "f32_vs_f64", f"{name} into a slice")
    assert np.isnan(buf[:, :2]).all() and np.isnan(buf[:, 2 + ws[0] :]).all()


def test_phases_and_offsets_read_the_padded_input(rng):
    """xph[kofs[k] + oh * rowstep + ow] is the zero-padded input under tap k of output (oh, ow)."""
    xs, ws, kw = CONVS["5x3_dilated_s3"]
    (sh, sw), (dh, dw), pad = kw["stride"], kw["dilation"], kw["pad"]
    x = rng.standard_normal(xs).astype(np.float32)
    plan = C.conv2d_plan(xs, np.ones(ws, np.float32), algorithm="direct_cin", **kw)
    d = plan.direct
    d._phases(np.full(xs[1:], np.nan, np.float32))  # (the buffer is reused: the padding stays zero)
    xf = d._phases(x[0])
    xp = np.pad(x[0], ((0, 0), (pad, pad), (pad, pad)))
    _, _, ho, wo = plan.y_shape
    c, kh, kwd = ws[1:]
    for ci in range(c):
        for p in range(kh):
            for q in range(kwd):
                k = (ci * kh + p) * kwd + q
                idx = d.kofs[k] + np.arange(ho)[:, None] * d.rowstep + np.arange(wo)[None, :]
                want = xp[ci, p * dh : p * dh + (ho - 1) * sh + 1 : sh, q * dw : q * dw + (wo - 1) * sw + 1 : sw]
                assert np.array_equal(xf[idx.astype(np.int64)], want)


def test_direct_cin_nonfinite_like_reference(rng):
    xs, ws, kw = CONVS["3x3_s2_batch"]
    x = rng.standard_normal(xs).astype(np.float32)
    x[0, 1, 3, 10] = np.nan
    x[1, 2, 4, 40] = -np.inf
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, **kw)
    assert plan.algorithm == "direct_cin"
    want = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    got = plan(x)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(want).any()
    assert np.array_equal(np.isinf(got), np.isinf(want)) and np.isinf(want).any()
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)
    relu = C.conv2d_plan(xs, w, b, activation="relu", **kw)(x)  # as the reference's ReLU (NaN stays NaN)
    want = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="relu",
                              **kw)
    assert np.array_equal(np.isnan(relu), np.isnan(want)) and np.array_equal(np.isinf(relu), np.isinf(want))


def test_choice_and_switches(monkeypatch):
    monkeypatch.delenv(D.ENV, raising=False)
    w = np.zeros((64, 3, 3, 3), np.float32)
    assert C.conv2d_plan((1, 3, 224, 224), w, stride=2).algorithm == "direct_cin"  # SqueezeNet's conv1
    assert C.conv2d_plan((1, 3, 224, 224), np.zeros((64, 3, 7, 7), np.float32), stride=2,
                         pad=3).algorithm == "direct_cin"  # GoogLeNet's / ResNet-50's
    # not: float64, many input channels, few or ragged output channels, narrow maps, groups
    assert C.conv2d_plan((1, 3, 224, 224), w.astype(np.float64), stride=2).algorithm == "im2col"
    assert C.conv2d_plan((1, 8, 64, 64), np.zeros((64, 8, 3, 3), np.float32), stride=2).algorithm == "im2col"
    assert C.conv2d_plan((1, 3, 64, 64), np.zeros((12, 3, 3, 3), np.float32), stride=2).algorithm == "im2col"
    assert C.conv2d_plan((1, 3, 64, 64), np.zeros((20, 3, 3, 3), np.float32), stride=2).algorithm == "im2col"
    assert C.conv2d_plan((1, 3, 40, 40), w, stride=2).algorithm == "im2col"
    assert C.conv2d_plan((1, 4, 64, 64), np.zeros((64, 2, 3, 3), np.float32), groups=2).algorithm == "im2col"
    monkeypatch.setenv(D.ENV, "0")
    assert C.conv2d_plan((1, 3, 224, 224), w, stride=2).algorithm == "im2col"
    monkeypatch.delenv(D.ENV)
    monkeypatch.setattr(D, "USE", False)
    assert C.conv2d_plan((1, 3, 224, 224), w, stride=2).algorithm == "im2col"
    for xs, ws, dt in [((1, 3, 224, 224), (64, 3, 3, 3), np.float64), ((1, 3, 64, 64), (20, 3, 3, 3), np.float32),
                       ((1, 3, 40, 40), (64, 3, 3, 3), np.float32)]:
        with pytest.raises(ValueError):
            C.conv2d_plan(xs, np.zeros(ws, dt), stride=2, algorithm="direct_cin")


def test_several_threads_fall_back_to_the_split_im2col(pool, rng):
    xs, ws, kw = CONVS["7x7_s2_pad3"]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, activation="relu", algorithm="direct_cin", **kw)
    want = _want(x, w, b, "relu", 0.0, kw)
    split, runs = counting_pool_runs(plan, x)
    assert runs, "the split path ran"
    assert_close(split, want, "f32_vs_f64", "split")
    _workers.set_workers(1)
    assert_close(plan(x), want, "f32_vs_f64", "one thread")


def test_direct_cin_residual(rng):
    """relu((conv + b) + r) with a residual input (the plan's post-pass after the kernel)."""
    xs, ws, kw = CONVS["3x3_pad_asym"]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, activation="relu", residual=True, algorithm="direct_cin", **kw)
    r = rng.standard_normal(plan.y_shape).astype(np.float32)
    want = np.maximum(_want(x, w, b, None, 0.0, kw) + r, 0)
    assert_close(plan(x, residual=r), want, "f32_vs_f64", "residual")


@pytest.mark.parametrize("xs,ws,kw", [
    ((1, 3, 9, 70), (8, 3, 3, 3), dict(stride=2)),  # even width (SqueezeNet's conv1 shape class)
    ((1, 3, 9, 71), (8, 3, 3, 3), dict(stride=2)),  # odd width: phase 0 one column longer
    ((1, 2, 8, 70), (8, 2, 2, 2), dict(stride=2, pad=(1, 0, 0, 0))),  # 2x2: phase 0 shorter than wph allows
    ((1, 3, 7, 66), (8, 3, 3, 3), dict(stride=2, pad=(1, 0, 2, 1))),  # right padding: phase columns past the input
])
def test_phase_pairs_equal_the_numpy_phase_split(xs, ws, kw, rng, monkeypatch):
    """Stride 2 without left padding: ``_split_pairs`` writes the same phase split as the NumPy
    copies (bit for bit, zero padding included), and the conv equals the float64 reference."""
    x = rng.standard_normal(xs).astype(np.float32)
    x[0, 1, 2, 5] = np.nan
    plan = C.conv2d_plan(xs, rng.standard_normal(ws).astype(np.float32), algorithm="direct_cin", **kw)
    d = plan.direct
    assert d.stride[1] == 2 and d.pad[1] == 0
    pairs = d._phases(x[0]).copy()
    monkeypatch.setattr(D, "PAIRS", False)
    d._tls.xph = None  # (a fresh, zeroed buffer)
    assert np.array_equal(d._phases(x[0]), pairs, equal_nan=True)
    monkeypatch.setattr(D, "PAIRS", True)
    d._tls.xph = None
    d._phases(np.full(xs[1:], 7.0, np.float32))  # (the padding stays zero when the buffer is reused)
    assert np.array_equal(d._phases(x[0]), pairs, equal_nan=True)
    want = C.conv2d_reference(x.astype(np.float64), d.w.astype(np.float64), **kw)
    got = plan(x)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(want).any()
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)
