"""Small programs run without numba (issue 17: start-up time and peak memory).

Importing numba and loading refnet's compiled kernels costs a fresh process ~0.3-0.5 s of CPU
and ~120 MB of resident memory: more than a small net's forward pass (LeNet 0.3 ms, MTCNN's
first stage 0.2 ms, yufacedetectnet v2 at 320x240 ~9 ms). So a forward pass may run the NumPy
twins of the jitted helpers instead (:mod:`refnet.kernels._numpy_twins`; a helper without a
twin still runs on numba). They give the numba kernels' numbers, bit for bit except the
``direct`` convolution (a GEMM there: float32 rounding).

* a program of fewer than :data:`SMALL_WORK` MACs (``refnet.runtime.budget``'s count) always
  runs the twins: there they are as fast as numba (measured LeNet 1.1x, MTCNN det1 1.4x of
  0.16 ms);
* one of fewer than :data:`NUMPY_MAX_WORK` MACs runs them while numba is not loaded and the
  process has spent less than :data:`NUMPY_BUDGET_S` seconds of CPU in such forward passes,
  then on numba. The twins take ~2x numba's time on these (yufacedetectnet 16 vs 9 ms,
  UltraFace RFB-320 15 vs 7 ms): a process that runs a handful of passes (``refnet run``, a
  script) never pays for numba, one that runs many pays for it once the NumPy passes have
  cost about as much (the ski-rental rule: never more than ~2x the better choice in hindsight);
* larger programs run on numba.

``REFNET_NUMPY_MAX_MACS`` overrides :data:`NUMPY_MAX_WORK` (``0``: always numba, e.g. to
compare). Only programs under ``refnet.runtime.interrupt.THREAD_MIN_WORK`` MACs run in the
calling thread, where this applies (net.py's ``_run``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from refnet.kernels._lazyjit import numba_loaded, numpy_kernels

__all__ = ["SMALL_WORK", "NUMPY_MAX_WORK", "NUMPY_BUDGET_S", "kernels_for", "numpy_max_work"]

SMALL_WORK = 2 * 10**7  # MACs of one run; below: always the NumPy twins
NUMPY_MAX_WORK = 2 * 10**8  # below: the twins until numba is loaded or NUMPY_BUDGET_S is spent
NUMPY_BUDGET_S = 0.5  # CPU seconds of NumPy forward passes above SMALL_WORK before numba pays

_SPENT = [0.0]  # CPU seconds spent so far in NumPy passes of SMALL_WORK..NUMPY_MAX_WORK MACs


def numpy_max_work() -> int:
    """The limit in force (``$REFNET_NUMPY_MAX_MACS`` or :data:`NUMPY_MAX_WORK`)."""
    v = os.environ.get("REFNET_NUMPY_MAX_MACS", "").strip()
    try:
        return int(float(v)) if v else NUMPY_MAX_WORK
    except ValueError:
        return NUMPY_MAX_WORK


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    t0 = time.process_time()
    try:
        with numpy_kernels():
            yield
    finally:
        _SPENT[0] += time.process_time() - t0


def kernels_for(prog: Any) -> contextlib.AbstractContextManager:
    """The kernel mode to run ``prog`` (a compiled program with ``.work`` MACs) under (see the
    module docstring): ``numpy_kernels()``, a counted one, or a no-op context (numba)."""
    limit = numpy_max_work()
    if prog.work < min(SMALL_WORK, limit):
        return numpy_kernels()
    if prog.work < limit and _SPENT[0] < NUMPY_BUDGET_S and not numba_loaded():
        return _counted()
    return contextlib.nullcontext()
