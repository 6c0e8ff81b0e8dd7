"""The ONNX node conformance selection of ``conformance.py`` run through every backend side by
side: refnet float64/float32, onnxruntime (in-process), cv2 4.x and cv2 5.x (each in a
subprocess worker, ``refnet.crosscheck.cv2_backend.Cv2WorkerBackend``; a crash is charged to
the case that caused it).

Like with like: every backend gets the same model file per case (the case's model with every
input but the first bound as an initializer, exactly what refnet runs), the same first-input
value and the same pass rule (``conformance.judge``: expected shape, ``allclose`` with the case's
rtol 1e-3 / atol 1e-7, NaN equals NaN). onnxruntime is fed the input in its declared dtype;
cv2.dnn takes float32 blobs only, so the cv2 workers get the value as float32.

Outcome per case and backend: ``pass``; ``wrong`` (ran, returned every output, the numbers
(or the shape and the numbers) do not match: a *silent wrong result*); ``layout`` (right
numbers in a wrong shape, e.g. cv2 4.x returns a 1-D tensor as (N, 1)); ``random`` (a training-
mode Dropout case whose expected output is one random draw: the backend's output is another
valid draw, every element 0 or x/(1-ratio)); ``missing`` (ran but did not return an output);
``error`` (refused the model or raised); ``crash`` (the worker died on a signal). Only ``pass``
counts as passed.

    .venv/bin/python tests/onnx_reader/conformance_backends.py [--cv5 PYTHON] [--cv4 PYTHON]
        [--json out.json] [--markdown out.md] [--from-json out.json]   (re-render a saved run)
        [--feed-all]   (variant: every input fed at run time; onnxruntime and cv2 only)
        [--sets cnn,extended,adjacent,index]   (the selections to run; default all four)

Takes a few minutes (not part of the default test suite; test_onnx_conformance.py keeps
asserting refnet's floor).
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import conformance as C  # noqa: E402

OUTCOMES = ("pass", "wrong", "layout", "random", "missing", "error", "crash")
#: CNN layers with onnx node tests that refnet does not read yet (normalisation layers of newer
#: CNNs, the spatial transformer's sampler): run so the comparison is not limited to refnet's ops
ADJACENT_OPS = frozenset({"GroupNormalization", "MeanVarianceNormalization", "GridSample"})
SETS = {"cnn": C.CNN_OPS, "extended": C.EXTENDED_OPS, "adjacent": ADJACENT_OPS, "index": C.INDEX_OPS}


def _outcome(cause: str) -> str:
    if not cause:
        return "pass"
    if cause.startswith("missing output"):
        return "missing"
    if cause.startswith("wrong"):
        return "wrong"
    if "worker crashed" in cause:
        return "crash"
    return "error"


def classify(case, names: list[str], got: dict) -> tuple[str, str]:
    """(outcome, cause) of a backend's outputs ``got`` under ``conformance.judge``."""
    expected = case.data_sets[0][1]
    cause = C.judge(case, names, got, expected)
    out = _outcome(cause)
    if out == "wrong" and cause.startswith("wrong shape"):
        rtol, atol = C.tolerance(case)
        if all(np.size(got[n]) == np.size(e) and np.allclose(np.asarray(got[n], np.float64).reshape(np.shape(e)),
                                                             np.asarray(e, np.float64), rtol=rtol, atol=atol,
                                                             equal_nan=True) for n, e in zip(names, expected)):
            return "layout", cause + " (values right)"
    if out == "wrong" and case.name.startswith("test_training_dropout"):
        x = np.asarray(case.data_sets[0][0][0], np.float64)
        ratio = float(np.asarray(case.data_sets[0][0][1])) if len(case.data_sets[0][0]) > 1 else 0.5
        y = np.asarray(got[names[0]], np.float64)
        if y.shape == x.shape and np.all(np.isclose(y, 0) | np.isclose(y, x / (1 - ratio), rtol=1e-5)):
            return "random", "another random draw (every element 0 or x/(1-ratio): a valid dropout)"
        return out, cause + "; not a dropout of x (elements must be 0 or x/(1-ratio))"
    return out, cause


