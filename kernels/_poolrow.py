"""3x3 / stride 2 max pool rows with top / left padding 0 or 1 and windows past the edge, for the
direct conv that pools its own output (:func:`refnet.kernels._direct.direct_pool_rows`): the
even/odd scheme of :func:`refnet.kernels.window._max_pool3s2` (which keeps its own loops for the
unpadded pools: routed through these rows it measured 3-9% slower, 98 -> 102, 66 -> 70, 43 -> 47 us
on SqueezeNet's three pools, paired, one thread). A module of its own: kernels/window.py imports
kernels/pool.py, which imports the conv module, which imports _direct."""

from __future__ import annotations

import os

import numpy as np

from refnet.kernels import _packgemm
from refnet.kernels._jit import JIT_OPTIONS, jit
from refnet.kernels._lazyjit import lazy_njit

__all__ = ["_pool3s2_row", "pool3s2_planes", "take3", "STACK_ROW", "STACK_ROWS"]

# (inlined into its caller in numba's IR: called across a function boundary, the row's loops
# ran 1.7-2.5x slower, 64x111x111 -> 55x55 100 -> 170 us)
_inline = lazy_njit(**{**JIT_OPTIONS, "inline": "always"})


@jit
def _max3_rows(x3, t, ra, rb, rc, j, b):
    """The max of b, x3[t, ra, j], x3[t, rb, j], x3[t, rc, j], selected in that order
    (``v > b``: a NaN never wins; from b = -inf all NaN gives -inf)."""
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
    neg = x3.dtype.type(-np.inf)
    m = wo + 1 - pl  # column pairs the windows need
    n = min(m, w // 2)  # pairs inside the plane
    for k in range(n):
        ev[k] = _max3_rows(x3, t, ra, rb, rc, 2 * k, neg)
        od[k] = _max3_rows(x3, t, ra, rb, rc, 2 * k + 1, neg)
    for k in range(n, m):  # (a last even column, or windows past the edge: clipped to it)
        ev[k] = _max3_rows(x3, t, ra, rb, rc, min(2 * k, w - 1), neg)
        od[k] = _max3_rows(x3, t, ra, rb, rc, min(2 * k + 1, w - 1), neg)
    if pl == 0:  # columns 2k, 2k + 1, 2k + 2
        take3(ev, od, 0, y3, u, oh, 0)
    else:  # columns 2k - 1, 2k, 2k + 1 (the first window: 0 and 1)
        b = ev[0]
        v = od[0]
        y3[u, oh, 0] = v if v > b else b
        take3(od, ev, 1, y3, u, oh, 1)


@_inline
def take3(a, b, off, y3, u, oh, k0):
    """y3[u, oh, k] = the max of a[k - off], b[k], a[k - off + 1], selected in that order
    (``v > b``), for k0 <= k < y3.shape[2]: a 3-wide window's columns from the vertical maxima of
    the even and odd columns (off a literal 0 or 1 where called)."""
    for k in range(k0, y3.shape[2]):
        m = a[k - off]
        v = b[k]
        m = v if v > m else m
        v = a[k - off + 1]
        y3[u, oh, k] = v if v > m else m


#: :func:`pool3s2_planes` and ``window._max_pool3s2`` keep their scratch rows on the stack for
#: output rows shorter than STACK_ROW (no run-time overlap checks before each row's loops; hot, one
#: thread, 8 calls of 8 planes: 64x111x111 154 -> 126 us, 64x112x112 padded 147 -> 116 us);
#: ``REFNET_POOL3S2_STACK=0`` or STACK_ROWS = False: heap rows (A/B; read at each call of
#: ``DirectSmallCin.pool_into`` and of the pool steps)
STACK_ROW = 128  # (the literal 128 of the kernel's _stack calls)
STACK_ROWS = os.environ.get("REFNET_POOL3S2_STACK", "1").strip() not in ("0", "off", "no", "false")


@jit
def pool3s2_planes(x3, pt, pl, y3, u0, stack=True):
    """y3[u0 + t] = the 3x3 / stride 2 max pool (top / left padding pt, pl of 0 or 1, every window
    meeting the plane) of every plane x3[t], one :func:`_pool3s2_row` per output row (rows cut by
    the top or bottom edge repeat an inside row); ``stack``: scratch rows on the stack
    (:data:`STACK_ROWS`)."""
    wo = y3.shape[2]
    if stack and wo < STACK_ROW:
        _planes(x3, pt, pl, y3, u0, _packgemm._carray(_packgemm._stack(128), (128,)),
                _packgemm._carray(_packgemm._stack(128), (128,)))
    else:
        _planes(x3, pt, pl, y3, u0, np.empty(wo + 1, dtype=x3.dtype), np.empty(wo + 1, dtype=x3.dtype))


@_inline
def _planes(x3, pt, pl, y3, u0, ev, od):
    """:func:`pool3s2_planes` with the scratch rows ev, od (at least wo + 1 values each)."""
    planes, h, _ = x3.shape
    ho = y3.shape[1]
    for t in range(planes):
        for oh in range(ho):
            r0 = 2 * oh - pt
            _pool3s2_row(x3, t, max(r0, 0), min(r0 + 1, h - 1), min(r0 + 2, h - 1), pl, ev, od, y3, u0 + t, oh)
