"""Vector-Jacobian rules of the IR ops: how a cotangent goes back through one node.

Each rule, registered with :func:`vjp`, is called as ``rule(node, xs, ys, dys, p, fast, want)``:
``xs`` the node's forward inputs, ``ys`` its forward outputs, ``dys`` one cotangent per output
(None where nothing flows back), ``p`` its params in the run dtype, ``fast`` True for the
float32 path (``<op>_backward`` kernels) and False for float64 (``<op>_backward_reference``);
``want`` False when nobody asked for this node's parameter gradients (a rule may skip them).
It returns ``(dxs, dparams)``: one cotangent (or None: no gradient, e.g. argmax indices or a
shape-only input) per input and ``{param role: gradient}``. Attribute defaults are read with
the op spec (:func:`refnet.ops.registry.attrs`) and geometry with the forward op's own
helpers (refnet/ops/<family>.py), so both directions share one rule.
Ops without a rule fail by name (:func:`get`) with UnsupportedLayerError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from refnet import kernels as K
from refnet.errors import UnsupportedLayerError
from refnet.ops import registry
from refnet.ops.activation import power_scale_shift
from refnet.ops.norm import bcast
from refnet.ops.pool import pool_geometry
from refnet.ops.registry import Ctx, attrs, axis_of
from refnet.ops.tensor import permute_order

Rule = Callable[..., tuple[list[Any], dict[str, np.ndarray]]]
VJPS: dict[str, Rule] = {}

# ops whose outputs do not depend on the input values (only on shapes): no gradient flows
NO_GRADIENT = frozenset({"prior_box"})


def vjp(*ops: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the backward rule of ``ops``."""

    def deco(fn: Rule) -> Rule:
        for op in ops:
            if op in VJPS:
                raise RuntimeError(f"op {op!r} has two backward rules")
            VJPS[op] = fn
        return fn

    return deco


def get(op: str, layer: str) -> Rule:
    """The backward rule of ``op``; UnsupportedLayerError naming the layer and listing the ops
    that have one otherwise."""
    rule = VJPS.get(op)
    if rule is None:
        raise UnsupportedLayerError(layer, op, sorted(VJPS),
                                    detail="no backward rule: gradients cannot flow through this op")
    return rule


def supported_ops() -> list[str]:
    return sorted(VJPS)


def _k(name: str, fast: bool):
    return getattr(K, name + "_backward" if fast else name + "_backward_reference")


def _d0(dys, ys) -> np.ndarray:
    """The cotangent of output 0 (zeros when only another output has one)."""
    return dys[0] if dys[0] is not None else np.zeros_like(ys[0])


# ---- pass-through ----------------------------------------------------------------------------------
@vjp("identity")
def _identity(node, xs, ys, dys, p, fast, want=True):
    return [_d0(dys, ys)], {}


@vjp("split")
def _split(node, xs, ys, dys, p, fast, want=True):
    got = [d for d in dys if d is not None]
    total = got[0].copy()
    for d in got[1:]:
        total += d
    return [total], {}


@vjp(*NO_GRADIENT)
def _no_gradient(node, xs, ys, dys, p, fast, want=True):
    return [None] * len(xs), {}


# ---- convolution / InnerProduct -------------------------------------------------------------------------
def _conv_geom(node) -> dict:
    a = attrs(node)
    return dict(stride=a["stride"], pad=a["pad"], dilation=a["dilation"], groups=a["groups"])


def _wb(dw, db, p) -> dict[str, np.ndarray]:
    out = {"weight": dw.reshape(p["weight"].shape)}
    if db is not None:
        out["bias"] = db.reshape(p["bias"].shape)
    return out


@vjp("conv")
def _conv(node, xs, ys, dys, p, fast, want=True):
    dx, dw, db = _k("conv2d", fast)(xs[0], p["weight"], _d0(dys, ys), bias="bias" in p, need_weight=want,
                                    **_conv_geom(node))
    return [dx], (_wb(dw, db, p) if want else {})


