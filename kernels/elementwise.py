"""Elementwise ops with NumPy broadcasting (ONNX Add/Sub/Mul/Div/Pow/Max/Min/Sum/Mean, PRelu
with a broadcast slope) and the unary activations ONNX adds to docs/ops.md.

References spell the rule out on explicitly broadcast operands, one element rule per line;
the fast twins are the NumPy ufuncs in the input dtype (numba buys nothing here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import ieee, per_plane
from refnet.kernels.activation import _prelu_planes  # (the one-pass PReLU over planes)

__all__ = [
    "broadcast_binary", "broadcast_binary_reference", "unary", "unary_reference", "prelu_nd", "prelu_nd_reference",
    "clip_range", "clip_range_reference", "BINARY_OPS", "UNARY_OPS",
]

BINARY_OPS = ("add", "sub", "mul", "div", "pow", "max", "min", "mean")
UNARY_OPS = ("gelu", "neg", "reciprocal", "floor", "ceil", "softplus", "hard_swish", "softsign", "erf", "sign", "round",
             "selu", "celu", "thresholded_relu", "hard_sigmoid")


def _shape(xs: Sequence[np.ndarray]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*[x.shape for x in xs]))
    except ValueError:
        raise ShapeError("operands do not broadcast", expected="numpy-broadcastable shapes",
                         got=[x.shape for x in xs]) from None


@ieee
def broadcast_binary_reference(op: str, xs: Sequence[np.ndarray]) -> np.ndarray:
    """Fold ``op`` over the operands left to right after broadcasting each to the common shape
    (add/sub/mul/div, pow x^y, max/min elementwise with NaN propagating, mean = sum / n)."""
    if op not in BINARY_OPS:
        raise ValueError(f"unknown binary op {op!r}; known: {BINARY_OPS}")
    shape = _shape(xs)
    arrs = [np.broadcast_to(x, shape) for x in xs]
    out = np.array(arrs[0], dtype=xs[0].dtype)
    for y in arrs[1:]:
        if op in ("add", "mean"):
            out = out + y
        elif op == "sub":
            out = out - y
        elif op == "mul":
            out = out * y
        elif op == "div":
            out = out / y
        elif op == "pow":
            out = out ** y
        elif op == "max":
            out = np.where((out >= y) | np.isnan(out), out, y)
        else:
            out = np.where((out <= y) | np.isnan(out), out, y)
    if op == "mean":
        out = out / len(xs)
    return np.asarray(out, dtype=xs[0].dtype)


_UFUNC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
          "max": np.maximum, "min": np.minimum, "mean": np.add}


@ieee
def broadcast_binary(op: str, xs: Sequence[np.ndarray]) -> np.ndarray:
    """Fast twin of :func:`broadcast_binary_reference`: the ufunc, folded, in the input dtype."""
    if op not in _UFUNC:
        raise ValueError(f"unknown binary op {op!r}; known: {BINARY_OPS}")
    _shape(xs)
    f = _UFUNC[op]
    out = f(xs[0], xs[1]) if len(xs) > 1 else np.array(xs[0])
    for y in xs[2:]:
        out = f(out, y)
    if op == "mean":
        out = out / np.asarray(len(xs), out.dtype)
    return np.asarray(out, dtype=xs[0].dtype)


def _erf(x: np.ndarray) -> np.ndarray:
    v = np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)) if x.size else x.astype(np.float64)
    return v.astype(x.dtype)


@ieee
def unary_reference(op: str, x: np.ndarray, alpha: float = 0.0, beta: float = 0.0, gamma: float = 0.0) -> np.ndarray:
    """The ONNX unary ops, formula by formula:

    neg -x; reciprocal 1/x; floor; ceil; round (half to even); sign; erf;
    softplus log(1 + e^x); softsign x / (1 + |x|); hard_swish x * max(0, min(1, x/6 + 1/2));
    hard_sigmoid max(0, min(1, alpha*x + beta)); selu gamma * (x if x > 0 else alpha*(e^x - 1));
    celu max(0, x) + min(0, alpha*(e^(x/alpha) - 1)); thresholded_relu x if x > alpha else 0;
    gelu x/2 * (1 + erf(x/sqrt 2)), or with alpha = 1 x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    one = x.dtype.type(1)
    if op == "neg":
        y = -x
    elif op == "reciprocal":
        y = one / x
    elif op == "floor":
        y = np.floor(x)
    elif op == "ceil":
        y = np.ceil(x)
    elif op == "round":
        y = np.round(x)
    elif op == "sign":
        y = np.sign(x)
    elif op == "erf":
        y = _erf(x)
    elif op == "softplus":
        y = np.log(one + np.exp(x))
    elif op == "softsign":
        y = x / (one + np.abs(x))
    elif op == "hard_swish":
        y = x * np.maximum(0, np.minimum(one, x / 6 + 0.5))
    elif op == "hard_sigmoid":
        y = np.maximum(0, np.minimum(one, alpha * x + beta))
    elif op == "selu":
        y = gamma * np.where(x > 0, x, alpha * (np.exp(x) - one))
    elif op == "celu":
        y = np.maximum(0, x) + np.minimum(0, alpha * (np.exp(x / alpha) - one))
    elif op == "gelu":  # alpha = 1: the tanh approximation
        if alpha:
            y = 0.5 * x * (one + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
        else:
            y = 0.5 * x * (one + _erf(x / np.sqrt(2)))
    elif op == "thresholded_relu":
        y = np.where(x > alpha, x, 0)
    else:
        raise ValueError(f"unknown unary op {op!r}; known: {UNARY_OPS}")
    return np.asarray(y, dtype=x.dtype)


@ieee
def unary(op: str, x: np.ndarray, alpha: float = 0.0, beta: float = 0.0, gamma: float = 0.0) -> np.ndarray:
    """Fast twin of :func:`unary_reference` (softplus overflow-safe: max(x,0) + log1p(e^-|x|))."""
    if op == "softplus":
        return np.asarray(np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), dtype=x.dtype)
    return unary_reference(op, x, alpha, beta, gamma)


