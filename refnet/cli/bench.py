"""``refnet bench``: refnet vs cv2.dnn latency on one model (refnet.bench), and peers, memory, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from refnet.bench import MEMORY_NEIGHBOUR_MIB, NEIGHBOURS, bench_model, busy_neighbour, input_shapes_for, peak_rss_mb

__all__ = ["add_parser", "bench_command"]


def _load(args: Any) -> tuple[Any, list[str], str]:
    """The net, its files and name, from refnet.resolver (zoo names, sidecars, --seeded-weights)."""
    from refnet.resolver import resolve_model, size_input_shape

    # an ONNX file's symbolic dims are fixed at load: the asked size (and --batch for a symbolic batch)
    shape = size_input_shape(args.model, args.input_size, args.batch) if args.input_size and not args.zoo else None
    rm = resolve_model(args.model, args.zoo, seeded_weights=getattr(args, "seeded_weights", None),
                       workdir=getattr(args, "workdir", None), input_shape=shape)
    for n in rm.notes:
        print(f"note: {n}", file=sys.stderr)
    if rm.entry is not None and not args.input_size and rm.entry.preprocess.size:
        args.input_size = list(rm.entry.preprocess.size)  # a sidecar's / zoo entry's input size
    return rm.net, rm.paths, rm.name


def _zoo_size(args: Any) -> tuple[int, int] | None:
    if args.input_size:
        return tuple(args.input_size)  # type: ignore[return-value]
    if args.zoo:
        from refnet import zoo

        size = zoo.get(args.zoo).preprocess.size
        return tuple(size) if size else None  # type: ignore[return-value]
    return None


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


#: the longest --pause (seconds): a pause is for a machine to settle, not a sleep
MAX_PAUSE = 3600.0


def _threads_arg(v: Any) -> int | str:
    if str(v) == "auto":
        return "auto"
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"--threads must be an integer >= 1 or 'auto', got {v!r}") from None
    if n < 1:
        raise ValueError("--batch, --threads, --blas-threads and --repeat must be >= 1")
    return n


def bench_command(args: Any, out: Any = None) -> int:
    """``refnet bench``: print (and optionally write as JSON) refnet vs cv2.dnn."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="refnet-bench-") as wd:  # --seeded-weights files live here
        args.workdir = wd
        return _bench_command(args, out)


def _bench_command(args: Any, out: Any = None) -> int:
    out = out or sys.stdout
    threads = _threads_arg(args.threads)
    if args.batch < 1 or args.repeat < 1 or (args.blas_threads or 1) < 1:
        raise ValueError("--batch, --threads, --blas-threads and --repeat must be >= 1")
    if not 0 <= args.pause <= MAX_PAUSE:  # NaN too; inf overflowed time.sleep (an internal error)
        raise ValueError(f"--pause must be 0 to {MAX_PAUSE} seconds, got {args.pause}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.input_size and min(args.input_size) < 1:  # (as compare's --size; 0 0 reached the first conv)
        raise ValueError(f"--input-size must be two positive numbers W H, got {' '.join(map(str, args.input_size))}")
    net, paths, name = _load(args)
    size = _zoo_size(args)
    shapes = input_shapes_for(net, args.batch, size)
    with (busy_neighbour(kind=args.busy_neighbour) if args.busy_neighbour else _nothing()):
        res = bench_model(net, batch=args.batch, size=size, threads=threads, repeat=args.repeat,
                          warmup=args.warmup, precision=args.precision, with_cv2=not args.no_cv2, name=name,
                          blas_threads=args.blas_threads, pause=args.pause, one_thread=args.one_thread,
                          neighbour=args.busy_neighbour, peers=args.peers or (), workdir=args.workdir)
    print(res.table(), file=out)
    data = res.to_dict()
    if args.rss:
        rss = {impl: peak_rss_mb(paths, shapes, impl, threads)
               for impl in ([args.precision] + ([] if args.no_cv2 else ["cv2"]))}
        data["peak_rss_mb"] = rss
        line = "   ".join(f"{k}: {v['peak_mb']:.0f} MB (+{v['peak_mb'] - v['base_mb']:.0f} after imports)"
                          for k, v in rss.items())
        print(f"peak RSS  {line}", file=out)
        if "cv2" in rss:
            print(f"          ratio refnet / cv2.dnn = {rss[args.precision]['peak_mb'] / rss['cv2']['peak_mb']:.2f}",
                  file=out)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}", file=out)
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``bench`` subcommand to the ``refnet`` argument parser."""
    s = sub.add_parser("bench", help="refnet vs cv2.dnn latency on one model (medians, ratio, GFLOP/s)",
                       description="Time refnet's forward pass and cv2.dnn's on the same random input, "
                                   "alternating runs with one thread count for numba, BLAS and cv2.")
    s.add_argument("model", nargs="*", metavar="MODEL_FILE",
                   help="model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights, .onnx); or use --zoo")
    s.add_argument("--zoo", metavar="NAME", help="a zoo model (architecture-only ones with --seeded-weights)")
    s.add_argument("--seeded-weights", type=int, metavar="SEED",
                   help="time an architecture-only model with seeded random weights (written to a temporary folder)")
    s.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    s.add_argument("--threads", default="1", metavar="N|auto",
                   help="threads for numba, BLAS and cv2 (default 1); auto: each engine's default")
    s.add_argument("--blas-threads", type=int, metavar="N",
                   help="BLAS threads when different from --threads (1 avoids OpenBLAS stalls on a busy machine)")
    s.add_argument("--repeat", type=int, default=10, help="timed runs of each (default 10)")
    s.add_argument("--warmup", type=int, default=2, help="untimed runs of each first (default 2)")
    s.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"),
                   help="input width and height (an ONNX model with symbolic dims is loaded for it)")
    s.add_argument("--precision", default="float32", choices=("float32", "float64"),
                   help="refnet path to time (default float32)")
    s.add_argument("--no-cv2", action="store_true", help="time refnet only")
    s.add_argument("--pause", type=float, default=0.1, metavar="S",
                   help="seconds of pause, then an untimed warm-up call, before every timed call (default 0.1; "
                        "0: back to back; at most 3600)")
    s.add_argument("--one-thread", action="store_true", help="also time refnet at one thread")
    s.add_argument("--busy-neighbour", nargs="?", const="spin", choices=NEIGHBOURS, metavar="KIND",
                   help="run a neighbour process on one core during the measurement (a loaded machine): spin "
                        f"(default, a busy loop) or memory (streams 2 x {MEMORY_NEIGHBOUR_MIB} MiB arrays: also loads "
                        "the memory bus and the shared cache)")
    s.add_argument("--peers", nargs="+", metavar="ENGINE", choices=("onnxruntime", "cv2-5"),
                   help="also time ONNX engines on the model's ONNX file (or refnet's export of it): onnxruntime "
                        "(in-process) and/or cv2-5 (OpenCV 5 in REFNET_CV5_PYTHON, timed inside its worker)")
    s.add_argument("--rss", action="store_true", help="also measure peak resident memory in fresh processes")
    s.add_argument("--json", metavar="PATH", help="write the numbers as JSON")
    s.set_defaults(func=bench_command)
