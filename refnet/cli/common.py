"""Arguments several ``refnet`` subcommands share: the model (files or ``--zoo``) and ``--mean``.

Preprocessing flags mirror ``cv2.dnn.blobFromImage``, including its rule for a single ``--mean``
value (:class:`CvMeanAction`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["MODEL_FILES_HELP", "add_model_args", "CvMeanAction", "cv_mean", "MEAN_NOTE"]

MODEL_FILES_HELP = "model files (.prototxt/.caffemodel, .t7/.net, .cfg/.weights, .onnx); or use --zoo"

MEAN_NOTE = ("note: --mean {v:g} subtracts {v:g} from the first channel only, as cv2.dnn.blobFromImage(mean={v:g}) "
             "does; give three values (--mean {v:g} {v:g} {v:g}) for all channels")


def add_model_args(s: argparse.ArgumentParser, zoo_help: str, files_help: str = MODEL_FILES_HELP) -> None:
    """The model of a subcommand: positional ``MODEL_FILE``\\ s or ``--zoo NAME``
    (:func:`refnet.resolver.resolve_model` takes exactly one of them)."""
    s.add_argument("model", nargs="*", metavar="MODEL_FILE", help=files_help)
    s.add_argument("--zoo", metavar="NAME", help=zoo_help)


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
