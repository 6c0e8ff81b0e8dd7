"""conv2d / conv_transpose2d / separable_conv2d / linear: reference vs independent oracles
(scipy.signal.correlate, the adjoint identity, an explicit scatter loop, math.fsum dot
products), fast vs reference on hypothesis-drawn shapes, named edge cases, bad input, NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from conftest import TOL, assert_close, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

from refnet.errors import ShapeError
from refnet.kernels.conv import (
    conv2d,
    conv2d_reference,
    conv_output_size,
    conv_transpose2d,
    conv_transpose2d_reference,
    conv_transpose_output_size,
    linear,
    linear_reference,
    separable_conv2d,
    separable_conv2d_reference,
)

HYP = settings(max_examples=30, deadline=None, derandomize=True)


# --------------------------------------------------------------------------------------
# independent oracles
# --------------------------------------------------------------------------------------


def scipy_conv2d(x, w, b=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Caffe convolution from scipy.signal.correlate: per (n, output channel) the sum over the
    group's input channels of a 'valid' correlation of the zero-padded plane with the
    zero-inserted (dilated) kernel, subsampled by the stride."""
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = pad
    cog = co // groups
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt : pt + h, pl : pl + wd] = x
    kd = np.zeros((co, cig, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    kd[:, :, ::dh, ::dw] = w
    ho = (h + pt + pb - kd.shape[2]) // sh + 1
    wo = (wd + pl + pr - kd.shape[3]) // sw + 1
    y = np.zeros((n, co, ho, wo))
    for i in range(n):
        for o in range(co):
            g = o // cog
            acc = 0.0
            for c_ in range(cig):
                acc = acc + scipy.signal.correlate(
                    xp[i, g * cig + c_], kd[o, c_], mode="valid", method="direct"
                )
            y[i, o] = acc[::sh, ::sw][:ho, :wo]
            if b is not None:
                y[i, o] += b[o]
    return y


def scatter_conv_transpose2d(x, w, b=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1),
                             groups=1, output_padding=(0, 0)):
    """Explicit scalar scatter: every input pixel adds x * w[c, o, p, q] at output position
    (i*sh - pt + p*dh, j*sw - pl + q*dw) when inside the output."""
    n, c, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (dh, dw), (ah, aw) = stride, dilation, output_padding
    pt, pl, pb, pr = pad
    cig = c // groups
    ho = (h - 1) * sh - pt - pb + dh * (kh - 1) + 1 + ah
    wo = (wd - 1) * sw - pl - pr + dw * (kw - 1) + 1 + aw
    y = np.zeros((n, cog * groups, ho, wo))
    for i_n in range(n):
        for ci in range(c):
            g = ci // cig
            for i in range(h):
                for j in range(wd):
                    for o in range(cog):
                        for p in range(kh):
                            for q in range(kw):
                                oy = i * sh - pt + p * dh
                                ox = j * sw - pl + q * dw
                                if 0 <= oy < ho and 0 <= ox < wo:
                                    y[i_n, g * cog + o, oy, ox] += x[i_n, ci, i, j] * w[ci, o, p, q]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def _pad4(p):
    if isinstance(p, int):
        return (p,) * 4
    return (p[0], p[1], p[0], p[1]) if len(p) == 2 else tuple(p)


def _pair_kw(kw, key):
    v = kw.get(key, 1)
    return v if isinstance(v, tuple) else (v, v)


def _f32_tol(k: int) -> str:
    """The TOL key for a float32 kernel whose reductions have length k."""
    return "f32_vs_f64" if k <= 64 else "f32_vs_f64_long"


# --------------------------------------------------------------------------------------
# conv2d: reference vs scipy, named cases
# --------------------------------------------------------------------------------------

# (x shape, w shape, kwargs): the named edge cases of the assignment
CONV_CASES = {
    "basic_3x3": ((2, 3, 7, 8), (4, 3, 3, 3), {}),
    "pad_stride": ((1, 3, 9, 10), (5, 3, 3, 3), dict(stride=2, pad=1)),
    "asymmetric_pad": ((1, 2, 6, 7), (3, 2, 3, 2), dict(pad=(0, 2, 1, 0), stride=(1, 2))),
    "dilation": ((1, 2, 9, 9), (3, 2, 3, 3), dict(dilation=(2, 3), pad=(2, 3))),
    "dilated_kernel_larger_than_input": ((1, 2, 3, 4), (2, 2, 3, 3), dict(dilation=2, pad=2)),
    "stride_gt_kernel": ((1, 3, 11, 10), (4, 3, 2, 2), dict(stride=(3, 4))),
    "spatial_1x1_input": ((2, 5, 1, 1), (3, 5, 1, 1), {}),
    "spatial_1x1_input_padded_3x3": ((1, 5, 1, 1), (3, 5, 3, 3), dict(pad=1)),
    "pointwise": ((2, 7, 5, 6), (9, 7, 1, 1), {}),
    "pointwise_strided": ((1, 7, 5, 6), (9, 7, 1, 1), dict(stride=2)),
    "odd_channels": ((1, 7, 6, 5), (5, 7, 3, 3), dict(pad=1)),
    "groups_2": ((1, 6, 6, 6), (4, 3, 3, 3), dict(groups=2, pad=1)),
    "groups_3_multiplier": ((2, 9, 5, 7), (6, 3, 3, 2), dict(groups=3, pad=(1, 0, 1, 1))),
    "grouped_pointwise": ((1, 8, 4, 5), (12, 2, 1, 1), dict(groups=4)),
    "depthwise": ((2, 5, 7, 6), (5, 1, 3, 3), dict(groups=5, pad=1)),
    "depthwise_multiplier_2": ((1, 3, 6, 7), (6, 1, 3, 3), dict(groups=3, pad=1, stride=2)),
    "depthwise_dilated_asym": ((1, 4, 8, 9), (4, 1, 3, 3), dict(groups=4, dilation=2,
                                                                 pad=(2, 1, 0, 3))),
    "kernel_5x5_s2": ((1, 3, 12, 11), (2, 3, 5, 5), dict(stride=2, pad=2)),
}


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_reference_and_fast64_vs_scipy(name, rng):
    xs, ws, kw = CONV_CASES[name]
    x, w, b = _rand(rng, xs), _rand(rng, ws), _rand(rng, ws[0])
    sc = scipy_conv2d(x, w, b, stride=_pair_kw(kw, "stride"), pad=_pad4(kw.get("pad", 0)),
                      dilation=_pair_kw(kw, "dilation"), groups=kw.get("groups", 1))
    ref = conv2d_reference(x, w, b, **kw)
    assert ref.dtype == np.float64
    assert_close(ref, sc, "f64_vs_oracle", f"{name}: reference vs scipy")
    assert_close(conv2d(x, w, b, **kw), sc, "f64_vs_oracle", f"{name}: fast float64 vs scipy")


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_fast32_vs_reference_named(name, rng):
    xs, ws, kw = CONV_CASES[name]
    x, w, b = _rand(rng, xs, np.float32), _rand(rng, ws, np.float32), _rand(rng, ws[0], np.float32)
    fast = conv2d(x, w, b, **kw)
    assert fast.dtype == np.float32
    ref = conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    assert_close(fast, ref, _f32_tol(ws[1] * ws[2] * ws[3]), name)


def test_conv2d_hand_computed():
    # 1 channel, 3x3 input, 2x2 kernel, pad 1 on top/left only, stride 2
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(1, 1, 2, 2)
    # padded rows/cols: index -1 is zero. Output 2x2 windows start at (-1,-1), (-1,1), (1,-1), (1,1)
    want = np.array([[1000 * 1, 100 * 2 + 1000 * 3],
                     [10 * 4 + 1000 * 7, 5 + 10 * 6 + 100 * 8 + 1000 * 9]])
    for f in (conv2d_reference, conv2d):
        y = f(x, w, stride=2, pad=(1, 1, 0, 0))
        np.testing.assert_array_equal(y[0, 0], want)


@pytest.mark.parametrize("activation,slope", [("relu", 0.0), ("relu", 0.1), ("relu6", 0.0)])
@pytest.mark.parametrize("case", ["basic_3x3", "pointwise", "depthwise", "groups_2"])
def test_conv2d_fused_activation(activation, slope, case, rng):
    xs, ws, kw = CONV_CASES[case]
    x, w, b = _rand(rng, xs) * 3, _rand(rng, ws) * 3, _rand(rng, ws[0])
    lin = scipy_conv2d(x, w, b, stride=(1, 1), pad=_pad4(kw.get("pad", 0)),
                       groups=kw.get("groups", 1))
    want = np.where(lin > 0, lin, slope * lin) if activation == "relu" else np.minimum(
        np.maximum(lin, 0.0), 6.0)
    assert (lin > 6).any() and (lin < 0).any()
    for f in (conv2d_reference, conv2d):
        got = f(x, w, b, activation=activation, negative_slope=slope, **kw)
        assert_close(got, want, "f64_vs_oracle", f"{f.__name__} {activation}")
    got32 = conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                   activation=activation, negative_slope=slope, **kw)
    assert_close(got32, want, "f32_vs_f64_long", "fast float32")


