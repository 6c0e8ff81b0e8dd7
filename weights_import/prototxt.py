"""Protocol-buffers text format (``.prototxt``): a one-pass parser driven by the schema.

Follows protobuf's TextFormat: ``#`` comments; ``name: value`` scalars; nested messages as
``name { ... }``, ``name: { ... }`` or with ``< ... >``; ``name: [v1, v2]`` lists; optional
``,``/``;`` separators; strings in double or single quotes with C escapes (``\\n``, octal
``\\101``, hex ``\\x41``, ``\\u00e9``), adjacent literals concatenated; integers in decimal,
hex or octal; floats with exponents, an ``f`` suffix (``1f``, ``2.5F``), ``inf``/``nan``;
a leading ``-``; enums by name (or number); booleans ``true``/``false``/``t``/``f``/``1``/``0``.
Unknown fields are skipped (cv2's reader does the same) and listed in ``Message.unknown``.
Errors are :class:`refnet.errors.ModelFormatError` with ``line:col``; positions are kept as
token indices and turned into ``line:col`` only when an error needs them.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError
from refnet.weights_import.caffe_schema import ENUMS, MESSAGES, Field, MessageType
from refnet.weights_import.protobuf import MAX_DEPTH, Message

__all__ = ["parse_message", "TextPos"]

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


class TextPos:
    """A position in a text file, kept as a token index and resolved on demand."""

    __slots__ = ("parser", "index")

    def __init__(self, parser: _Parser, index: int) -> None:
        self.parser = parser
        self.index = index

    def linecol(self) -> tuple[int, int]:
        return self.parser.linecol(self.parser.offset(self.index))

    def __repr__(self) -> str:
        return "{}:{}".format(*self.linecol())


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

    def linecol(self, offset: int) -> tuple[int, int]:
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def error(self, message: str, index: int, expected: str | None = None) -> ModelFormatError:
        line, col = self.linecol(self.offset(index))
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
        msg = Message(mtype, TextPos(self, start), self.file) if mtype is not None else None
        by_name = mtype.by_name if mtype is not None else {}
        while True:
            tok = toks[i]
            if tok is None:
                if close is not None:
                    lc = ":".join(map(str, self.linecol(self.offset(start))))
                    raise self.error(f"unexpected end of input: the message opened at {lc} is "
                                     "not closed", i, repr(close))
                return msg, i
            if tok == close:
                return msg, i + 1
            if tok[0] not in _ID_START:
                if tok == "[":
                    raise self.error("extension and Any fields ([...]) are not supported", i)
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
                msg.field_where[name] = TextPos(self, fi)
            return
        if is_list:
            raise self.error(f"field {name!r} is not repeated; a list is not allowed", fi)
        if name in vals:
            raise self.error(f"non-repeated field {name!r} of {msg.type.name} is specified more "
                             "than once", fi)
        vals[name] = values[0]
        msg.field_where[name] = TextPos(self, fi)

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
                    raise self.error(f"field {f.name!r} is a {f.kind}, not a message", i)
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
            raise self.error(f"unexpected character {tok!r}", i)

    # -- conversions ------------------------------------------------------------------------
    def convert(self, tok: str, neg: bool, f: Field, mtype: MessageType | None, i: int) -> Any:
        kind = f.kind
        if kind in _FLOAT_KINDS:
            if tok[0] in _NUM_START:
                if _FLOAT.fullmatch(tok):
                    v = float(tok.rstrip("fF"))
                elif _INT.fullmatch(tok):
                    v = float(int(tok, 16))
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
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"string for field {f.name!r} is not valid UTF-8", i) from None

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
                    raise self.error(f"octal escape \\{octal} is larger than 255", i)
                out.append(bytes((v,)))
            elif hexa is not None:
                out.append(bytes((int(hexa, 16),)))
            elif u4 is not None or u8 is not None:
                cp = int(u4 or u8, 16)
                if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                    raise self.error(f"invalid unicode escape {m.group(0)}", i)
                out.append(chr(cp).encode("utf-8"))
            elif other in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[other])
            else:
                raise self.error(f"invalid escape sequence \\{other} in a string", i,
                                 "\\n \\t \\r \\a \\b \\f \\v \\\\ \\' \\\" \\? \\ooo \\xhh "
                                 "or \\uhhhh")
        out.append(body[last:].encode("utf-8"))
        return b"".join(out)


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
            raise ModelFormatError("text is not valid UTF-8", file=file, line=line, col=col,
                                   offset=e.start) from None
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


def parse_message(data: str | bytes, mtype: MessageType | str, *, file: str = "<text>") -> Message:
    """Parse text-format ``data`` as message ``mtype`` (a MessageType or a schema name)."""
    mt = MESSAGES[mtype] if isinstance(mtype, str) else mtype
    p = _Parser(_to_text(data, file), file)
    msg, _ = p.message(mt, 0, None, 0, 0)
    assert msg is not None
    _finish(msg)
    return msg
