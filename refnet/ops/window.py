"""Run and shape functions of `pool_nd` and `max_unpool_nd` (kernels: refnet.kernels.window)."""

from __future__ import annotations

import math

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.ops.registry import REQUIRED, Attr, attrs, kern, prepares, register


def _pool_shape(node, shapes):
    s = tuple(shapes[0])
    a = attrs(node)
    k = len(a["kernel"])
    if len(s) != k + 2:
        raise ShapeError(f"pooling over {k} spatial axes needs rank {k + 2}", layer=node.name, got=s)
    out = s[:2] + tuple(a["out"])
    return [out] * len(node.outputs)


_POOL_ND = {**{k: REQUIRED for k in ("mode", "kernel", "strides", "dilations", "pads", "out")},
            "count_include_pad": Attr(False, bool), "p": Attr(2, int), "storage_order": Attr(0, int)}


@register("pool_nd", shape=_pool_shape, attrs=_POOL_ND)
def _pool_nd(node, xs, p, ctx):
    a = attrs(node)
    res = kern("pool_nd", ctx)(xs[0], a["mode"], a["kernel"], a["strides"], a["dilations"], a["pads"], a["out"],
                               count_include_pad=a["count_include_pad"], p=a["p"],
                               storage_order=a["storage_order"], with_indices=len(node.outputs) > 1)
    if isinstance(res, tuple):
        return [res[0], res[1].astype(xs[0].dtype)]
    return res


@prepares("pool_nd")
def _pool_nd_prepare(node, p, shapes, ctx):
    """The fast kernel writing into the executor's buffer (no array allocated per call)."""
    if len(node.outputs) > 1:
        return None
    a = attrs(node)
    mode, kernel, strides, dilations, pads, size = (a[k] for k in ("mode", "kernel", "strides", "dilations", "pads",
                                                                    "out"))
    kw = dict(count_include_pad=a["count_include_pad"], p=a["p"], storage_order=a["storage_order"])
    return K.pool_nd_step(shapes[0], ctx.dtype, mode, kernel, strides, dilations, pads, size, **kw), True


def _unpool_shape(node, shapes):
    ind = tuple(node.params["indices"].shape) if "indices" in node.params else tuple(shapes[1])
    if math.prod(ind) != math.prod(shapes[0]):
        raise ShapeError("indices must match x", layer=node.name, expected=tuple(shapes[0]), got=ind)
    return [tuple(attrs(node)["out"])]


@register("max_unpool_nd", shape=_unpool_shape, attrs={"out": REQUIRED})
def _max_unpool_nd(node, xs, p, ctx):
    ind = p["indices"] if "indices" in p else xs[1]
    return kern("max_unpool_nd", ctx)(xs[0], ind.reshape(xs[0].shape), attrs(node)["out"])
