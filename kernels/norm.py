"""Normalisation kernels: BatchNorm, Scale, Bias, InstanceNorm, LRN, SSD Normalize, MVN,
and the folding of BatchNorm/Scale into a preceding convolution.

Channel axis is 1 (NCHW). ``f_reference`` is the readable NumPy definition in the input dtype
(float64 for the reference path); ``f`` the fast version: in-place NumPy passes over one output
buffer, per-channel coefficients folded in float64 first, statistics from NumPy's pairwise
sums (a corrected two-pass variance on the centred values, which are reused as the output
buffer). NumPy's SIMD ufuncs are used rather than Numba loops: measured on the
2-core dev machine, jitted versions of these kernels were 1-5x slower single-threaded
(scalar ``pow``/``exp``, float32->float64 mixing) and stalled badly with threads on a loaded
machine; they also cost ~10 s of cold compilation. The exception is instance_norm's last
statistics (float64 accumulators, one read) and affine + optional fused ReLU pass. Per-channel
parameter arrays must have ``x``'s dtype (the executor casts them).
"""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels import _workers
from refnet.kernels._check import as_float_array, ieee, same_dtype
from refnet.kernels._jit import prange
from refnet.kernels._parallel import twin

__all__ = [
    "batch_norm",
    "batch_norm_reference",
    "scale",
    "scale_reference",
    "bias",
    "bias_reference",
    "instance_norm",
    "instance_norm_reference",
    "lrn",
    "lrn_reference",
    "l2_normalize",
    "l2_normalize_reference",
    "mvn_cv2",
    "mvn_cv2_reference",
    "mvn",
    "mvn_reference",
    "fold_batch_norm",
    "fold_scale",
]

# ================================================================ argument helpers


def _x(x: object, min_ndim: int = 2) -> np.ndarray:
    x = as_float_array(x, "x")
    if x.ndim < min_ndim:
        raise ShapeError(
            f"x must have rank >= {min_ndim} (N, C, ...)", expected=f"rank >= {min_ndim}", got=x.shape
        )
    return x


def _vec(p: object, name: str, n: int, like: np.ndarray) -> np.ndarray:
    """A (n,) parameter array of ``like``'s dtype."""
    p = as_float_array(p, name, ndim=1)
    same_dtype("x", like, name, p)
    if p.shape[0] != n:
        raise ShapeError(f"{name} must have one value per channel", expected=(n,), got=p.shape)
    return p


def _bshape(x: np.ndarray, axis: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape that places ``shape`` at ``axis`` of ``x`` and broadcasts over the other axes."""
    return (1,) * axis + shape + (1,) * (x.ndim - axis - len(shape))


def _chan(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A (C,) array viewed to broadcast along axis 1 of ``x``."""
    return p.reshape(_bshape(x, 1, p.shape))


def _as3(x: np.ndarray, axis: int, n_axes: int) -> tuple[int, int, int]:
    """(outer, mid, inner) sizes of ``x`` split around axes ``axis : axis + n_axes``."""
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    mid = int(np.prod(x.shape[axis : axis + n_axes], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + n_axes :], dtype=np.int64))
    return outer, mid, inner


# ================================================================ fast building blocks


