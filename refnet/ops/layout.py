"""Run and shape functions of `strided_slice`, `gather`, `expand`, `tile`, `depth_to_space`,
`space_to_depth` (kernels: refnet.kernels.layout)."""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.ops.registry import DYN, REQUIRED, Attr, attrs, ints, kern, register

_SS = {"starts": Attr(REQUIRED, ints), "stops": Attr(REQUIRED, ints), "steps": Attr(REQUIRED, ints)}


def _ss_shape(node, shapes):
    a = attrs(node)
    shape = tuple(shapes[0])
    if not len(shape) == len(a["starts"]) == len(a["stops"]) == len(a["steps"]):
        raise ShapeError("one start/stop/step per axis", layer=node.name, expected=len(shape), got=len(a["starts"]))
    out = []
    for d, s, e, st in zip(shape, a["starts"], a["stops"], a["steps"]):
        if st == 0 or not (-1 <= s <= d and -1 <= e <= d):
            raise ShapeError("slice bounds outside the axis", layer=node.name, expected=f"within {d}", got=(s, e, st))
        out.append(len(range(s, e, st)))
    return [tuple(out)]


@register("strided_slice", shape=_ss_shape, attrs=_SS)
def _strided_slice(node, xs, p, ctx):
    a = attrs(node)
    return kern("strided_slice", ctx)(xs[0], a["starts"], a["stops"], a["steps"])


def _gather_idx(node):
    a = attrs(node)
    return np.asarray(a["indices"], np.int64).reshape(a["indices_shape"])


def _gather_shape(node, shapes):
    s = tuple(shapes[0])
    ax = attrs(node)["axis"]
    idx = _gather_idx(node)
    if ax >= len(s) or (idx.size and (idx.min() < 0 or idx.max() >= s[ax])):
        raise ShapeError("gather index outside the axis", layer=node.name, expected=s)
    return [s[:ax] + idx.shape + s[ax + 1:]]


@register("gather", shape=_gather_shape,
          attrs={"axis": Attr(REQUIRED, int), "indices": REQUIRED, "indices_shape": Attr(REQUIRED, ints)})
def _gather(node, xs, p, ctx):
    return kern("gather", ctx)(xs[0], _gather_idx(node), attrs(node)["axis"])


def _expand_shape(node, shapes):
    try:
        return [tuple(np.broadcast_shapes(tuple(shapes[0]), attrs(node)["shape"]))]
    except ValueError:
        raise ShapeError("shape does not broadcast", layer=node.name, expected=attrs(node)["shape"],
                         got=tuple(shapes[0])) from None


@register("expand", shape=_expand_shape, attrs={"shape": Attr(REQUIRED, ints)})
def _expand(node, xs, p, ctx):
    return kern("expand", ctx)(xs[0], attrs(node)["shape"])


def _tile_shape(node, shapes):
    reps = attrs(node)["repeats"]
    if len(reps) != len(shapes[0]):
        raise ShapeError("one repeat per axis", layer=node.name, expected=len(shapes[0]), got=len(reps))
    return [tuple(d * r for d, r in zip(shapes[0], reps))]


@register("tile", shape=_tile_shape, attrs={"repeats": Attr(REQUIRED, ints)})
def _tile(node, xs, p, ctx):
    return kern("tile", ctx)(xs[0], attrs(node)["repeats"])


