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

Prefetch: in a forward pass every layer's weights come from memory (ResNet-50's 100 MB do not
stay in the caches), and a panel's first column tile waited on them. Each column tile of panel
p therefore prefetches an equal share of panel p + 1 (``llvm.prefetch``, one or two lines per
k), so the next panel arrives while this one is computed: ResNet-50 1 thread 0.978 of no
prefetch (paired, 15 rounds; its 7x7 stage 1x1s 1.36 -> 1.09 ms). ``REFNET_PACKGEMM_PREFETCH=0``
(or :data:`PREFETCH` False) turns it off.

Epilogue: the conv plan's packed path applies bias, residual and activation to each row panel
of C right after its tiles stored it, while it is in the cache (:func:`packed_gemm_epi`,
:data:`FUSED`); strided unpadded 1x1 convs read a contiguous copy of their pixels
(:data:`SUBSAMPLE`). :class:`WinoGemms` runs the 16 GEMMs of a one-thread F(2,3) Winograd conv
with >= MIN_K input channels on packed weights (:data:`WINO_PACKED`).

Tall tiles: on 13 x 13 maps (SqueezeNet's conv10, 1000 x 512 x 169) the 7-column tiles compute
175 columns for 169; :func:`packed_gemm16_epi` there runs tiles of 16 rows x 13 columns
(:func:`_tile16`) on the same packed panels (each half of a panel): one weight vector per k and
13 broadcasts that fold into their FMAs, when X's columns are contiguous (:func:`tall16_fits`,
:data:`TALL16`). Fully connected layers at batch 1 run :func:`refnet.kernels._gemv.gemv_packed`
on these panels.

Where the time goes (1024 x K x 196, hot, one thread, ``bench/packed_kernels_ab.py --drivers``):
the k loop runs at ~4.0 ns per tile and k, 14 AVX-512 FMAs: ~110 GFLOP/s, about the machine's one
FMA per cycle (np.matmul 1024^3 measures 100 here); on top of it a fixed ~60 ns per tile (its
stores, zeroing, the block sums, the call) and the epilogue pass, together ~12% at K = 256 and
~6% at K = 1024; weights cold from memory add ~0.1 ms per 1 MB panel set. So one call runs a
panel's (half's) tiles (:data:`PACKED_RUN`) and the epilogue makes one pass (:data:`PANEL_EPI`).
Of the fixed cost the tile's 224 scalar stores were ~90-130 ns (a variant storing one 32-value sum
instead): full tiles now store by a vector transpose (:func:`_make_store`, :data:`VSTORE`), 30-50
ns less. Cold weights (session 8, ``bench/packed_kernels_ab.py --cold``: a 96 MB buffer written
before each call): with the next-panel prefetch the calls run 3-12% over hot ones (without it
13-32% at K >= 512); prefetcht0 instead of prefetcht1 4-7% less (:data:`PREFETCH_L1`), but in a
forward pass the packed 1x1s already run within ~0-8% of hot calls of the same shape, and the
switch measured as noise there.

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

__all__ = ["MR", "NR", "MRW", "NRW", "PackedGemm", "WideGemm", "WinoGemms", "pack_weights", "packed_gemm",
           "packed_gemm_epi", "packed_gemm_numpy", "epilogue_numpy", "packed_gemm_wide", "packed_gemm_wide_numpy",
           "choose", "enabled", "conv_offsets", "matrix_offsets"]

MR = 32  # weight rows (output channels) per panel: two AVX-512 vectors of float32
NR = 7  # output columns per register tile (7x7 maps: 7 tiles; 14x14: 28)

# The conv plan (kernels/conv.py) uses the packed GEMM for float32 ungrouped convs whose
# per-image GEMM has at most MAX_N columns (output pixels), at least MIN_M rows and MIN_K
# reduction length, and for 3x3 convs it would run as Winograd only up to WINO_MAX_N columns.
# Measured (bench/packgemm_layers.py, one thread, cold weights, ratio packed / before): ResNet-50
# 7x7 stage 0.73 (3x3 512, Winograd before) and 0.81-0.87 (1x1), 14x14 1x1 K >= 512 0.88-0.94
# but K = 256 1.02 and 3x3 256 1.41 (Winograd); GoogLeNet 14x14 1x1 K 480/528 0.93/0.92, 3x3
# 1.32-1.57 (Winograd), 7x7 1x1 0.83, 3x3 0.75, 5x5 0.86; SqueezeNet 13x13 1x1 512->64 0.84,
# 64->256 1.37, 3x3 1.55, conv10 512->1000 1.01. With the next-panel prefetch, K = 256 too:
# ResNet-50's 14x14 256->1024 (5 with a residual; the wide GEMM before, whose 32-column tiles
# waste 12.5% of 196 pixels) 1.24-1.38 -> 1.19-1.26 ms, whole net 0.990, inception_v1 0.986
# (bench/flag_ab.py, paired, 21 rounds).
MAX_N = 196
MIN_M = 64
MIN_K = 256
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
# 3->32 3x3 at 416x416 1.11. ... and strided 1x1 convs with K >= MIN_K on any map (ResNet-50's
# 256->512 /2 at 56x56 with its residual: 0.954 of the BLAS path, paired, cold weights; switch
# STRIDED, read at plan time).
IM2COL_MIN_K = 128
STRIDED = True
# one-thread Winograd convs: their GEMMs on packed weights (WinoGemms.fit; REFNET_PACKGEMM_WINO=0
# off at plan time, the flag read again at each call)
WINO_ENV = "REFNET_PACKGEMM_WINO"
WINO_PACKED = os.environ.get(WINO_ENV, "1").strip() not in ("0", "off", "no", "false")
# ... and from this many rows for those (one panel of MR = 32). Measured (quiet, warm, ms im2col /
# packed, one thread; two threads): GoogLeNet's inception_3a/5x5 16 -> 32 28x28 0.36 / 0.21;
# 0.52 / 0.15, inception_4a/5x5 16 -> 48 14x14 0.15 / 0.10; 0.23 / 0.08, 32 -> 32 5x5 28x28 0.72 /
# 0.39; 0.99 / 0.26, 16 -> 32 3x3/2 56x56 (K = 144) 0.16 / 0.10; 0.25 / 0.12.
IM2COL_MIN_M = 32
WIDE_MIN_N = 196
WIDE_MIN_M = 32
WIDE_MIN_K = 64
# ... and the wide packed GEMM also for stride-1 1x1 convs without a residual (WIDE_PLAIN, below;
# two rules, either takes it). Few rows / small maps: at least PLAIN_MIN_N columns and
# PLAIN_MIN_K reduction length, and at most PLAIN_FEW_M rows, or at most PLAIN_MAX_M rows
# on at most PLAIN_MAX_N columns (SqueezeNet's squeeze and expand1x1 convs): its
# epilogue in the stores saves the second pass over C, and on few rows the BLAS's packing is much
# of its call. Measured in the net (one thread, paired per-step medians: bench/steps_ab.py
# squeezenet refnet.kernels._packgemm:WIDE_PLAIN), us BLAS + epilogue -> wide: SqueezeNet
# 64->16 55x55 127 -> 96, 128->16 55x55 190 -> 145, 128->32 27x27 93 -> 73, 256->32 27x27
# 167 -> 126, 256->48 13x13 73 -> 59, 384->48 98 -> 79, 48->192 13x13 57 -> 50, 64->256 89 -> 78;
# 16->64 55x55 (K = 16) 111 -> 114 while each step still went through the plan's checks, with
# the lean steps of kernels/_leanconv.py 148-158 -> 102-103 (fire2), 117-119 -> 102 (fire3)
# (``--values 32,16`` on PLAIN_MIN_K); ResNet-50 256->64 56x56 1323 -> 1180, 512->128 28x28
# 1075 -> 997, 512->256 28x28 2179 -> 2032, but 64->256 56x56 1296 -> 1353 (the BLAS is good at
# many rows, a short K and a wide map; noise there +-60 us).
PLAIN_MIN_N = 169
PLAIN_MIN_K = 16
PLAIN_FEW_M = 64
PLAIN_MAX_M = 256
PLAIN_MAX_N = 1024
# A/B switches: REFNET_PACKGEMM=0 turns the packed paths off (plans made afterwards),
# REFNET_PACKGEMM_LARGE=0 only their use on large maps (the wide GEMM, im2col convs > MAX_N)
ENV = "REFNET_PACKGEMM"
LARGE_ENV = "REFNET_PACKGEMM_LARGE"
# REFNET_PACKGEMM_PREFETCH=0: the packed GEMM does not prefetch its next weight panel (read at
# each call from this flag)
PREFETCH_ENV = "REFNET_PACKGEMM_PREFETCH"

