"""refnet.compare: report numbers against values computed independently (by hand, or with numpy on
the arrays cv2 and refnet produce), known cv2 deviations attributed instead of failing (a Caffe LRN
with k != 1, a Darknet net with tiny BatchNorm variances and a YOLO head), task-level agreement per
task kind, and the plot."""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np
import pytest
from conftest import perturb_cv2
from writers.darknet_writer import cfg_text, weights_bytes

import refnet
from refnet.archs import CaffeNetBuilder
from refnet.crosscheck.metrics import diff_stats
from refnet.crosscheck.orchestrator import compare
from refnet.crosscheck.report import Report
from refnet.crosscheck.tasks import (
    argmax_agreement,
    image_agreement,
    match_detections,
    ssd_detections,
    topk_agreement,
)


# ---- diff_stats by hand --------------------------------------------------------------------------
def test_diff_stats_hand_computed():
    ref = np.array([[1.0, -4.0], [2.0, 0.5]])
    a = np.array([[1.5, -4.0], [2.0, 0.25]])
    max_abs, max_rel, mean_abs, cos, worst = diff_stats(a, ref)
    assert max_abs == 0.5 and worst == (0, 0)
    assert max_rel == 0.5 / 4.0
    assert mean_abs == (0.5 + 0 + 0 + 0.25) / 4
    want_cos = (1.5 * 1 + 16 + 4 + 0.125) / (math.sqrt(1.5**2 + 16 + 4 + 0.0625) * math.sqrt(1 + 16 + 4 + 0.25))
    assert abs(cos - want_cos) < 1e-15


