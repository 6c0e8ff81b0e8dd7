"""A Torch7 ``torch.save`` writer (binary, 8-byte longs) for refnet's generated models.

Follows torch7's ``File.lua`` ``writeObject`` rules: every value starts with an int type tag
(nil 0, number 1, string 2, table 3, torch object 4, boolean 5); tables and torch objects carry
a 1-based object index, and an object written a second time is written as a reference (its tag
and index only); torch objects then hold the version string ``"V 1"``, the class name and, for
tensors, ``nDimension``, sizes, strides and the 1-based storage offset (longs) followed by the
storage; storages hold their element count (a long) and the raw little-endian elements; every
other class is its table of fields.

Values: None, bool, int/float, str/bytes, dict, list (a Lua sequence, keys 1..n), :class:`Obj`
(an ``nn.*`` module or other class as a table of fields), numpy arrays (a ``torch.FloatTensor``
unless float64/int64: ``DoubleTensor``/``LongTensor``), and the reader's own
:class:`refnet.weights_import.t7.TorchObject` / ``LuaTable`` / ``T7Tensor`` / ``T7Storage`` (so a
file read by refnet can be written back with new weights, see :func:`reseed`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Obj", "dumps", "save", "reseed"]

_TENSOR_TYPES = {np.dtype("float32"): "Float", np.dtype("float64"): "Double", np.dtype("int64"): "Long",
                 np.dtype("int32"): "Int", np.dtype("uint8"): "Byte"}


@dataclass(eq=False)
class Obj:
    """A torch object serialized as a table: ``class_name`` (e.g. ``"nn.SpatialConvolution"``) and ``fields``."""

    class_name: str
    fields: dict = field(default_factory=dict)


@dataclass(eq=False)
class _Storage:
    data: np.ndarray  # 1-D, one of _TENSOR_TYPES


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.index: dict[int, int] = {}
        self.keep: list[Any] = []  # objects indexed by id() stay alive while writing

    def int(self, v: int) -> None:
        self.out += struct.pack("<i", int(v))

    def long(self, v: int) -> None:
        self.out += struct.pack("<q", int(v))

    def string(self, s: str | bytes) -> None:
        b = s.encode("latin-1") if isinstance(s, str) else bytes(s)
        self.int(len(b))
        self.out += b

    def _indexed(self, tag: int, v: Any) -> bool:
        """Write the tag and the object index; True when ``v`` was written before (a reference)."""
        self.int(tag)
        key = id(v)
        if key in self.index:
            self.int(self.index[key])
            return True
        self.index[key] = len(self.index) + 1
        self.keep.append(v)
        self.int(self.index[key])
        return False

    def value(self, v: Any) -> None:
        from refnet.weights_import.t7 import LuaTable, T7Storage, T7Tensor, TorchObject

        if v is None:
            self.int(0)
        elif isinstance(v, (bool, np.bool_)):
            self.int(5)
            self.int(1 if v else 0)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            self.int(1)
            self.out += struct.pack("<d", float(v))
        elif isinstance(v, (str, bytes)):
            self.int(2)
            self.string(v)
        elif isinstance(v, (dict, list, LuaTable)):
            if self._indexed(3, v):
                return
            items = list(v.items()) if isinstance(v, dict) else [(i + 1, x) for i, x in enumerate(v)]
            self.int(len(items))
            for k, x in items:
                self.value(k)
                self.value(x)
        elif isinstance(v, (Obj, TorchObject)):
            if self._indexed(4, v):
                return
            self.string("V 1")
            self.string(v.class_name)
            self.value(v.fields)
        elif isinstance(v, T7Tensor):
            self.value(np.asarray(v.array))
        elif isinstance(v, T7Storage):
            self._storage(_Storage(np.asarray(v.array).reshape(-1)))
        elif isinstance(v, np.ndarray):
            self._tensor(v)
        elif isinstance(v, _Storage):
            self._storage(v)
        else:
            raise TypeError(f"cannot write a {type(v).__name__} to a t7 file")

    def _type(self, a: np.ndarray) -> tuple[np.ndarray, str]:
        t = _TENSOR_TYPES.get(a.dtype)
        if t is None:
            a, t = a.astype(np.float32), "Float"
        return a, t

    def _tensor(self, a: np.ndarray) -> None:
        a, t = self._type(np.ascontiguousarray(a))
        if self._indexed(4, a):
            return
        self.string("V 1")
        self.string(f"torch.{t}Tensor")
        if a.size == 0:  # torch.Tensor(): no dimensions, no storage
            self.int(0)
            self.long(1)
            self.int(0)
            return
        self.int(a.ndim)
        for d in a.shape:
            self.long(d)
        stride = 1
        strides = []
        for d in reversed(a.shape):
            strides.append(stride)
            stride *= int(d)
        for s in reversed(strides):
            self.long(s)
        self.long(1)  # storage offset, 1-based
        self._storage(_Storage(a.reshape(-1)))

    def _storage(self, s: _Storage) -> None:
        a, t = self._type(np.ascontiguousarray(s.data).reshape(-1))
        if self._indexed(4, s):
            return
        self.string("V 1")
        self.string(f"torch.{t}Storage")
        self.long(a.size)
        self.out += a.astype(a.dtype.newbyteorder("<")).tobytes()


def dumps(obj: Any) -> bytes:
    """The bytes ``torch.save(file, obj)`` (binary) would write for ``obj``."""
    w = _Writer()
    w.value(obj)
    return bytes(w.out)


def save(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` to ``path`` as a binary t7 file."""
    p = Path(path)
    p.write_bytes(dumps(obj))
    return p