def test_conv2d_batch_and_noncontiguous_input(rng):
    x = _rand(rng, (3, 6, 8, 5)).transpose(0, 1, 3, 2)  # (3, 6, 5, 8), not C-contiguous
    w = _rand(rng, (4, 6, 3, 3))
    sc = scipy_conv2d(np.ascontiguousarray(x), w, pad=(1, 1, 1, 1))
    assert_close(conv2d(x, w, pad=1), sc, "f64_vs_oracle", "fast")
    assert_close(conv2d_reference(x, w, pad=1), sc, "f64_vs_oracle", "reference")


def test_conv2d_band_split_im2col(rng):
    # a kernel and width large enough that im2col is processed in several bands of rows
    x = _rand(rng, (1, 16, 70, 80), np.float32)
    w = _rand(rng, (8, 16, 7, 7), np.float32)
    ref = conv2d_reference(x.astype(np.float64), w.astype(np.float64), pad=3)
    assert_close(conv2d(x, w, pad=3), ref, "f32_vs_f64_long", "banded im2col")


# --------------------------------------------------------------------------------------
# conv2d: hypothesis, fast vs reference
# --------------------------------------------------------------------------------------


@st.composite
def conv_params(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and groups == 1
    cig = 1 if depthwise else draw(st.integers(1, 4))
    c = draw(st.integers(1, 6)) if depthwise else cig * groups
    if depthwise:
        groups = c
    cog = draw(st.integers(1, 3)) if depthwise else draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 3)) for _ in range(4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pad[0] - pad[2]), 12))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pad[1] - pad[3]), 12))
    n = draw(st.integers(1, 2))
    act = draw(st.sampled_from([None, None, "relu", "relu6"]))
    return dict(x=(n, c, h, w), w=(cog * groups, cig, kh, kw), groups=groups,
                stride=(sh, sw), dilation=(dh, dw), pad=pad, activation=act,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@HYP
@given(conv_params())
def test_conv2d_fast_vs_reference_hypothesis(p):
    rng = np.random.default_rng(p["seed"])
    x = _rand(rng, p["x"], np.float32)
    w = _rand(rng, p["w"], np.float32)
    b = _rand(rng, p["w"][0], np.float32) if p["bias"] else None
    kw = dict(stride=p["stride"], pad=p["pad"], dilation=p["dilation"], groups=p["groups"],
              activation=p["activation"])
    up = lambda a: None if a is None else a.astype(np.float64)
    ref = conv2d_reference(up(x), up(w), up(b), **kw)
    fast32 = conv2d(x, w, b, **kw)
    assert fast32.dtype == np.float32 and fast32.shape == ref.shape
    assert_close(fast32, ref, _f32_tol(int(np.prod(p["w"][1:]))), f"fast32 {p}")
    fast64 = conv2d(up(x), up(w), up(b), **kw)
    assert fast64.dtype == np.float64
    assert rel_err(fast64, ref) <= TOL["f64_vs_oracle"], p
    ref32 = conv2d_reference(x, w, b, **kw)
    assert ref32.dtype == np.float32
    assert_close(ref32, ref, _f32_tol(int(np.prod(p["w"][1:]))), "reference float32")


def test_conv_output_size_hand_values():
    assert conv_output_size(224, 7, 2, 3, 3, 1) == 112
    assert conv_output_size(5, 3, 2, 0, 0, 1) == 2  # floor((5 - 3) / 2) + 1
    assert conv_output_size(6, 3, 2, 0, 0, 1) == 2  # floor((6 - 3) / 2) + 1, floor not ceil
    assert conv_output_size(4, 3, 1, 1, 0, 2) == 1  # extent 5 on 5 padded pixels
    assert conv_output_size(1, 3, 1, 1, 1, 1) == 1
    with pytest.raises(ShapeError):
        conv_output_size(3, 3, 1, 0, 0, 2)  # dilated extent 5 > 3
    assert conv_transpose_output_size(4, 3, 2, 1, 1, 1, 1) == 8  # (4-1)*2 - 2 + 3 + 1
    assert conv_transpose_output_size(5, 4, 2, 1, 1, 1, 0) == 10


# --------------------------------------------------------------------------------------
# separable conv
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mult", [1, 2])
def test_separable_conv2d_vs_scipy(mult, rng):
    c, co = 4, 5
    x = _rand(rng, (2, c, 9, 8))
    dw_w, dw_b = _rand(rng, (c * mult, 1, 3, 3)), _rand(rng, c * mult)
    pw_w, pw_b = _rand(rng, (co, c * mult, 1, 1)), _rand(rng, co)
    t = scipy_conv2d(x, dw_w, dw_b, stride=(2, 2), pad=(1, 1, 1, 1), groups=c)
    want = np.maximum(np.einsum("oc,nchw->nohw", pw_w[:, :, 0, 0], t) + pw_b[:, None, None], 0)
    kw = dict(stride=2, pad=1, activation="relu")
    assert_close(separable_conv2d_reference(x, dw_w, pw_w, dw_b, pw_b, **kw), want,
                 "f64_vs_oracle", "reference")
    assert_close(separable_conv2d(x, dw_w, pw_w, dw_b, pw_b, **kw), want, "f64_vs_oracle",
                 "fast64")
    f32 = lambda a: a.astype(np.float32)
    got = separable_conv2d(f32(x), f32(dw_w), f32(pw_w[:, :, 0, 0]), f32(dw_b), f32(pw_b), **kw)
    assert got.dtype == np.float32
    assert_close(got, want, "f32_vs_f64", "fast32, 2-D pointwise weights")


# --------------------------------------------------------------------------------------
# transposed convolution
# --------------------------------------------------------------------------------------

DECONV_CASES = {
    "basic": ((1, 2, 3, 4), (2, 3, 3, 3), {}),
    "stride2_pad1": ((2, 3, 4, 3), (3, 2, 3, 3), dict(stride=2, pad=1)),
    "stride2_adj1": ((1, 3, 4, 5), (3, 2, 3, 3), dict(stride=2, pad=1, output_padding=1)),
    "fast_style_up": ((1, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, pad=1, output_padding=(1, 1))),
    "asym_pad_stride": ((1, 2, 4, 4), (2, 3, 4, 3), dict(stride=(2, 3), pad=(1, 0, 2, 1),
                                                         output_padding=(1, 2))),
    "dilation": ((1, 2, 3, 3), (2, 2, 3, 2), dict(dilation=(2, 3), pad=(1, 1, 0, 2))),
    "groups_2": ((1, 4, 3, 4), (4, 3, 3, 3), dict(groups=2, stride=2, pad=1)),
    "depthwise_like": ((1, 3, 4, 4), (3, 1, 4, 4), dict(groups=3, stride=2, pad=1)),
    "kernel_eq_stride": ((2, 3, 3, 3), (3, 2, 2, 2), dict(stride=2)),
    "spatial_1x1": ((1, 3, 1, 1), (3, 4, 3, 3), {}),
}


@pytest.mark.parametrize("name", list(DECONV_CASES))
def test_conv_transpose2d_vs_scatter_oracle(name, rng):
    xs, ws, kw = DECONV_CASES[name]
    x, w = _rand(rng, xs), _rand(rng, ws)
    b = _rand(rng, ws[1] * kw.get("groups", 1))
    pair_ = lambda v: v if isinstance(v, tuple) else (v, v)
    want = scatter_conv_transpose2d(
        x, w, b, stride=pair_(kw.get("stride", 1)), pad=_pad4(kw.get("pad", 0)),
        dilation=pair_(kw.get("dilation", 1)), groups=kw.get("groups", 1),
        output_padding=pair_(kw.get("output_padding", 0)),
    )
    assert_close(conv_transpose2d_reference(x, w, b, **kw), want, "f64_vs_oracle", "reference")
    assert_close(conv_transpose2d(x, w, b, **kw), want, "f64_vs_oracle", "fast64")
    f32 = lambda a: a.astype(np.float32)
    got = conv_transpose2d(f32(x), f32(w), f32(b), **kw)
    assert got.dtype == np.float32
    assert_close(got, want, "f32_vs_f64", "fast32")


@st.composite
def deconv_params(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ah, aw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
    ho, wo = draw(st.integers(1, 6)), draw(st.integers(1, 6))  # the deconv *input* size
    full_h, full_w = (ho - 1) * sh + dh * (kh - 1) + 1, (wo - 1) * sw + dw * (kw - 1) + 1
    pt = draw(st.integers(0, min(2, full_h - 1)))
    pb = draw(st.integers(0, min(2, full_h - 1 - pt)))
    pl = draw(st.integers(0, min(2, full_w - 1)))
    pr = draw(st.integers(0, min(2, full_w - 1 - pl)))
    return dict(groups=groups, cig=cig, cog=cog, k=(kh, kw), stride=(sh, sw),
                dilation=(dh, dw), output_padding=(ah, aw), pad=(pt, pl, pb, pr), hw=(ho, wo),
                n=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**31)))


