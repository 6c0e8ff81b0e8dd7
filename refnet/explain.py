"""``refnet explain``: gradient x input saliency of a class score or a detection's score.

The saliency of input pixel ``p`` is ``sum_c |x[c, p] * dS/dx[c, p]|`` (gradient x input, summed
over the blob's channels), with ``S`` one scalar the net computes, its gradient from
``net.backward``:

- classification (an output of shape (N, K), e.g. Softmax): the class's *logit*, the input of a
  final Softmax when there is one (the probability's gradient saturates), else the output itself;
  ``--class K`` or the top class;
- SSD detection (DetectionOutput): the confidence of one detection (``--class K``: the best of
  class K, else the best overall) at the prior that produced it -- its entry in DetectionOutput's
  confidence input (found by its value at that class), so the score is differentiable through
  the softmax and the class-confidence head convolutions (DetectionOutput's own sorting/NMS have
  no gradient);
- dense outputs (N, K, H, W) (segmentation): the sum of class K's scores over the pixels
  assigned to class K.

The map is normalised to its 99th percentile, resized to the image region the blob shows, coloured
(JET) and blended over the image, with the explained class (and the detection's box) drawn on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refnet.errors import RefnetError


class ExplainError(RefnetError, ValueError):
    """A saliency request that cannot work (no such class, an output refnet cannot explain)."""


@dataclass
class Saliency:
    """A saliency map over the blob (H, W), what it explains and the blob-space gradient."""

    map: np.ndarray
    target: str
    cls: int
    score: float
    grad: np.ndarray
    box: tuple[float, float, float, float] | None = None  # relative (x0, y0, x1, y1) for detections


def _class_target(net, out_name: str, outs: dict, cls: int | None) -> tuple[str, np.ndarray, int, float]:
    node = net.graph.node(out_name)
    name = node.inputs[0] if node.op == "softmax" else out_name
    val = outs[out_name]
    k = int(np.argmax(val.reshape(val.shape[0], -1)[0])) if cls is None else int(cls)
    n = val.reshape(val.shape[0], -1).shape[1]
    if k >= n:
        raise ExplainError(f"class {k} out of range: the net has {n} classes (0..{n - 1})")
    return name, val, k, float(val.reshape(val.shape[0], -1)[0, k])


def saliency(net, blob: np.ndarray, cls: int | None = None, precision: str = "float64") -> Saliency:
    """Gradient x input saliency of ``net`` at ``blob`` (module docstring)."""
    from refnet.runtime.backward import Tape

    if cls is not None and int(cls) < 0:
        raise ExplainError(f"class {cls} out of range: classes are numbered from 0")
    if len(net.input_names) != 1:
        raise ExplainError(f"the model has inputs {list(net.input_names)}; explain takes a one-input image net")
    out_name = net.output_names[0]
    out_node = net.graph.node(out_name) if out_name in net.layer_names else None
    if out_node is not None and out_node.op == "detection_output":
        dets = net.forward(blob, outputs=[out_name], precision=precision)[out_name].reshape(-1, 7)
        dets = dets[dets[:, 2] > 0]
        if cls is not None:
            dets = dets[dets[:, 1] == cls]
        if not len(dets):
            raise ExplainError("no detection" + (f" of class {cls}" if cls is not None else "") + " to explain")
        d = dets[np.argmax(dets[:, 2])]
        conf_name = out_node.inputs[1]
        n_cls = int(out_node.attrs.get("num_classes", 21))
        tape = Tape(net, blob, [conf_name], precision)
        conf = np.asarray(tape.values[conf_name]).reshape(-1)
        label = int(d[1])
        where = int(np.argmin(np.abs(conf[label::n_cls] - d[2]))) * n_cls + label
        g = np.zeros(conf.size)
        g[where] = 1.0
        grad = tape.backward({conf_name: g.reshape(tape.values[conf_name].shape)}).input
        return Saliency(_map(blob, grad), f"detection {label}", label, float(conf[where]), grad,
                        tuple(float(v) for v in np.clip(d[3:7], 0, 1)))
    if out_node is not None and out_node.op in ("region", "yolo"):
        raise ExplainError(f"output {out_name!r} is a YOLO {out_node.op} head: its boxes and scores are decoded "
                           "by thresholds and NMS; explain supports classifiers, SSD DetectionOutput and score maps")
    tape = Tape(net, blob, [out_name], precision)
    val = np.asarray(tape.values[out_name])
    if val.ndim == 2 or (val.ndim == 4 and val.shape[2:] == (1, 1)):
        name, _, k, _ = _class_target(net, out_name, {out_name: val}, cls)
        if name != out_name:
            tape = Tape(net, blob, [name], precision)
        logits = np.asarray(tape.values[name])
        if k >= logits.reshape(logits.shape[0], -1).shape[1]:
            raise ExplainError(f"class {k} out of range: the net has {logits.reshape(logits.shape[0], -1).shape[1]}")
        g = np.zeros(logits.shape).reshape(logits.shape[0], -1)
        g[0, k] = 1.0
        grad = tape.backward({name: g.reshape(logits.shape)}).input
        what = f"class {k} logit" if name != out_name else f"class {k}"
        return Saliency(_map(blob, grad), what, k, float(logits.reshape(logits.shape[0], -1)[0, k]), grad)
    if val.ndim == 4:
        amax = val[0].argmax(axis=0)
        k = int(np.bincount(amax.reshape(-1)).argmax()) if cls is None else int(cls)
        if k >= val.shape[1]:
            raise ExplainError(f"class {k} out of range: the output has {val.shape[1]} channels")
        if not np.any(amax == k):  # the score (a sum over no pixel) would be 0 with a zero gradient
            raise ExplainError(f"class {k} has no pixel in the class map; classes present: "
                               f"{np.unique(amax).tolist()}")
        g = np.zeros(val.shape)
        g[0, k] = amax == k
        grad = tape.backward({out_name: g}).input
        return Saliency(_map(blob, grad), f"class {k} pixels", k, float(np.sum(val[0, k] * (amax == k))), grad)
    raise ExplainError(f"cannot explain output {out_name!r} of shape {val.shape}: expected (N, K) scores, SSD "
                       "DetectionOutput or (N, K, H, W) score maps")


def _map(blob: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(blob, np.float64)[0] * np.asarray(grad, np.float64)[0]).sum(axis=0)


def overlay(image: np.ndarray, s: Saliency, region: tuple[float, float, float, float], text: str) -> np.ndarray:
    """The saliency map coloured and blended over ``image`` (BGR uint8) in the blob's region."""
    import cv2

    h, w = image.shape[:2]
    m = s.map / max(float(np.percentile(s.map, 99)), 1e-30)
    m = np.clip(m, 0, 1)
    x0, y0, x1, y1 = region
    full = np.zeros((h, w))
    rw, rh = max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))
    full_patch = cv2.resize(m.astype(np.float32), (rw, rh), interpolation=cv2.INTER_LINEAR)
    xa, ya = int(round(x0)), int(round(y0))
    full[ya:ya + rh, xa:xa + rw] = full_patch[: h - ya, : w - xa]
    base = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap(np.uint8(np.round(full * 255)), cv2.COLORMAP_JET)
    out = cv2.addWeighted(base, 0.5, heat, 0.5, 0)
    if s.box is not None:
        bx = [x0 + s.box[0] * (x1 - x0), y0 + s.box[1] * (y1 - y0), x0 + s.box[2] * (x1 - x0),
              y0 + s.box[3] * (y1 - y0)]
        cv2.rectangle(out, (int(bx[0]), int(bx[1])), (int(bx[2]), int(bx[3])), (255, 255, 255), 2)
    scale = max(0.4, min(w, h) / 600)
    cv2.putText(out, text, (5, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (5, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out
