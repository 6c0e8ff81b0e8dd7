"""Backward kernels of the elementwise activations and of softmax.

Each ``f_backward(x, dy, ...)`` returns ``dx = dy * f'(x)`` for the forward rule of
kernels/activation.py and kernels/softmax.py. At a kink the derivative is the one of the
branch the forward takes for that value: ReLU/leaky/PReLU/ELU use their ``x > 0`` branch
only for ``x > 0`` (so ``x = 0`` gets the negative-side slope, as Caffe's ReLU backward
``(x > 0) + slope * (x <= 0)``); clip passes ``dy`` strictly inside ``(lo, hi)``.

``f_backward_reference`` computes in float64 straight from the formula; ``f_backward``
computes in the input dtype (from the forward output where that saves a transcendental).
"""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels.softmax import _check as _softmax_check

__all__ = [
    "relu_backward", "relu_backward_reference",
    "clip_backward", "clip_backward_reference",
    "prelu_backward", "prelu_backward_reference",
    "elu_backward", "elu_backward_reference",
    "sigmoid_backward", "sigmoid_backward_reference",
    "tanh_backward", "tanh_backward_reference",
    "abs_backward", "abs_backward_reference",
    "power_backward", "power_backward_reference",
    "softmax_backward", "softmax_backward_reference",
    "log_softmax_backward", "log_softmax_backward_reference",
]


def _xdy(x: object, dy: object) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array(x, "x")
    dy = as_float_array(dy, "dy")
    if dy.shape != x.shape:
        raise ShapeError("dy must have x's shape", expected=x.shape, got=dy.shape)
    return x, dy


def _f64(x: object, dy: object) -> tuple[np.ndarray, np.ndarray]:
    x, dy = _xdy(x, dy)
    return x.astype(np.float64), dy.astype(np.float64)


