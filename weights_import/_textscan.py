"""The compiled fast path of the text-format parser: one pass over a prototxt's bytes.

:func:`scan_text` tokenises the plain, common subset of the protobuf text format, resolves
every field name against the schema, checks every value against its field's kind (integer
ranges, enum labels, bools, nesting, repeated vs. singular) and returns one row of integers
per statement; ``prototxt._fast_parse`` turns the rows into :class:`Message` objects. The
subset and its rules are exactly those of the token parser (``prototxt._Parser``) on the
inputs the scanner accepts; on anything else (escapes, ``<...>`` lists, hex, exotic
whitespace, an unknown enum label, a duplicate singular field, errors of every kind) it
returns FALLBACK and the token parser gives the answer or the error with its line:col.
tests/fuzz/test_fuzz_prototxt.py checks the two agree on every mutated input.

Grammar of the subset (``ws`` is space, tab, CR, LF; ``#`` comments run to the end of line)::

    statement := name [ \\t]* ( ':' [ \\t]* value [ \\t]* [,;]? | ':'? [ \\t]* ('{' | '<') )
               | ('}' | '>') [ \\t]* [,;]?
    value     := "..." | '...'  (no backslash, no newline) | int | float | identifier
    int       := -?(0|[1-9][0-9]*)                 not followed by [0-9A-Za-z_.]
    float     := -?([0-9]+.[0-9]*(e..)? | .[0-9]+(e..)? | [0-9]+e[+-]?[0-9]+), same rule

Every read is bounds-checked against the end of the buffer.

It is an optional fast path: ``weights_import/_scanpolicy.py`` decides when it runs (its
docstring has the measurement that keeps it), and the token parser alone reads every file.
"""

from __future__ import annotations

import numpy as np

from refnet.kernels._jit import jit

OK, FALLBACK = 0, 1

# row columns and row codes
# (R_INT and R_A share a column: a row holds either a value or the span of its text)
R_CODE, R_PARENT, R_FIELD, R_A, R_B, R_AT = range(6)
R_INT = R_A
R_COLS = 6
OPEN, INT, BOOL, ENUM, STR, BYTES, FLOAT, UNKNOWN, FLOAT_INT = range(9)
# FLOAT_INT: a float field given as an int literal that float32 holds exactly (|v| <= 2**24,
# not "-0"): R_INT holds it and Python needs no string conversion

# field kinds (the schema's kind names, in this order)
KINDS = ("int32", "int64", "uint32", "uint64", "bool", "float", "double", "string", "bytes", "enum", "message")
K_INT32, K_INT64, K_UINT32, K_UINT64, K_BOOL, K_FLOAT, K_DOUBLE, K_STRING, K_BYTES, K_ENUM, K_MESSAGE = range(11)
# field table columns: kind, repeated, ref (message type index / enum index / -1), name offset, name length
F_KIND, F_REP, F_REF, F_NOFF, F_NLEN = range(5)

_INT64_MAX = np.uint64((1 << 63) - 1)


@jit
def _id_start(c):
    return (65 <= c <= 90) or (97 <= c <= 122) or c == 95


@jit
def _id_char(c):
    return (65 <= c <= 90) or (97 <= c <= 122) or c == 95 or (48 <= c <= 57)


@jit
def _digit(c):
    return 48 <= c <= 57


@jit
def _blank(c):
    return c == 32 or c == 9


@jit
def _same(buf, a, n, names, off):
    for j in range(n):
        if names[off + j] != buf[a + j]:
            return False
    return True


@jit
def _field(buf, a, b, names, ftab, f0, f1):
    """Index of the field named ``buf[a:b]`` among fields ``f0 .. f1 - 1``, or -1."""
    n = b - a
    for i in range(f0, f1):
        if ftab[i, F_NLEN] == n and _same(buf, a, n, names, ftab[i, F_NOFF]):
            return i
    return -1


