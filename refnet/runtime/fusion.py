"""Fusion for the float32 path: layers folded into the weights of the layer before them.

* **Affine folding**: the per-channel affine layers (BatchNorm, Scale, Bias, Power with power 1)
  that follow a convolution, transposed convolution or instance normalisation compose into one
  ``a * y + c`` per channel, folded into that layer's weight and bias in float64. The BatchNorm
  formula and the fold itself are the kernels' (:func:`refnet.kernels.norm.fold_batch_norm`,
  :func:`refnet.kernels.norm.fold_scale`), the one home of that math.
* **Residual fusion**: a convolution followed by an add (ONNX Add, Caffe Eltwise SUM without
  coefficients) of a tensor computed before it takes that tensor as a second input and adds it
  in its epilogue, before any activation (``attrs["residual"]``; ResNet's ``relu(conv + x)``:
  no separate add and ReLU passes over the tensor).
* **Activation fusion**: a following ReLU / leaky ReLU / PReLU / ReLU6 becomes the layer's
  epilogue (``attrs["activation"]``); also of an add of two tensors that no convolution absorbed
  (:func:`fuse_add_activation`; ENet's ``prelu(x + y)``: one pass instead of an add and a
  four-pass PReLU).
* **Sibling convolution merging**: convolutions reading the same tensor with the same kernel
  geometry run as one convolution over the concatenated output channels, then a slice
  (:func:`merged_conv`; :mod:`refnet.runtime.plan` finds the groups).

Everything here returns new :class:`~refnet.graph.Node` objects; the graph is never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from refnet.graph import Node
from refnet.kernels.norm import fold_batch_norm, fold_scale
from refnet.ops.registry import attrs as op_attrs  # resolved attributes (declared defaults)

__all__ = ["FUSABLE_OPS", "ADD_OPS", "fuse_following", "fuse_add_activation", "conv_geometry_key", "merged_conv"]

FUSABLE_OPS = ("conv", "deconv", "instance_norm")  # the ops whose followers fuse_following absorbs
ADD_OPS = ("eltwise", "add")  # the ops whose activation fuse_add_activation absorbs


def _f64(v: np.ndarray | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=np.float64).reshape(-1)


def _per_channel(v: np.ndarray | None, n_ch: int) -> np.ndarray | None:
    """``v`` as float64 (n_ch,) (a single value broadcast); None when absent; ValueError on another size."""
    v = _f64(v)
    if v is None or v.size == n_ch:
        return v
    if v.size == 1:
        return np.full(n_ch, v[0])
    raise ValueError(f"{v.size} values for {n_ch} channels")


def _single_consumer(consumers: Mapping[str, Sequence[int]], tensor: str) -> int | None:
    c = consumers.get(tensor, ())
    return c[0] if len(c) == 1 else None


def _out_channels(node: Node) -> int | None:
    w = node.params.get("weight")
    if node.op == "conv" and w is not None and w.ndim == 4:
        return int(w.shape[0])
    if node.op == "deconv" and w is not None and w.ndim == 4:
        return int(w.shape[1]) * op_attrs(node)["groups"]
    if node.op == "instance_norm":
        return -1  # known from its own weight or the next layer's parameters (_instance_norm_channels)
    return None


def _instance_norm_channels(nodes: Sequence[Node], consumers: Mapping[str, Sequence[int]], node: Node) -> int | None:
    w = node.params.get("weight", node.params.get("bias"))
    if w is not None:
        return int(w.size)
    j = _single_consumer(consumers, node.outputs[0])
    nxt = nodes[j] if j is not None else None
    if nxt is not None and nxt.op == "batch_norm":
        return int(nxt.params["mean"].size)
    if nxt is not None and nxt.op == "scale" and "weight" in nxt.params and nxt.params["weight"].size > 1:
        return int(nxt.params["weight"].size)
    return None


def _affine_of(node: Node, n_ch: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, c) with node(y) = a * y + c per channel, when ``node`` is such a layer, else None."""
    p = node.params
    if node.op == "batch_norm":
        mean, var = _f64(p["mean"]), _f64(p["var"])
        if mean.size != n_ch or var.size != n_ch:
            return None
        try:
            g, bt = _per_channel(p.get("weight"), n_ch), _per_channel(p.get("bias"), n_ch)
        except ValueError:
            return None
        # the BatchNorm folded into the identity: a = gamma / sqrt(var + eps), c = beta - mean * a
        return fold_batch_norm(np.ones(n_ch), None, mean, var, g, bt, eps=op_attrs(node)["eps"])
    if node.op == "scale" and op_attrs(node)["axis"] == 1 and "weight" in p:
        g, bt = _f64(p["weight"]), _f64(p.get("bias"))
        if g.size not in (1, n_ch) or (bt is not None and bt.size not in (1, n_ch)):
            return None
        return (np.broadcast_to(g, (n_ch,)).copy(),
                np.broadcast_to(bt if bt is not None else 0.0, (n_ch,)).copy())
    if node.op == "bias" and op_attrs(node)["axis"] == 1 and "bias" in p:
        bt = _f64(p["bias"])
        if bt.size not in (1, n_ch):
            return None
        return np.ones(n_ch), np.broadcast_to(bt, (n_ch,)).copy()
    if node.op == "power" and op_attrs(node)["power"] == 1.0:
        k, s = op_attrs(node)["scale"], op_attrs(node)["shift"]
        return np.full(n_ch, k), np.full(n_ch, s)
    return None


