"""Caffe importer: deploy ``.prototxt`` (text) + ``.caffemodel`` (wire format) -> refnet Graph.

Reads what cv2.dnn 4.x reads: V2 ``layer`` and legacy V1 ``layers`` (enum types, V1 extras
such as ``blobs_lr`` ignored), inputs from ``input`` + ``input_shape``/``input_dim`` or
``Input`` layers, BlobProto data as float ``data``, ``double_data`` or OpenCV/NVIDIA fp16
``raw_data``, with ``shape`` or legacy num/channels/height/width. Weights are matched to
layers by name as cv2 does (the first binary layer of that name that still has blobs), and
a caffemodel that carries its layer definitions loads without a prototxt. Layer names and
order are cv2's (duplicates become ``name_1``, ``name_2``, ...; cv2 4.x names a Convolution
layer after its first top); an in-place layer (``top == bottom``) gets its own tensor, so
every layer stays addressable by its name.

Semantics are Caffe's; ``quirks="cv2"`` reproduces where cv2.dnn deviates (listed in
:data:`CV2_QUIRKS` and recorded per layer in ``graph.meta["quirks"]``).
"""

from __future__ import annotations

import math
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.graph import Graph, Node, freeze, output_name
from refnet.weights_import import _wirescan as WS
from refnet.weights_import._scanpolicy import compiled_scan_pays, spent_in_python
from refnet.weights_import._util import AppliedQuirk, LayerTable, arity_expected, check_quirks_mode, paused_gc
from refnet.weights_import._wirescan import OK as SCAN_OK
from refnet.weights_import._wirescan import scan_weights
from refnet.weights_import.caffe_schema import ENUMS, MESSAGES
from refnet.weights_import.protobuf import Message, Reader, decode_message, decode_weights
from refnet.weights_import.prototxt import parse_message

__all__ = ["read_caffe", "SUPPORTED_TYPES", "CV2_QUIRKS", "parse_net_text", "parse_net_binary"]

CV2_QUIRKS = {
    "lrn_k": "LRN: cv2 ignores Caffe's k and uses 1",
    "corner_size": "DetectionOutput code_type CORNER_SIZE: cv2 decodes it as CORNER (its "
                   "prototxt parser even rejects the value; it arrives through cv2's "
                   "unknown-field fallback)",
    "concat_dim": "Concat concat_dim: cv2 ignores it (uses axis, default 1)",
    "slice_dim": "Slice slice_dim: cv2 ignores it (uses axis, default 1)",
    "mvn_eps": "MVN: cv2 divides by sqrt(var + eps), Caffe by (std + eps)",
    "bn_batch_stats": "BatchNorm use_global_stats=false: cv2 runs MVN with sqrt(var + eps) and "
                      "then BatchNorm(mean 0, var 1), i.e. an extra 1/sqrt(1 + eps)",
    "ip_transpose": "InnerProduct transpose: cv2 ignores it (reads the (K, N) blob as (N, K))",
    "scale2_bias": "Scale with a second bottom and bias_term: cv2 ignores the second bottom "
                   "(y = x + bias)",
    "log_params": "Log: cv2 ignores base, scale and shift (computes ln x)",
    "prior_img_size": "PriorBox img_size/img_h/img_w: cv2 ignores them (uses the image input's "
                      "size)",
    "proposal": "Proposal: cv2 (PriorBox + DetectionOutput inside) ignores min_size, drops scores "
                "<= 0, rounds anchor sizes with floor(x + 0.5), never overlaps boxes less than a "
                "pixel apart in NMS and pads the rois with zero rows to post_nms_topn",
}

_V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold", "NONE": "",
}


# ---- reading the two files --------------------------------------------------------------------
# training-only sub-messages no importer step reads: checked, not built (see parse_message)
TRAINING_ONLY = frozenset({"ParamSpec", "FillerParameter"})


def parse_net_text(data: str | bytes, *, file: str = "<prototxt>", skip: frozenset[str] = frozenset()) -> Message:
    """Parse a text prototxt into a NetParameter message (``skip``: see parse_message)."""
    return parse_message(data, MESSAGES["NetParameter"], file=file, skip=skip)


def parse_net_binary(data: bytes | bytearray | memoryview, *, file: str = "<caffemodel>",
                     weights_only: bool = False) -> Message:
    """Decode a binary caffemodel (NetParameter, wire format); ``weights_only`` decodes just
    the layers' names, types and blobs and skips the rest. A malformed file's error names the
    layer whose bytes hold the bad offset, when that layer's name can be read."""
    try:
        if weights_only:
            return decode_weights(data, file)
        return decode_message(Reader(data, file=file), MESSAGES["NetParameter"])
    except ModelFormatError as e:
        name = _layer_at(bytes(data), e.offset) if e.layer is None and e.offset is not None else None
        if name is None:
            raise
        raise ModelFormatError(e.message, file=e.file, offset=e.offset, expected=e.expected,
                               layer=name) from None


def _layer_at(buf: bytes, offset: int) -> str | None:
    """The name of the top-level layer (V2 ``layer`` or V1 ``layers``) whose bytes contain
    ``offset``, read with a bounded walk of the top-level fields; None when there is none or
    the bytes around it are too broken to tell."""
    def varint(pos: int) -> tuple[int, int]:
        v = shift = 0
        for i in range(pos, min(pos + 10, len(buf))):
            v |= (buf[i] & 0x7F) << shift
            if buf[i] < 0x80:
                return v, i + 1
            shift += 7
        raise ValueError

    try:
        pos = 0
        while pos < len(buf) and pos <= offset:
            start = pos
            tag, pos = varint(pos)
            wt, num = tag & 7, tag >> 3
            if wt == 0:
                pos = varint(pos)[1]
            elif wt in (1, 5):
                pos += 8 if wt == 1 else 4
            elif wt == 2:
                n, pos = varint(pos)
                if num in (2, 100) and start <= offset < pos + n:  # a truncated layer points at its tag
                    return _layer_name(buf, pos, min(pos + n, len(buf)), 4 if num == 2 else 1, varint)
                pos += n
            else:
                return None
    except ValueError:
        return None
    return None


def _layer_name(buf: bytes, pos: int, end: int, name_no: int, varint: Callable) -> str | None:
    while pos < end:
        tag, pos = varint(pos)
        wt, num = tag & 7, tag >> 3
        if wt == 2:
            n, pos = varint(pos)
            if num == name_no:
                return buf[pos:min(pos + n, end)].decode("utf-8", errors="replace")[:200] or None
            pos += n
        elif wt == 0:
            pos = varint(pos)[1]
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
        else:
            return None
    return None


