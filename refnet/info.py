"""Layer table of a model: shapes, parameter counts and multiply-accumulates (MACs).

MACs count one multiply-add per weight use, per op kind (one rule each, declared on the op
specs as ``OpSpec.macs``; :data:`MAC_RULES` is their view): convolution ``N*Co*Ho*Wo*(Ci/g)*kh*kw``; deconvolution
``N*Ci*H*W*(Co/g)*kh*kw`` (every input element meets ``Co/g*kh*kw`` weights); linear
``rows*N_out*K``; average pooling one add per window element; LRN ``size`` per element;
BatchNorm, Scale, Bias, PReLU, normalisations and Power one per element; Eltwise one per
element per extra input; bilinear resize four taps per output. Comparisons (max pooling,
ReLU), data movement (concat, permute, ...) and detection post-processing count zero.

cv2's ``Net.getFLOPS`` is shown beside the total where cv2 can read the model. It counts a
convolution as ``out*(2*kh*kw*Ci + 1)`` -- ignoring ``group``, so depthwise convs are
over-counted by their group count -- a deconvolution as ``2*kh*kw*Ci*N*Ci*H*W`` (input
channels where ``Co/g`` belongs) and an InnerProduct as 3 FLOPs per MAC; the table names
the layers where that happens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refnet.graph import Node
from refnet.net import Net
from refnet.ops import registry
from refnet.ops.conv import conv_macs, deconv_macs, linear_macs
from refnet.ops.norm import lrn_macs
from refnet.ops.pool import avg_pool_macs
from refnet.ops.registry import elementwise_macs, eltwise_macs
from refnet.ops.tensor import resize_macs

__all__ = [
    "LayerInfo",
    "ModelInfo",
    "MAC_RULES",
    "layer_macs",
    "conv_macs",
    "deconv_macs",
    "linear_macs",
    "avg_pool_macs",
    "lrn_macs",
    "elementwise_macs",
    "eltwise_macs",
    "resize_macs",
    "cv2_conv_flops",
    "model_info",
]

Shape = tuple[int, ...]


def _numel(s: Sequence[int]) -> int:
    return int(math.prod(max(0, int(d)) for d in s))


# ---- MAC rules: one per op kind, declared on the op specs (refnet.ops.registry) ------------------
MacRule = Callable[[Node, Sequence[Shape], Sequence[Shape]], int]


def _mac_rules() -> dict[str, MacRule]:
    return {name: spec.macs for name in registry.known_ops() if (spec := registry.get(name)).macs is not None}


MAC_RULES: dict[str, MacRule] = _mac_rules()  # a view of the specs' rules (read-only by convention)


def layer_macs(node: Node, ins: Sequence[Shape], outs: Sequence[Shape]) -> int:
    """MACs of one layer by its op spec's MAC rule (ops without one count zero)."""
    rule = registry.get(node.op, node.name).macs
    return int(rule(node, ins, outs)) if rule is not None else 0


def cv2_conv_flops(node: Node, ins: Sequence[Shape], outs: Sequence[Shape], *, respect_groups: bool = True) -> int:
    """cv2's FLOP formula for a convolution, ``out*(2*kh*kw*Cin + 1)``, with ``Cin`` the
    input channels per group (``respect_groups``) or all of them (what cv2 does)."""
    w = node.params["weight"].shape
    cin = int(w[1]) if respect_groups else int(ins[0][1])
    return _numel(outs[0]) * (2 * int(w[2]) * int(w[3]) * cin + 1)


# ---- the table -----------------------------------------------------------------------------------
@dataclass
class LayerInfo:
    """One row of the table. ``cv2_flops`` is cv2's getFLOPS for the layer (None: not available)."""

    name: str
    op: str
    inputs: list[Shape]
    outputs: list[Shape]
    params: int
    macs: int
    cv2_flops: int | None = None
    note: str = ""


