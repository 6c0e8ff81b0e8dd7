"""The float32 executor's programs: fusion (conv / deconv / instance norm with BatchNorm, Scale,
Bias, Power and ReLU / PReLU / ReLU6), identity aliasing, preallocated buffers reused through
liveness (never leaking into returned arrays), per-step profiling, thread settings and
concurrent forward passes. Oracles are plain numpy formulas written here (einsum
convolutions, explicit normalisations), never refnet's kernels."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, conv_oracle, run_threads

from refnet.graph import Graph, Node
from refnet.net import Net, get_num_threads, set_num_threads
from refnet.ops.registry import Ctx

_F32 = Ctx("float32")


def chan(v):
    return np.asarray(v, np.float64).reshape(1, -1, 1, 1)


def test_conv_bn_scale_power_prelu_fold_into_one_step(rng):
    c = 6
    w, b = rng.normal(size=(c, 3, 3, 3)) * 0.4, rng.normal(size=c)
    mean, var = rng.normal(size=c), rng.uniform(0.5, 2, c)
    gamma, beta, slope = rng.normal(size=c), rng.normal(size=c), rng.uniform(0.05, 0.5, c)
    nodes = [
        Node("conv", "conv", ["data"], ["conv"], {"pad": (1, 1, 1, 1)}, {"weight": w, "bias": b}),
        Node("bn", "batch_norm", ["conv"], ["bn"], {"eps": 1e-3}, {"mean": mean, "var": var}),
        Node("sc", "scale", ["bn"], ["sc"], {"axis": 1}, {"weight": gamma, "bias": beta}),
        Node("drop", "power", ["sc"], ["drop"], {"power": 1.0, "scale": 0.9, "shift": 0.25}),
        Node("act", "prelu", ["drop"], ["act"], {}, {"slope": slope}),
        Node("flat", "flatten", ["act"], ["flat"], {"axis": 1}),
    ]
    net = Net(Graph(nodes, ["data"], {"data": (2, 3, 7, 8)}))
    x = rng.normal(size=(2, 3, 7, 8))
    y = (conv_oracle(x, w, b, 1) - chan(mean)) / np.sqrt(chan(var) + 1e-3) * chan(gamma) + chan(beta)
    y = 0.9 * y + 0.25
    want = np.where(y > 0, y, y * chan(slope)).reshape(2, -1)
    out = net.forward(x)["flat"]
    assert out.dtype == np.float32
    assert_close(out, want, "f32_vs_f64", "fused float32")
    assert_close(net.forward(x, precision="float64")["flat"], want, 1e-12, "float64 unfused")
    plan = net._plan(("flat",), True)
    assert [s.node.op for s in plan.steps] == ["conv", "flatten"]
    assert plan.steps[0].node.attrs["activation"] == "prelu"
    # asking for an intermediate stops the fusion there and still gives the right values
    mid = net.forward(x, outputs=["bn", "flat"])
    assert_close(mid["bn"], (conv_oracle(x, w, b, 1) - chan(mean)) / np.sqrt(chan(var) + 1e-3), "f32_vs_f64", "bn")
    assert_close(mid["flat"], want, "f32_vs_f64", "flat after a partial fusion")


def test_residual_add_and_relu_fuse_into_the_conv(rng):
    """ResNet's tail: conv -> BN -> Add(shortcut made earlier) -> ReLU runs as one conv step with
    the shortcut as a second input (ONNX Add and Caffe Eltwise SUM); an add whose other operand is
    made later, a broadcasting add, or a requested conv output do not fuse (or stay exact)."""
    c = 4
    w0, w1, w2 = (rng.normal(size=(c, c, k, k)) * 0.4 for k in (1, 3, 1))
    b0, b1, b2 = (rng.normal(size=c) for _ in range(3))
    mean, var = rng.normal(size=c), rng.uniform(0.5, 2, c)
    bias_t = rng.normal(size=(1, c, 1, 1))
    nodes = [
        Node("c0", "conv", ["data"], ["c0"], {}, {"weight": w0, "bias": b0}),
        Node("c1", "conv", ["c0"], ["c1"], {"pad": (1, 1, 1, 1)}, {"weight": w1, "bias": b1}),
        Node("bn", "batch_norm", ["c1"], ["bn"], {"eps": 1e-3}, {"mean": mean, "var": var}),
        Node("add", "add", ["c0", "bn"], ["add"]),  # the shortcut c0 is made before c1
        Node("r", "relu", ["add"], ["r"]),
        Node("c2", "conv", ["r"], ["c2"], {}, {"weight": w2, "bias": b2}),
        Node("sum", "eltwise", ["c2", "r"], ["sum"], {"operation": "sum"}),
        Node("r2", "relu", ["sum"], ["r2"], {"negative_slope": 0.1}),
        Node("c3", "conv", ["r2"], ["c3"], {}, {"weight": w2, "bias": b2}),
        Node("k", "constant", [], ["k"], {}, {"value": bias_t}),
        Node("badd", "add", ["c3", "k"], ["badd"]),  # a per-channel constant: folded into c3's bias
    ]
    net = Net(Graph(nodes, ["data"], {"data": (1, c, 6, 7)}))
    x = rng.normal(size=(1, c, 6, 7))
    y0 = conv_oracle(x, w0, b0, 0)
    y1 = (conv_oracle(y0, w1, b1, 1) - chan(mean)) / np.sqrt(chan(var) + 1e-3)
    r = np.maximum(y0 + y1, 0)
    s = conv_oracle(r, w2, b2, 0) + r
    r2 = np.where(s > 0, s, 0.1 * s)
    want = conv_oracle(r2, w2, b2, 0) + bias_t
    plan = net._plan(("badd",), True)
    assert [st.node.op for st in plan.steps] == ["conv", "conv", "conv", "conv"]
    fused = plan.steps[1].node
    assert fused.inputs == ("c0", "c0") and fused.attrs["residual"] and fused.attrs["activation"] == "relu"
    assert plan.steps[2].node.inputs == ("r", "r") and plan.steps[2].node.attrs["negative_slope"] == 0.1
    got = net.forward(x)["badd"]
    assert got.dtype == np.float32
    assert_close(got, want, "f32_vs_f64", "residual-fused float32")
    assert_close(net.forward(x, precision="float64")["badd"], want, 1e-12, "float64 unfused")
    mid = net.forward(x, outputs=["add", "badd"])  # a requested add output: fused up to it, exact
    assert_close(mid["add"], y0 + y1, "f32_vs_f64", "add requested")
    assert_close(mid["badd"], want, "f32_vs_f64", "badd")


def test_broadcasting_residual_runs_unfused_in_the_step(rng):
    """A shortcut that broadcasts the conv output to a larger shape: the fused step still gives
    the add's shape and values (the run function, not the planned epilogue)."""
    w, b = rng.normal(size=(3, 2, 1, 1)), rng.normal(size=3)
    nodes = [
        Node("s", "conv", ["data"], ["s"], {}, {"weight": rng.normal(size=(3, 2, 3, 3)), "bias": b}),
        Node("c", "conv", ["p"], ["c"], {}, {"weight": w, "bias": b}),
        Node("add", "add", ["s", "c"], ["add"]),
        Node("r", "relu", ["add"], ["r"]),
    ]
    nodes.insert(1, Node("p", "avg_pool", ["data"], ["p"], {"global_pooling": True}))
    net = Net(Graph(nodes, ["data"], {"data": (1, 2, 6, 5)}))
    x = rng.normal(size=(1, 2, 6, 5))
    want = np.maximum(conv_oracle(x, nodes[0].params["weight"], b, 0)
                      + conv_oracle(x.mean(axis=(2, 3), keepdims=True), w, b, 0), 0)
    plan = net._plan(("r",), True)
    assert [st.node.op for st in plan.steps] == ["conv", "avg_pool", "conv"]
    got = net.forward(x)["r"]
    assert got.shape == (1, 3, 4, 3)
    assert_close(got, want, "f32_vs_f64", "broadcast residual")


