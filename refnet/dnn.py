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

import functools
import os
import sys
import time
import types
import warnings
import weakref
from collections.abc import Callable, Sequence
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
    "NMSBoxesBatched",
    "imagesFromBlob",
    "Layer",
    "cv2_error",
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



# ---- errors that are also cv2.error ---------------------------------------------------------------
_CV2_FLAVOURS: dict[type, type] = {}
_STS_ERROR = -2  # cv::Error::StsError, the code cv2 gives most dnn errors


def cv2_error(e: BaseException) -> BaseException:
    """``e`` as an instance of a subclass of both its own type and ``cv2.error`` (so ``except
    cv2.error`` and ``except RefnetError``/``KeyError``/... both catch it), with cv2.error's
    attributes ``code``, ``err``, ``msg``, ``func``, ``file``, ``line`` (where the error has no
    field of that name already: ModelFormatError keeps its own ``file``/``line``). Without cv2, ``e``."""
    try:
        import cv2
    except ImportError:  # pragma: no cover (cv2 is a dependency)
        return e
    if isinstance(e, cv2.error):
        return e
    cls = type(e)
    flavour = _CV2_FLAVOURS.get(cls)
    if flavour is None:
        flavour = type(cls.__name__, (cls, cv2.error), {"__module__": cls.__module__,
                                                         "__doc__": f"{cls.__name__}, also a cv2.error"})
        _CV2_FLAVOURS[cls] = flavour
    try:
        e.__class__ = flavour  # refnet's own errors: the same object, keeping its fields
        out = e
    except TypeError:  # builtin exception types cannot change class: a new instance with the same args
        if isinstance(e, OSError) and e.filename is not None:
            out = flavour(e.errno, e.strerror, e.filename)
        else:
            out = flavour(*e.args)
        out.__traceback__ = e.__traceback__
    msg = str(e)
    for k, v in (("code", _STS_ERROR), ("err", msg), ("msg", msg), ("func", ""), ("file", ""), ("line", 0)):
        if k not in vars(out):  # a refnet error's own fields (ModelFormatError.file/line) win
            setattr(out, k, v)
    return out


