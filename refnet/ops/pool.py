"""``max_pool``, ``avg_pool``, ``max_unpool`` (kernels: refnet.kernels.pool): specs, pooling
geometry, MAC rule and the float32 planners."""

from __future__ import annotations

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.ops.registry import Attr, attrs, kern, need_ndim, numel, opt_pair, pad4, pair, prepares, register

POOL_ATTRS = {"kernel": Attr(1, pair), "stride": Attr(None, opt_pair), "pad": Attr(0, pad4),
              "ceil_mode": Attr(True, bool), "global_pooling": Attr(False, bool)}


def pool_geometry(node, shape):
    """``(kernel, stride, pad4, output shape)`` of a 2-D pooling node on an NCHW ``shape``
    (stride defaults to the kernel; global pooling covers the whole plane)."""
    a = attrs(node)
    n, c, h, w = shape
    if a["global_pooling"]:
        return (h, w), (1, 1), (0, 0, 0, 0), (n, c, 1, 1)
    kh, kw = a["kernel"]
    sh, sw = a["stride"] or (kh, kw)
    pt, pl, pb, pr = a["pad"]
    ceil = a["ceil_mode"]
    if kh > h + pt + pb or kw > w + pl + pr:
        raise ShapeError("pooling window larger than the padded input", layer=node.name,
                         expected=f"<= {(h + pt + pb, w + pl + pr)}", got=(kh, kw))
    ho = K.pool_output_size(h, kh, sh, pt, pb, ceil)
    wo = K.pool_output_size(w, kw, sw, pl, pr, ceil)
    return (kh, kw), (sh, sw), (pt, pl, pb, pr), (n, c, ho, wo)


def _pool_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    out = pool_geometry(node, tuple(shapes[0]))[3]
    return [out] * len(node.outputs)


@register("max_pool", shape=_pool_shape, attrs=POOL_ATTRS, fresh=True,
          doc="max pooling (global: global_max_pool2d); a second output holds the argmax indices")
def _max_pool(node, xs, p, ctx):
    x = xs[0]
    want_idx = len(node.outputs) > 1
    if attrs(node)["global_pooling"] and not want_idx:
        return kern("global_max_pool2d", ctx)(x)
    k, s, pad, _ = pool_geometry(node, x.shape)
    res = kern("max_pool", ctx)(x, k, s, pad, ceil_mode=attrs(node)["ceil_mode"], return_indices=want_idx)
    return list(res) if want_idx else res


def avg_pool_macs(node, ins, outs) -> int:
    """Average pooling: one add per window element of every output (global: every input element)."""
    a = attrs(node)
    if a["global_pooling"]:
        return numel(ins[0])
    kh, kw = a["kernel"]
    return numel(outs[0]) * int(kh) * int(kw)


@register("avg_pool", shape=_pool_shape, attrs={**POOL_ATTRS, "divisor": "padded"},
          macs=avg_pool_macs, fresh=True, doc="average pooling (global: global_avg_pool2d)")
def _avg_pool(node, xs, p, ctx):
    x = xs[0]
    a = attrs(node)
    if a["global_pooling"]:
        return kern("global_avg_pool2d", ctx)(x)
    k, s, pad, _ = pool_geometry(node, x.shape)
    return kern("avg_pool", ctx)(x, k, s, pad, ceil_mode=a["ceil_mode"], divisor=a["divisor"])


def _unpool_hw(node, shapes):
    if len(shapes) > 2:
        return tuple(shapes[2][2:4])
    a = attrs(node)
    if a["out_hw"]:
        return tuple(a["out_hw"])
    kh, kw = a["kernel"]
    sh, sw = a["stride"] or (kh, kw)
    pt, pl, pb, pr = a["pad"]
    h, w = shapes[0][2:4]
    return ((h - 1) * sh - pt - pb + kh, (w - 1) * sw - pl - pr + kw)


def _unpool_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    if tuple(shapes[1]) != tuple(shapes[0]):
        raise ShapeError("unpooling indices must have the input's shape", layer=node.name,
                         expected=tuple(shapes[0]), got=tuple(shapes[1]))
    n, c = shapes[0][:2]
    return [(n, c) + _unpool_hw(node, shapes)]


@register("max_unpool", shape=_unpool_shape,
          attrs={"kernel": Attr(1, pair), "stride": Attr(None, opt_pair), "pad": Attr(0, pad4), "out_hw": None},
          fresh=True)
def _max_unpool(node, xs, p, ctx):
    hw = _unpool_hw(node, [x.shape for x in xs])
    return kern("max_unpool", ctx)(xs[0], xs[1], hw)


@prepares("max_pool")
def _max_pool_prepare(node, p, shapes, ctx):
    want_idx = len(node.outputs) > 1
    if attrs(node)["global_pooling"] and not want_idx:
        return K.global_max_pool2d, False
    k, s, pad, _ = pool_geometry(node, tuple(shapes[0]))
    ceil = attrs(node)["ceil_mode"]
    pool = K.max_pool
    if want_idx:
        return (lambda x: list(pool(x, k, s, pad, ceil_mode=ceil, return_indices=True))), False
    return (lambda x: pool(x, k, s, pad, ceil_mode=ceil)), False


@prepares("avg_pool")
def _avg_pool_prepare(node, p, shapes, ctx):
    a = attrs(node)
    if a["global_pooling"]:
        return K.global_avg_pool2d, False
    k, s, pad, _ = pool_geometry(node, tuple(shapes[0]))
    ceil, div = a["ceil_mode"], a["divisor"]
    pool = K.avg_pool
    return (lambda x: pool(x, k, s, pad, ceil_mode=ceil, divisor=div)), False


__all__ = ["pool_geometry", "avg_pool_macs", "POOL_ATTRS"]
