"""Run and shape functions of the broadcasting elementwise ops (ONNX Add/Sub/Mul/Div/Pow/Max/
Min/Sum/Mean, PRelu with a broadcast slope, Clip with any bounds), the ONNX unary ops, and
`constant` / `cast`. Kernels: refnet.kernels.elementwise."""

from __future__ import annotations

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.ops.activation import ADD_ACT_ATTRS, add_act_prepare, add_act_run
from refnet.ops.registry import Attr, attrs, kern, prepares, register, same_shape


def _bshape(node, shapes):
    try:
        return [tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))]
    except ValueError:
        raise ShapeError("operands do not broadcast", layer=node.name, expected="numpy-broadcastable shapes",
                         got=[tuple(s) for s in shapes]) from None


def _binary(op: str) -> None:
    fused = op == "add"  # an add may carry a fused activation (float32 only; add_act_run)

    @register(op, shape=_bshape, kernel="broadcast_binary", attrs=ADD_ACT_ATTRS if fused else None)
    def run(node, xs, p, ctx):
        if fused and attrs(node)["activation"] is not None:
            return add_act_run(node, xs, p, ctx)
        return kern("broadcast_binary", ctx)(op, list(xs))

    if fused:
        prepares(op)(add_act_prepare)


for _op in K.BINARY_OPS:
    _binary(_op)


_UNARY_ATTRS = {"alpha": Attr(0.0, float), "beta": Attr(0.0, float), "gamma": Attr(0.0, float)}


def _unary(op: str) -> None:
    @register(op, shape=same_shape, kernel="unary", attrs=_UNARY_ATTRS)
    def run(node, xs, p, ctx):
        a = attrs(node)
        return kern("unary", ctx)(op, xs[0], a["alpha"], a["beta"], a["gamma"])


for _op in K.UNARY_OPS:
    _unary(_op)


def _prelu_shape(node, shapes):
    slope = node.params.get("slope")
    s = tuple(slope.shape) if slope is not None else tuple(shapes[1])
    out = _bshape(node, [tuple(shapes[0]), s])[0]
    if out != tuple(shapes[0]):
        raise ShapeError("the slope must broadcast to the input (unidirectionally)", layer=node.name,
                         expected=tuple(shapes[0]), got=s)
    return [out]


@register("prelu_nd", shape=_prelu_shape)
def _prelu_nd(node, xs, p, ctx):
    slope = p["slope"] if "slope" in p else xs[1]
    return kern("prelu_nd", ctx)(xs[0], slope)


@register("clip_range", shape=same_shape, attrs={"min": Attr(-np.inf, float), "max": Attr(np.inf, float)})
def _clip_range(node, xs, p, ctx):
    a = attrs(node)
    return kern("clip_range", ctx)(xs[0], a["min"], a["max"])


@register("constant", shape=lambda node, shapes: [tuple(node.params["value"].shape)], kernel=None,
          no_kernel="its value is a param")
def _constant(node, xs, p, ctx):
    """A constant tensor (an ONNX initializer used as a run-time operand), in the run dtype."""
    return p["value"].reshape(node.params["value"].shape)  # params come back at least 1-D


@register("cast", shape=same_shape, attrs={"to": None}, kernel=None, no_kernel="one NumPy line")
def _cast(node, xs, p, ctx):
    """Cast to an integer (rounding toward zero), bool, float16 or bfloat16 type (rounded to the
    nearest value of that type, ties to even); the value stays in the run dtype."""
    x = xs[0]
    to = attrs(node)["to"]
    if to == "bool":
        return (x != 0).astype(x.dtype)
    if to == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(x.dtype)
    if to == "bfloat16":
        return round_bfloat16(x).astype(x.dtype)
    return np.trunc(x)


def round_bfloat16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 values (the upper 16 bits of its float32, nearest, ties to even;
    NaN stays NaN), as float32."""
    with np.errstate(over="ignore"):
        f = np.ascontiguousarray(x, dtype=np.float32)
    b = f.view(np.uint32)
    with np.errstate(over="ignore"):
        r = ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(np.isnan(f), f, r)


def _compare(op: str) -> None:
    @register(op, shape=_bshape, kernel="compare")
    def run(node, xs, p, ctx):
        return kern("compare", ctx)(op, xs[0], xs[1])


for _op in K.COMPARE_OPS:
    _compare(_op)


@register("not", shape=same_shape, kernel=None, no_kernel="one NumPy line")
def _not(node, xs, p, ctx):
    return (xs[0] == 0).astype(xs[0].dtype)


@register("where", shape=_bshape)
def _where(node, xs, p, ctx):
    return kern("where", ctx)(xs[0], xs[1], xs[2])


def _int_safe(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(divisor with its zeros replaced by 1, the zero mask)."""
    zero = b == 0
    return np.where(zero, b.dtype.type(1), b), zero


@register("mod", shape=_bshape, attrs={"fmod": Attr(False, bool), "integer": Attr(False, bool)}, kernel=None,
          no_kernel="a few NumPy lines (np.mod / np.fmod are exact on integer-valued floats)")
def _mod(node, xs, p, ctx):
    """ONNX Mod, broadcasting. ``fmod`` False: the remainder takes the divisor's sign (np.mod,
    Python's %); True: the dividend's sign (C fmod). ``integer`` (the ONNX inputs are integer
    tensors, carried as integer-valued floats): a zero divisor gives 0 (integer division by zero
    is undefined behaviour in onnxruntime's C++ kernels); otherwise (float tensors) it gives NaN,
    as the spec says. Both are exact on integer-valued floats (fmod is exact in IEEE arithmetic,
    and the sign correction of np.mod adds two integers of opposite signs)."""
    a, b = xs[0], xs[1]
    at = attrs(node)
    fn = np.fmod if at["fmod"] else np.mod
    with np.errstate(all="ignore"):
        if not at["integer"]:
            return fn(a, b)
        bs, zero = _int_safe(b)
        return np.where(zero, a.dtype.type(0), fn(a, bs) + a.dtype.type(0))  # + 0: no -0 among integers


@register("int_div", shape=_bshape, kernel=None, no_kernel="a few NumPy lines (exact on integer-valued floats)")
def _int_div(node, xs, p, ctx):
    """ONNX Div of integer tensors (carried as integer-valued floats): the quotient rounded toward
    zero, as C's integer division, computed exactly as (a - fmod(a, b)) / b (an exact integer
    divided by its divisor). A zero divisor gives 0 (undefined behaviour in onnxruntime's C++
    kernels; refnet picks 0, as its constant folding does)."""
    a, b = xs[0], xs[1]
    bs, zero = _int_safe(b)
    with np.errstate(all="ignore"):
        q = (a - np.fmod(a, bs)) / bs
    return np.where(zero, a.dtype.type(0), q + a.dtype.type(0))