def _fold(node: Node, a: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """New float32 params of ``node`` followed by the per-channel affine ``a * y + c``
    (computed in float64 by :func:`refnet.kernels.norm.fold_scale`)."""
    p = node.params
    params = {k: v for k, v in p.items() if k not in ("weight", "bias")}
    b = _f64(p.get("bias"))
    if node.op == "instance_norm":
        g = _f64(p.get("weight"))
        g, b = fold_scale(np.ones(a.size) if g is None else g, b, a, c)
        params["weight"], params["bias"] = g.astype(np.float32), b.astype(np.float32)
        return params
    w = np.asarray(p["weight"], dtype=np.float64)
    if node.op == "conv":
        w, b = fold_scale(w, b, a, c)
    else:  # deconv: weight (C_in, C_out / g, kh, kw), output channel gi * cog + j: fold it channel-first
        g = op_attrs(node)["groups"]
        ci, cog = w.shape[:2]
        first = w.reshape(g, ci // g, cog, *w.shape[2:]).transpose(0, 2, 1, 3, 4)
        folded, b = fold_scale(first.reshape(g * cog, ci // g, *w.shape[2:]), b, a, c)
        w = folded.reshape(g, cog, ci // g, *w.shape[2:]).transpose(0, 2, 1, 3, 4).reshape(w.shape)
    params["weight"] = np.ascontiguousarray(w, dtype=np.float32)
    params["bias"] = b.astype(np.float32)
    return params


def _plain_add(node: Node) -> bool:
    """Whether ``node`` adds two tensors into one: ONNX Add, or an eltwise SUM without coefficients
    (what both the residual fusion and :func:`fuse_add_activation` take)."""
    if node.op not in ADD_OPS or len(node.inputs) != 2 or len(node.outputs) != 1:
        return False
    if node.op == "eltwise":
        a = op_attrs(node)
        return a["operation"] == "sum" and not a["coeffs"]
    return True


def _residual_of(nxt: Node, cur: str, ready: Callable[[str], bool]) -> str | None:
    """The other operand when ``nxt`` adds ``cur`` and a tensor for which ``ready`` holds (computed
    before the convolution), else None."""
    if not _plain_add(nxt) or cur not in nxt.inputs:
        return None
    other = nxt.inputs[1] if nxt.inputs[0] == cur else nxt.inputs[0]
    return other if other != cur and ready(other) else None


def _activation(node: Node, nxt: Node, n_ch: int | None, attrs: dict, act_params: dict) -> bool:
    """Make ``nxt`` (ReLU / leaky ReLU / PReLU / ReLU6) the epilogue of ``node``; False if it is none.
    ``n_ch`` None (unknown before shapes): a PReLU's slope is kept as given, (1,) or (C,)."""
    if nxt.op == "relu":
        attrs["activation"] = "relu"
        attrs["negative_slope"] = op_attrs(nxt)["negative_slope"]
    elif nxt.op == "prelu" and node.op != "instance_norm" and (n_ch is None or nxt.params["slope"].size in (1, n_ch)):
        attrs["activation"] = "prelu"
        slope = _f64(nxt.params["slope"])
        act_params["slope"] = (slope if n_ch is None else np.broadcast_to(slope, (n_ch,))).astype(np.float32)
    elif (nxt.op == "clip" and node.op != "instance_norm" and op_attrs(nxt)["min"] == 0.0
          and op_attrs(nxt)["max"] == 6.0):
        attrs["activation"] = "relu6"
    else:
        return False
    return True


def fuse_following(nodes: Sequence[Node], consumers: Mapping[str, Sequence[int]], i: int,
                   keep: frozenset[str], producers: Mapping[str, int] | None = None) -> tuple[Node, list[int], str]:
    """Fold the per-channel affine layers following node ``i`` (one of :data:`FUSABLE_OPS`) into
    its weights, then (a conv, given ``producers``: tensor -> index of the node writing it) an add
    of a tensor made before node ``i``, then a following activation; stop at a tensor in ``keep``
    (asked for) or read by more than one layer (``consumers``: tensor -> reading node indices).

    Returns the fused node (``nodes[i]`` itself when nothing fused), the indices of the absorbed
    nodes, and the tensor the fused node's output stands for (the last absorbed node's output).
    With a residual the fused node writes the add's output tensor (whose shape is the add's).
    """
    node = nodes[i]
    n_ch = _out_channels(node)
    if n_ch == -1:
        n_ch = _instance_norm_channels(nodes, consumers, node)
    if n_ch is None:
        return node, [], node.outputs[0]
    a = np.ones(n_ch)  # the absorbed layers compute a * y + c per channel (float64)
    c = np.zeros(n_ch)
    attrs = dict(node.attrs)
    act_params: dict[str, np.ndarray] = {}
    absorbed: list[int] = []
    cur = node.outputs[0]
    changed = False
    inputs, outputs = node.inputs, node.outputs

    def ready(t: str) -> bool:  # a net input or made by a node before node i
        return producers is not None and producers.get(t, -1) < i

    while cur not in keep and len(node.outputs) == 1 and "activation" not in attrs:
        j = _single_consumer(consumers, cur)
        if j is None:
            break
        nxt = nodes[j]
        other = _residual_of(nxt, cur, ready) if node.op == "conv" and "residual" not in attrs else None
        if other is not None:
            attrs["residual"] = True
            inputs, outputs = node.inputs + (other,), nxt.outputs
            absorbed.append(j)
            cur = nxt.outputs[0]
            continue
        if len(nxt.inputs) != 1 or len(nxt.outputs) != 1:
            break
        affine = _affine_of(nxt, n_ch) if "residual" not in attrs else None
        if affine is not None:
            ka, kc = affine
            a, c = a * ka, c * ka + kc
            changed = True
        elif not _activation(node, nxt, n_ch, attrs, act_params):
            break
        absorbed.append(j)
        cur = nxt.outputs[0]
    if not absorbed:
        return node, [], cur
    params = dict(node.params)
    if changed:
        params = _fold(node, a, c)
    params.update(act_params)
    return Node(node.name, node.op, inputs, outputs, attrs, params), absorbed, cur


def fuse_add_activation(nodes: Sequence[Node], consumers: Mapping[str, Sequence[int]], i: int,
                        keep: frozenset[str]) -> tuple[Node, list[int], str]:
    """Node ``i``, an add of two tensors (ONNX Add, eltwise SUM without coefficients) whose output
    (not in ``keep``) only a ReLU / leaky ReLU / PReLU / ReLU6 reads: that activation becomes the
    add's epilogue (``attrs["activation"]``, a PReLU's ``params["slope"]``; one pass computing
    ``act(a + b)``, refnet.kernels.add_act). Returns as :func:`fuse_following`."""
    node = nodes[i]
    cur = node.outputs[0]
    if not _plain_add(node) or op_attrs(node)["activation"] is not None or cur in keep:
        return node, [], cur
    j = _single_consumer(consumers, cur)
    if j is None or len(nodes[j].inputs) != 1 or len(nodes[j].outputs) != 1:
        return node, [], cur
    attrs = dict(node.attrs)
    act_params: dict[str, np.ndarray] = {}
    if not _activation(node, nodes[j], None, attrs, act_params):
        return node, [], cur
    fused = Node(node.name, node.op, node.inputs, node.outputs, attrs, {**node.params, **act_params})
    return fused, [j], nodes[j].outputs[0]


# ---- sibling convolutions ------------------------------------------------------------------------
def conv_geometry_key(node: Node) -> tuple | None:
    """What sibling convolutions must share to run as one (None: this conv cannot merge)."""
    w = node.params.get("weight")
    if node.op != "conv" or w is None or w.ndim != 4 or len(node.outputs) != 1 or len(node.inputs) != 1:
        return None
    a = op_attrs(node)
    if a["groups"] != 1 or a["activation"] == "relu6":
        return None
    return (tuple(w.shape[1:]), a["stride"], a["pad"], a["dilation"])


def _slopes(node: Node, n: int) -> np.ndarray:
    """The epilogue of a (fused) conv as per-channel leaky slopes: none = 1, ReLU = its slope."""
    act = op_attrs(node)["activation"]
    if act == "prelu":
        return np.broadcast_to(_f64(node.params["slope"]), (n,))
    if act == "relu":
        return np.full(n, op_attrs(node)["negative_slope"])
    return np.ones(n)


def merged_conv(nodes: Sequence[Node], source: str) -> tuple[Node, Node]:
    """Sibling convolutions ``nodes`` (equal :func:`conv_geometry_key`, all reading ``source``) as
    one convolution over the concatenated output channels -- the input is read (im2col'd,
    transformed) once and the GEMM is wider -- and a slice into the original output tensors
    (views). Their activations become per-channel slopes (none = 1, ReLU = 0, leaky / PReLU =
    theirs). Returns (the conv node, the slice node)."""
    sizes = [int(n.params["weight"].shape[0]) for n in nodes]
    weight = np.concatenate([np.asarray(n.params["weight"], np.float32) for n in nodes], axis=0)
    bias = np.concatenate([np.asarray(n.params["bias"], np.float32).reshape(-1) if "bias" in n.params
                           else np.zeros(k, np.float32) for n, k in zip(nodes, sizes)])
    slopes = np.concatenate([_slopes(n, k) for n, k in zip(nodes, sizes)])
    attrs = {k: v for k, v in nodes[0].attrs.items() if k not in ("activation", "negative_slope")}
    params = {"weight": weight, "bias": bias}
    if not np.all(slopes == 1.0):
        attrs["activation"] = "prelu"
        params["slope"] = slopes.astype(np.float32)
    name = "+".join(n.name for n in nodes)
    tensor = name + ":merged"
    conv = Node(name, "conv", (source,), (tensor,), attrs, params)
    points = tuple(int(v) for v in np.cumsum(sizes)[:-1])
    split = Node(name + ":split", "slice", (tensor,), tuple(n.outputs[0] for n in nodes),
                 {"axis": 1, "points": points})
    return conv, split
