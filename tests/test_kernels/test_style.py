"""Style-transfer losses: Gram matrix vs an explicit loop, hand-computed loss values, central
finite differences (float64) for every gradient within TOL["grad_fd"], fast vs reference
(hypothesis, both dtypes)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import TOL, assert_close, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

from refnet.errors import ShapeError

S = importlib.import_module("refnet.kernels.style")

HYP = settings(max_examples=25, deadline=None, derandomize=True)
DTYPES = st.sampled_from(["float32", "float64"])
SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))


def _fd_grad(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central finite differences of the scalar function ``f`` at ``x`` (float64)."""
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = float(f(x))
        flat[i] = old - h
        fm = float(f(x))
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def _tol(dt: str) -> str:
    return "f32_vs_f64" if dt == "float32" else "f64_vs_oracle"


# ---- Gram matrix --------------------------------------------------------------------------
@HYP
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), dt=DTYPES)
def test_gram_matrix_vs_explicit_loop(shape, seed, dt):
    x = np.random.default_rng(seed).normal(size=shape).astype(dt)
    n, c = shape[:2]
    want = np.zeros((n, c, c))
    for b in range(n):
        for i in range(c):
            for j in range(c):
                want[b, i, j] = sum(float(u) * float(v) for u, v in
                                    zip(x[b, i].ravel(), x[b, j].ravel()))
    r = S.gram_matrix_reference(x.astype(np.float64))
    assert_close(r, want, "f64_vs_oracle", "reference vs loop")
    got = S.gram_matrix(x)
    assert got.dtype == np.dtype(dt) and got.shape == (n, c, c)
    assert_close(got, r, _tol(dt), "fast vs reference")
    np.testing.assert_allclose(got, got.transpose(0, 2, 1), rtol=1e-6)


def test_gram_matrix_errors():
    with pytest.raises(ShapeError, match="4-D"):
        S.gram_matrix(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(TypeError):
        S.gram_matrix_reference(np.zeros((1, 3, 4, 4), np.int64))


# ---- content loss -------------------------------------------------------------------------
def test_content_loss_hand_computed():
    f = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    t = np.array([0.0, 2.0, 5.0, 4.0]).reshape(1, 1, 2, 2)
    # MSE: (1 + 0 + 4 + 0) / 4 = 1.25, times the weight
    for fn in (S.content_loss, S.content_loss_reference):
        assert fn(f, t, 2.0) == pytest.approx(2.5, rel=1e-15)
    for fn in (S.content_loss_grad, S.content_loss_grad_reference):
        np.testing.assert_allclose(fn(f, t, 2.0).ravel(), [1.0, 0.0, -2.0, 0.0], rtol=1e-15)


@HYP
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), w=st.floats(0.1, 10))
def test_content_loss_grad_vs_finite_differences(shape, seed, w):
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=shape), rng.normal(size=shape)
    fd = _fd_grad(lambda v: S.content_loss_reference(v, t, w), x.copy())
    for fn in (S.content_loss_grad, S.content_loss_grad_reference):
        assert_close(fn(x, t, w), fd, "grad_fd", fn.__name__)


@HYP
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), dt=DTYPES)
def test_content_loss_fast_vs_reference(shape, seed, dt):
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=shape).astype(dt), rng.normal(size=shape).astype(dt)
    r = S.content_loss_reference(x.astype(np.float64), t.astype(np.float64), 0.7)
    got = S.content_loss(x, t, 0.7)
    assert got.dtype == np.dtype(dt)
    assert_close(np.array(got), np.array(r), _tol(dt))
    assert_close(S.content_loss_grad(x, t, 0.7),
                 S.content_loss_grad_reference(x.astype(np.float64), t.astype(np.float64), 0.7),
                 _tol(dt))


