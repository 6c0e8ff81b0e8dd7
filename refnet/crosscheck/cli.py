"""`refnet compare`: its argument parser, model resolution, inputs and output files.

The command runs :func:`refnet.crosscheck.compare` per input and prints the report table (one
input) or one row per image, writes ``--json`` (docs/compare-schema.md, with the full command
line) and ``--plot``. Exit status: 0 agree (known cv2 deviations included), 1 DIFFER, 2 user
error -- :attr:`Report.exit_status` of every input, the same verdict the table states.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from refnet.crosscheck import quirks as Q
from refnet.crosscheck.orchestrator import compare
from refnet.crosscheck.report import CMP_CV2, CMP_CV2_F32, Report, run_document

__all__ = ["IMAGE_EXTS", "ResolvedModel", "resolve_model", "image_files", "preprocess_for", "random_input",
           "check_layers", "compare_command", "add_parser"]

# the one model resolver of the command line (sidecars of `refnet generate`, zoo, seeded weights)
from refnet.resolver import ResolvedModel, resolve_model  # noqa: E402
from refnet.runcmd import IMAGE_EXTS, image_files  # noqa: E402  (one expansion of --image for run and compare)


def preprocess_for(rm: ResolvedModel, *, scale: float | None = None, size: Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, swap_rb: bool | None = None, crop: bool | None = None):
    """The zoo entry's :class:`refnet.zoo.Preprocess` (else refnet.pipelines' default for the net),
    with the blobFromImage-style overrides applied."""
    import dataclasses

    from refnet.pipelines import default_preprocess

    pre = rm.entry.preprocess if rm.entry is not None else default_preprocess(rm.net, "classify")
    change: dict[str, Any] = {}
    if scale is not None:
        change["scale"] = float(scale)
    if size is not None:
        change["size"] = (int(size[0]), int(size[1]))
    if mean is not None:
        change["mean"] = tuple(float(m) for m in mean)  # already cv2's rule (CvMeanAction)
    if swap_rb is not None:
        change["swap_rb"] = bool(swap_rb)
    if crop is not None:
        change["crop"] = bool(crop)
    return dataclasses.replace(pre, **change) if change else pre


def random_input(rm: ResolvedModel, pre: Any, seed: int = 0, shape: Sequence[int] | None = None) -> np.ndarray:
    """A seeded input blob: a random uint8 image through ``pre`` when the input is an image of known
    size, else uniform [-1, 1) values of ``shape`` / the declared shape (batch 1).

    Raises ShapeError (a user error) when no shape can be inferred.
    """
    from refnet.errors import ShapeError

    rng = np.random.default_rng(seed)
    net = rm.net
    declared = net.input_shapes.get(net.input_names[0]) if len(net.input_names) == 1 else None
    if shape is not None:
        shp = tuple(int(d) for d in shape)
        if len(shp) != 4 or min(shp) <= 0:
            raise ShapeError("--input-shape needs four positive numbers", expected="N C H W", got=shp)
        return rng.uniform(-1.0, 1.0, shp).astype(np.float32)
    if pre is not None and pre.size is not None and (declared is None or (len(declared) == 4 and declared[1] in (1, 3)
                                                                        and (declared[1] == 1) == bool(pre.gray))):
        w, h = pre.size
        if pre.layout == "NCWH":
            w, h = h, w
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        return pre.blob(img)
    if declared and all(int(d) > 0 for d in declared):
        return rng.uniform(-1.0, 1.0, (1,) + tuple(int(d) for d in declared[1:])).astype(np.float32)
    raise ShapeError(f"cannot infer the input shape of {rm.name}: the model does not declare it and no "
                     "preprocessing size is known; pass --input-shape N C H W (or --size W H)")


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
    import sys
    from pathlib import Path


    out = out or sys.stdout
    err = err or sys.stderr
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.image and args.random:
        raise ValueError("give --image or --random, not both")
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
    import tempfile

    with tempfile.TemporaryDirectory(prefix="refnet-compare-") as wd:  # seeded weights: for this command only
        shape = args.input_shape or ((1, 3, args.size[1], args.size[0]) if args.size else None)
        rm = resolve_model(args.model, args.zoo, quirks=args.quirks, seeded_weights=args.seeded_weights,
                           input_shape=shape, workdir=wd)
        return _compare_inputs(args, rm, images, precisions, out, err)


def _compare_inputs(args: Any, rm: ResolvedModel, images: list[str], precisions: tuple[str, ...], out: Any,
                    err: Any) -> int:
    from pathlib import Path

    from refnet.errors import ShapeError
    from refnet.pipelines import read_image

    check_layers(rm.net, args.layer or ())
    pre = preprocess_for(rm, scale=args.scale, size=args.size, mean=args.mean,
                         swap_rb=True if args.swap_rb else None, crop=True if args.crop else None)
    for n in rm.notes:
        print(f"note: {n}", file=err)
    inputs: list[tuple[str, Any]] = []
    if images:
        for p in images:
            inputs.append((Path(p).name, p))
    else:
        inputs.append((f"random input (seed {args.seed})", None))
    task = rm.entry.task if rm.entry is not None else None
    reports: list[Report] = []
    many = len(inputs) > 1
    for i, (label, path) in enumerate(inputs):
        t = time.perf_counter()
        if path is None:
            x = random_input(rm, pre if not args.input_shape else None, args.seed, args.input_shape)
        else:
            x = pre.blob(read_image(path))
            if len(rm.net.input_names) == 1:
                want = rm.net.input_shapes.get(rm.net.input_names[0])
                if want and len(want) == 4 and want[1] and x.shape[1] != want[1]:
                    raise ShapeError(f"{rm.name} takes {want[1]}-channel input but the image blob has {x.shape[1]} "
                                     "channels; use --random (with --input-shape) for this model")
        if many:
            print(f"[{i + 1}/{len(inputs)}] {label} ...", file=err, end="", flush=True)
        from refnet import two_stage

        if two_stage.is_two_stage(rm.net):  # Faster R-CNN / R-FCN: data + im_info [[H, W, 1]]
            x = two_stage.feeds(rm.net, x)
        net, extra = rm.net, {}
        if is_onnx(net):
            net = onnx_net_for(net, x)
            cands, onnx_notes = onnx_candidates(net, getattr(args, "backend", None) or (), err)
            extra = {"cv2": False, "backends": cands}
        rep = compare(net, x, cv2_fusion=not args.no_fusion, precisions=precisions, model_name=rm.name,
                      task=task, labels=rm.labels, label_offset=rm.entry.label_offset if rm.entry else 0,
                      top_k=5, winograd=False if args.no_winograd else None, input_label=label,
                      progress=None if many else (lambda s: print(f"  {s}", file=err, flush=True)),
                      local_errors=getattr(args, "local_errors", "all"), **extra)
        rep.notes[:0] = rm.notes + (onnx_notes if extra else [])
        reports.append(rep)
        if many:
            print(f" {rep.verdict_code.upper()} ({time.perf_counter() - t:.1f} s)", file=err, flush=True)
        if args.plot:
            from refnet.crosscheck.plot import plot_report

            pp = Path(args.plot)
            if many:
                pp = pp.with_name(f"{pp.stem}-{Path(path).stem}{pp.suffix or '.png'}")
            plot_report(rep, pp)
            print(f"wrote {pp}", file=err)
    if not many:
        print(reports[0].table(top=args.top or 10, layers=args.layer or None), file=out)
    else:
        w = max(len(r.input) for r in reports)
        print(f"refnet compare: {rm.name} on {len(reports)} images", file=out)
        print(f"{'image':{w}s}  {'verdict':12s} {'vs cv2 f64':>10s} {'vs cv2 f32':>10s}  {'first bad':20s} task",
              file=out)
        for r in reports:
            w64, w32 = r.worst(CMP_CV2), r.worst(CMP_CV2_F32)
            print(f"{r.input:{w}s}  {r.verdict_code:12s} {w64.max_rel if w64 else math.nan:10.2e} "
                  f"{w32.max_rel if w32 else math.nan:10.2e}  {(r.first_bad_layer or '-'):20s} {r.task_summary()}",
                  file=out)
        n_bad = sum(r.verdict_code == "differ" for r in reports)
        n_known = sum(r.verdict_code == "agree_known" for r in reports)
        print(f"summary: {rm.name}: {len(reports) - n_bad}/{len(reports)} images AGREE"
              + (f" ({n_known} with known deviations)" if n_known else "")
              + (f"; {n_bad} DIFFER" if n_bad else ""), file=out)
    if args.json:
        import json

        command = getattr(args, "command_line", None) or ["refnet", "compare", *_argv_tail()]
        Path(args.json).write_text(json.dumps(run_document(reports, command=command), indent=1, allow_nan=False))
        print(f"wrote {args.json}", file=err)
    return max(r.exit_status for r in reports)


# ---- ONNX models: refnet vs onnxruntime, cv2 4.x and cv2 5.x (refnet.crosscheck.onnx_backends) ------------
def is_onnx(net: Any) -> bool:
    return bool(net.files) and net.files[0] == "onnx"


def onnx_net_for(net: Any, x: np.ndarray) -> Any:
    """``net`` itself when it was loaded for ``x``'s shape, else the file loaded again for it (the
    ONNX reader folds shape subgraphs for fixed input shapes)."""
    from refnet.net import load_onnx

    name = net.input_names[0]
    if len(net.input_names) == 1 and tuple(net.input_shapes.get(name) or ()) != tuple(x.shape):
        return load_onnx(net.files[1][0], quirks=Q.graph_quirks_mode(net.graph), input_shapes={name: x.shape})
    return net


class _Tolerant:
    """A backend whose failure (a crash of the cv2 worker, a model it refuses) is a note in the
    report, not the end of the compare: it then returns no outputs."""

    def __init__(self, backend: Any, notes: list[str]) -> None:
        self.backend, self.notes, self.name = backend, notes, backend.name

    def run(self, model_path: Any, feeds: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        from refnet.crosscheck.onnx_backends import BackendFailure

        try:
            return self.backend.run(model_path, feeds, outputs)
        except (BackendFailure, RuntimeError, ValueError) as e:
            msg = f"{self.name} failed on this model: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            if msg not in self.notes:
                self.notes.append(msg)
            return {}


def onnx_candidates(net: Any, specs: Sequence[str], err: Any) -> tuple[list[Any], list[str]]:
    """One layer-scope :class:`~refnet.crosscheck.backends.Candidate` per ONNX backend (``specs``,
    default every installed one), each layer asked for by its first output's ONNX tensor name; and
    the list the backends' failures are noted in (for the report)."""
    from refnet.crosscheck.backends import Candidate
    from refnet.crosscheck.onnx_backends import BackendFailure, available_backends, make_backend

    if specs:
        backends = []
        for sp in specs:
            try:
                backends.append(make_backend(sp))
            except BackendFailure as e:
                raise ValueError(f"--backend {sp}: {e}") from None
    else:
        backends = available_backends()
    inverse: dict[str, str] = {}
    for onnx_name, ir in (net.graph.meta.get("tensors") or {}).items():
        inverse.setdefault(ir, onnx_name)
    names = {layer: inverse[layer] for layer in net.layer_names if layer in inverse}
    notes: list[str] = []
    out, used = [], set()
    model = _with_refnet_shapes(net, names) if backends else net.files[1][0]
    for b in backends:
        cid = _backend_id(b.name, used)
        out.append(Candidate(cid, _Tolerant(b, notes), model, "layers", names, label=b.name))
    if not out:
        print("note: no ONNX backend is installed (pip install onnxruntime; cv2@PYTHON for OpenCV 5)", file=err)
    return out, notes


