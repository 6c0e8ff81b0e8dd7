"""The model table of `refnet convert`: every real model of REFNET_MODELS and every
architecture-only one with seeded weights, built into a work folder, converted and verified.

Used by tests/test_export_models.py (a representative subset) and bench/convert_all.py (the
whole table). Each case gives the source files, the zoo entry whose preprocessing makes the
input, and the image it is verified on (None: a seeded random image through that preprocessing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from writers.darknet_writer import random_weights
from writers.t7_writer import write_fast_neural_style


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]  # (models dir, work dir) -> source files
    zoo: str | None = None  # preprocessing from this zoo entry
    image: str | None = None  # under ../shared/images
    input_shape: tuple[int, ...] | None = None
    quirks: str = "none"
    tame_heads: bool = False  # seeded SSD: rescale the loc/conf head convolutions (see tame_ssd_heads)


def _files(*rel: str) -> Callable[[Path, Path], list[str]]:
    return lambda models, wd: [str(models / r) for r in rel]


def _seeded_caffe(rel: str, shape: tuple[int, ...] | None = None) -> Callable[[Path, Path], list[str]]:
    def build(models: Path, wd: Path) -> list[str]:
        from refnet.archs import seeded_caffemodel

        proto = models / rel
        out = wd / (proto.parent.name + ".seeded.caffemodel")
        out.write_bytes(seeded_caffemodel(proto, 0, shape))
        return [str(proto), str(out)]

    return build


def _seeded_darknet(rel: str) -> Callable[[Path, Path], list[str]]:
    def build(models: Path, wd: Path) -> list[str]:
        cfg = models / rel
        out = wd / (cfg.stem + ".seeded.weights")
        out.write_bytes(random_weights(cfg.read_text(), seed=0)[0])
        return [str(cfg), str(out)]

    return build


def _arch(fn: str, **kw: Any) -> Callable[[Path, Path], list[str]]:
    def build(models: Path, wd: Path) -> list[str]:
        from refnet import archs

        proto, model = getattr(archs, fn)(**kw).write(wd / fn)
        return [str(proto), str(model)]

    return build


def _fns(variant: str) -> Callable[[Path, Path], list[str]]:
    """fast-neural-style with seeded weights. (eccv16's batch-norm residual stack grows activations
    to ~3e3 before the 150*tanh output: refnet's own float32 run is ~1e-4 off its float64 run.)"""
    def build(models: Path, wd: Path) -> list[str]:
        return [str(write_fast_neural_style(wd / f"fns_{variant}.t7", variant, seed=3, width=16, final_gain=0.05))]

    return build


M = "yufacedetectnet_caffe/yufacedetectnet-open-"
CASES: dict[str, Case] = {c.name: c for c in [
    Case("yufacedetectnet-v1", _files(M + "v1.prototxt", M + "v1.caffemodel"), "yufacedetectnet-v1",
         "voc2007_000001.jpg"),
    Case("yufacedetectnet-v2", _files(M + "v2.prototxt", M + "v2.caffemodel"), "yufacedetectnet-v2",
         "voc2007_000001.jpg"),
    Case("ultraface-rfb-320", _files("ultraface_caffe/RFB-320.prototxt", "ultraface_caffe/RFB-320.caffemodel"),
         "ultraface-rfb-320", "voc2007_000001.jpg"),
    Case("ultraface-slim-320", _files("ultraface_caffe/slim-320.prototxt", "ultraface_caffe/slim-320.caffemodel"),
         "ultraface-slim-320", "voc2007_000001.jpg"),
    *[Case(f"mtcnn-det{i}", _files(f"mtcnn_caffe/det{i}.prototxt", f"mtcnn_caffe/det{i}.caffemodel"),
           f"mtcnn-det{i}", "voc2007_000001.jpg" if i < 4 else None, (1, 3, 48, 36) if i == 1 else None)
      for i in (1, 2, 3, 4)],
    Case("lenet-mnist", _files("lenet_mnist_caffe/lenet.prototxt", "lenet_mnist_caffe/lenet_iter_10000.caffemodel"),
         "lenet-mnist"),
    Case("enet-cityscapes", _files("enet_cityscapes_torch/model-best.net"), "enet-cityscapes", "darknet_dog.jpg"),
    Case("enet-cityscapes-cpu", _files("enet_cityscapes_torch/model-best.cpu.net"), "enet-cityscapes-cpu",
         "darknet_dog.jpg"),
    Case("yolo-fastest-1.1", _files("yolo_fastest_darknet/yolo-fastest-1.1.cfg",
                                    "yolo_fastest_darknet/yolo-fastest-1.1.weights"), "yolo-fastest-1.1",
         "darknet_dog.jpg"),
    Case("yolo-fastest-1.1-xl", _files("yolo_fastest_darknet/yolo-fastest-1.1-xl.cfg",
                                       "yolo_fastest_darknet/yolo-fastest-1.1-xl.weights"), "yolo-fastest-1.1-xl",
         "darknet_dog.jpg"),
    Case("yolo-fastest-1.1 (quirks cv2)", _files("yolo_fastest_darknet/yolo-fastest-1.1.cfg",
                                                 "yolo_fastest_darknet/yolo-fastest-1.1.weights"), "yolo-fastest-1.1",
         "darknet_dog.jpg", quirks="cv2"),
    Case("googlenet (archs, seeded)", _arch("googlenet"), "bvlc-googlenet", "space_shuttle.jpg"),
    Case("bvlc-googlenet prototxt (seeded)",
         _seeded_caffe("arch_only/bvlc_googlenet/deploy.prototxt", (1, 3, 224, 224)), "bvlc-googlenet",
         "space_shuttle.jpg", (1, 3, 224, 224)),
    Case("mobilenet-ssd (archs, seeded)", _arch("mobilenet_ssd"), "mobilenet-ssd-voc", "darknet_horses.jpg"),
    Case("mobilenet-ssd-voc prototxt (seeded)",
         _seeded_caffe("arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt"), "mobilenet-ssd-voc",
         "darknet_horses.jpg", tame_heads=True),
    Case("res10-ssd-face (seeded)", _seeded_caffe("arch_only/res10_face_ssd/deploy.prototxt", (1, 3, 300, 300)),
         "res10-ssd-face", "voc2007_000001.jpg", (1, 3, 300, 300), tame_heads=True),
    Case("squeezenet-1.0 (seeded)", _seeded_caffe("arch_only/squeezenet_v1.0/deploy.prototxt", (1, 3, 227, 227)),
         "squeezenet-1.0", "space_shuttle.jpg", (1, 3, 227, 227)),
    Case("squeezenet-1.1 (seeded)", _seeded_caffe("arch_only/squeezenet_v1.1/deploy.prototxt", (1, 3, 227, 227)),
         "squeezenet-1.1", "space_shuttle.jpg", (1, 3, 227, 227)),
    Case("yolov2-tiny-voc (seeded)", _seeded_darknet("arch_only/darknet_cfg/yolov2-tiny-voc.cfg"), "yolov2-tiny-voc",
         "darknet_dog.jpg"),
    Case("yolov2-tiny (seeded)", _seeded_darknet("arch_only/darknet_cfg/yolov2-tiny.cfg"), "yolov2-tiny",
         "darknet_dog.jpg"),
    Case("yolov2-tiny (seeded, quirks cv2)", _seeded_darknet("arch_only/darknet_cfg/yolov2-tiny.cfg"), "yolov2-tiny",
         "darknet_dog.jpg", quirks="cv2"),
    Case("yolov3-tiny (seeded)", _seeded_darknet("arch_only/darknet_cfg/yolov3-tiny.cfg"), "yolov3-tiny",
         "darknet_dog.jpg"),
    Case("tiny-darknet (seeded)", _seeded_darknet("arch_only/darknet_cfg/tiny.cfg"), "tiny-darknet",
         "space_shuttle.jpg"),
    Case("deeplab-v3+ (archs, seeded)", _arch("deeplab_v3plus"), None, None, None),
    Case("fast-neural-style eccv16 (t7 writer)", _fns("eccv16"), None, "darknet_dog.jpg", (1, 3, 128, 160)),
    Case("fast-neural-style instance_norm (t7 writer)", _fns("instance_norm"), None, "darknet_dog.jpg",
         (1, 3, 128, 160)),
]}


def tame_ssd_heads(net: Any, x: Any) -> Any:
    """A copy of a seeded SSD net whose ``*mbox_loc``/``*mbox_conf`` convolutions are rescaled so
    their outputs on ``x`` have standard deviation 0.5 / 2: seeded He weights without trained
    BatchNorm statistics blow the heads up to 1e+30 offsets and saturated scores (1016 ties at
    1.0 in res10), which test nothing but float32 overflow."""
    import numpy as np

    import refnet
    from refnet.graph import Graph, Node

    heads = [n for n in net.graph.nodes if n.op == "conv" and ("mbox_loc" in n.name or "mbox_conf" in n.name)]
    ref = net.forward(x.astype(np.float64), outputs=[n.name for n in heads], precision="float64")
    nodes = []
    for n in net.graph.nodes:
        if n in heads:
            target = 0.5 if "mbox_loc" in n.name else 2.0
            f = target / max(float(np.std(ref[n.name])), 1e-12)
            n = Node(n.name, n.op, n.inputs, n.outputs, n.attrs, {k: v * f for k, v in n.params.items()})
        nodes.append(n)
    g = net.graph
    return refnet.Net(Graph(tuple(nodes), g.inputs, g.input_shapes, g.layer_names, g.output_names, g.framework,
                            g.source, g.meta))


@dataclass
class Row:
    case: str
    ir_ops: list[str]
    onnx_ops: list[str]
    verification: Any  # refnet.export.verify.Verification
    seconds: float


def run_case(case: Case, models: Path, images: Path | None, wd: Path, backends: Sequence[Any], *,
             per_layer: bool = True, opset: int = 17) -> Row:
    """Build, convert (refnet.export_onnx) and verify one case."""
    import onnx

    import refnet
    from refnet import zoo
    from refnet.cli.convert import _feeds, _input_shape
    from refnet.export.onnx import export_onnx
    from refnet.export.verify import verify_onnx
    from refnet.pipelines import default_preprocess

    t0 = time.perf_counter()
    wd.mkdir(parents=True, exist_ok=True)
    paths = case.build(models, wd)
    net = refnet.load(*paths, quirks=case.quirks)
    pre = zoo.get(case.zoo).preprocess if case.zoo else None
    if pre is None and case.image is not None:
        pre = default_preprocess(net, "stylize" if net.graph.framework == "torch" else "classify")
    shape = _input_shape(net, pre if pre is None or pre.size is not None or case.input_shape else None,
                         case.input_shape)
    out = wd / (case.name.split(" ")[0] + ".onnx")
    image = str(images / case.image) if case.image and images is not None else None
    x, label = _feeds(net, pre, shape, image, 0)
    if case.tame_heads:
        net = tame_ssd_heads(net, x)
    export_onnx(net, out, opset=opset, input_shapes={net.input_names[0]: shape})
    v = verify_onnx(net, str(out), {net.input_names[0]: x}, backends, per_layer=per_layer, input_label=label)
    m = onnx.load(str(out), load_external_data=False)
    return Row(case.name, sorted({n.op for n in net.graph.nodes}), sorted({n.op_type for n in m.graph.node}), v,
               time.perf_counter() - t0)


def worst(v: Any) -> float:
    return max((r.worst for r in v.results if r.ran), default=float("nan"))
