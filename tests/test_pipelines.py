"""Task pipelines (refnet.pipelines) and pictures (refnet.draw), end to end on real models.

Oracle for every task: cv2.dnn runs the same model on a blob made by cv2.dnn.blobFromImage, and
the test post-processes cv2's outputs itself with cv2/numpy (cv2.dnn.NMSBoxes, np.argmax, loops
written from the model authors' sample code); refnet's pipeline must give the same classes, boxes,
maps and images. Plus facts measured independently (the models manifest's cv2 results, the
PASCAL VOC / Cityscapes colour tables) and the error/NaN contract.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import require_model
from writers.caffe_writer import write_random_caffemodel
from writers.darknet_writer import random_weights
from writers.t7_writer import write_fast_neural_style

import refnet
from refnet import draw, pipelines, zoo
from refnet.archs import deeplab_v3plus
from refnet.errors import ShapeError
from refnet.pipelines import PipelineError, TaskResult, render, run_task
from refnet.zoo import Preprocess


# ---- helpers ---------------------------------------------------------------------------------------
def zoo_model(models, name):
    """(Net, entry) of a zoo model found under REFNET_MODELS (skips/fails like require_model)."""
    entry = zoo.get(name)
    paths = [require_model(models, f.path) for f in entry.main_files]
    return refnet.load(*paths), entry


def digit(d: int, font: int = cv2.FONT_HERSHEY_SIMPLEX) -> np.ndarray:
    """A white digit on black, 28x28 BGR, drawn with cv2.putText (as the models manifest tested LeNet)."""
    img = np.zeros((28, 28), np.uint8)
    cv2.putText(img, str(d), (6, 23), font, 0.9, 255, 2, cv2.LINE_AA)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def cv2_forward(net, blob, names=None):
    net.setInput(blob)
    if names is None:
        return net.forward()
    return dict(zip(names, net.forward(names)))


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match_detections(ours: TaskResult, boxes, scores, classes, box_tol=0.75, score_tol=2e-4, box_rtol=0.0):
    """Each oracle detection (pixel corners, score, class) has exactly one of ours with the same class,
    score within ``score_tol`` and corners within ``box_tol`` px (+ ``box_rtol`` * |corner|), and
    nothing else is there."""
    d = ours.data
    assert len(d["boxes"]) == len(boxes), f"{len(d['boxes'])} detections vs oracle {len(boxes)}: {ours.summary}"
    used = set()
    for b, s, c in zip(boxes, scores, classes):
        hit = [i for i in range(len(d["boxes"])) if i not in used and d["class_ids"][i] == c
               and abs(d["scores"][i] - s) <= score_tol
               and np.all(np.abs(d["boxes"][i] - b) <= box_tol + box_rtol * np.abs(b))]
        assert hit, f"oracle detection class {c} score {s:.4f} box {np.round(b, 1)} not found in\n{ours.summary}"
        used.add(hit[0])


def png_roundtrip(tmp_path, picture, name="pic.png") -> np.ndarray:
    p = pipelines.write_image(tmp_path / name, picture)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert back is not None and back.dtype == np.uint8
    np.testing.assert_array_equal(back, picture)  # PNG is lossless
    return back


# ---- classify ----------------------------------------------------------------------------------------
def test_classify_lenet_digits_top5_match_cv2(models, tmp_path):
    net, entry = zoo_model(models, "lenet-mnist")
    cv = cv2.dnn.readNetFromCaffe(*(str(require_model(models, f.path)) for f in entry.main_files))
    right = 0
    for d in range(10):
        img = digit(d)
        r = run_task(net, img, "classify", entry=entry)
        blob = cv2.dnn.blobFromImage(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 1 / 256, (28, 28))
        ref = cv2_forward(cv, blob).reshape(-1).astype(np.float64)
        top = r.data["top"]
        assert len(top) == 5 and r.data["softmax_applied"] is False
        idx = [i for i, _, _ in top]
        assert idx[0] == int(np.argmax(ref))
        # same top-5 as cv2's probabilities, up to ties within float32 noise
        np.testing.assert_allclose([p for _, _, p in top], ref[idx], atol=1e-5)
        assert min(ref[idx]) >= np.sort(ref)[-5] - 1e-5
        assert all(lab == f"class {i}" for i, lab, _ in top)
        right += idx[0] == d
    assert right >= 8, f"LeNet read {right}/10 rendered digits (manifest: 28/30 over 3 fonts)"
    pic = render(r)
    assert pic.shape == (280, 280 + 340, 3)  # 28 px image enlarged x10 (nearest) + the legend panel
    np.testing.assert_array_equal(pic[:280:10, :280:10], r.image)  # the digit itself, enlarged
    png_roundtrip(tmp_path, pic)


def test_classify_googlenet_random_weights_match_cv2(models, images_dir, tmp_path):
    proto = require_model(models, "arch_only/bvlc_googlenet/deploy.prototxt")
    weights = tmp_path / "googlenet.caffemodel"
    write_random_caffemodel(proto, weights, seed=5)
    entry = zoo.get("bvlc-googlenet")
    img = cv2.imread(str(images_dir / "caffe_cat.jpg"))
    net = refnet.load_caffe(proto, weights)
    r = run_task(net, img, "classify", entry=entry, labels=models / "labels/synset_words.txt", top_k=3)
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    ref = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1.0, (224, 224), (104, 117, 123))).reshape(-1)
    order = np.argsort(-ref)[:3]
    assert [i for i, _, _ in r.data["top"]] == list(order)
    np.testing.assert_allclose([p for _, _, p in r.data["top"]], ref[order], rtol=1e-3, atol=1e-6)
    synsets = (models / "labels/synset_words.txt").read_text().splitlines()
    for i, lab, _ in r.data["top"]:
        assert synsets[i].split(" ", 1)[1] == lab  # the WordNet id is dropped, the names kept
    assert r.blob.shape == (1, 3, 224, 224)
    assert r.summary.count("\n") == 1 + 3


# ---- detect: YOLO (Darknet) ---------------------------------------------------------------------------
def yolo_oracle(outs, img_wh, thr, nms):
    """The OpenCV object_detection.py rule: best class per row, score > thr, NMSBoxes per class."""
    rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs]).astype(np.float64)
    cls = rows[:, 5:].argmax(1)
    conf = rows[np.arange(len(rows)), 5 + cls]
    w, h = img_wh
    boxes, scores, classes = [], [], []
    for c in np.unique(cls[conf > thr]):
        sel = np.flatnonzero((cls == c) & (conf > thr))
        xywh = [[(rows[i, 0] - rows[i, 2] / 2) * w, (rows[i, 1] - rows[i, 3] / 2) * h, rows[i, 2] * w,
                 rows[i, 3] * h] for i in sel]
        for k in np.asarray(cv2.dnn.NMSBoxes(xywh, conf[sel].tolist(), thr, nms)).reshape(-1):
            x, y, bw, bh = xywh[k]
            boxes.append([x, y, x + bw, y + bh])
            scores.append(conf[sel[k]])
            classes.append(c)
    return np.array(boxes).reshape(-1, 4), np.array(scores), np.array(classes)


def test_detect_yolo_fastest_on_dog_matches_cv2(models, images_dir, tmp_path):
    net, entry = zoo_model(models, "yolo-fastest-1.1")
    img = cv2.imread(str(images_dir / "darknet_dog.jpg"))
    r = run_task(net, img, "detect", entry=entry, threshold=0.3)
    cv = cv2.dnn.readNetFromDarknet(*(str(require_model(models, f.path)) for f in entry.main_files))
    names = list(cv.getUnconnectedOutLayersNames())
    outs = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1 / 255, (320, 320), swapRB=True), names)
    boxes, scores, classes = yolo_oracle(list(outs.values()), (768, 576), 0.3, 0.45)
    # end to end through 130 layers refnet and cv2 (both float32) differ by a few 1e-4 in score
    match_detections(r, boxes, scores, classes, box_tol=0.5, score_tol=1e-3)
    assert r.data["decoder"] == "yolo"
    coco = (models / "yolo_fastest_darknet/coco.names").read_text().split("\n")
    assert r.data["labels"] == [coco[c] for c in r.data["class_ids"]]
    # what the models manifest measured with cv2 for this photo (conf > 0.3)
    best = {}
    for lab, s in zip(r.data["labels"], r.data["scores"]):
        best.setdefault(lab, s)
    for lab, s in (("car", 0.897), ("dog", 0.654), ("bicycle", 0.529), ("person", 0.312)):
        assert abs(best[lab] - s) < 2e-3, (lab, best.get(lab))
    assert list(r.data["scores"]) == sorted(r.data["scores"], reverse=True)
    pic = render(r)
    assert pic.shape == img.shape
    b = np.round(r.data["boxes"][0]).astype(int)  # the car: its rectangle is drawn in its colour
    colour = draw.palette(int(r.data["class_ids"].max()) + 1)[r.data["class_ids"][0]]
    assert np.abs(pic[(b[1] + b[3]) // 2, b[0]].astype(int) - colour).max() <= 40
    assert (pic != img).any(axis=2).mean() < 0.2  # boxes and captions, not a repaint
    png_roundtrip(tmp_path, pic)


def test_detect_yolov2_region_random_weights_match_cv2(models, images_dir, tmp_path):
    cfg = require_model(models, "arch_only/darknet_cfg/yolov2-tiny-voc.cfg")
    data, _ = random_weights(cfg.read_text(), seed=4)
    (tmp_path / "w.weights").write_bytes(data)
    # quirks="cv2": cv2's Region layer applies the cfg's thresh (0.6) and NMS 0.4 inside the layer
    net = refnet.load_darknet(cfg, tmp_path / "w.weights", quirks="cv2")
    img = cv2.imread(str(images_dir / "darknet_person.jpg"))
    entry = zoo.get("yolov2-tiny-voc")  # the arch-only entry: preprocessing and VOC labels
    r = run_task(net, img, "detect", entry=entry, size=(160, 160), threshold=0.2, nms_threshold=0.4)
    cv = cv2.dnn.readNetFromDarknet(str(cfg), str(tmp_path / "w.weights"))
    out = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1 / 255, (160, 160), swapRB=True))
    boxes, scores, classes = yolo_oracle([out], (img.shape[1], img.shape[0]), 0.2, 0.4)
    assert len(boxes) > 0, "random weights should still give some boxes above the threshold"
    # random weights make some boxes huge (exp of large logits): compare those relatively
    match_detections(r, boxes, scores, classes, box_tol=0.5, score_tol=1e-4, box_rtol=1e-4)
    voc = (models / "labels/voc.names").read_text().split()
    assert r.data["labels"] == [voc[c] for c in r.data["class_ids"]]


# ---- face -------------------------------------------------------------------------------------------
def test_face_yufacedetectnet_matches_cv2(models, images_dir, tmp_path):
    net, entry = zoo_model(models, "yufacedetectnet-v1")
    img = cv2.imread(str(images_dir / "voc2007_001150.jpg"))
    r = run_task(net, img, "face", entry=entry)
    cv = cv2.dnn.readNetFromCaffe(*(str(require_model(models, f.path)) for f in entry.main_files))
    rows = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1.0, (320, 240), (0, 0, 0))).reshape(-1, 7)
    rows = rows[rows[:, 2] > 0.5]
    h, w = img.shape[:2]
    match_detections(r, rows[:, 3:7] * [w, h, w, h], rows[:, 2], rows[:, 1].astype(int), score_tol=1e-4)
    assert len(rows) == 1 and r.data["labels"] == ["face"] and r.data["decoder"] == "ssd"
    assert "\n1 face (score > 0.5, ssd decoder" in r.summary
    png_roundtrip(tmp_path, render(r))


def ultraface_oracle(boxes, scores, w, h, thr=0.7, iou=0.3):
    """Ultra-Light-Fast's caffe/ultra_face_opencvdnn_inference.py post-processing, with NMSBoxes."""
    priors = []
    for stride, sizes in zip((8, 16, 32, 64), ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))):
        for j in range(math.ceil(240 / stride)):
            for i in range(math.ceil(320 / stride)):
                for s in sizes:
                    priors.append([(i + 0.5) / (320 / stride), (j + 0.5) / (240 / stride), s / 320, s / 240])
    pr = np.clip(np.array(priors), 0, 1)
    loc = boxes.reshape(-1, 4).astype(np.float64)
    cxcy = loc[:, :2] * 0.1 * pr[:, 2:] + pr[:, :2]
    wh = np.exp(loc[:, 2:] * 0.2) * pr[:, 2:]
    face = scores.reshape(-1, 2)[:, 1].astype(np.float64)
    xywh = np.concatenate([(cxcy - wh / 2) * [w, h], wh * [w, h]], axis=1)
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), face.tolist(), thr, iou, top_k=200)).reshape(-1)
    out = xywh[keep]
    return np.concatenate([out[:, :2], out[:, :2] + out[:, 2:]], axis=1), face[keep]


