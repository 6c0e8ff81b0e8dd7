"""Darknet importer: cfg/weights parsing, graph mapping, Darknet rules, and every layer against cv2.dnn.

Oracles: cv2.dnn.readNetFromDarknet on files written by the test-side writer (per-layer outputs,
layer names), numpy/scipy formulas of Darknet's rules where refnet's default (faithful) semantics
differ from cv2, and cv2.dnn.NMSBoxes for the final detections of the real models.
"""

from __future__ import annotations

import functools
import re
import struct

import cv2
import numpy as np
import pytest
import scipy.signal
from conftest import TOL, rel_err, require_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from writers.darknet_writer import ALL_LAYERS, cfg_text, header_bytes, random_weights, weights_bytes

import refnet
from refnet.errors import ModelFormatError, RefnetError, UnsupportedLayerError
from refnet.kernels.yolo import yolo_detections
from refnet.weights_import.darknet import read_darknet


# ---- helpers --------------------------------------------------------------------------------------
def cv2_outputs(cfg_path, weights_path, blob) -> dict[str, np.ndarray]:
    """Every layer of cv2.dnn's Darknet import, fusion off (a fresh Net per call)."""
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.enableFusion(False)
    names = list(net.getLayerNames())
    net.setInput(blob)
    return dict(zip(names, net.forward(names)))


def err(a: np.ndarray, ref: np.ndarray) -> float:
    """rel_err; detection rows (2-D/3-D head outputs) column by column, each on its own scale."""
    if ref.ndim in (2, 3) and a.shape == ref.shape and ref.shape[-1] > 5:
        return max(rel_err(a[..., k], ref[..., k]) for k in range(ref.shape[-1]))
    return rel_err(a, ref)


def check_every_layer(net: refnet.Net, ref: dict[str, np.ndarray], blob: np.ndarray
                      ) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """Every cv2 layer in both precisions within TOL['vs_cv2'], float32 vs float64 within TOL.

    Returns the worst relative differences and the two traces.
    """
    assert net.layer_names == tuple(ref), "layer names/order differ from cv2's getLayerNames()"
    traces = {p: net.trace(blob, precision=p) for p in ("float64", "float32")}
    worst: dict[str, float] = {}
    for p, tr in traces.items():
        errs = {n: err(tr[n], r) for n, r in ref.items()}
        bad = {n: e for n, e in errs.items() if not e <= TOL["vs_cv2"]}
        assert not bad, f"{p}: layers differ from cv2: {bad}"
        worst[p] = max(errs.values())
    f = {n: err(traces["float32"][n], traces["float64"][n]) for n in ref}
    bad = {n: e for n, e in f.items() if not e <= TOL["f32_vs_f64"]}
    assert not bad, f"float32 vs float64: {bad}"
    worst["f32_vs_f64"] = max(f.values())
    return worst, traces


def write_model(tmp_path, cfg: str, seed: int = 0, **kw) -> tuple:
    data, blobs = random_weights(cfg, seed, **kw)
    (tmp_path / "m.cfg").write_text(cfg)
    (tmp_path / "m.weights").write_bytes(data)
    return tmp_path / "m.cfg", tmp_path / "m.weights", blobs


NET8 = ("net", {"width": 8, "height": 8, "channels": 3})

# ---- every layer type vs cv2 ----------------------------------------------------------------------
def test_every_layer_type_vs_cv2(tmp_path, rng):
    cfg, wts, _ = write_model(tmp_path, cfg_text(ALL_LAYERS), connected_order="cv2")
    blob = rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    ref = cv2_outputs(cfg, wts, blob)
    net = refnet.load_darknet(cfg, wts, quirks="cv2")
    worst, _ = check_every_layer(net, ref, blob)
    assert net.output_names == tuple(cv2.dnn.readNetFromDarknet(str(cfg), str(wts)).getUnconnectedOutLayersNames())
    print("synthetic all-layers worst:", worst)


