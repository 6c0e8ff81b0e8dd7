"""Tensor kernels: data movement (concat, slice, flatten, reshape, permute, crop, pad, shuffle,
reorg), element-wise merging (eltwise) and spatial resampling (nearest, bilinear).

Every op takes float32 or float64 arrays and returns that dtype. ``f_reference`` is the
readable ground truth (a different formulation from ``f`` wherever the op allows one, so the
tests comparing them mean something); ``f`` is the fast path. The fast versions of pure data
movement ops may return views of their input (kernels are pure: nobody writes into them).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee, pair, per_plane
from refnet.kernels._jit import prange
from refnet.kernels._parallel import twin

__all__ = [
    "concat",
    "concat_reference",
    "slice",
    "slice_reference",
    "flatten",
    "flatten_reference",
    "reshape",
    "reshape_reference",
    "reshape_output_shape",
    "permute",
    "permute_reference",
    "permute_order",
    "crop",
    "crop_reference",
    "pad",
    "pad_reference",
    "PlanePad",
    "upsample_nearest",
    "upsample_nearest_reference",
    "resize_nearest",
    "resize_nearest_reference",
    "resize_bilinear",
    "resize_bilinear_reference",
    "interp_output_size",
    "eltwise",
    "eltwise_reference",
    "add_act",
    "add_act_reference",
    "shuffle_channel",
    "shuffle_channel_reference",
    "reorg",
    "reorg_reference",
    "shortcut",
    "shortcut_reference",
    "torch_padding",
    "torch_padding_reference",
    "torch_narrow",
    "torch_narrow_reference",
]

_slice = builtins.slice  # this module defines its own ``slice`` kernel


# ---- argument helpers ---------------------------------------------------------------------
def _canon_axis(axis: int, ndim: int, name: str = "axis") -> int:
    a = int(axis)
    if not -ndim <= a < ndim:
        raise ShapeError(f"{name} {axis} is out of range for a {ndim}-D input",
                         expected=f"{-ndim} <= {name} < {ndim}", got=axis)
    return a + ndim if a < 0 else a


def _float_list(xs: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    if isinstance(xs, np.ndarray) or not isinstance(xs, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of arrays, got {type(xs).__name__}")
    if len(xs) == 0:
        raise ShapeError(f"{name} must hold at least one array", expected=">= 1 array", got=0)
    arrs = [as_float_array(x, f"{name}[{i}]") for i, x in enumerate(xs)]
    for i, x in enumerate(arrs[1:], 1):
        if x.dtype != arrs[0].dtype:
            raise TypeError(f"{name}[{i}] has dtype {x.dtype} but {name}[0] has dtype "
                            f"{arrs[0].dtype}; pass all as one dtype")
    return arrs


def _spatial(x: np.ndarray, name: str = "x") -> np.ndarray:
    return as_float_array(x, name, ndim=4)


def _out_hw(out_hw: Sequence[int], name: str = "out_hw") -> tuple[int, int]:
    return pair(out_hw, name)


# ---- concat -------------------------------------------------------------------------------
def _concat_check(xs: Sequence[np.ndarray], axis: int) -> tuple[list[np.ndarray], int]:
    arrs = _float_list(xs, "xs")
    ndim = arrs[0].ndim
    if ndim == 0:
        raise ShapeError("xs[0] must have at least one axis", got="a 0-D array")
    ax = _canon_axis(axis, ndim)
    ref = arrs[0].shape
    for i, x in enumerate(arrs[1:], 1):
        if x.ndim != ndim or x.shape[:ax] + x.shape[ax + 1:] != ref[:ax] + ref[ax + 1:]:
            raise ShapeError(f"xs[{i}] does not match xs[0] outside concat axis {ax}",
                             expected=f"{ref} except axis {ax}", got=x.shape)
    return arrs, ax


def concat(xs: Sequence[np.ndarray], axis: int = 1) -> np.ndarray:
    """Join the arrays along ``axis`` (Caffe Concat / Torch JoinTable)."""
    arrs, ax = _concat_check(xs, axis)
    return np.concatenate(arrs, axis=ax)


def concat_reference(xs: Sequence[np.ndarray], axis: int = 1) -> np.ndarray:
    """Reference Concat: allocate the output and copy each input into its span of ``axis``."""
    arrs, ax = _concat_check(xs, axis)
    shape = list(arrs[0].shape)
    shape[ax] = sum(x.shape[ax] for x in arrs)
    out = np.empty(shape, dtype=arrs[0].dtype)
    start = 0
    for x in arrs:
        idx = [_slice(None)] * out.ndim
        idx[ax] = _slice(start, start + x.shape[ax])
        out[tuple(idx)] = x
        start += x.shape[ax]
    return out


# ---- slice --------------------------------------------------------------------------------
def _slice_bounds(x: np.ndarray, axis: int, points: Sequence[int], n: int) -> tuple[int, list[int]]:
    x = as_float_array(x, "x")
    if x.ndim == 0:
        raise ShapeError("x must have at least one axis", got="a 0-D array")
    ax = _canon_axis(axis, x.ndim)
    dim = x.shape[ax]
    pts = [int(p) for p in points]
    if pts:
        if any(b <= a for a, b in zip([0] + pts, pts + [dim])):
            raise ShapeError(f"slice points must increase strictly inside (0, {dim}) on axis {ax}",
                             expected=f"0 < p1 < ... < {dim}", got=tuple(pts))
        return ax, [0] + pts + [dim]
    n = int(n)
    if n < 1 or dim % n:
        raise ShapeError(f"axis {ax} of size {dim} cannot be split into {n} equal parts "
                         "(Caffe Slice without slice_point)", expected=f"a divisor of {dim}", got=n)
    return ax, [i * (dim // n) for i in range(n + 1)]


def slice(x: np.ndarray, axis: int, points: Sequence[int] = (), n: int = 2) -> list[np.ndarray]:
    """Caffe Slice: cut ``x`` along ``axis`` at ``points`` (or into ``n`` equal parts when
    ``points`` is empty); returns the pieces (views of ``x``)."""
    ax, b = _slice_bounds(x, axis, points, n)
    return np.split(x, b[1:-1], axis=ax)


def slice_reference(x: np.ndarray, axis: int, points: Sequence[int] = (), n: int = 2
                    ) -> list[np.ndarray]:
    """Reference Caffe Slice: each output is a fresh copy of its span ``[b_i, b_{i+1})``."""
    ax, b = _slice_bounds(x, axis, points, n)
    outs = []
    for lo, hi in zip(b[:-1], b[1:]):
        idx = [_slice(None)] * x.ndim
        idx[ax] = _slice(lo, hi)
        outs.append(np.array(x[tuple(idx)], copy=True))
    return outs


# ---- flatten / reshape --------------------------------------------------------------------
def _flatten_shape(shape: tuple[int, ...], axis: int, end_axis: int) -> tuple[int, ...]:
    nd = len(shape)
    if nd == 0:
        raise ShapeError("x must have at least one axis", got="a 0-D array")
    a = _canon_axis(axis, nd, "axis")
    e = _canon_axis(end_axis, nd, "end_axis")
    if e < a:
        raise ShapeError("flatten end_axis comes before axis", expected=f"end_axis >= {a}", got=e)
    return shape[:a] + (math.prod(shape[a:e + 1]),) + shape[e + 1:]


def flatten(x: np.ndarray, axis: int = 1, end_axis: int = -1) -> np.ndarray:
    """Caffe Flatten: merge axes ``axis..end_axis`` (inclusive) into one (a view when possible)."""
    x = as_float_array(x, "x")
    return x.reshape(_flatten_shape(x.shape, axis, end_axis))


def flatten_reference(x: np.ndarray, axis: int = 1, end_axis: int = -1) -> np.ndarray:
    """Reference Caffe Flatten: a C-order copy of ``x`` with axes ``axis..end_axis`` merged."""
    x = as_float_array(x, "x")
    out = np.empty(_flatten_shape(x.shape, axis, end_axis), dtype=x.dtype)
    out.ravel()[:] = x.ravel(order="C")
    return out


def reshape_output_shape(in_shape: Sequence[int], shape: Sequence[int], axis: int = 0,
                         num_axes: int = -1) -> tuple[int, ...]:
    """Caffe ReshapeParameter rule: axes ``[axis, axis + num_axes)`` of ``in_shape`` (all from
    ``axis`` when ``num_axes == -1``; a negative ``axis`` counts from the end, -1 = after the
    last axis) are replaced by ``shape``, where 0 copies the input dim at that position and
    one -1 is inferred from the element count."""
    ins = tuple(int(d) for d in in_shape)
    dims = tuple(int(d) for d in shape)
    nd = len(ins)
    start = int(axis) if axis >= 0 else nd + int(axis) + 1
    if not 0 <= start <= nd:
        raise ShapeError(f"reshape axis {axis} is out of range for a {nd}-D input",
                         expected=f"{-nd - 1} <= axis <= {nd}", got=axis)
    if num_axes < -1:
        raise ShapeError("reshape num_axes must be >= -1", got=num_axes)
    end = nd if num_axes == -1 else start + int(num_axes)
    if end > nd:
        raise ShapeError(f"reshape axis {start} + num_axes {num_axes} exceeds the input rank {nd}",
                         expected=f"axis + num_axes <= {nd}", got=end)
    if any(d < -1 for d in dims) or sum(d == -1 for d in dims) > 1:
        raise ShapeError("reshape shape may hold dims >= 0 and at most one -1", got=dims)
    out = list(ins[:start]) + list(dims) + list(ins[end:])
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= nd:
                raise ShapeError(f"reshape dim {i} is 0 (copy) but the input has no axis "
                                 f"{start + i}", expected=f"< {nd} axes copied", got=dims)
            out[start + i] = ins[start + i]
    total = math.prod(ins)
    if -1 in dims:
        k = start + dims.index(-1)
        known = math.prod(d for i, d in enumerate(out) if i != k)
        if known == 0 or total % known:
            raise ShapeError(f"reshape cannot infer the -1 dim: {total} elements do not divide by "
                             f"{known}", expected=f"a multiple of {known}", got=ins)
        out[k] = total // known
    if math.prod(out) != total:
        raise ShapeError(f"reshape to {tuple(out)} changes the element count",
                         expected=total, got=math.prod(out))
    return tuple(out)


def reshape(x: np.ndarray, shape: Sequence[int], axis: int = 0, num_axes: int = -1) -> np.ndarray:
    """Caffe Reshape (see :func:`reshape_output_shape`); a view of ``x`` when possible."""
    x = as_float_array(x, "x")
    return x.reshape(reshape_output_shape(x.shape, shape, axis, num_axes))


def reshape_reference(x: np.ndarray, shape: Sequence[int], axis: int = 0, num_axes: int = -1
                      ) -> np.ndarray:
    """Reference Caffe Reshape: a C-order copy of ``x`` in the new shape."""
    x = as_float_array(x, "x")
    out = np.empty(reshape_output_shape(x.shape, shape, axis, num_axes), dtype=x.dtype)
    out.ravel()[:] = x.ravel(order="C")
    return out


# ---- permute ------------------------------------------------------------------------------
def permute_order(order: Sequence[int], ndim: int) -> tuple[int, ...]:
    """Caffe-SSD Permute rule: the listed axes first, then the unlisted ones in their order."""
    first = [int(o) for o in order]
    if any(not 0 <= o < ndim for o in first) or len(set(first)) != len(first):
        raise ShapeError(f"permute order must list distinct axes of a {ndim}-D input",
                         expected=f"distinct values in [0, {ndim})", got=tuple(order))
    return tuple(first + [i for i in range(ndim) if i not in first])


def permute(x: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Caffe-SSD Permute: ``y`` has axes ``permute_order(order)`` of ``x`` (contiguous copy)."""
    x = as_float_array(x, "x")
    return np.ascontiguousarray(np.transpose(x, permute_order(order, x.ndim)))