@vjp("deconv")
def _deconv(node, xs, ys, dys, p, fast, want=True):
    dx, dw, db = _k("conv_transpose2d", fast)(
        xs[0], p["weight"], _d0(dys, ys), bias="bias" in p, need_weight=want,
        output_padding=attrs(node)["output_padding"], **_conv_geom(node))
    return [dx], (_wb(dw, db, p) if want else {})


@vjp("linear")
def _linear(node, xs, ys, dys, p, fast, want=True):
    dx, dw, db = _k("linear", fast)(xs[0], p["weight"], _d0(dys, ys), axis=attrs(node)["axis"],
                                    bias="bias" in p)
    return [dx], _wb(dw, db, p)


# ---- pooling -------------------------------------------------------------------------------------------
@vjp("max_pool")
def _max_pool(node, xs, ys, dys, p, fast, want=True):
    x, dy = xs[0], _d0(dys, ys)
    if attrs(node)["global_pooling"] and len(node.outputs) == 1:
        return [_k("global_max_pool2d", fast)(x, dy)], {}
    k, s, pad, _ = pool_geometry(node, x.shape)
    ceil = attrs(node)["ceil_mode"]
    return [_k("max_pool", fast)(x, dy, k, s, pad, ceil_mode=ceil)], {}  # the indices output: none


@vjp("avg_pool")
def _avg_pool(node, xs, ys, dys, p, fast, want=True):
    x, dy = xs[0], _d0(dys, ys)
    a = attrs(node)
    if a["global_pooling"]:
        return [_k("global_avg_pool2d", fast)(x, dy)], {}
    k, s, pad, _ = pool_geometry(node, x.shape)
    return [_k("avg_pool", fast)(x, dy, k, s, pad, ceil_mode=a["ceil_mode"], divisor=a["divisor"])], {}


@vjp("max_unpool")
def _max_unpool(node, xs, ys, dys, p, fast, want=True):
    return [_k("max_unpool", fast)(xs[1], _d0(dys, ys))] + [None] * (len(xs) - 1), {}


# ---- activations ---------------------------------------------------------------------------------------
@vjp("relu")
def _relu(node, xs, ys, dys, p, fast, want=True):
    return [_k("relu", fast)(xs[0], _d0(dys, ys), attrs(node)["negative_slope"])], {}


@vjp("clip")
def _clip(node, xs, ys, dys, p, fast, want=True):
    a = attrs(node)
    return [_k("clip", fast)(xs[0], _d0(dys, ys), a["min"], a["max"])], {}


@vjp("prelu")
def _prelu(node, xs, ys, dys, p, fast, want=True):
    dx, ds = _k("prelu", fast)(xs[0], p["slope"].reshape(-1), _d0(dys, ys))
    return [dx], {"slope": ds.reshape(p["slope"].shape)}


@vjp("elu")
def _elu(node, xs, ys, dys, p, fast, want=True):
    return [_k("elu", fast)(xs[0], _d0(dys, ys), attrs(node)["alpha"])], {}


def _smooth(op: str, kernel: str) -> None:
    def rule(node, xs, ys, dys, p, fast, want=True):
        if fast:
            return [getattr(K, kernel + "_backward")(xs[0], _d0(dys, ys), y=ys[0])], {}
        return [getattr(K, kernel + "_backward_reference")(xs[0], _d0(dys, ys))], {}

    vjp(op)(rule)


_smooth("sigmoid", "sigmoid")
_smooth("tanh", "tanh")


@vjp("abs")
def _abs(node, xs, ys, dys, p, fast, want=True):
    return [_k("abs", fast)(xs[0], _d0(dys, ys))], {}


@vjp("power", "sqrt", "square")
def _power(node, xs, ys, dys, p, fast, want=True):
    pss = {"sqrt": (0.5, 1.0, 0.0), "square": (2.0, 1.0, 0.0)}.get(node.op) or power_scale_shift(node)
    return [_k("power", fast)(xs[0], _d0(dys, ys), *pss)], {}


