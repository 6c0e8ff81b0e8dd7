"""``refnet generate``: write a model with seeded random weights and its sidecar (refnet.generate)."""

from __future__ import annotations

from typing import Any

from refnet.generate import SEEDED_NOTE, generate, generator_names

__all__ = ["add_parser", "generate_command"]


def generate_command(args: Any, out: Any = None) -> int:
    """``refnet generate NAME --out PREFIX``: write the files and the sidecar, print how to use them."""
    import shlex
    import sys

    out = out or sys.stdout
    if args.list:
        for n in generator_names():
            print(n, file=out)
        return 0
    if not args.name or not args.out:
        raise ValueError("give NAME and --out PREFIX (`refnet generate --list` shows the names)")
    g = generate(args.name, args.out, args.seed, tuple(args.size) if args.size else None)
    files = " ".join(shlex.quote(str(p)) for p in g.paths)
    print(f"wrote {files} ({args.name}, task {g.entry.task}, seed {args.seed})", file=out)
    print(f"wrote {g.sidecar} (preprocessing, labels, task; {SEEDED_NOTE})", file=out)
    print(f"try: refnet run {files} --image IMG   refnet compare {files} --random   refnet bench {files}",
          file=out)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``refnet generate``."""
    s = sub.add_parser(
        "generate", help="write a model with seeded random weights (+ a sidecar describing it)",
        description="Write one of refnet's architectures (mobilenet-ssd, googlenet, deeplab-v3plus, "
                    "fast-neural-style-eccv16, fast-neural-style-instance-norm) or any architecture-only zoo model "
                    "(`refnet models list` status 'arch': res10-ssd-face, squeezenet-1.0, yolov3-tiny, fns-*, enet, "
                    "...) with seeded, per-layer calibrated random weights, plus PREFIX.refnet.json (preprocessing, "
                    "task, labels) so that `refnet run/compare/bench` on the files use the right blob.")
    s.add_argument("name", nargs="?", help="architecture or zoo name (`refnet generate --list`)")
    s.add_argument("--out", metavar="PREFIX", help="output path without extension (its folder must exist)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"),
                   help="input width and height (default: the architecture's / zoo entry's)")
    s.add_argument("--list", action="store_true", help="list the names generate accepts and exit")
    s.set_defaults(func=generate_command)
