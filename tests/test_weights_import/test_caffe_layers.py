"""Caffe importer, layer by layer: synthetic nets written by the test writer, every layer's
output compared with cv2.dnn's ``forward(name)`` (fusion off) in float32 and float64, and
float32 against float64. Where cv2 cannot serve as the oracle (it lacks the layer, or
deviates from Caffe) a numpy formulation of Caffe's rule is used instead; each cv2
deviation gets a test showing refnet's faithful result and, with ``quirks="cv2"``, cv2's.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from conftest import assert_close, rel_err
from writers.caffe_writer import (
    E,
    Layer,
    NetSpec,
    blob_bytes,
    caffemodel,
    cv2_outputs,
    key,
    ld,
    prototxt,
    varint,
    write_net,
)

import refnet
from refnet.errors import ModelFormatError, UnsupportedLayerError
from refnet.weights_import.caffe import CV2_QUIRKS, SUPPORTED_TYPES, read_caffe

R = np.random.default_rng(2024)


def w(*shape: int, scale: float | None = None) -> np.ndarray:
    """He-scaled random weights (fan-in = product of all dims but the first)."""
    fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return R.normal(0.0, scale if scale is not None else np.sqrt(2.0 / fan), shape).astype(np.float32)


def conv(name, bottom, top, blobs, **p) -> Layer:
    return Layer(name, "Convolution", [bottom], [top], {"convolution_param": p}, blobs)


def feeds_for(spec: NetSpec, positive: bool = False) -> dict[str, np.ndarray]:
    out = {}
    for k, s in spec.inputs.items():
        x = R.standard_normal(s).astype(np.float32)
        out[k] = np.abs(x) + 0.1 if positive else x
    return out


def run_net(tmp_path, spec: NetSpec, feeds=None, *, quirks="none", positive=False, **write_kw):
    proto, model = write_net(spec, tmp_path, **write_kw)
    feeds = feeds or feeds_for(spec, positive)
    net = refnet.load_caffe(proto, model, quirks=quirks)
    names, ref = cv2_outputs(proto, model, feeds)
    x = feeds if len(feeds) > 1 else next(iter(feeds.values()))
    return net, names, ref, net.trace(x, precision="float64"), net.trace(x, precision="float32")


def check_vs_cv2(tmp_path, spec: NetSpec, feeds=None, *, quirks="none", skip=(), positive=False,
                 **write_kw) -> dict[str, tuple[float, float, float]]:
    """Every layer: refnet f64 and f32 vs cv2 within TOL["vs_cv2"], f32 vs f64 within
    TOL["f32_vs_f64"]; layer names and unconnected outputs equal cv2's."""
    net, names, ref, t64, t32 = run_net(tmp_path, spec, feeds, quirks=quirks, positive=positive,
                                        **write_kw)
    assert net.layer_names == names
    assert net.output_names == cv2_outputs.last_unconnected
    errs = {}
    for n in names:
        if n in skip:
            continue
        assert t64[n].shape == ref[n].shape, (n, t64[n].shape, ref[n].shape)
        errs[n] = (rel_err(t64[n], ref[n]), rel_err(t32[n], ref[n]), rel_err(t32[n], t64[n]))
        assert_close(t64[n], ref[n], "vs_cv2", f"{n} float64 vs cv2")
        assert_close(t32[n], ref[n], "vs_cv2", f"{n} float32 vs cv2")
        assert_close(t32[n], t64[n], "f32_vs_f64", f"{n} float32 vs float64")
    return errs


# ---- one synthetic net per layer type / parameter combination ---------------------------------
X = {"data": (1, 4, 9, 11)}  # odd sizes on purpose
CASES: dict[str, Callable[[], tuple[NetSpec, dict]]] = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def conv_basic():
    return NetSpec([conv("c", "data", "c", [w(5, 4, 3, 3), w(5, scale=0.1)], num_output=5,
                         kernel_size=3, pad=1)], X), {}


@case
def conv_asymmetric_h_w():
    # kernel_h/kernel_w, pad_h != pad_w, stride_h != stride_w, no bias
    return NetSpec([conv("c", "data", "c", [w(3, 4, 3, 5)], num_output=3, kernel_h=3,
                         kernel_w=5, pad_h=1, pad_w=2, stride_h=2, stride_w=1,
                         bias_term=False)], X), {}


@case
def conv_repeated_pad_kernel_stride():
    return NetSpec([conv("c", "data", "c", [w(6, 4, 3, 5), w(6, scale=0.1)], num_output=6,
                         kernel_size=[3, 5], pad=[2, 1], stride=[2, 3])], X), {}


@case
def conv_dilation_with_groups():
    return NetSpec([conv("c", "data", "c", [w(6, 2, 3, 3), w(6, scale=0.1)], num_output=6,
                         kernel_size=3, pad=2, dilation=2, group=2)], X), {}


@case
def conv_depthwise_alias():
    lay = Layer("dw", "ConvolutionDepthwise", ["data"], ["dw"],
                {"convolution_param": {"num_output": 4, "group": 4, "kernel_size": 3,
                                       "stride": 2, "pad": 1}}, [w(4, 1, 3, 3), w(4, scale=0.1)])
    return NetSpec([lay], X), {}


@case
def deconv_stride_pad():
    return NetSpec([Layer("d", "Deconvolution", ["data"], ["d"],
                          {"convolution_param": {"num_output": 3, "kernel_size": 4, "stride": 2,
                                                 "pad": 1}}, [w(4, 3, 4, 4), w(3, scale=0.1)])],
                   X), {}


@case
def deconv_groups_no_bias():
    return NetSpec([Layer("d", "Deconvolution", ["data"], ["d"],
                          {"convolution_param": {"num_output": 6, "kernel_h": 3, "kernel_w": 2,
                                                 "stride_h": 1, "stride_w": 2, "group": 2,
                                                 "bias_term": False}}, [w(4, 3, 3, 2)])], X), {}


def _pool(**pooling_param) -> tuple[NetSpec, dict]:
    """A case of one Pooling layer "p" on X with these pooling_param fields."""
    return NetSpec([Layer("p", "Pooling", ["data"], ["p"], {"pooling_param": pooling_param})], X), {}


@case
def pool_max_ceil_pad():
    return _pool(pool=E("MAX"), kernel_size=3, stride=2, pad=1)


@case
def pool_max_floor():
    return _pool(pool=E("MAX"), kernel_size=2, stride=2, ceil_mode=False)


