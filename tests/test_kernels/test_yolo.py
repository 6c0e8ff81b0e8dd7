"""YOLO head kernels (refnet.kernels.yolo) against cv2.dnn's Region layer, hand values, and each other."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from writers.darknet_writer import cfg_text, weights_bytes

from refnet.errors import ShapeError
from refnet.kernels.yolo import region, region_reference, yolo, yolo_detections, yolo_reference


def cv2_head(tmp_path, head: tuple[str, dict], blob: np.ndarray) -> np.ndarray:
    """cv2.dnn's output of a [net] + one head section fed ``blob`` (NCHW) directly."""
    n, c, h, w = blob.shape
    cfg = tmp_path / "head.cfg"
    cfg.write_text(cfg_text([("net", {"width": w, "height": h, "channels": c}), head]))
    wts = tmp_path / "head.weights"
    wts.write_bytes(weights_bytes([]))
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(wts))
    net.enableFusion(False)
    net.setInput(blob)
    return net.forward(net.getUnconnectedOutLayersNames()[0])


def assert_columns(a: np.ndarray, ref: np.ndarray, tol: str | float, what: str) -> None:
    """Each output column (cx, cy, w, h, obj, scores) compared on its own scale."""
    assert a.shape == ref.shape, f"{what}: {a.shape} vs {ref.shape}"
    for k in range(ref.shape[-1]):
        assert_close(a[..., k], ref[..., k], tol, f"{what} column {k}")


def nhwc(blob: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(blob.transpose(0, 2, 3, 1))


ANCHORS_V2 = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38]


@pytest.mark.parametrize("opts", [
    {"softmax": 1},  # cv2 defaults: thresh 0.001, NMS 0.4
    {"softmax": 1, "thresh": 0.3},
    {"softmax": 1, "thresh": 0.2, "classfix": -1},
])
def test_region_matches_cv2(tmp_path, rng, opts):
    classes, num = 4, 3
    blob = (rng.standard_normal((1, num * (5 + classes), 7, 6)) * 2).astype(np.float32)
    head = ("region", {"anchors": ANCHORS_V2, "classes": classes, "num": num, "coords": 4, **opts})
    ref = cv2_head(tmp_path, head, blob)
    kw = {"softmax": True, "thresh": opts.get("thresh", 0.001), "nms_threshold": 0.4,
          "classfix": opts.get("classfix", 0)}
    got = region(nhwc(blob), ANCHORS_V2, classes, **kw)
    assert got.shape == (1,) + ref.shape
    assert_columns(got[0], ref, "vs_cv2", "region fast")
    assert_columns(region_reference(nhwc(blob).astype(np.float64), ANCHORS_V2, classes, **kw)[0], ref, "vs_cv2",
                   "region reference")
    assert np.count_nonzero(ref[:, 5:]) > 10  # the thresholds left something to compare


@pytest.mark.parametrize("opts, batch", [
    ({"thresh": 0.25, "nms_threshold": 0.45, "scale_x_y": 1.05}, 1),
    ({"thresh": 0.1}, 2),  # no NMS (cv2's default for [yolo]), batch of two
    ({"thresh": 0.2, "nms_threshold": 0.3, "new_coords": 1, "scale_x_y": 2.0}, 1),
])
def test_yolo_matches_cv2(tmp_path, rng, opts, batch):
    classes, anchors, mask = 3, [10, 14, 23, 27, 37, 58, 81, 82], [1, 3]
    c = len(mask) * (5 + classes)
    if opts.get("new_coords"):  # scaled-YOLOv4 heads see logistic outputs
        blob = rng.uniform(0, 1, (batch, c, 5, 8)).astype(np.float32)
    else:
        blob = (rng.standard_normal((batch, c, 5, 8)) * 2).astype(np.float32)
    head = ("yolo", {"mask": mask, "anchors": anchors, "classes": classes, "num": 4, **opts})
    ref = cv2_head(tmp_path, head, blob)
    used = [v for m in mask for v in anchors[2 * m:2 * m + 2]]
    kw = {"norm_hw": (5, 8), "thresh": opts["thresh"], "nms_threshold": opts.get("nms_threshold", 0.0),
          "scale_x_y": opts.get("scale_x_y", 1.0), "new_coords": bool(opts.get("new_coords", 0))}
    got = yolo(nhwc(blob), used, classes, **kw)
    want = ref if batch > 1 else ref[None]
    assert_columns(got, want, "vs_cv2", "yolo fast")
    assert_columns(yolo_reference(nhwc(blob).astype(np.float64), used, classes, **kw), want, "vs_cv2",
                   "yolo reference")
    assert np.count_nonzero(want[..., 5:]) > 5


