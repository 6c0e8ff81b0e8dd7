"""YOLO detection heads: Darknet's [region] (YOLOv2) and [yolo] (YOLOv3/v4) decoding, in cv2's layout.

The input is the head convolution's output permuted to NHWC, ``x`` of shape
``(N, H, W, A * (5 + classes))`` (cv2 inserts a Permute(0, 2, 3, 1) before its Region layer);
channel ``a * (5 + classes) + k`` holds entry ``k`` of anchor ``a`` (Darknet's order). The output
is ``(N, H * W * A, 5 + classes)`` with row ``(y * W + x) * A + a`` =
``[cx, cy, w, h, objectness, p_0 .. p_{classes-1}]``: centre and size relative to the image,
class scores already multiplied by the objectness, scores ``<= thresh`` set to 0, and, when
``nms_threshold > 0``, per-class greedy NMS that zeroes the suppressed scores -- the rules of
OpenCV's RegionLayer (modules/dnn/src/layers/region_layer.cpp) and Darknet's
get_region_boxes / get_yolo_box. (cv2 drops the batch axis when N == 1; the IR op does that.)

``region``/``yolo`` are the fast vectorised float32 paths, ``*_reference`` the readable
per-cell loops (float64 when given float64). ``yolo_detections`` turns head outputs into
boxes with per-class NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels.detection import batched_nms, nms

__all__ = [
    "region",
    "region_reference",
    "yolo",
    "yolo_reference",
    "yolo_detections",
]


# ---- argument checks ---------------------------------------------------------------------------
def _check(x: object, anchors: Sequence[float], classes: int, norm_hw: tuple[int, int] | None,
           ) -> tuple[np.ndarray, np.ndarray, int, int, int, int, int]:
    x = as_float_array(x, "x", 4)
    classes = int(classes)
    if classes < 1:
        raise ShapeError("classes must be >= 1", expected=">= 1", got=classes)
    anc = np.asarray(anchors, dtype=np.float64).reshape(-1)
    if anc.size == 0 or anc.size % 2:
        raise ShapeError("anchors must hold (w, h) pairs", expected="an even, non-zero count", got=anc.size)
    n_anchors = anc.size // 2
    cell = 5 + classes
    n, h, w, c = x.shape
    if c != n_anchors * cell:
        raise ShapeError("x must be NHWC with anchors * (5 + classes) channels last",
                         expected=f"(N, H, W, {n_anchors} * {cell} = {n_anchors * cell})", got=f"shape {x.shape}")
    if norm_hw is None:
        nh, nw = h, w
    else:
        nh, nw = (int(v) for v in norm_hw)
        if nh <= 0 or nw <= 0:
            raise ShapeError("norm_hw must be positive", expected="(H > 0, W > 0)", got=norm_hw)
    return x, anc.reshape(n_anchors, 2), n_anchors, cell, nh, nw, classes


def _sigmoid(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


# ---- fast path ----------------------------------------------------------------------------------
def _decode(x: np.ndarray, anchors: Sequence[float], classes: int, *, softmax: bool, thresh: float,
            nms_threshold: float, classfix: int, scale_x_y: float, new_coords: bool,
            norm_hw: tuple[int, int] | None) -> np.ndarray:
    x, anc, na, cell, nh, nw, classes = _check(x, anchors, classes, norm_hw)
    dt = x.dtype
    n, h, w, _ = x.shape
    v = x.reshape(n, h, w, na, cell)
    gx = np.arange(w, dtype=dt).reshape(1, 1, w, 1)
    gy = np.arange(h, dtype=dt).reshape(1, h, 1, 1)
    aw = anc[:, 0].astype(dt)
    ah = anc[:, 1].astype(dt)
    s = dt.type(scale_x_y)
    half = dt.type(0.5)
    out = np.empty_like(v)
    with np.errstate(over="ignore", invalid="ignore"):
        if new_coords:
            tx, ty = v[..., 0], v[..., 1]
            out[..., 2] = v[..., 2] * v[..., 2] * dt.type(4) * aw / dt.type(nw)
            out[..., 3] = v[..., 3] * v[..., 3] * dt.type(4) * ah / dt.type(nh)
            obj = v[..., 4]
            cls = v[..., 5:]
            cut = thresh
        else:
            tx, ty = _sigmoid(v[..., 0]), _sigmoid(v[..., 1])
            out[..., 2] = np.exp(v[..., 2]) * aw / dt.type(nw)
            out[..., 3] = np.exp(v[..., 3]) * ah / dt.type(nh)
            obj = _sigmoid(v[..., 4])
            if softmax:
                z = v[..., 5:]
                e = np.exp(z - z.max(axis=-1, keepdims=True))
                cls = e / e.sum(axis=-1, keepdims=True)
            else:
                cls = _sigmoid(v[..., 5:])
            cut = 0.5
        out[..., 0] = (gx + ((tx - half) * s + half)) / dt.type(w)
        out[..., 1] = (gy + ((ty - half) * s + half)) / dt.type(h)
        out[..., 4] = obj
        scale = np.where(obj < cut, dt.type(0), obj) if classfix == -1 else obj
        prob = scale[..., None] * cls
        out[..., 5:] = np.where(prob > thresh, prob, dt.type(0))
    out = out.reshape(n, h * w * na, cell)
    if nms_threshold > 0:
        for b in range(n):
            _nms_rows(out[b], classes, thresh, nms_threshold)
    return out


def _nms_rows(rows: np.ndarray, classes: int, thresh: float, nms_threshold: float) -> None:
    """RegionLayer's do_nms_sort, in place: per class keep only the NMS survivors' scores.

    Boxes are cv2's Rect2d (x - w/2, y - h/2, w, h) in float64; the NMS is cv2.dnn.NMSBoxes'
    (refnet.kernels.detection.nms).
    """
    r = rows.astype(np.float64)
    x1 = r[:, 0] - r[:, 2] / 2
    y1 = r[:, 1] - r[:, 3] / 2
    corners = np.stack([x1, y1, x1 + r[:, 2], y1 + r[:, 3]], axis=1)
    for k in range(classes):
        col = rows[:, 5 + k].copy()
        rows[:, 5 + k] = 0
        if not np.any(col > thresh):
            continue
        keep = nms(corners, col, nms_threshold, score_threshold=thresh)
        rows[keep, 5 + k] = col[keep]


@ieee
def region(x: np.ndarray, anchors: Sequence[float], classes: int, *, softmax: bool = True, thresh: float = 0.0,
           nms_threshold: float = 0.0, classfix: int = 0, scale_x_y: float = 1.0, new_coords: bool = False,
           norm_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Darknet [region] (YOLOv2) decode in cv2's RegionLayer layout; anchors in grid cells.

    Sizes are divided by ``norm_hw`` (default: the grid, as Darknet's get_region_box does);
    ``softmax=False`` squashes classes with the logistic (Darknet's rule without softmax).
    """
    return _decode(x, anchors, classes, softmax=softmax, thresh=thresh, nms_threshold=nms_threshold,
                   classfix=classfix, scale_x_y=scale_x_y, new_coords=new_coords, norm_hw=norm_hw)


