"""Convolution, transposed convolution and fully-connected kernels (NCHW).

Every op ``f`` has a readable reference ``f_reference`` (straightforward NumPy, one
tensor contraction per kernel tap) beside the fast ``f``. Both compute in the dtype they are
given (float32 or float64; all arrays must share it) and return that dtype.

The fast convolution is planned once per input shape (:func:`conv2d_plan`; ``conv2d`` plans
and runs): argument checks, weight layouts and the algorithm are fixed in the plan, so the
executor's per-call cost is a few microseconds. Algorithms:

* 1x1, unpadded: one BLAS GEMM per image and group on the NCHW buffer (no copy; strided: on a
  subsampled copy of the input, 1/s^2 of it, instead of an im2col);
* depthwise (groups == C_in): direct numba kernels -- for 3x3, one 9-tap stencil per output
  row (strided convs: the stencil at full resolution, then every s-th value), or per plane
  over a flattened zero-padded copy when the plane is small; other sizes: one contiguous row
  update per tap;
* 3x3, stride 1, undilated, ungrouped with enough channels: Winograd F(2x2, 3x3) (16 GEMMs
  on transformed tiles, several images per GEMM for small maps; 2.25x fewer multiplications,
  the accuracy of a direct float32 convolution; a NaN/Inf reaches every output of its 2x2
  tile, not only its receptive field); on maps of about 24x24 and more with 64x64 to 128x256
  input x output channels, or at most 16 x 64 on maps of at least 196 4x4 tiles,
  Winograd F(4x4, 3x3) instead (36 GEMMs on 6x6 tiles, 4x fewer
  multiplications than direct; float32 rounding ~15x F(2,3)'s, ~5e-6 relative; a NaN/Inf
  reaches its 4x4 tiles);
* at most 4 output channels (e.g. an RGB output layer): a direct numba kernel (a GEMM with
  so few rows only streams its im2col buffer);
* "direct_cin", float32 ungrouped convs with at most 4 input channels (a net's RGB first conv;
  :mod:`refnet.kernels._direct`, off with ``REFNET_DIRECT_CIN=0``): a direct numba kernel on
  weights packed at plan time, 8 output channels x 32 output pixels per register tile, reading
  the input's column phases in place (no im2col); several threads: the same kernel split in one
  numba region (:mod:`refnet.kernels._packsplit`, TBB layer), else im2col's split;
* otherwise: numba im2col in cache-sized bands of output rows + BLAS GEMM into the output
  (strided convs: from the input split into its column phases once, so that every row segment
  is a contiguous copy);
* "packed", float32 ungrouped convs on small maps (ResNet-50's 7x7 and 14x14 stages; chosen
  over the above by :func:`refnet.kernels._packgemm.choose`, off with ``REFNET_PACKGEMM=0``): a
  numba GEMM on weights packed at plan time that reads the im2col in place (BLAS re-packs the
  1-9 MB weights on every call); several threads: the same kernel split in one numba region
  (:mod:`refnet.kernels._packsplit`, TBB layer, ``REFNET_PACKED_SPLIT=0`` off), else the im2col /
  1x1 split paths. A NaN/Inf reaches only its receptive field (unlike Winograd, which it replaces on 7x7).
  Also for im2col convs on larger maps (no im2col copy), and "packedwide" for stride-1 1x1 convs
  with a fused residual (bias, residual and activation in the GEMM's stores).

Bias and activation (ReLU / leaky ReLU / PReLU per channel / ReLU6) are applied in one
epilogue pass per band while it is still in cache. A plan made with ``residual=True`` adds a
second input of the output's shape before the activation (ResNet's ``relu(conv(x) + shortcut)``;
``((conv + bias) + residual)`` in that order, as the unfused add rounds): in the 1x1 GEMMs'
epilogue, after the other algorithms in one pass. Transposed convolutions run one GEMM per
band of input rows and a numba col2im scatter, bias and activation on the finished rows.

Conventions (Caffe / Torch7 / cv2.dnn): ``pad = (top, left, bottom, right)`` (an int or
``(ph, pw)`` is accepted too); conv weights ``(C_out, C_in // groups, kh, kw)``; transposed
conv weights ``(C_in, C_out // groups, kh, kw)``; output size
``(H + pt + pb - dh * (kh - 1) - 1) // sh + 1`` (floor, as Caffe and cv2 do for convs).

Threading: unless ``NUMBA_THREADING_LAYER`` says otherwise, numba's threading layer is chosen
before it starts (:func:`refnet.kernels._parallel.choose_threading_layer`; again by
``refnet.net.set_num_threads`` if nothing ran yet): TBB where the ``tbb`` extra is installed
(at any thread count: the layer is fixed once started), else OpenMP for one thread, ``workqueue``
for more -- on the loaded 2-core machine OpenMP stalled every parallel region for milliseconds with
two threads (forward passes 20-100x slower). Each kernel runs its serial or parallel build per
call (:mod:`refnet.kernels._parallel`). The workqueue layer must not be entered from two Python
threads at once (refnet's executor serialises its forward passes).

With several threads (``refnet.kernels._workers.workers() > 1``, set by ``set_num_threads``,
which then limits the BLAS to one thread), the GEMM algorithms cut each call into blocks --
bands of output rows (im2col, GEMM and epilogue of a band together), bands of Winograd tile
rows, or row x column blocks of the GEMM output for small maps -- and the pool's threads take
them from a shared counter, one single-threaded GEMM and serial numba builds per block
(:func:`_split_gemm`). Each output element is still one dot product over the same K; only its
position in the BLAS's blocking changes (float32 rounding level differences where the BLAS
picks another kernel for a narrow block).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels import _direct, _packgemm, _workers
from refnet.kernels._check import IntPair, Pad, as_float_array, ieee, pad4, pair, same_dtype
from refnet.kernels._jit import PARALLEL_LOCK, jit, prange
from refnet.kernels._lazyjit import MODE as _NUMPY_MODE
from refnet.kernels._parallel import region_threads as _region_threads
from refnet.kernels._parallel import twin  # (numba's threading layer is chosen when numba loads)
from refnet.kernels.geometry import conv_output_size, conv_transpose_output_size  # the rules' one home

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "conv2d",
    "conv2d_reference",
    "conv2d_plan",
    "Conv2dPlan",
    "separable_conv2d",
    "separable_conv2d_reference",
    "conv_transpose2d",
    "conv_transpose2d_reference",
    "conv_transpose2d_plan",
    "ConvTranspose2dPlan",
    "linear",
    "linear_reference",
    "winograd_weights",
    "winograd4_weights",
]

ACTIVATIONS = (None, "relu", "relu6", "prelu")
_ACT_NONE, _ACT_LEAKY, _ACT_RELU6 = 0, 1, 2

# im2col buffers are filled and consumed in bands of output rows of about this many
# elements, so the band stays in cache between im2col and the GEMM.
_IM2COL_BAND_ELEMS = 1 << 18
# GEMM outputs (1x1 convs) are produced in column blocks of about this many elements so
# the epilogue finds them in cache (the worker-thread splits' column blocks), ...
_GEMM_BLOCK_ELEMS = 1 << 17
# ... and in one thread, blocks of about this many: each BLAS call re-packs the weights, which
# cost more than the epilogue's cache misses (measured on ResNet-50's 56x56 1x1 convs with
# K = 64: 1.20 -> 1.08 ms, no loss elsewhere).
_GEMM_EPILOGUE_BLOCK_ELEMS = 1 << 20
# Winograd: transformed input + GEMM output of one band of tile rows, in elements, and the
# fewest tiles per band (narrower GEMMs run far below the BLAS's rate). Measured (one thread):
# (1 << 20, 128) made SqueezeNet's 16 -> 64 channel 55x55 layer one 4 MB band, 1.04 ms vs 0.64 in
# two; (1 << 19, 128) cut GoogLeNet's conv2 (64 -> 192, 56x56) into GEMMs of 112 tiles, 5.9 ms
# vs 4.5 with 196.
_WINO_BAND_ELEMS = 1 << 19
_WINO_MIN_TILES = 256
# F(4,3): 4x fewer (and 2.25x larger) tiles per pixel; cold-cache, one thread, ms with
# (256, 64) tiles: 64 -> 64 56x56 2.03/1.48, 64 -> 192 56x56 5.09/3.84, others within 5%
_WINO4_MIN_TILES = 64
# ... in bands of at most this many elements (transformed input + GEMM output: 36 (C_in + C_out)
# per tile; 1 MB in float32, the L2 of this machine's cores). Measured one thread, input and
# scratch out of cache (as in a net), ms with bands of 1 << 19 / 1 << 18 elements: 16 -> 32 60x80
# 1.03/0.69 (yufacedetectnet conv2_1: 0.68/0.56 inside the net), 16 -> 16 64x128 0.67/0.58,
# 16 -> 16 120x160 1.37/1.22, 64 -> 64 56x56 1.82/1.65, 32 -> 128 27x27 0.51/0.50.
_WINO4_BAND_ELEMS = 1 << 18
# several threads: F(4,3) in about this many bands of tile rows per thread (each band's
# transforms and 36 GEMMs in one block) where they hold at least this many tiles, else the
# transforms in bands and the GEMMs in blocks. Measured two threads, cold cache, ms F(2,3) split
# / F(4,3) bands: 64 -> 64 56x56 0.99/0.89, 64 -> 192 56x56 3.42/2.15, 16 -> 64 55x55 0.89/0.55
# (the three-phase path for these: 0.98/1.38, 3.28/3.62, 0.86/0.74).
_BANDS4_PER_THREAD = 2
_BANDS4_MIN_TILES = 32
# Winograd is used for 3x3 stride-1 convs with at least this many input / output channels
# and output pixels (below, the transforms cost more than the GEMM saves; measured).
WINOGRAD_MIN_CIN = 8
WINOGRAD_MIN_COUT = 4
WINOGRAD_MIN_PIXELS = 16
# ... and F(4x4, 3x3) instead of F(2x2, 3x3) for maps of at least this many 4x4 tiles where
# its 36 GEMMs on the 4x4 tiles do at most 0.8x F(2,3)'s 16 on the 2x2 tiles, with at most
# this many input x output channels (else the 36 transformed weight matrices, read once per
# narrow GEMM, cost more than the saved multiplications). Measured one thread, ms F(2,3) /
# F(4,3): 16->32 60x80 0.53/0.38, 16->64 55x55 0.63/0.50, 64->64 56x56 1.56/1.06, 128->128
# 28x28 1.45/0.88, 128->256 14x14 0.73/0.68; but 256->256 14x14 1.44/1.99, 512->512 7x7
# 3.6/6.1, 64->128 8x10 0.10/0.13, and 16 tiles (13x13, 14x14 maps) lost: 48->192 13x13
# 0.23/0.25, 64->256 13x13 0.35/0.43 (SqueezeNet).
WINOGRAD4_MIN_TILES = 20
WINOGRAD4_MAX_CIN_COUT = 128 * 256
# ... and at least this many, on maps of at least WINOGRAD4_MIN_TILES_ACC tiles: accuracy.
# F(4,3)'s float32 rounding (~5e-6 relative per layer, ~15x F(2,3)'s) on yufacedetectnet's
# stack of 16..64-channel 3x3 convs followed by per-pixel L2 Normalize layers (conv3_3_norm,
# conv4_3_norm scale small-norm pixels up) put float32 1.3e-5 to 3.3e-5 from float64 there, over
# the suite's 1e-5 (tests/test_weights_import/test_caffe_models.py); with all its layers on
# F(2,3) it passes. (F(4,3) gained little in that whole net: yufacedetectnet v2 8.24 -> 8.11 ms.)
WINOGRAD4_MIN_TILES_ACC = 36
WINOGRAD4_MIN_CIN_COUT = 64 * 64
# ... and also with at most this many input x output channels on maps of at least this many 4x4
# tiles: there F(2,3)'s 16 GEMMs, with K = C_in <= 32, are too narrow to pay for its 4x more tile
# transforms (one thread, ms F(2,3) / F(4,3): 16->32 60x80 0.53/0.40, 16->16 64x128 0.90/0.39,
# 8->16 120x160 0.88/0.60, 32->16 60x80 0.56/0.37). Accuracy, measured on yufacedetectnet v2 (the
# suite's 1e-5 float32-vs-float64 bound behind its L2 Normalize layers): F(4,3) on its 16->32
# 60x80 conv2_1 alone puts the worst layer at 3.9e-6 (2.4e-6 all F(2,3)); on 16->64 or 32->64
# 30x40 (conv3_x) 1.1e-5 to 3.3e-5, hence the bound.
WINOGRAD4_SMALL_MAX_CIN_COUT = 16 * 32
WINOGRAD4_SMALL_MIN_TILES = 256
# ... and also for at most this many input and output channels on maps of at least this many
# 4x4 tiles: F(2,3)'s GEMMs with K = C_in <= 16 are too narrow for its 4x more tile transforms.
# One thread, paired, ms F(2,3) / F(4,3): SqueezeNet's fire2/fire3 expand3x3 16 -> 64 55x55 (196
# tiles) 0.81 / 0.70 (ratio 0.87), 16 -> 32 60x80 0.66 / 0.47. (yufacedetectnet's 16/32 -> 64
# convs on 30x40, 80 tiles, stay on F(2,3): F(4,3) there broke its 1e-5 float32 bound.)
WINOGRAD4_NARROW = True  # (A/B switch: bench/flag_ab.py ... refnet.kernels.conv:WINOGRAD4_NARROW)
WINOGRAD4_NARROW_MAX_CIN = 16
WINOGRAD4_NARROW_MAX_COUT = 64
WINOGRAD4_NARROW_MIN_TILES = 196
# Several threads (refnet.kernels._workers): each conv call is cut into about this many blocks
# per thread (one single-threaded GEMM each, taken from a shared counter, so a descheduled
# thread holds back one small block, not half the layer); column blocks at least
# _SPLIT_MIN_COLS wide, row blocks at least _SPLIT_MIN_ROWS rows; calls of fewer MACs than
# _SPLIT_MIN_MACS stay in the calling thread (a pool wake-up costs ~20-50 us).
_BLOCKS_PER_THREAD = 4
# ... but when the drivers run as one numba parallel region (REFNET_NUMBA_DRIVERS, see
# _run_driver) the threads start within ~10 us of each other, and every extra block costs a
# GEMM its packing again (9 blocks of a 64x800x196 GEMM ran ~1.5x the whole one's time): this
# many per thread there (``REFNET_REGION_BLOCKS``; 1 vs 2, paired quiet rounds: 0.79-0.96, with a
# busy neighbour on one core no worse than the pool's 4)
_REGION_BLOCKS_PER_THREAD = max(1, int(os.environ.get("REFNET_REGION_BLOCKS", "1")))
_SPLIT_MIN_COLS = 64
_SPLIT_MIN_ROWS = 16
_SPLIT_MIN_MACS = 1 << 20
# ... and no block smaller than this many MACs (M*N*K): OpenBLAS (SkylakeX build, measured)
# runs GEMMs of up to 1e6 MACs with a small-matrix kernel whose sums round differently, so
# smaller blocks would make the numbers depend on the thread count; larger ones give results
# bit for bit equal to the unsplit GEMM.
_BLAS_EXACT_MACS = 1 << 20
# depthwise 3x3 convs of planes up to this size run as one flat stencil per plane
DW_FLAT_MAX_PIXELS = 4096
# direct kernel for convs with at most this many output channels (and a long reduction)
DIRECT_MAX_COUT = 4
DIRECT_MIN_K = 64


# --------------------------------------------------------------------------------------
# shapes and argument checks
# --------------------------------------------------------------------------------------


def _groups(groups: int) -> int:
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ShapeError("groups must be a positive int", expected=">= 1", got=groups)
    return int(groups)


def _check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of None, 'relu', 'relu6', 'prelu'; got {activation!r}"
        )


def _activation(activation: str | None, negative_slope: float | np.ndarray, co: int, dtype: np.dtype
                ) -> tuple[int, np.ndarray]:
    """(epilogue code, per-channel slope array of ``dtype``) for an activation."""
    _check_activation(activation)
    if activation == "relu6":
        return _ACT_RELU6, np.zeros(co, dtype)
    if activation is None:
        return _ACT_NONE, np.zeros(co, dtype)
    s = np.asarray(negative_slope, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.full(co, s[0])
    elif activation == "relu" or s.size != co:
        raise ShapeError(f"{activation}: negative_slope must be a scalar"
                         + (" or one value per output channel" if activation == "prelu" else ""),
                         expected=f"1 or {co} values" if activation == "prelu" else "a scalar",
                         got=s.shape)
    return _ACT_LEAKY, np.ascontiguousarray(s, dtype=dtype)


def _check_bias(b: np.ndarray | None, n: int, dtype: np.dtype, what: str) -> np.ndarray | None:
    if b is None:
        return None
    as_float_array(b, "b")
    if b.dtype != dtype:
        raise TypeError(f"b has dtype {b.dtype} but x has dtype {dtype}; pass both as one dtype")
    if b.shape != (n,):
        raise ShapeError(f"{what}: b must have one value per output channel",
                         expected=(n,), got=b.shape)
    return np.ascontiguousarray(b)


def _conv_geometry(x_shape, dtype, w, b, stride, pad, dilation, groups, fn):
    """Validate conv2d arguments for an input of ``x_shape``; return normalised values."""
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    p = pad4(pad, "pad")
    g = _groups(groups)
    n, c, h, wd = x_shape
    co, cig, kh, kw = w.shape
    if c % g or co % g:
        raise ShapeError(
            f"{fn}: input channels ({c}) and output channels ({co}) must both be divisible "
            f"by groups={g}",
            expected=f"x.shape[1] and w.shape[0] multiples of {g}",
            got=f"x {tuple(x_shape)}, w {w.shape}",
        )
    if cig != c // g:
        raise ShapeError(
            f"{fn}: w must have C_in // groups = {c} // {g} = {c // g} input channels",
            expected=(co, c // g, kh, kw),
            got=f"w {w.shape} for x {tuple(x_shape)}",
        )
    if kh < 1 or kw < 1:
        raise ShapeError(f"{fn}: empty kernel", got=f"w {w.shape}")
    bb = _check_bias(b, co, dtype, fn)
    try:
        ho = conv_output_size(h, kh, s[0], p[0], p[2], d[0])
        wo = conv_output_size(wd, kw, s[1], p[1], p[3], d[1])
    except ShapeError as e:
        raise ShapeError(
            f"{fn}: kernel {(kh, kw)} with dilation {d} does not fit the input {tuple(x_shape)} "
            f"padded by {p}: {e}",
            expected="dilated kernel <= padded input",
            got=f"x {tuple(x_shape)}, w {w.shape}",
        ) from None
    return s, p, d, g, bb, ho, wo


def _conv_args(x, w, b, stride, pad, dilation, groups, fn):
    """Validate conv2d arguments; return normalised values and the output size."""
    as_float_array(x, "x", 4)
    as_float_array(w, "w", 4)
    same_dtype("x", x, "w", w)
    return _conv_geometry(x.shape, x.dtype, w, b, stride, pad, dilation, groups, fn)


# --------------------------------------------------------------------------------------
# activations (reference)
# --------------------------------------------------------------------------------------


def _activate_reference(y: np.ndarray, activation: str | None,
                        negative_slope: float | np.ndarray) -> np.ndarray:
    """ReLU (leaky when negative_slope != 0), PReLU (slope per channel, axis 1) or ReLU6 =
    min(max(y, 0), 6); NaN stays NaN."""
    if activation in ("relu", "prelu"):
        s = np.asarray(negative_slope, dtype=y.dtype)
        if s.ndim == 1 and s.size > 1:
            s = s.reshape(1, -1, 1, 1)
        return np.where(y > 0, y, y * s)
    if activation == "relu6":
        return np.clip(y, 0, 6)
    return y


# --------------------------------------------------------------------------------------
# conv2d reference
# --------------------------------------------------------------------------------------


@ieee
def conv2d_reference(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    groups: int = 1,
    activation: str | None = None,
    negative_slope: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Grouped, dilated 2-D cross-correlation (Caffe Convolution / cv2 / Torch7):
    ``y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] * xpad[n, g*Cg + c, i*sh + p*dh,
    j*sw + q*dw]`` with zero padding, then the optional activation. Readable reference.
    """
    (sh, sw), (pt, pl, pb, pr), (dh, dw), g, b, ho, wo = _conv_args(
        x, w, b, stride, pad, dilation, groups, "conv2d_reference"
    )
    _activation(activation, negative_slope, w.shape[0], x.dtype)  # validates name and slope
    n, c, _, _ = x.shape
    co, cig, kh, kw = w.shape
    cog = co // g
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(n, g, cig, xp.shape[2], xp.shape[3])  # channels split into groups
    wg = w.reshape(g, cog, cig, kh, kw)
    y = np.zeros((n, g, cog, ho * wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            # the input pixels tap (p, q) multiplies, for every output position at once
            window = xg[:, :, :, p * dh : p * dh + sh * (ho - 1) + 1 : sh,
                        q * dw : q * dw + sw * (wo - 1) + 1 : sw]
            # per group: (C_out/g, C_in/g) @ (C_in/g, Ho*Wo)
            y += wg[:, :, :, p, q] @ window.reshape(n, g, cig, ho * wo)
    y = y.reshape(n, co, ho, wo)
    if b is not None:
        y += b.reshape(1, co, 1, 1)
    return _activate_reference(y, activation, negative_slope)


# --------------------------------------------------------------------------------------
# fast kernels: numba helpers
# --------------------------------------------------------------------------------------


@jit
def _act1(v, act, s, six):
    """One value through the epilogue activation: 1 leaky/PReLU (slope s), 2 ReLU6 (``six`` is
    6 in v's dtype, so no float64 promotion); NaN stays NaN."""
    if act == 1:
        return v if v > 0 else v * s
    if act == 2:
        zero = six - six
        if v < zero:
            return zero
        if v > six:
            return six
    return v


@jit
def _row_epilogue(row, bias, act, s):
    """In place on a 1-D row: row = act(row + bias)."""
    m_ = row.shape[0]
    if act == 0:
        for m in range(m_):
            row[m] = row[m] + bias
    elif act == 1:
        for m in range(m_):
            v = row[m] + bias
            row[m] = v if v > 0 else v * s
    else:
        for m in range(m_):
            v = row[m] + bias
            if v < 0:
                row[m] = 0
            elif v > 6:
                row[m] = 6
            else:
                row[m] = v  # NaN stays NaN


@twin(0)
def _bias_act_cols(y, b, act, slope, c0, c1):
    """In place on columns [c0, c1) of y (C, L): y = act(y + b[c])."""
    for k in prange(y.shape[0]):
        _row_epilogue(y[k, c0:c1], b[k], act, slope[k])


@twin(0)
def _bias_res_act_cols(y, r, b, act, slope, six, c0, c1):
    """In place on columns [c0, c1) of y (C, L): y = act((y + b[c]) + r) (``r`` of y's shape)."""
    for k in prange(y.shape[0]):
        row = y[k]
        res = r[k]
        bias = b[k]
        s = slope[k]
        for j in range(c0, c1):
            row[j] = _act1((row[j] + bias) + res[j], act, s, six)


@twin()
def _im2col(x, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cols):
    """cols[(c*kh + p)*kw + q, (oh-oh0)*wo + ow] = xpad[c, oh*sh + p*dh, ow*sw + q*dw]
    for output rows oh0 <= oh < oh1 (zero outside the input). x is (C, H, W)."""
    c_, h, w = x.shape
    kk = kh * kw
    for r in prange(c_ * kk):
        c = r // kk
        p = (r // kw) % kh
        q = r % kw
        lo, hi = _valid_range(q * dw - pl, sw, w, wo)
        start = lo * sw + q * dw - pl  # input column of output column lo
        dst = cols[r]
        for oh in range(oh0, oh1):
            ih = oh * sh - pt + p * dh
            seg = dst[(oh - oh0) * wo : (oh - oh0 + 1) * wo]
            if ih < 0 or ih >= h or hi == lo:
                seg[:] = 0
                continue
            seg[:lo] = 0
            seg[hi:] = 0
            if sw == 1:
                seg[lo:hi] = x[c, ih, start : start + hi - lo]
            else:
                seg[lo:hi] = x[c, ih, start : start + (hi - lo - 1) * sw + 1 : sw]


@twin()
def _im2col_phased(xd, w, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cols):
    """_im2col of x (C, H, w) given as its column phases xd[c, h, k, m] = x[c, h, m*sw + k]
    (:func:`_phases`): every row segment is a contiguous copy (strided convs: 2-3x faster than
    the strided gather). One view per row segment and element loops counted from 0: slice
    assignments (three per segment) cost more than the copy itself on these 7-112 element
    segments (one thread, paired: ResNet-50's 3x3/2 256 ch on 28x28 0.46 -> 0.25 ms, 128 ch on
    56x56 0.49 -> 0.37, inception's 5x5 192 ch on 28x28 2.0 -> 1.1, 7x7/2 on 3x224x224 0.77 -> 0.73)."""
    c_, h = xd.shape[:2]
    kk = kh * kw
    for r in prange(c_ * kk):
        c = r // kk
        p = (r // kw) % kh
        q = r % kw
        lo, hi = _valid_range(q * dw - pl, sw, w, wo)
        t = q * dw - pl  # input column of output column ow: (ow + a) * sw + k
        k = t % sw
        a = t // sw
        dst = cols[r]
        for oh in range(oh0, oh1):
            ih = oh * sh - pt + p * dh
            base = (oh - oh0) * wo
            if ih < 0 or ih >= h or hi == lo:
                for j in range(wo):
                    dst[base + j] = 0
                continue
            for j in range(lo):
                dst[base + j] = 0
            for j in range(hi, wo):
                dst[base + j] = 0
            src = xd[c, ih, k, lo + a :]  # (lo + a >= 0 when hi > lo)
            seg = dst[base + lo :]
            for j in range(hi - lo):
                seg[j] = src[j]


def _phases(x: np.ndarray, sw: int, role: str) -> np.ndarray:
    """x (C, H, W) as xd (C, H, sw, ceil(W / sw)) with xd[c, h, k, m] = x[c, h, m*sw + k] (a scratch
    array; entries past the row's end are unused)."""
    c, h, w = x.shape
    m = -(-w // sw)
    xd = _scratch(c * h * sw * m, x.dtype, role).reshape(c, h, sw, m)
    for k in range(min(sw, w)):
        xd[:, :, k, : -(-(w - k) // sw)] = x[:, :, k::sw]
    return xd


@jit
def _valid_range(off, stride, size, n_out):
    """Output positions o in [lo, hi) whose input position o*stride + off lies in [0, size)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = (size - 1 - off) // stride + 1
    lo = min(lo, n_out)
    return lo, max(min(hi, n_out), lo)


@twin()
def _depthwise(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, y):
    """Direct depthwise conv (groups == C_in, C_out = m * C_in) with fused bias/activation;
    one output plane per parallel task, one contiguous row update per kernel tap."""
    n, c, h, wd = x.shape
    _, co, ho, wo = y.shape
    _, _, kh, kw = w.shape
    mult = co // c
    lo = np.empty(kw, dtype=np.int64)
    hi = np.empty(kw, dtype=np.int64)
    for q in range(kw):
        lo[q], hi[q] = _valid_range(q * dw - pl, sw, wd, wo)
    for t in prange(n * co):
        i = t // co
        o = t % co
        ci = o // mult
        s = slope[o]
        for oh in range(ho):
            row = y[i, o, oh]
            row[:] = b[o]
            for p in range(kh):
                ih = oh * sh - pt + p * dh
                if ih < 0 or ih >= h:
                    continue
                srow = x[i, ci, ih]
                for q in range(kw):
                    a = lo[q]
                    m = hi[q] - a
                    if m == 0:
                        continue
                    wv = w[o, 0, p, q]
                    dst = row[a : a + m]
                    start = a * sw + q * dw - pl
                    if sw == 1:  # contiguous source: vectorises
                        src = srow[start : start + m]
                        for k in range(m):
                            dst[k] += wv * src[k]
                    else:
                        src2 = srow[start : start + (m - 1) * sw + 1 : sw]
                        for k in range(m):
                            dst[k] += wv * src2[k]
            if act != 0:
                _row_epilogue(row, s - s, act, s)


@jit
def _dw3_edge(a0, a1, a2, w, o, q0, dw, wd):
    """The 3x3 stencil at one output column whose taps may leave the row (input columns
    q0, q0 + dw, q0 + 2 dw; those outside [0, wd) count as zero)."""
    v = a0[0] * 0
    for qq in range(3):
        j = q0 + qq * dw
        if 0 <= j < wd:
            v += w[o, 0, 0, qq] * a0[j] + w[o, 0, 1, qq] * a1[j] + w[o, 0, 2, qq] * a2[j]
    return v


@twin()
def _depthwise3x3(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, six, y):
    """Depthwise 3x3 conv (any stride, dilation, channel multiplier) with fused bias and
    activation: every output row is one 9-tap stencil over three input rows (a zero row
    stands in for rows in the padding); the columns whose taps all lie inside the row run
    without bounds tests (vectorised), the few border columns with them."""
    n, c, h, wd = x.shape
    _, co, ho, wo = y.shape
    mult = co // c
    zrow = np.zeros(wd, dtype=x.dtype)
    lo, hi = _valid_range(-pl, sw, wd - 2 * dw, wo)  # columns whose three taps are inside
    for t in prange(n * co):
        i = t // co
        o = t % co
        ci = o // mult
        fr = np.empty(max(wd, 1), dtype=y.dtype)  # one full-resolution row (strided outputs)
        w00 = w[o, 0, 0, 0]
        w01 = w[o, 0, 0, 1]
        w02 = w[o, 0, 0, 2]
        w10 = w[o, 0, 1, 0]
        w11 = w[o, 0, 1, 1]
        w12 = w[o, 0, 1, 2]
        w20 = w[o, 0, 2, 0]
        w21 = w[o, 0, 2, 1]
        w22 = w[o, 0, 2, 2]
        bias = b[o]
        s = slope[o]
        plane = x[i, ci]
        for oh in range(ho):
            ih = oh * sh - pt
            a0 = plane[ih] if 0 <= ih < h else zrow
            a1 = plane[ih + dh] if 0 <= ih + dh < h else zrow
            a2 = plane[ih + 2 * dh] if 0 <= ih + 2 * dh < h else zrow
            row = y[i, o, oh]
            for ow in range(lo):
                row[ow] = _act1(_dw3_edge(a0, a1, a2, w, o, ow * sw - pl, dw, wd) + bias, act, s, six)
            if hi > lo:
                # views starting at the first interior output's taps: indices below are >= 0
                q0 = lo * sw - pl
                b0 = a0[q0:]
                b1 = a1[q0:]
                b2 = a2[q0:]
                dst = row[lo:hi]
                if sw == 1 and dw == 1:
                    for k in range(hi - lo):
                        v = (w00 * b0[k] + w01 * b0[k + 1] + w02 * b0[k + 2]
                             + w10 * b1[k] + w11 * b1[k + 1] + w12 * b1[k + 2]
                             + w20 * b2[k] + w21 * b2[k + 1] + w22 * b2[k + 2])
                        dst[k] = v + bias
                else:
                    # strided: the stencil at every column of the span (contiguous, vectorises),
                    # then every sw-th value -- cheaper than nine strided loads per output
                    span = (hi - lo - 1) * sw + 1
                    if dw == 1:
                        for k in range(span):
                            fr[k] = (w00 * b0[k] + w01 * b0[k + 1] + w02 * b0[k + 2]
                                     + w10 * b1[k] + w11 * b1[k + 1] + w12 * b1[k + 2]
                                     + w20 * b2[k] + w21 * b2[k + 1] + w22 * b2[k + 2])
                    else:
                        c0 = b0[dw:]
                        c1 = b1[dw:]
                        c2 = b2[dw:]
                        d0 = b0[2 * dw:]
                        d1 = b1[2 * dw:]
                        d2 = b2[2 * dw:]
                        for k in range(span):
                            fr[k] = (w00 * b0[k] + w01 * c0[k] + w02 * d0[k]
                                     + w10 * b1[k] + w11 * c1[k] + w12 * d1[k]
                                     + w20 * b2[k] + w21 * c2[k] + w22 * d2[k])
                    for k in range(hi - lo):
                        dst[k] = fr[k * sw] + bias
                if act != 0:
                    _row_epilogue(dst, bias - bias, act, s)
            for ow in range(max(hi, lo), wo):
                row[ow] = _act1(_dw3_edge(a0, a1, a2, w, o, ow * sw - pl, dw, wd) + bias, act, s, six)


@jit
def _flat_geometry(h, wd, ho, wo, sh, sw, pt, pl, kh, kw, dh, dw):
    """The zero-padded scratch plane of the flat depthwise kernels: its height hp and width wp,
    the span of flattened full-resolution positions the stencil covers, and the rows [r0, r1)
    and columns [j0, j1) of it that the input plane fills."""
    hp = (ho - 1) * sh + (kh - 1) * dh + 1
    wp = (wo - 1) * sw + (kw - 1) * dw + 1
    span = ((ho - 1) * sh) * wp + (wo - 1) * sw + 1
    r0 = min(max(0, pt), hp)
    r1 = max(min(hp, h + pt), r0)
    j0 = min(max(0, pl), wp)
    j1 = max(min(wp, wd + pl), j0)
    return hp, wp, span, r0, r1, j0, j1


@jit
def _fill_pad(pad, plane, pt, pl, r0, r1, j0, j1, wp):
    """Copy ``plane`` into the zeroed scratch ``pad`` (row width wp) at offset (pt, pl)."""
    for r in range(r0, r1):
        src = plane[r - pt]
        dst = pad[r * wp + j0 : r * wp + j1]
        for k in range(j1 - j0):
            dst[k] = src[j0 - pl + k]


@twin()
def _depthwise3x3_flat(x, w, b, sh, sw, pt, pl, act, slope, six, y):
    """Depthwise 3x3 (dilation 1) for small planes: each plane is copied into a zero-padded
    scratch plane of width wp, whose flattened form makes the 9-tap stencil one long
    contiguous loop (tap (p, q) is offset p * wp + q) over every full-resolution position;
    the outputs are then picked at the strides, with bias and activation. No per-row work."""
    n, c, h, wd = x.shape
    _, co, ho, wo = y.shape
    mult = co // c
    hp, wp, span, r0, r1, j0, j1 = _flat_geometry(h, wd, ho, wo, sh, sw, pt, pl, 3, 3, 1, 1)
    for t in prange(n * co):
        i = t // co
        o = t % co
        pad = np.zeros(hp * wp + 2, dtype=x.dtype)
        _fill_pad(pad, x[i, o // mult], pt, pl, r0, r1, j0, j1, wp)
        z = np.empty(span, dtype=x.dtype)
        p0 = pad
        p1 = pad[wp:]
        p2 = pad[2 * wp:]
        w00 = w[o, 0, 0, 0]
        w01 = w[o, 0, 0, 1]
        w02 = w[o, 0, 0, 2]
        w10 = w[o, 0, 1, 0]
        w11 = w[o, 0, 1, 1]
        w12 = w[o, 0, 1, 2]
        w20 = w[o, 0, 2, 0]
        w21 = w[o, 0, 2, 1]
        w22 = w[o, 0, 2, 2]
        for k in range(span):
            z[k] = (w00 * p0[k] + w01 * p0[k + 1] + w02 * p0[k + 2]
                    + w10 * p1[k] + w11 * p1[k + 1] + w12 * p1[k + 2]
                    + w20 * p2[k] + w21 * p2[k + 1] + w22 * p2[k + 2])
        bias = b[o]
        s = slope[o]
        for oh in range(ho):
            row = y[i, o, oh]
            zr = z[oh * sh * wp:]
            for ow in range(wo):
                row[ow] = _act1(zr[ow * sw] + bias, act, s, six)


@twin()
def _depthwise_flat(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, six, y):
    """Depthwise conv of any kernel size and dilation for small planes (PP-OCR's 5x5 on 20x20 and
    10x10 maps; the row-by-row kernel spent its time in loops of a few columns per tap): as
    :func:`_depthwise3x3_flat`, each plane is copied into a zero-padded scratch plane of width wp
    and every tap (p, q) is one contiguous multiply-add over the flattened full-resolution
    positions (offset p * dh * wp + q * dw), taps summed row-major from the first product, then
    the outputs are picked at the strides with bias and activation."""
    n, c, h, wd = x.shape
    _, co, ho, wo = y.shape
    _, _, kh, kw = w.shape
    mult = co // c
    hp, wp, span, r0, r1, j0, j1 = _flat_geometry(h, wd, ho, wo, sh, sw, pt, pl, kh, kw, dh, dw)
    for t in prange(n * co):
        i = t // co
        o = t % co
        pad = np.zeros(hp * wp, dtype=x.dtype)
        _fill_pad(pad, x[i, o // mult], pt, pl, r0, r1, j0, j1, wp)
        z = np.empty(span, dtype=x.dtype)
        if kw == 5:  # one pass per kernel row, its five taps added in order (the same sums as tap by tap)
            for p in range(kh):
                r = pad[p * dh * wp:]
                s1 = r[dw:]
                s2 = r[2 * dw:]
                s3 = r[3 * dw:]
                s4 = r[4 * dw:]
                w0 = w[o, 0, p, 0]
                w1 = w[o, 0, p, 1]
                w2 = w[o, 0, p, 2]
                w3 = w[o, 0, p, 3]
                w4 = w[o, 0, p, 4]
                if p == 0:
                    for k in range(span):
                        a = w0 * r[k]
                        a += w1 * s1[k]
                        a += w2 * s2[k]
                        a += w3 * s3[k]
                        z[k] = a + w4 * s4[k]
                else:
                    for k in range(span):
                        a = z[k] + w0 * r[k]
                        a += w1 * s1[k]
                        a += w2 * s2[k]
                        a += w3 * s3[k]
                        z[k] = a + w4 * s4[k]
        else:
            wv = w[o, 0, 0, 0]
            for k in range(span):
                z[k] = wv * pad[k]
            for p in range(kh):
                for q in range(kw):
                    if p == 0 and q == 0:
                        continue
                    wv = w[o, 0, p, q]
                    src = pad[p * dh * wp + q * dw:]
                    for k in range(span):
                        z[k] += wv * src[k]
        bias = b[o]
        s = slope[o]
        for oh in range(ho):
            row = y[i, o, oh]
            zr = z[oh * sh * wp:]
            if sw == 1:  # (a contiguous copy, then the vectorised epilogue: per-value _act1 calls did not vectorise)
                for ow in range(wo):
                    row[ow] = zr[ow]
            else:
                for ow in range(wo):
                    row[ow] = zr[ow * sw]
            _row_epilogue(row, bias, act, s)


@twin()
def _direct_small_cout(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, y):
    """Direct conv for few output channels (groups 1): per output row, all C_out rows are
    accumulated in a small buffer by contiguous row updates (one per input channel and tap),
    then bias + activation; parallel over (image, output row)."""
    n, c, h, wd = x.shape
    _, co, ho, wo = y.shape
    _, _, kh, kw = w.shape
    lo = np.empty(kw, dtype=np.int64)
    hi = np.empty(kw, dtype=np.int64)
    for q in range(kw):
        lo[q], hi[q] = _valid_range(q * dw - pl, sw, wd, wo)
    for t in prange(n * ho):
        i = t // ho
        oh = t % ho
        acc = np.zeros((co, wo), dtype=y.dtype)
        for ci in range(c):
            for p in range(kh):
                ih = oh * sh - pt + p * dh
                if ih < 0 or ih >= h:
                    continue
                srow = x[i, ci, ih]
                for q in range(kw):
                    a = lo[q]
                    m = hi[q] - a
                    if m == 0:
                        continue
                    start = a * sw + q * dw - pl
                    if sw == 1:  # contiguous source: vectorises
                        src = srow[start : start + m]
                        for o in range(co):
                            wv = w[o, ci, p, q]
                            dst = acc[o, a : a + m]
                            for k in range(m):
                                dst[k] += wv * src[k]
                    else:
                        src2 = srow[start : start + (m - 1) * sw + 1 : sw]
                        for o in range(co):
                            wv = w[o, ci, p, q]
                            dst = acc[o, a : a + m]
                            for k in range(m):
                                dst[k] += wv * src2[k]
        for o in range(co):
            row = y[i, o, oh]
            src_o = acc[o]
            for k in range(wo):
                row[k] = src_o[k]
            _row_epilogue(row, b[o], act, slope[o])


# ---- Winograd F(2x2, 3x3) --------------------------------------------------------------
# Y = A^T [ (G g G^T) * (B^T d B) ] A on 4x4 input tiles d (stride 2) giving 2x2 outputs, with
# B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],
# [0,0,1]], A^T = [[1,1,1,0],[0,1,-1,-1]] (Lavin & Gray 2016). B and A hold only 0 and +-1, so
# the transforms are exact adds; the accuracy is that of a direct float32 convolution.
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


@ieee
def winograd_weights(w: np.ndarray) -> np.ndarray:
    """F(2x2, 3x3) weight transform of 3x3 conv weights ``w`` (C_out, C_in, 3, 3):
    ``U[4a + b, o, c] = (G w[o, c] G^T)[a, b]``, computed in float64, returned in w's dtype."""
    as_float_array(w, "w", 4)
    if w.shape[2:] != (3, 3):
        raise ShapeError("winograd_weights needs 3x3 kernels", expected="(C_out, C_in, 3, 3)", got=w.shape)
    t = np.tensordot(w.astype(np.float64), _WINO_G, axes=([3], [1]))  # (o, c, i, b)
    u = np.tensordot(_WINO_G, t, axes=([1], [2]))  # (a, o, c, b)
    u = u.transpose(0, 3, 1, 2)  # (a, b, o, c)
    return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]), dtype=w.dtype)


@twin()
def _wino_in(x, pt, pl, ty0, ty1, tw_n, t0, v):
    """Input transform of tile rows [ty0, ty1) of one image x (C, H, W) into v (16, C, T),
    tile t = t0 + (ty - ty0) * tw_n + tx; rows are B^T-combined on whole padded rows
    (vectorised), then the 4-column groups of each tile."""
    c_, h, w = x.shape
    wp = 2 * tw_n + 2
    j0 = min(max(0, pl), wp)
    j1 = max(min(wp, w + pl), j0)
    for c in prange(c_):
        r = np.zeros((4, wp), dtype=x.dtype)
        tt = np.empty((4, wp), dtype=x.dtype)
        for ty in range(ty0, ty1):
            for k in range(4):
                ih = 2 * ty - pt + k
                row = r[k]
                if 0 <= ih < h:
                    row[j0:j1] = x[c, ih, j0 - pl : j1 - pl]
                else:
                    row[j0:j1] = 0
            for j in range(wp):
                d0 = r[0, j]
                d1 = r[1, j]
                d2 = r[2, j]
                d3 = r[3, j]
                tt[0, j] = d0 - d2
                tt[1, j] = d1 + d2
                tt[2, j] = d2 - d1
                tt[3, j] = d1 - d3
            base = t0 + (ty - ty0) * tw_n
            for k in range(4):
                tk = tt[k]
                v0 = v[4 * k, c]
                v1 = v[4 * k + 1, c]
                v2 = v[4 * k + 2, c]
                v3 = v[4 * k + 3, c]
                for tx in range(tw_n):
                    j = 2 * tx
                    a0 = tk[j]
                    a1 = tk[j + 1]
                    a2 = tk[j + 2]
                    a3 = tk[j + 3]
                    v0[base + tx] = a0 - a2
                    v1[base + tx] = a1 + a2
                    v2[base + tx] = a2 - a1
                    v3[base + tx] = a1 - a3


@jit
def _wino_rows(buf, bias, act, s, six, ty0, ty1, tw_n, f, yo):
    """The output rows of tile rows [ty0, ty1) of one channel ``yo`` (Ho, Wo) from a Winograd
    output transform's ``buf`` (f rows of f * (ty1 - ty0) * tw_n values per band: row i of tile
    t's f x f outputs at i * f * T + f * t), ``act(value + bias)``; f = 2 (F(2,3)) or 4 (F(4,3))."""
    ho, wo = yo.shape
    nt = (ty1 - ty0) * tw_n
    for ty in range(ty0, ty1):
        oh = f * ty
        for i in range(min(f, ho - oh)):
            row = yo[oh + i]
            src = np.uint64(i * f * nt + f * (ty - ty0) * tw_n)
            for k in range(np.uint64(wo)):
                row[k] = _act1(buf[src + k] + bias, act, s, six)


@twin()
def _wino_out(m, b, act, slope, six, ty0, ty1, tw_n, t0, y):
    """Output transform of m (16, C_out, T) for tile rows [ty0, ty1) (tiles from t0 on) into
    y (C_out, Ho, Wo), with bias and activation. Per output channel over all the band's tiles
    at once (m C-contiguous, read flat with unsigned offsets; as :func:`_wino4_out`, whose
    per-tile-row loops over a 13x13 map's 7 tiles did not vectorise): A^T M A of every tile into
    2 output rows of the band (``buf``, each tile's 2 columns side by side), then
    ``act(row + bias)`` into y. Same operations in the same order per value: the same bits."""
    co, ho, wo = y.shape
    nt = (ty1 - ty0) * tw_n  # the band's tiles
    tt = m.shape[2]
    mf = m.reshape(m.size)
    un = np.uint64(nt)
    step = np.uint64(co * tt)  # from row k of m to row k + 1
    chunks = min(co, 16)  # (one buf per chunk of channels, allocated once: prange bodies must not share it)
    for ch in prange(chunks):
        buf = np.empty(4 * nt, dtype=y.dtype)  # buf[i * 2 nt + 2 t + q]: output row i, column q of tile t
        for o in range(co * ch // chunks, co * (ch + 1) // chunks):
            bias = b[o]
            s = slope[o]
            k0 = np.uint64(o * tt + t0)  # row k of m for this channel and band at k0 + k * step
            k1 = k0 + step
            k2 = k1 + step
            k3 = k2 + step
            k4 = k3 + step
            k5 = k4 + step
            k6 = k5 + step
            k7 = k6 + step
            k8 = k7 + step
            k9 = k8 + step
            k10 = k9 + step
            k11 = k10 + step
            k12 = k11 + step
            k13 = k12 + step
            k14 = k13 + step
            k15 = k14 + step
            for t in range(un):
                # A^T M: column l of the 4x4 tile -> (sum of rows 0..2, rows 1 - 2 - 3)
                s0 = mf[k0 + t] + mf[k4 + t] + mf[k8 + t]
                s1 = mf[k1 + t] + mf[k5 + t] + mf[k9 + t]
                s2 = mf[k2 + t] + mf[k6 + t] + mf[k10 + t]
                s3 = mf[k3 + t] + mf[k7 + t] + mf[k11 + t]
                e0 = mf[k4 + t] - mf[k8 + t] - mf[k12 + t]
                e1 = mf[k5 + t] - mf[k9 + t] - mf[k13 + t]
                e2 = mf[k6 + t] - mf[k10 + t] - mf[k14 + t]
                e3 = mf[k7 + t] - mf[k11 + t] - mf[k15 + t]
                o2 = np.uint64(2) * t
                buf[o2] = s0 + s1 + s2
                buf[o2 + np.uint64(1)] = s1 - s2 - s3
                buf[np.uint64(2) * un + o2] = e0 + e1 + e2
                buf[np.uint64(2) * un + o2 + np.uint64(1)] = e1 - e2 - e3
            _wino_rows(buf, bias, act, s, six, ty0, ty1, tw_n, 2, y[o])


# ---- Winograd F(4x4, 3x3) --------------------------------------------------------------
# Toom-Cook on the interpolation points 0, 1, -1, 2, -2 and infinity: 6x6 input tiles (stride 4)
# give 4x4 outputs, 36 products per tile instead of 144 (F(2,3): 16 for 36). A 1-D correlation
# y[i] = sum_k d[i + k] g[k] (i < 4) is A^T [(G g) * (B^T d)] with
_WINO4_BT = np.array([[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
                      [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
                      [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
                      [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
                      [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
                      [0.0, 4.0, 0.0, -5.0, 0.0, 1.0]])
_WINO4_G = np.array([[1 / 4, 0.0, 0.0],
                     [-1 / 6, -1 / 6, -1 / 6],
                     [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6],
                     [1 / 24, -1 / 12, 1 / 6],
                     [0.0, 0.0, 1.0]])
_WINO4_AT = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
                      [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
                      [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
                      [0.0, 1.0, -1.0, 8.0, -8.0, 1.0]])
# (row i of A^T holds the points' i-th powers, the last column the point at infinity; B^T is the
# inverse Vandermonde system scaled so that G carries the 1/4, 1/6, 1/24 -- checked against a
# direct correlation in float64 by tests/test_kernels/test_winograd4.py.) In 2-D, Y = A^T [(G w
# G^T) * (B^T d B)] A. The transforms' coefficients (up to 8 and 1/24) make float32 rounding a
# few times larger than F(2,3)'s (still far inside F32_VS_F64_LONG; measured in that test).


@ieee
def winograd4_weights(w: np.ndarray) -> np.ndarray:
    """F(4x4, 3x3) weight transform of 3x3 conv weights ``w`` (C_out, C_in, 3, 3):
    ``U[6a + b, o, c] = (G w[o, c] G^T)[a, b]``, computed in float64, returned in w's dtype."""
    as_float_array(w, "w", 4)
    if w.shape[2:] != (3, 3):
        raise ShapeError("winograd4_weights needs 3x3 kernels", expected="(C_out, C_in, 3, 3)", got=w.shape)
    u = np.einsum("ai,ocij,bj->aboc", _WINO4_G, w.astype(np.float64), _WINO4_G)
    return np.ascontiguousarray(u.reshape(36, w.shape[0], w.shape[1]), dtype=w.dtype)


@twin()
def _wino4_in(x, pt, pl, ty0, ty1, tw_n, t0, v):
    """F(4,3) input transform of tile rows [ty0, ty1) of one image x (C, H, W) into v (36, C, T),
    tile t = t0 + (ty - ty0) * tw_n + tx: B^T on the 6 rows of a tile row (whole padded rows,
    vectorised), then on the 6-column groups of each tile."""
    c_, h, w = x.shape
    wp = 4 * tw_n + 2
    j0 = min(max(0, pl), wp)
    j1 = max(min(wp, w + pl), j0)
    for c in prange(c_):
        r = np.zeros((6, wp), dtype=x.dtype)
        tt = np.empty((6, wp), dtype=x.dtype)
        k245 = np.empty(3, dtype=x.dtype)  # the coefficients in x's dtype (a literal would promote)
        k245[0] = 2
        k245[1] = 4
        k245[2] = 5
        two, four, five = k245[0], k245[1], k245[2]
        for ty in range(ty0, ty1):
            for k in range(6):
                ih = 4 * ty - pt + k
                row = r[k]
                if 0 <= ih < h:
                    row[j0:j1] = x[c, ih, j0 - pl : j1 - pl]
                else:
                    row[j0:j1] = 0
            for j in range(wp):
                d0 = r[0, j]
                d1 = r[1, j]
                d2 = r[2, j]
                d3 = r[3, j]
                d4 = r[4, j]
                d5 = r[5, j]
                p = d4 - four * d2
                q = d3 - four * d1
                s = d4 - d2
                e = two * (d3 - d1)
                tt[0, j] = (four * d0 - five * d2) + d4
                tt[1, j] = p + q
                tt[2, j] = p - q
                tt[3, j] = s + e
                tt[4, j] = s - e
                tt[5, j] = (four * d1 - five * d3) + d5
            base = t0 + (ty - ty0) * tw_n
            for k in range(6):
                tk = tt[k]
                v0 = v[6 * k, c]
                v1 = v[6 * k + 1, c]
                v2 = v[6 * k + 2, c]
                v3 = v[6 * k + 3, c]
                v4 = v[6 * k + 4, c]
                v5 = v[6 * k + 5, c]
                for tx in range(tw_n):
                    j = 4 * tx
                    a0 = tk[j]
                    a1 = tk[j + 1]
                    a2 = tk[j + 2]
                    a3 = tk[j + 3]
                    a4 = tk[j + 4]
                    a5 = tk[j + 5]
                    p = a4 - four * a2
                    q = a3 - four * a1
                    s = a4 - a2
                    e = two * (a3 - a1)
                    v0[base + tx] = (four * a0 - five * a2) + a4
                    v1[base + tx] = p + q
                    v2[base + tx] = p - q
                    v3[base + tx] = s + e
                    v4[base + tx] = s - e
                    v5[base + tx] = (four * a1 - five * a3) + a5


@twin()
def _wino4_out(m, b, act, slope, six, ty0, ty1, tw_n, t0, y):
    """F(4,3) output transform of m (36, C_out, T) for tile rows [ty0, ty1) (tiles from t0 on)
    into y (C_out, Ho, Wo), with bias and activation. Per output channel, over all the band's
    tiles at once (loops as long as the band, vectorised; m C-contiguous, read flat with
    unsigned offsets): A^T over the 6 rows of every tile into z, then over each tile's 6
    columns into 4 output rows of the band (``buf``, each tile's 4 columns side by side), then
    ``act(row + bias)`` into y. (Per tile row instead, the loops ran over a 13x13 map's 4 or a
    55x55 map's 14 tiles and did not vectorise: SqueezeNet's 16 -> 64 55x55 expand3x3 spent
    288 of its 543 us here, one thread.) Same operations in the same order per value as a
    tile-by-tile transform: the same bits."""
    co, ho, wo = y.shape
    nt = (ty1 - ty0) * tw_n  # the band's tiles
    tt = m.shape[2]
    mf = m.reshape(m.size)
    un = np.uint64(nt)
    step = np.uint64(6 * co * tt)  # from row k of m to row k + 6
    chunks = min(co, 16)  # (scratch per chunk of channels, allocated once: prange bodies must not share it)
    for ch in prange(chunks):
        z = np.empty(24 * nt, dtype=y.dtype)  # z[(i * 6 + j) * nt + t], i < 4, j < 6
        buf = np.empty(16 * nt, dtype=y.dtype)  # buf[i * 4 nt + 4 t + q]: output row i, column q of tile t
        k248 = np.empty(3, dtype=y.dtype)  # the coefficients in y's dtype (a literal would promote)
        k248[0] = 2
        k248[1] = 4
        k248[2] = 8
        two, four, eight = k248[0], k248[1], k248[2]
        for o in range(co * ch // chunks, co * (ch + 1) // chunks):
            bias = b[o]
            s = slope[o]
            for j in range(6):
                r0 = np.uint64((j * co + o) * tt + t0)
                r1 = r0 + step
                r2 = r1 + step
                r3 = r2 + step
                r4 = r3 + step
                r5 = r4 + step
                z0 = np.uint64(j) * un
                z1 = z0 + np.uint64(6) * un
                z2 = z1 + np.uint64(6) * un
                z3 = z2 + np.uint64(6) * un
                for t in range(un):
                    m1 = mf[r1 + t]
                    m2 = mf[r2 + t]
                    m3 = mf[r3 + t]
                    m4 = mf[r4 + t]
                    a = m1 + m2
                    bb = m1 - m2
                    cc = m3 + m4
                    dd = m3 - m4
                    z[z0 + t] = (mf[r0 + t] + a) + cc
                    z[z1 + t] = bb + two * dd
                    z[z2 + t] = a + four * cc
                    z[z3 + t] = (bb + eight * dd) + mf[r5 + t]
            for i in range(4):
                zi = np.uint64(i * 6) * un
                bi = np.uint64(i * 4) * un
                for t in range(un):
                    q1 = z[zi + un + t]
                    q2 = z[zi + np.uint64(2) * un + t]
                    q3 = z[zi + np.uint64(3) * un + t]
                    q4 = z[zi + np.uint64(4) * un + t]
                    a = q1 + q2
                    bb = q1 - q2
                    cc = q3 + q4
                    dd = q3 - q4
                    o4 = bi + np.uint64(4) * t
                    buf[o4] = (z[zi + t] + a) + cc
                    buf[o4 + np.uint64(1)] = bb + two * dd
                    buf[o4 + np.uint64(2)] = a + four * cc
                    buf[o4 + np.uint64(3)] = (bb + eight * dd) + z[zi + np.uint64(5) * un + t]
            _wino_rows(buf, bias, act, s, six, ty0, ty1, tw_n, 4, y[o])


@twin(0)
def _col2im_rows(cols, ih0, ih1, w, kh, kw, sh, sw, pt, pl, dh, dw, y):
    """Transposed-conv scatter of input rows [ih0, ih1): y[c, ih*sh - pt + p*dh, iw*sw - pl +
    q*dw] += cols[(c*kh + p)*kw + q, (ih - ih0)*W + iw]; one output channel per parallel task."""
    co, ho, wo = y.shape
    for c in prange(co):
        for p in range(kh):
            for q in range(kw):
                src = cols[(c * kh + p) * kw + q]
                lo, hi = _valid_range(q * dw - pl, sw, wo, w)  # input columns that land inside
                m = hi - lo
                if m == 0:
                    continue
                start = lo * sw + q * dw - pl  # output column of input column lo
                for ih in range(ih0, ih1):
                    oh = ih * sh - pt + p * dh
                    if oh < 0 or oh >= ho:
                        continue
                    s = src[(ih - ih0) * w + lo : (ih - ih0) * w + hi]
                    if sw == 1:
                        dst = y[c, oh, start : start + m]
                        for k in range(m):
                            dst[k] += s[k]
                    else:
                        dst2 = y[c, oh, start : start + (m - 1) * sw + 1 : sw]
                        for k in range(m):
                            dst2[k] += s[k]


@twin(0)
def _bias_act_rows(y, b, act, slope, r0, r1):
    """In place on rows [r0, r1) of every plane of y (C, H, W): y = act(y + b[c])."""
    for c in prange(y.shape[0]):
        for r in range(r0, r1):
            _row_epilogue(y[c, r], b[c], act, slope[c])


# --------------------------------------------------------------------------------------
# scratch memory: one grow-only buffer per thread and role
# --------------------------------------------------------------------------------------

_TLS = threading.local()


def _scratch(n: int, dtype: np.dtype, role: str) -> np.ndarray:
    """A flat scratch array of ``n`` elements, reused between calls (per thread and role)."""
    bufs = getattr(_TLS, "bufs", None)
    if bufs is None:
        bufs = _TLS.bufs = {}
    key = (role, np.dtype(dtype).char)
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = np.empty(n, dtype=dtype)
        bufs[key] = buf
    return buf[:n]


def _gemm_epilogue(wmat: np.ndarray, src: np.ndarray, dst: np.ndarray, b: np.ndarray, act: int,
                   slope: np.ndarray, res: np.ndarray | None = None) -> None:
    """dst (M, L) = act(wmat (M, K) @ src (K, L) + b [+ res (M, L)]), in column blocks that
    stay in cache."""
    m, length = dst.shape
    block = max(256, _GEMM_EPILOGUE_BLOCK_ELEMS // max(1, m))
    if length <= block + block // 2:
        block = length
    epilogue = act != 0 or b.any()
    for j0 in range(0, length, block):
        j1 = min(length, j0 + block)
        np.matmul(wmat, src[:, j0:j1], out=dst[:, j0:j1])
        if res is not None:
            _bias_res_act_cols(dst, res, b, act, slope, slope.dtype.type(6), j0, j1)
        elif epilogue:
            _bias_act_cols(dst, b, act, slope, j0, j1)


def _parts(total: int, pieces: int) -> list[tuple[int, int]]:
    """``pieces`` (at most ``total``, at least 1) consecutive ranges of nearly equal length
    that cover ``range(total)``."""
    pieces = max(1, min(total, pieces))
    return [(total * k // pieces, total * (k + 1) // pieces) for k in range(pieces)]


def _split_threads(macs: int) -> int:
    """Threads to split a call of ``macs`` multiply-adds over (1: run it as one piece)."""
    nt = _workers.workers()
    return nt if nt > 1 and macs >= _SPLIT_MIN_MACS else 1


def _max_pieces(macs: int) -> int:
    """The most blocks a GEMM of ``macs`` MACs may be cut into (each >= _BLAS_EXACT_MACS)."""
    return max(1, macs // _BLAS_EXACT_MACS)


def _grid(count: int, m: int, k: int, length: int, nt: int, per: int = _BLOCKS_PER_THREAD
          ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row and column ranges that cut each of ``count`` GEMM outputs (m, length), reduction
    ``k``, so that the call has about ``per * nt`` blocks: cache-sized column
    blocks (as the serial path), more columns down to ``_SPLIT_MIN_COLS``, then rows down to
    ``_SPLIT_MIN_ROWS``; no block under ``_BLAS_EXACT_MACS``."""
    cap = _max_pieces(m * k * length)
    want = min(-(-per * nt // max(1, count)), cap)  # pieces per GEMM
    ncol = max(-(-length // max(256, _GEMM_BLOCK_ELEMS // max(1, m))), min(want, length // _SPLIT_MIN_COLS))
    nrow = max(1, min(-(-want // ncol), m // _SPLIT_MIN_ROWS, cap // ncol))
    return _parts(m, nrow), _parts(length, ncol)


def _drivers():
    """:mod:`refnet.kernels._blasjit` (one ``nogil`` call per thread and layer, NumPy's BLAS
    called from numba) when usable: numba loaded and jitting, NumPy's BLAS found and checked,
    not inside ``numpy_kernels()``, ``REFNET_POOL_DRIVERS`` != "0"; else None (Python blocks)."""
    if _NUMPY_MODE.on or os.environ.get("REFNET_POOL_DRIVERS", "1") == "0":
        return None
    if _DRIVERS:
        return _DRIVERS[0]
    from refnet.kernels._lazyjit import load_numba, numba_loaded

    if not numba_loaded():  # (asked again later: the serial kernels load numba on their first call)
        return None
    mod = None
    if not load_numba().config.DISABLE_JIT:
        from refnet.kernels import _blasjit

        mod = _blasjit if _blasjit.available else None
    _DRIVERS.append(mod)
    return mod


_DRIVERS: list = []  # [the _blasjit module or None] once decided


def _gemm_ok(*arrays: np.ndarray) -> bool:
    """Whether these GEMM operands (..., rows, cols) have contiguous rows, as the drivers need."""
    return all(a.strides[-1] == a.itemsize and a.strides[-2] >= a.shape[-1] * a.itemsize for a in arrays)


def _run_driver(drv, name: str, nt: int, args: tuple, scratch: tuple = (), dtype: np.dtype | None = None) -> None:
    """``drv.<name>(*args, *bufs)`` in ``nt`` threads sharing the block counters in ``args``;
    ``bufs``: one scratch array per (role, size) of ``scratch``, each thread its own. One numba
    parallel region (``drv.PARALLEL``: each of its threads runs the driver; no Python, no GIL in
    the other threads) where :func:`refnet.kernels._parallel.region_threads` allows, else the
    worker pool."""
    n = _region_threads(nt)
    if n > 1 and PARALLEL_LOCK.acquire(blocking=False):  # (held: another thread's region is running)
        try:
            drv.PARALLEL[name](n, *args, *[_scratch(n * size, dtype, role + "/region").reshape(n, size)
                                           for role, size in scratch])
        finally:
            PARALLEL_LOCK.release()
        return
    fn = getattr(drv, name)
    _workers.run(lambda _k: fn(*args, *[_scratch(size, dtype, role) for role, size in scratch]), nt)


def _per_thread(nt: int) -> int:
    """Blocks per thread of a split over ``nt`` threads: fewer where the drivers will run as one
    numba parallel region (:data:`_REGION_BLOCKS_PER_THREAD`) than over the pool."""
    return _REGION_BLOCKS_PER_THREAD if _region_threads(nt) > 1 and _drivers() is not None else _BLOCKS_PER_THREAD


def _block_limits(nt: int) -> tuple:
    """The module's block limits as they are now for ``nt`` threads (:func:`_gemm_blocks`' cache
    key: tests change them)."""
    return (_per_thread(nt), _SPLIT_MIN_COLS, _SPLIT_MIN_ROWS, _BLAS_EXACT_MACS, _GEMM_BLOCK_ELEMS)


@functools.lru_cache(maxsize=512)
def _gemm_blocks(count: int, m: int, k: int, length: int, nt: int, limits: tuple) -> tuple[list, np.ndarray | None]:
    """The blocks of :func:`_split_gemm` for these sizes: [(t, (r0, r1), (c0, c1))] and, when every
    block is at least 2 x 2 (NumPy runs 1-wide products as gemv, the drivers always as gemm),
    the same as an int64 table (t, r0, r1, c0, c1) for the driver (else None). ``limits``: the
    module's block limits (part of the cache key: tests change them)."""
    rows, cols = _grid(count, m, k, length, nt, limits[0])
    blocks = [(t, r, c) for t in range(count) for r in rows for c in cols]
    wide = k > 1 and min(r1 - r0 for r0, r1 in rows) > 1 and min(c1 - c0 for c0, c1 in cols) > 1
    table = np.array([(t, r0, r1, c0, c1) for t, (r0, r1), (c0, c1) in blocks], np.int64) if wide else None
    return blocks, table


def _split_gemm(a: np.ndarray, s: np.ndarray, d: np.ndarray, b: np.ndarray, slope: np.ndarray, ga: int,
                act: int, epilogue: bool, nt: int) -> None:
    """d[t] = act(a[t % ga] @ s[t] + b[t % ga]) for every t (a (GA, M, K), s (G, K, L), d (G, M, L),
    b / slope (GA, M)), cut into row x column blocks over the worker threads; each block is one
    single-threaded GEMM and the serial epilogue on it -- all of a thread's blocks in one nogil
    call where :func:`_drivers` allows, else one Python call per block. Every output element is
    the same dot product as in the unsplit GEMM (only its position in the BLAS's blocking changes)."""
    count, m, length = d.shape
    blocks, table = _gemm_blocks(count, m, a.shape[2], length, nt, _block_limits(nt))
    drv = _drivers()
    if drv is not None and table is not None and _gemm_ok(a, s, d):
        _run_driver(drv, "gemm_blocks", min(nt, len(blocks)),
                    (a, s, d, b, slope, ga, table, act, epilogue, np.zeros(2, np.int64)))
        return
    bias_act = _bias_act_cols.serial

    def block(j: int) -> None:
        t, (r0, r1), (c0, c1) = blocks[j]
        ta = t % ga
        dst = d[t]
        np.matmul(a[ta, r0:r1], s[t][:, c0:c1], out=dst[r0:r1, c0:c1])
        if epilogue:
            bias_act(dst[r0:r1], b[ta, r0:r1], act, slope[ta, r0:r1], c0, c1)

    _workers.run(block, len(blocks))


# --------------------------------------------------------------------------------------
# conv2d fast: the plan
# --------------------------------------------------------------------------------------


class Conv2dPlan:
    """A convolution with fixed weights, parameters and input shape: checks done, weight
    layouts prepared and the algorithm chosen once (see the module docstring).

    ``plan(x, out=None)`` runs it on ``x`` of ``plan.x_shape`` and ``plan.dtype`` (C-contiguous
    or made so) and returns ``out`` (or a new array) of ``plan.y_shape``.
    """

    def __init__(self, x_shape: Sequence[int], w: np.ndarray, b: np.ndarray | None = None, *,
                 stride: IntPair = (1, 1), pad: Pad = (0, 0, 0, 0), dilation: IntPair = (1, 1),
                 groups: int = 1, activation: str | None = None,
                 negative_slope: float | np.ndarray = 0.0, algorithm: str | None = None,
                 residual: bool = False, fn: str = "conv2d") -> None:
        as_float_array(w, "w", 4)
        x_shape = tuple(int(d) for d in x_shape)
        if len(x_shape) != 4:
            raise ShapeError("x must be 4-D", expected="4-D", got=f"shape {x_shape}")
        dt = w.dtype
        (sh, sw), (pt, pl, pb, pr), (dh, dw), g, b, ho, wo = _conv_geometry(
            x_shape, dt, w, b, stride, pad, dilation, groups, fn)
        n, c, h, wd = x_shape
        co, cig, kh, kw = w.shape
        self.x_shape = x_shape
        self.y_shape = (n, co, ho, wo)
        self.macs = n * co * cig * kh * kw * ho * wo  # (multiply-adds per call)
        self.khw = (kh, kw)
        self.dtype = dt
        self.stride, self.pad, self.dilation, self.groups = (sh, sw), (pt, pl, pb, pr), (dh, dw), g
        self.act, self.slope = _activation(activation, negative_slope, co, dt)
        self.six = dt.type(6)
        # with a residual the algorithms' own epilogues add the bias only; the activation
        # follows the residual (res_act)
        self.residual = residual
        self.res_act = self.act
        if residual:
            self.act = _ACT_NONE
            # the post-pass's per-(image, channel) row arguments (no bias: already in y)
            self._res_zero = np.zeros(x_shape[0] * co, dt)
            self._res_slope = np.tile(self.slope, x_shape[0])
        self.b = b if b is not None else np.zeros(co, dt)
        self.has_bias = b is not None
        w = np.ascontiguousarray(w)
        self.algorithm = algorithm or _packgemm.choose(self._choose(c, co, cig, kh, kw, ho, wo), dt, g, co,
                                                       cig * kh * kw, ho * wo, stride1=(sh, sw) == (1, 1),
                                                       residual=residual)
        alg = self.algorithm
        if alg in ("depthwise", "direct"):
            self.w = w
        elif alg in ("winograd", "winograd4"):
            if (kh, kw, sh, sw, dh, dw, g) != (3, 3, 1, 1, 1, 1, 1):
                raise ValueError(f"{alg} needs a 3x3, stride-1, undilated, ungrouped conv")
            self._wino_setup(w, 2 if alg == "winograd" else 4)
            # one thread: the nk GEMMs on packed weights where that measured faster (kernels/_packgemm.py)
            self.wino_packed = _packgemm.WinoGemms.fit(self.u, dt, self.th_n * self.tw_n)
            self.wino_panels = self._wino_panels_fit()
        elif alg in ("gemm1x1", "packedwide"):
            if (kh, kw, pt, pl, pb, pr) != (1, 1, 0, 0, 0, 0):
                raise ValueError(f"{alg} needs a 1x1, unpadded conv")
            self.wmat = w.reshape(g, co // g, cig)
            if alg == "packedwide":  # packed weights, wide maps (kernels/_packgemm.py)
                if g != 1 or dt != np.float32 or (sh, sw) != (1, 1) or ho * wo < _packgemm.NRW:
                    raise ValueError(f"packedwide needs an ungrouped float32 stride-1 conv, >= {_packgemm.NRW} pixels")
                self.wide = _packgemm.WideGemm(self.wmat[0])
        elif alg in ("im2col", "packed", "direct_cin"):
            kdim = cig * kh * kw
            self.wmat = w.reshape(g, co // g, kdim)
            self.kdim = kdim
            self.band = max(1, min(ho, _IM2COL_BAND_ELEMS // max(1, kdim * wo)))
            if alg == "packed":  # packed-weight GEMM (kernels/_packgemm.py)
                if g != 1 or dt != np.float32:
                    raise ValueError("packed needs an ungrouped float32 conv")
                self.packed = _packgemm.PackedGemm(self.wmat[0])
                self.pack_offsets = None  # (made on the first one-thread call)
            if alg == "direct_cin":  # few input channels, one thread (kernels/_direct.py)
                if g != 1 or dt != np.float32 or co % _direct.CB or wo < _direct.LANES:
                    raise ValueError(f"direct_cin needs an ungrouped float32 conv, C_out a multiple of "
                                     f"{_direct.CB}, at least {_direct.LANES} output columns")
                self.direct = _direct.DirectSmallCin(x_shape, w, self.b, self.act, self.slope, self.stride,
                                                     self.pad, self.dilation, self.y_shape)
        else:
            raise ValueError(f"unknown conv algorithm {alg!r}")

    def _wino_setup(self, w: np.ndarray, f: int) -> None:
        """Weights and tiling of Winograd F(f x f, 3x3), f = 2 or 4 (``w`` the conv weights)."""
        c, co = self.x_shape[1], self.y_shape[1]
        ho, wo = self.y_shape[2:]
        self.nk = (f + 2) ** 2  # GEMMs (transformed tile elements)
        self.u = winograd_weights(w) if f == 2 else winograd4_weights(w)
        self.tw_n = -(-wo // f)
        self.th_n = -(-ho // f)
        least, elems = (_WINO_MIN_TILES, _WINO_BAND_ELEMS) if f == 2 else (_WINO4_MIN_TILES, _WINO4_BAND_ELEMS)
        self.max_tiles = max(least, elems // (self.nk * (c + co)))
        band = max(1, min(self.th_n, self.max_tiles // self.tw_n))
        self.band = -(-self.th_n // -(-self.th_n // band))  # as many bands, of balanced heights

    def _choose(self, c, co, cig, kh, kw, ho, wo) -> str:
        (sh, sw), (pt, pl, pb, pr), (dh, dw), g = self.stride, self.pad, self.dilation, self.groups
        if g == c and cig == 1 and g > 1:
            return "depthwise"
        if kh == kw == 1 and pt == pl == pb == pr == 0:
            return "gemm1x1"
        if ((kh, kw, sh, sw, dh, dw, g) == (3, 3, 1, 1, 1, 1, 1) and c >= WINOGRAD_MIN_CIN
                and co >= WINOGRAD_MIN_COUT and ho * wo >= WINOGRAD_MIN_PIXELS and ho >= 2 and wo >= 2):
            t2, t4 = -(-ho // 2) * -(-wo // 2), -(-ho // 4) * -(-wo // 4)
            if (t4 >= max(WINOGRAD4_MIN_TILES, WINOGRAD4_MIN_TILES_ACC)
                    and WINOGRAD4_MIN_CIN_COUT <= c * co <= WINOGRAD4_MAX_CIN_COUT and 36 * t4 <= 0.8 * 16 * t2):
                return "winograd4"
            if t4 >= WINOGRAD4_SMALL_MIN_TILES and c * co <= WINOGRAD4_SMALL_MAX_CIN_COUT:
                return "winograd4"
            if (WINOGRAD4_NARROW and t4 >= WINOGRAD4_NARROW_MIN_TILES and c <= WINOGRAD4_NARROW_MAX_CIN
                    and co <= WINOGRAD4_NARROW_MAX_COUT):
                return "winograd4"
            return "winograd"
        if g == 1 and co <= DIRECT_MAX_COUT and cig * kh * kw >= DIRECT_MIN_K:
            return "direct"
        if _direct.fits(self.dtype, g, c, co, cig * kh * kw, wo):
            return "direct_cin"
        return "im2col"

    @ieee
    def __call__(self, x: np.ndarray, out: np.ndarray | None = None, *,
                 residual: np.ndarray | None = None) -> np.ndarray:
        if x.shape != self.x_shape or x.dtype != self.dtype:
            raise ShapeError("conv2d plan: input does not match the planned shape/dtype",
                             expected=f"{self.x_shape} {self.dtype}", got=f"{x.shape} {x.dtype}")
        if (residual is None) == self.residual or (residual is not None and (
                residual.shape != self.y_shape or residual.dtype != self.dtype)):
            raise ShapeError("conv2d plan: a residual of the output's shape and dtype iff planned with one",
                             expected=f"{self.y_shape} {self.dtype}" if self.residual else "no residual",
                             got=None if residual is None else f"{residual.shape} {residual.dtype}")
        x = np.ascontiguousarray(x)
        y = np.empty(self.y_shape, dtype=self.dtype) if out is None else out
        alg = self.algorithm
        (sh, sw), (pt, pl, _, _), (dh, dw) = self.stride, self.pad, self.dilation
        if alg == "depthwise":
            self._depthwise(x, y)
        elif alg == "direct":
            _direct_small_cout(x, self.w, self.b, sh, sw, pt, pl, dh, dw, self.act, self.slope, y)
        elif alg == "gemm1x1":
            if self._gemm1x1(x, y, residual):
                return y
        elif alg in ("winograd", "winograd4"):
            self._winograd(x, y)
        elif alg == "packed":
            if self._packed(x, y, residual):
                return y
        elif alg == "packedwide":
            if self._packed_wide(x, y, residual):
                return y
        elif alg == "direct_cin" and _split_threads(self.macs) == 1:
            self.direct(x, y)
        elif alg != "direct_cin" or not self._split_region("direct_units", x, y):
            # (direct_cin with several threads: kernels/_packsplit.py in one region, else im2col's split)
            self._im2col(x, y)
        if residual is not None:  # act(y + residual), y already holding conv + bias
            n, co = self.y_shape[:2]
            yr = y.reshape(n * co, -1)
            rr = np.ascontiguousarray(residual).reshape(n * co, -1)
            _bias_res_act_cols(yr, rr, self._res_zero, self.res_act, self._res_slope, self.six, 0, yr.shape[1])
        return y

    def _gemm1x1(self, x, y, res=None) -> bool:
        """The 1x1 GEMMs; True when the residual (if any) is applied too (one thread: in the
        epilogue)."""
        n, c, h, wd = self.x_shape
        sh, sw = self.stride
        if sh != 1 or sw != 1:  # the pixels a strided 1x1 conv reads, as one contiguous array
            h, wd = self.y_shape[2:]
            xs = _scratch(n * c * h * wd, self.dtype, "subsample").reshape(n, c, h, wd)
            np.copyto(xs, x[:, :, ::sh, ::sw])
            x = xs
        g = self.groups
        cig = c // g
        cog = y.shape[1] // g
        nt = _split_threads(n * cog * c * h * wd)
        if nt > 1:
            _split_gemm(self.wmat, x.reshape(n * g, cig, h * wd), y.reshape(n * g, cog, h * wd),
                        self.b.reshape(g, cog), self.slope.reshape(g, cog), g, self.act,
                        self.act != 0 or self.has_bias, nt)
            return res is None
        res = None if res is None else np.ascontiguousarray(res)
        for i in range(n):
            xi = x[i].reshape(c, h * wd)
            yi = y[i].reshape(g * cog, h * wd)
            ri = None if res is None else res[i].reshape(g * cog, h * wd)
            for gi in range(g):
                sl = slice(gi * cog, (gi + 1) * cog)
                _gemm_epilogue(self.wmat[gi], xi[gi * cig : (gi + 1) * cig], yi[sl], self.b[sl], self.res_act,
                               self.slope[sl], None if ri is None else ri[sl])
        return True

    def _im2col(self, x, y):
        n, c, h, wd = self.x_shape
        _, co, ho, wo = self.y_shape
        (sh, sw), (pt, pl, _, _), (dh, dw), g = self.stride, self.pad, self.dilation, self.groups
        cig, cog = c // g, co // g
        kh, kw = self.khw
        kdim, band = self.kdim, self.band
        nt = _split_threads(n * co * kdim * ho * wo)
        if nt > 1:
            self._im2col_split(x, y, nt)
            return
        buf = _scratch(kdim * band * wo, self.dtype, "im2col")
        for i in range(n):
            for gi in range(g):
                xin = x[i, gi * cig : (gi + 1) * cig]
                xd = _phases(xin, sw, "phases") if sw > 1 else xin.reshape(cig, h, 1, wd)
                yout = y[i, gi * cog : (gi + 1) * cog].reshape(cog, ho * wo)
                bg, sg = self.b[gi * cog : (gi + 1) * cog], self.slope[gi * cog : (gi + 1) * cog]
                for oh0 in range(0, ho, band):
                    oh1 = min(ho, oh0 + band)
                    cb = buf[: kdim * (oh1 - oh0) * wo].reshape(kdim, (oh1 - oh0) * wo)
                    _im2col_phased(xd, wd, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cb)
                    np.matmul(self.wmat[gi], cb, out=yout[:, oh0 * wo : oh1 * wo])
                    if self.act != 0 or self.has_bias:
                        _bias_act_cols(yout, bg, self.act, sg, oh0 * wo, oh1 * wo)

    # ---- the packed-weight GEMM (kernels/_packgemm.py): one thread, small maps ----
    def _packed(self, x, y, res=None) -> bool:
        """The packed GEMM per image, reading its im2col in place (from a zero-padded copy when
        padded), then the epilogue; several threads: the same split over one numba region
        (:meth:`_split_region`), else the im2col / 1x1 split paths. True when the residual (if
        any) is applied too."""
        n = self.x_shape[0]
        _, co, ho, wo = self.y_shape
        if _split_threads(self.macs) > 1:
            if self._split_region("packed_units", x, y, res):
                return True
            if self.khw == (1, 1) and self.pad == (0, 0, 0, 0):
                return self._gemm1x1(x, y, res)
            self._im2col(x, y)
            return False
        for i in range(n):
            ri = None if res is None else np.ascontiguousarray(res[i]).reshape(co, ho * wo)
            self._packed_image(self._packed_input(x, i), y[i].reshape(co, ho * wo), ri)
        return True

    def _packed_image(self, xi, yi, ri) -> None:
        """yi (C_out, Ho * Wo) = the packed GEMM of one image xi (as :meth:`_packed_input` gives
        it, its offsets made) with bias, the residual ri (or None) and activation: applied as the
        tiles store (``_packgemm.FUSED``) or in a pass afterwards. One thread."""
        if _packgemm.FUSED:
            self.packed.offsets(xi.reshape(-1), *self.pack_offsets[:2], yi, (self.b, ri, self.res_act, self.slope,
                                                                             self.six))
            return
        self.packed.offsets(xi.reshape(-1), *self.pack_offsets[:2], yi)
        if ri is not None:
            _bias_res_act_cols(yi, ri, self.b, self.res_act, self.slope, self.six, 0, yi.shape[1])
        elif self.act != 0 or self.has_bias:
            _bias_act_cols(yi, self.b, self.act, self.slope, 0, yi.shape[1])

    def _packed_input(self, x, i):
        """Image i of x as the packed GEMM reads it: zero-padded into a scratch copy when the
        conv pads; for strided unpadded 1x1 convs (_packgemm.SUBSAMPLE) a contiguous copy of the
        pixels read (a cache-sized X for every row panel). The offsets into it
        (``pack_offsets`` = (kofs, coffs, subsampled)) are made on the first call, again when the
        switch changes."""
        _, c, h, wd = self.x_shape
        pt, pl, pb, pr = self.pad
        ho, wo = self.y_shape[2:]
        sub = _packgemm.SUBSAMPLE and self.khw == (1, 1) and self.stride != (1, 1) and self.pad == (0, 0, 0, 0)
        if self.pack_offsets is None or self.pack_offsets[2] != sub:
            (sh, sw), (dh, dw), (kh, kw) = self.stride, self.dilation, self.khw
            self.pack_offsets = (*(_packgemm.matrix_offsets(c, ho * wo) if sub else _packgemm.conv_offsets(
                c, h + pt + pb, wd + pl + pr, kh, kw, sh, sw, dh, dw, ho, wo)), sub)
        xi = x[i]
        if sub:
            xs = _scratch(c * ho * wo, self.dtype, "subsample").reshape(c, ho, wo)
            np.copyto(xs, xi[:, :: self.stride[0], :: self.stride[1]])
            return xs
        if pt or pl or pb or pr:
            xp = _scratch(c * (h + pt + pb) * (wd + pl + pr), self.dtype, "packed_pad").reshape(
                c, h + pt + pb, wd + pl + pr)
            xp.fill(0)
            xp[:, pt : pt + h, pl : pl + wd] = xi
            xi = xp
        return xi

    def _split_region(self, name: str, x, y, res=None) -> bool:
        """The packed, packedwide or direct_cin kernel split over the threads of one numba parallel region
        (kernels/_packsplit.py, ``name`` its driver), image by image; bit for bit the one-thread
        results. False (nothing done) where no region can run: switched off, the threading layer
        not TBB, another thread's region running."""
        nt = _region_threads(_split_threads(self.macs))
        if nt < 2:
            return False
        from refnet.kernels import _packsplit as ps

        if not ps.enabled() or not PARALLEL_LOCK.acquire(blocking=False):
            return False
        try:
            units = getattr(self, "_units", None)
            if units is None or units[0] != nt or units[2] != ps.UNITS_PER_THREAD:
                co, ho, wo = self.y_shape[1:]
                table = (ps.packed_table(co, ho * wo, nt) if name == "packed_units"
                         else ps.wide_table(co, ho * wo, self.wide.nbw, nt) if name == "wide_units"
                         else ps.direct_table(co, ho, nt))
                units = self._units = (nt, table, ps.UNITS_PER_THREAD)
            make_args = {"packed_units": self._packed_args, "wide_units": self._wide_args,
                         "direct_units": self._direct_args}[name]
            for i in range(x.shape[0]):
                args = make_args(x, y, res, i)
                ps.PARALLEL[name](nt, *args, units[1], np.zeros(1, np.int64))
                if name == "direct_units" and args[-1] is not y[i]:
                    y[i] = args[-1]
        finally:
            PARALLEL_LOCK.release()
        return True

    def _packed_args(self, x, y, res, i) -> tuple:
        """The packed driver's arguments for image i (before its units and counter)."""
        co, ho, wo = self.y_shape[1:]
        yi = y[i].reshape(co, ho * wo)
        xf = self._packed_input(x, i).reshape(-1)
        ri = yi if res is None else np.ascontiguousarray(res[i]).reshape(co, ho * wo)
        act = self.act if res is None else self.res_act
        return (self.packed.wp, xf, *self.pack_offsets[:2], yi, self.b, act, self.slope, self.six, ri, res is not None,
                self.act != 0 or self.has_bias)

    def _wide_args(self, x, y, res, i) -> tuple:
        """The wide packed driver's arguments for image i (before its units and counter)."""
        c, h, wd = self.x_shape[1:]
        co = self.y_shape[1]
        yi = y[i].reshape(co, h * wd)
        ri = yi if res is None else np.ascontiguousarray(res[i]).reshape(co, h * wd)
        return (self.wide.wq, x[i].reshape(c, h * wd), yi, self.b, ri, res is not None, self.res_act, self.slope,
                self.six, self.wide.nbw)

    def _direct_args(self, x, y, res, i) -> tuple:
        """The direct_cin driver's arguments for image i (the output last; ``res``: unused, the
        plan's post-pass adds it)."""
        d = self.direct
        yi = y[i] if y[i].flags.c_contiguous else np.empty(y.shape[1:], np.float32)
        return (d.wp, d._phases(x[i]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, yi)

    def _packed_wide(self, x, y, res=None) -> bool:
        """1x1 stride-1 convs on wide maps: the wide packed GEMM per image, bias, residual and
        activation in its stores; several threads: the same split over one numba region
        (:meth:`_split_region`), else the 1x1 split path. True when the residual (if any) is
        applied too."""
        n, c, h, wd = self.x_shape
        co = self.y_shape[1]
        if _split_threads(self.macs) > 1:
            return self._split_region("wide_units", x, y, res) or self._gemm1x1(x, y, res)
        for i in range(n):
            ri = None if res is None else np.ascontiguousarray(res[i]).reshape(co, h * wd)
            self.wide(x[i].reshape(c, h * wd), y[i].reshape(co, h * wd), self.b, ri, self.res_act, self.slope,
                      self.six)
        return True

    def _dw_flat_pixels(self) -> int:
        """The zero-padded scratch plane of :func:`_depthwise_flat` for this plan (pixels)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        ho, wo = self.y_shape[2:]
        kh, kw = self.khw
        return ((ho - 1) * sh + (kh - 1) * dh + 1) * ((wo - 1) * sw + (kw - 1) * dw + 1)

    def _depthwise(self, x, y):
        """The depthwise kernel for the plan's shape, whole -- or, with several worker threads,
        its serial build on blocks of (image, input channels and their outputs) over the pool
        (every output plane is computed by the same code either way)."""
        (sh, sw), (pt, pl, _, _), (dh, dw) = self.stride, self.pad, self.dilation
        n, c, h, wd = self.x_shape
        act, slope, six = self.act, self.slope, self.six
        if self.khw == (3, 3) and dh == dw == 1 and h * wd <= DW_FLAT_MAX_PIXELS:
            kern = _depthwise3x3_flat

            def call(fn, xs, ws, bs, ss, ys):
                fn(xs, ws, bs, sh, sw, pt, pl, act, ss, six, ys)
        elif self.khw == (3, 3):
            kern = _depthwise3x3

            def call(fn, xs, ws, bs, ss, ys):
                fn(xs, ws, bs, sh, sw, pt, pl, dh, dw, act, ss, six, ys)
        elif h * wd <= DW_FLAT_MAX_PIXELS and self._dw_flat_pixels() <= 4 * DW_FLAT_MAX_PIXELS:
            kern = _depthwise_flat

            def call(fn, xs, ws, bs, ss, ys):
                fn(xs, ws, bs, sh, sw, pt, pl, dh, dw, act, ss, six, ys)
        else:
            kern = _depthwise

            def call(fn, xs, ws, bs, ss, ys):
                fn(xs, ws, bs, sh, sw, pt, pl, dh, dw, act, ss, ys)
        parts = _workers.ranges(c, y.size * self.khw[0] * self.khw[1])
        if len(parts) == 1:
            call(kern, x, self.w, self.b, slope, y)
            return
        m = self.y_shape[1] // c  # channel multiplier
        blocks = [(i, c0, c1) for i in range(n) for c0, c1 in parts]
        serial = kern.serial

        def block(k: int) -> None:
            i, c0, c1 = blocks[k]
            o = slice(c0 * m, c1 * m)
            call(serial, x[i : i + 1, c0:c1], self.w[o], self.b[o], slope[o], y[i : i + 1, o])

        _workers.run(block, len(blocks))

    def _im2col_split(self, x, y, nt):
        """_im2col over the worker threads: bands of output rows (im2col, GEMM and epilogue of
        a band in one thread) when there are enough of them, else each image and group's
        im2col in one piece, then its GEMM in row x column blocks."""
        n, c, h, wd = self.x_shape
        _, co, ho, wo = self.y_shape
        (sh, sw), (pt, pl, _, _), (dh, dw), g = self.stride, self.pad, self.dilation, self.groups
        cig, cog = c // g, co // g
        kh, kw = self.khw
        kdim = self.kdim
        epilogue = self.act != 0 or self.has_bias
        per = _per_thread(nt)
        nb = max(-(-ho // self.band), min(-(-per * nt // (n * g)), ho * wo // _SPLIT_MIN_COLS,
                                          _max_pieces(cog * kdim * ho * wo)))
        nb = min(nb, ho)
        units = [(i, gi) for i in range(n) for gi in range(g)]
        if len(units) * nb < 2 * nt:  # small maps: one im2col per image and group, split GEMMs
            _, table = _gemm_blocks(1, cog, kdim, ho * wo, nt, _block_limits(nt))
            drv = _drivers()
            if drv is not None and table is not None:  # one nogil call per thread: im2col, then GEMM blocks
                cb = _scratch(kdim * ho * wo, self.dtype, "im2col").reshape(kdim, ho * wo)
                args = (x, self.wmat, y.reshape(n, g, cog, ho * wo), self.b.reshape(g, cog), self.slope.reshape(g, cog),
                        np.array([kh, kw, sh, sw, pt, pl, dh, dw, wo], np.int64),
                        np.array(_parts(ho, per * nt), np.int64), table, self.act, epilogue,
                        np.zeros(4 * n * g, np.int64), cb)
                _run_driver(drv, "im2col_small", nt, args)
                return
            for i, gi in units:
                cb = _scratch(kdim * ho * wo, self.dtype, "im2col").reshape(kdim, ho * wo)
                _im2col(x[i, gi * cig : (gi + 1) * cig], kh, kw, sh, sw, pt, pl, dh, dw, 0, ho, wo, cb)
                sl = slice(gi * cog, (gi + 1) * cog)
                _split_gemm(self.wmat[gi : gi + 1], cb[None], y[i, sl].reshape(1, cog, ho * wo),
                            self.b[sl].reshape(1, cog), self.slope[sl].reshape(1, cog), 1, self.act, epilogue, nt)
            return
        bands = [(u, r) for u in units for r in _parts(ho, nb)]
        drv = _drivers()
        if drv is not None and cog > 1 and kdim > 1 and min(r1 - r0 for _, (r0, r1) in bands) * wo > 1:
            geom = np.array([kh, kw, sh, sw, pt, pl, dh, dw, wo], np.int64)
            table = np.array([(i, gi, r0, r1) for (i, gi), (r0, r1) in bands], np.int64)
            size = kdim * max(r1 - r0 for _, (r0, r1) in bands) * wo
            counter = np.zeros(2, np.int64)
            args = (x, self.wmat, y.reshape(n, g, cog, ho * wo), self.b.reshape(g, cog), self.slope.reshape(g, cog),
                    geom, table, self.act, epilogue, counter)
            _run_driver(drv, "im2col_bands", min(nt, len(bands)), args, (("im2col", size),), self.dtype)
            return
        im2col, bias_act = _im2col.serial, _bias_act_cols.serial

        def block(k: int) -> None:
            (i, gi), (oh0, oh1) = bands[k]
            cb = _scratch(kdim * (oh1 - oh0) * wo, self.dtype, "im2col").reshape(kdim, (oh1 - oh0) * wo)
            im2col(x[i, gi * cig : (gi + 1) * cig], kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cb)
            yout = y[i, gi * cog : (gi + 1) * cog].reshape(cog, ho * wo)
            np.matmul(self.wmat[gi], cb, out=yout[:, oh0 * wo : oh1 * wo])
            if epilogue:
                sl = slice(gi * cog, (gi + 1) * cog)
                bias_act(yout, self.b[sl], self.act, self.slope[sl], oh0 * wo, oh1 * wo)

        _workers.run(block, len(bands))

    def _winograd(self, x, y):
        """F(2,3) or F(4,3) (``self.nk`` = 16 or 36 GEMMs) in one thread; several threads:
        :meth:`_winograd_split` or :meth:`_winograd4_split`."""
        n, c, _, _ = self.x_shape
        co = self.y_shape[1]
        pt, pl = self.pad[0], self.pad[1]
        tw_n, th_n, band, nk = self.tw_n, self.th_n, self.band, self.nk
        tiles = th_n * tw_n
        nt = _split_threads(n * nk * c * co * tiles)
        if nt > 1:
            if nk == 16:
                self._winograd_split(x, y, nt)
            else:
                self._winograd4_split(x, y, nt)
            return
        if self.wino_panels is not None and self._wino_panels_on():
            self.wino_panels(x, y, self.act, self.six)
            return
        wino_in, wino_out = (_wino_in, _wino_out) if nk == 16 else (_wino4_in, _wino4_out)
        # several whole images per GEMM when one image is smaller than a band (batches of
        # small feature maps: a wider GEMM), else bands of tile rows of one image
        per = max(1, min(n, self.max_tiles // tiles)) if band >= th_n else 1
        nt = max(band * tw_n, per * tiles)
        vbuf = _scratch(nk * c * nt, self.dtype, "wino_v")
        mbuf = _scratch(nk * co * nt, self.dtype, "wino_m")
        b, act, slope, six = self.b, self.act, self.slope, self.six
        if per > 1 or band >= th_n:
            for i0 in range(0, n, per):
                i1 = min(n, i0 + per)
                t = (i1 - i0) * tiles
                v = vbuf[: nk * c * t].reshape(nk, c, t)
                m = mbuf[: nk * co * t].reshape(nk, co, t)
                for i in range(i0, i1):
                    wino_in(x[i], pt, pl, 0, th_n, tw_n, (i - i0) * tiles, v)
                self._wino_gemms(v, m)
                for i in range(i0, i1):
                    wino_out(m, b, act, slope, six, 0, th_n, tw_n, (i - i0) * tiles, y[i])
            return
        for i in range(n):
            for ty0 in range(0, th_n, band):
                ty1 = min(th_n, ty0 + band)
                t = (ty1 - ty0) * tw_n
                v = vbuf[: nk * c * t].reshape(nk, c, t)
                m = mbuf[: nk * co * t].reshape(nk, co, t)
                wino_in(x[i], pt, pl, ty0, ty1, tw_n, 0, v)
                self._wino_gemms(v, m)
                wino_out(m, b, act, slope, six, ty0, ty1, tw_n, 0, y[i])

    def _wino_panels_fit(self):
        """The one-thread panel path (kernels/_winopanel.py) for Winograd plans on small maps
        (each image one band, v within its bound; float32, numba jitting), else None."""
        from refnet.kernels import _winopanel  # (imports this module: not at the top)
        from refnet.kernels._lazyjit import jit_disabled

        c, co, tiles = self.x_shape[1], self.y_shape[1], self.th_n * self.tw_n
        if self.band < self.th_n or jit_disabled() or not _winopanel.fits(self.dtype, self.nk, c, co, tiles):
            return None
        return _winopanel.WinoPanels(self.u, self.b, self.slope, self.y_shape, self.pad, self.th_n, self.tw_n)

    @staticmethod
    def _wino_panels_on() -> bool:
        from refnet.kernels import _winopanel

        return _winopanel.PANELS and not _NUMPY_MODE.on

    def _wino_gemms(self, v, m):
        """m[e] = u[e] @ v[e] for the nk transformed elements, one thread: the packed GEMMs
        (``wino_packed``, while ``_packgemm.WINO_PACKED``) or one batched np.matmul."""
        if self.wino_packed is not None and _packgemm.WINO_PACKED:
            self.wino_packed(v, m)
        else:
            np.matmul(self.u, v, out=m)

    def _winograd4_split(self, x, y, nt):
        """F(4,3) over the worker threads (serial builds; every tile and GEMM element computed as
        in one thread): bands of tile rows where they are wide enough, else per image the input
        transform in bands of tile rows, the 36 GEMMs in row x column blocks and the output
        transform in bands -- one driver call per thread where :func:`_drivers` allows, else
        Python blocks (:func:`_split_gemm` and three runs of the pool)."""
        n, c, _, _ = self.x_shape
        co = self.y_shape[1]
        tw_n, th_n = self.tw_n, self.th_n
        nb = min(th_n, max(-(-th_n // self.band), -(-_BANDS4_PER_THREAD * nt // n)))
        if th_n * tw_n // nb >= _BANDS4_MIN_TILES:
            bands = [(i, r) for i in range(n) for r in _parts(th_n, nb)]
            if not self._wino_bands_drv(x, y, bands, nt):
                self._wino_bands_py(x, y, bands, _wino4_in.serial, _wino4_out.serial)
            return
        t = th_n * tw_n
        v = _scratch(36 * c * t, self.dtype, "wino_v").reshape(36, c, t)
        m = _scratch(36 * co * t, self.dtype, "wino_m").reshape(36, co, t)
        if not self._wino_phases_drv(x, y, nt, v, m):
            self._wino_phases_py(x, y, nt, v, m, _wino4_in.serial, _wino4_out.serial)

    def _wino_bands_drv(self, x, y, bands, nt) -> bool:
        """Winograd (``self.nk`` GEMMs) in bands of tile rows (i, (ty0, ty1)) through the
        ``wino_bands`` driver (one nogil call per thread); False (nothing done) without drivers
        or for 1-wide GEMMs."""
        c, co, nk, tw_n = self.x_shape[1], self.y_shape[1], self.nk, self.tw_n
        drv = _drivers()
        if drv is None or co <= 1 or c <= 1 or min(r1 - r0 for _, (r0, r1) in bands) * tw_n <= 1:
            return False
        table = np.array([(i, r0, r1) for i, (r0, r1) in bands], np.int64)
        t = max(r1 - r0 for _, (r0, r1) in bands) * tw_n
        args = (x, self.u, y, self.b, self.act, self.slope, self.six, self.pad[0], self.pad[1], tw_n, table,
                np.zeros(1, np.int64))
        _run_driver(drv, "wino_bands", min(nt, len(bands)), args, (("wino_v", nk * c * t), ("wino_m", nk * co * t)),
                    self.dtype)
        return True

    def _wino_phases_drv(self, x, y, nt, v, m) -> bool:
        """Winograd of whole images in three phases (transform bands, GEMM blocks, transform
        bands) through the ``wino_small`` driver into ``v`` / ``m``; False (nothing done) without
        drivers or when a GEMM block would be 1 wide."""
        n, c = self.x_shape[:2]
        co, nk, th_n = self.y_shape[1], self.nk, self.th_n
        _, table = _gemm_blocks(nk, co, c, th_n * self.tw_n, nt, _block_limits(nt))
        drv = _drivers()
        if drv is None or table is None:
            return False
        rows = np.array(_parts(th_n, _per_thread(nt) * nt), np.int64)
        args = (x, self.u, y, self.b, self.act, self.slope, self.six, self.pad[0], self.pad[1], self.tw_n, rows, table,
                np.zeros(6 * n, np.int64), v, m)
        _run_driver(drv, "wino_small", nt, args)
        return True

    def _wino_bands_py(self, x, y, bands, wino_in, wino_out) -> None:
        """Winograd (``self.nk`` GEMMs) over the worker pool in Python blocks, one band of tile
        rows (i, (ty0, ty1)) of ``bands`` each: input transform, GEMMs, output transform."""
        c, co, nk, tw_n = self.x_shape[1], self.y_shape[1], self.nk, self.tw_n
        pt, pl = self.pad[0], self.pad[1]
        u, b, act, slope, six = self.u, self.b, self.act, self.slope, self.six

        def block(k: int) -> None:
            i, (ty0, ty1) = bands[k]
            t = (ty1 - ty0) * tw_n
            v = _scratch(nk * c * t, self.dtype, "wino_v").reshape(nk, c, t)
            m = _scratch(nk * co * t, self.dtype, "wino_m").reshape(nk, co, t)
            wino_in(x[i], pt, pl, ty0, ty1, tw_n, 0, v)
            np.matmul(u, v, out=m)
            wino_out(m, b, act, slope, six, ty0, ty1, tw_n, 0, y[i])

        _workers.run(block, len(bands))

    def _wino_phases_py(self, x, y, nt, v, m, wino_in, wino_out) -> None:
        """Winograd (``self.nk`` GEMMs) of whole images over the worker pool in Python blocks,
        per image three runs: the input transform in bands of tile rows into ``v``, the GEMMs
        into ``m`` in row x column blocks (:func:`_split_gemm`), the output transform in bands."""
        co, nk, tw_n, th_n = self.y_shape[1], self.nk, self.tw_n, self.th_n
        pt, pl = self.pad[0], self.pad[1]
        u, b, act, slope, six = self.u, self.b, self.act, self.slope, self.six
        zero = np.zeros((1, co), self.dtype)
        rows_in, rows_out = _workers.ranges(th_n, v.size), _workers.ranges(th_n, m.size)
        for i in range(self.x_shape[0]):
            xi, yi = x[i], y[i]
            _workers.run_ranges(lambda r0, r1, xi=xi: wino_in(xi, pt, pl, r0, r1, tw_n, r0 * tw_n, v), rows_in)
            _split_gemm(u, v, m, zero, zero, nk, 0, False, nt)
            _workers.run_ranges(lambda r0, r1, yi=yi: wino_out(m, b, act, slope, six, r0, r1, tw_n, r0 * tw_n, yi),
                                rows_out)

    def _winograd_split(self, x, y, nt):
        """_winograd over the worker threads: bands of tile rows (input transform, GEMMs and
        output transform of a band in one thread) when there are enough of them; else, per
        image, the input transform in bands of tile rows, the 16 GEMMs in row x column blocks,
        then the output transform in bands of tile rows (three runs of the pool)."""
        n, c, _, _ = self.x_shape
        co = self.y_shape[1]
        tw_n, th_n = self.tw_n, self.th_n
        nb = max(-(-th_n // self.band), min(-(-_per_thread(nt) * nt // n), th_n * tw_n // _SPLIT_MIN_COLS,
                                            _max_pieces(co * c * th_n * tw_n)))
        nb = min(nb, th_n)
        if n * nb < 2 * nt:  # small maps: the transforms in bands of tile rows, the GEMMs in blocks
            t = th_n * tw_n
            v = _scratch(16 * c * t, self.dtype, "wino_v").reshape(16, c, t)
            m = _scratch(16 * co * t, self.dtype, "wino_m").reshape(16, co, t)
            if not self._wino_phases_drv(x, y, nt, v, m):  # (one nogil call per thread: all three phases)
                self._wino_phases_py(x, y, nt, v, m, _wino_in.serial, _wino_out.serial)
            return
        bands = [(i, r) for i in range(n) for r in _parts(th_n, nb)]
        if not self._wino_bands_drv(x, y, bands, nt):
            self._wino_bands_py(x, y, bands, _wino_in.serial, _wino_out.serial)


def conv2d_plan(
    x_shape: Sequence[int],
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    groups: int = 1,
    activation: str | None = None,
    negative_slope: float | np.ndarray = 0.0,
    algorithm: str | None = None,
    residual: bool = False,
) -> Conv2dPlan:
    """Plan ``conv2d`` for inputs of ``x_shape`` (and w's dtype): a callable ``plan(x, out=None)``
    with the same semantics (with ``residual``: ``plan(x, out=None, residual=r)``, r of the
    output's shape). ``algorithm`` forces one of "gemm1x1", "im2col", "winograd", "depthwise",
    "direct" (default: chosen by shape)."""
    return Conv2dPlan(x_shape, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups,
                      activation=activation, negative_slope=negative_slope, algorithm=algorithm,
                      residual=residual)


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    groups: int = 1,
    activation: str | None = None,
    negative_slope: float | np.ndarray = 0.0,
    out: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """Fast grouped, dilated 2-D cross-correlation, same semantics as ``conv2d_reference``
    (Caffe Convolution / cv2.dnn), with an optional fused ReLU / leaky ReLU / PReLU (slope per
    output channel) / ReLU6, applied after adding ``residual`` when given (broadcast against the
    output, which may then be larger); ``out`` receives the result when given. Plans and runs (see
    :class:`Conv2dPlan` for the algorithms)."""
    as_float_array(x, "x", 4)
    as_float_array(w, "w", 4)
    same_dtype("x", x, "w", w)
    if residual is not None:
        same_dtype("x", x, "residual", residual)
        *_, ho, wo = _conv_geometry(x.shape, x.dtype, w, b, stride, pad, dilation, groups, "conv2d")
        if residual.shape != (x.shape[0], w.shape[0], ho, wo):  # broadcasting: add, then activation
            y = conv2d(x, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups)
            return _activate_reference(np.add(y, residual), activation, negative_slope)
    plan = Conv2dPlan(x.shape, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups,
                      activation=activation, negative_slope=negative_slope, residual=residual is not None)
    if out is not None and (out.shape != plan.y_shape or out.dtype != plan.dtype or not out.flags.c_contiguous):
        raise ShapeError("conv2d: out must be a C-contiguous array of the output's shape and dtype",
                         expected=f"{plan.y_shape} {plan.dtype}", got=f"{out.shape} {out.dtype}")
    return plan(x, out, residual=None if residual is None else np.ascontiguousarray(residual))


# --------------------------------------------------------------------------------------
# separable conv
# --------------------------------------------------------------------------------------


def _separable_args(x, dw_weight, pw_weight):
    as_float_array(x, "x", 4)
    as_float_array(dw_weight, "dw_weight", 4)
    as_float_array(pw_weight, "pw_weight", (2, 4))
    same_dtype("x", x, "dw_weight", dw_weight)
    same_dtype("x", x, "pw_weight", pw_weight)
    c = x.shape[1]
    if dw_weight.shape[1] != 1 or dw_weight.shape[0] % max(c, 1):
        raise ShapeError(
            "separable conv: dw_weight must be (m * C_in, 1, kh, kw)",
            expected=f"(m*{c}, 1, kh, kw)",
            got=f"dw_weight {dw_weight.shape} for x {x.shape}",
        )
    pw = pw_weight.reshape(pw_weight.shape[0], -1, 1, 1) if pw_weight.ndim == 2 else pw_weight
    if pw.shape[1:] != (dw_weight.shape[0], 1, 1):
        raise ShapeError(
            "separable conv: pw_weight must be (C_out, m * C_in, 1, 1) or (C_out, m * C_in)",
            expected=f"(C_out, {dw_weight.shape[0]}, 1, 1)",
            got=f"pw_weight {pw_weight.shape}",
        )
    return pw


def _separable(conv, x, dw_weight, pw_weight, dw_bias, pw_bias, stride, pad, dilation, activation):
    """``conv`` depthwise (groups = C_in), then ``conv`` pointwise with the activation."""
    pw = _separable_args(x, dw_weight, pw_weight)
    t = conv(x, dw_weight, dw_bias, stride=stride, pad=pad, dilation=dilation, groups=x.shape[1])
    return conv(t, pw, pw_bias, activation=activation)


def separable_conv2d(
    x: np.ndarray,
    dw_weight: np.ndarray,
    pw_weight: np.ndarray,
    dw_bias: np.ndarray | None = None,
    pw_bias: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    activation: str | None = None,
) -> np.ndarray:
    """Depthwise conv (groups = C_in, weights (m*C_in, 1, kh, kw)) then a 1x1 pointwise conv
    (weights (C_out, m*C_in[, 1, 1])); ``activation`` applies to the final output only
    (Keras SeparableConv2D / a MobileNet dw+pw pair)."""
    return _separable(conv2d, x, dw_weight, pw_weight, dw_bias, pw_bias, stride, pad, dilation, activation)


def separable_conv2d_reference(
    x: np.ndarray,
    dw_weight: np.ndarray,
    pw_weight: np.ndarray,
    dw_bias: np.ndarray | None = None,
    pw_bias: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    activation: str | None = None,
) -> np.ndarray:
    """Reference of ``separable_conv2d``: ``conv2d_reference`` depthwise, then pointwise."""
    return _separable(conv2d_reference, x, dw_weight, pw_weight, dw_bias, pw_bias, stride, pad, dilation,
                      activation)


# --------------------------------------------------------------------------------------
# transposed convolution
# --------------------------------------------------------------------------------------


def _deconv_geometry(x_shape, dtype, w, b, stride, pad, dilation, groups, output_padding, fn):
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    p = pad4(pad, "pad")
    a = pair(output_padding, "output_padding", allow_zero=True)
    g = _groups(groups)
    n, c, h, wd = x_shape
    ci, cog, kh, kw = w.shape
    if ci != c or c % g:
        raise ShapeError(
            f"{fn}: w must be (C_in, C_out // groups, kh, kw) with C_in = x.shape[1] = {c} "
            f"divisible by groups={g}",
            expected=f"w.shape[0] == {c}",
            got=f"x {tuple(x_shape)}, w {w.shape}",
        )
    if kh < 1 or kw < 1:
        raise ShapeError(f"{fn}: empty kernel", got=f"w {w.shape}")
    for ax, (ak, sk, dk) in enumerate(zip(a, s, d)):
        if ak >= max(sk, dk):
            raise ShapeError(
                f"{fn}: output_padding must be smaller than stride or dilation (axis {ax})",
                expected=f"< {max(sk, dk)}",
                got=a,
            )
    bb = _check_bias(b, cog * g, dtype, fn)
    ho = conv_transpose_output_size(h, kh, s[0], p[0], p[2], d[0], a[0])
    wo = conv_transpose_output_size(wd, kw, s[1], p[1], p[3], d[1], a[1])
    return s, p, d, a, g, bb, ho, wo


def _deconv_args(x, w, b, stride, pad, dilation, groups, output_padding, fn):
    as_float_array(x, "x", 4)
    as_float_array(w, "w", 4)
    same_dtype("x", x, "w", w)
    return _deconv_geometry(x.shape, x.dtype, w, b, stride, pad, dilation, groups, output_padding, fn)


@ieee
def conv_transpose2d_reference(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    groups: int = 1,
    output_padding: IntPair = (0, 0),
) -> np.ndarray:
    """Transposed convolution (Caffe Deconvolution / Torch SpatialFullConvolution / cv2):
    every input pixel scatters ``x[n, c, i, j] * w[c, o, p, q]`` to full-output position
    ``(i*sh + p*dh, j*sw + q*dw)``; the output is that full map cropped by ``pad`` (top/left)
    and extended by ``output_padding`` rows/cols at the bottom/right, plus bias."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw), _, g, b, ho, wo = _deconv_args(
        x, w, b, stride, pad, dilation, groups, output_padding, "conv_transpose2d_reference"
    )
    n, c, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = c // g
    # full (uncropped) output, large enough to also hold the output_padding rows/cols
    hf = max((h - 1) * sh + dh * (kh - 1) + 1, pt + ho)
    wf = max((wd - 1) * sw + dw * (kw - 1) + 1, pl + wo)
    full = np.zeros((n, g, cog, hf, wf), dtype=x.dtype)
    xg = x.reshape(n, g, cig, h * wd)
    wg = w.reshape(g, cig, cog, kh, kw)
    for p in range(kh):
        for q in range(kw):
            # all input pixels land, through tap (p, q), on a strided grid of the full output
            target = full[:, :, :, p * dh : p * dh + sh * (h - 1) + 1 : sh,
                          q * dw : q * dw + sw * (wd - 1) + 1 : sw]
            # per group: (C_out/g, C_in/g) @ (C_in/g, H*W)
            target += (wg[:, :, :, p, q].transpose(0, 2, 1) @ xg).reshape(n, g, cog, h, wd)
    y = full.reshape(n, g * cog, hf, wf)[:, :, pt : pt + ho, pl : pl + wo].copy()
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y




class ConvTranspose2dPlan:
    """A transposed convolution with fixed weights, parameters and input shape: per image and
    group, one GEMM ``W^T @ x`` per band of input rows into a cache-sized column buffer, a
    numba col2im scatter, and bias + activation on the output rows the band finished.

    ``plan(x, out=None)`` runs it on ``x`` of ``plan.x_shape``/``plan.dtype``.
    """

    def __init__(self, x_shape: Sequence[int], w: np.ndarray, b: np.ndarray | None = None, *,
                 stride: IntPair = (1, 1), pad: Pad = (0, 0, 0, 0), dilation: IntPair = (1, 1),
                 groups: int = 1, output_padding: IntPair = (0, 0), activation: str | None = None,
                 negative_slope: float | np.ndarray = 0.0, fn: str = "conv_transpose2d") -> None:
        as_float_array(w, "w", 4)
        x_shape = tuple(int(d) for d in x_shape)
        if len(x_shape) != 4:
            raise ShapeError("x must be 4-D", expected="4-D", got=f"shape {x_shape}")
        dt = w.dtype
        (sh, sw), (pt, pl, _, _), (dh, dw), _, g, b, ho, wo = _deconv_geometry(
            x_shape, dt, w, b, stride, pad, dilation, groups, output_padding, fn)
        n, c, h, wd = x_shape
        _, cog, kh, kw = w.shape
        co = cog * g
        cig = c // g
        self.x_shape = x_shape
        self.y_shape = (n, co, ho, wo)
        self.dtype = dt
        self.geom = (kh, kw, sh, sw, pt, pl, dh, dw)
        self.groups = g
        self.act, self.slope = _activation(activation, negative_slope, co, dt)
        self.b = b if b is not None else np.zeros(co, dt)
        self.has_bias = b is not None
        # (g, cog*kh*kw, cig): row (o*kh + p)*kw + q of group gi is w[gi*cig:(gi+1)*cig, o, p, q]
        self.wt = np.ascontiguousarray(w.reshape(g, cig, cog * kh * kw).transpose(0, 2, 1))
        self.band = max(1, min(h, _IM2COL_BAND_ELEMS // max(1, cog * kh * kw * wd)))

    @ieee
    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if x.shape != self.x_shape or x.dtype != self.dtype:
            raise ShapeError("conv_transpose2d plan: input does not match the planned shape/dtype",
                             expected=f"{self.x_shape} {self.dtype}", got=f"{x.shape} {x.dtype}")
        x = np.ascontiguousarray(x)
        if out is None:
            y = np.zeros(self.y_shape, dtype=self.dtype)
        else:
            y = out
            y[...] = 0
        n, c, h, wd = self.x_shape
        _, co, ho, wo = self.y_shape
        kh, kw, sh, sw, pt, pl, dh, dw = self.geom
        g = self.groups
        cig, cog = c // g, co // g
        rows = cog * kh * kw
        band = self.band
        epilogue = self.act != 0 or self.has_bias
        buf = _scratch(rows * band * wd, self.dtype, "col2im")
        for i in range(n):
            for gi in range(g):
                xg = x[i, gi * cig : (gi + 1) * cig].reshape(cig, h * wd)
                yg = y[i, gi * cog : (gi + 1) * cog]
                bg, sg = self.b[gi * cog : (gi + 1) * cog], self.slope[gi * cog : (gi + 1) * cog]
                done = 0
                for ih0 in range(0, h, band):
                    ih1 = min(h, ih0 + band)
                    cols = buf[: rows * (ih1 - ih0) * wd].reshape(rows, (ih1 - ih0) * wd)
                    np.matmul(self.wt[gi], xg[:, ih0 * wd : ih1 * wd], out=cols)
                    _col2im_rows(cols, ih0, ih1, wd, kh, kw, sh, sw, pt, pl, dh, dw, yg)
                    # output rows no later input row reaches are final
                    ready = ho if ih1 == h else min(ho, max(0, ih1 * sh - pt))
                    if epilogue and ready > done:
                        _bias_act_rows(yg, bg, self.act, sg, done, ready)
                        done = ready
        return y


def conv_transpose2d_plan(
    x_shape: Sequence[int],
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    groups: int = 1,
    output_padding: IntPair = (0, 0),
    activation: str | None = None,
    negative_slope: float | np.ndarray = 0.0,
) -> ConvTranspose2dPlan:
    """Plan ``conv_transpose2d`` for inputs of ``x_shape``: a callable ``plan(x, out=None)``."""
    return ConvTranspose2dPlan(x_shape, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups,
                               output_padding=output_padding, activation=activation,
                               negative_slope=negative_slope)


def conv_transpose2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: IntPair = (1, 1),
    pad: Pad = (0, 0, 0, 0),
    dilation: IntPair = (1, 1),
    groups: int = 1,
    output_padding: IntPair = (0, 0),
    activation: str | None = None,
    negative_slope: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Fast transposed convolution, same semantics as ``conv_transpose2d_reference``, with an
    optional fused activation (as ``conv2d``): banded GEMM ``W^T @ x`` + numba col2im."""
    as_float_array(x, "x", 4)
    as_float_array(w, "w", 4)
    same_dtype("x", x, "w", w)
    return ConvTranspose2dPlan(x.shape, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups,
                               output_padding=output_padding, activation=activation,
                               negative_slope=negative_slope)(x)


# --------------------------------------------------------------------------------------
# fully connected
# --------------------------------------------------------------------------------------


def _linear_args(x, w, b, axis, fn):
    as_float_array(x, "x")
    as_float_array(w, "w", 2)
    same_dtype("x", x, "w", w)
    if x.ndim == 0:
        raise ShapeError(f"{fn}: x must have at least one dimension", got=x.shape)
    if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < max(x.ndim, 1):
        raise ShapeError(f"{fn}: axis out of range for x of shape {x.shape}",
                         expected=f"-{x.ndim} <= axis < {x.ndim}", got=axis)
    axis = int(axis) % x.ndim
    k = int(np.prod(x.shape[axis:], dtype=np.int64))
    if w.shape[1] != k:
        raise ShapeError(
            f"{fn}: x flattened from axis {axis} has {k} features but w is (N, K) = {w.shape}",
            expected=f"w.shape[1] == {k}",
            got=f"x {x.shape}, w {w.shape}",
        )
    bb = _check_bias(b, w.shape[0], x.dtype, fn)
    return axis, k, bb


@ieee
def linear_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, axis: int = 1
) -> np.ndarray:
    """Fully connected (Caffe InnerProduct / Torch Linear / cv2): flatten x from ``axis`` to
    (outer, K), then ``y[m, o] = sum_k x[m, k] * w[o, k] + b[o]``; y is x.shape[:axis] + (N,)."""
    axis, k, b = _linear_args(x, w, b, axis, "linear_reference")
    x2 = x.reshape(-1, k)
    y = np.einsum("mk,ok->mo", x2, w)
    if b is not None:
        y = y + b
    return y.reshape(x.shape[:axis] + (w.shape[0],))


@ieee
def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, axis: int = 1
) -> np.ndarray:
    """Fast fully connected layer (same semantics as ``linear_reference``): one BLAS GEMM
    ``x2 @ w.T`` on the flattened input (with several worker threads, one per block of output
    features) plus an in-place bias add."""
    axis, k, b = _linear_args(x, w, b, axis, "linear")
    x2 = x.reshape(-1, k)
    nt = _split_threads(x2.shape[0] * k * w.shape[0])
    if nt > 1:  # blocks of output features over the worker threads (the BLAS has one thread then)
        y = np.empty((x2.shape[0], w.shape[0]), x.dtype)
        parts = _parts(w.shape[0], min(_BLOCKS_PER_THREAD * nt, w.shape[0] // _SPLIT_MIN_COLS,
                                       _max_pieces(x2.shape[0] * k * w.shape[0])))

        def block(j: int) -> None:
            j0, j1 = parts[j]
            np.matmul(x2, w[j0:j1].T, out=y[:, j0:j1])

        _workers.run(block, len(parts))
    else:
        y = x2 @ w.T
    if b is not None:
        y += b
    return y.reshape(x.shape[:axis] + (w.shape[0],))
