"""Detection kernels: hand-computed IoU, cv2.dnn.NMSBoxes / NMSBoxesBatched for NMS (random
boxes with tied scores, threshold-equal IoU and score cases, top_k, eta), cv2.dnn single-layer
Caffe nets (prototxt only) for PriorBox and DetectionOutput, hand-worked box decoding, and
fast vs reference (hypothesis, both dtypes)."""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest
from conftest import assert_close, caffe_inputs, cv2_layer
from hypothesis import given, settings
from hypothesis import strategies as st

from refnet.errors import ShapeError

D = importlib.import_module("refnet.kernels.detection")

HYP = settings(max_examples=30, deadline=None, derandomize=True)
DTYPES = st.sampled_from(["float32", "float64"])


def _rand_boxes(rng, n, scale=10.0, size=5.0):
    xy = rng.random((n, 2)) * scale
    return np.concatenate([xy, xy + rng.random((n, 2)) * size + 1e-3], axis=1)


def _rects(boxes):
    """cv2's Rect2d (x, y, w, h) floats."""
    return [(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])) for b in boxes]


# ---- IoU ----------------------------------------------------------------------------------
def test_iou_hand_computed():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 5, 9]], np.float64)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [0.5, 0, 1.5, 1]], np.float64)
    want = np.array([
        [1 / 7, 1.0, 0.0, 1 / 4],  # inter 1 / union 7; same box; touching edge; 1 / 4
        [0.0, 1 / 4, 0.0, 1 / 3],  # touching corner; contained (1 / 4); inter .5 / union 1.5
        [0.0, 0.0, 0.0, 0.0],  # zero-area box
    ])
    for fn in (D.iou, D.iou_reference):
        got = fn(a, b)
        assert got.shape == (3, 4)
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, na=st.integers(0, 12), nb=st.integers(0, 12))
def test_iou_fast_vs_reference(seed, dt, na, nb):
    rng = np.random.default_rng(seed)
    a, b = _rand_boxes(rng, na).astype(dt), _rand_boxes(rng, nb).astype(dt)
    a[: na // 4, 2] = a[: na // 4, 0] - 1  # some inverted boxes: zero area
    r = D.iou_reference(a.astype(np.float64), b.astype(np.float64))
    got = D.iou(a, b)
    assert got.dtype == np.dtype(dt) and got.shape == (na, nb)
    assert_close(got, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle")
    assert ((r >= 0) & (r <= 1)).all()
    np.testing.assert_allclose(D.iou_reference(b, a), r.T.astype(dt), rtol=1e-6)


def test_iou_errors_and_nan():
    a = np.zeros((2, 4), np.float32)
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        D.iou(np.zeros((2, 3), np.float32), a)
    with pytest.raises(TypeError, match="dtype"):
        D.iou(a, a.astype(np.float64))
    b = np.array([[0, 0, 1, 1], [np.nan, 0, 1, 1]], np.float64)
    for fn in (D.iou, D.iou_reference):
        r = fn(b, b)
        assert r[0, 0] == 1 and np.isnan(r[1]).all() and np.isnan(r[:, 1]).all()


# ---- NMS ----------------------------------------------------------------------------------
@HYP
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 40), thr=st.sampled_from([0.3, 0.45, 0.5,
                                                                                  0.7, 1.0]),
       sthr=st.sampled_from([0.0, 0.2, 0.5]), top_k=st.sampled_from([0, 1, 7]),
       eta=st.sampled_from([1.0, 0.9, 0.6]), ties=st.booleans())
def test_nms_vs_cv2_nmsboxes(seed, n, thr, sthr, top_k, eta, ties):
    rng = np.random.default_rng(seed)
    boxes = _rand_boxes(rng, n)
    scores = rng.random(n).astype(np.float32)
    if ties:  # tied scores, and scores exactly at the score threshold
        scores = (np.round(scores * 5) / 5).astype(np.float32)
    want = np.asarray(cv2.dnn.NMSBoxes(_rects(boxes), scores.tolist(), sthr, thr, eta=eta,
                                       top_k=top_k), dtype=np.int64).reshape(-1)
    for fn in (D.nms, D.nms_reference):
        got = fn(boxes, scores, thr, sthr, top_k, eta)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    got32 = D.nms(boxes.astype(np.float32), scores, thr, sthr, top_k, eta)
    np.testing.assert_array_equal(got32, want)


