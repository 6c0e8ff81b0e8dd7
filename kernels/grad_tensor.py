"""Backward kernels of the tensor ops: concat, slice, eltwise, reshape/flatten, permute, resampling.

- concat / slice are each other's adjoint: ``concat_backward`` splits ``dy`` along the axis into
  the input sizes; ``slice_backward`` concatenates the output cotangents (zeros for an output
  that received none).
- eltwise SUM: ``dx_i = coeff_i dy``; PROD: ``dx_i = dy * prod_{j != i} x_j``; MAX: ``dy`` goes to
  the first input holding the maximum (Caffe's forward keeps the first on ties).
- reshape / flatten: ``dy`` reshaped to x's shape; permute: ``dy`` transposed by the inverse order.
- nearest resize (cv2's ``src = floor(dst * in / out)``, Torch/Darknet integer upsampling) and
  bilinear resize (kernels/tensor.py's source-coordinate rules) are linear maps ``y = R x C^T``
  along H then W, so ``dx = R^T dy C``.
- :func:`routing_backward`: any op that only moves or copies elements (paddings, crops,
  narrows, shuffles, reorg, ...) traced once on element identities: run the forward on inputs
  holding ``1..size`` (and again doubled, so constant fill values can be told apart) and add
  each output cotangent to the element it came from.

``f_backward_reference`` float64 with explicit interpolation matrices / loops; ``f_backward``
in the input dtype (``np.add.at`` scatters for resampling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee
from refnet.kernels.tensor import _bilinear_coords, _nearest_index

__all__ = [
    "concat_backward", "concat_backward_reference",
    "slice_backward", "slice_backward_reference",
    "eltwise_backward", "eltwise_backward_reference",
    "reshape_backward", "reshape_backward_reference",
    "permute_backward", "permute_backward_reference",
    "resize_nearest_backward", "resize_nearest_backward_reference",
    "resize_bilinear_backward", "resize_bilinear_backward_reference",
    "upsample_nearest_backward", "upsample_nearest_backward_reference",
    "routing_backward",
]


def _ax(axis: int, ndim: int) -> int:
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < ndim:
        raise ShapeError(f"axis {axis} out of range for rank {ndim}")
    return a


# ---- concat / slice ------------------------------------------------------------------------------
@ieee
def concat_backward_reference(dy: np.ndarray, sizes: Sequence[int], axis: int = 1) -> list[np.ndarray]:
    """Concat backward, float64: ``dy`` cut along ``axis`` into pieces of ``sizes``."""
    dy = as_float_array(dy, "dy").astype(np.float64)
    a = _ax(axis, dy.ndim)
    if sum(sizes) != dy.shape[a]:
        raise ShapeError("concat_backward: sizes do not add up to dy's axis", expected=dy.shape[a], got=sum(sizes))
    out, start = [], 0
    for s in sizes:
        idx = [slice(None)] * dy.ndim
        idx[a] = slice(start, start + s)
        out.append(dy[tuple(idx)].copy())
        start += s
    return out


@ieee
def concat_backward(dy: np.ndarray, sizes: Sequence[int], axis: int = 1) -> list[np.ndarray]:
    """Fast concat backward (np.split views copied contiguous) in the input dtype."""
    dy = as_float_array(dy, "dy")
    a = _ax(axis, dy.ndim)
    if sum(sizes) != dy.shape[a]:
        raise ShapeError("concat_backward: sizes do not add up to dy's axis", expected=dy.shape[a], got=sum(sizes))
    return [np.ascontiguousarray(p) for p in np.split(dy, np.cumsum(sizes)[:-1], axis=a)]


def _slice_parts(dys: Sequence[np.ndarray | None], shapes: Sequence[Sequence[int]], dt) -> list[np.ndarray]:
    if len(dys) != len(shapes):
        raise ShapeError("slice_backward: one cotangent (or None) per output shape", expected=len(shapes),
                         got=len(dys))
    return [np.zeros(tuple(s), dtype=dt) if d is None else np.asarray(d, dtype=dt) for d, s in zip(dys, shapes)]


@ieee
def slice_backward_reference(dys: Sequence[np.ndarray | None], shapes: Sequence[Sequence[int]],
                             axis: int = 1) -> np.ndarray:
    """Slice backward, float64: the output cotangents concatenated along ``axis`` (None = zeros
    of that output's shape)."""
    parts = _slice_parts(dys, shapes, np.float64)
    return np.concatenate(parts, axis=_ax(axis, parts[0].ndim))


@ieee
def slice_backward(dys: Sequence[np.ndarray | None], shapes: Sequence[Sequence[int]], axis: int = 1) -> np.ndarray:
    """Fast slice backward in the dtype of the first given cotangent."""
    dt = next((d.dtype for d in dys if d is not None), np.dtype(np.float32))
    parts = _slice_parts(dys, shapes, dt)
    return np.concatenate(parts, axis=_ax(axis, parts[0].ndim))


# ---- eltwise ----------------------------------------------------------------------------------------
def _elt_args(xs, dy, operation, coeffs):
    xs = [as_float_array(x, f"xs[{i}]") for i, x in enumerate(xs)]
    dy = as_float_array(dy, "dy")
    if any(x.shape != dy.shape for x in xs):
        raise ShapeError("eltwise_backward: inputs and dy must share one shape", expected=dy.shape,
                         got=[x.shape for x in xs])
    op = str(operation).lower()
    if op not in ("sum", "prod", "max"):
        raise ValueError(f"eltwise operation must be sum, prod or max; got {operation!r}")
    cs = [1.0] * len(xs) if not coeffs else [float(c) for c in coeffs]
    if coeffs and op != "sum":
        raise ValueError("eltwise coeffs are only defined for operation 'sum' (Caffe)")
    if len(cs) != len(xs):
        raise ShapeError("eltwise coeffs: one per input", expected=len(xs), got=len(cs))
    return xs, dy, op, cs


def _max_owner(xs: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the first input holding the maximum, per element (Caffe's strict ``>`` update)."""
    best = xs[0].copy()
    owner = np.zeros(best.shape, dtype=np.int64)
    for i, x in enumerate(xs[1:], 1):
        better = x > best
        owner[better] = i
        best = np.where(better, x, best)
    return owner


@ieee
def eltwise_backward_reference(xs: Sequence[np.ndarray], dy: np.ndarray, operation: str = "sum",
                               coeffs: Sequence[float] | None = None) -> list[np.ndarray]:
    """Caffe Eltwise backward, float64 (module docstring); PROD as the product of the other inputs
    (not a division, so zeros are fine). coeffs exist for SUM only (as in the forward)."""
    xs, dy, op, cs = _elt_args(xs, dy, operation, coeffs)
    x64 = [x.astype(np.float64) for x in xs]
    d = dy.astype(np.float64)
    if op == "sum":
        return [c * d for c in cs]
    if op == "prod":
        out = []
        for i in range(len(x64)):
            p = d
            for j, x in enumerate(x64):
                if j != i:
                    p = p * x
            out.append(p)
        return out
    owner = _max_owner(x64)
    return [np.where(owner == i, d, 0.0) for i in range(len(x64))]


@ieee
def eltwise_backward(xs: Sequence[np.ndarray], dy: np.ndarray, operation: str = "sum",
                     coeffs: Sequence[float] | None = None) -> list[np.ndarray]:
    """Fast Eltwise backward in the input dtype."""
    xs, dy, op, cs = _elt_args(xs, dy, operation, coeffs)
    dt = xs[0].dtype.type
    if op == "sum":
        return [dy.copy() if c == 1.0 else dy * dt(c) for c in cs]
    if op == "prod":
        if len(xs) == 2:
            return [dy * xs[1], dy * xs[0]]
        out = []
        for i in range(len(xs)):
            p = dy.copy()
            for j, x in enumerate(xs):
                if j != i:
                    p *= x
            out.append(p)
        return out
    owner = _max_owner(xs)
    return [np.where(owner == i, dy, dt(0)) for i in range(len(xs))]


# ---- reshape / permute ------------------------------------------------------------------------------
def reshape_backward_reference(dy: np.ndarray, x_shape: Sequence[int]) -> np.ndarray:
    """Reshape / Flatten backward, float64: ``dy`` in x's shape (row-major order is kept)."""
    dy = as_float_array(dy, "dy")
    if dy.size != int(np.prod(x_shape)):
        raise ShapeError("reshape_backward: dy and x differ in size", expected=tuple(x_shape), got=dy.shape)
    return dy.astype(np.float64).reshape(tuple(x_shape))


def reshape_backward(dy: np.ndarray, x_shape: Sequence[int]) -> np.ndarray:
    """Fast Reshape / Flatten backward (a view when dy is contiguous)."""
    dy = as_float_array(dy, "dy")
    if dy.size != int(np.prod(x_shape)):
        raise ShapeError("reshape_backward: dy and x differ in size", expected=tuple(x_shape), got=dy.shape)
    return np.ascontiguousarray(dy).reshape(tuple(x_shape))


def _inverse(order: Sequence[int], ndim: int) -> list[int]:
    order = [int(i) for i in order] + [i for i in range(ndim) if i not in [int(j) for j in order]]
    if sorted(order) != list(range(ndim)):
        raise ShapeError("permute order is not a permutation", got=tuple(order))
    return [order.index(i) for i in range(ndim)]


def permute_backward_reference(dy: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Permute backward, float64: ``dx[..i..] = dy`` at the permuted index, i.e. dy transposed
    by the inverse order (Caffe fills unspecified trailing axes in order, as the forward)."""
    dy = as_float_array(dy, "dy")
    inv = _inverse(order, dy.ndim)
    return np.ascontiguousarray(np.transpose(dy.astype(np.float64), inv))


def permute_backward(dy: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Fast Permute backward in the input dtype."""
    dy = as_float_array(dy, "dy")
    return np.ascontiguousarray(np.transpose(dy, _inverse(order, dy.ndim)))


# ---- resampling --------------------------------------------------------------------------------------
def _resample_check(dy: np.ndarray, in_hw: Sequence[int]) -> tuple[np.ndarray, int, int]:
    dy = as_float_array(dy, "dy", 4)
    h, w = (int(v) for v in in_hw)
    if h < 1 or w < 1:
        raise ShapeError("resize backward: the input plane must be non-empty", got=(h, w))
    return dy, h, w


def _nearest_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), _nearest_index(n_in, n_out)] = 1.0
    return m


def _bilinear_matrix(n_in: int, n_out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    i0, i1, lam = _bilinear_coords(n_in, n_out, align_corners, half_pixel)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


@ieee
def resize_nearest_backward_reference(dy: np.ndarray, in_hw: Sequence[int]) -> np.ndarray:
    """Nearest resize backward, float64: ``R^T dy C`` with the one-hot selection matrices of
    cv2's rule ``src = floor(dst * in / out)``."""
    dy, h, w = _resample_check(dy, in_hw)
    r, c = _nearest_matrix(h, dy.shape[2]), _nearest_matrix(w, dy.shape[3])
    return np.einsum("ph,ncpq,qw->nchw", r, dy.astype(np.float64), c)


@ieee
def resize_nearest_backward(dy: np.ndarray, in_hw: Sequence[int]) -> np.ndarray:
    """Fast nearest resize backward: scatter-add rows, then columns, in the input dtype."""
    dy, h, w = _resample_check(dy, in_hw)
    n, c, oh, ow = dy.shape
    rows = np.zeros((n, c, h, ow), dtype=dy.dtype)
    np.add.at(rows, (slice(None), slice(None), _nearest_index(h, oh)), dy)
    out = np.zeros((n, c, h, w), dtype=dy.dtype)
    np.add.at(out.transpose(3, 0, 1, 2), _nearest_index(w, ow), rows.transpose(3, 0, 1, 2))
    return out


@ieee
def resize_bilinear_backward_reference(dy: np.ndarray, in_hw: Sequence[int], *, align_corners: bool = False,
                                       half_pixel: bool = False) -> np.ndarray:
    """Bilinear resize backward, float64: ``R^T dy C`` with the interpolation matrices (each
    output row holds ``1 - lam`` at its near source and ``lam`` at the far, edge-clamped one)."""
    dy, h, w = _resample_check(dy, in_hw)
    r = _bilinear_matrix(h, dy.shape[2], align_corners, half_pixel)
    c = _bilinear_matrix(w, dy.shape[3], align_corners, half_pixel)
    return np.einsum("ph,ncpq,qw->nchw", r, dy.astype(np.float64), c)


@ieee
def resize_bilinear_backward(dy: np.ndarray, in_hw: Sequence[int], *, align_corners: bool = False,
                             half_pixel: bool = False) -> np.ndarray:
    """Fast bilinear resize backward in the input dtype: two matmuls with the interpolation
    matrices (columns first, then rows)."""
    dy, h, w = _resample_check(dy, in_hw)
    dt = dy.dtype
    r = _bilinear_matrix(h, dy.shape[2], align_corners, half_pixel).astype(dt)
    c = _bilinear_matrix(w, dy.shape[3], align_corners, half_pixel).astype(dt)
    cols = np.matmul(dy, c)  # (N, C, OH, W)
    return np.ascontiguousarray(np.matmul(r.T, cols))


def _up_check(dy: np.ndarray, scale) -> tuple[np.ndarray, int, int]:
    dy = as_float_array(dy, "dy", 4)
    sh, sw = (int(scale), int(scale)) if np.isscalar(scale) else (int(scale[0]), int(scale[1]))
    if sh < 1 or sw < 1 or dy.shape[2] % sh or dy.shape[3] % sw:
        raise ShapeError("upsample_nearest_backward: dy's plane must be a multiple of the scale",
                         expected=(sh, sw), got=dy.shape)
    return dy, sh, sw


def upsample_nearest_backward_reference(dy: np.ndarray, scale: int | Sequence[int] = (2, 2)) -> np.ndarray:
    """Integer nearest upsampling backward, float64: each input pixel collects its ``sh x sw``
    block of dy."""
    dy, sh, sw = _up_check(dy, scale)
    n, c, oh, ow = dy.shape
    d = dy.astype(np.float64)
    out = np.zeros((n, c, oh // sh, ow // sw))
    for i in range(sh):
        for j in range(sw):
            out += d[:, :, i::sh, j::sw]
    return out


def upsample_nearest_backward(dy: np.ndarray, scale: int | Sequence[int] = (2, 2)) -> np.ndarray:
    """Fast integer nearest upsampling backward: one block-sum reshape in the input dtype."""
    dy, sh, sw = _up_check(dy, scale)
    n, c, oh, ow = dy.shape
    return dy.reshape(n, c, oh // sh, sh, ow // sw, sw).sum(axis=(3, 5))


# ---- routing ops -----------------------------------------------------------------------------------
def routing_backward(forward: Callable[..., np.ndarray | list[np.ndarray]], x_shapes: Sequence[Sequence[int]],
                     dys: Sequence[np.ndarray | None], dtype: type = np.float64) -> list[np.ndarray]:
    """Backward of an op that only moves, copies or drops input elements (or writes constants):
    ``forward(*xs)`` runs on inputs holding their flat element numbers ``1..N`` (exact in float64
    up to 2^53) and again doubled; an output element equal to the first run's value v and to 2v in
    the second came from element v (a constant fill does not double). Each output cotangent is
    added to its source element. ``dys``: one per forward output (None = no cotangent)."""
    sizes = [int(np.prod(s)) for s in x_shapes]
    if sum(sizes) >= 2 ** 52:
        raise ShapeError("routing_backward: too many elements to trace", got=sum(sizes))
    offs = np.concatenate([[0], np.cumsum(sizes)])
    ids = [np.arange(offs[i] + 1, offs[i + 1] + 1, dtype=np.float64).reshape(tuple(s))
           for i, s in enumerate(x_shapes)]
    one = forward(*ids)
    two = forward(*[2.0 * v for v in ids])
    one = one if isinstance(one, (list, tuple)) else [one]
    two = two if isinstance(two, (list, tuple)) else [two]
    flat = np.zeros(int(offs[-1]), dtype=np.float64)
    for a, b, d in zip(one, two, dys):
        if d is None:
            continue
        a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
        moved = (b == 2.0 * a) & (a >= 1)
        np.add.at(flat, a[moved].astype(np.int64) - 1, np.asarray(d, dtype=np.float64).reshape(-1)[moved])
    return [flat[offs[i]:offs[i + 1]].reshape(tuple(s)).astype(dtype) for i, s in enumerate(x_shapes)]