@pytest.mark.parametrize("name, n_faces", [("ultraface-rfb-320", 1), ("ultraface-slim-320", 2)])
def test_face_ultraface_matches_cv2(models, images_dir, name, n_faces):
    net, entry = zoo_model(models, name)
    img = cv2.imread(str(images_dir / "voc2007_001150.jpg"))
    r = run_task(net, img, "face", entry=entry)
    cv = cv2.dnn.readNetFromCaffe(*(str(require_model(models, f.path)) for f in entry.main_files))
    blob = cv2.dnn.blobFromImage(img, 1 / 128, (320, 240), (127, 127, 127), swapRB=True)
    outs = cv2_forward(cv, blob, ["boxes", "scores"])
    boxes, scores = ultraface_oracle(outs["boxes"], outs["scores"], img.shape[1], img.shape[0])
    match_detections(r, boxes, scores, [1] * len(scores), box_tol=0.05, score_tol=1e-4)
    assert len(boxes) == n_faces  # the models manifest: RFB-320 finds 1 face here, slim-320 2
    assert r.data["decoder"] == "ultraface" and set(r.data["labels"]) == {"face"}


def test_ultraface_priors_by_hand():
    p = pipelines.ultraface_priors((320, 240))
    assert p.shape == (40 * 30 * 3 + 20 * 15 * 2 + 10 * 8 * 2 + 5 * 4 * 3, 4) == (4420, 4)
    np.testing.assert_allclose(p[0], [4 / 320, 4 / 240, 10 / 320, 10 / 240])
    np.testing.assert_allclose(p[2], [4 / 320, 4 / 240, 24 / 320, 24 / 240])
    np.testing.assert_allclose(p[3], [12 / 320, 4 / 240, 10 / 320, 10 / 240])  # next cell along x
    np.testing.assert_allclose(p[-1], [4.5 * 64 / 320, 3.5 * 64 / 240, 256 / 320, 1.0])  # 256/240 clipped to 1