@HYP
@given(deconv_params())
def test_conv_transpose2d_adjoint_and_fast_hypothesis(p):
    """<conv_transpose2d(y, w), x> == <y, conv2d(x, w)>: the transposed conv is the adjoint of
    the conv with the same weight array and parameters (w is (C_out_conv, C_in_conv/g, ...),
    i.e. (C_in_deconv, C_out_deconv/g, ...))."""
    rng = np.random.default_rng(p["seed"])
    g, (kh, kw) = p["groups"], p["k"]
    c_conv_in, c_conv_out = p["cig"] * g, p["cog"] * g
    w = _rand(rng, (c_conv_out, p["cig"], kh, kw))
    y = _rand(rng, (p["n"], c_conv_out) + p["hw"])
    kws = dict(stride=p["stride"], pad=p["pad"], dilation=p["dilation"], groups=g)
    dx = conv_transpose2d_reference(y, w, output_padding=p["output_padding"], **kws)
    x = _rand(rng, (p["n"], c_conv_in) + dx.shape[2:])
    cy = conv2d_reference(x, w, **kws)
    assert cy.shape == y.shape
    lhs, rhs = float(np.sum(dx * x)), float(np.sum(y * cy))
    scale = max(1.0, float(np.sum(np.abs(dx * x))))
    assert abs(lhs - rhs) <= TOL["f64_vs_oracle"] * scale, (lhs, rhs)
    # fast vs reference, both dtypes
    fast64 = conv_transpose2d(y, w, output_padding=p["output_padding"], **kws)
    assert rel_err(fast64, dx) <= TOL["f64_vs_oracle"]
    y32, w32 = y.astype(np.float32), w.astype(np.float32)
    ref_of_32 = conv_transpose2d_reference(y32.astype(np.float64), w32.astype(np.float64),
                                           output_padding=p["output_padding"], **kws)
    assert_close(conv_transpose2d(y32, w32, output_padding=p["output_padding"], **kws),
                 ref_of_32, "f32_vs_f64", f"fast32 {p}")


