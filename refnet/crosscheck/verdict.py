"""The one verdict of a report: decided here, stated the same way everywhere.

``AGREE``, ``AGREE with known deviations: ...`` or ``DIFFER at <layer> (...)``. A layer differs
when its local error is over tolerance and neither a known cv2 deviation nor a near-tie argmax
explains it (:class:`refnet.crosscheck.report.LayerDiff`); where a layer has no local error
(fused outputs), its accumulated error decides. An output whose task-level check disagrees
(tie-aware) also makes the verdict DIFFER. The table, the summary line, the JSON, the plot title
and the CLI's exit status (:attr:`Report.exit_status`) all read ``verdict``/``verdict_code``.
"""

from __future__ import annotations

from refnet.crosscheck.report import Comparison, Report

__all__ = ["decide"]


def _first_bad(rep: Report) -> Comparison | None:
    cs = list(rep.comparisons.values())
    return next((c for c in cs if c.id.startswith("cv2") and c.first_bad), None) or next(
        (c for c in cs if c.first_bad), None)


def decide(rep: Report) -> None:
    """Set ``rep.verdict``, ``verdict_code``, ``verdict_at``, ``first_bad``, ``ties`` and notes."""
    index = {d["name"]: d["index"] for d in rep.layers}
    rep.first_bad = {k: c.first_bad for k, c in rep.comparisons.items()}
    bad = _first_bad(rep)
    task_bad = [t for t in rep.tasks if not t.agree]
    if bad is not None:
        layer = bad.first_bad
        r = next(r for r in bad.rows if r.layer == layer)
        if r.local_max_rel is not None and not r.local_max_rel <= bad.tolerance:
            why = f"local error {r.local_max_rel:.2e} > {bad.tolerance:g}"
        else:
            why = r.note or f"{r.max_rel:.2e} > {bad.tolerance:g}"
        rep.verdict, rep.verdict_code = f"DIFFER at {layer} ({bad.label}: {why})", "differ"
        rep.verdict_at = (layer, bad.id)
    elif task_bad:
        t = task_bad[0]
        rep.verdict = f"DIFFER at {t.outputs[0]} (task {t.kind}, {t.candidate}: {t.summary})"
        rep.verdict_code, rep.verdict_at = "differ", (t.outputs[0], t.candidate)
    elif rep.known_deviations or any(r.status == "known_deviation" for c in rep.comparisons.values()
                                     for r in c.rows):
        rep.verdict, rep.verdict_code = "AGREE with known deviations: " + _deviation_list(rep), "agree_known"
        rep.verdict_at = (None, None)
    else:
        rep.verdict, rep.verdict_code, rep.verdict_at = "AGREE", "agree", (None, None)
    tie_origins = sorted({r.origin for c in rep.comparisons.values() for r in c.rows if r.status == "tie"},
                         key=lambda n: index.get(n, 0))
    rep.ties = tie_origins
    if tie_origins and rep.verdict_code != "differ":
        rep.verdict += f" (near-tie max-pooling argmax at {', '.join(tie_origins)})"
    travelled = [(c, r) for c in rep.comparisons.values() for r in c.rows if r.status == "accumulated"]
    if travelled:
        c, r = max(travelled, key=lambda cr: cr[1].max_rel)
        rep.notes.append(f"{len(travelled)} row(s) over tolerance in accumulated error only, with every local error "
                         f"within tolerance (rounding travelled from earlier layers): largest {r.max_rel:.2e} at "
                         f"{r.layer} ({c.label})")


def _deviation_list(rep: Report) -> str:
    parts = []
    for d in rep.known_deviations:
        name = d["quirk"] or d["description"][:48]
        ls = d["layers"]
        parts.append(f"{name} ({', '.join(ls)})" if len(ls) <= 2 else f"{name} ({len(ls)} layers from {ls[0]})")
    return "; ".join(parts) or "unattributed"
