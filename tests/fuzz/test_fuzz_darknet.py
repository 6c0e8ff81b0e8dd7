"""Fuzzing Darknet .cfg and .weights through the whole loader.

Oracles: the error contract; the test-side writer's per-layer blob sizes (where each layer's
floats start and end in the weights file); hand-counted float totals for the size messages.
"""

from __future__ import annotations

import struct
import time
import tracemalloc

import fuzzlib as F
import numpy as np
import pytest
from fuzzhyp import bytes_settings, contract_test, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st
from writers import darknet_writer as DW

from refnet.errors import ModelFormatError
from refnet.weights_import.darknet import read_darknet

FUZZ = fuzz_settings(800)


test_mutated_cfg_loads_or_raises_a_located_refnet_error = contract_test(mutated("cfg"), FUZZ)
test_mutated_weights_load_or_raise_a_located_refnet_error = contract_test(mutated("weights"), FUZZ)


@given(st.binary(max_size=300), st.booleans())
@bytes_settings(100)
def test_random_bytes_as_cfg_or_weights(data, as_cfg):
    cfg = _seed("cfg", "tiny_yolo").files["cfg"]
    files = {"cfg": data} if as_cfg else {"cfg": cfg, "weights": data}
    F.run_case(F.Case("cfg" if as_cfg else "weights", files))


def _seed(fmt: str, name: str, with_weights: bool = False) -> F.Seed:
    return next(s for s in F.seeds(fmt) if s.name == name and ("weights" in s.files) == with_weights)


@pytest.mark.parametrize("name", ["all_layers", "tiny_yolo"])
def test_weights_truncated_at_every_blob_boundary_name_the_layer(name):
    seed = _seed("weights", name, True)
    data = seed.files["weights"]
    assert len(seed.boundaries) > 10
    for b in seed.boundaries[:-1]:
        with pytest.raises(ModelFormatError) as ei:
            F.load_case(seed.case(data[:b]))
        e = ei.value
        assert e.file == F.WEIGHTS_NAME and e.offset is not None
        assert b < 20 or e.layer is not None, str(e)  # past the header: the layer whose data runs out
    assert F.run_case(seed.case(data)) == "ok"
    with pytest.raises(ModelFormatError, match="left over"):  # one float too many
        F.load_case(seed.case(data + b"\0\0\0\0"))


@pytest.mark.parametrize("name", ["all_layers", "tiny_yolo"])
def test_cfg_truncated_at_every_line(name):
    seed = _seed("cfg", name, True)
    text = seed.files["cfg"]
    ends = [i + 1 for i, c in enumerate(text) if c == 0x0A]
    outcomes = {F.run_case(seed.case(text[:b])) for b in ends}
    assert "ModelFormatError" in outcomes


@pytest.mark.parametrize("major,minor", [(0, 1), (0, 2), (1000, 0), (0, 1000), (-1, 0), (2**31 - 1, 2**31 - 1)])
def test_header_variants(major, minor):
    seed = _seed("weights", "tiny_yolo", True)
    data = bytearray(seed.files["weights"])
    struct.pack_into("<ii", data, 0, major, minor)
    F.run_case(seed.case(bytes(data)))


def test_the_size_message_counts_the_floats():
    cfg = DW.cfg_text([("net", {"width": 8, "height": 8, "channels": 3}),
                       ("convolutional", {"filters": 4, "size": 3, "pad": 1, "batch_normalize": 1}),
                       ("convolutional", {"filters": 2, "size": 1})])
    need = (4 + 3 * 4 + 4 * 3 * 9) + (2 + 2 * 4)  # biases, BN scale/mean/var, weights; then layer 2
    data = DW.header_bytes() + np.zeros(need - 3, np.float32).tobytes()
    with pytest.raises(ModelFormatError) as ei:
        read_darknet("n.cfg", "n.weights", cfg_text=cfg, weights_bytes=data)
    e = ei.value
    assert e.file == "n.weights" and e.layer == "conv_1" and e.expected == f"{need} floats"
    assert f"the cfg needs {need} floats of weights but the file holds {need - 3}" in str(e)
    assert e.offset == 20 + 4 * (need - 8)  # where conv_1's weights (the blob that runs out) start


@pytest.mark.parametrize("layers", ["0", "1", "5", "-1,1", "99", "-99", "2147483647", "-2147483648", "-3"])
def test_route_references_to_itself_later_layers_and_heads(layers):
    cfg = DW.cfg_text([("net", {"width": 8, "height": 8, "channels": 3}), ("maxpool", {"size": 2, "stride": 2}),
                       ("route", {"layers": layers}), ("maxpool", {"size": 1})])
    outcome = F.run_case(F.Case("cfg", {"cfg": cfg.encode()}))
    if layers in ("0", "-1"):
        assert outcome == "ok"
    else:
        with pytest.raises(ModelFormatError) as ei:
            read_darknet("r.cfg", cfg_text=cfg)
        line = cfg.split("\n").index(f"layers={layers}") + 1
        assert (ei.value.line, ei.value.col) == (line, 8) and "not an earlier layer" in str(ei.value)


@pytest.mark.parametrize("opts", [
    {"filters": 2**20, "size": 2**10},  # 2**40 weights declared: a size error, nothing allocated
    {"filters": 2**31, "size": 3},
    {"filters": 4, "size": 3, "stride": 0},
    {"filters": 4, "size": 3, "groups": 3},
    {"filters": 4, "size": 3, "dilation": 2**31},
])
def test_huge_or_bad_convolutions(opts):
    cfg = DW.cfg_text([("net", {"width": 64, "height": 64, "channels": 4}), ("convolutional", opts)])
    tracemalloc.start()
    try:
        outcome = F.run_case(F.Case("weights", {"cfg": cfg.encode(), "weights": DW.header_bytes() + bytes(64)}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome == "ModelFormatError" and peak < 4 << 20


def test_a_megabyte_of_sections_loads_in_bounded_time():
    cfg = "[net]\nwidth=8\nheight=8\nchannels=3\n" + "[maxpool]\nsize=1\n" * 55_000
    assert len(cfg) < 1 << 20
    # CPU time of this process: the contract bounds the loader's work, not what else the machine runs
    t = time.process_time()
    assert F.run_case(F.Case("cfg", {"cfg": cfg.encode()})) == "ok"
    assert time.process_time() - t < 5.0
