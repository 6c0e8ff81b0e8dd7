"""Proof that an exported ONNX file computes what the source model computes.

Every backend (onnxruntime, cv2 4.x, cv2 5.x worker) runs the written file on the same input;
refnet's float64 run of the *source* model is the reference. Per output: the worst absolute
error scaled by the reference's range, ``max|b - r| / max(1, max|r|)`` (within ``TOL`` = 1e-4);
an output whose reference is ill-conditioned in float32 (refnet's own float32 run of the source
is already off by more than ``TOL / FLOOR_FACTOR``) passes when the backend is within
``FLOOR_FACTOR`` times that float32 floor, and the table says "float32-limited";
per layer: the same for every refnet tensor the ONNX graph also names; task level: classes
(top-5 with near-ties allowed), SSD/YOLO detections (same labels, boxes within 1e-4), pixels
(argmax per pixel of a segmentation map), everything else by the numeric check.

A backend that cannot run the file is reported as such. The verdict is AGREE when every target
backend (onnxruntime, cv2 5.x and later: where the converted file is meant to run) ran and agrees;
otherwise DIFFER. cv2 4.x is shown for reference and does not decide the verdict: it lacks
standard ops (NonMaxSuppression with dynamic shapes, MaxPool's Indices output) and, run in float32
without per-layer checks, may flip a near-tie max-pooling argmax (the table names what it did).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TOL", "BackendResult", "Verification", "verify_onnx", "counterparts", "reference_only"]

TOL = 1e-4
FLOOR_FACTOR = 3.0  # a backend within 3x refnet's own float32 error of the reference is float32-limited
_TIE = 1e-4  # a class/pixel decision whose reference margin is below this may go either way


def scaled_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max|got - ref| / max(1, max|ref|) (inf on a shape mismatch or a non-finite difference)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        if got.size == ref.size:
            got = got.reshape(ref.shape)
        else:
            return float("inf")
    if ref.size == 0:
        return 0.0
    d = np.abs(got - ref)
    both_nan = np.isnan(got) & np.isnan(ref)
    same_inf = np.isinf(ref) & (got == ref)
    d = np.where(both_nan | same_inf, 0.0, d)
    if not np.all(np.isfinite(d)):
        return float("inf")
    finite = ref[np.isfinite(ref)]
    scale = max(1.0, float(np.max(np.abs(finite))) if finite.size else 1.0)
    return float(d.max()) / scale


# ---- task-level agreement ------------------------------------------------------------------------
def _classes(got: np.ndarray, ref: np.ndarray, k: int = 5) -> tuple[bool, str]:
    r, g = ref.reshape(-1), got.reshape(-1).astype(np.float64)
    k = min(k, r.size)
    top_r = np.argsort(-r, kind="stable")[:k]
    top_g = np.argsort(-g, kind="stable")[:k]
    for i, (a, b) in enumerate(zip(top_r, top_g)):
        if a != b and abs(r[a] - r[b]) > _TIE:
            return False, f"top-{k} differs at rank {i + 1}: {int(b)} vs refnet {int(a)}"
    return True, f"top-{k} classes identical (top-1 {int(top_r[0])})"


def _ssd_rows(out: np.ndarray) -> np.ndarray:
    rows = np.asarray(out, dtype=np.float64).reshape(-1, 7)
    return rows[rows[:, 2] > 0]


def _detections(got: np.ndarray, ref: np.ndarray, kind: str) -> tuple[bool, str]:
    if kind == "ssd":
        rg, rr = _ssd_rows(got), _ssd_rows(ref)
        key = lambda rows: [(int(r[1]), r) for r in rows]  # noqa: E731
        if len(rg) != len(rr):
            return False, f"{len(rg)} detections vs refnet {len(rr)}"
        unmatched = list(key(rg))
        for lab, r in key(rr):
            best = None
            for j, (lg, g) in enumerate(unmatched):
                if lg == lab and np.max(np.abs(g[2:] - r[2:])) <= TOL * max(1.0, np.max(np.abs(r[3:]))):
                    best = j
                    break
            if best is None:
                return False, f"refnet detection (label {lab}, score {r[2]:.4f}) has no counterpart"
            unmatched.pop(best)
        return True, f"{len(rr)} detections identical (label, score, box)"
    # YOLO rows [x, y, w, h, obj, scores...]: the row's best class where its score is > 0
    g2 = np.asarray(got, dtype=np.float64).reshape(-1, ref.shape[-1])
    r2 = np.asarray(ref, dtype=np.float64).reshape(-1, ref.shape[-1])
    rs, gs = r2[:, 5:], g2[:, 5:]
    live = (rs.max(axis=1) > _TIE) | (gs.max(axis=1) > _TIE)
    bad = 0
    for i in np.flatnonzero(live):
        a, b = int(np.argmax(rs[i])), int(np.argmax(gs[i]))
        if a != b and abs(rs[i, a] - rs[i, b]) > _TIE:
            bad += 1
        elif np.max(np.abs(g2[i, :4] - r2[i, :4])) > TOL * max(1.0, np.max(np.abs(r2[i, :4]))):
            bad += 1
    if bad:
        return False, f"{bad} of {int(live.sum())} scored rows differ in class or box"
    return True, f"{int(live.sum())} scored rows: same classes and boxes"


def _pixels(got: np.ndarray, ref: np.ndarray) -> tuple[bool, str]:
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64).reshape(r.shape)
    ar, ag = r.argmax(axis=1), g.argmax(axis=1)
    diff = ar != ag
    if diff.any():
        srt = np.sort(r, axis=1)
        margin = srt[:, -1] - srt[:, -2]
        real = diff & (margin > _TIE)
        if real.any():
            return False, f"{int(real.sum())} of {ar.size} pixels classified differently"
    return True, f"{ar.size - int(diff.sum())}/{ar.size} pixels identical" + (
        f" ({int(diff.sum())} near-ties)" if diff.any() else "")


def task_kind(net: Any, name: str, shape: tuple[int, ...]) -> str:
    """How an output is judged: "ssd", "yolo", "classes", "pixels" or "values"."""
    prod = next((n for n in net.graph.nodes if name in n.outputs), None)
    op = prod.op if prod is not None else ""
    if op == "detection_output":
        return "ssd"
    if op in ("region", "yolo"):
        return "yolo"
    if len(shape) == 2 and shape[0] == 1 and shape[1] > 1 or len(shape) == 4 and shape[0] == 1 and \
            shape[2:] == (1, 1) and shape[1] > 1:
        return "classes"
    if len(shape) == 4 and shape[1] > 3 and shape[2] > 1 and shape[3] > 1:
        return "pixels"
    return "values"


def empty_detections(kind: str, ref: np.ndarray) -> bool:
    """Whether a detection output ("ssd", "yolo") has nothing detected in the reference: its task
    check then compares no detection (an SSD output is all padding: its NMS path is not exercised)."""
    if kind == "ssd":
        return len(_ssd_rows(ref)) == 0
    if kind == "yolo":
        r2 = np.asarray(ref, dtype=np.float64).reshape(-1, ref.shape[-1])
        return not bool(np.any(r2[:, 5:] > _TIE))
    return False


def task_agreement(kind: str, got: np.ndarray, ref: np.ndarray) -> tuple[bool, str]:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.size != ref.size:  # a backend's wrong-sized output is a disagreement, not a crash of the check
        return False, f"shape {list(got.shape)} vs refnet {list(ref.shape)}"
    if kind == "ssd":
        return _detections(got, ref, "ssd")
    if kind == "yolo":
        return _detections(got, ref, "yolo")
    if kind == "classes":
        return _classes(got, ref)
    if kind == "pixels":
        return _pixels(got, ref)
    err = scaled_error(got, ref)
    return err <= TOL, f"values within {err:.1e}"


# ---- the run ----------------------------------------------------------------------------------------
def reference_only(backend_name: str) -> bool:
    """Whether a backend is shown for reference only and does not decide the verdict (cv2 4.x)."""
    return backend_name.startswith("cv2 4.")


@dataclass
class BackendResult:
    name: str
    ran: bool
    error: str | None = None
    outputs: dict[str, float] = field(default_factory=dict)  # output -> scaled error
    floors: dict[str, float] = field(default_factory=dict)  # output -> refnet float32's scaled error
    tasks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    layers: dict[str, float] = field(default_factory=dict)  # per-layer scaled errors (accumulated)
    local: dict[str, float] = field(default_factory=dict)  # per-layer local errors (see local_errors)
    layers_error: str | None = None
    seconds: float = 0.0

    @property
    def is_cv2_4(self) -> bool:
        return reference_only(self.name)

    def output_ok(self, name: str) -> bool:
        e = self.outputs[name]
        return e <= TOL or e <= FLOOR_FACTOR * self.floors.get(name, 0.0) or self.accumulated_only

    @property
    def accumulated_only(self) -> bool:
        """Every layer computes its own inputs right (local errors within TOL): what is left in the
        outputs is rounding carried along (e.g. a near-tie argmax in max pooling flipped by float32)."""
        return bool(self.local) and all(e <= TOL for e in self.local.values())

    @property
    def float32_limited(self) -> bool:
        return any(e > TOL for e in self.outputs.values())

    @property
    def agrees(self) -> bool:
        return self.ran and all(self.output_ok(k) for k in self.outputs) and all(ok for ok, _ in self.tasks.values())

    @property
    def worst(self) -> float:
        return max(self.outputs.values(), default=0.0)

    @property
    def status(self) -> str:
        if not self.ran:
            return "CANNOT RUN (cv2 4's limit)" if self.is_cv2_4 else "CANNOT RUN"
        st = "AGREE" if self.agrees else "DIFFER"
        if self.agrees and self.float32_limited:
            floor_ok = all(e <= TOL or e <= FLOOR_FACTOR * self.floors.get(k, 0.0) for k, e in self.outputs.items())
            st += " (float32-limited)" if floor_ok else " (accumulated rounding, every layer locally exact)"
        return st + (" (reference only)" if self.is_cv2_4 else "")


@dataclass
class Verification:
    model: str
    onnx_path: str
    input: str
    results: list[BackendResult]
    notes: list[str] = field(default_factory=list)  # what the proof does not cover (see empty_detections)

    @property
    def verdict(self) -> str:
        targets = [r for r in self.results if not r.is_cv2_4]
        return "AGREE" if targets and all(r.agrees for r in targets) else "DIFFER"

    def to_json(self) -> dict:
        return {
            "model": self.model, "onnx": self.onnx_path, "input": self.input, "tolerance": TOL,
            "verdict": self.verdict, "notes": self.notes,
            "backends": [{
                "name": r.name, "status": r.status, "error": r.error, "seconds": round(r.seconds, 3),
                "outputs": {k: {"scaled_error": v, "refnet_float32_error": r.floors.get(k), "ok": r.output_ok(k)}
                            for k, v in r.outputs.items()},
                "tasks": {k: {"ok": ok, "detail": d} for k, (ok, d) in r.tasks.items()},
                "layers": r.layers, "local": r.local, "layers_error": r.layers_error,
                "worst_layer": max(r.layers.items(), key=lambda kv: kv[1])[0] if r.layers else None,
            } for r in self.results],
        }

    def table(self) -> str:
        lines = [f"{'backend':<58} {'status':<26} {'worst output':>12} {'worst layer':>12}  task"]
        for r in self.results:
            wl = max(r.layers.values(), default=float("nan"))
            task = "; ".join(f"{k}: {d}" for k, (ok, d) in r.tasks.items()) if r.ran else (r.error or "")
            lines.append(f"{r.name[:58]:<58} {r.status:<26} "
                         f"{(f'{r.worst:.1e}' if r.ran else '-'):>12} {(f'{wl:.1e}' if r.layers else '-'):>12}  "
                         f"{task[:160]}")
            if r.ran and r.layers_error:
                lines.append(f"{'':<58} per-layer run failed: {r.layers_error[:120]}")
        return "\n".join(lines)


def counterparts(net: Any, onnx_path: str) -> list[str]:
    """Refnet tensors (layer outputs) that the ONNX graph names too."""
    from refnet.crosscheck.onnx_models import tensor_names

    names = set(tensor_names(onnx_path))
    out = []
    for n in net.graph.nodes:
        for t in n.outputs:
            if t in names:
                out.append(t)
    return out


def local_errors(net: Any, feeds: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per layer: the backend's output vs refnet's float64 op applied to the backend's own inputs of
    that layer (DESIGN.md: a layer is wrong when its local error is over tolerance)."""
    from refnet.ops import registry
    from refnet.ops.registry import Ctx

    ctx = Ctx("float64")
    have = {**{k: np.asarray(v) for k, v in feeds.items()}, **got}
    shapes = net.infer_shapes({k: tuple(v.shape) for k, v in feeds.items()})
    out: dict[str, float] = {}
    for n in net.graph.nodes:
        if not all(t in have for t in n.inputs) or not all(t in got for t in n.outputs):
            continue
        xs = [have[t].astype(np.int64) if np.issubdtype(have[t].dtype, np.integer) else
              np.asarray(have[t], dtype=np.float64).reshape(shapes[t])
              for t in n.inputs]
        params = {k: np.asarray(v, dtype=np.float64) for k, v in n.params.items()}
        try:
            ys = registry.get(n.op, n.name).run(n, xs, params, ctx)
        except Exception:  # the backend's inputs may not be valid for the op (e.g. a garbled index)
            out[n.name] = float("inf")
            continue
        ys = ys if isinstance(ys, list) else [ys]
        out[n.name] = max(scaled_error(got[t], y) for t, y in zip(n.outputs, ys))
    return out


