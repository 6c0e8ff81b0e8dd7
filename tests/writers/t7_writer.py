"""Test-side Torch7 writer: encodes ``torch.save`` files (binary or ASCII) from Python values.

Written from torch7's File.lua / THDiskFile.c rules independently of refnet's reader. Values:
None (nil), bool, int/float (number, a double), str/bytes (string), dict (table, insertion
order), list (table with keys 1..n), :class:`Module` (torch object whose payload is a table of
fields), :class:`Tensor`, :class:`Storage`, :class:`Function`. The same Python object written
twice becomes a reference to one object index, as Torch writes shared objects.

``nn_*`` builders return modules with the fields Torch7's constructors set (seeded random
weights, He-scaled; BatchNorm statistics positive), for the importer tests and benchmarks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_DT = {
    "Double": "<f8", "Float": "<f4", "Half": "<f2", "Byte": "u1", "Char": "i1",
    "Short": "<i2", "Int": "<i4", "Long": "<i8",
}


@dataclass(eq=False)
class Storage:
    """A torch.<Type>Storage (``cuda=True``: torch.Cuda<Type>Storage, Float -> torch.CudaStorage)."""

    data: np.ndarray
    type: str = "Float"
    cuda: bool = False

    @property
    def class_name(self) -> str:
        return _class(self.type, self.cuda, "Storage")


@dataclass(eq=False)
class Tensor:
    """A torch tensor: ``sizes``/``strides`` (elements) and a 0-based ``offset`` into ``storage``."""

    storage: Storage | None
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    type: str = "Float"
    cuda: bool = False

    @property
    def class_name(self) -> str:
        return _class(self.type, self.cuda, "Tensor")


@dataclass(eq=False)
class Module:
    """Any torch class serialized as a table of fields (nn modules)."""

    class_name: str
    fields: dict = field(default_factory=dict)
    version: int | None = 1


@dataclass(eq=False)
class Function:
    """A Lua function: bytecode bytes and an upvalue table (``recursive`` uses tag 8, else 6)."""

    bytecode: bytes
    upvalues: Any = None
    recursive: bool = True


@dataclass(eq=False)
class Raw:
    """Bytes spliced verbatim into the stream (for malformed-file tests)."""

    data: bytes


def _class(t: str, cuda: bool, kind: str) -> str:
    if cuda:
        return f"torch.Cuda{'' if t == 'Float' else t}{kind}"
    return f"torch.{t}{kind}"


def tensor(a: Any, type: str = "Float", cuda: bool = False) -> Tensor:
    """A contiguous tensor holding ``a`` (converted to the element type)."""
    arr = np.ascontiguousarray(np.asarray(a), dtype=np.dtype(_DT[type]).newbyteorder("="))
    st = Storage(arr.reshape(-1), type, cuda)
    strides = tuple(int(s // arr.itemsize) for s in arr.strides) if arr.ndim else ()
    return Tensor(st, tuple(arr.shape), strides, 0, type, cuda)


def empty(type: str = "Float", cuda: bool = False) -> Tensor:
    """torch.Tensor() — no dims, no storage."""
    return Tensor(None, (), (), 0, type, cuda)


class T7Writer:
    """Encodes one object graph. ``ascii`` selects the text encoding; ``long_size`` 8 or 4."""

    def __init__(self, *, ascii: bool = False, long_size: int = 8) -> None:
        self.ascii = ascii
        self.long_size = long_size
        self.out = bytearray()
        self.index: dict[int, int] = {}
        self.keep: list[Any] = []

    # primitive encoders (THDiskFile rules: ascii numbers separated by spaces, "\n" after each call)
    def _ints(self, vals: list[int], fmt: str = "<i") -> None:
        if not vals:
            return
        if self.ascii:
            self.out += (" ".join(str(int(v)) for v in vals) + "\n").encode()
        else:
            self.out += struct.pack("<" + fmt[1:] * len(vals), *vals)

    def int(self, v: int) -> None:
        self._ints([v], "<i")

    def longs(self, vals: list[int]) -> None:
        self._ints(list(vals), "<q" if self.long_size == 8 else "<i")

    def double(self, v: float) -> None:
        if self.ascii:
            self.out += (_g17(v) + "\n").encode()
        else:
            self.out += struct.pack("<d", v)

    def chars(self, b: bytes) -> None:
        self.out += b
        if self.ascii and b:
            self.out += b"\n"

    def string(self, s: str | bytes) -> None:
        b = s.encode("latin-1") if isinstance(s, str) else bytes(s)
        self.int(len(b))
        self.chars(b)

    def array(self, a: np.ndarray, type: str) -> None:
        a = np.ascontiguousarray(a).reshape(-1)
        if type in ("Byte", "Char"):
            self.chars(a.astype(_DT[type]).tobytes())
            return
        if self.ascii:
            if a.size == 0:
                return
            if type in ("Float", "Half"):
                txt = " ".join(f"{float(v):.9g}" for v in a.astype(np.float32))
            elif type == "Double":
                txt = " ".join(_g17(float(v)) for v in a)
            else:
                txt = " ".join(str(int(v)) for v in a)
            self.out += (txt + "\n").encode()
            return
        if type == "Long":
            self.out += a.astype("<i8" if self.long_size == 8 else "<i4").tobytes()
        else:
            self.out += a.astype(_DT[type]).tobytes()

    # objects (File.lua writeObject)
    def obj(self, v: Any) -> None:
        if isinstance(v, Raw):
            self.out += v.data
        elif v is None:
            self.int(0)
        elif isinstance(v, bool):
            self.int(5)
            self.int(1 if v else 0)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            self.int(1)
            self.double(float(v))
        elif isinstance(v, (str, bytes)):
            self.int(2)
            self.string(v)
        elif isinstance(v, Function) and not v.recursive:
            self.int(6)
            self.string(v.bytecode)
            self.obj(v.upvalues)
        elif isinstance(v, (dict, list, Module, Tensor, Storage, Function)):
            tag = 3 if isinstance(v, (dict, list)) else 8 if isinstance(v, Function) else 4
            self.int(tag)
            if id(v) in self.index:
                self.int(self.index[id(v)])
                return
            idx = len(self.index) + 1
            self.index[id(v)] = idx
            self.keep.append(v)
            self.int(idx)
            if isinstance(v, Function):
                self.string(v.bytecode)
                self.obj(v.upvalues)
            elif isinstance(v, (dict, list)):
                items = list(v.items()) if isinstance(v, dict) else [(i + 1, x) for i, x in enumerate(v)]
                self.int(len(items))
                for k, x in items:
                    self.obj(k)
                    self.obj(x)
            else:
                version = v.version if isinstance(v, Module) else 1
                if version is not None:  # files older than torch's versioning have no "V n"
                    self.string(f"V {version}")
                self.string(v.class_name)
                if isinstance(v, Module):
                    self.obj(v.fields)
                elif isinstance(v, Tensor):
                    self.int(len(v.sizes))
                    self.longs(list(v.sizes))
                    self.longs(list(v.strides))
                    self.longs([v.offset + 1])
                    self.obj(v.storage)
                else:
                    self.longs([v.data.size])
                    self.array(v.data, v.type)
        else:
            raise TypeError(f"cannot write {type(v).__name__}")


def _g17(v: float) -> str:
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return f"{v:.17g}"


def dumps(obj: Any, *, ascii: bool = False, long_size: int = 8) -> bytes:
    """The bytes ``torch.save(file, obj, ascii and 'ascii' or 'binary')`` would write."""
    w = T7Writer(ascii=ascii, long_size=long_size)
    w.obj(obj)
    return bytes(w.out)


def save(path: str | Path, obj: Any, *, ascii: bool = False, long_size: int = 8) -> Path:
    p = Path(path)
    p.write_bytes(dumps(obj, ascii=ascii, long_size=long_size))
    return p


# ---- nn module builders (fields as Torch7's constructors leave them) -------------------------------
def _base(cls: str, **fields: Any) -> Module:
    f = {"output": empty(), "gradInput": empty(), "train": False, "_type": "torch.FloatTensor"}
    f.update(fields)
    return Module(cls, f)


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)


def nn_Sequential(*mods: Module, cls: str = "nn.Sequential") -> Module:
    return _base(cls, modules=list(mods))


def nn_ConcatTable(*mods: Module) -> Module:
    return _base("nn.ConcatTable", modules=list(mods))


def nn_ParallelTable(*mods: Module) -> Module:
    return _base("nn.ParallelTable", modules=list(mods))


def nn_Concat(dimension: int, *mods: Module, cls: str = "nn.Concat") -> Module:
    return _base(cls, modules=list(mods), dimension=dimension, size=Storage(np.zeros(0, np.int64), "Long"))


def nn_DepthConcat(dimension: int, *mods: Module) -> Module:
    return nn_Concat(dimension, *mods, cls="nn.DepthConcat")


def nn_Parallel(input_dim: int, output_dim: int, *mods: Module) -> Module:
    return _base("nn.Parallel", modules=list(mods), inputDimension=input_dim, outputDimension=output_dim)


def nn_CAddTable(inplace: bool = False) -> Module:
    return _base("nn.CAddTable", inplace=inplace, gradInput=[])


def nn_JoinTable(dimension: int, n_input_dims: int | None = None) -> Module:
    f: dict[str, Any] = {"dimension": dimension, "size": Storage(np.zeros(0, np.int64), "Long"), "gradInput": []}
    if n_input_dims is not None:
        f["nInputDims"] = n_input_dims
    return _base("nn.JoinTable", **f)


def nn_Identity() -> Module:
    return _base("nn.Identity")


def nn_SpatialConvolution(rng, n_in, n_out, kw, kh, dw=1, dh=1, pw=0, ph=0, *, bias=True,
                          cls="nn.SpatialConvolution", groups=None, mm_2d=False, dtype="Float",
                          cuda=False) -> Module:
    g = groups or 1
    w = _he(rng, (n_out, n_in // g, kh, kw), n_in // g * kh * kw)
    if mm_2d:
        w = w.reshape(n_out, -1)
    f: dict[str, Any] = {"nInputPlane": n_in, "nOutputPlane": n_out, "kW": kw, "kH": kh, "dW": dw, "dH": dh,
                         "padW": pw, "padH": ph, "weight": tensor(w, dtype, cuda),
                         "gradWeight": tensor(np.zeros_like(w), dtype, cuda)}
    if bias:
        f["bias"] = tensor(rng.uniform(-0.1, 0.1, n_out), dtype, cuda)
        f["gradBias"] = tensor(np.zeros(n_out), dtype, cuda)
    if groups is not None:
        f["groups"] = groups
    return _base(cls, **f)


def nn_SpatialDilatedConvolution(rng, n_in, n_out, kw, kh, dw=1, dh=1, pw=0, ph=0, dil_w=1, dil_h=1,
                                 bias=True) -> Module:
    m = nn_SpatialConvolution(rng, n_in, n_out, kw, kh, dw, dh, pw, ph, bias=bias,
                              cls="nn.SpatialDilatedConvolution")
    m.fields.update(dilationW=dil_w, dilationH=dil_h)
    return m


def nn_SpatialFullConvolution(rng, n_in, n_out, kw, kh, dw=1, dh=1, pw=0, ph=0, adj_w=0, adj_h=0,
                              bias=True) -> Module:
    w = _he(rng, (n_in, n_out, kh, kw), n_in * kh * kw // max(dw * dh, 1))
    f: dict[str, Any] = {"nInputPlane": n_in, "nOutputPlane": n_out, "kW": kw, "kH": kh, "dW": dw, "dH": dh,
                         "padW": pw, "padH": ph, "adjW": adj_w, "adjH": adj_h, "weight": tensor(w),
                         "gradWeight": tensor(np.zeros_like(w)), "finput": empty(), "fgradInput": empty(),
                         "ones": empty()}
    if bias:
        f["bias"] = tensor(rng.uniform(-0.1, 0.1, n_out))
        f["gradBias"] = tensor(np.zeros(n_out))
    return _base("nn.SpatialFullConvolution", **f)


def nn_SpatialMaxPooling(kw, kh, dw=None, dh=None, pw=0, ph=0, ceil_mode=False,
                         indices: Tensor | None = None) -> Module:
    return _base("nn.SpatialMaxPooling", kW=kw, kH=kh, dW=dw or kw, dH=dh or kh, padW=pw, padH=ph,
                 ceil_mode=ceil_mode, indices=indices if indices is not None else empty("Long"))


def nn_SpatialMaxUnpooling(pool: Module) -> Module:
    return _base("nn.SpatialMaxUnpooling", pooling=pool, indices=pool.fields["indices"])


def nn_SpatialAveragePooling(kw, kh, dw=None, dh=None, pw=0, ph=0, ceil_mode: bool | None = False,
                             count_include_pad: bool | None = True, divide: bool | None = True) -> Module:
    f: dict[str, Any] = {"kW": kw, "kH": kh, "dW": dw or kw, "dH": dh or kh, "padW": pw, "padH": ph}
    if ceil_mode is not None:
        f["ceil_mode"] = ceil_mode
    if count_include_pad is not None:
        f["count_include_pad"] = count_include_pad
    if divide is not None:
        f["divide"] = divide
    return _base("nn.SpatialAveragePooling", **f)


def nn_SpatialBatchNormalization(rng, n, eps=1e-5, affine=True, cls="nn.SpatialBatchNormalization",
                                 old_std=False, dtype="Float") -> Module:
    mean = rng.uniform(-0.5, 0.5, n)
    var = rng.uniform(0.5, 2.0, n)
    f: dict[str, Any] = {"eps": eps, "momentum": 0.1, "affine": affine, "nOutput": n,
                         "running_mean": tensor(mean, dtype)}
    if old_std:
        f["running_std"] = tensor(1.0 / np.sqrt(var + eps), dtype)
    else:
        f["running_var"] = tensor(var, dtype)
    if affine:
        f["weight"] = tensor(rng.uniform(0.5, 1.5, n), dtype)
        f["bias"] = tensor(rng.uniform(-0.2, 0.2, n), dtype)
    return _base(cls, **f)


def nn_BatchNormalization(rng, n, eps=1e-5, affine=True) -> Module:
    return nn_SpatialBatchNormalization(rng, n, eps, affine, cls="nn.BatchNormalization")


def nn_InstanceNormalization(rng, n, eps=1e-5) -> Module:
    """fast-neural-style's module: eps, nOutput, weight ~ U(0, 1), bias 0 at init (random here)."""
    return _base("nn.InstanceNormalization", eps=eps, nOutput=n, prev_N=-1,
                 weight=tensor(rng.uniform(0.5, 1.5, n)), bias=tensor(rng.uniform(-0.2, 0.2, n)),
                 gradWeight=tensor(np.zeros(n)), gradBias=tensor(np.zeros(n)))


