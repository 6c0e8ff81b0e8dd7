"""`refnet demo` (what `make demo` runs) on a tiny subset: the self-check, one real zoo model on a
photo and one built-in generated net; the files it writes and SUMMARY.md's rows."""

from __future__ import annotations

import json

import cv2
import pytest

from refnet.cli import main
from refnet.demo import run_demo


def test_demo_subset_writes_reports_pictures_and_summary(models, images_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REFNET_MODELS", str(models))
    monkeypatch.setenv("REFNET_DEMO_MODELS", "lenet-mnist,deeplab-v3plus")
    out = tmp_path / "demo-out"
    code = main(["demo", "--out", str(out)])
    log = capsys.readouterr().out
    assert code == 0, log
    assert log.index("== 1. kernel self-check") < log.index("== 2. refnet compare") < log.index("== 3. wrote")
    assert "-- [1/2] lenet-mnist ..." in log and "-- [2/2] deeplab-v3plus ..." in log
    assert "2/2 models agree with cv2.dnn" in log
    assert (out / "selfcheck.tsv").read_text().startswith("kernel\tmax_rel_err\tseconds\tok\n")
    for name, picture in (("lenet-mnist", "classify.png"), ("deeplab-v3plus", "segment.png")):
        d = out / name
        assert "verdict: AGREE" in (d / "report.txt").read_text()
        doc = json.loads((d / "report.json").read_text())
        assert doc["schema"] == "refnet.compare" and doc["reports"][0]["model"] == name
        for png in ("report.png", picture):
            img = cv2.imread(str(d / png))
            assert img is not None and min(img.shape[:2]) >= 100, png
    summary = (out / "SUMMARY.md").read_text()
    rows = [ln for ln in summary.splitlines() if ln.startswith("| [")]
    assert [r.split("]")[0][3:] for r in rows] == ["lenet-mnist", "deeplab-v3plus"]
    assert all("| AGREE |" in r for r in rows)
    assert "| zoo | classify | space_shuttle.jpg (28, 28) |" in rows[0]
    assert "| refnet.archs (seeded) | segment |" in rows[1] and "pixels agree" in rows[1]
    assert (out / "builtin-models" / "deeplab-v3plus.prototxt").is_file()
    assert not (out / "builtin-models" / "googlenet.prototxt").exists(), "only what was asked for is built"


def test_demo_without_models_runs_the_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("REFNET_MODELS", str(tmp_path / "no-models-here"))
    lines: list[str] = []
    status, rows = run_demo(tmp_path / "o", models=["deeplab-v3plus"], selfcheck=False, say=lines.append)
    assert status == 0 and [r.name for r in rows] == ["deeplab-v3plus"] and rows[0].verdict_code == "agree"
    assert any("REFNET_MODELS not set" in ln for ln in lines)


def test_demo_unknown_model_name_is_a_user_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "o"), "--models", "lenet-mnist,nosuchnet"]) == 2
    err = capsys.readouterr().err
    assert "unknown demo model(s) nosuchnet" in err and err.count("\n") == 1


@pytest.mark.parametrize("task", ["classify", "detect", "face", "segment"])
def test_demo_photos_exist(images_dir, task):
    from refnet.demo import DEMO_IMAGES

    assert (images_dir / DEMO_IMAGES[task]).is_file()
