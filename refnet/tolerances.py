"""Every numerical tolerance of refnet and the task thresholds (where decoders cut), in one place.

Each bound is on ``max|a - b| / max(max|ref|, tiny)`` (relative to the largest magnitude of the
reference, so it is scale-free) unless noted. The test suite (``tests/conftest.py`` ``TOL``),
``refnet selfcheck``, ``refnet demo`` and ``refnet compare`` all read them from here.
"""

from __future__ import annotations

import math
from types import MappingProxyType

__all__ = ["F32_VS_F64", "F32_VS_F64_LONG", "VS_CV2", "F64_VS_ORACLE", "GRAD_FD", "COMPARE_F32", "COMPARE_CV2",
           "DETECTION_SCORE_MARGIN", "DETECTION_IOU", "STYLIZE_PSNR_DB", "TOL", "MTCNN_THRESHOLDS",
           "DECODE_THRESHOLDS", "COMPARE_YOLO_THRESHOLDS"]

# one fast float32 kernel against its float64 reference (selfcheck, kernel tests)
F32_VS_F64 = 1e-5
# float32 kernels whose reduction is long (big convolutions, GEMMs, long softmax rows): the float32
# rounding of a sum of n terms grows like sqrt(n) * 6e-8
F32_VS_F64_LONG = 5e-5
# cv2.dnn (float32, its own kernels) against refnet, per layer
VS_CV2 = 1e-4
# refnet's reference kernels against an independent float64 oracle (scipy, hand-computed values)
F64_VS_ORACLE = 1e-10
# finite-difference gradient checks (float64, central differences)
GRAD_FD = 1e-6

# `refnet compare`: the per-layer bound for refnet float32 (any layer of a whole model may hold a
# long reduction) and for cv2; a layer is wrong when its LOCAL error is over these
COMPARE_F32 = F32_VS_F64_LONG
COMPARE_CV2 = VS_CV2

# task-level checks of `refnet compare`
DETECTION_SCORE_MARGIN = 1e-3  # scores this close to a threshold, a cut or each other may swap places
DETECTION_IOU = 0.9  # matched detections must overlap at least this much
STYLIZE_PSNR_DB = 60.0  # stylised images agree above this PSNR (peak: the reference's value range)

# task thresholds (where a decoder cuts, not a tolerance; one home for pipelines, compare and mtcnn)
# MTCNN's published cascade: P-Net, R-Net, O-Net score thresholds (detect_face)
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)
# Default (score, NMS) thresholds per decoder of `refnet run`, from each model family's own sample
# code: OpenCV's object_detection.py (SSD 0.5), Darknet `detector test` (0.5, NMS 0.45),
# Ultra-Light-Fast's ultra_face_opencvdnn_inference.py (0.7, NMS 0.3, 200 candidates),
# MTCNN's P-Net (0.6; NMS 0.5 per scale, 0.7 over the pyramid).
DECODE_THRESHOLDS = MappingProxyType({
    "ssd": (0.5, 0.45),
    "yolo": (0.5, 0.45),
    "ultraface": (0.7, 0.3),
    "mtcnn-pnet": (MTCNN_THRESHOLDS[0], 0.7),
    "frcnn": (0.5, math.nan),  # OpenCV's object_detection.py; NMS runs inside DetectionOutput
})
# `refnet compare` checks YOLO detections down to 0.25 (AlexeyAB Darknet's `detector test` default),
# lower than `refnet run` shows (0.5): more boxes compared, NMS as Darknet's 0.45
COMPARE_YOLO_THRESHOLDS = (0.25, 0.45)

# the test suite's table (tests/conftest.py re-exports it as TOL)
TOL = MappingProxyType({
    "f32_vs_f64": F32_VS_F64,
    "f32_vs_f64_long": F32_VS_F64_LONG,
    "vs_cv2": VS_CV2,
    "f64_vs_oracle": F64_VS_ORACLE,
    "grad_fd": GRAD_FD,
})
