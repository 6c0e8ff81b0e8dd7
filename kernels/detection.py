"""Detection kernels: box overlap, non-maximum suppression, SSD prior boxes, SSD box decoding
and the SSD DetectionOutput layer (Caffe-SSD semantics, cv2.dnn's output layout).

Boxes are ``(x1, y1, x2, y2)`` rows in continuous coordinates (no ``+1``) unless a function
says otherwise. An inverted box (``x2 < x1`` or ``y2 < y1``) has zero area (Caffe-SSD
``BBoxSize``). NMS overlaps are computed in float64 and compared with the thresholds at
float32 precision, as cv2 and Caffe (which hold both as C floats) do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels._jit import jit

__all__ = [
    "iou",
    "iou_reference",
    "nms",
    "nms_reference",
    "batched_nms",
    "batched_nms_reference",
    "prior_box",
    "prior_box_reference",
    "decode_boxes",
    "decode_boxes_reference",
    "detection_output",
    "detection_output_reference",
    "ssd_detections",
]

_CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


# ---- IoU ----------------------------------------------------------------------------------
def _boxes(b: np.ndarray, name: str) -> np.ndarray:
    b = as_float_array(b, name, ndim=2)
    if b.shape[1] != 4:
        raise ShapeError(f"{name} must be (N, 4) boxes (x1, y1, x2, y2)", expected="(N, 4)",
                         got=b.shape)
    return b


def _iou_check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if a.dtype != b.dtype:
        raise TypeError(f"b has dtype {b.dtype} but a has dtype {a.dtype}; pass both as one dtype")
    return a, b


@ieee
def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union, ``(Na, 4) x (Nb, 4) -> (Na, Nb)``; continuous
    coordinates (no +1), zero-area or disjoint pairs give 0, NaN coordinates give NaN."""
    a, b = _iou_check(a, b)
    ax1, ay1, ax2, ay2 = (a[:, k:k + 1] for k in range(4))
    bx1, by1, bx2, by2 = (b[None, :, k] for k in range(4))
    area_a = np.maximum(ax2 - ax1, 0) * np.maximum(ay2 - ay1, 0)
    area_b = np.maximum(bx2 - bx1, 0) * np.maximum(by2 - by1, 0)
    iw = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0)
    ih = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0)
    inter = iw * ih
    union = area_a + area_b - inter
    out = inter / union
    out[union == 0] = 0
    return out.astype(a.dtype, copy=False)


