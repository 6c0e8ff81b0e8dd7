"""Compiled programs: a :class:`~refnet.runtime.plan.Plan` bound for fixed input shapes and a
precision, and the one loop that runs it.

:func:`compile_program` turns every step into a callable with its arguments bound (the fast ops
are planned by their op's float32 planner: weights laid out, algorithm chosen); tensors live
in numbered slots and are dropped after their last reader; identity/split layers are aliases
(no step, the output names the input's slot); the outputs of out-capable steps go to
preallocated buffers, views of one arena at offsets planned from their lifetimes (a buffer's
memory is reused once every tensor that may view it is dead, :func:`_arena`; requested outputs
always get fresh arrays). A convolution whose only reader is a channel concatenation
writes straight into its slice of the concat's buffer (batch 1, :func:`_concat_into`; the concat step then
copies only its other inputs: SqueezeNet's fire modules, GoogLeNet's inception branches; a
batch-1 channel concat with no such producer copies every input into its arena buffer); so
does a permute read, through a flatten, only by a concat (SSD's heads). Steps whose outputs
depend only on shapes and constants (SSD's PriorBox and the concat of the priors) run once,
when the program is compiled (:func:`_fold_constants`, :attr:`Program.consts`). The
per-layer overhead of the loop is about a microsecond (yufacedetectnet v2: 26 us for 55 no-op
steps).

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

import math
import os
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

__all__ = ["Program", "compile_program", "run_program", "RUN_LOCK", "CONCAT_INTO"]

RUN_LOCK = threading.RLock()

#: convolutions write into their slice of the concat reading them (:func:`_concat_into`); read when
#: a program is compiled. ``REFNET_CONCAT_INTO=0``: every concat copies its inputs (A/B switch)
CONCAT_INTO = os.environ.get("REFNET_CONCAT_INTO", "1") != "0"
#: steps whose outputs depend only on shapes and constants (SSD's PriorBox and the concat of the
#: priors) are computed when the program is compiled (:func:`_fold_constants`); ``REFNET_FOLD=0``:
#: every step runs on every pass (A/B switch)
FOLD = os.environ.get("REFNET_FOLD", "1") != "0"
#: ops whose outputs depend on their inputs' shapes only (and their attributes)
_SHAPE_ONLY_OPS = ("prior_box",)
#: the buffers of a program are views of one array at liveness-planned offsets (:func:`_arena`);
#: ``REFNET_ARENA=0``: one array per shape and lifetime (A/B switch)
ARENA = os.environ.get("REFNET_ARENA", "1") != "0"
_ALIGN = 64  # bytes: buffers in the arena start on cache lines
_INTO_OPS = ("conv", "permute")  # ops whose planned step writes its whole output into ``out`` and returns it
_RESHAPE_OPS = ("flatten", "reshape")  # planned as a reshape: a view of a contiguous input


class Program:
    """A plan compiled for fixed input shapes and a precision: bound steps over numbered tensor
    slots (see the module docstring)."""

    __slots__ = ("code", "frees", "nslots", "feeds", "consts", "input_shapes", "results", "buffers", "layers",
                 "ops", "n_pooled", "work", "peak")

    def __init__(self) -> None:
        self.code: list[tuple] = []  # (fn, input slots, output slot | -1, output slots, buffer | -1)
        self.frees: list[tuple[int, ...]] = []  # per step: slots no later step reads (requested ones kept)
        self.nslots = 0
        self.feeds: list[tuple[str, int]] = []  # net input -> slot
        self.consts: list[tuple[int, np.ndarray]] = []  # slot -> its value, computed at compile time
        self.input_shapes: dict[str, tuple[int, ...]] = {}  # what the program was compiled for (errors)
        self.results: dict[str, int] = {}  # requested name -> slot
        self.buffers: list[np.ndarray] = []
        self.layers: list[str] = []  # layer name per step (error messages, profiling)
        self.ops: list[str] = []  # op per step
        self.n_pooled = 0
        self.work = 0  # MACs of one run (refnet.runtime.budget), decides the interruptible path
        self.peak = 0  # estimated peak bytes of one run (refnet.runtime.budget.check_plan)

    def start(self, feeds: Mapping[str, np.ndarray]) -> list:
        """The slot list of a new run, holding the net inputs."""
        regs: list = [None] * self.nslots
        for name, s in self.feeds:
            regs[s] = feeds[name]
        for s, v in self.consts:
            regs[s] = v
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
                # (most steps have one input: no argument list built; SqueezeNet's 38 steps as no-ops
                # 17 -> 9 us a pass)
                if len(ins) == 1:
                    r = fn(regs[ins[0]], out=bufs[buf]) if buf >= 0 else fn(regs[ins[0]])
                elif buf >= 0:
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
        with RUN_LOCK, kernels_for(prog):  # small programs: NumPy twins at first (runtime/smallnet.py)
            before_forward(work=prog.work)
            return prog.run(feeds)

    def go(hook: Callable | None) -> list:
        before_forward(work=prog.work)  # numba's thread count is per thread: set it in the one that runs
        return prog.run(feeds, hook)

    return run_interruptibly(go, RUN_LOCK)


# ---- compiling -----------------------------------------------------------------------------------
class _Entry:
    """A bound step before slots get buffers and frees."""

    __slots__ = ("fn", "ins", "outs", "takes_out", "fresh", "layer", "op", "out_shape", "node", "in_shapes")

    def __init__(self, fn: Callable, ins: list[int], outs: list[int], takes_out: bool, node: Node,
                 out_shape: tuple[int, ...], in_shapes: list[tuple[int, ...]]) -> None:
        self.fn, self.ins, self.outs, self.takes_out = fn, ins, outs, takes_out
        self.fresh = registry.OPS[node.op].fresh  # outputs never share memory with inputs
        self.layer, self.op, self.out_shape = node.name, node.op, out_shape
        self.node, self.in_shapes = node, in_shapes


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
    if FOLD and ctx.fast:
        entries = _fold_constants(prog, entries, ctx, kept)
    if ctx.fast:
        entries = _conv_pools(entries, kept)
        entries = _gap_softmax(entries, kept)
        _lean_convs(entries)
    find, last, cls_end, cls_kept = _alias_classes(entries, prog.nslots, kept)
    into = _concat_into(entries, kept, lambda s: find(s) in cls_kept) if CONCAT_INTO and ctx.fast else {}
    _assign_buffers(prog, entries, ctx, find, last, cls_end, cls_kept, kept, into)
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
        if dyn:
            fn = _budgeted(fn, spec, node, ctx.dtype.itemsize)
        outs = []
        for t in st.outputs:
            slot[t] = prog.nslots
            outs.append(prog.nslots)
            prog.nslots += 1
        entries.append(_Entry(fn, ins, outs, takes_out, node, out_shapes[0], in_shapes))
    return entries


def _fold_constants(prog: Program, entries: list[_Entry], ctx: Ctx, kept: set[int]) -> list[_Entry]:
    """The entries left after computing, once, every step whose outputs depend only on input
    shapes (:data:`_SHAPE_ONLY_OPS`, run on zero-stride dummies of those shapes) or on outputs
    of such steps (SSD's concat of the priors); their values go to :attr:`Program.consts`
    (loaded into their slots by :meth:`Program.start`). A step whose output is kept, or may be
    viewed by a kept tensor, runs as before: the caller gets a fresh array every run."""
    exposed = set(kept)  # kept slots and the slots they may view (through non-fresh steps)
    for e in reversed(entries):
        if not e.fresh and any(s in exposed for s in e.outs):
            exposed.update(e.ins)
    const: dict[int, np.ndarray] = {}
    rest: list[_Entry] = []
    for e in entries:
        fixed = all(d >= 0 for sh in (*e.in_shapes, e.out_shape) for d in sh)
        if fixed and (e.op in _SHAPE_ONLY_OPS or (e.ins and all(s in const for s in e.ins))) \
                and not any(s in exposed for s in e.outs):
            xs = [const[s] if s in const else np.broadcast_to(np.zeros((), ctx.dtype), sh)
                  for s, sh in zip(e.ins, e.in_shapes)]
            r = e.fn(*xs)
            for s, v in zip(e.outs, [r] if len(e.outs) == 1 else r):
                const[s] = np.array(v)  # an array of its own (a view would keep its base alive)
            continue
        rest.append(e)
    read = {s for e in rest for s in e.ins}
    prog.consts = [(s, v) for s, v in const.items() if s in read]
    return rest


def _lean_convs(entries: list[_Entry]) -> None:
    """Conv steps whose plan has a lean one-thread path call it directly (no argument checks or
    ``np.errstate`` per call: :mod:`refnet.kernels._leanconv`; ``REFNET_LEAN_CONV=0``: the plans)."""
    from refnet.kernels import _leanconv

    if not _leanconv.enabled():
        return
    for e in entries:
        if e.op == "conv" and e.takes_out and hasattr(e.fn, "algorithm"):
            e.fn = _leanconv.lean_step(e.fn) or e.fn


def _readers_makers(entries: list[_Entry]) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Per slot, the steps reading it (in order, a step once per input position) and the step making it."""
    readers: dict[int, list[int]] = {}
    maker: dict[int, int] = {}
    for j, e in enumerate(entries):
        for s in e.ins:
            readers.setdefault(s, []).append(j)
        for s in e.outs:
            maker[s] = j
    return readers, maker


def _through_reshapes(s: int, entries: list[_Entry], readers: dict[int, list[int]], maker: dict[int, int],
                      kept: set[int]) -> tuple[int, int | None, list[int]]:
    """From slot ``s`` back through the reshape (flatten) steps making it, while each slot passed
    is read by one step only and not kept: the slot reached, the step making it (None: a net
    input or a constant) and the reshape steps passed, nearest first."""
    chain: list[int] = []
    p = maker.get(s)
    while p is not None and entries[p].op in _RESHAPE_OPS and len(readers[s]) == 1 and s not in kept:
        chain.append(p)
        s = entries[p].ins[0]
        p = maker.get(s)
    return s, p, chain


def _conv_pools(entries: list[_Entry], kept: set[int]) -> list[_Entry]:
    """A "direct_cin" conv step whose output only a padded 3x3 / stride 2 max pool step reads
    (ResNet-50's conv1 and pool; :func:`refnet.kernels._direct.pool_fits`) becomes one step
    computing the pool's output
    (:func:`refnet.kernels._leanconv.conv_pool_step`: the conv map is never written out); the
    step keeps the conv's layer name (a profile lists the pool's time under it).
    ``REFNET_DIRECT_POOL=0`` (refnet.kernels._direct.POOL): two steps."""
    from refnet.kernels import _direct, _leanconv

    if not _direct.POOL or not _leanconv.enabled():
        return entries
    readers, _ = _readers_makers(entries)
    drop: set[int] = set()
    for e in entries:
        if e.op != "conv" or not e.takes_out or len(e.outs) != 1 or e.outs[0] in kept \
                or getattr(e.fn, "algorithm", None) != "direct_cin" or len(readers.get(e.outs[0], ())) != 1:
            continue
        j = readers[e.outs[0]][0]
        p = entries[j]
        if p.op != "pool_nd" or not p.takes_out or len(p.outs) != 1 or p.ins != [e.outs[0]]:
            continue
        a = registry.attrs(p.node)
        if a["mode"] != "max":
            continue
        step = _leanconv.conv_pool_step(e.fn, p.fn, a["kernel"], a["strides"], a["dilations"], a["pads"], a["out"])
        if step is None:
            continue
        e.fn, e.outs, e.out_shape = step, p.outs, p.out_shape
        drop.add(j)
    return [e for j, e in enumerate(entries) if j not in drop]


def _gap_softmax(entries: list[_Entry], kept: set[int]) -> list[_Entry]:
    """A global average pool step read only, through flatten / reshape steps, by a one-row
    softmax (a classifier's tail: SqueezeNet) becomes one step under the softmax's name
    (:func:`refnet.kernels.window.gap_softmax_step`; its fallback runs the steps it replaced).
    ``REFNET_GAP_SOFTMAX=0``: the separate steps."""
    from refnet import kernels as K
    from refnet.kernels import window

    if not window.GAP_SOFTMAX:
        return entries
    readers, maker = _readers_makers(entries)
    drop: set[int] = set()
    for e in entries:
        if e.op != "softmax" or len(e.ins) != 1 or len(e.outs) != 1 or \
                K.softmax_step(tuple(e.in_shapes[0]), np.dtype(np.float32), registry.attrs(e.node)["axis"]) is None:
            continue
        s, p, chain = _through_reshapes(e.ins[0], entries, readers, maker, kept)
        if p is None or len(readers[s]) != 1 or s in kept or not _global_average(entries[p]):
            continue
        g = entries[p]
        fns = [g.fn] + [entries[k].fn for k in reversed(chain)] + [e.fn]

        def plain(x: np.ndarray, fns: list[Callable] = fns) -> np.ndarray:
            for f in fns:
                x = f(x)
            return x

        step = window.gap_softmax_step(g.in_shapes[0], np.dtype(np.float32), e.out_shape, plain)
        if step is None:
            continue
        e.fn, e.ins, e.in_shapes = step, list(g.ins), list(g.in_shapes)
        drop.update([p, *chain])
    return [e for j, e in enumerate(entries) if j not in drop]


def _global_average(e: _Entry) -> bool:
    """Whether ``e`` is a pool_nd step averaging each whole plane of a 4-D input into one value."""
    if e.op != "pool_nd" or len(e.outs) != 1 or len(e.ins) != 1 or len(e.in_shapes[0]) != 4:
        return False
    a = registry.attrs(e.node)
    pads = a["pads"]
    return (a["mode"] == "avg" and tuple(int(v) for v in a["kernel"]) == tuple(e.in_shapes[0][2:])
            and not any(int(v) for v in pads) and tuple(int(v) for v in a["dilations"]) == (1, 1)
            and tuple(int(v) for v in a["out"]) == (1, 1))


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
                    cls_end: dict[int, int], cls_kept: set[int], kept: set[int],
                    into: dict[int, tuple[int, int, int]]) -> None:
    """Emit the code: a buffer for the output of every out-capable step (none for a class holding
    a kept slot), live from that step until its alias class is dead; frees after last reads.
    ``into`` (producer step -> (concat step, first channel, end channel), :func:`_concat_into`):
    the concat's buffer is taken at its first producer and each producer writes into a view of it.
    The buffers' memory: :func:`_arena` (or, without ARENA, one array per shape and lifetime)."""
    blocks: list[tuple[tuple[int, ...], int, int]] = []  # (shape, first step, last step) per buffer
    views: dict[int, tuple[int, int, int, tuple[int, ...]]] = {}  # buffer -> (concat's buffer, c0, c1, shape)
    whole: dict[int, int] = {}  # concat step -> its buffer, once its first producer ran

    def take(e: _Entry, j: int) -> int:
        blocks.append((tuple(e.out_shape), j, cls_end[find(e.outs[0])]))
        return len(blocks) - 1

    for j, e in enumerate(entries):
        buf = -1
        if j in into:
            cj, c0, c1 = into[j]
            if cj not in whole:
                whole[cj] = take(entries[cj], j)
            buf = len(blocks)
            blocks.append(((), j, j))  # a view: the concat's buffer holds the memory
            views[buf] = (whole[cj], c0, c1, tuple(e.out_shape))
            prog.n_pooled += 1
        elif j in whole:
            buf = whole[j]
        elif e.takes_out and len(e.outs) == 1 and find(e.outs[0]) not in cls_kept:
            buf = take(e, j)
            prog.n_pooled += 1
        out1 = e.outs[0] if len(e.outs) == 1 else -1
        prog.code.append((e.fn, tuple(e.ins), out1, tuple(e.outs), buf))
        prog.frees.append(tuple(s for s in set(e.ins) if last[s] == j and s not in kept))
        prog.layers.append(e.layer)
        prog.ops.append(e.op)
    owned = [b for b in range(len(blocks)) if b not in views]
    arrays = (_arena if ARENA else _per_shape)([blocks[b] for b in owned], ctx.dtype)
    prog.buffers = [np.empty(0, ctx.dtype)] * len(blocks)
    for b, a in zip(owned, arrays):
        prog.buffers[b] = a
    for b, (w, c0, c1, shape) in views.items():  # a batch of one: the span is contiguous, its reshape a view
        prog.buffers[b] = prog.buffers[w][:, c0:c1].reshape(shape)


