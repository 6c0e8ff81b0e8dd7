"""Run and shape function of `resize_nd`, ONNX Resize/Upsample (kernel: refnet.kernels.resize)."""

from __future__ import annotations

from refnet.errors import ShapeError
from refnet.ops.core import kern
from refnet.ops.registry import register


def _shape(node, shapes):
    out = tuple(node.attrs["out"])
    if len(out) != len(shapes[0]):
        raise ShapeError("one output size per axis", layer=node.name, expected=len(shapes[0]), got=out)
    return [out]


@register("resize_nd", shape=_shape)
def _resize_nd(node, xs, p, ctx):
    a = node.attrs
    return kern("resize_nd", ctx)(xs[0], a["out"], a["scales"], mode=a["mode"],
                                  coordinate_transformation_mode=a["coordinate_transformation_mode"],
                                  nearest_mode=a["nearest_mode"], cubic_coeff_a=a["cubic_coeff_a"],
                                  exclude_outside=a["exclude_outside"], extrapolation_value=a["extrapolation_value"],
                                  roi=a.get("roi", ()), antialias=bool(a.get("antialias", False)))
