"""Protocol-buffers wire format, read through one bounded reader, decoded against a schema.

The reader never reads past the end of the enclosing message: every length is checked
against what is left *before* anything is sliced or allocated, varints stop at 10 bytes and
message nesting stops at :data:`MAX_DEPTH`. Repeated numeric fields are read packed or
unpacked (both are legal on the wire); float/double data go through ``numpy.frombuffer``,
never element by element. Unknown fields are skipped, as protobuf does. Malformed input
raises :class:`refnet.errors.ModelFormatError` with the file and byte offset.

:func:`decode_weights` reads a caffemodel's weights view (layer names, types, blobs) in one
specialised pass and hands any input it does not handle itself to :func:`decode_message`.
"""

from __future__ import annotations

from sys import intern
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError
from refnet.weights_import.caffe_schema import ENUMS, MESSAGES, Field, MessageType

__all__ = ["Reader", "Message", "decode_message", "MAX_DEPTH", "WIRE_NAMES"]

MAX_DEPTH = 64
WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group",
              4: "end-group", 5: "32-bit"}

_U64 = (1 << 64) - 1
_INVALID = object()  # an enum number the schema does not know
_VARINT_KINDS = frozenset({"int32", "int64", "uint32", "uint64", "bool", "enum"})
_FLOAT_DTYPES = {"float": np.dtype("<f4"), "double": np.dtype("<f8")}
_WIRE_OF_KIND = {"float": 5, "double": 1, "string": 2, "bytes": 2, "message": 2}


class Reader:
    """A cursor over ``buf[pos:end]`` that refuses to read past ``end``.

    ``take(n)`` returns a zero-copy memoryview of the next ``n`` bytes after checking that
    ``n`` bytes are left; ``varint()`` reads at most 10 bytes.
    """

    __slots__ = ("buf", "pos", "end", "file")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None,
                 *, file: str = "<bytes>") -> None:
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        self.file = file

    def remaining(self) -> int:
        return self.end - self.pos

    def error(self, message: str, *, offset: int | None = None, expected: str | None = None,
              layer: str | None = None) -> ModelFormatError:
        return ModelFormatError(message, file=self.file,
                                offset=self.pos if offset is None else offset,
                                expected=expected, layer=layer)

    def take(self, n: int, at: int | None = None) -> memoryview:
        """The next ``n`` bytes (zero-copy), or ModelFormatError (located at ``at``, default
        the current position) if fewer are left."""
        if n < 0 or n > self.end - self.pos:
            raise self.error(f"truncated: {n} bytes declared but only {self.end - self.pos} left "
                             "in the enclosing message", offset=at, expected=f"{n} more bytes")
        start = self.pos
        self.pos = start + n
        return memoryview(self.buf)[start:start + n]

    def varint(self) -> int:
        """A base-128 varint of at most 10 bytes (the value is returned unsigned, < 2**64)."""
        buf, pos, end = self.buf, self.pos, self.end
        result = 0
        shift = 0
        for i in range(10):
            if pos + i >= end:
                raise self.error("truncated varint", offset=self.pos,
                                 expected="a varint continuation byte")
            b = buf[pos + i]
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos + i + 1
                return result & _U64
            shift += 7
        raise self.error("varint longer than 10 bytes", offset=pos,
                         expected="a varint of at most 10 bytes")


_MISSING = object()


