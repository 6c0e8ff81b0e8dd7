"""The ONNX reader on small files written with the onnx package: typed tensor fields, names,
folding of shape subgraphs, opset-dependent rules, dispatch and errors. Oracles: onnxruntime
and values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as H  # noqa: E402
from onnx import numpy_helper as NH  # noqa: E402

import refnet  # noqa: E402
from refnet.errors import ModelFormatError, ShapeError, UnsupportedLayerError  # noqa: E402


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=13, name="m.onnx"):
    g = H.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = H.make_model(g, opset_imports=[H.make_opsetid("", opset)])
    p = tmp_path / name
    p.write_bytes(m.SerializeToString())
    return p


def _vi(name, shape, t=TP.FLOAT):
    return H.make_tensor_value_info(name, t, shape)


def _ort(path, feeds):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


@pytest.mark.parametrize("dtype,field", [(TP.FLOAT, "float_data"), (TP.DOUBLE, "double_data"),
                                         (TP.INT64, "int64_data"), (TP.INT32, "int32_data"), (TP.INT8, "int32_data"),
                                         (TP.UINT8, "int32_data"), (TP.FLOAT16, "int32_data"),
                                         (TP.BFLOAT16, "int32_data"), (TP.UINT64, "uint64_data"),
                                         (TP.BOOL, "int32_data")])
@pytest.mark.parametrize("raw", [False, True])
def test_initializer_dtypes_typed_and_raw(tmp_path, dtype, field, raw):
    from refnet.weights_import.onnx import parse_model, tensor_array

    vals = np.array([[1, 0, 3], [4, 5, 6]], np.float64)
    np_dt = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    arr = vals.astype(np_dt)
    if dtype == TP.BFLOAT16:
        t = H.make_tensor("w", dtype, [2, 3], vals.astype(np.float32).reshape(-1).tolist())
        if raw:
            t = H.make_tensor("w", dtype, [2, 3], (vals.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
                              .tobytes(), raw=True)
    elif raw:
        t = NH.from_array(arr, "w")
    else:
        t = NH.from_array(arr, "w")
        t.ClearField("raw_data")
        flat = arr.reshape(-1)
        if dtype == TP.FLOAT16:
            flat = flat.view(np.uint16)
        getattr(t, field).extend(flat.astype(np.float64 if field in ("float_data", "double_data") else np.int64)
                                 .tolist() if field != "uint64_data" else flat.tolist())
    m = H.make_model(H.make_graph([], "g", [], [], initializer=[t]))
    got = tensor_array(parse_model(m.SerializeToString()).get("graph").get("initializer")[0])
    np.testing.assert_array_equal(got.astype(np.float64), (vals != 0) if dtype == TP.BOOL else vals)


def test_forward_by_onnx_tensor_names_and_layer_names(tmp_path):
    w = NH.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [H.make_node("Conv", ["x", "w"], ["conv_out"], name="conv1", pads=[1, 1, 1, 1]),
             H.make_node("Relu", ["conv_out"], ["relu_out"]),  # unnamed: the layer is named like its output
             H.make_node("TopK", ["relu_out", "k"], ["vals", "idx"], name="top", axis=1)]
    p = _save(tmp_path, nodes, [_vi("x", [1, 3, 5, 5])], [_vi("vals", None), _vi("idx", None, TP.INT64)],
              [w, NH.from_array(np.array([2], np.int64), "k")])
    net = refnet.load_onnx(p)
    assert net.layer_names == ("conv1", "relu_out", "top")
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32)
    got = net.forward(x, outputs=["conv_out", "vals", "idx", "conv1"], precision="float64")
    ref = dict(zip(["vals", "idx"], _ort(p, {"x": x})))
    np.testing.assert_allclose(got["vals"], ref["vals"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["idx"], ref["idx"])
    np.testing.assert_array_equal(got["conv_out"], got["conv1"])
    assert set(net.forward(x)) == set(net.output_names) == {"top", "top:1"}


def test_shape_subgraph_folds_for_the_given_input_shape(tmp_path):
    nodes = [H.make_node("Shape", ["x"], ["s"]), H.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             H.make_node("Unsqueeze", ["n", "ax"], ["n1"]), H.make_node("Concat", ["n1", "m1"], ["t"], axis=0),
             H.make_node("Reshape", ["x", "t"], ["y"])]
    p = _save(tmp_path, nodes, [_vi("x", ["N", 3, "H", "W"])], [_vi("y", None)],
              [NH.from_array(np.array(0, np.int64), "zero"), NH.from_array(np.array([0], np.int64), "ax"),
               NH.from_array(np.array([-1], np.int64), "m1")])
    with pytest.raises(ShapeError, match="input_shapes"):
        refnet.load_onnx(p)  # symbolic dims need shapes
    net = refnet.load_onnx(p, input_shapes={"x": (2, 3, 4, 5)})
    assert [n.op for n in net.graph.nodes] == ["reshape"]  # everything else folded
    x = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(net.forward(x)[net.output_names[0]], x.reshape(2, 60))
    net2 = refnet.load(p, input_shapes=(1, 3, 2, 2))  # .onnx dispatch; one input: a plain shape
    assert net2.infer_shapes()[net2.output_names[0]] == (1, 12)


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_axis_rule_changes_at_opset_13(tmp_path, opset):
    p = _save(tmp_path, [H.make_node("Softmax", ["x"], ["y"], axis=1)], [_vi("x", [2, 3, 4])], [_vi("y", None)],
              opset=opset)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    y = refnet.load_onnx(p).forward(x, precision="float64")["y"]
    if opset < 13:  # flattened to (2, 12), normalised over all 12
        e = np.exp(x.reshape(2, 12) - x.reshape(2, 12).max(1, keepdims=True))
        want = (e / e.sum(1, keepdims=True)).reshape(2, 3, 4)
    else:
        e = np.exp(x - x.max(1, keepdims=True))
        want = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    np.testing.assert_allclose(y, _ort(p, {"x": x.astype(np.float32)})[0], rtol=1e-5)


def test_batchnorm_training_attributes_are_ignored(tmp_path):
    ps = [NH.from_array(v.astype(np.float32), n) for n, v in
          (("s", np.array([1.0, 2.0])), ("b", np.array([0.5, -1.0])), ("m", np.array([0.1, 0.2])),
           ("v", np.array([1.0, 4.0])))]
    p = _save(tmp_path, [H.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=0.0,
                                     momentum=0.5)], [_vi("x", [1, 2, 1, 1])], [_vi("y", None)], ps, opset=9)
    y = refnet.load_onnx(p).forward(np.array([[[[1.0]], [[2.0]]]]), precision="float64")["y"]
    np.testing.assert_allclose(y.reshape(-1), [(1 - 0.1) * 1 + 0.5, (2 - 0.2) / 2 * 2 - 1.0])


def test_unsupported_op_lists_every_known_op(tmp_path):
    p = _save(tmp_path, [H.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")], [_vi("x", [2, 2])],
              [_vi("y", None)])
    with pytest.raises(UnsupportedLayerError) as e:
        refnet.load_onnx(p)
    assert e.value.type == "Einsum" and {"Conv", "Resize", "NonMaxSuppression", "Shape"} <= set(e.value.supported)


def test_control_flow_and_other_domains_are_refused_clearly(tmp_path):
    body = H.make_graph([], "b", [], [])
    p = _save(tmp_path, [H.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)],
              [_vi("c", [1], TP.BOOL)], [_vi("y", None)])
    with pytest.raises(UnsupportedLayerError, match="subgraph"):
        refnet.load_onnx(p)
    p = _save(tmp_path, [H.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")], [_vi("x", [1])],
              [_vi("y", None)], name="ms.onnx")
    with pytest.raises(UnsupportedLayerError, match="default ONNX domain"):
        refnet.load_onnx(p)


def test_malformed_files_give_located_errors(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x3a\xff\xff\xff\x0f")  # graph field with a 4 GB length
    with pytest.raises(ModelFormatError) as e:
        refnet.load_onnx(p)
    assert e.value.file == str(p) and e.value.offset is not None
    t = NH.from_array(np.zeros(6, np.float32), "w")
    t.dims[:] = [7]
    p = _save(tmp_path, [H.make_node("Identity", ["x"], ["y"])], [_vi("x", [1])], [_vi("y", None)], [t],
              name="short.onnx")
    with pytest.raises(ModelFormatError, match="raw_data has 24 bytes"):
        refnet.load_onnx(p)


def test_readnetfromonnx_facade(tmp_path):
    from refnet import dnn

    p = _save(tmp_path, [H.make_node("Sigmoid", ["x"], ["y"])], [_vi("x", [1, 2])], [_vi("y", None)])
    net = dnn.readNetFromONNX(str(p))
    net.setInput(np.array([[0.0, 100.0]], np.float32))
    np.testing.assert_allclose(net.forward(), [[0.5, 1.0]])


def test_readnetfromonnx_with_symbolic_dims_is_sized_by_setinput(tmp_path):
    """cv2.dnn.readNetFromONNX reads a model whose input dims are symbolic and sizes it at the
    first forward; the facade builds its graph for the blob given to setInput (again for a blob
    of another shape) instead of refusing to read the file."""
    import cv2

    from refnet import dnn

    nodes = [H.make_node("Relu", ["x"], ["r"]), H.make_node("Flatten", ["r"], ["y"], axis=1)]
    p = str(_save(tmp_path, nodes, [_vi("x", ["N", 3, "H", "W"])], [_vi("y", ["N", "M"])]))
    ours, ref = dnn.readNetFromONNX(p), cv2.dnn.readNetFromONNX(p)
    assert not ours.empty() and not ref.empty()
    with pytest.raises(cv2.error, match="symbolic dims.*call setInput"):  # no graph before a shape is known
        ours.getLayerNames()
    # getLayersShapes / getFLOPS with a shape build it, as cv2 answers them for that shape
    fresh = dnn.readNetFromONNX(p)
    got, want = fresh.getLayersShapes((2, 3, 4, 5)), ref.getLayersShapes((2, 3, 4, 5))
    assert [s.tolist() for s in got[2][-1]] == [s.tolist() for s in want[2][-1]] == [[2, 60]]
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 4, 5), (2, 3, 6, 2)):
        x = rng.standard_normal(shape).astype(np.float32)
        ours.setInput(x)
        ref.setInput(x)
        got, want = ours.forward(), ref.forward()
        assert got.shape == want.shape == (shape[0], 3 * shape[2] * shape[3])
        np.testing.assert_array_equal(got, want)


def test_readnetfromonnx_is_like_the_other_readers(tmp_path):
    """readNetFromONNX applies dnn.quirks at the read like the other readers (changing it
    afterwards warns for the ONNX net too), and its errors are also cv2.error, as cv2's are."""
    import gc
    import warnings

    import cv2

    from refnet import dnn

    p = _save(tmp_path, [H.make_node("Sigmoid", ["x"], ["y"])], [_vi("x", [1, 2])], [_vi("y", None)])
    assert dnn.quirks == "none"
    net = dnn.readNetFromONNX(str(p))
    try:
        with pytest.warns(UserWarning, match=r"no effect on the \d+ net.*quirks 'none'"):
            dnn.quirks = "cv2"
    finally:
        del net
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dnn.quirks = "none"
    missing, junk = tmp_path / "missing.onnx", tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    for bad in (missing, junk):
        with pytest.raises(cv2.error):
            cv2.dnn.readNetFromONNX(str(bad))
        with pytest.raises(cv2.error) as ei:
            dnn.readNetFromONNX(str(bad))
        assert isinstance(ei.value, (OSError, ModelFormatError)) and bad.name in str(ei.value)