# stand-ins until numba loads; then the intrinsics: a stack array, and software prefetches of
# one cache line (hints) for reading and for writing (prefetchw: the line arrives ready to be
# written), and for reading into all cache levels (_prefetch1: locality 3, prefetcht0; the others
# locality 2, prefetcht1). With NUMBA_DISABLE_JIT=1: NumPy arrays and no-ops, so the kernel
# bodies run as Python.
_stack: Any = None
_carray: Any = None
_prefetch: Any = None
_prefetchw: Any = None
_prefetch1: Any = None
_store7: Any = None
_store13: Any = None
_row32: Any = None
_row16: Any = None


@on_numba_load
def _define_intrinsics(numba: Any) -> None:
    global _stack, _carray, _prefetch, _prefetchw, _prefetch1, _store7, _store13, _row32, _row16
    if numba.config.DISABLE_JIT:
        _stack = lambda n: np.zeros(n, np.float32)  # noqa: E731
        _carray = lambda a, shape: a.reshape(shape)  # noqa: E731
        _prefetch = _prefetchw = _prefetch1 = lambda a, i: None  # noqa: E731
        _store7 = _store13 = _store_py
        _row32 = lambda cf, o, s, b, sl: _row_py(cf, o, s[:32], b, sl)  # noqa: E731
        _row16 = lambda cf, o, s, b, sl: _row_py(cf, o, s[:16], b, sl)  # noqa: E731
        return
    from llvmlite import ir
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

    def make_prefetch(rw: int, locality: int = 2) -> Any:
        @intrinsic
        def prefetch(typingctx: Any, arr: Any, idx: Any) -> Any:
            """Prefetch (llvm.prefetch, the locality given) the line holding ``arr[idx]`` (a 1-D
            array, ``idx`` an integer; not bounds-checked: a hint)."""
            if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
                return None

            def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
                ary = context.make_array(sig.args[0])(context, builder, args[0])
                ptr = builder.gep(ary.data, [args[1]])
                i32 = ir.IntType(32)
                fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
                fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
                builder.call(fn, [ptr, i32(rw), i32(locality), i32(1)])
                return context.get_dummy_value()

            return types.void(arr, idx), codegen

        return prefetch

    _stack, _carray = stack, numba.carray
    _prefetch, _prefetchw, _prefetch1 = make_prefetch(0), make_prefetch(1), make_prefetch(0, 3)
    _store7 = _make_store(intrinsic, ir, cgutils, types, 32, 7)
    _store13 = _make_store(intrinsic, ir, cgutils, types, 16, 13)
    _row32 = _make_row(intrinsic, ir, cgutils, types, 32)
    _row16 = _make_row(intrinsic, ir, cgutils, types, 16)


def _row_py(cf: np.ndarray, o: int, s: np.ndarray, b: np.float32, sl: np.float32) -> None:
    """What :func:`_row32` / ``_row16`` do, in NumPy (NUMBA_DISABLE_JIT; ``s`` cut to the width)."""
    v = s + b
    cf[int(o):int(o) + s.size] = np.where(v > 0, v, v * sl)


def _make_row(intrinsic: Any, ir: Any, cgutils: Any, types: Any, width: int) -> Any:
    """The intrinsic ``row(cf, o, s, b, sl)``: cf[o + j] = v if v > 0 else v * sl, v = s[j] + b,
    for j < ``width`` (a stack array of a register tile's row): one vector load, add, compare,
    multiply, select and one vector store. (Written as a numba loop the 32 lanes were unrolled
    into 32 scalar stores instead.) NaN stays NaN (an ordered compare: v * sl)."""
    f32 = ir.FloatType()
    vt = ir.VectorType(f32, width)

    def splat(b: Any, x: Any) -> Any:
        v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), width),
                                                                             [0] * width))

    @intrinsic
    def row(typingctx: Any, cf: Any, o: Any, s: Any, b: Any, sl: Any) -> Any:
        if not (isinstance(cf, types.Array) and isinstance(s, types.Array) and isinstance(o, types.Integer)
                and b == types.float32 and sl == types.float32):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            cfa = context.make_array(sig.args[0])(context, builder, args[0])
            sa = context.make_array(sig.args[2])(context, builder, args[2])
            ld = builder.load(builder.bitcast(sa.data, vt.as_pointer()))
            ld.align = 4
            v = builder.fadd(ld, splat(builder, args[3]))
            neg = builder.fmul(v, splat(builder, args[4]))
            pos = builder.fcmp_ordered(">", v, ir.Constant(vt, [0.0] * width))
            out = builder.select(pos, v, neg)
            ptr = builder.bitcast(builder.gep(cfa.data, [args[1]]), vt.as_pointer())
            st = builder.store(out, ptr)
            st.align = 4
            return context.get_dummy_value()

        return types.void(cf, o, s, b, sl), codegen

    return row


def _store_py(cf: np.ndarray, o0: int, n: int, *cols: np.ndarray) -> None:
    """What :func:`_store7` / ``_store13`` do, in NumPy (NUMBA_DISABLE_JIT)."""
    for j, col in enumerate(cols):
        cf[int(o0) + j + np.arange(col.size) * int(n)] = col


