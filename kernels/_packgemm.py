"""A float32 GEMM whose weights are packed once, for convolutions on small maps.

``C (M, N) = W (M, K) @ X (K, N)`` where W is a conv's weight matrix (fixed at plan time) and
X the input (1x1 convs) or its im2col (other kernels) of one image, N = output pixels. On small
maps (ResNet-50's 7x7 stage: N = 49, K = 512..4608, M = 512..2048) the BLAS packs W afresh on
every call -- 1-9 MB read from memory, written and read again for 2 * M * K * N flops -- and ran
these shapes at 70-85 GFLOPS on one Zen 4 core (hot cache; ~40 in a forward pass, where every
layer's weights come cold from DRAM). :class:`PackedGemm` packs W at plan time into panels of
:data:`MR` rows, each stored k-major (``wp[p, k, :] = W[p*MR : (p+1)*MR, k]``, the last panel
zero-padded), and a numba kernel reads each panel once from memory and keeps it in cache for
all column tiles: 95-108 GFLOPS on the same shapes (``bench/packgemm_feasibility.py``).

The micro-kernel keeps a tile of MR x :data:`NR` outputs (7 x 2 AVX-512 vectors) in registers
over the whole K: per k it broadcasts NR values of X's row k and does 2 * NR vector FMAs with
the panel's row. Getting LLVM to emit that from numba took three things, all in
:func:`_tile`: the 7 column accumulators written out as 7 separate arrays (a loop over the
columns was vectorised across the columns, with gathers); accumulators on the stack
(``_stack``, an ``alloca`` that LLVM promotes to registers); and ``fastmath={"contract"}`` only
(FMA contraction, no reassociation: with full fastmath the k loop was vectorised as a
reduction with scatters). No nnan/ninf flags: NaN and inf propagate as in the plain sum.

Rounding: each output sums blocks of 128 products (one float32 FMA chain each, k in order)
and then the blocks' sums, about as accurate as the BLAS (one chain over all K was 13x
np.matmul's error at K = 9216 and broke the float32 tolerance on yolov2-tiny's 4x4 layers);
float32 rounding-level differences from ``np.matmul``.

Inside ``numpy_kernels()`` (small nets without numba) and without numba's compiler
(``NUMBA_DISABLE_JIT=1``) :meth:`PackedGemm.__call__` runs the NumPy twin (one ``np.matmul``
per panel); the kernel body itself runs as Python there with NumPy stand-ins for the stack
arrays (CI's NUMBA_DISABLE_JIT run covers it on small shapes: tests/test_kernels/test_packgemm.py).
With several threads the conv plan runs the same tiles split over one numba parallel region
(:mod:`refnet.kernels._packsplit`), else its split BLAS paths (:func:`refnet.kernels.conv._split_gemm`).

Memory: the packed copy is the weights once more (rows padded to a multiple of MR); the plan
keeps only a view of the original weights for its fallback path.

Large maps: :func:`choose` also gives the packed GEMM to im2col convs on any map (M >= 32,
K >= 128: no im2col copy), and :func:`packed_gemm_wide` (:class:`WideGemm`, algorithm
"packedwide") to stride-1 1x1 convs with a fused residual on >= 196 pixels: a tile of MRW x
NRW outputs that loads X's rows as vectors and broadcasts the weights, so bias, residual and
activation are added as C's rows are stored (the BLAS path makes a second pass over C).
``REFNET_PACKGEMM_LARGE=0`` turns both off. Same blocked sums of 128 products.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import MODE, lazy_njit, load_numba, on_numba_load

__all__ = ["MR", "NR", "MRW", "NRW", "PackedGemm", "WideGemm", "pack_weights", "packed_gemm", "packed_gemm_numpy",
           "packed_gemm_wide", "packed_gemm_wide_numpy", "choose", "enabled", "conv_offsets", "matrix_offsets"]

MR = 32  # weight rows (output channels) per panel: two AVX-512 vectors of float32
NR = 7  # output columns per register tile (7x7 maps: 7 tiles; 14x14: 28)

# The conv plan (kernels/conv.py) uses the packed GEMM for float32 ungrouped convs whose
# per-image GEMM has at most MAX_N columns (output pixels), at least MIN_M rows and MIN_K
# reduction length, and for 3x3 convs it would run as Winograd only up to WINO_MAX_N columns.
# Measured (bench/packgemm_layers.py, one thread, cold weights, ratio packed / before): ResNet-50
# 7x7 stage 0.73 (3x3 512, Winograd before) and 0.81-0.87 (1x1), 14x14 1x1 K >= 512 0.88-0.94
# but K = 256 1.02 and 3x3 256 1.41 (Winograd); GoogLeNet 14x14 1x1 K 480/528 0.93/0.92, 3x3
# 1.32-1.57 (Winograd), 7x7 1x1 0.83, 3x3 0.75, 5x5 0.86; SqueezeNet 13x13 1x1 512->64 0.84,
# 64->256 1.37, 3x3 1.55, conv10 512->1000 1.01.
MAX_N = 196
MIN_M = 64
MIN_K = 384
WINO_MAX_N = 64
# ... and the wide packed GEMM for the stride-1 1x1 convs with at least WIDE_MIN_N columns,
# WIDE_MIN_M rows and WIDE_MIN_K reduction length that the packed GEMM above does not take.
# Measured (/tmp-free: bench/packgemm_layers.py --only resnet50wide, one thread, cold weights,
# ReLU, ratio wide / BLAS + epilogue pass): ResNet-50 56x56 K = 64 -> 256 + residual 0.81,
# 256 -> 64 0.90, 256 -> 128 0.93, 64 -> 64 1.03; 28x28 128 -> 512 + residual 0.84, 512 -> 128
# 0.89, 512 -> 256 0.97; 14x14 256 -> 1024 + residual 0.94.
# ... and the packed GEMM on any map for the im2col convs (strided or not 3x3; no im2col copy)
# with at least IM2COL_MIN_M rows and IM2COL_MIN_K reduction length. Measured (one thread, cold
# weights and inputs, ReLU, ratio packed / im2col + BLAS): ResNet-50 conv1 7x7/2 0.89-0.93,
# 3x3/2 128 at 56x56 0.77, 64->128 3x3/2 0.82; GoogLeNet 5x5 32->96 28x28 0.69; CaffeNet
# 11x11/4 0.84; 16->64 3x3/2 112x112 (K = 144) 0.92; but K = 27 (3->64 3x3/2 at 224) 1.48 and
# 3->32 3x3 at 416x416 1.11.
IM2COL_MIN_K = 128
# ... and from this many rows for those (one panel of MR = 32). Measured (quiet, warm, ms im2col /
# packed, one thread; two threads): GoogLeNet's inception_3a/5x5 16 -> 32 28x28 0.36 / 0.21;
# 0.52 / 0.15, inception_4a/5x5 16 -> 48 14x14 0.15 / 0.10; 0.23 / 0.08, 32 -> 32 5x5 28x28 0.72 /
# 0.39; 0.99 / 0.26, 16 -> 32 3x3/2 56x56 (K = 144) 0.16 / 0.10; 0.25 / 0.12.
IM2COL_MIN_M = 32
WIDE_MIN_N = 196
WIDE_MIN_M = 32
WIDE_MIN_K = 64
# A/B switches: REFNET_PACKGEMM=0 turns the packed paths off (plans made afterwards),
# REFNET_PACKGEMM_LARGE=0 only their use on large maps (the wide GEMM, im2col convs > MAX_N)
ENV = "REFNET_PACKGEMM"
LARGE_ENV = "REFNET_PACKGEMM_LARGE"

# stand-ins until numba loads; then the stack-array intrinsic (or, with NUMBA_DISABLE_JIT=1,
# NumPy arrays, so the kernel body runs as Python)
_stack: Any = None
_carray: Any = None


@on_numba_load
def _define_stack(numba: Any) -> None:
    global _stack, _carray
    if numba.config.DISABLE_JIT:
        _stack = lambda n: np.zeros(n, np.float32)  # noqa: E731
        _carray = lambda a, shape: a.reshape(shape)  # noqa: E731
        return
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def stack(typingctx: Any, size: Any) -> Any:
        """A float32 array of ``size`` (a literal int) elements on the stack (uninitialised)."""
        if not isinstance(size, types.IntegerLiteral):
            return None
        n = size.literal_value

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=n)

        return types.CPointer(types.float32)(size), codegen

    _stack = stack
    _carray = numba.carray


_fast = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"contract"}, "boundscheck": False})


@_fast
def _tile(wp, xf, kofs, p, c0, c1, c2, c3, c4, c5, c6, cf, o0, n, rows, cols):
    """(W panel p) @ X[:, j] for 7 columns, X[k, j] = xf[kofs[k] + c_j], stored to
    cf[o0 + r * n + j] for the first ``rows`` rows and ``cols`` columns (cf: C flattened, row
    length n); see the module docstring for why it is written out like this."""
    s0 = _carray(_stack(32), (32,))
    s1 = _carray(_stack(32), (32,))
    s2 = _carray(_stack(32), (32,))
    s3 = _carray(_stack(32), (32,))
    s4 = _carray(_stack(32), (32,))
    s5 = _carray(_stack(32), (32,))
    s6 = _carray(_stack(32), (32,))
    a0 = _carray(_stack(32), (32,))
    a1 = _carray(_stack(32), (32,))
    a2 = _carray(_stack(32), (32,))
    a3 = _carray(_stack(32), (32,))
    a4 = _carray(_stack(32), (32,))
    a5 = _carray(_stack(32), (32,))
    a6 = _carray(_stack(32), (32,))
    for lane in range(32):
        s0[lane] = 0.0
        s1[lane] = 0.0
        s2[lane] = 0.0
        s3[lane] = 0.0
        s4[lane] = 0.0
        s5[lane] = 0.0
        s6[lane] = 0.0
    kdim = wp.shape[1]
    for kb in range(0, kdim, 128):  # sums of 128 products each, added up (float32 rounding)
        for lane in range(32):
            a0[lane] = 0.0
            a1[lane] = 0.0
            a2[lane] = 0.0
            a3[lane] = 0.0
            a4[lane] = 0.0
            a5[lane] = 0.0
            a6[lane] = 0.0
        for k in range(np.uint64(kb), np.uint64(min(kdim, kb + 128))):  # (unsigned: no wraparound code)
            wk = wp[p, k]
            ko = kofs[k]
            x0 = xf[ko + c0]
            x1 = xf[ko + c1]
            x2 = xf[ko + c2]
            x3 = xf[ko + c3]
            x4 = xf[ko + c4]
            x5 = xf[ko + c5]
            x6 = xf[ko + c6]
            for lane in range(32):
                wl = wk[lane]
                a0[lane] += x0 * wl
                a1[lane] += x1 * wl
                a2[lane] += x2 * wl
                a3[lane] += x3 * wl
                a4[lane] += x4 * wl
                a5[lane] += x5 * wl
                a6[lane] += x6 * wl
        for lane in range(32):
            s0[lane] += a0[lane]
            s1[lane] += a1[lane]
            s2[lane] += a2[lane]
            s3[lane] += a3[lane]
            s4[lane] += a4[lane]
            s5[lane] += a5[lane]
            s6[lane] += a6[lane]
    # straight from the accumulators into C's rows (a copy through a tile buffer and a
    # transposing loop cost 5-15% at K = 256..512)
    for r in range(rows):
        o = o0 + r * n
        cf[o] = s0[r]
        if cols > 1:
            cf[o + 1] = s1[r]
        if cols > 2:
            cf[o + 2] = s2[r]
        if cols > 3:
            cf[o + 3] = s3[r]
        if cols > 4:
            cf[o + 4] = s4[r]
        if cols > 5:
            cf[o + 5] = s5[r]
        if cols > 6:
            cf[o + 6] = s6[r]


@_fast
def packed_gemm(wp, xf, kofs, coffs, c):
    """c (M, N) = W @ X with W packed by :func:`pack_weights` into wp (P, K, MR), P * MR >= M,
    and X[k, j] = xf[kofs[k] + coffs[j]] (xf 1-D: a matrix, or an image whose im2col this
    reads in place, :func:`conv_offsets`); c C-contiguous. A last partial tile of columns
    repeats its last column (computed, not stored)."""
    m, n = c.shape
    cf = c.reshape(m * n)
    last = n - 1
    for p in range(wp.shape[0]):
        r0 = p * 32
        rows = min(32, m - r0)
        for n0 in range(0, n, 7):
            _tile(wp, xf, kofs, p, coffs[n0], coffs[min(n0 + 1, last)], coffs[min(n0 + 2, last)],
                  coffs[min(n0 + 3, last)], coffs[min(n0 + 4, last)], coffs[min(n0 + 5, last)],
                  coffs[min(n0 + 6, last)], cf, r0 * n + n0, n, rows, min(7, n - n0))


def pack_weights(wmat: np.ndarray, mr: int = MR) -> np.ndarray:
    """(M, K) weights -> (ceil(M / mr), K, mr) float32 panels, k-major, rows zero-padded."""
    m, k = wmat.shape
    panels = -(-m // mr)
    wp = np.zeros((panels * mr, k), np.float32)
    wp[:m] = wmat
    return np.ascontiguousarray(wp.reshape(panels, mr, k).transpose(0, 2, 1))


def matrix_offsets(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(kofs, coffs) of a C-contiguous (k, n) matrix (unsigned: the kernel's loads then need no
    negative-index wraparound, ~30 integer instructions per k less)."""
    return np.arange(k, dtype=np.uint64) * np.uint64(n), np.arange(n, dtype=np.uint64)


