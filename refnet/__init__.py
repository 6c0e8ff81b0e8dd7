"""refnet: a from-scratch numerical reference implementation of DNN inference.

Loads Caffe, Torch7 and Darknet models with its own parsers, runs them on its own NumPy/
Numba kernels in float64 (reference) or float32 (fast), and compares every layer with
OpenCV's cv2.dnn. See README.md and DESIGN.md for the public API.
"""

from __future__ import annotations

from refnet.errors import BudgetError, ModelFormatError, RefnetError, ShapeError, UnsupportedLayerError

__version__ = "0.1.0"

__all__ = [
    "RefnetError",
    "ModelFormatError",
    "UnsupportedLayerError",
    "ShapeError",
    "BudgetError",
    "set_memory_budget",
    "set_compute_budget",
    "Net",
    "load",
    "load_caffe",
    "load_torch",
    "load_darknet",
    "load_onnx",
    "blob_from_image",
    "compare",
    "dnn",
    "zoo",
    "fetch",
    "set_num_threads",
    "get_num_threads",
    "export_onnx",
]


def __getattr__(name: str):  # lazy: `import refnet` stays cheap (no numba compile, no cv2)
    if name in ("Net", "load", "load_caffe", "load_torch", "load_darknet", "load_onnx", "set_num_threads",
                "get_num_threads"):
        from refnet import net as _net

        return getattr(_net, name)
    if name in ("set_memory_budget", "set_compute_budget", "memory_budget", "compute_budget"):
        from refnet.runtime import budget as _budget

        return getattr(_budget, name)
    if name == "blob_from_image":
        from refnet.preprocess import blob_from_image

        return blob_from_image
    if name == "compare":  # the function; there is no submodule `refnet.compare` to shadow it
        from refnet.crosscheck.orchestrator import compare

        return compare
    if name == "export_onnx":  # Graph -> ONNX (refnet/export/onnx.py; needs the onnx extra)
        from refnet.export.onnx import export_onnx

        return export_onnx
    if name in ("dnn", "zoo", "fetch", "archs"):
        import importlib

        return importlib.import_module(f"refnet.{name}")
    raise AttributeError(f"module 'refnet' has no attribute {name!r}")