@pytest.mark.parametrize("name, size", [("yolov2-tiny-voc", 128), ("yolov2-tiny", 128), ("yolov3-tiny", 128),
                                        ("tiny", 96)])
def test_arch_only_cfgs_vs_cv2(models, tmp_path, name, size):
    """The architecture-only cfgs with seeded He-scaled weights, every layer against cv2."""
    text = require_model(models, f"arch_only/darknet_cfg/{name}.cfg").read_text()
    text = re.sub(r"(?m)^(width|height)=\d+", lambda m: f"{m.group(1)}={size}", text)
    cfg, wts, _ = write_model(tmp_path, text, seed=7)
    blob = np.random.default_rng(1).uniform(0, 1, (1, 3, size, size)).astype(np.float32)
    ref = cv2_outputs(cfg, wts, blob)
    worst, _ = check_every_layer(refnet.load_darknet(cfg, wts, quirks="cv2"), ref, blob)
    print(f"{name} at {size}: {len(ref)} layers, worst {worst}")


# ---- real models -----------------------------------------------------------------------------------
def _oracle_detections(outs: list[np.ndarray], conf: float, nms: float, size: tuple[int, int]):
    """The OpenCV sample's post-processing on cv2's own outputs, with cv2.dnn.NMSBoxes per class."""
    rows = np.concatenate(outs).astype(np.float64)
    cls = rows[:, 5:].argmax(1)
    score = rows[np.arange(len(rows)), 5 + cls]
    dets = []
    for c in np.unique(cls[score > conf]):
        idx = np.flatnonzero(cls == c)
        boxes = [((r[0] - r[2] / 2) * size[0], (r[1] - r[3] / 2) * size[1], r[2] * size[0], r[3] * size[1])
                 for r in rows[idx]]
        for k in np.asarray(cv2.dnn.NMSBoxes(boxes, score[idx].tolist(), conf, nms)).reshape(-1):
            x, y, w, h = boxes[k]
            dets.append((float(score[idx[k]]), int(c), (x, y, x + w, y + h)))
    return sorted(dets, key=lambda t: -t[0])


@functools.lru_cache(maxsize=4)
def fastest_case(cfg, wts, image) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The photo, its blob (1/255, 320x320, swapRB) and cv2's per-layer outputs, computed once per model+photo."""
    img = cv2.imread(str(image))
    assert img is not None, image
    blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (320, 320), swapRB=True, crop=False)
    return img, blob, cv2_outputs(cfg, wts, blob)


@pytest.mark.models
@pytest.mark.parametrize("model, image", [
    ("yolo-fastest-1.1", "darknet_dog.jpg"),
    ("yolo-fastest-1.1", "voc2007_000456.jpg"),
    ("yolo-fastest-1.1-xl", "darknet_dog.jpg"),
])
def test_yolo_fastest_vs_cv2(models, images_dir, model, image):
    cfg = require_model(models, f"yolo_fastest_darknet/{model}.cfg")
    wts = require_model(models, f"yolo_fastest_darknet/{model}.weights")
    img, blob, ref = fastest_case(cfg, wts, images_dir / image)
    net = refnet.load_darknet(cfg, wts, quirks="cv2")
    worst, traces = check_every_layer(net, ref, blob)
    # final detections: refnet's outputs + refnet's post-processing == cv2's outputs + cv2.dnn.NMSBoxes
    size = (img.shape[1], img.shape[0])
    heads = traces["float32"]
    got = yolo_detections([heads[n] for n in net.output_names], conf_threshold=0.3, nms_threshold=0.45,
                          image_size=size)
    want = _oracle_detections([ref[n] for n in net.output_names], 0.3, 0.45, size)
    assert len(want) >= 1 and got["class_ids"].tolist() == [d[1] for d in want]
    np.testing.assert_allclose(got["scores"], [d[0] for d in want], rtol=TOL["vs_cv2"], atol=0)
    np.testing.assert_allclose(got["boxes"], [d[2] for d in want], rtol=0, atol=TOL["vs_cv2"] * max(size))
    names = (models / "yolo_fastest_darknet" / "coco.names").read_text().split("\n")
    print(f"{model} {image}: worst {worst}")
    for (s, c, b), gs, gb in zip(want, got["scores"], got["boxes"]):
        print(f"  {names[c]:>10s} cv2 {s:.4f} {np.round(b, 1)}  refnet {gs:.4f} {np.round(gb, 1)}")


