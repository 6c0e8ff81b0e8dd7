"""The one explicit registry from IR op names to their specs (docs/ops.md is generated from it).

Each IR op has exactly one :class:`OpSpec`, registered by decorator on its run function:

    @register("relu", shape=same_shape, attrs={"negative_slope": Attr(0.0, float)}, fresh=True)
    def _relu(node, xs, p, ctx):            # -> np.ndarray or list of arrays (one per output)
        return kern("relu", ctx)(xs[0], attrs(node)["negative_slope"])

A spec holds everything known about the op, once:

- ``run(node, xs, p, ctx)``: ``xs`` the input arrays (already in the run dtype), ``p`` the
  node's params cast to the run dtype, ``ctx`` the :class:`Ctx` (precision, dtype, fast?).
- ``shape(node, in_shapes)``: the output shapes; raises :class:`~refnet.errors.ShapeError`
  naming the layer when the shapes cannot work.
- ``attrs``: every attribute the op reads, with its default (:data:`REQUIRED` when it has
  none) and an optional normaliser (e.g. :func:`pair` for a stride given as int or pair).
  :func:`attrs` resolves a node's attributes against it -- the one way run functions,
  planners, shape rules, the exporter, the VJP rules and ``refnet info`` read attributes.
- ``kernel``: the :mod:`refnet.kernels` entry run by the op (fast ``kernel`` for float32,
  ``kernel_reference`` for float64), ``None`` when the op has none (pure data movement or a
  few NumPy lines in the op module); ``no_kernel`` then says why.
- ``macs(node, in_shapes, out_shapes)``: the multiply-accumulate rule of ``refnet info``
  (None: the op counts zero).
- ``fresh``: the outputs never share memory with the inputs; ``alias``: the outputs *are*
  the input (no step runs, the output names the input's slot).
- ``prepare(node, params, in_shapes, ctx) -> (step, accepts_out) | None``: the float32
  planner, registered with :func:`prepares`; it binds the arguments (and plans the kernel)
  once per input shape.

Registering a name twice, or asking for an unknown op, fails loudly listing what is known.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from refnet import kernels as K
from refnet.errors import ShapeError, UnsupportedLayerError

Shape = tuple[int, ...]
RunFn = Callable[..., Any]
ShapeFn = Callable[[Any, list[Shape]], list[Shape]]
MacRule = Callable[[Any, Sequence[Shape], Sequence[Shape]], int]
PrepareFn = Callable[..., "tuple[Callable[..., Any], bool] | None"]


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


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of an attribute the IR node must carry (reading it when absent is a KeyError)
REQUIRED: Any = _Required()


class Attr(NamedTuple):
    """One declared attribute: its default and an optional normaliser applied to the value
    (given or default), e.g. ``Attr(1, int)`` or ``Attr(None, pair)``."""

    default: Any
    norm: Callable[[Any], Any] | None = None


# ---- attribute normalisers (the IR allows several forms for some attributes) ------------------
def pair(v: Any, default: int = 1) -> tuple[int, int]:
    """An int or an (h, w) pair as ``(h, w)``; None as ``(default, default)`` (the rule:
    refnet.kernels.geometry.pair, unchecked here; the kernels check their own ranges)."""
    return K.geometry.pair(default if v is None else v, "attribute", positive=False)


def pair0(v: Any) -> tuple[int, int]:
    """:func:`pair` with default 0 (output padding, image size)."""
    return pair(v, 0)


def opt_pair(v: Any) -> tuple[int, int] | None:
    """:func:`pair`, None kept (pooling stride: None means the kernel size)."""
    return None if v is None else pair(v, 1)


def pad4(v: Any) -> tuple[int, int, int, int]:
    """Padding as ``(top, left, bottom, right)`` from an int, ``(h, w)`` or the four values
    (refnet.kernels.geometry.pad4); None as no padding."""
    return (0, 0, 0, 0) if v is None else K.geometry.pad4(v)


def ints(v: Any) -> tuple[int, ...]:
    return tuple(int(i) for i in v)


def floats(v: Any) -> tuple[float, ...]:
    return tuple(float(i) for i in v)


def opt_floats(v: Any) -> tuple[float, ...] | None:
    """A non-empty sequence as floats; None or empty as None (eltwise coefficients)."""
    return floats(v) if v else None


def int_pairs(v: Any) -> tuple[tuple[int, int], ...]:
    """((before, after), ...) per axis as ints (pad)."""
    return tuple((int(b), int(a)) for b, a in v)


@dataclass
class OpSpec:
    """Everything the code base knows about one IR op (see the module docstring)."""

    name: str
    run: RunFn
    shape: ShapeFn
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    kernel: str | None = None
    no_kernel: str = ""
    macs: MacRule | None = None
    fresh: bool = False
    alias: bool = False
    prepare: PrepareFn | None = None
    family: str = ""
    doc: str = ""

    def attrs_of(self, node: Any) -> Mapping[str, Any]:
        """``node``'s attributes resolved against this spec (see :func:`attrs`)."""
        return _resolve(self, node)


OPS: dict[str, OpSpec] = {}

_UNSET = object()