def nn_SpatialReflectionPadding(l, r, t, b) -> Module:
    return _base("nn.SpatialReflectionPadding", pad_l=l, pad_r=r, pad_t=t, pad_b=b)


def nn_SpatialZeroPadding(l, r, t, b) -> Module:
    return _base("nn.SpatialZeroPadding", pad_l=l, pad_r=r, pad_t=t, pad_b=b)


def nn_Padding(dim, pad, n_input_dim=None, value=0.0, index=1) -> Module:
    f: dict[str, Any] = {"dim": dim, "pad": pad, "value": value, "index": index,
                         "outputSize": Storage(np.zeros(0, np.int64), "Long")}
    if n_input_dim is not None:
        f["nInputDim"] = n_input_dim
    return _base("nn.Padding", **f)


def nn_SpatialUpSamplingNearest(scale: int) -> Module:
    return _base("nn.SpatialUpSamplingNearest", scale_factor=scale)


def nn_SpatialUpSamplingBilinear(scale: int) -> Module:
    return _base("nn.SpatialUpSamplingBilinear", scale_factor=scale,
                 inputSize=Storage(np.zeros(4, np.int64), "Long"), outputSize=Storage(np.zeros(4, np.int64), "Long"))


def nn_ReLU(inplace=False, cls="nn.ReLU") -> Module:
    return _base(cls, threshold=0, val=0, inplace=inplace)


