"""A from-scratch reader of Torch7 serialized objects (``torch.save`` files, ``.t7``/``.net``).

It follows torch7's ``File.lua`` (``writeObject``/``readObject``) and ``THDiskFile.c``: a stream
of Lua values, each introduced by an int type tag (nil 0, number 1, string 2, table 3, torch
object 4, boolean 5, function 6, recursive function 8, legacy recursive function 7). Tables,
torch objects and recursive functions carry an object index; an index seen before is a
reference to the object already read (shared and cyclic references come back as the same
Python object). Torch objects start with a ``"V <n>"`` version string and the class name;
tensors and storages have their own binary layout (sizes, strides, 1-based offset, storage),
every other class is a table of fields.

Two encodings: binary (native little-endian ints/doubles, "long" of 8 or 4 bytes) and ASCII
(``%d``/``%.17g`` text separated by spaces/newlines, strings as raw bytes). Nothing is ever
executed: functions are kept as opaque bytecode. Every read goes through one bounded reader;
declared sizes are checked against the bytes left before anything is allocated, nesting is
limited, and malformed input raises :class:`refnet.errors.ModelFormatError` with the byte
offset (and line:col for ASCII files), what was expected, and as ``layer`` the path of
tables, keys and classes being read (``(nn.Sequential).modules[2] (nn.ReLU).output``).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError

__all__ = [
    "LuaTable",
    "LuaFunction",
    "TorchObject",
    "T7Tensor",
    "T7Storage",
    "read_t7",
    "detect_encoding",
    "MAX_DEPTH",
]

TYPE_NIL = 0
TYPE_NUMBER = 1
TYPE_STRING = 2
TYPE_TABLE = 3
TYPE_TORCH = 4
TYPE_BOOLEAN = 5
TYPE_FUNCTION = 6
LEGACY_TYPE_RECUR_FUNCTION = 7
TYPE_RECUR_FUNCTION = 8
_TYPE_NAMES = {
    TYPE_NIL: "nil",
    TYPE_NUMBER: "number",
    TYPE_STRING: "string",
    TYPE_TABLE: "table",
    TYPE_TORCH: "torch object",
    TYPE_BOOLEAN: "boolean",
    TYPE_FUNCTION: "function",
    LEGACY_TYPE_RECUR_FUNCTION: "function (legacy recursive)",
    TYPE_RECUR_FUNCTION: "function (recursive)",
}

MAX_DEPTH = 200  # nested Lua values; real nn models stay well below 60
MAX_TENSOR_DIMS = 64
# An expanded view (stride 0) may have more elements than its storage, but not absurdly many:
# copying it must not allocate more than a few tens of MB the file cannot justify.
MAX_VIEW_ELEMENTS = 1 << 22

# element type name (as in torch.<Name>Tensor / torch.Cuda<Name>Tensor) -> (numpy dtype, ascii kind)
_ELEM_TYPES: dict[str, tuple[np.dtype, str]] = {
    "Double": (np.dtype("<f8"), "float"),
    "Float": (np.dtype("<f4"), "float"),
    "Half": (np.dtype("<f2"), "float"),
    "Byte": (np.dtype("u1"), "raw"),
    "Char": (np.dtype("i1"), "raw"),
    "Short": (np.dtype("<i2"), "int"),
    "Int": (np.dtype("<i4"), "int"),
    "Long": (np.dtype("<i8"), "long"),
}
_TENSOR_RE = re.compile(r"^torch\.(Cuda)?(Double|Float|Half|Byte|Char|Short|Int|Long)?(Tensor|Storage)$")


class LuaTable(dict):
    """A Lua table read from the file (keys: str, int/float, bool or objects), with its object index.

    Hashes by identity so tables can be keys of other tables, as in Lua.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    __hash__ = object.__hash__  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def array_part(self) -> list[Any]:
        """The values at integer keys 1..n (Lua's sequence part), in order."""
        out = []
        i = 1
        while i in self:
            out.append(self[i])
            i += 1
        return out


@dataclass(eq=False)
class LuaFunction:
    """A serialized Lua function: opaque bytecode plus its upvalues. Never executed."""

    index: int | None
    bytecode: bytes
    upvalues: Any = None


