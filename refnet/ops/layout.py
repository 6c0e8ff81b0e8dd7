"""Run and shape functions of `strided_slice`, `gather`, `expand`, `tile`, `depth_to_space`,
`space_to_depth` (kernels: refnet.kernels.layout)."""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.ops.registry import REQUIRED, Attr, attrs, ints, kern, register

_SS = {"starts": Attr(REQUIRED, ints), "stops": Attr(REQUIRED, ints), "steps": Attr(REQUIRED, ints)}


def _ss_shape(node, shapes):
    a = attrs(node)
    shape = tuple(shapes[0])
    if not len(shape) == len(a["starts"]) == len(a["stops"]) == len(a["steps"]):
        raise ShapeError("one start/stop/step per axis", layer=node.name, expected=len(shape), got=len(a["starts"]))
    out = []
    for d, s, e, st in zip(shape, a["starts"], a["stops"], a["steps"]):
        if st == 0 or not (-1 <= s <= d and -1 <= e <= d):
            raise ShapeError("slice bounds outside the axis", layer=node.name, expected=f"within {d}", got=(s, e, st))
        out.append(len(range(s, e, st)))
    return [tuple(out)]


@register("strided_slice", shape=_ss_shape, attrs=_SS)
def _strided_slice(node, xs, p, ctx):
    a = attrs(node)
    return kern("strided_slice", ctx)(xs[0], a["starts"], a["stops"], a["steps"])


def _gather_idx(node):
    a = attrs(node)
    return np.asarray(a["indices"], np.int64).reshape(a["indices_shape"])


def _gather_shape(node, shapes):
    s = tuple(shapes[0])
    ax = attrs(node)["axis"]
    idx = _gather_idx(node)
    if ax >= len(s) or (idx.size and (idx.min() < 0 or idx.max() >= s[ax])):
        raise ShapeError("gather index outside the axis", layer=node.name, expected=s)
    return [s[:ax] + idx.shape + s[ax + 1:]]


@register("gather", shape=_gather_shape,
          attrs={"axis": Attr(REQUIRED, int), "indices": REQUIRED, "indices_shape": Attr(REQUIRED, ints)})
def _gather(node, xs, p, ctx):
    return kern("gather", ctx)(xs[0], _gather_idx(node), attrs(node)["axis"])


def _expand_shape(node, shapes):
    try:
        return [tuple(np.broadcast_shapes(tuple(shapes[0]), attrs(node)["shape"]))]
    except ValueError:
        raise ShapeError("shape does not broadcast", layer=node.name, expected=attrs(node)["shape"],
                         got=tuple(shapes[0])) from None


@register("expand", shape=_expand_shape, attrs={"shape": Attr(REQUIRED, ints)})
def _expand(node, xs, p, ctx):
    return kern("expand", ctx)(xs[0], attrs(node)["shape"])


def _tile_shape(node, shapes):
    reps = attrs(node)["repeats"]
    if len(reps) != len(shapes[0]):
        raise ShapeError("one repeat per axis", layer=node.name, expected=len(shapes[0]), got=len(reps))
    return [tuple(d * r for d, r in zip(shapes[0], reps))]


@register("tile", shape=_tile_shape, attrs={"repeats": Attr(REQUIRED, ints)})
def _tile(node, xs, p, ctx):
    return kern("tile", ctx)(xs[0], attrs(node)["repeats"])


def _d2s_shape(node, shapes):
    s = tuple(shapes[0])
    b = attrs(node)["blocksize"]
    if len(s) != 4 or s[1] % (b * b):
        raise ShapeError("DepthToSpace needs NCHW with C divisible by blocksize^2", layer=node.name, got=s)
    return [(s[0], s[1] // (b * b), s[2] * b, s[3] * b)]


_BLOCK = {"blocksize": Attr(REQUIRED, int), "mode": "DCR"}


@register("depth_to_space", shape=_d2s_shape, attrs=_BLOCK)
def _d2s(node, xs, p, ctx):
    a = attrs(node)
    return kern("depth_to_space", ctx)(xs[0], a["blocksize"], a["mode"])


def _s2d_shape(node, shapes):
    s = tuple(shapes[0])
    b = attrs(node)["blocksize"]
    if len(s) != 4 or s[2] % b or s[3] % b:
        raise ShapeError("SpaceToDepth needs H, W divisible by blocksize", layer=node.name, got=s)
    return [(s[0], s[1] * b * b, s[2] // b, s[3] // b)]


@register("space_to_depth", shape=_s2d_shape, attrs=_BLOCK)
def _s2d(node, xs, p, ctx):
    a = attrs(node)
    return kern("space_to_depth", ctx)(xs[0], a["blocksize"], a["mode"])


def _reshape_to_shape(node, shapes):
    out = attrs(node)["shape"]
    if int(np.prod(out)) != int(np.prod(shapes[0])) or min(out, default=0) < 0:
        raise ShapeError("reshape changes the element count", layer=node.name, expected=tuple(shapes[0]), got=out)
    return [out]


@register("reshape_to", shape=_reshape_to_shape, attrs={"shape": Attr(REQUIRED, ints)})
def _reshape_to(node, xs, p, ctx):
    return kern("reshape_to", ctx)(xs[0], attrs(node)["shape"])
