"""The model zoo: a registry of named models, where their files come from, how to feed them.

Every entry names its files by a path relative to a *models root*. Lookup (:func:`find`)
searches ``$REFNET_MODELS`` first, then the download cache (``$REFNET_CACHE``, default
``~/.cache/refnet/models``), and reports found/missing per file. Download URLs and published
checksums are those of the original publishers (OpenCV's download scripts, BVLC model
readmes, ...); for the files of ``/work/shared/models`` the sha256 is the one of its
``manifest.json`` and the URL is the source repository at the commit the manifest names.
A checksum nobody published is ``None``, never guessed.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import RefnetError

__all__ = [
    "ModelFile",
    "Preprocess",
    "ModelEntry",
    "FileStatus",
    "Located",
    "UnknownModelError",
    "ModelMissingError",
    "REGISTRY",
    "names",
    "entries",
    "get",
    "find",
    "search_roots",
    "cache_dir",
    "models_dir",
    "default_models_dir",
    "read_labels",
    "TASKS",
    "ROLES",
]

TASKS = ("classify", "detect", "segment", "stylize", "face")
# "model": architecture file (prototxt, cfg, t7); "weights": learned parameters; "labels": class
# names; "extra": documentation. `models path` prints the "model" and "weights" files.
ROLES = ("model", "weights", "labels", "extra")
MAIN_ROLES = ("model", "weights")


class UnknownModelError(RefnetError, KeyError):
    """No zoo entry has this name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelMissingError(RefnetError, FileNotFoundError):
    """A zoo model's files are not on disk; the message says how to fetch them."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: ``path`` relative to a models root, where to download it, its checksums.

    ``derived_from``/``derive`` describe files made locally from another file of the zoo
    (see :mod:`refnet.fetch`) rather than downloaded.
    """

    path: str
    role: str = "model"
    url: str | None = None
    sha256: str | None = None
    sha1: str | None = None
    md5: str | None = None
    size: int | None = None
    note: str = ""
    derived_from: str | None = None
    derive: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"ModelFile {self.path!r}: role must be one of {ROLES}, got {self.role!r}")
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise ValueError(f"ModelFile path must be relative and stay inside the root: {self.path!r}")
        for algo, n in (("sha256", 64), ("sha1", 40), ("md5", 32)):
            v = getattr(self, algo)
            if v is not None and not re.fullmatch(f"[0-9a-f]{{{n}}}", v):
                raise ValueError(f"ModelFile {self.path!r}: {algo} must be {n} lowercase hex digits, got {v!r}")

    @property
    def checksums(self) -> dict[str, str]:
        """The known checksums, ``{algorithm: hex digest}``."""
        return {a: v for a in ("sha256", "sha1", "md5") if (v := getattr(self, a)) is not None}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the input blob, in ``cv2.dnn.blobFromImage`` terms.

    ``size`` is (width, height) as in cv2 (``None``: keep the image size); ``mean`` is per
    channel in the order after ``swap_rb``; ``layout="NCWH"`` is MTCNN's MATLAB-trained layout
    (H and W swapped); ``gray`` converts a BGR image to one channel first.
    """

    scale: float = 1.0
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    swap_rb: bool = False
    crop: bool = False
    layout: str = "NCHW"
    gray: bool = False

    def blob(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Build the blob for ``image`` (HxWx3 BGR uint8, or HxW gray); ``size`` overrides ``self.size``."""
        from refnet.preprocess import blob_from_image

        img = np.asarray(image)
        if self.gray and img.ndim == 3 and img.shape[2] >= 3:
            import cv2

            img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_BGR2GRAY)
        b = blob_from_image(img, self.scale, size or self.size, self.mean, self.swap_rb, self.crop)
        if self.layout == "NCWH":
            b = np.ascontiguousarray(b.transpose(0, 1, 3, 2))
        return b


@dataclass(frozen=True)
class ModelEntry:
    """A named model: framework, files, preprocessing, labels, default task and license."""

    name: str
    framework: str
    task: str
    files: tuple[ModelFile, ...]
    preprocess: Preprocess = field(default_factory=Preprocess)
    labels: str | None = None
    label_offset: int = 0  # output index of the first label (1 when index 0 is background)
    license: str = ""
    description: str = ""
    arch_only: bool = False  # weights are not in /work/shared/models (run with seeded weights)
    outputs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    seeded: bool = False  # a model written by `refnet generate` (seeded random weights: labels meaningless)

    def __post_init__(self) -> None:
        if self.framework not in ("caffe", "torch", "darknet"):
            raise ValueError(f"{self.name}: unknown framework {self.framework!r}")
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {TASKS}, got {self.task!r}")
        if not any(f.role == "model" for f in self.files):
            raise ValueError(f"{self.name}: needs at least one file with role 'model'")

    @property
    def main_files(self) -> tuple[ModelFile, ...]:
        """The files a loader needs (architecture, weights), in loader order."""
        return tuple(f for f in self.files if f.role in MAIN_ROLES)

    def file(self, path: str) -> ModelFile:
        """The file of this entry at relative ``path`` (KeyError if it has none)."""
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)


# ---- helpers to write the table compactly ---------------------------------------------------------
def _gh(repo: str, commit: str, path: str) -> str:
    """A GitHub URL of ``path`` at ``commit`` that also resolves Git LFS files."""
    return f"https://github.com/{repo}/raw/{commit}/{path}"


