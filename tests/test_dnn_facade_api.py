"""The rest of the cv2.dnn API in the facade, each checked against cv2's own result on the same
model: getLayer (name, type, blobs, outputNameToIndex), getLayerTypes, getLayersShapes,
setInputShape, getFLOPS (with its documented deviation), imagesFromBlob, NMSBoxesBatched;
errors that are also cv2.error; a prototxt read without weights; dnn.quirks after a read.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from conftest import require_model

from refnet import dnn, zoo
from refnet.errors import ModelFormatError, RefnetError

ZOO = ["lenet-mnist", "yufacedetectnet-v1", "ultraface-slim-320", "mtcnn-det3", "yolo-fastest-1.1",
       "enet-cityscapes-cpu"]


def _pair(models, name):
    paths = [str(p) for p in zoo.find(name).main_paths] if zoo.find(name).found else None
    if paths is None:
        require_model(models, zoo.get(name).main_files[-1].path)
    return dnn.readNet(*paths), cv2.dnn.readNet(*paths)


@pytest.mark.parametrize("name", ZOO)
def test_get_layer_and_types_are_cv2s(models, name):
    ours, ref = _pair(models, name)
    assert ours.getLayerTypes() == tuple(ref.getLayerTypes())
    n = len(ref.getLayerNames())
    for i in range(n + 1):
        a, b = ours.getLayer(i), ref.getLayer(i)
        assert (a.name, a.type) == (b.name, b.type), i
        assert len(a.blobs) == len(b.blobs), (a.name, [x.shape for x in a.blobs], [x.shape for x in b.blobs])
        for x, y in zip(a.blobs, b.blobs):
            assert x.shape == y.shape and np.array_equal(x, y), a.name
        if i:
            assert a.outputNameToIndex(a.name) == b.outputNameToIndex(b.name) == 0
    last = ref.getLayerNames()[-1]
    assert ours.getLayer(last).type == ref.getLayer(last).type  # by name, as object_detection.py does


def _t7_nets():
    from writers import t7_writer as W

    r = np.random.default_rng
    conv = W.nn_SpatialConvolution
    return {
        "prelu_padding_shave": W.nn_Sequential(W.nn_PReLU(r(0), 4), W.nn_Padding(1, 3, 3, 0.5), W.nn_ShaveImage(1)),
        "instance_norm": W.nn_Sequential(W.nn_InstanceNormalization(r(1), 4)),
        "normalize": W.nn_Sequential(W.nn_View(-1), W.nn_Normalize(2)),
        "depth_concat": W.nn_Sequential(W.nn_DepthConcat(2, conv(r(2), 4, 3, 3, 3, 1, 1, 1, 1),
                                                         conv(r(3), 4, 2, 3, 3))),
        "parallel": W.nn_Sequential(W.nn_Parallel(2, 2, W.nn_simple("Tanh"), W.nn_Identity(), W.nn_Identity(),
                                                  W.nn_Identity())),
    }


@pytest.mark.parametrize("case", sorted(_t7_nets()))
def test_torch_layer_types_are_cv2s(tmp_path, case):
    """cv2's Torch importer has its own type names for some layers (nn.PReLU is a
    ChannelsPReLU, nn.ShaveImage a Slice, nn.InstanceNormalization an MVN, ...)."""
    from writers import t7_writer as W

    path = str(W.save(tmp_path / f"{case}.t7", _t7_nets()[case]))
    ours, ref = dnn.readNetFromTorch(path), cv2.dnn.readNetFromTorch(path)
    assert ours.getLayerTypes() == tuple(ref.getLayerTypes())
    assert [ours.getLayer(n).type for n in ref.getLayerNames()] == [ref.getLayer(n).type for n in ref.getLayerNames()]


@pytest.mark.parametrize("name,shape", [("lenet-mnist", (1, 1, 28, 28)), ("yufacedetectnet-v1", (1, 3, 96, 128)),
                                        ("yolo-fastest-1.1", (1, 3, 160, 160))])
def test_layers_shapes_and_set_input_shape_are_cv2s(models, name, shape):
    ours, ref = _pair(models, name)
    a, b = ours.getLayersShapes(shape), ref.getLayersShapes(shape)
    assert a[0].tolist() == b[0].tolist()
    for got, want in ((a[1], b[1]), (a[2], b[2])):
        assert len(got) == len(want)
        for x, y in zip(got, want):
            assert [v.tolist() for v in x] == [v.tolist() for v in y]
    ours.setInputShape(ours.net.input_names[0], shape)
    c = ours.getLayersShapes()
    assert [[v.tolist() for v in x] for x in c[2]] == [[v.tolist() for v in x] for x in b[2]]
    with pytest.raises(cv2.error):
        ours.setInputShape("nope", shape)


def test_get_flops_deviation_is_the_bias_term(tmp_path):
    """refnet's getFLOPS is 2 x multiply-adds; cv2 adds one per convolution output for the bias."""
    p = tmp_path / "c.prototxt"
    p.write_text('name: "c"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 10 dim: 12 }\n'
                 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
                 '  convolution_param { num_output: 4 kernel_size: 3 } }\n')
    from refnet.archs import seeded_caffemodel

    w = tmp_path / "c.caffemodel"
    w.write_bytes(seeded_caffemodel(p, 0))
    ours, ref = dnn.readNetFromCaffe(str(p), str(w)), cv2.dnn.readNetFromCaffe(str(p), str(w))
    out_elems = 4 * 8 * 10
    assert ours.getFLOPS((1, 3, 10, 12)) == 2 * out_elems * 3 * 9
    assert ref.getFLOPS((1, 3, 10, 12)) == ours.getFLOPS((1, 3, 10, 12)) + out_elems


