"""Torch7-specific IR ops (nn modules without an equivalent in docs/ops.md).

Written with plain NumPy in the run dtype: they only move or pick elements (padding,
narrowing, concatenation) or are short elementwise formulas, so the float64 reference and
the float32 fast path are the same code. Each follows the Torch7 nn module it is named after.

Ops (module: attrs):

- ``torch_padding`` (nn.Padding): ``dim`` (1-based; + 1 when the input has more dims than
  ``n_input_dim``), ``pad`` (> 0 pads after, < 0 before), ``n_input_dim``, ``value``, ``index``.
- ``torch_pad2d`` (nn.SpatialZeroPadding with negative pads = cropping): ``pads=(t, l, b, r)``.
- ``torch_narrow`` (nn.Narrow): ``dimension`` (1-based, < 0 from the end), ``index`` (1-based),
  ``length`` (< 0: up to ``size + length + 1``).
- ``torch_shave`` (fast-neural-style ShaveImage): ``size`` pixels cropped from each border.
- ``torch_select`` (nn.Parallel's ``input:select(dim, i)``): ``axis``; keeps element 0 of that
  axis of every input and drops the axis; one output per input.
- ``depth_concat`` (nn.DepthConcat): ``axis``; smaller inputs zero-padded, centred at offset
  floor(diff / 2) on the other axes.
- ``lp_normalize`` (nn.Normalize): ``p``, ``eps``; x / (sum |x|^p + eps)^(1/p) over all dims after
  the batch axis (p = inf: max |x| + eps).
- ``upsample_bilinear_ac`` (nn.SpatialUpSamplingBilinear): ``scale`` (out = (in - 1) * scale + 1)
  or ``size=(H, W)``; align-corners bilinear interpolation (THNN).
"""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.ops.core import kern
from refnet.ops.registry import need_ndim, register, same_shape

__all__: list[str] = []


def _axis(node, dim0: int, ndim: int) -> int:
    a = dim0 + ndim if dim0 < 0 else dim0
    if not 0 <= a < ndim:
        raise ShapeError(f"dimension {dim0} out of range for rank {ndim}", layer=node.name)
    return a


# ---- nn.Padding ------------------------------------------------------------------------------
def _padding_geometry(node, shape):
    a = node.attrs
    ndim = len(shape)
    dim = int(a["dim"])
    nid = a.get("n_input_dim")
    if dim > 0 and nid is not None and ndim != int(nid):
        dim += 1
    axis = _axis(node, dim - 1 if dim > 0 else dim, ndim)
    pad = int(a["pad"])
    index = int(a.get("index", 1))
    size = shape[axis]
    # Torch: pad > 0 inserts after position (size - index + 1); pad < 0 before position index
    at = size - index + 1 if pad > 0 else index - 1
    if not 0 <= at <= size:
        raise ShapeError(f"padding index {index} outside the axis of size {size}", layer=node.name)
    return axis, abs(pad), at


def _padding_shape(node, shapes):
    shape = tuple(shapes[0])
    axis, pad, _ = _padding_geometry(node, shape)
    return [shape[:axis] + (shape[axis] + pad,) + shape[axis + 1:]]


@register("torch_padding", shape=_padding_shape)
def _padding(node, xs, p, ctx):
    axis, pad, at = _padding_geometry(node, xs[0].shape)
    return kern("torch_padding", ctx)(xs[0], axis, pad, at, float(node.attrs.get("value", 0.0)))


# ---- nn.SpatialZeroPadding with cropping -------------------------------------------------------
def _pad2d_shape(node, shapes):
    shape = tuple(shapes[0])
    need_ndim(node, shape, (3, 4))
    t, l, b, r = (int(v) for v in node.attrs["pads"])
    h, w = shape[-2] + t + b, shape[-1] + l + r
    if h <= 0 or w <= 0:
        raise ShapeError("padding/cropping leaves an empty image", layer=node.name, got=(h, w))
    return [shape[:-2] + (h, w)]


@register("torch_pad2d", shape=_pad2d_shape)
def _pad2d(node, xs, p, ctx):
    x = xs[0]
    t, l, b, r = (int(v) for v in node.attrs["pads"])
    h, w = x.shape[-2:]
    # crop first (negative pads), then zero-pad (positive pads)
    x = x[..., max(-t, 0):h - max(-b, 0), max(-l, 0):w - max(-r, 0)]
    widths = [(0, 0)] * (x.ndim - 2) + [(max(t, 0), max(b, 0)), (max(l, 0), max(r, 0))]
    return np.pad(x, widths, mode="constant")


