"""ONNX Runtime as a cross-check backend (in-process, all graph optimisations off)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from refnet.crosscheck.onnx_models import with_outputs

__all__ = ["OrtBackend", "ort_available"]


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OrtBackend:
    """``run(model_path, feeds, outputs)`` on onnxruntime's CPU provider with
    ORT_DISABLE_ALL (every node runs as written, no fusion), one intra-op thread by default."""

    def __init__(self, threads: int = 1, optimize: bool = False) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.threads = int(threads)
        self.optimize = optimize
        level = "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"
        self.name = f"onnxruntime {ort.__version__} ({level})"

    def run(self, model_path: str | os.PathLike, feeds: Mapping[str, np.ndarray],
            outputs: Sequence[str]) -> dict[str, np.ndarray]:
        ort = self._ort
        so = ort.SessionOptions()
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        path = with_outputs(model_path, list(outputs))
        try:
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            res = sess.run(list(outputs), {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        finally:
            os.unlink(path)
        return dict(zip(outputs, res))