def test_diff_stats_nan_and_shapes():
    ref = np.array([1.0, np.nan, 3.0])
    a = np.array([1.0, np.nan, 2.0])
    max_abs, max_rel, _, _, worst = diff_stats(a, ref)
    assert max_abs == 1.0 and worst == (2,) and max_rel == 1.0 / 3.0
    # NaN where the reference is finite is the worst possible difference
    max_abs, _, _, _, worst = diff_stats(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    assert max_abs == math.inf and worst == (1,)
    # same size, different layout (cv2 flattens some outputs): compared elementwise
    assert diff_stats(np.arange(6.0).reshape(2, 3), np.arange(6.0))[0] == 0.0
    assert math.isnan(diff_stats(np.zeros(3), np.zeros(4))[1])
    # an all-NaN candidate does not crash and is infinitely far
    assert diff_stats(np.full((2, 2), np.nan), np.ones((2, 2)))[0] == math.inf


# ---- a small Caffe net: report numbers vs numpy on the arrays themselves --------------------------------
def _small_caffe(tmp_path, lrn_k: float | None = None, seed: int = 3):
    b = CaffeNetBuilder("small", (1, 3, 23, 19), seed=seed)
    x = b.conv("conv1", "data", 8, 3)
    b.relu("relu1", x)
    x = b.lrn("norm1", x, local_size=3, alpha=1e-1, beta=0.75, k=lrn_k) if lrn_k is not None else x
    x = b.pool("pool1", x, "MAX", 3, 2)
    x = b.conv("conv2", x, 6, 3, stride=2)
    x = b.inner_product("fc", x, 5)
    b.softmax("prob", x)
    return b.write(tmp_path / "small")


@pytest.fixture
def blob():
    return np.random.default_rng(7).uniform(-1, 1, (1, 3, 23, 19)).astype(np.float32)


def test_report_numbers_equal_numpy_on_the_arrays(tmp_path, blob):
    proto, model = _small_caffe(tmp_path)
    net = refnet.load_caffe(proto, model)
    rep = compare(net, blob, winograd=False)
    # the oracle: cv2's own per-layer outputs and refnet's trace, compared with plain numpy
    ref = net.trace(blob, precision="float64")
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.enableFusion(False)
    if hasattr(cv, "enableWinograd"):
        cv.enableWinograd(False)  # the "cv2" comparison is Winograd off
    cv.setInput(blob)
    names = [n for n in net.layer_names if n in ref]
    outs = dict(zip(names, cv.forward(names)))
    rows = {r.layer: r for r in rep.comparisons["cv2"].rows}
    assert set(rows) == set(names)
    for n in names:
        a = outs[n].astype(np.float64).reshape(ref[n].shape)
        d = np.abs(a - ref[n])
        r = rows[n]
        assert r.max_abs == pytest.approx(d.max(), rel=1e-12, abs=1e-300)
        assert r.max_rel == pytest.approx(d.max() / np.abs(ref[n]).max(), rel=1e-12, abs=1e-300)
        assert r.mean_abs == pytest.approx(d.mean(), rel=1e-9, abs=1e-300)
        cos = np.dot(a.ravel(), ref[n].ravel()) / (np.linalg.norm(a) * np.linalg.norm(ref[n]))
        assert r.cosine == pytest.approx(cos, rel=1e-12)
        assert d[r.worst] == d.max()
        assert r.status == "ok" and r.max_rel <= 1e-4
    assert rep.verdict == "AGREE" and rep.verdict_code == "agree"
    assert [c for c in rep.comparisons] == ["refnet_float32", "cv2", "cv2_vs_float32", "cv2_fused"]
    assert rep.comparisons["cv2_fused"].scope == "outputs" and [r.layer for r in rep.comparisons["cv2_fused"].rows] \
        == ["prob"]
    line = rep.summary_line()
    assert line.startswith("small.prototxt: AGREE | worst vs cv2 f64") and "classify agree" in line


def test_winograd_comparisons_where_cv2_has_it(tmp_path, blob):
    proto, model = _small_caffe(tmp_path)
    rep = compare(refnet.load_caffe(proto, model), blob)
    if hasattr(cv2.dnn.Net, "enableWinograd"):
        assert {"cv2_winograd", "cv2_fused_nowinograd"} <= set(rep.comparisons)
        assert "Winograd on" in rep.comparisons["cv2_winograd"].candidate


def test_a_real_difference_is_named_with_its_first_layer(tmp_path, blob, monkeypatch):
    """Perturb cv2's conv2 output: the verdict names conv2 (the first bad layer), not a later one."""
    proto, model = _small_caffe(tmp_path)
    perturb_cv2(monkeypatch, ["conv2", "fc", "prob"], lambda v: v * np.float32(1.01))
    rep = compare(refnet.load_caffe(proto, model), blob, winograd=False)
    assert rep.verdict_code == "differ"
    assert rep.verdict.startswith("DIFFER at conv2 (cv2 ")
    assert rep.first_bad_layer == "conv2" and rep.comparisons["cv2"].first_bad == "conv2"
    row = next(r for r in rep.comparisons["cv2"].rows if r.layer == "conv2")
    assert row.status == "differ" and row.max_rel == pytest.approx(0.01, rel=1e-3)


# ---- known cv2 deviations: attributed, not failures ------------------------------------------------------
def test_caffe_lrn_k_is_a_known_cv2_deviation(tmp_path, blob):
    proto, model = _small_caffe(tmp_path, lrn_k=2.0)
    net = refnet.load_caffe(proto, model)
    rep = compare(net, blob, winograd=False)
    assert rep.verdict_code == "agree_known", rep.verdict
    assert rep.verdict.startswith("AGREE with known deviations: lrn_k (norm1)")
    (dev,) = rep.known_deviations
    assert dev["quirk"] == "lrn_k" and dev["layers"] == ["norm1"] and "ignores Caffe's k" in dev["description"]
    rows = {r.layer: r for r in rep.comparisons["cv2"].rows}
    assert rows["conv1"].status == "ok" and rows["norm1"].status == "known_deviation"
    assert rows["norm1"].max_rel > 1e-2, "k=2 vs k=1 is a large difference"
    assert rows["norm1"].max_rel_vs_quirks <= 1e-4
    assert rows["prob"].status == "known_deviation" and rows["prob"].origin == "norm1"
    # the same numbers without the attribution step are a plain difference at the LRN
    plain = compare(net, blob, winograd=False, attribute_quirks=False)
    assert plain.verdict.startswith("DIFFER at norm1")


def test_caffe_lrn_with_k_1_is_not_a_deviation(tmp_path, blob):
    proto, model = _small_caffe(tmp_path, lrn_k=1.0)
    rep = compare(refnet.load_caffe(proto, model), blob, winograd=False, cv2_fusion=False)
    assert rep.verdict == "AGREE" and not rep.known_deviations


def _tiny_darknet(tmp_path):
    """conv+BN (variances ~1e-6, so BatchNorm's eps matters) + leaky, a 1x1 head and a [yolo] layer."""
    cfg = cfg_text([("net", {"width": 8, "height": 8, "channels": 3}),
                    ("convolutional", {"filters": 4, "size": 3, "pad": 1, "batch_normalize": 1, "activation": "leaky"}),
                    ("convolutional", {"filters": 14, "size": 1, "activation": "linear"}),
                    ("yolo", {"mask": "0,1", "anchors": "2,3, 4,5", "classes": 2, "num": 2})])
    r = np.random.default_rng(11)
    blobs = [r.normal(0, 0.1, 4), r.uniform(0.5, 1.5, 4), r.normal(0, 1e-3, 4), r.uniform(1e-6, 4e-6, 4),
             r.normal(0, 0.3, (4, 3, 3, 3)) * 1e-3, r.normal(0, 0.1, 14), r.normal(0, 0.5, (14, 4))]
    (tmp_path / "t.cfg").write_text(cfg)
    (tmp_path / "t.weights").write_bytes(weights_bytes(blobs))
    return tmp_path / "t.cfg", tmp_path / "t.weights"


def test_darknet_bn_eps_and_yolo_threshold_are_known_deviations(tmp_path):
    cfg, weights = _tiny_darknet(tmp_path)
    net = refnet.load_darknet(cfg, weights)
    x = np.random.default_rng(4).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    rep = compare(net, x, winograd=False)
    assert rep.verdict_code == "agree_known", rep.verdict
    quirks = {d["quirk"]: d for d in rep.known_deviations}
    # judged by local errors: only the BatchNorm computes differently given cv2's own inputs; the
    # [yolo] layer's output on cv2's own inputs equals Darknet's here (no class score <= thresh)
    assert set(quirks) == {"bn_eps"} and quirks["bn_eps"]["layers"] == ["bn_0"]
    rows = {r.layer: r for r in rep.comparisons["cv2"].rows}
    assert rows["conv_0"].status == "ok"
    assert rows["bn_0"].status == "known_deviation" and rows["bn_0"].max_rel > 1e-2
    assert rows["bn_0"].local_max_rel > 1e-2 and rows["bn_0"].local_vs_quirks <= 1e-6
    assert rows["leaky_1"].origin == "bn_0" and rows["leaky_1"].local_max_rel <= 1e-6
    assert rows["yolo_2"].status == "known_deviation" and rows["yolo_2"].origin == "bn_0"
    assert rows["yolo_2"].local_max_rel <= 1e-6 and rows["yolo_2"].max_rel_vs_quirks <= 1e-6
    assert "bn_eps" in rep.verdict
    assert any(t.kind == "detect:yolo" for t in rep.tasks)


# ---- task-level agreement, per task kind -------------------------------------------------------------
def test_topk_agreement_classify():
    ref = np.array([[0.1, 0.6, 0.2, 0.1]])
    same = topk_agreement(ref + np.array([[0.01, -0.01, 0.0, 0.0]]), ref, k=2, labels=["a", "b", "c", "d"])
    assert same["agree"] and same["top1_same"] == [True] and same["topk_overlap"] == [2]
    assert same["reference_topk"][0][0] == {"class": 1, "label": "b", "score": 0.6}
    flipped = topk_agreement(np.array([[0.1, 0.2, 0.6, 0.1]]), ref, k=2)
    assert not flipped["agree"] and flipped["top1_same"] == [False] and flipped["topk_overlap"] == [2]
    tie = np.array([[0.3, 0.30000001, 0.2, 0.2]])
    assert topk_agreement(tie[:, [1, 0, 2, 3]], tie, tie_tol=1e-6)["agree"], "a near-tie may flip"
    assert not topk_agreement(tie[:, [1, 0, 2, 3]], tie, tie_tol=0.0)["agree"]
    # label offset (index 0 = background) and Caffe's synset lines
    off = topk_agreement(ref, ref, k=1, labels=["n04266014 space shuttle", "b", "c"], label_offset=1)
    assert off["reference_topk"][0][0]["label"] == "space shuttle"


def test_match_detections_by_iou():
    rb = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]])
    cb = np.array([[20.0, 20.0, 30.0, 40.0], [0.0, 0.0, 10.0, 9.0]])  # reordered, one shrunk: IoU 0.9
    m = match_detections(rb, [0.9, 0.8], [1, 2], cb, [0.8, 0.88], [2, 1])
    assert m["agree"] and m["matched"] == 2 and m["min_iou"] == pytest.approx(0.9)
    assert m["max_score_diff"] == pytest.approx(0.02)
    wrong_class = match_detections(rb, [0.9, 0.8], [1, 2], cb, [0.8, 0.88], [2, 3])
    assert not wrong_class["agree"] and wrong_class["unmatched_reference"] == [0]
    # a detection right at the threshold may be on either side of it: not a disagreement
    extra = match_detections(rb[:1], [0.9], [1], np.vstack([rb[:1], rb[1:]]), [0.9, 0.5004], [1, 2], threshold=0.5)
    assert extra["agree"] and extra["unmatched_candidate"] == [1]
    shifted = match_detections(rb[:1], [0.9], [1], rb[:1] + [0, 0, 0, -3.0], [0.9], [1])
    assert not shifted["agree"] and shifted["min_iou"] == pytest.approx(0.7), "IoU 0.7 < 0.9"