@ieee
def prelu_nd_reference(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """PRelu with a slope broadcast to x: x where x >= 0, slope * x elsewhere."""
    s = np.broadcast_to(slope.astype(x.dtype), _shape([x, slope]))
    return np.where(x >= 0, x, s * x).astype(x.dtype)


@ieee
def prelu_nd(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Fast twin of :func:`prelu_nd_reference`. A slope of one value per channel (ONNX's (C, 1, 1)
    on NCHW) or one value in all runs as one jitted pass over the (N * C) planes
    (refnet.kernels.activation's PReLU kernel; the reference's broadcast, compare, multiply and
    select took four NumPy passes); the same values up to the sign of a zero. Other broadcasts:
    the reference."""
    s = np.asarray(slope)
    if x.ndim >= 2 and x.size and s.ndim <= x.ndim:
        full = (1,) * (x.ndim - s.ndim) + s.shape
        c = x.shape[1]
        if full[0] == 1 and full[1] in (1, c) and all(d == 1 for d in full[2:]):
            n = x.shape[0]
            out = np.empty(x.shape, x.dtype)
            planes = (n * c, x.size // (n * c))
            _prelu_planes(np.ascontiguousarray(x).reshape(planes), per_plane(s, n, c, x.dtype), out.reshape(planes))
            return out
    return prelu_nd_reference(x, slope)


@ieee
def clip_range_reference(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """ONNX Clip: min(max(x, lo), hi) (NaN stays NaN; lo > hi gives hi everywhere)."""
    y = np.where(x < lo, x.dtype.type(lo), x)
    return np.where(y > hi, x.dtype.type(hi), y).astype(x.dtype)


@ieee
def clip_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fast twin of :func:`clip_range_reference`."""
    return np.minimum(np.maximum(x, x.dtype.type(lo)), x.dtype.type(hi))


COMPARE_OPS = ("less", "less_equal", "greater", "greater_equal", "equal", "and", "or", "xor")
_CMP = {"less": np.less, "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
        "equal": np.equal, "and": lambda a, b: (a != 0) & (b != 0), "or": lambda a, b: (a != 0) | (b != 0),
        "xor": lambda a, b: (a != 0) ^ (b != 0)}


@ieee
def compare_reference(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Comparison or logic (nonzero = true) of broadcast operands, as 0/1 in a's dtype."""
    if op not in _CMP:
        raise ValueError(f"unknown comparison {op!r}; known: {COMPARE_OPS}")
    shape = _shape([a, b])
    return np.asarray(_CMP[op](np.broadcast_to(a, shape), np.broadcast_to(b, shape)), dtype=a.dtype)


compare = compare_reference


@ieee
def where_reference(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a where cond is nonzero, else b (all three broadcast)."""
    shape = _shape([cond, a, b])
    return np.asarray(np.where(np.broadcast_to(cond, shape) != 0, a, b), dtype=a.dtype)


where = where_reference
__all__ += ["compare", "compare_reference", "where", "where_reference", "COMPARE_OPS"]
