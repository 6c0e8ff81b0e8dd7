"""Every numerical tolerance of refnet, in one place (DESIGN.md: "Tolerances in one module").

Each bound is on ``max|a - b| / max(max|ref|, tiny)`` (relative to the largest magnitude of the
reference, so it is scale-free) unless noted. The test suite (``tests/conftest.py`` ``TOL``),
``refnet selfcheck``, ``refnet demo`` and ``refnet compare`` all read them from here.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["F32_VS_F64", "F32_VS_F64_LONG", "VS_CV2", "F64_VS_ORACLE", "GRAD_FD", "COMPARE_F32", "COMPARE_CV2",
           "DETECTION_SCORE_MARGIN", "DETECTION_IOU", "STYLIZE_PSNR_DB", "TOL"]

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

# the test suite's table (tests/conftest.py re-exports it as TOL)
TOL = MappingProxyType({
    "f32_vs_f64": F32_VS_F64,
    "f32_vs_f64_long": F32_VS_F64_LONG,
    "vs_cv2": VS_CV2,
    "f64_vs_oracle": F64_VS_ORACLE,
    "grad_fd": GRAD_FD,
})
