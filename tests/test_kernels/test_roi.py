"""Proposal, ROIPooling and PSROIPooling kernels: hand-computed cases, fast vs reference, and
cv2.dnn single-layer nets (Proposal under quirks="cv2"; the py-faster-rcnn deviations shown)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import assert_close

from refnet import kernels as K
from refnet.errors import ShapeError
from refnet.two_stage import match_roi_sets

DTYPES = ("float32", "float64")


def cv2_layer(tmp_path, layer: str, inputs: dict[str, np.ndarray], out: str = "l") -> np.ndarray:
    """Run one Caffe layer named "l" (prototxt only, no weights) in cv2.dnn."""
    decl = "".join(f'input: "{k}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in v.shape)} }}\n'
                   for k, v in inputs.items())
    p = tmp_path / f"net{len(list(tmp_path.iterdir()))}.prototxt"
    p.write_text(decl + layer)
    net = cv2.dnn.readNetFromCaffe(str(p))
    for k, v in inputs.items():
        net.setInput(np.ascontiguousarray(v, dtype=np.float32), k)
    return net.forward(out)


# ---- anchors ------------------------------------------------------------------------------------
# py-faster-rcnn's generate_anchors() output for base 16, ratios (0.5, 1, 2), scales (8, 16, 32), as
# printed in the docstring of lib/rpn/generate_anchors.py
PY_FASTER_RCNN_ANCHORS = np.array([
    [-84., -40., 99., 55.], [-176., -88., 191., 103.], [-360., -184., 375., 199.],
    [-56., -56., 71., 71.], [-120., -120., 135., 135.], [-248., -248., 263., 263.],
    [-36., -80., 51., 95.], [-80., -168., 95., 183.], [-168., -344., 183., 359.]])


@pytest.mark.parametrize("quirks", ["none", "cv2"])
def test_anchors_match_py_faster_rcnn(quirks):
    a = K.proposal_anchors(16, (0.5, 1, 2), (8, 16, 32), quirks)
    np.testing.assert_array_equal(a, PY_FASTER_RCNN_ANCHORS)


def test_anchor_rounding_deviation():
    """base 18, ratio 0.5: w = round(25.46) = 25, h = 12.5 -> numpy rounds half to even (12),
    cv2 floor(x + 0.5) (13); the box is centred at (18 - 1) / 2 = 8.5."""
    py = K.proposal_anchors(18, (0.5,), (1,), "none")[0]
    cv = K.proposal_anchors(18, (0.5,), (1,), "cv2")[0]
    np.testing.assert_array_equal(py, [8.5 - 12, 8.5 - 5.5, 8.5 + 12, 8.5 + 5.5])
    np.testing.assert_array_equal(cv, [8.5 - 12, 8.5 - 6, 8.5 + 12, 8.5 + 6])


# ---- proposal -------------------------------------------------------------------------------------
def _one_anchor_inputs(h, w, deltas, fg, bg=None):
    """Scores (1, 2, h, w) and deltas (1, 4, h, w) for one anchor (ratio 1, scale 1)."""
    s = np.zeros((1, 2, h, w))
    s[0, 1] = fg
    s[0, 0] = 1 - np.asarray(fg) if bg is None else bg
    return s, np.asarray(deltas, np.float64).reshape(1, 4, h, w)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("fast", [True, False])
def test_proposal_decode_hand_computed(dt, fast):
    """One anchor [0, 0, 15, 15] (w = 16, centre 8): dx = 0.1 moves the centre by 1.6, dw = ln 2
    doubles the width: x1 = 9.6 - 16 = -6.4 -> clipped to 0, x2 = 25.6; y unchanged: 0, 16."""
    s, d = _one_anchor_inputs(1, 1, [0.1, 0.0, math.log(2.0), 0.0], [[0.9]])
    fn = K.proposal if fast else K.proposal_reference
    rois, sc = fn(s.astype(dt), d.astype(dt), np.array([[100, 100, 1]], dt), ratios=(1,), scales=(1,),
                  min_size=1)
    assert rois.dtype == np.dtype(dt)
    np.testing.assert_allclose(rois, [[0, 0, 0, 25.6, 16]], rtol=1e-6)
    np.testing.assert_allclose(sc, [[0.9]], rtol=1e-6)


def test_proposal_clip_min_size_sort_and_topn():
    """3x3 map, stride 16, one 16x16 anchor per cell. Clip to [0, im_w - 1]; the min-size filter
    drops boxes under min_size * im_info[2] wide (cv2 has no filter); rows by descending score."""
    fg = np.array([[0.1, 0.5, 0.2], [0.3, 0.9, 0.4], [0.8, 0.6, 0.7]])
    d = np.zeros((4, 3, 3))
    d[2, 0, 1] = math.log(0.25)  # cell (0, 1): 4 pixels wide
    s, d = _one_anchor_inputs(3, 3, d, fg)
    info = np.array([[40, 40, 0.5]])  # image 40x40: cells of row/col 2 are clipped to 39
    rois, sc = K.proposal_reference(s, d, info, ratios=(1,), scales=(1,), min_size=16, nms_thresh=0.7,
                                    post_nms_topn=0)
    # min size 16 * 0.5 = 8: the box of width 4 * 16 * 0.25 + 1 = 5 (score 0.5) goes; clipped cells are
    # 8 wide (32..39)
    assert sc.ravel().tolist() == [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
    # cell (2, 0): anchor [0, 32, 15, 47]; a zero delta gives centre 8 +- 16/2 (bbox_transform_inv has
    # no -1 on x2): [0, 32, 16, 48], clipped at 39
    np.testing.assert_array_equal(rois[1], [0, 0, 32, 16, 39])
    cvr, cvs = K.proposal_reference(s, d, info, ratios=(1,), scales=(1,), min_size=16, nms_thresh=0.7,
                                    post_nms_topn=9, quirks="cv2")
    assert 0.5 in cvs.ravel() and cvr.shape == (9, 5)
    top, _ = K.proposal_reference(s, d, info, ratios=(1,), scales=(1,), pre_nms_topn=3, post_nms_topn=2)
    assert top.shape == (2, 5)


def test_proposal_nms_overlap_rule_deviation():
    """Two boxes 0.5 pixel apart: py-faster-rcnn's overlap counts max(0, iw + 1) = 0.5 pixel of
    intersection (IoU > 0 suppresses at threshold 0); cv2's DetectionOutput rule needs iw >= 0."""
    s = np.zeros((1, 2, 1, 2))
    s[0, 1] = [[0.9, 0.8]]
    d = np.zeros((1, 4, 1, 2))
    # box 0: anchor [0, 0, 15, 15] with zero deltas -> [0, 0, 16, 16]; box 1: anchor [16, 0, 31, 15]
    # (centre 24) narrowed to 15 pixels -> [16.5, 0.5, 31.5, 15.5]: 0.5 pixel right of box 0
    d[0, 2, 0, 1] = math.log(15.0 / 16.0)
    d[0, 3, 0, 1] = math.log(15.0 / 16.0)
    info = np.array([[100, 100, 1]])
    kw = dict(ratios=(1,), scales=(1,), min_size=1, nms_thresh=0.0, post_nms_topn=0)
    py, _ = K.proposal_reference(s, d, info, **kw)
    cv, _ = K.proposal_reference(s, d, info, quirks="cv2", **kw)
    assert len(py) == 1
    assert len(cv) == 2 and cv[1, 1] == pytest.approx(16.5)
    pyf, _ = K.proposal(s, d, info, **kw)
    cvf, _ = K.proposal(s, d, info, quirks="cv2", **kw)
    assert len(pyf) == 1 and len(cvf) == 2


