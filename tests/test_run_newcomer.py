"""The first steps outside `make`: models found without REFNET_MODELS, `run` on folders and several
images, task inference and refusal, the --mean rule, seeded pictures, short reprs, `info` safety.

Oracles: cv2.dnn.blobFromImage (the --mean rule), cv2.dnn on the same model and image (classes),
cv2's getFLOPS total, the zoo's published file layout, the written PNGs decoded by cv2.imread.
"""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest
from conftest import require_model

from refnet import cli, info, zoo
from refnet.cli.common import cv_mean
from refnet.pipelines import run_task
from refnet.taskcheck import infer_task


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- models without REFNET_MODELS -------------------------------------------------------------------------
def test_models_found_beside_the_checkout_without_refnet_models(models, monkeypatch, tmp_path):
    monkeypatch.delenv("REFNET_MODELS", raising=False)
    monkeypatch.setenv("REFNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(zoo, "default_models_dir", lambda: models)
    assert zoo.search_roots()[0] == models
    assert zoo.find("lenet-mnist").found
    monkeypatch.setenv("REFNET_MODELS", "")  # set but empty: no models folder at all
    with pytest.raises(zoo.ModelMissingError) as ei:
        _ = zoo.find("lenet-mnist").main_paths
    msg = str(ei.value)
    assert "REFNET_MODELS" in msg and "needs network" in msg and "refnet models fetch lenet-mnist" in msg


def test_default_models_dir_is_the_checkouts_sibling():
    import refnet

    checkout = zoo.Path(refnet.__file__).resolve().parent.parent
    assert zoo.default_models_dir() == checkout.parent / "shared" / "models"


# ---- --mean follows cv2.dnn.blobFromImage --------------------------------------------------------------
@pytest.mark.parametrize("mean", [[127.5], [104.0, 117.0, 123.0], [0.0]])
def test_cli_mean_is_blobfromimages(mean, capsys):
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
    args = cli.build_parser().parse_args(["run", "--zoo", "x", "--image", "y", "--mean", *map(str, mean)])
    err = capsys.readouterr().err
    assert ("first channel only" in err) == (len(mean) == 1 and mean[0] != 0)
    pre = zoo.Preprocess(0.5, (16, 12), tuple(args.mean), True)
    ref = cv2.dnn.blobFromImage(img, 0.5, (16, 12), mean[0] if len(mean) == 1 else tuple(mean), swapRB=True)
    np.testing.assert_array_equal(pre.blob(img), ref)
    cmp = cli.build_parser().parse_args(["compare", "--zoo", "x", "--mean", *map(str, mean)])
    assert tuple(cmp.mean) == cv_mean(mean)  # compare reads --mean the same way


# ---- run: several images, task inference and refusal ---------------------------------------------------
def test_run_folder_and_inferred_task(models, images_dir, tmp_path, capsys):
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    weights = require_model(models, "lenet_mnist_caffe/lenet_iter_10000.caffemodel")
    p2, w2 = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"  # not under a zoo path: no entry
    shutil.copy(proto, p2)
    shutil.copy(weights, w2)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(imgs / f"d{i}.png"), rng.integers(0, 256, (28, 28), np.uint8))
    code, out, err = run(capsys, "run", p2, w2, "--image", imgs, "-o", tmp_path / "pics", "--scale", 1 / 256)
    assert code == 0, err
    assert "task classify: its output 'prob' is a 10-way softmax per image" in err
    cv = cv2.dnn.readNetFromCaffe(str(p2), str(w2))
    tops = re.findall(r"^  1\. +\S+ +\[(\d+)\]", out, re.M)
    for i, top in enumerate(tops):
        g = cv2.imread(str(imgs / f"d{i}.png"), cv2.IMREAD_GRAYSCALE)
        cv.setInput(cv2.dnn.blobFromImage(g, 1 / 256, (28, 28)))
        assert int(top) == int(np.argmax(cv.forward())), i
    assert len(tops) == 3 and sorted(p.name for p in (tmp_path / "pics").iterdir()) == [
        "d0_classify.png", "d1_classify.png", "d2_classify.png"]


