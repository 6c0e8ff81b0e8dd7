"""Backward kernels of pooling (NCHW), with the forward kernels' Caffe geometry (kernels/pool.py).

- MAX: the cotangent of each output goes to the input element the forward picked (its argmax,
  first maximum in row-major order on ties; a window over no input element passes nothing);
  windows overlap, so contributions add.
- AVE: each output spreads ``dy / divisor`` evenly over the window elements that lie inside the
  input; the divisor is the forward's (``"padded"``: the window clipped to the padded extent,
  Caffe; ``"valid"``: the input elements counted; ``"kernel"``: kh*kw).
- global MAX/AVE: the same with one window per plane.
- max-unpooling: the forward scatters ``x`` to ``indices`` (last write wins), so ``dx = dy``
  gathered there for the surviving writes.

``f_backward_reference`` computes in float64 with plain loops over windows or taps;
``f_backward`` works in the input dtype (MAX: a numba scatter parallel over planes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels._jit import pjit, prange
from refnet.kernels.pool import (
    _divisor_code,
    _pool_args,
    global_max_pool2d_reference,
    max_pool,
    max_pool_reference,
)

__all__ = [
    "max_pool_backward",
    "max_pool_backward_reference",
    "avg_pool_backward",
    "avg_pool_backward_reference",
    "global_max_pool2d_backward",
    "global_max_pool2d_backward_reference",
    "global_avg_pool2d_backward",
    "global_avg_pool2d_backward_reference",
    "max_unpool_backward",
    "max_unpool_backward_reference",
]

IntPair = int | Sequence[int]


def _check_dy(dy: np.ndarray, shape: tuple[int, ...], fn: str) -> None:
    as_float_array(dy, "dy", 4)
    if tuple(dy.shape) != tuple(shape):
        raise ShapeError(f"{fn}: dy must have the pooled output's shape", expected=tuple(shape), got=dy.shape)


# ---- max -------------------------------------------------------------------------------------
@ieee
def max_pool_backward_reference(x: np.ndarray, dy: np.ndarray, kernel: IntPair, stride: IntPair | None = None,
                                  pad: int | Sequence[int] = 0, *, ceil_mode: bool = True) -> np.ndarray:
    """Reference MAX pooling backward: recompute the argmax with
    :func:`refnet.kernels.max_pool_reference` and add each ``dy`` to its input element; float64."""
    _, idx = max_pool_reference(np.asarray(x, dtype=np.float64), kernel, stride, pad, ceil_mode=ceil_mode,
                                  return_indices=True)
    _check_dy(dy, idx.shape, "max_pool_backward_reference")
    n, c, h, w = x.shape
    dx = np.zeros((n * c, h * w))
    planes = np.repeat(np.arange(n * c), idx[0, 0].size).reshape(n * c, -1)
    flat_idx = idx.reshape(n * c, -1)
    hit = flat_idx >= 0  # -1: a window over padding only
    np.add.at(dx, (planes[hit], flat_idx[hit]), np.asarray(dy, dtype=np.float64).reshape(n * c, -1)[hit])
    return dx.reshape(x.shape)


@pjit
def _scatter_planes(idx, dy, dx):
    p_, s_ = idx.shape
    for p in prange(p_):
        for s in range(s_):
            i = idx[p, s]
            if i >= 0:
                dx[p, i] += dy[p, s]


@ieee
def max_pool_backward(x: np.ndarray, dy: np.ndarray, kernel: IntPair, stride: IntPair | None = None,
                        pad: int | Sequence[int] = 0, *, ceil_mode: bool = True) -> np.ndarray:
    """Fast MAX pooling backward: the argmax from the fast forward kernel, then a compiled scatter
    (parallel over (n, c) planes) in the input dtype."""
    x = as_float_array(x, "x", 4)
    _, idx = max_pool(x, kernel, stride, pad, ceil_mode=ceil_mode, return_indices=True)
    _check_dy(dy, idx.shape, "max_pool_backward")
    n, c, h, w = x.shape
    dx = np.zeros((n * c, h * w), dtype=x.dtype)
    _scatter_planes(np.ascontiguousarray(idx.reshape(n * c, -1)),
                    np.ascontiguousarray(dy, dtype=x.dtype).reshape(n * c, -1), dx)
    return dx.reshape(x.shape)


# ---- average -----------------------------------------------------------------------------------
def _avg_divisor_1d(size: int, k: int, s: int, p0: int, p1: int, n_out: int, mode: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per output along one axis: the divisor factor and the number of input elements."""
    div = np.empty(n_out)
    count = np.empty(n_out)
    for o in range(n_out):
        start = o * s - p0
        end = min(start + k, size + p1)
        padded = end - start
        count[o] = min(end, size) - max(start, 0)
        div[o] = padded if mode == 0 else (count[o] if mode == 1 else k)
    return div, count


