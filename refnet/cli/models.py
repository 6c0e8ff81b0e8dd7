"""``refnet models``: the model zoo -- list, locate, describe and download named models (refnet.zoo, refnet.fetch)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser"]


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet models`` (list, path, info, fetch)."""
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