def _short_error(msg: str) -> str:
    """The informative part of a backend's error: cv2 names the ONNX node it could not import."""
    import re

    m = re.search(r"Node \[([^\]]+)\]:\(([^)]+)\) parse error: (?:OpenCV\([^)]*\) )?(\S+)", msg)
    if m:
        return f"cannot import ONNX node {m.group(1)} ({m.group(2)}) at {m.group(3).rsplit('/', 1)[-1]}"
    m = re.search(r"Can't create layer \"?([^\"]+)\"? of type \"?([^\"\s]+)", msg)
    if m:
        return f"no layer for ONNX op {m.group(2)} ({m.group(1)})"
    m = re.search(r"error: \(-\d+:[^)]*\) (.*)", msg)
    return (m.group(1) if m else msg)[-240:]


def _progress(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"  .. {msg}", file=sys.stderr, flush=True)


def check_verify_budget(net: Any, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> int:
    """Refuse a verification over the memory budget before it starts (BudgetError); return its
    estimate in bytes. It keeps the tensors ``names`` (outputs and per-layer counterparts) of
    refnet float64 (8 bytes an element) and, one backend at a time, of the backend (4) and in the
    backend's own buffers (4), the parameters in float64, and :func:`scaled_error`'s float64
    temporaries of the largest (5 arrays). Shapes that do not fit are left to the forward pass."""
    import math

    from refnet.errors import ShapeError
    from refnet.runtime.budget import check_memory

    try:
        shapes = net.infer_shapes({k: tuple(np.shape(v)) for k, v in feeds.items()})
    except ShapeError:
        return 0
    sizes = [math.prod(max(0, int(d)) for d in shapes[t]) for t in dict.fromkeys(names) if t in shapes]
    params = sum(int(getattr(v, "size", 0)) for n in net.graph.nodes for v in n.params.values()) * 8
    need = sum(sizes) * (8 + 4 + 4) + 5 * 8 * max(sizes, default=0) + params
    check_memory(need, f"verifying the ONNX file against refnet float64 ({len(sizes)} tensors kept, "
                       f"{sum(sizes):,} elements)")
    return need


def verify_onnx(net: Any, onnx_path: str, feeds: Mapping[str, np.ndarray], backends: Sequence[Any], *,
                per_layer: bool = True, input_label: str = "", quiet: bool = True) -> Verification:
    """Run ``onnx_path`` in each backend and compare with refnet float64 of ``net`` (see module doc)."""
    feeds32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
    outs = list(net.output_names)
    layers = counterparts(net, onnx_path) if per_layer else []
    check_verify_budget(net, feeds32, outs + layers)
    _progress(f"refnet float64 reference ({len(layers)} layer tensors)", quiet)
    ref = net.forward({k: v.astype(np.float64) for k, v in feeds32.items()}, outputs=sorted(set(outs) | set(layers)),
                      precision="float64")
    kinds = {o: task_kind(net, o, tuple(ref[o].shape)) for o in outs}
    floors: dict[str, float] = {}

    def floor_of(o: str) -> float:  # refnet float32's own error, computed only when a backend needs it
        if not floors:
            f32 = net.forward(feeds32, outputs=outs, precision="float32")
            floors.update({k: scaled_error(f32[k], ref[k]) for k in outs})
        return floors[o]
    results = []
    for be in backends:
        t0 = time.perf_counter()
        _progress(f"{be.name}: outputs", quiet)
        res = BackendResult(be.name, ran=True)
        try:
            got = be.run(onnx_path, feeds32, outs)
        except Exception as e:  # a backend failing is a result, not a crash of convert
            res.ran, res.error = False, _short_error(" ".join(str(e).split())) or type(e).__name__
            res.seconds = time.perf_counter() - t0
            results.append(res)
            continue
        for o in outs:
            res.outputs[o] = scaled_error(got[o], ref[o])
            if res.outputs[o] > TOL:
                res.floors[o] = floor_of(o)
            if kinds[o] == "values":  # no task rule: the numeric check (with the float32 floor) is the task
                res.tasks[o] = (res.output_ok(o), f"values within {res.outputs[o]:.1e}" + (
                    f" (refnet float32: {res.floors[o]:.1e})" if o in res.floors else ""))
            else:
                res.tasks[o] = task_agreement(kinds[o], got[o], ref[o])
        if layers:
            _progress(f"{be.name}: {len(layers)} layers", quiet)
            try:
                lg = be.run(onnx_path, feeds32, layers)
                res.layers = {t: scaled_error(lg[t], ref[t]) for t in layers}
                if any(e > TOL for e in res.outputs.values()):
                    res.local = local_errors(net, feeds32, lg)
            except Exception as e:
                res.layers_error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e) else ''}"
        res.seconds = time.perf_counter() - t0
        results.append(res)
    notes = [f"{o}: no detections in refnet's run on this input, so the task check compared none (only the raw "
             "values were): verify on an image with objects (--image) to exercise the detection path"
             for o in outs if empty_detections(kinds[o], ref[o])]
    return Verification(getattr(net.graph, "source", "") or "", onnx_path, input_label, results, notes)
