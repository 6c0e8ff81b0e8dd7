"""Ops of the two-stage detectors (docs/ops.md): ``proposal`` (Faster R-CNN RPN proposals),
``roi_pool`` (Fast R-CNN ROI max pooling) and ``psroi_pool`` (R-FCN position-sensitive ROI
average pooling); kernels in :mod:`refnet.kernels.roi`.

The number of proposals is known only at run time (py-faster-rcnn keeps what survives the
min-size filter and NMS, up to ``post_nms_topn``): its row count is ``DYN`` for the shape
rules, and every op downstream of it runs unplanned (see ``refnet.ops.registry``). Under
``quirks="cv2"`` the importer sets ``pad_to_top_n`` and the output has exactly
``post_nms_topn`` rows, as cv2's.

Attributes and defaults: declared once on the op specs (docs/ops.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from refnet.errors import ShapeError
from refnet.ops.registry import DYN, REQUIRED, Attr, attrs, kern, need_ndim, numel, register

#: attribute -> default of each op (the Caffe parameter defaults of cv2's caffe.proto)
PROPOSAL_ATTRS: dict[str, Any] = {
    "feat_stride": 16.0, "base_size": 16.0, "min_size": 16.0, "ratios": (0.5, 1.0, 2.0),
    "scales": (8.0, 16.0, 32.0), "pre_nms_topn": 6000, "post_nms_topn": 300, "nms_thresh": 0.7,
    "quirks": "none", "pad_to_top_n": False,
}
ROI_POOL_ATTRS: dict[str, Any] = {"pooled_h": 0, "pooled_w": 0, "spatial_scale": 1.0}
PSROI_POOL_ATTRS: dict[str, Any] = {"output_dim": 0, "group_size": 0, "spatial_scale": 1.0}


#: the cost of one candidate's visit in the greedy NMS loop, in multiply-adds: a Python-level
#: iteration with a NumPy call (microseconds) besides its overlaps with the boxes kept so far
NMS_VISIT_MACS = 1000


# ---- proposal ---------------------------------------------------------------------------------
def _proposal_shape(node, shapes):
    need_ndim(node, shapes[0], 4, "scores")
    need_ndim(node, shapes[1], 4, "bbox deltas")
    a = attrs(node)
    n, c2, h, w = shapes[0]
    na = len(a["ratios"]) * len(a["scales"])
    if c2 != 2 * na or tuple(shapes[1][1:]) != (4 * na, h, w):
        raise ShapeError(f"proposal needs 2*A score and 4*A delta channels for A = {na} anchors",
                         layer=node.name, expected=((n, 2 * na, h, w), (n, 4 * na, h, w)),
                         got=(tuple(shapes[0]), tuple(shapes[1])))
    rows = DYN
    if a["pad_to_top_n"] and n != DYN and int(a["post_nms_topn"]) > 0:
        rows = int(a["post_nms_topn"]) * n
    return [(rows, 5), (rows, 1)][:len(node.outputs)]


def proposal_macs(node, ins, outs) -> int:
    """Proposal, worst case: per image, the NMS visits every candidate (the H x W x A anchors, or
    the pre_nms_topn best) and overlaps it with up to as many kept boxes (the reference loop does
    not stop at post_nms_topn); a visit priced as ONNX NonMaxSuppression's (NMS_VISIT_MACS)."""
    a = attrs(node)
    n, c2, h, w = (max(int(d), 0) for d in ins[0])
    anchors = len(a["ratios"]) * len(a["scales"]) * h * w
    pre = int(a["pre_nms_topn"])
    v = min(anchors, pre) if pre > 0 else anchors
    return n * v * (v + NMS_VISIT_MACS) + numel(ins[1])


@register("proposal", shape=_proposal_shape, attrs=PROPOSAL_ATTRS, macs=proposal_macs)
def _proposal(node, xs, p, ctx):
    a = attrs(node)
    rois, scores = kern("proposal", ctx)(
        xs[0], xs[1], xs[2], feat_stride=a["feat_stride"], base_size=a["base_size"],
        min_size=a["min_size"], ratios=a["ratios"], scales=a["scales"],
        pre_nms_topn=a["pre_nms_topn"], post_nms_topn=a["post_nms_topn"],
        nms_thresh=a["nms_thresh"], quirks=a["quirks"])
    return [rois, scores][:len(node.outputs)]


# ---- ROI pooling --------------------------------------------------------------------------------
def _rois_rows(node, shape) -> int:
    if len(shape) not in (2, 4) or shape[1] != 5:
        raise ShapeError("rois must be (R, 5) rows [batch, x1, y1, x2, y2]", layer=node.name,
                         expected="(R, 5)", got=tuple(shape))
    return shape[0]


def _roi_pool_shape(node, shapes):
    need_ndim(node, shapes[0], 4, "features")
    a = attrs(node)
    if a["pooled_h"] <= 0 or a["pooled_w"] <= 0:
        raise ShapeError("roi pooling needs pooled_h and pooled_w > 0", layer=node.name,
                         got=(a["pooled_h"], a["pooled_w"]))
    return [(_rois_rows(node, shapes[1]), shapes[0][1], a["pooled_h"], a["pooled_w"])]


@register("roi_pool", shape=_roi_pool_shape, attrs=ROI_POOL_ATTRS)
def _roi_pool(node, xs, p, ctx):
    a = attrs(node)
    return kern("roi_pool", ctx)(xs[0], xs[1], (a["pooled_h"], a["pooled_w"]), a["spatial_scale"])


