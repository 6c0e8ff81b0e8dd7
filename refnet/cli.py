"""The ``refnet`` command line.

Errors a user can fix (missing files, malformed models, bad arguments) print one line and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from refnet.errors import RefnetError


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from refnet import selfcheck

    rows = selfcheck.run(verbose=True)
    return 0 if all(r[3] for r in rows) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("refnet demo: kernel self-check (fast float32 kernels vs float64 reference)")
    from refnet import selfcheck

    rows = selfcheck.run(verbose=True)
    report = out / "selfcheck.tsv"
    with report.open("w") as f:
        f.write("kernel\tmax_rel_err\tseconds\tok\n")
        for name, err, dt, ok in rows:
            f.write(f"{name}\t{err:.6g}\t{dt:.3f}\t{ok}\n")
    print(f"wrote {report}")
    return 0 if all(r[3] for r in rows) else 1


def _cmd_info(args: argparse.Namespace) -> int:
    import refnet

    net = refnet.load(*args.model)
    shapes = {}
    try:
        shapes = net.infer_shapes(None if not args.input_shape else tuple(args.input_shape))
    except RefnetError as e:
        print(f"(shapes unavailable: {e})")
    print(f"{'layer':32s} {'op':18s} {'output shape':24s} {'params':>10s}")
    total = 0
    for n in net.graph.nodes:
        count = sum(int(v.size) for v in n.params.values())
        total += count
        print(f"{n.name[:32]:32s} {n.op:18s} {str(shapes.get(n.outputs[0], '?')):24s} {count:10d}")
    print(f"{len(net.graph.nodes)} layers, {total} parameters; inputs {list(net.input_names)}, "
          f"outputs {list(net.output_names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refnet", description="Reference DNN inference, checked against cv2.dnn.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("selfcheck", help="fast float32 kernels vs float64 reference")
    s.set_defaults(func=_cmd_selfcheck)
    s = sub.add_parser("demo", help="the main job on built-in defaults; writes into --out")
    s.add_argument("--out", default="demo-out")
    s.set_defaults(func=_cmd_demo)
    s = sub.add_parser("info", help="layer table of a model")
    s.add_argument("model", nargs="+", help="model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights)")
    s.add_argument("--input-shape", type=int, nargs="+", help="N C H W when the model does not declare it")
    s.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (RefnetError, FileNotFoundError, KeyError, ValueError) as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"refnet: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