def _rpn_inputs(rng, h, w, a=9, scale=0.2):
    logits = rng.normal(size=(1, 2, a * h * w))
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = (e / e.sum(1, keepdims=True)).reshape(1, 2 * a, h, w)
    return prob, rng.normal(size=(1, 4 * a, h, w)) * scale


_PROPOSAL = ('layer {{ name: "l" type: "Proposal" bottom: "s" bottom: "d" bottom: "im_info" top: "l" '
             'proposal_param {{ ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 '
             'pre_nms_topn: {pre} post_nms_topn: {post} nms_thresh: {thr} }} }}')


@pytest.mark.parametrize("seed,h,w,pre,post,thr", [(0, 7, 9, 6000, 300, 0.7), (1, 10, 6, 100, 50, 0.6),
                                                   (2, 5, 5, 40, 20, 0.5)])
@pytest.mark.parametrize("dt", DTYPES)
def test_proposal_cv2_quirks_reproduce_cv2(tmp_path, seed, h, w, pre, post, thr, dt):
    rng = np.random.default_rng(seed)
    prob, d = _rpn_inputs(rng, h, w)
    prob, d = prob.astype(np.float32), d.astype(np.float32)  # what cv2 sees
    info = np.array([[h * 16 - 5, w * 16 - 3, 1.6]], np.float32)
    c = cv2_layer(tmp_path, _PROPOSAL.format(pre=pre, post=post, thr=thr), {"s": prob, "d": d, "im_info": info})
    for fn in (K.proposal, K.proposal_reference):
        r, sc = fn(prob.astype(dt), d.astype(dt), info.astype(dt), pre_nms_topn=pre, post_nms_topn=post,
                   nms_thresh=thr, quirks="cv2")
        assert r.shape == c.shape == (post, 5)
        m = match_roi_sets(r, c, atol=1e-3)
        assert not m["only_a"] and not m["only_b"], m
        assert_close(r, c, 1e-6, "rois in cv2's order")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quirks", ["none", "cv2"])
