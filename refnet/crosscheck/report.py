"""The report of a cross-check: its data model, its terminal table and its JSON form.

A :class:`Report` holds one :class:`Comparison` per candidate (a backend or precision measured
against refnet's float64 reference), each a list of :class:`LayerDiff` rows, plus task-level
agreement and the known cv2 deviations. Every row carries two errors (DESIGN.md, "Verification"):
*accumulated* -- the candidate's output of the layer against refnet's on the same net input -- and
*local* -- the candidate's output against refnet's float64 kernel applied to the candidate's own
inputs of the layer. A layer is wrong when its local error is over tolerance. The verdict is
decided once (:mod:`refnet.crosscheck.verdict`) and the table, the summary line, the JSON, the
plot title and the exit status all state it. The JSON form is docs/compare-schema.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SCHEMA", "SCHEMA_VERSION", "STATUSES", "LayerDiff", "Comparison", "TaskAgreement", "Report",
           "run_document", "versions", "CMP_F32", "CMP_CV2", "CMP_CV2_WINO", "CMP_CV2_F32", "CMP_FUSED",
           "CMP_FUSED_NOWINO"]

SCHEMA = "refnet.compare"
SCHEMA_VERSION = 3

# comparison ids of the built-in candidates (other backends add their own ids)
CMP_F32 = "refnet_float32"
CMP_CV2 = "cv2"
CMP_CV2_WINO = "cv2_winograd"
CMP_CV2_F32 = "cv2_vs_float32"
CMP_FUSED = "cv2_fused"
CMP_FUSED_NOWINO = "cv2_fused_nowinograd"

SET_NOTE = "compared as a detection set"  # rows judged by matching (their elementwise numbers mean little)

# row statuses; only "differ" is a failure
STATUSES = ("ok", "accumulated", "known_deviation", "tie", "differ")


@dataclass
class LayerDiff:
    """One layer's numbers in one comparison.

    ``max_abs``/``max_rel``/``mean_abs``/``cosine``/``worst``: the *accumulated* error (the
    candidate's output against the reference's on the same net input); ``ok``: it is within
    tolerance. ``local_max_rel``/``local_max_abs``: the *local* error (the candidate's output
    against refnet's float64 kernel applied to the candidate's own inputs of the layer; None when
    those inputs are not available, e.g. for fused outputs); ``local_vs_quirks``: the same with
    the kernel of refnet loaded with quirks="cv2" (None when not computed).

    ``status`` (the layer's judgement): ``"ok"`` (both errors within tolerance),
    ``"accumulated"`` (the local error is within tolerance, the accumulated one is not: earlier
    rounding travelled here; not a failure), ``"known_deviation"`` (over tolerance, but refnet
    with quirks="cv2" reproduces the candidate: ``deviation`` names the quirk, ``origin`` the
    layer it starts at), ``"tie"`` (elements moved by a near-tie max-pooling argmax at
    ``origin``) or ``"differ"`` (the local error is over tolerance and nothing explains it; where
    no local error is available, the accumulated one). ``max_rel_vs_quirks`` is the accumulated
    error against refnet float64 loaded with quirks="cv2" (None when not computed).
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
    local_max_rel: float | None = None
    local_max_abs: float | None = None
    local_vs_quirks: float | None = None

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
        """Largest accumulated max_rel (known cv2 deviations and near-ties count only when ``known``)."""
        rows = [r for r in self.rows if not math.isnan(r.max_rel) and not r.note.startswith(SET_NOTE) and (
            known or r.status in ("ok", "accumulated", "differ"))]
        return max(rows, key=lambda r: r.max_rel) if rows else None

    def worst_local(self, known: bool = False) -> LayerDiff | None:
        """The row with the largest local error (rows without one left aside; known cv2 deviations and
        near-ties count only when ``known``)."""
        rows = [r for r in self.rows if r.local_max_rel is not None and not math.isnan(r.local_max_rel)
                and (known or r.status not in ("known_deviation", "tie"))]
        return max(rows, key=lambda r: r.local_max_rel) if rows else None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
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
    verdict_at: tuple[str | None, str | None] = (None, None)  # (layer, comparison id) the verdict names

    def __repr__(self) -> str:
        cs = ", ".join(self.comparisons)
        return (f"<refnet compare Report {self.model!r} input {tuple(self.input_shape)}: {self.verdict_code or '?'}"
                f" ({len(self.layers)} layers; {cs}); .table() / .to_dict() for the numbers>")

    @property
    def exit_status(self) -> int:
        """The CLI's exit status for this report: 1 when the verdict is DIFFER, else 0."""
        return 1 if self.verdict_code == "differ" else 0

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
        """The layer the verdict names (None unless the verdict is DIFFER)."""
        return self.verdict_at[0]

    def summary_line(self) -> str:
        """One line: model, verdict, worst cv2 diffs (vs refnet f64 / f32, known deviations aside),
        task agreement, size and time."""
        parts = [f"{self.model}: {self.verdict}"]
        diffs = []
        for cid, what in ((CMP_CV2, "f64"), (CMP_CV2_F32, "f32")):
            w = self.worst(cid)
            if w is not None:
                diffs.append(f"{what} {w.max_rel:.1e} ({w.layer})")
        if diffs:
            parts.append("worst vs cv2 " + ", ".join(diffs))
        c = self.comparisons.get(CMP_CV2)
        wl = c.worst_local() if c is not None else None
        if wl is not None:
            parts.append(f"worst local cv2 {wl.local_max_rel:.1e} ({wl.layer})")
        t = self.task_summary()
        if t:
            parts.append(t)
        parts.append(f"{len(self.layers)} layers, {self.timings.get('total', 0.0):.1f} s")
        return " | ".join(parts)

    def task_summary(self) -> str:
        """The task-level result of the default cv2 configuration (fusion on), else of the first candidate."""
        if not self.tasks:
            return ""
        pick = [t for t in self.tasks if t.candidate == CMP_FUSED] or [t for t in self.tasks if
                                                                          t.candidate == CMP_CV2] or self.tasks
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
                         + (f", {cnt['accumulated']} rounding travelled (local ok)" if cnt["accumulated"] else "")
                         + (f", {cnt['known_deviation']} known cv2 deviation" if cnt["known_deviation"] else "")
                         + (f", {cnt['tie']} near-tie argmax" if cnt["tie"] else "")
                         + (f", {cnt['differ']} DIFFER" if cnt["differ"] else ""))
            lines.append(f"  {'layer':{w}s} {'op':14s} {'local':>9s} {'max_rel':>9s} {'max_abs':>9s} "
                         f"{'mean_abs':>9s} {'cosine':>10s}  worst at")
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
                sized = [r for r in known if not math.isnan(r.max_rel)]  # nan: row counts differ (two-stage rois)
                big = max(sized, key=lambda r: r.max_rel) if sized else None
                vq = [r.max_rel_vs_quirks for r in known if r.max_rel_vs_quirks is not None]
                lines.append(f"  + {len(known)} known cv2 deviation rows: "
                             + (f"largest {big.max_rel:.2e} at {big.layer}" if big else "")
                             + (f"{', ' if big else ''}{len(known) - len(sized)} not comparable (other row counts)"
                                if len(sized) < len(known) else "")
                             + (f"; vs refnet quirks=cv2 all <= {max(vq):.2e}" if vq else ""))
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
            "first_bad": {"layer": self.verdict_at[0], "comparison": self.verdict_at[1]},
            "exit_status": self.exit_status,
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


