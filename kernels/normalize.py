"""Normalisations with ONNX semantics: LRN (any channel window, any rank), LpNormalization
and LayerNormalization."""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import ieee

__all__ = ["lrn_onnx", "lrn_onnx_reference", "lp_norm", "lp_norm_reference", "layer_norm", "layer_norm_reference",
           "lp_normalize", "lp_normalize_reference"]


@ieee
def lrn_onnx_reference(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75,
                       bias: float = 1.0) -> np.ndarray:
    """y[c] = x[c] / (bias + alpha / size * sum_{j} x[j]^2)^beta over channels
    j in [c - floor((size-1)/2), c + ceil((size-1)/2)] clipped to [0, C-1]."""
    if x.ndim < 2:
        raise ShapeError("LRN needs N x C x ...", got=x.shape)
    c = x.shape[1]
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    sq = x.astype(np.float64) ** 2
    s = np.zeros_like(sq)
    for ch in range(c):
        s[:, ch] = sq[:, max(0, ch - lo):min(c, ch + hi + 1)].sum(axis=1)
    return (x / (bias + alpha / size * s) ** beta).astype(x.dtype)


@ieee
def lrn_onnx(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> np.ndarray:
    """Fast twin of :func:`lrn_onnx_reference`. For an odd ``size`` on N x C x H x W the ONNX
    window [c - (size-1)/2, c + (size-1)/2] is Caffe's across-channel window, so this is Caffe's
    fast LRN with k = ``bias`` (:func:`refnet.kernels.norm.lrn`, in the input's precision);
    otherwise the channel window sum from a cumulative sum."""
    if x.ndim < 2:
        raise ShapeError("LRN needs N x C x ...", got=x.shape)
    if x.ndim == 4 and size % 2 == 1 and x.dtype == np.float32:
        from refnet.kernels.norm import lrn

        return lrn(x, size, alpha, beta, bias, "across")
    c = x.shape[1]
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    sq = x.astype(np.float64) ** 2
    cs = np.concatenate([np.zeros_like(sq[:, :1]), np.cumsum(sq, axis=1)], axis=1)
    top = np.minimum(np.arange(c) + hi + 1, c)
    bot = np.maximum(np.arange(c) - lo, 0)
    s = cs[:, top] - cs[:, bot]
    return (x / (bias + alpha / size * s) ** beta).astype(x.dtype)


@ieee
def lp_norm_reference(x: np.ndarray, axis: int, p: int = 2) -> np.ndarray:
    """x / ||x||_p along ``axis`` (p = 1 or 2); where the norm is 0 the output is 0."""
    v = x.astype(np.float64)
    norm = np.abs(v).sum(axis=axis, keepdims=True) if p == 1 else np.sqrt((v * v).sum(axis=axis, keepdims=True))
    return np.where(norm == 0, 0.0, v / np.where(norm == 0, 1.0, norm)).astype(x.dtype)


lp_norm = lp_norm_reference


def _lp_check(x: np.ndarray) -> None:
    if x.ndim < 1:
        raise ShapeError("lp_normalize needs a batch axis", got=x.shape)


@ieee
def lp_normalize_reference(x: np.ndarray, p: float = 2.0, eps: float = 1e-10) -> np.ndarray:
    """Torch7 nn.Normalize: each sample (everything after the batch axis) divided by
    ``(sum |x|^p + eps)^(1/p)``; ``p = inf``: by ``max |x| + eps``. Float64 throughout."""
    _lp_check(x)
    v = x.astype(np.float64).reshape(x.shape[0], -1)
    out = np.empty_like(v)
    for i, row in enumerate(v):
        a = np.abs(row)
        norm = (a.max() if a.size else 0.0) + eps if np.isinf(p) else (np.sum(a ** p) + eps) ** (1.0 / p)
        out[i] = row / norm
    return out.reshape(x.shape).astype(x.dtype)


@ieee
def lp_normalize(x: np.ndarray, p: float = 2.0, eps: float = 1e-10) -> np.ndarray:
    """Fast twin of :func:`lp_normalize_reference`: all rows at once, in ``x``'s dtype."""
    _lp_check(x)
    flat = x.reshape(x.shape[0], -1)
    if np.isinf(p):
        norm = np.max(np.abs(flat), axis=1) + eps
    else:
        norm = (np.sum(np.abs(flat) ** p, axis=1) + eps) ** (1.0 / p)
    return (flat / norm[:, None].astype(x.dtype)).reshape(x.shape).astype(x.dtype, copy=False)


@ieee
def layer_norm_reference(x: np.ndarray, axis: int, scale: np.ndarray, bias: np.ndarray | None = None,
                         eps: float = 1e-5, with_stats: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
    """Normalise over the axes from ``axis`` on: (x - mean) / sqrt(var + eps) * scale + bias
    (biased variance; scale and bias broadcast to x.shape[axis:]). ``with_stats``: also the
    mean and 1/sqrt(var + eps), shaped like x with the normalised axes kept as 1."""
    v = x.astype(np.float64)
    axes = tuple(range(axis, x.ndim))
    mu = v.mean(axis=axes, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (v - mu) / np.sqrt(var + eps) * scale.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    if with_stats:
        return y.astype(x.dtype), mu.astype(x.dtype), (1 / np.sqrt(var + eps)).astype(x.dtype)
    return y.astype(x.dtype)


layer_norm = layer_norm_reference
