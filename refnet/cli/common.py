"""Arguments several ``refnet`` subcommands share: the model (files or ``--zoo``) and ``--mean``;
the names of the files written per image.

Preprocessing flags mirror ``cv2.dnn.blobFromImage``, including its rule for a single ``--mean``
value (:class:`CvMeanAction`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["MODEL_FILES_HELP", "add_model_args", "CvMeanAction", "cv_mean", "MEAN_NOTE", "image_labels",
           "finite_float", "stride_hint"]

MODEL_FILES_HELP = "model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights, .onnx); or use --zoo"

MEAN_NOTE = ("note: --mean {v:g} subtracts {v:g} from the first channel only, as cv2.dnn.blobFromImage(mean={v:g}) "
             "does; give three values (--mean {v:g} {v:g} {v:g}) for all channels")


def add_model_args(s: argparse.ArgumentParser, zoo_help: str, files_help: str = MODEL_FILES_HELP) -> None:
    """The model of a subcommand: positional ``MODEL_FILE``\\ s or ``--zoo NAME``
    (:func:`refnet.resolver.resolve_model` takes exactly one of them)."""
    s.add_argument("model", nargs="*", metavar="MODEL_FILE", help=files_help)
    s.add_argument("--zoo", metavar="NAME", help=zoo_help)


def finite_float(text: str) -> float:
    """An argparse ``type``: a float that is a number (``float`` alone takes nan and inf, which
    then run through the pipeline: a threshold of nan keeps nothing, a scale of nan makes every
    score nan)."""
    import math

    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def cv_mean(values: list[float]) -> tuple[float, ...]:
    """``--mean`` values as cv2.dnn.blobFromImage reads ``mean``: one number is ``Scalar(v, 0, 0, 0)``
    (first channel only), several are per channel."""
    v = [float(x) for x in values]
    return (v[0], 0.0, 0.0) if len(v) == 1 else tuple(v)


class CvMeanAction(argparse.Action):
    """Store ``--mean`` with blobFromImage's rule (:func:`cv_mean`) and say so on stderr when one
    non-zero number was given."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        vals = list(values)
        if len(vals) == 1 and float(vals[0]) != 0.0:
            print(MEAN_NOTE.format(v=float(vals[0])), file=sys.stderr)
        setattr(namespace, self.dest, list(cv_mean(vals)))


def image_labels(images: list[str]) -> list[str]:
    """One label per image for the files written about it (``run``'s pictures, ``compare``'s plots):
    its stem; stem and extension where stems repeat (x.jpg, x.png); and where different files still
    share a label (a/x.jpg, b/x.jpg) the later ones get _2, _3, ..., so no file is written over
    another's. The same image given twice keeps its one label."""
    stems = [Path(i).stem for i in images]
    names = [s if stems.count(s) == 1 else f"{s}_{Path(i).suffix.lstrip('.')}" for s, i in zip(stems, images)]
    owner: dict[str, Path] = {}
    labels = []
    for name, img in zip(names, images):
        src, pick, k = Path(img).resolve(), name, 2
        while owner.setdefault(pick, src) != src:
            pick, k = f"{name}_{k}", k + 1
        labels.append(pick)
    return labels


def stride_hint(net: Any, inputs: dict[str, tuple[int, ...]] | None) -> str | None:
    """What to say when ``net`` failed on an image input of shape ``inputs`` (a ShapeError's
    ``inputs``) whose height or width is not a multiple of the net's stride: the largest
    downsampling of a feature map at the net's declared input size (YOLO: 32; its routes join maps
    of two scales, which line up only at multiples of it). None when the net declares no size or
    does not downsample, or the size is a multiple already (then the stride is not the cause)."""
    if not inputs or len(inputs) != 1:
        return None
    (name, shape), = inputs.items()
    declared = tuple((getattr(net, "input_shapes", None) or {}).get(name) or ())
    if len(shape) != 4 or len(declared) != 4 or declared == tuple(shape) or min(declared[2:]) <= 0:
        return None
    try:
        shapes = net.infer_shapes({name: declared})
    except Exception:  # noqa: BLE001 - the declared size fails too: the stride is not the cause
        return None
    dh, dw = declared[2], declared[3]
    strides = [dh // s[2] for s in shapes.values() if len(s) == 4 and s[2] > 0 and s[3] > 0
               and dh % s[2] == 0 and dw % s[3] == 0 and dh // s[2] == dw // s[3]]
    stride = max(strides, default=1)
    h, w = shape[2], shape[3]
    if stride <= 1 or (h % stride == 0 and w % stride == 0):
        return None

    def near(v: int) -> tuple[int, int]:  # the multiples of the stride below and above v (v itself twice)
        lo = max(stride, v // stride * stride)
        return (lo, lo) if lo >= v or v % stride == 0 else (lo, lo + stride)

    (w0, w1), (h0, h1) = near(w), near(h)
    sizes = dict.fromkeys([f"--size {w0} {h0}", f"--size {w1} {h1}"])
    return (f"the net downsamples by {stride} (at its declared size {dw}x{dh}) and joins feature maps of "
            f"different scales: the input width and height must be multiples of {stride}, e.g. "
            + " or ".join(sizes))