@dataclass
class ModelInfo:
    """Per-layer rows and totals; ``deviations`` explains where cv2's getFLOPS disagrees."""

    model: str
    framework: str
    input_shapes: dict[str, Shape]
    layers: list[LayerInfo]
    outputs: list[str]
    cv2_flops_total: int | None = None
    cv2_error: str = ""
    deviations: list[str] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.layers)

    def table(self) -> str:
        """The layer table as text: name, op, input and output shapes, params, MACs, cv2 FLOPs; totals."""
        w = max([24] + [min(len(r.name), 40) for r in self.layers])
        lines = [f"{self.model} ({self.framework}), input " + ", ".join(f"{k} {tuple(v)}" for k, v in
                                                                         self.input_shapes.items()),
                 f"{'layer':{w}s} {'op':16s} {'input shape(s)':26s} {'output shape':20s} {'params':>10s} "
                 f"{'MACs':>14s} {'cv2 FLOPs':>14s}"]
        for r in self.layers:
            ins = " ".join(_shape(s) for s in r.inputs)
            name = r.name if len(r.name) <= w else "..." + r.name[-(w - 3):]
            cvf = "" if r.cv2_flops is None else f"{r.cv2_flops:,}"
            lines.append(f"{name:{w}s} {r.op[:16]:16s} {ins[:26]:26s} {_shape(r.outputs[0]) if r.outputs else '':20s} "
                         f"{r.params:>10,} {r.macs:>14,} {cvf:>14s}" + (f"  {r.note}" if r.note else ""))
        lines.append(f"{len(self.layers)} layers, {self.total_params:,} parameters, {self.total_macs:,} MACs "
                     f"(~{_si(2 * self.total_macs)}FLOPs = 2 x MACs); outputs {', '.join(self.outputs)}")
        if self.cv2_flops_total is not None:
            ratio = self.cv2_flops_total / max(2 * self.total_macs, 1)
            lines.append(f"cv2 getFLOPS: {self.cv2_flops_total:,} ({_si(self.cv2_flops_total)}FLOPs, "
                         f"{ratio:.2f} x our 2 x MACs)")
        elif self.cv2_error:
            lines.append(f"cv2 getFLOPS: not available ({self.cv2_error})")
        for d in self.deviations:
            lines.append(f"  cv2 deviation: {d}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data of the table (``refnet.info/1``)."""
        return {"schema": "refnet.info/1", "model": self.model, "framework": self.framework,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}, "outputs": list(self.outputs),
                "total_params": self.total_params, "total_macs": self.total_macs,
                "cv2_flops_total": self.cv2_flops_total, "cv2_error": self.cv2_error,
                "deviations": list(self.deviations),
                "layers": [{"name": r.name, "op": r.op, "inputs": [list(s) for s in r.inputs],
                            "outputs": [list(s) for s in r.outputs], "params": r.params, "macs": r.macs,
                            "cv2_flops": r.cv2_flops, "note": r.note} for r in self.layers]}


def _shape(s: Sequence[int]) -> str:
    return "x".join("?" if int(d) < 0 else str(int(d)) for d in s)


def _si(v: float) -> str:
    for unit, f in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g} "


PER_LAYER_CV2_LIMIT = 1000  # deeper nets get cv2's total only (one getFLOPS call)


