"""The fuzz suite's machinery: the error contract, seed models, structure-aware mutators.

Used by the pytest modules next to it (bounded, deterministic runs with hypothesis) and by
``run_long.py`` (long runs in a memory-limited worker process). Nothing here uses refnet's
parsers to decide where the boundaries of a file are: protobuf wire fields, t7 records and
Darknet blobs are located by this module's own walkers and by the test-side writers.

The contract (issue 8): any byte string given to a loader ends in a loaded net or a
``refnet.errors`` exception (ModelFormatError, UnsupportedLayerError, ShapeError) that names
the file and a position or a layer. Loader = ``read_caffe``/``read_torch``/``read_darknet``
on the bytes, ``Net(graph)`` construction, and shape inference at the declared input shape
(which catches weights that contradict the layer definitions).
"""

from __future__ import annotations

import functools
import math
import random
import re
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TESTS_DIR = Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:  # run_long.py runs outside pytest: make `writers` importable
    sys.path.insert(0, str(TESTS_DIR))

from writers import caffe_writer as CW  # noqa: E402
from writers import darknet_writer as DW  # noqa: E402
from writers import t7_writer as TW  # noqa: E402

from refnet.errors import ModelFormatError, ShapeError, UnsupportedLayerError  # noqa: E402
from refnet.zoo import models_dir as _models_dir  # noqa: E402  (REFNET_MODELS, else ../shared/models)

ALLOWED = (ModelFormatError, UnsupportedLayerError, ShapeError)


def examples(n: int) -> int:
    """``n`` hypothesis examples, scaled by FUZZ_CI_SCALE (``make fuzz`` runs the suite 10x)."""
    import os

    return max(1, int(n * float(os.environ.get("FUZZ_CI_SCALE", "1") or 1)))
FORMATS = ("prototxt", "caffemodel", "t7", "t7ascii", "cfg", "weights", "onnx")
TARGET = {"prototxt": "prototxt", "caffemodel": "caffemodel", "t7": "t7", "t7ascii": "t7", "cfg": "cfg",
          "weights": "weights", "onnx": "onnx"}  # the file a format's fuzzing mutates
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
PROTO_NAME, MODEL_NAME, T7_NAME, CFG_NAME, WEIGHTS_NAME = (
    "fuzz.prototxt", "fuzz.caffemodel", "fuzz.t7", "fuzz.cfg", "fuzz.weights")


# ---- the contract ------------------------------------------------------------------------------
class Escape(AssertionError):
    """An input broke the error contract: ``kind`` is the exception type name (or a rule),
    ``where`` the innermost refnet source line the exception came from."""

    def __init__(self, kind: str, detail: str, where: str = "") -> None:
        super().__init__(f"{kind}: {detail}" + (f" [at {where}]" if where else ""))
        self.kind = kind
        self.detail = detail
        self.where = where


def _origin(e: BaseException) -> str:
    """``path:line (function)`` of the innermost traceback frame inside the project."""
    tb = e.__traceback__
    where = ""
    root = str(TESTS_DIR.parent)
    while tb is not None:
        fn = tb.tb_frame.f_code.co_filename
        if fn.startswith(root) and "/tests/" not in fn:
            where = f"{fn[len(root) + 1:]}:{tb.tb_lineno} ({tb.tb_frame.f_code.co_name})"
        tb = tb.tb_next
    return where


@dataclass
class Case:
    """One loader input: the format it exercises and the files (bytes) handed to the loader."""

    fmt: str
    files: dict[str, bytes]  # role -> bytes; roles: prototxt, caffemodel, t7, cfg, weights
    origin: str = ""

    def size(self) -> int:
        return max((len(v) for v in self.files.values()), default=0)

    def __repr__(self) -> str:  # hypothesis prints failing inputs: keep it short, say how to get it
        import hashlib

        sizes = {k: f"{len(v)} bytes sha1:{hashlib.sha1(v).hexdigest()[:12]}" for k, v in self.files.items()}
        return f"Case({self.fmt!r}, origin={self.origin!r}, files={sizes})"


def load_case(case: Case) -> Any:
    """Run the loader on ``case``: parse, construct the Net, infer shapes at the declared input."""
    from refnet.net import Net
    from refnet.weights_import.caffe import read_caffe
    from refnet.weights_import.darknet import read_darknet
    from refnet.weights_import.torch import read_torch

    f = case.files
    if "onnx" in f:  # seeds and mutators: tests/fuzz/fuzz_onnx.py
        import fuzz_onnx

        graph = fuzz_onnx.load(f["onnx"])
    elif "t7" in f:
        graph = read_torch(T7_NAME, data=f["t7"])
    elif "cfg" in f:
        text = f["cfg"].decode("utf-8", errors="replace")  # what read_darknet does with a path
        graph = read_darknet(CFG_NAME, WEIGHTS_NAME if "weights" in f else None, cfg_text=text,
                             weights_bytes=f.get("weights"))
    else:
        graph = read_caffe(PROTO_NAME if "prototxt" in f else None,
                           MODEL_NAME if "caffemodel" in f else None,
                           prototxt_bytes=f.get("prototxt"), caffemodel_bytes=f.get("caffemodel"))
    net = Net(graph)
    shapes = graph.input_shapes
    if shapes and all(shapes.get(k) for k in graph.inputs):
        net.infer_shapes()
    return net


_FILE_LABELS = (PROTO_NAME, MODEL_NAME, T7_NAME, CFG_NAME, WEIGHTS_NAME, "fuzz.onnx", "<prototxt bytes>",
                "<caffemodel bytes>", "<bytes>", "<cfg>", "<weights bytes>", "<weights>")


def check_error_quality(e: BaseException) -> None:
    """A refnet error must say where: the file and a position (or the layer/module)."""
    if isinstance(e, ModelFormatError):
        if not e.file:
            raise Escape("unlocated", f"ModelFormatError without a file: {e}")
        if e.offset is None and e.line is None and not e.layer:
            raise Escape("unlocated", f"ModelFormatError without position or layer: {e}")
    elif isinstance(e, UnsupportedLayerError):
        if not e.layer or not e.type:
            raise Escape("unlocated", f"UnsupportedLayerError without layer/type: {e}")
    elif isinstance(e, ShapeError):
        if not e.layer and "input" not in str(e):
            raise Escape("unlocated", f"ShapeError without a layer: {e}")


def run_case(case: Case) -> str:
    """``"ok"`` or the refnet error class name; raises :class:`Escape` on a contract breach."""
    try:
        load_case(case)
    except ALLOWED as e:
        check_error_quality(e)
        return next(c.__name__ for c in ALLOWED if isinstance(e, c))  # the public class
    except Escape:
        raise
    except (Exception, RecursionError, MemoryError) as e:  # noqa: BLE001 - anything else breaks the contract
        raise Escape(type(e).__name__, f"{e!s}"[:300], _origin(e)) from e
    return "ok"


# ---- helpers -----------------------------------------------------------------------------------
INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 8, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -(2**31), 2**32 - 1,
                    2**32, 2**53, 2**62, 2**63 - 1, -(2**63), 10**6, 10**9, 10**12)
INTERESTING_TEXT_NUMS = ("0", "-1", "1", "2", "3", "-3", "9999999", "2147483647", "2147483648", "-2147483649",
                         "4294967296", "99999999999999999999999", "1e308", "1e309", "-1e309", "nan", "inf",
                         "-inf", "1e-45", "0.5", "-0.5", "0x7fffffff", "0xffffffffffffffff", "07", "1.5e3",
                         "9" * 5000, "0x" + "f" * 300, "1" + "0" * 400 + ".5", "-" + "7" * 4301)


def _varint(v: int) -> bytes:
    return CW.varint(v)


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
    v = shift = 0
    for i in range(10):
        if pos + i >= end:
            return None
        b = buf[pos + i]
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos + i + 1
        shift += 7
    return None