@pytest.mark.models
def test_yolo_fastest_faithful_differs_only_by_named_quirks(models, images_dir):
    """quirks='none' (Darknet's eps 1e-5, raw heads) vs cv2: same detections on the dog photo within 1e-2."""
    cfg = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    wts = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.weights")
    img, blob, ref = fastest_case(cfg, wts, images_dir / "darknet_dog.jpg")
    faithful = refnet.load_darknet(cfg, wts)
    assert faithful.graph.node("bn_0").attrs["eps"] == 1e-5
    heads = faithful.forward(blob)
    assert all((heads[n][:, 5:] > 0).mean() > 0.99 for n in faithful.output_names)  # no threshold in the layer
    size = (img.shape[1], img.shape[0])
    got = yolo_detections([heads[n] for n in faithful.output_names], conf_threshold=0.3, image_size=size)
    want = _oracle_detections([ref[n] for n in faithful.output_names], 0.3, 0.45, size)
    assert got["class_ids"].tolist() == [d[1] for d in want]
    np.testing.assert_allclose(got["scores"], [d[0] for d in want], rtol=1e-2)


# ---- Darknet rules where refnet's default differs from cv2 (oracles: numpy formulas) ------------------
def conv_oracle(x: np.ndarray, w: np.ndarray, pad: int, dilation: int = 1) -> np.ndarray:
    """Direct cross-correlation with scipy (float64), one output channel at a time."""
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    wd = np.zeros(w.shape[:2] + (dilation * (k - 1) + 1,) * 2)
    wd[:, :, ::dilation, ::dilation] = w
    return np.stack([scipy.signal.correlate(xp, wd[o], mode="valid")[0] for o in range(w.shape[0])])[None]


def test_batchnorm_eps_and_order(tmp_path, rng):
    """Darknet (AlexeyAB) normalises with sqrt(var + 1e-5); cv2 with 1e-6; visible for small variances."""
    cfg = cfg_text([NET8, ("convolutional", {"filters": 4, "size": 1, "batch_normalize": 1, "activation": "linear"})])
    b = {"bias": rng.normal(0, 1, 4), "scales": rng.uniform(0.5, 2, 4), "mean": rng.normal(0, 1, 4),
         "var": np.array([1e-4, 3e-4, 1e-3, 1.0]), "weight": rng.normal(0, 1, (4, 3, 1, 1))}
    data = weights_bytes([b["bias"], b["scales"], b["mean"], b["var"], b["weight"]])
    x = rng.uniform(0, 1, (1, 3, 8, 8))
    conv = np.einsum("oc,nchw->nohw", b["weight"].astype(np.float32).astype(np.float64)[:, :, 0, 0], x)
    f32 = {k: v.astype(np.float32).astype(np.float64)[:, None, None] for k, v in b.items() if k != "weight"}
    outs = {}
    for quirks, eps in (("none", 1e-5), ("cv2", 1e-6)):
        g = read_darknet("m.cfg", cfg_text=cfg, weights_bytes=data, quirks=quirks)
        assert g.node("conv_0").params["weight"].shape == (4, 3, 1, 1) and "bias" not in g.node("conv_0").params
        np.testing.assert_array_equal(g.node("bn_0").params["var"], f32["var"].ravel())
        np.testing.assert_array_equal(g.node("bn_0").params["weight"], f32["scales"].ravel())
        np.testing.assert_array_equal(g.node("bn_0").params["bias"], f32["bias"].ravel())
        want = (conv - f32["mean"]) / np.sqrt(f32["var"] + eps) * f32["scales"] + f32["bias"]
        outs[quirks] = refnet.Net(g).trace(x, precision="float64")["bn_0"]
        assert rel_err(outs[quirks], want) <= TOL["f64_vs_oracle"]
    assert rel_err(outs["none"], outs["cv2"]) > 100 * TOL["vs_cv2"]  # the quirk is real, not noise