def run_refnet(cases, precision: str) -> dict[str, tuple[str, str]]:
    out = {}
    for c in cases:
        r = C.run_case(c, precision)
        out[c.name] = (_outcome(r.cause) if r.status != "pass" else "pass", r.cause)
    return out


def run_ort(cases, files) -> tuple[str, dict[str, tuple[str, str]]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    out = {}
    for c in cases:
        path, feeds, names = files[c.name]
        try:
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            with np.errstate(all="ignore"):
                got = dict(zip(names, sess.run(names, feeds)))
        except Exception as e:  # noqa: BLE001 - a harness: the backend's refusal is the result
            cause = f"error: {type(e).__name__}: {' '.join(str(e).split())[-200:]}"
            out[c.name] = ("error", cause)
            continue
        out[c.name] = classify(c, names, got)
    return f"onnxruntime {ort.__version__} (ORT_DISABLE_ALL)", out


def run_cv2(cases, files, python: str, chunk: int = 25) -> tuple[str, dict[str, tuple[str, str]]]:
    from refnet.crosscheck.cv2_backend import BackendFailure, Cv2WorkerBackend

    be = Cv2WorkerBackend(python, timeout=120)
    out = {}
    for i in range(0, len(cases), chunk):
        part = cases[i:i + chunk]
        jobs = [files[c.name] for c in part]
        for c, res in zip(part, be.run_many(jobs)):
            if isinstance(res, BackendFailure):
                msg = str(res).split(": ", 1)[-1]
                cause = ("crash: " if "worker crashed" in msg else "error: ") + msg[-200:]
                out[c.name] = ("crash" if "worker crashed" in msg else "error", cause)
                continue
            names = files[c.name][2]
            out[c.name] = classify(c, names, res)
    return f"cv2 {be.version} (worker)", out


def write_models(cases, tmp: str, bind: bool = True) -> dict:
    """{case: (model path, feeds, output names)}: the bound model fed its first input (default),
    or with ``bind=False`` the case's own model with every input fed at run time."""
    files = {}
    for c in cases:
        ins = c.data_sets[0][0]
        path = os.path.join(tmp, c.name + ".onnx")
        g = c.model.graph
        if bind:
            Path(path).write_bytes(C._bound_model(c, ins))
            feeds = {g.input[0].name: np.asarray(ins[0])}
        else:
            Path(path).write_bytes(c.model.SerializeToString())
            feeds = {vi.name: np.asarray(v) for vi, v in zip(g.input, ins)}
        files[c.name] = (path, feeds, [vi.name for vi in g.output])
    return files


def run_everything(cv4: str | None, cv5: str | None, bind: bool = True, sets: tuple[str, ...] = tuple(SETS)) -> dict:
    """{"backends": [names], "cases": [{name, op, set, results: {backend: [outcome, cause]}}]}.
    ``bind=False`` (``--feed-all``): every input fed at run time, as the node tests are written;
    refnet (static graphs) is left out of that variant. ``sets``: the selections to run (``--sets``)."""
    sel = []
    for set_name, ops in SETS.items():
        if set_name not in sets:
            continue
        sel += [(set_name, c) for c in C.cnn_cases(ops)]
    cases = [c for _, c in sel]
    cols: dict[str, dict[str, tuple[str, str]]] = {}
    if bind:
        cols["refnet float64"] = run_refnet(cases, "float64")
        cols["refnet float32"] = run_refnet(cases, "float32")
    with tempfile.TemporaryDirectory(prefix="refnet-conf-") as tmp:
        files = write_models(cases, tmp, bind)
        name, res = run_ort(cases, files)
        cols[name] = res
        for py in (cv4, cv5):
            if py:
                name, res = run_cv2(cases, files, py)
                cols[name] = res
    return {"backends": list(cols),
            "cases": [{"name": c.name, "op": C._op_of(c), "set": s,
                       "results": {b: list(cols[b][c.name]) for b in cols}} for s, c in sel]}


def markdown(data: dict) -> str:
    bs = data["backends"]
    lines = []
    for set_name in (*[k for k in SETS if any(r["set"] == k for r in data["cases"])], "all"):
        rows = [r for r in data["cases"] if set_name in ("all", r["set"])]
        count = collections.Counter((b, r["results"][b][0]) for r in rows for b in bs)
        lines += [f"**{set_name} set: {len(rows)} cases**", "",
                  "| outcome | " + " | ".join(bs) + " |", "|---|" + "---|" * len(bs)]
        for o in OUTCOMES:
            label = {"pass": "**passed**", "wrong": "silent wrong results", "layout": "right values, wrong shape",
                     "random": "valid random draw (training Dropout)"}.get(o, o)
            lines.append(f"| {label} | " + " | ".join(str(count[(b, o)]) for b in bs) + " |")
        lines.append("")
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    n: collections.Counter = collections.Counter()
    for r in data["cases"]:
        key = r["op"] + {"extended": " (ext)", "adjacent": " (adj)", "index": " (idx)"}.get(r["set"], "")
        n[key] += 1
        for b in bs:
            per[key][b] += r["results"][b][0] == "pass"
    lines += ["| op | cases | " + " | ".join(bs) + " |", "|---|---|" + "---|" * len(bs)]
    for key in sorted(n, key=lambda k: (k.endswith("(ext)"), k.endswith("(adj)"), k.endswith("(idx)"), k)):
        lines.append(f"| {key} | {n[key]} | " + " | ".join(str(per[key][b]) for b in bs) + " |")
    return "\n".join(lines)


def _short(cause: str) -> str:
    return re.sub(r"\S*\.onnx: ", "", cause)


def listings(data: dict) -> str:
    bs = data["backends"]
    others = [b for b in bs if not b.startswith("refnet")]
    lines = []
    if "refnet float64" in bs:
        lines += ["", "### refnet float64 fails, another backend passes", ""]
        for r in data["cases"]:
            res = r["results"]
            if res["refnet float64"][0] != "pass" and any(res[b][0] == "pass" for b in others):
                lines.append(f"- {r['name']} ({r['op']}): passes in "
                             + ", ".join(b.split(" (")[0] for b in others if res[b][0] == "pass")
                             + f"; refnet: {_short(res['refnet float64'][1])}")
    for b in bs:
        lines += ["", f"### silent wrong results: {b}", ""]
        lines += [f"- {r['name']} ({r['op']}): {r['results'][b][1]}" for r in data["cases"]
                  if r["results"][b][0] == "wrong"]
        crashed = [r["name"] for r in data["cases"] if r["results"][b][0] == "crash"]
        if crashed:
            lines += ["", f"crashed the worker ({len(crashed)}): " + ", ".join(crashed)]
        lay = [r["name"] for r in data["cases"] if r["results"][b][0] == "layout"]
        if lay:
            lines += ["", f"right values in a wrong shape ({len(lay)}): " + ", ".join(lay)]
    return "\n".join(lines)


def _arg(flag: str, default: str | None) -> str | None:
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else default


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    cv4 = _arg("--cv4", str(root / ".venv/bin/python"))
    cv5 = _arg("--cv5", os.environ.get("REFNET_CV5_PYTHON") or str(root / ".venv-cv5/bin/python"))
    if _arg("--from-json", None):
        data = json.loads(Path(_arg("--from-json", None)).read_text())
    else:
        sets = tuple((_arg("--sets", None) or ",".join(SETS)).split(","))
        bad = [k for k in sets if k not in SETS]
        if bad:
            sys.exit(f"--sets: unknown set(s) {bad}; the sets are {list(SETS)}")
        data = run_everything(cv4 if cv4 and os.path.exists(cv4) else None,
                              cv5 if cv5 and os.path.exists(cv5) else None, bind="--feed-all" not in sys.argv,
                              sets=sets)
    md = markdown(data) + "\n" + listings(data)
    print(md)
    if _arg("--json", None):
        Path(_arg("--json", None)).write_text(json.dumps(data, indent=1))
    if _arg("--markdown", None):
        Path(_arg("--markdown", None)).write_text(md + "\n")
