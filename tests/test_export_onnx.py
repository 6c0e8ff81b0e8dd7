"""ONNX export (refnet.export_onnx): every IR op the importers emit, exported alone (with its
attribute variants) and checked in onnxruntime and in cv2 5.x (the cv2@PYTHON worker) against
refnet's float64 reference kernels, plus synthetic Caffe / Torch7 / Darknet nets written by the
test writers, the file's own contract (names, opset, checker, doc_string) and the errors.

The oracle is refnet's float64 run of the source (independent code: refnet.kernels reference
implementations); the ONNX side is computed by onnxruntime and OpenCV 5 from the written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from refnet.graph import Graph, Node
from refnet.net import Net

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from refnet.crosscheck.cv2_backend import Cv2WorkerBackend  # noqa: E402
from refnet.crosscheck.ort_backend import OrtBackend  # noqa: E402
from refnet.errors import UnsupportedLayerError  # noqa: E402
from refnet.export.onnx import EXPORTERS, export_onnx  # noqa: E402
from refnet.export.verify import scaled_error  # noqa: E402

TOL = 1e-4



def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _w(*shape, seed=0, scale=0.5) -> np.ndarray:
    return (_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def ir_net(nodes: list[Node], shapes: dict[str, tuple[int, ...]] | tuple[int, ...], outputs=()) -> Net:
    shapes = {"data": shapes} if isinstance(shapes, tuple) else shapes
    return Net(Graph(tuple(nodes), tuple(shapes), shapes, output_names=tuple(outputs)))


def prepare(net: Net, folder: Path, *, x=None, seed=0, layers=True, opset=17):
    """Export ``net`` into ``folder``; the feeds (default: seeded N(0,1)), the tensors to check
    (every layer tensor the file names, or the outputs) and refnet's float64 values of them."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {k: tuple(x.shape) if x is not None else tuple(v) for k, v in net.input_shapes.items()}
    feeds = {k: (x if x is not None else _rng(seed).standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    path = export_onnx(net, folder / "m.onnx", opset=opset, input_shapes=shapes)
    names = [t for n in net.graph.nodes for t in n.outputs] if layers else list(net.output_names)
    names = list(dict.fromkeys(names + list(net.output_names)))
    ref = net.forward({k: v.astype(np.float64) for k, v in feeds.items()}, outputs=names, precision="float64")
    return path, feeds, names, ref


def assert_close(backend: str, got: dict, ref: dict, names, tol=TOL) -> None:
    for t in names:
        e = scaled_error(got[t], ref[t])
        assert e <= tol, f"{backend}: tensor {t!r} off by {e:.2e} (shapes {got[t].shape} vs {ref[t].shape})"


def check(net: Net, tmp_path: Path, backends, *, x=None, seed=0, tol=TOL, layers=True, opset=17) -> None:
    """Export ``net``, run it in each backend: every checked tensor within ``tol`` of refnet float64."""
    path, feeds, names, ref = prepare(net, tmp_path, x=x, seed=seed, layers=layers, opset=opset)
    for be in backends:
        assert_close(be.name, be.run(path, feeds, names), ref, names, tol)


@pytest.fixture(scope="module")
def ortb():
    return OrtBackend()


def _both(ortb, cv5):
    return [ortb, cv5]


# ---- the op table --------------------------------------------------------------------------------
X4 = (1, 4, 9, 11)


def _one(op, attrs=None, params=None, n_out=1, shape=X4, inputs=("data",)) -> Net:
    outs = tuple("y" if i == 0 else f"y:{i}" for i in range(n_out))
    return ir_net([Node("y", op, inputs, outs, attrs or {}, params or {})], shape, outputs=outs)


SINGLE = {
    "conv": lambda: _one("conv", {"stride": (2, 1), "pad": (1, 0, 2, 1), "dilation": (1, 2), "groups": 2},
                         {"weight": _w(6, 2, 3, 3), "bias": _w(6, seed=1)}),
    "conv-nobias": lambda: _one("conv", {"pad": (1, 1, 1, 1)}, {"weight": _w(5, 4, 3, 3)}),
    "deconv": lambda: _one("deconv", {"stride": (2, 2), "pad": (1, 1, 1, 1), "groups": 2, "output_padding": (1, 0)},
                           {"weight": _w(4, 3, 3, 3), "bias": _w(6, seed=2)}),
    "linear": lambda: _one("linear", {"axis": 1}, {"weight": _w(7, 4 * 9 * 11, scale=0.05), "bias": _w(7)}),
    "linear-axis2": lambda: _one("linear", {"axis": 2}, {"weight": _w(3, 9 * 11, scale=0.1)}),
    "max_pool-ceil-pad": lambda: _one("max_pool", {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1),
                                                   "ceil_mode": True}),
    "max_pool-ceil": lambda: _one("max_pool", {"kernel": (2, 2), "stride": (2, 2), "ceil_mode": True}),
    "max_pool-floor": lambda: _one("max_pool", {"kernel": (3, 2), "stride": (2, 3), "ceil_mode": False}),
    "max_pool-asym": lambda: _one("max_pool", {"kernel": (2, 2), "stride": (1, 1), "pad": (0, 0, 1, 1),
                                               "ceil_mode": False}),
    "max_pool-global": lambda: _one("max_pool", {"global_pooling": True}),
    "avg_pool-padded": lambda: _one("avg_pool", {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1),
                                                 "ceil_mode": True, "divisor": "padded"}),
    "avg_pool-valid": lambda: _one("avg_pool", {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1),
                                                "ceil_mode": True, "divisor": "valid"}),
    "avg_pool-kernel": lambda: _one("avg_pool", {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1),
                                                 "ceil_mode": False, "divisor": "kernel"}),
    "avg_pool-global": lambda: _one("avg_pool", {"global_pooling": True}),
    "relu": lambda: _one("relu"),
    "leaky": lambda: _one("relu", {"negative_slope": 0.1}),
    "clip": lambda: _one("clip", {"min": -0.5, "max": 0.7}),
    "prelu": lambda: _one("prelu", params={"slope": _w(4)}),
    "prelu-shared": lambda: _one("prelu", params={"slope": np.array([0.25], np.float32)}),
    "elu": lambda: _one("elu", {"alpha": 0.7}),
    **{op: (lambda op=op: _one(op)) for op in ("sigmoid", "tanh", "bnll", "abs", "mish", "swish", "square")},
    "sqrt": lambda: ir_net([Node("a", "abs", ("data",), ("a",)), Node("y", "sqrt", ("a",), ("y",))], X4),
    "power": lambda: _one("power", {"power": 2.0, "scale": 0.5, "shift": 3.0}),
    "power-linear": lambda: _one("power", {"power": 1.0, "scale": -2.0, "shift": 0.25}),
    "exp": lambda: _one("exp", {"base": -1.0, "scale": 0.5, "shift": 0.1}),
    "exp-base2": lambda: _one("exp", {"base": 2.0, "scale": 0.7, "shift": -0.3}),
    "log": lambda: _one("log", {"base": -1.0, "scale": 1.0, "shift": 5.0}),
    "log-base10": lambda: _one("log", {"base": 10.0, "scale": 0.5, "shift": 4.0}),
    "softmax": lambda: _one("softmax", {"axis": 1}),
    "softmax-axis3": lambda: _one("softmax", {"axis": 3}),
    "log_softmax": lambda: _one("log_softmax", {"axis": 1}),
    "batch_norm": lambda: _one("batch_norm", {"eps": 1e-3}, {"mean": _w(4), "var": np.abs(_w(4, seed=3)) + 0.5,
                                                            "weight": _w(4, seed=4), "bias": _w(4, seed=5)}),
    "mvn": lambda: _one("mvn", {"normalize_variance": True, "across_channels": False, "eps": 1e-9}),
    "mvn-across": lambda: _one("mvn", {"normalize_variance": True, "across_channels": True, "eps": 1e-3}),
    "mvn-mean": lambda: _one("mvn", {"normalize_variance": False}),
    "mvn_cv2": lambda: _one("mvn_cv2", {"normalize_variance": True, "eps": 1e-3}),
    "scale": lambda: _one("scale", {"axis": 1}, {"weight": _w(4), "bias": _w(4, seed=6)}),
    "scale-hw": lambda: _one("scale", {"axis": 2}, {"weight": _w(9, 11)}),
    "scale-2in": lambda: ir_net([Node("s", "abs", ("data",), ("s",)),
                                 Node("g", "avg_pool", ("s",), ("g",), {"global_pooling": True}),
                                 Node("f", "flatten", ("g",), ("f",), {"axis": 0}),
                                 Node("y", "scale", ("data", "f"), ("y",), {"axis": 1})], X4),
    "bias": lambda: _one("bias", {"axis": 1}, {"bias": _w(4)}),
    "instance_norm": lambda: _one("instance_norm", {"eps": 1e-5}, {"weight": _w(4), "bias": _w(4, seed=7)}),
    "lrn-across": lambda: _one("lrn", {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 2.0, "region": "across"}),
    "lrn-within": lambda: _one("lrn", {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0, "region": "within"}),
    "normalize": lambda: _one("normalize", {"across_spatial": False, "channel_shared": False, "eps": 1e-10},
                              {"scale": np.abs(_w(4)) + 1}),
    "normalize-spatial": lambda: _one("normalize", {"across_spatial": True, "channel_shared": True},
                                      {"scale": np.array([20.0], np.float32)}),
    "lp_normalize": lambda: _one("lp_normalize", {"p": 2.0, "eps": 1e-10}),
    "lp_normalize-p1": lambda: _one("lp_normalize", {"p": 1.0, "eps": 1e-10}),
    "lp_normalize-inf": lambda: _one("lp_normalize", {"p": float("inf"), "eps": 1e-10}),
    "slice": lambda: _one("slice", {"axis": 1, "points": (1, 3)}, n_out=3),
    "flatten": lambda: _one("flatten", {"axis": 1, "end_axis": 2}),
    "reshape": lambda: _one("reshape", {"shape": (0, -1, 11), "axis": 0, "num_axes": -1}),
    "permute": lambda: _one("permute", {"order": (0, 2, 3, 1)}),
    "crop": lambda: ir_net([Node("p", "max_pool", ("data",), ("p",), {"kernel": (2, 2), "stride": (2, 2)}),
                            Node("y", "crop", ("data", "p"), ("y",), {"axis": 2, "offset": (1, 3)})], X4),
    "pad-constant": lambda: _one("pad", {"pads": ((0, 0), (1, 0), (2, 1), (0, 3)), "mode": "constant", "value": 0.5}),
    "pad-reflect": lambda: _one("pad", {"pads": ((0, 0), (0, 0), (2, 1), (3, 3)), "mode": "reflect"}),
    "pad-edge": lambda: _one("pad", {"pads": ((0, 0), (0, 0), (1, 2), (2, 0)), "mode": "edge"}),
    "resize-nearest": lambda: _one("resize", {"mode": "nearest", "scale": (2.0, 2.0)}),
    "resize-nearest-size": lambda: _one("resize", {"mode": "nearest", "size": (13, 7)}),
    "interp-zoom": lambda: _one("resize", {"mode": "bilinear", "align_corners": True, "zoom": 3, "shrink": 1,
                                           "height": 0, "width": 0, "pad_beg": 0, "pad_end": 0}),
    "interp-shrink-crop": lambda: _one("resize", {"mode": "bilinear", "align_corners": True, "zoom": 1,
                                                  "shrink": 2, "height": 0, "width": 0, "pad_beg": -1,
                                                  "pad_end": -1}),
    "resize-half-pixel": lambda: _one("resize", {"mode": "bilinear", "half_pixel": True, "size": (20, 15)}),
    "resize-asymmetric": lambda: _one("resize", {"mode": "bilinear", "size": (5, 17)}),
    "upsample_bilinear_ac": lambda: _one("upsample_bilinear_ac", {"scale": 3}),
    "eltwise-sum-coeffs": lambda: ir_net([Node("a", "tanh", ("data",), ("a",)),
                                          Node("y", "eltwise", ("data", "a"), ("y",),
                                               {"operation": "sum", "coeffs": (0.5, -2.0)})], X4),
    "eltwise-prod": lambda: ir_net([Node("a", "tanh", ("data",), ("a",)),
                                    Node("y", "eltwise", ("data", "a", "a"), ("y",), {"operation": "prod"})], X4),
    "eltwise-max": lambda: ir_net([Node("a", "tanh", ("data",), ("a",)),
                                   Node("y", "eltwise", ("data", "a"), ("y",), {"operation": "max"})], X4),
    "shuffle_channel": lambda: _one("shuffle_channel", {"group": 2}),
    "reorg": lambda: _one("reorg", {"stride": 2}, shape=(1, 8, 6, 10)),
    "identity": lambda: _one("identity"),
    "split": lambda: _one("split", n_out=2),
    "concat": lambda: ir_net([Node("a", "tanh", ("data",), ("a",)),
                              Node("y", "concat", ("data", "a"), ("y",), {"axis": 1})], X4),
    "shortcut-wider": lambda: ir_net([Node("a", "conv", ("data",), ("a",), {}, {"weight": _w(6, 4, 1, 1)}),
                                      Node("y", "shortcut", ("data", "a"), ("y",), {"alpha": 0.5, "beta": 2.0})], X4),
    "shortcut-narrower": lambda: ir_net([Node("a", "conv", ("data",), ("a",), {}, {"weight": _w(2, 4, 1, 1)}),
                                         Node("y", "shortcut", ("data", "a"), ("y",), {})], X4),
    "route_group": lambda: _one("route_group", {"groups": 2, "group_id": 1}),
    "darknet_softmax": lambda: _one("darknet_softmax", {"groups": 4, "temperature": 2.0}),
    "torch_padding-after": lambda: _one("torch_padding", {"dim": 2, "pad": 2, "n_input_dim": 3, "value": 0.5}),
    "torch_padding-before": lambda: _one("torch_padding", {"dim": 3, "pad": -3, "n_input_dim": 3, "index": 2}),
    "torch_pad2d": lambda: _one("torch_pad2d", {"pads": (-1, 2, 1, -2)}),
    "torch_narrow": lambda: _one("torch_narrow", {"dimension": 2, "index": 2, "length": -2}),
    "torch_shave": lambda: _one("torch_shave", {"size": 2}),
    "torch_select": lambda: ir_net([Node("a", "tanh", ("data",), ("a",)),
                                    Node("y", "torch_select", ("data", "a"), ("y", "y:1"), {"axis": 1})], X4,
                                   outputs=("y", "y:1")),
    "depth_concat": lambda: ir_net([Node("a", "max_pool", ("data",), ("a",), {"kernel": (2, 2), "stride": (2, 2)}),
                                    Node("y", "depth_concat", ("data", "a"), ("y",), {"axis": 1})], X4),
    "max_pool-indices+max_unpool": lambda: ir_net([
        Node("p", "max_pool", ("data",), ("p", "p:1"), {"kernel": (2, 2), "stride": (2, 2), "ceil_mode": False}),
        Node("t", "tanh", ("p",), ("t",)),
        Node("y", "max_unpool", ("t", "p:1", "data"), ("y",), {"kernel": (2, 2), "stride": (2, 2)})], (1, 3, 8, 10)),
    "max_pool-indices-padded+max_unpool": lambda: ir_net([
        Node("p", "max_pool", ("data",), ("p", "p:1"), {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1),
                                                        "ceil_mode": True}),
        Node("y", "max_unpool", ("p", "p:1", "data"), ("y",), {"kernel": (3, 3), "stride": (2, 2),
                                                               "pad": (1, 1, 1, 1)})], (1, 3, 8, 10)),
}