def conv_offsets(c: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ho: int,
                 wo: int) -> tuple[np.ndarray, np.ndarray]:
    """(kofs, coffs) that read the im2col of a (c, h, w) C-contiguous image (already padded)
    in place: X[(ci * kh + p) * kw + q, oh * wo + ow] = img[ci, oh * sh + p * dh, ow * sw + q * dw]."""
    ci, p, q = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    kofs = (ci * h * w + p * dh * w + q * dw).reshape(-1).astype(np.uint64)
    oh, ow = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    return kofs, (oh * sh * w + ow * sw).reshape(-1).astype(np.uint64)


def packed_gemm_numpy(wp: np.ndarray, xf: np.ndarray, kofs: np.ndarray, coffs: np.ndarray, c: np.ndarray) -> None:
    """NumPy twin of :func:`packed_gemm` (X gathered, one matmul per panel)."""
    x = xf[kofs[:, None] + coffs[None, :]]
    m = c.shape[0]
    for p in range(wp.shape[0]):
        r0, r1 = p * MR, min(m, (p + 1) * MR)
        c[r0:r1] = (x.T @ wp[p, :, : r1 - r0]).T


class PackedGemm:
    """``g(x, c)``: c (M, N) = wmat @ x (K, N), float32, wmat packed once here; ``g.offsets(xf,
    kofs, coffs, c)``: the same with X[k, j] = xf[kofs[k] + coffs[j]]."""

    def __init__(self, wmat: np.ndarray) -> None:
        self.m, self.k = wmat.shape
        self.wp = pack_weights(wmat)

    @property
    def nbytes(self) -> int:
        return int(self.wp.nbytes)

    def __call__(self, x: np.ndarray, c: np.ndarray) -> None:
        """c (M, N) = wmat @ x (K, N) (float32, x C-contiguous)."""
        self.offsets(x.reshape(-1), *matrix_offsets(*x.shape), c)

    def offsets(self, xf: np.ndarray, kofs: np.ndarray, coffs: np.ndarray, c: np.ndarray) -> None:
        if MODE.on or load_numba().config.DISABLE_JIT:  # (the kernel as Python: tests only)
            packed_gemm_numpy(self.wp, xf, kofs, coffs, c)
        else:
            packed_gemm(self.wp, xf, kofs, coffs, c)


