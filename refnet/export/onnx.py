"""Graph -> ONNX: carry a Caffe, Torch7 or Darknet model to ONNX Runtime and OpenCV 5.

One function per IR op (:data:`EXPORTERS`, a table as in tinygrad's importers), each reading
the op's attributes with the defaults its spec in ``refnet/ops/`` uses and emitting standard
ONNX nodes (opset 13..17) that compute what the source framework computes:

- tensor names are refnet's: the net inputs keep their names, every layer's output tensor is
  named like the layer (``"<layer>:<i>"`` for output i > 0), so the graph outputs are the source
  net's output layer names and every intermediate layer has a counterpart for per-layer checks;
  helper tensors are named ``"<layer>/<what>"``;
- the file is exported for one input shape (``input_shapes``, default the declared ones): all
  geometry (pooling windows, crops, reshapes, PriorBox) is resolved for that shape;
- rules that ONNX runtimes do not agree on are written out explicitly: ceil-mode pooling becomes
  explicit end padding (Caffe's rule: the last window starts inside the input or its begin pad),
  an average pool divides by k*k on an explicitly padded input and is then multiplied by the
  framework's divisor ratio per output position (Caffe's window clipped to the padded extent,
  Torch's count_include_pad false, or k*k), nearest/bilinear resizes are gathers with the
  framework's source indices and weights, reorg is a gather with Darknet's index rule;
- SSD PriorBox becomes a constant for the exported input size (said in the model doc_string);
  DetectionOutput becomes the Caffe-SSD decode, per-class TopK + NonMaxSuppression, a TopK for
  keep_top_k and cv2's ``[1, 1, K, 7]`` rows; Darknet [region]/[yolo] become their decode in
  cv2's row layout ``[x, y, w, h, objectness, class scores...]``;
- a layer whose rule has no exact expression raises UnsupportedLayerError naming the layer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from refnet.errors import RefnetError, ShapeError, UnsupportedLayerError
from refnet.graph import Node
from refnet.ops.registry import attrs as op_attrs  # the op specs: one attribute rule for run and export
from refnet.weights_import._util import name_registry

__all__ = ["export_onnx", "EXPORTERS", "OPSET_MIN", "OPSET_MAX", "require_onnx", "exported_ops"]

OPSET_MIN, OPSET_MAX = 13, 17


class OnnxMissingError(RefnetError):
    """The optional ``onnx`` package is not installed."""


def require_onnx():
    """The ``onnx`` module, or a refnet error telling how to install it."""
    try:
        import onnx
    except ImportError as e:
        raise OnnxMissingError("ONNX export needs the onnx package: pip install refnet[onnx] "
                               "(or pip install -e .[onnx] in a checkout)") from e
    return onnx


def _unsupported(node: Node, why: str) -> UnsupportedLayerError:
    """The error for ``node``; the exportable ops are listed only when ``node.op`` is not one of them
    (an op refused for its parameters, e.g. DetectionOutput with eta < 1, is no unknown type)."""
    return UnsupportedLayerError(node.name, node.op, None if node.op in EXPORTERS else sorted(EXPORTERS),
                                 detail=f"cannot be exported to ONNX exactly: {why}")


# ---- the builder ---------------------------------------------------------------------------------
class _Builder:
    """Collects ONNX nodes and initializers; knows every refnet tensor's static shape."""

    def __init__(self, onnx, shapes: Mapping[str, tuple[int, ...]], opset: int) -> None:
        self.onnx = onnx
        self.shapes = dict(shapes)
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.names: set[str] = set(shapes)
        self.notes: list[str] = []
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        name, i = hint, 1
        while name in self.names:
            i += 1
            name = f"{hint}_{i}"
        self.names.add(name)
        return name

    def shape(self, t: str) -> tuple[int, ...]:
        return tuple(self.shapes[t])

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "const") -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def i64(self, values: Sequence[int] | int, hint: str = "i64") -> str:
        return self.const(values, np.int64, hint)

    def op(self, op_type: str, inputs: Sequence[str], *, name: str, out: str | Sequence[str] | None = None,
           n_out: int = 1, **attrs: Any) -> Any:
        """Emit one node; returns its output name (or the list of them when n_out > 1)."""
        if out is None:
            outs = [self.fresh(f"{name}/{op_type}" if n_out == 1 else f"{name}/{op_type}.{i}")
                    for i in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
            self.names.update(outs)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{name}#{op_type}"),
                                                     **attrs))
        return outs[0] if len(outs) == 1 and out is None or isinstance(out, str) else outs

    # small helpers used by many ops
    def slice(self, x: str, axis: int, start: int, end: int, *, name: str, out: str | None = None) -> str:
        return self.op("Slice", [x, self.i64([start]), self.i64([end]), self.i64([axis])], name=name, out=out)

    def reshape(self, x: str, shape: Sequence[int], *, name: str, out: str | None = None) -> str:
        return self.op("Reshape", [x, self.i64(list(shape))], name=name, out=out)

    def gather(self, x: str, idx: np.ndarray, axis: int, *, name: str, out: str | None = None) -> str:
        return self.op("Gather", [x, self.i64(idx, hint=f"{name}/idx")], name=name, out=out, axis=axis)


ExportFn = Callable[[_Builder, Node], Sequence[str]]
EXPORTERS: dict[str, ExportFn] = {}


exports = name_registry(EXPORTERS)  # @exports("conv", ...): the ONNX writer of those IR ops


#: IR ops the exporter refuses on purpose, with the reason it gives (naming the layer).
#: The ONNX reader's own ops need no export: a model that has them is an ONNX file already.
ONNX_READER_OPS = frozenset({
    "add",
    "and",
    "arg_reduce",
    "cast",
    "ceil",
    "celu",
    "clip_range",
    "constant",
    "constant_of_shape",
    "depth_to_space",
    "div",
    "equal",
    "erf",
    "expand",
    "floor",
    "gather",
    "gather_elements",
    "gather_nd",
    "gelu",
    "gemm",
    "greater",
    "greater_equal",
    "hard_sigmoid",
    "hard_swish",
    "hardmax",
    "int_div",
    "layer_norm",
    "less",
    "less_equal",
    "lp_norm",
    "lrn_onnx",
    "matmul",
    "max",
    "max_unpool_nd",
    "mean",
    "min",
    "mod",
    "mul",
    "neg",
    "nms_onnx",
    "not",
    "or",
    "pad_dyn",
    "pool_nd",
    "pow",
    "prelu_nd",
    "reciprocal",
    "reduce",
    "reshape_dyn",
    "reshape_to",
    "resize_nd",
    "roi_align",
    "round",
    "scatter_elements",
    "scatter_nd",
    "selu",
    "shape_of",
    "sign",
    "softplus",
    "softsign",
    "space_to_depth",
    "strided_slice",
    "sub",
    "take",
    "thresholded_relu",
    "tile",
    "topk",
    "topk_dyn",
    "where",
    "xor",
})
NOT_EXPORTED: dict[str, str] = {
    **dict.fromkeys(ONNX_READER_OPS, "an op of refnet's ONNX reader: the model is an ONNX file already, "
                                     "convert is for Caffe, Torch7 and Darknet models"),
    "proposal": "Faster R-CNN's Proposal layer (anchors, min-size filter, NMS, a run-time number of rois) is "
                "not written as standard ops yet: export the backbone and RPN head up to the layer before it",
    "roi_pool": "Caffe's ROIPooling rounds the roi corners and bin edges its own way; ONNX MaxRoiPool's rounding is "
                "not verified equal, so the converter does not write it (nothing is approximated)",
    "psroi_pool": "R-FCN's PSROIPooling has no standard ONNX op",
    "hard_swish_affine": "made only by the float32 fusion of a forward pass, never in a graph the converter reads",
}


def exported_ops() -> list[str]:
    return sorted(EXPORTERS)


# ---- pass-through ------------------------------------------------------------------------------
@exports("identity", "split")
def identity(b: _Builder, n: Node) -> list[str]:
    return [b.op("Identity", [n.inputs[0]], name=n.name, out=t) for t in n.outputs]


# ---- convolution -------------------------------------------------------------------------------
def _conv_attrs(n: Node) -> dict:
    a = op_attrs(n)
    return dict(strides=list(a["stride"]), pads=list(a["pad"]), dilations=list(a["dilation"]), group=a["groups"])


