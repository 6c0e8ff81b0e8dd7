"""`refnet convert` on real and seeded models (a representative subset of bench/convert_all.py's
table), the README's three OpenCV 5 scripts run in opencv-python 5.x on converted files, the
command line, and the ONNX round trip (once refnet.load_onnx exists).

Oracle: refnet's float64 run of the *source* model (Caffe/Torch7/Darknet files read by refnet's
own importers); the converted file is run by onnxruntime and by OpenCV 5 (worker interpreter).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import require_model  # noqa: E402
from writers.export_cases import CASES, run_case  # noqa: E402

import refnet  # noqa: E402
from refnet.crosscheck.cv2_backend import Cv2WorkerBackend  # noqa: E402
from refnet.crosscheck.ort_backend import OrtBackend  # noqa: E402
from refnet.export.onnx import export_onnx  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def targets(cv5_python):
    return [OrtBackend(), Cv2WorkerBackend(cv5_python)]


SUBSET = {  # name -> overrides keeping CI time modest (the whole table: bench/convert_all.py)
    "yufacedetectnet-v1": {},
    "yolo-fastest-1.1 (quirks cv2)": {},
    "enet-cityscapes-cpu": {"input_shape": (1, 3, 96, 192)},  # near-ties in max pooling: judged by local errors
    "fast-neural-style instance_norm (t7 writer)": {"input_shape": (1, 3, 64, 80)},
}


@pytest.mark.models
@pytest.mark.parametrize("name", sorted(SUBSET))
def test_convert_and_verify(name, models, images_dir, tmp_path, targets):
    case = dataclasses.replace(CASES[name], **SUBSET[name])
    per_layer = name in ("yufacedetectnet-v1", "enet-cityscapes-cpu")
    row = run_case(case, models, images_dir, tmp_path, targets, per_layer=per_layer)
    v = row.verification
    for r in v.results:
        assert r.ran, f"{r.name}: {r.error}"
        assert r.agrees, (r.name, r.outputs, r.tasks)
        if name == "enet-cityscapes-cpu":  # the image has near-ties in max pooling: judged by local errors
            assert r.local and max(r.local.values()) <= 1e-4 if r.worst > 1e-4 else True
            continue
        assert r.worst <= 1e-4
        assert all(e <= 1e-4 for e in r.layers.values()), max(r.layers.items(), key=lambda kv: kv[1])
    assert v.verdict == "AGREE"
    kinds = " ".join(d for ok, d in v.results[0].tasks.values())
    if "ssd" in name or "yufacedetectnet" in name:
        assert re.search(r"\b[1-9]\d* detections identical", kinds), kinds  # not a vacuous comparison
    if "yolo" in name:
        assert re.search(r"\b[1-9]\d* scored rows", kinds), kinds


# ---- the README scripts in OpenCV 5 ---------------------------------------------------------------
def readme_script(name: str) -> str:
    text = README.read_text()
    m = re.search(rf"<!-- opencv5-script: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no script {name}"
    return m.group(1)


class _RefnetDnnNet:
    """What the scripts call on cv2.dnn's Net, answered by refnet float64 of the source model."""

    def __init__(self, net):
        self.net, self.blob = net, None

    def setInput(self, blob, name=""):  # noqa: N802 - cv2's API
        self.blob = np.asarray(blob, dtype=np.float64)

    def getUnconnectedOutLayersNames(self):  # noqa: N802
        return tuple(self.net.output_names)

    def forward(self, names=None):
        outs = self.net.forward(self.blob, precision="float64")
        if names is None:
            return outs[self.net.output_names[0]].astype(np.float32)
        return tuple(outs[n].astype(np.float32) for n in names)


def run_script_with_refnet(script: str, net, image: Path) -> str:
    """The script, in this interpreter, with cv2.dnn.readNetFromONNX replaced by the refnet source net."""
    import cv2

    fake = types.ModuleType("cv2")
    fake.__dict__.update({k: getattr(cv2, k) for k in ("imread", "resize")})
    fake.dnn = types.SimpleNamespace(readNetFromONNX=lambda path: _RefnetDnnNet(net),
                                     blobFromImage=cv2.dnn.blobFromImage, NMSBoxes=cv2.dnn.NMSBoxes)
    old_argv, old_cv2 = sys.argv, sys.modules.get("cv2")
    buf = io.StringIO()
    try:
        sys.argv = ["script", "model.onnx", str(image)]
        sys.modules["cv2"] = fake
        with contextlib.redirect_stdout(buf):
            exec(compile(script, "readme-script", "exec"), {"__name__": "__main__"})
    finally:
        sys.argv = old_argv
        sys.modules["cv2"] = old_cv2
    return buf.getvalue()