def _centered(x2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``x2`` (R, D) centred: ``(d, dm, var)`` with ``d = x2 - mean`` in x2's dtype (a
    new array, reused as output buffer), ``dm`` the mean of ``d`` (the rounding left in the
    mean) and ``var`` the biased variance, as float64 (R,) arrays.

    Corrected two-pass with NumPy's pairwise row sums (error ~ log2(D) ulp, measured ~1e-7
    relative in float32 over 4e6 values, 4x faster than float64 accumulation); constant rows
    give exactly 0 variance.
    """
    mean = x2.mean(axis=1, keepdims=True)
    d = np.subtract(x2, mean)
    dm = d.mean(axis=1, dtype=d.dtype).astype(np.float64)
    var = np.square(d).mean(axis=1).astype(np.float64) - dm * dm
    dm[~np.isfinite(dm)] = 0.0  # a row with an Inf: d is already -inf/inf/nan, the correction would make it all NaN
    return d, dm, np.maximum(var, 0.0)


def _affine_rows(d: np.ndarray, dm: np.ndarray, a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """In place ``d <- (d - dm) * a + b`` per row; ``a``, ``b`` float64 per-row (or scalar b)."""
    d *= a.astype(d.dtype)[:, None]
    d += (b - dm * a).astype(d.dtype)[:, None]
    return d


# ================================================================ batch norm / scale / bias


def _bn_args(x, mean, var, weight, bias):
    x = _x(x)
    c = x.shape[1]
    mean = _vec(mean, "mean", c, x)
    var = _vec(var, "var", c, x)
    weight = None if weight is None else _vec(weight, "weight", c, x)
    bias = None if bias is None else _vec(bias, "bias", c, x)
    return x, mean, var, weight, bias


@ieee
def batch_norm_reference(
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """Inference BatchNorm (Caffe BatchNorm [+ Scale], Torch BN): ``(x - mean) / sqrt(var + eps)
    * weight + bias`` per channel (axis 1, any rank >= 2)."""
    x, mean, var, weight, bias = _bn_args(x, mean, var, weight, bias)
    y = (x - _chan(x, mean)) / np.sqrt(_chan(x, var) + float(eps))
    if weight is not None:
        y = y * _chan(x, weight)
    if bias is not None:
        y = y + _chan(x, bias)
    return y


@ieee
def batch_norm(
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """Fast inference BatchNorm: ``a = weight / sqrt(var + eps)`` folded per channel in float64,
    then three in-place passes ``(x - mean) * a + bias`` (subtracting first avoids the
    cancellation of ``x * a + (bias - mean * a)`` when |mean| >> std)."""
    x, mean, var, weight, bias = _bn_args(x, mean, var, weight, bias)
    a = 1.0 / np.sqrt(var.astype(np.float64) + float(eps))
    if weight is not None:
        a = a * weight
    out = np.subtract(x, _chan(x, mean))
    out *= _chan(x, a.astype(x.dtype))
    if bias is not None:
        out += _chan(x, bias)
    return out


def _scale_axis(x: np.ndarray, p: np.ndarray, axis: int, name: str) -> int:
    """Caffe Scale/Bias rule: ``p.shape == x.shape[axis : axis + p.ndim]``; returns axis >= 0."""
    if not -x.ndim <= int(axis) < max(x.ndim, 1):
        raise ShapeError(
            f"{name}: axis {axis} out of range for x of rank {x.ndim}",
            expected=f"axis in [{-x.ndim}, {x.ndim - 1}]",
            got=axis,
        )
    a = int(axis) % x.ndim
    if p.ndim and tuple(x.shape[a : a + p.ndim]) != p.shape:
        raise ShapeError(
            f"{name} shape must equal x.shape[axis : axis + {name}.ndim] (Caffe Scale/Bias rule)",
            expected=tuple(x.shape[a : a + p.ndim]),
            got=f"{name} {p.shape} for x {x.shape}, axis {axis}",
        )
    return a


def _param(p: object, name: str, x: np.ndarray) -> np.ndarray:
    p = as_float_array(p, name)
    same_dtype("x", x, name, p)
    return p


@ieee
def scale_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, axis: int = 1
) -> np.ndarray:
    """Caffe Scale: ``x * weight (+ bias)``, weight shaped like ``x.shape[axis : axis + weight.ndim]``
    (a 0-d weight scales everything) and broadcast over the other axes."""
    x = as_float_array(x, "x")
    weight = _param(weight, "weight", x)
    a = _scale_axis(x, weight, axis, "weight")
    w = weight.reshape(_bshape(x, a, weight.shape)) if weight.ndim else weight
    y = x * w
    if bias is not None:
        bias = _param(bias, "bias", x)
        if bias.shape != weight.shape:
            raise ShapeError("scale bias must have the weight's shape", expected=weight.shape, got=bias.shape)
        y = y + (bias.reshape(_bshape(x, a, bias.shape)) if bias.ndim else bias)
    return y


@ieee
def scale(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, axis: int = 1
) -> np.ndarray:
    """Fast Caffe Scale (see :func:`scale_reference`): multiply, then add in place."""
    x = as_float_array(x, "x")
    weight = _param(weight, "weight", x)
    a = _scale_axis(x, weight, axis, "weight")
    if bias is not None:
        bias = _param(bias, "bias", x)
        if bias.shape != weight.shape:
            raise ShapeError("scale bias must have the weight's shape", expected=weight.shape, got=bias.shape)
    out = np.multiply(x, weight.reshape(_bshape(x, a, weight.shape)) if weight.ndim else weight)
    if bias is not None:
        out += bias.reshape(_bshape(x, a, bias.shape)) if bias.ndim else bias
    return out


@ieee
def bias_reference(x: np.ndarray, bias: np.ndarray, axis: int = 1) -> np.ndarray:
    """Caffe Bias: ``x + bias``, bias shaped like ``x.shape[axis : axis + bias.ndim]``."""
    x = as_float_array(x, "x")
    bias = _param(bias, "bias", x)
    a = _scale_axis(x, bias, axis, "bias")
    return x + (bias.reshape(_bshape(x, a, bias.shape)) if bias.ndim else bias)


@ieee
def bias(x: np.ndarray, bias: np.ndarray, axis: int = 1) -> np.ndarray:
    """Fast Caffe Bias (see :func:`bias_reference`): one ufunc pass."""
    x = as_float_array(x, "x")
    bias = _param(bias, "bias", x)
    a = _scale_axis(x, bias, axis, "bias")
    return np.add(x, bias.reshape(_bshape(x, a, bias.shape)) if bias.ndim else bias)


# ================================================================ instance norm / MVN


def _affine_args(x, weight, bias):
    c = x.shape[1]
    weight = None if weight is None else _vec(weight, "weight", c, x)
    bias = None if bias is None else _vec(bias, "bias", c, x)
    return weight, bias


def _in_activation(activation: str | None, negative_slope: float) -> float | None:
    """The slope of the fused ReLU (None: no activation); only ReLU / leaky ReLU fuse here."""
    if activation is None:
        return None
    if activation != "relu":
        raise ValueError(f"instance_norm: activation must be None or 'relu', got {activation!r}")
    return float(negative_slope)


@ieee
def instance_norm_reference(
    x: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
    *,
    activation: str | None = None,
    negative_slope: float = 0.0,
) -> np.ndarray:
    """Torch7 InstanceNormalization: per (n, c) over the spatial axes, ``(x - mean) /
    sqrt(biased var + eps)``, then ``* weight[c] + bias[c]``; ``activation="relu"`` then
    applies Caffe's (leaky) ReLU."""
    slope = _in_activation(activation, negative_slope)
    x = _x(x)
    weight, bias = _affine_args(x, weight, bias)
    axes = tuple(range(2, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(eps))
    if weight is not None:
        y = y * _chan(x, weight)
    if bias is not None:
        y = y + _chan(x, bias)
    if slope is not None:
        y = np.where(y > 0, y, y * slope)
    return y


@twin(0)
def _row_moments(x, mean, var):
    """Per row of x (R, D): mean and biased variance, accumulated in float64 on values shifted
    by the row's first element (8 independent accumulators so the loop pipelines); one read."""
    r_, m = x.shape
    for r in prange(r_):
        row = x[r]
        sh = np.float64(row[0])
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
        m8 = m - m % 8
        for k in range(0, m8, 8):
            v0 = row[k] - sh
            v1 = row[k + 1] - sh
            v2 = row[k + 2] - sh
            v3 = row[k + 3] - sh
            v4 = row[k + 4] - sh
            v5 = row[k + 5] - sh
            v6 = row[k + 6] - sh
            v7 = row[k + 7] - sh
            s0 += v0
            s1 += v1
            s2 += v2
            s3 += v3
            s4 += v4
            s5 += v5
            s6 += v6
            s7 += v7
            q0 += v0 * v0
            q1 += v1 * v1
            q2 += v2 * v2
            q3 += v3 * v3
            q4 += v4 * v4
            q5 += v5 * v5
            q6 += v6 * v6
            q7 += v7 * v7
        s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        q = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7))
        for k in range(m8, m):
            v = row[k] - sh
            s += v
            q += v * v
        mu = s / m
        mean[r] = sh + mu
        var[r] = max(q / m - mu * mu, 0.0)  # a NaN stays NaN (max returns its first argument)


