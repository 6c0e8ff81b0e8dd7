"""net.backward: every backward rule through a one-layer net against central finite differences of
net.forward (float64; input and parameter gradients), float32 vs float64 backward, whole nets
(GoogLeNet and MobileNet-SSD from refnet.archs, the real ENet and LeNet) on random probes,
unsupported ops named, the Gradients structure."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import TOL, assert_close, require_model

import refnet
from refnet.errors import UnsupportedLayerError
from refnet.graph import Graph, Node
from refnet.net import Net
from refnet.runtime import vjp

EPS = 1e-6


def _net(op, attrs, params, in_shapes, n_out=1, extra=()):
    inputs = tuple(f"x{i}" for i in range(len(in_shapes)))
    outs = tuple("L" if i == 0 else f"L:{i}" for i in range(n_out))
    nodes = list(extra) + [Node("L", op, inputs if not extra else (extra[-1].outputs[0],) + inputs[1:], outs,
                                attrs, params)]
    return Net(Graph(nodes, inputs, dict(zip(inputs, in_shapes))))


def _scale(fd, grad, v):
    """The size the directional derivative is judged against: |fd|, or, when the random direction
    happens to cancel most of it, the uncancelled sum |g_i v_i| (central differences carry a
    round-off error proportional to that sum, not to the cancelled result)."""
    return max(abs(fd), float(np.sum(np.abs(grad * v))) * 1e-2, 1e-9)


def _fd_check(build, xs, params, outs, rng, eps=EPS, tol=TOL["grad_fd"], what=""):
    """net.backward's input and param gradients vs central differences along random directions."""
    net = build(params)
    fw = net.forward(dict(zip(net.input_names, xs)), outputs=outs, precision="float64")
    gs = {o: rng.standard_normal(fw[o].shape) for o in outs}
    names = [n.name for n in net.graph.nodes if n.params]
    g = net.backward(dict(zip(net.input_names, xs)), gs, wrt=names)

    def loss(xs_, params_):
        n = build(params_)
        f = n.forward(dict(zip(n.input_names, xs_)), outputs=outs, precision="float64")
        return sum(float(np.sum(gs[o] * f[o])) for o in outs)

    checked = 0
    for i, name in enumerate(net.input_names):
        if not np.issubdtype(xs[i].dtype, np.floating):
            continue
        v = rng.standard_normal(xs[i].shape)
        xp, xm = list(xs), list(xs)
        xp[i], xm[i] = xs[i] + eps * v, xs[i] - eps * v
        fd = (loss(xp, params) - loss(xm, params)) / (2 * eps)
        an = float(np.sum(g.inputs[name] * v))
        assert abs(fd - an) <= tol * _scale(fd, g.inputs[name], v), f"{what} d/d{name}: {an} vs FD {fd}"
        checked += 1
    for key, val in params.items():
        v = rng.standard_normal(val.shape)
        pp, pm = dict(params), dict(params)
        pp[key], pm[key] = val + eps * v, val - eps * v
        fd = (loss(xs, pp) - loss(xs, pm)) / (2 * eps)
        an = float(np.sum(g.params["L"][key] * v))
        assert abs(fd - an) <= tol * _scale(fd, g.params["L"][key], v), f"{what} d/d{key}: {an} vs FD {fd}"
        checked += 1
    # the float32 path (fast kernels) gives the same gradients to float32 accuracy
    g32 = net.backward({k: v.astype(np.float32) if v.dtype == np.float64 else v
                        for k, v in zip(net.input_names, xs)}, gs, wrt=names, precision="float32")
    for k in g.inputs:
        assert g32.inputs[k].dtype == np.float32
        assert_close(g32.inputs[k], g.inputs[k], 1e-4, f"{what} float32 input grad")
    return checked


R = np.random.default_rng(7)
X4 = (2, 4, 6, 5)


def _away(x, gap=1e-2):
    return np.where(np.abs(x) < gap, gap + np.abs(x), x)


