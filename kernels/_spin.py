"""A brief busy wait outside the GIL for the GEMM worker pool (:mod:`refnet.kernels._workers`).

The pool's threads used to sleep on a condition variable between calls and the caller on an
event until the last block was done: each hand-over costs an OS wake-up plus a GIL hand-over
(measured 20-50 us here, per conv layer and per side, against blocks of 50-500 us), so the
small layers of GoogLeNet ran slower at 2 threads than at 1. :func:`spin_until` waits for a
counter in a shared int64 array to reach a value, reading it with an atomic (acquire) load and
``sched_yield()`` between reads (a thread spinning on the core another thread of this process
or another process needs gives it up at once: with a PAUSE loop instead, the scheduler sometimes
put the caller and a spinning pool thread on one core and the caller's block ran at half speed),
for at most ``iters`` reads; it is a ``nogil`` numba kernel, so the other threads keep the GIL
meanwhile. The pool then sleeps as before when the wait runs out (see ``_workers.SPIN_US``).

This module imports numba: import it only once numba is loaded (``_workers`` does so), on
Linux or macOS (``sched_yield``).
"""

from __future__ import annotations

import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import load_numba

__all__ = ["spin_until", "reads_per_us"]

_numba = load_numba()


@intrinsic
def _load_acquire(typingctx, arr, idx):  # noqa: ANN001, ARG001 - numba intrinsic signature
    """``arr[idx]`` read with an atomic acquire load (never hoisted out of the wait loop)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(idx, types.Integer)):
        return None
    sig = types.int64(arr, idx)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.load_atomic(builder.gep(ary.data, [i]), "acquire", 8)

    return sig, codegen


@intrinsic
def _atomic_inc(typingctx, counter, idx):  # noqa: ANN001, ARG001 - numba intrinsic signature
    """``counter[idx]++`` (atomic), returning the old value (the split drivers' shared block counters:
    :mod:`refnet.kernels._blasjit`, :mod:`refnet.kernels._packsplit`)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [context.cast(builder, args[1], signature.args[1], types.int64)])
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return types.int64(counter, idx), codegen


@intrinsic
def _yield(typingctx):  # noqa: ANN001, ARG001
    """``sched_yield()`` (libc, resolved by numba's linker from the process's symbols)."""
    sig = types.void()

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


@_numba.njit(**JIT_OPTIONS)
def spin_until(flag, idx, value, iters):  # noqa: ANN001, ANN201
    """Whether ``flag[idx] >= value`` within ``iters`` reads (GIL released meanwhile)."""
    for _ in range(iters):
        if _load_acquire(flag, idx) >= value:
            return True
        _yield()
    return _load_acquire(flag, idx) >= value


def reads_per_us() -> float:
    """How many :func:`spin_until` reads take a microsecond here (compiles it; measured once)."""
    flag = np.zeros(1, np.int64)
    spin_until(flag, 0, 1, 10)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        spin_until(flag, 0, 1, 20000)
        best = min(best, time.perf_counter() - t)
    return max(1.0, 20000 / max(best * 1e6, 1e-3))