# ---- style loss ---------------------------------------------------------------------------
def _style_setup(rng, shapes, dt="float64", batch_target=False):
    feats = [rng.normal(size=s).astype(dt) for s in shapes]
    targets = []
    for s in shapes:
        style = rng.normal(size=(s[0] if batch_target else 1,) + tuple(s[1:]))
        g = np.einsum("nip,njp->nij", style.reshape(style.shape[0], s[1], -1),
                      style.reshape(style.shape[0], s[1], -1)) / np.prod(s[1:])
        targets.append(g.astype(dt))
    return feats, targets


def test_style_loss_hand_computed():
    # one layer, N=1, C=1, H=W=2: G = sum(f^2) / 4; target T; loss = w * (G - T)^2
    f = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    t = np.array([[[5.0]]])
    g = 30.0 / 4
    for fn in (S.style_loss, S.style_loss_reference):
        assert fn([f], [t], [3.0]) == pytest.approx(3.0 * (g - 5.0) ** 2, rel=1e-15)
    # dL/df = w * 2 (G - T) * dG/df = w * 2 (G - T) * 2 f / 4
    for fn in (S.style_loss_grad, S.style_loss_grad_reference):
        np.testing.assert_allclose(fn([f], [t], [3.0])[0], 3.0 * 2 * (g - 5.0) * 2 * f / 4,
                                   rtol=1e-14)


@pytest.mark.parametrize("batch_target", [False, True])
def test_style_loss_grad_vs_finite_differences(rng, batch_target):
    shapes = [(2, 3, 4, 3), (2, 4, 2, 2)]
    feats, targets = _style_setup(rng, shapes, batch_target=batch_target)
    weights = [0.5, 4.0]
    for k in range(len(feats)):
        def loss(v, k=k):
            fs = list(feats)
            fs[k] = v
            return S.style_loss_reference(fs, targets, weights)

        fd = _fd_grad(loss, feats[k].copy())
        for fn in (S.style_loss_grad, S.style_loss_grad_reference):
            assert_close(fn(feats, targets, weights)[k], fd, "grad_fd", f"{fn.__name__} layer {k}")


def test_style_loss_is_sum_of_mse_of_normalised_grams(rng):
    shapes = [(2, 3, 4, 5), (2, 2, 3, 3)]
    feats, targets = _style_setup(rng, shapes)
    want = 0.0
    for f, t, w in zip(feats, targets, (2.0, 0.25)):
        n, c, h, wd = f.shape
        g = S.gram_matrix_reference(f) / (c * h * wd)
        want += w * np.mean((g - np.broadcast_to(t, g.shape)) ** 2)  # nn.MSECriterion
    for fn in (S.style_loss, S.style_loss_reference):
        assert fn(feats, targets, (2.0, 0.25)) == pytest.approx(want, rel=1e-13)
    assert S.style_loss(feats, [t[0] for t in targets], 1.0) == pytest.approx(
        S.style_loss_reference(feats, targets, [1.0, 1.0]), rel=1e-13)  # (C, C) targets


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, shapes=st.lists(SHAPES, min_size=1, max_size=3))
def test_style_loss_fast_vs_reference(seed, dt, shapes):
    rng = np.random.default_rng(seed)
    n = shapes[0][0]
    shapes = [(n,) + s[1:] for s in shapes]
    feats, targets = _style_setup(rng, shapes, dt)
    ws = list(rng.uniform(0.1, 5, len(shapes)))
    f64 = [f.astype(np.float64) for f in feats]
    t64 = [t.astype(np.float64) for t in targets]
    r = S.style_loss_reference(f64, t64, ws)
    got = S.style_loss(feats, targets, ws)
    assert got.dtype == np.dtype(dt)
    tol = "f32_vs_f64_long" if dt == "float32" else "f64_vs_oracle"
    assert_close(np.array(got), np.array(r), tol)
    grads = S.style_loss_grad(feats, targets, ws)
    for a, b in zip(grads, S.style_loss_grad_reference(f64, t64, ws)):
        assert a.dtype == np.dtype(dt)
        assert_close(a, b, tol)