def test_task_inference_where_the_net_says_it(models):
    import refnet

    yolo = refnet.load(require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg"),
                       require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.weights"))
    assert infer_task(yolo)[0] == "detect"
    yu = zoo.find("yufacedetectnet-v2").load()
    assert infer_task(yu) == ("detect", "its output is a DetectionOutput layer (SSD)")
    assert infer_task(zoo.find("ultraface-slim-320").load())[0] == "face"
    assert infer_task(zoo.find("mtcnn-det1").load())[0] is None  # P-Net's maps: the net does not say


def test_yolo_size_not_a_multiple_of_the_stride_says_so(models, images_dir, tmp_path, capsys):
    """--size 333 333 on yolo-fastest (downsampling 32, a route joins the 10x10 and 20x20 maps)
    failed with "concat inputs differ ..." alone; the error now says the size must be a multiple of
    the net's stride and suggests the nearest ones. cv2.dnn is the oracle: it refuses 333 too
    (an inconsistent concat) and takes 352."""
    cfg = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    weights = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.weights")
    img = images_dir / "darknet_dog.jpg"
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    for side, ok in ((333, False), (352, True)):
        net.setInput(cv2.dnn.blobFromImage(cv2.imread(str(img)), 1 / 255, (side, side)))
        if ok:
            net.forward(net.getUnconnectedOutLayersNames())
        else:
            with pytest.raises(cv2.error, match="(?i)concat"):
                net.forward(net.getUnconnectedOutLayersNames())
    code, out, err = run(capsys, "run", cfg, weights, "--image", img, "--size", 333, 333, "-o", tmp_path / "d.png")
    assert code == 2 and "concat inputs differ" in err, err
    assert "multiples of 32" in err and "--size 320 320" in err and "352 352" in err, err
    code, out, err = run(capsys, "run", cfg, weights, "--image", img, "--size", 352, 320, "-o", tmp_path / "d.png")
    assert code == 0, err
    # compare said only what cv2 said ("Inconsistent shape for ConcatLayer"): refnet's reason and the hint
    code, out, err = run(capsys, "compare", cfg, weights, "--image", img, "--size", 333, 333)
    assert code == 2 and "concat inputs differ" in err and "multiples of 32" in err and "OpenCV" not in err, err


def test_classify_on_yolo_refuses(models, images_dir, capsys):
    require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    code, out, err = run(capsys, "run", "--zoo", "yolo-fastest-1.1", "--image", images_dir / "darknet_dog.jpg",
                         "--task", "classify")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--task classify does not fit this net" in err and "region/yolo" in err and "use --task detect" in err


@pytest.mark.parametrize("stage", ["mtcnn-det2", "mtcnn-det3", "mtcnn-det4"])
def test_mtcnn_later_stages_refuse_the_face_task(models, images_dir, capsys, stage):
    require_model(models, f"mtcnn_caffe/det{stage[-1]}.caffemodel")
    code, out, err = run(capsys, "run", "--zoo", stage, "--image", images_dir / "darknet_person.jpg")
    assert code == 2 and "cannot find faces in a whole image on its own" in err and "--zoo mtcnn" in err


def test_task_result_repr_is_short(models, images_dir):
    net = zoo.find("yufacedetectnet-v2").load()
    r = run_task(net, cv2.imread(str(images_dir / "voc2007_001150.jpg")), "face", entry=zoo.get("yufacedetectnet-v2"))
    text = repr(r)
    assert len(text) < 200 and text.startswith("<TaskResult face, ") and "faces" in text and "\n" not in text


# ---- info ---------------------------------------------------------------------------------------------------
def test_info_never_asks_cv2_without_inputs(tmp_path, capsys):
    p = tmp_path / "empty.prototxt"
    p.write_text('name: "empty"\n')
    code, out, err = run(capsys, "info", p)  # cv2's getFLOPS(()) segfaults (exit 139 before the fix)
    assert code == 0, err
    assert "0 layers" in out and "cv2 getFLOPS: not available (the net has no input of known shape)" in out


class _CountingCv2:
    """A cv2 net that counts getFLOPS calls (wrapping cv2's own)."""

    def __init__(self, cv):
        self.cv, self.calls = cv, 0

    def getFLOPS(self, *a):  # noqa: N802
        self.calls += 1
        return self.cv.getFLOPS(*a)

    def getLayerId(self, name):  # noqa: N802
        return self.cv.getLayerId(name)


def test_info_counts_cv2_flops_once_on_deep_nets(models, monkeypatch):
    import refnet

    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    weights = require_model(models, "lenet_mnist_caffe/lenet_iter_10000.caffemodel")
    net = refnet.load(proto, weights)
    cv = _CountingCv2(cv2.dnn.readNetFromCaffe(str(proto), str(weights)))
    full = info.model_info(net, (1, 1, 28, 28), cvnet=cv)
    assert cv.calls == 1 + len(net.layer_names)
    monkeypatch.setattr(info, "PER_LAYER_CV2_LIMIT", 4)  # "deep": more layers than the limit
    cv.calls = 0
    deep = info.model_info(net, (1, 1, 28, 28), cvnet=cv)
    assert cv.calls == 1 and deep.cv2_flops_total == full.cv2_flops_total == cv.cv.getFLOPS((1, 1, 28, 28))


@pytest.mark.parametrize("command", ["run", "generate", "bench", "info", "compare"])
def test_every_argument_has_help(command):
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    missing = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == []
    text = parser.format_help()
    assert "--image" in text or command in ("generate", "bench", "info")
