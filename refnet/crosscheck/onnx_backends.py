"""The ONNX cross-check backends and how to name them on the command line.

``ort`` (onnxruntime in-process), ``cv2`` (this interpreter's cv2 4.x, in a worker process:
cv2 aborts on some ONNX files), ``cv2@PYTHON`` (cv2 in another interpreter, e.g. OpenCV 5;
``cv2@cv5`` reads the interpreter from REFNET_CV5_PYTHON), ``cv2-inprocess``.
"""

from __future__ import annotations

import os
from typing import Any

from refnet.crosscheck.cv2_backend import BackendFailure, Cv2Backend, Cv2WorkerBackend
from refnet.crosscheck.ort_backend import OrtBackend, ort_available

__all__ = ["available_backends", "make_backend", "BackendFailure"]


def make_backend(spec: str) -> Any:
    """The backend named ``spec`` ("ort", "cv2", "cv2-inprocess", "cv2@PYTHON", "cv2@cv5")."""
    if spec in ("ort", "onnxruntime"):
        if not ort_available():
            raise BackendFailure("onnxruntime is not installed: pip install refnet[ort]")
        return OrtBackend()
    if spec == "cv2":
        return Cv2WorkerBackend()
    if spec == "cv2-inprocess":
        return Cv2Backend()
    if spec.startswith("cv2@"):
        py = spec[4:]
        if py == "cv5":
            py = os.environ.get("REFNET_CV5_PYTHON", "")
            if not py:
                raise BackendFailure("cv2@cv5 needs REFNET_CV5_PYTHON (the Makefile exports it; `make cv5`)")
        return Cv2WorkerBackend(py)
    raise BackendFailure(f"unknown backend {spec!r}: use ort, cv2, cv2-inprocess or cv2@PYTHON")


def available_backends() -> list[Any]:
    """Every ONNX backend installed here: onnxruntime, this interpreter's cv2 (as a worker) and
    the OpenCV 5 worker when REFNET_CV5_PYTHON names an interpreter with cv2."""
    out: list[Any] = []
    if ort_available():
        out.append(OrtBackend())
    for spec in ("cv2", "cv2@cv5"):
        try:
            out.append(make_backend(spec))
        except BackendFailure:
            continue
    return out
