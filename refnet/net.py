"""The executor: :class:`Net` runs a :class:`~refnet.graph.Graph` on refnet's kernels.

``precision="float64"`` runs every node unfused on the readable reference kernels;
``precision="float32"`` runs the fast kernels and, where a layer's output is not asked
for, folds BatchNorm/Scale into the preceding convolution and fuses bias + ReLU into its
epilogue. Intermediate buffers are dropped as soon as no later step needs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, RefnetError, ShapeError
from refnet.graph import Graph, Node
from refnet.ops import registry
from refnet.ops.registry import Ctx

__all__ = ["Net", "load", "load_caffe", "load_torch", "load_darknet", "PRECISIONS"]

PRECISIONS = ("float32", "float64")
QUIRKS = ("none", "cv2")


@dataclass
class _Step:
    node: Node  # the node whose run function is called (possibly a fused copy)
    inputs: tuple[str, ...]  # tensor names read
    outputs: tuple[str, ...]  # tensor names written
    free: tuple[str, ...] = ()  # tensors no later step reads (dropped after this step)


@dataclass
class _Plan:
    steps: list[_Step]
    keep: frozenset[str]
    alias: dict[str, str] = field(default_factory=dict)  # requested name -> tensor holding it


class Net:
    """A loaded model: ``forward`` and ``trace`` as DESIGN.md states."""

    def __init__(self, graph: Graph, files: tuple[str, tuple] | None = None) -> None:
        self.graph = graph
        self.files = files  # ("caffe" | "torch" | "darknet", paths): lets compare() open the same model in cv2
        self._consumers: dict[str, list[int]] = {}
        for i, n in enumerate(graph.nodes):
            for t in n.inputs:
                self._consumers.setdefault(t, []).append(i)
        self._producer = {t: n for n in graph.nodes for t in n.outputs}
        self._specs = [registry.get(n.op, n.name) for n in graph.nodes]  # unknown ops fail at load
        # params cast to the run dtype, per precision and node object (fused nodes share names)
        self._params: dict[tuple[str, int], tuple[Node, dict[str, np.ndarray]]] = {}
        self._plans: dict[tuple, _Plan] = {}
        self._shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}

    # ---- public properties ----------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.graph.layer_names

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.graph.inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.graph.output_names

    @property
    def input_shapes(self) -> Mapping[str, tuple[int, ...] | None]:
        return self.graph.input_shapes

    def __repr__(self) -> str:
        return (f"<refnet.Net {self.graph.framework or '?'} {Path(self.graph.source).name if self.graph.source else ''}"
                f" layers={len(self.graph.nodes)} inputs={list(self.input_names)}>")

    # ---- shapes ----------------------------------------------------------------------------
    def infer_shapes(self, input_shapes: Mapping[str, Sequence[int]] | Sequence[int] | None = None
                     ) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape for the given input shapes (default: the declared ones).

        Raises ShapeError naming the first layer whose input cannot work.
        """
        shapes = self._input_shape_map(input_shapes)
        key = tuple(sorted(shapes.items()))
        cached = self._shapes.get(key)
        if cached is not None:
            return dict(cached)
        for node, spec in zip(self.graph.nodes, self._specs):
            ins = [shapes[t] for t in node.inputs]
            try:
                outs = spec.shape(node, ins)
            except ShapeError as e:
                raise e if e.layer else ShapeError(str(e), layer=node.name) from e
            except (ValueError, IndexError, KeyError, TypeError) as e:
                raise ShapeError(f"cannot infer the output shape: {e}", layer=node.name,
                                 got=[tuple(s) for s in ins]) from e
            if len(outs) != len(node.outputs):
                raise ShapeError(f"op {node.op} gives {len(outs)} outputs, layer declares {len(node.outputs)}",
                                 layer=node.name)
            for t, s in zip(node.outputs, outs):
                shapes[t] = tuple(int(d) for d in s)
        self._shapes[key] = dict(shapes)
        return shapes

    def _input_shape_map(self, input_shapes) -> dict[str, tuple[int, ...]]:
        if input_shapes is None:
            missing = [k for k in self.input_names if not self.graph.input_shapes.get(k)]
            if missing:
                raise ShapeError(f"the model does not declare the shape of input(s) {missing}; pass input shapes")
            return {k: tuple(self.graph.input_shapes[k]) for k in self.input_names}
        if not isinstance(input_shapes, Mapping):
            if len(self.input_names) != 1:
                raise ShapeError(f"the model has inputs {list(self.input_names)}; pass a dict of shapes")
            input_shapes = {self.input_names[0]: input_shapes}
        return {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}

    # ---- running -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray | Mapping[str, np.ndarray], outputs: Iterable[str] | str | None = None,
                precision: str = "float32") -> dict[str, np.ndarray]:
        """Run the net; return ``{name: array}`` for ``outputs`` (layer names; default output_names)."""
        ctx = _ctx(precision)
        feeds = self._feeds(x, ctx)
        names = self._requested(outputs)
        plan = self._plan(tuple(names), fuse=ctx.fast)
        env = self._run(plan, feeds, ctx)
        return {n: env[plan.alias.get(n, n)] for n in names}

    def trace(self, x: np.ndarray | Mapping[str, np.ndarray], precision: str = "float64") -> dict[str, np.ndarray]:
        """Every layer's (first) output, in execution order, unfused."""
        ctx = _ctx(precision)
        feeds = self._feeds(x, ctx)
        names = [n.name for n in self.graph.nodes]
        plan = self._plan(tuple(names), fuse=False)
        env = self._run(plan, feeds, ctx)
        listed = set(self.graph.layer_names)
        return {n: env[n] for n in names if n in listed}

    def _requested(self, outputs) -> list[str]:
        if outputs is None:
            return list(self.output_names)
        if isinstance(outputs, str):
            outputs = [outputs]
        names = list(outputs)
        known = set(self._producer) | set(self.input_names)
        bad = [n for n in names if n not in known]
        if bad:
            raise KeyError(f"unknown layer/output name(s) {bad}; layers are e.g. {list(self.layer_names[:8])}"
                           f"{' ...' if len(self.layer_names) > 8 else ''} (see net.layer_names)")
        return names

    def _feeds(self, x, ctx: Ctx) -> dict[str, np.ndarray]:
        if not isinstance(x, Mapping):
            if len(self.input_names) != 1:
                raise ShapeError(f"the model has inputs {list(self.input_names)}; pass a dict {{name: array}}")
            x = {self.input_names[0]: x}
        missing = [k for k in self.input_names if k not in x]
        extra = [k for k in x if k not in self.input_names]
        if missing or extra:
            raise ShapeError(f"inputs must be exactly {list(self.input_names)}", expected=list(self.input_names),
                             got=list(x))
        feeds = {}
        for k, v in x.items():
            a = np.asarray(v)
            if a.dtype.kind not in "fiu":
                raise ShapeError(f"input {k!r} must be a real numeric array", expected="float32/float64",
                                 got=f"dtype {a.dtype}")
            want = self.graph.input_shapes.get(k)
            if want and len(want) != a.ndim:
                raise ShapeError(f"input {k!r} has the wrong rank", expected=tuple(want), got=a.shape)
            if want and len(want) >= 2 and want[1] and a.shape[1] != want[1]:
                raise ShapeError(f"input {k!r} has the wrong number of channels", expected=tuple(want), got=a.shape)
            feeds[k] = np.ascontiguousarray(a, dtype=ctx.dtype)
        self.infer_shapes({k: v.shape for k, v in feeds.items()})  # validate before running
        return feeds

    def _node_params(self, node: Node, ctx: Ctx) -> dict[str, np.ndarray]:
        key = (ctx.precision, id(node))
        hit = self._params.get(key)
        if hit is None:
            hit = (node, {k: np.ascontiguousarray(v, dtype=ctx.dtype) for k, v in node.params.items()})
            self._params[key] = hit  # holding the node keeps its id unique
        return hit[1]

    def _run(self, plan: _Plan, feeds: dict[str, np.ndarray], ctx: Ctx) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(feeds)
        for step in plan.steps:
            node = step.node
            xs = [env[t] for t in step.inputs]
            params = self._node_params(node, ctx) if node.params else {}
            try:
                out = registry.OPS[node.op].run(node, xs, params, ctx)
            except RefnetError as e:
                if isinstance(e, ShapeError) and not e.layer:
                    raise ShapeError(str(e), layer=node.name) from e
                raise
            if isinstance(out, np.ndarray):
                out = [out]
            for t, v in zip(step.outputs, out):
                env[t] = v
            for t in step.free:
                env.pop(t, None)
        return env

    # ---- planning: fusion + liveness -----------------------------------------------------------
    def _plan(self, requested: tuple[str, ...], fuse: bool) -> _Plan:
        key = (requested, fuse)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        keep = frozenset(requested)
        steps: list[_Step] = []
        alias: dict[str, str] = {}
        skip: set[int] = set()
        nodes = self.graph.nodes
        for i, node in enumerate(nodes):
            if i in skip:
                continue
            if fuse and node.op == "conv":
                node, absorbed, out_tensor = self._fuse_conv(i, keep)
                skip.update(absorbed)
                if absorbed:
                    # consumers of the last absorbed node's output read the fused conv's result
                    alias[out_tensor] = node.outputs[0]
            inputs = tuple(alias.get(t, t) for t in node.inputs)
            steps.append(_Step(node, inputs, node.outputs))
        # liveness: drop a tensor after its last reader unless it is requested
        last: dict[str, int] = {}
        for j, st in enumerate(steps):
            for t in st.inputs:
                last[t] = j
        wanted = {alias.get(n, n) for n in keep}
        for j, st in enumerate(steps):
            st.free = tuple(t for t in set(st.inputs) | set(st.outputs)
                            if last.get(t, -1) <= j and t not in wanted and t not in self.input_names)
        plan = _Plan(steps, keep, {n: alias.get(n, n) for n in requested})
        self._plans[key] = plan
        return plan

    def _single_consumer(self, tensor: str) -> int | None:
        c = self._consumers.get(tensor, [])
        return c[0] if len(c) == 1 else None

    def _fuse_conv(self, i: int, keep: frozenset[str]) -> tuple[Node, list[int], str]:
        """Fold following BatchNorm/Scale (and a ReLU/ReLU6) into conv node ``i`` (float32 only)."""
        from refnet.kernels import fold_batch_norm, fold_scale

        node = self.graph.nodes[i]
        weight = node.params["weight"].astype(np.float32)
        bias = node.params.get("bias")
        bias = None if bias is None else bias.astype(np.float32)
        attrs = dict(node.attrs)
        absorbed: list[int] = []
        cur = node.outputs[0]
        changed = False
        while cur not in keep and len(node.outputs) == 1:
            j = self._single_consumer(cur)
            if j is None:
                break
            nxt = self.graph.nodes[j]
            if len(nxt.inputs) != 1 or "activation" in attrs:
                break
            p = nxt.params
            if nxt.op == "batch_norm":
                weight, bias = fold_batch_norm(weight, bias, p["mean"].reshape(-1), p["var"].reshape(-1),
                                               _f32(p.get("weight")), _f32(p.get("bias")),
                                               eps=float(nxt.attrs.get("eps", 1e-5)))
                changed = True
            elif (nxt.op == "scale" and int(nxt.attrs.get("axis", 1)) == 1 and "weight" in p
                  and p["weight"].size == weight.shape[0]):
                weight, bias = fold_scale(weight, bias, _f32(p["weight"]), _f32(p.get("bias")))
                changed = True
            elif nxt.op == "relu":
                attrs["activation"] = "relu"
                attrs["negative_slope"] = float(nxt.attrs.get("negative_slope", 0.0))
            elif nxt.op == "clip" and float(nxt.attrs.get("min", 0)) == 0.0 and float(nxt.attrs.get("max", 6)) == 6.0:
                attrs["activation"] = "relu6"
            else:
                break
            absorbed.append(j)
            cur = nxt.outputs[0]
        if not absorbed:
            return node, [], cur
        params = {"weight": np.ascontiguousarray(weight, np.float32)} if changed else dict(node.params)
        if changed and bias is not None:
            params["bias"] = np.ascontiguousarray(bias, np.float32)
        return Node(node.name, "conv", node.inputs, node.outputs, attrs, params), absorbed, cur


