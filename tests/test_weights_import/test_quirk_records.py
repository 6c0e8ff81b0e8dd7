"""quirks="cv2" loads record the cv2 deviations they apply (graph.meta["quirks"]), one per layer changed.

For each framework a small model exercises the deviations docs/cv2-deviations.md names for it;
the expected (layer, quirk) pairs are listed by hand from that document (and cv2's layer naming),
not taken from refnet's output. Beside it, layers where a quirk would change nothing (LRN k = 1,
a default Log, average pooling with count_include_pad, JoinTable without nInputDims) must not be
recorded, a quirks="none" load records nothing, and every recorded layer really differs between
the two loads (its op, attributes, inputs or parameters), which is what compare's attribution
relies on.
"""

from __future__ import annotations

import struct

import numpy as np
from writers import t7_writer as W
from writers.caffe_writer import E, Layer, NetSpec, caffemodel, prototxt
from writers.darknet_writer import cfg_text

from refnet.crosscheck.quirks import cv2_quirks_table, quirk_changes
from refnet.weights_import.caffe import read_caffe
from refnet.weights_import.darknet import read_darknet
from refnet.weights_import.torch import read_torch


def _pairs(g) -> set[tuple[str, str]]:
    return {(r.layer, r.quirk) for r in g.meta["quirks"]}


def _consumers(g, layer: str) -> set[str]:
    outs = set(g.node(layer).outputs)
    return {n.name for n in g.nodes if outs & set(n.inputs)}


def _differs(a, b, layer: str) -> bool:
    """The node ``layer`` of graph ``b`` is not the same computation as in ``a`` (or is new), or its
    output goes elsewhere (a following layer was dropped or added, e.g. Darknet's activations)."""
    try:
        m = a.node(layer)
    except KeyError:
        return True
    n = b.node(layer)
    return (n.op != m.op or dict(n.attrs) != dict(m.attrs) or n.inputs != m.inputs or set(n.params) != set(m.params)
            or any(not np.array_equal(n.params[k], m.params[k]) for k in n.params)
            or _consumers(a, layer) != _consumers(b, layer))


def _check_records(faithful, quirky, expected: set[tuple[str, str]]) -> None:
    assert faithful.meta["quirks"] == [] and faithful.meta["quirks_mode"] == "none"
    assert quirky.meta["quirks_mode"] == "cv2"
    assert _pairs(quirky) == expected
    assert len(quirky.meta["quirks"]) == len(expected), "each (layer, quirk) once"
    table = cv2_quirks_table(quirky.framework)
    for r in quirky.meta["quirks"]:
        assert r.quirk in table and r.change, r
        if r.layer:
            assert _differs(faithful, quirky, r.layer), r
    # compare's attribution is the lookup of that record
    changes = quirk_changes(quirky)
    assert set(changes) == {layer for layer, _ in expected if layer}
    for layer, (key, desc) in changes.items():
        assert (layer, key) in expected and desc == table[key]


