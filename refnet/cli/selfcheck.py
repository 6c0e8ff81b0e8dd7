"""``refnet selfcheck``: the fast float32 kernels against the float64 reference (refnet.selfcheck)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "selfcheck_command"]


def selfcheck_command(args: argparse.Namespace) -> int:
    """0 when every kernel case passes, else 1."""
    from refnet import selfcheck

    rows = selfcheck.run(verbose=True)
    return 0 if all(r[3] for r in rows) else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet selfcheck``."""
    s = sub.add_parser("selfcheck", help="fast float32 kernels vs float64 reference")
    s.set_defaults(func=selfcheck_command)
