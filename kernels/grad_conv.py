"""Backward (vector-Jacobian) kernels of convolution, transposed convolution and InnerProduct.

Each takes the forward inputs and the cotangent ``dy`` of the output and returns the
cotangents of the inputs and parameters: ``(dx, dweight, dbias)``. Geometry follows the
forward kernels (kernels/conv.py): ``stride=(sh, sw)``, ``pad=(top, left, bottom, right)``,
``dilation=(dh, dw)``, ``groups``; Caffe's output size ``(H + pt + pb - dh*(kh-1) - 1)//sh + 1``.

The rule, written once: the forward convolution reads, through kernel tap ``(i, j)``, the
padded input at rows ``i*dh + sh*oh`` and columns ``j*dw + sw*ow``. So for every tap

    dweight[o, c, i, j] = sum_{n, oh, ow} dy[n, o, oh, ow] * xpad[n, c, i*dh + sh*oh, j*dw + sw*ow]
    dxpad[n, c, i*dh + sh*oh, j*dw + sw*ow] += sum_o dy[n, o, oh, ow] * weight[o, c, i, j]

within each group, and ``dbias[o] = sum dy[n, o, :, :]``. A transposed convolution is the
adjoint of that read (its input plays the convolution's output), so its backward is the
same tap walk with the roles of ``x`` and ``dy`` exchanged.

``f_backward_reference``: float64, one contraction per kernel tap (groups as an axis). ``f_backward``: in the
input dtype; the input gradient by the fast forward kernels (a convolution's adjoint is the
transposed convolution with the same weights and the other way round), the weight gradient
as one batched (over groups) matmul per tap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee, pad4, pair
from refnet.kernels.conv import conv2d, conv_transpose2d

__all__ = [
    "conv2d_backward",
    "conv2d_backward_reference",
    "conv_transpose2d_backward",
    "conv_transpose2d_backward_reference",
    "linear_backward",
    "linear_backward_reference",
]

Grads = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]
IntPair = int | Sequence[int]


def _geometry(x, weight, dy, stride, pad, dilation, groups, transposed):
    as_float_array(x, "x", 4)
    as_float_array(weight, "weight", 4)
    as_float_array(dy, "dy", 4)
    s, d, p = pair(stride, "stride"), pair(dilation, "dilation"), pad4(pad)
    g = int(groups)
    cin = weight.shape[0] if transposed else weight.shape[1] * g
    if g < 1 or x.shape[1] != cin or weight.shape[0] % g:
        raise ShapeError("x channels do not match the weights and groups", expected=cin,
                         got=f"x {x.shape}, weight {weight.shape}, groups {g}")
    if dy.shape[0] != x.shape[0]:
        raise ShapeError("dy batch differs from x", expected=x.shape[0], got=dy.shape[0])
    return s, p, d, g


def _tap(k: int, d: int, s: int, n: int) -> slice:
    """The padded-input positions tap ``k`` reads for ``n`` outputs: ``k*d + s*o``."""
    return slice(k * d, k * d + s * (n - 1) + 1, s)


def _padded(a: np.ndarray, p: tuple[int, int, int, int], hp: int, wp: int) -> np.ndarray:
    """``a`` placed at (top, left) = (p[0], p[1]) of a zero (N, C, hp, wp) array."""
    out = np.zeros(a.shape[:2] + (hp, wp), dtype=a.dtype)
    h, w = a.shape[2:]
    out[:, :, p[0]:p[0] + h, p[1]:p[1] + w] = a[:, :, :min(h, hp - p[0]), :min(w, wp - p[1])]
    return out


def _extent(size: int, k: int, s: int, d: int, n_out: int, pb: int, pe: int) -> int:
    """Padded length covering both the input with its pads and every tap read."""
    return max(size + pb + pe, (k - 1) * d + s * (n_out - 1) + 1, pb + size)


# ---- convolution -------------------------------------------------------------------------------
@ieee
def conv2d_backward_reference(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, *, stride: IntPair = 1,
                              pad: int | Sequence[int] = 0, dilation: IntPair = 1, groups: int = 1,
                              bias: bool = True, need_weight: bool = True) -> Grads:
    """Reference backward of :func:`refnet.kernels.conv2d` (Caffe Convolution): ``(dx, dweight,
    dbias)`` in float64, per kernel tap one contraction over (n, oh, ow) with the groups as an
    axis (see the module docstring);
    ``dbias`` is None when ``bias`` is False; ``need_weight=False`` skips dweight (None)."""
    (sh, sw), p, (dh, dw), g = _geometry(x, weight, dy, stride, pad, dilation, groups, False)
    x64, w64, dy64 = (np.asarray(a, dtype=np.float64) for a in (x, weight, dy))
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og = o // g
    ho, wo = dy.shape[2:]
    hp, wp = _extent(h, kh, sh, dh, ho, p[0], p[2]), _extent(w, kw, sw, dw, wo, p[1], p[3])
    # groups as an axis: x (N, G, Cg, H, W), dy (N, G, Og, Ho, Wo), weight (G, Og, Cg, kh, kw)
    xp = _padded(x64, p, hp, wp).reshape(n, g, cg, hp, wp)
    dyg = dy64.reshape(n, g, og, ho, wo)
    wg = w64.reshape(g, og, cg, kh, kw)
    dxp = np.zeros_like(xp)
    dwt = np.zeros_like(wg)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, dh, sh, ho), _tap(j, dw, sw, wo)
            read = xp[:, :, :, rows, cols]  # (N, G, Cg, Ho, Wo): what tap (i, j) read
            if g == 1:  # one group: BLAS tensordots
                if need_weight:
                    dwt[0, :, :, i, j] = np.tensordot(dyg[:, 0], read[:, 0], axes=([0, 2, 3], [0, 2, 3]))
                dxp[:, 0, :, rows, cols] += np.einsum("nohw,oc->nchw", dyg[:, 0], wg[0, :, :, i, j])
            else:
                if need_weight:
                    dwt[:, :, :, i, j] = np.einsum("ngohw,ngchw->goc", dyg, read)
                dxp[:, :, :, rows, cols] += np.einsum("ngohw,goc->ngchw", dyg, wg[:, :, :, i, j])
    dxp = dxp.reshape(n, c, hp, wp)
    dwt = dwt.reshape(w64.shape)
    dx = dxp[:, :, p[0]:p[0] + h, p[1]:p[1] + w]
    return np.ascontiguousarray(dx), (dwt if need_weight else None), (dy64.sum(axis=(0, 2, 3)) if bias else None)


def _group_rows(a: np.ndarray, g: int) -> np.ndarray:
    """(N, G*Ca, H, W) -> (G, Ca, N*H*W), contiguous."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(n, g, c // g, h * w).transpose(1, 2, 0, 3)).reshape(g, c // g, n * h * w)


