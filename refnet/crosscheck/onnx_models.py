"""ONNX file helpers shared by the ONNX backends: expose intermediate tensors as graph outputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["with_outputs", "tensor_names", "fix_input_dims"]


def tensor_names(model_path: str | os.PathLike) -> list[str]:
    """Every tensor produced by a node of the model, in node order."""
    import onnx

    m = onnx.load(os.fspath(model_path), load_external_data=False)
    return [t for n in m.graph.node for t in n.output if t]


def fix_input_dims(model: Any, shapes: Mapping[str, Sequence[int]]) -> None:
    """Set the dims of ``model``'s graph inputs named in ``shapes`` (in place): symbolic dims
    leave intermediate tensors without a shape after inference, which cv2 4.x refuses."""
    for vi in model.graph.input:
        shape = shapes.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if shape and len(dims) == len(shape):
            for d, v in zip(dims, shape):
                d.ClearField("dim_param")
                d.dim_value = int(v)


def with_outputs(model_path: str | os.PathLike, outputs: Sequence[str], tmpdir: str | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> str:
    """A temporary copy of the model whose graph outputs are exactly ``outputs`` (graph outputs
    or any node output; types from ONNX shape inference). ``input_shapes`` fixes the inputs'
    dims first (symbolic dims leave intermediate tensors without a shape, which cv2 4.x refuses).
    Returns the copy's path (the caller removes it)."""
    import onnx

    m = onnx.load(os.fspath(model_path))
    fix_input_dims(m, input_shapes or {})
    inferred = onnx.shape_inference.infer_shapes(m)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {t for n in m.graph.node for t in n.output}
    missing = [t for t in outputs if t not in produced and t not in known]
    if missing:
        raise KeyError(f"tensors {missing[:5]} are not in {model_path}")
    del m.graph.output[:]
    for t in outputs:
        vi = known.get(t)
        if vi is None:
            vi = onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
        m.graph.output.append(vi)
    fd, path = tempfile.mkstemp(suffix=".onnx", dir=tmpdir)
    os.close(fd)
    onnx.save(m, path)
    return path
