"""``conv``, ``deconv``, ``linear`` (kernels: refnet.kernels.conv): specs, shape rules, MAC rules
and the float32 planners."""

from __future__ import annotations

import math

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.kernels import _gemv
from refnet.ops.registry import Attr, attrs, axis_of, kern, need_ndim, numel, pad4, pair, pair0, prepares, register

# the fused activation and residual (a second input added before the activation): set only by the
# float32 fusion pass (refnet/runtime/fusion.py), never by importers
_FUSED = {"activation": None, "negative_slope": Attr(0.0, float), "residual": Attr(False, bool)}
CONV_ATTRS = {"stride": Attr(1, pair), "pad": Attr(0, pad4), "dilation": Attr(1, pair), "groups": Attr(1, int),
              **_FUSED}


def conv_out_size(node, size: int, k: int, s: int, pb: int, pe: int, d: int) -> int:
    """Output size of a convolution along one axis (refnet.kernels.geometry; floor rounding);
    ShapeError naming the layer when empty."""
    try:
        return K.conv_output_size(size, k, s, pb, pe, d)
    except ShapeError as e:
        raise ShapeError(e.message, layer=node.name, expected=e.expected, got=e.got) from None


def _conv_shape(node, shapes):
    (shape,) = shapes[:1]
    need_ndim(node, shape, 4)
    n, c, h, w = shape
    wt = node.params["weight"]
    a = attrs(node)
    g = a["groups"]
    if wt.ndim != 4 or wt.shape[0] % g or wt.shape[1] * g != c:
        raise ShapeError("input channels do not match the weights and groups", layer=node.name,
                         expected=f"C = {wt.shape[1]} x groups {g}", got=f"input {tuple(shape)}, weight {wt.shape}")
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["stride"], a["dilation"], a["pad"]
    out = (n, wt.shape[0], conv_out_size(node, h, wt.shape[2], sh, pt, pb, dh),
           conv_out_size(node, w, wt.shape[3], sw, pl, pr, dw))
    if a["residual"]:  # the fused add broadcasts (numpy rules)
        try:
            out = tuple(np.broadcast_shapes(out, tuple(shapes[1])))
        except ValueError:
            raise ShapeError("the residual does not broadcast against the convolution's output", layer=node.name,
                             expected=out, got=tuple(shapes[1])) from None
    return [out]


def conv_kwargs(node, p) -> dict:
    """The conv kernel's keyword arguments of ``node`` (geometry and any fused activation)."""
    a = attrs(node)
    kwargs = dict(stride=a["stride"], pad=a["pad"], dilation=a["dilation"], groups=a["groups"])
    act = a["activation"]
    if act is not None:
        slope = p["slope"].reshape(-1) if act == "prelu" else a["negative_slope"]
        kwargs.update(activation=act, negative_slope=slope)
    return kwargs


def conv_macs(node, ins, outs) -> int:
    """Convolution: ``N*Co*Ho*Wo*(Ci/g)*kh*kw`` (the weight is ``(Co, Ci/g, kh, kw)``)."""
    w = node.params["weight"].shape
    return numel(outs[0]) * int(w[1]) * int(w[2]) * int(w[3])


@register("conv", shape=_conv_shape, attrs=CONV_ATTRS, kernel="conv2d", macs=conv_macs, fresh=True)
def _conv(node, xs, p, ctx):
    res = {"residual": xs[1]} if len(xs) > 1 else {}  # (fused nodes run in float32 only)
    return kern("conv2d", ctx)(xs[0], p["weight"], p.get("bias"), **conv_kwargs(node, p), **res)


@prepares("conv")
def _conv_prepare(node, p, shapes, ctx):
    if not attrs(node)["residual"]:
        return K.conv2d_plan(shapes[0], p["weight"], p.get("bias"), **conv_kwargs(node, p)), True
    plan = K.conv2d_plan(shapes[0], p["weight"], p.get("bias"), **conv_kwargs(node, p), residual=True)
    if tuple(shapes[1]) != plan.y_shape:
        return None  # a broadcasting residual: the run function (add, then activation)

    def conv_residual(x, r, out=None):
        return plan(x, out, residual=r)

    return conv_residual, True


