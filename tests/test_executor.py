"""The graph IR and the executor: naming, outputs, trace, fusion, liveness, errors.

Oracles are computed here with plain numpy (einsum convolutions, explicit BN formulas), not
with refnet's kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, conv_oracle

from refnet.errors import ModelFormatError, ShapeError, UnsupportedLayerError
from refnet.graph import Graph, Node
from refnet.net import Net


def make_net(rng, with_branch=False):
    w = rng.normal(size=(5, 3, 3, 3)) * 0.3
    b = rng.normal(size=5)
    mean, var = rng.normal(size=5), rng.uniform(0.5, 2.0, size=5)
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    nodes = [
        Node("conv1", "conv", ["data"], ["conv1"], {"pad": (1, 1, 1, 1)}, {"weight": w, "bias": b}),
        Node("bn1", "batch_norm", ["conv1"], ["bn1"], {"eps": 1e-5}, {"mean": mean, "var": var}),
        Node("scale1", "scale", ["bn1"], ["scale1"], {"axis": 1}, {"weight": gamma, "bias": beta}),
        Node("relu1", "relu", ["scale1"], ["relu1"], {}),
        Node("pool1", "max_pool", ["relu1"], ["pool1", "pool1:1"], {"kernel": (2, 2), "stride": (2, 2)}),
    ]
    if with_branch:
        nodes.append(Node("sig", "sigmoid", ["conv1"], ["sig"], {}))
    g = Graph(nodes, ["data"], {"data": (1, 3, 8, 10)}, framework="test")
    params = dict(w=w, b=b, mean=mean, var=var, gamma=gamma, beta=beta)
    return Net(g), params


def oracle(x, P):
    c = conv_oracle(x, P["w"], P["b"], 1)
    bn = (c - P["mean"][None, :, None, None]) / np.sqrt(P["var"][None, :, None, None] + 1e-5)
    sc = bn * P["gamma"][None, :, None, None] + P["beta"][None, :, None, None]
    r = np.maximum(sc, 0)
    n, ch, h, w = r.shape
    pool = r.reshape(n, ch, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return {"conv1": c, "bn1": bn, "scale1": sc, "relu1": r, "pool1": pool}


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_trace_every_layer_in_order(rng, precision):
    net, P = make_net(rng)
    x = rng.normal(size=(1, 3, 8, 10))
    tr = net.trace(x, precision=precision)
    assert list(tr) == ["conv1", "bn1", "scale1", "relu1", "pool1"]
    want = oracle(x, P)
    tol = 1e-12 if precision == "float64" else 1e-5
    for k, v in want.items():
        assert tr[k].dtype == np.dtype(precision)
        assert_close(tr[k], v, tol, k)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_stream_trace_yields_each_layer_once_and_holds_only_live_tensors(rng, precision):
    """crosscheck.local.stream_trace drives the trace program one step at a time: the same
    layers in the same order as trace, the oracle's values, and a tensor no later layer reads
    is gone (nothing but the consumer held it) by the time the next layers arrive."""
    import gc
    import weakref

    from refnet.crosscheck.local import stream_trace

    net, P = make_net(rng)
    x = rng.normal(size=(1, 3, 8, 10))
    want = oracle(x, P)
    tol = 1e-12 if precision == "float64" else 1e-5
    seen, refs = [], {}
    for name, v in stream_trace(net, {"data": x}, precision):
        seen.append(name)
        assert v.dtype == np.dtype(precision)
        assert_close(v, want[name], tol, name)
        refs[name] = weakref.ref(v)
        del v
        gc.collect()
        if name == "pool1":  # conv1 and bn1 were last read two and three steps ago
            assert refs["conv1"]() is None and refs["bn1"]() is None
    assert seen == list(net.trace(x, precision=precision)) == ["conv1", "bn1", "scale1", "relu1", "pool1"]


def test_forward_fused_float32_matches_reference(rng):
    net, P = make_net(rng)
    x = rng.normal(size=(1, 3, 8, 10))
    out = net.forward(x)  # default outputs: the unconnected layers
    assert list(out) == ["pool1"] == list(net.output_names)
    assert_close(out["pool1"], oracle(x, P)["pool1"], 1e-5, "fused pool1")
    plan = net._plan(("pool1",), True)
    assert [s.node.op for s in plan.steps] == ["conv", "max_pool"], "BN, Scale and ReLU fold into the conv"
    assert plan.steps[0].node.attrs["activation"] == "relu"


def test_in_place_layer_addressed_by_its_own_name(rng):
    """forward(outputs=["conv1"]) is conv1's output before BN/ReLU, even on the fused path."""
    net, P = make_net(rng)
    x = rng.normal(size=(1, 3, 8, 10))
    want = oracle(x, P)
    out = net.forward(x, outputs=["conv1", "relu1", "pool1:1"], precision="float32")
    assert_close(out["conv1"], want["conv1"], 1e-5, "conv1")
    assert_close(out["relu1"], want["relu1"], 1e-5, "relu1")
    idx = out["pool1:1"]
    assert idx.shape == (1, 5, 4, 5)
    r = want["relu1"]
    flat = r.reshape(1, 5, -1)
    np.testing.assert_allclose(np.take_along_axis(flat, idx.reshape(1, 5, -1).astype(np.int64), 2),
                               want["pool1"].reshape(1, 5, -1), rtol=1e-5)


