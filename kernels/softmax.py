"""Softmax and log-softmax along any axis (Caffe Softmax, Torch SoftMax/LogSoftMax, cv2 Softmax).

Numerically stable: the maximum along the axis is subtracted before ``exp``, so inputs of
any magnitude (1e4, 1e30) give finite results. A NaN anywhere in a softmax row makes that
whole row NaN (the normaliser is NaN), as in NumPy/SciPy; a row of all ``-inf`` is NaN too.

The fast versions compute in the input dtype with one output buffer (subtract, exp in place,
scale in place) and accumulate the exponential sums in float64. They use NumPy's SIMD ufuncs
rather than a Numba loop: measured on the 2-core dev machine, a jitted row loop (scalar
``exp``) was 4-15x slower single-threaded, and far worse with threads on a loaded machine.
"""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee

__all__ = ["softmax", "softmax_reference", "log_softmax", "log_softmax_reference"]


def _axis(x: np.ndarray, axis: int) -> int:
    a = int(axis)
    if not -x.ndim <= a < x.ndim:
        raise ShapeError(
            f"softmax axis {axis} is out of range for x of rank {x.ndim}",
            expected=f"axis in [{-x.ndim}, {x.ndim - 1}]",
            got=f"axis {axis}, x shape {x.shape}",
        )
    return a % x.ndim


def _check(x: object, axis: int) -> tuple[np.ndarray, int]:
    x = as_float_array(x, "x")
    if x.ndim == 0:
        raise ShapeError("softmax needs an array of rank >= 1", expected="rank >= 1", got="a scalar")
    return x, _axis(x, axis)


# ---------------------------------------------------------------- reference


@ieee
def softmax_reference(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis`` (negative axes count from the end)."""
    x, a = _check(x, axis)
    if x.size == 0:
        return x.copy()
    e = np.exp(x - np.max(x, axis=a, keepdims=True))
    return e / np.sum(e, axis=a, keepdims=True)


@ieee
def log_softmax_reference(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``(x - max) - log(sum(exp(x - max)))`` along ``axis`` (Torch LogSoftMax)."""
    x, a = _check(x, axis)
    if x.size == 0:
        return x.copy()
    z = x - np.max(x, axis=a, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=a, keepdims=True))


# ---------------------------------------------------------------- fast
# softmax and log_softmax open alike on purpose (check, empty input, shift by the max): each stays one
# readable in-place NumPy pass; a shared prologue would hide where their buffers are reused.


def _softmax_short_last(x: np.ndarray) -> np.ndarray:
    """Softmax over a short last axis (SSD's per-prior class scores): the reductions run as
    element-wise ops over the axis' slices instead of NumPy's slow short-row reductions."""
    k = x.shape[-1]
    m = x[..., 0].copy()
    for i in range(1, k):
        np.maximum(m, x[..., i], out=m)  # NaN propagates, as np.max
    out = np.subtract(x, m[..., None])
    with np.errstate(invalid="ignore"):
        np.exp(out, out=out)
        s = out[..., 0].astype(np.float64)
        for i in range(1, k):
            s += out[..., i]
        out *= (1.0 / s).astype(x.dtype)[..., None]
    return out


@ieee
def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Fast stable softmax along ``axis`` (Caffe Softmax ``axis``, default 1 = channels)."""
    x, a = _check(x, axis)
    if x.size == 0:
        return x.copy()
    if a == x.ndim - 1 and 1 < x.shape[-1] <= 8 and x.size >= 64:
        return _softmax_short_last(x)
    out = np.subtract(x, np.max(x, axis=a, keepdims=True))
    np.exp(out, out=out)
    s = np.sum(out, axis=a, keepdims=True, dtype=np.float64)
    out *= (1.0 / s).astype(x.dtype)
    return out


@ieee
def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Fast stable log-softmax along ``axis`` (Torch LogSoftMax)."""
    x, a = _check(x, axis)
    if x.size == 0:
        return x.copy()
    out = np.subtract(x, np.max(x, axis=a, keepdims=True))
    s = np.sum(np.exp(out), axis=a, keepdims=True, dtype=np.float64)
    out -= np.log(s).astype(x.dtype)
    return out
