"""The caffemodel's weights are copied out of the file's bytes once (issue 17, first load):
decoded straight from the memory map, gathered into one owned array per dtype. The arrays are
the values written (float32, float64 double_data, fp16 raw_data widened), the same through the
Python decoder and the compiled index, and nothing keeps the map once the load returns (the
file can be rewritten under a loaded net)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from writers.caffe_writer import E, Layer, NetSpec, blob_bytes, caffemodel, ld, prototxt

import refnet.weights_import.caffe as C
import refnet.weights_import.prototxt as P
from refnet.errors import ModelFormatError
from refnet.weights_import.caffe import read_caffe

RNG = np.random.default_rng(7)
W1 = RNG.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
B1 = RNG.normal(0, 0.1, 4).astype(np.float32)
W2 = RNG.normal(0, 0.3, (5, 4, 1, 1))  # double_data: kept as float64
B2 = RNG.normal(0, 0.1, 5)
W3 = RNG.normal(0, 0.3, (3, 5 * 4 * 4)).astype(np.float32)  # raw_data FLOAT16: widened to float32
B3 = RNG.normal(0, 0.1, 3).astype(np.float32)
EXPECTED = {"c1": (W1, B1), "c2": (W2, B2), "fc": (W3.astype(np.float16).astype(np.float32),
                                                   B3.astype(np.float16).astype(np.float32))}


def _spec() -> NetSpec:
    return NetSpec([
        Layer("c1", "Convolution", ["data"], ["c1"],
              {"convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1}}),
        Layer("r", "ReLU", ["c1"], ["c1"]),
        Layer("c2", "Convolution", ["c1"], ["c2"], {"convolution_param": {"num_output": 5, "kernel_size": 1}}),
        Layer("p", "Pooling", ["c2"], ["p"], {"pooling_param": {"pool": E("MAX"), "kernel_size": 2, "stride": 2}}),
        Layer("fc", "InnerProduct", ["p"], ["fc"], {"inner_product_param": {"num_output": 3}}),
    ], {"data": (1, 3, 8, 8)})


def _model(extra: bytes = b"") -> bytes:
    def layer(name: str, fmt: str, *blobs: np.ndarray) -> bytes:
        return ld(100, ld(1, name.encode()) + b"".join(ld(7, blob_bytes(b, fmt)) for b in blobs))
    return (ld(1, b"net") + layer("c1", "shape", W1, B1) + layer("c2", "double", W2, B2)
            + layer("fc", "fp16", W3, B3) + extra)


def _write(tmp_path: Path, extra: bytes = b"") -> tuple[Path, Path]:
    proto, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    proto.write_text(prototxt(_spec()))
    model.write_bytes(_model(extra))
    return proto, model


def _load(files: tuple[Path, Path], monkeypatch, compiled: bool):
    for mod in (C, P):
        monkeypatch.setattr(mod, "compiled_scan_pays", lambda n, python_from=None: compiled)
    return read_caffe(*files)


def _mapped(path: Path) -> bool:
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.fixture
def mapped_files(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "_MAP_FROM", 0)  # the small file is memory-mapped as a large one is
    return _write(tmp_path)


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_weights_are_the_written_values_in_owned_arrays(mapped_files, monkeypatch, compiled):
    g = _load(mapped_files, monkeypatch, compiled)
    params = {n.name: n.params for n in g.nodes if n.params}
    assert sorted(params) == sorted(EXPECTED)
    for name, (w, b) in EXPECTED.items():
        got_w, got_b = params[name]["weight"], params[name]["bias"]
        assert got_w.dtype == w.dtype and got_b.dtype == b.dtype
        np.testing.assert_array_equal(got_w.reshape(w.shape), w)
        np.testing.assert_array_equal(got_b.reshape(b.shape), b)
        assert got_w.flags.aligned and got_w.flags.writeable and got_w.dtype.isnative
    if sys.platform.startswith("linux"):
        assert not _mapped(mapped_files[1])  # no view into the map survives the load


def test_loaded_net_survives_the_file_being_rewritten(mapped_files, monkeypatch):
    g = _load(mapped_files, monkeypatch, False)
    mapped_files[1].write_bytes(b"")  # truncated in place: a view into the old map would fault
    mapped_files[1].write_bytes(b"\0" * 4096)
    w = {n.name: n.params["weight"] for n in g.nodes if n.params}["c1"]
    np.testing.assert_array_equal(w.reshape(W1.shape), W1)


def test_python_path_matches_the_compiled_index(mapped_files, monkeypatch):
    slow, fast = _load(mapped_files, monkeypatch, False), _load(mapped_files, monkeypatch, True)
    for a, b in zip(slow.nodes, fast.nodes, strict=True):
        assert (a.name, a.op, dict(a.attrs), sorted(a.params)) == (b.name, b.op, dict(b.attrs), sorted(b.params))
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype and a.params[k].shape == b.params[k].shape
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_a_bad_blob_fails_only_the_layer_that_uses_it(tmp_path, monkeypatch):
    """A binary layer whose blob holds fewer values than its shape: ignored when no layer uses
    it (as before: blobs are checked when a layer takes them), the load's error when one does."""
    bad = ld(7, ld(7, ld(1, bytes([2, 2]))) + ld(5, np.zeros(3, "<f4").tobytes()))  # shape (2, 2), 3 values
    monkeypatch.setattr(C, "_MAP_FROM", 0)
    files = _write(tmp_path, ld(100, ld(1, b"unused") + bad))
    g = _load(files, monkeypatch, False)
    np.testing.assert_array_equal({n.name: n.params for n in g.nodes if n.params}["c1"]["weight"], W1)
    files[1].write_bytes(_model().replace(ld(1, b"c2"), ld(1, b"cX")) + ld(100, ld(1, b"c2") + bad))
    with pytest.raises(ModelFormatError, match="needs 4 values") as e:
        _load(files, monkeypatch, False)
    assert e.value.layer == "c2"


def test_caffemodel_alone_blobs_copied_once(tmp_path, monkeypatch):
    """The caffemodel alone (layer definitions inside): its layers' own blobs are gathered too."""
    spec = _spec()
    blobs = {"c1": [W1, B1], "c2": [W2, B2], "fc": [W3, B3]}
    for layer in spec.layers:
        layer.blobs = blobs.get(layer.name, [])
    model = tmp_path / "alone.caffemodel"
    model.write_bytes(caffemodel(spec, with_defs=True))
    monkeypatch.setattr(C, "_MAP_FROM", 0)
    g = read_caffe(None, model)
    params = {n.name: n.params for n in g.nodes if n.params}
    for name, (w, b) in blobs.items():
        np.testing.assert_array_equal(params[name]["weight"].reshape(w.shape), w.astype(np.float32))
        np.testing.assert_array_equal(params[name]["bias"], b.astype(np.float32))
        assert params[name]["weight"].dtype == np.float32
    assert params["c1"]["weight"].base is params["fc"]["weight"].base  # one array holds them all
