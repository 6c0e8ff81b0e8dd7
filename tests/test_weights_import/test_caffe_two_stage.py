"""Caffe Proposal / ROIPooling / PSROIPooling: parameters from text and from the wire (cv2's field
numbers, incl. roi_pooling_param = 8266711), defaults, errors, the quirks log, and a small
two-stage net (Proposal feeding ROIPooling and PSROIPooling) against cv2.dnn in both precisions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import TOL, rel_err
from writers.caffe_writer import Layer, NetSpec, caffemodel, prototxt

import refnet
from refnet.errors import ModelFormatError
from refnet.two_stage import match_roi_sets

H, W, A = 6, 8, 9


def _net(proposal: dict | None = None, roi: dict | None = None, psroi: dict | None = None) -> NetSpec:
    return NetSpec([
        Layer("proposal", "Proposal", ["s", "d", "im_info"], ["rois"],
              {"proposal_param": proposal if proposal is not None else {
                  "ratio": [0.5, 1.0, 2.0], "scale": [8.0, 16.0, 32.0], "post_nms_topn": 40,
                  "nms_thresh": 0.6}}),
        Layer("roi_pool", "ROIPooling", ["x", "rois"], ["pooled"],
              {"roi_pooling_param": roi or {"pooled_h": 3, "pooled_w": 4, "spatial_scale": 0.0625}}),
        Layer("psroi", "PSROIPooling", ["y", "rois"], ["ps"],
              {"psroi_pooling_param": psroi or {"spatial_scale": 0.0625, "output_dim": 2, "group_size": 3}}),
    ], inputs={"s": (1, 2 * A, H, W), "d": (1, 4 * A, H, W), "im_info": (1, 3), "x": (1, 5, H, W),
               "y": (1, 18, H, W)}, input_style="input_shape")


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(1, 2, A * H * W))
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = (e / e.sum(1, keepdims=True)).reshape(1, 2 * A, H, W)
    return {"s": prob.astype(np.float32), "d": (rng.normal(size=(1, 4 * A, H, W)) * 0.2).astype(np.float32),
            "im_info": np.array([[H * 16, W * 16, 1.0]], np.float32),
            "x": rng.normal(size=(1, 5, H, W)).astype(np.float32),
            "y": rng.normal(size=(1, 18, H, W)).astype(np.float32)}


def test_parameters_text_and_wire_agree(tmp_path):
    spec = _net()
    p = tmp_path / "n.prototxt"
    p.write_text(prototxt(spec))
    text = refnet.load_caffe(p)
    m = tmp_path / "n.caffemodel"
    spec.inputs["im_info"] = (1, 3, 1, 1)  # the wire path writes 4-D input_dim values
    m.write_bytes(caffemodel(spec, with_defs=True))
    wire = refnet.load_caffe(None, m)
    for net in (text, wire):
        prop = net.graph.node("proposal")
        assert prop.op == "proposal"
        assert prop.attrs["ratios"] == (0.5, 1.0, 2.0) and prop.attrs["scales"] == (8.0, 16.0, 32.0)
        # cv2's proto defaults
        assert (prop.attrs["feat_stride"], prop.attrs["base_size"], prop.attrs["min_size"]) == (16, 16, 16)
        assert prop.attrs["pre_nms_topn"] == 6000 and prop.attrs["post_nms_topn"] == 40
        assert prop.attrs["nms_thresh"] == pytest.approx(0.6)
        assert dict(net.graph.node("roi_pool").attrs) == {"pooled_h": 3, "pooled_w": 4, "spatial_scale": 0.0625}
        assert dict(net.graph.node("psroi").attrs) == {"output_dim": 2, "group_size": 3, "spatial_scale": 0.0625}
    assert not text.graph.meta["quirks"]
    q = refnet.load_caffe(p, quirks="cv2")
    assert [(r.layer, r.quirk) for r in q.graph.meta["quirks"]] == [("proposal", "proposal")]
    assert q.graph.node("proposal").attrs["quirks"] == "cv2"
    assert q.infer_shapes()["proposal"] == (40, 5) and text.infer_shapes()["proposal"] == (-1, 5)
    assert text.infer_shapes()["roi_pool"] == (-1, 5, 3, 4) and text.infer_shapes()["psroi"] == (-1, 2, 3, 3)


@pytest.mark.parametrize("bad,match", [
    ({"psroi": {"spatial_scale": 0.0625, "output_dim": 2}}, "group_size is required"),
    ({"roi": {"pooled_h": 0, "pooled_w": 2}}, "pooled_h 0"),
    ({"proposal": {"ratio": [0.5], "scale": [-1.0]}}, "must be positive"),
    ({"proposal": {"scale": [8.0]}}, "needs ratio and scale"),
])
def test_bad_parameters_are_model_format_errors(tmp_path, bad, match):
    p = tmp_path / "bad.prototxt"
    p.write_text(prototxt(_net(**bad)))
    with pytest.raises(ModelFormatError, match=match):
        refnet.load_caffe(p)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("seed", [0, 1])
def test_small_two_stage_net_vs_cv2(tmp_path, precision, seed):
    p = tmp_path / "n.prototxt"
    p.write_text(prototxt(_net()))
    feeds = _feeds(seed)
    cv = cv2.dnn.readNetFromCaffe(str(p))
    for k, v in feeds.items():
        cv.setInput(v, k)
    want = dict(zip(["proposal", "roi_pool", "psroi"], cv.forward(["proposal", "roi_pool", "psroi"])))
    names = ["proposal", "roi_pool", "psroi"]
    got = refnet.load_caffe(p, quirks="cv2").forward(feeds, outputs=names, precision=precision)
    m = match_roi_sets(got["proposal"], want["proposal"], atol=1e-3)
    assert not m["only_a"] and not m["only_b"] and m["matched"] > 5
    for k in names:
        assert rel_err(got[k], want[k]) <= TOL["vs_cv2"], k
    # py-faster-rcnn semantics: no zero padding, the pooled rows follow the proposals
    py = refnet.load_caffe(p).forward(feeds, outputs=names, precision=precision)
    assert py["roi_pool"].shape[0] == py["psroi"].shape[0] == py["proposal"].shape[0] <= 40
