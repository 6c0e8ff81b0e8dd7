"""Fuzzing the Caffe text format (.prototxt) through the whole loader.

Contract (issue 8): every input ends in a loaded net or a refnet error that names the file
and a line:col (or the layer). Oracles: the contract itself; for the parser's fast path, the
token parser it falls back on (a second, independent formulation of the same grammar) must
give the same message tree, values and positions on every input the fast path accepts.
"""

from __future__ import annotations

import random

import fuzzlib as F
import numpy as np
import pytest
from fuzzhyp import bytes_settings, contract_test, fuzz_settings, mutated, random_bytes
from hypothesis import given

from refnet.errors import ModelFormatError
from refnet.weights_import import prototxt as P
from refnet.weights_import.caffe import TRAINING_ONLY, read_caffe
from refnet.weights_import.caffe_schema import MESSAGES

FUZZ = fuzz_settings(800)


test_mutated_prototxt_loads_or_raises_a_located_refnet_error = contract_test(mutated("prototxt"), FUZZ)
test_random_bytes = contract_test(random_bytes("prototxt", 300), bytes_settings(100))


def _seed(name: str) -> F.Seed:
    return F.seed_named("prototxt", name)


@pytest.mark.parametrize("name", ["syn_conv_bn_scale", "syn_ssd", "syn_v1"])
def test_truncation_at_every_token_boundary(name):
    seed = _seed(name)
    text = seed.files["prototxt"]
    outcomes = {F.run_case(seed.case(text[:b])) for b in seed.boundaries}
    assert "ok" in outcomes and "ModelFormatError" in outcomes, outcomes  # the full text loads


def test_truncation_at_every_boundary_of_a_real_prototxt(models):
    seed = F.seed_named("prototxt", "real_mtcnn_det1")
    if seed is None:
        pytest.skip("mtcnn det1 not available")
    text = seed.files["prototxt"]
    for b in seed.boundaries[::3]:
        F.run_case(seed.case(text[:b]))


@pytest.mark.parametrize("depth", [63, 64, 65, 1000, 200_000])
def test_deep_nesting_is_refused_without_recursion_error(depth):
    text = ("layer { " * depth + "}" * depth).encode()
    outcome = F.run_case(F.Case("prototxt", {"prototxt": text}))
    if depth > 64:
        with pytest.raises(ModelFormatError, match=r"nested deeper than 64") as ei:
            read_caffe(prototxt_bytes=text)
        assert ei.value.line == 1 and ei.value.col is not None
    else:
        assert outcome == "ModelFormatError"  # nests fine, but LayerParameter has no `layer` field


def test_unclosed_and_unbalanced_nesting_points_at_the_opening_brace():
    with pytest.raises(ModelFormatError) as ei:
        read_caffe("net.prototxt", prototxt_bytes=b'name: "n"\nlayer {\n  name: "a"\n')
    e = ei.value
    assert (e.file, e.line, e.col) == ("net.prototxt", 4, 1)
    assert "opened at 2:7" in str(e) and "'}'" in str(e)


@pytest.mark.parametrize("bottom", ["r2", "r1", "nope"])
def test_cyclic_and_dangling_bottoms_are_refused_with_the_layer_named(bottom):
    text = ('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
            f'layer {{ name: "r1" type: "ReLU" bottom: "{bottom}" top: "r1" }}\n'
            'layer { name: "r2" type: "ReLU" bottom: "r1" top: "r2" }\n')
    if bottom == "r1":  # in place is legal Caffe; a layer reading its own top before it exists is not
        text = text.replace('top: "r1" }', 'top: "r0" }', 1)
    with pytest.raises(ModelFormatError) as ei:
        read_caffe("cyc.prototxt", prototxt_bytes=text)
    e = ei.value
    line2 = text.split("\n")[1]
    assert e.layer == "r1" and e.file == "cyc.prototxt" and (e.line, e.col) == (2, line2.index("bottom") + 1), str(e)
    assert f"bottom {bottom!r} is not produced" in str(e)


