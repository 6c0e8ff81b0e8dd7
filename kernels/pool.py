"""Pooling kernels (NCHW): max (with argmax indices), average, global, max-unpooling.

Semantics follow Caffe's PoolingLayer (which cv2.dnn and Torch7 share for symmetric pads):
the output size rounds up by default (``ceil_mode=True``) and drops the last window when it
would start inside the end padding; a window is clipped to the input for MAX and for the
element sum of AVE; AVE's divisor is selectable (``"padded"`` Caffe, ``"valid"`` cv2's rule
for Torch without count_include_pad, ``"kernel"`` Torch7 legacy). Each op ``f`` has a plain
serial loop reference ``f_reference`` (one window per output, as written in Caffe) and a
fast numba kernel (parallel over planes, kernel taps outermost so rows stream contiguously).
With several worker threads (:mod:`refnet.kernels._workers`, sized by ``set_num_threads``) the
fast kernels run their serial build on blocks of (n, c) planes over the pool instead
(:func:`_run_planes`): every plane is computed by the same loop either way, so the results do
not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels import _workers
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels._jit import jit, prange
from refnet.kernels._parallel import twin
from refnet.kernels.conv import _valid_range  # (one definition for convs and pools)
from refnet.kernels.geometry import IntPair, Pad, pad4, pair, pool_output_size

__all__ = [
    "pool_output_size",
    "max_pool",
    "max_pool_reference",
    "avg_pool",
    "avg_pool_reference",
    "global_max_pool2d",
    "global_max_pool2d_reference",
    "global_avg_pool2d",
    "global_avg_pool2d_reference",
    "max_unpool",
    "max_unpool_reference",
]

_DIVISORS = {"padded": 0, "valid": 1, "kernel": 2}

# Caffe writes -FLT_MAX for a MAX window that covers no input element (possible only when
# kernel < stride in ceil mode without padding); its argmax index is -1.
EMPTY_MAX = float(np.finfo(np.float32).min)


# --------------------------------------------------------------------------------------
# shapes and argument checks
# --------------------------------------------------------------------------------------


def _pool_args(x, kernel, stride, pad, ceil_mode, fn):
    as_float_array(x, "x", 4)
    k = pair(kernel, "kernel")
    s = k if stride is None else pair(stride, "stride")
    p = pad4(pad, "pad")
    for ax, name in ((0, "height"), (1, "width")):
        if p[ax] >= k[ax] or p[ax + 2] >= k[ax]:
            raise ShapeError(
                f"{fn}: pad along {name} must be smaller than the kernel (Caffe's check)",
                expected=f"pads < {k[ax]}",
                got=f"pad {p}, kernel {k}",
            )
    n, c, h, w = x.shape
    try:
        ho = pool_output_size(h, k[0], s[0], p[0], p[2], ceil_mode)
        wo = pool_output_size(w, k[1], s[1], p[1], p[3], ceil_mode)
    except ShapeError as e:
        raise ShapeError(
            f"{fn}: kernel {k} does not fit the input {x.shape} padded by {p}: {e}",
            expected="kernel <= padded input",
            got=f"x {x.shape}",
        ) from None
    return k, s, p, ho, wo


def _run_planes(kernel, args: tuple, planar: tuple[int, ...]) -> None:
    """``kernel(*args)`` -- a :func:`~refnet.kernels._parallel.twin` whose first argument is the
    input and whose arguments at the positions ``planar`` (the input included) are C-contiguous
    (N, C, ...) arrays of the same planes -- whole in this thread (one worker, or a small call),
    or its serial build on blocks of planes over the worker pool (the planes are independent)."""
    x = args[0]
    n, c = x.shape[:2]
    parts = _workers.ranges(n * c, x.size)
    if len(parts) == 1:
        kernel(*args)
        return
    flat = {i: args[i].reshape((n * c, 1) + args[i].shape[2:]) for i in planar}
    serial = kernel.serial

    def block(lo: int, hi: int) -> None:
        serial(*[flat[i][lo:hi] if i in flat else a for i, a in enumerate(args)])

    _workers.run_ranges(block, parts)


def _divisor_code(divisor: str) -> int:
    if divisor not in _DIVISORS:
        raise ValueError(f"divisor must be 'padded', 'valid' or 'kernel'; got {divisor!r}")
    return _DIVISORS[divisor]


# --------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------


@jit
def _max_pool_ref(x, kh, kw, sh, sw, pt, pl, y, idx, empty):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    # the window, clipped to the input (Caffe: hend = min(hstart + kh, H))
                    hstart = oh * sh - pt
                    wstart = ow * sw - pl
                    hend = min(hstart + kh, h)
                    wend = min(wstart + kw, w)
                    hstart = max(hstart, 0)
                    wstart = max(wstart, 0)
                    best = empty
                    best_i = -1
                    for i in range(hstart, hend):
                        for j in range(wstart, wend):
                            v = x[n, c, i, j]
                            if best_i == -1 or v > best or (np.isnan(v) and not np.isnan(best)):
                                best = v  # first maximum wins; the first NaN wins over all
                                best_i = i * w + j
                    y[n, c, oh, ow] = best
                    idx[n, c, oh, ow] = best_i


def max_pool_reference(
    x: np.ndarray,
    kernel: IntPair,
    stride: IntPair | None = None,
    pad: Pad = (0, 0, 0, 0),
    *,
    ceil_mode: bool = True,
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max pooling (Caffe/cv2/Torch7): the maximum of each window clipped to the input; the
    index is ``h * W + w`` within the (n, c) plane, first maximum in row-major order on ties,
    NaN if the window holds a NaN. Plain loops, one window per output."""
    (kh, kw), (sh, sw), (pt, pl, _, _), ho, wo = _pool_args(
        x, kernel, stride, pad, ceil_mode, "max_pool_reference"
    )
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    idx = np.empty((n, c, ho, wo), dtype=np.int64)
    _max_pool_ref(x, kh, kw, sh, sw, pt, pl, y, idx, x.dtype.type(EMPTY_MAX))
    return (y, idx) if return_indices else y


