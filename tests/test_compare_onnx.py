"""`refnet compare` on ONNX models: refnet float64 vs onnxruntime, cv2 4.x (worker) and cv2 5.x
(the .venv-cv5 worker), per layer with local and accumulated errors (issue 13)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CLS = "ppocr_onnx/ch_ppocr_mobile_v2.0_cls_infer.onnx"
IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def _cv5() -> str | None:
    py = os.environ.get("REFNET_CV5_PYTHON")
    return py if py and Path(py).exists() else None


@pytest.mark.models
def test_cli_shows_every_onnx_backend_per_layer(models, tmp_path, capsys):
    from refnet.cli import main

    model = require_model(models, CLS)
    image = models.parent / "images" / "text_lines.png"
    js = tmp_path / "r.json"
    code = main(["compare", str(model), "--image", str(image), "--size", "192", "48", "--scale", "0.00784",
                 "--mean", "127.5", "127.5", "127.5", "--swap-rb", "--json", str(js)])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(js.read_text())
    rep = doc["reports"][0]
    comps = {c["id"]: c for c in rep["comparisons"]}
    want = {"onnxruntime", "cv2_4"} | ({"cv2_5"} if _cv5() else set())
    assert want <= set(comps), comps.keys()
    for cid in want:
        rows = comps[cid]["rows"]
        assert len(rows) > 200, (cid, len(rows))  # every layer, not just the output
        # an independent check of the reported numbers: each backend agrees with refnet float64
        assert all(r["status"] == "ok" for r in rows), cid
        local = [r["local_max_rel"] for r in rows if r["local_max_rel"] is not None]
        # (a layer whose inputs the backend fused away at import has no local error)
        assert len(local) > 0.8 * len(rows) and max(local) < 1e-4, (cid, len(local), max(local))
    assert rep["verdict_code"] == "agree" and "onnxruntime" in out and "cv2 4." in out


@pytest.mark.models
def test_a_wrong_backend_layer_is_caught_by_its_local_error(models):
    """A backend whose one layer is off by 1e-3 (a stand-in for a real bug): DIFFER at that layer,
    judged by its local error; the layers after it are only 'accumulated'."""
    import refnet
    from refnet.crosscheck.backends import Candidate
    from refnet.crosscheck.ort_backend import OrtBackend

    model = require_model(models, CLS)
    net = refnet.load_onnx(model, input_shapes={"x": (1, 3, 48, 192)})
    inv = {}
    for o, ir in net.graph.meta["tensors"].items():
        inv.setdefault(ir, o)
    names = {n: inv[n] for n in net.layer_names if n in inv}
    victim = next(n for n in net.layer_names if net.graph.node(n).op == "conv" and n != net.layer_names[0])

    class Broken(OrtBackend):
        def run(self, model_path, feeds, outputs):
            got = super().run(model_path, feeds, outputs)
            if names[victim] in got:
                got[names[victim]] = got[names[victim]] * 1.001
            return got

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)
    rep = refnet.compare(net, x, cv2=False, precisions=("float64",),
                         backends=[Candidate("onnxruntime", Broken(), str(model), "layers", names)])
    assert rep.verdict_code == "differ" and rep.verdict_at == (victim, "onnxruntime"), rep.verdict
    rows = {r.layer: r for r in rep.comparisons["onnxruntime"].rows}  # (the Report object: a dict by id)
    assert rows[victim].local_max_rel > 5e-4


def _small_onnx(path, nodes, inputs, inits=(), opset=13, ir_version=8):
    from onnx import helper as H

    g = H.make_graph(nodes, "g", inputs, [H.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                     initializer=list(inits))
    m = H.make_model(g, opset_imports=[H.make_opsetid("", opset)])
    m.ir_version = ir_version
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("elem", ["INT64", "DOUBLE"])
def test_onnxruntime_gets_the_input_in_its_declared_type(tmp_path, capsys, elem):
    """A model whose input is int64 or double: the float32 blob is fed to onnxruntime in that type
    (it refused a float32 feed: an 'internal error', exit 3). The values are the blob's, cast as
    the graph's own Cast does."""
    from onnx import helper as H

    from refnet.cli import main
    from refnet.crosscheck.ort_backend import OrtBackend

    t = getattr(onnx.TensorProto, elem)
    p = _small_onnx(tmp_path / "m.onnx", [H.make_node("Cast", ["x"], ["xf"], to=onnx.TensorProto.FLOAT),
                                          H.make_node("Mul", ["xf", "two"], ["y"])],
                    [H.make_tensor_value_info("x", t, [1, 2, 3])],
                    [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    x = np.array([[[-2.5, -1.0, 0.4], [1.7, 3.0, 7.9]]], np.float32)
    got = OrtBackend().run(p, {"x": x}, ["xf", "y"])
    want = 2 * (np.trunc(x) if elem == "INT64" else x)  # Cast to int64 truncates toward zero
    np.testing.assert_array_equal(got["y"], want)
    js = tmp_path / "r.json"
    assert main(["compare", str(p), "--backend", "ort", "--json", str(js)]) == 0
    comps = {c["id"]: c for c in json.loads(js.read_text())["reports"][0]["comparisons"]}
    assert [r["status"] for r in comps["onnxruntime"]["rows"]] == ["ok", "ok"]


def test_onnxruntime_refusing_the_model_is_a_note(tmp_path, capsys):
    """onnxruntime refuses the file (an IR version newer than it reads; refnet reads it): a note
    in the report and exit 0, not an internal error."""
    from onnx import helper as H

    from refnet.cli import main

    p = _small_onnx(tmp_path / "m.onnx", [H.make_node("Relu", ["x"], ["y"])],
                    [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])], ir_version=99)
    code = main(["compare", str(p), "--backend", "ort"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "onnxruntime" in cap.err + cap.out and "failed on this model" in cap.err + cap.out
    assert "IR version" in cap.err + cap.out and "internal error" not in cap.err


def test_random_input_has_the_declared_batch_and_is_budgeted(tmp_path, capsys, monkeypatch):
    """--random on an ONNX model with fixed dims: the blob has the declared batch (2 here; batch 1
    was refused: 'declared with other fixed dims'), checked against onnxruntime; a declared input
    over the memory budget is refused before it is drawn."""
    from onnx import helper as H

    from refnet.cli import main

    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    p = _small_onnx(tmp_path / "b2.onnx", [H.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                    [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5, 6, 6])],
                    [onnx.numpy_helper.from_array(w.repeat(2, axis=1)[:, :5], "w")])
    js = tmp_path / "r.json"
    assert main(["compare", str(p), "--backend", "ort", "--random", "--json", str(js)]) == 0, capsys.readouterr()
    rep = json.loads(js.read_text())["reports"][0]
    assert tuple(rep["input_shape"]) == (2, 5, 6, 6)
    assert [r["status"] for r in {c["id"]: c for c in rep["comparisons"]}["onnxruntime"]["rows"]] == ["ok"]
    big = _small_onnx(tmp_path / "big.onnx", [H.make_node("Relu", ["x"], ["y"])],
                      [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5, 4000, 4000])])
    monkeypatch.setenv("REFNET_MEMORY_BUDGET", "100M")
    capsys.readouterr()
    assert main(["compare", str(big), "--backend", "ort", "--random"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a random input of 1x5x4000x4000" in err and "memory budget" in err, err


def test_size_gives_symbolic_onnx_dims_in_run_and_compare(tmp_path, capsys):
    """--size W H fixes an ONNX model's symbolic H and W and keeps its own fixed channels:
    `refnet run` ignored --size (the model could not be loaded), and compare asked a 1-channel
    model for 3 channels. Checked against onnxruntime on cv2's blobFromImage of the same image."""
    import cv2
    from onnx import helper as H

    from refnet.cli import main

    rng = np.random.default_rng(2)
    models = {}
    for c in (1, 3):
        models[c] = _small_onnx(tmp_path / f"dyn{c}.onnx", [H.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                                [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", c, "H", "W"])],
                                [onnx.numpy_helper.from_array(rng.standard_normal((4, c, 3, 3)).astype(np.float32),
                                                              "w")])
    assert main(["compare", str(models[1]), "--random", "--size", "32", "16", "--backend", "ort"]) == 0
    assert "verdict: AGREE" in capsys.readouterr().out
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    code = main(["run", str(models[3]), "--image", str(image), "--size", "32", "16", "--scale", "1", "--mean", "0",
                 "--task", "segment", "--out", str(tmp_path / "seg.png")])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "seg.png").is_file(), out
    blob = cv2.dnn.blobFromImage(cv2.imread(str(image)), 1.0, (32, 16), 0, False)
    ort = pytest.importorskip("onnxruntime")
    y = ort.InferenceSession(str(models[3]), providers=["CPUExecutionProvider"]).run(None, {"x": blob})[0]
    counts = np.bincount(y[0].argmax(0).ravel(), minlength=4) / (16 * 32)
    for k, f in enumerate(counts):
        if f > 0:
            assert f"class {k}" in out and f"{100 * f:.2f}%" in out, (k, f, out)
    assert main(["run", str(models[3]), "--image", str(image), "--task", "segment"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no fixed shape" in err and "--size W H" in err and "--input-shape" in err, err


def test_image_fills_a_fixed_onnx_batch_and_two_inputs_are_named(tmp_path, capsys):
    """--image on an ONNX model declaring batch 2: the image blob fills both items (it was refused:
    'declared with other fixed dims'), each item's output checked against onnxruntime on cv2's
    blobFromImage. A two-input model: one line naming both inputs (it said the model declares no
    shape, or 'pass input_shapes as a dict')."""
    import cv2
    from onnx import helper as H

    from refnet.cli import main

    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    p = _small_onnx(tmp_path / "b2.onnx", [H.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                    [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 12, 16])],
                    [onnx.numpy_helper.from_array(w, "w")])
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    js = tmp_path / "r.json"
    args = ["compare", str(p), "--image", str(image), "--scale", "0.01", "--backend", "ort", "--json", str(js)]
    assert main(args) == 0, capsys.readouterr()
    rep = json.loads(js.read_text())["reports"][0]
    assert tuple(rep["input_shape"]) == (2, 3, 12, 16)
    assert [r["status"] for r in {c["id"]: c for c in rep["comparisons"]}["onnxruntime"]["rows"]] == ["ok"]
    import refnet

    blob = cv2.dnn.blobFromImage(cv2.imread(str(image)), 0.01, (16, 12), 0, False)
    ort = pytest.importorskip("onnxruntime")
    y1 = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": blob.repeat(2, 0)})[0]
    y = refnet.load_onnx(p).forward(blob.repeat(2, 0), precision="float64")["y"]
    np.testing.assert_allclose(y, y1, rtol=1e-4, atol=1e-5)
    two = _small_onnx(tmp_path / "two.onnx", [H.make_node("Add", ["a", "b"], ["y"])],
                      [H.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3, 4, 4]) for n in "ab"])
    capsys.readouterr()
    for extra in ([], ["--input-shape", "1", "3", "4", "4"]):
        assert main(["compare", str(two), "--backend", "ort", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'a', 'b'" in err.replace("a, b", "'a', 'b'") and "Python API" in err, err


def test_a_float16_model_is_a_note_for_onnxruntime_not_a_differ(tmp_path, capsys):
    """A float16 model: onnxruntime computes its layers in float16 (relative steps of ~5e-4, over
    the 1e-4 tolerance; they come back float16), which is not a deviation to report as DIFFER:
    those layers are left out with a note. A Cast to FLOAT16 keeps its rows (its float16 result
    is defined exactly; refnet rounds the same way). The float16 weights are checked independently:
    refnet (widened to float32) equals NumPy."""
    from onnx import helper as H

    from refnet.cli import main

    w = np.random.default_rng(4).standard_normal((4, 3, 1, 1)).astype(np.float16)
    p = tmp_path / "h.onnx"
    g = H.make_graph([H.make_node("Conv", ["x", "w"], ["y"])], "g",
                     [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 3, 8, 8])],
                     [H.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, None)],
                     [onnx.numpy_helper.from_array(w, "w")])
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 13)])
    m.ir_version = 8
    p.write_bytes(m.SerializeToString())
    code = main(["compare", str(p), "--backend", "ort"])
    cap = capsys.readouterr()
    assert code == 0 and "computes layers in float16" in cap.out + cap.err and "DIFFER" not in cap.out, (
        cap.out + cap.err)
    cast = _small_onnx(tmp_path / "c.onnx", [H.make_node("Cast", ["x"], ["h"], to=onnx.TensorProto.FLOAT16),
                                             H.make_node("Cast", ["h"], ["y"], to=onnx.TensorProto.FLOAT)],
                       [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])])
    js = tmp_path / "r.json"
    assert main(["compare", str(cast), "--backend", "ort", "--random", "--scale", "0.0123", "--json", str(js)]) == 0
    rows = {c["id"]: c for c in json.loads(js.read_text())["reports"][0]["comparisons"]}["onnxruntime"]["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    import refnet

    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 8, 8))
    y = refnet.load_onnx(p).forward(x, precision="float64")["y"]  # (x is float16: forward feeds it its values)
    np.testing.assert_allclose(y, np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64),
                                            x.astype(np.float16).astype(np.float64)), rtol=1e-12)


