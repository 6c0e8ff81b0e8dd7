"""The ONNX peers of ``refnet bench`` and bench/: onnxruntime (in this process) and cv2 5.x (in
its own interpreter, the ``cv2@PYTHON`` worker), timed with the same thread count and the same
fair protocol as refnet and cv2 4.x (a pause and an untimed warm-up call before every timed
call, engines alternating round by round).

Both peers run an ONNX file: the model's own file when refnet read an ONNX model, else the
model written by :func:`refnet.export_onnx` (refnet's exporter; the same weights and graph).
The input dims are fixed to the benchmarked shapes first (cv2 needs them).

cv2 5.x cannot share a process with the cv2 4.x that refnet imports, so it runs in a long-lived
worker (``cv2_worker.py --serve``): the model is read once there, and each "run" request is
answered with the duration of one forward **measured inside the worker** (``perf_counter``
around ``setInput`` + ``forward``, as the in-process cv2 runner times it), so the pipe round
trip is not counted and the rounds still alternate with the in-process engines.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import RefnetError

__all__ = ["PEERS", "onnx_file_for", "ort_runner", "Cv2WorkerTimer", "cv5_python"]

PEERS = ("onnxruntime", "cv2-5")


def cv5_python() -> str | None:
    """The interpreter with OpenCV 5: ``REFNET_CV5_PYTHON`` (set by the Makefile), else the
    checkout's ``.venv-cv5`` (``make cv5``) when it exists; None without one."""
    p = os.environ.get("REFNET_CV5_PYTHON")
    if p:
        return p if os.path.exists(p) else None
    guess = Path(__file__).resolve().parents[1] / ".venv-cv5" / "bin" / "python"
    return str(guess) if guess.exists() else None


def onnx_file_for(net: Any, shapes: Mapping[str, Sequence[int]], workdir: str) -> str:
    """An ONNX file of ``net`` with its input dims fixed to ``shapes``: the file refnet read, or
    the model exported by refnet's ONNX exporter (written into ``workdir``)."""
    from refnet.crosscheck.onnx_models import with_outputs

    files = getattr(net, "files", None)
    if files and files[0] == "onnx":
        src = str(files[1][0])
    else:
        from refnet.export.onnx import export_onnx

        src = export_onnx(net, os.path.join(workdir, "model.onnx"), input_shapes=dict(shapes))
    import onnx

    outs = [o.name for o in onnx.load(src, load_external_data=False).graph.output]
    return with_outputs(src, outs, tmpdir=workdir, input_shapes=shapes)


def ort_runner(path: str, feeds: Mapping[str, np.ndarray], threads: int | str) -> tuple[Callable[[], Any], str]:
    """A call running ``path`` once in onnxruntime (CPU provider, all graph optimisations on --
    what a user runs), ``threads`` intra-op threads ("auto": onnxruntime's default); and its name."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads != "auto":
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ins = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
    return (lambda: sess.run(names, ins)), f"onnxruntime {ort.__version__} (ORT_ENABLE_ALL)"


class Cv2WorkerTimer:
    """cv2.dnn in another interpreter, serving timed forwards of one model (see the module
    docstring). Calling the object runs one forward and returns its seconds (measured in the
    worker). Use as a context manager; :meth:`close` stops the worker."""

    def __init__(self, python: str, path: str, feeds: Mapping[str, np.ndarray], threads: int | str,
                 workdir: str | None = None, timeout: float = 600.0) -> None:
        from refnet.crosscheck.cv2_backend import WORKER, _probe

        version = _probe(python)
        if version is None:
            raise RefnetError(f"no usable cv2 in {python}")
        self.name = f"cv2 {version} (worker)"
        wd = workdir or tempfile.mkdtemp(prefix="refnet-bench-cv5-")
        fin = os.path.join(wd, "feeds.npz")
        np.savez(fin, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        n = -1 if threads == "auto" else int(threads)
        self._proc = subprocess.Popen([python, WORKER, "--serve", path, fin, str(n)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        first = self._proc.stdout.readline().strip() if self._proc.stdout else ""
        if first != "ready":
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self.close()
            raise RefnetError(f"cv2 worker did not start: {(first + ' ' + err).strip()[-300:]}")

    def __call__(self) -> float:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        try:
            return float(line)
        except ValueError:
            raise RefnetError(f"cv2 worker failed: {line.strip()[-300:]}") from None

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.write("quit\n")
                    self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Cv2WorkerTimer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
