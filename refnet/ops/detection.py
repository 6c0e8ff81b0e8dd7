"""SSD ops (kernels: refnet.kernels.detection): ``prior_box``, ``detection_output``.

Their attributes are the kernels' keyword arguments: the defaults are read from the kernel
signatures (one declaration), so a node without an attribute runs with the kernel default."""

from __future__ import annotations

import inspect

from refnet import kernels as K
from refnet.ops.registry import DYN, REQUIRED, Attr, attrs, kern, need_ndim, pair0, prepares, register


def _kernel_attrs(fn, keys) -> dict:
    sig = inspect.signature(fn).parameters
    return {k: REQUIRED if sig[k].default is inspect.Parameter.empty else sig[k].default for k in keys}


_PRIOR_KEYS = ("min_sizes", "max_sizes", "aspect_ratios", "flip", "clip", "variance", "step", "offset",
               "widths", "heights")
PRIOR_BOX_ATTRS = {**_kernel_attrs(K.prior_box, _PRIOR_KEYS), "img_size": Attr(0, pair0)}


def prior_kwargs(node) -> dict:
    """The prior_box kernel's keyword arguments of ``node``."""
    a = attrs(node)
    return {k: a[k] for k in _PRIOR_KEYS}


def prior_image_hw(node, image_shape) -> tuple[int, int]:
    """The image size the priors are relative to: ``img_size`` or the image input's H, W."""
    ih, iw = attrs(node)["img_size"]
    return (ih or image_shape[2], iw or image_shape[3])


def _prior_box_shape(node, shapes):
    need_ndim(node, shapes[0], 4, "feature input")
    need_ndim(node, shapes[1], 4, "image input")
    # the priors of one cell, times the cells: a huge feature map must not be materialised here
    one = K.prior_box((1, 1), prior_image_hw(node, shapes[1]), **prior_kwargs(node))
    return [(1, 2, int(one.shape[2]) * int(shapes[0][2]) * int(shapes[0][3]))]


@register("prior_box", shape=_prior_box_shape, attrs=PRIOR_BOX_ATTRS, fresh=True)
def _prior_box(node, xs, p, ctx):
    fn = kern("prior_box", ctx)
    return fn(tuple(xs[0].shape[2:4]), prior_image_hw(node, xs[1].shape), dtype=ctx.dtype, **prior_kwargs(node))


_DETOUT_KEYS = ("num_classes", "share_location", "background_label_id", "nms_threshold", "top_k",
                "keep_top_k", "confidence_threshold", "code_type", "variance_encoded_in_target", "eta",
                "clip", "normalized")


def detection_output_macs(node, ins, outs) -> int:
    """DetectionOutput, worst case: per image and non-background class, every candidate (all
    priors, or the NMS ``top_k`` best) visited by the greedy NMS and overlapped with up to as many
    kept boxes; a visit priced as ONNX NonMaxSuppression's (refnet.ops.roi.NMS_VISIT_MACS)."""
    from refnet.ops.roi import NMS_VISIT_MACS

    a = attrs(node)
    n, p = int(ins[0][0]), int(ins[2][2]) // 4 if len(ins) > 2 and len(ins[2]) > 2 else 0
    top = int(a["top_k"]) if a["top_k"] is not None else -1
    v = min(p, top) if top >= 0 else p
    classes = int(a["num_classes"]) - (1 if 0 <= int(a["background_label_id"]) < int(a["num_classes"]) else 0)
    return max(n, 0) * max(classes, 0) * max(v, 0) * (max(v, 0) + NMS_VISIT_MACS)


@register("detection_output", shape=lambda n, s: [(1, 1, DYN, 7)],
          attrs=_kernel_attrs(K.detection_output, _DETOUT_KEYS), fresh=True, macs=detection_output_macs)
def _detection_output(node, xs, p, ctx):
    from refnet.ops.layout import _fits

    a = attrs(node)
    if a["keep_top_k"] is not None and int(a["keep_top_k"]) > 0:  # zero rows pad the output to keep_top_k per image
        _fits(node, (1, 1, int(a["keep_top_k"]) * int(xs[0].shape[0]), 7), ctx.dtype)
    return kern("detection_output", ctx)(xs[0], xs[1], xs[2], **a)


@prepares("prior_box")
def _prior_box_prepare(node, p, shapes, ctx):
    # the priors depend on the shapes only: computed once, a copy handed out per run
    priors = K.prior_box(tuple(shapes[0][2:4]), prior_image_hw(node, shapes[1]), dtype=ctx.dtype,
                         **prior_kwargs(node))
    return (lambda feature, image: priors.copy()), False


__all__ = ["prior_kwargs", "prior_image_hw", "PRIOR_BOX_ATTRS"]