def test_activation_after_an_add_fuses_into_the_add(rng):
    """ENet's ``prelu(x + y)`` (Torch CAddTable -> eltwise SUM, then PReLU) and ONNX Add + ReLU of
    tensors no conv absorbed: the activation runs as the add's epilogue (one float32 step); not
    past a requested tensor, a second reader, coefficients or a MAX; a broadcasting ONNX add still
    fuses (its run function). Oracle: the formulas in float64; the float64 path runs unfused."""
    c = 5
    slope = rng.uniform(-0.5, 0.5, c)
    bias_t = rng.normal(size=(1, c, 1, 1))
    nodes = [
        Node("p", "max_pool", ["data"], ["p"], {"kernel": 1}),
        Node("e1", "eltwise", ["data", "p"], ["e1"], {"operation": "sum"}),
        Node("pr", "prelu", ["e1"], ["pr"], {}, {"slope": slope}),
        Node("a1", "add", ["pr", "data"], ["a1"]),
        Node("lk", "relu", ["a1"], ["lk"], {"negative_slope": 0.2}),
        Node("e2", "eltwise", ["lk", "pr"], ["e2"], {"operation": "sum"}),
        Node("r6", "clip", ["e2"], ["r6"], {"min": 0.0, "max": 6.0}),
        Node("k", "constant", [], ["k"], {}, {"value": bias_t}),
        Node("a2", "add", ["r6", "k"], ["a2"]),  # broadcasts
        Node("r", "relu", ["a2"], ["r"]),
        Node("e3", "eltwise", ["r", "lk"], ["e3"], {"operation": "sum", "coeffs": [1.0, 2.0]}),
        Node("r3", "relu", ["e3"], ["r3"]),  # after a sum with coefficients: separate
        Node("e4", "eltwise", ["r3", "r"], ["e4"], {"operation": "max"}),
        Node("p4", "prelu", ["e4"], ["p4"], {}, {"slope": slope[:1]}),  # after a MAX: separate
        Node("e5", "eltwise", ["p4", "r"], ["e5"], {"operation": "sum"}),
        Node("p5", "prelu", ["e5"], ["p5"], {}, {"slope": slope[:1]}),  # one shared slope
    ]
    net = Net(Graph(nodes, ["data"], {"data": (2, c, 6, 7)}))
    x = rng.normal(size=(2, c, 6, 7)) * 3
    e1 = x + x
    pr = np.where(e1 > 0, e1, chan(slope) * e1)
    a1 = pr + x
    lk = np.where(a1 > 0, a1, 0.2 * a1)
    r6 = np.clip(lk + pr, 0, 6)
    r = np.maximum(r6 + bias_t, 0)
    r3 = np.maximum(r + 2 * lk, 0)
    e4 = np.maximum(r3, r)
    p4 = np.where(e4 > 0, e4, slope[0] * e4)
    e5 = p4 + r
    want = np.where(e5 > 0, e5, slope[0] * e5)
    plan = net._plan(("p5",), True)
    ops = [(st.node.name, st.node.attrs.get("activation")) for st in plan.steps]
    assert ops == [("p", None), ("e1", "prelu"), ("a1", "relu"), ("e2", "relu6"), ("k", None), ("a2", "relu"),
                   ("e3", None), ("r3", None), ("e4", None), ("p4", None), ("e5", "prelu")]
    assert plan.steps[2].node.attrs["negative_slope"] == 0.2
    got = net.forward(x)["p5"]
    assert got.dtype == np.float32
    assert_close(got, want, "f32_vs_f64", "add-activation fused float32")
    assert_close(net.forward(x, precision="float64")["p5"], want, 1e-12, "float64 unfused")
    assert [st.node.op for st in net._plan(("p5",), False).steps].count("prelu") == 3
    mid = net.forward(x, outputs=["e1", "a1", "p5"])  # requested add outputs: not fused past them
    assert_close(mid["e1"], e1, "f32_vs_f64", "e1 requested")
    assert_close(mid["a1"], a1, "f32_vs_f64", "a1 requested")
    assert_close(mid["p5"], want, "f32_vs_f64", "p5")
    assert net._plan(("e1", "a1", "p5"), True).steps[1].node.attrs.get("activation") is None


