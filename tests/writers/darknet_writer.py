"""Test-side Darknet writer: .cfg text and .weights bytes, written independently of refnet's parser.

``cfg_text`` renders sections; ``weights_bytes`` packs a header and float32 blobs exactly as
Darknet's ``save_weights`` lays them out; ``random_weights`` walks a cfg with its own small
shape tracker (Darknet's size formulas, re-derived here) and draws seeded He-scaled weights,
positive BatchNorm variances, and returns both the bytes and the per-layer arrays it wrote.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["cfg_text", "weights_bytes", "header_bytes", "parse_sections", "random_weights", "LayerBlobs"]


def cfg_text(sections: Sequence[tuple[str, dict]], comments: bool = False) -> str:
    """Render ``[(type, {key: value})]`` as a .cfg (lists become comma-separated)."""
    out = []
    for i, (kind, opts) in enumerate(sections):
        if comments:
            out.append(f"# section {i}")
        out.append(f"[{kind}]")
        for k, v in opts.items():
            if isinstance(v, (list, tuple)):
                v = ",".join(str(x) for x in v)
            out.append(f"{k}={v}")
        out.append("")
    return "\n".join(out)


def header_bytes(major: int = 0, minor: int = 2, revision: int = 0, seen: int = 0) -> bytes:
    """Darknet's header: int32 major, minor, revision; then `seen` as uint64 when major*10+minor >= 2."""
    head = struct.pack("<iii", major, minor, revision)
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        return head + struct.pack("<Q", seen)
    return head + struct.pack("<I", seen)


def weights_bytes(blobs: Iterable[np.ndarray], **header) -> bytes:
    """Header + every blob as little-endian float32, in the order given."""
    return header_bytes(**header) + b"".join(np.asarray(b, dtype="<f4").tobytes() for b in blobs)


def parse_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """A deliberately simple cfg reader for the writer's own use (first value of a key wins)."""
    secs: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            secs.append((line[1:line.index("]")], {}))
        elif "=" in line:
            k, v = line.split("=", 1)
            secs[-1][1].setdefault(k, v.split("#")[0])
    return secs


class LayerBlobs(dict):
    """The arrays written for one layer: keys bias, scales, mean, var, weight (Darknet names)."""


def _int(opts: dict, key: str, default: int) -> int:
    return int(opts.get(key, default))