def _cv2_flops(net: Net, shapes: Mapping[str, Shape], cvnet: Any = None) -> tuple[dict[str, int], int | None, str]:
    """cv2 getFLOPS per layer name and in total for ``shapes`` (({}, None, why) when cv2 cannot)."""
    try:
        import cv2

        from refnet.crosscheck.backends import cv2_net_for

        ins = [list(shapes.get(k) or ()) for k in net.input_names]
        if not ins or any(not s or min(s) <= 0 for s in ins):  # cv2's getFLOPS(()) segfaults
            return {}, None, "the net has no input of known shape"
        files = getattr(net, "files", None)
        if cvnet is None and files and files[0] == "onnx":  # cv2 reads it too; its layer names are its
            cvnet = cv2.dnn.readNetFromONNX(str(files[1][0]))  # own, so its total alone is compared
        cv = cvnet if cvnet is not None else cv2_net_for(net)
        arg = ins[0] if len(ins) == 1 else ins
        total = int(cv.getFLOPS(arg))
        per = {}
        # cv2's per-layer getFLOPS recomputes every layer's shape on each call (quadratic in depth):
        # deeper nets get cv2's total only, from one call
        if len(net.layer_names) <= PER_LAYER_CV2_LIMIT:
            for name in net.layer_names:
                lid = cv.getLayerId(name)
                if lid >= 0:
                    per[name] = int(cv.getFLOPS(lid, arg))
        return per, total, ""
    except (cv2.error, ValueError, ImportError) as e:  # type: ignore[union-attr]
        # cv2's message spans lines ("...: error: (-2:...) in function '...'\n>  (expected: ...) ..."):
        # one line, without the file and the C++ signature, keeps what it says
        text = " ".join(ln.lstrip("> ").strip() for ln in str(e).strip().splitlines())
        text = re.sub(r" in function '[^']*'", "", text.split(": error: ", 1)[-1])
        return {}, None, (text or type(e).__name__)[:200]


def model_info(net: Net, input_shapes: Mapping[str, Sequence[int]] | Sequence[int] | None = None, *,
               cv2_flops: bool = True, model_name: str | None = None, cvnet: Any = None) -> ModelInfo:
    """Shapes, parameters and MACs of every layer for ``input_shapes`` (default: the declared ones);
    with ``cv2_flops``, cv2's getFLOPS per layer and in total, and the layers where it deviates."""
    shapes = net.infer_shapes(input_shapes)
    ins_map = {k: tuple(shapes[k]) for k in net.input_names}
    per, total, err = _cv2_flops(net, ins_map, cvnet) if cv2_flops else ({}, None, "not requested")
    rows: list[LayerInfo] = []
    grouped, deconvs, linears = [], [], []
    for n in net.graph.nodes:
        i_s = [tuple(shapes[t]) for t in n.inputs]
        o_s = [tuple(shapes[t]) for t in n.outputs]
        macs = layer_macs(n, i_s, o_s)
        params = int(sum(int(np.asarray(v).size) for v in n.params.values()))
        row = LayerInfo(n.name, n.op, i_s, o_s, params, macs, per.get(n.name))
        if n.op == "conv" and registry.attrs(n)["groups"] > 1:
            g = registry.attrs(n)["groups"]
            row.note = f"groups={g}" + (f"; cv2 counts x{g}" if row.cv2_flops is not None else "")
            grouped.append((n.name, g))
        elif n.op == "deconv" and row.cv2_flops is not None and row.cv2_flops != 2 * macs:
            deconvs.append(n.name)
        elif n.op == "linear" and row.cv2_flops is not None:
            linears.append(n.name)
        rows.append(row)
    info = ModelInfo(model_name or (net.graph.source or "?"), net.graph.framework, ins_map, rows,
                     list(net.output_names), total, err)
    if total is not None:
        if grouped:
            names = ", ".join(f"{a} (x{g})" for a, g in grouped[:4]) + (" ..." if len(grouped) > 4 else "")
            info.deviations.append(f"getFLOPS ignores group: {len(grouped)} grouped/depthwise conv(s) counted with "
                                   f"all input channels: {names}")
        if deconvs:
            info.deviations.append(f"getFLOPS counts a Deconvolution as 2*kh*kw*Ci per input element (Co/g belongs "
                                   f"there): {', '.join(deconvs[:4])}")
        if linears:
            info.deviations.append("getFLOPS counts InnerProduct as 3 FLOPs per multiply-add: "
                                   + ", ".join(linears[:4]))
    return info
