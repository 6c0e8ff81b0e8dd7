"""Vectorised NumPy twins of the jitted helpers small nets use (issue 17: start-up and memory).

A forward pass of a small net (LeNet, MTCNN, yufacedetectnet, UltraFace) spends well under
50 ms in its kernels, while importing numba and loading its compiled kernels costs ~0.3 s of
CPU and ~120 MB of resident memory. Each function here has the signature of the jitted helper
it twins (it writes into the same output argument) and computes the same values: the same
float operations in the same order wherever the helper is vectorised over whole rows
(im2col copies, bias + activation epilogues, max pooling, the Winograd transforms, the
padded depthwise 3x3 stencil), so most twins give bit-identical results; where the jitted
helper orders a sum differently at image borders, they agree to float32 rounding.
:func:`refnet.kernels._lazyjit.numpy_twin` attaches them; ``numpy_kernels()`` turns them on
(refnet.runtime.smallnet decides per program). Tests: tests/test_kernels/test_numpy_twins.py.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from refnet.kernels import activation as _activation
from refnet.kernels import conv as _conv
from refnet.kernels import detection as _det
from refnet.kernels import norm as _norm
from refnet.kernels import pool as _pool
from refnet.kernels import resize as _resize
from refnet.kernels import tensor as _tensor
from refnet.kernels import window as _window
from refnet.kernels._lazyjit import numpy_twin

__all__: list[str] = []

_RULE_NAME = {code: name for name, code in _det._RULE_CODE.items()}


def _act(v: np.ndarray, act: int, slope: np.ndarray, six: float = 6.0) -> None:
    """In place: the conv epilogue activation (1 leaky/PReLU with per-channel ``slope``
    broadcast against v, 2 ReLU6), exactly as the jitted helpers: ``v if v > 0 else v * s``
    (so NaN stays NaN and -inf * 0 is NaN), as ``v *= factor`` with factor 1 or s built by
    arithmetic (masked ufuncs and np.where measured 10-40x slower here)."""
    if act == 1:
        pos = v > 0
        if not slope.any():  # ReLU: v * 1 or v * 0
            np.multiply(v, pos, out=v)
            return
        f = np.subtract(1, pos, dtype=v.dtype)  # 1 where v <= 0 (or NaN), else 0
        f *= slope
        f += pos  # s or 1
        v *= f
    elif act == 2:
        np.clip(v, 0, six, out=v)


def _padded(x: np.ndarray, r0: int, r1: int, c0: int, c1: int, fill: float = 0.0) -> np.ndarray:
    """x[..., r0:r1, c0:c1] with ``fill`` where the rows/columns fall outside x (any of r0, c0
    negative, r1, c1 past the end)."""
    h, w = x.shape[-2:]
    out = np.full(x.shape[:-2] + (r1 - r0, c1 - c0), fill, dtype=x.dtype)
    a0, a1 = max(r0, 0), min(r1, h)
    b0, b1 = max(c0, 0), min(c1, w)
    if a1 > a0 and b1 > b0:
        out[..., a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = x[..., a0:a1, b0:b1]
    return out


# ---- conv epilogues and im2col -----------------------------------------------------------------


@numpy_twin(_conv._bias_act_cols)
def _bias_act_cols(y, b, act, slope, c0, c1):
    seg = y[:, c0:c1]
    seg += b[:, None]
    _act(seg, act, slope[:, None])


@numpy_twin(_conv._bias_act_rows)
def _bias_act_rows(y, b, act, slope, r0, r1):
    seg = y[:, r0:r1]
    seg += b[:, None, None]
    _act(seg, act, slope[:, None, None])


@numpy_twin(_conv._im2col)
def _im2col(x, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cols):
    c, _, _ = x.shape
    nh = oh1 - oh0
    r0 = oh0 * sh - pt
    xp = _padded(x, r0, r0 + (nh - 1) * sh + (kh - 1) * dh + 1, -pl, -pl + (wo - 1) * sw + (kw - 1) * dw + 1)
    s0, s1, s2 = xp.strides
    taps = as_strided(xp, (c, kh, kw, nh, wo), (s0, dh * s1, dw * s2, sh * s1, sw * s2), writeable=False)
    _view(cols, (c, kh, kw, nh, wo))[...] = taps


@numpy_twin(_conv._im2col_phased)
def _im2col_phased(xd, w, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cols):
    c, h, _, m = xd.shape
    x = xd.transpose(0, 1, 3, 2).reshape(c, h, m * sw)[:, :, :w]  # the columns back in order
    _im2col(x, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cols)


@numpy_twin(_conv._bias_res_act_cols)
def _bias_res_act_cols(y, r, b, act, slope, six, c0, c1):
    seg = y[:, c0:c1]
    seg += b[:, None]
    seg += r[:, c0:c1]
    _act(seg, act, slope[:, None], six)


# ---- depthwise -----------------------------------------------------------------------------------


def _depthwise_taps(x, w, sh, sw, pt, pl, dh, dw, ho, wo, acc=None):
    """Per output channel o: ``acc`` (if given) plus the sum over taps (p, q), row-major, of
    w[o, 0, p, q] times the zero-padded input plane o // mult sampled at the strides: the sum
    order of the jitted flat 3x3 stencil (acc None) and of the general depthwise kernel (acc =
    the bias: there taps outside the input are skipped, here they add a zero)."""
    n, c = x.shape[:2]
    co, _, kh, kw = w.shape
    xp = _padded(x, -pt, -pt + (ho - 1) * sh + (kh - 1) * dh + 1, -pl, -pl + (wo - 1) * sw + (kw - 1) * dw + 1)
    if co != c:
        xp = np.repeat(xp, co // c, axis=1)
    term = np.empty((n, co, ho, wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            tap = xp[:, :, p * dh : p * dh + (ho - 1) * sh + 1 : sh, q * dw : q * dw + (wo - 1) * sw + 1 : sw]
            if acc is None:
                acc = np.multiply(tap, w[None, :, 0, p, q, None, None])
            else:
                np.multiply(tap, w[None, :, 0, p, q, None, None], out=term)
                acc += term
    return acc


@numpy_twin(_conv._depthwise3x3_flat)
def _depthwise3x3_flat(x, w, b, sh, sw, pt, pl, act, slope, six, y):
    ho, wo = y.shape[2:]
    acc = _depthwise_taps(x, w, sh, sw, pt, pl, 1, 1, ho, wo)
    acc += b[None, :, None, None]
    _act(acc, act, slope[None, :, None, None], six)
    y[...] = acc


@numpy_twin(_conv._depthwise_flat)
def _depthwise_flat(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, six, y):
    ho, wo = y.shape[2:]
    acc = _depthwise_taps(x, w, sh, sw, pt, pl, dh, dw, ho, wo)
    acc += b[None, :, None, None]
    _act(acc, act, slope[None, :, None, None], six)
    y[...] = acc


@numpy_twin(_conv._depthwise3x3)
def _depthwise3x3(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, six, y):
    """As the flat stencil, except the border columns (a tap outside the row), which the
    jitted kernel sums column by column (``_dw3_edge``) in float64 (its accumulator starts as
    ``row[0] * 0``, a float64 in numba), adds the bias and activates in float64, then rounds:
    recomputed here in that order, so the result is the jitted one bit for bit."""
    n, c, h, wd = x.shape
    co = w.shape[0]
    ho, wo = y.shape[2:]
    acc = _depthwise_taps(x, w, sh, sw, pt, pl, dh, dw, ho, wo)
    acc += b[None, :, None, None]
    _act(acc, act, slope[None, :, None, None], six)
    valid_range = getattr(_conv._valid_range, "py_func", _conv._valid_range)  # (plain Python: scalars)
    lo, hi = valid_range(-pl, sw, wd - 2 * dw, wo)
    edges = [ow for ow in range(wo) if ow < lo or ow >= max(hi, lo)]
    if edges:
        xr = _padded(x, -pt, -pt + (ho - 1) * sh + 2 * dh + 1, 0, wd)  # zero rows outside, columns as is
        if co != c:
            xr = np.repeat(xr, co // c, axis=1)
        rows = [xr[:, :, p * dh : p * dh + (ho - 1) * sh + 1 : sh] for p in range(3)]  # (N, Co, Ho, W)
        wq = w[None, :, 0, :, :, None]  # (1, Co, 3, 3, 1)
        b64 = b.astype(np.float64)[None, :, None]
        s64 = slope.astype(np.float64)[None, :, None]
        for ow in edges:
            v = rows[0][..., 0].astype(np.float64) * 0
            for qq in range(3):
                j = ow * sw - pl + qq * dw
                if 0 <= j < wd:
                    v = v + (wq[:, :, 0, qq] * rows[0][..., j] + wq[:, :, 1, qq] * rows[1][..., j]
                             + wq[:, :, 2, qq] * rows[2][..., j])
            v = v + b64
            _act(v, act, s64, float(six))
            acc[..., ow] = v
    y[...] = acc


@numpy_twin(_conv._depthwise)
def _depthwise(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, y):
    ho, wo = y.shape[2:]
    acc = np.empty(y.shape, dtype=y.dtype)
    acc[...] = b[None, :, None, None]
    acc = _depthwise_taps(x, w, sh, sw, pt, pl, dh, dw, ho, wo, acc)
    _act(acc, act, slope[None, :, None, None])
    y[...] = acc


@numpy_twin(_conv._direct_small_cout)
def _direct_small_cout(x, w, b, sh, sw, pt, pl, dh, dw, act, slope, y):
    n, c, _, _ = x.shape
    co, _, kh, kw = w.shape
    ho, wo = y.shape[2:]
    xp = _padded(x, -pt, -pt + (ho - 1) * sh + (kh - 1) * dh + 1, -pl, -pl + (wo - 1) * sw + (kw - 1) * dw + 1)
    s0, s1, s2, s3 = xp.strides
    taps = as_strided(xp, (n, c, kh, kw, ho, wo), (s0, s1, dh * s2, dw * s3, sh * s2, sw * s3), writeable=False)
    cols = np.ascontiguousarray(taps).reshape(n, c * kh * kw, ho * wo)
    out = np.matmul(w.reshape(co, c * kh * kw), cols).reshape(n, co, ho, wo)
    out += b[None, :, None, None]
    _act(out, act, slope[None, :, None, None])
    y[...] = out


# ---- Winograd F(2x2, 3x3) transforms ------------------------------------------------------------


@numpy_twin(_conv._wino_in)
def _wino_in(x, pt, pl, ty0, ty1, tw_n, t0, v):
    c = x.shape[0]
    nty = ty1 - ty0
    wp = 2 * tw_n + 2
    r0 = 2 * ty0 - pt
    d = _padded(x, r0, r0 + 2 * nty + 2, -pl, -pl + wp)  # (C, 2 nty + 2, wp)
    r = [d[:, k : k + 2 * nty : 2] for k in range(4)]  # row k of every tile row: (C, nty, wp)
    tt = np.empty((4, c, nty, wp), dtype=v.dtype)  # B^T d, rows k = 0..3
    np.subtract(r[0], r[2], out=tt[0])
    np.add(r[1], r[2], out=tt[1])
    np.subtract(r[2], r[1], out=tt[2])
    np.subtract(r[1], r[3], out=tt[3])
    a = [tt[..., j : j + 2 * tw_n : 2] for j in range(4)]  # column j of every tile: (4, C, nty, tw_n)
    vv = v.reshape(4, 4, c, v.shape[2])[:, :, :, t0 : t0 + nty * tw_n]
    out = [_view(vv[:, j], (4, c, nty, tw_n)) for j in range(4)]  # v[4 k + j] for every k
    np.subtract(a[0], a[2], out=out[0])
    np.add(a[1], a[2], out=out[1])
    np.subtract(a[2], a[1], out=out[2])
    np.subtract(a[1], a[3], out=out[3])


def _view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` reshaped without a copy (ValueError where that is impossible: writes would be lost)."""
    out = a.view()
    out.shape = shape
    return out


