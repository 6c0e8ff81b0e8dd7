"""``refnet compare``: its argument parser, model resolution, inputs and output files.

The command runs :func:`refnet.crosscheck.compare` per input and prints the report table (one
input) or one row per image, writes ``--json`` (docs/compare-schema.md, with the full command
line) and ``--plot``. Exit status: 0 agree (known cv2 deviations included), 1 DIFFER, 2 user
error -- :attr:`Report.exit_status` of every input, the same verdict the table states.
Models: :func:`refnet.resolver.resolve_model`; ONNX models are checked in the ONNX backends
(:mod:`refnet.crosscheck.onnx_candidates`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refnet.cli.common import CvMeanAction, add_model_args, finite_float, image_labels

__all__ = ["add_parser", "compare_command", "check_layers"]


def check_layers(net: Any, names: Sequence[str]) -> None:
    """KeyError naming the close matches when a requested layer does not exist."""
    import difflib

    known = list(net.layer_names)
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no layer named {n!r} in this model{hint} (`refnet info MODEL` lists the "
                           f"{len(known)} layers)")


def compare_command(args: Any, out: Any = None, err: Any = None) -> int:
    """``refnet compare``: 0 when every input agrees (known cv2 deviations included), 1 when one differs."""
    import tempfile

    from refnet.resolver import image_files, resolve_model, size_input_shape

    out = out or sys.stdout
    err = err or sys.stderr
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.image and args.random:
        raise ValueError("give --image or --random, not both")
    if args.size and min(args.size) <= 0:  # (0, 0) reached cv2 as an empty picture (an OpenCV assertion)
        raise ValueError(f"--size must be two positive numbers W H, got {args.size[0]} {args.size[1]}")
    for opt in ("json", "plot"):
        p = getattr(args, opt)
        if p and not Path(p).resolve().parent.is_dir():
            raise FileNotFoundError(f"--{opt} {p}: folder {Path(p).parent} does not exist")
    if args.plot:
        from refnet.crosscheck.plot import require_matplotlib

        require_matplotlib()  # fail before the work when matplotlib is missing
    precisions = {"both": ("float64", "float32"), "float32": ("float64", "float32"), "float64": ("float64",)}[
        args.precision]
    images = image_files(args.image) if args.image else []
    with tempfile.TemporaryDirectory(prefix="refnet-compare-") as wd:  # seeded weights: for this command only
        shape = args.input_shape or ((size_input_shape(args.model, args.size) or (1, 3, args.size[1], args.size[0]))
                                     if args.size else None)
        rm = resolve_model(args.model, args.zoo, quirks=args.quirks, seeded_weights=args.seeded_weights,
                           input_shape=shape, workdir=wd)
        return _compare_inputs(args, rm, images, precisions, out, err)


def _compare_inputs(args: Any, rm: Any, images: list[str], precisions: tuple[str, ...], out: Any,
                    err: Any) -> int:
    """Compare on each input (the images, else one seeded random blob), then print and write the reports."""
    from refnet.resolver import preprocess_for

    check_layers(rm.net, args.layer or ())
    pre = preprocess_for(rm, scale=args.scale, size=args.size, mean=args.mean,
                         swap_rb=True if args.swap_rb else None, crop=True if args.crop else None)
    for n in rm.notes:
        print(f"note: {n}", file=err)
    inputs: list[tuple[str, str | None]] = [(Path(p).name, p) for p in images] or [
        (f"random input (seed {args.seed})", None)]
    many = len(inputs) > 1
    plot_labels = image_labels(images) if many else []  # one plot per image, none written over another
    reports = []
    for i, (label, path) in enumerate(inputs):
        t = time.perf_counter()
        x = _input_blob(args, rm, pre, path)
        if many:
            print(f"[{i + 1}/{len(inputs)}] {label} ...", file=err, end="", flush=True)
        rep = _compare_one(args, rm, x, label, precisions, many, err)
        reports.append(rep)
        if many:
            print(f" {rep.verdict_code.upper()} ({time.perf_counter() - t:.1f} s)", file=err, flush=True)
        if args.plot:
            _write_plot(args.plot, rep, plot_labels[i] if many else None, err)
    _print_reports(args, rm.name, reports, out)
    if args.json:
        _write_json(args, reports, err)
    return max(r.exit_status for r in reports)


def _input_blob(args: Any, rm: Any, pre: Any, path: str | None) -> Any:
    """The blob of one input: the image at ``path`` through ``pre``, else the seeded random input."""
    from refnet.errors import ShapeError
    from refnet.pipelines import read_image
    from refnet.resolver import onnx_batch, random_input

    if path is None:
        return random_input(rm, pre if not args.input_shape else None, args.seed, args.input_shape)
    x = pre.blob(read_image(path))
    batch = onnx_batch(rm.net)
    if batch > 1 and x.shape[0] == 1:  # an ONNX model's fixed batch: the image in every item
        x = x.repeat(batch, axis=0)
    if len(rm.net.input_names) == 1:
        want = rm.net.input_shapes.get(rm.net.input_names[0])
        if want and len(want) == 4 and want[1] and x.shape[1] != want[1]:
            raise ShapeError(f"{rm.name} takes {want[1]}-channel input but the image blob has {x.shape[1]} "
                             "channels; use --random (with --input-shape) for this model")
    return x


def _compare_one(args: Any, rm: Any, x: Any, label: str, precisions: tuple[str, ...], many: bool, err: Any) -> Any:
    """:func:`refnet.crosscheck.compare` on one input blob (two-stage feeds and ONNX backends included)."""
    from refnet import two_stage
    from refnet.crosscheck.onnx_candidates import is_onnx, onnx_candidates, onnx_feed, onnx_net_for
    from refnet.crosscheck.orchestrator import compare

    if two_stage.is_two_stage(rm.net):  # Faster R-CNN / R-FCN: data + im_info [[H, W, 1]]
        x = two_stage.feeds(rm.net, x)
    elif not is_onnx(rm.net):  # (an ONNX net is loaded again for the blob's shape below)
        _check_stride(rm.net, x)
    net, extra, onnx_notes = rm.net, {}, []
    if is_onnx(net):
        net = onnx_net_for(net, x)
        x, feed_notes = onnx_feed(net, x)
        cands, onnx_notes = onnx_candidates(net, getattr(args, "backend", None) or (), err)
        onnx_notes[:0] = feed_notes
        extra = {"cv2": False, "backends": cands}
    rep = compare(net, x, cv2_fusion=not args.no_fusion, precisions=precisions, model_name=rm.name,
                  task=rm.entry.task if rm.entry is not None else None, labels=rm.labels,
                  label_offset=rm.entry.label_offset if rm.entry else 0,
                  top_k=5, winograd=False if args.no_winograd else None, input_label=label,
                  progress=None if many else (lambda s: print(f"  {s}", file=err, flush=True)),
                  local_errors=getattr(args, "local_errors", "all"), **extra)
    rep.notes[:0] = rm.notes + (onnx_notes if extra else [])
    return rep


def _check_stride(net: Any, x: Any) -> None:
    """A blob whose size is not a multiple of the net's stride (YOLO at --size 333 333): refnet's
    shape error with the hint (:func:`refnet.cli.common.stride_hint`) before any backend runs; cv2
    said only "Inconsistent shape for ConcatLayer". Other shape errors are left to the compare."""
    from refnet.cli.common import stride_hint
    from refnet.errors import ShapeError

    if len(net.input_names) != 1 or getattr(x, "ndim", 0) != 4:
        return
    given = {net.input_names[0]: tuple(x.shape)}
    try:
        net.infer_shapes(given)
    except ShapeError as e:
        hint = stride_hint(net, e.inputs or given)
        if hint is not None:
            raise e.with_context(inputs=given).with_hint(hint) from e


def _write_plot(plot: str, rep: Any, label: str | None, err: Any) -> None:
    """``--plot``: the PNG of one report (several images: one file per image, named after its
    :func:`refnet.cli.common.image_labels` label)."""
    from refnet.crosscheck.plot import plot_report

    pp = Path(plot)
    if label is not None:
        pp = pp.with_name(f"{pp.stem}-{label}{pp.suffix or '.png'}")
    plot_report(rep, pp)
    print(f"wrote {pp}", file=err)


def _print_reports(args: Any, name: str, reports: list[Any], out: Any) -> None:
    """One input: the report table; several: one row per image and a summary line."""
    import math

    from refnet.crosscheck.report import CMP_CV2, CMP_CV2_F32

    if len(reports) == 1:
        print(reports[0].table(top=args.top or 10, layers=args.layer or None), file=out)
        return
    w = max(len(r.input) for r in reports)
    print(f"refnet compare: {name} on {len(reports)} images", file=out)
    print(f"{'image':{w}s}  {'verdict':12s} {'vs cv2 f64':>10s} {'vs cv2 f32':>10s}  {'first bad':20s} task",
          file=out)
    for r in reports:
        w64, w32 = r.worst(CMP_CV2), r.worst(CMP_CV2_F32)
        print(f"{r.input:{w}s}  {r.verdict_code:12s} {w64.max_rel if w64 else math.nan:10.2e} "
              f"{w32.max_rel if w32 else math.nan:10.2e}  {(r.first_bad_layer or '-'):20s} {r.task_summary()}",
              file=out)
    n_bad = sum(r.verdict_code == "differ" for r in reports)
    n_known = sum(r.verdict_code == "agree_known" for r in reports)
    print(f"summary: {name}: {len(reports) - n_bad}/{len(reports)} images AGREE"
          + (f" ({n_known} with known deviations)" if n_known else "")
          + (f"; {n_bad} DIFFER" if n_bad else ""), file=out)


def _write_json(args: Any, reports: list[Any], err: Any) -> None:
    """``--json``: the run document (docs/compare-schema.md) with the full command line."""
    import json

    from refnet.crosscheck.report import run_document

    command = getattr(args, "command_line", None) or ["refnet", "compare", *_argv_tail()]
    Path(args.json).write_text(json.dumps(run_document(reports, command=command), indent=1, allow_nan=False))
    print(f"wrote {args.json}", file=err)


def _argv_tail() -> list[str]:
    """This process's arguments after ``compare`` (when the CLI was not given its argv)."""
    a = sys.argv[1:]
    return a[a.index("compare") + 1:] if "compare" in a else a


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet compare`` on the CLI's subparsers."""
    s = sub.add_parser("compare", help="per-layer comparison of refnet (float64/float32) with cv2.dnn",
                       description="Run the model in refnet float64 (reference), refnet float32 and cv2.dnn "
                                   "(fusion off per layer, fusion on at the outputs, Winograd off/on) on the same "
                                   "blob; report per layer the accumulated error and the local error (the layer's "
                                   "float64 kernel on the backend's own inputs; a layer differs when its local "
                                   "error is over tolerance), task-level agreement and one verdict. "
                                   "Exit status: 0 agree (known cv2 deviations included), 1 differ, 2 user error.")
    add_model_args(s, "a zoo model (`refnet models list`): files, preprocessing, labels")
    s.add_argument("--image", nargs="+", metavar="PATH", help="image file(s) or a folder of images")
    s.add_argument("--random", action="store_true", help="a seeded random input (the default without --image)")
    s.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    s.add_argument("--input-shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                   help="shape of the --random blob when the model does not say")
    s.add_argument("--scale", type=finite_float, help="blobFromImage scalefactor (default: the zoo entry's)")
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="blobFromImage size")
    s.add_argument("--mean", type=finite_float, nargs="+", metavar="M", action=CvMeanAction,
                   help="blobFromImage mean: one value = first channel only (cv2's rule), or one per channel")
    s.add_argument("--swap-rb", action="store_true", help="blobFromImage swapRB")
    s.add_argument("--crop", action="store_true", help="blobFromImage crop")
    s.add_argument("--quirks", choices=("none", "cv2"), default="none",
                   help="refnet semantics: the framework's (none, default) or cv2's known deviations (cv2)")
    s.add_argument("--precision", choices=("both", "float32", "float64"), default="both",
                   help="refnet precisions to compare (float64 always runs: it is the reference)")
    s.add_argument("--top", type=int, default=10, metavar="N", help="rows per comparison (worst first; default 10)")
    s.add_argument("--layer", action="append", metavar="NAME", help="show these layers only (repeatable)")
    s.add_argument("--no-fusion", action="store_true", help="skip cv2 with fusion on")
    s.add_argument("--no-winograd", action="store_true", help="run cv2 with Winograd off only")
    s.add_argument("--local-errors", choices=("all", "over"), default="all",
                   help="local error of every row (all, default), or only of cv2 fusion off and of rows over "
                        "tolerance (over: about half the float64 work on big nets)")
    s.add_argument("--seeded-weights", type=int, metavar="SEED",
                   help="run an architecture-only Caffe prototxt with seeded random weights")
    s.add_argument("--backend", action="append", metavar="SPEC",
                   help="ONNX models: a backend to check (repeatable): ort, cv2 (this cv2 4.x, in a worker "
                        "process), cv2@PYTHON (cv2 in another interpreter, e.g. OpenCV 5), cv2@cv5 "
                        "($REFNET_CV5_PYTHON); default: every one installed")
    s.add_argument("--json", metavar="PATH", help="write the report as JSON (docs/compare-schema.md)")
    s.add_argument("--plot", metavar="PATH", help="write a PNG of per-layer error along depth (needs matplotlib)")
    s.set_defaults(func=lambda args: compare_command(args))
