"""``refnet convert``: write a Caffe / Torch7 / Darknet model as ONNX and prove it still computes the same.

    refnet convert MODEL_FILES... | --zoo NAME -o OUT.onnx [--opset N] [--input-shape N C H W]
                   [--quirks none|cv2] [--image IMG | --seed S] [--no-verify] [--json PATH]
                   [--backend SPEC ...] [--no-layers]

Exit status: 0 written (and, unless --no-verify, every backend agrees), 1 DIFFER, 2 user error
(bad files or arguments, a layer that has no exact ONNX expression), 3 internal error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from refnet.cli.common import add_model_args

__all__ = ["add_parser", "convert_command", "load_source"]


def _seed(text: str) -> int:
    """``--seed``: a non-negative integer (numpy's generators take no negative seeds)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def _opset(text: str) -> int:
    """``--opset``: an opset the exporter writes (refnet.export.onnx.OPSET_MIN..OPSET_MAX), checked
    before the model is loaded."""
    from refnet.export.onnx import OPSET_MAX, OPSET_MIN

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not OPSET_MIN <= v <= OPSET_MAX:
        raise argparse.ArgumentTypeError(f"must be {OPSET_MIN}..{OPSET_MAX}, got {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("convert", help="write a Caffe/Torch7/Darknet model as ONNX (for OpenCV 5 / ONNX Runtime) "
                                       "and verify it",
                       description="Convert a model to ONNX (opset 13..17, float32 weights, the source's input and "
                                   "output names) and verify the file in every available backend (onnxruntime, cv2 "
                                   "4.x, cv2 5.x through REFNET_CV5_PYTHON) against refnet's float64 run of the "
                                   "source, per output, per layer and at task level. Exit status: 0 agree, "
                                   "1 differ, 2 user error.")
    add_model_args(s, "a zoo model (`refnet models list`)",
                   "model files (.prototxt [.caffemodel], .t7/.net, .cfg [.weights]); or use --zoo")
    s.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    s.add_argument("--opset", type=_opset, default=17, help="ONNX opset, 13..17 (default 17)")
    s.add_argument("--input-shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                   help="the input shape to export for (default: the declared one with batch 1, else the zoo's "
                        "preprocessing size)")
    s.add_argument("--quirks", choices=("none", "cv2"), default="none",
                   help="export the framework's semantics (none, default) or cv2 4.x's Caffe/Torch/Darknet "
                        "conventions (cv2: BN eps, class score threshold and NMS in the YOLO heads, ...)")
    s.add_argument("--image", metavar="IMG", help="verify on this image (default: a seeded random input)")
    s.add_argument("--seed", type=_seed, default=0, help="seed of the random input and of seeded weights (default 0)")
    s.add_argument("--seeded-weights", action="store_true",
                   help="an architecture-only Caffe prototxt or Darknet cfg: use seeded He-scaled weights")
    s.add_argument("--no-verify", action="store_true", help="write the file only")
    s.add_argument("--no-layers", action="store_true", help="compare the outputs only (no per-layer runs)")
    s.add_argument("--backend", action="append", metavar="SPEC",
                   help="ort, cv2 (this interpreter's, in a worker), cv2-inprocess, cv2@PYTHON, cv2@cv5 "
                        "(repeatable; default: every available one)")
    s.add_argument("--json", metavar="PATH", help="write the verification as JSON")
    s.set_defaults(func=convert_command)


def load_source(files: list[str], zoo_name: str | None, *, quirks: str, seeded: bool, seed: int,
                input_shape: Any, workdir: str) -> tuple[Any, Any, str, bool]:
    """(Net, preprocessing or None, display name, whether the weights are seeded) for model files
    or a zoo name: the resolver's choice and file checks (:mod:`refnet.resolver`), but an
    architecture-only model (a zoo entry of status ``arch``, a prototxt or Darknet cfg with
    ``--seeded-weights``) gets seeded weights from ``--seed``: a prototxt's calibrated without the
    zoo preprocessing, as convert has always written them; a cfg's as the resolver writes them
    (calibrated on the zoo preprocessing, if any). An ``.onnx`` file is refused (ValueError)."""
    import refnet
    from refnet import zoo
    from refnet.resolver import check_model_choice, existing_files

    check_model_choice(files, zoo_name)
    entry = None
    if zoo_name:
        loc = zoo.find(zoo_name)
        entry = loc.entry
        paths = [str(loc.path_of("model"))] if loc.status == "arch" else [str(p) for p in loc.main_paths]
        seeded = seeded or loc.status == "arch"
    else:
        paths = existing_files(files)
        from refnet.pipelines import entry_for_files

        entry = entry_for_files(paths)[0]
    onnx_files = [p for p in paths if Path(p).suffix.lower() == ".onnx"]
    if onnx_files:
        raise ValueError(f"{onnx_files[0]} is an ONNX model already: convert is for Caffe, Torch7 and Darknet models "
                         f"(`refnet compare {onnx_files[0]}` checks an ONNX file in every backend)")
    pre = entry.preprocess if entry is not None else None
    archs = [p for p in paths if Path(p).suffix.lower() in (".prototxt", ".pbtxt", ".cfg")]
    seeded_now = bool(archs) and len(paths) == 1
    if seeded_now:
        darknet = Path(archs[0]).suffix.lower() == ".cfg"
        if not seeded:
            raise ValueError(f"{archs[0]} has no weights file: give the {'.weights' if darknet else '.caffemodel'}, "
                             "or --seeded-weights to convert the architecture with seeded random weights")
        if darknet:
            from refnet.seeded import seeded_darknet_weights

            model = Path(workdir) / (Path(archs[0]).stem + f".seed{seed}.weights")
            model.write_bytes(seeded_darknet_weights(archs[0], seed, pre))
        else:
            from refnet.archs import seeded_caffemodel

            shape = tuple(input_shape) if input_shape else None
            if shape is None and pre is not None and pre.size is not None:
                shape = (1, 1 if pre.gray else 3, pre.size[1], pre.size[0])
            model = Path(workdir) / (Path(archs[0]).stem + f".seed{seed}.caffemodel")
            model.write_bytes(seeded_caffemodel(archs[0], seed, shape))
        paths = [archs[0], str(model)]
    net = refnet.load(*paths, quirks=quirks)
    return net, pre, (entry.name if entry is not None else Path(paths[0]).name), seeded_now


def _input_shape(net: Any, pre: Any, given: Any) -> tuple[int, ...]:
    from refnet.errors import ShapeError

    if len(net.input_names) != 1:
        raise ShapeError(f"the model has inputs {list(net.input_names)}: convert supports one input")
    declared = net.input_shapes.get(net.input_names[0])
    if given:
        shape = tuple(int(d) for d in given)
        if min(shape) <= 0:
            raise ShapeError("--input-shape needs four positive numbers", expected="N C H W", got=shape)
        if declared and len(declared) != 4:  # refnet's run of the source keeps the declared rank
            raise ShapeError(f"--input-shape is N C H W, but input {net.input_names[0]} is declared "
                             f"{list(declared)}: leave --input-shape out")
        return shape
    if declared and all(int(d) > 0 for d in declared):
        # batch 1 (deploy prototxts often declare 10): what blobFromImage gives a converted script
        return (1,) + tuple(int(d) for d in declared[1:])
    if pre is not None and pre.size is not None:
        w, h = pre.size
        if pre.layout == "NCWH":
            w, h = h, w
        return (1, 1 if pre.gray else 3, h, w)
    raise ShapeError("the model does not declare its input shape: pass --input-shape N C H W")


def _feeds(net: Any, pre: Any, shape: tuple[int, ...], image: str | None, seed: int) -> tuple[np.ndarray, str]:
    if image and not (len(shape) == 4 and shape[1] in (1, 3)):
        from refnet.errors import ShapeError

        raise ShapeError(f"--image needs an image input (1 or 3 channels); input {net.input_names[0]} is "
                         f"{list(shape)}: leave --image out to verify on a seeded random input")
    if image:
        from refnet.pipelines import default_preprocess, read_image

        p = pre if pre is not None else default_preprocess(net, "classify")
        size = (shape[3], shape[2]) if p.layout != "NCWH" else (shape[2], shape[3])
        blob = p.blob(read_image(image), size=size)
        if tuple(blob.shape) != tuple(shape):
            from refnet.errors import ShapeError

            raise ShapeError("the image blob does not have the export shape", expected=shape, got=blob.shape)
        return blob.astype(np.float32), f"image {image}"
    from refnet.runtime.budget import check_memory

    rng = np.random.default_rng(seed)
    if pre is not None and len(shape) == 4 and shape[1] in (1, 3):
        h, w = (shape[2], shape[3]) if pre.layout != "NCWH" else (shape[3], shape[2])
        # the picture, its float32 blob and the resize/convert temporaries (refnet.resolver's estimate)
        check_memory(max(0, int(w)) * max(0, int(h)) * 3 * (1 + 4 * 3 + 1), f"a random {int(w)}x{int(h)} image blob")
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        blob = pre.blob(img, size=(w, h))
        if tuple(blob.shape) == tuple(shape):
            return blob.astype(np.float32), f"seeded random image (seed {seed}) through the zoo preprocessing"
    check_memory(math.prod(max(0, int(d)) for d in shape) * (8 + 4),  # drawn in float64, then float32
                 "a random input of " + "x".join(map(str, shape)))
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32), f"seeded uniform [-1, 1) input (seed {seed})"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def _check_overwrites(args: argparse.Namespace, net: Any) -> None:
    """OutputError when ``-o`` or ``--json`` names a file convert reads (a model file, the image)
    or both name the same file: writing would destroy the source, or the ONNX file with the proof."""
    from refnet.cli.toplevel import OutputError

    inputs = [str(p) for p in (net.files[1] if net.files else ())] + ([args.image] if args.image else [])
    outputs = [("-o/--output", args.output)] + ([("--json", args.json)] if args.json else [])
    for flag, out in outputs:
        for src in inputs:
            if _same_file(out, src):
                raise OutputError(f"{flag} {out} is an input of the conversion ({src}): it would be overwritten; "
                                  "write to another file")
    if args.json and _same_file(args.json, args.output):
        raise OutputError(f"--json {args.json} and -o/--output {args.output} are the same file: the proof would "
                          "overwrite the ONNX model; give --json another name")


def convert_command(args: argparse.Namespace) -> int:
    from refnet.export.onnx import build_model, require_onnx

    onnx = require_onnx()
    out = sys.stdout
    if hasattr(out, "reconfigure"):  # each line as it comes, also through a pipe (| tee): the work takes minutes
        out.reconfigure(line_buffering=True)
    with tempfile.TemporaryDirectory(prefix="refnet-convert-") as wd:
        net, pre, name, seeded = load_source(args.model, args.zoo, quirks=args.quirks, seeded=args.seeded_weights,
                                             seed=args.seed, input_shape=args.input_shape, workdir=wd)
        _check_overwrites(args, net)
        shape = _input_shape(net, pre, args.input_shape)
        print(f"refnet convert: {name} ({net.graph.framework}, {len(net.graph.nodes)} layers, quirks={args.quirks}) "
              f"-> {args.output} (opset {args.opset}, input {net.input_names[0]} {list(shape)})", file=out)
        if not args.no_verify:  # a bad --backend or --image fails before anything is written
            from refnet.crosscheck.onnx_candidates import select_backends
            from refnet.export.verify import reference_only

            x, label = _feeds(net, pre, shape, args.image, args.seed)
            backends = select_backends(args.backend)
            if all(reference_only(b.name) for b in backends):
                raise ValueError(
                    f"no backend to verify in that decides the verdict ({'; '.join(b.name for b in backends) or 'none'}"
                    f"{' is shown for reference only' if backends else ' installed'}): add --backend ort (pip install "
                    "onnxruntime) or --backend cv2@PYTHON with an OpenCV 5 interpreter (REFNET_CV5_PYTHON for the "
                    "default), or pass --no-verify")
            from refnet.export.verify import check_verify_budget

            # over the memory budget: refused before the file is written (every layer counted: the
            # per-layer counterparts are known once the file is)
            check_verify_budget(net, {net.input_names[0]: x}, list(net.output_names) + (
                [] if args.no_layers else [t for n in net.graph.nodes for t in n.outputs]))
        if args.seeded_weights and not seeded:
            print("note: --seeded-weights ignored: the model comes with its weights", file=out)
        if seeded:  # an architecture without weights: say so here and in the file, it is no trained model
            print(f"note: weights: seeded random (He-scaled, calibrated, seed {args.seed}): the architecture only, "
                  "not a trained model", file=out)
        model = build_model(net, opset=args.opset, input_shapes={net.input_names[0]: shape})
        if seeded:
            model.doc_string += f" Weights: seeded random (seed {args.seed}), architecture only, not a trained model."
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, args.output)
        ops = sorted({n.op_type for n in model.graph.node})
        print(f"wrote {args.output}: {len(model.graph.node)} ONNX nodes ({', '.join(ops)}); outputs "
              f"{[o.name for o in model.graph.output]}", file=out)
        if "PriorBox" in model.doc_string or "PriorBox" in model.graph.doc_string:
            print(f"note: SSD PriorBox layers are constants for input {shape[2]}x{shape[3]}: run the ONNX model at "
                  "this input size only", file=out)
        if args.no_verify:
            return 0
        from refnet.export.verify import verify_onnx

        print(f"verifying on {label} in {len(backends)} backend(s) against refnet float64 of the source", file=out)
        v = verify_onnx(net, args.output, {net.input_names[0]: x}, backends, per_layer=not args.no_layers,
                        input_label=label, quiet=False)
        print(v.table(), file=out)
        for note in v.notes:
            print(f"note: {note}", file=out)
        rule = f"outputs within {1e-4:g} of refnet float64, scaled by max(1, |ref|); task-level agreement"
        if v.verdict == "AGREE":
            print(f"verdict: AGREE ({rule})", file=out)
        else:  # name the target backends that did not agree; the rule is what they missed
            bad = "; ".join(f"{r.name}: {r.status}" for r in v.results if not r.is_cv2_4 and not r.agrees)
            print(f"verdict: DIFFER ({bad}; needed: {rule})", file=out)
        if args.json:
            from refnet.crosscheck.report import _jsonable  # compare --json's rule: NaN null, +-inf +-1e308

            Path(args.json).write_text(json.dumps(_jsonable(v.to_json()), indent=1, allow_nan=False))
        return 0 if v.verdict == "AGREE" else 1