def _ssd_net(**detout) -> Net:
    """data -> loc/conf convs -> SSD flattening -> PriorBox + DetectionOutput (share_location aware)."""
    nc = detout.get("num_classes", 3)
    share = detout.get("share_location", True)
    pri = {"min_sizes": (4.0,), "max_sizes": (9.0,), "aspect_ratios": (2.0,), "flip": True, "clip": False,
           "variance": (0.1, 0.1, 0.2, 0.2), "step": (0.0, 0.0), "offset": 0.5, "img_size": (0, 0)}
    a = 4  # priors per cell: min, sqrt(min*max), ar 2, ar 1/2
    nloc = 1 if share else nc
    attrs = {"num_classes": nc, "share_location": share, "background_label_id": 0, "nms_threshold": 0.45,
             "top_k": 40, "keep_top_k": 20, "confidence_threshold": 0.05, "code_type": "CENTER_SIZE",
             "variance_encoded_in_target": False, "eta": 1.0, "clip": False, "normalized": True, **detout}
    nodes = [
        Node("loc", "conv", ("data",), ("loc",), {"pad": (1, 1, 1, 1)}, {"weight": _w(a * 4 * nloc, 3, 3, 3, seed=1,
                                                                                      scale=0.3)}),
        Node("loc_perm", "permute", ("loc",), ("loc_perm",), {"order": (0, 2, 3, 1)}),
        Node("loc_flat", "flatten", ("loc_perm",), ("loc_flat",), {"axis": 1}),
        Node("conf", "conv", ("data",), ("conf",), {"pad": (1, 1, 1, 1)}, {"weight": _w(a * nc, 3, 3, 3, seed=2,
                                                                                        scale=1.0)}),
        Node("conf_perm", "permute", ("conf",), ("conf_perm",), {"order": (0, 2, 3, 1)}),
        Node("conf_resh", "reshape", ("conf_perm",), ("conf_resh",), {"shape": (0, -1, nc)}),
        Node("conf_soft", "softmax", ("conf_resh",), ("conf_soft",), {"axis": 2}),
        Node("conf_flat", "flatten", ("conf_soft",), ("conf_flat",), {"axis": 1}),
        Node("priors", "prior_box", ("loc", "data"), ("priors",), pri),
        Node("detection_out", "detection_output", ("loc_flat", "conf_flat", "priors"), ("detection_out",), attrs),
    ]
    return ir_net(nodes, (1, 3, 12, 16), outputs=("detection_out",))