@case
def pool_ave_padded_divisor():
    return _pool(pool=E("AVE"), kernel_size=3, stride=2, pad=1)


@case
def pool_asymmetric_h_w():
    return _pool(pool=E("AVE"), kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=0)


@case
def pool_global_max_and_ave():
    return NetSpec([
        Layer("gmax", "Pooling", ["data"], ["gmax"], {"pooling_param": {"pool": E("MAX"),
                                                                        "global_pooling": True}}),
        Layer("gave", "Pooling", ["data"], ["gave"], {"pooling_param": {"pool": E("AVE"),
                                                                        "global_pooling": True}}),
    ], X), {}


@case
def lrn_across_and_within():
    return NetSpec([
        Layer("a", "LRN", ["data"], ["a"], {"lrn_param": {"local_size": 3, "alpha": 0.5,
                                                          "beta": 0.75}}),
        Layer("b", "LRN", ["data"], ["b"], {"lrn_param": {"local_size": 5, "alpha": 0.1,
                                                          "beta": 0.6,
                                                          "norm_region": E("WITHIN_CHANNEL")}}),
    ], X), {}


@case
def inner_product_axes():
    return NetSpec([
        Layer("ip1", "InnerProduct", ["data"], ["ip1"], {"inner_product_param": {"num_output": 7}},
              [w(7, 396), w(7, scale=0.1)]),
        Layer("ip2", "InnerProduct", ["data"], ["ip2"],
              {"inner_product_param": {"num_output": 3, "axis": 2, "bias_term": False}},
              [w(3, 99)]),
    ], X), {}


@case
def softmax_axes():
    return NetSpec([
        Layer("s1", "Softmax", ["data"], ["s1"]),
        Layer("s2", "SoftMax", ["data"], ["s2"], {"softmax_param": {"axis": 2}}),
        Layer("s3", "Softmax", ["data"], ["s3"], {"softmax_param": {"axis": -1}}),
    ], X), {}


@case
def activations():
    return NetSpec([
        Layer("relu", "ReLU", ["data"], ["relu"]),
        Layer("leaky", "ReLU", ["data"], ["leaky"], {"relu_param": {"negative_slope": 0.1}}),
        Layer("relu6", "ReLU6", ["data"], ["relu6"]),
        Layer("prelu", "PReLU", ["data"], ["prelu"], {}, [np.array([0.1, 0.2, 0.3, 0.4])]),
        Layer("prelu1", "PReLU", ["data"], ["prelu1"], {"prelu_param": {"channel_shared": True}},
              [np.array([0.25])]),
        Layer("elu", "ELU", ["data"], ["elu"], {"elu_param": {"alpha": 0.5}}),
        Layer("sig", "Sigmoid", ["data"], ["sig"]),
        Layer("tanh", "TanH", ["data"], ["tanh"]),
        Layer("bnll", "BNLL", ["data"], ["bnll"]),
        Layer("abs", "AbsVal", ["data"], ["abs"]),
        Layer("pow", "Power", ["data"], ["pow"], {"power_param": {"power": 2.0, "scale": 0.5,
                                                                  "shift": 1.0}}),
        Layer("exp", "Exp", ["data"], ["exp"]),
        Layer("exp2", "Exp", ["data"], ["exp2"], {"exp_param": {"base": 2.0, "scale": 0.5,
                                                                "shift": 0.1}}),
    ], X), {"data": (R.standard_normal(X["data"]) * 4).astype(np.float32)}


@case
def log_layers():
    return NetSpec([Layer("ln", "Log", ["data"], ["ln"])], X), \
        {"data": (np.abs(R.standard_normal(X["data"])) + 0.05).astype(np.float32)}


@case
def batchnorm_scale_inplace():
    # the Caffe idiom: conv -> BatchNorm (scale factor 2.5) -> Scale (bias) -> ReLU, in place
    c = 5
    return NetSpec([
        conv("conv", "data", "conv", [w(c, 4, 3, 3)], num_output=c, kernel_size=3,
             bias_term=False),
        Layer("bn", "BatchNorm", ["conv"], ["conv"], {"batch_norm_param": {"eps": 1e-3}},
              [R.normal(0, 0.5, c) * 2.5, R.uniform(0.5, 2, c) * 2.5, np.array([2.5])]),
        Layer("sc", "Scale", ["conv"], ["conv"], {"scale_param": {"bias_term": True}},
              [R.uniform(0.5, 1.5, c), R.normal(0, 0.2, c)]),
        Layer("relu", "ReLU", ["conv"], ["conv"]),
    ], X), {}


@case
def scale_variants():
    return NetSpec([
        Layer("s1", "Scale", ["data"], ["s1"], {}, [R.uniform(0.5, 1.5, 4)]),
        Layer("s2", "Scale", ["data"], ["s2"], {"scale_param": {"axis": 1, "num_axes": 2}},
              [R.uniform(0.5, 1.5, (4, 9))]),
        Layer("s3", "Scale", ["data", "sc"], ["s3"], {"scale_param": {"axis": 0}}),
    ], {"data": (1, 4, 9, 11), "sc": (1, 4)}), {}


@case
def eltwise_ops():
    return NetSpec([
        Layer("r", "ReLU", ["data"], ["r"]),
        Layer("t", "TanH", ["data"], ["t"]),
        Layer("sum", "Eltwise", ["data", "r", "t"], ["sum"],
              {"eltwise_param": {"operation": E("SUM"), "coeff": [0.5, -1.0, 2.0]}}),
        Layer("prod", "Eltwise", ["data", "t"], ["prod"], {"eltwise_param": {"operation": E("PROD")}}),
        Layer("max", "Eltwise", ["data", "r", "t"], ["max"],
              {"eltwise_param": {"operation": E("MAX")}}),
    ], X), {}


@case
def concat_slice_split():
    return NetSpec([
        Layer("cat1", "Concat", ["data", "data"], ["cat1"]),
        Layer("cat2", "Concat", ["data", "data"], ["cat2"], {"concat_param": {"axis": 2}}),
        Layer("cat3", "Concat", ["data", "data"], ["cat3"], {"concat_param": {"axis": -1}}),
        Layer("sl", "Slice", ["data"], ["a", "b", "c"],
              {"slice_param": {"axis": 3, "slice_point": [2, 7]}}),
        Layer("ra", "ReLU", ["a"], ["ra"]), Layer("rb", "ReLU", ["b"], ["rb"]),
        Layer("rc", "ReLU", ["c"], ["rc"]),
        Layer("sp", "Split", ["data"], ["s0", "s1"]),
        Layer("e", "Eltwise", ["s0", "s1"], ["e"]),
    ], X), {}


