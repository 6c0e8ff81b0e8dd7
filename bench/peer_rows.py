"""The README's peer tables (issue 17): refnet against cv2 4.x and the ONNX peers on seeded models.

    python bench/peer_rows.py onnx squeezenet,inception_v1,resnet50 [--threads 1] [--repeat 11]
    python bench/peer_rows.py caffe googlenet,mobilenet_ssd --threads 2 --one-thread [--repeat 9]
    python bench/peer_rows.py onnx squeezenet --threads 1 --neighbour memory

``onnx``: the onnx package's light zoo graphs with ``refnet.archs.seed_onnx_weights(seed=0)``,
timed with the ``onnxruntime`` and ``cv2-5`` peers (:mod:`refnet.bench_peers`). ``caffe``: the
arch-only GoogLeNet / MobileNet-SSD prototxts of REFNET_MODELS with the test suite's seeded
random caffemodels (tests/writers). Each model is one :func:`refnet.bench.bench_model` call
(fair protocol, alternating rounds); the reports are printed and written as JSON (``--json``).
``--neighbour spin|memory`` runs :func:`refnet.bench.busy_neighbour` of that kind throughout.
Run from the checkout (``make cv5`` first for the cv2 5.x column; REFNET_CV5_PYTHON or
``.venv-cv5``). Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from refnet.bench import NEIGHBOURS

ROOT = Path(__file__).resolve().parents[1]
PROTOS = {"googlenet": "arch_only/bvlc_googlenet/deploy.prototxt",
          "mobilenet_ssd": "arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("onnx", "caffe"))
    ap.add_argument("models", help="comma-separated names")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--one-thread", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--neighbour", choices=NEIGHBOURS, help="a busy neighbour process throughout")
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    from contextlib import nullcontext

    import onnx

    import refnet
    from refnet.bench import bench_model, busy_neighbour, gemm_gflops

    threads = a.threads if a.threads == "auto" else int(a.threads)
    peers = () if a.no_peers else ("onnxruntime", "cv2-5")
    models = Path(os.environ.get("REFNET_MODELS", ROOT.parent / "shared" / "models"))
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    gemm = gemm_gflops()
    res = {}
    with (tempfile.TemporaryDirectory(prefix="refnet-peer-rows-") as wd,
          busy_neighbour(7200, kind=a.neighbour) if a.neighbour else nullcontext()):
        for name in a.models.split(","):
            size = None
            if a.kind == "onnx":
                net = refnet.load(str(refnet.archs.seed_onnx_weights(light / f"light_{name}.onnx",
                                                                      Path(wd) / f"{name}.onnx", seed=0)))
            else:
                sys.path.insert(0, str(ROOT / "tests"))
                from writers.caffe_writer import write_random_caffemodel

                w = Path(wd) / f"{name}.caffemodel"
                write_random_caffemodel(models / PROTOS[name], w, seed=0)
                net = refnet.load(str(models / PROTOS[name]), str(w))
                size = (300, 300) if name == "mobilenet_ssd" else None
            r = bench_model(net, threads=threads, repeat=a.repeat, name=name, gemm=gemm, size=size, peers=peers,
                            one_thread=a.one_thread, neighbour=a.neighbour or False)
            print(r.table(), "\n", flush=True)
            res[name] = r.to_dict()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
