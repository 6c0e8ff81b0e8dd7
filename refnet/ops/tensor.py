"""Tensor ops (kernels: refnet.kernels.tensor): ``identity``, ``split``, ``concat``, ``slice``,
``flatten``, ``reshape``, ``permute``, ``crop``, ``pad``, ``resize``, ``eltwise``,
``shuffle_channel``, ``reorg``; specs, MAC rules and the float32 planners."""

from __future__ import annotations

import math

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.ops.activation import ADD_ACT_ATTRS, add_act_prepare, add_act_run
from refnet.ops.registry import (
    DYN,
    REQUIRED,
    Attr,
    attrs,
    axis_of,
    eltwise_macs,
    int_pairs,
    ints,
    kern,
    need_ndim,
    numel,
    opt_floats,
    prepares,
    register,
    same_shape,
)


# ---- pass-through ---------------------------------------------------------------------------
@register("identity", shape=same_shape, kernel=None, no_kernel="its output is its input", alias=True)
def _identity(node, xs, p, ctx):
    return xs[0]


def _split_shape(node, shapes):
    return [tuple(shapes[0])] * len(node.outputs)


@register("split", shape=_split_shape, kernel=None, no_kernel="every output is its input", alias=True)
def _split(node, xs, p, ctx):
    return [xs[0]] * len(node.outputs)


# ---- concatenation, slicing, reshaping ------------------------------------------------------
_AXIS1 = {"axis": Attr(1, int)}


def _concat_shape(node, shapes):
    ref = tuple(shapes[0])
    axis = axis_of(node, attrs(node)["axis"], len(ref))
    total = 0
    for s in shapes:
        s = tuple(s)
        if len(s) != len(ref) or s[:axis] + s[axis + 1:] != ref[:axis] + ref[axis + 1:]:
            raise ShapeError(f"concat inputs differ outside axis {axis}", layer=node.name,
                             expected=ref, got=s)
        total = DYN if DYN in (total, s[axis]) else total + s[axis]
    return [ref[:axis] + (total,) + ref[axis + 1:]]


@register("concat", shape=_concat_shape, attrs=_AXIS1, fresh=True)
def _concat(node, xs, p, ctx):
    return kern("concat", ctx)(list(xs), axis=attrs(node)["axis"])


def _slice_sizes(node, shape) -> tuple[int, list[int]]:
    a = attrs(node)
    axis = axis_of(node, a["axis"], len(shape))
    dim = shape[axis]
    n = len(node.outputs)
    points = list(a["points"])
    if points:
        if len(points) != n - 1 or points != sorted(points) or points[0] <= 0 or points[-1] >= dim:
            raise ShapeError("slice points do not split the axis into the layer's outputs", layer=node.name,
                             expected=f"{n - 1} increasing points inside (0, {dim})", got=points)
        bounds = [0] + points + [dim]
    else:
        if dim % n:
            raise ShapeError(f"axis of size {dim} cannot be split into {n} equal parts", layer=node.name)
        bounds = [i * dim // n for i in range(n + 1)]
    return axis, [bounds[i + 1] - bounds[i] for i in range(n)]


def _slice_shape(node, shapes):
    shape = tuple(shapes[0])
    axis, sizes = _slice_sizes(node, shape)
    return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]


@register("slice", shape=_slice_shape, attrs={"axis": Attr(1, int), "points": Attr((), ints)})
def _slice(node, xs, p, ctx):
    a = attrs(node)
    return list(kern("slice", ctx)(xs[0], a["axis"], a["points"], n=len(node.outputs)))


@prepares("slice")
def _slice_prepare(node, p, shapes, ctx):
    """Views of the input's spans with the bounds computed once (the split after merged sibling
    convs, refnet.runtime.fusion.merged_conv: ~25 us -> ~2 us per call)."""
    shape = tuple(shapes[0])
    axis, sizes = _slice_sizes(node, shape)
    spans, lo = [], 0
    for n in sizes:
        spans.append((slice(None),) * axis + (slice(lo, lo + n),))
        lo += n

    def slice_views(x):
        return [x[sp] for sp in spans]

    return slice_views, False


