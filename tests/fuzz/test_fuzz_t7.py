"""Fuzzing Torch7 files (binary and ASCII t7) through the whole loader.

Oracles: the error contract; the test-side writer's record log (where every int, long,
double and string of a file starts) for structure-aware truncation and inflation;
tracemalloc for the memory hostile views may cost; the module paths the writer built for
the messages that must name them.
"""

from __future__ import annotations

import sys
import tracemalloc

import fuzzlib as F
import numpy as np
import pytest
from fuzzhyp import bytes_settings, contract_test, fuzz_settings, mutated, random_bytes
from hypothesis import settings
from writers import t7_writer as TW

from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.weights_import.t7 import MAX_DEPTH, read_t7
from refnet.weights_import.torch import read_torch

FUZZ = fuzz_settings(600)


test_mutated_binary_t7_loads_or_raises_a_located_refnet_error = contract_test(mutated("t7"), FUZZ)
test_mutated_ascii_t7_loads_or_raises_a_located_refnet_error = contract_test(
    mutated("t7ascii"), settings(FUZZ, max_examples=F.examples(200)))
test_random_bytes = contract_test(random_bytes("t7", 200), bytes_settings(150))
_seed = F.seed_named


@pytest.mark.parametrize("fmt", ["t7", "t7ascii"])
@pytest.mark.parametrize("name", ["convs", "pool_unpool", "tables"])
def test_truncation_at_every_record_boundary(fmt, name):
    seed = _seed(fmt, name)
    data = seed.files["t7"]
    outcomes = {F.run_case(seed.case(data[:b])) for b in seed.boundaries}
    assert "ok" in outcomes and len(outcomes) > 1, outcomes


@pytest.mark.parametrize("value", [-1, 2**31 - 1, -(2**31), 9, 1 << 20])
def test_every_int_record_set_to_an_extreme(value):
    """Tags, object indices, string lengths, table sizes, ranks: each one hostile in turn."""
    seed = _seed("t7", "pool_unpool")
    data = seed.files["t7"]
    import struct

    for off, kind, _ in seed.meta["records"]:
        if kind == "int":
            F.run_case(seed.case(data[:off] + struct.pack("<i", value) + data[off + 4:]))
        elif kind == "long":
            F.run_case(seed.case(data[:off] + struct.pack("<q", value) + data[off + 8:]))


def _prelu(weight) -> TW.Module:
    return TW.Module("nn.PReLU", {"weight": weight, "nOutputPlane": 0})


@pytest.mark.parametrize("sizes,strides,offset,match", [
    ((4,), (-1,), 0, "negative sizes/strides"),
    ((4,), (1,), 2, "reaches element"),
    ((5,), (1,), 0, "reaches element"),
    ((2**40,), (0,), 0, "absurd sizes|expands to"),
    ((2**31, 2**31), (0, 0), 0, "absurd sizes"),
    ((3, 4), (2**62, 1), 0, "absurd sizes|reaches"),
    ((4,) * 65, (0,) * 65, 0, "absurd rank"),
    ((2**62, 2**62, 0), (0, 0, 0), 0, "absurd sizes"),  # empty, but numpy cannot shape it
    ((4,), (1,), -5, "negative"),
])
def test_hostile_tensor_views_never_read_outside_their_storage(sizes, strides, offset, match):
    st4 = TW.Storage(np.arange(4, dtype=np.float32))
    data = TW.dumps(TW.nn_Sequential(_prelu(TW.Tensor(st4, sizes, strides, offset))))
    with pytest.raises(ModelFormatError, match=match) as ei:
        read_torch("v.t7", data=data)
    assert ei.value.file == "v.t7" and (ei.value.offset is not None or ei.value.layer)


def test_a_view_ending_exactly_at_the_storage_end_reads_the_right_values():
    st4 = TW.Storage(np.arange(6, dtype=np.float32))
    t = read_t7(TW.dumps(TW.Tensor(st4, (2, 2), (1, 2), 1)))  # elements 1,3 / 2,4 (column-major view)
    np.testing.assert_array_equal(t.array, [[1, 3], [2, 4]])