_LIBFD = ("ShiqiYu/libfacedetection", "96a7cc0bbfcf05bac17c2df52bee0e8ba6c72964")
_ULTRA = ("Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB", "dffdddda9794a50607cba8f318507a28c1c27cab")
_MTCNN = ("kpzhang93/MTCNN_face_detection_alignment", "4617f55b08846aea1b2328e9c12e48df91b3d725")
_LENET = ("ethereon/caffe-tensorflow", "d870c51e8fa3452cb210b378c78be7ba4dcc8cf0")
_ENET = ("matsuren/ENet-training", "7f6c4bc0bf24c7c07adebf3e35896f9b10eb6fbc")
_YF = ("dog-qiuqiu/Yolo-Fastest", "96a2900d163196c396e73f3fdab04ca4dd9a2f70")
_DARKNET = ("pjreddie/darknet", "f6afaabcdf85f77e7aff2ec55c020c0e297c77f9")
_BVLC = ("BVLC/caffe", "9b891540183ddc834a02b2bd81b31afae71b2153")
_SQZ = ("forresti/SqueezeNet", "51147dc0681638c28aad593b9e923f3500117125")
_FNS_BASE = "https://cs.stanford.edu/people/jcjohns/fast-neural-style/models"


def _f(path: str, role: str, src: tuple[str, str] | None, repo_path: str | None, sha256: str | None,
       size: int | None = None, **kw: Any) -> ModelFile:
    url = _gh(src[0], src[1], repo_path) if src and repo_path else kw.pop("url", None)
    return ModelFile(path, role, url, sha256, size=size, **kw)


LABEL_FILES: dict[str, ModelFile] = {
    "labels/synset_words.txt": _f(
        "labels/synset_words.txt", "labels",
        ("IrvingShu/OpenCvandCaffeModel", "99c0fa62ca6aec0de6f94bafff00210b3053b9fb"), "synset_words.txt",
        "419d25da59e37f47b35ba71eb501d57521f6647238247195e9912e161059c749", 31676,
        note="1000 ILSVRC2012 synsets in Caffe class-index order"),
    "labels/voc.names": _f(
        "labels/voc.names", "labels", _DARKNET, "data/voc.names",
        "f14861775969fd006b382e005f96dc811ef062ea4a37356efb70d7775e90f743", 135),
    "labels/coco.names": _f(
        "labels/coco.names", "labels", _DARKNET, "data/coco.names",
        "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84", 625),
    "enet_cityscapes_torch/enet-classes.txt": _f(
        "enet_cityscapes_torch/enet-classes.txt", "labels",
        ("opencv/opencv", "a90cd650ed74858f0fb2cd438fee471d0f27ea6d"), "samples/data/dnn/enet-classes.txt",
        "be9429f24c252df71c051f1bc263ff74afb7fb2b126f773d4d5a75347712e283", 149,
        note="the 20 Cityscapes classes of matsuren/ENet-training train/data/loadCityscape.lua; "
             "byte-identical to OpenCV's samples/data/dnn/enet-classes.txt"),
}


def _labels(path: str) -> ModelFile:
    return LABEL_FILES[path]


# ---- preprocessing presets ---------------------------------------------------------------------------
_BGR_MEAN_IMAGENET = (104.0, 117.0, 123.0)
_P_YUFACE = Preprocess(1.0, (320, 240), (0.0, 0.0, 0.0), False)
_P_ULTRA = Preprocess(1 / 128, (320, 240), (127.0, 127.0, 127.0), True)
_P_YOLO320 = Preprocess(1 / 255, (320, 320), (0.0, 0.0, 0.0), True)
_P_YOLO416 = Preprocess(1 / 255, (416, 416), (0.0, 0.0, 0.0), True)
_P_FNS = Preprocess(1.0, None, (103.939, 116.779, 123.68), False)


def _mtcnn(size: tuple[int, int] | None) -> Preprocess:
    return Preprocess(0.0078125, size, (127.5, 127.5, 127.5), True, layout="NCWH")


_MTCNN_SHA = {
    1: ("adc1756d8515d3ca3a6a186c0fadab66fcae04bd8d3c6388e2fe8797a626dde4", 2353,
        "d6085e7f48ba7e6b6f1b58964595f6bce5b97bcc4866751f7b4bdc98f920c096", 28163),
    2: ("077686e89e606354f425366afdb2018777d93c6450b50e2c12301f8a97f6bb47", 3159,
        "39b20f7a57bb8176cc9466cea4dfd52da6a6f876de60c7ab222a309f2d0ca08c", 407910),
    3: ("a8385a3aad241acf5902b79466f9a359ea9f03a3b6dcbe1e1efa050908cf7d04", 3931,
        "9d6098829a4d6d318f37cec42142465637fafe4c673f2e93b69495bf7ca23d2d", 1558412),
    4: ("a742853593551a25be2a23f4e2d20a7af976ce1dbb581de6d730776ae553b625", 13509,
        "23dfa3f889a8dd5d1ffe7429229270892bcb19221ede13aaac8896ea060bfb76", 3798152),
}
_MTCNN_INFO = {
    1: ("P-Net (proposal), fully convolutional: scale the image so faces are ~12 px", None, ("pnet",)),
    2: ("R-Net (refine) on 24x24 face crops", (24, 24), ("rnet",)),
    3: ("O-Net (output, with 5 landmarks) on 48x48 face crops", (48, 48), ("onet",)),
    4: ("L-Net (landmark refinement): 15-channel input of five 24x24 patches", (24, 24), ("lnet",)),
}
_LIC_MTCNN = "MIT (c) 2016 Kaipeng Zhang"


