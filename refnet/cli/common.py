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
           "finite_float"]

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
