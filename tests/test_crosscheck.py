"""refnet.crosscheck: local errors judge each layer, one verdict everywhere, no shadowed `refnet.compare`.

Oracles: cv2.dnn's own per-layer outputs, refnet's float64 kernels run here by hand on cv2's
blobs, and hand-built detection sets; a deliberately broken cv2-side layer (another LRN alpha in
the prototxt cv2 reads, or one perturbed cv2 blob) must still give DIFFER at exactly that layer.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import perturb_cv2
from writers.t7_writer import write_fast_neural_style

import refnet
from refnet import tolerances
from refnet.archs import CaffeNetBuilder
from refnet.cli import main
from refnet.crosscheck.backends import Candidate, Cv2Backend
from refnet.crosscheck.local import kernel64
from refnet.crosscheck.metrics import diff_stats
from refnet.crosscheck.orchestrator import compare
from refnet.crosscheck.tasks import match_detections


def _lrn_net(tmp_path, alpha: float = 1e-1, name: str = "lrn"):
    b = CaffeNetBuilder(name, (1, 3, 15, 13), seed=5)
    x = b.conv("conv1", "data", 6, 3)
    b.relu("relu1", x)
    x = b.lrn("norm1", x, local_size=3, alpha=alpha, beta=0.75)
    x = b.conv("conv2", x, 4, 3)
    b.relu("relu2", x)
    return b.write(tmp_path / name)


@pytest.fixture
def x15():
    return np.random.default_rng(3).uniform(-1, 1, (1, 3, 15, 13)).astype(np.float32)


# ---- `refnet.compare` is the function, however refnet is imported --------------------------------------
def test_refnet_compare_is_the_function_twice_and_after_importing_every_submodule(tmp_path, x15):
    net = refnet.load_caffe(*_lrn_net(tmp_path))
    first = refnet.compare(net, x15, winograd=False, cv2_fusion=False, precisions=("float64",))
    second = refnet.compare(net, x15, winograd=False, cv2_fusion=False, precisions=("float64",))
    assert first.verdict_code == second.verdict_code == "agree"
    for m in pkgutil.walk_packages(refnet.__path__, "refnet."):
        importlib.import_module(m.name)
    assert callable(refnet.compare) and refnet.compare is refnet.crosscheck.compare
    third = refnet.compare(net, x15, winograd=False, cv2_fusion=False, precisions=("float64",))
    assert [r.max_rel for r in third.comparisons["cv2"].rows] == [r.max_rel for r in first.comparisons["cv2"].rows]
    assert importlib.util.find_spec("refnet.compare") is None


def test_refnet_compare_after_the_cli_demo_and_info_imports_in_a_fresh_process(tmp_path):
    code = ("import refnet.cli, refnet.demo, refnet.info, refnet.cli.compare, refnet.crosscheck.plot, refnet\n"
            "from refnet.crosscheck.orchestrator import compare\n"
            "assert refnet.compare is compare, refnet.compare\n"
            "from refnet import compare as c2\nassert c2 is compare\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- local errors --------------------------------------------------------------------------------------
def test_local_error_is_the_kernel_on_cv2s_own_inputs(tmp_path, x15):
    """The oracle: cv2's per-layer blobs, and refnet's float64 kernel run here on cv2's input of each layer."""
    proto, model = _lrn_net(tmp_path)
    net = refnet.load_caffe(proto, model)
    rep = compare(net, x15, winograd=False, cv2_fusion=False)
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.enableFusion(False)
    if hasattr(cv, "enableWinograd"):
        cv.enableWinograd(False)
    cv.setInput(x15)
    names = list(net.layer_names)
    outs = dict(zip(names, cv.forward(names)))
    rows = {r.layer: r for r in rep.comparisons["cv2"].rows}
    for node in net.graph.nodes:
        src = [x15 if t == "data" else outs[t] for t in node.inputs]
        want = kernel64(node, src)[0]
        got = outs[node.name]
        assert rows[node.name].local_max_rel == pytest.approx(np.abs(got - want).max() / np.abs(want).max(), abs=1e-15)
    assert rows["conv2"].local_max_rel < 1e-6