@pytest.mark.parametrize("fmod,want", [(0, [0, -2, 5, 0, 2, 3]),  # the divisor's sign (Python's %)
                                       (1, [0, 1, 5, 0, -1, 3])])  # the dividend's sign (C fmod)
def test_folded_mod_follows_the_fmod_attribute(tmp_path, fmod, want):
    """Mod on constants (a shape computation) is folded at load: fmod=0, the default, is the
    remainder with the divisor's sign, not C's fmod (onnx's test_mod_mixed_sign_int64 values)."""
    a, b = np.array([-4, 7, 5, 4, -7, 8], np.int64), np.array([2, -3, 8, -2, 3, 5], np.int64)
    nodes = [H.make_node("Mod", ["a", "b"], ["m"], fmod=fmod), H.make_node("Cast", ["m"], ["mf"], to=TP.FLOAT),
             H.make_node("Add", ["x", "mf"], ["y"])]
    p = _save(tmp_path, nodes, [_vi("x", [6])], [_vi("y", None)], [NH.from_array(a, "a"), NH.from_array(b, "b")])
    x = np.zeros(6, np.float32)
    y = refnet.load_onnx(p).forward(x, precision="float64")["y"]
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(_ort(p, {"x": x})[0], want)


def test_an_opset_newer_than_released_is_refused_naming_it(tmp_path):
    from refnet.weights_import.onnx import MAX_OPSET

    nodes = [H.make_node("Relu", ["x"], ["y"])]
    p = _save(tmp_path, nodes, [_vi("x", [2])], [_vi("y", None)], opset=MAX_OPSET)
    assert refnet.load_onnx(p).forward(np.array([-1.0, 2.0]))["y"].tolist() == [0.0, 2.0]
    p = _save(tmp_path, nodes, [_vi("x", [2])], [_vi("y", None)], opset=99, name="future.onnx")
    with pytest.raises(ModelFormatError, match="opset version 99"):  # not run with opset 28's rules
        refnet.load_onnx(p)


