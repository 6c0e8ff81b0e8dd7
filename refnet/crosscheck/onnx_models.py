"""ONNX file helpers shared by the ONNX backends: expose intermediate tensors as graph outputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence

__all__ = ["with_outputs", "tensor_names"]


def tensor_names(model_path: str | os.PathLike) -> list[str]:
    """Every tensor produced by a node of the model, in node order."""
    import onnx

    m = onnx.load(os.fspath(model_path), load_external_data=False)
    return [t for n in m.graph.node for t in n.output if t]


def with_outputs(model_path: str | os.PathLike, outputs: Sequence[str], tmpdir: str | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> str:
    """A temporary copy of the model whose graph outputs are exactly ``outputs`` (graph outputs
    or any node output; types from ONNX shape inference). ``input_shapes`` fixes the inputs'
    dims first (symbolic dims leave intermediate tensors without a shape, which cv2 4.x refuses).
    Returns the copy's path (the caller removes it)."""
    import onnx

    m = onnx.load(os.fspath(model_path))
    for vi in m.graph.input:
        shape = (input_shapes or {}).get(vi.name)
        if shape is not None and vi.type.tensor_type.HasField("shape") and \
                len(vi.type.tensor_type.shape.dim) == len(shape):
            for d, v in zip(vi.type.tensor_type.shape.dim, shape):
                d.ClearField("dim_param")
                d.dim_value = int(v)
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
