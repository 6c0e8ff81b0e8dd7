"""Torch7 ``nn`` modules -> refnet :class:`~refnet.graph.Graph`.

The module tree read by :mod:`refnet.weights_import.t7` is walked in forward order: containers
(Sequential, Concat, DepthConcat, ConcatTable, ParallelTable, Parallel) route values — a
tensor or a Lua "table" (list) of values — and every leaf module becomes one or two IR nodes.
Layers are named as OpenCV's ``torch_importer.cpp`` names them, ``l<N>_<Type>`` with one
counter for the whole net (ConcatTable and Concat use up one number for a split layer cv2 no
longer creates), so ``Net.trace`` keys equal cv2 layer names; ``graph.meta["module_paths"]``
maps each layer to its Lua path in the model (``modules[3].modules[2]``, 1-based as in Lua).

Semantics are Torch7's (evaluate mode: BatchNorm uses running statistics, Dropout v1 scales
by 1 - p, v2 and TotalVariation are identities). ``quirks="cv2"`` reproduces where cv2.dnn
computes something else: InstanceNormalization (cv2: (x - mu) / sqrt(var + 1e-9) / sqrt(1 + eps)),
SpatialAveragePooling's divisor for files without count_include_pad, JoinTable's nInputDims
and MaxUnpooling's output size (cv2 computes it from the pooling geometry); each one applied is
recorded in ``graph.meta["quirks"]`` (layer, key of :data:`CV2_QUIRKS`, what changed).

Hostile files are bounded: modules shared by reference are expanded at every use, up to
max(20,000, file size / 16) layers and module visits; parameter copies (which expanded,
stride-0 views and shared tensors multiply) up to max(64 MiB, 2x the file size).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.graph import Graph, Node, output_name
from refnet.weights_import._util import AppliedQuirk, LayerTable, check_quirks_mode, paused_gc
from refnet.weights_import.t7 import LuaTable, T7Storage, T7Tensor, TorchObject, detect_encoding, read_t7

__all__ = ["read_torch", "SUPPORTED_MODULES", "NN_PREFIXES", "CV2_QUIRKS"]

#: Torch7 modules cv2.dnn.readNetFromTorch computes differently; quirks="cv2" applies them and
#: records each in graph.meta["quirks"]
CV2_QUIRKS = {
    "instance_norm": "InstanceNormalization: cv2 computes (x-mu)/sqrt(var+1e-9)/sqrt(1+eps), Torch "
                     "(x-mu)/sqrt(var+eps)",
    "avg_pool_divisor": "SpatialAveragePooling without count_include_pad: cv2 excludes the padding, Torch7 divided "
                        "by kW*kH",
    "join_table_dims": "JoinTable nInputDims: cv2 ignores it (concatenates along dimension - 1)",
    "unpool_size": "SpatialMaxUnpooling: cv2 derives the output size from the pooling geometry, Torch uses the "
                   "pooling input's size",
}

NN_PREFIXES = ("nn.", "cunn.", "cudnn.", "fbcunn.")
INPUT_NAME = "input"
MAX_MODULE_DEPTH = 100
MAX_SIZE_VALUES = 64  # View/Reshape sizes: a tensor has at most 64 dimensions
MIN_PARAM_BUDGET = 64 << 20  # bytes of parameter copies always allowed, whatever the file size
# layers always allowed; beyond, one per 16 bytes of file (a serialized module takes well over
# 16 bytes, so only modules shared by reference and expanded at every use can exceed it)
MIN_MAX_NODES = 20_000

Value = str | list  # a tensor name, or a Lua table (list) of values


@dataclass
class _ModuleWalk:
    """The state of one walk over the module tree: the nodes emitted so far, cv2's layer counter,
    each layer's module path and class, the pooling modules an unpooling reads, the depth and
    the bounds a file of this size gets, and the cv2 quirks applied."""

    source: str
    quirks: str
    nodes: list[Node] = field(default_factory=list)
    counter: int = 0
    paths: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    # max pooling modules whose indices a MaxUnpooling reads: id(module) / indices tensor index
    pool_wanted: set[int] = field(default_factory=set)
    pool_wanted_idx: set[int] = field(default_factory=set)
    pools: dict[int, tuple[str, str, TorchObject]] = field(default_factory=dict)  # id -> node, input, module
    pools_by_idx: dict[int, tuple[str, str, TorchObject]] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)  # modules on the current path (cycle check)
    depth: int = 0  # of the module being read (the root: 0)
    by_name: dict[str, Node] = field(default_factory=dict)
    max_nodes: int = 0  # layers (and module visits) a file of this size may expand to
    visits: int = 0
    # bytes of parameter copies still allowed: expanded (stride-0) views and tensors shared by
    # many modules must not turn a small file into gigabytes (see read_torch)
    budget: int = 0
    applied: list[AppliedQuirk] = field(default_factory=list)  # cv2 quirks applied (graph.meta["quirks"])

    def quirk(self, layer: str, key: str, change: str) -> None:
        """Record that quirks="cv2" made ``change`` to ``layer`` (call it only under quirks="cv2")."""
        assert self.quirks == "cv2" and key in CV2_QUIRKS, key
        self.applied.append(AppliedQuirk(layer, key, change))

    def name(self, label: str) -> str:
        self.counter += 1
        return f"l{self.counter}_{label}"

    def emit(self, name: str, op: str, inputs: list[str], attrs: dict | None = None,
             params: dict | None = None, *, path: str, cls: str, n_out: int = 1) -> str:
        if len(self.nodes) >= self.max_nodes:
            raise self.err(path, f"the module tree expands to more than {self.max_nodes} layers (modules shared "
                           "by reference are expanded at every use)", expected="a module tree that fits the file")
        outs = tuple(output_name(name, i) for i in range(n_out))
        node = Node(name, op, tuple(inputs), outs, attrs or {}, params or {})
        self.nodes.append(node)
        self.by_name[name] = node
        self.paths[name] = path
        self.classes[name] = cls
        return name

    def err(self, path: str, message: str, expected: str | None = None) -> ModelFormatError:
        return ModelFormatError(message, file=self.source, layer=path or "(root)", expected=expected)


# ---- field helpers -------------------------------------------------------------------------------
def _num(ctx: _ModuleWalk, m: TorchObject, path: str, key: str, default: float | None = None) -> float:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if v is None:
            raise ctx.err(path, f"{m.class_name} has no field {key!r}", expected=f"a number {key}")
        raise ctx.err(path, f"{m.class_name}.{key} is a {type(v).__name__}", expected="a number")
    if v != v:
        raise ctx.err(path, f"{m.class_name}.{key} is NaN", expected="a number")
    return float(v)


def _int(ctx: _ModuleWalk, m: TorchObject, path: str, key: str, default: int | None = None,
         lo: int | None = None) -> int:
    v = _num(ctx, m, path, key, default)
    if not float(v).is_integer() or abs(v) > 2**31:
        raise ctx.err(path, f"{m.class_name}.{key} = {v} is not an integer", expected="an integer")
    iv = int(v)
    if lo is not None and iv < lo:
        raise ctx.err(path, f"{m.class_name}.{key} = {iv}", expected=f">= {lo}")
    return iv


def _bool(m: TorchObject, key: str, default: bool = False) -> bool:
    v = m.get(key, None)
    if v is None:
        return default
    return bool(v)


def _tensor(ctx: _ModuleWalk, m: TorchObject, path: str, key: str, *, required: bool = True,
            size: int | None = None) -> np.ndarray | None:
    """A copy of tensor field ``key`` as float32/float64 (as stored; half -> float32)."""
    v = m.get(key, None)
    if v is None or (isinstance(v, T7Tensor) and v.array.size == 0):
        if required:
            raise ctx.err(path, f"{m.class_name} has no tensor {key!r}", expected=f"a tensor {key}")
        return None
    if not isinstance(v, T7Tensor):
        raise ctx.err(path, f"{m.class_name}.{key} is a {type(v).__name__}", expected="a tensor")
    a = v.array
    dt = np.float64 if a.dtype == np.float64 else np.float32
    nbytes = a.size * np.dtype(dt).itemsize
    if nbytes > ctx.budget:
        raise ctx.err(path, f"{m.class_name}.{key} expands to {a.size} values ({nbytes} bytes); the file's "
                      "tensors together exceed what a file of its size can hold (expanded or shared views)",
                      expected="parameters that fit in the file")
    ctx.budget -= nbytes
    with np.errstate(over="ignore"):
        out = np.array(a, dtype=dt, copy=True)
    if size is not None and out.size != size:
        raise ctx.err(path, f"{m.class_name}.{key} has {out.size} values", expected=f"{size} values")
    return out


def _longs(ctx: _ModuleWalk, m: TorchObject, path: str, key: str) -> tuple[int, ...]:
    """A LongStorage / tensor / table / number field as a tuple of ints (View sizes etc.)."""
    v = m.get(key, None)
    if isinstance(v, (T7Storage, T7Tensor)) and v.array.size > MAX_SIZE_VALUES:
        raise ctx.err(path, f"{m.class_name}.{key} holds {v.array.size} sizes",
                      expected=f"at most {MAX_SIZE_VALUES} sizes")
    if isinstance(v, T7Storage):
        vals = v.array.reshape(-1)
    elif isinstance(v, T7Tensor):
        vals = np.asarray(v.array).reshape(-1)
    elif isinstance(v, LuaTable):
        items = v.array_part()
        if len(items) > MAX_SIZE_VALUES or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   for x in items):
            raise ctx.err(path, f"{m.class_name}.{key} is a table of {len(items)} values",
                          expected=f"at most {MAX_SIZE_VALUES} numbers")
        vals = np.asarray(items, dtype=np.float64)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        vals = np.asarray([v])
    else:
        raise ctx.err(path, f"{m.class_name} has no size field {key!r}", expected="a LongStorage of sizes")
    out = []
    for x in vals.tolist():
        if not float(x).is_integer():
            raise ctx.err(path, f"{m.class_name}.{key} holds {x}", expected="integers")
        out.append(int(x))
    return tuple(out)


def _one(ctx: _ModuleWalk, value: Value, m: TorchObject, path: str) -> str:
    if isinstance(value, list):
        raise ctx.err(path, f"{m.class_name} needs a tensor input but receives a table of {len(value)}",
                      expected="a tensor (put a CAddTable/JoinTable before it)")
    return value


def _table(ctx: _ModuleWalk, value: Value, m: TorchObject, path: str) -> list:
    if not isinstance(value, list):
        raise ctx.err(path, f"{m.class_name} needs a table input but receives a tensor",
                      expected="a table (from a ConcatTable)")
    return value


def _flat_tensors(ctx: _ModuleWalk, value: list, m: TorchObject, path: str) -> list[str]:
    out = []
    for v in value:
        if isinstance(v, list):
            raise ctx.err(path, f"{m.class_name} receives a nested table", expected="a table of tensors")
        out.append(v)
    return out


def _children(ctx: _ModuleWalk, m: TorchObject, path: str) -> list[tuple[str, TorchObject]]:
    mods = m.get("modules", None)
    if mods is None:
        return []
    if not isinstance(mods, LuaTable):
        raise ctx.err(path, f"{m.class_name}.modules is a {type(mods).__name__}", expected="a table of modules")
    out = []
    for i, c in enumerate(mods.array_part(), 1):
        cp = f"{path}.modules[{i}]" if path else f"modules[{i}]"
        if not isinstance(c, TorchObject):
            raise ctx.err(cp, f"module entry is a {type(c).__name__}", expected="an nn module")
        out.append((cp, c))
    return out


def _nn_name(class_name: str) -> str | None:
    for p in NN_PREFIXES:
        if class_name.startswith(p):
            return class_name[len(p):]
    return None


# ---- modules: one builder per Torch7 class -------------------------------------------------------
#: the builders by nn class name (without the ``nn.`` prefix), each with the input it takes:
#: "tensor" (one tensor), "table" (a Lua table of values, e.g. from a ConcatTable) or "any";
#: the input kind is checked in _module before the builder runs
module = LayerTable("Torch7 nn module", input="tensor")


def _conv_geometry(ctx, m, path):
    kw, kh = _int(ctx, m, path, "kW", lo=1), _int(ctx, m, path, "kH", lo=1)
    dw, dh = _int(ctx, m, path, "dW", 1, lo=1), _int(ctx, m, path, "dH", 1, lo=1)
    padding = m.get("padding", 0)  # very old SpatialConvolutionMM
    pw = _int(ctx, m, path, "padW", padding if m.get("padW") is None else None, lo=0)
    ph = _int(ctx, m, path, "padH", padding if m.get("padH") is None else None, lo=0)
    return kh, kw, dh, dw, ph, pw


def _conv_planes(ctx, m, path):
    n_in = _int(ctx, m, path, "nInputPlane", lo=1)
    n_out = _int(ctx, m, path, "nOutputPlane", lo=1)
    groups = _int(ctx, m, path, "groups", 1, lo=1)
    if n_in % groups or n_out % groups:
        raise ctx.err(path, f"groups {groups} does not divide {n_in} -> {n_out} planes",
                      expected="groups dividing both plane counts")
    return n_in, n_out, groups


@module("SpatialConvolution", "SpatialConvolutionMM", "SpatialDilatedConvolution")
def _conv(ctx, m, path, nn, x):
    kh, kw, dh, dw, ph, pw = _conv_geometry(ctx, m, path)
    n_in, n_out, groups = _conv_planes(ctx, m, path)
    dilh, dilw = 1, 1
    if nn == "SpatialDilatedConvolution":
        dilw, dilh = _int(ctx, m, path, "dilationW", 1, lo=1), _int(ctx, m, path, "dilationH", 1, lo=1)
    shape = (n_out, n_in // groups, kh, kw)
    w = _tensor(ctx, m, path, "weight", size=math.prod(shape)).reshape(shape)
    b = _tensor(ctx, m, path, "bias", required=False, size=n_out)
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return ctx.emit(ctx.name("Convolution"), "conv", [x],
                    {"stride": (dh, dw), "pad": (ph, pw, ph, pw), "dilation": (dilh, dilw), "groups": groups},
                    params, path=path, cls=m.class_name)


@module("SpatialFullConvolution")
def _full_conv(ctx, m, path, nn, x):
    kh, kw, dh, dw, ph, pw = _conv_geometry(ctx, m, path)
    n_in, n_out, groups = _conv_planes(ctx, m, path)
    aw, ah = _int(ctx, m, path, "adjW", 0, lo=0), _int(ctx, m, path, "adjH", 0, lo=0)
    if ah >= dh and ah > 0 or aw >= dw and aw > 0:
        raise ctx.err(path, f"adjH/adjW {ah}/{aw} must be smaller than the stride {dh}/{dw}",
                      expected="adj < stride")
    shape = (n_in, n_out // groups, kh, kw)
    w = _tensor(ctx, m, path, "weight", size=math.prod(shape)).reshape(shape)
    b = _tensor(ctx, m, path, "bias", required=False, size=n_out)
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return ctx.emit(ctx.name("Deconvolution"), "deconv", [x],
                    {"stride": (dh, dw), "pad": (ph, pw, ph, pw), "dilation": (1, 1), "groups": groups,
                     "output_padding": (ah, aw)},
                    params, path=path, cls=m.class_name)


def _pool_attrs(ctx, m, path):
    kh, kw, dh, dw, ph, pw = _conv_geometry(ctx, m, path)
    if 2 * ph > kh or 2 * pw > kw:
        raise ctx.err(path, f"pad {ph}x{pw} larger than half the {kh}x{kw} window", expected="2 * pad <= kernel")
    return {"kernel": (kh, kw), "stride": (dh, dw), "pad": (ph, pw, ph, pw),
            "ceil_mode": _bool(m, "ceil_mode"), "global_pooling": False}


@module("SpatialMaxPooling")
def _max_pool(ctx, m, path, nn, x):
    attrs = _pool_attrs(ctx, m, path)
    ind = m.get("indices")
    wanted = id(m) in ctx.pool_wanted or (isinstance(ind, T7Tensor) and ind.index in ctx.pool_wanted_idx)
    name = ctx.emit(ctx.name("Pooling"), "max_pool", [x], attrs, path=path, cls=m.class_name,
                    n_out=2 if wanted else 1)
    rec = (name, x, m)
    ctx.pools[id(m)] = rec
    if isinstance(ind, T7Tensor):
        ctx.pools_by_idx.setdefault(ind.index, rec)
    return name


@module("SpatialAveragePooling")
def _avg_pool(ctx, m, path, nn, x):
    attrs = _pool_attrs(ctx, m, path)
    if m.get("divide", True) is False:
        raise UnsupportedLayerError(path, m.class_name, sorted(SUPPORTED_MODULES), file=ctx.source,
                                    detail="divide=false (sum pooling of pre-2016 Torch) is not supported")
    cip = m.get("count_include_pad")
    if cip is None:  # files from before count_include_pad: Torch7 divided by kW * kH
        divisor = "kernel"
    else:  # THNN: the window clipped to the padded input, or only its valid part
        divisor = "padded" if bool(cip) else "valid"
    quirk = ctx.quirks == "cv2" and cip is None  # cv2: the padded area only when the field says so
    attrs["divisor"] = "valid" if quirk else divisor
    name = ctx.emit(ctx.name("Pooling"), "avg_pool", [x], attrs, path=path, cls=m.class_name)
    if quirk:
        ctx.quirk(name, "avg_pool_divisor", "divisor: kernel -> valid (no count_include_pad field)")
    return name


@module("SpatialMaxUnpooling")
def _unpool(ctx, m, path, nn, x):
    pool = m.get("pooling")
    rec = ctx.pools.get(id(pool)) if isinstance(pool, TorchObject) else None
    ind = m.get("indices")
    if rec is None and isinstance(ind, T7Tensor):
        rec = ctx.pools_by_idx.get(ind.index)
    if rec is None:
        raise ctx.err(path, "SpatialMaxUnpooling refers to no SpatialMaxPooling run before it",
                      expected="a `pooling` module that precedes the unpooling")
    pname, pinput, pm = rec
    pnode = ctx.by_name[pname]
    if len(pnode.outputs) < 2:  # pragma: no cover - pre-scan marks every referenced pool
        raise ctx.err(path, "internal: pooling indices were not requested")
    attrs = {k: pnode.attrs[k] for k in ("kernel", "stride", "pad")}
    inputs = [x, pnode.outputs[1]]
    if ctx.quirks != "cv2":
        inputs.append(pinput)  # Torch: output size = the pooling's input size (oheight/owidth)
    name = ctx.emit(ctx.name("torchMaxUnpooling"), "max_unpool", inputs, attrs, path=path, cls=m.class_name)
    if ctx.quirks == "cv2":
        ctx.quirk(name, "unpool_size", f"output size: of {pinput} -> from the pooling geometry")
    return name


@module("Linear")
def _linear(ctx, m, path, nn, x):
    w = _tensor(ctx, m, path, "weight")
    if w.ndim != 2:
        raise ctx.err(path, f"Linear weight has shape {w.shape}", expected="(outputSize, inputSize)")
    b = _tensor(ctx, m, path, "bias", required=False, size=w.shape[0])
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return ctx.emit(ctx.name("InnerProduct"), "linear", [x], {"axis": 1}, params, path=path,
                    cls=m.class_name)


@module("View", "Reshape")
def _view(ctx, m, path, nn, x):
    size = _longs(ctx, m, path, "size")
    if sum(1 for s in size if s == -1) > 1 or any(s == 0 or s < -1 for s in size):
        raise ctx.err(path, f"{m.class_name} size {size}", expected="positive sizes and at most one -1")
    # refnet tensors always carry the batch axis: the sizes reshape what follows it (cv2 does too)
    return ctx.emit(ctx.name("Reshape"), "reshape", [x], {"shape": size, "axis": 1, "num_axes": -1},
                    path=path, cls=m.class_name)


@module("ReLU")
def _relu(ctx, m, path, nn, x):
    th, val = _num(ctx, m, path, "threshold", 0.0), _num(ctx, m, path, "val", 0.0)
    if th != 0.0 or val != 0.0:
        raise UnsupportedLayerError(path, m.class_name, sorted(SUPPORTED_MODULES), file=ctx.source,
                                    detail=f"ReLU with threshold {th}, value {val}")
    return ctx.emit(ctx.name("ReLU"), "relu", [x], {"negative_slope": 0.0}, path=path, cls=m.class_name)


@module("Tanh")
def _tanh(ctx, m, path, nn, x):
    return ctx.emit(ctx.name("TanH"), "tanh", [x], path=path, cls=m.class_name)


@module("Sigmoid")
def _sigmoid(ctx, m, path, nn, x):
    return ctx.emit(ctx.name("Sigmoid"), "sigmoid", [x], path=path, cls=m.class_name)


@module("ELU")
def _elu(ctx, m, path, nn, x):
    return ctx.emit(ctx.name("ELU"), "elu", [x], {"alpha": _num(ctx, m, path, "alpha", 1.0)},
                    path=path, cls=m.class_name)


@module("PReLU")
def _prelu(ctx, m, path, nn, x):
    n = _int(ctx, m, path, "nOutputPlane", 0, lo=0)
    if n == 0:
        w = _tensor(ctx, m, path, "weight", size=1)
        return ctx.emit(ctx.name("ReLU"), "relu", [x], {"negative_slope": float(w.reshape(-1)[0])},
                        path=path, cls=m.class_name)
    w = _tensor(ctx, m, path, "weight", size=n).reshape(n)
    return ctx.emit(ctx.name("ChannelsPReLU"), "prelu", [x], params={"slope": w}, path=path,
                    cls=m.class_name)


@module("SoftMax", "LogSoftMax")
def _softmax(ctx, m, path, nn, x):
    op = "softmax" if nn == "SoftMax" else "log_softmax"
    return ctx.emit(ctx.name("Softmax"), op, [x], {"axis": 1}, path=path, cls=m.class_name)


def _bn_params(ctx, m, path, eps):
    w = _tensor(ctx, m, path, "weight", required=False)
    b = _tensor(ctx, m, path, "bias", required=False)
    mean = _tensor(ctx, m, path, "running_mean", required=False)
    var = _tensor(ctx, m, path, "running_var", required=False)
    if var is None:
        std = _tensor(ctx, m, path, "running_std", required=False)  # pre-2016: 1 / sqrt(var + eps)
        if std is not None:
            with np.errstate(divide="ignore"):
                var = 1.0 / (std.astype(np.float64) ** 2) - eps
            var = var.astype(std.dtype)
    n = next((a.size for a in (mean, var, w, b) if a is not None), None)
    if n is None:
        n = _int(ctx, m, path, "nOutput", lo=1)
    dt = next((a.dtype for a in (mean, var, w, b) if a is not None), np.dtype(np.float32))
    mean = np.zeros(n, dt) if mean is None else mean.reshape(-1)
    var = np.ones(n, dt) if var is None else var.reshape(-1)
    params = {"mean": mean, "var": var}
    if w is not None:
        params["weight"] = w.reshape(-1)
    if b is not None:
        params["bias"] = b.reshape(-1)
    if any(v.size != n for v in params.values()):
        raise ctx.err(path, f"{m.class_name} parameter sizes differ: "
                      + ", ".join(f"{k} {v.size}" for k, v in params.items()), expected=f"{n} values each")
    return params


@module("SpatialBatchNormalization", "BatchNormalization")
def _batch_norm(ctx, m, path, nn, x):
    eps = _num(ctx, m, path, "eps", 1e-5)
    return ctx.emit(ctx.name("BatchNorm"), "batch_norm", [x], {"eps": eps}, _bn_params(ctx, m, path, eps),
                    path=path, cls=m.class_name)


@module("InstanceNormalization")
def _instance_norm(ctx, m, path, nn, x):
    eps = _num(ctx, m, path, "eps", 1e-5)
    w = _tensor(ctx, m, path, "weight", required=False)
    b = _tensor(ctx, m, path, "bias", required=False)
    n = next((a.size for a in (w, b) if a is not None), None) or _int(ctx, m, path, "nOutput", lo=1)
    dt = next((a.dtype for a in (w, b) if a is not None), np.dtype(np.float32))
    params = {"mean": np.zeros(n, dt), "var": np.ones(n, dt)}
    if w is not None:
        params["weight"] = w.reshape(-1)
    if b is not None:
        params["bias"] = b.reshape(-1)
    if any(v.size != n for v in params.values()):
        raise ctx.err(path, "InstanceNormalization weight and bias sizes differ", expected=f"{n} values each")
    # cv2 builds two layers, MVN then BatchNorm(mean 0, var 1, weight, bias): so do we
    cv2 = ctx.quirks == "cv2"
    # Torch: (x - mu) / sqrt(var + eps) * weight + bias; cv2: MVN eps 1e-9, then the BatchNorm
    # divides by sqrt(1 + eps)
    mvn_eps, bn_eps = (_CV2_MVN_EPS, eps) if cv2 else (eps, 0.0)
    y = ctx.emit(ctx.name("MVN"), "instance_norm", [x], {"eps": mvn_eps}, path=path, cls=m.class_name)
    out = ctx.emit(ctx.name("BatchNorm"), "batch_norm", [y], {"eps": bn_eps}, params, path=path,
                   cls=m.class_name)
    if cv2 and eps != _CV2_MVN_EPS:
        ctx.quirk(y, "instance_norm", f"eps: {eps!r} -> {_CV2_MVN_EPS!r}")
    if cv2 and eps != 0.0:
        ctx.quirk(out, "instance_norm", f"eps: 0.0 -> {eps!r} (an extra 1/sqrt(1 + eps))")
    return out


_CV2_MVN_EPS = 1e-9  # cv2's MVN layer eps for Torch InstanceNormalization


@module("Dropout", "SpatialDropout", "VolumetricDropout")
def _dropout(ctx, m, path, nn, x):
    p = _num(ctx, m, path, "p", 0.5)
    if not 0.0 <= p < 1.0:
        raise ctx.err(path, f"dropout probability {p}", expected="0 <= p < 1")
    if nn == "Dropout" and _bool(m, "v2"):  # v2 scales while training: identity at inference
        return ctx.emit(ctx.name("Identity"), "identity", [x], path=path, cls=m.class_name)
    return ctx.emit(ctx.name("Power"), "power", [x], {"power": 1.0, "scale": 1.0 - p, "shift": 0.0},
                    path=path, cls=m.class_name)


@module("Identity", "TotalVariation")
def _identity(ctx, m, path, nn, x):
    return ctx.emit(ctx.name("Identity"), "identity", [x], path=path, cls=m.class_name)


@module("Normalize")
def _normalize(ctx, m, path, nn, x):
    p = _num(ctx, m, path, "p", 2.0)
    if not p > 0:
        raise ctx.err(path, f"Normalize p = {p}", expected="p > 0")
    return ctx.emit(ctx.name("Normalize"), "lp_normalize", [x],
                    {"p": p, "eps": _num(ctx, m, path, "eps", 1e-10)}, path=path, cls=m.class_name)


@module("Padding")
def _padding(ctx, m, path, nn, x):
    dim = _int(ctx, m, path, "dim")
    if dim == 0:
        raise ctx.err(path, "Padding dim 0", expected="a 1-based dimension")
    nid = m.get("nInputDim")
    attrs = {"dim": dim, "pad": _int(ctx, m, path, "pad"), "value": _num(ctx, m, path, "value", 0.0),
             "index": _int(ctx, m, path, "index", 1, lo=1),
             "n_input_dim": None if nid is None else _int(ctx, m, path, "nInputDim", lo=1)}
    return ctx.emit(ctx.name("Padding"), "torch_padding", [x], attrs, path=path, cls=m.class_name)


@module("SpatialZeroPadding", "SpatialReflectionPadding")
def _spatial_padding(ctx, m, path, nn, x):
    t, l, b, r = (_int(ctx, m, path, k) for k in ("pad_t", "pad_l", "pad_b", "pad_r"))
    name = ctx.name("Padding")
    if nn == "SpatialReflectionPadding":
        if min(t, l, b, r) < 0:
            raise ctx.err(path, "negative reflection padding", expected="pads >= 0")
        return ctx.emit(name, "pad", [x], {"pads": ((0, 0), (0, 0), (t, b), (l, r)), "mode": "reflect"},
                        path=path, cls=m.class_name)
    if min(t, l, b, r) < 0:  # Torch crops with negative pads
        return ctx.emit(name, "torch_pad2d", [x], {"pads": (t, l, b, r)}, path=path, cls=m.class_name)
    return ctx.emit(name, "pad", [x], {"pads": ((0, 0), (0, 0), (t, b), (l, r)), "mode": "constant",
                                       "value": 0.0}, path=path, cls=m.class_name)


@module("SpatialUpSamplingNearest")
def _up_nearest(ctx, m, path, nn, x):
    s = _int(ctx, m, path, "scale_factor", lo=1)
    return ctx.emit(ctx.name("Resize"), "resize", [x], {"mode": "nearest", "scale": (float(s), float(s))},
                    path=path, cls=m.class_name)


@module("SpatialUpSamplingBilinear")
def _up_bilinear(ctx, m, path, nn, x):
    if m.get("scale_factor") is not None:
        attrs = {"scale": _int(ctx, m, path, "scale_factor", lo=1)}
    else:
        attrs = {"size": (_int(ctx, m, path, "oheight", lo=1), _int(ctx, m, path, "owidth", lo=1))}
    return ctx.emit(ctx.name("SpatialUpSamplingBilinear"), "upsample_bilinear_ac", [x], attrs,
                    path=path, cls=m.class_name)


@module("Narrow")
def _narrow(ctx, m, path, nn, x):
    attrs = {"dimension": _int(ctx, m, path, "dimension"), "index": _int(ctx, m, path, "index", lo=1),
             "length": _int(ctx, m, path, "length", 1)}
    if attrs["dimension"] == 0 or attrs["length"] == 0:
        raise ctx.err(path, f"Narrow({attrs['dimension']}, {attrs['index']}, {attrs['length']})",
                      expected="a non-zero dimension and length")
    return ctx.emit(ctx.name("Narrow"), "torch_narrow", [x], attrs, path=path, cls=m.class_name)


@module("MulConstant")
def _mul_constant(ctx, m, path, nn, x):
    c = _num(ctx, m, path, "constant_scalar")
    return ctx.emit(ctx.name("Power"), "power", [x], {"power": 1.0, "scale": c, "shift": 0.0},
                    path=path, cls=m.class_name)


@module("AddConstant")
def _add_constant(ctx, m, path, nn, x):
    c = _num(ctx, m, path, "constant_scalar")
    return ctx.emit(ctx.name("AddConstant"), "power", [x], {"power": 1.0, "scale": 1.0, "shift": c},
                    path=path, cls=m.class_name)


@module("Square", "Sqrt", "Power")
def _power(ctx, m, path, nn, x):
    if nn == "Square":
        pw = 2.0
    elif nn == "Sqrt":  # THNN's CPU Sqrt ignores its eps field (only the old nn / cunn add it)
        pw = 0.5
    else:
        pw = _num(ctx, m, path, "pow", 1.0)
    return ctx.emit(ctx.name("Power"), "power", [x], {"power": pw, "scale": 1.0, "shift": 0.0},
                    path=path, cls=m.class_name)


@module("SpatialCrossMapLRN")
def _lrn(ctx, m, path, nn, x):
    size = _int(ctx, m, path, "size", lo=1)
    if size % 2 == 0:
        raise ctx.err(path, f"SpatialCrossMapLRN size {size}", expected="an odd size")
    attrs = {"size": size, "alpha": _num(ctx, m, path, "alpha", 1e-4), "beta": _num(ctx, m, path, "beta", 0.75),
             "k": _num(ctx, m, path, "k", 1.0), "region": "across"}
    return ctx.emit(ctx.name("LRN"), "lrn", [x], attrs, path=path, cls=m.class_name)


@module("ShaveImage")
def _shave(ctx, m, path, nn, x):
    return ctx.emit(ctx.name("Slice"), "torch_shave", [x], {"size": _int(ctx, m, path, "size", lo=0)},
                    path=path, cls=m.class_name)


# ---- containers ----------------------------------------------------------------------------------
@module("Sequential", input="any")
def _sequential(ctx, m, path, nn, value):
    for cp, c in _children(ctx, m, path):
        value = _child(ctx, c, value, cp)
    return value


@module("ConcatTable", input="any")
def _concat_table(ctx, m, path, nn, value):
    kids = _children(ctx, m, path)
    ctx.counter += 1  # cv2 skips a number for the split layer it no longer creates
    return [_child(ctx, c, value, cp) for cp, c in kids]


@module("ParallelTable", input="table")
def _parallel_table(ctx, m, path, nn, items):
    kids = _children(ctx, m, path)
    if len(items) < len(kids):
        raise ctx.err(path, f"ParallelTable of {len(kids)} modules receives a table of {len(items)}",
                      expected=f"a table of {len(kids)}")
    return [_child(ctx, c, v, cp) for (cp, c), v in zip(kids, items)]


@module("Concat", "DepthConcat")
def _concat(ctx, m, path, nn, x):
    outs = [_one(ctx, _child(ctx, c, x, cp), c, cp) for cp, c in _children(ctx, m, path)]
    if not outs:
        raise ctx.err(path, f"empty {m.class_name}", expected="at least one module")
    if nn == "Concat":
        ctx.counter += 1  # cv2's skipped split layer
    axis = _int(ctx, m, path, "dimension") - 1
    op = "concat" if nn == "Concat" else "depth_concat"
    return ctx.emit(ctx.name("torchMerge"), op, outs, {"axis": axis}, path=path, cls=m.class_name)


@module("Parallel")
def _parallel(ctx, m, path, nn, x):
    kids = _children(ctx, m, path)
    n = len(kids)
    if n == 0:
        raise ctx.err(path, "empty Parallel", expected="at least one module")
    in_axis = _int(ctx, m, path, "inputDimension", lo=1) - 1
    out_axis = _int(ctx, m, path, "outputDimension", lo=1) - 1
    split = ctx.emit(ctx.name("torchSplit"), "slice", [x], {"axis": in_axis, "points": tuple(range(1, n))},
                     path=path, cls=m.class_name, n_out=n) if n > 1 else None
    pieces = [output_name(split, i) for i in range(n)] if split else [x]
    sel = ctx.emit(ctx.name("torchReshape"), "torch_select", pieces, {"axis": in_axis}, path=path,
                   cls=m.class_name, n_out=n)
    outs = [_one(ctx, _child(ctx, c, output_name(sel, i), cp), c, cp) for i, (cp, c) in enumerate(kids)]
    return ctx.emit(ctx.name("torchMerge"), "concat", outs, {"axis": out_axis}, path=path, cls=m.class_name)


@module("CAddTable", input="table")
def _cadd_table(ctx, m, path, nn, value):
    items = _flat_tensors(ctx, value, m, path)
    if len(items) == 1:
        return ctx.emit(ctx.name("torchCAddTable"), "identity", items, path=path, cls=m.class_name)
    return ctx.emit(ctx.name("torchCAddTable"), "eltwise", items, {"operation": "sum"}, path=path,
                    cls=m.class_name)


@module("JoinTable", input="table")
def _join_table(ctx, m, path, nn, value):
    items = _flat_tensors(ctx, value, m, path)
    dim = _int(ctx, m, path, "dimension")
    # Torch: +1 for the batch dimension of (nInputDims + 1)-D inputs (refnet is batched); cv2 ignores it
    quirk = dim >= 0 and m.get("nInputDims") is not None and ctx.quirks == "cv2"
    axis = dim if dim < 0 or (m.get("nInputDims") is not None and not quirk) else dim - 1
    name = ctx.emit(ctx.name("torchMerge"), "concat", items, {"axis": axis}, path=path, cls=m.class_name)
    if quirk:
        ctx.quirk(name, "join_table_dims", f"axis: {dim} -> {axis} (nInputDims ignored)")
    return name


#: every nn module read_torch builds (class names without the ``nn.`` prefix)
SUPPORTED_MODULES: frozenset[str] = frozenset(module.names())


def _module(ctx: _ModuleWalk, m: TorchObject, value: Value, path: str) -> Value:
    """Build module ``m`` (at depth ``ctx.depth``) on ``value`` with its registered builder."""
    if ctx.depth > MAX_MODULE_DEPTH:
        raise ctx.err(path, f"modules nested deeper than {MAX_MODULE_DEPTH} levels", expected="shallower nesting")
    if id(m) in ctx.active:
        raise ctx.err(path, f"{m.class_name} contains itself (cyclic module reference)",
                      expected="a module tree without cycles")
    ctx.visits += 1
    if ctx.visits > ctx.max_nodes:
        raise ctx.err(path, f"the module tree expands to more than {ctx.max_nodes} modules (modules shared by "
                      "reference are expanded at every use)", expected="a module tree that fits the file")
    nn = _nn_name(m.class_name)
    h = module.get(nn) if nn is not None else None
    if h is None:
        raise UnsupportedLayerError(path or "(root)", m.class_name,
                                    sorted(f"nn.{n}" for n in SUPPORTED_MODULES), file=ctx.source)
    if not isinstance(m.fields, LuaTable):
        raise ctx.err(path, f"{m.class_name} fields are a {type(m.fields).__name__}", expected="a table")
    takes = h.arity["input"]
    if takes == "tensor":
        value = _one(ctx, value, m, path)
    elif takes == "table":
        value = _table(ctx, value, m, path)
    ctx.active.add(id(m))
    try:
        return h.fn(ctx, m, path, nn, value)
    finally:
        ctx.active.discard(id(m))


def _child(ctx: _ModuleWalk, m: TorchObject, value: Value, path: str) -> Value:
    """A container's child module, one level deeper."""
    ctx.depth += 1
    try:
        return _module(ctx, m, value, path)
    finally:
        ctx.depth -= 1


