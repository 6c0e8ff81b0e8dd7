"""The Torch7 object reader (refnet.weights_import.t7).

Oracles: byte strings assembled by hand from torch7's File.lua / THDiskFile.c rules, the
head of the real ENet file, and the test suite's own writer (tests/writers/t7_writer.py,
written independently of the reader) with numpy arrays as the expected values.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import require_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from writers.t7_writer import Function, Module, Raw, Storage, Tensor, dumps, empty, tensor

from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.weights_import.t7 import (
    MAX_DEPTH,
    LuaFunction,
    LuaTable,
    T7Storage,
    T7Tensor,
    TorchObject,
    detect_encoding,
    read_t7,
)
from refnet.weights_import.torch import read_torch

ENCODINGS = [pytest.param(False, id="binary"), pytest.param(True, id="ascii")]


def i32(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}i", *v)


def i64(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}q", *v)


def f64(v: float) -> bytes:
    return struct.pack("<d", v)


def lstr(s: bytes) -> bytes:
    return i32(len(s)) + s


# ---- the writer itself follows the spec (hand-assembled bytes) -------------------------------------
def test_writer_binary_bytes_match_hand_assembled_stream():
    obj = {"a": 1.5, 1: True}
    want = (i32(3, 1, 2) + i32(2) + lstr(b"a") + i32(1) + f64(1.5)
            + i32(1) + f64(1.0) + i32(5, 1))
    assert dumps(obj) == want


def test_writer_ascii_bytes_match_hand_assembled_stream():
    assert dumps({1: 1.5}, ascii=True) == b"3\n1\n1\n1\n1\n1\n1.5\n"
    assert dumps("hello", ascii=True) == b"2\n5\nhello\n"
    t = tensor(np.array([1.0, 2.5], np.float32))
    # tensor: tag 4, index 1, "V 1", class, ndim, sizes, strides, offset+1, storage object
    want = (b"4\n1\n3\nV 1\n17\ntorch.FloatTensor\n1\n2\n1\n1\n"
            b"4\n2\n3\nV 1\n18\ntorch.FloatStorage\n2\n1 2.5\n")
    assert dumps(t, ascii=True) == want


def test_writer_matches_real_enet_file_head(models):
    head = require_model(models, "enet_cityscapes_torch/model-best.net").read_bytes()[:96]
    # nn.Sequential, payload table index 2 with 5 fields, first field _type = "torch.CudaTensor"
    mine = dumps(Module("nn.Sequential", {"_type": "torch.CudaTensor", "a": 1, "b": 2, "c": 3, "d": 4}))
    assert mine[:81] == head[:81]


# ---- Lua values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ascii", ENCODINGS)
def test_scalars_strings_and_tables_roundtrip(ascii):
    obj = {
        "num": -1.25e-7, "big": 2.0**60, "int": 42, "inf": float("inf"), "ninf": -float("inf"),
        "neg0": -0.0, "t": True, "f": False, "empty": "", "bytes": b"\x00\xff\n\n x",
        "latin": "na\xefve", 1: "one", 2.5: "float key",
        "nested": {"list": [1, 2, [3, {"deep": "x"}]]}, "nil_value_dropped": None,
    }
    got = read_t7(dumps(obj, ascii=ascii))
    assert isinstance(got, LuaTable)
    assert got["num"] == -1.25e-7 and got["big"] == 2.0**60 and got["int"] == 42
    assert got["inf"] == float("inf") and got["ninf"] == -float("inf")
    assert str(got["neg0"]) == "-0.0"
    assert got["t"] is True and got["f"] is False
    assert got["empty"] == "" and got["bytes"] == "\x00\xff\n\n x" and got["latin"] == "na\xefve"
    assert got[1] == "one" and got[2.5] == "float key"
    assert read_t7(dumps({False: "bool key"}, ascii=ascii))[False] == "bool key"
    assert got["nested"]["list"].array_part()[2][2]["deep"] == "x"
    assert got["nil_value_dropped"] is None
    nan = read_t7(dumps(float("nan"), ascii=ascii))
    assert nan != nan


@pytest.mark.parametrize("ascii", ENCODINGS)
def test_shared_and_cyclic_references_are_the_same_object(ascii):
    shared = {"x": 1}
    cyc: dict = {"name": "loop"}
    cyc["self"] = cyc
    m = Module("nn.Thing", {"a": shared, "b": shared})
    m.fields["me"] = m
    got = read_t7(dumps([shared, shared, cyc, m], ascii=ascii))
    a, b, c, mm = got.array_part()
    assert a is b and a["x"] == 1
    assert c["self"] is c
    assert isinstance(mm, TorchObject) and mm.get("me") is mm and mm.get("a") is mm.get("b")


@pytest.mark.parametrize("ascii", ENCODINGS)
def test_torch_object_versions_and_legacy_class_names(ascii):
    new = Module("nn.Identity", {"train": False})
    old = Module("nn.Identity", {"train": True}, version=None)  # before "V n" existed
    got = read_t7(dumps([new, old], ascii=ascii)).array_part()
    assert [o.class_name for o in got] == ["nn.Identity", "nn.Identity"]
    assert got[0].version == 1 and got[1].version == 0
    assert got[0].get("train") is False and got[1].get("train") is True


@pytest.mark.parametrize("ascii", ENCODINGS)
def test_functions_are_read_as_opaque_bytecode(ascii):
    rec = Function(b"\x1bLJ\x01fake bytecode", upvalues=[{"name": "x", "value": 3}])
    plain = Function(b"\x1bLuaQ plain", upvalues=[], recursive=False)
    legacy = Raw(i32(7, 99) + lstr(b"legacy") + i32(0)) if not ascii else None
    got = read_t7(dumps({"r": rec, "p": plain, "again": rec}, ascii=ascii))
    assert isinstance(got["r"], LuaFunction) and got["r"].bytecode == b"\x1bLJ\x01fake bytecode"
    assert got["r"].upvalues[1]["value"] == 3 and got["again"] is got["r"]
    assert got["p"].bytecode == b"\x1bLuaQ plain" and got["p"].index is None
    if legacy is not None:
        fn = read_t7(legacy.data)
        assert isinstance(fn, LuaFunction) and fn.index == 99 and fn.bytecode == b"legacy"


# ---- tensors and storages ----------------------------------------------------------------------------
TYPES = ["Double", "Float", "Half", "Byte", "Char", "Short", "Int", "Long"]
NP = {"Double": np.float64, "Float": np.float32, "Half": np.float16, "Byte": np.uint8, "Char": np.int8,
      "Short": np.int16, "Int": np.int32, "Long": np.int64}


def _values(t: str, rng: np.random.Generator, shape) -> np.ndarray:
    if t in ("Double", "Float", "Half"):
        return rng.standard_normal(shape).astype(NP[t])
    info = np.iinfo(NP[t])
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(NP[t])


@pytest.mark.parametrize("ascii, long_size", [(False, 8), (False, 4), (True, 8)],
                         ids=["binary-long8", "binary-long4", "ascii"])
@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_tensors_of_every_element_type(ascii, cuda, long_size):
    rng = np.random.default_rng(7)
    arrays = {t: _values(t, rng, (2, 3, 4)) for t in TYPES}
    if long_size == 4:
        arrays["Long"] = rng.integers(-(2**31), 2**31 - 1, size=(2, 3, 4)).astype(np.int64)
    data = dumps({t: tensor(a, t, cuda) for t, a in arrays.items()}, ascii=ascii, long_size=long_size)
    got = read_t7(data, long_size=long_size)
    for t, a in arrays.items():
        tt = got[t]
        assert isinstance(tt, T7Tensor) and isinstance(tt.storage, T7Storage)
        want_cls = f"torch.Cuda{'' if t == 'Float' else t}Tensor" if cuda else f"torch.{t}Tensor"
        assert tt.class_name == want_cls
        assert tt.array.shape == a.shape and tt.array.dtype == np.dtype(NP[t])
        np.testing.assert_array_equal(tt.array, a)


@pytest.mark.parametrize("ascii", ENCODINGS)
def test_storage_offset_strides_and_sharing(ascii):
    base = np.arange(40, dtype=np.float32) * 0.5
    st_ = Storage(base)
    t1 = Tensor(st_, (3, 4), (1, 3), offset=5)  # a transposed view starting at element 5
    t2 = Tensor(st_, (2, 2, 3), (12, 0, 2), offset=1)  # an expanded (stride 0) view
    t3 = Tensor(st_, (4,), (1,), offset=36)  # the last 4 elements exactly
    got = read_t7(dumps([t1, t2, t3, st_], ascii=ascii)).array_part()
    want1 = np.lib.stride_tricks.as_strided(base[5:], (3, 4), (4, 12))
    want2 = np.lib.stride_tricks.as_strided(base[1:], (2, 2, 3), (48, 0, 8))
    np.testing.assert_array_equal(got[0].array, want1)
    np.testing.assert_array_equal(got[1].array, want2)
    np.testing.assert_array_equal(got[2].array, base[36:])
    assert got[0].storage is got[1].storage is got[3] and got[0].offset == 5
    assert not got[0].array.flags.writeable


@pytest.mark.parametrize("ascii", ENCODINGS)
def test_empty_tensors_and_zero_sized_dims(ascii):
    zero = Tensor(Storage(np.zeros(3, np.float32)), (0, 5), (5, 1))
    got = read_t7(dumps([empty(), empty("Long", cuda=True), zero], ascii=ascii)).array_part()
    assert got[0].array.size == 0 and got[0].storage is None
    assert got[1].class_name == "torch.CudaLongTensor" and got[1].array.size == 0
    assert got[2].array.shape == (0, 5)


@pytest.mark.parametrize(
    "sizes, strides, offset, what",
    [
        ((3, 4), (4, 1), 30, "reaches element"),  # 30 + 11 >= 40
        ((41,), (1,), 0, "reaches element"),
        ((2, 2), (-1, 1), 3, "negative"),
        ((2,), (1,), -1, "negative"),
        ((1 << 20, 1 << 20), (0, 0), 0, "absurd sizes"),  # an absurd expansion of one element
    ],
)
def test_tensor_views_outside_their_storage_are_rejected(sizes, strides, offset, what):
    t = Tensor(Storage(np.zeros(40, np.float32)), sizes, strides, offset=offset)
    with pytest.raises(ModelFormatError, match=what):
        read_t7(dumps(t), long_size=8)


# ---- long size ----------------------------------------------------------------------------------------
def test_four_byte_longs_are_detected_and_can_be_forced():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 5)).astype(np.float32) + 2.0
    data = dumps({"w": tensor(a), "n": tensor(np.arange(1, 7), "Long")}, long_size=4)
    np.testing.assert_array_equal(read_t7(data)["w"].array, a)  # automatic fallback
    np.testing.assert_array_equal(read_t7(data, long_size=4)["n"].array, np.arange(1, 7))
    with pytest.raises(ModelFormatError, match="long_size=4"):
        read_t7(data, long_size=8)
    data8 = dumps({"w": tensor(a)}, long_size=8)
    with pytest.raises(ModelFormatError, match="long_size=8"):
        read_t7(data8, long_size=4)
    with pytest.raises(ValueError, match="long_size"):
        read_t7(data8, long_size=2)


def test_encoding_detection():
    assert detect_encoding(dumps(1.0)) == "binary"
    assert detect_encoding(dumps(1.0, ascii=True)) == "ascii"
    assert read_t7(dumps(1.0, ascii=True), encoding="ascii") == 1.0


# ---- malformed input ----------------------------------------------------------------------------------
def _small_model(ascii: bool = False) -> bytes:
    rng = np.random.default_rng(3)
    conv = Module("nn.SpatialConvolution", {
        "nInputPlane": 2, "nOutputPlane": 3, "kW": 3, "kH": 3, "dW": 1, "dH": 1, "padW": 1, "padH": 1,
        "weight": tensor(rng.standard_normal((3, 2, 3, 3))), "bias": tensor(rng.standard_normal(3)),
        "output": empty(), "name": "conv",
    })
    return dumps(Module("nn.Sequential", {"modules": [conv, Module("nn.ReLU", {"threshold": 0, "val": 0})]}),
                 ascii=ascii)


@pytest.mark.parametrize("ascii", ENCODINGS)
def test_every_truncation_raises_model_format_error(ascii):
    data = _small_model(ascii)
    read_torch(None, data=data)  # the full file is fine
    step = 1 if len(data) < 1200 else 3
    for n in range(0, len(data) - 1, step):
        with pytest.raises(ModelFormatError):
            read_torch(None, data=data[:n])


@pytest.mark.parametrize(
    "data, match",
    [
        (i32(9), "unknown type tag 9"),
        (i32(-1), "unknown type tag -1"),
        (i32(5, 7), "boolean stored as 7"),
        (i32(2, -5), "negative length"),
        (i32(2, 1 << 30) + b"abc", "declares 1073741824 bytes"),
        (i32(3, 1, 1 << 28) + i32(0) * 4, "table declares"),
        (i32(3, 1, -2), "table declares"),
        (i32(4, 1) + lstr(b"V x") + lstr(b"nn.ReLU"), "bad version"),
        (i32(4, 1) + lstr(b"V 1") + lstr(b"nn.Re LU;"), "bad torch class name"),
        (i32(4, 1) + lstr(b"V 1") + lstr(b"torch.FloatStorage") + i64(1 << 50), "declares 1125899906842624"),
        (i32(4, 1) + lstr(b"V 1") + lstr(b"torch.FloatStorage") + i64(-3), "declares -3"),
        (i32(4, 1) + lstr(b"V 1") + lstr(b"torch.FloatTensor") + i32(1 << 20), "absurd rank"),
        (i32(4, 1) + lstr(b"V 1") + lstr(b"torch.FloatTensor") + i32(1) + i64(2, 1, 1) + i32(2) + lstr(b"x"),
         "storage is a str"),
        (i32(4, 1) + lstr(b"V 1") + lstr(b"torch.FloatTensor") + i32(1) + i64(2, 1, 1) + i32(0),
         "has no storage"),
        (i32(3, 1, 1, 0, 1) + f64(1.0), "key is nil"),
        (b"", "empty file"),
        (f64(1.0) + i32(1) + f64(2.0), "unknown type tag 0|bytes left"),
        (i32(1) + f64(2.0) + b"xx", "2 bytes left after the object"),
    ],
)
def test_bad_tags_lengths_and_sizes(data, match):
    with pytest.raises(ModelFormatError, match=match) as ei:
        read_t7(data, long_size=8)
    assert ei.value.offset is not None and "<bytes>" in str(ei.value)


def test_ascii_errors_carry_line_and_column():
    with pytest.raises(ModelFormatError) as ei:
        read_t7(b"3\n1\n1\n2\n1\nx\n1\nzz\n", encoding="ascii")
    assert ei.value.line == 8 and ei.value.col == 1
    with pytest.raises(ModelFormatError, match="out of range|malformed"):
        read_t7(b"4\n1\n3\nV 1\n16\ntorch.IntStorage\n2\n1 99999999999\n")


def test_nesting_depth_is_limited():
    deep: list = []
    cur = deep
    for _ in range(MAX_DEPTH + 5):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(ModelFormatError, match="nested deeper"):
        read_t7(dumps(deep))
    shallow: list = []
    cur = shallow
    for _ in range(MAX_DEPTH // 2 - 2):
        nxt = []
        cur.append(nxt)
        cur = nxt
    read_t7(dumps(shallow))


def test_cyclic_module_trees_and_foreign_objects_fail_cleanly():
    seq = Module("nn.Sequential", {"modules": []})
    seq.fields["modules"].append(seq)
    with pytest.raises(ModelFormatError, match="contains itself"):
        read_torch(None, data=dumps(seq))
    with pytest.raises(ModelFormatError, match="no nn module"):
        read_torch(None, data=dumps({"just": "a table"}))
    with pytest.raises(UnsupportedLayerError, match="torch.Generator"):
        read_torch(None, data=dumps(Module("nn.Sequential", {"modules": [Module("torch.Generator", {})]})))


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_corruption_never_crashes(data):
    base = bytearray(_small_model(data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(base) // 2, len(base)))
    try:
        read_torch(None, data=bytes(base[:cut]))
    except (ModelFormatError, UnsupportedLayerError):
        pass


# ---- the real ENet files -------------------------------------------------------------------------------
def test_enet_cuda_and_cpu_files_hold_the_same_tensors(models):
    gpu = read_t7(require_model(models, "enet_cityscapes_torch/model-best.net").read_bytes())
    cpu = read_t7(require_model(models, "enet_cityscapes_torch/model-best.cpu.net").read_bytes())

    def walk(o, out, seen):
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, T7Tensor):
            out.append(o)
        elif isinstance(o, TorchObject):
            walk(o.fields, out, seen)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v, out, seen)

    tg: list[T7Tensor] = []
    tc: list[T7Tensor] = []
    walk(gpu, tg, set())
    walk(cpu, tc, set())
    assert len(tg) == len(tc) > 300
    names = {t.class_name for t in tg}
    assert {"torch.CudaTensor", "torch.CudaLongTensor"} <= names
    for a, b in zip(tg, tc):
        np.testing.assert_array_equal(a.array, b.array)
        if a.class_name == "torch.CudaLongTensor":
            assert b.class_name == "torch.LongTensor" and a.array.dtype == np.int64
    conv = gpu.get("modules")[1].get("modules")[1]
    assert conv.class_name == "cudnn.SpatialConvolution" and conv.get("weight").array.shape == (13, 3, 3, 3)
