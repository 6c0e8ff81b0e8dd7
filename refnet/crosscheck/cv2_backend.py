"""cv2.dnn as an ONNX cross-check backend: in this process (cv2 4.x) or in another interpreter
(``cv2@PYTHON``, e.g. OpenCV 5 in its own virtual environment) through ``cv2_worker.py``.

cv2 aborts the interpreter on some ONNX files, so the worker form is the safe default: a crash
or a timeout of the worker is reported as :class:`BackendFailure` (that backend failing), never
as a failure of the caller."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refnet.crosscheck.onnx_models import with_outputs
from refnet.errors import RefnetError

__all__ = ["Cv2Backend", "Cv2WorkerBackend", "BackendFailure", "WORKER"]

WORKER = str(Path(__file__).with_name("cv2_worker.py"))


class BackendFailure(RefnetError):
    """A backend could not run a model (cv2 refused the file, crashed or timed out)."""


def _expose(model_path, outputs, tmp, feeds=None) -> str:
    try:
        shapes = {k: np.shape(v) for k, v in (feeds or {}).items()}
        return with_outputs(model_path, list(outputs), tmpdir=tmp, input_shapes=shapes)
    except Exception as e:  # an unreadable file: this backend cannot run it
        raise BackendFailure(f"cannot prepare {model_path} for cv2: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def _exposed(prefix: str, model_path, outputs, feeds) -> Iterator[tuple[str, str]]:
    """A fresh temporary folder and the model in it with ``outputs`` exposed (:func:`_expose`);
    the folder is removed on leaving."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield tmp, _expose(model_path, outputs, tmp, feeds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Cv2Backend:
    """cv2.dnn.readNetFromONNX in this interpreter (whatever cv2 it imports)."""

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        self.name = f"cv2 {cv2.__version__} (in-process)"

    def run(self, model_path, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        with _exposed("refnet-cv2-", model_path, outputs, feeds) as (_, path):
            try:
                net = self._cv2.dnn.readNetFromONNX(path)
                for k, v in feeds.items():
                    net.setInput(np.ascontiguousarray(v, dtype=np.float32), k)
                have = list(net.getUnconnectedOutLayersNames())
                res = net.forward(have)
            except self._cv2.error as e:
                raise BackendFailure(f"{self.name}: {' '.join(str(e).split())[-300:]}") from e
        if set(have) == set(outputs):
            return {n: np.asarray(r) for n, r in zip(have, res)}
        return {n: np.asarray(r) for n, r in zip(outputs, res)}


def _probe(python: str, timeout: float = 60.0) -> str | None:
    """cv2's version in interpreter ``python``, or None when it has no cv2."""
    try:
        r = subprocess.run([python, WORKER, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    v = r.stdout.strip().splitlines()
    return v[-1] if r.returncode == 0 and v else None


class Cv2WorkerBackend:
    """cv2.dnn in another interpreter: one worker process per run, feeds and results as npz files."""

    def __init__(self, python: str | os.PathLike | None = None, timeout: float = 600.0) -> None:
        self.python = os.fspath(python) if python else sys.executable
        self.timeout = float(timeout)
        version = _probe(self.python)
        if version is None:
            raise BackendFailure(f"no usable cv2 in {self.python} (cv2@PYTHON needs opencv-python installed there)")
        self.version = version
        self.name = f"cv2 {version} (worker {self.python})"

    def run(self, model_path, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        with _exposed("refnet-cv2w-", model_path, outputs, feeds) as (tmp, path):
            fin, fout = os.path.join(tmp, "feeds.npz"), os.path.join(tmp, "out.npz")
            np.savez(fin, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
            try:
                r = subprocess.run([self.python, WORKER, path, fin, fout, *outputs], capture_output=True,
                                   text=True, timeout=self.timeout)
            except subprocess.TimeoutExpired as e:
                raise BackendFailure(f"{self.name}: timed out after {self.timeout:.0f} s") from e
            if r.returncode != 0:
                raise BackendFailure(f"{self.name}: {_worker_error(r)}")
            with np.load(fout) as z:
                return {n: z[f"o{i}"] for i, n in enumerate(outputs) if f"o{i}" in z.files}


    def run_many(self, jobs: Sequence[tuple[Any, Mapping[str, np.ndarray], Sequence[str]]]
                 ) -> list[dict[str, np.ndarray] | BackendFailure]:
        """Several ``(model_path, feeds, outputs)`` runs in one worker process (one cv2 import).
        Each result is the outputs or the BackendFailure of that job; if the worker dies, the
        jobs are rerun one per process so a crash is charged to the job that caused it."""
        tmp = tempfile.mkdtemp(prefix="refnet-cv2b-")
        try:
            spec, prep = [], []
            for i, (model_path, feeds, outputs) in enumerate(jobs):
                try:
                    path = _expose(model_path, outputs, tmp, feeds)
                except BackendFailure as e:
                    prep.append(e)
                    continue
                fin, fout = os.path.join(tmp, f"f{i}.npz"), os.path.join(tmp, f"o{i}.npz")
                np.savez(fin, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
                spec.append([path, fin, fout, list(outputs)])
                prep.append(None)
            jpath, rpath = os.path.join(tmp, "jobs.json"), os.path.join(tmp, "results.json")
            with open(jpath, "w") as f:
                json.dump(spec, f)
            try:
                r = subprocess.run([self.python, WORKER, "--batch", jpath, rpath], capture_output=True, text=True,
                                   timeout=self.timeout * max(1, len(spec)))
                ok = r.returncode == 0 and os.path.exists(rpath)
            except subprocess.TimeoutExpired:
                ok = False
            if not ok:
                return [p if p is not None else self._run_or_failure(*j) for p, j in zip(prep, jobs)]
            with open(rpath) as f:
                errors = iter(json.load(f))
            items = iter(spec)
            out: list[dict[str, np.ndarray] | BackendFailure] = []
            for p in prep:
                if p is not None:
                    out.append(p)
                    continue
                _, _, fout, names = next(items)
                err = next(errors)
                if err is not None:
                    out.append(BackendFailure(f"{self.name}: {' '.join(err.split())[-400:]}"))
                    continue
                with np.load(fout) as z:
                    out.append({n: z[f"o{i}"] for i, n in enumerate(names) if f"o{i}" in z.files})
            return out
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run_or_failure(self, model_path, feeds, outputs) -> dict[str, np.ndarray] | BackendFailure:
        try:
            return self.run(model_path, feeds, outputs)
        except BackendFailure as e:
            return e


def _worker_error(r: subprocess.CompletedProcess) -> str:
    for line in reversed(r.stdout.strip().splitlines()):
        try:
            msg = json.loads(line)["error"]
        except (ValueError, KeyError, TypeError):
            continue
        return " ".join(msg.split())[-400:]
    if r.returncode < 0:
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = str(-r.returncode)
        return f"worker crashed ({sig})"
    tail = (r.stderr or r.stdout).strip().splitlines()
    return f"worker exited with status {r.returncode}: {tail[-1][:300] if tail else ''}"