def test_a_float16_input_is_rounded_for_every_backend(tmp_path, capsys):
    """A float16 input cast to float32 first: onnxruntime is fed the blob as float16, so every
    backend (refnet too) gets the blob rounded to float16 (a note says so); unrounded, refnet's
    first layer differed from onnxruntime's by 2.5e-4: a false DIFFER. Checked against NumPy."""
    from onnx import helper as H

    from refnet.cli import main

    w = np.random.default_rng(6).standard_normal((4, 3, 1, 1)).astype(np.float32)
    p = _small_onnx(tmp_path / "m.onnx", [H.make_node("Cast", ["x"], ["xf"], to=onnx.TensorProto.FLOAT),
                                          H.make_node("Conv", ["xf", "w"], ["y"])],
                    [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 3, 8, 8])],
                    [onnx.numpy_helper.from_array(w, "w")])
    js = tmp_path / "r.json"
    assert main(["compare", str(p), "--backend", "ort", "--random", "--input-shape", "1", "3", "8", "8",
                 "--json", str(js)]) == 0
    cap = capsys.readouterr()
    assert "is float16: the blob is rounded" in cap.out + cap.err
    rep = json.loads(js.read_text())["reports"][0]
    assert [r["status"] for r in {c["id"]: c for c in rep["comparisons"]}["onnxruntime"]["rows"]] == ["ok", "ok"]
    from refnet.crosscheck.ort_backend import OrtBackend

    x = np.random.default_rng(7).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    got = OrtBackend().run(p, {"x": x}, ["y"])["y"]
    want = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x.astype(np.float16).astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _conv_bn_add_clip(path, outputs, seed=1, c=16, o=8, s=16):
    """Conv -> BatchNormalization -> Add 3 -> Clip(0, 6) (PP-OCRv4's hard-swish front), with the
    graph outputs ``outputs``; and an input of 200 + U(0, 2) against filters of zero mean, so the
    conv's sums are ~1e3 while its outputs are a few units (float32 rounding shows at the Clip)."""
    from onnx import helper as H
    from onnx import numpy_helper as NH

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((o, c, 3, 3))
    w -= w.mean(axis=(1, 2, 3), keepdims=True)
    inits = {"w": w, "b": rng.standard_normal(o), "g": rng.uniform(0.5, 2, o), "beta": rng.standard_normal(o),
             "mu": rng.standard_normal(o), "var": rng.uniform(0.5, 3, o), "three": 3.0, "zero": 0.0, "six": 6.0}
    nodes = [H.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             H.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["bn"]),
             H.make_node("Add", ["bn", "three"], ["a3"]), H.make_node("Clip", ["a3", "zero", "six"], ["y"])]
    g = H.make_graph(nodes, "g", [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, s, s])],
                     [H.make_tensor_value_info(t, onnx.TensorProto.FLOAT, [1, o, s, s]) for t in outputs],
                     [NH.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 13)])
    m.ir_version = 8
    path.write_bytes(m.SerializeToString())
    return path, (200 + rng.uniform(0, 2, (1, c, s, s))).astype(np.float32)


