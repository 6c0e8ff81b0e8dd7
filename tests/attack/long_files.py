"""Issue 16 case 4: long valid model files, load time and peak RSS in a fresh child each.

    python tests/attack/long_files.py [--python PY] [--layers 100000] [--caffemodel-layers N]

Writes a prototxt of N ReLU layers (100k: 7.8 MB; 412k: 33 MB) and a caffemodel of 2N layers
(or ``--caffemodel-layers``; 0: none) with the definitions inside (200k: 6.9 MB), then loads
each with refnet.load in a child process and prints seconds and ru_maxrss. ``--python`` runs
another checkout's interpreter (before/after).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, resource
import refnet
t0 = time.perf_counter()
net = refnet.load(*sys.argv[1:])
dt = time.perf_counter() - t0
print(f"{len(net.graph.nodes)} layers {dt:.2f} s {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
"""


def write_prototxt(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write('name: "long"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n')
        for i in range(n):
            bottom = "data" if i == 0 else f"relu{i - 1}"
            f.write(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{bottom}" top: "relu{i}" }}\n')


def write_caffemodel(path: Path, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from writers.caffe_writer import key, ld, varint

    def s(field: int, text: str) -> bytes:
        return ld(field, text.encode())

    # NetParameter: name 1, input 3, input_shape 8 (BlobShape: dim 1)
    body = bytearray(s(1, "long") + s(3, "data") + ld(8, b"".join(key(1, 0) + varint(v) for v in (1, 3, 8, 8))))
    for i in range(n):  # LayerParameter: name 1, type 2, bottom 3, top 4
        bottom = "data" if i == 0 else f"r{i - 1}"
        body += ld(100, s(1, f"r{i}") + s(2, "ReLU") + s(3, bottom) + s(4, f"r{i}"))
    path.write_bytes(bytes(body))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--layers", type=int, default=100000)
    ap.add_argument("--caffemodel-layers", type=int, default=None, help="default: 2x --layers; 0: no caffemodel")
    a = ap.parse_args()
    n_model = 2 * a.layers if a.caffemodel_layers is None else a.caffemodel_layers
    d = Path(tempfile.mkdtemp())
    proto, model = d / "long.prototxt", d / "long.caffemodel"
    write_prototxt(proto, a.layers)
    write_caffemodel(model, n_model)
    cases = [(f"prototxt {a.layers:,} layers, {proto.stat().st_size / 1e6:.1f} MB", [proto])]
    if n_model:
        cases.append((f"caffemodel {n_model:,} layers, {model.stat().st_size / 1e6:.1f} MB", [model]))
    for label, files in cases:
        t0 = time.monotonic()
        r = subprocess.run([a.python, "-c", CHILD, *map(str, files)], capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t0
        print(f"{label}: {r.stdout.strip() or r.stderr.strip().splitlines()[-1]} (child wall {wall:.1f} s)")
    for p in (proto, model):
        os.unlink(p)
    os.rmdir(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
