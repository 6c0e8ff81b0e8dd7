"""NumPy's own BLAS GEMM called from numba, so that a worker thread runs its whole share of a
split convolution in one ``nogil`` call (issue 17).

The worker pool (:mod:`refnet.kernels._workers`) used to run every block of a split GEMM as a
Python call: the block's slicing, ``np.matmul`` and the numba epilogue each take and drop the
GIL, and at 2 threads GoogLeNet's ~370 blocks per forward pass spent much of their time handing
the GIL over (a thread that wants it sleeps in the kernel until the holder drops it). Here each
thread makes one call per layer -- a driver that takes block numbers from a shared atomic
counter and runs each block's GEMM (the same ``cblas_?gemm`` NumPy's ``matmul`` calls, with the
same arguments: row-major, no transposes, alpha 1, beta 0, the same leading dimensions, hence
the same result bit for bit) and its epilogue without the GIL.

``REFNET_NUMBA_DRIVERS=1`` (opt-in; :func:`refnet.kernels._parallel.region_threads`) launches
the drivers as ONE numba parallel region instead (``PARALLEL``: ``for t in prange(nt)``, each
iteration one driver loop on the shared counters, scratch rows per iteration): numba's threads
are native, so no thread waits for the GIL or a Python wake-up before its first block. Used on
numba's TBB layer (~10 us per launch here; workqueue took 50-110 us and OpenMP, with refnet's
passive waiting, ~50 us and stalled for milliseconds when another process held a core).

Available when NumPy's BLAS exports ``scipy_cblas_sgemm64_``/``scipy_cblas_dgemm64_`` (the
scipy-openblas of NumPy's wheels) and a check GEMM equals ``np.matmul`` bit for bit; else
:func:`available` is False and the pool runs Python blocks as before. This module imports numba:
import it only through :func:`load` (once numba is loaded and jitting).
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import load_numba
from refnet.kernels._spin import _atomic_inc, _load_acquire, _yield

__all__ = ["available", "gemm_blocks", "im2col_bands", "im2col_small", "wino_bands", "wino_small"]

_SYMBOLS = {"f": ("scipy_cblas_sgemm64_", "refnet_cblas_sgemm64"),  # (NumPy's name, the one numba links)
            "d": ("scipy_cblas_dgemm64_", "refnet_cblas_dgemm64")}
_ROW_MAJOR, _NO_TRANS = 101, 111


def _find_blas() -> bool:
    """Register NumPy's ILP64 ``cblas_?gemm`` with numba's linker under refnet's names."""
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "libscipy_openblas64_*.so*"))):
        try:
            lib = ctypes.CDLL(path)  # (already loaded by NumPy: the same handle)
            addrs = {k: ctypes.cast(getattr(lib, sym), ctypes.c_void_p).value for k, (sym, _) in _SYMBOLS.items()}
        except (OSError, AttributeError):
            continue
        for k, (_, name) in _SYMBOLS.items():
            llvm.add_symbol(name, addrs[k])
        return True
    return False


_FOUND = _find_blas()
_numba = load_numba()


@_numba.njit(**JIT_OPTIONS)
def _atomic_next(counter):  # noqa: ANN001, ANN202
    return _atomic_inc(counter, 0)


@_numba.njit(**JIT_OPTIONS)
def _wait_all(counters, idx, total):  # noqa: ANN001, ANN202
    """Until ``counters[idx] >= total``: the blocks other threads took are done (a thread that
    took none is never waited for)."""
    while _load_acquire(counters, idx) < total:
        _yield()


@intrinsic
def _gemm(typingctx, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc):  # noqa: ANN001, ARG001, PLR0913
    """C[c_off:] (m x n, leading dim ldc) = A[a_off:] (m x k, lda) @ B[b_off:] (k x n, ldb):
    ``cblas_?gemm(RowMajor, NoTrans, NoTrans, m, n, k, 1, A, lda, B, ldb, 0, C, ldc)`` on the
    arrays' data (offsets in elements; the arrays' inner dimension must be contiguous)."""
    if not all(isinstance(x, types.Array) for x in (a, b, c)) or not (a.dtype == b.dtype == c.dtype):
        return None
    if a.dtype not in (types.float32, types.float64):
        return None
    fl = a.dtype
    sig = types.void(m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ft = context.get_value_type(fl)
        pt = ft.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, ft, pt, i64, pt, i64, ft, pt, i64])
        name = _SYMBOLS["f" if fl == types.float32 else "d"][1]
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        sty = signature.args

        def ptr(ai, oi):
            ary = context.make_array(sty[ai])(context, builder, args[ai])
            return builder.gep(ary.data, [context.cast(builder, args[oi], sty[oi], types.int64)])

        def i(ai):
            return context.cast(builder, args[ai], sty[ai], types.int64)

        builder.call(fn, [ir.Constant(i32, _ROW_MAJOR), ir.Constant(i32, _NO_TRANS), ir.Constant(i32, _NO_TRANS),
                          i(0), i(1), i(2), ir.Constant(ft, 1.0), ptr(3, 4), i(5), ptr(6, 7), i(8),
                          ir.Constant(ft, 0.0), ptr(9, 10), i(11)])
        return context.get_dummy_value()

    return sig, codegen