def test_cv2_4_fuses_conv_and_batchnorm_only_when_the_conv_output_is_not_asked_for(tmp_path):
    """The fact behind the false DIFFER at PP-OCRv4's p2o.Clip.6 (cv2 4.x): cv2 folds a
    BatchNormalization into the convolution's weights unless the conv's output is a graph output,
    so a tensor after them has other float32 rounding in a run that exposes fewer tensors. Within
    one run, cv2's Clip is exactly np.clip of cv2's own Add output: nothing wrong at the Clip.
    cv2 itself on the graph, NumPy as the oracle."""
    cv2 = pytest.importorskip("cv2")
    if not cv2.__version__.startswith("4."):
        pytest.skip("the fusion measured here is cv2 4.x's")

    def run(outputs):
        p, x = _conv_bn_add_clip(tmp_path / f"m{len(outputs)}.onnx", outputs)
        net = cv2.dnn.readNetFromONNX(str(p))
        net.setInput(x)
        return dict(zip(outputs, net.forward(outputs)))

    every, late = run(["c", "bn", "a3", "y"]), run(["a3", "y"])
    for r in (every, late):
        np.testing.assert_array_equal(r["y"], np.clip(r["a3"], 0, 6))
    moved = np.abs(every["a3"] - late["a3"]).max()
    assert moved > 6e-4, moved  # over compare's 1e-4 tolerance on the Clip's range of 6
    assert np.abs(late["y"] - np.clip(every["a3"], 0, 6)).max() > 6e-4