def _reshape_to(node, shapes, rule):
    """A step giving ``x.reshape`` to the output shape of the shape ``rule``, computed once (the
    fast kernels' reshape: a view when the layout allows)."""
    out = tuple(rule(node, shapes)[0])

    def reshape_to(x):
        return x.reshape(out)

    return reshape_to, False


_FLATTEN = {"axis": Attr(1, int), "end_axis": Attr(-1, int)}


def _flatten_shape(node, shapes):
    shape = tuple(shapes[0])
    a = attrs(node)
    s = axis_of(node, a["axis"], len(shape))
    e = axis_of(node, a["end_axis"], len(shape))
    return [shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]]


@register("flatten", shape=_flatten_shape, attrs=_FLATTEN)
def _flatten(node, xs, p, ctx):
    a = attrs(node)
    return kern("flatten", ctx)(xs[0], axis=a["axis"], end_axis=a["end_axis"])


_RESHAPE = {"shape": Attr(REQUIRED, ints), "axis": Attr(0, int), "num_axes": Attr(-1, int)}


def _reshape_shape(node, shapes):
    a = attrs(node)
    try:
        return [tuple(K.reshape_output_shape(tuple(shapes[0]), a["shape"], a["axis"], a["num_axes"]))]
    except ShapeError as e:
        raise ShapeError(str(e), layer=node.name) from e


@register("reshape", shape=_reshape_shape, attrs=_RESHAPE)
def _reshape(node, xs, p, ctx):
    a = attrs(node)
    return kern("reshape", ctx)(xs[0], a["shape"], axis=a["axis"], num_axes=a["num_axes"])


@prepares("flatten")
def _flatten_prepare(node, p, shapes, ctx):
    return _reshape_to(node, shapes, _flatten_shape)


@prepares("reshape")
def _reshape_prepare(node, p, shapes, ctx):
    return _reshape_to(node, shapes, _reshape_shape)


def permute_order(node, ndim) -> tuple[int, ...]:
    """The full axis order of a ``permute`` node (Caffe fills the unspecified trailing axes in order)."""
    given = attrs(node)["order"]
    order = list(given) + [i for i in range(ndim) if i not in given]
    if sorted(order) != list(range(ndim)):
        raise ShapeError("permute order is not a permutation of the axes", layer=node.name,
                         expected=f"a permutation of 0..{ndim - 1}", got=given)
    return tuple(order)


@register("permute", shape=lambda n, s: [tuple(s[0][i] for i in permute_order(n, len(s[0])))],
          attrs={"order": Attr((), ints)})
def _permute(node, xs, p, ctx):
    return kern("permute", ctx)(xs[0], permute_order(node, xs[0].ndim))


@prepares("permute")
def _permute_prepare(node, p, shapes, ctx):
    """The fast kernel's transposed copy with the axis order computed once, written into ``out``
    when given: a planned buffer, or the span of the concat that reads the permuted tensor
    (SSD's heads, refnet.runtime.program._concat_into)."""
    order = permute_order(node, len(shapes[0]))

    def permute_step(x, out=None):
        if out is None:
            return np.ascontiguousarray(x.transpose(order))
        np.copyto(out, x.transpose(order))
        return out

    return permute_step, True