def test_default_activation_is_logistic(tmp_path):
    """Darknet's conv/connected default activation is logistic; cv2 adds none."""
    cfg, wts, _ = write_model(tmp_path, cfg_text([NET8, ("convolutional", {"filters": 2, "size": 1}),
                                                  ("connected", {"output": 3})]))
    g = read_darknet(cfg, wts)
    assert [(n.name, n.op) for n in g.nodes] == [("conv_0", "conv"), ("logistic_1", "sigmoid"),
                                                 ("fullyConnected_1", "linear"), ("logistic_2", "sigmoid")]
    cvnames = cv2.dnn.readNetFromDarknet(str(cfg), str(wts)).getLayerNames()
    assert read_darknet(cfg, wts, quirks="cv2").layer_names == tuple(cvnames) == ("conv_0", "fullyConnected_1")


def test_connected_batchnorm_weight_order(tmp_path):
    """Darknet stores connected+BN as biases, weights, BN; cv2 reads biases, BN, weights."""
    text = cfg_text([NET8, ("connected", {"output": 5, "batch_normalize": 1, "activation": "linear"})])
    for order, quirks in (("darknet", "none"), ("cv2", "cv2")):
        cfg, wts, blobs = write_model(tmp_path, text, seed=3, connected_order=order)
        g = read_darknet(cfg, wts, quirks=quirks)
        lb = blobs[0][2]
        np.testing.assert_array_equal(g.node("fullyConnected_0").params["weight"], lb["weight"].astype(np.float32))
        np.testing.assert_array_equal(g.node("bn_0").params["mean"], lb["mean"].astype(np.float32))
        np.testing.assert_array_equal(g.node("bn_0").params["var"], lb["var"].astype(np.float32))


def test_dilation_and_anisotropic_stride():
    """AlexeyAB's dilation pads by padding*dilation; stride_x/stride_y; cv2 ignores all three."""
    rng = np.random.default_rng(5)
    cfg = cfg_text([("net", {"width": 11, "height": 9, "channels": 2}),
                    ("convolutional", {"filters": 3, "size": 3, "pad": 1, "dilation": 2, "activation": "linear"}),
                    ("convolutional", {"filters": 2, "size": 3, "pad": 1, "stride_x": 2, "stride_y": 1,
                                       "activation": "linear"})])
    w1, w2 = rng.normal(0, 1, (3, 2, 3, 3)), rng.normal(0, 1, (2, 3, 3, 3))
    data = weights_bytes([np.zeros(3), w1, np.zeros(2), w2])
    x = rng.uniform(0, 1, (1, 2, 9, 11))
    w1, w2 = w1.astype(np.float32).astype(np.float64), w2.astype(np.float32).astype(np.float64)
    tr = refnet.Net(read_darknet(None, cfg_text=cfg, weights_bytes=data)).trace(x, precision="float64")
    y1 = conv_oracle(x, w1, pad=2, dilation=2)
    assert tr["conv_0"].shape == (1, 3, 9, 11) and rel_err(tr["conv_0"], y1) <= TOL["f64_vs_oracle"]
    y2 = conv_oracle(y1, w2, pad=1)[:, :, :, ::2]
    assert tr["conv_1"].shape == (1, 2, 9, 6) and rel_err(tr["conv_1"], y2) <= TOL["f64_vs_oracle"]
    g = read_darknet(None, cfg_text=cfg, weights_bytes=data, quirks="cv2")
    assert g.node("conv_0").attrs["dilation"] == (1, 1) and g.node("conv_1").attrs["stride"] == (1, 1)


