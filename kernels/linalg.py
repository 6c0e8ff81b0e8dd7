"""Matrix products with ONNX semantics: Gemm (2-D, transposes, alpha/beta, broadcast C) and
MatMul (numpy.matmul: batched, 1-D operands promoted and the added axis removed)."""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import ieee

__all__ = ["gemm", "gemm_reference", "matmul", "matmul_reference"]


def _gemm_check(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool) -> tuple[np.ndarray, np.ndarray]:
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError("Gemm operands must be 2-D", expected="2-D A and B", got=(a.shape, b.shape))
    a2 = a.T if trans_a else a
    b2 = b.T if trans_b else b
    if a2.shape[1] != b2.shape[0]:
        raise ShapeError("Gemm inner dimensions differ", expected=a2.shape[1], got=b2.shape[0])
    return a2, b2


@ieee
def gemm_reference(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0,
                   beta: float = 1.0, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """Y[i, j] = alpha * sum_k A'[i, k] B'[k, j] + beta * C[i, j] (C broadcast to (M, N)),
    accumulated in float64 row by row."""
    a2, b2 = _gemm_check(a, b, trans_a, trans_b)
    m, n = a2.shape[0], b2.shape[1]
    y = np.zeros((m, n), np.float64)
    for i in range(m):
        y[i] = alpha * (a2[i].astype(np.float64) @ b2.astype(np.float64))
    if c is not None:
        y = y + beta * np.broadcast_to(c.astype(np.float64), (m, n))
    return y.astype(a.dtype)


@ieee
def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0, beta: float = 1.0,
         trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """Fast twin of :func:`gemm_reference`: one BLAS GEMM in the input dtype."""
    a2, b2 = _gemm_check(a, b, trans_a, trans_b)
    y = a2 @ b2.astype(a.dtype, copy=False)
    if alpha != 1.0:
        y *= a.dtype.type(alpha)
    if c is not None:
        y += a.dtype.type(beta) * c.astype(a.dtype, copy=False)
    return y


def _mm_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("MatMul operands must have rank >= 1", got=(a.shape, b.shape))
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ShapeError("MatMul inner dimensions differ", expected=ka, got=kb)


@ieee
def matmul_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.matmul semantics, accumulated in float64 one k at a time:
    Y[..., i, j] = sum_k A[..., i, k] * B[..., k, j] (batch dims broadcast)."""
    _mm_shape(a, b)
    a2 = (a[None, :] if a.ndim == 1 else a).astype(np.float64)
    b2 = (b[:, None] if b.ndim == 1 else b).astype(np.float64)
    y = 0.0
    for k in range(a2.shape[-1]):
        y = y + a2[..., :, k, None] * b2[..., k, None, :]
    if a2.shape[-1] == 0:
        y = np.zeros(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return np.asarray(y, dtype=a.dtype)


@ieee
def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fast twin of :func:`matmul_reference`: numpy.matmul (BLAS) in the input dtype."""
    _mm_shape(a, b)
    return np.asarray(np.matmul(a, b.astype(a.dtype, copy=False)))