# ---- Caffe -------------------------------------------------------------------------------------------
def test_caffe_records_the_documented_deviations(tmp_path):
    r = np.random.default_rng(0)
    f32 = lambda *s: r.normal(0, 1, s).astype(np.float32)  # noqa: E731
    layers = [
        Layer("conv", "Convolution", ["data"], ["c1"], {"convolution_param": {"num_output": 4, "kernel_size": 1}},
              [f32(4, 4, 1, 1), f32(4)]),
        Layer("norm", "LRN", ["c1"], ["norm"], {"lrn_param": {"local_size": 3, "k": 2.0}}),  # k ignored
        Layer("norm_k1", "LRN", ["norm"], ["norm_k1"], {"lrn_param": {"local_size": 3, "k": 1.0}}),  # k = 1: same
        Layer("mvn", "MVN", ["norm_k1"], ["mvn"]),  # sqrt(var + eps) instead of std + eps
        Layer("bn", "BatchNorm", ["mvn"], ["bn"], {"batch_norm_param": {"use_global_stats": False}},
              [f32(4), np.abs(f32(4)), np.ones(1, np.float32)]),  # MVN + an extra 1/sqrt(1 + eps)
        Layer("slice", "Slice", ["bn"], ["s1", "s2"], {"slice_param": {"slice_dim": 2, "slice_point": [1]}}),
        Layer("cat", "Concat", ["s1", "s2"], ["cat"], {"concat_param": {"concat_dim": 2}}),
        Layer("log", "Log", ["cat"], ["log"], {"log_param": {"base": 2.0}}),  # base ignored
        Layer("ln", "Log", ["log"], ["ln"]),  # the default: ln x either way
        Layer("sc2", "Scale", ["ln", "c1"], ["sc2"], {"scale_param": {"bias_term": True}}, [f32(4)]),
        Layer("ip", "InnerProduct", ["sc2"], ["ip"], {"inner_product_param": {"num_output": 3, "transpose": True}},
              [f32(16, 3), f32(3)]),
        Layer("prior", "PriorBox", ["c1", "data"], ["prior"],
              {"prior_box_param": {"min_size": [2.0], "img_size": 8, "variance": [0.1]}}),
    ]
    net = NetSpec(layers, {"data": (1, 4, 2, 2)})
    text, model = prototxt(net), caffemodel(net)
    faithful = read_caffe(prototxt_bytes=text, caffemodel_bytes=model)
    quirky = read_caffe(prototxt_bytes=text, caffemodel_bytes=model, quirks="cv2")
    # docs/cv2-deviations.md, "Caffe" (and LRN k from the start): one record per layer changed;
    # the Convolution is named after its top (c1), as cv2 names it
    expected = {("norm", "lrn_k"), ("mvn", "mvn_eps"), ("bn/mvn", "bn_batch_stats"), ("bn", "bn_batch_stats"),
                ("slice", "slice_dim"), ("cat", "concat_dim"), ("log", "log_params"), ("sc2", "scale2_bias"),
                ("ip", "ip_transpose"), ("prior", "prior_img_size")}
    _check_records(faithful, quirky, expected)


def test_caffe_corner_size_is_recorded():
    """DetectionOutput CORNER_SIZE decoded as CORNER (in cv2 only through a binary net: its prototxt
    parser rejects the value; refnet's reads it from either)."""
    heads = [Layer("det", "DetectionOutput", ["loc", "conf", "prior"], ["det"],
                   {"detection_output_param": {"num_classes": 2, "share_location": True, "background_label_id": 0,
                                               "code_type": E("CORNER_SIZE")}})]
    net = NetSpec(heads, {"loc": (1, 8), "conf": (1, 4), "prior": (1, 2, 8)})
    text = prototxt(net)
    _check_records(read_caffe(prototxt_bytes=text), read_caffe(prototxt_bytes=text, quirks="cv2"),
                   {("det", "corner_size")})


# ---- Torch7 ------------------------------------------------------------------------------------------
def test_torch_records_the_documented_deviations(tmp_path):
    r = np.random.default_rng(1)
    pool = W.nn_SpatialMaxPooling(2, 2)
    model = W.nn_Sequential(
        W.nn_SpatialConvolution(r, 3, 4, 3, 3, pw=1, ph=1),  # l1_Convolution
        W.nn_InstanceNormalization(r, 4),  # l2_MVN, l3_BatchNorm: cv2's eps rule
        W.nn_SpatialAveragePooling(3, 3, 1, 1, 1, 1, count_include_pad=None),  # l4: no field, cv2 excludes pads
        W.nn_SpatialAveragePooling(3, 3, 1, 1, 1, 1, count_include_pad=True),  # l5: the field: cv2 agrees
        W.nn_ConcatTable(W.nn_Identity(), W.nn_Identity()),  # (6 skipped), l7, l8
        W.nn_JoinTable(2, n_input_dims=3),  # l9_torchMerge: cv2 ignores nInputDims
        W.nn_ConcatTable(W.nn_Identity(), W.nn_Identity()),  # (10), l11, l12
        W.nn_JoinTable(1),  # l13: no nInputDims, same axis
        pool,  # l14_Pooling
        W.nn_SpatialMaxUnpooling(pool),  # l15: cv2 sizes the output from the pooling geometry
    )
    path = W.save(tmp_path / "m.t7", model)
    # docs/cv2-deviations.md, "Torch7" (InstanceNormalization eps from the start)
    expected = {("l2_MVN", "instance_norm"), ("l3_BatchNorm", "instance_norm"), ("l4_Pooling", "avg_pool_divisor"),
                ("l9_torchMerge", "join_table_dims"), ("l15_torchMaxUnpooling", "unpool_size")}
    _check_records(read_torch(path), read_torch(path, quirks="cv2"), expected)