@pytest.mark.parametrize("op,want", [("ReduceMax", -np.inf), ("ReduceMin", np.inf)])
def test_folded_min_max_of_an_empty_set_is_the_identity(tmp_path, op, want):
    """ReduceMax/ReduceMin over an empty axis of a constant (folded at load) is -inf/+inf, as at
    run time and in onnx's test_reduce_max_empty_set; the fold raised numpy's 'zero-size array'."""
    nodes = [H.make_node(op, ["c", "axes"], ["r"], keepdims=1), H.make_node("Add", ["x", "r"], ["y"])]
    p = _save(tmp_path, nodes, [_vi("x", [2, 1, 4])], [_vi("y", None)],
              [NH.from_array(np.zeros((2, 0, 4), np.float32), "c"), NH.from_array(np.array([1], np.int64), "axes")],
              opset=18)
    x = np.ones((2, 1, 4), np.float32)
    y = refnet.load_onnx(p).forward(x, precision="float64")["y"]
    np.testing.assert_array_equal(y, np.full((2, 1, 4), want))
    np.testing.assert_array_equal(_ort(p, {"x": x})[0], np.full((2, 1, 4), want, np.float32))


@pytest.mark.parametrize("start,end,step,want", [(-7, -7, -2, [0]), (-5, -10, -1, [0]), (-6, -8, -3, [0]),
                                                 (1, -10, -1, [1, 0]), (9, 0, -2, [3, 1])])