def permute_reference(x: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Reference Permute as Caffe computes it: every output element gathers the input element
    whose flat index is the sum of output coordinates times the permuted input strides."""
    x = as_float_array(x, "x")
    perm = permute_order(order, x.ndim)
    in_strides = [math.prod(x.shape[i + 1:]) for i in range(x.ndim)]
    out_shape = tuple(x.shape[p] for p in perm)
    src = np.zeros(out_shape, dtype=np.int64)
    for k, p in enumerate(perm):
        coord = np.arange(out_shape[k], dtype=np.int64).reshape(
            (1,) * k + (-1,) + (1,) * (len(perm) - k - 1))
        src = src + coord * in_strides[p]
    return x.ravel(order="C")[src]


# ---- crop ---------------------------------------------------------------------------------
def _crop_window(x: np.ndarray, like_shape: Sequence[int], axis: int, offset: Sequence[int]
                 ) -> list[tuple[int, int]]:
    x = as_float_array(x, "x")
    like = tuple(int(d) for d in like_shape)
    if len(like) != x.ndim:
        raise ShapeError("crop like_shape must have the rank of x (Caffe Crop)",
                         expected=f"{x.ndim} dims", got=like)
    ax = _canon_axis(axis, x.ndim)
    n = x.ndim - ax
    offs = [int(o) for o in offset] or [0]
    if len(offs) == 1:
        offs = offs * n
    if len(offs) != n:
        raise ShapeError(f"crop offset needs one value or one per cropped axis ({n})",
                         expected=f"1 or {n} values", got=tuple(offset))
    win = [(0, d) for d in x.shape[:ax]]
    for i in range(n):
        d = ax + i
        if offs[i] < 0 or like[d] < 0 or offs[i] + like[d] > x.shape[d]:
            raise ShapeError(f"crop window on axis {d} does not fit x of shape {x.shape}",
                             expected=f"0 <= offset, offset + {like[d]} <= {x.shape[d]}",
                             got=offs[i])
        win.append((offs[i], offs[i] + like[d]))
    return win


def crop(x: np.ndarray, like_shape: Sequence[int], axis: int = 2, offset: Sequence[int] = (0,)
         ) -> np.ndarray:
    """Caffe Crop: axes from ``axis`` on are cut to ``like_shape`` starting at ``offset`` (one
    value for all cropped axes or one per axis); earlier axes are kept (a view of ``x``)."""
    win = _crop_window(x, like_shape, axis, offset)
    return x[tuple(_slice(lo, hi) for lo, hi in win)]


def crop_reference(x: np.ndarray, like_shape: Sequence[int], axis: int = 2,
                   offset: Sequence[int] = (0,)) -> np.ndarray:
    """Reference Caffe Crop: gathers ``x`` at explicit index ranges ``offset + arange(like)``."""
    win = _crop_window(x, like_shape, axis, offset)
    return x[np.ix_(*[np.arange(lo, hi) for lo, hi in win])].copy()


# ---- pad ----------------------------------------------------------------------------------
_PAD_MODES = ("constant", "reflect", "edge")


def _pad_check(x: np.ndarray, pads: Sequence[Sequence[int]], mode: str
               ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    x = as_float_array(x, "x")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad mode must be one of {_PAD_MODES}, got {mode!r}")
    try:
        pp = [(int(b), int(a)) for b, a in pads]
    except (TypeError, ValueError) as e:
        raise ShapeError("pads must be ((before, after), ...) per axis of x",
                         expected=f"{x.ndim} pairs", got=pads) from e
    if len(pp) != x.ndim:
        raise ShapeError("pads needs one (before, after) pair per axis of x",
                         expected=f"{x.ndim} pairs for shape {x.shape}", got=len(pp))
    if any(b < 0 or a < 0 for b, a in pp):
        raise ShapeError("pads must be non-negative", got=tuple(pp))
    if mode != "constant":
        for d, (b, a) in zip(x.shape, pp):
            if d == 0 and (b or a):
                raise ShapeError(f"{mode} padding of an empty axis", got=x.shape)
    return x, pp


def _pad_source_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index along one axis for output positions ``-before .. n + after - 1``
    (out-of-range positions, used by constant mode only, are returned as -1)."""
    i = np.arange(-before, n + after, dtype=np.int64)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(i)
        period = 2 * (n - 1)  # mirror without repeating the edge: x[-1] = x[1]
        j = np.abs(i) % period
        return np.where(j >= n, period - j, j)
    return np.where((i >= 0) & (i < n), i, -1)


@twin()
def _pad_planes(x, pl, rows, cols, value, y):
    """y[t, i, j] = x[t, rows[i], cols[j]] (``value`` where an index is -1); the interior
    columns pl .. pl + W - 1 are a contiguous row copy. One plane per parallel task."""
    p_, _, w = x.shape
    _, ho, wo = y.shape
    for t in prange(p_):
        for i in range(ho):
            r = rows[i]
            dst = y[t, i]
            if r < 0:
                for j in range(wo):
                    dst[j] = value
                continue
            src = x[t, r]
            for j in range(pl):
                c = cols[j]
                dst[j] = src[c] if c >= 0 else value
            seg = dst[pl : pl + w]
            for j in range(w):
                seg[j] = src[j]
            for j in range(pl + w, wo):
                c = cols[j]
                dst[j] = src[c] if c >= 0 else value


class PlanePad:
    """``pad`` of the last two axes only, planned for one input shape: ``plan(x, out=None)``
    runs one numba pass over the planes (a contiguous copy of each row's interior)."""

    def __init__(self, x_shape: Sequence[int], pad_h: Sequence[int], pad_w: Sequence[int], mode: str,
                 value: float, dtype: np.dtype) -> None:
        if mode not in _PAD_MODES:
            raise ValueError(f"pad mode must be one of {_PAD_MODES}, got {mode!r}")
        self.x_shape = tuple(int(d) for d in x_shape)
        h, w = self.x_shape[-2:]
        (pt, pb), (pl, pr) = (int(v) for v in pad_h), (int(v) for v in pad_w)
        self.y_shape = self.x_shape[:-2] + (h + pt + pb, w + pl + pr)
        self.pl = pl
        self.rows = _pad_source_index(h, pt, pb, mode)
        self.cols = _pad_source_index(w, pl, pr, mode)
        self.dtype = np.dtype(dtype)
        self.value = self.dtype.type(value)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        h, w = self.x_shape[-2:]
        planes = np.ascontiguousarray(x).reshape(-1, h, w)
        y = np.empty(self.y_shape, dtype=self.dtype) if out is None else out
        _pad_planes(planes, self.pl, self.rows, self.cols, self.value, y.reshape((-1,) + self.y_shape[-2:]))
        return y


def pad(x: np.ndarray, pads: Sequence[Sequence[int]], mode: str = "constant", value: float = 0.0
        ) -> np.ndarray:
    """Pad every axis by ``pads[i] = (before, after)``: "constant" fills ``value``, "reflect"
    mirrors without repeating the edge (Torch SpatialReflectionPadding, numpy "reflect"),
    "edge" repeats the border (Torch SpatialReplicationPadding)."""
    x, pp = _pad_check(x, pads, mode)
    out_shape = tuple(d + b + a for d, (b, a) in zip(x.shape, pp))
    if x.ndim >= 2 and x.size and not any(b or a for b, a in pp[:-2]):
        return PlanePad(x.shape, pp[-2], pp[-1], mode, value, x.dtype)(x)
    if mode == "constant":
        out = np.full(out_shape, value, dtype=x.dtype)
        out[tuple(_slice(b, b + d) for d, (b, _) in zip(x.shape, pp))] = x
        return out
    out = x
    for ax, (d, (b, a)) in enumerate(zip(x.shape, pp)):
        if b or a:
            out = np.take(out, _pad_source_index(d, b, a, mode), axis=ax)
    return out if out is not x else x.copy()


def pad_reference(x: np.ndarray, pads: Sequence[Sequence[int]], mode: str = "constant",
                  value: float = 0.0) -> np.ndarray:
    """Reference padding: each output element reads the input at the per-axis source index of
    its mode (mirror / clamp), or takes ``value`` outside the input in constant mode."""
    x, pp = _pad_check(x, pads, mode)
    src = [_pad_source_index(d, b, a, mode) for d, (b, a) in zip(x.shape, pp)]
    if mode != "constant":
        return x[np.ix_(*src)]
    inside = np.ones([len(s) for s in src], dtype=bool)
    for ax, s in enumerate(src):
        inside &= (s >= 0).reshape((1,) * ax + (-1,) + (1,) * (len(src) - ax - 1))
    if x.size == 0:
        return np.full(inside.shape, value, dtype=x.dtype)
    gathered = x[np.ix_(*[np.maximum(s, 0) for s in src])]
    return np.where(inside, gathered, np.asarray(value, dtype=x.dtype)).astype(x.dtype)


# ---- nearest resampling -------------------------------------------------------------------
def upsample_nearest(x: np.ndarray, scale: int | Sequence[int] = (2, 2)) -> np.ndarray:
    """Nearest upsampling by integer factors ``(sh, sw)``: ``y[i, j] = x[i // sh, j // sw]``
    (Torch SpatialUpSamplingNearest, Darknet upsample)."""
    x = _spatial(x)
    sh, sw = pair(scale, "scale")
    n, c, h, w = x.shape
    y = np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw))
    return y.reshape(n, c, h * sh, w * sw)


