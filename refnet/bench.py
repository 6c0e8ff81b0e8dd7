"""Side-by-side latency of refnet and cv2.dnn on one model (``refnet bench``).

Both run in this process on the same input. **Timing method** (fair timing, issue 17): the
engines alternate, one timed call each per round, and every timed call is preceded by the
engine's own thread set-up, a pause (``--pause``, default 0.1 s) and an untimed warm-up call
of the same engine. The pause lets the other engine's BLAS/OpenMP worker threads, which keep
spin-waiting for a while after each call, go to sleep before the timed call; timed back to
back, refnet's spinning OpenBLAS threads slowed the cv2 call that followed and made refnet
look ahead. The medians are compared.

Threads: ``--threads N`` gives numba, the BLAS and cv2 N threads
(:func:`refnet.runtime.threads.set_num_threads`); ``--threads auto`` runs each engine at its
default (refnet's load-aware default, cv2's own). ``--one-thread`` adds a row for refnet at one
thread. ``--busy-neighbour`` runs a spinning process (bounded in time, stopped at the end)
beside the measurement, the case of a machine where another process holds a core;
``--busy-neighbour memory`` one that streams memory instead (it also takes the memory bus and
the shared cache, like a host whose other tenants stream data: there a forward pass whose
weights and activations no longer stay in the last-level cache slows more than a lean one).

The work is counted as 2 x the multiply-accumulates of :func:`refnet.info.layer_macs`
(grouped and depthwise convolutions counted with ``C_in / groups``, unlike cv2's
``getFLOPS``), and both rates are put against the machine's numpy float32 GEMM rate measured
in the same run.

cv2 runs with its default fusion on (its fastest configuration) and a fresh ``cv2.dnn.Net``
per input shape (cv2 may return garbage when one Net is reused with another size).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import RefnetError, ShapeError

__all__ = ["BenchResult", "gemm_gflops", "model_gflop", "input_shapes_for", "random_inputs", "alternate",
           "bench_model", "peak_rss_mb", "busy_neighbour", "load_average", "METHOD"]

METHOD = ("alternating rounds; before each timed call: the engine's thread set-up, a {pause:g} s pause and an "
          "untimed warm-up call of the same engine; refnet in its steady state (numba loaded)")


@dataclass
class BenchResult:
    """One model benchmarked: medians in milliseconds, rates in GFLOP/s."""

    model: str
    framework: str
    input_shapes: dict[str, tuple[int, ...]]
    precision: str
    threads: dict[str, int]
    threading_layer: str
    repeat: int
    gflop: float
    gemm_gflops: float
    refnet_ms: float
    cv2_ms: float | None = None
    refnet_runs_ms: list[float] = field(default_factory=list)
    cv2_runs_ms: list[float] = field(default_factory=list)
    note: str = ""
    method: str = ""
    busy_neighbour: bool = False
    neighbour_kind: str = ""  # "spin" or "memory" while busy_neighbour (see busy_neighbour())
    refnet_1t_ms: float | None = None  # refnet at one thread (--one-thread)
    refnet_1t_runs_ms: list[float] = field(default_factory=list)
    peers_ms: dict[str, float] = field(default_factory=dict)  # ONNX peers (--peers): engine name -> median
    peers_runs_ms: dict[str, list[float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # the 1-minute load average at the start and the end
    auto_threads: dict[int, int] = field(default_factory=dict)  # --threads auto: decisions made, per count
    auto_small: int = 0  # --threads auto: passes run on one thread as smaller than AUTO_MIN_WORK

    @property
    def ratio_vs_best_peer(self) -> float | None:
        """refnet median / the fastest ONNX peer's median (onnxruntime, cv2 5.x)."""
        return self.refnet_ms / min(self.peers_ms.values()) if self.peers_ms else None

    @property
    def ratio(self) -> float | None:
        """refnet median / cv2 median (< 1: refnet is faster)."""
        return None if not self.cv2_ms else self.refnet_ms / self.cv2_ms

    @staticmethod
    def paired(a: Sequence[float], b: Sequence[float]) -> float | None:
        """Median over rounds of a[i] / b[i] (both timed in the same round, so a load that
        comes and goes hits each pair alike; steadier than a ratio of medians on a busy machine)."""
        pairs = [x / y for x, y in zip(a, b) if y > 0]
        return float(np.median(pairs)) if pairs else None

    @property
    def refnet_gflops(self) -> float:
        return self.gflop / (self.refnet_ms / 1e3) if self.refnet_ms > 0 else 0.0

    @property
    def cv2_gflops(self) -> float | None:
        return self.gflop / (self.cv2_ms / 1e3) if self.cv2_ms else None

    def images_per_s(self, ms: float | None) -> float | None:
        n = next(iter(self.input_shapes.values()))[0] if self.input_shapes else 1
        return None if not ms else n / (ms / 1e3)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ratio=self.ratio, refnet_gflops=self.refnet_gflops, cv2_gflops=self.cv2_gflops,
                 ratio_vs_one_thread=(self.refnet_ms / self.refnet_1t_ms if self.refnet_1t_ms else None),
                 paired_ratio=self.paired(self.refnet_runs_ms, self.cv2_runs_ms),
                 paired_ratio_vs_one_thread=self.paired(self.refnet_runs_ms, self.refnet_1t_runs_ms),
                 refnet_images_per_s=self.images_per_s(self.refnet_ms),
                 cv2_images_per_s=self.images_per_s(self.cv2_ms), ratio_vs_best_peer=self.ratio_vs_best_peer)
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        return d

    def table(self) -> str:
        """The human-readable report printed by ``refnet bench``."""
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.input_shapes.items())
        thr = ", ".join(f"{k} {v}" for k, v in self.threads.items())
        lines = [
            f"model     {self.model} ({self.framework}), input {shapes}, refnet {self.precision}",
            f"threads   {thr}; numba threading layer {self.threading_layer}; {self.repeat} alternating runs each",
            f"method    {self.method}" + _NEIGHBOUR_NOTE.get(self.neighbour_kind if self.busy_neighbour else "", ""),
            f"work      {self.gflop:.3f} GFLOP (2 x MACs, grouped convs counted per group)",
            f"machine   numpy float32 GEMM {self.gemm_gflops:.1f} GFLOP/s (same threads, measured now)",
            "",
            f"{'':10s}{'median ms':>11s}{'min ms':>9s}{'GFLOP/s':>9s}{'% of GEMM':>11s}{'images/s':>10s}",
        ]
        rows = [("refnet", self.refnet_ms, self.refnet_runs_ms)]
        if self.refnet_1t_ms is not None:
            rows.append(("refnet 1t", self.refnet_1t_ms, self.refnet_1t_runs_ms))
        if self.cv2_ms is not None:
            rows.append(("cv2.dnn", self.cv2_ms, self.cv2_runs_ms))
        rows += [(k, v, self.peers_runs_ms.get(k, [])) for k, v in self.peers_ms.items()]
        width = max(10, *(len(r[0]) + 1 for r in rows))
        lines[-1] = f"{'':{width}s}" + lines[-1][10:]
        for name, ms, runs in rows:
            rate = self.gflop / (ms / 1e3) if ms > 0 else 0.0
            pct = 100.0 * rate / self.gemm_gflops if self.gemm_gflops > 0 else float("nan")
            lines.append(f"{name:{width}s}{ms:11.2f}{min(runs) if runs else ms:9.2f}{rate:9.1f}{pct:10.0f}%"
                         f"{self.images_per_s(ms) or 0:10.1f}")
        if self.ratio is not None:
            lines.append(f"ratio     refnet / cv2.dnn = {self.ratio:.2f} (median of per-round ratios "
                         f"{self.paired(self.refnet_runs_ms, self.cv2_runs_ms):.2f})")
        if self.refnet_1t_ms:
            lines.append(f"ratio     refnet / refnet at 1 thread = {self.refnet_ms / self.refnet_1t_ms:.2f} (median of "
                         f"per-round ratios {self.paired(self.refnet_runs_ms, self.refnet_1t_runs_ms):.2f})")
        if self.peers_ms:
            best = min(self.peers_ms, key=self.peers_ms.__getitem__)
            lines.append(f"ratio     refnet / fastest ONNX peer ({best}) = {self.ratio_vs_best_peer:.2f} (median of "
                         f"per-round ratios {self.paired(self.refnet_runs_ms, self.peers_runs_ms[best]):.2f})")
        if self.load:
            lines.append(f"load      1-minute load average {' -> '.join(f'{v:.2f}' for v in self.load)} "
                         f"(start -> end; {self.cores} cores)")
        if self.auto_threads:
            lines.append("auto      refnet's default chose " + ", ".join(
                f"{n} thread{'s' if n > 1 else ''} x{c}" for n, c in sorted(self.auto_threads.items())))
            if set(self.auto_threads) == {1}:
                lines.append("          (the counts of 'refnet 1t' in every round: the two rows differ by the "
                             "machine's noise; refnet/runtime/threads.py)")
        if self.auto_small:
            head = "          and" if self.auto_threads else "auto     "
            lines.append(f"{head} ran {self.auto_small} passes on one thread where the load allowed more (a pass "
                         "under AUTO_MIN_WORK MACs; refnet/runtime/threads.py)")
        if self.note:
            lines.append(f"note      {self.note}")
        return "\n".join(lines)

    @property
    def cores(self) -> int:
        return os.cpu_count() or 1


