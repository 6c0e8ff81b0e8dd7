"""Fuzzing the Caffe binary format (.caffemodel, protobuf wire) through the whole loader.

Oracles: the error contract; this module's own wire walker (fuzzlib.walk_wire) for where the
fields and their length varints are; tracemalloc for the memory a hostile size may cost; the
generic schema-driven decoder + blob_array for the compiled weights index (same arrays);
Caffe's rules (blob counts and shapes per layer type) for weights that contradict the net.
"""

from __future__ import annotations

import tracemalloc

import fuzzlib as F
import numpy as np
import pytest
from fuzzhyp import bytes_settings, contract_test, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st
from writers import caffe_writer as CW

from refnet.errors import ModelFormatError, ShapeError
from refnet.weights_import import caffe as C
from refnet.weights_import import protobuf as PB
from refnet.weights_import.caffe import read_caffe
from refnet.weights_import.caffe_schema import MESSAGES

FUZZ = fuzz_settings(1200)


def _seed(name: str) -> F.Seed:
    return F.seed_named("caffemodel", name)


test_mutated_caffemodel_loads_or_raises_a_located_refnet_error = contract_test(mutated("caffemodel"), FUZZ)


@given(st.binary(max_size=400), st.booleans())
@bytes_settings(150)
def test_random_bytes_alone_and_with_a_prototxt(data, with_text):
    files = {"caffemodel": data}
    if with_text:
        files["prototxt"] = _seed("syn_conv_bn_scale").files["prototxt"]
    F.run_case(F.Case("caffemodel", files))


@pytest.mark.parametrize("name", ["syn_conv_bn_scale", "syn_defs", "syn_defs_v1", "syn_blob_fp16", "syn_unpacked"])
def test_truncation_at_every_field_boundary(name):
    seed = _seed(name)
    data = seed.files["caffemodel"]
    outcomes = {F.run_case(seed.case(data[:b])) for b in seed.boundaries}
    assert "ok" in outcomes and "ModelFormatError" in outcomes, outcomes


def test_truncation_at_every_top_level_boundary_of_a_real_caffemodel(models):
    seed = F.seed_named("caffemodel", "real_mtcnn_det1")
    if seed is None:
        pytest.skip("mtcnn det1 not available")
    data = seed.files["caffemodel"]
    for f in F.walk_wire(data) or []:
        if f.depth <= 1:
            F.run_case(seed.case(data[: f.start]))
            F.run_case(seed.case(data[: f.end - 1]))


@pytest.mark.parametrize("delta", ["+1", "2**31", "2**63", "2**64-1", "0"])
def test_inflated_length_fields(delta):
    """Every length varint of a small model, inflated (or zeroed): a huge length is a truncation
    error located at its own field's tag, and nothing of the declared size is allocated; a
    length one too long or zero shifts the parse and still ends in the contract."""
    seed = _seed("syn_conv_bn_scale")
    data = seed.files["caffemodel"]
    fields = [f for f in seed.meta["fields"] if f.len_at >= 0]
    assert len(fields) > 20
    for f in fields:
        n = {"+1": f.length + 1, "2**31": 2**31, "2**63": 2**63, "2**64-1": 2**64 - 1, "0": 0}[delta]
        bad = data[: f.len_at] + CW.varint(n) + data[f.payload:]
        F.run_case(seed.case(bad))
        if n > len(data):
            with pytest.raises(ModelFormatError, match="truncated|not a multiple of") as ei:
                read_caffe("m.prototxt", "m.caffemodel", prototxt_bytes=seed.files["prototxt"], caffemodel_bytes=bad)
            e = ei.value
            # at the field's tag, or at its length varint when the longer varint itself runs past
            # the end of the enclosing message
            assert e.file == "m.caffemodel" and e.offset in (f.start, f.len_at), (f, str(e))
            assert e.expected in (f"{n} more bytes", "a varint continuation byte", "a multiple of 4 bytes")


