"""The one place that sets numba's jit options for refnet's kernels.

``cache=True`` keeps compiled code between runs in the folder :mod:`refnet.kernels._cache`
chooses (``$REFNET_NUMBA_CACHE`` / ``$NUMBA_CACHE_DIR``, else ``~/.cache/refnet/numba``, else
a private temporary folder, else uncached: one line on stderr says which fallback);
``error_model="numpy"`` makes division by zero give inf/nan instead of raising.
Reference kernels use ``jit`` (no fastmath, serial); fast kernels may use ``pjit``
(``parallel=True``; ``prange`` only over disjoint outputs, so results are deterministic).

Threads: numba's workqueue layer aborts the process (and OpenMP may) when two threads enter
parallel regions at once, so every ``pjit`` kernel runs under :data:`PARALLEL_LOCK`
(:func:`refnet.kernels._parallel` takes it); serial ``jit`` kernels release the GIL
(``nogil``) and run concurrently.
"""

from __future__ import annotations

import os
import sys
import threading

from refnet.kernels._cache import choose_cache_dir, install_numba_hooks

# Numba's OpenMP workers spin after each parallel region by default and then steal the cores
# OpenBLAS needs (and the other way round): measured 5-30x slower convolutions here. Passive
# waiting must be set before the OpenMP runtime starts, i.e. before numba's first parallel call.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CACHE = choose_cache_dir()
if CACHE.path is not None:
    os.environ["NUMBA_CACHE_DIR"] = CACHE.path  # read by numba.config at import ...
if CACHE.note:
    print(CACHE.note, file=sys.stderr)

import numba  # noqa: E402

if CACHE.path is not None:
    numba.config.CACHE_DIR = CACHE.path  # ... and here in case numba was imported before us
install_numba_hooks()

JIT_OPTIONS = {"cache": CACHE.path is not None, "error_model": "numpy", "nogil": True}
PARALLEL_LOCK = threading.RLock()

_njit = numba.njit(**JIT_OPTIONS)
_pnjit = numba.njit(parallel=True, **JIT_OPTIONS)
_njit_nocache = numba.njit(**{**JIT_OPTIONS, "cache": False})
_pnjit_nocache = numba.njit(parallel=True, **{**JIT_OPTIONS, "cache": False})


def jit(fn):  # type: ignore[no-untyped-def]
    """numba.njit with refnet's options (cached when a cache folder is usable)."""
    try:
        return _njit(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available": run uncached
        return _njit_nocache(fn)


def pjit(fn):  # type: ignore[no-untyped-def]
    """numba.njit(parallel=True) with refnet's options; call it under PARALLEL_LOCK."""
    try:
        return _pnjit(fn)
    except RuntimeError:
        return _pnjit_nocache(fn)


prange = numba.prange

__all__ = ["jit", "pjit", "prange", "JIT_OPTIONS", "PARALLEL_LOCK", "CACHE"]