def _cv2_errors(fn: Callable) -> Callable:
    """Re-raise user-facing errors of ``fn`` as :func:`cv2_error` instances."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RefnetError, KeyError, ValueError, TypeError, OSError, IndexError) as e:
            raise cv2_error(e) from None

    return wrapper


# cv2.dnn layer type names of refnet's IR ops (getLayer(...).type, getLayerTypes())
_CV2_TYPES = {
    "conv": "Convolution", "deconv": "Deconvolution", "linear": "InnerProduct", "max_pool": "Pooling",
    "avg_pool": "Pooling", "relu": "ReLU", "relu6": "ReLU6", "prelu": "PReLU", "elu": "ELU", "tanh": "TanH",
    "sigmoid": "Sigmoid", "softmax": "Softmax", "log_softmax": "Softmax", "batch_norm": "BatchNorm",
    "scale": "Scale", "bias": "Bias", "concat": "Concat", "eltwise": "Eltwise", "flatten": "Flatten",
    "reshape": "Reshape", "permute": "Permute", "prior_box": "PriorBox", "detection_output": "DetectionOutput",
    "normalize": "Normalize", "lrn": "LRN", "dropout": "Dropout", "identity": "Identity", "region": "Region",
    "yolo": "Region", "reorg": "Reorg", "resize": "Resize", "interp": "Interp", "slice": "Slice", "split": "Split",
    "power": "Power", "crop": "Crop", "pad": "Padding", "shuffle_channel": "ShuffleChannel", "mvn": "MVN",
    "abs": "AbsVal", "bnll": "BNLL", "exp": "Exp", "log": "Log", "shortcut": "Eltwise", "route": "Concat",
}


# cv2's Torch importer names some layers differently from the same op read from Caffe: its layer
# classes for nn.PReLU (ChannelsPReLU), nn.Padding (its own Padding), nn.ShaveImage (a Slice),
# nn.Normalize, nn.InstanceNormalization (MVN), nn.Parallel's select (a Reshape), nn.DepthConcat
_CV2_TORCH_TYPES = {
    "prelu": "ChannelsPReLU", "torch_padding": "Padding", "torch_shave": "Slice", "torch_select": "Reshape",
    "lp_normalize": "Normalize", "instance_norm": "MVN", "depth_concat": "Concat",
}


def _cv2_type(op: str) -> str:
    return _CV2_TYPES.get(op, "".join(w.capitalize() for w in op.split("_")))


class Layer:
    """cv2.dnn.Layer look-alike from :meth:`Net.getLayer`: ``name``, ``type`` (cv2's type name),
    ``blobs`` (the learned arrays, float32, a 1-D bias shaped as cv2 shows it: (1, n) for
    InnerProduct, else (n, 1)),
    ``outputNameToIndex(name)``."""

    def __init__(self, name: str, type: str, blobs: list[np.ndarray], outputs: Sequence[str] = ()) -> None:
        self.name = name
        self.type = type
        self.blobs = blobs
        self.preferableTarget = DNN_TARGET_CPU
        self._outputs = tuple(outputs)

    def outputNameToIndex(self, outputName: str) -> int:  # noqa: N802, N803
        """Index of the layer's output called ``outputName`` (its first output answers to the
        layer name too); -1 when it has none."""
        if outputName in self._outputs:
            return self._outputs.index(outputName)
        return 0 if outputName == self.name else -1

    def __repr__(self) -> str:
        return f"<refnet.dnn.Layer {self.name!r} type {self.type!r}>"


class Net:
    """cv2.dnn.Net look-alike wrapping a :class:`refnet.Net` (``Net()`` is an empty net, as in cv2).

    ``precision`` (None = the module's ``dnn.precision``) picks refnet's fast float32 or
    reference float64 kernels for :meth:`forward`.
    """

    def __init__(self, net: Any = None, *, precision: str | None = None) -> None:
        self.net = net
        self.precision = precision
        self._inputs: dict[str, np.ndarray] = {}
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._quirks = quirks  # the semantics the model was read with
        self._missing_weights: str = ""  # a prototxt read without its caffemodel: what forward lacks
        # an ONNX model with symbolic input dims: (file, declared inputs); its graph is built (again)
        # for the shapes of the blobs given to setInput, as cv2 sizes its net at the first forward
        self._onnx_dynamic: tuple[PathLike, dict[str, Any]] | None = None
        self._last_seconds = 0.0
        self.backend = DNN_BACKEND_DEFAULT
        self.target = DNN_TARGET_CPU
        self.fusion = True

    # ---- cv2.dnn.Net API -----------------------------------------------------------------------------
    def empty(self) -> bool:
        """True when no model is loaded (``cv2.dnn.Net()``)."""
        if self._onnx_dynamic is not None:
            return False
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
        self._need(built=False)
        ins = list(self._onnx_dynamic[1]) if self._onnx_dynamic is not None else self.net.input_names
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
        if self._onnx_dynamic is not None:
            self._build({k: v.shape for k, v in self._inputs.items()})

    def forward(self, outputName: str | Sequence[str] | None = None) -> Any:  # noqa: N803
        """Run the net. ``None``/``""``: the last layer's output (cv2's rule); a name: that layer's
        (first) output array; a list/tuple of names: a tuple of arrays in that order (an empty one:
        the last layer's output, in a tuple)."""
        self._need()
        if self._missing_weights:
            raise RefnetError(self._missing_weights)
        missing = [k for k in self.net.input_names if k not in self._inputs]
        if missing:
            raise RefnetError(f"forward: call setInput() first; input(s) {missing} have no blob")
        single = outputName is None or isinstance(outputName, str)
        if single:
            names = [outputName or self.net.layer_names[-1]]
        else:  # an empty list is the default output, in a tuple (as cv2 answers forward([]))
            names = [str(n) for n in outputName] or [self.net.layer_names[-1]]  # type: ignore[union-attr]
        t0 = time.perf_counter()
        out = self.net.forward(dict(self._inputs), outputs=names, precision=self._precision())
        self._last_seconds = time.perf_counter() - t0
        return out[names[0]] if single else tuple(out[n] for n in names)

    def getLayerNames(self) -> tuple[str, ...]:  # noqa: N802
        """All layer names in cv2's order (the input layer excluded), as cv2 4.x returns them."""
        if self._onnx_dynamic is not None:
            self._need()
        return tuple(self.net.layer_names) if self.net is not None else ()

    def getLayerId(self, layer: str) -> int:  # noqa: N802
        """cv2's 1-based layer id (0 is cv2's hidden input layer); -1 for an unknown name."""
        try:
            return self.getLayerNames().index(layer) + 1
        except ValueError:
            return -1

    def getUnconnectedOutLayersNames(self) -> tuple[str, ...]:  # noqa: N802
        """Names of the layers whose outputs nothing consumes."""
        if self._onnx_dynamic is not None:
            self._need()
        return tuple(self.net.output_names) if self.net is not None else ()

    def getUnconnectedOutLayers(self) -> np.ndarray:  # noqa: N802
        """1-based ids of the unconnected output layers, an int32 array as cv2 4.x returns."""
        ids = [self.getLayerId(n) for n in self.getUnconnectedOutLayersNames()]
        return np.asarray([i for i in ids if i > 0], dtype=np.int32)

    def getPerfProfile(self) -> tuple[int, np.ndarray]:  # noqa: N802
        """(ticks of the last forward, per-layer timings): ticks are nanoseconds (cv2's tick
        frequency on Linux); refnet does not time layers, so the per-layer array is empty."""
        return int(self._last_seconds * 1e9), np.zeros((0, 1), dtype=np.float64)

    def getLayer(self, layerId: int | str) -> Layer:  # noqa: N802, N803
        """The layer with cv2's 1-based id or name (0 is cv2's hidden input layer ``_input``)."""
        self._need()
        if isinstance(layerId, (int, np.integer)) and not isinstance(layerId, bool):
            i = int(layerId)
            if i == 0:
                return Layer("_input", "", [], tuple(self.net.input_names))  # cv2: an empty type here
            names = self.getLayerNames()
            if not 0 < i <= len(names):
                raise IndexError(f"getLayer: no layer with id {i} (ids are 0..{len(names)})")
            name = names[i - 1]
        else:
            name = str(layerId)
        try:
            node = self.net.graph.node(name)
        except KeyError:
            raise KeyError(f"getLayer: no layer named {name!r}") from None
        darknet = self.net.graph.framework == "darknet"
        # cv2's Darknet and Torch importers keep BatchNorm's running statistics first
        stats_first = node.op == "batch_norm" and self.net.graph.framework in ("darknet", "torch")
        order = ("mean", "var", "weight", "bias") if stats_first else (
            "weight", "bias", "mean", "var", "slope", "scale")
        blobs = [np.asarray(node.params[k], np.float32) for k in order if node.params.get(k) is not None]
        if node.op in ("region", "yolo") and node.attrs.get("anchors"):  # cv2 keeps the anchors as a blob
            blobs.append(np.asarray(node.attrs["anchors"], np.float32))
        # cv2 keeps 1-D blobs as (1, n) rows for InnerProduct and Darknet layers, as (n, 1) columns otherwise
        row = node.op == "linear" or darknet
        blobs = [(b.reshape(1, -1) if row else b.reshape(-1, 1)) if b.ndim == 1 else b for b in blobs]
        return Layer(name, self._type(node.op), blobs, node.outputs)

    def _type(self, op: str) -> str:
        if op == "identity" and self.net.graph.framework == "caffe":
            return "Dropout"  # Caffe's only identity layer at inference (cv2 keeps its type name)
        if self.net.graph.framework == "torch" and op in _CV2_TORCH_TYPES:
            return _CV2_TORCH_TYPES[op]
        return _cv2_type(op)

    def getLayerTypes(self) -> tuple[str, ...]:  # noqa: N802
        """The distinct cv2 layer type names in the net, sorted (with cv2's ``__NetInputLayer__``)."""
        if self.net is None and self._onnx_dynamic is None:
            return ()
        self._need()
        return tuple(sorted({self._type(n.op) for n in self.net.graph.nodes} | {"__NetInputLayer__"}))

    def setInputShape(self, inputName: str, shape: Sequence[int]) -> None:  # noqa: N802, N803
        """Declare the shape of input ``inputName`` (used by getLayersShapes/getFLOPS without a shape;
        an ONNX model with symbolic input dims is built for it)."""
        self._need(built=False)
        ins = list(self._onnx_dynamic[1]) if self._onnx_dynamic is not None else self.net.input_names
        if inputName not in ins:
            raise KeyError(f"setInputShape: the net has no input {inputName!r}; its inputs are {list(ins)}")
        self._input_shapes[inputName] = tuple(int(d) for d in shape)
        if self._onnx_dynamic is not None:
            self._build(self._input_shapes)

    def _shape_map(self, netInputShape: Sequence[int] | Sequence[Sequence[int]] | None  # noqa: N803
                   ) -> dict[str, tuple[int, ...]]:
        ins = list(self.net.input_names)
        if netInputShape is None or len(netInputShape) == 0:
            shapes = {k: self._input_shapes.get(k) or self.net.input_shapes.get(k) for k in ins}
        elif isinstance(netInputShape[0], (int, np.integer)):
            shapes = {ins[0]: tuple(int(d) for d in netInputShape)}  # type: ignore[union-attr]
        else:
            shapes = {k: tuple(int(d) for d in s) for k, s in zip(ins, netInputShape)}  # type: ignore[union-attr]
        missing = [k for k in ins if not shapes.get(k)]
        if missing:
            raise ShapeError(f"the shape of input(s) {missing} is not known: pass netInputShape or call setInputShape")
        return shapes  # type: ignore[return-value]

    def getLayersShapes(self, netInputShape: Any = None) -> tuple[np.ndarray, tuple, tuple]:  # noqa: N802, N803
        """(layer ids, input shapes per layer, output shapes per layer) for ``netInputShape`` as
        cv2 returns them: ids 0 (the input layer) .. n as an int32 array, each shape an int32 array."""
        self._build_for(netInputShape)
        self._need()
        shapes = dict(self.net.infer_shapes(self._shape_map(netInputShape)))
        ins = tuple(np.asarray(shapes[k], np.int32) for k in self.net.input_names)
        ids, in_s, out_s = [0], [ins], [ins]
        for i, name in enumerate(self.getLayerNames(), 1):
            node = self.net.graph.node(name)
            ids.append(i)
            in_s.append(tuple(np.asarray(shapes[t], np.int32) for t in node.inputs))
            outs = [list(shapes[t]) for t in node.outputs]
            if node.op == "detection_output":  # data-dependent rows: cv2 reports its upper bound keep_top_k
                from refnet.ops.registry import attrs

                k = int(attrs(node)["keep_top_k"])
                outs = [[k if d == -1 and k > 0 else d for d in o] for o in outs]
            out_s.append(tuple(np.asarray(o, np.int32) for o in outs))
        return np.asarray(ids, np.int32), tuple(in_s), tuple(out_s)

    def getFLOPS(self, netInputShape: Any = None) -> int:  # noqa: N802, N803
        """FLOPs of one forward pass as refnet counts them: 2 x multiply-adds, grouped
        convolutions per group (cv2's getFLOPS ignores ``group`` and adds one per output for
        the bias, so it is higher; `refnet info` shows both, docs/cv2-deviations.md)."""
        from refnet.info import model_info

        self._build_for(netInputShape)
        self._need()
        return 2 * model_info(self.net, self._shape_map(netInputShape), cv2_flops=False).total_macs

    # ---- helpers -------------------------------------------------------------------------------------------
    def _need(self, built: bool = True) -> None:
        if self.empty():
            raise RefnetError("the net is empty: load a model with readNet/readNetFromCaffe/... first")
        if built and self.net is None:  # an ONNX model with symbolic input dims, no shapes given yet
            path, ins = self._onnx_dynamic  # type: ignore[misc]
            dims = ", ".join(f"{k} {v}" for k, v in ins.items())
            raise RefnetError(f"{path} declares input(s) with symbolic dims ({dims}): refnet builds the graph for "
                              "the input shapes; call setInput() (or setInputShape()) first")

    def _build_for(self, netInputShape: Any) -> None:  # noqa: N803
        """A dynamic ONNX model not built yet: build it for getLayersShapes/getFLOPS's shape(s)."""
        if self._onnx_dynamic is None or self.net is not None or netInputShape is None or len(netInputShape) == 0:
            return
        ins = list(self._onnx_dynamic[1])
        if isinstance(netInputShape[0], (int, np.integer)):
            self._build({ins[0]: tuple(int(d) for d in netInputShape)})
        else:
            self._build({k: tuple(int(d) for d in sh) for k, sh in zip(ins, netInputShape)})

    def _build(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """(Re)read the dynamic ONNX model for ``shapes`` once every input has one."""
        from refnet.net import load_onnx

        path, ins = self._onnx_dynamic  # type: ignore[misc]
        if any(k not in shapes for k in ins):
            return
        want = {k: tuple(int(d) for d in shapes[k]) for k in ins}
        if self.net is None or dict(self.net.input_shapes) != want:
            self.net = load_onnx(path, quirks=self._quirks, input_shapes=want)

    def _precision(self) -> str:
        return self.precision or precision

    def __repr__(self) -> str:
        return f"<refnet.dnn.Net {self.net!r}>" if self.net is not None else "<refnet.dnn.Net empty>"


# ---- readers ----------------------------------------------------------------------------------------------
def _opt(p: PathLike | None) -> PathLike | None:
    return None if p is None or str(p) == "" else p


def _read(net: Any) -> Net:
    out = Net(net)
    _READ.add(out)
    return out


def readNetFromCaffe(prototxt: PathLike, caffeModel: PathLike | None = None) -> Net:  # noqa: N802, N803
    """Caffe deploy .prototxt (+ optional .caffemodel), read by refnet's own parser. A prototxt
    alone loads as in cv2 (layer names, types and shapes work); ``forward`` then says which
    layers have no weights."""
    from refnet.net import load_caffe

    if _opt(caffeModel) is not None:
        return _read(load_caffe(_opt(prototxt), _opt(caffeModel), quirks=quirks))
    try:
        return _read(load_caffe(_opt(prototxt), None, quirks=quirks))
    except RefnetError as e:
        if "has no weights" not in str(e):
            raise
    return _architecture_only(prototxt)


def _architecture_only(prototxt: PathLike) -> Net:
    """A Net of ``prototxt`` with placeholder (all-ones, shape-only) weights whose forward refuses."""
    from refnet.archs import _V1_WEIGHTED, _WEIGHTED, _caffemodel_bytes, _placeholder_blobs
    from refnet.net import Net as RefNet
    from refnet.weights_import.caffe import parse_net_text, read_caffe

    msg = parse_net_text(Path(prototxt).read_bytes(), file=str(prototxt))
    layers = [(L, L.get("type")) for L in msg.get("layer")] + [
        (L, _V1_WEIGHTED.get(L.get("type"), str(L.get("type")))) for L in msg.get("layers")]
    ph = [(L.get("name"), t, _placeholder_blobs(t, L)) for L, t in layers if t in _WEIGHTED]
    net = _read(RefNet(read_caffe(prototxt, caffemodel_bytes=_caffemodel_bytes(ph), quirks=quirks)))
    names = [n for n, _, _ in ph]
    listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    net._missing_weights = (f"forward: the net was read from {prototxt} alone, without its .caffemodel, so layers "
                            f"{listed} have no weights (cv2.dnn fails the same way: 'Assertion failed "
                            "!blobs.empty()'); pass the weights: readNetFromCaffe(prototxt, caffeModel)")
    return net


def readNetFromTorch(model: PathLike, isBinary: bool = True, evaluate: bool = True) -> Net:  # noqa: N802, N803
    """Torch7 .t7/.net model; refnet tells binary from ASCII itself, so ``isBinary`` is only
    accepted, and the net is always in evaluation mode (cv2's ``evaluate=True``)."""
    from refnet.net import load_torch

    return _read(load_torch(model, quirks=quirks))


def readNetFromDarknet(cfgFile: PathLike, darknetModel: PathLike | None = None) -> Net:  # noqa: N802, N803
    """Darknet .cfg (+ optional .weights). A cfg alone loads as in cv2 (layer names, types and
    shapes work); ``forward`` then says which layers have no weights."""
    from refnet.net import load_darknet

    if _opt(darknetModel) is not None:
        return _read(load_darknet(cfgFile, _opt(darknetModel), quirks=quirks))
    net = _read(load_darknet(cfgFile, "zeros", quirks=quirks))  # the architecture, zero placeholders
    names = [n.name for n in net.net.graph.nodes if n.params]
    if names:
        listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        net._missing_weights = (f"forward: the net was read from {cfgFile} alone, without its .weights, so layers "
                                f"{listed} have no weights (cv2.dnn fails the same way: 'Assertion failed "
                                "!blobs.empty()'); pass the weights: readNetFromDarknet(cfgFile, darknetModel)")
    return net


def readNetFromONNX(onnxFile: PathLike) -> Net:  # noqa: N802, N803
    """ONNX model, read by refnet's own reader (the graph is built for its declared input shapes,
    or, where they are symbolic, for the shapes of the blobs given to setInput)."""
    from refnet.net import load_onnx
    from refnet.weights_import.onnx import declared_inputs

    try:
        return _read(load_onnx(onnxFile, quirks=quirks))
    except ShapeError as e:
        if "no fixed shape" not in str(e):
            raise
    # symbolic input dims (a batch of -1, '?' height and width): cv2 reads the model and sizes it at
    # the first forward; here the graph is built when setInput (or setInputShape) gives the shapes
    net = _read(None)
    net._onnx_dynamic = (onnxFile, declared_inputs(onnxFile))
    return net


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
    after each keep while above 0.5); ``top_k`` > 0 keeps that many candidates; a box of negative
    width or height has cv2's signed area ``w * h`` (the kernel's "cv2" overlap rule). Returns the
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
    keep = nms(xyxy, s, float(nms_threshold), float(score_threshold), int(top_k) if top_k > 0 else None, float(eta))
    return np.asarray(keep, dtype=np.int32) if len(keep) else ()