def test_deconv_bn_relu_and_instance_norm_bn_relu_fold(rng):
    g, ci, cog = 2, 4, 3
    w = rng.normal(size=(ci, cog, 3, 3)) * 0.3
    co = g * cog
    mean, var, gamma, beta = rng.normal(size=co), rng.uniform(0.5, 2, co), rng.normal(size=co), rng.normal(size=co)
    m2, v2 = rng.normal(size=co) * 0.1, rng.uniform(0.5, 2, co)
    nodes = [
        Node("up", "deconv", ["data"], ["up"], {"stride": (2, 2), "pad": (1, 1, 1, 1), "groups": g},
             {"weight": w}),
        Node("bn", "batch_norm", ["up"], ["bn"], {"eps": 1e-5}, {"mean": mean, "var": var, "weight": gamma,
                                                               "bias": beta}),
        Node("r1", "relu", ["bn"], ["r1"], {"negative_slope": 0.1}),
        Node("inorm", "instance_norm", ["r1"], ["inorm"], {"eps": 1e-5}),
        Node("bn2", "batch_norm", ["inorm"], ["bn2"], {"eps": 0.0}, {"mean": m2, "var": v2}),
        Node("r2", "relu", ["bn2"], ["r2"], {}),
    ]
    net = Net(Graph(nodes, ["data"], {"data": (1, ci, 5, 4)}))
    x = rng.normal(size=(1, ci, 5, 4))
    # transposed conv by explicit scatter
    ho, wo = (5 - 1) * 2 - 2 + 3, (4 - 1) * 2 - 2 + 3
    full = np.zeros((1, co, ho + 2, wo + 2))
    for c in range(ci):
        gi = c // (ci // g)
        for i in range(5):
            for j in range(4):
                full[0, gi * cog:(gi + 1) * cog, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += x[0, c, i, j] * w[c]
    y = full[:, :, 1:1 + ho, 1:1 + wo]
    y = (y - chan(mean)) / np.sqrt(chan(var) + 1e-5) * chan(gamma) + chan(beta)
    y = np.where(y > 0, y, 0.1 * y)
    mu = y.mean(axis=(2, 3), keepdims=True)
    y = (y - mu) / np.sqrt(((y - mu) ** 2).mean(axis=(2, 3), keepdims=True) + 1e-5)
    y = np.maximum((y - chan(m2)) / np.sqrt(chan(v2)), 0)
    assert_close(net.forward(x)["r2"], y, "f32_vs_f64", "fused float32")
    assert_close(net.forward(x, precision="float64")["r2"], y, 1e-12, "float64")
    plan = net._plan(("r2",), True)
    assert [s.node.op for s in plan.steps] == ["deconv", "instance_norm"]
    assert plan.steps[0].node.attrs["activation"] == "relu"
    assert plan.steps[1].node.attrs["activation"] == "relu"


def _view_net(rng):
    """conv -> reshape (a view) -> identity -> sigmoid, plus a second conv of the same shape
    whose buffer could be (wrongly) the first one's while the view is alive."""
    w1, w2 = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(4, 3, 3, 3))
    z = np.zeros(4)
    nodes = [
        Node("c1", "conv", ["data"], ["c1"], {"pad": (1, 1, 1, 1)}, {"weight": w1, "bias": z}),
        Node("v", "reshape", ["c1"], ["v"], {"shape": (0, -1)}),
        Node("id", "identity", ["v"], ["id"]),
        Node("c2", "conv", ["data"], ["c2"], {"pad": (1, 1, 1, 1)}, {"weight": w2, "bias": z}),
        Node("r", "relu", ["c2"], ["r"]),
        Node("s", "sigmoid", ["id"], ["s"]),
        Node("f2", "flatten", ["r"], ["f2"]),
        Node("sum", "eltwise", ["s", "f2"], ["sum"], {"operation": "sum"}),
    ]
    return Net(Graph(nodes, ["data"], {"data": (1, 3, 6, 5)})), w1, w2


