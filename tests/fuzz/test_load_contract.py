"""The rest of the hostile-input contract: what forward does with wrong or non-finite inputs,
what the CLI prints, and that loading never runs code.

Oracles: the declared input shapes (written by the test-side writers), numpy's NaN rules,
Python's audit hooks (PEP 578) for anything a loader might execute, spawn or open.
"""

from __future__ import annotations

import sys

import fuzzlib as F
import numpy as np
import pytest
from writers import caffe_writer as CW
from writers import t7_writer as TW

from refnet import cli
from refnet.errors import ShapeError


def _net(fmt: str, name: str, with_weights: bool = True):
    seed = next(s for s in F.seeds(fmt) if s.name == name and (fmt != "cfg" or ("weights" in s.files) == with_weights))
    return F.load_case(seed.case(seed.files[seed.target]))


NETS = [("prototxt", "syn_conv_bn_scale"), ("prototxt", "syn_ssd"), ("prototxt", "syn_shape_ops"),
        ("cfg", "tiny_yolo")]


@pytest.mark.parametrize("fmt,name", NETS)
def test_wrong_rank_channels_and_dtype_name_the_input_and_the_expected_shape(fmt, name):
    net = _net(fmt, name)
    k = net.input_names[0]
    want = tuple(net.input_shapes[k])
    feeds = {n: np.zeros(net.input_shapes[n], np.float32) for n in net.input_names}
    for bad in (np.zeros(want[1:], np.float32), np.zeros(want + (1,), np.float32),
                np.zeros((want[0], want[1] + 1) + want[2:], np.float32)):
        with pytest.raises(ShapeError) as ei:
            net.forward({**feeds, k: bad})
        msg = str(ei.value)
        assert repr(k) in msg and str(want) in msg and str(bad.shape) in msg, msg
    for dt in (np.complex64, object, np.str_, np.bool_):
        with pytest.raises(ShapeError) as ei:
            net.forward({**feeds, k: np.zeros(want, dtype=dt)})
        assert repr(k) in str(ei.value) and "float32/float64" in str(ei.value)


@pytest.mark.parametrize("fmt,name", NETS)
def test_missing_and_unknown_input_names_are_shape_errors_naming_them(fmt, name):
    net = _net(fmt, name)
    with pytest.raises(ShapeError) as ei:
        net.forward({"not_an_input": np.zeros((1, 3, 8, 8), np.float32)})
    msg = str(ei.value)
    assert all(repr(k) in msg for k in net.input_names) and "'not_an_input'" in msg


