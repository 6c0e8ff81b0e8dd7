"""Which layers cv2 computes differently on purpose, and why (the known cv2 deviations).

refnet loaded with ``quirks="cv2"`` reproduces cv2.dnn's documented deviations
(docs/cv2-deviations.md). :func:`quirk_changes` lists the layers those quirks change, with the
quirk's key and description: Caffe graphs carry the importer's own log (``graph.meta["quirks"]``);
for Darknet and Torch the two graphs are diffed node by node and each change is named from the
importer's table. A layer over tolerance is a known deviation when the quirks="cv2" kernel (or
net) reproduces the candidate there; :func:`origin` finds the changed layer a difference starts at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from refnet.graph import Graph, Node

__all__ = ["TORCH_CV2_QUIRKS", "load_variant", "quirk_changes", "graph_quirks_mode", "producers", "origin"]

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
