"""``refnet generate``: write a model with seeded random weights, plus a sidecar that describes it.

Every architecture-only model runs offline through ``run``/``compare``/``bench``:

- refnet's own architectures (:data:`refnet.archs.BUILTINS`: mobilenet-ssd, googlenet,
  deeplab-v3plus) and two Torch7 ones written here: fast-neural-style in its two published
  variants (:func:`fast_neural_style`, jcjohnson/fast-neural-style ``models.lua``);
- every architecture-only zoo entry: a Caffe prototxt gets a seeded ``.caffemodel``
  (:func:`refnet.archs.seeded_caffemodel`), a Darknet cfg a seeded ``.weights``
  (:func:`refnet.seeded.seeded_darknet_weights`), the ``fns-*`` entries the fast-neural-style
  generator of their variant, ``enet`` the ENet of ``enet-cityscapes`` (same e-lab architecture)
  with every learned tensor re-seeded (:func:`refnet.t7write.reseed`).

Weights are He-scaled and then calibrated per layer on a seeded random image
(:func:`refnet.seeded.calibrate_scales`) so activations stay O(1) even through BN-free nets.

The sidecar ``PREFIX.refnet.json`` records the preprocessing (blobFromImage terms), the task,
the labels (copied next to the model as ``PREFIX.labels.txt``) and ``"seeded_weights": true``.
:func:`sidecar_entry` turns it back into a :class:`refnet.zoo.ModelEntry`; the model resolver
(:func:`refnet.pipelines.entry_for_files`) reads it for any model file given next to it, so
``refnet run/compare/bench PREFIX.*`` use the right blob and say that labels are meaningless.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import RefnetError
from refnet.t7write import Obj

__all__ = ["SIDECAR_SUFFIX", "GeneratedModel", "generate", "generator_names", "sidecar_entry", "sidecar_for",
           "fast_neural_style", "SEEDED_NOTE"]

SIDECAR_SUFFIX = ".refnet.json"
SIDECAR_VERSION = 1
SEEDED_NOTE = "seeded random weights: labels are meaningless"

# refnet's own architectures: name -> (task, zoo entry whose preprocessing/labels they share)
_BUILTIN_ZOO = {"mobilenet-ssd": "mobilenet-ssd-voc", "googlenet": "bvlc-googlenet", "deeplab-v3plus": None,
               "faster-rcnn-vgg16": "faster-rcnn-vgg16", "rfcn-resnet50": "rfcn-resnet50"}
_FNS_VARIANTS = {"fast-neural-style-eccv16": "eccv16", "fast-neural-style-instance-norm": "instance_norm"}


class GenerateError(RefnetError, ValueError):
    """A model cannot be generated as asked (unknown name, a needed file missing)."""


@dataclass
class GeneratedModel:
    """What :func:`generate` wrote: the model files (loader order), the sidecar and its entry."""

    paths: list[Path]
    sidecar: Path
    entry: Any  # refnet.zoo.ModelEntry


def generator_names() -> list[str]:
    """Every name :func:`generate` accepts, once each: refnet's architectures, then the
    architecture-only zoo entries (faster-rcnn-vgg16 and rfcn-resnet50 are both)."""
    from refnet import archs, zoo

    names = list(archs.BUILTINS) + list(_FNS_VARIANTS) + [e.name for e in zoo.entries() if e.arch_only]
    return list(dict.fromkeys(names))


def _ext(prefix: Path, ext: str) -> Path:
    """``prefix`` + ``ext`` (a dot in the prefix, as in squeezenet-1.0, is not an extension)."""
    return prefix.with_name(prefix.name + ext)


# ---- sidecar ---------------------------------------------------------------------------------------
def _pre_dict(p: Any) -> dict[str, Any]:
    return {"scale": p.scale, "size": list(p.size) if p.size else None, "mean": list(p.mean), "swap_rb": p.swap_rb,
            "crop": p.crop, "layout": p.layout, "gray": p.gray}


def write_sidecar(prefix: Path, files: list[Path], *, framework: str, task: str, preprocess: Any,
                  labels: list[str] | None, label_offset: int, source: str, seed: int, description: str) -> Path:
    """Write ``PREFIX.refnet.json`` (and ``PREFIX.labels.txt`` when there are labels)."""
    lab = None
    if labels:
        lab = prefix.with_name(prefix.name + ".labels.txt")
        lab.write_text("\n".join(labels) + "\n", encoding="utf-8")
    doc = {"refnet_sidecar": SIDECAR_VERSION, "name": f"{source} (seeded {seed})", "source": source,
           "framework": framework, "task": task, "files": [f.name for f in files], "preprocess": _pre_dict(preprocess),
           "labels": lab.name if lab else None, "label_offset": label_offset, "seeded_weights": True, "seed": seed,
           "description": description}
    side = prefix.with_name(prefix.name + SIDECAR_SUFFIX)
    side.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return side


def sidecar_for(path: str | Path) -> Path | None:
    """The sidecar describing model file ``path`` (``<stem>.refnet.json`` beside it naming it), or None."""
    p = Path(path)
    side = p.with_name(p.name[: -len(p.suffix)] + SIDECAR_SUFFIX if p.suffix else p.name + SIDECAR_SUFFIX)
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return side if isinstance(doc, dict) and p.name in doc.get("files", ()) else None


def sidecar_entry(side: str | Path) -> Any:
    """The :class:`refnet.zoo.ModelEntry` a sidecar describes (labels as an absolute path)."""
    from refnet.zoo import ModelEntry, ModelFile, Preprocess

    side = Path(side)
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
        pre = doc["preprocess"]
        files = [ModelFile(f, "model" if i == 0 else "weights") for i, f in enumerate(doc["files"])]
        labels = str((side.parent / doc["labels"]).resolve()) if doc.get("labels") else None
        return ModelEntry(
            str(doc["name"]), str(doc["framework"]), str(doc["task"]), tuple(files),
            Preprocess(float(pre["scale"]), tuple(pre["size"]) if pre.get("size") else None,
                       tuple(float(v) for v in pre["mean"]), bool(pre["swap_rb"]), bool(pre.get("crop", False)),
                       str(pre.get("layout", "NCHW")), bool(pre.get("gray", False))),
            labels=labels, label_offset=int(doc.get("label_offset", 0)), description=str(doc.get("description", "")),
            seeded=bool(doc.get("seeded_weights", False)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RefnetError(f"{side}: not a valid refnet sidecar ({e})") from None


# ---- fast-neural-style (Torch7) ------------------------------------------------------------------------
def _t(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def _mod(cls: str, **fields: Any) -> Obj:
    f: dict[str, Any] = {"output": _t(np.zeros(0)), "gradInput": _t(np.zeros(0)), "train": False,
                         "_type": "torch.FloatTensor"}
    f.update(fields)
    return Obj(cls, f)


def fast_neural_style(variant: str, seed: int = 0, width: int = 32) -> tuple[Obj, Obj]:
    """jcjohnson/fast-neural-style's generator (``models.lua``, arch
    ``c9s1-32,d64,d128,R128x5,u64,u32,c9s1-3``) with seeded weights; returns (model, last conv).

    ``eccv16``: a 40-pixel reflection pad in front, batch norm, residual blocks of two unpadded 3x3
    convs with a ShaveImage(2) shortcut; ``instance_norm``: reflection padding before every conv,
    instance norm, Identity shortcuts. Both upsample with SpatialFullConvolution (3x3, stride 2,
    pad 1, adj 1), end in a 9x9 conv, Tanh, MulConstant(150) and TotalVariation (identity)."""
    if variant not in ("eccv16", "instance_norm"):
        raise ValueError(f"variant must be 'eccv16' or 'instance_norm', got {variant!r}")
    rng = np.random.default_rng(seed)
    inorm = variant == "instance_norm"

    def norm(n: int) -> Obj:
        if inorm:
            return _mod("nn.InstanceNormalization", eps=1e-5, nOutput=n, prev_N=-1,
                        weight=_t(rng.uniform(0.8, 1.2, n)), bias=_t(rng.normal(0, 0.05, n)))
        return _mod("nn.SpatialBatchNormalization", eps=1e-5, momentum=0.1, affine=True, nOutput=n,
                    running_mean=_t(rng.normal(0, 0.1, n)), running_var=_t(rng.uniform(0.5, 1.5, n)),
                    weight=_t(rng.uniform(0.8, 1.2, n)), bias=_t(rng.normal(0, 0.05, n)))

    def conv(n_in: int, n_out: int, k: int, s: int, pad: bool) -> list[Obj]:
        p = (k - 1) // 2 if pad else 0
        mods = []
        if inorm and pad:
            mods.append(_mod("nn.SpatialReflectionPadding", pad_l=p, pad_r=p, pad_t=p, pad_b=p))
            p = 0
        w = rng.normal(0.0, math.sqrt(2.0 / (n_in * k * k)), (n_out, n_in, k, k))
        mods.append(_mod("nn.SpatialConvolution", nInputPlane=n_in, nOutputPlane=n_out, kW=k, kH=k, dW=s, dH=s,
                         padW=p, padH=p, weight=_t(w), bias=_t(rng.normal(0, 0.05, n_out))))
        return mods

    def relu() -> Obj:
        return _mod("nn.ReLU", threshold=0, val=0, inplace=True)

    def up(n_in: int, n_out: int) -> Obj:
        w = rng.normal(0.0, math.sqrt(2.0 / (n_in * 9 / 4)), (n_in, n_out, 3, 3))
        return _mod("nn.SpatialFullConvolution", nInputPlane=n_in, nOutputPlane=n_out, kW=3, kH=3, dW=2, dH=2,
                    padW=1, padH=1, adjW=1, adjH=1, weight=_t(w), bias=_t(rng.normal(0, 0.05, n_out)))

    c1, c2, c3 = width, 2 * width, 4 * width
    mods: list[Obj] = [] if inorm else [_mod("nn.SpatialReflectionPadding", pad_l=40, pad_r=40, pad_t=40, pad_b=40)]
    mods += conv(3, c1, 9, 1, True) + [norm(c1), relu()]
    mods += conv(c1, c2, 3, 2, True) + [norm(c2), relu()]
    mods += conv(c2, c3, 3, 2, True) + [norm(c3), relu()]
    for _ in range(5):
        body = conv(c3, c3, 3, 1, inorm) + [norm(c3), relu()] + conv(c3, c3, 3, 1, inorm) + [norm(c3)]
        short = _mod("nn.Identity") if inorm else _mod("nn.ShaveImage", size=2)
        mods.append(_mod("nn.Sequential", modules=[
            _mod("nn.ConcatTable", modules=[_mod("nn.Sequential", modules=body), short]),
            _mod("nn.CAddTable", inplace=False, gradInput=[])]))
    mods += [up(c3, c2), norm(c2), relu(), up(c2, c1), norm(c1), relu()]
    last = conv(c1, 3, 9, 1, True)
    mods += last + [_mod("nn.Tanh"), _mod("nn.MulConstant", constant_scalar=150.0, inplace=False),
                    _mod("nn.TotalVariation", strength=1e-6, x_diff=_t(np.zeros(0)), y_diff=_t(np.zeros(0)))]
    return _mod("nn.Sequential", modules=mods), last[-1]


_T7_WEIGHTED = ("nn.SpatialConvolution", "nn.SpatialConvolutionMM", "nn.SpatialDilatedConvolution",
                "nn.SpatialFullConvolution", "nn.Linear", "cudnn.SpatialConvolution", "cudnn.SpatialFullConvolution")


def _t7_weighted_modules(root: Any) -> list[Any]:
    """Convolution/linear modules under ``root`` in execution order (containers' ``modules`` in order)."""
    found: list[Any] = []

    def visit(m: Any) -> None:
        fields = getattr(m, "fields", None)
        if not isinstance(fields, dict):
            if isinstance(m, dict) and "model" in m:  # a training checkpoint table
                visit(m["model"])
            return
        if m.class_name in _T7_WEIGHTED:
            found.append(m)
        mods = fields.get("modules")
        if mods is not None:
            for c in (mods.array_part() if hasattr(mods, "array_part") else list(mods)):
                visit(c)

    visit(root)
    return found


def _calibrate_t7(path: Path, root: Any, pre: Any, seed: int, size: tuple[int, int]) -> bool:
    """Rescale the weights and bias of every conv/linear module of ``root`` (written at ``path``) so
    its output RMS is 1 on a seeded random image (:func:`refnet.seeded.calibrate_scales`), and
    rewrite the file. Modules are matched to refnet's layers by execution order and weight size;
    returns False (file unchanged) when they do not match one to one."""
    from refnet import t7write
    from refnet.net import load_torch
    from refnet.seeded import WEIGHTED_OPS, calibrate_scales, calibration_blob

    net = load_torch(path)
    nodes = [n for n in net.graph.nodes if n.op in WEIGHTED_OPS and "weight" in n.params]
    mods = _t7_weighted_modules(root)
    if len(nodes) != len(mods) or any(np.asarray(n.params["weight"]).size != np.asarray(m.fields["weight"]).size
                                      for n, m in zip(nodes, mods)):
        return False
    w, h = size
    scales = calibrate_scales(net, calibration_blob((1, 3, h, w), pre, seed))
    for n, m in zip(nodes, mods):
        f = scales.get(n.name, 1.0)
        for k in ("weight", "bias"):
            if isinstance(m.fields.get(k), np.ndarray) and m.fields[k].size:
                m.fields[k] = (m.fields[k] * f).astype(m.fields[k].dtype)
    t7write.save(path, root)
    return True


def _write_fns(prefix: Path, variant: str, seed: int, size: tuple[int, int] | None, pre: Any) -> list[Path]:
    """fast-neural-style, calibrated so every conv's output (the Tanh input too) has RMS 1."""
    from refnet import t7write

    model, _ = fast_neural_style(variant, seed)
    path = _ext(prefix, ".t7")
    t7write.save(path, model)
    if not _calibrate_t7(path, model, pre, seed, size or (256, 256)):
        raise GenerateError("internal: fast-neural-style modules do not match the imported layers")
    return [path]


def _write_enet(prefix: Path, seed: int, pre: Any, size: tuple[int, int] | None = None) -> list[Path]:
    from refnet import t7write, zoo
    from refnet.weights_import.t7 import read_t7

    loc = zoo.find("enet-cityscapes")
    src = loc.path_of("model")
    if src is None:
        raise GenerateError("the ENet architecture is taken from enet-cityscapes's model file, which is not on disk "
                            f"(searched {', '.join(str(r) for r in zoo.search_roots())}; set REFNET_MODELS)")
    root = read_t7(Path(src).read_bytes(), source=str(src))
    if t7write.reseed(root, seed) == 0:
        raise GenerateError(f"{src}: no learned tensors found to re-seed")
    path = t7write.save(_ext(prefix, ".net"), root)
    _calibrate_t7(path, root, pre, seed, size or pre.size or (512, 256))
    return [path]


# ---- Caffe / Darknet -------------------------------------------------------------------------------------
def _write_caffe_seeded(prefix: Path, prototxt: Path, seed: int, shape: tuple[int, ...] | None, pre: Any,
                        calibrate: bool = True) -> list[Path]:
    from refnet.archs import seeded_caffemodel

    proto = _ext(prefix, ".prototxt")
    shutil.copyfile(prototxt, proto)
    model = _ext(prefix, ".caffemodel")
    model.write_bytes(seeded_caffemodel(proto, seed, shape, preprocess=pre, calibrate=calibrate))
    return [proto, model]


def _write_darknet_seeded(prefix: Path, cfg: Path, seed: int, size: tuple[int, int] | None, pre: Any,
                          calibrate: bool = True) -> list[Path]:
    import re

    from refnet.seeded import seeded_darknet_weights

    out = _ext(prefix, ".cfg")
    text = cfg.read_text(encoding="utf-8", errors="replace")
    if size is not None:  # the [net] section's input size
        text = re.sub(r"(?m)^(\s*width\s*=\s*)\d+", rf"\g<1>{size[0]}", text, count=1)
        text = re.sub(r"(?m)^(\s*height\s*=\s*)\d+", rf"\g<1>{size[1]}", text, count=1)
    out.write_text(text, encoding="utf-8")
    weights = _ext(prefix, ".weights")
    weights.write_bytes(seeded_darknet_weights(out, seed, pre, calibrate))
    return [out, weights]


# ---- the one entry point ---------------------------------------------------------------------------------
def _labels_of(entry: Any) -> list[str] | None:
    if entry is None:
        return None
    from refnet import zoo

    return zoo.read_labels(entry)


def generate(name: str, prefix: str | Path, seed: int = 0, size: tuple[int, int] | None = None, *,
             calibrate: bool = True) -> GeneratedModel:
    """Write model ``name`` (see :func:`generator_names`) with seeded weights at ``prefix`` (a path
    without extension) and its sidecar; ``size`` = (width, height) of the input. ``calibrate=False``
    skips the per-layer calibration of Caffe and Darknet weights (shapes and counts only, faster)."""
    from refnet import archs, zoo

    prefix = Path(prefix)
    if not prefix.resolve().parent.is_dir():
        raise FileNotFoundError(f"folder {prefix.parent} does not exist")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"--size needs a positive width and height, got {size}")
    size = tuple(int(v) for v in size) if size else None  # type: ignore[assignment]
    if name in archs.BUILTINS:
        task, make = archs.BUILTINS[name]
        kwargs: dict[str, Any] = {"seed": seed}
        if size:
            kwargs["input_hw"] = (size[1], size[0])
        b = make(**kwargs)
        paths = list(b.write(prefix))
        hw = b.input_shape[2:]
        like = zoo.get(_BUILTIN_ZOO[name]) if _BUILTIN_ZOO[name] else None
        if like is not None:
            pre = dataclasses.replace(like.preprocess, size=(hw[1], hw[0]))
            labels, offset = _labels_of(like), like.label_offset
        else:  # deeplab-v3plus: the DeepLab/MobileNet convention, RGB (x - 127.5) / 127.5, VOC classes
            pre = zoo.Preprocess(0.007843, (hw[1], hw[0]), (127.5, 127.5, 127.5), True)
            voc = zoo.get("mobilenet-ssd-voc")
            labels, offset = _labels_of(voc), 1
        return _done(prefix, paths, "caffe", task, pre, labels, offset, name, seed,
                     f"refnet.archs.{make.__name__} with seeded weights")
    if name in _FNS_VARIANTS:
        pre = zoo.get("fns-eccv16-la-muse").preprocess
        paths = _write_fns(prefix, _FNS_VARIANTS[name], seed, size, pre)
        return _done(prefix, paths, "torch", "stylize", pre, None, 0, name, seed,
                     f"fast-neural-style {_FNS_VARIANTS[name]} generator, seeded weights")
    try:
        entry = zoo.get(name)
    except zoo.UnknownModelError:
        raise GenerateError(f"unknown architecture {name!r} (not a refnet architecture nor a zoo model); "
                            f"`refnet generate` writes: {', '.join(generator_names())}") from None
    if not entry.arch_only:
        raise GenerateError(f"{entry.name} has real weights (`refnet models path {entry.name}`); generate writes "
                            f"seeded weights for: {', '.join(generator_names())}")
    pre = entry.preprocess if size is None else dataclasses.replace(entry.preprocess, size=size)
    if entry.framework == "torch":
        if entry.name.startswith("fns-"):
            variant = "eccv16" if entry.name.startswith("fns-eccv16") else "instance_norm"
            paths = _write_fns(prefix, variant, seed, size, pre)
        else:
            paths = _write_enet(prefix, seed, pre, size)
    else:
        arch = zoo.find(entry.name).path_of("model")
        if arch is None:
            raise GenerateError(f"{entry.name}: its architecture file {entry.main_files[0].path} is not on disk "
                                f"(searched {', '.join(str(r) for r in zoo.search_roots())}); set REFNET_MODELS "
                                f"or run `refnet models fetch {entry.name}` (needs network)")
        if entry.framework == "caffe":
            shape = None if pre.size is None else (1, 1 if pre.gray else 3, pre.size[1], pre.size[0])
            paths = _write_caffe_seeded(prefix, Path(arch), seed, shape, pre, calibrate)
        else:
            paths = _write_darknet_seeded(prefix, Path(arch), seed, size, pre, calibrate)
    return _done(prefix, paths, entry.framework, entry.task, pre, _labels_of(entry), entry.label_offset, entry.name,
                 seed, f"{entry.name} architecture with seeded weights: {entry.description}")


def _done(prefix: Path, paths: list[Path], framework: str, task: str, pre: Any, labels: list[str] | None,
          offset: int, source: str, seed: int, description: str) -> GeneratedModel:
    side = write_sidecar(prefix, paths, framework=framework, task=task, preprocess=pre, labels=labels,
                         label_offset=offset, source=source, seed=seed, description=description)
    return GeneratedModel(paths, side, sidecar_entry(side))