@vjp("softmax")
def _softmax(node, xs, ys, dys, p, fast, want=True):
    axis = attrs(node)["axis"]
    if fast:
        return [K.softmax_backward(xs[0], _d0(dys, ys), axis, y=ys[0])], {}
    return [K.softmax_backward_reference(xs[0], _d0(dys, ys), axis)], {}


@vjp("log_softmax")
def _log_softmax(node, xs, ys, dys, p, fast, want=True):
    return [_k("log_softmax", fast)(xs[0], _d0(dys, ys), attrs(node)["axis"])], {}


@vjp("darknet_softmax")
def _darknet_softmax(node, xs, ys, dys, p, fast, want=True):
    x = xs[0]
    a = attrs(node)
    g, t = a["groups"], a["temperature"]
    z = np.ascontiguousarray(x.reshape(x.shape[0], g, -1) / x.dtype.type(t))
    dz = _k("softmax", fast)(z, np.ascontiguousarray(_d0(dys, ys).reshape(z.shape)), 2)
    return [(dz / x.dtype.type(t)).reshape(x.shape)], {}


# ---- normalisation -------------------------------------------------------------------------------------
@vjp("batch_norm")
def _batch_norm(node, xs, ys, dys, p, fast, want=True):
    w = p.get("weight")
    g = _k("batch_norm", fast)(xs[0], p["mean"], p["var"], None if w is None else w.reshape(-1), _d0(dys, ys),
                               eps=attrs(node)["eps"])
    dparams = {k: g[k].reshape(p[k].shape) for k in ("mean", "var", "weight", "bias") if k in p}
    return [g["x"]], dparams


def _scale_param(node, xs, p):
    """The forward's scale operand: the param or the second input (reshaped as the forward does),
    a (1,)-shaped one expanded over its axis."""
    x = xs[0]
    axis = axis_of(node, attrs(node)["axis"], x.ndim)
    w = xs[1] if len(xs) > 1 else p["weight"]
    span = x.shape[axis:axis + w.ndim]
    if len(xs) > 1 and w.size == int(np.prod(span)):
        w = w.reshape(span)
    return axis, bcast(w, x, axis)


