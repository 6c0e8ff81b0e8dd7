"""Task-level agreement: do the final outputs mean the same thing?

Per output kind (:func:`infer_tasks`): top-k classes, detections matched one to one by IoU,
argmax-map pixel agreement, stylised-image PSNR. The checks are tie-aware: a top-1 class or an
argmax pixel that flips where the reference's top two scores are within the tie window is not a
disagreement, and detections whose scores tie (with each other, at the keep-top-k cut or at the
confidence threshold) are matched as a set -- which of several tied boxes survives NMS or the
cut is arbitrary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from refnet import tolerances
from refnet.kernels.detection import ssd_detections  # DetectionOutput rows: one reader
from refnet.ops.registry import attrs

__all__ = ["infer_tasks", "topk_agreement", "match_detections", "ssd_detections", "argmax_agreement",
           "image_agreement", "task_result"]


def infer_tasks(net: Any, task: str | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """``[(kind, outputs)]`` for the net's outputs: ``detect_ssd``, ``detect_yolo``, ``classify``,
    ``segment``, ``stylize``; the zoo task decides where the op and shape leave a choice."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        shapes = net.infer_shapes(input_shapes)
    except Exception:  # undeclared input shapes: decide by op alone
        shapes = {}
    ops = {n.name: n.op for n in net.graph.nodes}
    out: list[tuple[str, tuple[str, ...]]] = []
    yolo = tuple(o for o in net.output_names if ops.get(o) in ("region", "yolo"))
    if yolo:
        out.append(("detect_yolo", yolo))
    raw = ()
    if not yolo and {"boxes", "scores"} <= set(net.output_names) and not any(
            ops.get(o) == "detection_output" for o in net.output_names):
        raw = ("boxes", "scores")  # Ultra-Light-Fast raw SSD heads, decoded against its own priors
        out.append(("detect_ultraface", raw))
    for o in net.output_names:
        op = ops.get(o, "")
        if op in ("region", "yolo") or o in raw:
            continue
        if op == "detection_output":  # Faster R-CNN / R-FCN (data + im_info): per-class boxes in blob pixels
            out.append(("detect_frcnn" if "im_info" in net.input_names else "detect_ssd", (o,)))
            continue
        s = shapes.get(o)
        spatial = s is not None and len(s) == 4 and s[2] * s[3] > 1
        if task == "stylize" and (s is None or spatial):
            out.append(("stylize", (o,)))
        elif task == "segment" and (s is None or spatial):
            out.append(("segment", (o,)))
        elif s is not None and (len(s) == 2 or (len(s) == 4 and s[2] == s[3] == 1)) and s[1] > 1 and (
                task == "classify" or op in ("softmax", "log_softmax")):
            out.append(("classify", (o,)))
        elif spatial and s[1] > 1 and op in ("softmax", "log_softmax"):
            out.append(("segment", (o,)))
    return out


def topk_agreement(cand: np.ndarray, ref: np.ndarray, k: int = 5, labels: Sequence[str] | None = None,
                   label_offset: int = 0, tie_tol: float = 0.0) -> dict[str, Any]:
    """Top-k classes of ``cand`` vs ``ref`` (rows = images, columns = classes; trailing 1x1 dropped).

    ``agree`` when every image's top-1 class is the same, or differs only where the reference's
    top two scores are within ``tie_tol`` (a tie the tolerance cannot resolve).
    """
    r = np.asarray(ref, np.float64).reshape(ref.shape[0], -1)
    c = np.asarray(cand, np.float64).reshape(r.shape)
    k = max(1, min(k, r.shape[1]))
    rt = np.argsort(-r, axis=1, kind="stable")[:, :k]
    ct = np.argsort(-c, axis=1, kind="stable")[:, :k]
    top1_same = rt[:, 0] == ct[:, 0]
    sr = np.sort(r, axis=1)
    margin = sr[:, -1] - sr[:, -2] if r.shape[1] > 1 else np.full(r.shape[0], np.inf)
    ties = ~top1_same & (margin <= tie_tol)
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(rt, ct)]

    def name(i: int) -> str:
        j = i - label_offset
        if labels is None or not 0 <= j < len(labels):
            return str(i)
        return re.sub(r"^n\d{8}\s+", "", labels[j]).split(",")[0].strip()  # "n04266014 space shuttle" -> name

    top = [[{"class": int(i), "label": name(int(i)), "score": float(r[n, i])} for i in rt[n]] for n in range(len(r))]
    agree = bool(np.all(top1_same | ties))
    first = top[0][0]
    summary = (f"top-1 {first['label']!r} ({first['score']:.4g}) " + ("same" if top1_same.all() else "differs")
               + f", top-{k} overlap {min(overlap)}/{k}")
    return {"agree": agree, "summary": summary, "k": k, "top1_same": [bool(v) for v in top1_same],
            "topk_overlap": overlap, "ties": int(ties.sum()), "max_abs_score_diff": float(np.max(np.abs(c - r))),
            "reference_topk": top, "candidate_top1": [int(v) for v in ct[:, 0]]}