def test_face_mtcnn_pnet_proposals(models, images_dir):
    net, entry = zoo_model(models, "mtcnn-det1")
    img = cv2.imread(str(images_dir / "voc2007_001150.jpg"))
    r = run_task(net, img, "face", entry=entry)
    assert r.data["decoder"] == "mtcnn-pnet" and len(r.data["scores"]) > 0
    # the first pyramid level against cv2 on MTCNN's own input convention (RGB, (x-127.5)/128, N,C,W,H)
    s = r.data["scales"][0]
    hs, ws = math.ceil(img.shape[0] * s), math.ceil(img.shape[1] * s)
    blob = cv2.dnn.blobFromImage(img, 0.0078125, (ws, hs), (127.5, 127.5, 127.5), swapRB=True).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(r.blob, blob)
    cv = cv2.dnn.readNetFromCaffe(*(str(require_model(models, f.path)) for f in entry.main_files))
    ref = cv2_forward(cv, np.ascontiguousarray(blob), ["prob1", "conv4-2"])
    for k in ("prob1", "conv4-2"):
        np.testing.assert_allclose(r.outputs[k], ref[k], atol=1e-4)
    # the best proposal is the face yufacedetectnet (another model) finds in this photo
    yu, yu_entry = zoo_model(models, "yufacedetectnet-v1")
    face = run_task(yu, img, "face", entry=yu_entry).data["boxes"][0]
    assert iou(r.data["boxes"][0], face) > 0.5


