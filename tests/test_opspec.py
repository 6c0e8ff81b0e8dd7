"""The op registry: one spec per IR op with its kernel, declared attributes, MAC rule,
fresh/alias flags and planner; docs/ops.md generated from it."""

from __future__ import annotations

import numpy as np
import pytest

import refnet.kernels as K
from refnet.graph import Node
from refnet.ops import doc, registry
from refnet.ops.registry import REQUIRED

# kernels that serve a family of ops and take the op name as their first argument
FAMILY_KERNELS = {"broadcast_binary", "unary", "compare"}
# ops whose kernel keeps another name, and why (kernel name == op name everywhere else)
KERNEL_NAMED_OTHERWISE = {
    "conv": "conv2d",  # `conv` would shadow the module refnet.kernels.conv (and perf work in conv.py)
    "deconv": "conv_transpose2d",  # lives beside conv2d in kernels/conv.py
    "normalize": "l2_normalize",  # `normalize` would shadow the module refnet.kernels.normalize
    "resize": "resize_bilinear",  # `resize` would shadow the module refnet.kernels.resize
    "sqrt": "power",  # power(x, 0.5)
    "square": "power",  # power(x, 2)
    "darknet_softmax": "softmax",  # softmax over reshaped groups
    "upsample_bilinear_ac": "resize_bilinear",  # THNN's align-corners bilinear is resize's align_corners rule
    "topk_dyn": "topk",  # TopK with a run-time k: the same kernel, k read from input 1
}


def _specs():
    return [registry.get(n) for n in registry.known_ops()]


def test_every_op_names_a_kernel_that_exists_or_says_why_not():
    for spec in _specs():
        if spec.kernel is None:
            assert spec.no_kernel, f"{spec.name}: kernel=None without a reason"
            continue
        for name in (spec.kernel, spec.kernel + "_reference"):
            assert callable(getattr(K, name, None)), f"op {spec.name!r}: refnet.kernels.{name} does not exist"
        if spec.kernel != spec.name:
            assert spec.kernel in FAMILY_KERNELS or KERNEL_NAMED_OTHERWISE.get(spec.name) == spec.kernel, (
                f"op {spec.name!r} runs kernel {spec.kernel!r}: name the kernel after the op")


def test_the_kernel_exceptions_are_still_needed():
    for op, kernel in KERNEL_NAMED_OTHERWISE.items():
        assert registry.get(op).kernel == kernel
        assert not callable(getattr(K, op, None)) or op in ("sqrt", "square", "darknet_softmax")


def test_fresh_and_alias_views_are_the_executor_sets():
    # the sets refnet/net.py declared by hand before the specs carried them; prior_box and
    # detection_output build new arrays (fresh since the program folds constants: the priors
    # read by detection_output are not viewed by its output)
    assert registry.FRESH_OPS == {
        "conv", "deconv", "linear", "relu", "prelu", "clip", "elu", "sigmoid", "tanh", "max_pool",
        "avg_pool", "batch_norm", "instance_norm", "lrn", "softmax", "log_softmax", "eltwise", "concat",
        "max_unpool", "normalize", "power", "pad", "prior_box", "detection_output"}
    assert registry.ALIAS_OPS == {"identity", "split"}


def test_planners_live_on_their_specs():
    planned = {s.name for s in _specs() if s.prepare is not None}
    assert planned == set(registry.PREPARE)
    assert all(registry.PREPARE[n] is registry.get(n).prepare for n in planned)


def test_mac_rules_are_the_specs():
    from refnet import info

    assert info.MAC_RULES == {s.name: s.macs for s in _specs() if s.macs is not None}
    conv = Node("c", "conv", ("x",), ("y",), {}, {"weight": np.zeros((8, 4, 3, 3))})
    assert info.layer_macs(conv, [(1, 4, 5, 5)], [(1, 8, 3, 3)]) == 8 * 9 * 4 * 9  # out * Ci * kh * kw
    assert info.layer_macs(Node("r", "relu", ("x",), ("y",)), [(1, 2)], [(1, 2)]) == 0


def test_every_declared_default_resolves():
    for spec in _specs():
        node = Node("n", spec.name, ("x",), ("y",), {})
        got = registry.attrs(node)
        for k, a in spec.attrs.items():
            if a.default is REQUIRED:
                assert k not in got
                with pytest.raises(KeyError):
                    got[k]
            else:
                assert k in got, (spec.name, k)


def test_attribute_forms_are_normalised_once():
    conv = Node("c", "conv", ("x",), ("y",), {"stride": 2, "pad": (1, 2), "dilation": (1, 3)})
    a = registry.attrs(conv)
    got = (a["stride"], a["pad"], a["dilation"], a["groups"], a["activation"])
    assert got == ((2, 2), (1, 2, 1, 2), (1, 3), 1, None)
    pool = Node("p", "max_pool", ("x",), ("y",), {"kernel": 3})
    b = registry.attrs(pool)
    assert (b["kernel"], b["stride"], b["pad"], b["ceil_mode"]) == ((3, 3), None, (0, 0, 0, 0), True)
    assert registry.attrs(pool) is b  # resolved once per node


def test_unknown_attributes_fail_in_check_mode(monkeypatch):
    monkeypatch.setattr(registry, "CHECK_ATTRS", True)
    node = Node("r", "relu", ("x",), ("y",), {"negative_slop": 0.1})
    with pytest.raises(RuntimeError, match="negative_slop"):
        registry.attrs(node)
    monkeypatch.setattr(registry, "CHECK_ATTRS", False)
    node = Node("r2", "relu", ("x",), ("y",), {"negative_slop": 0.1})
    assert registry.attrs(node)["negative_slope"] == 0.0


def test_docs_ops_md_is_generated_from_the_registry():
    text = doc.DOC.read_text()
    assert doc.BEGIN in text and doc.END in text
    assert doc.render(text) == text, "docs/ops.md disagrees with the op specs: python -m refnet.ops.doc --write"
    section = text.split(doc.BEGIN, 1)[1].split(doc.END, 1)[0]
    for spec in _specs():
        assert f"| `{spec.name}` |" in section
        for k in spec.attrs:
            assert f"`{k}=" in section


def test_doc_check_fails_on_a_stale_table(tmp_path, monkeypatch):
    text = doc.DOC.read_text()
    head, section = text.split(doc.BEGIN, 1)
    stale = head + doc.BEGIN + section.replace("`negative_slope=0.0`", "`negative_slope=0.5`", 1)
    assert stale != text
    p = tmp_path / "ops.md"
    p.write_text(stale)
    monkeypatch.setattr(doc, "DOC", p)
    assert doc.main(["--check"]) == 1
    assert doc.main(["--write"]) == 0 and doc.main(["--check"]) == 0