@numpy_twin(_conv._wino_out)
def _wino_out(m, b, act, slope, six, ty0, ty1, tw_n, t0, y):
    co, ho, wo = y.shape
    nty = ty1 - ty0
    mt = m[:, :, t0 : t0 + nty * tw_n].reshape(16, co, nty, tw_n)
    s = [mt[j] + mt[4 + j] + mt[8 + j] for j in range(4)]
    e = [mt[4 + j] - mt[8 + j] - mt[12 + j] for j in range(4)]
    bias = b[:, None, None]
    tiles = np.empty((co, nty, 2, tw_n, 2), dtype=y.dtype)
    tiles[:, :, 0, :, 0] = s[0] + s[1] + s[2] + bias
    tiles[:, :, 0, :, 1] = s[1] - s[2] - s[3] + bias
    tiles[:, :, 1, :, 0] = e[0] + e[1] + e[2] + bias
    tiles[:, :, 1, :, 1] = e[1] - e[2] - e[3] + bias
    _act(tiles, act, slope[:, None, None, None, None], six)
    oh0 = 2 * ty0
    oh1 = min(2 * ty1, ho)
    y[:, oh0:oh1] = tiles.reshape(co, 2 * nty, 2 * tw_n)[:, : oh1 - oh0, :wo]


# ---- Winograd F(4x4, 3x3) transforms ------------------------------------------------------------
# As two GEMMs each (tensordot with B^T / A^T, K = 6) on all tiles at once: elementwise the
# 36-value tiles took ~100 small NumPy operations (1.1-1.6x F(2,3)'s twin time on
# yufacedetectnet's layers). The GEMM sums in another order (and may fuse multiply-adds) than
# the jitted helpers: the twins agree with them to float32 rounding, not bit for bit. A GEMM
# also multiplies a NaN/Inf by B's zeros; inputs holding one take the elementwise transforms
# (the jitted helpers' operations, so the same NaN pattern).


