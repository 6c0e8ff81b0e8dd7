"""Run and shape function of `resize_nd`, ONNX Resize/Upsample (kernel: refnet.kernels.resize)."""

from __future__ import annotations

from refnet.errors import ShapeError
from refnet.ops.registry import REQUIRED, Attr, attrs, kern, register


def _shape(node, shapes):
    out = tuple(attrs(node)["out"])
    if len(out) != len(shapes[0]):
        raise ShapeError("one output size per axis", layer=node.name, expected=len(shapes[0]), got=out)
    return [out]


_ATTRS = {k: REQUIRED for k in ("out", "scales", "mode", "coordinate_transformation_mode", "nearest_mode",
                                  "cubic_coeff_a", "exclude_outside", "extrapolation_value")}


@register("resize_nd", shape=_shape, attrs={**_ATTRS, "roi": (), "antialias": Attr(False, bool)})
def _resize_nd(node, xs, p, ctx):
    a = attrs(node)
    return kern("resize_nd", ctx)(xs[0], a["out"], a["scales"], mode=a["mode"],
                                  coordinate_transformation_mode=a["coordinate_transformation_mode"],
                                  nearest_mode=a["nearest_mode"], cubic_coeff_a=a["cubic_coeff_a"],
                                  exclude_outside=a["exclude_outside"], extrapolation_value=a["extrapolation_value"],
                                  roi=a["roi"], antialias=a["antialias"])
