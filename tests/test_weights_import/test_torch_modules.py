"""Torch7 nn modules -> refnet Graph, module by module.

Each module (and option) is written by the test-side t7 writer with seeded random weights and
loaded by refnet. Where cv2.dnn.readNetFromTorch supports it, every layer is compared with
cv2 (layer names must equal cv2's getLayerNames(), outputs within TOL["vs_cv2"] in float32
and float64, float32 vs float64 within TOL["f32_vs_f64"]). Where cv2 cannot run the module,
the oracle is an independent NumPy/SciPy formula of the Torch7 rule.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage
from conftest import assert_close, rel_err
from writers import t7_writer as W

import refnet
from refnet.errors import ModelFormatError, ShapeError, UnsupportedLayerError
from refnet.net import Net
from refnet.weights_import.torch import read_torch

S = W.nn_Sequential


def _relu():
    return W.nn_ReLU()


def load_and_trace(path: Path, x: np.ndarray, quirks: str = "none"):
    net = refnet.load_torch(path, quirks=quirks)
    return net, net.trace(x, precision="float64"), net.trace(x, precision="float32")


def cv2_layers(path: Path, x: np.ndarray, ascii: bool = False) -> dict[str, np.ndarray]:
    c = cv2.dnn.readNetFromTorch(str(path), not ascii)
    c.enableFusion(False)
    c.setInput(x)
    names = list(c.getLayerNames())
    return dict(zip(names, c.forward(names)))


def check_against_cv2(path: Path, x: np.ndarray, *, quirks: str = "none", ascii: bool = False,
                      f32_tol: str = "f32_vs_f64") -> tuple[Net, dict]:
    net, t64, t32 = load_and_trace(path, x, quirks)
    ref = cv2_layers(path, x, ascii)
    assert tuple(net.layer_names) == tuple(ref), "layer names differ from cv2's"
    for name, want in ref.items():
        assert t64[name].shape == want.shape, f"{name}: shape {t64[name].shape} vs cv2 {want.shape}"
        assert_close(t64[name], want, "vs_cv2", f"{name} float64 vs cv2")
        assert_close(t32[name], want, "vs_cv2", f"{name} float32 vs cv2")
        assert_close(t32[name], t64[name], f32_tol, f"{name} float32 vs float64")
    return net, t64


def _x(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---- modules cv2 runs: per-layer cross-check -----------------------------------------------------------
def _cases():
    r = np.random.default_rng
    pool = W.nn_SpatialMaxPooling(2, 2)
    pool3 = W.nn_SpatialMaxPooling(3, 3, 3, 3, 1, 1)
    return {
        # convolutions
        "conv": (lambda: S(W.nn_SpatialConvolution(r(1), 4, 6, 3, 2, 2, 1, 1, 0), _relu()), (2, 4, 9, 11)),
        "conv_mm_2d_weight": (lambda: S(W.nn_SpatialConvolution(r(2), 4, 5, 3, 3, 1, 2, 1, 1,
                                                                cls="nn.SpatialConvolutionMM", mm_2d=True)),
                              (1, 4, 9, 11)),
        "cudnn_groups_cuda_tensors": (lambda: S(W.nn_SpatialConvolution(r(3), 4, 6, 3, 3, 1, 1, 1, 1,
                                                                        cls="cudnn.SpatialConvolution", groups=2,
                                                                        cuda=True)), (1, 4, 9, 11)),
        "conv_double_weights_no_bias": (lambda: S(W.nn_SpatialConvolution(r(4), 4, 3, 5, 5, 1, 1, 2, 2, bias=False,
                                                                          dtype="Double")), (1, 4, 9, 11)),
        "dilated": (lambda: S(W.nn_SpatialDilatedConvolution(r(5), 4, 5, 3, 3, 1, 1, 2, 2, 2, 2)), (1, 4, 9, 11)),
        "full_conv_adj": (lambda: S(W.nn_SpatialFullConvolution(r(6), 4, 5, 3, 3, 2, 2, 1, 1, 1, 1)), (1, 4, 6, 7)),
        "full_conv_asym": (lambda: S(W.nn_SpatialFullConvolution(r(7), 4, 3, 4, 3, 3, 2, 0, 1, 2, 0, bias=False)),
                           (1, 4, 5, 6)),
        "linear_view": (lambda: S(W.nn_View(-1), W.nn_Linear(r(8), 4 * 5 * 6, 7), W.nn_simple("LogSoftMax")),
                        (1, 4, 5, 6)),
        "view_reshape": (lambda: S(W.nn_View(4, -1), W.nn_Reshape(120)), (1, 4, 5, 6)),
        # pooling
        "max_pool_ceil_pad": (lambda: S(W.nn_SpatialMaxPooling(3, 3, 2, 2, 1, 1, ceil_mode=True)), (1, 3, 10, 12)),
        "max_pool_floor": (lambda: S(W.nn_SpatialMaxPooling(3, 2, 2, 1)), (1, 3, 10, 12)),
        "avg_pool_count_include_pad": (lambda: S(W.nn_SpatialAveragePooling(3, 3, 2, 2, 1, 1, ceil_mode=True,
                                                                            count_include_pad=True)),
                                       (1, 3, 10, 12)),
        "avg_pool_count_exclude_pad": (lambda: S(W.nn_SpatialAveragePooling(3, 3, 2, 2, 1, 1, ceil_mode=True,
                                                                            count_include_pad=False)),
                                       (1, 3, 10, 12)),
        "max_unpool": (lambda: S(pool, W.nn_SpatialConvolution(r(9), 3, 3, 1, 1), W.nn_SpatialMaxUnpooling(pool)),
                       (1, 3, 8, 10)),
        "max_unpool_padded": (lambda: S(pool3, _relu(), W.nn_SpatialMaxUnpooling(pool3)), (1, 2, 7, 10)),
        # normalisation
        "spatial_bn": (lambda: S(W.nn_SpatialBatchNormalization(r(10), 4, eps=1e-3)), (2, 4, 5, 6)),
        "bn_running_std": (lambda: S(W.nn_SpatialBatchNormalization(r(11), 4, old_std=True)), (1, 4, 5, 6)),
        "bn_no_affine": (lambda: S(W.nn_SpatialBatchNormalization(r(12), 4, affine=False)), (1, 4, 5, 6)),
        "bn_1d": (lambda: S(W.nn_View(-1), W.nn_Linear(r(13), 30, 6), W.nn_BatchNormalization(r(14), 6)),
                  (2, 5, 2, 3)),
        "lrn": (lambda: S(W.nn_SpatialCrossMapLRN(5, 0.5, 0.75, 2.0)), (1, 7, 4, 5)),
        "normalize_l2": (lambda: S(W.nn_View(-1), W.nn_Normalize(2)), (2, 3, 4, 5)),
        "normalize_l3": (lambda: S(W.nn_View(-1), W.nn_Normalize(3, 1e-6)), (2, 3, 4, 5)),
        # activations and pointwise
        "prelu_channels": (lambda: S(W.nn_PReLU(r(15), 4)), (1, 4, 5, 6)),
        "prelu_shared": (lambda: S(W.nn_PReLU(r(16), 0)), (1, 4, 5, 6)),
        "elu": (lambda: S(W.nn_ELU(0.7)), (1, 4, 5, 6)),
        "relu_tanh_sigmoid_cudnn": (lambda: S(W.nn_ReLU(cls="cudnn.ReLU"), W.nn_simple("Tanh"),
                                              W.nn_simple("cudnn.Sigmoid")), (1, 4, 5, 6)),
        "softmax": (lambda: S(W.nn_simple("SoftMax")), (2, 5, 3, 4)),
        "log_softmax": (lambda: S(W.nn_simple("cudnn.LogSoftMax")), (2, 5, 3, 4)),
        "mul_square_sqrt_power": (lambda: S(W.nn_MulConstant(-1.5), W.nn_simple("Square"), W.nn_Sqrt(),
                                            W.nn_Power(1.5)), (1, 4, 5, 6)),
        "dropout_v1": (lambda: S(W.nn_Dropout(0.3, v2=None)), (1, 4, 5, 6)),
        "dropout_v2": (lambda: S(W.nn_Dropout(0.3, v2=True)), (1, 4, 5, 6)),
        "spatial_dropout": (lambda: S(W.nn_SpatialDropout(0.2)), (1, 4, 5, 6)),
        "identity_total_variation": (lambda: S(W.nn_Identity(), W.nn_TotalVariation()), (1, 4, 5, 6)),
        # padding, resizing, cropping
        "padding_after": (lambda: S(W.nn_Padding(1, 3, 3, 0.5)), (1, 4, 5, 6)),
        "padding_before_w": (lambda: S(W.nn_Padding(3, -2, 3, -1.0)), (1, 4, 5, 6)),
        "zero_padding": (lambda: S(W.nn_SpatialZeroPadding(1, 2, 3, 0)), (1, 4, 5, 6)),
        "reflection_padding": (lambda: S(W.nn_SpatialReflectionPadding(2, 1, 0, 3)), (1, 4, 5, 6)),
        "upsampling_nearest": (lambda: S(W.nn_SpatialUpSamplingNearest(3)), (1, 4, 5, 6)),
        "shave_image": (lambda: S(W.nn_ShaveImage(2)), (1, 4, 7, 9)),
        # containers
        "concat": (lambda: S(W.nn_Concat(2, W.nn_SpatialConvolution(r(17), 4, 3, 3, 3, 1, 1, 1, 1), _relu(),
                                         S(W.nn_Identity(), W.nn_simple("Tanh")))), (1, 4, 5, 6)),
        "depth_concat": (lambda: S(W.nn_DepthConcat(2, W.nn_SpatialConvolution(r(18), 4, 3, 3, 3, 1, 1, 1, 1),
                                                    W.nn_SpatialConvolution(r(19), 4, 2, 3, 3),
                                                    W.nn_SpatialConvolution(r(20), 4, 2, 2, 4))), (1, 4, 8, 9)),
        "concat_table_cadd": (lambda: S(W.nn_ConcatTable(S(W.nn_SpatialConvolution(r(21), 4, 4, 3, 3, 1, 1, 1, 1),
                                                           _relu()), W.nn_Identity(), W.nn_simple("Sigmoid")),
                                        W.nn_CAddTable(), _relu()), (1, 4, 5, 6)),
        "concat_table_join": (lambda: S(W.nn_ConcatTable(W.nn_Identity(), W.nn_SpatialConvolution(r(22), 4, 3, 1, 1)),
                                        W.nn_JoinTable(2)), (1, 4, 5, 6)),
        "nested_residuals": (lambda: S(S(W.nn_ConcatTable(S(W.nn_ConcatTable(W.nn_Identity(), _relu()),
                                                            W.nn_CAddTable()), W.nn_Identity()),
                                         W.nn_CAddTable()), W.nn_simple("Tanh")), (1, 4, 5, 6)),
        "parallel": (lambda: S(W.nn_Parallel(2, 2, W.nn_simple("Tanh"), W.nn_simple("Sigmoid"), W.nn_Identity())),
                     (1, 3, 5, 6)),
        "instance_norm_cv2_quirk": (lambda: S(W.nn_InstanceNormalization(r(23), 4)), (2, 4, 5, 6)),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_module_matches_cv2_layer_by_layer(case, tmp_path):
    build, shape = CASES[case]
    path = W.save(tmp_path / f"{case}.t7", build())
    x = _x(shape, seed=len(case))
    if case == "mul_square_sqrt_power":
        x = np.abs(x) + 0.1
    quirks = "cv2" if case.endswith("cv2_quirk") else "none"
    check_against_cv2(path, x, quirks=quirks)


def test_ascii_file_matches_cv2(tmp_path):
    rng = np.random.default_rng(0)
    model = S(W.nn_SpatialConvolution(rng, 3, 4, 3, 3, 1, 1, 1, 1), W.nn_SpatialBatchNormalization(rng, 4),
              W.nn_PReLU(rng, 4), W.nn_SpatialMaxPooling(2, 2), W.nn_View(-1), W.nn_Linear(rng, 4 * 3 * 4, 5))
    path = W.save(tmp_path / "ascii.t7", model, ascii=True)
    check_against_cv2(path, _x((1, 3, 6, 8)), ascii=True)
    binary = read_torch(W.save(tmp_path / "bin.t7", model))
    for a, b in zip(read_torch(path).nodes, binary.nodes):
        assert a.name == b.name and a.op == b.op and dict(a.attrs) == dict(b.attrs)
        for k in b.params:  # ASCII stores %.9g: float32 round-trips exactly
            np.testing.assert_array_equal(a.params[k], b.params[k])


# ---- graph structure --------------------------------------------------------------------------------
def test_graph_ops_attrs_params_and_module_paths(tmp_path):
    rng = np.random.default_rng(5)
    pool = W.nn_SpatialMaxPooling(2, 2, 2, 2, 0, 0, ceil_mode=True)
    model = S(
        W.nn_SpatialConvolution(rng, 3, 8, 5, 3, 2, 1, 2, 1),
        W.nn_ConcatTable(S(pool, W.nn_SpatialMaxUnpooling(pool)), W.nn_Identity()),
        W.nn_CAddTable(),
        W.nn_SpatialFullConvolution(rng, 8, 4, 3, 3, 2, 2, 1, 1, 1, 1),
    )
    g = read_torch(W.save(tmp_path / "g.t7", model))
    assert g.framework == "torch" and g.inputs == ("input",)
    names = [n.name for n in g.nodes]
    assert names == ["l1_Convolution", "l3_Pooling", "l4_torchMaxUnpooling", "l5_Identity",
                     "l6_torchCAddTable", "l7_Deconvolution"]
    conv, pooln, unpool, _, add, deconv = g.nodes
    assert conv.op == "conv" and conv.attrs["stride"] == (1, 2) and conv.attrs["pad"] == (1, 2, 1, 2)
    assert conv.params["weight"].shape == (8, 3, 3, 5) and conv.params["weight"].dtype == np.float32
    assert pooln.outputs == ("l3_Pooling", "l3_Pooling:1") and pooln.attrs["ceil_mode"] is True
    assert unpool.inputs == ("l3_Pooling", "l3_Pooling:1", "l1_Convolution")
    assert add.op == "eltwise" and add.inputs == ("l4_torchMaxUnpooling", "l5_Identity")
    assert deconv.params["weight"].shape == (8, 4, 3, 3) and deconv.attrs["output_padding"] == (1, 1)
    paths = g.meta["module_paths"]
    assert paths["l1_Convolution"] == "modules[1]"
    assert paths["l4_torchMaxUnpooling"] == "modules[2].modules[1].modules[2]"
    assert paths["l5_Identity"] == "modules[2].modules[2]"
    assert g.meta["torch_classes"]["l3_Pooling"] == "nn.SpatialMaxPooling"
    assert g.output_names == ("l7_Deconvolution",)


def test_checkpoint_tables_and_prefixes(tmp_path):
    rng = np.random.default_rng(6)
    model = S(W.nn_SpatialConvolution(rng, 3, 4, 3, 3, cls="fbcunn.SpatialConvolution"),
              W.nn_ReLU(cls="cunn.ReLU"))
    path = W.save(tmp_path / "ckpt.t7", {"opt": {"lr": 0.1, "arch": "x"}, "model": model, "loss": [1.0, 0.5]})
    x = _x((1, 3, 6, 7))
    net, _ = check_against_cv2(path, x)
    assert net.graph.meta["module_paths"]["l1_Convolution"] == "model.modules[1]"


@pytest.mark.parametrize("long_size", [4, 8])
def test_long_size_option(tmp_path, long_size):
    rng = np.random.default_rng(7)
    model = S(W.nn_SpatialConvolution(rng, 2, 3, 3, 3), W.nn_View(-1))
    p = W.save(tmp_path / "l.t7", model, long_size=long_size)
    g_auto = read_torch(p)
    g_forced = read_torch(p, long_size=long_size)
    np.testing.assert_array_equal(g_auto.nodes[0].params["weight"], g_forced.nodes[0].params["weight"])
    assert g_auto.nodes[1].attrs["shape"] == (-1,)
    g_bytes = read_torch(None, data=p.read_bytes())
    assert [n.name for n in g_bytes.nodes] == [n.name for n in g_auto.nodes]


# ---- errors -----------------------------------------------------------------------------------------
def test_read_torch_arguments(tmp_path):
    with pytest.raises(TypeError, match="path or data"):
        read_torch(None)
    with pytest.raises(TypeError, match="bytes"):
        read_torch(None, data=123)
    with pytest.raises(ValueError, match="quirks"):
        read_torch(None, data=W.dumps(S()), quirks="torch")
    with pytest.raises(ModelFormatError, match="cannot read the file"):
        read_torch(tmp_path / "missing.t7")


def test_unknown_module_names_its_path(tmp_path):
    model = S(W.nn_Identity(), S(W.nn_Identity(), W.nn_simple("nn.SpatialFractionalMaxPooling")))
    with pytest.raises(UnsupportedLayerError) as ei:
        read_torch(W.save(tmp_path / "u.t7", model))
    e = ei.value
    assert e.layer == "modules[2].modules[2]" and e.type == "nn.SpatialFractionalMaxPooling"
    assert "nn.SpatialConvolution" in e.supported and "u.t7" in str(e)
    with pytest.raises(UnsupportedLayerError, match="torch.Foo"):
        read_torch(None, data=W.dumps(S(W.Module("torch.Foo", {}))))


@pytest.mark.parametrize(
    "model, match",
    [
        (lambda r: S(W.Module("nn.SpatialConvolution", {**W.nn_SpatialConvolution(r, 3, 4, 3, 3).fields,
                                                        "nOutputPlane": 5})), "weight has 108 values"),
        (lambda r: S(W.Module("nn.SpatialConvolution", {k: v for k, v in W.nn_SpatialConvolution(r, 3, 4, 3, 3)
                                                        .fields.items() if k != "kW"})), "no field 'kW'"),
        (lambda r: S(W.Module("nn.SpatialConvolution", {**W.nn_SpatialConvolution(r, 3, 4, 3, 3).fields,
                                                        "kH": 2.5})), "not an integer"),
        (lambda r: S(W.Module("nn.SpatialConvolution", {**W.nn_SpatialConvolution(r, 3, 4, 3, 3).fields,
                                                        "weight": "oops"})), "weight is a str"),
        (lambda r: S(W.nn_CAddTable()), "needs a table input"),
        (lambda r: S(W.nn_ConcatTable(W.nn_Identity(), W.nn_Identity()), _relu()), "receives a table of 2"),
        (lambda r: S(W.nn_SpatialMaxUnpooling(W.nn_SpatialMaxPooling(2, 2))), "no SpatialMaxPooling"),
        (lambda r: S(W.nn_Dropout(1.5)), "dropout probability"),
        (lambda r: S(W.Module("nn.Sequential", {"modules": "not a table"})), "modules is a str"),
        (lambda r: S(W.nn_SpatialCrossMapLRN(4)), "odd size"),
        (lambda r: S(W.nn_SpatialAveragePooling(2, 2, divide=False)), "divide=false"),
    ],
)
def test_malformed_modules_raise_with_the_module_path(model, match):
    data = W.dumps(model(np.random.default_rng(0)))
    with pytest.raises((ModelFormatError, UnsupportedLayerError), match=match) as ei:
        read_torch(None, data=data)
    assert "layer 'modules[" in str(ei.value)


# ---- modules cv2 cannot run: independent NumPy oracles ---------------------------------------------
def _trace(model, x, quirks="none"):
    net = Net(read_torch(None, data=W.dumps(model), quirks=quirks))
    return net, net.trace(x, precision="float64"), net.trace(x, precision="float32")


def _both(t64, t32, name, want):
    assert_close(t64[name], want, "f64_vs_oracle", f"{name} float64 vs oracle")
    assert_close(t32[name], want, "f32_vs_f64", f"{name} float32 vs oracle")


def test_add_constant_and_narrow():
    x = _x((2, 5, 4, 6))
    _, t64, t32 = _trace(S(W.nn_AddConstant(0.75), W.nn_Narrow(2, 2, 3), W.nn_Narrow(-1, 3, -2)), x)
    _both(t64, t32, "l1_AddConstant", x.astype(np.float64) + 0.75)
    _both(t64, t32, "l2_Narrow", x[:, 1:4].astype(np.float64) + 0.75)
    # Narrow(-1, 3, -2): last dim, from element 3 to size - 2 + 1 = 5 (1-based, inclusive)
    _both(t64, t32, "l3_Narrow", x[:, 1:4, :, 2:5].astype(np.float64) + 0.75)


@pytest.mark.parametrize("scale", [2, 3])
def test_upsampling_bilinear_align_corners(scale):
    x = _x((1, 3, 4, 5))
    _, t64, t32 = _trace(S(W.nn_SpatialUpSamplingBilinear(scale)), x)
    ho, wo = (4 - 1) * scale + 1, (5 - 1) * scale + 1
    ys = np.arange(ho) * (4 - 1) / (ho - 1)
    xs = np.arange(wo) * (5 - 1) / (wo - 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    want = np.stack([scipy.ndimage.map_coordinates(x[0, c].astype(np.float64), [yy, xx], order=1)
                     for c in range(3)])[None]
    _both(t64, t32, "l1_SpatialUpSamplingBilinear", want)


def test_zero_padding_with_cropping_and_padding_with_index():
    x = _x((1, 3, 6, 7))
    _, t64, t32 = _trace(S(W.nn_SpatialZeroPadding(2, -1, -2, 1), W.nn_Padding(2, 2, 3, 9.0, index=3),
                           W.nn_Padding(2, -1, 3, -9.0, index=2)), x)
    crop = np.pad(x[:, :, 2:, :6].astype(np.float64), ((0, 0), (0, 0), (0, 1), (2, 0)))  # l=2 r=-1 t=-2 b=1
    _both(t64, t32, "l1_Padding", crop)
    # pad > 0 with index 3 inserts 2 rows before the (size - 3 + 2)-th row, counted from the end
    h = crop.shape[2]
    at = h - 3 + 1
    p1 = np.insert(crop, [at] * 2, 9.0, axis=2)
    _both(t64, t32, "l2_Padding", p1)
    p2 = np.insert(p1, [1], -9.0, axis=2)  # pad < 0 with index 2: one row before row 2
    _both(t64, t32, "l3_Padding", p2)


def test_parallel_table_and_join_table_with_n_input_dims():
    x = _x((1, 3, 4, 5))
    model = S(W.nn_ConcatTable(W.nn_Identity(), W.nn_Identity()),
              W.nn_ParallelTable(W.nn_simple("Tanh"), W.nn_simple("Sigmoid")),
              W.nn_JoinTable(1, 3))
    net, t64, t32 = _trace(model, x)
    xd = x.astype(np.float64)
    want = np.concatenate([np.tanh(xd), 1 / (1 + np.exp(-xd))], axis=1)  # batched: dim 1 -> channels
    name = net.layer_names[-1]
    assert name.endswith("_torchMerge")
    _both(t64, t32, name, want)


def test_max_unpool_to_odd_sizes_follows_torch_and_cv2_cannot(tmp_path):
    pool = W.nn_SpatialMaxPooling(2, 2)
    model = S(pool, W.nn_MulConstant(2.0), W.nn_SpatialMaxUnpooling(pool))
    x = _x((1, 2, 7, 9))
    path = W.save(tmp_path / "odd.t7", model)
    _, t64, t32 = load_and_trace(path, x)
    xd = x.astype(np.float64)
    want = np.zeros_like(xd)
    win = xd[:, :, :6, :8].reshape(1, 2, 3, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 3, 4, 4)
    arg = win.argmax(-1)  # first maximum, row-major inside the window
    for i in range(3):
        for j in range(4):
            for n in range(2):
                a = arg[0, n, i, j]
                want[0, n, 2 * i + a // 2, 2 * j + a % 2] = 2.0 * win[0, n, i, j, a]
    _both(t64, t32, "l3_torchMaxUnpooling", want)
    with pytest.raises(cv2.error):  # cv2 derives 6x8 from the pooling geometry and overflows it
        cv2_layers(path, x)
    with pytest.raises(ShapeError):  # quirks="cv2" sizes the output as cv2 does: indices out of range
        refnet.load_torch(path, quirks="cv2").forward(x)
    even = _x((1, 2, 6, 8))
    assert_close(refnet.load_torch(path, quirks="cv2").forward(even, precision="float64")["l3_torchMaxUnpooling"],
                 cv2_layers(path, even)["l3_torchMaxUnpooling"], "vs_cv2", "even sizes agree")


def test_nan_propagates_and_bad_shapes_name_the_layer():
    rng = np.random.default_rng(2)
    model = S(W.nn_SpatialConvolution(rng, 2, 3, 3, 3, 1, 1, 1, 1), W.nn_Padding(1, 2, 3),
              W.nn_SpatialUpSamplingBilinear(2), W.nn_ShaveImage(1), W.nn_Narrow(2, 1, 4),
              W.nn_DepthConcat(2, W.nn_Identity(), W.nn_SpatialZeroPadding(-1, 0, 0, -1)),
              W.nn_View(-1), W.nn_Normalize(2))
    net = Net(read_torch(None, data=W.dumps(model)))
    x = _x((1, 2, 5, 6))
    x[0, 1, 2, 3] = np.nan
    for prec in ("float32", "float64"):
        out = net.forward(x, precision=prec)[net.output_names[0]]
        assert np.isnan(out).any()
    with pytest.raises(ShapeError, match="l4_Slice"):
        net.forward(_x((1, 2, 1, 1)))


# ---- cv2 quirks: default = Torch, quirks="cv2" = cv2 -------------------------------------------------
def test_instance_norm_torch_rule_and_cv2_quirk(tmp_path):
    rng = np.random.default_rng(31)
    m = W.nn_InstanceNormalization(rng, 3, eps=1e-5)
    path = W.save(tmp_path / "in.t7", S(m))
    w = m.fields["weight"].storage.data.astype(np.float64).reshape(1, 3, 1, 1)
    b = m.fields["bias"].storage.data.astype(np.float64).reshape(1, 3, 1, 1)

    def rules(x):
        xd = x.astype(np.float64)
        mu = xd.mean(axis=(2, 3), keepdims=True)
        var = xd.var(axis=(2, 3), keepdims=True)
        return ((xd - mu) / np.sqrt(var + 1e-5) * w + b,
                (xd - mu) / np.sqrt(var + 1e-9) / np.sqrt(1 + 1e-5) * w + b)

    # low-variance planes: eps matters, so Torch's sqrt(var + eps) and cv2's differ visibly
    x = _x((2, 3, 6, 5), seed=3) * np.float32(2e-3)
    torch_rule, cv2_rule = rules(x)
    net, t64, t32 = load_and_trace(path, x)
    assert net.layer_names == ("l1_MVN", "l2_BatchNorm")
    assert_close(t64["l2_BatchNorm"], torch_rule, "f64_vs_oracle", "Torch rule, float64")
    assert_close(t32["l2_BatchNorm"], torch_rule, "f32_vs_f64", "Torch rule, float32")
    ref = cv2_layers(path, x)
    assert_close(ref["l2_BatchNorm"], cv2_rule, "vs_cv2", "cv2 follows the documented quirk")
    assert rel_err(t64["l2_BatchNorm"], ref["l2_BatchNorm"]) > 1e-2  # the deviation is real
    _, q64, q32 = load_and_trace(path, x, quirks="cv2")
    assert_close(q64["l2_BatchNorm"], ref["l2_BatchNorm"], "vs_cv2", "quirks=cv2 float64")
    assert_close(q32["l2_BatchNorm"], ref["l2_BatchNorm"], "vs_cv2", "quirks=cv2 float32")
    # a finding beyond the eps rule: cv2's float32 MVN loses precision on planes whose mean is
    # large against their spread (0.8% here); refnet stays on the float64 formula in both precisions
    x_off = x + np.float32(0.5)
    torch_off, cv2_off = rules(x_off)
    _, o64, o32 = load_and_trace(path, x_off)
    assert_close(o64["l2_BatchNorm"], torch_off, "f64_vs_oracle", "offset planes, float64")
    assert_close(o32["l2_BatchNorm"], torch_off, "f32_vs_f64", "offset planes, float32")
    assert rel_err(cv2_layers(path, x_off)["l2_BatchNorm"], cv2_off) > 1e-3


def test_avg_pool_without_count_include_pad(tmp_path):
    # a file from before count_include_pad: ceil-mode windows overhang the 10x12 input
    path = W.save(tmp_path / "avg.t7", S(W.nn_SpatialAveragePooling(3, 3, 2, 2, 0, 0, ceil_mode=True,
                                                                    count_include_pad=None)))
    x = _x((1, 2, 10, 12), seed=4)
    xd = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (0, 1), (0, 1)))  # zeros beyond the border
    windows = np.lib.stride_tricks.sliding_window_view(xd, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    torch7 = windows.sum(axis=(-1, -2)) / 9.0  # Torch7 divided by kW * kH
    valid = np.lib.stride_tricks.sliding_window_view(
        np.pad(np.ones((10, 12)), ((0, 1), (0, 1))), (3, 3))[::2, ::2].sum(axis=(-1, -2))
    cv2_rule = windows.sum(axis=(-1, -2)) / valid  # cv2: only the valid elements
    _, t64, t32 = load_and_trace(path, x)
    _both(t64, t32, "l1_Pooling", torch7)
    ref = cv2_layers(path, x)["l1_Pooling"]
    assert_close(ref, cv2_rule, "vs_cv2", "cv2 excludes the overhang")
    assert rel_err(t64["l1_Pooling"], ref) > 1e-2
    _, q64, q32 = load_and_trace(path, x, quirks="cv2")
    assert_close(q64["l1_Pooling"], ref, "vs_cv2", "quirks=cv2 float64")
    assert_close(q32["l1_Pooling"], ref, "vs_cv2", "quirks=cv2 float32")