@dataclass
class WireField:
    """One protobuf field found by :func:`walk_wire` (offsets into the whole buffer)."""

    start: int  # first byte of the tag
    number: int
    wire: int
    len_at: int = -1  # first byte of the length varint (wire type 2)
    payload: int = -1  # first payload byte
    length: int = 0
    end: int = 0
    depth: int = 0


def walk_wire(buf: bytes, start: int = 0, end: int | None = None, depth: int = 0, out: list | None = None,
              max_depth: int = 6) -> list[WireField] | None:
    """Every field of ``buf[start:end]`` read as a protobuf message, recursing into
    length-delimited payloads that themselves read cleanly as messages. None if the span is
    not a well-formed message."""
    end = len(buf) if end is None else end
    out = [] if out is None else out
    mine: list[WireField] = []
    pos = start
    while pos < end:
        r = _read_varint(buf, pos, end)
        if r is None:
            return None
        tag, p = r
        num, wt = tag >> 3, tag & 7
        if num == 0:
            return None
        f = WireField(pos, num, wt, depth=depth)
        if wt == 0:
            r = _read_varint(buf, p, end)
            if r is None:
                return None
            p = r[1]
        elif wt == 1:
            p += 8
        elif wt == 5:
            p += 4
        elif wt == 2:
            r = _read_varint(buf, p, end)
            if r is None:
                return None
            f.len_at, (n, f.payload) = p, r
            f.length = n
            p = f.payload + n
        else:
            return None
        if p > end:
            return None
        f.end = p
        mine.append(f)
        pos = p
    for f in mine:
        out.append(f)
        if f.wire == 2 and depth < max_depth and f.length > 1:
            sub: list[WireField] = []
            if walk_wire(buf, f.payload, f.payload + f.length, depth + 1, sub, max_depth) is not None:
                out.extend(sub)
    return out


# ---- seeds -------------------------------------------------------------------------------------


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return rng.normal(0.0, math.sqrt(2.0 / fan), shape).astype(np.float32)


def _caffe_specs() -> dict[str, CW.NetSpec]:
    """Small synthetic nets covering every layer family the Caffe importer reads."""
    E, L, N = CW.E, CW.Layer, CW.NetSpec
    r = np.random.default_rng(7)
    X = {"data": (1, 4, 9, 11)}
    specs = {
        "conv_bn_scale": N([
            L("c", "Convolution", ["data"], ["c"], {"convolution_param": {"num_output": 5, "kernel_size": 3,
                                                                         "pad": 1, "bias_term": False}},
              [_w(r, 5, 4, 3, 3)]),
            L("bn", "BatchNorm", ["c"], ["c"], {"batch_norm_param": {"eps": 1e-3}},
              [r.normal(0, 0.5, 5), r.uniform(0.5, 2, 5), np.array([1.0])]),
            L("sc", "Scale", ["c"], ["c"], {"scale_param": {"bias_term": True}}, [r.uniform(0.5, 1.5, 5),
                                                                                    r.normal(0, 0.2, 5)]),
            L("relu", "ReLU", ["c"], ["c"]),
            L("p", "Pooling", ["c"], ["p"], {"pooling_param": {"pool": E("MAX"), "kernel_size": 3, "stride": 2}}),
            L("ip", "InnerProduct", ["p"], ["ip"], {"inner_product_param": {"num_output": 3}},
              [_w(r, 3, 5 * 4 * 5), r.normal(0, 0.1, 3)]),
            L("prob", "Softmax", ["ip"], ["prob"]),
        ], X, "input_dim"),
        "deconv_groups": N([
            L("d", "Deconvolution", ["data"], ["d"], {"convolution_param": {
                "num_output": 6, "kernel_h": 3, "kernel_w": 2, "stride_h": 1, "stride_w": 2, "group": 2,
                "bias_term": False}}, [_w(r, 4, 3, 3, 2)]),
            L("dw", "ConvolutionDepthwise", ["d"], ["dw"], {"convolution_param": {
                "num_output": 6, "group": 6, "kernel_size": 3, "stride": 2, "pad": 1}},
              [_w(r, 6, 1, 3, 3), r.normal(0, 0.1, 6)]),
            L("pr", "PReLU", ["dw"], ["pr"], {}, [r.uniform(0.05, 0.3, 6)]),
        ], X, "input_shape"),
        "branches": N([
            L("r", "ReLU", ["data"], ["r"]), L("t", "TanH", ["data"], ["t"]),
            L("sum", "Eltwise", ["data", "r", "t"], ["sum"], {"eltwise_param": {"operation": E("SUM"),
                                                                              "coeff": [0.5, -1.0, 2.0]}}),
            L("cat", "Concat", ["sum", "r"], ["cat"], {"concat_param": {"axis": 1}}),
            L("sl", "Slice", ["cat"], ["a", "b"], {"slice_param": {"axis": 1, "slice_point": [3]}}),
            L("sp", "Split", ["a"], ["s0", "s1"]),
            L("e", "Eltwise", ["s0", "s1"], ["e"], {"eltwise_param": {"operation": E("MAX")}}),
            L("lrn", "LRN", ["e"], ["lrn"], {"lrn_param": {"local_size": 3, "alpha": 0.5, "beta": 0.75}}),
            L("sil", "Silence", ["b"], []),
        ], X, "layer"),
        "shape_ops": N([
            L("rs", "Reshape", ["data"], ["rs"], {"reshape_param": {"shape": {"dim": [0, -1, 11]}}}),
            L("fl", "Flatten", ["data"], ["fl"], {"flatten_param": {"axis": 2, "end_axis": 3}}),
            L("pm", "Permute", ["data"], ["pm"], {"permute_param": {"order": [0, 2, 3, 1]}}),
            L("crop", "Crop", ["data", "ref"], ["crop"], {"crop_param": {"axis": 2, "offset": [1, 3]}}),
            L("drop", "Dropout", ["data"], ["drop"], {"dropout_param": {"dropout_ratio": 0.3}}),
            L("sh", "ShuffleChannel", ["data"], ["sh"], {"shuffle_channel_param": {"group": 2}}),
            L("mvn", "MVN", ["sh"], ["mvn"], {"mvn_param": {"across_channels": True}}),
            L("n1", "Normalize", ["data"], ["n1"], {"norm_param": {"across_spatial": False,
                                                                  "channel_shared": False}},
              [r.uniform(1, 3, 4)]),
            L("z", "Interp", ["data"], ["z"], {"interp_param": {"zoom_factor": 2}}),
            L("pw", "Power", ["z"], ["pw"], {"power_param": {"power": 2.0, "scale": 0.5, "shift": 1.0}}),
        ], {"data": (1, 4, 9, 11), "ref": (1, 2, 5, 6)}, "input_shape"),
        "ssd": N([
            L("f", "Convolution", ["data"], ["f"], {"convolution_param": {"num_output": 8, "kernel_size": 3,
                                                                         "stride": 4, "pad": 1}},
              [_w(r, 8, 3, 3, 3), r.normal(0, 0.1, 8)]),
            L("loc", "Convolution", ["f"], ["loc"], {"convolution_param": {"num_output": 16, "kernel_size": 1}},
              [_w(r, 16, 8, 1, 1), r.normal(0, 0.1, 16)]),
            L("loc_p", "Permute", ["loc"], ["loc_p"], {"permute_param": {"order": [0, 2, 3, 1]}}),
            L("loc_f", "Flatten", ["loc_p"], ["loc_f"]),
            L("conf", "Convolution", ["f"], ["conf"], {"convolution_param": {"num_output": 12, "kernel_size": 1}},
              [_w(r, 12, 8, 1, 1), r.normal(0, 0.1, 12)]),
            L("conf_p", "Permute", ["conf"], ["conf_p"], {"permute_param": {"order": [0, 2, 3, 1]}}),
            L("conf_f", "Flatten", ["conf_p"], ["conf_f"]),
            L("prior", "PriorBox", ["f", "data"], ["prior"], {"prior_box_param": {
                "min_size": 6.0, "max_size": 12.0, "aspect_ratio": 2.0, "flip": True, "clip": False,
                "variance": [0.1, 0.1, 0.2, 0.2]}}),
            L("conf_rs", "Reshape", ["conf_f"], ["conf_rs"], {"reshape_param": {"shape": {"dim": [0, -1, 3]}}}),
            L("conf_sm", "Softmax", ["conf_rs"], ["conf_sm"], {"softmax_param": {"axis": 2}}),
            L("conf_fl", "Flatten", ["conf_sm"], ["conf_fl"]),
            L("det", "DetectionOutput", ["loc_f", "conf_fl", "prior"], ["det"], {"detection_output_param": {
                "num_classes": 3, "share_location": True, "background_label_id": 0,
                "nms_param": {"nms_threshold": 0.45, "top_k": 50}, "code_type": E("CENTER_SIZE"),
                "keep_top_k": 20, "confidence_threshold": 0.2}}),
        ], {"data": (1, 3, 32, 40)}, "input_dim"),
    }
    return specs