@pytest.mark.parametrize("depth,closed", [(62, True), (63, True), (64, True), (20_000, True), (20_000, False)])
def test_nested_groups_are_bounded(depth, closed):
    """Deprecated groups (wire types 3/4) are skipped by a depth-limited walk, never recursion:
    a layer (nesting depth 1) may hold groups up to a total depth of 63."""
    body = CW.key(9, 3) * depth + (CW.key(9, 4) * depth if closed else b"")
    data = CW.ld(100, CW.ld(1, b"c") + body)
    outcome = F.run_case(F.Case("caffemodel", {"caffemodel": data, "prototxt": b'name: "n"'}))
    if depth >= 64 or not closed:
        with pytest.raises(ModelFormatError, match=r"groups nested deeper than 64|truncated group"):
            read_caffe(prototxt_bytes=b'name: "n"', caffemodel_bytes=data)
    else:
        assert outcome == "ok"


@pytest.mark.parametrize("depth", [65, 1000])
def test_nested_messages_are_bounded(depth):
    data = b"x"
    for _ in range(depth):
        data = CW.ld(100, CW.ld(7, data))  # layer { blobs { layer { ... } } } read as NetParameter
    F.run_case(F.Case("caffemodel", {"caffemodel": data}))


def _conv_net(blobs: list[np.ndarray], fmt: str = "shape", **conv) -> tuple[bytes, bytes]:
    spec = CW.NetSpec([CW.Layer("c", "Convolution", ["data"], ["c"],
                                {"convolution_param": {"num_output": 2, "kernel_size": 3, **conv}}, blobs)],
                      {"data": (1, 3, 8, 8)})
    return CW.prototxt(spec).encode(), CW.caffemodel(spec, fmt=fmt)


def _blob(shape_dims: list[int], n_floats: int) -> bytes:
    return CW.ld(7, CW.ld(1, b"".join(CW.varint(d) for d in shape_dims))) + CW.ld(5, b"\0\0\0\0" * n_floats)


