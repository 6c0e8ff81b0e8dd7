"""The one place that sets numba's jit options for refnet's kernels.

``cache=True`` keeps compiled code between runs (NUMBA_CACHE_DIR, outside git);
``error_model="numpy"`` makes division by zero give inf/nan instead of raising.
Reference kernels use ``jit`` (no fastmath, serial); fast kernels may use ``pjit``
(``parallel=True``; ``prange`` only over disjoint outputs, so results are deterministic).
"""

from __future__ import annotations

import numba

JIT_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}

jit = numba.njit(**JIT_OPTIONS)
pjit = numba.njit(parallel=True, **JIT_OPTIONS)
prange = numba.prange

__all__ = ["jit", "pjit", "prange", "JIT_OPTIONS"]