def enabled(env: str = ENV) -> bool:
    """Whether new plans may choose the packed GEMMs (``$REFNET_PACKGEMM`` not 0; ``env`` =
    :data:`LARGE_ENV`: on large maps)."""
    return os.environ.get(env, "1").strip() not in ("0", "off", "no", "false")


def choose(base: str, dtype: np.dtype, groups: int, m: int, k: int, n: int, *, stride1: bool = False,
           residual: bool = False) -> str:
    """The conv plan's algorithm: "packed" or "packedwide" (stride-1 1x1 convs with a fused
    residual) where that packed GEMM measured faster than ``base`` (the plan's own choice) for
    a GEMM of these sizes (per image), else ``base``."""
    if not enabled() or np.dtype(dtype) != np.float32 or groups != 1 or base not in (
            "gemm1x1", "im2col", "winograd", "winograd4"):
        return base
    if base.startswith("winograd"):
        return "packed" if n <= WINO_MAX_N else base
    if n <= MAX_N and m >= MIN_M and k >= MIN_K:
        return "packed"
    if not enabled(LARGE_ENV):
        return base
    if base == "im2col" and m >= IM2COL_MIN_M and k >= IM2COL_MIN_K:
        return "packed"
    if base == "gemm1x1" and stride1 and residual and n >= WIDE_MIN_N and m >= WIDE_MIN_M and k >= WIDE_MIN_K:
        return "packedwide"
    return base