def _fold_to(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A gradient of a broadcast (1,)-shaped parameter summed back to its shape."""
    return g.reshape(like.shape) if g.size == like.size else np.array(g.sum(), dtype=g.dtype).reshape(like.shape)


@vjp("scale")
def _scale(node, xs, ys, dys, p, fast, want=True):
    axis, full = _scale_param(node, xs, p)
    has_bias = "bias" in p
    dx, dw, db = _k("scale", fast)(xs[0], full, _d0(dys, ys), axis=axis, bias=has_bias)
    dparams: dict[str, np.ndarray] = {}
    if has_bias:
        dparams["bias"] = _fold_to(db, p["bias"])
    if len(xs) > 1:
        return [dx, _fold_to(dw, xs[1])], dparams
    dparams["weight"] = _fold_to(dw, p["weight"])
    return [dx], dparams


@vjp("bias")
def _bias(node, xs, ys, dys, p, fast, want=True):
    x = xs[0]
    axis = axis_of(node, attrs(node)["axis"], x.ndim)
    b = xs[1] if len(xs) > 1 else p["bias"]
    full = bcast(b, x, axis)
    dx, db = _k("bias", fast)(_d0(dys, ys), full.shape, axis=axis)
    if len(xs) > 1:
        return [dx, _fold_to(db, xs[1])], {}
    return [dx], {"bias": _fold_to(db, p["bias"])}


@vjp("lrn")
def _lrn(node, xs, ys, dys, p, fast, want=True):
    a = attrs(node)
    return [_k("lrn", fast)(xs[0], _d0(dys, ys), size=a["size"], alpha=a["alpha"], beta=a["beta"], k=a["k"],
                            region=a["region"])], {}


@vjp("normalize")
def _normalize(node, xs, ys, dys, p, fast, want=True):
    a = attrs(node)
    scale = p.get("scale")
    dx, ds = _k("l2_normalize", fast)(xs[0], None if scale is None else scale.reshape(-1), _d0(dys, ys),
                                      across_spatial=a["across_spatial"], channel_shared=a["channel_shared"],
                                      eps=a["eps"])
    return [dx], ({} if scale is None else {"scale": ds.reshape(scale.shape)})


# ---- tensor ops ---------------------------------------------------------------------------------------------
@vjp("concat")
def _concat(node, xs, ys, dys, p, fast, want=True):
    a = axis_of(node, attrs(node)["axis"], xs[0].ndim)
    return _k("concat", fast)(_d0(dys, ys), [x.shape[a] for x in xs], a), {}


@vjp("slice")
def _slice(node, xs, ys, dys, p, fast, want=True):
    a = axis_of(node, attrs(node)["axis"], xs[0].ndim)
    return [_k("slice", fast)(list(dys), [y.shape for y in ys], a).astype(xs[0].dtype, copy=False)], {}


@vjp("flatten", "reshape")
def _reshape(node, xs, ys, dys, p, fast, want=True):
    return [_k("reshape", fast)(_d0(dys, ys), xs[0].shape)], {}


@vjp("permute")
def _permute(node, xs, ys, dys, p, fast, want=True):
    return [_k("permute", fast)(_d0(dys, ys), permute_order(node, xs[0].ndim))], {}


@vjp("eltwise")
def _eltwise(node, xs, ys, dys, p, fast, want=True):
    a = attrs(node)
    return _k("eltwise", fast)(list(xs), _d0(dys, ys), operation=a["operation"], coeffs=a["coeffs"]), {}


@vjp("resize")
def _resize(node, xs, ys, dys, p, fast, want=True):
    a = attrs(node)
    hw = xs[0].shape[2:4]
    if a["mode"] == "nearest":
        dx = _k("resize_nearest", fast)(_d0(dys, ys), hw)
    else:
        dx = _k("resize_bilinear", fast)(_d0(dys, ys), hw, align_corners=a["align_corners"],
                                         half_pixel=a["half_pixel"])
    return [dx] + [None] * (len(xs) - 1), {}


@vjp("shortcut")
def _shortcut(node, xs, ys, dys, p, fast, want=True):
    dy = _d0(dys, ys)
    alpha, beta = attrs(node)["alpha"], attrs(node)["beta"]
    out = [dy * dy.dtype.type(alpha)]
    for a in xs[1:]:
        da = np.zeros_like(a)
        m = min(dy.shape[1], a.shape[1])
        da[:, :m] = dy[:, :m] * dy.dtype.type(beta)
        out.append(da)
    return out, {}


# ops that only move, copy or drop elements: backward by tracing their routing (kernels.routing_backward);
# the second input of crop only gives a shape
ROUTING = ("crop", "pad", "shuffle_channel", "reorg", "route_group", "torch_padding", "torch_pad2d",
           "torch_narrow", "torch_shave", "torch_select", "depth_concat")
_SHAPE_ONLY_TAIL = {"crop": 1}


def _routing_rule(node, xs, ys, dys, p, fast, want=True):
    spec = registry.get(node.op, node.name)
    ctx = Ctx("float64")
    n_live = len(xs) - _SHAPE_ONLY_TAIL.get(node.op, 0)

    def forward(*live):
        return spec.run(node, list(live) + [x.astype(np.float64) for x in xs[n_live:]], {}, ctx)

    dxs = K.routing_backward(forward, [x.shape for x in xs[:n_live]], list(dys), dtype=xs[0].dtype)
    return dxs + [None] * (len(xs) - n_live), {}


vjp(*ROUTING)(_routing_rule)