@dataclass(slots=True)
class _Layer:
    """A layer definition normalised over V1/V2: the V2 type name and the raw message."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    msg: Message | None  # None for a weights layer from the compiled index (its blobs are in arrays)
    blobs: list[Message]
    arrays: list[np.ndarray] | None = None  # the blobs already decoded (see _scanned_weights)

    def param(self, name: str) -> Message:
        """The ``<name>`` parameter message, or an empty one (all defaults) when absent."""
        v = self.msg.values.get(name)
        if v is not None:  # only a field of this message type can be in its values
            return v
        f = self.msg.type.by_name.get(name)
        ssd = name + "_ssd"
        if ssd in self.msg.type.by_name and self.msg.has(ssd):
            return self.msg.get(ssd)  # a binary file written by the SSD fork
        ref = (f or MESSAGES["LayerParameter"].by_name[name]).ref
        return Message(MESSAGES[ref], self.msg.where, self.msg.file, self.msg.text)  # type: ignore[index]

    def has_param(self, name: str) -> bool:
        return name in self.msg.type.by_name and self.msg.has(name)

    def error(self, message: str, fld: str | None = None, expected: str | None = None
              ) -> ModelFormatError:
        return self.msg.error(message, fld, expected=expected, layer=self.name)


def _layers_of(net: Message) -> list[_Layer]:
    v2 = net.values.get("layer", [])
    v1 = net.values.get("layers", [])
    if v2 and v1:
        raise net.error("the net mixes V2 'layer' and V1 'layers' definitions", "layers",
                        expected="only one of the two")
    out: list[_Layer] = []
    for m in v2:  # name and type default to "" (LayerParameter and the weights view alike)
        vals = m.values  # the message's own lists, not copies (nothing changes them): less memory per layer
        out.append(_Layer(vals.get("name", ""), vals.get("type", ""), vals.get("bottom") or [],
                          vals.get("top") or [], m, vals.get("blobs") or []))
    for m in v1:
        vals = m.values
        if "layer" in vals:
            raise m.error("V0 (pre-2014) layer definitions are not supported; upgrade the net "
                          "with Caffe's upgrade_net_proto_text", "layer")
        out.append(_Layer(vals.get("name", ""), _V1_TYPE_NAMES[vals.get("type", "NONE")],
                          vals.get("bottom") or [], vals.get("top") or [], m, vals.get("blobs") or []))
    return out


# ---- blobs ---------------------------------------------------------------------------------------
MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes
INT_MAX = (1 << 31) - 1  # Caffe's blob size limit ("blob size exceeds INT_MAX")
_BLOB_SHAPE_RULE = f"at most {MAX_BLOB_AXES} non-negative dims, at most {INT_MAX} elements (Caffe's Blob rules)"


def blob_array(b: Message, layer: str) -> np.ndarray:
    """A BlobProto as an array of its own dtype (float32 data/raw, float64 double_data).

    Shape: legacy num/channels/height/width when any is present, else ``shape``, else a
    scalar (shape (1,)), as Caffe and cv2 do. The element count is checked against the shape,
    and a shape has at most 32 axes (Caffe's kMaxBlobAxes).
    """
    data, shape = _blob_values(b, layer)
    return np.array(data, dtype=_native(data)).reshape(shape)  # copy: native byte order, writable


def _native(data: np.ndarray) -> type:
    """The dtype a blob's values are kept in: float64 for double data, else float32 (fp16 widened)."""
    return np.float64 if data.dtype.itemsize == 8 else np.float32


def _blob_values(b: Message, layer: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """A BlobProto's values as decoded (a view into the file's bytes, not copied) and its
    shape, checked as :func:`blob_array` describes."""
    vals = b.values
    if "num" in vals or "channels" in vals or "height" in vals or "width" in vals:
        shape = tuple(int(vals.get(k, 0)) for k in ("num", "channels", "height", "width"))
    elif "shape" in vals:
        shape = tuple(vals["shape"].values.get("dim", ()))
    else:
        shape = (1,)
    if len(shape) > MAX_BLOB_AXES:
        raise b.error(f"blob has {len(shape)} axes", "shape", layer=layer,
                      expected=f"at most {MAX_BLOB_AXES} axes (Caffe's kMaxBlobAxes)")
    if shape and min(shape) < 0:
        raise b.error(f"blob has a negative dimension {shape}", layer=layer, expected="dims >= 0")
    count = math.prod(shape)
    data = vals.get("data")
    if data is None or not len(data):
        data = vals.get("double_data")
        if data is None or not len(data):
            data = _raw_blob_data(b, layer, shape, count)
    if data.size != count:
        raise b.error(f"blob shape {shape} needs {count} values but the blob holds {data.size}",
                      layer=layer, expected=f"{count} values")
    if count == 0 and math.prod(d for d in shape if d) > INT_MAX:  # numpy cannot shape it either
        raise b.error(f"empty blob shape {shape} exceeds {INT_MAX} elements in its other dims", "shape",
                      layer=layer, expected=_BLOB_SHAPE_RULE)
    return data, shape


def _gather_blobs(weights: list[_Layer], used: set[str]) -> None:
    """Copy the blobs of the binary layers named in ``used`` out of the file's bytes into one
    owned, aligned array per dtype (float32, float64), in one pass, and give each layer its
    blobs as views into it (``_Layer.arrays``), as the compiled index does. One copy instead
    of one per blob, and nothing keeps a view into the file's bytes (a memory map may be closed
    or the file rewritten once the load returns). A layer whose blobs do not check out is left
    to :meth:`_GraphAssembly.blobs_of`, which raises the error if a layer uses it, as before."""
    todo: list[tuple[_Layer, list[tuple[np.ndarray, tuple[int, ...]]]]] = []
    for w in weights:
        if w.arrays is None and w.blobs and w.name in used:
            try:
                todo.append((w, [_blob_values(b, w.name) for b in w.blobs]))
            except ModelFormatError:
                continue
    flat: dict[type, np.ndarray] = {}
    for native in (np.float32, np.float64):
        parts = [d for _, blobs in todo for d, _ in blobs if _native(d) is native]
        if parts:
            flat[native] = np.concatenate(parts, dtype=native)  # fp16 widened, byte order made native
    at = dict.fromkeys(flat, 0)
    for w, blobs in todo:
        arrays = []
        for d, shape in blobs:
            native = _native(d)
            arrays.append(flat[native][at[native]:at[native] + d.size].reshape(shape))
            at[native] += d.size
        w.arrays = arrays


_RAW_DTYPES = {"FLOAT16": np.dtype("<f2"), "FLOAT": np.dtype("<f4"), "DOUBLE": np.dtype("<f8")}
_V1_TYPE_OK = np.zeros(max(ENUMS["V1LayerType"].values()) + 1, np.bool_)  # which V1 type numbers exist
_V1_TYPE_OK[list(ENUMS["V1LayerType"].values())] = True
_SCAN_LAYER = [WS.L_NAME, WS.L_NAME_LEN, WS.L_BLOB0, WS.L_NBLOBS]
_LE_F32, _LE_F64 = np.dtype("<f4"), np.dtype("<f8")
SCAN_PLACED = [WS.B_OFF, WS.B_SHAPE0, WS.B_SHAPE_N, WS.B_COUNT, WS.B_DST, WS.B_BITS]


def _scanned_weights(buf: bytes | mmap.mmap) -> list[_Layer] | None:
    """The caffemodel's layers that carry blobs, each with its blobs as arrays, from the
    compiled index (weights_import/_wirescan.py); None when the file is not of the plain
    well-formed kind the index covers (then the schema-driven decoder reads it, and reports
    what is wrong). Accepts exactly what that decoder plus :func:`blob_array` accept, with
    the same result; tests/fuzz/test_fuzz_caffemodel.py checks it on every mutated file."""
    u8 = np.frombuffer(buf, np.uint8)
    status, layer_rows, blob_rows, dims = scan_weights(u8, _V1_TYPE_OK)
    if status != SCAN_OK:
        return None
    blob_rows = blob_rows[:, SCAN_PLACED].tolist()
    dims = dims.tolist()
    # all float32 (float64) blobs' bytes gathered into one aligned, writable array, in blob order
    flat = {bits: np.concatenate(parts).view(dt).astype(dt.newbyteorder("="), copy=False)
            for bits, dt in ((32, _LE_F32), (64, _LE_F64))
            if (parts := [u8[r[0]:r[0] + r[3] * bits // 8] for r in blob_rows if r[5] == bits])}
    out: list[_Layer] = []
    for name_at, name_len, b0, nb in layer_rows[layer_rows[:, WS.L_NBLOBS] > 0][:, _SCAN_LAYER].tolist():
        arrays = []
        for off, s0, sn, count, dst, bits in blob_rows[b0:b0 + nb]:
            shape = tuple(dims[s0:s0 + sn])
            if bits == 16:  # fp16 raw_data, widened to float32 as blob_array does
                arrays.append(np.frombuffer(buf, "<f2", count, off).astype(np.float32).reshape(shape))
            else:
                arrays.append(flat[bits][dst:dst + count].reshape(shape))
        name = buf[name_at:name_at + name_len].decode("utf-8") if name_at >= 0 else ""  # checked: UTF-8
        out.append(_Layer(name, "", [], [], None, [], arrays))
    return out


def _raw_blob_data(b: Message, layer: str, shape: tuple[int, ...], count: int) -> np.ndarray:
    """``raw_data`` (OpenCV/NVIDIA fp16, or float/double) as an array, else an empty blob."""
    if not b.has("raw_data"):
        return np.empty(0, np.float32)
    raw = b.get("raw_data")
    kind = b.get("raw_data_type")
    dt = _RAW_DTYPES.get(kind)
    if dt is None:
        raise b.error(f"raw_data of type {kind} is not supported", "raw_data_type",
                      expected="FLOAT16, FLOAT or DOUBLE", layer=layer)
    if len(raw) != count * dt.itemsize:
        raise b.error(f"raw_data holds {len(raw)} bytes but shape {shape} needs "
                      f"{count} x {dt.itemsize}", "raw_data", layer=layer, expected=f"{count * dt.itemsize} bytes")
    return np.frombuffer(raw, dt)


# ---- helpers for layer parameters -------------------------------------------------------------
def _hw(L: _Layer, p: Message, name: str, default: int | None) -> tuple[int, int]:
    """Caffe's ``<name>_h``/``<name>_w`` or ``<name>`` (1 value, or 2 for (h, w)).

    ``default`` is used when neither is given (None: the parameter is required). The
    ``_h``/``_w`` pair falls back on the schema default of each half (pad: 0; kernel and
    stride have none, so both halves must then be given, as Caffe checks).
    """
    pv = p.values
    hn, wn = _HW_NAMES[name]
    v = pv.get(name)
    if isinstance(v, list) and not v:
        v = None  # an empty repeated field (`pad: []`) counts as absent
    if hn in pv or wn in pv:
        h, w = pv.get(hn), pv.get(wn)
        if v is not None:
            raise L.error(f"either {name} or {hn}/{wn} may be given, not both", name, expected="one of the two")
        if h is None:
            h = p.type.by_name[hn].default
        if w is None:
            w = p.type.by_name[wn].default
        if h is None or w is None:
            raise L.error(f"{hn} and {wn} must be given together", hn if hn in pv else wn,
                          expected=f"both {hn} and {wn}")
        return int(h), int(w)
    if v is None:
        if default is None:
            raise L.error(f"{name} is required", name, expected=f"{name} (or {hn}/{wn})")
        return default, default
    vals = v if isinstance(v, list) else [v]
    if len(vals) == 1:
        return int(vals[0]), int(vals[0])
    if len(vals) == 2:
        return int(vals[0]), int(vals[1])
    raise L.error(f"{name} has {len(vals)} values; only 2-D (1 or 2 values) is supported", name,
                  expected="1 or 2 values")


_HW_NAMES = {"kernel_size": ("kernel_h", "kernel_w"), "stride": ("stride_h", "stride_w"),
             "pad": ("pad_h", "pad_w"), "dilation": ("dilation_h", "dilation_w")}


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in np.asarray(v, np.float64).reshape(-1))


@dataclass(slots=True)
class _Build:
    """What a layer builder returns: the node's op, attrs, params and extra graph inputs."""

    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    n_inputs: int | None = None  # keep only the first n bottoms (None: all)


class _BuildArgs:
    """What a layer builder is handed: the layer, its blobs as arrays, the quirks mode, and the
    graph's log of applied cv2 quirks (its bottoms and tops are checked against the builder's
    declared arity before it runs)."""

    __slots__ = ("L", "blobs", "quirks", "quirk_log", "node_name")

    def __init__(self, L: _Layer, blobs: list[np.ndarray], quirks: str,
                 quirk_log: list[AppliedQuirk], node_name: str) -> None:
        self.L = L
        self.blobs = blobs
        self.quirks = quirks
        self.quirk_log = quirk_log
        self.node_name = node_name

    def quirk(self, key: str, change: str, layer: str | None = None) -> bool:
        """True when quirks="cv2"; then records that quirk ``key`` made ``change`` to this layer
        (or to ``layer``). Call it only where the quirk changes what is built."""
        if self.quirks == "cv2":
            assert key in CV2_QUIRKS, key
            self.quirk_log.append(AppliedQuirk(layer or self.node_name, key, change))
            return True
        return False

    def need_blobs(self, lo: int, hi: int, what: str) -> None:
        n = len(self.blobs)
        if n == 0 and lo > 0:
            raise self.L.error(f"{self.L.type} layer has no weights: no blobs of this name in the "
                               "caffemodel (or no caffemodel given)", expected=what)
        if not lo <= n <= hi:
            raise self.L.error(f"{self.L.type} layer has {n} blobs", expected=what)


def _shape_mismatch(c: _BuildArgs, what: str, expected: Any, got: Any) -> ModelFormatError:
    return c.L.error(f"{what} does not match the layer parameters: expected {expected}, got {got}",
                     expected=str(expected))


# ---- builders: one per Caffe layer type --------------------------------------------------------
#: the builders by Caffe layer type, each with its number of bottoms and tops (checked in
#: _build_node before the builder runs: an int is exact, (lo, hi) a range, hi None unbounded)
layer = LayerTable("Caffe layer type", bottoms=1, tops=1)


@layer("Convolution", "ConvolutionDepthwise", "Deconvolution", bottoms=1, tops=1)
def _conv(c: _BuildArgs) -> _Build:
    L = c.L
    deconv = L.type == "Deconvolution"
    p = L.param("convolution_param")
    pv = p.values  # absent scalars take ConvolutionParameter's defaults (axis 1, group 1, bias)
    if pv.get("axis", 1) != 1:
        raise L.error("only axis 1 (NCHW) convolutions are supported", "convolution_param", expected="axis: 1")
    co = pv.get("num_output")
    if co is None or co <= 0:
        raise L.error("num_output is required and must be positive", "convolution_param", expected="num_output > 0")
    co = int(co)
    kh, kw = _hw(L, p, "kernel_size", None)
    sh, sw = _hw(L, p, "stride", 1)
    ph, pw = _hw(L, p, "pad", 0)
    dh, dw = _hw(L, p, "dilation", 1)
    g = int(pv.get("group", 1))
    if min(kh, kw, sh, sw, dh, dw, g) <= 0:
        raise L.error(f"kernel {(kh, kw)}, stride {(sh, sw)}, dilation {(dh, dw)} and group {g} must be positive",
                      "convolution_param", expected="values >= 1")
    if co % g:
        raise L.error(f"num_output {co} is not divisible by group {g}", "convolution_param",
                      expected="num_output a multiple of group")
    bias = bool(pv.get("bias_term", True))
    c.need_blobs(2 if bias else 1, 2 if bias else 1,
                 f"{'2 blobs (weights, bias)' if bias else '1 blob (weights; bias_term: false)'}")
    w = c.blobs[0]
    if w.ndim != 4:
        raise _shape_mismatch(c, "weight blob rank", 4, w.shape)
    if deconv:
        if w.shape[1] * g != co or w.shape[2:] != (kh, kw):
            raise _shape_mismatch(c, "deconvolution weights", f"(C_in, {co // g}, {kh}, {kw})",
                                  w.shape)
    elif w.shape[0] != co or w.shape[2:] != (kh, kw):
        raise _shape_mismatch(c, "convolution weights", f"({co}, C_in/{g}, {kh}, {kw})", w.shape)
    params = {"weight": w}
    if bias:
        if c.blobs[1].size != co:
            raise _shape_mismatch(c, "bias size", co, c.blobs[1].size)
        params["bias"] = c.blobs[1].reshape(co)
    attrs: dict[str, Any] = {"stride": (sh, sw), "pad": (ph, pw, ph, pw), "dilation": (dh, dw),
                             "groups": g}
    if deconv:
        attrs["output_padding"] = (0, 0)
    return _Build("deconv" if deconv else "conv", attrs, params)


@layer("Pooling", bottoms=1, tops=(1, 2))
def _pooling(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("pooling_param")
    method = p.get("pool")
    if method == "STOCHASTIC":
        raise UnsupportedLayerError(L.name, "Pooling", SUPPORTED_TYPES, file=L.msg.file,
                                    detail="pool: STOCHASTIC is not supported (random at "
                                           "training, weighted mean at test; cv2 lacks it too)")
    if method != "MAX" and len(L.top) > 1:
        raise L.error(f"Pooling layer has {len(L.top)} tops; only MAX pooling has a second (the mask)", "top",
                      expected="1 top(s)")
    glob = bool(p.get("global_pooling"))
    if glob:
        k = (0, 0)
    else:
        k = _hw(L, p, "kernel_size", None)
    s = _hw(L, p, "stride", 1)
    pad = _hw(L, p, "pad", 0)
    if not glob:
        if min(k) <= 0 or min(s) <= 0:
            raise L.error(f"kernel {k} and stride {s} must be positive", "pooling_param", expected="values >= 1")
        if pad[0] >= k[0] or pad[1] >= k[1]:
            raise L.error(f"pad {pad} must be smaller than the kernel {k} (Caffe rule)",
                          "pooling_param", expected="pad < kernel")
    if p.has("round_mode"):
        ceil = p.get("round_mode") == "CEIL"
    else:
        ceil = bool(p.get("ceil_mode"))
    attrs: dict[str, Any] = {"kernel": k, "stride": s, "pad": (pad[0], pad[1], pad[0], pad[1]),
                             "ceil_mode": ceil, "global_pooling": glob}
    if method == "AVE":
        attrs["divisor"] = "padded"
        return _Build("avg_pool", attrs)
    return _Build("max_pool", attrs)


@layer("InnerProduct", bottoms=1, tops=1)
def _inner_product(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("inner_product_param")
    if not p.has("num_output") or p.get("num_output") <= 0:
        raise L.error("num_output is required and must be positive", "inner_product_param",
                      expected="num_output > 0")
    n = int(p.get("num_output"))
    bias = bool(p.get("bias_term"))
    c.need_blobs(2 if bias else 1, 2 if bias else 1,
                 "2 blobs (weights, bias)" if bias else "1 blob (weights)")
    w = c.blobs[0]
    if w.size % n or w.size == 0:
        raise _shape_mismatch(c, "weight count", f"a multiple of num_output {n}", w.size)
    k = w.size // n
    lead = [d for d in w.shape[:-2] if d != 1] if w.ndim > 2 else []
    if lead or (w.ndim >= 2 and w.shape[-2:] not in ((n, k), (k, n))):
        raise _shape_mismatch(c, "weight shape", (k, n) if p.get("transpose") else (n, k), w.shape)
    transpose = bool(p.get("transpose")) and not c.quirk("ip_transpose", "transpose: true -> ignored (the (K, N) "
                                                                        "blob read as (N, K))")
    weight = w.reshape(k, n).T.copy() if transpose else w.reshape(n, k)
    params = {"weight": weight}
    if bias:
        if c.blobs[1].size != n:
            raise _shape_mismatch(c, "bias size", n, c.blobs[1].size)
        params["bias"] = c.blobs[1].reshape(n)
    return _Build("linear", {"axis": int(p.get("axis"))}, params)


@layer("LRN", bottoms=1, tops=1)
def _lrn(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("lrn_param")
    size = int(p.get("local_size"))
    if size <= 0 or size % 2 == 0:
        raise L.error(f"local_size {size} must be a positive odd number (Caffe rule)", "lrn_param",
                      expected="an odd local_size >= 1")
    k = float(p.get("k"))
    if k != 1.0 and p.get("norm_region") == "ACROSS_CHANNELS" and c.quirk("lrn_k", f"k: {k!r} -> 1.0"):
        k = 1.0
    region = "across" if p.get("norm_region") == "ACROSS_CHANNELS" else "within"
    return _Build("lrn", {"size": size, "alpha": float(p.get("alpha")), "beta": float(p.get("beta")),
                          "k": k, "region": region})


@layer("Softmax", "SoftMax", bottoms=1, tops=1)
def _softmax(c: _BuildArgs) -> _Build:
    return _Build("softmax", {"axis": int(c.L.param("softmax_param").get("axis"))})


def _unary(op: str) -> Callable[[_BuildArgs], _Build]:
    def build(c: _BuildArgs) -> _Build:
        return _Build(op)

    return build


@layer("ReLU", bottoms=1, tops=1)
def _relu(c: _BuildArgs) -> _Build:
    return _Build("relu", {"negative_slope": float(c.L.param("relu_param").get("negative_slope"))})


@layer("ReLU6", bottoms=1, tops=1)
def _relu6(c: _BuildArgs) -> _Build:
    p = c.L.param("relu6_param")
    return _Build("clip", {"min": float(p.get("min_value")), "max": float(p.get("max_value"))})


@layer("PReLU", bottoms=1, tops=1)
def _prelu(c: _BuildArgs) -> _Build:
    c.need_blobs(1, 1, "1 blob (slopes)")
    slope = c.blobs[0].reshape(-1)
    if c.L.param("prelu_param").get("channel_shared") and slope.size != 1:
        raise _shape_mismatch(c, "slope count (channel_shared)", 1, slope.size)
    return _Build("prelu", params={"slope": slope})


@layer("ELU", bottoms=1, tops=1)
def _elu(c: _BuildArgs) -> _Build:
    return _Build("elu", {"alpha": float(c.L.param("elu_param").get("alpha"))})


def _pss(op: str, param: str, first: str) -> Callable[[_BuildArgs], _Build]:
    def build(c: _BuildArgs) -> _Build:
        p = c.L.param(param)
        base = float(p.get(first))
        if op != "power" and base != -1.0 and base <= 0:
            raise c.L.error(f"base {base} must be positive or -1 (e)", param, expected="base > 0 or base = -1")
        attrs = {first: base, "scale": float(p.get("scale")), "shift": float(p.get("shift"))}
        ln = {"base": -1.0, "scale": 1.0, "shift": 0.0}
        if op == "log" and attrs != ln and c.quirk("log_params", f"base/scale/shift: {base!r}/{attrs['scale']!r}/"
                                                                 f"{attrs['shift']!r} -> -1.0/1.0/0.0 (ln x)"):
            attrs = ln
        return _Build(op, attrs)

    return build


def _batch_norm_params(c: _BuildArgs) -> tuple[np.ndarray, np.ndarray]:
    c.need_blobs(2, 3, "3 blobs (mean, variance, scale factor)")
    mean, var = c.blobs[0].reshape(-1), c.blobs[1].reshape(-1)
    if mean.size != var.size:
        raise _shape_mismatch(c, "variance size", mean.size, var.size)
    factor = 1.0
    if len(c.blobs) > 2:
        if c.blobs[2].size != 1:
            raise _shape_mismatch(c, "scale factor blob size", 1, c.blobs[2].size)
        sf = float(c.blobs[2].reshape(-1)[0])
        factor = 0.0 if sf == 0 else 1.0 / sf  # Caffe: a zero factor zeroes mean and variance
    return (mean.astype(np.float64) * factor, var.astype(np.float64) * factor)


@layer("BatchNorm", bottoms=1, tops=1)
def _batch_norm(c: _BuildArgs) -> _Build:
    p = c.L.param("batch_norm_param")
    if p.get("scale_bias"):
        raise UnsupportedLayerError(c.L.name, "BatchNorm", SUPPORTED_TYPES, file=c.L.msg.file,
                                    detail="scale_bias (NVIDIA Caffe) is not supported")
    mean, var = _batch_norm_params(c)
    return _Build("batch_norm", {"eps": float(p.get("eps"))}, {"mean": mean, "var": var})


@layer("Scale", "Bias", bottoms=(1, 2), tops=1)
def _scale_or_bias(c: _BuildArgs) -> _Build:
    L = c.L
    is_scale = L.type == "Scale"
    p = L.param("scale_param" if is_scale else "bias_param")
    axis = int(p.get("axis"))
    attrs = {"axis": axis}
    two = len(L.bottom) == 2
    has_bias = bool(p.get("bias_term")) if is_scale else not two
    n_learned = (0 if two else 1) + (1 if (is_scale and has_bias) else 0)
    if not is_scale:
        n_learned = 0 if two else 1
    c.need_blobs(n_learned, n_learned, f"{n_learned} blob(s)")
    params: dict[str, np.ndarray] = {}
    blobs = list(c.blobs)
    if not two:
        first = blobs.pop(0)
        num_axes = int(p.get("num_axes"))
        if num_axes >= 0 and first.ndim != num_axes and not (num_axes == 0 and first.size == 1):
            raise _shape_mismatch(c, f"{'scale' if is_scale else 'bias'} blob rank (num_axes)",
                                  num_axes, first.shape)
        if num_axes == 0:
            first = first.reshape(())
        params["weight" if is_scale else "bias"] = first
    if blobs:
        b = blobs.pop(0)
        if "weight" in params and b.size != params["weight"].size:
            raise _shape_mismatch(c, "bias size", params["weight"].size, b.size)
        params["bias"] = b.reshape(params["weight"].shape) if "weight" in params else b
        if two and c.quirk("scale2_bias", "op: scale -> bias (the second bottom dropped)"):
            return _Build("bias", attrs, params, n_inputs=1)  # the second bottom is dropped
    return _Build("scale" if is_scale else "bias", attrs, params)


@layer("Eltwise", bottoms=(2, None), tops=1)
def _eltwise(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("eltwise_param")
    op = p.get("operation").lower()
    coeffs = _floats(p.get("coeff"))
    if coeffs and op != "sum":
        raise L.error("coeff is only allowed with operation SUM", "eltwise_param", expected="operation: SUM")
    if coeffs and len(coeffs) != len(L.bottom):
        raise L.error(f"{len(coeffs)} coefficients for {len(L.bottom)} bottoms", "eltwise_param",
                      expected="one coeff per bottom")
    return _Build("eltwise", {"operation": op, "coeffs": coeffs or None})


def _legacy_axis(c: _BuildArgs, param: str, legacy: str) -> int:
    """``axis``, or the legacy ``concat_dim``/``slice_dim`` field that stands for it (cv2 ignores it)."""
    p = c.L.param(param)
    if p.has(legacy) and p.has("axis"):
        raise c.L.error(f"either axis or {legacy} may be given, not both", param, expected="one of the two")
    axis = int(p.get("axis"))
    if p.has(legacy):
        dim = int(p.get(legacy))
        if dim == axis or not c.quirk(legacy, f"axis: {dim} -> {axis} ({legacy} ignored)"):
            axis = dim
    return axis


@layer("Concat", bottoms=(1, None), tops=1)
def _concat(c: _BuildArgs) -> _Build:
    return _Build("concat", {"axis": _legacy_axis(c, "concat_param", "concat_dim")})


@layer("Slice", bottoms=1, tops=(1, None))
def _slice(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("slice_param")
    axis = _legacy_axis(c, "slice_param", "slice_dim")
    points = tuple(int(v) for v in p.get("slice_point"))
    if points and len(points) != len(L.top) - 1:
        raise L.error(f"{len(points)} slice points for {len(L.top)} tops", "slice_param",
                      expected=f"{len(L.top) - 1} slice_point values")
    return _Build("slice", {"axis": axis, "points": points})


@layer("Split", bottoms=1, tops=(1, None))
def _split(c: _BuildArgs) -> _Build:
    return _Build("split")


@layer("Reshape", bottoms=1, tops=1)
def _reshape(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("reshape_param")
    dims = tuple(int(d) for d in p.get("shape").get("dim")) if p.has("shape") else ()
    if len(dims) > MAX_BLOB_AXES:
        raise L.error(f"reshape to {len(dims)} dims", "reshape_param",
                      expected=f"at most {MAX_BLOB_AXES} dims (Caffe's kMaxBlobAxes)")
    if sum(d == -1 for d in dims) > 1 or any(d < -1 for d in dims):
        raise L.error(f"reshape dims {dims}: at most one -1 and no other negative value",
                      "reshape_param", expected="dims >= 0 and at most one -1")
    return _Build("reshape", {"shape": dims, "axis": int(p.get("axis")),
                              "num_axes": int(p.get("num_axes"))})


@layer("Flatten", bottoms=1, tops=1)
def _flatten(c: _BuildArgs) -> _Build:
    p = c.L.param("flatten_param")
    return _Build("flatten", {"axis": int(p.get("axis")), "end_axis": int(p.get("end_axis"))})


@layer("Permute", bottoms=1, tops=1)
def _permute(c: _BuildArgs) -> _Build:
    order = tuple(int(v) for v in c.L.param("permute_param").get("order"))
    if len(order) > MAX_BLOB_AXES or any(not 0 <= v < MAX_BLOB_AXES for v in order):
        raise c.L.error(f"permute order of {len(order)} axes {order[:8]}", "permute_param",
                        expected=f"axes 0..{MAX_BLOB_AXES - 1} (Caffe's kMaxBlobAxes)")
    if len(set(order)) != len(order):
        raise c.L.error(f"permute order {order} repeats an axis", "permute_param", expected="distinct axes")
    return _Build("permute", {"order": order})


@layer("Crop", bottoms=2, tops=1)
def _crop(c: _BuildArgs) -> _Build:
    p = c.L.param("crop_param")
    offset = tuple(int(v) for v in p.get("offset"))
    if len(offset) > MAX_BLOB_AXES:
        raise c.L.error(f"{len(offset)} crop offsets", "crop_param",
                        expected=f"at most {MAX_BLOB_AXES} (Caffe's kMaxBlobAxes)")
    return _Build("crop", {"axis": int(p.get("axis")), "offset": offset})


@layer("Dropout", bottoms=1, tops=1)
def _dropout(c: _BuildArgs) -> _Build:
    p = c.L.param("dropout_param")
    if not p.get("scale_train"):  # Faster-RCNN Caffe: scale at test time instead
        return _Build("power", {"power": 1.0, "scale": 1.0 - float(p.get("dropout_ratio")),
                                "shift": 0.0})
    return _Build("identity")


@layer("Silence", bottoms=(1, None), tops=0)
def _silence(c: _BuildArgs) -> _Build:
    return _Build("identity")


@layer("Normalize", bottoms=1, tops=1)
def _normalize(c: _BuildArgs) -> _Build:
    p = c.L.param("norm_param")
    c.need_blobs(0, 1, "1 blob (scale)")
    params = {}
    if c.blobs:
        s = c.blobs[0].reshape(-1)
        if p.get("channel_shared") and s.size != 1:
            raise _shape_mismatch(c, "scale count (channel_shared)", 1, s.size)
        params["scale"] = s
    return _Build("normalize", {"across_spatial": bool(p.get("across_spatial")),
                                "channel_shared": bool(p.get("channel_shared")),
                                "eps": float(p.get("eps"))}, params)


@layer("PriorBox", bottoms=2, tops=1)
def _prior_box(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("prior_box_param")
    mins = _floats(p.get("min_size"))
    maxs = _floats(p.get("max_size"))
    widths = _floats(p.get("width"))
    heights = _floats(p.get("height"))
    if not mins and not widths:
        raise L.error("min_size (or width/height) is required", "prior_box_param", expected="min_size")
    if maxs and len(maxs) != len(mins):
        raise L.error(f"{len(maxs)} max_size for {len(mins)} min_size", "prior_box_param",
                      expected="one max_size per min_size")
    if any(mx <= mn for mn, mx in zip(mins, maxs)):
        raise L.error(f"max_size {maxs[:8]} must be larger than min_size {mins[:8]}", "prior_box_param",
                      expected="max_size > min_size")
    if len(widths) != len(heights):
        raise L.error(f"{len(widths)} width and {len(heights)} height values", "prior_box_param",
                      expected="as many heights as widths")
    variance = _floats(p.get("variance")) or (0.1,)
    if len(variance) not in (1, 4):
        raise L.error(f"{len(variance)} variance values", "prior_box_param", expected="1 or 4")
    ars = _floats(p.get("aspect_ratio"))
    # Caffe-SSD and cv2 check min_size > 0 and variance > 0; a zero, negative or non-finite
    # size or aspect ratio has no box (sqrt and 1/ar), so it is refused too
    for what, vals in (("min_size", mins), ("width", widths), ("height", heights), ("aspect_ratio", ars),
                       ("variance", variance)):
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise L.error(f"{what} {vals[:8]} must be positive and finite", "prior_box_param",
                          expected=f"{what} > 0")
    if p.has("step_h") or p.has("step_w"):
        step = (float(p.get("step_h") or 0.0), float(p.get("step_w") or 0.0))
    else:
        step = (float(p.get("step") or 0.0),) * 2
    if p.has("img_h") or p.has("img_w"):
        img = (int(p.get("img_h") or 0), int(p.get("img_w") or 0))
    else:
        img = (int(p.get("img_size") or 0),) * 2
    if not all(math.isfinite(v) and v >= 0 for v in step) or min(img) < 0:
        raise L.error(f"step {step} / image size {img} must not be negative (0: from the input sizes)",
                      "prior_box_param", expected="step >= 0 and image size >= 0")
    if img != (0, 0) and c.quirk("prior_img_size", f"img_size: {img} -> (0, 0) (the image input's size)"):
        img = (0, 0)
    attrs: dict[str, Any] = {
        "min_sizes": mins, "max_sizes": maxs, "aspect_ratios": ars,
        "flip": bool(p.get("flip")), "clip": bool(p.get("clip")), "variance": variance,
        "step": step, "offset": float(p.get("offset")), "img_size": img,
    }
    if widths:
        attrs["widths"], attrs["heights"] = widths, heights
    if p.has("offset_h") or p.has("offset_w"):
        raise UnsupportedLayerError(L.name, "PriorBox", SUPPORTED_TYPES, file=L.msg.file,
                                    detail="offset_h/offset_w lists are not supported")
    return _Build("prior_box", attrs)


@layer("DetectionOutput", bottoms=(3, 4), tops=1)
def _detection_output(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("detection_output_param")
    if not p.has("num_classes"):
        raise L.error("num_classes is required", "detection_output_param", expected="num_classes")
    nms = p.get("nms_param") if p.has("nms_param") else None
    code = p.get("code_type")
    if code == "CORNER_SIZE" and c.quirk("corner_size", "code_type: CORNER_SIZE -> CORNER"):
        code = "CORNER"
    attrs = {
        "num_classes": int(p.get("num_classes")),
        "share_location": bool(p.get("share_location")),
        "background_label_id": int(p.get("background_label_id")),
        "nms_threshold": float(nms.get("nms_threshold")) if nms else 0.3,
        "top_k": int(nms.get("top_k")) if nms is not None and nms.has("top_k") else -1,
        "eta": float(nms.get("eta")) if nms else 1.0,
        "keep_top_k": int(p.get("keep_top_k")),
        "confidence_threshold": (float(p.get("confidence_threshold"))
                                 if p.has("confidence_threshold") else -float(np.finfo(np.float32).max)),
        "code_type": code,
        "variance_encoded_in_target": bool(p.get("variance_encoded_in_target")),
        "clip": bool(p.get("clip")),
        "normalized": bool(p.get("normalized_bbox")),
    }
    return _Build("detection_output", attrs)


@layer("Proposal", bottoms=3, tops=(1, 2))
def _proposal(c: _BuildArgs) -> _Build:
    """Faster R-CNN Proposal (cv2's proposal_param): bottoms rpn_cls_prob_reshape, rpn_bbox_pred,
    im_info; tops rois (and optionally their scores, as cv2 offers)."""
    L = c.L
    p = L.param("proposal_param")
    ratios, scales = _floats(p.get("ratio")), _floats(p.get("scale"))
    if not ratios or not scales:
        raise L.error("Proposal needs ratio and scale values", "proposal_param",
                      expected="at least one ratio and one scale")
    if not all(math.isfinite(v) and v > 0 for v in ratios + scales):
        raise L.error(f"ratio {ratios[:8]} / scale {scales[:8]} must be positive and finite",
                      "proposal_param", expected="ratio > 0 and scale > 0")
    attrs: dict[str, Any] = {
        "feat_stride": float(p.get("feat_stride")), "base_size": float(p.get("base_size")),
        "min_size": float(p.get("min_size")), "ratios": ratios, "scales": scales,
        "pre_nms_topn": int(p.get("pre_nms_topn")), "post_nms_topn": int(p.get("post_nms_topn")),
        "nms_thresh": float(p.get("nms_thresh")),
    }
    if attrs["feat_stride"] <= 0 or attrs["base_size"] <= 0:
        raise L.error("feat_stride and base_size must be positive", "proposal_param",
                      expected="feat_stride > 0 and base_size > 0")
    if c.quirk("proposal", "quirks: none -> cv2, pad_to_top_n: False -> True"):
        attrs["quirks"], attrs["pad_to_top_n"] = "cv2", True
    return _Build("proposal", attrs)


@layer("ROIPooling", bottoms=2, tops=1)
def _roi_pooling(c: _BuildArgs) -> _Build:
    """Fast R-CNN ROIPooling (roi_pooling_param): bottoms features and rois (R, 5)."""
    L = c.L
    p = L.param("roi_pooling_param")
    ph, pw, ss = int(p.get("pooled_h")), int(p.get("pooled_w")), float(p.get("spatial_scale"))
    if ph <= 0 or pw <= 0:
        raise L.error(f"pooled_h {ph} and pooled_w {pw} must be positive", "roi_pooling_param",
                      expected="pooled_h > 0 and pooled_w > 0")
    if not (math.isfinite(ss) and ss > 0):
        raise L.error(f"spatial_scale {ss} must be positive", "roi_pooling_param", expected="spatial_scale > 0")
    return _Build("roi_pool", {"pooled_h": ph, "pooled_w": pw, "spatial_scale": ss})


@layer("PSROIPooling", bottoms=2, tops=1)
def _psroi_pooling(c: _BuildArgs) -> _Build:
    """R-FCN PSROIPooling (psroi_pooling_param, all fields required): bottoms score maps and rois."""
    L = c.L
    p = L.param("psroi_pooling_param")
    for k in ("spatial_scale", "output_dim", "group_size"):
        if not p.has(k):
            raise L.error(f"{k} is required", "psroi_pooling_param", expected=k)
    ss, od, g = float(p.get("spatial_scale")), int(p.get("output_dim")), int(p.get("group_size"))
    if od <= 0 or g <= 0 or not (math.isfinite(ss) and ss > 0):
        raise L.error(f"output_dim {od}, group_size {g}, spatial_scale {ss} must be positive",
                      "psroi_pooling_param", expected="positive values")
    return _Build("psroi_pool", {"output_dim": od, "group_size": g, "spatial_scale": ss})


@layer("Interp", bottoms=(1, 2), tops=1)
def _interp(c: _BuildArgs) -> _Build:
    L = c.L
    p = L.param("interp_param")
    if p.get("pad_beg") > 0 or p.get("pad_end") > 0:
        raise L.error("Interp supports only non-positive pad_beg/pad_end (cropping)", "interp_param",
                      expected="pad_beg <= 0 and pad_end <= 0")
    if p.get("zoom_factor") < 1 or p.get("shrink_factor") < 1:
        raise L.error("zoom_factor and shrink_factor must be >= 1", "interp_param", expected="factors >= 1")
    if len(L.bottom) == 1 and not any(p.has(k) for k in ("zoom_factor", "shrink_factor",
                                                         "height", "width")):
        raise L.error("Interp needs zoom_factor, shrink_factor, height/width or a second bottom",
                      "interp_param", expected="an output size rule")
    return _Build("resize", {"mode": "bilinear", "align_corners": True,
                             "zoom": int(p.get("zoom_factor")), "shrink": int(p.get("shrink_factor")),
                             "height": int(p.get("height")), "width": int(p.get("width")),
                             "pad_beg": int(p.get("pad_beg")), "pad_end": int(p.get("pad_end"))})


@layer("ShuffleChannel", bottoms=1, tops=1)
def _shuffle_channel(c: _BuildArgs) -> _Build:
    g = int(c.L.param("shuffle_channel_param").get("group"))
    if g <= 0:
        raise c.L.error(f"group {g} must be positive", "shuffle_channel_param", expected="group >= 1")
    return _Build("shuffle_channel", {"group": g})


@layer("MVN", bottoms=1, tops=1)
def _mvn(c: _BuildArgs) -> _Build:
    p = c.L.param("mvn_param")
    attrs = {"normalize_variance": bool(p.get("normalize_variance")),
             "across_channels": bool(p.get("across_channels")), "eps": float(p.get("eps"))}
    if attrs["normalize_variance"] and c.quirk("mvn_eps", "op: mvn -> mvn_cv2 (eps inside the sqrt)"):
        return _Build("mvn_cv2", attrs)
    return _Build("mvn", attrs)


for _name, _op in (("Sigmoid", "sigmoid"), ("TanH", "tanh"), ("BNLL", "bnll"), ("AbsVal", "abs")):
    layer(_name, bottoms=1, tops=1)(_unary(_op))
for _name, _op, _param, _first in (("Power", "power", "power_param", "power"), ("Exp", "exp", "exp_param", "base"),
                                   ("Log", "log", "log_param", "base")):
    layer(_name, bottoms=1, tops=1)(_pss(_op, _param, _first))

#: every Caffe layer type read_caffe accepts ("Input" is turned into graph inputs)
SUPPORTED_TYPES: tuple[str, ...] = tuple(sorted([*layer.names(), "Input"]))
# layers only a training net has: its data sources and its losses
TRAINING_TYPES = frozenset({"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "Accuracy",
                            "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
                            "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss"})


# ---- the importer --------------------------------------------------------------------------------
def _file_label(path: str | os.PathLike | None, what: str) -> str:
    return str(path) if path is not None else f"<{what} bytes>"


def read_caffe(prototxt: str | os.PathLike | None = None,
               caffemodel: str | os.PathLike | None = None, *, quirks: str = "none",
               prototxt_bytes: bytes | str | None = None,
               caffemodel_bytes: bytes | None = None) -> Graph:
    """Read a Caffe model into a refnet :class:`~refnet.graph.Graph`.

    ``prototxt`` (text) may be None when the caffemodel carries the layer definitions;
    ``prototxt_bytes``/``caffemodel_bytes`` take the contents directly. ``quirks="cv2"``
    reproduces cv2.dnn's deviations from Caffe (see :data:`CV2_QUIRKS`).
    """
    with paused_gc():
        return _read_caffe(prototxt, caffemodel, quirks=quirks, prototxt_bytes=prototxt_bytes,
                           caffemodel_bytes=caffemodel_bytes)


def _read_caffe(prototxt: str | os.PathLike | None = None,
                caffemodel: str | os.PathLike | None = None, *, quirks: str = "none",
                prototxt_bytes: bytes | str | None = None,
                caffemodel_bytes: bytes | None = None) -> Graph:
    """read_caffe without the garbage-collector pause."""
    check_quirks_mode(quirks)
    text_file = _file_label(prototxt, "prototxt")
    bin_file = _file_label(caffemodel, "caffemodel")
    text_data = prototxt_bytes
    if text_data is None and prototxt is not None:
        text_data = _read_file(prototxt, text_file)
    bin_data = caffemodel_bytes
    if bin_data is None and caffemodel is not None:
        bin_data = _read_file(caffemodel, bin_file, map_large=True)
    if text_data is None and bin_data is None:
        raise ValueError("read_caffe needs a prototxt and/or a caffemodel")
    text_net = parse_net_text(text_data, file=text_file, skip=TRAINING_ONLY) if text_data is not None else None
    if bin_data is not None and not isinstance(bin_data, (bytes, mmap.mmap)):
        bin_data = bytes(bin_data)  # a bytearray or memoryview given as caffemodel_bytes
    weights: list[_Layer] | None = None
    compiled = compiled_scan_pays(len(bin_data)) if bin_data is not None else False
    if text_net is not None and bin_data is not None and compiled:
        weights = _scanned_weights(bin_data)  # (else the decoder below: see weights_import/_scanpolicy.py)
    bin_net = None
    if bin_data is not None and weights is None:
        t0 = time.perf_counter()
        # the weights view is decoded straight from a map (its blobs are copied out below, once);
        # a full NetParameter from bytes (its messages, kept in the graph's attributes, may hold views)
        bin_data = memoryview(bin_data) if text_net is not None else bytes(bin_data)
        bin_net = parse_net_binary(bin_data, file=bin_file, weights_only=text_net is not None)
        if not compiled and text_net is not None:
            spent_in_python(time.perf_counter() - t0)
    defs_net = text_net if text_net is not None else bin_net
    assert defs_net is not None
    layers = _layers_of(defs_net)
    if text_net is None and not layers:
        raise ModelFormatError("the caffemodel has no layer definitions and no prototxt was "
                               "given", file=bin_file, offset=0, expected="a .prototxt")
    if weights is None:
        weights = _layers_of(bin_net) if bin_net is not None and text_net is not None else []
        _gather_blobs(weights if text_net is not None else layers, {L.name for L in layers})
    return _build_graph(defs_net, layers, weights, quirks,
                        source=str(prototxt if prototxt is not None else caffemodel or ""),
                        defs_file=text_file if text_net is not None else bin_file)


_MAP_FROM = 2 << 20  # bytes; measured: below ~2 MiB a plain read is faster, above it the map


def _read_file(path: str | os.PathLike, label: str, *, map_large: bool = False) -> bytes | mmap.mmap:
    """The file's bytes, in one unbuffered read. ``map_large``: a file of _MAP_FROM bytes or
    more comes as a read-only memory map instead (pre-faulted where the OS allows). Mapping a
    large caffemodel spares a fresh multi-megabyte buffer per load, whose page faults (and the
    heap trimming after it is freed) cost more than the whole parse; the weights are copied out
    of the map before the load returns."""
    try:
        with open(path, "rb", buffering=0) as f:
            if map_large and os.fstat(f.fileno()).st_size >= _MAP_FROM:
                try:
                    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
                    return mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
                except (OSError, ValueError, AttributeError):  # not mappable (a special file, no mmap flags): read it
                    pass
            return f.readall()
    except FileNotFoundError:
        raise  # a missing file is not a malformed model (the CLI reports it in one line too)
    except OSError as e:
        raise ModelFormatError(f"cannot read the file: {e.strerror or e}", file=label, offset=0) from None


def _net_inputs(net: Message) -> tuple[list[str], list[tuple[int, ...] | None]]:
    names = list(net.get("input"))
    if len(set(names)) != len(names):
        raise net.error(f"duplicate net input names {names[:8]}", "input", expected="distinct input names")
    shapes: list[tuple[int, ...] | None]
    dims = list(net.get("input_dim"))
    if dims:
        if len(dims) != 4 * len(names):
            raise net.error(f"{len(dims)} input_dim values for {len(names)} inputs", "input_dim",
                            expected=f"4 per input ({4 * len(names)})")
        shapes = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(names))]
    elif net.has("input_shape"):
        ishapes = net.get("input_shape")
        if len(ishapes) != len(names):
            raise net.error(f"{len(ishapes)} input_shape for {len(names)} inputs", "input_shape",
                            expected="one input_shape per input")
        shapes = [tuple(int(d) for d in s.get("dim")) for s in ishapes]
    else:
        shapes = [None] * len(names)
    for name, shape in zip(names, shapes):
        bad = _bad_blob_shape(shape)
        if bad:
            raise net.error(f"input {name!r}: {bad}", "input_dim" if dims else "input_shape",
                            expected=_BLOB_SHAPE_RULE)
    return names, shapes




def _bad_blob_shape(shape: tuple[int, ...] | None) -> str | None:
    """What is wrong with a declared blob shape by Caffe's Blob::Reshape rules, or None."""
    if shape is None:
        return None
    if len(shape) > MAX_BLOB_AXES:
        return f"shape has {len(shape)} axes"
    if any(d < 0 for d in shape):
        return f"shape {shape} has a negative dim"
    if math.prod(d for d in shape if d) > INT_MAX:  # zeros aside: an empty blob's other dims count
        return f"shape {shape} holds more than {INT_MAX} elements (blob size exceeds INT_MAX)"
    return None


def _build_graph(net: Message, layers: list[_Layer], weights: list[_Layer], quirks: str, *,
                 source: str, defs_file: str) -> Graph:
    inputs, input_shapes = _net_inputs(net)
    g = _GraphAssembly(inputs, weights, quirks, defs_file)
    # each layer's parsed message is released once its node is built (the parsed net and the
    # layer list let go of them here), so a long net's messages and nodes are never all alive
    # at once: the peak memory is about the larger of the two, not their sum
    meta_name, meta_format = net.get("name"), "V1" if net.has("layers") else "V2"
    for key in ("layer", "layers"):
        if isinstance(net.values.get(key), list):
            net.values[key] = []
    for k in range(len(layers)):
        L = layers[k]
        layers[k] = None  # type: ignore[call-overload]
        if not L.name:
            raise L.error("layer has no name", "name", expected="name: \"...\"")
        if L.msg.unknown:
            g.unknown[L.name] = [str(u) for u in L.msg.unknown]
        if L.type == "Input":
            _input_layer(L, inputs, input_shapes, g.blob_map)
        else:
            g.layer(L)
    meta = {"net_name": meta_name, "caffe_types": g.caffe_types, "unknown_fields": g.unknown,
            "quirks": g.quirk_log, "quirks_mode": quirks, "format": meta_format}
    return Graph(nodes=tuple(g.nodes), inputs=tuple(inputs),
                 input_shapes=dict(zip(inputs, input_shapes)), framework="caffe",
                 source=source, meta=meta)


class _GraphAssembly:
    """The graph being built from the layer list: nodes, cv2's layer names, which refnet tensor
    each Caffe blob name stands for, the binary layers' blobs, and the log of applied quirks."""

    def __init__(self, inputs: list[str], weights: list[_Layer], quirks: str, defs_file: str) -> None:
        self.quirks, self.defs_file = quirks, defs_file
        self.blob_map: dict[str, str] = {name: name for name in inputs}  # caffe blob -> refnet tensor
        self.nodes: list[Node] = []
        self.node_names: set[str] = set()
        self.counter: dict[str, int] = {}
        self.quirk_log: list[AppliedQuirk] = []
        self.unknown: dict[str, list[str]] = {}
        self.caffe_types: dict[str, str] = {}
        # binary layers by name, each consumed once (cv2 clears the blobs it has taken)
        self.by_name: dict[str, list[_Layer]] = {}
        self.taken: dict[str, int] = {}  # how many of by_name[name] earlier layers of that name consumed
        for w in weights:
            if w.blobs or w.arrays:
                self.by_name.setdefault(w.name, []).append(w)

    def unique(self, name: str, final: str | None = None) -> str:
        """cv2's naming: the n-th repeat of a name becomes ``name_n``; ``final`` (if given)
        replaces the result but the repeat still counts (cv2 names Convolution layers after
        their first top)."""
        rep = self.counter.get(name, 0)
        self.counter[name] = rep + 1
        new = final if final is not None else f"{name}_{rep}" if rep else name
        if new in self.node_names:
            raise ModelFormatError(f"layer name {new!r} is used twice (cv2 names this layer "
                                   f"{new!r} and another layer already has that name)",
                                   file=self.defs_file, layer=new, expected="layer names that stay unique")
        self.node_names.add(new)
        return new

    def add(self, name: str, op: str, ins: list[str], n_out: int, attrs: dict, params: dict,
            ctype: str) -> tuple[str, ...]:
        outs = (name,) if n_out == 1 else tuple(output_name(name, i) for i in range(n_out))
        self.nodes.append(Node(name, op, tuple(ins), outs, _frozen(attrs),
                               MappingProxyType(params) if params else _NO_PARAMS))
        self.caffe_types[name] = ctype
        return outs

    def blobs_of(self, L: _Layer) -> list[np.ndarray]:
        """The layer's blobs: from the caffemodel's next unused layer of its name, else its own."""
        src = self.by_name.get(L.name)
        blob_layer = L
        if src:
            k = self.taken.get(L.name, 0)
            self.taken[L.name] = k + 1
            if k < len(src):
                blob_layer = src[k]
        if blob_layer.arrays is not None:
            return blob_layer.arrays
        return [blob_array(b, L.name) for b in blob_layer.blobs]

    def layer(self, L: _Layer) -> None:
        """Build one (non-Input) layer's node(s) with its registered builder."""
        h = layer.get(L.type)
        if h is None and L.type in TRAINING_TYPES:  # a train_val net (or a caffemodel's own, which is one)
            raise UnsupportedLayerError(L.name, L.type, SUPPORTED_TYPES, file=L.msg.file, detail=(
                "this is a training net (data source and loss layers); refnet, like cv2.dnn, runs the deploy "
                "net: give the deploy .prototxt (with an Input layer or input/input_shape)" + (
                    " with this caffemodel" if str(L.msg.file).endswith(".caffemodel") else "")))
        if h is None:
            raise UnsupportedLayerError(L.name, L.type or "<no type>", SUPPORTED_TYPES, file=L.msg.file)
        ins = []
        for b in L.bottom:
            if b not in self.blob_map:
                raise L.error(f"bottom {b!r} is not produced by an earlier layer or a net input",
                              "bottom", expected="the top of an earlier layer or a net input")
            ins.append(self.blob_map[b])
        blobs = self.blobs_of(L)
        # cv2 4.x names a Convolution layer (not ConvolutionDepthwise) after its first top
        name = self.unique(L.name, L.top[0] if L.type == "Convolution" and L.top else None)
        args = _BuildArgs(L, blobs, self.quirks, self.quirk_log, name)
        for what, n in (("bottom", len(L.bottom)), ("top", len(L.top))):
            want = arity_expected(n, h.arity[what + "s"], what)
            if want is not None:
                raise L.error(f"{L.type} layer has {n} {what}s", what, expected=want)
        builder = h.fn
        bn = L.param("batch_norm_param") if L.type == "BatchNorm" else None
        if bn is not None and bn.has("use_global_stats") and not bn.get("use_global_stats"):
            ins = _batch_stats_prefix(args, ins, self.unique, self.add)
            builder = _bn_after_batch_stats
        b = builder(args)
        n_out = max(len(L.top), 1)  # Silence has no top; cv2 still gives it one output
        if b.n_inputs is not None:
            ins = ins[: b.n_inputs]
        outs = self.add(name, b.op, ins, n_out, b.attrs, b.params, L.type)
        for i, t in enumerate(L.top):
            if t in self.blob_map and not (i < len(L.bottom) and L.bottom[i] == t):
                raise L.error(f"top {t!r} is already produced by another layer and this layer is "
                              "not in place", "top", expected="a new top name, or its bottom's name (in place)")
            self.blob_map[t] = outs[i]


_NO_PARAMS: MappingProxyType = MappingProxyType({})  # shared by every node without learned arrays (read-only)


def _frozen(attrs: dict[str, Any]) -> MappingProxyType:
    """``attrs`` as the read-only mapping a Node keeps (lists become tuples, as graph.freeze does)."""
    for v in attrs.values():
        if isinstance(v, list):
            return freeze(attrs)  # type: ignore[return-value]
    return MappingProxyType(attrs)


def _input_layer(L: _Layer, inputs: list[str], shapes: list, blob_map: dict[str, str]) -> None:
    if L.bottom:
        raise L.error("an Input layer has no bottoms", "bottom", expected="no bottom")
    sh = L.param("input_param").get("shape") if L.has_param("input_param") else []
    if sh and len(sh) not in (1, len(L.top)):
        raise L.error(f"{len(sh)} shapes for {len(L.top)} tops", "input_param",
                      expected="one shape, or one per top")
    for i, t in enumerate(L.top):
        if t in blob_map:
            raise L.error(f"input {t!r} is defined twice", "top", expected="distinct input names")
        inputs.append(t)
        blob_map[t] = t
        s = sh[i] if len(sh) == len(L.top) else sh[0] if sh else None
        shape = tuple(int(d) for d in s.get("dim")) if s is not None else None
        bad = _bad_blob_shape(shape)
        if bad:
            raise L.error(f"input {t!r}: {bad}", "input_param", expected=_BLOB_SHAPE_RULE)
        shapes.append(shape)


def _batch_stats_prefix(c: _BuildArgs, ins: list[str], unique: Callable[[str], str],
                        add: Callable[..., tuple[str, ...]]) -> list[str]:
    """BatchNorm with use_global_stats: false normalises with the batch's own statistics.

    cv2 inserts a layer ``<name>/mvn`` (MVN, eps inside the sqrt) before the BatchNorm, whose
    mean/variance it sets to 0/1. Faithful: ``<name>/mvn`` computes Caffe's
    (x - mean) / sqrt(var + eps) per sample and channel and ``<name>`` passes it through.
    """
    eps = float(c.L.param("batch_norm_param").get("eps"))
    mvn_name = unique(c.L.name + "/mvn")
    if c.quirk("bn_batch_stats", "op: instance_norm -> mvn_cv2 (eps inside the sqrt)", layer=mvn_name):
        c.quirk("bn_batch_stats", "op: identity -> batch_norm (mean 0, var 1: an extra 1/sqrt(1 + eps))")
        out = add(mvn_name, "mvn_cv2", ins, 1, {"normalize_variance": True,
                                                "across_channels": False, "eps": eps}, {}, "MVN")
    else:
        out = add(mvn_name, "instance_norm", ins, 1, {"eps": eps}, {}, "MVN")
    return list(out)


def _bn_after_batch_stats(c: _BuildArgs) -> _Build:
    """The BatchNorm node that follows ``<name>/mvn`` (see :func:`_batch_stats_prefix`)."""
    if c.quirks != "cv2":
        return _Build("identity")
    mean, _ = _batch_norm_params(c)
    return _Build("batch_norm", {"eps": float(c.L.param("batch_norm_param").get("eps"))},
                  {"mean": np.zeros_like(mean), "var": np.ones_like(mean)})