def test_images_from_blob_is_cv2s():
    blob = np.random.default_rng(0).normal(size=(3, 2, 5, 7)).astype(np.float32)
    a, b = dnn.imagesFromBlob(blob), cv2.dnn.imagesFromBlob(blob)
    assert isinstance(a, tuple) and len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape == (5, 7, 2) and np.array_equal(x, y)


@pytest.mark.parametrize("seed", range(40))
def test_nms_boxes_batched_is_cv2s(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    xy = rng.uniform(-5, 60, (n, 2))
    wh = rng.uniform(1, 30, (n, 2))
    if seed % 2:
        xy, wh = np.round(xy), np.round(wh)
    boxes = np.concatenate([xy, wh], axis=1)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if seed % 3 == 0:
        scores = np.round(scores * 4) / 4  # ties
    ids = rng.integers(0, 3, n)
    thr, nms_thr = float(rng.uniform(0, 0.5)), float(rng.uniform(0.2, 0.7))
    eta = 1.0 if seed % 4 else 0.9
    top_k = int(rng.integers(0, 6))
    got = dnn.NMSBoxesBatched(boxes.tolist(), scores.tolist(), ids.tolist(), thr, nms_thr, eta, top_k)
    want = cv2.dnn.NMSBoxesBatched([[float(v) for v in b] for b in boxes], scores.tolist(), ids.tolist(), thr,
                                   nms_thr, eta, top_k)
    assert list(np.asarray(got).reshape(-1)) == list(np.asarray(want).reshape(-1))
    assert dnn.NMSBoxesBatched([], [], [], 0.1, 0.5) == cv2.dnn.NMSBoxesBatched([], [], [], 0.1, 0.5) == ()


def test_errors_are_also_cv2_errors(models, tmp_path):
    with pytest.raises(cv2.error) as ei:
        dnn.readNetFromCaffe(str(tmp_path / "missing.prototxt"))
    assert isinstance(ei.value, (RefnetError, OSError)) and "missing.prototxt" in str(ei.value)
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: 'x' type: ")
    with pytest.raises(cv2.error) as ei:
        dnn.readNetFromCaffe(str(bad))
    assert isinstance(ei.value, ModelFormatError) and ei.value.line == 1 and ei.value.code == -2
    net = dnn.readNet(*[str(p) for p in zoo.find("lenet-mnist").main_paths]) if zoo.find("lenet-mnist").found \
        else pytest.skip("lenet-mnist not available")
    with pytest.raises(cv2.error, match="setInput"):
        net.forward()
    net.setInput(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(KeyError) as ei:
        net.forward("nope")
    assert isinstance(ei.value, cv2.error)
    with pytest.raises(cv2.error):
        dnn.NMSBoxes([[0, 0, 1]], [0.5], 0.1, 0.5)


def test_prototxt_only_reads_as_in_cv2(models):
    proto = str(require_model(models, "lenet_mnist_caffe/lenet.prototxt"))
    ours, ref = dnn.readNetFromCaffe(proto), cv2.dnn.readNetFromCaffe(proto)
    assert ours.getLayerNames() == tuple(ref.getLayerNames()) and not ours.empty() and not ref.empty()
    assert ours.getLayerTypes() == tuple(ref.getLayerTypes())
    x = np.zeros((1, 1, 28, 28), np.float32)
    ours.setInput(x)
    ref.setInput(x)
    with pytest.raises(cv2.error):
        ref.forward()
    with pytest.raises(cv2.error, match=r"without its \.caffemodel.*conv1, conv2, ip1, ip2 have no weights"):
        ours.forward()


def test_cfg_only_reads_as_in_cv2(models):
    cfg = str(require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg"))
    ours, ref = dnn.readNetFromDarknet(cfg), cv2.dnn.readNetFromDarknet(cfg)
    assert ours.getLayerNames() == tuple(ref.getLayerNames()) and not ours.empty() and not ref.empty()
    assert ours.getLayerTypes() == tuple(ref.getLayerTypes())
    assert ours.getUnconnectedOutLayersNames() == tuple(ref.getUnconnectedOutLayersNames())
    x = np.zeros((1, 3, 320, 320), np.float32)
    ours.setInput(x)
    ref.setInput(x)
    with pytest.raises(cv2.error):
        ref.forward()
    with pytest.raises(cv2.error, match=r"without its \.weights.*conv_0, bn_0, .* have no weights"):
        ours.forward()


def test_quirks_after_a_read_warns(models):
    paths = [str(p) for p in zoo.find("lenet-mnist").main_paths] if zoo.find("lenet-mnist").found else None
    if paths is None:
        pytest.skip("lenet-mnist not available")
    import gc

    assert dnn.quirks == "none"
    net = dnn.readNet(*paths)
    try:
        with pytest.warns(UserWarning, match=r"no effect on the \d+ net.*quirks 'none'.*read it again"):
            dnn.quirks = "cv2"
        assert dnn.quirks == "cv2"
        fresh = dnn.readNet(*paths)  # read after the change: has quirks="cv2"
        assert fresh.net is not net.net
    finally:
        del net
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dnn.quirks = "none"
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no live net read with other quirks: no warning
        del fresh
        gc.collect()
        dnn.quirks = "none"