def _mtcnn_entry(n: int) -> ModelEntry:
    ps, pz, ws, wz = _MTCNN_SHA[n]
    desc, size, aliases = _MTCNN_INFO[n]
    return ModelEntry(
        f"mtcnn-det{n}", "caffe", "face",
        (_f(f"mtcnn_caffe/det{n}.prototxt", "model", _MTCNN, f"code/codes/MTCNNv2/model/det{n}.prototxt", ps, pz),
         _f(f"mtcnn_caffe/det{n}.caffemodel", "weights", _MTCNN, f"code/codes/MTCNNv2/model/det{n}.caffemodel",
            ws, wz)),
        _mtcnn(size), license=_LIC_MTCNN, aliases=aliases,
        description=f"MTCNN {desc}; RGB, (x-127.5)/128, blob laid out N,C,W,H (MATLAB-trained)")


# ---- fast-neural-style (Johnson et al., ECCV 2016) ---------------------------------------------------
# sha1 published by OpenCV's testdata download script for the two models it uses; others unknown.
_FNS = (
    ("eccv16", "composition_vii", None), ("eccv16", "la_muse", None),
    ("eccv16", "starry_night", "5b5e115253197b84d6c6ece1dafe6c15d7105ca6"), ("eccv16", "the_wave", None),
    ("instance_norm", "candy", None), ("instance_norm", "feathers", "9838007df750d483b5b5e90b92d76e8ada5a31c0"),
    ("instance_norm", "la_muse", None), ("instance_norm", "mosaic", None),
    ("instance_norm", "the_scream", None), ("instance_norm", "udnie", None),
)
_LIC_FNS = "jcjohnson/fast-neural-style: free for personal or research use (README); no commercial use"


def _fns_entry(kind: str, style: str, sha1: str | None) -> ModelEntry:
    short = "eccv16" if kind == "eccv16" else "in"
    name = f"fns-{short}-{style.replace('_', '-')}"
    return ModelEntry(
        name, "torch", "stylize",
        (ModelFile(f"fast_neural_style/{kind}/{style}.t7", "model", f"{_FNS_BASE}/{kind}/{style}.t7", sha1=sha1),),
        _P_FNS, license=_LIC_FNS, arch_only=True,
        aliases=(f"fast-neural-style-{kind.replace('_', '-')}-{style.replace('_', '-')}",),
        description=(f"fast-neural-style {kind} '{style}' (Johnson et al. 2016): reflection padding, "
                     f"{'instance' if kind == 'instance_norm' else 'batch'} norm, residual blocks, "
                     "SpatialFullConvolution; output + mean = BGR image"))


_ENET_LIC = "CC BY-NC 4.0 (e-lab/ENet-training README: personal and research use only)"
_P_ENET = Preprocess(1 / 255, (512, 256), (0.0, 0.0, 0.0), True)


def _face_entries() -> list[ModelEntry]:
    """Face detectors with real weights in /work/shared/models: YuFaceDetectNet, Ultra-Light-Fast, MTCNN."""
    e: list[ModelEntry] = []
    for v, (ps, pz, ws, wz) in {
        1: ("100265231c4a02962a4c5c7a58b62bd4e13cac442aa0a2091b0315402e9c6d17", 17480,
            "e1e0386a9aebb78b681db6da1222cb152b3262b47446e01f36fd9e117e333107", 2703121),
        2: ("c1fc589ad16de4b59ec6796560c65fb69cf0abd9375f78411e9a65fd1787613a", 17458,
            "6cb11ef465b5fcf6db24a31ac504dc805f9a35a2827e9b9e2eeeefd5021f7cad", 3504179),
    }.items():
        note = "removed from libfacedetection HEAD by commit 9de1b5ae; this is its parent"
        e.append(ModelEntry(
            f"yufacedetectnet-v{v}", "caffe", "face",
            (_f(f"yufacedetectnet_caffe/yufacedetectnet-open-v{v}.prototxt", "model", _LIBFD,
                f"models/caffe/yufacedetectnet-open-v{v}.prototxt", ps, pz, note=note),
             _f(f"yufacedetectnet_caffe/yufacedetectnet-open-v{v}.caffemodel", "weights", _LIBFD,
                f"models/caffe/yufacedetectnet-open-v{v}.caffemodel", ws, wz, note=note)),
            _P_YUFACE, license="libfacedetection license (BSD-3-Clause), (c) 2015-2019 Shiqi Yu",
            aliases=(f"yuface-v{v}", f"libfacedetection-v{v}"),
            description="SSD face detector (PriorBox, Normalize, Permute, DetectionOutput); BGR 0..255, "
                        "320x240; output 1x1x50x7 [_, label, conf, x1, y1, x2, y2]"))
    for nm, d, (ps, pz, ws, wz) in (
        ("RFB-320", "RFB-320", ("d2d93df9e05dd16888e7fd6b3f13676fc9b5020f07dc7f904e2d6157ecefc9f4", 19217,
                                "4a59411c442a649b4adbb353f7ba201492b2ef9f30b65019208252d781501e27", 1102521)),
        ("slim-320", "Slim-320", ("1112ccc4ddb1651beffdc14f13a6386b3d301e4b208d6d9009adc20fc459b63b", 16164,
                                  "6110754ba06d4f4d89dd028d34e2bbfbbdce442b100c3f30c39b93ec8f13b6db", 1037497)),
    ):
        e.append(ModelEntry(
            f"ultraface-{nm.lower()}", "caffe", "face",
            (_f(f"ultraface_caffe/{nm}.prototxt", "model", _ULTRA, f"caffe/model/{d}/{nm}.prototxt", ps, pz),
             _f(f"ultraface_caffe/{nm}.caffemodel", "weights", _ULTRA, f"caffe/model/{d}/{nm}.caffemodel", ws, wz)),
            _P_ULTRA, license="MIT (c) 2019 linzai", outputs=("boxes", "scores"),
            aliases=(f"ultra-light-{nm.lower()}",),
            description="Ultra-Light-Fast face detector: raw SSD heads `boxes`, `scores` (decode with priors "
                        "min_boxes [[10,16,24],[32,48],[64,96],[128,192,256]], strides 8/16/32/64, "
                        "variances 0.1/0.2; NMS IoU 0.3)"))
    e.extend(_mtcnn_entry(n) for n in (1, 2, 3, 4))
    return e