HALF = [[0, 0, 3, 1], [1, 0, 4, 1]]  # IoU = 2 / 4 = 0.5 exactly
THIRD = [[0, 0, 2, 1], [1, 0, 3, 1]]  # IoU = 1 / 3


@pytest.mark.parametrize(("boxes", "thr", "kept"), [(HALF, 0.5, [0, 1]), (HALF, 0.4999, [0]),
                                                    (THIRD, 1 / 3, [0, 1]), (THIRD, 0.3333, [0])])
def test_nms_threshold_equal_iou_is_kept(boxes, thr, kept):
    boxes = np.array(boxes, np.float64)
    scores = np.array([0.9, 0.8], np.float32)
    assert list(cv2.dnn.NMSBoxes(_rects(boxes), scores.tolist(), 0.0, thr)) == kept
    for fn in (D.nms, D.nms_reference):
        assert fn(boxes, scores, thr).tolist() == kept
        assert fn(boxes[::-1].copy(), scores, thr).tolist() == kept


def test_nms_score_threshold_equal_is_dropped_and_ties_keep_index_order():
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 1, 1], [9, 9, 10, 10]], np.float64)
    scores = np.array([0.5, 0.5, 0.5, 0.25], np.float32)
    for fn in (D.nms, D.nms_reference):
        assert fn(boxes, scores, 0.5).tolist() == [0, 1, 3]  # 2 duplicates 0, same score
        assert fn(boxes, scores, 0.5, score_threshold=0.25).tolist() == [0, 1]
        assert fn(boxes, scores, 0.5, score_threshold=0.5).tolist() == []
        assert fn(boxes, scores, 0.5, top_k=2).tolist() == [0, 1]
    assert list(cv2.dnn.NMSBoxes(_rects(boxes), scores.tolist(), 0.25, 0.5)) == [0, 1]


def test_nms_degenerate_and_nan():
    # two zero-area boxes overlap fully under cv2's Rect2d rule
    boxes = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2]], np.float64)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    want = list(cv2.dnn.NMSBoxes(_rects(boxes), scores.tolist(), 0.0, 0.5))
    assert D.nms(boxes, scores, 0.5).tolist() == want == [0, 2]
    assert D.nms_reference(boxes, scores, 0.5).tolist() == want
    # NaN scores are never candidates; empty input gives an empty int64 array
    s = np.array([np.nan, 0.5, np.nan], np.float32)
    assert D.nms(boxes[[2, 2, 2]], s, 0.5).tolist() == [1]
    assert D.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).dtype == np.int64
    with pytest.raises(ShapeError, match="one score per box"):
        D.nms(boxes, scores[:2], 0.5)
    with pytest.raises(ValueError, match="eta"):
        D.nms(boxes, scores, 0.5, eta=0.0)


@HYP
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 40), thr=st.sampled_from([0.3, 0.5]),
       sthr=st.sampled_from([0.0, 0.4]), top_k=st.sampled_from([0, 5]), ncls=st.integers(1, 4))
def test_batched_nms_vs_cv2(seed, n, thr, sthr, top_k, ncls):
    rng = np.random.default_rng(seed)
    boxes = _rand_boxes(rng, n)
    scores = (np.round(rng.random(n) * 10) / 10).astype(np.float32)
    cls = rng.integers(0, ncls, n)
    want = np.asarray(cv2.dnn.NMSBoxesBatched(_rects(boxes), scores.tolist(), cls.tolist(), sthr,
                                              thr, top_k=top_k), dtype=np.int64).reshape(-1)
    for fn in (D.batched_nms, D.batched_nms_reference):
        np.testing.assert_array_equal(fn(boxes, scores, cls, thr, sthr, top_k), want)
    # per class it is plain NMS
    got = D.batched_nms(boxes, scores, cls, thr, sthr)
    for c in range(ncls):
        idx = np.flatnonzero(cls == c)
        per = idx[D.nms(boxes[idx], scores[idx], thr, sthr)]
        assert sorted(per.tolist()) == sorted(i for i in got.tolist() if cls[i] == c)