def test_section_defaults_and_duplicate_keys(tmp_path, rng):
    """Darknet: maxpool stride 1/size=stride, upsample stride 2, first duplicate wins; cv2: 2/2, 1, last."""
    text = cfg_text([NET8, ("maxpool", {}), ("upsample", {})]) + "[convolutional]\nfilters=2\nfilters=3\nsize=1\n"
    cfg, wts, _ = write_model(tmp_path, text.replace("filters=2\nfilters=3", "filters=2"))  # weights for 2 filters
    cfg.write_text(text.replace("filters=2\nfilters=3", "filters=3\nfilters=2"))  # cv2 takes the last
    x = rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    (tmp_path / "f.cfg").write_text(text)
    faithful = refnet.Net(read_darknet(tmp_path / "f.cfg", weights="zeros")).infer_shapes()
    assert faithful["pool_0"] == (1, 3, 8, 8) and faithful["upsample_1"] == (1, 3, 16, 16)
    assert faithful["conv_2"] == (1, 2, 16, 16)
    ref = cv2_outputs(cfg, wts, x)  # the cv2-ordered file: filters=3 then 2 -> cv2 takes the last, 2
    got = refnet.load_darknet(cfg, wts, quirks="cv2").trace(x)
    assert {n: v.shape for n, v in got.items()} == {n: v.shape for n, v in ref.items()}
    assert ref["pool_0"].shape == (1, 3, 4, 4) and ref["conv_2"].shape == (1, 2, 4, 4)


def test_cv2_activation_on_any_section_and_first_from_only(tmp_path, rng):
    """cv2 applies activation= after any section and adds only the first shortcut source; Darknet does not."""
    text = cfg_text([("net", {"width": 4, "height": 4, "channels": 2}),
                     ("maxpool", {"size": 1, "stride": 1, "activation": "leaky"}),
                     ("route", {"layers": -1, "activation": "tanh"}), ("shortcut", {"from": "-1,-2"})])
    cfg, wts, _ = write_model(tmp_path, text)
    x = rng.normal(0, 1, (1, 2, 4, 4)).astype(np.float32)
    ref = cv2_outputs(cfg, wts, x)
    check_every_layer(refnet.load_darknet(cfg, wts, quirks="cv2"), ref, x)
    g = read_darknet(cfg, wts)
    assert g.layer_names == ("pool_0", "identity_1", "shortcut_2")
    assert g.node("shortcut_2").inputs == ("identity_1", "identity_1", "pool_0")


def test_softmax_groups_and_spatial(rng):
    """Darknet's softmax runs over each group of the flattened C*H*W values, with a temperature."""
    cfg = cfg_text([("net", {"width": 3, "height": 2, "channels": 4}), ("softmax", {"groups": 2, "temperature": 2})])
    x = rng.normal(0, 3, (2, 4, 2, 3))
    y = refnet.Net(read_darknet(None, cfg_text=cfg)).trace(x, precision="float64")["softmax_0"]
    z = np.exp(x.reshape(2, 2, 12) / 2)
    assert rel_err(y, (z / z.sum(-1, keepdims=True)).reshape(x.shape)) <= TOL["f64_vs_oracle"]


def test_shortcut_alpha_beta_and_channels(rng):
    """pjreddie shortcut: alpha*out + beta*add over the common channels; the output keeps out's channels."""
    cfg = cfg_text([("net", {"width": 2, "height": 2, "channels": 3}),
                    ("maxpool", {"size": 1, "stride": 1}),
                    ("route", {"layers": "-1,0"}),
                    ("shortcut", {"from": 0, "alpha": 0.5, "beta": 2, "activation": "linear"}),
                    ("shortcut", {"from": "-1,-3", "activation": "linear"})])
    x = rng.normal(0, 1, (1, 3, 2, 2))
    tr = refnet.Net(read_darknet(None, cfg_text=cfg)).trace(x, precision="float64")
    cat = np.concatenate([x, x], 1)
    s1 = 0.5 * cat
    s1[:, :3] += 2 * x
    np.testing.assert_allclose(tr["shortcut_2"], s1, rtol=0, atol=1e-15)
    s2 = s1 + s1
    s2[:, :3] += x
    np.testing.assert_allclose(tr["shortcut_3"], s2, rtol=0, atol=1e-15)