# ---- segment ----------------------------------------------------------------------------------------
def test_segment_enet_512x256_matches_cv2(models, images_dir, tmp_path):
    net, entry = zoo_model(models, "enet-cityscapes")
    img = cv2.imread(str(images_dir / "voc2007_000456.jpg"))
    r = run_task(net, img, "segment", entry=entry)
    cv = cv2.dnn.readNetFromTorch(str(require_model(models, "enet_cityscapes_torch/model-best.cpu.net")))
    ref = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1 / 255, (512, 256), swapRB=True))
    ref_map = np.argmax(ref[0], axis=0)
    cm = r.data["class_map"]
    assert cm.shape == (256, 512)
    assert np.mean(cm == ref_map) >= 0.999
    classes = (models / "enet_cityscapes_torch/enet-classes.txt").read_text().split()
    assert r.data["class_names"] == classes
    ref_frac = np.bincount(ref_map.ravel(), minlength=20) / ref_map.size
    for lab, f in r.data["fractions"].items():
        assert abs(f - ref_frac[classes.index(lab)]) < 1e-3
    # the models manifest's cv2 measurement on this photo at 512x256
    manifest = {"Road": 0.332, "Truck": 0.193, "Unlabeled": 0.157, "Bus": 0.152, "Vegetation": 0.09}
    assert list(r.data["fractions"])[:5] == list(manifest)
    for lab, f in manifest.items():
        assert abs(r.data["fractions"][lab] - f) < 6e-3
    pic = render(r)
    assert pic.shape[1] == img.shape[1] + 340 and pic.shape[0] >= img.shape[0]
    road = draw.CITYSCAPES_COLORS["road"]
    ys, xs = np.nonzero(cv2.resize(cm, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) == 1)
    k = len(ys) // 2  # a road pixel: the image blended 45/55 with the Cityscapes road colour
    expect = np.rint(0.45 * img[ys[k], xs[k]].astype(float) + 0.55 * np.array(road))
    assert np.abs(pic[ys[k], xs[k]] - expect).max() <= 1
    png_roundtrip(tmp_path, pic)