# ---- PriorBox -----------------------------------------------------------------------------
PRIOR_CONFIGS = [
    # (caffe prior_box_param, kwargs, feature hw, image hw)
    ("min_size: 30 aspect_ratio: 2 flip: true clip: false variance: 0.1",
     dict(min_sizes=(30,), aspect_ratios=(2,), flip=True, clip=False, variance=(0.1,)),
     (3, 4), (30, 40)),
    ("min_size: 5 min_size: 8 max_size: 10 max_size: 12 aspect_ratio: 2 aspect_ratio: 1 "
     "aspect_ratio: 3 flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 "
     "variance: 0.2",
     dict(min_sizes=(5, 8), max_sizes=(10, 12), aspect_ratios=(2, 1, 3), flip=True, clip=False,
          variance=(0.1, 0.1, 0.2, 0.2)), (3, 4), (30, 40)),
    ("min_size: 60 max_size: 111 aspect_ratio: 2 aspect_ratio: 3 flip: false clip: true "
     "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 16 offset: 0.5",
     dict(min_sizes=(60,), max_sizes=(111,), aspect_ratios=(2, 3), flip=False, clip=True,
          variance=(0.1, 0.1, 0.2, 0.2), step=(16, 16)), (5, 5), (75, 80)),
    ("min_size: 21 aspect_ratio: 2 aspect_ratio: 2.0 flip: true clip: true variance: 0.2 "
     "step_h: 8 step_w: 12 offset: 0.25",
     dict(min_sizes=(21,), aspect_ratios=(2, 2.0), clip=True, variance=(0.2,), step=(8, 12),
          offset=0.25), (4, 6), (32, 64)),
    ("min_size: 100 flip: false clip: true variance: 0.1 offset: 0.0",
     dict(min_sizes=(100,), flip=False, clip=True, variance=(0.1,), offset=0.0), (2, 3),
     (300, 300)),
    ("width: 10 width: 20.5 width: 7 height: 12 height: 8 height: 30 clip: false variance: 0.1 "
     "variance: 0.1 variance: 0.2 variance: 0.2",
     dict(widths=(10, 20.5, 7), heights=(12, 8, 30), clip=False, variance=(0.1, 0.1, 0.2, 0.2)),
     (3, 5), (40, 50)),
]


@pytest.mark.parametrize(("param", "kw", "fhw", "ihw"), PRIOR_CONFIGS)
def test_prior_box_vs_cv2(tmp_path, param, kw, fhw, ihw):
    feat = np.zeros((1, 2) + fhw, np.float32)
    img = np.zeros((1, 3) + ihw, np.float32)
    want = cv2_layer(tmp_path, 'layer { name: "l" type: "PriorBox" bottom: "feat" bottom: "img" '
                               f'top: "l" prior_box_param {{ {param} }} }}',
                     {"feat": feat, "img": img})
    for fn, dt in ((D.prior_box, np.float32), (D.prior_box_reference, np.float64)):
        got = fn(fhw, ihw, dtype=dt, **kw)
        assert got.dtype == dt and got.shape == want.shape
        assert_close(got, want, "vs_cv2", param)


def test_prior_box_hand_computed():
    # 1x2 cells, image 20x40 (h, w) -> step (20, 20); min 10, max 40 (-> 20), ar 2 with flip
    got = D.prior_box_reference((1, 2), (20, 40), min_sizes=(10,), max_sizes=(40,),
                                aspect_ratios=(2,), variance=(0.1, 0.1, 0.2, 0.2))
    cx, cy = 10.0, 10.0
    s2 = np.sqrt(2.0)
    sizes = [(10, 10), (20, 20), (10 * s2, 10 / s2), (10 / s2, 10 * s2)]
    want = []
    for cx in (10.0, 30.0):
        for w, h in sizes:
            want += [(cx - w / 2) / 40, (cy - h / 2) / 20, (cx + w / 2) / 40, (cy + h / 2) / 20]
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-14)
    np.testing.assert_array_equal(got[0, 1], [0.1, 0.1, 0.2, 0.2] * 8)
    fast = D.prior_box((1, 2), (20, 40), min_sizes=(10,), max_sizes=(40,), aspect_ratios=(2,),
                       variance=(0.1, 0.1, 0.2, 0.2), dtype=np.float64)
    assert_close(fast, got, "f64_vs_oracle")


@HYP
@given(fh=st.integers(1, 6), fw=st.integers(1, 6), nmin=st.integers(1, 3), with_max=st.booleans(),
       ars=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), max_size=3), flip=st.booleans(),
       clip=st.booleans(), offset=st.sampled_from([0.0, 0.5, 0.3]))