def _bt6(d):
    """B^T of F(4,3) on six arrays (rows or columns of tiles), in the jitted helper's order."""
    d0, d1, d2, d3, d4, d5 = d
    p = d4 - 4 * d2
    q = d3 - 4 * d1
    s = d4 - d2
    e = 2 * (d3 - d1)
    return [(4 * d0 - 5 * d2) + d4, p + q, p - q, s + e, s - e, (4 * d1 - 5 * d3) + d5]


def _at6(r):
    """A^T of F(4,3) on six arrays, in the jitted helper's order."""
    r0, r1, r2, r3, r4, r5 = r
    a = r1 + r2
    bb = r1 - r2
    cc = r3 + r4
    dd = r3 - r4
    return [(r0 + a) + cc, bb + 2 * dd, a + 4 * cc, (bb + 8 * dd) + r5]


def _wino4_in_elementwise(x, pt, pl, ty0, ty1, tw_n, t0, v):
    c = x.shape[0]
    nty = ty1 - ty0
    wp = 4 * tw_n + 2
    r0 = 4 * ty0 - pt
    d = _padded(x, r0, r0 + 4 * nty + 2, -pl, -pl + wp)  # (C, 4 nty + 2, wp)
    tt = _bt6([d[:, k : k + 4 * nty : 4] for k in range(6)])  # B^T d, rows k = 0..5: (C, nty, wp)
    vv = v.reshape(6, 6, c, v.shape[2])[:, :, :, t0 : t0 + nty * tw_n]
    for k in range(6):
        cols = _bt6([tt[k][..., j : j + 4 * tw_n : 4] for j in range(6)])  # (C, nty, tw_n) each
        for j in range(6):
            vv[k, j] = cols[j].reshape(c, nty * tw_n)