@dataclass(eq=False)
class T7Storage:
    """A torch.*Storage: a flat array (read-only numpy view of the file data, CPU)."""

    class_name: str
    index: int
    array: np.ndarray


@dataclass(eq=False)
class T7Tensor:
    """A torch.*Tensor: ``array`` is its strided view (read-only) onto the storage, or an
    empty array for a tensor without storage. Cuda tensors are read as CPU data."""

    class_name: str
    index: int
    array: np.ndarray
    storage: T7Storage | None = None
    offset: int = 0  # 0-based storage offset


@dataclass(eq=False)
class TorchObject:
    """Any other torch class (``nn.*`` modules, ...): ``fields`` is what its table held."""

    class_name: str
    version: int
    index: int
    fields: Any = field(default=None)

    def get(self, key: str, default: Any = None) -> Any:
        f = self.fields
        if isinstance(f, dict):
            return f.get(key, default)
        return default

    def __contains__(self, key: str) -> bool:
        return isinstance(self.fields, dict) and key in self.fields


class _AbsurdSize(ModelFormatError):
    """A declared size that cannot fit in the file: the usual sign of a wrong long size."""


def detect_encoding(data: bytes) -> str:
    """``"ascii"`` when the stream starts with a decimal type tag as text, else ``"binary"``.

    A binary file starts with an int32 tag 0..8 (first byte 0x00-0x08), never an ASCII digit.
    """
    m = re.match(rb"\s*[0-9]", data[:64])
    return "ascii" if m else "binary"


_INT_RE = re.compile(rb"[ \t\r\n\f\v]*([+-]?[0-9]+)")
_FLOAT_RE = re.compile(
    rb"[ \t\r\n\f\v]*([+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan(?:\([^)]*\))?))",
    re.IGNORECASE,
)
_TOKEN_RE = re.compile(rb"[ \t\r\f\v]*(\S+)")