@case
def shape_ops():
    return NetSpec([
        Layer("rs", "Reshape", ["data"], ["rs"], {"reshape_param": {"shape": {"dim": [0, -1, 11]}}}),
        Layer("rs2", "Reshape", ["data"], ["rs2"],
              {"reshape_param": {"shape": {"dim": [2, 2]}, "axis": 1, "num_axes": 1}}),
        Layer("fl", "Flatten", ["data"], ["fl"]),
        Layer("fl2", "Flatten", ["data"], ["fl2"], {"flatten_param": {"axis": 2, "end_axis": 3}}),
        Layer("pm", "Permute", ["data"], ["pm"], {"permute_param": {"order": [0, 2, 3, 1]}}),
        Layer("pm2", "Permute", ["data"], ["pm2"], {"permute_param": {"order": [0, 3, 1, 2]}}),
        Layer("crop", "Crop", ["data", "ref"], ["crop"],
              {"crop_param": {"axis": 2, "offset": [1, 3]}}),
        Layer("crop1", "Crop", ["data", "ref"], ["crop1"], {"crop_param": {"axis": 1, "offset": 0}}),
        Layer("drop", "Dropout", ["data"], ["drop"], {"dropout_param": {"dropout_ratio": 0.3}}),
        Layer("drop2", "Dropout", ["data"], ["drop2"],
              {"dropout_param": {"dropout_ratio": 0.25, "scale_train": False}}),
        Layer("sh", "ShuffleChannel", ["data"], ["sh"], {"shuffle_channel_param": {"group": 2}}),
    ], {"data": (1, 4, 9, 11), "ref": (1, 2, 5, 6)}), {}


@case
def mvn_and_normalize():
    return NetSpec([
        Layer("m1", "MVN", ["data"], ["m1"]),
        Layer("m2", "MVN", ["data"], ["m2"], {"mvn_param": {"across_channels": True}}),
        Layer("m3", "MVN", ["data"], ["m3"], {"mvn_param": {"normalize_variance": False}}),
        Layer("n1", "Normalize", ["data"], ["n1"],
              {"norm_param": {"across_spatial": False, "channel_shared": False}},
              [R.uniform(1, 3, 4)]),
        Layer("n2", "Normalize", ["data"], ["n2"], {}, [np.array([20.0])]),
    ], X), {}


@case
def interp_zoom_and_size():
    return NetSpec([
        Layer("z", "Interp", ["data"], ["z"], {"interp_param": {"zoom_factor": 2}}),
        Layer("hw", "Interp", ["data"], ["hw"], {"interp_param": {"height": 7, "width": 15}}),
    ], X), {}


@case
def prior_box_variants():
    var4 = [0.1, 0.1, 0.2, 0.2]
    return NetSpec([
        Layer("wh", "PriorBox", ["f", "data"], ["wh"], {"prior_box_param": {
            "width": [8.0, 16.0], "height": [12.0, 10.0], "clip": False, "variance": var4}}),
        Layer("many", "PriorBox", ["f", "data"], ["many"], {"prior_box_param": {
            "min_size": [6.0, 9.0], "max_size": [12.0, 15.0], "aspect_ratio": [2.0, 0.5, 3.0],
            "flip": True, "clip": True, "variance": [0.2], "offset": 0.25}}),
        Layer("steps", "PriorBox", ["f", "data"], ["steps"], {"prior_box_param": {
            "min_size": 7.0, "aspect_ratio": 2.0, "flip": False, "step_h": 9.0, "step_w": 8.0,
            "variance": var4}}),
        Layer("step", "PriorBox", ["f", "data"], ["step"], {"prior_box_param": {
            "min_size": 5.0, "max_size": 9.0, "step": 6.5, "clip": False, "variance": var4}}),
    ], {"f": (1, 2, 5, 7), "data": (1, 3, 40, 56)}), {}


@case
def ssd_head():
    """conv -> Normalize -> loc/conf heads -> Permute/Flatten/Concat, PriorBox, Softmax,
    DetectionOutput: a miniature SSD with CENTER_SIZE decoding."""
    img = {"data": (1, 3, 32, 40)}
    layers = [
        conv("f1", "data", "f1", [w(8, 3, 3, 3), w(8, scale=0.1)], num_output=8, kernel_size=3,
             stride=4, pad=1),
        Layer("f1n", "Normalize", ["f1"], ["f1n"], {"norm_param": {"across_spatial": False}},
              [np.array([2.0])]),
        conv("f2", "f1", "f2", [w(8, 8, 3, 3), w(8, scale=0.1)], num_output=8, kernel_size=3,
             stride=2, pad=1),
    ]
    locs, confs, priors = [], [], []
    nprior = {"f1n": 4, "f2": 6}
    for src, np_ in nprior.items():
        layers += [
            conv(f"{src}_loc", src, f"{src}_loc", [w(np_ * 4, 8, 3, 3, scale=0.05), w(np_ * 4, scale=0.05)],
                 num_output=np_ * 4, kernel_size=3, pad=1),
            Layer(f"{src}_loc_perm", "Permute", [f"{src}_loc"], [f"{src}_loc_perm"],
                  {"permute_param": {"order": [0, 2, 3, 1]}}),
            Layer(f"{src}_loc_flat", "Flatten", [f"{src}_loc_perm"], [f"{src}_loc_flat"]),
            conv(f"{src}_conf", src, f"{src}_conf", [w(np_ * 3, 8, 3, 3, scale=0.3), w(np_ * 3, scale=0.3)],
                 num_output=np_ * 3, kernel_size=3, pad=1),
            Layer(f"{src}_conf_perm", "Permute", [f"{src}_conf"], [f"{src}_conf_perm"],
                  {"permute_param": {"order": [0, 2, 3, 1]}}),
            Layer(f"{src}_conf_flat", "Flatten", [f"{src}_conf_perm"], [f"{src}_conf_flat"]),
        ]
        if np_ == 4:
            pb = {"min_size": 6.0, "max_size": 12.0, "aspect_ratio": 2.0, "flip": True,
                  "clip": False, "variance": [0.1, 0.1, 0.2, 0.2]}
        else:
            pb = {"min_size": 12.0, "max_size": 20.0, "aspect_ratio": [2.0, 3.0], "flip": True,
                  "clip": True, "variance": [0.1, 0.1, 0.2, 0.2], "step": 16.0, "offset": 0.5}
        layers.append(Layer(f"{src}_prior", "PriorBox", [src, "data"], [f"{src}_prior"],
                            {"prior_box_param": pb}))
        locs.append(f"{src}_loc_flat")
        confs.append(f"{src}_conf_flat")
        priors.append(f"{src}_prior")
    layers += [
        Layer("loc", "Concat", locs, ["loc"]),
        Layer("conf", "Concat", confs, ["conf"]),
        Layer("prior", "Concat", priors, ["prior"], {"concat_param": {"axis": 2}}),
        Layer("conf_rs", "Reshape", ["conf"], ["conf_rs"], {"reshape_param": {"shape": {"dim": [0, -1, 3]}}}),
        Layer("conf_sm", "Softmax", ["conf_rs"], ["conf_sm"], {"softmax_param": {"axis": 2}}),
        Layer("conf_fl", "Flatten", ["conf_sm"], ["conf_fl"]),
        Layer("det", "DetectionOutput", ["loc", "conf_fl", "prior"], ["det"],
              {"detection_output_param": {"num_classes": 3, "share_location": True,
                                          "background_label_id": 0,
                                          "nms_param": {"nms_threshold": 0.45, "top_k": 50},
                                          "code_type": E("CENTER_SIZE"), "keep_top_k": 20,
                                          "confidence_threshold": 0.2}}),
    ]
    return NetSpec(layers, img), {}