def _per_shape(blocks: list[tuple[tuple[int, ...], int, int]], dtype: np.dtype) -> list[np.ndarray]:
    """One array per block, shared by blocks of the same shape whose lifetimes do not overlap
    (a dead block's array is reused by the next block of its shape)."""
    pools: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    out = []
    for shape, start, end in blocks:  # in order of first step
        pool = pools.setdefault(shape, [])
        free = next((i for i, (e, _) in enumerate(pool) if e < start), None)
        a = np.empty(shape, dtype) if free is None else pool.pop(free)[1]
        pool.append((end, a))
        out.append(a)
    return out


def _arena(blocks: list[tuple[tuple[int, ...], int, int]], dtype: np.dtype) -> list[np.ndarray]:
    """Views of one array (the arena) for the blocks, at offsets that never overlap two blocks
    alive at the same step: each block at the lowest offset (64-byte aligned) free during its
    lifetime, so a step's output goes where a recently dead tensor was (still in cache), and
    the memory of a forward is about its peak of live tensors, not the sum over shapes."""
    item = np.dtype(dtype).itemsize
    sizes = [-(-math.prod(sh) * item // _ALIGN) * _ALIGN for sh, _, _ in blocks]
    offsets = [0] * len(blocks)
    live: list[tuple[int, int, int]] = []  # (offset, size, last step), by offset
    top = 0
    for b, (_, start, end) in enumerate(blocks):  # in order of first step
        live = [blk for blk in live if blk[2] >= start]
        off = 0
        for lo, size, _ in live:
            if lo - off >= sizes[b]:
                break
            off = max(off, lo + size)
        offsets[b] = off
        live.append((off, sizes[b], end))
        live.sort()
        top = max(top, off + sizes[b])
    raw = np.empty(top + _ALIGN, np.uint8)
    base = -raw.ctypes.data % _ALIGN
    return [raw[base + o: base + o + math.prod(sh) * item].view(dtype).reshape(sh)
            for o, (sh, _, _) in zip(offsets, blocks)]


def _concat_into(entries: list[_Entry], kept: set[int], kept_class: Callable[[int], bool]
                 ) -> dict[int, tuple[int, int, int]]:
    """Convolutions and permutes writing straight into their span of the concat that reads them:
    producer step -> (concat step, first channel, end channel). A producer qualifies when it is
    a planned conv or permute step that writes its whole output into ``out`` (and returns it),
    the concat (along axis 1, its output not kept) is the only reader of that output, directly
    or through flatten/reshape steps read only by the next (SSD's heads: permute, flatten,
    concat; the flatten then reshapes the span), and no output on the way is kept, in a batch of
    one image (with N > 1 a channel span is not contiguous; running
    the producer's batch-1 plan image by image into it measured no gain on Caffe GoogLeNet's
    batch of 10: process CPU time B/A 0.99 at one thread, 1.10 at two). The concat's step then
    copies only its other inputs into ``out`` (without ``out``, as in :meth:`Program.unpooled`,
    it concatenates as before)."""
    readers, maker = _readers_makers(entries)
    into: dict[int, tuple[int, int, int]] = {}
    for j, e in enumerate(entries):
        nd = len(e.out_shape)
        if e.op != "concat" or len(e.outs) != 1 or nd < 2 or e.out_shape[0] != 1 or kept_class(e.outs[0]):
            continue
        if registry.axis_of(e.node, registry.attrs(e.node)["axis"], nd) != 1:
            continue
        c0, rest, mine = 0, [], {}
        for k, (s, shape) in enumerate(zip(e.ins, e.in_shapes)):
            c1 = c0 + int(shape[1])
            s, p, _ = _through_reshapes(s, entries, readers, maker, kept)  # a flatten's producer writes the span
            if p is not None and len(readers[s]) == 1 and s not in kept and _writes_into(entries[p]):
                mine[p] = (j, c0, c1)
            else:
                rest.append((k, c0, c1))
            c0 = c1
        if mine:
            into.update(mine)
        # (no producer writing into it: the concat still copies into its buffer from the arena, not
        # a fresh array of the size of its output, which costs its page faults every pass: PP-OCRv4
        # det's concat of four 24 x 80 x 80 maps 1.3 -> 0.3 ms)
        e.fn, e.takes_out = _concat_rest(e.fn, rest), True
    return into


def _writes_into(e: _Entry) -> bool:
    """Whether ``e``'s step can write its output into a channel span of a concat's buffer."""
    return e.op in _INTO_OPS and e.takes_out and len(e.outs) == 1 and len(e.out_shape) == 4 and e.out_shape[0] == 1


def _concat_rest(fn: Callable, rest: list[tuple[int, int, int]]) -> Callable:
    """A concat step whose ``out`` already holds the inputs its producers wrote: copy the others
    (``rest``: input position, first channel, end channel); ``fn``, the concat, without ``out``."""
    def step(*xs, out=None):
        if out is None:
            return fn(*xs)
        for k, c0, c1 in rest:
            np.copyto(out[:, c0:c1], xs[k])
        return out

    return step


def _budgeted(fn: Callable, spec: Any, node: Node, itemsize: int) -> Callable:
    """``fn`` for a step whose shapes are known only at run time: before it runs, its output
    shapes for the inputs it got (the op's shape function) are checked against the budgets
    (:func:`refnet.runtime.budget.check_step`): the plan's check could not see them. Outputs
    whose size depends on values (NonMaxSuppression's rows) are left to the op's own check."""
    from refnet.runtime.budget import check_step

    def step(*xs, **kw):
        ins = [tuple(np.shape(x)) for x in xs]
        try:
            outs = [tuple(int(d) for d in s) for s in spec.shape(node, ins)]
        except (ShapeError, ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError):
            outs = None  # the op reports its inputs itself
        if outs is not None and all(d >= 0 for s in outs for d in s):
            check_step(node, ins, outs, itemsize, "a forward pass (a step sized at run time)")
        return fn(*xs, **kw)

    return step


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