@pytest.mark.parametrize("dims", [[1, 3, 2**31 - 1, 2**31 - 1], [2**31 - 1] * 4, [1, 0, 4, 4], [1, 3, 1, 1]])
def test_huge_or_empty_declared_input_shapes(dims):
    """Shape inference at a declared 2**124-element input allocates nothing."""
    text = 'input: "data" ' + " ".join(f"input_dim: {d}" for d in dims) + (
        '\nlayer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 2 kernel_size: 3 stride: 2 } "
        'blobs { shape { dim: 2 dim: 3 dim: 3 dim: 3 } ' + "data: 0.5 " * 54 + "} "
        'blobs { shape { dim: 2 } data: 0 data: 0 } }')
    F.run_case(F.Case("prototxt", {"prototxt": text.encode()}))


# ---- the fast path against the token parser ----------------------------------------------------------
def _dump(m):
    if hasattr(m, "values"):
        return {"type": m.type.name, "values": {k: _dump(v) for k, v in sorted(m.values.items())},
                "unknown": list(m.unknown), "at": m.pos(), "fields": {k: m.pos(k) for k in sorted(m.field_where)}}
    if isinstance(m, list):
        return [_dump(x) for x in m]
    if isinstance(m, np.ndarray):
        return (str(m.dtype), [repr(x) for x in m.tolist()])
    if isinstance(m, float):
        return repr(m)
    return m


def _token_parser(text: str):
    p = P._Parser(text, "t.prototxt")
    msg, _ = p.message(MESSAGES["NetParameter"], 0, None, 0, 0)
    P._finish(msg)
    return msg


def _check_fast_path_agrees(data: bytes) -> bool:
    """True when the fast path accepted ``data``; then the token parser must agree exactly."""
    try:
        text = P._to_text(data, "t.prototxt")
    except ModelFormatError:
        return False
    try:
        fast = P._fast_parse(text, MESSAGES["NetParameter"], "t.prototxt")
    except P._Fallback:
        return False
    slow = _token_parser(text)  # raises (and fails the test) if the fast path accepted an error
    assert _dump(fast) == _dump(slow)
    # with the Caffe importer's skip set: the same tree without the skipped messages
    skipped = P._fast_parse(text, MESSAGES["NetParameter"], "t.prototxt", TRAINING_ONLY)
    assert _dump(skipped) == _dump(_without(slow, TRAINING_ONLY))
    return True


def _without(m, types):
    """Message ``m`` with every field whose message type is in ``types`` removed (in place)."""
    for name in list(m.values):
        v = m.values[name]
        subs = v if isinstance(v, list) else [v]
        if subs and hasattr(subs[0], "values"):
            if subs[0].type.name in types:
                del m.values[name]
                del m.field_where[name]
            else:
                for sub in subs:
                    _without(sub, types)
    return m


@given(mutated("prototxt", n_ops=1))
@FUZZ
def test_fast_path_equals_token_parser_on_mutated_text(case):
    _check_fast_path_agrees(case.files["prototxt"])


def test_fast_path_takes_the_real_and_synthetic_files():
    """The plain files real models ship with go through the fast path, identically."""
    taken = [s.name for s in F.seeds("prototxt") if s.name != "syn_fancy" and
             _check_fast_path_agrees(s.files["prototxt"])]
    assert len(taken) == len(F.seeds("prototxt")) - 1, taken
    assert not _check_fast_path_agrees(_seed("syn_fancy").files["prototxt"])  # escapes, < >, 1f: fallback


