"""Protobuf wire format: the bounded reader and the schema-driven decoder.

Oracles: hand-encoded bytes (protobuf's documented encodings, e.g. 300 -> ``ac 02``), the
test suite's own encoder in writers/caffe_writer.py, numpy for float bit patterns.
"""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from writers.caffe_writer import Layer, NetSpec, blob_bytes, caffemodel, key, ld, varint

from refnet.errors import ModelFormatError
from refnet.weights_import.caffe_schema import MESSAGES
from refnet.weights_import.protobuf import MAX_DEPTH, Reader, decode_message

HYP = settings(max_examples=40, deadline=None, derandomize=True)
BLOB = MESSAGES["BlobProto"]
NET = MESSAGES["NetParameter"]
LAYER = MESSAGES["LayerParameter"]


def dec(data: bytes, mtype=BLOB):
    return decode_message(Reader(data, file="t.bin"), mtype)


# ---- varints --------------------------------------------------------------------------------
@pytest.mark.parametrize("value,encoded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (2**63, b"\x80" * 9 + b"\x01"), (2**64 - 1, b"\xff" * 9 + b"\x01"),
])
def test_varint_known_encodings(value, encoded):
    assert varint(value) == encoded  # the test writer agrees with protobuf's documentation
    r = Reader(encoded)
    assert r.varint() == value and r.remaining() == 0


@given(st.integers(min_value=0, max_value=2**64 - 1))
@HYP
def test_varint_roundtrip(v):
    assert Reader(varint(v)).varint() == v


def test_varint_too_long_and_truncated():
    with pytest.raises(ModelFormatError, match=r"byte offset 3.*longer than 10 bytes"):
        Reader(b"\x00\x00\x00" + b"\x80" * 11 + b"\x01", pos=3).varint()
    with pytest.raises(ModelFormatError, match="truncated varint"):
        Reader(b"\x80\x80").varint()
    # a varint may not run past the end of its enclosing message, even if the file goes on
    with pytest.raises(ModelFormatError, match="truncated varint"):
        Reader(b"\x80\x80\x01", end=2).varint()


def test_signed_fields_sign_extend():
    # int32 -5 is written as a 10-byte two's-complement varint; input_dim is int32
    data = key(4, 0) + varint(-5) + key(4, 0) + varint(7)
    assert len(varint(-5)) == 10
    assert dec(data, NET).get("input_dim") == [-5, 7]
    # BlobShape.dim is int64 (packed)
    data = ld(1, varint(-3) + varint(2**40))
    assert dec(data, MESSAGES["BlobShape"]).get("dim") == [-3, 2**40]


# ---- floats: packed, unpacked, mixed ---------------------------------------------------------
def test_packed_and_unpacked_floats_agree(rng):
    a = rng.standard_normal(1001).astype(np.float32)
    packed = dec(blob_bytes(a, packed=True)).get("data")
    unpacked = dec(blob_bytes(a, packed=False)).get("data")
    assert packed.dtype == np.float32 and np.array_equal(packed, a)
    assert np.array_equal(unpacked, a)


def test_mixed_float_encodings_concatenate_in_order():
    f = np.array([1.5, -2.25, 3.0, 4.5, 1e-3], np.float32)
    data = (ld(5, f[:2].tobytes())  # packed chunk
            + key(5, 5) + f[2:3].tobytes() + key(5, 5) + f[3:4].tobytes()  # unpacked run
            + key(1, 0) + varint(1)  # another field in between
            + key(5, 5) + f[4:5].tobytes())
    m = dec(data)
    assert np.array_equal(m.get("data"), f)
    assert m.get("num") == 1


