"""Small programs run without numba (issue 17: start-up time and peak memory).

Importing numba and loading refnet's compiled kernels costs a fresh process ~0.3 s of CPU and
~120 MB of resident memory, more than a small net's whole forward pass (LeNet 0.3 ms,
yufacedetectnet v2 at 320x240 ~11 ms). A program of fewer than :data:`NUMPY_MAX_WORK` MACs
(``refnet.runtime.budget``'s count) therefore runs the NumPy twins of the jitted helpers
(:mod:`refnet.kernels._numpy_twins`); a helper without a twin still runs on numba. The
numbers equal the numba kernels' to float32 rounding (most are bit-identical).

``REFNET_NUMPY_MAX_MACS`` overrides the limit (``0``: always numba, e.g. to compare).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from refnet.kernels._lazyjit import numpy_kernels

__all__ = ["NUMPY_MAX_WORK", "kernels_for", "numpy_max_work"]

NUMPY_MAX_WORK = 2 * 10**7  # MACs of one run; below: NumPy twins (see the module docstring)


def numpy_max_work() -> int:
    """The limit in force (``$REFNET_NUMPY_MAX_MACS`` or :data:`NUMPY_MAX_WORK`)."""
    v = os.environ.get("REFNET_NUMPY_MAX_MACS", "").strip()
    try:
        return int(float(v)) if v else NUMPY_MAX_WORK
    except ValueError:
        return NUMPY_MAX_WORK


def kernels_for(prog: Any) -> contextlib.AbstractContextManager:
    """The kernel mode to run ``prog`` (a compiled program with ``.work`` MACs) under:
    ``numpy_kernels()`` for a small one, else a no-op context."""
    if prog.work < numpy_max_work():
        return numpy_kernels()
    return contextlib.nullcontext()