# ---- entry point ---------------------------------------------------------------------------------
def _find_roots(obj: Any, path: str, out: list, seen: set[int], depth: int = 0) -> None:
    """nn modules reachable from the top object through plain tables (checkpoints), file order."""
    if depth > 50 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, TorchObject) and _nn_name(obj.class_name) is not None:
        out.append((path, obj))
    elif isinstance(obj, LuaTable):
        for k, v in obj.items():
            label = _key_label(k)
            if not path and isinstance(k, str) and len(k) <= 40:
                label = k  # a checkpoint's top-level key: `model.modules[2]`
            _find_roots(v, f"{path}[{label}]" if path else label, out, seen, depth + 1)


def _key_label(k: Any) -> str:
    """A short label of a table key for module paths (a key may be a huge table or string)."""
    if isinstance(k, str):
        return repr(k) if len(k) <= 40 else repr(k[:40]) + "..."
    if isinstance(k, (bool, int, float)):
        return repr(k)
    return f"<{type(k).__name__}>"


def _prescan(ctx: _ModuleWalk, root: TorchObject) -> None:
    """Mark the max pooling modules whose indices a SpatialMaxUnpooling reads."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    seen: set[int] = set()
    while stack:
        m, d = stack.pop()
        if not isinstance(m, TorchObject) or id(m) in seen or d > MAX_MODULE_DEPTH:
            continue
        seen.add(id(m))
        if _nn_name(m.class_name) == "SpatialMaxUnpooling":
            pool = m.get("pooling")
            if isinstance(pool, TorchObject):
                ctx.pool_wanted.add(id(pool))
            ind = m.get("indices")
            if isinstance(ind, T7Tensor):
                ctx.pool_wanted_idx.add(ind.index)
        mods = m.get("modules")
        if isinstance(mods, LuaTable):
            stack.extend((c, d + 1) for c in mods.array_part())


def read_torch(path: str | os.PathLike | None, *, quirks: str = "none", long_size: int | None = None,
               data: bytes | None = None) -> Graph:
    """Read a Torch7 model (binary or ASCII ``torch.save`` file of nn modules) into a Graph.

    ``long_size``: None = 8-byte longs with a fallback to 4 when sizes come out absurd, or 8/4.
    ``data``: the file's bytes (then ``path`` only names the source in messages). ``quirks``:
    "none" = Torch7 semantics, "cv2" = what cv2.dnn.readNetFromTorch computes.
    """
    with paused_gc():
        return _read_torch(path, quirks=quirks, long_size=long_size, data=data)


def _read_torch(path: str | os.PathLike | None, *, quirks: str = "none", long_size: int | None = None,
               data: bytes | None = None) -> Graph:
    """read_torch without the garbage-collector pause."""
    check_quirks_mode(quirks)
    source = str(path) if path is not None else "<bytes>"
    if data is None:
        if path is None:
            raise TypeError("read_torch needs a path or data=")
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ModelFormatError(f"cannot read the file: {e.strerror or e}", file=source) from e
    obj = read_t7(data, source=source, long_size=long_size)
    roots: list[tuple[str, TorchObject]] = []
    _find_roots(obj, "", roots, set())
    if not roots:
        raise ModelFormatError(f"no nn module in the file (top object is a {type(obj).__name__})",
                               file=source, offset=0, expected="a torch.save'd nn module or a table holding one")
    ctx = _ModuleWalk(source, quirks, budget=max(MIN_PARAM_BUDGET, 2 * len(data)),
               max_nodes=max(MIN_MAX_NODES, len(data) // 16))
    value: Value = INPUT_NAME
    for _, r in roots:
        _prescan(ctx, r)
    for rpath, r in roots:
        value = _module(ctx, r, value, rpath)
    if not ctx.nodes:
        ctx.emit("l1_Identity", "identity", [INPUT_NAME], path="", cls="(empty model)")
    meta = {"module_paths": dict(ctx.paths), "torch_classes": dict(ctx.classes), "quirks": ctx.applied,
            "quirks_mode": quirks, "encoding": detect_encoding(data)}
    return Graph(tuple(ctx.nodes), (INPUT_NAME,), {INPUT_NAME: None}, framework="torch", source=source,
                 meta=meta)
