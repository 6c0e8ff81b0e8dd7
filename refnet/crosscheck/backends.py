"""Cross-check backends: something that runs a model file on feeds and returns named outputs.

The interface every backend meets (DESIGN.md; the ONNX backends in ``ort_backend.py`` and the
cv2 5.x worker plug in the same way)::

    class Backend(Protocol):
        name: str        # e.g. "cv2 4.14.0 (fusion off, Winograd off)", "onnxruntime 1.32.0 (ORT_DISABLE_ALL)"
        def run(self, model_path, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]

``model_path`` is what the backend reads: a path, or a sequence of paths for formats that come
in several files (Caffe: prototxt + caffemodel; Darknet: cfg + weights). ``outputs`` are the
backend's names of the blobs wanted -- for per-layer checks, every layer -- and the result holds
one array per name (float32 is fine; compare converts). :func:`refnet.crosscheck.compare`
takes extra backends as :class:`Candidate` entries (what to call it in the report, which model
file it reads, whether it can return every layer or only the net outputs, and how refnet's
layer names map to its output names).

:class:`Cv2Backend` is cv2.dnn in this process (OpenCV 4.x: Caffe, Torch7, Darknet and ONNX
readers), with fusion and Winograd set per instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "Candidate", "Cv2Backend", "model_paths", "cv2_net_for", "cv2_layer_outputs",
           "has_winograd", "cv2_version"]


@runtime_checkable
class Backend(Protocol):
    """Runs a model file: ``run(model_path, feeds, outputs) -> {output name: array}``."""

    name: str

    def run(self, model_path: Any, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]
            ) -> dict[str, np.ndarray]: ...


@dataclass
class Candidate:
    """One backend as :func:`refnet.crosscheck.compare` runs it.

    ``id``: the comparison id in the report (e.g. ``"onnxruntime"``; unique per report).
    ``model``: what ``backend.run`` gets as ``model_path``. ``scope``: ``"layers"`` when the backend
    can return any layer's output (then every layer is compared and gets a local error), else
    ``"outputs"`` (the net outputs only). ``names``: refnet layer name -> the backend's output
    name (default: the same name); layers missing from it are not asked for.
    ``chunk_bytes``: the most output bytes asked for in one ``run`` (per-layer runs are split
    into several passes to bound memory; 0 = everything in one pass).
    """

    id: str
    backend: Backend
    model: Any
    scope: str = "layers"
    names: Mapping[str, str] | None = None
    chunk_bytes: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        if self.scope not in ("layers", "outputs"):
            raise ValueError(f"Candidate scope must be 'layers' or 'outputs', got {self.scope!r}")
        if not self.label:
            self.label = self.backend.name

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The backend's outputs of ``layers`` (refnet names) in one run, keyed by refnet name."""
        m = self.names
        want = [(n, m.get(n, None) if m is not None else n) for n in layers]
        want = [(n, b) for n, b in want if b is not None]
        got = self.backend.run(self.model, dict(feeds), [b for _, b in want])
        return {n: np.asarray(got[b]) for n, b in want if b in got}


# ---- cv2.dnn in this process -------------------------------------------------------------------------
def cv2_version() -> str:
    import cv2

    return str(cv2.__version__)


def has_winograd() -> bool:
    """True when this cv2 build has ``Net.enableWinograd`` (OpenCV >= 4.7)."""
    import cv2

    return hasattr(cv2.dnn.Net, "enableWinograd")


def model_paths(net: Any) -> tuple[str, ...]:
    """The files ``net`` was loaded from, as a backend's ``model_path`` (ValueError if none)."""
    files = getattr(net, "files", None)
    if not files:
        raise ValueError("this Net was not loaded from files; cv2 cannot read it")
    kind, paths = files
    if kind == "caffe" and paths[0] is None:
        raise ValueError("cv2.dnn needs a .prototxt; this model was loaded from a caffemodel alone")
    return tuple(str(p) for p in paths if p is not None)