from refnet.kernels.conv import _bias_act_cols, _im2col, _wino4_in, _wino4_out, _wino_in, _wino_out  # noqa: E402

_epilogue = _bias_act_cols._serial  # the serial numba builds (LazyDispatchers: callable in jitted code)
_im2col_s = _im2col._serial
_wino_in_s = _wino_in._serial
_wino_out_s = _wino_out._serial
_wino4_in_s = _wino4_in._serial
_wino4_out_s = _wino4_out._serial


@_numba.njit(**JIT_OPTIONS)
def _w_in(nk, x, pt, pl, ty0, ty1, tw_n, t0, v):  # noqa: ANN001, ANN202, PLR0913
    """The input transform of F(2,3) (``nk`` = 16) or F(4,3) (36)."""
    if nk == 16:
        _wino_in_s(x, pt, pl, ty0, ty1, tw_n, t0, v)
    else:
        _wino4_in_s(x, pt, pl, ty0, ty1, tw_n, t0, v)


@_numba.njit(**JIT_OPTIONS)
def _w_out(nk, m, b, act, slope, six, ty0, ty1, tw_n, t0, y):  # noqa: ANN001, ANN202, PLR0913
    """The output transform of F(2,3) (``nk`` = 16) or F(4,3) (36)."""
    if nk == 16:
        _wino_out_s(m, b, act, slope, six, ty0, ty1, tw_n, t0, y)
    else:
        _wino4_out_s(m, b, act, slope, six, ty0, ty1, tw_n, t0, y)


