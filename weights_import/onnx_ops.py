"""The ONNX op table: one function per ONNX op, named like the op, reading its attributes with
the spec's defaults for the model's opset, emitting refnet IR nodes (docs/ops.md).

Constant inputs (initializers, Constant, folded shape arithmetic) become params or attributes;
ops whose inputs are all constant fold at load (:data:`FOLD`, plain NumPy in the input's
dtype). Rules that change between opsets are written once, next to the op, with the opset
that changed them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, ShapeError, UnsupportedLayerError
from refnet.kernels.geometry import pool_output_size, same_pads
from refnet.weights_import import onnx_schema as S
from refnet.weights_import._util import name_registry

__all__ = ["convert_node", "known_ops", "OPS", "FOLD"]

Handler = Callable[..., list]
#: the largest constant refnet computes at load (16M elements: 128 MiB in float64)
MAX_FOLDED = 1 << 24
#: the most indices a run-time Gather keeps in its attributes
MAX_GATHER = 1 << 20
OPS: dict[str, Handler] = {}
FOLD: dict[str, Handler] = {}


op = name_registry(OPS)  # @op("Conv"): the run-time conversion of an ONNX op type
fold = name_registry(FOLD)  # @fold("Shape"): its computation at load when every input is a constant


def known_ops() -> list[str]:
    """Every ONNX op type this reader converts (at run time or by folding)."""
    return sorted(set(OPS) | set(FOLD))


class N:
    """One ONNX node while it is converted: its layer name, inputs, outputs, attributes."""

    def __init__(self, b: Any, op_type: str, layer: str, ins: list[str], outs: list[str],
                 attrs: dict[str, Any]) -> None:
        self.b, self.op, self.layer, self.ins, self.outs, self.attrs = b, op_type, layer, ins, outs, attrs
        self.opset = b.opset

    def a(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def has(self, i: int) -> bool:
        return i < len(self.ins) and bool(self.ins[i])

    def const(self, i: int, what: str = "") -> np.ndarray:
        """Input ``i`` as a load-time constant (refused clearly when it is computed at run time)."""
        if not self.has(i):
            raise self.error(f"input {i} ({what or 'required'}) is missing", expected=f"input {i}")
        name = self.ins[i]
        if name not in self.b.consts:
            raise UnsupportedLayerError(self.layer, self.op, known_ops(), file=self.b.file,
                                        detail=f"input {i} ({what or name!r}) must be a constant (an initializer, "
                                               "a Constant or a shape computation refnet folds): refnet "
                                               "builds a static graph for fixed input shapes")
        return self.b.consts[name]

    def maybe_const(self, i: int) -> np.ndarray | None:
        return self.b.consts.get(self.ins[i]) if self.has(i) else None

    def rt(self, i: int) -> str:
        return self.b.rt(self.ins[i])

    def shape(self, i: int) -> tuple[int, ...]:
        return self.b.shape_of(self.ins[i])

    def emit(self, ir_op: str, inputs: Sequence[str], n_out: int = 1, *, attrs: dict | None = None,
             params: dict | None = None, name: str | None = None, layer: bool = True) -> list[str]:
        return self.b.emit(ir_op, inputs, name=name or self.layer, n_out=n_out, attrs=attrs, params=params,
                           layer=layer)

    def error(self, message: str, expected: str | None = None) -> ModelFormatError:
        return ModelFormatError(f"{self.op}: {message}", file=self.b.file, layer=self.layer,
                                expected=expected or f"attributes and inputs the ONNX spec allows for {self.op} "
                                                     f"(opset {self.opset})")

    def unsupported(self, detail: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(self.layer, self.op, known_ops(), file=self.b.file, detail=detail)


def convert_node(b: Any, op_type: str, layer: str, ins: list[str], outs: list[str], attrs: dict[str, Any]) -> None:
    """Fold or convert one ONNX node; record its outputs in the builder."""
    n = N(b, op_type, layer, ins, outs, attrs)
    for k, v in attrs.items():
        if type(v).__name__ == "_GraphAttr":
            raise n.unsupported(f"attribute {k!r} is a subgraph (control flow is not supported)")
    present = [t for t in ins if t]
    all_const = all(t in b.consts for t in present)
    if op_type == "CastLike" and present and present[0] in b.consts and not all_const:
        all_const = True  # the target of a run-time tensor is the run precision (float16/bfloat16: its values): fold
    if op_type in FOLD and (all_const or op_type in ("Shape", "Size")):
        results = FOLD[op_type](n)
    elif op_type in OPS:
        results = OPS[op_type](n)
    elif op_type in FOLD:
        raise n.unsupported("refnet evaluates this op only on constants (shape computations) and its inputs "
                            "here are computed at run time")
    else:
        raise UnsupportedLayerError(layer, op_type, known_ops(), file=b.file,
                                    detail=f"no such ONNX op in refnet's reader (opset {b.opset})")
    for t, v in zip(outs, results):
        if not t:
            continue
        if isinstance(v, (np.ndarray, np.generic)):  # a fold result (NumPy may hand back a scalar)
            v = np.asarray(v)
            if v.size > MAX_FOLDED:
                raise n.error(f"folded constant {t!r} has {v.size} elements", expected="a smaller constant")
            if v.nbytes > 64 and not any(np.may_share_memory(v, b.consts[x]) for x in present if x in b.consts):
                b.folded += v.nbytes  # memory of its own (views of its inputs, e.g. a Reshape, cost nothing)
                if b.folded > b.fold_limit:
                    raise n.error(f"the constants folded so far hold {b.folded} bytes, more than refnet computes "
                                  f"at load ({b.fold_limit})", expected="fewer or smaller computed constants")
            b.consts[t] = v
        elif v is None:
            raise n.error(f"output {t!r} is not produced (optional output refnet does not compute)",
                          expected="only the outputs refnet computes")
        else:
            b.tensor[t] = v
    if len(outs) > len(results) and any(outs[len(results):]):
        raise n.unsupported(f"it declares {len(outs)} outputs; refnet computes {len(results)}")
    half = _cast_code(n) if op_type in ("Cast", "CastLike") else None
    if half in (10, 16) and outs and outs[0]:  # float16/bfloat16 values held as float32: CastLike reads this
        b.halfs[outs[0]] = half
    ints = _int_outputs(n)
    for i, t in enumerate(outs):
        if t and i in ints and t in b.tensor:
            b.ints.add(t)


# ---- integer types of run-time tensors ------------------------------------------------------------
#: ONNX ops whose output i is an integer tensor whatever their inputs (indices, counts)
_INT_OUTPUTS = {"ArgMax": (0,), "ArgMin": (0,), "NonMaxSuppression": (0,), "NonZero": (0,), "TopK": (1,),
                "MaxPool": (1,), "Shape": (0,), "Size": (0,)}
#: ONNX ops whose outputs have the type of input k (the ops of one type constraint T)
_TYPE_FROM = {**dict.fromkeys(("Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Sum", "Identity",
                               "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
                               "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Pad", "Split",
                               "TopK", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "Sign", "Relu", "Clip",
                               "ScatterElements", "Scatter", "ScatterND", "Pow"), 0), "Where": 1}


def is_int(b: Any, name: str) -> bool:
    """Whether ONNX tensor ``name`` has an integer type: a constant's dtype; a run-time tensor as
    tracked in ``b.ints`` (graph inputs of an integer type, index outputs, integer casts, and
    what the ops of :data:`_TYPE_FROM` make of them). refnet carries every run-time tensor as
    floats; Div and Mod read this to apply the integer rules."""
    if name in b.consts:
        return b.consts[name].dtype.kind in "iu"
    return name in getattr(b, "ints", ())


def _int_outputs(n: N) -> set[int]:
    """The outputs of node ``n`` that are integer tensors (by the op's type rule)."""
    if n.op == "Cast":
        return {0} if int(n.a("to", 1)) in S.INT_TYPES else set()
    if n.op == "CastLike":
        return {0} if n.has(1) and is_int(n.b, n.ins[1]) else set()
    out = set(_INT_OUTPUTS.get(n.op, ()))
    k = _TYPE_FROM.get(n.op)
    if k is not None and n.has(k) and is_int(n.b, n.ins[k]):
        out |= set(range(len(n.outs)))
    return out


# ---- helpers ------------------------------------------------------------------------------------
def _axis(n: N, axis: int, ndim: int) -> int:
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < ndim:
        raise n.error(f"axis {axis} is out of range for rank {ndim}", expected=f"-{ndim} <= axis < {ndim}")
    return a


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(v).reshape(-1))


def _axes_input(n: N, attr_until: int, i: int, ndim: int) -> tuple[int, ...] | None:
    """``axes`` from the attribute (opset < attr_until) or from input ``i`` (opset >= attr_until)."""
    if n.opset < attr_until:
        ax = n.a("axes")
    else:
        ax = _ints(n.const(i, "axes")) if n.has(i) else None
    if ax is None:
        return None
    return tuple(sorted(_axis(n, int(a), ndim) for a in ax))


# ---- constants and pass-through ------------------------------------------------------------------
@fold("Constant")
def Constant(n: N) -> list:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in n.attrs:
            v = n.attrs[key]
            if key.startswith("value_float"):
                return [np.asarray(v, np.float32)]
            if key.startswith("value_int"):
                return [np.asarray(v, np.int64)]
            return [np.asarray(v)]
    raise n.unsupported("only numeric value/value_float(s)/value_int(s) constants are supported")


@op("Constant")
def _constant_rt(n: N) -> list:
    return Constant(n)


@fold("Identity", "Dropout")
def _identity_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    return [x, np.ones(x.shape, bool)][:len(n.outs)] if n.op == "Dropout" else [x]


