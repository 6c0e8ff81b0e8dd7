"""Lean executor steps for conv plans whose one-thread path is numba kernels only.

A forward pass calls each conv plan through :meth:`refnet.kernels.conv.Conv2dPlan.__call__`:
argument checks, ``np.errstate`` (``@ieee``), the algorithm's dispatch, the thread check, then
the kernel. Hot that is ~3 us a step; inside a pass, right after the previous layer's kernel has
pushed the interpreter's code and data out of the caches, it measured 7-18 us per step (SqueezeNet,
one thread; the same steps with the kernel replaced by an empty numba function), and a closure
that calls the kernel directly 4-9 us. :func:`lean_step` gives such a closure for the plans of
a compiled program (refnet.runtime.program), where the shapes were checked when it was compiled:
batch 1, float32, one thread, the algorithms whose one-thread path is numba kernels only (no NumPy
arithmetic, so no ``np.errstate`` needed): "packedwide", "packed" on unpadded (1x1) convs and
"direct_cin". Everything else -- no ``out`` buffer, several threads, NumPy twins
(``numpy_kernels()``, ``NUMBA_DISABLE_JIT=1``), a non-contiguous input -- calls the plan, so the
closure computes what the plan computes, with the same kernels. ``REFNET_LEAN_CONV=0`` or
:data:`USE` = False: programs call the plans.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from refnet.kernels import _direct, _packgemm, _workers
from refnet.kernels._lazyjit import MODE, load_numba, numba_loaded

__all__ = ["ENV", "USE", "enabled", "lean_step"]

ENV = "REFNET_LEAN_CONV"
USE = True  # (A/B switch: bench/steps_ab.py ... refnet.kernels._leanconv:USE)


def enabled() -> bool:
    """Whether programs compiled now bind lean steps (:data:`USE` and ``$REFNET_LEAN_CONV`` not 0)."""
    return USE and os.environ.get(ENV, "1").strip() not in ("0", "off", "no", "false")


def _plain(plan: Any, split_min_macs: int) -> Callable[[np.ndarray, np.ndarray | None], bool]:
    """Whether a call (x, out) may take the lean path: an ``out``, a C-contiguous input, one
    thread for this plan's size, numba kernels (not their NumPy twins)."""
    macs = plan.macs

    def ok(x: np.ndarray, out: np.ndarray | None) -> bool:
        return (out is not None and x.flags.c_contiguous and not MODE.on
                and (macs < split_min_macs or _workers.workers() == 1))

    return ok


def _jit_disabled() -> bool:
    """numba's ``DISABLE_JIT``, without importing numba (a small net's program may never load it:
    refnet.runtime.smallnet)."""
    if numba_loaded():
        return bool(load_numba().config.DISABLE_JIT)
    return os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0")


def lean_step(plan: Any, *, python_kernels: bool = False) -> Callable[..., np.ndarray] | None:
    """``step(x, out=None)`` computing ``plan(x, out)`` for a :class:`refnet.kernels.conv.Conv2dPlan`
    of batch 1 without a residual (see the module docstring), or None where it has no lean path.
    Under ``NUMBA_DISABLE_JIT=1`` None (the plans run their NumPy twins there), unless
    ``python_kernels`` (tests: the step then runs the kernels' bodies as Python)."""
    from refnet.kernels import conv as C

    if not enabled() or (_jit_disabled() and not python_kernels) or plan.x_shape[0] != 1 or plan.residual \
            or plan.dtype != np.float32:
        return None
    alg = plan.algorithm
    ok = _plain(plan, C._SPLIT_MIN_MACS)
    _, c, h, w = plan.x_shape
    co, ho, wo = plan.y_shape[1:]
    b, act, slope, six = plan.b, plan.res_act, plan.slope, plan.six
    if alg == "packedwide":
        wide = plan.wide
        wq, nbw = wide.wq, wide.nbw

        def step(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if not ok(x, out):
                return plan(x, out)
            y = out.reshape(co, ho * wo)
            _packgemm.packed_gemm_wide(wq, x.reshape(c, h * w), y, b, y, False, act, slope, six, nbw,
                                       _packgemm.WIDE_PREFETCH, _packgemm.WIDE_PREFETCH_X)
            return out

        return step
    if alg == "packed" and plan.pad == (0, 0, 0, 0) and plan.stride == (1, 1):
        # (strided 1x1s: the plan's subsampled copy, _packgemm.SUBSAMPLE)
        wp = plan.packed.wp
        epilogue = plan.act != 0 or plan.has_bias
        bias_act = C._bias_act_cols.serial

        def step(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if not ok(x, out) or plan.pack_offsets is None:  # (offsets: made by the plan's first call)
                return plan(x, out)
            y = out.reshape(co, ho * wo)
            kofs, coffs = plan.pack_offsets[:2]
            if _packgemm.FUSED:  # (as the plan: bias and activation as the tiles store)
                yf = y.reshape(-1)
                _packgemm.packed_gemm_epi(wp, x.reshape(-1), kofs, coffs, y, _packgemm.PREFETCH, True, b, yf, False,
                                          act, slope, six)
                return out
            _packgemm.packed_gemm(wp, x.reshape(-1), kofs, coffs, y, _packgemm.PREFETCH)
            if epilogue:
                bias_act(y, b, plan.act, slope, 0, ho * wo)
            return out

        return step
    if alg == "direct_cin":
        d = plan.direct

        def step(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if not ok(x, out) or not out.flags.c_contiguous:
                return plan(x, out)
            _direct.direct_rows(d.wp, d._phases(x[0]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, out[0])
            return out

        return step
    return None
