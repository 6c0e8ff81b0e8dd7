"""Softmax and log-softmax along any axis (Caffe Softmax, Torch SoftMax/LogSoftMax, cv2 Softmax).

Numerically stable: the maximum along the axis is subtracted before ``exp``, so inputs of
any magnitude (1e4, 1e30) give finite results. A NaN anywhere in a softmax row makes that
whole row NaN (the normaliser is NaN), as in NumPy/SciPy; a row of all ``-inf`` is NaN too.

The fast versions compute in the input dtype with one output buffer (subtract, exp in place,
scale in place) and accumulate the exponential sums in float64. They use NumPy's SIMD ufuncs
rather than a Numba loop: measured on the 2-core dev machine, a jitted row loop (scalar
``exp``) was 4-15x slower single-threaded, and far worse with threads on a loaded machine.
The exception is an input that is one softmax row of at most :data:`ROW_MAX` values (a
classifier's last layer, (1, 1000)) once numba is loaded: one jitted pass
(:func:`_softmax_row`) instead of six NumPy calls. Inside a forward pass those calls come right
after the big last conv has pushed the interpreter's and NumPy's code and data out of the
caches, and cost 5-35 us each there (hot: 1-3 us): SqueezeNet's softmax step measured 72 us
with the NumPy calls, 20 us with the row kernel (4.5 us hot). ``REFNET_SOFTMAX_ROW=0`` or
:data:`ROW_KERNEL` = False: NumPy always.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import MODE, lazy_njit, numba_loaded

__all__ = ["softmax", "softmax_reference", "log_softmax", "log_softmax_reference", "softmax_step", "ROW_KERNEL",
           "ROW_MAX"]

#: one-row softmaxes of at most ROW_MAX values run as one jitted pass (see the module docstring);
#: ``REFNET_SOFTMAX_ROW=0``: NumPy always (A/B switch)
ROW_KERNEL = os.environ.get("REFNET_SOFTMAX_ROW", "1").strip() not in ("0", "off", "no", "false")
ROW_MAX = 4096


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


@lazy_njit(**{**JIT_OPTIONS, "boundscheck": False})
def _softmax_row(x, out):
    """out = softmax(x), x and out 1-D of one dtype: the max (NaN never wins, as in the sum below
    it makes every output NaN anyway), exp(x - max) in x's dtype, their sum in float64 (in
    order), one multiplication by its reciprocal rounded to the dtype (the NumPy path's steps)."""
    n = x.size
    m = x[0]
    for i in range(1, n):
        v = x[i]
        m = v if v > m else m
    s = np.float64(0.0)
    for i in range(n):
        e = np.exp(x[i] - m)
        out[i] = e
        s += e
    r = out.dtype.type(1.0 / s)
    for i in range(n):
        out[i] *= r


@ieee
def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Fast stable softmax along ``axis`` (Caffe Softmax ``axis``, default 1 = channels)."""
    x, a = _check(x, axis)
    if x.size == 0:
        return x.copy()
    if ROW_KERNEL and x.size == x.shape[a] and 8 < x.size <= ROW_MAX and numba_loaded() and not MODE.on:
        out = np.empty(x.shape, x.dtype)  # (one row: C-contiguous whatever x's strides)
        _softmax_row(x.reshape(-1), out.reshape(-1))
        return out
    if a == x.ndim - 1 and 1 < x.shape[-1] <= 8 and x.size >= 64:
        return _softmax_short_last(x)
    out = np.subtract(x, np.max(x, axis=a, keepdims=True))
    np.exp(out, out=out)
    s = np.sum(out, axis=a, keepdims=True, dtype=np.float64)
    out *= (1.0 / s).astype(x.dtype)
    return out


#: compiled programs call the one-row kernel directly for float32 one-row softmaxes
#: (:func:`softmax_step`); ``REFNET_LEAN_SOFTMAX=0`` or LEAN_STEP = False: through softmax
LEAN_STEP = os.environ.get("REFNET_LEAN_SOFTMAX", "1").strip() not in ("0", "off", "no", "false")


def softmax_step(x_shape: tuple[int, ...], dtype: np.dtype, axis: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """An executor's step ``step(x)`` = ``softmax(x, axis)`` for float32 inputs of ``x_shape`` that
    are one softmax row of 9..:data:`ROW_MAX` values (a classifier's last layer), calling
    :func:`_softmax_row` straight (no argument checks or ``np.errstate`` per call: after the big
    last conv they ran cold, SqueezeNet one thread); a C-contiguous input while numba is loaded
    and NumPy kernels are off, else :func:`softmax`. None (no lean step) for other shapes or
    without :data:`LEAN_STEP` / :data:`ROW_KERNEL`."""
    size = int(np.prod(x_shape)) if len(x_shape) else 1
    if not (LEAN_STEP and ROW_KERNEL and np.dtype(dtype) == np.float32 and len(x_shape) >= 1
            and -len(x_shape) <= axis < len(x_shape) and size == int(x_shape[axis]) and 8 < size <= ROW_MAX):
        return None
    shape = tuple(int(d) for d in x_shape)

    def row_softmax(x: np.ndarray) -> np.ndarray:
        if x.dtype != np.float32 or x.shape != shape or not x.flags.c_contiguous or MODE.on or not numba_loaded():
            return softmax(x, axis)
        out = np.empty(shape, np.float32)
        with np.errstate(all="ignore"):  # (as softmax's @ieee: a NaN or inf row warns nothing)
            _softmax_row(x.reshape(-1), out.reshape(-1))
        return out

    return row_softmax


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