def _real_weight_entries() -> list[ModelEntry]:
    """The other real-weight models in /work/shared/models: LeNet, ENet (GPU and CPU saves), Yolo-Fastest."""
    e: list[ModelEntry] = []
    e.append(ModelEntry(
        "lenet-mnist", "caffe", "classify",
        (_f("lenet_mnist_caffe/lenet.prototxt", "model", _LENET, "examples/mnist/lenet.prototxt",
            "c0455d92682937813a6ab5f6bbe9ae3753b454eba00686eddab0335de9712beb", 1738),
         _f("lenet_mnist_caffe/lenet_iter_10000.caffemodel", "weights", _LENET,
            "examples/mnist/lenet_iter_10000.caffemodel",
            "846f9133807d2314ca63382069646ec8c11ac87881825efc6b5145339351f967", 1725006)),
        Preprocess(1 / 256, (28, 28), (0.0,), False, gray=True),
        license="BSD-2-Clause (BVLC Caffe MNIST tutorial model, via ethereon/caffe-tensorflow)",
        aliases=("lenet", "mnist"),
        description="LeNet digit classifier: white digit on black, grayscale 28x28, scale 1/256; output "
                    "index = digit"))
    enet_net = _f("enet_cityscapes_torch/model-best.net", "model", _ENET, "model-best.net",
                  "a2725be7b4f728acc2881be939496eac51884d4d439a94a5fb53462d64187468", 3276807,
                  note="GPU-saved (torch.Cuda* storages); cv2.dnn rejects it (CudaLong), refnet reads it")
    e.append(ModelEntry(
        "enet-cityscapes", "torch", "segment",
        (enet_net, _labels("enet_cityscapes_torch/enet-classes.txt")), _P_ENET,
        labels="enet_cityscapes_torch/enet-classes.txt", license=_ENET_LIC,
        description="ENet (e-lab release, matsuren/ENet-training): 20 Cityscapes classes; 1024x512 or 512x256, "
                    "RGB, 1/255; output 1x20xHxW"))
    e.append(ModelEntry(
        "enet-cityscapes-cpu", "torch", "segment",
        (ModelFile("enet_cityscapes_torch/model-best.cpu.net", "model", None,
                   "94b43fd16d5e0e2167f71ba0be1394a6f2b984178fea4aa8fb4e7252b9fac4ff", size=3276795,
                   derived_from="enet_cityscapes_torch/model-best.net", derive="torch_cuda_long_to_long",
                   note="model-best.net with its 3 torch.CudaLongTensor class names renamed torch.LongTensor "
                        "(what cv2.dnn needs); all other bytes identical"),
         _labels("enet_cityscapes_torch/enet-classes.txt")), _P_ENET,
        labels="enet_cityscapes_torch/enet-classes.txt", license=_ENET_LIC,
        description="the same ENet with CPU tensor type names, loadable by cv2.dnn.readNetFromTorch"))
    for nm, (cs, cz, ws, wz) in (
        ("yolo-fastest-1.1", ("f6df5775c1e862998cf69046eba9265be3ae84dfe8b2caab7529823f0795bf70", 9685,
                              "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890", 1384268)),
        ("yolo-fastest-1.1-xl", ("c458427acc4fbeabceff4528ef7b65b066c0308ce599460f8ba299eba63abad3", 9696,
                                 "fac5fb41786c1f38f04972a658443b189f48720d7d117f9a044100e98a35b0c5", 3693964)),
    ):
        e.append(ModelEntry(
            nm, "darknet", "detect",
            (_f(f"yolo_fastest_darknet/{nm}.cfg", "model", _YF, f"ModelZoo/yolo-fastest-1.1_coco/{nm}.cfg", cs, cz),
             _f(f"yolo_fastest_darknet/{nm}.weights", "weights", _YF,
                f"ModelZoo/yolo-fastest-1.1_coco/{nm}.weights", ws, wz),
             _f("yolo_fastest_darknet/coco.names", "labels", _YF, "ModelZoo/yolo-fastest-1.1_coco/coco.names",
                "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84", 625)),
            _P_YOLO320, labels="yolo_fastest_darknet/coco.names",
            license="YOLO license (public domain); Yolo-Fastest builds on AlexeyAB/darknet",
            description="Yolo-Fastest (COCO, 80 classes): depthwise convs, route/shortcut/upsample, two YOLO "
                        "heads; 320x320 RGB 1/255; rows [cx, cy, w, h, obj, 80 class scores]"))
    return e


