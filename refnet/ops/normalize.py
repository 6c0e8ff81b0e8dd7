"""Run and shape functions of `lrn_onnx`, `lp_norm`, `layer_norm` (kernels: refnet.kernels.normalize)."""

from __future__ import annotations

from refnet.ops.core import kern
from refnet.ops.registry import register, same_shape


@register("lrn_onnx", shape=same_shape)
def _lrn(node, xs, p, ctx):
    a = node.attrs
    return kern("lrn_onnx", ctx)(xs[0], int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["bias"]))


@register("lp_norm", shape=same_shape)
def _lp_norm(node, xs, p, ctx):
    return kern("lp_norm", ctx)(xs[0], int(node.attrs["axis"]), int(node.attrs.get("p", 2)))


def _ln_shape(node, shapes):
    x = tuple(shapes[0])
    ax = int(node.attrs["axis"])
    stat = x[:ax] + (1,) * (len(x) - ax)
    return [x] + [stat] * (len(node.outputs) - 1)


@register("layer_norm", shape=_ln_shape)
def _layer_norm(node, xs, p, ctx):
    res = kern("layer_norm", ctx)(xs[0], int(node.attrs["axis"]), p["scale"], p.get("bias"),
                                  float(node.attrs.get("eps", 1e-5)), with_stats=len(node.outputs) > 1)
    return list(res)[:len(node.outputs)] if isinstance(res, tuple) else res
