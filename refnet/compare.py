"""Per-layer comparison of refnet with cv2.dnn on the same model files and the same blob.

The reference is refnet's float64 path. Against it the report measures refnet float32 and
cv2.dnn with fusion off, layer by layer (cv2 names), and cv2.dnn with fusion on at the
network outputs only (fusion merges layers, so fused intermediate blobs are not the layers'
own outputs). Each layer row holds max abs diff, max diff relative to max|ref|, mean abs
diff, cosine similarity and the worst element's position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from refnet.net import Net

__all__ = ["LayerDiff", "Report", "compare", "diff_stats", "cv2_net_for", "cv2_layer_outputs"]

TOL_VS_CV2 = 1e-4
TOL_F32 = 1e-5


@dataclass
class LayerDiff:
    layer: str
    op: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    worst: tuple[int, ...]
    ok: bool
    note: str = ""


@dataclass
class Report:
    model: str
    input_shape: tuple[int, ...]
    tolerance: dict[str, float]
    comparisons: dict[str, list[LayerDiff]] = field(default_factory=dict)
    first_bad: dict[str, str | None] = field(default_factory=dict)
    verdict: str = ""

    def worst(self, comparison: str) -> LayerDiff | None:
        rows = [r for r in self.comparisons.get(comparison, []) if not math.isnan(r.max_rel)]
        return max(rows, key=lambda r: r.max_rel) if rows else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "refnet.compare/1",
            "model": self.model,
            "input_shape": list(self.input_shape),
            "tolerance": self.tolerance,
            "verdict": self.verdict,
            "first_bad": self.first_bad,
            "comparisons": {k: [_row_json(r) for r in v] for k, v in self.comparisons.items()},
        }

    def table(self, top: int = 10) -> str:
        lines = [f"refnet compare: {self.model}  input {self.input_shape}"]
        for name, rows in self.comparisons.items():
            lines.append(f"\n[{name}]  {len(rows)} layers, tolerance {self._tol(name):g} (max diff / max|ref|)")
            lines.append(f"  {'layer':32s} {'op':16s} {'max_rel':>10s} {'max_abs':>10s} {'cosine':>10s}  worst at")
            for r in sorted(rows, key=lambda r: -r.max_rel if not math.isnan(r.max_rel) else -math.inf)[:top]:
                flag = "" if r.ok else "  <-- exceeds" + (f" ({r.note})" if r.note else "")
                lines.append(f"  {r.layer[:32]:32s} {r.op[:16]:16s} {r.max_rel:10.2e} {r.max_abs:10.2e} "
                             f"{r.cosine:10.7f}  {r.worst}{flag}")
            fb = self.first_bad.get(name)
            lines.append(f"  first layer over tolerance: {fb or 'none'}")
        lines.append(f"\nverdict: {self.verdict}")
        return "\n".join(lines)

    def _tol(self, name: str) -> float:
        return self.tolerance["float32"] if name.startswith("refnet float32") else self.tolerance["cv2"]


def _row_json(r: LayerDiff) -> dict[str, Any]:
    d = asdict(r)
    d["shape"] = list(r.shape)
    d["worst"] = list(r.worst)
    for k in ("max_abs", "max_rel", "mean_abs", "cosine"):
        d[k] = None if math.isnan(d[k]) else float(d[k])
    return d


def diff_stats(a: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, float, tuple[int, ...]]:
    """(max abs, max abs / max|ref|, mean abs, cosine similarity, index of the worst element)."""
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        if a.size == ref.size:
            a = a.reshape(ref.shape)
        else:
            return (math.nan, math.nan, math.nan, math.nan, ())
    if ref.size == 0:
        return (0.0, 0.0, 0.0, 1.0, ())
    d = np.abs(a - ref)
    d = np.where(np.isnan(a) & np.isnan(ref), 0.0, d)
    finite = np.where(np.isnan(d), np.inf, d)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(finite)), ref.shape))
    max_abs = float(np.max(finite))
    scale = float(np.nanmax(np.abs(ref))) if np.isfinite(ref).any() else 0.0
    max_rel = max_abs / max(scale, 1e-30)
    na, nr = float(np.linalg.norm(np.nan_to_num(a))), float(np.linalg.norm(np.nan_to_num(ref)))
    cos = float(np.dot(np.nan_to_num(a).ravel(), np.nan_to_num(ref).ravel()) / (na * nr)) if na and nr else (
        1.0 if na == nr else 0.0)
    return max_abs, max_rel, float(np.mean(np.nan_to_num(finite, posinf=0.0))), cos, worst


def cv2_net_for(net: Net):
    """A fresh cv2.dnn Net read from the same files as ``net`` (a new one per call: cv2 may
    return garbage when one Net is reused with another input size)."""
    import cv2

    files = getattr(net, "files", None)
    if not files:
        raise ValueError("this Net was not loaded from files; cv2 cannot read it")
    kind, paths = files
    if kind == "caffe":
        proto, model = paths
        if proto is None:
            raise ValueError("cv2.dnn needs a .prototxt; this model was loaded from a caffemodel alone")
        return cv2.dnn.readNetFromCaffe(str(proto), str(model) if model else None)
    if kind == "torch":
        binary = net.graph.meta.get("encoding", "binary") != "ascii"
        try:
            return cv2.dnn.readNetFromTorch(str(paths[0]), binary)
        except cv2.error as e:
            raise ValueError(f"cv2.dnn cannot read {paths[0]} ({str(e).strip().splitlines()[-1]}); refnet can, but "
                             "there is nothing to compare with (for GPU-saved files, compare the CPU copy)") from e
    if kind == "darknet":
        cfg, weights = paths
        return cv2.dnn.readNetFromDarknet(str(cfg), str(weights) if weights else None)
    raise ValueError(f"unknown model kind {kind!r}")


def cv2_layer_outputs(cvnet, feeds: Mapping[str, np.ndarray], names: Sequence[str], single_input: bool,
                      fusion: bool = False) -> dict[str, np.ndarray]:
    """cv2's first output of each named layer (one forward pass)."""
    cvnet.enableFusion(bool(fusion))
    for k, v in feeds.items():
        if single_input:
            cvnet.setInput(np.ascontiguousarray(v, np.float32))
        else:
            cvnet.setInput(np.ascontiguousarray(v, np.float32), k)
    outs = cvnet.forward(list(names))
    return {n: np.asarray(o) for n, o in zip(names, outs)}