def crop_geometry(node, shape, like):
    """``(axis, offsets, output shape)`` of a ``crop`` node cropping ``shape`` to ``like``."""
    a = attrs(node)
    axis = axis_of(node, a["axis"], len(shape))
    offs = list(a["offset"]) or [0]
    n = len(shape) - axis
    if len(offs) == 1:
        offs = offs * n
    if len(offs) != n:
        raise ShapeError("crop needs one offset or one per cropped axis", layer=node.name,
                         expected=n, got=len(offs))
    out = list(shape)
    for i in range(n):
        d = axis + i
        if offs[i] < 0 or offs[i] + like[d] > shape[d]:
            raise ShapeError(f"crop window on axis {d} exceeds the input", layer=node.name,
                             expected=f"offset + {like[d]} <= {shape[d]}", got=offs[i])
        out[d] = like[d]
    return axis, tuple(offs), tuple(out)


@register("crop", shape=lambda n, s: [crop_geometry(n, tuple(s[0]), tuple(s[1]))[2]],
          attrs={"axis": Attr(2, int), "offset": Attr((0,), ints)})
def _crop(node, xs, p, ctx):
    axis, offs, _ = crop_geometry(node, xs[0].shape, xs[1].shape)
    return kern("crop", ctx)(xs[0], xs[1].shape, axis=axis, offset=offs)


def pads_of(node, ndim) -> tuple[tuple[int, int], ...]:
    """The ``(before, after)`` pads of a ``pad`` node, one pair per axis."""
    pads = attrs(node)["pads"]
    if len(pads) != ndim:
        raise ShapeError("pad needs (before, after) for every axis", layer=node.name, expected=ndim,
                         got=len(pads))
    return pads


def _pad_shape(node, shapes):
    shape = tuple(shapes[0])
    pads = pads_of(node, len(shape))
    out = tuple(d + b + a for d, (b, a) in zip(shape, pads))
    if min(out) <= 0:
        raise ShapeError("padding leaves an empty tensor", layer=node.name, got=out)
    if attrs(node)["mode"] == "reflect" and any(b >= d or a >= d for d, (b, a) in zip(shape, pads) if b or a):
        raise ShapeError("reflection padding must be smaller than the input", layer=node.name,
                         expected=f"< {shape}", got=pads)
    return [out]


@register("pad", shape=_pad_shape, attrs={"pads": Attr((), int_pairs), "mode": "constant", "value": Attr(0.0, float)},
          fresh=True)
def _pad(node, xs, p, ctx):
    a = attrs(node)
    return kern("pad", ctx)(xs[0], pads_of(node, xs[0].ndim), mode=a["mode"], value=a["value"])


# ---- resize (Caffe Interp, Upsample, Torch/Darknet nearest) ---------------------------------------
_RESIZE = {"mode": "bilinear", "size": None, "scale": None, "height": Attr(0, int), "width": Attr(0, int),
           "zoom": Attr(1, int), "shrink": Attr(1, int), "pad_beg": Attr(0, int), "pad_end": Attr(0, int),
           "align_corners": Attr(False, bool), "half_pixel": Attr(False, bool)}


def _resize_hw(node, shapes) -> tuple[int, int]:
    a = attrs(node)
    h, w = shapes[0][2:4]
    if len(shapes) > 1:
        return tuple(shapes[1][2:4])
    if a["size"]:
        return tuple(int(v) for v in a["size"])
    if a["scale"]:
        fh, fw = a["scale"]
        return (int(math.floor(h * fh)), int(math.floor(w * fw)))
    return tuple(K.interp_output_size((h, w), height=a["height"], width=a["width"], zoom_factor=a["zoom"],
                                      shrink_factor=a["shrink"], pad_beg=a["pad_beg"], pad_end=a["pad_end"]))


def _resize_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    ho, wo = _resize_hw(node, [tuple(s) for s in shapes])
    if ho <= 0 or wo <= 0:
        raise ShapeError("resize to an empty size", layer=node.name, got=(ho, wo))
    return [tuple(shapes[0][:2]) + (ho, wo)]


def bilinear_macs(node, ins, outs) -> int:
    """Bilinear resize: four taps per output element."""
    return 4 * numel(outs[0])


