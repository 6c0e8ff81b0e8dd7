"""Elementwise activations (any shape, float32 or float64 in, same dtype out).

``f_reference`` is the readable definition (straightforward NumPy, no tricks); ``f`` is the
fast version: NumPy ufuncs writing into one preallocated output buffer (no temporaries beyond
what the formula needs), overflow-safe formulations, warnings for inf/NaN arithmetic silenced.
Elementwise work is memory-bound and NumPy's SIMD ufuncs already match a Numba loop here, so
no jit is used (and nothing has to compile), except in PReLU, whose ufunc formula needed four
passes over the tensor (one jitted pass now, with a NumPy twin for small nets). Scalar
hyper-parameters are applied as Python floats so they never promote a float32 array to float64.
NaN in gives NaN out (except where the framework formula itself maps NaN to a constant, e.g.
``power`` with ``power=0``).
"""

from __future__ import annotations

import math

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee, per_plane, same_dtype
from refnet.kernels._jit import prange
from refnet.kernels._parallel import twin

__all__ = [
    "relu",
    "relu_reference",
    "clip",
    "clip_reference",
    "relu6",
    "relu6_reference",
    "prelu",
    "prelu_reference",
    "elu",
    "elu_reference",
    "sigmoid",
    "sigmoid_reference",
    "tanh",
    "tanh_reference",
    "bnll",
    "bnll_reference",
    "abs",
    "abs_reference",
    "power",
    "power_reference",
    "exp",
    "exp_reference",
    "log",
    "log_reference",
    "mish",
    "mish_reference",
    "swish",
    "swish_reference",
    "hard_swish_affine",
    "hard_swish_affine_reference",
]

# Silence overflow/invalid warnings of the formulas below: exp(large) -> inf is intended, and
# invalid arithmetic (NaN in, log of a negative) must produce NaN, not noise.
def _x(x: object) -> np.ndarray:
    return as_float_array(x, "x")


# ---------------------------------------------------------------- relu / clip / prelu


