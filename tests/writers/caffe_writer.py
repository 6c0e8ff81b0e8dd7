"""Test-side Caffe writer: deploy prototxt text and caffemodel bytes, encoded independently of
refnet's parsers (its own protobuf wire encoder, field-number table and text printer).

* :class:`Layer` / :class:`NetSpec` describe a net; :func:`prototxt` prints it (V2 ``layer``
  or legacy V1 ``layers`` with enum types; a ``style="fancy"`` variant exercises comments,
  ``field: {``, ``< >`` delimiters, single quotes, escapes, ``1f``/hex/exponent numbers);
  :func:`caffemodel` encodes the weights (V1 or V2; float ``data`` packed or unpacked,
  ``double_data``, OpenCV/NVIDIA fp16 ``raw_data``, legacy num/channels/height/width shapes),
  optionally with the full layer definitions so the caffemodel alone describes the net.
* :func:`random_caffemodel` reads one of the arch-only prototxts with its own small reader,
  tracks blob shapes with Caffe's formulas and writes seeded random weights (He-scaled
  convolutions, positive BatchNorm variances) for every weighted layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["E", "Layer", "NetSpec", "prototxt", "caffemodel", "write_net", "blob_bytes",
           "varint", "key", "ld", "read_arch", "random_caffemodel", "write_random_caffemodel",
           "V1_TYPES", "cv2_outputs"]


class E(str):
    """An enum value: printed bare in text (``pool: MAX``), encoded as its number on the wire."""


@dataclass
class Layer:
    name: str
    type: str
    bottom: Sequence[str] = ()
    top: Sequence[str] = ()
    params: dict[str, dict] = field(default_factory=dict)  # e.g. {"convolution_param": {...}}
    blobs: list[np.ndarray] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # other LayerParameter fields (text only)


@dataclass
class NetSpec:
    layers: list[Layer]
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_style: str = "input_dim"  # "input_dim" | "input_shape" | "layer"
    name: str = "refnet_test"


# ---- text -------------------------------------------------------------------------------------
V1_TYPES = {
    "AbsVal": "ABSVAL", "BNLL": "BNLL", "Concat": "CONCAT", "Convolution": "CONVOLUTION",
    "Deconvolution": "DECONVOLUTION", "Dropout": "DROPOUT", "Eltwise": "ELTWISE", "Exp": "EXP",
    "Flatten": "FLATTEN", "InnerProduct": "INNER_PRODUCT", "LRN": "LRN", "MVN": "MVN",
    "Pooling": "POOLING", "Power": "POWER", "ReLU": "RELU", "Sigmoid": "SIGMOID",
    "Silence": "SILENCE", "Softmax": "SOFTMAX", "Split": "SPLIT", "Slice": "SLICE", "TanH": "TANH",
}
_V1_NUMS = {
    "ABSVAL": 35, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DECONVOLUTION": 39, "DROPOUT": 6,
    "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "INNER_PRODUCT": 14, "LRN": 15, "MVN": 34,
    "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19, "SILENCE": 36, "SOFTMAX": 20,
    "SPLIT": 22, "SLICE": 33, "TANH": 23,
}


def _quote(s: str, fancy: bool) -> str:
    out = []
    for ch in s:
        if ch in "\"'\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif fancy and ch.isalpha() and ord(ch) < 128 and ord(ch) % 7 == 0:
            out.append(f"\\{ord(ch):03o}")  # octal escape for some letters
        elif fancy and ch.isalpha() and ord(ch) < 128 and ord(ch) % 7 == 1:
            out.append(f"\\x{ord(ch):02x}")  # hex escape for some others
        elif ord(ch) >= 128:
            out.append(ch)
        else:
            out.append(ch)
    q = "'" if fancy else '"'
    return q + "".join(out) + q


def _scalar(v: Any, fancy: bool) -> str:
    if isinstance(v, E):
        return str(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        if fancy and 16 <= int(v) < 4096:
            return hex(int(v))
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        if fancy:
            if v == int(v) and abs(v) < 1e6:
                return f"{int(v)}f"
            return f"{v:.9e}"
        return repr(v)
    if isinstance(v, str):
        return _quote(v, fancy)
    raise TypeError(f"cannot print {v!r}")


def _msg_lines(d: dict[str, Any], indent: int, fancy: bool) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for k, v in d.items():
        items = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if fancy and (indent + i) % 2:
                    lines.append(f"{pad}{k} <")
                    lines += _msg_lines(item, indent + 1, fancy)
                    lines.append(f"{pad}>")
                else:
                    lines.append(f"{pad}{k}{': ' if fancy else ' '}{{")
                    lines += _msg_lines(item, indent + 1, fancy)
                    lines.append(f"{pad}}}")
            else:
                sep = "  # a comment" if fancy and i == 0 else ""
                lines.append(f"{pad}{k}: {_scalar(item, fancy)}{sep}")
    return lines


def _layer_dict(layer: Layer, v1: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": layer.name,
                         "type": E(V1_TYPES[layer.type]) if v1 else layer.type}
    if layer.bottom:
        d["bottom"] = list(layer.bottom)
    if layer.top:
        d["top"] = list(layer.top)
    d.update(layer.extra)
    d.update(layer.params)
    return d


def prototxt(net: NetSpec, *, v1: bool = False, style: str = "plain") -> str:
    """The deploy prototxt of ``net``: V2 ``layer {}`` blocks, or V1 ``layers {}`` with enums."""
    fancy = style == "fancy"
    lines = [f"name: {_scalar(net.name, fancy)}"]
    if fancy:
        lines.insert(0, "# written by tests/writers/caffe_writer.py\n")
    if net.input_style in ("input_dim", "input_shape"):
        # input_dim needs 4 values per input; nets with other ranks use input_shape
        use_dim = net.input_style == "input_dim" and all(len(s) == 4 for s in net.inputs.values())
        for name in net.inputs:
            lines.append(f"input: {_scalar(name, fancy)}")
        for shape in net.inputs.values():
            if use_dim:
                lines += [f"input_dim: {d}" for d in shape]
            else:
                lines += _msg_lines({"input_shape": {"dim": list(shape)}}, 0, fancy)
    else:
        lines += _msg_lines({"layer": {
            "name": "input", "type": "Input", "top": list(net.inputs),
            "input_param": {"shape": [{"dim": list(s)} for s in net.inputs.values()]}}}, 0, fancy)
    for layer in net.layers:
        lines += _msg_lines({"layers" if v1 else "layer": _layer_dict(layer, v1)}, 0, fancy)
    return "\n".join(lines) + "\n"


# ---- wire format --------------------------------------------------------------------------
def varint(v: int) -> bytes:
    """Base-128 varint; negative values as 64-bit two's complement (10 bytes), as protobuf."""
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return key(number, 2) + varint(len(payload)) + payload


