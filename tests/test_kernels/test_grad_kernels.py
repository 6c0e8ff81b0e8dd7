"""Backward kernels: every ``<op>_backward_reference`` against central finite differences of the
forward reference kernel (float64, relative 1e-6, hypothesis-drawn small shapes and attributes),
and every fast ``<op>_backward`` against its reference (float64 inputs: to rounding; float32
inputs: within the float32 tolerance, result dtype float32)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, assert_close, pool_window
from gradcheck import away_from_zero, check_grads
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refnet.kernels as K
from refnet.errors import ShapeError

HYP = settings(max_examples=40, deadline=None, derandomize=True)
SEEDS = st.integers(0, 2**31 - 1)


def _twins(fast, ref, args, *, what, tol32="f32_vs_f64_long", f32_args=None):
    """The fast twin equals the reference on float64 inputs and is close on float32 ones."""
    r = ref(*args)
    r = r if isinstance(r, (list, tuple)) else [r]
    f = fast(*args)
    f = f if isinstance(f, (list, tuple)) else [f]
    for a, b in zip(f, r):
        if b is None:
            assert a is None
            continue
        assert_close(a, b, 1e-10, what + " fast(float64) vs reference")
    a32 = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a for a in args]
    f32 = fast(*(f32_args or a32))
    f32 = f32 if isinstance(f32, (list, tuple)) else [f32]
    for a, b in zip(f32, r):
        if b is not None:
            assert a.dtype == np.float32, what
            assert_close(a, b, tol32, what + " fast(float32) vs reference")
    return r


# ---- convolution ------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw, transposed=False):
    g = draw(st.integers(1, 2))
    cig, cog = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    if transposed:
        op = (draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1)))
        ho = (h - 1) * sh - pad[0] - pad[2] + dh * (kh - 1) + 1 + op[0]
        wo = (w - 1) * sw - pad[1] - pad[3] + dw * (kw - 1) + 1 + op[1]
        assume(ho > 0 and wo > 0)
        return dict(n=n, g=g, cig=cig, cog=cog, k=(kh, kw), s=(sh, sw), d=(dh, dw), pad=pad, hw=(h, w),
                    bias=bias, op=op, seed=draw(SEEDS))
    assume(h + pad[0] + pad[2] >= dh * (kh - 1) + 1 and w + pad[1] + pad[3] >= dw * (kw - 1) + 1)
    return dict(n=n, g=g, cig=cig, cog=cog, k=(kh, kw), s=(sh, sw), d=(dh, dw), pad=pad, hw=(h, w), bias=bias,
                seed=draw(SEEDS))


def _check_conv_backward(c: dict, transposed: bool) -> tuple:
    """Fast vs reference backward of conv2d / conv_transpose2d on case ``c``, then finite differences;
    returns (x, w, dy, dx, geometry)."""
    name = "conv_transpose2d" if transposed else "conv2d"
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["n"], c["g"] * c["cig"]) + c["hw"])
    wshape = (c["g"] * c["cig"], c["cog"]) if transposed else (c["g"] * c["cog"], c["cig"])
    w = rng.standard_normal(wshape + c["k"])
    b = rng.standard_normal(c["g"] * c["cog"])
    geo = dict(stride=c["s"], pad=c["pad"], dilation=c["d"], groups=c["g"])
    if transposed:
        geo["output_padding"] = c["op"]
    ref, fast_b, ref_b = (getattr(K, name + s) for s in ("_reference", "_backward", "_backward_reference"))

    def fwd(x, w, b):
        return ref(x, w, b if c["bias"] else None, **geo)

    dy = rng.standard_normal(fwd(x, w, b).shape)
    dx, dw_, db = _twins(lambda x, w, dy: fast_b(x, w, dy, bias=c["bias"], **geo),
                         lambda x, w, dy: ref_b(x, w, dy, bias=c["bias"], **geo), [x, w, dy], what=name)
    grads, which = [dx, dw_], [0, 1]
    if c["bias"]:
        grads.append(db)
        which.append(2)
    check_grads(fwd, [x, w, b], grads, which, dy, rng, name)
    return x, w, dy, dx, geo


@HYP
@given(conv_cases())
def test_conv2d_backward(c):
    x, w, dy, dx, geo = _check_conv_backward(c, transposed=False)
    for f in (K.conv2d_backward, K.conv2d_backward_reference):  # input gradient only
        only = f(x, w, dy, bias=c["bias"], need_weight=False, **geo)
        assert only[1] is None
        assert_close(only[0], dx, 1e-12, "conv2d need_weight=False")


@HYP
@given(conv_cases(transposed=True))
def test_conv_transpose2d_backward(c):
    _check_conv_backward(c, transposed=True)


@pytest.mark.parametrize("n,c,o,hw", [(1, 5, 7, (3, 4)), (2, 3, 2, (1, 6))])
def test_pointwise_conv_backward(n, c, o, hw):
    """1x1 / stride 1 / unpadded convolutions take the two-GEMM path of the fast twin."""
    rng = np.random.default_rng(c * o)
    x, w, b = rng.standard_normal((n, c) + hw), rng.standard_normal((o, c, 1, 1)), rng.standard_normal(o)
    dy = rng.standard_normal((n, o) + hw)
    g = _twins(K.conv2d_backward, K.conv2d_backward_reference, [x, w, dy], what="pointwise conv")
    check_grads(lambda x, w, b: K.conv2d_reference(x, w, b), [x, w, b], list(g), [0, 1, 2], dy, rng, "1x1 conv")


@HYP
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), SEEDS)
def test_linear_backward(n, axis, c, o, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, 2, 3))
    k = int(np.prod(x.shape[axis:]))
    w = rng.standard_normal((o, k))
    b = rng.standard_normal(o)
    fwd = lambda x, w, b: K.linear_reference(x, w, b, axis=axis)  # noqa: E731
    dy = rng.standard_normal(fwd(x, w, b).shape)
    g = _twins(lambda x, w, dy: K.linear_backward(x, w, dy, axis),
               lambda x, w, dy: K.linear_backward_reference(x, w, dy, axis), [x, w, dy], what="linear")
    check_grads(fwd, [x, w, b], g, [0, 1, 2], dy, rng, "linear")


# ---- pooling --------------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw):
    (kh, kw), (sh, sw), pad = draw(pool_window(3, 3))
    h, w = draw(st.integers(kh, 7)), draw(st.integers(kw, 7))
    return dict(k=(kh, kw), s=(sh, sw), pad=pad, hw=(h, w), ceil=draw(st.booleans()),
                n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), seed=draw(SEEDS))


@HYP
@given(pool_cases())
def test_max_pool2d_backward(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["n"], c["c"]) + c["hw"])
    geo = (c["k"], c["s"], c["pad"])
    fwd = lambda x: K.max_pool_reference(x, *geo, ceil_mode=c["ceil"])  # noqa: E731
    y = fwd(x)
    # a ceil-mode window over no input element holds the constant -FLT_MAX: keep it out of the loss
    dy = np.where(y == K.pool.EMPTY_MAX, 0.0, rng.standard_normal(y.shape))
    (dx,) = _twins(lambda x, dy: K.max_pool_backward(x, dy, *geo, ceil_mode=c["ceil"]),
                   lambda x, dy: K.max_pool_backward_reference(x, dy, *geo, ceil_mode=c["ceil"]),
                   [x, dy], what="max_pool")
    check_grads(fwd, [x], [dx], [0], dy, rng, "max_pool")


@HYP
@given(pool_cases(), st.sampled_from(["padded", "valid", "kernel"]))
def test_avg_pool2d_backward(c, divisor):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["n"], c["c"]) + c["hw"])
    geo = (c["k"], c["s"], c["pad"])
    kw = dict(ceil_mode=c["ceil"], divisor=divisor)
    fwd = lambda x: K.avg_pool_reference(x, *geo, **kw)  # noqa: E731
    dy = rng.standard_normal(fwd(x).shape)
    (dx,) = _twins(lambda x, dy: K.avg_pool_backward(x, dy, *geo, **kw),
                   lambda x, dy: K.avg_pool_backward_reference(x, dy, *geo, **kw), [x, dy], what="avg_pool")
    check_grads(fwd, [x], [dx], [0], dy, rng, "avg_pool")


def test_avg_pool_caffe_divisor_hand_computed():
    # 3x3 input, kernel 2, stride 2, pad 1 (Caffe AVE, ceil): output 2x2; window (0,0) covers the
    # padded 2x2 block [-1,0]x[-1,0] (divisor 4, one input element) -> dx[0,0] = dy[0,0] / 4
    x = np.zeros((1, 1, 3, 3))
    dy = np.ones((1, 1, 2, 2))
    dx = K.avg_pool_backward_reference(x, dy, 2, 2, 1)
    # the last window starts at 1 and is clipped to the padded extent 3+1: [1, 3) -> divisor 2x2
    want = np.array([[0.25, 0.25, 0.25], [0.25, 0.25, 0.25], [0.25, 0.25, 0.25]])
    np.testing.assert_allclose(dx[0, 0], want)
    dx_valid = K.avg_pool_backward_reference(x, dy, 2, 2, 1, divisor="valid")
    np.testing.assert_allclose(dx_valid[0, 0], [[1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])


@HYP
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), SEEDS)
def test_global_pools_backward(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    dy = rng.standard_normal((n, c, 1, 1))
    for name in ("global_max_pool2d", "global_avg_pool2d"):
        (dx,) = _twins(getattr(K, name + "_backward"), getattr(K, name + "_backward_reference"), [x, dy], what=name)
        check_grads(getattr(K, name + "_reference"), [x], [dx], [0], dy, rng, name)


@HYP
@given(pool_cases())
def test_max_unpool_backward(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["n"], c["c"]) + c["hw"])
    _, idx = K.max_pool_reference(x, c["k"], c["s"], c["pad"], ceil_mode=c["ceil"], return_indices=True)
    assume((idx >= 0).all())
    v = rng.standard_normal(idx.shape)
    fwd = lambda v: K.max_unpool_reference(v, idx, c["hw"])  # noqa: E731
    dy = rng.standard_normal(fwd(v).shape)
    (dv,) = _twins(lambda i, dy: K.max_unpool_backward(i, dy), lambda i, dy: K.max_unpool_backward_reference(i, dy),
                   [idx, dy], what="max_unpool")
    check_grads(fwd, [v], [dv], [0], dy, rng, "max_unpool")


# ---- activations ---------------------------------------------------------------------------------------
SHAPES = st.sampled_from([(2, 3), (1, 3, 4, 5), (2, 2, 3, 1, 2)])

ELEMENTWISE = [
    ("relu", dict(negative_slope=0.0)), ("relu", dict(negative_slope=0.1)), ("elu", dict(alpha=0.7)),
    ("sigmoid", {}), ("tanh", {}), ("abs", {}), ("power", dict(power=3.0, scale=0.5, shift=0.2)),
    ("power", dict(power=2.0, scale=-1.5, shift=0.0)), ("power", dict(power=1.0, scale=2.0, shift=1.0)),
]


@pytest.mark.parametrize("name,kw", ELEMENTWISE, ids=lambda v: str(v))
@HYP
@given(SHAPES, SEEDS)
def test_elementwise_backward(name, kw, shape, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng.standard_normal(shape))
    fwd = lambda x: getattr(K, name + "_reference")(x, **kw)  # noqa: E731
    dy = rng.standard_normal(shape)
    (dx,) = _twins(lambda x, dy: getattr(K, name + "_backward")(x, dy, **kw),
                   lambda x, dy: getattr(K, name + "_backward_reference")(x, dy, **kw), [x, dy], what=name)
    check_grads(fwd, [x], [dx], [0], dy, rng, name)


@HYP
@given(SHAPES, SEEDS)
def test_clip_backward(shape, seed):
    rng = np.random.default_rng(seed)
    x = 4 * rng.standard_normal(shape)
    x = np.where(np.abs(x - 6) < 1e-3, 6.1, away_from_zero(x))
    fwd = lambda x: K.clip_reference(x, 0.0, 6.0)  # noqa: E731
    dy = rng.standard_normal(shape)
    (dx,) = _twins(lambda x, dy: K.clip_backward(x, dy, 0.0, 6.0), lambda x, dy: K.clip_backward_reference(x, dy, 0, 6),
                   [x, dy], what="clip")
    check_grads(fwd, [x], [dx], [0], dy, rng, "clip")


@HYP
@given(SHAPES, st.booleans(), SEEDS)
def test_prelu_backward(shape, shared, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng.standard_normal(shape))
    slope = rng.standard_normal(1 if shared else shape[1])
    dy = rng.standard_normal(shape)
    g = _twins(K.prelu_backward, K.prelu_backward_reference, [x, slope, dy], what="prelu")
    check_grads(K.prelu_reference, [x, slope], g, [0, 1], dy, rng, "prelu")


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@HYP
@given(SHAPES, st.integers(-2, 1), SEEDS)
def test_softmax_backward(name, shape, axis, seed):
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal(shape)
    fwd = lambda x: getattr(K, name + "_reference")(x, axis)  # noqa: E731
    dy = rng.standard_normal(shape)
    # float32: dx = y * (dy - sum(dy * y)) cancels in the bracket, so relative to max|dx| the fast
    # twin's float32 rounding reaches a few 1e-5 (5.8e-5 seen): a looser float32 bound here
    (dx,) = _twins(lambda x, dy: getattr(K, name + "_backward")(x, dy, axis),
                   lambda x, dy: getattr(K, name + "_backward_reference")(x, dy, axis), [x, dy], what=name,
                   tol32=3e-4)
    check_grads(fwd, [x], [dx], [0], dy, rng, name)


# ---- normalisation ----------------------------------------------------------------------------------------
@HYP
@given(SHAPES, st.booleans(), SEEDS)
def test_batch_norm_backward(shape, with_weight, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape)
    mean, var = rng.standard_normal(c), rng.uniform(0.2, 2.0, c)
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    dy = rng.standard_normal(shape)
    ww = w if with_weight else None
    r = K.batch_norm_backward_reference(x, mean, var, ww, dy, eps=1e-3)
    f = K.batch_norm_backward(x, mean, var, ww, dy, eps=1e-3)
    f32 = K.batch_norm_backward(*(a.astype(np.float32) if a is not None else None for a in (x, mean, var, ww, dy)),
                                eps=1e-3)
    assert set(r) == set(f) == {"x", "mean", "var", "bias"} | ({"weight"} if with_weight else set())
    for k in r:
        assert_close(f[k], r[k], 1e-10, f"batch_norm {k}")
        assert f32[k].dtype == np.float32
        assert_close(f32[k], r[k], "f32_vs_f64_long", f"batch_norm {k} float32")

    def fwd(x, mean, var, w, b):
        return K.batch_norm_reference(x, mean, var, w if with_weight else None, b, eps=1e-3)

    names = ["x", "mean", "var"] + (["weight"] if with_weight else []) + ["bias"]
    which = [0, 1, 2] + ([3] if with_weight else []) + [4]
    check_grads(fwd, [x, mean, var, w, b], [r[k] for k in names], which, dy, rng, "batch_norm")


@HYP
@given(SHAPES, st.integers(1, 2), st.booleans(), SEEDS)
def test_scale_and_bias_backward(shape, span, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    pshape = shape[1:1 + span]
    w, b = rng.standard_normal(pshape), rng.standard_normal(pshape)
    dy = rng.standard_normal(shape)
    g = _twins(lambda x, w, dy: K.scale_backward(x, w, dy, 1, bias), lambda x, w, dy: K.scale_backward_reference(
        x, w, dy, 1, bias), [x, w, dy], what="scale")
    fwd = lambda x, w, b: K.scale_reference(x, w, b if bias else None, 1)  # noqa: E731
    check_grads(fwd, [x, w, b], [g[0], g[1]] + ([g[2]] if bias else []), [0, 1] + ([2] if bias else []), dy, rng,
                "scale")
    gb = _twins(lambda dy: K.bias_backward(dy, pshape, 1), lambda dy: K.bias_backward_reference(dy, pshape, 1),
                [dy], what="bias")
    check_grads(lambda x, b: K.bias_reference(x, b, 1), [x, b], gb, [0, 1], dy, rng, "bias")


@HYP
@given(st.sampled_from([1, 3, 5]), st.sampled_from(["across", "within"]), st.floats(0.5, 2.0), st.floats(0.3, 1.0),
       st.integers(1, 6), SEEDS)
def test_lrn_backward(size, region, k, beta, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, 4, 3))
    kw = dict(size=size, alpha=0.5, beta=beta, k=k, region=region)  # large alpha: the window matters
    dy = rng.standard_normal(x.shape)
    (dx,) = _twins(lambda x, dy: K.lrn_backward(x, dy, **kw), lambda x, dy: K.lrn_backward_reference(x, dy, **kw),
                   [x, dy], what="lrn")
    check_grads(lambda x: K.lrn_reference(x, **kw), [x], [dx], [0], dy, rng, "lrn")


@HYP
@given(st.booleans(), st.booleans(), st.booleans(), SEEDS)
def test_l2_normalize_backward(across, shared, with_scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 2, 4))
    scale = rng.standard_normal(1 if shared else 3)
    kw = dict(across_spatial=across, channel_shared=shared, eps=1e-6)
    dy = rng.standard_normal(x.shape)
    sc = scale if with_scale else None
    g = _twins(lambda x, dy: K.l2_normalize_backward(x, sc, dy, **kw),
               lambda x, dy: K.l2_normalize_backward_reference(x, sc, dy, **kw), [x, dy], what="l2_normalize")
    if with_scale:
        check_grads(lambda x, s: K.l2_normalize_reference(x, s, **kw), [x, scale], g, [0, 1], dy, rng, "normalize")
    else:
        assert g[1] is None
        check_grads(lambda x: K.l2_normalize_reference(x, None, **kw), [x], g[:1], [0], dy, rng, "normalize")


# ---- tensor ops ---------------------------------------------------------------------------------------------
@HYP
@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.integers(0, 3), SEEDS)
def test_concat_and_slice_backward(sizes, axis, seed):
    rng = np.random.default_rng(seed)
    base = [2, 3, 2, 2]
    xs = []
    for s in sizes:
        shape = list(base)
        shape[axis] = s
        xs.append(rng.standard_normal(shape))
    y = K.concat_reference(xs, axis)
    dy = rng.standard_normal(y.shape)
    g = _twins(lambda dy: K.concat_backward(dy, sizes, axis), lambda dy: K.concat_backward_reference(dy, sizes, axis),
               [dy], what="concat")
    for i in range(len(xs)):
        check_grads(lambda *a: K.concat_reference(list(a), axis), xs, [g[i]], [i], dy, rng, "concat")
    # slice: cotangents of the pieces (one missing) concatenated back; oracle: FD of the slice forward
    points = tuple(np.cumsum(sizes)[:-1])
    dys = [rng.standard_normal(p.shape) for p in xs]
    if len(dys) > 1:
        dys[0] = None
    dx = K.slice_backward_reference(dys, [p.shape for p in xs], axis)
    assert_close(K.slice_backward(dys, [p.shape for p in xs], axis), dx, 1e-12, "slice fast")
    total = lambda x: sum(float(np.sum(d * p)) for d, p in zip(dys, K.slice_reference(x, axis, points, len(xs)))  # noqa: E731
                          if d is not None)
    v = rng.standard_normal(y.shape)
    fd = (total(y + 1e-6 * v) - total(y - 1e-6 * v)) / 2e-6
    assert abs(fd - float(np.sum(dx * v))) <= TOL["grad_fd"] * max(abs(fd), 1e-12)


@HYP
@given(st.sampled_from(["sum", "prod", "max"]), st.integers(1, 4), st.booleans(), SEEDS)
def test_eltwise_backward(op, n_in, coeffs, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((2, 3, 2)) for _ in range(n_in)]
    cs = tuple(rng.standard_normal(n_in)) if coeffs and op == "sum" else None
    dy = rng.standard_normal(xs[0].shape)
    g = _twins(lambda *a: K.eltwise_backward(list(a[:-1]), a[-1], op, cs),
               lambda *a: K.eltwise_backward_reference(list(a[:-1]), a[-1], op, cs), xs + [dy], what="eltwise")
    check_grads(lambda *a: K.eltwise_reference(list(a), op, cs), xs, g, list(range(n_in)), dy, rng, "eltwise")


def test_eltwise_max_tie_goes_to_first_input():
    a = np.array([1.0, 2.0, 3.0])
    dxs = K.eltwise_backward_reference([a, a.copy(), np.array([0.0, 5.0, 3.0])], np.ones(3), "max")
    np.testing.assert_array_equal(np.stack(dxs), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])


@HYP
@given(st.permutations([0, 1, 2, 3]), SEEDS)
def test_reshape_flatten_permute_backward(order, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4, 5))
    for fwd, bwd, bref in [
        (lambda x: K.permute_reference(x, order), lambda dy: K.permute_backward(dy, order),
         lambda dy: K.permute_backward_reference(dy, order)),
        (lambda x: K.flatten_reference(x, 1, 2), lambda dy: K.reshape_backward(dy, x.shape),
         lambda dy: K.reshape_backward_reference(dy, x.shape)),
        (lambda x: K.reshape_reference(x, (0, -1, 10)), lambda dy: K.reshape_backward(dy, x.shape),
         lambda dy: K.reshape_backward_reference(dy, x.shape)),
    ]:
        dy = rng.standard_normal(fwd(x).shape)
        (dx,) = _twins(bwd, bref, [dy], what="reshape/permute")
        check_grads(fwd, [x], [dx], [0], dy, rng, "reshape/permute")


@HYP
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from(["nearest", "align", "half", "plain"]), SEEDS)
def test_resize_backward(h, w, oh, ow, mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, h, w))
    dy = rng.standard_normal((2, 2, oh, ow))
    if mode == "nearest":
        fwd = lambda x: K.resize_nearest_reference(x, (oh, ow))  # noqa: E731
        (dx,) = _twins(lambda dy: K.resize_nearest_backward(dy, (h, w)),
                       lambda dy: K.resize_nearest_backward_reference(dy, (h, w)), [dy], what="resize_nearest")
    else:
        kw = dict(align_corners=mode == "align", half_pixel=mode == "half")
        fwd = lambda x: K.resize_bilinear_reference(x, (oh, ow), **kw)  # noqa: E731
        (dx,) = _twins(lambda dy: K.resize_bilinear_backward(dy, (h, w), **kw),
                       lambda dy: K.resize_bilinear_backward_reference(dy, (h, w), **kw), [dy], what="resize_bilinear")
    check_grads(fwd, [x], [dx], [0], dy, rng, "resize " + mode)


@HYP
@given(st.integers(1, 3), st.integers(1, 3), SEEDS)
def test_upsample_nearest_backward(sh, sw, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, 3, 2))
    dy = rng.standard_normal((1, 2, 3 * sh, 2 * sw))
    (dx,) = _twins(lambda dy: K.upsample_nearest_backward(dy, (sh, sw)),
                   lambda dy: K.upsample_nearest_backward_reference(dy, (sh, sw)), [dy], what="upsample_nearest")
    check_grads(lambda x: K.upsample_nearest_reference(x, (sh, sw)), [x], [dx], [0], dy, rng, "upsample")


@HYP
@given(st.sampled_from(["constant", "reflect", "edge"]), st.integers(0, 2), st.integers(0, 2), SEEDS)
def test_routing_backward_on_padding(mode, before, after, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, 3, 4))
    pads = ((0, 0), (0, 0), (before, after), (after, before))
    fwd = lambda x: K.pad_reference(x, pads, mode=mode, value=1.5)  # noqa: E731
    dy = rng.standard_normal(fwd(x).shape)
    (dx,) = K.routing_backward(fwd, [x.shape], [dy])
    check_grads(fwd, [x], [dx], [0], dy, rng, "routing pad " + mode)


def test_bad_arguments_are_named():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ShapeError):
        K.conv2d_backward_reference(x, np.zeros((3, 3, 1, 1)), np.zeros((1, 3, 4, 4)))
    with pytest.raises(ShapeError):
        K.max_pool_backward(x, np.zeros((1, 2, 3, 3)), 2, 2)
    with pytest.raises(ShapeError):
        K.relu_backward(x, np.zeros((1, 2, 4, 3)))