def test_buffers_reused_safely_and_never_returned(rng):
    net, w1, w2 = _view_net(rng)
    xs = [rng.normal(size=(1, 3, 6, 5)) for _ in range(3)]

    def want(x):
        a = conv_oracle(x, w1, np.zeros(4), 1).reshape(1, -1)
        b = np.maximum(conv_oracle(x, w2, np.zeros(4), 1), 0).reshape(1, -1)
        return 1 / (1 + np.exp(-a)) + b

    outs = [net.forward(x)["sum"] for x in xs]
    for x, o in zip(xs, outs):  # earlier results are not overwritten by later runs
        assert_close(o, want(x), "f32_vs_f64", "sum")
    prog = next(iter(net._programs.values()))
    assert prog.n_pooled >= 1
    # identity is an alias: no step; trace still lists every layer
    assert "id" not in prog.layers
    tr = net.trace(xs[0], precision="float32")
    assert list(tr) == ["c1", "v", "id", "c2", "r", "s", "f2", "sum"]
    assert tr["id"] is tr["v"]
    # requested intermediates are fresh arrays too
    r1 = net.forward(xs[0], outputs=["c2", "sum"])
    net.forward(xs[1], outputs=["c2", "sum"])
    assert_close(r1["c2"], conv_oracle(xs[0], w2, np.zeros(4), 1), "f32_vs_f64", "c2 kept")
    # the unpooled copy (a step-by-step consumer's) writes every step into a new array: with
    # nothing dropped, the tensors of two runs share no memory (the pooled program's do)
    free = prog.unpooled()
    assert all(c[4] < 0 for c in free.code) and any(c[4] >= 0 for c in prog.code)

    def run_keeping_all(p, x):
        regs = p.start(net._feeds(x, _F32))
        for _ in p.steps(regs, [()] * len(p.code)):
            pass
        return regs

    def shared(p):
        r0, r1 = run_keeping_all(p, xs[0]), run_keeping_all(p, xs[1])
        assert_close(r1[p.results["sum"]], want(xs[1]), "f32_vs_f64", "sum")
        return any(a is not None and b is not None and np.shares_memory(a, b) for a, b in zip(r0, r1))

    assert shared(prog) and not shared(free)


def test_program_cache_per_shape_and_bounded(rng):
    net, w1, _ = _view_net(rng)
    for h in range(5, 16):
        x = rng.normal(size=(1, 3, h, 5))
        y = net.forward(x, outputs=["c1"])["c1"]
        assert_close(y, conv_oracle(x, w1, np.zeros(4), 1), "f32_vs_f64", f"h={h}")
    assert len(net._programs) <= 8


def test_profile_lists_every_step(rng):
    net, _, _ = _view_net(rng)
    x = rng.normal(size=(1, 3, 6, 5))
    prof = net.profile(x, repeat=2)
    # r is fused into c2; c1 and c2 (same input and geometry) run as one conv, then a slice
    assert [p[0] for p in prof] == ["c1+c2", "c1+c2:split", "v", "s", "f2", "sum"]
    assert all(t >= 0 for _, _, t in prof)
    assert [p[1] for p in prof][:3] == ["conv", "slice", "reshape"]


def test_sibling_convs_merge_with_their_own_activations(rng):
    """Three convs of one input: two 3x3 (no activation / PReLU) merge, the 1x1 does not; a
    requested sibling output is still exact."""
    w1, w2, w3 = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=(4, 2, 3, 3)), rng.normal(size=(2, 2, 1, 1))
    b1, b2, b3 = rng.normal(size=3), rng.normal(size=4), rng.normal(size=2)
    slope = rng.uniform(0.1, 0.3, 4)
    nodes = [
        Node("a", "conv", ["data"], ["a"], {"pad": (1, 1, 1, 1)}, {"weight": w1, "bias": b1}),
        Node("b", "conv", ["data"], ["b"], {"pad": (1, 1, 1, 1)}, {"weight": w2, "bias": b2}),
        Node("bp", "prelu", ["b"], ["bp"], {}, {"slope": slope}),
        Node("c", "conv", ["data"], ["c"], {}, {"weight": w3, "bias": b3}),
        Node("cat", "concat", ["a", "bp", "c"], ["cat"], {"axis": 1}),
    ]
    net = Net(Graph(nodes, ["data"], {"data": (2, 2, 5, 6)}))
    x = rng.normal(size=(2, 2, 5, 6))
    yb = conv_oracle(x, w2, b2, 1)
    want = np.concatenate([conv_oracle(x, w1, b1, 1), np.where(yb > 0, yb, yb * chan(slope)),
                           conv_oracle(x, w3, b3, 0)], axis=1)
    assert_close(net.forward(x)["cat"], want, "f32_vs_f64", "merged siblings")
    plan = net._plan(("cat",), True)
    assert [s.node.op for s in plan.steps] == ["conv", "slice", "conv", "concat"]
    got = net.forward(x, outputs=["a", "cat"])
    assert_close(got["a"], conv_oracle(x, w1, b1, 1), "f32_vs_f64", "a requested")
    assert_close(got["cat"], want, "f32_vs_f64", "cat")


def test_set_num_threads():
    before = get_num_threads()
    try:
        assert set_num_threads(1) == 1
        got = get_num_threads()
        assert got["numba"] == 1 and got.get("blas", 1) == 1
        with pytest.raises(ValueError, match=">= 1"):
            set_num_threads(0)
    finally:
        set_num_threads(before["numba"])


def test_concurrent_forward_passes(rng):
    """Forward passes from several threads are serialised: no crash, every result right."""
    net, w1, w2 = _view_net(rng)
    xs = [rng.normal(size=(1, 3, 6, 5)) for _ in range(4)]
    res: dict[int, np.ndarray] = {}

    def work(i):
        for _ in range(5):
            res[i] = net.forward(xs[i], outputs=["c1"])["c1"]

    errors = run_threads(work, 4)
    assert not errors
    for i, x in enumerate(xs):
        assert_close(res[i], conv_oracle(x, w1, np.zeros(4), 1), "f32_vs_f64", f"thread {i}")