def blob_bytes(arr: np.ndarray, fmt: str = "shape", *, packed: bool = True) -> bytes:
    """A BlobProto. ``fmt``: "shape" (BlobShape + float data), "legacy" (num/channels/height/
    width), "double" (double_data), "fp16" (raw_data FLOAT16), "raw32" (raw_data FLOAT)."""
    a = np.asarray(arr)
    out = bytearray()
    if fmt == "legacy":
        dims = (1,) * (4 - a.ndim) + a.shape
        if len(dims) != 4:
            raise ValueError("legacy blobs are 4-D")
        for num, d in zip((1, 2, 3, 4), dims):
            out += key(num, 0) + varint(int(d))
    else:
        out += ld(7, ld(1, b"".join(varint(int(d)) for d in a.shape)))  # shape { dim (packed) }
    flat = a.reshape(-1)
    if fmt in ("shape", "legacy"):
        data = flat.astype("<f4")
        if packed:
            out += ld(5, data.tobytes())
        else:  # unpacked: one tag per element
            rec = np.empty((data.size, 5), np.uint8)
            rec[:, 0] = 5 << 3 | 5
            rec[:, 1:] = data.view(np.uint8).reshape(-1, 4)
            out += rec.tobytes()
    elif fmt == "double":
        out += ld(8, flat.astype("<f8").tobytes())
    elif fmt == "fp16":
        out += key(10, 0) + varint(2) + ld(12, flat.astype("<f2").tobytes())
    elif fmt == "raw32":
        out += key(10, 0) + varint(1) + ld(12, flat.astype("<f4").tobytes())
    else:
        raise ValueError(fmt)
    return bytes(out)