def match_detections(ref_boxes: np.ndarray, ref_scores: np.ndarray, ref_classes: np.ndarray,
                     boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, *, iou_min: float = 0.5,
                     threshold: float | None = None, margin: float = tolerances.DETECTION_SCORE_MARGIN,
                     cut: float | None = None) -> dict[str, Any]:
    """Greedy one-to-one matching of detections (same class, best IoU >= ``iou_min``, reference
    in descending score order), tie-aware.

    ``agree`` when every detection is matched with IoU >= 0.9, except where scores tie within
    ``margin``: detections near ``threshold`` (they may fall on either side of it), near ``cut``
    (the lowest kept score when the keep-top-k list is full: which of the tied detections make
    the list is arbitrary), and unmatched reference and candidate detections whose scores tie
    with each other (NMS among tied boxes may keep another of them) are matched as a set; a
    matched pair may overlap less when its score is tied with another reference detection.
    """
    from refnet.kernels import iou

    rb = np.asarray(ref_boxes, np.float64).reshape(-1, 4)
    cb = np.asarray(boxes, np.float64).reshape(-1, 4)
    rs, cs = np.asarray(ref_scores, np.float64).reshape(-1), np.asarray(scores, np.float64).reshape(-1)
    rc, cc = np.asarray(ref_classes).reshape(-1), np.asarray(classes).reshape(-1)
    used = np.zeros(len(cb), bool)
    ious = iou(rb, cb) if len(rb) and len(cb) else np.zeros((len(rb), len(cb)))
    pairs: list[tuple[int, int, float]] = []
    for i in np.argsort(-rs, kind="stable"):
        cand = np.flatnonzero((cc == rc[i]) & ~used)
        if cand.size == 0:
            continue
        j = int(cand[np.argmax(ious[i, cand])])
        if ious[i, j] >= iou_min:
            used[j] = True
            pairs.append((int(i), j, float(ious[i, j])))
    matched_ref = {p[0] for p in pairs}
    un_ref = [int(i) for i in range(len(rb)) if i not in matched_ref]
    un_cand = [int(j) for j in range(len(cb)) if not used[j]]

    def at_edge(s: float) -> bool:
        return (threshold is not None and abs(s - threshold) <= margin) or (cut is not None and s <= cut + margin)

    def group(s: float, scores: np.ndarray) -> int:
        return int(np.count_nonzero(np.abs(scores - s) <= margin))

    # an unmatched detection and an unmatched one on the other side with the same score, where that score
    # is shared by several detections (or the two overlap): NMS or the cut kept another of the tied boxes
    hard_ref = [i for i in un_ref if not at_edge(rs[i])]
    hard_cand = sorted((j for j in un_cand if not at_edge(cs[j])), key=lambda j: cs[j])
    swapped = 0
    for i in sorted(hard_ref, key=lambda i: rs[i]):
        k = next((k for k, j in enumerate(hard_cand) if abs(cs[j] - rs[i]) <= margin and (
            group(rs[i], rs) > 1 or group(cs[j], cs) > 1 or ious[i, j] > 0)), None)
        if k is not None:
            hard_cand.pop(k)
            hard_ref.remove(i)
            swapped += 1
    hard = hard_ref + hard_cand

    def tied(i: int) -> bool:
        return group(rs[i], rs) > 1

    strict = [p[2] for p in pairs if not tied(p[0])]
    min_iou = min((p[2] for p in pairs), default=1.0)
    sdiff = max((abs(rs[i] - cs[j]) for i, j, _ in pairs), default=0.0)
    agree = not hard and min(strict, default=1.0) >= tolerances.DETECTION_IOU
    n_tie = len(un_ref) - len(hard_ref)
    summary = (f"{len(pairs)}/{len(rb)} detections matched" + (f" (+{len(un_cand)} extra)" if un_cand else "")
               + (f", {n_tie} more in score ties (matched as a set)" if n_tie else "")
               + (f", min IoU {min_iou:.4f}, max score diff {sdiff:.2g}" if pairs else ""))
    return {"agree": bool(agree), "summary": summary, "reference": int(len(rb)), "candidate": int(len(cb)),
            "matched": len(pairs), "unmatched_reference": un_ref, "unmatched_candidate": un_cand,
            "tied_unmatched": int(n_tie), "swapped_in_ties": int(swapped),
            "min_iou": float(min_iou), "max_score_diff": float(sdiff),
            "reference_detections": [{"class": int(rc[i]), "score": float(rs[i]), "box": [float(v) for v in rb[i]]}
                                     for i in np.argsort(-rs, kind="stable")[:20]]}


