"""A direct float32 convolution for few input channels (a network's first, RGB conv).

With C_in = 3 the reduction is short (K = C_in * kh * kw = 27 for SqueezeNet's 3x3 conv1) and
the map is large (111x111 outputs): im2col + GEMM then spends most of its time writing and
reading the im2col (K x N, 1.3 MB there), and the GEMM is tiny. This kernel reads the input in
place instead. The input is first split into its column phases (``xph[c, r, k, j] =
xpad[c, r, j * sw + k]``, zero-padded, one copy of the image), so that for every tap (ci, p, q)
the inputs of consecutive output pixels of a row are consecutive in memory. A register tile
holds :data:`LANES` consecutive output pixels of one row (a row's last tile 16 when 1..16 are
left, else an overlapping 32) for :data:`CB` output channels; per tap
it loads LANES inputs, broadcasts CB weights (packed at plan time, ``wp[b, k, :]`` = the
block's weights of tap k) and does CB x LANES multiply-adds (16 AVX-512 FMAs), then bias,
activation and contiguous stores into the NCHW output row (vectorised over channels instead,
as the packed GEMM of :mod:`refnet.kernels._packgemm` is, the NCHW stores would be scalar).

The accumulators are stack arrays (:data:`refnet.kernels._packgemm._stack`) written out as 8
separate arrays and the kernel uses ``fastmath={"contract"}`` only, as in the packed GEMM (see
its docstring for why). Rounding: each output is one float32 FMA chain over k in order (K is
at most :data:`MAX_K`; a BLAS micro-kernel sums a K that short in one chain too), then + bias.
NaN and inf propagate to the outputs whose receptive field holds them (no nnan/ninf flags).

Inside ``numpy_kernels()`` (small nets without numba) and under ``NUMBA_DISABLE_JIT=1``,
:meth:`DirectSmallCin.__call__` runs the NumPy twin (an explicit im2col and one matmul); the
kernel body runs as Python only in tests/test_kernels/test_direct.py on small shapes.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from refnet.kernels import _packgemm, _poolrow
from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import MODE, lazy_njit, load_numba

__all__ = ["LANES", "CB", "MAX_CIN", "MAX_K", "MIN_COUT", "ENV", "USE", "PAIRS", "enabled", "fits", "pack_weights",
           "tap_offsets", "direct_rows", "DirectSmallCin", "POOL", "pool_fits", "direct_pool_rows"]

LANES = 32  # output pixels per register tile (two AVX-512 vectors of float32)
CB = 8  # output channels per register tile
# The conv plan uses this kernel for float32 ungrouped convs with at most MAX_CIN input
# channels, a reduction of at most MAX_K and at least MIN_COUT output channels.
MAX_CIN = 4
MAX_K = 160
MIN_COUT = 16
# A/B switches: REFNET_DIRECT_CIN=0 in the environment or USE = False here turn the kernel off
# (for plans made afterwards; bench/flag_ab.py flips USE)
ENV = "REFNET_DIRECT_CIN"
USE = True

_fast = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"contract"}, "boundscheck": False})


def enabled() -> bool:
    """Whether new plans may choose the kernel (:data:`USE` and ``$REFNET_DIRECT_CIN`` not 0)."""
    return USE and os.environ.get(ENV, "1").strip() not in ("0", "off", "no", "false")


def fits(dtype: np.dtype, groups: int, c: int, co: int, k: int, wo: int) -> bool:
    """Whether the conv plan should use :class:`DirectSmallCin` for this conv (``wo`` output
    columns): C_out a multiple of CB, Wo at least LANES."""
    return (enabled() and np.dtype(dtype) == np.float32 and groups == 1 and c <= MAX_CIN and k <= MAX_K
            and co >= MIN_COUT and co % CB == 0 and wo >= LANES)


@_fast
def _act(v, act, s, six):
    """The epilogue activation of one value (1: leaky/PReLU slope s, 2: ReLU6; NaN stays NaN)."""
    zero = six - six
    if act == 1:
        return v if v > zero else v * s
    if act == 2:
        return zero if v < zero else (six if v > six else v)
    return v


def _make_tile(lanes: int):
    """The register-tile kernel for ``lanes`` (32 or 16) output pixels (``lanes`` a constant in
    the compiled code: fixed-length loops; the stack arrays hold 32 either way)."""

    @_fast
    def tile(wp, xf, kofs, blk, src, b, act, slope, six, yf, o0, plane):
        """The outputs yf[o0 + r * plane + j] (channel blk * CB + r, r < 8, j < lanes; yf the
        flattened output) of the taps X[k, j] = xf[src + kofs[k] + j] (src unsigned: the loads then
        need no negative-index wraparound and vectorise as plain loads, not gathers)."""
        a0 = _packgemm._carray(_packgemm._stack(32), (32,))
        a1 = _packgemm._carray(_packgemm._stack(32), (32,))
        a2 = _packgemm._carray(_packgemm._stack(32), (32,))
        a3 = _packgemm._carray(_packgemm._stack(32), (32,))
        a4 = _packgemm._carray(_packgemm._stack(32), (32,))
        a5 = _packgemm._carray(_packgemm._stack(32), (32,))
        a6 = _packgemm._carray(_packgemm._stack(32), (32,))
        a7 = _packgemm._carray(_packgemm._stack(32), (32,))
        for lane in range(lanes):
            a0[lane] = 0.0
            a1[lane] = 0.0
            a2[lane] = 0.0
            a3[lane] = 0.0
            a4[lane] = 0.0
            a5[lane] = 0.0
            a6[lane] = 0.0
            a7[lane] = 0.0
        for k in range(np.uint64(wp.shape[1])):  # (unsigned: no wraparound code)
            wk = wp[blk, k]
            w0 = wk[0]
            w1 = wk[1]
            w2 = wk[2]
            w3 = wk[3]
            w4 = wk[4]
            w5 = wk[5]
            w6 = wk[6]
            w7 = wk[7]
            o = src + kofs[k]
            for lane in range(np.uint64(lanes)):
                xv = xf[o + lane]
                a0[lane] += w0 * xv
                a1[lane] += w1 * xv
                a2[lane] += w2 * xv
                a3[lane] += w3 * xv
                a4[lane] += w4 * xv
                a5[lane] += w5 * xv
                a6[lane] += w6 * xv
                a7[lane] += w7 * xv
        c0 = blk * 8
        b0, b1, b2, b3 = b[c0], b[c0 + 1], b[c0 + 2], b[c0 + 3]
        b4, b5, b6, b7 = b[c0 + 4], b[c0 + 5], b[c0 + 6], b[c0 + 7]
        s0, s1, s2, s3 = slope[c0], slope[c0 + 1], slope[c0 + 2], slope[c0 + 3]
        s4, s5, s6, s7 = slope[c0 + 4], slope[c0 + 5], slope[c0 + 6], slope[c0 + 7]
        o1 = o0 + plane
        o2 = o1 + plane
        o3 = o2 + plane
        o4 = o3 + plane
        o5 = o4 + plane
        o6 = o5 + plane
        o7 = o6 + plane
        for lane in range(np.uint64(lanes)):  # (in registers still: one vector loop per activation)
            yf[o0 + lane] = _act(a0[lane] + b0, act, s0, six)
            yf[o1 + lane] = _act(a1[lane] + b1, act, s1, six)
            yf[o2 + lane] = _act(a2[lane] + b2, act, s2, six)
            yf[o3 + lane] = _act(a3[lane] + b3, act, s3, six)
            yf[o4 + lane] = _act(a4[lane] + b4, act, s4, six)
            yf[o5 + lane] = _act(a5[lane] + b5, act, s5, six)
            yf[o6 + lane] = _act(a6[lane] + b6, act, s6, six)
            yf[o7 + lane] = _act(a7[lane] + b7, act, s7, six)

    return tile


_tile = _make_tile(32)
_tile16 = _make_tile(16)  # (the last tile of rows whose length leaves 1..16 pixels)


@_fast
def direct_rows(wp, xf, kofs, rowstep, b, act, slope, six, y):
    """y (C_out, Ho, Wo) = act(conv + b) with y[o, oh, ow] = sum_k W[o, k] xf[oh * rowstep +
    kofs[k] + ow] (wp from :func:`pack_weights`, kofs from :func:`tap_offsets`); Wo >= LANES."""
    co, ho, wo = y.shape
    yf = y.reshape(co * ho * wo)
    plane = np.uint64(ho * wo)
    for blk in range(wp.shape[0]):  # (8 output planes at a time: 8 sequential write streams)
        for oh in range(ho):
            for t in range(0, wo - 16, 32):
                ow0 = min(t, wo - 32)  # (a last tile overlaps the one before: same values)
                _tile(wp, xf, kofs, blk, np.uint64(oh * rowstep + ow0), b, act, slope, six, yf,
                      np.uint64(blk * 8) * plane + np.uint64(oh * wo + ow0), plane)
            if wo % 32 and wo % 32 <= 16:  # a last tile of 16 (overlapping)
                ow0 = wo - 16
                _tile16(wp, xf, kofs, blk, np.uint64(oh * rowstep + ow0), b, act, slope, six, yf,
                        np.uint64(blk * 8) * plane + np.uint64(oh * wo + ow0), plane)


#: a direct conv whose output only a 3x3 / stride 2 max pool reads runs with the pool as one step
#: (:func:`direct_pool_rows`: refnet.runtime.program pairs them); ``REFNET_DIRECT_POOL=0`` or
#: POOL = False: two steps (A/B switch, read when a program is compiled)
POOL = os.environ.get("REFNET_DIRECT_POOL", "1").strip() not in ("0", "off", "no", "false")


@_fast
def direct_pool_rows(wp, xf, kofs, rowstep, b, act, slope, six, s, pt, pl, y, stack=True):
    """y (C_out, Ho, Wo) = the 3x3 / stride 2 max pool (top and left padding pt, pl of 0 or 1,
    every window meeting the map) of the conv map act(conv + b) of :func:`direct_rows`, of
    s.shape[1:] = (Hc, Wc), without writing that map out: per block of CB output channels its
    rows go to the scratch s (CB, Hc, Wc), pooled right after (still in the core's cache: the
    3.2 MB map of SqueezeNet's or ResNet-50's conv1 was written out, then read back by the pool
    step).
    Same values as the two steps: the tiles are direct_rows', the rows the pool kernel's
    (:func:`refnet.kernels._poolrow.pool3s2_planes`, scratch rows on the stack with ``stack``)."""
    _, hc, wc = s.shape
    sf = s.reshape(s.size)
    plane = np.uint64(hc * wc)
    for blk in range(wp.shape[0]):
        for oh in range(hc):
            for t in range(0, wc - 16, 32):
                ow0 = min(t, wc - 32)
                _tile(wp, xf, kofs, blk, np.uint64(oh * rowstep + ow0), b, act, slope, six, sf,
                      np.uint64(oh * wc + ow0), plane)
            if wc % 32 and wc % 32 <= 16:
                ow0 = wc - 16
                _tile16(wp, xf, kofs, blk, np.uint64(oh * rowstep + ow0), b, act, slope, six, sf,
                        np.uint64(oh * wc + ow0), plane)
        _poolrow.pool3s2_planes(s, pt, pl, y, blk * CB, stack)


def pool_fits(conv_y_shape, kernel, strides, dilations, pads, out) -> bool:
    """Whether a 2-D max pool (ONNX geometry) of a direct conv's output ``conv_y_shape`` (N, C, Hc,
    Wc) runs inside it (:func:`direct_pool_rows`, :data:`POOL` on): 3x3, stride 2, no dilation,
    top / left padding 0 or 1, every window meeting the map, but not the unpadded pools whose
    windows all lie inside (SqueezeNet's, GoogLeNet's): the pool step's even/odd kernel
    (``window._max_pool3s2``) runs those, and the two steps measured faster in a pass (SqueezeNet,
    one thread, steps timed inside passes: 663 + 130 us vs 841 us in one; hot 0.72 vs 0.71 ms).
    The padded ones (ResNet-50's) took the general pool kernel: 2472 + 272 us -> 2589 us."""
    if not (POOL and len(conv_y_shape) == 4 and len(out) == 2 and len(pads) == 4):
        return False
    hc, wc = int(conv_y_shape[2]), int(conv_y_shape[3])
    pt, pl = int(pads[0]), int(pads[1])
    ho, wo = int(out[0]), int(out[1])
    return (tuple(int(v) for v in kernel) == (3, 3) and tuple(int(v) for v in strides) == (2, 2)
            and tuple(int(v) for v in dilations) == (1, 1) and pt in (0, 1) and pl in (0, 1)
            and min(int(v) for v in pads) >= 0 and ho >= 1 and wo >= 1
            and 2 * (ho - 1) - pt <= hc - 1 and 2 * (wo - 1) - pl <= wc - 1
            and not (not any(int(v) for v in pads) and 2 * ho + 1 <= hc and 2 * wo + 1 <= wc))


#: stride-2 convs without left padding split their input's column phases with
#: :func:`_split_pairs` (one numba pass) instead of NumPy's strided copies; ``REFNET_DIRECT_PAIRS=0``
#: or PAIRS = False: the NumPy copies (A/B switch)
PAIRS = os.environ.get("REFNET_DIRECT_PAIRS", "1").strip() not in ("0", "off", "no", "false")


@_fast
def _split_pairs(xi, xph, pt, n, tail):
    """xph[c, pt + r, 0, j] = xi[c, r, 2j] and xph[c, pt + r, 1, j] = xi[c, r, 2j + 1] for j < n,
    and with ``tail`` also xph[c, pt + r, 0, n] = xi[c, r, 2n]: the column phases of a stride-2
    conv without left padding (unsigned indices: the stride-2 loads vectorise; SqueezeNet's
    3x224x224 input 50 -> 14 us)."""
    c, h, _ = xi.shape
    for ci in range(c):
        for r in range(h):
            src = xi[ci, r]
            d0 = xph[ci, pt + r, 0]
            d1 = xph[ci, pt + r, 1]
            for j in range(np.uint64(n)):
                d0[j] = src[np.uint64(2) * j]
                d1[j] = src[np.uint64(2) * j + np.uint64(1)]
            if tail:
                d0[n] = src[2 * n]


def pack_weights(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kh, kw) weights -> (ceil(C_out / CB), K, CB) float32 blocks, output channels
    last, zero-padded."""
    co = w.shape[0]
    k = w[0].size
    blocks = -(-co // CB)
    wp = np.zeros((blocks * CB, k), np.float32)
    wp[:co] = w.reshape(co, k)
    return np.ascontiguousarray(wp.reshape(blocks, CB, k).transpose(0, 2, 1))


def tap_offsets(c: int, hp: int, sw: int, wph: int, kh: int, kw: int, dh: int, dw: int) -> np.ndarray:
    """kofs[(ci * kh + p) * kw + q]: where tap (ci, p, q) of output (0, 0) lies in the flattened
    phase split ``xph`` (c, hp, sw, wph) of the padded input (unsigned)."""
    ci, p, q = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    off = ((ci * hp + p * dh) * sw + (q * dw) % sw) * wph + (q * dw) // sw
    return off.reshape(-1).astype(np.uint64)


def _twin(x: np.ndarray, w: np.ndarray, b: np.ndarray, act: int, slope: np.ndarray, stride, pad, dilation,
          y: np.ndarray) -> None:
    """NumPy twin of the whole conv of one image x (C, H, W) into y (C_out, Ho, Wo): im2col by
    slicing, one matmul, the epilogue."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, pad, dilation
    c, h, wd = x.shape
    co, _, kh, kw = w.shape
    ho, wo = y.shape[1:]
    xp = np.zeros((c, h + pt + pb, wd + pl + pr), np.float32)
    xp[:, pt : pt + h, pl : pl + wd] = x
    cols = np.empty((c, kh, kw, ho, wo), np.float32)
    for p in range(kh):
        for q in range(kw):
            cols[:, p, q] = xp[:, p * dh : p * dh + (ho - 1) * sh + 1 : sh, q * dw : q * dw + (wo - 1) * sw + 1 : sw]
    v = (w.reshape(co, -1) @ cols.reshape(-1, ho * wo)).reshape(co, ho, wo) + b[:, None, None]
    if act == 1:
        v = np.where(v > 0, v, v * slope[:, None, None])
    elif act == 2:
        v = np.where(v < 0, np.float32(0), np.where(v > 6, np.float32(6), v))
    y[...] = v


class DirectSmallCin:
    """``d(x, y)``: the conv of a batch x (N, C, H, W) into y (N, C_out, Ho, Wo), float32, with
    bias ``b`` (C_out) and the conv plan's activation code and slopes; weights packed here."""

    def __init__(self, x_shape, w: np.ndarray, b: np.ndarray, act: int, slope: np.ndarray, stride, pad, dilation,
                 y_shape) -> None:
        _, c, h, wd = x_shape
        _, kh, kw = w.shape[1:]
        (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, pad, dilation
        ho, wo = y_shape[2:]
        self.hc, self.wc = ho, wo
        self.w, self.b, self.act, self.slope = w, b, act, slope
        self.six = np.float32(6)
        self.stride, self.pad, self.dilation = (sh, sw), (pt, pl, pb, pr), (dh, dw)
        self.wp = pack_weights(w)
        self.hp = h + pt + pb
        self.wph = wo + (kw - 1) * dw // sw
        self.kofs = tap_offsets(c, self.hp, sw, self.wph, kh, kw, dh, dw)
        self.rowstep = sh * sw * self.wph
        self._tls = threading.local()

    def _phases(self, xi: np.ndarray) -> np.ndarray:
        """The zero-padded phase split of one image, flattened: in a buffer of this plan and
        thread, zeroed once (every call writes the same region, the padding stays zero; a fresh
        np.zeros per call cost 0.05 of SqueezeNet conv1's 0.7 ms)."""
        c, h, wd = xi.shape
        (_, sw), (pt, pl, _, _) = self.stride, self.pad
        xph = getattr(self._tls, "xph", None)
        if xph is None:
            xph = self._tls.xph = np.zeros((c, self.hp, sw, self.wph), np.float32)
        if sw == 2 and pl == 0 and PAIRS and xi.flags.c_contiguous:
            n1 = min(self.wph, wd // 2)  # columns of phase 1 (phase 0: one more when wd is odd and wph allows)
            _split_pairs(xi, xph, pt, n1, min(self.wph, (wd + 1) // 2) > n1)
            return xph.reshape(-1)
        for k in range(sw):
            j0 = max(0, -(-(pl - k) // sw))  # first phase column inside the input
            x0 = j0 * sw + k - pl
            if x0 >= wd or j0 >= self.wph:
                continue
            src = xi[:, :, x0::sw][:, :, : self.wph - j0]
            xph[:, pt : pt + h, k, j0 : j0 + src.shape[2]] = src
        return xph.reshape(-1)

    def pool_into(self, xi: np.ndarray, yi: np.ndarray, pt: int, pl: int) -> None:
        """yi (C_out, Ho, Wo) = the 3x3 / stride 2 max pool (top / left padding pt, pl; see
        :func:`pool_fits`) of this conv of the image xi (C, H, W), through :func:`direct_pool_rows`
        with scratch of this plan and thread."""
        hc, wc = self.hc, self.wc
        s = getattr(self._tls, "pool_s", None)
        if s is None:
            s = self._tls.pool_s = np.empty((CB, hc, wc), np.float32)
        direct_pool_rows(self.wp, self._phases(xi), self.kofs, self.rowstep, self.b, self.act, self.slope, self.six,
                         s, pt, pl, yi, _poolrow.STACK_ROWS)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> None:
        twin = MODE.on or load_numba().config.DISABLE_JIT
        for i in range(x.shape[0]):
            if twin:
                _twin(x[i], self.w, self.b, self.act, self.slope, self.stride, self.pad, self.dilation, y[i])
            else:
                yi = y[i] if y[i].flags.c_contiguous else np.empty(y.shape[1:], np.float32)
                direct_rows(self.wp, self._phases(x[i]), self.kofs, self.rowstep, self.b, self.act, self.slope,
                            self.six, yi)
                if yi is not y[i]:
                    y[i] = yi