@twin()
def _affine_act_rows(x, mean, a, b, act, slope, y):
    """Per row: y = (x - mean[r]) * a[r] + b[r] (subtracting first: no cancellation when
    |mean| >> std), then (act 1) the (leaky) ReLU ``v if v > 0 else v * slope``."""
    for r in prange(x.shape[0]):
        src = x[r]
        dst = y[r]
        mr = mean[r]
        ar = a[r]
        br = b[r]
        if act == 1:
            for k in range(src.shape[0]):
                v = (src[k] - mr) * ar + br
                dst[k] = v if v > 0 else v * slope
        else:
            for k in range(src.shape[0]):
                dst[k] = (src[k] - mr) * ar + br


@ieee
def instance_norm(
    x: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
    *,
    activation: str | None = None,
    negative_slope: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fast Torch7 InstanceNormalization: per-(n, c) moments in one numba pass (float64
    accumulators), then ``(x - mean) * a + bias`` (a = weight / sqrt(var + eps) in float64)
    and the optional fused ReLU in a second pass, into ``out`` when given (C-contiguous,
    x's shape and dtype)."""
    slope = _in_activation(activation, negative_slope)
    x = _x(x)
    weight, bias = _affine_args(x, weight, bias)
    n, c, s = _as3(x, 1, 1)
    if x.size == 0:
        return np.empty_like(x)
    x2 = np.ascontiguousarray(x).reshape(n * c, s)
    mean = np.empty(n * c)
    var = np.empty(n * c)
    _row_moments(x2, mean, var)
    a = 1.0 / np.sqrt(var + float(eps))
    if weight is not None:
        a = (a.reshape(n, c) * weight).reshape(-1)
    b = np.zeros(n * c) if bias is None else np.tile(bias.astype(np.float64), n)
    dt = x.dtype
    if out is None:
        y = np.empty_like(x2)
    elif out.shape != x.shape or out.dtype != dt or not out.flags.c_contiguous:
        raise ShapeError("instance_norm: out must be C-contiguous with x's shape and dtype",
                         expected=f"{x.shape} {dt}", got=f"{out.shape} {out.dtype}")
    else:
        y = out.reshape(n * c, s)
    _affine_act_rows(x2, mean.astype(dt), a.astype(dt), b.astype(dt), 0 if slope is None else 1,
                     dt.type(0.0 if slope is None else slope), y)
    return out if out is not None else y.reshape(x.shape)


def _mvn_reference(x: np.ndarray, normalize_variance: bool, across_channels: bool, eps: float,
                   cv2_rule: bool) -> np.ndarray:
    x = _x(x)
    axes = tuple(range(1 if across_channels else 2, x.ndim))  # () for (N, C): one value each
    x64 = x.astype(np.float64)
    mean = np.mean(x64, axis=axes, keepdims=True)
    y = x64 - mean
    if normalize_variance:
        var = np.mean(y * y, axis=axes, keepdims=True)
        y = y / (np.sqrt(var + float(eps)) if cv2_rule else np.sqrt(var) + float(eps))
    return y.astype(x.dtype, copy=False)


def _mvn_fast(x: np.ndarray, normalize_variance: bool, across_channels: bool, eps: float,
              cv2_rule: bool) -> np.ndarray:
    """Moments by pairwise sums (:func:`_centered`), centred values reused as output buffer,
    scaled in place."""
    x = _x(x)
    n, c, _ = _as3(x, 1, 1)
    if x.size == 0:
        return np.empty_like(x)
    rows = n if across_channels else n * c
    d, dm, var = _centered(x.reshape(rows, -1))
    if not normalize_variance:
        a = np.ones(rows)
    else:
        a = 1.0 / (np.sqrt(var + float(eps)) if cv2_rule else np.sqrt(var) + float(eps))
    return _affine_rows(d, dm, a, 0.0).reshape(x.shape)


@ieee
def mvn_reference(x: np.ndarray, *, normalize_variance: bool = True, across_channels: bool = False,
                  eps: float = 1e-9) -> np.ndarray:
    """Caffe MVN: subtract the mean over (H, W) per (n, c), or over (C, H, W) per n when
    ``across_channels``; with ``normalize_variance`` divide by ``sqrt(biased var) + eps``
    (Caffe adds eps to the standard deviation, not to the variance). Float64 throughout."""
    return _mvn_reference(x, normalize_variance, across_channels, eps, cv2_rule=False)


@ieee
def mvn(x: np.ndarray, *, normalize_variance: bool = True, across_channels: bool = False,
        eps: float = 1e-9) -> np.ndarray:
    """Fast Caffe MVN (see :func:`mvn_reference`), in ``x``'s dtype."""
    return _mvn_fast(x, normalize_variance, across_channels, eps, cv2_rule=False)


@ieee
def mvn_cv2_reference(x: np.ndarray, *, normalize_variance: bool = True, across_channels: bool = False,
                      eps: float = 1e-9) -> np.ndarray:
    """cv2.dnn's MVN: as :func:`mvn_reference` but divided by ``sqrt(var + eps)`` (eps inside the
    root), the rule of the ``mvn_cv2`` op (Caffe MVN under ``quirks="cv2"``). Float64 throughout."""
    return _mvn_reference(x, normalize_variance, across_channels, eps, cv2_rule=True)


@ieee
def mvn_cv2(x: np.ndarray, *, normalize_variance: bool = True, across_channels: bool = False,
            eps: float = 1e-9) -> np.ndarray:
    """Fast cv2 MVN (see :func:`mvn_cv2_reference`), in ``x``'s dtype."""
    return _mvn_fast(x, normalize_variance, across_channels, eps, cv2_rule=True)


# ================================================================ SSD Normalize (L2)


def _l2_scale(x: np.ndarray, scale: object, channel_shared: bool) -> np.ndarray | None:
    if scale is None:
        return None
    scale = _param(scale, "scale", x)
    want = 1 if channel_shared else x.shape[1]
    if scale.ndim > 1 or scale.size != want:
        raise ShapeError(
            "normalize scale must hold one value (channel_shared) or one per channel",
            expected=f"{want} value(s)",
            got=scale.shape,
        )
    return scale.reshape(-1)


@ieee
def l2_normalize_reference(
    x: np.ndarray,
    scale: np.ndarray | None = None,
    *,
    across_spatial: bool = True,
    channel_shared: bool = True,
    eps: float = 1e-10,
) -> np.ndarray:
    """Caffe-SSD Normalize (cv2 NormalizeBBox, p = 2): ``x / sqrt(sum x^2 + eps)``, the sum over
    (C, H, W) per sample if ``across_spatial`` else over C per pixel; then ``* scale`` (one
    value if ``channel_shared`` else per channel; None = no scaling)."""
    x = _x(x)
    sc = _l2_scale(x, scale, channel_shared)
    axes = tuple(range(1, x.ndim)) if across_spatial else (1,)
    y = x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + float(eps))
    if sc is not None:
        y = y * (sc[0] if channel_shared else _chan(x, sc))
    return y


@ieee
def l2_normalize(
    x: np.ndarray,
    scale: np.ndarray | None = None,
    *,
    across_spatial: bool = True,
    channel_shared: bool = True,
    eps: float = 1e-10,
) -> np.ndarray:
    """Fast Caffe-SSD Normalize (see :func:`l2_normalize_reference`)."""
    x = _x(x)
    sc = _l2_scale(x, scale, channel_shared)
    n, c, s = _as3(x, 1, 1)
    if x.size == 0:
        return np.empty_like(x)
    x3 = x.reshape(n, c, s)
    if across_spatial:
        ss = np.square(x3.reshape(n, c * s)).sum(axis=1).astype(np.float64)  # pairwise
        coef = np.repeat((1.0 / np.sqrt(ss + float(eps)))[:, None], c, axis=1)  # (n, c)
        if sc is not None:
            coef = coef * sc.astype(np.float64)
        return np.multiply(x3, coef.astype(x.dtype)[:, :, None]).reshape(x.shape)
    ss = np.square(x3).sum(axis=1, dtype=np.float64)  # across rows: accumulate in float64
    out = np.multiply(x3, (1.0 / np.sqrt(ss + float(eps))).astype(x.dtype)[:, None, :])
    if sc is not None:
        out *= sc[None, :, None] if not channel_shared else sc[0]
    return out.reshape(x.shape)


# ================================================================ LRN


def _lrn_args(x: object, size: int, region: str) -> tuple[np.ndarray, int, str]:
    x = as_float_array(x, "x", ndim=4)
    size = int(size)
    if size < 1 or size % 2 != 1:
        raise ValueError(f"lrn size must be a positive odd number (Caffe, cv2), got {size}")
    r = str(region).lower()
    if r in ("across", "across_channels"):
        r = "across"
    elif r in ("within", "within_channel"):
        r = "within"
    else:
        raise ValueError(f"lrn region must be 'across' or 'within', got {region!r}")
    return x, size, r


@ieee
def lrn_reference(
    x: np.ndarray,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    region: str = "across",
) -> np.ndarray:
    """Caffe LRN on NCHW, ``y = x * scale ** -beta``.

    ``across``: ``scale = k + alpha / size * sum of x^2`` over channels ``c - (size-1)/2 ..
    c + (size-1)/2`` (zero outside); Torch7 SpatialCrossMapLRN is the same rule.
    ``within``: Caffe builds it from an AVE pooling of x^2 (kernel ``size``, pad ``(size-1)/2``,
    whose divisor is always ``size^2``) and a Power layer with shift 1, so ``scale = 1 + alpha /
    size^2 * sum of x^2`` over the zero-padded ``size x size`` window: **k is not used**.
    """
    x, size, r = _lrn_args(x, size, region)
    pre = (size - 1) // 2
    sq = x * x
    n, c, h, w = x.shape
    if r == "across":
        padded = np.zeros((n, c + size - 1, h, w), dtype=x.dtype)
        padded[:, pre : pre + c] = sq
        s = np.zeros_like(x)
        for j in range(size):
            s += padded[:, j : j + c]
        return x * (float(k) + float(alpha) / size * s) ** -float(beta)
    padded = np.zeros((n, c, h + size - 1, w + size - 1), dtype=x.dtype)
    padded[:, :, pre : pre + h, pre : pre + w] = sq
    s = np.zeros_like(x)
    for dy in range(size):
        for dx in range(size):
            s += padded[:, :, dy : dy + h, dx : dx + w]
    return x * (1.0 + float(alpha) * (s / (size * size))) ** -float(beta)


@ieee
def lrn(
    x: np.ndarray,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    region: str = "across",
) -> np.ndarray:
    """Fast Caffe LRN (see :func:`lrn_reference`; ``within`` ignores ``k`` as Caffe does)."""
    x, size, r = _lrn_args(x, size, region)
    if r == "across":
        return _lrn_across(x, size, float(alpha), float(beta), float(k))
    pre = (size - 1) // 2
    sq = np.square(x)
    s = sq.copy()  # window offset 0
    # within: a separable zero-padded box sum, along W, then along H
    h, w = x.shape[2:]
    for off in range(-pre, size - pre):
        if off:
            lo, hi = max(0, -off), min(w, w - off)
            if lo >= hi:  # window reaches past a dimension smaller than size
                continue
            s[..., lo:hi] += sq[..., lo + off : hi + off]
    row = s.copy()
    for off in range(-pre, size - pre):
        if off:
            lo, hi = max(0, -off), min(h, h - off)
            if lo >= hi:  # window reaches past a dimension smaller than size
                continue
            s[:, :, lo:hi] += row[:, :, lo + off : hi + off]
    s *= float(alpha) / (size * size)
    s += 1.0
    _pow_neg(s, float(beta))
    s *= x
    return s


def _lrn_across(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """The ``across`` LRN: numba, parallel over (n, c) planes -- or, with several worker threads
    (:mod:`refnet.kernels._workers`), its serial build on blocks of output channels over the pool
    (each block reads its neighbours' planes; every element computed the same way either way)."""
    n, c, h, w = x.shape
    x3 = np.ascontiguousarray(x).reshape(n, c, h * w)
    y = np.empty((n, c, h * w), dtype=x.dtype)
    # in x's dtype, as NumPy applies Python floats to float32 arrays
    consts = np.array([alpha / size, k, 1.0, -beta], dtype=x.dtype)
    b75 = beta == 0.75
    parts = _workers.ranges(c, x.size)
    if len(parts) == 1:
        _lrn_across_fast(x3, 0, c, size, consts, b75, y)
    else:
        serial = _lrn_across_fast.serial
        _workers.run_ranges(lambda lo, hi: serial(x3, lo, hi, size, consts, b75, y), parts)
    return y.reshape(n, c, h, w)


@twin(0)
def _lrn_across_fast(x, c0, c1, size, consts, b75, y):
    """Output channels c0..c1-1 of the ``across`` LRN of x (N, C, L) into y: ``s = x[c]**2``, then
    ``+= x[c + off]**2`` for the window's other offsets in order (channels inside only), ``s *
    alpha / size + k``, ``s ** -beta`` (beta 0.75: ``1 / (sqrt(sqrt(s)) * sqrt(s))``), ``* x`` --
    element by element the sequence of the former NumPy code (``consts``: alpha / size, k, 1,
    -beta in x's dtype)."""
    n_, c_, length = x.shape
    pre = (size - 1) // 2
    scale, kk, one, nbeta = consts[0], consts[1], consts[2], consts[3]
    nc = c1 - c0
    for t in prange(n_ * nc):
        n = t // nc
        c = c0 + t % nc
        xc = x[n, c]
        yc = y[n, c]
        for i in range(length):
            v = xc[i]
            yc[i] = v * v
        for off in range(-pre, size - pre):
            cc = c + off
            if off == 0 or cc < 0 or cc >= c_:
                continue
            xo = x[n, cc]
            for i in range(length):
                v = xo[i]
                yc[i] += v * v
        for i in range(length):
            s = yc[i] * scale + kk
            if b75:
                r = np.sqrt(s)
                s = one / (np.sqrt(r) * r)
            else:
                s = s**nbeta
            yc[i] = s * xc[i]


def _pow_neg(s: np.ndarray, beta: float) -> None:
    """In place ``s <- s ** -beta``; the common beta = 0.75 as 1 / (sqrt(s) * s ** 0.25)."""
    if beta == 0.75:
        t = np.sqrt(s)
        np.sqrt(t, out=s)
        s *= t
        np.reciprocal(s, out=s)
    else:
        np.power(s, -beta, out=s)


# ================================================================ folding into a conv


def _fold_vec(p: object, name: str, co: int) -> np.ndarray:
    p = as_float_array(p, name, ndim=1)
    if p.shape[0] != co:
        raise ShapeError(f"{name} must have one value per output channel", expected=(co,), got=p.shape)
    return p.astype(np.float64)


def _fold_wb(weight: object, bias: object) -> tuple[np.ndarray, int, np.ndarray]:
    weight = as_float_array(weight, "weight")
    if weight.ndim < 1:
        raise ShapeError("weight must have rank >= 1 (C_out, ...)", expected="rank >= 1", got=weight.shape)
    co = weight.shape[0]
    b = np.zeros(co) if bias is None else _fold_vec(bias, "bias", co)
    return weight, co, b


@ieee
def fold_batch_norm(
    weight: np.ndarray,
    bias: np.ndarray | None,
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference BatchNorm (+ optional affine gamma/beta) that follows a conv/linear with
    ``weight`` (C_out, ...) and ``bias`` (C_out,) or None: ``w' = w * a``, ``b' = (b - mean) * a
    + beta`` with ``a = gamma / sqrt(var + eps)``. Computed in float64, returned in weight's dtype.
    """
    weight, co, b = _fold_wb(weight, bias)
    a = 1.0 / np.sqrt(_fold_vec(var, "var", co) + float(eps))
    if gamma is not None:
        a = a * _fold_vec(gamma, "gamma", co)
    b = (b - _fold_vec(mean, "mean", co)) * a
    if beta is not None:
        b = b + _fold_vec(beta, "beta", co)
    w = weight.astype(np.float64) * a.reshape((co,) + (1,) * (weight.ndim - 1))
    return w.astype(weight.dtype), b.astype(weight.dtype)


@ieee
def fold_scale(
    weight: np.ndarray,
    bias: np.ndarray | None,
    gamma: np.ndarray,
    beta: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold a Caffe Scale layer (axis 1: gamma (C_out,), optional beta) that follows a conv/linear:
    ``w' = w * gamma``, ``b' = b * gamma + beta``. Computed in float64, returned in weight's dtype."""
    weight, co, b = _fold_wb(weight, bias)
    g = _fold_vec(gamma, "gamma", co)
    b = b * g
    if beta is not None:
        b = b + _fold_vec(beta, "beta", co)
    w = weight.astype(np.float64) * g.reshape((co,) + (1,) * (weight.ndim - 1))
    return w.astype(weight.dtype), b.astype(weight.dtype)
