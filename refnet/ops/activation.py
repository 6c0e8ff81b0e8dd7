"""Activations and pointwise formulas (kernels: refnet.kernels.activation): ``relu``, ``clip``,
``prelu``, ``elu``, ``sigmoid``, ``tanh``, ``bnll``, ``abs``, ``mish``, ``swish``, ``sqrt``,
``square``, ``power``, ``exp``, ``log``; specs and the float32 planners."""

from __future__ import annotations

from refnet.errors import ShapeError
from refnet.ops.registry import Attr, attrs, elementwise_macs, kern, prepares, register, same_shape


def per_channel_param_shape(param: str):
    """Shape function of an elementwise op with a per-channel (or one shared) parameter."""

    def shape(node, shapes):
        x = tuple(shapes[0])
        v = node.params.get(param)
        if v is not None and v.size != 1 and (len(x) < 2 or v.size != x[1]):
            raise ShapeError(f"{param} has {v.size} values for {x[1] if len(x) > 1 else '?'} channels",
                             layer=node.name, expected=f"1 or {x[1] if len(x) > 1 else '?'}", got=v.size)
        return [x]

    return shape


# the activation fused into an eltwise sum / add (refnet.runtime.fusion.fuse_add_activation):
# set only by the float32 fusion pass, never by importers; a PReLU's slope is the param "slope"
ADD_ACT_ATTRS = {"activation": None, "negative_slope": Attr(0.0, float)}


def add_act_run(node, xs, p, ctx):
    """``act(xs[0] + xs[1])`` of a fused add node (refnet.kernels.add_act; float32 only)."""
    a = attrs(node)
    act = a["activation"]
    slope = p["slope"].reshape(-1) if act == "prelu" else a["negative_slope"]
    return kern("add_act", ctx)(xs[0], xs[1], act, slope)


def add_act_prepare(node, p, shapes, ctx):
    """The float32 step of an add node (with a fused activation or none) when both inputs have
    one shape (else None: the run function, which broadcasts): one pass into the program's
    buffer (a plain add's fresh array cost its page faults every pass: PP-OCRv4 det's 13 FPN
    adds 2.4-3.0 -> 1.0 ms, loaded machine)."""
    a = attrs(node)
    act = a["activation"]
    if len(shapes) != 2 or tuple(shapes[0]) != tuple(shapes[1]):
        return None
    slope = p["slope"].reshape(-1) if act == "prelu" else a["negative_slope"]
    add_act = kern("add_act", ctx)

    def add_activation(x, y, out=None):
        return add_act(x, y, act, slope, out)

    return add_activation, True


# the exporters' hard-swish (Add, Clip, Mul, Div) with the per-channel Mul / Add after it, as one
# step: made only by the float32 fusion pass (refnet.runtime.fusion.fuse_hard_swish), never by importers
HSWISH_ATTRS = {"k_add": Attr(3.0, float), "lo": Attr(0.0, float), "hi": Attr(6.0, float),
                "k_div": Attr(6.0, float)}


@register("hard_swish_affine", shape=per_channel_param_shape("scale"), attrs=HSWISH_ATTRS, macs=elementwise_macs)
def _hard_swish_affine(node, xs, p, ctx):
    """``((x * clip(x + k_add, lo, hi)) / k_div) [* scale] [+ shift]`` (params ``scale``, ``shift``
    optional, one value or one per channel); float32 fusion only."""
    a = attrs(node)
    return kern("hard_swish_affine", ctx)(xs[0], p.get("scale"), p.get("shift"), a["k_add"], a["lo"], a["hi"],
                                          a["k_div"])


@prepares("hard_swish_affine")
def _hard_swish_affine_prepare(node, p, shapes, ctx):
    """The float32 step writing into the program's buffer."""
    a = attrs(node)
    fn = kern("hard_swish_affine", ctx)
    scale, shift = p.get("scale"), p.get("shift")

    def hard_swish_affine(x, out=None):
        return fn(x, scale, shift, a["k_add"], a["lo"], a["hi"], a["k_div"], out)

    return hard_swish_affine, True


@register("relu", shape=same_shape, attrs={"negative_slope": Attr(0.0, float)}, fresh=True)
def _relu(node, xs, p, ctx):
    return kern("relu", ctx)(xs[0], attrs(node)["negative_slope"])


@register("clip", shape=same_shape, attrs={"min": Attr(0.0, float), "max": Attr(6.0, float)}, fresh=True)
def _clip(node, xs, p, ctx):
    a = attrs(node)
    return kern("clip", ctx)(xs[0], a["min"], a["max"])


@register("prelu", shape=per_channel_param_shape("slope"), macs=elementwise_macs, fresh=True)
def _prelu(node, xs, p, ctx):
    return kern("prelu", ctx)(xs[0], p["slope"].reshape(-1))


@register("elu", shape=same_shape, attrs={"alpha": Attr(1.0, float)}, fresh=True)
def _elu(node, xs, p, ctx):
    return kern("elu", ctx)(xs[0], attrs(node)["alpha"])


def _unary(op: str, fresh: bool) -> None:
    register(op, shape=same_shape, fresh=fresh)(lambda node, xs, p, ctx: kern(op, ctx)(xs[0]))


for _op, _fresh in [("sigmoid", True), ("tanh", True), ("bnll", False), ("abs", False), ("mish", False),
                    ("swish", False)]:
    _unary(_op, _fresh)


@register("sqrt", shape=same_shape, kernel="power", doc="power(x, 0.5)")
def _sqrt(node, xs, p, ctx):
    return kern("power", ctx)(xs[0], 0.5, 1.0, 0.0)


@register("square", shape=same_shape, kernel="power", doc="power(x, 2)")
def _square(node, xs, p, ctx):
    return kern("power", ctx)(xs[0], 2.0, 1.0, 0.0)


def power_scale_shift(node) -> tuple[float, float, float]:
    """``(power or base, scale, shift)`` of a ``power``/``exp``/``log`` node."""
    a = attrs(node)
    return (a["power" if node.op == "power" else "base"], a["scale"], a["shift"])


_SCALE_SHIFT = {"scale": Attr(1.0, float), "shift": Attr(0.0, float)}


@register("power", shape=same_shape, attrs={"power": Attr(1.0, float), **_SCALE_SHIFT}, macs=elementwise_macs,
          fresh=True)
def _power(node, xs, p, ctx):
    return kern("power", ctx)(xs[0], *power_scale_shift(node))


@register("exp", shape=same_shape, attrs={"base": Attr(-1.0, float), **_SCALE_SHIFT})
def _exp(node, xs, p, ctx):
    return kern("exp", ctx)(xs[0], *power_scale_shift(node))


@register("log", shape=same_shape, attrs={"base": Attr(-1.0, float), **_SCALE_SHIFT})
def _log(node, xs, p, ctx):
    return kern("log", ctx)(xs[0], *power_scale_shift(node))


# ---- float32 step planners: arguments bound once per input shape ---------------------------------
__all__ = ["per_channel_param_shape", "power_scale_shift"]