@ieee
def iou_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference IoU in float64, one row of ``a`` at a time: inter / (area_a + area_b - inter)."""
    a, b = _iou_check(a, b)
    ad, bd = a.astype(np.float64), b.astype(np.float64)
    out = np.zeros((len(ad), len(bd)), dtype=np.float64)
    area_b = np.clip(bd[:, 2] - bd[:, 0], 0, None) * np.clip(bd[:, 3] - bd[:, 1], 0, None)
    for i, (x1, y1, x2, y2) in enumerate(ad):
        area_a = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
        w = np.clip(np.minimum(x2, bd[:, 2]) - np.maximum(x1, bd[:, 0]), 0, None)
        h = np.clip(np.minimum(y2, bd[:, 3]) - np.maximum(y1, bd[:, 1]), 0, None)
        inter = w * h
        union = area_a + area_b - inter
        out[i] = np.where(union == 0, 0.0, inter / union)
        if math.isnan(area_a):
            out[i] = np.nan
    return out.astype(a.dtype)


# ---- NMS ----------------------------------------------------------------------------------
# Overlap rules: "onnx" = ONNX NonMaxSuppression (plain IoU as "caffe", compared in float64;
# reference loop only), "cv2" = cv2.dnn.NMSBoxes (Rect2d jaccardDistance: a box's area is its signed
# width * height, so an inverted box (x2 < x1 or y2 < y1, a negative width or height given to NMSBoxes)
# has a negative or positive area, not 0, and intersects nothing; two boxes whose areas sum to at most
# DBL_EPSILON overlap fully), "caffe" = Caffe-SSD JaccardOverlap on normalized boxes, "caffe+1" = cv2's
# DetectionOutput with normalized_bbox=false (pixel boxes, sizes (w+1)*(h+1)), "frcnn" =
# py-faster-rcnn's nms (pixel boxes, intersection max(0, iw+1) * max(0, ih+1): boxes less than one
# pixel apart still overlap).
_RULE_CODE = {"cv2": 0, "caffe": 1, "caffe+1": 2, "frcnn": 3}
# cv2's jaccardDistance calls two boxes identical when their areas sum to <= DBL_EPSILON
_CV2_EMPTY_AREA = float(np.finfo(np.float64).eps)


@jit
def _greedy_nms_jit(boxes, order, classes, thr, eta, rule, limit):  # pragma: no cover - jitted
    n = order.shape[0]
    keep = np.empty(n, dtype=np.int64)
    nk = 0
    plus = 1.0 if rule >= 2 else 0.0
    adaptive = np.float32(thr)
    for t in range(n):
        i = order[t]
        x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        ai = (x2 - x1 + plus) * (y2 - y1 + plus) if (rule == 0 or (x2 >= x1 and y2 >= y1)) else 0.0
        ok = True
        for q in range(nk):
            j = keep[q]
            if classes[j] != classes[i]:
                continue
            u1, v1, u2, v2 = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
            aj = (u2 - u1 + plus) * (v2 - v1 + plus) if (rule == 0 or (u2 >= u1 and v2 >= v1)) else 0.0
            iw = min(x2, u2) - max(x1, u1)
            ih = min(y2, v2) - max(y1, v1)
            if rule == 2:
                inter = (iw + 1.0) * (ih + 1.0) if (iw >= 0 and ih >= 0) else 0.0
            elif rule == 3:
                inter = max(iw + 1.0, 0.0) * max(ih + 1.0, 0.0)
            else:
                inter = iw * ih if (iw > 0 and ih > 0) else 0.0
            if (x1 != x1 or y1 != y1 or x2 != x2 or y2 != y2
                    or u1 != u1 or v1 != v1 or u2 != u2 or v2 != v2):
                # a NaN coordinate in either box: the overlap test fails, the box is suppressed
                # (min/max and the area's validity test would hide some NaNs: test them all)
                ov = np.nan
            elif rule == 0 and ai + aj <= _CV2_EMPTY_AREA:
                ov = 1.0
            elif inter > 0:
                ov = inter / (ai + aj - inter)
            else:
                ov = 0.0
            if not np.float32(ov) <= adaptive:
                ok = False
                break
        if ok:
            keep[nk] = i
            nk += 1
            if eta < 1.0 and adaptive > 0.5:
                adaptive = np.float32(adaptive * np.float32(eta))
            if nk >= limit:
                break
    return keep[:nk]


def _overlap_rows(box: np.ndarray, others: np.ndarray, rule: str) -> np.ndarray:
    """Overlap of one float64 box with rows of ``others`` under an NMS overlap rule (any
    shapes ``(..., 4)`` that broadcast: ``box[:, None]`` against ``others[None]`` gives every pair)."""
    plus = 1.0 if rule in ("caffe+1", "frcnn") else 0.0

    def size(b: np.ndarray) -> np.ndarray:
        valid = (b[..., 2] >= b[..., 0]) & (b[..., 3] >= b[..., 1]) if rule != "cv2" else True  # (cv2: signed)
        return np.where(valid, (b[..., 2] - b[..., 0] + plus) * (b[..., 3] - b[..., 1] + plus), 0.0)

    iw = np.minimum(box[..., 2], others[..., 2]) - np.maximum(box[..., 0], others[..., 0])
    ih = np.minimum(box[..., 3], others[..., 3]) - np.maximum(box[..., 1], others[..., 1])
    if rule == "caffe+1":
        inter = np.where((iw >= 0) & (ih >= 0), (iw + 1) * (ih + 1), 0.0)
    elif rule == "frcnn":
        inter = np.maximum(iw + 1, 0.0) * np.maximum(ih + 1, 0.0)
    else:
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    sa, sb = size(box), size(others)
    with np.errstate(invalid="ignore", divide="ignore"):
        ov = np.where(inter > 0, inter / (sa + sb - inter), 0.0)
    if rule == "cv2":
        ov = np.where(sa + sb <= _CV2_EMPTY_AREA, 1.0, ov)
    nan = np.isnan(iw) | np.isnan(ih) | np.isnan(sa) | np.isnan(sb)
    return np.where(nan, np.nan, ov)


def _f64c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _f32(v: float) -> float:
    """``v`` rounded to float32: cv2 and Caffe hold thresholds and overlaps as C floats."""
    return float(np.float32(v))


def _candidates(scores: np.ndarray, score_threshold: float, top_k: int | None) -> np.ndarray:
    """Indices with score > threshold, by descending score (ties: lower index first), top_k cut."""
    s = scores.astype(np.float64)
    idx = np.flatnonzero(s > _f32(score_threshold))
    if top_k is not None and 0 < top_k < len(idx) // 4:  # sort only the top_k (a full sort: ~0.3 ms for 4k)
        si = s[idx]
        v = np.partition(si, len(si) - top_k)[len(si) - top_k]  # the top_k-th largest score
        above = idx[si > v]
        idx = np.concatenate([above, idx[si == v][:top_k - len(above)]])  # ties at v: lower index first
    order = idx[np.argsort(-s[idx], kind="stable")]
    if top_k is not None and top_k > 0:
        order = order[:top_k]
    return order


def _nms_args(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _boxes(boxes, "boxes")
    scores = as_float_array(scores, "scores", ndim=1)
    if len(scores) != len(boxes):
        raise ShapeError("nms needs one score per box", expected=len(boxes), got=len(scores))
    if classes is None:
        cls = np.zeros(len(boxes), dtype=np.int64)
    else:
        cls = np.asarray(classes)
        if cls.ndim != 1 or len(cls) != len(boxes):
            raise ShapeError("batched_nms needs one class id per box", expected=(len(boxes),),
                             got=cls.shape)
        if not np.issubdtype(cls.dtype, np.integer):
            raise TypeError(f"classes must be integers, got dtype {cls.dtype}")
        cls = cls.astype(np.int64)
    return boxes, scores, cls


def _check_thr(iou_threshold: float, eta: float) -> None:
    if not eta > 0:
        raise ValueError(f"nms eta must be > 0, got {eta}")
    if math.isnan(iou_threshold):
        raise ValueError("nms iou_threshold is NaN")


@ieee
def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        score_threshold: float = -math.inf, top_k: int | None = None, eta: float = 1.0
        ) -> np.ndarray:
    """Greedy NMS with cv2.dnn.NMSBoxes' rules: candidates have score > ``score_threshold``,
    are visited by descending score (ties: lower index first), ``top_k`` (> 0) limits the
    candidates; a box is dropped when its IoU with a kept box is > the threshold (equal is
    kept), which is multiplied by ``eta`` after each keep while above 0.5. Thresholds and
    overlaps are compared at float32 precision, as cv2 stores them. Returns int64 indices in
    keep order."""
    boxes, scores, cls = _nms_args(boxes, scores)
    _check_thr(iou_threshold, eta)
    order = _candidates(scores, score_threshold, top_k)
    return _greedy_nms_jit(_f64c(boxes), order, cls, float(iou_threshold), float(eta),
                           _RULE_CODE["cv2"], len(order) + 1)


def _greedy_reference(boxes: np.ndarray, order: np.ndarray, cls: np.ndarray, thr: float,
                      eta: float, rule: str, limit: int | None = None) -> np.ndarray:
    """The one greedy NMS loop (readable twin of ``_greedy_nms_jit``): visit ``order``, keep a box
    unless its overlap with a kept box of its class is > the threshold, stop after ``limit`` keeps.
    Rule "onnx" (ONNX NonMaxSuppression) is plain IoU compared in float64; the others compare at
    float32 as cv2 and Caffe do."""
    bd = boxes.astype(np.float64)
    keep: list[int] = []
    kept_by_class: dict[int, list[int]] = {}
    adaptive = np.float32(thr) if rule != "onnx" else float(thr)
    for i in order:
        if limit is not None and len(keep) >= limit:
            break
        same = kept_by_class.setdefault(int(cls[i]), [])
        ov = _overlap_rows(bd[i], bd[same], rule)
        # float32 comparison as in C++; a NaN overlap suppresses, as `overlap <= thr` does
        if np.all((ov.astype(np.float32) if rule != "onnx" else ov) <= adaptive):
            keep.append(int(i))
            same.append(int(i))
            if eta < 1 and adaptive > 0.5:
                adaptive = np.float32(adaptive * np.float32(eta))
    return np.asarray(keep, dtype=np.int64)


@ieee
def nms_reference(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                  score_threshold: float = -math.inf, top_k: int | None = None, eta: float = 1.0
                  ) -> np.ndarray:
    """Reference greedy NMS (plain loop over the candidates), same rules as :func:`nms`."""
    boxes, scores, cls = _nms_args(boxes, scores)
    _check_thr(iou_threshold, eta)
    order = _candidates(scores, score_threshold, top_k)
    return _greedy_reference(boxes, order, cls, float(iou_threshold), float(eta), "cv2")


@ieee
def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                score_threshold: float = -math.inf, top_k: int | None = None) -> np.ndarray:
    """Per-class NMS as cv2.dnn.NMSBoxesBatched: one pass over all candidates by descending
    score (``top_k`` applies to all classes together), a box is suppressed only by kept
    boxes of its own class. Returns int64 indices in keep (descending score) order."""
    boxes, scores, cls = _nms_args(boxes, scores, classes)
    _check_thr(iou_threshold, 1.0)
    order = _candidates(scores, score_threshold, top_k)
    return _greedy_nms_jit(_f64c(boxes), order, cls, float(iou_threshold), 1.0,
                           _RULE_CODE["cv2"], len(order) + 1)


@ieee
def batched_nms_reference(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                          iou_threshold: float, score_threshold: float = -math.inf,
                          top_k: int | None = None) -> np.ndarray:
    """Reference per-class NMS: plain greedy loop, same rules as :func:`batched_nms`."""
    boxes, scores, cls = _nms_args(boxes, scores, classes)
    _check_thr(iou_threshold, 1.0)
    order = _candidates(scores, score_threshold, top_k)
    return _greedy_reference(boxes, order, cls, float(iou_threshold), 1.0, "cv2")


# ---- DetectionOutput rows -------------------------------------------------------------------
def ssd_detections(detection_out: np.ndarray, threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one reader of DetectionOutput rows ``(1, 1, K, 7)`` = [image_id, label, conf, x1, y1, x2, y2]
    (Caffe-SSD, cv2.dnn, Faster R-CNN): rows with conf > ``threshold`` (NaN never) and a label >= 0
    (cv2 pads with label -1) -> (boxes (K, 4) as stored, scores (K,), class ids (K,) int64), in row order."""
    d = np.asarray(detection_out, dtype=np.float64)
    if d.size % 7 or d.shape[-1] != 7:
        raise ShapeError("DetectionOutput rows must have 7 values", expected="(1, 1, K, 7)", got=d.shape)
    rows = d.reshape(-1, 7)
    rows = rows[(rows[:, 2] > threshold) & (rows[:, 1] >= 0)]
    return rows[:, 3:7].copy(), rows[:, 2].copy(), rows[:, 1].astype(np.int64)