def _weight_inputs(b: _Builder, n: Node) -> list[str]:
    ins = [b.const(n.params["weight"], hint=f"{n.name}/weight")]
    if n.params.get("bias") is not None:
        ins.append(b.const(n.params["bias"].reshape(-1), hint=f"{n.name}/bias"))
    return ins


@exports("conv")
def conv(b: _Builder, n: Node) -> list[str]:
    w = n.params["weight"]
    return [b.op("Conv", [n.inputs[0], *_weight_inputs(b, n)], name=n.name, out=n.outputs[0],
                 kernel_shape=list(w.shape[2:]), **_conv_attrs(n))]


@exports("deconv")
def deconv(b: _Builder, n: Node) -> list[str]:
    w = n.params["weight"]
    ah, aw = op_attrs(n)["output_padding"]
    sh, sw = op_attrs(n)["stride"]
    dh, dw = op_attrs(n)["dilation"]
    if ah >= max(sh, dh) or aw >= max(sw, dw):  # the ONNX rule (Torch's adjW/adjH obey it too)
        raise _unsupported(n, f"output_padding {(ah, aw)} must be smaller than the stride {(sh, sw)} or "
                              f"dilation {(dh, dw)} in ONNX")
    return [b.op("ConvTranspose", [n.inputs[0], *_weight_inputs(b, n)], name=n.name, out=n.outputs[0],
                 kernel_shape=list(w.shape[2:]), output_padding=[ah, aw], **_conv_attrs(n))]


@exports("linear")
def linear(b: _Builder, n: Node) -> list[str]:
    shape = b.shape(n.inputs[0])
    axis = op_attrs(n)["axis"]
    axis = axis + len(shape) if axis < 0 else axis
    w = n.params["weight"]
    bias = n.params.get("bias")
    if axis == 1:
        flat = b.reshape(n.inputs[0], (shape[0], w.shape[1]), name=n.name)
        ins = [flat, b.const(w, hint=f"{n.name}/weight")]
        if bias is not None:
            ins.append(b.const(bias.reshape(-1), hint=f"{n.name}/bias"))
        return [b.op("Gemm", ins, name=n.name, out=n.outputs[0], transB=1)]
    flat = b.reshape(n.inputs[0], (*shape[:axis], w.shape[1]), name=n.name)
    y = b.op("MatMul", [flat, b.const(w.T, hint=f"{n.name}/weightT")], name=n.name,
             out=None if bias is not None else n.outputs[0])
    if bias is not None:
        y = b.op("Add", [y, b.const(bias.reshape(-1), hint=f"{n.name}/bias")], name=n.name, out=n.outputs[0])
    return [y]


# ---- pooling -----------------------------------------------------------------------------------
def _pool_geometry(b: _Builder, n: Node) -> tuple:
    """Kernel, stride, pads (t, l, b, r) and the extra end padding that makes ONNX's floor rule
    give the framework's output size (computed by refnet's shape rule, Caffe's ceil mode)."""
    a = op_attrs(n)
    _, _, h, w = b.shape(n.inputs[0])
    _, _, ho, wo = b.shape(n.outputs[0])
    kh, kw = a["kernel"]
    sh, sw = a["stride"] or (kh, kw)
    pt, pl, pb, pr = a["pad"]
    # the windows cover rows [-pt, (ho-1)*sh + kh - pt): pad the end up to there (never less)
    eb = max((ho - 1) * sh + kh - pt - h, 0)
    er = max((wo - 1) * sw + kw - pl - w, 0)
    return (kh, kw), (sh, sw), (pt, pl, pb, pr), (eb, er), (h, w), (ho, wo)


def _explicit_pad(b: _Builder, x: str, t: int, l: int, bot: int, r: int, value: float, name: str) -> str:
    if not (t or l or bot or r):
        return x
    return b.op("Pad", [x, b.i64([0, 0, t, l, 0, 0, bot, r]), b.const(value)], name=name, mode="constant")


@exports("max_pool")
def max_pool(b: _Builder, n: Node) -> list[str]:
    x = n.inputs[0]
    want_idx = len(n.outputs) > 1
    if op_attrs(n)["global_pooling"] and not want_idx:
        return [b.op("GlobalMaxPool", [x], name=n.name, out=n.outputs[0])]
    if op_attrs(n)["global_pooling"]:
        _, _, h, w = b.shape(x)
        k, s, (pt, pl, _, _), (eb, er), (ho, wo) = (h, w), (1, 1), (0, 0, 0, 0), (h, w), (1, 1)
    else:
        k, s, (pt, pl, _, _), (eb, er), (h, w), (ho, wo) = _pool_geometry(b, n)
    if not want_idx and pt < k[0] and pl < k[1] and eb < k[0] and er < k[1]:
        return [b.op("MaxPool", [x], name=n.name, out=n.outputs[0], kernel_shape=list(k), strides=list(s),
                     pads=[pt, pl, eb, er])]
    # padding cells never win (-inf); indices of the padded plane are mapped back to the input's
    xp = _explicit_pad(b, x, pt, pl, eb, er, -np.inf, n.name)
    if not want_idx:
        return [b.op("MaxPool", [xp], name=n.name, out=n.outputs[0], kernel_shape=list(k), strides=list(s))]
    y, idx = b.op("MaxPool", [xp], name=n.name, out=[n.outputs[0], b.fresh(f"{n.name}/indices_global")],
                  kernel_shape=list(k), strides=list(s))
    hp, wp = h + pt + eb, w + pl + er
    plane = b.op("Mod", [idx, b.i64(hp * wp)], name=n.name)
    if (pt, pl) == (0, 0) and wp == w:
        return [y, b.op("Identity", [plane], name=n.name, out=n.outputs[1])]
    row = b.op("Sub", [b.op("Div", [plane, b.i64(wp)], name=n.name), b.i64(pt)], name=n.name)
    col = b.op("Sub", [b.op("Mod", [plane, b.i64(wp)], name=n.name), b.i64(pl)], name=n.name)
    return [y, b.op("Add", [b.op("Mul", [row, b.i64(w)], name=n.name), col], name=n.name, out=n.outputs[1])]


def _avg_divisor(n: Node, k, s, pads, hw, out_hw) -> np.ndarray:
    """The framework's divisor per output position (rows x cols), see kernels.pool.avg_pool:
    "padded": the window clipped to [-pad_begin, size + pad_end) (Caffe, Torch count_include_pad),
    "valid": clipped to [0, size), "kernel": k."""
    rule = op_attrs(n)["divisor"]

    def axis(size, kk, ss, pb, pe, no):
        start = np.arange(no) * ss - pb
        if rule == "kernel":
            return np.full(no, float(kk))
        lo, hi = (0, size) if rule == "valid" else (-pb, size + pe)
        return (np.minimum(start + kk, hi) - np.maximum(start, lo)).astype(np.float64)

    (kh, kw), (sh, sw), (pt, pl, pb, pr), (h, w), (ho, wo) = k, s, pads, hw, out_hw
    if rule not in ("padded", "valid", "kernel"):
        raise _unsupported(n, f"average-pool divisor {rule!r}")
    return np.outer(axis(h, kh, sh, pt, pb, ho), axis(w, kw, sw, pl, pr, wo))


@exports("avg_pool")
def avg_pool(b: _Builder, n: Node) -> list[str]:
    x = n.inputs[0]
    if op_attrs(n)["global_pooling"]:
        return [b.op("GlobalAveragePool", [x], name=n.name, out=n.outputs[0])]
    k, s, pads, (eb, er), hw, out_hw = _pool_geometry(b, n)
    div = _avg_divisor(n, k, s, pads, hw, out_hw)
    ratio = (k[0] * k[1]) / div
    exact = bool(np.all(ratio == 1.0))
    xp = _explicit_pad(b, x, pads[0], pads[1], eb, er, 0.0, n.name)
    y = b.op("AveragePool", [xp], name=n.name, out=n.outputs[0] if exact else None, kernel_shape=list(k),
             strides=list(s))
    if exact:
        return [y]
    return [b.op("Mul", [y, b.const(ratio[None, None], hint=f"{n.name}/divisor_ratio")], name=n.name,
                 out=n.outputs[0])]


