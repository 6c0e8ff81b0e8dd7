"""refnet's framework-neutral graph IR.

A :class:`Graph` is a tuple of :class:`Node` in execution (topological) order. Tensors are
named by strings. By convention a node's first output tensor is named like the node, and
output ``i > 0`` is ``"<node>:<i>"``, so every layer is addressable by its own name (as in
cv2.dnn) even when the source framework wrote it in place. Op names and their attributes
are listed in docs/ops.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError

__all__ = ["Node", "Graph", "output_name", "freeze"]


def output_name(node_name: str, i: int) -> str:
    """The tensor name of output ``i`` of node ``node_name``."""
    return node_name if i == 0 else f"{node_name}:{i}"


def freeze(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of a fresh copy of ``d`` (lists become tuples)."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        out[k] = tuple(v) if isinstance(v, list) else v
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)  # slots: no per-node __dict__ (long nets hold 100k+ nodes)
class Node:
    """One layer: ``op`` applied to tensors ``inputs``, producing tensors ``outputs``.

    ``attrs`` holds the op's hyper-parameters (plain Python values, see docs/ops.md),
    ``params`` its learned arrays by role (``"weight"``, ``"bias"``, ``"mean"``, ...).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    params: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if type(self.inputs) is not tuple:  # importers pass tuples and read-only maps already
            object.__setattr__(self, "inputs", tuple(self.inputs))
        if type(self.outputs) is not tuple:
            object.__setattr__(self, "outputs", tuple(self.outputs))
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", freeze(self.attrs))
        if not isinstance(self.params, MappingProxyType):
            object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __hash__(self) -> int:  # params hold arrays: identity hashing is what we want
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


@dataclass(frozen=True)
class Graph:
    """A whole model.

    ``inputs``: input tensor names; ``input_shapes``: their declared NCHW shapes (None when
    the file does not say); ``layer_names``: cv2.dnn's getLayerNames() order;
    ``output_names``: like cv2's getUnconnectedOutLayersNames(); ``meta``: anything the
    importer wants to keep for people studying the model (e.g. Torch module paths by layer).
    """

    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    input_shapes: Mapping[str, tuple[int, ...] | None]
    layer_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    framework: str = ""
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "input_shapes", MappingProxyType(dict(self.input_shapes)))
        if not self.layer_names:
            object.__setattr__(self, "layer_names", tuple(n.name for n in self.nodes))
        if not self.output_names:
            object.__setattr__(self, "output_names", default_output_names(self.nodes, self.inputs))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        self.validate()

    def node(self, name: str) -> Node:
        """The first node named ``name`` (KeyError if none): a dict built on the first call, so a
        lookup per layer stays linear in the graph's size (100k-node graphs)."""
        by_name = self.__dict__.get("_by_name")
        if by_name is None:
            by_name = {}
            for n in self.nodes:
                by_name.setdefault(n.name, n)
            object.__setattr__(self, "_by_name", by_name)
        return by_name[name]

    def validate(self) -> None:
        """Check names are unique, every input is produced before use (no cycles, nothing dangling).

        Every error is a ModelFormatError naming the layer and saying what was expected."""
        src = self.source or None
        producer: dict[str, str | None] = dict.fromkeys(self.inputs)  # tensor -> layer (None: a net input)
        names: set[str] = set()
        for n in self.nodes:
            if n.name in names:
                raise ModelFormatError(f"duplicate layer name {n.name!r}", file=src, layer=n.name,
                                       expected="every layer name once (layers are addressed by name, as in cv2): "
                                                "rename one of them")
            names.add(n.name)
            for t in n.inputs:
                if t not in producer:
                    raise ModelFormatError(
                        f"input tensor {t!r} is not produced by any earlier layer or net input "
                        "(dangling bottom or a cycle)",
                        file=src,
                        layer=n.name,
                        expected=f"a net input {list(self.inputs)} or the output of a layer listed before "
                                 f"{n.name!r}",
                    )
            for i, t in enumerate(n.outputs):
                if t != output_name(n.name, i):
                    raise ModelFormatError(
                        f"output {i} of layer {n.name!r} must be named {output_name(n.name, i)!r}, got {t!r}",
                        file=src,
                        layer=n.name,
                        expected=f"{output_name(n.name, i)!r} (output 0 is named like its layer, output i > 0 "
                                 "'<layer>:<i>')",
                    )
                if t in producer:
                    prev = producer[t]
                    if prev is None:
                        raise ModelFormatError(
                            f"tensor {t!r} is produced twice: it is a net input and an output of layer {n.name!r}",
                            file=src, layer=n.name,
                            expected=f"layer outputs named apart from the net inputs {list(self.inputs)}: rename "
                                     f"layer {n.name!r} or the input")
                    raise ModelFormatError(
                        f"tensor {t!r} is produced twice: by layer {prev!r} and by layer {n.name!r}",
                        file=src, layer=n.name,
                        expected=f"one producer per tensor: rename layer {n.name!r} or {prev!r} (output i > 0 "
                                 "of layer 'x' is the tensor 'x:i')")
                producer[t] = n.name


def default_output_names(nodes: tuple[Node, ...], inputs: tuple[str, ...]) -> tuple[str, ...]:
    """Layers none of whose outputs is consumed by another layer, in order."""
    consumed = {t for n in nodes for t in n.inputs}
    return tuple(n.name for n in nodes if consumed.isdisjoint(n.outputs))
