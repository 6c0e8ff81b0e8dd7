"""Pictures of task results, drawn with OpenCV's drawing functions (cv2.rectangle, cv2.putText).

Colours are BGR uint8. :func:`palette` gives well-separated colours for any number of classes;
:func:`class_colors` uses the datasets' own conventions when it recognises the class names
(PASCAL VOC's bit-interleaved colormap, Cityscapes' official colours) and the palette otherwise.
Every function returns a new image and leaves its input untouched; boxes or values that are not
finite (NaN, inf) are skipped, never drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from refnet.errors import ShapeError

__all__ = [
    "FONT",
    "as_bgr",
    "palette",
    "voc_colormap",
    "CITYSCAPES_COLORS",
    "class_colors",
    "text_color",
    "font_scale_for",
    "fit_text",
    "put_label",
    "draw_boxes",
    "overlay_classes",
    "legend_panel",
    "attach_panel",
    "upscale_small",
    "seeded_banner",
]

FONT = cv2.FONT_HERSHEY_SIMPLEX

# Cityscapes' official label colours (cityscapesScripts labels.py), RGB, keyed by a normalised name.
_CITYSCAPES_RGB = {
    "unlabeled": (0, 0, 0), "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153),
    "trafficlight": (250, 170, 30), "trafficsign": (220, 220, 0), "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152), "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0),
    "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100),
    "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
}
CITYSCAPES_COLORS: dict[str, tuple[int, int, int]] = {k: (b, g, r) for k, (r, g, b) in _CITYSCAPES_RGB.items()}

_VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
              "tvmonitor")


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def palette(n: int, seed_hue: float = 0.0) -> np.ndarray:
    """``n`` distinct BGR colours (uint8, shape (n, 3)): hues stepped by the golden angle, saturation
    and value alternating so neighbours differ in brightness too."""
    n = int(n)
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    i = np.arange(n)
    hue = ((seed_hue + i * 0.6180339887498949) % 1.0) * 180.0  # OpenCV's 8-bit hue range is 0..179
    sat = np.where(i % 2 == 0, 200, 255)
    val = np.where(i % 3 == 2, 180, 255)
    hsv = np.stack([hue, sat, val], axis=1).astype(np.uint8).reshape(-1, 1, 3)
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).reshape(n, 3)


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's segmentation colormap (index bits interleaved into R, G, B from the top bit), BGR uint8."""
    idx = np.arange(int(n))
    rgb = np.zeros((len(idx), 3), np.int64)
    c = idx.copy()
    for j in range(8):
        for ch in range(3):
            rgb[:, ch] |= ((c >> ch) & 1) << (7 - j)
        c >>= 3
    return rgb[:, ::-1].astype(np.uint8)


def class_colors(labels: Sequence[str] | None, n: int) -> np.ndarray:
    """BGR colours for ``n`` classes: Cityscapes' colours when every label is a Cityscapes class,
    VOC's colormap when the labels are VOC's (with or without background), else :func:`palette`."""
    if labels is not None and len(labels) == n and n > 0:
        keys = [_norm(s) for s in labels]
        if all(k in CITYSCAPES_COLORS for k in keys):
            return np.array([CITYSCAPES_COLORS[k] for k in keys], np.uint8)
        voc = {name: i for i, name in enumerate(_VOC_NAMES)}
        if all(k in voc for k in keys):
            cmap = voc_colormap(len(_VOC_NAMES))
            return np.array([cmap[voc[k]] for k in keys], np.uint8)
    return palette(n)


