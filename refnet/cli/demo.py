"""``refnet demo``: the main job on built-in defaults (refnet.demo.run_demo), written into ``--out``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser", "demo_command"]


def demo_command(args: Any) -> int:
    """``refnet demo``: exit 0 when the self-check passes and every model agrees, else 1."""
    from refnet.demo import run_demo

    names = args.models or os.environ.get("REFNET_DEMO_MODELS")
    models = names.split(",") if names else None
    status, _ = run_demo(args.out, models=models, builtins=not args.no_builtins, selfcheck=not args.no_selfcheck,
                         say=lambda s: print(s, flush=True))
    sys.stdout.flush()
    return status


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet demo``."""
    s = sub.add_parser("demo", help="the main job on built-in defaults; writes into --out")
    s.add_argument("--out", default="demo-out")
    s.add_argument("--models", metavar="NAMES",
                   help="comma-separated zoo/built-in names to run (default: all; also $REFNET_DEMO_MODELS)")
    s.add_argument("--no-builtins", action="store_true", help="skip the generated MobileNet-SSD/GoogLeNet/DeepLab")
    s.add_argument("--no-selfcheck", action="store_true", help="skip the kernel self-check")
    s.set_defaults(func=demo_command)
