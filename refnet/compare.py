"""Per-layer comparison of refnet with cv2.dnn on the same model files and the same blob.

The reference is refnet's float64 path with the source framework's semantics. Against it the
report measures, layer by layer under cv2's layer names: refnet float32; cv2.dnn with fusion
off, Winograd off and (where the cv2 build has ``Net.enableWinograd``) on; cv2 fusion off
against refnet float32; and cv2 with fusion on at the network outputs only (fusion merges
layers, so fused intermediate blobs are not the layers' own outputs). Each row holds max abs
diff, max diff relative to max|ref|, mean abs diff, cosine similarity and the worst element.

A cv2 layer over tolerance is a *known cv2 deviation* when refnet loaded with
``quirks="cv2"`` (the importers' CV2_QUIRKS tables) agrees with cv2 there; the row names the
quirk and the layer it starts at. The final outputs also get a task-level check (top-k
classes, detections matched by IoU, argmax-map pixel agreement, stylised-image PSNR), and the
report ends in a verdict: ``AGREE``, ``AGREE with known deviations`` or ``DIFFER at <layer>``.
The JSON form is documented in docs/compare-schema.md.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refnet.graph import Graph, Node
from refnet.net import Net
from refnet.runtime.budget import check_compare

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "TOL_VS_CV2",
    "TOL_F32",
    "TORCH_CV2_QUIRKS",
    "LayerDiff",
    "Comparison",
    "TaskAgreement",
    "Report",
    "compare",
    "diff_stats",
    "cv2_net_for",
    "cv2_layer_outputs",
    "has_winograd",
    "quirk_changes",
    "load_variant",
    "infer_tasks",
    "topk_agreement",
    "match_detections",
    "ssd_detections",
    "argmax_agreement",
    "image_agreement",
    "run_document",
]

SCHEMA = "refnet.compare"
SCHEMA_VERSION = 2
TOL_VS_CV2 = 1e-4
# refnet float32 vs float64 per layer of a whole model: the long-reduction bound of DESIGN.md's
# table (a single kernel meets 1e-5; through dozens of layers the float32 rounding accumulates)
TOL_F32 = 5e-5

# Torch7 modules cv2.dnn.readNetFromTorch computes differently (weights_import.torch applies
# them with quirks="cv2"; it keeps no table of its own, so the names live here).
TORCH_CV2_QUIRKS = {
    "instance_norm": "InstanceNormalization: cv2 computes (x-mu)/sqrt(var+1e-9)/sqrt(1+eps), Torch "
                     "(x-mu)/sqrt(var+eps)",
    "avg_pool_divisor": "SpatialAveragePooling without count_include_pad: cv2 excludes the padding, Torch7 divided "
                        "by kW*kH",
    "join_table_dims": "JoinTable nInputDims: cv2 ignores it (concatenates along dimension - 1)",
    "unpool_size": "SpatialMaxUnpooling: cv2 derives the output size from the pooling geometry, Torch uses the "
                   "pooling input's size",
}

# per framework: (op, changed attribute or "*") -> quirk key of that framework's table
_DARKNET_KEYS = {
    ("batch_norm", "eps"): "bn_eps", ("region", "*"): "head_threshold", ("yolo", "*"): "head_threshold",
    ("softmax", "*"): "softmax_axis", ("max_pool", "*"): "maxpool_defaults", ("resize", "*"): "upsample_default",
    ("conv", "dilation"): "conv_dilation", ("conv", "stride"): "conv_dilation", ("eltwise", "coeffs"): "shortcut_beta",
    ("eltwise", "inputs"): "shortcut_from",
}
_TORCH_KEYS = {
    ("instance_norm", "*"): "instance_norm", ("batch_norm", "eps"): "instance_norm",
    ("avg_pool", "*"): "avg_pool_divisor", ("concat", "*"): "join_table_dims", ("max_unpool", "*"): "unpool_size",
}

# comparison ids, in report order: (id, candidate, reference, scope)
_CMP_F32 = "refnet_float32"
_CMP_CV2 = "cv2"
_CMP_CV2_WINO = "cv2_winograd"
_CMP_CV2_F32 = "cv2_vs_float32"
_CMP_FUSED = "cv2_fused"
_CMP_FUSED_NOWINO = "cv2_fused_nowinograd"


# ---- report data -------------------------------------------------------------------------------
@dataclass
class LayerDiff:
    """One layer's numbers in one comparison.

    ``status``: ``"ok"`` (within tolerance), ``"known_deviation"`` (over tolerance, but refnet
    with quirks="cv2" agrees with the candidate: ``deviation`` names the quirk, ``origin`` the
    layer it starts at), ``"tie"`` (a few elements moved because a max pooling feeding a
    MaxUnpool at ``origin`` had two maxima equal within tolerance) or ``"differ"``.
    ``max_rel_vs_quirks`` is the candidate's max_rel against refnet float64 loaded with
    quirks="cv2" (None when not computed).
    """

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
    index: int = -1
    status: str = ""
    deviation: str = ""
    origin: str = ""
    max_rel_vs_quirks: float | None = None

    def __post_init__(self) -> None:
        if not self.status:
            self.status = "ok" if self.ok else "differ"


@dataclass
class Comparison:
    """One candidate measured against one reference, per layer (``scope="layers"``) or at the outputs."""

    id: str
    candidate: str
    reference: str
    scope: str
    tolerance: float
    rows: list[LayerDiff] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.candidate} vs {self.reference}" + (", outputs" if self.scope == "outputs" else "")

    @property
    def first_bad(self) -> str | None:
        """First layer (execution order) whose status is ``differ``."""
        return next((r.layer for r in self.rows if r.status == "differ"), None)

    @property
    def first_over(self) -> str | None:
        """First layer over tolerance, known deviations included."""
        return next((r.layer for r in self.rows if not r.ok), None)

    def worst(self, known: bool = False) -> LayerDiff | None:
        """Largest max_rel (rows that are known cv2 deviations or near-ties count only when ``known``)."""
        rows = [r for r in self.rows if not math.isnan(r.max_rel) and (known or r.status in ("ok", "differ"))]
        return max(rows, key=lambda r: r.max_rel) if rows else None

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "known_deviation": 0, "tie": 0, "differ": 0}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out


@dataclass
class TaskAgreement:
    """Task-level agreement of a candidate's final outputs with the float64 reference."""

    kind: str
    outputs: tuple[str, ...]
    candidate: str
    agree: bool
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Everything :func:`compare` measured; ``table()`` for people, ``to_dict()`` for machines."""

    model: str
    input_shape: tuple[int, ...]
    tolerance: dict[str, float]
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    tasks: list[TaskAgreement] = field(default_factory=list)
    known_deviations: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = ""
    verdict_code: str = ""
    first_bad: dict[str, str | None] = field(default_factory=dict)
    framework: str = ""
    files: tuple[str, ...] = ()
    input: str = ""
    quirks: str = "none"
    task: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ties: list[str] = field(default_factory=list)

    # -- queries
    def worst(self, comparison: str, known: bool = False) -> LayerDiff | None:
        """The row with the largest max_rel in ``comparison`` (known cv2 deviations excluded unless ``known``)."""
        c = self.comparisons.get(comparison)
        return c.worst(known) if c else None

    @property
    def agree(self) -> bool:
        return self.verdict_code in ("agree", "agree_known")

    @property
    def first_bad_layer(self) -> str | None:
        """The layer the verdict names: the first that differs in a cv2 comparison, else in refnet float32."""
        c = self._first_bad_comparison()
        return c.first_bad if c is not None else None

    def _first_bad_comparison(self) -> Comparison | None:
        cs = list(self.comparisons.values())
        return next((c for c in cs if c.id.startswith("cv2") and c.first_bad), None) or next(
            (c for c in cs if c.first_bad), None)

    def summary_line(self) -> str:
        """One line: model, verdict, worst cv2 diffs (vs refnet f64 / f32, known deviations aside),
        task agreement, size and time."""
        parts = [f"{self.model}: {self.verdict}"]
        diffs = []
        for cid, what in ((_CMP_CV2, "f64"), (_CMP_CV2_F32, "f32")):
            w = self.worst(cid)
            if w is not None:
                diffs.append(f"{what} {w.max_rel:.1e} ({w.layer})")
        if diffs:
            parts.append("worst vs cv2 " + ", ".join(diffs))
        t = self.task_summary()
        if t:
            parts.append(t)
        parts.append(f"{len(self.layers)} layers, {self.timings.get('total', 0.0):.1f} s")
        return " | ".join(parts)

    def task_summary(self) -> str:
        """The task-level result of the default cv2 configuration (fusion on), else of the first candidate."""
        if not self.tasks:
            return ""
        pick = [t for t in self.tasks if t.candidate == _CMP_FUSED] or [t for t in self.tasks if
                                                                          t.candidate == _CMP_CV2] or self.tasks
        return "; ".join(f"{t.kind} {'agree' if t.agree else 'DIFFER'}: {t.summary}" for t in pick)

    # -- rendering
    def table(self, top: int = 10, layers: Sequence[str] | None = None) -> str:
        """Readable terminal report: per comparison the worst layers first (known cv2 deviations
        summarised apart), task-level results, known deviations, verdict and the summary line."""
        w = 34
        lines = [f"refnet compare: {self.model}  ({self.framework or '?'}, input {tuple(self.input_shape)}"
                 + (f", {self.input}" if self.input else "") + (f", quirks={self.quirks}" if self.quirks != "none"
                                                                 else "") + ")"]
        for c in self.comparisons.values():
            cnt = c.counts()
            lines.append(f"\n[{c.label}]  {len(c.rows)} {'layers' if c.scope == 'layers' else 'outputs'}, "
                         f"tolerance {c.tolerance:g} (max|diff| / max|ref|): {cnt['ok']} ok"
                         + (f", {cnt['known_deviation']} known cv2 deviation" if cnt["known_deviation"] else "")
                         + (f", {cnt['tie']} near-tie argmax" if cnt["tie"] else "")
                         + (f", {cnt['differ']} DIFFER" if cnt["differ"] else ""))
            lines.append(f"  {'layer':{w}s} {'op':14s} {'max_rel':>9s} {'max_abs':>9s} {'mean_abs':>9s} "
                         f"{'cosine':>10s}  worst at")
            if layers:
                rows = [r for r in c.rows if r.layer in set(layers)]
            else:
                rows = sorted((r for r in c.rows if r.status != "known_deviation"),
                              key=lambda r: (r.status != "differ", -r.max_rel if not math.isnan(r.max_rel) else
                                             -math.inf))[:top]
            for r in rows:
                lines.append(_row_line(r, w))
            shown = len(rows)
            rest = len(c.rows) - cnt["known_deviation"] - shown
            if not layers and rest > 0:
                lines.append(f"  ... {rest} more within tolerance (--top N shows more)")
            known = [r for r in c.rows if r.status == "known_deviation"]
            if known and not layers:
                big = max(known, key=lambda r: r.max_rel)
                res = max((r.max_rel_vs_quirks or 0.0) for r in known)
                lines.append(f"  + {len(known)} known cv2 deviation rows: largest {big.max_rel:.2e} at {big.layer}; "
                             f"vs refnet quirks=cv2 all <= {res:.2e}")
            lines.append(f"  first layer over tolerance: {c.first_over or 'none'}"
                         + (f"; first DIFFER: {c.first_bad}" if c.first_bad and c.first_bad != c.first_over else ""))
        if self.tasks:
            lines.append("\n[task-level agreement with refnet float64]")
            for t in self.tasks:
                lines.append(f"  {t.kind:12s} {_CANDIDATE_SHORT.get(t.candidate, t.candidate):18s} "
                             f"{'agree ' if t.agree else 'DIFFER'}  {t.summary}")
        if self.known_deviations:
            lines.append("\n[known cv2 deviations: refnet with quirks=cv2 reproduces cv2 here]")
            for d in self.known_deviations:
                ls = d["layers"]
                where = ", ".join(ls) if len(ls) <= 4 else f"{', '.join(ls[:3])}, ... ({len(ls)} layers)"
                lines.append(f"  {d['quirk'] or '-'}: {d['description']}")
                lines.append(f"      starts at {where}; {d['layers_affected']} layer(s) affected downstream")
        for n in self.notes:
            lines.append(f"note: {n}")
        lines.append(f"\nverdict: {self.verdict}")
        lines.append("summary: " + self.summary_line())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (docs/compare-schema.md, ``report`` object)."""
        return {
            "schema": f"{SCHEMA}/report",
            "version": SCHEMA_VERSION,
            "model": self.model,
            "framework": self.framework,
            "files": list(self.files),
            "input": self.input,
            "input_shape": list(self.input_shape),
            "quirks": self.quirks,
            "task": self.task,
            "tolerance": dict(self.tolerance),
            "verdict": self.verdict,
            "verdict_code": self.verdict_code,
            "first_bad": {"layer": self.first_bad_layer,
                          "comparison": (c.id if (c := self._first_bad_comparison()) is not None else None)},
            "summary": self.summary_line(),
            "layers": [dict(d) for d in self.layers],
            "comparisons": [
                {"id": c.id, "candidate": c.candidate, "reference": c.reference, "scope": c.scope,
                 "tolerance": c.tolerance, "first_over_tolerance": c.first_over, "first_bad": c.first_bad,
                 "counts": c.counts(), "rows": [_row_json(r) for r in c.rows]}
                for c in self.comparisons.values()],
            "tasks": [{"kind": t.kind, "outputs": list(t.outputs), "candidate": t.candidate, "agree": t.agree,
                       "summary": t.summary, "metrics": _jsonable(t.metrics)} for t in self.tasks],
            "known_deviations": [_jsonable(d) for d in self.known_deviations],
            "notes": list(self.notes),
            "ties": list(self.ties),
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "versions": dict(self.versions),
        }