# The fast loops below (_max_pool_fast, _max_pool_fast_noidx, _max_pool_sep, _max_pool_s1, _avg_pool_fast) repeat
# their window/clipping skeleton on purpose: each is specialised (with/without argmax, separable,
# divisor per output) so numba emits a branch-free inner loop; the public twins max_pool /
# max_pool_reference and avg_pool / avg_pool_reference share their signatures by design.
@twin(0)
def _max_pool_fast(x, kh, kw, sh, sw, pt, pl, y, idx, empty):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    lo = np.empty(kw, dtype=np.int64)
    hi = np.empty(kw, dtype=np.int64)
    for q in range(kw):  # output columns whose window column q lies inside the input
        lo[q], hi[q] = _valid_range(q - pl, sw, w, wo)
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        for oh in range(ho):
            yrow = y[n, c, oh]
            irow = idx[n, c, oh]
            yrow[:] = empty
            irow[:] = -1
            for p in range(kh):  # taps in row-major order: the first maximum is kept
                ih = oh * sh - pt + p
                if ih < 0 or ih >= h:
                    continue
                for q in range(kw):
                    a = lo[q]
                    m = hi[q] - a
                    start = a * sw + q - pl
                    src = x[n, c, ih, start : start + (m - 1) * sw + 1 : sw]
                    dst = yrow[a : a + m]
                    dsti = irow[a : a + m]
                    base = ih * w + start
                    for k in range(m):
                        v = src[k]
                        b = dst[k]
                        if dsti[k] < 0 or v > b or (v != v and b == b):
                            dst[k] = v
                            dsti[k] = base + k * sw


