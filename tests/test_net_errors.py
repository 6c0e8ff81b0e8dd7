"""Errors of shape inference, the executor and graph validation: what they name and what they
say was expected.

* a tensor of more than 2**31 - 1 elements (Caffe's and cv2.dnn's int blob count) is refused
  at shape inference, before anything is allocated, naming the layer and the shape;
* a ShapeError from a layer names the net input shapes the user gave, keeping the layer,
  ``expected`` and ``got`` of the original error;
* every graph validation error says what was expected.
"""

from __future__ import annotations

import numpy as np
import pytest
from writers.caffe_writer import Layer, NetSpec, write_net

import refnet
import refnet.kernels as K
from refnet.errors import ModelFormatError, ShapeError
from refnet.graph import Graph, Node
from refnet.net import Net
from refnet.runtime import plan as plan_module

INT_MAX = 2**31 - 1


# ---- the element-count limit ---------------------------------------------------------------------
def test_the_limit_is_caffes_int_max():
    assert plan_module.MAX_TENSOR_ELEMENTS == INT_MAX


def test_caffe_conv_with_a_huge_pad_is_refused_by_shape_inference_and_forward(tmp_path):
    w = np.ones((1, 1, 1, 1), np.float32)
    spec = NetSpec([Layer("conv", "Convolution", ["data"], ["conv"],
                          {"convolution_param": {"num_output": 1, "kernel_size": 1, "pad": INT_MAX,
                                                 "bias_term": False}}, [w])],
                   inputs={"data": (1, 1, 4, 4)})
    net = refnet.load_caffe(*write_net(spec, tmp_path))
    side = 4 + 2 * INT_MAX
    with pytest.raises(ShapeError) as ei:
        net.infer_shapes()
    e = ei.value
    assert e.layer == "conv"
    assert e.got == (1, 1, side, side)
    assert "2**31 - 1" in e.expected and "2,147,483,647" in e.expected and "pad" in e.expected
    assert str((1, 1, side, side)) in str(e) and "net input 'data' has shape (1, 1, 4, 4)" in str(e)
    for precision in ("float32", "float64"):  # refused before the executor allocates anything
        with pytest.raises(ShapeError, match="2,147,483,647 elements") as ei:
            net.forward(np.zeros((1, 1, 4, 4), np.float32), precision=precision)
        assert ei.value.layer == "conv"


def test_limit_is_inclusive_and_checked_on_every_layer_output():
    shapes = Net(Graph([Node("relu", "relu", ["data"], ["relu"])], ["data"],
                       {"data": (1, 1, 1, INT_MAX)})).infer_shapes()
    assert shapes["relu"] == (1, 1, 1, INT_MAX)  # exactly INT_MAX elements: fine
    with pytest.raises(ShapeError) as ei:
        Net(Graph([Node("relu", "relu", ["data"], ["relu"])], ["data"], {"data": (1, 1, 1, INT_MAX + 1)})
            ).infer_shapes()
    assert ei.value.layer == "relu" and ei.value.got == (1, 1, 1, INT_MAX + 1)
    # a later layer: the tensor it makes from an allowed one
    net = Net(Graph([Node("relu", "relu", ["data"], ["relu"]),
                     Node("cat", "concat", ["relu", "relu"], ["cat"], {"axis": 1})],
                    ["data"], {"data": (1, 1, 2**15, 2**15)}))
    with pytest.raises(ShapeError) as ei:
        net.infer_shapes()
    assert ei.value.layer == "cat" and ei.value.got == (1, 2, 2**15, 2**15)
    assert net.infer_shapes({"data": (1, 1, 2**15, 2**15 - 1)})["cat"] == (1, 2, 2**15, 2**15 - 1)