_CANDIDATE_SHORT = {_CMP_F32: "refnet float32", _CMP_CV2: "cv2 (fusion off)", _CMP_FUSED: "cv2 (fusion on)"}


def _row_line(r: LayerDiff, w: int) -> str:
    flag = ""
    if r.status == "differ":
        flag = "  <-- DIFFER" + (f" ({r.note})" if r.note else "")
    elif r.status == "known_deviation":
        flag = f"  known cv2 deviation{' from ' + r.origin if r.origin != r.layer else ''}"
    elif r.status == "tie":
        flag = f"  near-tie: {r.note}"
    elif r.note:
        flag = f"  ({r.note})"
    name = r.layer if len(r.layer) <= w else "..." + r.layer[-(w - 3):]
    return (f"  {name:{w}s} {r.op[:14]:14s} {_fmt(r.max_rel)} {_fmt(r.max_abs)} {_fmt(r.mean_abs)} "
            f"{r.cosine:10.7f}  {list(r.worst)}{flag}")


def _fmt(v: float) -> str:
    return f"{'nan':>9s}" if math.isnan(v) else f"{v:9.2e}"


def _num(v: float | None) -> float | None:
    if v is None or math.isnan(v):
        return None
    return float(v) if math.isfinite(v) else (1e308 if v > 0 else -1e308)


def _row_json(r: LayerDiff) -> dict[str, Any]:
    return {"layer": r.layer, "op": r.op, "index": r.index, "shape": list(r.shape), "max_abs": _num(r.max_abs),
            "max_rel": _num(r.max_rel), "mean_abs": _num(r.mean_abs), "cosine": _num(r.cosine),
            "worst": list(r.worst), "ok": bool(r.ok), "status": r.status, "deviation": r.deviation,
            "origin": r.origin, "max_rel_vs_quirks": _num(r.max_rel_vs_quirks), "note": r.note}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(float(v))
    return v