def NMSBoxesBatched(bboxes: Sequence[Sequence[float]] | np.ndarray, scores: Sequence[float] | np.ndarray,  # noqa: N802
                    class_ids: Sequence[int] | np.ndarray, score_threshold: float, nms_threshold: float,
                    eta: float = 1.0, top_k: int = 0) -> Any:
    """cv2.dnn.NMSBoxesBatched: NMS within each class only. As cv2 does it: every box is moved by
    ``class_id * (max_coordinate + 1)`` (the largest x, y, x + w or y + h of all boxes) along x
    and y, so boxes of different classes cannot overlap, then :func:`NMSBoxes` runs once."""
    b = np.asarray(bboxes, dtype=np.float64)
    ids = np.asarray(class_ids)
    if b.size == 0 and np.asarray(scores).size == 0 and ids.size == 0:
        return ()
    if b.ndim != 2 or b.shape[1] != 4:
        raise ShapeError("NMSBoxesBatched: bboxes must be N boxes (x, y, w, h)", expected="(N, 4)", got=b.shape)
    if ids.ndim != 1 or len(ids) != len(b):
        raise ShapeError("NMSBoxesBatched: one class id per box", expected=(len(b),), got=ids.shape)
    top = max(0.0, float(np.max(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1))))
    off = ids.astype(np.float64) * (top + 1.0)
    moved = b.copy()
    moved[:, 0] += off
    moved[:, 1] += off
    return NMSBoxes(moved, scores, score_threshold, nms_threshold, eta, top_k)


