"""Run and shape functions of `reduce`, `arg_reduce`, `topk`, `hardmax` (kernels: refnet.kernels.reduce).
Index outputs are returned in the run dtype (exact for indices below 2**24 in float32)."""

from __future__ import annotations

from refnet.errors import ShapeError
from refnet.ops.core import kern
from refnet.ops.registry import register, same_shape


def _reduced(node, shape, axes, keepdims):
    for a in axes:
        if not 0 <= a < len(shape):
            raise ShapeError(f"axis {a} out of range", layer=node.name, got=shape)
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


@register("reduce", shape=lambda n, s: [_reduced(n, tuple(s[0]), tuple(n.attrs["axes"]), n.attrs["keepdims"])])
def _reduce(node, xs, p, ctx):
    a = node.attrs
    return kern("reduce", ctx)(xs[0], a["kind"], a["axes"], a["keepdims"])


@register("arg_reduce", shape=lambda n, s: [_reduced(n, tuple(s[0]), (n.attrs["axis"],), n.attrs["keepdims"])])
def _arg_reduce(node, xs, p, ctx):
    a = node.attrs
    return kern("arg_reduce", ctx)(xs[0], a["kind"], a["axis"], a["keepdims"],
                                   a.get("select_last_index", False)).astype(xs[0].dtype)


def _topk_shape(node, shapes):
    s = list(shapes[0])
    s[node.attrs["axis"]] = node.attrs["k"]
    return [tuple(s), tuple(s)]


@register("topk", shape=_topk_shape)
def _topk(node, xs, p, ctx):
    a = node.attrs
    v, i = kern("topk", ctx)(xs[0], a["k"], a["axis"], a["largest"], a["sorted"])
    return [v, i.astype(xs[0].dtype)]


@register("hardmax", shape=same_shape)
def _hardmax(node, xs, p, ctx):
    return kern("hardmax", ctx)(xs[0], int(node.attrs["axis"]))