# ---- PriorBox -----------------------------------------------------------------------------
def _prior_sizes(min_sizes: Sequence[float], max_sizes: Sequence[float],
                 aspect_ratios: Sequence[float], flip: bool, widths: Sequence[float],
                 heights: Sequence[float]) -> list[tuple[float, float]]:
    """Prior (width, height) list in Caffe-SSD / cv2 order."""
    mins = [float(v) for v in min_sizes]
    maxs = [float(v) for v in max_sizes]
    ws, hs = [float(v) for v in widths], [float(v) for v in heights]
    if len(ws) != len(hs):
        raise ShapeError("prior_box widths and heights must pair up", expected=len(ws), got=len(hs))
    if ws:
        if mins or maxs or aspect_ratios:
            raise ValueError("prior_box: explicit widths/heights exclude min_sizes, max_sizes and "
                             "aspect_ratios (cv2 PriorBox)")
        if min(ws + hs) <= 0:
            raise ValueError(f"prior_box widths/heights must be > 0, got {ws}, {hs}")
        return list(zip(ws, hs))
    if not mins or min(mins) <= 0:
        raise ValueError(f"prior_box needs min_sizes > 0 (or widths/heights), got {mins}")
    if maxs and len(maxs) != len(mins):
        raise ShapeError("prior_box needs one max_size per min_size", expected=len(mins),
                         got=len(maxs))
    if any(mx <= mn for mn, mx in zip(mins, maxs)):
        raise ValueError(f"prior_box max_sizes must exceed min_sizes, got {maxs} vs {mins}")
    ars: list[float] = []
    for ar in (float(v) for v in aspect_ratios):
        if ar <= 0:
            raise ValueError(f"prior_box aspect ratios must be > 0, got {ar}")
        if abs(ar - 1.0) < 1e-6 or any(abs(ar - r) < 1e-6 for r in ars):
            continue
        ars.append(ar)
        if flip:
            ars.append(1.0 / ar)
    sizes = []
    for i, mn in enumerate(mins):
        sizes.append((mn, mn))
        if maxs:
            s = math.sqrt(mn * maxs[i])
            sizes.append((s, s))
        sizes += [(mn * math.sqrt(ar), mn / math.sqrt(ar)) for ar in ars]
    return sizes


