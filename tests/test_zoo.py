"""The model zoo registry, lookup, preprocessing presets and the `refnet models` CLI.

Oracles: /work/shared/models/manifest.json (checksums, sizes, source commits), hashlib over
the real files, the input sizes the model files themselves declare, cv2.dnn.blobFromImage.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from refnet import zoo
from refnet.cli import main
from refnet.errors import RefnetError


@pytest.fixture
def manifest(models: Path) -> dict[str, dict]:
    """Every file of manifest.json, by relative path."""
    m = json.loads((models / "manifest.json").read_text())
    return {f["file"]: f for e in m["models"] for f in e["files"]}


@pytest.fixture
def roots(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """REFNET_MODELS = the shared models, REFNET_CACHE = an empty temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFNET_MODELS", str(models))
    monkeypatch.setenv("REFNET_CACHE", str(cache))
    return models, cache


def _all_files() -> dict[str, zoo.ModelFile]:
    out: dict[str, zoo.ModelFile] = {}
    for m in zoo.entries():
        for f in m.files:
            assert out.setdefault(f.path, f) == f, f"{f.path} is described twice, differently"
    return out


# ---- the registry ---------------------------------------------------------------------------------------
def test_registry_has_the_required_models():
    want = {
        "yufacedetectnet-v1", "yufacedetectnet-v2", "ultraface-rfb-320", "ultraface-slim-320",
        "mtcnn-det1", "mtcnn-det2", "mtcnn-det3", "mtcnn-det4", "lenet-mnist", "enet-cityscapes",
        "enet-cityscapes-cpu", "yolo-fastest-1.1", "yolo-fastest-1.1-xl", "bvlc-googlenet",
        "mobilenet-ssd-voc", "res10-ssd-face", "squeezenet-1.0", "squeezenet-1.1", "enet",
        "yolov2-tiny-voc", "yolov2-tiny", "yolov3-tiny", "fns-eccv16-starry-night",
        "fns-eccv16-la-muse", "fns-in-the-scream", "fns-in-candy", "fns-in-mosaic", "fns-in-udnie",
        "fns-in-feathers", "fns-eccv16-composition-vii",
    }
    assert want <= set(zoo.names())
    for m in zoo.entries():
        assert m.task in zoo.TASKS and m.framework in ("caffe", "torch", "darknet")
        assert m.main_files[0].role == "model", f"{m.name}: architecture file first"
        assert m.license and m.description, m.name
        if m.labels is not None:
            assert any(f.path == m.labels and f.role == "labels" for f in m.files), m.name
        for f in m.files:
            assert f.url or f.derived_from, f"{m.name}: {f.path} has neither a URL nor a derivation"
            assert f.url is None or f.url.startswith(("https://", "http://")), f.url


def test_manifest_files_are_registered_with_the_manifest_checksums(manifest, models):
    files = _all_files()
    missing = sorted(set(manifest) - set(files))
    assert not missing, f"manifest files not in the zoo: {missing}"
    for rel, mf in manifest.items():
        f = files[rel]
        assert f.sha256 == mf["sha256"], rel
        assert f.size == mf["size"], rel
        if f.derived_from is None and "opencv/opencv" not in (f.url or ""):
            # the URL is the source repository at the commit the manifest names
            assert f.url == f"https://github.com/{mf['source_repo']}/raw/{mf['commit']}/{mf['path_in_repo']}", rel


def test_registered_checksums_match_the_real_bytes(models):
    """hashlib over the shared files: every registered sha256 (and published sha1) of a file on disk holds."""
    checked = 0
    for rel, f in _all_files().items():
        p = models / rel
        if not p.is_file():
            continue
        data = p.read_bytes()
        if f.size is not None:
            assert len(data) == f.size, rel
        for algo, want in f.checksums.items():
            assert hashlib.new(algo, data).hexdigest() == want, f"{rel}: {algo}"
            checked += 1
    assert checked >= 40


def test_checksums_are_never_invented_for_unknown_files():
    """Weights nobody published a checksum for stay unchecked (None), and every given digest is well formed."""
    assert _all_files()["yolov2_tiny/yolov2-tiny.weights"].checksums == {}
    assert _all_files()["fast_neural_style/instance_norm/candy.t7"].checksums == {}
    assert _all_files()["fast_neural_style/eccv16/starry_night.t7"].sha1 == "5b5e115253197b84d6c6ece1dafe6c15d7105ca6"
    with pytest.raises(ValueError, match="sha256"):
        zoo.ModelFile("a/b.bin", "weights", "https://x", sha256="ABC")
    with pytest.raises(ValueError, match="relative"):
        zoo.ModelFile("/etc/passwd", "weights")
    with pytest.raises(ValueError, match="relative"):
        zoo.ModelFile("a/../../b", "weights")
    with pytest.raises(ValueError, match="role"):
        zoo.ModelFile("a/b", "bogus")