def register(name: str, *, shape: ShapeFn, attrs: Mapping[str, Any] | None = None, kernel: Any = _UNSET,
             no_kernel: str = "", macs: MacRule | None = None, fresh: bool = False, alias: bool = False,
             doc: str = "") -> Callable[[RunFn], RunFn]:
    """Register op ``name``: its run function (the decorated one) and its spec.

    ``attrs`` maps each attribute to its default or an :class:`Attr`; ``kernel`` defaults
    to ``name``; pass ``kernel=None`` with ``no_kernel=<why>`` for an op without a kernel."""
    decl = {k: v if isinstance(v, Attr) else Attr(v) for k, v in (attrs or {}).items()}
    if kernel is None and not no_kernel:
        raise RuntimeError(f"op {name!r}: kernel=None needs no_kernel=<why>")

    def deco(fn: RunFn) -> RunFn:
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice ({OPS[name].run.__module__} and {fn.__module__})")
        OPS[name] = OpSpec(name, fn, _dyn_aware(shape), MappingProxyType(decl),
                           name if kernel is _UNSET else kernel, no_kernel, macs, fresh, alias,
                           family=fn.__module__.rsplit(".", 1)[-1], doc=doc or (fn.__doc__ or "").strip())
        return fn

    return deco


def prepares(op: str) -> Callable[[PrepareFn], PrepareFn]:
    """Register the float32 step planner of ``op`` on its spec (registered before)."""

    def deco(fn: PrepareFn) -> PrepareFn:
        spec = OPS[op]
        if spec.prepare is not None:
            raise RuntimeError(f"op {op!r} has two planners")
        spec.prepare = fn
        return fn

    return deco


# ---- attribute resolution ----------------------------------------------------------------------
#: unknown attribute keys raise (tests and debugging: REFNET_CHECK_ATTRS=1); otherwise ignored
CHECK_ATTRS = os.environ.get("REFNET_CHECK_ATTRS", "") not in ("", "0")
# (id(attribute map), op) -> (the map, kept alive so its id is not reused; the resolution). Nodes
# are frozen and their attribute maps read-only, so a resolution stays valid; bounded by clearing.
_CACHE: dict[tuple[int, str], tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
_CACHE_MAX = 8192


def _resolve(spec: OpSpec, node: Any) -> Mapping[str, Any]:
    raw = node.attrs
    key = (id(raw), spec.name)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is raw:
        return hit[1]
    out: dict[str, Any] = {}
    for k, (default, norm) in spec.attrs.items():
        v = raw.get(k, default)
        if v is REQUIRED:
            continue  # reading it raises KeyError, as reading the raw attribute did
        out[k] = norm(v) if norm is not None else v
    if CHECK_ATTRS:
        unknown = set(raw) - set(spec.attrs)
        if unknown:
            raise RuntimeError(f"layer {node.name!r} ({spec.name}): attributes {sorted(unknown)} are not "
                               f"declared by the op spec (declared: {sorted(spec.attrs)})")
    res = MappingProxyType(out)
    if not isinstance(raw, MappingProxyType):  # a mutable map may change: not cached
        return res
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (raw, res)
    return res


def attrs(node: Any) -> Mapping[str, Any]:
    """The attributes of ``node`` resolved against its op's spec: every declared attribute,
    given or defaulted and normalised; the required ones absent from the node are missing
    (KeyError when read). Cached per node (its attribute map is read-only)."""
    raw = node.attrs
    hit = _CACHE.get((id(raw), node.op))
    if hit is not None and hit[0] is raw:
        return hit[1]
    return _resolve(get(node.op, node.name), node)


_DYN = -1  # a dimension known only at run time (refnet.ops.registry.DYN)
DYN = _DYN
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


def _ops_where(flag: str) -> frozenset[str]:
    _load_all()
    return frozenset(n for n, s in OPS.items() if getattr(s, flag))


def __getattr__(name: str) -> Any:  # FRESH_OPS / ALIAS_OPS / PREPARE: views derived from the specs
    if name == "FRESH_OPS":
        return _ops_where("fresh")
    if name == "ALIAS_OPS":
        return _ops_where("alias")
    if name == "PREPARE":  # op -> float32 planner (the executor reads spec.prepare itself)
        _load_all()
        return MappingProxyType({n: s.prepare for n, s in OPS.items() if s.prepare is not None})
    raise AttributeError(name)


# ---- helpers shared by op modules ---------------------------------------------------------------
def kern(name: str, ctx: Ctx) -> Callable[..., Any]:
    """The kernel ``name`` for this run: fast for float32, ``name_reference`` for float64."""
    return getattr(K, name if ctx.fast else name + "_reference")


def axis_of(node: Any, axis: int, ndim: int) -> int:
    """``axis`` (negative: from the end) checked against ``ndim``; ShapeError naming the layer."""
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < ndim:
        raise ShapeError(f"axis {axis} out of range for rank {ndim}", layer=node.name)
    return a


def numel(s: Sequence[int]) -> int:
    return int(math.prod(max(0, int(d)) for d in s))


def elementwise_macs(node: Any, ins: Sequence[Shape], outs: Sequence[Shape]) -> int:
    """One multiply-add per output element (BatchNorm, Scale, PReLU, normalisations, Power, ...)."""
    return numel(outs[0])


def eltwise_macs(node: Any, ins: Sequence[Shape], outs: Sequence[Shape]) -> int:
    """Eltwise sum/prod/max: one operation per element per input beyond the first."""
    return numel(outs[0]) * max(0, len(ins) - 1)


def same_shape(node: Any, shapes: list[Shape]) -> list[Shape]:
    """Elementwise ops: one output shaped like the first input."""
    return [tuple(shapes[0])]


def need_ndim(node: Any, shape: Sequence[int], ndim: int | tuple[int, ...], what: str = "input") -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if len(shape) not in allowed:
        raise ShapeError(f"{what} must have rank {' or '.join(map(str, allowed))}", layer=node.name,
                         expected=f"rank {allowed}", got=tuple(shape))