def upsample_nearest_reference(x: np.ndarray, scale: int | Sequence[int] = (2, 2)) -> np.ndarray:
    """Reference nearest upsampling: gather rows ``i // sh`` and columns ``j // sw``."""
    x = _spatial(x)
    sh, sw = pair(scale, "scale")
    rows = np.arange(x.shape[2] * sh) // sh
    cols = np.arange(x.shape[3] * sw) // sw
    return x[:, :, rows[:, None], cols[None, :]]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # cv2 resizeNN: sx = floor(dx * (1 / (out / in))) in double, clamped to in - 1
    inv = 1.0 / (n_out / n_in)
    return np.minimum(np.floor(np.arange(n_out) * inv).astype(np.int64), n_in - 1)


def resize_nearest(x: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Nearest resize to ``out_hw`` with cv2's INTER_NEAREST rule ``src = floor(dst * in / out)``
    (for integer factors this is Torch's nearest upsampling)."""
    x = _spatial(x)
    oh, ow = _out_hw(out_hw)
    y = np.take(x, _nearest_index(x.shape[2], oh), axis=2)
    return np.take(y, _nearest_index(x.shape[3], ow), axis=3)


def resize_nearest_reference(x: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Reference nearest resize: one gather at (row, column) source index pairs, cv2's rule."""
    x = _spatial(x)
    oh, ow = _out_hw(out_hw)
    rows = _nearest_index(x.shape[2], oh)
    cols = _nearest_index(x.shape[3], ow)
    return x[:, :, rows[:, None], cols[None, :]]


# ---- bilinear resampling ------------------------------------------------------------------
def _bilinear_coords(n_in: int, n_out: int, align_corners: bool, half_pixel: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows ``i0``, ``i1 = min(i0 + 1, in - 1)`` and weight ``lam`` of ``i1`` (float64)."""
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    elif half_pixel:
        src = np.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    else:
        src = dst * (n_in / n_out)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _bilinear_check(x: np.ndarray, out_hw: Sequence[int], align_corners: bool, half_pixel: bool
                    ) -> tuple[np.ndarray, int, int]:
    x = _spatial(x)
    if align_corners and half_pixel:
        raise ValueError("resize_bilinear: align_corners and half_pixel are exclusive")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ShapeError("resize_bilinear needs a non-empty input plane", got=x.shape)
    oh, ow = _out_hw(out_hw)
    return x, oh, ow


@ieee
def resize_bilinear(x: np.ndarray, out_hw: Sequence[int], *, align_corners: bool = False,
                    half_pixel: bool = False) -> np.ndarray:
    """Bilinear resize to ``out_hw``. Source coordinate: ``align_corners``: dst*(in-1)/(out-1)
    (Caffe Interp, Torch SpatialUpSamplingBilinear); ``half_pixel``: max((dst+0.5)*in/out-0.5, 0)
    (cv2.resize INTER_LINEAR); neither: dst*in/out; the far neighbour is clamped to the edge."""
    x, oh, ow = _bilinear_check(x, out_hw, align_corners, half_pixel)
    y0, y1, ly = _bilinear_coords(x.shape[2], oh, align_corners, half_pixel)
    x0, x1, lx = _bilinear_coords(x.shape[3], ow, align_corners, half_pixel)
    ly = ly.astype(x.dtype)[:, None]
    lx = lx.astype(x.dtype)
    top = np.take(x, y0, axis=2)
    rows = top + ly * (np.take(x, y1, axis=2) - top)  # separable: rows first, then columns
    left = np.take(rows, x0, axis=3)
    return (left + lx * (np.take(rows, x1, axis=3) - left)).astype(x.dtype, copy=False)


@ieee
def resize_bilinear_reference(x: np.ndarray, out_hw: Sequence[int], *,
                              align_corners: bool = False, half_pixel: bool = False) -> np.ndarray:
    """Reference bilinear resize (float64): each output is the four-tap weighted sum
    ``(1-ly)(1-lx) a + (1-ly) lx b + ly (1-lx) c + ly lx d`` at the rule's source point."""
    x, oh, ow = _bilinear_check(x, out_hw, align_corners, half_pixel)
    xd = x.astype(np.float64)
    y0, y1, ly = _bilinear_coords(x.shape[2], oh, align_corners, half_pixel)
    x0, x1, lx = _bilinear_coords(x.shape[3], ow, align_corners, half_pixel)
    r0, r1, c0, c1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    wy, wx = ly[:, None], lx[None, :]
    out = ((1 - wy) * (1 - wx) * xd[:, :, r0, c0] + (1 - wy) * wx * xd[:, :, r0, c1]
           + wy * (1 - wx) * xd[:, :, r1, c0] + wy * wx * xd[:, :, r1, c1])
    return out.astype(x.dtype)


def interp_output_size(in_hw: Sequence[int], *, height: int = 0, width: int = 0,
                       zoom_factor: int = 1, shrink_factor: int = 1, pad_beg: int = 0,
                       pad_end: int = 0) -> tuple[int, int]:
    """Caffe (DeepLab) Interp output size. With ``E = in + pad_beg + pad_end`` (pads <= 0 crop):
    shrink gives ``(E-1)//shrink + 1``, zoom then gives ``S + (S-1)*(zoom-1)``; without factors
    (both 1) an explicit ``height``/``width`` wins, else ``E``. (cv2 ignores shrink and pads.)"""
    h, w = (int(v) for v in in_hw)
    zoom, shrink = int(zoom_factor), int(shrink_factor)
    if zoom < 1 or shrink < 1:
        raise ShapeError("Interp zoom_factor and shrink_factor must be >= 1",
                         got=(zoom_factor, shrink_factor))
    if pad_beg > 0 or pad_end > 0:
        raise ShapeError("Interp supports only non-positive pad_beg/pad_end (cropping)",
                         got=(pad_beg, pad_end))
    eh, ew = h + pad_beg + pad_end, w + pad_beg + pad_end
    if eh <= 0 or ew <= 0:
        raise ShapeError("Interp padding leaves an empty input", expected="> 0", got=(eh, ew))
    if zoom != 1 or shrink != 1:
        sh, sw = (eh - 1) // shrink + 1, (ew - 1) // shrink + 1
        return sh + (sh - 1) * (zoom - 1), sw + (sw - 1) * (zoom - 1)
    if height > 0 or width > 0:
        if height <= 0 or width <= 0:
            raise ShapeError("Interp needs both height and width", got=(height, width))
        return int(height), int(width)
    return eh, ew


# ---- eltwise ------------------------------------------------------------------------------
def _eltwise_check(xs: Sequence[np.ndarray], operation: str, coeffs: Sequence[float] | None
                   ) -> tuple[list[np.ndarray], str, list[float] | None]:
    arrs = _float_list(xs, "xs")
    op = str(operation).lower()
    if op not in ("sum", "prod", "max"):
        raise ValueError(f"eltwise operation must be 'sum', 'prod' or 'max', got {operation!r}")
    for i, x in enumerate(arrs[1:], 1):
        if x.shape != arrs[0].shape:
            raise ShapeError(f"eltwise xs[{i}] differs in shape from xs[0]",
                             expected=arrs[0].shape, got=x.shape)
    cs = None if coeffs is None or len(coeffs) == 0 else [float(c) for c in coeffs]
    if cs is not None:
        if op != "sum":
            raise ValueError("eltwise coeffs are only defined for operation 'sum' (Caffe)")
        if len(cs) != len(arrs):
            raise ShapeError("eltwise needs one coeff per input", expected=len(arrs), got=len(cs))
    return arrs, op, cs


@ieee
def eltwise(xs: Sequence[np.ndarray], operation: str = "sum",
            coeffs: Sequence[float] | None = None) -> np.ndarray:
    """Caffe Eltwise: SUM (``sum_i coeffs[i] * x_i``, coeffs default 1), PROD or MAX of
    same-shape inputs (MAX propagates NaN)."""
    arrs, op, cs = _eltwise_check(xs, operation, coeffs)
    dt = arrs[0].dtype
    if op == "prod":
        out = arrs[0].copy()
        for x in arrs[1:]:
            np.multiply(out, x, out=out)
        return out
    if op == "max":
        out = arrs[0].copy()
        for x in arrs[1:]:
            np.maximum(out, x, out=out)
        return out
    if cs is None:
        out = arrs[0].copy()
        for x in arrs[1:]:
            np.add(out, x, out=out)
        return out
    out = np.multiply(arrs[0], dt.type(cs[0]))
    for c, x in zip(cs[1:], arrs[1:]):
        out += dt.type(c) * x
    return out


# ---- add + activation (the float32 path's fused eltwise sum / add and the activation after it) ----
_ACT_CODE = {None: 0, "relu": 1, "prelu": 1, "relu6": 2}  # 1: leaky / PReLU with a per-plane slope


@twin(0)
def _add_act_planes(a, b, slope, act, six, out):
    """out[t] = act(a[t] + b[t]) over the planes t of (P, L) arrays: act 1 leaky / PReLU with
    slope[t] (``v if v > 0 else v * s``: NaN stays NaN), 2 ReLU6 (``six`` is 6 in the dtype),
    else none. One pass, one plane per parallel task."""
    for t in prange(a.shape[0]):
        x = a[t]
        y = b[t]
        o = out[t]
        if act == 1:
            s = slope[t]
            for j in range(x.shape[0]):
                v = x[j] + y[j]
                o[j] = v if v > 0 else v * s
        elif act == 2:
            zero = six - six
            for j in range(x.shape[0]):
                v = x[j] + y[j]
                o[j] = zero if v < zero else (six if v > six else v)
        else:
            for j in range(x.shape[0]):
                o[j] = x[j] + y[j]


def _add_act_args(a: object, b: object, activation: str | None, slope: object
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a, b (broadcast to one shape) and the activation's slope as a float64 (C,) or (1,) vector."""
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    if a.dtype != b.dtype:
        raise ValueError(f"add_act: a and b differ in dtype ({a.dtype}, {b.dtype})")
    if activation not in _ACT_CODE:
        raise ValueError(f"add_act activation must be one of {sorted(map(str, _ACT_CODE))}, got {activation!r}")
    if a.shape != b.shape:
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise ShapeError("add_act operands do not broadcast", expected=a.shape, got=b.shape) from None
    s = np.asarray(0.0 if activation != "relu" and activation != "prelu" else slope, np.float64).reshape(-1)
    c = a.shape[1] if a.ndim >= 2 else 1
    if s.size not in (1, c):
        raise ShapeError("add_act slope must have 1 value or one per channel (axis 1)",
                         expected=f"(1,) or ({c},)", got=s.shape)
    return a, b, s


@ieee
def add_act(a: np.ndarray, b: np.ndarray, activation: str | None = None, slope: object = 0.0,
            out: np.ndarray | None = None) -> np.ndarray:
    """Fast ``act(a + b)`` in one pass (an eltwise sum or add fused with the activation after it):
    ``activation`` None, ``"relu"`` (leaky with the scalar ``slope``), ``"prelu"`` (``slope`` (1,)
    or (C,) along axis 1) or ``"relu6"``; a and b of one dtype (broadcast if they differ in shape).
    ``out``: a C-contiguous array of the result's shape and dtype to write into."""
    a, b, s = _add_act_args(a, b, activation, slope)
    n = a.shape[0] if a.ndim >= 2 else 1
    c = a.shape[1] if a.ndim >= 2 else 1
    planes = (n * c, a.size // max(1, n * c))
    if out is None:
        out = np.empty(a.shape, a.dtype)
    slope_t = per_plane(s, n, c, a.dtype)
    a2 = np.ascontiguousarray(a).reshape(planes)
    b2 = np.ascontiguousarray(b).reshape(planes)
    _add_act_planes(a2, b2, slope_t, _ACT_CODE[activation], a.dtype.type(6), out.reshape(planes))
    return out


@ieee
def add_act_reference(a: np.ndarray, b: np.ndarray, activation: str | None = None,
                      slope: object = 0.0) -> np.ndarray:
    """Reference ``act(a + b)``, computed in float64 (the sum, then the activation's formula),
    returned in the inputs' dtype."""
    a, b, s = _add_act_args(a, b, activation, slope)
    v = a.astype(np.float64) + b.astype(np.float64)
    if activation == "relu6":
        v = np.minimum(np.maximum(v, 0.0), 6.0)
    elif activation is not None:
        view = s.reshape((1, -1) + (1,) * (v.ndim - 2)) if s.size > 1 else s[0]
        v = np.where(v > 0, v, view * v)
    return v.astype(a.dtype)


@ieee
def eltwise_reference(xs: Sequence[np.ndarray], operation: str = "sum",
                      coeffs: Sequence[float] | None = None) -> np.ndarray:
    """Reference Caffe Eltwise, accumulated in float64 input by input."""
    arrs, op, cs = _eltwise_check(xs, operation, coeffs)
    acc = arrs[0].astype(np.float64) * (1.0 if cs is None else cs[0])
    for i, x in enumerate(arrs[1:], 1):
        xd = x.astype(np.float64)
        if op == "sum":
            acc = acc + (1.0 if cs is None else cs[i]) * xd
        elif op == "prod":
            acc = acc * xd
        else:
            acc = np.maximum(acc, xd)
    return acc.astype(arrs[0].dtype)


# ---- channel shuffles ---------------------------------------------------------------------
def _shuffle_check(x: np.ndarray, group: int) -> tuple[np.ndarray, int]:
    x = as_float_array(x, "x")
    if x.ndim < 2:
        raise ShapeError("shuffle_channel needs an (N, C, ...) input", expected=">= 2-D",
                         got=x.shape)
    g = int(group)
    if g < 1 or x.shape[1] % g:
        raise ShapeError(f"shuffle_channel: {x.shape[1]} channels do not divide into {group} "
                         "groups", expected=f"a divisor of {x.shape[1]}", got=group)
    return x, g


def shuffle_channel(x: np.ndarray, group: int) -> np.ndarray:
    """Caffe ShuffleChannel (ShuffleNet): view channels as (group, C/group), transpose to
    (C/group, group) and flatten back."""
    x, g = _shuffle_check(x, group)
    n, c = x.shape[:2]
    y = x.reshape((n, g, c // g) + x.shape[2:]).swapaxes(1, 2)
    return np.ascontiguousarray(y).reshape(x.shape)


def shuffle_channel_reference(x: np.ndarray, group: int) -> np.ndarray:
    """Reference ShuffleChannel: output channel ``j`` is input channel
    ``(j % group) * (C / group) + j // group``."""
    x, g = _shuffle_check(x, group)
    c = x.shape[1]
    j = np.arange(c)
    return x[:, (j % g) * (c // g) + j // g].copy()


def _reorg_check(x: np.ndarray, stride: int) -> tuple[np.ndarray, int]:
    x = _spatial(x)
    s = int(stride)
    n, c, h, w = x.shape
    if s < 1 or h % s or w % s or c % (s * s):
        raise ShapeError(f"reorg stride {stride} must divide H and W, and stride^2 must divide C "
                         "(Darknet reorg_cpu)", expected=f"H, W multiples of {s}, C of {s * s}",
                         got=x.shape)
    return x, s


def reorg(x: np.ndarray, stride: int) -> np.ndarray:
    """Darknet reorg (YOLOv2 passthrough) as cv2's ReorgLayer computes it: view the (C, H, W)
    buffer as (C*H/s^2, s, W, s), permute to (s, s, C*H/s^2, W), read as (C*s^2, H/s, W/s).
    This is Darknet's reorg_cpu(forward=0), not a plain space-to-depth."""
    x, s = _reorg_check(x, stride)
    n, c, h, w = x.shape
    y = x.reshape(n, c * h // (s * s), s, w, s).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(y).reshape(n, c * s * s, h // s, w // s)


def reorg_reference(x: np.ndarray, stride: int) -> np.ndarray:
    """Reference reorg: Darknet's reorg_cpu(forward=0) index rule, ``out[k, j, i]`` (flat, in
    (C, H, W) terms) ``= x[c2, j*s + off // s, i*s + off % s]`` with x read flat as
    (C/s^2, H*s, W*s), ``c2 = k % (C/s^2)``, ``off = k // (C/s^2)``."""
    x, s = _reorg_check(x, stride)
    n, c, h, w = x.shape
    oc = c // (s * s)
    k, j, i = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    c2, off = k % oc, k // oc
    w2 = i * s + off % s
    h2 = j * s + off // s
    src = w2 + w * s * (h2 + h * s * c2)  # flat index in the (C/s^2, H*s, W*s) reading of x
    flat = x.reshape(n, -1)
    return flat[:, src.ravel()].reshape(n, c * s * s, h // s, w // s)


# ---- Darknet [shortcut] -----------------------------------------------------------------------------
def _shortcut_check(x: np.ndarray, others: Sequence[np.ndarray]) -> None:
    if x.ndim < 2:
        raise ShapeError("shortcut input must have a channel axis", got=x.shape)
    for a in others:
        if a.ndim != x.ndim or a.shape[0] != x.shape[0] or a.shape[2:] != x.shape[2:]:
            raise ShapeError("shortcut inputs must agree in batch and spatial size (channels may differ)",
                             expected=x.shape, got=a.shape)


@ieee
def shortcut_reference(x: np.ndarray, others: Sequence[np.ndarray], alpha: float = 1.0, beta: float = 1.0
                       ) -> np.ndarray:
    """Darknet's shortcut_cpu: ``y = alpha * x + beta * a`` over the channels both have (the rest of
    ``x`` scaled by alpha), for each ``a`` of ``others`` in turn. Float64 throughout."""
    _shortcut_check(x, others)
    y = x.astype(np.float64) * float(alpha)
    for a in others:
        m = min(x.shape[1], a.shape[1])
        y[:, :m] = y[:, :m] + float(beta) * a[:, :m].astype(np.float64)
    return y.astype(x.dtype)


@ieee
def shortcut(x: np.ndarray, others: Sequence[np.ndarray], alpha: float = 1.0, beta: float = 1.0) -> np.ndarray:
    """Fast twin of :func:`shortcut_reference`, in ``x``'s dtype, multiplications skipped at 1."""
    _shortcut_check(x, others)
    al, be = x.dtype.type(alpha), x.dtype.type(beta)
    y = x * al if al != 1 else x.copy()
    c = x.shape[1]
    for a in others:
        m = min(c, a.shape[1])
        y[:, :m] += a[:, :m] * be if be != 1 else a[:, :m]
    return y


# ---- Torch7 nn.Padding and nn.Narrow: element moves only -------------------------------------------------
# Nothing is computed, so one readable implementation serves both precisions (``f = f_reference``);
# the kernels carry their ops' names (torch_padding, torch_narrow).
def torch_padding_reference(x: np.ndarray, axis: int, pad: int, at: int, value: float = 0.0) -> np.ndarray:
    """nn.Padding: ``pad`` entries of ``value`` inserted along ``axis`` before position ``at``."""
    axis = _canon_axis(axis, x.ndim)
    if pad < 0 or not 0 <= at <= x.shape[axis]:
        raise ShapeError(f"padding {pad} at {at} outside an axis of size {x.shape[axis]}", got=(pad, at))
    out_shape = list(x.shape)
    out_shape[axis] += pad
    y = np.full(out_shape, float(value), dtype=x.dtype)
    src = [_slice(None)] * x.ndim
    dst = [_slice(None)] * x.ndim
    src[axis], dst[axis] = _slice(0, at), _slice(0, at)
    y[tuple(dst)] = x[tuple(src)]
    src[axis], dst[axis] = _slice(at, None), _slice(at + pad, None)
    y[tuple(dst)] = x[tuple(src)]
    return y


def torch_narrow_reference(x: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """nn.Narrow: ``length`` entries from ``start`` (0-based) along ``axis``, contiguous."""
    axis = _canon_axis(axis, x.ndim)
    if start < 0 or length < 0 or start + length > x.shape[axis]:
        raise ShapeError(f"narrow {start}:{start + length} outside an axis of size {x.shape[axis]}",
                         got=(start, length))
    sl = [_slice(None)] * x.ndim
    sl[axis] = _slice(start, start + length)
    return np.ascontiguousarray(x[tuple(sl)])


torch_padding = torch_padding_reference
torch_narrow = torch_narrow_reference
