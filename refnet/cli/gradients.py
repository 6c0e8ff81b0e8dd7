"""``refnet stylize | transfer | explain``: the applications of refnet's own gradients."""

from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet stylize``, ``refnet transfer`` and ``refnet explain``."""
    from refnet import explain, gatys, transfer

    for m in (gatys, transfer, explain):
        m.add_parser(sub)