def _wino4_out_elementwise(m, b, act, slope, six, ty0, ty1, tw_n, t0, y):
    co, ho, wo = y.shape
    nty = ty1 - ty0
    mt = m[:, :, t0 : t0 + nty * tw_n].reshape(6, 6, co, nty, tw_n)
    z = _at6([mt[r] for r in range(6)])  # A^T over the tile rows: 4 x (6, C_out, nty, tw_n)
    tiles = np.empty((co, nty, 4, tw_n, 4), dtype=y.dtype)
    for i in range(4):
        cols = _at6([z[i][j] for j in range(6)])
        for k in range(4):
            tiles[:, :, i, :, k] = cols[k]
    tiles += b[:, None, None, None, None]
    _act(tiles, act, slope[:, None, None, None, None], six)
    oh0 = 4 * ty0
    oh1 = min(4 * ty1, ho)
    y[:, oh0:oh1] = tiles.reshape(co, 4 * nty, 4 * tw_n)[:, : oh1 - oh0, :wo]


@numpy_twin(_conv._wino4_in)
def _wino4_in(x, pt, pl, ty0, ty1, tw_n, t0, v):
    c = x.shape[0]
    nty = ty1 - ty0
    wp = 4 * tw_n + 2
    r0 = 4 * ty0 - pt
    d = _padded(x, r0, r0 + 4 * nty + 2, -pl, -pl + wp)  # (C, 4 nty + 2, wp)
    if not np.isfinite(d).all():
        _wino4_in_elementwise(x, pt, pl, ty0, ty1, tw_n, t0, v)
        return
    s0, s1, s2 = d.strides
    tiles = as_strided(d, (c, nty, tw_n, 6, 6), (s0, 4 * s1, 4 * s2, s1, s2))  # (c, ty, tx, row, col)
    bt = _conv._WINO4_BT.astype(x.dtype)
    rows = np.tensordot(bt, tiles, axes=([1], [3]))  # (a, c, ty, tx, col): B^T d
    vv = np.tensordot(rows, bt, axes=([4], [1]))  # (a, c, ty, tx, b): B^T d B
    v.reshape(6, 6, c, v.shape[2])[:, :, :, t0 : t0 + nty * tw_n] = vv.transpose(0, 4, 1, 2, 3).reshape(
        6, 6, c, nty * tw_n)


