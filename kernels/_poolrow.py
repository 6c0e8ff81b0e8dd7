"""One output row of a 3x3 / stride 2 max pool, shared by the pool kernel
(:func:`refnet.kernels.window._max_pool3s2`) and the direct conv that pools its own output
(:func:`refnet.kernels._direct.direct_pool_rows`); a module of its own so that both import it
without a cycle (conv -> _direct -> window -> pool -> conv)."""

from __future__ import annotations

import numpy as np

from refnet.kernels._jit import JIT_OPTIONS, jit
from refnet.kernels._lazyjit import lazy_njit

__all__ = ["_pool3s2_row"]

# (inlined into its callers in numba's IR: called across a function boundary, the row's loops
# ran 1.7-2.5x slower, 64x111x111 -> 55x55 100 -> 170 us)
_inline = lazy_njit(**{**JIT_OPTIONS, "inline": "always"})


@jit
def _max3_rows(x3, t, ra, rb, rc, j):
    """The max of x3[t, ra, j], x3[t, rb, j], x3[t, rc, j], selected in that order from -inf
    (``v > b``: a NaN never wins; all NaN gives -inf)."""
    b = x3.dtype.type(-np.inf)
    v = x3[t, ra, j]
    b = v if v > b else b
    v = x3[t, rb, j]
    b = v if v > b else b
    v = x3[t, rc, j]
    return v if v > b else b


@_inline
def _pool3s2_row(x3, t, ra, rb, rc, pl, ev, od, y3, u, oh):
    """One output row of a 3x3 / stride 2 max pool: y3[u, oh, k] (k < y3.shape[2]) = the max of
    plane x3[t] over the rows ra, rb, rc and the columns 2k - pl .. 2k - pl + 2 that lie inside
    it (left padding pl 0 or 1; a window cut by an edge repeats an inside row or column in its
    place, which leaves a maximum unchanged). One pass over the three rows writes the vertical
    maxima of the even columns 2k to ``ev`` and of the odd ones to ``od`` (stride-2 loads that
    LLVM vectorises as interleaved groups; columns past the last clipped to it), then each window
    takes its three columns from them, left to right: contiguous rows, no stride-2 selection.
    ``ev`` and ``od`` hold at least wo + 1 - pl values."""
    w = x3.shape[2]
    wo = y3.shape[2]
    m = wo + 1 - pl  # column pairs the windows need
    n = min(m, w // 2)  # pairs inside the plane
    for k in range(n):
        ev[k] = _max3_rows(x3, t, ra, rb, rc, 2 * k)
        od[k] = _max3_rows(x3, t, ra, rb, rc, 2 * k + 1)
    for k in range(n, m):  # (a last even column, or windows past the edge: clipped to it)
        ev[k] = _max3_rows(x3, t, ra, rb, rc, min(2 * k, w - 1))
        od[k] = _max3_rows(x3, t, ra, rb, rc, min(2 * k + 1, w - 1))
    if pl == 0:  # columns 2k, 2k + 1, 2k + 2
        for k in range(wo):
            b = ev[k]
            v = od[k]
            b = v if v > b else b
            v = ev[k + 1]
            y3[u, oh, k] = v if v > b else b
    else:  # columns 2k - 1, 2k, 2k + 1 (the first window: 0 and 1)
        b = ev[0]
        v = od[0]
        y3[u, oh, 0] = v if v > b else b
        for k in range(1, wo):
            b = od[k - 1]
            v = ev[k]
            b = v if v > b else b
            v = od[k]
            y3[u, oh, k] = v if v > b else b


@jit
def pool3s2_planes(x3, pt, pl, y3, u0):
    """y3[u0 + t] = the 3x3 / stride 2 max pool (top / left padding pt, pl of 0 or 1, every window
    meeting the plane) of every plane x3[t], one :func:`_pool3s2_row` per output row (rows cut by
    the top or bottom edge repeat an inside row)."""
    planes, h, _ = x3.shape
    ho, wo = y3.shape[1], y3.shape[2]
    ev = np.empty(wo + 1, dtype=x3.dtype)
    od = np.empty(wo + 1, dtype=x3.dtype)
    for t in range(planes):
        for oh in range(ho):
            r0 = 2 * oh - pt
            _pool3s2_row(x3, t, max(r0, 0), min(r0 + 1, h - 1), min(r0 + 2, h - 1), pl, ev, od, y3, u0 + t, oh)