def test_segment_deeplab_v3plus_matches_cv2(models, images_dir, tmp_path):
    proto, weights = deeplab_v3plus((97, 129), num_classes=21, width=0.35, seed=7).write(tmp_path / "deeplab")
    net = refnet.load_caffe(proto, weights)
    img = cv2.imread(str(images_dir / "voc2007_000542.jpg"))
    pre = Preprocess(1 / 127.5, None, (127.5, 127.5, 127.5), True)  # size None: the declared 129x97
    r = run_task(net, img, "segment", preprocess=pre, labels=models / "labels/voc.names")
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    ref = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1 / 127.5, (129, 97), (127.5, 127.5, 127.5), swapRB=True))
    assert np.mean(r.data["class_map"] == ref[0].argmax(0)) >= 0.999
    voc = (models / "labels/voc.names").read_text().split()
    assert r.data["class_names"] == ["background"] + voc and r.data["label_offset"] == 1
    assert abs(sum(r.data["fractions"].values()) - 1) < 1e-12
    pic = render(r)
    assert pic.shape[1] == img.shape[1] + 340
    png_roundtrip(tmp_path, pic)


# ---- stylize ------------------------------------------------------------------------------------------
def test_stylize_fast_neural_style_matches_cv2(images_dir, tmp_path):
    path = write_fast_neural_style(tmp_path / "style.t7", "instance_norm", seed=2, width=8, final_gain=0.3)
    net = refnet.load_torch(path, quirks="cv2")  # cv2's instance-norm eps rule, so cv2 is an exact oracle
    img = cv2.imread(str(images_dir / "space_shuttle.jpg"))
    r = run_task(net, img, "stylize", size=(64, 48))
    cv = cv2.dnn.readNetFromTorch(str(path))
    mean = (103.939, 116.779, 123.68)
    out = cv2_forward(cv, cv2.dnn.blobFromImage(img, 1.0, (64, 48), mean, swapRB=False, crop=False))
    ref = out.reshape(3, 48, 64).astype(np.float64)  # jcjohnson's OpenCV sample: add the mean back
    for c in range(3):
        ref[c] += mean[c]
    ref = np.clip(ref.transpose(1, 2, 0), 0, 255)
    st = r.data["stylized"]
    assert st.shape == (48, 64, 3) and st.dtype == np.uint8
    assert np.abs(st.astype(float) - ref).max() <= 0.51
    assert 5 < ref.std() and 0 <= r.data["clipped_fraction"] < 1
    pic = render(r)
    np.testing.assert_array_equal(pic, st)
    png_roundtrip(tmp_path, pic)


