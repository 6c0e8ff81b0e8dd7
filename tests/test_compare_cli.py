"""`refnet compare` on the command line: the table and summary, --json validated against the JSON
Schema published in docs/compare-schema.md (a small validator written here), --plot, many images,
exit codes (0 agree, 1 differ, 2 user error: one line, no traceback; --debug shows it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import perturb_cv2

from refnet.archs import CaffeNetBuilder
from refnet.cli import main

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "compare-schema.md"


# ---- a JSON Schema (draft-07 subset) validator: type, const, enum, required, properties,
# additionalProperties, items, minItems, minimum, $ref to #/definitions -----------------------------------
def published_schema() -> dict:
    text = SCHEMA_DOC.read_text()
    m = re.search(r"## JSON Schema\s+```json\n(.*?)```", text, re.S)
    assert m, "docs/compare-schema.md must end with the JSON Schema in a ```json block"
    return json.loads(m.group(1))


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(v, t: str) -> bool:
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, _TYPES[t])


def validate(v, schema: dict, root: dict, path: str = "$") -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        return validate(v, root["definitions"][name], root, path)
    errs: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(v, t) for t in types):
            return [f"{path}: {v!r:.60} is not {types}"]
    if "const" in schema and v != schema["const"]:
        errs.append(f"{path}: {v!r} != {schema['const']!r}")
    if "enum" in schema and v not in schema["enum"]:
        errs.append(f"{path}: {v!r} not in {schema['enum']}")
    if "minimum" in schema and _is(v, "number") and v < schema["minimum"]:
        errs.append(f"{path}: {v} < {schema['minimum']}")
    if isinstance(v, dict):
        errs += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in v]
        props = schema.get("properties", {})
        for k, x in v.items():
            if k in props:
                errs += validate(x, props[k], root, f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += validate(x, schema["additionalProperties"], root, f"{path}.{k}")
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0):
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, x in enumerate(v):
                errs += validate(x, schema["items"], root, f"{path}[{i}]")
    return errs


def test_the_validator_catches_violations():
    s = published_schema()
    doc = {"schema": "refnet.compare", "version": 3, "command": ["refnet", "compare"], "versions": {},
           "platform": "", "verdict_code": "agree", "exit_status": 0, "summary": [], "reports": []}
    assert validate(doc, s, s) == []
    assert validate(dict(doc, version=2), s, s)
    assert validate(dict(doc, exit_status=3), s, s)
    assert validate(dict(doc, verdict_code="fine"), s, s)
    assert validate({k: v for k, v in doc.items() if k != "reports"}, s, s)
    bad_report = {"schema": "refnet.compare/report"}
    assert any("missing 'comparisons'" in e for e in validate(dict(doc, reports=[bad_report]), s, s))


# ---- fixtures: a small generated model and photos ------------------------------------------------------
@pytest.fixture
def model(tmp_path):
    b = CaffeNetBuilder("cli", (1, 3, 20, 24), seed=2)
    x = b.conv("conv1", "data", 6, 3)
    b.relu("relu1", x)
    x = b.pool("pool1", x, "MAX", 2, 2)
    x = b.inner_product("fc", x, 4)
    b.softmax("prob", x)
    return [str(p) for p in b.write(tmp_path / "cli")]


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    r = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(d / f"img{i}.png"), r.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8))
    (d / "notes.txt").write_text("not an image: ignored by the folder scan")
    return d


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---- happy paths ---------------------------------------------------------------------------------------
def test_random_input_table_json_plot(model, tmp_path, capsys):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    code, out, err = run(["compare", *model, "--random", "--size", "24", "20", "--json", str(js), "--plot", str(png)],
                         capsys)
    assert code == 0, err
    assert "[cv2 " in out and "(fusion off, Winograd off) vs refnet float64]" in out
    assert "\nverdict: AGREE\n" in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summary: cli: AGREE | worst vs cv2 f64 ") and "5 layers" in summary
    doc = json.loads(js.read_text())
    s = published_schema()
    assert validate(doc, s, s) == []
    (rep,) = doc["reports"]
    assert rep["input"] == "random input (seed 0)" and rep["input_shape"] == [1, 3, 20, 24]
    assert [c["id"] for c in rep["comparisons"]][:3] == ["refnet_float32", "cv2", "cv2_vs_float32"]
    assert doc["summary"][0]["verdict_code"] == "agree" and doc["verdict_code"] == "agree"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] >= 300 and img.shape[1] >= 600


def test_folder_of_images_one_row_each(model, photos, tmp_path, capsys):
    js = tmp_path / "many.json"
    code, out, err = run(["compare", *model, "--image", str(photos), "--size", "24", "20", "--json", str(js),
                          "--plot", str(tmp_path / "p.png"), "--no-winograd"], capsys)
    assert code == 0, err
    assert "[1/2] img0.png ..." in err and "[2/2] img1.png ..." in err
    rows = [ln for ln in out.splitlines() if ln.startswith("img")]
    assert len(rows) == 2 and all(" agree " in r for r in rows)
    assert out.strip().endswith("summary: cli: 2/2 images AGREE")
    doc = json.loads(js.read_text())
    s = published_schema()
    assert validate(doc, s, s) == [] and [r["input"] for r in doc["reports"]] == ["img0.png", "img1.png"]
    assert (tmp_path / "p-img0.png").is_file() and (tmp_path / "p-img1.png").is_file()


def test_plots_of_images_of_one_stem_are_not_written_over_each_other(model, tmp_path, capsys):
    """x.png and x.bmp (and a/x.png beside them) give three plots, one per image."""
    r = np.random.default_rng(1)
    (tmp_path / "a").mkdir()
    files = [tmp_path / "x.png", tmp_path / "x.bmp", tmp_path / "a" / "x.png"]
    for f in files:
        cv2.imwrite(str(f), r.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    code, out, err = run(["compare", *model, "--image", *map(str, files), "--size", "24", "20",
                          "--plot", str(tmp_path / "p.png"), "--no-winograd"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("p-*.png")) == ["p-x_bmp.png", "p-x_png.png", "p-x_png_2.png"]


def test_layer_filter_and_precision(model, capsys):
    code, out, _ = run(["compare", *model, "--layer", "pool1", "--precision", "float64", "--no-fusion"], capsys)
    assert code == 0
    table_rows = [ln for ln in out.splitlines() if ln.startswith("  ") and " max_pool " in ln]
    assert table_rows and all(ln.split()[0] == "pool1" for ln in table_rows)
    assert "refnet float32" not in out and "fusion on" not in out


def test_a_difference_exits_1(model, capsys, monkeypatch):
    perturb_cv2(monkeypatch, ["fc"], lambda v: v + np.float32(0.5))
    code, out, _ = run(["compare", *model, "--random"], capsys)
    assert code == 1
    assert "verdict: DIFFER at fc (cv2 " in out and "<-- DIFFER" in out


def test_arch_only_zoo_model_with_seeded_weights(models, capsys, tmp_path):
    code, out, err = run(["compare", "--zoo", "squeezenet-1.1", "--seeded-weights", "1", "--random", "--no-winograd",
                          "--no-fusion", "--precision", "float64"], capsys)
    assert code == 0, err
    assert "weights: seeded random" in err and "summary: squeezenet-1.1 (seeded 1): AGREE" in out
    code, _, err = run(["compare", "--zoo", "squeezenet-1.1", "--random"], capsys)
    assert code == 2 and "--seeded-weights SEED" in err and err.count("\n") == 1


# ---- user errors: exit 2, one line, no traceback ----------------------------------------------------------
def _noshape(tmp_path) -> str:
    p = tmp_path / "noshape.prototxt"
    p.write_text('name: "n"\ninput: "data"\nlayer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
                 "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n")
    return str(p)


def _two_channel(tmp_path) -> list[str]:
    b = CaffeNetBuilder("two", (1, 2, 8, 8), seed=0)
    b.conv("c", "data", 2, 1)
    return [str(p) for p in b.write(tmp_path / "two")]


@pytest.mark.parametrize("case, needle", [
    ("missing model", "model file not found"),
    ("garbage image", "cannot decode image"),
    ("missing image", "image not found"),
    ("empty folder", "no image files"),
    ("no input shape", "cannot infer the input shape"),
    ("bad layer", "no layer named 'pool9'"),
    ("unknown zoo", "unknown model 'no-such-net'"),
    ("image and random", "give --image or --random, not both"),
    ("json folder", "does not exist"),
    ("channels", "takes 2-channel input"),
    ("top", "--top must be >= 1"),
    ("bad shape", "--input-shape needs four positive numbers"),
    ("zero size", "--size must be two positive numbers W H, got 0 0"),
    ("negative size", "--size must be two positive numbers W H, got -3 8"),
])
def test_user_errors_exit_2_one_line(case, needle, model, tmp_path, capsys):
    garbage = tmp_path / "bad.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    (tmp_path / "empty").mkdir()
    argv = {
        "missing model": ["compare", str(tmp_path / "nope.prototxt")],
        "garbage image": ["compare", *model, "--image", str(garbage)],
        "missing image": ["compare", *model, "--image", str(tmp_path / "nope.png")],
        "empty folder": ["compare", *model, "--image", str(tmp_path / "empty")],
        "no input shape": ["compare", _noshape(tmp_path), "--random"],
        "bad layer": ["compare", *model, "--layer", "pool9"],
        "unknown zoo": ["compare", "--zoo", "no-such-net"],
        "image and random": ["compare", *model, "--random", "--image", str(garbage)],
        "json folder": ["compare", *model, "--json", str(tmp_path / "no" / "such" / "r.json")],
        "channels": ["compare", *_two_channel(tmp_path), "--image", str(_photo(tmp_path))],
        "top": ["compare", *model, "--top", "0"],
        "bad shape": ["compare", _noshape(tmp_path), "--input-shape", "1", "0", "4", "4"],
        "zero size": ["compare", *model, "--random", "--size", "0", "0"],
        "negative size": ["compare", *model, "--random", "--size", "-3", "8"],
    }[case]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("refnet: error: ") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err
    with pytest.raises(Exception, match=re.escape(needle.strip("'")[:20])):
        main(["--debug", *argv])


def _photo(tmp_path) -> Path:
    p = tmp_path / "one.png"
    cv2.imwrite(str(p), np.full((8, 8, 3), 100, np.uint8))
    return p


def test_close_layer_names_are_suggested(model, capsys):
    code, _, err = run(["compare", *model, "--layer", "conv"], capsys)
    assert code == 2 and "did you mean conv1?" in err


def test_exit_codes_of_the_real_process(tmp_path):
    """The installed entry point: exit 2 with one line on stderr; --debug prints the traceback."""
    cmd = [sys.executable, "-m", "refnet.cli", "compare", str(tmp_path / "missing.prototxt")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [f"refnet: error: model file not found: {tmp_path / 'missing.prototxt'}"]
    p = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr


def test_two_input_caffe_net_on_the_command_line_names_its_inputs(tmp_path, capsys):
    """A two-input prototxt that declares both shapes (not a two-stage detector): compare said "the
    model does not declare" its input shape; it names the inputs and points to the Python API."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    from refnet.cli import main

    layers = [Layer("sum", "Eltwise", ["a", "b"], ["sum"])]
    proto, model = write_net(NetSpec(layers, {"a": (1, 3, 4, 4), "b": (1, 3, 4, 4)}), tmp_path)
    assert main(["compare", str(proto), str(model)]) == 2
    err = capsys.readouterr().err
    assert "2 inputs (a, b)" in err and "net.forward({name: array" in err and "does not declare" not in err, err
