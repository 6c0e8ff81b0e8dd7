"""A compiled index of a caffemodel's weights: where each layer's name, type and blobs are.

:func:`scan_weights` walks the wire format of a ``NetParameter`` once, in compiled code, and
returns three integer tables instead of Python objects: one row per top-level layer (V2
``layer`` = field 100 or V1 ``layers`` = field 2), one row per BlobProto, and the dims of
every ``BlobShape``. Python then only slices names and makes one array per blob
(:func:`weights_from_scan`), so the cost of a load no longer grows with the number of
protobuf fields in the file.

The scanner decodes the plain, well-formed subset that every real caffemodel uses and
reports anything else (status != 0: a truncated field, a length running past its message,
unpacked floats, diffs, a field given twice, a wire type that does not fit, ...) so that the
caller falls back on the schema-driven decoder, which decodes the unusual and reports the
malformed with its offset. It never reads outside ``buf``: every position is checked against
the end of its enclosing message before the byte is read.

It is an optional fast path: ``weights_import/_scanpolicy.py`` decides when it runs (its
docstring has the measurement that keeps it), and the schema-driven decoder alone reads every
file; tests/fuzz/test_fuzz_caffemodel.py checks the two agree.
"""

from __future__ import annotations

import numpy as np

from refnet.kernels._jit import jit

OK, FALLBACK = 0, 1

# layer table columns
L_V1, L_AT, L_NAME, L_NAME_LEN, L_TYPE, L_TYPE_LEN, L_BLOB0, L_NBLOBS = range(8)
L_COLS = 8
# blob table columns: where the BlobProto starts; data field (0 none, 5 data, 8 double_data,
# 12 raw_data), its offset and byte length; raw_data_type (-1: absent); legacy num/channels/
# height/width (-1: absent); dims (first index into the dims table, count; -1: no shape field)
B_AT, B_FIELD, B_OFF, B_LEN, B_RAWTYPE, B_NUM, B_CH, B_H, B_W, B_DIM0, B_NDIMS = range(11)
# filled in by _place: the blob's shape as blob_array takes it (index into dims, count), where
# its values start among all float32 (float64) values, and which kind it is (32, 64; 16 = fp16
# raw_data, widened to float32 on its own)
B_SHAPE0, B_SHAPE_N, B_COUNT, B_DST, B_BITS = range(11, 16)
B_COLS = 16
MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes
_RAW_BITS = (64, 32, 16)  # raw_data_type DOUBLE, FLOAT, FLOAT16

_MASK32 = np.uint64(0xFFFFFFFF)


@jit
def _varint(buf, pos, end):
    """(value as uint64, position after it); position -1 when it is cut off or too long."""
    result = np.uint64(0)
    shift = np.uint64(0)
    stop = min(pos + 10, end)
    while pos < stop:
        b = np.uint64(buf[pos])
        pos += 1
        result |= (b & np.uint64(0x7F)) << shift
        if b < 0x80:
            return result, pos
        shift += np.uint64(7)
    return result, -1


@jit
def _int32(v):
    """A varint as protobuf's int32 (the low 32 bits, signed)."""
    x = np.int64(v & _MASK32)
    return x - (np.int64(1) << 32) if x >= (np.int64(1) << 31) else x


@jit
def _body(buf, pos, end):
    """(start, stop) of the length-delimited body whose length varint is at ``pos``; stop is -1
    when the length is cut off or the body runs past ``end``."""
    n, pos = _varint(buf, pos, end)
    if pos < 0 or n > np.uint64(end - pos):
        return pos, -1
    return pos, pos + np.int64(n)


@jit
def _skip(buf, pos, end, wt):
    """Position after a field body of wire type ``wt`` at ``pos``; -1 if it does not fit."""
    if wt == 0:
        v, pos = _varint(buf, pos, end)
        return pos
    if wt == 2:
        return _body(buf, pos, end)[1]
    if wt == 5:
        return pos + 4 if pos + 4 <= end else -1
    if wt == 1:
        return pos + 8 if pos + 8 <= end else -1
    return -1  # groups (3, 4) and the invalid 6, 7


@jit
def _grow(a, n):
    """``a`` with room for at least ``n`` rows (doubling)."""
    if n <= a.shape[0]:
        return a
    b = np.empty((max(n, 2 * a.shape[0]),) + a.shape[1:], a.dtype)
    b[: a.shape[0]] = a
    return b


