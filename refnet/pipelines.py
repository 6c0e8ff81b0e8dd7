"""Task pipelines: image -> blob -> refnet forward -> the task's post-processing -> :class:`TaskResult`.

:func:`run_task` runs one of :data:`TASKS` on a BGR uint8 image; :func:`render` turns the result
into a picture (BGR uint8) worth saving as PNG. Preprocessing comes from ``entry`` (a
:class:`refnet.zoo.ModelEntry`), an explicit ``preprocess=`` option, or :func:`default_preprocess`.

``TaskResult.data`` by task (boxes are ``(x1, y1, x2, y2)`` in pixels of the input image):

- ``classify``: ``top`` = [(index, label, probability)] best first; ``probabilities`` (C,) float64;
  ``softmax_applied`` (True when the net's output was not already a distribution).
- ``detect`` / ``face``: ``decoder`` ("ssd", "yolo", "ultraface", "mtcnn-pnet"); ``boxes`` (K, 4),
  ``scores`` (K,), ``class_ids`` (K,) int64, ``labels`` [str], best first; ``detections`` =
  [{"label", "class_id", "score", "box"}]; ``threshold``, ``nms_threshold``.
- ``segment``: ``class_map`` (h, w) int64 at the net's output resolution (argmax over channels);
  ``class_names`` [str] for every channel; ``fractions`` {label: pixel fraction} of the classes
  present, largest first; ``region`` = the image rectangle the map covers.
- ``stylize``: ``stylized`` (h, w, 3) uint8 BGR; ``stylized_float`` the unclipped float64 image;
  ``clipped_fraction`` of values that fell outside [0, 255].

Every result also has ``model``, ``precision``, ``preprocess`` (the :class:`refnet.zoo.Preprocess`
used) and ``label_offset`` in ``data``. MTCNN P-Net runs over an image pyramid: its ``blob`` and
``outputs`` are the first (largest) level's, ``data["scales"]`` lists the levels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from refnet import draw, tolerances, two_stage
from refnet.errors import RefnetError, ShapeError
from refnet.kernels.detection import ssd_detections  # DetectionOutput rows: one reader
from refnet.zoo import ModelEntry, Preprocess

__all__ = [
    "TASKS",
    "TaskResult",
    "PipelineError",
    "run_task",
    "render",
    "default_preprocess",
    "top_classes",
    "ssd_detections",
    "ultraface_priors",
    "ultraface_decode",
    "class_fractions",
    "stylized_image",
    "blob_region",
    "read_image",
    "write_image",
    "entry_for_files",
    "resolve_model",
    "FNS_MEAN",
    "ULTRAFACE_MIN_BOXES",
    "ULTRAFACE_STRIDES",
]

TASKS = ("classify", "detect", "face", "segment", "stylize")
FNS_MEAN = (103.939, 116.779, 123.68)  # jcjohnson/fast-neural-style's BGR ImageNet mean (OpenCV sample)
ULTRAFACE_MIN_BOXES = ((10.0, 16.0, 24.0), (32.0, 48.0), (64.0, 96.0), (128.0, 192.0, 256.0))
ULTRAFACE_STRIDES = (8.0, 16.0, 32.0, 64.0)
ULTRAFACE_VARIANCES = (0.1, 0.2)  # center, size
_DEFAULTS = tolerances.DECODE_THRESHOLDS  # (score, NMS) per decoder, with their sources
_OPTIONS = frozenset({"threshold", "nms_threshold", "top_k", "preprocess", "size", "label_offset"})
_WNID = re.compile(r"^n\d{8}\s+")


class PipelineError(RefnetError, ValueError):
    """A task cannot be run as asked (image unreadable, outputs the task cannot decode, ...)."""


@dataclass
class TaskResult:
    """One task run: the input ``image`` (BGR uint8), the ``blob`` fed to the net, the net's
    ``outputs``, the task's ``data`` (see the module docstring) and a printable ``summary``."""

    task: str
    image: np.ndarray
    blob: np.ndarray
    outputs: dict[str, np.ndarray]
    data: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def __repr__(self) -> str:  # the dataclass repr would print every array in full
        head = self.summary.splitlines()[0] if self.summary else self.task
        n = {"classify": len(self.data.get("top", ())), "detect": len(self.data.get("boxes", ())),
             "face": len(self.data.get("boxes", ())), "segment": len(self.data.get("fractions", {}))}.get(self.task)
        what = {"classify": "classes", "detect": "detections", "face": "faces", "segment": "classes present"}
        extra = f", {n} {what[self.task]}" if n is not None else ""
        return (f"<TaskResult {self.task}{extra}; image {self.image.shape[1]}x{self.image.shape[0]}, blob "
                f"{tuple(self.blob.shape)}{', seeded weights' if self.data.get('seeded') else ''}: {head!r}>")


