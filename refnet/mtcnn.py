"""The MTCNN face-detection cascade (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", 2016) on refnet's kernels: P-Net, R-Net, O-Net.

The steps of the published code (kpzhang93 ``detect_face.m``, as ported in FaceNet's
``align/detect_face.py``):

1. **Pyramid.** Scales ``m * factor**k`` with ``m = 12 / minsize`` (minsize 20, factor 0.709)
   while ``min(h, w) * scale >= 12``; each level is the RGB image resized to
   ``ceil(h * s) x ceil(w * s)`` (area interpolation), normalised ``(x - 127.5) / 128``, fed
   transposed (the models were trained in MATLAB, column-major: N, C, W, H).
2. **P-Net.** Every cell of the face-probability map with ``p >= t1`` (0.6) is a 12x12 window
   at stride 2: ``(stride * (x, y) + 1) / s`` to ``(stride * (x, y) + 12) / s``, rounded toward
   zero, with its four box offsets; NMS 0.5 (union) per scale, NMS 0.7 over all scales; then
   the offsets move each side by ``offset * (x2 - x1)`` (width without the +1), and the box
   becomes the square around its centre (side = the longer side), rounded toward zero.
3. **R-Net.** Each box is cut from the image (zeros outside it), resized to 24x24; boxes with
   ``p > t2`` (0.7) stay, NMS 0.7 (union), offsets applied with ``w = x2 - x1 + 1``, squared.
4. **O-Net.** The same on 48x48 crops with ``t3`` (0.7): the five landmarks are
   ``x1 + w * lx - 1``, ``y1 + h * ly - 1``; offsets applied, then NMS 0.7 with the *minimum*
   area as the IoU denominator.

Boxes are in the published code's 1-based pixel coordinates (what it returns and draws). NMS
here is the published one: boxes sorted by score (the last index of the ascending sort
first), areas with +1 (pixel-inclusive corners), overlap ``> threshold`` suppresses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from refnet import tolerances

__all__ = ["MtcnnCascade", "nms_published", "load_cascade", "THRESHOLDS", "CASCADE_NAME"]

THRESHOLDS = tolerances.MTCNN_THRESHOLDS  # P-Net, R-Net, O-Net (the published detect_face)
CASCADE_NAME = "mtcnn"


def nms_published(boxes: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """detect_face's NMS on rows (x1, y1, x2, y2, score): indices kept, best first.

    Not refnet.kernels.detection.nms on purpose: the published MTCNN rule visits boxes by an
    ascending stable argsort taken from the end (score ties: the higher index first), offers the
    "min" overlap (intersection over the smaller area) and measures float64 overlaps; the cascade
    reproduces the published detector, so it keeps the published loop."""
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2, s = (boxes[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s, kind="stable")
    pick = []
    while order.size:
        i = order[-1]
        pick.append(i)
        rest = order[:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(pick, np.int64)


def _square(b: np.ndarray) -> np.ndarray:
    out = b.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(b: np.ndarray, reg: np.ndarray, plus_one: bool) -> np.ndarray:
    out = b.copy()
    w = b[:, 2] - b[:, 0] + (1 if plus_one else 0)
    h = b[:, 3] - b[:, 1] + (1 if plus_one else 0)
    out[:, 0:4] = b[:, 0:4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _normalise(img_rgb: np.ndarray) -> np.ndarray:
    """(x - 127.5) / 128, NCWH (transposed, as the MATLAB-trained nets expect)."""
    x = (img_rgb.astype(np.float32) - np.float32(127.5)) * np.float32(0.0078125)
    return np.ascontiguousarray(x.transpose(2, 1, 0)[None])


def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box cut from ``img`` with zeros outside (float, as the published code resamples it),
    resized to size x size. Box corners are the published code's 1-based pixel coordinates:
    (x1, y1)-(x2, y2) covers 0-based columns x1 - 1 .. x2 - 1 and rows y1 - 1 .. y2 - 1."""
    h, w = img.shape[:2]
    out = np.empty((len(boxes), 3, size, size), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64) - 1):
        bw, bh = int(x2 - x1 + 1), int(y2 - y1 + 1)
        tmp = np.zeros((max(bh, 1), max(bw, 1), 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
        if sx2 >= sx1 and sy2 >= sy1:
            tmp[sy1 - y1:sy2 - y1 + 1, sx1 - x1:sx2 - x1 + 1] = img[sy1:sy2 + 1, sx1:sx2 + 1]
        out[k] = _normalise(cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA))[0]
    return out


@dataclass
class MtcnnCascade:
    """P-Net, R-Net and O-Net (refnet Nets) and the cascade's settings."""

    pnet: Any
    rnet: Any
    onet: Any
    minsize: float = 20.0
    factor: float = 0.709
    thresholds: tuple[float, float, float] = THRESHOLDS

    def detect(self, image_bgr: np.ndarray, precision: str = "float32"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Faces in a BGR uint8 image: (boxes (K, 4) x1, y1, x2, y2 in pixels, scores (K,),
        landmarks (K, 5, 2) as (x, y), {"scales", "stage_counts"})."""
        img = cv2.cvtColor(np.ascontiguousarray(image_bgr[:, :, :3]), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        t1, t2, t3 = self.thresholds
        m = 12.0 / self.minsize
        minl = min(h, w) * m
        scales = []
        while minl >= 12:
            scales.append(m * self.factor ** len(scales))
            minl *= self.factor
        found = []
        for s in scales:
            hs, ws = int(math.ceil(h * s)), int(math.ceil(w * s))
            x = _normalise(cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA))
            out = self.pnet.forward(x, outputs=["prob1", "conv4-2"], precision=precision)
            prob = np.asarray(out["prob1"][0, 1], np.float64).T  # (W', H') -> (H', W')
            reg = np.asarray(out["conv4-2"][0], np.float64).transpose(0, 2, 1)
            xs, ys = np.nonzero(prob.T >= t1)  # the published scan order: along x first
            if len(ys) == 0:
                continue
            q1 = np.fix((2.0 * np.stack([xs, ys], 1) + 1) / s)
            q2 = np.fix((2.0 * np.stack([xs, ys], 1) + 12) / s)
            b = np.concatenate([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], axis=1)
            found.append(b[nms_published(b, 0.5, "union")])
        counts = [0, 0, 0]
        if not found:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), {"scales": scales, "stage_counts": counts}
        boxes = np.concatenate(found)
        boxes = boxes[nms_published(boxes, 0.7, "union")]
        boxes = np.concatenate([_regress(boxes[:, :5], boxes[:, 5:9], False)[:, :4], boxes[:, 4:5]], axis=1)
        boxes[:, :4] = np.fix(_square(boxes)[:, :4])
        counts[0] = len(boxes)
        # R-Net
        if len(boxes):
            out = self.rnet.forward(_crops(img, boxes, 24), outputs=["prob1", "conv5-2"], precision=precision)
            score = np.asarray(out["prob1"], np.float64).reshape(len(boxes), -1)[:, 1]
            reg = np.asarray(out["conv5-2"], np.float64).reshape(len(boxes), 4)
            keep = score > t2
            boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
            reg = reg[keep]
            pick = nms_published(boxes, 0.7, "union")
            boxes = _regress(boxes[pick], reg[pick], True)
            boxes[:, :4] = np.fix(_square(boxes)[:, :4])
        counts[1] = len(boxes)
        pts = np.zeros((0, 5, 2))
        # O-Net
        if len(boxes):
            out = self.onet.forward(_crops(img, boxes, 48), outputs=["prob1", "conv6-2", "conv6-3"],
                                    precision=precision)
            n = len(boxes)
            score = np.asarray(out["prob1"], np.float64).reshape(n, -1)[:, 1]
            reg = np.asarray(out["conv6-2"], np.float64).reshape(n, 4)
            lm = np.asarray(out["conv6-3"], np.float64).reshape(n, 10)
            keep = score > t3
            boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
            reg, lm = reg[keep], lm[keep]
            bw = boxes[:, 2] - boxes[:, 0] + 1
            bh = boxes[:, 3] - boxes[:, 1] + 1
            pts = np.stack([bw[:, None] * lm[:, 0:5] + boxes[:, 0:1] - 1,
                            bh[:, None] * lm[:, 5:10] + boxes[:, 1:2] - 1], axis=2)
            boxes = _regress(boxes, reg, True)
            pick = nms_published(boxes, 0.7, "min")
            boxes, pts = boxes[pick], pts[pick]
        counts[2] = len(boxes)
        return boxes[:, :4], boxes[:, 4], pts, {"scales": scales, "stage_counts": counts}


def load_cascade(quirks: str = "none") -> tuple[MtcnnCascade, list[str]]:
    """P-Net, R-Net and O-Net from the zoo entries mtcnn-det1/2/3 (ModelMissingError when absent)."""
    import refnet
    from refnet import zoo

    nets, paths = [], []
    for k in (1, 2, 3):
        loc = zoo.find(f"mtcnn-det{k}")
        p = [str(x) for x in loc.main_paths]
        nets.append(refnet.load(*p, quirks=quirks))
        paths += p
    return MtcnnCascade(*nets), paths


def run_cascade(cascade: MtcnnCascade, image_bgr: np.ndarray, precision: str = "float32",
                threshold: float | None = None) -> Any:
    """The cascade as a ``face`` :class:`refnet.pipelines.TaskResult` (boxes, scores, landmarks)."""
    from refnet.pipelines import TaskResult

    if threshold is not None:
        cascade.thresholds = (cascade.thresholds[0], cascade.thresholds[1], float(threshold))
    boxes, scores, pts, extra = cascade.detect(image_bgr, precision)
    order = np.argsort(-scores, kind="stable")
    boxes, scores, pts = boxes[order], scores[order], pts[order]
    ids = np.ones(len(scores), np.int64)
    names = ["face"] * len(scores)
    data = {"model": CASCADE_NAME, "precision": precision, "decoder": "mtcnn", "boxes": boxes, "scores": scores,
            "class_ids": ids, "labels": names, "landmarks": pts, "threshold": cascade.thresholds[2],
            "nms_threshold": 0.7, "scales": extra["scales"], "stage_counts": extra["stage_counts"],
            "detections": [{"label": "face", "class_id": 1, "score": float(s), "box": tuple(float(v) for v in b)}
                           for s, b in zip(scores, boxes)], "seeded": False}
    c = extra["stage_counts"]
    h, w = image_bgr.shape[:2]
    lines = [f"face: mtcnn cascade (P-Net, R-Net, O-Net) on a {w}x{h} image, {len(extra['scales'])} pyramid "
             f"levels, {precision}",
             f"{len(scores)} face{'' if len(scores) == 1 else 's'} (P-Net {c[0]} -> R-Net {c[1]} -> O-Net {c[2]}; "
             f"thresholds {', '.join(f'{t:g}' for t in cascade.thresholds)}):"]
    for s, b in list(zip(scores, boxes))[:25]:
        lines.append(f"  face             {s:6.3f}  box ({b[0]:.0f}, {b[1]:.0f})-({b[2]:.0f}, {b[3]:.0f})")
    blob = np.zeros((1, 3, 0, 0), np.float32)
    return TaskResult("face", np.ascontiguousarray(image_bgr[:, :, :3]), blob, {}, data, "\n".join(lines))
