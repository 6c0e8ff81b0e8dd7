"""Small programs run without numba (issue 17: start-up time and peak memory).

Importing numba and loading refnet's compiled kernels costs a fresh process ~0.3-0.5 s of CPU
and ~120 MB of resident memory: more than a small net's forward pass (LeNet 0.3 ms, MTCNN's
first stage 0.2 ms, yufacedetectnet v2 at 320x240 ~9 ms). So a forward pass may run the NumPy
twins of the jitted helpers instead (:mod:`refnet.kernels._numpy_twins`; a helper without a
twin still runs on numba). They give the numba kernels' numbers, bit for bit except the
``direct`` convolution (a GEMM there: float32 rounding).

* a program of fewer than :data:`SMALL_WORK` MACs (``refnet.runtime.budget``'s count) always
  runs the twins: there they are about as fast as numba (CPU medians, one thread: LeNet 0.39
  vs 0.35 ms, MTCNN det1 0.20 vs 0.14 ms);
* one of fewer than :data:`NUMPY_MAX_WORK` MACs runs them on its first pass, while numba is
  not loaded and the process's first passes so far stay within :data:`NUMPY_FIRST_MACS`
  MACs; its later passes run on numba. The twins take 1.4-2.2x numba's time there
  (yufacedetectnet v2 320x240 11.7 vs 8.0 ms, UltraFace RFB-320 15.8 vs 7.1 ms), less than
  numba's start-up for a pass or a few, not for a stream of them. So a one-shot process
  (``refnet run``, a script, MTCNN's image pyramid: one pass per scale) never loads numba,
  and a loop over one input size switches at its second pass -- during a benchmark's
  untimed warm-up, not in a timed call. (A CPU-time budget would serve short loops better,
  but would move the switch into the timed calls of benchmarks.)
* larger programs run on numba.

``REFNET_NUMPY_MAX_MACS`` overrides :data:`NUMPY_MAX_WORK` (``0``: always numba, e.g. to
compare). Only programs under ``refnet.runtime.interrupt.THREAD_MIN_WORK`` MACs run in the
calling thread, where this applies (refnet.runtime.program.run_program).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from refnet.kernels._lazyjit import numba_loaded, numpy_kernels

__all__ = ["SMALL_WORK", "NUMPY_MAX_WORK", "NUMPY_FIRST_MACS", "kernels_for", "numpy_max_work"]

SMALL_WORK = 2 * 10**7  # MACs of one run; below: always the NumPy twins
NUMPY_MAX_WORK = 2 * 10**8  # below: the twins on a program's first pass (see the module docstring)
NUMPY_FIRST_MACS = 4 * 10**8  # MACs of such first passes per process, at most

_FIRST: set[int] = set()  # id() of the programs whose first pass ran on the twins (at most ~20)
_SPENT = [0]  # their MACs


def numpy_max_work() -> int:
    """The limit in force (``$REFNET_NUMPY_MAX_MACS`` or :data:`NUMPY_MAX_WORK`)."""
    v = os.environ.get("REFNET_NUMPY_MAX_MACS", "").strip()
    try:
        return int(float(v)) if v else NUMPY_MAX_WORK
    except ValueError:
        return NUMPY_MAX_WORK


def kernels_for(prog: Any) -> contextlib.AbstractContextManager:
    """The kernel mode to run ``prog`` (a compiled program with ``.work`` MACs) under (see the
    module docstring): ``numpy_kernels()`` or a no-op context (numba). (A program freed and
    another one given its id() may count as seen: it then runs on numba, which is harmless.)"""
    limit = numpy_max_work()
    if prog.work < min(SMALL_WORK, limit):
        return numpy_kernels()
    if (prog.work < limit and id(prog) not in _FIRST and _SPENT[0] + prog.work <= NUMPY_FIRST_MACS
            and not numba_loaded()):
        _FIRST.add(id(prog))
        _SPENT[0] += prog.work
        return numpy_kernels()
    return contextlib.nullcontext()
