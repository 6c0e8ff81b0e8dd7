"""Protocol-buffers text format (``.prototxt``): a one-pass parser driven by the schema.

Follows protobuf's TextFormat: ``#`` comments; ``name: value`` scalars; nested messages as
``name { ... }``, ``name: { ... }`` or with ``< ... >``; ``name: [v1, v2]`` lists; optional
``,``/``;`` separators; strings in double or single quotes with C escapes (``\\n``, octal
``\\101``, hex ``\\x41``, ``\\u00e9``), adjacent literals concatenated; integers in decimal,
hex or octal; floats with exponents, an ``f`` suffix (``1f``, ``2.5F``), ``inf``/``nan``;
a leading ``-``; enums by name (or number); booleans ``true``/``false``/``t``/``f``/``1``/``0``.
Unknown fields are skipped (cv2's reader does the same) and listed in ``Message.unknown``.
Errors are :class:`refnet.errors.ModelFormatError` with ``line:col``; positions are kept as
token (or statement) indices and turned into ``line:col`` only when an error needs them.

Two parsers give one result: a fast path for the plain forms real files are written in (one
regex match per statement, one tight loop) and the token parser, which takes over from the
start whenever the fast path meets anything else, and which reports every error. The fuzz
tests check that both give the same messages, values and positions.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import struct
import time
from sys import intern
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError
from refnet.weights_import import _textscan as TS
from refnet.weights_import._scanpolicy import TEXT_COMPILED_FROM, compiled_scan_pays, spent_in_python
from refnet.weights_import.caffe_schema import ENUMS, MESSAGES, Field, MessageType
from refnet.weights_import.protobuf import MAX_DEPTH, Message

__all__ = ["parse_message"]

# whitespace and comments, then one token: a string, a number-like run, an identifier or a
# single other character (punctuation, or something invalid that the parser reports)
_TOKEN = re.compile(
    r"""(?:\s|\#[^\n]*)*
    ( "(?:[^"\\\n]|\\[^\n])*"
    | '(?:[^'\\\n]|\\[^\n])*'
    | \.?[0-9](?:[0-9A-Za-z_.]|(?<=[eE])[+-])*
    | [A-Za-z_][A-Za-z0-9_]*
    | [^\s\#]
    )?""",
    re.VERBOSE,
)
_INT = re.compile(r"0[xX][0-9A-Fa-f]+|[0-9]+")
_FLOAT = re.compile(r"(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?")
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})"
                     r"|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f",
                   "v": b"\v", "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}
_INT_RANGES = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
               "uint32": (0, (1 << 32) - 1), "uint64": (0, (1 << 64) - 1)}
_BOOLS = {"true": True, "t": True, "True": True, "false": False, "f": False, "False": False}
_SPECIAL_FLOATS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}
_OPEN = {"{": "}", "<": ">"}
_ID_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NUM_START = frozenset("0123456789.")
_FLOAT_KINDS = {"float": np.float32, "double": np.float64}


class _Parser:
    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        toks: list[Any] = _TOKEN.findall(text)
        while toks and toks[-1] == "":  # trailing whitespace, then the empty match at the end
            toks.pop()
        toks.append(None)  # end sentinel
        self.toks = toks
        self._offsets: list[int] | None = None
        self._line_starts: list[int] | None = None

    # -- positions and errors -------------------------------------------------------------
    def offset(self, index: int) -> int:
        if self._offsets is None:
            self._offsets = [m.start(1) for m in _TOKEN.finditer(self.text) if m.group(1)]
            self._offsets.append(len(self.text))
        return self._offsets[min(index, len(self._offsets) - 1)]

    def linecol(self, index: int) -> tuple[int, int]:
        """``(line, col)`` of token ``index`` (the locator protocol of Message.text)."""
        return _linecol(self.text, self.offset(index), self)

    def error(self, message: str, index: int, expected: str | None = None) -> ModelFormatError:
        line, col = self.linecol(index)
        return ModelFormatError(message, file=self.file, line=line, col=col, expected=expected)

    def describe(self, index: int) -> str:
        tok = self.toks[index]
        if tok is None:
            return "end of input"
        if tok[0] in "\"'":
            return f"string {tok[:20]!r}"
        if tok[0] in _ID_START:
            return f"identifier {tok!r}"
        if tok[0] in _NUM_START:
            return f"number {tok!r}"
        return f"{tok!r}"

    # -- grammar --------------------------------------------------------------------------
    def message(self, mtype: MessageType | None, i: int, close: str | None, depth: int,
                start: int) -> tuple[Message | None, int]:
        """Parse fields from token ``i`` up to ``close``; ``mtype`` None skips (unknown field)."""
        if depth > MAX_DEPTH:
            raise self.error(f"messages nested deeper than {MAX_DEPTH}", start,
                             "shallower nesting")
        toks = self.toks
        msg = Message(mtype, start, self.file, self) if mtype is not None else None
        by_name = mtype.by_name if mtype is not None else {}
        while True:
            tok = toks[i]
            if tok is None:
                if close is not None:
                    lc = ":".join(map(str, self.linecol(start)))
                    raise self.error(f"unexpected end of input: the message opened at {lc} is "
                                     "not closed", i, repr(close))
                return msg, i
            if tok == close:
                return msg, i + 1
            if tok[0] not in _ID_START:
                if tok == "[":
                    raise self.error("extension and Any fields ([...]) are not supported", i, "a field name")
                self._check_token(i)
                raise self.error(f"unexpected {self.describe(i)}", i, "a field name")
            name = tok
            fi = i
            i += 1
            f = by_name.get(name)
            if f is None and msg is not None:
                msg.unknown.append(name)
            colon = toks[i] == ":"
            if colon:
                i += 1
            tok = toks[i]
            if tok in _OPEN:
                if f is not None and f.kind != "message":
                    raise self.error(f"field {name!r} of {mtype.name} is a {f.kind}, not a "
                                     "message", i, f"a {f.kind} value")
                sub, i = self.message(MESSAGES[f.ref] if f is not None else None, i + 1,
                                      _OPEN[tok], depth + 1, i)
                values = [sub]
            elif tok == "[" and (colon or toks[i + 1] in ("{", "<", "]")):
                # `name: [1, 2]`; a list of messages may omit the colon: `name [{..}, {..}]`
                values, i = self.list_value(f, mtype, i + 1, depth)
            elif colon:
                if f is not None and f.kind == "message":
                    raise self.error(f"field {name!r} of {mtype.name} is a message {f.ref}", i,
                                     "'{'")
                v, i = self.scalar(f, mtype, i)
                values = [v]
            else:
                raise self.error(f"unexpected {self.describe(i)} after field name {name!r}", i,
                                 "':' or '{'")
            if f is not None and msg is not None:
                self.store(msg, f, values, fi, tok == "[")
            if toks[i] in (",", ";"):
                i += 1

    def store(self, msg: Message, f: Field, values: list[Any], fi: int, is_list: bool) -> None:
        name = f.name
        vals = msg.values
        if f.repeated:
            if name in vals:
                vals[name].extend(values)
            else:
                vals[name] = values
                msg.field_where[name] = fi
            return
        if is_list:
            raise self.error(f"field {name!r} is not repeated; a list is not allowed", fi, "a single value")
        if name in vals:
            raise self.error(f"non-repeated field {name!r} of {msg.type.name} is specified more "
                             "than once", fi, "at most one value")
        vals[name] = values[0]
        msg.field_where[name] = fi

    def list_value(self, f: Field | None, mtype: MessageType | None, i: int,
                   depth: int) -> tuple[list[Any], int]:
        toks = self.toks
        out: list[Any] = []
        if toks[i] == "]":
            return out, i + 1
        while True:
            tok = toks[i]
            if tok in _OPEN:
                if f is not None and f.kind != "message":
                    raise self.error(f"field {f.name!r} is a {f.kind}, not a message", i, f"a {f.kind} value")
                sub, i = self.message(MESSAGES[f.ref] if f is not None else None, i + 1,
                                      _OPEN[tok], depth + 1, i)
                out.append(sub)
            else:
                v, i = self.scalar(f, mtype, i)
                out.append(v)
            tok = toks[i]
            if tok == "]":
                return out, i + 1
            if tok != ",":
                raise self.error(f"unexpected {self.describe(i)} in a list", i, "',' or ']'")
            i += 1

    def scalar(self, f: Field | None, mtype: MessageType | None, i: int) -> tuple[Any, int]:
        toks = self.toks
        neg = toks[i] == "-"
        if neg:
            i += 1
        tok = toks[i]
        if tok is None:
            raise self.error("unexpected end of input", i, "a value")
        c0 = tok[0]
        if c0 in "\"'":
            if neg or len(tok) < 2 or tok[-1] != c0:
                self._check_token(i)
            parts = [self.unescape(tok, i)]
            i += 1
            while toks[i] is not None and toks[i][0] in "\"'":  # adjacent literals concatenate
                self._check_token(i)
                parts.append(self.unescape(toks[i], i))
                i += 1
            return (None if f is None else self.convert_string(b"".join(parts), f, i - 1)), i
        if c0 in _ID_START or c0 in _NUM_START:
            return (None if f is None else self.convert(tok, neg, f, mtype, i)), i + 1
        self._check_token(i)
        raise self.error(f"unexpected {self.describe(i)}", i, "a value")

    def _check_token(self, i: int) -> None:
        tok = self.toks[i]
        if tok is not None and tok[0] in "\"'" and (len(tok) < 2 or tok[-1] != tok[0]):
            raise self.error("unterminated string literal", i, f"a closing {tok[0]} on the "
                             "same line")
        if tok is not None and len(tok) == 1 and tok not in "{}<>:,;[]-":
            raise self.error(f"unexpected character {tok!r}", i,
                             "a field name, a value, or one of { } < > : , ; [ ] -")

    # -- conversions ------------------------------------------------------------------------
    def convert(self, tok: str, neg: bool, f: Field, mtype: MessageType | None, i: int) -> Any:
        kind = f.kind
        if kind in _FLOAT_KINDS:
            if tok[0] in _NUM_START:
                if _FLOAT.fullmatch(tok):
                    v = float(tok.rstrip("fF"))
                elif _INT.fullmatch(tok):  # a hex integer (decimal ones match _FLOAT)
                    try:
                        v = float(int(tok, 16))
                    except OverflowError:
                        v = math.inf  # beyond a double, as a decimal literal that large reads
                else:
                    raise self.error(f"invalid number {tok!r}", i, "a float")
            elif tok.lower() in _SPECIAL_FLOATS:
                v = _SPECIAL_FLOATS[tok.lower()]
            else:
                raise self.error(f"field {f.name!r} needs a number, got {tok!r}", i,
                                 f"a {kind} value")
            v = -v if neg else v
            if kind == "float":
                with np.errstate(over="ignore"):
                    v = float(np.float32(v))  # a float field holds a float32
            return v
        if kind in _INT_RANGES:
            v = self.integer(tok, neg, f, i)
            lo, hi = _INT_RANGES[kind]
            if not lo <= v <= hi:
                raise self.error(f"value {v} is out of range for {kind} field {f.name!r}", i,
                                 f"{lo} <= value <= {hi}")
            return v
        if kind == "bool":
            if not neg and tok in _BOOLS:
                return _BOOLS[tok]
            if not neg and tok in ("0", "1"):
                return tok == "1"
            raise self.error(f"field {f.name!r} needs a boolean, got {tok!r}", i,
                             "true, false, t, f, 1 or 0")
        if kind == "enum":
            names = ENUMS[f.ref]  # type: ignore[index]
            if tok[0] in _ID_START and not neg:
                if tok in names:
                    return tok
                raise self.error(f"unknown value {tok!r} for enum {f.ref} (field {f.name!r})", i,
                                 "one of " + ", ".join(names))
            v = self.integer(tok, neg, f, i)
            for label, num in names.items():
                if num == v:
                    return label
            raise self.error(f"value {v} is not a valid {f.ref} (field {f.name!r})", i,
                             "one of " + ", ".join(f"{k}={n}" for k, n in names.items()))
        raise self.error(f"field {f.name!r} needs a quoted string, got {tok!r}", i,
                         "a string literal")

    def integer(self, tok: str, neg: bool, f: Field, i: int) -> int:
        if not _INT.fullmatch(tok):
            if tok[0] in _NUM_START and not _FLOAT.fullmatch(tok):
                raise self.error(f"invalid number {tok!r}", i, "an integer")
            raise self.error(f"field {f.name!r} needs an integer, got {tok!r}", i, "an integer")
        if len(tok) > 24:  # beyond any 64-bit value (and Python's int/str digit limit)
            raise self.error(f"integer {tok[:24]}... ({len(tok)} digits) is out of range for "
                             f"{f.kind} field {f.name!r}", i, f"a {f.kind} value")
        if tok[:2] in ("0x", "0X"):
            v = int(tok, 16)
        elif len(tok) > 1 and tok[0] == "0":
            if not set(tok) <= set("01234567"):
                raise self.error(f"invalid octal number {tok!r}", i, "digits 0-7")
            v = int(tok, 8)
        else:
            v = int(tok)
        return -v if neg else v

    def convert_string(self, raw: bytes, f: Field, i: int) -> Any:
        if f.kind == "bytes":
            return raw
        if f.kind != "string":
            raise self.error(f"field {f.name!r} holds {f.kind} values, not a string", i,
                             f"a {f.kind} value")
        try:
            return intern(raw.decode("utf-8"))  # one object per distinct name (a layer's top is the next bottom)
        except UnicodeDecodeError:
            raise self.error(f"string for field {f.name!r} is not valid UTF-8", i, "UTF-8 text") from None

    def unescape(self, tok: str, i: int) -> bytes:
        body = tok[1:-1]
        if "\\" not in body:
            return body.encode("utf-8")
        out: list[bytes] = []
        last = 0
        for m in _ESCAPE.finditer(body):
            out.append(body[last:m.start()].encode("utf-8"))
            last = m.end()
            octal, hexa, u4, u8, other = m.groups()
            if octal is not None:
                v = int(octal, 8)
                if v > 255:
                    raise self.error(f"octal escape \\{octal} is larger than 255", i, "\\000 to \\377")
                out.append(bytes((v,)))
            elif hexa is not None:
                out.append(bytes((int(hexa, 16),)))
            elif u4 is not None or u8 is not None:
                cp = int(u4 or u8, 16)
                if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                    raise self.error(f"invalid unicode escape {m.group(0)}", i,
                                     "a code point up to U+10FFFF, not a surrogate")
                out.append(chr(cp).encode("utf-8"))
            elif other in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[other])
            else:
                raise self.error(f"invalid escape sequence \\{other} in a string", i,
                                 "\\n \\t \\r \\a \\b \\f \\v \\\\ \\' \\\" \\? \\ooo \\xhh "
                                 "or \\uhhhh")
        out.append(body[last:].encode("utf-8"))
        return b"".join(out)


def _linecol(text: str, offset: int, holder: Any) -> tuple[int, int]:
    """1-based line and column of ``offset`` (line starts cached on ``holder``)."""
    if holder._line_starts is None:
        holder._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    starts = holder._line_starts
    line = bisect.bisect_right(starts, offset)
    return line, offset - starts[line - 1] + 1


# ---- the fast path ------------------------------------------------------------------------------
# weights_import/_textscan.py scans the plain, common subset of the format in compiled code
# (tokens, field names, value kinds and ranges, nesting) and returns one row per statement;
# _fast_parse makes the Messages from the rows. Anything the scanner does not take itself
# (escapes, lists, hex/octal, out-of-range values, errors of every kind) makes
# :func:`parse_message` rerun the token parser above, which gives the answer or the error.
class _Fallback(Exception):
    """The fast path met something it leaves to the token parser."""


class _OffsetLocator:
    """Positions of the fast path: byte offsets into the UTF-8 text, resolved to
    ``(line, col)`` only when an error needs one."""

    __slots__ = ("text", "raw", "_line_starts")

    def __init__(self, text: str, raw: bytes) -> None:
        self.text = text
        self.raw = raw
        self._line_starts: list[int] | None = None

    def linecol(self, offset: int) -> tuple[int, int]:
        if len(self.raw) != len(self.text):  # non-ASCII text: count characters, not bytes
            offset = len(self.raw[:offset].decode("utf-8"))
        return _linecol(self.text, offset, self)


def _float32(v: float) -> float:
    """``v`` rounded to float32 (overflow gives a signed inf, as numpy does)."""
    try:
        return _F32.unpack(_F32.pack(v))[0]
    except OverflowError:
        return math.inf if v > 0 else -math.inf


_F32 = struct.Struct("<f")
_ROW_BLOCK = 1 << 14  # rows turned into Python lists at a time by _fast_parse
_TABLES = TS.SchemaTables(MESSAGES, ENUMS)
_ROW_OPEN, _ROW_INT, _ROW_BOOL, _ROW_ENUM = TS.OPEN, TS.INT, TS.BOOL, TS.ENUM
_ROW_STR, _ROW_BYTES, _ROW_FLOAT, _ROW_UNKNOWN, _ROW_FLOAT_INT = TS.STR, TS.BYTES, TS.FLOAT, TS.UNKNOWN, TS.FLOAT_INT


def _fast_parse(text: str, mt: MessageType, file: str, skip: frozenset[str] = frozenset()) -> Message:
    """Parse the plain common subset of the text format; raise _Fallback on anything else.

    Fields whose message type is named in ``skip`` are checked like all others but left out of
    the result (see :func:`parse_message`)."""
    root_index = _TABLES.type_index.get(mt.name)
    if root_index is None or _TABLES.types[root_index] is not mt:
        raise _Fallback  # a message type outside the schema tables
    raw = text.encode("utf-8")
    status, rows, first = _TABLES.scan(raw, root_index, MAX_DEPTH, skip)
    if status != TS.OK:
        raise _Fallback
    loc = _OffsetLocator(text, raw)
    root = Message(mt, first, file, loc)
    msgs = [root]  # by message id, as the rows number them
    vals_of, where_of = [root.values], [root.field_where]
    chars = text if len(raw) == len(text) else None  # ASCII: byte offsets are str offsets
    fields, labels = _TABLES.fields, _TABLES.labels
    floats: list[tuple[dict, str, Any]] = []
    # the rows as Python lists a block at a time (the whole table at once is ~1 KiB per layer);
    # a: the value (int-like rows) or where the text starts
    for code, parent, fid, a, b, at in itertools.chain.from_iterable(
            rows[k:k + _ROW_BLOCK].tolist() for k in range(0, len(rows), _ROW_BLOCK)):
        ival = a
        if code == _ROW_UNKNOWN:
            msgs[parent].unknown.append(raw[a:b].decode("ascii"))
            continue
        name, repeated, kind, sub_type = fields[fid]
        if code == _ROW_INT:
            v: Any = ival
        elif code == _ROW_STR:
            v = intern(chars[a:b] if chars is not None else raw[a:b].decode("utf-8"))  # (see convert_string)
        elif code == _ROW_OPEN:
            v = Message(sub_type, a, file, loc)
            msgs.append(v)
            vals_of.append(v.values)
            where_of.append(v.field_where)
        elif code == _ROW_FLOAT_INT:
            v = float(ival)
        elif code == _ROW_ENUM:
            v = labels[ival]
        elif code == _ROW_FLOAT:
            v = float(raw[a:b])
            if kind == "float":
                v = _float32(v)
        elif code == _ROW_BOOL:
            v = ival == 1
        else:  # bytes
            v = raw[a:b]
        vals = vals_of[parent]
        if repeated:
            lst = vals.get(name)
            if lst is None:
                vals[name] = [v]
                where_of[parent][name] = at
                if kind in _FLOAT_KINDS:
                    floats.append((vals, name, _FLOAT_KINDS[kind]))
            else:
                lst.append(v)
        else:
            vals[name] = v
            where_of[parent][name] = at
    for vals, name, dtype in floats:
        vals[name] = np.asarray(vals[name], dtype)
    return root




def _to_text(data: str | bytes, file: str) -> str:
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            head = bytes(data[: e.start])
            line = head.count(b"\n") + 1
            col = e.start - (head.rfind(b"\n") + 1) + 1
            raise ModelFormatError(f"text is not valid UTF-8 (byte 0x{data[e.start]:02x})", file=file, line=line,
                                   col=col, offset=e.start, expected="UTF-8 text") from None
    return text[1:] if text.startswith("\ufeff") else text


def _finish(msg: Message) -> None:
    """Repeated float/double fields become numpy arrays (as the wire decoder returns them)."""
    by_name = msg.type.by_name
    for name, v in msg.values.items():
        f = by_name[name]
        if f.kind == "message":
            for m in (v if f.repeated else (v,)):
                _finish(m)
        elif f.repeated and f.kind in _FLOAT_KINDS:
            msg.values[name] = np.asarray(v, _FLOAT_KINDS[f.kind])


def parse_message(data: str | bytes, mtype: MessageType | str, *, file: str = "<text>",
                  skip: frozenset[str] = frozenset()) -> Message:
    """Parse text-format ``data`` as message ``mtype`` (a MessageType or a schema name).

    ``skip``: names of message types the caller never reads (e.g. Caffe's training-only
    ParamSpec and FillerParameter). Fields of those types are checked as strictly as any
    other but may be left out of the result, which saves building them.
    """
    mt = MESSAGES[mtype] if isinstance(mtype, str) else mtype
    text = _to_text(data, file)
    compiled = compiled_scan_pays(len(text), TEXT_COMPILED_FROM)  # (see weights_import/_scanpolicy.py)
    if compiled:
        try:
            return _fast_parse(text, mt, file, skip)
        except _Fallback:
            pass
    t0 = time.perf_counter()
    p = _Parser(text, file)
    msg, _ = p.message(mt, 0, None, 0, 0)
    p.toks = []  # the messages keep the parser as their locator: it needs the text, not the tokens
    assert msg is not None
    _finish(msg)
    if not compiled:
        spent_in_python(time.perf_counter() - t0)
    return msg
