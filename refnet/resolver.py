"""The one model resolver: files or a zoo name -> a loaded net, what it is, how to feed it.

- Model files: loaded as given; a sidecar written by ``refnet generate`` (``<stem>.refnet.json``)
  or a zoo entry whose architecture file they are supplies the preprocessing, task and labels
  (:func:`refnet.pipelines.entry_for_files`). A Caffe prototxt or Darknet cfg given alone runs
  with seeded weights when ``seeded_weights`` is a seed.
- A zoo name: its files from ``$REFNET_MODELS`` / the checkout's sibling ``shared/models`` /
  the download cache (:func:`refnet.zoo.find`). An architecture-only entry (`refnet models list`
  status ``arch``, or no file at all for the Torch7 ones) runs with seeded, calibrated weights
  when ``seeded_weights`` is a seed: :func:`refnet.generate.generate` writes it into ``workdir``.

:class:`ResolvedModel` says whether the weights are seeded (pictures then say that labels are
meaningless). :func:`preprocess_for` and :func:`random_input` say how to feed it;
:func:`image_files` expands ``--image`` arguments.

This module is library code, not command-line code: :func:`refnet.pipelines.resolve_model` (public)
and :func:`refnet.demo.run_demo` use it as well as the commands in :mod:`refnet.cli`, so it lives
above ``refnet/cli/`` (nothing below the command line may import ``refnet.cli``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResolvedModel", "resolve_model", "check_model_choice", "preprocess_for", "size_input_shape",
           "random_input", "IMAGE_EXTS", "image_files"]


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
    return (f"; it is architecture only: run it with seeded random weights (run, compare, bench: --seeded-weights "
            f"SEED; convert: --seeded-weights [--seed SEED]), or write them once with `refnet generate {name} --out "
            "PREFIX` and give the files")


def check_model_choice(files: Sequence[Any], zoo_name: str | None, error: type[Exception] = ValueError) -> None:
    """``error`` unless exactly one of model ``files`` and ``zoo_name`` is given."""
    if zoo_name and files:
        raise error("give either model files or --zoo NAME, not both")
    if not zoo_name and not files:
        raise error("no model: give the model files (e.g. deploy.prototxt weights.caffemodel) or --zoo NAME")


def existing_files(files: Sequence[str]) -> list[str]:
    """``files`` as strings; FileNotFoundError naming the first that is not a file (a folder is
    told apart: IsADirectoryError listing the model files in it)."""
    from refnet.net import folder_message

    for f in files:
        if Path(f).is_dir():
            raise IsADirectoryError(f"{f} {folder_message(f)}")
        if not Path(f).is_file():
            raise FileNotFoundError(f"model file not found: {f}")
    return [str(f) for f in files]


@dataclass
class _Request:
    """What the caller asked :func:`resolve_model` for, besides the model itself."""

    quirks: str
    seeded_weights: int | None
    workdir: str | None
    zero_darknet: bool
    input_shape: Sequence[int] | None
    calibrate: bool

    def folder(self) -> Path:
        """Where generated weights go: ``workdir``, else a new temporary folder."""
        p = Path(self.workdir) if self.workdir else Path(tempfile.mkdtemp(prefix="refnet-seeded-"))
        p.mkdir(parents=True, exist_ok=True)
        return p

    def seeded_note(self, how: str, written: Any) -> str:
        return (f"weights: seeded random (He-scaled{how}, seed {self.seeded_weights})"
                + ("" if self.workdir else f", written to {written}"))


def resolve_model(files: Sequence[str] = (), zoo_name: str | None = None, *, quirks: str = "none",
                  seeded_weights: int | None = None, workdir: str | None = None, zero_darknet: bool = False,
                  input_shape: Sequence[int] | None = None, calibrate: bool = True) -> ResolvedModel:
    """Load model ``files`` or zoo model ``zoo_name`` (see the module docstring). ``workdir``
    receives generated weights (a new temporary folder by default); ``zero_darknet`` loads an
    architecture-only Darknet cfg with zero weights (shapes and counts only, ``refnet info``);
    ``calibrate=False`` skips the per-layer calibration of seeded weights (counts only)."""
    check_model_choice(files, zoo_name)
    req = _Request(quirks, seeded_weights, workdir, zero_darknet, input_shape, calibrate)
    if zoo_name:
        rm = _resolve_zoo(zoo_name, req)
        if rm is not None:
            return rm
    return _resolve_files(existing_files(files), req)


def _resolve_zoo(zoo_name: str, req: _Request) -> ResolvedModel | None:
    """A zoo model: its files when found, seeded/zero weights for an architecture-only one; else
    ModelMissingError (with the seeded-weights hint for architecture-only entries)."""
    from refnet import zoo

    loc = zoo.find(zoo_name)
    entry = loc.entry
    if loc.found:
        paths = [str(p) for p in loc.main_paths]
        return _load(paths, entry.name, entry, zoo.read_labels(entry, loc.roots), [], req.quirks)
    if entry.arch_only and req.zero_darknet and entry.framework == "darknet" and loc.status == "arch":
        return _zero_darknet(str(loc.path_of("model")), entry.name, entry, zoo.read_labels(entry), [], req.quirks)
    if entry.arch_only and req.seeded_weights is not None:
        from refnet.generate import generate
        from refnet.two_stage import ARCHS as _TWO_STAGE

        shape = req.input_shape
        size = (int(shape[3]), int(shape[2])) if shape is not None and len(shape) == 4 else None
        g = generate(entry.name, req.folder() / entry.name, req.seeded_weights, size, calibrate=req.calibrate)
        how = ", RPN and detection heads calibrated" if entry.name in _TWO_STAGE else (
            ", calibrated per layer" if req.calibrate else "")
        notes = [req.seeded_note(how, g.paths[-1])]
        return _load([str(p) for p in g.paths], g.entry.name, g.entry, zoo.read_labels(g.entry), notes, req.quirks)
    try:
        loc.main_paths  # noqa: B018 (raises ModelMissingError naming REFNET_MODELS and fetch)
    except zoo.ModelMissingError as e:
        raise zoo.ModelMissingError(str(e) + (_seeded_hint(entry.name) if entry.arch_only else "")) from None
    return None


def _resolve_files(paths: list[str], req: _Request) -> ResolvedModel:
    """Model files, with the sidecar's / zoo entry's name, preprocessing and labels when one matches."""
    from refnet import zoo
    from refnet.pipelines import entry_for_files

    entry, root = entry_for_files(paths)
    name = entry.name if entry is not None else Path(paths[0]).stem
    labels = zoo.read_labels(entry, (root,) if root is not None else ()) if entry is not None else None
    suffix = Path(paths[0]).suffix.lower() if len(paths) == 1 else None
    if suffix in (".prototxt", ".pbtxt", ".cfg") and req.seeded_weights is not None:
        w, notes = _write_seeded(paths[0], entry, req)
        rm = _load([paths[0], str(w)], name, entry, labels, notes, req.quirks)
        rm.seeded = True
        return rm
    if suffix == ".cfg" and req.zero_darknet:
        return _zero_darknet(paths[0], name, entry, labels, [], req.quirks)
    if suffix == ".onnx":
        from refnet.errors import ShapeError
        from refnet.net import Net, load_onnx

        shapes = None if req.input_shape is None else tuple(int(d) for d in req.input_shape)
        try:
            net: Net = load_onnx(paths[0], quirks=req.quirks, input_shapes=shapes)
        except ShapeError as e:
            if "pass input_shapes as a dict" in e.message:  # several inputs; one shape on the command line
                raise ShapeError(e.message.split("; pass")[0] + "; the command line feeds one blob: use the "
                                 "Python API, load_onnx(path, input_shapes={name: shape, ...})") from None
            if shapes is not None or "no fixed shape" not in e.message:
                raise
            hint = ("; give its shape: --size W H (run, compare), --input-size W H (bench) or --input-shape "
                    "(compare, info)")
            raise ShapeError(e.message.split("; pass input_shapes")[0] + hint, expected=e.expected, got=e.got) from None
        return ResolvedModel(net, name, entry, labels, [], False, paths)
    return _load(paths, name, entry, labels, [], req.quirks)


def _write_seeded(arch: str, entry: Any, req: _Request) -> tuple[Path, list[str]]:
    """Seeded weights for an architecture file given alone (Caffe prototxt, Darknet cfg): the
    weights file written into the work folder, and the note that says so."""
    seed, calibrate = req.seeded_weights, req.calibrate
    pre = entry.preprocess if entry is not None else None
    out = req.folder() / (Path(arch).stem + f".seed{seed}")
    if Path(arch).suffix.lower() == ".cfg":
        from refnet.seeded import seeded_darknet_weights

        w = out.with_name(out.name + ".weights")
        w.write_bytes(seeded_darknet_weights(arch, seed, pre, calibrate))
    else:
        from refnet.archs import seeded_caffemodel

        shape = tuple(req.input_shape) if req.input_shape else None
        if shape is None and pre is not None and pre.size is not None:
            shape = (1, 1 if pre.gray else 3, pre.size[1], pre.size[0])
        w = out.with_name(out.name + ".caffemodel")
        w.write_bytes(seeded_caffemodel(arch, seed, shape, preprocess=pre, calibrate=calibrate))
    return w, [req.seeded_note(", calibrated per layer" if calibrate else "", w)]


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


# ---- how to feed it ------------------------------------------------------------------------------------
def preprocess_for(rm: ResolvedModel, *, scale: float | None = None, size: Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, swap_rb: bool | None = None, crop: bool | None = None):
    """The zoo entry's :class:`refnet.zoo.Preprocess` (else refnet.pipelines' default for the net),
    with the blobFromImage-style overrides applied."""
    import dataclasses

    from refnet.pipelines import default_preprocess

    pre = rm.entry.preprocess if rm.entry is not None else default_preprocess(rm.net, "classify")
    change: dict[str, Any] = {}
    if scale is not None:
        change["scale"] = float(scale)
    if size is not None:
        change["size"] = (int(size[0]), int(size[1]))
    if mean is not None:
        change["mean"] = tuple(float(m) for m in mean)  # already cv2's rule (refnet.cli.common.CvMeanAction)
    if swap_rb is not None:
        change["swap_rb"] = bool(swap_rb)
    if crop is not None:
        change["crop"] = bool(crop)
    return dataclasses.replace(pre, **change) if change else pre


def size_input_shape(files: Sequence[str], size: Sequence[int], batch: int = 1) -> tuple[int, ...] | None:
    """The input shape ``--size W H`` asks for: ``batch`` x3xHxW, except that an ONNX file's own
    fixed batch and channel dims are kept (a grayscale model stays 1-channel); None for a file that
    is not ONNX (other readers take the blob's shape at run time)."""
    if not files or Path(files[0]).suffix.lower() != ".onnx":
        return None
    from refnet.weights_import.onnx import declared_input_dims

    w, h = int(size[0]), int(size[1])
    dims = declared_input_dims(files[0])
    if dims is None or len(dims) != 4:
        return (batch, 3, h, w)
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    return (fixed[0] or batch, fixed[1] or 3, h, w)


def onnx_batch(net: Any) -> int:
    """The batch an ONNX net was built for (its dims are fixed at load, the batch too, where
    Caffe/Darknet nets reshape to the blob); 1 for other nets."""
    if not (net.files and net.files[0] == "onnx" and len(net.input_names) == 1):
        return 1
    declared = net.input_shapes.get(net.input_names[0])
    return int(declared[0]) if declared and int(declared[0]) > 0 else 1


def random_input(rm: ResolvedModel, pre: Any, seed: int = 0, shape: Sequence[int] | None = None) -> np.ndarray:
    """A seeded input blob: a random uint8 image through ``pre`` when the input is an image of known
    size, else uniform [-1, 1) values of ``shape`` / the declared shape (batch 1; an ONNX model's
    declared batch, its dims being fixed). The memory budget is checked before anything is drawn.

    Raises ShapeError (a user error) when no shape can be inferred.
    """
    from refnet.errors import ShapeError
    from refnet.runtime.budget import check_memory

    rng = np.random.default_rng(seed)
    net = rm.net
    if len(net.input_names) > 1 and net.files and net.files[0] == "onnx":
        raise ShapeError(f"{rm.name} has {len(net.input_names)} inputs ({', '.join(net.input_names)}); the command "
                         "line feeds one blob: use the Python API, net.forward({name: array, ...})")
    declared = net.input_shapes.get(net.input_names[0]) if len(net.input_names) == 1 else None
    batch = onnx_batch(net)

    def uniform(shp: tuple[int, ...]) -> np.ndarray:  # drawn in float64, then float32: checked before
        check_memory(math.prod(shp) * (8 + 4), "a random input of " + "x".join(map(str, shp)))
        return rng.uniform(-1.0, 1.0, shp).astype(np.float32)

    if shape is not None:
        shp = tuple(int(d) for d in shape)
        if len(shp) != 4 or min(shp) <= 0:
            raise ShapeError("--input-shape needs four positive numbers", expected="N C H W", got=shp)
        return uniform(shp)
    if pre is not None and pre.size is not None and (declared is None or (len(declared) == 4 and declared[1] in (1, 3)
                                                                        and (declared[1] == 1) == bool(pre.gray))):
        w, h = pre.size
        if pre.layout == "NCWH":
            w, h = h, w
        check_memory(max(0, int(w)) * max(0, int(h)) * 3 * (1 + 4 * 3 + 1) * batch,
                     f"a random {int(w)}x{int(h)} image blob" + (f" (batch {batch})" if batch > 1 else ""))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = pre.blob(img)
        return np.repeat(x, batch, axis=0) if batch > 1 else x
    if declared and all(int(d) > 0 for d in declared):
        return uniform((batch,) + tuple(int(d) for d in declared[1:]))
    if len(net.input_names) > 1:  # each declared, maybe: but the command line feeds one blob
        raise ShapeError(f"{rm.name} has {len(net.input_names)} inputs ({', '.join(net.input_names)}); the command "
                         "line feeds one blob (two-stage detectors aside): use the Python API, "
                         "net.forward({name: array, ...})")
    raise ShapeError(f"cannot infer the input shape of {rm.name}: the model does not declare it and no "
                     "preprocessing size is known; pass --input-shape N C H W (or --size W H)")


# ---- --image arguments ---------------------------------------------------------------------------------
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def image_files(specs: list[str]) -> list[str]:
    """``--image`` arguments expanded: files as given, folders to their image files (sorted by name)."""
    out: list[str] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTS)}) in folder {p}")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"image not found: {p}")
    return out