def nn_PReLU(rng, n_planes=0) -> Module:
    w = rng.uniform(0.05, 0.5, max(n_planes, 1))
    return _base("nn.PReLU", nOutputPlane=n_planes, weight=tensor(w), gradWeight=tensor(np.zeros_like(w)))


def nn_ELU(alpha=1.0) -> Module:
    return _base("nn.ELU", alpha=alpha, inplace=False)


def nn_simple(name: str, **fields: Any) -> Module:
    """Modules with no parameters worth a builder: Tanh, Sigmoid, SoftMax, LogSoftMax, Square..."""
    return _base(name if "." in name else "nn." + name, **fields)


def nn_Linear(rng, n_in, n_out, bias=True) -> Module:
    w = _he(rng, (n_out, n_in), n_in)
    f: dict[str, Any] = {"weight": tensor(w), "gradWeight": tensor(np.zeros_like(w))}
    if bias:
        f["bias"] = tensor(rng.uniform(-0.1, 0.1, n_out))
        f["gradBias"] = tensor(np.zeros(n_out))
    return _base("nn.Linear", **f)


def nn_View(*sizes: int, num_input_dims: int | None = None) -> Module:
    size = Storage(np.asarray(sizes, np.int64), "Long")
    f: dict[str, Any] = {"size": size, "numElements": int(np.prod([s for s in sizes if s > 0]))}
    if num_input_dims is not None:
        f["numInputDims"] = num_input_dims
    return _base("nn.View", **f)