def _psroi_pool_shape(node, shapes):
    need_ndim(node, shapes[0], 4, "score maps")
    a = attrs(node)
    g, od = int(a["group_size"]), int(a["output_dim"])
    if g <= 0 or od <= 0 or shapes[0][1] != od * g * g:
        raise ShapeError("psroi pooling needs output_dim * group_size^2 input channels", layer=node.name,
                         expected=od * g * g, got=tuple(shapes[0]))
    return [(_rois_rows(node, shapes[1]), od, g, g)]


@register("psroi_pool", shape=_psroi_pool_shape, attrs=PSROI_POOL_ATTRS)
def _psroi_pool(node, xs, p, ctx):
    a = attrs(node)
    return kern("psroi_pool", ctx)(xs[0], xs[1], int(a["output_dim"]), int(a["group_size"]),
                                   a["spatial_scale"])


# ---- ONNX NonMaxSuppression and RoiAlign (kernels: refnet.kernels.roi) ----------------------
_NMS = {"max_output_boxes_per_class": Attr(REQUIRED, int), "iou_threshold": Attr(REQUIRED, float),
        "score_threshold": Attr(REQUIRED, float), "center_point_box": Attr(REQUIRED, int)}


def nms_onnx_macs(node, ins, outs) -> int:
    """ONNX NonMaxSuppression, worst case: every candidate (B x C x N) is visited and overlapped
    with up to min(N, max_output_boxes_per_class) kept boxes."""
    b, n = int(ins[0][0]), int(ins[0][1])
    c = int(ins[1][1]) if len(ins) > 1 and len(ins[1]) > 1 else 1
    keep = min(n, max(int(attrs(node)["max_output_boxes_per_class"]), 0))
    return max(b, 0) * max(c, 0) * max(n, 0) * (keep + NMS_VISIT_MACS)


@register("nms_onnx", shape=lambda node, shapes: [(DYN, 3)], attrs=_NMS, macs=nms_onnx_macs)
def _nms(node, xs, p, ctx):
    a = attrs(node)
    rows = kern("nms_onnx", ctx)(xs[0], xs[1], a["max_output_boxes_per_class"], a["iou_threshold"],
                                 a["score_threshold"], a["center_point_box"])
    return rows.astype(xs[0].dtype)


def _roi_shape(node, shapes):
    x, rois = tuple(shapes[0]), tuple(shapes[1])
    if len(x) != 4 or len(rois) != 2 or rois[1] != 4:
        raise ShapeError("RoiAlign needs X (N, C, H, W) and rois (R, 4)", layer=node.name, got=(x, rois))
    a = attrs(node)
    return [(rois[0], x[1], a["output_height"], a["output_width"])]


_ROI_ALIGN = {"mode": REQUIRED, "output_height": Attr(REQUIRED, int), "output_width": Attr(REQUIRED, int),
              "sampling_ratio": Attr(REQUIRED, int), "spatial_scale": Attr(REQUIRED, float),
              "half_pixel": Attr(REQUIRED, bool)}


def _roi_align_samples(node, rois) -> float:
    """Bilinear samples of one channel of a RoiAlign: output bins x the sampling grid of each ROI
    (sampling_ratio^2, or adaptive ceil(roi/bins) per axis as the kernel does; rois given, or
    their count when they are known only at run time)."""
    a = attrs(node)
    oh, ow, sr = int(a["output_height"]), int(a["output_width"]), int(a["sampling_ratio"])
    if sr > 0 or not hasattr(rois, "shape"):
        n = rois.shape[0] if hasattr(rois, "shape") else int(rois)
        return float(n) * oh * ow * max(sr, 1) ** 2
    r = np.asarray(rois, np.float64).reshape(-1, 4) * float(a["spatial_scale"])
    rw, rh = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    if not a["half_pixel"]:
        rw, rh = np.maximum(rw, 1.0), np.maximum(rh, 1.0)
    with np.errstate(all="ignore"):
        grid = np.maximum(np.ceil(rh / oh), 1.0) * np.maximum(np.ceil(rw / ow), 1.0)
    return float(np.sum(grid[np.isfinite(grid)])) * oh * ow


def roi_align_macs(node, ins, outs) -> int:
    """RoiAlign: four bilinear taps per sample, sampling_ratio^2 samples per output bin (adaptive
    grids, sized by the ROIs, are counted at run time by the op itself)."""
    sr = int(attrs(node)["sampling_ratio"])
    return numel(outs[0]) * 4 * max(sr, 1) ** 2


@register("roi_align", shape=_roi_shape, attrs=_ROI_ALIGN, macs=roi_align_macs)
def _roi_align(node, xs, p, ctx):
    from refnet.runtime.budget import check_compute

    a = attrs(node)
    # the ROIs' own grids (adaptive sampling): refused over the compute budget before running
    check_compute(int(min(_roi_align_samples(node, xs[1]) * int(xs[0].shape[1]) * 4, 1e30)), "a forward pass",
                  layer=node.name)
    bi = p["batch_indices"] if "batch_indices" in p else xs[2]
    return kern("roi_align", ctx)(xs[0], xs[1], bi, mode=a["mode"], output_height=a["output_height"],
                                  output_width=a["output_width"], sampling_ratio=a["sampling_ratio"],
                                  spatial_scale=a["spatial_scale"], half_pixel=a["half_pixel"])