# ---- the net inputs in layer errors ---------------------------------------------------------------
def _conv_pool_net(rng):
    w = rng.normal(size=(4, 3, 3, 3))
    nodes = [Node("conv1", "conv", ["data"], ["conv1"], {}, {"weight": w}),
             Node("pool1", "max_pool", ["conv1"], ["pool1", "pool1:1"], {"kernel": (4, 4), "stride": (4, 4)})]
    return Net(Graph(nodes, ["data"], {"data": (1, 3, 16, 16)}))


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_layer_shape_error_names_the_net_input_shape_and_keeps_its_fields(rng, precision):
    net = _conv_pool_net(rng)
    x = np.zeros((1, 3, 5, 5))  # conv1 -> 3x3, too small for the 4x4 pooling window
    with pytest.raises(ShapeError) as ei:
        net.forward(x, precision=precision)
    e = ei.value
    assert e.layer == "pool1"
    assert e.inputs == {"data": (1, 3, 5, 5)}
    assert "net input 'data' has shape (1, 3, 5, 5)" in str(e) and "layer 'pool1'" in str(e)
    # the kernel-level error's own fields and message survive
    assert e.expected is not None and e.got is not None
    assert f"(expected {e.expected}, got {e.got})" in str(e) and e.message in str(e)
    assert str(e).count("expected") == 1 and str(e).count("layer 'pool1'") == 1
    with pytest.raises(ShapeError) as ei2:
        net.infer_shapes((1, 3, 5, 5))
    assert (ei2.value.layer, ei2.value.expected, ei2.value.got, ei2.value.inputs) == (
        e.layer, e.expected, e.got, e.inputs)
    assert net.forward(np.zeros((1, 3, 6, 6)), precision=precision)["pool1"].shape == (1, 4, 1, 1)


def test_several_net_inputs_are_all_named(rng):
    g = Graph([Node("sum", "eltwise", ["a", "b"], ["sum"], {"operation": "sum"})], ["a", "b"],
              {"a": (1, 2, 4, 4), "b": (1, 2, 4, 4)})
    net = Net(g)
    with pytest.raises(ShapeError) as ei:
        net.forward({"a": np.zeros((1, 2, 4, 4)), "b": np.zeros((1, 2, 4, 5))})
    e = ei.value
    assert e.layer == "sum" and e.inputs == {"a": (1, 2, 4, 4), "b": (1, 2, 4, 5)}
    assert "net inputs: 'a' has shape (1, 2, 4, 4), 'b' has shape (1, 2, 4, 5)" in str(e)


def test_run_time_kernel_shape_error_gets_the_layer_and_the_inputs(rng, monkeypatch):
    def refuse(x):
        raise ShapeError("sigmoid refuses this", expected="(N, C, H, W)", got=x.shape)

    monkeypatch.setattr(K, "sigmoid_reference", refuse)
    net = Net(Graph([Node("sig", "sigmoid", ["data"], ["sig"])], ["data"], {"data": (1, 2, 3, 3)}))
    with pytest.raises(ShapeError) as ei:
        net.forward(np.zeros((1, 2, 3, 3)), precision="float64")
    e = ei.value
    assert (e.layer, e.message, e.expected, e.got) == ("sig", "sigmoid refuses this", "(N, C, H, W)", (1, 2, 3, 3))
    assert e.inputs == {"data": (1, 2, 3, 3)} and "net input 'data' has shape (1, 2, 3, 3)" in str(e)


def test_infer_shapes_with_wrong_input_names_is_a_shape_error(rng):
    net = _conv_pool_net(rng)
    with pytest.raises(ShapeError) as ei:
        net.infer_shapes({"image": (1, 3, 16, 16)})
    assert ei.value.expected == ["data"] and ei.value.got == ["image"]


def test_shape_error_with_context_keeps_what_it_names():
    e = ShapeError("too small", layer="a", expected=3, got=2, inputs={"x": (1, 2)})
    f = e.with_context(layer="b", inputs={"y": (3,)})
    assert (f.message, f.layer, f.expected, f.got, f.inputs) == ("too small", "a", 3, 2, {"x": (1, 2)})
    g = ShapeError("too small").with_context(layer="b", inputs={"y": (3,)})
    assert str(g) == "layer 'b': too small (net input 'y' has shape (3,))"
    assert g.expected is None and g.got is None


# ---- graph validation -----------------------------------------------------------------------------
def _graph_error(nodes, inputs=("data",)) -> ModelFormatError:
    with pytest.raises(ModelFormatError) as ei:
        Graph(nodes, list(inputs), dict.fromkeys(inputs), source="m.prototxt")
    return ei.value


def test_tensor_produced_twice_by_two_layers_says_what_to_rename():
    e = _graph_error([Node("a", "max_pool", ["data"], ["a", "a:1"], {"kernel": (2, 2)}),
                      Node("a:1", "relu", ["data"], ["a:1"])])
    assert "produced twice" in e.message and e.layer == "a:1" and e.file == "m.prototxt"
    assert e.expected and "one producer per tensor" in e.expected and "'a:1'" in e.expected and "'a'" in e.expected
    assert f"(expected {e.expected})" in str(e)


def test_tensor_produced_twice_as_a_net_input_says_what_to_rename():
    e = _graph_error([Node("data", "relu", ["data"], ["data"])])
    assert "produced twice" in e.message and "net input" in e.message and e.layer == "data"
    assert e.expected and "net inputs ['data']" in e.expected and "rename layer 'data'" in e.expected