@numpy_twin(_conv._wino4_out)
def _wino4_out(m, b, act, slope, six, ty0, ty1, tw_n, t0, y):
    co, ho, wo = y.shape
    nty = ty1 - ty0
    at = _conv._WINO4_AT.astype(y.dtype)
    mt = m[:, :, t0 : t0 + nty * tw_n].reshape(6, 6, co, nty, tw_n)
    if not np.isfinite(mt).all():
        _wino4_out_elementwise(m, b, act, slope, six, ty0, ty1, tw_n, t0, y)
        return
    z = np.tensordot(at, mt, axes=([1], [0]))  # (i, j, co, ty, tx): A^T over the tile rows
    yy = np.tensordot(at, z, axes=([1], [1]))  # (k, i, co, ty, tx): then over the columns
    tiles = yy.transpose(2, 3, 1, 4, 0)  # (co, ty, i, tx, k)
    tiles = tiles + b[:, None, None, None, None]
    _act(tiles, act, slope[:, None, None, None, None], six)
    oh0 = 4 * ty0
    oh1 = min(4 * ty1, ho)
    y[:, oh0:oh1] = tiles.reshape(co, 4 * nty, 4 * tw_n)[:, : oh1 - oh0, :wo]


# ---- max pooling -------------------------------------------------------------------------------