CASES = [
    ("conv", dict(stride=(2, 1), pad=(1, 0, 2, 1), dilation=(1, 2), groups=2),
     dict(weight=R.standard_normal((6, 2, 3, 2)), bias=R.standard_normal(6)), [X4]),
    ("deconv", dict(stride=(2, 2), pad=(1, 0, 1, 0), groups=2, output_padding=(1, 0)),
     dict(weight=R.standard_normal((4, 3, 3, 2)), bias=R.standard_normal(6)), [X4]),
    ("linear", dict(axis=1), dict(weight=R.standard_normal((7, 120)), bias=R.standard_normal(7)), [X4]),
    ("max_pool", dict(kernel=(3, 3), stride=(2, 2), ceil_mode=True), {}, [X4]),
    ("avg_pool", dict(kernel=(3, 2), stride=(2, 2), pad=(1, 1, 1, 1), divisor="padded"), {}, [X4]),
    ("avg_pool", dict(global_pooling=True), {}, [X4]),
    ("max_pool", dict(global_pooling=True), {}, [X4]),
    ("relu", dict(negative_slope=0.1), {}, [X4]),
    ("clip", dict(min=0.0, max=0.5), {}, [X4]),
    ("prelu", {}, dict(slope=R.standard_normal(4)), [X4]),
    ("elu", dict(alpha=0.5), {}, [X4]),
    ("sigmoid", {}, {}, [X4]),
    ("tanh", {}, {}, [X4]),
    ("abs", {}, {}, [X4]),
    ("square", {}, {}, [X4]),
    ("power", dict(power=3.0, scale=0.5, shift=0.1), {}, [X4]),
    ("softmax", dict(axis=1), {}, [X4]),
    ("log_softmax", dict(axis=3), {}, [X4]),
    ("batch_norm", dict(eps=1e-3), dict(mean=R.standard_normal(4), var=R.uniform(0.5, 2, 4),
                                        weight=R.standard_normal(4), bias=R.standard_normal(4)), [X4]),
    ("scale", dict(axis=1), dict(weight=R.standard_normal((4, 6)), bias=R.standard_normal((4, 6))), [X4]),
    ("scale", dict(axis=1), {}, [X4, (4,)]),
    ("bias", dict(axis=1), dict(bias=R.standard_normal(4)), [X4]),
    ("lrn", dict(size=3, alpha=0.5, beta=0.75, k=1.5), {}, [X4]),
    ("lrn", dict(size=3, alpha=0.5, beta=0.75, region="within"), {}, [X4]),
    ("normalize", dict(across_spatial=False, channel_shared=False), dict(scale=R.standard_normal(4)), [X4]),
    ("concat", dict(axis=1), {}, [X4, (2, 3, 6, 5)]),
    ("eltwise", dict(operation="sum", coeffs=(0.5, -2.0)), {}, [X4, X4]),
    ("eltwise", dict(operation="prod"), {}, [X4, X4, X4]),
    ("eltwise", dict(operation="max"), {}, [X4, X4]),
    ("flatten", dict(axis=1), {}, [X4]),
    ("reshape", dict(shape=(0, -1, 5)), {}, [X4]),
    ("permute", dict(order=(0, 2, 3, 1)), {}, [X4]),
    ("resize", dict(mode="nearest", scale=(2, 2)), {}, [X4]),
    ("resize", dict(mode="bilinear", size=(9, 4), align_corners=True), {}, [X4]),
    ("pad", dict(pads=((0, 0), (0, 0), (1, 2), (2, 0)), mode="reflect"), {}, [X4]),
    ("shuffle_channel", dict(group=2), {}, [X4]),
    ("reorg", dict(stride=2), {}, [(1, 4, 4, 6)]),
    ("torch_pad2d", dict(pads=(1, -1, 2, 0)), {}, [X4]),
    ("depth_concat", dict(axis=1), {}, [X4, (2, 2, 4, 3)]),
    ("shortcut", dict(alpha=0.5, beta=2.0), {}, [X4, (2, 2, 6, 5)]),
    ("darknet_softmax", dict(groups=2, temperature=2.0), {}, [X4]),
    ("identity", {}, {}, [X4]),
    ("crop", dict(axis=2, offset=(1, 2)), {}, [X4, (2, 4, 3, 3)]),
    ("route_group", dict(groups=2, group_id=1), {}, [X4]),
    ("torch_narrow", dict(dimension=2, index=2, length=2), {}, [X4]),
    ("torch_shave", dict(size=1), {}, [X4]),
    ("torch_padding", dict(dim=2, pad=-2, n_input_dim=3, value=0.5), {}, [X4]),
]


