"""Importer -> exporter: synthetic Caffe, Torch7 and Darknet files written by the test writers
(every layer type the importers turn into the ops under test), loaded by refnet, exported, and
every layer tensor checked in onnxruntime and in cv2 5.x against refnet's float64 run of the
source file (both quirks modes for Darknet)."""

from __future__ import annotations

import numpy as np
import pytest
from test_export_onnx import assert_close, prepare
from writers import t7_writer as W
from writers.caffe_writer import E, Layer, NetSpec, write_net
from writers.darknet_writer import ALL_LAYERS, cfg_text, random_weights

import refnet
from refnet.crosscheck.ort_backend import OrtBackend

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _w(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def caffe_net(tmp_path):
    rng = np.random.default_rng(0)
    L = [
        Layer("conv1", "Convolution", ["data"], ["conv1"], {"convolution_param": {
            "num_output": 8, "kernel_size": 3, "pad": 1, "stride": 2}}, [_w(rng, 8, 3, 3, 3), _w(rng, 8)]),
        Layer("prelu1", "PReLU", ["conv1"], ["conv1"], {}, [np.abs(_w(rng, 8))]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"], {"pooling_param": {
            "pool": E("AVE"), "kernel_size": 3, "stride": 2, "pad": 1}}),
        Layer("pool2", "Pooling", ["conv1"], ["pool2"], {"pooling_param": {
            "pool": E("MAX"), "kernel_size": 3, "stride": 2, "pad": 1}}),
        Layer("lrn1", "LRN", ["pool1"], ["lrn1"], {"lrn_param": {"local_size": 3, "alpha": 0.3, "beta": 0.75,
                                                                  "norm_region": E("WITHIN_CHANNEL")}}),
        Layer("lrn2", "LRN", ["pool2"], ["lrn2"], {"lrn_param": {"local_size": 5, "alpha": 0.3, "beta": 0.75,
                                                                  "k": 2.0}}),
        Layer("sum", "Eltwise", ["lrn1", "lrn2"], ["sum"], {"eltwise_param": {"operation": E("SUM"),
                                                                                "coeff": [0.5, -1.5]}}),
        Layer("bn", "BatchNorm", ["sum"], ["sum"], {"batch_norm_param": {"eps": 1e-3}},
              [_w(rng, 8), np.abs(_w(rng, 8)) + 0.5, np.array([1.0], np.float32)]),
        Layer("sc", "Scale", ["sum"], ["sum"], {"scale_param": {"bias_term": True}}, [_w(rng, 8) + 1, _w(rng, 8)]),
        Layer("pow", "Power", ["sum"], ["pow"], {"power_param": {"power": 2.0, "scale": 0.5, "shift": 1.0}}),
        Layer("norm", "Normalize", ["pow"], ["norm"], {"norm_param": {"across_spatial": False,
                                                                      "channel_shared": False}},
              [np.abs(_w(rng, 8)) + 1]),
        Layer("mvn", "MVN", ["norm"], ["mvn"], {"mvn_param": {"normalize_variance": True}}),
        Layer("deconv", "Deconvolution", ["mvn"], ["deconv"], {"convolution_param": {
            "num_output": 4, "kernel_size": 4, "stride": 2, "pad": 1, "group": 2}}, [_w(rng, 8, 2, 4, 4), _w(rng, 4)]),
        Layer("interp", "Interp", ["deconv"], ["interp"], {"interp_param": {"zoom_factor": 2}}),
        Layer("crop", "Crop", ["interp", "data"], ["crop"], {"crop_param": {"axis": 2, "offset": [1, 1]}}),
        Layer("slice", "Slice", ["crop"], ["s1", "s2"], {"slice_param": {"axis": 1, "slice_point": [1]}}),
        Layer("cat", "Concat", ["s2", "s1"], ["cat"]),
        Layer("flat", "Flatten", ["cat"], ["flat"]),
        Layer("ip", "InnerProduct", ["flat"], ["ip"], {"inner_product_param": {"num_output": 6}},
              [_w(rng, 6, 4 * 12 * 14, scale=0.02), _w(rng, 6)]),
        Layer("prob", "Softmax", ["ip"], ["prob"]),
    ]
    proto, model = write_net(NetSpec(L, {"data": (1, 3, 12, 14)}), tmp_path)
    return refnet.load(proto, model)


def torch_net(tmp_path):
    rng = np.random.default_rng(1)
    pool = W.nn_SpatialMaxPooling(2, 2, 2, 2)
    model = W.nn_Sequential(
        W.nn_SpatialZeroPadding(1, -1, 2, -1),
        W.nn_SpatialConvolution(rng, 3, 8, 3, 3, 1, 1, 1, 1),
        W.nn_SpatialBatchNormalization(rng, 8),
        W.nn_PReLU(rng, 8),
        pool,
        W.nn_SpatialConvolution(rng, 8, 8, 3, 3, 1, 1, 1, 1),
        W.nn_ReLU(),
        W.nn_SpatialMaxUnpooling(pool),
        W.nn_SpatialFullConvolution(rng, 8, 4, 3, 3, 2, 2, 1, 1, 1, 1),
        W.nn_InstanceNormalization(rng, 4),
        W.nn_SpatialReflectionPadding(1, 2, 1, 0),
        W.nn_SpatialAveragePooling(3, 3, 2, 2, 1, 1, ceil_mode=True, count_include_pad=False),
        W.nn_SpatialUpSamplingBilinear(2),
        W.nn_Padding(2, 2, 3, 0.5),
        W.nn_Narrow(3, 2, 5),
        W.nn_MulConstant(0.5),
        W.nn_simple("nn.Tanh"),
    )
    return refnet.load(W.save(tmp_path / "m.t7", model))


DARKNET = ALL_LAYERS  # every section type cv2 implements (tests/writers/darknet_writer.py)


def darknet_net(tmp_path, quirks):
    cfg = cfg_text(DARKNET)
    (tmp_path / "m.cfg").write_text(cfg)
    # cv2 reads connected layers' BN before the weights: write them so (else variances go negative)
    order = "cv2" if quirks == "cv2" else "darknet"
    (tmp_path / "m.weights").write_bytes(random_weights(cfg, 3, connected_order=order)[0])
    return refnet.load(tmp_path / "m.cfg", tmp_path / "m.weights", quirks=quirks)


BUILD = {"caffe": caffe_net, "torch": torch_net, "darknet": lambda p: darknet_net(p, "none"),
         "darknet-cv2": lambda p: darknet_net(p, "cv2")}


@pytest.mark.parametrize("fw", sorted(BUILD))
def test_framework_file_every_layer(fw, tmp_path, cv5):  # noqa: F811
    net = BUILD[fw](tmp_path)
    shape = (1, 3, 12, 16) if fw == "torch" else net.input_shapes[net.input_names[0]]
    x = np.random.default_rng(7).uniform(-1, 1, shape)
    path, feeds, names, ref = prepare(net, tmp_path / "onnx", x=x.astype(np.float32))
    ops = {n.op for n in net.graph.nodes}
    assert len(ops) >= 10, ops
    for be in (OrtBackend(), cv5):
        assert_close(be.name, be.run(path, feeds, names), ref, names)
