"""Argument checks shared by the kernels: clear errors naming the argument and the shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from refnet.errors import ShapeError

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


IntPair = int | Sequence[int]  # an int or (h, w): stride, dilation, kernel size
Pad = int | Sequence[int]  # an int, (ph, pw) or (top, left, bottom, right)


def pair(v: IntPair, name: str, *, positive: bool = True, allow_zero: bool = False) -> tuple[int, int]:
    """Normalise an int or a 2-sequence to ``(h, w)``; check positivity."""
    if isinstance(v, (int, np.integer)):
        t = (int(v), int(v))
    else:
        t = tuple(int(i) for i in v)
        if len(t) != 2:
            raise ShapeError(f"{name} must be an int or a pair", expected="2 values", got=v)
    if positive:
        lo = 0 if allow_zero else 1
        if t[0] < lo or t[1] < lo:
            raise ShapeError(f"{name} must be >= {lo}", expected=f">= {lo}", got=t)
    return t  # type: ignore[return-value]


def pad4(v: Pad, name: str = "pad") -> tuple[int, int, int, int]:
    """Normalise padding to ``(top, left, bottom, right)``.

    Accepts an int (all sides), ``(ph, pw)`` (symmetric) or ``(top, left, bottom, right)``.
    """
    if isinstance(v, (int, np.integer)):
        t = (int(v),) * 4
    else:
        vals = tuple(int(i) for i in v)
        if len(vals) == 2:
            t = (vals[0], vals[1], vals[0], vals[1])
        elif len(vals) == 4:
            t = vals
        else:
            raise ShapeError(f"{name} must be an int, (ph, pw) or (top, left, bottom, right)", got=v)
    if min(t) < 0:
        raise ShapeError(f"{name} must be non-negative", got=t)
    return t  # type: ignore[return-value]