def compare(net: Net, x: np.ndarray | Mapping[str, np.ndarray], *, cv2_fusion: bool = True,
            precisions: Sequence[str] = ("float64", "float32"), model_name: str | None = None) -> Report:
    """Run refnet float64 (reference), refnet float32 and cv2.dnn on ``x``; return a per-layer Report."""
    feeds = x if isinstance(x, Mapping) else {net.input_names[0]: x}
    ref = net.trace(feeds, precision="float64")
    names = [n for n in net.layer_names if n in ref]
    ops = {n.name: n.op for n in net.graph.nodes}
    rep = Report(model=model_name or (net.graph.source or "?"),
                 input_shape=tuple(next(iter(feeds.values())).shape),
                 tolerance={"float32": TOL_F32, "cv2": TOL_VS_CV2})

    def rows_for(other: Mapping[str, np.ndarray], layers: Sequence[str], tol: float) -> list[LayerDiff]:
        out = []
        for n in layers:
            if n not in other:
                continue
            ma, mr, mean, cos, worst = diff_stats(other[n], ref[n])
            ok = (not math.isnan(mr)) and mr <= tol
            note = "" if not math.isnan(mr) else f"shape {tuple(np.shape(other[n]))} vs {ref[n].shape}"
            out.append(LayerDiff(n, ops.get(n, "?"), tuple(ref[n].shape), ma, mr, mean, cos, worst, ok, note))
        return out

    if "float32" in precisions:
        f32 = net.trace(feeds, precision="float32")
        rep.comparisons["refnet float32 vs float64"] = rows_for(f32, names, TOL_F32)
    single = len(net.input_names) == 1
    cv = cv2_layer_outputs(cv2_net_for(net), feeds, names, single, fusion=False)
    rep.comparisons["cv2 (fusion off) vs refnet float64"] = rows_for(cv, names, TOL_VS_CV2)
    if cv2_fusion:
        outs = [n for n in net.output_names if n in ref]
        cvf = cv2_layer_outputs(cv2_net_for(net), feeds, outs, single, fusion=True)
        rep.comparisons["cv2 (fusion on) vs refnet float64, outputs"] = rows_for(cvf, outs, TOL_VS_CV2)
    bad = []
    for name, rows in rep.comparisons.items():
        first = next((r.layer for r in rows if not r.ok), None)
        rep.first_bad[name] = first
        if first:
            bad.append(f"{name}: first over tolerance at {first}")
    rep.verdict = "AGREE: every layer within tolerance" if not bad else "DIFFER: " + "; ".join(bad)
    return rep
