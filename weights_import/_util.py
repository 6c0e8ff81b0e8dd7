"""Small helpers shared by the importers: the GC pause, the builder table (one dispatch idiom for
Caffe, Torch7 and Darknet) and the record of an applied cv2 quirk."""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

__all__ = ["paused_gc", "LayerTable", "Handler", "arity_expected", "AppliedQuirk", "check_quirks_mode"]

F = TypeVar("F", bound=Callable[..., Any])


class paused_gc:  # noqa: N801 - used like a function: ``with paused_gc():``
    """Pause the cyclic garbage collector while a model is read.

    A parse allocates many small objects that all stay alive until it ends; the collector's
    repeated passes over them cost up to 40% on large files and find nothing. Reference
    counting still frees everything as usual; the collector is resumed (if it was running)
    even when the parse raises. (A class, not a generator context manager: entering costs a
    fraction of a microsecond, which counts when a small model loads in 0.2 ms.)
    """

    __slots__ = ("was",)

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: Any) -> None:
        if self.was:
            gc.enable()


# ---- one dispatch idiom for the importers ----------------------------------------------------------
Arity = int | tuple[int, int | None]  # exactly n, or (at least, at most; None: no limit)


def arity_expected(n: int, arity: Arity, what: str) -> str | None:
    """None when ``n`` fits ``arity``, else what was expected (``"1 to 2 top(s)"``)."""
    lo, hi = (arity, arity) if isinstance(arity, int) else arity
    if lo <= n and (hi is None or n <= hi):
        return None
    want = str(lo) if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
    return f"{want} {what}(s)"


def name_registry(table: dict[str, F]) -> Callable[..., Callable[[F], F]]:
    """A decorator factory filling ``table``: ``@reg("A", "B")`` stores the decorated function
    under each name (a plain name -> function table; :class:`LayerTable` when arity is declared)."""

    def reg(*names: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            for nm in names:
                table[nm] = fn
            return fn

        return deco

    return reg


@dataclass(frozen=True, slots=True)
class Handler:
    """One registered builder: the framework's type name, the function, its declared arity."""

    name: str
    fn: Callable[..., Any]
    arity: Mapping[str, Any]  # e.g. {"bottoms": 1, "tops": (1, 2)} (Caffe), {"input": "table"} (Torch)
    names: tuple[str, ...]  # every name registered with it, the first the canonical one (others: aliases)


class LayerTable:
    """An importer's table of builders, keyed by the framework's own type names.

    ``layer = LayerTable("Caffe layer type", bottoms=1, tops=1)`` makes a decorator:
    ``@layer("Pooling", bottoms=1, tops=(1, 2))`` registers the function under that name with
    its arity (the keywords are the importer's own; omitted ones take the table's defaults).
    The importer looks a type up with :meth:`get`, checks the arity in its one dispatch place,
    and derives its supported-type list from :meth:`names` (error messages, docs, fuzz tests).
    """

    def __init__(self, kind: str, **defaults: Any) -> None:
        self.kind = kind
        self.defaults = defaults
        self._by_name: dict[str, Handler] = {}

    def __call__(self, *names: str, **arity: Any) -> Callable[[F], F]:
        unknown = set(arity) - set(self.defaults)
        if unknown or not names:
            raise TypeError(f"{self.kind}: register a name with arity among {sorted(self.defaults)}, "
                            f"got {names} {sorted(unknown)}")
        spec = MappingProxyType({**self.defaults, **arity})

        def register(fn: F) -> F:
            for n in names:
                if n in self._by_name:
                    raise ValueError(f"{self.kind} {n!r} is registered twice")
                self._by_name[n] = Handler(n, fn, spec, names)
            return fn

        return register

    def get(self, name: str) -> Handler | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> tuple[str, ...]:
        """Every registered type name, in registration order."""
        return tuple(self._by_name)

    def aliases(self) -> dict[str, str]:
        """Alias -> canonical name (the first of the names registered together)."""
        return {n: h.names[0] for n, h in self._by_name.items() if h.names[0] != n}


# ---- cv2 quirks an importer applied -----------------------------------------------------------------
def check_quirks_mode(quirks: str) -> None:
    """An importer's ``quirks`` argument: "none" (the framework's semantics) or "cv2"."""
    if quirks not in ("none", "cv2"):
        raise ValueError(f"quirks must be 'none' or 'cv2', got {quirks!r}")


class AppliedQuirk(NamedTuple):
    """One cv2 deviation applied by a ``quirks="cv2"`` load (``graph.meta["quirks"]`` lists them).

    ``layer``: the layer (node name) it changed ("" when it changes the whole model, e.g. how the
    weights file header is read); ``quirk``: the key in the importer's ``CV2_QUIRKS`` table;
    ``change``: what changed there, e.g. ``"k: 2.0 -> 1.0"``.
    """

    layer: str
    quirk: str
    change: str