def _ssd_classic_entries() -> list[ModelEntry]:
    """The classics with downloadable weights (architecture in arch_only/): GoogLeNet and the SSDs."""
    e: list[ModelEntry] = []
    e.append(ModelEntry(
        "bvlc-googlenet", "caffe", "classify",
        (_f("arch_only/bvlc_googlenet/deploy.prototxt", "model", _BVLC, "models/bvlc_googlenet/deploy.prototxt",
            "fa36cd4112a3240a29600a5aa35333f31bec33daa1a6085b0af308a9f50f0c50", 35862),
         ModelFile("bvlc_googlenet/bvlc_googlenet.caffemodel", "weights",
                   "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
                   sha1="405fc5acd08a3bb12de8ee5e23a96bec22f08204",
                   note="sha1 from BVLC models/bvlc_googlenet/readme.md (also OpenCV's download script)"),
         _labels("labels/synset_words.txt"),
         _f("arch_only/bvlc_googlenet/readme.md", "extra", _BVLC, "models/bvlc_googlenet/readme.md",
            "5d98356d43423418ff5c8217e9783bd41c5f26be57088f9a9347f90b7cf91768", 1501)),
        Preprocess(1.0, (224, 224), _BGR_MEAN_IMAGENET, False), labels="labels/synset_words.txt",
        license="BVLC: released for unrestricted use (model readme); Caffe BSD-2-Clause", arch_only=True,
        aliases=("googlenet",),
        description="BVLC GoogLeNet (ILSVRC2012, top-1 68.7%): the cv2.dnn classification tutorial model"))
    e.append(ModelEntry(
        "mobilenet-ssd-voc", "caffe", "detect",
        (_f("arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt", "model",
            ("chuanqi305/MobileNet-SSD", "bb17b6c3eef36d80be441ae8e5339be66e8e3b7a"),
            "voc/MobileNetSSD_deploy.prototxt",
            "e781559c4f5beaec2a486ccd952af5b6fa408e9498761bf5f4fb80b4e9f0d25e", 29353,
            sha1="d77c9cf09619470d49b82a9dd18704813a2043cd",
            note="sha1 also published by OpenCV's download script for MobileNetSSD_deploy.prototxt"),
         ModelFile("mobilenet_ssd_voc/MobileNetSSD_deploy.caffemodel", "weights",
                   "https://drive.google.com/uc?export=download&id=0B3gersZ2cHIxRm5PMWRoTkdHdHc",
                   sha1="994d30a8afaa9e754d17d2373b2d62a7dfbaaf7a",
                   note="sha1 from OpenCV samples/dnn/models.yml (ssd_caffe); Google Drive may need a browser"),
         _labels("labels/voc.names")),
        Preprocess(0.007843, (300, 300), (127.5, 127.5, 127.5), False), labels="labels/voc.names",
        label_offset=1, license="MIT (c) 2018 chuanqi305", arch_only=True, aliases=("mobilenet-ssd",),
        description="MobileNet-SSD (VOC, 20 classes + background): depthwise convs, PriorBox, DetectionOutput; "
                    "the cv2.dnn detection tutorial model; label index 0 = background"))
    e.append(ModelEntry(
        "res10-ssd-face", "caffe", "face",
        (_f("arch_only/res10_face_ssd/deploy.prototxt", "model",
            ("elie-labhall/Auto-Turret", "4ac1805ca220e532b7e716ca56d327785b5957f9"), "models/deploy.prototxt",
            "95e80355a222a58abd74189bf93f6ca71473ab483e98494e34e355411b985580", 28091,
            note="a copy of OpenCV samples/dnn/face_detector/deploy.prototxt (not byte-identical to "
                 "OpenCV's current file)"),
         ModelFile("res10_face_ssd/res10_300x300_ssd_iter_140000.caffemodel", "weights",
                   "https://github.com/opencv/opencv_3rdparty/raw/dnn_samples_face_detector_20170830/"
                   "res10_300x300_ssd_iter_140000.caffemodel",
                   sha1="15aa726b4d46d9f023526d85537db81cbc8dd566", note="sha1 from OpenCV's download script")),
        Preprocess(1.0, (300, 300), (104.0, 177.0, 123.0), False), license="OpenCV samples (BSD-3-Clause)",
        arch_only=True, aliases=("opencv-face-detector", "res10"),
        description="OpenCV's ResNet-10 SSD face detector, 300x300; output 1x1xNx7"))
    return e


