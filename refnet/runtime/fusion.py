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
* **Hard-swish fusion**: the hard-swish that exporters write as Add, Clip, Mul, Div (with a
  per-channel Mul and Add after it) runs as one ``hard_swish_affine`` step (:func:`fuse_hard_swish`).
* **Sibling convolution merging**: convolutions reading the same tensor with the same kernel
  geometry run as one convolution over the concatenated output channels, then a slice
  (:func:`merged_conv`; :mod:`refnet.runtime.plan` finds the groups).

Everything here returns new :class:`~refnet.graph.Node` objects; the graph is never changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from refnet.graph import Node
from refnet.kernels.norm import fold_batch_norm, fold_scale
from refnet.ops.registry import attrs as op_attrs  # resolved attributes (declared defaults)

__all__ = ["FUSABLE_OPS", "ADD_OPS", "fuse_following", "fuse_add_activation", "fuse_hard_swish", "conv_geometry_key",
           "merged_conv"]

FUSABLE_OPS = ("conv", "deconv", "instance_norm")  # the ops whose followers fuse_following absorbs
# whether plans fold ONNX Mul / Add / Sub / Div by constants into the conv before them and fuse the
# exporters' hard-swish (read when a plan is made; REFNET_CONST_FUSION=0 off, A/B: bench/flag_ab.py)
CONST_FUSION = os.environ.get("REFNET_CONST_FUSION", "1").strip() not in ("0", "off", "no", "false")
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


CONST_AFFINE_OPS = ("mul", "add", "sub", "div")  # with a constant operand: a per-channel affine


def _per_channel_shaped(v: np.ndarray) -> bool:
    """Whether a constant broadcasts per channel of a 4-D (N, C, H, W) tensor without enlarging it:
    one value (any shape of ones, at most 4-D) or C values shaped (C, 1, 1) / (1, C, 1, 1) (an ONNX
    (C,) vector would broadcast along W instead)."""
    return v.ndim <= 4 and (v.size == 1 or (v.ndim >= 3 and v.shape[-2:] == (1, 1) and v.shape[:-3] in ((), (1,))))


def _channel_values(v: np.ndarray, n_ch: int) -> np.ndarray | None:
    """A constant operand of a conv's 4-D output as float64 (n_ch,) (:func:`_per_channel_shaped`,
    one value or n_ch of them), else None."""
    v = np.asarray(v)
    if not _per_channel_shaped(v) or v.size not in (1, n_ch):
        return None
    return np.full(n_ch, float(v.reshape(-1)[0])) if v.size == 1 else np.asarray(v, np.float64).reshape(-1)


