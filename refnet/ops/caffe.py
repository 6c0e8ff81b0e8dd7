"""Caffe-specific IR ops (registered by the Caffe importer's needs; see docs/ops.md).

``mvn_cv2``: cv2.dnn's MVN, ``(x - mean) / sqrt(var + eps)`` (biased variance), which
differs from Caffe's MVN ``(x - mean) / (std + eps)`` (the ``mvn`` op). The Caffe importer
emits it only with ``quirks="cv2"`` (MVN layers, and BatchNorm with use_global_stats: false).
Its math: refnet.kernels.norm.mvn_cv2 (fast) / mvn_cv2_reference.
"""

from __future__ import annotations

from refnet.ops.norm import MVN_ATTRS
from refnet.ops.registry import attrs, elementwise_macs, kern, register, same_shape


@register("mvn_cv2", shape=same_shape, attrs=MVN_ATTRS, macs=elementwise_macs)
def _mvn_cv2(node, xs, p, ctx):
    return kern("mvn_cv2", ctx)(xs[0], **attrs(node))
