"""The ONNX peers of ``refnet bench`` (refnet/bench_peers.py, cv2_worker --time/--serve): the
ONNX file they time is the same model (onnxruntime's outputs on it against refnet's float64
reference), the self-timed rounds of the fair timer, the worker's timing modes (the forward it
times is cv2's real forward: its outputs match onnxruntime's), and the report/JSON. No timing
is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from writers.caffe_writer import Layer, NetSpec, write_net

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import refnet  # noqa: E402
from refnet.bench import alternate  # noqa: E402
from refnet.bench_peers import onnx_file_for, ort_runner  # noqa: E402
from refnet.cli import main  # noqa: E402
from refnet.crosscheck.cv2_backend import WORKER  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(2)
    spec = NetSpec([
        Layer("c1", "Convolution", ["data"], ["c1"], {"convolution_param": {"num_output": 6, "kernel_size": 3,
                                                                              "pad": 1}},
              [rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 6).astype(np.float32)]),
        Layer("r1", "ReLU", ["c1"], ["c1"]),
        Layer("fc", "InnerProduct", ["c1"], ["fc"], {"inner_product_param": {"num_output": 4}},
              [rng.normal(0, 0.3, (4, 6 * 8 * 8)).astype(np.float32), np.zeros(4, np.float32)]),
    ], {"data": (1, 3, 8, 8)})
    return write_net(spec, tmp_path)


pytestmark = pytest.mark.usefixtures("restore_threads")  # (tests/conftest.py)


def _cv5() -> str | None:
    py = os.environ.get("REFNET_CV5_PYTHON")
    return py if py and Path(py).exists() else None


def _feeds():
    return {"data": np.random.default_rng(0).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)}


def test_peer_file_is_the_same_model(tiny, tmp_path):
    """onnxruntime on the file the peers time == refnet's float64 reference on the Caffe model."""
    net = refnet.load(*tiny)
    feeds = _feeds()
    path = onnx_file_for(net, {"data": (1, 3, 8, 8)}, str(tmp_path))
    fn, name = ort_runner(path, feeds, 1)
    assert name.startswith("onnxruntime")
    got = fn()[0]
    want = net.forward(feeds, precision="float64")
    want = want["fc"] if isinstance(want, dict) else want
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-5)


def test_alternate_uses_self_reported_times():
    order: list[str] = []

    def a():
        order.append("a")

    def b():
        order.append("b")
        return 0.25  # an engine timed elsewhere reports its own seconds

    times = alternate([a, b], repeat=3, warmup=1, pause=0.0, warm_each=True, self_timed=[False, True])
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert times[1] == [0.25, 0.25, 0.25] and all(0 <= t < 0.25 for t in times[0])


@pytest.mark.skipif(_cv5() is None, reason="REFNET_CV5_PYTHON (make cv5) not available")
def test_worker_timing_modes_run_cv2s_forward(tiny, tmp_path):
    net = refnet.load(*tiny)
    feeds = _feeds()
    path = onnx_file_for(net, {"data": (1, 3, 8, 8)}, str(tmp_path))
    fin = tmp_path / "feeds.npz"
    np.savez(fin, **feeds)
    # --time: ROUNDS durations, one JSON line
    r = subprocess.run([_cv5(), WORKER, "--time", path, str(fin), "1", "3", "0.01"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    times = json.loads(r.stdout.strip().splitlines()[-1])["times"]
    assert len(times) == 3 and all(0 < t < 10 for t in times)
    # --serve: one duration per "run"; the served model is the real one (cv2 5's outputs on the
    # same file, through the ordinary worker protocol, match onnxruntime's)
    from refnet.bench_peers import Cv2WorkerTimer
    from refnet.crosscheck.cv2_backend import Cv2WorkerBackend

    with Cv2WorkerTimer(_cv5(), path, feeds, 1, workdir=str(tmp_path)) as timer:
        ts = [timer(), timer()]
    assert timer._proc.returncode == 0 and all(0 < t < 10 for t in ts)
    out = Cv2WorkerBackend(_cv5()).run(path, feeds, ["fc"])["fc"]
    np.testing.assert_allclose(out, ort_runner(path, feeds, 1)[0]()[0], rtol=1e-4, atol=1e-5)


def test_bench_command_with_peers(tiny, tmp_path, capsys):
    out = tmp_path / "b.json"
    peers = ["onnxruntime"] + (["cv2-5"] if _cv5() else [])
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--repeat", "2", "--warmup", "1", "--pause", "0.01",
                 "--peers", *peers, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "fastest ONNX peer" in text
    data = json.loads(out.read_text())
    assert len(data["peers_ms"]) == len(peers), data["note"]
    assert all(len(v) == 2 for v in data["peers_runs_ms"].values())
    assert data["ratio_vs_best_peer"] == pytest.approx(data["refnet_ms"] / min(data["peers_ms"].values()))
    if _cv5():
        assert any(k.startswith("cv2 5.") for k in data["peers_ms"])


def test_bench_command_rejects_unknown_peer(tiny, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", str(tiny[0]), str(tiny[1]), "--peers", "tensorrt"])
    assert e.value.code == 2
    assert sys.modules["refnet.bench"] is not None