def random_weights(cfg: str, seed: int = 0, *, connected_order: str = "darknet", major: int = 0, minor: int = 2,
                   he_gain: float = 2.0) -> tuple[bytes, list[tuple[int, str, LayerBlobs]]]:
    """Seeded random weights for every conv/connected layer of ``cfg``.

    Weights ~ N(0, gain/fan_in) (He), biases ~ N(0, 0.1), BN scales U(0.5, 1.5), means N(0, 0.1),
    variances U(0.5, 1.5). ``connected_order="darknet"`` writes connected layers as Darknet does
    (bias, weights, [scales, mean, var]); ``"cv2"`` as cv2 reads them (bias, [bn], weights).
    Returns the bytes and ``[(section index, type, blobs)]``.
    """
    rng = np.random.default_rng(seed)
    secs = parse_sections(cfg)
    net = secs[0][1]
    c, h, w = _int(net, "channels", 3), _int(net, "height", 416), _int(net, "width", 416)
    shapes: list[tuple[int, int, int]] = []
    blobs: list[np.ndarray] = []
    written: list[tuple[int, str, LayerBlobs]] = []
    for idx, (kind, o) in enumerate(secs[1:]):
        if kind in ("convolutional", "connected"):
            bn = _int(o, "batch_normalize", 0) == 1
            if kind == "convolutional":
                n, k, g = _int(o, "filters", 1), _int(o, "size", 1), _int(o, "groups", 1)
                fan_in = (c // g) * k * k
                wshape: tuple[int, ...] = (n, c // g, k, k)
                s = _int(o, "stride", 1)
                d = _int(o, "dilation", 1) if k > 1 else 1
                p = k // 2 if _int(o, "pad", 0) else _int(o, "padding", 0)
                h = (h + 2 * p * d - (d * (k - 1) + 1)) // s + 1
                w = (w + 2 * p * d - (d * (k - 1) + 1)) // s + 1
                c = n
            else:
                n = _int(o, "output", 1)
                fan_in = c * h * w
                wshape = (n, fan_in)
                c, h, w = n, 1, 1
            std = np.float32(np.sqrt(he_gain / fan_in))
            lb = LayerBlobs(bias=rng.normal(0, 0.1, n), weight=rng.standard_normal(wshape, dtype=np.float32) * std)
            if bn:
                lb.update(scales=rng.uniform(0.5, 1.5, n), mean=rng.normal(0, 0.1, n), var=rng.uniform(0.5, 1.5, n))
            order = ["bias"]
            if kind == "connected" and connected_order == "darknet":
                order += ["weight"] + (["scales", "mean", "var"] if bn else [])
            else:
                order += (["scales", "mean", "var"] if bn else []) + ["weight"]
            blobs += [lb[key] for key in order]
            written.append((idx, kind, lb))
        elif kind == "maxpool":
            s = _int(o, "stride", 1)
            k = _int(o, "size", s)
            p = _int(o, "padding", k - 1)
            h, w = (h + p - k) // s + 1, (w + p - k) // s + 1
        elif kind == "avgpool":
            h = w = 1
        elif kind == "route":
            ids = [int(v) for v in o["layers"].split(",")]
            ids = [i if i >= 0 else idx + i for i in ids]
            c = sum(shapes[i][0] for i in ids) // _int(o, "groups", 1)
            h, w = shapes[ids[0]][1:]
        elif kind == "upsample":
            s = _int(o, "stride", 2)
            h, w = h * s, w * s
        elif kind == "reorg":
            s = _int(o, "stride", 1)
            c, h, w = c * s * s, h // s, w // s
        shapes.append((c, h, w))
    return weights_bytes(blobs, major=major, minor=minor), written


# Every section type and the parameters cv2 implements, in one network (16x16 input); used by
# test_darknet, test_export_frameworks and the fuzz seeds.
ALL_LAYERS = [
    ("net", {"width": 16, "height": 16, "channels": 3}),
    ("convolutional", {"filters": 8, "size": 3, "stride": 1, "pad": 1, "batch_normalize": 1, "activation": "leaky"}),
    ("convolutional", {"filters": 8, "size": 3, "pad": 1, "groups": 8, "batch_normalize": 1, "activation": "mish"}),
    ("convolutional", {"filters": 6, "size": 1, "stride": 1, "pad": 0, "activation": "swish"}),
    ("shortcut", {"from": -3, "activation": "linear"}),  # 6 channels + 8: cv2 input_0_truncate
    ("convolutional", {"filters": 12, "size": 3, "stride": 2, "padding": 1, "activation": "logistic"}),
    ("maxpool", {"size": 2, "stride": 1}),  # Darknet's "same" 2x2/1 pool: padding 1 at the end
    ("route", {"layers": -1, "groups": 2, "group_id": 1}),
    ("convolutional", {"filters": 10, "size": 1, "activation": "tanh"}),
    ("shortcut", {"from": -3, "alpha": 0.5, "activation": "relu"}),  # 10 channels + 12
    ("maxpool", {"size": 3, "stride": 2}),
    ("upsample", {"stride": 2}),
    ("route", {"layers": "-1,4"}),
    ("dropout", {"probability": 0.5}),
    ("convolutional", {"filters": 8, "size": 3, "stride": 1, "pad": 1, "batch_normalize": 1, "activation": "relu"}),
    ("reorg", {"stride": 2}),
    ("route", {"layers": -2}),
    ("convolutional", {"filters": 14, "size": 1, "activation": "linear"}),
    ("yolo", {"mask": "1,2", "anchors": "2,3, 4,5, 6,8", "classes": 2, "num": 3, "scale_x_y": 1.1, "thresh": 0.1,
              "nms_threshold": 0.45}),
    ("route", {"layers": 14}),
    ("convolutional", {"filters": 18, "size": 1, "activation": "linear"}),
    ("region", {"anchors": "1,1, 2,2", "classes": 4, "num": 2, "softmax": 1, "coords": 4, "thresh": 0.05}),
    ("route", {"layers": 14}),
    ("avgpool", {}),
    ("connected", {"output": 7, "batch_normalize": 1, "activation": "leaky"}),
    ("connected", {"output": 5, "activation": "linear"}),
    ("softmax", {"groups": 1}),
]
