"""The refnet error hierarchy.

Every problem with a model file, an unsupported layer or an inconsistent shape is reported
as one of these, with enough context (file, position, layer, expected vs found) for a user
to act on it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["RefnetError", "ModelFormatError", "UnsupportedLayerError", "ShapeError", "BudgetError"]


class RefnetError(Exception):
    """Base class of every error refnet raises on purpose."""


class ModelFormatError(RefnetError, ValueError):
    """A model file is malformed, truncated or contradicts itself.

    ``file`` is the path (or a description such as ``"<bytes>"``); ``offset`` a byte offset
    for binary formats; ``line``/``col`` (1-based) for text formats; ``expected`` what the
    parser wanted; ``layer`` the layer/module concerned, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        offset: int | None = None,
        line: int | None = None,
        col: int | None = None,
        expected: str | None = None,
        layer: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.offset = offset
        self.line = line
        self.col = col
        self.expected = expected
        self.layer = layer
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}" + (f":{self.col}" if self.col is not None else "")
        if self.offset is not None:
            where += f" (byte offset {self.offset})"
        text = f"{where}: "
        if self.layer:
            text += f"layer {self.layer!r}: "
        text += self.message
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class UnsupportedLayerError(RefnetError):
    """A layer (or module) type refnet does not implement."""

    def __init__(
        self,
        layer: str,
        type: str,
        supported: list[str] | tuple[str, ...] | None = None,
        *,
        file: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.layer = layer
        self.type = type
        self.supported = tuple(sorted(supported)) if supported else ()
        self.file = file
        msg = f"layer {layer!r} has unsupported type {type!r}"
        if file:
            msg = f"{file}: " + msg
        if detail:
            msg += f": {detail}"
        if self.supported:
            msg += "; supported types: " + ", ".join(self.supported)
        super().__init__(msg)


class ShapeError(RefnetError, ValueError):
    """An array's shape (or dtype, or rank) does not fit the layer/kernel it is given to.

    ``layer`` names the layer concerned, when known; ``expected`` / ``got`` what was wanted and
    found; ``inputs`` the net input shapes of the forward pass or shape inference that failed
    (``{name: shape}``), so a user can tell which of the sizes they chose a layer could not take;
    ``hint`` what to do about it, when the caller knows (it ends the message).
    """

    def __init__(
        self,
        message: str,
        *,
        layer: str | None = None,
        expected: object = None,
        got: object = None,
        inputs: Mapping[str, tuple[int, ...]] | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.layer = layer
        self.expected = expected
        self.got = got
        self.inputs = {k: tuple(v) for k, v in inputs.items()} if inputs else None
        self.hint = hint
        text = f"layer {layer!r}: {message}" if layer else message
        if expected is not None or got is not None:
            text += f" (expected {expected}, got {got})"
        if self.inputs:
            shapes = ", ".join(f"{k!r} has shape {v}" for k, v in self.inputs.items())
            text += f" (net input {shapes})" if len(self.inputs) == 1 else f" (net inputs: {shapes})"
        if hint:
            text += f"; {hint}"
        super().__init__(text)

    def with_context(self, *, layer: str | None = None,
                     inputs: Mapping[str, tuple[int, ...]] | None = None) -> ShapeError:
        """A copy that also names ``layer`` and the net ``inputs`` (what it already names wins);
        message, expected, got and hint are kept."""
        return ShapeError(self.message, layer=self.layer or layer, expected=self.expected, got=self.got,
                          inputs=self.inputs or inputs, hint=self.hint)

    def with_hint(self, hint: str) -> ShapeError:
        """A copy that ends with ``hint`` (what the user can do); the rest is kept."""
        return ShapeError(self.message, layer=self.layer, expected=self.expected, got=self.got,
                          inputs=self.inputs, hint=hint)


class BudgetError(RefnetError):
    """Work refused up front because it would exceed a budget (refnet.runtime.budget).

    ``kind`` is ``"memory"`` (``need``/``limit`` in bytes) or ``"compute"`` (MACs per layer);
    ``what`` the work (a forward pass, a decoded image, a download, ...); ``layer`` the layer
    where the need is largest, when there is one; ``hint`` how to raise the limit."""

    def __init__(self, kind: str, what: str, *, need: int, limit: int, layer: str | None = None,
                 unit: str = "bytes", hint: str | None = None) -> None:
        self.kind = kind
        self.what = what
        self.need = int(need)
        self.limit = int(limit)
        self.layer = layer
        self.unit = unit
        where = f"layer {layer!r}: " if layer else ""
        text = (f"{where}{what} needs {_amount(self.need, unit)}, over the {kind} budget of "
                f"{_amount(self.limit, unit)}")
        if hint:
            text += f" ({hint})"
        super().__init__(text)


def _amount(n: int, unit: str) -> str:
    if unit == "bytes":
        for name, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if n >= k:
                return f"{n / k:.1f} {name} ({n:,} bytes)"
        return f"{n:,} bytes"
    return f"{n:,} {unit}"