def nn_Reshape(*sizes: int, batch_mode: bool | None = None) -> Module:
    f: dict[str, Any] = {"size": Storage(np.asarray(sizes, np.int64), "Long"), "nelement": int(np.prod(sizes))}
    if batch_mode is not None:
        f["batchMode"] = batch_mode
    return _base("nn.Reshape", **f)


def nn_Narrow(dimension, index, length=1) -> Module:
    return _base("nn.Narrow", dimension=dimension, index=index, length=length)


def nn_MulConstant(c) -> Module:
    return _base("nn.MulConstant", constant_scalar=c, inplace=False)


def nn_AddConstant(c) -> Module:
    return _base("nn.AddConstant", constant_scalar=c, inplace=False)


def nn_Dropout(p=0.5, v2: bool | None = True, cls="nn.Dropout") -> Module:
    f: dict[str, Any] = {"p": p, "noise": empty(), "inplace": False}
    if v2 is not None:
        f["v2"] = v2
    return _base(cls, **f)


def nn_SpatialDropout(p=0.5) -> Module:
    return _base("nn.SpatialDropout", p=p, noise=empty(), stochastic_inference=False)


def nn_Power(pw) -> Module:
    return _base("nn.Power", pow=pw)


def nn_Sqrt(eps=0.0) -> Module:
    return _base("nn.Sqrt", eps=eps)