def _f32(v: np.ndarray | None) -> np.ndarray | None:
    return None if v is None else v.reshape(-1).astype(np.float32)


def _ctx(precision: str) -> Ctx:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return Ctx(precision)


def _check_quirks(quirks: str) -> str:
    if quirks not in QUIRKS:
        raise ValueError(f"quirks must be one of {QUIRKS}, got {quirks!r}")
    return quirks


# ---- loaders ----------------------------------------------------------------------------------
def load_caffe(prototxt: str | os.PathLike | None, caffemodel: str | os.PathLike | None = None, *,
               quirks: str = "none") -> Net:
    """Load a Caffe model (deploy .prototxt + .caffemodel; either may carry the layers)."""
    from refnet.weights_import.caffe import read_caffe

    return Net(read_caffe(prototxt, caffemodel, quirks=_check_quirks(quirks)), ("caffe", (prototxt, caffemodel)))


def load_torch(path: str | os.PathLike, *, quirks: str = "none", long_size: int | None = None) -> Net:
    """Load a Torch7 model (.t7/.net, binary or ASCII)."""
    from refnet.weights_import.torch import read_torch

    return Net(read_torch(path, quirks=_check_quirks(quirks), long_size=long_size), ("torch", (path,)))


def load_darknet(cfg: str | os.PathLike, weights: str | os.PathLike | None = None, *, quirks: str = "none") -> Net:
    """Load a Darknet model (.cfg + .weights)."""
    from refnet.weights_import.darknet import read_darknet

    return Net(read_darknet(cfg, weights, quirks=_check_quirks(quirks)), ("darknet", (cfg, weights)))