def test_nan_and_errors_still_name_the_layer(rng):
    net, _, _ = _view_net(rng)
    x = rng.normal(size=(1, 3, 6, 5))
    x[0, 0, 2, 2] = np.nan
    y = net.forward(x)["sum"]
    assert np.isnan(y).any() and np.isfinite(y).any()
    with pytest.raises(Exception, match="channels"):
        net.forward(np.zeros((1, 2, 6, 5)))


def test_only_the_needed_layers_run_and_are_validated(rng):
    """forward(outputs=[early layer]) neither runs nor shape-checks the layers after it: an
    input too small for a later 7x7 pooling still gives the early output."""
    w = rng.normal(size=(3, 2, 3, 3))
    nodes = [
        Node("c", "conv", ["data"], ["c"], {"pad": (1, 1, 1, 1)}, {"weight": w, "bias": np.zeros(3)}),
        Node("p", "max_pool", ["c"], ["p"], {"kernel": (7, 7), "stride": (1, 1)}),
    ]
    net = Net(Graph(nodes, ["data"], {"data": (1, 2, 8, 8)}))
    x = rng.normal(size=(1, 2, 4, 5))
    assert_close(net.forward(x, outputs=["c"])["c"], conv_oracle(x, w, np.zeros(3), 1), "f32_vs_f64", "c")
    assert [s.node.name for s in net._plan(("c",), True).steps] == ["c"]
    with pytest.raises(Exception, match="'p'"):
        net.forward(x)


