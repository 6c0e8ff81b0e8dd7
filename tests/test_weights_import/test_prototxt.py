"""Protobuf text format (prototxt): tokens, numbers, strings, nesting, errors with line:col.

Oracles: hand-written expected values (protobuf TextFormat rules), numpy float32 rounding,
Python's own int/float parsing for generated literals, and the test writer's two print styles
(plain and "fancy") which must parse to the same message.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import models_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from writers.caffe_writer import E, Layer, NetSpec, prototxt

from refnet.errors import ModelFormatError
from refnet.weights_import.caffe_schema import MESSAGES
from refnet.weights_import.prototxt import parse_message

HYP = settings(max_examples=40, deadline=None, derandomize=True)


def net(text: str | bytes):
    return parse_message(text, "NetParameter", file="t.prototxt")


def layer(body: str):
    return net(f"layer {{ {body} }}").get("layer")[0]


def err(text: str, mtype: str = "NetParameter") -> ModelFormatError:
    with pytest.raises(ModelFormatError) as ei:
        parse_message(text, mtype, file="t.prototxt")
    return ei.value


# ---- structure --------------------------------------------------------------------------------
def test_comments_separators_and_nesting_styles():
    text = """# leading comment
    name: "n"  # trailing comment
    layer { name: "a"; type: "ReLU", bottom: "x" top: "a" }
    layer: { name: 'b' type: "Pooling" pooling_param < pool: AVE kernel_size: 3 > }
    layer < name: "c" type: "Softmax" softmax_param: { axis: -1 } >
    """
    m = net(text)
    a, b, c = m.get("layer")
    assert m.get("name") == "n"
    assert (a.get("name"), a.get("type"), a.get("bottom"), a.get("top")) == ("a", "ReLU", ["x"], ["a"])
    assert b.get("pooling_param").get("pool") == "AVE"
    assert b.get("pooling_param").get("kernel_size") == 3
    assert c.get("softmax_param").get("axis") == -1


def test_repeated_fields_and_list_syntax():
    m = net('input: "a" input: "b" input_dim: [1, 3, 0x10, 010] input_dim: 5 '
            'input_shape [ { dim: 1 }, { dim: [2, 3] } ]')
    assert m.get("input") == ["a", "b"]
    assert m.get("input_dim") == [1, 3, 16, 8, 5]
    assert [s.get("dim") for s in m.get("input_shape")] == [[1], [2, 3]]
    assert net("input_dim: []").get("input_dim") == []


def test_unknown_fields_are_skipped_and_recorded():
    lay = layer('name: "d" type: "DetectionOutput" visualize: false '
                'detection_output_param { num_classes: 2 visualize_threshold: 0.6 '
                'save_output_param { output_directory: "x" label_map { item: [1, 2] } } '
                'weird < a: -inf b: "s" c: [x, y] > }')
    p = lay.get("detection_output_param")
    assert lay.unknown == ["visualize"]
    assert "visualize_threshold" in p.unknown and "weird" in p.unknown
    assert p.get("num_classes") == 2


# ---- scalars ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lit,value", [
    ("1", 1.0), ("-2", -2.0), ("1.5", 1.5), (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0),
    ("1E-3", 1e-3), ("2.5e+2", 250.0), ("1f", 1.0), ("2.5F", 2.5), ("-3.0f", -3.0),
    ("0x10", 16.0), ("inf", math.inf), ("-inf", -math.inf), ("Infinity", math.inf),
    ("0.10000000149", float(np.float32(0.1))), ("1e40", math.inf), ("- 4", -4.0),
])
def test_float_literals(lit, value):
    v = parse_message(f"negative_slope: {lit}", "ReLUParameter").get("negative_slope")
    assert v == float(np.float32(value)), (lit, v)  # a float field holds a float32


def test_nan_and_double_precision():
    assert math.isnan(parse_message("negative_slope: nan", "ReLUParameter").get("negative_slope"))
    # a double field keeps double precision, a float field rounds to float32
    d = parse_message("double_data: 0.1 double_data: -NaN", "BlobProto").get("double_data")
    assert d.dtype == np.float64 and d[0] == 0.1 and np.isnan(d[1])
    f = parse_message("data: 0.1 data: 3", "BlobProto").get("data")
    assert f.dtype == np.float32 and f[0] == np.float32(0.1) and f[1] == 3


@given(st.floats(allow_nan=False, width=64))
@HYP
def test_float_roundtrip_rounds_to_float32(x):
    v = parse_message(f"negative_slope: {x!r}", "ReLUParameter").get("negative_slope")
    with np.errstate(over="ignore"):
        assert v == float(np.float32(x))


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(["dec", "hex"]))
@HYP
def test_int32_roundtrip(v, fmt):
    lit = str(v) if fmt == "dec" else ("-" if v < 0 else "") + hex(abs(v))
    assert parse_message(f"axis: {lit}", "SoftmaxParameter").get("axis") == v


@pytest.mark.parametrize("text,msg", [
    ("axis: 2147483648", "out of range for int32"),
    ("axis: 1.5", "needs an integer"),
    ("axis: 09", "invalid octal"),
    ("axis: 1.2.3", "invalid number"),
    ("axis: 12abc", "invalid number"),
    ("axis: foo", "needs an integer"),
    ("axis: \"1\"", "not a string"),
])
def test_bad_ints(text, msg):
    e = err(text, "SoftmaxParameter")
    assert msg in str(e) and e.line == 1 and e.col == 7


def test_unsigned_and_64_bit_ranges():
    assert parse_message("num_output: 4294967295", "ConvolutionParameter").get("num_output") == 2**32 - 1
    assert "out of range for uint32" in str(err("num_output: -1", "ConvolutionParameter"))
    assert "out of range for uint32" in str(err("num_output: 4294967296", "ConvolutionParameter"))
    assert parse_message("dim: -9223372036854775808", "BlobShape").get("dim") == [-(2**63)]


def test_bools_and_enums():
    for lit, v in [("true", True), ("t", True), ("True", True), ("1", True), ("false", False),
                   ("f", False), ("False", False), ("0", False)]:
        assert parse_message(f"bias_term: {lit}", "ConvolutionParameter").get("bias_term") is v
    assert "needs a boolean" in str(err("bias_term: 2", "ConvolutionParameter"))
    assert "needs a boolean" in str(err("bias_term: yes", "ConvolutionParameter"))
    p = MESSAGES["PoolingParameter"]
    assert parse_message("pool: AVE", p).get("pool") == "AVE"
    assert parse_message("pool: 1", p).get("pool") == "AVE"  # by number
    e = err("pool: AVERAGE", "PoolingParameter")
    assert "unknown value 'AVERAGE' for enum PoolMethod" in str(e) and "MAX, AVE" in str(e)
    assert "not a valid PoolMethod" in str(err("pool: 7", "PoolingParameter"))
    assert "holds enum values, not a string" in str(err('pool: "MAX"', "PoolingParameter"))


def test_strings_escapes_and_concatenation():
    cases = {
        r'"plain"': "plain", r"'single'": "single", r'"a\"b"': 'a"b', r"'it\'s'": "it's",
        r'"tab\there"': "tab\there", r'"\101\102C"': "ABC", r'"\x41\x4a"': "AJ",
        r'"\u00e9t\u00e9"': "été", r'"\U0001F600"': "\U0001f600", r'"a\\b"': "a\\b",
        r'"\n\r\a\b\f\v\?"': "\n\r\a\b\f\v?", '"raw é"': "raw é",
        r'"con" "cat" ' + "'ena' \"tion\"": "concatenation", r'"\0"': "\x00",
    }
    for lit, value in cases.items():
        assert net(f"name: {lit}").get("name") == value, lit
    raw = parse_message(r'raw_data: "\377\000\x80"', "BlobProto").get("raw_data")
    assert raw == b"\xff\x00\x80"  # bytes field keeps arbitrary bytes


@pytest.mark.parametrize("text,msg,line,col", [
    ('name: "abc', "unterminated string", 1, 7),
    ("name: 'abc\"\n", "unterminated string", 1, 7),
    ('name: "a\\qb"', "invalid escape sequence \\q", 1, 7),
    ('name: "\\777"', "larger than 255", 1, 7),
    ('name: "\\xff"', "not valid UTF-8", 1, 7),
    ("layer {\n  name: \"a\"\n", "not closed", 3, 1),
    ("layer {\n  name \"a\" }", "after field name 'name'", 2, 8),
    ("name: @", "unexpected character '@'", 1, 7),
    ("\n\n   } ", "unexpected '}'", 3, 4),
    ("name: \"a\" name: \"b\"", "specified more than once", 1, 11),
    ("name: [\"a\"]", "not repeated", 1, 1),
    ("layer: 3", "is a message LayerParameter", 1, 8),
    ("name { }", "is a string, not a message", 1, 6),
    ("input: 3", "needs a quoted string", 1, 8),
    ("input_dim: [1 2]", "in a list", 1, 15),
    ("[ext.field]: 1", "extension", 1, 1),
    ("name:", "end of input", 1, 6),
])
def test_errors_have_line_and_column(text, msg, line, col):
    e = err(text)
    assert msg in str(e), str(e)
    assert (e.line, e.col) == (line, col), str(e)
    assert e.file == "t.prototxt" and f"t.prototxt:{line}:{col}" in str(e)


def test_depth_limit_and_invalid_utf8():
    deep = "a { " * 200 + "}" * 200
    assert "nested deeper" in str(err(deep))
    with pytest.raises(ModelFormatError, match=r"t.prototxt:2:3 .*not valid UTF-8"):
        parse_message(b'name: "x"\nab\xff', "NetParameter", file="t.prototxt")
    assert net(b"\xef\xbb\xbfname: \"bom\"").get("name") == "bom"  # UTF-8 BOM is skipped


def test_v1_layers_with_enum_types():
    m = net('layers { name: "c" type: CONVOLUTION bottom: "d" top: "c" blobs_lr: 1 blobs_lr: 2 '
            'convolution_param { num_output: 4 kernel_size: 3 } }')
    lay = m.get("layers")[0]
    assert lay.get("type") == "CONVOLUTION" and list(lay.get("blobs_lr")) == [1.0, 2.0]
    assert lay.get("convolution_param").get("num_output") == 4


# ---- the writer's two print styles agree --------------------------------------------------
def _dump(m) -> object:
    if hasattr(m, "values"):
        return {k: _dump(v) for k, v in sorted(m.values.items())}
    if isinstance(m, list):
        return [_dump(v) for v in m]
    if isinstance(m, np.ndarray):
        return m.tolist()
    return m


def test_plain_and_fancy_styles_parse_identically():
    spec = NetSpec([
        Layer("conv\"1", "Convolution", ["data"], ["conv\"1"],
              {"convolution_param": {"num_output": 17, "kernel_size": [3, 5], "pad_h": 1,
                                     "pad_w": 2, "bias_term": False, "weight_filler": {"type": "xavier"}}}),
        Layer("pool", "Pooling", ["conv\"1"], ["pool"],
              {"pooling_param": {"pool": E("AVE"), "kernel_size": 2, "stride": 2,
                                 "ceil_mode": False}}),
        Layer("relu", "ReLU", ["pool"], ["pool"], {"relu_param": {"negative_slope": 0.125}}),
        Layer("elt", "Eltwise", ["pool", "pool"], ["elt"],
              {"eltwise_param": {"operation": E("SUM"), "coeff": [0.5, -1e-7, 300.0]}}),
    ], {"data": (1, 3, 20, 24)}, "input_shape")
    plain = net(prototxt(spec))
    fancy = net(prototxt(spec, style="fancy"))
    assert "<" in prototxt(spec, style="fancy") and "\\x" in prototxt(spec, style="fancy")
    assert _dump(plain) == _dump(fancy)
    assert plain.get("layer")[0].get("name") == 'conv"1'
    assert list(plain.get("layer")[3].get("eltwise_param").get("coeff")) == [
        np.float32(0.5), np.float32(-1e-7), np.float32(300.0)]


@pytest.mark.parametrize("rel", [
    "arch_only/bvlc_googlenet/deploy.prototxt",
    "arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt",
    "arch_only/res10_face_ssd/deploy.prototxt",
    "yufacedetectnet_caffe/yufacedetectnet-open-v1.prototxt",
    "mtcnn_caffe/det4.prototxt",
])
def test_real_prototxts_parse(rel):
    d = models_dir()
    if d is None or not (d / rel).exists():
        pytest.skip("model folder not available")
    text = Path(d / rel).read_text()
    m = net(text)
    n_layers = text.count("\nlayer {") + text.count("\nlayer{") + text.startswith("layer")
    assert len(m.get("layer")) == n_layers


@given(st.text(alphabet=st.sampled_from(list('{}<>[]:;,-"\'\\#\n .0123456789abefinrtx_xyzLAYER')),
               max_size=80))
@HYP
def test_fuzz_random_text_parses_or_raises_model_format_error(text):
    try:
        parse_message(text, "NetParameter", file="fuzz")
    except ModelFormatError as e:
        assert e.line is not None and e.col is not None


@given(st.integers(0, 10**6), st.sampled_from(["", "}", "{", '"', "'", "\\", ":", "@", "-", "0x"]))
@HYP
def test_fuzz_damaged_real_net_text(pos, junk):
    text = prototxt(NetSpec([
        Layer("c", "Convolution", ["data"], ["c"], {"convolution_param": {"num_output": 2,
                                                                         "kernel_size": 3}}),
        Layer("p", "Pooling", ["c"], ["p"], {"pooling_param": {"pool": E("MAX"), "kernel_size": 2}}),
    ], {"data": (1, 3, 8, 8)}))
    pos %= len(text)
    damaged = text[:pos] + junk + text[pos + 1:]
    try:
        parse_message(damaged, "NetParameter", file="fuzz")
    except ModelFormatError as e:
        assert e.line is not None and 1 <= e.line <= damaged.count("\n") + 1


def test_skipped_training_messages_are_checked_but_not_built():
    """parse_message(skip=...) leaves ParamSpec/FillerParameter out and still rejects bad values in them."""
    from refnet.weights_import.caffe import TRAINING_ONLY

    good = ('layer { name: "c" type: "Convolution" param { lr_mult: 1 } param { lr_mult: 2 } '
            'convolution_param { num_output: 2 weight_filler { type: "xavier" } } }')
    m = parse_message(good, "NetParameter", skip=TRAINING_ONLY)
    layer = m.get("layer")[0]
    assert not layer.has("param") and layer.get("name") == "c"
    conv = layer.get("convolution_param")
    assert conv.get("num_output") == 2 and not conv.has("weight_filler")
    full = parse_message(good, "NetParameter")
    assert [p.get("lr_mult") for p in full.get("layer")[0].get("param")] == [1.0, 2.0]
    for bad in ('layer { param { lr_mult: "x" } }', 'layer { param { no_such_field: 1 } } }',
                'layer { convolution_param { weight_filler { std: 1 std: 2 } } }'):
        with pytest.raises(ModelFormatError):
            parse_message(bad, "NetParameter", skip=TRAINING_ONLY)
