"""Style-transfer losses of Johnson's fast-neural-style (Torch): Gram matrices, content loss,
style loss and the total-variation regulariser, with their gradients.

Features are ``(N, C, H, W)``. Losses come back as a numpy scalar of the input dtype,
gradients as arrays of the input dtype. ``f`` computes in the input dtype (BLAS for the
Gram products); ``f_reference`` is the same rule computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError
from refnet.kernels._check import as_float_array, ieee

__all__ = [
    "gram_matrix",
    "gram_matrix_reference",
    "content_loss",
    "content_loss_reference",
    "content_loss_grad",
    "content_loss_grad_reference",
    "style_loss",
    "style_loss_reference",
    "style_loss_grad",
    "style_loss_grad_reference",
    "tv_loss",
    "tv_loss_reference",
    "tv_loss_grad",
    "tv_loss_grad_reference",
]


def _features(x: np.ndarray, name: str = "features") -> np.ndarray:
    return as_float_array(x, name, ndim=4)


# ---- Gram matrix --------------------------------------------------------------------------
@ieee
def gram_matrix(features: np.ndarray) -> np.ndarray:
    """Unnormalised Gram matrix ``G[n] = F[n] F[n]^T`` with ``F[n]`` the ``(C, H*W)`` view of
    ``features[n]``; ``(N, C, H, W) -> (N, C, C)`` (fast-neural-style GramMatrix before its
    division by C*H*W)."""
    f = _features(features)
    n, c = f.shape[:2]
    flat = f.reshape(n, c, -1)
    return np.matmul(flat, flat.transpose(0, 2, 1))


@ieee
def gram_matrix_reference(features: np.ndarray) -> np.ndarray:
    """Reference Gram matrix: ``G[n, i, j] = sum_p F[n, i, p] F[n, j, p]`` in float64."""
    f = _features(features)
    flat = f.reshape(f.shape[0], f.shape[1], -1).astype(np.float64)
    return np.einsum("nip,njp->nij", flat, flat).astype(f.dtype)


# ---- content loss -------------------------------------------------------------------------
def _content_check(features: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = as_float_array(features, "features")
    t = as_float_array(target, "target")
    if t.shape != f.shape:
        raise ShapeError("content target must have the features' shape", expected=f.shape,
                         got=t.shape)
    if t.dtype != f.dtype:
        raise TypeError(f"target has dtype {t.dtype} but features has dtype {f.dtype}")
    return f, t


@ieee
def content_loss(features: np.ndarray, target: np.ndarray, weight: float = 1.0) -> np.floating:
    """fast-neural-style ContentLoss with nn.MSECriterion (sizeAverage):
    ``weight * mean((features - target)^2)`` over all N*C*H*W elements."""
    f, t = _content_check(features, target)
    d = f - t
    return f.dtype.type(weight * np.sum(np.square(d)) / max(d.size, 1))


@ieee
def content_loss_reference(features: np.ndarray, target: np.ndarray, weight: float = 1.0
                           ) -> np.floating:
    """Reference content loss in float64 (see :func:`content_loss`)."""
    f, t = _content_check(features, target)
    d = f.astype(np.float64) - t.astype(np.float64)
    return f.dtype.type(weight * np.mean(d * d)) if d.size else f.dtype.type(0)


@ieee
def content_loss_grad(features: np.ndarray, target: np.ndarray, weight: float = 1.0
                      ) -> np.ndarray:
    """Gradient of :func:`content_loss` w.r.t. ``features``: ``2 weight (f - t) / numel``."""
    f, t = _content_check(features, target)
    return ((f - t) * f.dtype.type(2.0 * weight / max(f.size, 1))).astype(f.dtype, copy=False)


@ieee
def content_loss_grad_reference(features: np.ndarray, target: np.ndarray, weight: float = 1.0
                                ) -> np.ndarray:
    """Reference content-loss gradient in float64."""
    f, t = _content_check(features, target)
    d = f.astype(np.float64) - t.astype(np.float64)
    return (2.0 * weight * d / max(d.size, 1)).astype(f.dtype)


# ---- style loss ---------------------------------------------------------------------------
def _style_check(features_list: Sequence[np.ndarray], target_grams_list: Sequence[np.ndarray],
                 weights: Sequence[float] | float
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    if isinstance(features_list, np.ndarray) or isinstance(target_grams_list, np.ndarray):
        raise TypeError("style_loss takes lists: features_list, target_grams_list")
    feats = [_features(f, f"features_list[{i}]") for i, f in enumerate(features_list)]
    targets = [as_float_array(t, f"target_grams_list[{i}]", ndim=(2, 3))
               for i, t in enumerate(target_grams_list)]
    if len(feats) != len(targets):
        raise ShapeError("style_loss needs one target Gram per features tensor",
                         expected=len(feats), got=len(targets))
    ws = [float(weights)] * len(feats) if np.isscalar(weights) else [float(w) for w in weights]
    if len(ws) != len(feats):
        raise ShapeError("style_loss needs one weight per layer", expected=len(feats), got=len(ws))
    for i, (f, t) in enumerate(zip(feats, targets)):
        n, c = f.shape[:2]
        ok = t.shape[-2:] == (c, c) and (t.ndim == 2 or t.shape[0] in (1, n))
        if not ok:
            raise ShapeError(f"target_grams_list[{i}] must be (C, C), (1, C, C) or (N, C, C)",
                             expected=(n, c, c), got=t.shape)
        if t.dtype != f.dtype:
            raise TypeError(f"target_grams_list[{i}] has dtype {t.dtype} but features_list[{i}] "
                            f"has dtype {f.dtype}")
    if feats and any(f.dtype != feats[0].dtype for f in feats):
        raise TypeError("features_list arrays must share one dtype")
    return feats, targets, ws


def _style_terms(f: np.ndarray, t: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray, int]:
    """Normalised Gram ``G / (C*H*W)`` minus the target (broadcast over N), the ``(N, C, HW)``
    features and ``C*H*W``, in ``dtype``."""
    n, c, h, w = f.shape
    chw = c * h * w
    flat = f.reshape(n, c, -1).astype(dtype, copy=False)
    g = np.matmul(flat, flat.transpose(0, 2, 1)) / dtype(max(chw, 1))
    return g - np.broadcast_to(t.astype(dtype, copy=False), g.shape), flat, chw


@ieee
def style_loss(features_list: Sequence[np.ndarray], target_grams_list: Sequence[np.ndarray],
               weights: Sequence[float] | float) -> np.floating:
    """fast-neural-style StyleLoss summed over layers: ``sum_l w_l * mean((G_l/(C*H*W) - T_l)^2)``
    with ``G_l`` the unnormalised Gram of layer l, ``T_l`` its target Gram as StyleLoss captures
    it (already divided by C*H*W; ``(1, C, C)`` broadcasts over N) and the mean over N*C*C."""
    feats, targets, ws = _style_check(features_list, target_grams_list, weights)
    dtype = feats[0].dtype.type if feats else np.float64
    total = dtype(0)
    for f, t, w in zip(feats, targets, ws):
        d, _, _ = _style_terms(f, t, dtype)
        total += dtype(w) * np.sum(np.square(d)) / dtype(max(d.size, 1))
    return dtype(total)


@ieee
def style_loss_reference(features_list: Sequence[np.ndarray],
                         target_grams_list: Sequence[np.ndarray],
                         weights: Sequence[float] | float) -> np.floating:
    """Reference style loss in float64 with the einsum Gram (see :func:`style_loss`)."""
    feats, targets, ws = _style_check(features_list, target_grams_list, weights)
    total = 0.0
    for f, t, w in zip(feats, targets, ws):
        n, c, h, wd = f.shape
        g = gram_matrix_reference(f.astype(np.float64)) / (c * h * wd)
        diff = g - t.astype(np.float64)
        total += w * float(np.mean(diff * diff))
    return (feats[0].dtype.type if feats else np.float64)(total)


@ieee
def style_loss_grad(features_list: Sequence[np.ndarray], target_grams_list: Sequence[np.ndarray],
                    weights: Sequence[float] | float) -> list[np.ndarray]:
    """Gradient of :func:`style_loss` w.r.t. each features tensor (GramMatrix backward):
    ``dL/dF = (D + D^T) F / (C*H*W)`` with ``D = 2 w (G/(C*H*W) - T) / (N*C*C)``."""
    feats, targets, ws = _style_check(features_list, target_grams_list, weights)
    grads = []
    for f, t, w in zip(feats, targets, ws):
        dtype = f.dtype.type
        d, flat, chw = _style_terms(f, t, dtype)
        dg = d * dtype(2.0 * w / max(d.size, 1))
        g = np.matmul(dg + dg.transpose(0, 2, 1), flat) / dtype(max(chw, 1))
        grads.append(g.reshape(f.shape).astype(f.dtype, copy=False))
    return grads


@ieee
def style_loss_grad_reference(features_list: Sequence[np.ndarray],
                              target_grams_list: Sequence[np.ndarray],
                              weights: Sequence[float] | float) -> list[np.ndarray]:
    """Reference style-loss gradient in float64, term by term of the chain rule:
    ``dL/dF[n,a,p] = sum_b D[n,a,b] F[n,b,p] / CHW + sum_b D[n,b,a] F[n,b,p] / CHW``."""
    feats, targets, ws = _style_check(features_list, target_grams_list, weights)
    grads = []
    for f, t, w in zip(feats, targets, ws):
        n, c, h, wd = f.shape
        chw = c * h * wd
        flat = f.reshape(n, c, -1).astype(np.float64)
        g = np.einsum("nip,njp->nij", flat, flat) / chw
        dg = 2.0 * w * (g - t.astype(np.float64)) / (n * c * c)
        grad = (np.einsum("nab,nbp->nap", dg, flat) + np.einsum("nba,nbp->nap", dg, flat)) / chw
        grads.append(grad.reshape(f.shape).astype(f.dtype))
    return grads


# ---- total variation ----------------------------------------------------------------------
@ieee
def tv_loss(x: np.ndarray, strength: float = 1.0) -> np.floating:
    """The loss whose gradient fast-neural-style's TotalVariation module adds in backward (its
    forward is the identity): ``strength/2 * sum over i < H-1, j < W-1 of (x[i,j] - x[i,j+1])^2
    + (x[i,j] - x[i+1,j])^2``, summed (not averaged) over N and all C channels."""
    x = _features(x, "x")
    xd = x[:, :, :-1, :-1] - x[:, :, :-1, 1:]
    yd = x[:, :, :-1, :-1] - x[:, :, 1:, :-1]
    return x.dtype.type(0.5 * strength * (np.sum(np.square(xd)) + np.sum(np.square(yd))))


@ieee
def tv_loss_reference(x: np.ndarray, strength: float = 1.0) -> np.floating:
    """Reference TV loss in float64 (see :func:`tv_loss`)."""
    x = _features(x, "x")
    xd = x.astype(np.float64)
    h, w = xd.shape[2:]
    total = 0.0
    if h > 1 and w > 1:
        core = xd[:, :, : h - 1, : w - 1]
        total = float(np.sum((core - xd[:, :, : h - 1, 1:]) ** 2)
                      + np.sum((core - xd[:, :, 1:, : w - 1]) ** 2))
    return x.dtype.type(0.5 * strength * total)


@ieee
def tv_loss_grad(x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Gradient of :func:`tv_loss`: exactly what TotalVariation:updateGradInput adds to
    ``gradOutput`` (``x_diff`` and ``y_diff`` on the top-left (H-1, W-1) block, scattered)."""
    x = _features(x, "x")
    g = np.zeros_like(x)
    xd = x[:, :, :-1, :-1] - x[:, :, :-1, 1:]
    yd = x[:, :, :-1, :-1] - x[:, :, 1:, :-1]
    g[:, :, :-1, :-1] += xd + yd
    g[:, :, :-1, 1:] -= xd
    g[:, :, 1:, :-1] -= yd
    g *= x.dtype.type(strength)
    return g


@ieee
def tv_loss_grad_reference(x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Reference TV gradient in float64, as a sum of the three shifted difference fields:
    ``d/dx[i,j]`` collects ``+(x[i,j]-x[i,j+1]) + (x[i,j]-x[i+1,j])`` where (i, j) is a block
    corner, ``-(x[i,j-1]-x[i,j])`` from its left and ``-(x[i-1,j]-x[i,j])`` from above."""
    x = _features(x, "x")
    xd = x.astype(np.float64)
    n, c, h, w = xd.shape
    g = np.zeros_like(xd)
    if h > 1 and w > 1:
        right = np.zeros_like(xd)
        down = np.zeros_like(xd)
        right[:, :, : h - 1, : w - 1] = xd[:, :, : h - 1, : w - 1] - xd[:, :, : h - 1, 1:]
        down[:, :, : h - 1, : w - 1] = xd[:, :, : h - 1, : w - 1] - xd[:, :, 1:, : w - 1]
        g += right + down
        g[:, :, :, 1:] -= right[:, :, :, :-1]
        g[:, :, 1:, :] -= down[:, :, :-1, :]
    return (strength * g).astype(x.dtype)