@numpy_twin(_pool._max_pool_sep)
def _max_pool(x, kh, kw, sh, sw, pt, pl, y, empty):
    """Max over each window clipped to the input (a NaN sticks, as np.maximum does); ``empty``
    for a window with no input element."""
    h, w = x.shape[2:]
    ho, wo = y.shape[2:]
    xp = _padded(x, -pt, (ho - 1) * sh + kh - pt, -pl, (wo - 1) * sw + kw - pl, -np.inf)
    out = None
    for p in range(kh):
        for q in range(kw):
            tap = xp[:, :, p : p + (ho - 1) * sh + 1 : sh, q : q + (wo - 1) * sw + 1 : sw]
            out = tap.copy() if out is None else np.maximum(out, tap, out=out)
    rows = np.arange(ho) * sh - pt
    cols = np.arange(wo) * sw - pl
    out[:, :, (np.minimum(rows + kh, h) <= np.maximum(rows, 0))] = empty
    out[:, :, :, (np.minimum(cols + kw, w) <= np.maximum(cols, 0))] = empty
    y[...] = out


numpy_twin(_pool._max_pool_fast_noidx)(_max_pool)
numpy_twin(_pool._max_pool_s1)(_max_pool)
numpy_twin(_pool._max_pool_2x2)(_max_pool)


# ---- LRN ---------------------------------------------------------------------------------------


@numpy_twin(_norm._lrn_across_fast)
def _lrn_across(x, c0, c1, size, consts, b75, y):
    """Output channels c0..c1-1 of the across-channel LRN of x (N, C, L), in whole-plane NumPy
    operations in the jitted kernel's order (bit-identical for beta 0.75; ``np.power`` may round
    the last bit differently from numba's otherwise)."""
    c = x.shape[1]
    pre = (size - 1) // 2
    lo_in, hi_in = max(0, c0 - pre), min(c, c1 + size - 1 - pre)  # channels the block reads
    sq = np.square(x[:, lo_in:hi_in])
    s = y[:, c0:c1]
    s[...] = sq[:, c0 - lo_in : c1 - lo_in]  # window offset 0
    for off in range(-pre, size - pre):
        lo, hi = max(c0, -off), min(c1, c - off)  # output channels whose channel + off exists
        if off and lo < hi:
            s[:, lo - c0 : hi - c0] += sq[:, lo + off - lo_in : hi + off - lo_in]
    s *= consts[0]
    s += consts[1]
    if b75:
        t = np.sqrt(s)
        np.sqrt(t, out=s)
        s *= t
        np.reciprocal(s, out=s)
    else:
        np.power(s, consts[3], out=s)
    s *= x[:, c0:c1]


# ---- NMS -----------------------------------------------------------------------------------------


_NMS_MATRIX_MAX = 1024  # candidates; up to this many, all overlaps at once (an n x n float64 matrix)


def _nms_matrix_sized(boxes, order, classes, thr, eta, rule, limit) -> bool:
    return len(order) <= _NMS_MATRIX_MAX and eta >= 1.0 and rule in _RULE_NAME


