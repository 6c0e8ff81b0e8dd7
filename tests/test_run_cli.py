"""`refnet run`: the task pipelines from the command line, and its error contract (one line on
stderr, exit status 2, no traceback).

Oracles: cv2.dnn on the same model and image (post-processed in the test with cv2.dnn.NMSBoxes /
numpy argmax), the rendered digit's own value, and the written PNG decoded by cv2.imread.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from conftest import require_model

from refnet import cli
from refnet.archs import deeplab_v3plus


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `refnet ARGV` run in this process."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, argv, pattern):
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refnet: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    p = tmp_path_factory.mktemp("digit") / "seven.png"
    img = np.zeros((28, 28), np.uint8)
    cv2.putText(img, "7", (6, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 255, 2, cv2.LINE_AA)
    cv2.imwrite(str(p), img)
    return p


def test_run_zoo_classify_lenet(models, digit_png, tmp_path, capsys):
    out_png = tmp_path / "seven_top5.png"
    code, out, err = run(capsys, "run", "--zoo", "lenet-mnist", "--image", digit_png, "-o", out_png)
    assert code == 0, err
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:2] in {f"{k}." for k in range(1, 6)}]
    assert len(rows) == 5 and rows[0][2] == "[7]"  # the top class is the digit drawn
    # the same top class from cv2.dnn on the same image
    proto, weights = (require_model(models, f"lenet_mnist_caffe/{f}") for f in ("lenet.prototxt",
                                                                                  "lenet_iter_10000.caffemodel"))
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    cv.setInput(cv2.dnn.blobFromImage(cv2.imread(str(digit_png), cv2.IMREAD_GRAYSCALE), 1 / 256, (28, 28)))
    prob = cv.forward().reshape(-1)
    assert int(np.argmax(prob)) == 7 and abs(float(rows[0][1]) - prob[7]) < 1e-4
    assert f"wrote {out_png}" in out
    pic = cv2.imread(str(out_png))
    assert pic is not None and pic.shape == (280, 280 + 340, 3)


def test_run_files_task_detect_yolo(models, images_dir, tmp_path, capsys):
    cfg = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    weights = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.weights")
    img_path = images_dir / "darknet_dog.jpg"
    out_png = tmp_path / "dog.png"
    code, out, err = run(capsys, "run", cfg, weights, "--image", img_path, "--task", "detect", "--threshold", "0.5",
                         "-o", out_png, "--precision", "float64")
    assert code == 0, err
    # oracle: cv2.dnn + the OpenCV sample's per-class NMSBoxes, labels from coco.names
    cv = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    img = cv2.imread(str(img_path))
    cv.setInput(cv2.dnn.blobFromImage(img, 1 / 255, (320, 320), swapRB=True))
    rows = np.concatenate(cv.forward(cv.getUnconnectedOutLayersNames()))
    cls, conf = rows[:, 5:].argmax(1), rows[:, 5:].max(1)
    coco = (models / "yolo_fastest_darknet/coco.names").read_text().split("\n")
    expect = []
    for c in np.unique(cls[conf > 0.5]):
        sel = np.flatnonzero((cls == c) & (conf > 0.5))
        xywh = [[(r[0] - r[2] / 2) * 768, (r[1] - r[3] / 2) * 576, r[2] * 768, r[3] * 576] for r in rows[sel]]
        for k in np.asarray(cv2.dnn.NMSBoxes(xywh, conf[sel].tolist(), 0.5, 0.45)).reshape(-1):
            x, y, w, h = xywh[k]
            expect.append((coco[c], round(float(conf[sel[k]]), 3), round(x), round(y), round(x + w), round(y + h)))
    got = []
    for ln in out.splitlines():
        if " box (" in ln:
            name, score, rest = ln.split(None, 2)
            nums = [int(v) for v in rest.replace("box", "").replace("(", " ").replace(")", " ").replace(",", " ")
                    .replace("-", " ").split()]
            got.append((name, float(score), *nums))
    assert len(got) == len(expect) == 4, out  # car, dog, cat, bicycle above 0.5
    for e in expect:
        assert any(g[0] == e[0] and abs(g[1] - e[1]) <= 2e-3 and max(abs(a - b) for a, b in zip(g[2:], e[2:])) <= 1
                   for g in got), (e, got)
    pic = cv2.imread(str(out_png))
    assert pic is not None and pic.shape == img.shape


def test_run_files_default_task_from_zoo_match(models, images_dir, tmp_path, capsys, monkeypatch):
    # ultraface files given by path: the zoo entry is recognised, so its task and preprocessing apply
    proto = require_model(models, "ultraface_caffe/slim-320.prototxt")
    weights = require_model(models, "ultraface_caffe/slim-320.caffemodel")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "run", proto, weights, "--image", images_dir / "voc2007_001150.jpg")
    assert code == 0, err
    assert out.startswith("face: ultraface-slim-320") and "2 faces" in out  # the models manifest: 2 faces
    written = tmp_path / "voc2007_001150_face.png"  # default output name: <image stem>_<task>.png
    assert f"wrote {written.name}" in out and cv2.imread(str(written)).shape == (375, 500, 3)


def test_run_task_segment_deeplab(models, images_dir, tmp_path, capsys):
    proto, weights = deeplab_v3plus((65, 97), num_classes=21, width=0.35, seed=3).write(tmp_path / "deeplab")
    img_path = images_dir / "voc2007_000542.jpg"
    out_png = tmp_path / "seg.png"
    code, out, err = run(capsys, "run", proto, weights, "--image", img_path, "--task", "segment", "-o", out_png,
                         "--labels", models / "labels/voc.names", "--scale", 1 / 127.5,
                         "--mean", "127.5", "127.5", "127.5", "--rgb")
    assert code == 0, err
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    img = cv2.imread(str(img_path))
    cv.setInput(cv2.dnn.blobFromImage(img, 1 / 127.5, (97, 65), (127.5, 127.5, 127.5), swapRB=True))
    cmap = cv.forward()[0].argmax(0)
    names = ["background"] + (models / "labels/voc.names").read_text().split()
    frac = np.bincount(cmap.ravel(), minlength=21) / cmap.size
    listed = {ln.split()[0]: float(ln.split()[1].strip("<%")) for ln in out.splitlines() if ln.startswith("  ")}
    assert set(listed) == {names[i] for i in np.flatnonzero(frac)}
    for lab, pct in listed.items():
        assert abs(pct - 100 * frac[names.index(lab)]) <= 0.2, (lab, pct)
    pic = cv2.imread(str(out_png))
    assert pic.shape[1] == img.shape[1] + 340 and pic.shape[0] >= img.shape[0]


def test_run_errors_one_line_exit_2(models, images_dir, digit_png, tmp_path, capsys):
    img = images_dir / "darknet_dog.jpg"
    assert_user_error(capsys, ["run", tmp_path / "missing.prototxt", "--image", img, "--task", "classify"],
                      "model file not found: .*missing.prototxt")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", tmp_path / "nope.jpg"],
                      "image not found: .*nope.jpg")
    (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", tmp_path / "fake.jpg"],
                      "cannot decode image .*fake.jpg")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", digit_png, "--task", "paint"],
                      "unknown task 'paint'; tasks are classify, detect, face, segment, stylize")
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    (tmp_path / "copy.prototxt").write_text(proto.read_text())  # not under a zoo path: no default task
    assert_user_error(capsys, ["run", tmp_path / "copy.prototxt", "--image", digit_png], "conv1.*has no weights")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnsit", "--image", digit_png], "unknown model 'lenet-mnsit'")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", digit_png, "-o", tmp_path / "no/dir.png"],
                      "folder .* does not exist")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", digit_png, "--precision", "half"],
                      "--precision must be float32 or float64")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", digit_png, "--task", "detect"],
                      "cannot decode detections")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", digit_png, "--labels", tmp_path / "l.txt"],
                      "labels file not found")
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", proto, "--image", digit_png], "not both")
    assert_user_error(capsys, ["run", "--image", digit_png], "no model")
    # a folder of model files is not "not found": it is named as a folder, with the files it holds
    assert_user_error(capsys, ["run", proto.parent, "--image", digit_png],
                      r"lenet_mnist_caffe is a folder, not a model file; give the model files in it "
                      r"\(lenet.prototxt, lenet_iter_10000.caffemodel\)")
    # an option the task does not read is refused, not dropped: run_task's classify has no threshold or
    # NMS, detect has no top-k; the MTCNN cascade fixes its own preprocessing and NMS
    assert_user_error(capsys, ["run", "--zoo", "lenet-mnist", "--image", digit_png, "--threshold", "0.9",
                               "--nms", "0.3"], r"--threshold, --nms apply only to the detect and face tasks, "
                                                r"not to classify")
    yolo = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    assert_user_error(capsys, ["run", yolo, yolo.with_suffix(".weights"), "--image", img, "--top-k", "2"],
                      "--top-k applies only to the classify task, not to detect")
    require_model(models, "mtcnn_caffe/det3.caffemodel")
    assert_user_error(capsys, ["run", "--zoo", "mtcnn", "--image", img, "--size", "100", "100", "--nms", "0.1"],
                      "MTCNN cascade .* does not use --nms, --size")
    # --debug shows the traceback instead
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "run", "--zoo", "lenet-mnist", "--image", str(tmp_path / "nope.jpg")])


def test_run_images_of_one_name_in_two_folders_write_two_pictures(models, images_dir, tmp_path, capsys):
    """a/x.jpg and b/x.jpg each get their own picture (the later one x_jpg_2), not one over the other;
    the same image given twice keeps its one picture."""
    require_model(models, "lenet_mnist_caffe/lenet_iter_10000.caffemodel")
    srcs = [images_dir / "caffe_cat.jpg", images_dir / "darknet_dog.jpg"]
    for d, src in zip("ab", srcs):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.jpg").write_bytes(src.read_bytes())
    a, b = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"
    code, out, err = run(capsys, "run", "--zoo", "lenet-mnist", "--image", a, b, a, "-o", tmp_path / "out")
    assert code == 0, err
    pics = [tmp_path / "out" / "x_jpg_classify.png", tmp_path / "out" / "x_jpg_2_classify.png"]
    assert sorted((tmp_path / "out").iterdir()) == sorted(pics), out
    # each picture is drawn on its own image (the render keeps the image's height, a panel beside it)
    for pic, src in zip(pics, srcs):
        assert cv2.imread(str(pic)).shape[0] == cv2.imread(str(src)).shape[0]


def test_labels_that_do_not_fit_the_classes_are_noted(models, images_dir, digit_png, tmp_path, capsys):
    """VOC's 20 names on the 80-class COCO YOLO net (every detection named wrongly), or 2 names for
    LeNet's 10 digits, get a note; the model's own labels do not."""
    voc = require_model(models, "labels/voc.names")
    img = images_dir / "darknet_dog.jpg"
    code, out, err = run(capsys, "run", "--zoo", "yolo-fastest-1.1", "--image", img, "--labels", voc,
                         "-o", tmp_path / "a.png")
    assert code == 0, err
    assert "note: 20 labels for the net's 80 classes: the labels may belong to another net" in out
    code, out, err = run(capsys, "run", "--zoo", "yolo-fastest-1.1", "--image", img, "-o", tmp_path / "b.png")
    assert code == 0 and "note:" not in out, (out, err)
    two = tmp_path / "two.txt"
    two.write_text("zero\none\n")
    code, out, err = run(capsys, "run", "--zoo", "lenet-mnist", "--image", digit_png, "--labels", two,
                         "-o", tmp_path / "c.png")
    assert code == 0 and "note: 2 labels for the net's 10 classes" in out and "class 7" in out, (out, err)


def test_run_writes_into_an_existing_out_folder(models, images_dir, digit_png, tmp_path, capsys):
    """-o names a folder with several images (README); running again into the same folder, or
    with one image into an existing folder, writes there instead of 'it is a folder'."""
    require_model(models, "lenet_mnist_caffe/lenet_iter_10000.caffemodel")
    out = tmp_path / "pics"
    imgs = [digit_png, images_dir / "caffe_cat.jpg"]
    for _ in range(2):  # the second run finds the folder the first one made
        code, text, err = run(capsys, "run", "--zoo", "lenet-mnist", "--image", *imgs, "-o", out)
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["caffe_cat_classify.png", "seven_classify.png"]
    (out / "seven_classify.png").unlink()
    code, text, err = run(capsys, "run", "--zoo", "lenet-mnist", "--image", digit_png, "-o", out)
    assert code == 0 and (out / "seven_classify.png").is_file(), err


@pytest.mark.parametrize("flag,value", [("--scale", "nan"), ("--threshold", "inf"), ("--nms", "nan"),
                                        ("--mean", "nan")])
def test_run_refuses_non_finite_numbers(digit_png, capsys, flag, value):
    """float() takes 'nan' and 'inf'; as a scale they made every probability nan, as a threshold
    they kept nothing, without a word."""
    with pytest.raises(SystemExit) as ei:
        cli.main(["run", "--zoo", "lenet-mnist", "--image", str(digit_png), flag, value])
    assert ei.value.code == 2
    assert f"argument {flag}: '{value}' is not a finite number" in capsys.readouterr().err


def test_run_json_has_the_results_as_numbers(models, images_dir, digit_png, tmp_path, capsys):
    """--json PATH: per image the top classes (LeNet's '7' with cv2.dnn's probability) and the
    detections with boxes in image pixels (Yolo-Fastest: cv2.dnn + NMSBoxes, as the detect test)."""
    import json

    js = tmp_path / "r.json"
    code, out, err = run(capsys, "run", "--zoo", "lenet-mnist", "--image", digit_png, "-o", tmp_path / "d.png",
                         "--json", js)
    assert code == 0 and f"wrote {js}" in out, err
    doc = json.loads(js.read_text())
    assert doc["command"][:2] == ["refnet", "run"] and len(doc["results"]) == 1
    r = doc["results"][0]
    assert r["task"] == "classify" and r["image"] == str(digit_png) and r["blob_shape"] == [1, 1, 28, 28]
    proto, weights = (require_model(models, f"lenet_mnist_caffe/{f}") for f in ("lenet.prototxt",
                                                                                  "lenet_iter_10000.caffemodel"))
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    cv.setInput(cv2.dnn.blobFromImage(cv2.imread(str(digit_png), cv2.IMREAD_GRAYSCALE), 1 / 256, (28, 28)))
    prob = cv.forward().reshape(-1)
    assert r["top"][0]["index"] == 7 and abs(r["top"][0]["score"] - prob[7]) < 1e-4 and len(r["top"]) == 5
    # detections: boxes in image pixels, as cv2.dnn + NMSBoxes find them
    img_path = images_dir / "darknet_dog.jpg"
    code, out, err = run(capsys, "run", "--zoo", "yolo-fastest-1.1", "--image", img_path, "-o", tmp_path / "y.png",
                         "--json", js)
    assert code == 0, err
    dets = json.loads(js.read_text())["results"][0]["detections"]
    cfg = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    cv = cv2.dnn.readNetFromDarknet(str(cfg), str(cfg.with_suffix(".weights")))
    cv.setInput(cv2.dnn.blobFromImage(cv2.imread(str(img_path)), 1 / 255, (320, 320), swapRB=True))
    rows = np.concatenate(cv.forward(cv.getUnconnectedOutLayersNames()))
    cls, conf = rows[:, 5:].argmax(1), rows[:, 5:].max(1)
    want = []
    for c in np.unique(cls[conf > 0.5]):
        sel = np.flatnonzero((cls == c) & (conf > 0.5))
        xywh = [[(q[0] - q[2] / 2) * 768, (q[1] - q[3] / 2) * 576, q[2] * 768, q[3] * 576] for q in rows[sel]]
        for k in np.asarray(cv2.dnn.NMSBoxes(xywh, conf[sel].tolist(), 0.5, 0.45)).reshape(-1):
            x, y, w, h = xywh[k]
            want.append((int(c), float(conf[sel[k]]), [x, y, x + w, y + h]))
    assert len(dets) == len(want) == 4
    for c, score, box in want:
        assert any(d["class_id"] == c and abs(d["score"] - score) < 2e-3 and
                   max(abs(a - b) for a, b in zip(d["box"], box)) < 1.0 for d in dets), (c, score, box, dets)
