"""Faster R-CNN VGG16 and R-FCN ResNet-50 (OpenCV's test prototxts, seeded weights from `refnet
generate`) against cv2.dnn 4.x: every layer, the proposals as sets, the new layers' local error
in float64 on cv2's own inputs, the detections (task level), the detect pipeline and the
cv2.dnn-style facade with its two inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import TOL, assert_close, rel_err, require_model

import refnet
from refnet import dnn, two_stage, zoo
from refnet.cli import main
from refnet.ops import registry
from refnet.pipelines import run_task
from refnet.taskcheck import TaskMismatchError, check_task, infer_task

ARCHS = {"faster-rcnn-vgg16": "arch_only/faster_rcnn_vgg16/faster_rcnn_vgg16.prototxt",
         "rfcn-resnet50": "arch_only/rfcn_resnet50/rfcn_pascal_voc_resnet50.prototxt"}
SIZE = (224, 224)  # the prototxts' declared input; (W, H)
NEW_OPS = ("proposal", "roi_pool", "psroi_pool", "detection_output")


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request, models, images_dir, tmp_path_factory):
    """(name, prototxt, caffemodel, blob, im_info, cv2 outputs of every layer) for one photo."""
    name = request.param
    require_model(models, ARCHS[name])
    prefix = tmp_path_factory.mktemp(name) / name
    assert main(["generate", name, "--out", str(prefix)]) == 0
    proto, model = f"{prefix}.prototxt", f"{prefix}.caffemodel"
    img = cv2.imread(str(images_dir / "voc2007_000456.jpg"))
    blob = cv2.dnn.blobFromImage(img, 1.0, SIZE, two_stage.MEAN, False, False)
    info = two_stage.im_info_for(blob)
    theirs = two_stage.cv2_outputs(proto, model, {"data": blob, "im_info": info})
    return name, proto, model, blob, info, theirs


_RUNS: dict = {}


def _run(arch, quirks: str):
    """(net, every layer's float32 output) for this architecture and quirks, computed once."""
    name, proto, model, blob, info, _ = arch
    key = (proto, quirks)
    if key not in _RUNS:
        for k in [k for k in _RUNS if k[0] != proto]:  # one architecture's nets in memory at a time
            del _RUNS[k]
        net = refnet.load_caffe(proto, model, quirks=quirks)
        _RUNS[key] = (net, net.trace({"data": blob, "im_info": info}, precision="float32"))
    return _RUNS[key]


def _ops(net) -> dict[str, str]:
    return {n.name: n.op for n in net.graph.nodes}


def test_every_layer_agrees_with_cv2_under_cv2_quirks(arch):
    name, proto, model, blob, info, theirs = arch
    net, ours = _run(arch, "cv2")
    assert any(r.quirk == "proposal" for r in net.graph.meta["quirks"])
    rows = two_stage.layer_errors(ours, theirs, _ops(net))
    assert len(rows) == len(theirs)
    bad = [(n, op, e, note) for n, op, e, note in rows if not e <= TOL["vs_cv2"]]
    assert not bad, bad
    rois = np.asarray(ours["proposal"])
    live = np.any(rois[:, 1:] != 0, axis=1).sum()
    assert rois.shape == (300, 5) and 20 <= live <= 300  # the calibrated RPN proposes boxes


def _dets(out, blob):
    return two_stage.detections(out, 0.3, blob.shape[2:], (0, 0, blob.shape[3], blob.shape[2]))


def _match(a, b):
    """Greedy same-class matching by IoU: (matched, min IoU, max score diff)."""
    from refnet.kernels import iou

    (ba, sa, ca), (bb, sb, cb) = a, b
    used, ious, ds = set(), [], []
    for i in range(len(ba)):
        cand = [j for j in range(len(bb)) if cb[j] == ca[i] and j not in used]
        if not cand:
            continue
        ov = iou(ba[i:i + 1], bb[cand])[0]
        j = cand[int(np.argmax(ov))]
        if ov.max() > 0.5:
            used.add(j)
            ious.append(float(ov.max()))
            ds.append(abs(sa[i] - sb[j]))
    return len(used), min(ious, default=1.0), max(ds, default=0.0)


@pytest.mark.parametrize("quirks", ["cv2", "none"])
def test_same_detections_as_cv2(arch, quirks):
    """Task level: with quirks="cv2" every detection matches; with py-faster-rcnn's semantics the
    proposals differ (min-size filter, NMS overlap, no padding rows), and the detections that both
    find still match."""
    name, proto, model, blob, info, theirs = arch
    out = _run(arch, quirks)[1]["detection_out"]
    ours, cv = _dets(out, blob), _dets(theirs["detection_out"], blob)
    assert len(cv[0]) >= 3, "the seeded net should detect something at 0.3"
    n, min_iou, dscore = _match(ours, cv)
    if quirks == "cv2":
        assert n == len(ours[0]) == len(cv[0]) and min_iou > 0.999 and dscore < 1e-4
    else:
        assert n >= 0.5 * len(cv[0]) and min_iou > 0.999 and dscore < 1e-3


def test_new_layers_local_error_float64(arch):
    """Each new layer's float64 reference applied to cv2's own inputs of that layer reproduces cv2
    (quirks="cv2"): a local error, independent of how rounding travelled through the backbone."""
    name, proto, model, blob, info, theirs = arch
    net = _run(arch, "cv2")[0]
    feeds = {"data": blob, "im_info": info}
    checked = []
    for node in net.graph.nodes:
        if node.op not in NEW_OPS:
            continue
        xs = [np.asarray(feeds[t] if t in feeds else theirs[t.split(":")[0]], np.float64) for t in node.inputs]
        out = registry.get(node.op).run(node, xs, {}, registry.Ctx("float64"))
        out = out[0] if isinstance(out, list) else out
        if node.op == "proposal":
            m = two_stage.match_roi_sets(out, theirs[node.name], atol=1e-3)
            assert not m["only_a"] and not m["only_b"], (node.name, m)
        elif node.op == "detection_output":
            assert_close(two_stage.sorted_detection_rows(out), two_stage.sorted_detection_rows(theirs[node.name]),
                         1e-5, node.name)
        else:
            assert_close(out, theirs[node.name], 1e-5, node.name)
        checked.append(node.op)
    assert "proposal" in checked and "detection_output" in checked
    assert ("roi_pool" if name.startswith("faster") else "psroi_pool") in checked


def test_py_faster_rcnn_semantics_by_default(arch):
    """quirks="none": the backbone and RPN agree with cv2; the proposals are py-faster-rcnn's (no zero
    padding rows, boxes narrower than min_size * im_info[2] dropped), so the R-CNN layers see fewer
    rows than cv2's 300."""
    name, proto, model, blob, info, theirs = arch
    net, ours = _run(arch, "none")
    assert not net.graph.meta["quirks"]
    for k in ("rpn_cls_prob_reshape", "rpn_bbox_pred"):
        assert rel_err(ours[k], theirs[k]) <= TOL["vs_cv2"], k
    rois = ours["proposal"]
    assert rois.ndim == 2 and rois.shape[1] == 5 and 0 < len(rois) <= 300
    w = rois[:, 3] - rois[:, 1] + 1
    h = rois[:, 4] - rois[:, 2] + 1
    assert np.all(np.minimum(w, h) >= 16 * info[0, 2] - 1e-4)
    assert np.all(rois[:, 0] == 0) and np.all(rois[:, 3] >= rois[:, 1])
    assert theirs["proposal"].shape == (300, 5)  # cv2 pads with zero rows
    assert ours["detection_out"].shape[-1] == 7


@pytest.mark.parametrize("arch", ["rfcn-resnet50"], indirect=True)  # VGG16 takes the same path, 5x slower
def test_pipeline_and_facade(arch, images_dir):
    name, proto, model, blob, info, theirs = arch
    net = _run(arch, "cv2")[0]
    img = cv2.imread(str(images_dir / "voc2007_000456.jpg"))
    entry = zoo.get(name)
    res = run_task(net, img, "detect", entry=entry, size=SIZE, threshold=0.3)
    assert res.data["decoder"] == "frcnn"
    h, w = img.shape[:2]
    want_boxes, want_scores, want_ids = two_stage.detections(theirs["detection_out"], 0.3, blob.shape[2:],
                                                             (0, 0, w, h))
    assert len(res.data["boxes"]) == len(want_boxes) > 0
    np.testing.assert_allclose(res.data["scores"], want_scores, atol=1e-4)
    np.testing.assert_array_equal(res.data["class_ids"], want_ids)
    np.testing.assert_allclose(res.data["boxes"], want_boxes, atol=0.05 * max(w, h) / SIZE[0])
    labels = zoo.read_labels(name)
    assert res.data["labels"][0] == labels[want_ids[0] - 1]
    # without the zoo entry: 20 VOC names for 21 classes -> class 0 is the background
    bare = run_task(net, img, "detect", labels=labels, preprocess=entry.preprocess, size=SIZE, threshold=0.3)
    assert bare.data["labels"] == res.data["labels"] and bare.data["label_offset"] == 1
    # the task check names a two-stage detector as such (it said "DetectionOutput layer (SSD)")
    task, why = infer_task(net)
    assert task == "detect" and "two-stage" in why and "SSD" not in why
    with pytest.raises(TaskMismatchError, match="two-stage detector.*use --task detect"):
        check_task(net, "classify")
    # the cv2.dnn-style facade: two named inputs
    dnn.quirks = "cv2"
    try:
        f = dnn.readNetFromCaffe(proto, model)
    finally:
        dnn.quirks = "none"
    f.setInput(blob, "data")
    f.setInput(info, "im_info")
    out = f.forward()
    assert out.shape == theirs["detection_out"].shape
    assert rel_err(two_stage.sorted_detection_rows(out),
                   two_stage.sorted_detection_rows(theirs["detection_out"])) <= TOL["vs_cv2"]


def test_zoo_entries_and_archive_deriver(tmp_path):
    import io
    import tarfile

    from refnet.fetch import DERIVERS, FetchError

    for name, alias in (("faster-rcnn-vgg16", "faster-rcnn"), ("rfcn-resnet50", "rfcn")):
        e = zoo.get(alias)
        assert e.name == name and e.task == "detect" and e.label_offset == 1 and e.arch_only
        assert e.preprocess.mean == (102.9801, 115.9465, 122.7717) and e.preprocess.size == (800, 600)
        w = next(f for f in e.files if f.role == "weights")
        archive = next(f for f in e.files if f.path == w.derived_from)
        assert archive.url.startswith("https://") and w.derive in DERIVERS
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        data = b"caffemodel bytes"
        info = tarfile.TarInfo("faster_rcnn_models/VGG16_faster_rcnn_final.caffemodel")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    derive = DERIVERS["tar:faster_rcnn_models/VGG16_faster_rcnn_final.caffemodel"]
    assert derive(buf.getvalue()) == b"caffemodel bytes"
    with pytest.raises(FetchError):
        DERIVERS["tar:rfcn_models/resnet50_rfcn_final.caffemodel"](buf.getvalue())
    with pytest.raises(FetchError):
        derive(b"not an archive")