# ---- wide maps: the transposed register tile (N-major), epilogue fused into the stores ----
# C (M, N) = W (M, K) @ X (K, N) with X a C-contiguous matrix (1x1 stride-1 convs: the input
# itself) and N >= NRW. A register tile is MRW rows x NRW columns: per k it loads X's row k
# (NRW contiguous floats, two AVX-512 vectors) and broadcasts MRW weights (W packed k-major in
# panels of MRW rows), so C's rows are stored as whole vectors, with bias, residual and
# activation added on the way out (no second pass over C).
MRW = 8  # weight rows per wide tile (ResNet-50's M are multiples of 8)
NRW = 32  # output columns per wide tile
NBW_ELEMS = 1 << 16  # about this many elements of X per column block (all row panels run
# over one block before the next; in ResNet-50, K = 64: 1024 columns 0.90 vs 256 columns 0.93 of the BLAS)


@_fast
def _tile_wide(wq, xf, p, n0, n, cf, bias, rf, hasres, act, slope, six, rows, lo):
    """C[p*8 : p*8 + rows, n0 + lo : n0 + 32] of act(W @ X + bias [+ R]), X[k, j] = xf[k * n + j],
    C and R flattened with row length n (same accumulation order as :func:`_tile`)."""
    s0 = _carray(_stack(32), (32,))
    s1 = _carray(_stack(32), (32,))
    s2 = _carray(_stack(32), (32,))
    s3 = _carray(_stack(32), (32,))
    s4 = _carray(_stack(32), (32,))
    s5 = _carray(_stack(32), (32,))
    s6 = _carray(_stack(32), (32,))
    s7 = _carray(_stack(32), (32,))
    a0 = _carray(_stack(32), (32,))
    a1 = _carray(_stack(32), (32,))
    a2 = _carray(_stack(32), (32,))
    a3 = _carray(_stack(32), (32,))
    a4 = _carray(_stack(32), (32,))
    a5 = _carray(_stack(32), (32,))
    a6 = _carray(_stack(32), (32,))
    a7 = _carray(_stack(32), (32,))
    for lane in range(32):
        s0[lane] = 0.0
        s1[lane] = 0.0
        s2[lane] = 0.0
        s3[lane] = 0.0
        s4[lane] = 0.0
        s5[lane] = 0.0
        s6[lane] = 0.0
        s7[lane] = 0.0
    kdim = wq.shape[1]
    for kb in range(0, kdim, 128):
        for lane in range(32):
            a0[lane] = 0.0
            a1[lane] = 0.0
            a2[lane] = 0.0
            a3[lane] = 0.0
            a4[lane] = 0.0
            a5[lane] = 0.0
            a6[lane] = 0.0
            a7[lane] = 0.0
        for k in range(np.uint64(kb), np.uint64(min(kdim, kb + 128))):
            wk = wq[p, k]
            w0 = wk[0]
            w1 = wk[1]
            w2 = wk[2]
            w3 = wk[3]
            w4 = wk[4]
            w5 = wk[5]
            w6 = wk[6]
            w7 = wk[7]
            xo = k * np.uint64(n) + np.uint64(n0)
            for lane in range(np.uint64(32)):
                xl = xf[xo + lane]
                a0[lane] += w0 * xl
                a1[lane] += w1 * xl
                a2[lane] += w2 * xl
                a3[lane] += w3 * xl
                a4[lane] += w4 * xl
                a5[lane] += w5 * xl
                a6[lane] += w6 * xl
                a7[lane] += w7 * xl
        for lane in range(32):
            s0[lane] += a0[lane]
            s1[lane] += a1[lane]
            s2[lane] += a2[lane]
            s3[lane] += a3[lane]
            s4[lane] += a4[lane]
            s5[lane] += a5[lane]
            s6[lane] += a6[lane]
            s7[lane] += a7[lane]
    # the epilogue, row by row from a stack copy of the tile (no calls: a call per row
    # spilled and reloaded the accumulators)
    t = _carray(_stack(256), (8, 32))
    for lane in range(32):
        t[0, lane] = s0[lane]
        t[1, lane] = s1[lane]
        t[2, lane] = s2[lane]
        t[3, lane] = s3[lane]
        t[4, lane] = s4[lane]
        t[5, lane] = s5[lane]
        t[6, lane] = s6[lane]
        t[7, lane] = s7[lane]
    zero = six - six
    m0 = p * 8
    for r in range(rows):
        m = m0 + r
        bm = bias[m]
        sm = slope[m]
        tr = t[r]
        o = np.uint64(m) * np.uint64(n) + np.uint64(n0)
        for lane in range(np.uint64(lo), np.uint64(32)):  # (unsigned: vector loads and stores)
            v = tr[lane] + bm
            if hasres:
                v = v + rf[o + lane]
            if act == 1:
                v = v if v > zero else v * sm
            elif act == 2:
                if v < zero:
                    v = zero
                elif v > six:
                    v = six
            cf[o + lane] = v


