"""Backward kernels of the inference normalisations: BatchNorm, Scale, Bias, LRN, SSD Normalize.

Forward rules as in kernels/norm.py (inference: BatchNorm's statistics are parameters, not
batch moments, so BN is a per-channel affine map ``a_c x + b_c``):

- BatchNorm ``y = (x - mean) / sqrt(var + eps) * weight + bias``.
- Scale ``y = x * weight (+ bias)``, Bias ``y = x + bias`` (weight/bias over ``x.shape[axis:axis+k]``).
- LRN ``y = x * S^-beta`` with ``S = k + alpha/size * W(x^2)`` (across channels; W sums the
  ``size`` channels centred on c) or ``S = 1 + alpha/size^2 * W(x^2)`` (within a channel, W
  sums the zero-padded ``size x size`` window). W is a centred window sum, so W^T = W and
  ``dx = dy S^-beta - 2 beta a' x W(dy x S^(-beta-1))`` (``a'`` the alpha factor).
- Normalize (SSD, L2) ``y = s * x r`` with ``r = (sum x^2 + eps)^-1/2`` over (C, H, W) or over C:
  ``dx = r u - x r^3 sum(u x)`` with ``u = s dy``; ``dscale = sum dy x r``.

``f_backward_reference`` float64 from the formula; ``f_backward`` in the input dtype.
"""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee

__all__ = [
    "batch_norm_backward", "batch_norm_backward_reference",
    "scale_backward", "scale_backward_reference",
    "bias_backward", "bias_backward_reference",
    "lrn_backward", "lrn_backward_reference",
    "l2_normalize_backward", "l2_normalize_backward_reference",
]


