"""Reductions with ONNX semantics (ReduceMean/Max/Min/Sum/Prod/L1/L2/SumSquare/LogSum/
LogSumExp over a set of axes, keepdims), ArgMax/ArgMin (select_last_index), TopK and Hardmax."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import ieee

__all__ = ["reduce", "reduce_reference", "arg_reduce", "arg_reduce_reference", "topk", "topk_reference",
           "hardmax", "hardmax_reference", "REDUCE_KINDS"]

REDUCE_KINDS = ("mean", "max", "min", "sum", "prod", "l1", "l2", "sum_square", "log_sum", "log_sum_exp")


@ieee
def reduce_reference(x: np.ndarray, kind: str, axes: Sequence[int], keepdims: bool = True) -> np.ndarray:
    """Reduce over ``axes`` in float64: mean, max, min, sum, prod, l1 sum|x|, l2 sqrt(sum x^2),
    sum_square, log_sum log(sum x), log_sum_exp log(sum e^x) (shifted by the max)."""
    ax = tuple(int(a) for a in axes)
    v = x.astype(np.float64)
    if kind == "mean":
        y = v.sum(axis=ax, keepdims=True) / max(int(np.prod([x.shape[a] for a in ax])), 1)
    elif kind in ("max", "min"):  # over an empty set: -inf (max) / +inf (min), as the spec says
        init = -np.inf if kind == "max" else np.inf
        y = v.max(axis=ax, keepdims=True, initial=init) if kind == "max" else v.min(axis=ax, keepdims=True,
                                                                                     initial=init)
    elif kind == "sum":
        y = v.sum(axis=ax, keepdims=True)
    elif kind == "prod":
        y = v.prod(axis=ax, keepdims=True)
    elif kind == "l1":
        y = np.abs(v).sum(axis=ax, keepdims=True)
    elif kind == "l2":
        y = np.sqrt((v * v).sum(axis=ax, keepdims=True))
    elif kind == "sum_square":
        y = (v * v).sum(axis=ax, keepdims=True)
    elif kind == "log_sum":
        y = np.log(v.sum(axis=ax, keepdims=True))
    elif kind == "log_sum_exp":
        m = v.max(axis=ax, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0)
        y = np.log(np.exp(v - m).sum(axis=ax, keepdims=True)) + m
    else:
        raise ValueError(f"unknown reduction {kind!r}; known: {REDUCE_KINDS}")
    if not keepdims:
        y = np.squeeze(y, axis=ax)
    return np.asarray(y).astype(x.dtype)


reduce = reduce_reference  # NumPy reductions: already the fast way


@ieee
def arg_reduce_reference(x: np.ndarray, kind: str, axis: int, keepdims: bool = True,
                         select_last_index: bool = False) -> np.ndarray:
    """Index of the max (min) along ``axis``; the first one on ties unless select_last_index."""
    if x.shape[axis] == 0:
        raise ShapeError("arg reduction over an empty axis", got=x.shape)
    v = np.flip(x, axis) if select_last_index else x
    i = np.argmax(v, axis=axis) if kind == "max" else np.argmin(v, axis=axis)
    if select_last_index:
        i = x.shape[axis] - 1 - i
    if keepdims:
        i = np.expand_dims(i, axis)
    return i.astype(np.int64)


arg_reduce = arg_reduce_reference


def topk_reference(x: np.ndarray, k: int, axis: int, largest: bool = True,
                   sorted_: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The k largest (smallest) values along ``axis`` and their indices; among equal values the
    lower index comes first (a stable sort), as the spec requires."""
    key = -x if largest else x
    order = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)


topk = topk_reference


def hardmax_reference(x: np.ndarray, axis: int) -> np.ndarray:
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    i = np.expand_dims(np.argmax(x, axis=axis), axis)
    y = np.zeros_like(x)
    np.put_along_axis(y, i, 1, axis=axis)
    return y


hardmax = hardmax_reference