def run_document(reports: Sequence[Report], *, command: Sequence[str] = ()) -> dict[str, Any]:
    """The ``--json`` document: one report per input plus a summary row each (docs/compare-schema.md)."""
    import platform

    rows = []
    for r in reports:
        w64, w32 = r.worst(_CMP_CV2), r.worst(_CMP_CV2_F32)
        rows.append({"model": r.model, "input": r.input, "verdict": r.verdict, "verdict_code": r.verdict_code,
                     "worst_vs_cv2_float64": _num(w64.max_rel) if w64 else None,
                     "worst_vs_cv2_float32": _num(w32.max_rel) if w32 else None,
                     "first_bad": r.first_bad_layer, "task_agree": all(t.agree for t in r.tasks) if r.tasks else None})
    codes = [r.verdict_code for r in reports]
    overall = "differ" if "differ" in codes else ("agree_known" if "agree_known" in codes else "agree")
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, "command": list(command),
            "versions": reports[0].versions if reports else _versions(), "platform": platform.platform(),
            "verdict_code": overall if reports else "agree", "summary": rows, "reports": [r.to_dict() for r in reports]}


# ---- numbers -----------------------------------------------------------------------------------
def diff_stats(a: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, float, tuple[int, ...]]:
    """(max abs, max abs / max|ref|, mean abs, cosine similarity, index of the worst element).

    NaN in both at the same place counts as equal; NaN in one only is an infinite difference.
    Arrays of equal size but different layout (cv2 flattens some outputs) are compared
    elementwise; different sizes give NaN statistics.
    """
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        if a.size == ref.size:
            a = a.reshape(ref.shape)
        else:
            return (math.nan, math.nan, math.nan, math.nan, ())
    if ref.size == 0:
        return (0.0, 0.0, 0.0, 1.0, ())
    d = np.abs(a - ref).ravel()
    clean = bool(np.isfinite(d).all())  # then a and ref are finite too
    if not clean:
        bad = np.isnan(d)  # NaN at the same place in both is equal; anything else NaN is infinitely far
        d[bad] = np.where(np.isnan(a).ravel()[bad] & np.isnan(ref).ravel()[bad], 0.0, np.inf)
    i = int(np.argmax(d))
    worst = tuple(int(v) for v in np.unravel_index(i, ref.shape))
    max_abs = float(d[i])
    if clean:
        scale = float(np.max(np.abs(ref)))
        mean_abs = float(np.mean(d))
        a0, r0 = a.ravel(), ref.ravel()
    else:
        scale = float(np.nanmax(np.abs(ref))) if np.isfinite(ref).any() else 0.0
        mean_abs = float(np.mean(np.where(np.isinf(d), 0.0, d)))
        r0 = np.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0).ravel()
        a0 = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0).ravel()
    max_rel = max_abs / max(scale, 1e-30)
    # plain reductions, not BLAS dot: exact enough, and immune to oversubscribed BLAS threads
    na, nr = math.sqrt(float(np.add.reduce(a0 * a0))), math.sqrt(float(np.add.reduce(r0 * r0)))
    cos = float(np.add.reduce(a0 * r0)) / (na * nr) if na and nr else (1.0 if na == nr else 0.0)
    return max_abs, max_rel, mean_abs, cos, worst


# ---- cv2 -----------------------------------------------------------------------------------------
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


def has_winograd() -> bool:
    """True when this cv2 build has ``Net.enableWinograd`` (OpenCV >= 4.7)."""
    import cv2

    return hasattr(cv2.dnn.Net, "enableWinograd")


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


def _versions() -> dict[str, str]:
    import cv2
    import numba

    import refnet

    return {"refnet": refnet.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "numba": numba.__version__}


# ---- quirks: which layers cv2 computes differently, and why --------------------------------------
def load_variant(net: Net, quirks: str) -> Net:
    """``net``'s model files loaded again with ``quirks`` ("none" or "cv2")."""
    from refnet import net as netmod

    if not net.files:
        raise ValueError("this Net was not loaded from files")
    kind, paths = net.files
    if kind == "caffe":
        return netmod.load_caffe(paths[0], paths[1], quirks=quirks)
    if kind == "torch":
        return netmod.load_torch(paths[0], quirks=quirks)
    if kind == "darknet":
        return netmod.load_darknet(paths[0], paths[1], quirks=quirks)
    raise ValueError(f"unknown model kind {kind!r}")


def _graph_quirks_mode(g: Graph) -> str:
    q = g.meta.get("quirks")
    if isinstance(q, str):
        return q
    return "cv2" if q else "none"


def _quirk_text(framework: str, key: str | None, fallback: str) -> tuple[str | None, str]:
    if key is None:
        return None, fallback
    if framework == "darknet":
        from refnet.weights_import.darknet import CV2_QUIRKS as DK

        return key, DK.get(key, fallback)
    if framework == "torch":
        return key, TORCH_CV2_QUIRKS.get(key, fallback)
    return key, fallback


def quirk_changes(faithful: Graph, quirky: Graph) -> dict[str, tuple[str | None, str]]:
    """Layers that ``quirks="cv2"`` changed: ``{layer: (quirk key or None, description)}``.

    Caffe graphs carry the importer's own log (``meta["quirks"]``, texts of
    weights_import.caffe.CV2_QUIRKS); for Darknet and Torch the two graphs are diffed node by
    node and each change is named from darknet.CV2_QUIRKS / :data:`TORCH_CV2_QUIRKS`.
    """
    out: dict[str, tuple[str | None, str]] = {}
    log = quirky.meta.get("quirks")
    if isinstance(log, (list, tuple)) and log:
        from refnet.weights_import.caffe import CV2_QUIRKS as CQ

        inverse = {v: k for k, v in CQ.items()}
        for name, text in log:
            out.setdefault(str(name), (inverse.get(text), str(text)))
    fw = quirky.framework or faithful.framework
    table = _DARKNET_KEYS if fw == "darknet" else _TORCH_KEYS if fw == "torch" else {}
    base = {n.name: n for n in faithful.nodes}
    for n in quirky.nodes:
        if n.name in out:
            continue
        m = base.get(n.name)
        if m is None:
            out[n.name] = (None, f"layer only in the cv2-quirk graph ({n.op})")
            continue
        changed = [k for k in sorted(set(n.attrs) | set(m.attrs)) if n.attrs.get(k) != m.attrs.get(k)]
        if n.op != m.op:
            changed.insert(0, "op")
        if n.inputs != m.inputs:
            changed.append("inputs")
        if set(n.params) != set(m.params) or any(
                not np.array_equal(n.params[k], m.params[k]) for k in n.params if k in m.params):
            changed.append("params")
        if not changed:
            continue
        key = next((table[(n.op, c)] for c in changed if (n.op, c) in table), table.get((n.op, "*")))
        detail = ", ".join(f"{c}: {m.attrs.get(c)!r} -> {n.attrs.get(c)!r}" if c in n.attrs or c in m.attrs else c
                           for c in changed)
        out[n.name] = _quirk_text(fw, key, f"cv2 computes this {n.op} differently ({detail})")
    return out


def _producers(g: Graph) -> dict[str, Node]:
    return {t: n for n in g.nodes for t in n.outputs}


def _origin(layer: str, g: Graph, changes: Mapping[str, Any], producers: Mapping[str, Node]) -> str | None:
    """The nearest layer at or upstream of ``layer`` that the cv2 quirks changed (breadth-first)."""
    try:
        start = g.node(layer)
    except KeyError:
        return None
    seen = {start.name}
    frontier = [start]
    while frontier:
        nxt = []
        for n in frontier:
            if n.name in changes:
                return n.name
            for t in n.inputs:
                p = producers.get(t)
                if p is not None and p.name not in seen:
                    seen.add(p.name)
                    nxt.append(p)
        frontier = nxt
    return None