@pytest.mark.parametrize("sizes,strides", [((1, 4), (2**62, 1)), ((4, 1), (1, 2**63 - 1)), ((1,), (-(2**63) + 1,))])
def test_the_stride_of_a_size_one_dim_is_ignored(sizes, strides):
    """Torch never moves along a size-1 dim, whatever its stride; a stride past what a byte
    stride can hold once made numpy's as_strided overflow (found by the long run)."""
    st4 = TW.Storage(np.arange(4, dtype=np.float32))
    data = TW.dumps(TW.Tensor(st4, sizes, strides, 0))
    if strides[-1] < 0:
        with pytest.raises(ModelFormatError, match="negative"):
            read_t7(data)
        return
    t = read_t7(data)
    np.testing.assert_array_equal(t.array.reshape(-1), np.arange(4 if 4 in sizes else 1, dtype=np.float32))


def test_expanded_views_shared_by_many_modules_are_bounded():
    """One float stored, 60 modules each reading it as 4M values: refused, not 1 GB of copies."""
    big = TW.Tensor(TW.Storage(np.zeros(1, np.float32)), (1 << 22,), (0,), 0)
    data = TW.dumps(TW.nn_Sequential(*[TW.Module("nn.PReLU", {"weight": big, "nOutputPlane": 1 << 22})
                                       for _ in range(60)]))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="exceed what a file of its size can hold") as ei:
            read_torch("amp.t7", data=data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20 and len(data) < 8000
    assert ei.value.layer.startswith("modules[")  # the module path


@pytest.mark.parametrize("kind", ["table", "module", "parent"])
def test_cyclic_references_are_refused_with_the_module_path(kind):
    inner = TW.nn_Sequential(TW.nn_ReLU())
    root = TW.nn_Sequential(inner)
    if kind == "table":
        t: dict = {}
        t["self"] = t  # a table holding itself (legal Lua; no module inside)
        data = TW.dumps({"model": root, "loop": t})
        assert F.run_case(F.Case("t7", {"t7": data})) == "ok"
        return
    target = inner if kind == "module" else root
    inner.fields["modules"].append(target)
    data = TW.dumps(root)
    with pytest.raises(ModelFormatError, match="contains itself") as ei:
        read_torch("cyc.t7", data=data)
    assert ei.value.layer == "modules[1].modules[2]" and ei.value.file == "cyc.t7"


@pytest.mark.parametrize("depth", [MAX_DEPTH - 5, MAX_DEPTH + 1, 5000])
def test_deep_nesting_never_raises_recursion_error(depth):
    """Nested tables and nested Sequentials, written by hand (the writer itself would recurse)."""
    import struct

    tables = b"".join(struct.pack("<iii", 3, i + 1, 1) + struct.pack("<id", 1, 1.0) for i in range(depth))
    data = tables + struct.pack("<i", 0)
    F.run_case(F.Case("t7", {"t7": data}))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(400 + len(__import__("inspect").stack()))  # a caller already deep in its stack
    try:
        F.run_case(F.Case("t7", {"t7": data}))
    finally:
        sys.setrecursionlimit(old)
    mod = TW.nn_ReLU()
    for _ in range(min(depth, 150)):
        mod = TW.nn_Sequential(mod)
    F.run_case(F.Case("t7", {"t7": TW.dumps(mod)}))


def test_functions_are_stored_never_run():
    fn = TW.Function(b"\x1bLJ\x02os.execute('touch /tmp/pwned')", {"x": 1.0})
    obj = {"model": TW.nn_Sequential(TW.nn_ReLU()), "hook": fn}
    for ascii_ in (False, True):
        g = read_torch("f.t7", data=TW.dumps(obj, ascii=ascii_))
        assert [n.op for n in g.nodes] == ["relu"]


def test_errors_name_file_offset_module_path_expected_and_found():
    conv = TW.nn_SpatialConvolution(np.random.default_rng(0), 3, 4, 3, 3)
    conv.fields["kW"] = 2.5
    data = TW.dumps(TW.nn_Sequential(TW.nn_ReLU(), TW.nn_Sequential(conv)))
    with pytest.raises(ModelFormatError) as ei:
        read_torch("m.t7", data=data)
    e = ei.value
    assert e.file == "m.t7" and e.layer == "modules[2].modules[1]" and e.expected == "an integer"
    assert "nn.SpatialConvolution.kW = 2.5 is not an integer" in str(e)
    with pytest.raises(ModelFormatError) as ei:  # a malformed stream: byte offset, expected, found
        read_t7(data[:-3], source="m.t7")
    e = ei.value
    assert e.file == "m.t7" and e.offset is not None and e.offset <= len(data)
    assert "but only 13 bytes are left" in str(e) and e.expected == "a storage size that fits in the file"
    # a stream error also says where in the object tree it happened
    assert e.layer == ("(nn.Sequential).modules[2] (nn.Sequential).modules[1] (nn.SpatialConvolution).gradBias "
                       "(torch.FloatTensor) (torch.FloatStorage)"), e.layer
    with pytest.raises(ModelFormatError) as ei:  # ascii: line:col as well
        read_t7(b"3\n1\n1\n1\n1\nbanana\n", source="a.t7")
    e = ei.value
    assert (e.file, e.line, e.col) == ("a.t7", 6, 1) and e.expected is not None
    data = TW.dumps(TW.nn_Sequential(TW.nn_ReLU(), TW.nn_simple("SpatialFractionalMaxPooling")))
    with pytest.raises(UnsupportedLayerError) as ei:
        read_torch("u.t7", data=data)
    assert ei.value.layer == "modules[2]" and ei.value.type == "nn.SpatialFractionalMaxPooling"


def test_many_unpooling_modules_load_in_linear_time():
    """A file of shared pooling/unpooling modules (each lookup was once a scan of all layers)."""
    import time

    pool = TW.nn_SpatialMaxPooling(2, 2)
    data = TW.dumps(TW.nn_Sequential(*([pool] * 20_000 + [TW.nn_SpatialMaxUnpooling(pool)] * 20_000)))
    assert len(data) < 1 << 20
    # CPU time of this process: the contract bounds the loader's work, not what else the machine runs
    t = time.process_time()
    F.run_case(F.Case("t7", {"t7": data}))
    assert time.process_time() - t < 5.0


def test_huge_table_keys_do_not_blow_up_module_paths():
    """A 20,000-entry table used as the key at 45 nesting levels (shared by reference): the
    path labels once held its repr at every level (316 MiB, seconds, from a 480 KB file)."""
    import struct

    def i32(v):
        return struct.pack("<i", v)

    def num(v):
        return i32(1) + struct.pack("<d", v)

    big = i32(3) + i32(2) + i32(20_000) + b"".join(num(i) + num(i) for i in range(1, 20_001))
    levels = b"".join(i32(3) + i32(10 + d) + i32(1) + (big if d == 0 else i32(3) + i32(2)) for d in range(45))
    relu = i32(4) + i32(999) + i32(3) + b"V 1" + i32(7) + b"nn.ReLU" + i32(3) + i32(1000) + i32(0)
    data = levels + relu
    tracemalloc.start()
    try:
        assert F.run_case(F.Case("t7", {"t7": data})) == "ok"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    g = read_torch("k.t7", data=data)
    assert g.meta["module_paths"]["l1_ReLU"].startswith("<LuaTable>[<LuaTable>]")


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.fields.update(nInputPlane=5), r"weight has 108 values \(expected 180 values\)"),
    (lambda m: m.fields.update(bias=TW.tensor(np.zeros(7, np.float32))), r"bias has 7 values"),
    (lambda m: m.fields.update(kW=4), r"weight has 108 values \(expected 144 values\)"),
    (lambda m: m.fields.update(weight=TW.empty()), r"has no tensor 'weight'"),
])
def test_weights_that_contradict_the_module_are_refused_with_its_path(edit, match):
    conv = TW.nn_SpatialConvolution(np.random.default_rng(1), 3, 4, 3, 3)
    edit(conv)
    data = TW.dumps(TW.nn_Sequential(TW.nn_ReLU(), TW.nn_Sequential(TW.nn_Identity(), conv)))
    with pytest.raises(ModelFormatError, match=match) as ei:
        read_torch("w.t7", data=data)
    assert ei.value.layer == "modules[2].modules[2]" and ei.value.file == "w.t7"
