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


def diff_stats(a: np.ndarray, ref: np.ndarray) -> Stats:
    """(max abs, max abs / max|ref|, mean abs, cosine similarity, index of the worst element).

    Arrays of equal size but another layout are compared elementwise; different sizes give NaN
    statistics. The cosine is taken over the positions where both blobs are finite.
    """
    ref = np.asarray(ref, np.float64)
    a0 = _as_ref_shape(a, ref)
    if a0 is None:
        return NAN_STATS
    a = np.asarray(a0, np.float64)
    if ref.size == 0:
        return (0.0, 0.0, 0.0, 1.0, ())
    d = _abs_diff(a, ref)
    i = int(np.argmax(d))
    worst = tuple(int(v) for v in np.unravel_index(i, ref.shape))
    max_abs = float(d[i])
    finite = np.isfinite(ref)
    clean = bool(finite.all()) and bool(np.isfinite(a).all())
    if clean:
        scale = float(np.max(np.abs(ref)))
        av, rv = a.ravel(), ref.ravel()
    else:
        scale = float(np.max(np.abs(ref[finite]))) if finite.any() else 0.0
        both = (finite & np.isfinite(a)).ravel()
        av, rv = a.ravel()[both], ref.ravel()[both]
    mean_abs = float(np.mean(np.where(np.isinf(d), 0.0, d))) if not clean else float(np.mean(d))
    max_rel = 0.0 if max_abs == 0.0 else max_abs / max(scale, 1e-30)
    # plain reductions, not BLAS dot: exact enough, and immune to oversubscribed BLAS threads
    na, nr = math.sqrt(float(np.add.reduce(av * av))), math.sqrt(float(np.add.reduce(rv * rv)))
    cos = float(np.add.reduce(av * rv)) / (na * nr) if na and nr else (1.0 if na == nr else 0.0)
    return max_abs, max_rel, mean_abs, cos, worst


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
