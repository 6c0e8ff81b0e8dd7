"""The ``refnet`` command line.

Errors a user can fix (missing files, malformed models, bad arguments, budgets) print one
line and exit with status 2, internal errors status 3 (refnet.runtime.toplevel); ``--debug``,
anywhere on the command line, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from refnet import selfcheck

    rows = selfcheck.run(verbose=True)
    return 0 if all(r[3] for r in rows) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from refnet import demo

    return demo.demo_command(args)


def _cmd_info(args: argparse.Namespace) -> int:
    from refnet import info

    return info.info_command(args)


# ---- refnet compare: per-layer verification of cv2.dnn (refnet.compare) -------------------------
def _cmd_compare(args: argparse.Namespace) -> int:
    from refnet.compare import compare_command  # (`refnet.compare` the attribute is the function)

    return compare_command(args)


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("compare", help="per-layer comparison of refnet (float64/float32) with cv2.dnn",
                       description="Run the model in refnet float64 (reference), refnet float32 and cv2.dnn "
                                   "(fusion off per layer, fusion on at the outputs, Winograd off/on) on the same "
                                   "blob; report per-layer differences, task-level agreement and a verdict. "
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
    s.add_argument("--mean", type=float, nargs="+", metavar="M", help="blobFromImage mean (one value or per channel)")
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
    s.add_argument("--seeded-weights", type=int, metavar="SEED",
                   help="run an architecture-only Caffe prototxt with seeded random weights")
    s.add_argument("--json", metavar="PATH", help="write the report as JSON (docs/compare-schema.md)")
    s.add_argument("--plot", metavar="PATH", help="write a PNG of per-layer error along depth (needs matplotlib)")
    s.set_defaults(func=_cmd_compare)


# ---- refnet models: the zoo -------------------------------------------------------------------
def _cmd_models_list(args: argparse.Namespace) -> int:
    from refnet import zoo

    rows = [(m, zoo.find(m.name)) for m in zoo.entries(task=args.task, framework=args.framework)]
    if args.missing:
        rows = [(m, loc) for m, loc in rows if loc.status != "found"]
    print(f"{'name':28s} {'framework':9s} {'task':9s} {'status':8s} where")
    for m, loc in rows:
        where = ", ".join(str(r) for r in loc.roots) or "-"
        print(f"{m.name:28s} {m.framework:9s} {m.task:9s} {loc.status:8s} {where}")
    n_found = sum(loc.status == "found" for _, loc in rows)
    n_arch = sum(loc.status == "arch" for _, loc in rows)
    roots = ", ".join(str(r) for r in zoo.search_roots())
    print(f"{len(rows)} models: {n_found} found, {n_arch} architecture only, "
          f"{len(rows) - n_found - n_arch} missing (searched {roots})")
    return 0


def _cmd_models_path(args: argparse.Namespace) -> int:
    from refnet import zoo

    loc = zoo.find(args.name)
    files = [s for s in loc.files if args.all or s.file.role in zoo.MAIN_ROLES]
    paths = loc.main_paths  # raises ModelMissingError (exit 2, with the fetch hint) when one is missing
    if args.all:
        for s in files:
            print(s.path if s.found else f"{s.file.path}\t(missing)")
    else:
        for p in paths:
            print(p)
    return 0


def _cmd_models_info(args: argparse.Namespace) -> int:
    from refnet import zoo

    loc = zoo.find(args.name)
    m = loc.entry
    p = m.preprocess
    print(f"{m.name}: {m.description}")
    print(f"  framework {m.framework}, task {m.task}, status {loc.status}"
          + (f", aliases {', '.join(m.aliases)}" if m.aliases else ""))
    print(f"  preprocess: scale {p.scale:.9g}, size {p.size or 'image size'}, mean {p.mean}, "
          f"swap_rb {p.swap_rb}, crop {p.crop}, layout {p.layout}{', grayscale' if p.gray else ''}")
    if m.labels:
        print(f"  labels: {m.labels}" + (f" (index offset {m.label_offset})" if m.label_offset else ""))
    print(f"  license: {m.license}")
    for s in loc.files:
        f = s.file
        sums = ", ".join(f"{a} {v}" for a, v in f.checksums.items()) or "no published checksum"
        print(f"  [{f.role}] {f.path}: {s.path if s.found else 'MISSING'}")
        print(f"      url {f.url or ('derived from ' + f.derived_from if f.derived_from else 'unknown')}; {sums}")
    return 0


def _cmd_models_fetch(args: argparse.Namespace) -> int:
    from refnet import fetch, zoo

    entry = zoo.get(args.name)
    try:
        paths = fetch.fetch(entry.name, args.dest, url_base=args.url_base, force=args.force,
                            timeout=args.timeout, progress=None if args.quiet else sys.stderr)
    except OSError as e:  # permissions, full disk, ...: a user error, reported in one line
        raise fetch.FetchError(f"fetching {entry.name}: {e}") from e
    for p in paths:
        print(p)
    return 0


def _seconds(text: str) -> float:
    v = float(text)
    if not 0 < v < 1e6:  # not inf/nan/negative: socket timeouts must be finite
        raise argparse.ArgumentTypeError(f"must be a number of seconds between 0 and 1e6, got {text!r}")
    return v


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("models", help="the model zoo: list, locate and download named models")
    msub = s.add_subparsers(dest="models_cmd", required=True)
    m = msub.add_parser("list", help="every zoo model with found/missing status and where")
    m.add_argument("--task", choices=("classify", "detect", "segment", "stylize", "face"))
    m.add_argument("--framework", choices=("caffe", "torch", "darknet"))
    m.add_argument("--missing", action="store_true", help="only models not fully on disk")
    m.set_defaults(func=_cmd_models_list)
    m = msub.add_parser("path", help="print a model's file paths (architecture, weights); exit 2 if missing")
    m.add_argument("name")
    m.add_argument("--all", action="store_true", help="also labels and extra files")
    m.set_defaults(func=_cmd_models_path)
    m = msub.add_parser("info", help="preprocessing, labels, license, URLs and checksums of a model")
    m.add_argument("name")
    m.set_defaults(func=_cmd_models_info)
    m = msub.add_parser("fetch", help="download a model (checksums verified, atomic install)")
    m.add_argument("name")
    m.add_argument("--dest", help="target models root (default: $REFNET_CACHE or ~/.cache/refnet/models)")
    m.add_argument("--url-base", help="download <URL>/<relative path> instead of the original URLs "
                                      "(also $REFNET_URL_BASE)")
    m.add_argument("--force", action="store_true", help="download even when the file is present")
    m.add_argument("--timeout", type=_seconds, default=30.0, help="wall-clock limit per request, seconds")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_cmd_models_fetch)


# ---- refnet run: task pipelines (refnet.pipelines) -------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from refnet import pipelines

    if args.task is not None and args.task not in pipelines.TASKS:
        raise pipelines.PipelineError(f"unknown task {args.task!r}; tasks are {', '.join(pipelines.TASKS)}")
    if args.precision not in ("float32", "float64"):
        raise ValueError(f"--precision must be float32 or float64, got {args.precision!r}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise pipelines.PipelineError(f"cannot write {args.out}: folder {Path(args.out).parent} does not exist")
    if args.task is None and args.model and not args.zoo and pipelines.entry_for_files(args.model)[0] is None:
        raise pipelines.PipelineError(f"{' '.join(args.model)} is not a zoo model: say what to do with --task "
                                      f"({', '.join(pipelines.TASKS)})")
    image = pipelines.read_image(args.image)
    net, entry, labels = pipelines.resolve_model(args.model, args.zoo)
    task = args.task or entry.task
    opts: dict = {}
    if args.threshold is not None:
        opts["threshold"] = args.threshold
    if args.nms is not None:
        opts["nms_threshold"] = args.nms
    if args.top_k is not None:
        opts["top_k"] = args.top_k
    if args.size:
        opts["size"] = tuple(args.size)
    if args.scale is not None or args.mean is not None or args.rgb:
        pre = entry.preprocess if entry is not None else pipelines.default_preprocess(net, task)
        change: dict = {}
        if args.scale is not None:
            change["scale"] = args.scale
        if args.mean is not None:
            change["mean"] = tuple(args.mean) * 3 if len(args.mean) == 1 else tuple(args.mean)
        if args.rgb:
            change["swap_rb"] = True
        opts["preprocess"] = dataclasses.replace(pre, **change)
    result = pipelines.run_task(net, image, task, entry=entry, labels=args.labels or labels,
                                precision=args.precision, **opts)
    print(result.summary)
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}_{task}.png")
    pipelines.write_image(out, pipelines.render(result))
    print(f"wrote {out}")
    return 0


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("run", help="run a task (classify, detect, face, segment, stylize) on an image; write a PNG",
                       description="Run a model on an image with a task's pre- and post-processing, print the "
                                   "result (top-5, detections, class fractions) and write a picture of it.")
    s.add_argument("model", nargs="*", metavar="MODEL_FILE",
                   help="model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights); or use --zoo")
    s.add_argument("--zoo", metavar="NAME", help="a zoo model (`refnet models list`): files, preprocessing, labels")
    s.add_argument("--image", required=True, help="input image (any format OpenCV reads)")
    s.add_argument("-o", "--out", metavar="OUT.png", help="picture to write (default: <image stem>_<task>.png)")
    s.add_argument("--task", help="classify, detect, face, segment or stylize (default: the zoo entry's task)")
    s.add_argument("--precision", default="float32", help="float32 (fast kernels, default) or float64 (reference)")
    s.add_argument("--threshold", type=float, help="detect/face: score threshold (default per decoder)")
    s.add_argument("--nms", type=float, help="detect/face: NMS IoU threshold (default per decoder)")
    s.add_argument("--top-k", type=int, help="classify: how many classes to list (default 5)")
    s.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the zoo entry's)")
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="blob width and height")
    s.add_argument("--scale", type=float, help="blob scale factor (default: the zoo's; else 1, Darknet 1/255)")
    s.add_argument("--mean", type=float, nargs="+", metavar="M", help="mean to subtract (one value or one per channel)")
    s.add_argument("--rgb", action="store_true", help="swap B and R before the mean (blobFromImage swapRB)")
    s.set_defaults(func=_cmd_run)


# ---- refnet bench: refnet vs cv2.dnn latency (refnet.bench) ------------------------------------
def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from refnet.bench import add_bench_parser

    add_bench_parser(sub)


# ---- refnet generate: write a built-in architecture (refnet.archs) with seeded weights -----------
def _cmd_generate(args: argparse.Namespace) -> int:
    from refnet import archs

    if args.name not in archs.BUILTINS:
        raise ValueError(f"unknown architecture {args.name!r}; built-ins are {', '.join(archs.BUILTINS)}")
    task, make = archs.BUILTINS[args.name]
    prefix = Path(args.out)
    if not prefix.resolve().parent.is_dir():
        raise FileNotFoundError(f"folder {prefix.parent} does not exist")
    kwargs = {"seed": args.seed}
    if args.size:
        kwargs["input_hw"] = (args.size[1], args.size[0])
    proto, model = make(**kwargs).write(prefix)
    print(f"wrote {proto} and {model} ({args.name}, task {task}, seed {args.seed})")
    print(f"try: refnet run {proto} {model} --task {task} --image IMG   or   refnet compare {proto} {model} --random")
    return 0


def _add_generate_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("generate", help="write a built-in architecture (Caffe files, seeded He-scaled weights)",
                       description="Write one of refnet's generated architectures (mobilenet-ssd, googlenet, "
                                   "deeplab-v3plus) as <OUT>.prototxt + <OUT>.caffemodel with seeded weights.")
    s.add_argument("name", help="mobilenet-ssd, googlenet or deeplab-v3plus")
    s.add_argument("--out", required=True, metavar="PREFIX", help="output path without extension")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="input width and height")
    s.set_defaults(func=_cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refnet", description="Reference DNN inference, checked against cv2.dnn.")
    p.add_argument("--debug", action="store_true", help="show tracebacks (accepted anywhere on the line)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("selfcheck", help="fast float32 kernels vs float64 reference")
    s.set_defaults(func=_cmd_selfcheck)
    s = sub.add_parser("demo", help="the main job on built-in defaults; writes into --out")
    s.add_argument("--out", default="demo-out")
    s.add_argument("--models", metavar="NAMES",
                   help="comma-separated zoo/built-in names to run (default: all; also $REFNET_DEMO_MODELS)")
    s.add_argument("--no-builtins", action="store_true", help="skip the generated MobileNet-SSD/GoogLeNet/DeepLab")
    s.add_argument("--no-selfcheck", action="store_true", help="skip the kernel self-check")
    s.set_defaults(func=_cmd_demo)
    s = sub.add_parser("info", help="layer table of a model: shapes, parameters, MACs (and cv2 getFLOPS)")
    s.add_argument("model", nargs="*", metavar="MODEL_FILE",
                   help="model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights); or use --zoo")
    s.add_argument("--zoo", metavar="NAME", help="a zoo model (architecture-only ones too)")
    s.add_argument("--input-shape", type=int, nargs="+", metavar="D", help="N C H W when the model does not declare it")
    s.add_argument("--json", metavar="PATH", help="write the table as JSON")
    s.add_argument("--no-cv2", action="store_true", help="do not ask cv2 for getFLOPS")
    s.set_defaults(func=_cmd_info)
    _add_compare_parser(sub)
    _add_models_parser(sub)
    _add_run_parser(sub)
    _add_generate_parser(sub)
    _add_bench_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (refnet.runtime.toplevel: 0/1/2/3, 130)."""
    from refnet.runtime import toplevel

    argv, debug = toplevel.split_debug(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.add_argument("--version", action="version", version=toplevel.version_text())
    args = parser.parse_args(argv)
    args.debug = debug
    try:
        toplevel.check_outputs(args)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `refnet info ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as e:  # every exception ends in one line and an exit status
        if debug or isinstance(e, SystemExit):
            raise
        code, msg = toplevel.classify(e)
        print(f"refnet: {msg}" if code == toplevel.EXIT_INTERRUPTED else f"refnet: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