@_numba.njit(**JIT_OPTIONS)
def gemm_blocks(a, s, d, bias, slope, ga, blocks, act, epi, counters, q=0):  # noqa: ANN001, ANN201, PLR0913
    """Blocks ``blocks[j] = (t, r0, r1, c0, c1)`` taken from ``counters[q]`` until none is left
    (``counters[q + 1]`` counts the finished ones): d[t][r0:r1, c0:c1] = act(a[t % ga][r0:r1] @
    s[t][:, c0:c1] + bias[t % ga][r0:r1]), a (GA, M, K), s (G, K, L), d (G, M, L), bias / slope
    (GA, M) (the epilogue only if ``epi``)."""
    isz = a.itemsize
    k = a.shape[2]
    lda, ldb, ldc = a.strides[1] // isz, s.strides[1] // isz, d.strides[1] // isz
    while True:
        j = _atomic_inc(counters, q)
        if j >= blocks.shape[0]:
            return
        t, r0, r1, c0, c1 = blocks[j, 0], blocks[j, 1], blocks[j, 2], blocks[j, 3], blocks[j, 4]
        ta = t % ga
        _gemm(r1 - r0, c1 - c0, k, a, ta * (a.strides[0] // isz) + r0 * lda, lda,
              s, t * (s.strides[0] // isz) + c0, ldb, d, t * (d.strides[0] // isz) + r0 * ldc + c0, ldc)
        if epi:
            _epilogue(d[t, r0:r1], bias[ta, r0:r1], act, slope[ta, r0:r1], c0, c1)
        _atomic_inc(counters, q + 1)


@_numba.njit(**JIT_OPTIONS)
def im2col_bands(x, wmat, y, bias, slope, geom, bands, act, epi, counter, buf):  # noqa: ANN001, ANN201, PLR0913
    """Bands ``bands[j] = (i, gi, oh0, oh1)`` from ``counter``: im2col of output rows [oh0, oh1)
    of image i, group gi into ``buf`` (this thread's scratch), its GEMM with wmat[gi] into
    y (N, G, Cog, Ho*Wo) and the epilogue. geom = (kh, kw, sh, sw, pt, pl, dh, dw, wo)."""
    kh, kw, sh, sw, pt, pl, dh, dw, wo = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8]
    cig = x.shape[1] // wmat.shape[0]
    cog, kdim = wmat.shape[1], wmat.shape[2]
    isz = y.itemsize
    ldc = y.strides[2] // isz
    while True:
        j = _atomic_next(counter)
        if j >= bands.shape[0]:
            return
        i, gi, oh0, oh1 = bands[j, 0], bands[j, 1], bands[j, 2], bands[j, 3]
        width = (oh1 - oh0) * wo
        cb = buf[: kdim * width].reshape((kdim, width))
        _im2col_s(x[i, gi * cig : (gi + 1) * cig], kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cb)
        _gemm(cog, width, kdim, wmat, gi * (wmat.strides[0] // isz), kdim, cb, 0, width,
              y, i * (y.strides[0] // isz) + gi * (y.strides[1] // isz) + oh0 * wo, ldc)
        if epi:
            _epilogue(y[i, gi], bias[gi], act, slope[gi], oh0 * wo, oh1 * wo)


@_numba.njit(**JIT_OPTIONS)
def im2col_small(x, wmat, y, bias, slope, geom, rows, gblocks, act, epi, counters, cb):  # noqa: ANN001, ANN201, PLR0913
    """im2col of small maps, per image and group in two phases: the whole im2col into ``cb``
    (Kdim, Ho*Wo) in bands of output rows ``rows[j] = (oh0, oh1)``, then the GEMM with wmat[gi] in
    blocks ``gblocks[j] = (0, r0, r1, c0, c1)`` of y (N, G, Cog, Ho*Wo) with the epilogue; pieces
    from atomic counters, a thread moves on when every piece taken is done (``counters``: taken,
    done per image, group and phase, zero on entry)."""
    kh, kw, sh, sw, pt, pl, dh, dw, wo = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8]
    g, kdim = wmat.shape[0], wmat.shape[2]
    cig = x.shape[1] // g
    hw = cb.shape[1]
    nr, ng = rows.shape[0], gblocks.shape[0]
    for u in range(x.shape[0] * g):
        i, gi = u // g, u % g
        q = 4 * u
        xin = x[i, gi * cig : (gi + 1) * cig]
        while True:
            j = _atomic_inc(counters, q)
            if j >= nr:
                break
            _im2col_s(xin, kh, kw, sh, sw, pt, pl, dh, dw, rows[j, 0], rows[j, 1], wo,
                      cb[:, rows[j, 0] * wo : rows[j, 1] * wo])
            _atomic_inc(counters, q + 1)
        _wait_all(counters, q + 1, nr)
        gemm_blocks(wmat[gi : gi + 1], cb.reshape((1, kdim, hw)), y[i, gi : gi + 1], bias[gi : gi + 1],
                    slope[gi : gi + 1], 1, gblocks, act, epi, counters, q + 2)
        _wait_all(counters, q + 3, ng)


@_numba.njit(**JIT_OPTIONS)
def wino_bands(x, u, y, b, act, slope, six, pt, pl, tw_n, bands, counter, vbuf, mbuf):  # noqa: ANN001, ANN201, PLR0913
    """Bands ``bands[j] = (i, ty0, ty1)`` of Winograd tile rows from ``counter``: input transform
    into ``vbuf``, the NK GEMMs u[f] (Co, C) @ v[f] into ``mbuf``, output transform with bias and
    activation into y[i] (this thread's scratch vbuf / mbuf); u (NK, Co, C), NK = 16: F(2,3),
    36: F(4,3)."""
    nk, c, co = u.shape[0], u.shape[2], u.shape[1]
    isz = u.itemsize
    while True:
        j = _atomic_next(counter)
        if j >= bands.shape[0]:
            return
        i, ty0, ty1 = bands[j, 0], bands[j, 1], bands[j, 2]
        t = (ty1 - ty0) * tw_n
        v = vbuf[: nk * c * t].reshape((nk, c, t))
        m = mbuf[: nk * co * t].reshape((nk, co, t))
        _w_in(nk, x[i], pt, pl, ty0, ty1, tw_n, 0, v)
        for f in range(nk):
            _gemm(co, t, c, u, f * (u.strides[0] // isz), c, v, f * c * t, t, m, f * co * t, t)
        _w_out(nk, m, b, act, slope, six, ty0, ty1, tw_n, 0, y[i])


@_numba.njit(**JIT_OPTIONS)
def wino_small(x, u, y, b, act, slope, six, pt, pl, tw_n, rows, gblocks, counters, v, m):  # noqa: ANN001, ANN201, PLR0913
    """Winograd of small maps, image by image in three phases -- input transform of the whole
    image into v (NK, C, T) in bands of tile rows ``rows[j] = (ty0, ty1)``, the NK GEMMs in blocks
    ``gblocks[j] = (f, r0, r1, c0, c1)`` into m (NK, Co, T), output transform in bands -- each
    phase's pieces taken from an atomic counter; a thread moves on when every piece taken is
    done (``counters``: taken, done for each image and phase, zero on entry)."""
    nk, co = u.shape[0], u.shape[1]
    nr, ng = rows.shape[0], gblocks.shape[0]
    for i in range(x.shape[0]):
        q = 6 * i
        while True:
            j = _atomic_inc(counters, q)
            if j >= nr:
                break
            _w_in(nk, x[i], pt, pl, rows[j, 0], rows[j, 1], tw_n, rows[j, 0] * tw_n, v)
            _atomic_inc(counters, q + 1)
        _wait_all(counters, q + 1, nr)
        gemm_blocks(u, v, m, b.reshape((1, co)), slope.reshape((1, co)), nk, gblocks, 0, False, counters, q + 2)
        _wait_all(counters, q + 3, ng)
        while True:
            j = _atomic_inc(counters, q + 4)
            if j >= nr:
                break
            _w_out(nk, m, b, act, slope, six, rows[j, 0], rows[j, 1], tw_n, rows[j, 0] * tw_n, y[i])
            _atomic_inc(counters, q + 5)
        _wait_all(counters, q + 5, nr)


# --------------------------------------------------------------------------------------
# the same drivers launched as ONE numba parallel region (REFNET_NUMBA_DRIVERS, see run_parallel)
# --------------------------------------------------------------------------------------
_pjit = _numba.njit(parallel=True, **JIT_OPTIONS)
_prange = _numba.prange


@_pjit
def gemm_blocks_par(nt, a, s, d, bias, slope, ga, blocks, act, epi, counters):  # noqa: ANN001, ANN201, PLR0913
    for _t in _prange(nt):
        gemm_blocks(a, s, d, bias, slope, ga, blocks, act, epi, counters, 0)


@_pjit
def im2col_bands_par(nt, x, wmat, y, bias, slope, geom, bands, act, epi, counter, buf):  # noqa: ANN001, ANN201, PLR0913
    for t in _prange(nt):
        im2col_bands(x, wmat, y, bias, slope, geom, bands, act, epi, counter, buf[t])


@_pjit
def im2col_small_par(nt, x, wmat, y, bias, slope, geom, rows, gblocks, act, epi, counters, cb):  # noqa: ANN001, ANN201, PLR0913
    for _t in _prange(nt):
        im2col_small(x, wmat, y, bias, slope, geom, rows, gblocks, act, epi, counters, cb)


@_pjit
def wino_bands_par(nt, x, u, y, b, act, slope, six, pt, pl, tw_n, bands, counter, vbuf, mbuf):  # noqa: ANN001, ANN201, PLR0913
    for t in _prange(nt):
        wino_bands(x, u, y, b, act, slope, six, pt, pl, tw_n, bands, counter, vbuf[t], mbuf[t])


@_pjit
def wino_small_par(nt, x, u, y, b, act, slope, six, pt, pl, tw_n, rows, gblocks, counters, v, m):  # noqa: ANN001, ANN201, PLR0913
    for _t in _prange(nt):
        wino_small(x, u, y, b, act, slope, six, pt, pl, tw_n, rows, gblocks, counters, v, m)


PARALLEL = {"gemm_blocks": gemm_blocks_par, "im2col_bands": im2col_bands_par, "im2col_small": im2col_small_par,
            "wino_bands": wino_bands_par, "wino_small": wino_small_par}


def _check() -> bool:
    """The direct GEMM equals ``np.matmul`` bit for bit (both dtypes, a strided output block)."""
    if not _FOUND:
        return False
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        a = rng.standard_normal((1, 37, 70)).astype(dt)
        s = rng.standard_normal((1, 70, 300)).astype(dt)
        d = np.zeros((1, 37, 300), dt)
        blocks = np.array([[0, 0, 20, 0, 130], [0, 20, 37, 0, 130], [0, 0, 37, 130, 300]], np.int64)
        z = np.zeros((1, 37), dt)
        gemm_blocks(a, s, d, z, z, 1, blocks, 0, False, np.zeros(2, np.int64))
        want = np.empty_like(d)
        for _, r0, r1, c0, c1 in blocks:
            np.matmul(a[0, r0:r1], s[0, :, c0:c1], out=want[0, r0:r1, c0:c1])
        if not np.array_equal(d, want):
            return False
    return True


available = _check()