def test_ssd_rows_parse():
    out = np.array([[[[0, 3, 0.9, 0.1, 0.2, 0.3, 0.4], [0, 1, 0.0, 0, 0, 0, 0], [0, -1, 0.5, 0, 0, 1, 1]]]])
    boxes, scores, classes = ssd_detections(out)
    assert boxes.tolist() == [[0.1, 0.2, 0.3, 0.4]] and scores.tolist() == [0.9] and classes.tolist() == [3]


def test_argmax_agreement_segment():
    ref = np.zeros((1, 3, 2, 2))
    ref[0, 0] = [[1, 0], [0, 0]]
    ref[0, 1] = [[0, 1], [0, 0]]
    ref[0, 2] = [[0, 0], [1, 0.5]]
    m = argmax_agreement(ref, ref)
    assert m["agree"] and m["pixel_agreement"] == 1.0 and m["classes_present"] == [0, 1, 2]
    cand = ref.copy()
    cand[0, 0, 0, 0] = -1  # pixel (0, 0) now argmax 1 or 2
    m = argmax_agreement(cand, ref)
    assert not m["agree"] and m["differing"] == 1 and m["pixel_agreement"] == 0.75


def test_image_agreement_stylize():
    ref = np.linspace(0, 255, 48).reshape(1, 3, 4, 4)
    cand = ref + 0.01
    m = image_agreement(cand, ref)
    assert m["psnr"] == pytest.approx(10 * math.log10(255.0**2 / 1e-4)) and m["agree"]
    assert not image_agreement(ref + 5.0, ref)["agree"]