@ieee
def yolo(x: np.ndarray, anchors: Sequence[float], classes: int, *, norm_hw: tuple[int, int],
         thresh: float = 0.0, nms_threshold: float = 0.0, scale_x_y: float = 1.0,
         new_coords: bool = False) -> np.ndarray:
    """Darknet [yolo] (YOLOv3/v4) decode in cv2's layout; ``anchors`` are the masked ones, in pixels.

    Logistic classes, sizes divided by the network input ``norm_hw = (H, W)``, centres scaled
    by ``scale_x_y`` ((sigmoid - 0.5) * s + 0.5) as Darknet's forward_yolo_layer does.
    """
    return _decode(x, anchors, classes, softmax=False, thresh=thresh, nms_threshold=nms_threshold,
                   classfix=0, scale_x_y=scale_x_y, new_coords=new_coords, norm_hw=norm_hw)


# ---- reference: one grid cell and anchor at a time -----------------------------------------------
def _decode_reference(x: np.ndarray, anchors: Sequence[float], classes: int, *, softmax: bool, thresh: float,
                      nms_threshold: float, classfix: int, scale_x_y: float, new_coords: bool,
                      norm_hw: tuple[int, int] | None) -> np.ndarray:
    x, anc, na, cell, nh, nw, classes = _check(x, anchors, classes, norm_hw)
    n, h, w, _ = x.shape
    out = np.zeros((n, h * w * na, cell), dtype=x.dtype)
    for b in range(n):
        for row in range(h):
            for col in range(w):
                for a in range(na):
                    t = x[b, row, col, a * cell:(a + 1) * cell].astype(np.float64)
                    o = out[b, (row * w + col) * na + a]
                    with np.errstate(over="ignore", invalid="ignore"):
                        if new_coords:
                            bx, by = t[0], t[1]
                            bw = t[2] * t[2] * 4.0 * anc[a, 0] / nw
                            bh = t[3] * t[3] * 4.0 * anc[a, 1] / nh
                            objectness = t[4]
                            probs = t[5:]
                            cut = thresh
                        else:
                            bx, by = 1.0 / (1.0 + np.exp(-t[0])), 1.0 / (1.0 + np.exp(-t[1]))
                            bw = np.exp(t[2]) * anc[a, 0] / nw
                            bh = np.exp(t[3]) * anc[a, 1] / nh
                            objectness = 1.0 / (1.0 + np.exp(-t[4]))
                            if softmax:
                                e = np.exp(t[5:] - np.max(t[5:]))
                                probs = e / np.sum(e)
                            else:
                                probs = 1.0 / (1.0 + np.exp(-t[5:]))
                            cut = 0.5
                        o[0] = (col + (bx - 0.5) * scale_x_y + 0.5) / w
                        o[1] = (row + (by - 0.5) * scale_x_y + 0.5) / h
                        o[2] = bw
                        o[3] = bh
                        o[4] = objectness
                        scale = 0.0 if (classfix == -1 and objectness < cut) else objectness
                        for k in range(classes):
                            p = scale * probs[k]
                            o[5 + k] = p if p > thresh else 0.0
        if nms_threshold > 0:
            _nms_rows_reference(out[b], classes, thresh, nms_threshold)
    return out


