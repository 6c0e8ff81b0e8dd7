"""Two-stage detectors (Faster R-CNN, R-FCN) around refnet's ``proposal``/``roi_pool``/
``psroi_pool`` ops: seeded weights for OpenCV's architecture-only test prototxts, the
``data`` + ``im_info`` feeds, the per-class decoding of their DetectionOutput rows, and the
set comparison of proposals (rois are a set: their order among equal scores is not defined).

The nets (``$REFNET_MODELS/arch_only``):

- ``faster-rcnn-vgg16``: py-faster-rcnn's VGG16 (conv5_3 stride 16, RPN with 9 anchors,
  ROIPooling 7x7, fc6/fc7, per-class boxes), cv2's ``Proposal`` and a DetectionOutput head with
  ``share_location: false``;
- ``rfcn-resnet50``: py-R-FCN's ResNet-50 (class-agnostic boxes, PSROIPooling 7x7 of 21 and 8
  score maps, averaged), DetectionOutput with ``share_location: true``.

Both take ``data`` (1x3xHxW BGR, mean (102.9801, 115.9465, 122.7717) subtracted, scale 1) and
``im_info`` = ``[[H, W, scale]]``; DetectionOutput rows are ``[0, class, score, x1, y1, x2, y2]``
in *blob* pixels (``normalized_bbox: false``), class 0 = background.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from refnet.errors import RefnetError, ShapeError

__all__ = [
    "ARCHS",
    "MEAN",
    "prototxt_path",
    "seeded_weights",
    "TwoStageArch",
    "im_info_for",
    "feeds",
    "detections",
    "match_roi_sets",
]

MEAN = (102.9801, 115.9465, 122.7717)  # py-faster-rcnn's PIXEL_MEANS (BGR)

#: name -> (prototxt below $REFNET_MODELS, stage-1 heads, stage-2 heads); a head is (layer whose
#: weights are scaled, output measured, std that output gets on the calibration image): RPN
#: objectness logits ~1.5 (softmax neither flat nor saturated), box deltas ~0.15 (exp stays near
#: 1), class logits ~2 (R-FCN: measured after its position-sensitive pooling and 7x7 average)
Head = tuple[str, str, float]
ARCHS: dict[str, tuple[str, tuple[Head, ...], tuple[Head, ...]]] = {
    "faster-rcnn-vgg16": ("arch_only/faster_rcnn_vgg16/faster_rcnn_vgg16.prototxt",
                          (("rpn_cls_score", "rpn_cls_score", 1.5), ("rpn_bbox_pred", "rpn_bbox_pred", 0.15)),
                          (("cls_score", "cls_score", 2.0), ("bbox_pred", "bbox_pred", 0.1))),
    "rfcn-resnet50": ("arch_only/rfcn_resnet50/rfcn_pascal_voc_resnet50.prototxt",
                      (("rpn_cls_score", "rpn_cls_score", 1.5), ("rpn_bbox_pred", "rpn_bbox_pred", 0.15)),
                      (("rfcn_cls", "ave_cls_score_rois", 2.0), ("rfcn_bbox", "ave_bbox_pred_rois", 0.1))),
}


def prototxt_path(name: str) -> Path:
    """The architecture file of ``name`` in ``$REFNET_MODELS`` (FileNotFoundError if absent)."""
    if name not in ARCHS:
        raise KeyError(f"unknown two-stage architecture {name!r}; known: {', '.join(ARCHS)}")
    root = os.environ.get("REFNET_MODELS")
    if not root or not (Path(root) / ARCHS[name][0]).is_file():
        raise FileNotFoundError(f"{name}: {ARCHS[name][0]} not found; set REFNET_MODELS to the shared models "
                                "folder (OpenCV's test prototxt is not part of refnet)")
    return Path(root) / ARCHS[name][0]


def calibration_blob(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A deterministic image-like blob (smooth blobs of colour, mean-subtracted range)."""
    rng = np.random.default_rng(seed + 1000)
    import cv2

    small = rng.uniform(0, 255, size=(max(hw[0] // 16, 2), max(hw[1] // 16, 2), 3)).astype(np.float32)
    img = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + rng.normal(0, 8, img.shape).astype(np.float32), 0, 255)
    return (img - np.asarray(MEAN, np.float32)).transpose(2, 0, 1)[None].copy()


def im_info_for(blob: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``[[H, W, scale]]`` (float32) for a (1, 3, H, W) blob, as py-faster-rcnn feeds it."""
    b = np.asarray(blob)
    if b.ndim != 4:
        raise ShapeError("a two-stage net's data blob is (N, 3, H, W)", expected="(N, 3, H, W)", got=b.shape)
    return np.array([[b.shape[2], b.shape[3], scale]], np.float32)


def _layers_of(model: bytes) -> list[tuple[str, str, list[np.ndarray]]]:
    from refnet.weights_import.caffe import blob_array, parse_net_binary

    msg = parse_net_binary(model, weights_only=True)
    return [(L.get("name"), L.get("type"), [blob_array(b, L.get("name")) for b in L.get("blobs")])
            for L in msg.get("layer")]


def _head_std(graph, proto: Path, heads: Sequence[Head], blob: np.ndarray) -> dict[str, float]:
    from refnet.net import Net

    net = Net(graph, ("caffe", (proto, None)))
    out = net.forward({"data": blob, "im_info": im_info_for(blob)}, outputs=[m for _, m, _ in heads],
                      precision="float64")
    return {m: float(np.std(np.asarray(out[m], np.float64))) for _, m, _ in heads}


def seeded_weights(name: str, seed: int = 0, input_hw: tuple[int, int] | None = None) -> bytes:
    """A caffemodel (bytes) of seeded He-scaled weights for architecture ``name``, with the RPN
    and detection heads rescaled on a deterministic image (``input_hw``, default 128x128) so
    the RPN proposes boxes of all anchor shapes (objectness logits of std 1.5, deltas of std
    0.15) and the class scores are neither flat nor saturated (logits of std 2, box deltas of
    std 0.1). Only the heads' weights and biases change, by one factor each."""
    import dataclasses
    from types import MappingProxyType

    from refnet.archs import _caffemodel_bytes, seeded_caffemodel
    from refnet.weights_import.caffe import read_caffe

    proto = prototxt_path(name)
    _, stage1, stage2 = ARCHS[name]
    model = seeded_caffemodel(proto, seed=seed)
    graph = read_caffe(proto, caffemodel_bytes=model)
    blob = calibration_blob(input_hw or (128, 128), seed)
    factors: dict[str, np.float32] = {}
    for heads in (stage1, stage2):
        std = _head_std(graph, proto, heads, blob)
        scale = {h: np.float32(t / std[m]) for h, m, t in heads if std[m] > 0 and math.isfinite(std[m])}
        factors.update(scale)
        nodes = tuple(dataclasses.replace(n, params=MappingProxyType(
                          {k: (v * scale[n.name]).astype(np.float32) for k, v in n.params.items()}))
                      if n.name in scale else n for n in graph.nodes)
        graph = dataclasses.replace(graph, nodes=nodes)
    layers = [(lname, typ, [(b * factors[lname]).astype(np.float32) if lname in factors else b for b in blobs])
              for lname, typ, blobs in _layers_of(model)]
    return _caffemodel_bytes(layers, "")


class TwoStageArch:
    """What ``refnet generate faster-rcnn-vgg16|rfcn-resnet50`` writes: OpenCV's prototxt (read
    from ``$REFNET_MODELS``) and calibrated seeded weights."""

    def __init__(self, name: str, seed: int = 0, input_hw: tuple[int, int] | None = None) -> None:
        self.name, self.seed, self.input_hw = name, seed, input_hw

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The image blob's shape the sidecar records (the zoo's 800x600 unless ``input_hw`` says)."""
        h, w = self.input_hw or (600, 800)
        return (1, 3, int(h), int(w))

    def write(self, prefix: str | Path) -> tuple[Path, Path]:
        proto = prototxt_path(self.name)
        out_p, out_m = Path(f"{prefix}.prototxt"), Path(f"{prefix}.caffemodel")
        model = seeded_weights(self.name, self.seed, self.input_hw)
        out_p.write_bytes(proto.read_bytes())
        out_m.write_bytes(model)
        return out_p, out_m


def _faster_rcnn_vgg16(seed: int = 0, input_hw: tuple[int, int] | None = None) -> TwoStageArch:
    return TwoStageArch("faster-rcnn-vgg16", seed, input_hw)


def _rfcn_resnet50(seed: int = 0, input_hw: tuple[int, int] | None = None) -> TwoStageArch:
    return TwoStageArch("rfcn-resnet50", seed, input_hw)


BUILTINS = {"faster-rcnn-vgg16": ("detect", _faster_rcnn_vgg16), "rfcn-resnet50": ("detect", _rfcn_resnet50)}


# ---- running and decoding ---------------------------------------------------------------------------
def is_two_stage(net) -> bool:
    """True for a net fed ``data`` + ``im_info`` (py-faster-rcnn's inputs)."""
    return "im_info" in net.input_names and len(net.input_names) == 2


def feeds(net, blob: np.ndarray, scale: float = 1.0) -> dict[str, np.ndarray]:
    """The two inputs of a two-stage net for ``blob``: the image under the non-``im_info`` name."""
    if not is_two_stage(net):
        raise RefnetError(f"not a two-stage net (inputs {list(net.input_names)}; expected data + im_info)")
    data = next(k for k in net.input_names if k != "im_info")
    return {data: np.asarray(blob), "im_info": im_info_for(blob, scale)}


def detections(detection_out: np.ndarray, threshold: float, blob_hw: Sequence[int],
               region: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class Faster R-CNN / R-FCN detections: the DetectionOutput rows ``[image, class,
    score, x1, y1, x2, y2]`` with score > ``threshold`` (every class went through its own NMS
    inside the layer), boxes mapped from blob pixels to the image ``region`` (x0, y0, x1, y1).
    Returns (boxes (K, 4) in image pixels, scores, class ids), highest score first."""
    from refnet.kernels.detection import ssd_detections

    boxes, scores, ids = ssd_detections(detection_out, threshold)
    order = np.argsort(-scores, kind="stable")
    bh, bw = float(blob_hw[0]), float(blob_hw[1])
    x0, y0, x1, y1 = region
    sx, sy = (x1 - x0) / bw, (y1 - y0) / bh
    return boxes[order] * np.array([sx, sy, sx, sy]) + np.array([x0, y0, x0, y0]), scores[order], ids[order]


# ---- proposals compared as sets ----------------------------------------------------------------------
def match_roi_sets(a: np.ndarray, b: np.ndarray, atol: float = 1e-3, rtol: float = 1e-5,
                   scores_a: np.ndarray | None = None, scores_b: np.ndarray | None = None,
                   tie: float = 1e-6) -> dict:
    """Compare two ``(R, 5)`` roi sets (zero padding rows dropped) as sets of boxes.

    Rows are sorted lexicographically and matched within ``atol + rtol * |x|``; rows left over
    are allowed only where their scores are near-ties (within ``tie`` of the score of the last
    kept proposal, i.e. the cut at ``post_nms_topn`` or an NMS decision between equal scores).
    Returns ``{"matched", "only_a", "only_b", "max_abs", "explained"}`` where ``explained`` is
    True when every unmatched row is such a near-tie."""
    def rows(r, s):
        r = np.asarray(r, np.float64).reshape(-1, 5)
        keep = np.any(r[:, 1:] != 0, axis=1)
        ss = None if s is None else np.asarray(s, np.float64).reshape(-1)[: len(r)][keep]
        return r[keep], ss

    ra, sa = rows(a, scores_a)
    rb, sb = rows(b, scores_b)
    used = np.zeros(len(rb), bool)
    only_a: list[int] = []
    max_abs = 0.0
    order_b = np.lexsort(rb[:, ::-1].T) if len(rb) else np.zeros(0, np.int64)
    sorted_b = rb[order_b]
    for i, r in enumerate(ra):
        tol = atol + rtol * np.abs(r)
        close = np.flatnonzero(np.all(np.abs(sorted_b - r) <= tol, axis=1) & ~used[order_b])
        if len(close):
            j = order_b[close[0]]
            used[j] = True
            max_abs = max(max_abs, float(np.max(np.abs(rb[j] - r))))
        else:
            only_a.append(i)
    only_b = [int(j) for j in np.flatnonzero(~used)]
    explained = True
    if only_a or only_b:
        if sa is None or sb is None:
            explained = False
        else:
            lo = min(sa.min() if len(sa) else np.inf, sb.min() if len(sb) else np.inf)
            left = np.concatenate([sa[only_a], sb[only_b]])
            explained = bool(np.all(np.abs(left - lo) <= tie))
    return {"matched": int(used.sum()), "only_a": only_a, "only_b": only_b, "max_abs": max_abs,
            "explained": explained}


# ---- per-layer cross-check against cv2 (the hook `refnet compare` needs for these nets) ------------
def cv2_outputs(prototxt: str | os.PathLike, caffemodel: str | os.PathLike,
                feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every layer's (first) output from cv2.dnn for the two inputs, by cv2 layer name."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    for k, v in feed.items():
        net.setInput(np.ascontiguousarray(v, dtype=np.float32), k)
    names = list(net.getLayerNames())
    return dict(zip(names, net.forward(names)))


def layer_errors(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], ops: dict[str, str]
                 ) -> list[tuple[str, str, float, str]]:
    """Per layer ``(name, op, max|diff| / max|cv2|, note)``; ``proposal`` layers are compared as
    roi sets (:func:`match_roi_sets`; the error is the largest coordinate difference of matched
    rows over the largest coordinate, inf when a row is unmatched and not a near-tie); a layer
    whose shape differs (the proposal count differs under ``quirks="none"``) gets nan and a
    note."""
    rows = []
    for name, c in theirs.items():
        if name not in ours:
            continue
        a = np.asarray(ours[name], np.float64)
        c = np.asarray(c, np.float64)
        op = ops.get(name, "?")
        if op == "proposal":
            m = match_roi_sets(a, c)
            scale = max(float(np.max(np.abs(c[:, 1:]))) if c.size else 1.0, 1e-30)
            ok = not m["only_a"] and not m["only_b"]
            same_order = ok and a.shape == c.shape and bool(np.all(np.abs(a - c) <= 1e-3 + 1e-5 * np.abs(c)))
            rows.append((name, op, m["max_abs"] / scale if ok else math.inf,
                         f"{m['matched']} rois matched as a set" + ("" if ok else
                         f", {len(m['only_a'])} only in refnet, {len(m['only_b'])} only in cv2")
                         + ("" if same_order or not ok else ", in another order (near-tie scores): the "
                            "per-roi layers after it are row-permuted")))
            continue
        if a.shape != c.shape:
            rows.append((name, op, math.nan, f"shape {a.shape} vs cv2 {c.shape}"))
            continue
        note = ""
        if op == "detection_output":  # rows of equal score come in an unspecified order (std::sort)
            a, c = sorted_detection_rows(a), sorted_detection_rows(c)
            note = "rows compared in (score, class, box) order"
        scale = max(float(np.max(np.abs(c))) if c.size else 0.0, 1e-30)
        rows.append((name, op, float(np.max(np.abs(a - c))) / scale if c.size else 0.0, note))
    return rows


def sorted_detection_rows(d: np.ndarray, digits: int = 5) -> np.ndarray:
    """DetectionOutput rows ``(K, 7)`` by descending score (rounded to ``digits``), then class,
    then box: cv2 orders rows of equal score arbitrarily (an unstable sort)."""
    r = np.asarray(d, np.float64).reshape(-1, 7)
    order = np.lexsort((r[:, 6], r[:, 5], r[:, 4], r[:, 3], r[:, 1], -np.round(r[:, 2], digits)))
    return r[order]


def crosscheck(name: str, image: str | os.PathLike, *, size: tuple[int, int] = (224, 224), seed: int = 0,
               precisions: Sequence[str] = ("float32", "float64"), quirks: Sequence[str] = ("cv2", "none"),
               workdir: str | os.PathLike | None = None, threshold: float = 0.3) -> list[str]:
    """Generate ``name`` with seeded weights, run it on ``image`` in cv2.dnn and refnet (each
    precision and quirks mode) and return summary lines: the worst per-layer error vs cv2 (and
    where), and how many cv2 detections (score > ``threshold``) refnet matches (same class, IoU
    > 0.5)."""
    import tempfile

    import cv2

    from refnet.kernels import iou
    from refnet.net import load_caffe

    if workdir is None:  # the weights (up to 548 MB) are removed afterwards
        with tempfile.TemporaryDirectory(prefix="refnet-two-stage-") as tmp:
            return crosscheck(name, image, size=size, seed=seed, precisions=precisions, quirks=quirks,
                              workdir=tmp, threshold=threshold)
    proto, model = TwoStageArch(name, seed).write(Path(workdir) / name)
    img = cv2.imread(str(image))
    if img is None:
        raise FileNotFoundError(f"cannot read image {image}")
    blob = cv2.dnn.blobFromImage(img, 1.0, size, MEAN, False, False)
    feed = {"data": blob, "im_info": im_info_for(blob)}
    theirs = cv2_outputs(proto, model, feed)
    region = (0.0, 0.0, float(blob.shape[3]), float(blob.shape[2]))
    want = detections(theirs["detection_out"], threshold, blob.shape[2:], region)
    lines = []
    for q in quirks:
        net = load_caffe(proto, model, quirks=q)
        ops = {n.name: n.op for n in net.graph.nodes}
        for prec in precisions:
            ours = net.trace(feed, precision=prec)
            rows = layer_errors(ours, theirs, ops)
            props = [r for r in rows if r[1] == "proposal"]
            comparable = [r for r in rows if not math.isnan(r[2]) and r[1] != "proposal"]
            worst = max(comparable, key=lambda r: r[2])
            skipped = len(rows) - len(comparable) - len(props)
            got = detections(ours["detection_out"], threshold, blob.shape[2:], region)
            matched = 0
            used: set[int] = set()
            for b, c in zip(want[0], want[2]):
                cand = [j for j in range(len(got[0])) if got[2][j] == c and j not in used]
                if cand:
                    ov = iou(b[None], got[0][cand])[0]
                    if ov.max() > 0.5:
                        used.add(cand[int(np.argmax(ov))])
                        matched += 1
            lines.append(f"{name} quirks={q} {prec}: {len(comparable)} layers compared, worst {worst[2]:.2e} at "
                         f"{worst[0]} ({worst[1]}{', ' + worst[3] if worst[3] else ''}); "
                         + "; ".join(f"{r[0]}: {r[3]}, error {r[2]:.2e}" for r in props)
                         + (f", {skipped} layers with other row counts than cv2" if skipped else "")
                         + f"; detections > {threshold}: {matched}/{len(want[0])} of cv2's matched, refnet "
                         f"{len(got[0])}")
    return lines


if __name__ == "__main__":  # python -m refnet.two_stage NAME IMAGE
    import sys

    for line in crosscheck(sys.argv[1], sys.argv[2]):
        print(line)