def test_missing_input_error_also_gives_the_expected_shape():
    net = _net("prototxt", "syn_conv_bn_scale")
    with pytest.raises(ShapeError) as ei:
        net.forward({"x": np.zeros((1, 4, 9, 11), np.float32)})
    assert str(tuple(net.input_shapes["data"])) in str(ei.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's invalid-value warnings on inf - inf (reported)
@pytest.mark.parametrize("fmt,name", NETS + [("prototxt", "syn_branches"), ("prototxt", "syn_deconv_groups"),
                                             ("cfg", "all_layers")])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_non_finite_inputs_propagate_without_crashing(fmt, name, value, precision):
    net = _net(fmt, name)
    feeds = {k: np.full(net.input_shapes[k], value, np.float32) for k in net.input_names}
    shapes = net.infer_shapes()
    out = net.forward(feeds, precision=precision)
    for k, v in out.items():  # -1: a size known only at run time (DetectionOutput's rows)
        assert len(v.shape) == len(shapes[k]) and all(d == s or s == -1 for d, s in zip(v.shape, shapes[k]))
        assert v.dtype == np.dtype(precision)
    if value is np.nan and name in ("syn_branches", "syn_shape_ops", "syn_deconv_groups"):
        assert all(np.isnan(v).all() for v in out.values())  # elementwise paths: NaN in, NaN out


def test_non_finite_input_through_a_torch_model():
    seed = next(s for s in F.seeds("t7") if s.name == "convs")
    net = F.load_case(seed.case(seed.files["t7"]))
    x = np.full((1, 3, 9, 9), np.nan, np.float32)
    for precision in ("float32", "float64"):
        (y,) = net.forward(x, precision=precision).values()
        assert np.isnan(y).any()


def test_cli_prints_one_line_without_traceback_and_debug_shows_it(tmp_path, capsys):
    bad = tmp_path / "broken.prototxt"
    bad.write_bytes(b'layer {\n  name: "c"\n  type: "Convolution"\n  convolution_param { num_output: -3 }\n}\n')
    assert cli.main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:4:" in err[0] and "out of range for uint32" in err[0], err
    with pytest.raises(Exception, match="out of range"):
        cli.main(["--debug", "info", str(bad)])
    folder = tmp_path / "model.prototxt"
    folder.mkdir()
    assert cli.main(["info", str(folder)]) == 2  # a directory: a one-line error too
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


_FORBIDDEN = ("exec", "compile", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen",
              "socket.", "ctypes.", "pickle.find_class", "marshal.load", "import", "open", "shutil.", "os.remove",
              "os.rename", "builtins.input", "webbrowser.")
_SEEN: list[tuple[str, tuple]] = []
_ACTIVE = False


def _hook(event: str, args: tuple) -> None:
    if _ACTIVE and event.startswith(_FORBIDDEN):
        _SEEN.append((event, args[:2]))


sys.addaudithook(_hook)


def test_loading_never_executes_spawns_imports_or_opens_anything():
    """Every format, valid and hostile (pickled payloads, Lua bytecode, shell strings), loaded
    from bytes under an audit hook: no exec/compile, no process, socket or ctypes call, no
    import, no file opened."""
    global _ACTIVE
    import pickle

    evil = pickle.dumps(__import__("os").system)
    hostile = [
        F.Case("t7", {"t7": TW.dumps({"model": TW.nn_Sequential(TW.nn_ReLU()),
                                      "f": TW.Function(b"\x1bLJ os.execute('rm -rf /')", {"a": evil})})}),
        F.Case("t7", {"t7": evil}),
        F.Case("prototxt", {"prototxt": b'name: "__import__(\'os\').system(\'id\')"\n' + evil.replace(b"\n", b" ")}),
        F.Case("caffemodel", {"caffemodel": CW.ld(1, evil) + CW.ld(100, CW.ld(1, b"c") + CW.ld(2, b"Python"))}),
        F.Case("cfg", {"cfg": b"[net]\nwidth=8\nheight=8\nchannels=3\n[python]\nmodule=os\n"}),
    ]
    cases = [s.case(s.files[s.target]) for fmt in F.FORMATS for s in F.seeds(fmt)[:3]] + hostile
    for c in cases:  # warm up: lazy imports of refnet's own modules happen on first use
        F.run_case(c)
    _SEEN.clear()
    _ACTIVE = True
    try:
        outcomes = [F.run_case(c) for c in cases]
    finally:
        _ACTIVE = False
    assert not _SEEN, _SEEN[:10]
    assert outcomes[-5] == "ok" and outcomes[-1] == "UnsupportedLayerError"
    assert all(o in ("ModelFormatError", "UnsupportedLayerError") for o in outcomes[-4:])


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_importer_errors_say_what_was_expected(fmt):
    """Every ModelFormatError an importer raises on a sample of fuzzed inputs carries what was
    expected (besides the file and the position, which the contract itself checks)."""
    from refnet.errors import ModelFormatError

    missing = []
    for i in range(150):
        case, how = F.generate(fmt, i, 5)
        try:
            F.load_case(case)
        except ModelFormatError as e:
            if e.expected is None and "weights_import" in F._origin(e):
                missing.append((how, str(e)[:120]))
        except Exception:  # noqa: BLE001 - other outcomes are the contract tests' business
            pass
    assert not missing, missing[:5]