def _const_affine(node: Node, cur: str, n_ch: int, consts: Mapping[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, c) with node = a * cur + c per channel when ``node`` is an ONNX Mul / Add / Sub / Div of
    ``cur`` (a conv's 4-D output) and a constant (``consts``: tensor -> value) that broadcasts per
    channel (:func:`_channel_values`; ``cur / v`` folds as ``cur * (1 / v)``); else None."""
    if (node.op not in CONST_AFFINE_OPS or len(node.inputs) != 2 or len(node.outputs) != 1
            or cur not in node.inputs or node.inputs[0] == node.inputs[1]
            or (node.op == "add" and op_attrs(node)["activation"] is not None)):
        return None
    first = node.inputs[0] == cur
    other = node.inputs[1] if first else node.inputs[0]
    if other not in consts:
        return None
    v = _channel_values(consts[other], n_ch)
    if v is None:
        return None
    ones, zeros = np.ones(n_ch), np.zeros(n_ch)
    if node.op == "mul":
        return v, zeros
    if node.op == "add":
        return ones, v
    if node.op == "sub":
        return (ones, -v) if first else (-ones, v)
    if first and np.all(v != 0):  # div: cur / v; v / cur is not affine
        return 1.0 / v, zeros
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


def _residual_of(nxt: Node, cur: str, ready: Callable[[str], bool], consts: Mapping[str, np.ndarray]
                 ) -> str | None:
    """The other operand when ``nxt`` adds ``cur`` and a tensor for which ``ready`` holds (computed
    before the convolution) that is not a constant (which may broadcast), else None."""
    if not _plain_add(nxt) or cur not in nxt.inputs:
        return None
    other = nxt.inputs[1] if nxt.inputs[0] == cur else nxt.inputs[0]
    return other if other != cur and other not in consts and ready(other) else None


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
                   keep: frozenset[str], producers: Mapping[str, int] | None = None,
                   consts: Mapping[str, np.ndarray] | None = None) -> tuple[Node, list[int], str]:
    """Fold the per-channel affine layers following node ``i`` (one of :data:`FUSABLE_OPS`) into
    its weights -- also, after a conv, an ONNX Mul / Add / Sub / Div by a per-channel or single
    constant (``consts``: tensor -> value of the ``constant`` nodes; PP-OCR's learnable affine
    blocks) --, then (a conv, given ``producers``: tensor -> index of the node writing it) an add
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
        affine = (_const_affine(nxt, cur, n_ch, consts) if consts and node.op == "conv" and n_ch > 0
                  and "residual" not in attrs else None)
        if affine is not None:
            ka, kc = affine
            a, c = a * ka, c * ka + kc
            changed = True
            absorbed.append(j)
            cur = nxt.outputs[0]
            continue
        other = (_residual_of(nxt, cur, ready, consts or {}) if node.op == "conv" and "residual" not in attrs
                 else None)
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


# ---- the exporters' hard-swish ---------------------------------------------------------------------
def _scalar_const(consts: Mapping[str, np.ndarray], t: str) -> float | None:
    v = consts.get(t)
    return float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size == 1 else None


def _channel_const(consts: Mapping[str, np.ndarray], t: str) -> np.ndarray | None:
    """The constant ``t`` when it broadcasts per channel (:func:`_per_channel_shaped`), else None."""
    v = consts.get(t)
    return np.asarray(v) if v is not None and _per_channel_shaped(np.asarray(v)) else None


def _only_reader(nodes: Sequence[Node], consumers: Mapping[str, Sequence[int]], t: str, keep: frozenset[str],
                 absorbed: list[int]) -> Node | None:
    """The one node reading ``t`` (not asked for itself), its index appended to ``absorbed``; else None."""
    if t in keep:
        return None
    j = _single_consumer(consumers, t)
    if j is None:
        return None
    absorbed.append(j)
    return nodes[j]


def fuse_hard_swish(nodes: Sequence[Node], consumers: Mapping[str, Sequence[int]], i: int, keep: frozenset[str],
                    consts: Mapping[str, np.ndarray]) -> tuple[Node, list[int], str]:
    """Node ``i``, an add of a tensor x and a constant k, starting the hard-swish that exporters
    write as ``Div(Mul(x, Clip(Add(x, k), lo, hi)), d)`` (paddle2onnx, PyTorch before opset 14),
    each intermediate read only by the next: one ``hard_swish_affine`` step, which also takes a
    following Mul and then Add by a constant that broadcasts per channel (PP-LCNet's learnable
    affine). The kernel computes the same float operations in the same order. Returns as
    :func:`fuse_following` (nothing fused: ``nodes[i]`` itself)."""
    node = nodes[i]
    none = (node, [], node.outputs[0])
    if node.op != "add" or len(node.inputs) != 2 or len(node.outputs) != 1 or op_attrs(node)["activation"]:
        return none
    x, k = node.inputs
    if _scalar_const(consts, k) is None:
        x, k = k, x
    k_add = _scalar_const(consts, k)
    if k_add is None or x in consts:
        return none
    absorbed: list[int] = []
    clip = _only_reader(nodes, consumers, node.outputs[0], keep, absorbed)
    if clip is None or clip.op != "clip_range" or len(clip.inputs) != 1 or len(clip.outputs) != 1:
        return none
    mul = _only_reader(nodes, consumers, clip.outputs[0], keep, absorbed)
    if (mul is None or mul.op != "mul" or len(mul.outputs) != 1
            or sorted(mul.inputs) != sorted((x, clip.outputs[0]))):
        return none
    div = _only_reader(nodes, consumers, mul.outputs[0], keep, absorbed)
    if (div is None or div.op != "div" or len(div.inputs) != 2 or div.inputs[0] != mul.outputs[0]
            or _scalar_const(consts, div.inputs[1]) is None):
        return none
    ca = op_attrs(clip)
    attrs = {"k_add": k_add, "lo": ca["min"], "hi": ca["max"], "k_div": _scalar_const(consts, div.inputs[1])}
    params: dict[str, np.ndarray] = {}
    cur = div.outputs[0]
    for op, name in (("mul", "scale"), ("add", "shift")):  # an optional Mul, then an optional Add
        tail: list[int] = []
        nxt = _only_reader(nodes, consumers, cur, keep, tail)
        if nxt is None or nxt.op != op or len(nxt.inputs) != 2 or len(nxt.outputs) != 1 or cur not in nxt.inputs:
            continue
        if op == "add" and op_attrs(nxt)["activation"] is not None:
            break
        other = nxt.inputs[1] if nxt.inputs[0] == cur else nxt.inputs[0]
        v = _channel_const(consts, other) if other != cur else None
        if v is None:
            break
        params[name] = np.asarray(v, np.float32).reshape(-1)
        absorbed += tail
        cur = nxt.outputs[0]
    fused = Node(node.name, "hard_swish_affine", (x,), (node.outputs[0],), attrs, params)
    return fused, absorbed, cur


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