@exports("max_unpool")
def max_unpool(b: _Builder, n: Node) -> list[str]:
    """y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j] on zeros (refnet's indices are per plane):
    ScatterElements over the flattened planes (ONNX MaxUnpool's global indices are read per plane
    by cv2 5.x, so the op is written out)."""
    x, idx = n.inputs[:2]
    nb, c, h, w = b.shape(x)
    _, _, oh, ow = b.shape(n.outputs[0])
    zeros = b.const(np.zeros((nb, c, oh * ow)), hint=f"{n.name}/zeros")
    y = b.op("ScatterElements", [zeros, b.reshape(idx, (nb, c, h * w), name=n.name),
                                 b.reshape(x, (nb, c, h * w), name=n.name)], name=n.name, axis=2)
    return [b.reshape(y, (nb, c, oh, ow), name=n.name, out=n.outputs[0])]


# ---- activations ---------------------------------------------------------------------------------
@exports("relu")
def relu(b: _Builder, n: Node) -> list[str]:
    slope = op_attrs(n)["negative_slope"]
    if slope == 0.0:
        return [b.op("Relu", [n.inputs[0]], name=n.name, out=n.outputs[0])]
    return [b.op("LeakyRelu", [n.inputs[0]], name=n.name, out=n.outputs[0], alpha=slope)]


@exports("clip")
def clip(b: _Builder, n: Node) -> list[str]:
    lo, hi = op_attrs(n)["min"], op_attrs(n)["max"]
    return [b.op("Clip", [n.inputs[0], b.const(lo), b.const(hi)], name=n.name, out=n.outputs[0])]


@exports("prelu")
def prelu(b: _Builder, n: Node) -> list[str]:
    slope = n.params["slope"].reshape(-1)
    rank = len(b.shape(n.inputs[0]))
    shape = (1,) if slope.size == 1 else (slope.size,) + (1,) * (rank - 2)
    return [b.op("PRelu", [n.inputs[0], b.const(slope.reshape(shape), hint=f"{n.name}/slope")], name=n.name,
                 out=n.outputs[0])]


@exports("elu")
def elu(b: _Builder, n: Node) -> list[str]:
    return [b.op("Elu", [n.inputs[0]], name=n.name, out=n.outputs[0], alpha=op_attrs(n)["alpha"])]


_UNARY = {"sigmoid": "Sigmoid", "tanh": "Tanh", "abs": "Abs", "sqrt": "Sqrt", "bnll": "Softplus"}


@exports(*_UNARY)
def unary(b: _Builder, n: Node) -> list[str]:
    """BNLL is Caffe's log(1 + exp(x)) = Softplus."""
    return [b.op(_UNARY[n.op], [n.inputs[0]], name=n.name, out=n.outputs[0])]


@exports("square")
def square(b: _Builder, n: Node) -> list[str]:
    return [b.op("Mul", [n.inputs[0], n.inputs[0]], name=n.name, out=n.outputs[0])]


@exports("swish")
def swish(b: _Builder, n: Node) -> list[str]:
    s = b.op("Sigmoid", [n.inputs[0]], name=n.name)
    return [b.op("Mul", [n.inputs[0], s], name=n.name, out=n.outputs[0])]


@exports("mish")
def mish(b: _Builder, n: Node) -> list[str]:
    """x * tanh(softplus(x)) (ONNX Mish is opset 18)."""
    t = b.op("Tanh", [b.op("Softplus", [n.inputs[0]], name=n.name)], name=n.name)
    return [b.op("Mul", [n.inputs[0], t], name=n.name, out=n.outputs[0])]


def _affine(b: _Builder, x: str, scale: float, shift: float, name: str, out: str | None = None) -> str:
    if scale != 1.0:
        x = b.op("Mul", [x, b.const(scale)], name=name, out=out if shift == 0.0 else None)
    if shift != 0.0:
        x = b.op("Add", [x, b.const(shift)], name=name, out=out)
    if out is not None and x != out:
        x = b.op("Identity", [x], name=name, out=out)
    return x


@exports("power")
def power(b: _Builder, n: Node) -> list[str]:
    """Caffe Power: (shift + scale * x) ^ power (Torch MulConstant / AddConstant / Power too)."""
    p = op_attrs(n)["power"]
    sc, sh = op_attrs(n)["scale"], op_attrs(n)["shift"]
    if p == 1.0:
        return [_affine(b, n.inputs[0], sc, sh, n.name, n.outputs[0])]
    base = _affine(b, n.inputs[0], sc, sh, n.name)
    return [b.op("Pow", [base, b.const(p)], name=n.name, out=n.outputs[0])]


@exports("exp")
def exp(b: _Builder, n: Node) -> list[str]:
    """Caffe Exp: base^(shift + scale*x) = base^shift * exp(ln(base) * scale * x)."""
    base = op_attrs(n)["base"]
    sc, sh = op_attrs(n)["scale"], op_attrs(n)["shift"]
    lb = 1.0 if base == -1.0 else math.log(base)
    inner = _affine(b, n.inputs[0], lb * sc, 0.0, n.name)
    outer = math.exp(lb * sh)
    if outer == 1.0:
        return [b.op("Exp", [inner], name=n.name, out=n.outputs[0])]
    return [b.op("Mul", [b.op("Exp", [inner], name=n.name), b.const(outer)], name=n.name, out=n.outputs[0])]


@exports("log")
def log(b: _Builder, n: Node) -> list[str]:
    """Caffe Log: log(shift + scale*x) / ln(base)."""
    base = op_attrs(n)["base"]
    sc, sh = op_attrs(n)["scale"], op_attrs(n)["shift"]
    y = b.op("Log", [_affine(b, n.inputs[0], sc, sh, n.name)], name=n.name, out=n.outputs[0] if base == -1.0 else None)
    if base == -1.0:
        return [y]
    return [b.op("Mul", [y, b.const(1.0 / math.log(base))], name=n.name, out=n.outputs[0])]


@exports("softmax", "log_softmax")
def softmax(b: _Builder, n: Node) -> list[str]:
    """Softmax over one axis (ONNX >= 13 does not flatten)."""
    return [b.op("Softmax" if n.op == "softmax" else "LogSoftmax", [n.inputs[0]], name=n.name, out=n.outputs[0],
                 axis=op_attrs(n)["axis"])]


# ---- normalisation -----------------------------------------------------------------------------
def _chan_shape(b: _Builder, x: str, c: int) -> tuple[int, ...]:
    return (c,) + (1,) * (len(b.shape(x)) - 2)


@exports("batch_norm")
def batch_norm(b: _Builder, n: Node) -> list[str]:
    """(x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1)."""
    mean = n.params["mean"].reshape(-1).astype(np.float64)
    var = n.params["var"].reshape(-1).astype(np.float64)
    c = mean.size
    w = n.params.get("weight")
    bias = n.params.get("bias")
    w = np.ones(c) if w is None else w.reshape(-1).astype(np.float64)
    bias = np.zeros(c) if bias is None else bias.reshape(-1).astype(np.float64)
    eps = op_attrs(n)["eps"]
    if len(b.shape(n.inputs[0])) < 2:
        raise _unsupported(n, "batch norm needs a channel axis")
    return [b.op("BatchNormalization", [n.inputs[0], b.const(w, hint=f"{n.name}/scale"),
                                        b.const(bias, hint=f"{n.name}/bias"), b.const(mean, hint=f"{n.name}/mean"),
                                        b.const(var, hint=f"{n.name}/var")],
                 name=n.name, out=n.outputs[0], epsilon=eps)]


@exports("instance_norm")
def instance_norm(b: _Builder, n: Node) -> list[str]:
    """Torch InstanceNormalization: (x - mu) / sqrt(biased var + eps) * weight + bias."""
    c = b.shape(n.inputs[0])[1]
    w = n.params.get("weight")
    bias = n.params.get("bias")
    w = np.ones(c) if w is None else w.reshape(-1)
    bias = np.zeros(c) if bias is None else bias.reshape(-1)
    return [b.op("InstanceNormalization", [n.inputs[0], b.const(w, hint=f"{n.name}/scale"),
                                           b.const(bias, hint=f"{n.name}/bias")],
                 name=n.name, out=n.outputs[0], epsilon=op_attrs(n)["eps"])]