def test_a_local_error_pairs_a_layer_with_inputs_from_the_same_backend_run(tmp_path):
    """Per-layer backends run in chunks of layers, one run per chunk. The local error of the first
    layer of a chunk took its inputs from the previous chunk's run; cv2 4.x fuses differently when
    other tensors are exposed (the test above), so PP-OCRv4 det (raw pixels, 320x320) was reported
    DIFFER at p2o.Clip.6 with a local error of 1.8e-4 although cv2's Clip is exact on its own
    input. Here the chunk boundary falls between the Add and the Clip: the Clip's local error is 0."""
    import dataclasses
    import io

    import refnet
    from refnet.crosscheck.onnx_candidates import onnx_candidates

    p, x = _conv_bn_add_clip(tmp_path / "m.onnx", ["y"])
    net = refnet.load_onnx(p)
    cands, notes = onnx_candidates(net, ["cv2"], io.StringIO())
    layer_bytes = 4 * int(np.prod(net.infer_shapes({"x": x.shape})["y"]))
    cand = dataclasses.replace(cands[0], chunk_bytes=3 * layer_bytes)  # [c, bn, a3] [y]
    rep = refnet.compare(net, x, cv2=False, precisions=("float64",), backends=[cand])
    assert not notes, notes
    rows = {r.layer: r for r in rep.comparisons[cand.id].rows}
    assert rows["y"].local_max_rel == 0.0, rows["y"]
    assert rows["y"].status in ("ok", "accumulated") and rep.verdict_code != "differ", rep.verdict
