"""Local errors and a streaming trace.

*Local error* of a layer L for a backend (DESIGN.md, "Verification"): the backend's output of L
against refnet's float64 kernel applied to the backend's OWN inputs of L (the backend's outputs
of L's producers). It isolates what L computes from the rounding that reached L: a tanh after a
layer of range 1e4 has an accumulated error of 1e-3 and a local error of 1e-7.

:class:`LocalInputs` finds a backend's inputs of a layer: a net input is the blob the backend
was fed; a listed layer's output is the backend's own; a tensor the backend does not return (a
second output such as max-pooling indices, or a node cv2 does not list) is recomputed in float64
from the backend's inputs of its producer, recursively.

:func:`stream_trace` yields every layer's output in execution order while holding only the
tensors a later layer still reads (``Net.trace`` keeps every layer: gigabytes on big inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from refnet.graph import Node

__all__ = ["kernel64", "LocalInputs", "stream_trace"]

_PARAMS64: dict[int, tuple[Node, dict[str, np.ndarray]]] = {}


def kernel64(node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Node ``node`` run on refnet's float64 reference kernel: its outputs (one array per output)."""
    from refnet.ops import registry
    from refnet.ops.registry import Ctx

    hit = _PARAMS64.get(id(node))
    if hit is None or hit[0] is not node:
        if len(_PARAMS64) > 4096:
            _PARAMS64.clear()
        hit = (node, {k: np.ascontiguousarray(v, np.float64) for k, v in node.params.items()})
        _PARAMS64[id(node)] = hit
    xs = [np.ascontiguousarray(x, np.float64) if np.asarray(x).dtype.kind == "f" else np.asarray(x) for x in inputs]
    out = registry.get(node.op, node.name).run(node, xs, hit[1], Ctx("float64"))
    return [out] if isinstance(out, np.ndarray) else list(out)


class LocalInputs:
    """A backend's own inputs of each layer (see the module docstring).

    ``values(t)``: the backend's value of tensor ``t`` or None; ``feeds``: the net inputs as fed;
    ``shapes``: refnet's tensor shapes (backend blobs of the same size are reshaped to them).
    """

    def __init__(self, nodes: tuple[Node, ...] | list[Node], feeds: Mapping[str, np.ndarray],
                 shapes: Mapping[str, tuple[int, ...]], values: Callable[[str], np.ndarray | None],
                 prod: Mapping[str, Node] | None = None) -> None:
        #: tensor -> its producer (``prod``: the map built once by a caller that asks per layer)
        self.prod = prod if prod is not None else {t: n for n in nodes for t in n.outputs}
        self.feeds = feeds
        self.shapes = shapes
        self.values = values

    def of(self, node: Node, depth: int = 8) -> list[np.ndarray] | None:
        """The backend's inputs of ``node`` (float64, refnet's shapes), or None when one cannot be had."""
        memo: dict[str, np.ndarray | None] = {}
        out = []
        for t in node.inputs:
            v = self._tensor(t, depth, memo)
            if v is None:
                return None
            out.append(v)
        return out

    def _tensor(self, t: str, depth: int, memo: dict[str, np.ndarray | None]) -> np.ndarray | None:
        if t in memo:
            return memo[t]
        v: np.ndarray | None = None
        if t in self.feeds:
            v = np.asarray(self.feeds[t], np.float32)  # what the backend was given
        else:
            got = self.values(t)
            if got is not None:
                v = np.asarray(got)
            elif depth > 0 and t in self.prod:
                p = self.prod[t]
                ins = [self._tensor(i, depth - 1, memo) for i in p.inputs]
                if all(i is not None for i in ins):
                    try:
                        v = kernel64(p, ins)[p.outputs.index(t)]
                    except Exception:  # the producer does not run on these inputs: no local error here
                        v = None
        want = self.shapes.get(t)
        if v is not None and want is not None and tuple(v.shape) != tuple(want):
            if v.size == int(np.prod(want)):
                v = v.reshape(want)
            elif not (v.ndim == len(want) and tuple(v.shape[1:]) == tuple(want[1:])):
                v = None  # (another row count of the same rows, e.g. the rois of a Proposal layer: kept)
        memo[t] = v
        return v


def stream_trace(net: Any, feeds: Mapping[str, np.ndarray], precision: str = "float64"
                 ) -> Iterator[tuple[str, np.ndarray]]:
    """``(layer, output)`` for every node's first output, in execution order, computed exactly as
    ``net.trace(feeds, precision)`` computes them (the same compiled program, driven one step at
    a time through :meth:`refnet.runtime.program.Program.steps`), but dropping each tensor after
    its last reader; the consumer keeps what it needs. The run lock is held per step only.

    Falls back to ``net.trace`` (everything at once) when the Net has no compiled programs.
    """
    trace_program = getattr(net, "_trace_program", None)
    if trace_program is None:
        yield from net.trace(feeds, precision=precision).items()
        return
    from refnet.runtime.program import RUN_LOCK

    prog, fd = trace_program(feeds, precision)
    prog = prog.unpooled()  # the consumer keeps outputs past the run
    by_slot: dict[int, list[str]] = {}
    for name, s in prog.results.items():
        by_slot.setdefault(s, []).append(name)
    regs = prog.start(fd)
    for _, s in prog.feeds:
        for n in by_slot.get(s, ()):  # identity layers on a net input
            yield n, regs[s]
    steps = prog.steps(regs, prog.frees_after_last_read())
    while True:
        with RUN_LOCK:
            j = next(steps, None)
        if j is None:
            return
        for s in prog.code[j][3]:
            for n in by_slot.get(s, ()):
                yield n, regs[s]
