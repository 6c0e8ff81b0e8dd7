"""Planning a forward pass: which nodes run, in which form, and the tensor shapes they see.

A :class:`Plan` is the list of :class:`Step` s that computes the requested tensors: only the
nodes they depend on (:func:`needed_nodes`), on the fused path with the per-channel affine
layers and activations folded into the convolution before them and sibling convolutions
merged (:mod:`refnet.runtime.fusion`). :func:`infer_shapes` gives every tensor's shape and
refuses tensors no framework could hold (:data:`MAX_TENSOR_ELEMENTS`). Each step names the
tensors dropped after it, for the budget's peak-memory estimate before anything is compiled
(:func:`refnet.runtime.budget.check_plan`). Plans depend on the requested outputs only;
:mod:`refnet.runtime.program` compiles one for fixed input shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from refnet.errors import ShapeError
from refnet.graph import Node
from refnet.runtime import fusion
from refnet.runtime.fusion import (
    ADD_OPS,
    FUSABLE_OPS,
    conv_geometry_key,
    fuse_add_activation,
    fuse_following,
    fuse_hard_swish,
    merged_conv,
)

__all__ = ["Step", "Plan", "make_plan", "needed_nodes", "infer_shapes", "check_size", "MAX_TENSOR_ELEMENTS"]

# the most elements a tensor may have: Caffe counts a blob's elements in an int (INT_MAX), cv2.dnn too
MAX_TENSOR_ELEMENTS = 2**31 - 1


@dataclass
class Step:
    node: Node  # the node whose run function is called (possibly a fused copy)
    inputs: tuple[str, ...]  # tensor names read
    outputs: tuple[str, ...]  # tensor names written
    free: tuple[str, ...] = ()  # tensors no later step reads (the budget's peak-memory estimate)


@dataclass
class Plan:
    steps: list[Step]
    keep: frozenset[str]
    alias: dict[str, str] = field(default_factory=dict)  # requested name -> tensor holding it
    needed: frozenset[int] = frozenset()  # indices of the graph nodes the requested outputs need


def needed_nodes(nodes: Sequence[Node], requested: Sequence[str]) -> set[int]:
    """Indices of the nodes whose outputs the requested tensors depend on."""
    index = {t: i for i, n in enumerate(nodes) for t in n.outputs}
    needed: set[int] = set()
    todo = [index[t] for t in requested if t in index]
    while todo:
        i = todo.pop()
        if i in needed:
            continue
        needed.add(i)
        todo.extend(index[t] for t in nodes[i].inputs if t in index)
    return needed


def make_plan(nodes: Sequence[Node], consumers: Mapping[str, Sequence[int]], input_names: Sequence[str],
              requested: tuple[str, ...], fuse: bool, merge: bool) -> Plan:
    """The steps computing ``requested`` (tensor names): every needed node in graph order; with
    ``fuse``, affine layers, residual adds and activations folded into the conv before them and
    the activation after any other add into the add (never past a requested tensor); with
    ``merge`` too, sibling convolutions merged. Each step's ``free`` names the tensors dropped
    after it (neither read later, requested nor a net input)."""
    keep = frozenset(requested)
    steps: list[Step] = []
    alias: dict[str, str] = {}
    skip: set[int] = set()
    needed = needed_nodes(nodes, requested)
    producers = {t: i for i, n in enumerate(nodes) for t in n.outputs} if fuse else {}
    consts = ({n.outputs[0]: n.params["value"] for n in nodes if n.op == "constant"}
              if fuse and fusion.CONST_FUSION else {})
    for i, node in enumerate(nodes):
        if i in skip or i not in needed:
            continue
        if fuse and node.op in FUSABLE_OPS:
            node, absorbed, out_tensor = fuse_following(nodes, consumers, i, keep, producers, consts)
        elif fuse and node.op in ADD_OPS:
            node, absorbed, out_tensor = fuse_hard_swish(nodes, consumers, i, keep, consts)
            if not absorbed:
                node, absorbed, out_tensor = fuse_add_activation(nodes, consumers, i, keep)
        else:
            absorbed = []
        if absorbed:
            skip.update(absorbed)
            # consumers of the last absorbed node's output read the fused node's result
            alias[out_tensor] = node.outputs[0]
        inputs = tuple(alias.get(t, t) for t in node.inputs)
        steps.append(Step(node, inputs, node.outputs))
    if fuse:  # constants only absorbed steps read (folded into a conv's weights): not computed
        read = {t for st in steps for t in st.inputs} | {alias.get(n, n) for n in keep}
        steps = [st for st in steps if st.node.op != "constant" or any(t in read for t in st.outputs)]
    if fuse and merge:
        steps = _merge_sibling_convs(steps)
    last: dict[str, int] = {}
    for j, st in enumerate(steps):
        for t in st.inputs:
            last[t] = j
    wanted = {alias.get(n, n) for n in keep} | set(input_names)
    for j, st in enumerate(steps):
        st.free = tuple(t for t in set(st.inputs) | set(st.outputs) if last.get(t, -1) <= j and t not in wanted)
    return Plan(steps, keep, {n: alias.get(n, n) for n in requested}, frozenset(needed))


def _merge_sibling_convs(steps: list[Step]) -> list[Step]:
    """Steps with every group of sibling convolutions (same input, same geometry) replaced, at
    the first one's place, by their merged convolution and its slice (fusion.merged_conv)."""
    groups: dict[tuple, list[int]] = {}
    for j, st in enumerate(steps):
        key = conv_geometry_key(st.node)
        if key is not None:
            groups.setdefault((st.inputs[0],) + key, []).append(j)
    merged: dict[int, list[Step]] = {}
    drop: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        conv, split = merged_conv([steps[j].node for j in members], steps[members[0]].inputs[0])
        merged[members[0]] = [Step(conv, conv.inputs, conv.outputs), Step(split, split.inputs, split.outputs)]
        drop.update(members[1:])
    if not merged:
        return steps
    out: list[Step] = []
    for j, st in enumerate(steps):
        if j in merged:
            out.extend(merged[j])
        elif j not in drop:
            out.append(st)
    return out


