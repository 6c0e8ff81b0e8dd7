"""The verdict cases of issue 15: run `refnet compare` on each and print one row per case.

    python bench/verdict_cases.py [--cases a,b] [--json out.json] [--rss]

Each case runs `refnet compare ... --json` in a subprocess (so peak RSS can be measured per
case with --rss: ru_maxrss of the child) and records the exit status, verdict_code, verdict and
the summary line. The models are made here: fast-neural-style by the test suite's t7 writer
(tests/writers/t7_writer.py, both variants, final TanH), MobileNet-SSD and DeepLab-v3+ by
`refnet generate`, ENet from $REFNET_MODELS, the -inf net by refnet.archs.CaffeNetBuilder.
Not collected by pytest (bench/ collects bench_*.py only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("REFNET_IMAGES", HERE.parent / "shared" / "images"))


def _refnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "refnet.cli", *args]


def _run(cmd: list[str], wd: Path, name: str) -> dict:
    js = wd / f"{name}.json"
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(cmd + ["--json", str(js)], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    row = {"case": name, "exit": p.returncode, "seconds": round(time.perf_counter() - t, 1),
           "max_rss_mb_children_so_far": round(after / 1024), "rss_grew": after > before}
    if js.exists():
        doc = json.loads(js.read_text())
        rep = doc["reports"][0]
        row.update(verdict_code=doc["verdict_code"], verdict=rep["verdict"], summary=rep["summary"])
    else:
        row.update(verdict_code=None, verdict=(p.stderr.strip().splitlines() or ["?"])[-1], summary="")
    return row


def _fns(wd: Path, variant: str) -> list[str]:
    sys.path.insert(0, str(HERE / "tests"))
    from writers.t7_writer import write_fast_neural_style

    path = write_fast_neural_style(wd / f"fns-{variant}.t7", variant, seed=11)
    return _refnet("compare", str(path), "--image", str(IMAGES / "space_shuttle.jpg"), "--size", "128", "96",
                   "--scale", "1", "--no-winograd")


def _inf_net(wd: Path) -> list[str]:
    """A Power layer (y = 2x) on an input holding -inf: cv2 and refnet give the same -inf values."""
    import numpy as np

    from refnet.archs import CaffeNetBuilder

    b = CaffeNetBuilder("inf", (1, 3, 8, 8))
    b._layer("double", "Power", ["data"], ["double"], "power_param { power: 1 scale: 2 shift: 0 }")
    proto, model = b.write(wd / "inf")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    x[0, 1, 2:4, 3] = -np.inf
    np.save(wd / "inf.npy", x)
    code = ("import sys, json, numpy as np, refnet\n"
            "try:\n    from refnet.crosscheck.report import run_document\n"
            "    from refnet.crosscheck.orchestrator import compare\n"
            "except ImportError:\n    from refnet.compare import compare, run_document\n"
            "net = refnet.load_caffe(sys.argv[1], sys.argv[2]); x = np.load(sys.argv[3])\n"
            "r = compare(net, x, winograd=False)\n"
            "open(sys.argv[5], 'w').write(json.dumps(run_document([r], command=sys.argv)))\n"
            "sys.exit(1 if r.verdict_code == 'differ' else 0)\n")
    return [sys.executable, "-c", code, str(proto), str(model), str(wd / "inf.npy")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="")
    ap.add_argument("--json", default="")
    ap.add_argument("--workdir", default="")
    a = ap.parse_args()
    wd = Path(a.workdir or tempfile.mkdtemp(prefix="verdict-cases-"))
    wd.mkdir(parents=True, exist_ok=True)
    models = Path(os.environ.get("REFNET_MODELS", HERE.parent / "shared" / "models"))
    voc = str(IMAGES / "voc2007_004545.jpg")

    def gen(arch: str) -> tuple[str, str]:
        subprocess.run(_refnet("generate", arch, "--out", str(wd / arch)), check=True, capture_output=True)
        return str(wd / f"{arch}.prototxt"), str(wd / f"{arch}.caffemodel")

    cases = {
        "fns-eccv16": lambda: _fns(wd, "eccv16"),
        "fns-instance_norm": lambda: _fns(wd, "instance_norm"),
        "enet-512x256": lambda: _refnet("compare", "--zoo", "enet-cityscapes-cpu", "--image", voc),
        "enet-1024x512": lambda: _refnet("compare", "--zoo", "enet-cityscapes-cpu", "--image", voc, "--size", "1024",
                                         "512"),
        "mobilenet-ssd-random": lambda: _refnet("compare", *gen("mobilenet-ssd"), "--random"),
        "deeplab-readme": lambda: _refnet("compare", *gen("deeplab-v3plus"), "--image",
                                          str(IMAGES / "caffe_cat.jpg")),
        "identical-inf": lambda: _inf_net(wd),
    }
    pick = [c for c in a.cases.split(",") if c] or list(cases)
    rows = []
    for name in pick:
        cmd = cases[name]()
        rows.append(_run(cmd, wd, name))
        r = rows[-1]
        print(f"{name:22s} exit {r['exit']}  {r['verdict_code']!s:12s} {r['seconds']:7.1f} s  {r['verdict'][:150]}")
        print(f"{'':22s} summary: {r['summary'][:220]}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    _ = models
    return 0


if __name__ == "__main__":
    sys.exit(main())