def argmax_agreement(cand: np.ndarray, ref: np.ndarray, tie_tol: float = 0.0) -> dict[str, Any]:
    """Pixel agreement of the argmax-over-channels maps of two ``(N, C, H, W)`` score blobs.

    ``agree`` when every differing pixel is a reference near-tie (top-two scores within ``tie_tol``).
    """
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64).reshape(r.shape)
    ra, ca = r.argmax(1), c.argmax(1)
    diff = ra != ca
    sr = np.sort(r, axis=1)
    margin = sr[:, -1] - sr[:, -2]
    hard = diff & (margin > tie_tol)
    frac = 1.0 - float(diff.mean()) if diff.size else 1.0
    nd, nh = int(diff.sum()), int(hard.sum())
    pct = f"{frac * 100:.3f}%" if nd == 0 or frac < 0.99999 else f"{frac * 100:.5f}%"
    return {"agree": bool(not hard.any()), "summary": f"{pct} pixels agree ({nd} differ"
            + (f", {nh} not near-ties" if nh else (", all near-ties" if nd else "")) + ")",
            "pixel_agreement": frac, "pixels": int(diff.size), "differing": int(diff.sum()),
            "differing_not_ties": int(hard.sum()), "classes_present": sorted(int(v) for v in np.unique(ra))}


