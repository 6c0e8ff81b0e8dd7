"""Finite-difference oracle for the backward kernels (float64 central differences).

A backward kernel claims ``dL/da`` for ``L(a) = sum(dy * f(a))``. The oracle is independent of
it: for random probe directions ``v`` it evaluates the *forward* reference kernel at ``a + eps v``
and ``a - eps v`` and compares ``(L(a + eps v) - L(a - eps v)) / (2 eps)`` with ``<dL/da, v>``.
A wrong gradient component ``e_i`` shifts the directional derivative by ``e_i v_i`` with a
Gaussian ``v_i``, so errors above the tolerance times ``|<g, v>|`` cannot hide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from conftest import TOL

EPS = 1e-6
PROBES = 3


def directional_fd(loss: Callable[..., float], args: Sequence[np.ndarray], k: int, v: np.ndarray,
                   eps: float = EPS) -> float:
    """Central difference of ``loss(*args)`` along ``v`` in argument ``k``."""
    plus = list(args)
    minus = list(args)
    plus[k] = args[k] + eps * v
    minus[k] = args[k] - eps * v
    return (loss(*plus) - loss(*minus)) / (2 * eps)


def check_grads(forward: Callable[..., np.ndarray], args: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                which: Sequence[int], dy: np.ndarray, rng: np.random.Generator, what: str = "",
                tol: float | None = None) -> float:
    """Assert ``grads[i]`` (for ``args[which[i]]``) match finite differences of
    ``sum(dy * forward(*args))``; returns the worst relative error."""
    tol = TOL["grad_fd"] if tol is None else tol

    def loss(*a):
        return float(np.sum(dy * forward(*a)))

    worst = 0.0
    for k, g in zip(which, grads):
        assert g.shape == np.shape(args[k]), f"{what}: grad of arg {k} has shape {g.shape}, arg {np.shape(args[k])}"
        an, fd = [], []
        for _ in range(PROBES):
            v = rng.standard_normal(np.shape(args[k]))
            an.append(float(np.sum(g * v)))
            fd.append(directional_fd(loss, args, k, v))
        an_a, fd_a = np.array(an), np.array(fd)
        scale = max(np.abs(fd_a).max(), 1e-12)
        err = float(np.abs(an_a - fd_a).max() / scale)
        if np.abs(fd_a).max() < 1e-9 and np.abs(an_a).max() < 1e-9:
            err = 0.0  # both agree the function is flat here
        worst = max(worst, err)
        assert err <= tol, f"{what}: arg {k}: analytic {an} vs finite differences {fd} (rel {err:.3g})"
    return worst


def away_from_zero(x: np.ndarray, gap: float = 1e-3) -> np.ndarray:
    """``x`` with values near 0 pushed out (kinks of ReLU-like ops stay out of the FD stencil)."""
    return np.where(np.abs(x) < gap, np.sign(x + 1e-300) * (gap + np.abs(x)), x)