def _parse(lines: str) -> list[tuple[str, int, float, list[int]]]:
    out = []
    for line in lines.strip().splitlines():
        toks = line.split()
        box = [int(t) for t in toks[toks.index("box") + 1:]] if "box" in toks else []
        out.append((toks[0], int(toks[1]), float(toks[2]), box))
    return out


def _same(got: str, want: str) -> None:
    g, w = _parse(got), _parse(want)
    assert len(g) == len(w) and len(w) > 0, (got, want)
    for a, b in zip(g, w):
        assert a[:2] == b[:2], (got, want)
        assert abs(a[2] - b[2]) <= 2e-4, (got, want)
        assert all(abs(p - q) <= 1 for p, q in zip(a[3], b[3])), (got, want)


def _script_case(name: str, tmp_path: Path, models: Path) -> tuple[object, Path]:
    from refnet import archs

    if name == "classify.py":
        proto, model = archs.googlenet(width=0.25, seed=1).write(tmp_path / "googlenet")
        return refnet.load(proto, model), tmp_path / "model.onnx"
    if name == "ssd_detect.py":
        proto, model = archs.mobilenet_ssd(width=0.5, seed=0, conf_gain=8.0).write(tmp_path / "mobilenet_ssd")
        return refnet.load(proto, model), tmp_path / "model.onnx"
    cfg = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    return refnet.load(cfg, cfg.with_suffix(".weights")), tmp_path / "model.onnx"


@pytest.mark.models
@pytest.mark.parametrize("name,image", [("classify.py", "space_shuttle.jpg"), ("ssd_detect.py", "darknet_horses.jpg"),
                                        ("yolo_detect.py", "darknet_dog.jpg")])
