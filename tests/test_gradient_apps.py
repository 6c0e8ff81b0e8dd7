"""The applications of net.backward: Gatys stylisation (objective gradient vs finite differences,
monotone L-BFGS totals on a real photo pair, the picture written), transfer learning (LeNet ->
scikit-learn digits: accuracy over the linear baseline, the written Caffe model predicting as
cv2.dnn does, cached features), saliency (the explained score's gradient vs finite differences,
classification and SSD detection), and the Caffe deploy writer's block splitter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TOL, require_model

import refnet
from refnet import cli, explain, gatys, zoo
from refnet.archs import CaffeNetBuilder, mobilenet_ssd
from refnet.caffe_deploy import split_blocks

EPS = 1e-7


def _tiny_net(tmp_path, hw=(24, 32)):
    b = CaffeNetBuilder("tiny", (1, 3) + hw, seed=3)
    x = b.conv_relu("conv1", "relu1", "data", 8, 3, pad=1)
    x = b.pool("pool1", x, "MAX", 2, 2)
    x = b.conv_relu("conv2", "relu2", x, 12, 3, pad=1)
    x = b.pool("pool2", x, "AVE", 2, 2)
    b.conv_relu("conv3", "relu3", x, 16, 3, pad=1)
    return b.write(tmp_path / "tiny")


def test_gatys_objective_gradient_matches_finite_differences(tmp_path):
    net = refnet.load(*_tiny_net(tmp_path))
    rng = np.random.default_rng(0)
    xc, xs = rng.uniform(-100, 100, (2, 1, 3, 24, 32))
    loss = gatys.GatysLoss(net, xc, xs, "relu2", ["relu1", "relu2", "relu3"], (1.0, 50.0, 5.0), "float64")
    x = xc + rng.normal(0, 10, xc.shape)
    terms, g = loss(x)
    assert terms["total"] == pytest.approx(terms["content"] + terms["style"] + terms["tv"])
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        fd = (loss(x + EPS * v)[0]["total"] - loss(x - EPS * v)[0]["total"]) / (2 * EPS)
        assert abs(fd - float(np.sum(g * v))) <= TOL["grad_fd"] * abs(fd)
    # at x = content the content term is 0 and the style term equals its weight times the normalised mismatch
    t0, _ = loss(xc)
    assert t0["content"] == 0.0 and t0["style"] > 0


def test_stylize_cli_lowers_the_loss_monotonically(tmp_path, images_dir, capsys):
    proto, model = _tiny_net(tmp_path, (48, 64))
    content, style = images_dir / "voc2007_000456.jpg", images_dir / "caffe_fish-bike.jpg"
    out = tmp_path / "styled.png"
    rc = cli.main(["stylize", "--optimize", str(content), str(style), "--model", str(proto), str(model),
                   "--steps", "6", "--size", "64", "48", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    totals = [float(m) for m in re.findall(r"total (\S+)\s+content", text)]
    assert len(totals) >= 4
    assert all(b <= a for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < 0.8 * totals[0]
    img = cv2.imread(str(out))
    assert img.shape == (48, 64, 3)
    assert float(np.abs(img.astype(float) - cv2.resize(cv2.imread(str(content)), (64, 48))).mean()) > 1.0


def test_stylize_errors(tmp_path, images_dir):
    proto, model = _tiny_net(tmp_path)
    img = str(images_dir / "voc2007_000456.jpg")
    assert cli.main(["stylize", "--optimize", img, img, "--model", str(proto), str(model),
                     "--content-layer", "nope", "--steps", "1", "-o", str(tmp_path / "x.png")]) == 2
    assert cli.main(["stylize", "--model", str(proto), str(model)]) == 2
    # a working size of 0 x 0 used to run at the photo's own size under a "0x0 pixels" header
    for bad in (["--size", "0", "0"], ["--max-side", "0"]):
        assert cli.main(["stylize", "--optimize", img, img, "--model", str(proto), str(model), *bad,
                         "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


@pytest.mark.models
def test_stylize_default_size_fits_a_yolo_net(models, tmp_path, images_dir, capsys):
    """README's yolo-fastest recipe on its photo pair: --max-side 192 of a 500x375 photo is 192x144,
    which YOLO's route/concat layers cannot take (Darknet wants multiples of 32: 144/2^5 is not
    whole); that ended in a bare concat shape error. The default working size now moves to the
    nearest size the net takes, 192x128; an explicit --size the net cannot take is a stylize error."""
    require_model(models, "yolo_fastest_darknet/yolo-fastest-1.1.cfg")
    content, style = str(images_dir / "voc2007_000456.jpg"), str(images_dir / "caffe_fish-bike.jpg")
    out = tmp_path / "y.png"
    assert cli.main(["stylize", "--optimize", content, style, "--zoo", "yolo-fastest-1.1", "--steps", "1",
                     "-o", str(out)]) == 0
    assert "stylize: 192x128 pixels" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == (128, 192, 3)
    assert cli.main(["stylize", "--optimize", content, style, "--zoo", "yolo-fastest-1.1", "--size", "192", "144",
                     "--steps", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refnet: error: the model does not take a 192x144 image") and err.count("\n") == 1


def test_default_layers_recipe(tmp_path):
    net = refnet.load(*_tiny_net(tmp_path))
    content, styles = gatys.default_layers(net, (1, 3, 24, 32))
    assert content in styles and all(s.startswith("relu") for s in styles)
    vgg = gatys.vgg19_features((32, 32))
    assert "relu4_2" in vgg.prototxt() and "relu5_1" in vgg.prototxt()


def test_split_blocks_handles_quotes_comments_and_nesting():
    text = ('name: "a{b"  # a comment with { and }\ninput: "data"\ninput_shape { dim: 1 dim: 3 }\n'
            'layer { name: "x}" type: "Conv" param { lr_mult: 1 } }\nlayers: < name: \'y\' >\n')
    blocks = split_blocks(text)
    assert [k for _, _, k in blocks] == ["input_shape", "layer", "layers"]
    assert text[blocks[1][0]:blocks[1][1]].endswith("lr_mult: 1 } }")


# ---- transfer learning ------------------------------------------------------------------------------------
@pytest.mark.models
def test_transfer_lenet_to_sklearn_digits(models, tmp_path, capsys):
    pytest.importorskip("sklearn")
    from refnet import transfer

    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    model = models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel"
    train, valid, base = transfer.write_digits_folders(tmp_path / "digits", baselines=("raw 8x8 pixels",))
    report = tmp_path / "r.json"
    args = ["transfer", str(proto), str(model), "--layer", "relu1", "--train", str(train), "--valid", str(valid),
            "-o", str(tmp_path / "new"), "--json", str(report)]
    assert cli.main(args) == 0
    r = json.loads(report.read_text())
    assert r["valid_accuracy"] >= 0.98 and r["valid_accuracy"] > base["raw 8x8 pixels"]
    n_valid = sum(1 for _ in valid.rglob("*.png"))
    assert r["cv2_agree"] == n_valid  # refnet and cv2.dnn on the written model: the head's own predictions
    assert "misclassified valid images" in capsys.readouterr().out
    # the features were cached: asking again for the same model, layer, preprocessing and images reads them
    paths, _, _ = transfer.list_images(valid)
    net0 = refnet.load(proto, model)
    feats, hit = transfer.extract_features(net0, "relu1", paths, zoo.get("lenet-mnist").preprocess,
                                           cache_dir=tmp_path / "digits" / ".refnet-features",
                                           model_files=[str(proto), str(model)])
    assert hit and feats.shape == (len(paths), 500)
    # the written model is an ordinary Caffe model: same probabilities in refnet and cv2.dnn
    net = refnet.load(tmp_path / "new.prototxt", tmp_path / "new.caffemodel")
    cvnet = cv2.dnn.readNetFromCaffe(str(tmp_path / "new.prototxt"), str(tmp_path / "new.caffemodel"))
    img = cv2.imread(str(next(valid.rglob("*.png"))), cv2.IMREAD_GRAYSCALE)
    blob = cv2.dnn.blobFromImage(img, 1 / 256, (28, 28))
    cvnet.setInput(blob)
    np.testing.assert_allclose(net.forward(blob)["prob"], cvnet.forward(), atol=1e-5)


def _digit_folders(root, n_per_class=4):
    """Two classes of 28x28 MNIST-like pictures (a vertical bar, a ring) as train/valid folders."""
    rng = np.random.default_rng(5)
    for split in ("train", "valid"):
        for cls in ("bar", "ring"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n_per_class):
                img = np.zeros((28, 28), np.uint8)
                c = 14 + int(rng.integers(-2, 3))
                if cls == "bar":
                    cv2.line(img, (c, 5), (c, 22), 255, 3)
                else:
                    cv2.circle(img, (c, 14), 7, 255, 2)
                cv2.imwrite(str(root / split / cls / f"{i}.png"), img)
    return root / "train", root / "valid"


@pytest.mark.models
def test_transfer_cut_at_the_backbones_prob_writes_a_loadable_model(models, tmp_path):
    """Cut at LeNet's own Softmax ``prob``: the head's Softmax used to be written as a second layer
    ``prob`` with top ``prob``, a prototxt refnet refuses (and cv2 reads ambiguously). Now the head
    takes fresh names; oracle: cv2.dnn on the written model gives the original LeNet's ``prob`` (as
    cv2 computes it on the source model) as the backbone blob and refnet's head output."""
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    model = models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel"
    train, valid = _digit_folders(tmp_path / "d")
    report = tmp_path / "r.json"
    assert cli.main(["transfer", str(proto), str(model), "--layer", "prob", "--train", str(train), "--valid",
                     str(valid), "--steps", "20", "-o", str(tmp_path / "new"), "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["cv2_agree"] == 8
    net = refnet.load(tmp_path / "new.prototxt", tmp_path / "new.caffemodel")
    head_out = net.output_names[-1]
    assert head_out != "prob" and "prob" in net.layer_names
    blob = cv2.dnn.blobFromImage(cv2.imread(str(next(valid.rglob("*.png"))), cv2.IMREAD_GRAYSCALE), 1 / 256,
                                 (28, 28))
    src = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    src.setInput(blob)
    cvnew = cv2.dnn.readNetFromCaffe(str(tmp_path / "new.prototxt"), str(tmp_path / "new.caffemodel"))
    cvnew.setInput(blob)
    cv_prob, cv_head = cvnew.forward(["prob", head_out])
    np.testing.assert_allclose(cv_prob, src.forward(), atol=1e-6)
    out = net.forward(blob, outputs=[head_out])[head_out]
    np.testing.assert_allclose(out.reshape(cv_head.shape), cv_head, atol=1e-5)
    assert out.shape[-1] == 2 and float(out.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.models
def test_transfer_refuses_bad_arguments_before_any_work(models, tmp_path, capsys):
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    model = models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel"
    train, valid = _digit_folders(tmp_path / "d", 2)
    base = ["transfer", str(proto), str(model), "--layer", "relu1", "--train", str(train), "--valid", str(valid)]
    for bad, says in ((["--steps", "0"], "--steps"), (["--steps", "-3"], "--steps"), (["--hidden", "-1"], "--hidden"),
                      (["--weight-decay", "-1"], "--weight-decay"), (["-o", str(tmp_path / "no" / "new")], "no"),
                      (["--json", str(tmp_path / "no" / "r.json")], "no")):
        assert cli.main(base + bad) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("refnet: error:") and says in err and err.count("\n") == 1, err
    # refused before the features were extracted (the cache is written by the extraction)
    assert not (tmp_path / "d" / ".refnet-features").exists()
    (tmp_path / "file").write_text("")
    assert cli.main(base + ["--cache", str(tmp_path / "file" / "cache")]) == 2  # a folder under a file
    assert "cannot use the feature cache folder" in capsys.readouterr().err


@pytest.mark.models
def test_transfer_refuses_an_image_over_the_memory_budget_before_decoding(models, tmp_path, monkeypatch, capsys):
    """A training picture declaring 12000x12000 pixels (432 MB decoded, a 20 KB file) under a
    64 MB budget: refused from its header, as `refnet run` does; transfer used to hand it to
    cv2.imread, which allocated the whole picture first."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "attack"))
    from cases import png_bytes

    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    model = models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel"
    train, valid = _digit_folders(tmp_path / "d", 1)
    (train / "bar" / "big.png").write_bytes(png_bytes(12000, 12000, rows=50))
    monkeypatch.setenv("REFNET_MEMORY_BUDGET", "64M")
    assert cli.main(["transfer", str(proto), str(model), "--layer", "relu1", "--train", str(train),
                     "--valid", str(valid), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "big.png" in err and "12000x12000" in err and "memory budget" in err


def test_transfer_and_explain_refuse_a_two_input_net(tmp_path, images_dir, capsys):
    """Two-input nets (Faster R-CNN's data + im_info) got the Python API's 'pass a dict' message."""
    p = tmp_path / "two.prototxt"
    p.write_text('input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                 'input: "im_info" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                 'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "im_info" top: "sum" }\n')
    train, valid = _digit_folders(tmp_path / "d", 1)
    img = str(images_dir / "darknet_dog.jpg")
    for argv, what in ((["transfer", str(p), "--layer", "sum", "--train", str(train), "--valid", str(valid)],
                        "transfer"), (["explain", str(p), "--image", img, "-o", str(tmp_path / "e.png")], "explain")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "inputs ['data', 'im_info']" in err and f"{what} takes a one-input" in err, err


@pytest.mark.models
def test_transfer_refuses_features_over_the_memory_budget_up_front(models, tmp_path, monkeypatch, capsys):
    """LeNet's conv1 on 28x28 digits: 20 maps of 24x24 (5x5 valid convolution) = 11,520 features
    per image; 16 images held three times in float64 = 4,423,680 bytes, over a 3 MiB budget. Refused
    before the extraction (a VGG-style conv layer on a real folder used to run into MemoryError or
    the OOM killer after minutes)."""
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    model = models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel"
    train, valid = _digit_folders(tmp_path / "d", 4)
    monkeypatch.setenv("REFNET_MEMORY_BUDGET", "3M")
    argv = ["transfer", str(proto), str(model), "--train", str(train), "--valid", str(valid), "--steps", "5"]
    assert cli.main([*argv, "--layer", "conv1"]) == 2
    err = capsys.readouterr().err
    assert "11,520 per image, 16 images" in err and "4.2 MiB (4,423,680 bytes)" in err and "memory budget" in err
    assert not (tmp_path / "d" / ".refnet-features").exists()
    monkeypatch.setenv("REFNET_MEMORY_BUDGET", "64M")
    assert cli.main([*argv, "--layer", "conv1"]) == 0


def test_demo_digits_without_scikit_learn_is_a_user_error(tmp_path, monkeypatch, capsys):
    import sys

    for mod in ("sklearn", "sklearn.datasets", "sklearn.linear_model", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if not installed
    assert cli.main(["transfer", "--demo-digits", str(tmp_path / "digits")]) == 2
    err = capsys.readouterr().err
    assert "scikit-learn" in err and "refnet[demo]" in err and "internal error" not in err


# ---- saliency ------------------------------------------------------------------------------------------------
@pytest.mark.models
def test_explain_classification_gradient(models, tmp_path):
    net = refnet.load(require_model(models, "lenet_mnist_caffe/lenet.prototxt"),
                      models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel")
    rng = np.random.default_rng(0)
    blob = rng.uniform(0, 1, (1, 1, 28, 28))
    s = explain.saliency(net, blob, cls=7)
    assert s.map.shape == (28, 28) and s.cls == 7

    def logit(x):
        return float(net.forward(x, outputs=["ip2"], precision="float64")["ip2"][0, 7])

    v = rng.standard_normal(blob.shape)
    fd = (logit(blob + EPS * v) - logit(blob - EPS * v)) / (2 * EPS)
    assert abs(fd - float(np.sum(s.grad * v))) <= TOL["grad_fd"] * abs(fd)
    np.testing.assert_allclose(s.map, np.abs(blob[0, 0] * s.grad[0, 0]))


def test_explain_ssd_detection_score(tmp_path, images_dir):
    proto, model = mobilenet_ssd(input_hw=(96, 96), width=0.25, seed=2, conf_gain=6.0).write(tmp_path / "ssd")
    net = refnet.load(proto, model)
    img = cv2.imread(str(images_dir / "darknet_dog.jpg"))
    blob = cv2.dnn.blobFromImage(img, 1 / 127.5, (96, 96), (127.5, 127.5, 127.5)).astype(np.float64)
    s = explain.saliency(net, blob)
    dets = net.forward(blob, precision="float64")["detection_out"].reshape(-1, 7)
    assert s.score == pytest.approx(float(dets[:, 2].max()), rel=1e-9)
    conf_name = net.graph.node("detection_out").inputs[1]
    conf = net.forward(blob, outputs=[conf_name], precision="float64")[conf_name].reshape(-1)
    where = int(np.argmin(np.abs(conf - s.score)))

    def score(x):
        return float(net.forward(x, outputs=[conf_name], precision="float64")[conf_name].reshape(-1)[where])

    v = np.random.default_rng(1).standard_normal(blob.shape)
    fd = (score(blob + EPS * v) - score(blob - EPS * v)) / (2 * EPS)
    assert abs(fd - float(np.sum(s.grad * v))) <= TOL["grad_fd"] * abs(fd)
    out = explain.overlay(img, s, (0, 0, img.shape[1], img.shape[0]), "test")
    assert out.shape == img.shape


@pytest.mark.models
def test_explain_refuses_a_class_out_of_range(models, tmp_path, images_dir, capsys):
    """LeNet has classes 0..9: --class 10 used to end in an internal IndexError (exit 3) and
    --class -1 silently explained class 9 (numpy's negative index)."""
    proto = require_model(models, "lenet_mnist_caffe/lenet.prototxt")
    files = [str(proto), str(models / "lenet_mnist_caffe" / "lenet_iter_10000.caffemodel")]
    img = str(images_dir / "darknet_dog.jpg")
    for k in ("10", "-1"):
        out = tmp_path / f"why{k}.png"
        assert cli.main(["explain", *files, "--image", img, "--class", k, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("refnet: error: class") and "out of range" in err
        assert not out.exists()
    assert cli.main(["explain", *files, "--image", img, "--class", "9", "-o", str(tmp_path / "ok.png")]) == 0


def test_explain_score_map_class_without_pixels(tmp_path):
    """A 1x1 convolution with zero weights and biases (2, 0, 1): class 0 wins every pixel of the
    6x5 map, so its score is 2 * 30 = 60; class 2 owns no pixel and used to be 'explained' with a
    score of 0 and an all-zero map."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    blobs = [np.zeros((3, 3, 1, 1), np.float32), np.array([2, 0, 1], np.float32)]
    param = {"convolution_param": {"num_output": 3, "kernel_size": 1}}
    conv = Layer("score", "Convolution", ["data"], ["score"], param, blobs)
    net = refnet.load(*write_net(NetSpec([conv], inputs={"data": (1, 3, 5, 6)}, input_style="input_shape"), tmp_path))
    blob = np.random.default_rng(0).uniform(-1, 1, (1, 3, 5, 6))
    s = explain.saliency(net, blob, cls=0)
    assert s.score == pytest.approx(60.0) and s.map.shape == (5, 6)
    with pytest.raises(explain.ExplainError, match="class 2 has no pixel.*present: \\[0\\]"):
        explain.saliency(net, blob, cls=2)


@pytest.mark.models
def test_explain_cli_writes_the_picture(models, tmp_path, images_dir):
    out = tmp_path / "face.png"
    proto = require_model(models, "yufacedetectnet_caffe/yufacedetectnet-open-v2.prototxt")
    files = [str(proto), str(proto.with_suffix(".caffemodel"))]
    assert cli.main(["explain", *files, "--image", str(images_dir / "darknet_person.jpg"), "-o", str(out)]) == 0
    assert cv2.imread(str(out)).shape[:2] == cv2.imread(str(images_dir / "darknet_person.jpg")).shape[:2]


@pytest.mark.models
def test_missing_weights_hint_names_commands_that_take_seeded_weights(models, images_dir, capsys):
    """explain on an architecture-only zoo entry: the hint named --seeded-weights, which explain does
    not have. It names the commands that take it -- each of them does (their own --help) and
    explain is not one of them."""
    require_model(models, "arch_only/rfcn_resnet50/rfcn_pascal_voc_resnet50.prototxt")
    code = cli.main(["explain", "--zoo", "rfcn-resnet50", "--image", str(images_dir / "caffe_cat.jpg")])
    err = capsys.readouterr().err
    if "is missing" not in err:
        pytest.skip("rfcn-resnet50's weights were found (a model cache)")
    assert code == 2
    named = re.search(r"seeded random weights \(([^)]*)\)", err)
    assert named, err
    every = ("run", "compare", "info", "bench", "convert", "stylize", "transfer", "explain", "generate")
    commands = [c for c in every if re.search(rf"\b{c}\b", named.group(1))]
    assert commands and "explain" not in commands
    for c in every:
        with pytest.raises(SystemExit):
            cli.main([c, "--help"])
        assert ("--seeded-weights" in capsys.readouterr().out) == (c in commands), c