def _store_plan(nrows: int, pcols: int) -> tuple[list, list]:
    """The shuffle rounds that transpose ``pcols`` vectors of ``nrows`` lanes (vector j: column j,
    lane r: row r) into rows of ``pcols`` lanes: per round, (output k, inputs x, y, lane mask)
    (round t interleaves groups of 2^t lanes of vector pairs, each pair's half h of the rows into
    output h * pcols / 2 + pair); and for every final vector the rows of its chunks of ``pcols``
    lanes, in order. Worked out by following (row, column) labels through the rounds."""
    labels = [np.arange(nrows) * pcols + j for j in range(pcols)]
    rounds, g = [], 1
    while g < pcols:
        step, new = [], [labels[0]] * pcols
        for h in range(2):
            mask = [x for i in range(h * nrows // 2 // g, (h + 1) * nrows // 2 // g)
                    for x in (*range(g * i, g * i + g), *range(nrows + g * i, nrows + g * i + g))]
            for a in range(pcols // 2):
                new[h * (pcols // 2) + a] = np.concatenate([labels[2 * a], labels[2 * a + 1]])[mask]
                step.append((h * (pcols // 2) + a, 2 * a, 2 * a + 1, mask))
        rounds.append(step)
        labels, g = new, 2 * g
    rows = []
    for v in labels:
        chunks = v.reshape(-1, pcols)
        if not all((c == c[0] + np.arange(pcols)).all() and c[0] % pcols == 0 for c in chunks):
            raise AssertionError("not a transpose")  # (a bug here, not an input error)
        rows.append([int(c[0]) // pcols for c in chunks])
    return rounds, rows


def _make_store(intrinsic: Any, ir: Any, cgutils: Any, types: Any, nrows: int, ncols: int) -> Any:
    """The intrinsic ``store(cf, o0, n, s0, ..., s{ncols-1})``: cf[o0 + r n + j] = s_j[r] for r <
    nrows, j < ncols (a full register tile's columns, nrows floats each, into C's rows: _store7
    for the 32 x 7 tiles, _store13 for the 16 x 13 ones) as vector code: the columns (padded to 8
    or 16 with undefined ones) transposed by rounds of shuffles (:func:`_store_plan`: 3 rounds
    of 8 shuffles of 32 lanes; 4 of 16 of 16 lanes), each row stored by one masked store of
    ``ncols`` lanes (a store of all would write the next tile's first columns, which another
    thread may own). The scalar stores (lane extracts) cost ~90 ns per 32 x 7 tile."""
    pcols = 8 if ncols <= 8 else 16
    rounds, rows = _store_plan(nrows, pcols)
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vr, vp, mp = ir.VectorType(f32, nrows), ir.VectorType(f32, pcols), ir.VectorType(ir.IntType(1), pcols)

    def shuf(b: Any, x: Any, y: Any, idx: list) -> Any:
        return b.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, len(idx)), idx))

    def typer(cf: Any, o0: Any, n: Any, cols: tuple) -> Any:
        if not all(isinstance(a, types.Array) for a in (cf, *cols)):
            return None
        if not isinstance(o0, types.Integer) or not isinstance(n, types.Integer):
            return None
        return types.void(cf, o0, n, *cols)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        cfa = context.make_array(sig.args[0])(context, builder, args[0])
        v = []
        for j in range(ncols):
            col = context.make_array(sig.args[3 + j])(context, builder, args[3 + j])
            ld = builder.load(builder.bitcast(col.data, vr.as_pointer()))
            ld.align = 4
            v.append(ld)
        v += [ir.Constant(vr, ir.Undefined)] * (pcols - ncols)
        for step in rounds:
            new = list(v)
            for k, x, y, mask in step:
                new[k] = shuf(builder, v[x], v[y], mask)
            v = new
        o0v = builder.sext(args[1], i64) if args[1].type.width < 64 else args[1]
        nv = builder.sext(args[2], i64) if args[2].type.width < 64 else args[2]
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [vp, vp.as_pointer(), i32,
                                                                                             mp]),
                                            f"llvm.masked.store.v{pcols}f32.p0")
        mask = ir.Constant(mp, [1] * ncols + [0] * (pcols - ncols))
        for vec, rs in zip(v, rows):
            for t, r in enumerate(rs):
                off = builder.add(o0v, builder.mul(nv, ir.Constant(i64, r)))
                ptr = builder.bitcast(builder.gep(cfa.data, [off]), vp.as_pointer())
                row = shuf(builder, vec, vec, list(range(pcols * t, pcols * t + pcols)))
                builder.call(fn, [row, ptr, i32(4), mask])
        return context.get_dummy_value()

    # (an intrinsic takes its arguments one by one: its signature written out for ncols)
    names = ", ".join(f"c{j}" for j in range(ncols))
    ns: dict = {}
    exec(f"def store(typingctx, cf, o0, n, {names}):\n    sig = typer(cf, o0, n, ({names},))\n"  # noqa: S102
         f"    return None if sig is None else (sig, codegen)\n", {"typer": typer, "codegen": codegen}, ns)
    return intrinsic(ns["store"])


_fast = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"contract"}, "boundscheck": False})


@_fast
def _tile(wp, xf, kofs, coffs, p, nc0, nc1, cf, n, rows, wpf, pfo, share, pfs, pf, vs=True):
    """(W panel p) @ X[:, j] for the columns j in [nc0, nc1), X[k, j] = xf[kofs[k] + coffs[j]],
    in register tiles of 7 columns from nc0, one after another (a last partial tile, past n,
    repeats column n - 1: computed, not stored), stored to cf[(32 p + r) * n + j] for the
    first ``rows`` rows (cf: C flattened, row length n); see the module docstring for why it
    is written out like this. With ``pf``, step k of the i-th tile also prefetches wpf[pfo +
    i * share + (k * pfs >> 16)] and 16 elements on (wpf: wp flattened; pfs a 16.16
    fixed-point step: a share of the next panel, :func:`packed_gemm`): pf 1 into L2
    (prefetcht1), 2 into all levels (prefetcht0, :data:`PREFETCH_L1`). One call per run of
    tiles, not per tile (a call cost about as much as 16-50 steps k: :data:`PACKED_RUN`).
    (Long: the tile and the loop over tiles stay one body, so that LLVM keeps the 14
    accumulators in registers; the stack arrays once, outside the loop.)"""
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
    kdim = wp.shape[1]
    last = n - 1
    for n0 in range(nc0, nc1, 7):
        c0 = coffs[n0]
        c1 = coffs[min(n0 + 1, last)]
        c2 = coffs[min(n0 + 2, last)]
        c3 = coffs[min(n0 + 3, last)]
        c4 = coffs[min(n0 + 4, last)]
        c5 = coffs[min(n0 + 5, last)]
        c6 = coffs[min(n0 + 6, last)]
        pft = pfo + np.uint64((n0 - nc0) // 7) * share
        for lane in range(32):
            s0[lane] = 0.0
            s1[lane] = 0.0
            s2[lane] = 0.0
            s3[lane] = 0.0
            s4[lane] = 0.0
            s5[lane] = 0.0
            s6[lane] = 0.0
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
                if pf == 2:  # (PREFETCH_L1)
                    q = pft + ((k * pfs) >> np.uint64(16))
                    _prefetch1(wpf, q)
                    _prefetch1(wpf, q + np.uint64(16))
                elif pf:
                    q = pft + ((k * pfs) >> np.uint64(16))
                    _prefetch(wpf, q)
                    _prefetch(wpf, q + np.uint64(16))
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
        # transposing loop cost 5-15% at K = 256..512); full tiles with ``vs`` by _store7 (VSTORE)
        cols = min(7, n - n0)
        o0 = p * 32 * n + n0
        if vs and cols == 7 and rows == 32:
            _store7(cf, o0, n, s0, s1, s2, s3, s4, s5, s6)
            continue
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
def _row_epi(cf, rf, o0, o1, bm, hasres, act, s, six):
    """cf[o0:o1] = act((cf + bm) [+ rf[o0:o1]]): act 1 leaky ReLU / PReLU (slope s), 2 ReLU6
    (``six`` = 6), 0 none; NaN stays NaN (the conv plan's epilogue passes, one loop per case
    so that each vectorises)."""
    zero = six - six
    if hasres:
        for o in range(o0, o1):
            cf[o] = (cf[o] + bm) + rf[o]
        bm = zero
    if act == 1:
        for o in range(o0, o1):
            v = cf[o] + bm
            cf[o] = v if v > zero else v * s
    elif act == 2:
        for o in range(o0, o1):
            v = cf[o] + bm
            cf[o] = zero if v < zero else (six if v > six else v)
    elif not hasres:
        for o in range(o0, o1):
            cf[o] = cf[o] + bm


@_fast
def _prefetch_span(af, o0, o1):
    """Prefetch the lines of af[o0:o1] (hints; af 1-D)."""
    for o in range(np.uint64(o0), np.uint64(o1), np.uint64(16)):
        _prefetch(af, o)


@_fast
def _panel_epi(cf, rf, r0, r1, n, bias, hasres, act, slope, six, one):
    """Rows r0 .. r1 - 1 of C (cf, row length n): :func:`_row_epi` on each row, or with ``one``
    the same results bit for bit with the residual in the same loop as the activation (one pass
    over the rows, not two: :data:`PANEL_EPI`)."""
    zero = six - six
    for r in range(r0, r1):
        o0 = np.uint64(r * n)
        o1 = np.uint64((r + 1) * n)
        bm = bias[r]
        s = slope[r]
        if not hasres or not one:
            _row_epi(cf, rf, o0, o1, bm, hasres, act, s, six)
        elif act == 1:
            for o in range(o0, o1):
                v = ((cf[o] + bm) + rf[o]) + zero  # (+ 0: as _row_epi's second pass, -0 -> +0)
                cf[o] = v if v > zero else v * s
        elif act == 2:
            for o in range(o0, o1):
                v = ((cf[o] + bm) + rf[o]) + zero
                cf[o] = zero if v < zero else (six if v > six else v)
        else:
            for o in range(o0, o1):
                cf[o] = (cf[o] + bm) + rf[o]


@_fast
def packed_gemm(wp, xf, kofs, coffs, c, prefetch=False):
    """:func:`packed_gemm_epi` without the epilogue: c = W @ X."""
    cf = c.reshape(c.size)
    packed_gemm_epi(wp, xf, kofs, coffs, c, prefetch, False, cf, cf, False, 0, cf, np.float32(6))


@_fast
def packed_gemm_epi(wp, xf, kofs, coffs, c, prefetch, epi, bias, rf, hasres, act, slope, six, step=0,
                    pepi=False, pfr=False, vs=True):
    """c (M, N) = W @ X with W packed by :func:`pack_weights` into wp (P, K, MR), P * MR >= M,
    and X[k, j] = xf[kofs[k] + coffs[j]] (xf 1-D: a matrix, or an image whose im2col this
    reads in place, :func:`conv_offsets`); c C-contiguous. A last partial tile of columns
    repeats its last column (computed, not stored). With ``prefetch`` (True or 1; 2: into L1,
    :data:`PREFETCH_L1`), the column tiles of panel p prefetch panel p + 1, each tile an equal
    share (its weights come from memory, not the cache, in a forward pass). With ``epi``:
    c = act((W @ X + bias[:, None]) [+ R]), each row panel's rows right after its tiles stored
    them (``bias`` and ``slope`` per row, ``rf`` R flattened, read if ``hasres``; act 0 none,
    1 leaky ReLU / PReLU, 2 ReLU6 with ``six`` = 6). ``step``: columns per call of the tile
    function, a multiple of 7 (0: the whole panel's; 7: one call per tile, A/B only,
    :data:`PACKED_RUN`). ``pepi``: the epilogue by
    :func:`_panel_epi` (:data:`PANEL_EPI`; same results). ``pfr``: each row panel first
    prefetches its rows of R (:data:`RES_PREFETCH`). ``vs``: full tiles' stores as vector code
    (:data:`VSTORE`; same results)."""
    m, n = c.shape
    cf = c.reshape(m * n)
    npan, kdim = wp.shape[0], wp.shape[1]
    step = step if step > 0 else n
    wpf = wp.reshape(npan * kdim * 32)
    ntiles = (n + 6) // 7
    share = kdim * 32 // ntiles  # elements of the next panel each tile prefetches
    pfs = np.uint64((32 << 16) // ntiles)
    for p in range(npan):
        r0 = p * 32
        rows = min(32, m - r0)
        pf = np.int64(prefetch) if p + 1 < npan else np.int64(0)  # (True: 1)
        nxt = (p + 1) * kdim * 32
        if epi and hasres and pfr:  # (R read by the epilogue after the tiles: from memory, or L3)
            _prefetch_span(rf, r0 * n, (r0 + rows) * n)
        for n0 in range(0, n, step):
            _tile(wp, xf, kofs, coffs, p, n0, min(n, n0 + step), cf, n, rows, wpf,
                  np.uint64(nxt + (n0 // 7) * share), np.uint64(share), pfs, pf, vs)
        if epi:  # the panel's rows, still in the cache
            _panel_epi(cf, rf, r0, r0 + rows, n, bias, hasres, act, slope, six, pepi)



@_fast
def _tile16(wp, xf, kofs, coffs, p, h, t0, t1, cf, n, rows, wpf, pfo, share, pfs, pf, vs=True):  # noqa: PLR0915
    """Rows 16 h .. 16 h + 15 of W panel p @ X[:, j] for the 13 contiguous columns j from 13 t of
    each tile t in [t0, t1), X[k, j] = xf[kofs[k] + coffs[13 t] + j - 13 t], stored to cf[(32 p +
    16 h + r) * n + j] for the first ``rows`` of those rows (``pf`` etc. as :func:`_tile`; tile t
    prefetches from pfo + t * share). One weight vector per k and 13 accumulators (their 13 block
    sums also in registers): each x is used once, so its broadcast folds into its FMA (no
    register), and the columns share one base address. One call per run of tiles (PACKED_RUN).
    (Long: the 13 columns written out, as in _tile, and the loop over tiles in the same body.)"""
    s0 = _carray(_stack(16), (16,))
    s1 = _carray(_stack(16), (16,))
    s2 = _carray(_stack(16), (16,))
    s3 = _carray(_stack(16), (16,))
    s4 = _carray(_stack(16), (16,))
    s5 = _carray(_stack(16), (16,))
    s6 = _carray(_stack(16), (16,))
    s7 = _carray(_stack(16), (16,))
    s8 = _carray(_stack(16), (16,))
    s9 = _carray(_stack(16), (16,))
    s10 = _carray(_stack(16), (16,))
    s11 = _carray(_stack(16), (16,))
    s12 = _carray(_stack(16), (16,))
    a0 = _carray(_stack(16), (16,))
    a1 = _carray(_stack(16), (16,))
    a2 = _carray(_stack(16), (16,))
    a3 = _carray(_stack(16), (16,))
    a4 = _carray(_stack(16), (16,))
    a5 = _carray(_stack(16), (16,))
    a6 = _carray(_stack(16), (16,))
    a7 = _carray(_stack(16), (16,))
    a8 = _carray(_stack(16), (16,))
    a9 = _carray(_stack(16), (16,))
    a10 = _carray(_stack(16), (16,))
    a11 = _carray(_stack(16), (16,))
    a12 = _carray(_stack(16), (16,))
    for t in range(t0, t1):
        c0 = coffs[t * 13]
        o0 = (p * 32 + h * 16) * n + t * 13
        pft = pfo + np.uint64(t) * share
        for lane in range(16):
            s0[lane] = 0.0
            s1[lane] = 0.0
            s2[lane] = 0.0
            s3[lane] = 0.0
            s4[lane] = 0.0
            s5[lane] = 0.0
            s6[lane] = 0.0
            s7[lane] = 0.0
            s8[lane] = 0.0
            s9[lane] = 0.0
            s10[lane] = 0.0
            s11[lane] = 0.0
            s12[lane] = 0.0
        kdim = wp.shape[1]
        l0 = h * 16
        for kb in range(0, kdim, 128):
            for lane in range(16):
                a0[lane] = 0.0
                a1[lane] = 0.0
                a2[lane] = 0.0
                a3[lane] = 0.0
                a4[lane] = 0.0
                a5[lane] = 0.0
                a6[lane] = 0.0
                a7[lane] = 0.0
                a8[lane] = 0.0
                a9[lane] = 0.0
                a10[lane] = 0.0
                a11[lane] = 0.0
                a12[lane] = 0.0
            for k in range(np.uint64(kb), np.uint64(min(kdim, kb + 128))):
                if pf == 2:  # (PREFETCH_L1)
                    _prefetch1(wpf, pft + ((k * pfs) >> np.uint64(16)))
                elif pf:
                    _prefetch(wpf, pft + ((k * pfs) >> np.uint64(16)))
                wk = wp[p, k, l0:l0 + 16]
                ko = kofs[k] + c0
                x0 = xf[ko + np.uint64(0)]
                x1 = xf[ko + np.uint64(1)]
                x2 = xf[ko + np.uint64(2)]
                x3 = xf[ko + np.uint64(3)]
                x4 = xf[ko + np.uint64(4)]
                x5 = xf[ko + np.uint64(5)]
                x6 = xf[ko + np.uint64(6)]
                x7 = xf[ko + np.uint64(7)]
                x8 = xf[ko + np.uint64(8)]
                x9 = xf[ko + np.uint64(9)]
                x10 = xf[ko + np.uint64(10)]
                x11 = xf[ko + np.uint64(11)]
                x12 = xf[ko + np.uint64(12)]
                for lane in range(16):
                    wl = wk[lane]
                    a0[lane] += x0 * wl
                    a1[lane] += x1 * wl
                    a2[lane] += x2 * wl
                    a3[lane] += x3 * wl
                    a4[lane] += x4 * wl
                    a5[lane] += x5 * wl
                    a6[lane] += x6 * wl
                    a7[lane] += x7 * wl
                    a8[lane] += x8 * wl
                    a9[lane] += x9 * wl
                    a10[lane] += x10 * wl
                    a11[lane] += x11 * wl
                    a12[lane] += x12 * wl
            for lane in range(16):
                s0[lane] += a0[lane]
                s1[lane] += a1[lane]
                s2[lane] += a2[lane]
                s3[lane] += a3[lane]
                s4[lane] += a4[lane]
                s5[lane] += a5[lane]
                s6[lane] += a6[lane]
                s7[lane] += a7[lane]
                s8[lane] += a8[lane]
                s9[lane] += a9[lane]
                s10[lane] += a10[lane]
                s11[lane] += a11[lane]
                s12[lane] += a12[lane]
        if vs and rows == 16:  # (VSTORE)
            _store13(cf, o0, n, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12)
            continue
        for r in range(rows):
            o = o0 + r * n
            cf[o + 0] = s0[r]
            cf[o + 1] = s1[r]
            cf[o + 2] = s2[r]
            cf[o + 3] = s3[r]
            cf[o + 4] = s4[r]
            cf[o + 5] = s5[r]
            cf[o + 6] = s6[r]
            cf[o + 7] = s7[r]
            cf[o + 8] = s8[r]
            cf[o + 9] = s9[r]
            cf[o + 10] = s10[r]
            cf[o + 11] = s11[r]
            cf[o + 12] = s12[r]

@_fast
def packed_gemm16_epi(wp, xf, kofs, coffs, c, prefetch, epi, bias, rf, hasres, act, slope, six, pepi=False,
                      pfr=False, step=0, vs=True, vs16=False):
    """:func:`packed_gemm_epi` (same arguments, same results bit for bit: each output is the
    same chain of blocked sums) for X whose columns are contiguous (coffs[j] = coffs[0] + j:
    1x1 stride-1 convs, matrices): each panel's columns in tiles of 16 rows x :data:`NC16`
    (:func:`_tile16`, both halves of the panel), the last n % NC16 columns on :func:`_tile`
    (the 16-row tiles read the same packed panels). ``step``: 16-row tiles per call (0: a
    panel half's; 1: one call per tile, both halves, A/B only, :data:`PACKED_RUN`). ``vs``, ``vs16``:
    the full 32 x 7, 16 x 13 tiles' stores as vector code (:data:`VSTORE`, :data:`VSTORE16`)."""
    m, n = c.shape
    cf = c.reshape(m * n)
    npan, kdim = wp.shape[0], wp.shape[1]
    wpf = wp.reshape(npan * kdim * 32)
    full = n // 13  # (NC16)
    step = step if step > 0 else max(full, 1)
    ntiles = full + (n - full * 13 + 6) // 7
    share = kdim * 32 // ntiles  # elements of the next panel each tile prefetches
    pfs = np.uint64((32 << 16) // ntiles)
    for p in range(npan):
        r0 = p * 32
        rows = min(32, m - r0)
        pf = np.int64(prefetch) if p + 1 < npan else np.int64(0)  # (True: 1)
        nxt = (p + 1) * kdim * 32
        if epi and hasres and pfr:  # (R read by the epilogue after the tiles: from memory, or L3)
            _prefetch_span(rf, r0 * n, (r0 + rows) * n)
        for t0 in range(0, full, step):
            for h in range(2 if rows > 16 else 1):
                _tile16(wp, xf, kofs, coffs, p, h, t0, min(full, t0 + step), cf, n, min(16, rows - 16 * h), wpf,
                        np.uint64(nxt + h * (share // 2)), np.uint64(share), pfs, pf, vs16)
        if full * 13 < n:  # the last n % 13 columns
            _tile(wp, xf, kofs, coffs, p, full * 13, n, cf, n, rows, wpf, np.uint64(nxt + full * share),
                  np.uint64(share), pfs, pf, vs)
        if epi:  # the panel's rows, still in the cache
            _panel_epi(cf, rf, r0, r0 + rows, n, bias, hasres, act, slope, six, pepi)


# whether PackedGemm runs the 16 x NC16 tiles (packed_gemm16_epi: same results bit for bit) on
# contiguous columns (1x1 stride-1 convs), n a multiple of NC16 and >= TALL16_MIN_N (13 x 13 maps,
# where 32 x 7 tiles compute 175 columns for 169; read at each call; REFNET_PACKGEMM_16=0 off).
# Measured (one thread, 40 paired calls, minimum ms 32 x 7 -> 16 x 13, hot / cold weights, load
# ~1): SqueezeNet conv10 1000 x 512 x 169 1.74 -> 1.61 / 1.91 -> 1.76 (16 x 26 tiles and the last
# 13 columns on 32 x 7 tiles: 1.67 / 1.84; 16 x 26 tiles on 7 x 7 and 14 x 14 maps, the last tile
# overlapping the one before: 0.96-1.04x the 32 x 7 tiles there, which fit those maps exactly).
# whether a call of the 32 x 7 (16 x 13) tile function runs over a whole row panel's (half's)
# column tiles (read at each call; False: one call per tile, as before -- A/B only).
PACKED_RUN = True
# whether the packed GEMMs' epilogue runs one call per row panel with the residual and the
# activation in one loop (_panel_epi; read at each call; False: _row_epi per row, two passes
# with a residual -- A/B only). Tried and dropped: the epilogue inside the 32 x 7 tiles (bias
# and activation on the accumulators, the residual as each element is stored): 1.02-1.10x the
# pass with a residual (hot), 1.00 without (paired kernel calls, 40 rounds).
PANEL_EPI = True
# whether each row panel of the packed GEMMs with a residual first prefetches its rows of R (read
# at each call; off: not shown to help yet). Measured: paired kernel calls with R and the weights
# cold (40 rounds) 0.98-1.01; ResNet-50 1 thread per step (bench/steps_ab.py resnet50
# refnet.kernels._packgemm:RES_PREFETCH --rounds 21, load 3.4) pass CPU 0.999 (0.93-1.17): noise.
RES_PREFETCH = False
# whether the packed GEMMs' next-panel prefetch (PREFETCH) brings the lines into all cache levels
# (prefetcht0, locality 3) rather than L2 (prefetcht1, as before); read at each call. Measured
# (paired kernel calls, one thread, weights cold: a 96 MB buffer written before each call, ReLU,
# medians prefetcht0 / prefetcht1, 40 rounds): 1024x256x196 0.95, 256x1024x196 0.96, 2048x512x49
# 0.96, 512x2048x49 0.95; the cold calls then within 1-6% of hot ones (before 5-12%). Tried:
# prefetchnta (the same on K <= 512, 1.14x on K = 2048: the lines leave before the panel's later
# tiles), one line per k step (same), the panel after next (same), panel 0 up front (same).
# But in the net (ResNet-50, 1 thread, load ~2.5): bench/steps_ab.py resnet50
# refnet.kernels._packgemm:PREFETCH_L1 --rounds 31: sum of the steps' medians B/A 0.999, of their
# minimums 1.000; pass CPU 1.001 (0.84..1.21), 0.996 (21 rounds); bench/flag_ab.py (15 rounds) CPU
# 1.015 (0.96..1.12), SqueezeNet 0.981 (0.87..1.02): noise. In a pass the packed 1x1s already run
# within ~0-8% of a hot call of the same shape (bench/layers_vs_ort.py: 1024->256 14x14 0.96-1.00 ms,
# hot 0.95-1.05; 2048->512 7x7 1.00-1.06, hot 0.96-0.99): cold weights cost less there than the
# kernel-level flush suggests. Off until a pass shows a gain.
PREFETCH_L1 = False
# whether the 32 x 7 tiles store full tiles (32 rows, 7 columns) by the vector transpose _store7
# rather than 224 scalar stores (read at each call; same results). Measured (hot, one thread,
# paired kernel calls, 40 rounds, the tiles alone; a variant storing one 32-row sum per tile: the
# stores' cost ~90-130 ns per tile): saves 30-50 ns per tile, 1024x128x196 0.92, 1024x256x196
# 0.97, 2048x512x49 0.99, 1000x512x169 0.98, 1024x1024x196 1.00. Tried: prefetchw of the tile's
# rows of C before its k loop (no change), a branch for full tiles with scalar stores (0.99-1.01).
# In the net (ResNet-50, 1 thread, load 1.5-2; bench/steps_ab.py resnet50
# refnet.kernels._packgemm:VSTORE --rounds 31 --show -1, the medians of the 25 packed steps that
# bench/layers_vs_ort.py lists, summed): 0.989, 0.993, 0.988 (the other steps 1.005, 1.018, 1.004:
# the noise); bench/flag_ab.py resnet50 (15 rounds) pass CPU 0.989 (0.89..1.16); SqueezeNet 0.999
# (its conv10 on the 16 x 13 tiles: unchanged).
VSTORE = True
# ... and the 16 x 13 tiles by _store13 (read at each call; same results). Off: SqueezeNet's conv10
# 1000x512x169 (cold weights, 40-60 paired rounds) 1.008, 0.994, 1.033 (minimums 1.01 worse).
VSTORE16 = False
TALL16_ENV = "REFNET_PACKGEMM_16"
TALL16 = os.environ.get(TALL16_ENV, "1").strip() not in ("0", "off", "no", "false")
NC16 = 13
TALL16_MIN_N = 26


def tall16_fits(coffs: np.ndarray) -> bool:
    """Whether :class:`PackedGemm` runs :func:`packed_gemm16_epi` on columns ``coffs`` (increasing,
    as :func:`matrix_offsets` and :func:`conv_offsets` give them; contiguous when the last is the
    first + n - 1): :data:`TALL16` and the rules above."""
    n = len(coffs)
    return TALL16 and n >= TALL16_MIN_N and n % NC16 == 0 and int(coffs[n - 1]) - int(coffs[0]) == n - 1


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

    def offsets(self, xf: np.ndarray, kofs: np.ndarray, coffs: np.ndarray, c: np.ndarray,
                epi: tuple | None = None) -> None:
        """... with ``epi`` = (bias, res, act, slope, six): c = act((W @ X + bias) [+ res])
        (res None or of c's shape, C-contiguous; as :func:`packed_gemm_epi`)."""
        if MODE.on or load_numba().config.DISABLE_JIT:  # (the kernel as Python: tests only)
            packed_gemm_numpy(self.wp, xf, kofs, coffs, c)
            if epi is not None:
                epilogue_numpy(c, *epi)
        else:
            cf = c.reshape(c.size)
            bias, res, act, slope, six = epi if epi is not None else (cf, None, 0, cf, np.float32(6))
            rf = cf if res is None else res.reshape(res.size)
            pf = (2 if PREFETCH_L1 else 1) if PREFETCH else 0
            if tall16_fits(coffs):
                packed_gemm16_epi(self.wp, xf, kofs, coffs, c, pf, epi is not None, bias, rf, res is not None,
                                  act, slope, six, PANEL_EPI, RES_PREFETCH, 0 if PACKED_RUN else 1, VSTORE,
                                  VSTORE16)
            else:
                packed_gemm_epi(self.wp, xf, kofs, coffs, c, pf, epi is not None, bias, rf, res is not None, act,
                                slope, six, 0 if PACKED_RUN else NR, PANEL_EPI, RES_PREFETCH, VSTORE)


class WinoGemms:
    """``g(v, m)``: m[e] = u[e] @ v[e] for the transformed elements of a Winograd conv, u
    (nk, M, K) float32 packed once here, one :class:`PackedGemm` each."""

    def __init__(self, u: np.ndarray) -> None:
        self.gemms = [PackedGemm(ue) for ue in u]

    @classmethod
    def fit(cls, u: np.ndarray, dtype: np.dtype, tiles: int) -> WinoGemms | None:
        """The packed GEMMs for u (nk, M, K) where they measured faster than np.matmul: F(2,3)
        (nk = 16), float32, at least MIN_M rows and MIN_K input channels, at most MAX_N tiles
        per image (ResNet-50's 14x14 256 -> 256: 16 GEMMs 256 x 256 x 49, 1.21 vs 1.56 ms, hot;
        the conv 1.9-2.0 -> 1.45-1.6 ms in the net, whole net 0.964 (process CPU time, paired,
        21 rounds); F(4,3)'s 36 x 128 x 128 x 49 lost: 0.81 vs 0.58); else None
        (``$REFNET_PACKGEMM`` 0, or WINO_PACKED False, at plan time)."""
        nk, m, k = u.shape
        if (not enabled() or not WINO_PACKED or nk != 16 or np.dtype(dtype) != np.float32 or m < MIN_M or k < MIN_K
                or tiles > MAX_N):
            return None
        return cls(u)

    def __call__(self, v: np.ndarray, m: np.ndarray) -> None:
        for e, g in enumerate(self.gemms):
            g(v[e], m[e])


def enabled(env: str = ENV) -> bool:
    """Whether new plans may choose the packed GEMMs (``$REFNET_PACKGEMM`` not 0; ``env`` =
    :data:`LARGE_ENV`: on large maps)."""
    return os.environ.get(env, "1").strip() not in ("0", "off", "no", "false")


# the prefetches, read at each call (A/B: bench/flag_ab.py): the packed GEMM's next weight panel;
# the wide GEMM's rows of C and R before a tile (WIDE_PREFETCH) and X's next column tile on the
# first row panel over a column block (WIDE_PREFETCH_X)
PREFETCH = enabled(PREFETCH_ENV)
WIDE_PREFETCH = enabled(PREFETCH_ENV)
WIDE_PREFETCH_X = enabled(PREFETCH_ENV)
# whether the wide GEMM also takes the stride-1 1x1 convs without a residual (both rules: the
# few-row one of PLAIN_* above, and this one) that have at least WIDE_PLAIN_MIN_M rows, on maps
# of WIDE_PLAIN_MIN_N..WIDE_PLAIN_MAX_N pixels (read at plan time;
# REFNET_PACKGEMM_WIDE_PLAIN=0 off; MobileNet-SSD's 75x75 and 19x19 pointwise convs measured
# 1.01-1.02 of the BLAS path in the whole net, load 3-4, without them 0.994). With the prefetches
# above, ResNet-50 1 thread per layer (bench/layers_vs_ort.py, medians of 15): 56x56 256->64
# 1.28 -> 1.04 ms, 256->128 2.21 -> 1.99, 28x28 512->128 1.08-1.12 -> 0.99, 512->256 2.09 -> 1.97
# (BLAS + epilogue pass before); whole net paired 0.977-0.99 (flag_ab, noisy); not SqueezeNet's
# 32-row squeezes (1.02, noise-level)
# whether the packed GEMM runs strided unpadded 1x1 convs on a contiguous copy of the pixels
# they read (read at each call; REFNET_PACKGEMM_SUBSAMPLE=0 off): read in place, X spans the
# whole input map (ResNet-50's 512 x 28 x 28 at stride 2: about the L2 cache) for every row
# panel. Paired, one thread, cold weights (residual pass included): 512->1024 /2 28x28 0.86-0.93,
# 1024->2048 /2 14x14 0.96-0.99 of in place.
# whether the conv plan's packed GEMM applies bias, residual and activation to each row panel
# right after computing it (in the cache) instead of a pass over C afterwards (read at each
# call; REFNET_PACKGEMM_FUSED=0 off). Paired, process CPU time, 21 rounds: ResNet-50 0.983,
# inception_v1 0.981 (bench/flag_ab.py); same results bit for bit.
FUSED_ENV = "REFNET_PACKGEMM_FUSED"
FUSED = enabled(FUSED_ENV)
SUBSAMPLE_ENV = "REFNET_PACKGEMM_SUBSAMPLE"
SUBSAMPLE = enabled(SUBSAMPLE_ENV)
WIDE_PLAIN_ENV = "REFNET_PACKGEMM_WIDE_PLAIN"
WIDE_PLAIN = enabled(WIDE_PLAIN_ENV)
WIDE_PLAIN_MIN_M = 64
WIDE_PLAIN_MIN_N = 784
WIDE_PLAIN_MAX_N = 3136
# ... and (WIDE_PLAIN_MID) on maps between MAX_N and WIDE_PLAIN_MIN_N pixels too, where the packed
# GEMM (<= MAX_N) and the rule above leave many rows to the BLAS: PP-OCRv4 rec's 480 -> 480 on 6x80
# and 3x80, MobileNet-SSD's 19x19 pointwise convs. One thread, weights and input cold, ms BLAS +
# epilogue -> wide: 480x480 @ 480 px 2.39 -> 2.22, @ 240 px 1.29 -> 1.11, 240 -> 480 @ 480 px
# 1.23 -> 1.13, 512 -> 512 @ 361 px 2.13 -> 1.97, 256 -> 512 1.09 -> 0.95, 512 -> 1024 4.07 -> 3.82.
WIDE_PLAIN_MID = True


def choose(base: str, dtype: np.dtype, groups: int, m: int, k: int, n: int, *, stride1: bool = False,
           residual: bool = False) -> str:
    """The conv plan's algorithm: "packed" or "packedwide" (stride-1 1x1 convs with a fused
    residual, or without one on few rows, :data:`WIDE_PLAIN`) where that packed GEMM measured
    faster than ``base`` (the plan's own choice) for a GEMM of these sizes (per image), else
    ``base``."""
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
    if base == "gemm1x1" and not stride1 and STRIDED and m >= MIN_M and k >= MIN_K:
        return "packed"  # (strided 1x1 on a large map: on a subsampled copy, SUBSAMPLE)
    if (base == "gemm1x1" and stride1 and n >= WIDE_MIN_N and m >= WIDE_MIN_M and k >= WIDE_MIN_K
            and (residual or (WIDE_PLAIN and m >= WIDE_PLAIN_MIN_M
                              and (WIDE_PLAIN_MIN_N if not WIDE_PLAIN_MID else MAX_N + 1) <= n <= WIDE_PLAIN_MAX_N))):
        return "packedwide"
    if (base == "gemm1x1" and stride1 and not residual and WIDE_PLAIN and n >= PLAIN_MIN_N and k >= PLAIN_MIN_K
            and (m <= PLAIN_FEW_M or (m <= PLAIN_MAX_M and n <= PLAIN_MAX_N))):
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
# whether a call of the wide tile function runs over a whole column block (read at each call;
# False: one call per tile, as before -- A/B only). Paired, hot, one thread: K = 16 0.85, K = 32
# 0.88, K = 64 0.94-0.97 of a call per tile; whole net, one thread, process CPU time (bench/flag_ab.py
# squeezenet refnet.kernels._packgemm:WIDE_RUN --threads 1 --rounds 21, load 1.3-2.3): SqueezeNet
# 0.948 / 0.965 / 0.970 (spreads 0.89-1.10), ResNet-50 (--rounds 11) 0.978 / 0.983 (0.93-1.01)
WIDE_RUN = True
# whether the last column tile of a row, where at most 16 columns remain, is a 16-column tile
# (:func:`_tile_wide16`) instead of a 32-column one at N - 32 (read at each call; A/B). Paired,
# hot: SqueezeNet's 13x13 squeezes 0.92, expands 0.98-0.99; whole SqueezeNet, one thread
# (bench/flag_ab.py squeezenet refnet.kernels._packgemm:WIDE_TAIL16 --threads 1 --rounds 21):
# CPU time 0.997 (0.81-1.34, load 1.6), i.e. within the noise
WIDE_TAIL16 = True
# whether the wide tile prefetches the rows of C and R of the tile AFTER it (after the last tile of
# a call: the first tile of the next row panel), pfe = 2, instead of its own at its start (pfe = 1:
# a tile's k loop, 64 steps, was too short to hide them: with or without that prefetch, paired,
# about the same); read at each call (A/B). Hot (C, R, X in L3), 256x64 @ 64x3136 with a residual:
# the residual's cost over none 0.20 -> 0.08-0.10 of the time; ResNet-50, one thread, CPU time
# (bench/flag_ab.py resnet50 refnet.kernels._packgemm:WIDE_PF_NEXT --threads 1 --rounds 11 / 15):
# 0.991 (0.935-1.070, load 1.3), 0.980 (0.945-1.205, load 2.6)
WIDE_PF_NEXT = True
# whether whole wide tiles without a residual store each row straight from its accumulators (read
# at each call; False: through the general per-row epilogue, A/B only)
WIDE_FAST_EPI = True
NBW_ELEMS = 1 << 16  # about this many elements of X per column block (all row panels run
# over one block before the next; in ResNet-50, K = 64: 1024 columns 0.90 vs 256 columns 0.93 of the BLAS)


@_fast
def _prefetch_rows(cf, rf, hasres, q0, j0, n, m):
    """Prefetch 32 columns from j0 of the (up to) 8 rows from q0 of C (for writing) and R (with
    ``hasres``), C and R flattened with row length n, m rows (passed in: a division per tile
    otherwise)."""
    for r in range(min(8, m - q0)):
        o = np.uint64(q0 + r) * np.uint64(n) + np.uint64(j0)
        _prefetchw(cf, o)
        _prefetchw(cf, o + np.uint64(16))
        if hasres:
            _prefetch(rf, o)
            _prefetch(rf, o + np.uint64(16))


_inline = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"contract"}, "boundscheck": False, "inline": "always"})


@_inline
def _wide_row(cf, o, s, b, sl, nl):
    """One row of a whole wide tile: :func:`_row32` or ``_row16`` by the tile width ``nl``
    (inlined in numba's IR: no call between the accumulators and their stores)."""
    if nl == 32:
        _row32(cf, o, s, b, sl)
    else:
        _row16(cf, o, s, b, sl)


def _make_tile_wide(nl: int) -> Any:
    """The wide tile function for tiles of ``nl`` (32 or 16) columns (``nl`` a constant of its code)."""

    def tile(wq, xf, p, nc0, nc1, n, cf, bias, rf, hasres, act, slope, six, rows, pfe, pfx, fe=True):
        """C[p*8 : p*8 + rows, nc0 : nc1] of act(W @ X + bias [+ R]), X[k, j] = xf[k * n + j], C and
        R flattened with row length n (same accumulation order as :func:`_tile`), one register tile
        of nl columns after another (a call per tile cost about as much as 16 steps k of it: the
        expand 1x1s' K = 16); a last partial tile is computed at n - nl and stores only its new
        columns. With ``pfe`` = 2 each tile first prefetches the rows of C (for writing) and R
        of the tile after it (after the range's last: the first tile of row panel p + 1), which
        its epilogue then finds in the cache (``pfe`` = 1 or True: its own, :data:`WIDE_PF_NEXT`);
        with ``pfx`` each step k also prefetches X's row k of
        the next column tile (the first row panel over a column block: X comes from memory there;
        at a block's end the next block's first tile).
        (Long: the tile, its epilogue and the loop over tiles stay one body, so that LLVM keeps the
        16 accumulators in registers and the call is paid once per panel and column block.)"""
        # (the stack arrays once, outside the loop: an alloca in a loop is not promoted to registers)
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
        t = _carray(_stack(256), (8, 32))
        mrows = cf.size // n
        for nt0 in range(nc0, nc1, nl):
            lo = 0
            n0 = nt0
            if n0 + nl > n:
                lo = n0 + nl - n
                n0 = n - nl
            pfxt = pfx and nt0 + nl < n
            if pfe == 2:  # the next tile's rows (the next row panel's first after the range's last)
                last = nt0 + nl >= nc1
                _prefetch_rows(cf, rf, hasres, p * 8 + 8 if last else p * 8, nc0 if last else n0 + nl, n, mrows)
            elif pfe:
                _prefetch_rows(cf, rf, hasres, p * 8, n0, n, mrows)
            for lane in range(nl):
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
                for lane in range(nl):
                    a0[lane] = 0.0
                    a1[lane] = 0.0
                    a2[lane] = 0.0
                    a3[lane] = 0.0
                    a4[lane] = 0.0
                    a5[lane] = 0.0
                    a6[lane] = 0.0
                    a7[lane] = 0.0
                for k in range(np.uint64(kb), np.uint64(min(kdim, kb + 128))):
                    xo = k * np.uint64(n) + np.uint64(n0)
                    # (the prefetch before the weights' loads: after them, the branch split the loads
                    # from their broadcasts, which LLVM then compiled as scalar loads plus register
                    # broadcasts (8 shuffle uops per step k) instead of broadcast loads. Paired, hot,
                    # one thread, 31 rounds: 16x64 @ 64x3025 0.987, 16x128 @ 128x3025 0.958,
                    # 64x16 @ 16x3025 0.985, 128x32 @ 32x729 0.992, 32x128 @ 128x729 0.982,
                    # 64x256 @ 256x3136 0.968; 256x64 @ 64x169 1.005)
                    if pfxt:
                        _prefetch(xf, xo + np.uint64(32))
                        _prefetch(xf, xo + np.uint64(48))
                    wk = wq[p, k]
                    w0 = wk[0]
                    w1 = wk[1]
                    w2 = wk[2]
                    w3 = wk[3]
                    w4 = wk[4]
                    w5 = wk[5]
                    w6 = wk[6]
                    w7 = wk[7]
                    for lane in range(np.uint64(nl)):
                        xl = xf[xo + lane]
                        a0[lane] += w0 * xl
                        a1[lane] += w1 * xl
                        a2[lane] += w2 * xl
                        a3[lane] += w3 * xl
                        a4[lane] += w4 * xl
                        a5[lane] += w5 * xl
                        a6[lane] += w6 * xl
                        a7[lane] += w7 * xl
                for lane in range(nl):
                    s0[lane] += a0[lane]
                    s1[lane] += a1[lane]
                    s2[lane] += a2[lane]
                    s3[lane] += a3[lane]
                    s4[lane] += a4[lane]
                    s5[lane] += a5[lane]
                    s6[lane] += a6[lane]
                    s7[lane] += a7[lane]
            zero = six - six
            m0 = p * 8
            if fe and lo == 0 and rows == 8 and not hasres and act != 2:
                # (a whole tile without residual, ReLU / leaky ReLU / none: each row straight from
                # its accumulators, two vector stores; the general path below costs ~300 cycles a
                # tile in scalar set-up per row and lane masks, as much as 16 steps k of the tile:
                # SqueezeNet's expand 1x1s have K = 16..64. ``fe`` False: the general path, A/B; WIDE_FAST_EPI)
                one = np.float32(1.0)
                nu = np.uint64(n)
                o = np.uint64(m0) * nu + np.uint64(n0)
                _wide_row(cf, o, s0, bias[m0], slope[m0] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s1, bias[m0 + 1], slope[m0 + 1] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s2, bias[m0 + 2], slope[m0 + 2] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s3, bias[m0 + 3], slope[m0 + 3] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s4, bias[m0 + 4], slope[m0 + 4] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s5, bias[m0 + 5], slope[m0 + 5] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s6, bias[m0 + 6], slope[m0 + 6] if act == 1 else one, nl)
                o += nu
                _wide_row(cf, o, s7, bias[m0 + 7], slope[m0 + 7] if act == 1 else one, nl)
                continue
            # the epilogue, row by row from a stack copy of the tile (no calls: a call per row
            # spilled and reloaded the accumulators)
            for lane in range(nl):
                t[0, lane] = s0[lane]
                t[1, lane] = s1[lane]
                t[2, lane] = s2[lane]
                t[3, lane] = s3[lane]
                t[4, lane] = s4[lane]
                t[5, lane] = s5[lane]
                t[6, lane] = s6[lane]
                t[7, lane] = s7[lane]
            for r in range(rows):
                m = m0 + r
                bm = bias[m]
                sm = slope[m]
                tr = t[r]
                o = np.uint64(m) * np.uint64(n) + np.uint64(n0)
                if act != 2:
                    # (ReLU / leaky ReLU or none (slope 1: v * 1 is v, bit for bit): over all 32 lanes,
                    # stored from ``lo`` -- two masked vector stores; the loop from ``lo`` below ran as
                    # 8-lane pieces. The lanes below ``lo`` may read R already overwritten (C is R in
                    # place) but are not stored. Paired, hot: SqueezeNet's expand 1x1s 0.84-0.90,
                    # ResNet-50's 1x1s with a residual 0.97; act 0 kept apart was twice as slow)
                    sm1 = sm if act == 1 else np.float32(1.0)
                    for lane in range(np.uint64(nl)):
                        v = tr[lane] + bm
                        if hasres:
                            v = v + rf[o + lane]
                        v = v if v > zero else v * sm1
                        if lane >= lo:
                            cf[o + lane] = v
                else:  # ReLU6
                    for lane in range(np.uint64(lo), np.uint64(nl)):  # (unsigned: vector loads and stores)
                        v = tr[lane] + bm
                        if hasres:
                            v = v + rf[o + lane]
                        if v < zero:
                            v = zero
                        elif v > six:
                            v = six
                        cf[o + lane] = v

    tile.__name__ = tile.__qualname__ = "_tile_wide" if nl == NRW else f"_tile_wide{nl}"
    return tile


_tile_wide = _fast(_make_tile_wide(NRW))
# the same for 16-column tiles: the last tile where at most 16 columns remain (13x13 maps: 169 =
# 5 * 32 + 9 columns, computed as 176 instead of 192), :data:`WIDE_TAIL16`
_tile_wide16 = _fast(_make_tile_wide(16))


@_fast
def packed_gemm_wide(wq, x, c, bias, res, hasres, act, slope, six, nbw, pfe=False, pfx=False, step=0, tail=False,
                     fe=True):
    """c (M, N) = act((W @ x + bias[:, None]) [+ res]) with W packed by ``pack_weights(w, MRW)``
    into wq (P, K, MRW); x (K, N), c and res (M, N) C-contiguous, N >= NRW; act 0 none, 1
    leaky ReLU / PReLU (slope per row), 2 ReLU6 (``six`` = 6). Column blocks of ``nbw`` (a
    multiple of NRW): all row panels over one block, so the block of X stays in cache. The last partial column tile is
    computed at N - NRW and stores only its new columns. ``step``: columns per call of the tile
    function (0: the whole block; NRW: one call per tile, A/B only, :data:`WIDE_RUN`). ``tail``:
    where at most 16 columns remain after the last whole tile, they are one 16-column tile
    (:func:`_tile_wide16`, at N - 16)."""
    m, n = c.shape
    kdim = x.shape[0]
    cf = c.reshape(m * n)
    xf = x.reshape(kdim * n)
    rf = res.reshape(res.size)
    rem = n % NRW
    t16 = n - rem if tail and 0 < rem <= 16 else n  # where the 16-column tail tile starts
    for nb0 in range(0, n, nbw):
        nb1 = min(n, nb0 + nbw)
        for p in range(wq.shape[0]):
            rows = min(8, m - p * 8)
            for nc0 in range(nb0, nb1, step if step > 0 else nbw):
                nc1 = min(nb1, nc0 + step) if step > 0 else nb1
                t1 = min(nc1, t16)
                if t1 > nc0:
                    _tile_wide(wq, xf, p, nc0, t1, n, cf, bias, rf, hasres, act, slope, six, rows, pfe,
                               pfx and p == 0, fe)
                if t1 < nc1:
                    _tile_wide16(wq, xf, p, t1, nc1, n, cf, bias, rf, hasres, act, slope, six, rows, pfe, False, fe)


def packed_gemm_wide_numpy(wmat: np.ndarray, x: np.ndarray, c: np.ndarray, bias: np.ndarray,
                           res: np.ndarray | None, act: int, slope: np.ndarray, six: np.floating) -> None:
    """NumPy twin of :func:`packed_gemm_wide` (``res`` None: no residual)."""
    np.matmul(wmat, x, out=c)
    epilogue_numpy(c, bias, res, act, slope, six)


def epilogue_numpy(c: np.ndarray, bias: np.ndarray, res: np.ndarray | None, act: int, slope: np.ndarray,
                   six: np.floating) -> None:
    """In place on c (M, N): c = act((c + bias[:, None]) [+ res]), the fused epilogues' NumPy twin."""
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
            packed_gemm_wide(self.wq, x, c, bias, c if res is None else res, res is not None, act, slope, six, self.nbw,
                             (2 if WIDE_PF_NEXT else 1) if WIDE_PREFETCH else 0, WIDE_PREFETCH_X,
                             0 if WIDE_RUN else NRW, WIDE_TAIL16, WIDE_FAST_EPI)
