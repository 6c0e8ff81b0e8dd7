"""refnet reads back what `refnet convert` writes: a real SSD (yufacedetectnet-v1: DetectionOutput
as TopK -> GatherElements -> NonMaxSuppression -> GatherND / Gather -> TopK(k = Shape) -> Pad)
and Torch ENet (max pooling indices through Mod, MaxUnpool as ScatterElements).

Oracles: refnet's float64 run of the *source* model (the Caffe / Torch7 files read by refnet's
own importers) and onnxruntime on the converted file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import require_model  # noqa: E402

import refnet  # noqa: E402
from refnet.export.onnx import export_onnx  # noqa: E402


def _ort(path, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _image(images_dir, name="voc2007_000001.jpg"):
    import cv2

    img = cv2.imread(str(images_dir / name))
    if img is None:
        pytest.skip(f"image {name} not readable")
    return img


@pytest.mark.models
def test_ssd_round_trip_yufacedetectnet(models, images_dir, tmp_path):
    proto = require_model(models, "yufacedetectnet_caffe/yufacedetectnet-open-v1.prototxt")
    weights = require_model(models, "yufacedetectnet_caffe/yufacedetectnet-open-v1.caffemodel")
    src = refnet.load(str(proto), str(weights))
    x = refnet.zoo.get("yufacedetectnet-v1").preprocess.blob(_image(images_dir), (320, 240)).astype(np.float64)
    path = export_onnx(src, tmp_path / "yu.onnx", input_shapes=tuple(x.shape))
    back = refnet.load_onnx(path)
    ops = {n.op for n in back.graph.nodes}
    assert {"gather_elements", "nms_onnx", "gather_nd", "take", "topk_dyn", "pad_dyn"} <= ops
    name = src.output_names[0]
    want = src.forward(x, precision="float64")[name]
    got = back.forward(x, precision="float64")[back.output_names[0]]
    assert got.shape == want.shape and want.shape[:2] == (1, 1) and want.shape[3] == 7
    real = want[0, 0, :, 2] > 0
    assert real.sum() >= 1  # not a vacuous comparison
    # the file holds the source's float32 weights: the same detections, to float64 rounding
    np.testing.assert_array_equal(got[0, 0, :, :2], want[0, 0, :, :2])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    f32 = back.forward(x, precision="float32")[back.output_names[0]]
    np.testing.assert_array_equal(f32[0, 0, :, 1], want[0, 0, :, 1])
    np.testing.assert_allclose(f32, want, rtol=0, atol=1e-4)
    ref = _ort(path, {src.input_names[0]: x.astype(np.float32)})[0]
    assert ref.shape == want.shape
    np.testing.assert_array_equal(ref[0, 0, :, 1], want[0, 0, :, 1])
    np.testing.assert_allclose(ref, got, rtol=0, atol=1e-4)


@pytest.mark.models
def test_enet_round_trip_small_input(models, images_dir, tmp_path):
    t7 = require_model(models, "enet_cityscapes_torch/model-best.cpu.net")
    src = refnet.load(str(t7))
    x = refnet.zoo.get("enet-cityscapes-cpu").preprocess.blob(_image(images_dir, "darknet_dog.jpg"),
                                                              (192, 96)).astype(np.float64)
    path = export_onnx(src, tmp_path / "enet.onnx", input_shapes=tuple(x.shape))
    back = refnet.load_onnx(path)
    ops = {n.op for n in back.graph.nodes}
    assert {"mod", "scatter_elements"} <= ops
    name = src.output_names[0]
    want = src.forward(x, precision="float64")[name]
    got = back.forward(x, precision="float64")[back.output_names[0]]
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * scale)
    assert (got.argmax(1) == want.argmax(1)).all()
    ref = _ort(path, {src.input_names[0]: x.astype(np.float32)})[0]
    # onnxruntime computes in float32: a near-tie in a max pooling may move an unpooled value
    assert float(np.mean(ref.argmax(1) == want.argmax(1))) > 0.999


def _export_cases():
    import test_export_onnx as E

    return E, sorted(E.HEADS) + sorted(k for k in E.SINGLE if k.startswith("max_pool-indices"))


@pytest.mark.parametrize("case", _export_cases()[1])
def test_export_cases_read_back(case, tmp_path):
    """Every detection head of tests/test_export_onnx.py (SSD variants incl. top_k/keep_top_k -1,
    region/yolo with cv2's in-layer NMS) and max pooling with indices (Mod, Div) into MaxUnpool
    (ScatterElements): refnet's reading of the file against refnet float64 of the IR net and
    against onnxruntime."""
    E = _export_cases()[0]
    net, x = E._case_net(case)
    if x is None:
        x = np.random.default_rng(0).standard_normal(net.input_shapes["data"]).astype(np.float32)
    path = export_onnx(net, tmp_path / "m.onnx", input_shapes={"data": x.shape})
    back = refnet.load_onnx(path)
    want = net.forward(x.astype(np.float64), precision="float64")
    ref = dict(zip(net.output_names, _ort(path, {"data": x})))
    for precision in ("float64", "float32"):
        got = back.forward(x.astype(np.float64), precision=precision)
        for k in net.output_names:
            scale = max(1.0, float(np.abs(want[k]).max()))
            assert got[k].shape == want[k].shape == ref[k].shape
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=(1e-6 if precision == "float64" else 1e-5) * scale)
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5 * scale)