@op("Identity")
def Identity(n: N) -> list:
    return n.emit("identity", [n.rt(0)])


@op("Dropout")
def Dropout(n: N) -> list:
    """Inference: the input unchanged (the mask output, if asked for, is all true)."""
    if n.opset >= 12 and n.has(2):
        training = n.const(2, "training_mode")
        ratio = n.maybe_const(1) if n.has(1) else None
        zero = ratio is not None and ratio.size == 1 and float(ratio.reshape(-1)[0]) == 0.0
        if training.size and bool(training.reshape(-1)[0]) and not zero:
            raise n.unsupported("training_mode=1 (random dropout): refnet runs inference only")
    y = n.emit("identity", [n.rt(0)])
    return y + [np.ones(n.shape(0), bool)] if len(n.outs) > 1 else y


# ---- shape arithmetic (folded) -----------------------------------------------------------------
@fold("Shape")
def Shape(n: N) -> list:
    """The input's dims (opset 15: dims[start:end]), a constant -- or, when a dim is known only at
    run time (after NonMaxSuppression), a run-time `shape_of`."""
    s = np.asarray(n.shape(0), np.int64)
    r = len(s)
    start, end = 0, r
    if n.opset >= 15:
        start = int(n.a("start", 0))
        end = n.a("end")
        start = min(max(start + r if start < 0 else start, 0), r)
        end = r if end is None else min(max(int(end) + r if int(end) < 0 else int(end), 0), r)
        s = s[start:end]
    if np.any(s < 0):
        return n.emit("shape_of", [n.rt(0)], attrs={"start": start, "end": end})
    return [s]


@fold("Size")
def Size(n: N) -> list:
    if any(d < 0 for d in n.shape(0)):
        raise n.unsupported("Size of a tensor whose size is known only at run time")
    return [np.asarray(math.prod(n.shape(0)), np.int64)]


def _cast_code(n: N) -> int | None:
    """The ONNX element type a Cast casts to (``to``); for CastLike the target's where the reader
    knows it only by its type (float16 / bfloat16 tensors, which refnet holds as float32:
    ``b.halfs``), else None (the target's NumPy dtype says it)."""
    if n.op == "Cast":
        return int(n.a("to", 1))
    return n.b.halfs.get(n.ins[1]) if n.has(1) else None


@fold("Cast", "CastLike")
def Cast(n: N) -> list:
    from refnet.weights_import.onnx_schema import DTYPES

    x = n.b.consts[n.ins[0]]
    code = _cast_code(n)
    if n.op == "CastLike" and code is None:
        dt = n.b.consts[n.ins[1]].dtype if n.has(1) and n.b.is_const(n.ins[1]) else np.dtype(np.float32)
    else:
        if code not in DTYPES:
            raise n.unsupported(f"cast to data type {code}")
        dt = DTYPES[code] if code not in (10, 16) else np.dtype(np.float32)
    with np.errstate(all="ignore"):
        if code == 10:  # float16 values, kept as float32 (as the reader widens them)
            return [x.astype(np.float16).astype(np.float32)]
        if code == 16:
            from refnet.ops.elementwise import round_bfloat16

            return [round_bfloat16(x)]
        if dt.kind in "iu" and x.dtype.kind == "f":
            x = np.trunc(np.nan_to_num(x))
        return [x.astype(dt)]


@op("Cast", "CastLike")
def _cast_rt(n: N) -> list:
    """A cast of a run-time tensor to float/double keeps it (refnet computes in the run precision);
    to float16/bfloat16 it rounds to that type's values (as onnxruntime does; the value stays in
    the run precision); to an integer type it rounds toward zero, as C casts do."""
    from refnet.weights_import.onnx_schema import DTYPES

    code = _cast_code(n)
    if n.op == "CastLike" and code is None:
        dt = n.const(1).dtype if n.b.is_const(n.ins[1]) else np.dtype(np.float32)
    else:
        dt = DTYPES.get(code) if code is not None else None
    if dt is None:
        raise n.unsupported(f"cast to data type {code}")
    if code in (10, 16):
        return n.emit("cast", [n.rt(0)], attrs={"to": "float16" if code != 16 else "bfloat16"})
    if dt.kind == "f":
        return n.emit("identity", [n.rt(0)])
    if dt.kind == "b":
        return n.emit("cast", [n.rt(0)], attrs={"to": "bool"})
    return n.emit("cast", [n.rt(0)], attrs={"to": "int"})