def imagesFromBlob(blob_: np.ndarray) -> tuple[np.ndarray, ...]:  # noqa: N802
    """cv2.dnn.imagesFromBlob: an NxCxHxW blob back to N HxWxC float32 images (no mean or scale undone)."""
    a = np.asarray(blob_)
    if a.ndim != 4:
        raise ShapeError("imagesFromBlob: the blob must be 4-D", expected="(N, C, H, W)", got=a.shape)
    return tuple(np.ascontiguousarray(a[i].transpose(1, 2, 0), dtype=np.float32) for i in range(a.shape[0]))


# ---- every public function and Net method raises errors that are also cv2.error ------------------------
for _n in ("readNet", "readNetFromCaffe", "readNetFromTorch", "readNetFromDarknet", "readNetFromONNX", "blobFromImage",
           "blobFromImages", "NMSBoxes", "NMSBoxesBatched", "imagesFromBlob"):
    globals()[_n] = _cv2_errors(globals()[_n])
for _n, _f in list(vars(Net).items()):
    if callable(_f) and not _n.startswith("_"):
        setattr(Net, _n, _cv2_errors(_f))
for _n, _f in list(vars(Layer).items()):
    if callable(_f) and not _n.startswith("_"):
        setattr(Layer, _n, _cv2_errors(_f))

