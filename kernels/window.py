"""N-d sliding-window pooling with ONNX geometry: per-axis kernel, stride, dilation, begin/end
pads and a precomputed output size (floor or ceil mode, see the importer's ``_pool_out``);
max (with flattened argmax indices), average (count_include_pad or not) and Lp; and MaxUnpool.

The reference loops over the kernel offsets and reads each offset's strided view of the
padded input, vectorised over every output element. The fast ``pool_nd`` differs for float32
max pooling without indices: 2-D (ONNX MaxPool on images) runs a numba kernel per plane (one
row of vertical maxima per output row, then the window maxima along it, with straight-line
loops for 3x3 windows at stride 1 and 2: 2-4x faster than the separable loop on SqueezeNet's,
ResNet's and GoogLeNet's pools); other ranks are separable in place in float32 (exact for a
maximum), not through float64 copies.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels import _packgemm, _poolrow, _workers
from refnet.kernels._check import ieee
from refnet.kernels._jit import JIT_OPTIONS, jit, prange
from refnet.kernels._lazyjit import MODE, jit_disabled, lazy_njit, numba_loaded
from refnet.kernels._parallel import twin
from refnet.kernels._poolrow import take3
from refnet.kernels.pool import _run_planes  # (plane blocks over the worker threads)
from refnet.kernels.softmax import _softmax_row

_inline = lazy_njit(**{**JIT_OPTIONS, "inline": "always"})  # (inlined in numba's IR)
_reassoc = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"reassoc"}})  # (serial)

__all__ = ["pool_nd", "pool_nd_reference", "pool_nd_step", "gap_softmax_step", "max_unpool_nd",
           "max_unpool_nd_reference"]


def _offsets(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    return [tuple(o) for o in np.ndindex(*kernel)]


@ieee
def pool_nd_reference(x: np.ndarray, mode: str, kernel: Sequence[int], strides: Sequence[int],
                      dilations: Sequence[int], pads: Sequence[int], out: Sequence[int], *,
                      count_include_pad: bool = False, p: int = 2, storage_order: int = 0,
                      with_indices: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Output element o reads input positions o*stride - pad_begin + k*dilation for every kernel
    offset k. max: the largest value (the first one on ties; padding never wins), indices into
    the flattened input (row-major; storage_order 1: spatial axes column-major). avg: sum over
    the positions inside the input divided by their count, or with ``count_include_pad`` by the
    count of positions inside the padded extent [-pad_begin, size + pad_end). lp: (sum |x|^p)^(1/p)."""
    k = len(kernel)
    if x.ndim != k + 2 or not len(strides) == len(dilations) == len(out) == k or len(pads) != 2 * k:
        raise ShapeError("pooling geometry does not fit the input rank", expected=f"rank {k + 2}", got=x.shape)
    spatial = x.shape[2:]
    pb, pe = list(pads[:k]), list(pads[k:])
    # pad enough that every window (ceil mode may reach past the end padding) is in range
    ends = [max(pe[i], (out[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i] - pb[i])
            for i in range(k)]
    fill = -np.inf if mode == "max" else 0.0
    width = [(0, 0), (0, 0)] + [(pb[i], ends[i]) for i in range(k)]
    xp = np.pad(x.astype(np.float64) if x.dtype != np.float64 else x, width, constant_values=fill)
    inside = np.pad(np.ones(spatial), [(pb[i], ends[i]) for i in range(k)], constant_values=0.0)
    padded = np.pad(np.ones([spatial[i] + pb[i] + pe[i] for i in range(k)]),
                    [(0, ends[i] - pe[i]) for i in range(k)], constant_values=0.0)
    n, c = x.shape[:2]
    acc = np.full((n, c, *out), fill, np.float64)
    count = np.zeros(tuple(out))
    idx = np.zeros((n, c, *out), np.int64) if with_indices else None
    for off in _offsets(kernel):
        sl = tuple(slice(off[i] * dilations[i], off[i] * dilations[i] + (out[i] - 1) * strides[i] + 1, strides[i])
                   for i in range(k))
        v = xp[(slice(None), slice(None)) + sl]
        if mode == "max":
            better = v > acc
            acc = np.where(better, v, acc)
            if idx is not None:
                pos = [np.arange(out[i]) * strides[i] + off[i] * dilations[i] - pb[i] for i in range(k)]
                grids = np.meshgrid(*pos, indexing="ij")
                if storage_order == 1:
                    flat = np.zeros(tuple(out), np.int64)
                    mult = 1
                    for i in range(k):
                        flat += grids[i] * mult
                        mult *= spatial[i]
                else:
                    flat = np.ravel_multi_index(tuple(np.clip(g, 0, s - 1) for g, s in zip(grids, spatial)),
                                                spatial).astype(np.int64)
                idx = np.where(better, flat, idx)
        elif mode == "avg":
            acc = acc + v
            count = count + (padded if count_include_pad else inside)[sl]
        else:
            acc = acc + np.abs(v) ** p
    if mode == "avg":
        acc = acc / count
    elif mode == "lp":
        acc = acc ** (1.0 / p)
    y = acc.astype(x.dtype)
    if idx is not None:
        plane = math.prod(spatial)
        base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * plane
        return y, (idx + base.reshape((n, c) + (1,) * k)).astype(np.int64)
    return y


def _covers_all(spatial: Sequence[int], kernel: Sequence[int], dilations: Sequence[int], pads: Sequence[int],
                out: Sequence[int]) -> bool:
    """Whether the output is one window holding every input element (and padding, if any):
    per axis one output, an undilated kernel from -pad_begin reaching the last element."""
    k = len(kernel)
    return (len(spatial) == len(dilations) == len(out) == k and len(pads) == 2 * k
            and all(int(out[i]) == 1 and int(dilations[i]) == 1 and 0 <= int(pads[i])
                    and int(kernel[i]) - int(pads[i]) >= int(spatial[i]) for i in range(k)))


@twin(0)
def _max_pool2d_nd(x, kh, kw, sh, sw, dh, dw, pt, pl, y):
    """y[n, c, oh, ow] = the max of x[n, c, oh*sh - pt + p*dh, ow*sw - pl + q*dw] over the taps
    inside the input, -inf when there is none; a NaN never wins (``v > b``, as the reference).
    Per output row: the element-wise max of its kh input rows into a -inf padded row (contiguous,
    vectorises), then each window's kw taps along that row (straight-line for 3 taps at stride 2
    and 1). Element indexing from 0 in every loop, no slices per row (a slice per row, or an
    index that may be negative, i.e. wrapped around, keeps LLVM from vectorising): 3x3/2 pools of
    64x111x111 0.19 -> 0.13 ms, 192x56x56 0.19 -> 0.09 ms."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    wp = (wo - 1) * sw + (kw - 1) * dw + 1  # the padded row's length
    j0 = min(pl, wp)
    j1 = max(min(wp, pl + w), j0)  # padded-row columns that hold input columns
    span = j1 - j0  # padded-row column j0 + i holds input column i (j0 == pl when span > 0)
    neg = x.dtype.type(-np.inf)
    planes = n_ * c_
    x3 = x.reshape(planes, h, w)
    y3 = y.reshape(planes, ho, wo)
    chunks = min(planes, 16)  # (one row buffer per chunk of planes: prange bodies must not share it)
    for ch in prange(chunks):
        row = np.full(wp, neg, dtype=x.dtype)  # columns outside [j0, j1) stay -inf
        inner = row[j0:]
        for t in range(planes * ch // chunks, planes * (ch + 1) // chunks):
            for oh in range(ho):
                ih0 = oh * sh - pt
                if kh == 3 and dh == 1 and 0 <= ih0 and ih0 + 2 < h:  # 3 rows inside: one pass
                    for i in range(span):
                        b = neg
                        v = x3[t, ih0, i]
                        b = v if v > b else b
                        v = x3[t, ih0 + 1, i]
                        b = v if v > b else b
                        v = x3[t, ih0 + 2, i]
                        inner[i] = v if v > b else b
                else:
                    for i in range(span):
                        inner[i] = neg
                    for p in range(kh):
                        ih = ih0 + p * dh
                        if 0 <= ih < h:
                            for i in range(span):
                                v = x3[t, ih, i]
                                b = inner[i]
                                inner[i] = v if v > b else b
                if kw == 3 and dw == 1 and sw == 2:  # the common 3x3 / stride 2
                    for ow in range(wo):
                        b = row[2 * ow]
                        v = row[2 * ow + 1]
                        b = v if v > b else b
                        v = row[2 * ow + 2]
                        y3[t, oh, ow] = v if v > b else b
                elif kw == 3 and dw == 1 and sw == 1:  # 3x3 / stride 1 (GoogLeNet's inception pools)
                    for ow in range(wo):
                        b = row[ow]
                        v = row[ow + 1]
                        b = v if v > b else b
                        v = row[ow + 2]
                        y3[t, oh, ow] = v if v > b else b
                else:
                    for ow in range(wo):
                        b = row[ow * sw]
                        for q in range(1, kw):
                            v = row[ow * sw + q * dw]
                            b = v if v > b else b
                        y3[t, oh, ow] = b


@jit
def _max3_down(x3, t, r, j, b):
    """The max of b and x3[t, r .. r + 2, j], selected in that order (``v > b``: a NaN never wins)."""
    v = x3[t, r, j]
    b = v if v > b else b
    v = x3[t, r + 1, j]
    b = v if v > b else b
    v = x3[t, r + 2, j]
    return v if v > b else b


@twin(0)
def _max_pool3s2(x, y, stack):
    """``_max_pool2d_nd`` for 3x3 windows at stride 2 without padding whose windows all lie
    inside the input (y's size: 2*ho + 1 <= h, 2*wo + 1 <= w; SqueezeNet's three pools). Per
    output row, one pass over its three input rows writes the vertical maxima of the even
    columns to ``ev`` and of the odd ones to ``od`` (stride-2 loads that LLVM vectorises as
    interleaved groups), then ``y[ow] = max(ev[ow], od[ow], ev[ow + 1])`` reads contiguous rows:
    the stride-2 window selection ``_max_pool2d_nd`` runs scalar is gone (64x111x111 ->
    55x55: 150 -> 100 us, 128x55x55: 90 -> 62 us, 256x27x27: 58 -> 45 us, one thread, hot).
    Same ``v > b`` selects (a NaN never wins; a window of NaNs only gives -inf as the
    reference's: the first select is against -inf). ``stack``: scratch rows on the stack for
    output rows shorter than ``_poolrow.STACK_ROW`` (``_poolrow.STACK_ROWS``, ``REFNET_POOL3S2_STACK``):
    LLVM then knows they alias neither the input nor the output and drops the run-time overlap
    checks it put before every row's two loops (heap rows). Paired, hot, one thread: 64x111x111
    0.99, 128x55x55 0.92, 256x27x27 0.86; SqueezeNet in a pass: 71 -> 66, 48 -> 41 us."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    neg = x.dtype.type(-np.inf)
    planes = n_ * c_
    x3 = x.reshape(planes, h, w)
    y3 = y.reshape(planes, ho, wo)
    chunks = min(planes, 16)  # (scratch rows per chunk: prange bodies must not share them)
    for ch in prange(chunks):
        t0, t1 = planes * ch // chunks, planes * (ch + 1) // chunks
        if stack and wo < _poolrow.STACK_ROW:
            _evod_planes(x3, y3, t0, t1, _packgemm._carray(_packgemm._stack(128), (128,)),
                         _packgemm._carray(_packgemm._stack(128), (128,)), neg)
        else:
            _evod_planes(x3, y3, t0, t1, np.empty(wo + 1, dtype=x.dtype), np.empty(wo, dtype=x.dtype), neg)


@_inline
def _evod_planes(x3, y3, t0, t1, ev, od, neg):
    """The rows of :func:`_max_pool3s2` for the planes t0 .. t1 - 1, with the scratch rows ev
    (at least wo + 1 values) and od (wo)."""
    ho, wo = y3.shape[1], y3.shape[2]
    for t in range(t0, t1):
        for oh in range(ho):
            r = 2 * oh
            for k in range(wo):
                ev[k] = _max3_down(x3, t, r, 2 * k, neg)
                od[k] = _max3_down(x3, t, r, 2 * k + 1, neg)
            ev[wo] = _max3_down(x3, t, r, 2 * wo, neg)
            take3(ev, od, 0, y3, t, oh, 0)


#: 3x3 / stride 2 max pools without padding, windows inside, through :func:`_max_pool3s2`;
#: ``REFNET_POOL3S2=0`` or EVEN_ODD = False: :func:`_max_pool2d_nd` as before
EVEN_ODD = os.environ.get("REFNET_POOL3S2", "1").strip() not in ("0", "off", "no", "false")


def _is_3s2(kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int],
            x_shape: Sequence[int], out: Sequence[int]) -> bool:
    """Whether :func:`_max_pool3s2` computes this 2-D max pool (and :data:`EVEN_ODD` is on)."""
    return (EVEN_ODD and len(x_shape) == 4 and len(out) == 2 and tuple(int(v) for v in kernel) == (3, 3)
            and tuple(int(v) for v in strides) == (2, 2) and tuple(int(v) for v in dilations) == (1, 1)
            and not any(int(v) for v in pads) and int(out[0]) >= 1 and int(out[1]) >= 1
            and 2 * int(out[0]) + 1 <= int(x_shape[2]) and 2 * int(out[1]) + 1 <= int(x_shape[3]))


@twin(0)
def _plane_means(x, y):
    """y[p] = the mean of row p of x (P, L), summed in float64 (8 interleaved partial sums, then
    the rest), rounded once to y's dtype: the global average pool. One thread, vs NumPy's float64
    mean: 1000 13x13 planes 0.07 -> 0.05 ms, 2048 7x7 planes 0.07 -> 0.03 ms."""
    p_, n = x.shape
    for p in prange(p_):
        # (np.float64, not 0.0: run as Python, a float plus a float32 scalar is a float32)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float64(0.0)
        j = 0
        while j + 8 <= n:
            s0 += x[p, j]
            s1 += x[p, j + 1]
            s2 += x[p, j + 2]
            s3 += x[p, j + 3]
            s4 += x[p, j + 4]
            s5 += x[p, j + 5]
            s6 += x[p, j + 6]
            s7 += x[p, j + 7]
            j += 8
        s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        while j < n:
            s += x[p, j]
            j += 1
        y[p] = s / n


@_reassoc
def _plane_means_lanes(x, y):
    """:func:`_plane_means` for float32 planes in one thread, vectorised: the float64 sum may be
    reassociated (``fastmath={"reassoc"}`` on this loop only: LLVM sums vector lanes of float64
    partial sums, in an order fixed for a given build and CPU), then rounded once to float32,
    i.e. the float64 mean to float32 rounding either way. 1000 13x13 planes 53 -> 16 us,
    2048 7x7 planes 36 -> 14 us (one thread, hot)."""
    p_, n = x.shape
    for p in range(p_):
        row = x[p]
        s = np.float64(0.0)
        for j in range(n):
            s += np.float64(row[j])
        y[p] = s / n


#: float32 global averages in one thread through :func:`_plane_means_lanes`;
#: ``REFNET_GAP_LANES=0`` or MEAN_LANES = False: :func:`_plane_means` as before
MEAN_LANES = os.environ.get("REFNET_GAP_LANES", "1").strip() not in ("0", "off", "no", "false")


def _means(x2: np.ndarray, y1: np.ndarray) -> None:
    """y1[p] = the mean of row p of the C-contiguous x2 (P, L): :func:`_plane_means_lanes` for
    float32 with one worker thread (and :data:`MEAN_LANES`), else :func:`_plane_means`."""
    if MEAN_LANES and x2.dtype == np.float32 and _workers.workers() == 1:
        _plane_means_lanes(x2, y1)
    else:
        _plane_means(x2, y1)


@jit
def _gap_softmax(x2, m, out):
    """m[p] = the mean of row p of x2 (P, L) (:func:`_plane_means_lanes`), out = softmax(m)
    (refnet.kernels.softmax._softmax_row): a classifier's global average pool and softmax in one
    call, the same two kernels as the two steps."""
    _plane_means_lanes(x2, m)
    _softmax_row(m, out)


#: compiled programs run a global average pool read only (through reshapes) by a one-row
#: softmax as one step (:func:`gap_softmax_step`); ``REFNET_GAP_SOFTMAX=0`` or GAP_SOFTMAX = False:
#: the separate steps (read when a program is compiled)
GAP_SOFTMAX = os.environ.get("REFNET_GAP_SOFTMAX", "1").strip() not in ("0", "off", "no", "false")


def gap_softmax_step(x_shape: Sequence[int], dtype: np.dtype, out_shape: Sequence[int],
                     plain: Callable[[np.ndarray], np.ndarray], *,
                     python_kernels: bool = False) -> Callable[[np.ndarray], np.ndarray] | None:
    """``step(x)`` = ``plain(x)``, the steps global average pool of ``x_shape`` (1, C, ...) ->
    reshapes -> softmax over the C means, of output shape ``out_shape``, as one numba call
    (:func:`_gap_softmax`; SqueezeNet's tail ran 25 + 19 us in a pass as two steps after the big
    last conv, 4 us hot: the interpreter's and the dispatcher's code ran cold twice). float32,
    a C-contiguous input, one worker thread (then the GAP step too took ``_plane_means_lanes``),
    numba kernels; else ``plain``. None without :data:`GAP_SOFTMAX` / :data:`MEAN_LANES`, for
    other shapes (C from 9 to the row softmax's limit) and under ``NUMBA_DISABLE_JIT=1`` unless
    ``python_kernels`` (tests: the kernel's body as Python)."""
    _softmax = importlib.import_module("refnet.kernels.softmax")  # (the package's `softmax` is the function)
    if jit_disabled() and not python_kernels:
        return None
    c = int(x_shape[1]) if len(x_shape) >= 2 else 0
    if not (GAP_SOFTMAX and MEAN_LANES and _softmax.ROW_KERNEL and np.dtype(dtype) == np.float32
            and int(x_shape[0]) == 1 and math.prod(int(d) for d in out_shape) == c and 8 < c <= _softmax.ROW_MAX):
        return None
    shape = tuple(int(d) for d in out_shape)

    def step(x: np.ndarray) -> np.ndarray:
        if x.dtype != np.float32 or not x.flags.c_contiguous or MODE.on or not numba_loaded() \
                or _workers.workers() > 1:
            return plain(x)
        out = np.empty(shape, np.float32)
        _gap_softmax(x.reshape(c, -1), np.empty(c, np.float32), out.reshape(-1))
        return out

    return step


@ieee
def pool_nd(x: np.ndarray, mode: str, kernel: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int], pads: Sequence[int], out: Sequence[int], *,
            count_include_pad: bool = False, p: int = 2, storage_order: int = 0,
            with_indices: bool = False, into: np.ndarray | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fast twin of :func:`pool_nd_reference`. Max pooling without indices runs in the input's
    dtype, one spatial axis at a time (a box maximum is separable), with one in-place ``fmax`` per
    offset along the axis (a maximum is exact in any precision, and
    ``fmax`` keeps the running value when the new one is NaN, as the reference's ``v > acc`` does),
    on an input padded with -inf; 2-D through the numba kernel :func:`_max_pool2d_nd`. A
    window that covers the whole input (global average, GoogLeNet's 7x7 pool on 6x6 with its
    padding not counted) is one float64 sum per plane (:func:`_plane_means`). Every other
    case is the reference. ``into`` (without indices): a C-contiguous array of the output's shape and
    dtype that receives the result (the executor's preallocated buffer)."""
    k = len(kernel)
    if mode == "avg" and not with_indices and _covers_all(x.shape[2:], kernel, dilations, pads, out) \
            and (not count_include_pad or not any(pads)):  # global average: one float64 mean per plane
        n, c = x.shape[:2]
        y = np.empty((n, c) + (1,) * k, x.dtype) if into is None else into
        _means(np.ascontiguousarray(x).reshape(n * c, -1), y.reshape(n * c))
        return y
    if mode != "max" or with_indices or x.dtype != np.float32 or x.ndim != k + 2 \
            or not len(strides) == len(dilations) == len(out) == k or len(pads) != 2 * k:
        res = pool_nd_reference(x, mode, kernel, strides, dilations, pads, out, count_include_pad=count_include_pad,
                                p=p, storage_order=storage_order, with_indices=with_indices)
        return res if with_indices else _into(res, into)
    if k == 2 and min(pads) >= 0:
        y = np.empty(x.shape[:2] + (int(out[0]), int(out[1])), x.dtype) if into is None else into
        if _is_3s2(kernel, strides, dilations, pads, x.shape, out):
            _run_planes(_max_pool3s2, (np.ascontiguousarray(x), y, _poolrow.STACK_ROWS), (0, 1))
            return y
        (kh, kw), (sh, sw), (dh, dw) = (tuple(int(v) for v in a) for a in (kernel, strides, dilations))
        _run_planes(_max_pool2d_nd, (np.ascontiguousarray(x), kh, kw, sh, sw, dh, dw, int(pads[0]), int(pads[1]), y),
                    (0, 9))
        return y
    spatial = x.shape[2:]
    pb, pe = list(pads[:k]), list(pads[k:])
    ends = [max(pe[i], (out[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i] - pb[i])
            for i in range(k)]
    if any(pb) or any(ends):
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pb[i], ends[i]) for i in range(k)], constant_values=-np.inf)
    else:
        xp = x
    cur = xp
    for i in range(k):  # a box maximum is separable: reduce one spatial axis at a time (exact)
        acc = np.full(cur.shape[:2 + i] + (out[i],) + cur.shape[3 + i:], -np.inf, x.dtype)
        for o in range(kernel[i]):
            sl = [slice(None)] * cur.ndim
            sl[2 + i] = slice(o * dilations[i], o * dilations[i] + (out[i] - 1) * strides[i] + 1, strides[i])
            np.fmax(acc, cur[tuple(sl)], out=acc)
        cur = acc
    return _into(cur, into)


#: compiled programs call the 2-D max pool and global average kernels directly
#: (:func:`pool_nd_step`); ``REFNET_LEAN_POOL=0`` or LEAN_STEP = False: through pool_nd
LEAN_STEP = os.environ.get("REFNET_LEAN_POOL", "1").strip() not in ("0", "off", "no", "false")


def pool_nd_step(x_shape: Sequence[int], dtype: np.dtype, mode: str, kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], pads: Sequence[int], out: Sequence[int], *, count_include_pad: bool = False,
                 p: int = 2, storage_order: int = 0) -> Callable[..., np.ndarray]:
    """``step(x, out=None)`` = ``pool_nd(x, ..., into=out)`` for inputs of ``x_shape`` and
    ``dtype`` (an executor's step, shapes checked when its program was compiled). For float32
    2-D max pooling and global averages, with an ``out`` buffer, a C-contiguous input and one
    worker thread, the kernel is called directly: inside a forward pass pool_nd's own argument
    handling and ``np.errstate`` ran cold after the layer before (SqueezeNet, one thread: 5-12 us
    a step more than hot; both kernels are numba only, nothing to warn about). Otherwise, and
    without :data:`LEAN_STEP`, it is pool_nd."""
    kw = dict(count_include_pad=count_include_pad, p=p, storage_order=storage_order)
    size = out

    def plain(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return pool_nd(x, mode, kernel, strides, dilations, pads, size, into=out, **kw)

    k = len(kernel)
    n, c = int(x_shape[0]), int(x_shape[1])
    if not LEAN_STEP or len(x_shape) != k + 2:
        return plain
    if mode == "avg" and _covers_all(x_shape[2:], kernel, dilations, pads, size) and (
            not count_include_pad or not any(pads)):
        def means(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if out is None or not (x.flags.c_contiguous and out.flags.c_contiguous) or _workers.workers() > 1:
                return plain(x, out)
            _means(x.reshape(n * c, -1), out.reshape(n * c))
            return out

        return means
    if (mode == "max" and np.dtype(dtype) == np.float32 and k == 2 and min(int(v) for v in pads) >= 0
            and len(strides) == len(dilations) == len(size) == 2 and len(pads) == 4):
        (kh, kw_), (sh, sw), (dh, dw) = (tuple(int(v) for v in a) for a in (kernel, strides, dilations))
        pt, pl = int(pads[0]), int(pads[1])
        if _is_3s2(kernel, strides, dilations, pads, x_shape, size):
            def maxpool(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:  # (the even/odd kernel)
                if out is None or not (x.flags.c_contiguous and out.flags.c_contiguous) or _workers.workers() > 1:
                    return plain(x, out)
                _max_pool3s2(x, out, _poolrow.STACK_ROWS)
                return out

            return maxpool

        def maxpool(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if out is None or not (x.flags.c_contiguous and out.flags.c_contiguous) or _workers.workers() > 1:
                return plain(x, out)
            _max_pool2d_nd(x, kh, kw_, sh, sw, dh, dw, pt, pl, out)
            return out

        return maxpool
    return plain


def _into(res: np.ndarray, into: np.ndarray | None) -> np.ndarray:
    if into is None:
        return res
    np.copyto(into, res)
    return into


@ieee
def max_unpool_nd_reference(x: np.ndarray, indices: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """y (zeros of ``out_shape``) with y.flat[indices[i]] = x.flat[i] (flattened over the whole
    tensor, as MaxPool's indices are); a later element wins where indices repeat."""
    idx = np.asarray(indices).astype(np.int64).reshape(-1)
    if idx.size != x.size:
        raise ShapeError("indices must match x", expected=x.shape, got=np.shape(indices))
    total = math.prod(out_shape)
    if idx.size and (idx.min() < 0 or idx.max() >= total):
        raise ShapeError("unpool index outside the output", expected=f"0 <= i < {total}")
    y = np.zeros(total, x.dtype)
    y[idx] = x.reshape(-1)
    return y.reshape(tuple(out_shape))


max_unpool_nd = max_unpool_nd_reference