@exports("mvn", "mvn_cv2")
def mvn(b: _Builder, n: Node) -> list[str]:
    """Caffe MVN: (x - mean) / (sqrt(var) + eps); cv2's (``mvn_cv2``): (x - mean) / sqrt(var + eps)."""
    x = n.inputs[0]
    rank = len(b.shape(x))
    axes = list(range(1 if op_attrs(n)["across_channels"] else 2, rank))
    eps = op_attrs(n)["eps"]
    if not axes:
        raise _unsupported(n, "MVN of a tensor without spatial axes")
    d = b.op("Sub", [x, b.op("ReduceMean", [x], name=n.name, axes=axes, keepdims=1)], name=n.name,
             out=None if op_attrs(n)["normalize_variance"] else n.outputs[0])
    if not op_attrs(n)["normalize_variance"]:
        return [d]
    var = b.op("ReduceMean", [b.op("Mul", [d, d], name=n.name)], name=n.name, axes=axes, keepdims=1)
    if n.op == "mvn":
        den = b.op("Add", [b.op("Sqrt", [var], name=n.name), b.const(eps)], name=n.name)
    else:
        den = b.op("Sqrt", [b.op("Add", [var, b.const(eps)], name=n.name)], name=n.name)
    return [b.op("Div", [d, den], name=n.name, out=n.outputs[0])]


def _bcast_param(b: _Builder, n: Node, x: str, v: np.ndarray | str, axis: int, hint: str) -> str:
    """A Caffe Scale/Bias operand covering dims [axis, axis + k) of x, shaped to broadcast."""
    shape = b.shape(x)
    if isinstance(v, str):
        vs = b.shape(v)
        k = len(vs)
        size = math.prod(vs)
        span = shape[axis:axis + k]
        if size == math.prod(span) and tuple(vs) != tuple(span):
            vs = span
        if size == 1:
            return v
        return b.reshape(v, tuple(vs) + (1,) * (len(shape) - axis - len(vs)), name=n.name)
    v = np.asarray(v)
    if v.size == 1:
        return b.const(v.reshape(()), hint=hint)
    span = shape[axis:axis + v.ndim]
    return b.const(v.reshape(tuple(span) + (1,) * (len(shape) - axis - v.ndim)), hint=hint)


def _axis_operand(b: _Builder, n: Node, key: str) -> tuple[str, int, str]:
    """Caffe Scale/Bias: x, ``axis`` made non-negative, and the operand (the second input, else
    ``n.params[key]``) broadcast over the dims of x from ``axis``."""
    x = n.inputs[0]
    axis = op_attrs(n)["axis"]
    axis = axis + len(b.shape(x)) if axis < 0 else axis
    v = n.inputs[1] if len(n.inputs) > 1 else n.params[key]
    return x, axis, _bcast_param(b, n, x, v, axis, f"{n.name}/{key}")


@exports("scale")
def scale(b: _Builder, n: Node) -> list[str]:
    """Caffe Scale: x * w (+ bias), w covering the dims of x from ``axis``."""
    x, axis, w = _axis_operand(b, n, "weight")
    bias = n.params.get("bias")
    y = b.op("Mul", [x, w], name=n.name, out=n.outputs[0] if bias is None else None)
    if bias is None:
        return [y]
    return [b.op("Add", [y, _bcast_param(b, n, x, bias, axis, f"{n.name}/bias")], name=n.name, out=n.outputs[0])]


@exports("bias")
def bias(b: _Builder, n: Node) -> list[str]:
    x, _, v = _axis_operand(b, n, "bias")
    return [b.op("Add", [x, v], name=n.name, out=n.outputs[0])]


@exports("lrn")
def lrn(b: _Builder, n: Node) -> list[str]:
    """Caffe LRN. ACROSS_CHANNELS is ONNX LRN (same window and alpha/size); WITHIN_CHANNEL is
    x * (1 + alpha * avg of x^2 over the zero-padded size x size window)^-beta (k unused, Caffe)."""
    a = op_attrs(n)
    size, alpha, beta, k = a["size"], a["alpha"], a["beta"], a["k"]
    x = n.inputs[0]
    if a["region"] in ("across", "across_channels"):
        return [b.op("LRN", [x], name=n.name, out=n.outputs[0], size=size, alpha=alpha, beta=beta, bias=k)]
    pre = (size - 1) // 2
    sq = _explicit_pad(b, b.op("Mul", [x, x], name=n.name), pre, pre, size - 1 - pre, size - 1 - pre, 0.0, n.name)
    avg = b.op("AveragePool", [sq], name=n.name, kernel_shape=[size, size], strides=[1, 1])
    base = _affine(b, avg, alpha, 1.0, n.name)
    return [b.op("Mul", [x, b.op("Pow", [base, b.const(-beta)], name=n.name)], name=n.name, out=n.outputs[0])]


@exports("normalize")
def normalize(b: _Builder, n: Node) -> list[str]:
    """Caffe-SSD Normalize: x / sqrt(sum x^2 + eps) over (C, H, W) or over C, times the scale."""
    x = n.inputs[0]
    rank = len(b.shape(x))
    axes = list(range(1, rank)) if op_attrs(n)["across_spatial"] else [1]
    ss = b.op("ReduceSum", [b.op("Mul", [x, x], name=n.name), b.i64(axes)], name=n.name, keepdims=1)
    den = b.op("Sqrt", [b.op("Add", [ss, b.const(op_attrs(n)["eps"])], name=n.name)], name=n.name)
    sc = n.params.get("scale")
    y = b.op("Div", [x, den], name=n.name, out=n.outputs[0] if sc is None else None)
    if sc is None:
        return [y]
    sc = sc.reshape(-1)
    shared = op_attrs(n)["channel_shared"]
    v = sc[:1].reshape(()) if shared else sc.reshape(_chan_shape(b, x, sc.size))
    return [b.op("Mul", [y, b.const(v, hint=f"{n.name}/scale")], name=n.name, out=n.outputs[0])]


@exports("lp_normalize")
def lp_normalize(b: _Builder, n: Node) -> list[str]:
    """Torch nn.Normalize: x / (sum |x|^p + eps)^(1/p) over all dims after the batch axis
    (p = inf: max |x| + eps)."""
    x = n.inputs[0]
    axes = list(range(1, len(b.shape(x))))
    p, eps = op_attrs(n)["p"], op_attrs(n)["eps"]
    ax = b.op("Abs", [x], name=n.name)
    if math.isinf(p):
        den = b.op("Add", [b.op("ReduceMax", [ax], name=n.name, axes=axes, keepdims=1), b.const(eps)], name=n.name)
    else:
        s = b.op("ReduceSum", [b.op("Pow", [ax, b.const(p)], name=n.name), b.i64(axes)], name=n.name, keepdims=1)
        den = b.op("Pow", [b.op("Add", [s, b.const(eps)], name=n.name), b.const(1.0 / p)], name=n.name)
    return [b.op("Div", [x, den], name=n.name, out=n.outputs[0])]


# ---- tensor ops ------------------------------------------------------------------------------------
@exports("concat")
def concat(b: _Builder, n: Node) -> list[str]:
    return [b.op("Concat", list(n.inputs), name=n.name, out=n.outputs[0], axis=op_attrs(n)["axis"])]


@exports("slice")
def slice_(b: _Builder, n: Node) -> list[str]:
    shape = b.shape(n.inputs[0])
    axis = op_attrs(n)["axis"]
    axis = axis + len(shape) if axis < 0 else axis
    sizes = [b.shape(t)[axis] for t in n.outputs]
    return b.op("Split", [n.inputs[0], b.i64(sizes)], name=n.name, out=list(n.outputs), axis=axis)


@exports("flatten", "reshape")
def reshape(b: _Builder, n: Node) -> list[str]:
    """Caffe Flatten/Reshape, resolved for the exported input shape."""
    return [b.reshape(n.inputs[0], b.shape(n.outputs[0]), name=n.name, out=n.outputs[0])]


@exports("permute")
def permute(b: _Builder, n: Node) -> list[str]:
    ndim = len(b.shape(n.inputs[0]))
    order = [int(i) for i in op_attrs(n)["order"]]
    order += [i for i in range(ndim) if i not in order]  # Caffe fills the trailing axes in order
    return [b.op("Transpose", [n.inputs[0]], name=n.name, out=n.outputs[0], perm=order)]


def _slice_box(b: _Builder, x: str, starts: Sequence[int], ends: Sequence[int], name: str,
               out: str | None = None) -> str:
    """Slice x to [starts, ends) on every axis where that is not the whole axis."""
    shape = b.shape(x)
    axes = [i for i in range(len(shape)) if (starts[i], ends[i]) != (0, shape[i])]
    if not axes:
        return x if out is None else b.op("Identity", [x], name=name, out=out)
    return b.op("Slice", [x, b.i64([starts[i] for i in axes]), b.i64([ends[i] for i in axes]), b.i64(axes)],
                name=name, out=out)