def _quirk_trace(net: Net, qnet: Net, changes: Mapping[str, Any], feeds: Mapping[str, np.ndarray],
                 ref: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float64 trace of the quirks="cv2" net, re-running only from the first layer the quirks
    changed (earlier layers are identical: their outputs are taken from ``ref``)."""
    fn, qn = net.graph.nodes, qnet.graph.nodes
    k = next((i for i, n in enumerate(qn) if n.name in changes or i >= len(fn) or fn[i].name != n.name), len(qn))
    produced_before = {t for n in qn[:k] for t in n.outputs}
    boundary = list(dict.fromkeys(t for n in qn[k:] for t in n.inputs if t in produced_before))
    if k == 0 or any(t not in ref for t in boundary):
        return qnet.trace(feeds, precision="float64")
    sub_feeds = {t: ref[t] for t in boundary}
    sub_feeds.update({t: np.asarray(feeds[t], np.float64) for t in qnet.input_names if
                      any(t in n.inputs for n in qn[k:])})
    tail = qn[k:]
    names = {n.name for n in tail}
    g = Graph(tail, tuple(sub_feeds), {t: tuple(v.shape) for t, v in sub_feeds.items()},
              layer_names=tuple(n for n in qnet.graph.layer_names if n in names), framework=qnet.graph.framework,
              source=qnet.graph.source, meta=qnet.graph.meta)
    out = {n: ref[n] for n in qnet.graph.layer_names if n in ref and n not in names}
    out.update(Net(g).trace(sub_feeds, precision="float64"))
    return out


# ---- near-tie argmax -------------------------------------------------------------------------------
def _tie_sources(net: Net, ref: Mapping[str, np.ndarray], tol: float) -> dict[str, np.ndarray]:
    """MaxUnpool layers whose pooling input has windows with two maxima within ``2 * tol * max|input|``:
    ``{unpool layer: boolean near-tie mask over the pooled grid (N, C, Ho, Wo)}`` (non-overlapping
    windows only; other geometries are not analysed)."""
    out: dict[str, np.ndarray] = {}
    producers = _producers(net.graph)
    for n in net.graph.nodes:
        if n.op != "max_unpool" or len(n.inputs) < 2:
            continue
        pool = producers.get(n.inputs[1])
        if pool is None or pool.op != "max_pool" or not pool.inputs or pool.inputs[0] not in ref:
            continue
        kh, kw = pool.attrs.get("kernel", (0, 0))
        if tuple(pool.attrs.get("stride", (0, 0))) != (kh, kw) or any(pool.attrs.get("pad", (0, 0, 0, 0))) or kh < 1:
            continue
        x = np.asarray(ref[pool.inputs[0]], np.float64)
        if x.ndim != 4 or kh * kw < 2:
            continue
        N, C, H, W = x.shape
        ho, wo = H // kh, W // kw
        win = x[:, :, :ho * kh, :wo * kw].reshape(N, C, ho, kh, wo, kw).transpose(0, 1, 2, 4, 3, 5)
        win = np.sort(win.reshape(N, C, ho, wo, kh * kw), axis=-1)
        near = (win[..., -1] - win[..., -2]) <= 2 * tol * max(float(np.max(np.abs(x))), 1e-30)
        if near.any():
            out[n.name] = near
    return out


def _tie_origin(layer: str, g: Graph, ties: Mapping[str, np.ndarray], producers: Mapping[str, Node]) -> str | None:
    return _origin(layer, g, ties, producers)


def _over_in_tie_windows(over: np.ndarray, near: np.ndarray) -> bool:
    """True when every element over tolerance lies in a near-tie pooling window."""
    if over.ndim != 4 or not over.any():
        return False
    n, c, y, x = np.nonzero(over)
    N, C, ho, wo = near.shape
    kh = max(1, over.shape[2] // max(ho, 1))
    kw = max(1, over.shape[3] // max(wo, 1))
    wy, wx = y // kh, x // kw
    inside = (wy < ho) & (wx < wo)
    return bool(inside.all() and near[n, c, np.minimum(wy, ho - 1), np.minimum(wx, wo - 1)].all())


# ---- tasks -----------------------------------------------------------------------------------------
def infer_tasks(net: Net, task: str | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """``[(kind, outputs)]`` for the net's outputs: ``detect_ssd``, ``detect_yolo``, ``classify``,
    ``segment``, ``stylize``; the zoo task decides where the op and shape leave a choice."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        shapes = net.infer_shapes(input_shapes)
    except Exception:  # undeclared input shapes: decide by op alone
        shapes = {}
    ops = {n.name: n.op for n in net.graph.nodes}
    out: list[tuple[str, tuple[str, ...]]] = []
    yolo = tuple(o for o in net.output_names if ops.get(o) in ("region", "yolo"))
    if yolo:
        out.append(("detect_yolo", yolo))
    raw = ()
    if not yolo and {"boxes", "scores"} <= set(net.output_names) and not any(
            ops.get(o) == "detection_output" for o in net.output_names):
        raw = ("boxes", "scores")  # Ultra-Light-Fast raw SSD heads, decoded against its own priors
        out.append(("detect_ultraface", raw))
    for o in net.output_names:
        op = ops.get(o, "")
        if op in ("region", "yolo") or o in raw:
            continue
        if op == "detection_output":
            out.append(("detect_ssd", (o,)))
            continue
        s = shapes.get(o)
        spatial = s is not None and len(s) == 4 and s[2] * s[3] > 1
        if task == "stylize" and (s is None or spatial):
            out.append(("stylize", (o,)))
        elif task == "segment" and (s is None or spatial):
            out.append(("segment", (o,)))
        elif s is not None and (len(s) == 2 or (len(s) == 4 and s[2] == s[3] == 1)) and s[1] > 1 and (
                task == "classify" or op in ("softmax", "log_softmax")):
            out.append(("classify", (o,)))
        elif spatial and s[1] > 1 and op in ("softmax", "log_softmax"):
            out.append(("segment", (o,)))
    return out


def topk_agreement(cand: np.ndarray, ref: np.ndarray, k: int = 5, labels: Sequence[str] | None = None,
                   label_offset: int = 0, tie_tol: float = 0.0) -> dict[str, Any]:
    """Top-k classes of ``cand`` vs ``ref`` (rows = images, columns = classes; trailing 1x1 dropped).

    ``agree`` when every image's top-1 class is the same, or differs only where the reference's
    top two scores are within ``tie_tol`` (a tie the tolerance cannot resolve).
    """
    r = np.asarray(ref, np.float64).reshape(ref.shape[0], -1)
    c = np.asarray(cand, np.float64).reshape(r.shape)
    k = max(1, min(k, r.shape[1]))
    rt = np.argsort(-r, axis=1, kind="stable")[:, :k]
    ct = np.argsort(-c, axis=1, kind="stable")[:, :k]
    top1_same = rt[:, 0] == ct[:, 0]
    sr = np.sort(r, axis=1)
    margin = sr[:, -1] - sr[:, -2] if r.shape[1] > 1 else np.full(r.shape[0], np.inf)
    ties = ~top1_same & (margin <= tie_tol)
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(rt, ct)]

    def name(i: int) -> str:
        j = i - label_offset
        if labels is None or not 0 <= j < len(labels):
            return str(i)
        return re.sub(r"^n\d{8}\s+", "", labels[j]).split(",")[0].strip()  # "n04266014 space shuttle" -> name

    top = [[{"class": int(i), "label": name(int(i)), "score": float(r[n, i])} for i in rt[n]] for n in range(len(r))]
    agree = bool(np.all(top1_same | ties))
    first = top[0][0]
    summary = (f"top-1 {first['label']!r} ({first['score']:.4g}) " + ("same" if top1_same.all() else "differs")
               + f", top-{k} overlap {min(overlap)}/{k}")
    return {"agree": agree, "summary": summary, "k": k, "top1_same": [bool(v) for v in top1_same],
            "topk_overlap": overlap, "ties": int(ties.sum()), "max_abs_score_diff": float(np.max(np.abs(c - r))),
            "reference_topk": top, "candidate_top1": [int(v) for v in ct[:, 0]]}