@jit
def _blob(buf, pos, end, row, dims, ndims):
    """Decode one BlobProto into ``row``; returns (status, dims, ndims)."""
    row[B_FIELD] = 0
    row[B_OFF] = 0
    row[B_LEN] = 0
    row[B_RAWTYPE] = -1
    row[B_NUM] = -1
    row[B_CH] = -1
    row[B_H] = -1
    row[B_W] = -1
    row[B_DIM0] = -1
    row[B_NDIMS] = 0
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return FALLBACK, dims, ndims
        num = np.int64(tag >> np.uint64(3))
        wt = np.int64(tag & np.uint64(7))
        if num == 5 or num == 8 or num == 12:  # data, double_data, raw_data
            if wt != 2 or row[B_FIELD] != 0:  # unpacked, or a second data field: generic decoder
                return FALLBACK, dims, ndims
            pos, stop = _body(buf, pos, end)
            if stop < 0:
                return FALLBACK, dims, ndims
            row[B_FIELD] = num
            row[B_OFF] = pos
            row[B_LEN] = stop - pos
            pos = stop
        elif num == 7:  # shape: BlobShape { repeated int64 dim = 1 [packed] }
            if wt != 2 or row[B_DIM0] >= 0:
                return FALLBACK, dims, ndims
            pos, stop = _body(buf, pos, end)
            if stop < 0:
                return FALLBACK, dims, ndims
            row[B_DIM0] = ndims
            while pos < stop:
                t, pos = _varint(buf, pos, stop)
                if pos < 0:
                    return FALLBACK, dims, ndims
                if t == 0x0A:  # packed dims
                    pos, dstop = _body(buf, pos, stop)
                    if dstop < 0:
                        return FALLBACK, dims, ndims
                    while pos < dstop:
                        d, pos = _varint(buf, pos, dstop)
                        if pos < 0:
                            return FALLBACK, dims, ndims
                        dims = _grow(dims, ndims + 1)
                        dims[ndims] = np.int64(d)  # two's complement: int64 as protobuf reads it
                        ndims += 1
                elif t == 0x08:  # one unpacked dim
                    d, pos = _varint(buf, pos, stop)
                    if pos < 0:
                        return FALLBACK, dims, ndims
                    dims = _grow(dims, ndims + 1)
                    dims[ndims] = np.int64(d)
                    ndims += 1
                else:
                    return FALLBACK, dims, ndims
            row[B_NDIMS] = ndims - row[B_DIM0]
        elif 1 <= num <= 4 or num == 10:  # num, channels, height, width; raw_data_type
            if wt != 0:
                return FALLBACK, dims, ndims
            v, pos = _varint(buf, pos, end)
            if pos < 0:
                return FALLBACK, dims, ndims
            col = B_RAWTYPE if num == 10 else B_NUM + num - 1
            if row[col] != -1:
                return FALLBACK, dims, ndims  # given twice (last one wins): generic decoder
            x = _int32(v)
            if x < 0:
                return FALLBACK, dims, ndims
            row[col] = x
        elif num == 0 or num == 6 or num == 9 or num == 11:  # invalid; diff; double_diff; 11 reserved
            return FALLBACK, dims, ndims
        else:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return FALLBACK, dims, ndims
    return OK, dims, ndims