def test_readme_scripts_in_opencv5(name, image, tmp_path, models, images_dir, cv5_python):
    script = readme_script(name)
    net, onnx_path = _script_case(name, tmp_path, models)
    shape = (1, 3, 224, 224) if name == "classify.py" else (1, 3, 300, 300) if name == "ssd_detect.py" else None
    export_onnx(net, onnx_path, input_shapes=shape)
    (tmp_path / name).write_text(script)
    r = subprocess.run([cv5_python, str(tmp_path / name), str(onnx_path), str(images_dir / image)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    _same(r.stdout, run_script_with_refnet(script, net, images_dir / image))


# ---- command line -----------------------------------------------------------------------------------
@pytest.mark.models
def test_cli_convert_exit_codes_and_json(models, tmp_path, capsys):
    from refnet.cli import main

    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    weights = proto.parent / "lenet_iter_10000.caffemodel"
    out, js = tmp_path / "lenet.onnx", tmp_path / "proof.json"
    assert main(["convert", str(proto), str(weights), "-o", str(out), "--backend", "ort", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "verdict: AGREE" in text and "onnxruntime" in text
    proof = json.loads(js.read_text())
    assert proof["verdict"] == "AGREE" and proof["backends"][0]["outputs"]["prob"]["ok"]
    assert len(proof["backends"][0]["layers"]) >= 8  # per layer: every layer tensor with a counterpart
    import onnx

    m = onnx.load(str(out))
    assert [i.name for i in m.graph.input] == ["data"] and [o.name for o in m.graph.output] == ["prob"]
    # user errors: exit 2
    with pytest.raises(SystemExit) as bad_opset:  # an argument error, before the model is loaded
        main(["convert", str(proto), str(weights), "-o", str(out), "--opset", "12", "--no-verify"])
    assert bad_opset.value.code == 2
    assert main(["convert", str(tmp_path / "nope.prototxt"), "-o", str(out)]) == 2
    assert main(["convert", str(proto), "-o", str(out)]) == 2  # a prototxt without weights (no --seeded-weights)
    assert "--seeded-weights" in capsys.readouterr().err


def test_cli_convert_refuses_an_unexpressible_layer(tmp_path, capsys):
    """A DetectionOutput with adaptive NMS (eta < 1) has no exact ONNX form: exit 2 naming the layer."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    from refnet.cli import main

    rng = np.random.default_rng(0)
    layers = [
        Layer("loc", "Convolution", ["data"], ["loc"], {"convolution_param": {"num_output": 8, "kernel_size": 1}},
              [rng.standard_normal((8, 3, 1, 1)).astype(np.float32), np.zeros(8, np.float32)]),
        Layer("locf", "Flatten", ["loc"], ["locf"]),
        Layer("conf", "Convolution", ["data"], ["conf"], {"convolution_param": {"num_output": 4, "kernel_size": 1}},
              [rng.standard_normal((4, 3, 1, 1)).astype(np.float32), np.zeros(4, np.float32)]),
        Layer("conff", "Flatten", ["conf"], ["conff"]),
        Layer("pri", "PriorBox", ["loc", "data"], ["pri"], {"prior_box_param": {"min_size": [2.0],
                                                                                "aspect_ratio": [2.0], "flip": False}}),
        Layer("det", "DetectionOutput", ["locf", "conff", "pri"], ["det"], {"detection_output_param": {
            "num_classes": 2, "nms_param": {"nms_threshold": 0.45, "eta": 0.5}, "keep_top_k": 10}}),
    ]
    proto, model = write_net(NetSpec(layers, {"data": (1, 3, 4, 4)}), tmp_path)
    assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "'det'" in err and "eta" in err
    assert not (tmp_path / "x.onnx").exists()


def _small_caffe_net(folder: Path, channels: int = 3) -> tuple[Path, Path]:
    """A two-layer Caffe net (conv, ReLU) written by the test-side writer."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    w = np.random.default_rng(0).standard_normal((4, channels, 3, 3)).astype(np.float32)
    layers = [Layer("conv", "Convolution", ["data"], ["conv"], {"convolution_param": {"num_output": 4,
                                                                                       "kernel_size": 3}},
                    [w, np.zeros(4, np.float32)]),
              Layer("relu", "ReLU", ["conv"], ["relu"])]
    return write_net(NetSpec(layers, {"data": (1, channels, 8, 8)}), folder)


def test_cli_convert_checks_its_outputs_before_the_work(tmp_path, capsys):
    """--json into a missing folder (or -o into one) fails at once: no ONNX file written, the flag named."""
    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    out = tmp_path / "net.onnx"
    assert main(["convert", str(proto), str(model), "-o", str(out), "--backend", "ort",
                 "--json", str(tmp_path / "missing" / "proof.json")]) == 2
    err = capsys.readouterr().err
    assert "--json" in err and "does not exist" in err
    assert not out.exists()
    assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "missing" / "net.onnx")]) == 2
    assert "-o/--output" in capsys.readouterr().err


def test_cli_convert_bad_backend_or_image_writes_nothing(tmp_path, capsys):
    """An unknown --backend, a missing or undecodable --image: exit 2 before the ONNX file is written."""
    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    out = tmp_path / "net.onnx"
    (tmp_path / "not-an-image.png").write_text("text")
    for extra, msg in ((["--backend", "bogus"], "unknown backend 'bogus'"),
                       (["--image", str(tmp_path / "nope.png")], "image not found"),
                       (["--image", str(tmp_path / "not-an-image.png")], "cannot decode image")):
        assert main(["convert", str(proto), str(model), "-o", str(out), *extra]) == 2
        assert msg in capsys.readouterr().err
        assert not out.exists()
    # an input that is no image (15 channels, as MTCNN det4): --image is refused, not silently replaced
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "c15").mkdir()
    proto, model = _small_caffe_net(tmp_path / "c15", channels=15)
    assert main(["convert", str(proto), str(model), "-o", str(out), "--image", str(tmp_path / "img.png")]) == 2
    assert "--image needs an image input" in capsys.readouterr().err
    assert not out.exists()