def test_proposal_fast_vs_reference(seed, quirks):
    rng = np.random.default_rng(seed)
    prob, d = _rpn_inputs(rng, 6 + seed, 8)
    info = np.array([[96 + 16 * seed, 128, 0.7]])
    ref, rs = K.proposal_reference(prob, d, info, post_nms_topn=60, quirks=quirks)
    for dt in DTYPES:
        fast, fs = K.proposal(prob.astype(dt), d.astype(dt), info, post_nms_topn=60, quirks=quirks)
        m = match_roi_sets(fast, ref, atol=1e-3, scores_a=fs, scores_b=rs)
        assert m["explained"], m
        if dt == "float64":
            np.testing.assert_array_equal(fast, ref)


def test_proposal_batch_index_and_errors():
    rng = np.random.default_rng(3)
    p1, d1 = _rpn_inputs(rng, 4, 4)
    p2, d2 = _rpn_inputs(rng, 4, 4)
    rois, _ = K.proposal_reference(np.concatenate([p1, p2]), np.concatenate([d1, d2]),
                                   np.array([[64, 64, 1], [64, 64, 1]]), post_nms_topn=10)
    one, _ = K.proposal_reference(p2, d2, np.array([[64, 64, 1]]), post_nms_topn=10)
    assert set(rois[:, 0]) == {0, 1}
    np.testing.assert_array_equal(rois[rois[:, 0] == 1][:, 1:], one[:, 1:])
    with pytest.raises(ShapeError):
        K.proposal(p1[:, :17], d1, np.array([[64, 64, 1]]))
    with pytest.raises(ShapeError):
        K.proposal(p1, d1[:, :35], np.array([[64, 64, 1]]))
    with pytest.raises(ShapeError):
        K.proposal(p1, d1, np.array([64.0]))
    with pytest.raises(ValueError):
        K.proposal(p1, d1, np.array([[64, 64, 1]]), quirks="caffe")
    with pytest.raises(ValueError):
        K.proposal(p1, d1, np.array([[0, 64, 1]]))


# ---- ROI pooling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("fn", [K.roi_pool, K.roi_pool_reference])
def test_roi_pool_hand_computed(dt, fn):
    x = np.arange(16, dtype=dt).reshape(1, 1, 4, 4)
    out = fn(x, np.array([[0, 0, 0, 3, 3]], dt), (2, 2), 1.0)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])
    # scale 0.5: corners round(0.5) = 1 (halves away from zero) and round(2.5) = 3: rows/cols 1..3,
    # size 3, bins [floor(0), ceil(1.5)) = [0, 2) and [floor(1.5), ceil(3)) = [1, 3) from the start
    out = fn(x, np.array([[0, 1, 1, 5, 5]], dt), (2, 2), 0.5)
    np.testing.assert_array_equal(out[0, 0], [[10, 11], [14, 15]])
    # a roi outside the map: every bin is empty -> 0
    out = fn(x, np.array([[0, 40, 40, 50, 50]], dt), (2, 3), 1.0)
    assert out.shape == (1, 1, 2, 3) and not out.any()