# field numbers and wire kinds of the layer parameters the caffemodel-with-definitions path
# writes: kind "u" varint, "i" signed varint, "b" bool, "f" float32, "e:<enum table>", "m"
_PARAM_FIELDS: dict[str, tuple[int, int | None, dict[str, tuple[int, str]]]] = {
    "convolution_param": (106, 10, {
        "num_output": (1, "u"), "bias_term": (2, "b"), "pad": (3, "u"), "kernel_size": (4, "u"),
        "group": (5, "u"), "stride": (6, "u"), "pad_h": (9, "u"), "pad_w": (10, "u"),
        "kernel_h": (11, "u"), "kernel_w": (12, "u"), "stride_h": (13, "u"),
        "stride_w": (14, "u"), "dilation": (18, "u")}),
    "pooling_param": (121, 19, {
        "pool": (1, "e:pool"), "kernel_size": (2, "u"), "stride": (3, "u"), "pad": (4, "u"),
        "kernel_h": (5, "u"), "kernel_w": (6, "u"), "stride_h": (7, "u"), "stride_w": (8, "u"),
        "pad_h": (9, "u"), "pad_w": (10, "u"), "global_pooling": (12, "b"),
        "ceil_mode": (13, "b")}),
    "inner_product_param": (117, 17, {"num_output": (1, "u"), "bias_term": (2, "b"),
                                      "axis": (5, "i"), "transpose": (6, "b")}),
    "relu_param": (123, 30, {"negative_slope": (1, "f")}),
    "softmax_param": (125, 39, {"axis": (2, "i")}),
    "lrn_param": (118, 18, {"local_size": (1, "u"), "alpha": (2, "f"), "beta": (3, "f"),
                            "norm_region": (4, "e:lrn"), "k": (5, "f")}),
    "eltwise_param": (110, 24, {"operation": (1, "e:eltwise"), "coeff": (2, "f")}),
    "concat_param": (104, 9, {"axis": (2, "i")}),
    "batch_norm_param": (139, None, {"use_global_stats": (1, "b"), "eps": (3, "f")}),
    "scale_param": (142, None, {"axis": (1, "i"), "num_axes": (2, "i"), "bias_term": (4, "b")}),
    "prelu_param": (131, None, {"channel_shared": (2, "b")}),
    # the two-stage detectors' layers, numbered as in OpenCV's opencv-caffe.proto
    "proposal_param": (201, None, {
        "feat_stride": (1, "u"), "base_size": (2, "u"), "min_size": (3, "u"), "ratio": (4, "f"),
        "scale": (5, "f"), "pre_nms_topn": (6, "u"), "post_nms_topn": (7, "u"), "nms_thresh": (8, "f")}),
    "roi_pooling_param": (8266711, None, {"pooled_h": (1, "u"), "pooled_w": (2, "u"), "spatial_scale": (3, "f")}),
    "psroi_pooling_param": (10002, None, {"spatial_scale": (1, "f"), "output_dim": (2, "i"),
                                          "group_size": (3, "i")}),
}
_ENUM_VALUES = {"pool": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
                "lrn": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
                "eltwise": {"PROD": 0, "SUM": 1, "MAX": 2}}


def _param_bytes(table: dict[str, tuple[int, str]], d: dict[str, Any]) -> bytes:
    out = bytearray()
    for k, v in d.items():
        num, kind = table[k]
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            if kind == "f":
                out += key(num, 5) + np.float32(item).astype("<f4").tobytes()
            elif kind.startswith("e:"):
                out += key(num, 0) + varint(_ENUM_VALUES[kind[2:]][str(item)])
            else:
                out += key(num, 0) + varint(int(item))
    return bytes(out)