@ieee
def relu_reference(x: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    """Caffe ReLU: ``x`` where ``x > 0``, else ``negative_slope * x`` (leaky when slope != 0)."""
    x = _x(x)
    s = float(negative_slope)
    return np.where(x > 0, x, x * s)


@ieee
def relu(x: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    """Fast Caffe ReLU: ``max(x, 0) + negative_slope * min(x, 0)`` (Caffe's own formula)."""
    x = _x(x)
    s = float(negative_slope)
    if s == 0.0:
        return np.maximum(x, 0)
    out = np.minimum(x, 0)
    out *= s
    out += np.maximum(x, 0)
    return out


def _check_bounds(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise ValueError(f"clip bounds must satisfy lo <= hi, got lo={lo}, hi={hi}")
    return lo, hi


@ieee
def clip_reference(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip (cv2 ReLU6/Clip, Torch HardTanh): ``min(max(x, lo), hi)``; NaN stays NaN."""
    x = _x(x)
    lo, hi = _check_bounds(lo, hi)
    return np.minimum(np.maximum(x, lo), hi)


@ieee
def clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fast clip ``min(max(x, lo), hi)``: one ufunc pass into a fresh output."""
    x = _x(x)
    lo, hi = _check_bounds(lo, hi)
    return np.clip(x, lo, hi)


def relu6_reference(x: np.ndarray) -> np.ndarray:
    """ReLU6 (cv2 / MobileNet): ``clip(x, 0, 6)``."""
    return clip_reference(x, 0.0, 6.0)


def relu6(x: np.ndarray) -> np.ndarray:
    """Fast ReLU6: ``clip(x, 0, 6)``."""
    return clip(x, 0.0, 6.0)


def _slope_view(x: np.ndarray, slope: object) -> np.ndarray:
    """``slope`` shaped to broadcast over ``x``: (1,) shared, or (C,) along axis 1."""
    slope = as_float_array(slope, "slope", ndim=1)
    same_dtype("x", x, "slope", slope)
    if slope.shape[0] == 1:
        return slope.reshape((1,) * x.ndim) if x.ndim else slope.reshape(())
    if x.ndim < 2 or x.shape[1] != slope.shape[0]:
        raise ShapeError(
            "prelu slope must have shape (1,) or (C,) with C = x.shape[1]",
            expected=f"(1,) or ({x.shape[1] if x.ndim >= 2 else 'C'},)",
            got=f"slope {slope.shape} for x {x.shape}",
        )
    return slope.reshape((1, -1) + (1,) * (x.ndim - 2))


@ieee
def prelu_reference(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Caffe PReLU: ``x`` where ``x > 0`` else ``slope[c] * x``; slope (C,) over axis 1 or (1,)."""
    x = _x(x)
    s = _slope_view(x, slope)
    return np.where(x > 0, x, s * x)


@twin(0)
def _prelu_planes(x, slope, out):
    """out[t] = x[t] where > 0, else x[t] * slope[t], over the planes t of (P, L) arrays (NaN stays
    NaN); one pass, one plane per parallel task."""
    for t in prange(x.shape[0]):
        s = slope[t]
        row = x[t]
        o = out[t]
        for j in range(row.shape[0]):
            v = row[j]
            o[j] = v if v > 0 else v * s


@ieee
def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Fast Caffe PReLU: ``x if x > 0 else slope[c] * x`` in one jitted pass over the (N * C)
    planes (the ufunc formula ``max(x, 0) + slope * min(x, 0)`` took four passes, 0.3-0.5 ms per
    ENet layer); the same values, up to the sign of a zero."""
    x = _x(x)
    s = _slope_view(x, slope).reshape(-1)
    n, c = (x.shape[0], x.shape[1]) if x.ndim >= 2 else (1, 1)
    planes = (n * c, x.size // max(1, n * c))
    out = np.empty(x.shape, x.dtype)
    if x.size:
        _prelu_planes(np.ascontiguousarray(x).reshape(planes), per_plane(s, n, c, x.dtype), out.reshape(planes))
    return out


# ------------------------------------------- exporters' hard-swish with a following affine
def _hswish_args(x: object, scale: object, shift: object) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """x and the optional scale / shift as (C,) or (1,) vectors in x's dtype (C = axis 1)."""
    x = _x(x)
    c = x.shape[1] if x.ndim >= 2 else 1
    out = []
    for name, v in (("scale", scale), ("shift", shift)):
        if v is None:
            out.append(None)
            continue
        v = np.asarray(v, x.dtype).reshape(-1)
        if v.size not in (1, c):
            raise ShapeError(f"hard_swish_affine {name} must have 1 value or one per channel (axis 1)",
                             expected=f"(1,) or ({c},)", got=v.shape)
        out.append(v)
    return x, out[0], out[1]


@twin(0)
def _hswish_affine_planes(x, scale, shift, k_add, lo, hi, k_div, has_scale, has_shift, out):
    """out[t] = ((x * clip(x + k_add, lo, hi)) / k_div) [* scale[t]] [+ shift[t]] over the planes
    t of (P, L) arrays, each operation in the dtype and in this order (the exporters' unfused
    graph, bit for bit); the clip keeps NaN (``u < lo`` and ``u > hi`` false). One pass."""
    for t in prange(x.shape[0]):
        row = x[t]
        o = out[t]
        a = scale[t]
        b = shift[t]
        for j in range(row.shape[0]):
            v = row[j]
            u = v + k_add
            u = lo if u < lo else (hi if u > hi else u)
            y = (v * u) / k_div
            if has_scale:
                y = y * a
            if has_shift:
                y = y + b
            o[j] = y


@ieee
def hard_swish_affine(x: np.ndarray, scale: np.ndarray | None = None, shift: np.ndarray | None = None,
                      k_add: float = 3.0, lo: float = 0.0, hi: float = 6.0, k_div: float = 6.0,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Fast ``((x * clip(x + k_add, lo, hi)) / k_div) * scale + shift`` in one jitted pass: the
    hard-swish that exporters write as Add, Clip, Mul, Div (paddle2onnx's PP-OCR models, also
    PyTorch's before opset 14), with the per-channel (or single) Mul and Add after it (PP-LCNet's
    learnable affine); ``scale`` / ``shift`` None: that operation is absent. The float32 path's
    fusion of those six nodes (refnet.runtime.fusion.fuse_hard_swish): the same operations in the
    same dtype and order as the unfused graph. ``out``: a C-contiguous array of x's shape and dtype."""
    x, a, b = _hswish_args(x, scale, shift)
    n, c = (x.shape[0], x.shape[1]) if x.ndim >= 2 else (1, 1)
    planes = (n * c, x.size // max(1, n * c))
    t = x.dtype.type
    if out is None:
        out = np.empty(x.shape, x.dtype)
    if x.size:
        _hswish_affine_planes(np.ascontiguousarray(x).reshape(planes), per_plane(0 if a is None else a, n, c, x.dtype),
                              per_plane(0 if b is None else b, n, c, x.dtype), t(k_add), t(lo), t(hi), t(k_div),
                              a is not None, b is not None, out.reshape(planes))
    return out


@ieee
def hard_swish_affine_reference(x: np.ndarray, scale: np.ndarray | None = None, shift: np.ndarray | None = None,
                                k_add: float = 3.0, lo: float = 0.0, hi: float = 6.0,
                                k_div: float = 6.0) -> np.ndarray:
    """Reference :func:`hard_swish_affine`, the formula in float64, returned in x's dtype."""
    x, a, b = _hswish_args(x, scale, shift)
    v = x.astype(np.float64)
    y = v * np.minimum(np.maximum(v + k_add, lo), hi) / k_div
    shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
    if a is not None:
        y = y * (a.astype(np.float64).reshape(shape) if a.size > 1 else float(a[0]))
    if b is not None:
        y = y + (b.astype(np.float64).reshape(shape) if b.size > 1 else float(b[0]))
    return y.astype(x.dtype)


# ---------------------------------------------------------------- smooth activations


@ieee
def elu_reference(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Caffe/cv2 ELU: ``x`` where ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    x = _x(x)
    a = float(alpha)
    return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


@ieee
def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Fast ELU, Caffe's formula ``max(x, 0) + alpha * (exp(min(x, 0)) - 1)`` (expm1 for accuracy)."""
    x = _x(x)
    out = np.minimum(x, 0)
    np.expm1(out, out=out)
    out *= float(alpha)
    out += np.maximum(x, 0)
    return out


@ieee
def sigmoid_reference(x: np.ndarray) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-x))`` (Caffe Sigmoid, Torch Sigmoid)."""
    x = _x(x)
    return 1.0 / (1.0 + np.exp(-x))


@ieee
def sigmoid(x: np.ndarray) -> np.ndarray:
    """Fast sigmoid ``1 / (1 + exp(-x))`` in one buffer; exp overflow gives exactly 0."""
    x = _x(x)
    out = np.negative(x)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


@ieee
def tanh_reference(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent (Caffe TanH, Torch Tanh)."""
    return np.tanh(_x(x))


# one ufunc pass is already the fast way: the fast name is the reference (as resize_nd)
tanh = tanh_reference


@ieee
def bnll_reference(x: np.ndarray) -> np.ndarray:
    """Caffe BNLL ``log(1 + exp(x))``, Caffe's overflow-safe split: ``x + log(1 + exp(-x))`` for x > 0."""
    x = _x(x)
    return np.where(x > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x)))


@ieee
def bnll(x: np.ndarray) -> np.ndarray:
    """Fast BNLL (softplus): ``max(x, 0) + log1p(exp(-|x|))``, never overflows."""
    x = _x(x)
    out = np.abs(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(x, 0)
    return out


@ieee
def abs_reference(x: np.ndarray) -> np.ndarray:
    """Caffe AbsVal: ``|x|``."""
    return np.abs(_x(x))


abs = abs_reference  # one ufunc pass is already the fast way


# ---------------------------------------------------------------- Caffe Power / Exp / Log


@ieee
def power_reference(
    x: np.ndarray, power: float = 1.0, scale: float = 1.0, shift: float = 0.0
) -> np.ndarray:
    """Caffe Power: ``(shift + scale * x) ** power`` (NaN for a negative base and fractional power)."""
    x = _x(x)
    return np.power(float(shift) + float(scale) * x, float(power))


@ieee
def power(x: np.ndarray, power: float = 1.0, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Fast Caffe Power ``(shift + scale * x) ** power`` in one buffer (power 1 and 2 skip pow)."""
    x = _x(x)
    p, a, b = float(power), float(scale), float(shift)
    out = x * a if a != 1.0 else x.copy()
    if b != 0.0:
        out += b
    if p == 2.0:
        np.square(out, out=out)
    elif p != 1.0:
        np.power(out, p, out=out)
    return out


def _log_base(base: float, what: str) -> float:
    """ln(base) for Caffe's Exp/Log ``base`` parameter (-1 means e)."""
    b = float(base)
    if b == -1.0:
        return 1.0
    if not b > 0.0:
        raise ValueError(f"{what} base must be > 0 or -1 (meaning e), got {b}")
    return math.log(b)


@ieee
def exp_reference(
    x: np.ndarray, base: float = -1.0, scale: float = 1.0, shift: float = 0.0
) -> np.ndarray:
    """Caffe Exp: ``base ** (shift + scale * x)``; ``base = -1`` means e."""
    x = _x(x)
    _log_base(base, "exp")
    t = float(shift) + float(scale) * x
    return np.exp(t) if float(base) == -1.0 else np.power(float(base), t)


@ieee
def exp(x: np.ndarray, base: float = -1.0, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Fast Caffe Exp, Caffe's factoring ``base**shift * exp(scale * ln(base) * x)``."""
    x = _x(x)
    lb = _log_base(base, "exp")
    out = x * (float(scale) * lb)
    np.exp(out, out=out)
    if float(shift) != 0.0:
        out *= math.exp(float(shift) * lb)
    return out


@ieee
def log_reference(
    x: np.ndarray, base: float = -1.0, scale: float = 1.0, shift: float = 0.0
) -> np.ndarray:
    """Caffe Log: ``log_base(shift + scale * x)``; ``base = -1`` means e (NaN/-inf for t <= 0)."""
    x = _x(x)
    lb = _log_base(base, "log")
    if lb == 0.0:
        raise ValueError("log base must not be 1")
    return np.log(float(shift) + float(scale) * x) / lb


@ieee
def log(x: np.ndarray, base: float = -1.0, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Fast Caffe Log ``ln(shift + scale * x) / ln(base)`` in one buffer."""
    x = _x(x)
    lb = _log_base(base, "log")
    if lb == 0.0:
        raise ValueError("log base must not be 1")
    a, b = float(scale), float(shift)
    out = x * a if a != 1.0 else x.copy()
    if b != 0.0:
        out += b
    np.log(out, out=out)
    if lb != 1.0:
        out *= 1.0 / lb
    return out


# ---------------------------------------------------------------- mish / swish


@ieee
def mish_reference(x: np.ndarray) -> np.ndarray:
    """Mish (Darknet/cv2): ``x * tanh(softplus(x))``, softplus via ``logaddexp(0, x)``."""
    x = _x(x)
    return x * np.tanh(np.logaddexp(0, x))


@ieee
def mish(x: np.ndarray) -> np.ndarray:
    """Fast Mish using ``tanh(log(1 + e)) = e(e + 2) / (e(e + 2) + 2)``, ``e = exp(min(x, 20))``.

    Above 20 the ratio is 1 to float64 precision, so clamping the exponent loses nothing and
    avoids overflow; for very negative x the ratio is ~e, so small values keep full precision.
    """
    x = _x(x)
    e = np.minimum(x, 20.0)
    np.exp(e, out=e)
    t = e + 2.0
    e *= t  # e (e + 2)
    np.add(e, 2.0, out=t)
    e /= t
    e *= x
    return e


@ieee
def swish_reference(x: np.ndarray) -> np.ndarray:
    """Swish / SiLU: ``x * sigmoid(x)``."""
    x = _x(x)
    return x / (1.0 + np.exp(-x))


@ieee
def swish(x: np.ndarray) -> np.ndarray:
    """Fast Swish ``x * sigmoid(x)`` in one buffer."""
    out = sigmoid(x)
    out *= x
    return out
