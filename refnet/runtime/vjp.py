"""Vector-Jacobian rules of the IR ops: how a cotangent goes back through one node.

Each rule, registered with :func:`vjp`, is called as ``rule(node, xs, ys, dys, p, fast, want)``:
``xs`` the node's forward inputs, ``ys`` its forward outputs, ``dys`` one cotangent per output
(None where nothing flows back), ``p`` its params in the run dtype, ``fast`` True for the
float32 path (``<op>_backward`` kernels) and False for float64 (``<op>_backward_reference``);
``want`` False when nobody asked for this node's parameter gradients (a rule may skip them).
It returns ``(dxs, dparams)``: one cotangent (or None: no gradient, e.g. argmax indices or a
shape-only input) per input and ``{param role: gradient}``. Attribute defaults are read with
the forward op's own helpers (refnet/ops/core.py), so both directions share one geometry.
Ops without a rule fail by name (:func:`get`) with UnsupportedLayerError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from refnet import kernels as K
from refnet.errors import UnsupportedLayerError
from refnet.ops import core as C
from refnet.ops import registry
from refnet.ops.registry import Ctx

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
    a = node.attrs
    return dict(stride=C._pair(a.get("stride"), 1), pad=C._pad4(a.get("pad")),
                dilation=C._pair(a.get("dilation"), 1), groups=int(a.get("groups", 1)))


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
        output_padding=C._pair(node.attrs.get("output_padding"), 0), **_conv_geom(node))
    return [dx], (_wb(dw, db, p) if want else {})


@vjp("linear")
def _linear(node, xs, ys, dys, p, fast, want=True):
    dx, dw, db = _k("linear", fast)(xs[0], p["weight"], _d0(dys, ys), axis=int(node.attrs.get("axis", 1)),
                                    bias="bias" in p)
    return [dx], _wb(dw, db, p)


# ---- pooling -------------------------------------------------------------------------------------------
@vjp("max_pool")
def _max_pool(node, xs, ys, dys, p, fast, want=True):
    x, dy = xs[0], _d0(dys, ys)
    if node.attrs.get("global_pooling") and len(node.outputs) == 1:
        return [_k("global_max_pool2d", fast)(x, dy)], {}
    k, s, pad, _ = C._pool_geometry(node, x.shape)
    ceil = bool(node.attrs.get("ceil_mode", True))
    return [_k("max_pool2d", fast)(x, dy, k, s, pad, ceil_mode=ceil)], {}  # the indices output: none


@vjp("avg_pool")
def _avg_pool(node, xs, ys, dys, p, fast, want=True):
    x, dy = xs[0], _d0(dys, ys)
    if node.attrs.get("global_pooling"):
        return [_k("global_avg_pool2d", fast)(x, dy)], {}
    k, s, pad, _ = C._pool_geometry(node, x.shape)
    return [_k("avg_pool2d", fast)(x, dy, k, s, pad, ceil_mode=bool(node.attrs.get("ceil_mode", True)),
                                   divisor=node.attrs.get("divisor", "padded"))], {}


@vjp("max_unpool")
def _max_unpool(node, xs, ys, dys, p, fast, want=True):
    return [_k("max_unpool2d", fast)(xs[1], _d0(dys, ys))] + [None] * (len(xs) - 1), {}


# ---- activations ---------------------------------------------------------------------------------------
@vjp("relu")
def _relu(node, xs, ys, dys, p, fast, want=True):
    return [_k("relu", fast)(xs[0], _d0(dys, ys), float(node.attrs.get("negative_slope", 0.0)))], {}


@vjp("clip")
def _clip(node, xs, ys, dys, p, fast, want=True):
    a = node.attrs
    return [_k("clip", fast)(xs[0], _d0(dys, ys), float(a.get("min", 0.0)), float(a.get("max", 6.0)))], {}


@vjp("prelu")
def _prelu(node, xs, ys, dys, p, fast, want=True):
    dx, ds = _k("prelu", fast)(xs[0], p["slope"].reshape(-1), _d0(dys, ys))
    return [dx], {"slope": ds.reshape(p["slope"].shape)}


@vjp("elu")
def _elu(node, xs, ys, dys, p, fast, want=True):
    return [_k("elu", fast)(xs[0], _d0(dys, ys), float(node.attrs.get("alpha", 1.0)))], {}


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
    return [_k("absval", fast)(xs[0], _d0(dys, ys))], {}


@vjp("power", "sqrt", "square")
def _power(node, xs, ys, dys, p, fast, want=True):
    pss = {"sqrt": (0.5, 1.0, 0.0), "square": (2.0, 1.0, 0.0)}.get(node.op) or C._pss(node, 1.0)
    return [_k("power", fast)(xs[0], _d0(dys, ys), *pss)], {}


@vjp("softmax")
def _softmax(node, xs, ys, dys, p, fast, want=True):
    axis = int(node.attrs.get("axis", 1))
    if fast:
        return [K.softmax_backward(xs[0], _d0(dys, ys), axis, y=ys[0])], {}
    return [K.softmax_backward_reference(xs[0], _d0(dys, ys), axis)], {}


@vjp("log_softmax")
def _log_softmax(node, xs, ys, dys, p, fast, want=True):
    return [_k("log_softmax", fast)(xs[0], _d0(dys, ys), int(node.attrs.get("axis", 1)))], {}


@vjp("darknet_softmax")
def _darknet_softmax(node, xs, ys, dys, p, fast, want=True):
    x = xs[0]
    g = int(node.attrs.get("groups", 1))
    t = float(node.attrs.get("temperature", 1.0))
    z = np.ascontiguousarray(x.reshape(x.shape[0], g, -1) / x.dtype.type(t))
    dz = _k("softmax", fast)(z, np.ascontiguousarray(_d0(dys, ys).reshape(z.shape)), 2)
    return [(dz / x.dtype.type(t)).reshape(x.shape)], {}


# ---- normalisation -------------------------------------------------------------------------------------
@vjp("batch_norm")
def _batch_norm(node, xs, ys, dys, p, fast, want=True):
    w = p.get("weight")
    g = _k("batch_norm", fast)(xs[0], p["mean"], p["var"], None if w is None else w.reshape(-1), _d0(dys, ys),
                               eps=float(node.attrs.get("eps", 1e-5)))
    dparams = {k: g[k].reshape(p[k].shape) for k in ("mean", "var", "weight", "bias") if k in p}
    return [g["x"]], dparams


def _scale_param(node, xs, p):
    """The forward's scale operand: the param or the second input (reshaped as the forward does),
    a (1,)-shaped one expanded over its axis."""
    x = xs[0]
    axis = C._axis(node, int(node.attrs.get("axis", 1)), x.ndim)
    w = xs[1] if len(xs) > 1 else p["weight"]
    span = x.shape[axis:axis + w.ndim]
    if len(xs) > 1 and w.size == int(np.prod(span)):
        w = w.reshape(span)
    return axis, C._bcast(w, x, axis)


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
    axis = C._axis(node, int(node.attrs.get("axis", 1)), x.ndim)
    b = xs[1] if len(xs) > 1 else p["bias"]
    full = C._bcast(b, x, axis)
    dx, db = _k("bias_add", fast)(_d0(dys, ys), full.shape, axis=axis)
    if len(xs) > 1:
        return [dx, _fold_to(db, xs[1])], {}
    return [dx], {"bias": _fold_to(db, p["bias"])}


@vjp("lrn")
def _lrn(node, xs, ys, dys, p, fast, want=True):
    a = node.attrs
    return [_k("lrn", fast)(xs[0], _d0(dys, ys), size=int(a.get("size", 5)), alpha=float(a.get("alpha", 1e-4)),
                            beta=float(a.get("beta", 0.75)), k=float(a.get("k", 1.0)),
                            region=a.get("region", "across"))], {}


@vjp("normalize")
def _normalize(node, xs, ys, dys, p, fast, want=True):
    a = node.attrs
    scale = p.get("scale")
    dx, ds = _k("l2_normalize", fast)(xs[0], None if scale is None else scale.reshape(-1), _d0(dys, ys),
                                      across_spatial=bool(a.get("across_spatial", True)),
                                      channel_shared=bool(a.get("channel_shared", True)),
                                      eps=float(a.get("eps", 1e-10)))
    return [dx], ({} if scale is None else {"scale": ds.reshape(scale.shape)})


# ---- tensor ops ---------------------------------------------------------------------------------------------
@vjp("concat")
def _concat(node, xs, ys, dys, p, fast, want=True):
    axis = int(node.attrs.get("axis", 1))
    a = C._axis(node, axis, xs[0].ndim)
    return _k("concat", fast)(_d0(dys, ys), [x.shape[a] for x in xs], a), {}


@vjp("slice")
def _slice(node, xs, ys, dys, p, fast, want=True):
    a = C._axis(node, int(node.attrs.get("axis", 1)), xs[0].ndim)
    return [_k("slice", fast)(list(dys), [y.shape for y in ys], a).astype(xs[0].dtype, copy=False)], {}


@vjp("flatten", "reshape")
def _reshape(node, xs, ys, dys, p, fast, want=True):
    return [_k("reshape", fast)(_d0(dys, ys), xs[0].shape)], {}


@vjp("permute")
def _permute(node, xs, ys, dys, p, fast, want=True):
    return [_k("permute", fast)(_d0(dys, ys), C._permute_order(node, xs[0].ndim))], {}


@vjp("eltwise")
def _eltwise(node, xs, ys, dys, p, fast, want=True):
    coeffs = node.attrs.get("coeffs")
    return _k("eltwise", fast)(list(xs), _d0(dys, ys), operation=node.attrs.get("operation", "sum"),
                               coeffs=None if not coeffs else tuple(float(c) for c in coeffs)), {}


@vjp("resize")
def _resize(node, xs, ys, dys, p, fast, want=True):
    a = node.attrs
    hw = xs[0].shape[2:4]
    if a.get("mode", "bilinear") == "nearest":
        dx = _k("resize_nearest", fast)(_d0(dys, ys), hw)
    else:
        dx = _k("resize_bilinear", fast)(_d0(dys, ys), hw, align_corners=bool(a.get("align_corners", False)),
                                         half_pixel=bool(a.get("half_pixel", False)))
    return [dx] + [None] * (len(xs) - 1), {}


@vjp("shortcut")
def _shortcut(node, xs, ys, dys, p, fast, want=True):
    dy = _d0(dys, ys)
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
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