# ---- piecewise linear -------------------------------------------------------------------------
@ieee
def relu_backward_reference(x: np.ndarray, dy: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    """ReLU / leaky ReLU: ``dy`` where ``x > 0`` else ``negative_slope * dy`` (float64)."""
    x, dy = _f64(x, dy)
    return np.where(x > 0, dy, float(negative_slope) * dy)


@ieee
def relu_backward(x: np.ndarray, dy: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    """Fast ReLU / leaky ReLU backward in the input dtype."""
    x, dy = _xdy(x, dy)
    dt = x.dtype.type
    return np.where(x > 0, dy, dt(negative_slope) * dy).astype(x.dtype, copy=False)


@ieee
def clip_backward_reference(x: np.ndarray, dy: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """clip (ReLU6 = clip(0, 6)): ``dy`` where ``lo < x < hi``, else 0 (float64)."""
    x, dy = _f64(x, dy)
    return np.where((x > lo) & (x < hi), dy, 0.0)


@ieee
def clip_backward(x: np.ndarray, dy: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fast clip backward in the input dtype."""
    x, dy = _xdy(x, dy)
    return (dy * ((x > lo) & (x < hi))).astype(x.dtype, copy=False)


def _slope(x: np.ndarray, slope: object) -> np.ndarray:
    s = as_float_array(slope, "slope", 1)
    if s.shape[0] != 1 and (x.ndim < 2 or s.shape[0] != x.shape[1]):
        raise ShapeError("prelu slope must have shape (1,) or (C,)", got=f"slope {s.shape} for x {x.shape}")
    return s


def _per_channel_sum(v: np.ndarray, n_slope: int) -> np.ndarray:
    if n_slope == 1:
        return np.array([v.sum()], dtype=v.dtype)
    return v.sum(axis=(0,) + tuple(range(2, v.ndim)))


@ieee
def prelu_backward_reference(x: np.ndarray, slope: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Caffe PReLU backward: ``dx = dy`` where ``x > 0`` else ``slope[c] * dy``;
    ``dslope[c] = sum of dy * x over x <= 0`` in channel c (all channels for a shared slope)."""
    x, dy = _f64(x, dy)
    s = _slope(x, slope).astype(np.float64)
    sv = s.reshape((1, -1) + (1,) * (x.ndim - 2)) if s.shape[0] > 1 else s.reshape(())
    dx = np.where(x > 0, dy, sv * dy)
    return dx, _per_channel_sum(np.where(x > 0, 0.0, dy * x), s.shape[0])


@ieee
def prelu_backward(x: np.ndarray, slope: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fast PReLU backward in the input dtype."""
    x, dy = _xdy(x, dy)
    s = _slope(x, slope).astype(x.dtype, copy=False)
    sv = s.reshape((1, -1) + (1,) * (x.ndim - 2)) if s.shape[0] > 1 else s.reshape(())
    neg = x <= 0
    dx = np.where(neg, sv * dy, dy).astype(x.dtype, copy=False)
    return dx, _per_channel_sum((dy * x) * neg, s.shape[0]).astype(x.dtype, copy=False)


# ---- smooth --------------------------------------------------------------------------------------
@ieee
def elu_backward_reference(x: np.ndarray, dy: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """ELU: ``dy`` where ``x > 0`` else ``alpha * exp(x) * dy`` (float64)."""
    x, dy = _f64(x, dy)
    return np.where(x > 0, dy, float(alpha) * np.exp(np.minimum(x, 0)) * dy)


@ieee
def elu_backward(x: np.ndarray, dy: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Fast ELU backward in the input dtype."""
    x, dy = _xdy(x, dy)
    e = np.exp(np.minimum(x, 0))
    e *= x.dtype.type(alpha)
    return np.where(x > 0, dy, e * dy).astype(x.dtype, copy=False)


@ieee
def sigmoid_backward_reference(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Logistic: ``dy * s * (1 - s)`` with ``s = 1 / (1 + exp(-x))`` (float64)."""
    x, dy = _f64(x, dy)
    s = 1.0 / (1.0 + np.exp(-x))
    return dy * s * (1.0 - s)


@ieee
def sigmoid_backward(x: np.ndarray, dy: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Fast logistic backward in the input dtype (from the forward output ``y`` if given)."""
    x, dy = _xdy(x, dy)
    s = (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False) if y is None else y
    return (dy * s * (1 - s)).astype(x.dtype, copy=False)


@ieee
def tanh_backward_reference(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """tanh: ``dy * (1 - tanh(x)^2)`` (float64)."""
    x, dy = _f64(x, dy)
    t = np.tanh(x)
    return dy * (1.0 - t * t)


@ieee
def tanh_backward(x: np.ndarray, dy: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Fast tanh backward in the input dtype (from the forward output ``y`` if given)."""
    x, dy = _xdy(x, dy)
    t = np.tanh(x) if y is None else y
    return (dy * (1 - t * t)).astype(x.dtype, copy=False)


@ieee
def abs_backward_reference(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """AbsVal: ``dy * sign(x)`` (0 at 0, Caffe's rule) (float64)."""
    x, dy = _f64(x, dy)
    return dy * np.sign(x)


@ieee
def abs_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Fast AbsVal backward in the input dtype."""
    x, dy = _xdy(x, dy)
    return (dy * np.sign(x)).astype(x.dtype, copy=False)


@ieee
def power_backward_reference(x: np.ndarray, dy: np.ndarray, power: float = 1.0, scale: float = 1.0,
                             shift: float = 0.0) -> np.ndarray:
    """Caffe Power ``y = (shift + scale x)^power``: ``dy * power * scale * (shift + scale x)^(power-1)``
    (``dy * scale`` when power is 1, 0 when power is 0), float64."""
    x, dy = _f64(x, dy)
    p, a, b = float(power), float(scale), float(shift)
    if p == 1.0:
        return dy * a
    if p == 0.0:
        return np.zeros_like(x)
    return dy * p * a * (b + a * x) ** (p - 1.0)


@ieee
def power_backward(x: np.ndarray, dy: np.ndarray, power: float = 1.0, scale: float = 1.0,
                   shift: float = 0.0) -> np.ndarray:
    """Fast Power backward in the input dtype."""
    x, dy = _xdy(x, dy)
    dt = x.dtype.type
    p, a, b = float(power), float(scale), float(shift)
    if p == 1.0:
        return (dy * dt(a)).astype(x.dtype, copy=False)
    if p == 0.0:
        return np.zeros_like(x)
    if p == 2.0:
        return (dy * dt(2.0 * a) * (dt(b) + dt(a) * x)).astype(x.dtype, copy=False)
    return (dy * dt(p * a) * (dt(b) + dt(a) * x) ** dt(p - 1.0)).astype(x.dtype, copy=False)


# ---- softmax ------------------------------------------------------------------------------------
@ieee
def softmax_backward_reference(x: np.ndarray, dy: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along ``axis``: ``dx = y * (dy - sum(dy * y))`` with the sum along ``axis`` (the
    Jacobian ``diag(y) - y y^T`` applied to dy), float64."""
    x, a = _softmax_check(x, axis)
    x, dy = _f64(x, dy)
    e = np.exp(x - np.max(x, axis=a, keepdims=True))
    y = e / np.sum(e, axis=a, keepdims=True)
    return y * (dy - np.sum(dy * y, axis=a, keepdims=True))


@ieee
def softmax_backward(x: np.ndarray, dy: np.ndarray, axis: int = 1, y: np.ndarray | None = None) -> np.ndarray:
    """Fast softmax backward in the input dtype (from the forward output ``y`` if given)."""
    x, a = _softmax_check(x, axis)
    x, dy = _xdy(x, dy)
    if y is None:
        e = np.exp(x - np.max(x, axis=a, keepdims=True))
        y = e / np.sum(e, axis=a, keepdims=True)
    return (y * (dy - np.sum(dy * y, axis=a, keepdims=True))).astype(x.dtype, copy=False)


@ieee
def log_softmax_backward_reference(x: np.ndarray, dy: np.ndarray, axis: int = 1) -> np.ndarray:
    """LogSoftMax along ``axis``: ``dx = dy - softmax(x) * sum(dy)`` (float64)."""
    x, a = _softmax_check(x, axis)
    x, dy = _f64(x, dy)
    e = np.exp(x - np.max(x, axis=a, keepdims=True))
    return dy - e / np.sum(e, axis=a, keepdims=True) * np.sum(dy, axis=a, keepdims=True)


@ieee
def log_softmax_backward(x: np.ndarray, dy: np.ndarray, axis: int = 1) -> np.ndarray:
    """Fast LogSoftMax backward in the input dtype."""
    x, a = _softmax_check(x, axis)
    x, dy = _xdy(x, dy)
    e = np.exp(x - np.max(x, axis=a, keepdims=True))
    e /= np.sum(e, axis=a, keepdims=True)
    return (dy - e * np.sum(dy, axis=a, keepdims=True)).astype(x.dtype, copy=False)