def test_compare_picks_the_task_kind(tmp_path, blob):
    from refnet.archs import deeplab_v3plus, mobilenet_ssd

    proto, model = _small_caffe(tmp_path)
    rep = compare(refnet.load_caffe(proto, model), blob, winograd=False, cv2_fusion=False)
    assert {t.kind for t in rep.tasks} == {"classify"} and {t.candidate for t in rep.tasks} == {
        "refnet_float32", "cv2"}
    p, m = mobilenet_ssd((300, 300), width=0.25, seed=2).write(tmp_path / "ssd")
    x = refnet.blob_from_image(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8),
                               0.007843, None, 127.5)
    rep = compare(refnet.load_caffe(p, m), x, winograd=False, cv2_fusion=False, precisions=("float64",))
    (t,) = rep.tasks
    assert t.kind == "detect:ssd" and t.candidate == "cv2" and t.agree and t.metrics["matched"] > 0
    p, m = deeplab_v3plus((33, 33), num_classes=5, width=0.25, seed=1).write(tmp_path / "seg")
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 33, 33)).astype(np.float32)
    rep = compare(refnet.load_caffe(p, m), x, winograd=False, cv2_fusion=False, precisions=("float64",),
                  task="segment")
    assert [t.kind for t in rep.tasks] == ["segment"] and rep.tasks[0].metrics["pixels"] == 33 * 33


