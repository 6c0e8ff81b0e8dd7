"""Darknet ``.cfg`` + ``.weights`` -> refnet :class:`~refnet.graph.Graph`.

The cfg is read the way Darknet's ``read_cfg`` reads it (all whitespace removed from a line,
``#``/``;`` comment lines, ``[section]`` headers, ``key=value`` options), but strictly: a line
that is neither is a :class:`~refnet.errors.ModelFormatError` with its ``line:col``. Layer
parameters follow Darknet's parser.c (AlexeyAB/darknet, which pjreddie's agrees with where
both define a rule); tensors and layers are named exactly as OpenCV's Darknet importer names
them (``conv_0``, ``bn_0``, ``leaky_1``, ``pool_2``, ``shortcut_8``, ``permute_121``,
``yolo_121``, ``detection_out``, ...), so ``net.trace`` compares with ``cv2.dnn`` by name.

The ``.weights`` file is an int32 ``major, minor, revision`` header, then ``seen`` (uint64 when
``major*10 + minor >= 2`` and neither is >= 1000, else uint32), then float32 blobs layer by
layer: convolutional = biases, [BN scales, rolling means, rolling variances], weights
``(filters, channels/groups, size, size)``; connected = biases, weights ``(outputs, inputs)``,
[BN scales, means, variances]. Before any array is made, the whole cfg is sized and compared
with the bytes present: a mismatch says how many floats were expected and found, and in
which layer the data runs out.

``quirks="cv2"`` reproduces what cv2.dnn 4.x does differently (see ``CV2_QUIRKS``) and records
each deviation it applies in ``graph.meta["quirks"]`` (layer, quirk key, what changed).
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.graph import Graph, Node
from refnet.weights_import._util import AppliedQuirk, LayerTable, check_quirks_mode, paused_gc

__all__ = ["read_darknet", "SUPPORTED_SECTIONS", "SUPPORTED_ACTIVATIONS", "CV2_QUIRKS", "INPUT_NAME"]

INPUT_NAME = "data"  # cv2's name for the network input (kFirstLayerName)

#: the builders (methods of _Builder) by section name, aliases after the canonical name;
#: SUPPORTED_SECTIONS and the alias map below the class are derived from it
section = LayerTable("Darknet section")

# Darknet activation name -> (IR op, attrs); "linear" adds no layer.
_ACTIVATIONS: dict[str, tuple[str, dict[str, float]]] = {
    "leaky": ("relu", {"negative_slope": 0.1}),
    "relu": ("relu", {"negative_slope": 0.0}),
    "relu6": ("clip", {"min": 0.0, "max": 6.0}),
    "hardtan": ("clip", {"min": -1.0, "max": 1.0}),
    "logistic": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "elu": ("elu", {"alpha": 1.0}),
    "swish": ("swish", {}),
    "mish": ("mish", {}),
}
SUPPORTED_ACTIVATIONS = ("linear",) + tuple(_ACTIVATIONS)
_DARKNET_ONLY_ACTIVATIONS = ("relie", "ramp", "plse", "revleaky", "loggy", "stair", "lhtan", "selu", "gelu",
                             "hard_mish", "normalize_channels", "normalize_channels_softmax",
                             "normalize_channels_softmax_maxval")

CV2_QUIRKS = {
    "bn_eps": "BatchNorm eps 1e-6 inside the sqrt (Darknet/AlexeyAB: 1e-5; pjreddie: sqrt(var) + 1e-6)",
    "default_activation": "conv/connected without activation= are linear (Darknet: logistic)",
    "connected_bn_order": "connected+BN weights read as biases, BN, weights (Darknet: biases, weights, BN)",
    "duplicate_keys": "a key given twice: the last value wins (Darknet: the first)",
    "maxpool_defaults": "maxpool size/stride default 2/2, stride_x/stride_y ignored (Darknet: stride 1, size=stride)",
    "upsample_default": "upsample stride defaults to 1 (Darknet: 2)",
    "conv_dilation": "convolutional dilation= and stride_x/stride_y are ignored",
    "head_threshold": "region/yolo zero class scores <= the cfg thresh (defaults: yolo 0.2, region 0.001) and run "
                      "per-class NMS inside the layer (yolo: cfg nms_threshold, default 0; region: always 0.4); "
                      "Darknet's layers only decode, thresholds are the caller's",
    "net_defaults": "missing [net] width/height/channels default to 416/416/3 (Darknet: an error)",
    "activation_any_layer": "activation= is applied after any section, e.g. [route] (Darknet: conv/connected/shortcut)",
    "softmax_axis": "softmax over channels only (Darknet: over all C*H*W values of each group)",
    "seen_width": "uint64 `seen` whenever major*10+minor >= 2 (pjreddie: not for transposed, >=1000 versions)",
    "shortcut_beta": "shortcut beta= ignored (pjreddie: the added layer is scaled by beta)",
    "shortcut_from": "shortcut from= with several layers adds only the first (AlexeyAB: all of them)",
}

MAX_CFG_BYTES = 16 << 20
MAX_SECTIONS = 100_000
MAX_LIST = 4096
MAX_DIM = 1 << 16  # input width/height/channels bound
MAX_INT = (1 << 31) - 1
MAX_ZERO_PARAMS = 1 << 28  # weights="zeros": largest architecture-only model we allocate
_INT_RE = re.compile(r"[+-]?\d+")


# ---- cfg text ------------------------------------------------------------------------------------
@dataclass
class _Opt:
    value: str
    line: int
    col: int


@dataclass
class _Section:
    kind: str  # canonical type ("net", "convolutional", ...)
    raw: str  # as written
    line: int
    opts: dict[str, list[_Opt]] = field(default_factory=dict)


def _parse_cfg(text: str, file: str) -> list[_Section]:
    """Sections in order; raises ModelFormatError with line:col on anything Darknet could not parse."""
    sections: list[_Section] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        col0 = len(raw) - len(raw.lstrip()) + 1
        if line[0] == "[":
            end = line.find("]")
            if end < 0:
                raise ModelFormatError("unterminated section header", file=file, line=lineno, col=col0,
                                       expected="'[type]'")
            kind = line[1:end]
            rest = line[end + 1:]
            if not kind or not re.fullmatch(r"[A-Za-z0-9_]+", kind) or (rest and rest[0] not in "#;"):
                raise ModelFormatError(f"malformed section header {raw.strip()!r}", file=file, line=lineno,
                                       col=col0, expected="'[type]' with a letters/digits/_ type")
            if len(sections) >= MAX_SECTIONS:
                raise ModelFormatError(f"more than {MAX_SECTIONS} sections", file=file, line=lineno)
            sections.append(_Section(_ALIASES.get(kind, kind), kind, lineno))
            continue
        eq = line.find("=")
        if eq < 0:
            raise ModelFormatError(f"cannot parse {raw.strip()!r}", file=file, line=lineno, col=col0,
                                   expected="'key=value', '[section]' or a '#'/';' comment")
        key, value = line[:eq], line[eq + 1:].split("#", 1)[0]
        vcol = raw.find("=") + 2
        if not key:
            raise ModelFormatError("option without a name", file=file, line=lineno, col=col0, expected="key=value")
        if not value:
            raise ModelFormatError(f"option {key!r} has no value", file=file, line=lineno, col=vcol,
                                   expected="key=value")
        if not sections:
            raise ModelFormatError(f"option {key!r} before the first section", file=file, line=lineno, col=col0,
                                   expected="'[net]' first")
        sections[-1].opts.setdefault(key, []).append(_Opt(value, lineno, vcol))
    return sections


class _Opts:
    """Typed access to one section's options, with Darknet's (first wins) or cv2's (last wins) rule."""

    def __init__(self, sec: _Section, file: str, last_wins: bool, layer: str) -> None:
        self.sec, self.file, self.last_wins, self.layer = sec, file, last_wins, layer
        self.dups: dict[str, tuple[str, str]] = {}  # key -> (Darknet's value, cv2's) where they differ

    def raw(self, key: str) -> _Opt | None:
        lst = self.sec.opts.get(key)
        if not lst:
            return None
        if self.last_wins:
            if len(lst) > 1 and lst[0].value != lst[-1].value:
                self.dups[key] = (lst[0].value, lst[-1].value)
            return lst[-1]
        return lst[0]

    def lenient_int(self, key: str, default: int) -> int | None:
        """What Darknet would read for ``key`` (first value wins), None where it would refuse it:
        for telling whether an option cv2 ignores changes anything."""
        lst = self.sec.opts.get(key)
        if not lst:
            return default
        v = lst[0].value
        return int(v) if _INT_RE.fullmatch(v) and len(v) <= 20 else None

    def lenient_float(self, key: str, default: float) -> float | None:
        """As :meth:`lenient_int`, for a number."""
        lst = self.sec.opts.get(key)
        if not lst:
            return default
        try:
            return float(lst[0].value)
        except ValueError:
            return None

    def has(self, key: str) -> bool:
        return key in self.sec.opts

    def error(self, msg: str, key: str | None = None, expected: str | None = None) -> ModelFormatError:
        o = self.raw(key) if key else None
        return ModelFormatError(msg, file=self.file, line=o.line if o else self.sec.line, col=o.col if o else None,
                                expected=expected, layer=self.layer)

    def int_(self, key: str, default: int | None, lo: int = -MAX_INT, hi: int = MAX_INT) -> int:
        o = self.raw(key)
        if o is None:
            if default is None:
                raise self.error(f"[{self.sec.raw}] needs {key}=", expected=f"{key}=<integer>")
            return default
        if not _INT_RE.fullmatch(o.value):
            raise self.error(f"{key}={o.value!r} is not an integer", key, expected="an integer")
        if len(o.value) > 20:  # far out of range (and past Python's int/str digit limit)
            raise self.error(f"{key}={o.value[:20]}... ({len(o.value)} digits) out of range", key,
                             expected=f"{lo} <= {key} <= {hi}")
        v = int(o.value)
        if not lo <= v <= hi:
            raise self.error(f"{key}={v} out of range", key, expected=f"{lo} <= {key} <= {hi}")
        return v

    def float_(self, key: str, default: float) -> float:
        o = self.raw(key)
        if o is None:
            return default
        return _to_float(o.value, lambda m: self.error(f"{key}={o.value!r}: {m}", key, expected="a finite number"))

    def str_(self, key: str, default: str) -> str:
        o = self.raw(key)
        return default if o is None else o.value

    def list_(self, key: str, conv: Callable[[str], Any], what: str) -> list[Any] | None:
        o = self.raw(key)
        if o is None:
            return None
        items = o.value.split(",")
        if len(items) > MAX_LIST:
            raise self.error(f"{key} has more than {MAX_LIST} values", key, expected=f"at most {MAX_LIST}")
        out = []
        for it in items:
            if not it:
                raise self.error(f"{key}={o.value!r} has an empty item", key, expected=f"comma-separated {what}")
            try:
                out.append(conv(it))
            except ValueError:
                raise self.error(f"{key}={o.value!r}: {it!r} is not {what}", key,
                                 expected=f"comma-separated {what}") from None
        return out


