"""Issue 16 case 4: long valid Caffe files load to the net the file describes, by every parser
path, with errors located as in a short file, and with loader memory linear and small per layer.

Oracles: the files are written here (tests/attack/long_files.py, writers/caffe_writer.py), so
every layer name, bottom, line number and byte offset is known independently of refnet. Speed
is measured by ``python tests/attack/long_files.py`` (no timed asserts here).
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_files import write_caffemodel, write_prototxt  # noqa: E402

import refnet  # noqa: E402
from refnet.errors import ModelFormatError  # noqa: E402
from refnet.weights_import import _scanpolicy, prototxt  # noqa: E402
from refnet.weights_import.caffe import read_caffe  # noqa: E402

N = 20000  # layers: long enough for per-layer costs to dominate, short enough for CI


@pytest.fixture(params=["python", "compiled"])
def text_path(request, monkeypatch):
    """Force the token parser or the compiled scanner for the prototxt (weights_import/_scanpolicy.py)."""
    if request.param == "python":
        monkeypatch.setattr(prototxt, "compiled_scan_pays", lambda n, frm=None: False)
    else:
        monkeypatch.setattr(prototxt, "compiled_scan_pays", lambda n, frm=None: True)
    return request.param


def _chain(graph, prefix: str, n: int) -> None:
    names = [f"{prefix}{i}" for i in range(n)]
    assert [nd.name for nd in graph.nodes] == names
    assert {nd.op for nd in graph.nodes} == {"relu"}
    assert [nd.inputs for nd in graph.nodes] == [("data",)] + [(f"{prefix}{i}",) for i in range(n - 1)]
    assert graph.inputs == ("data",) and tuple(graph.input_shapes["data"]) == (1, 3, 8, 8)
    assert graph.output_names == (names[-1],)


def test_long_prototxt_loads_the_chain_it_describes(tmp_path, text_path):
    p = tmp_path / "long.prototxt"
    write_prototxt(p, N)
    net = refnet.load(p)
    _chain(net.graph, "relu", N)
    assert net.graph.meta["net_name"] == "long" and net.graph.meta["format"] == "V2"
    assert len(net.graph.meta["caffe_types"]) == N


def test_long_caffemodel_alone_loads_the_chain_it_describes(tmp_path):
    m = tmp_path / "long.caffemodel"
    write_caffemodel(m, N)
    net = refnet.load(m)
    _chain(net.graph, "r", N)


def test_long_chain_runs_as_relu(tmp_path):
    """A shorter chain through forward: ReLU applied k times is ReLU once (numpy oracle)."""
    p = tmp_path / "chain.prototxt"
    write_prototxt(p, 200)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    out = refnet.load(p).forward({"data": x})
    np.testing.assert_array_equal(out["relu199"], np.maximum(x, 0))


def test_error_deep_in_a_long_prototxt_names_its_line_and_layer(tmp_path, text_path):
    """Messages are released while the graph is built: an error at layer k still has its line."""
    p = tmp_path / "bad.prototxt"
    write_prototxt(p, N)
    lines = p.read_text().splitlines(keepends=True)
    k = N - 7
    line_no = 3 + k + 1  # three header lines, then one layer per line
    assert f'name: "relu{k}"' in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(f'bottom: "relu{k - 1}"', 'bottom: "nowhere"')
    p.write_text("".join(lines))
    with pytest.raises(ModelFormatError) as ei:
        refnet.load(p)
    e = ei.value
    assert e.layer == f"relu{k}" and e.line == line_no
    assert e.col == lines[line_no - 1].index("bottom") + 1
    assert "'nowhere'" in str(e)


def test_error_deep_in_a_long_caffemodel_names_its_offset_and_layer(tmp_path):
    m = tmp_path / "bad.caffemodel"
    write_caffemodel(m, N)
    data = bytearray(m.read_bytes())
    k = N - 5
    old = b"\x1a" + bytes([len(f"r{k - 1}")]) + f"r{k - 1}".encode()  # field 3 (bottom), length, text
    at = data.index(old, data.index(b"\x0a" + bytes([len(f"r{k}")]) + f"r{k}".encode()))
    bad = b"\x1a" + bytes([len(f"r{k - 1}")]) + b"x" * len(f"r{k - 1}")  # same length: offsets unchanged
    data[at:at + len(old)] = bad
    m.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError) as ei:
        refnet.load(m)
    e = ei.value
    assert e.layer == f"r{k}" and e.offset == at


def test_loader_memory_per_layer_is_small(tmp_path, monkeypatch):
    """Python heap at its peak while reading a 20k-layer prototxt with the token parser (the path
    a fresh process takes) and building the Graph and Net: under 2 KiB per layer (it was
    2967 bytes when parsed messages, tokens and nodes were all alive at once; 1655 after)."""
    monkeypatch.setattr(prototxt, "compiled_scan_pays", lambda n, frm=None: False)
    p = tmp_path / "long.prototxt"
    write_prototxt(p, N)
    data = p.read_bytes()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        net = refnet.Net(read_caffe(prototxt_bytes=data), None)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(net.graph.nodes) == N
    assert peak / N < 2048, f"{peak / N:.0f} bytes per layer"


def test_policy_sends_a_100k_layer_prototxt_to_the_token_parser_in_a_fresh_process(monkeypatch):
    """Without numba loaded, text below TEXT_COMPILED_FROM takes the token parser (numba's
    start-up alone is ~150 MiB); once numba is loaded, the compiled scanner."""
    monkeypatch.setattr(_scanpolicy, "_SPENT", [0.0])
    monkeypatch.setattr(_scanpolicy, "_numba_loaded", lambda: False)
    assert not _scanpolicy.compiled_scan_pays(8 << 20, _scanpolicy.TEXT_COMPILED_FROM)
    monkeypatch.setattr(_scanpolicy, "_numba_loaded", lambda: True)
    assert _scanpolicy.compiled_scan_pays(8 << 20, _scanpolicy.TEXT_COMPILED_FROM)
