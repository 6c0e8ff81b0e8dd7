"""Second oracle for the backward kernels: PyTorch autograd (float64, CPU) on the ops it expresses
with the same forward rule. The Makefile installs torch for the tests (the `torch` extra); the
finite-difference tests in test_grad_kernels.py cover every kernel without it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refnet.kernels as K

torch = pytest.importorskip("torch")
F = torch.nn.functional

HYP = settings(max_examples=25, deadline=None, derandomize=True)
SEEDS = st.integers(0, 2**31 - 1)
TOL = 1e-10  # both float64: rounding only


def _t(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def _vjp(fn, args, dy):
    ts = [_t(a) for a in args]
    out = fn(*ts)
    out.backward(torch.tensor(dy))
    return [t.grad.numpy() for t in ts]


@HYP
@given(st.integers(1, 2), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.tuples(*[st.integers(0, 2)] * 4), st.integers(1, 2), st.integers(3, 7), SEEDS)
def test_conv2d_vs_torch(g, cig, cog, k, s, pad, d, hw, seed):
    assume(hw + pad[0] + pad[2] >= d * (k - 1) + 1 and hw + pad[1] + pad[3] >= d * (k - 1) + 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, g * cig, hw, hw))
    w = rng.standard_normal((g * cog, cig, k, k))
    b = rng.standard_normal(g * cog)
    geo = dict(stride=s, pad=pad, dilation=d, groups=g)
    dy = rng.standard_normal(K.conv2d_reference(x, w, b, **geo).shape)
    dx, dw, db = K.conv2d_backward_reference(x, w, dy, **geo)

    def fn(x, w, b):  # asymmetric pads: F.pad (left, right, top, bottom) then an unpadded conv
        return F.conv2d(F.pad(x, (pad[1], pad[3], pad[0], pad[2])), w, b, stride=s, dilation=d, groups=g)

    tx, tw, tb = _vjp(fn, [x, w, b], dy)
    assert_close(dx, tx, TOL, "dx")
    assert_close(dw, tw, TOL, "dw")
    assert_close(db, tb, TOL, "db")


@HYP
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1),
       st.integers(1, 2), SEEDS)
def test_conv_transpose2d_vs_torch(g, cog, k, s, p, d, seed):
    assume(p < k)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2 * g, 4, 3))
    w = rng.standard_normal((2 * g, cog, k, k))
    b = rng.standard_normal(g * cog)
    op = s - 1
    geo = dict(stride=s, pad=p, dilation=d, groups=g, output_padding=op)
    dy = rng.standard_normal(K.conv_transpose2d_reference(x, w, b, **geo).shape)
    dx, dw, db = K.conv_transpose2d_backward_reference(x, w, dy, **geo)
    fn = lambda x, w, b: F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op, groups=g,  # noqa: E731
                                            dilation=d)
    tx, tw, tb = _vjp(fn, [x, w, b], dy)
    assert_close(dx, tx, TOL, "dx")
    assert_close(dw, tw, TOL, "dw")
    assert_close(db, tb, TOL, "db")


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 2, 0), (3, 1, 1), (2, 1, 0)])
@pytest.mark.parametrize("hw", [5, 6, 7])
def test_pools_vs_torch(k, s, p, hw):
    """Caffe ceil-mode pools with symmetric pads: torch's ceil_mode drops a last window starting
    in the end padding, as Caffe does, and count_include_pad divides by the window clipped to
    the padded extent (Caffe AVE)."""
    rng = np.random.default_rng(hw * 100 + k * 10 + s)
    x = rng.standard_normal((2, 3, hw, hw))
    ym = K.max_pool_reference(x, k, s, p)
    dy = rng.standard_normal(ym.shape)
    (tx,) = _vjp(lambda x: F.max_pool2d(x, k, s, p, ceil_mode=True), [x], dy)
    assert_close(K.max_pool_backward_reference(x, dy, k, s, p), tx, TOL, "max")
    ya = K.avg_pool_reference(x, k, s, p)
    (tx,) = _vjp(lambda x: F.avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=True), [x], dy)
    assert ya.shape == ym.shape
    assert_close(K.avg_pool_backward_reference(x, dy, k, s, p), tx, TOL, "avg padded")
    (tx,) = _vjp(lambda x: F.avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=False), [x], dy)
    assert_close(K.avg_pool_backward_reference(x, dy, k, s, p, divisor="valid"), tx, TOL, "avg valid")


ACTS = [
    ("relu", {}, lambda x: F.relu(x)),
    ("relu", dict(negative_slope=0.2), lambda x: F.leaky_relu(x, 0.2)),
    ("elu", dict(alpha=0.8), lambda x: F.elu(x, 0.8)),
    ("sigmoid", {}, torch.sigmoid),
    ("tanh", {}, torch.tanh),
]


@pytest.mark.parametrize("name,kw,tfn", ACTS, ids=[f"{a[0]}{a[1]}" for a in ACTS])
def test_activations_vs_torch(name, kw, tfn):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))
    dy = rng.standard_normal(x.shape)
    (tx,) = _vjp(tfn, [x], dy)
    assert_close(getattr(K, name + "_backward_reference")(x, dy, **kw), tx, TOL, name)


def test_prelu_softmax_linear_vs_torch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    dy = rng.standard_normal(x.shape)
    slope = rng.standard_normal(3)
    tx, ts = _vjp(lambda x, a: F.prelu(x, a), [x, slope], dy)
    dx, ds = K.prelu_backward_reference(x, slope, dy)
    assert_close(dx, tx, TOL, "prelu x")
    assert_close(ds, ts, TOL, "prelu slope")
    for axis in (1, 3):
        (tx,) = _vjp(lambda x, a=axis: F.softmax(x, a), [x], dy)
        assert_close(K.softmax_backward_reference(x, dy, axis), tx, TOL, "softmax")
        (tx,) = _vjp(lambda x, a=axis: F.log_softmax(x, a), [x], dy)
        assert_close(K.log_softmax_backward_reference(x, dy, axis), tx, TOL, "log_softmax")
    w, b = rng.standard_normal((7, 60)), rng.standard_normal(7)
    dy2 = rng.standard_normal((2, 7))
    tx, tw, tb = _vjp(lambda x, w, b: F.linear(x.reshape(2, -1), w, b), [x, w, b], dy2)
    dx, dw, db = K.linear_backward_reference(x, w, dy2)
    for a, t, n in ((dx, tx, "x"), (dw, tw, "w"), (db, tb, "b")):
        assert_close(a, t, TOL, "linear " + n)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_and_batch_norm_vs_torch(size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 7, 3, 4))
    dy = rng.standard_normal(x.shape)
    (tx,) = _vjp(lambda x: F.local_response_norm(x, size, alpha=0.3, beta=0.75, k=2.0), [x], dy)
    assert_close(K.lrn_backward_reference(x, dy, size, 0.3, 0.75, 2.0), tx, TOL, "lrn across")
    mean, var = rng.standard_normal(7), rng.uniform(0.5, 2, 7)
    w, b = rng.standard_normal(7), rng.standard_normal(7)
    tx, tw, tb = _vjp(lambda x, w, b: F.batch_norm(x, torch.tensor(mean), torch.tensor(var), w, b, False, 0.0, 1e-3),
                      [x, w, b], dy)
    g = K.batch_norm_backward_reference(x, mean, var, w, dy, eps=1e-3)
    for k, t in (("x", tx), ("weight", tw), ("bias", tb)):
        assert_close(g[k], t, TOL, "batch_norm " + k)


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("out", [(7, 9), (3, 2), (8, 10)])
def test_bilinear_and_nearest_vs_torch(align, out):
    """torch bilinear: align_corners=True is our align_corners rule, False our half_pixel rule
    (with the source clamped at 0); nearest with integer factors is cv2's rule."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 5))
    dy = rng.standard_normal((1, 2) + out)
    kw = dict(align_corners=align, half_pixel=not align)
    y = K.resize_bilinear_reference(x, out, **kw)
    ty = F.interpolate(torch.tensor(x), size=out, mode="bilinear", align_corners=align).numpy()
    assert_close(y, ty, 1e-12, "forward rule is the same")
    (tx,) = _vjp(lambda x: F.interpolate(x, size=out, mode="bilinear", align_corners=align), [x], dy)
    assert_close(K.resize_bilinear_backward_reference(dy, (4, 5), **kw), tx, TOL, "bilinear")
    dy2 = rng.standard_normal((1, 2, 8, 10))
    (tx,) = _vjp(lambda x: F.interpolate(x, size=(8, 10), mode="nearest"), [x], dy2)
    assert_close(K.resize_nearest_backward_reference(dy2, (4, 5)), tx, TOL, "nearest")