# ---- Darknet -----------------------------------------------------------------------------------------
DARKNET_CFG = cfg_text([
    ("net", {"width": 8, "height": 8}),  # no channels=: cv2 defaults it (Darknet: an error)
    ("convolutional", {"filters": 4, "size": 3, "pad": 1, "batch_normalize": 1, "dilation": 2}),  # 0: no activation=
    ("maxpool", {}),  # 1: cv2 size 2 stride 2 (Darknet 1/1)
    ("upsample", {}),  # 2: cv2 stride 1 (Darknet 2)
    ("softmax", {}),  # 3: cv2 over channels only
    ("route", {"layers": -1, "activation": "leaky"}),  # 4: cv2 applies the activation after a [route] too
    ("shortcut", {"from": "-1,-3", "activation": "linear"}),  # 5: cv2 adds only the first
    ("convolutional", {"filters": 14, "size": 1, "activation": "logistic"}),  # 6: given twice (below)
    ("yolo", {"mask": "0,1", "anchors": "2,3, 4,5", "classes": 2, "num": 2}),  # 7: thresh 0.2 in the layer
    ("route", {"layers": -2}),  # 8
    ("region", {"num": 2, "classes": 2, "coords": 4, "anchors": "1,1, 2,2"}),  # 9: NMS 0.4 in the layer
    ("route", {"layers": 6}),  # 10
    ("connected", {"output": 4, "batch_normalize": 1, "activation": "linear"}),  # 11: BN blobs read earlier
]).replace("activation=logistic\n", "activation=logistic\nactivation=linear\n")  # cv2: the last value wins


def test_darknet_records_the_documented_deviations():
    quirky_zero = read_darknet(None, "zeros", cfg_text=DARKNET_CFG, quirks="cv2")
    count = sum(p.size for n in quirky_zero.nodes for p in n.params.values())
    # a weights file of version 1000.0: cv2 reads a 64-bit `seen` (pjreddie: 32-bit from 1000 on)
    data = struct.pack("<iiiQ", 1000, 0, 0, 7) + np.zeros(count, "<f4").tobytes()
    quirky = read_darknet(None, cfg_text=DARKNET_CFG, weights_bytes=data, quirks="cv2")
    faithful = read_darknet(None, "zeros", cfg_text=DARKNET_CFG.replace("[net]\n", "[net]\nchannels=3\n"))
    # docs/cv2-deviations.md, "Darknet": layers named as cv2 names them ("" = the whole model)
    expected = {("", "net_defaults"), ("", "seen_width"),
                ("conv_0", "conv_dilation"), ("bn_0", "bn_eps"), ("bn_0", "default_activation"),
                ("pool_1", "maxpool_defaults"), ("upsample_2", "upsample_default"), ("softmax_3", "softmax_axis"),
                ("leaky_5", "activation_any_layer"), ("shortcut_5", "shortcut_from"), ("conv_6", "duplicate_keys"),
                ("yolo_7", "head_threshold"), ("detection_out", "head_threshold"),
                ("fullyConnected_11", "connected_bn_order"), ("bn_11", "connected_bn_order"), ("bn_11", "bn_eps")}
    _check_records(faithful, quirky, expected)