@exports("crop")
def crop(b: _Builder, n: Node) -> list[str]:
    shape, like = b.shape(n.inputs[0]), b.shape(n.inputs[1])
    axis = op_attrs(n)["axis"]
    axis = axis + len(shape) if axis < 0 else axis
    offs = [int(v) for v in op_attrs(n)["offset"]] or [0]
    if len(offs) == 1:
        offs = offs * (len(shape) - axis)
    starts = [0] * axis + offs
    ends = list(shape[:axis]) + [o + like[axis + i] for i, o in enumerate(offs)]
    return [_slice_box(b, n.inputs[0], starts, ends, n.name, n.outputs[0])]


@exports("pad")
def pad(b: _Builder, n: Node) -> list[str]:
    pads = [tuple(int(v) for v in pr) for pr in op_attrs(n)["pads"]]
    mode = op_attrs(n)["mode"]
    if min((v for pr in pads for v in pr), default=0) < 0:
        raise _unsupported(n, "negative padding")
    onnx_pads = [p[0] for p in pads] + [p[1] for p in pads]
    ins = [n.inputs[0], b.i64(onnx_pads)]
    if mode == "constant":
        ins.append(b.const(op_attrs(n)["value"]))
    return [b.op("Pad", ins, name=n.name, out=n.outputs[0], mode=mode)]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # cv2 resizeNN (refnet.kernels.resize_nearest): floor(dst * (1 / (out / in))), clamped
    inv = 1.0 / (n_out / n_in)
    return np.minimum(np.floor(np.arange(n_out) * inv).astype(np.int64), n_in - 1)


def _bilinear(b: _Builder, x: str, out_hw: tuple[int, int], rule: str, name: str, out: str) -> str:
    """Separable bilinear resampling as gathers and a weighted difference (rows, then columns),
    the source coordinate by ``rule``: "align_corners" dst*(in-1)/(out-1), "half_pixel"
    max((dst+0.5)*in/out-0.5, 0), "asymmetric" dst*in/out; the far tap clamped to the edge."""
    y = x
    for axis, no in ((2, out_hw[0]), (3, out_hw[1])):
        ni = b.shape(x)[axis]
        dst = np.arange(no, dtype=np.float64)
        if rule == "align_corners":
            src = dst * ((ni - 1) / (no - 1)) if no > 1 else np.zeros(no)
        elif rule == "half_pixel":
            src = np.maximum((dst + 0.5) * (ni / no) - 0.5, 0.0)
        else:
            src = dst * (ni / no)
        i0 = np.minimum(np.floor(src).astype(np.int64), ni - 1)
        i1 = np.minimum(i0 + 1, ni - 1)
        lam = (src - i0).reshape((no, 1) if axis == 2 else (no,))
        if ni == no and rule != "asymmetric" and np.all(lam == 0) and np.array_equal(i0, np.arange(ni)):
            continue
        a = b.gather(y, i0, axis, name=name)
        if np.all(lam == 0):
            y = a
            continue
        c = b.gather(y, i1, axis, name=name)
        y = b.op("Add", [a, b.op("Mul", [b.op("Sub", [c, a], name=name), b.const(lam, hint=f"{name}/lambda")],
                                 name=name)], name=name)
    return b.op("Identity", [y], name=name, out=out)


@exports("resize")
def resize(b: _Builder, n: Node) -> list[str]:
    """Nearest (cv2 INTER_NEAREST index rule = Darknet/Torch integer upsampling) or bilinear
    (Caffe Interp and Torch: align corners), to the size refnet's shape rule gives."""
    a = op_attrs(n)
    x = n.inputs[0]
    _, _, ho, wo = b.shape(n.outputs[0])
    if a["pad_beg"] > 0 or a["pad_end"] > 0:
        raise _unsupported(n, "positive Interp pads")
    # Interp's pad_beg/pad_end enter the output size only: the IR op (refnet.ops.tensor._resize)
    # resamples the whole input to that size, and so does this mapping
    if a["mode"] == "nearest":
        _, _, h, w = b.shape(x)
        y = b.gather(x, _nearest_index(h, ho), 2, name=n.name) if h != ho else x
        y = b.gather(y, _nearest_index(w, wo), 3, name=n.name) if w != wo else y
        return [b.op("Identity", [y], name=n.name, out=n.outputs[0])]
    rule = "align_corners" if a["align_corners"] else "half_pixel" if a["half_pixel"] else "asymmetric"
    return [_bilinear(b, x, (ho, wo), rule, n.name, n.outputs[0])]


@exports("upsample_bilinear_ac")
def upsample_bilinear_ac(b: _Builder, n: Node) -> list[str]:
    """Torch SpatialUpSamplingBilinear (THNN, align corners)."""
    _, _, ho, wo = b.shape(n.outputs[0])
    return [_bilinear(b, n.inputs[0], (ho, wo), "align_corners", n.name, n.outputs[0])]


@exports("eltwise")
def eltwise(b: _Builder, n: Node) -> list[str]:
    """Caffe Eltwise: SUM with per-input coefficients, PROD, MAX."""
    op = op_attrs(n)["operation"]
    coeffs = op_attrs(n)["coeffs"]
    xs = list(n.inputs)
    if op == "sum" and coeffs:
        xs = [x if float(c) == 1.0 else b.op("Mul", [x, b.const(float(c))], name=n.name) for x, c in zip(xs, coeffs)]
    onnx_op = {"sum": "Add", "prod": "Mul", "max": "Max"}.get(op)
    if onnx_op is None:
        raise _unsupported(n, f"eltwise operation {op!r}")
    if onnx_op == "Max":
        return [b.op("Max", xs, name=n.name, out=n.outputs[0])]
    y = xs[0]
    for i, x in enumerate(xs[1:]):
        y = b.op(onnx_op, [y, x], name=n.name, out=n.outputs[0] if i == len(xs) - 2 else None)
    if len(xs) == 1:
        y = b.op("Identity", [y], name=n.name, out=n.outputs[0])
    return [y]