@pytest.mark.parametrize("folded", [False, True])
def test_slice_negative_step_clamps_start_to_zero(tmp_path, start, end, step, want, folded):
    """Negative steps: a start before the axis clamps to 0 (the spec's [0, dim-1]), not to -1,
    which Python slicing read as the last index. Run time and folded (constant data) alike."""
    data = np.arange(4, dtype=np.float32)
    inits = [NH.from_array(np.array([v], np.int64), k) for k, v in (("s", start), ("e", end), ("t", step))]
    if folded:  # Slice of a constant, then added to the input
        nodes = [H.make_node("Slice", ["c", "s", "e", "", "t"], ["sl"]), H.make_node("Add", ["x", "sl"], ["y"])]
        inits.append(NH.from_array(data, "c"))
        x = np.zeros(len(want), np.float32)
    else:
        nodes = [H.make_node("Slice", ["x", "s", "e", "", "t"], ["y"])]
        x = data
    p = _save(tmp_path, nodes, [_vi("x", list(x.shape))], [_vi("y", None)], inits)
    for precision in ("float64", "float32"):
        np.testing.assert_array_equal(refnet.load_onnx(p).forward(x, precision=precision)["y"], want)
    np.testing.assert_array_equal(_ort(p, {"x": x})[0], want)


@pytest.mark.parametrize("op,want", [("ReduceL1", np.abs), ("ReduceL2", np.abs), ("ReduceSumSquare", np.square),
                                     ("ReduceLogSum", np.log), ("ReduceLogSumExp", lambda v: v),
                                     ("ReduceMean", lambda v: v)])
def test_reduce_noop_with_empty_axes_keeps_the_elementwise_part(tmp_path, op, want):
    """noop_with_empty_axes=1 and no axes: nothing is reduced, but 'other operations will be
    performed' (the spec: ReduceSumSquare acts as a vanilla Square); refnet returned the input."""
    p = _save(tmp_path, [H.make_node(op, ["x"], ["y"], noop_with_empty_axes=1)], [_vi("x", [2, 3])],
              [_vi("y", None)], opset=18)
    x = np.array([[-2.0, 0.5, 3.0], [1.5, -0.25, 4.0]])
    if op == "ReduceLogSum":
        x = np.abs(x)
    y = refnet.load_onnx(p).forward(x, precision="float64")["y"]
    np.testing.assert_allclose(y, want(x), rtol=1e-12)
    np.testing.assert_allclose(_ort(p, {"x": x.astype(np.float32)})[0], want(x), rtol=1e-6)