def test_prior_box_fast_vs_reference(fh, fw, nmin, with_max, ars, flip, clip, offset):
    mins = tuple(10.0 * (i + 1) for i in range(nmin))
    kw = dict(min_sizes=mins, max_sizes=tuple(m + 7 for m in mins) if with_max else (),
              aspect_ratios=tuple(ars), flip=flip, clip=clip, offset=offset,
              variance=(0.1, 0.1, 0.2, 0.2))
    r = D.prior_box_reference((fh, fw), (64, 96), **kw)
    for dt, tol in ((np.float32, "f32_vs_f64"), (np.float64, "f64_vs_oracle")):
        got = D.prior_box((fh, fw), (64, 96), dtype=dt, **kw)
        assert got.dtype == dt
        assert_close(got, r, tol)


def test_prior_box_errors():
    with pytest.raises(ValueError, match="min_sizes"):
        D.prior_box((2, 2), (10, 10))
    with pytest.raises(ValueError, match="exclude"):
        D.prior_box((2, 2), (10, 10), min_sizes=(3,), widths=(2,), heights=(2,))
    with pytest.raises(ShapeError, match="one max_size per min_size"):
        D.prior_box((2, 2), (10, 10), min_sizes=(3, 4), max_sizes=(5,))
    with pytest.raises(ValueError, match="exceed"):
        D.prior_box((2, 2), (10, 10), min_sizes=(3,), max_sizes=(2,))
    with pytest.raises(ShapeError, match="variance"):
        D.prior_box((2, 2), (10, 10), min_sizes=(3,), variance=(0.1, 0.2))


# ---- box decoding -------------------------------------------------------------------------
def test_decode_boxes_hand_computed():
    prior = np.array([[0.2, 0.2, 0.6, 0.4]])  # w 0.4, h 0.2, centre (0.4, 0.3)
    var = np.array([[0.1, 0.1, 0.2, 0.2]])
    loc = np.array([[1.0, -2.0, 0.5, np.log(2) / 0.2]])
    cases = {
        "CORNER": [0.2 + 0.1, 0.2 - 0.2, 0.6 + 0.1, 0.4 + np.log(2)],
        "CORNER_SIZE": [0.2 + 0.1 * 0.4, 0.2 - 0.2 * 0.2, 0.6 + 0.1 * 0.4,
                        0.4 + np.log(2) * 0.2],
        # centre (0.4 + 0.1*0.4, 0.3 - 0.2*0.2) = (0.44, 0.26); size (0.4 e^0.1, 0.2 * 2)
        "CENTER_SIZE": [0.44 - 0.2 * np.exp(0.1), 0.26 - 0.2, 0.44 + 0.2 * np.exp(0.1),
                        0.26 + 0.2],
    }
    for code, want in cases.items():
        for fn in (D.decode_boxes, D.decode_boxes_reference):
            np.testing.assert_allclose(fn(loc, prior, var, code)[0], want, rtol=1e-14, atol=1e-16)
    # variance encoded in target: loc used as is
    np.testing.assert_allclose(D.decode_boxes(loc * var, prior, None, "CENTER_SIZE",
                                              variance_encoded_in_target=True)[0],
                               cases["CENTER_SIZE"], rtol=1e-14)
    # clip to [0, 1]; cv2's pixel rule (normalized=False) widens CENTER_SIZE priors by 1
    np.testing.assert_allclose(D.decode_boxes(loc, prior, var, "CORNER", clip=True)[0],
                               np.clip(cases["CORNER"], 0, 1))
    pix = D.decode_boxes_reference(np.zeros((1, 4)), np.array([[10.0, 20, 13, 21]]), var,
                                   normalized=False)
    np.testing.assert_allclose(pix[0], [10, 20, 14, 22])


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, code=st.sampled_from(["CORNER", "CENTER_SIZE",
                                                                         "CORNER_SIZE"]),
       enc=st.booleans(), clip=st.booleans(), norm=st.booleans(), p=st.integers(1, 20))