def test_double_data_and_scalar_floats():
    d = np.array([np.pi, -1e300, 5e-324], np.float64)
    m = dec(ld(8, d.tobytes()) + key(8, 1) + np.float64(2.5).tobytes())
    assert np.array_equal(m.get("double_data"), np.r_[d, 2.5])
    lrn = MESSAGES["LRNParameter"]
    m = dec(key(2, 5) + struct.pack("<f", 1e-4) + key(5, 5) + struct.pack("<f", 2.0), lrn)
    assert m.get("alpha") == float(np.float32(1e-4)) and m.get("k") == 2.0
    assert m.get("beta") == 0.75  # schema default for an absent field


def test_packed_float_length_not_multiple_of_4():
    with pytest.raises(ModelFormatError, match="not a multiple of 4"):
        dec(ld(5, b"\x00" * 7))


def test_large_unpacked_run_is_vectorised(rng):
    a = rng.standard_normal(200_000).astype(np.float32)
    data = blob_bytes(a, packed=False)
    import time

    t = time.process_time()  # this process's CPU time: a loaded CI machine does not count against it
    out = dec(data).get("data")
    elapsed = time.process_time() - t
    assert np.array_equal(out, a)
    assert elapsed < 1.0, f"unpacked floats decoded element by element? {elapsed:.2f}s"


