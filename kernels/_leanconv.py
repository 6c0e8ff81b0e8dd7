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
"direct_cin". The closure calls the plan's own one-thread piece (``WideGemm``, ``Conv2dPlan._packed_image``,
``direct_rows``), not a copy of it. Everything else -- no ``out`` buffer, several threads, NumPy twins
(``numpy_kernels()``, ``NUMBA_DISABLE_JIT=1``), a non-contiguous input -- calls the plan, so the
closure computes what the plan computes, with the same kernels. ``REFNET_LEAN_CONV=0`` or
:data:`USE` = False: programs call the plans.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from refnet.kernels import _direct
from refnet.kernels._lazyjit import MODE, jit_disabled

__all__ = ["ENV", "USE", "enabled", "lean_step", "conv_pool_step"]

ENV = "REFNET_LEAN_CONV"
USE = True  # (A/B switch: bench/steps_ab.py ... refnet.kernels._leanconv:USE)


def enabled() -> bool:
    """Whether programs compiled now bind lean steps (:data:`USE` and ``$REFNET_LEAN_CONV`` not 0)."""
    return USE and os.environ.get(ENV, "1").strip() not in ("0", "off", "no", "false")


def _plain(plan: Any) -> Callable[[np.ndarray, np.ndarray | None], bool]:
    """Whether a call (x, out) may take the lean path: an ``out``, a C-contiguous input, one
    thread for this plan's size (the plan's own rule, ``conv._split_threads``), numba kernels
    (not their NumPy twins)."""
    from refnet.kernels.conv import _split_threads

    macs = plan.macs

    def ok(x: np.ndarray, out: np.ndarray | None) -> bool:
        return out is not None and x.flags.c_contiguous and not MODE.on and _split_threads(macs) == 1

    return ok


def lean_step(plan: Any, *, python_kernels: bool = False) -> Callable[..., np.ndarray] | None:
    """``step(x, out=None)`` computing ``plan(x, out)`` for a :class:`refnet.kernels.conv.Conv2dPlan`
    of batch 1 without a residual (see the module docstring), or None where it has no lean path.
    Under ``NUMBA_DISABLE_JIT=1`` None (the plans run their NumPy twins there), unless
    ``python_kernels`` (tests: the step then runs what the plan's one-thread path runs there, the
    kernels' bodies as Python or their NumPy twins)."""
    if not enabled() or (jit_disabled() and not python_kernels) or plan.x_shape[0] != 1 or plan.residual \
            or plan.dtype != np.float32:
        return None
    alg = plan.algorithm
    ok = _plain(plan)
    _, c, h, w = plan.x_shape
    co, ho, wo = plan.y_shape[1:]
    if alg == "packedwide":
        wide, b, act, slope, six = plan.wide, plan.b, plan.res_act, plan.slope, plan.six

        def step(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if not ok(x, out):
                return plan(x, out)
            wide(x.reshape(c, h * w), out.reshape(co, ho * wo), b, None, act, slope, six)
            return out

        return step
    if alg == "packed" and plan.pad == (0, 0, 0, 0) and plan.stride == (1, 1):
        # (strided 1x1s: the plan's subsampled copy, _packgemm.SUBSAMPLE)

        def step(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if not ok(x, out):
                return plan(x, out)
            plan._packed_image(plan._packed_input(x, 0), out.reshape(co, ho * wo), None)
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


def conv_pool_step(plan: Any, pool: Callable[..., np.ndarray], kernel, strides, dilations, pads, out_hw, *,
                   python_kernels: bool = False) -> Callable[..., np.ndarray] | None:
    """``step(x, out=None)`` = ``pool(plan(x), out)`` for a "direct_cin" plan of batch 1 without
    a residual whose output only the max pool step ``pool`` (ONNX geometry ``kernel`` ..
    ``out_hw``, :func:`refnet.kernels._direct.pool_fits`) reads: one pass,
    ``DirectSmallCin.pool_into`` (the conv map is never written out). None where that does not
    apply (as :func:`lean_step`; ``REFNET_DIRECT_POOL=0``). A call the lean path does not take
    (no ``out``, several threads, NumPy twins) runs the two steps."""
    if not enabled() or (jit_disabled() and not python_kernels) or plan.x_shape[0] != 1 or plan.residual \
            or plan.dtype != np.float32 or plan.algorithm != "direct_cin" \
            or not _direct.pool_fits(plan.y_shape, kernel, strides, dilations, pads, out_hw):
        return None
    d = plan.direct
    ok = _plain(plan)
    pt, pl = int(pads[0]), int(pads[1])

    def step(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if not ok(x, out) or not out.flags.c_contiguous:
            return pool(plan(x), out)
        d.pool_into(x[0], out[0], pt, pl)
        return out

    return step