@jit
def _label(buf, a, b, names, ltab, l0, l1):
    """Index of the enum label ``buf[a:b]`` among labels ``l0 .. l1 - 1``, or -1."""
    n = b - a
    for i in range(l0, l1):
        if ltab[i, 1] == n and _same(buf, a, n, names, ltab[i, 0]):
            return i
    return -1


@jit
def _lower_is(buf, a, b, word):
    """``buf[a:b]`` equals the lower-case ASCII ``word`` ignoring case."""
    if b - a != len(word):
        return False
    for j in range(b - a):
        c = buf[a + j]
        if 65 <= c <= 90:
            c += 32
        if c != word[j]:
            return False
    return True


_INF = np.frombuffer(b"inf", np.uint8).copy()
_INFINITY = np.frombuffer(b"infinity", np.uint8).copy()
_NAN = np.frombuffer(b"nan", np.uint8).copy()
_BOOL_WORDS = [b"true", b"t", b"True", b"false", b"f", b"False"]


@jit
def _bool_word(buf, a, b):
    """1 / 0 for the text format's bool identifiers, -1 for anything else."""
    n = b - a
    c = buf[a]
    if n == 1:
        return 1 if c == 116 else 0 if c == 102 else -1  # t, f
    if n == 4 and (c == 116 or c == 84) and buf[a + 1] == 114 and buf[a + 2] == 117 and buf[a + 3] == 101:
        return 1  # true, True
    if (n == 5 and (c == 102 or c == 70) and buf[a + 1] == 97 and buf[a + 2] == 108 and buf[a + 3] == 115
            and buf[a + 4] == 101):
        return 0  # false, False
    return -1


@jit
def _number_end(buf, p, n):
    """End of the int or float literal at ``p`` and 1 for an int, 2 for a float; (-1, 0) if none."""
    q = p
    if q < n and buf[q] == 45:  # '-'
        q += 1
    d0 = q
    while q < n and _digit(buf[q]):
        q += 1
    nd = q - d0
    c = buf[q] if q < n else 0
    if nd > 0 and not (c == 46 or _id_char(c)):
        if nd > 1 and buf[d0] == 48:  # a leading zero: octal in the text format
            return -1, 0
        return q, 1
    exp_required = False
    if c == 46:  # '.'
        q += 1
        f0 = q
        while q < n and _digit(buf[q]):
            q += 1
        if nd == 0 and q == f0:
            return -1, 0
    elif nd > 0 and (c == 101 or c == 69):
        exp_required = True
    else:
        return -1, 0
    if q < n and (buf[q] == 101 or buf[q] == 69):
        r = q + 1
        if r < n and (buf[r] == 43 or buf[r] == 45):
            r += 1
        e0 = r
        while r < n and _digit(buf[r]):
            r += 1
        if r > e0:
            q = r
        elif exp_required:
            return -1, 0
    elif exp_required:
        return -1, 0
    if q < n and (buf[q] == 46 or _id_char(buf[q])):
        return -1, 0
    return q, 2


@jit
def _int_value(buf, a, b, kind):
    """(ok, value) of the decimal int ``buf[a:b]`` for an integer field of ``kind``."""
    neg = buf[a] == 45
    p = a + 1 if neg else a
    if b - p > 19:
        return False, np.int64(0)
    mag = np.uint64(0)
    for i in range(p, b):
        mag = mag * np.uint64(10) + np.uint64(buf[i] - 48)
    if neg:
        if mag == 0:
            return True, np.int64(0)
        if kind == K_UINT32 or kind == K_UINT64:
            return False, np.int64(0)
        limit = np.uint64(1 << 31) if kind == K_INT32 else np.uint64(1 << 63)
        if mag > limit:
            return False, np.int64(0)
        return True, -np.int64(mag - np.uint64(1)) - 1
    if kind == K_INT32:
        ok = mag <= np.uint64((1 << 31) - 1)
    elif kind == K_UINT32:
        ok = mag <= np.uint64((1 << 32) - 1)
    else:
        ok = mag <= _INT64_MAX  # uint64 beyond int64: left to the token parser
    return ok, np.int64(mag) if ok else np.int64(0)