def _read_cv2(paths: Sequence[str], torch_binary: bool = True):
    """A fresh cv2.dnn Net for these files (by extension)."""
    import cv2

    exts = [Path(p).suffix.lower() for p in paths]
    if any(e in (".prototxt", ".pbtxt") for e in exts):
        proto = paths[exts.index(".prototxt") if ".prototxt" in exts else exts.index(".pbtxt")]
        model = next((p for p, e in zip(paths, exts) if e == ".caffemodel"), None)
        if model is None:
            model = next((p for p in paths if p != proto), None)
        return cv2.dnn.readNetFromCaffe(str(proto), str(model) if model else None)
    if any(e == ".cfg" for e in exts):
        cfg = paths[exts.index(".cfg")]
        weights = next((p for p in paths if p != cfg), None)
        return cv2.dnn.readNetFromDarknet(str(cfg), str(weights) if weights else None)
    if exts and exts[0] == ".onnx":
        return cv2.dnn.readNetFromONNX(str(paths[0]))
    try:
        return cv2.dnn.readNetFromTorch(str(paths[0]), torch_binary)
    except cv2.error as e:
        raise ValueError(f"cv2.dnn cannot read {paths[0]} ({str(e).strip().splitlines()[-1]}); refnet can, but "
                         "there is nothing to compare with (for GPU-saved files, compare the CPU copy)") from e


def cv2_net_for(net: Any):
    """A fresh cv2.dnn Net read from the same files as ``net`` (a new one per call: cv2 may
    return garbage when one Net is reused with another input size)."""
    if getattr(net, "files", None) and net.files[0] not in ("caffe", "torch", "darknet"):
        raise ValueError(f"unknown model kind {net.files[0]!r}")
    return _read_cv2(model_paths(net), net.graph.meta.get("encoding", "binary") != "ascii")


def cv2_layer_outputs(cvnet, feeds: Mapping[str, np.ndarray], names: Sequence[str], single_input: bool,
                      fusion: bool = False, winograd: bool | None = None) -> dict[str, np.ndarray]:
    """cv2's first output of each named layer (one forward pass); ``winograd`` None keeps cv2's default."""
    cvnet.enableFusion(bool(fusion))
    if winograd is not None and hasattr(cvnet, "enableWinograd"):
        cvnet.enableWinograd(bool(winograd))
    for k, v in feeds.items():
        if single_input:
            cvnet.setInput(np.ascontiguousarray(v, np.float32))
        else:
            cvnet.setInput(np.ascontiguousarray(v, np.float32), k)
    outs = cvnet.forward(list(names))
    return {n: np.asarray(o) for n, o in zip(names, outs)}


@dataclass
class Cv2Backend:
    """cv2.dnn of this process as a :class:`Backend` (a fresh ``cv2.dnn.Net`` per run).

    ``fusion``/``winograd``: cv2's ``enableFusion``/``enableWinograd`` (``winograd`` None keeps
    cv2's default); ``torch_binary``: readNetFromTorch's ``isBinary``. ``outputs`` are cv2 layer
    names; each gets the layer's first output.
    """

    fusion: bool = False
    winograd: bool | None = False
    torch_binary: bool = True
    name: str = ""
    reader: Callable[..., Any] | None = field(default=None, repr=False)  # tests: read another model

    def __post_init__(self) -> None:
        if not self.name:
            wino = "" if self.winograd is None else f", Winograd {'on' if self.winograd else 'off'}"
            self.name = f"cv2 {cv2_version()} (fusion {'on' if self.fusion else 'off'}{wino})"

    def run(self, model_path: Any, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]
            ) -> dict[str, np.ndarray]:
        paths = [str(model_path)] if isinstance(model_path, (str, Path)) else [str(p) for p in model_path]
        cvnet = (self.reader or _read_cv2)(paths, self.torch_binary)
        return cv2_layer_outputs(cvnet, feeds, list(outputs), len(feeds) == 1, fusion=self.fusion,
                                 winograd=self.winograd)