@case
def silence_and_unconnected():
    return NetSpec([
        Layer("r", "ReLU", ["data"], ["r"]),
        Layer("t", "TanH", ["r"], ["t"]),
        Layer("s", "Silence", ["t"], []),
    ], X), {}


@case
def duplicate_layer_names():
    return NetSpec([
        Layer("r", "ReLU", ["data"], ["a"]),
        Layer("r", "TanH", ["a"], ["b"]),
        Layer("r", "Sigmoid", ["b"], ["c"]),
        Layer("c", "Convolution", ["c"], ["c"], {"convolution_param": {"num_output": 2, "kernel_size": 1}},
              [w(2, 4, 1, 1), w(2)]),
        Layer("c", "Convolution", ["c"], ["d"], {"convolution_param": {"num_output": 3, "kernel_size": 1}},
              [w(3, 2, 1, 1), w(3)]),
    ], X), {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_vs_cv2(tmp_path, name):
    spec, feeds = CASES[name]()
    positive = name == "log_layers"
    check_vs_cv2(tmp_path, spec, feeds or None, positive=positive)


# ---- multi-output layers, in-place addressing ---------------------------------------------------
def test_max_pool_mask_second_top(tmp_path):
    spec = NetSpec([Layer("p", "Pooling", ["data"], ["p", "mask"],
                          {"pooling_param": {"pool": E("MAX"), "kernel_size": 3, "stride": 2,
                                             "pad": 1}})], X)
    proto, model = write_net(spec, tmp_path)
    x = R.standard_normal(X["data"]).astype(np.float32)
    _, ref = cv2_outputs(proto, model, {"data": x}, ["p"], all_outputs=True)
    net = refnet.load_caffe(proto, model)
    for prec in ("float64", "float32"):
        out = net.forward(x, outputs=["p", "p:1"], precision=prec)
        assert_close(out["p"], ref["p"][0], "vs_cv2", prec)
        # Caffe's mask: the argmax's index within its H*W plane (cv2 returns it as float)
        assert np.array_equal(out["p:1"].astype(np.int64), ref["p"][1].astype(np.int64)), prec


def test_inplace_layers_stay_addressable(tmp_path):
    spec, _ = batchnorm_scale_inplace()
    g = read_caffe(*write_net(spec, tmp_path))
    nodes = {n.name: n for n in g.nodes}
    # each in-place layer reads its predecessor's tensor and writes its own
    assert nodes["bn"].inputs == ("conv",) and nodes["sc"].inputs == ("bn",)
    assert nodes["relu"].inputs == ("sc",) and g.output_names == ("relu",)
    net = refnet.Net(g)
    x = R.standard_normal(X["data"]).astype(np.float32)
    out = net.forward(x, outputs=["conv", "relu"], precision="float64")
    assert (out["conv"] < 0).any() and (out["relu"] >= 0).all()


def test_duplicate_names_follow_cv2(tmp_path):
    spec, _ = duplicate_layer_names()
    g = read_caffe(*write_net(spec, tmp_path))
    # cv2 4.14 names a Convolution after its first top ("c_1" -> its top "d")
    assert g.layer_names == ("r", "r_1", "r_2", "c", "d")
    # weights are matched by name in order: each "c" layer gets its own blobs
    assert g.node("c").params["weight"].shape == (2, 4, 1, 1)
    assert g.node("d").params["weight"].shape == (3, 2, 1, 1)
    clash = NetSpec([Layer("r", "ReLU", ["data"], ["a"]), Layer("r", "ReLU", ["a"], ["b"]),
                     Layer("r_1", "ReLU", ["b"], ["c"])], X)
    with pytest.raises(ModelFormatError, match="'r_1' is used twice"):
        read_caffe(prototxt_bytes=prototxt(clash).encode())
    with pytest.raises(cv2.error, match="already into net"):  # cv2 refuses it too
        cv2.dnn.readNetFromCaffe(str(write_net(clash, tmp_path, "clash")[0]))


# ---- quirks: refnet follows Caffe, quirks="cv2" reproduces cv2 ------------------------------
def _quirk_pair(tmp_path, spec, layer, feeds=None, positive=False):
    feeds = feeds or feeds_for(spec, positive)
    _, names, ref, t64, _ = run_net(tmp_path, spec, feeds)
    _, _, _, q64, q32 = run_net(tmp_path, spec, feeds, quirks="cv2")
    assert_close(q64[layer], ref[layer], "vs_cv2", "quirks=cv2 float64")
    assert_close(q32[layer], ref[layer], "vs_cv2", "quirks=cv2 float32")
    return t64[layer], ref[layer], feeds


def test_quirk_lrn_k(tmp_path):
    spec = NetSpec([Layer("l", "LRN", ["data"], ["l"], {"lrn_param": {"local_size": 3,
                                                                      "alpha": 0.6, "beta": 0.75,
                                                                      "k": 2.0}})], X)
    ours, theirs, feeds = _quirk_pair(tmp_path, spec, "l")
    x = feeds["data"].astype(np.float64)
    sq = np.pad(x**2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    win = sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]
    caffe = x / (2.0 + 0.6 / 3 * win) ** 0.75  # Caffe: (k + alpha/n * sum x^2)^-beta
    assert_close(ours, caffe, "vs_cv2", "faithful LRN")
    assert rel_err(ours, theirs) > 1e-2  # cv2 really differs here


def test_quirk_mvn_eps(tmp_path):
    spec = NetSpec([Layer("m", "MVN", ["data"], ["m"], {"mvn_param": {"eps": 0.5}}),
                    Layer("m2", "MVN", ["data"], ["m2"], {"mvn_param": {"eps": 0.5,
                                                                        "across_channels": True}})],
                   X)
    ours, theirs, feeds = _quirk_pair(tmp_path, spec, "m")
    x = feeds["data"].astype(np.float64)
    mu = x.mean(axis=(2, 3), keepdims=True)
    caffe = (x - mu) / (x.std(axis=(2, 3), keepdims=True) + 0.5)
    assert_close(ours, caffe, "vs_cv2", "Caffe MVN (std + eps)")
    assert rel_err(ours, theirs) > 1e-2
    _quirk_pair(tmp_path, spec, "m2")


def test_quirk_batchnorm_batch_statistics(tmp_path):
    c = 4
    spec = NetSpec([Layer("bn", "BatchNorm", ["data"], ["data"],
                          {"batch_norm_param": {"use_global_stats": False, "eps": 0.01}},
                          [R.normal(size=c), R.uniform(1, 2, c), np.array([1.0])])], X)
    ours, theirs, feeds = _quirk_pair(tmp_path, spec, "bn")
    g = read_caffe(*write_net(spec, tmp_path))
    assert g.layer_names == ("bn/mvn", "bn")  # cv2's layer naming
    x = feeds["data"].astype(np.float64)
    mu, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    assert_close(ours, (x - mu) / np.sqrt(var + 0.01), "vs_cv2", "Caffe batch-stat BN")
    assert_close(theirs, (x - mu) / np.sqrt(var + 0.01) / np.sqrt(1.01), "vs_cv2", "cv2 extra factor")


def test_quirk_concat_dim_and_slice_dim(tmp_path):
    spec = NetSpec([
        Layer("cat", "Concat", ["data", "data"], ["cat"], {"concat_param": {"concat_dim": 2}}),
        Layer("sl", "Slice", ["data"], ["a", "b"], {"slice_param": {"slice_dim": 2,
                                                                    "slice_point": 3}}),
    ], X)
    proto, model = write_net(spec, tmp_path)
    x = R.standard_normal(X["data"]).astype(np.float32)
    _, ref = cv2_outputs(proto, model, {"data": x}, ["cat", "sl"], all_outputs=True)
    ours = refnet.load_caffe(proto, model).forward(x, ["cat", "sl", "sl:1"], "float64")
    assert np.array_equal(ours["cat"], np.concatenate([x, x], axis=2))  # Caffe: concat_dim 2
    assert np.array_equal(ours["sl"], x[:, :, :3]) and np.array_equal(ours["sl:1"], x[:, :, 3:])
    assert ref["cat"][0].shape == (1, 8, 9, 11)  # cv2 ignores concat_dim: axis 1
    q = refnet.load_caffe(proto, model, quirks="cv2").forward(x, ["cat", "sl", "sl:1"], "float32")
    assert np.array_equal(q["cat"], ref["cat"][0])
    assert np.array_equal(q["sl"], ref["sl"][0]) and np.array_equal(q["sl:1"], ref["sl"][1])


def test_quirk_inner_product_transpose(tmp_path):
    wt = w(396, 3)  # transpose: true stores the weights as (K, N)
    spec = NetSpec([Layer("ip", "InnerProduct", ["data"], ["ip"],
                          {"inner_product_param": {"num_output": 3, "transpose": True}},
                          [wt, w(3)])], X)
    ours, theirs, feeds = _quirk_pair(tmp_path, spec, "ip")
    x = feeds["data"].reshape(1, -1).astype(np.float64)
    assert_close(ours, x @ wt.astype(np.float64) + spec.layers[0].blobs[1], "vs_cv2", "Caffe x.W")
    assert rel_err(ours, theirs) > 1e-2


def test_quirk_scale_second_bottom_with_bias(tmp_path):
    b = R.normal(size=4)
    spec = NetSpec([Layer("s", "Scale", ["data", "sc"], ["s"], {"scale_param": {"bias_term": True}},
                          [b])], {"data": (1, 4, 5, 6), "sc": (4,)})
    ours, theirs, feeds = _quirk_pair(tmp_path, spec, "s")
    caffe = feeds["data"] * feeds["sc"][None, :, None, None] + b[None, :, None, None]
    assert_close(ours, caffe, "vs_cv2", "Caffe x * s + b")
    assert_close(theirs, feeds["data"] + b[None, :, None, None], "vs_cv2", "cv2 x + b")


def test_quirk_prior_box_image_size(tmp_path):
    spec = NetSpec([Layer("pb", "PriorBox", ["f", "data"], ["pb"], {"prior_box_param": {
        "min_size": 6.0, "variance": [0.1, 0.1, 0.2, 0.2], "flip": False, "clip": False,
        "img_h": 48, "img_w": 60}})], {"f": (1, 2, 5, 7), "data": (1, 3, 40, 56)})
    ours, theirs, _ = _quirk_pair(tmp_path, spec, "pb")
    # Caffe: step = img / feature = (48/5, 60/7); first prior centred at step/2, 6 px wide,
    # normalised by the declared image size
    sh, sw = 48 / 5, 60 / 7
    first = [(sw / 2 - 3) / 60, (sh / 2 - 3) / 48, (sw / 2 + 3) / 60, (sh / 2 + 3) / 48]
    assert_close(ours[0, 0, :4], np.array(first), "f64_vs_oracle", "Caffe img_h/img_w")
    assert rel_err(ours, theirs) > 1e-3  # cv2 uses the 40x56 image instead


def test_quirk_log_parameters(tmp_path):
    spec = NetSpec([Layer("l", "Log", ["data"], ["l"], {"log_param": {"base": 10.0, "scale": 2.0,
                                                                      "shift": 0.5}})], X)
    ours, theirs, feeds = _quirk_pair(tmp_path, spec, "l", positive=True)
    x = feeds["data"].astype(np.float64)
    assert_close(ours, np.log10(0.5 + 2.0 * x), "f64_vs_oracle", "Caffe log_base(shift + scale x)")
    assert_close(theirs, np.log(x), "vs_cv2", "cv2 computes ln x")


def test_quirk_detection_output_corner_size(tmp_path):
    n, ncls = 12, 3
    pri = np.sort(R.uniform(0, 1, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]]
    var = np.array([0.1, 0.1, 0.2, 0.2])
    feeds = {"loc": R.normal(0, 0.5, (1, 4 * n)).astype(np.float32),
             "conf": R.dirichlet(np.ones(ncls), n).reshape(1, -1).astype(np.float32),
             "prior": np.stack([pri.reshape(-1), np.tile(var, n)])[None].astype(np.float32)}
    inputs = {k: v.shape for k, v in feeds.items()}
    det = {"num_classes": ncls, "share_location": True, "background_label_id": 0,
           "nms_param": {"nms_threshold": 0.45, "top_k": 50}, "keep_top_k": 20,
           "confidence_threshold": 0.01}
    caffe_ssd = NetSpec([Layer("det", "DetectionOutput", list(feeds), ["det"], {
        "detection_output_param": {**det, "code_type": E("CORNER_SIZE")}})], inputs, "input_shape")
    proto, model = write_net(caffe_ssd, tmp_path, "ssd")
    with pytest.raises(cv2.error):  # cv2's schema has no CORNER_SIZE: its parser refuses it
        cv2.dnn.readNetFromCaffe(str(proto))
    # cv2 still takes the value through its unknown-field fallback when written at layer level
    cv2_spec = NetSpec([Layer("det", "DetectionOutput", list(feeds), ["det"],
                              {"detection_output_param": det}, extra={"code_type": E("CORNER_SIZE")})],
                       inputs, "input_shape")
    _, ref = cv2_outputs(*write_net(cv2_spec, tmp_path, "cv2"), feeds)
    corner = NetSpec([Layer("det", "DetectionOutput", list(feeds), ["det"], {
        "detection_output_param": {**det, "code_type": E("CORNER")}})], inputs, "input_shape")
    _, ref_corner = cv2_outputs(*write_net(corner, tmp_path, "corner"), feeds)
    assert np.array_equal(ref["det"], ref_corner["det"])  # cv2: CORNER_SIZE == CORNER
    q = refnet.load_caffe(proto, model, quirks="cv2")
    for prec in ("float64", "float32"):
        assert_close(q.forward(feeds, ["det"], prec)["det"], ref["det"], "vs_cv2", prec)
    # faithful: Caffe-SSD's DecodeBBox for CORNER_SIZE, corner + variance * loc * prior size
    ours = refnet.load_caffe(proto, model).forward(feeds, ["det"], "float64")["det"][0, 0]
    p = pri.astype(np.float32).astype(np.float64)
    size = np.stack([p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]] * 2, 1)
    decoded = p + var.astype(np.float32) * feeds["loc"].reshape(n, 4) * size
    scores = feeds["conf"].reshape(n, ncls)
    kept = ours[ours[:, 2] > 0]
    assert len(kept) > 0
    for _, label, score, *box in kept:
        i = int(np.argmin(np.abs(decoded - box).max(axis=1)))
        assert np.abs(decoded[i] - box).max() < 1e-6 and abs(scores[i, int(label)] - score) < 1e-6
    assert not np.allclose(ours, ref["det"][0, 0])