def test_decode_boxes_fast_vs_reference(seed, dt, code, enc, clip, norm, p):
    rng = np.random.default_rng(seed)
    priors = _rand_boxes(rng, p, 0.7, 0.3).astype(dt)
    loc = rng.normal(0, 1, (3, p, 4)).astype(dt)
    var = np.broadcast_to(np.array([0.1, 0.1, 0.2, 0.2], dt), (p, 4))
    clip = clip and norm
    r = D.decode_boxes_reference(loc.astype(np.float64), priors.astype(np.float64),
                                 var.astype(np.float64), code, enc, clip, norm)
    got = D.decode_boxes(loc, priors, var, code, enc, clip, norm)
    assert got.dtype == np.dtype(dt) and got.shape == loc.shape
    assert_close(got, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle")


def test_decode_boxes_errors():
    a = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="code_type"):
        D.decode_boxes(a, a, a, "CENTER")
    with pytest.raises(ShapeError, match="variances"):
        D.decode_boxes(a, a, None)
    with pytest.raises(ShapeError, match="last axis of 4"):
        D.decode_boxes(np.zeros((2, 3), np.float32), a, a)
    with pytest.raises(ValueError, match="clip"):
        D.decode_boxes(a, a, a, clip=True, normalized=False)


# ---- DetectionOutput ----------------------------------------------------------------------
def _ssd_inputs(rng, n, p, c, share=True, venc=False, conf_scale=3.0, dt=np.float32):
    priors = np.zeros((1, 1 if venc else 2, p * 4), dt)
    priors[0, 0] = _rand_boxes(rng, p, 0.7, 0.3).reshape(-1)
    if not venc:
        priors[0, 1] = np.tile([0.1, 0.1, 0.2, 0.2], p)
    nloc = 1 if share else c
    loc = rng.normal(0, 0.5, (n, p * nloc * 4)).astype(dt)
    logits = rng.normal(0, conf_scale, (n, p, c))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    conf = (e / e.sum(-1, keepdims=True)).reshape(n, p * c).astype(dt)
    return loc, conf, priors


def _detout_proto(n, p, c, *, share=True, bg=0, nms=0.45, top_k=-1, keep=50, thr=0.01,
                  code="CENTER_SIZE", venc=False, clip=False, extra=""):
    nloc = 1 if share else c
    return (caffe_inputs({"loc": (n, p * nloc * 4), "conf": (n, p * c),
                          "pri": (1, 1 if venc else 2, p * 4)})
            + 'layer { name: "l" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
              f'bottom: "pri" top: "l" detection_output_param {{ num_classes: {c} '
              f"share_location: {str(share).lower()} background_label_id: {bg} "
              f"nms_param {{ nms_threshold: {nms} top_k: {top_k} {extra} }} code_type: {code} "
              f"keep_top_k: {keep} confidence_threshold: {thr} "
              f"variance_encoded_in_target: {str(venc).lower()} clip: {str(clip).lower()} }} }}")


def _cv2_detout(tmp_path, proto, loc, conf, priors):
    p = tmp_path / f"det{len(list(tmp_path.iterdir()))}.prototxt"
    p.write_text(proto)
    net = cv2.dnn.readNetFromCaffe(str(p))
    net.enableFusion(False)
    for k, v in (("loc", loc), ("conf", conf), ("pri", priors)):
        net.setInput(np.ascontiguousarray(v, dtype=np.float32), k)
    return net.forward("l")


DETOUT_CASES = [
    # (n, p, c, kwargs)  -- keep_top_k > 0 always: cv2 4.14 corrupts memory with keep_top_k -1
    (1, 30, 4, dict()),
    (1, 60, 3, dict(keep=5)),  # keep_top_k truncation across classes
    (2, 25, 5, dict(keep=8, top_k=10)),  # batch of 2, NMS top_k
    (1, 40, 3, dict(share=False)),  # one box set per class
    (1, 40, 4, dict(share=False, bg=2, thr=0.2)),  # background in the middle
    (1, 30, 3, dict(share=False, bg=-1, nms=0.3)),  # no background class
    (1, 30, 3, dict(code="CORNER")),
    (1, 30, 3, dict(venc=True)),
    (2, 30, 3, dict(clip=True, nms=0.6, keep=20)),
    (1, 50, 2, dict(thr=0.5, keep=3)),
]


