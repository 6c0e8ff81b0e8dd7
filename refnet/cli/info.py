"""``refnet info``: the layer table of a model -- shapes, parameters, MACs, cv2's getFLOPS (refnet.info)."""

from __future__ import annotations

import argparse
from typing import Any

from refnet.cli.common import add_model_args

__all__ = ["add_parser", "info_command"]


def info_command(args: Any, out: Any = None) -> int:
    """``refnet info``: print the layer table (and write ``--json``); architecture-only models are
    counted with seeded (Caffe) or zero (Darknet) weights."""
    import sys
    import tempfile
    from pathlib import Path

    from refnet.errors import ShapeError

    out = out or sys.stdout
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise FileNotFoundError(f"--json {args.json}: folder {Path(args.json).parent} does not exist")
    only_arch = bool(args.model) and len(args.model) == 1 and Path(args.model[0]).suffix.lower() in (
        ".prototxt", ".pbtxt")
    seeded = 0 if (only_arch or args.zoo) else None
    shape = None
    if args.input_shape:
        if len(args.input_shape) != 4 or min(args.input_shape) <= 0:
            raise ShapeError("--input-shape needs four positive numbers", expected="N C H W",
                             got=tuple(args.input_shape))
        shape = tuple(args.input_shape)
    with tempfile.TemporaryDirectory(prefix="refnet-info-") as wd:  # seeded weights live only for this command
        return _info(args, out, seeded, shape, wd)


def _info(args: Any, out: Any, seeded: int | None, shape: tuple[int, ...] | None, workdir: str) -> int:
    import json
    from pathlib import Path

    from refnet.errors import ShapeError
    from refnet.info import model_info
    from refnet.resolver import resolve_model

    rm = resolve_model(args.model, args.zoo, seeded_weights=seeded, zero_darknet=True, input_shape=shape,
                       workdir=workdir, calibrate=False)  # counts need shapes, not calibrated values
    net = rm.net
    if shape is None and len(net.input_names) == 1 and not net.input_shapes.get(net.input_names[0]):
        pre = rm.entry.preprocess if rm.entry is not None else None
        if pre is not None and pre.size is not None:
            w, h = pre.size
            shape = (1, 1 if pre.gray else 3, h, w)
        else:
            raise ShapeError(f"{rm.name} does not declare its input shape; pass --input-shape N C H W")
    info = model_info(net, shape, cv2_flops=not args.no_cv2 and net.files is not None, model_name=rm.name)
    if net.files is None and not args.no_cv2:
        info.cv2_error = "no weights file: cv2 cannot load the model"
    for n in rm.notes:
        print(f"note: {n}", file=out)
    print(info.table(), file=out)
    if args.json:
        Path(args.json).write_text(json.dumps(info.to_dict(), indent=1))
        print(f"wrote {args.json}", file=out)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet info``."""
    s = sub.add_parser("info", help="layer table of a model: shapes, parameters, MACs (and cv2 getFLOPS)")
    add_model_args(s, "a zoo model (architecture-only ones too)")
    s.add_argument("--input-shape", type=int, nargs="+", metavar="D", help="N C H W when the model does not declare it")
    s.add_argument("--json", metavar="PATH", help="write the table as JSON")
    s.add_argument("--no-cv2", action="store_true", help="do not ask cv2 for getFLOPS")
    s.set_defaults(func=info_command)