# ---- lengths, truncation, bounds ------------------------------------------------------------
def test_length_beyond_file_is_refused_before_allocating():
    # a blob declaring 2**40 bytes of floats in a 20-byte file
    data = key(5, 2) + varint(2**40) + b"\x00" * 10
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=r"byte offset 0\).*1099511627776 bytes declared"):
            dec(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_nested_length_checked_against_enclosing_message():
    inner = ld(7, b"")  # an empty blob
    layer = ld(1, b"conv") + inner
    # the layer's length says 3 bytes but its content is longer: the blob field inside
    # overruns the layer although the file itself has enough bytes
    bad = key(100, 2) + varint(3) + layer
    with pytest.raises(ModelFormatError, match="enclosing message"):
        dec(bad, NET)


def test_truncated_fixed_width_values():
    with pytest.raises(ModelFormatError, match="4 bytes declared"):
        dec(key(5, 5) + b"\x00\x00")
    with pytest.raises(ModelFormatError, match="8 bytes declared"):
        dec(key(8, 1) + b"\x00" * 3)


def test_every_truncation_of_a_caffemodel_is_a_clean_error(rng):
    net = NetSpec([Layer("c", "Convolution", ["data"], ["c"],
                         {"convolution_param": {"num_output": 2, "kernel_size": 1}},
                         [rng.standard_normal((2, 3, 1, 1)), rng.standard_normal(2)])],
                  {"data": (1, 3, 4, 4)})
    data = caffemodel(net, with_defs=True)
    dec(data, NET)
    for cut in range(1, len(data)):
        try:
            dec(data[:cut], NET)
        except ModelFormatError as e:
            assert e.offset is not None and 0 <= e.offset <= cut
        # some prefixes are themselves valid messages (a cut between two fields)


@given(st.binary(max_size=200), st.integers(0, 2**32))
@HYP
def test_fuzz_mutated_bytes_only_raise_model_format_error(noise, seed):
    rng = np.random.default_rng(seed)
    net = NetSpec([Layer("ip", "InnerProduct", ["data"], ["ip"],
                         {"inner_product_param": {"num_output": 3}},
                         [rng.standard_normal((3, 4)), rng.standard_normal(3)])],
                  {"data": (1, 4)})
    data = bytearray(caffemodel(net, with_defs=True))
    for i, b in enumerate(noise[: len(data)]):
        pos = int(rng.integers(0, len(data)))
        data[pos] ^= b | (i & 1)
    try:
        dec(bytes(data), NET)
    except ModelFormatError:
        pass


# ---- unknown fields, wire types, enums --------------------------------------------------------
def test_unknown_fields_of_every_wire_type_are_skipped():
    group = key(77, 3) + key(1, 0) + varint(5) + key(2, 3) + key(2, 4) + key(77, 4)
    data = (key(99, 0) + varint(2**50) + key(98, 1) + b"\x00" * 8 + key(97, 2) + varint(3)
            + b"abc" + key(96, 5) + b"\x00" * 4 + group + key(1, 2) + varint(1) + b"x")
    m = dec(data, NET)
    assert m.get("name") == "x"
    assert set(m.unknown) == {99, 98, 97, 96, 77}


def test_wire_type_mismatch_is_an_unknown_field():
    # the SSD Caffe fork writes a varint at LayerParameter field 147, which OpenCV's schema
    # (and ours) declares as detection_output_param (a message): protobuf skips it
    layer = ld(1, b"det") + key(147, 0) + varint(1) + ld(2, b"ReLU")
    m = dec(ld(100, layer), NET).get("layer")[0]
    assert m.get("name") == "det" and m.get("type") == "ReLU" and 147 in m.unknown
    assert not m.has("detection_output_param")


def test_unknown_enum_value_is_ignored_like_proto2():
    pool = MESSAGES["PoolingParameter"]
    m = dec(key(1, 0) + varint(9) + key(2, 0) + varint(3), pool)
    assert not m.has("pool") and m.get("pool") == "MAX" and 1 in m.unknown
    assert dec(key(1, 0) + varint(1), pool).get("pool") == "AVE"


def test_invalid_wire_types_and_field_zero():
    with pytest.raises(ModelFormatError, match="invalid wire type 6"):
        dec(key(50, 6) + b"\x00")
    with pytest.raises(ModelFormatError, match="invalid wire type 7"):
        dec(key(50, 7))
    with pytest.raises(ModelFormatError, match="field number 0"):
        dec(b"\x00\x00")


def test_group_nesting_limit_and_mismatched_end():
    deep = b"".join(key(5 + i % 3, 3) for i in range(MAX_DEPTH + 5))
    with pytest.raises(ModelFormatError, match="nested deeper"):
        dec(key(60, 3) + deep)
    with pytest.raises(ModelFormatError, match="end-group tag for field 9 closes group 8"):
        dec(key(8, 3) + key(9, 4))
    with pytest.raises(ModelFormatError, match="truncated group"):
        dec(key(8, 3) + key(1, 0) + varint(1))


def test_strings_must_be_utf8():
    with pytest.raises(ModelFormatError, match="not valid UTF-8"):
        dec(ld(1, b"\xff\xfe"), NET)
    assert dec(ld(1, "réseau".encode()), NET).get("name") == "réseau"


def test_fp16_raw_data_and_legacy_shape():
    a = np.array([[0.5, -2.0, 65504.0], [1e-3, 0.0, 3.140625]], np.float32)
    m = dec(blob_bytes(a, "fp16"))
    assert m.get("raw_data_type") == "FLOAT16"
    assert np.array_equal(np.frombuffer(m.get("raw_data"), "<f2").astype(np.float32),
                          a.astype(np.float16).astype(np.float32).reshape(-1))
    m = dec(blob_bytes(a.reshape(1, 2, 3), "legacy"))
    assert (m.get("num"), m.get("channels"), m.get("height"), m.get("width")) == (1, 1, 2, 3)


def test_packed_and_unpacked_varints_agree():
    dims = [1, 300, 2**35, 7]
    packed = ld(1, b"".join(varint(d) for d in dims))
    unpacked = b"".join(key(1, 0) + varint(d) for d in dims)
    shape = MESSAGES["BlobShape"]
    assert dec(packed, shape).get("dim") == dims == dec(unpacked, shape).get("dim")
    # input_dim (int32, declared unpacked) may arrive packed too; both forms may mix
    data = ld(4, varint(1) + varint(3)) + key(4, 0) + varint(224) + key(4, 0) + varint(225)
    assert dec(data, NET).get("input_dim") == [1, 3, 224, 225]
    # a packed run whose last varint is cut by its own length
    with pytest.raises(ModelFormatError, match="truncated varint"):
        dec(ld(1, varint(5) + b"\x80"), shape)