def _to_float(s: str, err: Callable[[str], Exception]) -> float:
    try:
        v = float(s)
    except ValueError:
        raise err("not a number") from None
    if not math.isfinite(v):
        raise err("not finite")
    return v


def _int_item(s: str) -> int:
    if not _INT_RE.fullmatch(s) or len(s) > 20:
        raise ValueError(s)
    return int(s)


def _float_item(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(s)
    return v


# ---- weights -------------------------------------------------------------------------------------
class _Source:
    """Where parameters come from: counting (pass 1), a bounded byte reader, or zeros."""

    def __init__(self, mode: str, data: bytes | memoryview | None = None, offset: int = 0, file: str = "<weights>"):
        self.mode, self.file = mode, file
        self.buf = memoryview(data) if data is not None else None
        self.pos = offset
        self.total = 0  # floats asked for so far
        self.log: list[tuple[str, str, int, int]] = []  # (layer, what, first float, count)

    def take(self, count: int, layer: str, what: str, fill: float = 0.0) -> np.ndarray | None:
        """``count`` float32 values: None while counting; bounds-checked before any array is made."""
        self.log.append((layer, what, self.total, count))
        self.total += count
        if self.mode == "count":
            return None
        if self.mode == "zeros":
            return np.full(count, fill, dtype=np.float32)
        assert self.buf is not None
        nbytes = 4 * count
        if nbytes > len(self.buf) - self.pos:  # pass 1 guarantees this cannot happen; keep the bound anyway
            raise ModelFormatError(f"{what}: needs {count} floats, {(len(self.buf) - self.pos) // 4} remain",
                                   file=self.file, offset=self.pos, layer=layer)
        arr = np.frombuffer(self.buf[self.pos:self.pos + nbytes], dtype="<f4")
        self.pos += nbytes
        return arr.astype(np.float32, copy=False)


def _read_header(data: bytes, file: str, cv2_rule: bool, applied: list[AppliedQuirk]
                 ) -> tuple[tuple[int, int, int, int], int, bool]:
    if len(data) < 16:
        raise ModelFormatError(f"file too short for a Darknet header ({len(data)} bytes)", file=file, offset=0,
                               expected="int32 major, minor, revision + seen")
    major, minor, revision = struct.unpack_from("<iii", data, 0)
    wide = major * 10 + minor >= 2 and (cv2_rule or (major < 1000 and minor < 1000))
    if cv2_rule and wide and not (major < 1000 and minor < 1000):
        applied.append(AppliedQuirk("", "seen_width", f"seen: uint32 -> uint64 (version {major}.{minor})"))
    if wide:
        if len(data) < 20:
            raise ModelFormatError("file ends inside the 64-bit `seen` counter", file=file, offset=12,
                                   expected="8 bytes")
        (seen,) = struct.unpack_from("<Q", data, 12)
        off = 20
    else:
        (seen,) = struct.unpack_from("<I", data, 12)
        off = 16
    transpose = major > 1000 or minor > 1000
    return (major, minor, revision, seen), off, transpose


# ---- graph building --------------------------------------------------------------------------------
class _Builder:
    """Walks the sections, tracks Darknet shapes (C, H, W), emits nodes named as cv2 names them."""

    def __init__(self, sections: list[_Section], file: str, quirks: str, src: _Source, transpose: bool,
                 make_nodes: bool = True) -> None:
        self.file, self.cv2, self.src, self.transpose = file, quirks == "cv2", src, transpose
        self.make_nodes = make_nodes  # False: a counting pass that only sizes the weights
        self.nodes: list[Node] = []
        self.cv_id = 0
        self.last = INPUT_NAME
        self.fused: list[str] = []
        self.shapes: list[tuple[int, int, int]] = []
        self.kinds: list[str] = []
        self.table: list[dict[str, Any]] = []
        self.n_regions = 0
        self.applied: list[AppliedQuirk] = []  # cv2 quirks applied (graph.meta["quirks"])
        self.section_nodes: list[str] = []  # the current section's layers
        if not sections or sections[0].kind != "net":
            if not self.cv2:
                line = sections[0].line if sections else 1
                raise ModelFormatError("the first section must be [net] or [network]", file=file, line=line,
                                       expected="[net]")
            net = _Section("net", "net", 1)
        else:
            net = sections[0]
            sections = sections[1:]
        extra = [s for s in sections if s.kind == "net"]
        if extra:
            raise ModelFormatError("a second [net] section", file=file, line=extra[0].line, expected="one [net]")
        o = _Opts(net, file, self.cv2, "[net]")
        dflt = 416 if self.cv2 else None
        self.in_shape = (o.int_("channels", 3 if self.cv2 else None, 1, MAX_DIM),
                         o.int_("height", dflt, 1, MAX_DIM), o.int_("width", dflt, 1, MAX_DIM))
        missing = [k for k in ("channels", "height", "width") if not o.has(k)]
        if self.cv2 and missing:
            self.quirk("", "net_defaults", f"{'/'.join(missing)}: missing -> the defaults 3 channels, 416x416")
        self.duplicates(o, "")
        self.sections = sections

    def quirk(self, layer: str, key: str, change: str) -> None:
        """Record that quirks="cv2" made ``change`` to ``layer`` ("": the whole model)."""
        assert self.cv2 and key in CV2_QUIRKS, key
        self.applied.append(AppliedQuirk(layer, key, change))

    def duplicates(self, o: _Opts, layer: str) -> None:
        """Record the keys given twice whose last value (cv2) differs from the first (Darknet)."""
        for key, (first, last) in o.dups.items():
            self.quirk(layer, "duplicate_keys", f"{key}: {first} -> {last} (the last of its values)")

    # -- helpers --
    def add(self, name: str, op: str, inputs: tuple[str, ...], attrs: dict[str, Any] | None = None,
            params: dict[str, np.ndarray | None] | None = None) -> str:
        if self.make_nodes:
            p = {k: v for k, v in params.items() if v is not None} if params else {}
            self.nodes.append(Node(name, op, inputs, (name,), attrs or {}, p))
        self.last = name
        self.section_nodes.append(name)
        return name

    def ref(self, o: _Opts, key: str, idx: int, value: int) -> int:
        j = value if value >= 0 else idx + value
        if not 0 <= j < idx:
            raise o.error(f"{key} refers to layer {value} -> {j}, which is not an earlier layer", key,
                          expected=f"an index in [0, {idx}) or a negative offset")
        if self.kinds[j] in ("region", "yolo"):
            raise o.error(f"{key} refers to the detection layer {j}; its output is not a feature map", key,
                          expected="a feature-map layer")
        return j

    def activation(self, o: _Opts, kind: str) -> None:
        darknet_reads = kind in ("convolutional", "connected", "shortcut")
        applies = darknet_reads or self.cv2
        default = "linear" if (self.cv2 or kind == "shortcut") else "logistic"
        name = o.str_("activation", default) if applies else "linear"
        if self.cv2 and kind != "shortcut" and darknet_reads and not o.has("activation"):
            self.quirk(self.last, "default_activation", "activation: logistic -> linear (no activation= given)")
        if name == "linear":
            return
        if name not in _ACTIVATIONS:
            if name in _DARKNET_ONLY_ACTIVATIONS:
                raise UnsupportedLayerError(o.layer, f"activation={name}", SUPPORTED_ACTIVATIONS, file=self.file,
                                            detail=f"line {o.raw('activation').line}")  # type: ignore[union-attr]
            raise o.error(f"unknown activation {name!r}", "activation",
                          expected="one of " + ", ".join(SUPPORTED_ACTIVATIONS))
        op, attrs = _ACTIVATIONS[name]
        act = self.add(f"{name}_{self.cv_id}", op, (self.last,), attrs)
        if not darknet_reads:
            self.quirk(act, "activation_any_layer", f"activation={name} applied after [{kind}] (Darknet: ignored)")

    # -- the walk --
    def build(self) -> None:
        c, h, w = self.in_shape
        for i, sec in enumerate(self.sections):
            kind = sec.kind
            o = _Opts(sec, self.file, self.cv2, f"#{i} [{sec.raw}] (line {sec.line})")
            handler = section.get(kind)
            if handler is None:
                raise UnsupportedLayerError(f"#{i} (line {sec.line})", sec.raw, SUPPORTED_SECTIONS, file=self.file)
            self.section_nodes = []
            c, h, w = handler.fn(self, o, i, (c, h, w))
            if min(c, h, w) < 1:
                raise o.error(f"output shape {(c, h, w)} is empty", expected="C, H, W >= 1")
            self.activation(o, kind)
            if o.dups:
                self.duplicates(o, self.section_nodes[0] if self.section_nodes else "")
            self.fused.append(self.last)
            self.shapes.append((c, h, w))
            self.kinds.append(kind)
            self.table.append({"index": i, "type": sec.raw, "line": sec.line, "output": self.last,
                               "shape": (c, h, w)})

    def _unsupported_flags(self, o: _Opts, flags: tuple[str, ...]) -> None:
        for f in flags:
            if o.has(f) and o.str_(f, "0") not in ("0", "0.0"):
                raise UnsupportedLayerError(o.layer, f"[{o.sec.raw}] {f}={o.str_(f, '')}", SUPPORTED_SECTIONS,
                                            file=self.file, detail="option not implemented")

    def _bn(self, name: str, n: int, params: dict[str, np.ndarray | None]) -> None:
        eps = 1e-6 if self.cv2 else 1e-5
        self.add(name, "batch_norm", (self.last,), {"eps": eps},
                 {"mean": params["mean"], "var": params["var"], "weight": params["scales"], "bias": params["bias"]})
        if self.cv2:
            self.quirk(name, "bn_eps", "eps: 1e-05 -> 1e-06")

    @section("convolutional", "conv")
    def _convolutional(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        self._unsupported_flags(o, ("binary", "xnor", "flipped", "antialiasing", "sway", "rotate", "stretch",
                                    "stretch_sway", "coordconv", "deform", "share_index", "assisted_excitation"))
        n = o.int_("filters", 1, 1, 1 << 20)
        k = o.int_("size", 1, 1, 1 << 10)
        g = o.int_("groups", 1, 1, 1 << 20)
        s = o.int_("stride", 1, 1, 1 << 10)
        sy, sx = s, s
        d = 1
        if not self.cv2:
            sx = o.int_("stride_x", -1, -MAX_INT, 1 << 10)
            sy = o.int_("stride_y", -1, -MAX_INT, 1 << 10)
            if sx < 1 or sy < 1:  # Darknet: both given and positive, or fall back to stride
                sx, sy = (s if sx < 1 else sx), (s if sy < 1 else sy)
            d = o.int_("dilation", 1, 1, 1 << 10) if k > 1 else 1
        ignored = self.cv2 and self._conv_options_ignored(o, k, s)
        pad = k // 2 if o.int_("pad", 0, 0, 1) else o.int_("padding", 0, 0, 1 << 10)
        bn_mode = o.int_("batch_normalize", 0, 0, 2)
        bn = bn_mode == 1 if self.cv2 else bn_mode >= 1  # Darknet: 2 = cbn (same inference rule); cv2: only 1
        if c % g or n % g:
            raise o.error(f"groups={g} must divide the input channels ({c}) and filters ({n})", "groups",
                          expected="a common divisor")
        pe = pad * d  # Darknet pads by padding * dilation (im2col_cpu_ext)
        span = d * (k - 1) + 1
        ho, wo = (h + 2 * pe - span) // sy + 1, (w + 2 * pe - span) // sx + 1
        name = f"conv_{self.cv_id}"
        bias = self.src.take(n, name, "biases")
        bnp = self._bn_params(n, name) if bn else {}
        wt = self.src.take(n * (c // g) * k * k, name, "weights")
        weight = None if wt is None else wt.reshape(n, c // g, k, k)
        self.add(name, "conv", (self.last,),
                 {"stride": (sy, sx), "pad": (pe, pe, pe, pe), "dilation": (d, d), "groups": g},
                 {"weight": weight, "bias": None if bn else bias})
        if ignored:
            self.quirk(name, "conv_dilation", ignored)
        if bn:
            self._bn(f"bn_{self.cv_id}", n, {**bnp, "bias": bias})
        self.cv_id += 1
        return n, ho, wo

    @staticmethod
    def _conv_options_ignored(o: _Opts, k: int, s: int) -> str | None:
        """What Darknet would read from dilation= and stride_x=/stride_y= that cv2 ignores, or None."""
        sx, sy = o.lenient_int("stride_x", -1), o.lenient_int("stride_y", -1)
        if sx is not None and sy is not None and (sx < 1 or sy < 1):
            sx, sy = (s if sx < 1 else sx), (s if sy < 1 else sy)
        d = o.lenient_int("dilation", 1) if k > 1 else 1
        if (sy, sx, d) == (s, s, 1):
            return None
        return f"stride/dilation: ({sy}, {sx})/{d} -> ({s}, {s})/1 (dilation=, stride_x/stride_y ignored)"

    def _bn_params(self, n: int, name: str) -> dict[str, np.ndarray | None]:
        return {"scales": self.src.take(n, name, "BN scales", 1.0), "mean": self.src.take(n, name, "BN means"),
                "var": self.src.take(n, name, "BN variances", 1.0)}

    @section("connected", "conn")
    def _connected(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        inputs = shape[0] * shape[1] * shape[2]
        n = o.int_("output", 1, 1, 1 << 24)
        bn = o.int_("batch_normalize", 0, 0, 1) == 1
        name = f"fullyConnected_{self.cv_id}"
        bias = self.src.take(n, name, "biases")
        bnp: dict[str, np.ndarray | None] = {}
        if bn and self.cv2:
            bnp = self._bn_params(n, name)
        wt = self.src.take(n * inputs, name, "weights")
        if bn and not self.cv2:
            bnp = self._bn_params(n, name)
        weight = None
        if wt is not None:
            weight = wt.reshape(inputs, n).T.copy() if self.transpose else wt.reshape(n, inputs)
        self.add(name, "linear", (self.last,), {"axis": 1}, {"weight": weight, "bias": None if bn else bias})
        if bn:
            self._bn(f"bn_{self.cv_id}", n, {**bnp, "bias": bias})
            if self.cv2:
                for layer in (name, f"bn_{self.cv_id}"):
                    self.quirk(layer, "connected_bn_order", "weights read as biases, BN, weights (Darknet: biases, "
                                                          "weights, BN)")
        self.cv_id += 1
        return n, 1, 1

    @section("maxpool", "max")
    def _maxpool(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        self._unsupported_flags(o, ("maxpool_depth", "antialiasing"))
        if self.cv2:
            k = o.int_("size", 2, 1, 1 << 10)
            sy = sx = o.int_("stride", 2, 1, 1 << 10)
            ds = o.lenient_int("stride", 1)
            faithful = (o.lenient_int("size", ds), o.lenient_int("stride_y", ds), o.lenient_int("stride_x", ds))
            if faithful != (k, sy, sx):
                self.quirk(f"pool_{self.cv_id}", "maxpool_defaults",
                           f"size/stride: {faithful[0]}/({faithful[1]}, {faithful[2]}) -> {k}/({sy}, {sx})")
        else:
            s = o.int_("stride", 1, 1, 1 << 10)
            sx, sy = o.int_("stride_x", s, 1, 1 << 10), o.int_("stride_y", s, 1, 1 << 10)
            k = o.int_("size", s, 1, 1 << 10)
        p = o.int_("padding", k - 1, 0, 1 << 10)
        if p - p // 2 >= k:
            raise o.error(f"padding={p} leaves windows entirely in the padding (size={k})", "padding",
                          expected=f"padding <= {2 * k - 2}")
        ho, wo = (h + p - k) // sy + 1, (w + p - k) // sx + 1
        lo, hi = p // 2, p - p // 2
        self.add(f"pool_{self.cv_id}", "max_pool", (self.last,),
                 {"kernel": (k, k), "stride": (sy, sx), "pad": (lo, lo, hi, hi), "ceil_mode": False})
        self.cv_id += 1
        return c, ho, wo

    @section("avgpool", "avg")
    def _avgpool(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        self.add(f"avgpool_{self.cv_id}", "avg_pool", (self.last,), {"global_pooling": True})
        self.cv_id += 1
        return shape[0], 1, 1

    @section("softmax", "soft")
    def _softmax(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        self._unsupported_flags(o, ("tree", "spatial"))
        g = o.int_("groups", 1, 1, 1 << 20)
        t = o.float_("temperature", 1.0)
        if t <= 0:
            raise o.error("temperature must be > 0", "temperature", expected="temperature > 0")
        size = shape[0] * shape[1] * shape[2]
        if size % g:
            raise o.error(f"groups={g} does not divide the {size} inputs", "groups", expected="a divisor")
        name = f"softmax_{self.cv_id}"
        # over channels equals Darknet's flattened rule when the input is 1x1 for any input size
        spatial_free = i > 0 and self.kinds[i - 1] in ("avgpool", "connected")
        if g == 1 and t == 1.0 and (self.cv2 or spatial_free):
            self.add(name, "softmax", (self.last,), {"axis": 1})
            if not spatial_free:
                self.quirk(name, "softmax_axis", "op: darknet_softmax -> softmax (axis 1)")
        else:
            self.add(name, "darknet_softmax", (self.last,), {"groups": g, "temperature": t})
        self.cv_id += 1
        return shape

    @section("dropout")
    def _dropout(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        src = self.fused[i - 1] if i > 0 else INPUT_NAME
        self.add(f"identity_{self.cv_id}", "identity", (src,))
        self.cv_id += 1
        return shape

    @section("route")
    def _route(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        vals = o.list_("layers", _int_item, "integers")
        if not vals:
            raise o.error("[route] needs layers=", expected="layers=<indices>")
        ids = [self.ref(o, "layers", i, v) for v in vals]
        g = o.int_("groups", 1, 1, 1 << 20)
        gid = o.int_("group_id", 0, 0, g - 1)
        hw = self.shapes[ids[0]][1:]
        for j in ids:
            if self.shapes[j][1:] != hw:
                raise o.error(f"route inputs differ in size: layer {ids[0]} is {self.shapes[ids[0]]}, layer {j} is "
                              f"{self.shapes[j]}", "layers", expected="equal height and width")
            if self.shapes[j][0] % g:
                raise o.error(f"groups={g} does not divide the {self.shapes[j][0]} channels of layer {j}", "groups",
                              expected="a divisor of every input's channels")
        srcs = [self.fused[j] for j in ids]
        c = sum(self.shapes[j][0] for j in ids) // g
        if g > 1:  # cv2: one Slice per input (each taking a layer id), then a Concat
            parts = []
            for s in srcs:
                parts.append(self.add(f"slice_{self.cv_id}", "route_group", (s,), {"groups": g, "group_id": gid}))
                self.cv_id += 1
            if len(parts) > 1:
                self.add(f"concat_{self.cv_id}", "concat", tuple(parts), {"axis": 1})
                self.cv_id += 1
        else:
            if len(srcs) == 1:
                self.add(f"identity_{self.cv_id}", "identity", tuple(srcs))
            else:
                self.add(f"concat_{self.cv_id}", "concat", tuple(srcs), {"axis": 1})
            self.cv_id += 1
        return (c,) + hw

    @section("shortcut")
    def _shortcut(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        wt = o.str_("weights_type", "none")
        if wt != "none":
            raise UnsupportedLayerError(o.layer, f"[shortcut] weights_type={wt}", SUPPORTED_SECTIONS, file=self.file)
        vals = o.list_("from", _int_item, "integers")
        if not vals:
            raise o.error("[shortcut] needs from=", expected="from=<index>")
        if self.cv2 and len(vals) > 1:
            self.quirk(f"shortcut_{self.cv_id}", "shortcut_from", f"from: {vals} -> {vals[:1]}")
            vals = vals[:1]
        ids = [self.ref(o, "from", i, v) for v in vals]
        for j in ids:
            if self.shapes[j][1:] != shape[1:]:
                raise o.error(f"shortcut from layer {j} {self.shapes[j]} to {shape}: different spatial sizes are not "
                              "supported", "from", expected="equal height and width")
        alpha = o.float_("alpha", 1.0)
        beta = 1.0 if self.cv2 else o.float_("beta", 1.0)
        if self.cv2 and o.lenient_float("beta", 1.0) != 1.0:
            self.quirk(f"shortcut_{self.cv_id}", "shortcut_beta", f"beta: {o.sec.opts['beta'][0].value} -> 1.0")
        self.add(f"shortcut_{self.cv_id}", "shortcut", (self.last,) + tuple(self.fused[j] for j in ids),
                 {"alpha": alpha, "beta": beta})
        self.cv_id += 1
        return shape

    @section("upsample")
    def _upsample(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        s = o.int_("stride", 1 if self.cv2 else 2, -(1 << 10), 1 << 10)
        if self.cv2 and not o.has("stride"):
            self.quirk(f"upsample_{self.cv_id}", "upsample_default", "stride: 2 -> 1 (the default)")
        scale = o.float_("scale", 1.0)
        if s < 1 or (scale != 1.0 and not self.cv2):
            raise UnsupportedLayerError(o.layer, "[upsample]", SUPPORTED_SECTIONS, file=self.file,
                                        detail=f"stride={s} scale={scale}: only positive strides and scale=1")
        self.add(f"upsample_{self.cv_id}", "resize", (self.last,), {"mode": "nearest", "scale": (s, s)})
        self.cv_id += 1
        return c, h * s, w * s

    @section("reorg")
    def _reorg(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        s = o.int_("stride", 1, 1, 1 << 10)
        self._unsupported_flags(o, ("reverse", "flatten", "extra"))
        if h % s or w % s:
            raise o.error(f"reorg stride {s} must divide the input size {h}x{w}", "stride", expected="a divisor")
        self.add(f"reorg_{self.cv_id}", "reorg", (self.last,), {"stride": s})
        self.cv_id += 1
        return c * s * s, h // s, w // s

    def _head_common(self, o: _Opts, num: int) -> tuple[int, list[float]]:
        classes = o.int_("classes", 20, 1, 1 << 20)
        anchors = o.list_("anchors", _float_item, "numbers")
        if anchors is None or len(anchors) != 2 * num:
            got = "none" if anchors is None else len(anchors)
            raise o.error(f"anchors must hold 2*num = {2 * num} values, got {got}", "anchors",
                          expected=f"{2 * num} anchors")
        return classes, anchors

    @section("region")
    def _region(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        self._unsupported_flags(o, ("tree", "map"))
        num = o.int_("num", 1, 1, MAX_LIST)
        coords = o.int_("coords", 4, 4, 4)
        classes, anchors = self._head_common(o, num)
        if shape[0] != num * (coords + 1 + classes):
            raise o.error(f"input has {shape[0]} channels; num*(coords+1+classes) = {num * (coords + 1 + classes)}",
                          "classes", expected="as many channels as num*(coords+1+classes)")
        softmax = o.int_("softmax", 0, 0, 1) == 1
        thresh = o.float_("thresh", 0.001)  # Darknet: a training parameter; cv2: applied in the layer
        # cv2 4.x's Region layer always runs NMS at its default 0.4 (the cfg's nms_threshold is not read)
        thresh, nms = (thresh, 0.4) if self.cv2 else (0.0, 0.0)
        region = "detection_out" if self.n_regions == 0 else f"detection_out_{self.cv_id}"
        if self.cv2:
            self.quirk(region, "head_threshold", f"thresh/nms_threshold: 0.0/0.0 -> {thresh}/0.4")
        classfix = o.int_("classfix", 0, -1, 1)
        perm = self.add(f"permute_{self.cv_id}", "permute", (self.last,), {"order": (0, 2, 3, 1)})
        self.n_regions += 1
        self.add(region, "region", (perm,),
                 {"anchors": tuple(anchors), "classes": classes, "coords": coords, "num": num, "softmax": softmax,
                  "thresh": thresh, "nms_threshold": nms, "classfix": classfix})
        self.cv_id += 1
        return shape

    @section("yolo")
    def _yolo(self, o: _Opts, i: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        self._unsupported_flags(o, ("map",))
        num = o.int_("num", 1, 1, MAX_LIST)
        classes, anchors = self._head_common(o, num)
        mask = o.list_("mask", _int_item, "integers")
        if mask is None:
            if self.cv2:
                raise o.error("[yolo] needs mask= (cv2 requires it)", expected="mask=<anchor indices>")
            mask = list(range(num))
        if any(not 0 <= m < num for m in mask):
            raise o.error(f"mask {mask[:16]} indexes past num={num} anchors", "mask", expected=f"indices < {num}")
        if shape[0] != len(mask) * (5 + classes):
            raise o.error(f"input has {shape[0]} channels; len(mask)*(5+classes) = {len(mask) * (5 + classes)}",
                          "classes", expected="as many channels as len(mask)*(5+classes)")
        used = tuple(v for m in mask for v in anchors[2 * m:2 * m + 2])
        new_coords = o.int_("new_coords", 0, 0, 1) == 1
        thresh, nms = o.float_("thresh", 0.2), o.float_("nms_threshold", 0.0)
        if not self.cv2:  # Darknet's layer only decodes; the detector applies the caller's thresholds
            thresh, nms = 0.0, 0.0
        elif thresh or nms:
            self.quirk(f"yolo_{self.cv_id}", "head_threshold", f"thresh/nms_threshold: 0.0/0.0 -> {thresh}/{nms}")
        perm = self.add(f"permute_{self.cv_id}", "permute", (self.last,), {"order": (0, 2, 3, 1)})
        self.add(f"yolo_{self.cv_id}", "yolo", (perm, INPUT_NAME),
                 {"anchors": used, "classes": classes, "thresh": thresh, "nms_threshold": nms,
                  "scale_x_y": o.float_("scale_x_y", 1.0), "new_coords": new_coords})
        self.cv_id += 1
        return shape


#: every section name read_darknet builds (aliases included)
SUPPORTED_SECTIONS: tuple[str, ...] = section.names()
_ALIASES = {**section.aliases(), "network": "net"}


# ---- public -----------------------------------------------------------------------------------------
def _read_bytes(path: str | os.PathLike, what: str, limit: int | None = None) -> bytes:
    try:
        size = os.path.getsize(path)
        if limit is not None and size > limit:
            raise ModelFormatError(f"{what} is {size} bytes, larger than the {limit}-byte limit", file=str(path))
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ModelFormatError(f"cannot read the {what}: {e.strerror or e}", file=str(path)) from None


def read_darknet(cfg: str | os.PathLike | None, weights: str | os.PathLike | None = None, *, quirks: str = "none",
                 cfg_text: str | None = None, weights_bytes: bytes | None = None) -> Graph:
    """Parse a Darknet model into a Graph named like cv2.dnn's Darknet importer names it.

    ``cfg``/``weights`` are paths; ``cfg_text``/``weights_bytes`` give the contents directly
    (``cfg``/``weights`` then only name them in messages). ``weights=None`` (and no bytes)
    means the model has no weights file: allowed only when no layer has parameters;
    ``weights="zeros"`` explicitly asks for an architecture-only graph with zero weights
    (BN scale and variance 1). ``quirks="cv2"`` reproduces cv2.dnn's deviations (CV2_QUIRKS).
    """
    with paused_gc():
        return _read_darknet(cfg, weights, quirks=quirks, cfg_text=cfg_text, weights_bytes=weights_bytes)


def _read_darknet(cfg: str | os.PathLike | None, weights: str | os.PathLike | None = None, *, quirks: str = "none",
                 cfg_text: str | None = None, weights_bytes: bytes | None = None) -> Graph:
    """read_darknet without the garbage-collector pause."""
    check_quirks_mode(quirks)
    cfg_name = str(cfg) if cfg is not None else "<cfg>"
    if cfg_text is None:
        if cfg is None:
            raise ValueError("give cfg (a path) or cfg_text")
        raw = _read_bytes(cfg, "cfg", MAX_CFG_BYTES)
        cfg_text = raw.decode("utf-8", errors="replace")
    elif len(cfg_text) > MAX_CFG_BYTES:
        raise ModelFormatError(f"cfg text longer than {MAX_CFG_BYTES} characters", file=cfg_name,
                               offset=MAX_CFG_BYTES, expected="a smaller cfg")
    sections = _parse_cfg(cfg_text, cfg_name)

    zeros = isinstance(weights, str) and weights == "zeros" and weights_bytes is None
    w_name = "<weights bytes>" if weights_bytes is not None else (str(weights) if weights is not None else None)
    data: bytes | None = None
    if weights_bytes is not None:
        data = bytes(weights_bytes)
        if weights is not None and not zeros:
            w_name = str(weights)
    elif weights is not None and not zeros:
        data = _read_bytes(weights, "weights file")

    header: tuple[int, int, int, int] | None = None
    off, transpose = 0, False
    applied: list[AppliedQuirk] = []  # cv2 quirks of the whole file, then the builder's
    if data is not None:
        header, off, transpose = _read_header(data, w_name or "<weights>", quirks == "cv2", applied)

    counter = _Source("count")
    first = _Builder(sections, cfg_name, quirks, counter, transpose, make_nodes=data is None and not zeros)
    first.build()
    need = counter.total
    if data is not None:
        avail_bytes = len(data) - off
        have = avail_bytes // 4
        if have != need or avail_bytes % 4:
            raise _size_error(counter, need, have, avail_bytes, off, w_name or "<weights>")
        src = _Source("bytes", data, off, w_name or "<weights>")
    elif zeros:
        if need > MAX_ZERO_PARAMS:
            raise ModelFormatError(f"weights='zeros' would allocate {need} floats (limit {MAX_ZERO_PARAMS})",
                                   file=cfg_name)
        src = _Source("zeros")
    elif need:
        layer = counter.log[0][0]
        raise ModelFormatError(f"the cfg has {need} parameters (first in layer {layer}) but no weights were "
                               "given; pass the .weights file, weights_bytes, or weights='zeros' for an "
                               "architecture-only graph", file=cfg_name, layer=layer,
                               expected=f"{need} floats of weights")
    if data is None and not zeros:
        b = first  # no parameters: the counting pass built the whole graph
    else:
        b = _Builder(sections, cfg_name, quirks, src, transpose)
        b.build()
    c, h, w = b.in_shape
    meta = {"quirks": applied + b.applied, "quirks_mode": quirks, "darknet_layers": tuple(b.table),
            "weights_header": header,
            "weights": "zeros" if zeros else (w_name or None), "transposed_connected": transpose}
    return Graph(nodes=tuple(b.nodes), inputs=(INPUT_NAME,), input_shapes={INPUT_NAME: (1, c, h, w)},
                 framework="darknet", source=cfg_name, meta=meta)


def _size_error(counter: _Source, need: int, have: int, avail_bytes: int, off: int, file: str) -> ModelFormatError:
    if have < need:
        for layer, what, first, count in counter.log:
            if first + count > have:
                return ModelFormatError(
                    f"the cfg needs {need} floats of weights but the file holds {have} "
                    f"({avail_bytes} bytes after the {off}-byte header): layer {layer} needs {count} floats of "
                    f"{what} from float {first}, only {max(have - first, 0)} are left",
                    file=file, offset=off + 4 * min(first, have), layer=layer, expected=f"{need} floats")
    extra = f"{have - need} floats" if have > need else f"{avail_bytes % 4} stray bytes"
    return ModelFormatError(f"the cfg needs {need} floats of weights but the file holds {avail_bytes} bytes "
                            f"({have} floats) after the header: {extra} left over (wrong cfg for these weights?)",
                            file=file, offset=off + 4 * need, expected=f"{need} floats")