@pytest.mark.parametrize("dims,msg", [
    ([2**62, 2**62, 4], f"needs {2**126} values but the blob holds 1"),
    ([2**63 - 1], "needs 9223372036854775807 values"),
    ([-1, 2, 3, 3], "negative dimension"),
    ([1] * 33, "blob has 33 axes"),
    ([0, 2, 3, 3], "needs 0 values but the blob holds 1"),
])
def test_huge_negative_and_deep_blob_shapes_allocate_nothing(dims, msg):
    text, _ = _conv_net([])
    data = CW.ld(100, CW.ld(1, b"c") + CW.ld(7, _blob(dims, 1)) + CW.ld(7, _blob([2], 2)))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=msg) as ei:
            read_caffe("m.prototxt", "m.caffemodel", prototxt_bytes=text, caffemodel_bytes=data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert ei.value.layer == "c" and ei.value.file == "m.caffemodel" and ei.value.offset is not None


def _weights_case(layers: list[CW.Layer], inputs: dict) -> tuple[bytes, bytes]:
    spec = CW.NetSpec(layers, inputs)
    return CW.prototxt(spec).encode(), CW.caffemodel(spec)


R = np.random.default_rng(3)
X = {"data": (1, 3, 8, 8)}
L = CW.Layer


@pytest.mark.parametrize("layers,inputs,match", [
    ([L("c", "Convolution", ["data"], ["c"], {"convolution_param": {"num_output": 2, "kernel_size": 3}},
        [R.standard_normal((2, 3, 3, 3))])], X, r"layer 'c': Convolution layer has 1 blobs .*expected 2 blobs"),
    ([L("c", "Convolution", ["data"], ["c"], {"convolution_param": {"num_output": 2, "kernel_size": 3}},
        [R.standard_normal((2, 3, 5, 5)), np.zeros(2)])], X, r"layer 'c': convolution weights does not match"),
    ([L("c", "Convolution", ["data"], ["c"], {"convolution_param": {"num_output": 2, "kernel_size": 3}},
        [R.standard_normal((2, 4, 3, 3)), np.zeros(2)])], X, r"layer 'c'.*"),  # C_in 4 vs input 3: shapes
    ([L("c", "Convolution", ["data"], ["c"], {"convolution_param": {"num_output": 2, "kernel_size": 3}},
        [R.standard_normal((2, 3, 3, 3)), np.zeros(3)])], X, r"layer 'c': bias size does not match"),
    ([L("ip", "InnerProduct", ["data"], ["ip"], {"inner_product_param": {"num_output": 4}},
        [R.standard_normal((4, 100)), np.zeros(4)])], X, r"layer 'ip'"),  # K 100 vs 3*8*8
    ([L("bn", "BatchNorm", ["data"], ["bn"], {}, [np.zeros(3), np.ones(4), np.ones(1)])], X,
     r"layer 'bn': variance size does not match"),
    ([L("bn", "BatchNorm", ["data"], ["bn"], {}, [np.zeros(5), np.ones(5), np.ones(1)])], X, r"layer 'bn'"),
    ([L("s", "Scale", ["data"], ["s"], {}, [np.ones(7)])], X, r"layer 's'"),
    ([L("p", "PReLU", ["data"], ["p"], {}, [np.ones(5)])], X, r"layer 'p'"),
    ([L("n", "Normalize", ["data"], ["n"], {"norm_param": {"channel_shared": False}}, [np.ones(5)])], X,
     r"layer 'n'"),
    ([L("d", "Deconvolution", ["data"], ["d"], {"convolution_param": {"num_output": 4, "kernel_size": 2}},
        [R.standard_normal((3, 2, 2, 2)), np.zeros(4)])], X, r"layer 'd': deconvolution weights does not match"),
    ([L("n", "Normalize", ["data"], ["n"], {"norm_param": {"channel_shared": True}}, [np.ones(3)])], X,
     r"layer 'n': scale count \(channel_shared\)"),
])
def test_weights_that_contradict_the_definition_are_refused_with_the_layer_named(layers, inputs, match):
    text, model = _weights_case(layers, inputs)
    with pytest.raises((ModelFormatError, ShapeError), match=match) as ei:
        F.load_case(F.Case("caffemodel", {"prototxt": text, "caffemodel": model}))
    assert ei.value.layer == layers[0].name
    assert F.run_case(F.Case("caffemodel", {"prototxt": text, "caffemodel": model})) in (
        "ModelFormatError", "ShapeError")


# ---- the compiled weights index against the generic decoder ----------------------------------------
def _arrays(layers):
    return [(L.name, [(str(a.dtype), a.shape, a.tobytes()) for a in L.arrays]) for L in layers]


def _generic_weights(data: bytes):
    """What the generic path makes of a caffemodel's weights: per layer with blobs, its name and
    each blob as blob_array makes it (or "error"); or "error" when the file does not decode."""
    try:
        layers = C._layers_of(PB.decode_weights(data, "w"))
    except ModelFormatError:
        return "error"
    out = []
    for L in layers:
        if L.blobs:
            blobs = []
            for b in L.blobs:
                try:
                    a = C.blob_array(b, L.name)
                    blobs.append((str(a.dtype), a.shape, a.tobytes()))
                except ModelFormatError:
                    blobs.append("error")
            out.append((L.name, blobs))
    return out


def _check_index_agrees(data: bytes) -> bool:
    """True when the compiled index took ``data``; then the generic decoder must give the same
    layers and the same arrays, without any error."""
    fast = C._scanned_weights(data)
    if fast is None:
        return False
    assert _arrays(fast) == _generic_weights(data)
    return True


@given(mutated("caffemodel", n_ops=1))
@FUZZ
def test_weights_index_equals_the_generic_decoder(case):
    _check_index_agrees(case.files["caffemodel"])


def test_weights_index_takes_the_real_and_synthetic_models(models):
    taken = [s.name for s in F.seeds("caffemodel") if _check_index_agrees(s.files["caffemodel"])]
    left = {s.name for s in F.seeds("caffemodel")} - set(taken)
    assert left <= {"syn_unpacked"}, left  # unpacked floats: the generic decoder's job
    assert len(taken) >= 10


@pytest.mark.parametrize("name", [b"\xc3\xa9t\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc0\x80",
                                  b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"a\xff"])
def test_weights_index_checks_names_as_strictly_as_python(name):
    """Valid UTF-8 names are taken as Python decodes them; overlong forms, surrogates, code points
    past U+10FFFF, cut sequences and stray bytes go to the generic decoder (which reports them)."""
    data = CW.ld(100, CW.ld(1, name) + CW.ld(7, CW.ld(5, np.ones(1, "<f4").tobytes())))  # shape (1,)
    try:
        expected = name.decode("utf-8")
    except UnicodeDecodeError:
        assert C._scanned_weights(data) is None
        return
    assert [L.name for L in C._scanned_weights(data)] == [expected]


@pytest.mark.parametrize("edit", ["mixed_v1_v2", "name_twice", "diff", "truncated", "bad_utf8"])
def test_weights_index_leaves_the_unusual_to_the_generic_decoder(edit):
    """Hand-made files the index must not take (each decodes differently or fails generically)."""
    layer = CW.ld(1, b"conv") + CW.ld(7, CW.ld(5, np.ones(1, "<f4").tobytes()))
    assert C._scanned_weights(CW.ld(100, layer)) is not None  # taken as it is
    data = {
        "mixed_v1_v2": CW.ld(100, layer) + CW.ld(2, CW.ld(4, b"x")
                                                                  + CW.ld(6, CW.ld(5, b"\0" * 4))),
        "name_twice": CW.ld(100, CW.ld(1, b"a") + layer),
        "diff": CW.ld(100, CW.ld(1, b"c") + CW.ld(7, CW.ld(6, b"\0" * 4))),
        "truncated": CW.ld(100, layer)[:-3],
        "bad_utf8": CW.ld(100, CW.ld(1, b"\xff") + CW.ld(7, CW.ld(5, b"\0" * 4))),
    }[edit]
    assert C._scanned_weights(data) is None


def test_caffemodel_errors_name_the_file_offset_layer_expected_and_found():
    text, model = _conv_net([R.standard_normal((2, 3, 3, 3)), np.zeros(2)])
    fields = F.walk_wire(model)
    data_field = next(f for f in fields if f.number == 5 and f.depth == 2)  # the weights' float data
    bad = F._remove_span(model, data_field.payload, data_field.payload + 4)  # one float fewer, lengths fixed
    with pytest.raises(ModelFormatError) as ei:
        read_caffe("m.prototxt", "m.caffemodel", prototxt_bytes=text, caffemodel_bytes=bad)
    e = ei.value
    assert e.file == "m.caffemodel" and e.layer == "c" and e.offset is not None
    assert "blob shape (2, 3, 3, 3) needs 54 values but the blob holds 53" in str(e) and e.expected == "54 values"


def test_many_short_unpacked_float_runs_take_linear_time():
    """Unpacked float values interleaved with another field: each run once compared the whole
    rest of the message (O(n^2): ~25 s for 1 MB)."""
    import time

    pair = b"\x2d\x00\x00\x80\x3f" + b"\x08\x01"  # data: 1.0 (unpacked), num: 1
    data = CW.ld(100, CW.ld(1, b"c") + CW.ld(7, pair * 140_000))
    assert len(data) < 1 << 20
    # CPU time of this process: the contract bounds the loader's work, not what else the machine runs
    t = time.process_time()
    F.run_case(F.Case("caffemodel", {"caffemodel": data, "prototxt": b'name: "x"'}))
    assert time.process_time() - t < 5.0
    blob = PB.decode_message(PB.Reader(pair * 1000), MESSAGES["BlobProto"])  # the runs are all read
    assert blob.get("data").shape == (1000,) and (blob.get("data") == 1.0).all() and blob.get("num") == 1


def test_wire_errors_inside_a_layer_name_that_layer():
    """A malformed field inside a layer's bytes: the error gives the byte offset and the layer."""
    text, model = _conv_net([R.standard_normal((2, 3, 3, 3)), np.zeros(2)])
    data_field = next(f for f in F.walk_wire(model) if f.number == 5 and f.depth == 2)
    for bad in (model[: data_field.payload + 10],  # cut inside the weights
                model[: data_field.start] + b"\x07" + model[data_field.start + 1:]):  # wire type 7
        with pytest.raises(ModelFormatError) as ei:
            read_caffe("m.prototxt", "m.caffemodel", prototxt_bytes=text, caffemodel_bytes=bad)
        e = ei.value
        assert e.layer == "c" and e.file == "m.caffemodel" and e.offset is not None, str(e)
