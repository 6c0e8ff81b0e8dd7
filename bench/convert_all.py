"""The `refnet convert` table: every model of tests/writers/export_cases.py converted to ONNX and
verified in every available backend (onnxruntime, cv2 4.x, cv2 5.x via REFNET_CV5_PYTHON).

    REFNET_CV5_PYTHON=.venv-cv5/bin/python .venv/bin/python bench/convert_all.py [--only NAME ...]
        [--no-layers] [--json PATH]

Prints a progress line per model, then the table (markdown): model, IR ops, ONNX ops, backends,
worst output error (scaled by max(1, |ref|)), task agreement, cv2 4.x status, verdict.
Exit status 0 when every model agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from writers.export_cases import CASES, run_case, worst  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="case names (substring match)")
    ap.add_argument("--no-layers", action="store_true", help="outputs only (no per-layer runs)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    from refnet.crosscheck.onnx_backends import available_backends

    models = Path(os.environ.get("REFNET_MODELS", HERE.parent.parent / "shared" / "models"))
    images = models.parent / "images"
    backends = available_backends()
    print("backends: " + "; ".join(b.name for b in backends), flush=True)
    rows, failed = [], []
    cases = [c for c in CASES.values() if not args.only or any(s in c.name for s in args.only)]
    with tempfile.TemporaryDirectory(prefix="refnet-convert-all-") as wd:
        for i, case in enumerate(cases):
            print(f"[{i + 1}/{len(cases)}] {case.name} ...", flush=True)
            try:
                row = run_case(case, models, images if images.is_dir() else None, Path(wd) / str(i), backends,
                               per_layer=not args.no_layers)
            except Exception as e:  # a model that cannot be converted is a row too
                print(f"    FAILED: {type(e).__name__}: {e}", flush=True)
                failed.append((case.name, f"{type(e).__name__}: {e}"))
                continue
            v = row.verification
            print(f"    {v.verdict} worst {worst(v):.1e} ({row.seconds:.0f} s)", flush=True)
            rows.append(row)
    print()
    print("| model | IR ops | ONNX ops | backends (status, worst output / worst layer) | task agreement (ORT) "
          "| cv2 4.x | verdict |")
    print("|---|---|---|---|---|---|---|")
    out_json = []
    for row in rows:
        v = row.verification
        be = "; ".join(f"{r.name.split(' (')[0]}: {r.status}"
                       + (f" {r.worst:.1e}/{max(r.layers.values(), default=float('nan')):.1e}" if r.ran else "")
                       for r in v.results if not r.is_cv2_4)
        cv4 = next((r for r in v.results if r.is_cv2_4), None)
        cv4s = "-" if cv4 is None else (f"{cv4.status} {cv4.worst:.1e}" if cv4.ran else
                                        f"cannot run (cv2 4's limit): {(cv4.error or '')[-90:]}")
        task = "; ".join(d for ok, d in v.results[0].tasks.values()) if v.results and v.results[0].ran else "-"
        print(f"| {row.case} | {len(row.ir_ops)}: {' '.join(row.ir_ops)} | {len(row.onnx_ops)} | {be} | {task} | "
              f"{cv4s} | {v.verdict} |")
        out_json.append({"case": row.case, "ir_ops": row.ir_ops, "onnx_ops": row.onnx_ops, "seconds": row.seconds,
                         **v.to_json()})
    for name, err in failed:
        print(f"| {name} | - | - | conversion failed: {err[:200]} | - | - | FAILED |")
    if args.json:
        Path(args.json).write_text(json.dumps(out_json, indent=1, default=float))
    return 0 if not failed and all(r.verification.verdict == "AGREE" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