@ieee
def conv2d_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, *, stride: IntPair = 1,
                    pad: int | Sequence[int] = 0, dilation: IntPair = 1, groups: int = 1,
                    bias: bool = True, need_weight: bool = True) -> Grads:
    """Fast backward of :func:`refnet.kernels.conv2d` in the input dtype. ``dx`` is the adjoint of
    the convolution, i.e. the fast transposed convolution of ``dy`` with the same weights and
    geometry (``output_padding`` = the rows/cols the forward's floor division left unread);
    ``dweight``: per kernel tap one batched (over groups) matmul of ``dy`` with what the tap read."""
    (sh, sw), p, (dh, dw), g = _geometry(x, weight, dy, stride, pad, dilation, groups, False)
    dt = x.dtype
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    ho, wo = dy.shape[2:]
    dy = np.ascontiguousarray(dy, dtype=dt)
    wt = np.ascontiguousarray(weight, dtype=dt)
    if kh == kw == 1 and (sh, sw) == (1, 1) and p == (0, 0, 0, 0) and g == 1:  # pointwise: two GEMMs
        w2 = wt.reshape(o, c)
        d3 = dy.reshape(n, o, h * w)
        dx = np.matmul(w2.T, d3).reshape(x.shape)
        dwt = np.matmul(d3, np.ascontiguousarray(x).reshape(n, c, h * w).transpose(0, 2, 1)).sum(axis=0)
        db = dy.sum(axis=(0, 2, 3), dtype=dt) if bias else None
        return dx, (dwt.reshape(weight.shape) if need_weight else None), db
    left = (h + p[0] + p[2] - dh * (kh - 1) - 1 - (ho - 1) * sh, w + p[1] + p[3] - dw * (kw - 1) - 1 - (wo - 1) * sw)
    dx = conv_transpose2d(dy, wt, None, stride=(sh, sw), pad=p, dilation=(dh, dw), groups=g, output_padding=left)
    db = dy.sum(axis=(0, 2, 3), dtype=dt) if bias else None
    if not need_weight:
        return dx, None, db
    hp, wp = _extent(h, kh, sh, dh, ho, p[0], p[2]), _extent(w, kw, sw, dw, wo, p[1], p[3])
    xp = _padded(x, p, hp, wp).reshape(n, g, cg, hp, wp)
    dyg = _group_rows(dy, g)  # (G, Og, N*Ho*Wo)
    dwt = np.empty((g, o // g, cg, kh, kw), dtype=dt)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, dh, sh, ho), _tap(j, dw, sw, wo)
            read = np.ascontiguousarray(xp[:, :, :, rows, cols].transpose(1, 2, 0, 3, 4)).reshape(g, cg, -1)
            dwt[:, :, :, i, j] = np.matmul(dyg, read.transpose(0, 2, 1))
    return dx, dwt.reshape(weight.shape), db


# ---- transposed convolution -----------------------------------------------------------------------
def _deconv_pads(x, weight, dy, s, p, d, g):
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho, wo = dy.shape[2:]
    if dy.shape[1] != weight.shape[1] * g:
        raise ShapeError("dy channels do not match the deconvolution weights", expected=weight.shape[1] * g,
                         got=dy.shape[1])
    # dy padded so that tap (i, j) of input pixel (h, w) reads dy at h*s - pt + i*d (zero outside)
    hp = max(p[0] + ho, (kh - 1) * d[0] + s[0] * (h - 1) + 1)
    wp = max(p[1] + wo, (kw - 1) * d[1] + s[1] * (w - 1) + 1)
    return hp, wp


@ieee
def conv_transpose2d_backward_reference(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, *,
                                        stride: IntPair = 1, pad: int | Sequence[int] = 0,
                                        dilation: IntPair = 1, groups: int = 1,
                                        output_padding: IntPair = 0, bias: bool = True,
                                        need_weight: bool = True) -> Grads:
    """Reference backward of :func:`refnet.kernels.conv_transpose2d` (Caffe Deconvolution,
    Torch SpatialFullConvolution): input pixel ``(h, w)`` wrote ``x * weight[c, o, i, j]`` to output
    ``(h*sh - pt + i*dh, w*sw - pl + j*dw)`` (cropped to the output), so per group and tap
    ``dx[n, c] += sum_o weight[c, o, i, j] * dy_read[n, o]`` and ``dweight[c, o, i, j] = sum x[n, c]
    * dy_read[n, o]`` with ``dy_read`` the (zero-padded) cotangent at those positions. float64.
    ``output_padding`` only grows the output, which ``dy``'s shape already carries."""
    s, p, d, g = _geometry(x, weight, dy, stride, pad, dilation, groups, True)
    x64, w64, dy64 = (np.asarray(a, dtype=np.float64) for a in (x, weight, dy))
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    cig, cog = c // g, weight.shape[1]
    hp, wp = _deconv_pads(x, weight, dy, s, p, d, g)
    dyp = _padded(dy64, p, hp, wp)
    dx = np.zeros_like(x64)
    dwt = np.zeros_like(w64)
    for gi in range(g):
        ci, co = slice(gi * cig, (gi + 1) * cig), slice(gi * cog, (gi + 1) * cog)
        for i in range(kh):
            for j in range(kw):
                read = dyp[:, co, _tap(i, d[0], s[0], h), _tap(j, d[1], s[1], w)]  # (N, Cog, H, W)
                dx[:, ci] += np.einsum("nohw,co->nchw", read, w64[ci, :, i, j])
                if need_weight:
                    dwt[ci, :, i, j] = np.tensordot(x64[:, ci], read, axes=([0, 2, 3], [0, 2, 3]))
    return dx, (dwt if need_weight else None), (dy64.sum(axis=(0, 2, 3)) if bias else None)


@ieee
def conv_transpose2d_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, *, stride: IntPair = 1,
                              pad: int | Sequence[int] = 0, dilation: IntPair = 1, groups: int = 1,
                              output_padding: IntPair = 0, bias: bool = True, need_weight: bool = True) -> Grads:
    """Fast backward of :func:`refnet.kernels.conv_transpose2d` in the input dtype: ``dx`` by the
    fast convolution of ``dy`` (zero-extended to every position a tap reads) with the same weights,
    ``dweight`` by batched matmuls over groups per tap (see the reference)."""
    s, p, d, g = _geometry(x, weight, dy, stride, pad, dilation, groups, True)
    dt = x.dtype
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    cig, cog = c // g, weight.shape[1]
    hp, wp = _deconv_pads(x, weight, dy, s, p, d, g)
    dy = np.ascontiguousarray(dy, dtype=dt)
    wt = np.ascontiguousarray(weight, dtype=dt)
    # dx: the adjoint of the transposed convolution is the convolution with the same weights
    # (read as (Ci, Co/g) conv weights); output_padding rows are never read back, as in the forward
    dx = conv2d(_padded(dy, (0, 0, 0, 0), max(dy.shape[2], hp - p[0]), max(dy.shape[3], wp - p[1])), wt, None,
                stride=s, pad=(p[0], p[1], 0, 0), dilation=d, groups=g)[:, :, :h, :w]
    db = dy.sum(axis=(0, 2, 3), dtype=dt) if bias else None
    if not need_weight:
        return np.ascontiguousarray(dx), None, db
    dyp = _padded(dy, p, hp, wp).reshape(n, g, cog, hp, wp)
    xg = _group_rows(x, g)  # (G, Cig, N*H*W)
    dwt = np.empty((g, cig, cog, kh, kw), dtype=dt)
    for i in range(kh):
        for j in range(kw):
            read = dyp[:, :, :, _tap(i, d[0], s[0], h), _tap(j, d[1], s[1], w)]
            read = np.ascontiguousarray(read.transpose(1, 2, 0, 3, 4)).reshape(g, cog, -1)
            dwt[:, :, :, i, j] = np.matmul(xg, read.transpose(0, 2, 1))
    return np.ascontiguousarray(dx), dwt.reshape(weight.shape), db


# ---- InnerProduct ----------------------------------------------------------------------------------
def _linear_args(x, weight, dy, axis):
    as_float_array(x, "x")
    as_float_array(weight, "weight", 2)
    as_float_array(dy, "dy")
    a = axis + x.ndim if axis < 0 else axis
    m = int(np.prod(x.shape[:a], dtype=np.int64))
    k = x.size // max(m, 1)
    if weight.shape[1] != k or dy.size != m * weight.shape[0]:
        raise ShapeError("linear_backward: x, weight and dy do not fit", expected=f"K = {weight.shape[1]}",
                         got=f"x {x.shape} (axis {axis}), dy {dy.shape}")
    return m, k


@ieee
def linear_backward_reference(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, axis: int = 1,
                              bias: bool = True) -> Grads:
    """Reference backward of InnerProduct ``y = X W^T + b`` (``X``: x flattened from ``axis``):
    ``dX = dY W``, ``dW = dY^T X``, ``db = sum over rows of dY``; float64."""
    m, k = _linear_args(x, weight, dy, axis)
    x2 = np.asarray(x, dtype=np.float64).reshape(m, k)
    dy2 = np.asarray(dy, dtype=np.float64).reshape(m, -1)
    w64 = np.asarray(weight, dtype=np.float64)
    return (dy2 @ w64).reshape(x.shape), dy2.T @ x2, (dy2.sum(axis=0) if bias else None)


@ieee
def linear_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, axis: int = 1,
                    bias: bool = True) -> Grads:
    """Fast backward of InnerProduct in the input dtype (see :func:`linear_backward_reference`)."""
    m, k = _linear_args(x, weight, dy, axis)
    dt = x.dtype
    x2 = x.reshape(m, k)
    dy2 = dy.astype(dt, copy=False).reshape(m, -1)
    wt = weight.astype(dt, copy=False)
    return (dy2 @ wt).reshape(x.shape), dy2.T @ x2, (dy2.sum(axis=0) if bias else None)
