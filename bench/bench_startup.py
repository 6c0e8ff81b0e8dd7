"""Start-up, first load and peak memory, each sample a fresh Python process (issue 17).

    python bench/bench_startup.py firstload|run|firstrun|rss [--reps 5] [--forwards 1]
                                  [--base PYTHONPATH --base-cache DIR] [--caffe PROTOTXT CAFFEMODEL]

* ``firstload``: ``import refnet, numpy``, then the first ``refnet.load_caffe`` (wall and CPU
  time of the load; whether numba got imported). ``--caffe`` adds a model, e.g. GoogLeNet
  (28 MB of weights) from ``refnet generate googlenet --out /tmp/gl``.
* ``run``: a warm ``refnet run --zoo lenet-mnist`` end to end (wall and CPU of the process).
* ``firstrun``: the same run as from a fresh clone: an empty numba cache and an empty
  bytecode cache (``PYTHONPYCACHEPREFIX``) per sample; reports whether the compile notice
  was printed.
* ``rss``: peak resident memory (VmHWM) of loading and ``--forwards`` forward passes at one
  thread, refnet against cv2.dnn on the same files. (Mid-sized nets run on NumPy for their
  first passes and switch to numba once those took ~1 s of CPU: refnet.runtime.smallnet;
  ``--forwards 100`` shows a long-running process.)

``--base`` puts another refnet tree first on ``PYTHONPATH`` (a package folder holding
``refnet/`` with ``kernels/`` and ``weights_import/`` inside, e.g. an older commit laid out
so) and alternates it with this one; ``--base-cache`` is its numba cache. CPU times are
reported beside wall times because on a loaded machine a fresh process mostly waits for a
core. Models come from REFNET_MODELS (missing ones are skipped); the image for ``run`` is
drawn here. ``pytest bench`` runs one first-load sample as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_FIRSTLOAD = r"""
import sys, time, json
t0 = time.perf_counter()
import refnet, numpy
t1 = time.perf_counter(); c1 = time.process_time()
net = refnet.load_caffe(*sys.argv[1:])
t2 = time.perf_counter(); c2 = time.process_time()
print(json.dumps({"import_ms": 1e3 * (t1 - t0), "load_ms": 1e3 * (t2 - t1), "load_cpu_ms": 1e3 * (c2 - c1),
                  "numba": "numba" in sys.modules}))
"""

_RSS = r"""
import json, sys
import numpy as np
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
impl, reps, paths, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3:-4], tuple(int(v) for v in sys.argv[-4:])
x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
if impl == "cv2":
    import cv2
    cv2.setNumThreads(1)
    net = cv2.dnn.readNet(*paths)
    for _ in range(reps):
        net.setInput(x); net.forward()
else:
    import refnet
    refnet.set_num_threads(1)
    net = refnet.load(*paths)
    for _ in range(reps):
        net.forward(x)