_ROI = ('layer {{ name: "l" type: "ROIPooling" bottom: "x" bottom: "rois" top: "l" '
        'roi_pooling_param {{ pooled_w: {pw} pooled_h: {ph} spatial_scale: {ss} }} }}')
_ROIS = np.array([[0, 0, 0, 100, 100], [0, 10.4, 20.5, 200, 150], [0, 3, 3, 3, 3], [0, 50, 60, 380, 310],
                  [0, 7.5, 8.5, 24.5, 40.49], [1, 30, 2, 90, 70], [0, 0, 0, 0, 0]], np.float32)


@pytest.mark.parametrize("ph,pw,ss", [(7, 7, 0.0625), (5, 7, 0.0625), (3, 2, 0.125)])
@pytest.mark.parametrize("dt", DTYPES)
def test_roi_pool_vs_cv2(tmp_path, ph, pw, ss, dt):
    rng = np.random.default_rng(ph * 10 + pw)
    x = rng.normal(size=(2, 6, 20, 24)).astype(np.float32)
    c = cv2_layer(tmp_path, _ROI.format(ph=ph, pw=pw, ss=ss), {"x": x, "rois": _ROIS})
    for fn in (K.roi_pool, K.roi_pool_reference):
        out = fn(x.astype(dt), _ROIS.astype(dt), (ph, pw), ss)
        assert out.dtype == np.dtype(dt)
        np.testing.assert_array_equal(out.astype(np.float32), c)


def test_roi_pool_errors():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ShapeError):
        K.roi_pool(x, np.zeros((3, 4)), 2)
    with pytest.raises(ShapeError):
        K.roi_pool(x, np.array([[1.0, 0, 0, 1, 1]]), 2)  # batch index 1 of a batch of 1
    with pytest.raises(ValueError):
        K.roi_pool(x, np.array([[0.0, 0, 0, 1, 1]]), 0)
    with pytest.raises(ValueError):
        K.roi_pool_reference(x, np.array([[0, np.nan, 0, 1, 1]]), 2)


# ---- PSROI pooling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("fn", [K.psroi_pool, K.psroi_pool_reference])
def test_psroi_pool_hand_computed(dt, fn):
    """group 2, one output channel: bin (i, j) averages channel 2*i + j over its part of the roi."""
    x = np.zeros((1, 4, 4, 4), dt)
    for c in range(4):
        x[0, c] = c + 1
    out = fn(x, np.array([[0, 0, 0, 3, 3]], dt), 1, 2, 1.0)
    np.testing.assert_array_equal(out[0, 0], [[1, 2], [3, 4]])
    # a ramp on channel 0: roi cols 0..3 (end (3 + 1) * 1 = 4), bin (0, 0) = rows 0..1, cols 0..1
    x[0, 0] = np.arange(16).reshape(4, 4)
    out = fn(x, np.array([[0, 0, 0, 3, 3]], dt), 1, 2, 1.0)
    assert out[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)


_PSROI = ('layer {{ name: "l" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "l" '
          'psroi_pooling_param {{ spatial_scale: {ss} output_dim: {od} group_size: {g} }} }}')


@pytest.mark.parametrize("od,g,ss", [(3, 3, 0.0625), (2, 7, 0.0625), (4, 2, 0.25)])
@pytest.mark.parametrize("dt", DTYPES)
def test_psroi_pool_vs_cv2(tmp_path, od, g, ss, dt):
    rng = np.random.default_rng(od * 10 + g)
    x = rng.normal(size=(2, od * g * g, 20, 24)).astype(np.float32)
    c = cv2_layer(tmp_path, _PSROI.format(ss=ss, od=od, g=g), {"x": x, "rois": _ROIS})
    for fn in (K.psroi_pool, K.psroi_pool_reference):
        out = fn(x.astype(dt), _ROIS.astype(dt), od, g, ss)
        assert out.dtype == np.dtype(dt)
        assert_close(out, c, "f32_vs_f64")


def test_psroi_pool_errors():
    with pytest.raises(ShapeError):
        K.psroi_pool(np.zeros((1, 5, 4, 4)), np.zeros((1, 5)), 1, 2)
    with pytest.raises(ValueError):
        K.psroi_pool(np.zeros((1, 4, 4, 4)), np.zeros((1, 5)), 1, 0)