def _fire_net(rng, n):
    """A fire module and more: convs (ReLU-fused, plain, residual-fused) and a max pool feeding a
    channel concat, that concat and a conv also read elsewhere feeding a second concat (axis -3)."""
    w = {k: rng.normal(size=s) * 0.5 for k, s in (("sq", (3, 2, 1, 1)), ("e1", (4, 3, 1, 1)), ("e3", (5, 3, 3, 3)),
                                                   ("rc", (3, 3, 3, 3)), ("e5", (2, 3, 1, 1)), ("fin", (3, 17, 1, 1)))}
    b = {k: rng.normal(size=v.shape[0]) for k, v in w.items()}

    def conv(name, src, pad=0):
        return Node(name, "conv", [src], [name], {"pad": (pad,) * 4}, {"weight": w[name], "bias": b[name]})

    nodes = [
        conv("sq", "data"), Node("sqr", "relu", ["sq"], ["sqr"]),
        conv("e1", "sqr"), Node("e1r", "relu", ["e1"], ["e1r"]),
        conv("e3", "sqr", 1),
        Node("p", "max_pool", ["sqr"], ["p"], {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1, 1, 1)}),
        conv("rc", "sqr", 1), Node("add", "add", ["rc", "sqr"], ["add"]), Node("ar", "relu", ["add"], ["ar"]),
        Node("cat", "concat", ["e1r", "e3", "p", "ar"], ["cat"], {"axis": 1}),
        conv("e5", "p"),
        Node("cat2", "concat", ["cat", "e5"], ["cat2"], {"axis": -3}),
        conv("fin", "cat2"),
        Node("e5s", "sigmoid", ["e5"], ["e5s"]),
    ]
    net = Net(Graph(nodes, ["data"], {"data": (n, 2, 6, 5)}))

    def want(x):
        sq = np.maximum(conv_oracle(x, w["sq"], b["sq"], 0), 0)
        pp = np.pad(sq, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        pool = np.max([pp[:, :, i:i + 6, j:j + 5] for i in range(3) for j in range(3)], axis=0)
        e5 = conv_oracle(pool, w["e5"], b["e5"], 0)
        cat = np.concatenate([np.maximum(conv_oracle(sq, w["e1"], b["e1"], 0), 0), conv_oracle(sq, w["e3"], b["e3"], 1),
                              pool, np.maximum(conv_oracle(sq, w["rc"], b["rc"], 1) + sq, 0), e5], axis=1)
        return {"fin": conv_oracle(cat, w["fin"], b["fin"], 0), "e5s": 1 / (1 + np.exp(-e5)), "e3": cat[:, 4:9]}

    return net, want


@pytest.mark.parametrize("n", [1, 2])
def test_convs_write_into_their_concat(rng, n, monkeypatch):
    """Convolutions read only by a channel concat write straight into its buffer (a batch of one
    image; with N > 1 every concat copies), the concat copies only its other inputs (a pool, an
    earlier concat, a conv read elsewhere); a requested conv output, the unpooled program and
    later runs stay right. Oracle: float64 formulas; the copying program (CONCAT_INTO off) gives
    the same numbers."""
    import refnet.runtime.program as program

    net, want = _fire_net(rng, n)
    xs = [rng.normal(size=(n, 2, 6, 5)) for _ in range(2)]
    outs = [net.forward(x) for x in xs]
    for x, o in zip(xs, outs):  # results of an earlier run are not overwritten by a later one
        for k in ("fin", "e5s"):
            assert_close(o[k], want(x)[k], "f32_vs_f64", f"{k} n={n}")
    prog = next(iter(net._programs.values()))
    code = dict(zip(prog.layers, prog.code))
    if n > 1:
        assert code["cat"][4] == -1 and code["cat2"][4] == -1  # channel spans not contiguous: plain concats
        return
    cat_buf = prog.buffers[code["cat"][4]]
    for layer in ("e1", "e3", "rc"):  # fused with their activation / residual, writing into cat
        assert np.shares_memory(prog.buffers[code[layer][4]], cat_buf), layer
    assert not np.shares_memory(prog.buffers[code["e5"][4]], cat_buf)
    # no input written in place (e5 has two readers): the concat copies them all into its own buffer
    assert code["cat2"][4] >= 0 and not np.shares_memory(prog.buffers[code["cat2"][4]], prog.buffers[code["e5"][4]])
    # the step-by-step consumer's unpooled program concatenates as before
    free = prog.unpooled()
    regs = free.run(net._feeds(xs[0], _F32))
    assert_close(regs[free.results["fin"]], want(xs[0])["fin"], "f32_vs_f64", "unpooled")
    # a requested producer keeps its own array; the rest still writes into the concat
    got = net.forward(xs[0], outputs=["e3", "fin"])
    for k in ("e3", "fin"):
        assert_close(got[k], want(xs[0])[k], "f32_vs_f64", f"{k} requested")
    copying, _ = _fire_net(np.random.default_rng(0), n)  # the flag is read when the program is compiled
    fused, _ = _fire_net(np.random.default_rng(0), n)
    monkeypatch.setattr(program, "CONCAT_INTO", False)
    a = copying.forward(xs[1])["fin"]
    monkeypatch.setattr(program, "CONCAT_INTO", True)
    b = fused.forward(xs[1])["fin"]
    assert_close(b, a, 1e-6, "into vs copying")
    assert np.array_equal(a, b)
    copy_prog = next(iter(copying._programs.values()))
    assert dict(zip(copy_prog.layers, copy_prog.code))["cat"][4] == -1  # a plain concat


def test_arena_never_overlaps_two_live_buffers(rng):
    """The arena (refnet.runtime.program._arena): buffers whose lifetimes (first and last step,
    inclusive) overlap never share a byte, are C-contiguous, aligned and of their shapes; dead
    memory is reused (the arena is smaller than the sum of the buffers)."""
    from refnet.runtime.program import _ALIGN, _arena

    for _ in range(20):
        blocks = []
        for _ in range(30):
            start = int(rng.integers(0, 40))
            blocks.append((tuple(int(d) for d in rng.integers(1, 9, size=int(rng.integers(1, 5)))), start,
                           start + int(rng.integers(0, 6))))
        blocks.sort(key=lambda b: b[1])
        arrays = _arena(blocks, np.dtype(np.float32))
        for a, (shape, _, _) in zip(arrays, blocks):
            assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and a.ctypes.data % _ALIGN == 0
        for i, (_, s0, e0) in enumerate(blocks):
            for j, (_, s1, e1) in enumerate(blocks[:i]):
                assert not (s0 <= e1 and s1 <= e0 and np.shares_memory(arrays[i], arrays[j])), (i, j)
        used = {a.ctypes.data for a in arrays}
        assert len(used) < len(arrays)


def test_planned_slice_reshape_flatten_are_views_with_the_kernels_values(rng):
    """The float32 planners of slice (points / equal parts), reshape (0 and -1 entries) and
    flatten bind the output shapes once and return views; values = NumPy's own slicing and
    reshaping of the input, and = the float64 path."""
    nodes = [
        Node("s", "slice", ["data"], ["s", "s:1", "s:2"], {"axis": 1, "points": (1, 4)}),
        Node("e", "slice", ["s:2"], ["e", "e:1"], {"axis": -1}),
        Node("r", "reshape", ["s:1"], ["r"], {"shape": (0, -1, 2)}),
        Node("f", "flatten", ["e:1"], ["f"], {"axis": 2}),
    ]
    net = Net(Graph(nodes, ["data"], {"data": (2, 6, 3, 4)}))
    x = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)
    names = ["s", "e", "r", "f"]
    got = net.forward(x, outputs=names)
    want = {"s": x[:, :1], "e": x[:, 4:, :, :2], "r": x[:, 1:4].reshape(2, -1, 2),
            "f": x[:, 4:, :, 2:].reshape(2, 2, 6)}
    ref = net.forward(x, outputs=names, precision="float64")
    for k in names:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        np.testing.assert_array_equal(ref[k], want[k].astype(np.float64), err_msg=k)
    prog = next(p for p in net._programs.values() if p.code)
    feeds = net._feeds(x, _F32)
    regs = prog.run(feeds)
    assert all(np.shares_memory(regs[prog.results[k]], feeds["data"]) for k in ("s", "e", "r"))


