"""Reverse-mode gradients through a Net: ``net.backward(x, grads, wrt=..., precision=...)``.

Given cotangents ``grads = {output name: array shaped like that output}``, the result is the
gradient of the scalar ``L = sum_o sum(grads[o] * out[o])`` with respect to every net input
and, for the layers named in ``wrt``, their parameters. The pass has two phases:

1. :class:`Tape` runs the forward pass of the layers the requested outputs depend on, unfused
   (float64: the reference kernels; float32: the fast kernels; the net's own executor with every
   tensor of those layers requested), and keeps every tensor.
2. :meth:`Tape.backward` walks those layers in reverse, applies each op's vector-Jacobian
   rule (refnet/runtime/vjp.py, built on the ``<op>_backward[_reference]`` kernels) and adds the
   cotangents of tensors read by several layers. An op on the path without a rule raises
   UnsupportedLayerError naming the layer and the op.

The result is a :class:`Gradients`:

- ``inputs``: ``{net input name: dL/dinput}``, one per net input, shaped like it;
- ``params``: ``{layer name: {param role: dL/dparam}}`` for the ``wrt`` layers (roles as in
  docs/ops.md: ``weight``, ``bias``, ``slope``, ``mean``, ...; zeros if the layer is not on the path);
- ``outputs``: ``{output name: forward value}`` of the outputs that had a cotangent.

Use :class:`Tape` directly to compute a loss from the forward values first and then its
gradient (one forward pass): ``tape = Tape(net, x, ["conv4"]); g = tape.backward({"conv4":
dloss(tape.values["conv4"])})``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from refnet.errors import ShapeError
from refnet.ops.registry import Ctx
from refnet.runtime import vjp
from refnet.runtime.program import RUN_LOCK

if TYPE_CHECKING:
    from refnet.net import Net

__all__ = ["Gradients", "Tape", "backward"]


@dataclass(frozen=True)
class Gradients:
    """What :func:`backward` returns (see the module docstring)."""

    inputs: dict[str, np.ndarray]
    params: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def input(self) -> np.ndarray:
        """The gradient w.r.t. the only net input."""
        if len(self.inputs) != 1:
            raise KeyError(f"the net has inputs {list(self.inputs)}: use .inputs[name]")
        return next(iter(self.inputs.values()))


def _precision(precision: str) -> Ctx:
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    return Ctx(precision)


class Tape:
    """The forward values of every tensor the ``outputs`` depend on, ready for :meth:`backward`."""

    def __init__(self, net: Net, x: np.ndarray | Mapping[str, np.ndarray], outputs: Iterable[str] | str,
                 precision: str = "float64") -> None:
        self.net = net
        self.ctx = _precision(precision)
        self.outputs = net._requested(outputs)
        producer = {t: i for i, n in enumerate(net.graph.nodes) for t in n.outputs}
        needed: set[int] = set()
        stack = [producer[t] for t in self.outputs if t in producer]
        while stack:
            i = stack.pop()
            if i not in needed:
                needed.add(i)
                stack.extend(producer[t] for t in net.graph.nodes[i].inputs if t in producer)
        self.order = sorted(needed)
        # the net's own unfused program with every tensor of these layers requested: kernels planned
        # once per input shape (cached in the net), no requested tensor in a reused buffer
        feeds = net._feeds(x, self.ctx)
        names = tuple(t for i in self.order for t in net.graph.nodes[i].outputs)
        prog = net._program(names, False, feeds, self.ctx)
        # the forward (every tensor kept: the plan's peak) and, for the backward, a cotangent of
        # each of them and the VJPs' temporaries: twice the forward's peak, refused before running
        from refnet.runtime.budget import check_memory

        check_memory(2 * prog.peak, "a forward and backward pass (every tensor kept for the gradients)")
        with RUN_LOCK:
            regs = prog.run(feeds)
        self.values: dict[str, np.ndarray] = dict(feeds)
        self.values.update({t: regs[prog.results[t]] for t in names})

    def backward(self, grads: Mapping[str, np.ndarray], wrt: Iterable[str] | None = None) -> Gradients:
        """Propagate ``grads`` (cotangents of some of the tape's outputs) back to the inputs."""
        net, dt = self.net, self.ctx.dtype
        wrt_names = [wrt] if isinstance(wrt, str) else list(wrt or ())
        unknown = [w for w in wrt_names if w not in {n.name for n in net.graph.nodes}]
        if unknown:
            raise KeyError(f"wrt: unknown layer name(s) {unknown} (see net.layer_names)")
        cot: dict[str, np.ndarray] = {}
        for name, g in grads.items():
            if name not in self.outputs:
                raise KeyError(f"grads names {name!r}, which is not among the tape's outputs {self.outputs}")
            g = np.asarray(g, dtype=dt)
            if g.shape != self.values[name].shape:
                raise ShapeError(f"the cotangent of {name!r} must have the output's shape",
                                 expected=self.values[name].shape, got=g.shape)
            cot[name] = cot[name] + g if name in cot else g.copy()
        params: dict[str, dict[str, np.ndarray]] = {}
        want = set(wrt_names)
        for i in reversed(self.order):
            node = net.graph.nodes[i]
            dys = [cot.pop(t, None) for t in node.outputs]
            if all(d is None for d in dys):
                continue
            rule = vjp.get(node.op, node.name)
            xs = [self.values[t] for t in node.inputs]
            ys = [self.values[t] for t in node.outputs]
            p = net._node_params(node, self.ctx)
            dxs, dps = rule(node, xs, ys, dys, p, self.ctx.fast, node.name in want)
            for t, x, d in zip(node.inputs, xs, dxs):
                if d is None:
                    continue
                if d.shape != x.shape:  # a rule's bug, not the user's
                    raise RuntimeError(f"backward rule of {node.op} ({node.name}) gave {d.shape} for {x.shape}")
                d = np.asarray(d, dtype=dt)
                cot[t] = cot[t] + d if t in cot else d
            if node.name in want:
                params[node.name] = {k: np.asarray(v, dtype=dt) for k, v in dps.items()}
        for name in want - set(params):  # not on the path: zero gradients
            node = net.graph.node(name)
            params[name] = {k: np.zeros(v.shape, dtype=dt) for k, v in node.params.items()}
        inputs = {k: cot.get(k, np.zeros_like(self.values[k])) for k in net.input_names}
        return Gradients(inputs=inputs, params={w: params[w] for w in wrt_names},
                         outputs={k: self.values[k] for k in grads})


def backward(net: Net, x: np.ndarray | Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], *,
             wrt: Iterable[str] | None = None, precision: str = "float64") -> Gradients:
    """Gradient of ``sum_o sum(grads[o] * out[o])`` w.r.t. the net input(s) and the ``wrt``
    layers' params (module docstring)."""
    if not grads:
        raise ValueError("grads must name at least one output: {name: cotangent}")
    return Tape(net, x, list(grads), precision).backward(grads, wrt)