def test_cli_convert_refuses_an_onnx_source(tmp_path, capsys):
    """An .onnx file is not a source for convert: one clear line (was: the ONNX reader's API hint
    `pass input_shapes={...}` for a symbolic input, or an exporter error on its first reader op)."""
    import onnx
    from onnx import TensorProto, helper

    from refnet.cli import main

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(src))
    for extra in ([], ["--input-shape", "1", "3", "8", "8"]):
        assert main(["convert", str(src), "-o", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert "is an ONNX model already" in err and "input_shapes=" not in err
        assert not out.exists()


def test_cli_convert_without_a_deciding_backend_is_a_user_error(tmp_path, capsys):
    """cv2 4.x alone cannot decide the verdict (reference only): exit 2 before writing, not a
    "verdict: DIFFER" under a table where every row agrees."""
    pytest.importorskip("cv2")
    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    out = tmp_path / "net.onnx"
    assert main(["convert", str(proto), str(model), "-o", str(out), "--backend", "cv2-inprocess"]) == 2
    captured = capsys.readouterr()
    assert "reference only" in captured.err and "--backend ort" in captured.err
    assert "DIFFER" not in captured.out and not out.exists()
    assert main(["convert", str(proto), str(model), "-o", str(out), "--backend", "cv2-inprocess", "--backend",
                 "ort"]) == 0
    assert "verdict: AGREE" in capsys.readouterr().out


def test_cli_convert_refuses_a_negative_seed(tmp_path, capsys):
    """--seed -1 is an argument error naming --seed (was numpy's bare "expected non-negative integer")."""
    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["convert", str(proto), str(model), "-o", str(tmp_path / "net.onnx"), "--seed", "-1"])
    assert e.value.code == 2
    assert "--seed: must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "net.onnx").exists()


def test_cli_convert_two_inputs_with_an_input_shape(tmp_path, capsys):
    """A two-input net (as Faster R-CNN's data + im_info) is refused with the same line whether or
    not --input-shape is given (was: the exporter's "input shapes must be given for exactly ...")."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    from refnet.cli import main

    layers = [Layer("sum", "Eltwise", ["a", "b"], ["sum"])]
    proto, model = write_net(NetSpec(layers, {"a": (1, 3, 4, 4), "b": (1, 3, 4, 4)}), tmp_path)
    for extra in ([], ["--input-shape", "1", "3", "4", "4"]):
        assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "x.onnx"), *extra]) == 2
        assert "convert supports one input" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_convert_differ_line_names_the_backend(tmp_path, capsys, monkeypatch):
    """A target backend off by 1e-2 (onnxruntime's outputs, perturbed): exit 1 and a verdict line
    naming that backend, not "DIFFER (outputs within 0.0001 ...)" which reads as agreement."""
    from refnet.cli import main
    from refnet.crosscheck import onnx_candidates

    class Off:
        name = "off-by-1e-2 1.0"

        def run(self, path, feeds, outputs):
            got = OrtBackend().run(path, feeds, outputs)
            return {k: v + np.float32(1e-2) for k, v in got.items()}

    monkeypatch.setattr(onnx_candidates, "select_backends", lambda specs: [OrtBackend(), Off()])
    proto, model = _small_caffe_net(tmp_path)
    assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "x.onnx")]) == 1
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("verdict:")]
    assert line and line[0].startswith("verdict: DIFFER (off-by-1e-2 1.0: DIFFER; needed: outputs within")
    assert "onnxruntime" not in line[0]


def test_cli_convert_wrong_sized_backend_output_is_a_disagreement(tmp_path, capsys, monkeypatch):
    """A backend whose output has the wrong size (a column short) is a DIFFER row in the table,
    not a crash of the task check ("cannot reshape array ...", exit 2, no table)."""
    from refnet.cli import main
    from refnet.crosscheck import onnx_candidates

    class Short:
        name = "short 1.0"

        def run(self, path, feeds, outputs):
            return {k: v[..., :-1] for k, v in OrtBackend().run(path, feeds, outputs).items()}

    monkeypatch.setattr(onnx_candidates, "select_backends", lambda specs: [OrtBackend(), Short()])
    proto, model = _small_caffe_net(tmp_path)
    js = tmp_path / "proof.json"
    assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "x.onnx"), "--no-layers",
                 "--json", str(js)]) == 1
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("short 1.0"))
    assert "DIFFER" in row and "shape [1, 4, 6, 5] vs refnet [1, 4, 6, 6]" in row
    assert "verdict: DIFFER (short 1.0: DIFFER" in out
    # the proof is strict JSON (no Infinity/NaN tokens): the infinite error is written as 1e308, as compare does

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    proof = json.loads(js.read_text(), parse_constant=no_constants)
    assert proof["verdict"] == "DIFFER" and proof["backends"][1]["outputs"]["relu"]["scaled_error"] == 1e308


def test_cli_convert_says_when_the_weights_are_seeded(tmp_path, capsys):
    """An architecture converted with --seeded-weights is said to carry random weights, on the
    command line and in the ONNX file's doc_string; a prototxt with its caffemodel is not."""
    import onnx

    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    for files, seeded in (([str(proto), "--seeded-weights"], True), ([str(proto), str(model)], False)):
        out = tmp_path / f"seeded-{seeded}.onnx"
        assert main(["convert", *files, "-o", str(out), "--no-verify", "--seed", "3"]) == 0
        text = capsys.readouterr().out
        doc = onnx.load(str(out)).doc_string
        assert ("seeded random (He-scaled, calibrated, seed 3)" in text) == seeded
        assert ("Weights: seeded random (seed 3)" in doc) == seeded


def test_cli_convert_input_shape_on_a_2d_input(tmp_path, capsys):
    """A net declaring a 2-D input (InnerProduct on [1, 10]) converts as declared, and onnxruntime
    computes softmax(W x + b) on the file; a 4-D --input-shape for it is refused before anything is
    written (was: a file with a [3, 10, 1, 1] input written, then refnet's run refused that rank)."""
    import onnxruntime as ort
    from writers.caffe_writer import Layer, NetSpec, write_net

    from refnet.cli import main

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((5, 10)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    layers = [Layer("ip", "InnerProduct", ["data"], ["ip"], {"inner_product_param": {"num_output": 5}}, [w, b]),
              Layer("prob", "Softmax", ["ip"], ["prob"])]
    proto, model = write_net(NetSpec(layers, {"data": (1, 10)}), tmp_path)
    out = tmp_path / "x.onnx"
    assert main(["convert", str(proto), str(model), "-o", str(out), "--input-shape", "3", "10", "1", "1"]) == 2
    assert "--input-shape is N C H W, but input data is declared [1, 10]" in capsys.readouterr().err
    assert not out.exists()
    assert main(["convert", str(proto), str(model), "-o", str(out), "--backend", "ort"]) == 0
    x = rng.standard_normal((1, 10)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    z = x.astype(np.float64) @ w.T.astype(np.float64) + b
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_cli_convert_never_overwrites_its_inputs(tmp_path, capsys):
    """-o or --json naming a model file, the image, or each other is refused before anything is written."""
    import cv2

    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    before = {p: p.read_bytes() for p in (proto, model, image)}
    for target in (proto, model, image):
        assert main(["convert", str(proto), str(model), "-o", str(target), "--image", str(image),
                     "--backend", "ort"]) == 2
        assert "would be overwritten" in capsys.readouterr().err
        assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "net.onnx"), "--image", str(image),
                     "--backend", "ort", "--json", str(target)]) == 2
        assert "would be overwritten" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    out = tmp_path / "net.onnx"
    assert not out.exists()
    assert main(["convert", str(proto), str(model), "-o", str(out), "--backend", "ort",
                 "--json", str(tmp_path / "." / "net.onnx")]) == 2
    assert "same file" in capsys.readouterr().err and not out.exists()
    # a different file is fine, and the written model is the ONNX one
    assert main(["convert", str(proto), str(model), "-o", str(out), "--backend", "ort",
                 "--json", str(tmp_path / "proof.json")]) == 0
    import onnx

    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert json.loads((tmp_path / "proof.json").read_text())["verdict"] == "AGREE"


def test_cli_convert_seeds_an_architecture_only_darknet_cfg(tmp_path, capsys):
    """A .cfg alone: exit 2 asking for the .weights or --seeded-weights; with --seeded-weights the
    file is written and verified, and onnxruntime on it matches cv2 4.x reading the Darknet cfg
    with the same seeded weights (refnet.seeded.seeded_darknet_weights, seed 0)."""
    import cv2
    import onnx
    import onnxruntime as ort
    from writers.darknet_writer import cfg_text

    from refnet.cli import main
    from refnet.seeded import seeded_darknet_weights

    cfg = tmp_path / "small.cfg"
    cfg.write_text(cfg_text([
        ("net", {"width": 16, "height": 16, "channels": 3}),
        ("convolutional", {"batch_normalize": 1, "filters": 8, "size": 3, "stride": 1, "pad": 1,
                           "activation": "leaky"}),
        ("maxpool", {"size": 2, "stride": 2}),
        ("convolutional", {"filters": 10, "size": 1, "stride": 1, "pad": 0, "activation": "linear"}),
        ("avgpool", {}),
        ("softmax", {"groups": 1}),
    ]))
    out = tmp_path / "small.onnx"
    assert main(["convert", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--seeded-weights" in err and "weights_bytes" not in err and not out.exists()
    assert main(["convert", str(cfg), "--seeded-weights", "-o", str(out), "--backend", "ort"]) == 0
    assert "verdict: AGREE" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    weights = tmp_path / "small.weights"
    weights.write_bytes(seeded_darknet_weights(cfg, 0))
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x)
    want = net.forward().reshape(-1)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {model.graph.input[0].name: x})[0].reshape(-1)
    assert got.shape == (10,) and np.ptp(want) > 0.05  # seeded weights that separate the classes
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


# ---- round trip: source -> ONNX -> refnet.load_onnx -> same outputs -----------------------------------
@pytest.mark.models
def test_round_trip_through_load_onnx(models, tmp_path):
    load_onnx = getattr(refnet, "load_onnx", None)
    if load_onnx is None:  # the ONNX reader lands in another branch
        pytest.skip("refnet.load_onnx is not available yet")
    cfg = require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    src = refnet.load(cfg, cfg.with_suffix(".weights"))
    path = export_onnx(src, tmp_path / "yolo.onnx")
    back = load_onnx(path)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 320, 320))
    want = src.forward(x, precision="float64")
    got = back.forward(x, precision="float64")
    assert set(back.output_names) == set(src.output_names)
    for k in want:  # the file holds float32 weights (BN folded in float32): float32 rounding of weights only
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6 * float(np.abs(want[k]).max()))


