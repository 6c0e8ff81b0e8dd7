"""``refnet demo`` (``make demo``): the main job on built-in defaults, written into one folder.

1. the kernel self-check (fast float32 kernels vs the float64 reference);
2. ``refnet compare`` on every zoo model whose files are in ``$REFNET_MODELS``, on a real photo
   from the ``images`` folder next to it (one photo per task), and on the built-in architectures
   of :mod:`refnet.archs` (MobileNet-SSD, GoogLeNet, DeepLab-v3+, seeded weights) -- always, they
   are cheap; per model ``report.txt``, ``report.json``, ``report.png`` (the per-layer plot) and
   the task's output picture drawn by :mod:`refnet.pipelines`;
3. ``SUMMARY.md``: one row per model -- verdict, worst per-layer difference vs cv2 (refnet
   float64 / float32), first bad layer, task-level agreement.

The ENet size is the zoo's 512x256 (not 1024x512) and the GPU-saved ENet file, which cv2 cannot
read, is listed as skipped (its CPU copy is compared), so the whole demo stays within minutes.
``--models`` / ``$REFNET_DEMO_MODELS`` (comma-separated names) limits the run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_IMAGES", "BUILTIN_NAMES", "DemoRow", "builtin_models", "images_dir", "run_demo"]

# one photo per task (files of /work/shared/images; any other photo is used when one is missing)
DEMO_IMAGES = {
    "classify": "space_shuttle.jpg",
    "detect": "darknet_dog.jpg",
    "face": "voc2007_001150.jpg",
    "segment": "voc2007_000456.jpg",
    "stylize": "caffe_cat.jpg",
}
SKIP = {"enet-cityscapes": "GPU-saved file: cv2.dnn cannot read its torch.Cuda* storages "
                           "(refnet can); compared as enet-cityscapes-cpu"}


@dataclass
class DemoRow:
    """One model's line of SUMMARY.md."""

    name: str
    source: str
    task: str
    input: str = ""
    verdict: str = ""
    verdict_code: str = ""
    worst_f64: float | None = None
    worst_f32: float | None = None
    first_bad: str | None = None
    task_agreement: str = ""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    summary: str = ""


def images_dir(models: Path | None) -> Path | None:
    """The photo folder: ``images`` next to ``$REFNET_MODELS`` (``../shared/images``)."""
    cands = []
    if models is not None:
        cands.append(models.parent / "images")
    cands.append(Path(__file__).resolve().parent.parent.parent / "shared" / "images")
    return next((c for c in cands if c.is_dir()), None)


def _photo(images: Path | None, task: str) -> Path | None:
    if images is None:
        return None
    want = images / DEMO_IMAGES.get(task, DEMO_IMAGES["detect"])
    if want.is_file():
        return want
    from refnet.resolver import IMAGE_EXTS

    return next((p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_EXTS), None)


BUILTIN_NAMES = ("mobilenet-ssd", "googlenet", "deeplab-v3plus")


