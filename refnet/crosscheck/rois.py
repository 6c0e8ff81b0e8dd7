"""Rows of a two-stage detector (Faster R-CNN, R-FCN) compared as what they mean.

A ``Proposal`` layer's rois ``(R, 5)`` are a *set*: py-faster-rcnn and cv2 sort the proposals
by objectness score, and proposals whose scores differ by ~1e-6 (float32 rounding of the RPN)
may come in either order. Every per-roi layer after it (ROIPooling, PSROIPooling, the R-CNN
head, ``cls_prob``...) then has the same rows in that other order. So:

- at a ``proposal`` layer the candidate's rows are matched one to one with the reference's
  (each coordinate within ``match_tol`` of the largest coordinate); the reference is compared in
  the candidate's row order, and that permutation is applied to the reference's rows of every
  per-roi layer downstream (a layer whose first dimension is the roi count);
- when the roi *counts* differ (py-faster-rcnn keeps fewer rois than cv2's ``post_nms_topn``
  rows padded with zeros, refnet's default quirks="none"), the proposal and the per-roi layers
  after it are not comparable elementwise: :meth:`RoiRows.pair` returns None and a note;
- ``DetectionOutput`` rows are compared in (score, class, box) order
  (:func:`refnet.two_stage.sorted_detection_rows`: cv2 orders equal scores arbitrarily).

The local error of a per-roi layer needs no permutation (the kernel runs on the candidate's own
rois); the proposal's local error is again a set comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RoiRows", "match_rows"]


def match_rows(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray | None:
    """A permutation ``p`` with ``a[i] ~ b[p[i]]`` (every value within ``tol``) for every row, or
    None when the row counts differ or a row of ``a`` has no partner in ``b``. Rows keep their
    own index where they can (ties between identical rows, e.g. zero padding, stay in place)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1) if np.ndim(a) else np.zeros((0, 1))
    b = np.asarray(b, np.float64).reshape(len(b), -1) if np.ndim(b) else np.zeros((0, 1))
    if a.shape != b.shape:
        return None
    close = np.all(np.abs(a[:, None, :] - b[None, :, :]) <= tol, axis=2)
    used = np.zeros(len(b), bool)
    p = np.full(len(a), -1, np.int64)
    for i in range(len(a)):
        if close[i, i] and not used[i]:
            p[i] = i
            used[i] = True
    for i in np.flatnonzero(p < 0):
        js = np.flatnonzero(close[i] & ~used)
        if not len(js):
            return None
        p[i] = js[0]
        used[js[0]] = True
    return p


class RoiRows:
    """Row alignment of one comparison run (see the module docstring); None from :meth:`of` for
    nets without a ``proposal`` layer."""

    #: rois are matched when every coordinate is within this fraction of the largest coordinate
    MATCH_TOL = 1e-3

    def __init__(self, graph: Any) -> None:
        self.props = {n.name for n in graph.nodes if n.op == "proposal"}
        down: set[str] = set()
        tensors = {t for n in graph.nodes if n.name in self.props for t in n.outputs}
        for n in graph.nodes:  # execution order: producers first
            if n.name not in self.props and any(t in tensors for t in n.inputs):
                down.add(n.name)
                tensors.update(n.outputs)
        self.down = down
        self.perm: dict[str, np.ndarray] = {}  # key -> candidate row i is reference row perm[i]
        self.counts: dict[str, tuple[int, int]] = {}  # key -> (candidate rois, reference rois) when they differ

    @classmethod
    def of(cls, graph: Any) -> RoiRows | None:
        return cls(graph) if any(n.op == "proposal" for n in graph.nodes) else None

    def pair(self, key: str, node: Any, v: np.ndarray, r: np.ndarray, local: bool = False
             ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """``(v, r, note)`` to compare elementwise for layer ``node``: ``r`` in the candidate's roi
        order, or both in sorted order; None (with ``self.why``) when not comparable."""
        self.why = ""
        op = node.op
        if op == "detection_output":
            from refnet.two_stage import sorted_detection_rows

            a, b = sorted_detection_rows(v), sorted_detection_rows(r)
            if a.shape != b.shape:
                self.why = f"not comparable: {len(a)} detection rows vs {len(b)} in the reference"
                return None
            return a, b, "rows compared in (score, class, box) order"
        if op == "proposal":
            a = np.asarray(v, np.float64).reshape(-1, 5)
            b = np.asarray(r, np.float64).reshape(-1, 5)
            if len(a) != len(b):
                if not local:
                    self.counts[key] = (len(a), len(b))
                self.why = (f"not comparable: {len(a)} rois vs {len(b)} in the reference (py-faster-rcnn keeps "
                            "the rois left after NMS, cv2 pads post_nms_topn rows with zeros)")
                return None
            scale = max(float(np.max(np.abs(b[:, 1:]))) if b.size else 0.0, 1.0)
            p = match_rows(a, b, self.MATCH_TOL * scale)
            if p is None:
                return a, b, "rois differ as a set"
            moved = int(np.count_nonzero(p != np.arange(len(p))))
            if not local:
                self.perm[key] = p
            return a, b[p], (f"rois matched as a set ({moved} rows in another order: near-tie scores; the "
                             "per-roi layers after it are compared in this order)" if moved else "")
        if op != "proposal" and node.name in self.down and not local:
            n_ref = np.shape(r)[0] if np.ndim(r) else -1
            flat = n_ref == 1 and key in self.counts and np.size(r) % max(self.counts[key][1], 1) == 0 \
                and np.size(v) != np.size(r)  # a (1, R * k) reshape of per-roi rows
            if key in self.counts and (n_ref == self.counts[key][1] or flat):
                c, ref = self.counts[key]
                self.why = f"not comparable: {c} rois vs {ref} in the reference (the proposal's row counts differ)"
                return None
            p = self.perm.get(key)
            # per-roi rows: the first dimension, or a (1, R * k) reshape of them (row-major)
            per_roi = p is not None and (n_ref == len(p) or (n_ref == 1 and np.size(r) % max(len(p), 1) == 0))
            if per_roi and np.size(v) == np.size(r) and np.any(p != np.arange(len(p))):
                r = np.asarray(r)
                rr = r.reshape(len(p), -1)[p].reshape(r.shape)
                return np.asarray(v).reshape(r.shape), rr, "rows in the candidate's roi order"
        return v, r, ""