@pytest.mark.parametrize("dt", DTYPES)
def test_no_rois_left_pool_to_nothing(dt):
    """py-faster-rcnn's Proposal can leave no roi (min-size filter); the pooling layers after it
    then pool nothing. The empty (0, 5) and (0, 5, 1, 1) rois used to fail in numpy's reshape."""
    x = np.ones((1, 8, 6, 6), dt)
    for rois in (np.zeros((0, 5), dt), np.zeros((0, 5, 1, 1), dt)):
        for fn in (K.roi_pool, K.roi_pool_reference):
            assert fn(x, rois, (2, 3), 0.5).shape == (0, 8, 2, 3)
        for fn in (K.psroi_pool, K.psroi_pool_reference):
            assert fn(x, rois, 2, 2, 0.5).shape == (0, 2, 2, 2)


def test_proposal_with_no_box_left_runs_through_a_net(tmp_path):
    """A Proposal -> ROIPooling net whose every box is under min_size * scale (one anchor of 16x16
    pixels, zero deltas, min_size 16 at scale 2: 16 < 32): no rois, an empty pooled blob, in
    refnet.Net as in the kernels (it ended in numpy's reshape error)."""
    import refnet

    p = tmp_path / "rpn.prototxt"
    p.write_text('input: "score" input_shape { dim: 1 dim: 2 dim: 3 dim: 4 }\n'
                 'input: "delta" input_shape { dim: 1 dim: 4 dim: 3 dim: 4 }\n'
                 'input: "im_info" input_shape { dim: 1 dim: 3 }\n'
                 'input: "feat" input_shape { dim: 1 dim: 5 dim: 3 dim: 4 }\n'
                 'layer { name: "proposal" type: "Proposal" bottom: "score" bottom: "delta" bottom: "im_info" '
                 'top: "rois" proposal_param { ratio: 1 scale: 1 } }\n'
                 'layer { name: "pool" type: "ROIPooling" bottom: "feat" bottom: "rois" top: "pool" '
                 'roi_pooling_param { pooled_w: 2 pooled_h: 2 spatial_scale: 0.0625 } }\n')
    net = refnet.load(p)
    feeds = {"score": np.full((1, 2, 3, 4), 0.5), "delta": np.zeros((1, 4, 3, 4)),
             "feat": np.ones((1, 5, 3, 4))}
    for prec in ("float64", "float32"):
        kept = net.forward({**feeds, "im_info": np.array([[48.0, 64.0, 0.5]])}, precision=prec,
                           outputs=["proposal", "pool"])
        assert kept["proposal"].shape[0] == 12 and kept["pool"].shape == (12, 5, 2, 2)  # 16 >= 8: all kept
        none = net.forward({**feeds, "im_info": np.array([[48.0, 64.0, 2.0]])}, precision=prec,
                           outputs=["proposal", "pool"])
        assert none["proposal"].shape == (0, 5) and none["pool"].shape == (0, 5, 2, 2)


# ---- DetectionOutput in the Faster R-CNN configuration ----------------------------------------------
_DETOUT = ('layer {{ name: "l" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "pri" top: "l" '
           'detection_output_param {{ num_classes: {nc} share_location: {share} background_label_id: 0 '
           'nms_param {{ nms_threshold: 0.3 }} code_type: CENTER_SIZE keep_top_k: {k} '
           'variance_encoded_in_target: true normalized_bbox: false }} }}')