def _xdy(x: object, dy: object, min_ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array(x, "x")
    dy = as_float_array(dy, "dy")
    if x.ndim < min_ndim or dy.shape != x.shape:
        raise ShapeError("dy must have x's shape (and x a channel axis)", expected=x.shape, got=dy.shape)
    return x, dy


def _chan(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _chan_sum(v: np.ndarray) -> np.ndarray:
    return v.sum(axis=(0,) + tuple(range(2, v.ndim)))


# ---- BatchNorm (inference) ---------------------------------------------------------------------
def _bn_vecs(x, mean, var, weight, dt):
    c = x.shape[1]
    vs = []
    for name, v in (("mean", mean), ("var", var), ("weight", weight)):
        if v is None:
            vs.append(None)
            continue
        v = np.asarray(v, dtype=dt).reshape(-1)
        if v.size != c:
            raise ShapeError(f"batch_norm_backward: {name} needs one value per channel", expected=c, got=v.size)
        vs.append(v)
    return vs


@ieee
def batch_norm_backward_reference(x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray | None,
                                  dy: np.ndarray, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """Inference BatchNorm backward, float64: ``{"x": dy * weight / sqrt(var + eps), "mean": ...,
    "var": ..., "weight": sum dy (x - mean) / sqrt(var + eps), "bias": sum dy}`` (sums per channel;
    "weight" only when the forward had one)."""
    x, dy = _xdy(x, dy)
    m, v, w = _bn_vecs(x, mean, var, weight, np.float64)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    inv = 1.0 / np.sqrt(v + float(eps))
    a = inv if w is None else w * inv
    xc = x64 - _chan(m, x.ndim)
    out = {"x": dy64 * _chan(a, x.ndim), "mean": -_chan_sum(dy64) * a, "bias": _chan_sum(dy64),
           "var": _chan_sum(dy64 * xc) * (1.0 if w is None else w) * -0.5 * inv ** 3}
    if w is not None:
        out["weight"] = _chan_sum(dy64 * xc) * inv
    return out


@ieee
def batch_norm_backward(x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray | None,
                        dy: np.ndarray, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """Fast inference BatchNorm backward in the input dtype (see the reference)."""
    x, dy = _xdy(x, dy)
    dt = x.dtype
    m, v, w = _bn_vecs(x, mean, var, weight, dt)
    inv = (1.0 / np.sqrt(v.astype(np.float64) + float(eps))).astype(dt)
    a = inv if w is None else w * inv
    sdy = _chan_sum(dy)
    sdyx = _chan_sum(dy * x) - sdy * m  # sum dy (x - mean)
    out = {"x": dy * _chan(a, x.ndim), "mean": -sdy * a, "bias": sdy,
           "var": sdyx * (dt.type(1) if w is None else w) * dt.type(-0.5) * inv ** 3}
    if w is not None:
        out["weight"] = sdyx * inv
    return out


# ---- Scale / Bias --------------------------------------------------------------------------------
def _span(x: np.ndarray, pshape: tuple[int, ...], axis: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    a = axis + x.ndim if axis < 0 else axis
    k = len(pshape)
    if k and tuple(x.shape[a:a + k]) != tuple(pshape):
        raise ShapeError("scale/bias shape does not match x from axis", expected=tuple(x.shape[a:a + k]),
                         got=tuple(pshape))
    view = (1,) * a + tuple(pshape) + (1,) * (x.ndim - a - k)
    others = tuple(i for i in range(x.ndim) if not a <= i < a + k)
    return a, view, others


@ieee
def scale_backward_reference(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, axis: int = 1,
                             bias: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Caffe Scale backward, float64: ``(dx, dweight, dbias) = (dy * weight, sum dy * x, sum dy)``,
    the sums over the axes the parameter is broadcast along (dbias None without a bias)."""
    x, dy = _xdy(x, dy, 1)
    w = np.asarray(weight, dtype=np.float64)
    _, view, others = _span(x, w.shape, axis)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    dw = np.sum(dy64 * x64, axis=others).reshape(w.shape)
    return dy64 * w.reshape(view), dw, (np.sum(dy64, axis=others).reshape(w.shape) if bias else None)


@ieee
def scale_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, axis: int = 1,
                   bias: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Fast Caffe Scale backward in the input dtype."""
    x, dy = _xdy(x, dy, 1)
    w = np.asarray(weight, dtype=x.dtype)
    _, view, others = _span(x, w.shape, axis)
    dw = np.sum(dy * x, axis=others).reshape(w.shape)
    return dy * w.reshape(view), dw, (np.sum(dy, axis=others).reshape(w.shape) if bias else None)


@ieee
def bias_backward_reference(dy: np.ndarray, bias_shape: tuple[int, ...], axis: int = 1
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Caffe Bias backward, float64: ``(dx, dbias) = (dy, sum of dy over the broadcast axes)``."""
    dy = as_float_array(dy, "dy").astype(np.float64)
    _, _, others = _span(dy, tuple(bias_shape), axis)
    return dy, np.sum(dy, axis=others).reshape(bias_shape)


@ieee
def bias_backward(dy: np.ndarray, bias_shape: tuple[int, ...], axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Fast Caffe Bias backward in the input dtype."""
    dy = as_float_array(dy, "dy")
    _, _, others = _span(dy, tuple(bias_shape), axis)
    return dy.copy(), np.sum(dy, axis=others).reshape(bias_shape)


# ---- LRN -------------------------------------------------------------------------------------------
def _window_sum(v: np.ndarray, size: int, region: str) -> np.ndarray:
    """The centred, zero-padded window sum W of the LRN rule (across channels or within a plane)."""
    pre = (size - 1) // 2
    n, c, h, w = v.shape
    s = np.zeros_like(v)
    if region == "across":
        padded = np.zeros((n, c + size - 1, h, w), dtype=v.dtype)
        padded[:, pre:pre + c] = v
        for j in range(size):
            s += padded[:, j:j + c]
        return s
    padded = np.zeros((n, c, h + size - 1, w + size - 1), dtype=v.dtype)
    padded[:, :, pre:pre + h, pre:pre + w] = v
    for i in range(size):
        for j in range(size):
            s += padded[:, :, i:i + h, j:j + w]
    return s


def _lrn_consts(size: int, alpha: float, k: float, region: str) -> tuple[str, float, float]:
    r = str(region).lower()
    r = {"across_channels": "across", "within_channel": "within"}.get(r, r)
    if r not in ("across", "within") or size < 1 or size % 2 != 1:
        raise ValueError(f"lrn: region 'across'/'within' and an odd size; got {region!r}, {size}")
    if r == "across":
        return r, float(k), float(alpha) / size
    return r, 1.0, float(alpha) / (size * size)  # Caffe WITHIN_CHANNEL: shift 1, k unused


@ieee
def lrn_backward_reference(x: np.ndarray, dy: np.ndarray, size: int = 5, alpha: float = 1e-4,
                           beta: float = 0.75, k: float = 1.0, region: str = "across") -> np.ndarray:
    """Caffe LRN backward (module docstring), float64."""
    x, dy = _xdy(x, dy, 4)
    r, k0, a = _lrn_consts(int(size), alpha, k, region)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    s = k0 + a * _window_sum(x64 * x64, int(size), r)
    b = float(beta)
    return dy64 * s ** -b - 2.0 * b * a * x64 * _window_sum(dy64 * x64 * s ** (-b - 1.0), int(size), r)


@ieee
def lrn_backward(x: np.ndarray, dy: np.ndarray, size: int = 5, alpha: float = 1e-4,
                 beta: float = 0.75, k: float = 1.0, region: str = "across") -> np.ndarray:
    """Fast LRN backward in the input dtype: ``S^-beta`` computed once and reused for
    ``S^(-beta-1) = S^-beta / S``."""
    x, dy = _xdy(x, dy, 4)
    dt = x.dtype.type
    r, k0, a = _lrn_consts(int(size), alpha, k, region)
    s = dt(k0) + dt(a) * _window_sum(x * x, int(size), r)
    sb = s ** dt(-float(beta))
    back = _window_sum(dy * x * sb / s, int(size), r)
    return (dy * sb - dt(2.0 * float(beta) * a) * x * back).astype(x.dtype, copy=False)


# ---- SSD Normalize ----------------------------------------------------------------------------------
def _norm_scale(x, scale, channel_shared, dt):
    if scale is None:
        return None
    s = np.asarray(scale, dtype=dt).reshape(-1)
    want = 1 if channel_shared else x.shape[1]
    if s.size != want:
        raise ShapeError("normalize scale must hold one value (channel_shared) or one per channel",
                         expected=want, got=s.size)
    return s


@ieee
def l2_normalize_backward_reference(x: np.ndarray, scale: np.ndarray | None, dy: np.ndarray, *,
                                    across_spatial: bool = True, channel_shared: bool = True,
                                    eps: float = 1e-10) -> tuple[np.ndarray, np.ndarray | None]:
    """SSD Normalize backward (module docstring), float64: ``(dx, dscale)``; dscale None
    without a scale."""
    x, dy = _xdy(x, dy)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    s = _norm_scale(x, scale, channel_shared, np.float64)
    axes = tuple(range(1, x.ndim)) if across_spatial else (1,)
    r = 1.0 / np.sqrt(np.sum(x64 * x64, axis=axes, keepdims=True) + float(eps))
    sv = 1.0 if s is None else (s[0] if channel_shared else _chan(s, x.ndim))
    u = dy64 * sv
    dx = r * u - x64 * r ** 3 * np.sum(u * x64, axis=axes, keepdims=True)
    if s is None:
        return dx, None
    g = dy64 * x64 * r
    return dx, (np.array([g.sum()]) if channel_shared else _chan_sum(g))


@ieee
def l2_normalize_backward(x: np.ndarray, scale: np.ndarray | None, dy: np.ndarray, *,
                          across_spatial: bool = True, channel_shared: bool = True,
                          eps: float = 1e-10) -> tuple[np.ndarray, np.ndarray | None]:
    """Fast SSD Normalize backward in the input dtype (norms summed in float64)."""
    x, dy = _xdy(x, dy)
    dt = x.dtype
    s = _norm_scale(x, scale, channel_shared, dt)
    axes = tuple(range(1, x.ndim)) if across_spatial else (1,)
    r = (1.0 / np.sqrt(np.sum(x * x, axis=axes, keepdims=True, dtype=np.float64) + float(eps))).astype(dt)
    u = dy if s is None else dy * (s[0] if channel_shared else _chan(s, x.ndim))
    dx = r * u - x * (r * r * r) * np.sum(u * x, axis=axes, keepdims=True)
    if s is None:
        return dx, None
    g = dy * x * r
    return dx, (np.array([g.sum()], dtype=dt) if channel_shared else _chan_sum(g))