@pytest.mark.parametrize(("n", "p", "c", "kw"), DETOUT_CASES)
def test_detection_output_vs_cv2(tmp_path, n, p, c, kw):
    rng = np.random.default_rng(7 * p + c)
    loc, conf, priors = _ssd_inputs(rng, n, p, c, share=kw.get("share", True),
                                    venc=kw.get("venc", False))
    want = _cv2_detout(tmp_path, _detout_proto(n, p, c, **kw), loc, conf, priors)
    args = dict(num_classes=c, share_location=kw.get("share", True),
                background_label_id=kw.get("bg", 0), nms_threshold=kw.get("nms", 0.45),
                top_k=kw.get("top_k", -1), keep_top_k=kw.get("keep", 50),
                confidence_threshold=kw.get("thr", 0.01), code_type=kw.get("code", "CENTER_SIZE"),
                variance_encoded_in_target=kw.get("venc", False), clip=kw.get("clip", False))
    assert np.count_nonzero(want[0, 0, :, 2]) > 0  # the case really has detections
    for fn in (D.detection_output, D.detection_output_reference):
        got = fn(loc, conf, priors, **args)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got[0, 0, :, :2], want[0, 0, :, :2])  # image ids, labels
        assert_close(got, want, "vs_cv2", fn.__name__)
        got64 = fn(loc.astype(np.float64), conf.astype(np.float64), priors.astype(np.float64),
                   **args)
        np.testing.assert_array_equal(got64[0, 0, :, :2], want[0, 0, :, :2])
        assert_close(got64, want, "vs_cv2", fn.__name__ + " float64")


def test_detection_output_no_detection(tmp_path, rng):
    loc, conf, priors = _ssd_inputs(rng, 2, 10, 3)
    conf[:] = 0.001
    want = _cv2_detout(tmp_path, _detout_proto(2, 10, 3, keep=4, thr=0.5), loc, conf, priors)
    assert want.shape == (1, 1, 8, 7) and not want.any()  # cv2 4.14: keep_top_k*N zero rows
    kw = dict(num_classes=3, confidence_threshold=0.5)
    for fn in (D.detection_output, D.detection_output_reference):
        np.testing.assert_array_equal(fn(loc, conf, priors, keep_top_k=4, **kw), want)
        # without keep_top_k (cv2 cannot run it): one all-zero row
        np.testing.assert_array_equal(fn(loc, conf, priors, **kw), np.zeros((1, 1, 1, 7)))


def test_detection_output_keep_top_k_unlimited_matches_large_keep(rng):
    loc, conf, priors = _ssd_inputs(rng, 2, 40, 4)
    big = D.detection_output(loc, conf, priors, num_classes=4, keep_top_k=1000)
    free = D.detection_output(loc, conf, priors, num_classes=4, keep_top_k=-1)
    k = free.shape[2]
    assert k > 1 and not big[0, 0, k:].any()
    np.testing.assert_array_equal(free, big[:, :, :k])
    # rows per image are by descending score
    for img in (0, 1):
        s = free[0, 0, free[0, 0, :, 0] == img, 2]
        assert (np.diff(s) <= 0).all()


def test_cv2_quirk_detection_output_corner_size_not_in_prototxt(tmp_path, rng):
    """cv2's Caffe schema knows only CORNER and CENTER_SIZE: a prototxt saying CORNER_SIZE does
    not parse (in a binary net the unknown enum value falls back to the default, CORNER)."""
    loc, conf, priors = _ssd_inputs(rng, 1, 30, 3)
    with pytest.raises(cv2.error):
        _cv2_detout(tmp_path, _detout_proto(1, 30, 3, code="CORNER_SIZE"), loc, conf, priors)
    kw = dict(num_classes=3, keep_top_k=50)
    corner = D.detection_output(loc, conf, priors, code_type="CORNER", **kw)
    faithful = D.detection_output(loc, conf, priors, code_type="CORNER_SIZE", **kw)
    assert not np.allclose(faithful, corner, atol=1e-3)


def test_cv2_quirk_shared_location_without_background(tmp_path, rng):
    """cv2 (like Caffe-SSD's DecodeBBoxesAll) skips decoding the shared boxes when
    background_label_id is -1 and then fails; refnet decodes them. Oracle: the same boxes
    given to cv2 once per class (share_location false)."""
    loc, conf, priors = _ssd_inputs(rng, 1, 30, 3)
    with pytest.raises(cv2.error, match="location predictions"):
        _cv2_detout(tmp_path, _detout_proto(1, 30, 3, bg=-1), loc, conf, priors)
    tiled = np.repeat(loc.reshape(1, 30, 1, 4), 3, axis=2).reshape(1, -1)
    want = _cv2_detout(tmp_path, _detout_proto(1, 30, 3, bg=-1, share=False), tiled, conf, priors)
    for fn in (D.detection_output, D.detection_output_reference):
        got = fn(loc, conf, priors, num_classes=3, background_label_id=-1, keep_top_k=50)
        assert_close(got, want, "vs_cv2")


