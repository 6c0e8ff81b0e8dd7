"""`refnet generate`: built-in architectures written to files that cv2.dnn reads and agrees with."""

import cv2
import numpy as np
from conftest import TOL, rel_err

import refnet
from refnet.cli import main


def test_generate_deeplab_files_run_in_cv2_and_refnet(tmp_path, capsys):
    assert main(["generate", "deeplab-v3plus", "--out", str(tmp_path / "dl"), "--size", "65", "49", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    proto, model = tmp_path / "dl.prototxt", tmp_path / "dl.caffemodel"
    assert str(proto) in out and proto.exists() and model.exists()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 49, 65)).astype(np.float32)
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.setInput(x)
    want = cv.forward()
    got = refnet.load_caffe(proto, model).forward(x)["upsample_logits"]
    assert got.shape == want.shape == (1, 21, 49, 65)
    assert rel_err(got, want) <= TOL["vs_cv2"]


def test_generate_errors(tmp_path, capsys):
    assert main(["generate", "alexnet", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'alexnet'" in err and "deeplab-v3plus" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "googlenet", "--out", str(tmp_path / "nope" / "g")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_list_names_each_once(capsys):
    """--list (and the error messages that list the names) give each name once, though
    faster-rcnn-vgg16 and rfcn-resnet50 are both refnet architectures and zoo entries."""
    from refnet import zoo

    assert main(["generate", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert names and len(names) == len(set(names))
    assert {"faster-rcnn-vgg16", "rfcn-resnet50", "yolov3-tiny", "deeplab-v3plus"} <= set(names)
    assert {e.name for e in zoo.entries() if e.arch_only} <= set(names)
