"""ONNX models in ``refnet compare``: one layer-scope candidate per ONNX backend (onnxruntime,
cv2 4.x in a worker, cv2 5.x in another interpreter; :mod:`refnet.crosscheck.onnx_backends`).

:func:`select_backends` turns ``--backend`` specs into backends for ``refnet compare`` and
``refnet convert`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from refnet.crosscheck import quirks as Q
from refnet.weights_import import onnx_schema as S

__all__ = ["select_backends", "is_onnx", "onnx_net_for", "onnx_feed", "onnx_candidates"]

#: ONNX integer and bool element types (TensorProto.DataType codes) -> their names
_INTEGER_TYPES = {c: S.DTYPES[c].name for c in sorted(S.INT_TYPES | {9})}


def select_backends(specs: Sequence[str] | None, *, name_spec: bool = False) -> list[Any]:
    """The backends ``specs`` name (:func:`~refnet.crosscheck.onnx_backends.make_backend`), default
    every installed one; a spec that names no usable backend is a ValueError (a user error), whose
    message starts with ``--backend SPEC:`` when ``name_spec``."""
    from refnet.crosscheck.onnx_backends import BackendFailure, available_backends, make_backend

    if not specs:
        return available_backends()
    out = []
    for sp in dict.fromkeys(specs):  # a spec given twice is one backend (it ran twice)
        try:
            out.append(make_backend(sp))
        except BackendFailure as e:
            if name_spec:
                raise ValueError(f"--backend {sp}: {e}") from None
            raise ValueError(str(e)) from e
    return out


def is_onnx(net: Any) -> bool:
    return bool(net.files) and net.files[0] == "onnx"


def onnx_net_for(net: Any, x: np.ndarray) -> Any:
    """``net`` itself when it was loaded for ``x``'s shape, else the file loaded again for it (the
    ONNX reader folds shape subgraphs for fixed input shapes)."""
    from refnet.net import load_onnx

    name = net.input_names[0]
    if len(net.input_names) == 1 and tuple(net.input_shapes.get(name) or ()) != tuple(x.shape):
        return load_onnx(net.files[1][0], quirks=Q.graph_quirks_mode(net.graph), input_shapes={name: x.shape})
    return net


def onnx_feed(net: Any, x: Any) -> tuple[Any, list[str]]:
    """``x`` as every backend sees it, and notes: an input the model declares integer (or bool)
    holds the blob rounded toward zero (``!= 0``), one declared float16/bfloat16 the blob rounded
    to that type: the values onnxruntime is fed in that type; refnet computes on float tensors and
    would otherwise run on the unrounded blob."""
    types = net.graph.meta.get("input_types") or {}
    feeds = dict(x) if isinstance(x, dict) else {net.input_names[0]: x}
    notes = []
    for name, v in feeds.items():
        feeds[name], t = S.declared_values(np.asarray(v), int(types.get(name) or 0))
        if t is not None:
            how = "rounded toward zero" if t in _INTEGER_TYPES.values() else "rounded to it"
            notes.append(f"input {name!r} is {t}: the blob is {how} for every backend")
    return (feeds if isinstance(x, dict) else feeds[net.input_names[0]]), notes


class _Tolerant:
    """A backend whose failure (a crash of the cv2 worker, a model it refuses) is a note in the
    report, not the end of the compare: it then returns no outputs. A layer it computes in float16
    (a float16 model in onnxruntime or cv2 5.x: the tensor comes back float16) is left out with a
    note, except the ``exact`` tensors (casts: rounding to float16 is their defined result)."""

    def __init__(self, backend: Any, notes: list[str], exact: frozenset[str] = frozenset()) -> None:
        self.backend, self.notes, self.name, self.exact, self.half = backend, notes, backend.name, exact, 0

    def run(self, model_path: Any, feeds: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        from refnet.crosscheck.onnx_backends import BackendFailure

        try:
            got = self.backend.run(model_path, feeds, outputs)
        except (BackendFailure, RuntimeError, ValueError) as e:
            msg = f"{self.name} failed on this model: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            if msg not in self.notes:
                self.notes.append(msg)
            return {}
        half = [k for k, v in got.items() if np.asarray(v).dtype == np.float16 and k not in self.exact]
        if half:  # computed in float16 (the model's own type): rounding over the tolerances, a DIFFER of nothing
            self.half += len(half)
            msg = (f"{self.name} computes layers in float16 (their tensors come back float16, e.g. {half[0]!r}), "
                   "coarser than compare's tolerances: those layers are not compared")
            if msg not in self.notes:
                self.notes.append(msg)
            got = {k: v for k, v in got.items() if k not in half}
        return got


def onnx_candidates(net: Any, specs: Sequence[str], err: Any) -> tuple[list[Any], list[str]]:
    """One layer-scope :class:`~refnet.crosscheck.backends.Candidate` per ONNX backend (``specs``,
    default every installed one), each layer asked for by its first output's ONNX tensor name; and
    the list the backends' failures are noted in (for the report)."""
    from refnet.crosscheck.backends import Candidate

    backends = select_backends(specs, name_spec=True)
    inverse: dict[str, str] = {}
    for onnx_name, ir in (net.graph.meta.get("tensors") or {}).items():
        inverse.setdefault(ir, onnx_name)
    names = {layer: inverse[layer] for layer in net.layer_names if layer in inverse}
    notes: list[str] = []
    out, used = [], set()
    model = _with_refnet_shapes(net, names) if backends else net.files[1][0]
    exact = frozenset(t for layer, t in names.items() if net.graph.node(layer).op == "cast")
    for b in backends:
        cid = _backend_id(b.name, used)
        out.append(Candidate(cid, _Tolerant(b, notes, exact), model, "layers", names, label=b.name))
    if not out:
        print("note: no ONNX backend is installed (pip install onnxruntime; cv2@PYTHON for OpenCV 5)", file=err)
    return out, notes


def _with_refnet_shapes(net: Any, names: dict[str, str]) -> str:
    """A temporary copy of the net's ONNX file with fixed input dims and a shape for every layer
    tensor ONNX shape inference leaves without one (refnet's shapes: cv2 4.x refuses an exposed
    output without a shape). The copy is removed when the process exits."""
    import atexit
    import os
    import shutil
    import tempfile

    import onnx

    from refnet.crosscheck.onnx_models import fix_input_dims

    path = net.files[1][0]
    m = onnx.load(path)
    fix_input_dims(m, net.input_shapes)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - inference is a help here, not a requirement
        pass
    shaped = {vi.name for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)
              if vi.type.tensor_type.HasField("shape")}
    shapes = net.infer_shapes(dict(net.input_shapes))
    for layer, tname in names.items():
        if tname not in shaped and layer in shapes and all(d >= 0 for d in shapes[layer]):
            m.graph.value_info.append(onnx.helper.make_tensor_value_info(tname, onnx.TensorProto.FLOAT,
                                                                         list(shapes[layer])))
    d = tempfile.mkdtemp(prefix="refnet-onnx-")
    atexit.register(shutil.rmtree, d, True)
    out = os.path.join(d, os.path.basename(path))
    onnx.save(m, out)
    return out


def _backend_id(name: str, used: set[str]) -> str:
    base = "onnxruntime" if name.startswith("onnxruntime") else (
        "cv2_" + name.split()[1].split(".")[0] if name.startswith("cv2 ") and len(name.split()) > 1 else
        name.split()[0])
    cid, i = base, 2
    while cid in used:
        cid, i = f"{base}_{i}", i + 1
    used.add(cid)
    return cid