def _ssd_heads_net(rng):
    """Two SSD heads as Caffe writes them: sibling loc/conf convs, each permuted to NHWC,
    flattened and concatenated; PriorBox per feature map, the priors concatenated; sigmoids
    reading the concats (so that those are not requested outputs)."""
    w = {k: rng.normal(size=s) * 0.5 for k, s in (("f1", (4, 2, 3, 3)), ("l1", (8, 4, 3, 3)), ("c1", (4, 4, 3, 3)),
                                                   ("l2", (8, 4, 3, 3)), ("c2", (4, 4, 3, 3)))}
    b = {k: rng.normal(size=v.shape[0]) for k, v in w.items()}
    pb = {"min_sizes": (3.0,), "max_sizes": (5.0,), "aspect_ratios": (2.0,), "flip": True, "clip": False,
          "variance": (0.1, 0.1, 0.2, 0.2)}

    def conv(name, src):
        return Node(name, "conv", [src], [name], {"pad": (1,) * 4}, {"weight": w[name], "bias": b[name]})

    nodes = [conv("f1", "data"), Node("f2", "max_pool", ["f1"], ["f2"], {"kernel": (2, 2), "stride": (2, 2)})]
    for i in (1, 2):
        for k in "lc":
            nodes += [conv(f"{k}{i}", f"f{i}"),
                      Node(f"{k}{i}p", "permute", [f"{k}{i}"], [f"{k}{i}p"], {"order": (0, 2, 3, 1)}),
                      Node(f"{k}{i}f", "flatten", [f"{k}{i}p"], [f"{k}{i}f"], {"axis": 1})]
        nodes.append(Node(f"pb{i}", "prior_box", [f"f{i}", "data"], [f"pb{i}"], pb))
    nodes += [Node("loc", "concat", ["l1f", "l2f"], ["loc"], {"axis": 1}),
              Node("conf", "concat", ["c1f", "c2f"], ["conf"], {"axis": 1}),
              Node("pri", "concat", ["pb1", "pb2"], ["pri"], {"axis": 2}),
              *(Node(f"{k}s", "sigmoid", [k], [f"{k}s"]) for k in ("loc", "conf", "pri"))]
    net = Net(Graph(nodes, ["data"], {"data": (1, 2, 8, 6)}))

    def want(x):
        from refnet.kernels import prior_box_reference

        f1 = conv_oracle(x, w["f1"], b["f1"], 1)
        f2 = f1.reshape(1, 4, 4, 2, 3, 2).max(axis=(3, 5))
        heads = {k: np.concatenate([conv_oracle(f, w[f"{k}{i}"], b[f"{k}{i}"], 1).transpose(0, 2, 3, 1).reshape(1, -1)
                                    for i, f in ((1, f1), (2, f2))], axis=1) for k in "lc"}
        pri = np.concatenate([prior_box_reference(f.shape[2:], (8, 6), **pb) for f in (f1, f2)], axis=2)
        sig = {f"{k}s": 1 / (1 + np.exp(-v)) for k, v in (("loc", heads["l"]), ("conf", heads["c"]), ("pri", pri))}
        return {"loc": heads["l"], "pri": pri, **sig}

    return net, want


def test_ssd_priors_fold_and_heads_write_into_their_concat(rng, monkeypatch):
    """PriorBox and the concat of the priors are computed when the program is compiled (no step
    left, one constant); the permuted heads write into their spans of the loc / conf concats
    (through the flatten). Oracle: float64 formulas (the reference PriorBox kernel); the
    program without folding and concat-into gives the same numbers bit for bit; later runs,
    requested priors and the unpooled program stay right."""
    import refnet.runtime.program as program

    net, want = _ssd_heads_net(rng)
    xs = [rng.normal(size=(1, 2, 8, 6)) for _ in range(3)]
    outs = [net.forward(x, outputs=["locs", "confs", "pris"]) for x in xs[:2]]
    for x, o in zip(xs, outs):  # an earlier run's results are not overwritten by a later one
        for k in ("locs", "confs", "pris"):
            assert_close(o[k], want(x)[k], "f32_vs_f64", k)
    prog = next(iter(net._programs.values()))
    assert "prior_box" not in prog.ops and "pri" not in prog.layers and len(prog.consts) == 1
    code = dict(zip(prog.layers, prog.code))
    for cat, heads in (("loc", ("l1p", "l2p")), ("conf", ("c1p", "c2p"))):
        for h in heads:
            assert np.shares_memory(prog.buffers[code[h][4]], prog.buffers[code[cat][4]]), h
    free = prog.unpooled()
    regs = free.run(net._feeds(xs[2], _F32))
    assert_close(regs[free.results["locs"]], want(xs[2])["locs"], "f32_vs_f64", "unpooled")
    # requested priors: computed by their steps, a fresh array per run
    got = net.forward(xs[2], outputs=["pri", "loc"])
    assert_close(got["pri"], want(xs[2])["pri"], "f32_vs_f64", "pri requested")
    got["pri"][...] = 7
    assert_close(net.forward(xs[2], outputs=["pri"])["pri"], want(xs[2])["pri"], "f32_vs_f64", "pri again")
    plain, _ = _ssd_heads_net(np.random.default_rng(0))  # the flags are read when the program is compiled
    folded, _ = _ssd_heads_net(np.random.default_rng(0))
    monkeypatch.setattr(program, "FOLD", False)
    monkeypatch.setattr(program, "CONCAT_INTO", False)
    a = plain.forward(xs[1], outputs=["locs", "confs", "pris"])
    plain_prog = next(iter(plain._programs.values()))
    assert "prior_box" in plain_prog.ops and not plain_prog.consts
    monkeypatch.setattr(program, "FOLD", True)
    monkeypatch.setattr(program, "CONCAT_INTO", True)
    b = folded.forward(xs[1], outputs=["locs", "confs", "pris"])
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _const(name, v):
    return Node(name, "constant", [], [name], {}, {"value": np.asarray(v, np.float32)})


