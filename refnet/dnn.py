"""A ``cv2.dnn``-style facade over refnet, so the classic OpenCV DNN scripts run unchanged.

``from refnet import dnn`` then ``dnn.readNetFromCaffe(...)``, ``net.setInput(blob)``,
``net.forward()``, ``dnn.blobFromImage(...)``, ``dnn.NMSBoxes(...)``: the names, arguments
and return conventions are cv2.dnn 4.x's (a single array for one output name, a tuple for a
list of names, 1-based layer ids, NMS indices as an int32 array or ``()`` when empty); the
numbers come from refnet's own parsers and kernels. Two knobs that cv2 does not have:
``precision`` ("float32" fast kernels, default, or "float64" reference) and ``quirks``
("none": the source framework's semantics, default, or "cv2"), module-wide or per Net.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import RefnetError, ShapeError

__all__ = [
    "Net",
    "readNet",
    "readNetFromCaffe",
    "readNetFromTorch",
    "readNetFromDarknet",
    "readNetFromONNX",
    "blobFromImage",
    "blobFromImages",
    "NMSBoxes",
    "DNN_BACKEND_DEFAULT",
    "DNN_BACKEND_OPENCV",
    "DNN_TARGET_CPU",
    "CV_8U",
    "CV_32F",
    "precision",
    "quirks",
]

# cv2.dnn's enum values (accepted and ignored: refnet always runs on its own CPU kernels)
DNN_BACKEND_DEFAULT = 0
DNN_BACKEND_HALIDE = 1
DNN_BACKEND_INFERENCE_ENGINE = 2
DNN_BACKEND_OPENCV = 3
DNN_BACKEND_VKCOM = 4
DNN_BACKEND_CUDA = 5
DNN_TARGET_CPU = 0
DNN_TARGET_OPENCL = 1
DNN_TARGET_OPENCL_FP16 = 2
DNN_TARGET_MYRIAD = 3
DNN_TARGET_VULKAN = 4
DNN_TARGET_FPGA = 5
DNN_TARGET_CUDA = 6
DNN_TARGET_CUDA_FP16 = 7
CV_8U = 0
CV_32F = 5

precision: str = "float32"  # module-wide default run precision of every facade Net
quirks: str = "none"  # module-wide default semantics for the readers ("none" or "cv2")

PathLike = str | os.PathLike


class Net:
    """cv2.dnn.Net look-alike wrapping a :class:`refnet.Net` (``Net()`` is an empty net, as in cv2).

    ``precision`` (None = the module's ``dnn.precision``) picks refnet's fast float32 or
    reference float64 kernels for :meth:`forward`.
    """

    def __init__(self, net: Any = None, *, precision: str | None = None) -> None:
        self.net = net
        self.precision = precision
        self._inputs: dict[str, np.ndarray] = {}
        self._last_seconds = 0.0
        self.backend = DNN_BACKEND_DEFAULT
        self.target = DNN_TARGET_CPU
        self.fusion = True

    # ---- cv2.dnn.Net API -----------------------------------------------------------------------------
    def empty(self) -> bool:
        """True when no model is loaded (``cv2.dnn.Net()``)."""
        return self.net is None or len(self.net.layer_names) == 0

    def setPreferableBackend(self, backendId: int) -> None:  # noqa: N802, N803 (cv2's names)
        """Accepted and recorded; refnet has one backend."""
        self.backend = int(backendId)

    def setPreferableTarget(self, targetId: int) -> None:  # noqa: N802, N803
        """Accepted and recorded; refnet runs on the CPU."""
        self.target = int(targetId)

    def enableFusion(self, fusion: bool) -> None:  # noqa: N802
        """Accepted and recorded; refnet fuses in float32 only where no fused layer's output is requested."""
        self.fusion = bool(fusion)

    def setInput(self, blob: np.ndarray, name: str = "", scalefactor: float = 1.0,  # noqa: N802
                 mean: float | Sequence[float] | None = None) -> None:
        """Set an input blob (cv2: ``input = scalefactor * (blob - mean[c])``; ``""`` = the first input)."""
        self._need()
        ins = self.net.input_names
        key = name or ins[0]
        if key not in ins:
            raise KeyError(f"setInput: the net has no input {name!r}; its inputs are {list(ins)}")
        a = np.asarray(blob)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"setInput: blob must be a numeric array, got dtype {a.dtype}")
        if a.ndim == 0:
            raise ShapeError("setInput: blob must be an N-D array", expected="(N, C, H, W)", got=a.shape)
        has_mean = mean is not None and np.any(np.asarray(mean, dtype=np.float64) != 0)
        if scalefactor != 1.0 or has_mean:
            a = a.astype(np.float32)
            if has_mean:
                m = np.atleast_1d(np.asarray(mean, dtype=np.float32))
                c = a.shape[1] if a.ndim > 1 else 1
                m = np.concatenate([m, np.zeros(max(c - m.size, 0), np.float32)])[:c]
                a = a - m.reshape((1, c) + (1,) * (a.ndim - 2))
            a = a * np.float32(scalefactor)
        self._inputs[key] = np.array(a, copy=True)

    def forward(self, outputName: str | Sequence[str] | None = None) -> Any:  # noqa: N803
        """Run the net. ``None``/``""``: the last layer's output (cv2's rule); a name: that layer's
        (first) output array; a list/tuple of names: a tuple of arrays in that order."""
        self._need()
        missing = [k for k in self.net.input_names if k not in self._inputs]
        if missing:
            raise RefnetError(f"forward: call setInput() first; input(s) {missing} have no blob")
        single = outputName is None or isinstance(outputName, str)
        if single:
            names = [outputName or self.net.layer_names[-1]]
        else:
            names = [str(n) for n in outputName]  # type: ignore[union-attr]
        t0 = time.perf_counter()
        out = self.net.forward(dict(self._inputs), outputs=names, precision=self._precision())
        self._last_seconds = time.perf_counter() - t0
        return out[names[0]] if single else tuple(out[n] for n in names)

    def getLayerNames(self) -> tuple[str, ...]:  # noqa: N802
        """All layer names in cv2's order (the input layer excluded), as cv2 4.x returns them."""
        return tuple(self.net.layer_names) if self.net is not None else ()

    def getLayerId(self, layer: str) -> int:  # noqa: N802
        """cv2's 1-based layer id (0 is cv2's hidden input layer); -1 for an unknown name."""
        try:
            return self.getLayerNames().index(layer) + 1
        except ValueError:
            return -1

    def getUnconnectedOutLayersNames(self) -> tuple[str, ...]:  # noqa: N802
        """Names of the layers whose outputs nothing consumes."""
        return tuple(self.net.output_names) if self.net is not None else ()

    def getUnconnectedOutLayers(self) -> np.ndarray:  # noqa: N802
        """1-based ids of the unconnected output layers, an int32 array as cv2 4.x returns."""
        ids = [self.getLayerId(n) for n in self.getUnconnectedOutLayersNames()]
        return np.asarray([i for i in ids if i > 0], dtype=np.int32)

    def getPerfProfile(self) -> tuple[int, np.ndarray]:  # noqa: N802
        """(ticks of the last forward, per-layer timings): ticks are nanoseconds (cv2's tick
        frequency on Linux); refnet does not time layers, so the per-layer array is empty."""
        return int(self._last_seconds * 1e9), np.zeros((0, 1), dtype=np.float64)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _need(self) -> None:
        if self.empty():
            raise RefnetError("the net is empty: load a model with readNet/readNetFromCaffe/... first")

    def _precision(self) -> str:
        return self.precision or precision

    def __repr__(self) -> str:
        return f"<refnet.dnn.Net {self.net!r}>" if self.net is not None else "<refnet.dnn.Net empty>"