@exports("shuffle_channel")
def shuffle_channel(b: _Builder, n: Node) -> list[str]:
    nb, c, h, w = b.shape(n.inputs[0])
    g = op_attrs(n)["group"]
    y = b.reshape(n.inputs[0], (nb, g, c // g, h * w), name=n.name)
    y = b.op("Transpose", [y], name=n.name, perm=[0, 2, 1, 3])
    return [b.reshape(y, (nb, c, h, w), name=n.name, out=n.outputs[0])]


@exports("reorg")
def reorg(b: _Builder, n: Node) -> list[str]:
    """Darknet reorg_cpu(forward=0) as one gather over the flattened sample (the kernel's index rule)."""
    nb, c, h, w = b.shape(n.inputs[0])
    s = op_attrs(n)["stride"]
    oc = c // (s * s)
    k, j, i = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    c2, off = k % oc, k // oc
    src = (i * s + off % s) + w * s * (j * s + off // s + h * s * c2)  # x read flat as (C/s^2, H*s, W*s)
    flat = b.reshape(n.inputs[0], (nb, c * h * w), name=n.name)
    y = b.gather(flat, src.ravel(), 1, name=n.name)
    return [b.reshape(y, b.shape(n.outputs[0]), name=n.name, out=n.outputs[0])]


# ---- Darknet -------------------------------------------------------------------------------------------
@exports("shortcut")
def shortcut(b: _Builder, n: Node) -> list[str]:
    """Darknet shortcut: alpha * x + beta * a_i over the channels both have (a_i cropped or zero-padded)."""
    x = n.inputs[0]
    alpha, beta = op_attrs(n)["alpha"], op_attrs(n)["beta"]
    shape = b.shape(x)
    c = shape[1]
    y = x if alpha == 1.0 else b.op("Mul", [x, b.const(alpha)], name=n.name)
    for a in n.inputs[1:]:
        ca = b.shape(a)[1]
        if ca > c:
            a = b.slice(a, 1, 0, c, name=n.name)
        elif ca < c:
            pads = [0] * (2 * len(shape))
            pads[len(shape) + 1] = c - ca
            a = b.op("Pad", [a, b.i64(pads), b.const(0.0)], name=n.name, mode="constant")
        if beta != 1.0:
            a = b.op("Mul", [a, b.const(beta)], name=n.name)
        y = b.op("Add", [y, a], name=n.name)
    return [b.op("Identity", [y], name=n.name, out=n.outputs[0])]


@exports("route_group")
def route_group(b: _Builder, n: Node) -> list[str]:
    c = b.shape(n.inputs[0])[1]
    g, gid = op_attrs(n)["groups"], op_attrs(n)["group_id"]
    size = c // g
    return [b.slice(n.inputs[0], 1, gid * size, (gid + 1) * size, name=n.name, out=n.outputs[0])]


@exports("darknet_softmax")
def darknet_softmax(b: _Builder, n: Node) -> list[str]:
    shape = b.shape(n.inputs[0])
    g, t = op_attrs(n)["groups"], op_attrs(n)["temperature"]
    z = b.reshape(n.inputs[0], (shape[0], g, math.prod(shape[1:]) // g), name=n.name)
    if t != 1.0:
        z = b.op("Div", [z, b.const(t)], name=n.name)
    y = b.op("Softmax", [z], name=n.name, axis=2)
    return [b.reshape(y, shape, name=n.name, out=n.outputs[0])]


def _yolo_decode(b: _Builder, n: Node, *, softmax: bool, norm_hw: tuple[int, int] | None) -> str:
    """cv2's RegionLayer rows (see refnet.kernels.yolo): [cx, cy, w, h, obj, obj*p_k (> thresh, else 0)]."""
    a = op_attrs(n)
    nb, h, w, c = b.shape(n.inputs[0])
    if nb != 1:
        raise _unsupported(n, "YOLO heads are exported for batch 1 (cv2 drops the batch axis)")
    anc = np.asarray(a["anchors"], dtype=np.float64).reshape(-1, 2)
    na, classes = len(anc), a["classes"]
    cell = 5 + classes
    thresh, nms_thr = a["thresh"], a["nms_threshold"]
    yolo = n.op == "yolo"  # region (YOLOv2) has no scale_x_y/new_coords, yolo no classfix
    sxy, new_coords = (a["scale_x_y"], a["new_coords"]) if yolo else (1.0, False)
    classfix = 0 if yolo else a["classfix"]
    nh, nw = norm_hw if norm_hw is not None else (h, w)
    rows = h * w * na
    r = np.arange(rows)
    gx = ((r // na) % w).astype(np.float64).reshape(-1, 1)
    gy = (r // (na * w)).astype(np.float64).reshape(-1, 1)
    aw = anc[r % na, 0].reshape(-1, 1) / nw
    ah = anc[r % na, 1].reshape(-1, 1) / nh
    v = b.reshape(n.inputs[0], (rows, cell), name=n.name)
    tx, ty, tw, th, to = (b.slice(v, 1, i, i + 1, name=n.name) for i in range(5))
    tc = b.slice(v, 1, 5, cell, name=n.name)
    nm = n.name
    if new_coords:
        bx, by, obj, cls = tx, ty, to, tc
        bw = b.op("Mul", [b.op("Mul", [tw, tw], name=nm), b.const(4.0 * aw, hint=f"{nm}/anchor_w")], name=nm)
        bh = b.op("Mul", [b.op("Mul", [th, th], name=nm), b.const(4.0 * ah, hint=f"{nm}/anchor_h")], name=nm)
        cut = thresh
    else:
        bx, by = b.op("Sigmoid", [tx], name=nm), b.op("Sigmoid", [ty], name=nm)
        bw = b.op("Mul", [b.op("Exp", [tw], name=nm), b.const(aw, hint=f"{nm}/anchor_w")], name=nm)
        bh = b.op("Mul", [b.op("Exp", [th], name=nm), b.const(ah, hint=f"{nm}/anchor_h")], name=nm)
        obj = b.op("Sigmoid", [to], name=nm)
        cls = b.op("Softmax", [tc], name=nm, axis=1) if softmax else b.op("Sigmoid", [tc], name=nm)
        cut = 0.5

    def centre(t: str, grid: np.ndarray, size: int) -> str:
        if sxy != 1.0:
            t = _affine(b, _affine(b, t, 1.0, -0.5, nm), sxy, 0.5, nm)
        return b.op("Div", [b.op("Add", [t, b.const(grid, hint=f"{nm}/grid")], name=nm), b.const(float(size))],
                    name=nm)

    cx, cy = centre(bx, gx, w), centre(by, gy, h)
    scale = obj
    if classfix == -1:
        scale = b.op("Where", [b.op("Less", [obj, b.const(cut)], name=nm), b.const(0.0), obj], name=nm)
    prob = b.op("Mul", [scale, cls], name=nm)
    prob = b.op("Where", [b.op("Greater", [prob, b.const(thresh)], name=nm), prob, b.const(0.0)], name=nm)
    if nms_thr > 0:
        prob = _rows_nms(b, nm, b.op("Concat", [cx, cy, bw, bh], name=nm, axis=1), prob, rows, classes, thresh,
                         nms_thr)
    return b.op("Concat", [cx, cy, bw, bh, obj, prob], name=nm, out=n.outputs[0], axis=1)


def _rows_nms(b: _Builder, nm: str, boxes: str, prob: str, rows: int, classes: int, thresh: float,
              nms_thr: float) -> str:
    """cv2 RegionLayer's per-class NMS inside the layer: class scores of suppressed rows set to 0."""
    scores = b.op("Unsqueeze", [b.op("Transpose", [prob], name=nm, perm=[1, 0]), b.i64([0])], name=nm)  # (1,K,R)
    bx = b.op("Unsqueeze", [boxes, b.i64([0])], name=nm)  # (1, R, 4) centre format
    sel = b.op("NonMaxSuppression", [bx, scores, b.i64([rows]), b.const([nms_thr]), b.const([thresh])], name=nm,
               center_point_box=1)
    cls_box = b.gather(sel, np.array([1, 2]), 1, name=nm)  # (S, 2): class, row
    count = b.gather(b.op("Shape", [sel], name=nm), np.array([0]), 0, name=nm)
    ones = b.op("ConstantOfShape", [count], name=nm,
                value=b.onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    mask = b.op("ScatterND", [b.const(np.zeros((classes, rows)), hint=f"{nm}/zeros"), cls_box, ones], name=nm)
    return b.op("Mul", [prob, b.op("Transpose", [mask], name=nm, perm=[1, 0])], name=nm)


@exports("region")
def region(b: _Builder, n: Node) -> list[str]:
    """Darknet [region] (YOLOv2): logistic x, y, objectness, exp sizes times the anchors (grid units),
    softmax (or logistic) classes, cv2's row layout."""
    return [_yolo_decode(b, n, softmax=op_attrs(n)["softmax"], norm_hw=None)]


@exports("yolo")
def yolo(b: _Builder, n: Node) -> list[str]:
    """Darknet [yolo] (YOLOv3/v4): logistic classes, sizes over the network input, scale_x_y."""
    img = b.shape(n.inputs[1]) if len(n.inputs) > 1 else None
    if img is None or len(img) != 4:
        raise _unsupported(n, "yolo needs the network input as its second input")
    return [_yolo_decode(b, n, softmax=False, norm_hw=(img[2], img[3]))]


# ---- Torch -------------------------------------------------------------------------------------------
@exports("torch_padding")
def torch_padding(b: _Builder, n: Node) -> list[str]:
    """nn.Padding: |pad| values inserted at the Torch position (refnet.ops.torch rule)."""
    from refnet.ops.torch import padding_geometry as _padding_geometry

    shape = b.shape(n.inputs[0])
    axis, pad, at = _padding_geometry(n, shape)
    fill_shape = list(shape)
    fill_shape[axis] = pad
    fill = b.const(np.full(fill_shape, op_attrs(n)["value"]), hint=f"{n.name}/fill")
    parts = []
    if at > 0:
        parts.append(b.slice(n.inputs[0], axis, 0, at, name=n.name))
    parts.append(fill)
    if at < shape[axis]:
        parts.append(b.slice(n.inputs[0], axis, at, shape[axis], name=n.name))
    return [b.op("Concat", parts, name=n.name, out=n.outputs[0], axis=axis)]


@exports("torch_pad2d")
def torch_pad2d(b: _Builder, n: Node) -> list[str]:
    """nn.SpatialZeroPadding: negative pads crop first, positive pads add zeros."""
    shape = b.shape(n.inputs[0])
    t, l, bt, r = op_attrs(n)["pads"]
    h, w = shape[-2:]
    starts = [0] * (len(shape) - 2) + [max(-t, 0), max(-l, 0)]
    ends = list(shape[:-2]) + [h - max(-bt, 0), w - max(-r, 0)]
    x = _slice_box(b, n.inputs[0], starts, ends, n.name)
    pads = [0] * (2 * len(shape))
    pads[len(shape) - 2], pads[len(shape) - 1] = max(t, 0), max(l, 0)
    pads[-2], pads[-1] = max(bt, 0), max(r, 0)
    if not any(pads):
        return [b.op("Identity", [x], name=n.name, out=n.outputs[0])]
    return [b.op("Pad", [x, b.i64(pads), b.const(0.0)], name=n.name, out=n.outputs[0], mode="constant")]


@exports("torch_narrow")
def torch_narrow(b: _Builder, n: Node) -> list[str]:
    from refnet.ops.torch import narrow_geometry as _narrow_geometry

    axis, start, length = _narrow_geometry(n, b.shape(n.inputs[0]))
    return [b.slice(n.inputs[0], axis, start, start + length, name=n.name, out=n.outputs[0])]


@exports("torch_shave")
def torch_shave(b: _Builder, n: Node) -> list[str]:
    nb, c, h, w = b.shape(n.inputs[0])
    s = op_attrs(n)["size"]
    return [_slice_box(b, n.inputs[0], [0, 0, s, s], [nb, c, h - s, w - s], n.name, n.outputs[0])]


@exports("torch_select")
def torch_select(b: _Builder, n: Node) -> list[str]:
    outs = []
    for x, t in zip(n.inputs, n.outputs):
        axis = op_attrs(n)["axis"]
        axis = axis + len(b.shape(x)) if axis < 0 else axis
        outs.append(b.op("Gather", [x, b.i64(0)], name=n.name, out=t, axis=axis))
    return outs


@exports("depth_concat")
def depth_concat(b: _Builder, n: Node) -> list[str]:
    """nn.DepthConcat: smaller inputs zero-padded, centred at floor(diff / 2), then concatenated."""
    out = b.shape(n.outputs[0])
    axis = op_attrs(n)["axis"]
    axis = axis + len(out) if axis < 0 else axis
    parts = []
    for x in n.inputs:
        s = b.shape(x)
        before = [0 if d == axis else (out[d] - s[d]) // 2 for d in range(len(s))]
        after = [0 if d == axis else out[d] - s[d] - before[d] for d in range(len(s))]
        if any(before) or any(after):
            x = b.op("Pad", [x, b.i64(before + after), b.const(0.0)], name=n.name, mode="constant")
        parts.append(x)
    return [b.op("Concat", parts, name=n.name, out=n.outputs[0], axis=axis)]


# ---- SSD ------------------------------------------------------------------------------------------------
@exports("prior_box")
def prior_box(b: _Builder, n: Node) -> list[str]:
    """SSD PriorBox: a constant, computed by refnet's reference for the exported input size."""
    from refnet.kernels import prior_box_reference
    from refnet.ops.detection import prior_image_hw as _prior_image_hw
    from refnet.ops.detection import prior_kwargs as _prior_kwargs

    feat, img = b.shape(n.inputs[0]), b.shape(n.inputs[1])
    pri = prior_box_reference(tuple(feat[2:4]), _prior_image_hw(n, img), dtype=np.float64, **_prior_kwargs(n))
    b.notes.append(f"{n.name}: {img[2]}x{img[3]}")
    value = b.onnx.numpy_helper.from_array(pri.astype(np.float32), f"{n.name}/value")
    return [b.op("Constant", [], name=n.name, out=n.outputs[0], value=value)]


def _split4(b: _Builder, t: str, name: str) -> list[str]:
    """The four coordinates of (..., 4) boxes as (..., 1) slices (Slice: cv2 4.x refuses this Split)."""
    rank = len(b.shape(t)) if t in b.shapes else 3
    return [b.slice(t, rank - 1, i, i + 1, name=name) for i in range(4)]


def _decode(b: _Builder, n: Node, loc: str, pri: str, var: str | None, code: str, clip: bool,
            normalized: bool) -> str:
    """Caffe-SSD DecodeBBox (refnet.kernels.detection._decode) on loc (P, L, 4), priors (P, 1, 4)."""
    nm = n.name
    d = loc if var is None else b.op("Mul", [loc, var], name=nm)
    px1, py1, px2, py2 = _split4(b, pri, nm)
    d0, d1, d2, d3 = _split4(b, d, nm)

    def add(u, v):
        return b.op("Add", [u, v], name=nm)

    def mul(u, v):
        return b.op("Mul", [u, v], name=nm)

    def sub(u, v):
        return b.op("Sub", [u, v], name=nm)

    if code == "CORNER":
        parts = [add(px1, d0), add(py1, d1), add(px2, d2), add(py2, d3)]
    else:
        pw, ph = sub(px2, px1), sub(py2, py1)
        if code == "CORNER_SIZE":
            parts = [add(px1, mul(d0, pw)), add(py1, mul(d1, ph)), add(px2, mul(d2, pw)), add(py2, mul(d3, ph))]
        else:
            if not normalized:
                pw, ph = add(pw, b.const(1.0)), add(ph, b.const(1.0))
            half = b.const(0.5)
            cx, cy = add(px1, mul(pw, half)), add(py1, mul(ph, half))
            dcx, dcy = add(mul(d0, pw), cx), add(mul(d1, ph), cy)
            dw = mul(mul(b.op("Exp", [d2], name=nm), pw), half)
            dh = mul(mul(b.op("Exp", [d3], name=nm), ph), half)
            parts = [sub(dcx, dw), sub(dcy, dh), add(dcx, dw), add(dcy, dh)]
    out = b.op("Concat", parts, name=nm, axis=-1)
    if clip:
        out = b.op("Clip", [out, b.const(0.0), b.const(1.0)], name=nm)
    return out


@exports("detection_output")
def detection_output(b: _Builder, n: Node) -> list[str]:
    """Caffe-SSD DetectionOutput as standard ops, cv2's [1, 1, K, 7] rows (refnet.kernels.detection):
    decode; per class (background dropped) the top_k best scores, NonMaxSuppression (score >
    confidence_threshold, IoU > nms_threshold suppressed); the best keep_top_k over all classes
    (ties: lower class, then NMS order -- TopK keeps the lower index first); zero rows up to K."""
    a = op_attrs(n)
    nm = n.name
    nc = int(a["num_classes"])
    share = bool(a["share_location"])
    bg = int(a["background_label_id"])
    top_k, keep = int(a["top_k"]), int(a["keep_top_k"])
    thr, conf_thr = float(a["nms_threshold"]), float(a["confidence_threshold"])
    code = str(a["code_type"]).upper()
    normalized = bool(a["normalized"])
    if float(a["eta"]) != 1.0:
        raise _unsupported(n, "adaptive NMS (eta != 1) has no ONNX NonMaxSuppression equivalent")
    if not normalized:
        raise _unsupported(n, "normalized_bbox: false uses the +1 pixel IoU, which ONNX NonMaxSuppression lacks")
    pshape = b.shape(n.inputs[2])
    p = pshape[2] // 4
    nloc = 1 if share else nc
    if b.shape(n.inputs[0])[0] != 1:
        raise _unsupported(n, "DetectionOutput is exported for batch 1")
    loc = b.reshape(n.inputs[0], (p, nloc, 4), name=nm)
    pri = b.reshape(b.slice(n.inputs[2], 1, 0, 1, name=nm), (p, 1, 4), name=nm)
    var = None if a["variance_encoded_in_target"] else \
        b.reshape(b.slice(n.inputs[2], 1, 1, 2, name=nm), (p, 1, 4), name=nm)
    boxes = b.op("Transpose", [_decode(b, n, loc, pri, var, code, bool(a["clip"]), normalized)],
                 name=nm, perm=[1, 0, 2])  # (L, P, 4)
    kept = np.array([c for c in range(nc) if c != bg], dtype=np.int64)
    ncls = len(kept)
    conf = b.op("Transpose", [b.reshape(n.inputs[1], (p, nc), name=nm)], name=nm, perm=[1, 0])
    scores = b.gather(conf, kept, 0, name=nm)  # (C', P)
    boxes = b.op("Expand", [boxes, b.i64([ncls, p, 4])], name=nm) if share else b.gather(boxes, kept, 0, name=nm)
    k1 = p if top_k < 0 else min(top_k, p)
    if k1 < p:  # Caffe: the top_k best candidates of each class enter the NMS
        scores, idx = b.op("TopK", [scores, b.i64([k1])], name=nm, n_out=2, axis=1, largest=1, sorted=1)
        idx3 = b.op("Expand", [b.op("Unsqueeze", [idx, b.i64([2])], name=nm), b.i64([ncls, k1, 4])], name=nm)
        boxes = b.op("GatherElements", [boxes, idx3], name=nm, axis=1)
    # Caffe's JaccardOverlap gives an inverted box (x2 < x1 or y2 < y1) size 0 and no overlap with
    # anything; NonMaxSuppression would reorder its corners (and cv2 5 calls two empty boxes
    # identical): each candidate slot j gets its own unit box far away instead, which overlaps nothing
    x1, y1, x2, y2 = _split4(b, boxes, nm)
    valid = b.op("And", [b.op("Not", [b.op("Less", [x2, x1], name=nm)], name=nm),
                         b.op("Not", [b.op("Less", [y2, y1], name=nm)], name=nm)], name=nm)
    far = np.zeros((1, k1, 4))
    far[0, :, 0] = far[0, :, 1] = 1e4 + 3.0 * np.arange(k1)
    far[0, :, 2:] = far[0, :, :2] + 1.0
    nms_boxes = b.op("Where", [valid, boxes, b.const(far, hint=f"{nm}/far_boxes")], name=nm)
    sel = b.op("NonMaxSuppression", [nms_boxes, b.op("Unsqueeze", [scores, b.i64([1])], name=nm), b.i64([k1]),
                                     b.const([thr]), b.const([conf_thr])], name=nm, center_point_box=0)
    cb = b.gather(sel, np.array([0, 2]), 1, name=nm)  # (S, 2): class position, candidate
    s_scores = b.op("GatherND", [scores, cb], name=nm)  # (S,)
    s_boxes = b.op("GatherND", [boxes, cb], name=nm)  # (S, 4)
    s_labels = b.op("Gather", [b.const(kept.astype(np.float32), hint=f"{nm}/labels"),
                               b.op("Squeeze", [b.gather(sel, np.array([0]), 1, name=nm), b.i64([1])], name=nm)],
                    name=nm, axis=0)
    count = b.op("Shape", [s_scores], name=nm)  # [S]
    kk = count if keep < 0 else b.op("Min", [count, b.i64([keep])], name=nm)
    top_s, order = b.op("TopK", [s_scores, kk], name=nm, n_out=2, axis=0, largest=1, sorted=1)
    col = [b.op("Unsqueeze", [t, b.i64([1])], name=nm) for t in
           (b.op("Gather", [s_labels, order], name=nm, axis=0), top_s)]
    rows = b.op("Concat", [b.op("Mul", [col[1], b.const(0.0)], name=nm), col[0], col[1],
                           b.op("Gather", [s_boxes, order], name=nm, axis=0)], name=nm, axis=1)  # (k, 7)
    total = b.i64([keep]) if keep > 0 else b.op("Max", [kk, b.i64([1])], name=nm)
    extra = b.op("Sub", [total, kk], name=nm)
    pads = b.op("Concat", [b.i64([0, 0]), extra, b.i64([0])], name=nm, axis=0)
    rows = b.op("Pad", [rows, pads, b.const(0.0)], name=nm, mode="constant")
    return [b.reshape(rows, (1, 1, -1, 7), name=nm, out=n.outputs[0])]


# ---- the exporter -------------------------------------------------------------------------------------
def _input_shape_map(net, input_shapes) -> dict[str, tuple[int, ...]]:
    if input_shapes is None:
        missing = [k for k in net.input_names if not net.input_shapes.get(k)]
        if missing:
            raise ShapeError(f"the model does not declare the shape of input(s) {missing}: pass input_shapes "
                             "(refnet convert --input-shape N C H W)")
        return {k: tuple(int(d) for d in net.input_shapes[k]) for k in net.input_names}
    if not isinstance(input_shapes, Mapping):
        if len(net.input_names) != 1:
            raise ShapeError(f"the model has inputs {list(net.input_names)}: pass a dict of shapes")
        input_shapes = {net.input_names[0]: input_shapes}
    return {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}


def _name_nodes_after_layers(nodes: list, layer_tensors: set[str]) -> None:
    """Name the ONNX node that writes a layer's tensor like the layer, so readers that name layers
    after nodes (refnet.load_onnx, cv2) give the source's layer and output names back."""
    taken = {nd.name for nd in nodes}
    for nd in nodes:
        t = nd.output[0] if nd.output else ""
        if t in layer_tensors and nd.name != t and t not in taken:
            taken.discard(nd.name)
            nd.name = t
            taken.add(t)


def build_model(net, *, opset: int = 17, input_shapes: Any = None):
    """The ``onnx.ModelProto`` of ``net`` (see :func:`export_onnx`)."""
    onnx = require_onnx()
    if not OPSET_MIN <= int(opset) <= OPSET_MAX:
        raise ValueError(f"opset must be in {OPSET_MIN}..{OPSET_MAX}, got {opset}")
    ishapes = _input_shape_map(net, input_shapes)
    shapes = net.infer_shapes(ishapes)
    g = net.graph
    missing = sorted({n.op for n in g.nodes} - set(EXPORTERS))
    if missing:
        bad = next(n for n in g.nodes if n.op in missing)
        raise _unsupported(bad, NOT_EXPORTED.get(bad.op, f"no ONNX mapping for IR op {bad.op!r}"))
    b = _Builder(onnx, shapes, int(opset))
    for n in g.nodes:
        outs = EXPORTERS[n.op](b, n)
        if list(outs) != list(n.outputs):  # pragma: no cover - every mapping names its outputs
            raise RuntimeError(f"exporter of {n.op} produced {outs}, expected {n.outputs}")
    _name_nodes_after_layers(b.nodes, {n.outputs[0] for n in g.nodes})
    TP = onnx.TensorProto
    dyn = {t for n in g.nodes if n.op == "detection_output" for t in n.outputs}

    def vi(t: str, dtype=TP.FLOAT):
        s = shapes[t]
        dims = [d if d >= 0 and t not in dyn else None for d in s]
        if t in dyn:
            dims = [1, 1, None, 7]
        return onnx.helper.make_tensor_value_info(t, dtype, dims)

    inputs = [onnx.helper.make_tensor_value_info(k, TP.FLOAT, list(ishapes[k])) for k in net.input_names]
    outputs = [vi(t) for t in g.output_names]
    doc = (f"Converted by refnet from {g.framework or '?'} {os.path.basename(g.source) if g.source else ''}"
           f" for input shape(s) {', '.join(f'{k}={list(v)}' for k, v in ishapes.items())}"
           f" (quirks={g.meta.get('quirks_mode', 'none')}).")
    if b.notes:
        doc += (" SSD PriorBox layers are constants computed for this input size; run the model at this size only ("
                + "; ".join(b.notes) + ").")
    graph = onnx.helper.make_graph(b.nodes, (g.source and os.path.basename(g.source)) or "refnet", inputs, outputs,
                                   initializer=b.inits, doc_string=doc)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", int(opset))],
                                   producer_name="refnet", producer_version=_version(), doc_string=doc)
    model.ir_version = min(model.ir_version, 8)
    return model


def _version() -> str:
    from refnet import __version__

    return __version__


def export_onnx(net, path: str | os.PathLike, *, opset: int = 17, input_shapes: Any = None) -> str:
    """Write ``net`` as an ONNX file and return its path.

    The graph keeps refnet's names (inputs, every layer's output tensor, the output layers),
    float32 initializers, opset ``opset`` (13..17), geometry resolved for ``input_shapes``
    (default: the declared input shapes). The file passes ``onnx.checker.check_model(full_check=True)``
    (which runs shape inference). A layer with no exact ONNX expression raises
    UnsupportedLayerError naming it; nothing is approximated.
    """
    onnx = require_onnx()
    model = build_model(net, opset=opset, input_shapes=input_shapes)
    onnx.checker.check_model(model, full_check=True)
    path = os.fspath(path)
    onnx.save(model, path)
    return path