@pytest.mark.parametrize("to", [TP.FLOAT16, TP.BFLOAT16])
@pytest.mark.parametrize("folded", [False, True])
def test_cast_to_16_bit_floats_rounds(tmp_path, to, folded):
    """Cast to float16/bfloat16 and back rounds to that type's values, nearest and ties to even
    (refnet kept the value: a false DIFFER against onnxruntime in `refnet compare` on
    mixed-precision graphs). Oracles: NumPy's float16 conversion; bfloat16 worked by hand
    (7 mantissa bits: steps of 2**-7 at 1); onnxruntime."""
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1.005, -2.3, 1e-3, 70000.0], np.float32)
    if to == TP.FLOAT16:
        with np.errstate(over="ignore"):  # 70000 -> inf
            want = x.astype(np.float16).astype(np.float32)
    else:
        want = np.array([1.0, 1.015625, 1.0078125, -2.296875, 0.00099945068359375, 70144.0], np.float32)
    cast = [H.make_node("Cast", ["c" if folded else "x"], ["h"], to=to), H.make_node("Cast", ["h"], ["f"], to=TP.FLOAT)]
    if folded:
        nodes = cast + [H.make_node("Add", ["x", "f"], ["y"])]
        p = _save(tmp_path, nodes, [_vi("x", [6])], [_vi("y", None)], [NH.from_array(x, "c")])
        feed = np.zeros(6, np.float32)
    else:
        nodes = cast + [H.make_node("Identity", ["f"], ["y"])]
        p = _save(tmp_path, nodes, [_vi("x", [6])], [_vi("y", None)])
        feed = x
    for precision in ("float64", "float32"):
        np.testing.assert_array_equal(refnet.load_onnx(p).forward(feed, precision=precision)["y"], want)
    np.testing.assert_array_equal(_ort(p, {"x": feed})[0], want)


@pytest.mark.parametrize("to", [TP.FLOAT16, TP.BFLOAT16])
@pytest.mark.parametrize("target", ["initializer", "input", "cast"])
@pytest.mark.parametrize("folded", [False, True])
def test_castlike_to_16_bit_floats_rounds(tmp_path, to, target, folded):
    """CastLike whose target is a float16/bfloat16 tensor (an initializer, a graph input, or a
    Cast's output) rounds to that type's values like Cast does; refnet holds such tensors as
    float32 and CastLike kept the value. Oracles: NumPy's float16 conversion, bfloat16 by hand
    (as in the Cast test above), onnxruntime."""
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1.005, -2.3, 1e-3, 70000.0], np.float32)
    if to == TP.FLOAT16:
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).astype(np.float32)
    else:
        want = np.array([1.0, 1.015625, 1.0078125, -2.296875, 0.00099945068359375, 70144.0], np.float32)
    inits = [NH.from_array(x, "c")] if folded else []
    nodes, inputs, feeds = [], [_vi("x", [6])], {"x": np.zeros(6, np.float32) if folded else x}
    if target == "initializer":
        inits.append(H.make_tensor("like", to, [1], [0]))
    elif target == "input":
        inputs.append(H.make_tensor_value_info("like", to, [1]))
        feeds["like"] = np.zeros(1, np.float32)
    else:
        inits.append(NH.from_array(np.zeros(1, np.float32), "like0"))
        nodes.append(H.make_node("Cast", ["like0"], ["like"], to=to))
    nodes += [H.make_node("CastLike", ["c" if folded else "x", "like"], ["h"]),
              H.make_node("Cast", ["h"], ["f"], to=TP.FLOAT)]
    nodes.append(H.make_node("Add", ["x", "f"], ["y"]) if folded else H.make_node("Identity", ["f"], ["y"]))
    p = _save(tmp_path, nodes, inputs, [_vi("y", None)], inits, opset=15)
    net = refnet.load_onnx(p)
    for precision in ("float64", "float32"):
        np.testing.assert_array_equal(net.forward(feeds, precision=precision)["y"], want)
    if target == "input":  # onnxruntime takes the input in its own type (NumPy has no bfloat16)
        if to == TP.BFLOAT16:
            return
        feeds["like"] = feeds["like"].astype(np.float16)
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)


@pytest.mark.parametrize("t,want", [(TP.INT64, [1.0, -2.0, 3.0, 0.0]), (TP.INT32, [1.0, -2.0, 3.0, 0.0]),
                                    (TP.BOOL, [1.0, 1.0, 1.0, 0.0]),
                                    (TP.FLOAT16, [1.7001953125, -2.5, 3.19921875, 0.0])])