def test_style_loss_errors():
    f = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ShapeError, match="one target Gram"):
        S.style_loss([f], [], [1.0])
    with pytest.raises(ShapeError, match="target_grams_list\\[0\\]"):
        S.style_loss([f], [np.zeros((2, 4, 4), np.float32)], [1.0])
    with pytest.raises(ShapeError, match="one weight per layer"):
        S.style_loss_grad([f], [np.zeros((1, 3, 3), np.float32)], [1.0, 2.0])
    with pytest.raises(TypeError, match="dtype"):
        S.style_loss([f], [np.zeros((1, 3, 3), np.float64)], [1.0])


# ---- total variation ----------------------------------------------------------------------
def test_tv_loss_hand_computed():
    x = np.array([[1.0, 2.0, 4.0], [0.0, 5.0, 1.0]]).reshape(1, 1, 2, 3)
    # block corners (0, 0), (0, 1): right diffs -1, -2; down diffs 1, -3 -> 1+4+1+9 = 15
    for fn in (S.tv_loss, S.tv_loss_reference):
        assert fn(x, 2.0) == pytest.approx(15.0, rel=1e-15)  # strength/2 * 15


def _tv_grad_lua(x: np.ndarray, strength: float) -> np.ndarray:
    """TotalVariation:updateGradInput of fast-neural-style, transcribed element by element."""
    n, c, h, w = x.shape
    g = np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(h - 1):
                for j in range(w - 1):
                    xd = x[b, ch, i, j] - x[b, ch, i, j + 1]
                    yd = x[b, ch, i, j] - x[b, ch, i + 1, j]
                    g[b, ch, i, j] += xd + yd
                    g[b, ch, i, j + 1] -= xd
                    g[b, ch, i + 1, j] -= yd
    return g * strength


@HYP
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), strength=st.floats(1e-3, 10))
def test_tv_loss_grad_vs_finite_differences_and_lua(shape, seed, strength):
    x = np.random.default_rng(seed).normal(size=shape)
    fd = _fd_grad(lambda v: S.tv_loss_reference(v, strength), x.copy())
    lua = _tv_grad_lua(x, strength)
    assert_close(lua, fd, "grad_fd", "the loss refnet states is what the Lua backward derives")
    for fn in (S.tv_loss_grad, S.tv_loss_grad_reference):
        assert_close(fn(x, strength), fd, "grad_fd", fn.__name__)


@HYP
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), dt=DTYPES)
def test_tv_fast_vs_reference(shape, seed, dt):
    x = np.random.default_rng(seed).normal(size=shape).astype(dt)
    x64 = x.astype(np.float64)
    got = S.tv_loss(x, 0.3)
    assert got.dtype == np.dtype(dt)
    assert_close(np.array(got), np.array(S.tv_loss_reference(x64, 0.3)), _tol(dt))
    g = S.tv_loss_grad(x, 0.3)
    assert g.dtype == np.dtype(dt)
    assert_close(g, S.tv_loss_grad_reference(x64, 0.3), _tol(dt))


def test_nan_propagates_and_fd_tolerance_is_meaningful(rng):
    x = rng.normal(size=(1, 2, 3, 3))
    x[0, 0, 1, 1] = np.nan
    assert np.isnan(S.tv_loss(x)) and np.isnan(S.tv_loss_grad(x)[0, 0, 1, 1])
    assert np.isnan(S.gram_matrix(x)[0, 0, 0]) and not np.isnan(S.gram_matrix(x)[0, 1, 1])
    assert np.isnan(S.content_loss(x, np.zeros_like(x)))
    # a wrong gradient (off by 1e-4 relative) must fail the FD check
    y = rng.normal(size=(1, 2, 3, 3))
    fd = _fd_grad(lambda v: S.tv_loss_reference(v), y.copy())
    assert rel_err(S.tv_loss_grad(y) * (1 + 1e-4), fd) > TOL["grad_fd"]
