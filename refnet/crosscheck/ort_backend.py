"""ONNX Runtime as a cross-check backend (in-process, all graph optimisations off)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from refnet.crosscheck.cv2_backend import BackendFailure
from refnet.crosscheck.onnx_models import with_outputs

__all__ = ["OrtBackend", "ort_available"]

#: onnxruntime's input type names -> the dtype a blob is fed in (refnet's blobs are float32)
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
               "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
               "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_}


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OrtBackend:
    """``run(model_path, feeds, outputs)`` on onnxruntime's CPU provider with
    ORT_DISABLE_ALL (every node runs as written, no fusion), one intra-op thread by default.
    Each input is fed in the type the model declares (a float blob cast as a Cast node would:
    an int64 or double input gets the same values refnet's graph casts to). onnxruntime
    refusing or failing on the model is a :class:`BackendFailure`."""

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
            types = {i.name: _ORT_DTYPES.get(i.type, np.float32) for i in sess.get_inputs()}
            with np.errstate(invalid="ignore"):  # NaN/inf cast to an integer input, as a Cast node
                blobs = {k: np.ascontiguousarray(v, dtype=types.get(k, np.float32)) for k, v in feeds.items()}
            res = sess.run(list(outputs), blobs)
        except Exception as e:
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackendFailure(f"{self.name}: {first}") from None
        finally:
            os.unlink(path)
        return dict(zip(outputs, res))
