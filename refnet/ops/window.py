"""Run and shape functions of `pool_nd` and `max_unpool_nd` (kernels: refnet.kernels.window)."""

from __future__ import annotations

import math

from refnet.errors import ShapeError
from refnet.ops.core import kern
from refnet.ops.registry import register


def _pool_shape(node, shapes):
    s = tuple(shapes[0])
    a = node.attrs
    k = len(a["kernel"])
    if len(s) != k + 2:
        raise ShapeError(f"pooling over {k} spatial axes needs rank {k + 2}", layer=node.name, got=s)
    out = s[:2] + tuple(a["out"])
    return [out] * len(node.outputs)


@register("pool_nd", shape=_pool_shape)
def _pool_nd(node, xs, p, ctx):
    a = node.attrs
    res = kern("pool_nd", ctx)(xs[0], a["mode"], a["kernel"], a["strides"], a["dilations"], a["pads"], a["out"],
                               count_include_pad=bool(a.get("count_include_pad")), p=int(a.get("p", 2)),
                               storage_order=int(a.get("storage_order", 0)), with_indices=len(node.outputs) > 1)
    if isinstance(res, tuple):
        return [res[0], res[1].astype(xs[0].dtype)]
    return res


def _unpool_shape(node, shapes):
    ind = tuple(node.params["indices"].shape) if "indices" in node.params else tuple(shapes[1])
    if math.prod(ind) != math.prod(shapes[0]):
        raise ShapeError("indices must match x", layer=node.name, expected=tuple(shapes[0]), got=ind)
    return [tuple(node.attrs["out"])]


@register("max_unpool_nd", shape=_unpool_shape)
def _max_unpool_nd(node, xs, p, ctx):
    ind = p["indices"] if "indices" in p else xs[1]
    return kern("max_unpool_nd", ctx)(xs[0], ind.reshape(xs[0].shape), node.attrs["out"])
