"""Caffe importer on real models (REFNET_MODELS) and the arch-only prototxts with seeded random
weights: every layer compared with cv2.dnn (fusion off) on real photos, float32 and float64;
parser robustness on the real files; load time against cv2.dnn.readNetFromCaffe (printed,
never asserted: speed is judged by ratios in the benchmarks).
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TOL, assert_close, rel_err, require_model
from writers.caffe_writer import cv2_outputs, key, ld, varint, write_random_caffemodel

import refnet
from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.weights_import.caffe import read_caffe

pytestmark = pytest.mark.models

WORST: dict[str, tuple[float, float, float]] = {}


def cross_check(label: str, proto: Path, model: Path | None, feeds: dict[str, np.ndarray],
                *, f32_tol: str = "f32_vs_f64", net=None) -> dict[str, tuple[float, float, float]]:
    """Every cv2 layer: refnet float64 and float32 vs cv2 within TOL["vs_cv2"], float32 vs
    float64 within ``f32_tol``; also the layer names and unconnected outputs."""
    net = net or refnet.load_caffe(proto, model)
    names, ref = cv2_outputs(proto, model, feeds)
    assert net.layer_names == names
    assert net.output_names == cv2_outputs.last_unconnected
    x = feeds if len(feeds) > 1 else next(iter(feeds.values()))
    t64 = net.trace(x, precision="float64")
    t32 = net.trace(x, precision="float32")
    errs = {}
    for n in names:
        assert t64[n].shape == ref[n].shape, (label, n)
        errs[n] = (rel_err(t64[n], ref[n]), rel_err(t32[n], ref[n]), rel_err(t32[n], t64[n]))
    worst = tuple(max(e[i] for e in errs.values()) for i in range(3))
    WORST[label] = worst
    print(f"\n{label}: {len(names)} layers, worst rel. diff vs cv2 float64 {worst[0]:.2e} "
          f"float32 {worst[1]:.2e}; float32 vs float64 {worst[2]:.2e}")
    bad = {n: e for n, e in errs.items() if e[0] > TOL["vs_cv2"] or e[1] > TOL["vs_cv2"]
           or e[2] > TOL[f32_tol]}
    assert not bad, f"{label}: layers over tolerance {bad}"
    return errs


def image(images_dir: Path, name: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imread(str(images_dir / name), flags)
    assert img is not None, name
    return img


# ---- real models ----------------------------------------------------------------------------
def test_lenet_on_photos_and_digits(models, images_dir):
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    model = require_model(models, "lenet_mnist_caffe/lenet_iter_10000.caffemodel")
    net = refnet.load_caffe(proto, model)
    digit = np.zeros((28, 28), np.uint8)
    cv2.putText(digit, "7", (6, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 255, 2)
    for name, img in [("digit7", digit),
                      ("photo", image(images_dir, "caffe_cat.jpg", cv2.IMREAD_GRAYSCALE))]:
        blob = cv2.dnn.blobFromImage(img, 1 / 256, (28, 28))
        cross_check(f"lenet/{name}", proto, model, {"data": blob}, net=net)
    out = net.forward(cv2.dnn.blobFromImage(digit, 1 / 256, (28, 28)), precision="float64")
    assert int(np.argmax(out["prob"])) == 7


def _mtcnn_blob(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    # MTCNN was trained in MATLAB: the blob is laid out N, C, W, H (H and W swapped)
    return ((rgb.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 1, 0)[None].copy()


@pytest.mark.parametrize("det", [1, 2, 3, 4])
def test_mtcnn(models, images_dir, det):
    proto = require_model(models, f"mtcnn_caffe/det{det}.prototxt")
    model = require_model(models, f"mtcnn_caffe/det{det}.caffemodel")
    img = image(images_dir, "voc2007_001150.jpg")
    if det == 1:
        h, w = img.shape[:2]
        blob = _mtcnn_blob(img, (w // 6, h // 6))  # fully convolutional on the whole photo
    elif det == 4:  # L-Net: five 24x24 RGB patches stacked into 15 channels
        h, w = img.shape[:2]
        patches = [_mtcnn_blob(img[y:y + h // 3, x:x + w // 3], (24, 24))
                   for y, x in [(0, 0), (0, w // 2), (h // 3, w // 3), (h // 2, 0), (h // 2, w // 2)]]
        blob = np.concatenate(patches, axis=1)
    else:
        blob = _mtcnn_blob(img, (24, 24) if det == 2 else (48, 48))
    cross_check(f"mtcnn/det{det}", proto, model, {"data": blob})


@pytest.mark.parametrize("variant", ["RFB-320", "slim-320"])
def test_ultraface(models, images_dir, variant):
    proto = require_model(models, f"ultraface_caffe/{variant}.prototxt")
    model = require_model(models, f"ultraface_caffe/{variant}.caffemodel")
    img = image(images_dir, "voc2007_001150.jpg")
    blob = cv2.dnn.blobFromImage(img, 1 / 128, (320, 240), (127, 127, 127), swapRB=True)
    cross_check(f"ultraface/{variant}", proto, model, {"input": blob})
    # the caffemodel carries its own layer definitions (as Caffe saved them, with the Split
    # layers Caffe inserts for blobs used twice): it loads alone, with the same results
    alone = refnet.load_caffe(None, model)
    with_proto = refnet.load_caffe(proto, model)
    extra = set(alone.layer_names) - set(with_proto.layer_names)
    assert set(with_proto.layer_names) <= set(alone.layer_names)
    assert extra and all(n.endswith("_split") for n in extra)
    a = alone.forward(blob, ["boxes", "scores"], "float64")
    b = with_proto.forward(blob, ["boxes", "scores"], "float64")
    for k in a:
        assert_close(a[k], b[k], 1e-12, k)


@pytest.mark.parametrize("version", [1, 2])
def test_yufacedetectnet_same_detections(models, images_dir, version):
    proto = require_model(models, f"yufacedetectnet_caffe/yufacedetectnet-open-v{version}.prototxt")
    model = require_model(models, f"yufacedetectnet_caffe/yufacedetectnet-open-v{version}.caffemodel")
    net = refnet.load_caffe(proto, model)
    for photo, n_faces in [("voc2007_000001.jpg", 1), ("darknet_dog.jpg", 0)]:
        blob = cv2.dnn.blobFromImage(image(images_dir, photo), 1.0, (320, 240), (0, 0, 0))
        cross_check(f"yufacedetectnet-v{version}/{photo}", proto, model, {"data": blob}, net=net)
        _, ref = cv2_outputs(proto, model, {"data": blob}, ["detection_out"])
        for prec in ("float32", "float64"):
            ours = net.forward(blob, precision=prec)["detection_out"][0, 0]
            theirs = ref["detection_out"][0, 0]
            keep_o, keep_t = ours[ours[:, 2] > 0.5], theirs[theirs[:, 2] > 0.5]
            assert len(keep_o) == len(keep_t) == n_faces, (photo, prec)
            np.testing.assert_allclose(keep_o, keep_t, atol=1e-4)


# ---- arch-only prototxts with seeded random weights ------------------------------------------
ARCH = {
    "mobilenet_ssd": ("arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt", (300, 300),
                      0.007843, 127.5),
    "res10_ssd": ("arch_only/res10_face_ssd/deploy.prototxt", (300, 300), 1 / 128,
                  (104, 177, 123)),
    "squeezenet_v1.0": ("arch_only/squeezenet_v1.0/deploy.prototxt", (227, 227), 1 / 64,
                        (104, 117, 123)),
    "squeezenet_v1.1": ("arch_only/squeezenet_v1.1/deploy.prototxt", (227, 227), 1 / 64,
                        (104, 117, 123)),
    "googlenet": ("arch_only/bvlc_googlenet/deploy.prototxt", (224, 224), 1 / 64,
                  (104, 117, 123)),
}


@pytest.mark.parametrize("arch", sorted(ARCH))
def test_arch_only_random_weights(models, images_dir, tmp_path, arch):
    rel, size, scale, mean = ARCH[arch]
    proto = require_model(models, rel)
    model = tmp_path / "random.caffemodel"
    weights = write_random_caffemodel(proto, model, seed=7, input_shape=(1, 3, size[1], size[0]))
    assert weights  # every weighted layer got its blobs
    net = refnet.load_caffe(proto, model)
    blob = cv2.dnn.blobFromImage(image(images_dir, "voc2007_000542.jpg"), scale, size, mean)
    cross_check(f"{arch} (random weights)", proto, model, {net.input_names[0]: blob}, net=net,
                f32_tol="f32_vs_f64_long")


# ---- parser robustness on the real files --------------------------------------------------------
def test_truncated_real_caffemodel(models):
    proto = require_model(models, "mtcnn_caffe/det2.prototxt")
    data = require_model(models, "mtcnn_caffe/det2.caffemodel").read_bytes()
    rng = np.random.default_rng(0)
    for cut in sorted(rng.integers(1, len(data) - 1, 25)):
        try:
            read_caffe(proto, caffemodel_bytes=data[:cut])
        except ModelFormatError as e:
            assert e.offset is not None and e.offset <= cut and "<caffemodel bytes>" in str(e)
        except UnsupportedLayerError:  # pragma: no cover - not expected with a prototxt
            raise
        else:  # a cut between two top-level fields: a shorter but valid file; then the layers
            # whose blobs were cut off are reported missing, or everything was before the cut
            pass


def test_truncated_real_prototxt(models):
    text = require_model(models, "yufacedetectnet_caffe/yufacedetectnet-open-v1.prototxt").read_text()
    cut = text.index("layer {", len(text) // 2) + len("layer {")
    with pytest.raises(ModelFormatError) as ei:
        read_caffe(prototxt_bytes=text[:cut])
    assert ei.value.line is not None and "not closed" in str(ei.value)
    line_of_open = text[:cut].count("\n") + 1
    assert ei.value.line == line_of_open  # the error points at the end of the input


def test_blob_larger_than_the_file_refused_before_allocating(models):
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    # a conv1 blob declaring 2**34 floats (64 GiB) of packed data in a tiny file
    blob = ld(7, ld(1, varint(2**34))) + key(5, 2) + varint(4 * 2**34) + b"\x00" * 64
    data = ld(100, ld(1, b"conv1") + ld(7, blob))
    with pytest.raises(ModelFormatError):  # once untraced: a first call may compile the scanners (numba)
        read_caffe(proto, caffemodel_bytes=data)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="68719476736 bytes declared"):
            read_caffe(proto, caffemodel_bytes=data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_training_caffemodel_alone_names_its_data_layer(models):
    model = require_model(models, "lenet_mnist_caffe/lenet_iter_10000.caffemodel")
    with pytest.raises(UnsupportedLayerError) as ei:
        read_caffe(None, model)  # the snapshot holds the train net: a Data layer first
    assert ei.value.layer == "mnist" and ei.value.type == "Data"
    # and says what to do instead of listing every supported type
    assert "'Data': this is a training net" in str(ei.value)
    assert "give the deploy .prototxt (with an Input layer or input/input_shape) with this caffemodel;" in str(ei.value)


def test_train_val_prototxt_is_named_a_training_net(tmp_path):
    p = tmp_path / "train_val.prototxt"
    p.write_text('layer { name: "mnist" type: "Data" top: "data" top: "label" }\n'
                 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                 'inner_product_param { num_output: 2 } }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')
    with pytest.raises(UnsupportedLayerError, match=r"'Data': this is a training net .* give the deploy "
                                                    r"\.prototxt \(with an Input layer or input/input_shape\);"):
        read_caffe(p)


def test_contradictory_prototxt_and_caffemodel(models):
    proto = require_model(models, "mtcnn_caffe/det1.prototxt").read_text()
    model = require_model(models, "mtcnn_caffe/det1.caffemodel")
    bad = proto.replace("num_output: 10", "num_output: 12", 1)  # conv1 now wants 12 filters
    with pytest.raises(ModelFormatError) as ei:
        read_caffe(prototxt_bytes=bad, caffemodel=model)
    assert ei.value.layer == "conv1" and "expected (12, C_in/1, 3, 3)" in str(ei.value)


# ---- load time (printed for the report; not asserted) ---------------------------------------------
LOAD = [
    ("lenet", "lenet_mnist_caffe/lenet.prototxt", "lenet_mnist_caffe/lenet_iter_10000.caffemodel"),
    *[(f"mtcnn det{i}", f"mtcnn_caffe/det{i}.prototxt", f"mtcnn_caffe/det{i}.caffemodel")
      for i in range(1, 5)],
    *[(f"ultraface {v}", f"ultraface_caffe/{v}.prototxt", f"ultraface_caffe/{v}.caffemodel")
      for v in ("RFB-320", "slim-320")],
    *[(f"yufacedetectnet v{v}", f"yufacedetectnet_caffe/yufacedetectnet-open-v{v}.prototxt",
       f"yufacedetectnet_caffe/yufacedetectnet-open-v{v}.caffemodel") for v in (1, 2)],
]


def test_load_time_vs_cv2(models):
    def best(fn, n=5):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts) * 1e3

    lines = []
    for label, p, m in LOAD:
        proto, model = str(require_model(models, p)), str(require_model(models, m))
        ours = best(lambda proto=proto, model=model: read_caffe(proto, model))
        theirs = best(lambda proto=proto, model=model: cv2.dnn.readNetFromCaffe(proto, model))
        lines.append(f"{label:22s} refnet {ours:7.2f} ms   cv2 {theirs:7.2f} ms   "
                     f"ratio {ours / theirs:5.2f}")
    print("\nload time (best of 5):\n" + "\n".join(lines))