def test_region_hand_computed():
    """One 2x1 grid, 2 anchors, 3 classes: tx=ty=0 -> centre of the cell, tw=0, th=ln 2, equal logits."""
    classes, anchors = 3, [1.5, 2.0, 0.5, 1.0]
    x = np.zeros((1, 1, 2, 2 * 8), np.float64)  # H=1, W=2
    x[0, 0, 1, 8 + 3] = math.log(2.0)  # cell (0, 1), anchor 1: th = ln 2
    x[0, 0, 1, 8 + 4] = math.log(3.0)  # objectness logit -> 0.75
    out = region_reference(x, anchors, classes, softmax=True)
    row = out[0, (0 * 2 + 1) * 2 + 1]
    np.testing.assert_allclose(row[:5], [(1 + 0.5) / 2, 0.5 / 1, 0.5 / 2, 2 * 1.0 / 1, 0.75], rtol=0, atol=1e-15)
    np.testing.assert_allclose(row[5:], [0.25, 0.25, 0.25], rtol=0, atol=1e-15)
    first = out[0, 0]  # cell (0, 0), anchor 0, all-zero logits
    np.testing.assert_allclose(first, [0.25, 0.5, 0.75, 2.0, 0.5, 1 / 6, 1 / 6, 1 / 6], rtol=0, atol=1e-15)
    # the threshold keeps scores strictly above it
    assert np.all(region_reference(x, anchors, classes, thresh=1 / 6)[0, 0, 5:] == 0)
    np.testing.assert_allclose(region(x.astype(np.float32), anchors, classes), out, rtol=0, atol=1e-7)


def test_yolo_hand_computed():
    """scale_x_y stretches the centre offset about 0.5; sizes are divided by the image size."""
    x = np.zeros((1, 2, 2, 6), np.float64)  # one class, one anchor
    x[0, 1, 0, 0] = 50.0  # sigmoid -> 1
    out = yolo_reference(x, [16, 32], 1, norm_hw=(64, 128), scale_x_y=2.0)
    row = out[0, 1 * 2 + 0]
    np.testing.assert_allclose(row, [(0 + 1.5) / 2, (1 + 0.5) / 2, 16 / 128, 32 / 64, 0.5, 0.25], atol=1e-15)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(h=st.integers(1, 4), w=st.integers(1, 4), na=st.integers(1, 3), classes=st.integers(1, 4),
       softmax=st.booleans(), thresh=st.sampled_from([0.0, 0.05, 0.3]), nms=st.sampled_from([0.0, 0.3, 0.6]),
       sxy=st.sampled_from([1.0, 1.2]), new_coords=st.booleans(), seed=st.integers(0, 2**16))