# ---- readers ----------------------------------------------------------------------------------------------
def _opt(p: PathLike | None) -> PathLike | None:
    return None if p is None or str(p) == "" else p


def readNetFromCaffe(prototxt: PathLike, caffeModel: PathLike | None = None) -> Net:  # noqa: N802, N803
    """Caffe deploy .prototxt (+ optional .caffemodel), read by refnet's own parser."""
    from refnet.net import load_caffe

    return Net(load_caffe(_opt(prototxt), _opt(caffeModel), quirks=quirks))


def readNetFromTorch(model: PathLike, isBinary: bool = True, evaluate: bool = True) -> Net:  # noqa: N802, N803
    """Torch7 .t7/.net model; refnet tells binary from ASCII itself, so ``isBinary`` is only
    accepted, and the net is always in evaluation mode (cv2's ``evaluate=True``)."""
    from refnet.net import load_torch

    return Net(load_torch(model, quirks=quirks))


def readNetFromDarknet(cfgFile: PathLike, darknetModel: PathLike | None = None) -> Net:  # noqa: N802, N803
    """Darknet .cfg (+ optional .weights)."""
    from refnet.net import load_darknet

    return Net(load_darknet(cfgFile, _opt(darknetModel), quirks=quirks))


def readNetFromONNX(onnxFile: PathLike) -> Net:  # noqa: N802, N803
    """ONNX model, read by refnet's own reader (the graph is built for its declared input shapes)."""
    from refnet.net import load_onnx

    return Net(load_onnx(onnxFile, quirks=quirks))