# ---- layers cv2 cannot check: numpy oracles --------------------------------------------------
def test_bias_layer_numpy_oracle(tmp_path):
    b1, b2 = R.normal(size=4).astype(np.float32), R.normal(size=(4, 9)).astype(np.float32)
    spec = NetSpec([
        Layer("b1", "Bias", ["data"], ["b1"], {}, [b1]),
        Layer("b2", "Bias", ["data"], ["b2"], {"bias_param": {"num_axes": 2}}, [b2]),
        Layer("b3", "Bias", ["data", "bb"], ["b3"], {"bias_param": {"axis": 2}}),
    ], {"data": (1, 4, 9, 11), "bb": (9, 11)})
    feeds = feeds_for(spec)
    net = refnet.load_caffe(*write_net(spec, tmp_path))
    x, bb = feeds["data"].astype(np.float64), feeds["bb"].astype(np.float64)
    for prec, tol in (("float64", "f64_vs_oracle"), ("float32", "f32_vs_f64")):
        out = net.forward(feeds, ["b1", "b2", "b3"], prec)
        assert_close(out["b1"], x + b1[None, :, None, None], tol)
        assert_close(out["b2"], x + b2[None, :, :, None], tol)
        assert_close(out["b3"], x + bb[None, None], tol)


def test_interp_shrink_matches_caffe_size_rule(tmp_path):
    # cv2 fails on shrink_factor; Caffe: out = (in - 1) / shrink + 1, then the same bilinear
    # (align-corners) resize as an explicit height/width, which cv2 does support
    spec = NetSpec([Layer("s", "Interp", ["data"], ["s"], {"interp_param": {"shrink_factor": 2}})], X)
    twin = NetSpec([Layer("s", "Interp", ["data"], ["s"], {"interp_param": {"height": 5, "width": 6}})], X)
    x = R.standard_normal(X["data"]).astype(np.float32)
    _, ref = cv2_outputs(*write_net(twin, tmp_path, "twin"), {"data": x})
    out = refnet.load_caffe(*write_net(spec, tmp_path)).forward(x, ["s"], "float64")["s"]
    assert out.shape == (1, 4, 5, 6)
    assert_close(out, ref["s"], "vs_cv2")