@pytest.mark.parametrize("text", [
    'name: "a" # trailing comment without newline', 'layer {\n name: "x" } # a: 1', "# only: 1\n# b { c }",
    'name: "a"\n# name: "b"', "layer { name: 'q' } ;", "layer < name: \"q\" >", 'input_dim: 1, input_dim: 2;',
    "layer { convolution_param: { num_output: 1 } }", "  \t\n", "", 'name: "a" name: "b"', "layer {{",
    "layer { } }", "layer: 3", "input_dim: 09", "input_dim: -0", "input_dim: 1e3", "input_dim: 2147483648",
    "layer { convolution_param { bias_term: 1 } }", "layer { pooling_param { pool: 1 } }",
    "layer { relu_param { negative_slope: -inf } }", "layer { relu_param { negative_slope: 1e39 } }",
    "layer { relu_param { negative_slope: .5e-3 } }", "layer { relu_param { negative_slope: 5. } }",
    "name: \"\\n\"", "name: \"é\"", "name:\"a\"layer{name:\"b\"}", "layer{top:\"a\"top:\"b\"}",
    "input_shape { dim: 1 dim: 2 }\ninput_shape { dim: 3 }", "foo { bar { baz: 1 } } name: \"n\"",
    "layer { unknown_thing: ident another: 3.5 name: \"z\" }", "name\u00a0: \"nbsp\"", "name: \"a\"\u2028",
])
def test_fast_path_edge_cases_agree_with_the_token_parser(text):
    data = text.encode()
    try:
        want = _dump(_token_parser(P._to_text(data, "t.prototxt")))
    except ModelFormatError as e:
        with pytest.raises(ModelFormatError) as ei:
            P.parse_message(data, "NetParameter", file="t.prototxt")
        assert str(ei.value) == str(e)
        return
    assert _dump(P.parse_message(data, "NetParameter", file="t.prototxt")) == want


def test_error_messages_name_file_position_expected_and_found():
    line4 = b"  convolution_param { num_output: 4294967296 }"
    with pytest.raises(ModelFormatError) as ei:
        read_caffe("deploy.prototxt",
                   prototxt_bytes=b'layer {\n  name: "c"\n  type: "Convolution"\n' + line4 + b"\n}\n")
    e = ei.value
    assert (e.file, e.line, e.col) == ("deploy.prototxt", 4, line4.index(b"4294967296") + 1)
    assert "value 4294967296 is out of range for uint32 field 'num_output'" in str(e)
    assert e.expected == "0 <= value <= 4294967295"
    with pytest.raises(ModelFormatError) as ei:  # semantic errors point at the field, name the layer
        read_caffe("deploy.prototxt", prototxt_bytes=b'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\n'
                                                     b'input_dim: 8\nlayer {\n  name: "p"\n  type: "Pooling"\n'
                                                     b'  bottom: "data"\n  top: "p"\n  pooling_param {\n'
                                                     b'    kernel_size: 2\n    pad: 2\n  }\n}\n')
    e = ei.value
    assert (e.file, e.line, e.col, e.layer) == ("deploy.prototxt", 11, 3, "p"), str(e)
    assert "pad (2, 2) must be smaller than the kernel (2, 2)" in str(e)


def test_many_layers_load_in_bounded_time():
    """A megabyte of small layers (the worst case per byte) loads well inside the 5 s budget."""
    import time

    text = 'input: "data" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1\n' + "".join(
        f'layer{{name:"r{i}" type:"ReLU" bottom:"{"data" if i == 0 else f"r{i - 1}"}" top:"r{i}"}}\n'
        for i in range(16_000))
    assert len(text) < 1 << 20
    # CPU time of this process: the contract bounds the loader's work, not what else the machine runs
    t = time.process_time()
    assert F.run_case(F.Case("prototxt", {"prototxt": text.encode()})) == "ok"
    assert time.process_time() - t < 5.0


def test_generator_is_deterministic():
    a, _ = F.generate("prototxt", 123, 7)
    b, _ = F.generate("prototxt", 123, 7)
    assert a.files == b.files
    rnd = random.Random(1)
    assert F.mutate(_seed("syn_ssd"), rnd)[0] == F.mutate(_seed("syn_ssd"), random.Random(1))[0]