# ---- nn.Narrow -------------------------------------------------------------------------------
def _narrow_geometry(node, shape):
    a = node.attrs
    d = int(a["dimension"])
    axis = _axis(node, d - 1 if d > 0 else d, len(shape))
    size = shape[axis]
    index = int(a["index"])
    length = int(a.get("length", 1))
    if length < 0:
        length = size - index + length + 2
    start = index - 1
    if start < 0 or length <= 0 or start + length > size:
        raise ShapeError(f"narrow({d}, {index}, {a.get('length', 1)}) outside an axis of size {size}",
                         layer=node.name, expected=f"1 <= index, index + length - 1 <= {size}",
                         got=(index, length))
    return axis, start, length


def _narrow_shape(node, shapes):
    shape = tuple(shapes[0])
    axis, _, length = _narrow_geometry(node, shape)
    return [shape[:axis] + (length,) + shape[axis + 1:]]


@register("torch_narrow", shape=_narrow_shape)
def _narrow(node, xs, p, ctx):
    axis, start, length = _narrow_geometry(node, xs[0].shape)
    return kern("torch_narrow", ctx)(xs[0], axis, start, length)


# ---- ShaveImage ------------------------------------------------------------------------------
def _shave_shape(node, shapes):
    shape = tuple(shapes[0])
    need_ndim(node, shape, 4)
    s = int(node.attrs["size"])
    h, w = shape[2] - 2 * s, shape[3] - 2 * s
    if s < 0 or h <= 0 or w <= 0:
        raise ShapeError(f"cannot shave {s} pixels from each border", layer=node.name, got=shape)
    return [shape[:2] + (h, w)]


@register("torch_shave", shape=_shave_shape)
def _shave(node, xs, p, ctx):
    x = xs[0]
    s = int(node.attrs["size"])
    return np.ascontiguousarray(x[:, :, s:x.shape[2] - s, s:x.shape[3] - s])


# ---- nn.Parallel: select(dim, 1) of every piece ----------------------------------------------------
def _select_shape(node, shapes):
    out = []
    for s in shapes:
        s = tuple(s)
        axis = _axis(node, int(node.attrs["axis"]), len(s))
        if s[axis] < 1:
            raise ShapeError("cannot select from an empty axis", layer=node.name, got=s)
        out.append(s[:axis] + s[axis + 1:])
    return out


@register("torch_select", shape=_select_shape)
def _select(node, xs, p, ctx):
    out = []
    for x in xs:
        axis = _axis(node, int(node.attrs["axis"]), x.ndim)
        out.append(np.ascontiguousarray(np.take(x, 0, axis=axis)))
    return out


# ---- nn.DepthConcat ------------------------------------------------------------------------------
def _depth_concat_shape(node, shapes):
    ref = tuple(shapes[0])
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(ref))
    out = list(ref)
    out[axis] = 0
    for s in shapes:
        s = tuple(s)
        if len(s) != len(ref):
            raise ShapeError("depth_concat inputs differ in rank", layer=node.name, expected=ref, got=s)
        for d in range(len(s)):
            out[d] = out[d] + s[d] if d == axis else max(out[d], s[d])
    return [tuple(out)]


@register("depth_concat", shape=_depth_concat_shape)
def _depth_concat(node, xs, p, ctx):
    out_shape = _depth_concat_shape(node, [x.shape for x in xs])[0]
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(out_shape))
    y = np.zeros(out_shape, dtype=xs[0].dtype)
    pos = 0
    for x in xs:
        sl = []
        for d in range(x.ndim):
            if d == axis:
                sl.append(slice(pos, pos + x.shape[d]))
            else:
                start = (out_shape[d] - x.shape[d]) // 2
                sl.append(slice(start, start + x.shape[d]))
        y[tuple(sl)] = x
        pos += x.shape[axis]
    return y


# ---- nn.Normalize ----------------------------------------------------------------------------------
@register("lp_normalize", shape=same_shape)
def _lp_normalize(node, xs, p, ctx):
    return kern("lp_normalize", ctx)(xs[0], float(node.attrs.get("p", 2.0)), float(node.attrs.get("eps", 1e-10)))


# ---- nn.SpatialUpSamplingBilinear ----------------------------------------------------------------------
def _up_hw(node, shape) -> tuple[int, int]:
    a = node.attrs
    if a.get("size"):
        return tuple(int(v) for v in a["size"])  # type: ignore[return-value]
    s = int(a["scale"])
    return ((shape[2] - 1) * s + 1, (shape[3] - 1) * s + 1)


def _up_shape(node, shapes):
    shape = tuple(shapes[0])
    need_ndim(node, shape, 4)
    ho, wo = _up_hw(node, shape)
    if ho <= 0 or wo <= 0:
        raise ShapeError("upsampling to an empty size", layer=node.name, got=(ho, wo))
    return [shape[:2] + (ho, wo)]


@register("upsample_bilinear_ac", shape=_up_shape)
def _upsample_bilinear(node, xs, p, ctx):
    # THNN's align-corners bilinear is the resize kernel's align_corners rule
    return kern("resize_bilinear", ctx)(xs[0], _up_hw(node, xs[0].shape), align_corners=True)
