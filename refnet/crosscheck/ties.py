"""Near-tie argmax: where a backend may legitimately pick another element than refnet.

A max pooling whose indices feed a MaxUnpool (ENet, SegNet) records *where* each window's
maximum was. When two elements of a window are equal within rounding, either is a correct
argmax, and the unpooled map then differs at those positions. :func:`near_tie_windows` finds
such windows in a pooling input; :func:`over_in_tie_windows` says whether every element over
tolerance lies in one. Only non-overlapping windows without padding are analysed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from refnet.graph import Node
from refnet.ops.registry import attrs

__all__ = ["unpool_pools", "near_tie_windows", "over_in_tie_windows", "tie_sources"]


def unpool_pools(nodes: tuple[Node, ...] | list[Node], prods: Mapping[str, Node]) -> dict[str, Node]:
    """``{max_unpool layer: the max_pool node whose indices it reads}`` (analysable geometries only)."""
    out: dict[str, Node] = {}
    for n in nodes:
        if n.op != "max_unpool" or len(n.inputs) < 2:
            continue
        pool = prods.get(n.inputs[1])
        if pool is None or pool.op != "max_pool" or not pool.inputs:
            continue
        a = attrs(pool)  # the op spec's resolved attributes (stride None = the kernel, as the executor)
        if a["global_pooling"]:
            continue
        kh, kw = a["kernel"]
        if (a["stride"] or (kh, kw)) != (kh, kw) or any(a["pad"]) or kh * kw < 2:
            continue
        out[n.name] = pool
    return out


def near_tie_windows(x: np.ndarray, pool: Node, tol: float) -> np.ndarray | None:
    """Boolean mask over the pooled grid (N, C, Ho, Wo): windows of ``x`` (the pooling input) whose two
    largest values are within ``2 * tol * max|x|``; None when ``x`` is not 4-D."""
    x = np.asarray(x, np.float64)
    kh, kw = attrs(pool)["kernel"]
    if x.ndim != 4:
        return None
    N, C, H, W = x.shape
    ho, wo = H // kh, W // kw
    win = x[:, :, :ho * kh, :wo * kw].reshape(N, C, ho, kh, wo, kw).transpose(0, 1, 2, 4, 3, 5)
    win = np.sort(win.reshape(N, C, ho, wo, kh * kw), axis=-1)
    finite = np.isfinite(x)
    scale = float(np.max(np.abs(x[finite]))) if finite.any() else 0.0
    return (win[..., -1] - win[..., -2]) <= 2 * tol * max(scale, 1e-30)


def over_in_tie_windows(over: np.ndarray, near: np.ndarray) -> bool:
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


def tie_sources(net: Any, values: Mapping[str, np.ndarray], tol: float) -> dict[str, np.ndarray]:
    """``{unpool layer: near-tie mask}`` for the MaxUnpool layers of ``net`` whose pooling input is in
    ``values`` and has near-tie windows."""
    from refnet.crosscheck.quirks import producers

    out = {}
    for name, pool in unpool_pools(net.graph.nodes, producers(net.graph)).items():
        x = values.get(pool.inputs[0])
        if x is None:
            continue
        near = near_tie_windows(x, pool, tol)
        if near is not None and near.any():
            out[name] = near
    return out