def test_slice_equal_parts_without_points(tmp_path):
    spec = NetSpec([Layer("s", "Slice", ["data"], ["a", "b"], {"slice_param": {"axis": 1}})], X)
    x = R.standard_normal(X["data"]).astype(np.float32)
    out = refnet.load_caffe(*write_net(spec, tmp_path)).forward(x, ["s", "s:1"], "float32")
    assert np.array_equal(out["s"], x[:, :2]) and np.array_equal(out["s:1"], x[:, 2:])


def test_round_mode_floor_equals_ceil_mode_false():
    text = ('input: "data" input_dim: 1 input_dim: 1 input_dim: 7 input_dim: 7 '
            'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param { kernel_size: 2 stride: 2 %s } }')
    a = read_caffe(prototxt_bytes=text % "round_mode: FLOOR")
    b = read_caffe(prototxt_bytes=text % "ceil_mode: false")
    c = read_caffe(prototxt_bytes=text % "")
    assert a.node("p").attrs["ceil_mode"] is False and b.node("p").attrs["ceil_mode"] is False
    assert c.node("p").attrs["ceil_mode"] is True  # Caffe's default rounding is CEIL
    x = np.arange(49, dtype=np.float64).reshape(1, 1, 7, 7)
    assert refnet.Net(a).forward(x, ["p"], "float64")["p"].shape == (1, 1, 3, 3)
    assert refnet.Net(c).forward(x, ["p"], "float64")["p"].shape == (1, 1, 4, 4)