print(json.dumps({"peak_mb": hwm(), "numba": "numba" in sys.modules}))
"""

LOAD_CASES = {
    "lenet": ("lenet_mnist_caffe/lenet.prototxt", "lenet_mnist_caffe/lenet_iter_10000.caffemodel"),
    "yufacedetectnet_v2": ("yufacedetectnet_caffe/yufacedetectnet-open-v2.prototxt",
                           "yufacedetectnet_caffe/yufacedetectnet-open-v2.caffemodel"),
    "ultraface_rfb320": ("ultraface_caffe/RFB-320.prototxt", "ultraface_caffe/RFB-320.caffemodel"),
}
RSS_SHAPES = {"lenet": (1, 1, 28, 28), "yufacedetectnet_v2": (1, 3, 240, 320), "ultraface_rfb320": (1, 3, 240, 320),
              "mtcnn_det1": (1, 3, 12, 12), "yolo_fastest_1.1": (1, 3, 320, 320)}
RSS_CASES = dict(LOAD_CASES, mtcnn_det1=("mtcnn_caffe/det1.prototxt", "mtcnn_caffe/det1.caffemodel"),
                 **{"yolo_fastest_1.1": ("yolo_fastest_darknet/yolo-fastest-1.1.cfg",  # a mid-sized net
                                         "yolo_fastest_darknet/yolo-fastest-1.1.weights")})


def _models() -> Path | None:
    p = os.environ.get("REFNET_MODELS")
    if p and Path(p).is_dir():
        return Path(p)
    guess = Path(__file__).resolve().parents[2] / "shared" / "models"
    return guess if guess.is_dir() else None


def _run(env: dict[str, str], argv: list[str], code: str | None = None) -> dict:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", code, *argv] if code else argv
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=1800)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise RuntimeError(f"{argv[:3]} failed: {p.stderr[-1500:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1]) if code else {}
    out.update(wall_s=wall, cpu_s=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return out


def _trees(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as users run it
    if _models() is not None:
        env["REFNET_MODELS"] = str(_models())
    trees = {"this": env}
    if args.base:
        base = dict(env, PYTHONPATH=args.base)
        if args.base_cache:
            base["NUMBA_CACHE_DIR"] = args.base_cache
        trees = {"base": base, "this": env}
    return trees


def firstload(args: argparse.Namespace, out=sys.stdout) -> dict:
    models = _models()
    cases = {name: [str(models / f) for f in files] for name, files in LOAD_CASES.items()
             if models is not None and all((models / f).exists() for f in files)}
    for proto, model in getattr(args, "caffe", None) or ():  # e.g. `refnet generate googlenet`'s files
        cases[Path(model).stem] = [proto, model]
    res: dict = {}
    for name, files in cases.items():
        for _ in range(args.reps):
            for tree, env in _trees(args).items():
                res.setdefault((name, tree), []).append(_run(env, files, _FIRSTLOAD))
    for (name, tree), rs in res.items():
        print(f"{name:20s} {tree:5s} import refnet+numpy {statistics.median(r['import_ms'] for r in rs):7.1f} ms   "
              f"first load_caffe wall {statistics.median(r['load_ms'] for r in rs):7.1f} ms, "
              f"cpu {statistics.median(r['load_cpu_ms'] for r in rs):6.1f} ms   numba imported: {rs[0]['numba']}",
              file=out)
    return res


def _run_argv() -> list[str]:
    import numpy as np

    img = Path(tempfile.gettempdir()) / "refnet_bench_digit.pgm"
    a = np.zeros((28, 28), np.uint8)
    a[4:24, 13:16] = 255  # a "1"
    img.write_bytes(b"P5 28 28 255\n" + a.tobytes())
    return [sys.executable, "-m", "refnet.cli", "run", "--zoo", "lenet-mnist", "--image", str(img),
            "-o", str(img.with_suffix(".out.png"))]


def first_run(args: argparse.Namespace, out=sys.stdout) -> dict:
    argv = _run_argv()
    res: dict = {}
    for _ in range(args.reps):
        for tree, env in _trees(args).items():
            with tempfile.TemporaryDirectory() as numba_dir, tempfile.TemporaryDirectory() as pyc_dir:
                os.chmod(numba_dir, 0o700)
                fresh = dict(env, REFNET_NUMBA_CACHE=numba_dir, NUMBA_CACHE_DIR=numba_dir, PYTHONPYCACHEPREFIX=pyc_dir)
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                p = subprocess.run(argv, env=fresh, capture_output=True, text=True, cwd=tempfile.gettempdir(),
                                   timeout=1800)
                wall = time.perf_counter() - t0
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if p.returncode:
                    raise RuntimeError(f"first run failed: {p.stderr[-1500:]}")
                res.setdefault(tree, []).append({"wall_s": wall, "notice": "compiling" in p.stderr,
                                                 "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)})
    for tree, rs in res.items():
        _print_medians(f"first-ever refnet run --zoo lenet-mnist  {tree:5s} ", rs,
                       f"  compile notice: {rs[0]['notice']} ", out)
    return res


def _print_medians(label: str, rs: list[dict], extra: str, out) -> None:
    """One result line: the median wall and CPU seconds of the runs ``rs``, then the load average."""
    print(f"{label}wall {statistics.median(r['wall_s'] for r in rs):.2f} s  "
          f"cpu {statistics.median(r['cpu_s'] for r in rs):.2f} s{extra}  "
          f"(load average {os.getloadavg()[0]:.1f})", file=out)


def warm_run(args: argparse.Namespace, out=sys.stdout) -> dict:
    argv = _run_argv()
    res: dict = {}
    for env in _trees(args).values():
        _run(env, argv)  # caches warm
    for _ in range(args.reps):
        for tree, env in _trees(args).items():
            res.setdefault(tree, []).append(_run(env, argv))
    for tree, rs in res.items():
        _print_medians(f"warm refnet run --zoo lenet-mnist  {tree:5s} ", rs, " ", out)
    return res


def rss(args: argparse.Namespace, out=sys.stdout) -> dict:
    models = _models()
    res: dict = {}
    engines = [(tree, "refnet") for tree in _trees(args)] + [("this", "cv2")]
    for name, files in RSS_CASES.items():
        if args.model and name not in args.model:
            continue
        if models is None or not all((models / f).exists() for f in files):
            continue
        argv = [str(args.forwards)] + [str(models / f) for f in files] + [str(d) for d in RSS_SHAPES[name]]
        for tree, impl in engines:
            _run(_trees(args)[tree], [impl, *argv], _RSS)  # caches warm (a compile peaks higher)
        for _ in range(args.reps):
            for tree, impl in engines:
                r = _run(_trees(args)[tree], [impl, *argv], _RSS)
                res.setdefault((name, tree, impl), []).append(r["peak_mb"])
                res.setdefault((name, tree, impl, "numba"), []).append(r["numba"])
    for name in RSS_CASES:
        if (name, "this", "cv2") not in res:
            continue
        cv = statistics.median(res[(name, "this", "cv2")])
        line = "   ".join(f"refnet {tree} {statistics.median(res[(name, tree, 'refnet')]):6.1f} "
                          f"({statistics.median(res[(name, tree, 'refnet')]) / cv:.2f}x"
                          f"{', numba' if any(res[(name, tree, 'refnet', 'numba')]) else ''})" for tree in _trees(args))
        print(f"{name:20s} peak RSS MB ({args.forwards} forward{'s' if args.forwards > 1 else ''}): cv2 {cv:6.1f}   "
              f"{line}", file=out)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("firstload", "run", "firstrun", "rss"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--forwards", type=int, default=1, help="rss: forward passes per process")
    p.add_argument("--model", nargs="+", choices=sorted(RSS_CASES), help="rss: only these models")
    p.add_argument("--base", metavar="PYTHONPATH", help="another refnet tree to alternate with this one")
    p.add_argument("--base-cache", metavar="DIR", help="NUMBA_CACHE_DIR for --base")
    p.add_argument("--caffe", nargs=2, action="append", metavar=("PROTOTXT", "CAFFEMODEL"),
                   help="firstload: one more model (repeatable), e.g. the files of `refnet generate googlenet`")
    args = p.parse_args(argv)
    {"firstload": firstload, "run": warm_run, "firstrun": first_run, "rss": rss}[args.what](args)
    return 0


def test_first_load_smoke():
    """One first-load sample per model (CI smoke run): the load must not have imported numba."""
    import io

    if _models() is None:
        import pytest

        pytest.skip("REFNET_MODELS not available")
    buf = io.StringIO()
    res = firstload(argparse.Namespace(reps=1, base=None, base_cache=None), out=buf)
    assert res and all(not r[0]["numba"] for r in res.values()), buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