@pytest.mark.parametrize("share,seed,k", [("false", 0, 100), ("true", 1, 100), ("false", 2, 10)])
@pytest.mark.parametrize("dt", DTYPES)
def test_detection_output_faster_rcnn_config_vs_cv2(tmp_path, share, seed, k, dt):
    """Per-class boxes (share_location false) decoded against pixel proposals of shape (1, 1, P*4, 1)
    with the +1 pixel sizes of normalized_bbox: false, as Faster R-CNN / R-FCN feed it."""
    rng = np.random.default_rng(seed)
    p, nc = 40, 5
    x1 = rng.uniform(0, 150, p)
    y1 = rng.uniform(0, 150, p)
    pri = np.stack([x1, y1, x1 + rng.uniform(5, 80, p), y1 + rng.uniform(5, 80, p)], 1)
    pri[:3] = pri[3]  # duplicate proposals (ties in NMS)
    nloc = 1 if share == "true" else nc
    loc = (rng.normal(size=(1, p * nloc * 4)) * 0.1).astype(np.float32)
    logits = rng.normal(size=(p, nc)) * 2
    conf = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).reshape(1, -1).astype(np.float32)
    pri = pri.reshape(1, 1, -1, 1).astype(np.float32)
    c = cv2_layer(tmp_path, _DETOUT.format(nc=nc, share=share, k=k), {"loc": loc, "conf": conf, "pri": pri})
    for fn in (K.detection_output, K.detection_output_reference):
        out = fn(loc.astype(dt), conf.astype(dt), pri.astype(dt), num_classes=nc, share_location=share == "true",
                 nms_threshold=0.3, keep_top_k=k, variance_encoded_in_target=True, normalized=False,
                 code_type="CENTER_SIZE", confidence_threshold=0.0)
        assert out.shape == c.shape
        a = out.reshape(-1, 7).astype(np.float64)
        b = c.reshape(-1, 7).astype(np.float64)
        # equal scores may come in either order: compare rows sorted by (score, label, box)
        key = lambda r: np.lexsort((r[:, 3], r[:, 1], -np.round(r[:, 2], 5)))  # noqa: E731
        assert_close(a[key(a)], b[key(b)], "vs_cv2", "detection rows")


# ---- the cv2 deviations, shown by cv2 itself ------------------------------------------------------
_ONE_ANCHOR = ('layer {{ name: "l" type: "Proposal" bottom: "s" bottom: "d" bottom: "im_info" top: "l" '
               'proposal_param {{ feat_stride: {stride} base_size: {base} ratio: {ratio} scale: 1 '
               'pre_nms_topn: 100 post_nms_topn: {post} nms_thresh: {thr} }} }}')


def test_cv2_proposal_deviations(tmp_path):
    """One 16x16 anchor per cell of a 2x3 map, zero deltas except where noted. cv2: keeps a 5-pixel box
    (no min_size filter), drops the anchor whose object score is exactly 0, clips to int(im_w) - 1
    (im_info width 40.7: 39, py-faster-rcnn 39.7), pads with zero rows to post_nms_topn."""
    fg = np.array([[0.9, 0.5, 0.0], [0.3, 0.8, 0.4]], np.float32)
    s, d = _one_anchor_inputs(2, 3, np.zeros((4, 2, 3)), fg)
    d[0, 2, 0, 1] = d[0, 3, 0, 1] = math.log(0.25)  # cell (0, 1): 4x4 -> 5 pixels wide (+1)
    s, d = s.astype(np.float32), d.astype(np.float32)
    info = np.array([[32.0, 40.7, 1.0]], np.float32)
    layer = _ONE_ANCHOR.format(stride=16, base=16, ratio=1, post=8, thr=0.7)
    c = cv2_layer(tmp_path, layer, {"s": s, "d": d, "im_info": info})
    kw = dict(ratios=(1,), scales=(1,), post_nms_topn=8)
    cvq, _ = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, quirks="cv2", **kw)
    py, py_s = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, **kw)
    np.testing.assert_allclose(cvq, c, atol=1e-5)
    assert c.shape == (8, 5) and not c[5:].any()           # 5 proposals, 3 zero rows
    assert np.any(np.isclose(c[:, 3] - c[:, 1], 4.0))     # the small box (x2 - x1 = 4) is kept
    assert c[:, 3].max() == 39.0                           # clipped at int(40.7) - 1
    # py-faster-rcnn: no padding; min size 16 drops the small box and the clipped ones (39.7 - 32 + 1 < 16)
    np.testing.assert_allclose(py_s.ravel(), [0.9, 0.8, 0.3], rtol=1e-6)
    py, py_s = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, **kw, min_size=1)
    assert len(py) == 6 and 0.0 in py_s and py[:, 3].max() == pytest.approx(39.7)  # score 0 kept