def test_faithful_heads_decode_without_thresholds(rng):
    """quirks='none': the heads only decode (Darknet's get_yolo_box); thresholds/NMS are the caller's."""
    cfg = cfg_text([("net", {"width": 4, "height": 2, "channels": 7}),
                    ("yolo", {"mask": 0, "anchors": "3,5", "classes": 2, "num": 1, "thresh": 0.9,
                              "nms_threshold": 0.5})])
    x = rng.normal(0, 1, (1, 7, 2, 4))
    y = refnet.Net(read_darknet(None, cfg_text=cfg)).trace(x, precision="float64")["yolo_0"]
    sig = 1 / (1 + np.exp(-x[0]))  # (7, H, W)
    gy, gx = np.mgrid[0:2, 0:4]
    want = np.stack([(gx + sig[0]) / 4, (gy + sig[1]) / 2, np.exp(x[0, 2]) * 3 / 4, np.exp(x[0, 3]) * 5 / 2,
                     sig[4], sig[4] * sig[5], sig[4] * sig[6]], -1).reshape(8, 7)
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=0)


# ---- cfg text ---------------------------------------------------------------------------------------
PLAIN = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n" \
        "[maxpool]\nsize=2\nstride=2\n"


def _summary(g):
    return [(n.name, n.op, n.inputs, dict(n.attrs)) for n in g.nodes]


def test_cfg_comments_whitespace_aliases():
    messy = ("# a comment\r\n; another\r\n [ net ] \r\nwidth = 8 # inline\r\n\theight=\t8\r\nchannels=3\r\n\r\n"
             "[conv]\r\nfilters=4\r\nsize = 3\r\npad=1\r\nactivation = leaky ; not a comment\r\n[max]\r\n"
             "size=2\r\nstride=2\r\n")
    with pytest.raises(ModelFormatError, match="unknown activation 'leaky;notacomment'"):
        read_darknet(None, cfg_text=messy, weights="zeros")
    messy = messy.replace(" ; not a comment", "")
    assert _summary(read_darknet(None, cfg_text=messy, weights="zeros")) == \
        _summary(read_darknet(None, cfg_text=PLAIN, weights="zeros"))