@jit
def _max_window(x, n, c, hs, he, ws, we, empty):
    """Max of x[n, c, hs:he, ws:we] (clipped window, row-major; NaN sticks), ``empty`` if empty."""
    if hs >= he or ws >= we:
        return empty
    best = x[n, c, hs, ws]
    for i in range(hs, he):
        for j in range(ws, we):
            v = x[n, c, i, j]
            best = v if (v > best or v != v) else best
    return best


@jit
def _max_taps(src, step, taps, length, dst):
    """``dst[k]`` = the max of ``src[k + q * step]`` for q = 0..taps-1, k < length, selected in q
    order (``v > b``: the first maximum is kept; a NaN sticks)."""
    for k in range(length):
        dst[k] = src[k]
    for q in range(1, taps):
        sq = src[q * step :]
        for k in range(length):
            v = sq[k]
            b = dst[k]
            dst[k] = v if (v > b or v != v) else b


@twin(0)
def _max_pool_fast_noidx(x, kh, kw, sh, sw, pt, pl, y, empty):
    """Max only (no argmax), tap by tap: output columns whose window lies inside the row take
    a branch-free select per tap over contiguous views (vectorises); border columns clip
    their window. (Better than the separable kernel for small windows, e.g. 2x2.)"""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    lo, hi = _valid_range(-pl, sw, w - kw + 1, wo)  # columns whose whole window is inside
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        for oh in range(ho):
            yrow = y[n, c, oh]
            hs = oh * sh - pt
            he = min(hs + kh, h)
            hs = max(hs, 0)
            if hs >= he:
                yrow[:] = empty
                continue
            for ow in range(wo):
                if lo <= ow < hi:
                    continue
                ws = ow * sw - pl
                yrow[ow] = _max_window(x, n, c, hs, he, max(ws, 0), min(ws + kw, w), empty)
            if hi <= lo:
                continue
            q0 = lo * sw - pl
            dst = yrow[lo:hi]
            m = hi - lo
            for ih in range(hs, he):
                src = x[n, c, ih, q0:]
                for q in range(kw):
                    if ih == hs and q == 0:
                        for k in range(m):
                            dst[k] = src[k * sw]
                    elif sw == 1:
                        sq = src[q:]
                        for k in range(m):
                            v = sq[k]
                            b = dst[k]
                            dst[k] = v if (v > b or v != v) else b  # a NaN sticks
                    else:
                        for k in range(m):
                            v = src[k * sw + q]
                            b = dst[k]
                            dst[k] = v if (v > b or v != v) else b


