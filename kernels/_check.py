"""Argument checks shared by the kernels: clear errors naming the argument and the shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels.geometry import IntPair, Pad, pad4, pair  # noqa: F401  (the pair/pad readers live with the geometry rules)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# np.errstate for the kernels' NumPy arithmetic: Inf/NaN in (or an overflow on the way) gives the
# IEEE result (inf, nan) silently, as the jitted loops do (error_model="numpy")
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

_F = TypeVar("_F", bound=Callable)


def ieee(fn: _F) -> _F:
    """Decorator: run ``fn`` under ``np.errstate(**IEEE)``, so non-finite values flow through its
    NumPy arithmetic (and, with NUMBA_DISABLE_JIT=1, through the jitted loops it calls, which then
    run on NumPy scalars) as IEEE inf/nan without RuntimeWarnings. numpy >= 2's errstate decorator
    keeps its state per call: thread-safe and re-entrant, about 0.3 us."""
    return np.errstate(**IEEE)(fn)


def per_plane(v: object, n: int, c: int, dtype: np.dtype) -> np.ndarray:
    """One value per (image, channel) plane of an (N, C, ...) array, image-major, from ``v``: C
    values (one per channel) or one for all; a new C-contiguous array of ``dtype`` (the per-plane
    kernels' slope, scale and shift vectors)."""
    out = np.empty(n * c, dtype)
    out.reshape(n, c)[...] = np.asarray(v, dtype).reshape(1, -1)
    return out


def as_float_array(x: object, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``x`` as a float32/float64 ndarray or raise TypeError/ShapeError naming ``name``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{n}-D" for n in allowed)
            raise ShapeError(f"{name} must be {want}", expected=want, got=f"shape {x.shape}")
    return x


def same_dtype(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray | None) -> None:
    """Raise TypeError when ``b`` (if given) does not have ``a``'s dtype."""
    if b is not None and b.dtype != a.dtype:
        raise TypeError(f"{name_b} has dtype {b.dtype} but {name_a} has dtype {a.dtype}; pass both as one dtype")

