"""A float32 matrix-vector product on weights packed once: fully connected layers at batch 1.

A classifier's last layer at batch 1 (ResNet-50's Gemm 2048 -> 1000: 8 MB of weights, read once
per forward pass, cold from memory) is bound by how fast one core streams its weights in.
``x @ w.T`` through the BLAS ran it at ~17 GB/s (0.47 ms, cold; onnxruntime's node ~0.38 ms in the
net). Here the weights are packed at plan time as the packed GEMM packs them
(:func:`refnet.kernels._packgemm.pack_weights`: panels of 32 rows, k-major, so each panel is one
contiguous stream) and :func:`gemv_packed` walks :data:`STREAMS` panels at once, one k at a time:
four sequential streams in flight instead of one, 0.29 ms (28 GB/s; 2 streams 0.31, 1 stream
0.38; a software prefetch ahead of one stream did not help), measured cold, one thread, medians
of 30 paired calls.

Rounding: as the packed GEMM (each output sums blocks of 128 products, one float32 FMA chain
each, k in order, then the blocks' sums): the same bits as ``packed_gemm`` with one column.

:func:`fc_step` gives the compiled program's step for a batch-1 float32 Gemm / InnerProduct with
constant weights (``refnet.ops``' planners); ``REFNET_GEMV=0`` (or :data:`USE` False, read at
plan time) keeps the BLAS. Under ``NUMBA_DISABLE_JIT=1`` the kernel runs as Python (tests, small
shapes); inside ``numpy_kernels()`` or before numba loads, the step runs the fallback it is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from refnet.kernels import _packgemm, _workers
from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import MODE, jit_disabled, lazy_njit, numba_loaded

__all__ = ["USE", "ENV", "MIN_WEIGHTS", "MAX_WEIGHTS", "STREAMS", "gemv_packed", "fc_step"]

ENV = "REFNET_GEMV"
USE = os.environ.get(ENV, "1").strip() not in ("0", "off", "no", "false")
STREAMS = 4  # panels of 32 rows read at once (written out in gemv_packed)
MIN_WEIGHTS = 1 << 16  # weight elements from which fc_step packs (small layers: the BLAS call is fine)
# ... and up to which (the packed copy is the weights once more: CaffeNet's / VGG's fc6 and fc7,
# 38-103 M weights, keep the BLAS and their memory)
MAX_WEIGHTS = 1 << 22

_fast = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"contract"}, "boundscheck": False})


@_fast
def gemv_packed(wp, x, y):
    """y (M,) = W @ x (K,) with W packed by ``pack_weights`` into wp (P, K, 32), P * 32 >= M:
    panels p .. p + 3 at once (the last group repeats its last panel, not stored)."""
    npan, kdim = wp.shape[0], wp.shape[1]
    m = y.shape[0]
    s = _packgemm._carray(_packgemm._stack(128), (128,))
    a = _packgemm._carray(_packgemm._stack(128), (128,))
    for p0 in range(0, npan, 4):
        p1 = min(p0 + 1, npan - 1)
        p2 = min(p0 + 2, npan - 1)
        p3 = min(p0 + 3, npan - 1)
        for lane in range(128):
            s[lane] = 0.0
        for kb in range(0, kdim, 128):  # sums of 128 products each, added up (as the packed GEMM)
            for lane in range(128):
                a[lane] = 0.0
            for k in range(np.uint64(kb), np.uint64(min(kdim, kb + 128))):
                xk = x[k]
                for lane in range(32):
                    a[lane] += xk * wp[p0, k, lane]
                    a[32 + lane] += xk * wp[p1, k, lane]
                    a[64 + lane] += xk * wp[p2, k, lane]
                    a[96 + lane] += xk * wp[p3, k, lane]
            for lane in range(128):
                s[lane] += a[lane]
        for j in range(4):
            r0 = (p0 + j) * 32
            if p0 + j < npan:
                for r in range(min(32, m - r0)):
                    y[r0 + r] = s[32 * j + r]


def fc_step(x_shape: tuple[int, ...], out_shape: tuple[int, ...], wmat: np.ndarray, add: np.ndarray | None,
            fallback: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray] | None:
    """A compiled program's step ``step(x)`` = ``x.reshape(K) @ wmat.T + add`` as an array of
    ``out_shape`` (M values) for one float32 row x of K = wmat.shape[1] values (prod(x_shape) ==
    K), wmat (M, K) constant (packed here), ``add`` None or M float32 values added after the
    product; None (no step) unless :data:`USE`, float32 weights of :data:`MIN_WEIGHTS` ..
    :data:`MAX_WEIGHTS` elements and one row. Runs ``fallback(x)`` inside ``numpy_kernels()``, before numba loads,
    under ``NUMBA_DISABLE_JIT``, with several worker threads (their split BLAS calls, as before)
    or for another input."""
    m, k = wmat.shape
    if (not USE or wmat.dtype != np.float32 or int(np.prod(x_shape)) != k or int(np.prod(out_shape)) != m
            or not MIN_WEIGHTS <= m * k <= MAX_WEIGHTS
            or (add is not None and (add.dtype != np.float32 or add.size != m))):
        return None
    wp = _packgemm.pack_weights(wmat)
    addv = None if add is None else np.ascontiguousarray(add.reshape(m))
    shape, oshape = tuple(int(d) for d in x_shape), tuple(int(d) for d in out_shape)

    def fc(x: np.ndarray) -> np.ndarray:
        if (x.dtype != np.float32 or x.shape != shape or not x.flags.c_contiguous or MODE.on
                or _workers.workers() > 1 or not numba_loaded() or jit_disabled()):
            return fallback(x)
        y = np.empty(m, np.float32)
        gemv_packed(wp, x.reshape(k), y)
        if addv is not None:
            y += addv
        return y.reshape(oshape)

    return fc