# --------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------


def fsum_linear(x, w, b, axis):
    outer = int(np.prod(x.shape[:axis]))
    x2 = x.reshape(outer, -1)
    y = np.array([[math.fsum(x2[m] * w[o]) for o in range(w.shape[0])] for m in range(outer)])
    if b is not None:
        y = y + b
    return y.reshape(x.shape[:axis] + (w.shape[0],))


@pytest.mark.parametrize(
    "xshape,axis,bias",
    [((2, 5), 1, True), ((3, 2, 3, 4), 1, True), ((2, 3, 4), 2, False), ((2, 3, 4), -1, True),
     ((6,), 0, True), ((2, 3, 2, 2), 0, False), ((1, 1, 1, 1), 1, True)],
)
def test_linear_vs_fsum(xshape, axis, bias, rng):
    x = _rand(rng, xshape)
    ax = axis % len(xshape)
    k = int(np.prod(xshape[ax:]))
    w = _rand(rng, (7, k))
    b = _rand(rng, 7) if bias else None
    want = fsum_linear(x, w, b, ax)
    for f in (linear_reference, linear):
        got = f(x, w, b, axis=axis)
        assert got.shape == xshape[:ax] + (7,)
        assert_close(got, want, "f64_vs_oracle", f.__name__)
    got32 = linear(x.astype(np.float32), w.astype(np.float32),
                   None if b is None else b.astype(np.float32), axis=axis)
    assert got32.dtype == np.float32
    assert_close(got32, want, "f32_vs_f64", "fast32")