def test_fast_matches_reference(h, w, na, classes, softmax, thresh, nms, sxy, new_coords, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((2, h, w, na * (5 + classes))) * 2
    anchors = r.uniform(0.5, 4, 2 * na)
    kw = {"softmax": softmax, "thresh": thresh, "nms_threshold": nms, "scale_x_y": sxy, "new_coords": new_coords}
    ref = region_reference(x, anchors, classes, **kw)
    assert_columns(region(x, anchors, classes, **kw), ref, "f64_vs_oracle", "fast float64")
    kw.update(thresh=0.0, nms_threshold=0.0)  # no decisions: float32 rounding cannot flip a score on/off
    ref = region_reference(x, anchors, classes, **kw)
    got = region(x.astype(np.float32), anchors, classes, **kw)
    assert got.dtype == np.float32
    assert_columns(got, ref, "f32_vs_f64", "fast float32")


def test_nan_in_gives_nan_out():
    x = np.zeros((1, 2, 2, 2 * 7), np.float32)
    x[0, 0, 1, 7 + 2] = np.nan  # w of anchor 1 in cell (0, 1)
    x[0, 1, 1, 4] = np.nan  # objectness of anchor 0 in cell (1, 1)
    for fn in (region, region_reference):
        out = fn(x, [1, 1, 2, 2], 2, thresh=0.1, nms_threshold=0.4)
        assert np.isnan(out[0, (0 * 2 + 1) * 2 + 1, 2])
        assert np.isnan(out[0, (1 * 2 + 1) * 2 + 0, 4])
        assert np.isfinite(out[0, 0]).all()


def test_bad_arguments():
    good = np.zeros((1, 2, 2, 2 * 7), np.float32)
    with pytest.raises(ShapeError, match=r"\(N, H, W, 2 \* 7 = 14\).*\(1, 2, 2, 13\)"):
        region(good[..., :13], [1, 1, 2, 2], 2)
    with pytest.raises(ShapeError, match="4-D"):
        region(good[0], [1, 1, 2, 2], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        yolo(good.astype(np.int32), [1, 1, 2, 2], 2, norm_hw=(4, 4))
    with pytest.raises(ShapeError, match="anchors"):
        region(good, [1, 1, 2], 2)
    with pytest.raises(ShapeError, match="norm_hw"):
        yolo(good, [1, 1, 2, 2], 2, norm_hw=(0, 4))


def _oracle_detections(rows: np.ndarray, conf: float, nms: float, size: tuple[int, int]):
    """The OpenCV sample's post-processing with cv2.dnn.NMSBoxes (independent of refnet)."""
    cls = rows[:, 5:].argmax(1)
    score = rows[np.arange(len(rows)), 5 + cls]
    out = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        boxes = [((r[0] - r[2] / 2) * size[0], (r[1] - r[3] / 2) * size[1], r[2] * size[0], r[3] * size[1])
                 for r in rows[idx].astype(np.float64)]
        keep = cv2.dnn.NMSBoxes(boxes, score[idx].astype(float).tolist(), conf, nms)
        for k in np.asarray(keep).reshape(-1):
            x, y, w, h = boxes[k]
            out.append((float(score[idx[k]]), int(c), x, y, x + w, y + h))
    return sorted(out, key=lambda t: -t[0])


def test_yolo_detections_vs_cv2_nmsboxes(rng):
    rows = np.zeros((300, 9), np.float32)
    rows[:, 0:2] = rng.uniform(0.3, 0.7, (300, 2))  # crowded centres: plenty of overlaps
    rows[:, 2:4] = rng.uniform(0.05, 0.4, (300, 2))
    rows[:, 5:] = rng.uniform(0, 1, (300, 4)) ** 3
    got = yolo_detections([rows[:120], rows[120:]], conf_threshold=0.3, nms_threshold=0.45, image_size=(320, 240))
    want = _oracle_detections(rows, 0.3, 0.45, (320, 240))
    assert len(want) > 5 and len(got["scores"]) == len(want)
    np.testing.assert_allclose(got["scores"], [t[0] for t in want], rtol=0, atol=0)
    np.testing.assert_array_equal(got["class_ids"], [t[1] for t in want])
    np.testing.assert_allclose(got["boxes"], [t[2:] for t in want], rtol=1e-12, atol=1e-9)