def _hswish_graph(rng, c=5, scale_shape=(1, 5, 1, 1), k_div=6.0):
    """ONNX exporters' PP-LCNet block: conv -> Mul(w0) -> Add(w1) -> Add(3) -> Clip(0, 6) ->
    Mul(x, .) -> Div(6) -> Mul(a) -> Add(b), constants as `constant` nodes (the ONNX reader's)."""
    w, b = rng.normal(size=(c, 3, 3, 3)) * 0.5, rng.normal(size=c)
    w0, w1 = np.float32(1.3), rng.normal(size=(1, c, 1, 1)).astype(np.float32)
    a = rng.normal(size=scale_shape).astype(np.float32)
    sh = np.float32(-0.2)
    nodes = [
        Node("conv", "conv", ["data"], ["conv"], {"pad": (1, 1, 1, 1)}, {"weight": w, "bias": b}),
        _const("w0", w0), Node("m0", "mul", ["w0", "conv"], ["m0"]),
        _const("w1", w1), Node("a0", "add", ["m0", "w1"], ["a0"]),
        _const("three", 3.0), Node("a3", "add", ["a0", "three"], ["a3"]),
        Node("clip", "clip_range", ["a3"], ["clip"], {"min": 0.0, "max": 6.0}),
        Node("mx", "mul", ["a0", "clip"], ["mx"]),
        _const("six", k_div), Node("d6", "div", ["mx", "six"], ["d6"]),
        _const("sa", a), Node("ms", "mul", ["sa", "d6"], ["ms"]),
        _const("sb", sh), Node("out", "add", ["ms", "sb"], ["out"]),
    ]
    x = rng.normal(size=(2, 3, 6, 7))

    def oracle(x):
        v = w0 * conv_oracle(x, w, b, 1) + np.asarray(w1, np.float64)
        h = v * np.clip(v + 3.0, 0.0, 6.0) / k_div
        return h * np.asarray(a, np.float64) + float(sh)

    return nodes, x, oracle


def test_exporters_affine_and_hard_swish_fuse_into_two_steps(rng):
    """PP-OCR's blocks as paddle2onnx writes them (11 steps and 6 constants per conv): the Mul /
    Add by per-channel constants fold into the conv's weights, and Add(3), Clip, Mul, Div, Mul,
    Add run as one hard_swish_affine step -- float32 within tolerance of the float64 formula,
    the hard-swish part bit for bit what the unfused float32 steps compute (net.trace)."""
    nodes, x, oracle = _hswish_graph(rng)
    net = Net(Graph(nodes, ["data"], {"data": x.shape}))
    plan = net._plan(("out",), True)
    assert [s.node.op for s in plan.steps] == ["conv", "hard_swish_affine"]
    got = net.forward(x)["out"]
    assert_close(got, oracle(x), "f32_vs_f64", "fused float32")
    assert_close(net.forward(x, precision="float64")["out"], oracle(x), 1e-12, "float64 unfused")
    tr = net.trace(x, precision="float32")  # unfused float32: the same steps one by one
    from refnet import kernels as K

    h = K.hard_swish_affine(tr["a0"], np.asarray(nodes[11].params["value"]), np.float32(-0.2))
    np.testing.assert_array_equal(h, tr["out"])
    # an intermediate asked for stops the fusion there, with the right values
    mid = net.forward(x, outputs=["a0", "clip", "out"])
    assert_close(mid["clip"], np.clip(mid["a0"].astype(np.float64) + 3, 0, 6), 1e-6, "clip")
    assert_close(mid["out"], oracle(x), "f32_vs_f64", "partial")


@pytest.mark.parametrize("case", ["vector_along_w", "const_divided", "clip_read_twice", "div_not_const",
                                  "other_mul_operand"])
def test_what_does_not_fold_or_fuse_stays_exact(rng, case):
    """A (C,) constant broadcasts along W (ONNX), not per channel: not folded; v / conv is not
    affine; a hard-swish whose intermediate is read twice, divided by a tensor, or multiplied
    by another tensor than its input does not fuse. Each still gives the formula's values."""
    nodes, x, _ = _hswish_graph(rng)
    net_nodes = list(nodes)
    if case == "vector_along_w":  # w1 of shape (7,): broadcast along W
        net_nodes[3] = _const("w1", rng.normal(size=7))
    elif case == "const_divided":  # w0 / conv
        net_nodes[2] = Node("m0", "div", ["w0", "conv"], ["m0"])
    elif case == "clip_read_twice":
        net_nodes.append(Node("extra", "relu", ["clip"], ["extra"]))
    elif case == "div_not_const":
        net_nodes[10] = Node("d6", "div", ["mx", "a3"], ["d6"])
    else:
        net_nodes[8] = Node("mx", "mul", ["a3", "clip"], ["mx"])
    net = Net(Graph(net_nodes, ["data"], {"data": x.shape}))
    ops = [s.node.op for s in net._plan(("out",), True).steps]
    if case in ("vector_along_w", "const_divided"):  # the Mul(w0) / the Add(w1) stays a step; the rest fuses
        assert ops[:3] == (["conv", "constant", "add"] if case == "vector_along_w" else ["conv", "constant", "div"])
        assert "hard_swish_affine" in ops
    else:
        assert "hard_swish_affine" not in ops and "clip_range" in ops
    v = net.trace(x, precision="float64")["a0"]  # the formula on the float64 reference's input
    h = v * np.clip(v + 3.0, 0.0, 6.0)
    h = h / (6.0 if case != "div_not_const" else v + 3.0)
    if case == "other_mul_operand":
        h = (v + 3.0) * np.clip(v + 3.0, 0.0, 6.0) / 6.0
    want = h * np.asarray(nodes[11].params["value"], np.float64) - np.float64(np.float32(0.2))
    got, ref = net.forward(x)["out"], net.forward(x, precision="float64")["out"]
    assert_close(ref, want, 1e-12, case)
    assert_close(got, want, "f32_vs_f64", case)