def _layer_bytes(layer: Layer, *, v1: bool, fmt: str, packed: bool, with_defs: bool) -> bytes:
    out = bytearray()
    if v1:
        out += ld(4, layer.name.encode())
        if with_defs:
            out += key(5, 0) + varint(_V1_NUMS[V1_TYPES[layer.type]])
    else:
        out += ld(1, layer.name.encode())
        if with_defs:
            out += ld(2, layer.type.encode())
    if with_defs:
        for b in layer.bottom:
            out += ld(2 if v1 else 3, b.encode())
        for t in layer.top:
            out += ld(3 if v1 else 4, t.encode())
        for pname, pd in layer.params.items():
            v2num, v1num, table = _PARAM_FIELDS[pname]
            num = v1num if v1 else v2num
            if num is None:
                raise ValueError(f"{pname} has no V1 field")
            out += ld(num, _param_bytes(table, pd))
    for b in layer.blobs:
        out += ld(6 if v1 else 7, blob_bytes(b, fmt, packed=packed))
    return bytes(out)


def caffemodel(net: NetSpec, *, v1: bool = False, fmt: str = "shape", packed: bool = True,
               with_defs: bool = False, all_layers: bool = False) -> bytes:
    """A NetParameter with every weighted layer's blobs (``all_layers``: weightless ones too).

    ``with_defs`` also encodes types, bottoms, tops, layer parameters and the net inputs, so
    the caffemodel alone describes the net.
    """
    out = bytearray(ld(1, net.name.encode()))
    if with_defs:
        for name in net.inputs:
            out += ld(3, name.encode())
        for shape in net.inputs.values():
            out += b"".join(key(4, 0) + varint(d) for d in shape)
    for layer in net.layers:
        if layer.blobs or all_layers or with_defs:
            body = _layer_bytes(layer, v1=v1, fmt=fmt, packed=packed, with_defs=with_defs)
            out += ld(2 if v1 else 100, body)
    return bytes(out)


def write_net(net: NetSpec, folder: Path, stem: str = "net", *, v1: bool = False,
              style: str = "plain", fmt: str = "shape", packed: bool = True) -> tuple[Path, Path]:
    """Write ``<stem>.prototxt`` and ``<stem>.caffemodel`` into ``folder``."""
    folder = Path(folder)
    proto = folder / f"{stem}.prototxt"
    model = folder / f"{stem}.caffemodel"
    proto.write_text(prototxt(net, v1=v1, style=style))
    model.write_bytes(caffemodel(net, v1=v1, fmt=fmt, packed=packed))
    return proto, model


# ---- arch-only prototxts -> random weights ----------------------------------------------------
_TOK = re.compile(r'#[^\n]*|"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"#]+')


def _read_block(toks: list[str], i: int) -> tuple[dict[str, list[Any]], int]:
    d: dict[str, list[Any]] = {}
    while i < len(toks) and toks[i] != "}":
        k = toks[i]
        i += 1
        if toks[i] == ":":
            i += 1
        if toks[i] == "{":
            v, i = _read_block(toks, i + 1)
            i += 1
        else:
            v = toks[i].strip('"')
            i += 1
        d.setdefault(k, []).append(v)
    return d, i


def read_arch(text: str) -> tuple[dict[str, list[Any]], list[dict[str, list[Any]]]]:
    """A deliberately small reader for the writer's own use: (top-level fields, layers)."""
    toks = [t for t in _TOK.findall(text) if not t.startswith("#")]
    top, _ = _read_block(toks, 0)
    return top, top.get("layer", []) + top.get("layers", [])


def _one(d: dict, k: str, default: Any = None) -> Any:
    return d[k][0] if k in d else default


def _hw(p: dict, name: str, default: int | None) -> tuple[int, int]:
    if f"{name}_h" in p:
        return int(_one(p, f"{name}_h")), int(_one(p, f"{name}_w"))
    vals = [int(v) for v in p.get(name, [])] or ([default] if default is not None else [])
    if not vals:
        raise ValueError(f"no {name}")
    return (vals[0], vals[-1])