def _declared_wh(path: Path) -> tuple[int, int]:
    """(width, height) the model file itself declares: Caffe input dims or Darknet width/height."""
    text = path.read_text()
    if path.suffix == ".cfg":
        w = int(re.search(r"^width\s*=\s*(\d+)", text, re.M).group(1))
        h = int(re.search(r"^height\s*=\s*(\d+)", text, re.M).group(1))
        return w, h
    dims = [int(d) for d in re.findall(r"(?:input_dim|dim)\s*:\s*(\d+)", text)[:4]]
    return dims[3], dims[2]


@pytest.mark.parametrize("name", ["yufacedetectnet-v1", "yufacedetectnet-v2", "ultraface-rfb-320", "ultraface-slim-320",
                                  "mtcnn-det2", "mtcnn-det3", "mtcnn-det4", "lenet-mnist", "yolo-fastest-1.1",
                                  "yolo-fastest-1.1-xl", "bvlc-googlenet", "mobilenet-ssd-voc", "res10-ssd-face",
                                  "squeezenet-1.1", "yolov2-tiny-voc", "yolov2-tiny", "yolov3-tiny"])
def test_preprocess_size_is_what_the_model_declares(roots, name):
    loc = zoo.find(name)
    arch = loc.path_of("model")
    assert arch is not None
    assert loc.entry.preprocess.size == _declared_wh(arch)


def test_preprocess_blob_is_cv2s(images_dir):
    img = cv2.imread(str(images_dir / "voc2007_000001.jpg"))
    for name in ("yufacedetectnet-v2", "ultraface-rfb-320", "yolo-fastest-1.1", "bvlc-googlenet", "mobilenet-ssd-voc"):
        p = zoo.get(name).preprocess
        want = cv2.dnn.blobFromImage(img, p.scale, p.size, p.mean, p.swap_rb, p.crop)
        np.testing.assert_array_equal(p.blob(img), want, err_msg=name)
    # LeNet: grayscale, one channel
    p = zoo.get("lenet").preprocess
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(p.blob(img), cv2.dnn.blobFromImage(gray, 1 / 256, (28, 28)))
    # MTCNN: RGB, (x - 127.5) / 128, laid out N, C, W, H
    p = zoo.get("mtcnn-det2").preprocess
    crop = img[40:140, 60:160]
    rgb = cv2.resize(crop, (24, 24))[:, :, ::-1].astype(np.float32)
    want = ((rgb - 127.5) * 0.0078125).transpose(2, 1, 0)[None]
    np.testing.assert_allclose(p.blob(crop), want, rtol=0, atol=1e-6)
    assert p.blob(crop).shape == (1, 3, 24, 24)


def test_labels(roots):
    assert len(zoo.read_labels("bvlc-googlenet")) == 1000
    assert zoo.read_labels("bvlc-googlenet")[281].startswith("n02123045 tabby")
    voc = zoo.read_labels("mobilenet-ssd-voc")
    assert len(voc) == 20 and voc[14] == "person" and zoo.get("mobilenet-ssd-voc").label_offset == 1
    assert len(zoo.read_labels("yolov3-tiny")) == 80
    enet = zoo.read_labels("enet-cityscapes")
    assert len(enet) == 20 and enet[:2] == ["Unlabeled", "Road"]
    assert zoo.read_labels("lenet-mnist") is None


# ---- lookup -------------------------------------------------------------------------------------------
def test_find_reports_found_and_missing_per_file(roots):
    models, cache = roots
    loc = zoo.find("lenet-mnist")
    assert loc.found and loc.status == "found" and loc.roots == (models,)
    assert [p.name for p in loc.main_paths] == ["lenet.prototxt", "lenet_iter_10000.caffemodel"]
    g = zoo.find("googlenet")  # alias
    assert g.entry.name == "bvlc-googlenet" and g.status == "arch" and not g.found
    assert [f.path for f in g.missing] == ["bvlc_googlenet/bvlc_googlenet.caffemodel"]
    with pytest.raises(zoo.ModelMissingError, match="refnet models fetch bvlc-googlenet"):
        _ = g.main_paths
    assert zoo.find("fns-in-candy").status == "missing"


def test_find_searches_models_then_cache(roots):
    models, cache = roots
    # weights only in the cache: found there, prototxt still from REFNET_MODELS
    w = cache / "bvlc_googlenet" / "bvlc_googlenet.caffemodel"
    w.parent.mkdir(parents=True)
    w.write_bytes(b"x")
    loc = zoo.find("bvlc-googlenet")
    assert loc.found and loc.main_paths == (models / "arch_only/bvlc_googlenet/deploy.prototxt", w)
    assert loc.roots == (models, cache)
    # a copy in both: REFNET_MODELS wins
    dup = cache / "lenet_mnist_caffe" / "lenet.prototxt"
    dup.parent.mkdir(parents=True)
    dup.write_text("name: 'other'")
    assert zoo.find("lenet-mnist").main_paths[0] == models / "lenet_mnist_caffe/lenet.prototxt"


