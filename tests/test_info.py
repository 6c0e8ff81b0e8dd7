"""refnet.info: MACs against hand-computed counts (depthwise, grouped, deconvolution, linear, ...),
against cv2's getFLOPS where cv2 is right (no groups) and where it is not (groups), parameter counts
against published totals, and `refnet info` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import refnet
from refnet.archs import write_caffemodel
from refnet.cli import main
from refnet.graph import Node
from refnet.info import avg_pool_macs, eltwise_macs, lrn_macs, model_info

PROTO = """name: "macs"
input: "data"
input_shape { dim: 1 dim: 8 dim: 10 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "dw" type: "Convolution" bottom: "conv1" top: "dw"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 group: 16 } }
layer { name: "grouped" type: "Convolution" bottom: "dw" top: "grouped"
        convolution_param { num_output: 8 kernel_size: 1 group: 4 bias_term: false } }
layer { name: "up" type: "Deconvolution" bottom: "grouped" top: "up"
        convolution_param { num_output: 12 kernel_size: 3 stride: 2 group: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "up" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture(scope="module")
def macs_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("info")
    (d / "m.prototxt").write_text(PROTO)
    r = np.random.default_rng(0)

    def w(*s):
        return r.normal(0, 0.1, s).astype(np.float32)

    write_caffemodel(d / "m.caffemodel", [
        ("conv1", "Convolution", [w(16, 8, 3, 3), w(16)]),
        ("dw", "Convolution", [w(16, 1, 3, 3), w(16)]),
        ("grouped", "Convolution", [w(8, 4, 1, 1)]),
        ("up", "Deconvolution", [w(8, 6, 3, 3), w(12)]),
        ("fc", "InnerProduct", [w(10, 12 * 21 * 25), w(10)]),
    ])
    return d / "m.prototxt", d / "m.caffemodel"


# hand counts: N*Co*Ho*Wo*(Ci/g)*kh*kw; deconv N*Ci*H*W*(Co/g)*kh*kw; linear N*out*in
HAND = {
    "conv1": 16 * 10 * 12 * 8 * 3 * 3,  # 138240
    "dw": 16 * 10 * 12 * 1 * 3 * 3,  # 17280: one input channel per group
    "grouped": 8 * 10 * 12 * (16 // 4),  # 3840
    "up": 8 * 10 * 12 * (12 // 2) * 3 * 3,  # 51840; output (21, 25) = (10-1)*2+3, (12-1)*2+3
    "fc": 10 * 12 * 21 * 25,  # 63000
    "relu1": 0,
    "prob": 0,
}


def test_macs_and_params_by_hand(macs_model):
    info = model_info(refnet.load_caffe(*macs_model))
    rows = {r.name: r for r in info.layers}
    assert {n: rows[n].macs for n in HAND} == HAND
    assert rows["up"].outputs == [(1, 12, 21, 25)]
    assert rows["dw"].params == 16 * 9 + 16 and rows["grouped"].params == 8 * 4 and rows["fc"].params == 63010
    assert info.total_macs == sum(HAND.values())
    assert "groups=16" in rows["dw"].note


def test_cv2_getflops_where_cv2_is_right_and_where_it_ignores_groups(macs_model):
    info = model_info(refnet.load_caffe(*macs_model))
    rows = {r.name: r for r in info.layers}
    out1 = 16 * 10 * 12
    # no groups: cv2 counts 2 FLOPs per MAC plus one per output (the bias) -- our count, exactly
    assert rows["conv1"].cv2_flops == 2 * HAND["conv1"] + out1
    # depthwise: cv2 multiplies by all 16 input channels instead of 1 (the documented deviation)
    assert rows["dw"].cv2_flops == out1 * (2 * 9 * 16 + 1)
    assert rows["dw"].cv2_flops > 15 * (2 * HAND["dw"] + out1)
    assert info.cv2_flops_total == sum(r.cv2_flops for r in info.layers if r.cv2_flops is not None)
    text = "\n".join(info.deviations)
    assert "getFLOPS ignores group" in text and "dw (x16)" in text and "grouped (x4)" in text


def test_cv2_getflops_of_an_onnx_model(tmp_path):
    """cv2 reads ONNX too: info shows its getFLOPS total (it said 'unknown model kind'); a depthwise
    conv: refnet 2 x 9 MACs per output, cv2 (ignoring group) 2 x 9 x 8 + 1 per output."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 1, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=8, pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 5])], [w, b])
    p = tmp_path / "dw.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    import cv2

    want = int(cv2.dnn.readNetFromONNX(str(p)).getFLOPS([1, 8, 6, 5]))
    info = model_info(refnet.load_onnx(p))
    assert info.cv2_error == "" and info.cv2_flops_total == want == 8 * 6 * 5 * (2 * 9 * 8 + 1)
    assert info.total_macs == 8 * 6 * 5 * 9
    assert any("getFLOPS ignores group" in d for d in info.deviations)


def test_other_op_rules_by_hand():
    pool = Node("p", "avg_pool", ("x",), ("p",), {"kernel": (3, 2), "stride": (1, 1)})
    assert avg_pool_macs(pool, [(1, 4, 6, 6)], [(1, 4, 4, 5)]) == 4 * 4 * 5 * 3 * 2
    gpool = Node("g", "avg_pool", ("x",), ("g",), {"global_pooling": True})
    assert avg_pool_macs(gpool, [(2, 4, 6, 6)], [(2, 4, 1, 1)]) == 2 * 4 * 36
    lrn = Node("l", "lrn", ("x",), ("l",), {"size": 5, "region": "across"})
    assert lrn_macs(lrn, [(1, 8, 3, 3)], [(1, 8, 3, 3)]) == 72 * 5
    add3 = Node("e", "eltwise", ("a", "b", "c"), ("e",), {"operation": "sum"})
    assert eltwise_macs(add3, [(1, 2, 3, 3)] * 3, [(1, 2, 3, 3)]) == 18 * 2


def test_published_parameter_counts(models, capsys):
    # SqueezeNet v1.1: 1,235,496 parameters (torchvision's squeezenet1_1, the same architecture)
    code = main(["info", str(models / "arch_only/squeezenet_v1.1/deploy.prototxt")])
    out = capsys.readouterr().out
    assert code == 0 and "1,235,496 parameters" in out and "weights: seeded random" in out
    # yolov3-tiny: 8,858,734 parameters (Darknet's own summary); cfg only, no weights file
    code = main(["info", "--zoo", "yolov3-tiny"])
    out = capsys.readouterr().out
    assert code == 0 and "8,858,734 parameters" in out and "cv2 cannot load" in out


def test_info_cli_json_and_input_shape(macs_model, tmp_path, capsys):
    js = tmp_path / "i.json"
    code = main(["info", *map(str, macs_model), "--input-shape", "2", "8", "10", "12", "--json", str(js)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{2 * sum(HAND.values()):,} MACs" in out and "cv2 getFLOPS:" in out and "cv2 deviation:" in out
    d = json.loads(js.read_text())
    assert d["schema"] == "refnet.info/1" and d["total_macs"] == 2 * sum(HAND.values())
    assert {r["name"]: r["macs"] for r in d["layers"]}["conv1"] == 2 * HAND["conv1"]


@pytest.mark.parametrize("argv, needle", [
    (["info", "nope.prototxt"], "model file not found"),
    (["info", "--zoo", "nosuchmodel"], "unknown model"),
    (["info"], "no model"),
])
def test_info_user_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("refnet: error: ") and needle in err and err.count("\n") == 1


def test_info_input_shape_needed(tmp_path, capsys):
    p = tmp_path / "n.prototxt"
    p.write_text('name: "n"\ninput: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert main(["info", str(p)]) == 2
    assert "--input-shape N C H W" in capsys.readouterr().err
    assert main(["info", str(p), "--input-shape", "1", "3", "4", "4"]) == 0