def _weighted(typ: str, L: dict, name: str, x: tuple, rng: np.random.Generator) -> tuple[list, tuple]:
    """The seeded blobs of a weighted layer and its output shape (none and ``x`` for other types)."""
    blobs: list[np.ndarray] = []
    y = x
    if typ in ("Convolution", "ConvolutionDepthwise"):
        p = L["convolution_param"][0]
        co = int(_one(p, "num_output"))
        kh, kw = _hw(p, "kernel_size", None) if "kernel_h" not in p else _hw(p, "kernel", None)
        sh, sw = _hw(p, "stride", 1)
        ph, pw = _hw(p, "pad", 0)
        dh, dw = _hw(p, "dilation", 1)
        g = int(_one(p, "group", 1))
        ci = x[1] // g
        # SSD heads get 1/20 of the He scale: spread confidences (no saturated, tied
        # scores for DetectionOutput to order arbitrarily) and boxes near their priors
        head = 0.05 if "mbox" in name else 1.0
        blobs.append(rng.normal(0, head * math.sqrt(2.0 / (ci * kh * kw)), (co, ci, kh, kw)))
        if _one(p, "bias_term", "true") == "true":
            blobs.append(rng.normal(0, 0.05, co))
        y = (x[0], co, (x[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
             (x[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    elif typ == "InnerProduct":
        p = L["inner_product_param"][0]
        n_out = int(_one(p, "num_output"))
        k = int(np.prod(x[1:]))
        blobs.append(rng.normal(0, math.sqrt(2.0 / k), (n_out, k)))
        if _one(p, "bias_term", "true") == "true":
            blobs.append(rng.normal(0, 0.05, n_out))
        y = (x[0], n_out)
    elif typ == "BatchNorm":
        c = x[1]
        blobs += [rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c), np.ones(1)]
    elif typ == "Scale":
        c = x[1]
        blobs.append(rng.uniform(0.5, 1.5, c))
        p = L.get("scale_param", [{}])[0]
        if _one(p, "bias_term", "false") == "true":
            blobs.append(rng.normal(0, 0.1, c))
    elif typ == "Normalize":
        p = L.get("norm_param", [{}])[0]
        shared = _one(p, "channel_shared", "true") == "true"
        blobs.append(rng.uniform(1.0, 2.0, 1 if shared else x[1]))
    elif typ == "PReLU":
        blobs.append(rng.uniform(0.05, 0.3, x[1]))
    return blobs, y


def _unweighted_shape(typ: str, L: dict, x: tuple, bots: list, shapes: dict) -> tuple:
    """The output shape of a layer without weights (the shapes the weighted layers after it need)."""
    y = x
    if typ == "Pooling":
        p = L["pooling_param"][0]
        if _one(p, "global_pooling", "false") == "true":
            y = (x[0], x[1], 1, 1)
        else:
            kh, kw = _hw(p, "kernel_size", None) if "kernel_h" not in p else _hw(p, "kernel", None)
            sh, sw = _hw(p, "stride", 1)
            ph, pw = _hw(p, "pad", 0)
            y = (x[0], x[1], _pool_out(x[2], kh, sh, ph), _pool_out(x[3], kw, sw, pw))
    elif typ == "Concat":
        p = L.get("concat_param", [{}])[0]
        axis = int(_one(p, "axis", 1))
        parts = [shapes[b] for b in bots]
        axis = axis % len(parts[0])
        y = parts[0][:axis] + (sum(s[axis] for s in parts),) + parts[0][axis + 1:]
    elif typ == "Flatten":
        y = (x[0], int(np.prod(x[1:])))
    elif typ == "Permute":
        order = [int(v) for v in L["permute_param"][0]["order"]]
        order += [i for i in range(len(x)) if i not in order]
        y = tuple(x[i] for i in order)
    elif typ == "Reshape":
        dims = [int(v) for v in L["reshape_param"][0]["shape"][0]["dim"]]
        dims = [x[i] if d == 0 else d for i, d in enumerate(dims)]
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = int(np.prod(x)) // known
        y = tuple(dims)
    elif typ == "PriorBox":
        y = (1, 2, 0)  # not needed downstream by any weighted layer
    return y


def random_caffemodel(prototxt_text: str, seed: int = 0,
                      input_shape: Sequence[int] | None = None) -> tuple[bytes, dict[str, list[np.ndarray]]]:
    """Seeded random weights for every weighted layer of ``prototxt_text``.

    Returns the caffemodel bytes and the arrays by layer name. Convolutions and inner products
    are He-scaled (std sqrt(2 / fan_in); SSD ``*mbox*`` heads 1/20 of it); BatchNorm gets
    small means, variances in [0.5, 1.5] and scale factor 1; Scale gets gammas in [0.5, 1.5];
    Normalize scales in [1, 2].
    """
    rng = np.random.default_rng(seed)
    top, layers = read_arch(prototxt_text)
    shapes: dict[str, tuple[int, ...]] = {}
    ins = top.get("input", [])
    if ins:
        dims = [int(v) for v in top.get("input_dim", [])]
        if not dims and "input_shape" in top:
            dims = [int(v) for s in top["input_shape"] for v in s["dim"]]
        for j, name in enumerate(ins):
            shapes[name] = tuple(dims[4 * j:4 * j + 4])
        if input_shape is not None:
            shapes[ins[0]] = tuple(input_shape)
    weights: dict[str, list[np.ndarray]] = {}
    out = bytearray()
    for L in layers:
        typ = _one(L, "type")
        name = _one(L, "name")
        bots = L.get("bottom", [])
        tops = L.get("top", [])
        if typ == "Input":
            for j, t in enumerate(tops):
                shapes[t] = tuple(int(v) for v in L["input_param"][0]["shape"][j]["dim"])
            if input_shape is not None:
                shapes[tops[0]] = tuple(input_shape)
            continue
        x = shapes[bots[0]] if bots else ()
        blobs, y = _weighted(typ, L, name, x, rng)
        if not blobs:
            y = _unweighted_shape(typ, L, x, bots, shapes)
        for t in tops:
            shapes[t] = y
        if blobs:
            arrs = [np.asarray(b, np.float32) for b in blobs]
            weights[name] = arrs
            body = ld(1, name.encode()) + ld(2, typ.encode())
            body += b"".join(ld(7, blob_bytes(a)) for a in arrs)
            out += ld(100, body)
    return bytes(out), weights


def _pool_out(size: int, k: int, s: int, p: int) -> int:
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def write_random_caffemodel(prototxt_path: Path | str, out_path: Path | str, seed: int = 0,
                            input_shape: Iterable[int] | None = None) -> dict[str, list[np.ndarray]]:
    """Write seeded random weights for ``prototxt_path`` to ``out_path``; return the arrays."""
    data, weights = random_caffemodel(Path(prototxt_path).read_text(), seed,
                                      None if input_shape is None else tuple(input_shape))
    Path(out_path).write_bytes(data)
    return weights


# ---- cross-check helpers used by the Caffe tests (refnet and cv2 imported lazily) -------------
def cv2_outputs(proto: Path | str, model: Path | str | None, feeds: dict[str, np.ndarray],
                names: Sequence[str] | None = None, *, all_outputs: bool = False
                ) -> tuple[tuple[str, ...], dict[str, Any]]:
    """cv2.dnn's per-layer outputs (fusion off): layer names and {name: first output} (or,
    with ``all_outputs``, {name: [every output]})."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(proto), str(model) if model else "")
    net.enableFusion(False)
    for k, v in feeds.items():
        net.setInput(v, k)
    layer_names = tuple(net.getLayerNames())
    cv2_outputs.last_unconnected = tuple(net.getUnconnectedOutLayersNames())  # type: ignore[attr-defined]
    want = list(names) if names is not None else list(layer_names)
    if all_outputs:
        outs = net.forwardAndRetrieve(want)
        return layer_names, {n: [np.asarray(o) for o in os] for n, os in zip(want, outs)}
    outs = net.forward(want)
    return layer_names, {n: np.asarray(o) for n, o in zip(want, outs)}