def test_linear_long_reduction_float32(rng):
    x = _rand(rng, (2, 512, 3, 3), np.float32)
    w = _rand(rng, (10, 512 * 9), np.float32)
    ref = linear_reference(x.astype(np.float64), w.astype(np.float64))
    assert_close(linear(x, w), ref, "f32_vs_f64_long", "fc 4608")


# --------------------------------------------------------------------------------------
# bad input, NaN
# --------------------------------------------------------------------------------------

CONV_FNS = [conv2d, conv2d_reference]


@pytest.mark.parametrize("f", CONV_FNS)
def test_conv2d_bad_input(f):
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((6, 4, 3, 3), np.float32)
    with pytest.raises(ShapeError, match="x must be 4-D"):
        f(x[0], w)
    with pytest.raises(ShapeError, match="w must be 4-D"):
        f(x, w[0])
    with pytest.raises(TypeError, match="w has dtype float64"):
        f(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="b has dtype float64"):
        f(x, w, np.zeros(6))
    with pytest.raises(TypeError, match="float32 or float64"):
        f(x.astype(np.int32), w)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        f(x.tolist(), w)
    with pytest.raises(ShapeError, match=r"\(6, 4, 3, 3\)"):  # channel mismatch names shapes
        f(np.zeros((1, 3, 5, 5), np.float32), w)
    with pytest.raises(ShapeError, match="divisible by groups=4"):
        f(x, w, groups=4)  # 6 output channels
    with pytest.raises(ShapeError, match="C_in // groups"):
        f(x, w, groups=2)  # w must have 2 input channels per group
    with pytest.raises(ShapeError, match="groups"):
        f(x, w, groups=0)
    with pytest.raises(ShapeError, match="stride"):
        f(x, w, stride=0)
    with pytest.raises(ShapeError, match="dilation"):
        f(x, w, dilation=(1, -1))
    with pytest.raises(ShapeError, match="pad"):
        f(x, w, pad=-1)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        f(x, w, dilation=3)  # extent 7 > 5
    with pytest.raises(ShapeError, match="b must have one value per output channel"):
        f(x, w, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="activation"):
        f(x, w, activation="tanh")


