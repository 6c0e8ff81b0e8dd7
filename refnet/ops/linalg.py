"""Run and shape functions of `gemm` and `matmul` (kernels: refnet.kernels.linalg)."""

from __future__ import annotations

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels import _gemv
from refnet.ops.registry import Attr, attrs, kern, prepares, register


def _operand_b(node, shapes):
    return tuple(node.params["b"].shape) if "b" in node.params else tuple(shapes[1])


def _gemm_shape(node, shapes):
    a, b = tuple(shapes[0]), _operand_b(node, shapes)
    if len(a) != 2 or len(b) != 2:
        raise ShapeError("Gemm operands must be 2-D", layer=node.name, got=(a, b))
    at = attrs(node)
    m, ka = (a[1], a[0]) if at["trans_a"] else a
    kb, n = (b[1], b[0]) if at["trans_b"] else b
    if ka != kb:
        raise ShapeError("Gemm inner dimensions differ", layer=node.name, expected=ka, got=kb)
    c = node.params.get("c")
    if c is not None:
        try:
            if np.broadcast_shapes(c.shape, (m, n)) != (m, n):
                raise ValueError
        except ValueError:
            raise ShapeError("C does not broadcast to (M, N)", layer=node.name, expected=(m, n), got=c.shape) from None
    return [(m, n)]


_GEMM = {"alpha": Attr(1.0, float), "beta": Attr(1.0, float), "trans_a": Attr(False, bool),
         "trans_b": Attr(False, bool)}


@register("gemm", shape=_gemm_shape, attrs=_GEMM)
def _gemm(node, xs, p, ctx):
    a = attrs(node)
    b = p["b"] if "b" in p else xs[1]
    return kern("gemm", ctx)(xs[0], b, p.get("c"), alpha=a["alpha"], beta=a["beta"], trans_a=a["trans_a"],
                             trans_b=a["trans_b"])


@prepares("gemm")
def _gemm_prepare(node, p, shapes, ctx):
    """One row times a constant B with alpha 1 (a classifier's fully connected layer at batch 1):
    the packed matrix-vector step (kernels/_gemv.py; y + beta * C as the kernel adds it)."""
    a = attrs(node)
    x_shape = tuple(shapes[0])
    if "b" not in p or a["trans_a"] or a["alpha"] != 1.0 or len(x_shape) != 2 or x_shape[0] != 1:
        return None
    b, c = p["b"], p.get("c")
    wmat = b if a["trans_b"] else b.T
    add = None
    if c is not None:
        if c.size != wmat.shape[0] or c.dtype != b.dtype:
            return None
        add = b.dtype.type(a["beta"]) * c.reshape(-1)

    def fallback(x):
        return _gemm(node, [x], p, ctx)

    step = _gemv.fc_step(x_shape, (1, wmat.shape[0]), wmat, add, fallback)
    return None if step is None else (step, False)


def _matmul_shape(node, shapes):
    a, b = tuple(shapes[0]), _operand_b(node, shapes)
    if not a or not b:
        raise ShapeError("MatMul operands must have rank >= 1", layer=node.name, got=(a, b))
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError("MatMul inner dimensions differ", layer=node.name, expected=a2[-1], got=b2[-2])
    try:
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    except ValueError:
        raise ShapeError("MatMul batch dimensions do not broadcast", layer=node.name, got=(a, b)) from None
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return [out]


@register("matmul", shape=_matmul_shape)
def _matmul(node, xs, p, ctx):
    return kern("matmul", ctx)(xs[0], p["b"] if "b" in p else xs[1])
