"""The one model resolver of the command line: files or a zoo name -> a loaded net, what it is, how to feed it.

- Model files: loaded as given; a sidecar written by ``refnet generate`` (``<stem>.refnet.json``)
  or a zoo entry whose architecture file they are supplies the preprocessing, task and labels
  (:func:`refnet.pipelines.entry_for_files`). A Caffe prototxt or Darknet cfg given alone runs
  with seeded weights when ``seeded_weights`` is a seed.
- A zoo name: its files from ``$REFNET_MODELS`` / the checkout's sibling ``shared/models`` /
  the download cache (:func:`refnet.zoo.find`). An architecture-only entry (`refnet models list`
  status ``arch``, or no file at all for the Torch7 ones) runs with seeded, calibrated weights
  when ``seeded_weights`` is a seed: :func:`refnet.generate.generate` writes it into ``workdir``.

:class:`ResolvedModel` says whether the weights are seeded (pictures then say that labels are
meaningless).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ResolvedModel", "resolve_model"]


@dataclass
class ResolvedModel:
    """A loaded net, its display name, zoo/sidecar entry and labels, notes for the user, and
    whether its weights are seeded random ones."""

    net: Any
    name: str
    entry: Any = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    seeded: bool = False
    paths: list[str] = field(default_factory=list)


def _seeded_hint(name: str) -> str:
    return (f"; it is architecture only: run it with seeded random weights (--seeded-weights SEED), or write "
            f"them once with `refnet generate {name} --out PREFIX`")


def resolve_model(files: Sequence[str] = (), zoo_name: str | None = None, *, quirks: str = "none",
                  seeded_weights: int | None = None, workdir: str | None = None, zero_darknet: bool = False,
                  input_shape: Sequence[int] | None = None, calibrate: bool = True) -> ResolvedModel:
    """Load model ``files`` or zoo model ``zoo_name`` (see the module docstring). ``workdir``
    receives generated weights (a new temporary folder by default); ``zero_darknet`` loads an
    architecture-only Darknet cfg with zero weights (shapes and counts only, ``refnet info``);
    ``calibrate=False`` skips the per-layer calibration of seeded weights (counts only)."""
    from refnet import zoo
    from refnet.pipelines import entry_for_files

    if zoo_name and files:
        raise ValueError("give either model files or --zoo NAME, not both")
    if not zoo_name and not files:
        raise ValueError("no model: give the model files (e.g. deploy.prototxt weights.caffemodel) or --zoo NAME")
    notes: list[str] = []

    def wd() -> Path:
        p = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="refnet-seeded-"))
        p.mkdir(parents=True, exist_ok=True)
        return p

    size = None
    if input_shape is not None and len(input_shape) == 4:
        size = (int(input_shape[3]), int(input_shape[2]))
    if zoo_name:
        loc = zoo.find(zoo_name)
        entry = loc.entry
        if loc.found:
            paths = [str(p) for p in loc.main_paths]
            return _load(paths, entry.name, entry, zoo.read_labels(entry, loc.roots), notes, quirks)
        if entry.arch_only and zero_darknet and entry.framework == "darknet" and loc.status == "arch":
            return _zero_darknet(str(loc.path_of("model")), entry.name, entry, zoo.read_labels(entry), notes, quirks)
        if entry.arch_only and seeded_weights is not None:
            from refnet.generate import generate

            g = generate(entry.name, wd() / entry.name, seeded_weights, size, calibrate=calibrate)
            from refnet.two_stage import ARCHS as _TWO_STAGE

            how = ", RPN and detection heads calibrated" if entry.name in _TWO_STAGE else (
                ", calibrated per layer" if calibrate else "")
            notes.append(f"weights: seeded random (He-scaled{how}, seed "
                         f"{seeded_weights})" + ("" if workdir else f", written to {g.paths[-1]}"))
            return _load([str(p) for p in g.paths], g.entry.name, g.entry, zoo.read_labels(g.entry), notes, quirks)
        try:
            loc.main_paths  # noqa: B018 (raises ModelMissingError naming REFNET_MODELS and fetch)
        except zoo.ModelMissingError as e:
            raise zoo.ModelMissingError(str(e) + (_seeded_hint(entry.name) if entry.arch_only else "")) from None
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"model file not found: {f}")
    paths = [str(f) for f in files]
    entry, root = entry_for_files(paths)
    name = entry.name if entry is not None else Path(paths[0]).stem
    labels = zoo.read_labels(entry, (root,) if root is not None else ()) if entry is not None else None
    suffixes = [Path(p).suffix.lower() for p in paths]
    if len(paths) == 1 and suffixes[0] in (".prototxt", ".pbtxt", ".cfg") and seeded_weights is not None:
        pre = entry.preprocess if entry is not None else None
        out = wd() / (Path(paths[0]).stem + f".seed{seeded_weights}")
        if suffixes[0] == ".cfg":
            from refnet.seeded import seeded_darknet_weights

            w = out.with_name(out.name + ".weights")
            w.write_bytes(seeded_darknet_weights(paths[0], seeded_weights, pre, calibrate))
        else:
            from refnet.archs import seeded_caffemodel

            shape = tuple(input_shape) if input_shape else None
            if shape is None and pre is not None and pre.size is not None:
                shape = (1, 1 if pre.gray else 3, pre.size[1], pre.size[0])
            w = out.with_name(out.name + ".caffemodel")
            w.write_bytes(seeded_caffemodel(paths[0], seeded_weights, shape, preprocess=pre, calibrate=calibrate))
        notes.append(f"weights: seeded random (He-scaled{', calibrated per layer' if calibrate else ''}, seed "
                     f"{seeded_weights})" + ("" if workdir else f", written to {w}"))
        rm = _load([paths[0], str(w)], name, entry, labels, notes, quirks)
        rm.seeded = True
        return rm
    if len(paths) == 1 and suffixes[0] == ".cfg" and zero_darknet:
        return _zero_darknet(paths[0], name, entry, labels, notes, quirks)
    if len(paths) == 1 and suffixes[0] == ".onnx":
        from refnet.net import Net, load_onnx

        shapes = None if input_shape is None else tuple(int(d) for d in input_shape)
        net: Net = load_onnx(paths[0], quirks=quirks, input_shapes=shapes)
        return ResolvedModel(net, name, entry, labels, notes, False, paths)
    return _load(paths, name, entry, labels, notes, quirks)


def _load(paths: list[str], name: str, entry: Any, labels: list[str] | None, notes: list[str], quirks: str
          ) -> ResolvedModel:
    import refnet

    net = refnet.load(*paths, quirks=quirks)
    seeded = bool(getattr(entry, "seeded", False))
    return ResolvedModel(net, name, entry, labels, notes, seeded, paths)


def _zero_darknet(cfg: str, name: str, entry: Any, labels: list[str] | None, notes: list[str], quirks: str
                  ) -> ResolvedModel:
    import refnet

    net = refnet.load_darknet(cfg, "zeros", quirks=quirks)
    net.files = None  # cv2 cannot run it without a weights file
    notes.append("weights: none on disk (architecture only): parameters counted, values zero")
    return ResolvedModel(net, name, entry, labels, notes, False, [cfg])