_CANDIDATE_SHORT = {CMP_F32: "refnet float32", CMP_CV2: "cv2 (fusion off)", CMP_FUSED: "cv2 (fusion on)"}


def _row_line(r: LayerDiff, w: int) -> str:
    flag = ""
    if r.status == "differ":
        flag = "  <-- DIFFER" + (f" ({r.note})" if r.note else "")
    elif r.status == "accumulated":
        flag = "  rounding travelled (local error within tolerance)"
    elif r.status == "known_deviation":
        flag = f"  known cv2 deviation{' from ' + r.origin if r.origin != r.layer else ''}"
    elif r.status == "tie":
        flag = f"  near-tie: {r.note}"
    elif r.note:
        flag = f"  ({r.note})"
    name = r.layer if len(r.layer) <= w else "..." + r.layer[-(w - 3):]
    local = f"{'-':>9s}" if r.local_max_rel is None else _fmt(r.local_max_rel)
    return (f"  {name:{w}s} {r.op[:14]:14s} {local} {_fmt(r.max_rel)} {_fmt(r.max_abs)} {_fmt(r.mean_abs)} "
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
            "origin": r.origin, "max_rel_vs_quirks": _num(r.max_rel_vs_quirks), "note": r.note,
            "local_max_rel": _num(r.local_max_rel), "local_max_abs": _num(r.local_max_abs),
            "local_vs_quirks": _num(r.local_vs_quirks)}


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
        w64, w32 = r.worst(CMP_CV2), r.worst(CMP_CV2_F32)
        rows.append({"model": r.model, "input": r.input, "verdict": r.verdict, "verdict_code": r.verdict_code,
                     "worst_vs_cv2_float64": _num(w64.max_rel) if w64 else None,
                     "worst_vs_cv2_float32": _num(w32.max_rel) if w32 else None,
                     "worst_local_vs_cv2": _num(wl.local_max_rel) if (wl := _worst_local(r)) else None,
                     "first_bad": r.first_bad_layer, "task_agree": all(t.agree for t in r.tasks) if r.tasks else None})
    codes = [r.verdict_code for r in reports]
    overall = "differ" if "differ" in codes else ("agree_known" if "agree_known" in codes else "agree")
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, "command": list(command),
            "versions": reports[0].versions if reports else versions(), "platform": platform.platform(),
            "verdict_code": overall if reports else "agree", "exit_status": 1 if overall == "differ" else 0,
            "summary": rows, "reports": [r.to_dict() for r in reports]}


def _worst_local(r: Report) -> LayerDiff | None:
    c = r.comparisons.get(CMP_CV2)
    return c.worst_local() if c is not None else None


def versions() -> dict[str, str]:
    """Versions of refnet, OpenCV, numpy and numba (the report's ``versions``)."""
    import cv2
    import numba

    import refnet

    return {"refnet": refnet.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "numba": numba.__version__}