@fold("ConstantOfShape")
def ConstantOfShape(n: N) -> list:
    shape = _ints(n.b.consts[n.ins[0]]) if n.has(0) else ()
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_FOLDED:
        raise n.error(f"shape {shape} is negative or too large", expected="a small non-negative shape")
    v = n.a("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    if v.size != 1:
        raise n.error("value must hold one element", expected="a one-element tensor")
    return [np.full(shape, v[0], v.dtype)]


@fold("Range")
def Range(n: N) -> list:
    start, limit, delta = (n.b.consts[n.ins[i]].reshape(-1)[0] for i in range(3))
    if delta == 0:
        raise n.error("delta is 0", expected="a non-zero delta")
    count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    if count > MAX_FOLDED:
        raise n.error(f"range of {count} elements", expected="a smaller range")
    return [(start + np.arange(count) * delta).astype(np.result_type(start, delta))]


def _fold_fits(n: N, shape: Sequence[int]) -> None:
    """Refuse a folded result of ``shape`` over :data:`MAX_FOLDED` elements before computing it
    (its size follows from its inputs' shapes and values: indices, many inputs, non-zeros)."""
    if math.prod(shape) > MAX_FOLDED:
        raise n.error(f"folded result of shape {tuple(int(d) for d in shape)} is too large",
                      expected=f"at most {MAX_FOLDED} elements")


def _bcast_fold(fn: Callable) -> Handler:
    def h(n: N) -> list:
        xs = [n.b.consts[t] for t in n.ins if t]
        try:
            shape = np.broadcast_shapes(*[x.shape for x in xs])
        except ValueError:
            raise n.error(f"inputs of shapes {[x.shape for x in xs]} do not broadcast",
                          expected="numpy-broadcastable shapes") from None
        if math.prod(shape) > MAX_FOLDED:
            raise n.error("broadcast result too large", expected=f"at most {MAX_FOLDED} elements")
        with np.errstate(all="ignore"):
            return [np.asarray(fn(*xs))]
    return h


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer tensors: the quotient rounded toward zero (C's integer division); a zero divisor
    gives 0 (undefined in onnxruntime's C++ kernels; as the run-time `int_div`)."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        bs = np.where(b == 0, 1, b)
        q = (a - np.fmod(a, bs)) // bs  # exact: the dividend less its C remainder divides evenly
        return np.where(b == 0, 0, q).astype(np.result_type(a, b))
    return np.true_divide(a, b)


def _reduce_n(fn):
    def f(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return f


for _name, _fn in [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", _div),
                   ("Pow", lambda a, b: np.power(a, b).astype(a.dtype)),
                   ("Equal", np.equal), ("Greater", np.greater), ("Less", np.less),
                   ("GreaterOrEqual", np.greater_equal), ("LessOrEqual", np.less_equal),
                   ("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor),
                   ("Max", _reduce_n(np.maximum)), ("Min", _reduce_n(np.minimum)), ("Sum", _reduce_n(np.add)),
                   ("Mean", lambda *xs: _reduce_n(np.add)(*xs) / len(xs)),
                   ("Where", lambda c, a, b: np.where(c.astype(bool), a, b)),
                   ("Not", np.logical_not), ("Neg", np.negative), ("Abs", np.abs), ("Floor", np.floor),
                   ("Ceil", np.ceil), ("Sqrt", np.sqrt), ("Reciprocal", lambda a: 1 / a), ("Sign", np.sign),
                   ("Exp", np.exp), ("Log", np.log), ("Round", np.round)]:
    FOLD[_name] = _bcast_fold(_fn)


@fold("Mod")
def _mod_fold(n: N) -> list:
    """fmod=0 (the default): the remainder takes the divisor's sign (np.mod; integers, and floats
    from opset 28); fmod=1: the dividend's sign (C fmod). An integer divisor of 0 gives 0."""
    fmod = int(n.a("fmod", 0))
    return _bcast_fold(lambda a, b: (np.fmod if fmod else np.mod)(a, np.where(b == 0, 1, b) if b.dtype.kind in "iub"
                                                                    else b))(n)


@fold("Gather")
def _gather_fold(n: N) -> list:
    x, idx = n.b.consts[n.ins[0]], n.b.consts[n.ins[1]].astype(np.int64)
    ax = _axis(n, int(n.a("axis", 0)), x.ndim)
    d = x.shape[ax]
    if np.any((idx < -d) | (idx >= d)):
        raise n.error(f"index out of range for axis of size {d}", expected=f"indices in [-{d}, {d})")
    _fold_fits(n, x.shape[:ax] + idx.shape + x.shape[ax + 1:])
    return [np.take(x, np.where(idx < 0, idx + d, idx), axis=ax)]


def _elements_indices(n: N, shape: tuple[int, ...], idx: np.ndarray | None, ax: int) -> np.ndarray | None:
    """GatherElements/ScatterElements: the indices' rank and off-axis dims checked against the
    data's ``shape``; constant indices checked to lie in [-d, d) and returned with the negative
    ones counted from the end (None for run-time indices)."""
    if idx is None:
        return None
    if idx.ndim != len(shape) or any(i != ax and e > d for i, (d, e) in enumerate(zip(shape, idx.shape))):
        raise n.error(f"indices of shape {idx.shape} for data of shape {shape}",
                      expected="indices of the data's rank, no larger off the axis")
    d = shape[ax]
    idx = idx.astype(np.int64)
    if np.any((idx < -d) | (idx >= d)):
        raise n.error(f"index out of range for an axis of size {d}", expected=f"indices in [-{d}, {d})")
    return np.where(idx < 0, idx + d, idx)


@fold("GatherElements")
def _gather_elements_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    ax = _axis(n, int(n.a("axis", 0)), x.ndim)
    idx = _elements_indices(n, x.shape, n.b.consts[n.ins[1]], ax)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[ax] = idx
    return [x[tuple(grid)]]


@fold("Unsqueeze", "Squeeze", "Reshape", "Flatten")
def _reshape_fold(n: N) -> list:
    """A shape-only op on a constant: reshape it to the shape the op gives at run time."""
    x = n.b.consts[n.ins[0]]
    target = {"Unsqueeze": _unsqueeze_shape, "Squeeze": _squeeze_shape, "Reshape": _reshape_target,
              "Flatten": _flatten_target}[n.op]
    return [x.reshape(target(n, x.shape))]


@fold("Concat")
def _concat_fold(n: N) -> list:
    xs = [n.b.consts[t] for t in n.ins if t]
    ax = _axis(n, int(n.a("axis", 0 if n.opset < 4 else 1)), xs[0].ndim)
    if any(x.ndim != xs[0].ndim or x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:]
           for x in xs):
        raise n.error("inputs differ outside the concatenation axis", expected="matching shapes")
    _fold_fits(n, (sum(x.size for x in xs),))
    return [np.concatenate(xs, axis=ax)]


@fold("Slice")
def _slice_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    return [x[_slices(n, x.shape)]]


@fold("Transpose")
def _transpose_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    return [np.transpose(x, _perm(n, x.ndim))]


@fold("Expand")
def _expand_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    if math.prod(_expand_shape(n, x.shape)) > MAX_FOLDED:
        raise n.error("expanded constant too large", expected=f"at most {MAX_FOLDED} elements")
    return [np.array(np.broadcast_to(x, _expand_shape(n, x.shape)))]


@fold("Tile")
def _tile_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    reps = _ints(n.b.consts[n.ins[1]])
    if len(reps) != x.ndim or any(r < 0 for r in reps) or x.size * math.prod(reps) > MAX_FOLDED:
        raise n.error(f"repeats {reps} do not fit rank {x.ndim}", expected="one non-negative repeat per axis")
    return [np.tile(x, reps)]


@fold("NonZero")
def _nonzero_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    _fold_fits(n, (max(x.ndim, 1), int(np.count_nonzero(x))))
    return [np.array(np.nonzero(x), np.int64)]


@fold("ReduceProd", "ReduceSum", "ReduceMin", "ReduceMax", "ReduceMean")
def _reduce_fold(n: N) -> list:
    x = n.b.consts[n.ins[0]]
    axes = _reduce_axes(n, x.ndim)
    fn = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMin": np.min, "ReduceMax": np.max,
          "ReduceMean": np.mean}[n.op]
    if axes == ():
        return [x.copy()]
    kw = {}
    if n.op in ("ReduceMin", "ReduceMax"):  # the identity: an empty set reduces to +-inf (the type's bound)
        big = n.op == "ReduceMin"
        kw["initial"] = (big if x.dtype.kind == "b" else
                         (np.iinfo(x.dtype).max if big else np.iinfo(x.dtype).min) if x.dtype.kind in "iu" else
                         (np.inf if big else -np.inf))
    return [np.asarray(fn(x, axis=axes, keepdims=bool(n.a("keepdims", 1)), **kw)).astype(x.dtype)]


# ---- shape rules shared by folding and run-time layers --------------------------------------------
def _unsqueeze_shape(n: N, shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = n.a("axes") if n.opset < 13 else _ints(n.const(1, "axes"))
    if axes is None:
        raise n.error("axes are required", expected="axes")
    r = len(shape) + len(axes)
    ax = sorted(_axis(n, int(a), r) for a in axes)
    if len(set(ax)) != len(ax):
        raise n.error("repeated axes", expected="distinct axes")
    out = list(shape)
    for a in ax:
        out.insert(a, 1)
    return tuple(out)


def _squeeze_shape(n: N, shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = _axes_input(n, 13, 1, len(shape))
    if axes is None:
        return tuple(d for d in shape if d != 1)
    for a in axes:
        if shape[a] != 1:
            raise n.error(f"cannot squeeze axis {a} of size {shape[a]}", expected="size 1")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reshape_target(n: N, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Reshape's target: 0 copies the input dim (unless allowzero, opset 14), one -1 is inferred."""
    if n.opset < 5:
        target = list(n.a("shape", ()))
    else:
        target = list(_ints(n.const(1, "shape")))
    allowzero = int(n.a("allowzero", 0)) if n.opset >= 14 else 0
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise n.error(f"0 at position {i} copies a dim the input (rank {len(shape)}) lacks")
            d = shape[i]
        out.append(d)
    total = math.prod(shape)
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise n.error(f"bad target shape {target}", expected="at most one -1 and no other negative dim")
    if -1 in out:
        rest = math.prod(d for d in out if d != -1)
        if rest == 0 or total % rest:
            raise n.error(f"cannot infer -1 reshaping {shape} to {target}", expected="a divisible size")
        out[out.index(-1)] = total // rest
    if math.prod(out) != total:
        raise ShapeError(f"cannot reshape {shape} ({total} elements) to {tuple(out)}", layer=n.layer,
                         expected=total, got=tuple(out))
    return tuple(out)


def _flatten_target(n: N, shape: tuple[int, ...]) -> tuple[int, int]:
    ax = int(n.a("axis", 1))
    ax = ax + len(shape) if ax < 0 else ax
    if not 0 <= ax <= len(shape):
        raise n.error(f"axis {ax} out of range for rank {len(shape)}", expected=f"0..{len(shape)}")
    return (math.prod(shape[:ax]), math.prod(shape[ax:]))


def _slices(n: N, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Slice's per-axis windows (opset < 10: attributes; >= 10: inputs with optional steps),
    clamped as the spec says: for positive steps start and end to [0, dim]; for negative steps
    start to [0, dim-1] and end to [-1, dim-1] (-1: up to and including index 0)."""
    if n.opset < 10:
        starts, ends = n.a("starts", ()), n.a("ends", ())
        axes = n.a("axes")
        steps: Sequence[int] = [1] * len(starts)
    else:
        starts, ends = _ints(n.const(1, "starts")), _ints(n.const(2, "ends"))
        axes = _ints(n.const(3, "axes")) if n.has(3) else None
        steps = _ints(n.const(4, "steps")) if n.has(4) else [1] * len(starts)
    if axes is None:
        axes = range(len(starts))
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise n.error("starts, ends, axes and steps differ in length", expected="equal lengths")
    sl = [slice(None)] * len(shape)
    seen = set()
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _axis(n, int(a), len(shape))
        if a in seen:
            raise n.error("repeated axis", expected="distinct axes")
        seen.add(a)
        d = shape[a]
        if st == 0:
            raise n.error("step 0", expected="a non-zero step")
        s = int(s) + d if s < 0 else int(s)
        e = int(e) + d if e < 0 else int(e)
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        sl[a] = slice(s, e if e >= 0 else None, int(st))
    return tuple(sl)


def _perm(n: N, ndim: int) -> tuple[int, ...]:
    p = n.a("perm")
    perm = tuple(range(ndim))[::-1] if p is None else tuple(int(v) for v in p)
    if sorted(perm) != list(range(ndim)):
        raise n.error(f"perm {perm} is not a permutation of {ndim} axes", expected="a permutation")
    return perm


def _expand_shape(n: N, shape: tuple[int, ...]) -> tuple[int, ...]:
    target = _ints(n.const(1, "shape"))
    try:
        out = np.broadcast_shapes(shape, target)
    except ValueError:
        raise n.error(f"shape {target} does not broadcast with {shape}", expected="broadcastable") from None
    if math.prod(out) > (1 << 31):
        raise n.error("expanded tensor too large", expected="at most 2**31 elements")
    return tuple(out)


def _reduce_axes(n: N, ndim: int) -> tuple[int, ...] | None:
    """Reduce axes: attribute before opset 18 (ReduceSum: 13), input after; none = all axes,
    unless noop_with_empty_axes (then nothing is reduced, returned as ())."""
    until = 13 if n.op == "ReduceSum" else 18
    axes = _axes_input(n, until, 1, ndim)
    if not axes:
        if int(n.a("noop_with_empty_axes", 0)) and n.opset >= until:
            return ()
        return tuple(range(ndim))
    return axes


# ---- run-time shape ops ------------------------------------------------------------------------------
@op("Reshape")
def Reshape(n: N) -> list:
    if n.opset >= 5 and n.has(1) and n.maybe_const(1) is None:  # the target computed at run time
        if len(n.shape(1)) != 1 or n.shape(1)[0] < 0:
            raise n.error(f"shape input of shape {n.shape(1)}", expected="a 1-D shape tensor of known length")
        allowzero = bool(int(n.a("allowzero", 0))) if n.opset >= 14 else False
        return n.emit("reshape_dyn", [n.rt(0), n.rt(1)], attrs={"allowzero": allowzero})
    if any(d < 0 for d in n.shape(0)):  # a dim known only at run time: the target resolved then
        target = _ints(n.const(1, "shape")) if n.opset >= 5 else tuple(n.a("shape", ()))
        if sum(d == -1 for d in target) > 1 or any(d < -1 for d in target):
            raise n.error(f"bad target shape {target}", expected="at most one -1 and no other negative dim")
        allowzero = bool(int(n.a("allowzero", 0))) if n.opset >= 14 else False
        return n.emit("reshape_dyn", [n.rt(0)], attrs={"shape": target, "allowzero": allowzero})
    target = _reshape_target(n, n.shape(0))
    if 0 in target:  # the IR's reshape copies a dim for 0 (Caffe's rule): an empty target needs reshape_to
        return n.emit("reshape_to", [n.rt(0)], attrs={"shape": target})
    return n.emit("reshape", [n.rt(0)], attrs={"shape": target})


@op("Flatten")
def Flatten(n: N) -> list:
    return n.emit("reshape", [n.rt(0)], attrs={"shape": _flatten_target(n, n.shape(0))})


@op("Squeeze")
def Squeeze(n: N) -> list:
    return n.emit("reshape", [n.rt(0)], attrs={"shape": _squeeze_shape(n, n.shape(0))})


@op("Unsqueeze")
def Unsqueeze(n: N) -> list:
    return n.emit("reshape", [n.rt(0)], attrs={"shape": _unsqueeze_shape(n, n.shape(0))})


@op("Transpose")
def Transpose(n: N) -> list:
    return n.emit("permute", [n.rt(0)], attrs={"order": _perm(n, len(n.shape(0)))})


@op("Concat")
def Concat(n: N) -> list:
    shapes = [n.b.shape_of(t) for t in n.ins if t]
    ax = _axis(n, int(n.a("axis", 0 if n.opset < 4 else 1)), len(shapes[0]))
    present = [t for t in n.ins if t]
    ins = [n.b.rt(t) for t in present if 0 not in n.b.shape_of(t)] or [n.b.rt(present[0])]  # -1: run-time size
    return n.emit("concat", ins, attrs={"axis": ax})


@op("Split")
def Split(n: N) -> list:
    """Split sizes: attribute ``split`` before opset 13, input 1 from 13; none = equal parts
    (opset 18: ``num_outputs``, the last part smaller)."""
    shape = n.shape(0)
    ax = _axis(n, int(n.a("axis", 0)), len(shape))
    if n.opset < 13:
        split = n.a("split")
    else:
        split = _ints(n.const(1, "split")) if n.has(1) else None
    k = len(n.outs)
    d = shape[ax]
    if split is None:
        if n.opset >= 18 and n.a("num_outputs") is not None:
            k = int(n.a("num_outputs"))
            size = -(-d // k)
            split = [size] * (k - 1) + [d - size * (k - 1)]
        else:
            if d % k:
                raise n.error(f"axis of size {d} does not split into {k} equal parts", expected="a divisible axis")
            split = [d // k] * k
    split = [int(s) for s in split]
    if sum(split) != d or any(s < 0 for s in split) or len(split) != k:
        raise n.error(f"split {split} does not partition axis of size {d} into {k} outputs",
                      expected=f"{k} sizes summing to {d}")
    points = tuple(int(p) for p in np.cumsum(split)[:-1])
    if 0 in split:  # the IR's slice wants non-empty parts: one strided_slice per output
        x, ndim, outs, start = n.rt(0), len(shape), [], 0
        for i, size in enumerate(split):
            st = [0] * ndim
            sp = list(shape)
            st[ax], sp[ax] = start, start + size
            outs += n.emit("strided_slice", [x], name=n.layer if i == 0 else f"{n.layer}/{i}", layer=i == 0,
                           attrs={"starts": tuple(st), "stops": tuple(sp), "steps": (1,) * ndim})
            start += size
        return outs
    return n.emit("slice", [n.rt(0)], k, attrs={"axis": ax, "points": points})


@op("Slice")
def Slice(n: N) -> list:
    sl = _slices(n, n.shape(0))
    return n.emit("strided_slice", [n.rt(0)], attrs={
        "starts": tuple(s.start if s.start is not None else 0 for s in sl),
        "stops": tuple(-1 if s.stop is None and (s.step or 1) < 0 else (s.stop if s.stop is not None else d)
                       for s, d in zip(sl, n.shape(0))),
        "steps": tuple(s.step or 1 for s in sl)})


@op("Gather")
def Gather(n: N) -> list:
    shape = n.shape(0)
    ax = _axis(n, int(n.a("axis", 0)), len(shape))
    if n.maybe_const(1) is None:  # indices computed at run time (e.g. TopK's, NonMaxSuppression's)
        return n.emit("take", [n.rt(0), n.rt(1)], attrs={"axis": ax})
    idx = n.const(1, "indices").astype(np.int64)
    if idx.size > MAX_GATHER:
        raise n.unsupported(f"{idx.size} gather indices (refnet keeps at most {MAX_GATHER})")
    d = shape[ax]
    if np.any((idx < -d) | (idx >= d)):
        raise n.error(f"index out of range for axis of size {d}", expected=f"indices in [-{d}, {d})")
    idx = np.where(idx < 0, idx + d, idx)
    return n.emit("gather", [n.rt(0)], attrs={"axis": ax, "indices": tuple(idx.reshape(-1).tolist()),
                                              "indices_shape": tuple(idx.shape)})


@op("GatherElements")
def GatherElements(n: N) -> list:
    """y has the indices' shape; along ``axis`` (default 0) each element is taken from the data at
    its index, off the axis at its own position. Opset 11 and 13 differ only in types (13 adds
    bfloat16). Negative indices count from the end; indices may be computed at run time (e.g.
    TopK's), checked then."""
    shape = n.shape(0)
    ax = _axis(n, int(n.a("axis", 0)), len(shape))
    if len(n.shape(1)) != len(shape):
        raise n.error(f"indices of rank {len(n.shape(1))} for data of rank {len(shape)}",
                      expected="indices of the data's rank")
    idx = _elements_indices(n, shape, n.maybe_const(1), ax)
    ins = [n.rt(0), n.rt(1) if idx is None else _const_rt(n, idx, "indices")]
    return n.emit("gather_elements", ins, attrs={"axis": ax})


def _scatter_reduction(n: N) -> str:
    """ScatterElements/ScatterND's ``reduction``: "none" before opset 16, then add/mul, from 18
    max/min too."""
    red = n.a("reduction", "none") if n.opset >= 16 else "none"
    allowed = ("none", "add", "mul") + (("max", "min") if n.opset >= 18 else ())
    if red not in allowed:
        raise n.error(f"reduction {red!r}", expected=" / ".join(allowed))
    return red


@op("ScatterElements", "Scatter")
def ScatterElements(n: N) -> list:
    """A copy of the data with ``updates`` written at ``indices`` along ``axis`` (ScatterElements
    11; Scatter 9-10 is the same op under its old name). ``reduction`` (opset 16: add, mul; 18:
    max, min) combines with the value there; "none": repeated indices leave the last update
    (the spec calls it undefined). Negative indices count from the end."""
    shape = n.shape(0)
    ax = _axis(n, int(n.a("axis", 0)), len(shape))
    red = _scatter_reduction(n)
    if len(n.shape(1)) != len(shape) or n.shape(2) != n.shape(1):
        raise n.error(f"indices {n.shape(1)} and updates {n.shape(2)} for data {shape}",
                      expected="indices and updates of one shape, the data's rank")
    idx = _elements_indices(n, shape, n.maybe_const(1), ax)
    ins = [n.rt(0), n.rt(1) if idx is None else _const_rt(n, idx, "indices"), n.rt(2)]
    return n.emit("scatter_elements", ins, attrs={"axis": ax, "reduction": red})


@op("ScatterND")
def ScatterND(n: N) -> list:
    """A copy of the data with each index row (the indices' last axis, m values) addressing a
    slice ``data[i0, .., im-1]`` set to its update (opset 11); ``reduction`` (16: add, mul; 18:
    max, min) combines instead. Indices may be computed at run time (refnet's `--quirks cv2`
    YOLO export: NonMaxSuppression's rows)."""
    red = _scatter_reduction(n)
    return n.emit("scatter_nd", [n.rt(0), n.rt(1), n.rt(2)], attrs={"reduction": red})


@op("ConstantOfShape")
def _constant_of_shape_rt(n: N) -> list:
    """ConstantOfShape of a shape computed at run time (e.g. the number of NonMaxSuppression
    rows): ``value`` (default 0.0) in a tensor whose dims are known at run time only."""
    v = n.a("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    if v.size != 1:
        raise n.error("value must hold one element", expected="a one-element tensor")
    if len(n.shape(0)) != 1 or n.shape(0)[0] < 0:
        raise n.error(f"shape input of shape {n.shape(0)}", expected="a 1-D shape tensor of known length")
    return n.emit("constant_of_shape", [n.rt(0)], attrs={"value": float(v[0])})


def _const_rt(n: N, value: np.ndarray, what: str) -> str:
    """A load-time value (e.g. normalised indices) as a run-time operand: a `constant` layer."""
    return n.emit("constant", [], name=f"{n.layer}/{what}", params={"value": np.asarray(value)}, layer=False)[0]


@op("Expand")
def Expand(n: N) -> list:
    return n.emit("expand", [n.rt(0)], attrs={"shape": _expand_shape(n, n.shape(0))})


@op("Tile")
def Tile(n: N) -> list:
    reps = _ints(n.const(1, "repeats"))
    if len(reps) != len(n.shape(0)) or any(r < 0 for r in reps):
        raise n.error(f"repeats {reps} do not fit rank {len(n.shape(0))}", expected="one repeat per axis")
    return n.emit("tile", [n.rt(0)], attrs={"repeats": reps})


@op("Pad")
def Pad(n: N) -> list:
    """Pad: ``pads`` attribute (opset < 11; ``paddings`` in opset 1) or input 1, constant value
    attribute/input 2, axes input 3 (opset 18); modes constant/reflect/edge."""
    ndim = len(n.shape(0))
    if n.opset < 11:
        pads = n.a("pads", n.a("paddings"))
        value = float(n.a("value", 0.0))
        axes = list(range(ndim))
    else:
        if n.has(1) and n.maybe_const(1) is None:
            return _pad_dyn(n)
        pads = _ints(n.const(1, "pads"))
        cv = n.maybe_const(2)
        if n.has(2) and cv is None:
            raise n.unsupported("the constant value must be a constant")
        value = float(cv.reshape(-1)[0]) if cv is not None and cv.size else 0.0
        axes = [_axis(n, a, ndim) for a in _ints(n.const(3, "axes"))] if n.has(3) else list(range(ndim))
    pads = [int(p) for p in pads]
    if len(pads) != 2 * len(axes):
        raise n.error(f"{len(pads)} pads for {len(axes)} axes", expected=f"{2 * len(axes)} values")
    mode = n.a("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise n.unsupported(f"mode {mode!r} (refnet: constant, reflect, edge)")
    pp = [[0, 0] for _ in range(ndim)]
    for j, a in enumerate(axes):
        pp[a] = [pads[j], pads[j + len(axes)]]
    x = n.rt(0)
    if any(p < 0 for pr in pp for p in pr):  # negative pads crop
        shape = n.shape(0)
        x = n.emit("strided_slice", [x], name=f"{n.layer}/crop", layer=False, attrs={
            "starts": tuple(max(-b, 0) for b, _ in pp),
            "stops": tuple(d - max(-a, 0) for d, (_, a) in zip(shape, pp)), "steps": (1,) * ndim})[0]
        pp = [[max(b, 0), max(a, 0)] for b, a in pp]
    return n.emit("pad", [x], attrs={"pads": tuple(tuple(p) for p in pp), "mode": mode, "value": value})


def _pad_dyn(n: N) -> list:
    """Pad with pads computed at run time (refnet's SSD export pads its detections to keep_top_k
    rows): constant mode, all axes; every output dim is then known at run time only."""
    if n.a("mode", "constant") != "constant":
        raise n.unsupported(f"mode {n.a('mode')!r} with pads computed at run time (refnet: constant)")
    if n.has(3):
        raise n.unsupported("axes with pads computed at run time")
    cv = n.maybe_const(2)
    if n.has(2) and cv is None:
        raise n.unsupported("the constant value must be a constant")
    value = float(cv.reshape(-1)[0]) if cv is not None and cv.size else 0.0
    if n.shape(1) != (2 * len(n.shape(0)),):
        raise n.error(f"pads of shape {n.shape(1)} for rank {len(n.shape(0))}",
                      expected=f"({2 * len(n.shape(0))},)")
    return n.emit("pad_dyn", [n.rt(0), n.rt(1)], attrs={"value": value})


@op("GatherND")
def GatherND(n: N) -> list:
    """Each row of the indices' last axis (m values) addresses ``data[i0, .., im-1]`` (a slice of
    the remaining dims) after the first ``batch_dims`` (opset 12) dims; indices may be computed at
    run time (refnet's SSD export: NonMaxSuppression's), negatives count from the end."""
    bd = int(n.a("batch_dims", 0)) if n.opset >= 12 else 0
    xs, ts = n.shape(0), n.shape(1)
    if bd < 0 or not ts or ts[-1] < 1 or bd + ts[-1] > len(xs) or len(ts) - 1 < bd or ts[:bd] != xs[:bd]:
        raise n.error(f"indices of shape {ts} (batch_dims {bd}) for data of shape {xs}",
                      expected="indices[..., m] with batch_dims + m <= data rank, leading dims equal")
    return n.emit("gather_nd", [n.rt(0), n.rt(1)], attrs={"batch_dims": bd})


@op("DepthToSpace", "SpaceToDepth")
def DepthToSpace(n: N) -> list:
    bs = int(n.a("blocksize", 0))
    if bs <= 0:
        raise n.error("blocksize must be positive", expected="blocksize >= 1")
    if n.op == "SpaceToDepth":
        return n.emit("space_to_depth", [n.rt(0)], attrs={"blocksize": bs, "mode": n.a("mode", "DCR")})
    return n.emit("depth_to_space", [n.rt(0)], attrs={"blocksize": bs, "mode": n.a("mode", "DCR")})


# ---- elementwise ----------------------------------------------------------------------------------
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "max", "Min": "min",
           "Sum": "add", "Mean": "mean"}


@op(*_BINARY)
def Binary(n: N) -> list:
    """Numpy-style broadcasting (opset >= 7); before opset 7 ``broadcast=1`` with ``axis`` aligns
    the second operand at ``axis``. Div of integer tensors (:func:`is_int`) rounds toward zero
    (`int_div`)."""
    ins = [t for t in n.ins if t]
    ir = _BINARY[n.op]
    if n.op == "Div" and any(is_int(n.b, t) for t in ins):
        ir = "int_div"
    if n.opset < 7 and n.op in ("Add", "Sub", "Mul", "Div", "Pow") and int(n.a("broadcast", 0)) and len(ins) == 2:
        xs, ys = n.b.shape_of(ins[0]), n.b.shape_of(ins[1])
        ax = n.a("axis")
        if ax is not None and len(ys) < len(xs):
            a = _axis(n, int(ax), len(xs))
            new = (1,) * a + ys + (1,) * (len(xs) - a - len(ys))
            y = n.b.rt(ins[1])
            y = n.emit("reshape", [y], name=f"{n.layer}/align", layer=False, attrs={"shape": new})[0]
            return n.emit(ir, [n.b.rt(ins[0]), y])
    return n.emit(ir, [n.b.rt(t) for t in ins])


@op("Mod")
def Mod(n: N) -> list:
    """Remainder, broadcasting (opset 10; 13 adds bfloat16). ``fmod`` 0 (default): the sign of the
    divisor, A - floor(A / B) * B (np.mod; integer types -- and, from opset 28, floats too);
    1: the sign of the dividend, A - trunc(A / B) * B (C fmod). On integer tensors
    (:func:`is_int`) a zero divisor gives 0 (onnxruntime's integer kernels divide by zero:
    undefined behaviour, a crash on x86); on float tensors NaN, as the spec says."""
    fmod = int(n.a("fmod", 0))
    if fmod not in (0, 1):
        raise n.error(f"fmod = {fmod}", expected="0 or 1")
    integer = is_int(n.b, n.ins[0]) or is_int(n.b, n.ins[1])
    return n.emit("mod", [n.rt(0), n.rt(1)], attrs={"fmod": bool(fmod), "integer": integer})


_COMPARE = {"Less": "less", "LessOrEqual": "less_equal", "Greater": "greater", "GreaterOrEqual": "greater_equal",
            "Equal": "equal", "And": "and", "Or": "or", "Xor": "xor"}


@op(*_COMPARE)
def Compare(n: N) -> list:
    """Comparisons and logic on run-time tensors give 0/1 in the run precision."""
    return n.emit(_COMPARE[n.op], [n.rt(0), n.rt(1)])


@op("Not")
def Not(n: N) -> list:
    return n.emit("not", [n.rt(0)])


@op("Where")
def Where(n: N) -> list:
    return n.emit("where", [n.rt(0), n.rt(1), n.rt(2)])


_UNARY = {"Relu": ("relu", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "Abs": ("abs", {}),
          "Mish": ("mish", {}), "Sqrt": ("sqrt", {}), "Exp": ("exp", {}), "Log": ("log", {}),
          "Neg": ("neg", {}), "Reciprocal": ("reciprocal", {}), "Floor": ("floor", {}), "Ceil": ("ceil", {}),
          "Softplus": ("softplus", {}), "HardSwish": ("hard_swish", {}), "Softsign": ("softsign", {}),
          "Erf": ("erf", {}), "Sign": ("sign", {}), "Round": ("round", {})}


@op(*_UNARY)
def Unary(n: N) -> list:
    ir, attrs = _UNARY[n.op]
    return n.emit(ir, [n.rt(0)], attrs=attrs)


#: one-input activations with float attributes: ONNX op -> (IR op, {IR attribute: (ONNX attribute, ONNX default)})
_FLOAT_ATTR_UNARY = {
    "LeakyRelu": ("relu", {"negative_slope": ("alpha", 0.01)}),
    "Elu": ("elu", {"alpha": ("alpha", 1.0)}),
    "Selu": ("selu", {"alpha": ("alpha", 1.67326319217681884765625), "gamma": ("gamma", 1.05070102214813232421875)}),
    "Celu": ("celu", {"alpha": ("alpha", 1.0)}),
    "ThresholdedRelu": ("thresholded_relu", {"alpha": ("alpha", 1.0)}),
    "HardSigmoid": ("hard_sigmoid", {"alpha": ("alpha", 0.2), "beta": ("beta", 0.5)}),
}


@op(*_FLOAT_ATTR_UNARY)
def FloatAttrUnary(n: N) -> list:
    ir, spec = _FLOAT_ATTR_UNARY[n.op]
    return n.emit(ir, [n.rt(0)], attrs={k: float(n.a(name, default)) for k, (name, default) in spec.items()})


@op("Gelu")
def Gelu(n: N) -> list:
    approx = n.a("approximate", "none")
    if approx not in ("none", "tanh"):
        raise n.error(f"approximate {approx!r}", expected="none or tanh")
    return n.emit("gelu", [n.rt(0)], attrs={"alpha": 1.0 if approx == "tanh" else 0.0})


@op("Clip")
def Clip(n: N) -> list:
    """Bounds: attributes min/max before opset 11, optional inputs 1/2 from 11 (absent: no bound)."""
    if n.opset < 11:
        lo, hi = float(n.a("min", -np.inf)), float(n.a("max", np.inf))
    else:
        lo = float(n.const(1, "min").reshape(-1)[0]) if n.has(1) else -np.inf
        hi = float(n.const(2, "max").reshape(-1)[0]) if n.has(2) else np.inf
    return n.emit("clip_range", [n.rt(0)], attrs={"min": lo, "max": hi})


@op("PRelu")
def PRelu(n: N) -> list:
    """slope broadcasts to x unidirectionally (opset >= 7); a per-channel slope uses `prelu`."""
    xs = n.shape(0)
    slope = n.maybe_const(1)
    if slope is not None and len(xs) >= 2 and (slope.size == 1 or (
            slope.size == xs[1] and slope.ndim <= len(xs) - 1 and slope.shape[0] == xs[1]
            and all(d == 1 for d in slope.shape[1:]) and slope.ndim == len(xs) - 1)):
        return n.emit("prelu", [n.rt(0)], params={"slope": slope.reshape(-1).astype(np.float64)})
    if slope is not None:
        return n.emit("prelu_nd", [n.rt(0)], params={"slope": slope.astype(np.float64)})
    return n.emit("prelu_nd", [n.rt(0), n.rt(1)])


@op("Softmax", "LogSoftmax", "Hardmax")
def Softmax(n: N) -> list:
    """Opset >= 13: along ``axis`` (default -1). Before 13: the input is coerced to 2-D
    (dims before ``axis`` x dims from ``axis``, default axis 1) and normalised along the rows."""
    shape = n.shape(0)
    ir = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Hardmax": "hardmax"}[n.op]
    if n.opset >= 13:
        return n.emit(ir, [n.rt(0)], attrs={"axis": _axis(n, int(n.a("axis", -1)), len(shape))})
    ax = int(n.a("axis", 1))
    ax = ax + len(shape) if ax < 0 else ax
    if not 0 <= ax <= len(shape):
        raise n.error(f"axis {ax} out of range for rank {len(shape)}")
    if ax == len(shape) - 1:
        return n.emit(ir, [n.rt(0)], attrs={"axis": ax})
    flat = (math.prod(shape[:ax]), math.prod(shape[ax:]))
    x = n.emit("reshape", [n.rt(0)], name=f"{n.layer}/2d", layer=False, attrs={"shape": flat})[0]
    y = n.emit(ir, [x], name=f"{n.layer}/{ir}", layer=False, attrs={"axis": 1})[0]
    return n.emit("reshape", [y], attrs={"shape": shape})


# ---- convolution and linear ------------------------------------------------------------------------
def _auto_pads(n: N, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dil: Sequence[int]) -> list[int]:
    """ONNX ``pads`` (begin..., end...) with auto_pad applied: SAME_* make out = ceil(in / stride),
    the odd extra pad at the end (SAME_UPPER) or the beginning (SAME_LOWER); VALID: no pad."""
    k = len(spatial)
    mode = n.a("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        pads = [int(p) for p in n.a("pads", (0,) * (2 * k))]
        if len(pads) != 2 * k:
            raise n.error(f"{len(pads)} pads for {k} spatial axes", expected=f"{2 * k} values")
        return pads
    if mode == "VALID":
        return [0] * (2 * k)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise n.error(f"auto_pad {mode!r}", expected="NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    both = [same_pads(d, kk, s, dd, upper=mode == "SAME_UPPER") for d, kk, s, dd in zip(spatial, kernel, strides, dil)]
    return [b for b, _ in both] + [e for _, e in both]


def _geometry(n: N, spatial: Sequence[int], kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    k = len(spatial)
    strides = [int(s) for s in n.a("strides", (1,) * k)]
    dil = [int(d) for d in n.a("dilations", (1,) * k)]
    if len(strides) != k or len(dil) != k or min(strides + dil, default=1) <= 0:
        raise n.error(f"strides {strides} / dilations {dil} do not fit {k} spatial axes",
                      expected=f"{k} positive values each")
    pads = _auto_pads(n, spatial, kernel, strides, dil)
    if any(p < 0 for p in pads):
        raise n.error(f"negative pads {pads}", expected="pads >= 0")
    return strides, dil, pads


def _to2d(n: N, x: str, shape: tuple[int, ...]) -> tuple[str, bool]:
    """1-D spatial tensors run as 2-D with height 1."""
    if len(shape) == 3:
        return n.emit("reshape", [x], name=f"{n.layer}/as2d", layer=False,
                      attrs={"shape": (shape[0], shape[1], 1, shape[2])})[0], True
    if len(shape) != 4:
        raise n.unsupported(f"{len(shape) - 2}-D spatial input (refnet: 1-D and 2-D)")
    return x, False


def _weight(n: N, i: int, what: str) -> np.ndarray:
    w = n.maybe_const(i)
    if w is None:
        raise n.unsupported(f"{what} computed at run time (refnet needs constant weights)")
    return np.asarray(w, np.float64 if w.dtype == np.float64 else np.float32)


def _conv_input(n: N, w: np.ndarray, xs: tuple[int, ...]) -> tuple[dict, str, bool]:
    """Conv/ConvTranspose: the params (weight, the optional bias input 2) and the input; a 1-D
    one runs as 2-D with a unit H axis (weight too), ``one_d`` says so."""
    params = {"weight": w}
    if n.has(2):
        params["bias"] = _weight(n, 2, "bias").reshape(-1)
    x, one_d = _to2d(n, n.rt(0), xs)
    if one_d:
        params["weight"] = w[:, :, None, :]
    return params, x, one_d


def _emit_conv(n: N, ir: str, x: str, one_d: bool, attrs: dict, params: dict) -> list:
    """Emit the conv/deconv; a 1-D one (run as 2-D) is reshaped back to N x C x W."""
    if not one_d:
        return n.emit(ir, [x], attrs=attrs, params=params)
    y = n.emit(ir, [x], name=f"{n.layer}/2d", layer=False, attrs=attrs, params=params)[0]
    ys = n.b.shape[y]
    return n.emit("reshape", [y], attrs={"shape": (ys[0], ys[1], ys[3])})


@op("Conv")
def Conv(n: N) -> list:
    xs = n.shape(0)
    w = _weight(n, 1, "weights")
    if w.ndim != len(xs):
        raise n.error(f"weights of rank {w.ndim} for input of rank {len(xs)}", expected=f"rank {len(xs)}")
    ks = n.a("kernel_shape")
    if ks is not None and tuple(int(k) for k in ks) != w.shape[2:]:
        raise n.error(f"kernel_shape {ks} contradicts weights {w.shape}", expected=str(w.shape[2:]))
    strides, dil, pads = _geometry(n, xs[2:], w.shape[2:])
    params, x, one_d = _conv_input(n, w, xs)
    if one_d:
        strides, dil, pads = [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    else:
        pads = [pads[0], pads[1], pads[2], pads[3]]
    attrs = {"stride": tuple(strides), "dilation": tuple(dil), "pad": tuple(pads), "groups": int(n.a("group", 1))}
    return _emit_conv(n, "conv", x, one_d, attrs, params)


@op("ConvTranspose")
def ConvTranspose(n: N) -> list:
    """out = stride*(in-1) + output_padding + (k-1)*dilation + 1 - pad_begin - pad_end; with
    ``output_shape`` (or auto_pad SAME_*: in*stride) the total padding follows from it, split as
    the spec writes it (SAME_UPPER: total/2 first, otherwise total - total/2 first; / floors, as
    in onnx's reference). A negative pad (an output larger than the full one, e.g. a kernel
    smaller than the stride) adds zero rows there: a pad after the deconvolution. With
    ``output_shape`` and no auto_pad, such extra rows go at the end (onnx's reference and
    onnxruntime; the spec's split would put half first)."""
    xs = n.shape(0)
    w = _weight(n, 1, "weights")
    if w.ndim != len(xs):
        raise n.error(f"weights of rank {w.ndim} for input of rank {len(xs)}")
    k = len(xs) - 2
    strides = [int(s) for s in n.a("strides", (1,) * k)]
    dil = [int(d) for d in n.a("dilations", (1,) * k)]
    outpad = [int(p) for p in n.a("output_padding", (0,) * k)]
    if len(strides) != k or len(dil) != k or len(outpad) != k:
        raise n.error("strides/dilations/output_padding do not fit the spatial rank")
    kern = w.shape[2:]
    full = [s * (d - 1) + op_ + (kk - 1) * dd + 1 for d, s, op_, kk, dd in zip(xs[2:], strides, outpad, kern, dil)]
    auto = n.a("auto_pad", "NOTSET")
    oshape = n.a("output_shape")
    if oshape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = ([int(v) for v in oshape][-k:] if oshape is not None else [d * s for d, s in zip(xs[2:], strides)])
        total = [f - t for f, t in zip(full, target)]
        if auto == "SAME_UPPER":
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        elif auto == "SAME_LOWER":
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
        else:  # output_shape alone: a larger output than the full one gets its zeros at the end
            pads = [t - t // 2 if t > 0 else 0 for t in total] + [t // 2 if t > 0 else t for t in total]
    elif auto == "VALID":
        pads = [0] * (2 * k)
    else:
        pads = [int(p) for p in n.a("pads", (0,) * (2 * k))]
    if len(pads) != 2 * k:
        raise n.error("pads do not fit the spatial rank")
    params, x, one_d = _conv_input(n, w, xs)
    if one_d:
        strides, dil, outpad, pads = [1] + strides, [1] + dil, [0] + outpad, [0, pads[0], 0, pads[1]]
    attrs = {"stride": tuple(strides), "dilation": tuple(dil), "pad": tuple(pads), "groups": int(n.a("group", 1)),
             "output_padding": tuple(outpad)}
    if not any(p < 0 for p in pads):
        return _emit_conv(n, "deconv", x, one_d, attrs, params)
    # zero rows/columns beyond the full output (negative pads): a pad after the deconvolution
    h = len(pads) // 2
    attrs["pad"] = tuple(max(p, 0) for p in pads)
    y = n.emit("deconv", [x], name=f"{n.layer}/full", layer=False, attrs=attrs, params=params)[0]
    pp = ((0, 0), (0, 0)) + tuple((max(-b, 0), max(-e, 0)) for b, e in zip(pads[:h], pads[h:]))
    if not one_d:
        return n.emit("pad", [y], attrs={"pads": pp, "mode": "constant", "value": 0.0})
    y = n.emit("pad", [y], name=f"{n.layer}/2d", layer=False, attrs={"pads": pp, "mode": "constant", "value": 0.0})[0]
    ys = n.b.shape[y]
    return n.emit("reshape", [y], attrs={"shape": (ys[0], ys[1], ys[3])})


@op("Gemm")
def Gemm(n: N) -> list:
    """Y = alpha * A' B' + beta * C (A' = A or A^T, B' likewise; C broadcasts, optional from opset 11)."""
    a, b_ = float(n.a("alpha", 1.0)), float(n.a("beta", 1.0))
    ta, tb = int(n.a("transA", 0)), int(n.a("transB", 0))
    bm = n.maybe_const(1)
    c = n.maybe_const(2) if n.has(2) else None
    if n.has(2) and c is None:
        raise n.unsupported("C computed at run time")
    if n.opset < 7 and c is not None and not int(n.a("broadcast", 0)) and c.ndim == 2:
        pass  # legacy: C already full-size
    params: dict[str, np.ndarray] = {}
    if bm is not None:
        params["b"] = np.asarray(bm, np.float64)
    if c is not None:
        params["c"] = np.asarray(c, np.float64)
    ins = [n.rt(0)] + ([] if bm is not None else [n.rt(1)])
    return n.emit("gemm", ins, attrs={"alpha": a, "beta": b_, "trans_a": bool(ta), "trans_b": bool(tb)},
                  params=params)


@op("MatMul")
def MatMul(n: N) -> list:
    bm = n.maybe_const(1)
    if bm is not None:
        return n.emit("matmul", [n.rt(0)], params={"b": np.asarray(bm, np.float64)})
    return n.emit("matmul", [n.rt(0), n.rt(1)])


# ---- pooling --------------------------------------------------------------------------------------------
def _pool_out(d: int, k: int, s: int, pb: int, pe: int, dil: int, ceil: bool) -> int:
    """ONNX pooling output size (refnet.kernels.geometry, rule "onnx"); 0 when the window does not fit."""
    try:
        return pool_output_size(d, k, s, pb, pe, ceil, dilation=dil, rule="onnx")
    except ShapeError:
        return 0


@op("MaxPool", "AveragePool", "LpPool")
def Pool(n: N) -> list:
    xs = n.shape(0)
    if len(xs) < 3:
        raise n.error("input must be N x C x spatial", expected="rank >= 3")
    k = len(xs) - 2
    kernel = [int(v) for v in n.a("kernel_shape", ())]
    if len(kernel) != k or min(kernel, default=1) <= 0:
        raise n.error(f"kernel_shape {kernel} does not fit {k} spatial axes", expected=f"{k} positive values")
    strides, dil, pads = _geometry(n, xs[2:], kernel)
    ceil = bool(int(n.a("ceil_mode", 0)))
    auto = n.a("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-d // s) for d, s in zip(xs[2:], strides)]
    elif auto == "VALID":
        out = [_pool_out(d, kk, s, 0, 0, dd, ceil) for d, kk, s, dd in zip(xs[2:], kernel, strides, dil)]
    else:
        out = [_pool_out(d, kk, s, pads[i], pads[i + k], dd, ceil)
               for i, (d, kk, s, dd) in enumerate(zip(xs[2:], kernel, strides, dil))]
    if min(out) <= 0:
        raise n.error(f"window {kernel} does not fit the input {xs}", expected="a smaller kernel")
    mode = {"MaxPool": "max", "AveragePool": "avg", "LpPool": "lp"}[n.op]
    attrs = {"mode": mode, "kernel": tuple(kernel), "strides": tuple(strides), "dilations": tuple(dil),
             "pads": tuple(pads), "out": tuple(out), "count_include_pad": bool(int(n.a("count_include_pad", 0))),
             "p": int(n.a("p", 2)), "storage_order": int(n.a("storage_order", 0))}
    n_out = 2 if len(n.outs) > 1 and n.outs[1] else 1
    if n_out == 2 and mode != "max":
        raise n.error("only MaxPool has an indices output")
    return n.emit("pool_nd", [n.rt(0)], n_out, attrs=attrs)


@op("GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool")
def GlobalPool(n: N) -> list:
    xs = n.shape(0)
    if len(xs) < 3:
        raise n.error("input must be N x C x spatial", expected="rank >= 3")
    mode = {"GlobalMaxPool": "max", "GlobalAveragePool": "avg", "GlobalLpPool": "lp"}[n.op]
    k = len(xs) - 2
    attrs = {"mode": mode, "kernel": tuple(xs[2:]), "strides": (1,) * k, "dilations": (1,) * k,
             "pads": (0,) * (2 * k), "out": (1,) * k, "count_include_pad": False, "p": int(n.a("p", 2))}
    return n.emit("pool_nd", [n.rt(0)], attrs=attrs)


@op("MaxUnpool")
def MaxUnpool(n: N) -> list:
    xs = n.shape(0)
    k = len(xs) - 2
    kernel = [int(v) for v in n.a("kernel_shape", ())]
    strides = [int(v) for v in n.a("strides", (1,) * k)]
    pads = [int(v) for v in n.a("pads", (0,) * (2 * k))]
    if len(kernel) != k or len(strides) != k or len(pads) != 2 * k:
        raise n.error("kernel_shape/strides/pads do not fit the spatial rank")
    out = tuple(xs[:2]) + tuple((d - 1) * s + kk - pads[i] - pads[i + k]
                                for i, (d, s, kk) in enumerate(zip(xs[2:], strides, kernel)))
    final = tuple(_ints(n.const(2, "output_shape"))) if n.has(2) else out
    if len(final) != len(out) or any(d <= 0 for d in final) or math.prod(final) > (1 << 31):
        raise n.error(f"output_shape {final} does not fit the input {xs}")
    ind = n.maybe_const(1)
    ins = [n.rt(0), n.rt(1)]
    if ind is not None:
        ins = [n.rt(0)]
    params = {"indices": np.asarray(ind, np.float64)} if ind is not None else {}
    if ind is not None and (np.any(ind < 0) or (ind.size and int(ind.max()) >= math.prod(out))):
        raise n.error("indices outside the output", expected=f"0 <= index < {math.prod(out)}")
    if final == out:
        return n.emit("max_unpool_nd", ins, attrs={"out": out}, params=params)
    # indices address the default output; a given output_shape pads (or crops) it at the end
    y = n.emit("max_unpool_nd", ins, name=f"{n.layer}/unpool", layer=False, attrs={"out": out}, params=params)[0]
    if all(f >= o for f, o in zip(final, out)):
        return n.emit("pad", [y], attrs={"pads": tuple((0, f - o) for f, o in zip(final, out)), "mode": "constant",
                                         "value": 0.0})
    return n.emit("strided_slice", [y], attrs={"starts": (0,) * len(out), "stops": final, "steps": (1,) * len(out)})


# ---- normalisation ----------------------------------------------------------------------------------
@op("BatchNormalization")
def BatchNormalization(n: N) -> list:
    """Inference form always: (x - mean) / sqrt(var + epsilon) * scale + B (training_mode,
    momentum, spatial and the running-statistics outputs are ignored)."""
    xs = n.shape(0)
    c = xs[1] if len(xs) > 1 else 1
    ps = [_weight(n, i, nm).reshape(-1) for i, nm in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
    if any(p.size != c for p in ps):
        if n.opset < 9 and int(n.a("spatial", 1)) == 0:
            raise n.unsupported("spatial=0 (per-activation statistics)")
        raise n.error(f"parameters of sizes {[p.size for p in ps]} for {c} channels", expected=f"{c} each")
    eps = float(n.a("epsilon", 1e-5))
    out = n.emit("batch_norm", [n.rt(0)], attrs={"eps": eps},
                 params={"weight": ps[0], "bias": ps[1], "mean": ps[2], "var": ps[3]})
    return out


@op("InstanceNormalization")
def InstanceNormalization(n: N) -> list:
    xs = n.shape(0)
    w, bias = _weight(n, 1, "scale").reshape(-1), _weight(n, 2, "B").reshape(-1)
    if w.size != xs[1] or bias.size != xs[1]:
        raise n.error("scale/B do not match the channels", expected=f"{xs[1]} each")
    return n.emit("instance_norm", [n.rt(0)], attrs={"eps": float(n.a("epsilon", 1e-5))},
                  params={"weight": w, "bias": bias})


@op("LRN")
def LRN(n: N) -> list:
    """y = x / (bias + alpha/size * sum of x^2 over channels c - floor((size-1)/2) ..
    c + ceil((size-1)/2))^beta."""
    size = int(n.a("size", 0))
    if size <= 0:
        raise n.error("size must be positive")
    return n.emit("lrn_onnx", [n.rt(0)], attrs={"size": size, "alpha": float(n.a("alpha", 1e-4)),
                                                "beta": float(n.a("beta", 0.75)), "bias": float(n.a("bias", 1.0))})


@op("LpNormalization")
def LpNormalization(n: N) -> list:
    p = int(n.a("p", 2))
    if p not in (1, 2):
        raise n.error(f"p = {p}", expected="1 or 2")
    return n.emit("lp_norm", [n.rt(0)], attrs={"axis": _axis(n, int(n.a("axis", -1)), len(n.shape(0))), "p": p})


@op("LayerNormalization")
def LayerNormalization(n: N) -> list:
    xs = n.shape(0)
    ax = _axis(n, int(n.a("axis", -1)), len(xs))
    params = {"scale": _weight(n, 1, "scale")}
    if n.has(2):
        params["bias"] = _weight(n, 2, "B")
    for k, v in params.items():
        try:
            np.broadcast_shapes(v.shape, xs[ax:])
        except ValueError:
            raise n.error(f"{k} of shape {v.shape} does not broadcast to {xs[ax:]}") from None
    n_out = 3 if len(n.outs) > 2 and n.outs[2] else (2 if len(n.outs) > 1 and n.outs[1] else 1)
    return n.emit("layer_norm", [n.rt(0)], n_out, attrs={"axis": ax, "eps": float(n.a("epsilon", 1e-5))},
                  params=params)


# ---- resize -----------------------------------------------------------------------------------------------
@op("Resize", "Upsample")
def Resize(n: N) -> list:
    """Resize (opset 10: scales input; 11+: roi, scales, sizes inputs, coordinate modes) and
    Upsample (opset < 9: scales attribute; 9: scales input). Output size = floor(in * scale)
    unless sizes are given."""
    xs = n.shape(0)
    r = len(xs)
    mode = n.a("mode", "nearest")
    roi: tuple[float, ...] = ()
    if n.op == "Upsample":
        scales = n.a("scales") if n.opset < 9 else _ints_f(n.const(1, "scales"))
        if scales is None:
            scales = (1.0, 1.0, float(n.a("height_scale", 1.0)), float(n.a("width_scale", 1.0)))
        sizes = None
        ctm = "asymmetric"
        if mode == "bilinear":
            mode = "linear"
    elif n.opset < 11:
        scales, sizes, ctm = _ints_f(n.const(1, "scales")), None, "asymmetric"
    else:
        ctm = n.a("coordinate_transformation_mode", "half_pixel")
        if n.has(1) and ctm == "tf_crop_and_resize":
            roi = _ints_f(n.const(1, "roi"))
        sc = n.maybe_const(2) if n.has(2) else None
        if n.has(2) and sc is None:
            raise n.unsupported("scales computed at run time")
        scales = _ints_f(sc) if sc is not None and sc.size else None
        sizes = _ints(n.const(3, "sizes")) if n.has(3) else None
    axes = tuple(_axis(n, int(a), r) for a in n.a("axes", range(r))) if n.opset >= 18 else tuple(range(r))
    if sizes is not None:
        if len(sizes) != len(axes):
            raise n.error(f"{len(sizes)} sizes for {len(axes)} axes")
        policy = n.a("keep_aspect_ratio_policy", "stretch")
        full_scales = [1.0] * r
        out = list(xs)
        if policy != "stretch":
            ratios = [sizes[i] / xs[a] for i, a in enumerate(axes)]
            s = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                full_scales[a] = s
                out[a] = int(math.floor(s * xs[a] + 0.5))
        else:
            for i, a in enumerate(axes):
                out[a] = int(sizes[i])
                full_scales[a] = sizes[i] / xs[a] if xs[a] else 1.0
        scales_used = full_scales
    else:
        if scales is None or len(scales) != len(axes):
            raise n.error(f"scales {scales} do not fit {len(axes)} axes", expected="one scale per axis")
        scales_used = [1.0] * r
        for i, a in enumerate(axes):
            scales_used[a] = float(scales[i])
        if any(s <= 0 for s in scales_used):
            raise n.error(f"scales {scales} must be positive")
        out = [int(math.floor(d * s)) for d, s in zip(xs, scales_used)]
    if roi:
        full = [0.0] * r + [1.0] * r
        for i, a in enumerate(axes):
            full[a], full[a + r] = roi[i], roi[i + len(axes)]
        roi = tuple(full)
    if mode not in ("nearest", "linear", "cubic"):
        raise n.unsupported(f"mode {mode!r} (refnet: nearest, linear, cubic)")
    if min(out) <= 0 or math.prod(out) > (1 << 31):
        raise n.error(f"output shape {out} is empty or too large")
    nearest_mode = n.a("nearest_mode", "round_prefer_floor")
    if n.op == "Upsample" or n.opset < 11:
        nearest_mode = "floor"  # Upsample and Resize-10 take floor(x_original)
    return n.emit("resize_nd", [n.rt(0)], attrs={
        "mode": mode, "out": tuple(out), "scales": tuple(scales_used), "coordinate_transformation_mode": ctm,
        "nearest_mode": nearest_mode, "cubic_coeff_a": float(n.a("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(int(n.a("exclude_outside", 0))),
        "extrapolation_value": float(n.a("extrapolation_value", 0.0)), "roi": roi,
        "antialias": bool(int(n.a("antialias", 0)))})


def _ints_f(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in np.asarray(v).reshape(-1))


# ---- reductions, arg/top-k -------------------------------------------------------------------------------
@op("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
def Reduce(n: N) -> list:
    xs = n.shape(0)
    axes = _reduce_axes(n, len(xs))
    if axes == ():  # noop_with_empty_axes: no reduction, but the element-wise part stays (SumSquare: a square)
        x = n.rt(0)
        if n.op in ("ReduceL1", "ReduceL2"):
            return n.emit("abs", [x])
        if n.op == "ReduceSumSquare":
            return n.emit("mul", [x, x])
        if n.op == "ReduceLogSum":
            return n.emit("log", [x])
        return n.emit("identity", [x])
    kind = {"ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceSum": "sum", "ReduceProd": "prod",
            "ReduceL1": "l1", "ReduceL2": "l2", "ReduceSumSquare": "sum_square", "ReduceLogSum": "log_sum",
            "ReduceLogSumExp": "log_sum_exp"}[n.op]
    return n.emit("reduce", [n.rt(0)], attrs={"kind": kind, "axes": axes, "keepdims": bool(int(n.a("keepdims", 1)))})


@op("ArgMax", "ArgMin")
def ArgMax(n: N) -> list:
    xs = n.shape(0)
    return n.emit("arg_reduce", [n.rt(0)], attrs={
        "kind": "max" if n.op == "ArgMax" else "min", "axis": _axis(n, int(n.a("axis", 0)), len(xs)),
        "keepdims": bool(int(n.a("keepdims", 1))), "select_last_index": bool(int(n.a("select_last_index", 0)))})


@op("TopK")
def TopK(n: N) -> list:
    """k: attribute before opset 10, input 1 from 10; largest/sorted from opset 11."""
    xs = n.shape(0)
    ax = _axis(n, int(n.a("axis", -1)), len(xs))
    largest, srt = bool(int(n.a("largest", 1))), bool(int(n.a("sorted", 1)))
    if n.opset >= 10 and n.has(1) and n.maybe_const(1) is None:  # k computed at run time (e.g. a Shape after NMS)
        return n.emit("topk_dyn", [n.rt(0), n.rt(1)], 2, attrs={"axis": ax, "largest": largest, "sorted": srt})
    k = int(n.a("k", 0)) if n.opset < 10 else int(n.const(1, "k").reshape(-1)[0])
    if not 0 <= k <= xs[ax]:
        raise n.error(f"k = {k} for an axis of size {xs[ax]}", expected=f"0 <= k <= {xs[ax]}")
    return n.emit("topk", [n.rt(0)], 2, attrs={"axis": ax, "k": k, "largest": largest, "sorted": srt})


# ---- detection ---------------------------------------------------------------------------------------------
@op("NonMaxSuppression")
def NonMaxSuppression(n: N) -> list:
    def scalar(i: int, default: float) -> float:
        v = n.maybe_const(i) if n.has(i) else None
        if n.has(i) and v is None:
            raise n.unsupported(f"input {i} computed at run time")
        return float(v.reshape(-1)[0]) if v is not None and v.size else default
    attrs = {"max_output_boxes_per_class": int(scalar(2, 0)), "iou_threshold": scalar(3, 0.0),
             "score_threshold": scalar(4, -np.inf), "center_point_box": int(n.a("center_point_box", 0))}
    return n.emit("nms_onnx", [n.rt(0), n.rt(1)], attrs=attrs)


@op("RoiAlign")
def RoiAlign(n: N) -> list:
    """opset 16 adds coordinate_transformation_mode (default half_pixel); opset 10 behaves as
    output_half_pixel (no half-pixel shift)."""
    ctm = n.a("coordinate_transformation_mode", "half_pixel") if n.opset >= 16 else "output_half_pixel"
    mode = n.a("mode", "avg")
    if mode not in ("avg", "max"):
        raise n.error(f"mode {mode!r}", expected="avg or max")
    bi = n.maybe_const(2)
    ins = [n.rt(0), n.rt(1)] + ([n.rt(2)] if bi is None else [])
    params = {"batch_indices": np.asarray(bi, np.float64)} if bi is not None else {}
    return n.emit("roi_align", ins, attrs={
        "mode": mode, "output_height": int(n.a("output_height", 1)), "output_width": int(n.a("output_width", 1)),
        "sampling_ratio": int(n.a("sampling_ratio", 0)), "spatial_scale": float(n.a("spatial_scale", 1.0)),
        "half_pixel": ctm == "half_pixel"}, params=params)
