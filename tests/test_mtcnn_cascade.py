"""The MTCNN cascade (refnet.mtcnn) against a reference written here from the published algorithm
(kpzhang93 detect_face.m / FaceNet align/detect_face.py steps), with cv2.dnn running the three nets.

The reference keeps the published code's shape: arrays of rows (x1, y1, x2, y2, score, dx1..dy2),
1-based pad() arithmetic with dy/edy/dx/edx, transposed MATLAB blobs built with blobFromImages-free
numpy, its own NMS loop. Faces must match in number, boxes within 1 px, scores and landmarks closely.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import require_model

from refnet import cli


def _nms(b, thr, method):
    if b.size == 0:
        return np.zeros(0, int)
    x1, y1, x2, y2, s = b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    idx = list(np.argsort(s, kind="stable"))
    pick = []
    while idx:
        i = idx.pop()
        pick.append(i)
        keep = []
        for j in idx:
            iw = max(0.0, min(x2[i], x2[j]) - max(x1[i], x1[j]) + 1)
            ih = max(0.0, min(y2[i], y2[j]) - max(y1[i], y1[j]) + 1)
            inter = iw * ih
            o = inter / min(area[i], area[j]) if method == "Min" else inter / (area[i] + area[j] - inter)
            if o <= thr:
                keep.append(j)
        idx = keep
    return np.array(pick, int)


def _rerec(b):
    b = b.copy()
    h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    ll = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - ll * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - ll * 0.5
    b[:, 2] = b[:, 0] + ll
    b[:, 3] = b[:, 1] + ll
    return b


def _bbreg(b, reg):
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b = b.copy()
    b[:, 0] += reg[:, 0] * w
    b[:, 1] += reg[:, 1] * h
    b[:, 2] += reg[:, 2] * w
    b[:, 3] += reg[:, 3] * h
    return b


def _pad(b, w, h):
    tmpw = (b[:, 2] - b[:, 0] + 1).astype(int)
    tmph = (b[:, 3] - b[:, 1] + 1).astype(int)
    n = b.shape[0]
    dx, dy, edx, edy = np.ones(n, int), np.ones(n, int), tmpw.copy(), tmph.copy()
    x, y, ex, ey = (b[:, i].astype(int).copy() for i in range(4))
    t = ex > w
    edx[t] = -ex[t] + w + tmpw[t]
    ex[t] = w
    t = ey > h
    edy[t] = -ey[t] + h + tmph[t]
    ey[t] = h
    t = x < 1
    dx[t] = 2 - x[t]
    x[t] = 1
    t = y < 1
    dy[t] = 2 - y[t]
    y[t] = 1
    return dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph


def _blob(imgs):  # N HxWx3 float images -> N,3,W,H (MATLAB's column-major layout)
    return np.ascontiguousarray(((np.stack(imgs).astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 2, 1))


def _stage_input(img, b, size):
    h, w = img.shape[:2]
    dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = _pad(b, w, h)
    ims = []
    for k in range(b.shape[0]):
        tmp = np.zeros((tmph[k], tmpw[k], 3))
        tmp[dy[k] - 1:edy[k], dx[k] - 1:edx[k]] = img[y[k] - 1:ey[k], x[k] - 1:ex[k]]
        ims.append(cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA))
    return _blob(ims)


def reference_detect(img_bgr, nets, minsize=20, threshold=(0.6, 0.7, 0.7), factor=0.709):
    pnet, rnet, onet = nets
    img = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales, k = [], 0
    while minl >= 12:
        scales.append(m * factor ** k)
        minl *= factor
        k += 1
    total = np.empty((0, 9))
    for s in scales:
        im = cv2.resize(img, (int(math.ceil(w * s)), int(math.ceil(h * s))), interpolation=cv2.INTER_AREA)
        pnet.setInput(_blob([im]))
        reg, prob = pnet.forward(["conv4-2", "prob1"])
        imap = prob[0, 1]  # (W', H'): index [X, Y]
        yy, xx = np.where(imap >= threshold[0])  # named as in the published code: yy runs along x
        bb = np.stack([yy, xx], 1)
        q1 = np.fix((2 * bb + 1) / s)
        q2 = np.fix((2 * bb + 12 - 1 + 1) / s)
        boxes = np.hstack([q1, q2, imap[yy, xx][:, None], np.stack([reg[0, c][yy, xx] for c in range(4)], 1)])
        if boxes.size:
            total = np.vstack([total, boxes[_nms(boxes, 0.5, "Union")]])
    if total.shape[0]:
        total = total[_nms(total, 0.7, "Union")]
        regw, regh = total[:, 2] - total[:, 0], total[:, 3] - total[:, 1]
        total = np.stack([total[:, 0] + total[:, 5] * regw, total[:, 1] + total[:, 6] * regh,
                          total[:, 2] + total[:, 7] * regw, total[:, 3] + total[:, 8] * regh, total[:, 4]], 1)
        total = _rerec(total)
        total[:, :4] = np.fix(total[:, :4])
    if total.shape[0]:
        rnet.setInput(_stage_input(img, total, 24))
        reg, prob = rnet.forward(["conv5-2", "prob1"])
        score = prob.reshape(len(total), 2)[:, 1]
        ok = score > threshold[1]
        total = np.hstack([total[ok, :4], score[ok, None]])
        mv = reg.reshape(-1, 4)[ok]
        if total.shape[0]:
            pick = _nms(total, 0.7, "Union")
            total = _rerec(_bbreg(total[pick], mv[pick]))
    points = np.empty((0, 10))
    if total.shape[0]:
        total = np.fix(total)
        onet.setInput(_stage_input(img, total, 48))
        reg, lm, prob = onet.forward(["conv6-2", "conv6-3", "prob1"])
        score = prob.reshape(len(total), 2)[:, 1]
        ok = score > threshold[2]
        points = lm.reshape(-1, 10)[ok]
        total = np.hstack([total[ok, :4], score[ok, None]])
        mv = reg.reshape(-1, 4)[ok]
        bw, bh = total[:, 2] - total[:, 0] + 1, total[:, 3] - total[:, 1] + 1
        points[:, 0:5] = bw[:, None] * points[:, 0:5] + total[:, 0:1] - 1
        points[:, 5:10] = bh[:, None] * points[:, 5:10] + total[:, 1:2] - 1
        if total.shape[0]:
            total = _bbreg(total, mv)
            pick = _nms(total, 0.7, "Min")
            total, points = total[pick], points[pick]
    return total, points


@pytest.mark.parametrize("image", ["voc2007_001150.jpg", "caffe_fish-bike.jpg", "voc2007_004545.jpg",
                                   "voc2007_000542.jpg"])
def test_cascade_matches_the_published_algorithm_on_cv2(models, images_dir, image):
    from refnet.mtcnn import load_cascade

    paths = [str(require_model(models, f"mtcnn_caffe/det{k}.{ext}")) for k in (1, 2, 3)
             for ext in ("prototxt", "caffemodel")]
    nets = [cv2.dnn.readNetFromCaffe(paths[2 * k], paths[2 * k + 1]) for k in range(3)]
    img = cv2.imread(str(images_dir / image))
    ref_boxes, ref_pts = reference_detect(img, nets)
    cascade, _ = load_cascade()
    boxes, scores, pts, extra = cascade.detect(img, precision="float64")
    assert len(boxes) == len(ref_boxes), (image, extra["stage_counts"], len(ref_boxes))
    order = np.argsort(-ref_boxes[:, 4], kind="stable")
    mine = np.argsort(-scores, kind="stable")
    np.testing.assert_allclose(boxes[mine], ref_boxes[order, :4], atol=1.0)
    np.testing.assert_allclose(scores[mine], ref_boxes[order, 4], atol=1e-3)
    np.testing.assert_allclose(pts[mine].transpose(0, 2, 1).reshape(-1, 10), ref_pts[order], atol=1.0)


def test_run_zoo_mtcnn_draws_faces(models, images_dir, tmp_path, capsys):
    require_model(models, "mtcnn_caffe/det3.caffemodel")
    out_png = tmp_path / "f.png"
    assert cli.main(["run", "--zoo", "mtcnn", "--image", str(images_dir / "voc2007_001150.jpg"),
                     "-o", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert "1 face (P-Net" in out and "R-Net" in out and "O-Net" in out
    assert cv2.imread(str(out_png)).shape == (375, 500, 3)