# ---- file formats: V1 layers, blob encodings, caffemodel-only -----------------------------------
def _small_net():
    return NetSpec([
        conv("conv1", "data", "conv1", [w(6, 4, 3, 3), w(6, scale=0.1)], num_output=6,
             kernel_size=3, pad=1),
        Layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"],
              {"pooling_param": {"pool": E("MAX"), "kernel_size": 2, "stride": 2}}),
        Layer("ip1", "InnerProduct", ["pool1"], ["ip1"], {"inner_product_param": {"num_output": 5}},
              [w(5, 6 * 5 * 6), w(5, scale=0.1)]),
        Layer("prob", "Softmax", ["ip1"], ["prob"]),
    ], X)


@pytest.mark.parametrize("fmt,packed", [("shape", True), ("shape", False), ("legacy", True),
                                        ("fp16", True), ("raw32", True)])
def test_blob_encodings_vs_cv2(tmp_path, fmt, packed):
    spec = _small_net()
    if fmt == "fp16":  # cv2 and refnet read the same rounded values
        for lay in spec.layers:
            lay.blobs = [b.astype(np.float16).astype(np.float32) for b in lay.blobs]
    check_vs_cv2(tmp_path, spec, fmt=fmt, packed=packed)


def test_double_data_blobs(tmp_path):
    # cv2 cannot read double_data; refnet can: same outputs as the float file, float64 params
    spec = _small_net()
    x = R.standard_normal(X["data"]).astype(np.float32)
    ref = refnet.load_caffe(*write_net(spec, tmp_path, "f")).forward(x, ["prob", "ip1"], "float64")
    dnet = refnet.load_caffe(*write_net(spec, tmp_path, "d", fmt="double"))
    assert dnet.graph.node("conv1").params["weight"].dtype == np.float64
    out = dnet.forward(x, ["prob", "ip1"], "float64")
    assert_close(out["ip1"], ref["ip1"], 1e-6)  # float32 weights vs their exact double copies


@pytest.mark.parametrize("style", ["plain", "fancy"])
def test_v1_layers_vs_cv2(tmp_path, style):
    check_vs_cv2(tmp_path, _small_net(), v1=True, style=style)
    g = read_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel")
    assert g.meta["format"] == "V1" and g.node("conv1").op == "conv"


def test_caffemodel_without_prototxt(tmp_path):
    spec = _small_net()
    x = R.standard_normal(X["data"]).astype(np.float32)
    ref = refnet.load_caffe(*write_net(spec, tmp_path)).forward(x, None, "float64")
    for v1 in (False, True):
        data = caffemodel(spec, with_defs=True, v1=v1)
        g = read_caffe(caffemodel_bytes=data)
        assert g.inputs == ("data",) and g.input_shapes["data"] == X["data"]
        out = refnet.Net(g).forward(x, None, "float64")
        assert out.keys() == ref.keys()
        for k in ref:
            assert np.array_equal(out[k], ref[k])


def test_input_definitions(tmp_path):
    base = [Layer("e", "Eltwise", ["a", "b"], ["e"])]
    shapes = {"a": (1, 2, 3, 4), "b": (1, 2, 3, 4)}
    for style in ("input_dim", "input_shape", "layer"):
        g = read_caffe(prototxt_bytes=prototxt(NetSpec(base, shapes, style)))
        assert g.inputs == ("a", "b") and dict(g.input_shapes) == shapes, style
    text = 'input: "a" input_dim: 1 input_dim: 2 layer { name: "r" type: "ReLU" bottom: "a" top: "r" }'
    with pytest.raises(ModelFormatError, match="2 input_dim values for 1 inputs"):
        read_caffe(prototxt_bytes=text)


# ---- errors ---------------------------------------------------------------------------------------
def _proto(layers, inputs=None):
    return prototxt(NetSpec(layers, inputs or X)).encode()


def test_unsupported_layer_type_lists_supported():
    with pytest.raises(UnsupportedLayerError) as ei:
        read_caffe(prototxt_bytes=_proto([Layer("loss", "SoftmaxWithLoss", ["data"], ["loss"])]))
    e = ei.value
    assert e.layer == "loss" and e.type == "SoftmaxWithLoss"
    assert "Convolution" in e.supported and "PriorBox" in e.supported
    assert set(SUPPORTED_TYPES) >= {"Convolution", "Deconvolution", "Interp", "ShuffleChannel",
                                    "Silence", "Input", "MVN", "Bias", "ReLU6"}
    with pytest.raises(UnsupportedLayerError, match="STOCHASTIC"):
        read_caffe(prototxt_bytes=_proto([Layer("p", "Pooling", ["data"], ["p"], {
            "pooling_param": {"pool": E("STOCHASTIC"), "kernel_size": 2}})]))


