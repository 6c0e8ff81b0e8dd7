"""Fuzzing the ONNX reader (protobuf wire + the ONNX schema + the op table + load-time folding).

Oracles: the error contract (fuzzlib.run_case); fuzzlib's wire walker for field and length
positions; tracemalloc for the memory a hostile size may cost; onnxruntime for the seeds
themselves (a seed must load and agree before its mutants mean anything).
"""

from __future__ import annotations

import tracemalloc

import fuzz_onnx as FO
import fuzzlib as F
import numpy as np
import pytest
from fuzzhyp import bytes_settings, contract_test, fuzz_settings, mutated, random_bytes

pytest.importorskip("onnx")

FUZZ = fuzz_settings(1200)


def test_seeds_load_and_agree_with_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    import refnet
    from refnet.net import Net

    for seed in FO.onnx_seeds():
        net = Net(FO.load(seed.files["onnx"]))
        shape = net.input_shapes["x"]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(seed.files["onnx"], so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        ref = dict(zip(names, sess.run(names, {"x": x})))
        got = net.forward(x, outputs=names, precision="float64")
        for n in names:
            np.testing.assert_allclose(got[n], ref[n], rtol=1e-5, atol=1e-6, err_msg=f"{seed.name}:{n}")
        assert refnet  # noqa: S101 - imported for the package's lazy loaders


test_mutated_onnx_loads_or_raises_a_located_refnet_error = contract_test(mutated("onnx"), FUZZ)
test_random_bytes = contract_test(random_bytes("onnx", 400), bytes_settings(200))


@pytest.mark.parametrize("name", [s.name for s in FO.onnx_seeds()])
def test_truncation_at_every_field_boundary(name):
    seed = next(s for s in FO.onnx_seeds() if s.name == name)
    data = seed.files["onnx"]
    outcomes = {F.run_case(seed.case(data[:b])) for b in seed.boundaries}
    assert "ok" in outcomes and "ModelFormatError" in outcomes, outcomes


@pytest.mark.parametrize("n", [2**31, 2**40, 2**63, 2**64 - 1])
def test_inflated_lengths_allocate_nothing(n):
    """Every length varint inflated to a huge value: a located truncation error, no allocation."""
    seed = FO.onnx_seeds()[0]
    data = seed.files["onnx"]
    for f in [f for f in seed.meta["fields"] if f.len_at >= 0]:
        bad = data[: f.len_at] + F._varint(n) + data[f.payload:]
        tracemalloc.start()
        try:
            assert F.run_case(seed.case(bad)) == "ModelFormatError"
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 << 20


def test_huge_constant_of_shape_is_refused_without_allocating():
    import onnx
    from onnx import helper as H
    from onnx import numpy_helper as NH

    m = onnx.ModelProto()
    m.CopyFrom(FO._models()["shape_subgraph"])
    for t in m.graph.initializer:
        if t.name == "cs":
            t.CopyFrom(NH.from_array(np.array([1 << 20, 1 << 20], np.int64), "cs"))
    assert H  # noqa: S101
    tracemalloc.start()
    try:
        assert F.run_case(F.Case("onnx", {"onnx": m.SerializeToString()})) == "ModelFormatError"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def _refused_with_peak(data: bytes) -> int:
    """Read the ONNX file ``data`` (refused: a ModelFormatError); the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    try:
        assert F.run_case(F.Case("onnx", {"onnx": data})) == "ModelFormatError"
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _folding_model(nodes, inits) -> bytes:
    """x -> Relu -> y, plus ``nodes`` computing constants at load from ``inits`` (int64 arrays)."""
    from onnx import TensorProto as T
    from onnx import helper as H
    from onnx import numpy_helper as NH

    g = H.make_graph(nodes + [H.make_node("Relu", ["x"], ["y"])], "g",
                     [H.make_tensor_value_info("x", T.FLOAT, [1, 3, 4, 4])],
                     [H.make_tensor_value_info("y", T.FLOAT, None)],
                     initializer=[NH.from_array(np.asarray(v, np.int64), k) for k, v in inits.items()])
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _int8_constant_of_shape(shape_input: str, out: str, value: int = 1):
    from onnx import TensorProto as T
    from onnx import helper as H

    return H.make_node("ConstantOfShape", [shape_input], [out], value=H.make_tensor("v", T.INT8, [1], [value]))


@pytest.mark.parametrize("case", ["gather", "concat", "nonzero"])
def test_folds_whose_size_follows_from_values_are_refused_before_computing(case):
    """Folded results sized by index counts, input counts or non-zeros: Gather of 2^16 rows of a
    1 MiB int8 table (64 MiB), Concat of 64 views of one 1 MiB constant (64 MiB), NonZero of
    2^22 ones in rank 5 (160 MiB of int64). Each is over MAX_FOLDED (2^24 elements): refused
    from the shapes and a count, not computed and then measured."""
    from onnx import TensorProto as T
    from onnx import helper as H

    if case == "gather":
        nodes = [_int8_constant_of_shape("s", "t"),
                 H.make_node("ConstantOfShape", ["si"], ["i"], value=H.make_tensor("z", T.INT64, [1], [0])),
                 H.make_node("Gather", ["t", "i"], ["g"], axis=0)]
        inits = {"s": [1024, 1024], "si": [1 << 16]}
    elif case == "concat":
        nodes = [_int8_constant_of_shape("s", "t"), H.make_node("Concat", ["t"] * 64, ["g"], axis=0)]
        inits = {"s": [1 << 20]}
    else:
        nodes = [_int8_constant_of_shape("s", "t"), H.make_node("NonZero", ["t"], ["g"])]
        inits = {"s": [1, 1, 1, 1, 1 << 22]}
    peak = _refused_with_peak(_folding_model(nodes, inits))
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB"


def test_folded_constants_are_bounded_in_all():
    """40 ConstantOfShape nodes of 2^24 int8 each (16 MiB, each under MAX_FOLDED) in a file of
    ~1 KB: 640 MiB computed at load. The reader stops past MAX_FOLDED_BYTES (256 MiB) in all."""
    from refnet.weights_import.onnx import MAX_FOLDED_BYTES

    peak = _refused_with_peak(_folding_model([_int8_constant_of_shape("s", f"c{i}") for i in range(40)],
                                             {"s": [1 << 24]}))
    assert peak < MAX_FOLDED_BYTES + (32 << 20), f"{peak / 2**20:.0f} MiB"


def test_external_data_is_checked_against_the_memory_budget_before_reading(tmp_path):
    """An initializer of 2^28 float32 (1 GiB) in a sparse external file (a few bytes on disk),
    under a 256 MiB memory budget: a BudgetError naming the tensor, nothing read (it was read
    whole, then copied: MemoryError, or 2 GiB, without an address-space limit)."""
    import onnx

    import refnet
    from refnet.errors import BudgetError
    from refnet.runtime import budget

    n = 1 << 28
    m = onnx.ModelProto()
    m.CopyFrom(FO._models()["cnn"])
    t = m.graph.initializer.add()
    t.name, t.data_type, t.data_location = "big", onnx.TensorProto.FLOAT, onnx.TensorProto.EXTERNAL
    t.dims.append(n)
    for k, v in (("location", "big.bin"), ("length", str(4 * n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(4 * n)
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    budget.set_memory_budget("256MiB")
    tracemalloc.start()
    try:
        with pytest.raises(BudgetError, match="'big'"):
            refnet.load_onnx(tmp_path / "m.onnx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        budget.set_memory_budget()
    assert peak < 64 << 20


def test_external_data_may_not_leave_the_model_folder(tmp_path):
    import onnx
    from onnx import numpy_helper as NH

    import refnet
    from refnet.errors import ModelFormatError

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(108, np.float32).tobytes())
    d = tmp_path / "model"
    d.mkdir()
    (d / "w.bin").write_bytes(np.arange(108, dtype=np.float32).tobytes())
    for loc, ok in (("w.bin", True), ("../secret.bin", False), (str(secret), False)):
        m = onnx.ModelProto()
        m.CopyFrom(FO._models()["cnn"])
        t = next(t for t in m.graph.initializer if t.name == "w")
        t.CopyFrom(NH.from_array(np.zeros((4, 3, 3, 3), np.float32), "w"))
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", loc), ("length", str(108 * 4))):
            e = t.external_data.add()
            e.key, e.value = k, v
        path = d / "m.onnx"
        path.write_bytes(m.SerializeToString())
        if ok:
            net = refnet.load_onnx(path)
            np.testing.assert_array_equal(net.graph.node("c").params["weight"].reshape(-1), np.arange(108))
        else:
            with pytest.raises(ModelFormatError, match="leaves|outside"):
                refnet.load_onnx(path)
