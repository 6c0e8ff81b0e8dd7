"""`refnet generate` for every architecture-only model, sidecars, and calibrated seeded weights.

Oracles: cv2.dnn reads every generated file (Caffe caffemodel, Darknet .weights, Torch7 .t7 written
by refnet's own writers) and computes the same outputs as refnet (quirks="cv2" where cv2 has known
deviations); cv2's own per-layer outputs give the activation RMS that calibration promises; the
sidecar's preprocessing is checked against cv2.dnn.blobFromImage with the published zoo values.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from conftest import require_model

import refnet
from refnet import cli, zoo
from refnet.archs import seeded_caffemodel
from refnet.generate import generate, generator_names, sidecar_entry, sidecar_for
from refnet.seeded import calibration_blob

# (zoo/arch name, --size W H small enough for CI, quirks for the cv2 comparison, tolerance)
CASES = [
    ("res10-ssd-face", (96, 96), "none", 1e-4),
    ("squeezenet-1.1", (96, 96), "none", 1e-4),
    ("mobilenet-ssd-voc", (96, 96), "none", 1e-4),
    ("yolov3-tiny", (96, 96), "cv2", 1e-3),
    ("tiny-darknet", (64, 64), "cv2", 1e-3),
    ("fns-eccv16-the-wave", (64, 48), "none", 1e-3),  # its 40-pixel reflection pad needs > 40
    ("fns-in-udnie", (48, 40), "none", 1e-3),
    ("enet", (128, 64), "cv2", 1e-3),
]


def _cv2_forward(paths, blob, names):
    cv = cv2.dnn.readNet(*[str(p) for p in paths])
    cv.enableFusion(False)
    cv.setInput(blob)
    return cv.forward(names)


@pytest.mark.parametrize("name,size,quirks,tol", CASES, ids=[c[0] for c in CASES])
def test_generated_model_runs_in_cv2_and_refnet(models, tmp_path, name, size, quirks, tol):
    g = generate(name, tmp_path / name, seed=1, size=size)
    entry = zoo.get(name)
    assert sidecar_for(g.paths[0]) == g.sidecar and g.entry.seeded and g.entry.task == entry.task
    assert g.entry.preprocess.scale == entry.preprocess.scale and g.entry.preprocess.mean == entry.preprocess.mean
    img = np.random.default_rng(3).integers(0, 256, (size[1] + 7, size[0] + 5, 3), np.uint8)
    blob = g.entry.preprocess.blob(img, size=size)
    net = refnet.load(*g.paths, quirks=quirks)
    names = list(net.output_names)
    ours = net.forward(blob, outputs=names, precision="float64")
    theirs = _cv2_forward(g.paths, blob, names)
    for n, t in zip(names, theirs):
        o = ours[n]
        assert np.isfinite(o).all() and o.shape == t.shape, n
        err = float(np.max(np.abs(o - t)) / max(float(np.max(np.abs(t))), 1e-12))
        assert err < tol, (n, err)


def test_calibration_keeps_res10_in_range(models, tmp_path):
    """He weights alone let activations grow layer after layer through the BN-free ResNet-10 (to
    overflow on deeper inputs); calibrated ones give every conv an output RMS of 1 on the
    calibration image -- measured on cv2's outputs, not refnet's."""
    proto = require_model(models, "arch_only/res10_face_ssd/deploy.prototxt")
    pre = zoo.get("res10-ssd-face").preprocess
    shape = (1, 3, 96, 96)
    plain, calib = tmp_path / "plain.caffemodel", tmp_path / "calib.caffemodel"
    plain.write_bytes(seeded_caffemodel(proto, 0, shape, calibrate=False))
    calib.write_bytes(seeded_caffemodel(proto, 0, shape, preprocess=pre))
    blob = calibration_blob(shape, pre, 0)
    convs = [n.name for n in refnet.load(proto, calib).graph.nodes if n.op == "conv"]
    for path, calibrated in ((plain, False), (calib, True)):
        cv = cv2.dnn.readNetFromCaffe(str(proto), str(path))
        cv.enableFusion(False)
        cv.setInput(blob)
        outs = cv.forward(convs)
        with np.errstate(over="ignore", invalid="ignore"):
            rms = [float(np.sqrt(np.mean(np.square(o.astype(np.float64))))) for o in outs]
        if calibrated:
            assert all(abs(r - 1) < 1e-3 for r in rms), rms
        else:
            assert max(r for r in rms if math.isfinite(r)) > 1e3, max(rms)  # grows along the depth


def test_sidecar_gives_run_the_right_blob(models, images_dir, tmp_path, capsys):
    """`generate mobilenet-ssd` then `run` on the files: the sidecar's preprocessing (0.007843, mean
    127.5 on all channels) makes the boxes cv2 finds with that blob, in image pixels."""
    prefix = tmp_path / "mnssd"
    assert cli.main(["generate", "mobilenet-ssd", "--out", str(prefix), "--size", "150", "150"]) == 0
    out = capsys.readouterr().out
    assert "mnssd.refnet.json" in out and "seeded random weights" in out
    doc = json.loads((tmp_path / "mnssd.refnet.json").read_text())
    assert doc["seeded_weights"] is True and doc["task"] == "detect" and doc["files"] == ["mnssd.prototxt",
                                                                                           "mnssd.caffemodel"]
    img_path = images_dir / "darknet_dog.jpg"
    png = tmp_path / "dog.png"
    code = cli.main(["run", str(prefix) + ".prototxt", str(prefix) + ".caffemodel", "--image", str(img_path),
                     "-o", str(png), "--threshold", "0.3"])
    out = capsys.readouterr().out
    assert code == 0 and "seeded random weights: labels are meaningless" in out
    img = cv2.imread(str(img_path))
    cv = cv2.dnn.readNetFromCaffe(str(prefix) + ".prototxt", str(prefix) + ".caffemodel")
    cv.setInput(cv2.dnn.blobFromImage(img, 0.007843, (150, 150), (127.5, 127.5, 127.5)))
    det = cv.forward().reshape(-1, 7)
    det = det[det[:, 2] > 0.3]
    boxes = [ln for ln in out.splitlines() if "box (" in ln]
    assert len(boxes) == min(len(det), 25) and len(det) > 0
    h, w = img.shape[:2]
    x1, y1 = (int(v) for v in boxes[0].split("box (")[1].split(")")[0].split(", "))
    best = det[np.argmax(det[:, 2])]
    assert abs(x1 - best[3] * w) <= 1 and abs(y1 - best[4] * h) <= 1
    pic = cv2.imread(str(png))
    assert pic.shape[1] == w and pic.shape[0] > h  # the banner sits on top
    assert (pic[2, :, 2] > 120).mean() > 0.5  # dark red banner: mostly red pixels in its first row


def test_generate_names_and_errors(tmp_path, capsys):
    names = generator_names()
    arch_only = {e.name for e in zoo.entries() if e.arch_only}
    assert arch_only <= set(names) and {"fast-neural-style-eccv16", "googlenet"} <= set(names)
    assert cli.main(["generate", "lenet-mnist", "--out", str(tmp_path / "x")]) == 2
    assert "has real weights" in capsys.readouterr().err
    assert cli.main(["generate", "--list"]) == 0
    assert "yolov3-tiny" in capsys.readouterr().out.split()


def test_sidecar_entry_round_trip(tmp_path):
    g = generate("fast-neural-style-instance-norm", tmp_path / "fns.v1", seed=2, size=(32, 24))
    assert [p.name for p in g.paths] == ["fns.v1.t7"]  # the dot in the prefix is not an extension
    e = sidecar_entry(g.sidecar)
    assert e.task == "stylize" and e.framework == "torch" and e.seeded
    assert e.preprocess == zoo.get("fns-in-candy").preprocess
    (tmp_path / "fns.v1.refnet.json").write_text("{not json")
    assert sidecar_for(g.paths[0]) is None  # a broken sidecar is ignored, the model still loads