@dataclass
class Seed:
    """A valid (or nearly valid) model to mutate, with its structural boundaries."""

    name: str
    fmt: str
    files: dict[str, bytes]
    target: str  # the role mutated
    boundaries: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def case(self, data: bytes, origin: str = "") -> Case:
        files = dict(self.files)
        files[self.target] = data
        return Case(self.fmt, files, origin or self.name)


def _text_boundaries(text: bytes) -> list[int]:
    """Token boundaries of a prototxt/cfg/ascii text (starts and ends of every non-blank run)."""
    out = {0, len(text)}
    for m in re.finditer(rb"[^\s]+", text):
        out.add(m.start())
        out.add(m.end())
    return sorted(out)


def _wire_boundaries(buf: bytes) -> tuple[list[int], list[WireField]]:
    fields = walk_wire(buf) or []
    out = {0, len(buf)}
    for f in fields:
        out.update((f.start, f.end))
        if f.len_at >= 0:
            out.update((f.len_at, f.payload))
    return sorted(out), fields


def _slice_caffemodel(buf: bytes, max_bytes: int) -> tuple[bytes, set[bytes]]:
    """The leading top-level fields of a caffemodel that fit in ``max_bytes`` (a valid message)
    and the names of the layers they hold."""
    fields = walk_wire(buf, max_depth=0) or []
    end = 0
    names: set[bytes] = set()
    for f in fields:
        if f.end > max_bytes:
            break
        end = f.end
        if f.number in (2, 100):
            name_no = 4 if f.number == 2 else 1
            for g in walk_wire(buf, f.payload, f.payload + f.length, max_depth=0) or []:
                if g.number == name_no and g.wire == 2:
                    names.add(buf[g.payload:g.payload + g.length])
    return buf[:end], names


def _first_layers(text: bytes, names: set[bytes]) -> bytes:
    """A deploy prototxt cut before its first layer (other than Input) that a slice lacks."""
    starts = [m.start() for m in re.finditer(rb"(?m)^layers? *\{", text)] + [len(text)]
    for a, b in zip(starts, starts[1:]):
        block = text[a:b]
        m = re.search(rb'name:\s*"([^"]*)"', block)
        if m and m.group(1) not in names and b'"Input"' not in block:
            return text[:a]
    return text


REAL_CAFFE = (
    ("mtcnn_det1", "mtcnn_caffe/det1.prototxt", "mtcnn_caffe/det1.caffemodel"),
    ("mtcnn_det2", "mtcnn_caffe/det2.prototxt", "mtcnn_caffe/det2.caffemodel"),
    ("lenet", "lenet_mnist_caffe/lenet.prototxt", "lenet_mnist_caffe/lenet_iter_10000.caffemodel"),
    ("ultraface_slim", "ultraface_caffe/slim-320.prototxt", "ultraface_caffe/slim-320.caffemodel"),
    ("ultraface_rfb", "ultraface_caffe/RFB-320.prototxt", "ultraface_caffe/RFB-320.caffemodel"),
    ("yufacedetect_v1", "yufacedetectnet_caffe/yufacedetectnet-open-v1.prototxt",
     "yufacedetectnet_caffe/yufacedetectnet-open-v1.caffemodel"),
    ("yufacedetect_v2", "yufacedetectnet_caffe/yufacedetectnet-open-v2.prototxt",
     "yufacedetectnet_caffe/yufacedetectnet-open-v2.caffemodel"),
)
ARCH_PROTOTXTS = (
    "arch_only/bvlc_googlenet/deploy.prototxt", "arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt",
    "arch_only/res10_face_ssd/deploy.prototxt", "arch_only/squeezenet_v1.0/deploy.prototxt",
    "arch_only/squeezenet_v1.1/deploy.prototxt",
)
SLICE_BYTES = 96 * 1024  # big real caffemodels are fuzzed through their leading layers
FULL_BYTES = 2 << 20  # real weights up to this size accompany their fuzzed prototxt


