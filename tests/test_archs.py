"""Built-in architecture generators (refnet.archs): the generated prototxts are structurally the
shared arch-only deploy files (parsed by refnet's own prototxt parser), cv2.dnn reads the generated
files and agrees with refnet layer by layer, and seeded weights for an arch-only prototxt load in both."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import TOL, rel_err, require_model

import refnet
from refnet.archs import googlenet, mobilenet_ssd, seeded_caffemodel
from refnet.weights_import.caffe import parse_net_text


def _rep(v, default):
    """A repeated field's effective (h, w) pair (Caffe: one value = both, none = default)."""
    vals = [int(x) for x in (v if v is not None else [])]
    return (vals[0], vals[-1]) if vals else (default, default)


def _num(v):
    return [round(float(x), 6) for x in v] if v is not None and not isinstance(v, float) else round(float(v), 6)


def _key_params(L) -> dict:
    """The parameters that define a layer's computation, with Caffe's defaults filled in."""
    t = L.get("type")

    def p(name):
        return L.get(name) if L.has(name) else None

    def g(msg, key, default=None):
        return msg.get(key) if msg is not None and msg.has(key) else default

    if t == "Convolution":
        c = p("convolution_param")
        return {"num_output": g(c, "num_output"), "kernel": _rep(g(c, "kernel_size"), 0),
                "stride": _rep(g(c, "stride"), 1), "pad": _rep(g(c, "pad"), 0), "dilation": _rep(g(c, "dilation"), 1),
                "group": g(c, "group", 1), "bias": g(c, "bias_term", True)}
    if t == "Pooling":
        c = p("pooling_param")
        return {"pool": g(c, "pool", "MAX"), "kernel": g(c, "kernel_size"), "stride": g(c, "stride", 1),
                "pad": g(c, "pad", 0), "global": g(c, "global_pooling", False)}
    if t == "LRN":
        c = p("lrn_param")
        return {"size": g(c, "local_size", 5), "alpha": _num(g(c, "alpha", 1.0)), "beta": _num(g(c, "beta", 0.75)),
                "k": _num(g(c, "k", 1.0)), "region": g(c, "norm_region", "ACROSS_CHANNELS")}
    if t == "InnerProduct":
        c = p("inner_product_param")
        return {"num_output": g(c, "num_output"), "bias": g(c, "bias_term", True)}
    if t == "Dropout":
        return {"ratio": _num(g(p("dropout_param"), "dropout_ratio", 0.5))}
    if t in ("Softmax", "Concat", "Flatten"):
        c = p({"Softmax": "softmax_param", "Concat": "concat_param", "Flatten": "flatten_param"}[t])
        return {"axis": g(c, "axis", 1)}
    if t == "Permute":
        return {"order": [int(v) for v in g(p("permute_param"), "order", [])]}
    if t == "Reshape":
        return {"shape": [int(v) for v in g(p("reshape_param"), "shape").get("dim")]}
    if t == "PriorBox":
        c = p("prior_box_param")
        return {k: _num(g(c, k)) if g(c, k) is not None and k not in ("flip", "clip") else g(c, k)
                for k in ("min_size", "max_size", "aspect_ratio", "flip", "clip", "variance", "offset")}
    if t == "DetectionOutput":
        c = p("detection_output_param")
        nms = g(c, "nms_param")
        return {"num_classes": g(c, "num_classes"), "share_location": g(c, "share_location", True),
                "background": g(c, "background_label_id", 0), "code_type": g(c, "code_type"),
                "keep_top_k": g(c, "keep_top_k"), "confidence": _num(g(c, "confidence_threshold")),
                "nms": _num(g(nms, "nms_threshold")), "top_k": g(nms, "top_k")}
    if t == "Input":
        return {"shape": [int(v) for v in g(p("input_param"), "shape")[0].get("dim")][1:]}  # batch size aside
    return {}


def _structure(text: str) -> list[tuple]:
    net = parse_net_text(text)
    rows = [("<net input>", [int(v) for v in s.get("dim")][1:]) for s in net.get("input_shape")] if net.has(
        "input_shape") else []
    for L in net.get("layer"):
        rows.append((L.get("name"), L.get("type"), tuple(L.get("bottom")), tuple(L.get("top")), _key_params(L)))
    return rows


@pytest.mark.parametrize("gen, rel", [(mobilenet_ssd, "arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt"),
                                      (googlenet, "arch_only/bvlc_googlenet/deploy.prototxt")])
