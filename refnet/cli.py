"""The ``refnet`` command line.

Errors a user can fix (missing files, malformed models, bad arguments, budgets) print one
line and exit with status 2, internal errors status 3 (refnet.runtime.toplevel); ``--debug``,
anywhere on the command line, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys


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


# ---- refnet compare: per-layer verification of cv2.dnn (parser and handler: refnet/crosscheck/cli.py) ----
def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    from refnet.crosscheck.cli import add_parser

    add_parser(sub)


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


# ---- refnet run: task pipelines (refnet.pipelines; parser and handler in refnet.runcmd) ----------
def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    from refnet.runcmd import add_run_parser

    add_run_parser(sub)


# ---- refnet bench: refnet vs cv2.dnn latency (refnet.bench) ------------------------------------
def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from refnet.bench import add_bench_parser

    add_bench_parser(sub)


# ---- refnet generate: seeded-weight models + sidecars (parser and handler in refnet.generate) -------
def _add_generate_parser(sub: argparse._SubParsersAction) -> None:
    from refnet.generate import add_generate_parser

    add_generate_parser(sub)


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
    from refnet import explain, gatys, transfer  # gradients: stylize --optimize, transfer, explain

    for m in (gatys, transfer, explain):
        m.add_parser(sub)
    from refnet.export.cli import add_parser as _add_convert_parser  # refnet convert (refnet/export/cli.py)

    _add_convert_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (refnet.runtime.toplevel: 0/1/2/3, 130)."""
    from refnet.runtime import toplevel

    argv, debug = toplevel.split_debug(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.add_argument("--version", action="version", version=toplevel.version_text())
    args = parser.parse_args(argv)
    args.command_line = ["refnet", *(sys.argv[1:] if argv is None else argv)]  # recorded by `compare --json`
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