def test_cv2_quirk_prior_box_clip_defaults_to_true(tmp_path):
    """cv2's Caffe schema defaults PriorBox ``clip`` to true; Caffe-SSD's default is false."""
    feat, img = np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 3, 20, 20), np.float32)
    want = cv2_layer(tmp_path, 'layer { name: "l" type: "PriorBox" bottom: "feat" bottom: "img" '
                               'top: "l" prior_box_param { min_size: 16 variance: 0.1 } }',
                     {"feat": feat, "img": img})
    clipped = D.prior_box((2, 2), (20, 20), min_sizes=(16,), clip=True)
    assert_close(clipped, want, "vs_cv2")
    assert D.prior_box((2, 2), (20, 20), min_sizes=(16,)).min() < 0  # Caffe-SSD default


def test_cv2_quirk_detection_output_ignores_eta(tmp_path, rng):
    """cv2 quirk: DetectionOutput's nms_param eta is ignored (cv2 always runs eta = 1)."""
    loc, conf, priors = _ssd_inputs(rng, 1, 80, 2, conf_scale=1.0)
    loc *= 0.2
    want = _cv2_detout(tmp_path, _detout_proto(1, 80, 2, nms=0.7, keep=100, extra="eta: 0.5"),
                       loc, conf, priors)
    kw = dict(num_classes=2, keep_top_k=100, nms_threshold=0.7)
    assert_close(D.detection_output(loc, conf, priors, eta=1.0, **kw), want, "vs_cv2")
    with_eta = D.detection_output(loc, conf, priors, eta=0.5, **kw)
    assert np.count_nonzero(with_eta[0, 0, :, 2]) < np.count_nonzero(want[0, 0, :, 2])


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, n=st.integers(1, 2), p=st.integers(1, 30),
       c=st.integers(1, 4), share=st.booleans(), keep=st.sampled_from([-1, 3, 20]),
       eta=st.sampled_from([1.0, 0.8]), code=st.sampled_from(["CORNER", "CENTER_SIZE",
                                                             "CORNER_SIZE"]))
def test_detection_output_fast_vs_reference(seed, dt, n, p, c, share, keep, eta, code):
    rng = np.random.default_rng(seed)
    loc, conf, priors = _ssd_inputs(rng, n, p, c, share=share, dt=np.dtype(dt).type)
    kw = dict(num_classes=c, share_location=share, keep_top_k=keep, eta=eta, code_type=code,
              nms_threshold=0.5, confidence_threshold=0.05)
    r = D.detection_output_reference(loc, conf, priors, **kw)
    got = D.detection_output(loc, conf, priors, **kw)
    assert got.dtype == np.dtype(dt) and got.shape == r.shape
    np.testing.assert_array_equal(got[0, 0, :, :2], r[0, 0, :, :2])
    assert_close(got, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle")


def test_detection_output_errors(rng):
    loc, conf, priors = _ssd_inputs(rng, 1, 10, 3)
    with pytest.raises(ShapeError, match="loc must hold"):
        D.detection_output(loc[:, :-4], conf, priors, num_classes=3)
    with pytest.raises(ShapeError, match="conf must hold"):
        D.detection_output(loc, conf, priors, num_classes=4)
    with pytest.raises(ShapeError, match="variance channel"):
        D.detection_output(loc, conf, priors[:, :1], num_classes=3)
    with pytest.raises(TypeError, match="dtype"):
        D.detection_output(loc, conf.astype(np.float64), priors, num_classes=3)
    with pytest.raises(ShapeError, match="3-D"):
        D.detection_output(loc, conf, priors[0], num_classes=3)
    nan_loc = loc.copy()
    nan_loc[0, :4] = np.nan
    out = D.detection_output(nan_loc, conf, priors, num_classes=3, keep_top_k=-1)
    assert out.shape[:2] == (1, 1) and out.shape[3] == 7  # no crash; NaN boxes stay NaN


def test_nms_near_zero_area_boxes_count_as_identical_like_cv2():
    """cv2's jaccardDistance: areas summing to <= DBL_EPSILON mean 'the same box' (found by a
    hypothesis run of the dnn facade against cv2.dnn.NMSBoxes)."""
    import cv2

    from refnet.kernels.detection import nms

    xywh = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1e-20], [5.0, 5.0, 1.0, 1.0]]
    scores = [0.9, 0.8, 0.7]
    want = cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.5)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xywh])
    got = nms(boxes, np.array(scores), 0.5, score_threshold=0.0)
    assert got.tolist() == want.tolist() == [0, 2]