def image_agreement(cand: np.ndarray, ref: np.ndarray, min_psnr: float = tolerances.STYLIZE_PSNR_DB) -> dict[str, Any]:
    """PSNR (peak = the reference's value range) and max abs diff of two output images."""
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64).reshape(r.shape)
    peak = float(np.ptp(r)) or 1.0
    mse = float(np.mean((c - r) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    return {"agree": bool(psnr >= min_psnr), "summary": f"PSNR {psnr:.1f} dB, max |diff| {np.max(np.abs(c - r)):.3g}",
            "psnr": psnr if math.isfinite(psnr) else 999.0, "max_abs": float(np.max(np.abs(c - r))),
            "peak": peak}


def _scale(a: np.ndarray) -> float:
    f = np.isfinite(a)
    return float(np.max(np.abs(a[f]))) if f.any() else 0.0


def _match_kept(node: Any, a: tuple, b: tuple, thr: float, band: float) -> dict[str, Any]:
    """Match two DetectionOutput results; when either filled keep_top_k, the lowest kept score is a
    cut that tied boxes may straddle."""
    keep = int(attrs(node)["keep_top_k"] or -1)
    full = keep > 0 and (len(a[1]) >= keep or len(b[1]) >= keep)
    cut = float(min(a[1].min(initial=np.inf), b[1].min(initial=np.inf))) if full else None
    return match_detections(*a, *b, threshold=thr, cut=cut, margin=max(tolerances.DETECTION_SCORE_MARGIN, 2 * band))


def task_result(kind: str, outs: tuple[str, ...], cand: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
                net: Any, labels: Sequence[str] | None = None, label_offset: int = 0, top_k: int = 5,
                input_hw: tuple[int, int] = (0, 0), band: float = 0.0) -> dict[str, Any] | None:
    """The check of ``kind`` on outputs ``outs`` of ``cand`` against ``ref`` (None when not applicable).

    ``band``: the absolute difference already accepted for this output by the per-layer
    analysis (its local errors are within tolerance); flips of classes or argmax pixels whose
    reference margin is within ``2 * max(band, tolerance * max|ref|)`` are ties, not disagreements.
    """
    if any(o not in cand or o not in ref for o in outs):
        return None
    if kind in ("classify", "segment"):
        r = np.asarray(ref[outs[0]], np.float64)
        c = np.asarray(cand[outs[0]])
        if c.size != r.size:
            return None
        tie = 2 * max(band, tolerances.VS_CV2 * _scale(r))
        if kind == "classify":
            return topk_agreement(c.reshape(r.shape), r, top_k, labels, label_offset, tie_tol=tie)
        return argmax_agreement(c, r, tie_tol=tie)
    if kind == "stylize":
        return image_agreement(cand[outs[0]], ref[outs[0]])
    if kind == "detect_ssd":
        node = net.graph.node(outs[0])
        thr = float(attrs(node)["confidence_threshold"])
        if cand[outs[0]].size % 7 or ref[outs[0]].size % 7:
            return None
        return _match_kept(node, ssd_detections(ref[outs[0]]), ssd_detections(cand[outs[0]]), thr, band)
    if kind == "detect_frcnn":
        from refnet.two_stage import detections

        node = net.graph.node(outs[0])
        thr = float(attrs(node)["confidence_threshold"])
        if cand[outs[0]].size % 7 or ref[outs[0]].size % 7:
            return None
        hw = (max(int(input_hw[0]), 1), max(int(input_hw[1]), 1))
        region = (0.0, 0.0, float(hw[1]), float(hw[0]))  # boxes stay in blob pixels
        return _match_kept(node, detections(ref[outs[0]], thr, hw, region), detections(cand[outs[0]], thr, hw, region),
                           thr, band)
    if kind == "detect_ultraface":
        from refnet.pipelines import ultraface_decode

        wh = (int(input_hw[1]), int(input_hw[0]))
        thr, nms_thr = tolerances.DECODE_THRESHOLDS["ultraface"]
        a = ultraface_decode(ref[outs[0]], ref[outs[1]], wh, thr, nms_thr)
        b = ultraface_decode(cand[outs[0]].reshape(ref[outs[0]].shape), cand[outs[1]].reshape(ref[outs[1]].shape), wh,
                             thr, nms_thr)
        return match_detections(*a, *b, threshold=thr)
    if kind == "detect_yolo":
        from refnet.kernels.yolo import yolo_detections

        def dets(d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            arrs = []
            for o in outs:
                a = np.asarray(d[o], np.float64)
                arrs.append(a.reshape(-1, a.shape[-1]))
            return yolo_detections(arrs, conf_threshold=conf, nms_threshold=nms_thr)

        conf, nms_thr = tolerances.COMPARE_YOLO_THRESHOLDS
        a, b = dets(ref), dets(cand)
        return match_detections(a["boxes"], a["scores"], a["class_ids"], b["boxes"], b["scores"], b["class_ids"],
                                threshold=conf)
    return None