@pytest.mark.parametrize("op,attrs,params,shapes", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_matches_finite_differences(op, attrs, params, shapes):
    rng = np.random.default_rng(zlib.crc32(op.encode()) % 1000)  # hash() varies per process
    xs = [_away(rng.standard_normal(s)) for s in shapes]
    n = _fd_check(lambda p: _net(op, attrs, p, shapes), xs, params, ["L"], rng, what=op)
    assert n == len([s for s in shapes]) + len(params)


def test_multi_output_rules():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(X4)
    # slice with a cotangent on one output only; split feeding two consumers is summed
    net = _net("slice", dict(axis=1, points=(1, 3)), {}, [X4], n_out=3)
    _fd_check(lambda p: net, [x], {}, ["L", "L:2"], rng, what="slice")
    net = _net("split", {}, {}, [X4], n_out=2)
    _fd_check(lambda p: net, [x], {}, ["L", "L:1"], rng, what="split")
    # max pool with indices feeding an unpooling (ENet)
    pool = Node("P", "max_pool", ("x0",), ("P", "P:1"), dict(kernel=(2, 2), stride=(2, 2)))
    unpool = Node("L", "max_unpool", ("P", "P:1", "x0"), ("L",), dict(kernel=(2, 2), stride=(2, 2)))
    net = Net(Graph([pool, unpool], ("x0",), {"x0": (2, 4, 6, 4)}))
    _fd_check(lambda p: net, [rng.standard_normal((2, 4, 6, 4))], {}, ["L"], rng, what="unpool")


def test_gradients_structure_and_errors():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 1, 1))
    net = _net("conv", {}, dict(weight=w), [X4])
    x = rng.standard_normal(X4)
    g = net.backward(x, {"L": np.ones((2, 3, 6, 5))}, wrt=["L"])
    assert set(g.inputs) == {"x0"} and g.input.shape == X4
    assert set(g.params) == {"L"} and set(g.params["L"]) == {"weight"}
    np.testing.assert_allclose(g.params["L"]["weight"][:, :, 0, 0], np.tile(x.sum(axis=(0, 2, 3)), (3, 1)))
    np.testing.assert_allclose(g.input, np.broadcast_to(w.sum(axis=0)[None, :, 0, 0, None, None], X4))
    assert_close(g.outputs["L"], net.forward(x, precision="float64")["L"], 1e-12)
    with pytest.raises(KeyError):
        net.backward(x, {"L": np.ones((2, 3, 6, 5))}, wrt=["nope"])
    with pytest.raises(refnet.errors.ShapeError):
        net.backward(x, {"L": np.ones((2, 3, 6, 4))})
    with pytest.raises(ValueError):
        net.backward(x, {"L": np.ones((2, 3, 6, 5))}, precision="float16")


def test_backward_is_refused_up_front_over_the_memory_budget():
    """A backward keeps every forward tensor and adds a cotangent (and VJP temporaries) per tensor:
    twice the forward's planned peak. With the budget at that peak the forward runs and the
    backward is refused before running (it was not checked: stylize --max-side 3000 ran out of
    memory mid-backward)."""
    from refnet.errors import BudgetError
    from refnet.runtime import budget

    rng = np.random.default_rng(0)
    net = _net("conv", {}, dict(weight=rng.standard_normal((3, 4, 1, 1))), [X4])
    x = rng.standard_normal(X4)
    peak = net._program(("L",), False, {"x0": x}, refnet.net._ctx("float64")).peak
    assert peak > 0
    budget.set_memory_budget(peak)
    try:
        net.forward(x, outputs=["L"], precision="float64")
        with pytest.raises(BudgetError) as e:
            net.backward(x, {"L": np.ones((2, 3, 6, 5))})
        assert e.value.need == 2 * peak and "forward and backward" in str(e.value)
    finally:
        budget.set_memory_budget()