def match_detections(ref_boxes: np.ndarray, ref_scores: np.ndarray, ref_classes: np.ndarray,
                     boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, *, iou_min: float = 0.5,
                     threshold: float | None = None, margin: float = 1e-3) -> dict[str, Any]:
    """Greedy one-to-one matching of detections (same class, best IoU >= ``iou_min``, reference
    in descending score order). ``agree`` when every detection is matched with IoU >= 0.9,
    except detections whose score is within ``margin`` of ``threshold`` (they may fall on
    either side of it)."""
    from refnet.kernels import iou

    rb = np.asarray(ref_boxes, np.float64).reshape(-1, 4)
    cb = np.asarray(boxes, np.float64).reshape(-1, 4)
    rs, cs = np.asarray(ref_scores, np.float64).reshape(-1), np.asarray(scores, np.float64).reshape(-1)
    rc, cc = np.asarray(ref_classes).reshape(-1), np.asarray(classes).reshape(-1)
    used = np.zeros(len(cb), bool)
    ious = iou(rb, cb) if len(rb) and len(cb) else np.zeros((len(rb), len(cb)))
    pairs: list[tuple[int, int, float]] = []
    for i in np.argsort(-rs, kind="stable"):
        cand = np.flatnonzero((cc == rc[i]) & ~used)
        if cand.size == 0:
            continue
        j = int(cand[np.argmax(ious[i, cand])])
        if ious[i, j] >= iou_min:
            used[j] = True
            pairs.append((int(i), j, float(ious[i, j])))
    matched_ref = {p[0] for p in pairs}

    def borderline(s: float) -> bool:
        return threshold is not None and abs(s - threshold) <= margin

    un_ref = [int(i) for i in range(len(rb)) if i not in matched_ref]
    un_cand = [int(j) for j in range(len(cb)) if not used[j]]
    hard = [i for i in un_ref if not borderline(rs[i])] + [j for j in un_cand if not borderline(cs[j])]
    min_iou = min((p[2] for p in pairs), default=1.0)
    sdiff = max((abs(rs[i] - cs[j]) for i, j, _ in pairs), default=0.0)
    agree = not hard and min_iou >= 0.9
    summary = (f"{len(pairs)}/{len(rb)} detections matched" + (f" (+{len(un_cand)} extra)" if un_cand else "")
               + (f", min IoU {min_iou:.4f}, max score diff {sdiff:.2g}" if pairs else ""))
    return {"agree": bool(agree), "summary": summary, "reference": int(len(rb)), "candidate": int(len(cb)),
            "matched": len(pairs), "unmatched_reference": un_ref, "unmatched_candidate": un_cand,
            "min_iou": float(min_iou), "max_score_diff": float(sdiff),
            "reference_detections": [{"class": int(rc[i]), "score": float(rs[i]), "box": [float(v) for v in rb[i]]}
                                     for i in np.argsort(-rs, kind="stable")[:20]]}


