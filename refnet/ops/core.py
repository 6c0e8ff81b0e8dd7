"""Run and shape functions of the framework-neutral ops of docs/ops.md.

Each run function picks the fast kernel (``ctx.fast``: float32 path) or its ``_reference``
twin (float64 path) from :mod:`refnet.kernels`; shape functions check what can be checked
before anything runs and raise :class:`~refnet.errors.ShapeError` naming the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.ops.registry import Ctx, Shape, need_ndim, register, same_shape

DYN = -1  # a dimension known only at run time (e.g. the number of SSD detections)


# op -> prepare(node, params, input shapes, ctx) -> (step callable, accepts out=) or None: the
# float32 executor binds a step's arguments (and plans its kernel) once per input shape.
PREPARE: dict[str, Callable[..., tuple[Callable[..., Any], bool] | None]] = {}


def prepares(op: str) -> Callable:
    """Register the float32 step planner of ``op`` (see :data:`PREPARE`)."""

    def deco(fn: Callable) -> Callable:
        if op in PREPARE:
            raise RuntimeError(f"op {op!r} has two planners")
        PREPARE[op] = fn
        return fn

    return deco


def kern(name: str, ctx: Ctx):
    """The kernel ``name`` for this run: fast for float32, ``name_reference`` for float64."""
    return getattr(K, name if ctx.fast else name + "_reference")


def _axis(node: Any, axis: int, ndim: int) -> int:
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < ndim:
        raise ShapeError(f"axis {axis} out of range for rank {ndim}", layer=node.name)
    return a


def _pair(v: Any, default: int) -> tuple[int, int]:
    return K.geometry.pair(default if v is None else v, "attribute", positive=False)


def _pad4(v: Any) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0) if v is None else K.geometry.pad4(v)


# ---- pass-through ---------------------------------------------------------------------------
@register("identity", shape=same_shape)
def _identity(node, xs, p, ctx):
    return xs[0]


def _split_shape(node, shapes):
    return [tuple(shapes[0])] * len(node.outputs)


@register("split", shape=_split_shape)
def _split(node, xs, p, ctx):
    return [xs[0]] * len(node.outputs)


# ---- convolution ----------------------------------------------------------------------------
def _conv_out(node, size, k, s, pb, pe, d) -> int:
    try:
        return K.conv_output_size(size, k, s, pb, pe, d)
    except ShapeError as e:
        raise ShapeError(e.message, layer=node.name, expected=e.expected, got=e.got) from None


def _conv_shape(node, shapes):
    (shape,) = shapes[:1]
    need_ndim(node, shape, 4)
    n, c, h, w = shape
    wt = node.params["weight"]
    g = int(node.attrs.get("groups", 1))
    if wt.ndim != 4 or wt.shape[0] % g or wt.shape[1] * g != c:
        raise ShapeError("input channels do not match the weights and groups", layer=node.name,
                         expected=f"C = {wt.shape[1]} x groups {g}", got=f"input {tuple(shape)}, weight {wt.shape}")
    sh, sw = _pair(node.attrs.get("stride"), 1)
    dh, dw = _pair(node.attrs.get("dilation"), 1)
    pt, pl, pb, pr = _pad4(node.attrs.get("pad"))
    return [(n, wt.shape[0], _conv_out(node, h, wt.shape[2], sh, pt, pb, dh),
             _conv_out(node, w, wt.shape[3], sw, pl, pr, dw))]


def _conv_kwargs(node, p) -> dict:
    a = node.attrs
    kwargs = dict(stride=_pair(a.get("stride"), 1), pad=_pad4(a.get("pad")),
                  dilation=_pair(a.get("dilation"), 1), groups=int(a.get("groups", 1)))
    act = a.get("activation")
    if act is not None:  # set only by the float32 fusion pass (refnet/net.py)
        slope = p["slope"].reshape(-1) if act == "prelu" else float(a.get("negative_slope", 0.0))
        kwargs.update(activation=act, negative_slope=slope)
    return kwargs


@register("conv", shape=_conv_shape)
def _conv(node, xs, p, ctx):
    return kern("conv2d", ctx)(xs[0], p["weight"], p.get("bias"), **_conv_kwargs(node, p))


@prepares("conv")
def _conv_prepare(node, p, shapes, ctx):
    return K.conv2d_plan(shapes[0], p["weight"], p.get("bias"), **_conv_kwargs(node, p)), True


def _deconv_shape(node, shapes):
    shape = shapes[0]
    need_ndim(node, shape, 4)
    n, c, h, w = shape
    wt = node.params["weight"]
    g = int(node.attrs.get("groups", 1))
    if wt.ndim != 4 or wt.shape[0] != c or c % g:
        raise ShapeError("input channels do not match the deconvolution weights", layer=node.name,
                         expected=f"C = {wt.shape[0]}", got=f"input {tuple(shape)}, weight {wt.shape}")
    sh, sw = _pair(node.attrs.get("stride"), 1)
    dh, dw = _pair(node.attrs.get("dilation"), 1)
    pt, pl, pb, pr = _pad4(node.attrs.get("pad"))
    ah, aw = _pair(node.attrs.get("output_padding"), 0)
    try:
        ho = K.conv_transpose_output_size(h, wt.shape[2], sh, pt, pb, dh, ah)
        wo = K.conv_transpose_output_size(w, wt.shape[3], sw, pl, pr, dw, aw)
    except ShapeError as e:
        raise ShapeError(f"deconvolution output would be empty: {e.message}", layer=node.name, got=e.got) from None
    return [(n, wt.shape[1] * g, ho, wo)]


def _deconv_kwargs(node, p) -> dict:
    kwargs = _conv_kwargs(node, p)
    kwargs["output_padding"] = _pair(node.attrs.get("output_padding"), 0)
    return kwargs


@register("deconv", shape=_deconv_shape)
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
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(shape))
    k = math.prod(shape[axis:])
    wt = node.params["weight"]
    if wt.ndim != 2 or wt.shape[1] != k:
        raise ShapeError("flattened input size does not match the weights", layer=node.name,
                         expected=f"K = {wt.shape[1] if wt.ndim == 2 else wt.shape}", got=f"input {shape} -> K = {k}")
    return [shape[:axis] + (wt.shape[0],)]


@register("linear", shape=_linear_shape)
def _linear(node, xs, p, ctx):
    return kern("linear", ctx)(xs[0], p["weight"], p.get("bias"), axis=int(node.attrs.get("axis", 1)))


# ---- pooling --------------------------------------------------------------------------------
def _pool_geometry(node, shape):
    a = node.attrs
    n, c, h, w = shape
    if a.get("global_pooling"):
        return (h, w), (1, 1), (0, 0, 0, 0), (n, c, 1, 1)
    kh, kw = _pair(a.get("kernel"), 1)
    sh, sw = _pair(a.get("stride"), 1) if a.get("stride") is not None else (kh, kw)
    pt, pl, pb, pr = _pad4(a.get("pad"))
    ceil = bool(a.get("ceil_mode", True))
    if kh > h + pt + pb or kw > w + pl + pr:
        raise ShapeError("pooling window larger than the padded input", layer=node.name,
                         expected=f"<= {(h + pt + pb, w + pl + pr)}", got=(kh, kw))
    ho = K.pool_output_size(h, kh, sh, pt, pb, ceil)
    wo = K.pool_output_size(w, kw, sw, pl, pr, ceil)
    return (kh, kw), (sh, sw), (pt, pl, pb, pr), (n, c, ho, wo)


def _pool_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    out = _pool_geometry(node, tuple(shapes[0]))[3]
    return [out] * len(node.outputs)


@register("max_pool", shape=_pool_shape)
def _max_pool(node, xs, p, ctx):
    x = xs[0]
    want_idx = len(node.outputs) > 1
    if node.attrs.get("global_pooling") and not want_idx:
        return kern("global_max_pool2d", ctx)(x)
    k, s, pad, _ = _pool_geometry(node, x.shape)
    res = kern("max_pool2d", ctx)(x, k, s, pad, ceil_mode=bool(node.attrs.get("ceil_mode", True)),
                                  return_indices=want_idx)
    return list(res) if want_idx else res


@register("avg_pool", shape=_pool_shape)
def _avg_pool(node, xs, p, ctx):
    x = xs[0]
    if node.attrs.get("global_pooling"):
        return kern("global_avg_pool2d", ctx)(x)
    k, s, pad, _ = _pool_geometry(node, x.shape)
    return kern("avg_pool2d", ctx)(x, k, s, pad, ceil_mode=bool(node.attrs.get("ceil_mode", True)),
                                   divisor=node.attrs.get("divisor", "padded"))


def _unpool_hw(node, shapes):
    if len(shapes) > 2:
        return tuple(shapes[2][2:4])
    if node.attrs.get("out_hw"):
        return tuple(node.attrs["out_hw"])
    a = node.attrs
    kh, kw = _pair(a.get("kernel"), 1)
    sh, sw = _pair(a.get("stride"), 1) if a.get("stride") is not None else (kh, kw)
    pt, pl, pb, pr = _pad4(a.get("pad"))
    h, w = shapes[0][2:4]
    return ((h - 1) * sh - pt - pb + kh, (w - 1) * sw - pl - pr + kw)


def _unpool_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    if tuple(shapes[1]) != tuple(shapes[0]):
        raise ShapeError("unpooling indices must have the input's shape", layer=node.name,
                         expected=tuple(shapes[0]), got=tuple(shapes[1]))
    n, c = shapes[0][:2]
    return [(n, c) + _unpool_hw(node, shapes)]


@register("max_unpool", shape=_unpool_shape)
def _max_unpool(node, xs, p, ctx):
    hw = _unpool_hw(node, [x.shape for x in xs])
    return kern("max_unpool2d", ctx)(xs[0], xs[1], hw)


# ---- activations ----------------------------------------------------------------------------
@register("relu", shape=same_shape)
def _relu(node, xs, p, ctx):
    return kern("relu", ctx)(xs[0], float(node.attrs.get("negative_slope", 0.0)))


@register("clip", shape=same_shape)
def _clip(node, xs, p, ctx):
    return kern("clip", ctx)(xs[0], float(node.attrs.get("min", 0.0)), float(node.attrs.get("max", 6.0)))


def _per_channel_param_shape(param: str):
    """Shape function of an elementwise op with a per-channel (or one shared) parameter."""

    def shape(node, shapes):
        x = tuple(shapes[0])
        v = node.params.get(param)
        if v is not None and v.size != 1 and (len(x) < 2 or v.size != x[1]):
            raise ShapeError(f"{param} has {v.size} values for {x[1] if len(x) > 1 else '?'} channels",
                             layer=node.name, expected=f"1 or {x[1] if len(x) > 1 else '?'}", got=v.size)
        return [x]

    return shape


@register("prelu", shape=_per_channel_param_shape("slope"))
def _prelu(node, xs, p, ctx):
    return kern("prelu", ctx)(xs[0], p["slope"].reshape(-1))


@register("elu", shape=same_shape)
def _elu(node, xs, p, ctx):
    return kern("elu", ctx)(xs[0], float(node.attrs.get("alpha", 1.0)))


def _unary(op: str, kernel: str) -> None:
    register(op, shape=same_shape)(lambda node, xs, p, ctx: kern(kernel, ctx)(xs[0]))


for _op, _kernel in [("sigmoid", "sigmoid"), ("tanh", "tanh"), ("bnll", "bnll"), ("abs", "absval"),
                     ("mish", "mish"), ("swish", "swish")]:
    _unary(_op, _kernel)


@register("sqrt", shape=same_shape)
def _sqrt(node, xs, p, ctx):
    return kern("power", ctx)(xs[0], 0.5, 1.0, 0.0)


@register("square", shape=same_shape)
def _square(node, xs, p, ctx):
    return kern("power", ctx)(xs[0], 2.0, 1.0, 0.0)


def _pss(node, default_first: float) -> tuple[float, float, float]:
    a = node.attrs
    first = "power" if node.op == "power" else "base"
    return (float(a.get(first, default_first)), float(a.get("scale", 1.0)), float(a.get("shift", 0.0)))


@register("power", shape=same_shape)
def _power(node, xs, p, ctx):
    return kern("power", ctx)(xs[0], *_pss(node, 1.0))


@register("exp", shape=same_shape)
def _exp(node, xs, p, ctx):
    return kern("exp", ctx)(xs[0], *_pss(node, -1.0))


@register("log", shape=same_shape)
def _log(node, xs, p, ctx):
    return kern("log", ctx)(xs[0], *_pss(node, -1.0))


def _softmax_shape(node, shapes):
    _axis(node, int(node.attrs.get("axis", 1)), len(shapes[0]))
    return [tuple(shapes[0])]


@register("softmax", shape=_softmax_shape)
def _softmax(node, xs, p, ctx):
    return kern("softmax", ctx)(xs[0], axis=int(node.attrs.get("axis", 1)))


@register("log_softmax", shape=_softmax_shape)
def _log_softmax(node, xs, p, ctx):
    return kern("log_softmax", ctx)(xs[0], axis=int(node.attrs.get("axis", 1)))


# ---- normalisation ---------------------------------------------------------------------------
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


@register("batch_norm", shape=lambda n, s: _channel_params_shape(n, s, ("mean", "var", "weight", "bias")))
def _batch_norm(node, xs, p, ctx):
    return kern("batch_norm", ctx)(xs[0], p["mean"].reshape(-1), p["var"].reshape(-1),
                                   _flat(p.get("weight")), _flat(p.get("bias")),
                                   eps=float(node.attrs.get("eps", 1e-5)))


def _flat(v: np.ndarray | None) -> np.ndarray | None:
    return None if v is None else v.reshape(-1)


@register("instance_norm", shape=lambda n, s: _channel_params_shape(n, s, ("weight", "bias")))
def _instance_norm(node, xs, p, ctx):
    kw = {}
    if node.attrs.get("activation"):  # set only by the float32 fusion pass (refnet/net.py)
        kw = dict(activation=node.attrs["activation"], negative_slope=float(node.attrs.get("negative_slope", 0.0)))
    return kern("instance_norm", ctx)(xs[0], _flat(p.get("weight")), _flat(p.get("bias")),
                                      eps=float(node.attrs.get("eps", 1e-5)), **kw)


@register("mvn", shape=same_shape)
def _mvn(node, xs, p, ctx):
    a = node.attrs
    return kern("mvn", ctx)(xs[0], normalize_variance=bool(a.get("normalize_variance", True)),
                            across_channels=bool(a.get("across_channels", False)),
                            eps=float(a.get("eps", 1e-9)))


def _scale_shape(node, shapes):
    shape = tuple(shapes[0])
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(shape))
    wshape = tuple(shapes[1]) if len(shapes) > 1 else (
        node.params["weight"].shape if "weight" in node.params else node.params["bias"].shape)
    wshape = tuple(d for d in wshape) or (1,)
    if wshape != (1,) and tuple(shape[axis:axis + len(wshape)]) != wshape:
        raise ShapeError("scale/bias shape does not match the input dims from axis", layer=node.name,
                         expected=tuple(shape[axis:axis + len(wshape)]), got=wshape)
    return [shape]


def _bcast(v: np.ndarray | None, x: np.ndarray, axis: int) -> np.ndarray | None:
    """A (1,)-shaped scale/bias means one value for all: expand it to the dims it covers."""
    if v is None:
        return None
    if v.size == 1 and x.shape[axis] != 1:
        return np.full(x.shape[axis], v.reshape(-1)[0], dtype=v.dtype)
    return v


@register("scale", shape=_scale_shape)
def _scale(node, xs, p, ctx):
    x = xs[0]
    axis = _axis(node, int(node.attrs.get("axis", 1)), x.ndim)
    w = xs[1] if len(xs) > 1 else p["weight"]
    if len(xs) > 1:  # a second bottom: its leading 1-dims (if any) beyond the span are dropped
        w = w.reshape(x.shape[axis:axis + w.ndim]) if w.size == math.prod(x.shape[axis:axis + w.ndim]) else w
    return kern("scale", ctx)(x, _bcast(w, x, axis), _bcast(p.get("bias"), x, axis), axis=axis)


@register("bias", shape=_scale_shape)
def _bias(node, xs, p, ctx):
    x = xs[0]
    axis = _axis(node, int(node.attrs.get("axis", 1)), x.ndim)
    b = xs[1] if len(xs) > 1 else p["bias"]
    return kern("bias_add", ctx)(x, _bcast(b, x, axis), axis=axis)


@register("lrn", shape=same_shape)
def _lrn(node, xs, p, ctx):
    a = node.attrs
    return kern("lrn", ctx)(xs[0], size=int(a.get("size", 5)), alpha=float(a.get("alpha", 1e-4)),
                            beta=float(a.get("beta", 0.75)), k=float(a.get("k", 1.0)),
                            region=a.get("region", "across"))


@register("normalize", shape=_per_channel_param_shape("scale"))
def _normalize(node, xs, p, ctx):
    a = node.attrs
    scale = p.get("scale")
    return kern("l2_normalize", ctx)(xs[0], None if scale is None else scale.reshape(-1),
                                     across_spatial=bool(a.get("across_spatial", True)),
                                     channel_shared=bool(a.get("channel_shared", True)),
                                     eps=float(a.get("eps", 1e-10)))


# ---- tensor ops -----------------------------------------------------------------------------
def _concat_shape(node, shapes):
    ref = tuple(shapes[0])
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(ref))
    total = 0
    for s in shapes:
        s = tuple(s)
        if len(s) != len(ref) or s[:axis] + s[axis + 1:] != ref[:axis] + ref[axis + 1:]:
            raise ShapeError(f"concat inputs differ outside axis {axis}", layer=node.name,
                             expected=ref, got=s)
        total = DYN if DYN in (total, s[axis]) else total + s[axis]
    return [ref[:axis] + (total,) + ref[axis + 1:]]


@register("concat", shape=_concat_shape)
def _concat(node, xs, p, ctx):
    return kern("concat", ctx)(list(xs), axis=int(node.attrs.get("axis", 1)))


def _slice_sizes(node, shape) -> tuple[int, list[int]]:
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(shape))
    dim = shape[axis]
    n = len(node.outputs)
    points = [int(v) for v in node.attrs.get("points", ())]
    if points:
        if len(points) != n - 1 or points != sorted(points) or points[0] <= 0 or points[-1] >= dim:
            raise ShapeError("slice points do not split the axis into the layer's outputs", layer=node.name,
                             expected=f"{n - 1} increasing points inside (0, {dim})", got=points)
        bounds = [0] + points + [dim]
    else:
        if dim % n:
            raise ShapeError(f"axis of size {dim} cannot be split into {n} equal parts", layer=node.name)
        bounds = [i * dim // n for i in range(n + 1)]
    return axis, [bounds[i + 1] - bounds[i] for i in range(n)]


def _slice_shape(node, shapes):
    shape = tuple(shapes[0])
    axis, sizes = _slice_sizes(node, shape)
    return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]


@register("slice", shape=_slice_shape)
def _slice(node, xs, p, ctx):
    return list(kern("slice", ctx)(xs[0], int(node.attrs.get("axis", 1)),
                                   tuple(node.attrs.get("points", ())), n=len(node.outputs)))


def _flatten_shape(node, shapes):
    shape = tuple(shapes[0])
    a = _axis(node, int(node.attrs.get("axis", 1)), len(shape))
    e = _axis(node, int(node.attrs.get("end_axis", -1)), len(shape))
    return [shape[:a] + (math.prod(shape[a:e + 1]),) + shape[e + 1:]]


@register("flatten", shape=_flatten_shape)
def _flatten(node, xs, p, ctx):
    return kern("flatten", ctx)(xs[0], axis=int(node.attrs.get("axis", 1)),
                                end_axis=int(node.attrs.get("end_axis", -1)))


def _reshape_shape(node, shapes):
    a = node.attrs
    try:
        return [tuple(K.reshape_output_shape(tuple(shapes[0]), tuple(a["shape"]), int(a.get("axis", 0)),
                                             int(a.get("num_axes", -1))))]
    except ShapeError as e:
        raise ShapeError(str(e), layer=node.name) from e


@register("reshape", shape=_reshape_shape)
def _reshape(node, xs, p, ctx):
    a = node.attrs
    return kern("reshape", ctx)(xs[0], tuple(a["shape"]), axis=int(a.get("axis", 0)),
                                num_axes=int(a.get("num_axes", -1)))


def _permute_order(node, ndim) -> tuple[int, ...]:
    order = [int(i) for i in node.attrs.get("order", ())]
    # Caffe fills the unspecified trailing axes in order
    order += [i for i in range(ndim) if i not in order]
    if sorted(order) != list(range(ndim)):
        raise ShapeError("permute order is not a permutation of the axes", layer=node.name,
                         expected=f"a permutation of 0..{ndim - 1}", got=tuple(node.attrs.get("order", ())))
    return tuple(order)


@register("permute", shape=lambda n, s: [tuple(s[0][i] for i in _permute_order(n, len(s[0])))])
def _permute(node, xs, p, ctx):
    return kern("permute", ctx)(xs[0], _permute_order(node, xs[0].ndim))


def _crop_geometry(node, shape, like):
    axis = _axis(node, int(node.attrs.get("axis", 2)), len(shape))
    offs = [int(v) for v in node.attrs.get("offset", (0,))] or [0]
    n = len(shape) - axis
    if len(offs) == 1:
        offs = offs * n
    if len(offs) != n:
        raise ShapeError("crop needs one offset or one per cropped axis", layer=node.name,
                         expected=n, got=len(offs))
    out = list(shape)
    for i in range(n):
        d = axis + i
        if offs[i] < 0 or offs[i] + like[d] > shape[d]:
            raise ShapeError(f"crop window on axis {d} exceeds the input", layer=node.name,
                             expected=f"offset + {like[d]} <= {shape[d]}", got=offs[i])
        out[d] = like[d]
    return axis, tuple(offs), tuple(out)


@register("crop", shape=lambda n, s: [_crop_geometry(n, tuple(s[0]), tuple(s[1]))[2]])
def _crop(node, xs, p, ctx):
    axis, offs, _ = _crop_geometry(node, xs[0].shape, xs[1].shape)
    return kern("crop", ctx)(xs[0], xs[1].shape, axis=axis, offset=offs)


def _pads(node, ndim) -> tuple[tuple[int, int], ...]:
    pads = tuple(tuple(int(v) for v in pr) for pr in node.attrs.get("pads", ()))
    if len(pads) != ndim:
        raise ShapeError("pad needs (before, after) for every axis", layer=node.name, expected=ndim,
                         got=len(pads))
    return pads


def _pad_shape(node, shapes):
    shape = tuple(shapes[0])
    pads = _pads(node, len(shape))
    out = tuple(d + b + a for d, (b, a) in zip(shape, pads))
    if min(out) <= 0:
        raise ShapeError("padding leaves an empty tensor", layer=node.name, got=out)
    if node.attrs.get("mode", "constant") == "reflect" and any(
            b >= d or a >= d for d, (b, a) in zip(shape, pads) if b or a):
        raise ShapeError("reflection padding must be smaller than the input", layer=node.name,
                         expected=f"< {shape}", got=pads)
    return [out]


@register("pad", shape=_pad_shape)
def _pad(node, xs, p, ctx):
    return kern("pad", ctx)(xs[0], _pads(node, xs[0].ndim), mode=node.attrs.get("mode", "constant"),
                            value=float(node.attrs.get("value", 0.0)))


def _resize_hw(node, shapes) -> tuple[int, int]:
    a = node.attrs
    h, w = shapes[0][2:4]
    if len(shapes) > 1:
        return tuple(shapes[1][2:4])
    if a.get("size"):
        return tuple(int(v) for v in a["size"])
    if a.get("scale"):
        fh, fw = a["scale"]
        return (int(math.floor(h * fh)), int(math.floor(w * fw)))
    return tuple(K.interp_output_size(
        (h, w), height=int(a.get("height", 0)), width=int(a.get("width", 0)),
        zoom_factor=int(a.get("zoom", 1)), shrink_factor=int(a.get("shrink", 1)),
        pad_beg=int(a.get("pad_beg", 0)), pad_end=int(a.get("pad_end", 0))))


def _resize_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    ho, wo = _resize_hw(node, [tuple(s) for s in shapes])
    if ho <= 0 or wo <= 0:
        raise ShapeError("resize to an empty size", layer=node.name, got=(ho, wo))
    return [tuple(shapes[0][:2]) + (ho, wo)]


@register("resize", shape=_resize_shape)
def _resize(node, xs, p, ctx):
    a = node.attrs
    hw = _resize_hw(node, [x.shape for x in xs])
    if a.get("mode", "bilinear") == "nearest":
        return kern("resize_nearest", ctx)(xs[0], hw)
    return kern("resize_bilinear", ctx)(xs[0], hw, align_corners=bool(a.get("align_corners", False)),
                                        half_pixel=bool(a.get("half_pixel", False)))


def _eltwise_shape(node, shapes):
    for s in shapes[1:]:
        if tuple(s) != tuple(shapes[0]):
            raise ShapeError("eltwise inputs differ in shape", layer=node.name, expected=tuple(shapes[0]),
                             got=tuple(s))
    return [tuple(shapes[0])]


@register("eltwise", shape=_eltwise_shape)
def _eltwise(node, xs, p, ctx):
    coeffs = node.attrs.get("coeffs")
    return kern("eltwise", ctx)(list(xs), operation=node.attrs.get("operation", "sum"),
                                coeffs=None if not coeffs else tuple(float(c) for c in coeffs))


def _shuffle_shape(node, shapes):
    g = int(node.attrs.get("group", 1))
    if len(shapes[0]) < 2 or g <= 0 or shapes[0][1] % g:
        raise ShapeError("channels not divisible by group", layer=node.name, expected=f"multiple of {g}",
                         got=tuple(shapes[0]))
    return [tuple(shapes[0])]


@register("shuffle_channel", shape=_shuffle_shape)
def _shuffle(node, xs, p, ctx):
    return kern("shuffle_channel", ctx)(xs[0], int(node.attrs.get("group", 1)))


def _reorg_shape(node, shapes):
    need_ndim(node, shapes[0], 4)
    s = int(node.attrs.get("stride", 2))
    n, c, h, w = shapes[0]
    if s <= 0 or h % s or w % s:
        raise ShapeError(f"reorg stride {s} must divide H and W", layer=node.name, got=tuple(shapes[0]))
    return [(n, c * s * s, h // s, w // s)]


@register("reorg", shape=_reorg_shape)
def _reorg(node, xs, p, ctx):
    return kern("reorg", ctx)(xs[0], int(node.attrs.get("stride", 2)))


# ---- SSD ------------------------------------------------------------------------------------
def _prior_kwargs(node) -> dict:
    a = node.attrs
    keys = ("min_sizes", "max_sizes", "aspect_ratios", "flip", "clip", "variance", "step", "offset",
            "widths", "heights")
    return {k: a[k] for k in keys if k in a}


def _prior_image_hw(node, image_shape) -> tuple[int, int]:
    ih, iw = _pair(node.attrs.get("img_size"), 0)
    return (ih or image_shape[2], iw or image_shape[3])


def _prior_box_shape(node, shapes):
    need_ndim(node, shapes[0], 4, "feature input")
    need_ndim(node, shapes[1], 4, "image input")
    # the priors of one cell, times the cells: a huge feature map must not be materialised here
    one = K.prior_box((1, 1), _prior_image_hw(node, shapes[1]), **_prior_kwargs(node))
    return [(1, 2, int(one.shape[2]) * int(shapes[0][2]) * int(shapes[0][3]))]


@register("prior_box", shape=_prior_box_shape)
def _prior_box(node, xs, p, ctx):
    fn = kern("prior_box", ctx)
    return fn(tuple(xs[0].shape[2:4]), _prior_image_hw(node, xs[1].shape), dtype=ctx.dtype,
              **_prior_kwargs(node))


_DETOUT_KEYS = ("num_classes", "share_location", "background_label_id", "nms_threshold", "top_k",
                "keep_top_k", "confidence_threshold", "code_type", "variance_encoded_in_target", "eta",
                "clip", "normalized")


@register("detection_output", shape=lambda n, s: [(1, 1, DYN, 7)])
def _detection_output(node, xs, p, ctx):
    kw = {k: node.attrs[k] for k in _DETOUT_KEYS if k in node.attrs}
    return kern("detection_output", ctx)(xs[0], xs[1], xs[2], **kw)


__all__: list[str] = ["kern", "DYN", "Shape", "PREPARE", "prepares"]


# ---- float32 step planners: arguments bound (and kernels planned) once per input shape ------------
@prepares("relu")
def _relu_prepare(node, p, shapes, ctx):
    s = float(node.attrs.get("negative_slope", 0.0))
    relu = K.relu
    return (lambda x: relu(x, s)), False


@prepares("prelu")
def _prelu_prepare(node, p, shapes, ctx):
    slope = p["slope"].reshape(-1)
    prelu = K.prelu
    return (lambda x: prelu(x, slope)), False


@prepares("clip")
def _clip_prepare(node, p, shapes, ctx):
    lo, hi = float(node.attrs.get("min", 0.0)), float(node.attrs.get("max", 6.0))
    clip = K.clip
    return (lambda x: clip(x, lo, hi)), False


@prepares("max_pool")
def _max_pool_prepare(node, p, shapes, ctx):
    want_idx = len(node.outputs) > 1
    if node.attrs.get("global_pooling") and not want_idx:
        return K.global_max_pool2d, False
    k, s, pad, _ = _pool_geometry(node, tuple(shapes[0]))
    ceil = bool(node.attrs.get("ceil_mode", True))
    pool = K.max_pool2d
    if want_idx:
        return (lambda x: list(pool(x, k, s, pad, ceil_mode=ceil, return_indices=True))), False
    return (lambda x: pool(x, k, s, pad, ceil_mode=ceil)), False


@prepares("avg_pool")
def _avg_pool_prepare(node, p, shapes, ctx):
    if node.attrs.get("global_pooling"):
        return K.global_avg_pool2d, False
    k, s, pad, _ = _pool_geometry(node, tuple(shapes[0]))
    ceil, div = bool(node.attrs.get("ceil_mode", True)), node.attrs.get("divisor", "padded")
    pool = K.avg_pool2d
    return (lambda x: pool(x, k, s, pad, ceil_mode=ceil, divisor=div)), False


@prepares("softmax")
def _softmax_prepare(node, p, shapes, ctx):
    axis = int(node.attrs.get("axis", 1))
    softmax = K.softmax
    return (lambda x: softmax(x, axis)), False


@prepares("concat")
def _concat_prepare(node, p, shapes, ctx):
    axis = _axis(node, int(node.attrs.get("axis", 1)), len(shapes[0]))
    concatenate = np.concatenate
    return (lambda *xs: concatenate(xs, axis=axis)), False


@prepares("flatten")
def _flatten_prepare(node, p, shapes, ctx):
    (out,) = _flatten_shape(node, shapes)
    return (lambda x: x.reshape(out)), False


@prepares("reshape")
def _reshape_prepare(node, p, shapes, ctx):
    (out,) = _reshape_shape(node, shapes)
    return (lambda x: x.reshape(out)), False


@prepares("permute")
def _permute_prepare(node, p, shapes, ctx):
    order = _permute_order(node, len(shapes[0]))
    transpose, contiguous = np.transpose, np.ascontiguousarray
    return (lambda x: contiguous(transpose(x, order))), False


@prepares("eltwise")
def _eltwise_prepare(node, p, shapes, ctx):
    if node.attrs.get("operation", "sum") != "sum" or node.attrs.get("coeffs") or len(shapes) < 2:
        return None
    add = np.add

    def eltwise_sum(*xs, out=None):
        out = add(xs[0], xs[1], out=out)
        for x in xs[2:]:
            out += x
        return out

    return eltwise_sum, True


@prepares("batch_norm")
def _batch_norm_prepare(node, p, shapes, ctx):
    mean, var = p["mean"].reshape(-1), p["var"].reshape(-1)
    w, b, eps = _flat(p.get("weight")), _flat(p.get("bias")), float(node.attrs.get("eps", 1e-5))
    batch_norm = K.batch_norm
    return (lambda x: batch_norm(x, mean, var, w, b, eps=eps)), False


@prepares("instance_norm")
def _instance_norm_prepare(node, p, shapes, ctx):
    w, b, eps = _flat(p.get("weight")), _flat(p.get("bias")), float(node.attrs.get("eps", 1e-5))
    act = node.attrs.get("activation")  # set only by the float32 fusion pass (relu)
    slope = float(node.attrs.get("negative_slope", 0.0))
    instance_norm = K.instance_norm
    if len(shapes[0]) < 3:
        return None
    return (lambda x, out=None: instance_norm(x, w, b, eps=eps, activation=act, negative_slope=slope,
                                              out=out)), True


@prepares("pad")
def _pad_prepare(node, p, shapes, ctx):
    pads = _pads(node, len(shapes[0]))
    if len(shapes[0]) < 2 or any(b or a for b, a in pads[:-2]) or 0 in shapes[0]:
        return None
    return K.PlanePad(shapes[0], pads[-2], pads[-1], node.attrs.get("mode", "constant"),
                      float(node.attrs.get("value", 0.0)), ctx.dtype), True


@prepares("prior_box")
def _prior_box_prepare(node, p, shapes, ctx):
    # the priors depend on the shapes only: computed once, a copy handed out per run
    priors = K.prior_box(tuple(shapes[0][2:4]), _prior_image_hw(node, shapes[1]), dtype=ctx.dtype,
                         **_prior_kwargs(node))
    return (lambda feature, image: priors.copy()), False
