"""The public face of the executor: :class:`Net` and the ``load*`` entry points.

A :class:`Net` is a loaded model (a :class:`~refnet.graph.Graph`) ready to run on refnet's
kernels; ``forward``, ``trace``, ``backward``, ``profile`` and the name/shape accessors are
the contract of DESIGN.md. The machinery behind it lives in :mod:`refnet.runtime`: planning and
shape inference (:mod:`~refnet.runtime.plan`), folding and fusion on the float32 path
(:mod:`~refnet.runtime.fusion`), compiled programs and their run loop
(:mod:`~refnet.runtime.program`), thread counts (:mod:`~refnet.runtime.threads`), budgets
(:mod:`~refnet.runtime.budget`), Ctrl-C (:mod:`~refnet.runtime.interrupt`) and gradients
(:mod:`~refnet.runtime.backward`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, ShapeError
from refnet.graph import Graph, Node
from refnet.ops import registry
from refnet.ops.registry import Ctx
from refnet.runtime.budget import check_plan
from refnet.runtime.plan import Plan, infer_shapes, make_plan
from refnet.runtime.program import RUN_LOCK, Program, compile_program, run_program
from refnet.runtime.threads import before_forward as _threads_before_forward
from refnet.runtime.threads import get_num_threads, set_num_threads
from refnet.runtime.threads import reapply as _threads_reapply

__all__ = ["Net", "load", "load_caffe", "load_torch", "load_darknet", "PRECISIONS", "set_num_threads",
           "get_num_threads"]

PRECISIONS = ("float32", "float64")
QUIRKS = ("none", "cv2")
_MAX_PROGRAMS = 8  # compiled programs kept per Net (input shapes x outputs x precision)
_PROGRAM_LOCK = threading.RLock()  # Net._programs/_plans/_shapes/_params (many threads, many shapes)


class Net:
    """A loaded model, ready to run on refnet's kernels.

    A Net wraps one :class:`~refnet.graph.Graph` (the IR an importer read from the model files;
    ``files`` records which, so a cross-check can open the same model in cv2.dnn) and runs it:

    * :meth:`forward` -- the requested outputs (default: :attr:`output_names`). ``"float32"``
      (the default) is the fast path: optimised kernels, BatchNorm / Scale / Bias / linear Power
      layers folded into the convolution before them and activations fused into it wherever no
      one asked for the intermediate tensor, sibling convolutions merged at batch 1.
      ``"float64"`` runs every node unfused on the readable reference kernels.
    * :meth:`trace` -- every layer's output, unfused (float64 by default): what ``compare``
      checks layer by layer.
    * :meth:`backward` -- gradients w.r.t. the inputs and chosen layers' params.
    * :meth:`profile`, :meth:`infer_shapes` and the name/shape accessors
      (:attr:`layer_names`, :attr:`input_names`, :attr:`output_names`, :attr:`input_shapes`).

    The first run for given outputs, precision and input shapes plans and compiles a program
    (refnet.runtime.plan / fusion / program: checked against the budgets, kernels planned,
    buffers preallocated); later runs reuse it (the last few are cached per Net). A Net may be
    used from several threads: compiling is guarded by a lock and runs are serialised
    process-wide (refnet.runtime.program.RUN_LOCK). Build one with :func:`load` or a
    ``load_<framework>`` function, or from a Graph directly.
    """

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
        self._plans: dict[tuple, Plan] = {}
        self._shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}
        self._programs: OrderedDict[tuple, Program] = OrderedDict()
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
        shapes = infer_shapes(self.graph.nodes, self._specs, shapes, needed, self.input_names)
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
        regs = run_program(prog, feeds)
        res = prog.results
        return {a: regs[res[n]] for a, n in zip(asked, names)}

    def _alias(self, name: str) -> str:
        """The IR tensor for ``name``: itself, or the IR tensor an ONNX tensor name maps to."""
        if name in self._producer or name in self.graph.inputs:
            return name
        return self.graph.meta.get("tensors", {}).get(name, name)

    def trace(self, x: np.ndarray | Mapping[str, np.ndarray], precision: str = "float64") -> dict[str, np.ndarray]:
        """Every layer's (first) output, in execution order, unfused."""
        prog, feeds = self._trace_program(x, precision)
        regs = run_program(prog, feeds)
        listed = set(self.graph.layer_names)
        res = prog.results
        return {n: regs[res[n]] for n in res if n in listed}

    def _trace_program(self, x: np.ndarray | Mapping[str, np.ndarray], precision: str
                       ) -> tuple[Program, dict[str, np.ndarray]]:
        """The unfused program returning every node's (first) output, in graph order (``results``),
        and the checked feeds: ``trace``'s, and refnet.crosscheck.local.stream_trace's."""
        ctx = _ctx(precision)
        feeds = self._feeds(x, ctx)
        return self._program(tuple(n.name for n in self.graph.nodes), False, feeds, ctx), feeds

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
        times: list[list[float]] = [[] for _ in prog.code]
        clock = time.perf_counter
        with RUN_LOCK:
            _threads_before_forward(work=prog.work)  # the thread counts forward would use
            for _ in range(max(1, int(repeat))):
                steps = prog.steps(prog.start(feeds))
                t0 = clock()
                for j in steps:
                    t1 = clock()
                    times[j].append(t1 - t0)
                    t0 = t1
        return [(layer, op, float(np.median(t))) for layer, op, t in zip(prog.layers, prog.ops, times)]

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
        types = self.graph.meta.get("input_types")
        if types:  # an ONNX input declared integer, bool or float16/bfloat16: the values it can hold
            from refnet.weights_import.onnx_schema import declared_values

            for k in feeds:
                if types.get(k):
                    feeds[k] = declared_values(feeds[k], int(types[k]))[0]
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
                 ctx: Ctx) -> Program:
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
            prog = compile_program(plan, shapes, ctx, self.input_names, self._node_params)
            prog.work, prog.peak = cost.work, cost.peak_bytes
            self._programs[key] = prog
            while len(self._programs) > _MAX_PROGRAMS:
                self._programs.popitem(last=False)
            return prog

    def _plan(self, requested: tuple[str, ...], fuse: bool, merge: bool | None = None) -> Plan:
        """The (cached) plan computing ``requested``: fused with ``fuse``, sibling convs merged
        with ``merge`` too (default: ``fuse``)."""
        merge = fuse if merge is None else merge and fuse
        key = (requested, fuse, merge)
        plan = self._plans.get(key)
        if plan is None:
            plan = make_plan(self.graph.nodes, self._consumers, self.input_names, requested, fuse, merge)
            self._plans[key] = plan
        return plan


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