def _two_stage_entries() -> list[ModelEntry]:
    """Two-stage detectors: OpenCV's test prototxts; inputs data + im_info [[H, W, scale]]."""
    e: list[ModelEntry] = []
    # preprocessing of OpenCV's samples/dnn/object_detection.py (800x600, py-faster-rcnn's BGR mean, no scaling)
    _p_frcnn = Preprocess(1.0, (800, 600), (102.9801, 115.9465, 122.7717), False)
    e.append(ModelEntry(
        "faster-rcnn-vgg16", "caffe", "detect",
        (_f("arch_only/faster_rcnn_vgg16/faster_rcnn_vgg16.prototxt", "model",
            ("opencv/opencv", "172ca3fdfb9a79982067899bdd8abe09adc0cbb8"), "testdata/dnn/faster_rcnn_vgg16.prototxt",
            "505b545bcace2907b0f47d24cb2ccd5d04c439c0752cc9b907c29515735d395d", 8308),
         ModelFile("faster_rcnn_vgg16/VGG16_faster_rcnn_final.caffemodel", "weights",
                   derived_from="faster_rcnn_vgg16/faster_rcnn_models.tgz",
                   derive="tar:faster_rcnn_models/VGG16_faster_rcnn_final.caffemodel",
                   note="extracted from py-faster-rcnn's archive (below); no checksum of it published"),
         _labels("labels/voc.names"),
         ModelFile("faster_rcnn_vgg16/faster_rcnn_models.tgz", "extra",
                   "https://dl.dropboxusercontent.com/s/o6ii098bu51d139/faster_rcnn_models.tgz?dl=0",
                   note="py-faster-rcnn's model archive (OpenCV's download script); extract "
                        "faster_rcnn_models/VGG16_faster_rcnn_final.caffemodel; no checksum of it published")),
        _p_frcnn, labels="labels/voc.names", label_offset=1,
        license="py-faster-rcnn MIT; OpenCV test data Apache-2.0", arch_only=True, aliases=("faster-rcnn",),
        description="Faster R-CNN VGG16 (VOC, 20 classes + background): RPN Proposal, ROIPooling 7x7, per-class "
                    "boxes in DetectionOutput; inputs data + im_info; `refnet generate faster-rcnn-vgg16`"))
    e.append(ModelEntry(
        "rfcn-resnet50", "caffe", "detect",
        (_f("arch_only/rfcn_resnet50/rfcn_pascal_voc_resnet50.prototxt", "model",
            ("opencv/opencv", "2996d575cca956909a60d63d002179e17e903284"),
            "testdata/dnn/rfcn_pascal_voc_resnet50.prototxt",
            "f614f566df6523bd1ad3f76ad2b2e35c5a4372fbacc55d10b70f9bca5fc2e739", 63658),
         ModelFile("rfcn_resnet50/resnet50_rfcn_final.caffemodel", "weights",
                   derived_from="rfcn_resnet50/rfcn_models.tar.gz",
                   derive="tar:rfcn_models/resnet50_rfcn_final.caffemodel",
                   note="extracted from py-R-FCN's archive (below); no checksum of it published"),
         _labels("labels/voc.names"),
         ModelFile("rfcn_resnet50/rfcn_models.tar.gz", "extra", "https://1drv.ms/u/s!AoN7vygOjLIQqUWHpY67oaC7mopf",
                   note="py-R-FCN's model archive (YuwenXiong/py-R-FCN README, OneDrive; may need a browser); "
                        "extract resnet50_rfcn_final.caffemodel; no checksum published")),
        _p_frcnn, labels="labels/voc.names", label_offset=1,
        license="py-R-FCN MIT; OpenCV test data Apache-2.0", arch_only=True, aliases=("rfcn", "r-fcn"),
        description="R-FCN ResNet-50 (VOC, class-agnostic boxes): Proposal, PSROIPooling 7x7 + average, "
                    "DetectionOutput; inputs data + im_info; `refnet generate rfcn-resnet50`"))
    return e


