"""Load time of the importers at a git revision against the working tree, in one process.

    .venv/bin/python bench/ab_importers.py --base main [--repeats 21]

The base revision's ``weights_import/{protobuf,caffe,torch,darknet}.py`` are loaded from git as
separate modules (their imports of the other importer modules resolve to the working tree's);
each case runs base and working tree alternately and prints the minimum CPU time
(``time.process_time``) of each and their ratio: on a loaded machine the minimum of many
alternated runs is the comparable number, wall-clock means are not. Models come from
REFNET_MODELS (missing ones are skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("protobuf", "caffe", "torch", "darknet")


def _base_modules(rev: str, folder: Path) -> dict[str, Any]:
    out = {}
    for name in MODULES:
        src = subprocess.run(["git", "show", f"{rev}:weights_import/{name}.py"], cwd=ROOT, check=True,
                             capture_output=True).stdout
        path = folder / f"{name}.py"
        path.write_bytes(src)
        spec = importlib.util.spec_from_file_location(f"ab_base_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # (dataclasses look their module up while the class is made)
        spec.loader.exec_module(mod)
        out[name] = mod
    return out


def _cases(models: Path) -> dict[str, tuple[str, Callable[[Any], Any]]]:
    from refnet.weights_import import onnx_schema as OS
    from refnet.weights_import.caffe_schema import MESSAGES

    cases: dict[str, tuple[str, Callable[[Any], Any]]] = {}
    for name, proto, model in (("mtcnn_det4", "mtcnn_caffe/det4.prototxt", "mtcnn_caffe/det4.caffemodel"),
                               ("ultraface_rfb320", "ultraface_caffe/RFB-320.prototxt",
                                "ultraface_caffe/RFB-320.caffemodel"),
                               ("yufacedetectnet_v2", "yufacedetectnet_caffe/yufacedetectnet-open-v2.prototxt",
                                "yufacedetectnet_caffe/yufacedetectnet-open-v2.caffemodel")):
        if (models / model).is_file():
            data = (models / model).read_bytes()
            cases[f"decode_message {name}.caffemodel"] = (
                "protobuf", lambda P, d=data: P.decode_message(P.Reader(d), MESSAGES["NetParameter"]))
            cases[f"read_caffe {name}"] = (
                "caffe", lambda C, p=models / proto, m=models / model: C.read_caffe(p, m))
    for onnx in ("ppocr_onnx/ch_PP-OCRv4_det_infer.onnx", "ppocr_onnx/ch_PP-OCRv4_rec_infer.onnx"):
        if (models / onnx).is_file():
            data = (models / onnx).read_bytes()
            cases[f"decode_message {Path(onnx).name}"] = (
                "protobuf", lambda P, d=data: P.decode_message(P.Reader(d), OS.MESSAGES["ModelProto"],
                                                               messages=OS.MESSAGES, enums=OS.ENUMS))
    t7 = models / "enet_cityscapes_torch/model-best.cpu.net"
    if t7.is_file():
        cases["read_torch enet"] = ("torch", lambda T: T.read_torch(t7))
    yolo = models / "yolo_fastest_darknet"
    cfg, weights = yolo / "yolo-fastest-1.1-xl.cfg", yolo / "yolo-fastest-1.1-xl.weights"
    if cfg.is_file():
        cases["read_darknet yolo-fastest-1.1-xl"] = ("darknet", lambda D: D.read_darknet(cfg, weights))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    models = Path(os.environ.get("REFNET_MODELS") or ROOT.parent / "shared" / "models")
    import refnet.weights_import.caffe as caffe
    import refnet.weights_import.darknet as darknet
    import refnet.weights_import.protobuf as protobuf
    import refnet.weights_import.torch as torch

    new = {"protobuf": protobuf, "caffe": caffe, "torch": torch, "darknet": darknet}
    with tempfile.TemporaryDirectory() as tmp:
        old = _base_modules(args.base, Path(tmp))
        print(f"min CPU time over {args.repeats} alternated runs; ratio = working tree / {args.base}")
        for label, (module, fn) in _cases(models).items():
            fn(old[module]), fn(new[module])  # warm up both
            times: dict[str, list[float]] = {"base": [], "tree": []}
            for i in range(args.repeats):
                order = (("base", old), ("tree", new)) if i % 2 == 0 else (("tree", new), ("base", old))
                for key, mods in order:
                    t0 = time.process_time()
                    fn(mods[module])
                    times[key].append(time.process_time() - t0)
            b, t = min(times["base"]), min(times["tree"])
            print(f"{label:50s} {args.base} {b * 1e3:8.2f} ms  tree {t * 1e3:8.2f} ms  ratio {t / b:5.3f}")


if __name__ == "__main__":
    main()