def _head_net(op: str, **attrs) -> Net:
    classes, na = 3, 2
    a = {"anchors": (1.0, 1.5, 2.0, 0.8) if op == "region" else (10.0, 14.0, 23.0, 27.0), "classes": classes,
         **attrs}
    nodes = [Node("conv", "conv", ("data",), ("conv",), {"pad": (1, 1, 1, 1)},
                  {"weight": _w(na * (5 + classes), 3, 3, 3, seed=3, scale=0.6), "bias": _w(na * (5 + classes))}),
             Node("perm", "permute", ("conv",), ("perm",), {"order": (0, 2, 3, 1)}),
             Node("head", op, ("perm", "data") if op == "yolo" else ("perm",), ("head",), a)]
    return ir_net(nodes, (1, 3, 8, 12), outputs=("head",))


HEADS = {
    "ssd": lambda: _ssd_net(),
    "ssd-no-share-corner": lambda: _ssd_net(share_location=False, code_type="CORNER", top_k=-1, keep_top_k=-1),
    "ssd-corner-size-clip": lambda: _ssd_net(code_type="CORNER_SIZE", clip=True, keep_top_k=5, num_classes=4),
    "ssd-encoded": lambda: _ssd_net(variance_encoded_in_target=True, nms_threshold=0.3, confidence_threshold=0.2),
    "region": lambda: _head_net("region", softmax=True),
    "region-logistic-classfix": lambda: _head_net("region", softmax=False, classfix=-1, thresh=0.05),
    "region-cv2-nms": lambda: _head_net("region", softmax=True, thresh=0.05, nms_threshold=0.4),
    "yolo": lambda: _head_net("yolo", scale_x_y=1.05),
    "yolo-cv2-nms": lambda: _head_net("yolo", thresh=0.2, nms_threshold=0.45),
    "yolo-new-coords": lambda: _head_net("yolo", new_coords=True),
}


