"""Which layers cv2 computes differently on purpose, and why (the known cv2 deviations).

refnet loaded with ``quirks="cv2"`` reproduces cv2.dnn's documented deviations
(docs/cv2-deviations.md), and each importer records the ones it applied in
``graph.meta["quirks"]`` (:class:`~refnet.weights_import._util.AppliedQuirk`: layer, quirk key,
what changed). :func:`quirk_changes` reads that record: attribution is a lookup, not a diff of
two graphs. A layer over tolerance is a known deviation when the quirks="cv2" kernel (or net)
reproduces the candidate there; :func:`origin` finds the changed layer a difference starts at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refnet.graph import Graph, Node

__all__ = ["cv2_quirks_table", "load_variant", "quirk_changes", "graph_quirks_mode", "producers", "origin"]


def cv2_quirks_table(framework: str) -> Mapping[str, str]:
    """The importer's table of cv2 deviations (quirk key -> description) for ``framework``."""
    # (imported here: loading an importer is not needed to import refnet.crosscheck)
    if framework == "caffe":
        from refnet.weights_import.caffe import CV2_QUIRKS
    elif framework == "torch":
        from refnet.weights_import.torch import CV2_QUIRKS
    elif framework == "darknet":
        from refnet.weights_import.darknet import CV2_QUIRKS
    else:
        return {}
    return CV2_QUIRKS


def load_variant(net: Any, quirks: str) -> Any:
    """``net``'s model files loaded again with ``quirks`` ("none" or "cv2")."""
    from refnet import net as netmod  # (a function-level import: net -> crosscheck is the arrow)

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


def graph_quirks_mode(g: Graph) -> str:
    """The ``quirks`` mode a graph was loaded with ("none" or "cv2")."""
    mode = g.meta.get("quirks_mode")  # every importer records it (a hand-built graph may not)
    return mode if isinstance(mode, str) else "none"


def quirk_changes(quirky: Graph) -> dict[str, tuple[str | None, str]]:
    """Layers that a ``quirks="cv2"`` load changed: ``{layer: (quirk key, description)}``, read
    from the importer's record (``quirky.meta["quirks"]``; the description is the quirk's entry
    in the importer's ``CV2_QUIRKS``, see :func:`cv2_quirks_table`). A layer changed by several
    quirks is named after the first applied; quirks that change the whole model rather than a
    layer (``layer == ""``, e.g. Darknet's ``seen_width``) name no layer."""
    table = cv2_quirks_table(quirky.framework or "")
    out: dict[str, tuple[str | None, str]] = {}
    log = quirky.meta.get("quirks")
    for rec in log if isinstance(log, (list, tuple)) else ():
        if rec.layer:
            out.setdefault(rec.layer, (rec.quirk, table.get(rec.quirk, rec.change)))
    return out


def producers(g: Graph) -> dict[str, Node]:
    """Tensor name -> the node that produces it."""
    return {t: n for n in g.nodes for t in n.outputs}


def origin(layer: str, g: Graph, changes: Mapping[str, Any], prods: Mapping[str, Node]) -> str | None:
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
                p = prods.get(t)
                if p is not None and p.name not in seen:
                    seen.add(p.name)
                    nxt.append(p)
        frontier = nxt
    return None