def builtin_models(workdir: Path, names: Sequence[str] | None = None
                   ) -> list[tuple[str, str, Any, Any, Any, list[str] | None, int]]:
    """The generated nets (all, or those in ``names``), written into ``workdir``:
    (name, task, prototxt, caffemodel, Preprocess, labels, label_offset)."""
    from refnet import zoo
    from refnet.archs import deeplab_v3plus, googlenet, mobilenet_ssd

    workdir.mkdir(parents=True, exist_ok=True)
    out = []
    voc = zoo.read_labels("mobilenet-ssd-voc")
    specs = {
        "mobilenet-ssd": ("detect", lambda: mobilenet_ssd(seed=0), zoo.get("mobilenet-ssd-voc").preprocess, voc, 1),
        "googlenet": ("classify", lambda: googlenet(seed=0), zoo.get("bvlc-googlenet").preprocess,
                      zoo.read_labels("bvlc-googlenet"), 0),
        "deeplab-v3plus": ("segment", lambda: deeplab_v3plus(seed=0),
                           zoo.Preprocess(1 / 127.5, (129, 129), (127.5, 127.5, 127.5), True),
                           (["background"] + voc) if voc else None, 0),
    }
    for name in BUILTIN_NAMES:
        if names is not None and name not in names:
            continue
        task, make, pre, labels, offset = specs[name]
        proto, model = make().write(workdir / name)
        out.append((name, task, proto, model, pre, labels, offset))
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _write_summary(out: Path, rows: Sequence[DemoRow], selfcheck: str, seconds: float) -> Path:
    import cv2

    import refnet
    from refnet import tolerances

    lines = ["# refnet demo: refnet vs cv2.dnn, layer by layer", "",
             f"refnet {refnet.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}; "
             f"total {seconds:.0f} s. Kernel self-check: {selfcheck}.", "",
             f"Per-layer tolerance: max|diff| / max|ref| <= {tolerances.COMPARE_CV2:g} for cv2, "
             f"{tolerances.COMPARE_F32:g} for refnet float32 (reference: refnet float64), judged on each layer's "
             "local error (the layer's kernel on the backend's own inputs). *worst vs cv2* is the accumulated "
             "error, known cv2 deviations aside (see each report).", "",
             "| model | source | task | input | verdict | worst vs cv2 (f64) | worst vs cv2 (f32) | first bad layer "
             "| task agreement (cv2 fusion on) | time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = r.verdict.replace("|", "/")
        link = f"[{r.name}]({r.name}/report.txt)" if "report.txt" in r.files else r.name
        lines.append(f"| {link} | {r.source} | {r.task} | {r.input} | {verdict} | "
                     f"{_fmt(r.worst_f64)} | {_fmt(r.worst_f32)} | {r.first_bad or '-'} | "
                     f"{r.task_agreement.replace('|', '/') or '-'} | {r.seconds:.1f} s |")
    lines += ["", "Each model folder holds `report.txt` (the `refnet compare` table), `report.json` "
              "(docs/compare-schema.md), `report.png` (per-layer error along depth) and the task's picture."]
    p = out / "SUMMARY.md"
    p.write_text("\n".join(lines) + "\n")
    return p


def _compare_one(name: str, source: str, task: str, net: Any, image_path: Path | None, pre: Any,
                 labels: list[str] | None, offset: int, out: Path, say: Callable[[str], None],
                 entry: Any = None, notes: Sequence[str] = ()) -> DemoRow:
    from refnet import pipelines
    from refnet.crosscheck.backends import cv2_net_for
    from refnet.crosscheck.orchestrator import compare
    from refnet.crosscheck.plot import PlotUnavailableError, plot_report
    from refnet.crosscheck.report import run_document
    from refnet.resolver import ResolvedModel, random_input

    t0 = time.perf_counter()
    row = DemoRow(name, source, task)
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    cv2_net_for(net)  # cv2 must read the files: fail before the work
    image = pipelines.read_image(image_path) if image_path is not None else None
    x = pre.blob(image) if image is not None else None
    want = net.input_shapes.get(net.input_names[0]) if len(net.input_names) == 1 else None
    if x is None or (want and len(want) == 4 and want[1] and x.shape[1] != want[1]):
        x = random_input(ResolvedModel(net, name, entry, labels), None, 0)
        row.input = f"random {tuple(x.shape)}"
        image = None
    else:
        row.input = f"{image_path.name} {tuple(x.shape[2:])}"
    rep = compare(net, x, model_name=name, task=task, labels=labels, label_offset=offset,
                  input_label=row.input.split(" ")[0])
    rep.notes[:0] = list(notes)
    (d / "report.txt").write_text(rep.table(top=12) + "\n")
    (d / "report.json").write_text(json.dumps(run_document([rep], command=["refnet", "demo"]), indent=1,
                                              allow_nan=False))
    row.files = ["report.txt", "report.json"]
    try:
        plot_report(rep, d / "report.png")
        row.files.append("report.png")
    except PlotUnavailableError as e:
        say(f"    (no plot: {e})")
    if image is not None and task in pipelines.TASKS:
        try:
            res = pipelines.run_task(net, image, task, entry=entry, labels=labels, precision="float32",
                                     **({} if entry is not None else {"preprocess": pre, "label_offset": offset}))
            pic = d / f"{task}.png"
            pipelines.write_image(pic, pipelines.render(res))
            row.files.append(pic.name)
        except Exception as e:  # noqa: BLE001 - the picture is a bonus; the comparison is the job
            say(f"    (no {task} picture: {type(e).__name__}: {str(e).splitlines()[0][:120]})")
    w64, w32 = rep.worst("cv2"), rep.worst("cv2_vs_float32")
    row.verdict, row.verdict_code = rep.verdict, rep.verdict_code
    row.worst_f64 = w64.max_rel if w64 else None
    row.worst_f32 = w32.max_rel if w32 else None
    row.first_bad = rep.first_bad_layer
    row.task_agreement = rep.task_summary()
    row.summary = rep.summary_line()
    row.seconds = time.perf_counter() - t0
    return row


def run_demo(out: str | os.PathLike = "demo-out", *, models: Sequence[str] | None = None, builtins: bool = True,
             selfcheck: bool = True, say: Callable[[str], None] = print) -> tuple[int, list[DemoRow]]:
    """Run the demo into ``out``; return (exit status, rows). ``models`` limits it to these names.

    Phases: 1. the kernel self-check, 2. `refnet compare` of every zoo model found and every
    built-in architecture, 3. the summary files."""
    from refnet import zoo

    t_all = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = _wanted(models)
    status, sc_text = _selfcheck_phase(out, say) if selfcheck else (0, "skipped")
    md = zoo.models_dir()
    images = images_dir(md)
    say(f"== 2. refnet compare vs cv2.dnn (models: {md or 'REFNET_MODELS not set'}; photos: {images or 'none'})")
    results: list[DemoRow] = []
    todo = _zoo_jobs(md, wanted, images, out, say, results)
    if builtins:
        todo += _builtin_jobs(out, wanted, images, say)
    status |= _run_jobs(todo, results, say)
    total = time.perf_counter() - t_all
    p = _write_summary(out, results, sc_text, total)
    n_ok = sum(r.verdict_code in ("agree", "agree_known") for r in results)
    n_skip = sum(r.verdict_code == "skipped" for r in results)
    say(f"== 3. wrote {p}: {n_ok}/{len(results) - n_skip} models agree with cv2.dnn"
        + (" (known deviations attributed)" if any(r.verdict_code == "agree_known" for r in results) else "")
        + (f", {n_skip} skipped" if n_skip else "") + f"; {total:.0f} s")
    return status, results


def _wanted(models: Sequence[str] | None) -> set[str] | None:
    """The model names asked for (None: all); ValueError naming the unknown ones."""
    from refnet import zoo

    wanted = {m.strip() for m in models if m.strip()} if models else None
    if wanted:
        unknown = sorted(wanted - (set(zoo.names()) | set(BUILTIN_NAMES)))
        if unknown:
            raise ValueError(f"unknown demo model(s) {', '.join(unknown)}; choose from the zoo names "
                             f"(`refnet models list`) and the built-ins {', '.join(BUILTIN_NAMES)}")
    return wanted


def _selfcheck_phase(out: Path, say: Callable[[str], None]) -> tuple[int, str]:
    """Phase 1: ``refnet selfcheck`` into ``selfcheck.tsv``; (status bit, summary text)."""
    say("== 1. kernel self-check (fast float32 kernels vs float64 reference)")
    from refnet import selfcheck as sc

    rows = sc.run(verbose=False)
    with (out / "selfcheck.tsv").open("w") as f:
        f.write("kernel\tmax_rel_err\tseconds\tok\n")
        for name, err, dt, ok in rows:
            f.write(f"{name}\t{err:.6g}\t{dt:.3f}\t{ok}\n")
    bad = [r[0] for r in rows if not r[3]]
    sc_text = f"{len(rows) - len(bad)}/{len(rows)} kernels within tolerance" + (
        f" (FAILED: {', '.join(bad)})" if bad else "")
    say(f"   {sc_text}; wrote {out / 'selfcheck.tsv'}")
    return (1 if bad else 0), sc_text


def _zoo_jobs(md: Path | None, wanted: set[str] | None, images: Path | None, out: Path, say: Callable[[str], None],
              results: list[DemoRow]) -> list[tuple[str, Callable[[], DemoRow]]]:
    """One compare job per zoo model found in REFNET_MODELS (SKIP entries go to ``results`` directly)."""
    from refnet import zoo
    from refnet.resolver import resolve_model

    todo: list[tuple[str, Callable[[], DemoRow]]] = []
    if md is None:
        return todo
    for e in zoo.entries():
        if wanted is not None and e.name not in wanted:
            continue
        loc = zoo.find(e.name, (md,))
        if loc.status != "found" or md not in loc.roots:
            continue
        if e.name in SKIP:
            results.append(DemoRow(e.name, "zoo", e.task, verdict=f"skipped: {SKIP[e.name]}",
                                   verdict_code="skipped"))
            say(f"-- {e.name}: skipped ({SKIP[e.name]})")
            continue

        def job(e=e) -> DemoRow:
            rm = resolve_model((), e.name)
            return _compare_one(e.name, "zoo", e.task, rm.net, _photo(images, e.task), e.preprocess,
                                rm.labels, e.label_offset, out, say, entry=e)

        todo.append((e.name, job))
    return todo


def _builtin_jobs(out: Path, wanted: set[str] | None, images: Path | None, say: Callable[[str], None]
                  ) -> list[tuple[str, Callable[[], DemoRow]]]:
    """One compare job per built-in architecture (refnet.archs, seeded weights)."""
    todo: list[tuple[str, Callable[[], DemoRow]]] = []
    gen_dir = out / "builtin-models"
    for name, task, proto, model, pre, labels, offset in builtin_models(gen_dir, wanted):
        def job(name=name, task=task, proto=proto, model=model, pre=pre, labels=labels, offset=offset) -> DemoRow:
            import refnet

            net = refnet.load_caffe(proto, model)
            return _compare_one(name, "refnet.archs (seeded)", task, net, _photo(images, task), pre, labels,
                                offset, out, say, notes=[f"generated by refnet.archs into {proto.parent}"])

        todo.append((name, job))
    return todo


def _run_jobs(todo: list[tuple[str, Callable[[], DemoRow]]], results: list[DemoRow],
              say: Callable[[str], None]) -> int:
    """Run the jobs in turn (one failure is reported, the demo goes on); status 1 if any differs or fails."""
    status = 0
    for i, (name, job) in enumerate(todo):
        say(f"-- [{i + 1}/{len(todo)}] {name} ...")
        try:
            row = job()
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the demo goes on
            row = DemoRow(name, "?", "?", verdict=f"ERROR: {type(e).__name__}: {str(e).splitlines()[0][:160]}",
                          verdict_code="error")
            if os.environ.get("REFNET_DEBUG"):
                traceback.print_exc()
        results.append(row)
        say(f"   {row.summary or row.verdict}" + (f"  [{row.seconds:.1f} s]" if row.seconds else ""))
        if row.verdict_code in ("differ", "error"):
            status |= 1
    return status