def _d2s_shape(node, shapes):
    s = tuple(shapes[0])
    b = attrs(node)["blocksize"]
    if len(s) != 4 or s[1] % (b * b):
        raise ShapeError("DepthToSpace needs NCHW with C divisible by blocksize^2", layer=node.name, got=s)
    return [(s[0], s[1] // (b * b), s[2] * b, s[3] * b)]


_BLOCK = {"blocksize": Attr(REQUIRED, int), "mode": "DCR"}


@register("depth_to_space", shape=_d2s_shape, attrs=_BLOCK)
def _d2s(node, xs, p, ctx):
    a = attrs(node)
    return kern("depth_to_space", ctx)(xs[0], a["blocksize"], a["mode"])


def _s2d_shape(node, shapes):
    s = tuple(shapes[0])
    b = attrs(node)["blocksize"]
    if len(s) != 4 or s[2] % b or s[3] % b:
        raise ShapeError("SpaceToDepth needs H, W divisible by blocksize", layer=node.name, got=s)
    return [(s[0], s[1] * b * b, s[2] // b, s[3] // b)]


@register("space_to_depth", shape=_s2d_shape, attrs=_BLOCK)
def _s2d(node, xs, p, ctx):
    a = attrs(node)
    return kern("space_to_depth", ctx)(xs[0], a["blocksize"], a["mode"])


def _reshape_to_shape(node, shapes):
    out = attrs(node)["shape"]
    if int(np.prod(out)) != int(np.prod(shapes[0])) or min(out, default=0) < 0:
        raise ShapeError("reshape changes the element count", layer=node.name, expected=tuple(shapes[0]), got=out)
    return [out]


@register("reshape_to", shape=_reshape_to_shape, attrs={"shape": Attr(REQUIRED, ints)})
def _reshape_to(node, xs, p, ctx):
    return kern("reshape_to", ctx)(xs[0], attrs(node)["shape"])


# ---- element-wise gather / scatter along an axis (ONNX GatherElements, ScatterElements) ---------
def _elements_shape(node, shapes, what):
    """The indices (input 1) have the data's rank and, off the axis, at most its dims."""
    s, t = tuple(shapes[0]), tuple(shapes[1])
    ax = attrs(node)["axis"]
    if len(t) != len(s) or not 0 <= ax < len(s):
        raise ShapeError(f"{what}: the indices must have the data's rank, axis within it", layer=node.name,
                         expected=s, got=t)
    if any(i != ax and d >= 0 and e >= 0 and e > d for i, (d, e) in enumerate(zip(s, t))):
        raise ShapeError(f"{what}: indices larger than the data off the axis", layer=node.name, expected=s, got=t)
    return t


def _along(node, idx: np.ndarray, d: int, axis: int) -> tuple:
    """Index arrays addressing ``data[..., idx[...], ...]`` element by element along ``axis``:
    ``idx`` (integer-valued floats) checked to lie in [-d, d), negatives counted from the end."""
    i = _int_index(node, idx, d)
    grid = list(np.indices(i.shape, sparse=True))
    grid[axis] = i
    return tuple(grid)


@register("gather_elements", shape=lambda node, shapes: [_elements_shape(node, shapes, "GatherElements")],
          attrs={"axis": Attr(REQUIRED, int)}, kernel=None, no_kernel="one NumPy fancy index")
def _gather_elements(node, xs, p, ctx):
    """ONNX GatherElements: ``y[i][j][k] = x[idx[i][j][k]][j][k]`` (axis 0; likewise on the others);
    the output has the indices' shape; negative indices count from the end."""
    x, idx = xs[0], xs[1]
    ax = attrs(node)["axis"]
    return np.array(x[_along(node, idx, x.shape[ax], ax)])


_SCATTER_REDUCE = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_shape(node, shapes):
    _elements_shape(node, shapes, "ScatterElements")
    if tuple(shapes[2]) != tuple(shapes[1]):
        raise ShapeError("ScatterElements: updates must have the indices' shape", layer=node.name,
                         expected=tuple(shapes[1]), got=tuple(shapes[2]))
    if attrs(node)["reduction"] not in _SCATTER_REDUCE:
        raise ShapeError("ScatterElements: unknown reduction", layer=node.name, expected=sorted(_SCATTER_REDUCE),
                         got=attrs(node)["reduction"])
    return [tuple(shapes[0])]


@register("scatter_elements", shape=_scatter_shape, attrs={"axis": Attr(REQUIRED, int), "reduction": "none"},
          kernel=None, no_kernel="one NumPy fancy assignment")
def _scatter_elements(node, xs, p, ctx):
    """ONNX ScatterElements: a copy of the data with ``y[idx[i][j]][j] = updates[i][j]`` (axis 0;
    likewise on the others); ``reduction`` add/mul/max/min combines with the value there instead
    (in index order). With "none" and repeated indices the last update wins (the spec leaves it
    undefined)."""
    x, idx, upd = xs
    a = attrs(node)
    ax = a["axis"]
    return _scatter(x, _along(node, idx, x.shape[ax], ax), upd, a["reduction"])


def _scatter(x: np.ndarray, where: tuple, upd: np.ndarray, reduction: str) -> np.ndarray:
    """A copy of ``x`` with ``upd`` written at ``where`` ("none": the last of repeated indices
    wins) or combined with the value there (:data:`_SCATTER_REDUCE`, in index order)."""
    y = np.array(x, copy=True)
    fn = _SCATTER_REDUCE[reduction]
    if fn is None:
        y[where] = upd
    else:
        fn.at(y, where, upd)
    return y


# ---- ops on tensors whose size is known only at run time (ONNX graphs after NonMaxSuppression) -----
def _fits(node, shape, dtype) -> None:
    """BudgetError (a refnet error naming the layer) before an output whose size depends on
    run-time values -- a pad, a shape, gathered rows -- is allocated over the memory budget: the
    plan's check (refnet.runtime.budget.check_plan) cannot see it."""
    from refnet.runtime.budget import check_memory

    n = 1
    for d in shape:
        n *= max(int(d), 0)
    check_memory(n * np.dtype(dtype).itemsize, f"the output of shape {tuple(int(d) for d in shape)}, known only at "
                 "run time", layer=node.name)


def _int_index(node, idx: np.ndarray, d: int) -> np.ndarray:
    """Run-time indices (integer-valued floats) into an axis of size ``d``, negatives counted
    from the end; ShapeError naming the layer when one is outside [-d, d)."""
    if idx.size and not np.all(np.isfinite(idx)):
        raise ShapeError("indices are not finite", layer=node.name)
    i = idx.astype(np.int64)
    if i.size and (i.min() < -d or i.max() >= d):
        raise ShapeError(f"index out of range for an axis of size {d}", layer=node.name,
                         expected=f"indices in [-{d}, {d})", got=(int(i.min()), int(i.max())))
    return np.where(i < 0, i + d, i)


@register("shape_of", shape=lambda node, shapes: [(len(range(*slice(attrs(node)["start"], attrs(node)["end"])
                                                               .indices(len(shapes[0])))),)],
          attrs={"start": Attr(0, int), "end": Attr(None)}, kernel=None, no_kernel="the input's shape")
def _shape_of(node, xs, p, ctx):
    """ONNX Shape of a tensor with a run-time dimension: its dims[start:end] as a 1-D tensor."""
    a = attrs(node)
    return np.asarray(xs[0].shape[a["start"]:a["end"]], ctx.dtype)


def _take_shape(node, shapes):
    s, t = tuple(shapes[0]), tuple(shapes[1])
    ax = attrs(node)["axis"]
    if not 0 <= ax < len(s):
        raise ShapeError("axis outside the data's rank", layer=node.name, expected=len(s), got=ax)
    return [s[:ax] + t + s[ax + 1:]]


@register("take", shape=_take_shape, attrs={"axis": Attr(REQUIRED, int)}, kernel=None, no_kernel="np.take")
def _take(node, xs, p, ctx):
    """ONNX Gather with run-time indices (input 1): np.take along ``axis``, negatives from the end."""
    ax = attrs(node)["axis"]
    _fits(node, xs[0].shape[:ax] + xs[1].shape + xs[0].shape[ax + 1:], xs[0].dtype)
    return np.take(xs[0], _int_index(node, xs[1], xs[0].shape[ax]), axis=ax)


def _gather_nd_shape(node, shapes):
    s, t = tuple(shapes[0]), tuple(shapes[1])
    bd = attrs(node)["batch_dims"]
    if not t or t[-1] < 0:
        raise ShapeError("GatherND: the indices' last dim must be known", layer=node.name, got=t)
    m = t[-1]
    if bd + m > len(s) or len(t) - 1 < bd or t[:bd] != s[:bd]:
        raise ShapeError("GatherND: indices do not fit the data", layer=node.name, expected=s, got=t)
    return [t[:-1] + s[bd + m:]]


@register("gather_nd", shape=_gather_nd_shape, attrs={"batch_dims": Attr(0, int)}, kernel=None,
          no_kernel="one NumPy fancy index per batch item")
def _gather_nd(node, xs, p, ctx):
    """ONNX GatherND: each index row (the indices' last axis, m values) picks ``data[b..., i0..im-1]``
    (a slice of the remaining dims) after the first ``batch_dims`` dims, which index both alike."""
    x, idx = xs
    bd = attrs(node)["batch_dims"]
    m = idx.shape[-1]
    _fits(node, idx.shape[:-1] + x.shape[bd + m:], x.dtype)
    lead = x.shape[:bd]
    nb = int(np.prod(lead, dtype=np.int64))
    xb = x.reshape((nb,) + x.shape[bd:])
    ib = idx.reshape((nb, -1, m))
    cols = [_int_index(node, ib[..., j], x.shape[bd + j]) for j in range(m)]
    rows = np.arange(nb)[:, None]
    out = xb[(rows,) + tuple(cols)]  # (nb, rows per item) + the remaining dims
    return out.reshape(idx.shape[:-1] + x.shape[bd + m:])


@register("pad_dyn", shape=lambda node, shapes: [(DYN,) * len(shapes[0])], attrs={"value": Attr(0.0, float)},
          kernel=None, no_kernel="np.pad")
def _pad_dyn(node, xs, p, ctx):
    """ONNX Pad (constant mode) with pads computed at run time (input 1: begins..., ends...; a
    negative pad crops). Every output dim is known only at run time."""
    x, pads = xs[0], xs[1].astype(np.int64).reshape(-1)
    r = x.ndim
    if pads.size != 2 * r:
        raise ShapeError("Pad: one begin and one end per axis", layer=node.name, expected=2 * r, got=pads.size)
    begin, end = [int(v) for v in pads[:r]], [int(v) for v in pads[r:]]
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    _fits(node, [d + b + e for d, (b, e) in zip(x.shape, width)], x.dtype)
    return np.pad(x, width, mode="constant", constant_values=attrs(node)["value"])


def _reshape_dyn_shape(node, shapes):
    s = tuple(shapes[0])
    a = attrs(node)
    if len(shapes) > 1:  # the target computed at run time: its length is the rank
        return [(DYN,) * int(shapes[1][0])]
    out = [s[i] if d == 0 and not a["allowzero"] and i < len(s) else d for i, d in enumerate(a["shape"])]
    if DYN in s:
        return [tuple(DYN if d < 0 else d for d in out)]
    total = int(np.prod(s, dtype=np.int64))
    if -1 in out:
        rest = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        out[out.index(-1)] = total // rest if rest else 0
    if int(np.prod(out, dtype=np.int64)) != total:
        raise ShapeError("reshape changes the element count", layer=node.name, expected=s, got=tuple(out))
    return [tuple(out)]


@register("reshape_dyn", shape=_reshape_dyn_shape,
          attrs={"shape": Attr((), ints), "allowzero": Attr(False, bool)}, kernel=None, no_kernel="np.reshape")
def _reshape_dyn(node, xs, p, ctx):
    """ONNX Reshape of a tensor with a run-time dimension, or to a target computed at run time
    (input 1, then ``shape`` is unused): 0 copies the input's dim (unless ``allowzero``), one -1
    is inferred, at run time."""
    x = xs[0]
    a = attrs(node)
    target = [int(v) for v in xs[1].reshape(-1)] if len(xs) > 1 else a["shape"]
    if sum(d == -1 for d in target) > 1 or any(d < -1 for d in target):
        raise ShapeError("bad target shape", layer=node.name, expected="at most one -1", got=tuple(target))
    out = [x.shape[i] if d == 0 and not a["allowzero"] else d for i, d in enumerate(target)]
    return x.reshape(out)


def _scatter_nd_shape(node, shapes):
    s, t, u = tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2])
    if not t or t[-1] < 1 or t[-1] > len(s):
        raise ShapeError("ScatterND: the indices' last dim must be 1..rank", layer=node.name, expected=s, got=t)
    want = t[:-1] + s[t[-1]:]
    if len(u) != len(want) or any(a != b and a >= 0 and b >= 0 for a, b in zip(u, want)):
        raise ShapeError("ScatterND: updates must have shape indices[:-1] + data[m:]", layer=node.name,
                         expected=want, got=u)
    if attrs(node)["reduction"] not in _SCATTER_REDUCE:
        raise ShapeError("ScatterND: unknown reduction", layer=node.name, expected=sorted(_SCATTER_REDUCE),
                         got=attrs(node)["reduction"])
    return [s]


@register("scatter_nd", shape=_scatter_nd_shape, attrs={"reduction": "none"}, kernel=None,
          no_kernel="one NumPy fancy assignment")
def _scatter_nd(node, xs, p, ctx):
    """ONNX ScatterND: a copy of the data with each index row (the indices' last axis, m values)
    addressing ``y[i0, .., im-1]`` (a slice of the remaining dims) set to its update, or combined
    with it by ``reduction`` add/mul/max/min; repeated rows with "none": the last one."""
    x, idx, upd = xs
    where = tuple(_int_index(node, idx[..., j], x.shape[j]) for j in range(idx.shape[-1]))
    return _scatter(x, where, upd, attrs(node)["reduction"])


@register("constant_of_shape", shape=lambda node, shapes: [(DYN,) * int(shapes[0][0])] if shapes[0] else [()],
          attrs={"value": Attr(0.0, float)}, kernel=None, no_kernel="np.full")
def _constant_of_shape(node, xs, p, ctx):
    """ONNX ConstantOfShape of a run-time shape (input 0, a 1-D tensor): ``value`` everywhere."""
    shape = tuple(int(v) for v in np.asarray(xs[0]).reshape(-1))
    if any(d < 0 for d in shape):
        raise ShapeError("negative dims", layer=node.name, got=shape)
    _fits(node, shape, ctx.dtype)
    return np.full(shape, attrs(node)["value"], ctx.dtype)
