"""Run and shape functions of `lrn_onnx`, `lp_norm`, `layer_norm` (kernels: refnet.kernels.normalize)."""

from __future__ import annotations

from refnet.ops.registry import REQUIRED, Attr, attrs, kern, register, same_shape


@register("lrn_onnx", shape=same_shape, attrs={"size": Attr(REQUIRED, int), "alpha": Attr(REQUIRED, float),
                                               "beta": Attr(REQUIRED, float), "bias": Attr(REQUIRED, float)})
def _lrn(node, xs, p, ctx):
    a = attrs(node)
    return kern("lrn_onnx", ctx)(xs[0], a["size"], a["alpha"], a["beta"], a["bias"])


@register("lp_norm", shape=same_shape, attrs={"axis": Attr(REQUIRED, int), "p": Attr(2, int)})
def _lp_norm(node, xs, p, ctx):
    a = attrs(node)
    return kern("lp_norm", ctx)(xs[0], a["axis"], a["p"])


def _ln_shape(node, shapes):
    x = tuple(shapes[0])
    ax = attrs(node)["axis"]
    stat = x[:ax] + (1,) * (len(x) - ax)
    return [x] + [stat] * (len(node.outputs) - 1)


@register("layer_norm", shape=_ln_shape, attrs={"axis": Attr(REQUIRED, int), "eps": Attr(1e-5, float)})
def _layer_norm(node, xs, p, ctx):
    a = attrs(node)
    res = kern("layer_norm", ctx)(xs[0], a["axis"], p["scale"], p.get("bias"), a["eps"],
                                  with_stats=len(node.outputs) > 1)
    return list(res)[:len(node.outputs)] if isinstance(res, tuple) else res
