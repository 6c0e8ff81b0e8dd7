"""The executor: :class:`Net` runs a :class:`~refnet.graph.Graph` on refnet's kernels.

``precision="float64"`` runs every node unfused on the readable reference kernels;
``precision="float32"`` runs the fast kernels and, where a layer's output is not asked for,
folds BatchNorm / Scale / Bias / linear Power layers into the preceding convolution,
transposed convolution or instance normalisation and fuses the following ReLU / leaky ReLU /
PReLU / ReLU6 into its epilogue.

A forward pass runs a *program*, compiled once per (requested outputs, precision, input
shapes): every step is a callable with its arguments bound (the fast ops are planned by
``refnet.ops.core.PREPARE``: weights laid out, algorithm chosen), tensors live in numbered
slots and are dropped after their last reader, identity/split layers are aliases, and the
outputs of convolutions go to buffers preallocated per shape and reused once every tensor
that may view them is dead (requested outputs always get fresh arrays). The per-layer
overhead of the loop is about a microsecond.

Threads: :func:`set_num_threads` sets numba's and the BLAS's thread counts (and cv2's,
when it is loaded) in one call. Forward passes are serialised by a process-wide lock: the
preallocated buffers belong to the Net, and numba's workqueue threading layer must not be
entered from two threads at once (kernels called directly take refnet.kernels._jit's
PARALLEL_LOCK for the same reason). Program caches are guarded by another lock.

Budgets: before a program is compiled, :func:`refnet.runtime.budget.check_plan` refuses it
(BudgetError) when a layer's work or the pass's peak memory exceeds the budget. Heavy
programs run through :func:`refnet.runtime.interrupt.run_interruptibly`, so Ctrl-C works.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, ShapeError
from refnet.graph import Graph, Node
from refnet.ops import registry
from refnet.ops.registry import Ctx
from refnet.runtime.budget import check_plan
from refnet.runtime.interrupt import THREAD_MIN_WORK, run_interruptibly
from refnet.runtime.smallnet import kernels_for
from refnet.runtime.threads import before_forward as _threads_before_forward
from refnet.runtime.threads import get_num_threads, set_num_threads
from refnet.runtime.threads import reapply as _threads_reapply

__all__ = ["Net", "load", "load_caffe", "load_torch", "load_darknet", "PRECISIONS", "set_num_threads",
           "get_num_threads"]

PRECISIONS = ("float32", "float64")
QUIRKS = ("none", "cv2")

# ops whose outputs never share memory with their inputs (anything else may return a view)
_FRESH_OPS = frozenset({
    "conv", "deconv", "linear", "relu", "prelu", "clip", "elu", "sigmoid", "tanh", "max_pool",
    "avg_pool", "batch_norm", "instance_norm", "lrn", "softmax", "log_softmax", "eltwise", "concat",
    "max_unpool", "normalize", "power", "pad",
})
# ops whose outputs *are* their input: no step, the output tensor names the input's slot
_ALIAS_OPS = frozenset({"identity", "split"})
_MAX_PROGRAMS = 8  # compiled programs kept per Net (input shapes x outputs x precision)
# the most elements a tensor may have: Caffe counts a blob's elements in an int (INT_MAX), cv2.dnn too
MAX_TENSOR_ELEMENTS = 2**31 - 1

_RUN_LOCK = threading.RLock()
_PROGRAM_LOCK = threading.RLock()  # Net._programs/_plans/_shapes/_params (many threads, many shapes)


# ---- threads (refnet/runtime/threads.py: explicit counts or the load-aware default) ---------------
# set_num_threads / get_num_threads are re-exported from there (imported above)


# ---- plans -------------------------------------------------------------------------------------
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
    needed: frozenset[int] = frozenset()  # indices of the graph nodes the requested outputs need


class _Program:
    """A plan compiled for fixed input shapes and a precision: a list of bound steps over
    numbered tensor slots (see the module docstring)."""

    __slots__ = ("code", "nslots", "feeds", "results", "buffers", "layers", "ops", "n_pooled", "work")

    def __init__(self) -> None:
        self.code: list[tuple] = []  # (fn, input slots, output slot | -1, output slots, buffer | -1, frees)
        self.nslots = 0
        self.feeds: list[tuple[str, int]] = []
        self.results: dict[str, int] = {}  # requested name -> slot
        self.buffers: list[np.ndarray] = []
        self.layers: list[str] = []  # layer name per code entry (error messages, profiling)
        self.ops: list[str] = []  # op per code entry
        self.n_pooled = 0
        self.work = 0  # MACs of one run (refnet.runtime.budget), decides the interruptible path

    def run(self, feeds: Mapping[str, np.ndarray], hook: Callable | None = None) -> list:
        regs: list = [None] * self.nslots
        for name, s in self.feeds:
            regs[s] = feeds[name]
        bufs = self.buffers
        j = 0
        try:
            if hook is None:
                for j, (fn, ins, out1, outs, buf, frees) in enumerate(self.code):  # noqa: B007 (j: errors)
                    if buf >= 0:
                        r = fn(*[regs[i] for i in ins], out=bufs[buf])
                    else:
                        r = fn(*[regs[i] for i in ins])
                    if out1 >= 0:
                        regs[out1] = r
                    else:
                        for s, v in zip(outs, r):
                            regs[s] = v
                    for s in frees:
                        regs[s] = None
            else:  # the same loop, timing every step (profiling)
                for j, (fn, ins, out1, outs, buf, frees) in enumerate(self.code):
                    t0 = hook(None)
                    if buf >= 0:
                        r = fn(*[regs[i] for i in ins], out=bufs[buf])
                    else:
                        r = fn(*[regs[i] for i in ins])
                    hook((self.layers[j], t0))
                    if out1 >= 0:
                        regs[out1] = r
                    else:
                        for s, v in zip(outs, r):
                            regs[s] = v
                    for s in frees:
                        regs[s] = None
        except ShapeError as e:
            layer = self.layers[j] if self.layers else None
            raise e.with_context(layer=layer, inputs={k: feeds[k].shape for k, _ in self.feeds}) from e
        return regs


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
        self._programs: OrderedDict[tuple, _Program] = OrderedDict()
        _threads_reapply()  # a BLAS loaded while reading the model gets the thread limit too

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

        Raises ShapeError naming the first layer whose input cannot work (or whose output would
        have more than MAX_TENSOR_ELEMENTS elements) and the net input shapes it was given.
        """
        return self._shapes_of(self._input_shape_map(input_shapes), None)

    def _shapes_of(self, shapes: dict[str, tuple[int, ...]], needed: frozenset[int] | None
                   ) -> dict[str, tuple[int, ...]]:
        """Shapes of the outputs of the ``needed`` nodes (None: all) for these input shapes."""
        key = (tuple(sorted(shapes.items())), needed)
        cached = self._shapes.get(key)
        if cached is not None:
            return dict(cached)
        given = {k: shapes[k] for k in self.input_names if k in shapes}  # named in every error below
        for i, (node, spec) in enumerate(zip(self.graph.nodes, self._specs)):
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
                shapes[t] = _check_size(node.name, t, tuple(int(d) for d in s), given)
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
        if set(input_shapes) != set(self.input_names):
            raise ShapeError(f"input shapes must be given for exactly {list(self.input_names)}",
                             expected=list(self.input_names), got=list(input_shapes))
        return {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}

    # ---- running -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray | Mapping[str, np.ndarray], outputs: Iterable[str] | str | None = None,
                precision: str = "float32") -> dict[str, np.ndarray]:
        """Run the net; return ``{name: array}`` for ``outputs`` (layer names; default output_names)."""
        ctx = _ctx(precision)
        asked = self._requested(outputs)
        names = [self._alias(n) for n in asked]  # ONNX tensor names -> IR tensors
        feeds = self._feeds(x, ctx)
        prog = self._program(tuple(dict.fromkeys(names)), ctx.fast, feeds, ctx)
        regs = _run(prog, feeds)
        res = prog.results
        return {a: regs[res[n]] for a, n in zip(asked, names)}

    def _alias(self, name: str) -> str:
        """The IR tensor for ``name``: itself, or the IR tensor an ONNX tensor name maps to."""
        if name in self._producer or name in self.graph.inputs:
            return name
        return self.graph.meta.get("tensors", {}).get(name, name)

    def trace(self, x: np.ndarray | Mapping[str, np.ndarray], precision: str = "float64") -> dict[str, np.ndarray]:
        """Every layer's (first) output, in execution order, unfused."""
        ctx = _ctx(precision)
        feeds = self._feeds(x, ctx)
        names = tuple(n.name for n in self.graph.nodes)
        prog = self._program(names, False, feeds, ctx)
        regs = _run(prog, feeds)
        listed = set(self.graph.layer_names)
        res = prog.results
        return {n: regs[res[n]] for n in names if n in listed}

    def backward(self, x: np.ndarray | Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], *,
                 wrt: Iterable[str] | None = None, precision: str = "float64"):
        """Gradient of ``sum(grads[o] * out[o])`` over the outputs ``o`` named in ``grads`` w.r.t.
        the net input(s) and the ``wrt`` layers' params: a ``refnet.runtime.backward.Gradients``
        (``.inputs``, ``.params``, ``.outputs``; see that module)."""
        from refnet.runtime.backward import backward

        return backward(self, x, grads, wrt=wrt, precision=precision)

    def profile(self, x: np.ndarray | Mapping[str, np.ndarray], outputs: Iterable[str] | str | None = None,
                precision: str = "float32", repeat: int = 1) -> list[tuple[str, str, float]]:
        """Seconds spent per executed step of ``forward`` (median over ``repeat`` runs), as
        ``(layer, op, seconds)`` in execution order; fused steps carry the first layer's name."""
        import time

        ctx = _ctx(precision)
        names = self._requested(outputs)
        feeds = self._feeds(x, ctx)
        prog = self._program(tuple(names), ctx.fast, feeds, ctx)
        times: dict[str, list[float]] = {}
        clock = time.perf_counter

        def hook(arg):
            if arg is None:
                return clock()
            layer, t0 = arg
            times.setdefault(layer, []).append(clock() - t0)
            return None

        with _RUN_LOCK:
            _threads_before_forward()
            for _ in range(max(1, int(repeat))):
                prog.run(feeds, hook)
        return [(layer, op, float(np.median(times[layer]))) for layer, op in zip(prog.layers, prog.ops)]

    def _requested(self, outputs) -> list[str]:
        if outputs is None:
            return list(self.output_names)
        if isinstance(outputs, str):
            outputs = [outputs]
        names = list(outputs)
        known = set(self._producer) | set(self.input_names) | set(self.graph.meta.get("tensors", ()))
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
        if len(x) != len(self.input_names) or any(k not in x for k in self.input_names):
            want = {k: (tuple(self.graph.input_shapes[k]) if self.graph.input_shapes.get(k) else None)
                    for k in self.input_names}
            raise ShapeError(f"inputs must be exactly {list(self.input_names)}", expected=want, got=list(x))
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
        return feeds

    def _node_params(self, node: Node, ctx: Ctx) -> dict[str, np.ndarray]:
        key = (ctx.precision, id(node))
        hit = self._params.get(key)
        if hit is None:
            hit = (node, {k: np.ascontiguousarray(v, dtype=ctx.dtype) for k, v in node.params.items()})
            self._params[key] = hit  # holding the node keeps its id unique
        return hit[1]

    # ---- programs ---------------------------------------------------------------------------------
    def _program(self, requested: tuple[str, ...], fuse: bool, feeds: Mapping[str, np.ndarray],
                 ctx: Ctx) -> _Program:
        key = (requested, fuse, ctx.precision, tuple((k, v.shape) for k, v in feeds.items()))
        with _PROGRAM_LOCK:
            prog = self._programs.get(key)
            if prog is not None:
                self._programs.move_to_end(key)
                return prog
            # sibling convs merge for batch 1 only: with N > 1 their channel slices are not contiguous
            batch1 = all(v.ndim == 0 or v.shape[0] == 1 for v in feeds.values())
            plan = self._plan(requested, fuse, merge=batch1)
            # the layers the outputs need, validated before running (the others need not fit the input)
            shapes = self._shapes_of({k: tuple(v.shape) for k, v in feeds.items()}, plan.needed)
            cost = check_plan(plan.steps, shapes, self.input_names, ctx.dtype.itemsize,
                              "a forward pass keeping every layer" if len(requested) > 1 and
                              len(requested) >= len(self.graph.nodes) else "a forward pass")
            prog = self._compile(plan, shapes, ctx)
            prog.work = cost.work
            self._programs[key] = prog
            while len(self._programs) > _MAX_PROGRAMS:
                self._programs.popitem(last=False)
            return prog

    def _compile(self, plan: _Plan, shapes: Mapping[str, tuple[int, ...]], ctx: Ctx) -> _Program:
        from refnet.ops.core import PREPARE

        prog = _Program()
        slot: dict[str, int] = {}

        def new_slot(t: str) -> int:
            slot[t] = prog.nslots
            prog.nslots += 1
            return slot[t]

        for k in self.input_names:
            prog.feeds.append((k, new_slot(k)))
        # 1. bind every step; identity/split become aliases
        shp = dict(shapes)
        given = {k: shp[k] for k in self.input_names if k in shp}
        op_of: list[str] = []
        entries: list[tuple[Any, list[int], list[int], bool, bool, str, tuple[int, ...]]] = []
        for st in plan.steps:
            node = st.node
            ins = [slot[t] for t in st.inputs]
            if node.op in _ALIAS_OPS and len(ins) == 1:
                for t in st.outputs:
                    slot[t] = ins[0]
                continue
            params = self._node_params(node, ctx) if node.params else {}
            in_shapes = [shp[t] for t in st.inputs]
            if any(t not in shp for t in st.outputs):  # tensors made by the planner (merged convs)
                for t, v in zip(st.outputs, registry.OPS[node.op].shape(node, in_shapes)):
                    shp[t] = _check_size(node.name, t, tuple(int(d) for d in v), given)
            out_shapes = [shp[t] for t in st.outputs]
            fn, takes_out = None, False
            # run-time sized tensors (Faster R-CNN proposals) run unplanned, without buffers
            dyn = any(d < 0 for sh in (*in_shapes, *out_shapes) for d in sh)
            prep = PREPARE.get(node.op) if ctx.fast and not dyn else None
            if prep is not None:
                try:
                    res = prep(node, params, in_shapes, ctx)
                except ShapeError as e:
                    raise e.with_context(layer=node.name, inputs=given) from e
                if res is not None:
                    fn, takes_out = res
            if fn is None:
                fn = _generic(registry.OPS[node.op].run, node, params, ctx, len(st.outputs))
            outs = [new_slot(t) for t in st.outputs]
            entries.append((fn, ins, outs, takes_out, node.op in _FRESH_OPS, node.name, out_shapes[0]))
            op_of.append(node.op)
        for name, tensor in plan.alias.items():
            prog.results[name] = slot[tensor]
        kept = set(prog.results.values()) | {s for _, s in prog.feeds}
        # 2. liveness per slot, alias classes (a non-fresh op's outputs may view its inputs)
        n_entries = len(entries)
        last = [-1] * prog.nslots
        made = [-1] * prog.nslots
        parent = list(range(prog.nslots))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for j, (_, ins, outs, _, fresh, _, _) in enumerate(entries):
            for s in ins:
                last[s] = j
            for s in outs:
                made[s] = j
                if not fresh:
                    for i in ins:
                        parent[find(s)] = find(i)
        cls_end: dict[int, int] = {}
        cls_kept: set[int] = set()
        for s in range(prog.nslots):
            r = find(s)
            end = n_entries if s in kept else max(last[s], made[s])
            cls_end[r] = max(cls_end.get(r, -1), end)
            if s in kept:
                cls_kept.add(r)
        # 3. buffers for the outputs of out-capable steps, reused once their alias class is dead
        free_bufs: dict[tuple, list[int]] = {}
        held: dict[int, list[int]] = {}
        release_at: dict[int, list[int]] = {}
        for j, (fn, ins, outs, takes_out, _, name, out_shape) in enumerate(entries):
            buf = -1
            if takes_out and len(outs) == 1 and find(outs[0]) not in cls_kept:
                s = outs[0]
                key = (out_shape, ctx.dtype.str)
                pool = free_bufs.setdefault(key, [])
                if pool:
                    buf = pool.pop()
                else:
                    buf = len(prog.buffers)
                    prog.buffers.append(np.empty(key[0], dtype=ctx.dtype))
                r = find(s)
                held.setdefault(r, []).append(buf)
                if not held[r][1:]:
                    release_at.setdefault(cls_end[r], []).append(r)
                prog.n_pooled += 1
            frees = tuple(s for s in set(ins) if last[s] == j and s not in kept)
            out1 = outs[0] if len(outs) == 1 else -1
            prog.code.append((fn, tuple(ins), out1, tuple(outs), buf, frees))
            prog.layers.append(name)
            prog.ops.append(op_of[j])
            for r in release_at.pop(j, ()):
                for b in held.pop(r, ()):
                    free_bufs[(prog.buffers[b].shape, ctx.dtype.str)].append(b)
        return prog

    # ---- planning: fusion + liveness -----------------------------------------------------------
    def _plan(self, requested: tuple[str, ...], fuse: bool, merge: bool | None = None) -> _Plan:
        merge = fuse if merge is None else merge and fuse
        key = (requested, fuse, merge)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        keep = frozenset(requested)
        steps: list[_Step] = []
        alias: dict[str, str] = {}
        skip: set[int] = set()
        nodes = self.graph.nodes
        needed = self._needed(requested)
        for i, node in enumerate(nodes):
            if i in skip or i not in needed:
                continue
            if fuse and node.op in ("conv", "deconv", "instance_norm"):
                node, absorbed, out_tensor = self._fuse(i, keep)
                skip.update(absorbed)
                if absorbed:
                    # consumers of the last absorbed node's output read the fused node's result
                    alias[out_tensor] = node.outputs[0]
            inputs = tuple(alias.get(t, t) for t in node.inputs)
            steps.append(_Step(node, inputs, node.outputs))
        if merge:
            steps = _merge_sibling_convs(steps)
        # liveness: drop a tensor after its last reader unless it is requested
        last: dict[str, int] = {}
        for j, st in enumerate(steps):
            for t in st.inputs:
                last[t] = j
        wanted = {alias.get(n, n) for n in keep}
        for j, st in enumerate(steps):
            st.free = tuple(t for t in set(st.inputs) | set(st.outputs)
                            if last.get(t, -1) <= j and t not in wanted and t not in self.input_names)
        plan = _Plan(steps, keep, {n: alias.get(n, n) for n in requested}, frozenset(needed))
        self._plans[key] = plan
        return plan

    def _needed(self, requested: tuple[str, ...]) -> set[int]:
        """Indices of the nodes whose outputs the requested tensors depend on."""
        index = {t: i for i, n in enumerate(self.graph.nodes) for t in n.outputs}
        needed: set[int] = set()
        todo = [index[t] for t in requested if t in index]
        while todo:
            i = todo.pop()
            if i in needed:
                continue
            needed.add(i)
            todo.extend(index[t] for t in self.graph.nodes[i].inputs if t in index)
        return needed

    def _single_consumer(self, tensor: str) -> int | None:
        c = self._consumers.get(tensor, [])
        return c[0] if len(c) == 1 else None

    def _instance_norm_channels(self, node: Node) -> int | None:
        w = node.params.get("weight", node.params.get("bias"))
        if w is not None:
            return int(w.size)
        j = self._single_consumer(node.outputs[0])
        nxt = self.graph.nodes[j] if j is not None else None
        if nxt is not None and nxt.op == "batch_norm":
            return int(nxt.params["mean"].size)
        if nxt is not None and nxt.op == "scale" and "weight" in nxt.params and nxt.params["weight"].size > 1:
            return int(nxt.params["weight"].size)
        return None

    def _fuse(self, i: int, keep: frozenset[str]) -> tuple[Node, list[int], str]:
        """Fold the per-channel affine layers (BatchNorm, Scale, Bias, Power with power 1)
        following node ``i`` (conv, deconv or instance_norm; float32 only) into its weights,
        then fuse a following ReLU / leaky ReLU / PReLU / ReLU6 into it."""
        node = self.graph.nodes[i]
        n_ch = _out_channels(node)
        if n_ch == -1:
            n_ch = self._instance_norm_channels(node)
        if n_ch is None:
            return node, [], node.outputs[0]
        a = np.ones(n_ch)  # the absorbed layers compute a * y + c per channel (float64)
        c = np.zeros(n_ch)
        attrs = dict(node.attrs)
        act_params: dict[str, np.ndarray] = {}
        absorbed: list[int] = []
        cur = node.outputs[0]
        changed = False
        while cur not in keep and len(node.outputs) == 1 and "activation" not in attrs:
            j = self._single_consumer(cur)
            if j is None:
                break
            nxt = self.graph.nodes[j]
            if len(nxt.inputs) != 1 or len(nxt.outputs) != 1:
                break
            affine = _affine_of(nxt, n_ch)
            if affine is not None:
                ka, kc = affine
                a, c = a * ka, c * ka + kc
                changed = True
            elif nxt.op == "relu":
                attrs["activation"] = "relu"
                attrs["negative_slope"] = float(nxt.attrs.get("negative_slope", 0.0))
            elif nxt.op == "prelu" and node.op != "instance_norm" and nxt.params["slope"].size in (1, n_ch):
                attrs["activation"] = "prelu"
                act_params["slope"] = np.broadcast_to(_f64(nxt.params["slope"]), (n_ch,)).astype(np.float32)
            elif (nxt.op == "clip" and node.op != "instance_norm" and float(nxt.attrs.get("min", 0)) == 0.0
                  and float(nxt.attrs.get("max", 6)) == 6.0):
                attrs["activation"] = "relu6"
            else:
                break
            absorbed.append(j)
            cur = nxt.outputs[0]
        if not absorbed:
            return node, [], cur
        params = dict(node.params)
        if changed:
            params = _fold(node, a, c)
        params.update(act_params)
        return Node(node.name, node.op, node.inputs, node.outputs, attrs, params), absorbed, cur