# ---- inputs -----------------------------------------------------------------------------------------
def _check_image(image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image_bgr must be a numpy.ndarray, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image_bgr must be uint8 (as cv2.imread returns), got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ShapeError("image_bgr is empty", expected="H, W > 0", got=f"shape {image.shape}")
        return draw.as_bgr(image, "image_bgr")
    raise ShapeError("image_bgr must be H x W (gray) or H x W x C with C in 1, 3, 4",
                     expected="(H, W[, C])", got=f"shape {image.shape}")


def default_preprocess(net: Any, task: str) -> Preprocess:
    """Preprocessing for a net without a zoo entry: ``stylize`` uses fast-neural-style's mean
    subtraction at the image size; otherwise the declared input size (else the image size), one
    gray channel when the net declares one, and the framework's own input convention -- Darknet
    RGB in [0, 1] (its load_image), Caffe/Torch the raw BGR values (cv2.dnn.blobFromImage defaults)."""
    if task == "stylize":
        return Preprocess(1.0, None, FNS_MEAN, False)
    if two_stage.is_two_stage(net):  # Faster R-CNN / R-FCN: data + im_info, py-faster-rcnn's mean
        shape = next((net.input_shapes.get(k) for k in net.input_names if k != "im_info"), None)
        ok = shape is not None and len(shape) == 4 and shape[2] > 0 and shape[3] > 0
        return Preprocess(1.0, (int(shape[3]), int(shape[2])) if ok else None, two_stage.MEAN, False)
    shape = None
    if len(net.input_names) == 1:
        shape = net.input_shapes.get(net.input_names[0])
    size = None
    gray = False
    if shape is not None and len(shape) == 4:
        if shape[2] > 0 and shape[3] > 0:
            size = (int(shape[3]), int(shape[2]))
        gray = shape[1] == 1
    if getattr(net.graph, "framework", "") == "darknet":
        return Preprocess(1 / 255, size, (0.0, 0.0, 0.0), True, gray=gray)
    return Preprocess(1.0, size, (0.0, 0.0, 0.0), False, gray=gray)


def _resolve_labels(labels: Sequence[str] | str | os.PathLike | None, entry: ModelEntry | None
                    ) -> list[str] | None:
    if labels is None:
        if entry is None or entry.labels is None:
            return None
        from refnet import zoo

        names = zoo.read_labels(entry)
    elif isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        if not p.is_file():
            raise FileNotFoundError(f"labels file not found: {p}")
        names = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    else:
        names = [str(s) for s in labels]
    if names is None:
        return None
    return [_WNID.sub("", s) for s in names]  # "n01440764 tench, Tinca tinca" -> "tench, Tinca tinca"


def _label(i: int, labels: Sequence[str] | None, offset: int, fallback: str = "class") -> str:
    j = int(i) - offset
    if labels is not None and 0 <= j < len(labels):
        return labels[j]
    if offset > 0 and j < 0:
        return "background"
    return f"{fallback} {int(i)}"


def _labels_note(labels: Sequence[str] | None, n_classes: int, offset: int) -> list[str]:
    """A line saying that the labels do not fit the net's classes (a 20-name VOC file on an 80-class
    COCO net names every detection wrongly, without a word otherwise); none when they fit."""
    if labels is None or n_classes <= 0 or len(labels) == n_classes - offset:
        return []
    named = f"{n_classes - offset} classes" + (f" after {offset} background" if offset else "")
    rest = ("classes past the list show as 'class N'" if len(labels) < n_classes - offset
            else f"the last {len(labels) - (n_classes - offset)} names are never used")
    return [f"note: {len(labels)} labels for the net's {named}: the labels may belong to another net; {rest}"]


def blob_region(image_hw: Sequence[int], pre: Preprocess) -> tuple[float, float, float, float]:
    """The rectangle (x0, y0, x1, y1) of the image, in pixels, that the blob shows: the whole image
    unless ``pre.crop`` (cv2.dnn.blobFromImage resizes to cover the size, then centre-crops)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if pre.size is None or not pre.crop or tuple(pre.size) in ((w, h), (0, 0)):
        return (0.0, 0.0, float(w), float(h))
    tw, th = int(pre.size[0]), int(pre.size[1])
    f = float(np.float32(max(tw / w, th / h)))  # blob_from_image's factor
    rw, rh = round(w * f), round(h * f)
    x0, y0 = int(0.5 * (rw - tw)), int(0.5 * (rh - th))
    return (x0 / f, y0 / f, (x0 + tw) / f, (y0 + th) / f)


def _to_pixels(rel: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = region
    s = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    return np.asarray(rel, np.float64).reshape(-1, 4) * s + np.array([x0, y0, x0, y0])


# ---- post-processing building blocks (pure array functions) -------------------------------------
def top_classes(scores: np.ndarray, k: int = 5, labels: Sequence[str] | None = None, label_offset: int = 0
                ) -> list[tuple[int, str, float]]:
    """The ``k`` best classes of one image's ``scores`` as (index, label, score), best first
    (ties: lower index first; NaN scores rank last)."""
    p = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = int(k)
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    order = np.argsort(-p, kind="stable")[:k]
    return [(int(i), _label(int(i), labels, label_offset), float(p[i])) for i in order]


def ultraface_priors(input_wh: Sequence[int], min_boxes: Sequence[Sequence[float]] = ULTRAFACE_MIN_BOXES,
                     strides: Sequence[float] = ULTRAFACE_STRIDES) -> np.ndarray:
    """Ultra-Light-Fast face detector priors (cx, cy, w, h), relative, clipped to [0, 1]: per stride a
    ceil(W/s) x ceil(H/s) grid, cells row by row, the stride's min_boxes per cell (its generate_priors)."""
    w, h = float(input_wh[0]), float(input_wh[1])
    parts = []
    for s, sizes in zip(strides, min_boxes):
        fw, fh = math.ceil(w / s), math.ceil(h / s)
        cx = (np.arange(fw) + 0.5) / (w / s)
        cy = (np.arange(fh) + 0.5) / (h / s)
        sz = np.asarray(sizes, np.float64)
        p = np.empty((fh, fw, len(sz), 4))
        p[..., 0] = cx[None, :, None]
        p[..., 1] = cy[:, None, None]
        p[..., 2] = sz / w
        p[..., 3] = sz / h
        parts.append(p.reshape(-1, 4))
    return np.clip(np.concatenate(parts), 0.0, 1.0)


def ultraface_decode(boxes: np.ndarray, scores: np.ndarray, input_wh: Sequence[int], threshold: float = 0.7,
                     nms_threshold: float = 0.3, candidates: int = 200
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultra-Light-Fast raw heads -> faces: decode ``boxes`` (1, P, 4) against :func:`ultraface_priors`
    (centre variance 0.1, size variance 0.2), then per class >= 1 keep scores > ``threshold`` and run
    greedy NMS over the ``candidates`` best (IoU > ``nms_threshold`` suppresses; its hard_nms).
    Returns relative corner boxes (K, 4), scores, class_ids, best first."""
    from refnet.kernels.detection import nms

    loc = np.asarray(boxes, np.float64)
    conf = np.asarray(scores, np.float64)
    if loc.ndim == 3:
        loc = loc[0]
    if conf.ndim == 3:
        conf = conf[0]
    pri = ultraface_priors(input_wh)
    if loc.shape != (len(pri), 4) or conf.ndim != 2 or conf.shape[0] != len(pri):
        raise ShapeError("ultraface heads do not match the priors of this input size",
                         expected=f"boxes (1, {len(pri)}, 4), scores (1, {len(pri)}, C) for input {tuple(input_wh)}",
                         got=(loc.shape, conf.shape))
    cv, sv = ULTRAFACE_VARIANCES
    with np.errstate(over="ignore", invalid="ignore"):
        cxy = loc[:, :2] * cv * pri[:, 2:] + pri[:, :2]
        wh = np.exp(loc[:, 2:] * sv) * pri[:, 2:]
    corners = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1)
    out_b, out_s, out_c = [], [], []
    for c in range(1, conf.shape[1]):
        keep = nms(corners, conf[:, c], nms_threshold, score_threshold=threshold, top_k=candidates)
        out_b.append(corners[keep])
        out_s.append(conf[keep, c])
        out_c.append(np.full(len(keep), c, np.int64))
    b = np.concatenate(out_b) if out_b else np.zeros((0, 4))
    s = np.concatenate(out_s) if out_s else np.zeros(0)
    c = np.concatenate(out_c) if out_c else np.zeros(0, np.int64)
    order = np.argsort(-s, kind="stable")
    return b[order], s[order], c[order]


def class_fractions(class_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the pixels of ``class_map`` in each of ``num_classes`` classes (ids outside are ignored)."""
    cm = np.asarray(class_map).reshape(-1)
    if cm.size == 0:
        return np.zeros(num_classes)
    cm = cm[(cm >= 0) & (cm < num_classes)]
    return np.bincount(cm.astype(np.int64), minlength=num_classes)[:num_classes] / float(np.asarray(class_map).size)


def stylized_image(output: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Undo the preprocessing of a fast-neural-style output ``(1, 3, h, w)``: divide by the scale, add the
    mean back, swap back to BGR if the blob was RGB (jcjohnson's OpenCV sample); returns (uint8 image
    clipped to [0, 255] with NaN as 0, float64 image before clipping)."""
    o = np.asarray(output, np.float64)
    if o.ndim != 4 or o.shape[0] != 1 or o.shape[1] != 3:
        raise ShapeError("a stylisation net must output one 3-channel image", expected="(1, 3, H, W)", got=o.shape)
    mean = np.zeros(3)
    m = np.atleast_1d(np.asarray(pre.mean, np.float64))
    mean[: min(3, m.size)] = m[:3]
    img = o[0].transpose(1, 2, 0) / float(pre.scale) + mean
    if pre.swap_rb:
        img = img[:, :, ::-1]
    u8 = np.rint(np.clip(np.nan_to_num(img, nan=0.0), 0.0, 255.0)).astype(np.uint8)
    return np.ascontiguousarray(u8), np.ascontiguousarray(img)


# ---- the tasks ------------------------------------------------------------------------------------------
def _producer_op(net: Any, name: str) -> str:
    try:
        return net.graph.node(name.split(":")[0]).op
    except KeyError:
        return ""


def _detect_decoder(net: Any) -> tuple[str, list[str]]:
    outs = list(net.output_names)
    ops = {n: _producer_op(net, n) for n in outs}
    ssd = [n for n in outs if ops[n] == "detection_output"]
    if ssd and two_stage.is_two_stage(net):
        return "frcnn", ssd[:1]
    if ssd:
        return "ssd", ssd[:1]
    yolo = [n for n in outs if ops[n] in ("region", "yolo")]
    if yolo:
        return "yolo", yolo
    if {"boxes", "scores"} <= set(outs):
        return "ultraface", ["boxes", "scores"]
    if {"prob1", "conv4-2"} <= set(outs):
        return "mtcnn-pnet", ["prob1", "conv4-2"]
    raise PipelineError(
        f"cannot decode detections from the outputs {outs} (ops {sorted(set(ops.values()))}): expected a "
        "DetectionOutput (SSD), region/yolo heads (Darknet), `boxes`+`scores` heads (ultraface) or MTCNN "
        "P-Net's `prob1`+`conv4-2`")


def _forward(net: Any, blob: np.ndarray, precision: str, names: Sequence[str] | None = None,
             im_scale: float = 1.0) -> dict[str, np.ndarray]:
    if two_stage.is_two_stage(net):  # the image and its im_info row [H, W, scale]
        return net.forward(two_stage.feeds(net, blob, im_scale), outputs=None if names is None else list(names),
                           precision=precision)
    if len(net.input_names) != 1:
        raise PipelineError(f"the task pipelines feed one image; this net has inputs {list(net.input_names)}")
    return net.forward(blob, outputs=None if names is None else list(names), precision=precision)


def _classify(net, image, blob, outputs, pre, labels, offset, opts, data) -> str:
    name = next(iter(outputs))
    out = np.asarray(outputs[name], np.float64)
    p = out.reshape(out.shape[0], -1)[0] if out.ndim > 1 else out.reshape(-1)
    op = _producer_op(net, name)
    applied = False
    if op == "log_softmax":
        p, applied = np.exp(p), True
    elif op != "softmax" and not (np.all(p >= 0) and abs(float(np.sum(p)) - 1.0) < 1e-3):
        e = np.exp(p - np.max(p))
        p, applied = e / np.sum(e), True
    top = top_classes(p, int(opts.get("top_k", 5)), labels, offset)
    data.update(top=top, probabilities=p, softmax_applied=applied, output=name)
    lines = _labels_note(labels, p.size, offset)
    lines += [f"top-{len(top)} of {p.size} classes ({name}{', softmax applied' if applied else ''}):"]
    lines += [f"  {r}. {_prob(prob, 4):>9s}  [{i}] {lab}" for r, (i, lab, prob) in enumerate(top, 1)]
    return "\n".join(lines)


def _mtcnn_pnet(net, image, pre, precision, thr, nms_thr) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """MTCNN P-Net over an image pyramid (min face 20 px, factor 0.709): cells with face probability
    >= ``thr`` give 12x12 windows (stride 2), NMS 0.5 per scale and ``nms_thr`` over all scales, then
    the box regression (kpzhang93 MTCNN detect_face.m, first stage only; continuous-coordinate IoU)."""
    from refnet.kernels.detection import nms

    h, w = image.shape[:2]
    m = 12.0 / 20.0
    scales = []
    side = min(h, w) * m
    while side >= 12:
        scales.append(m * 0.709 ** len(scales))
        side *= 0.709
    allb, alls, blobs, outs = [], [], None, None
    for s in scales:
        hs, ws = math.ceil(h * s), math.ceil(w * s)
        blob = pre.blob(image, size=(ws, hs))
        out = _forward(net, blob, precision, ["prob1", "conv4-2"])
        if blobs is None:
            blobs, outs = blob, out
        prob, reg = out["prob1"][0, 1], out["conv4-2"][0]
        if pre.layout == "NCWH":  # maps come out (W', H'): back to (H', W')
            prob, reg = prob.T, reg.transpose(0, 2, 1)
        ys, xs = np.nonzero(prob >= thr)
        if len(ys) == 0:
            continue
        b = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], axis=1) / s
        sc = prob[ys, xs].astype(np.float64)
        keep = nms(b, sc, 0.5)
        allb.append(np.concatenate([b[keep], reg[:, ys, xs].T[keep].astype(np.float64)], axis=1))
        alls.append(sc[keep])
    if not allb:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), {"blob": blobs, "outputs": outs,
                                                                       "scales": scales}
    b = np.concatenate(allb)
    sc = np.concatenate(alls)
    keep = nms(b[:, :4], sc, nms_thr)
    b, sc = b[keep], sc[keep]
    bw = (b[:, 2] - b[:, 0])[:, None]
    bh = (b[:, 3] - b[:, 1])[:, None]
    boxes = b[:, :4] + b[:, 4:8] * np.concatenate([bw, bh, bw, bh], axis=1)
    order = np.argsort(-sc, kind="stable")
    return boxes[order], sc[order], np.ones(len(order), np.int64), {"blob": blobs, "outputs": outs, "scales": scales}


def _detect(net, image, blob, outputs, pre, labels, offset, opts, data, task, decoder, found=None) -> str:
    thr_d, nms_d = _DEFAULTS[decoder]
    n_cls = 0  # the net's number of classes, where the decoder knows it (for the labels check)
    thr = float(opts.get("threshold", thr_d))
    nms_thr = float(opts.get("nms_threshold", nms_d))
    region = blob_region(image.shape[:2], pre)
    if decoder in ("ssd", "frcnn"):  # NMS ran inside the DetectionOutput layer, with its own threshold
        name = next(iter(outputs))
        try:
            nms_thr = float(net.graph.node(name).attrs.get("nms_threshold", math.nan))
        except KeyError:
            nms_thr = math.nan
        if decoder == "frcnn":  # per-class rows in blob pixels
            boxes, scores, ids = two_stage.detections(outputs[name], thr, blob.shape[2:], region)
            try:
                n_cls = int(net.graph.node(name).attrs.get("num_classes", 0))
            except KeyError:
                n_cls = 0
            if labels is not None and offset == 0 and "label_offset" not in opts and len(labels) == n_cls - 1:
                offset = 1  # e.g. VOC: 20 names for 21 classes, class 0 is the background
                data["label_offset"] = 1
        else:
            try:
                n_cls = int(net.graph.node(name).attrs.get("num_classes", 0))
            except KeyError:
                n_cls = 0
            rel, scores, ids = ssd_detections(outputs[name], thr)
            order = np.argsort(-scores, kind="stable")
            boxes, scores, ids = _to_pixels(rel[order], region), scores[order], ids[order]
    elif decoder == "yolo":
        from refnet.kernels.yolo import yolo_detections

        heads = [np.asarray(v) for v in outputs.values()]
        n_cls = heads[0].shape[-1] - 5 if heads and heads[0].ndim >= 2 else 0  # rows [cx, cy, w, h, obj, classes]
        d = yolo_detections(heads, conf_threshold=thr, nms_threshold=nms_thr)
        boxes, scores, ids = _to_pixels(d["boxes"], region), d["scores"], d["class_ids"]
    elif decoder == "ultraface":
        rel, scores, ids = ultraface_decode(outputs["boxes"], outputs["scores"], (blob.shape[3], blob.shape[2]),
                                            thr, nms_thr)
        boxes = _to_pixels(rel, region)
    else:  # mtcnn-pnet: found by _mtcnn_pnet, boxes already in image pixels
        boxes, scores, ids = found
    fallback = "face" if task == "face" else "class"
    names = [_label(i, labels, offset, fallback) if (labels or task != "face") else "face" for i in ids]
    data.update(decoder=decoder, boxes=boxes, scores=np.asarray(scores, np.float64), class_ids=ids.astype(np.int64),
                labels=names, threshold=thr, nms_threshold=nms_thr,
                detections=[{"label": n, "class_id": int(c), "score": float(s), "box": tuple(float(v) for v in b)}
                            for n, c, s, b in zip(names, ids, scores, boxes)])
    what = ("face" if task == "face" else "detection") + ("" if len(names) == 1 else "s")
    cmp = ">"
    if decoder == "mtcnn-pnet":
        what = (f"face proposal{'' if len(names) == 1 else 's'} (MTCNN stage 1, P-Net only: "
                "`refnet run --zoo mtcnn` runs the whole cascade)")
        cmp = ">="
    where = "in the DetectionOutput layer " if decoder in ("ssd", "frcnn") else ""
    lines = _labels_note(labels, n_cls, offset) if task == "detect" else []
    lines += [f"{len(names)} {what} (score {cmp} {thr:g}, {decoder} decoder, NMS {where}{nms_thr:.3g}):"]
    for n, s, b in list(zip(names, scores, boxes))[:25]:
        x1, y1, x2, y2 = (f"{v:.0f}" if np.isfinite(v) else "nan" for v in b)
        lines.append(f"  {n:16s} {s:6.3f}  box ({x1}, {y1})-({x2}, {y2})")
    if len(names) > 25:
        lines.append(f"  ... {len(names) - 25} more")
    return "\n".join(lines)


def _segment(net, image, blob, outputs, pre, labels, offset, opts, data) -> str:
    name = next(iter(outputs))
    out = np.asarray(outputs[name])
    if out.ndim != 4 or out.shape[0] != 1:
        raise ShapeError("segmentation needs a (1, C, H, W) score map", layer=name, expected="(1, C, H, W)",
                         got=out.shape)
    n_cls = out.shape[1]
    class_map = np.argmax(out[0], axis=0).astype(np.int64)
    if pre.layout == "NCWH":
        class_map = class_map.T
    if labels is not None and offset == 0 and "label_offset" not in opts and len(labels) == n_cls - 1:
        offset = 1  # e.g. VOC: 20 names for 21 channels, channel 0 is the background
        data["label_offset"] = 1
    names = [_label(i, labels, offset) for i in range(n_cls)]
    frac = class_fractions(class_map, n_cls)
    order = [int(i) for i in np.argsort(-frac, kind="stable") if frac[i] > 0]
    data.update(class_map=class_map, class_names=names, fractions={names[i]: float(frac[i]) for i in order},
                class_ids_present=order, region=blob_region(image.shape[:2], pre), output=name)
    lines = _labels_note(labels, n_cls, offset)
    lines += [f"{len(order)} of {n_cls} classes present ({class_map.shape[1]}x{class_map.shape[0]} map, {name}):"]
    lines += [f"  {names[i]:16s} {_percent(frac[i], 2):>7s}" for i in order]
    return "\n".join(lines)


def _stylize(net, image, blob, outputs, pre, labels, offset, opts, data) -> str:
    name = next(iter(outputs))
    u8, f = stylized_image(outputs[name], pre)
    with np.errstate(invalid="ignore"):
        clipped = float(np.mean((f < 0) | (f > 255) | ~np.isfinite(f)))
    data.update(stylized=u8, stylized_float=f, clipped_fraction=clipped, output=name)
    finite = f[np.isfinite(f)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    return (f"stylised image {u8.shape[1]}x{u8.shape[0]} ({name}); values before clipping {lo:.1f}..{hi:.1f}, "
            f"{100 * clipped:.2f}% clipped to [0, 255]")


def run_task(net: Any, image_bgr: np.ndarray, task: str, *, entry: ModelEntry | None = None,
             labels: Sequence[str] | str | os.PathLike | None = None, precision: str = "float32",
             **opts: Any) -> TaskResult:
    """Run ``task`` (one of :data:`TASKS`) with ``net`` on a BGR uint8 image.

    ``entry`` supplies preprocessing, labels and the label offset; ``labels`` (names or a file path)
    overrides its labels. Options: ``threshold`` and ``nms_threshold`` (detect/face; defaults per
    decoder: SSD 0.5, YOLO 0.5/0.45, ultraface 0.7/0.3, MTCNN P-Net 0.6/0.7; an SSD net's NMS runs
    inside its DetectionOutput layer), ``top_k`` (classify, 5), ``preprocess`` (a
    :class:`refnet.zoo.Preprocess`; its ``size`` None means the net's declared input size, else the
    image size), ``size`` ((width, height) of the blob), ``label_offset`` (output index of the first
    label; a segmentation net with one channel more than labels gets 1, channel 0 = "background").
    """
    if not isinstance(task, str) or task not in TASKS:
        raise PipelineError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    unknown = sorted(set(opts) - _OPTIONS)
    if unknown:
        raise TypeError(f"run_task() got unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    image = _check_image(image_bgr)
    from refnet.taskcheck import check_task

    check_task(net, task, entry)  # e.g. classify on a YOLO net: a clear error instead of nonsense
    pre = opts.get("preprocess") or (entry.preprocess if entry is not None else default_preprocess(net, task))
    if not isinstance(pre, Preprocess):
        raise TypeError(f"preprocess must be a refnet.zoo.Preprocess, got {type(pre).__name__}")
    if opts.get("size") is not None:
        size = tuple(int(v) for v in opts["size"])
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be (width, height) with positive values, got {opts['size']!r}")
        pre = dataclasses.replace(pre, size=size)
    elif pre.size is None and task != "stylize":  # the declared input size, when the net has one
        declared = default_preprocess(net, task).size
        if declared is not None:
            pre = dataclasses.replace(pre, size=declared)
    names = _resolve_labels(labels, entry)
    offset = int(opts.get("label_offset", entry.label_offset if entry is not None else 0))
    model = entry.name if entry is not None else Path(getattr(net.graph, "source", "") or "model").name
    data: dict[str, Any] = {"model": model, "precision": precision, "preprocess": pre, "label_offset": offset,
                            "seeded": bool(getattr(entry, "seeded", False))}

    if task in ("detect", "face"):
        decoder, heads = _detect_decoder(net)
        if decoder == "mtcnn-pnet":
            thr = float(opts.get("threshold", _DEFAULTS[decoder][0]))
            nms_thr = float(opts.get("nms_threshold", _DEFAULTS[decoder][1]))
            *found, extra = _mtcnn_pnet(net, image, pre, precision, thr, nms_thr)
            data["scales"] = extra["scales"]
            blob = extra["blob"] if extra["blob"] is not None else pre.blob(image)
            outputs = extra["outputs"] or {}
        else:
            found = None
            blob = pre.blob(image)
            region = blob_region(image.shape[:2], pre)
            outputs = _forward(net, blob, precision, heads, im_scale=blob.shape[2] / max(region[3] - region[1], 1e-9))
        body = _detect(net, image, blob, outputs, pre, names, offset, opts, data, task, decoder, found)
    else:
        blob = pre.blob(image)
        outputs = _forward(net, blob, precision)
        body = {"classify": _classify, "segment": _segment, "stylize": _stylize}[task](
            net, image, blob, outputs, pre, names, offset, opts, data)
    header = f"{task}: {model} on a {image.shape[1]}x{image.shape[0]} image, blob {tuple(blob.shape)}, {precision}"
    return TaskResult(task, image, blob, dict(outputs), data, header + "\n" + body)


# ---- pictures ------------------------------------------------------------------------------------------
_PANEL_W = 340


def _prob(p: float, digits: int = 4) -> str:
    return f"{p:.{digits}f}" if not (0 < p < 10.0 ** -digits) else f"{p:.{max(digits - 2, 0)}e}"


def _percent(f: float, digits: int = 1) -> str:
    tiny = 10.0 ** -(digits + 2)
    return f"{100 * f:.{digits}f}%" if not (0 < f < tiny) else f"<{100 * tiny:.{digits}f}%"


def _panel_height(n_rows: int, scale: float) -> int:
    (_, th), base = cv2.getTextSize("Ag", draw.FONT, scale, 1)
    return 8 + (th + base + 14) + n_rows * (th + base + 10) + 8


def render(result: TaskResult) -> np.ndarray:
    """The picture of a result (see :func:`_render`); with seeded random weights
    (``result.data["seeded"]``) a banner on top says that its labels are meaningless."""
    pic = _render(result)
    if result.data.get("seeded"):
        from refnet.draw import seeded_banner

        pic = seeded_banner(pic)
    return pic


def _render(result: TaskResult) -> np.ndarray:
    """The picture of a result (BGR uint8): detect/face -> boxes with labels and scores on the image
    (image size); classify -> the image (enlarged when its shorter side is < 256 px) with a top-k legend
    panel on its right; segment -> the class colours blended over the image plus a legend of the classes
    present with their pixel fractions; stylize -> the stylised image."""
    d = result.data
    if result.task in ("detect", "face"):
        ids = np.asarray(d["class_ids"], np.int64)
        n = int(ids.max()) + 1 if ids.size else 1
        cols = draw.palette(max(n, 1))
        colors = cols[np.clip(ids, 0, None)] if ids.size else np.zeros((0, 3), np.uint8)
        texts = [f"{lab} {s:.2f}" for lab, s in zip(d["labels"], d["scores"])]
        return draw.draw_boxes(result.image, d["boxes"], texts, colors)
    if result.task == "classify":
        img = draw.upscale_small(result.image)
        scale = 0.55
        rows = [(f"{_percent(p)}\t{lab}", None, p) for _, lab, p in d["top"]]
        panel = draw.legend_panel(rows, _PANEL_W, max(img.shape[0], _panel_height(len(rows), scale)),
                                  f"top-{len(rows)} ({d['model']})", scale)
        return draw.attach_panel(img, panel)
    if result.task == "segment":
        names = d["class_names"]
        colors = draw.class_colors(names, len(names))
        x0, y0, x1, y1 = (int(round(v)) for v in d["region"])
        over = draw.overlay_classes(result.image, d["class_map"], colors, region=(x0, y0, x1, y1))
        over = draw.upscale_small(over)
        scale = 0.55
        rows = [(f"{_percent(d['fractions'][names[i]])}\t{names[i]}", colors[i], d["fractions"][names[i]])
                for i in d["class_ids_present"]]
        panel = draw.legend_panel(rows, _PANEL_W, max(over.shape[0], _panel_height(len(rows), scale)),
                                  "classes (pixel fraction)", scale)
        return draw.attach_panel(over, panel)
    if result.task == "stylize":
        return d["stylized"].copy()
    raise PipelineError(f"unknown task {result.task!r}; tasks are {', '.join(TASKS)}")


# ---- files: images, models (used by `refnet run`) ---------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to BGR uint8 (cv2.imdecode); FileNotFoundError / PipelineError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    from refnet.runtime.imagesize import check_image_file

    check_image_file(p)  # BudgetError before decoding a picture over the memory budget (bombs)
    buf = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise PipelineError(f"cannot decode image {p} (not an image file, or a format OpenCV cannot read)")
    return img


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode ``image`` by the file extension (cv2.imencode) and write it; PipelineError when that fails."""
    p = Path(path)
    ext = p.suffix.lower() or ".png"
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error as e:
        raise PipelineError(f"cannot encode {p}: OpenCV does not write {ext!r} files") from e
    if not ok:
        raise PipelineError(f"cannot encode {p} as {ext}")
    try:
        p.write_bytes(buf.tobytes())
    except OSError as e:
        raise PipelineError(f"cannot write {p}: {e.strerror or e}") from e
    return p


def entry_for_files(paths: Sequence[str | os.PathLike]) -> tuple[ModelEntry | None, Path | None]:
    """The entry describing model files ``paths``: the sidecar of a model written by ``refnet generate``
    (``<stem>.refnet.json`` beside a file, naming it), else the zoo entry whose architecture file the
    given ``paths`` include (matched by its relative path at the end of a given path); and the folder
    that entry's relative paths start from; (None, None) when none matches."""
    from refnet import zoo
    from refnet.generate import sidecar_entry, sidecar_for

    for p in paths:  # a model written by `refnet generate` describes itself
        side = sidecar_for(p)
        if side is not None:
            return sidecar_entry(side), side.parent
    given = [Path(p).resolve().as_posix() for p in paths]
    for e in zoo.entries():
        for f in e.files:
            if f.role != "model":
                continue
            for g in given:
                if g.endswith("/" + f.path):
                    return e, Path(g[: -len(f.path) - 1])
    return None, None


def resolve_model(files: Sequence[str | os.PathLike] = (), zoo_name: str | None = None,
                  ) -> tuple[Any, ModelEntry | None, list[str] | None]:
    """Load a model from its files or a zoo name: (Net, entry or None, labels or None), through
    :func:`refnet.resolver.resolve_model` (sidecars of ``refnet generate`` included)."""
    from refnet.resolver import check_model_choice
    from refnet.resolver import resolve_model as _resolve

    check_model_choice(files, zoo_name, PipelineError)
    rm = _resolve([str(f) for f in files], zoo_name)
    return rm.net, rm.entry, rm.labels
