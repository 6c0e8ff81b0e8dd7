"""Region kernels of the two-stage detectors: the Faster R-CNN ``Proposal`` layer (RPN anchors
-> regions of interest), Fast R-CNN ``ROIPooling`` and R-FCN's position-sensitive
``PSROIPooling``.

Boxes are pixel boxes ``(x1, y1, x2, y2)`` in the *inclusive* convention of py-faster-rcnn
(a box from column 0 to column 15 is 16 pixels wide: ``w = x2 - x1 + 1``). Regions of interest
are ``(R, 5)`` rows ``[batch index, x1, y1, x2, y2]`` in input-image pixels.

Semantics are py-faster-rcnn's (``lib/rpn/proposal_layer.py``, ``generate_anchors.py``,
``bbox_transform.py``, ``nms/cpu_nms.pyx``), Fast R-CNN's Caffe ``ROIPoolingLayer`` and
R-FCN's Caffe ``PSROIPoolingLayer``. ``proposal(..., quirks="cv2")`` reproduces cv2.dnn's
``Proposal``, which is built from its PriorBox and DetectionOutput layers (see
docs/cv2-deviations.md, "Proposal").


ONNX NonMaxSuppression (per batch and class, greedy, corner or centre boxes) and RoiAlign
(bilinear sampling per bin, average or max), for the ONNX reader, are plain loops at the end
of the module: readable as written and the selections are small, so the fast names are the references.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels._jit import pjit, prange
from refnet.kernels.detection import _RULE_CODE, _greedy_nms_jit, _greedy_reference

__all__ = [
    "proposal_anchors",
    "proposal",
    "proposal_reference",
    "roi_pool",
    "roi_pool_reference",
    "psroi_pool",
    "psroi_pool_reference",
    "nms_onnx",
    "nms_onnx_reference",
    "roi_align",
    "roi_align_reference",
]

_QUIRKS = ("none", "cv2")


# ---- anchors ------------------------------------------------------------------------------------
def _round_half_even(v: float) -> float:
    return float(np.round(v))  # numpy's round, as py-faster-rcnn's generate_anchors uses


def proposal_anchors(base_size: float, ratios: Sequence[float], scales: Sequence[float],
                     quirks: str = "none") -> np.ndarray:
    """The ``(A, 4)`` base anchors of cell (0, 0), ``A = len(ratios) * len(scales)``, ratio-major.

    py-faster-rcnn (``generate_anchors``): the base box ``[0, 0, base-1, base-1]`` (centre
    ``(base-1)/2``) is reshaped per ratio to ``w = round(sqrt(base^2 / ratio))``,
    ``h = round(w * ratio)`` (numpy's round: halves to even), then scaled to ``w*scale x
    h*scale`` around the same centre: ``x1 = ctr - (W-1)/2``, ``x2 = ctr + (W-1)/2``.

    ``quirks="cv2"``: cv2 rounds with ``floor(x + 0.5)`` in float32 (``w = floor(base /
    sqrt(ratio) + 0.5)``, ``h = floor(w * ratio + 0.5)``): halves go up, not to even (base 18,
    ratio 0.5: h = 13, not 12). Its PriorBox layout (centre ``base/2``, ``x1 = c - W/2``,
    ``x2 = c + W/2 - 1``) is the same box as py-faster-rcnn's.
    """
    if quirks not in _QUIRKS:
        raise ValueError(f"quirks must be one of {_QUIRKS}, got {quirks!r}")
    rs = [float(r) for r in ratios]
    ss = [float(s) for s in scales]
    base = float(base_size)
    if not rs or not ss:
        raise ValueError("proposal needs at least one ratio and one scale")
    if not all(math.isfinite(v) and v > 0 for v in [base, *rs, *ss]):
        raise ValueError(f"proposal base_size, ratios and scales must be positive, got {base}, {rs}, {ss}")
    out = []
    for r in rs:
        if quirks == "cv2":
            f = np.float32
            w = float(np.floor(f(base) / np.sqrt(f(r)) + f(0.5)))
            h = float(np.floor(f(w) * f(r) + f(0.5)))
        else:
            w = _round_half_even(math.sqrt(base * base / r))
            h = _round_half_even(w * r)
        c = (base - 1.0) / 2.0  # cv2's PriorBox: centre base/2, x2 = centre + W/2 - 1: the same box
        for s in ss:
            ww, hh = w * s, h * s
            out.append((c - 0.5 * (ww - 1.0), c - 0.5 * (hh - 1.0),
                        c + 0.5 * (ww - 1.0), c + 0.5 * (hh - 1.0)))
    return np.asarray(out, dtype=np.float64)


# ---- Proposal -----------------------------------------------------------------------------------
def _proposal_check(scores, deltas, im_info, feat_stride, pre_nms_topn, post_nms_topn, nms_thresh,
                    quirks):
    scores = as_float_array(scores, "scores", ndim=4)
    deltas = as_float_array(deltas, "bbox_deltas", ndim=4)
    im_info = np.asarray(im_info)
    if im_info.dtype.kind not in "fiu":
        raise TypeError(f"im_info must be numeric, got dtype {im_info.dtype}")
    if quirks not in _QUIRKS:
        raise ValueError(f"quirks must be one of {_QUIRKS}, got {quirks!r}")
    n, c2, h, w = scores.shape
    if c2 % 2:
        raise ShapeError("proposal scores need 2*A channels (A background, then A object)",
                         expected="even channel count", got=scores.shape)
    a = c2 // 2
    if deltas.shape != (n, 4 * a, h, w):
        raise ShapeError("proposal bbox deltas must be (N, 4*A, H, W) like the scores",
                         expected=(n, 4 * a, h, w), got=deltas.shape)
    info = im_info.reshape(-1)
    if info.size % n == 0 and info.size // n >= 2:
        rows = info.reshape(n, -1)
    elif info.size >= 2:
        rows = info.reshape(1, -1)  # one [h, w, scale] row for every image
    else:
        raise ShapeError("im_info must hold [height, width, scale] per image", expected=(n, 3),
                         got=im_info.shape)
    if not np.all(np.isfinite(rows[:, :2])) or rows[:, :2].min() < 1:
        raise ValueError(f"proposal: im_info height and width must be >= 1, got {rows[:, :2].tolist()}")
    if not (float(feat_stride) > 0 and int(pre_nms_topn) >= 0 and int(post_nms_topn) >= 0):
        raise ValueError("proposal needs feat_stride > 0 and pre/post_nms_topn >= 0")
    if math.isnan(nms_thresh):
        raise ValueError("proposal nms_thresh is NaN")
    return scores, deltas, rows.astype(np.float64), n, a, h, w


def _decode_clip(anchors, d, im_h, im_w, quirks, work):
    """Apply the deltas ``d`` (K, 4) to ``anchors`` (K, 4) and clip to the image (in ``work``)."""
    an = anchors.astype(work, copy=False)
    d = d.astype(work, copy=False)
    one = work(1.0)
    half = work(0.5)
    widths = an[:, 2] - an[:, 0] + one     # py-faster-rcnn and cv2 (normalized_bbox=false): +1
    heights = an[:, 3] - an[:, 1] + one
    ctr_x = an[:, 0] + half * widths
    ctr_y = an[:, 1] + half * heights
    px = d[:, 0] * widths + ctr_x
    py = d[:, 1] * heights + ctr_y
    pw = np.exp(d[:, 2]) * widths
    ph = np.exp(d[:, 3]) * heights
    boxes = np.stack([px - half * pw, py - half * ph, px + half * pw, py + half * ph], axis=1)
    if quirks == "cv2":  # cv2 builds a fake image of int(im_info) pixels: bounds size - 1
        xmax, ymax = float(int(im_w) - 1), float(int(im_h) - 1)
    else:
        xmax, ymax = im_w - 1.0, im_h - 1.0
    boxes[:, 0::2] = np.minimum(np.maximum(boxes[:, 0::2], work(0.0)), work(xmax))
    boxes[:, 1::2] = np.minimum(np.maximum(boxes[:, 1::2], work(0.0)), work(ymax))
    return boxes


def _proposal(scores, deltas, im_info, feat_stride, base_size, min_size, ratios, scales,
              pre_nms_topn, post_nms_topn, nms_thresh, quirks, fast):
    scores, deltas, info, n, a, h, w = _proposal_check(scores, deltas, im_info, feat_stride,
                                                       pre_nms_topn, post_nms_topn, nms_thresh, quirks)
    base = proposal_anchors(base_size, ratios, scales, quirks)
    if len(base) != a:
        raise ShapeError(f"proposal: {len(base)} anchors (ratios x scales) but the scores hold {a}",
                         expected=2 * len(base), got=scores.shape)
    work = scores.dtype.type if fast else np.float64
    stride = float(feat_stride)
    sy, sx = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)  # (H*W, 4), row-major
    anchors = (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)         # index (y*W + x)*A + a
    rule = "caffe+1" if quirks == "cv2" else "frcnn"
    pre, post = int(pre_nms_topn), int(post_nms_topn)
    rows = []
    for i in range(n):
        im_h, im_w = float(info[min(i, len(info) - 1), 0]), float(info[min(i, len(info) - 1), 1])
        im_scale = float(info[min(i, len(info) - 1), 2]) if info.shape[1] > 2 else 1.0
        fg = scores[i, a:].transpose(1, 2, 0).reshape(-1).astype(np.float64)
        d = deltas[i].transpose(1, 2, 0).reshape(-1, 4)
        boxes = _decode_clip(anchors, d, im_h, im_w, quirks, work).astype(np.float64)
        if quirks == "cv2":
            # no min-size filter; DetectionOutput keeps scores > confidence_threshold (0)
            cand = np.flatnonzero(fg > 0.0)
        else:
            ms = float(min_size) * im_scale
            ws = boxes[:, 2] - boxes[:, 0] + 1.0
            hs = boxes[:, 3] - boxes[:, 1] + 1.0
            cand = np.flatnonzero((ws >= ms) & (hs >= ms))
        # highest score first; ties: lower anchor index first (cv2's stable sort; py-faster-rcnn's
        # argsort()[::-1] leaves tie order to numpy's quicksort)
        order = cand[np.argsort(-fg[cand], kind="stable")]
        if pre > 0:
            order = order[:pre]
        zeros = np.zeros(len(boxes), dtype=np.int64)
        if fast:
            keep = _greedy_nms_jit(np.ascontiguousarray(boxes), order, zeros, float(nms_thresh), 1.0,
                                   _RULE_CODE[rule], post if post > 0 else len(order) + 1)
        else:
            keep = _greedy_reference(boxes, order, zeros, float(nms_thresh), 1.0, rule)
        if post > 0:
            keep = keep[:post]
        rows.append((i, boxes[keep], fg[keep]))
    return _proposal_rows(rows, post, quirks, scores.dtype)


def _proposal_rows(rows, post, quirks, dtype):
    pad = quirks == "cv2" and post > 0
    if pad:  # cv2: always post_nms_topn rows per call, zero rows after the last proposal
        total = post * len(rows)
    else:
        total = sum(len(b) for _, b, _ in rows)
    rois = np.zeros((total, 5), dtype=dtype)
    sc = np.zeros((total, 1), dtype=dtype)
    at = 0
    for i, b, s in rows:
        k = len(b)
        rois[at:at + k, 0] = i  # (cv2 runs batch 1 only)
        rois[at:at + k, 1:] = b
        sc[at:at + k, 0] = s
        at += post if pad else k
    return rois, sc


@ieee
def proposal(scores: np.ndarray, bbox_deltas: np.ndarray, im_info: np.ndarray, *,
             feat_stride: float = 16, base_size: float = 16, min_size: float = 16,
             ratios: Sequence[float] = (0.5, 1.0, 2.0), scales: Sequence[float] = (8, 16, 32),
             pre_nms_topn: int = 6000, post_nms_topn: int = 300, nms_thresh: float = 0.7,
             quirks: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Faster R-CNN region proposals (py-faster-rcnn ``ProposalLayer``), per image:

    1. anchors: :func:`proposal_anchors` shifted by ``(x, y) * feat_stride`` for every cell of
       the ``(H, W)`` map, index ``(y*W + x)*A + a``;
    2. decode the ``(N, 4A, H, W)`` deltas (``bbox_transform_inv``: widths ``x2 - x1 + 1``,
       centre ``x1 + w/2`` moved by ``dx*w``, size ``exp(dw)*w``, corners centre +- size/2);
    3. clip to ``[0, im_w - 1] x [0, im_h - 1]`` (``im_info`` rows ``[h, w, scale]``);
    4. drop boxes narrower or lower than ``min_size * scale`` (``w = x2 - x1 + 1``);
    5. sort by the object score (channels ``A..2A`` of ``scores``), keep ``pre_nms_topn``
       (0: all), NMS at ``nms_thresh`` (py-faster-rcnn overlap: ``+1`` sizes, IoU > thr
       suppressed), keep ``post_nms_topn`` (0: all).

    Returns ``(rois (R, 5) [batch, x1, y1, x2, y2], scores (R, 1))``. ``quirks="cv2"``: cv2's
    anchors (see :func:`proposal_anchors`), no min-size filter, scores <= 0 dropped, cv2's
    overlap rule (boxes less than a pixel apart do not overlap) and exactly ``post_nms_topn``
    rows per image (zero rows after the last proposal; cv2 itself takes batch 1 only), clipping
    to ``int(im_w) - 1``. Fast path: decoding in the input dtype, compiled NMS."""
    return _proposal(scores, bbox_deltas, im_info, feat_stride, base_size, min_size, ratios, scales,
                     pre_nms_topn, post_nms_topn, nms_thresh, quirks, fast=True)


@ieee
def proposal_reference(scores: np.ndarray, bbox_deltas: np.ndarray, im_info: np.ndarray, *,
                       feat_stride: float = 16, base_size: float = 16, min_size: float = 16,
                       ratios: Sequence[float] = (0.5, 1.0, 2.0),
                       scales: Sequence[float] = (8, 16, 32), pre_nms_topn: int = 6000,
                       post_nms_topn: int = 300, nms_thresh: float = 0.7, quirks: str = "none"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Reference proposals: float64 decoding and the plain-loop NMS; rules as :func:`proposal`."""
    return _proposal(scores, bbox_deltas, im_info, feat_stride, base_size, min_size, ratios, scales,
                     pre_nms_topn, post_nms_topn, nms_thresh, quirks, fast=False)


# ---- ROI geometry (Caffe computes it in float for float blobs; so do we, in both precisions) ----
_F = np.float32


def _roi_check(x: np.ndarray, rois: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = as_float_array(x, "x", ndim=4)
    rois = as_float_array(rois, "rois")
    if rois.ndim != 2 and not (rois.ndim == 4 and rois.shape[2:] == (1, 1)):
        raise ShapeError(f"{name} rois must be (R, 5) rows [batch, x1, y1, x2, y2]", expected="(R, 5)",
                         got=rois.shape)
    rois = rois.reshape(rois.shape[:2])  # (R, 5, 1, 1) -> (R, 5); R may be 0 (no proposal left)
    if rois.shape[1] != 5:
        raise ShapeError(f"{name} rois must be (R, 5) rows [batch, x1, y1, x2, y2]", expected="(R, 5)",
                         got=rois.shape)
    if np.isnan(rois).any():
        raise ValueError(f"{name}: NaN in rois")
    batch = rois[:, 0].astype(np.int64)  # C's (int) conversion, as Caffe reads the index
    if len(batch) and (batch.min() < 0 or batch.max() >= x.shape[0]):
        raise ShapeError(f"{name}: roi batch index out of range", expected=f"0..{x.shape[0] - 1}",
                         got=(int(batch.min()), int(batch.max())))
    return x, rois, batch


def _round_away(v: np.ndarray) -> np.ndarray:
    """C's ``round``: halves away from zero."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _roi_pool_geometry(rois: np.ndarray, ph: int, pw: int, spatial_scale: float, h: int, w: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per roi and bin the clipped ``[start, end)`` rows and columns (int64 ``(R, ph)``, ``(R, pw)``),
    Fast R-CNN's rule: corners ``round(coord * scale)``, size ``max(end - start + 1, 1)``, bin
    ``k`` covers ``floor(k * size/pooled) .. ceil((k+1) * size/pooled)`` from the start, float
    arithmetic."""
    r = rois.astype(_F)
    ss = _F(spatial_scale)
    x1, y1, x2, y2 = (_round_away(r[:, k] * ss).astype(np.int64) for k in (1, 2, 3, 4))
    rh = np.maximum(y2 - y1 + 1, 1).astype(_F)
    rw = np.maximum(x2 - x1 + 1, 1).astype(_F)
    bh = rh / _F(ph)
    bw = rw / _F(pw)
    ky = np.arange(ph, dtype=_F)
    kx = np.arange(pw, dtype=_F)
    hs = np.floor(ky[None, :] * bh[:, None]).astype(np.int64) + y1[:, None]
    he = np.ceil((ky[None, :] + _F(1)) * bh[:, None]).astype(np.int64) + y1[:, None]
    ws = np.floor(kx[None, :] * bw[:, None]).astype(np.int64) + x1[:, None]
    we = np.ceil((kx[None, :] + _F(1)) * bw[:, None]).astype(np.int64) + x1[:, None]
    return (np.clip(hs, 0, h), np.clip(he, 0, h), np.clip(ws, 0, w), np.clip(we, 0, w))


def _pooled(v: int | Sequence[int], name: str) -> tuple[int, int]:
    ph, pw = (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))
    if ph <= 0 or pw <= 0:
        raise ValueError(f"{name} pooled size must be positive, got {(ph, pw)}")
    return ph, pw


@ieee
def roi_pool_reference(x: np.ndarray, rois: np.ndarray, pooled_hw: int | Sequence[int],
                       spatial_scale: float = 1.0) -> np.ndarray:
    """Fast R-CNN ROI max pooling (Caffe ``ROIPoolingLayer``): ``(N, C, H, W)`` features and
    ``(R, 5)`` rois ``[batch, x1, y1, x2, y2]`` (image pixels) -> ``(R, C, ph, pw)``. Each roi is
    mapped to the feature map by ``round(coord * spatial_scale)`` (C round: halves away from
    zero), its size is ``max(x2 - x1 + 1, 1)``, bin ``k`` spans ``floor(k*size/p)`` to
    ``ceil((k+1)*size/p)`` from the roi start, clipped to the map; an empty bin gives 0.
    Bin edges are computed in float, as Caffe (and cv2) do for float nets."""
    x, rois, batch = _roi_check(x, rois, "roi_pool")
    ph, pw = _pooled(pooled_hw, "roi_pool")
    n, c, h, w = x.shape
    hs, he, ws, we = _roi_pool_geometry(rois, ph, pw, spatial_scale, h, w)
    out = np.zeros((len(rois), c, ph, pw), dtype=np.float64)
    xd = x.astype(np.float64)
    for r in range(len(rois)):
        for i in range(ph):
            for j in range(pw):
                if he[r, i] <= hs[r, i] or we[r, j] <= ws[r, j]:
                    continue  # empty bin: 0
                region = xd[batch[r], :, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
                out[r, :, i, j] = region.max(axis=(1, 2))
    return out.astype(x.dtype)


# _roi_pool_jit and _psroi_jit share their loop skeleton on purpose: each is specialised for its
# inner reduction (max over all channels of a bin vs mean over one position-sensitive channel),
# which numba compiles into a tight loop; merging them would put a mode branch in the inner loop.
@pjit
def _roi_pool_jit(x, batch, hs, he, ws, we, out):  # pragma: no cover - jitted
    nr, c, ph, pw = out.shape
    for t in prange(nr * c):
        r = t // c
        ch = t % c
        b = batch[r]
        for i in range(ph):
            for j in range(pw):
                y0, y1, x0, x1 = hs[r, i], he[r, i], ws[r, j], we[r, j]
                if y1 <= y0 or x1 <= x0:
                    out[r, ch, i, j] = 0.0
                    continue
                m = x[b, ch, y0, x0]
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        v = x[b, ch, yy, xx]
                        if v > m or v != v:  # NaN propagates, as numpy's max
                            m = v
                out[r, ch, i, j] = m


@ieee
def roi_pool(x: np.ndarray, rois: np.ndarray, pooled_hw: int | Sequence[int],
             spatial_scale: float = 1.0) -> np.ndarray:
    """Fast ROI max pooling (parallel over rois x channels), same rules as
    :func:`roi_pool_reference`."""
    x, rois, batch = _roi_check(x, rois, "roi_pool")
    ph, pw = _pooled(pooled_hw, "roi_pool")
    n, c, h, w = x.shape
    hs, he, ws, we = _roi_pool_geometry(rois, ph, pw, spatial_scale, h, w)
    out = np.empty((len(rois), c, ph, pw), dtype=x.dtype)
    if out.size:
        _roi_pool_jit(np.ascontiguousarray(x), batch, hs, he, ws, we, out)
    return out


# ---- PSROIPooling ---------------------------------------------------------------------------------
def _psroi_geometry(rois: np.ndarray, group: int, spatial_scale: float, h: int, w: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """R-FCN's bins, float arithmetic: start ``round(x1) * scale``, end ``(round(x2) + 1) * scale``,
    size ``max(end - start, 0.1)``, bin ``k`` = ``floor(k*size/g + start) .. ceil((k+1)*size/g +
    start)`` clipped to the map."""
    r = rois.astype(_F)
    ss = _F(spatial_scale)
    x1 = _round_away(r[:, 1]) * ss
    y1 = _round_away(r[:, 2]) * ss
    x2 = (_round_away(r[:, 3]) + _F(1)) * ss
    y2 = (_round_away(r[:, 4]) + _F(1)) * ss
    rw = np.maximum(x2 - x1, _F(0.1))
    rh = np.maximum(y2 - y1, _F(0.1))
    bh = rh / _F(group)
    bw = rw / _F(group)
    k = np.arange(group, dtype=_F)
    hs = np.floor(k[None, :] * bh[:, None] + y1[:, None]).astype(np.int64)
    he = np.ceil((k[None, :] + _F(1)) * bh[:, None] + y1[:, None]).astype(np.int64)
    ws = np.floor(k[None, :] * bw[:, None] + x1[:, None]).astype(np.int64)
    we = np.ceil((k[None, :] + _F(1)) * bw[:, None] + x1[:, None]).astype(np.int64)
    return (np.clip(hs, 0, h), np.clip(he, 0, h), np.clip(ws, 0, w), np.clip(we, 0, w))


def _psroi_check(x, rois, output_dim, group_size):
    x, rois, batch = _roi_check(x, rois, "psroi_pool")
    g, od = int(group_size), int(output_dim)
    if g <= 0 or od <= 0:
        raise ValueError(f"psroi_pool needs output_dim > 0 and group_size > 0, got {od}, {g}")
    if x.shape[1] != od * g * g:
        raise ShapeError("psroi_pool input needs output_dim * group_size^2 channels",
                         expected=od * g * g, got=x.shape[1])
    return x, rois, batch, g, od


@ieee
def psroi_pool_reference(x: np.ndarray, rois: np.ndarray, output_dim: int, group_size: int,
                         spatial_scale: float = 1.0) -> np.ndarray:
    """R-FCN position-sensitive ROI average pooling (Caffe ``PSROIPoolingLayer``): ``(N,
    output_dim * g * g, H, W)`` score maps and ``(R, 5)`` rois -> ``(R, output_dim, g, g)``.
    Output ``(r, c, i, j)`` is the mean of channel ``(c*g + i)*g + j`` over bin ``(i, j)`` of
    the roi (see :func:`_psroi_geometry`); an empty bin gives 0."""
    x, rois, batch, g, od = _psroi_check(x, rois, output_dim, group_size)
    n, c, h, w = x.shape
    hs, he, ws, we = _psroi_geometry(rois, g, spatial_scale, h, w)
    out = np.zeros((len(rois), od, g, g), dtype=np.float64)
    xd = x.astype(np.float64).reshape(n, od, g, g, h, w)
    for r in range(len(rois)):
        for i in range(g):
            for j in range(g):
                if he[r, i] <= hs[r, i] or we[r, j] <= ws[r, j]:
                    continue
                region = xd[batch[r], :, i, j, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
                area = (he[r, i] - hs[r, i]) * (we[r, j] - ws[r, j])
                out[r, :, i, j] = region.sum(axis=(1, 2)) / area
    return out.astype(x.dtype)


@pjit
def _psroi_jit(x, batch, hs, he, ws, we, g, out):  # pragma: no cover - jitted
    nr, od, _, _ = out.shape
    for t in prange(nr * od):
        r = t // od
        c = t % od
        b = batch[r]
        for i in range(g):
            for j in range(g):
                y0, y1, x0, x1 = hs[r, i], he[r, i], ws[r, j], we[r, j]
                if y1 <= y0 or x1 <= x0:
                    out[r, c, i, j] = 0.0
                    continue
                ch = (c * g + i) * g + j
                s = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        s += x[b, ch, yy, xx]
                out[r, c, i, j] = s / ((y1 - y0) * (x1 - x0))


@ieee
def psroi_pool(x: np.ndarray, rois: np.ndarray, output_dim: int, group_size: int,
               spatial_scale: float = 1.0) -> np.ndarray:
    """Fast position-sensitive ROI pooling (parallel over rois x output channels; sums in
    float64), same rules as :func:`psroi_pool_reference`."""
    x, rois, batch, g, od = _psroi_check(x, rois, output_dim, group_size)
    n, c, h, w = x.shape
    hs, he, ws, we = _psroi_geometry(rois, g, spatial_scale, h, w)
    out = np.empty((len(rois), od, g, g), dtype=x.dtype)
    if out.size:
        _psroi_jit(np.ascontiguousarray(x), batch, hs, he, ws, we, g, out)
    return out


# ---- ONNX NonMaxSuppression and RoiAlign ---------------------------------------------------
def _corners(b: np.ndarray, center: bool) -> np.ndarray:
    b = b.astype(np.float64)
    if center:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)
    y1, x1, y2, x2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]  # either corner order is allowed
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], 1)


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
            order = np.asarray([i for i in np.argsort(-s, kind="stable") if s[i] > score_threshold], np.int64)
            kept = _greedy_reference(bx, order, np.zeros(len(bx), np.int64), float(iou_threshold), 1.0, "onnx",
                                     limit=max(int(max_output_boxes_per_class), 0))
            rows += [(bi, ci, int(i)) for i in kept]
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