def test_generated_prototxt_is_the_shared_architecture(models, gen, rel):
    ours = _structure(gen().prototxt())
    theirs = _structure(require_model(models, rel).read_text())
    assert [r[0] for r in ours] == [r[0] for r in theirs], "layer names and order"
    for a, b in zip(ours, theirs):
        assert a == b, f"layer {a[0]}: generated {a[1:]} vs shared {b[1:]}"


def test_structure_check_can_fail(models):
    """The comparison above notices a changed key parameter (a guard against a vacuous test)."""
    text = googlenet().prototxt().replace("local_size: 5", "local_size: 3", 1)
    theirs = _structure(require_model(models, "arch_only/bvlc_googlenet/deploy.prototxt").read_text())
    assert _structure(text) != theirs


def _cv2_all_layers(proto, model, blob, names):
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.enableFusion(False)
    cv.setInput(blob)
    return dict(zip(names, cv.forward(names)))


@pytest.mark.parametrize("gen, kw, hw", [
    (mobilenet_ssd, {"width": 0.25, "seed": 3}, (300, 300)),
    (mobilenet_ssd, {"width": 0.25, "seed": 4, "batch_norm": True}, (160, 160)),
    (googlenet, {"width": 0.125, "seed": 5, "num_classes": 50}, (224, 224)),
])
def test_cv2_runs_generated_files_and_agrees_per_layer(tmp_path, gen, kw, hw):
    proto, model = gen(input_hw=hw, **kw).write(tmp_path / "net")
    net = refnet.load_caffe(proto, model)
    rng = np.random.default_rng(1)
    blob = refnet.blob_from_image(rng.integers(0, 256, (hw[0], hw[1], 3), dtype=np.uint8), 1 / 127.5, None,
                                  (127.5, 127.5, 127.5))
    tr = net.trace(blob, precision="float64")
    names = [n for n in net.layer_names if n in tr]
    cv = _cv2_all_layers(proto, model, blob, names)
    worst = (0.0, "")
    for n in names:
        if net.graph.node(n).op == "detection_output":
            continue  # a variable-length set of rows: compared below
        worst = max(worst, (rel_err(cv[n].reshape(tr[n].shape), tr[n]), n))
    assert worst[0] <= TOL["vs_cv2"], f"worst layer {worst[1]}: {worst[0]:.3g}"
    if "detection_out" in tr:
        ours, theirs = tr["detection_out"].reshape(-1, 7), cv["detection_out"].reshape(-1, 7)
        assert ours.shape == theirs.shape and ours.shape[0] > 0, "random weights still give detections"
        if kw.get("batch_norm"):
            ops = [n.op for n in net.graph.nodes]
            assert ops.count("batch_norm") == ops.count("scale") == 35, "BatchNorm + Scale after every backbone conv"
        np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_googlenet_has_inception_lrn_ceil_pooling():
    b = googlenet(width=0.125)
    assert b.shape["pool1/3x3_s2"][1:] == (56, 56), "112 -> 56 needs Caffe's ceil rounding (floor gives 55)"
    assert b.shape["inception_5b/output"] == (round(384 / 8) + round(384 / 8) + 16 + 16, 7, 7)
    assert b.shape["pool5/7x7_s1"][1:] == (1, 1)
    txt = b.prototxt()
    assert txt.count('type: "LRN"') == 2 and txt.count("/output") >= 9 and 'type: "Dropout"' in txt


def test_seeded_caffemodel_for_an_arch_only_prototxt(models, tmp_path):
    proto = require_model(models, "arch_only/squeezenet_v1.1/deploy.prototxt")
    data = seeded_caffemodel(proto, seed=4, calibrate=False)  # plain He scaling (calibration: test_seeded.py)
    assert data == seeded_caffemodel(proto, seed=4, calibrate=False), "seeded: the same bytes every time"
    model = tmp_path / "sq.caffemodel"
    model.write_bytes(data)
    net = refnet.load_caffe(proto, model)
    convs = [n for n in net.graph.nodes if n.op == "conv"]
    w = convs[1].params["weight"]  # He scaling: std = sqrt(2 / fan_in)
    assert abs(float(w.std()) / math.sqrt(2.0 / (w[0].size)) - 1) < 0.1
    blob = np.random.default_rng(2).uniform(-1, 1, (1, 3, 227, 227)).astype(np.float32)
    out = net.forward(blob, precision="float32")["prob"]
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.setInput(blob)
    assert rel_err(cv.forward(), out) <= TOL["vs_cv2"]
    assert np.all(np.isfinite(out)) and abs(float(out.sum()) - 1) < 1e-5
