"""ONNX NonMaxSuppression (per batch and class, greedy, corner or centre boxes) and RoiAlign
(bilinear sampling per bin, average or max). Plain loops: both are readable as written and
the selections are small, so the fast names are the references."""

from __future__ import annotations

import math

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import ieee

__all__ = ["nms_onnx", "nms_onnx_reference", "roi_align", "roi_align_reference"]


def _corners(b: np.ndarray, center: bool) -> np.ndarray:
    b = b.astype(np.float64)
    if center:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)
    y1, x1, y2, x2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]  # either corner order is allowed
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], 1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    h = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    w = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = h * w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@ieee
def nms_onnx_reference(boxes: np.ndarray, scores: np.ndarray, max_output_boxes_per_class: int,
                       iou_threshold: float, score_threshold: float = -math.inf,
                       center_point_box: int = 0) -> np.ndarray:
    """Rows [batch, class, box] of the kept boxes: for every batch and class, candidates with
    score > score_threshold by descending score (lower index first on ties), each kept unless
    its IoU with a kept box exceeds iou_threshold, at most max_output_boxes_per_class."""
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[0] != boxes.shape[0] \
            or scores.shape[2] != boxes.shape[1]:
        raise ShapeError("NMS needs boxes (B, N, 4) and scores (B, C, N)", got=(boxes.shape, scores.shape))
    rows: list[tuple[int, int, int]] = []
    for bi in range(boxes.shape[0]):
        bx = _corners(boxes[bi], bool(center_point_box))
        for ci in range(scores.shape[1]):
            s = scores[bi, ci].astype(np.float64)
            order = [int(i) for i in np.argsort(-s, kind="stable") if s[i] > score_threshold]
            kept: list[int] = []
            for i in order:
                if len(kept) >= max_output_boxes_per_class:
                    break
                if all(_iou(bx[i], bx[j]) <= iou_threshold for j in kept):
                    kept.append(i)
            rows += [(bi, ci, i) for i in kept]
    return np.array(rows, np.int64).reshape(-1, 3)


nms_onnx = nms_onnx_reference


def _bilinear(plane: np.ndarray, y: float, x: float) -> tuple[np.ndarray, ...] | None:
    """The four (weight * value) terms of a bilinear sample at (y, x) of (C, H, W); None outside."""
    h, w = plane.shape[1:]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return None
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yh = yl = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xh = xl = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * plane[:, yl, xl], hy * lx * plane[:, yl, xh], ly * hx * plane[:, yh, xl],
            ly * lx * plane[:, yh, xh])


@ieee
def roi_align_reference(x: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, *, mode: str = "avg",
                        output_height: int = 1, output_width: int = 1, sampling_ratio: int = 0,
                        spatial_scale: float = 1.0, half_pixel: bool = True) -> np.ndarray:
    """Each bin averages (avg) or takes the largest of (max) its sampling_ratio^2 bilinear samples
    (adaptive ceil(roi/bins) when 0) at bin_start + (i + 0.5) * bin / grid; half_pixel shifts the
    ROI by -0.5, otherwise ROI sides are at least 1. Max mode takes per sample the largest of the
    four weighted corner terms (as onnxruntime and the spec's reference do)."""
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.reshape(-1).size != rois.shape[0]:
        raise ShapeError("RoiAlign needs X (N, C, H, W), rois (R, 4), batch_indices (R,)",
                         got=(x.shape, rois.shape, batch_indices.shape))
    r, c = rois.shape[0], x.shape[1]
    y = np.zeros((r, c, output_height, output_width), np.float64)
    off = 0.5 if half_pixel else 0.0
    xf = x.astype(np.float64)
    for ri in range(r):
        b = int(batch_indices.reshape(-1)[ri])
        if not 0 <= b < x.shape[0]:
            raise ShapeError("batch index out of range", expected=f"< {x.shape[0]}", got=b)
        x1, y1, x2, y2 = (float(v) * spatial_scale - off for v in rois[ri])
        rw, rh = x2 - x1, y2 - y1
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / output_height, rw / output_width
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / output_height))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / output_width))
        count = max(gh * gw, 1)
        for ph in range(output_height):
            for pw in range(output_width):
                acc = np.zeros(c) if mode == "avg" else None
                for iy in range(gh):
                    yy = y1 + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = x1 + pw * bw + (ix + 0.5) * bw / gw
                        terms = _bilinear(xf[b], yy, xx)
                        if mode == "avg":
                            if terms is not None:
                                acc = acc + sum(terms)
                        else:
                            v = np.maximum.reduce(terms) if terms is not None else np.zeros(c)
                            acc = v if acc is None else np.maximum(acc, v)
                if mode == "avg":
                    y[ri, :, ph, pw] = acc / count
                else:
                    y[ri, :, ph, pw] = acc if acc is not None else 0.0
    return y.astype(x.dtype)


roi_align = roi_align_reference