def shrink_prototxt(text: bytes, factor: int = 16) -> bytes:
    """The same architecture with ``factor`` times fewer channels (num_output and group scaled
    alike, so depthwise convolutions stay depthwise): seeded weights for it stay small."""
    def scale(m: re.Match[bytes]) -> bytes:
        v = int(m.group(2))
        return m.group(1) + str(max(1, -(-v // factor)) if v > 1 else v).encode()

    return re.sub(rb"((?:num_output|group):\s*)(\d+)", scale, text)


def _add_shrunk(out: list, name: str, text: bytes) -> None:
    """A real architecture with seeded weights for its shrunk version (skipped if the writer's
    small shape tracker cannot follow it)."""
    small = shrink_prototxt(text)
    try:
        blob, _ = CW.random_caffemodel(small.decode(), seed=3)
    except Exception:  # noqa: BLE001
        out.append(Seed(name, "prototxt", {"prototxt": text}, "prototxt"))
        return
    out.append(Seed(name + "_shrunk", "prototxt", {"prototxt": small, "caffemodel": blob}, "prototxt"))


@functools.cache
def caffe_seeds() -> tuple[Seed, ...]:
    out: list[Seed] = []
    for name, spec in _caffe_specs().items():
        text = CW.prototxt(spec).encode()
        model = CW.caffemodel(spec)
        out.append(Seed(f"syn_{name}", "prototxt", {"prototxt": text, "caffemodel": model}, "prototxt"))
        out.append(Seed(f"syn_{name}", "caffemodel", {"prototxt": text, "caffemodel": model}, "caffemodel"))
    # variants: V1 layers, fancy text, fp16/double/legacy blobs, unpacked floats, defs in the caffemodel
    spec = _caffe_specs()["conv_bn_scale"]
    v1 = CW.NetSpec([lay for lay in spec.layers if lay.type in CW.V1_TYPES], spec.inputs, "input_dim")
    out.append(Seed("syn_v1", "prototxt", {"prototxt": CW.prototxt(v1, v1=True).encode(),
                                           "caffemodel": CW.caffemodel(v1, v1=True)}, "prototxt"))
    out.append(Seed("syn_v1", "caffemodel", {"prototxt": CW.prototxt(v1, v1=True).encode(),
                                             "caffemodel": CW.caffemodel(v1, v1=True, fmt="legacy")},
                    "caffemodel"))
    out.append(Seed("syn_fancy", "prototxt", {"prototxt": CW.prototxt(spec, style="fancy").encode(),
                                              "caffemodel": CW.caffemodel(spec)}, "prototxt"))
    for fmt in ("fp16", "double", "raw32"):
        out.append(Seed(f"syn_blob_{fmt}", "caffemodel", {"prototxt": CW.prototxt(spec).encode(),
                                                          "caffemodel": CW.caffemodel(spec, fmt=fmt)}, "caffemodel"))
    small = CW.NetSpec(spec.layers[:2], spec.inputs, "input_dim")
    out.append(Seed("syn_unpacked", "caffemodel", {"prototxt": CW.prototxt(small).encode(),
                                                   "caffemodel": CW.caffemodel(small, packed=False)}, "caffemodel"))
    for v in (False, True):
        defs = CW.caffemodel(v1 if v else spec, v1=v, with_defs=True)
        out.append(Seed(f"syn_defs{'_v1' if v else ''}", "caffemodel", {"caffemodel": defs}, "caffemodel"))
    d = _models_dir()
    if d is not None:
        for name, proto, model in REAL_CAFFE:
            p, m = d / proto, d / model
            if not (p.exists() and m.exists()):
                continue
            text, blob = p.read_bytes(), m.read_bytes()
            if len(blob) <= FULL_BYTES:  # the text is fuzzed against the real weights
                out.append(Seed(f"real_{name}", "prototxt", {"prototxt": text, "caffemodel": blob}, "prototxt"))
            else:
                _add_shrunk(out, f"real_{name}", text)
            if len(blob) > SLICE_BYTES:
                blob, names = _slice_caffemodel(blob, SLICE_BYTES)
                text = _first_layers(text, names)
                name += "_slice"
            out.append(Seed(f"real_{name}", "caffemodel", {"prototxt": text, "caffemodel": blob}, "caffemodel"))
        for rel in ARCH_PROTOTXTS:
            p = d / rel
            if p.exists():
                _add_shrunk(out, f"arch_{p.parent.name}", p.read_bytes())
    for s in out:
        data = s.files[s.target]
        if s.target == "prototxt":
            s.boundaries = _text_boundaries(data)
        else:
            s.boundaries, s.meta["fields"] = _wire_boundaries(data)
    return tuple(out)


# -- torch --
class _RecordingWriter(TW.T7Writer):
    """The test-side t7 writer, noting where every primitive record starts and what it is."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.records: list[tuple[int, str, int]] = []  # (offset, kind, byte size in binary)

    def int(self, v: int) -> None:
        self.records.append((len(self.out), "int", 4))
        super().int(v)

    def longs(self, vals: list[int]) -> None:
        for v in vals:
            self.records.append((len(self.out), "long", self.long_size))
            self._ints([v], "<q" if self.long_size == 8 else "<i")

    def double(self, v: float) -> None:
        self.records.append((len(self.out), "double", 8))
        super().double(v)

    def chars(self, b: bytes) -> None:
        self.records.append((len(self.out), "chars", len(b)))
        super().chars(b)

    def array(self, a: np.ndarray, type: str) -> None:
        self.records.append((len(self.out), "array", 0))
        super().array(a, type)


def t7_dumps(obj: Any, *, ascii: bool = False) -> tuple[bytes, list[tuple[int, str, int]]]:
    w = _RecordingWriter(ascii=ascii)
    w.obj(obj)
    return bytes(w.out), w.records


def _torch_models() -> dict[str, Any]:
    r = np.random.default_rng
    S = TW.nn_Sequential
    pool = TW.nn_SpatialMaxPooling(2, 2)
    models = {
        "convs": S(TW.nn_SpatialConvolution(r(1), 3, 4, 3, 3, 1, 1, 1, 1), TW.nn_SpatialBatchNormalization(r(2), 4),
                   TW.nn_ReLU(True), TW.nn_SpatialDilatedConvolution(r(3), 4, 4, 3, 3, 1, 1, 2, 2, 2, 2),
                   TW.nn_SpatialFullConvolution(r(4), 4, 3, 3, 3, 2, 2, 1, 1, 1, 1), TW.nn_PReLU(r(5), 3)),
        "pool_unpool": S(pool, TW.nn_SpatialConvolution(r(6), 3, 3, 1, 1), TW.nn_SpatialMaxUnpooling(pool),
                         TW.nn_SpatialAveragePooling(3, 3, 2, 2, 1, 1, ceil_mode=True, count_include_pad=False)),
        "tables": S(TW.nn_ConcatTable(S(TW.nn_SpatialConvolution(r(7), 3, 3, 3, 3, 1, 1, 1, 1), TW.nn_ReLU()),
                                      TW.nn_Identity()), TW.nn_CAddTable(),
                    TW.nn_Concat(2, TW.nn_Identity(), TW.nn_simple("Tanh")),
                    TW.nn_ConcatTable(TW.nn_Identity(), TW.nn_SpatialConvolution(r(8), 6, 2, 1, 1)),
                    TW.nn_JoinTable(2), TW.nn_Parallel(2, 2, TW.nn_simple("Sigmoid"), TW.nn_Identity())),
        "shapes": S(TW.nn_SpatialZeroPadding(1, 2, 3, 0), TW.nn_SpatialReflectionPadding(2, 1, 0, 3),
                    TW.nn_Padding(1, 3, 3, 0.5), TW.nn_SpatialUpSamplingNearest(2), TW.nn_ShaveImage(1),
                    TW.nn_Narrow(2, 1, 2), TW.nn_View(-1), TW.nn_Linear(r(9), 2 * 30 * 28, 5),
                    TW.nn_BatchNormalization(r(10), 5), TW.nn_Dropout(0.3, v2=None), TW.nn_simple("LogSoftMax")),
        "pointwise": S(TW.nn_MulConstant(-1.5), TW.nn_simple("Square"), TW.nn_Sqrt(), TW.nn_Power(1.5),
                       TW.nn_AddConstant(0.5), TW.nn_ELU(0.7), TW.nn_SpatialCrossMapLRN(5, 0.5, 0.75, 2.0),
                       TW.nn_InstanceNormalization(r(11), 3), TW.nn_Normalize(2), TW.nn_TotalVariation()),
        "fast_neural_style": {"model": TW.fast_neural_style("instance_norm", 3, width=2), "opt": {"arch": "x"}},
        "fast_neural_style_eccv": TW.fast_neural_style("eccv16", 4, width=2),
    }
    d = _models_dir()
    if d is not None and (d / "enet_cityscapes_torch/model-best.net").exists():
        try:
            models["real_enet_head"] = _enet_head(d / "enet_cityscapes_torch/model-best.net")
        except Exception:  # noqa: BLE001 - a seed we cannot build is skipped, the suite still runs
            pass
    return models


def _to_writer(obj: Any, memo: dict[int, Any]) -> Any:
    """refnet's t7 objects -> the test writer's values (shared objects stay shared)."""
    from refnet.weights_import.t7 import LuaFunction, LuaTable, T7Storage, T7Tensor, TorchObject

    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, LuaTable):
        out: Any = {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[_to_writer(k, memo)] = _to_writer(v, memo)
        return out
    if isinstance(obj, TorchObject):
        out = TW.Module(obj.class_name, {}, obj.version or None)
        memo[id(obj)] = out
        out.fields = _to_writer(obj.fields, memo)
        return out
    if isinstance(obj, T7Storage):
        elem = re.match(r"torch\.(?:Cuda)?(\w*?)Storage", obj.class_name)
        typ = (elem.group(1) if elem else "") or "Float"
        out = TW.Storage(np.array(obj.array), typ)
        memo[id(obj)] = out
        return out
    if isinstance(obj, T7Tensor):  # re-stored compactly: its own contiguous storage
        elem = re.match(r"torch\.(?:Cuda)?(\w*?)Tensor", obj.class_name)
        typ = (elem.group(1) if elem else "") or "Float"
        a = np.ascontiguousarray(obj.array)
        if obj.storage is None or a.ndim == 0:
            out = TW.Tensor(None, (), (), 0, typ)
        else:
            strides = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
            out = TW.Tensor(TW.Storage(a.reshape(-1).copy(), typ), tuple(a.shape), strides, 0, typ)
        memo[id(obj)] = out
        return out
    if isinstance(obj, LuaFunction):
        return TW.Function(obj.bytecode, _to_writer(obj.upvalues, memo))
    return obj


def _enet_head(path: Path) -> Any:
    """The first modules of the real ENet (initial block + first bottleneck), re-encoded."""
    from refnet.weights_import.t7 import read_t7

    root = _to_writer(read_t7(path.read_bytes(), source=str(path)), {})
    mods = root.fields["modules"]
    keep = {k: v for k, v in mods.items() if isinstance(k, (int, float)) and k <= 6}
    root.fields = dict(root.fields)
    root.fields["modules"] = keep
    root.fields.pop("output", None)
    root.fields.pop("gradInput", None)
    for m in keep.values():
        _strip_buffers(m, set())
    return root


def _strip_buffers(m: Any, seen: set[int]) -> None:
    """Drop output/gradInput/gradWeight buffers (large, not read by the importer)."""
    if id(m) in seen or not isinstance(m, TW.Module):
        return
    seen.add(id(m))
    if isinstance(m.fields, dict):
        for k in ("output", "gradInput", "gradWeight", "gradBias", "finput", "fgradInput", "_input",
                  "_gradOutput", "save_mean", "save_std"):
            m.fields.pop(k, None)
        for v in (m.fields.get("modules") or {}).values():
            _strip_buffers(v, seen)


@functools.cache
def torch_seeds() -> tuple[Seed, ...]:
    out: list[Seed] = []
    for name, obj in _torch_models().items():
        for ascii_ in (False, True):
            data, recs = t7_dumps(obj, ascii=ascii_)
            fmt = "t7ascii" if ascii_ else "t7"
            s = Seed(name, fmt, {"t7": data}, "t7", meta={"records": recs, "obj": obj})
            s.boundaries = sorted({0, len(data), *(o for o, _, _ in recs)})
            out.append(s)
    return tuple(out)


# -- darknet --
DARKNET_CFGS: dict[str, list[tuple[str, dict]]] = {
    # the writers' every-section net without the decoders' score thresholds
    "all_layers": [(k, {kk: v for kk, v in d.items()
                        if not (k in ("yolo", "region") and kk in ("thresh", "nms_threshold"))})
                   for k, d in DW.ALL_LAYERS],
    "tiny_yolo": [
        ("net", {"width": 32, "height": 32, "channels": 3}),
        ("convolutional", {"filters": 4, "size": 3, "stride": 1, "pad": 1, "batch_normalize": 1,
                           "activation": "leaky"}),
        ("maxpool", {"size": 2, "stride": 2}),
        ("convolutional", {"filters": 8, "size": 3, "stride": 1, "pad": 1, "batch_normalize": 1,
                           "activation": "leaky"}),
        ("maxpool", {"size": 2, "stride": 2}),
        ("convolutional", {"filters": 21, "size": 1, "activation": "linear"}),
        ("yolo", {"mask": "0,1,2", "anchors": "10,14, 23,27, 37,58", "classes": 2, "num": 3}),
        ("route", {"layers": -3}),
        ("upsample", {"stride": 2}),
        ("route", {"layers": "-1,-7"}),
        ("convolutional", {"filters": 21, "size": 1, "activation": "linear"}),
        ("yolo", {"mask": "0,1,2", "anchors": "10,14, 23,27, 37,58", "classes": 2, "num": 3}),
    ],
}
ARCH_CFGS = ("arch_only/darknet_cfg/yolov2-tiny-voc.cfg", "arch_only/darknet_cfg/yolov2-tiny.cfg",
             "arch_only/darknet_cfg/yolov3-tiny.cfg", "arch_only/darknet_cfg/tiny.cfg",
             "yolo_fastest_darknet/yolo-fastest-1.1.cfg", "yolo_fastest_darknet/yolo-fastest-1.1-xl.cfg")


def _weights_boundaries(cfg: str, data: bytes, written: list) -> list[int]:
    head = 20 if len(data) >= 20 and struct.unpack_from("<ii", data)[0] * 10 + struct.unpack_from(
        "<ii", data)[1] >= 2 else 16
    out = {0, 4, 8, 12, 16, head, len(data)}
    pos = head
    for _, _, lb in written:
        for k in ("bias", "scales", "mean", "var", "weight"):
            if k in lb:
                pos += 4 * int(np.asarray(lb[k]).size)
                out.add(min(pos, len(data)))
    return sorted(out)


@functools.cache
def darknet_seeds() -> tuple[Seed, ...]:
    out: list[Seed] = []
    cfgs = {name: DW.cfg_text(secs, comments=name == "tiny_yolo") for name, secs in DARKNET_CFGS.items()}
    d = _models_dir()
    if d is not None:
        for rel in ARCH_CFGS:
            p = d / rel
            if p.exists():
                # the real architecture, input shrunk, channels shrunk (seeded weights stay small)
                text = re.sub(r"(?m)^(width|height)=\d+", r"\1=64", p.read_text())
                cfgs[f"real_{p.stem}"] = shrink_cfg(text)
    for name, cfg in cfgs.items():
        raw = cfg.encode()
        try:
            data, written = DW.random_weights(cfg, seed=1)
        except Exception:  # noqa: BLE001 - the writer's tracker does not know every layer
            data, written = None, []
        out.append(Seed(name, "cfg", {"cfg": raw}, "cfg", _text_boundaries(raw)))
        if data is not None:
            out.append(Seed(name, "cfg", {"cfg": raw, "weights": data}, "cfg", _text_boundaries(raw)))
            out.append(Seed(name, "weights", {"cfg": raw, "weights": data}, "weights",
                            _weights_boundaries(cfg, data, written)))
    return tuple(out)


def shrink_cfg(text: str, factor: int = 8) -> str:
    """Fewer filters per [convolutional] (groups scaled alike), except the conv feeding a
    [yolo]/[region] head, whose filter count the head checks."""
    parts = re.split(r"(?m)^(?=\[)", text)
    out = []
    for i, sec in enumerate(parts):
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        if sec.startswith("[conv") and not re.match(r"\[(yolo|region)\]", nxt):
            sec = re.sub(r"(?m)^((?:filters|groups)\s*=\s*)(\d+)",
                         lambda m: m.group(1) + str(max(1, -(-int(m.group(2)) // factor))
                                                    if int(m.group(2)) > 1 else m.group(2)), sec)
        out.append(sec)
    return "".join(out)


def seeds(fmt: str) -> tuple[Seed, ...]:
    if fmt == "onnx":
        import fuzz_onnx

        return fuzz_onnx.onnx_seeds()
    if fmt in ("prototxt", "caffemodel"):
        return tuple(s for s in caffe_seeds() if s.fmt == fmt)
    if fmt in ("t7", "t7ascii"):
        return tuple(s for s in torch_seeds() if s.fmt == fmt)
    return tuple(s for s in darknet_seeds() if s.fmt == fmt)


def seed_named(fmt: str, name: str) -> Seed | None:
    """The seed ``name`` of format ``fmt``; None when it is not built (a real model not on this machine)."""
    return next((s for s in seeds(fmt) if s.name == name), None)


# ---- mutators ----------------------------------------------------------------------------------
Mutator = Callable[[Seed, bytes, random.Random], bytes]


def _pick_boundary(seed: Seed, data: bytes, rnd: random.Random) -> int:
    b = [x for x in seed.boundaries if x <= len(data)] or [0, len(data)]
    return rnd.choice(b)


def m_truncate_boundary(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    return data[: _pick_boundary(seed, data, rnd)]


def m_truncate_any(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    return data[: rnd.randrange(len(data) + 1)]


def m_bitflip(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 4, 8))):
        i = rnd.randrange(len(b))
        b[i] ^= 1 << rnd.randrange(8)
    return bytes(b)


def m_byte_set(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    i = rnd.randrange(len(b))
    b[i] = rnd.choice((0, 0xFF, 0x7F, 0x80, 0x01, rnd.randrange(256)))
    return bytes(b)


def m_delete_span(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    i, j = sorted((_pick_boundary(seed, data, rnd), _pick_boundary(seed, data, rnd)))
    return data[:i] + data[j:]


def m_duplicate_span(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    i, j = sorted((_pick_boundary(seed, data, rnd), _pick_boundary(seed, data, rnd)))
    if j - i > 65536:
        j = i + 65536
    k = _pick_boundary(seed, data, rnd)
    return data[:k] + data[i:j] + data[k:]


def m_insert_random(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    k = _pick_boundary(seed, data, rnd)
    junk = bytes(rnd.randrange(256) for _ in range(rnd.choice((1, 2, 4, 16))))
    return data[:k] + junk + data[k:]


def m_random_bytes(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    return bytes(rnd.randrange(256) for _ in range(rnd.choice((0, 1, 4, 16, 64, 256))))


# -- protobuf wire --
def _fields(seed: Seed, data: bytes) -> list[WireField]:
    if data is seed.files.get(seed.target) and "fields" in seed.meta:
        return seed.meta["fields"]
    return walk_wire(data) or []


def m_wire_length(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Length-field inflation (or deflation) of one length-delimited field."""
    fs = [f for f in _fields(seed, data) if f.len_at >= 0]
    if not fs:
        return m_bitflip(seed, data, rnd)
    f = rnd.choice(fs)
    n = rnd.choice((f.length + 1, f.length - 1, f.length * 2, f.length + 1000, 0, 2**31 - 1, 2**31, 2**32,
                    2**63, 2**64 - 1, len(data), len(data) - f.payload + 1))
    return data[: f.len_at] + _varint(max(n, 0)) + data[f.payload:]


def m_wire_varint(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """A varint field (dims, num_output, input_dim, enums, bools) set to an extreme value."""
    fs = [f for f in _fields(seed, data) if f.wire == 0]
    if not fs:
        return m_wire_length(seed, data, rnd)
    f = rnd.choice(fs)
    tag_end = _read_varint(data, f.start, len(data))
    assert tag_end is not None
    v = rnd.choice(INTERESTING_INTS)
    if rnd.random() < 0.3:
        v = -abs(v)
    return data[: tag_end[1]] + _varint(v) + data[f.end:]


def m_wire_packed_dims(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Huge/negative/zero dims inside a packed varint payload (BlobShape.dim, input_shape)."""
    fs = [f for f in _fields(seed, data) if f.wire == 2 and 0 < f.length <= 40 and f.number == 1]
    if not fs:
        return m_wire_varint(seed, data, rnd)
    f = rnd.choice(fs)
    dims = [rnd.choice(INTERESTING_INTS) * rnd.choice((1, 1, -1)) for _ in range(rnd.choice((1, 2, 4, 5, 9)))]
    payload = b"".join(_varint(d) for d in dims)
    return data[: f.len_at] + _varint(len(payload)) + payload + data[f.end:]


def m_wire_tag(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """A field's tag changed: another wire type, another number, number 0, or a group start."""
    fs = _fields(seed, data)
    if not fs:
        return m_bitflip(seed, data, rnd)
    f = rnd.choice(fs)
    tag_end = _read_varint(data, f.start, len(data))
    assert tag_end is not None
    choice = rnd.randrange(4)
    if choice == 0:
        tag = (f.number << 3) | rnd.randrange(8)
    elif choice == 1:
        tag = (rnd.choice((1, 2, 3, 4, 5, 6, 7, 8, 100, 147, 2**29 - 1, rnd.randrange(1, 200))) << 3) | f.wire
    elif choice == 2:
        tag = f.wire  # field number 0
    else:
        tag = (f.number << 3) | 3
    return data[: f.start] + _varint(tag) + data[tag_end[1]:]


def m_wire_groups(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Deep nesting: a run of start-group tags (closed, unclosed or mismatched) spliced in."""
    k = _pick_boundary(seed, data, rnd)
    depth = rnd.choice((1, 10, 63, 64, 65, 200, 5000))
    num = rnd.choice((9, 999, 15))
    opens = _varint(num << 3 | 3) * depth
    mode = rnd.randrange(3)
    closes = _varint(num << 3 | 4) * depth if mode == 0 else b"" if mode == 1 else _varint((num + 1) << 3 | 4)
    return data[:k] + opens + closes + data[k:]


def m_wire_nest(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Deep nesting through real message fields: layer { blobs { shape { ... } } } wrapped many times."""
    depth = rnd.choice((2, 20, 70, 300))
    body = data[: rnd.randrange(min(len(data), 200) + 1)]
    for _ in range(depth):
        body = CW.ld(rnd.choice((100, 7, 2, 6, 106)), body)
    return body


def m_wire_splice(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """A field copied from another place (duplicated blob, layer appended twice, ...)."""
    fs = _fields(seed, data)
    if not fs:
        return m_duplicate_span(seed, data, rnd)
    f = rnd.choice(fs)
    k = rnd.choice([g.start for g in fs] + [len(data)])
    return data[:k] + data[f.start:f.end] + data[k:]


def m_wire_drop_field(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """One field removed, with every enclosing length fixed up (a well-formed, smaller file)."""
    fs = _fields(seed, data)
    if not fs:
        return m_truncate_any(seed, data, rnd)
    victim = rnd.choice(fs)
    return _remove_span(data, victim.start, victim.end)


def _remove_span(data: bytes, i: int, j: int, start: int = 0, end: int | None = None) -> bytes:
    """``data`` with ``[i, j)`` cut out of the message ``[start, end)``, re-encoding the lengths of
    every enclosing field (a span inside a leaf payload, e.g. float data, is cut from it)."""
    end = len(data) if end is None else end
    fields = walk_wire(data, start, end, max_depth=0)
    if fields is not None:
        out = bytearray()
        pos = start
        for f in fields:
            out += data[pos:f.start]
            pos = f.end
            if i <= f.start and f.end <= j:
                continue  # the victim
            if f.wire == 2 and f.payload <= i and j <= f.payload + f.length and (i, j) != (f.start, f.end):
                inner = _remove_span(data, i, j, f.payload, f.payload + f.length)
                out += data[f.start:f.len_at] + _varint(len(inner)) + inner
            elif f.end <= i or f.start >= j:
                out += data[f.start:f.end]
            else:  # the span cuts across field boundaries: this is not a message, cut the bytes
                break
        else:
            out += data[pos:end]
            return bytes(out)
    return data[start:i] + data[j:end]


def m_float_data(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Weights overwritten with NaN/Inf/denormals (loaders must not care; forward propagates)."""
    if len(data) < 8:
        return data
    b = bytearray(data)
    vals = (np.nan, np.inf, -np.inf, 1e-45, 3.4e38, 0.0)
    for _ in range(rnd.choice((1, 8, 64))):
        i = rnd.randrange(0, len(b) - 4) & ~3
        b[i:i + 4] = struct.pack("<f", rnd.choice(vals))
    return bytes(b)


# -- text (prototxt, cfg, ascii t7) --
_TOKEN_RE = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|-?[0-9][0-9.eExXa-fA-F+-]*|\S')


def _tokens(data: bytes) -> list[re.Match[bytes]]:
    return list(_TOKEN_RE.finditer(data))


def m_text_number(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    toks = [m for m in _tokens(data) if m.group(0)[:1] in b"-0123456789"]
    if not toks:
        return m_text_token_dup(seed, data, rnd)
    m = rnd.choice(toks)
    return data[: m.start()] + rnd.choice(INTERESTING_TEXT_NUMS).encode() + data[m.end():]


def m_text_token_dup(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    toks = _tokens(data)
    if not toks:
        return data + b"{"
    m = rnd.choice(toks)
    if rnd.random() < 0.5:
        return data[: m.start()] + data[m.end():]  # delete a token
    return data[: m.end()] + b" " + m.group(0) + data[m.end():]


def m_text_swap_tokens(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """A token replaced by another token of the same file (names, types, field names, values)."""
    toks = _tokens(data)
    if len(toks) < 2:
        return m_text_token_dup(seed, data, rnd)
    a, b = rnd.choice(toks), rnd.choice(toks)
    return data[: a.start()] + b.group(0) + data[a.end():]


def m_text_strings(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    toks = [m for m in _tokens(data) if m.group(0)[:1] == b'"']
    if not toks:
        return m_text_swap_tokens(seed, data, rnd)
    m = rnd.choice(toks)
    repl = rnd.choice((b'""', b'"\\xff"', b'"\\777"', b'"a\\', b'"' + b"x" * 5000 + b'"', b'"\\u00e9"',
                       rnd.choice(toks).group(0), b'"data"', b"'q'", b'"\xff\xfe"'))
    return data[: m.start()] + repl + data[m.end():]


def m_text_nest(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    depth = rnd.choice((10, 63, 64, 65, 100, 1000, 20000))
    k = _pick_boundary(seed, data, rnd)
    name = rnd.choice((b"layer", b"convolution_param", b"x", b"shape", b"layer:"))
    opens = (name + b" { ") * depth
    closes = b"} " * (depth if rnd.random() < 0.7 else rnd.randrange(depth + 1))
    return data[:k] + opens + closes + data[k:]


def _splice_one(seed: Seed, data: bytes, rnd: random.Random, pattern: bytes, group: int,
                new: Callable[[re.Match[bytes]], bytes], fallback: Callable[..., bytes]) -> bytes:
    """Group ``group`` of one random match of ``pattern`` replaced by ``new(match)``; with no
    match, the ``fallback`` mutation instead."""
    occ = list(re.finditer(pattern, data))
    if not occ:
        return fallback(seed, data, rnd)
    m = rnd.choice(occ)
    return data[: m.start(group)] + new(m) + data[m.end(group):]


def m_caffe_rewire(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Bottom/top rewiring: cycles (a layer's bottom is its own or a later top), dangling names."""
    names = re.findall(rb'(?:bottom|top):\s*"([^"]*)"', data)
    return _splice_one(seed, data, rnd, rb'(bottom|top|input|name):\s*"([^"]*)"', 2,
                       lambda m: rnd.choice(names + [b"nope", b"", m.group(2)]) if names else b"nope",
                       m_text_swap_tokens)


def m_caffe_type(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """A layer's type swapped for another supported (or unsupported) one: weights now contradict."""
    from refnet.weights_import.caffe import SUPPORTED_TYPES

    def new(m: re.Match[bytes]) -> bytes:
        if m.group(1)[:1] == b'"':
            return b'"' + rnd.choice(SUPPORTED_TYPES + ("Python", "Data", "ArgMax", "")).encode() + b'"'
        return rnd.choice((b"CONVOLUTION", b"INNER_PRODUCT", b"POOLING", b"RELU", b"CONCAT", b"SLICE",
                           b"DATA", b"NONE", b"SOFTMAX_LOSS"))

    return _splice_one(seed, data, rnd, rb'type:\s*("[^"]*"|[A-Z_]+)', 1, new, m_text_swap_tokens)


def m_text_line_ops(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    lines = data.split(b"\n")
    if len(lines) < 2:
        return m_text_token_dup(seed, data, rnd)
    i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
    op = rnd.randrange(3)
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(j, lines[i])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


# -- cfg specific --
def m_cfg_value(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    vals = INTERESTING_TEXT_NUMS + ("", "abc", "-1,-1", ",".join(["-1"] * 5000), "1,2,3", "99", "-99", "0,0",
                                    "leaky", "linear", "gelu", ",")
    return _splice_one(seed, data, rnd, rb"(?m)^([a-z_]+)\s*=\s*([^\n#]*)", 2,
                       lambda m: rnd.choice(vals).encode(), m_text_line_ops)


def m_cfg_refs(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """route/shortcut references: to itself, to later layers, to detection layers, huge."""
    return _splice_one(seed, data, rnd, rb"(?m)^(layers|from)\s*=\s*([^\n#]*)", 2,
                       lambda m: rnd.choice((b"0", b"-1", b"1", b"5", b"100", b"-100", b"-1,0", b"2147483647",
                                             b"-2147483648", str(rnd.randrange(-40, 40)).encode())),
                       m_cfg_value)


def m_cfg_section(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    return _splice_one(seed, data, rnd, rb"(?m)^\[([^\]\n]*)\]", 1,
                       lambda m: rnd.choice((b"net", b"convolutional", b"maxpool", b"route", b"shortcut", b"yolo",
                                             b"region", b"connected", b"upsample", b"reorg", b"avgpool", b"softmax",
                                             b"dropout", b"crnn", b"", b"lstm", b"cost")),
                       m_text_line_ops)


# -- darknet weights --
def m_weights_header(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    if len(data) < 12:
        return m_random_bytes(seed, data, rnd)
    b = bytearray(data)
    i = rnd.choice((0, 4, 8))
    v = rnd.choice((0, 1, 2, 1000, 1001, -1, 2**31 - 1, -(2**31), 9))
    struct.pack_into("<i", b, i, v)
    return bytes(b)


def m_weights_resize(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    k = rnd.choice((1, 2, 3, 4, 8, 4096))
    return data + bytes(k) if rnd.random() < 0.5 else data[: max(len(data) - k, 0)]


# -- t7 --
def _t7_records(seed: Seed, data: bytes) -> list[tuple[int, str, int]]:
    if data is seed.files.get(seed.target):
        return seed.meta.get("records", [])
    return []


def m_t7_int(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """An int/long record (tag, length, size, stride, offset, index) set to an extreme value."""
    recs = [r for r in _t7_records(seed, data) if r[1] in ("int", "long")]
    if not recs or seed.fmt == "t7ascii":
        return m_t7_ascii_number(seed, data, rnd) if seed.fmt == "t7ascii" else m_bitflip(seed, data, rnd)
    off, kind, size = rnd.choice(recs)
    v = rnd.choice(INTERESTING_INTS + (-2, 3, 4, 5, 6, 7, 8, 9, 100))
    if rnd.random() < 0.3:
        v = -abs(v)
    fmt = "<i" if size == 4 else "<q"
    lo, hi = (-(2**31), 2**31 - 1) if size == 4 else (-(2**63), 2**63 - 1)
    return data[:off] + struct.pack(fmt, min(max(v, lo), hi)) + data[off + size:]


def m_t7_ascii_number(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    occ = list(re.finditer(rb"-?[0-9][0-9.eE+-]*", data))
    if not occ:
        return m_text_line_ops(seed, data, rnd)
    m = rnd.choice(occ)
    v = rnd.choice(INTERESTING_TEXT_NUMS + ("-2", "4", "5", "8", "1e999", "nan", "-0", "99999999999999999999"))
    return data[: m.start()] + v.encode() + data[m.end():]


def m_t7_double(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    recs = [r for r in _t7_records(seed, data) if r[1] == "double"]
    if not recs or seed.fmt == "t7ascii":
        return m_t7_int(seed, data, rnd)
    off, _, _ = rnd.choice(recs)
    v = rnd.choice((np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0, -1.0, 2.0**31, 2.0**53 + 1, 0.5, 1e-300))
    return data[:off] + struct.pack("<d", v) + data[off + 8:]


def m_t7_truncate_record(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    recs = _t7_records(seed, data)
    if not recs:
        return m_truncate_any(seed, data, rnd)
    off = rnd.choice(recs)[0]
    return data[: off + rnd.choice((0, 0, 1, 2, 3))]


def m_t7_object(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Structure-aware: the module tree edited before encoding (fields, classes, cycles, nesting)."""
    obj = seed.meta.get("obj")
    if obj is None:
        return m_bitflip(seed, data, rnd)
    tree = _clone(obj, {})
    mods = _modules_of(tree)
    if not mods:
        return m_bitflip(seed, data, rnd)
    m = rnd.choice(mods)
    op = rnd.randrange(9)
    weird = (None, -1, 0, 1e300, float("nan"), float("inf"), 2**31, -(2**31), 1.5, "str", True, {}, [1, 2],
             TW.empty(), TW.tensor(np.zeros((2, 3), np.float32)), TW.tensor(np.zeros(0, np.float32)))
    if op == 0 and isinstance(m.fields, dict) and m.fields:
        k = rnd.choice(list(m.fields))
        m.fields[k] = rnd.choice(weird)
    elif op == 1 and isinstance(m.fields, dict) and m.fields:
        del m.fields[rnd.choice(list(m.fields))]
    elif op == 2:
        from refnet.weights_import.torch import SUPPORTED_MODULES

        m.class_name = rnd.choice(sorted(f"nn.{n}" for n in SUPPORTED_MODULES) + ["nn.Module", "torch.FloatTensor",
                                                                                  "nn.", "x"])
    elif op == 3:  # cyclic reference: a container that contains itself (or its parent)
        target = rnd.choice(mods)
        if isinstance(target.fields, dict):
            target.fields.setdefault("modules", {})
            if isinstance(target.fields["modules"], dict):
                target.fields["modules"][len(target.fields["modules"]) + 1] = rnd.choice((target, tree, m))
    elif op == 4:  # deep nesting
        depth = rnd.choice((50, 99, 100, 101, 150, 199, 200, 201, 400, 3000))
        inner: Any = m
        for _ in range(depth):
            inner = TW.nn_Sequential(inner) if rnd.random() < 0.8 else [inner]
        _replace(tree, m, inner)
    elif op == 5:  # a tensor field with hostile geometry
        tensors = [(k, v) for k, v in (m.fields.items() if isinstance(m.fields, dict) else ())
                   if isinstance(v, TW.Tensor) and v.storage is not None]
        if tensors:
            k, t = rnd.choice(tensors)
            n = t.storage.data.size
            geo = rnd.choice((
                ((n,), (-1,), 0), ((n, n), (0, 0), 0), ((2**31, 2**31), (0, 0), 0), ((n,), (1,), n),
                ((n + 1,), (1,), 0), ((1 << 40,), (0,), 0), ((3, n), (1, -1), n - 1), ((), (), 0),
                ((n,), (1,), -5), ((2**62,), (2**62,), 0), ((n,) * 70, (0,) * 70, 0)))
            m.fields[k] = TW.Tensor(t.storage, geo[0], geo[1], geo[2], t.type)
    elif op == 6:  # huge storage declared for few bytes
        tensors = [(k, v) for k, v in (m.fields.items() if isinstance(m.fields, dict) else ())
                   if isinstance(v, TW.Tensor) and v.storage is not None]
        if tensors:
            k, t = rnd.choice(tensors)
            t.storage = TW.Storage(t.storage.data[:1], t.type)
            t.sizes, t.strides = (1 << 22,), (0,)
    elif op == 7:  # the same tensor shared by many modules (copy amplification)
        tensors = [v for v in (m.fields.values() if isinstance(m.fields, dict) else ())
                   if isinstance(v, TW.Tensor) and v.storage is not None]
        if tensors:
            t = tensors[0]
            big = TW.Tensor(t.storage, (1 << 21,), (0,), 0, t.type)
            for mm in mods:
                if isinstance(mm.fields, dict):
                    for kk in ("weight", "bias", "running_mean", "running_var"):
                        if kk in mm.fields:
                            mm.fields[kk] = big
    else:  # a module replaced by a function / raw value / a storage
        _replace(tree, m, rnd.choice((TW.Function(b"\x1bLua", {"up": 1}), 3.0, "nn.ReLU", TW.Storage(
            np.zeros(3, np.float32)), [m, m])))
    try:
        return TW.dumps(tree, ascii=seed.fmt == "t7ascii")
    except (TypeError, ValueError, OverflowError, struct.error, RecursionError):
        return data


def _clone(v: Any, memo: dict[int, Any]) -> Any:
    if id(v) in memo:
        return memo[id(v)]
    if isinstance(v, TW.Module):
        out = TW.Module(v.class_name, {}, v.version)
        memo[id(v)] = out
        out.fields = _clone(v.fields, memo)
        return out
    if isinstance(v, dict):
        out2: dict = {}
        memo[id(v)] = out2
        for k, x in v.items():
            out2[k] = _clone(x, memo)
        return out2
    if isinstance(v, list):
        out3: list = []
        memo[id(v)] = out3
        out3.extend(_clone(x, memo) for x in v)
        return out3
    if isinstance(v, TW.Tensor):
        out4 = TW.Tensor(v.storage, v.sizes, v.strides, v.offset, v.type, v.cuda)
        memo[id(v)] = out4
        return out4
    return v


def _objects(tree: Any) -> Iterator[Any]:
    """Every object of a writer tree once (by id), depth first; a module's fields dict comes right
    after the module. A dict's values are read after the consumer has seen it (it may change them)."""
    seen: set[int] = set()
    stack = [tree]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        yield v
        if isinstance(v, TW.Module):
            stack.append(v.fields)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _modules_of(tree: Any) -> list[TW.Module]:
    return [v for v in _objects(tree) if isinstance(v, TW.Module)]


def _replace(tree: Any, old: Any, new: Any) -> None:
    """Every dict value (module fields included) that is ``old`` becomes ``new``."""
    for v in _objects(tree):
        if isinstance(v, dict):
            for k, x in v.items():
                if x is old:
                    v[k] = new


COMMON: tuple[Mutator, ...] = (m_truncate_boundary, m_truncate_any, m_bitflip, m_byte_set, m_delete_span,
                               m_duplicate_span, m_insert_random)
MUTATORS: dict[str, tuple[Mutator, ...]] = {
    "prototxt": COMMON + (m_text_number, m_text_number, m_text_token_dup, m_text_swap_tokens, m_text_strings,
                          m_text_nest, m_caffe_rewire, m_caffe_rewire, m_caffe_type, m_caffe_type, m_text_line_ops),
    "caffemodel": COMMON + (m_wire_length, m_wire_length, m_wire_varint, m_wire_packed_dims, m_wire_tag,
                            m_wire_groups, m_wire_nest, m_wire_splice, m_wire_drop_field, m_wire_drop_field,
                            m_float_data),
    "t7": COMMON + (m_t7_int, m_t7_int, m_t7_int, m_t7_double, m_t7_truncate_record, m_t7_object, m_t7_object,
                    m_t7_object, m_float_data),
    "t7ascii": COMMON + (m_t7_ascii_number, m_t7_ascii_number, m_t7_truncate_record, m_t7_object, m_t7_object,
                         m_text_line_ops, m_text_token_dup),
    "cfg": COMMON + (m_cfg_value, m_cfg_value, m_cfg_value, m_cfg_refs, m_cfg_refs, m_cfg_section,
                     m_text_line_ops, m_text_number, m_text_swap_tokens, m_text_nest),
    "weights": COMMON + (m_weights_header, m_weights_header, m_weights_resize, m_float_data, m_truncate_boundary),
}


def mutate(seed: Seed, rnd: random.Random, n_ops: int | None = None) -> tuple[bytes, str]:
    """Apply 1-3 mutators of the seed's format; returns the bytes and the mutator names."""
    data = seed.files[seed.target]
    ops = MUTATORS[seed.fmt] if seed.fmt in MUTATORS else __import__("fuzz_onnx").MUTATORS
    n = n_ops if n_ops is not None else rnd.choice((1, 1, 1, 2, 3))
    names = []
    for _ in range(n):
        op = rnd.choice(ops)
        data = op(seed, data, rnd)
        names.append(op.__name__)
    return data, "+".join(names)


def generate(fmt: str, index: int, base_seed: int = 0) -> tuple[Case, str]:
    """The ``index``-th input of format ``fmt``: deterministic for a given ``base_seed``."""
    rnd = random.Random(f"{base_seed}:{fmt}:{index}")
    pool = seeds(fmt)
    seed = pool[rnd.randrange(len(pool))]
    data, how = mutate(seed, rnd)
    return seed.case(data, f"{seed.name}/{how}"), f"{seed.name}/{how}"


# ---- minimisation ------------------------------------------------------------------------------
def minimise(case: Case, kind: str, budget: int = 2000) -> Case:
    """Delta-debug the mutated file of ``case`` while it still escapes with ``kind``."""
    role = TARGET[case.fmt]
    data = case.files[role]
    tries = 0

    def still(d: bytes) -> bool:
        nonlocal tries
        tries += 1
        c = Case(case.fmt, {**case.files, role: d}, case.origin)
        try:
            run_case(c)
        except Escape as e:
            return e.kind == kind
        return False

    chunk = max(len(data) // 2, 1)
    while chunk >= 1 and tries < budget:
        i = 0
        changed = False
        while i < len(data) and tries < budget:
            cand = data[:i] + data[i + chunk:]
            if still(cand):
                data, changed = cand, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return Case(case.fmt, {**case.files, role: data}, case.origin)