def test_forward_feeds_an_input_the_values_its_declared_type_holds(tmp_path, t, want):
    """net.forward on an input the model declares int64/int32/bool/float16, given floats: the
    values that type holds (toward zero as NumPy's astype, != 0, nearest float16), as onnxruntime
    sees the same blob converted to the input's type; refnet computed on the unrounded floats
    (`refnet compare` already rounded its blobs). Oracles: hand values; onnxruntime."""
    nodes = [H.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)]
    p = _save(tmp_path, nodes, [_vi("x", [4], t)], [_vi("y", None)])
    x = np.array([1.7, -2.5, 3.2, 0.0])
    for precision in ("float64", "float32"):
        np.testing.assert_array_equal(refnet.load_onnx(p).forward(x, precision=precision)["y"], want)
    np.testing.assert_array_equal(_ort(p, {"x": x.astype(H.tensor_dtype_to_np_dtype(t))})[0], want)


@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 3, 0.5]])
def test_resize_nearest_keeps_an_inf_where_it_is_copied(tmp_path, scales):
    """Nearest Resize copies inputs: an inf in the input is inf where a copy of it lands and
    nowhere else (the one-hot matrix product made NaN of 0 * inf along its row). Oracle:
    onnxruntime."""
    nodes = [H.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")]
    p = _save(tmp_path, nodes, [_vi("x", [1, 2, 4, 6])], [_vi("y", None)],
              [NH.from_array(np.array(scales, np.float32), "s")])
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 6)).astype(np.float32)
    x[0, 1, 2, 2] = np.inf
    want = _ort(p, {"x": x})[0]
    assert np.isinf(want).any()
    for precision in ("float64", "float32"):
        np.testing.assert_array_equal(refnet.load_onnx(p).forward(x, precision=precision)["y"], want)


def test_a_huge_declared_input_is_refused_saying_the_limit(tmp_path):
    """A declared 1x3x40000x40000 input (4.8e9 elements) is refused at load, the message giving the
    limit (it said 'expected None')."""
    p = _save(tmp_path, [H.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 3, 40000, 40000])], [_vi("y", None)])
    with pytest.raises(ShapeError) as e:
        refnet.load_onnx(p)
    assert "at most 2147483647 elements" in str(e.value) and "None" not in str(e.value)


@pytest.mark.parametrize("auto_pad,stride,want", [
    ("SAME_UPPER", 3, [0, 1, 0, 0, 2, 0, 0, 3, 0]),  # total padding 3*2 + 1 - 9 = -2: one zero row each side
    ("SAME_LOWER", 3, [0, 1, 0, 0, 2, 0, 0, 3, 0]),
    ("SAME_UPPER", 2, [0, 1, 0, 2, 0, 3]),  # total -1: start -1 // 2 = -1 (onnx's reference floors)
    ("SAME_LOWER", 2, [1, 0, 2, 0, 3, 0]),  # start -1 - (-1 // 2) = 0, end -1
])
def test_convtranspose_same_with_a_kernel_smaller_than_the_stride(tmp_path, auto_pad, stride, want):
    """auto_pad SAME_*: output = in * stride; when that is larger than the full output (kernel 1,
    stride 3) the total padding is negative and split as the spec writes it, zero rows at both
    ends; refnet put every extra row at the end. Hand values; onnx's reference evaluator (2-D)."""
    from onnx.reference import ReferenceEvaluator

    nodes = [H.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[1], strides=[stride], auto_pad=auto_pad)]
    p = _save(tmp_path, nodes, [_vi("x", [1, 1, 3])], [_vi("y", None)],
              [NH.from_array(np.ones((1, 1, 1), np.float32), "w")], opset=18)
    x = np.array([[[1.0, 2.0, 3.0]]], np.float32)
    for precision in ("float64", "float32"):
        np.testing.assert_array_equal(refnet.load_onnx(p).forward(x, precision=precision)["y"].ravel(), want)
    w2 = np.random.default_rng(8).standard_normal((2, 3, 1, 2)).astype(np.float32)
    node = H.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[1, 2], strides=[stride, 3], auto_pad=auto_pad)
    p2 = _save(tmp_path, [node], [_vi("x", [1, 2, 3, 4])], [_vi("y", None)], [NH.from_array(w2, "w")], opset=18,
               name="m2.onnx")
    x2 = np.random.default_rng(9).standard_normal((1, 2, 3, 4)).astype(np.float32)
    ref = ReferenceEvaluator(onnx.load(str(p2))).run(None, {"x": x2})[0]
    np.testing.assert_allclose(refnet.load_onnx(p2).forward(x2, precision="float64")["y"], ref, rtol=1e-5, atol=1e-6)
