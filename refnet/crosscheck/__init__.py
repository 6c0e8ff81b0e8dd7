"""Cross-checks: run a model in refnet and in other backends and say, layer by layer, whether they agree.

Modules, one job each (arrows point down; nothing here imports ``refnet.cli``):

- ``orchestrator``: :func:`compare`, the comparison as named phases
- ``backends``: the :class:`~refnet.crosscheck.backends.Backend` interface, ``Candidate``, cv2 in-process
- ``local``: local errors (refnet's float64 kernel on a backend's own inputs), the streaming trace
- ``metrics``: the numbers of one blob against its reference (non-finite values compared as values)
- ``quirks``: known cv2 deviations and where they start; ``ties``: near-tie max-pooling argmax
- ``tasks``: task-level agreement (top-k, detections, argmax maps, images), tie-aware
- ``report``: Report / Comparison / LayerDiff, table and JSON; ``verdict``: the one verdict
- ``plot``: the PNG; ``onnx_candidates``: ONNX backends as compare candidates
  (``refnet compare`` itself is :mod:`refnet.cli.compare`)

``refnet.compare`` and ``refnet.crosscheck.compare`` are the function :func:`compare` (there is
no module of that name, so no import can shadow it).
"""

from __future__ import annotations

__all__ = ["compare", "Report", "Backend", "Candidate", "Cv2Backend"]


def __getattr__(name: str):  # lazy: `refnet compare --help` does not import numpy-heavy modules
    if name == "compare":
        from refnet.crosscheck.orchestrator import compare

        return compare
    if name == "Report":
        from refnet.crosscheck.report import Report

        return Report
    if name in ("Backend", "Candidate", "Cv2Backend"):
        from refnet.crosscheck import backends

        return getattr(backends, name)
    raise AttributeError(f"module 'refnet.crosscheck' has no attribute {name!r}")