def test_tanh_after_a_wide_range_agrees_by_local_error(tmp_path, images_dir):
    """fast-neural-style (final gain 1: the TanH input spans thousands): the accumulated error at the TanH
    is over tolerance only because float32 rounding of its input travelled; cv2's TanH on its own input
    is exact, so the layer is not wrong and the verdict is AGREE (it was DIFFER at the TanH)."""
    path = write_fast_neural_style(tmp_path / "fns.t7", "eccv16", seed=11, width=8)
    net = refnet.load_torch(path)
    img = cv2.imread(str(images_dir / "space_shuttle.jpg"))
    x = cv2.dnn.blobFromImage(img, 1.0, (64, 48))
    rep = compare(net, x, winograd=False, cv2_fusion=False)
    tanh = next(r for r in rep.comparisons["cv2"].rows if r.op == "tanh")
    assert tanh.local_max_rel is not None and tanh.local_max_rel < 1e-6
    if tanh.max_rel > tolerances.COMPARE_CV2:  # the case of the issue: accumulated over, local within
        assert tanh.status == "accumulated"
    assert rep.verdict_code == "agree", rep.verdict
    assert rep.exit_status == 0 and "DIFFER" not in rep.summary_line()


def test_identical_minus_inf_values_are_equal(tmp_path):
    b = CaffeNetBuilder("inf", (1, 3, 8, 8))
    b._layer("double", "Power", ["data"], ["double"], "power_param { power: 1 scale: 2 shift: 0 }")
    net = refnet.load_caffe(*b.write(tmp_path / "inf"))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    x[0, 1, 2:4, 3] = -np.inf
    rep = compare(net, x, winograd=False)
    assert rep.verdict == "AGREE", rep.verdict
    (row,) = rep.comparisons["cv2"].rows
    assert row.max_abs == 0.0 and row.max_rel == 0.0 and row.local_max_rel == 0.0 and "shape" not in row.note
    # by hand: the same infinity is equal, a different one (or a NaN against a number) is infinitely far
    assert diff_stats(np.array([-np.inf, 1.0]), np.array([-np.inf, 1.0]))[:2] == (0.0, 0.0)
    assert diff_stats(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]))[0] == math.inf
    assert diff_stats(np.array([np.nan, 2.0]), np.array([np.nan, 1.0]))[:2] == (1.0, 1.0)


# ---- real errors are still caught ----------------------------------------------------------------------
def test_a_wrong_lrn_on_the_cv2_side_is_differ_at_that_layer(tmp_path, x15):
    """cv2 reads a prototxt whose LRN alpha is twice refnet's: the LRN's local error is over tolerance,
    the layers after it are locally exact (their accumulated error only travelled)."""
    good = _lrn_net(tmp_path, 1e-1, "good")
    bad = _lrn_net(tmp_path, 2e-1, "bad")
    net = refnet.load_caffe(*good)
    cand = Candidate("cv2", Cv2Backend(winograd=False), [str(bad[0]), str(good[1])])
    rep = compare(net, x15, cv2=False, backends=[cand])
    assert rep.verdict_code == "differ" and rep.verdict.startswith("DIFFER at norm1 (cv2 "), rep.verdict
    assert rep.first_bad_layer == "norm1" and rep.exit_status == 1
    rows = {r.layer: r for r in rep.comparisons["cv2"].rows}
    assert rows["norm1"].status == "differ" and rows["norm1"].local_max_rel > 1e-2
    assert rows["conv1"].status == rows["relu1"].status == "ok"
    assert rows["conv2"].local_max_rel < 1e-6 and rows["conv2"].status == "accumulated"


def test_a_perturbed_cv2_blob_is_differ_at_that_layer(tmp_path, x15, monkeypatch):
    perturb_cv2(monkeypatch, ["conv2"], lambda v: v * np.float32(1.001))
    rep = compare(refnet.load_caffe(*_lrn_net(tmp_path)), x15, winograd=False)
    assert rep.verdict.startswith("DIFFER at conv2 ("), rep.verdict
    rows = {r.layer: r for r in rep.comparisons["cv2"].rows}
    assert rows["conv2"].local_max_rel == pytest.approx(1e-3, rel=1e-2) and rows["conv2"].status == "differ"
    assert all(rows[n].status == "ok" and rows[n].local_max_rel < 1e-6 for n in ("conv1", "relu1", "norm1"))


def test_chunked_backend_runs_give_the_same_numbers(tmp_path, x15):
    net = refnet.load_caffe(*_lrn_net(tmp_path))
    whole = compare(net, x15, winograd=False, chunk_bytes=0)
    one_by_one = compare(net, x15, winograd=False, chunk_bytes=1)
    for cid in ("refnet_float32", "cv2", "cv2_vs_float32"):
        a = [(r.layer, r.max_rel, r.local_max_rel, r.status) for r in whole.comparisons[cid].rows]
        b = [(r.layer, r.max_rel, r.local_max_rel, r.status) for r in one_by_one.comparisons[cid].rows]
        assert a == b and len(a) == len(net.layer_names)