@twin(0)
def _max_pool_sep(x, kh, kw, sh, sw, pt, pl, y, empty):
    """Max only (no argmax), separably: per output row, the element-wise max of the window's
    input rows (contiguous, vectorises), then the max over each window's columns of that row
    (interior windows without bounds tests, border ones clipped). Max is associative (a NaN
    sticks at each step), so the value is the window's max; ties keep +-0 as either zero."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    lo, hi = _valid_range(-pl, sw, w - kw + 1, wo)  # columns whose whole window is inside
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        vm = np.empty(w, dtype=x.dtype)
        hm = np.empty(w, dtype=x.dtype)
        for oh in range(ho):
            yrow = y[n, c, oh]
            hs = oh * sh - pt
            he = min(hs + kh, h)
            hs = max(hs, 0)
            if hs >= he:
                yrow[:] = empty
                continue
            first = x[n, c, hs]
            for j in range(w):
                vm[j] = first[j]
            for ih in range(hs + 1, he):
                src = x[n, c, ih]
                for j in range(w):
                    v = src[j]
                    b = vm[j]
                    vm[j] = v if (v > b or v != v) else b  # a NaN sticks
            for ow in range(wo):
                if lo <= ow < hi:
                    continue
                ws = max(ow * sw - pl, 0)
                we = min(ow * sw - pl + kw, w)
                if ws >= we:
                    yrow[ow] = empty
                    continue
                best = vm[ws]
                for j in range(ws + 1, we):
                    v = vm[j]
                    best = v if (v > best or v != v) else best
                yrow[ow] = best
            if hi <= lo:
                continue
            q0 = lo * sw - pl
            src = vm[q0:]
            dst = yrow[lo:hi]
            m = hi - lo
            if sw == 1:
                for k in range(m):
                    dst[k] = src[k]
                for q in range(1, kw):
                    sq = src[q:]
                    for k in range(m):
                        v = sq[k]
                        b = dst[k]
                        dst[k] = v if (v > b or v != v) else b
            else:  # the window max at every column of the span (contiguous), then every sw-th
                _max_taps(src, 1, kw, (m - 1) * sw + 1, hm)
                for k in range(m):
                    dst[k] = hm[k * sw]


@twin(0)
def _max_pool_2x2(x, kh, kw, sh, sw, pt, pl, y, empty):
    """Max only, 2x2 windows at stride 2 without top/left padding (VGG-style pools; the
    geometry arguments are unused), every window starting inside the input: per output element
    the max of its inputs in one pass, selected in ``_max_pool_sep``'s order (the two rows of each
    column, then the two columns), so bit-identical to it; a window clipped by the last row or
    column (Caffe's ceil mode) takes the inputs it has. (One pass instead of three: 2x faster on
    yufacedetectnet's 16x120x160 pool.)"""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    wf = min(wo, w // 2)  # output columns with both input columns
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        for oh in range(ho):
            yrow = y[n, c, oh]
            r0 = x[n, c, 2 * oh]
            if 2 * oh + 1 < h:
                r1 = x[n, c, 2 * oh + 1]
                for k in range(wf):
                    a = r0[2 * k]
                    v = r1[2 * k]
                    a = v if (v > a or v != v) else a  # a NaN sticks
                    b = r0[2 * k + 1]
                    v = r1[2 * k + 1]
                    b = v if (v > b or v != v) else b
                    yrow[k] = b if (b > a or b != b) else a
                for k in range(wf, wo):
                    a = r0[2 * k]
                    v = r1[2 * k]
                    yrow[k] = v if (v > a or v != v) else a
            else:
                for k in range(wf):
                    a = r0[2 * k]
                    b = r0[2 * k + 1]
                    yrow[k] = b if (b > a or b != b) else a
                for k in range(wf, wo):
                    yrow[k] = r0[2 * k]


@twin(0)
def _max_pool_s1(x, kh, kw, sh, sw, pt, pl, y, empty):
    """Max only (no argmax), stride 1 (``sh``, ``sw`` unused; GoogLeNet's inception pools), plane
    by plane through a buffer holding the plane with -inf padding: the max of each output row's
    kh input rows over all padded rows at once (one flat loop per tap row), then the max of kw
    columns the same way, then the output rows copied out. Few, long loops instead of short
    per-row ones (1.5-2x faster than ``_max_pool_sep`` on 28x28..7x7 maps) and bit-identical to
    it: the selects run in the same order, -inf padding never wins one (``v > b`` is false and a
    NaN sticks), and at stride 1 with pads < kernel every window holds an input element."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    hp = ho + kh - 1
    wp = wo + kw - 1
    jhi = min(wp, pl + w)
    lv = ho * wp  # vertical maxima: ho padded rows
    lh = lv - (kw - 1)  # window maxima, row by row at the same offsets (tails unused)
    neg = x.dtype.type(-np.inf)
    planes = n_ * c_
    chunks = min(planes, 16)  # (scratch per chunk: prange bodies must not share it)
    for ch in prange(chunks):
        buf = np.empty(hp * wp, dtype=x.dtype)
        vm = np.empty(lv, dtype=x.dtype)
        for t in range(planes * ch // chunks, planes * (ch + 1) // chunks):
            n = t // c_
            c = t % c_
            for r in range(hp):
                ih = r - pt
                row = buf[r * wp : (r + 1) * wp]
                if 0 <= ih < h:
                    src = x[n, c, ih]
                    for j in range(pl):
                        row[j] = neg
                    for j in range(pl, jhi):
                        row[j] = src[j - pl]
                    for j in range(jhi, wp):
                        row[j] = neg
                else:
                    for j in range(wp):
                        row[j] = neg
            _max_taps(buf, wp, kh, lv, vm)  # rows
            _max_taps(vm, 1, kw, lh, buf)  # columns (buf now holds the window maxima)
            for oh in range(ho):
                dst = y[n, c, oh]
                src = buf[oh * wp :]
                for k in range(wo):
                    dst[k] = src[k]


def _is_2x2(kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, x_shape: tuple, ho: int, wo: int) -> bool:
    """Whether :func:`_max_pool_2x2` computes this pool: 2x2 windows, stride 2, no top/left pad,
    every window starting inside the input."""
    return (kh, kw, sh, sw, pt, pl) == (2, 2, 2, 2, 0, 0) and 2 * (ho - 1) < x_shape[2] and 2 * (wo - 1) < x_shape[3]


def max_pool(
    x: np.ndarray,
    kernel: IntPair,
    stride: IntPair | None = None,
    pad: Pad = (0, 0, 0, 0),
    *,
    ceil_mode: bool = True,
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fast max pooling, same semantics and indices as ``max_pool_reference`` (Caffe MAX
    with its argmax mask); numba, parallel over (n, c) planes, kernel taps outermost."""
    (kh, kw), (sh, sw), (pt, pl, _, _), ho, wo = _pool_args(
        x, kernel, stride, pad, ceil_mode, "max_pool"
    )
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    if not return_indices:
        kernel_fn = (_max_pool_s1 if sh == sw == 1
                     else _max_pool_2x2 if _is_2x2(kh, kw, sh, sw, pt, pl, x.shape, ho, wo)
                     else _max_pool_sep if kh >= 2 else _max_pool_fast_noidx)
        _run_planes(kernel_fn, (x, kh, kw, sh, sw, pt, pl, y, x.dtype.type(EMPTY_MAX)), (0, 7))
        return y
    idx = np.empty((n, c, ho, wo), dtype=np.int64)
    _run_planes(_max_pool_fast, (x, kh, kw, sh, sw, pt, pl, y, idx, x.dtype.type(EMPTY_MAX)), (0, 7, 8))
    return y, idx


# --------------------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------------------


@jit
def _avg_pool_ref(x, kh, kw, sh, sw, pt, pl, pb, pr, mode, y):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    hstart = oh * sh - pt
                    wstart = ow * sw - pl
                    # Caffe: the divisor counts the window clipped to the padded extent ...
                    hend = min(hstart + kh, h + pb)
                    wend = min(wstart + kw, w + pr)
                    padded_size = (hend - hstart) * (wend - wstart)
                    # ... while only the elements inside the input are summed
                    hstart = max(hstart, 0)
                    wstart = max(wstart, 0)
                    hend = min(hend, h)
                    wend = min(wend, w)
                    total = 0.0
                    count = 0
                    for i in range(hstart, hend):
                        for j in range(wstart, wend):
                            total += x[n, c, i, j]
                            count += 1
                    if mode == 0:
                        div = padded_size
                    elif mode == 1:
                        div = count
                    else:
                        div = kh * kw
                    # a window over no input element (kernel < stride, ceil mode) gives 0
                    y[n, c, oh, ow] = total / div if count > 0 else 0.0


@ieee
def avg_pool_reference(
    x: np.ndarray,
    kernel: IntPair,
    stride: IntPair | None = None,
    pad: Pad = (0, 0, 0, 0),
    *,
    ceil_mode: bool = True,
    divisor: str = "padded",
) -> np.ndarray:
    """Average pooling: the sum over the window clipped to the input, divided by the window
    clipped to the padded extent (``"padded"``, Caffe AVE), by the number of input elements
    (``"valid"``, cv2 for Torch without count_include_pad) or by kh*kw (``"kernel"``, Torch7).
    Plain loops, one window per output, summing in float64."""
    mode = _divisor_code(divisor)
    (kh, kw), (sh, sw), (pt, pl, pb, pr), ho, wo = _pool_args(
        x, kernel, stride, pad, ceil_mode, "avg_pool_reference"
    )
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    _avg_pool_ref(x, kh, kw, sh, sw, pt, pl, pb, pr, mode, y)
    return y


def _avg_divisors(size, k, s, p0, p1, out, mode):
    """Per-output 1-D factors of the (separable) AVE divisor along one axis."""
    start = np.arange(out) * s - p0
    inside = np.minimum(start + k, size) - np.maximum(start, 0)
    if mode == 0:
        d = np.minimum(start + k, size + p1) - start
    elif mode == 1:
        d = inside
    else:
        d = np.full(out, k)
    return np.where(inside > 0, d, 1).astype(np.int64)  # empty window -> sum 0 -> output 0


@twin(0)
def _avg_pool_fast(x, kh, kw, sh, sw, pt, pl, div_h, div_w, y):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    lo = np.empty(kw, dtype=np.int64)
    hi = np.empty(kw, dtype=np.int64)
    for q in range(kw):
        lo[q], hi[q] = _valid_range(q - pl, sw, w, wo)
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        for oh in range(ho):
            yrow = y[n, c, oh]
            yrow[:] = 0
            for p in range(kh):
                ih = oh * sh - pt + p
                if ih < 0 or ih >= h:
                    continue
                for q in range(kw):
                    a = lo[q]
                    m = hi[q] - a
                    start = a * sw + q - pl
                    dst = yrow[a : a + m]
                    if sw == 1:  # contiguous source: vectorises
                        src = x[n, c, ih, start : start + m]
                        for k in range(m):
                            dst[k] += src[k]
                    else:
                        src2 = x[n, c, ih, start : start + (m - 1) * sw + 1 : sw]
                        for k in range(m):
                            dst[k] += src2[k]
            dh = div_h[oh]
            for ow in range(wo):
                yrow[ow] /= dh * div_w[ow]


@ieee
def avg_pool(
    x: np.ndarray,
    kernel: IntPair,
    stride: IntPair | None = None,
    pad: Pad = (0, 0, 0, 0),
    *,
    ceil_mode: bool = True,
    divisor: str = "padded",
) -> np.ndarray:
    """Fast average pooling, same semantics as ``avg_pool_reference``: numba, parallel over
    planes, taps outermost, one division by the (separable) divisor per output."""
    mode = _divisor_code(divisor)
    (kh, kw), (sh, sw), (pt, pl, pb, pr), ho, wo = _pool_args(
        x, kernel, stride, pad, ceil_mode, "avg_pool"
    )
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    div_h = _avg_divisors(h, kh, sh, pt, pb, ho, mode)
    div_w = _avg_divisors(w, kw, sw, pl, pr, wo, mode)
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    _run_planes(_avg_pool_fast, (x, kh, kw, sh, sw, pt, pl, div_h, div_w, y), (0, 9))
    return y


# --------------------------------------------------------------------------------------
# global pooling
# --------------------------------------------------------------------------------------


def global_max_pool2d_reference(x: np.ndarray) -> np.ndarray:
    """Maximum over each (n, c) plane -> (N, C, 1, 1) (Caffe global_pooling MAX); NaN if the
    plane holds a NaN. Reference: max pooling with the whole plane as the window."""
    as_float_array(x, "x", 4)
    return max_pool_reference(x, x.shape[2:], 1)


@ieee
def global_avg_pool2d_reference(x: np.ndarray) -> np.ndarray:
    """Mean over each (n, c) plane -> (N, C, 1, 1) (Caffe global_pooling AVE). Reference:
    average pooling with the whole plane as the window."""
    as_float_array(x, "x", 4)
    return avg_pool_reference(x, x.shape[2:], 1)


@twin(0)
def _global_pool_fast(x, mode, y):
    """Per (n, c) plane (rows of x): mode 0 max (NaN sticks), 1 mean (float64 accumulator)."""
    rows, length = x.shape
    for r in prange(rows):
        src = x[r]
        if mode == 0:
            best = src[0]
            for k in range(1, length):
                v = src[k]
                best = v if (v > best or v != v) else best
            y[r] = best
        else:
            total = 0.0
            for k in range(length):
                total += src[k]
            y[r] = total / length


def _global_fast(x: np.ndarray, mode: int, fn: str) -> np.ndarray:
    as_float_array(x, "x", 4)
    n, c, h, w = x.shape
    if h * w == 0:
        raise ShapeError(f"{fn}: empty planes", got=f"x {x.shape}")
    y = np.empty(n * c, dtype=x.dtype)
    _global_pool_fast(np.ascontiguousarray(x).reshape(n * c, h * w), mode, y)
    return y.reshape(n, c, 1, 1)


def global_max_pool2d(x: np.ndarray) -> np.ndarray:
    """Fast ``global_max_pool2d_reference``: numba, one plane per parallel task."""
    return _global_fast(x, 0, "global_max_pool2d")


@ieee
def global_avg_pool2d(x: np.ndarray) -> np.ndarray:
    """Fast ``global_avg_pool2d_reference``: numba, one plane per parallel task, summing in
    float64."""
    return _global_fast(x, 1, "global_avg_pool2d")


# --------------------------------------------------------------------------------------
# max unpooling
# --------------------------------------------------------------------------------------


def _unpool_args(x, indices, out_hw, fn):
    as_float_array(x, "x", 4)
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"indices must be a numpy.ndarray, got {type(indices).__name__}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if indices.shape != x.shape:
        raise ShapeError(f"{fn}: indices must have the shape of x",
                         expected=x.shape, got=indices.shape)
    oh, ow = pair(out_hw, "out_hw")
    if indices.size and (indices.min() < 0 or indices.max() >= oh * ow):
        raise ShapeError(
            f"{fn}: indices must lie in [0, out_h * out_w) = [0, {oh * ow})",
            expected=f"0 <= index < {oh * ow}",
            got=f"range [{indices.min()}, {indices.max()}]",
        )
    return oh, ow


def max_unpool_reference(x: np.ndarray, indices: np.ndarray, out_hw: IntPair) -> np.ndarray:
    """Max unpooling (Caffe-style MaxUnpool in cv2, Torch SpatialMaxUnpooling): zeros of shape
    (N, C, out_h, out_w) with ``y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]``; on a
    repeated index the last value in row-major order wins."""
    oh, ow = _unpool_args(x, indices, out_hw, "max_unpool_reference")
    n, c = x.shape[:2]
    y = np.zeros((n, c, oh * ow), dtype=x.dtype)
    for i in range(n):
        for k in range(c):
            y[i, k][indices[i, k].ravel()] = x[i, k].ravel()
    return y.reshape(n, c, oh, ow)


@twin()
def _unpool_fast(x, idx, y):
    n_, c_, length = x.shape
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        dst = y[n, c]
        src = x[n, c]
        ind = idx[n, c]
        for m in range(length):
            dst[ind[m]] = src[m]


def max_unpool(x: np.ndarray, indices: np.ndarray, out_hw: IntPair) -> np.ndarray:
    """Fast ``max_unpool_reference``: a numba scatter, parallel over (n, c) planes."""
    oh, ow = _unpool_args(x, indices, out_hw, "max_unpool")
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh * ow), dtype=x.dtype)
    xs = np.ascontiguousarray(x).reshape(n, c, h * w)
    ids = np.ascontiguousarray(indices, dtype=np.int64).reshape(n, c, h * w)
    _unpool_fast(xs, ids, y)
    return y.reshape(n, c, oh, ow)