def readNet(model: PathLike, config: PathLike = "", framework: str = "") -> Net:  # noqa: N802
    """Pick the reader from ``framework`` or the file extensions, with cv2.dnn.readNet's rules
    (the two files may come in either order)."""
    model_s, config_s = str(model), str(config or "")
    fw = framework.lower()
    mext = Path(model_s).suffix.lower().lstrip(".")
    cext = Path(config_s).suffix.lower().lstrip(".") if config_s else ""
    exts = (mext, cext)
    if fw == "caffe" or "caffemodel" in exts or "prototxt" in exts:
        if mext == "prototxt" or cext == "caffemodel":
            model_s, config_s = config_s, model_s
        return readNetFromCaffe(config_s, model_s or None)
    if fw == "torch" or {"t7", "net"} & set(exts):
        return readNetFromTorch(model_s or config_s)
    if fw == "onnx" or "onnx" in exts:
        return readNetFromONNX(model_s if mext == "onnx" else config_s)
    if fw == "darknet" or "weights" in exts or "cfg" in exts:
        if mext == "cfg" or cext == "weights":
            model_s, config_s = config_s, model_s
        return readNetFromDarknet(config_s, model_s or None)
    raise RefnetError(f"cannot determine the framework of {model_s}{', ' + config_s if config_s else ''}: "
                      "refnet reads Caffe (.prototxt/.caffemodel), Torch7 (.t7/.net), Darknet (.cfg/.weights) "
                      "and ONNX (.onnx)")


# ---- blobs --------------------------------------------------------------------------------------------------
def _size(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    s = tuple(int(v) for v in size)
    if len(s) != 2:
        raise ShapeError("size must be (width, height)", expected="2 values", got=size)
    return None if s == (0, 0) else s  # type: ignore[return-value]


def _mean(mean: float | Sequence[float] | None) -> float | tuple[float, ...]:
    if mean is None:
        return 0.0
    if np.isscalar(mean):
        return float(mean)  # type: ignore[arg-type]
    return tuple(float(v) for v in mean)  # type: ignore[union-attr]


def blobFromImages(images: Sequence[np.ndarray], scalefactor: float = 1.0,  # noqa: N802, N803
                   size: Sequence[int] | None = (0, 0), mean: float | Sequence[float] | None = (0, 0, 0, 0),
                   swapRB: bool = False, crop: bool = False, ddepth: int = CV_32F) -> np.ndarray:  # noqa: N803
    """NxCxHxW blob with cv2.dnn.blobFromImages' semantics (size (0, 0) = keep; ``ddepth``
    CV_8U needs uint8 images, scale 1 and zero mean, as in cv2)."""
    from refnet.preprocess import blob_from_images

    if ddepth not in (CV_32F, CV_8U):
        raise ValueError(f"ddepth must be CV_32F ({CV_32F}) or CV_8U ({CV_8U}), got {ddepth}")
    m = _mean(mean)
    if ddepth == CV_8U:
        if scalefactor != 1.0 or np.any(np.asarray(m, dtype=np.float64) != 0):
            raise ValueError("scaling and mean subtraction are not supported for CV_8U blob depth (cv2 rule)")
        bad = [i for i, im in enumerate(images) if np.asarray(im).dtype != np.uint8]
        if bad:
            raise TypeError(f"ddepth=CV_8U needs uint8 images; image(s) {bad} are not uint8")
    blob = blob_from_images(list(images), float(scalefactor), _size(size), m, bool(swapRB), bool(crop))
    return blob.astype(np.uint8) if ddepth == CV_8U else blob


def blobFromImage(image: np.ndarray, scalefactor: float = 1.0,  # noqa: N802
                  size: Sequence[int] | None = (0, 0), mean: float | Sequence[float] | None = (0, 0, 0, 0),
                  swapRB: bool = False, crop: bool = False, ddepth: int = CV_32F) -> np.ndarray:  # noqa: N803
    """1xCxHxW blob with cv2.dnn.blobFromImage's semantics: resize (or resize-and-centre-crop)
    to ``size`` = (width, height), swap R and B, subtract ``mean``, multiply by ``scalefactor``."""
    return blobFromImages([image], scalefactor, size, mean, swapRB, crop, ddepth)


# ---- NMS --------------------------------------------------------------------------------------------------
def NMSBoxes(bboxes: Sequence[Sequence[float]] | np.ndarray, scores: Sequence[float] | np.ndarray,  # noqa: N802
             score_threshold: float, nms_threshold: float, eta: float = 1.0, top_k: int = 0) -> Any:
    """cv2.dnn.NMSBoxes: boxes are (x, y, w, h); candidates have score > ``score_threshold``;
    greedy by descending score, a box is dropped when IoU > ``nms_threshold`` (times ``eta``
    after each keep while above 0.5); ``top_k`` > 0 keeps that many candidates. Returns the
    kept indices as an int32 array, or ``()`` when none is kept (as cv2 4.x does)."""
    from refnet.kernels import nms

    b = np.asarray(bboxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float32)
    if b.size == 0 and s.size == 0:
        return ()
    if b.ndim != 2 or b.shape[1] != 4:
        raise ShapeError("NMSBoxes: bboxes must be N boxes (x, y, w, h)", expected="(N, 4)", got=b.shape)
    if s.ndim != 1 or len(s) != len(b):
        raise ShapeError("NMSBoxes: one score per box", expected=(len(b),), got=s.shape)
    xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    keep = nms(xyxy, s, float(nms_threshold), float(score_threshold), int(top_k) if top_k > 0 else None,
               float(eta))
    return np.asarray(keep, dtype=np.int32) if len(keep) else ()
