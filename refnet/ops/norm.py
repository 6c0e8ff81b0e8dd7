"""Normalisation and per-channel affine ops (kernels: refnet.kernels.norm): ``batch_norm``,
``instance_norm``, ``mvn``, ``scale``, ``bias``, ``lrn``, ``normalize``; specs, MAC rules and
the float32 planners."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.ops.activation import per_channel_param_shape
from refnet.ops.registry import Attr, attrs, axis_of, elementwise_macs, kern, numel, prepares, register, same_shape


def _channel_params_shape(node, shapes, names: Sequence[str]):
    shape = tuple(shapes[0])
    if len(shape) < 2:
        raise ShapeError("input must have a channel axis", layer=node.name, got=shape)
    for nm in names:
        v = node.params.get(nm)
        if v is not None and v.size not in (shape[1],):
            raise ShapeError(f"{nm} has {v.size} values for {shape[1]} channels", layer=node.name,
                             expected=shape[1], got=v.size)
    return [shape]


def flat(v: np.ndarray | None) -> np.ndarray | None:
    return None if v is None else v.reshape(-1)


@register("batch_norm", shape=lambda n, s: _channel_params_shape(n, s, ("mean", "var", "weight", "bias")),
          attrs={"eps": Attr(1e-5, float)}, macs=elementwise_macs, fresh=True)
def _batch_norm(node, xs, p, ctx):
    return kern("batch_norm", ctx)(xs[0], p["mean"].reshape(-1), p["var"].reshape(-1),
                                   flat(p.get("weight")), flat(p.get("bias")), eps=attrs(node)["eps"])


# the fused activation: set only by the float32 fusion pass (refnet/runtime/fusion.py), never by importers
@register("instance_norm", shape=lambda n, s: _channel_params_shape(n, s, ("weight", "bias")),
          attrs={"eps": Attr(1e-5, float), "activation": None, "negative_slope": Attr(0.0, float)},
          macs=elementwise_macs, fresh=True)
def _instance_norm(node, xs, p, ctx):
    a = attrs(node)
    kw = {}
    if a["activation"]:
        kw = dict(activation=a["activation"], negative_slope=a["negative_slope"])
    return kern("instance_norm", ctx)(xs[0], flat(p.get("weight")), flat(p.get("bias")), eps=a["eps"], **kw)


MVN_ATTRS = {"normalize_variance": Attr(True, bool), "across_channels": Attr(False, bool), "eps": Attr(1e-9, float)}


@register("mvn", shape=same_shape, attrs=MVN_ATTRS, macs=elementwise_macs)
def _mvn(node, xs, p, ctx):
    a = attrs(node)
    return kern("mvn", ctx)(xs[0], normalize_variance=a["normalize_variance"], across_channels=a["across_channels"],
                            eps=a["eps"])


def _scale_shape(node, shapes):
    shape = tuple(shapes[0])
    axis = axis_of(node, attrs(node)["axis"], len(shape))
    wshape = tuple(shapes[1]) if len(shapes) > 1 else (
        node.params["weight"].shape if "weight" in node.params else node.params["bias"].shape)
    wshape = tuple(d for d in wshape) or (1,)
    if wshape != (1,) and tuple(shape[axis:axis + len(wshape)]) != wshape:
        raise ShapeError("scale/bias shape does not match the input dims from axis", layer=node.name,
                         expected=tuple(shape[axis:axis + len(wshape)]), got=wshape)
    return [shape]


def bcast(v: np.ndarray | None, x: np.ndarray, axis: int) -> np.ndarray | None:
    """A (1,)-shaped scale/bias means one value for all: expand it to the dims it covers."""
    if v is None:
        return None
    if v.size == 1 and x.shape[axis] != 1:
        return np.full(x.shape[axis], v.reshape(-1)[0], dtype=v.dtype)
    return v


@register("scale", shape=_scale_shape, attrs={"axis": Attr(1, int)}, macs=elementwise_macs)
def _scale(node, xs, p, ctx):
    x = xs[0]
    axis = axis_of(node, attrs(node)["axis"], x.ndim)
    w = xs[1] if len(xs) > 1 else p["weight"]
    if len(xs) > 1:  # a second bottom: its leading 1-dims (if any) beyond the span are dropped
        w = w.reshape(x.shape[axis:axis + w.ndim]) if w.size == math.prod(x.shape[axis:axis + w.ndim]) else w
    return kern("scale", ctx)(x, bcast(w, x, axis), bcast(p.get("bias"), x, axis), axis=axis)


@register("bias", shape=_scale_shape, attrs={"axis": Attr(1, int)}, macs=elementwise_macs)
def _bias(node, xs, p, ctx):
    x = xs[0]
    axis = axis_of(node, attrs(node)["axis"], x.ndim)
    b = xs[1] if len(xs) > 1 else p["bias"]
    return kern("bias", ctx)(x, bcast(b, x, axis), axis=axis)


def lrn_macs(node, ins, outs) -> int:
    """LRN: a window of ``size`` squares per element (``size**2`` for WITHIN_CHANNEL)."""
    a = attrs(node)
    return numel(outs[0]) * (a["size"] if a["region"] == "across" else a["size"] ** 2)


@register("lrn", shape=same_shape, attrs={"size": Attr(5, int), "alpha": Attr(1e-4, float),
                                          "beta": Attr(0.75, float), "k": Attr(1.0, float), "region": "across"},
          macs=lrn_macs, fresh=True)
def _lrn(node, xs, p, ctx):
    a = attrs(node)
    return kern("lrn", ctx)(xs[0], size=a["size"], alpha=a["alpha"], beta=a["beta"], k=a["k"], region=a["region"])


@register("normalize", shape=per_channel_param_shape("scale"), kernel="l2_normalize",
          attrs={"across_spatial": Attr(True, bool), "channel_shared": Attr(True, bool), "eps": Attr(1e-10, float)},
          macs=elementwise_macs, fresh=True)
def _normalize(node, xs, p, ctx):
    a = attrs(node)
    scale = p.get("scale")
    return kern("l2_normalize", ctx)(xs[0], None if scale is None else scale.reshape(-1),
                                     across_spatial=a["across_spatial"], channel_shared=a["channel_shared"],
                                     eps=a["eps"])


@prepares("instance_norm")
def _instance_norm_prepare(node, p, shapes, ctx):
    a = attrs(node)
    w, b, eps = flat(p.get("weight")), flat(p.get("bias")), a["eps"]
    act, slope = a["activation"], a["negative_slope"]  # set only by the float32 fusion pass (relu)
    instance_norm = K.instance_norm
    if len(shapes[0]) < 3:
        return None
    return (lambda x, out=None: instance_norm(x, w, b, eps=eps, activation=act, negative_slope=slope,
                                              out=out)), True


__all__ = ["flat", "bcast", "lrn_macs", "MVN_ATTRS"]
