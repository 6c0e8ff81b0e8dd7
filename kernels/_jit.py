"""The one place that sets numba's jit options for refnet's kernels.

``cache=True`` keeps compiled code between runs (NUMBA_CACHE_DIR, outside git);
``error_model="numpy"`` makes division by zero give inf/nan instead of raising.
Reference kernels use ``jit`` (no fastmath, serial); fast kernels may use ``pjit``
(``parallel=True``; ``prange`` only over disjoint outputs, so results are deterministic).
"""

from __future__ import annotations

import os

# Numba's OpenMP workers spin after each parallel region by default and then steal the cores
# OpenBLAS needs (and the other way round): measured 5-30x slower convolutions here. Passive
# waiting must be set before the OpenMP runtime starts, i.e. before numba's first parallel call.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# numba is imported on a kernel's first call, not here (kernels/_lazyjit.py: start-up and memory)
from refnet.kernels._lazyjit import lazy_njit, prange  # noqa: E402

JIT_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}

jit = lazy_njit(**JIT_OPTIONS)
pjit = lazy_njit(parallel=True, **JIT_OPTIONS)

__all__ = ["jit", "pjit", "prange", "JIT_OPTIONS"]