def test_located_load_gives_cv2s_net(roots):
    pytest.importorskip("refnet.weights_import.caffe")
    net = zoo.find("lenet-mnist").load()
    ref = cv2.dnn.readNetFromCaffe(*(str(p) for p in zoo.find("lenet-mnist").main_paths))
    assert net.layer_names == tuple(ref.getLayerNames())
    x = np.random.default_rng(3).uniform(0, 1, (1, 1, 28, 28)).astype(np.float32)
    ref.setInput(x)
    np.testing.assert_allclose(net.forward(x)["prob"], ref.forward(), rtol=0, atol=1e-5)


def test_find_without_refnet_models(tmp_path, monkeypatch):
    monkeypatch.delenv("REFNET_MODELS", raising=False)
    monkeypatch.setattr(zoo, "default_models_dir", lambda: tmp_path / "no-shared-models")  # no checkout sibling
    monkeypatch.setenv("REFNET_CACHE", str(tmp_path))
    assert zoo.search_roots() == (tmp_path,)
    assert zoo.find("lenet-mnist").status == "missing"
    monkeypatch.delenv("REFNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "refnet" / "models"


def test_unknown_name_lists_close_matches():
    with pytest.raises(zoo.UnknownModelError) as ei:
        zoo.get("googlnet")
    assert "bvlc-googlenet" in str(ei.value) and isinstance(ei.value, KeyError)
    assert isinstance(ei.value, RefnetError)
    with pytest.raises(KeyError, match="mtcnn-det1, mtcnn-det2, mtcnn-det3, mtcnn-det4"):
        zoo.get("mtcnn")
    with pytest.raises(KeyError, match=r"unknown model 'zzzz' \(`refnet models list`"):
        zoo.get("zzzz")
    with pytest.raises(TypeError):
        zoo.get(None)  # type: ignore[arg-type]
    assert zoo.get("LeNet_MNIST").name == "lenet-mnist"  # case, '_' and spaces are ignored


# ---- CLI -------------------------------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refnet: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_models_list(roots, capsys):
    models, _ = roots
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "framework", "task", "status", "where"]
    rows = {ln.split()[0]: ln.split() for ln in out[1:-1]}
    assert rows["lenet-mnist"][1:5] == ["caffe", "classify", "found", str(models)]
    assert rows["bvlc-googlenet"][3] == "arch"
    assert rows["fns-in-candy"][3:] == ["missing", "-"]
    assert set(rows) == set(zoo.names())
    assert out[-1].startswith(f"{len(zoo.names())} models: 13 found, ")
    assert main(["models", "list", "--task", "segment", "--framework", "torch"]) == 0
    rows = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()[1:-1]]
    assert rows == ["enet-cityscapes", "enet-cityscapes-cpu", "enet"]


def test_cli_models_path(roots, capsys):
    models, _ = roots
    assert main(["models", "path", "lenet-mnist"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(models / "lenet_mnist_caffe/lenet.prototxt"),
                   str(models / "lenet_mnist_caffe/lenet_iter_10000.caffemodel")]
    assert main(["models", "path", "--all", "enet-cityscapes"]) == 0
    assert capsys.readouterr().out.split() == [str(models / "enet_cityscapes_torch/model-best.net"),
                                               str(models / "enet_cityscapes_torch/enet-classes.txt")]


def test_cli_models_path_errors(roots, capsys):
    assert main(["models", "path", "bvlc-googlenet"]) == 2
    cap = capsys.readouterr()
    line = _one_error_line(cap.err)
    assert cap.out == ""
    assert "bvlc_googlenet/bvlc_googlenet.caffemodel" in line and "refnet models fetch bvlc-googlenet" in line
    assert main(["models", "path", "googlnet"]) == 2
    assert "did you mean bvlc-googlenet" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(zoo.ModelMissingError):
        main(["--debug", "models", "path", "bvlc-googlenet"])
    with pytest.raises(SystemExit) as ei:  # argparse: subcommand and name are required
        main(["models", "path"])
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        main(["models"])
    assert ei.value.code == 2
    capsys.readouterr()


def test_cli_models_info(roots, capsys):
    assert main(["models", "info", "mobilenet-ssd-voc"]) == 0
    out = capsys.readouterr().out
    assert "scale 0.007843, size (300, 300), mean (127.5, 127.5, 127.5)" in out
    assert "sha1 994d30a8afaa9e754d17d2373b2d62a7dfbaaf7a" in out
    assert "labels: labels/voc.names (index offset 1)" in out
    assert "mobilenet_ssd_voc/MobileNetSSD_deploy.caffemodel: MISSING" in out
    assert main(["models", "info", "nope"]) == 2
    _one_error_line(capsys.readouterr().err)