# ---- tie-aware task checks --------------------------------------------------------------------------------
def test_detections_tied_in_score_are_matched_as_a_set():
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5], [6, 6, 7, 7]], float)
    cls = np.array([1, 1, 1, 1])
    ref_s = np.array([0.9, 1.0, 1.0, 1.0])
    # the candidate kept another of the three boxes tied at score 1.0 (NMS / top-k among equals)
    cand_b, cand_s, cand_c = boxes[[0, 1, 2]] + [[0, 0, 0, 0], [0, 0, 0, 0], [10, 10, 10, 10]], ref_s[:3], cls[:3]
    m = match_detections(boxes[:3], ref_s[:3], cls[:3], cand_b, cand_s, cand_c)
    assert m["agree"] and m["tied_unmatched"] == 1 and m["matched"] == 2
    # the same swap with distinct scores is a real disagreement
    m2 = match_detections(boxes[:3], np.array([0.9, 0.8, 0.7]), cls[:3], cand_b, np.array([0.9, 0.8, 0.6]), cand_c)
    assert not m2["agree"]
    # at a full keep-top-k cut, the detections tied with the lowest kept score may differ
    m3 = match_detections(boxes[:3], np.array([0.9, 0.8, 0.5]), cls[:3], cand_b, np.array([0.9, 0.8, 0.5]), cand_c,
                          cut=0.5)
    assert m3["agree"] and not match_detections(boxes[:3], np.array([0.9, 0.8, 0.5]), cls[:3], cand_b,
                                                np.array([0.9, 0.8, 0.5]), cand_c)["agree"]


# ---- one verdict: table, summary, JSON, plot title, exit status -------------------------------------------
@pytest.mark.parametrize("perturb", [False, True], ids=["agree", "differ"])
def test_the_verdict_is_stated_the_same_everywhere(tmp_path, capsys, monkeypatch, perturb):
    from PIL import Image

    proto, model = _lrn_net(tmp_path)
    if perturb:
        perturb_cv2(monkeypatch, ["norm1"], lambda v: v + np.float32(0.01))
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    argv = ["compare", str(proto), str(model), "--random", "--json", str(js), "--plot", str(png), "--no-winograd"]
    code = main(argv)
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    (rep,) = doc["reports"]
    verdict = rep["verdict"]
    assert verdict.startswith("DIFFER at norm1") == perturb
    assert f"\nverdict: {verdict}\n" in out
    assert out.strip().splitlines()[-1] == f"summary: {rep['summary']}" and rep["summary"].startswith(
        f"{rep['model']}: {verdict} |")
    assert ("DIFFER" in rep["summary"]) == perturb  # no part of the summary contradicts the verdict
    assert doc["command"] == ["refnet", *argv]
    assert code == doc["exit_status"] == rep["exit_status"] == (1 if perturb else 0)
    assert doc["verdict_code"] == rep["verdict_code"] == ("differ" if perturb else "agree")
    assert Image.open(png).info["Title"] == f"{rep['model']}: {verdict}"


def test_report_repr_is_one_short_line(tmp_path, x15):
    rep = compare(refnet.load_caffe(*_lrn_net(tmp_path)), x15, winograd=False, cv2_fusion=False)
    r = repr(rep)
    assert "\n" not in r and len(r) < 200 and "agree" in r


# ---- memory: compare keeps what the current layer needs --------------------------------------------------
_MEMORY_CHILD = r"""
import resource, sys
import numpy as np
import refnet
from refnet.archs import CaffeNetBuilder
from refnet.crosscheck.orchestrator import compare

n_layers, shape = int(sys.argv[2]), (1, 16, 512, 512)  # 16 MiB per float32 blob, 32 MiB in float64
b = CaffeNetBuilder("deep", shape)
prev = "data"
for i in range(n_layers):
    b._layer(f"p{i}", "Power", [prev], [f"p{i}"], "power_param { power: 1 scale: 1.001 shift: 0.001 }")
    prev = f"p{i}"
net = refnet.load_caffe(*b.write(sys.argv[1] + "/deep"))
x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rep = compare(net, x, winograd=False, cv2_fusion=False, local_errors="over")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rep.verdict_code, len(rep.comparisons["cv2"].rows), base // 1024, peak // 1024)
"""


def test_compare_memory_stays_bounded_on_a_deep_net(tmp_path):
    """24 layers of 16 MiB each: keeping every layer of the float64 reference, refnet float32 and cv2
    takes > 1.5 GiB (the compare before the stream grew the process by 3.9 GiB with 40 such layers);
    streamed and chunked, compare grows it by ~0.5 GiB (cv2's chunk, a few float64 layers, temporaries)."""
    r = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path), "24"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code, rows, base, peak = r.stdout.split()
    assert code == "agree" and int(rows) == 24
    assert int(peak) - int(base) < 1024, f"compare grew the process by {int(peak) - int(base)} MiB"
