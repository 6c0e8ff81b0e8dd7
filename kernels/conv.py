"""Convolution, transposed convolution and fully-connected kernels (NCHW).

Every op ``f`` has a readable reference ``f_reference`` (straightforward NumPy, one
tensor contraction per kernel tap) beside the fast ``f`` (1x1 convs as a plain GEMM on the
NCHW buffer, k x k convs by a numba im2col + BLAS GEMM, depthwise convs by a direct numba
kernel, transposed convs by GEMM + numba col2im, bias and activation fused in one epilogue
pass). Both compute in the dtype they are given (float32 or float64; all arrays must share
it) and return that dtype.

Conventions (Caffe / Torch7 / cv2.dnn): ``pad = (top, left, bottom, right)`` (an int or
``(ph, pw)`` is accepted too); conv weights ``(C_out, C_in // groups, kh, kw)``; transposed
conv weights ``(C_in, C_out // groups, kh, kw)``; output size
``(H + pt + pb - dh * (kh - 1) - 1) // sh + 1`` (floor, as Caffe and cv2 do for convs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, pad4, pair, same_dtype
from refnet.kernels._jit import jit, pjit, prange

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "conv2d",
    "conv2d_reference",
    "separable_conv2d",
    "separable_conv2d_reference",
    "conv_transpose2d",
    "conv_transpose2d_reference",
    "linear",
    "linear_reference",
]

IntPair = int | Sequence[int]
Pad = int | Sequence[int]

_ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}

# im2col buffers are filled and consumed in bands of output rows of about this many
# elements, so the band stays in cache between im2col and the GEMM.
_IM2COL_BAND_ELEMS = 1 << 20


# --------------------------------------------------------------------------------------
# shapes and argument checks
# --------------------------------------------------------------------------------------


def conv_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int
) -> int:
    """Output length of a convolution along one axis, Caffe/cv2 rule (floor):
    ``(size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1``.

    Raises ShapeError when the dilated kernel is larger than the padded input.
    """
    size, kernel, stride = int(size), int(kernel), int(stride)
    pad_begin, pad_end, dilation = int(pad_begin), int(pad_end), int(dilation)
    if kernel < 1 or stride < 1 or dilation < 1 or pad_begin < 0 or pad_end < 0 or size < 0:
        raise ShapeError(
            "conv_output_size: kernel, stride, dilation must be >= 1 and size, pads >= 0",
            got=dict(size=size, kernel=kernel, stride=stride, pad=(pad_begin, pad_end),
                     dilation=dilation),
        )
    extent = dilation * (kernel - 1) + 1
    padded = size + pad_begin + pad_end
    if extent > padded:
        raise ShapeError(
            f"dilated kernel extent {extent} (kernel {kernel}, dilation {dilation}) is larger "
            f"than the padded input {padded} (size {size} + pads {pad_begin}+{pad_end})",
            expected=f"<= {padded}",
            got=extent,
        )
    return (padded - extent) // stride + 1


def conv_transpose_output_size(
    size: int,
    kernel: int,
    stride: int,
    pad_begin: int,
    pad_end: int,
    dilation: int,
    output_padding: int = 0,
) -> int:
    """Output length of a transposed convolution along one axis (Caffe Deconvolution /
    Torch SpatialFullConvolution): ``(size-1)*stride - pads + dilation*(kernel-1) + 1 + adj``.
    """
    out = (
        (int(size) - 1) * int(stride)
        - int(pad_begin)
        - int(pad_end)
        + int(dilation) * (int(kernel) - 1)
        + 1
        + int(output_padding)
    )
    if out < 1:
        raise ShapeError(
            "transposed convolution output would be empty (pads larger than the full output)",
            expected=">= 1",
            got=out,
        )
    return out


def _groups(groups: int) -> int:
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ShapeError("groups must be a positive int", expected=">= 1", got=groups)
    return int(groups)


def _activation_code(activation: str | None) -> int:
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"activation must be one of None, 'relu', 'relu6'; got {activation!r}"
        )
    return _ACTIVATIONS[activation]


def _check_bias(b: np.ndarray | None, n: int, x: np.ndarray, what: str) -> np.ndarray | None:
    if b is None:
        return None
    as_float_array(b, "b")
    same_dtype("x", x, "b", b)
    if b.shape != (n,):
        raise ShapeError(f"{what}: b must have one value per output channel",
                         expected=(n,), got=b.shape)
    return np.ascontiguousarray(b)


def _conv_args(x, w, b, stride, pad, dilation, groups, fn):
    """Validate conv2d arguments; return normalised values and the output size."""
    as_float_array(x, "x", 4)
    as_float_array(w, "w", 4)
    same_dtype("x", x, "w", w)
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    p = pad4(pad, "pad")
    g = _groups(groups)
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    if c % g or co % g:
        raise ShapeError(
            f"{fn}: input channels ({c}) and output channels ({co}) must both be divisible "
            f"by groups={g}",
            expected=f"x.shape[1] and w.shape[0] multiples of {g}",
            got=f"x {x.shape}, w {w.shape}",
        )
    if cig != c // g:
        raise ShapeError(
            f"{fn}: w must have C_in // groups = {c} // {g} = {c // g} input channels",
            expected=(co, c // g, kh, kw),
            got=f"w {w.shape} for x {x.shape}",
        )
    if kh < 1 or kw < 1:
        raise ShapeError(f"{fn}: empty kernel", got=f"w {w.shape}")
    bb = _check_bias(b, co, x, fn)
    try:
        ho = conv_output_size(h, kh, s[0], p[0], p[2], d[0])
        wo = conv_output_size(wd, kw, s[1], p[1], p[3], d[1])
    except ShapeError as e:
        raise ShapeError(
            f"{fn}: kernel {(kh, kw)} with dilation {d} does not fit the input {x.shape} "
            f"padded by {p}: {e}",
            expected="dilated kernel <= padded input",
            got=f"x {x.shape}, w {w.shape}",
        ) from None
    return s, p, d, g, bb, ho, wo


# --------------------------------------------------------------------------------------
# activations (reference)
# --------------------------------------------------------------------------------------


def _activate_reference(y: np.ndarray, activation: str | None, negative_slope: float) -> np.ndarray:
    """ReLU (leaky when negative_slope != 0) or ReLU6 = min(max(y, 0), 6); NaN stays NaN."""
    if activation == "relu":
        return np.where(y > 0, y, y * y.dtype.type(negative_slope))
    if activation == "relu6":
        return np.clip(y, 0, 6)
    return y


# --------------------------------------------------------------------------------------
# conv2d reference
# --------------------------------------------------------------------------------------


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
    negative_slope: float = 0.0,
) -> np.ndarray:
    """Grouped, dilated 2-D cross-correlation (Caffe Convolution / cv2 / Torch7):
    ``y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] * xpad[n, g*Cg + c, i*sh + p*dh,
    j*sw + q*dw]`` with zero padding, then the optional activation. Readable reference.
    """
    _activation_code(activation)  # validates the name
    (sh, sw), (pt, pl, pb, pr), (dh, dw), g, b, ho, wo = _conv_args(
        x, w, b, stride, pad, dilation, groups, "conv2d_reference"
    )
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
# conv2d fast: numba helpers
# --------------------------------------------------------------------------------------


@pjit
def _bias_act(y, b, act, slope):
    """In place on y (N, C, L): y = act(y + b[c]). act 0 none, 1 (leaky) relu, 2 relu6."""
    n, c, length = y.shape
    for t in prange(n * c):
        i = t // c
        k = t % c
        bias = b[k]
        row = y[i, k]
        if act == 0:
            for m in range(length):
                row[m] = row[m] + bias
        elif act == 1:
            for m in range(length):
                v = row[m] + bias
                row[m] = v if v > 0 else v * slope
        else:
            for m in range(length):
                v = row[m] + bias
                if v < 0:
                    row[m] = 0
                elif v > 6:
                    row[m] = 6
                else:
                    row[m] = v  # NaN stays NaN


@pjit
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


@jit
def _valid_range(off, stride, size, n_out):
    """Output positions o in [lo, hi) whose input position o*stride + off lies in [0, size)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = (size - 1 - off) // stride + 1
    lo = min(lo, n_out)
    return lo, max(min(hi, n_out), lo)