def ssd_detections(out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, scores, classes) of a DetectionOutput blob ``(1, 1, K, 7)`` rows
    ``[image, label, score, x1, y1, x2, y2]``; empty rows (score <= 0 or label < 0) dropped."""
    rows = np.asarray(out, np.float64).reshape(-1, 7)
    rows = rows[(rows[:, 2] > 0) & (rows[:, 1] >= 0)]
    return rows[:, 3:7], rows[:, 2], rows[:, 1].astype(np.int64)


def argmax_agreement(cand: np.ndarray, ref: np.ndarray, tie_tol: float = 0.0) -> dict[str, Any]:
    """Pixel agreement of the argmax-over-channels maps of two ``(N, C, H, W)`` score blobs.

    ``agree`` when every differing pixel is a reference near-tie (top-two scores within ``tie_tol``).
    """
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64).reshape(r.shape)
    ra, ca = r.argmax(1), c.argmax(1)
    diff = ra != ca
    sr = np.sort(r, axis=1)
    margin = sr[:, -1] - sr[:, -2]
    hard = diff & (margin > tie_tol)
    frac = 1.0 - float(diff.mean()) if diff.size else 1.0
    return {"agree": bool(not hard.any()), "summary": f"{frac * 100:.3f}% pixels agree ({int(diff.sum())} differ"
            + (f", {int(hard.sum())} not near-ties" if hard.any() else "") + ")",
            "pixel_agreement": frac, "pixels": int(diff.size), "differing": int(diff.sum()),
            "differing_not_ties": int(hard.sum()), "classes_present": sorted(int(v) for v in np.unique(ra))}


def image_agreement(cand: np.ndarray, ref: np.ndarray, min_psnr: float = 60.0) -> dict[str, Any]:
    """PSNR (peak = the reference's value range) and max abs diff of two output images."""
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64).reshape(r.shape)
    peak = float(np.ptp(r)) or 1.0
    mse = float(np.mean((c - r) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    return {"agree": bool(psnr >= min_psnr), "summary": f"PSNR {psnr:.1f} dB, max |diff| {np.max(np.abs(c - r)):.3g}",
            "psnr": psnr if math.isfinite(psnr) else 999.0, "max_abs": float(np.max(np.abs(c - r))),
            "peak": peak}


def _task_result(kind: str, outs: tuple[str, ...], cand: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
                 net: Net, labels, label_offset: int, top_k: int,
                 input_hw: tuple[int, int] = (0, 0)) -> dict[str, Any] | None:
    if any(o not in cand or o not in ref for o in outs):
        return None
    if kind == "classify":
        r = ref[outs[0]]
        return topk_agreement(cand[outs[0]].reshape(r.shape), r, top_k, labels, label_offset,
                              tie_tol=2 * TOL_VS_CV2 * float(np.max(np.abs(r))))
    if kind == "segment":
        r = ref[outs[0]]
        return argmax_agreement(cand[outs[0]], r, tie_tol=2 * TOL_VS_CV2 * float(np.max(np.abs(r))))
    if kind == "stylize":
        return image_agreement(cand[outs[0]], ref[outs[0]])
    if kind == "detect_ssd":
        thr = float(net.graph.node(outs[0]).attrs.get("confidence_threshold", 0.0))
        if cand[outs[0]].size % 7:
            return None
        return match_detections(*ssd_detections(ref[outs[0]]), *ssd_detections(cand[outs[0]]), threshold=thr)
    if kind == "detect_ultraface":
        from refnet.pipelines import ultraface_decode

        wh = (int(input_hw[1]), int(input_hw[0]))
        a = ultraface_decode(ref[outs[0]], ref[outs[1]], wh)
        b = ultraface_decode(cand[outs[0]].reshape(ref[outs[0]].shape), cand[outs[1]].reshape(ref[outs[1]].shape), wh)
        return match_detections(*a, *b, threshold=0.7)
    if kind == "detect_yolo":
        from refnet.kernels.yolo import yolo_detections

        def dets(d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            arrs = []
            for o in outs:
                a = np.asarray(d[o], np.float64)
                arrs.append(a.reshape(-1, a.shape[-1]))
            return yolo_detections(arrs, conf_threshold=0.25, nms_threshold=0.45)

        a, b = dets(ref), dets(cand)
        return match_detections(a["boxes"], a["scores"], a["class_ids"], b["boxes"], b["scores"], b["class_ids"],
                                threshold=0.25)
    return None


# ---- the comparison ---------------------------------------------------------------------------------
def _rows(cid_tol: float, other: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], layers: Sequence[str],
          ops: Mapping[str, str], index: Mapping[str, int]) -> list[LayerDiff]:
    out = []
    for n in layers:
        if n not in other or n not in ref:
            continue
        ma, mr, mean, cos, worst = diff_stats(other[n], ref[n])
        ok = (not math.isnan(mr)) and mr <= cid_tol
        note = "" if not math.isnan(mr) else f"shape {tuple(np.shape(other[n]))} vs {tuple(ref[n].shape)}"
        out.append(LayerDiff(n, ops.get(n, "?"), tuple(ref[n].shape), ma, mr, mean, cos, worst, ok, note,
                             index=index.get(n, -1)))
    return out


def _model_label(net: Net) -> str:
    from pathlib import Path

    src = net.graph.source
    return Path(src).name if src else "?"


def compare(net: Net, x: np.ndarray | Mapping[str, np.ndarray], *, cv2_fusion: bool = True,
            precisions: Sequence[str] = ("float64", "float32"), model_name: str | None = None,
            task: str | None = None, labels: Sequence[str] | None = None, label_offset: int = 0,
            top_k: int = 5, winograd: bool | None = None, attribute_quirks: bool = True,
            input_label: str = "", progress: Callable[[str], None] | None = None) -> Report:
    """Run refnet float64 (reference), refnet float32 and cv2.dnn on ``x``; return a per-layer Report.

    ``precisions``: the refnet precisions to run (float64 always runs: it is the reference).
    ``cv2_fusion``: also run cv2 with fusion on (outputs only). ``winograd``: None = both
    settings where cv2 has ``enableWinograd``, False = off only, True = on only. ``task``: the zoo task
    ("classify", "detect", "segment", "stylize", "face"), else inferred from the outputs.
    ``attribute_quirks``: load the model again with quirks="cv2" to name known cv2 deviations.
    """
    for p in precisions:
        if p not in ("float32", "float64"):
            raise ValueError(f"precisions must be float32/float64, got {p!r}")
    say = progress or (lambda s: None)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        say(f"{key} ...")
        v = fn()
        timings[key] = time.perf_counter() - t
        return v

    feeds = dict(x) if isinstance(x, Mapping) else {net.input_names[0]: x}
    check_compare(net, feeds, precisions, 1 if winograd is not None else 2)  # BudgetError before any run
    ref = timed("refnet float64", lambda: net.trace(feeds, precision="float64"))
    order = [n.name for n in net.graph.nodes]
    names = [n for n in net.layer_names if n in ref]
    index = {n: i for i, n in enumerate(order)}
    ops = {n.name: n.op for n in net.graph.nodes}
    mode = _graph_quirks_mode(net.graph)
    rep = Report(model=model_name or _model_label(net), input_shape=tuple(next(iter(feeds.values())).shape),
                 tolerance={"float32": TOL_F32, "cv2": TOL_VS_CV2}, framework=net.graph.framework,
                 files=tuple(str(p) for p in (net.files[1] if net.files else ()) if p is not None),
                 input=input_label, quirks=mode, task=task or "", versions=_versions())
    rep.layers = [{"index": index[n], "name": n, "op": ops[n], "shape": list(ref[n].shape)} for n in names]

    single = len(net.input_names) == 1
    wino_modes = [False, True] if (winograd is None and has_winograd()) else [bool(winograd)] if winograd else [False]
    cands: dict[str, Mapping[str, np.ndarray]] = {}

    f32 = None
    if "float32" in precisions:
        f32 = timed("refnet float32", lambda: net.trace(feeds, precision="float32"))
        c = Comparison(_CMP_F32, "refnet float32", "refnet float64", "layers", TOL_F32,
                       _rows(TOL_F32, f32, ref, names, ops, index))
        rep.comparisons[c.id] = c
        cands[_CMP_F32] = f32
    cv_ver = _versions()["opencv"]
    for wino in wino_modes:
        cv = timed(f"cv2 fusion off{' winograd' if wino else ''}",
                   lambda w=wino: cv2_layer_outputs(cv2_net_for(net), feeds, names, single, fusion=False, winograd=w))
        cid = _CMP_CV2_WINO if wino else _CMP_CV2
        cand = f"cv2 {cv_ver} (fusion off, Winograd {'on' if wino else 'off'})"
        rep.comparisons[cid] = Comparison(cid, cand, "refnet float64", "layers", TOL_VS_CV2,
                                          _rows(TOL_VS_CV2, cv, ref, names, ops, index))
        cands[cid] = cv
        if not wino and f32 is not None:
            rep.comparisons[_CMP_CV2_F32] = Comparison(_CMP_CV2_F32, cand, "refnet float32", "layers", TOL_VS_CV2,
                                                       _rows(TOL_VS_CV2, cv, f32, names, ops, index))
    if cv2_fusion:
        outs = [n for n in net.output_names if n in ref]
        for wino in sorted(wino_modes, reverse=True):
            cvf = timed(f"cv2 fusion on{' winograd' if wino else ''}",
                        lambda w=wino: cv2_layer_outputs(cv2_net_for(net), feeds, outs, single, fusion=True,
                                                         winograd=w))
            cid = _CMP_FUSED if (wino or len(wino_modes) == 1) else _CMP_FUSED_NOWINO
            cand = f"cv2 {cv_ver} (fusion on, Winograd {'on' if wino else 'off'})"
            rep.comparisons[cid] = Comparison(cid, cand, "refnet float64", "outputs", TOL_VS_CV2,
                                              _rows(TOL_VS_CV2, cvf, ref, outs, ops, index))
            cands[cid] = cvf

    # -- set-valued outputs (detections): judged by matching, not elementwise
    kinds = infer_tasks(net, _task_kind(task), {k: v.shape for k, v in feeds.items()})
    for c in rep.comparisons.values():
        src = cands.get(c.id) if c.id != _CMP_CV2_F32 else cands.get(_CMP_CV2)
        other_ref = f32 if c.id == _CMP_CV2_F32 else ref
        for r in c.rows:
            if r.ok or ops.get(r.layer) not in ("detection_output",) or src is None or other_ref is None:
                continue
            m = _task_result("detect_ssd", (r.layer,), src, other_ref, net, None, 0, top_k)
            if m is not None and m["agree"]:
                r.ok, r.status = True, "ok"
                r.note = f"compared as a detection set: {m['summary']}"

    # -- near-tie argmax: max pooling indices feeding a MaxUnpool may pick another of two (almost)
    # equal maxima; the output then differs at a few positions, and downstream only near them
    ties = _tie_sources(net, ref, TOL_VS_CV2)
    if ties:
        producers = _producers(net.graph)
        for c in rep.comparisons.values():
            src = cands.get(_CMP_CV2) if c.id == _CMP_CV2_F32 else cands.get(c.id)
            other_ref = f32 if c.id == _CMP_CV2_F32 else ref
            if src is None or other_ref is None:
                continue
            for r in c.rows:
                if r.status != "differ":
                    continue
                org = _tie_origin(r.layer, net.graph, ties, producers)
                if org is None:
                    continue
                a, b = np.asarray(src[r.layer], np.float64), np.asarray(other_ref[r.layer], np.float64)
                if a.size != b.size:
                    continue
                over = np.abs(a.reshape(b.shape) - b) > c.tolerance * max(float(np.max(np.abs(b))), 1e-30)
                # the tie layer itself: every moved element sits in a near-tie window; anywhere at or
                # below it: the difference stays local (<= 1% of the elements, cosine ~1)
                fine = (r.layer == org and _over_in_tie_windows(over, ties[org])) or (
                    float(over.mean()) <= 1e-2 and r.cosine >= 0.999)
                if fine:
                    r.status, r.origin = "tie", org
                    r.note = (f"{int(over.sum())} element(s) moved by a near-tie max-pooling argmax"
                              + ("" if r.layer == org else f" at {org}"))

    # -- attribute what is over tolerance to known cv2 quirks
    cv_ids = [k for k in rep.comparisons if k.startswith("cv2")]
    bad_cv = any(r.status == "differ" for k in cv_ids for r in rep.comparisons[k].rows)
    qref = None
    if bad_cv and attribute_quirks and mode == "none" and net.files:
        try:
            qnet = timed("load quirks=cv2", lambda: load_variant(net, "cv2"))
            changes = quirk_changes(net.graph, qnet.graph)
        except Exception as e:  # the attribution is a bonus: never let it sink the report
            changes, qnet = {}, None
            rep.notes.append(f"could not load the model with quirks='cv2' to attribute deviations: {e}")
        if changes and qnet is not None:
            qref = timed("refnet float64 quirks=cv2", lambda: _quirk_trace(net, qnet, changes, feeds, ref))
            producers = _producers(net.graph)
            origins: dict[str, set[str]] = {}
            for k in cv_ids:
                c = rep.comparisons[k]
                src = cands[_CMP_CV2] if k == _CMP_CV2_F32 else cands[k]
                for r in c.rows:
                    if r.status != "differ" or r.layer not in qref:
                        continue
                    qs = diff_stats(src[r.layer], qref[r.layer])[1]
                    r.max_rel_vs_quirks = qs
                    if not math.isnan(qs) and qs <= c.tolerance:
                        org = _origin(r.layer, net.graph, changes, producers)
                        r.status = "known_deviation"
                        r.origin = org or r.layer
                        r.deviation = changes[org][1] if org else "cv2 quirk (unattributed)"
                        origins.setdefault(r.origin, set()).add(r.layer)
            groups: dict[str, dict[str, Any]] = {}
            for org, affected in sorted(origins.items(), key=lambda kv: index.get(kv[0], 0)):
                key, desc = changes.get(org, (None, "cv2 quirk (unattributed)"))
                g = groups.setdefault(desc, {"quirk": key, "description": desc, "layers": [], "layers_affected": 0})
                g["layers"].append(org)
                g["layers_affected"] += len(affected)
            rep.known_deviations = list(groups.values())

    # -- task level
    first = next(iter(feeds.values()))
    in_hw = (int(first.shape[2]), int(first.shape[3])) if first.ndim == 4 else (0, 0)
    rep.task = task or ("+".join(sorted({k.replace("detect_", "detect:") for k, _ in kinds})) or "")
    for kind, outs in kinds:
        for cid in (_CMP_F32, _CMP_CV2, _CMP_FUSED):
            if cid not in cands:
                continue
            m = _task_result(kind, outs, cands[cid], ref, net, labels, label_offset, top_k, in_hw)
            if m is None:
                continue
            if not m["agree"] and qref is not None and cid != _CMP_F32:
                mq = _task_result(kind, outs, cands[cid], qref, net, labels, label_offset, top_k, in_hw)
                if mq is not None and mq["agree"]:
                    m = dict(m, agree=True, summary=m["summary"] + " (agrees with refnet quirks=cv2)")
            rep.tasks.append(TaskAgreement(kind.replace("detect_", "detect:"), outs, cid, bool(m.pop("agree")),
                                           m.pop("summary"), m))

    # -- verdict
    rep.first_bad = {k: c.first_bad for k, c in rep.comparisons.items()}
    bad = rep._first_bad_comparison()
    if bad is not None:
        c, layer = bad, bad.first_bad
        r = next(r for r in c.rows if r.layer == layer)
        why = r.note or f"{r.max_rel:.2e} > {c.tolerance:g}"
        rep.verdict, rep.verdict_code = f"DIFFER at {layer} ({c.label}: {why})", "differ"
    elif rep.known_deviations or any(r.status == "known_deviation" for c in rep.comparisons.values()
                                     for r in c.rows):
        rep.verdict, rep.verdict_code = "AGREE with known deviations: " + _deviation_list(rep), "agree_known"
    else:
        rep.verdict, rep.verdict_code = "AGREE", "agree"
    tie_origins = sorted({r.origin for c in rep.comparisons.values() for r in c.rows if r.status == "tie"},
                         key=lambda n: index.get(n, 0))
    if tie_origins:
        rep.ties = tie_origins
        if rep.verdict_code != "differ":
            rep.verdict += f" (near-tie max-pooling argmax at {', '.join(tie_origins)})"
    task_bad = [t for t in rep.tasks if not t.agree]
    if task_bad and rep.verdict_code != "differ":
        rep.notes.append("task-level disagreement although every layer is within tolerance: "
                         + "; ".join(f"{t.kind} ({t.candidate}): {t.summary}" for t in task_bad))
    timings["total"] = time.perf_counter() - t_all
    rep.timings = timings
    return rep


def _deviation_list(rep: Report) -> str:
    parts = []
    for d in rep.known_deviations:
        name = d["quirk"] or d["description"][:48]
        ls = d["layers"]
        parts.append(f"{name} ({', '.join(ls)})" if len(ls) <= 2 else f"{name} ({len(ls)} layers from {ls[0]})")
    return "; ".join(parts) or "unattributed"


def _task_kind(task: str | None) -> str | None:
    return None if task in (None, "", "face", "detect") else task


# ---- `refnet compare`: models, inputs, output files ----------------------------------------------------
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ResolvedModel:
    """What ``refnet compare``/``refnet info`` load: the net, its zoo entry and labels, and notes
    (e.g. that the weights were seeded because only the architecture is on disk)."""

    net: Net
    name: str
    entry: Any = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def resolve_model(files: Sequence[str] = (), zoo_name: str | None = None, *, quirks: str = "none",
                  seeded_weights: int | None = None, workdir: str | None = None,
                  zero_darknet: bool = False, input_shape: Sequence[int] | None = None) -> ResolvedModel:
    """Load model files or a zoo model (``quirks`` as the loaders take it).

    A Caffe deploy prototxt without weights (given alone, or a zoo model whose weights are not on
    disk) is run with :func:`refnet.archs.seeded_caffemodel` weights when ``seeded_weights`` is a
    seed; the caffemodel is written to ``workdir`` (a temporary folder by default) so cv2 reads it too.
    ``zero_darknet``: a Darknet cfg without weights loads with zero weights (shapes and counts only).
    """
    from pathlib import Path

    import refnet
    from refnet import zoo
    from refnet.pipelines import entry_for_files

    if zoo_name and files:
        raise ValueError("give either model files or --zoo NAME, not both")
    if not zoo_name and not files:
        raise ValueError("no model: give the model files (e.g. deploy.prototxt weights.caffemodel) or --zoo NAME")
    notes: list[str] = []
    if zoo_name:
        loc = zoo.find(zoo_name)
        entry, name = loc.entry, loc.entry.name
        if loc.status == "arch" and ((seeded_weights is not None and entry.framework == "caffe") or (
                zero_darknet and entry.framework == "darknet")):
            paths = [str(loc.path_of("model"))]
        else:
            if loc.status == "arch" and entry.framework == "caffe":
                try:
                    _ = loc.main_paths
                except zoo.ModelMissingError as e:
                    raise zoo.ModelMissingError(f"{e}; or run its architecture with seeded random weights: "
                                                "--seeded-weights SEED") from None
            paths = [str(p) for p in loc.main_paths]
        roots = loc.roots or tuple(r for r in zoo.search_roots())
    else:
        for f in files:
            if not Path(f).is_file():
                raise FileNotFoundError(f"model file not found: {f}")
        paths = [str(f) for f in files]
        entry, root = entry_for_files(paths)
        name = entry.name if entry is not None else Path(paths[0]).stem
        roots = (root,) if root is not None else ()
    protos = [p for p in paths if Path(p).suffix.lower() in (".prototxt", ".pbtxt")]
    if protos and len(paths) == 1 and seeded_weights is not None:
        import tempfile

        from refnet.archs import seeded_caffemodel

        size = entry.preprocess.size if entry is not None else None
        shape = tuple(input_shape) if input_shape else None
        if shape is None and size is not None:
            shape = (1, 1 if entry.preprocess.gray else 3, size[1], size[0])
        wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="refnet-seeded-"))
        wd.mkdir(parents=True, exist_ok=True)
        model = wd / (Path(protos[0]).stem + f".seed{seeded_weights}.caffemodel")
        model.write_bytes(seeded_caffemodel(protos[0], seeded_weights, shape))
        paths = [protos[0], str(model)]
        notes.append(f"weights: seeded random (He-scaled, seed {seeded_weights})"
                     + ("" if workdir else f", written to {model}"))
    cfgs = [p for p in paths if Path(p).suffix.lower() == ".cfg"]
    if cfgs and len(paths) == 1 and zero_darknet:
        net = refnet.load_darknet(cfgs[0], "zeros", quirks=quirks)
        net.files = None  # cv2 cannot run it without a weights file
        notes.append("weights: none on disk (architecture only): parameters counted, values zero")
    else:
        net = refnet.load(*paths, quirks=quirks)
    labels = zoo.read_labels(entry, roots) if entry is not None else None
    return ResolvedModel(net, name, entry, labels, notes)


