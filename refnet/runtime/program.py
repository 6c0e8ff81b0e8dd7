"""Compiled programs: a :class:`~refnet.runtime.plan.Plan` bound for fixed input shapes and a
precision, and the one loop that runs it.

:func:`compile_program` turns every step into a callable with its arguments bound (the fast ops
are planned by their op's float32 planner: weights laid out, algorithm chosen); tensors live
in numbered slots and are dropped after their last reader; identity/split layers are aliases
(no step, the output names the input's slot); the outputs of out-capable steps go to buffers
preallocated per shape and reused once every tensor that may view them is dead (requested
outputs always get fresh arrays). The per-layer overhead of the loop is about a microsecond.

:meth:`Program.steps` is that loop, one step at a time (a generator): :meth:`Program.run`
drains it (``Net.forward``, ``trace``, ``profile``, the backward tape) and
:func:`refnet.crosscheck.local.stream_trace` consumes it layer by layer.

Forward passes are serialised by :data:`RUN_LOCK`, a process-wide lock: the preallocated
buffers belong to the program, and numba's workqueue threading layer must not be entered from
two threads at once (kernels called directly take refnet.kernels._jit's PARALLEL_LOCK for the
same reason). :func:`run_program` takes it, sets the thread counts (refnet.runtime.threads) and
runs heavy programs through :func:`refnet.runtime.interrupt.run_interruptibly` (Ctrl-C works).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from refnet.errors import ShapeError
from refnet.graph import Node
from refnet.ops import registry
from refnet.ops.registry import Ctx
from refnet.runtime.interrupt import THREAD_MIN_WORK, run_interruptibly
from refnet.runtime.plan import Plan, check_size
from refnet.runtime.smallnet import kernels_for
from refnet.runtime.threads import before_forward

__all__ = ["Program", "compile_program", "run_program", "RUN_LOCK"]

RUN_LOCK = threading.RLock()


class Program:
    """A plan compiled for fixed input shapes and a precision: bound steps over numbered tensor
    slots (see the module docstring)."""

    __slots__ = ("code", "frees", "nslots", "feeds", "input_shapes", "results", "buffers", "layers", "ops",
                 "n_pooled", "work")

    def __init__(self) -> None:
        self.code: list[tuple] = []  # (fn, input slots, output slot | -1, output slots, buffer | -1)
        self.frees: list[tuple[int, ...]] = []  # per step: slots no later step reads (requested ones kept)
        self.nslots = 0
        self.feeds: list[tuple[str, int]] = []  # net input -> slot
        self.input_shapes: dict[str, tuple[int, ...]] = {}  # what the program was compiled for (errors)
        self.results: dict[str, int] = {}  # requested name -> slot
        self.buffers: list[np.ndarray] = []
        self.layers: list[str] = []  # layer name per step (error messages, profiling)
        self.ops: list[str] = []  # op per step
        self.n_pooled = 0
        self.work = 0  # MACs of one run (refnet.runtime.budget), decides the interruptible path

    def start(self, feeds: Mapping[str, np.ndarray]) -> list:
        """The slot list of a new run, holding the net inputs."""
        regs: list = [None] * self.nslots
        for name, s in self.feeds:
            regs[s] = feeds[name]
        return regs

    def steps(self, regs: list, frees: Sequence[tuple[int, ...]] | None = None) -> Iterator[int]:
        """Run the program over the slot list ``regs`` (from :meth:`start`) one step at a time:
        after step ``j`` has written its outputs into ``regs``, yield ``j``; on resuming, drop the
        slots ``frees[j]`` (default :attr:`frees`) and go on. The caller holds RUN_LOCK while the
        generator runs (around the whole loop, or around each resumption)."""
        bufs = self.buffers
        frees = self.frees if frees is None else frees
        j = 0
        try:
            for j, (fn, ins, out1, outs, buf) in enumerate(self.code):  # noqa: B007 (j: errors)
                if buf >= 0:
                    r = fn(*[regs[i] for i in ins], out=bufs[buf])
                else:
                    r = fn(*[regs[i] for i in ins])
                if out1 >= 0:
                    regs[out1] = r
                else:
                    for s, v in zip(outs, r):
                        regs[s] = v
                yield j
                for s in frees[j]:
                    regs[s] = None
        except ShapeError as e:
            raise e.with_context(layer=self.layers[j] if self.layers else None, inputs=self.input_shapes) from e

    def run(self, feeds: Mapping[str, np.ndarray], between: Callable[[int], Any] | None = None) -> list:
        """All steps (``between(j)`` after each, e.g. to stop on Ctrl-C); the slot list at the end."""
        regs = self.start(feeds)
        if between is None:
            for _ in self.steps(regs):
                pass
        else:
            for j in self.steps(regs):
                between(j)
        return regs

    def frees_after_last_read(self) -> list[tuple[int, ...]]:
        """Per step, the slots it reads or writes that no later step reads, requested ones included
        (for a consumer that takes each result as it comes, :meth:`steps`)."""
        last: dict[int, int] = {}
        for j, (_, ins, _, _, _) in enumerate(self.code):
            for s in ins:
                last[s] = j
        return [tuple(s for s in set(ins) | set(outs) if last.get(s, -1) <= j)
                for j, (_, ins, _, outs, _) in enumerate(self.code)]

    def unpooled(self) -> Program:
        """This program with every step writing a new array (no shared buffers): results that
        outlive the run (out-capable steps accept no ``out`` too)."""
        if all(c[4] < 0 for c in self.code):
            return self
        other = Program()
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.code = [(fn, ins, out1, outs, -1) for fn, ins, out1, outs, _ in self.code]
        return other


def run_program(prog: Program, feeds: Mapping[str, np.ndarray]) -> list:
    """Run a program under the run lock; heavy ones so that Ctrl-C interrupts them."""
    if prog.work < THREAD_MIN_WORK:
        with RUN_LOCK, kernels_for(prog):  # small programs: NumPy twins, no numba (runtime/smallnet.py)
            before_forward(work=prog.work)
            return prog.run(feeds)

    def go(hook: Callable | None) -> list:
        before_forward(work=prog.work)  # numba's thread count is per thread: set it in the one that runs
        return prog.run(feeds, hook)

    return run_interruptibly(go, RUN_LOCK)


# ---- compiling -----------------------------------------------------------------------------------
class _Entry:
    """A bound step before slots get buffers and frees."""

    __slots__ = ("fn", "ins", "outs", "takes_out", "fresh", "layer", "op", "out_shape")

    def __init__(self, fn: Callable, ins: list[int], outs: list[int], takes_out: bool, node: Node,
                 out_shape: tuple[int, ...]) -> None:
        self.fn, self.ins, self.outs, self.takes_out = fn, ins, outs, takes_out
        self.fresh = registry.OPS[node.op].fresh  # outputs never share memory with inputs
        self.layer, self.op, self.out_shape = node.name, node.op, out_shape


def compile_program(plan: Plan, shapes: Mapping[str, tuple[int, ...]], ctx: Ctx, input_names: Sequence[str],
                    params_of: Callable[[Node, Ctx], dict[str, np.ndarray]]) -> Program:
    """``plan`` bound for these tensor ``shapes`` (the plan's, for fixed input shapes) and ``ctx``'s
    precision; ``params_of(node, ctx)`` gives a node's params in the run dtype (cached by the Net)."""
    prog = Program()
    slot: dict[str, int] = {}
    for k in input_names:
        slot[k] = prog.nslots
        prog.feeds.append((k, prog.nslots))
        prog.nslots += 1
    prog.input_shapes = {k: shapes[k] for k in input_names if k in shapes}
    entries = _bind(prog, plan, dict(shapes), ctx, slot, params_of)
    for name, tensor in plan.alias.items():
        prog.results[name] = slot[tensor]
    kept = set(prog.results.values()) | {s for _, s in prog.feeds}
    find, last, cls_end, cls_kept = _alias_classes(entries, prog.nslots, kept)
    _assign_buffers(prog, entries, ctx, find, last, cls_end, cls_kept, kept)
    return prog


def _bind(prog: Program, plan: Plan, shp: dict[str, tuple[int, ...]], ctx: Ctx, slot: dict[str, int],
          params_of: Callable[[Node, Ctx], dict[str, np.ndarray]]) -> list[_Entry]:
    """Bind every step of the plan (identity/split become aliases: ``slot`` maps their outputs to
    their input's slot); new slots for every other output."""
    given = prog.input_shapes
    entries: list[_Entry] = []
    for st in plan.steps:
        node = st.node
        spec = registry.OPS[node.op]
        ins = [slot[t] for t in st.inputs]
        if spec.alias and len(ins) == 1:  # outputs *are* the input
            for t in st.outputs:
                slot[t] = ins[0]
            continue
        params = params_of(node, ctx) if node.params else {}
        in_shapes = [shp[t] for t in st.inputs]
        if any(t not in shp for t in st.outputs):  # tensors made by the planner (merged convs)
            for t, v in zip(st.outputs, spec.shape(node, in_shapes)):
                shp[t] = check_size(node.name, t, tuple(int(d) for d in v), given)
        out_shapes = [shp[t] for t in st.outputs]
        fn, takes_out = None, False
        # run-time sized tensors (Faster R-CNN proposals) run unplanned, without buffers
        dyn = any(d < 0 for sh in (*in_shapes, *out_shapes) for d in sh)
        # the op's float32 planner: (node, params, input shapes, ctx) -> (fn, takes_out) | None
        prep = spec.prepare if ctx.fast and not dyn else None
        if prep is not None:
            try:
                res = prep(node, params, in_shapes, ctx)
            except ShapeError as e:
                raise e.with_context(layer=node.name, inputs=given) from e
            if res is not None:
                fn, takes_out = res
        if fn is None:
            fn = _generic(spec.run, node, params, ctx, len(st.outputs))
        outs = []
        for t in st.outputs:
            slot[t] = prog.nslots
            outs.append(prog.nslots)
            prog.nslots += 1
        entries.append(_Entry(fn, ins, outs, takes_out, node, out_shapes[0]))
    return entries


def _alias_classes(entries: list[_Entry], nslots: int, kept: set[int]
                   ) -> tuple[Callable[[int], int], list[int], dict[int, int], set[int]]:
    """Liveness per slot and alias classes (a non-fresh op's outputs may view its inputs): the
    class finder, each slot's last reading step, the step after which each class is dead (past
    the end for kept slots) and the classes holding a kept slot."""
    last = [-1] * nslots
    made = [-1] * nslots
    parent = list(range(nslots))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for j, e in enumerate(entries):
        for s in e.ins:
            last[s] = j
        for s in e.outs:
            made[s] = j
            if not e.fresh:
                for i in e.ins:
                    parent[find(s)] = find(i)
    cls_end: dict[int, int] = {}
    cls_kept: set[int] = set()
    for s in range(nslots):
        r = find(s)
        end = len(entries) if s in kept else max(last[s], made[s])
        cls_end[r] = max(cls_end.get(r, -1), end)
        if s in kept:
            cls_kept.add(r)
    return find, last, cls_end, cls_kept


def _assign_buffers(prog: Program, entries: list[_Entry], ctx: Ctx, find: Callable[[int], int], last: list[int],
                    cls_end: dict[int, int], cls_kept: set[int], kept: set[int]) -> None:
    """Emit the code: buffers for the outputs of out-capable steps (none for a class holding a
    kept slot), each back in its pool once its alias class is dead; frees after last reads."""
    free_bufs: dict[tuple, list[int]] = {}
    held: dict[int, list[int]] = {}
    release_at: dict[int, list[int]] = {}
    for j, e in enumerate(entries):
        buf = -1
        if e.takes_out and len(e.outs) == 1 and find(e.outs[0]) not in cls_kept:
            key = (e.out_shape, ctx.dtype.str)
            pool = free_bufs.setdefault(key, [])
            if pool:
                buf = pool.pop()
            else:
                buf = len(prog.buffers)
                prog.buffers.append(np.empty(key[0], dtype=ctx.dtype))
            r = find(e.outs[0])
            held.setdefault(r, []).append(buf)
            if not held[r][1:]:
                release_at.setdefault(cls_end[r], []).append(r)
            prog.n_pooled += 1
        out1 = e.outs[0] if len(e.outs) == 1 else -1
        prog.code.append((e.fn, tuple(e.ins), out1, tuple(e.outs), buf))
        prog.frees.append(tuple(s for s in set(e.ins) if last[s] == j and s not in kept))
        prog.layers.append(e.layer)
        prog.ops.append(e.op)
        for r in release_at.pop(j, ()):
            for b in held.pop(r, ()):
                free_bufs[(prog.buffers[b].shape, ctx.dtype.str)].append(b)


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
