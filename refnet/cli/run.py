"""``refnet run``: a task pipeline (classify, detect, face, segment, stylize) on images; pictures out.

Models come from :func:`refnet.resolver.resolve_model` (files, sidecars of ``refnet generate``,
zoo names, ``--seeded-weights`` for architecture-only models). Images: files and folders, any
number (:func:`refnet.resolver.image_files`); one picture per image. Preprocessing flags mirror
``cv2.dnn.blobFromImage``, including its rule for a single ``--mean`` value
(:class:`refnet.cli.common.CvMeanAction`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from refnet.cli.common import CvMeanAction, add_model_args, finite_float, image_labels

__all__ = ["add_parser", "run_command"]

def _out_paths(images: list[str], out: str | None, task: str) -> list[Path]:
    if len(images) == 1:
        p = Path(out) if out else Path(f"{Path(images[0]).stem}_{task}.png")
        if out and Path(out).is_dir():
            p = Path(out) / f"{Path(images[0]).stem}_{task}.png"
        return [p]
    folder = Path(out) if out else Path(".")
    if out and folder.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp") and not folder.is_dir():
        raise ValueError(f"-o {out}: with {len(images)} images, -o names a folder (one picture per image)")
    if folder.resolve().parent.is_dir():
        folder.mkdir(exist_ok=True)
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write into {folder}: folder {folder.parent} does not exist")
    return [folder / f"{label}_{task}.png" for label in image_labels(images)]


# The options only some tasks read (refnet.pipelines.run_task); given to another task they would
# be dropped without a word, so they are refused instead
_TASK_OPTIONS = {"threshold": ("detect", "face"), "nms": ("detect", "face"), "top_k": ("classify",)}
# What the MTCNN cascade fixes itself (pyramid, crops, NMS 0.5/0.7, labels "face"): only --threshold
# (O-Net's) and --precision reach it
_MTCNN_FIXED = ("model", "seeded_weights", "nms", "top_k", "labels", "size", "scale", "mean", "rgb")


def _flag(dest: str) -> str:
    return "model files" if dest == "model" else "--" + dest.replace("_", "-")


def _given(args: Any, dest: str) -> bool:
    v = getattr(args, dest, None)
    return bool(v) if isinstance(v, (bool, list)) else v is not None


def _refuse_unused(args: Any, task: str) -> None:
    """Refuse the options ``task`` does not read, naming the tasks that do."""
    from refnet import pipelines

    groups: dict[tuple[str, ...], list[str]] = {}
    for k, tasks in _TASK_OPTIONS.items():
        if _given(args, k) and task not in tasks:
            groups.setdefault(tasks, []).append(_flag(k))
    if groups:
        said = "; ".join(f"{', '.join(flags)} appl{'ies' if len(flags) == 1 else 'y'} only to the "
                         f"{' and '.join(tasks)} task{'s' if len(tasks) > 1 else ''}"
                         for tasks, flags in groups.items())
        raise pipelines.PipelineError(f"{said}, not to {task}")


def run_command(args: Any, out: Any = None, err: Any = None) -> int:
    """``refnet run``: print each image's result and write its picture."""
    import tempfile

    from refnet import pipelines
    from refnet.cli.common import stride_hint
    from refnet.errors import ShapeError
    from refnet.generate import SEEDED_NOTE
    from refnet.resolver import image_files, resolve_model, size_input_shape
    from refnet.taskcheck import check_task, infer_task

    out = out or sys.stdout
    err = err or sys.stderr
    if args.task is not None and args.task not in pipelines.TASKS:
        raise pipelines.PipelineError(f"unknown task {args.task!r}; tasks are {', '.join(pipelines.TASKS)}")
    if args.precision not in ("float32", "float64"):
        raise ValueError(f"--precision must be float32 or float64, got {args.precision!r}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if len(args.image) == 1 and args.out and not Path(args.out).resolve().parent.is_dir():
        raise pipelines.PipelineError(f"cannot write {args.out}: folder {Path(args.out).parent} does not exist")
    images = image_files(args.image)
    if args.zoo and args.zoo.strip().lower() == "mtcnn":
        return _run_mtcnn(args, images, out)
    with tempfile.TemporaryDirectory(prefix="refnet-run-") as wd:
        shape = size_input_shape(args.model, args.size) if args.size and not args.zoo else None  # ONNX
        rm = resolve_model(args.model, args.zoo, seeded_weights=args.seeded_weights, workdir=wd, input_shape=shape)
        for n in rm.notes:
            print(f"note: {n}", file=err)
        task = args.task or (rm.entry.task if rm.entry is not None else None)
        if task is None:
            task, why = infer_task(rm.net)
            if task is None:
                raise pipelines.PipelineError(f"{' '.join(args.model)} is not a zoo model and does not say its task "
                                              f"({why}): give --task ({', '.join(pipelines.TASKS)})")
            print(f"note: task {task}: {why}", file=err)
        check_task(rm.net, task, rm.entry)
        _refuse_unused(args, task)
        opts = _options(args, rm, task)
        outs = _out_paths(images, args.out, task)
        docs = []
        for path, dest in zip(images, outs):
            try:
                result = pipelines.run_task(rm.net, pipelines.read_image(path), task, entry=rm.entry,
                                            labels=args.labels or rm.labels, precision=args.precision, **opts)
            except ShapeError as e:  # e.g. YOLO at --size 333 333: say the size must be a multiple of 32
                hint = None if e.hint else stride_hint(rm.net, e.inputs)
                if hint is None:
                    raise
                raise e.with_hint(hint) from e
            print(result.summary, file=out)
            if rm.seeded:
                result.data["seeded"] = True
                print(f"  ({SEEDED_NOTE})", file=out)
            pipelines.write_image(dest, pipelines.render(result))
            print(f"wrote {dest}", file=out)
            docs.append(_result_doc(path, dest, result))
    _write_json(args, docs, out)
    return 0


def _result_doc(image: str, picture: Path, result: Any) -> dict[str, Any]:
    """One image's result for ``--json``: what the summary prints, as numbers (boxes are
    (x1, y1, x2, y2) in image pixels)."""
    d = result.data
    doc: dict[str, Any] = {"image": str(image), "picture": str(picture), "task": result.task,
                           "model": d.get("model"), "precision": d.get("precision"),
                           "blob_shape": list(result.blob.shape) if result.blob.size else None,  # MTCNN: a pyramid
                           "seeded_weights": bool(d.get("seeded"))}
    if result.task == "classify":
        doc["output"] = d.get("output")
        doc["top"] = [{"index": i, "label": lab, "score": p} for i, lab, p in d["top"]]
    elif result.task in ("detect", "face"):
        doc.update(decoder=d.get("decoder"), threshold=d.get("threshold"), nms_threshold=d.get("nms_threshold"),
                   detections=[dict(x, box=list(x["box"])) for x in d["detections"]])
        if "landmarks" in d:  # the MTCNN cascade: five (x, y) points per face
            doc["landmarks"] = d["landmarks"]
    elif result.task == "segment":
        doc.update(output=d.get("output"), fractions=d["fractions"])
    return doc


def _write_json(args: Any, docs: list[dict[str, Any]], out: Any) -> None:
    """``--json PATH``: every image's result in one document (NaN as null, as compare --json)."""
    if not getattr(args, "json", None):
        return
    import json

    from refnet.crosscheck.report import _jsonable

    doc = {"command": getattr(args, "command_line", None) or ["refnet", "run"], "results": docs}
    Path(args.json).write_text(json.dumps(_jsonable(doc), indent=1, allow_nan=False))
    print(f"wrote {args.json}", file=out)


def _run_mtcnn(args: Any, images: list[str], out: Any) -> int:
    """``refnet run --zoo mtcnn``: the P-Net, R-Net, O-Net cascade (refnet.mtcnn) on each image."""
    import cv2
    import numpy as np

    from refnet import pipelines
    from refnet.mtcnn import load_cascade, run_cascade

    if args.task not in (None, "face"):
        raise pipelines.PipelineError(f"the MTCNN cascade finds faces; --task {args.task} does not apply")
    fixed = [_flag(k) for k in _MTCNN_FIXED if _given(args, k)]
    if fixed:
        raise pipelines.PipelineError(f"the MTCNN cascade sets its own models, preprocessing, NMS and labels, so it "
                                      f"does not use {', '.join(fixed)} (--threshold sets O-Net's score threshold; "
                                      "`--zoo mtcnn-det1` runs P-Net alone with the usual options)")
    cascade, _ = load_cascade()
    docs = []
    for path, dest in zip(images, _out_paths(images, args.out, "face")):
        result = run_cascade(cascade, pipelines.read_image(path), args.precision, args.threshold)
        print(result.summary, file=out)
        pic = pipelines.render(result)
        for pts in result.data["landmarks"]:
            for x, y in pts:
                if np.isfinite(x) and np.isfinite(y):
                    cv2.circle(pic, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1, cv2.LINE_AA)
        pipelines.write_image(dest, pic)
        print(f"wrote {dest}", file=out)
        docs.append(_result_doc(path, dest, result))
    _write_json(args, docs, out)
    return 0


def _options(args: Any, rm: Any, task: str) -> dict[str, Any]:
    from refnet import pipelines

    opts: dict[str, Any] = {}
    if args.threshold is not None:
        opts["threshold"] = args.threshold
    if args.nms is not None:
        opts["nms_threshold"] = args.nms
    if args.top_k is not None:
        opts["top_k"] = args.top_k
    if args.size:
        opts["size"] = tuple(args.size)
    if args.scale is not None or args.mean is not None or args.rgb:
        pre = rm.entry.preprocess if rm.entry is not None else pipelines.default_preprocess(rm.net, task)
        change: dict[str, Any] = {}
        if args.scale is not None:
            change["scale"] = args.scale
        if args.mean is not None:
            change["mean"] = tuple(args.mean)
        if args.rgb:
            change["swap_rb"] = True
        opts["preprocess"] = dataclasses.replace(pre, **change)
    return opts


def add_parser(sub: Any) -> None:
    """Register ``refnet run``."""
    from refnet.pipelines import TASKS

    s = sub.add_parser("run", help="run a task (classify, detect, face, segment, stylize) on images; write PNGs",
                       description="Run a model on images with a task's pre- and post-processing, print the "
                                   "result (top-5, detections, class fractions) and write one picture per image. "
                                   "The task comes from --task, the zoo entry or generate's sidecar, or the net "
                                   "itself (DetectionOutput/region/yolo -> detect, a softmax vector -> classify).")
    add_model_args(s, "a zoo model (`refnet models list`): files, preprocessing, labels; "
                      "`mtcnn` runs the MTCNN cascade (det1, det2, det3)")
    s.add_argument("--seeded-weights", type=int, metavar="SEED",
                   help="run an architecture-only model (zoo status 'arch', or a prototxt/cfg given alone) with "
                        "seeded random weights, calibrated per layer; pictures say that labels are meaningless")
    s.add_argument("--image", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders of images (any format OpenCV reads)")
    s.add_argument("-o", "--out", metavar="OUT",
                   help="picture to write (default <image stem>_<task>.png); with several images a folder")
    s.add_argument("--json", metavar="PATH", help="also write the results (top classes, detections with boxes "
                                                  "in image pixels, class fractions) as JSON")
    s.add_argument("--task", metavar="TASK", help=f"{', '.join(TASKS)}: what to do with the outputs (default: "
                                                  "the zoo entry's / sidecar's task, else inferred from the "
                                                  "net's output layers)")
    s.add_argument("--precision", default="float32",
                   help="float32 (fast kernels, default) or float64 (reference kernels)")
    s.add_argument("--threshold", type=finite_float, help="detect/face: score threshold (default per decoder)")
    s.add_argument("--nms", type=finite_float, help="detect/face: NMS IoU threshold (default per decoder)")
    s.add_argument("--top-k", type=int, help="classify: how many classes to list (default 5)")
    s.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the zoo entry's)")
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="blob width and height")
    s.add_argument("--scale", type=finite_float, help="blob scale factor (default: the zoo's; else 1, Darknet 1/255)")
    s.add_argument("--mean", type=finite_float, nargs="+", metavar="M", action=CvMeanAction,
                   help="mean to subtract, as blobFromImage: one value = first channel only (cv2's rule), "
                        "three values = per channel (after --rgb)")
    s.add_argument("--rgb", action="store_true", help="swap B and R before the mean (blobFromImage swapRB)")
    s.set_defaults(func=run_command)