def image_files(specs: Sequence[str]) -> list[str]:
    """Expand ``--image`` arguments: files as given, folders to their image files (sorted)."""
    from pathlib import Path

    out: list[str] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTS)}) in folder {p}")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"image not found: {p}")
    return out


def preprocess_for(rm: ResolvedModel, *, scale: float | None = None, size: Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, swap_rb: bool | None = None, crop: bool | None = None):
    """The zoo entry's :class:`refnet.zoo.Preprocess` (else refnet.pipelines' default for the net),
    with the blobFromImage-style overrides applied."""
    import dataclasses

    from refnet.pipelines import default_preprocess

    pre = rm.entry.preprocess if rm.entry is not None else default_preprocess(rm.net, "classify")
    change: dict[str, Any] = {}
    if scale is not None:
        change["scale"] = float(scale)
    if size is not None:
        change["size"] = (int(size[0]), int(size[1]))
    if mean is not None:
        change["mean"] = tuple(float(m) for m in mean) * (3 if len(mean) == 1 else 1)
    if swap_rb is not None:
        change["swap_rb"] = bool(swap_rb)
    if crop is not None:
        change["crop"] = bool(crop)
    return dataclasses.replace(pre, **change) if change else pre


def random_input(rm: ResolvedModel, pre: Any, seed: int = 0, shape: Sequence[int] | None = None) -> np.ndarray:
    """A seeded input blob: a random uint8 image through ``pre`` when the input is an image of known
    size, else uniform [-1, 1) values of ``shape`` / the declared shape (batch 1).

    Raises ShapeError (a user error) when no shape can be inferred.
    """
    from refnet.errors import ShapeError

    rng = np.random.default_rng(seed)
    net = rm.net
    declared = net.input_shapes.get(net.input_names[0]) if len(net.input_names) == 1 else None
    if shape is not None:
        shp = tuple(int(d) for d in shape)
        if len(shp) != 4 or min(shp) <= 0:
            raise ShapeError("--input-shape needs four positive numbers", expected="N C H W", got=shp)
        return rng.uniform(-1.0, 1.0, shp).astype(np.float32)
    if pre is not None and pre.size is not None and (declared is None or (len(declared) == 4 and declared[1] in (1, 3)
                                                                        and (declared[1] == 1) == bool(pre.gray))):
        w, h = pre.size
        if pre.layout == "NCWH":
            w, h = h, w
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        return pre.blob(img)
    if declared and all(int(d) > 0 for d in declared):
        return rng.uniform(-1.0, 1.0, (1,) + tuple(int(d) for d in declared[1:])).astype(np.float32)
    raise ShapeError(f"cannot infer the input shape of {rm.name}: the model does not declare it and no "
                     "preprocessing size is known; pass --input-shape N C H W (or --size W H)")


