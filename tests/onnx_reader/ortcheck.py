"""Per-tensor agreement of refnet with onnxruntime on an ONNX model (test-side helper).

onnxruntime runs a copy of the model (edited with the onnx package) whose graph outputs are
every node output, with graph optimisations disabled (ORT_DISABLE_ALL: the unfused values).
refnet returns the same tensors by their ONNX names (``net.forward(outputs=[onnx names])``).
"""

from __future__ import annotations

import hashlib

import numpy as np

_REF_CACHE: dict[tuple[str, str], tuple[dict[str, np.ndarray], list[str]]] = {}  # both precisions reuse ORT's run


def all_outputs_model(path: str, input_shapes: dict[str, tuple[int, ...]]) -> tuple[bytes, list[str]]:
    """The model with every float node output exposed as a graph output (fixed input shapes)."""
    import onnx

    m = onnx.load(path)
    names = [o for n in m.graph.node for o in n.output if o]
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return m.SerializeToString(), names


def ort_run(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    vals = sess.run(outs, feeds)
    return dict(zip(outs, vals))


def agreement(net, path: str, x: dict[str, np.ndarray], precision: str) -> dict[str, float]:
    """{ONNX tensor name: max|refnet - ort| / max|ort|} over every float tensor refnet computes
    at run time (tensors folded to load-time constants are compared as well when exposed)."""
    key = (str(path), hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for v in x.values())).hexdigest())
    if key not in _REF_CACHE:
        mb, names = all_outputs_model(path, {k: v.shape for k, v in x.items()})
        _REF_CACHE.clear()  # one model at a time: the tests run a model's precisions back to back
        _REF_CACHE[key] = (ort_run(mb, {k: v.astype(np.float32) for k, v in x.items()}), names)
    ref, names = _REF_CACHE[key]
    known = set(net.graph.meta["tensors"])
    want = [n for n in names if n in known and n in ref and np.asarray(ref[n]).dtype.kind == "f"]
    got = net.forward(x, outputs=want, precision=precision)
    errs = {}
    for n in want:
        a = np.asarray(got[n], np.float64)
        r = np.asarray(ref[n], np.float64)
        if a.shape != r.shape:
            errs[n] = float("inf")
            continue
        scale = max(float(np.max(np.abs(r), initial=0.0)), 1e-30)
        errs[n] = float(np.max(np.abs(a - r), initial=0.0)) / scale
    return errs