def test_stylized_image_by_hand():
    out = np.array([-103.939, 0.0, 200.0, np.nan], np.float32).reshape(1, 1, 2, 2).repeat(3, axis=1)
    u8, f = pipelines.stylized_image(out, Preprocess(1.0, None, pipelines.FNS_MEAN, False))
    assert u8[0, 0, 0] == 0 and u8[0, 1, 0] == 104 and u8[0, 1, 2] == 124 and u8[1, 0, 1] == 255
    assert u8[1, 1].tolist() == [0, 0, 0] and np.isnan(f[1, 1]).all()  # NaN stays NaN in the float image
    # an RGB blob scaled by 1/255 comes back as BGR 0..255
    rgb = np.array([10, 20, 30], np.float32).reshape(1, 3, 1, 1) / 255
    u8, _ = pipelines.stylized_image(rgb, Preprocess(1 / 255, None, (0, 0, 0), True))
    assert u8[0, 0].tolist() == [30, 20, 10]


# ---- building blocks, preprocessing and NaN ----------------------------------------------------------
def test_top_classes_ties_and_nan():
    top = pipelines.top_classes(np.array([0.1, np.nan, 0.4, 0.4, 0.1]), 4, ["a", "b", "c", "d", "e"])
    assert [i for i, _, _ in top] == [2, 3, 0, 4]  # ties: lower index first; NaN ranks last
    assert top[0][1] == "c"
    assert pipelines.top_classes(np.full(3, np.nan), 2)[0][0] in (0, 1, 2)
    with pytest.raises(ValueError, match="top_k"):
        pipelines.top_classes(np.ones(3), 0)


def test_ssd_detections_threshold_and_nan():
    rows = np.array([[0, 1, 0.9, 0.1, 0.1, 0.5, 0.5], [0, 2, 0.5, 0, 0, 1, 1], [0, 1, np.nan, 0, 0, 1, 1],
                     [0, 3, 0.7, np.nan, 0, 1, 1]]).reshape(1, 1, 4, 7)
    b, s, c = pipelines.ssd_detections(rows, 0.5)  # a score equal to the threshold is dropped
    assert c.tolist() == [1, 3] and s.tolist() == [0.9, 0.7] and np.isnan(b[1, 0])
    with pytest.raises(ShapeError):
        pipelines.ssd_detections(np.zeros((1, 1, 4, 6)), 0.5)