def folder_message(path: str | os.PathLike) -> str:
    """What to say about a folder given where model files are expected ("PATH: " goes before it):
    the model files in it."""
    found = sorted(q.name for q in Path(path).iterdir() if q.suffix.lower() in _EXT and q.is_file())
    listed = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    return "is a folder, not a model file; " + (
        f"give the model files in it ({listed})" if found else "it holds no model files (" + ", ".join(_EXT) + ")")


def load(*paths: str | os.PathLike, quirks: str = "none", **kwargs: Any) -> Net:
    """Load a model, choosing the reader from the file extensions of ``paths``. Keyword
    arguments go to that reader (``load_onnx``'s ``input_shapes``, ``load_torch``'s
    ``long_size``); one it does not take is a TypeError, and files of two frameworks are
    refused: neither is dropped silently."""
    kinds: dict[str, str] = {}
    for p in paths:
        kind = _EXT.get(Path(p).suffix.lower())
        if kind is None and Path(p).is_dir():
            raise ModelFormatError(folder_message(p), file=str(p), expected="model files")
        if kind is None:
            raise ModelFormatError(f"cannot tell the framework from the extension {Path(p).suffix!r}",
                                   file=str(p), expected="one of " + ", ".join(sorted(_EXT)))
        if kind in kinds:
            raise ModelFormatError(f"two files of the same kind: {kinds[kind]} and {p}", file=str(p))
        kinds[kind] = str(p)
    frameworks = {k.split("_")[0] for k in kinds}
    if len(frameworks) > 1:
        which = ", ".join(f"{Path(v).name} is {k.split('_')[0]}" for k, v in kinds.items())
        raise ModelFormatError(f"the files are of different frameworks ({which}): give one model's files",
                               file=", ".join(map(str, paths)),
                               expected="the files of one Caffe, Torch7, Darknet or ONNX model")
    if "caffe_def" in kinds or "caffe_weights" in kinds:
        return load_caffe(kinds.get("caffe_def"), kinds.get("caffe_weights"), quirks=quirks, **kwargs)
    if "torch" in kinds:
        return load_torch(kinds["torch"], quirks=quirks, **kwargs)
    if "onnx" in kinds:
        return load_onnx(kinds["onnx"], quirks=quirks, **kwargs)
    if "darknet_cfg" in kinds:
        if "weights" in kwargs and "darknet_weights" in kinds:
            raise TypeError(f"load() got both a .weights file ({kinds['darknet_weights']}) and weights=")
        # weights="zeros" (the architecture-only graph the cfg-alone error suggests) as load_darknet takes it
        weights = kinds.get("darknet_weights", kwargs.pop("weights", None))
        return load_darknet(kinds["darknet_cfg"], weights, quirks=quirks, **kwargs)
    raise ModelFormatError("no model definition among the files", file=", ".join(map(str, paths)),
                           expected=".prototxt/.caffemodel, .t7/.net, .cfg or .onnx")

