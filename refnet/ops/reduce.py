"""Run and shape functions of `reduce`, `arg_reduce`, `topk`, `hardmax` (kernels: refnet.kernels.reduce).
Index outputs are returned in the run dtype (exact for indices below 2**24 in float32)."""

from __future__ import annotations

from refnet.errors import ShapeError
from refnet.ops.registry import DYN, REQUIRED, Attr, attrs, ints, kern, register, same_shape


def _reduced(node, shape, axes, keepdims):
    for a in axes:
        if not 0 <= a < len(shape):
            raise ShapeError(f"axis {a} out of range", layer=node.name, got=shape)
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


def _reduce_shape(node, shapes):
    a = attrs(node)
    return [_reduced(node, tuple(shapes[0]), a["axes"], a["keepdims"])]


@register("reduce", shape=_reduce_shape,
          attrs={"kind": REQUIRED, "axes": Attr(REQUIRED, ints), "keepdims": REQUIRED})
def _reduce(node, xs, p, ctx):
    a = attrs(node)
    return kern("reduce", ctx)(xs[0], a["kind"], a["axes"], a["keepdims"])


def _arg_reduce_shape(node, shapes):
    a = attrs(node)
    return [_reduced(node, tuple(shapes[0]), (a["axis"],), a["keepdims"])]


@register("arg_reduce", shape=_arg_reduce_shape,
          attrs={"kind": REQUIRED, "axis": REQUIRED, "keepdims": REQUIRED, "select_last_index": False})
def _arg_reduce(node, xs, p, ctx):
    a = attrs(node)
    return kern("arg_reduce", ctx)(xs[0], a["kind"], a["axis"], a["keepdims"],
                                   a["select_last_index"]).astype(xs[0].dtype)


def _topk_shape(node, shapes):
    s = list(shapes[0])
    a = attrs(node)
    s[a["axis"]] = a["k"]
    return [tuple(s), tuple(s)]


@register("topk", shape=_topk_shape,
          attrs={"k": REQUIRED, "axis": REQUIRED, "largest": REQUIRED, "sorted": REQUIRED})
def _topk(node, xs, p, ctx):
    a = attrs(node)
    v, i = kern("topk", ctx)(xs[0], a["k"], a["axis"], a["largest"], a["sorted"])
    return [v, i.astype(xs[0].dtype)]


@register("hardmax", shape=same_shape, attrs={"axis": Attr(REQUIRED, int)})
def _hardmax(node, xs, p, ctx):
    return kern("hardmax", ctx)(xs[0], attrs(node)["axis"])


def _topk_dyn_shape(node, shapes):
    s = list(shapes[0])
    s[attrs(node)["axis"]] = DYN
    return [tuple(s), tuple(s)]


@register("topk_dyn", shape=_topk_dyn_shape, attrs={"axis": REQUIRED, "largest": REQUIRED, "sorted": REQUIRED},
          kernel="topk")
def _topk_dyn(node, xs, p, ctx):
    """ONNX TopK with k computed at run time (input 1, e.g. from the size of NonMaxSuppression's
    output): as `topk`, the output's axis known at run time only."""
    a = attrs(node)
    k = int(xs[1].reshape(-1)[0])
    if not 0 <= k <= xs[0].shape[a["axis"]]:
        raise ShapeError(f"k = {k} for an axis of size {xs[0].shape[a['axis']]}", layer=node.name)
    v, i = kern("topk", ctx)(xs[0], k, a["axis"], a["largest"], a["sorted"])
    return [v, i.astype(xs[0].dtype)]