class _Stream:
    """The one bounded reader: every primitive read checks the bytes left first."""

    def __init__(self, data: bytes, source: str, encoding: str, long_size: int) -> None:
        self.buf = bytes(data)
        self.n = len(self.buf)
        self.pos = 0
        self.source = source
        self.ascii = encoding == "ascii"
        self.long_size = long_size

    # -- errors ---------------------------------------------------------------------------
    def error(self, message: str, *, expected: str | None = None, at: int | None = None,
              cls: type[ModelFormatError] = ModelFormatError) -> ModelFormatError:
        off = self.pos if at is None else at
        line = col = None
        if self.ascii:
            line = self.buf.count(b"\n", 0, off) + 1
            col = off - (self.buf.rfind(b"\n", 0, off) + 1) + 1
        return cls(message, file=self.source, offset=off, line=line, col=col, expected=expected)

    @property
    def left(self) -> int:
        return self.n - self.pos

    def take(self, k: int, what: str) -> bytes:
        if k < 0:
            raise self.error(f"negative length {k} for {what}", expected="a length >= 0")
        if k > self.left:
            raise self.error(
                f"truncated file: {what} needs {k} bytes but only {self.left} are left",
                expected=f"{k} more bytes",
            )
        b = self.buf[self.pos:self.pos + k]
        self.pos += k
        return b

    # -- ascii helpers --------------------------------------------------------------------
    def _autospace(self) -> None:
        if self.pos < self.n and self.buf[self.pos] == 0x0A:
            self.pos += 1

    def _ascii_token(self, rx: re.Pattern[bytes], what: str) -> bytes:
        m = rx.match(self.buf, self.pos)
        if not m:
            if self.buf[self.pos:].strip() == b"":
                raise self.error(f"truncated file: end of data while reading {what}", expected=what)
            raise self.error(f"malformed text where {what} was expected", expected=what)
        self.pos = m.end()
        return m.group(1)

    # -- scalars --------------------------------------------------------------------------
    def _ascii_int(self, what: str) -> int:
        at = self.pos
        tok = self._ascii_token(_INT_RE, what)
        if len(tok) > 21:  # past 64 bits (and Python's int/str digit limit)
            raise self.error(f"{what} has {len(tok)} digits", at=at, expected="a 64-bit integer")
        return int(tok)

    def read_int(self, what: str = "an int") -> int:
        if self.ascii:
            v = self._ascii_int(what)
            self._autospace()
            if not -(1 << 31) <= v < (1 << 31):
                raise self.error(f"{what} {v} does not fit in 32 bits", expected="a 32-bit int")
            return v
        return struct.unpack("<i", self.take(4, what))[0]

    def read_long(self, what: str = "a long") -> int:
        if self.ascii:
            v = self._ascii_int(what)
            self._autospace()
            return v
        if self.long_size == 8:
            return struct.unpack("<q", self.take(8, what))[0]
        return struct.unpack("<i", self.take(4, what))[0]

    def read_longs(self, k: int, what: str) -> list[int]:
        if k == 0:
            return []
        if self.ascii:
            vals = [self._ascii_int(what) for _ in range(k)]
            self._autospace()
            return vals
        fmt = f"<{k}q" if self.long_size == 8 else f"<{k}i"
        return list(struct.unpack(fmt, self.take(k * self.long_size, what)))

    def read_double(self, what: str = "a number") -> float:
        if self.ascii:
            tok = self._ascii_token(_FLOAT_RE, what)
            self._autospace()
            t = tok.lower()
            if b"nan" in t:
                return float("nan")
            return float(tok)
        return struct.unpack("<d", self.take(8, what))[0]

    def read_chars(self, k: int, what: str) -> bytes:
        """Raw bytes (Lua string payloads, Char/Byte data): verbatim in both encodings."""
        b = self.take(k, what)
        if self.ascii and k > 0:
            self._autospace()
        return b

    def read_string(self, what: str = "a string") -> bytes:
        start = self.pos
        k = self.read_int(f"length of {what}")
        if k < 0:
            raise self.error(f"negative length {k} for {what}", at=start, expected="length >= 0")
        if k > self.left:
            raise self.error(
                f"{what} declares {k} bytes but only {self.left} are left", at=start,
                expected=f"at most {self.left} bytes",
            )
        return self.read_chars(k, what)

    # -- arrays ---------------------------------------------------------------------------
    def read_array(self, dtype: np.dtype, kind: str, k: int, what: str) -> np.ndarray:
        """``k`` elements of ``dtype`` (storage data). The size was checked by the caller."""
        if k == 0:
            return np.zeros(0, dtype=dtype)
        if not self.ascii:
            if kind == "long":
                if self.long_size == 8:
                    return np.frombuffer(self.take(8 * k, what), dtype="<i8")
                return np.frombuffer(self.take(4 * k, what), dtype="<i4").astype(np.int64)
            raw = self.take(dtype.itemsize * k, what)
            return np.frombuffer(raw, dtype=dtype)
        if kind == "raw":
            return np.frombuffer(self.read_chars(k, what), dtype=dtype)
        toks = np.array(self._ascii_tokens(k, what))
        try:
            if kind == "float":
                with np.errstate(over="ignore"):  # out-of-range text numbers become +-inf, as in C
                    return toks.astype(np.float64).astype(dtype)
            ints = toks.astype(np.int64)
        except (ValueError, OverflowError) as e:
            raise self.error(f"{what}: malformed number ({e})", expected="numbers") from None
        if kind != "long":
            info = np.iinfo(dtype)
            if ints.size and (ints.min() < info.min or ints.max() > info.max):
                raise self.error(f"{what}: integer out of range for {dtype}", expected=str(dtype))
            return ints.astype(dtype)
        return ints

    def _ascii_tokens(self, k: int, what: str) -> list[bytes]:
        """``k`` whitespace-separated tokens, line by line (the writer puts one array per line)."""
        toks: list[bytes] = []
        while len(toks) < k:
            # skip whitespace
            while self.pos < self.n and self.buf[self.pos] in b" \t\r\n\f\v":
                self.pos += 1
            if self.pos >= self.n:
                raise self.error(
                    f"truncated file: {what} needs {k} numbers, found {len(toks)}",
                    expected=f"{k} numbers",
                )
            end = self.buf.find(b"\n", self.pos)
            end = self.n if end < 0 else end
            line = self.buf[self.pos:end].split()
            need = k - len(toks)
            if len(line) <= need:
                toks.extend(line)
                self.pos = end
            else:  # more on this line than needed: consume just enough tokens
                for _ in range(need):
                    toks.append(self._ascii_token(_TOKEN_RE, what))
        self._autospace()
        return toks