def _run(prog: _Program, feeds: Mapping[str, np.ndarray]) -> list:
    """Run a program under the run lock; heavy ones so that Ctrl-C interrupts them."""
    if prog.work < THREAD_MIN_WORK:
        with _RUN_LOCK, kernels_for(prog):  # small programs: NumPy twins, no numba (runtime/smallnet.py)
            _threads_before_forward()
            return prog.run(feeds)

    def go(hook: Callable) -> list:
        _threads_before_forward()  # numba's thread count is per thread: set it in the one that runs
        return prog.run(feeds, hook)

    return run_interruptibly(go, _RUN_LOCK)


def _check_size(layer: str, tensor: str, shape: tuple[int, ...], inputs: Mapping[str, tuple[int, ...]]
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


def _conv_geometry_key(node: Node) -> tuple | None:
    """What sibling convolutions must share to run as one (None: this conv cannot merge)."""
    a = node.attrs
    w = node.params.get("weight")
    if (node.op != "conv" or w is None or w.ndim != 4 or int(a.get("groups", 1)) != 1 or len(node.outputs) != 1
            or a.get("activation") == "relu6"):
        return None
    return (tuple(w.shape[1:]), tuple(a.get("stride", (1, 1))), tuple(a.get("pad", (0, 0, 0, 0))),
            tuple(a.get("dilation", (1, 1))))


def _slopes(node: Node, n: int) -> np.ndarray:
    """The epilogue of a (fused) conv as per-channel leaky slopes: none = 1, ReLU = its slope."""
    act = node.attrs.get("activation")
    if act == "prelu":
        return np.broadcast_to(_f64(node.params["slope"]), (n,))
    if act == "relu":
        return np.full(n, float(node.attrs.get("negative_slope", 0.0)))
    return np.ones(n)


def _merge_sibling_convs(steps: list[_Step]) -> list[_Step]:
    """Convolutions reading the same tensor with the same kernel geometry (e.g. SSD's loc/conf
    heads, an inception block's 1x1 convs) run as one convolution over the concatenated
    output channels -- the input is read (im2col'd, transformed) once and the GEMM is
    wider -- followed by a slice into the original tensors (views). Their activations become
    per-channel slopes (none = 1, ReLU = 0, leaky / PReLU = theirs)."""
    groups: dict[tuple, list[int]] = {}
    for j, st in enumerate(steps):
        key = _conv_geometry_key(st.node)
        if key is not None:
            groups.setdefault((st.inputs[0],) + key, []).append(j)
    merged: dict[int, list[_Step]] = {}
    drop: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        nodes = [steps[j].node for j in members]
        sizes = [int(n.params["weight"].shape[0]) for n in nodes]
        weight = np.concatenate([np.asarray(n.params["weight"], np.float32) for n in nodes], axis=0)
        bias = np.concatenate([np.asarray(n.params["bias"], np.float32).reshape(-1) if "bias" in n.params
                               else np.zeros(k, np.float32) for n, k in zip(nodes, sizes)])
        slopes = np.concatenate([_slopes(n, k) for n, k in zip(nodes, sizes)])
        attrs = {k: v for k, v in nodes[0].attrs.items() if k not in ("activation", "negative_slope")}
        params = {"weight": weight, "bias": bias}
        if not np.all(slopes == 1.0):
            attrs["activation"] = "prelu"
            params["slope"] = slopes.astype(np.float32)
        name = "+".join(n.name for n in nodes)
        tensor = name + ":merged"
        conv = Node(name, "conv", (steps[members[0]].inputs[0],), (tensor,), attrs, params)
        points = tuple(int(v) for v in np.cumsum(sizes)[:-1])
        outs = tuple(n.outputs[0] for n in nodes)
        split = Node(name + ":split", "slice", (tensor,), outs, {"axis": 1, "points": points})
        merged[members[0]] = [_Step(conv, conv.inputs, conv.outputs), _Step(split, (tensor,), outs)]
        drop.update(members[1:])
    if not merged:
        return steps
    out: list[_Step] = []
    for j, st in enumerate(steps):
        if j in merged:
            out.extend(merged[j])
        elif j not in drop:
            out.append(st)
    return out


def _generic(run: Callable, node: Node, params: dict, ctx: Ctx, n_out: int) -> Callable:
    """A step calling the op's registered run function (a list of inputs -> its outputs)."""
    if n_out == 1:
        def step(*xs):
            out = run(node, list(xs), params, ctx)
            return out if isinstance(out, np.ndarray) else out[0]
    else:
        def step(*xs):
            out = run(node, list(xs), params, ctx)
            return [out] if isinstance(out, np.ndarray) else out
    return step


def _out_channels(node: Node) -> int | None:
    w = node.params.get("weight")
    if node.op == "conv" and w is not None and w.ndim == 4:
        return int(w.shape[0])
    if node.op == "deconv" and w is not None and w.ndim == 4:
        return int(w.shape[1]) * int(node.attrs.get("groups", 1))
    if node.op == "instance_norm":
        return -1  # known from its own weight or the next layer's parameters (see Net._fuse)
    return None


def _f64(v: np.ndarray | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=np.float64).reshape(-1)


def _affine_of(node: Node, n_ch: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, c) with node(y) = a * y + c per channel, when ``node`` is such a layer, else None."""
    p = node.params
    if node.op == "batch_norm":
        mean, var = _f64(p["mean"]), _f64(p["var"])
        if mean.size != n_ch or var.size != n_ch:
            return None
        a = 1.0 / np.sqrt(var + float(node.attrs.get("eps", 1e-5)))
        g, bt = _f64(p.get("weight")), _f64(p.get("bias"))
        if g is not None:
            a = a * g
        c = -mean * a + (bt if bt is not None else 0.0)
        return a, c
    if node.op == "scale" and int(node.attrs.get("axis", 1)) == 1 and "weight" in p:
        g, bt = _f64(p["weight"]), _f64(p.get("bias"))
        if g.size not in (1, n_ch) or (bt is not None and bt.size not in (1, n_ch)):
            return None
        return (np.broadcast_to(g, (n_ch,)).copy(),
                np.broadcast_to(bt if bt is not None else 0.0, (n_ch,)).copy())
    if node.op == "bias" and int(node.attrs.get("axis", 1)) == 1 and "bias" in p:
        bt = _f64(p["bias"])
        if bt.size not in (1, n_ch):
            return None
        return np.ones(n_ch), np.broadcast_to(bt, (n_ch,)).copy()
    if node.op == "power" and float(node.attrs.get("power", 1.0)) == 1.0:
        k, s = float(node.attrs.get("scale", 1.0)), float(node.attrs.get("shift", 0.0))
        return np.full(n_ch, k), np.full(n_ch, s)
    return None


def _fold(node: Node, a: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """New float32 params of ``node`` followed by the per-channel affine ``a * y + c``."""
    p = node.params
    params = {k: v for k, v in p.items() if k not in ("weight", "bias")}
    b = _f64(p.get("bias"))
    b = np.zeros(a.size) if b is None else b
    if node.op == "instance_norm":
        g = _f64(p.get("weight"))
        g = np.ones(a.size) if g is None else g
        params["weight"] = (g * a).astype(np.float32)
        params["bias"] = (b * a + c).astype(np.float32)
        return params
    w = np.asarray(p["weight"], dtype=np.float64)
    if node.op == "conv":
        w = w * a.reshape(-1, 1, 1, 1)
    else:  # deconv: weight (C_in, C_out / g, kh, kw), output channel gi * cog + j
        g = int(node.attrs.get("groups", 1))
        ci, cog = w.shape[:2]
        w = (w.reshape(g, ci // g, cog, *w.shape[2:]) * a.reshape(g, 1, cog, 1, 1)).reshape(w.shape)
    params["weight"] = np.ascontiguousarray(w, dtype=np.float32)
    params["bias"] = (b * a + c).astype(np.float32)
    return params


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
    ".onnx": "onnx",
}


def load_onnx(path: str | os.PathLike, *, quirks: str = "none",
              input_shapes: Mapping[str, Sequence[int]] | Sequence[int] | None = None) -> Net:
    """Load an ONNX model with refnet's own reader (no onnx package needed). The graph is built
    for fixed input shapes: the declared ones, or ``input_shapes`` (required for symbolic dims)."""
    from refnet.weights_import.onnx import read_onnx

    return Net(read_onnx(path, quirks=_check_quirks(quirks), input_shapes=input_shapes), ("onnx", (path,)))


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
    if "onnx" in kinds:
        return load_onnx(kinds["onnx"], quirks=quirks, **kwargs)
    if "darknet_cfg" in kinds:
        return load_darknet(kinds["darknet_cfg"], kinds.get("darknet_weights"), quirks=quirks)
    raise ModelFormatError("no model definition among the files", file=", ".join(map(str, paths)),
                           expected=".prototxt/.caffemodel, .t7/.net, .cfg or .onnx")

