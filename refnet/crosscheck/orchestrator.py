"""``compare(net, x)``: refnet float64 (the reference), refnet float32 and the backends, layer by layer.

Named phases (:class:`_Run`):

1. ``setup`` -- feeds, tensor shapes, the report header, the candidates: refnet float32, cv2
   fusion off (Winograd off, and on where cv2 has it), extra :class:`Candidate` backends;
2. ``outputs_only`` -- candidates that return the net outputs only (cv2 fusion on);
3. ``layer_pass`` -- one pass in execution order over the streamed reference: for every layer
   and candidate the accumulated error (vs refnet's output of the layer) and the local error (vs
   refnet's float64 kernel on the candidate's own inputs), judged at once (:meth:`_Run.judge`);
   per-layer backends run in chunks of layers so that only what the current layer needs is held
   (each chunk's run also returns the earlier layers its local errors read: inputs and output of
   a local error always come from one run of the backend);
4. ``tasks`` -- task-level agreement of the outputs (tie-aware);
5. ``verdict`` -- one verdict (:mod:`refnet.crosscheck.verdict`).

Memory: the reference and refnet float32 are streamed (each tensor dropped after its last
reader), backend outputs are asked for in chunks of at most ``chunk_bytes`` and dropped after
their last reader; net outputs are kept for the task checks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from refnet import tolerances
from refnet.crosscheck import quirks as Q
from refnet.crosscheck import tasks as T
from refnet.crosscheck import ties as TI
from refnet.crosscheck.backends import Candidate, Cv2Backend, has_winograd, model_paths
from refnet.crosscheck.local import LocalInputs, kernel64, stream_trace
from refnet.crosscheck.metrics import NAN_STATS, diff_stats, over_mask
from refnet.crosscheck.report import (
    CMP_CV2,
    CMP_CV2_F32,
    CMP_CV2_WINO,
    CMP_F32,
    CMP_FUSED,
    CMP_FUSED_NOWINO,
    SET_NOTE,
    Comparison,
    LayerDiff,
    Report,
    TaskAgreement,
    versions,
)
from refnet.crosscheck.rois import RoiRows
from refnet.crosscheck.verdict import decide

__all__ = ["compare", "CHUNK_BYTES"]

CHUNK_BYTES = 64 * 2**20  # the most per-layer backend output asked for in one pass (cv2 holds ~2-3x that),
#                          plus the earlier layers that pass re-asks for its local errors (_inputs_again)


def compare(net: Any, x: np.ndarray | Mapping[str, np.ndarray], *, cv2_fusion: bool = True,
            precisions: Sequence[str] = ("float64", "float32"), model_name: str | None = None,
            task: str | None = None, labels: Sequence[str] | None = None, label_offset: int = 0,
            top_k: int = 5, winograd: bool | None = None, attribute_quirks: bool = True,
            input_label: str = "", progress: Callable[[str], None] | None = None,
            backends: Sequence[Candidate] = (), chunk_bytes: int = CHUNK_BYTES, cv2: bool = True,
            local_errors: str = "all") -> Report:
    """Run refnet float64 (reference), refnet float32 and cv2.dnn on ``x``; return a per-layer Report.

    ``precisions``: the refnet precisions to run (float64 always runs: it is the reference).
    ``cv2_fusion``: also run cv2 with fusion on (outputs only). ``winograd``: None = both
    settings where cv2 has ``enableWinograd``, False = off only, True = on only. ``task``: the zoo
    task ("classify", "detect", "segment", "stylize", "face"), else inferred from the outputs.
    ``attribute_quirks``: load the model again with quirks="cv2" to name known cv2 deviations.
    ``backends``: more candidates (:class:`refnet.crosscheck.backends.Candidate`), e.g. ONNX Runtime
    on an exported model; ``cv2``: False leaves cv2.dnn out. ``chunk_bytes``: memory bound of one
    per-layer backend pass (0: all layers in one pass). ``local_errors``: "all" computes every row's
    local error (one float64 kernel call per layer and candidate); "over" only for cv2 (fusion off,
    Winograd off) and wherever the accumulated error is over tolerance (the rows the verdict needs).
    """
    if local_errors not in ("all", "over"):
        raise ValueError(f"local_errors must be 'all' or 'over', got {local_errors!r}")
    for p in precisions:
        if p not in ("float32", "float64"):
            raise ValueError(f"precisions must be float32/float64, got {p!r}")
    from refnet.runtime.budget import check_compare

    feeds = dict(x) if isinstance(x, Mapping) else {net.input_names[0]: x}
    # BudgetError before any run (a conservative bound: as if every layer's output were kept)
    check_compare(net, feeds, precisions, (1 if winograd is not None else 2) if cv2 else 0,
                  3 * chunk_bytes if backends else 0)  # a backend holds ~2-3x a chunk
    run = _Run(net, x, precisions=precisions, model_name=model_name, task=task, labels=labels,
               label_offset=label_offset, top_k=top_k, attribute_quirks=attribute_quirks, input_label=input_label,
               progress=progress, chunk_bytes=chunk_bytes, local_errors=local_errors)
    t_all = time.perf_counter()
    run.setup(cv2=cv2, cv2_fusion=cv2_fusion, winograd=winograd, backends=backends)
    run.outputs_only()
    run.layer_pass()
    run.tasks()
    decide(run.rep)
    run.timings["total"] = time.perf_counter() - t_all
    run.rep.timings = run.timings
    return run.rep


class _Stream:
    """Pulls ``(tensor, array)`` pairs from a generator into ``values`` until a tensor is there."""

    def __init__(self, it: Iterator[tuple[str, np.ndarray]], timer: Callable[[str, float], None], key: str) -> None:
        self.it, self.timer, self.key = it, timer, key
        self.values: dict[str, np.ndarray] = {}
        self.fresh: list[str] = []  # tensors arrived in values since layer_pass last looked
        self.done = False

    def get(self, name: str) -> np.ndarray | None:
        t = time.perf_counter()
        while name not in self.values and not self.done:
            try:
                k, v = next(self.it)
            except StopIteration:
                self.done = True
                break
            self.values[k] = v
            self.fresh.append(k)
        self.timer(self.key, time.perf_counter() - t)
        return self.values.get(name)


class _Chunked:
    """A per-layer candidate: asks its backend for the layers in chunks, in execution order."""

    def __init__(self, cand: Candidate, feeds: Mapping[str, np.ndarray], chunks: list[list[str]],
                 timer: Callable[[str, float], None], key: str, again: list[list[str]] | None = None) -> None:
        self.cand, self.feeds, self.chunks, self.timer, self.key = cand, feeds, chunks, timer, key
        #: per chunk, earlier chunks' layers asked for again in its run (their values are replaced
        #: by that run's: a local error reads its inputs from the run its layer's output came from)
        self.again = again or [[] for _ in chunks]
        self.where = {n: i for i, ch in enumerate(chunks) for n in ch}
        self.loaded = -1
        self.values: dict[str, np.ndarray] = {}
        self.fresh: list[str] = []  # tensors arrived in values since layer_pass last looked

    def get(self, name: str) -> np.ndarray | None:
        i = self.where.get(name)
        if i is None:
            return self.values.get(name)
        while self.loaded < i:
            self.loaded += 1
            t = time.perf_counter()
            got = self.cand.run(self.feeds, self.chunks[self.loaded] + self.again[self.loaded])
            self.values.update(got)
            self.fresh.extend(got)
            self.timer(self.key, time.perf_counter() - t)
        return self.values.get(name)


class _Run:
    """The state of one comparison; the phases are its methods (see the module docstring)."""

    def __init__(self, net: Any, x: Any, **kw: Any) -> None:
        self.net, self.kw = net, kw
        self.say = kw["progress"] or (lambda s: None)
        self.timings: dict[str, float] = {}
        self.feeds = dict(x) if isinstance(x, Mapping) else {net.input_names[0]: x}
        self.g = net.graph
        self.prods = Q.producers(self.g)
        self._local_ref: np.ndarray | None = None
        self.rois = RoiRows.of(self.g)  # two-stage detectors: rois as sets, per-roi rows aligned

    def time(self, key: str, dt: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + dt

    # ---- phase 1 --------------------------------------------------------------------------------
    def setup(self, *, cv2: bool, cv2_fusion: bool, winograd: bool | None, backends: Sequence[Candidate]) -> None:
        net, kw = self.net, self.kw
        self.shapes = self._shapes()
        listed = set(net.layer_names)
        self.nodes = list(self.g.nodes)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.names = [n.name for n in self.nodes if n.name in listed]
        self.outs = [n for n in net.output_names if n in self.index]
        mode = Q.graph_quirks_mode(self.g)
        first = next(iter(self.feeds.values()))
        rep = Report(model=kw["model_name"] or _model_label(net), input_shape=tuple(np.shape(first)),
                     tolerance={"float32": tolerances.COMPARE_F32, "cv2": tolerances.COMPARE_CV2},
                     framework=self.g.framework,
                     files=tuple(str(p) for p in (net.files[1] if net.files else ()) if p is not None),
                     input=kw["input_label"], quirks=mode, task=kw["task"] or "", versions=versions())
        self.rep = rep
        self.qnet, self.changes = None, {}
        self.want_quirks = bool(kw["attribute_quirks"] and mode == "none" and net.files and cv2)
        self.layer_cands: list[tuple[str, _Chunked]] = []
        self.output_cands: list[Candidate] = []
        if cv2:
            self._cv2_candidates(cv2_fusion, winograd)
        for c in backends:
            if c.scope == "layers":
                self.layer_cands.append((c.id, self._chunked(c)))
            else:
                self.output_cands.append(c)
        self.comp: dict[str, Comparison] = {}
        if "float32" in kw["precisions"]:
            self.comp[CMP_F32] = Comparison(CMP_F32, "refnet float32", "refnet float64", "layers",
                                            tolerances.COMPARE_F32)
        for cid, ch in self.layer_cands:
            self.comp[cid] = Comparison(cid, ch.cand.label, "refnet float64", "layers", _tol(cid))
            if cid == CMP_CV2 and CMP_F32 in self.comp:
                self.comp[CMP_CV2_F32] = Comparison(CMP_CV2_F32, ch.cand.label, "refnet float32", "layers",
                                                    tolerances.COMPARE_CV2)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        try:
            return dict(self.net.infer_shapes({k: tuple(np.shape(v)) for k, v in self.feeds.items()}))
        except Exception:  # undeclared or odd shapes: no chunking, no reshaping of backend blobs
            return {}

    def _cv2_candidates(self, fusion: bool, winograd: bool | None) -> None:
        net = self.net
        binary = self.g.meta.get("encoding", "binary") != "ascii"
        paths = model_paths(net)
        modes = [False, True] if (winograd is None and has_winograd()) else [bool(winograd)] if winograd else [False]
        for wino in modes:
            cid = CMP_CV2_WINO if wino else CMP_CV2
            c = Candidate(cid, Cv2Backend(fusion=False, winograd=wino, torch_binary=binary), paths)
            self.layer_cands.append((cid, self._chunked(c)))
        if fusion:
            for wino in sorted(modes, reverse=True):
                cid = CMP_FUSED if (wino or len(modes) == 1) else CMP_FUSED_NOWINO
                self.output_cands.append(Candidate(cid, Cv2Backend(fusion=True, winograd=wino, torch_binary=binary),
                                                   paths, scope="outputs"))

    def _chunked(self, c: Candidate) -> _Chunked:
        budget = c.chunk_bytes or self.kw["chunk_bytes"]
        chunks: list[list[str]] = [[]]
        size = 0
        for n in self.names:
            b = 4 * int(np.prod(self.shapes.get(n, (0,))))
            if budget and chunks[-1] and size + b > budget and self.shapes:
                chunks.append([])
                size = 0
            chunks[-1].append(n)
            size += b
        key = "cv2 " + c.label.split("(", 1)[-1].rstrip(")") if c.id.startswith("cv2") else c.id
        return _Chunked(c, self.feeds, chunks, self.time, key, self._inputs_again(chunks))

    def _inputs_again(self, chunks: list[list[str]]) -> list[list[str]]:
        """Per chunk, the layers of earlier chunks whose outputs its layers' local errors read
        (directly, through a tensor the backend does not return, as :class:`LocalInputs` recomputes
        it, or as a MaxUnpool's pooling input): asked for again in that chunk's run, so that a
        local error never pairs a layer's output with inputs from another run of the backend
        (cv2 4.x fuses differently when other tensors are exposed: PP-OCRv4's false DIFFER)."""
        home = {n: i for i, ch in enumerate(chunks) for n in ch}
        pools = TI.unpool_pools(self.nodes, self.prods)
        out: list[list[str]] = []
        for i, ch in enumerate(chunks):
            want: dict[str, None] = {}
            for name in ch:
                node = self.nodes[self.index[name]]
                todo = [(t, 8) for t in node.inputs]
                if name in pools:
                    todo += [(t, 8) for t in pools[name].inputs[:1]]
                seen: set[str] = set()
                while todo:
                    t, depth = todo.pop()
                    if t in seen or t in self.feeds:
                        continue
                    seen.add(t)
                    if t in home:
                        if home[t] < i:
                            want[t] = None
                    elif depth > 0 and t in self.prods:
                        todo += [(u, depth - 1) for u in self.prods[t].inputs]
            out.append(list(want))
        return out

    # ---- phase 2 --------------------------------------------------------------------------------
    def outputs_only(self) -> None:
        self.out_values: dict[str, dict[str, np.ndarray]] = {}
        for c in self.output_cands:
            t = time.perf_counter()
            self.say(f"{c.label} ...")
            self.out_values[c.id] = c.run(self.feeds, self.outs)
            self.time(c.label if not c.id.startswith("cv2") else "cv2 " + c.label.split("(", 1)[-1].rstrip(")"),
                      time.perf_counter() - t)

    # ---- phase 3 --------------------------------------------------------------------------------
    def layer_pass(self) -> None:
        self.say("refnet float64 + " + ", ".join(["refnet float32"] * (CMP_F32 in self.comp)
                                                 + [c.cand.label for _, c in self.layer_cands]) + " ...")
        ref = _Stream(stream_trace(self.net, self.feeds, "float64"), self.time, "refnet float64")
        f32 = (_Stream(stream_trace(self.net, self.feeds, "float32"), self.time, "refnet float32")
               if CMP_F32 in self.comp else None)
        self.ref, self.f32 = ref, f32
        self.qref: _Stream | None = None
        last = self._last_use()
        dies: dict[int, list[str]] = {}  # layer index -> the tensors last used there
        for t, j in last.items():
            dies.setdefault(j, []).append(t)
        swept = -1
        keep = set(self.outs)
        sources: list[tuple[str, Any]] = ([(CMP_F32, f32)] if f32 is not None else []) + list(self.layer_cands)
        self.unpools = TI.unpool_pools(self.nodes, self.prods)
        self.kept: dict[str, dict[str, np.ndarray]] = {cid: {} for cid, _ in sources}
        self.kept["ref"] = {}
        self.bad: dict[str, dict[str, LayerDiff]] = {cid: {} for cid in self.comp}
        for name in self.names:
            i = self.index[name]
            r = ref.get(name)
            if r is None:
                continue
            self.rep.layers.append({"index": i, "name": name, "op": self.nodes[i].op, "shape": list(np.shape(r))})
            for cid, src in sources:
                self._layer(cid, src, self.nodes[i], r)
            if name in keep:
                self.kept["ref"][name] = r
                for cid, src in sources:
                    v = src.get(name)
                    if v is not None:
                        self.kept[cid][name] = v
            # drop what no later layer reads: the tensors last used up to here, and new arrivals
            # already past their last use (a scan of every value per layer was quadratic)
            due = [t for j in range(swept + 1, i + 1) for t in dies.get(j, ())]
            swept = max(swept, i)
            for s in [ref, f32, self.qref] + [c for _, c in self.layer_cands]:
                if s is not None:
                    for t in [t for t in s.fresh if last.get(t, -1) <= i] + due:
                        s.values.pop(t, None)
                    s.fresh.clear()
        for cid, vals in self.out_values.items():
            self._outputs_rows(cid, vals)
        self.rep.comparisons = dict(self.comp)
        self._group_deviations()

    def _last_use(self) -> dict[str, int]:
        """Tensor -> index of the last layer that reads it, directly or through a tensor the backends do
        not return (recomputed from its producer's inputs), or through a MaxUnpool's near-tie check."""
        listed = set(self.names)
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for t in n.outputs:
                last[t] = max(last.get(t, -1), i)
            for t in n.inputs:
                last[t] = max(last.get(t, -1), i)
        for name, pool in TI.unpool_pools(self.nodes, self.prods).items():
            last[pool.inputs[0]] = max(last.get(pool.inputs[0], -1), self.index[name])
        for n in reversed(self.nodes):
            hidden = [last.get(t, -1) for t in n.outputs if t not in listed]
            if hidden and max(hidden) >= 0:
                for t in n.inputs:
                    last[t] = max(last.get(t, -1), max(hidden))
        return last

    def _layer(self, cid: str, src: Any, node: Any, r: np.ndarray) -> None:
        """The rows of layer ``node`` for candidate ``cid`` (and cv2 vs refnet float32)."""
        v = src.get(node.name)
        if v is None:
            return
        row = self._row(cid, node, v, r)
        self._local_ref = None
        if self.kw["local_errors"] == "all" or cid == CMP_CV2 or not row.ok:
            self._local(cid, src, node, v, row)
        self.judge(cid, node, v, row, src)
        self.comp[cid].rows.append(row)
        if cid == CMP_CV2 and CMP_CV2_F32 in self.comp:
            r32 = self.f32.get(node.name) if self.f32 is not None else None
            if r32 is not None:
                row2 = self._row(CMP_CV2_F32, node, v, r32)
                row2.local_max_rel, row2.local_max_abs = row.local_max_rel, row.local_max_abs
                row2.local_vs_quirks = row.local_vs_quirks
                self.judge(CMP_CV2_F32, node, v, row2, src, ref=r32)
                self.comp[CMP_CV2_F32].rows.append(row2)

    def _diff(self, key: str, node: Any, v: np.ndarray, r: np.ndarray, local: bool = False) -> tuple[Any, str]:
        """diff_stats of ``v`` against ``r`` (two-stage nets: rois as sets, per-roi rows aligned,
        :mod:`refnet.crosscheck.rois`) and a note."""
        if self.rois is None:
            return diff_stats(v, r), ""
        got = self.rois.pair(key, node, v, r, local)
        if got is None:
            return NAN_STATS, self.rois.why
        return diff_stats(got[0], got[1]), got[2]

    def _row(self, cid: str, node: Any, v: np.ndarray, r: np.ndarray) -> LayerDiff:
        tol = self.comp[cid].tolerance
        (ma, mr, mean, cos, worst), note = self._diff(cid, node, v, r)
        ok = (not math.isnan(mr)) and mr <= tol
        if math.isnan(mr) and not note:
            note = f"sizes differ: {tuple(np.shape(v))} vs {tuple(np.shape(r))}"
        return LayerDiff(node.name, node.op, tuple(np.shape(r)), ma, mr, mean, cos, worst, ok, note,
                         index=self.index[node.name])

    def _local(self, cid: str, src: Any, node: Any, v: np.ndarray, row: LayerDiff) -> None:
        """The local error of ``row``: ``v`` against the float64 kernel on the candidate's own inputs."""
        t = time.perf_counter()
        self._local_ref = None
        li = LocalInputs(self.nodes, self.feeds, self.shapes, src.get, prod=self.prods)
        ins = li.of(node)
        if ins is not None:
            try:
                want = kernel64(node, ins)[0]
            except Exception as e:  # the kernel refuses the backend's inputs: say so, judge by accumulated
                row.note = (row.note + "; " if row.note else "") + f"no local error ({type(e).__name__})"
                want = None
            if want is not None:
                row.local_max_abs, row.local_max_rel = self._diff(cid, node, v, want, local=True)[0][:2]
                if math.isnan(row.local_max_rel):
                    row.local_max_abs = row.local_max_rel = None
                else:
                    self._local_ref = want
        self.time("local errors", time.perf_counter() - t)

    # ---- judging one row ------------------------------------------------------------------------
    def judge(self, cid: str, node: Any, v: np.ndarray, row: LayerDiff, src: Any,
              ref: np.ndarray | None = None) -> None:
        """The row's status (see :class:`LayerDiff`): decided by the local error where there is one."""
        tol = self.comp[cid].tolerance
        local_over = row.local_max_rel is not None and not row.local_max_rel <= tol
        if row.local_max_rel is not None and not local_over:
            if not row.ok and not self._is_tie_accumulated(cid, node, v, row, ref):
                self._inherit(cid, row, "accumulated", node, v)
            return
        if node.op == "detection_output" and self._detections_agree(cid, node, v, row, src, ref, local_over):
            return
        if not local_over and row.ok:
            return
        if local_over and self._is_tie(node, v, row, src, tol):
            pass
        elif local_over and self._is_quirk(cid, node, v, row, src, tol):
            pass
        elif (not local_over and row.local_max_rel is None and node.op == "proposal"
              and self._is_quirk(cid, node, v, row, src, tol)):
            pass  # py-faster-rcnn's rois (another count) vs cv2's: the quirks="cv2" kernel on cv2's inputs decides
        elif not local_over and self._is_quirk_accumulated(cid, node, v, row):
            pass
        elif not local_over and self._inherit(cid, row, None, node, v):
            pass
        else:
            row.status = "differ"
            if local_over:
                row.note = (row.note + "; " if row.note else "") + f"local error {row.local_max_rel:.2e} > {tol:g}"
        if row.status != "ok":
            self.bad[cid][row.layer] = row

    def _inherit(self, cid: str, row: LayerDiff, default: str | None, node: Any, v: np.ndarray) -> bool:
        """Accumulated error over tolerance with no local error over it here: take the status of the
        nearest upstream layer that was over (a known deviation, a near tie), else ``default``."""
        up = Q.origin(row.layer, self.g, {k: r for k, r in self.bad[cid].items() if k != row.layer}, self.prods)
        src = self.bad[cid].get(up) if up else None
        if src is not None and src.status in ("known_deviation", "tie"):
            row.status, row.origin, row.deviation = src.status, src.origin or up, src.deviation
            if src.status == "tie" and not row.note:
                row.note = f"moved by the near-tie max-pooling argmax at {row.origin}"
            if src.status == "known_deviation" and cid.startswith("cv2") and self.qnet is not None:
                self._quirk_accumulated(node, v, row)
        elif default is not None:
            row.status, row.origin = default, up or ""
        else:
            return False
        self.bad[cid][row.layer] = row
        return True

    def _is_tie(self, node: Any, v: np.ndarray, row: LayerDiff, src: Any, tol: float) -> bool:
        pool = self.unpools.get(node.name)
        want = self._local_ref
        if pool is None or want is None:
            return False
        x = src.get(pool.inputs[0]) if pool.inputs[0] not in self.feeds else self.feeds[pool.inputs[0]]
        near = TI.near_tie_windows(x, pool, tol) if x is not None else None
        over = over_mask(v, want, tol)
        if near is None or over is None or not TI.over_in_tie_windows(over, near):
            return False
        row.status, row.origin = "tie", node.name
        row.note = f"{int(over.sum())} element(s) moved by a near-tie max-pooling argmax"
        return True

    def _is_tie_accumulated(self, cid: str, node: Any, v: np.ndarray, row: LayerDiff, ref: np.ndarray | None) -> bool:
        """A MaxUnpool right on its inputs whose output moved against the reference: every moved element
        sits in a window where the reference's pooling input has two maxima within tolerance."""
        pool = self.unpools.get(node.name)
        if pool is None:
            return False
        tol = self.comp[cid].tolerance
        src = self.f32 if cid == CMP_CV2_F32 else self.ref
        x = self.feeds.get(pool.inputs[0]) if pool.inputs[0] in self.feeds else src.values.get(pool.inputs[0])
        r = ref if ref is not None else self.ref.values.get(node.name)
        near = TI.near_tie_windows(x, pool, tol) if x is not None else None
        over = over_mask(v, r, tol) if r is not None else None
        if near is None or over is None or not TI.over_in_tie_windows(over, near):
            return False
        row.status, row.origin = "tie", node.name
        row.note = f"{int(over.sum())} element(s) moved by a near-tie max-pooling argmax (local error within tolerance)"
        self.bad[cid][row.layer] = row
        return True

    def _quirk_net(self) -> bool:
        if self.qnet is None and self.want_quirks:
            self.want_quirks = False
            t = time.perf_counter()
            try:
                self.qnet = Q.load_variant(self.net, "cv2")
                self.changes = Q.quirk_changes(self.qnet.graph)
            except Exception as e:  # the attribution is a bonus: never let it sink the report
                self.qnet, self.changes = None, {}
                self.rep.notes.append(f"could not load the model with quirks='cv2' to attribute deviations: {e}")
            self.time("load quirks=cv2", time.perf_counter() - t)
        return self.qnet is not None and bool(self.changes)

    def _is_quirk(self, cid: str, node: Any, v: np.ndarray, row: LayerDiff, src: Any, tol: float) -> bool:
        """Local error over tolerance that refnet's quirks="cv2" kernel of this layer reproduces."""
        if not cid.startswith("cv2") or not self._quirk_net() or node.name not in self.changes:
            return False
        try:
            qnode = self.qnet.graph.node(node.name)
            ins = LocalInputs(self.qnet.graph.nodes, self.feeds, self.shapes, src.get).of(qnode)
            q = kernel64(qnode, ins)[0] if ins is not None else None
        except Exception:
            q = None
        if q is None:
            return False
        row.local_vs_quirks = self._diff(cid, node, v, q, local=True)[0][1]
        self._quirk_accumulated(node, v, row)
        if not row.local_vs_quirks <= tol:
            return False
        row.status, row.origin, row.deviation = "known_deviation", node.name, self.changes[node.name][1]
        return True

    def _quirk_accumulated(self, node: Any, v: np.ndarray, row: LayerDiff) -> None:
        """``max_rel_vs_quirks``: the candidate against refnet float64 loaded with quirks="cv2"."""
        if self.qref is None:
            self.qref = _Stream(stream_trace(self.qnet, self.feeds, "float64"), self.time,
                                "refnet float64 quirks=cv2")
        q = self.qref.get(node.name)
        if q is not None:
            row.max_rel_vs_quirks = self._diff("quirks", node, v, q)[0][1]
            if node.name in self.outs:
                self.kept.setdefault("qref", {})[node.name] = q

    def _is_quirk_accumulated(self, cid: str, node: Any, v: np.ndarray, row: LayerDiff) -> bool:
        """No local error here (e.g. fused outputs): the accumulated error against refnet quirks="cv2"."""
        if not cid.startswith("cv2") or not self._quirk_net():
            return False
        self._quirk_accumulated(node, v, row)
        if row.max_rel_vs_quirks is None or not row.max_rel_vs_quirks <= self.comp[cid].tolerance:
            return False
        org = Q.origin(node.name, self.g, self.changes, self.prods)
        row.status, row.origin = "known_deviation", org or node.name
        row.deviation = self.changes[org][1] if org else "cv2 quirk (unattributed)"
        return True

    def _detections_agree(self, cid: str, node: Any, v: np.ndarray, row: LayerDiff, src: Any,
                          ref: np.ndarray | None, local_over: bool) -> bool:
        """DetectionOutput rows are sets: compared by tie-aware matching, not elementwise."""
        want = self._local_ref if local_over else None
        r = want if want is not None else (ref if ref is not None else self.ref.get(node.name))
        if r is None or v.size % 7 or np.size(r) % 7:
            return False
        m = T.task_result("detect_ssd", (node.name,), {node.name: v}, {node.name: r}, self.net)
        if m is None or not m["agree"]:
            return False
        if local_over or not row.ok:
            row.note = f"{SET_NOTE}: {m['summary']}"
        if local_over:
            row.local_max_rel, row.local_max_abs = 0.0, 0.0
        row.ok, row.status = True, "ok"
        return True

    # ---- output-only candidates ---------------------------------------------------------------------
    def _outputs_rows(self, cid: str, vals: Mapping[str, np.ndarray]) -> None:
        """Rows of a candidate that returns the net outputs only: no local error; over tolerance is
        judged against the same layer of the fusion-off run (same backend, same rounding paths)."""
        c = Comparison(cid, next(o.label for o in self.output_cands if o.id == cid), "refnet float64", "outputs",
                       _tol(cid))
        self.comp[cid] = c
        self.bad.setdefault(cid, {})
        peer = self.comp.get(CMP_CV2_WINO if cid == CMP_FUSED and CMP_CV2_WINO in self.comp else CMP_CV2)
        for name in self.outs:
            r, v = self.kept["ref"].get(name), vals.get(name)
            if r is None or v is None:
                continue
            node = self.nodes[self.index[name]]
            row = self._row(cid, node, v, r)
            c.rows.append(row)
            self.kept.setdefault(cid, {})[name] = v
            if row.ok:
                continue
            if node.op == "detection_output" and self._detections_agree(cid, node, v, row, None, r, False):
                continue
            twin = next((p for p in (peer.rows if peer else []) if p.layer == name), None)
            if twin is not None and twin.status != "differ" and row.max_rel <= max(10 * twin.max_rel, c.tolerance):
                row.status = twin.status if twin.status != "ok" else "accumulated"
                row.origin, row.deviation = twin.origin, twin.deviation
                row.note = f"as with fusion off ({twin.status}: {twin.max_rel:.2e}, local errors within tolerance)"
            elif not self._is_quirk_accumulated(cid, node, v, row):
                row.status = "differ"

    def _group_deviations(self) -> None:
        groups: dict[str, dict[str, Any]] = {}
        rows = [r for k, c in self.comp.items() if k.startswith("cv2") for r in c.rows
                if r.status == "known_deviation"]
        origins: dict[str, set[str]] = {}
        for r in rows:
            origins.setdefault(r.origin, set()).add(r.layer)
        for org, affected in sorted(origins.items(), key=lambda kv: self.index.get(kv[0], 0)):
            key, desc = self.changes.get(org, (None, "cv2 quirk (unattributed)"))
            g = groups.setdefault(desc, {"quirk": key, "description": desc, "layers": [], "layers_affected": 0})
            g["layers"].append(org)
            g["layers_affected"] += len(affected)
        self.rep.known_deviations = list(groups.values())

    # ---- phase 4 --------------------------------------------------------------------------------
    def tasks(self) -> None:
        rep, kw = self.rep, self.kw
        task = kw["task"]
        kinds = T.infer_tasks(self.net, None if task in (None, "", "face", "detect") else task,
                              {k: np.shape(v) for k, v in self.feeds.items()})
        first = next(iter(self.feeds.values()))
        in_hw = (int(first.shape[2]), int(first.shape[3])) if np.ndim(first) == 4 else (0, 0)
        rep.task = task or ("+".join(sorted({k.replace("detect_", "detect:") for k, _ in kinds})) or "")
        ref = self.kept["ref"]
        qref = self._qref_outputs()
        for kind, outs in kinds:
            for cid in (CMP_F32, CMP_CV2, CMP_FUSED):
                cand = self.kept.get(cid)
                if not cand:
                    continue
                band = self._band(cid, outs[0])
                m = T.task_result(kind, outs, cand, ref, self.net, kw["labels"], kw["label_offset"], kw["top_k"],
                                  in_hw, band)
                if m is None:
                    continue
                if not m["agree"] and qref and cid != CMP_F32:
                    mq = T.task_result(kind, outs, cand, qref, self.net, kw["labels"], kw["label_offset"],
                                       kw["top_k"], in_hw, band)
                    if mq is not None and mq["agree"]:
                        m = dict(m, agree=True, summary=m["summary"] + " (agrees with refnet quirks=cv2)")
                rep.tasks.append(TaskAgreement(kind.replace("detect_", "detect:"), outs, cid, bool(m.pop("agree")),
                                               m.pop("summary"), m))

    def _qref_outputs(self) -> dict[str, np.ndarray]:
        """refnet float64 quirks="cv2" at the net outputs (when the quirks change anything here)."""
        got = dict(self.kept.get("qref", {}))
        missing = [o for o in self.outs if o not in got]
        if missing and self.qnet is not None and self.changes:
            t = time.perf_counter()
            try:
                got.update(self.qnet.forward(self.feeds, outputs=missing, precision="float64"))
            except Exception:  # the quirks net is for attribution only
                pass
            self.time("refnet float64 quirks=cv2", time.perf_counter() - t)
        return got

    def _band(self, cid: str, out: str) -> float:
        """The absolute difference the per-layer analysis accepted at output ``out`` (0 when it differs)."""
        c = self.comp.get(cid)
        row = next((r for r in c.rows if r.layer == out), None) if c else None
        if row is None or row.status == "differ" or math.isnan(row.max_abs):
            return 0.0
        if row.status == "known_deviation" and self.rois is not None:
            return 0.0  # two-stage: other proposals, other detections; judged against refnet quirks=cv2
        return float(row.max_abs) if math.isfinite(row.max_abs) else 0.0


def _tol(cid: str) -> float:
    return tolerances.COMPARE_F32 if cid == CMP_F32 else tolerances.COMPARE_CV2


def _model_label(net: Any) -> str:
    from pathlib import Path

    src = net.graph.source
    return Path(src).name if src else "?"