def test_branch_prevents_fusion(rng):
    net, P = make_net(rng, with_branch=True)
    x = rng.normal(size=(1, 3, 8, 10))
    out = net.forward(x, precision="float32")
    assert set(out) == {"pool1", "sig"}
    assert_close(out["sig"], 1 / (1 + np.exp(-oracle(x, P)["conv1"])), 1e-5, "sig")
    plan = net._plan(tuple(net.output_names), True)
    assert plan.steps[0].node.op == "conv" and "activation" not in plan.steps[0].node.attrs


def test_liveness_frees_intermediates(rng):
    net, _ = make_net(rng, with_branch=True)
    plan = net._plan(("pool1",), False)
    freed = [t for s in plan.steps for t in s.free]
    assert set(freed) >= {"conv1", "bn1", "scale1", "relu1"}
    assert "pool1" not in freed and "data" not in freed


def test_input_errors(rng):
    net, _ = make_net(rng)
    with pytest.raises(ShapeError, match="channels"):
        net.forward(np.zeros((1, 4, 8, 10)))
    with pytest.raises(ShapeError, match="inputs must be exactly"):
        net.forward({"image": np.zeros((1, 3, 8, 10))})
    with pytest.raises(ShapeError, match="numeric"):
        net.forward(np.zeros((1, 3, 8, 10), dtype=bool))
    with pytest.raises(KeyError, match="nope"):
        net.forward(np.zeros((1, 3, 8, 10)), outputs=["nope"])
    with pytest.raises(ValueError, match="precision"):
        net.forward(np.zeros((1, 3, 8, 10)), precision="float16")
    with pytest.raises(ShapeError, match="pool1"):  # too small for the pooling window after the conv
        net.forward(np.zeros((1, 3, 1, 1)))


def test_nan_propagates(rng):
    net, _ = make_net(rng)
    x = rng.normal(size=(1, 3, 8, 10))
    x[0, 0, 0, 0] = np.nan
    y = net.forward(x, precision="float64")["pool1"]
    assert np.isnan(y).any() and np.isfinite(y).any()


def test_graph_validation():
    w = np.zeros((1, 1, 1, 1))
    with pytest.raises(ModelFormatError, match="dangling"):
        Graph([Node("a", "relu", ["nothere"], ["a"])], ["data"], {"data": None})
    with pytest.raises(ModelFormatError, match="duplicate"):
        Graph([Node("a", "relu", ["data"], ["a"]), Node("a", "relu", ["data"], ["a"])], ["data"], {"data": None})
    with pytest.raises(ModelFormatError, match="must be named"):
        Graph([Node("a", "conv", ["data"], ["out"], {}, {"weight": w})], ["data"], {"data": None})
    with pytest.raises(UnsupportedLayerError, match="frobnicate"):
        Net(Graph([Node("a", "frobnicate", ["data"], ["a"])], ["data"], {"data": None}))


def test_node_is_frozen():
    n = Node("a", "relu", ["x"], ["a"], {"negative_slope": 0.1})
    with pytest.raises(AttributeError):
        n.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        n.attrs["negative_slope"] = 0.2  # type: ignore[index]