@pytest.mark.parametrize("text, exc, pattern", [
    (PLAIN + "filters 8\n", ModelFormatError, r":13:1: cannot parse 'filters 8'"),
    ("[net\nwidth=8\n", ModelFormatError, r":1:1: unterminated section header"),
    ("width=8\n[net]\n", ModelFormatError, r":1:1: option 'width' before the first section"),
    (PLAIN.replace("filters=4", "filters=four"), ModelFormatError, r":6:9: .*filters='four' is not an integer"),
    (PLAIN.replace("filters=4", "filters=0"), ModelFormatError, r":6:9: .*filters=0 out of range"),
    (PLAIN.replace("filters=4", "filters="), ModelFormatError, r":6:9: option 'filters' has no value"),
    (PLAIN + "[yolo]\nmask=0\nanchors=1,,2\nclasses=1\nnum=1\n", ModelFormatError, r":15:9: .*empty item"),
    (PLAIN + "[bogus]\n", UnsupportedLayerError, r"unsupported type 'bogus'; supported types: avg, avgpool"),
    (PLAIN.replace("leaky", "sparkly"), ModelFormatError, r":9:12: .*unknown activation 'sparkly'"),
    (PLAIN.replace("leaky", "selu"), UnsupportedLayerError, r"activation=selu"),
    (PLAIN.replace("[net]", "[netz]"), ModelFormatError, r":1: the first section must be \[net\]"),
    (PLAIN.replace("width=8\n", ""), ModelFormatError, r"needs width="),
    (PLAIN + "[route]\nlayers=5\n", ModelFormatError, r":14:8: .*layers refers to layer 5 -> 5, which is not an"),
    (PLAIN + "[shortcut]\nfrom=-9\n", ModelFormatError, r"from refers to layer -9"),
    (PLAIN.replace("size=3", "size=3\ngroups=3"), ModelFormatError, r"groups=3 must divide the input channels"),
    (PLAIN + "[yolo]\nmask=0\nanchors=1,2\nclasses=1\nnum=1\n", ModelFormatError,
     r"input has 4 channels; len\(mask\)\*\(5\+classes\) = 6"),
    (PLAIN + "[region]\nanchors=1,2,3\nclasses=1\nnum=2\n", ModelFormatError, r"anchors must hold 2\*num = 4"),
    (PLAIN + "[yolo]\nmask=3\nanchors=1,2\nclasses=1\nnum=1\n", ModelFormatError, r"mask \[3\] indexes past"),
    (PLAIN + "[convolutional]\nfilters=6\nsize=1\n[yolo]\nmask=0\nanchors=1,2\nthresh=nan\nclasses=1\nnum=1\n",
     ModelFormatError, r":19:8: .*thresh='nan': not finite"),
    (PLAIN + "[route]\nlayers=0,1\n", ModelFormatError, r"route inputs differ in size"),
    (PLAIN + "[convolutional]\nsize=9\nfilters=1\n", ModelFormatError, r"output shape \(1, -4, -4\) is empty"),
])
def test_cfg_errors(text, exc, pattern):
    with pytest.raises(exc, match=pattern):
        read_darknet("bad.cfg", cfg_text=text, weights="zeros")


def test_cv2_quirk_net_defaults():
    g = read_darknet(None, cfg_text="[maxpool]\nsize=2\nstride=2\n", quirks="cv2")
    assert g.input_shapes["data"] == (1, 3, 416, 416)
    with pytest.raises(ModelFormatError, match="first section must be"):
        read_darknet(None, cfg_text="[maxpool]\nsize=2\nstride=2\n")


# ---- weights file --------------------------------------------------------------------------------------
def test_header_variants_and_transposed_connected(rng):
    """seen is uint64 iff major*10+minor >= 2 (and, for Darknet, major/minor < 1000); >1000 = transposed FC."""
    cfg = cfg_text([("net", {"width": 2, "height": 1, "channels": 3}), ("connected", {"output": 4})])
    bias, w = rng.normal(0, 1, 4).astype(np.float32), rng.normal(0, 1, (4, 6)).astype(np.float32)
    blobs = [bias, w]
    for major, minor in ((0, 1), (0, 2), (1, 0), (0, 5)):
        data = weights_bytes(blobs, major=major, minor=minor, seen=123456789)
        g = read_darknet(None, cfg_text=cfg, weights_bytes=data)
        np.testing.assert_array_equal(g.node("fullyConnected_0").params["weight"], w)
        assert g.meta["weights_header"] == (major, minor, 0, 123456789)
    data = weights_bytes([bias, w.T], major=1001, minor=0, seen=7)  # pjreddie: int32 seen, (inputs, outputs)
    assert len(data) == 16 + 4 * (4 + 24)
    g = read_darknet(None, cfg_text=cfg, weights_bytes=data)
    np.testing.assert_array_equal(g.node("fullyConnected_0").params["weight"], w)
    with pytest.raises(ModelFormatError, match="needs 28 floats of weights but the file holds 27"):  # uint64 seen
        read_darknet(None, cfg_text=cfg, weights_bytes=data, quirks="cv2")


