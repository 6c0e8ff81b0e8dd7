"""Caffe-specific IR ops (registered by the Caffe importer's needs; see docs/ops.md).

``mvn_cv2``: cv2.dnn's MVN, ``(x - mean) / sqrt(var + eps)`` (biased variance), which
differs from Caffe's MVN ``(x - mean) / (std + eps)`` (the ``mvn`` op). The Caffe importer
emits it only with ``quirks="cv2"`` (MVN layers, and BatchNorm with use_global_stats: false).
Its math: refnet.kernels.norm.mvn_cv2 (fast) / mvn_cv2_reference.
"""

from __future__ import annotations

from refnet.ops.core import kern
from refnet.ops.registry import register, same_shape


@register("mvn_cv2", shape=same_shape)
def _mvn_cv2(node, xs, p, ctx):
    a = node.attrs
    return kern("mvn_cv2", ctx)(xs[0], normalize_variance=bool(a.get("normalize_variance", True)),
                                across_channels=bool(a.get("across_channels", False)),
                                eps=float(a.get("eps", 1e-9)))