@pytest.mark.parametrize("f", [conv_transpose2d, conv_transpose2d_reference])
def test_conv_transpose2d_bad_input(f):
    x = np.zeros((1, 4, 5, 5))
    w = np.zeros((4, 3, 3, 3))
    with pytest.raises(ShapeError, match="C_in"):
        f(np.zeros((1, 3, 5, 5)), w)
    with pytest.raises(ShapeError, match="output_padding"):
        f(x, w, stride=2, output_padding=2)
    with pytest.raises(ShapeError, match="divisible by groups"):
        f(x, w, groups=3)
    with pytest.raises(ShapeError, match="empty"):
        f(np.zeros((1, 4, 1, 1)), w, pad=2)  # full output 3x3 cropped by 4
    with pytest.raises(TypeError):
        f(x.astype(np.float32), w)


@pytest.mark.parametrize("f", [linear, linear_reference])
def test_linear_bad_input(f):
    x = np.zeros((2, 3, 4))
    with pytest.raises(ShapeError, match="12 features"):
        f(x, np.zeros((5, 11)))
    with pytest.raises(ShapeError, match="w must be 2-D"):
        f(x, np.zeros((5, 12, 1)))
    with pytest.raises(ShapeError, match="axis"):
        f(x, np.zeros((5, 12)), axis=3)
    with pytest.raises(TypeError):
        f(x, np.zeros((5, 12), np.float32))


@pytest.mark.parametrize("case", ["basic_3x3", "pointwise", "depthwise", "groups_2",
                                  "dilation", "pad_stride"])
@pytest.mark.parametrize("f", CONV_FNS)
def test_conv2d_nan_propagates_to_its_receptive_field(case, f, rng):
    xs, ws, kw = CONV_CASES[case]
    x, w = _rand(rng, xs, np.float32), _rand(rng, ws, np.float32)
    x[0, 0, xs[2] // 2, xs[3] // 2] = np.nan
    y = f(x, w, activation="relu", **kw)
    # which outputs see the NaN: an independent conv of the NaN indicator with |w| > 0
    ind = np.isnan(x).astype(np.float64)
    reach = scipy_conv2d(ind, np.ones(ws), stride=_pair_kw(kw, "stride"),
                         pad=_pad4(kw.get("pad", 0)), dilation=_pair_kw(kw, "dilation"),
                         groups=kw.get("groups", 1)) > 0
    assert reach.any()
    np.testing.assert_array_equal(np.isnan(y), reach)


def test_conv_transpose2d_and_linear_nan():
    x = np.ones((1, 2, 3, 3))
    x[0, 1, 0, 0] = np.nan
    w = np.ones((2, 2, 2, 2))
    y = conv_transpose2d(x, w, stride=2)
    assert np.isnan(y[:, :, :2, :2]).all() and np.isfinite(y[:, :, 2:, :]).all()
    assert np.isnan(linear(x, np.ones((3, 18)))).all()