def _nms_rows_reference(rows: np.ndarray, classes: int, thresh: float, nms_threshold: float) -> None:
    """Readable twin of :func:`_nms_rows`. Its own greedy loop on purpose: it measures overlaps on cv2's
    Rect2d (x, y, w, h) exactly as cv2.dnn.NMSBoxes does (area ``w * h``), an oracle for the fast path,
    which runs refnet.kernels.detection.nms on corners (``x + w`` rounds)."""
    boxes = [(float(r[0]) - float(r[2]) / 2, float(r[1]) - float(r[3]) / 2, float(r[2]), float(r[3])) for r in rows]
    for k in range(classes):
        scores = [float(v) for v in rows[:, 5 + k]]
        rows[:, 5 + k] = 0
        # cv2 keeps thresholds and overlaps as C floats; sorted() is stable: ties keep index order
        cand = sorted((i for i in range(len(scores)) if scores[i] > np.float32(thresh)), key=lambda i: -scores[i])
        kept: list[int] = []
        for i in cand:
            if all(np.float32(_iou_reference(boxes[i], boxes[j])) <= np.float32(nms_threshold) for j in kept):
                kept.append(i)
        for i in kept:
            rows[i, 5 + k] = scores[i]


def _iou_reference(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    area_sum = a[2] * a[3] + b[2] * b[3]
    if area_sum <= np.finfo(np.float64).eps:
        return 1.0
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = iw * ih if (iw > 0 and ih > 0) else 0.0
    return inter / (area_sum - inter)


@ieee
def region_reference(x: np.ndarray, anchors: Sequence[float], classes: int, *, softmax: bool = True,
                     thresh: float = 0.0, nms_threshold: float = 0.0, classfix: int = 0, scale_x_y: float = 1.0,
                     new_coords: bool = False, norm_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Readable per-cell twin of :func:`region` (same arguments and output)."""
    return _decode_reference(x, anchors, classes, softmax=softmax, thresh=thresh, nms_threshold=nms_threshold,
                             classfix=classfix, scale_x_y=scale_x_y, new_coords=new_coords, norm_hw=norm_hw)


@ieee
def yolo_reference(x: np.ndarray, anchors: Sequence[float], classes: int, *, norm_hw: tuple[int, int],
                   thresh: float = 0.0, nms_threshold: float = 0.0, scale_x_y: float = 1.0,
                   new_coords: bool = False) -> np.ndarray:
    """Readable per-cell twin of :func:`yolo` (same arguments and output)."""
    return _decode_reference(x, anchors, classes, softmax=False, thresh=thresh, nms_threshold=nms_threshold,
                             classfix=0, scale_x_y=scale_x_y, new_coords=new_coords, norm_hw=norm_hw)


# ---- post-processing ------------------------------------------------------------------------------
@ieee
def yolo_detections(outputs: Sequence[np.ndarray] | np.ndarray, *, conf_threshold: float = 0.25,
                    nms_threshold: float = 0.45, image_size: tuple[int, int] | None = None,
                    ) -> dict[str, np.ndarray]:
    """Detections from region/yolo head outputs (cv2 layout), the OpenCV sample's rule.

    Each row's class is its best-scoring class; rows whose score is ``> conf_threshold`` are kept,
    then greedy NMS runs per class (IoU ``> nms_threshold`` suppresses; cv2.dnn.NMSBoxes rules,
    via refnet.kernels.detection.batched_nms).
    Returns ``boxes`` (K, 4) as (x1, y1, x2, y2) -- relative to the image, or in pixels when
    ``image_size=(width, height)`` is given -- ``scores`` (K,) and ``class_ids`` (K,), sorted
    by descending score.
    """
    outs = [outputs] if isinstance(outputs, np.ndarray) else list(outputs)
    rows = []
    for i, o in enumerate(outs):
        o = as_float_array(o, f"outputs[{i}]", (2, 3))
        if o.ndim == 3:
            if o.shape[0] != 1:
                raise ShapeError("yolo_detections handles one image at a time", expected="batch 1", got=o.shape)
            o = o[0]
        if o.shape[1] < 6:
            raise ShapeError(f"outputs[{i}] rows must be [cx, cy, w, h, obj, scores...]", expected=">= 6 columns",
                             got=o.shape)
        rows.append(o.astype(np.float64))
    ncols = {r.shape[1] for r in rows}
    if len(ncols) != 1:
        raise ShapeError("all outputs must have the same number of classes", got=sorted(ncols))
    r = np.concatenate(rows, axis=0)
    cls_scores = r[:, 5:]
    class_ids = np.argmax(cls_scores, axis=1)
    scores = cls_scores[np.arange(r.shape[0]), class_ids]
    sel = np.flatnonzero(scores > conf_threshold)
    r, class_ids, scores = r[sel], class_ids[sel], scores[sel]
    sx, sy = (1.0, 1.0) if image_size is None else (float(image_size[0]), float(image_size[1]))
    w = r[:, 2] * sx
    h = r[:, 3] * sy
    x1 = r[:, 0] * sx - w / 2
    y1 = r[:, 1] * sy - h / 2
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    keep = batched_nms(boxes, scores, class_ids, nms_threshold, score_threshold=conf_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    boxes = boxes[keep]
    return {"boxes": boxes, "scores": scores[keep], "class_ids": class_ids[keep].astype(np.int64)}