def _classic_entries() -> list[ModelEntry]:
    """More classics with downloadable weights: SqueezeNet, ENet (OpenCV's copy), tiny YOLOs, tiny-darknet,
    fast-neural-style."""
    e: list[ModelEntry] = []
    for v, sha, (ws, wurl) in (
        ("1.0", "6e4ecef2a27347e226a5ef8be31d6d1b9d19f5a40afa1986ec259fd5fa3bd91c",
         ("579d0beb658e43c45937bf8bb5e4034fea4e1f69",
          "https://github.com/DeepScale/SqueezeNet/raw/master/SqueezeNet_v1.0/squeezenet_v1.0.caffemodel")),
        ("1.1", "d041bfb2ab4b32fda4ff6c6966684132f2924e329916aa5bfe9285c6b23e3d1c",
         ("3397f026368a45ae236403ccc81cfcbe8ebe1bd0",
          "https://raw.githubusercontent.com/DeepScale/SqueezeNet/b5c3f1a23713c8b3fd7b801d229f6b04c64374a5/"
          "SqueezeNet_v1.1/squeezenet_v1.1.caffemodel")),
    ):
        src = "mexopencv's model list" if v == "1.0" else "OpenCV's download script"
        e.append(ModelEntry(
            f"squeezenet-{v}", "caffe", "classify",
            (_f(f"arch_only/squeezenet_v{v}/deploy.prototxt", "model", _SQZ, f"SqueezeNet_v{v}/deploy.prototxt",
                sha, 9640 if v == "1.0" else 9678),
             ModelFile(f"squeezenet_v{v}/squeezenet_v{v}.caffemodel", "weights", wurl, sha1=ws,
                       note=f"sha1 published in {src}"),
             _labels("labels/synset_words.txt")),
            Preprocess(1.0, (227, 227), _BGR_MEAN_IMAGENET, False), labels="labels/synset_words.txt",
            license="BSD-2-Clause (forresti/SqueezeNet)", arch_only=True, aliases=(f"squeezenet{v}",),
            description=f"SqueezeNet v{v} (fire modules, global average pooling), 227x227"))
    e.append(ModelEntry(
        "enet", "torch", "segment",
        (ModelFile("enet/Enet-model-best.net", "model",
                   "https://www.dropbox.com/s/tdde0mawbi5dugq/Enet-model-best.net?dl=1",
                   sha1="b4123a73bf464b9ebe9cfc4ab9c2d5c72b161315",
                   note="OpenCV's test copy of the e-lab ENet (sha1 from opencv_extra download_models.py); "
                        "not byte-identical to enet-cityscapes"),
         _labels("enet_cityscapes_torch/enet-classes.txt")),
        _P_ENET, labels="enet_cityscapes_torch/enet-classes.txt", license=_ENET_LIC, arch_only=True,
        aliases=("enet-opencv",), description="ENet as used by OpenCV's segmentation sample and tests, 512x256"))
    for nm, cfg, labels, wurl, sha1, sha256, note in (
        ("yolov2-tiny-voc", "yolov2-tiny-voc.cfg", "labels/voc.names",
         "https://pjreddie.com/media/files/yolov2-tiny-voc.weights", "24b4bd049fc4fa5f5e95f684a8967e65c625dff9",
         None, "sha1 from OpenCV's download script (TinyYoloV2voc)"),
        ("yolov2-tiny", "yolov2-tiny.cfg", "labels/coco.names",
         "https://pjreddie.com/media/files/yolov2-tiny.weights", None, None, "no published checksum known"),
        ("yolov3-tiny", "yolov3-tiny.cfg", "labels/coco.names",
         "https://pjreddie.com/media/files/yolov3-tiny.weights", None,
         "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
         "sha256 as published in several independent download manifests (size 35434956)"),
    ):
        cfg_sha, cfg_size = {
            "yolov2-tiny-voc.cfg": ("1e012b455b845579096378b0ab4a82f1d9cb53b3b1282724a6de5d45537cb7e6", 1456),
            "yolov2-tiny.cfg": ("58e8f4390c8080a90a40f3b7ec5868ee9ae32519f3c08f57d104e494de04b34d", 1488),
            "yolov3-tiny.cfg": ("84eb7a675ef87c906019ff5a6e0effe275d175adb75100dcb47f0727917dc2c7", 1915),
        }[cfg]
        e.append(ModelEntry(
            nm, "darknet", "detect",
            (_f(f"arch_only/darknet_cfg/{cfg}", "model", _DARKNET, f"cfg/{cfg}", cfg_sha, cfg_size),
             ModelFile(f"{nm.replace('-', '_')}/{nm}.weights", "weights", wurl, sha256, sha1,
                       size=35434956 if nm == "yolov3-tiny" else None, note=note),
             _labels(labels)),
            _P_YOLO416, labels=labels, license="YOLO license (public domain), pjreddie/darknet", arch_only=True,
            description=f"{'YOLOv3' if 'v3' in nm else 'YOLOv2'} tiny ({'VOC, 20' if 'voc' in nm else 'COCO, 80'} "
                        "classes), 416x416 RGB 1/255"))
    e.append(ModelEntry(
        "tiny-darknet", "darknet", "classify",
        (_f("arch_only/darknet_cfg/tiny.cfg", "model", _DARKNET, "cfg/tiny.cfg",
            "54732dd230c45c22b5a6fe392274d1cbd9e6147bf6640fe76559d5f4bc3c41bf", 1751),
         ModelFile("tiny_darknet/tiny.weights", "weights", "https://pjreddie.com/media/files/tiny.weights",
                   note="no published checksum known")),
        Preprocess(1 / 255, (224, 224), (0.0, 0.0, 0.0), True), license="YOLO license (public domain)",
        arch_only=True,
        description="Darknet 'tiny' ImageNet classifier (softmax over darknet's imagenet.shortnames order, "
                    "not Caffe's synset order)"))
    e.extend(_fns_entry(*t) for t in _FNS)
    return e


def _build() -> dict[str, ModelEntry]:
    """The registry: every entry by name (the tables above are data; one function per family of models)."""
    e = (_face_entries() + _real_weight_entries() + _ssd_classic_entries() + _two_stage_entries()
         + _classic_entries())
    out: dict[str, ModelEntry] = {}
    for m in e:
        if m.name in out:
            raise RuntimeError(f"duplicate zoo name {m.name!r}")
        out[m.name] = m
    return out


REGISTRY: dict[str, ModelEntry] = _build()


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


_ALIASES: dict[str, str] = {}
for _m in REGISTRY.values():
    for _a in (_m.name, *_m.aliases):
        if _norm(_a) in _ALIASES and _ALIASES[_norm(_a)] != _m.name:
            raise RuntimeError(f"zoo alias {_a!r} names two models")
        _ALIASES[_norm(_a)] = _m.name


def names() -> tuple[str, ...]:
    """All model names, in registry order."""
    return tuple(REGISTRY)


def entries(task: str | None = None, framework: str | None = None) -> Iterator[ModelEntry]:
    """The entries, optionally filtered by task and framework."""
    for m in REGISTRY.values():
        if (task is None or m.task == task) and (framework is None or m.framework == framework):
            yield m