@jit
def _place(blobs, dims, nd):
    """Each blob's shape and element count by blob_array's rules (legacy num/channels/height/
    width if any is given, else ``shape``, else (1,)), checked against its data, and where its
    values go in the float32 (float64) array that gathers all of them (B_DST). FALLBACK for
    anything blob_array would refuse or treat specially (no or empty data, a size mismatch,
    over 32 axes, a negative dim)."""
    n32 = 0
    n64 = 0
    for k in range(blobs.shape[0]):
        row = blobs[k]
        if row[B_NUM] >= 0 or row[B_CH] >= 0 or row[B_H] >= 0 or row[B_W] >= 0:
            dims = _grow(dims, nd + 4)
            for j in range(4):
                dims[nd + j] = max(row[B_NUM + j], 0)
            row[B_SHAPE0] = nd
            row[B_SHAPE_N] = 4
            nd += 4
        elif row[B_DIM0] >= 0:
            row[B_SHAPE0] = row[B_DIM0]
            row[B_SHAPE_N] = row[B_NDIMS]
        else:
            dims = _grow(dims, nd + 1)
            dims[nd] = 1
            row[B_SHAPE0] = nd
            row[B_SHAPE_N] = 1
            nd += 1
        if row[B_SHAPE_N] > MAX_BLOB_AXES:
            return FALLBACK, dims, nd
        fld = row[B_FIELD]
        if fld == 5:
            bits = 32
        elif fld == 8:
            bits = 64
        elif fld == 12 and 0 <= row[B_RAWTYPE] <= 2:
            bits = _RAW_BITS[row[B_RAWTYPE]]
        else:
            return FALLBACK, dims, nd
        size = bits // 8
        nbytes = row[B_LEN]
        count = 1
        for j in range(row[B_SHAPE0], row[B_SHAPE0] + row[B_SHAPE_N]):
            d = dims[j]
            if d < 0 or (d > 0 and count > nbytes // d):  # negative, or more values than bytes
                return FALLBACK, dims, nd
            count *= d
        if nbytes == 0 or count * size != nbytes:
            return FALLBACK, dims, nd
        row[B_COUNT] = count
        row[B_BITS] = bits
        if bits == 32:
            row[B_DST] = n32
            n32 += count
        elif bits == 64:
            row[B_DST] = n64
            n64 += count
        else:
            row[B_DST] = -1
    return OK, dims, nd


@jit
def _utf8_ok(buf, a, n):
    """``buf[a:a + n]`` is UTF-8 as Python's strict decoder takes it (no overlong forms, no
    surrogates, nothing past U+10FFFF)."""
    p = a
    end = a + n
    while p < end:
        c = buf[p]
        if c < 0x80:
            p += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            k = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            k = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if p + k >= end:  # the sequence needs bytes p + 1 .. p + k
            return False
        if not lo <= buf[p + 1] <= hi:
            return False
        for j in range(2, k + 1):
            if not 0x80 <= buf[p + j] <= 0xBF:
                return False
        p += k + 1
    return True


@jit
def _check_layers(buf, layers, v1_types):
    """OK when the layers are all V2 or all V1, their names and V2 types are UTF-8 and their
    V1 types known enum numbers (``v1_types[number]``); the generic decoder judges the rest."""
    for k in range(layers.shape[0]):
        row = layers[k]
        if row[L_V1] != layers[0, L_V1]:
            return FALLBACK
        if row[L_NAME] >= 0 and not _utf8_ok(buf, row[L_NAME], row[L_NAME_LEN]):
            return FALLBACK
        if row[L_TYPE] >= 0:
            if row[L_V1]:
                t = row[L_TYPE_LEN]
                if t < 0 or t >= v1_types.shape[0] or not v1_types[t]:
                    return FALLBACK
            elif not _utf8_ok(buf, row[L_TYPE], row[L_TYPE_LEN]):
                return FALLBACK
    return OK


# scan_weights (~100 lines) is the scanner's one pass over the NetParameter: a jitted loop whose
# state (position, three growing tables) lives in this frame; per-message rules are the helpers above.
@jit
def scan_weights(buf, v1_types):
    """Index the layers and blobs of a caffemodel (``buf``: uint8 array; ``v1_types``: which
    V1LayerType enum numbers exist, as a bool array).

    Returns ``(status, layers, blobs, dims)``, the tables cut to their rows; status FALLBACK
    means: let the generic decoder handle this file (the tables are then incomplete).
    """
    layers = np.empty((64, L_COLS), np.int64)
    blobs = np.empty((64, B_COLS), np.int64)
    dims = np.empty(256, np.int64)
    nl = 0
    nb = 0
    nd = 0
    n = buf.shape[0]
    pos = 0
    while pos < n:
        at = pos
        tag, pos = _varint(buf, pos, n)
        if pos < 0:
            return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
        num = np.int64(tag >> np.uint64(3))
        wt = np.int64(tag & np.uint64(7))
        if num != 2 and num != 100:
            if num == 0:
                return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
            pos = _skip(buf, pos, n, wt)
            if pos < 0:
                return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
            continue
        if wt != 2:
            return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
        pos, end = _body(buf, pos, n)
        if end < 0:
            return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
        v1 = num == 2
        name_no = 4 if v1 else 1
        type_no = 5 if v1 else 2
        blobs_no = 6 if v1 else 7
        layers = _grow(layers, nl + 1)
        row = layers[nl]
        row[L_V1] = 1 if v1 else 0
        row[L_AT] = at
        row[L_NAME] = -1
        row[L_NAME_LEN] = 0
        row[L_TYPE] = -1
        row[L_TYPE_LEN] = 0
        row[L_BLOB0] = nb
        row[L_NBLOBS] = 0
        nl += 1
        while pos < end:
            tag, pos = _varint(buf, pos, end)
            if pos < 0:
                return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
            fnum = np.int64(tag >> np.uint64(3))
            fwt = np.int64(tag & np.uint64(7))
            if fnum == blobs_no or fnum == name_no or (fnum == type_no and not v1):
                if fwt != 2:
                    return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                pos, stop = _body(buf, pos, end)
                if stop < 0:
                    return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                if fnum == blobs_no:
                    blobs = _grow(blobs, nb + 1)
                    blobs[nb, B_AT] = pos
                    status, dims, nd = _blob(buf, pos, stop, blobs[nb], dims, nd)
                    if status != OK:
                        return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                    nb += 1
                    row[L_NBLOBS] += 1
                elif fnum == name_no:
                    if row[L_NAME] >= 0:
                        return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                    row[L_NAME] = pos
                    row[L_NAME_LEN] = stop - pos
                else:
                    if row[L_TYPE] >= 0:
                        return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                    row[L_TYPE] = pos
                    row[L_TYPE_LEN] = stop - pos
                pos = stop
            elif fnum == type_no:  # V1: an enum
                if fwt != 0 or row[L_TYPE] >= 0:
                    return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                v, pos = _varint(buf, pos, end)
                if pos < 0:
                    return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
                row[L_TYPE] = 0
                row[L_TYPE_LEN] = _int32(v)
            elif fnum == 0:
                return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
            else:
                pos = _skip(buf, pos, end, fwt)
                if pos < 0:
                    return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
        if pos != end:
            return FALLBACK, layers[:nl], blobs[:nb], dims[:nd]
    status = _check_layers(buf, layers[:nl], v1_types)
    if status == OK:
        status, dims, nd = _place(blobs[:nb], dims, nd)
    return status, layers[:nl], blobs[:nb], dims[:nd]