class _Reader:
    """Reads one object graph from a :class:`_Stream` (object index table, depth limit)."""

    def __init__(self, stream: _Stream) -> None:
        self.s = stream
        self.objects: dict[int, Any] = {}
        self.depth = 0
        # where the reader is: table keys and ("class", name) of torch objects, outermost first;
        # left as it was when an error propagates, so the error can say where it happened
        self.path: list[Any] = []

    def where(self) -> str:
        """The path being read, e.g. ``(nn.Sequential).modules[2] (nn.SpatialConvolution).weight``."""
        out = ""
        for p in self.path:
            if isinstance(p, tuple):
                out += f" ({p[1]})" if out else f"({p[1]})"
            elif isinstance(p, str) and p.isidentifier() and len(p) <= 40:
                out += f".{p}"
            elif isinstance(p, (int, float)) and not isinstance(p, bool):
                out += f"[{int(p) if float(p).is_integer() and abs(p) < 1e15 else p}]"
            else:
                out += f"[<{type(p).__name__}>]"
        return out or "(top level)"

    def read_object(self) -> Any:
        s = self.s
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise s.error(f"objects nested deeper than {MAX_DEPTH} levels", expected="a shallower file")
            tag_at = s.pos
            tag = s.read_int("a type tag")
            if tag == TYPE_NIL:
                return None
            if tag == TYPE_NUMBER:
                return s.read_double()
            if tag == TYPE_BOOLEAN:
                at = s.pos
                v = s.read_int("a boolean")
                if v not in (0, 1):
                    raise s.error(f"boolean stored as {v}", at=at, expected="0 or 1")
                return v == 1
            if tag == TYPE_STRING:
                return _decode(s.read_string())
            if tag == TYPE_FUNCTION:
                code = s.read_string("function bytecode")
                fn = LuaFunction(None, code)
                fn.upvalues = self.read_object()
                return fn
            if tag in (TYPE_TABLE, TYPE_TORCH, TYPE_RECUR_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION):
                idx_at = s.pos
                index = s.read_int("an object index")
                if index in self.objects:
                    return self.objects[index]
                if index < 0:
                    raise s.error(f"negative object index {index}", at=idx_at, expected="index >= 0")
                if tag == TYPE_TABLE:
                    return self._read_table(index)
                if tag == TYPE_TORCH:
                    return self._read_torch(index)
                code = s.read_string("function bytecode")
                fn = LuaFunction(index, code)
                self.objects[index] = fn
                fn.upvalues = self.read_object()
                return fn
            raise s.error(
                f"unknown type tag {tag}", at=tag_at,
                expected="a Lua type tag 0..8 (nil, number, string, table, torch, boolean, function)",
            )
        finally:
            self.depth -= 1

    def _read_table(self, index: int) -> LuaTable:
        s = self.s
        t = LuaTable(index)
        self.objects[index] = t
        at = s.pos
        size = s.read_int("the table size")
        min_pair = 4 if s.ascii else 8  # two type tags at least
        if size < 0 or size * min_pair > s.left:
            raise s.error(
                f"table declares {size} entries but only {s.left} bytes are left", at=at,
                expected="a table size that fits in the file",
            )
        path = self.path
        for _ in range(size):
            k = self.read_object()
            path.append(k)
            v = self.read_object()
            path.pop()
            if isinstance(k, float) and k.is_integer():
                k = int(k)
            if k is None:
                raise s.error("table key is nil", expected="a non-nil key")
            t[k] = v
        return t

    def _read_torch(self, index: int) -> Any:
        s = self.s
        at = s.pos
        first = _decode(s.read_string("a torch version or class name"))
        if first.startswith("V "):
            try:
                version = int(first[2:].strip())
            except ValueError:
                raise s.error(f"bad version string {first[:40]!r}", at=at, expected="'V <int>'") from None
            class_name = _decode(s.read_string("a torch class name"))
        else:
            version, class_name = 0, first
        if not class_name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", class_name):
            raise s.error(f"bad torch class name {class_name[:60]!r}", at=at, expected="a class name like nn.ReLU")
        m = _TENSOR_RE.match(class_name)
        if m:
            dtype, kind = _ELEM_TYPES[m.group(2) or "Float"]  # torch.CudaTensor is float
            self.path.append(("class", class_name))
            if m.group(3) == "Storage":
                out = self._read_storage(index, class_name, dtype, kind)
            else:
                out = self._read_tensor(index, class_name, dtype)
            self.path.pop()
            return out
        obj = TorchObject(class_name, version, index)
        self.objects[index] = obj
        self.path.append(("class", class_name))
        obj.fields = self.read_object()
        self.path.pop()
        return obj

    def _read_storage(self, index: int, class_name: str, dtype: np.dtype, kind: str) -> T7Storage:
        s = self.s
        at = s.pos
        size = s.read_long("the storage size")
        if s.ascii:
            min_bytes = 1 if kind == "raw" else 2
        elif kind == "long":
            min_bytes = s.long_size
        else:
            min_bytes = dtype.itemsize
        if size < 0 or size * min_bytes > s.left:
            raise s.error(
                f"{class_name} declares {size} elements ({size * min_bytes} bytes) but only "
                f"{s.left} bytes are left{_long_hint(s)}",
                at=at, expected="a storage size that fits in the file", cls=_AbsurdSize,
            )
        # a read-only view of the file bytes (binary); the importer copies what it keeps
        arr = s.read_array(dtype, kind, size, f"{class_name} data")
        st = T7Storage(class_name, index, arr)
        self.objects[index] = st
        return st

    def _read_tensor(self, index: int, class_name: str, dtype: np.dtype) -> T7Tensor:
        s = self.s
        at = s.pos
        ndim = s.read_int("the tensor rank")
        if ndim < 0 or ndim > MAX_TENSOR_DIMS or ndim * 2 * (1 if s.ascii else s.long_size) > s.left:
            raise s.error(f"{class_name} has absurd rank {ndim}", at=at,
                          expected=f"0..{MAX_TENSOR_DIMS}", cls=_AbsurdSize)
        t = T7Tensor(class_name, index, np.zeros((0,), dtype=dtype))
        self.objects[index] = t
        sz_at = s.pos
        sizes = s.read_longs(ndim, "tensor sizes")
        strides = s.read_longs(ndim, "tensor strides")
        offset = s.read_long("the tensor storage offset") - 1
        if any(v < 0 for v in sizes) or any(v < 0 for v in strides) or offset < 0:
            raise s.error(
                f"{class_name} has negative sizes/strides/offset: sizes {sizes}, strides {strides}, "
                f"offset {offset + 1}{_long_hint(s)}",
                at=sz_at, expected="non-negative sizes, strides and a 1-based offset", cls=_AbsurdSize,
            )
        # a view can only address elements of a storage that fits in the file: catch misread
        # longs here, before the stream loses its alignment
        numel = math.prod(sizes) if ndim else 0
        # an empty tensor's other dims must fit too: numpy refuses shapes whose non-zero dims
        # multiply past its size limit, even with a zero among them
        extent = math.prod(sz for sz in sizes if sz > 0) if ndim else 0
        reach = offset + sum((sz - 1) * st for sz, st in zip(sizes, strides) if sz > 0)
        if extent > max(s.n, MAX_VIEW_ELEMENTS) or reach > s.n:
            raise s.error(
                f"{class_name} has absurd sizes {tuple(sizes)} / strides {tuple(strides)} / offset "
                f"{offset + 1} for a file of {s.n} bytes{_long_hint(s)}",
                at=sz_at, expected="a tensor view that fits in the file", cls=_AbsurdSize,
            )
        storage = self.read_object()
        if storage is None:
            if numel != 0:
                raise s.error(f"{class_name} of size {tuple(sizes)} has no storage", at=sz_at, expected="a storage")
            t.array = np.zeros(tuple(sizes) if ndim else (0,), dtype=dtype)
            return t
        if not isinstance(storage, T7Storage):
            raise s.error(f"{class_name} storage is a {type(storage).__name__}", at=sz_at,
                          expected="a torch storage")
        t.storage = storage
        t.offset = offset
        arr = storage.array
        if ndim == 0:
            t.array = np.zeros((0,), dtype=arr.dtype)
            return t
        if any(v == 0 for v in sizes):
            t.array = np.zeros(tuple(sizes), dtype=arr.dtype)
            return t
        last = offset + sum((sz - 1) * st for sz, st in zip(sizes, strides))
        if last >= arr.size:
            raise s.error(
                f"{class_name} of size {tuple(sizes)}, strides {tuple(strides)}, offset {offset + 1} "
                f"reaches element {last + 1} of a storage of {arr.size} elements{_long_hint(s)}",
                at=sz_at, expected="a view inside its storage", cls=_AbsurdSize,
            )
        if numel > max(arr.size, MAX_VIEW_ELEMENTS):
            raise s.error(
                f"{class_name} view of {numel} elements over a storage of {arr.size}",
                at=sz_at, expected=f"at most {MAX_VIEW_ELEMENTS} elements", cls=_AbsurdSize,
            )
        item = arr.dtype.itemsize
        base = arr[offset:]
        # the stride of a size-1 dim moves nowhere (and may be anything the file says, even
        # past what a byte stride can hold); the others are bounded by the reach check above
        strides = [st if sz > 1 else 0 for sz, st in zip(sizes, strides)]
        view = np.lib.stride_tricks.as_strided(
            base, shape=tuple(sizes), strides=tuple(st * item for st in strides), writeable=False
        )
        t.array = view
        return t


