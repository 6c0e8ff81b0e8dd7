"""Do the compiled scanners (weights_import/_textscan.py, _wirescan.py) pay? Issue 12, step 8.

    .venv/bin/python bench/scan_decision.py [--layers 100000] [--rounds 3]

Loads, each in a fresh child process, a long prototxt (N ReLU layers), that prototxt with a
caffemodel of seeded weights (refnet.archs GoogLeNet, ~28 MB, ~120 weight blobs) and the real
Caffe models of REFNET_MODELS, once per path:

- ``python``: the pure-Python decoders (token parser, schema-driven protobuf decoder), forced;
- ``compiled-cold``: the compiled scanners, forced, with an empty numba cache (first call compiles);
- ``compiled-warm``: the same with the numba cache filled by a previous run (the usual case);
- ``compiled-loaded``: numba already imported and the scanners already called once in the
  process (what ``_scanpolicy`` picks once a forward pass ran): the scanners' own speed.

It prints the CPU seconds (user + sys) of the load in the child, not wall time (the machine is
shared: CPU time is steadier), the median of ``--rounds`` rounds, paths alternating inside each round.
Nothing is asserted: the numbers are for the decision written in weights_import/_scanpolicy.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import os, resource, sys
mode, proto, model = sys.argv[1], sys.argv[2], sys.argv[3] or None
import refnet
import refnet.weights_import.caffe as C
import refnet.weights_import.prototxt as P

pick = (lambda *a, **k: False) if mode == "python" else (lambda *a, **k: True)
C.compiled_scan_pays = P.compiled_scan_pays = pick
if mode == "compiled-loaded":  # numba in, both scanners compiled/loaded: time only the scan
    refnet.load_caffe(proto, model)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

t0 = cpu()
net = refnet.load_caffe(proto, model)
print(f"{cpu() - t0:.4f} {len(net.graph.nodes)} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}")
"""

MODES = ("python", "compiled-cold", "compiled-warm", "compiled-loaded")


def _cases(tmp: Path, layers: int) -> dict[str, tuple[str, str]]:
    from refnet import archs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "attack"))
    from long_files import write_prototxt  # the long-file attack's N-ReLU prototxt

    long_proto = tmp / "long.prototxt"
    write_prototxt(long_proto, layers)
    proto, model = archs.googlenet(seed=0).write(tmp / "googlenet")
    cases = {f"prototxt {layers} layers ({long_proto.stat().st_size / 1e6:.1f} MB)": (str(long_proto), ""),
             f"googlenet seeded ({model.stat().st_size / 1e6:.1f} MB caffemodel)": (str(proto), str(model))}
    md = os.environ.get("REFNET_MODELS")
    if md and (Path(md) / "yufacedetectnet_caffe").is_dir():
        d = Path(md) / "yufacedetectnet_caffe"
        cases["yufacedetectnet-v2 (3.5 MB, real)"] = (str(d / "yufacedetectnet-open-v2.prototxt"),
                                                       str(d / "yufacedetectnet-open-v2.caffemodel"))
    return cases


def _run(mode: str, proto: str, model: str, cold: str, warm: str) -> tuple[float, int]:
    env = dict(os.environ, REFNET_NUMBA_CACHE=cold if mode == "compiled-cold" else warm)
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHILD, mode, proto, model], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), int(out[2])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cases = _cases(tmp, a.layers)
        warm = str(tmp / "warm-cache")
        for proto, model in cases.values():  # fill the warm cache once
            _run("compiled-warm", proto, model, "", warm)
        print(f"{'case':48s} " + " ".join(f"{m:>17s}" for m in MODES) + "   (CPU s, median; peak MiB)")
        for name, (proto, model) in cases.items():
            got: dict[str, list[tuple[float, int]]] = {m: [] for m in MODES}
            for r in range(a.rounds):
                order = MODES if r % 2 == 0 else MODES[::-1]
                for m in order:
                    cold = tempfile.mkdtemp(dir=tmp, prefix="cold-")
                    got[m].append(_run(m, proto, model, cold, warm))
            cells = []
            for m in MODES:
                cpu = statistics.median(v[0] for v in got[m])
                rss = statistics.median(v[1] for v in got[m])
                cells.append(f"{cpu:8.3f} {rss:5.0f}MiB")
            print(f"{name:48s} " + " ".join(f"{c:>17s}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