def nn_SpatialCrossMapLRN(size=5, alpha=1e-4, beta=0.75, k=1.0) -> Module:
    return _base("nn.SpatialCrossMapLRN", size=size, alpha=alpha, beta=beta, k=k)


def nn_Normalize(p=2.0, eps=1e-10) -> Module:
    return _base("nn.Normalize", p=p, eps=eps)


def nn_ShaveImage(size) -> Module:
    return _base("nn.ShaveImage", size=size)


def nn_TotalVariation(strength=1e-6) -> Module:
    return _base("nn.TotalVariation", strength=strength, x_diff=empty(), y_diff=empty())


# ---- fast-neural-style (jcjohnson/fast-neural-style, fast_neural_style/models.lua) ------------------
def fast_neural_style(variant: str, seed: int = 0, *, width: int = 32, final_gain: float = 1.0) -> Module:
    """The generator network in the two published variants, with seeded random weights.

    ``eccv16``: arch c9s1-32,d64,d128,R128x5,u64,u32,c9s1-3 with batch norm, a 40-pixel
    reflection pad in front, unpadded 3x3 convs in the residual blocks and ShaveImage(2) shortcuts.
    ``instance_norm``: the same arch with reflection padding before every conv, instance norm and
    Identity shortcuts. Both end in Tanh, MulConstant(150), TotalVariation. ``width`` is the
    first conv's channels (32 as published; tests use less); ``final_gain`` scales the last
    conv's weights (trained models keep the pre-Tanh response out of saturation).
    """
    if variant not in ("eccv16", "instance_norm"):
        raise ValueError(f"variant must be 'eccv16' or 'instance_norm', got {variant!r}")
    rng = np.random.default_rng(seed)
    inorm = variant == "instance_norm"
    c1, c2, c3 = width, 2 * width, 4 * width

    def norm(n):
        return nn_InstanceNormalization(rng, n) if inorm else nn_SpatialBatchNormalization(rng, n)

    def conv(n_in, n_out, k, s, pad):
        mods = []
        p = (k - 1) // 2 if pad else 0
        if inorm and pad:
            mods.append(nn_SpatialReflectionPadding(p, p, p, p))
            p = 0
        mods.append(nn_SpatialConvolution(rng, n_in, n_out, k, k, s, s, p, p))
        return mods

    model: list[Module] = []
    if not inorm:
        model.append(nn_SpatialReflectionPadding(40, 40, 40, 40))
    model += conv(3, c1, 9, 1, True) + [norm(c1), nn_ReLU(True)]
    model += conv(c1, c2, 3, 2, True) + [norm(c2), nn_ReLU(True)]
    model += conv(c2, c3, 3, 2, True) + [norm(c3), nn_ReLU(True)]
    for _ in range(5):
        block = conv(c3, c3, 3, 1, inorm) + [norm(c3), nn_ReLU(True)] + conv(c3, c3, 3, 1, inorm) + [norm(c3)]
        shortcut = nn_Identity() if inorm else nn_ShaveImage(2)
        model.append(nn_Sequential(nn_ConcatTable(nn_Sequential(*block), shortcut), nn_CAddTable()))
    model += [nn_SpatialFullConvolution(rng, c3, c2, 3, 3, 2, 2, 1, 1, 1, 1), norm(c2), nn_ReLU(True)]
    model += [nn_SpatialFullConvolution(rng, c2, c1, 3, 3, 2, 2, 1, 1, 1, 1), norm(c1), nn_ReLU(True)]
    last = conv(c1, 3, 9, 1, True)
    w = last[-1].fields["weight"]
    w.storage.data[:] *= np.float32(final_gain)
    model += last
    model += [nn_simple("Tanh"), nn_MulConstant(150.0), nn_TotalVariation(1e-6)]
    return nn_Sequential(*model)


def write_fast_neural_style(path: str | Path, variant: str, seed: int = 0, *, width: int = 32,
                            final_gain: float = 1.0, ascii: bool = False, checkpoint: bool = True) -> Path:
    """Write a fast-neural-style t7 (as train.lua saves it: a checkpoint table holding ``model``).

    ``variant``: "eccv16" or "instance_norm"; see :func:`fast_neural_style` for the rest.
    """
    model = fast_neural_style(variant, seed, width=width, final_gain=final_gain)
    obj: Any = model
    if checkpoint:
        opt = {"arch": "c9s1-32,d64,d128,R128,R128,R128,R128,R128,u64,u32,c9s1-3",
               "use_instance_norm": 1 if variant == "instance_norm" else 0,
               "padding_type": "reflect" if variant == "instance_norm" else "reflect-start",
               "tanh_constant": 150, "tv_strength": 1e-6}
        obj = {"opt": opt, "model": model, "train_loss_history": [1.5, 1.25, 1.0]}
    return save(path, obj, ascii=ascii)