@_fast
def packed_gemm_wide(wq, x, c, bias, res, hasres, act, slope, six, nbw):
    """c (M, N) = act((W @ x + bias[:, None]) [+ res]) with W packed by ``pack_weights(w, MRW)``
    into wq (P, K, MRW); x (K, N), c and res (M, N) C-contiguous, N >= NRW; act 0 none, 1
    leaky ReLU / PReLU (slope per row), 2 ReLU6 (``six`` = 6). Column blocks of ``nbw`` (a
    multiple of NRW): all row panels over one block, so the block of X stays in cache. The last partial column tile is
    computed at N - NRW and stores only its new columns."""
    m, n = c.shape
    kdim = x.shape[0]
    cf = c.reshape(m * n)
    xf = x.reshape(kdim * n)
    rf = res.reshape(res.size)
    for nb0 in range(0, n, nbw):
        for p in range(wq.shape[0]):
            for n0 in range(nb0, min(n, nb0 + nbw), 32):
                lo = 0
                if n0 + 32 > n:
                    lo = n0 + 32 - n
                    n0 = n - 32
                _tile_wide(wq, xf, p, n0, n, cf, bias, rf, hasres, act, slope, six, min(8, m - p * 8), lo)


def packed_gemm_wide_numpy(wmat: np.ndarray, x: np.ndarray, c: np.ndarray, bias: np.ndarray,
                           res: np.ndarray | None, act: int, slope: np.ndarray, six: np.floating) -> None:
    """NumPy twin of :func:`packed_gemm_wide` (``res`` None: no residual)."""
    np.matmul(wmat, x, out=c)
    c += bias[:, None]
    if res is not None:
        c += res
    if act == 1:
        np.copyto(c, c * slope[:, None], where=c <= 0)
    elif act == 2:
        np.clip(c, 0, six, out=c)  # (NaN stays NaN)


class WideGemm:
    """``g(x, c, bias, res, act, slope, six)``: c (M, N) = act((wmat @ x + bias) [+ res]),
    float32, N >= NRW, wmat packed once here (:func:`packed_gemm_wide`)."""

    def __init__(self, wmat: np.ndarray) -> None:
        self.m, self.k = wmat.shape
        self.wmat = wmat  # (a view: the NumPy twin's weights)
        self.wq = pack_weights(wmat, MRW)
        # columns per block: the block of X about 256 KB (K = 64: 1024 columns, K = 256: 256)
        self.nbw = max(4 * NRW, min(32 * NRW, (NBW_ELEMS // self.k) // NRW * NRW))

    def __call__(self, x: np.ndarray, c: np.ndarray, bias: np.ndarray, res: np.ndarray | None, act: int,
                 slope: np.ndarray, six: np.floating) -> None:
        if MODE.on or load_numba().config.DISABLE_JIT:
            packed_gemm_wide_numpy(self.wmat, x, c, bias, res, act, slope, six)
        else:
            packed_gemm_wide(self.wq, x, c, bias, c if res is None else res, res is not None, act, slope, six, self.nbw)