def text_color(bgr: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bgr`` (ITU-R BT.601 luma)."""
    b, g, r = (float(v) for v in bgr[:3])
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def font_scale_for(image_hw: Sequence[int]) -> float:
    """A putText font scale that stays legible on an image of this (height, width)."""
    return float(np.clip(min(int(image_hw[0]), int(image_hw[1])) / 700.0, 0.4, 1.2))


def as_bgr(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A 3-channel BGR uint8 copy of a gray, gray x 1, BGR or BGRA uint8 picture (TypeError/ShapeError
    naming ``name`` otherwise)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 (a BGR picture), got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image).copy()
    raise ShapeError(f"{name} must be H x W, H x W x 1, H x W x 3 or H x W x 4", expected="(H, W[, C])",
                     got=f"shape {image.shape}")


def _label_rect(img_hw: tuple[int, int], text: str, org: tuple[int, int], scale: float, thickness: int,
                above: bool) -> tuple[int, int, int, int]:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    h, w = img_hw
    x = int(min(max(org[0], 0), max(w - tw - 4, 0)))
    y_top = org[1] - th - base - 4 if above else org[1]
    y_top = int(min(max(y_top, 0), max(h - th - base - 4, 0)))
    return x, y_top, x + tw + 4, y_top + th + base + 4


def put_label(img: np.ndarray, text: str, org: tuple[int, int], color: Sequence[int], scale: float,
              thickness: int = 1, *, above: bool = True) -> tuple[int, int, int, int]:
    """Draw ``text`` in place on a filled box of ``color`` whose corner is ``org`` (x, y); the box sits
    above ``org`` (``above=True``) or below it, moved inside the image when it would leave it.
    Returns the box drawn as (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = _label_rect(img.shape[:2], text, org, scale, thickness, above)
    col = tuple(int(c) for c in color)
    cv2.rectangle(img, (x1, y1), (x2, y2), col, cv2.FILLED)
    th = cv2.getTextSize(text, FONT, scale, thickness)[0][1]
    cv2.putText(img, text, (x1 + 2, y1 + th + 2), FONT, scale, text_color(col), thickness, cv2.LINE_AA)
    return x1, y1, x2, y2


def _overlaps(r: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    return any(r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3] for o in others)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, texts: Sequence[str], colors: np.ndarray | Sequence,
               thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` with one rectangle per box ``(x1, y1, x2, y2)`` (pixels) and its caption.

    Boxes are clipped to the image; non-finite boxes are skipped. Rectangles are drawn first, captions
    on top; captions are placed in box order (sort boxes best first), each at the first free spot of:
    above the top-left corner, inside it, below the bottom-left corner, inside that.
    """
    out = as_bgr(image)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(texts) != len(b) or len(colors) != len(b):
        raise ShapeError("draw_boxes needs one text and one colour per box", expected=len(b),
                         got=(len(texts), len(colors)))
    h, w = out.shape[:2]
    scale = font_scale_for((h, w))
    t = thickness or max(1, int(round(min(h, w) / 250)))
    tt = max(1, t // 2)
    # a handful of boxes: loops over cv2 calls, not over pixels
    shown = [i for i in range(len(b)) if np.all(np.isfinite(b[i]))]
    rects = {i: tuple(int(round(v)) for v in np.clip(b[i], 0, [w - 1, h - 1, w - 1, h - 1])) for i in shown}
    for i in reversed(shown):
        cv2.rectangle(out, rects[i][:2], rects[i][2:], tuple(int(c) for c in colors[i]), t, cv2.LINE_AA)
    placed: list[tuple[int, int, int, int]] = []
    spots: dict[int, tuple[tuple[int, int], bool]] = {}
    for i in shown:
        x1, y1, _, y2 = rects[i]
        cands = [((x1, y1), True), ((x1, y1 + t), False), ((x1, y2 + t), False), ((x1, y2), True)]
        spot = next((c for c in cands if not _overlaps(_label_rect((h, w), texts[i], c[0], scale, tt, c[1]), placed)),
                    cands[0])
        placed.append(_label_rect((h, w), texts[i], spot[0], scale, tt, spot[1]))
        spots[i] = spot
    for i in reversed(shown):  # the best caption is drawn last, on top
        put_label(out, texts[i], spots[i][0], colors[i], scale, tt, above=spots[i][1])
    return out


def overlay_classes(image: np.ndarray, class_map: np.ndarray, colors: np.ndarray, alpha: float = 0.55,
                    region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``image`` blended with the colour of each pixel's class (``class_map`` resized with nearest
    neighbour onto ``region`` = (x0, y0, x1, y1), default the whole image); out-of-range ids stay uncoloured."""
    out = as_bgr(image)
    cm = np.asarray(class_map)
    if cm.ndim != 2 or cm.size == 0:
        raise ShapeError("class_map must be a non-empty H x W array", got=f"shape {cm.shape}")
    h, w = out.shape[:2]
    x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return out
    ids = cv2.resize(cm.astype(np.int32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    cols = np.asarray(colors, np.uint8).reshape(-1, 3)
    valid = (ids >= 0) & (ids < len(cols))
    colour = cols[np.where(valid, ids, 0)].astype(np.float32)
    patch = out[y0:y1, x0:x1].astype(np.float32)
    blend = (1.0 - alpha) * patch + alpha * colour
    out[y0:y1, x0:x1] = np.where(valid[..., None], np.rint(blend), patch).astype(np.uint8)
    return out


def fit_text(text: str, max_width: int, scale: float, thickness: int = 1) -> str:
    """``text`` shortened (ending in "..") so that putText draws it at most ``max_width`` pixels wide."""
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= max_width:
        return text
    while text and cv2.getTextSize(text + "..", FONT, scale, thickness)[0][0] > max_width:
        text = text[:-1]
    return text + ".." if text else ""


def legend_panel(rows: Sequence[tuple[str, Sequence[int] | None, float | None]], width: int, height: int,
                 title: str = "", scale: float = 0.5) -> np.ndarray:
    """A white ``height`` x ``width`` panel listing ``rows`` = (text, colour swatch or None, bar fraction
    in [0, 1] or None), one per line under ``title``; rows that do not fit are summarised as "... N more".
    A tab in ``text`` splits it into two columns, the first right-aligned (e.g. "98.9%\tcat")."""
    panel = np.full((int(height), int(width), 3), 255, np.uint8)
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
    col_w = max((cv2.getTextSize(t.split("\t")[0], FONT, scale, 1)[0][0] for t, _, _ in rows if "\t" in t),
                default=0)
    line = th + base + 10
    y = 8
    if title:
        cv2.putText(panel, title, (10, y + th), FONT, scale * 1.1, (0, 0, 0), 1 + int(scale > 0.6), cv2.LINE_AA)
        y += line + 4
    bar_w = max(40, width // 4)
    for k, (text, color, frac) in enumerate(rows):
        if y + 2 * line > height and k < len(rows) - 1:
            cv2.putText(panel, f"... {len(rows) - k} more", (10, y + th), FONT, scale, (90, 90, 90), 1, cv2.LINE_AA)
            break
        x = 10
        if color is not None:
            cv2.rectangle(panel, (x, y), (x + th + 4, y + th + 4), tuple(int(c) for c in color), cv2.FILLED)
            cv2.rectangle(panel, (x, y), (x + th + 4, y + th + 4), (60, 60, 60), 1)
            x += th + 12
        if frac is not None and np.isfinite(frac):
            f = float(np.clip(frac, 0.0, 1.0))
            bx = width - bar_w - 10
            cv2.rectangle(panel, (bx, y + 2), (bx + bar_w, y + th + 2), (225, 225, 225), cv2.FILLED)
            cv2.rectangle(panel, (bx, y + 2), (bx + int(round(f * bar_w)), y + th + 2), (200, 120, 40), cv2.FILLED)
            limit = bx - x - 6
        else:
            limit = width - x - 10
        if "\t" in text:
            first, text = text.split("\t", 1)
            fw = cv2.getTextSize(first, FONT, scale, 1)[0][0]
            cv2.putText(panel, first, (x + col_w - fw, y + th + 2), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
            x += col_w + 10
            limit -= col_w + 10
        cv2.putText(panel, fit_text(text, limit, scale), (x, y + th + 2), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += line
    return panel


def attach_panel(image: np.ndarray, panel: np.ndarray) -> np.ndarray:
    """``image`` with ``panel`` to its right on a white canvas as tall as the taller of the two."""
    img = as_bgr(image)
    pan = as_bgr(panel, "panel")
    h = max(img.shape[0], pan.shape[0])
    canvas = np.full((h, img.shape[1] + pan.shape[1], 3), 255, np.uint8)
    canvas[: img.shape[0], : img.shape[1]] = img
    canvas[: pan.shape[0], img.shape[1]:] = pan
    return canvas


def upscale_small(image: np.ndarray, min_side: int = 256, max_side: int = 2048) -> np.ndarray:
    """``image`` enlarged by the smallest integer factor (nearest neighbour, pixels stay crisp) that
    makes its shorter side at least ``min_side``, but never beyond ``max_side`` on its longer side
    (a 1x5000 picture stays 1x5000, not 256x1,280,000); larger images are returned as a BGR copy."""
    img = as_bgr(image)
    short = min(img.shape[:2])
    f = int(np.ceil(min_side / short)) if short < min_side else 1
    f = max(1, min(f, max_side // max(img.shape[:2])))
    if f == 1:
        return img
    return cv2.resize(img, (img.shape[1] * f, img.shape[0] * f), interpolation=cv2.INTER_NEAREST)


def seeded_banner(image: np.ndarray, text: str | None = None) -> np.ndarray:
    """``image`` with a banner along its top saying the weights are seeded random ones
    (``text``, default :data:`refnet.generate.SEEDED_NOTE`)."""
    from refnet.generate import SEEDED_NOTE

    text = text or SEEDED_NOTE
    img = np.ascontiguousarray(image).copy()
    w = img.shape[1]
    scale = 0.5
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    while tw > w - 8 and scale > 0.25:
        scale *= 0.85
        (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    bar = th + base + 8
    out = np.concatenate([np.full((bar, w, 3), (0, 0, 160), np.uint8), img], axis=0)
    cv2.putText(out, text, (4, bar - base - 4), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
