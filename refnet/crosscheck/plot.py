"""PNG plot of a :class:`refnet.crosscheck.report.Report`: per-layer error along the depth of the net.

x is the layer's position in execution order, y its max|diff| / max|ref| on a log scale,
one line per backend/precision (refnet float32, cv2 fusion off with Winograd off/on, cv2 vs
refnet float32) and markers for the cv2 fusion-on outputs; dashed lines are the tolerances.
Rows that are known cv2 deviations are drawn as crosses, near-tie rows as circles; the local
error of cv2 (fusion off) is drawn as small dots. The title is the report's verdict. Needs
matplotlib (the ``plot`` extra); the Agg backend is used, so no display is required.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from refnet.crosscheck.report import Report
from refnet.errors import RefnetError

__all__ = ["PlotUnavailableError", "plot_report", "plot_title", "require_matplotlib", "FLOOR"]

FLOOR = 1e-17  # lowest value drawn (log scale); exact agreement sits a decade below the smallest difference

_STYLE = {
    "refnet_float32": ("tab:blue", "-"),
    "cv2": ("tab:red", "-"),
    "cv2_winograd": ("tab:orange", "--"),
    "cv2_vs_float32": ("tab:purple", ":"),
    "cv2_fused": ("tab:green", ""),
    "cv2_fused_nowinograd": ("tab:olive", ""),
}


class PlotUnavailableError(RefnetError, ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise PlotUnavailableError now (before any work) when matplotlib is missing."""
    _pyplot()


def plot_title(report: Report) -> str:
    """The plot's title: the model and the report's verdict (the same words as the table and JSON)."""
    return f"{report.model}: {report.verdict}"


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise PlotUnavailableError("plotting needs matplotlib: pip install 'refnet[plot]' (or pip install "
                                   "matplotlib), or leave out --plot") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_report(report: Report, path: str | os.PathLike, *, title: str | None = None, dpi: int = 110,
                size: tuple[float, float] = (11.0, 5.0)) -> Path:
    """Write the per-layer error plot of ``report`` to ``path`` (PNG) and return the path."""
    plt = _pyplot()
    path = Path(path)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        n_layers = max((d["index"] for d in report.layers), default=0) + 1
        positive = [v for c in report.comparisons.values() for r in c.rows
                    for v in (r.max_rel, r.max_rel_vs_quirks, r.local_max_rel)
                    if v is not None and math.isfinite(v) and v > 0]
        floor = max(FLOOR, min(positive, default=1e-8) / 10)  # exact agreement is drawn here

        def y(v: float) -> float:
            return 1e3 if not math.isfinite(v) else max(v, floor)

        for c in report.comparisons.values():
            color, ls = _STYLE.get(c.id, ("tab:gray", "-"))
            rows = sorted((r for r in c.rows if not math.isnan(r.max_rel)), key=lambda r: r.index)
            if not rows:
                continue
            xs = [r.index for r in rows]
            ys = [y(r.max_rel) for r in rows]
            label = c.label
            if c.scope == "layers" and len(rows) > 1:
                ax.plot(xs, ys, ls or "-", color=color, lw=1.1, label=label)
            else:
                ax.plot(xs, ys, "D", color=color, ms=7, label=label, mfc="none", mew=1.5)
            kx = [(r.index, v) for r, v in zip(rows, ys) if r.status == "known_deviation"]
            if kx:
                ax.plot(*zip(*kx), "x", color=color, ms=5, mew=1.0)
            tx = [(r.index, v) for r, v in zip(rows, ys) if r.status == "tie"]
            if tx:
                ax.plot(*zip(*tx), "o", color=color, ms=4, mfc="none")
            dx = [(r.index, v) for r, v in zip(rows, ys) if r.status == "differ"]
            if dx:
                ax.plot(*zip(*dx), "v", color="black", ms=6)
            if c.id == "cv2":
                lx = [(r.index, y(r.local_max_rel)) for r in rows if r.local_max_rel is not None]
                if lx:
                    ax.plot(*zip(*lx), ".", color="tab:pink", ms=3, label=f"{c.candidate}: local error")
            if c.id == "cv2" and kx:  # what is left once refnet reproduces cv2's quirks
                res = [y(r.max_rel_vs_quirks if r.max_rel_vs_quirks is not None else r.max_rel) for r in rows]
                ax.plot(xs, res, "-", color="tab:brown", lw=0.9, alpha=0.8,
                        label=f"{c.candidate} vs refnet float64 quirks=cv2")
        tols = sorted({tol: name for name, tol in report.tolerance.items()}.items(), reverse=True)
        for i, (tol, name) in enumerate(tols):  # labels above the highest line, below the others
            ax.axhline(tol, color="gray", ls="--", lw=0.8)
            ax.text(n_layers - 1, tol * (1.3 if i == 0 else 0.77), f"tolerance {name} {tol:g}", ha="right",
                    va="bottom" if i == 0 else "top", fontsize=7, color="gray")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor / 3)
        ax.set_xlim(-1, max(n_layers, 2))
        ax.set_xlabel("layer (execution order)")
        ax.set_ylabel("max |diff| / max |ref|")
        import textwrap

        full = title or plot_title(report)
        ax.set_title("\n".join(textwrap.wrap(full, 120)[:3]), fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        fig.text(0.01, 0.01, "x known cv2 deviation   o near-tie argmax   v DIFFER   (exact agreement drawn at "
                 f"{floor:.0e})", fontsize=7, color="gray")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", metadata={"Title": full, "Description": f"verdict_code={report.verdict_code}"})
    finally:
        plt.close(fig)
    return path