def test_cli_convert_checks_the_opset_before_loading(tmp_path, capsys):
    """--opset outside the exporter's 13..17 is an argument error at once (it was found only after
    the model had loaded); the model path here does not even exist."""
    from refnet.cli import main

    for bad in ("12", "18", "x"):
        with pytest.raises(SystemExit) as e:
            main(["convert", str(tmp_path / "missing.prototxt"), "-o", str(tmp_path / "n.onnx"), "--opset", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--opset" in err and "missing.prototxt" not in err, err


def test_cli_convert_runs_a_backend_named_twice_once(tmp_path, capsys):
    """--backend ort --backend ort verifies in one onnxruntime (it ran and printed it twice)."""
    pytest.importorskip("onnxruntime")
    from refnet.cli import main
    from refnet.crosscheck.onnx_candidates import select_backends

    assert [b.name for b in select_backends(["ort", "ort"])] == [b.name for b in select_backends(["ort"])]
    proto, model = _small_caffe_net(tmp_path)
    js = tmp_path / "v.json"
    assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "n.onnx"), "--backend", "ort",
                 "--backend", "ort", "--json", str(js)]) == 0
    assert len(json.loads(js.read_text())["backends"]) == 1


def test_cli_convert_says_seeded_weights_are_ignored_with_a_weights_file(tmp_path, capsys):
    """--seeded-weights beside a .caffemodel: the file's weights are converted (the ONNX weights equal
    the caffemodel's) and a note says the flag was ignored."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import numpy_helper

    from refnet.cli import main

    proto, model = _small_caffe_net(tmp_path)
    out = tmp_path / "n.onnx"
    assert main(["convert", str(proto), str(model), "-o", str(out), "--seeded-weights", "--no-verify"]) == 0
    assert "--seeded-weights ignored" in capsys.readouterr().out
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)  # _small_caffe_net's conv
    inits = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer]
    assert any(a.shape == w.shape and np.array_equal(a, w) for a in inits)


def test_cli_convert_prints_line_by_line_through_a_pipe(tmp_path, monkeypatch):
    """convert's output is line-buffered even when stdout is a pipe (| tee): the header comes at
    once, not with the verdict minutes later."""
    from refnet.cli import main

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", line_buffering=False, write_through=False)
    monkeypatch.setattr(sys, "stdout", stream)
    proto, model = _small_caffe_net(tmp_path)
    assert main(["convert", str(proto), str(model), "-o", str(tmp_path / "n.onnx"), "--no-verify"]) == 0
    assert stream.line_buffering
    assert raw.getvalue().decode().startswith("refnet convert: ")  # reached the bytes without a flush