@pytest.mark.parametrize("fn", ["nms", "nms_reference"])
def test_nms_nan_box_is_suppressed_like_cv2(fn):
    import cv2

    import refnet.kernels as K

    xywh = [[0.0, 0.0, 10.0, 10.0], [np.nan, 0.0, 10.0, 10.0], [1.0, 1.0, 9.0, 9.0], [30.0, 30.0, 5.0, 5.0]]
    scores = [0.9, 0.8, 0.7, 0.6]
    want = cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.5)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xywh])
    got = getattr(K, fn)(boxes, np.array(scores), 0.5, score_threshold=0.0)
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("fn", ["nms", "nms_reference"])
@pytest.mark.parametrize("nan_at", [0, 2])  # the NaN in x, or in the width
def test_nms_kept_nan_box_suppresses_the_rest_like_cv2(fn, nan_at):
    """A kept box with a NaN coordinate gives a NaN overlap with every later box of its class,
    which suppresses them all, wherever the NaN sits: cv2 does so for a NaN width; for a NaN x
    its std::max hides the NaN against a distant box and keeps that box (the deviation in
    docs/cv2-deviations.md). The jitted loop once missed NaNs hidden by min/max or the area's
    validity test, and disagreed with its NumPy twin and the reference."""
    import cv2

    import refnet.kernels as K
    from refnet.kernels._lazyjit import load_numba

    load_numba()
    xywh = [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 9.0, 9.0], [30.0, 30.0, 5.0, 5.0], [31.0, 29.0, 5.0, 6.0]]
    xywh[0][nan_at] = np.nan
    scores = [0.9, 0.8, 0.7, 0.6]
    want = cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.5)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xywh])
    got = getattr(K, fn)(boxes, np.array(scores), 0.5, score_threshold=0.0)
    assert got.tolist() == [0]
    assert want.tolist() == ([0, 2] if nan_at == 0 else [0])  # cv2's deviation, named


def test_ssd_detections_one_reader_for_run_compare_and_two_stage():
    from refnet import pipelines, two_stage
    from refnet.crosscheck import tasks
    from refnet.kernels.detection import ssd_detections

    assert pipelines.ssd_detections is ssd_detections and tasks.ssd_detections is ssd_detections
    rows = np.array([[0, 3, 0.9, 0.1, 0.2, 0.3, 0.4], [0, -1, 0.8, 0, 0, 1, 1], [0, 2, 0.95, 0, 0, 0.5, 0.5],
                     [0, 1, 0.3, 0, 0, 1, 1]]).reshape(1, 1, 4, 7)
    b, s, c = ssd_detections(rows, 0.3)  # label -1 (cv2's padding) and score == threshold dropped
    assert c.tolist() == [3, 2] and s.tolist() == [0.9, 0.95] and b.tolist() == [[0.1, 0.2, 0.3, 0.4], [0, 0, 0.5, 0.5]]
    # two_stage: best first, boxes from a 10x20 blob into the image region (100, 50)-(140, 70): x*2+100, y*2+50
    tb, ts, tc = two_stage.detections(rows, 0.3, (10, 20), (100.0, 50.0, 140.0, 70.0))
    assert tc.tolist() == [2, 3] and ts.tolist() == [0.95, 0.9]
    assert np.allclose(tb, [[100, 50, 101, 51], [100.2, 50.4, 100.6, 50.8]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_candidates_top_k_selection_is_the_full_sort_cut(seed):
    """The top_k candidates picked by partition (many scores, small top_k) are the first top_k of
    the full stable sort (by score descending, lower index first among equal scores), with many
    ties at the cut (scores on a coarse grid) and without."""
    from refnet.kernels.detection import _candidates

    rng = np.random.default_rng(seed)
    n = 4000
    scores = (rng.integers(0, 40, n) / 40 if seed % 2 else rng.random(n)).astype(np.float32)
    for top_k in (1, 7, 100, 999, -1, None):
        s = scores.astype(np.float64)
        idx = np.flatnonzero(s > np.float32(0.01))
        full = sorted(idx, key=lambda i: (-s[i], i))  # independent oracle: Python's sort on (score, index)
        want = full[:top_k] if top_k is not None and top_k > 0 else full
        np.testing.assert_array_equal(_candidates(scores, 0.01, top_k), want)