# ---- re-seeding a model read by refnet --------------------------------------------------------------
_SCRATCH = ("output", "gradInput", "gradWeight", "gradBias", "finput", "fgradInput", "_input", "_gradOutput",
            "noise", "buffer", "save_mean", "save_std", "_output", "ones", "columns")


def _fan_in(cls: str, shape: tuple[int, ...], m: Any) -> int:
    if "FullConvolution" in cls and len(shape) == 4:  # (in, out, kh, kw): each output sums in*kh*kw/(dh*dw)
        return max(1, shape[0] * shape[2] * shape[3] // max(1, int(m.get("dW", 1)) * int(m.get("dH", 1))))
    return max(1, math.prod(shape[1:]) if len(shape) > 1 else shape[0])


def reseed(root: Any, seed: int = 0) -> int:
    """Replace, in place, the learned tensors of every ``nn.*`` module under ``root`` (as read by
    :func:`refnet.weights_import.t7.read_t7`) by seeded values of the same shape: convolution and
    linear weights He-scaled (std sqrt(2 / fan_in)), biases N(0, 0.05), batch-norm running means
    N(0, 0.1) and variances U(0.5, 1.5), affine scales U(0.8, 1.2), PReLU slopes U(0.05, 0.3).
    Scratch buffers (output, gradInput, gradWeight, ...) become empty. Returns the number of
    tensors replaced."""
    from refnet.weights_import.t7 import LuaTable, T7Tensor, TorchObject

    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    count = 0

    def arr(v: Any) -> np.ndarray | None:
        return np.asarray(v.array) if isinstance(v, T7Tensor) else None

    def visit(v: Any) -> None:
        nonlocal count
        if id(v) in seen:
            return
        seen.add(id(v))
        if isinstance(v, TorchObject) and isinstance(v.fields, dict):
            cls = v.class_name
            f = v.fields
            for k in list(f):
                a = arr(f[k])
                if a is None:
                    visit(f[k])
                    continue
                if k in _SCRATCH:
                    f[k] = np.zeros(0, np.float32)
                    continue
                if a.dtype.kind != "f" or a.size == 0:
                    continue
                shape = a.shape
                if k == "weight" and "PReLU" in cls:
                    new = rng.uniform(0.05, 0.3, shape)
                elif k == "weight" and ("Normalization" in cls or "Norm" in cls):
                    new = rng.uniform(0.8, 1.2, shape)
                elif k == "weight":
                    new = rng.normal(0.0, math.sqrt(2.0 / _fan_in(cls, shape, v)), shape)
                elif k == "bias":
                    new = rng.normal(0.0, 0.05, shape)
                elif k == "running_mean":
                    new = rng.normal(0.0, 0.1, shape)
                elif k == "running_var":
                    new = rng.uniform(0.5, 1.5, shape)
                elif k == "running_std":  # old BN: 1 / sqrt(var + eps)
                    new = 1.0 / np.sqrt(rng.uniform(0.5, 1.5, shape))
                else:
                    continue
                f[k] = new.astype(a.dtype)
                count += 1
        elif isinstance(v, TorchObject):
            visit(v.fields)
        elif isinstance(v, (dict, LuaTable)):
            for x in list(v.values()):
                visit(x)
        elif isinstance(v, list):
            for x in v:
                visit(x)

    visit(root)
    return count