@pjit
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
            if act == 1:
                for ow in range(wo):
                    v = row[ow]
                    row[ow] = v if v > 0 else v * slope
            elif act == 2:
                for ow in range(wo):
                    v = row[ow]
                    if v < 0:
                        row[ow] = 0
                    elif v > 6:
                        row[ow] = 6


@pjit
def _col2im(cols, h, w, kh, kw, sh, sw, pt, pl, dh, dw, y):
    """Transposed-conv scatter: y[c, ih*sh - pt + p*dh, iw*sw - pl + q*dw] +=
    cols[(c*kh + p)*kw + q, ih*W + iw]; one output channel per parallel task."""
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
                for ih in range(h):
                    oh = ih * sh - pt + p * dh
                    if oh < 0 or oh >= ho:
                        continue
                    s = src[ih * w + lo : ih * w + hi]
                    dst = y[c, oh, start : start + (m - 1) * sw + 1 : sw]
                    for k in range(m):
                        dst[k] += s[k]


# --------------------------------------------------------------------------------------
# conv2d fast
# --------------------------------------------------------------------------------------


def _epilogue(y3: np.ndarray, b: np.ndarray | None, act: int, slope: float) -> None:
    if b is None and act == 0:
        return
    bb = b if b is not None else np.zeros(y3.shape[1], dtype=y3.dtype)
    _bias_act(y3, bb, act, y3.dtype.type(slope))


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
    negative_slope: float = 0.0,
) -> np.ndarray:
    """Fast grouped, dilated 2-D cross-correlation, same semantics as ``conv2d_reference``
    (Caffe Convolution / cv2.dnn), with an optional fused ReLU / leaky ReLU / ReLU6.

    Paths: 1x1 stride-1 unpadded -> one GEMM on the NCHW buffer; depthwise (groups == C_in)
    -> direct numba kernel; otherwise numba im2col (in bands of output rows) + BLAS GEMM.
    """
    act = _activation_code(activation)
    (sh, sw), (pt, pl, pb, pr), (dh, dw), g, b, ho, wo = _conv_args(
        x, w, b, stride, pad, dilation, groups, "conv2d"
    )
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    cog = co // g
    dt = x.dtype

    if g == c and cig == 1 and g > 1:  # depthwise, possibly with a channel multiplier
        y = np.empty((n, co, ho, wo), dtype=dt)
        bb = b if b is not None else np.zeros(co, dtype=dt)
        _depthwise(x, w, bb, sh, sw, pt, pl, dh, dw, act, dt.type(negative_slope), y)
        return y

    if kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == pl == pb == pr == 0:
        # 1x1: y[n, g] = W[g] @ x[n, g] viewed as (C_in/g, H*W); no copy of x
        xv = x.reshape(n, g, cig, h * wd)
        wv = w.reshape(g, cog, cig)
        y = np.matmul(wv, xv).reshape(n, co, ho, wo)
        _epilogue(y.reshape(n, co, ho * wo), b, act, negative_slope)
        return y

    # k x k: im2col in bands of output rows + GEMM writing straight into y
    y = np.empty((n, co, ho, wo), dtype=dt)
    kdim = cig * kh * kw
    wmat = w.reshape(g, cog, kdim)
    band = max(1, min(ho, _IM2COL_BAND_ELEMS // max(1, kdim * wo)))
    buf = np.empty(kdim * band * wo, dtype=dt)
    for i in range(n):
        for gi in range(g):
            xin = x[i, gi * cig : (gi + 1) * cig]
            yout = y[i, gi * cog : (gi + 1) * cog].reshape(cog, ho * wo)
            for oh0 in range(0, ho, band):
                oh1 = min(ho, oh0 + band)
                cb = buf[: kdim * (oh1 - oh0) * wo].reshape(kdim, (oh1 - oh0) * wo)
                _im2col(xin, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, wo, cb)
                np.matmul(wmat[gi], cb, out=yout[:, oh0 * wo : oh1 * wo])
    _epilogue(y.reshape(n, co, ho * wo), b, act, negative_slope)
    return y


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
    pw = _separable_args(x, dw_weight, pw_weight)
    t = conv2d(x, dw_weight, dw_bias, stride=stride, pad=pad, dilation=dilation,
               groups=x.shape[1])
    return conv2d(t, pw, pw_bias, activation=activation)


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
    pw = _separable_args(x, dw_weight, pw_weight)
    t = conv2d_reference(x, dw_weight, dw_bias, stride=stride, pad=pad, dilation=dilation,
                         groups=x.shape[1])
    return conv2d_reference(t, pw, pw_bias, activation=activation)


# --------------------------------------------------------------------------------------
# transposed convolution
# --------------------------------------------------------------------------------------


def _deconv_args(x, w, b, stride, pad, dilation, groups, output_padding, fn):
    as_float_array(x, "x", 4)
    as_float_array(w, "w", 4)
    same_dtype("x", x, "w", w)
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    p = pad4(pad, "pad")
    a = pair(output_padding, "output_padding", allow_zero=True)
    g = _groups(groups)
    n, c, h, wd = x.shape
    ci, cog, kh, kw = w.shape
    if ci != c or c % g:
        raise ShapeError(
            f"{fn}: w must be (C_in, C_out // groups, kh, kw) with C_in = x.shape[1] = {c} "
            f"divisible by groups={g}",
            expected=f"w.shape[0] == {c}",
            got=f"x {x.shape}, w {w.shape}",
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
    bb = _check_bias(b, cog * g, x, fn)
    ho = conv_transpose_output_size(h, kh, s[0], p[0], p[2], d[0], a[0])
    wo = conv_transpose_output_size(wd, kw, s[1], p[1], p[3], d[1], a[1])
    return s, p, d, a, g, bb, ho, wo


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
) -> np.ndarray:
    """Fast transposed convolution, same semantics as ``conv_transpose2d_reference``:
    per image and group one GEMM ``W^T @ x`` to columns, then a numba col2im scatter."""
    (sh, sw), (pt, pl, _, _), (dh, dw), _, g, b, ho, wo = _deconv_args(
        x, w, b, stride, pad, dilation, groups, output_padding, "conv_transpose2d"
    )
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    n, c, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = c // g
    co = cog * g
    wt = w.reshape(g, cig, cog * kh * kw).transpose(0, 2, 1)  # (g, cog*kh*kw, cig) view
    xv = x.reshape(n, g, cig, h * wd)
    y = np.zeros((n, co, ho, wo), dtype=x.dtype)
    for i in range(n):
        for gi in range(g):
            cols = wt[gi] @ xv[i, gi]  # (cog*kh*kw, H*W)
            _col2im(cols, h, wd, kh, kw, sh, sw, pt, pl, dh, dw, y[i, gi * cog : (gi + 1) * cog])
    _epilogue(y.reshape(n, co, ho * wo), b, 0, 0.0)
    return y


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
    bb = _check_bias(b, w.shape[0], x, fn)
    return axis, k, bb


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


def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, axis: int = 1
) -> np.ndarray:
    """Fast fully connected layer (same semantics as ``linear_reference``): one BLAS GEMM
    ``x2 @ w.T`` on the flattened input plus an in-place bias add."""
    axis, k, b = _linear_args(x, w, b, axis, "linear")
    x2 = x.reshape(-1, k)
    y = x2 @ w.T
    if b is not None:
        y += b
    return y.reshape(x.shape[:axis] + (w.shape[0],))
