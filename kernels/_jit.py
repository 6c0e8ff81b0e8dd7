"""The one place that sets numba's jit options for refnet's kernels.

``cache=True`` keeps compiled code between runs in the folder :mod:`refnet.kernels._cache`
chooses (``$REFNET_NUMBA_CACHE`` / ``$NUMBA_CACHE_DIR``, else ``~/.cache/refnet/numba``, else
a private temporary folder, else uncached: one line on stderr says which fallback);
``error_model="numpy"`` makes division by zero give inf/nan instead of raising.
Reference kernels use ``jit`` (no fastmath, serial); fast kernels may use ``pjit``
(``parallel=True``; ``prange`` only over disjoint outputs, so results are deterministic).

numba itself is imported on a kernel's first call, not here (:mod:`refnet.kernels._lazyjit`:
start-up and memory); the cache folder is chosen then, before numba reads its configuration.

Threads: numba's workqueue layer aborts the process (and OpenMP may) when two threads enter
parallel regions at once, so every ``pjit`` kernel runs under :data:`PARALLEL_LOCK`
(:func:`refnet.kernels._parallel` takes it); serial ``jit`` kernels release the GIL
(``nogil``) and run concurrently.
"""

from __future__ import annotations

import os
import threading

from refnet.kernels._cache import choose_cache_dir

# Numba's OpenMP workers spin after each parallel region by default and then steal the cores
# OpenBLAS needs (and the other way round): measured 5-30x slower convolutions here. Passive
# waiting must be set before the OpenMP runtime starts, i.e. before numba's first parallel call.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CACHE = choose_cache_dir()  # cheap (no numba): which folder, and the one line to say about it
if CACHE.path is not None:
    os.environ["NUMBA_CACHE_DIR"] = CACHE.path  # read by numba.config when it is imported

from refnet.kernels._lazyjit import lazy_njit, prange  # noqa: E402

JIT_OPTIONS = {"cache": CACHE.path is not None, "error_model": "numpy", "nogil": True}
PARALLEL_LOCK = threading.RLock()

jit = lazy_njit(**JIT_OPTIONS)
pjit = lazy_njit(parallel=True, **JIT_OPTIONS)

__all__ = ["jit", "pjit", "prange", "JIT_OPTIONS", "PARALLEL_LOCK", "CACHE"]