def _with_refnet_shapes(net: Any, names: dict[str, str]) -> str:
    """A temporary copy of the net's ONNX file with fixed input dims and a shape for every layer
    tensor ONNX shape inference leaves without one (refnet's shapes: cv2 4.x refuses an exposed
    output without a shape). The copy is removed when the process exits."""
    import atexit
    import os
    import shutil
    import tempfile

    import onnx

    from refnet.crosscheck.onnx_models import fix_input_dims

    path = net.files[1][0]
    m = onnx.load(path)
    fix_input_dims(m, net.input_shapes)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - inference is a help here, not a requirement
        pass
    shaped = {vi.name for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)
              if vi.type.tensor_type.HasField("shape")}
    shapes = net.infer_shapes(dict(net.input_shapes))
    for layer, tname in names.items():
        if tname not in shaped and layer in shapes and all(d >= 0 for d in shapes[layer]):
            m.graph.value_info.append(onnx.helper.make_tensor_value_info(tname, onnx.TensorProto.FLOAT,
                                                                         list(shapes[layer])))
    d = tempfile.mkdtemp(prefix="refnet-onnx-")
    atexit.register(shutil.rmtree, d, True)
    out = os.path.join(d, os.path.basename(path))
    onnx.save(m, out)
    return out


def _backend_id(name: str, used: set[str]) -> str:
    base = "onnxruntime" if name.startswith("onnxruntime") else (
        "cv2_" + name.split()[1].split(".")[0] if name.startswith("cv2 ") and len(name.split()) > 1 else
        name.split()[0])
    cid, i = base, 2
    while cid in used:
        cid, i = f"{base}_{i}", i + 1
    used.add(cid)
    return cid


def _argv_tail() -> list[str]:
    """This process's arguments after ``compare`` (when the CLI was not given its argv)."""
    import sys

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
    s.add_argument("model", nargs="*", metavar="MODEL_FILE",
                   help="model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights); or use --zoo")
    s.add_argument("--zoo", metavar="NAME", help="a zoo model (`refnet models list`): files, preprocessing, labels")
    s.add_argument("--image", nargs="+", metavar="PATH", help="image file(s) or a folder of images")
    s.add_argument("--random", action="store_true", help="a seeded random input (the default without --image)")
    s.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    s.add_argument("--input-shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                   help="shape of the --random blob when the model does not say")
    s.add_argument("--scale", type=float, help="blobFromImage scalefactor (default: the zoo entry's)")
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="blobFromImage size")
    from refnet.runcmd import CvMeanAction

    s.add_argument("--mean", type=float, nargs="+", metavar="M", action=CvMeanAction,
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