def test_every_graph_validation_error_has_layer_and_expected():
    cases = {
        "duplicate": [Node("a", "relu", ["data"], ["a"]), Node("a", "relu", ["data"], ["a"])],
        "dangling": [Node("a", "relu", ["nothere"], ["a"])],
        "must be named": [Node("a", "relu", ["data"], ["out"])],
        "produced twice": [Node("data", "relu", ["data"], ["data"])],
    }
    for what, nodes in cases.items():
        e = _graph_error(nodes)
        assert what in e.message and e.layer and e.file == "m.prototxt", what
        assert e.expected and f"(expected {e.expected})" in str(e), what
    assert "'data'" in _graph_error(cases["dangling"]).expected  # lists the net inputs
    assert _graph_error(cases["must be named"]).expected.startswith("'a'")


def test_load_refuses_files_of_two_frameworks_and_keywords_its_reader_lacks(tmp_path):
    """refnet.load dispatches on the extensions; a file of another framework (a Torch7 .net
    beside a .caffemodel, Darknet .weights beside a prototxt) or a keyword argument the chosen
    reader does not take is an error, not silently dropped."""
    w = np.ones((1, 1, 1, 1), np.float32)
    spec = NetSpec([Layer("conv", "Convolution", ["data"], ["conv"],
                          {"convolution_param": {"num_output": 1, "kernel_size": 1, "bias_term": False}}, [w])],
                   inputs={"data": (1, 1, 4, 4)})
    proto, model = write_net(spec, tmp_path)
    other = {"net": tmp_path / "enet.net", "weights": tmp_path / "yolo.weights"}
    for p in other.values():
        p.write_bytes(b"\0" * 16)
    for files in ((other["net"], model), (proto, other["weights"]), (proto, model, other["weights"])):
        with pytest.raises(ModelFormatError, match="different frameworks") as ei:
            refnet.load(*files)
        assert all(f.name in str(ei.value) for f in files)
    with pytest.raises(TypeError, match="input_shapes"):  # load_caffe has no input_shapes: not ignored
        refnet.load(proto, model, input_shapes=(1, 1, 8, 8))
    assert refnet.load(proto, model).input_shapes == {"data": (1, 1, 4, 4)}
    # the cfg-alone error suggests weights='zeros': refnet.load passes it on to load_darknet
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nfilters=2\nsize=1\nstride=1\n"
                   "activation=linear\n")
    with pytest.raises(ModelFormatError, match="weights='zeros'"):
        refnet.load(cfg)
    net = refnet.load(cfg, weights="zeros")
    assert not np.any(net.forward(np.ones((1, 3, 8, 8), np.float32))[net.output_names[0]])
    with pytest.raises(ModelFormatError, match=r"is a folder, not a model file; give the model files in it "
                                               r"\(enet.net, .*yolo.weights\)"):
        refnet.load(tmp_path)  # not "cannot tell the framework from the extension ''"


# ---- set_num_threads: an integer >= 1 or "auto", nothing else ------------------------------------------
@pytest.mark.parametrize("bad", [1.5, 2.0, None, True, "2", 0, -1])
def test_set_num_threads_refuses_what_is_not_a_count(bad):
    """``set_num_threads(1.5)`` silently became 1 and ``None`` gave int()'s raw TypeError; cv2's
    ``setNumThreads`` refuses floats (even 2.0) and bools too. A clear ValueError naming what is
    accepted, for the count and for ``blas``; the thread setting is left as it was."""
    cv2 = pytest.importorskip("cv2")
    from refnet.runtime import threads as T

    if isinstance(bad, (float, bool, str)):
        with pytest.raises(TypeError):
            cv2.setNumThreads(bad)
    before = (T.mode(), T.get_num_threads())
    with pytest.raises(ValueError, match=r"integer >= 1 or 'auto'") as e:
        refnet.set_num_threads(bad)
    assert repr(bad) in str(e.value)
    with pytest.raises(ValueError, match=r"blas.*integer >= 1 or None"):
        refnet.set_num_threads(1, blas=bad if bad is not None else 1.5)
    assert (T.mode(), T.get_num_threads()) == before


def test_set_num_threads_takes_numpy_integers_and_auto():
    from refnet.runtime import threads as T

    try:
        assert refnet.set_num_threads(np.int64(1)) == 1 and T.mode() == "explicit"
        assert refnet.set_num_threads(1, blas=np.int32(1)) == 1
    finally:
        refnet.set_num_threads("auto")
    assert T.mode() == "auto"