# ---- the plot ------------------------------------------------------------------------------------------
def test_plot_png_decodes(tmp_path, blob):
    from refnet.crosscheck.plot import plot_report

    proto, model = _small_caffe(tmp_path, lrn_k=2.0)
    rep = compare(refnet.load_caffe(proto, model), blob)
    path = plot_report(rep, tmp_path / "p.png", dpi=50, size=(8, 4))
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (200, 400, 3)
    assert img.std() > 10, "something is drawn"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    from refnet.crosscheck.plot import PlotUnavailableError, plot_report
    from refnet.errors import RefnetError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotUnavailableError, match=r"pip install 'refnet\[plot\]'") as e:
        plot_report(Report("m", (1,), {}), tmp_path / "x.png")
    assert isinstance(e.value, RefnetError)


# ---- near-tie argmax (max pooling indices feeding a MaxUnpool) ------------------------------------------
def test_near_tie_windows_are_recognised():
    from refnet.crosscheck.ties import over_in_tie_windows as _over_in_tie_windows
    from refnet.crosscheck.ties import tie_sources as _tie_sources
    from refnet.graph import Graph, Node
    from refnet.net import Net

    geo = {"kernel": (2, 2), "stride": (2, 2), "pad": (0, 0, 0, 0)}
    g = Graph([Node("id", "identity", ("data",), ("id",)),
               Node("pool", "max_pool", ("id",), ("pool", "pool:1"), dict(geo, ceil_mode=False)),
               Node("unpool", "max_unpool", ("pool", "pool:1", "id"), ("unpool",), geo)],
              ("data",), {"data": (1, 1, 4, 4)})
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, :2, :2] = [[5.0, 5.0 - 1e-9], [1.0, 2.0]]  # top-left window: two maxima 1e-9 apart
    net = Net(g)
    ref = net.trace(x, precision="float64")
    ties = _tie_sources(net, ref, 1e-4)
    assert list(ties) == ["unpool"] and ties["unpool"].tolist() == [[[[True, False], [False, False]]]]
    # another implementation picks the other maximum: the value moves inside the tied window -> a tie
    moved = ref["unpool"].copy()
    moved[0, 0, 0, :2] = [0.0, 5.0]
    over = np.abs(moved - ref["unpool"]) > 1e-4 * np.abs(ref["unpool"]).max()
    assert _over_in_tie_windows(over, ties["unpool"])
    # a value moved in a window without a tie is a real difference
    moved2 = ref["unpool"].copy()
    moved2[0, 0, 3, 3], moved2[0, 0, 2, 2] = 0.0, 15.0
    over2 = np.abs(moved2 - ref["unpool"]) > 1e-4 * np.abs(ref["unpool"]).max()
    assert not _over_in_tie_windows(over2, ties["unpool"])
    # no near-tie anywhere: no tie source at all
    assert _tie_sources(net, net.trace(np.arange(16.0).reshape(1, 1, 4, 4)), 1e-4) == {}