# ---- `dnn.quirks = ...` after a read: say that it does not change the nets already read ------------------
_READ: weakref.WeakSet = weakref.WeakSet()


class _DnnModule(types.ModuleType):
    """This module's class: ``precision`` and ``quirks`` are checked when assigned (not at the next
    read or forward), and assigning ``quirks`` warns when nets read with other quirks are alive."""

    @property
    def precision(self) -> str:
        return self.__dict__["precision"]

    @precision.setter
    def precision(self, value: str) -> None:
        from refnet.net import PRECISIONS

        if value not in PRECISIONS:
            raise ValueError(f"dnn.precision must be one of {PRECISIONS}, got {value!r}")
        self.__dict__["precision"] = value

    @property
    def quirks(self) -> str:
        return self.__dict__["quirks"]

    @quirks.setter
    def quirks(self, value: str) -> None:
        from refnet.net import QUIRKS

        if value not in QUIRKS:
            raise ValueError(f"dnn.quirks must be one of {QUIRKS}, got {value!r}")
        stale = [n for n in list(_READ) if n._quirks != value]
        if stale:
            warnings.warn(f"dnn.quirks = {value!r} has no effect on the {len(stale)} net(s) already read with quirks "
                          f"{stale[0]._quirks!r}: quirks are applied when a model is read; read it again",
                          UserWarning, stacklevel=2)
        self.__dict__["quirks"] = value


sys.modules[__name__].__class__ = _DnnModule