# ---- measurement helpers -----------------------------------------------------------------------
def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def gemm_gflops(n: int = 1024, repeat: int = 7) -> float:
    """The machine's numpy float32 GEMM rate (``n x n @ n x n``, best of ``repeat``) in GFLOP/s,
    with whatever BLAS thread count is in force."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def _macs_fallback(node: Any, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
    """MACs of conv/deconv/linear layers (used when refnet.info is unavailable)."""
    w = node.params.get("weight")
    if w is None:
        return 0
    if node.op == "conv":
        return int(np.prod(outs[0])) * int(np.prod(w.shape[1:]))
    if node.op == "deconv":
        return int(np.prod(ins[0])) * int(np.prod(w.shape[1:]))
    if node.op == "linear":
        from refnet.ops.registry import attrs

        axis = attrs(node)["axis"]
        return int(np.prod(ins[0][:axis])) * int(w.size)
    return 0


def model_gflop(net: Any, input_shapes: Mapping[str, Sequence[int]]) -> float:
    """2 x the net's multiply-accumulates for these input shapes, in GFLOP."""
    try:
        from refnet.info import layer_macs
    except ImportError:  # pragma: no cover - info.py ships with refnet
        layer_macs = _macs_fallback
    shapes = net.infer_shapes({k: tuple(v) for k, v in input_shapes.items()})
    total = 0
    for node in net.graph.nodes:
        ins = [shapes[t] for t in node.inputs]
        outs = [shapes[t] for t in node.outputs]
        if any(d < 0 for s in ins + outs for d in s):  # run-time sized (detections): no MACs counted
            continue
        total += layer_macs(node, ins, outs)
    return 2.0 * total / 1e9