def test_cv2_anchor_rounding_and_overlap_rule(tmp_path):
    """base_size 18, ratio 0.5: cv2's anchor is 13 pixels high (floor(12.5 + 0.5)), py-faster-rcnn's 12
    (numpy rounds half to even); two boxes 0.5 pixel apart are not overlapping for cv2's NMS."""
    s = np.zeros((1, 2, 1, 1), np.float32)
    s[0, 1] = 0.9
    d = np.zeros((1, 4, 1, 1), np.float32)
    info = np.array([[200, 200, 1]], np.float32)
    c = cv2_layer(tmp_path, _ONE_ANCHOR.format(stride=16, base=18, ratio=0.5, post=1, thr=0.7),
                  {"s": s, "d": d, "im_info": info})
    kw = dict(base_size=18, ratios=(0.5,), scales=(1,), min_size=1, post_nms_topn=1)
    cvq, _ = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, quirks="cv2", **kw)
    py, _ = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, **kw)
    np.testing.assert_allclose(cvq, c, atol=1e-5)
    assert c[0, 4] - c[0, 2] == pytest.approx(13.0) and py[0, 4] - py[0, 2] == pytest.approx(12.0)
    # overlap rule: box 0 [0, 0, 16, 16], box 1 [16.5, 0.5, 31.5, 15.5]; cv2 needs nms_thresh > 0
    s = np.zeros((1, 2, 1, 2), np.float32)
    s[0, 1] = [[0.9, 0.8]]
    d = np.zeros((1, 4, 1, 2), np.float32)
    d[0, 2, 0, 1] = d[0, 3, 0, 1] = math.log(15.0 / 16.0)
    c = cv2_layer(tmp_path, _ONE_ANCHOR.format(stride=16, base=16, ratio=1, post=2, thr=0.001),
                  {"s": s, "d": d, "im_info": info})
    kw = dict(ratios=(1,), scales=(1,), min_size=1, post_nms_topn=2, nms_thresh=0.001)
    py, _ = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, **kw)
    cvq, _ = K.proposal_reference(s.astype(np.float64), d.astype(np.float64), info, quirks="cv2", **kw)
    assert np.any(c[1] != 0) and len(py) == 1  # cv2 keeps both, py-faster-rcnn suppresses box 1
    np.testing.assert_allclose(cvq, c, atol=1e-5)


@pytest.mark.parametrize("ph,pw,ss", [(7, 7, 0.0625), (3, 2, 0.125)])
def test_roi_pool_vs_onnx_maxroipool(ph, pw, ss):
    """ONNX MaxRoiPool (onnxruntime) has Caffe's ROIPooling rules: an exact export target."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = np.random.default_rng(5).normal(size=(2, 6, 20, 24)).astype(np.float32)
    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], pooled_shape=[ph, pw], spatial_scale=ss)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                                        helper.make_tensor_value_info("rois", TensorProto.FLOAT, _ROIS.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (len(_ROIS), 6, ph, pw))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x, "rois": _ROIS})[0]
    for fn, dt in ((K.roi_pool, np.float32), (K.roi_pool_reference, np.float64)):
        np.testing.assert_array_equal(fn(x.astype(dt), _ROIS.astype(dt), (ph, pw), ss).astype(np.float32), want)


def test_match_roi_sets_is_order_free_and_tie_aware():
    a = np.array([[0, 1, 2, 10, 12], [0, 5, 5, 20, 20], [0, 0, 0, 0, 0]])
    b = np.array([[0, 5, 5, 20, 20.0001], [0, 1, 2, 10, 12], [0, 0, 0, 0, 0]])
    m = match_roi_sets(a, b)
    assert m["matched"] == 2 and not m["only_a"] and not m["only_b"] and m["explained"]
    # one more row in b: explained only when its score ties the cut (the last kept score)
    b2 = np.vstack([b[:2], [[0, 30, 30, 40, 40]]])
    near = match_roi_sets(a[:2], b2, scores_a=np.array([0.9, 0.5]), scores_b=np.array([0.9, 0.5, 0.5 + 1e-8]))
    far = match_roi_sets(a[:2], b2, scores_a=np.array([0.9, 0.5]), scores_b=np.array([0.9, 0.5, 0.7]))
    assert near["only_b"] == [2] and near["explained"]
    assert far["only_b"] == [2] and not far["explained"]
