"""Data movement with ONNX semantics: strided slices, Gather, Expand, Tile, DepthToSpace
(DCR/CRD) and SpaceToDepth. References index element positions explicitly; the fast twins
are NumPy views and copies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError

__all__ = [
    "strided_slice", "strided_slice_reference", "gather", "gather_reference", "expand", "expand_reference",
    "tile", "tile_reference", "depth_to_space", "depth_to_space_reference", "space_to_depth",
    "space_to_depth_reference", "reshape_to", "reshape_to_reference",
]


def reshape_to_reference(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """x's elements in row-major order, laid out as ``shape`` (every dim explicit; 0 means 0)."""
    if int(np.prod(shape)) != x.size:
        raise ShapeError("reshape changes the element count", expected=x.size, got=tuple(shape))
    return x.reshape(tuple(shape)).copy()


reshape_to = reshape_to_reference


def _ranges(shape: Sequence[int], starts: Sequence[int], stops: Sequence[int], steps: Sequence[int]) -> list[range]:
    if not len(shape) == len(starts) == len(stops) == len(steps):
        raise ShapeError("one start/stop/step per axis", expected=len(shape), got=(len(starts), len(stops)))
    return [range(s, e, st) for s, e, st in zip(starts, stops, steps)]


def strided_slice_reference(x: np.ndarray, starts: Sequence[int], stops: Sequence[int],
                            steps: Sequence[int]) -> np.ndarray:
    """y[i0, i1, ...] = x[start0 + i0*step0, ...] for i_k in range(start_k, stop_k, step_k)
    (already clamped to the axis; stop -1 with a negative step runs down to index 0)."""
    idx = [np.array(list(r), dtype=np.intp) for r in _ranges(x.shape, starts, stops, steps)]
    return x[np.ix_(*idx)] if idx else x.copy()


def strided_slice(x: np.ndarray, starts: Sequence[int], stops: Sequence[int], steps: Sequence[int]) -> np.ndarray:
    """Fast twin of :func:`strided_slice_reference`: one basic-indexing view, copied."""
    sl = tuple(slice(s, (None if e < 0 else e), st) for s, e, st in zip(starts, stops, steps))
    return np.ascontiguousarray(x[sl])


def gather_reference(x: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """y = x[..., indices[j...], ...] along ``axis``: the index array's shape replaces that axis."""
    idx = np.asarray(indices, np.int64)
    d = x.shape[axis]
    if idx.size and (idx.min() < 0 or idx.max() >= d):
        raise ShapeError("gather index out of range", expected=f"0 <= i < {d}", got=(int(idx.min()), int(idx.max())))
    out_shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    y = np.empty(out_shape, x.dtype)
    for pos, i in np.ndenumerate(idx):
        dst = (slice(None),) * axis + pos
        y[dst] = x[(slice(None),) * axis + (int(i),)]
    return y


def gather(x: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """Fast twin of :func:`gather_reference` (numpy.take)."""
    return np.take(x, np.asarray(indices, np.int64), axis=axis)


def expand_reference(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Broadcast x to ``shape`` (numpy rules, rank grows on the left), as a fresh array."""
    out = np.broadcast_shapes(x.shape, tuple(shape))
    return np.array(np.broadcast_to(x, out))


expand = expand_reference  # a broadcast copy is already the fast way


def tile_reference(x: np.ndarray, repeats: Sequence[int]) -> np.ndarray:
    """y[i] = x[i mod x.shape] for an output ``repeats`` times larger on every axis."""
    out = tuple(d * r for d, r in zip(x.shape, repeats))
    idx = [np.arange(o) % max(d, 1) for o, d in zip(out, x.shape)]
    return x[np.ix_(*idx)] if idx else x.copy()


def tile(x: np.ndarray, repeats: Sequence[int]) -> np.ndarray:
    """Fast twin of :func:`tile_reference` (numpy.tile)."""
    return np.tile(x, tuple(repeats))


def _d2s_check(x: np.ndarray, b: int) -> None:
    if x.ndim != 4 or x.shape[1] % (b * b):
        raise ShapeError("DepthToSpace needs NCHW with C divisible by blocksize^2", expected=f"C % {b * b} == 0",
                         got=x.shape)


def depth_to_space_reference(x: np.ndarray, blocksize: int, mode: str = "DCR") -> np.ndarray:
    """y[n, c, h*b + i, w*b + j] = x[n, (i*b + j)*C' + c, h, w] (DCR) or
    x[n, c*b*b + i*b + j, h, w] (CRD), C' = C / b^2."""
    _d2s_check(x, blocksize)
    n, c, h, w = x.shape
    b = blocksize
    co = c // (b * b)
    y = np.empty((n, co, h * b, w * b), x.dtype)
    for cc in range(co):
        for i in range(b):
            for j in range(b):
                src = (i * b + j) * co + cc if mode == "DCR" else cc * b * b + i * b + j
                y[:, cc, i::b, j::b] = x[:, src]
    return y


def depth_to_space(x: np.ndarray, blocksize: int, mode: str = "DCR") -> np.ndarray:
    """Fast twin of :func:`depth_to_space_reference`: reshape, transpose, reshape."""
    _d2s_check(x, blocksize)
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(t.reshape(n, c // (b * b), h * b, w * b))


def space_to_depth_reference(x: np.ndarray, blocksize: int, mode: str = "DCR") -> np.ndarray:
    """y[n, (i*b + j)*C + c, h, w] = x[n, c, h*b + i, w*b + j] (DCR, the inverse of DepthToSpace
    DCR) or y[n, c*b*b + i*b + j, h, w] (CRD)."""
    b = blocksize
    if x.ndim != 4 or x.shape[2] % b or x.shape[3] % b:
        raise ShapeError("SpaceToDepth needs H and W divisible by blocksize", expected=b, got=x.shape)
    n, c, h, w = x.shape
    y = np.empty((n, c * b * b, h // b, w // b), x.dtype)
    for i in range(b):
        for j in range(b):
            if mode == "CRD":
                y[:, i * b + j::b * b] = x[:, :, i::b, j::b]
            else:
                y[:, (i * b + j) * c:(i * b + j + 1) * c] = x[:, :, i::b, j::b]
    return y


def space_to_depth(x: np.ndarray, blocksize: int, mode: str = "DCR") -> np.ndarray:
    """Fast twin of :func:`space_to_depth_reference`."""
    b = blocksize
    if x.ndim != 4 or x.shape[2] % b or x.shape[3] % b:
        raise ShapeError("SpaceToDepth needs H and W divisible by blocksize", expected=b, got=x.shape)
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // b, b, w // b, b)
    t = t.transpose(0, 1, 3, 5, 2, 4) if mode == "CRD" else t.transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(t.reshape(n, c * b * b, h // b, w // b))