def test_ultraface_decode_nan_and_shapes():
    pri = pipelines.ultraface_priors((320, 240))
    loc = np.zeros((1, len(pri), 4))
    sc = np.zeros((1, len(pri), 2))
    sc[0, 100, 1] = 0.9
    sc[0, 101, 1] = np.nan  # a NaN score is never a detection
    b, s, c = pipelines.ultraface_decode(loc, sc, (320, 240))
    assert s.tolist() == [0.9] and c.tolist() == [1]
    cx, cy, w, h = pri[100]  # zero offsets decode to the prior itself, in corner form
    np.testing.assert_allclose(b[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    loc[0, 102] = np.nan
    sc[0, 102, 1] = 0.95
    b, s, c = pipelines.ultraface_decode(loc, sc, (320, 240))
    # a NaN box comes out as NaN; its NaN overlaps suppress the rest (cv2.dnn.NMSBoxes' `overlap <= thr` rule)
    assert s.tolist() == [0.95] and np.isnan(b[0]).all()
    with pytest.raises(ShapeError, match="priors"):
        pipelines.ultraface_decode(loc[:, :-1], sc[:, :-1], (320, 240))


def test_blob_region_matches_cv2_crop():
    img = np.tile(np.arange(250, dtype=np.uint8)[None, :], (100, 1))  # pixel value = its column
    img = cv2.merge([img, img, img])
    for size in ((64, 64), (50, 80)):
        pre = Preprocess(1.0, size, (0, 0, 0), False, crop=True)
        x0, y0, x1, y1 = pipelines.blob_region(img.shape[:2], pre)
        blob = cv2.dnn.blobFromImage(img, 1.0, size, crop=True)
        first, last = float(blob[0, 0, 0, 0]), float(blob[0, 0, 0, -1])
        f = size[0] / (x1 - x0)
        # bilinear sampling at pixel centres: blob column i shows image column x0 + (i + 0.5) / f - 0.5
        assert abs(first - (x0 + 0.5 / f - 0.5)) <= 1.0
        assert abs(last - (x0 + (size[0] - 0.5) / f - 0.5)) <= 1.0
        assert 0 <= y0 < y1 <= 100 + 1e-4 and 0 <= x0 < x1 <= 250 + 1e-4
    assert pipelines.blob_region((100, 250), Preprocess(1.0, (64, 64))) == (0.0, 0.0, 250.0, 100.0)


def test_default_preprocess(models):
    net, _ = zoo_model(models, "lenet-mnist")
    p = pipelines.default_preprocess(net, "classify")
    assert p.size == (28, 28) and p.gray and p.scale == 1.0 and not p.swap_rb
    dk = refnet.load_darknet(require_model(models, "arch_only/darknet_cfg/yolov3-tiny.cfg"), "zeros")
    p = pipelines.default_preprocess(dk, "detect")
    assert p.size == (416, 416) and p.swap_rb and p.scale == 1 / 255  # Darknet: RGB in [0, 1]
    assert pipelines.default_preprocess(net, "stylize").mean == pipelines.FNS_MEAN


def test_entry_for_files(models):
    e, root = pipelines.entry_for_files([models / "yolo_fastest_darknet/yolo-fastest-1.1.cfg",
                                         models / "yolo_fastest_darknet/yolo-fastest-1.1.weights"])
    assert e.name == "yolo-fastest-1.1" and root == models.resolve()
    assert pipelines.entry_for_files(["/tmp/some/other.cfg"]) == (None, None)


class NaNNet:
    """A stand-in for refnet.Net whose single output is all NaN (the pipelines only use this surface)."""

    def __init__(self, op, shape):
        self.op, self.shape = op, shape
        self.input_names, self.output_names = ("data",), ("out",)
        self.input_shapes = {"data": (1, 3, 8, 8)}
        node = type("N", (), {"op": op, "attrs": {}})()
        self.graph = type("G", (), {"framework": "caffe", "source": "nan.prototxt", "node": lambda _, n: node})()

    def forward(self, x, outputs=None, precision="float32"):
        return {"out": np.full(self.shape, np.nan, np.float32)}


@pytest.mark.parametrize("task, op, shape", [
    ("classify", "softmax", (1, 10)), ("classify", "linear", (1, 10)), ("detect", "detection_output", (1, 1, 5, 7)),
    ("segment", "conv", (1, 4, 8, 8)), ("stylize", "conv", (1, 3, 8, 8))])
def test_nan_outputs_give_nan_results_not_crashes(task, op, shape):
    img = np.full((16, 16, 3), 128, np.uint8)
    r = run_task(NaNNet(op, shape), img, task)
    pic = render(r)
    assert pic.dtype == np.uint8 and pic.ndim == 3
    if task == "classify":
        assert all(np.isnan(p) for _, _, p in r.data["top"]) and "nan" in r.summary
    elif task == "detect":
        assert len(r.data["boxes"]) == 0 and (pic == img).all()  # NaN scores are never above a threshold
    elif task == "segment":
        assert r.data["class_map"].shape == (8, 8)  # argmax of NaN: the first NaN, as numpy defines it
    else:
        assert np.isnan(r.data["stylized_float"]).all() and (r.data["stylized"] == 0).all()


# ---- errors --------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(models):
    net, entry = zoo_model(models, "lenet-mnist")
    img = digit(4)
    with pytest.raises(TypeError, match="image_bgr must be uint8"):
        run_task(net, img.astype(np.float32), "classify", entry=entry)
    with pytest.raises(ShapeError, match=r"image_bgr.*\(2, 2, 2, 2\)"):
        run_task(net, np.zeros((2, 2, 2, 2), np.uint8), "classify", entry=entry)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        run_task(net, [[0]], "classify", entry=entry)
    with pytest.raises(PipelineError, match="unknown task 'sing'.*classify, detect"):
        run_task(net, img, "sing", entry=entry)
    with pytest.raises(TypeError, match="unknown option.*treshold"):
        run_task(net, img, "classify", entry=entry, treshold=0.5)
    with pytest.raises(ValueError, match="precision"):
        run_task(net, img, "classify", entry=entry, precision="float16")
    with pytest.raises(PipelineError, match="cannot decode detections.*prob"):
        run_task(net, img, "detect", entry=entry)
    # a 10-way softmax per image is a classifier: segment/stylize are refused before running (refnet.taskcheck)
    with pytest.raises(PipelineError, match=r"--task segment does not fit.*10-way softmax.*use --task classify"):
        run_task(net, img, "segment", entry=entry)
    with pytest.raises(PipelineError, match=r"--task stylize does not fit.*classify net"):
        run_task(net, img, "stylize", entry=entry)
    with pytest.raises(FileNotFoundError, match="labels file"):
        run_task(net, img, "classify", entry=entry, labels="/nonexistent/labels.txt")
    # gray and BGRA pictures are accepted and kept as BGR
    r = run_task(net, img[:, :, 0], "classify", entry=entry, precision="float64")
    assert r.image.shape == (28, 28, 3) and r.data["top"][0][0] == 4


def test_read_and_write_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        pipelines.read_image(tmp_path / "none.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(PipelineError, match="cannot decode image"):
        pipelines.read_image(tmp_path / "bad.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(PipelineError, match="cannot decode image"):
        pipelines.read_image(tmp_path / "empty.png")
    with pytest.raises(PipelineError, match="cannot write"):
        pipelines.write_image(tmp_path / "no" / "dir.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(PipelineError, match="does not write"):
        pipelines.write_image(tmp_path / "x.notaformat", np.zeros((4, 4, 3), np.uint8))


# ---- drawing -------------------------------------------------------------------------------------------
def test_colour_tables_against_published_values():
    voc = draw.voc_colormap(21)  # PASCAL VOC devkit (RGB): 1 aeroplane (128,0,0), 15 person (192,128,128)
    assert voc[0].tolist() == [0, 0, 0] and voc[1].tolist() == [0, 0, 128] and voc[15].tolist() == [128, 128, 192]
    assert voc[20].tolist() == [128, 64, 0]  # tvmonitor (0, 64, 128) RGB
    assert draw.CITYSCAPES_COLORS["road"] == (128, 64, 128) and draw.CITYSCAPES_COLORS["car"] == (142, 0, 0)
    assert draw.class_colors(["Road", "Car"], 2).tolist() == [[128, 64, 128], [142, 0, 0]]
    assert draw.class_colors(["background", "person"], 2).tolist() == [[0, 0, 0], [128, 128, 192]]
    p = draw.palette(24)
    assert p.shape == (24, 3) and len({tuple(c) for c in p}) == 24
    assert draw.class_colors(["x", "y"], 2).tolist() == draw.palette(2).tolist()


def test_draw_boxes_pixels_and_nan():
    img = np.full((100, 200, 3), 50, np.uint8)
    boxes = np.array([[20, 30, 120, 90], [np.nan, 0, 10, 10], [150, -20, 400, 60]])
    out = draw.draw_boxes(img, boxes, ["a 0.9", "nan box", "c 0.5"], [(0, 0, 255), (0, 255, 0), (255, 0, 0)], 2)
    assert (img == 50).all()  # input untouched
    assert out[60, 20].tolist() == [0, 0, 255] and out[60, 120].tolist() == [0, 0, 255]  # left/right edges
    assert out[59, 199].tolist() == [255, 0, 0]  # the box leaving the image is clipped to its border
    assert not (out == [0, 255, 0]).all(axis=2).any()  # the NaN box is skipped
    assert (out[60, 40:100] == 50).all()  # the inside of a box is left alone
    with pytest.raises(ShapeError, match="one text and one colour"):
        draw.draw_boxes(img, boxes, ["a"], [(0, 0, 0)] * 3)


def test_overlay_and_legend():
    img = np.full((4, 6, 3), 100, np.uint8)
    cm = np.array([[0, 1, 7], [1, -1, 0]])
    out = draw.overlay_classes(img, cm, np.array([[0, 0, 0], [200, 100, 0]], np.uint8), alpha=0.5)
    assert out[0, 0].tolist() == [50, 50, 50]  # class 0, black: halfway
    assert out[0, 2].tolist() == [150, 100, 50]  # class 1
    assert out[0, 4].tolist() == [100, 100, 100] and out[3, 2].tolist() == [100, 100, 100]  # ids 7, -1: untouched
    panel = draw.legend_panel([("x" * 200, (0, 0, 255), 0.5), ("b", None, np.nan)], 200, 30, "title")
    assert panel.shape == (30, 200, 3)  # long text is cut, rows that do not fit are summarised
    assert draw.attach_panel(img, panel).shape == (30, 206, 3)
    assert draw.upscale_small(img, 12).shape == (12, 18, 3)
