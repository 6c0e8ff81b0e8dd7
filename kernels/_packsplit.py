"""The one-thread packed conv kernels split over several threads (issue 17).

The packed GEMMs (:mod:`refnet.kernels._packgemm`, algorithms "packed", "packedwide") and the direct
few-input-channel conv (:mod:`refnet.kernels._direct`, "direct_cin") were written for one
thread; with several, the conv plan used to fall back to its split BLAS paths (im2col / 1x1
GEMMs in blocks), so GoogLeNet's 14x14 and 7x7 layers and its first conv ran a slower kernel
at two threads than at one. Here the same register-tile kernels run in units of work taken
from a shared atomic counter by every thread of one numba parallel region (or, where no region
can start, by the worker pool's threads: :func:`refnet.kernels.conv._run_driver`):

* packed: a unit is one panel of :data:`~refnet.kernels._packgemm.MR` output channels over a
  range of output columns (a multiple of :data:`~refnet.kernels._packgemm.NR`), followed by the
  plan's epilogue (bias, residual, activation) on that block while it is in cache;
* packedwide (:func:`~refnet.kernels._packgemm.packed_gemm_wide`): a unit is a range of panels
  of :data:`~refnet.kernels._packgemm.MRW` output channels over one of its column blocks (bias,
  residual and activation fused into its stores, as at one thread);
* direct_cin: a unit is one block of :data:`~refnet.kernels._direct.CB` output channels over a
  band of output rows.

Every output element is computed by the same tile call as in the one-thread kernel, with the
same arguments: the results are bit for bit those of one thread (tests/test_kernels/
test_packsplit.py). ``REFNET_PACKED_SPLIT=0`` (or :data:`USE` = False) turns this off (the
split BLAS paths of before; the A/B switch).

Under ``NUMBA_DISABLE_JIT=1`` the drivers run as Python (the counter a plain increment,
``prange`` a range): the tests run them so on small shapes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from refnet.kernels import _direct, _packgemm
from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import MODE, lazy_njit, load_numba, on_numba_load, prange

__all__ = ["ENV", "USE", "UNITS_PER_THREAD", "enabled", "packed_table", "direct_table", "wide_table",
           "packed_units", "direct_units", "wide_units", "PARALLEL"]

ENV = "REFNET_PACKED_SPLIT"
USE = True  # (bench/flag_ab.py flips this)
# whether the packed units prefetch weights (:func:`packed_table`, read when a plan builds its
# table), and how: PREFETCH_MODE 1 into L2, 2 into all cache levels (as the one-thread kernel's
# PREFETCH / PREFETCH_L1)
PREFETCH = False
PREFETCH_MODE = 2
# units per thread (taken from a shared counter: a descheduled thread holds back one unit, not
# half the layer; a unit costs one atomic increment, no re-packing as a BLAS block would)
UNITS_PER_THREAD = max(1, int(os.environ.get("REFNET_PACKED_SPLIT_UNITS", "4")))

_atomic_inc: Any = None  # counter[idx]++ returning the old value (set when numba loads)


@on_numba_load
def _define_atomic(numba: Any) -> None:
    global _atomic_inc
    if numba.config.DISABLE_JIT:
        def py_inc(counter: np.ndarray, idx: int) -> int:
            v = int(counter[idx])
            counter[idx] = v + 1
            return v
        _atomic_inc = py_inc
        return
    from refnet.kernels._spin import _atomic_inc as inc

    _atomic_inc = inc


def enabled() -> bool:
    """Whether the packed plans may run these drivers with several threads (:data:`USE`,
    ``$REFNET_PACKED_SPLIT`` not 0, numba jitting, not inside ``numpy_kernels()``)."""
    return (USE and not MODE.on and os.environ.get(ENV, "1").strip() not in ("0", "off", "no", "false")
            and not load_numba().config.DISABLE_JIT)


def _bounds(total: int, pieces: int, step: int) -> list[tuple[int, int]]:
    """``pieces`` consecutive ranges covering ``range(total)``, boundaries multiples of ``step``."""
    units = -(-total // step)
    pieces = max(1, min(units, pieces))
    return [(min(total, units * k // pieces * step), min(total, units * (k + 1) // pieces * step))
            for k in range(pieces)]


def packed_table(m: int, n: int, nt: int, per: int | None = None, pf: int | None = None) -> np.ndarray:
    """The units (p, n0, n1, q, mode) of a packed GEMM C (m, n) over ``nt`` threads: every panel,
    its columns cut so that there are about ``per`` (:data:`UNITS_PER_THREAD`) units per thread;
    with ``pf`` (default :data:`PREFETCH_MODE` if :data:`PREFETCH`; 1 into L2, 2 into all levels) each unit's tiles
    prefetch the share n0 / n .. n1 / n of the weight panel q of the unit ``nt`` places on (the
    one this thread is likely to take next) where that is another panel (q -1, mode 0: none)."""
    panels = -(-m // _packgemm.MR)
    want = (per or UNITS_PER_THREAD) * nt
    cols = _bounds(n, -(-want // panels), _packgemm.NR)
    units = [(p, c0, c1) for p in range(panels) for c0, c1 in cols]
    mode = (PREFETCH_MODE if PREFETCH else 0) if pf is None else pf
    nxt = [units[j + nt][0] if mode and j + nt < len(units) and units[j + nt][0] != u[0] else -1
           for j, u in enumerate(units)]
    return np.array([(*u, q, mode if q >= 0 else 0) for u, q in zip(units, nxt)], np.int64).reshape(-1, 5)


def direct_table(co: int, ho: int, nt: int, per: int | None = None) -> np.ndarray:
    """The units (blk, oh0, oh1) of a direct_cin conv: every block of CB output channels, its
    rows cut so that there are about ``per`` units per thread."""
    blocks = -(-co // _direct.CB)
    want = (per or UNITS_PER_THREAD) * nt
    return np.array([(b, r0, r1) for b in range(blocks) for r0, r1 in _bounds(ho, -(-want // blocks), 1)], np.int64)


def wide_table(m: int, n: int, nbw: int, nt: int, per: int | None = None) -> np.ndarray:
    """The units (nb0, p0, p1) of a wide packed GEMM C (m, n) over ``nt`` threads: every column
    block of ``nbw`` columns (:class:`refnet.kernels._packgemm.WideGemm`'s), its panels of MRW rows
    cut so that there are about ``per`` units per thread."""
    blocks = list(range(0, n, nbw))
    want = (per or UNITS_PER_THREAD) * nt
    panels = -(-m // _packgemm.MRW)
    return np.array([(nb0, p0, p1) for nb0 in blocks for p0, p1 in _bounds(panels, -(-want // len(blocks)), 1)],
                    np.int64)


_drv = lazy_njit(**JIT_OPTIONS)
_par = lazy_njit(parallel=True, **JIT_OPTIONS)


@_drv
def packed_units(wp, xf, kofs, coffs, c, b, act, slope, six, r, hasres, epi, units, counter):  # noqa: PLR0913
    """Units ``units[j] = (p, n0, n1, q, mode)`` (:func:`packed_table`) taken from ``counter[0]``
    until none is left: rows of panel p, columns [n0, n1) of c (M, N) = W @ X as
    :func:`refnet.kernels._packgemm.packed_gemm` computes them (same tile calls; with ``mode``
    their steps k prefetch the share n0 / n .. n1 / n of panel q), then on that block
    c = act(c + b [+ r]) (``hasres``; else only if ``epi``) as the conv plan's one-thread
    epilogue does."""
    m, n = c.shape
    cf = c.reshape(m * n)
    kdim = wp.shape[1]
    wpf = wp.reshape(wp.size)
    while True:
        j = _atomic_inc(counter, 0)
        if j >= units.shape[0]:
            return
        p, n0, n1 = units[j, 0], units[j, 1], units[j, 2]
        r0 = p * 32
        r1 = min(m, r0 + 32)
        q, mode = units[j, 3], units[j, 4]
        pfo = np.uint64(max(q, 0) * kdim * 32 + n0 * kdim // n * 32)
        share = ((n1 - n0) * kdim // n + 1) * 32 // ((n1 - n0 + 6) // 7)  # (per tile)
        _packgemm._tile(wp, xf, kofs, coffs, p, n0, n1, cf, n, r1 - r0, wpf, pfo, np.uint64(share),
                        np.uint64((share << 16) // kdim), mode)
        if hasres:
            _bias_res_act_cols(c[r0:r1], r[r0:r1], b[r0:r1], act, slope[r0:r1], six, n0, n1)
        elif epi:
            _bias_act_cols(c[r0:r1], b[r0:r1], act, slope[r0:r1], n0, n1)


@_drv
def direct_units(wp, xf, kofs, rowstep, b, act, slope, six, y, units, counter):  # noqa: PLR0913
    """Units ``units[j] = (blk, oh0, oh1)`` taken from ``counter[0]`` until none is left: output
    channels blk * CB ... of rows [oh0, oh1) of y (C_out, Ho, Wo), with the tile calls of
    :func:`refnet.kernels._direct.direct_rows`."""
    co, ho, wo = y.shape
    yf = y.reshape(co * ho * wo)
    plane = np.uint64(ho * wo)
    while True:
        j = _atomic_inc(counter, 0)
        if j >= units.shape[0]:
            return
        blk, oh0, oh1 = units[j, 0], units[j, 1], units[j, 2]
        base = np.uint64(blk * 8) * plane
        for oh in range(oh0, oh1):
            for t in range(0, wo - 16, 32):
                ow0 = min(t, wo - 32)
                _direct._tile(wp, xf, kofs, blk, np.uint64(oh * rowstep + ow0), b, act, slope, six, yf,
                              base + np.uint64(oh * wo + ow0), plane)
            if wo % 32 and wo % 32 <= 16:
                ow0 = wo - 16
                _direct._tile16(wp, xf, kofs, blk, np.uint64(oh * rowstep + ow0), b, act, slope, six, yf,
                                base + np.uint64(oh * wo + ow0), plane)


@_drv
def wide_units(wq, x, c, bias, res, hasres, act, slope, six, nbw, units, counter):  # noqa: PLR0913
    """Units ``units[j] = (nb0, p0, p1)`` taken from ``counter[0]`` until none is left: panels
    [p0, p1) of column block [nb0, nb0 + nbw) of c = act((W @ x + bias) [+ res]), with the tile
    calls of :func:`refnet.kernels._packgemm.packed_gemm_wide` (bias, residual, activation in
    its stores)."""
    m, n = c.shape
    kdim = x.shape[0]
    cf = c.reshape(m * n)
    xf = x.reshape(kdim * n)
    rf = res.reshape(res.size)
    while True:
        j = _atomic_inc(counter, 0)
        if j >= units.shape[0]:
            return
        nb0, p0, p1 = units[j, 0], units[j, 1], units[j, 2]
        for p in range(p0, p1):
            _packgemm._tile_wide(wq, xf, p, nb0, min(n, nb0 + nbw), n, cf, bias, rf, hasres, act, slope, six,
                                 min(8, m - p * 8), False, False, True)


@_par
def wide_units_par(nt, wq, x, c, bias, res, hasres, act, slope, six, nbw, units, counter):  # noqa: PLR0913
    for _t in prange(nt):
        wide_units(wq, x, c, bias, res, hasres, act, slope, six, nbw, units, counter)


@_par
def packed_units_par(nt, wp, xf, kofs, coffs, c, b, act, slope, six, r, hasres, epi, units, counter):  # noqa: PLR0913
    for _t in prange(nt):
        packed_units(wp, xf, kofs, coffs, c, b, act, slope, six, r, hasres, epi, units, counter)


@_par
def direct_units_par(nt, wp, xf, kofs, rowstep, b, act, slope, six, y, units, counter):  # noqa: PLR0913
    for _t in prange(nt):
        direct_units(wp, xf, kofs, rowstep, b, act, slope, six, y, units, counter)


# (the conv plan runs these through refnet.kernels.conv._run_driver: one region, else the pool)
PARALLEL = {"packed_units": packed_units_par, "direct_units": direct_units_par, "wide_units": wide_units_par}

from refnet.kernels.conv import _bias_act_cols as _bac  # noqa: E402 - (conv imports this module lazily)
from refnet.kernels.conv import _bias_res_act_cols as _brac  # noqa: E402

_bias_act_cols = _bac._serial  # the serial builds (LazyDispatchers: callable in jitted code)
_bias_res_act_cols = _brac._serial