def resize_macs(node, ins, outs) -> int:
    """Bilinear resize: four taps per output element; nearest neighbour: none."""
    return bilinear_macs(node, ins, outs) if "bilinear" in str(attrs(node)["mode"]) else 0


@register("resize", shape=_resize_shape, attrs=_RESIZE, kernel="resize_bilinear", macs=resize_macs,
          doc="bilinear (or, mode nearest, resize_nearest) resize of the H, W axes")
def _resize(node, xs, p, ctx):
    a = attrs(node)
    hw = _resize_hw(node, [x.shape for x in xs])
    if a["mode"] == "nearest":
        return kern("resize_nearest", ctx)(xs[0], hw)
    return kern("resize_bilinear", ctx)(xs[0], hw, align_corners=a["align_corners"], half_pixel=a["half_pixel"])


# ---- eltwise, channel shuffles ----------------------------------------------------------------------
def _eltwise_shape(node, shapes):
    for s in shapes[1:]:
        if tuple(s) != tuple(shapes[0]):
            raise ShapeError("eltwise inputs differ in shape", layer=node.name, expected=tuple(shapes[0]),
                             got=tuple(s))
    return [tuple(shapes[0])]


@register("eltwise", shape=_eltwise_shape,
          attrs={"operation": "sum", "coeffs": Attr(None, opt_floats), **ADD_ACT_ATTRS},
          macs=eltwise_macs, fresh=True)
def _eltwise(node, xs, p, ctx):
    a = attrs(node)
    if a["activation"] is not None:  # a sum of two fused with its activation (float32 only)
        return add_act_run(node, xs, p, ctx)
    return kern("eltwise", ctx)(list(xs), operation=a["operation"], coeffs=a["coeffs"])


def _shuffle_shape(node, shapes):
    g = attrs(node)["group"]
    if len(shapes[0]) < 2 or g <= 0 or shapes[0][1] % g:
        raise ShapeError("channels not divisible by group", layer=node.name, expected=f"multiple of {g}",
                         got=tuple(shapes[0]))
    return [tuple(shapes[0])]


@register("shuffle_channel", shape=_shuffle_shape, attrs={"group": Attr(1, int)})
def _shuffle(node, xs, p, ctx):
    return kern("shuffle_channel", ctx)(xs[0], attrs(node)["group"])


def _reorg_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    s = attrs(node)["stride"]
    n, c, h, w = shapes[0]
    if s <= 0 or h % s or w % s:
        raise ShapeError(f"reorg stride {s} must divide H and W", layer=node.name, got=tuple(shapes[0]))
    return [(n, c * s * s, h // s, w // s)]


@register("reorg", shape=_reorg_shape, attrs={"stride": Attr(2, int)})
def _reorg(node, xs, p, ctx):
    return kern("reorg", ctx)(xs[0], attrs(node)["stride"])


# ---- float32 step planners: work done once per input shape (an op whose planner would only bind
# arguments has none: the executor calls its run function, which reads the cached attributes) -----
@prepares("eltwise")
def _eltwise_prepare(node, p, shapes, ctx):
    a = attrs(node)
    if a["activation"] is not None:
        return add_act_prepare(node, p, shapes, ctx)
    if a["operation"] != "sum" or a["coeffs"] or len(shapes) < 2:
        return None
    add = np.add

    def eltwise_sum(*xs, out=None):
        out = add(xs[0], xs[1], out=out)
        for x in xs[2:]:
            out += x
        return out

    return eltwise_sum, True


@prepares("pad")
def _pad_prepare(node, p, shapes, ctx):
    pads = pads_of(node, len(shapes[0]))
    if len(shapes[0]) < 2 or any(b or a for b, a in pads[:-2]) or 0 in shapes[0]:
        return None
    a = attrs(node)
    return K.PlanePad(shapes[0], pads[-2], pads[-1], a["mode"], a["value"], ctx.dtype), True


__all__ = ["permute_order", "crop_geometry", "pads_of", "resize_macs", "bilinear_macs"]