@numpy_twin(_det._greedy_nms_jit, unloaded=_nms_matrix_sized)  # same decisions: also without numpy_kernels()
def _greedy_nms(boxes, order, classes, thr, eta, rule, limit):
    """Greedy NMS in candidate order: each kept box suppresses every later candidate of its
    class whose float32 overlap with it is not <= the threshold (NaN suppresses), which is the
    greedy loop's decision since the overlap is symmetric; the overlaps come as one matrix
    (up to _NMS_MATRIX_MAX candidates) or one vectorised row per kept box. With ``eta < 1``
    the threshold shrinks as boxes are kept, so the reference loop runs instead (as for a
    rule other than the four jitted ones). Keeping the
    first ``limit`` kept boxes equals stopping there."""
    name = _RULE_NAME[rule]
    if eta < 1.0 or name not in ("cv2", "caffe", "caffe+1", "frcnn"):
        return _det._greedy_reference(boxes, order, classes, thr, eta, name)[:limit]
    n = len(order)
    b = boxes[order]
    cls = classes[order]
    thr32 = np.float32(thr)
    suppress = None
    if n <= _NMS_MATRIX_MAX:
        ov = _det._overlap_rows(b[:, None], b[None], name)  # ov[i, j]: the same sums as row j vs i
        suppress = (cls[:, None] == cls) & ~(ov.astype(np.float32) <= thr32)
    alive = np.ones(n, dtype=bool)
    keep: list[int] = []
    for t in range(n):
        if not alive[t]:
            continue
        keep.append(int(order[t]))
        if len(keep) >= limit:
            break
        if suppress is not None:
            alive[t + 1:] &= ~suppress[t, t + 1:]
            continue
        rest = np.flatnonzero(alive[t + 1:]) + t + 1
        rest = rest[cls[rest] == cls[t]]
        if rest.size:
            ov = _det._overlap_rows(b[t], b[rest], name).astype(np.float32)
            alive[rest[~(ov <= thr32)]] = False
    return np.asarray(keep, dtype=np.int64)


# ---- ONNX max pooling ---------------------------------------------------------------------------


@numpy_twin(_window._plane_means)
def _plane_means(x, y):
    y[...] = np.mean(x, axis=1, dtype=np.float64)


@numpy_twin(_window._plane_means_lanes)
def _plane_means_lanes(x, y):
    _plane_means(x, y)


@numpy_twin(_window._max_pool2d_nd)
def _max_pool2d_nd(x, kh, kw, sh, sw, dh, dw, pt, pl, y):
    ho, wo = y.shape[2:]
    xp = _padded(x, -pt, -pt + (ho - 1) * sh + (kh - 1) * dh + 1, -pl, -pl + (wo - 1) * sw + (kw - 1) * dw + 1,
                 fill=-np.inf)
    np.fmax(xp, -np.inf, out=xp)  # NaN -> -inf: it never wins (the kernel's ``v > b``)
    y[...] = -np.inf
    for p in range(kh):
        for q in range(kw):
            np.maximum(y, xp[:, :, p * dh : p * dh + (ho - 1) * sh + 1 : sh, q * dw : q * dw + (wo - 1) * sw + 1 : sw],
                       out=y)


@numpy_twin(_window._max_pool3s2)
def _max_pool3s2(x, y, stack):
    _max_pool2d_nd(x, 3, 3, 2, 2, 1, 1, 0, 0, y)


@numpy_twin(_tensor._add_act_planes)
def _add_act_planes(a, b, slope, act, six, out):
    np.add(a, b, out=out)
    _act(out, act, slope[:, None], six)


@numpy_twin(_resize._upsample_planes)
def _upsample_planes(x, kh, kw, y):
    y[...] = np.repeat(np.repeat(x, kh, axis=1), kw, axis=2)


@numpy_twin(_activation._hswish_affine_planes)
def _hswish_affine_planes(x, scale, shift, k_add, lo, hi, k_div, has_scale, has_shift, out):
    np.add(x, k_add, out=out)
    np.maximum(out, lo, out=out)  # (NaN stays NaN: np.maximum propagates it, as the kernel's compares)
    np.minimum(out, hi, out=out)
    np.multiply(x, out, out=out)
    np.divide(out, k_div, out=out)
    if has_scale:
        np.multiply(out, scale[:, None], out=out)
    if has_shift:
        np.add(out, shift[:, None], out=out)


@numpy_twin(_activation._prelu_planes)
def _prelu_planes(x, slope, out):
    out[...] = x
    _act(out, 1, slope[:, None])
