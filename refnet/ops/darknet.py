"""Darknet-specific IR ops: the YOLO heads and the layers whose Darknet rule has no generic op.

- ``region`` x -> y: YOLOv2 head on the NHWC (permuted) conv output; attrs ``anchors`` (grid
  units), ``classes``, ``coords`` (4), ``num``, ``softmax``, ``thresh``, ``nms_threshold``,
  ``classfix``; y is cv2's RegionLayer output (H*W*num, 5+classes), batch axis kept when N > 1.
- ``yolo`` x, image -> y: YOLOv3/v4 head; attrs ``anchors`` (the masked ones, pixels),
  ``classes``, ``thresh``, ``nms_threshold``, ``scale_x_y``, ``new_coords``; sizes are divided by
  the second input's H, W (cv2 feeds the network input, Darknet uses the network size).
- ``shortcut`` x, a1..an -> y: Darknet's residual add (pjreddie shortcut_cpu / cv2 Eltwise
  "input_0_truncate"): y = alpha*x, then beta*a_i added over the channels both have; y has x's shape.
- ``route_group`` x -> y: channel group ``group_id`` of ``groups`` equal groups (Darknet route
  groups/group_id, cv2 Slice).
- ``darknet_softmax`` x -> y: softmax over each of ``groups`` contiguous chunks of the flattened
  C*H*W values of a sample, inputs divided by ``temperature`` (Darknet softmax_cpu).
"""

from __future__ import annotations

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.kernels.yolo import region, region_reference, yolo, yolo_reference
from refnet.ops.registry import REQUIRED, Attr, attrs, eltwise_macs, kern, need_ndim, register, same_shape

__all__: list[str] = []


def _head_rows(node, shape, anchors: int, classes: int) -> tuple[int, ...]:
    need_ndim(node, shape, 4, "input (NHWC)")
    n, h, w, c = shape
    cell = 5 + classes
    if c != anchors * cell:
        raise ShapeError("head input must have anchors * (5 + classes) channels last", layer=node.name,
                         expected=f"(N, H, W, {anchors * cell})", got=tuple(shape))
    return (h * w * anchors, cell) if n == 1 else (n, h * w * anchors, cell)


def _region_shape(node, shapes):
    a = attrs(node)
    return [_head_rows(node, shapes[0], len(a["anchors"]) // 2, int(a["classes"]))]


def _squeeze(y: np.ndarray) -> np.ndarray:
    return y[0] if y.shape[0] == 1 else y


_HEAD = {"anchors": REQUIRED, "classes": Attr(REQUIRED, int), "thresh": Attr(0.0, float),
         "nms_threshold": Attr(0.0, float)}


@register("region", shape=_region_shape,
          attrs={**_HEAD, "softmax": Attr(True, bool), "classfix": Attr(0, int), "coords": 4, "num": None})
def _region(node, xs, p, ctx):
    a = attrs(node)
    fn = region if ctx.fast else region_reference
    return _squeeze(fn(xs[0], a["anchors"], a["classes"], softmax=a["softmax"], thresh=a["thresh"],
                       nms_threshold=a["nms_threshold"], classfix=a["classfix"]))


@register("yolo", shape=_region_shape,
          attrs={**_HEAD, "scale_x_y": Attr(1.0, float), "new_coords": Attr(False, bool)})
def _yolo(node, xs, p, ctx):
    a = attrs(node)
    img = xs[1] if len(xs) > 1 else None
    if img is None or img.ndim != 4:
        raise ShapeError("yolo needs the network input as its second input", layer=node.name,
                         expected="x, image (N, C, H, W)", got=[x.shape for x in xs])
    fn = yolo if ctx.fast else yolo_reference
    return _squeeze(fn(xs[0], a["anchors"], a["classes"], norm_hw=(img.shape[2], img.shape[3]),
                       thresh=a["thresh"], nms_threshold=a["nms_threshold"], scale_x_y=a["scale_x_y"],
                       new_coords=a["new_coords"]))


def _shortcut_shape(node, shapes):
    ref = tuple(shapes[0])
    if len(ref) < 2:
        raise ShapeError("shortcut input must have a channel axis", layer=node.name, got=ref)
    for s in shapes[1:]:
        s = tuple(s)
        if len(s) != len(ref) or s[0] != ref[0] or s[2:] != ref[2:]:
            raise ShapeError("shortcut inputs must agree in batch and spatial size (channels may differ)",
                             layer=node.name, expected=ref, got=s)
    return [ref]


@register("shortcut", shape=_shortcut_shape, attrs={"alpha": Attr(1.0, float), "beta": Attr(1.0, float)},
          macs=eltwise_macs)
def _shortcut(node, xs, p, ctx):
    a = attrs(node)
    return kern("shortcut", ctx)(xs[0], xs[1:], a["alpha"], a["beta"])


def _group_bounds(node, c: int) -> tuple[int, int]:
    g, gid = attrs(node)["groups"], attrs(node)["group_id"]
    if g < 1 or c % g or not 0 <= gid < g:
        raise ShapeError(f"cannot take group {gid} of {g} from {c} channels", layer=node.name,
                         expected=f"channels divisible by groups, 0 <= group_id < {g}", got=c)
    size = c // g
    return gid * size, (gid + 1) * size


def _route_group_shape(node, shapes):
    s = tuple(shapes[0])
    if len(s) < 2:
        raise ShapeError("route_group input must have a channel axis", layer=node.name, got=s)
    lo, hi = _group_bounds(node, s[1])
    return [s[:1] + (hi - lo,) + s[2:]]


@register("route_group", shape=_route_group_shape, attrs={"groups": Attr(1, int), "group_id": Attr(0, int)},
          kernel=None, no_kernel="a channel slice")
def _route_group(node, xs, p, ctx):
    lo, hi = _group_bounds(node, xs[0].shape[1])
    return np.ascontiguousarray(xs[0][:, lo:hi])


def _dsoftmax_shape(node, shapes):
    s = tuple(shapes[0])
    size = int(np.prod(s[1:])) if len(s) > 1 else 1
    g = attrs(node)["groups"]
    if g < 1 or size % g:
        raise ShapeError(f"{size} values per sample cannot form {g} softmax groups", layer=node.name, got=s)
    return same_shape(node, shapes)


@register("darknet_softmax", shape=_dsoftmax_shape, attrs={"groups": Attr(1, int), "temperature": Attr(1.0, float)},
          kernel="softmax", doc="softmax over groups of the flattened C*H*W values, inputs / temperature")
def _darknet_softmax(node, xs, p, ctx):
    x = xs[0]
    a = attrs(node)
    g, t = a["groups"], a["temperature"]
    z = x.reshape(x.shape[0], g, -1)
    if t != 1.0:
        z = z / x.dtype.type(t)
    fn = K.softmax if ctx.fast else K.softmax_reference
    return fn(np.ascontiguousarray(z), axis=2).reshape(x.shape)