@pytest.mark.parametrize("layer,msg", [
    (conv("c", "data", "c", [w(5, 4, 3, 3), w(5)], num_output=6, kernel_size=3),
     "convolution weights does not match"),
    (conv("c", "data", "c", [w(5, 4, 3, 3), w(5)], num_output=5, kernel_size=5),
     "convolution weights does not match"),
    (conv("c", "data", "c", [w(5, 4, 3, 3), w(4)], num_output=5, kernel_size=3), "bias size"),
    (conv("c", "data", "c", [w(5, 4, 3, 3)], num_output=5, kernel_size=3), "has 1 blobs"),
    (conv("c", "data", "c", [], num_output=5, kernel_size=3), "no weights"),
    (conv("c", "data", "c", [w(6, 2, 3, 3), w(6)], num_output=6, kernel_size=3, group=4),
     "not divisible by group"),
    (conv("c", "data", "c", [w(5, 4, 3, 3), w(5)], num_output=5), "kernel_size is required"),
    (Layer("ip", "InnerProduct", ["data"], ["ip"], {"inner_product_param": {"num_output": 7}},
           [w(7, 10), w(6)]), "bias size"),
    (Layer("ip", "InnerProduct", ["data"], ["ip"], {"inner_product_param": {"num_output": 7}},
           [w(5, 10), w(7)]), "weight count"),
    (Layer("bn", "BatchNorm", ["data"], ["bn"], {}, [w(4), w(3), np.ones(1)]), "variance size"),
    (Layer("bn", "BatchNorm", ["data"], ["bn"], {}, [w(4), w(4), np.ones(2)]), "scale factor"),
    (Layer("p", "PReLU", ["data"], ["p"], {"prelu_param": {"channel_shared": True}}, [w(4)]),
     "slope count"),
    (Layer("e", "Eltwise", ["data", "data"], ["e"], {"eltwise_param": {"coeff": [1.0]}}),
     "1 coefficients for 2 bottoms"),
    (Layer("s", "Slice", ["data"], ["a", "b"], {"slice_param": {"slice_point": [1, 2]}}),
     "2 slice points for 2 tops"),
    (Layer("l", "LRN", ["data"], ["l"], {"lrn_param": {"local_size": 4}}), "positive odd"),
    (Layer("p", "Pooling", ["data"], ["p"], {"pooling_param": {"kernel_size": 2, "pad": 2}}),
     "smaller than the kernel"),
    (Layer("p", "Pooling", ["data"], ["p", "m"], {"pooling_param": {"pool": E("AVE"),
                                                                    "kernel_size": 2}}),
     "has 2 tops"),
    (Layer("r", "ReLU", ["nothing"], ["r"]), "bottom 'nothing' is not produced"),
    (Layer("d", "DetectionOutput", ["data", "data", "data"], ["d"]), "num_classes is required"),
])
def test_layer_errors_name_the_layer(layer, msg):
    with pytest.raises(ModelFormatError) as ei:
        read_caffe(prototxt_bytes=_proto([layer]), caffemodel_bytes=caffemodel(NetSpec([layer], X)))
    assert msg in str(ei.value) and ei.value.layer == layer.name
    assert ei.value.line is not None  # located in the prototxt


def test_duplicate_top_not_in_place():
    layers = [Layer("a", "ReLU", ["data"], ["t"]), Layer("b", "TanH", ["data"], ["t"])]
    with pytest.raises(ModelFormatError, match="already produced by another layer"):
        read_caffe(prototxt_bytes=_proto(layers))


def test_blob_data_count_and_raw_size_checked():
    layer = conv("c", "data", "c", [w(2, 4, 1, 1), w(2)], num_output=2, kernel_size=1)
    good = ld(1, b"c") + ld(7, blob_bytes(layer.blobs[0])) + ld(7, blob_bytes(layer.blobs[1]))
    read_caffe(prototxt_bytes=_proto([layer]), caffemodel_bytes=ld(100, good))
    # shape says 2x4x1x1 = 8 values, data holds 7
    bad_blob = ld(7, ld(1, varint(2) + varint(4) + varint(1) + varint(1))) + ld(5, w(7).tobytes())
    with pytest.raises(ModelFormatError, match="needs 8 values but the blob holds 7"):
        read_caffe(prototxt_bytes=_proto([layer]),
                   caffemodel_bytes=ld(100, ld(1, b"c") + ld(7, bad_blob) + ld(7, blob_bytes(w(2)))))
    # fp16 raw_data of the wrong size
    raw = ld(7, ld(1, varint(2))) + key(10, 0) + varint(2) + ld(12, b"\x00" * 6)
    with pytest.raises(ModelFormatError, match="raw_data holds 6 bytes"):
        read_caffe(prototxt_bytes=_proto([layer]),
                   caffemodel_bytes=ld(100, ld(1, b"c") + ld(7, blob_bytes(w(2, 4, 1, 1))) + ld(7, raw)))
    # a dimension so large that the product overflows 64 bits: refused without allocating
    huge = ld(7, ld(1, varint(2**62) + varint(2**62))) + ld(5, w(2).tobytes())
    with pytest.raises(ModelFormatError, match="needs 21267647932558653966460912964485513216 values"):
        read_caffe(prototxt_bytes=_proto([layer]),
                   caffemodel_bytes=ld(100, ld(1, b"c") + ld(7, huge) + ld(7, blob_bytes(w(2)))))


def test_mixed_v1_and_v2_layers_refused():
    text = ('input: "data" layer { name: "a" type: "ReLU" bottom: "data" top: "a" } '
            'layers { name: "b" type: RELU bottom: "a" top: "b" }')
    with pytest.raises(ModelFormatError, match="mixes V2 'layer' and V1 'layers'"):
        read_caffe(prototxt_bytes=text)


def test_quirks_table_is_documented():
    assert {"lrn_k", "corner_size"} <= set(CV2_QUIRKS)


def test_h_w_halves_must_pair_like_caffe():
    base = {"num_output": 2, "kernel_size": 3}
    for extra, msg in [({"stride_h": 2}, "stride_h and stride_w must be given together"),
                       ({"kernel_h": 3}, "either kernel_size or kernel_h/kernel_w"),
                       ({"pad": 1, "pad_w": 2}, "either pad or pad_h/pad_w")]:
        layer = conv("c", "data", "c", [w(2, 4, 3, 3), w(2)], **base, **extra)
        with pytest.raises(ModelFormatError, match=msg):
            read_caffe(prototxt_bytes=_proto([layer]), caffemodel_bytes=caffemodel(NetSpec([layer], X)))
    # pad_h alone is fine: pad_w defaults to 0 (Caffe)
    layer = conv("c", "data", "c", [w(2, 4, 3, 3), w(2)], **base, pad_h=1)
    g = read_caffe(prototxt_bytes=_proto([layer]), caffemodel_bytes=caffemodel(NetSpec([layer], X)))
    assert g.node("c").attrs["pad"] == (1, 0, 1, 0)


def test_unknown_fields_and_quirks_are_recorded_in_meta():
    text = ('input: "data" input_dim: 1 input_dim: 4 input_dim: 5 input_dim: 5 '
            'layer { name: "l" type: "LRN" bottom: "data" top: "l" visualize: true '
            'lrn_param { local_size: 3 k: 2 } }')
    g = read_caffe(prototxt_bytes=text)
    assert g.meta["unknown_fields"] == {"l": ["visualize"]} and g.meta["quirks"] == []
    assert g.node("l").attrs["k"] == 2.0
    q = read_caffe(prototxt_bytes=text, quirks="cv2")
    assert q.node("l").attrs["k"] == 1.0 and q.meta["quirks"] == [("l", "lrn_k", "k: 2.0 -> 1.0")]
    assert "lrn_k" in CV2_QUIRKS and q.meta["quirks_mode"] == "cv2" and g.meta["quirks_mode"] == "none"
    with pytest.raises(ValueError, match="quirks"):
        read_caffe(prototxt_bytes=text, quirks="caffe")