_EXT = {
    ".prototxt": "caffe_def", ".pbtxt": "caffe_def", ".caffemodel": "caffe_weights",
    ".t7": "torch", ".net": "torch", ".cfg": "darknet_cfg", ".weights": "darknet_weights",
}


def load(*paths: str | os.PathLike, quirks: str = "none", **kwargs: Any) -> Net:
    """Load a model, choosing the reader from the file extensions of ``paths``."""
    kinds: dict[str, str] = {}
    for p in paths:
        kind = _EXT.get(Path(p).suffix.lower())
        if kind is None:
            raise ModelFormatError(f"cannot tell the framework from the extension {Path(p).suffix!r}",
                                   file=str(p), expected="one of " + ", ".join(sorted(_EXT)))
        if kind in kinds:
            raise ModelFormatError(f"two files of the same kind: {kinds[kind]} and {p}", file=str(p))
        kinds[kind] = str(p)
    if "caffe_def" in kinds or "caffe_weights" in kinds:
        return load_caffe(kinds.get("caffe_def"), kinds.get("caffe_weights"), quirks=quirks)
    if "torch" in kinds:
        return load_torch(kinds["torch"], quirks=quirks, **kwargs)
    if "darknet_cfg" in kinds:
        return load_darknet(kinds["darknet_cfg"], kinds.get("darknet_weights"), quirks=quirks)
    raise ModelFormatError("no model definition among the files", file=", ".join(map(str, paths)),
                           expected=".prototxt/.caffemodel, .t7/.net or .cfg")