def _long_hint(s: _Stream) -> str:
    if s.ascii:
        return ""
    other = 4 if s.long_size == 8 else 8
    return (f" (read with {s.long_size}-byte longs; if the file was written where C long has "
            f"{other} bytes, e.g. Windows or 32-bit systems, pass long_size={other})")


def _decode(b: bytes) -> str:
    return b.decode("latin-1")


def read_t7(
    data: bytes,
    *,
    source: str = "<bytes>",
    long_size: int | None = None,
    encoding: str | None = None,
) -> Any:
    """Read the one object a ``torch.save`` file holds (torch7 File.lua rules).

    ``encoding``: "binary", "ascii" or None (detected). ``long_size``: 8, 4 or None (8, falling
    back to 4 when sizes come out absurd; the error of the 8-byte attempt is raised when both
    fail). Tensors come back as :class:`T7Tensor`, modules as :class:`TorchObject`, tables as
    :class:`LuaTable`; shared references are the same Python object.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    enc = encoding or detect_encoding(data)
    if enc not in ("binary", "ascii"):
        raise ValueError(f"encoding must be 'binary' or 'ascii', got {encoding!r}")
    if long_size not in (None, 4, 8):
        raise ValueError(f"long_size must be None, 4 or 8, got {long_size!r}")
    if not data:
        raise ModelFormatError("empty file", file=source, offset=0, expected="a torch object")
    if enc == "ascii" or long_size is not None:
        return _read_all(data, source, enc, long_size or 8)
    try:
        return _read_all(data, source, enc, 8)
    except ModelFormatError as e8:
        try:
            return _read_all(data, source, enc, 4)
        except ModelFormatError:
            raise e8 from None


def _read_all(data: bytes, source: str, enc: str, long_size: int) -> Any:
    stream = _Stream(data, source, enc, long_size)
    reader = _Reader(stream)
    try:
        obj = reader.read_object()
    except RecursionError:
        raise stream.error("objects nested too deeply", expected="a shallower file") from None
    except ModelFormatError as e:
        if e.layer is not None or not reader.path:
            raise
        raise type(e)(e.message, file=e.file, offset=e.offset, line=e.line, col=e.col, expected=e.expected,
                      layer=reader.where()) from None
    rest = data[stream.pos:]
    if rest and (enc == "binary" or rest.strip()):
        raise stream.error(
            f"{len(rest)} bytes left after the object{_long_hint(stream)}",
            expected="the end of the file", cls=_AbsurdSize,
        )
    return obj