def test_unsupported_op_is_named():
    net = _net("mvn", {}, {}, [X4])
    with pytest.raises(UnsupportedLayerError) as e:
        net.backward(np.zeros(X4), {"L": np.ones(X4)})
    assert "'L'" in str(e.value) and "mvn" in str(e.value) and "conv" in str(e.value)
    assert "mvn" not in vjp.supported_ops()


# ---- whole nets -------------------------------------------------------------------------------------------
NET_EPS = 1e-7  # smaller than the kernel tests' step: fewer ReLU/max-pool kinks inside the stencil


def _probe(net, x, outs, rng, probes=2, what=""):
    """Directional derivatives of sum(g * out) vs net.backward; returns the worst relative error."""
    fw = net.forward(x, outputs=outs, precision="float64")
    gs = {o: rng.standard_normal(fw[o].shape) for o in outs}
    g = net.backward(x, gs)

    def f(z):
        return sum(float(np.sum(gs[o] * v)) for o, v in net.forward(z, outputs=outs, precision="float64").items())

    worst = 0.0
    for _ in range(probes):
        v = rng.standard_normal(x.shape)
        fd = (f(x + NET_EPS * v) - f(x - NET_EPS * v)) / (2 * NET_EPS)
        an = float(np.sum(g.input * v))
        worst = max(worst, abs(fd - an) / abs(fd))
    assert worst <= TOL["grad_fd"], f"{what}: directional derivative off by {worst:.3g}"
    g32 = net.backward(x.astype(np.float32), gs, precision="float32")
    assert_close(g32.input, g.input, 1e-4, what + " float32 backward")
    return worst


def test_googlenet_input_gradient(tmp_path):
    from refnet.archs import googlenet

    net = refnet.load(*googlenet(width=0.25, seed=1).write(tmp_path / "gn"))
    rng = np.random.default_rng(0)
    _probe(net, rng.uniform(-1, 1, (1, 3, 224, 224)), ["prob"], rng, what="GoogLeNet")


def test_mobilenet_ssd_gradient_to_the_heads(tmp_path):
    from refnet.archs import mobilenet_ssd

    net = refnet.load(*mobilenet_ssd(input_hw=(160, 160), width=0.5, seed=1).write(tmp_path / "ssd"))
    heads = [n for n in net.layer_names if n.endswith(("_mbox_loc", "_mbox_conf"))]
    assert len(heads) == 12
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 3, 160, 160))
    _probe(net, x, heads, rng, what="MobileNet-SSD")
    with pytest.raises(UnsupportedLayerError, match="detection_out"):
        net.backward(x, {"detection_out": np.ones_like(net.forward(x, precision="float64")["detection_out"])})


@pytest.mark.models
def test_enet_input_gradient(models):
    net = refnet.load(require_model(models, "enet_cityscapes_torch/model-best.net"))
    rng = np.random.default_rng(2)
    _probe(net, rng.uniform(0, 1, (1, 3, 64, 128)), list(net.output_names), rng, what="ENet")


@pytest.mark.models
def test_lenet_param_gradients(models):
    d = models / "lenet_mnist_caffe"
    net = refnet.load(require_model(models, "lenet_mnist_caffe/lenet.prototxt"), d / "lenet_iter_10000.caffemodel")
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (2, 1, 28, 28))
    gs = {"prob": rng.standard_normal((2, 10))}
    g = net.backward(x, gs, wrt=["conv1", "ip2"])
    node = net.graph.node("conv1")

    def loss(w):
        params = dict(node.params, weight=w)
        nodes = [Node(n.name, n.op, n.inputs, n.outputs, n.attrs, params) if n is node else n for n in net.graph.nodes]
        n2 = Net(Graph(nodes, net.graph.inputs, net.graph.input_shapes))
        return float(np.sum(gs["prob"] * n2.forward(x, outputs=["prob"], precision="float64")["prob"]))

    w0 = node.params["weight"].astype(np.float64)
    v = rng.standard_normal(w0.shape)
    fd = (loss(w0 + NET_EPS * v) - loss(w0 - NET_EPS * v)) / (2 * NET_EPS)
    an = float(np.sum(g.params["conv1"]["weight"] * v))
    assert abs(fd - an) <= TOL["grad_fd"] * abs(fd)
    assert set(g.params["ip2"]) == {"weight", "bias"}
