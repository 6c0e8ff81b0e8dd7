"""The numbers a cross-check reports for one blob against its reference.

``max_rel = max|a - ref| / max|ref|`` is the scale-free error every tolerance of
:mod:`refnet.tolerances` bounds. Non-finite values are compared as values: the same infinity
or a NaN at the same place in both is equal (difference 0); anything else that is not finite
in one blob only is infinitely far. The scale ``max|ref|`` is taken over the finite reference
values.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Stats", "diff_stats", "over_mask", "NAN_STATS"]

# (max abs, max abs / max|ref|, mean abs, cosine similarity, index of the worst element)
Stats = tuple[float, float, float, float, tuple[int, ...]]
NAN_STATS: Stats = (math.nan, math.nan, math.nan, math.nan, ())


def _as_ref_shape(a: np.ndarray, ref: np.ndarray) -> np.ndarray | None:
    a = np.asarray(a)
    if a.shape == ref.shape:
        return a
    return a.reshape(ref.shape) if a.size == ref.size else None  # cv2 flattens some outputs


def _abs_diff(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|a - ref| elementwise (float64, flat) with non-finite values compared as values."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - ref).ravel()
    if not np.isfinite(d).all():
        af, rf = a.ravel(), ref.ravel()
        bad = ~np.isfinite(d)
        same = (af[bad] == rf[bad]) | (np.isnan(af[bad]) & np.isnan(rf[bad]))  # inf == inf; NaN at NaN
        d[bad] = np.where(same, 0.0, np.inf)
    return d


_BLOCK = 1 << 20  # elements per block: the float64 temporaries of a 100-million-element blob stay at ~10 MiB


def diff_stats(a: np.ndarray, ref: np.ndarray) -> Stats:
    """(max abs, max abs / max|ref|, mean abs, cosine similarity, index of the worst element).

    Arrays of equal size but another layout are compared elementwise; different sizes give NaN
    statistics. The cosine is taken over the positions where both blobs are finite. Computed in
    blocks of ``_BLOCK`` elements (float64 temporaries of one block at a time).
    """
    ref = np.asarray(ref)
    a0 = _as_ref_shape(a, ref)
    if a0 is None:
        return NAN_STATS
    if ref.size == 0:
        return (0.0, 0.0, 0.0, 1.0, ())
    af, rf = np.ravel(a0), np.ravel(ref)
    n = rf.size
    max_abs, worst_i, total, scale = -1.0, 0, 0.0, 0.0
    saa = srr = sar = 0.0
    for s0 in range(0, n, _BLOCK):
        ab = np.asarray(af[s0:s0 + _BLOCK], np.float64)
        rb = np.asarray(rf[s0:s0 + _BLOCK], np.float64)
        d = _abs_diff(ab, rb)
        i = int(np.argmax(d))
        if d[i] > max_abs:
            max_abs, worst_i = float(d[i]), s0 + i
        total += float(np.add.reduce(np.where(np.isinf(d), 0.0, d)))
        both = np.isfinite(ab) & np.isfinite(rb)
        if not both.all():
            rfin = rb[np.isfinite(rb)]
            ab, rb = ab[both], rb[both]
        else:
            rfin = rb
        if rfin.size:
            scale = max(scale, float(np.max(np.abs(rfin))))
        # plain reductions, not BLAS dot: exact enough, and immune to oversubscribed BLAS threads
        saa += float(np.add.reduce(ab * ab))
        srr += float(np.add.reduce(rb * rb))
        sar += float(np.add.reduce(ab * rb))
    worst = tuple(int(v) for v in np.unravel_index(worst_i, ref.shape))
    max_rel = 0.0 if max_abs == 0.0 else max_abs / max(scale, 1e-30)
    na, nr = math.sqrt(saa), math.sqrt(srr)
    cos = sar / (na * nr) if na and nr else (1.0 if na == nr else 0.0)
    return max_abs, max_rel, total / n, cos, worst


def over_mask(a: np.ndarray, ref: np.ndarray, tol: float) -> np.ndarray | None:
    """Boolean mask (ref's shape) of the elements whose difference is over ``tol * max|ref|``."""
    ref = np.asarray(ref, np.float64)
    a0 = _as_ref_shape(a, ref)
    if a0 is None:
        return None
    finite = np.isfinite(ref)
    scale = float(np.max(np.abs(ref[finite]))) if finite.any() else 0.0
    d = _abs_diff(np.asarray(a0, np.float64), ref).reshape(ref.shape)
    return d > tol * max(scale, 1e-30)
