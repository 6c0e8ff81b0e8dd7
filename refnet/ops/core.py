"""Compatibility shim for this session: the classic op families now live in
refnet/ops/{conv,pool,activation,softmax,norm,tensor,detection}.py (mirroring refnet/kernels/)
and the float32 planners on the op specs (refnet.ops.registry). ``PREPARE`` is the
registry's derived view, still imported by refnet/net.py until its planning moves to
refnet/runtime/."""

from __future__ import annotations

from refnet.ops.registry import DYN, PREPARE, kern, prepares

__all__ = ["DYN", "PREPARE", "kern", "prepares"]