def test_every_ir_op_has_an_exporter_and_a_case():
    """The op table here names every op of docs/ops.md that the importers emit."""
    from refnet.ops import registry

    covered = {n.op for f in list(SINGLE.values()) + list(HEADS.values()) for n in f().graph.nodes}
    from refnet.export.onnx import NOT_EXPORTED

    assert set(registry.known_ops()) - set(EXPORTERS) - set(NOT_EXPORTED) == set()
    assert not set(EXPORTERS) & set(NOT_EXPORTED)
    assert set(EXPORTERS) - covered == set(), "an exported op without a test case"


def _case_net(case: str) -> tuple[Net, np.ndarray | None]:
    if case in SINGLE:
        return SINGLE[case](), None
    net = HEADS[case]()
    return net, _rng(5).uniform(-1, 1, net.input_shapes["data"]).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every case exported once: case -> (path, feeds, names, refnet float64 values)."""
    root = tmp_path_factory.mktemp("export_ops")
    out = {}
    for i, case in enumerate(sorted(SINGLE) + sorted(HEADS)):
        net, x = _case_net(case)
        out[case] = prepare(net, root / str(i), x=x)
    return out


@pytest.fixture(scope="module")
def cv5_results(prepared, cv5):
    """All cases run in OpenCV 5 in one worker process (a crash reruns them one per process)."""
    cases = list(prepared)
    res = cv5.run_many([(p, f, n) for p, f, n, _ in (prepared[c] for c in cases)])
    return dict(zip(cases, res))


@pytest.mark.parametrize("case", sorted(SINGLE) + sorted(HEADS))
def test_op_in_onnxruntime_and_cv2_5(case, prepared, cv5_results, ortb, cv5):
    path, feeds, names, ref = prepared[case]
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)  # every tensor typed, shapes consistent
    typed = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    assert set(names) <= typed
    assert_close(ortb.name, ortb.run(path, feeds, names), ref, names)
    got = cv5_results[case]
    if isinstance(got, Exception):
        raise got
    assert_close(cv5.name, got, ref, names)


def test_ssd_rows_have_detections_and_padding(tmp_path, ortb):
    """The SSD case is not vacuous: several classes detected, rows sorted by score, zero rows up to keep_top_k."""
    net = HEADS["ssd"]()
    x = _rng(5).uniform(-1, 1, (1, 3, 12, 16)).astype(np.float32)
    path = export_onnx(net, tmp_path / "ssd.onnx")
    got = ortb.run(path, {"data": x}, ["detection_out"])["detection_out"]
    rows = got[0, 0]
    live = rows[rows[:, 2] > 0]
    assert got.shape == (1, 1, 20, 7) and 3 <= len(live) <= 20 and len(set(live[:, 1])) == 2
    assert np.all(np.diff(live[:, 2]) <= 0)
    assert np.all(rows[len(live):] == 0)
    ref = net.forward(x.astype(np.float64), precision="float64")["detection_out"]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_verification_says_when_no_detection_was_compared(tmp_path, ortb):
    """An SSD net with nothing over its confidence threshold (onnxruntime's rows all padding) agrees
    trivially: the verification says the task check compared no detection; with detections it does not."""
    from refnet.export.verify import verify_onnx

    x = _rng(5).uniform(-1, 1, (1, 3, 12, 16)).astype(np.float32)
    for threshold, empty in ((0.05, False), (1.0, True)):  # scores reach 0.99999 here
        net = _ssd_net(confidence_threshold=threshold)
        path = export_onnx(net, tmp_path / f"ssd{threshold}.onnx")
        rows = ortb.run(path, {"data": x}, ["detection_out"])["detection_out"].reshape(-1, 7)
        assert bool(np.all(rows[:, 2] <= 0)) == empty
        v = verify_onnx(net, path, {"data": x}, [ortb], per_layer=False)
        assert v.verdict == "AGREE"
        assert [n.split(":")[0] for n in v.notes] == (["detection_out"] if empty else [])
        assert v.to_json()["notes"] == v.notes


def test_opset_13_and_checker(tmp_path, ortb):
    net = HEADS["ssd"]()
    for opset in (13, 15, 17):
        check(net, tmp_path, [ortb], x=_rng(5).uniform(-1, 1, (1, 3, 12, 16)).astype(np.float32), opset=opset,
              layers=False)
        m = onnx.load(str(tmp_path / "m.onnx"))
        assert m.opset_import[0].version == opset
        onnx.checker.check_model(m, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        assert {v.name for v in inferred.graph.value_info} >= {"loc", "conf_soft", "priors"}
        assert "PriorBox" in m.doc_string and "12x16" in m.doc_string
        assert all(t.data_type == onnx.TensorProto.FLOAT for t in m.graph.initializer
                   if t.data_type != onnx.TensorProto.INT64)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(net, tmp_path / "x.onnx", opset=12)


def test_unexpressible_layers_stop_with_the_layer_name(tmp_path):
    with pytest.raises(UnsupportedLayerError, match="'detection_out'.*eta"):
        export_onnx(_ssd_net(eta=0.9), tmp_path / "x.onnx")
    with pytest.raises(UnsupportedLayerError, match="'detection_out'.*normalized"):
        export_onnx(_ssd_net(normalized=False), tmp_path / "x.onnx")
    with pytest.raises(UnsupportedLayerError, match="'y'"):
        export_onnx(_one("eltwise", {"operation": "median"}), tmp_path / "x.onnx")
    with pytest.raises(UnsupportedLayerError, match="'detection_out'.*batch 1") as e:
        export_onnx(_ssd_net(), tmp_path / "x.onnx", input_shapes=(2, 3, 12, 16))
    # an exportable op refused for its parameters: no list of "supported types" (which would name it)
    assert "supported types" not in str(e.value)
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnx_package_is_a_refnet_error(monkeypatch):
    import builtins

    from refnet.errors import RefnetError
    from refnet.export import onnx as ex

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "onnx":
            raise ImportError("no onnx")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(RefnetError, match=r"pip install refnet\[onnx\]"):
        ex.require_onnx()


def test_cv2_worker_failure_is_a_backend_failure(tmp_path):
    """A file cv2 refuses (and a crash of the worker) is reported as that backend failing."""
    from refnet.crosscheck.cv2_backend import BackendFailure

    be = Cv2WorkerBackend()  # this interpreter's cv2 4.x
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(BackendFailure, match="cannot prepare"):
        be.run(str(bad), {"data": np.zeros((1, 1), np.float32)}, ["y"])
    be.timeout = 0.01
    path = export_onnx(SINGLE["relu"](), tmp_path / "m.onnx")
    with pytest.raises(BackendFailure, match="timed out"):
        be.run(path, {"data": np.zeros(X4, np.float32)}, ["y"])


def test_backend_registry_and_in_process_cv2(tmp_path, ortb):
    """`available_backends` lists what is installed; the in-process cv2 backend and the worker agree."""
    from refnet.crosscheck.cv2_backend import Cv2Backend
    from refnet.crosscheck.onnx_backends import available_backends, make_backend

    names = [b.name for b in available_backends()]
    assert names[0].startswith("onnxruntime ") and any(n.startswith("cv2 4.") for n in names)
    if os.environ.get("REFNET_CV5_PYTHON"):
        assert any(n.startswith("cv2 5.") for n in names)
    with pytest.raises(Exception, match="unknown backend"):
        make_backend("tensorflow")
    path, feeds, names, ref = prepare(SINGLE["lrn-across"](), tmp_path)
    assert_close("cv2 in-process", Cv2Backend().run(path, feeds, names), ref, names)


def test_two_stage_layers_stop_the_conversion_naming_the_layer(tmp_path):
    """A Faster R-CNN net: the Proposal layer has no exact standard-ONNX form here, so export stops
    there with an UnsupportedLayerError naming the layer and saying why (nothing approximated)."""
    import refnet
    from refnet.errors import UnsupportedLayerError
    from refnet.graph import Graph, Node

    g = Graph(nodes=(Node("rpn", "proposal", ("scores", "deltas", "im_info"), ("rpn",)),),
              inputs=("scores", "deltas", "im_info"),
              input_shapes={"scores": (1, 18, 4, 4), "deltas": (1, 36, 4, 4), "im_info": (1, 3)})
    with pytest.raises(UnsupportedLayerError) as e:
        refnet.export_onnx(Net(g), tmp_path / "f.onnx")
    assert "rpn" in str(e.value) and "Proposal" in str(e.value)
