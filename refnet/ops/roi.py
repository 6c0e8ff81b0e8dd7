"""Run and shape functions of `nms_onnx` and `roi_align` (kernels: refnet.kernels.roi)."""

from __future__ import annotations

from refnet.errors import ShapeError
from refnet.ops.core import DYN, kern
from refnet.ops.registry import register


@register("nms_onnx", shape=lambda node, shapes: [(DYN, 3)])
def _nms(node, xs, p, ctx):
    a = node.attrs
    rows = kern("nms_onnx", ctx)(xs[0], xs[1], int(a["max_output_boxes_per_class"]), float(a["iou_threshold"]),
                                 float(a["score_threshold"]), int(a["center_point_box"]))
    return rows.astype(xs[0].dtype)


def _roi_shape(node, shapes):
    x, rois = tuple(shapes[0]), tuple(shapes[1])
    if len(x) != 4 or len(rois) != 2 or rois[1] != 4:
        raise ShapeError("RoiAlign needs X (N, C, H, W) and rois (R, 4)", layer=node.name, got=(x, rois))
    return [(rois[0], x[1], int(node.attrs["output_height"]), int(node.attrs["output_width"]))]


@register("roi_align", shape=_roi_shape)
def _roi_align(node, xs, p, ctx):
    a = node.attrs
    bi = p["batch_indices"] if "batch_indices" in p else xs[2]
    return kern("roi_align", ctx)(xs[0], xs[1], bi, mode=a["mode"], output_height=int(a["output_height"]),
                                  output_width=int(a["output_width"]), sampling_ratio=int(a["sampling_ratio"]),
                                  spatial_scale=float(a["spatial_scale"]), half_pixel=bool(a["half_pixel"]))
