"""Caffe-specific IR ops (registered by the Caffe importer's needs; see docs/ops.md).

``mvn_cv2``: cv2.dnn's MVN, ``(x - mean) / sqrt(var + eps)`` (biased variance), which
differs from Caffe's MVN ``(x - mean) / (std + eps)`` (the ``mvn`` op). The Caffe importer
emits it only with ``quirks="cv2"`` (MVN layers, and BatchNorm with use_global_stats: false).
"""

from __future__ import annotations

import numpy as np

from refnet.ops.norm import MVN_ATTRS
from refnet.ops.registry import attrs, elementwise_macs, register, same_shape


def mvn_cv2(x: np.ndarray, *, normalize_variance: bool = True, across_channels: bool = False,
            eps: float = 1e-9) -> np.ndarray:
    """cv2.dnn MVN: mean over (H, W) per (n, c), or over (C, H, W) per n with
    ``across_channels``; with ``normalize_variance`` divide by ``sqrt(var + eps)``.
    Moments are accumulated in float64; the result has ``x``'s dtype."""
    axes = tuple(range(1 if across_channels else 2, x.ndim))
    x64 = x.astype(np.float64, copy=False)
    mean = x64.mean(axis=axes, keepdims=True) if axes else x64
    y = x64 - mean
    if normalize_variance:
        var = np.mean(y * y, axis=axes, keepdims=True) if axes else np.zeros_like(y)
        y = y / np.sqrt(var + float(eps))
    return y.astype(x.dtype, copy=False)


@register("mvn_cv2", shape=same_shape, attrs=MVN_ATTRS, macs=elementwise_macs, kernel=None,
          no_kernel="NumPy in this module (mvn_cv2)")
def _mvn_cv2(node, xs, p, ctx):
    return mvn_cv2(xs[0], **attrs(node))