@ieee
def avg_pool_backward_reference(x: np.ndarray, dy: np.ndarray, kernel: IntPair, stride: IntPair | None = None,
                                  pad: int | Sequence[int] = 0, *, ceil_mode: bool = True,
                                  divisor: str = "padded") -> np.ndarray:
    """Reference AVE pooling backward: per output window, ``dy / divisor`` added to each window
    element inside the input (one loop over windows, float64)."""
    mode = _divisor_code(divisor)
    (kh, kw), (sh, sw), (pt, pl, pb, pr), ho, wo = _pool_args(x, kernel, stride, pad, ceil_mode,
                                                             "avg_pool_backward_reference")
    _check_dy(dy, x.shape[:2] + (ho, wo), "avg_pool_backward_reference")
    n, c, h, w = x.shape
    dy64 = np.asarray(dy, dtype=np.float64)
    dx = np.zeros((n, c, h, w))
    for oh in range(ho):
        for ow in range(wo):
            hs, ws = oh * sh - pt, ow * sw - pl
            he, we = min(hs + kh, h + pb), min(ws + kw, w + pr)
            padded = (he - hs) * (we - ws)
            h0, w0, h1, w1 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            count = max(h1 - h0, 0) * max(w1 - w0, 0)
            if count == 0:
                continue  # the forward wrote 0 for a window over no input element
            div = padded if mode == 0 else (count if mode == 1 else kh * kw)
            dx[:, :, h0:h1, w0:w1] += dy64[:, :, oh:oh + 1, ow:ow + 1] / div
    return dx