class Message:
    """A decoded message: field values by name, with the schema's defaults for absent fields.

    ``where`` is the position of the message in its file and ``field_where`` the position of
    each field (where it first appears): byte offsets for binary input; for text, codes that
    ``text.linecol(code)`` turns into ``(line, col)`` when an error needs them. Repeated
    scalar fields are lists (repeated float/double: numpy arrays), repeated messages lists of
    Message. ``unknown`` lists field names or numbers that were skipped.
    """

    __slots__ = ("type", "values", "where", "field_where", "unknown", "file", "text")

    def __init__(self, mtype: MessageType, where: Any = None, file: str = "<input>",
                 text: Any = None) -> None:
        self.type = mtype
        self.values: dict[str, Any] = {}
        self.where = where
        self.field_where: dict[str, Any] = {}
        self.unknown: list[Any] = []
        self.file = file
        self.text = text  # the text locator (None for binary messages)

    def has(self, name: str) -> bool:
        """True when the field was present in the input (repeated: at least one element)."""
        v = self.values.get(name, _MISSING)
        if v is _MISSING:
            return False
        return len(v) > 0 if isinstance(v, (list, np.ndarray)) else True

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value, else ``default`` if given, else the schema default."""
        v = self.values.get(name, _MISSING)
        if v is not _MISSING:
            return v
        f = self.type.by_name.get(name)
        if f is None:
            raise KeyError(f"{self.type.name} has no field {name!r}")
        if default is not None:
            return default
        if f.repeated:
            return np.empty(0, _FLOAT_DTYPES[f.kind]) if f.kind in _FLOAT_DTYPES else []
        return f.default

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def pos(self, name: str | None = None) -> Any:
        """Position of field ``name`` (or of the message): a byte offset or ``(line, col)``."""
        where = self.field_where.get(name, self.where) if name is not None else self.where
        if self.text is not None and where is not None:
            return self.text.linecol(where)
        return where

    def error(self, message: str, field: str | None = None, *, expected: str | None = None,
              layer: str | None = None) -> ModelFormatError:
        """A ModelFormatError located at this message (or at one of its fields)."""
        return located_error(message, self.file, self.pos(field), expected=expected, layer=layer)

    def __repr__(self) -> str:
        return f"Message({self.type.name}, {self.values!r})"


def located_error(message: str, file: str, where: Any, *, expected: str | None = None,
                  layer: str | None = None) -> ModelFormatError:
    """ModelFormatError at ``where``: a byte offset or a (line, col) pair."""
    if isinstance(where, tuple):
        return ModelFormatError(message, file=file, line=where[0], col=where[1],
                                expected=expected, layer=layer)
    return ModelFormatError(message, file=file, offset=where, expected=expected, layer=layer)


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _convert_varint(v: int, f: Field, r: Reader, at: int, enums: Any = None) -> Any:
    k = f.kind
    if k == "int32":
        return _signed(v, 32)  # negative int32 are sign-extended to 64 bits on the wire
    if k == "int64":
        return _signed(v, 64)
    if k == "uint32":
        return v & 0xFFFFFFFF
    if k == "uint64":
        return v
    if k == "bool":
        return v != 0
    # enum: proto2 keeps an unknown enum number as an unknown field (the value is ignored)
    value = _signed(v, 32)
    for label, num in (enums or ENUMS)[f.ref].items():  # type: ignore[index]
        if num == value:
            return label
    return _INVALID


def _skip_group(r: Reader, number: int, depth: int) -> None:
    """Skip a (deprecated) group up to its matching end-group tag."""
    if depth >= MAX_DEPTH:
        raise r.error(f"groups nested deeper than {MAX_DEPTH}", expected="shallower nesting")
    while True:
        if r.pos >= r.end:
            raise r.error(f"truncated group {number}", expected=f"end-group tag of field {number}")
        at = r.pos
        tag = r.varint()
        wt = tag & 7
        if wt == 4:
            if tag >> 3 != number:
                raise r.error(f"end-group tag for field {tag >> 3} closes group {number}",
                              offset=at, expected=f"the end-group tag of field {number}")
            return
        _skip(r, tag, at, depth + 1)


def _skip(r: Reader, tag: int, at: int, depth: int) -> None:
    wt = tag & 7
    if wt == 0:
        r.varint()
    elif wt == 1:
        r.take(8, at)
    elif wt == 2:
        r.take(r.varint(), at)
    elif wt == 5:
        r.take(4, at)
    elif wt == 3:
        _skip_group(r, tag >> 3, depth)
    else:
        raise r.error(f"invalid wire type {wt} (field {tag >> 3})", offset=at,
                      expected="wire type 0, 1, 2, 3 or 5")


def _unpacked_run(r: Reader, tag_bytes: bytes, first: memoryview, itemsize: int,
                  dtype: np.dtype) -> np.ndarray:
    """Read a run of unpacked fixed-width repeated values (tag, value, tag, value, ...).

    ``first`` is the value already read; the following records are matched and sliced in
    vectorised steps instead of one Python iteration per element. The windows grow
    geometrically from 64 records, so the work is proportional to the run, not to what is
    left of the message (many short runs must not cost a pass over the rest each).
    """
    stride = len(tag_bytes) + itemsize
    parts = [np.frombuffer(first, dtype)]
    if r.end - r.pos < stride or bytes(r.buf[r.pos:r.pos + len(tag_bytes)]) != tag_bytes:
        return parts[0]  # a run of one (common in hostile files): no numpy round trip
    tag = np.frombuffer(tag_bytes, np.uint8)
    window = 64
    while True:
        n_max = min((r.end - r.pos) // stride, window)
        if n_max <= 0:
            break
        block = np.frombuffer(r.buf, np.uint8, count=n_max * stride, offset=r.pos).reshape(n_max, stride)
        ok = np.all(block[:, : len(tag_bytes)] == tag, axis=1)
        n = n_max if ok.all() else int(np.argmin(ok))
        if n:
            parts.append(np.ascontiguousarray(block[:n, len(tag_bytes):]).view(dtype).reshape(n))
            r.pos += n * stride
        if n < n_max:
            break
        window *= 4
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def decode_message(r: Reader, mtype: MessageType, depth: int = 0, *, messages: Any = None,  # noqa: C901
                   enums: Any = None) -> Message:
    """Decode the message ``mtype`` from ``r.pos`` up to ``r.end``.

    (One loop with the wire types and field kinds dispatched inline, on purpose: it is the hot
    path of every Caffe and ONNX load, and a call per field costs more than the branches.)

    ``messages``/``enums`` name the schema the nested types come from (default: caffe.proto's;
    the ONNX reader passes onnx.proto's)."""
    messages = MESSAGES if messages is None else messages
    if depth > MAX_DEPTH:
        raise r.error(f"messages nested deeper than {MAX_DEPTH}", expected="shallower nesting")
    msg = Message(mtype, r.pos, r.file)
    values = msg.values
    by_number = mtype.by_number
    chunks: dict[str, list[np.ndarray]] = {}
    field_where = msg.field_where
    buf = r.buf
    end = r.end
    while r.pos < end:
        at = r.pos
        tag = buf[at]
        if tag < 0x80:  # one-byte tags (fields 1-15) are the common case: no call
            r.pos = at + 1
        else:
            tag = r.varint()
        number = tag >> 3
        wt = tag & 7
        if number == 0:
            raise r.error("field number 0 is invalid", offset=at, expected="a field tag")
        f = by_number.get(number)
        if f is None:
            if wt == 2:  # skip a length-delimited field inline
                n = buf[r.pos] if r.pos < end else 0x80
                if n < 0x80:
                    r.pos += 1
                else:
                    n = r.varint()
                if n > end - r.pos:
                    r.take(n, at)  # raises the truncation error
                r.pos += n
            else:
                _skip(r, tag, at, depth)
            msg.unknown.append(number)
            continue
        name = f.name
        if name not in field_where:
            field_where[name] = at
        kind = f.kind
        if kind in _VARINT_KINDS:
            if wt == 0:
                v = _convert_varint(r.varint(), f, r, at, enums)
                if v is _INVALID:
                    msg.unknown.append(number)
                elif f.repeated:
                    values.setdefault(name, []).append(v)
                else:
                    values[name] = v
                continue
            if wt == 2 and f.repeated:  # packed varints
                n = r.varint()
                start = r.pos
                r.take(n, at)
                sub = Reader(r.buf, start, start + n, file=r.file)
                lst = values.setdefault(name, [])
                while sub.pos < sub.end:
                    v = _convert_varint(sub.varint(), f, sub, sub.pos, enums)
                    if v is _INVALID:
                        msg.unknown.append(number)
                    else:
                        lst.append(v)
                continue
        elif kind in _FLOAT_DTYPES:
            dtype = _FLOAT_DTYPES[kind]
            size = dtype.itemsize
            if wt == _WIRE_OF_KIND[kind]:
                raw = r.take(size, at)
                if f.repeated:
                    tag_bytes = bytes(r.buf[at:at + (r.pos - size - at)])
                    chunks.setdefault(name, []).append(
                        _unpacked_run(r, tag_bytes, raw, size, dtype))
                else:
                    values[name] = float(np.frombuffer(raw, dtype)[0])
                continue
            if wt == 2 and f.repeated:  # packed
                n = r.varint()
                if n % size:
                    raise r.error(f"packed {kind} field {name!r} has {n} bytes, not a multiple "
                                  f"of {size}", offset=at, expected=f"a multiple of {size} bytes")
                chunks.setdefault(name, []).append(np.frombuffer(r.take(n, at), dtype))
                continue
        elif wt == 2:  # string, bytes, message
            n = buf[r.pos] if r.pos < end else 0x80
            if n < 0x80:
                r.pos += 1
            else:
                n = r.varint()
            start = r.pos
            if n > end - start:
                r.take(n, at)  # raises the truncation error (bounds checked against the enclosing message first)
            r.pos = start + n  # (no view made: long nets have millions of these fields)
            if kind == "message":
                sub = Reader(buf, start, start + n, file=r.file)
                v = decode_message(sub, messages[f.ref], depth + 1,  # type: ignore[index]
                                   messages=messages, enums=enums)
            else:
                raw = buf[start:start + n]  # bytes, or a view when the reader is over one
                if kind == "string":
                    try:
                        v = intern(bytes(raw).decode("utf-8"))  # one object per distinct name
                    except UnicodeDecodeError:
                        raise r.error(f"field {name!r} is not valid UTF-8", offset=at, expected="UTF-8 text") from None
                else:
                    v = bytes(raw)
            if f.repeated:
                values.setdefault(name, []).append(v)
            else:
                values[name] = v
            continue
        # a wire type that does not fit the field: protobuf parses it as an unknown field
        # (other Caffe forks reuse numbers, e.g. SSD's 147); skip it, keep a note
        _skip(r, tag, at, depth)
        msg.unknown.append(number)
    for name, parts in chunks.items():
        arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
        values[name] = arr
    if r.pos != r.end:  # pragma: no cover - take() guarantees this
        raise r.error("message overran its length")
    return msg


def decode_weights(buf: bytes, file: str = "<caffemodel>") -> Message:
    """The ``NetWeights`` view of a caffemodel: the layers' names, types and blobs (every
    other field is skipped). Loading a model takes the compiled index of
    ``weights_import/_wirescan.py`` first; this decoder reads the files that index leaves to
    it and reports the malformed ones."""
    return decode_message(Reader(buf, file=file), MESSAGES["NetWeights"])