def _deconv_shape(node, shapes):
    shape = shapes[0]
    need_ndim(node, shape, 4)
    n, c, h, w = shape
    wt = node.params["weight"]
    a = attrs(node)
    g = a["groups"]
    if wt.ndim != 4 or wt.shape[0] != c or c % g:
        raise ShapeError("input channels do not match the deconvolution weights", layer=node.name,
                         expected=f"C = {wt.shape[0]}", got=f"input {tuple(shape)}, weight {wt.shape}")
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["stride"], a["dilation"], a["pad"]
    ah, aw = a["output_padding"]
    try:
        ho = K.conv_transpose_output_size(h, wt.shape[2], sh, pt, pb, dh, ah)
        wo = K.conv_transpose_output_size(w, wt.shape[3], sw, pl, pr, dw, aw)
    except ShapeError as e:
        raise ShapeError(f"deconvolution output would be empty: {e.message}", layer=node.name, got=e.got) from None
    return [(n, wt.shape[1] * g, ho, wo)]


def _deconv_kwargs(node, p) -> dict:
    kwargs = conv_kwargs(node, p)
    kwargs["output_padding"] = attrs(node)["output_padding"]
    return kwargs


def deconv_macs(node, ins, outs) -> int:
    """Deconvolution: ``N*Ci*H*W*(Co/g)*kh*kw`` (the weight is ``(Ci, Co/g, kh, kw)``)."""
    w = node.params["weight"].shape
    return numel(ins[0]) * int(w[1]) * int(w[2]) * int(w[3])


@register("deconv", shape=_deconv_shape, attrs={**CONV_ATTRS, "output_padding": Attr(0, pair0)},
          kernel="conv_transpose2d", macs=deconv_macs, fresh=True)
def _deconv(node, xs, p, ctx):
    kwargs = _deconv_kwargs(node, p)
    if not ctx.fast:  # the reference has no fused activation (the float64 path never fuses)
        kwargs.pop("activation", None)
        kwargs.pop("negative_slope", None)
    return kern("conv_transpose2d", ctx)(xs[0], p["weight"], p.get("bias"), **kwargs)


@prepares("deconv")
def _deconv_prepare(node, p, shapes, ctx):
    return K.conv_transpose2d_plan(shapes[0], p["weight"], p.get("bias"), **_deconv_kwargs(node, p)), True


def _linear_shape(node, shapes):
    shape = tuple(shapes[0])
    axis = axis_of(node, attrs(node)["axis"], len(shape))
    k = math.prod(shape[axis:])
    wt = node.params["weight"]
    if wt.ndim != 2 or wt.shape[1] != k:
        raise ShapeError("flattened input size does not match the weights", layer=node.name,
                         expected=f"K = {wt.shape[1] if wt.ndim == 2 else wt.shape}", got=f"input {shape} -> K = {k}")
    return [shape[:axis] + (wt.shape[0],)]


def linear_macs(node, ins, outs) -> int:
    """Linear (InnerProduct): rows x N_out x K, i.e. rows x weight size."""
    axis = attrs(node)["axis"]
    rows = numel(ins[0][:axis]) if axis > 0 else 1
    return rows * int(node.params["weight"].size)


@register("linear", shape=_linear_shape, attrs={"axis": Attr(1, int)}, macs=linear_macs, fresh=True)
def _linear(node, xs, p, ctx):
    return kern("linear", ctx)(xs[0], p["weight"], p.get("bias"), axis=attrs(node)["axis"])


@prepares("linear")
def _linear_prepare(node, p, shapes, ctx):
    """One row (batch 1): the packed matrix-vector step (kernels/_gemv.py), bias added after."""
    x_shape = tuple(shapes[0])
    w, b = p["weight"], p.get("bias")
    out = x_shape[:axis_of(node, attrs(node)["axis"], len(x_shape))] + (w.shape[0],)
    if numel(out) != w.shape[0] or (b is not None and b.dtype != w.dtype):
        return None

    def fallback(x):
        return _linear(node, [x], p, ctx)

    step = _gemv.fc_step(x_shape, out, w, None if b is None else b.reshape(-1), fallback)
    return None if step is None else (step, False)


__all__ = ["conv_out_size", "conv_kwargs", "conv_macs", "deconv_macs", "linear_macs"]