def input_shapes_for(net: Any, batch: int = 1, size: Sequence[int] | None = None) -> dict[str, tuple[int, ...]]:
    """Input shapes: the declared ones with batch ``batch``, or ``(batch, C, H, W)`` from
    ``size = (W, H)`` (C from the declaration, else 3)."""
    out: dict[str, tuple[int, ...]] = {}
    for name in net.input_names:
        decl = net.input_shapes.get(name)
        if size is not None:
            c = int(decl[1]) if decl and len(decl) >= 2 and decl[1] else 3
            out[name] = (int(batch), c, int(size[1]), int(size[0]))
        elif decl and all(int(d) > 0 for d in decl):
            out[name] = (int(batch),) + tuple(int(d) for d in decl[1:])
        else:
            raise ShapeError(f"the model does not declare the shape of input {name!r}; pass --input-size W H")
    return out


def random_inputs(shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded uniform [0, 1) float32 inputs of these shapes (drawn in float64, then float32:
    refused up front, BudgetError, when all of them exceed the memory budget)."""
    from refnet.runtime.budget import check_memory

    n = sum(math.prod(max(0, int(d)) for d in s) for s in shapes.values())
    check_memory(n * (8 + 4), "a random input of " + " + ".join("x".join(map(str, s)) for s in shapes.values()))
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0.0, 1.0, tuple(s)).astype(np.float32) for k, s in shapes.items()}


def alternate(fns: Sequence[Callable[[], Any]], repeat: int, warmup: int = 1, *, pause: float = 0.0,
              warm_each: bool = False, prepare: Sequence[Callable[[], Any] | None] | None = None,
              self_timed: Sequence[bool] | None = None) -> list[list[float]]:
    """Seconds per call of each function, ``repeat`` rounds of one call each in turn (after
    ``warmup`` untimed rounds). Fair mode (see the module docstring): ``prepare[i]`` (the
    engine's set-up), a ``pause`` in seconds and, with ``warm_each``, an untimed call of the
    same function before every timed call. ``self_timed[i]``: function i returns its own
    duration in seconds (an engine timed in another process), which is used instead."""
    own = list(self_timed) if self_timed is not None else [False] * len(fns)
    prep = list(prepare) if prepare is not None else [None] * len(fns)
    for _ in range(warmup):
        for p, f in zip(prep, fns):
            if p is not None:
                p()
            f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, f in enumerate(fns):
            if prep[i] is not None:
                prep[i]()
            if pause > 0:
                time.sleep(pause)
            if warm_each:
                f()
            t0 = time.perf_counter()
            r = f()
            dt = time.perf_counter() - t0
            times[i].append(float(r) if own[i] else dt)
    return times


# the neighbour kinds of :func:`busy_neighbour` (``refnet bench --busy-neighbour [KIND]``)
NEIGHBOURS = ("spin", "memory")
MEMORY_NEIGHBOUR_MIB = 64  # each of the memory neighbour's two arrays: far more than any cache here


_NEIGHBOUR_NOTE = {"spin": "; a spinning neighbour process holds one core",
                   "memory": f"; a memory-streaming neighbour process (2 x {MEMORY_NEIGHBOUR_MIB} MiB copies) "
                             "holds one core and the memory bus"}


def _neighbour_code(seconds: float, kind: str) -> str:
    """The neighbour process's program: ``spin`` a pure-Python busy loop (one core, no memory
    traffic); ``memory`` copies two MEMORY_NEIGHBOUR_MIB arrays back and forth (one core plus the
    memory bus and the shared last-level cache, the state of a host whose other tenants stream
    memory: onnxruntime and refnet then slow by different factors)."""
    end = f"import time\nend = time.monotonic() + {float(seconds)!r}\n"
    if kind == "spin":
        return end + "while time.monotonic() < end:\n    pass\n"
    if kind == "memory":
        n = MEMORY_NEIGHBOUR_MIB * 2**20 // 8
        return end + (f"import numpy as np\na = np.ones({n}); b = np.empty_like(a)\n"
                      "while time.monotonic() < end:\n    np.copyto(b, a)\n    np.copyto(a, b)\n")
    raise ValueError(f"unknown neighbour kind {kind!r} (one of {', '.join(NEIGHBOURS)})")


@contextmanager
def busy_neighbour(seconds: float = 600.0, kind: str = "spin") -> Iterator[int]:
    """Run a neighbour process of ``kind`` (see :func:`_neighbour_code`; it ends by itself after
    ``seconds``) for the duration of the ``with`` block; yields its pid and stops it at the end."""
    code = _neighbour_code(seconds, kind)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2 if kind == "spin" else 0.5)  # let it get going (and the scheduler see it)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _cv2_net(net: Any) -> Any:
    try:
        from refnet.crosscheck.backends import cv2_net_for
    except ImportError:  # pragma: no cover
        cv2_net_for = None
    if getattr(net, "files", None) and net.files[0] == "onnx":
        import cv2

        return cv2.dnn.readNetFromONNX(str(net.files[1][0]))
    if cv2_net_for is not None:
        return cv2_net_for(net)
    import cv2  # pragma: no cover

    kind, paths = net.files  # pragma: no cover
    if kind == "caffe":  # pragma: no cover
        return cv2.dnn.readNetFromCaffe(str(paths[0]), str(paths[1]) if paths[1] else None)
    if kind == "torch":  # pragma: no cover
        return cv2.dnn.readNetFromTorch(str(paths[0]))
    return cv2.dnn.readNetFromDarknet(str(paths[0]), str(paths[1]) if paths[1] else None)  # pragma: no cover


def _cv2_runner(net: Any, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    cv = _cv2_net(net)
    outs = list(net.output_names)
    names = [n for n in cv.getLayerNames()] if hasattr(cv, "getLayerNames") else []
    outs = [o for o in outs if not names or o in names] or None
    multi = len(feeds) > 1

    def run():
        for k, v in feeds.items():
            if multi:
                cv.setInput(v, k)
            else:
                cv.setInput(v)
        return cv.forward(outs) if outs else cv.forward()

    return run


def _threading_layer() -> str:
    import numba

    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel region has run yet
        return str(numba.config.THREADING_LAYER)


def bench_model(net: Any, inputs: Mapping[str, np.ndarray] | None = None, *, batch: int = 1,
                size: Sequence[int] | None = None, threads: int | str = 1, repeat: int = 10, warmup: int = 2,
                precision: str = "float32", with_cv2: bool = True, gemm: float | None = None,
                name: str | None = None, blas_threads: int | None = None, pause: float = 0.1,
                one_thread: bool = False, neighbour: bool | str = False, peers: Sequence[str] = (),
                workdir: str | None = None) -> BenchResult:
    """Benchmark ``net.forward`` (``precision``) against cv2.dnn on the same inputs (random
    ones of the declared shapes, batch ``batch``, or ``size = (W, H)`` when not given), with
    ``threads`` threads for numba, cv2 and (unless ``blas_threads`` says otherwise) the BLAS;
    ``threads="auto"``: each engine's default. Timing method: see the module docstring
    (``pause`` seconds; ``pause=0`` times back to back with no warm-up call per round).
    ``one_thread`` adds refnet at one thread; ``neighbour`` says a busy neighbour runs (the
    caller starts it, see :func:`busy_neighbour`; True or ``"spin"``: a spinning one, ``"memory"``).
    ``peers``: also time these ONNX engines
    (``"onnxruntime"``, ``"cv2-5"``; see :mod:`refnet.bench_peers`) with the same threads and
    protocol, on the model's ONNX file or refnet's export of it (written into ``workdir``)."""
    import tempfile
    from contextlib import ExitStack

    with ExitStack() as stack:
        if peers and workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="refnet-bench-"))
        return _bench_model(stack, net, inputs, batch=batch, size=size, threads=threads, repeat=repeat,
                            warmup=warmup, precision=precision, with_cv2=with_cv2, gemm=gemm, name=name,
                            blas_threads=blas_threads, pause=pause, one_thread=one_thread, neighbour=neighbour,
                            peers=peers, workdir=workdir)


def _add_peers(stack: Any, net: Any, feeds: Mapping[str, np.ndarray], threads: int | str, peers: Sequence[str],
               workdir: str | None, fns: list, prep: list, own: list) -> tuple[list[str], str]:
    """Append the ONNX peers' calls to ``fns``; returns their names and a note on any that could not run."""
    from refnet.bench_peers import PEERS, Cv2WorkerTimer, cv5_python, onnx_file_for, ort_runner

    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    names: list[str] = []
    notes: list[str] = []
    try:
        path = onnx_file_for(net, {k: v.shape for k, v in feeds.items()}, str(workdir))
    except Exception as e:  # no ONNX form of this model (a layer the exporter refuses)
        return names, f"ONNX peers not run: {type(e).__name__}: {e}"
    for p in peers:
        try:
            if p == "onnxruntime":
                fn, label = ort_runner(path, feeds, threads)
                fn()
                fns.append(fn)
                own.append(False)
            else:
                py = cv5_python()
                if py is None:
                    raise RefnetError("REFNET_CV5_PYTHON is not set (make cv5)")
                timer = stack.enter_context(Cv2WorkerTimer(py, path, feeds, threads, workdir=str(workdir)))
                fns.append(timer)
                own.append(True)
                label = timer.name
            prep.append(None)
            names.append(label)
        except Exception as e:
            notes.append(f"{p} not run: {' '.join(str(e).split())[-200:]}")
    return names, "; ".join(notes)


def _bench_model(stack: Any, net: Any, inputs: Mapping[str, np.ndarray] | None, *, batch: int,
                 size: Sequence[int] | None, threads: int | str, repeat: int, warmup: int, precision: str,
                 with_cv2: bool, gemm: float | None, name: str | None, blas_threads: int | None, pause: float,
                 one_thread: bool, neighbour: bool | str, peers: Sequence[str], workdir: str | None) -> BenchResult:
    import cv2

    from refnet.runtime.smallnet import end_numpy_phase
    from refnet.runtime.threads import decisions, get_num_threads, set_num_threads, small_passes

    auto = threads == "auto"
    load0 = load_average()

    def refnet_threads() -> None:
        set_num_threads("auto") if auto else set_num_threads(int(threads), blas_threads)

    def cv2_threads() -> None:
        cv2.setNumThreads(-1 if auto else int(threads))  # -1: cv2's default

    refnet_threads()
    feeds = dict(inputs) if inputs is not None else random_inputs(input_shapes_for(net, batch, size))
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    fwd = lambda: net.forward(feeds, precision=precision)  # noqa: E731
    fns: list[Callable[[], Any]] = [fwd]
    prep: list[Callable[[], Any] | None] = [refnet_threads]
    if one_thread:
        fns.append(fwd)
        prep.append(lambda: set_num_threads(1))
    note = ""
    if with_cv2:
        try:
            run_cv2 = _cv2_runner(net, feeds)
            cv2_threads()
            run_cv2()  # (cv2 may read a model and fail only at its first forward: then not timed, a note)
            fns.append(run_cv2)
            prep.append(cv2_threads)
        except (ValueError, OSError, RefnetError) as e:
            note = f"cv2.dnn not run: {e}"
        except Exception as e:  # cv2.error
            note = f"cv2.dnn not run: {str(e).strip().splitlines()[-1]}"
    n_own = len(fns)
    own = [False] * n_own
    peer_names: list[str] = []
    if peers:
        peer_names, pnote = _add_peers(stack, net, feeds, threads, peers, workdir, fns, prep, own)
        note = "; ".join(x for x in (note, pnote) if x)
    for p, f in zip(prep, fns):  # first runs (planning, cv2 set-up) may load libraries
        if p is not None:
            p()
        f()
    end_numpy_phase()  # the steady state of a stream: mid-sized nets on numba (refnet.runtime.smallnet)
    refnet_threads()
    thread_counts = get_num_threads()
    if auto:
        thread_counts["cv2"] = int(cv2.getNumThreads()) if hasattr(cv2, "getNumThreads") else -1
    t_start, small0 = time.monotonic(), small_passes()
    times = alternate(fns, repeat, warmup, pause=pause, warm_each=pause > 0, prepare=prep, self_timed=own)
    chosen: dict[int, int] = {}
    for n, _, _ in decisions(since=t_start) if auto else []:
        chosen[n] = chosen.get(n, 0) + 1
    load1 = load_average()
    gflop = model_gflop(net, shapes)
    refnet_threads()
    gemm_rate = gemm if gemm is not None else gemm_gflops()
    ms = [[t * 1e3 for t in ts] for ts in times]
    src = net.graph.source or (net.files[1][0] if net.files else "?")
    i_cv2 = 2 if one_thread else 1
    peer_ms = {k: ms[n_own + j] for j, k in enumerate(peer_names)}
    method = METHOD.format(pause=pause) if pause > 0 else "alternating rounds, back to back (no pause, no warm-up)"
    return BenchResult(
        model=name or Path(str(src)).name, framework=net.graph.framework or "?", input_shapes=shapes,
        precision=precision, threads=thread_counts, threading_layer=_threading_layer(), repeat=repeat,
        gflop=gflop, gemm_gflops=gemm_rate, refnet_ms=float(np.median(ms[0])),
        cv2_ms=float(np.median(ms[i_cv2])) if n_own > i_cv2 else None, refnet_runs_ms=ms[0],
        cv2_runs_ms=ms[i_cv2] if n_own > i_cv2 else [], note=note, method=method, busy_neighbour=bool(neighbour),
        neighbour_kind=(neighbour if isinstance(neighbour, str) else "spin") if neighbour else "",
        refnet_1t_ms=float(np.median(ms[1])) if one_thread else None, refnet_1t_runs_ms=ms[1] if one_thread else [],
        peers_ms={k: float(np.median(v)) for k, v in peer_ms.items()}, peers_runs_ms=peer_ms,
        load=[v for v in (load0, load1) if v is not None], auto_threads=chosen,
        auto_small=small_passes() - small0 if auto else 0)


# ---- peak resident memory, in a fresh process per implementation -------------------------------------
_RSS_CHILD = r"""
import json, sys
import numpy as np


def hwm():  # VmHWM of this process image (ru_maxrss would include the parent's peak before exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


impl, paths, shapes, threads = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
threads = None if threads == "auto" else int(threads)
if impl == "cv2":
    import cv2
    if threads is not None:
        cv2.setNumThreads(threads)
    base = hwm()
    p = paths
    if p[0].endswith((".t7", ".net")):
        net = cv2.dnn.readNetFromTorch(p[0])
    elif p[0].endswith(".cfg"):
        net = cv2.dnn.readNetFromDarknet(*p)
    else:
        net = cv2.dnn.readNetFromCaffe(*p)
    rng = np.random.default_rng(0)
    feeds = {k: rng.uniform(0, 1, tuple(s)).astype(np.float32) for k, s in shapes.items()}
    for k, v in feeds.items():
        net.setInput(v, k) if len(feeds) > 1 else net.setInput(v)
    net.forward()
else:
    import refnet
    if threads is not None:
        from refnet.net import set_num_threads
        set_num_threads(threads)
    base = hwm()
    net = refnet.load(*paths)
    rng = np.random.default_rng(0)
    feeds = {k: rng.uniform(0, 1, tuple(s)).astype(np.float32) for k, s in shapes.items()}
    net.forward(feeds, precision=impl)
peak = hwm()
print(json.dumps({"peak_mb": peak / 1024, "base_mb": base / 1024}))
"""


def peak_rss_mb(paths: Sequence[str], shapes: Mapping[str, Sequence[int]], impl: str = "float32",
                threads: int | str = 1) -> dict[str, float]:
    """Peak resident memory of loading ``paths`` and one forward pass, in a fresh Python
    process: ``impl`` "float32"/"float64" (refnet) or "cv2". Returns ``{"peak_mb", "base_mb"}``
    (base: after the imports, before the model is read)."""
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", _RSS_CHILD, impl, json.dumps([str(p) for p in paths]),
                          json.dumps({k: list(v) for k, v in shapes.items()}), str(threads)],
                         capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        raise RefnetError(f"peak-memory child ({impl}) failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