def get(name: str) -> ModelEntry:
    """The entry called ``name`` (or one of its aliases; case, ``_`` and spaces are ignored).

    Raises :class:`UnknownModelError` listing close matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = _norm(name)
    hit = _ALIASES.get(key)
    if hit is not None:
        return REGISTRY[hit]
    order = {n: i for i, n in enumerate(REGISTRY)}
    contains = sorted({_ALIASES[a] for a in _ALIASES if key and key in a}, key=order.__getitem__)
    similar = [_ALIASES[a] for a in difflib.get_close_matches(key, list(_ALIASES), n=6, cutoff=0.7)]
    close = list(dict.fromkeys(contains + similar))[:6]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (`refnet models list` shows all {len(REGISTRY)})")


# ---- where files live --------------------------------------------------------------------------------
def default_models_dir() -> Path:
    """Where models are looked for when ``$REFNET_MODELS`` is not set: ``shared/models`` beside the
    refnet checkout (``<checkout>/../shared/models``, what the Makefile exports), for a source or
    editable install."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "models"


def models_dir() -> Path | None:
    """``$REFNET_MODELS`` when set (None if it is not a folder); when unset, :func:`default_models_dir`
    if that folder exists, else None."""
    p = os.environ.get("REFNET_MODELS")
    if p is None:
        d = default_models_dir()
        return d if d.is_dir() else None
    return Path(p) if p and Path(p).is_dir() else None


def cache_dir() -> Path:
    """The download cache: ``$REFNET_CACHE``, else ``$XDG_CACHE_HOME/refnet/models``, else
    ``~/.cache/refnet/models``."""
    p = os.environ.get("REFNET_CACHE")
    if p:
        return Path(p).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "refnet" / "models"


def search_roots(extra: Sequence[str | os.PathLike] = ()) -> tuple[Path, ...]:
    """The folders :func:`find` searches, in order: ``extra``, ``$REFNET_MODELS``, the cache."""
    roots = [Path(p) for p in extra]
    md = models_dir()
    if md is not None:
        roots.append(md)
    roots.append(cache_dir())
    seen: list[Path] = []
    for r in roots:
        if r not in seen:
            seen.append(r)
    return tuple(seen)


@dataclass(frozen=True)
class FileStatus:
    """Where one file of an entry was found (``path``/``root`` None when missing)."""

    file: ModelFile
    path: Path | None
    root: Path | None

    @property
    def found(self) -> bool:
        """True when the file is on disk."""
        return self.path is not None


@dataclass(frozen=True)
class Located:
    """The result of :func:`find`: the entry and each file's status."""

    entry: ModelEntry
    files: tuple[FileStatus, ...]

    @property
    def found(self) -> bool:
        """True when every file a loader needs (architecture and weights) is on disk."""
        return all(s.found for s in self.files if s.file.role in MAIN_ROLES)

    @property
    def status(self) -> str:
        """``"found"``, ``"arch"`` (architecture only: run it with seeded weights) or ``"missing"``."""
        if self.found:
            return "found"
        if all(s.found for s in self.files if s.file.role == "model"):
            return "arch"
        return "missing"

    @property
    def missing(self) -> tuple[ModelFile, ...]:
        """Every file of the entry (of any role) that is not on disk."""
        return tuple(s.file for s in self.files if not s.found)

    @property
    def main_paths(self) -> tuple[Path, ...]:
        """Paths of the loader files (architecture first); raises ModelMissingError if any is missing."""
        gone = [s.file.path for s in self.files if s.file.role in MAIN_ROLES and not s.found]
        if gone:
            raise ModelMissingError(
                f"model {self.entry.name!r} is missing {', '.join(gone)} (searched "
                f"{', '.join(str(r) for r in search_roots())}); point REFNET_MODELS at the folder that holds "
                f"the models (export REFNET_MODELS=/path/to/models), or download them with "
                f"`refnet models fetch {self.entry.name}` (needs network)")
        return tuple(s.path for s in self.files if s.file.role in MAIN_ROLES)  # type: ignore[misc]

    def path_of(self, role: str) -> Path | None:
        """The path of the first found file with ``role`` ("model", "weights", "labels", "extra")."""
        for s in self.files:
            if s.file.role == role and s.found:
                return s.path
        return None

    @property
    def roots(self) -> tuple[Path, ...]:
        """The roots holding the loader files that were found."""
        found = (s.root for s in self.files if s.root is not None and s.file.role in MAIN_ROLES)
        return tuple(dict.fromkeys(found))  # type: ignore[arg-type]

    def load(self, **kwargs: Any) -> Any:
        """Load the model with refnet (all loader files must be present)."""
        import refnet

        return refnet.load(*self.main_paths, **kwargs)


def find(name: str, extra_roots: Sequence[str | os.PathLike] = ()) -> Located:
    """Look up every file of model ``name`` in ``extra_roots``, ``$REFNET_MODELS``, then the cache."""
    entry = get(name)
    roots = search_roots(extra_roots)
    stats = []
    for f in entry.files:
        hit = next(((r / f.path, r) for r in roots if (r / f.path).is_file()), (None, None))
        stats.append(FileStatus(f, *hit))
    return Located(entry, tuple(stats))


def read_labels(entry: ModelEntry | str, extra_roots: Sequence[str | os.PathLike] = ()) -> list[str] | None:
    """The entry's class names (one per line, empty lines dropped), or None if it has none / not found."""
    m = get(entry) if isinstance(entry, str) else entry
    if m.labels is None:
        return None
    for r in search_roots(extra_roots):
        p = r / m.labels
        if p.is_file():
            return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return None
