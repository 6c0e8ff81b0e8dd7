"""The one explicit registry from IR op names to their implementations.

Each op registers, by decorator, a run function and a shape function:

    @register("relu", shape=same_shape)
    def _relu(node, xs, p, ctx):            # -> np.ndarray or list of arrays (one per output)
        return k.relu(xs[0], node.attrs.get("negative_slope", 0.0)) if ctx.fast else ...

``xs`` are the input arrays (already in the run dtype), ``p`` the node's params cast to the
run dtype, ``ctx`` the :class:`Ctx` (precision, dtype, whether the fast kernels are used).
Shape functions take ``(node, in_shapes)`` and return the list of output shapes; they raise
:class:`~refnet.errors.ShapeError` naming the layer when the shapes cannot work.
Registering a name twice, or asking for an unknown op, fails loudly listing what is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refnet.errors import ShapeError, UnsupportedLayerError

Shape = tuple[int, ...]
RunFn = Callable[..., Any]
ShapeFn = Callable[[Any, list[Shape]], list[Shape]]


@dataclass(frozen=True)
class Ctx:
    """How a forward pass runs: ``precision`` "float32" (fast kernels) or "float64" (reference)."""

    precision: str = "float32"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.precision)

    @property
    def fast(self) -> bool:
        return self.precision == "float32"


@dataclass(frozen=True)
class OpSpec:
    name: str
    run: RunFn
    shape: ShapeFn


OPS: dict[str, OpSpec] = {}


def register(name: str, *, shape: ShapeFn) -> Callable[[RunFn], RunFn]:
    """Register the run function of op ``name`` with its shape function."""

    def deco(fn: RunFn) -> RunFn:
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice ({OPS[name].run.__module__} and {fn.__module__})")
        OPS[name] = OpSpec(name, fn, _dyn_aware(shape))
        return fn

    return deco


_DYN = -1  # a dimension known only at run time (refnet.ops.core.DYN)
_PROBES = (7, 13)


def _dyn_aware(shape: ShapeFn) -> ShapeFn:
    """``shape`` extended to inputs with run-time dimensions (-1, e.g. the number of Faster R-CNN
    proposals): the rule is applied with each -1 replaced by two different probe sizes, and an
    output dimension that follows the probe is -1 too. Rules that handle -1 themselves still
    see it when probing fails."""

    def rule(node: Any, shapes: list[Shape]) -> list[Shape]:
        if not any(d == _DYN for s in shapes for d in s):
            return shape(node, shapes)
        try:
            a, b = (shape(node, [tuple(p if d == _DYN else d for d in s) for s in shapes]) for p in _PROBES)
        except (ShapeError, ValueError, IndexError, KeyError, TypeError):
            return shape(node, shapes)
        return [tuple(x if x == y else _DYN for x, y in zip(sa, sb)) if len(sa) == len(sb) else tuple(sa)
                for sa, sb in zip(a, b)]

    rule.__wrapped__ = shape  # type: ignore[attr-defined]
    return rule


def get(name: str, layer: str = "?") -> OpSpec:
    """The OpSpec for ``name``; UnsupportedLayerError listing the known ops otherwise."""
    _load_all()
    try:
        return OPS[name]
    except KeyError:
        raise UnsupportedLayerError(layer, name, sorted(OPS), detail="no such IR op in the executor") from None


def known_ops() -> list[str]:
    _load_all()
    return sorted(OPS)


_LOADED = False


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import refnet.ops  # noqa: F401  (its __init__ imports every op module)


# ---- shape helpers shared by op modules ----------------------------------------------------
def same_shape(node: Any, shapes: list[Shape]) -> list[Shape]:
    """Elementwise ops: one output shaped like the first input."""
    return [tuple(shapes[0])]


def need_ndim(node: Any, shape: Sequence[int], ndim: int | tuple[int, ...], what: str = "input") -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if len(shape) not in allowed:
        raise ShapeError(f"{what} must have rank {' or '.join(map(str, allowed))}", layer=node.name,
                         expected=f"rank {allowed}", got=tuple(shape))