@ieee
def avg_pool_backward(x: np.ndarray, dy: np.ndarray, kernel: IntPair, stride: IntPair | None = None,
                        pad: int | Sequence[int] = 0, *, ceil_mode: bool = True, divisor: str = "padded") -> np.ndarray:
    """Fast AVE pooling backward in the input dtype: ``dy`` divided once by the (separable)
    divisors, then one strided add per kernel tap into the padded extent, cropped."""
    mode = _divisor_code(divisor)
    x = as_float_array(x, "x", 4)
    (kh, kw), (sh, sw), (pt, pl, pb, pr), ho, wo = _pool_args(x, kernel, stride, pad, ceil_mode,
                                                             "avg_pool_backward")
    _check_dy(dy, x.shape[:2] + (ho, wo), "avg_pool_backward")
    n, c, h, w = x.shape
    dvh, cnh = _avg_divisor_1d(h, kh, sh, pt, pb, ho, mode)
    dvw, cnw = _avg_divisor_1d(w, kw, sw, pl, pr, wo, mode)
    live = (cnh[:, None] > 0) & (cnw[None, :] > 0)
    scale = np.where(live, 1.0 / (dvh[:, None] * dvw[None, :]), 0.0).astype(x.dtype)
    g = dy.astype(x.dtype, copy=False) * scale
    hp = max(pt + h, (ho - 1) * sh + kh)
    wp = max(pl + w, (wo - 1) * sw + kw)
    dxp = np.zeros((n, c, hp, wp), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += g
    return np.ascontiguousarray(dxp[:, :, pt:pt + h, pl:pl + w])


# ---- global ------------------------------------------------------------------------------------
def _global_check(x: np.ndarray, dy: np.ndarray, fn: str) -> np.ndarray:
    x = as_float_array(x, "x", 4)
    _check_dy(dy, x.shape[:2] + (1, 1), fn)
    return x


@ieee
def global_max_pool2d_backward_reference(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Reference global MAX backward: ``dy`` to the plane's first maximum (float64)."""
    x = _global_check(x, dy, "global_max_pool2d_backward_reference")
    n, c, h, w = x.shape
    m = global_max_pool2d_reference(np.asarray(x, dtype=np.float64))
    dx = np.zeros((n, c, h * w))
    for ni in range(n):
        for ci in range(c):
            plane = x[ni, ci].reshape(-1)
            hits = np.flatnonzero((plane == m[ni, ci, 0, 0]) | (np.isnan(plane) & np.isnan(m[ni, ci, 0, 0])))
            if hits.size:
                dx[ni, ci, hits[0]] = dy[ni, ci, 0, 0]
    return dx.reshape(x.shape)


@ieee
def global_max_pool2d_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Fast global MAX backward (argmax per plane; first maximum on ties) in the input dtype."""
    x = _global_check(x, dy, "global_max_pool2d_backward")
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w)
    dx = np.zeros_like(flat)
    dx[np.arange(n * c), np.argmax(flat, axis=1)] = dy.reshape(-1)
    return dx.reshape(x.shape)


@ieee
def global_avg_pool2d_backward_reference(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Reference global AVE backward: ``dy / (H*W)`` on every element (float64)."""
    x = _global_check(x, dy, "global_avg_pool2d_backward_reference")
    h, w = x.shape[2:]
    return np.broadcast_to(np.asarray(dy, dtype=np.float64) / (h * w), x.shape).copy()


@ieee
def global_avg_pool2d_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Fast global AVE backward in the input dtype."""
    x = _global_check(x, dy, "global_avg_pool2d_backward")
    h, w = x.shape[2:]
    return np.broadcast_to(dy.astype(x.dtype, copy=False) * x.dtype.type(1.0 / (h * w)), x.shape).copy()


# ---- unpooling ----------------------------------------------------------------------------------
def _unpool_check(indices: np.ndarray, dy: np.ndarray, fn: str) -> None:
    as_float_array(dy, "dy", 4)
    if indices.ndim != 4 or indices.shape[:2] != dy.shape[:2]:
        raise ShapeError(f"{fn}: indices must be (N, C, h, w) with dy's N and C", got=(indices.shape, dy.shape))


def _last_writes(keys: np.ndarray) -> np.ndarray:
    """Mask of the entries of the 1-D ``keys`` that are the last occurrence of their value (the
    forward scatter's surviving write: on a repeated index the last value in row-major order wins)."""
    _, first_from_end = np.unique(keys[::-1], return_index=True)
    mask = np.zeros(keys.shape, dtype=bool)
    mask[keys.size - 1 - first_from_end] = True
    return mask


@ieee
def max_unpool_backward_reference(indices: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Reference max-unpooling backward: ``dx[n, c, i] = dy[n, c, indices[n, c, i]]`` where element
    i's write survived the forward scatter (the last one on a repeated index), else 0; float64.
    The indices carry no gradient."""
    _unpool_check(indices, dy, "max_unpool_backward_reference")
    n, c = dy.shape[:2]
    flat = np.asarray(dy, dtype=np.float64).reshape(n, c, -1)
    idx = np.asarray(indices).astype(np.int64).reshape(n, c, -1)
    out = np.zeros(idx.shape)
    for ni in range(n):
        for ci in range(c):
            ok = (idx[ni, ci] >= 0) & (idx[ni, ci] < flat.shape[2]) & _last_writes(idx[ni, ci])
            out[ni, ci, ok] = flat[ni, ci, idx[ni, ci, ok]]
    return out.reshape(indices.shape)


@ieee
def max_unpool_backward(indices: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Fast max-unpooling backward: one gather in the input dtype, surviving writes found for all
    planes at once."""
    _unpool_check(indices, dy, "max_unpool_backward")
    n, c = dy.shape[:2]
    flat = dy.reshape(n, c, -1)
    m = flat.shape[2]
    idx = np.asarray(indices).astype(np.int64).reshape(n, c, -1)
    ok = (idx >= 0) & (idx < m)
    planes = np.arange(n * c, dtype=np.int64).reshape(n, c, 1)
    ok &= _last_writes((planes * (m + 1) + np.where(ok, idx, m)).reshape(-1)).reshape(idx.shape)
    out = np.take_along_axis(flat, np.where(ok, idx, 0), axis=2)
    return np.where(ok, out, 0).astype(dy.dtype).reshape(indices.shape)