@jit
def _string_end(buf, p, n):
    """Position after the quoted string opening at ``p`` (no backslash or newline inside), or -1."""
    c = buf[p]
    q = p + 1
    while q < n and buf[q] != c and buf[q] != 92 and buf[q] != 10:
        q += 1
    return q + 1 if q < n and buf[q] == c else -1


@jit
def _ident_end(buf, p, n):
    """Position after the identifier characters from ``p`` on."""
    while p < n and _id_char(buf[p]):
        p += 1
    return p


@jit
def _skip_blank(buf, p, n):
    while p < n and _blank(buf[p]):
        p += 1
    return p


@jit
def _after_value(buf, p, n):
    """Past ``[ \\t]*[,;]?``."""
    p = _skip_blank(buf, p, n)
    if p < n and (buf[p] == 44 or buf[p] == 59):
        p += 1
    return p


# scan_text is one long function (~230 lines, complexity ~58) on purpose: it is the scanner's
# state machine, a single jitted loop over the bytes whose state (position, the open-message
# stack, the row table it grows) lives in this frame; the token and value rules it applies are
# the small jitted helpers above. Split further, every statement would cross a call boundary
# that returns several values and the row table.
@jit
def scan_text(buf, root, names, ttab, ftab, etab, ltab, skip, max_depth):  # noqa: C901 - see the note above
    """Rows for the statements of text-format ``buf`` (uint8) parsed as message type ``root``.

    ``ttab[t]`` = field index range of message type t, ``ftab`` the fields (F_* columns),
    ``etab[e]`` = label index range of enum e, ``ltab[l]`` = (name offset, name length,
    number); names are bytes in ``names``. Messages of the types t with ``skip[t]`` are
    checked like all others but give no rows (nor do their fields). Returns ``(status, rows,
    first)`` where ``first`` is the offset of the first statement (the root message's position).
    """
    n = buf.shape[0]
    rows = np.empty((max(64, n // 8), R_COLS), np.int64)
    nr = 0
    seen = np.full(ftab.shape[0], -1, np.int64)  # message id that last set each singular field
    # the open messages: id (-1: inside an unknown field), id in the rows (-1: not in the rows,
    # i.e. unknown or skipped), type, closing byte
    st_id = np.empty(max_depth + 2, np.int64)
    st_out = np.empty(max_depth + 2, np.int64)
    st_type = np.empty(max_depth + 2, np.int64)
    st_close = np.empty(max_depth + 2, np.int64)
    depth = 0
    cur_id = 0
    cur_out = 0
    cur_type = root
    cur_close = -1
    n_msgs = 1
    n_out = 1
    first = -1
    p = 0
    while True:
        # whitespace and comments
        while p < n:
            c = buf[p]
            if c == 32 or c == 9 or c == 10 or c == 13:
                p += 1
            elif c == 35:  # '#': to the end of the line
                while p < n and buf[p] != 10:
                    p += 1
            else:
                break
        if p >= n:
            break
        if first < 0:
            first = p
        c = buf[p]
        if c == 125 or c == 62:  # '}' or '>'
            if c != cur_close:
                return FALLBACK, rows[:nr], first
            depth -= 1
            cur_id = st_id[depth]
            cur_out = st_out[depth]
            cur_type = st_type[depth]
            cur_close = st_close[depth]
            p = _after_value(buf, p + 1, n)
            continue
        if not _id_start(c):
            return FALLBACK, rows[:nr], first
        at = p
        p = _ident_end(buf, p, n)
        name_end = p
        p = _skip_blank(buf, p, n)
        colon = p < n and buf[p] == 58
        if colon:
            p = _skip_blank(buf, p + 1, n)
        if p >= n:
            return FALLBACK, rows[:nr], first
        c = buf[p]
        is_open = c == 123 or c == 60  # '{' or '<'
        if not is_open and not colon:
            return FALLBACK, rows[:nr], first
        fid = -1
        if cur_id >= 0:
            fid = _field(buf, at, name_end, names, ftab, ttab[cur_type, 0], ttab[cur_type, 1])
        if nr + 1 > rows.shape[0]:
            grown = np.empty((2 * rows.shape[0], R_COLS), np.int64)
            grown[:nr] = rows[:nr]
            rows = grown
        row = rows[nr]
        row[R_PARENT] = cur_out
        row[R_FIELD] = fid
        row[R_A] = at
        row[R_B] = name_end
        row[R_AT] = at
        if fid < 0:  # an unknown field: recorded by a known message, its value only tokenised
            if cur_out >= 0:
                row[R_CODE] = UNKNOWN
                nr += 1
            if is_open:
                if depth >= max_depth:
                    return FALLBACK, rows[:nr], first
                st_id[depth] = cur_id
                st_out[depth] = cur_out
                st_type[depth] = cur_type
                st_close[depth] = cur_close
                depth += 1
                cur_id = -1
                cur_out = -1
                cur_close = 125 if c == 123 else 62
                p += 1
                continue
            if c == 34 or c == 39:
                p = _string_end(buf, p, n)
                if p < 0:
                    return FALLBACK, rows[:nr], first
            elif _digit(c) or c == 45 or c == 46:
                q, _ = _number_end(buf, p, n)
                if q < 0:
                    return FALLBACK, rows[:nr], first
                p = q
            elif _id_start(c):
                p = _ident_end(buf, p, n)
            else:
                return FALLBACK, rows[:nr], first
            p = _after_value(buf, p, n)
            continue
        kind = ftab[fid, F_KIND]
        if ftab[fid, F_REP] == 0:
            if seen[fid] == cur_id:
                return FALLBACK, rows[:nr], first  # a singular field given twice
            seen[fid] = cur_id
        if is_open:
            if kind != K_MESSAGE or depth >= max_depth:
                return FALLBACK, rows[:nr], first
            row[R_CODE] = OPEN
            row[R_A] = p
            st_id[depth] = cur_id
            st_out[depth] = cur_out
            st_type[depth] = cur_type
            st_close[depth] = cur_close
            depth += 1
            cur_id = n_msgs
            n_msgs += 1
            cur_type = ftab[fid, F_REF]
            if cur_out >= 0 and not skip[cur_type]:
                nr += 1
                cur_out = n_out
                n_out += 1
            else:
                cur_out = -1
            cur_close = 125 if c == 123 else 62
            p += 1
            continue
        if c == 34 or c == 39:  # a quoted string
            q = _string_end(buf, p, n) - 1  # the closing quote
            if q < 0:
                return FALLBACK, rows[:nr], first
            if kind == K_STRING:
                row[R_CODE] = STR
            elif kind == K_BYTES:
                row[R_CODE] = BYTES
            else:
                return FALLBACK, rows[:nr], first
            row[R_A] = p + 1
            row[R_B] = q
            p = q + 1
        elif _digit(c) or c == 45 or c == 46:
            q, form = _number_end(buf, p, n)
            if q < 0:
                return FALLBACK, rows[:nr], first
            row[R_A] = p
            row[R_B] = q
            if kind == K_FLOAT or kind == K_DOUBLE:
                row[R_CODE] = FLOAT
                if form == 1 and q - p <= 8 and not (buf[p] == 45 and buf[p + 1] == 48):
                    ok, v = _int_value(buf, p, q, K_INT32)
                    if ok and -(1 << 24) <= v <= (1 << 24):
                        row[R_CODE] = FLOAT_INT
                        row[R_INT] = v
            elif form != 1:
                return FALLBACK, rows[:nr], first
            elif kind <= K_UINT64:
                ok, v = _int_value(buf, p, q, kind)
                if not ok:
                    return FALLBACK, rows[:nr], first
                row[R_CODE] = INT
                row[R_INT] = v
            elif kind == K_BOOL:
                if q - p != 1 or (buf[p] != 48 and buf[p] != 49):
                    return FALLBACK, rows[:nr], first
                row[R_CODE] = BOOL
                row[R_INT] = buf[p] - 48
            elif kind == K_ENUM:
                ok, v = _int_value(buf, p, q, K_INT32)
                if not ok:
                    return FALLBACK, rows[:nr], first
                e = ftab[fid, F_REF]
                found = -1
                for li in range(etab[e, 0], etab[e, 1]):
                    if ltab[li, 2] == v:
                        found = li
                        break
                if found < 0:
                    return FALLBACK, rows[:nr], first
                row[R_CODE] = ENUM
                row[R_INT] = found
            else:
                return FALLBACK, rows[:nr], first
            p = q
        elif _id_start(c):
            q = _ident_end(buf, p, n)
            row[R_A] = p
            row[R_B] = q
            if kind == K_ENUM:
                e = ftab[fid, F_REF]
                li = _label(buf, p, q, names, ltab, etab[e, 0], etab[e, 1])
                if li < 0:
                    return FALLBACK, rows[:nr], first
                row[R_CODE] = ENUM
                row[R_INT] = li
            elif kind == K_BOOL:
                v = _bool_word(buf, p, q)
                if v < 0:
                    return FALLBACK, rows[:nr], first
                row[R_CODE] = BOOL
                row[R_INT] = v
            elif kind == K_FLOAT or kind == K_DOUBLE:
                if not (_lower_is(buf, p, q, _INF) or _lower_is(buf, p, q, _INFINITY) or _lower_is(buf, p, q, _NAN)):
                    return FALLBACK, rows[:nr], first
                row[R_CODE] = FLOAT
            else:
                return FALLBACK, rows[:nr], first
            p = q
        else:
            return FALLBACK, rows[:nr], first
        if cur_out >= 0:
            nr += 1
        p = _after_value(buf, p, n)
    if depth != 0:
        return FALLBACK, rows[:nr], first
    return OK, rows[:nr], n if first < 0 else first


class SchemaTables:
    """The schema as the arrays :func:`scan_text` reads, and the Python side of each index."""

    def __init__(self, messages, enums) -> None:
        self.types = list(messages.values())
        type_index = {t.name: i for i, t in enumerate(self.types)}
        enum_names = list(enums)
        enum_index = {e: i for i, e in enumerate(enum_names)}
        names = bytearray()
        frows, trows, erows, lrows = [], [], [], []
        self.fields = []  # per field: (name, repeated, kind, message type or None)
        self.labels = []  # per enum label: the label string
        for t in self.types:
            start = len(frows)
            for f in t.fields:
                b = f.name.encode("ascii")
                ref = (type_index[f.ref] if f.kind == "message" else enum_index[f.ref] if f.kind == "enum" else -1)
                frows.append((KINDS.index(f.kind), int(f.repeated), ref, len(names), len(b)))
                names += b
                self.fields.append((f.name, f.repeated, f.kind, self.types[ref] if f.kind == "message" else None))
            trows.append((start, len(frows)))
        for e in enum_names:
            start = len(lrows)
            for label, number in enums[e].items():
                b = label.encode("ascii")
                lrows.append((len(names), len(b), number))
                names += b
                self.labels.append(label)
            erows.append((start, len(lrows)))
        self.type_index = type_index
        self._masks: dict[frozenset[str], np.ndarray] = {}
        self.names = np.frombuffer(bytes(names), np.uint8).copy()
        self.ttab = np.array(trows, np.int64).reshape(-1, 2)
        self.ftab = np.array(frows, np.int64).reshape(-1, 5)
        self.etab = np.array(erows, np.int64).reshape(-1, 2)
        self.ltab = np.array(lrows, np.int64).reshape(-1, 3)

    def skip_mask(self, names: frozenset[str]) -> np.ndarray:
        """The ``skip`` argument of scan_text for these message type names (cached)."""
        mask = self._masks.get(names)
        if mask is None:
            mask = np.array([t.name in names for t in self.types], np.bool_)
            self._masks[names] = mask
        return mask

    def scan(self, raw: bytes, root: int, max_depth: int, skip: frozenset[str] = frozenset()):
        return scan_text(np.frombuffer(raw, np.uint8), root, self.names, self.ttab, self.ftab, self.etab,
                         self.ltab, self.skip_mask(skip), max_depth)