# ---- shapes --------------------------------------------------------------------------------------
def check_size(layer: str, tensor: str, shape: tuple[int, ...], inputs: Mapping[str, tuple[int, ...]]
               ) -> tuple[int, ...]:
    """``shape`` if a tensor of it can exist (at most MAX_TENSOR_ELEMENTS elements; a -1 dimension,
    known only at run time, counts as 1), else ShapeError naming the layer, shape and net inputs."""
    n = math.prod(d for d in shape if d >= 0)
    if n > MAX_TENSOR_ELEMENTS:
        what = "output" if tensor == layer else f"output {tensor!r}"
        raise ShapeError(f"{what} of shape {shape} would have {n:,} elements, more than a tensor can hold",
                         layer=layer, got=shape, inputs=inputs,
                         expected=f"at most 2**31 - 1 = {MAX_TENSOR_ELEMENTS:,} elements per tensor, the int limit of "
                                  "Caffe blobs and cv2.dnn; check the layer's pad, kernel, stride and num_output "
                                  "and the input size")
    return shape


def infer_shapes(nodes: Sequence[Node], specs: Sequence[Any], shapes: dict[str, tuple[int, ...]],
                 needed: frozenset[int] | None, input_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``shapes`` (the net inputs' shapes) completed with the outputs of the ``needed`` nodes (None:
    all), each by its op spec's shape rule (``specs[i]`` is node i's). ShapeError names the first
    layer whose input cannot work, or whose output is too big (check_size), and the net inputs."""
    given = {k: shapes[k] for k in input_names if k in shapes}  # named in every error below
    for i, (node, spec) in enumerate(zip(nodes, specs)):
        if needed is not None and i not in needed:
            continue
        ins = [shapes[t] for t in node.inputs]
        try:
            outs = spec.shape(node, ins)
        except ShapeError as e:
            raise e.with_context(layer=node.name, inputs=given) from e
        except (ValueError, IndexError, KeyError, TypeError) as e:
            raise ShapeError(f"cannot infer the output shape: {e}", layer=node.name,
                             got=[tuple(s) for s in ins], inputs=given) from e
        if len(outs) != len(node.outputs):
            raise ShapeError(f"op {node.op} gives {len(outs)} outputs, layer declares {len(node.outputs)}",
                             layer=node.name, inputs=given)
        for t, s in zip(node.outputs, outs):
            shapes[t] = check_size(node.name, t, tuple(int(d) for d in s), given)
    return shapes