def _prior_setup(feature_hw: Sequence[int], image_hw: Sequence[int], step: float | Sequence[float],
                 variance: Sequence[float]) -> tuple[int, int, float, float, float, float, list]:
    fh, fw = (int(v) for v in feature_hw)
    ih, iw = (float(v) for v in image_hw)
    if fh <= 0 or fw <= 0 or ih <= 0 or iw <= 0:
        raise ShapeError("prior_box needs positive feature and image sizes",
                         got=(tuple(feature_hw), tuple(image_hw)))
    steps = [float(step)] if np.isscalar(step) else [float(v) for v in step]
    if len(steps) not in (1, 2):
        raise ShapeError("prior_box step is one value or (step_h, step_w)", got=step)
    sh, sw = steps[0], steps[-1]
    sh = sh if sh > 0 else ih / fh
    sw = sw if sw > 0 else iw / fw
    var = [float(v) for v in variance] or [0.1]
    if len(var) not in (1, 4):
        raise ShapeError("prior_box variance needs 1 or 4 values", expected="1 or 4", got=len(var))
    return fh, fw, ih, iw, sh, sw, var


@ieee
def prior_box(feature_hw: Sequence[int], image_hw: Sequence[int], *,
              min_sizes: Sequence[float] = (), max_sizes: Sequence[float] = (),
              aspect_ratios: Sequence[float] = (), flip: bool = True, clip: bool = False,
              variance: Sequence[float] = (0.1,), step: float | Sequence[float] = (0.0, 0.0),
              offset: float = 0.5, widths: Sequence[float] = (), heights: Sequence[float] = (),
              dtype: type = np.float32) -> np.ndarray:
    """Caffe-SSD PriorBox as cv2 computes it: per cell (row-major) and per min_size: the
    ``min`` square, the ``sqrt(min*max)`` square, then ``min*sqrt(ar) x min/sqrt(ar)`` for each
    distinct aspect ratio != 1 (and 1/ar with ``flip``); or cv2's explicit ``widths x heights``.
    Centres ``(w + offset) * step_w``; boxes normalised by the image size, optionally clipped
    to [0, 1]; returns ``(1, 2, H*W*P*4)``: coordinates, then the 1 or 4 variances."""
    fh, fw, ih, iw, sh, sw, var = _prior_setup(feature_hw, image_hw, step, variance)
    sizes = np.asarray(_prior_sizes(min_sizes, max_sizes, aspect_ratios, flip, widths, heights))
    cy = (np.arange(fh, dtype=np.float64) + offset) * sh
    cx = (np.arange(fw, dtype=np.float64) + offset) * sw
    half_w = sizes[:, 0] / 2.0
    half_h = sizes[:, 1] / 2.0
    shape = (fh, fw, len(sizes))
    coords = np.stack([
        np.broadcast_to((cx[None, :, None] - half_w) / iw, shape),
        np.broadcast_to((cy[:, None, None] - half_h) / ih, shape),
        np.broadcast_to((cx[None, :, None] + half_w) / iw, shape),
        np.broadcast_to((cy[:, None, None] + half_h) / ih, shape),
    ], axis=-1).reshape(-1)
    if clip:
        coords = np.clip(coords, 0.0, 1.0)
    out = np.empty((1, 2, coords.size), dtype=dtype)
    out[0, 0] = coords
    out[0, 1] = np.tile(np.asarray(var * (4 // len(var)), dtype=np.float64), coords.size // 4)
    return out


@ieee
def prior_box_reference(feature_hw: Sequence[int], image_hw: Sequence[int], *,
                        min_sizes: Sequence[float] = (), max_sizes: Sequence[float] = (),
                        aspect_ratios: Sequence[float] = (), flip: bool = True,
                        clip: bool = False, variance: Sequence[float] = (0.1,),
                        step: float | Sequence[float] = (0.0, 0.0), offset: float = 0.5,
                        widths: Sequence[float] = (), heights: Sequence[float] = (),
                        dtype: type = np.float64) -> np.ndarray:
    """Reference PriorBox (float64): the Caffe-SSD loop written per prior size, each filling
    its (H, W) grid of boxes; same layout and rules as :func:`prior_box`."""
    fh, fw, ih, iw, sh, sw, var = _prior_setup(feature_hw, image_hw, step, variance)
    sizes = _prior_sizes(min_sizes, max_sizes, aspect_ratios, flip, widths, heights)
    boxes = np.zeros((fh, fw, len(sizes), 4), dtype=np.float64)
    center_y, center_x = np.meshgrid((np.arange(fh) + offset) * sh, (np.arange(fw) + offset) * sw,
                                     indexing="ij")
    for p, (bw, bh) in enumerate(sizes):
        boxes[:, :, p, 0] = (center_x - bw / 2.0) / iw  # xmin
        boxes[:, :, p, 1] = (center_y - bh / 2.0) / ih  # ymin
        boxes[:, :, p, 2] = (center_x + bw / 2.0) / iw  # xmax
        boxes[:, :, p, 3] = (center_y + bh / 2.0) / ih  # ymax
    if clip:
        boxes = np.minimum(np.maximum(boxes, 0.0), 1.0)
    variances = np.empty_like(boxes)
    variances[...] = np.asarray(var if len(var) == 4 else var * 4)
    return np.stack([boxes.reshape(-1), variances.reshape(-1)])[None].astype(dtype)


# ---- box decoding -------------------------------------------------------------------------
def _decode_check(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray | None,
                  code_type: str, variance_encoded_in_target: bool, clip: bool, normalized: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    loc = as_float_array(loc, "loc")
    priors = as_float_array(priors, "priors")
    if loc.ndim == 0 or loc.shape[-1] != 4 or priors.ndim == 0 or priors.shape[-1] != 4:
        raise ShapeError("decode_boxes needs loc and priors with a last axis of 4",
                         expected="(..., 4)", got=(loc.shape, priors.shape))
    ct = str(code_type).upper()
    if ct not in _CODE_TYPES:
        raise ValueError(f"code_type must be one of {_CODE_TYPES}, got {code_type!r}")
    var = None
    if not variance_encoded_in_target:
        if variances is None:
            raise ShapeError("decode_boxes needs variances unless variance_encoded_in_target")
        var = as_float_array(variances, "variances")
    if clip and not normalized:
        raise ValueError("decode_boxes: clip needs normalized boxes (pixel clipping needs the "
                         "image size)")
    try:
        np.broadcast_shapes(loc.shape, priors.shape, () if var is None else var.shape)
    except ValueError as e:
        raise ShapeError("decode_boxes: loc, priors and variances do not broadcast",
                         got=(loc.shape, priors.shape, None if var is None else var.shape)) from e
    return loc, priors, var, ct


def _decode(loc, priors, var, ct, clip, normalized, xp_dtype):
    """Shared decoding formula of Caffe-SSD's DecodeBBox, computed in ``xp_dtype``."""
    lc = loc.astype(xp_dtype, copy=False)
    pr = priors.astype(xp_dtype, copy=False)
    d = lc if var is None else lc * var.astype(xp_dtype, copy=False)
    px1, py1, px2, py2 = pr[..., 0], pr[..., 1], pr[..., 2], pr[..., 3]
    if ct == "CORNER":
        out = np.stack([px1 + d[..., 0], py1 + d[..., 1], px2 + d[..., 2], py2 + d[..., 3]], -1)
    else:
        pw, ph = px2 - px1, py2 - py1
        if ct == "CORNER_SIZE":
            out = np.stack([px1 + d[..., 0] * pw, py1 + d[..., 1] * ph,
                            px2 + d[..., 2] * pw, py2 + d[..., 3] * ph], -1)
        else:
            if not normalized:  # cv2 normalized_bbox=false: pixel priors are (w+1) wide
                pw, ph = pw + 1, ph + 1
            cx = px1 + pw / 2
            cy = py1 + ph / 2
            dcx = d[..., 0] * pw + cx
            dcy = d[..., 1] * ph + cy
            dw = np.exp(d[..., 2]) * pw
            dh = np.exp(d[..., 3]) * ph
            out = np.stack([dcx - dw / 2, dcy - dh / 2, dcx + dw / 2, dcy + dh / 2], -1)
    if clip:
        out = np.clip(out, 0, 1)
    return out


@ieee
def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray | None,
                 code_type: str = "CENTER_SIZE", variance_encoded_in_target: bool = False,
                 clip: bool = False, normalized: bool = True) -> np.ndarray:
    """Caffe-SSD DecodeBBox on ``(..., 4)`` rows: CORNER adds ``var*loc`` to the prior corners,
    CENTER_SIZE shifts the prior centre by ``var*loc*size`` and scales its size by
    ``exp(var*loc)``, CORNER_SIZE adds ``var*loc*size`` to each corner; ``variance_encoded_
    in_target`` drops ``var``; ``clip`` clamps to [0, 1]; ``normalized=False`` is cv2's pixel
    rule (prior size ``+1`` in CENTER_SIZE)."""
    loc, priors, var, ct = _decode_check(loc, priors, variances, code_type,
                                         variance_encoded_in_target, clip, normalized)
    return _decode(loc, priors, var, ct, clip, normalized, loc.dtype).astype(loc.dtype, copy=False)


@ieee
def decode_boxes_reference(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray | None,
                           code_type: str = "CENTER_SIZE",
                           variance_encoded_in_target: bool = False, clip: bool = False,
                           normalized: bool = True) -> np.ndarray:
    """Reference DecodeBBox: :func:`decode_boxes` computed in float64."""
    loc, priors, var, ct = _decode_check(loc, priors, variances, code_type,
                                         variance_encoded_in_target, clip, normalized)
    return _decode(loc, priors, var, ct, clip, normalized, np.float64).astype(loc.dtype)


# ---- DetectionOutput ----------------------------------------------------------------------
def _detout_check(loc, conf, priors, num_classes, share_location, background_label_id,
                  code_type, variance_encoded_in_target, eta, clip, normalized):
    loc = as_float_array(loc, "loc")
    conf = as_float_array(conf, "conf")
    priors = as_float_array(priors, "priors", ndim=(3, 4))
    if priors.ndim == 4:  # cv2 reads (1, 1|2, P*4, 1) as well (Faster R-CNN's reshaped proposals)
        if priors.shape[3] != 1:
            raise ShapeError("priors must be (1, 1|2, P*4) or (1, 1|2, P*4, 1)", got=priors.shape)
        priors = priors[..., 0]
    for nm, arr in (("conf", conf), ("priors", priors)):
        if arr.dtype != loc.dtype:
            raise TypeError(f"{nm} has dtype {arr.dtype} but loc has dtype {loc.dtype}")
    nc = int(num_classes)
    if nc < 1:
        raise ValueError(f"detection_output needs num_classes >= 1, got {num_classes}")
    if loc.ndim == 0 or conf.ndim == 0 or loc.shape[0] != conf.shape[0]:
        raise ShapeError("loc and conf must share the batch size N", got=(loc.shape, conf.shape))
    n = loc.shape[0]
    if priors.shape[2] % 4 or priors.shape[0] not in (1, n):
        raise ShapeError("priors must be (1 or N, 2, P*4)", expected=f"(1 or {n}, 2, P*4)",
                         got=priors.shape)
    p = priors.shape[2] // 4
    nloc = 1 if share_location else nc
    if loc.size != n * p * nloc * 4:
        raise ShapeError(f"loc must hold N*P*{nloc}*4 values", expected=(n, p * nloc * 4),
                         got=loc.shape)
    if conf.size != n * p * nc:
        raise ShapeError("conf must hold N*P*num_classes values", expected=(n, p * nc),
                         got=conf.shape)
    need = 1 if variance_encoded_in_target else 2
    if priors.shape[1] < need:
        raise ShapeError("priors need a variance channel unless variance_encoded_in_target",
                         expected=f"(1, {need}, {p * 4})", got=priors.shape)
    if str(code_type).upper() not in _CODE_TYPES:
        raise ValueError(f"code_type must be one of {_CODE_TYPES}, got {code_type!r}")
    if not eta > 0:
        raise ValueError(f"detection_output eta must be > 0, got {eta}")
    if clip and not normalized:
        raise ValueError("detection_output: clip needs normalized boxes")
    return (loc.reshape(n, p, nloc, 4), conf.reshape(n, p, nc), priors[0, 0].reshape(p, 4),
            None if variance_encoded_in_target else priors[0, 1].reshape(p, 4), n, p, nc)


def _detection_output(loc, conf, priors, num_classes, share_location, background_label_id,
                      nms_threshold, top_k, keep_top_k, confidence_threshold, code_type,
                      variance_encoded_in_target, eta, clip, normalized, fast):
    lc, cf, pri, var, n, p, nc = _detout_check(
        loc, conf, priors, num_classes, share_location, background_label_id, code_type,
        variance_encoded_in_target, eta, clip, normalized)
    work = loc.dtype if fast else np.float64
    ct = str(code_type).upper()
    rule = "caffe" if normalized else "caffe+1"
    zeros = np.zeros(p, dtype=np.int64)
    top = None if top_k is None else int(top_k)
    rows_all = []
    for i in range(n):
        decoded = _decode(lc[i], pri[:, None, :], None if var is None else var[:, None, :], ct,
                          clip, normalized, work)  # (P, nloc, 4)
        dets = []  # (score, label, rank within label, box)
        for c in range(nc):
            if c == background_label_id:
                continue
            boxes = decoded[:, 0 if share_location else c]
            scores = cf[i, :, c]
            order = _candidates(scores, confidence_threshold, top)
            if fast:
                kept = _greedy_nms_jit(_f64c(boxes), order, zeros,
                                       float(nms_threshold), float(eta), _RULE_CODE[rule],
                                       len(order) + 1)
            else:
                kept = _greedy_reference(boxes, order, zeros, float(nms_threshold), float(eta),
                                         rule)
            dets += [(float(scores[k]), c, r, boxes[k]) for r, k in enumerate(kept)]
        # highest scores first (cv2 4.x order); ties by label, then NMS order (stable)
        dets.sort(key=lambda d: (-d[0], d[1], d[2]))
        if keep_top_k is not None and keep_top_k > -1:
            dets = dets[:keep_top_k]
        rows_all += [[i, lab, s, *box] for s, lab, _, box in dets]
    k = max(len(rows_all), 1)
    if keep_top_k is not None and keep_top_k > 0:
        k = keep_top_k * n
    out = np.zeros((1, 1, k, 7), dtype=loc.dtype)
    if rows_all:
        out[0, 0, :len(rows_all)] = np.asarray(rows_all, dtype=np.float64)
    return out


@ieee
def detection_output(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, *, num_classes: int,
                     share_location: bool = True, background_label_id: int = 0,
                     nms_threshold: float = 0.45, top_k: int = -1, keep_top_k: int = -1,
                     confidence_threshold: float = 0.01, code_type: str = "CENTER_SIZE",
                     variance_encoded_in_target: bool = False, eta: float = 1.0,
                     clip: bool = False, normalized: bool = True) -> np.ndarray:
    """Caffe-SSD DetectionOutput: decode ``loc`` against ``priors[0]`` (``(1|N, 2, P*4)``:
    boxes then variances), per class except the background keep scores > threshold, NMS
    (``top_k``, ``eta``, IoU > ``nms_threshold`` suppressed), then the best ``keep_top_k`` per
    image. Output ``(1, 1, K, 7)`` rows ``[image, label, score, x1, y1, x2, y2]`` as cv2 4.x lays
    them out: by image, highest score first, zero rows padding to ``K = keep_top_k * N`` when
    ``keep_top_k > 0``; otherwise ``K`` = number of detections, one zero row when there are none."""
    return _detection_output(loc, conf, priors, num_classes, share_location, background_label_id,
                             nms_threshold, top_k, keep_top_k, confidence_threshold, code_type,
                             variance_encoded_in_target, eta, clip, normalized, fast=True)


@ieee
def detection_output_reference(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, *,
                               num_classes: int, share_location: bool = True,
                               background_label_id: int = 0, nms_threshold: float = 0.45,
                               top_k: int = -1, keep_top_k: int = -1,
                               confidence_threshold: float = 0.01,
                               code_type: str = "CENTER_SIZE",
                               variance_encoded_in_target: bool = False, eta: float = 1.0,
                               clip: bool = False, normalized: bool = True) -> np.ndarray:
    """Reference DetectionOutput: float64 decoding and a plain-loop NMS, same rules and layout
    as :func:`detection_output`."""
    return _detection_output(loc, conf, priors, num_classes, share_location, background_label_id,
                             nms_threshold, top_k, keep_top_k, confidence_threshold, code_type,
                             variance_encoded_in_target, eta, clip, normalized, fast=False)