def check_layers(net: Net, names: Sequence[str]) -> None:
    """KeyError naming the close matches when a requested layer does not exist."""
    import difflib

    known = list(net.layer_names)
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no layer named {n!r} in this model{hint} (`refnet info MODEL` lists the "
                           f"{len(known)} layers)")


def compare_command(args: Any, out: Any = None, err: Any = None) -> int:
    """``refnet compare``: 0 when every input agrees (known cv2 deviations included), 1 when one differs."""
    import sys
    from pathlib import Path


    out = out or sys.stdout
    err = err or sys.stderr
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.image and args.random:
        raise ValueError("give --image or --random, not both")
    for opt in ("json", "plot"):
        p = getattr(args, opt)
        if p and not Path(p).resolve().parent.is_dir():
            raise FileNotFoundError(f"--{opt} {p}: folder {Path(p).parent} does not exist")
    if args.plot:
        from refnet.report_plot import _pyplot

        _pyplot()  # fail before the work when matplotlib is missing
    precisions = {"both": ("float64", "float32"), "float32": ("float64", "float32"), "float64": ("float64",)}[
        args.precision]
    images = image_files(args.image) if args.image else []
    import tempfile

    with tempfile.TemporaryDirectory(prefix="refnet-compare-") as wd:  # seeded weights: for this command only
        rm = resolve_model(args.model, args.zoo, quirks=args.quirks, seeded_weights=args.seeded_weights,
                           input_shape=args.input_shape, workdir=wd)
        return _compare_inputs(args, rm, images, precisions, out, err)


def _compare_inputs(args: Any, rm: ResolvedModel, images: list[str], precisions: tuple[str, ...], out: Any,
                    err: Any) -> int:
    from pathlib import Path

    from refnet.errors import ShapeError
    from refnet.pipelines import read_image

    check_layers(rm.net, args.layer or ())
    pre = preprocess_for(rm, scale=args.scale, size=args.size, mean=args.mean,
                         swap_rb=True if args.swap_rb else None, crop=True if args.crop else None)
    for n in rm.notes:
        print(f"note: {n}", file=err)
    inputs: list[tuple[str, Any]] = []
    if images:
        for p in images:
            inputs.append((Path(p).name, p))
    else:
        inputs.append((f"random input (seed {args.seed})", None))
    task = rm.entry.task if rm.entry is not None else None
    reports: list[Report] = []
    many = len(inputs) > 1
    for i, (label, path) in enumerate(inputs):
        t = time.perf_counter()
        if path is None:
            x = random_input(rm, pre if not args.input_shape else None, args.seed, args.input_shape)
        else:
            x = pre.blob(read_image(path))
            if len(rm.net.input_names) == 1:
                want = rm.net.input_shapes.get(rm.net.input_names[0])
                if want and len(want) == 4 and want[1] and x.shape[1] != want[1]:
                    raise ShapeError(f"{rm.name} takes {want[1]}-channel input but the image blob has {x.shape[1]} "
                                     "channels; use --random (with --input-shape) for this model")
        if many:
            print(f"[{i + 1}/{len(inputs)}] {label} ...", file=err, end="", flush=True)
        rep = compare(rm.net, x, cv2_fusion=not args.no_fusion, precisions=precisions, model_name=rm.name,
                      task=task, labels=rm.labels, label_offset=rm.entry.label_offset if rm.entry else 0,
                      top_k=5, winograd=False if args.no_winograd else None, input_label=label,
                      progress=None if many else (lambda s: print(f"  {s}", file=err, flush=True)))
        rep.notes[:0] = rm.notes
        reports.append(rep)
        if many:
            print(f" {rep.verdict_code.upper()} ({time.perf_counter() - t:.1f} s)", file=err, flush=True)
        if args.plot:
            from refnet.report_plot import plot_report

            pp = Path(args.plot)
            if many:
                pp = pp.with_name(f"{pp.stem}-{Path(path).stem}{pp.suffix or '.png'}")
            plot_report(rep, pp)
            print(f"wrote {pp}", file=err)
    if not many:
        print(reports[0].table(top=args.top or 10, layers=args.layer or None), file=out)
    else:
        w = max(len(r.input) for r in reports)
        print(f"refnet compare: {rm.name} on {len(reports)} images", file=out)
        print(f"{'image':{w}s}  {'verdict':12s} {'vs cv2 f64':>10s} {'vs cv2 f32':>10s}  {'first bad':20s} task",
              file=out)
        for r in reports:
            w64, w32 = r.worst(_CMP_CV2), r.worst(_CMP_CV2_F32)
            print(f"{r.input:{w}s}  {r.verdict_code:12s} {w64.max_rel if w64 else math.nan:10.2e} "
                  f"{w32.max_rel if w32 else math.nan:10.2e}  {(r.first_bad_layer or '-'):20s} {r.task_summary()}",
                  file=out)
        n_bad = sum(r.verdict_code == "differ" for r in reports)
        n_known = sum(r.verdict_code == "agree_known" for r in reports)
        print(f"summary: {rm.name}: {len(reports) - n_bad}/{len(reports)} images AGREE"
              + (f" ({n_known} with known deviations)" if n_known else "")
              + (f"; {n_bad} DIFFER" if n_bad else ""), file=out)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(run_document(reports, command=["refnet", "compare"]), indent=1,
                                              allow_nan=False))
        print(f"wrote {args.json}", file=err)
    return 1 if any(r.verdict_code == "differ" for r in reports) else 0