@pytest.mark.parametrize("cut, pattern", [
    (-4, r"layer 'conv_1': the cfg needs 62 floats of weights but the file holds 61 .*conv_1 needs 32 floats of "
         r"weights from float 30, only 31 are left"),
    (-4 * 59, r"layer 'conv_0': .*holds 3 .*conv_0 needs 2 floats of BN scales from float 2, only 1 are left"),
    (4, r"needs 62 floats .* 1 floats left over"),
    (2, r"2 stray bytes"),
])
def test_weights_size_mismatch(cut, pattern):
    cfg = cfg_text([("net", {"width": 4, "height": 4, "channels": 1}),
                    ("convolutional", {"filters": 2, "size": 3, "pad": 1, "batch_normalize": 1}),
                    ("convolutional", {"filters": 4, "size": 2, "activation": "linear"})])
    data, _ = random_weights(cfg, 0)
    assert len(data) == 20 + 4 * 62  # conv_0: 2 + 3*2 + 18, conv_1: 4 + 32
    data = data[:cut] if cut < 0 else data + b"\0" * cut
    with pytest.raises(ModelFormatError, match=pattern):
        read_darknet("m.cfg", "m.weights", cfg_text=cfg, weights_bytes=data)


def test_weights_header_truncated():
    with pytest.raises(ModelFormatError, match=r"too short for a Darknet header \(10 bytes\)"):
        read_darknet(None, cfg_text=PLAIN, weights_bytes=b"\0" * 10)
    with pytest.raises(ModelFormatError, match="inside the 64-bit `seen`"):
        read_darknet(None, cfg_text=PLAIN, weights_bytes=struct.pack("<iiii", 0, 2, 0, 0))


def test_huge_declared_sizes_fail_before_allocating():
    cfg = cfg_text([("net", {"width": 65536, "height": 65536, "channels": 4096}),
                    ("convolutional", {"filters": 1 << 20, "size": 1024, "pad": 1}),
                    ("connected", {"output": 1 << 24})])
    with pytest.raises(ModelFormatError, match=r"needs \d{15,} floats of weights but the file holds 0"):
        read_darknet(None, cfg_text=cfg, weights_bytes=header_bytes())
    with pytest.raises(ModelFormatError, match="would allocate"):
        read_darknet(None, cfg_text=cfg, weights="zeros")


def test_weights_none_and_zeros():
    with pytest.raises(ModelFormatError, match=r"parameters \(first in layer conv_0\) but no weights.*'zeros'"):
        read_darknet(None, cfg_text=PLAIN)
    g = read_darknet(None, cfg_text=PLAIN, weights="zeros")
    assert not g.node("conv_0").params["weight"].any()
    g = read_darknet(None, cfg_text=PLAIN.replace("pad=1", "pad=1\nbatch_normalize=1"), weights="zeros")
    assert (g.node("bn_0").params["var"] == 1).all() and (g.node("bn_0").params["weight"] == 1).all()
    assert read_darknet(None, cfg_text="[net]\nwidth=4\nheight=4\nchannels=1\n[maxpool]\n").nodes[0].name == "pool_0"


def test_bad_files(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read the cfg"):
        read_darknet(tmp_path / "missing.cfg")
    with pytest.raises(ValueError, match="quirks"):
        read_darknet(None, cfg_text=PLAIN, quirks="opencv")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_never_crashes(data):
    """Random truncations and byte edits of a valid cfg + weights raise refnet errors or succeed."""
    text = cfg_text(ALL_LAYERS)
    blob, _ = random_weights(text, 1, connected_order="cv2")
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.sampled_from(b"=[]#,-0129 \nx\xff"))
    cut = data.draw(st.integers(0, len(blob)))
    quirks = data.draw(st.sampled_from(["none", "cv2"]))
    try:
        read_darknet(None, cfg_text=raw.decode("utf-8", "replace"),
                     weights_bytes=blob[:cut] if data.draw(st.booleans()) else blob, quirks=quirks)
    except (ModelFormatError, UnsupportedLayerError):
        pass
    except RefnetError as e:  # pragma: no cover - would be a wrong error class
        raise AssertionError(f"unexpected {type(e).__name__}: {e}") from e
