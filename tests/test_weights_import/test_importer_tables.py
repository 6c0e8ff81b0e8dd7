"""The importers' one dispatch idiom: a table of builders per importer (Caffe layer types with their
bottom/top counts, Torch7 classes with the input they take, Darknet sections), checked in one place
with an error that names the layer, and the supported-type lists derived from it."""

from __future__ import annotations

import pytest
from writers import t7_writer as W
from writers.darknet_writer import cfg_text

from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.weights_import import caffe, darknet, torch
from refnet.weights_import._util import LayerTable, arity_expected

HEAD = 'input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4 '


@pytest.mark.parametrize("layer, message, expected", [
    ('layer { name: "e" type: "Eltwise" bottom: "data" top: "e" }', "Eltwise layer has 1 bottoms",
     "at least 2 bottom(s)"),
    ('layer { name: "c" type: "Crop" bottom: "data" top: "c" }', "Crop layer has 1 bottoms", "2 bottom(s)"),
    ('layer { name: "s" type: "Silence" bottom: "data" top: "s" }', "Silence layer has 1 tops", "0 top(s)"),
    ('layer { name: "r" type: "ReLU" bottom: "data" top: "r" top: "r2" }', "ReLU layer has 2 tops", "1 top(s)"),
    ('layer { name: "d" type: "DetectionOutput" bottom: "data" bottom: "data" top: "d" }',
     "DetectionOutput layer has 2 bottoms", "3 to 4 bottom(s)"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" pooling_param { pool: AVE kernel_size: 2 } }',
     "Pooling layer has 2 tops", "1 top(s)"),  # the declared (1, 2) allows the mask top of MAX only
])
def test_caffe_arity_is_checked_with_the_layer_named(layer, message, expected):
    with pytest.raises(ModelFormatError) as e:
        caffe.read_caffe(prototxt_bytes=HEAD + layer)
    assert message in str(e.value) and e.value.expected == expected and e.value.layer == layer.split('"')[1]


def test_supported_lists_come_from_the_tables():
    assert set(caffe.SUPPORTED_TYPES) == set(caffe.layer.names()) | {"Input"}
    assert {"Pooling", "Convolution", "ConvolutionDepthwise", "Sigmoid", "Log", "PSROIPooling"} <= set(
        caffe.SUPPORTED_TYPES)
    assert caffe.layer.get("Pooling").arity == {"bottoms": 1, "tops": (1, 2)}
    assert torch.SUPPORTED_MODULES == set(torch.module.names())
    assert {"Sequential", "JoinTable", "SpatialConvolution", "InstanceNormalization"} <= torch.SUPPORTED_MODULES
    assert torch.module.get("CAddTable").arity == {"input": "table"}
    assert darknet.SUPPORTED_SECTIONS == darknet.section.names()
    assert darknet.section.aliases() == {"conv": "convolutional", "conn": "connected", "max": "maxpool",
                                         "avg": "avgpool", "soft": "softmax"}


def test_unsupported_types_list_the_table(tmp_path):
    with pytest.raises(UnsupportedLayerError) as e:
        caffe.read_caffe(prototxt_bytes=HEAD + 'layer { name: "x" type: "Python" bottom: "data" top: "x" }')
    assert "Pooling" in str(e.value) and e.value.layer == "x"
    with pytest.raises(UnsupportedLayerError) as e:
        darknet.read_darknet(None, cfg_text=cfg_text([("net", {"width": 4, "height": 4, "channels": 1}),
                                                      ("lstm", {})]))
    assert "convolutional" in str(e.value) and "[lstm]" not in darknet.SUPPORTED_SECTIONS
    path = W.save(tmp_path / "m.t7", W.nn_Sequential(W.nn_simple("nn.Bottle")))
    with pytest.raises(UnsupportedLayerError) as e:
        torch.read_torch(path)
    assert "nn.JoinTable" in str(e.value)


def test_table_rules():
    t = LayerTable("thing", ins=1)
    t("A", "B")(len)
    with pytest.raises(ValueError, match="twice"):
        t("A")(len)
    with pytest.raises(TypeError):
        t("C", outs=1)
    assert t.names() == ("A", "B") and t.aliases() == {"B": "A"} and "A" in t and t.get("Z") is None
    assert arity_expected(3, (1, None), "input") is None
    assert arity_expected(0, (1, None), "input") == "at least 1 input(s)"
    assert arity_expected(2, 2, "top") is None and arity_expected(3, (1, 2), "top") == "1 to 2 top(s)"
