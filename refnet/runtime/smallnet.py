"""Small programs run without numba (issue 17: start-up time and peak memory).

Importing numba and loading refnet's compiled kernels costs a fresh process ~0.3-0.5 s of CPU
and ~120 MB of resident memory: more than a small net's forward pass (LeNet 0.3 ms, MTCNN's
first stage 0.2 ms, yufacedetectnet v2 at 320x240 ~9 ms). So a forward pass may run the NumPy
twins of the jitted helpers instead (:mod:`refnet.kernels._numpy_twins`; a helper without a
twin still runs on numba). They give the numba kernels' numbers, bit for bit except the
``direct`` convolution and the Winograd F(4,3) transforms (GEMMs there: float32 rounding).

* a program of fewer than :data:`SMALL_WORK` MACs (``refnet.runtime.budget``'s count) runs the
  twins until the twins' passes have taken :data:`NUMPY_CPU_BUDGET_S` of CPU in this process,
  whether numba is loaded or not, then numba: the twins are close to numba there on LeNet and
  MTCNN (CPU medians, one thread: LeNet 0.39 vs 0.35 ms, MTCNN det1 0.20 vs 0.14 ms), so a
  one-shot run or a short loop never loads numba, but not on nets of many small steps (PP-OCR's
  mobile classifier at 48x192: 5.5 vs 2.6 ms), whose streams switch after about a second
  (until 2026-12-07 small programs ran the twins always, even with numba loaded);
* one of fewer than :data:`NUMPY_MAX_WORK` MACs runs them while numba is not loaded and the
  twins' passes of such programs have taken less than :data:`NUMPY_CPU_BUDGET_S` seconds of
  CPU in this process (the calling thread's CPU time, so a loaded machine does not shorten
  it); then numba. The twins take 1.35-2.2x numba's time there (yufacedetectnet v2 320x240
  10.7 vs 7.9 ms, UltraFace RFB-320 15.8 vs 7.1 ms), and numba's start-up costs a fresh
  process ~0.31 s of CPU (yufacedetectnet v2: the first pass on numba took 320 ms, the next
  8-10 ms) and ~110 MB of resident memory (numba and LLVM ~60 MB, loading the first cached
  kernels ~45 MB: peak RSS 169 vs 60 MB). As in renting skis until their price is spent, the
  twins run until what they cost more than numba would have paid for numba's start-up
  (about 1 s of twin passes: ~100 passes of yufacedetectnet v2). So a one-shot process
  (``refnet run``, a script, MTCNN's image pyramid) and a short loop never load numba, and a
  long stream switches once, after about a second. (Until 2026-12 a program switched at its
  second pass: a loop of three passes peaked at 1.9-2.2x cv2's memory.) A benchmark of the
  steady state ends the NumPy phase before timing (:func:`end_numpy_phase`, ``refnet bench``);
* larger programs run on numba.

``REFNET_NUMPY_MAX_MACS`` overrides :data:`NUMPY_MAX_WORK` (``0``: always numba, e.g. to
compare). Only programs under ``refnet.runtime.interrupt.THREAD_MIN_WORK`` MACs run in the
calling thread, where this applies (refnet.runtime.program.run_program).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from refnet.kernels._lazyjit import load_numba, numba_loaded, numpy_kernels

__all__ = ["SMALL_WORK", "NUMPY_MAX_WORK", "NUMPY_CPU_BUDGET_S", "kernels_for", "numpy_max_work", "end_numpy_phase",
           "numpy_phase_spent"]

SMALL_WORK = 2 * 10**7  # MACs of one run; below: always the NumPy twins
NUMPY_MAX_WORK = 2 * 10**8  # below: the twins until NUMPY_CPU_BUDGET_S is spent (see the module docstring)
NUMPY_CPU_BUDGET_S = 1.0  # CPU seconds of such twin passes per process, at most

_SPENT = [0.0]  # CPU seconds of the twin passes of programs of SMALL_WORK MACs or more


def numpy_max_work() -> int:
    """The limit in force (``$REFNET_NUMPY_MAX_MACS`` or :data:`NUMPY_MAX_WORK`)."""
    v = os.environ.get("REFNET_NUMPY_MAX_MACS", "").strip()
    try:
        return int(float(v)) if v else NUMPY_MAX_WORK
    except ValueError:
        return NUMPY_MAX_WORK


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    """The NumPy twins, their CPU time (this thread's) counted against NUMPY_CPU_BUDGET_S."""
    t0 = time.thread_time()
    try:
        with numpy_kernels():
            yield
    finally:
        _SPENT[0] += time.thread_time() - t0


def numpy_phase_spent() -> float:
    """CPU seconds the twins took so far on programs that numba would run faster."""
    return _SPENT[0]


def end_numpy_phase() -> None:
    """Run every program on numba from now on (loads numba and spends the twins' budget: a
    benchmark of the steady state calls this before timing)."""
    load_numba()
    _SPENT[0] = max(_SPENT[0], NUMPY_CPU_BUDGET_S)


def kernels_for(prog: Any) -> contextlib.AbstractContextManager:
    """The kernel mode to run ``prog`` (a compiled program with ``.work`` MACs) under (see the
    module docstring): ``numpy_kernels()`` or a no-op context (numba)."""
    limit = numpy_max_work()
    if prog.work < limit and _SPENT[0] < NUMPY_CPU_BUDGET_S and (prog.work < SMALL_WORK or not numba_loaded()):
        return _counted()
    return contextlib.nullcontext()
