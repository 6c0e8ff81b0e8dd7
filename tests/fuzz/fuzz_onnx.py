"""ONNX seeds and structure-aware mutators for the fuzz suite (fuzzlib dispatches "onnx" here).

Seeds are small models written with the onnx package's helpers (conv/BN/pool/Gemm/softmax,
a shape subgraph Shape/Gather/Unsqueeze/Concat/Reshape, Resize/Pad/Slice/Split/Transpose,
typed-field initializers (float_data, int64_data, double_data, int32_data fp16), Constant nodes
with tensor attributes, legacy opsets). Mutators: fuzzlib's byte and wire mutators, plus
semantic edits made on a copy of the seed's ModelProto and re-serialised -- an attribute or a
dim set to an extreme value, an op type swapped, a node input rewired, a data type changed, a
node duplicated or dropped, the opset changed, an external-data reference added (with
traversal paths) -- so the mutated file is still well-formed protobuf and reaches the importer.
"""

from __future__ import annotations

import random
from functools import lru_cache

import fuzzlib as F
import numpy as np

ONNX_NAME = "fuzz.onnx"


def _models() -> dict[str, object]:
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper as H
    from onnx import numpy_helper as NH

    rng = np.random.default_rng(0)

    def init(name, arr):
        return NH.from_array(np.asarray(arr), name)

    def model(nodes, inputs, outputs, inits, opset=13):
        g = H.make_graph(nodes, "g", inputs, outputs, initializer=inits)
        return H.make_model(g, opset_imports=[H.make_opsetid("", opset)])

    x = H.make_tensor_value_info("x", TP.FLOAT, [1, 3, 8, 8])
    out = {}
    out["cnn"] = model([
        H.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        H.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"], epsilon=1e-5),
        H.make_node("Relu", ["n"], ["r"]),
        H.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        H.make_node("GlobalAveragePool", ["p"], ["g"]),
        H.make_node("Flatten", ["g"], ["f"]),
        H.make_node("Gemm", ["f", "fw", "fb"], ["y0"], transB=1),
        H.make_node("Softmax", ["y0"], ["y"], axis=1)],
        [x], [H.make_tensor_value_info("y", TP.FLOAT, [1, 5])],
        [init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)), init("b", np.zeros(4, np.float32)),
         init("s", np.ones(4, np.float32)), init("bb", np.zeros(4, np.float32)), init("m", np.zeros(4, np.float32)),
         init("v", np.ones(4, np.float32)), init("fw", rng.standard_normal((5, 4)).astype(np.float32)),
         init("fb", np.zeros(5, np.float32))])
    out["shape_subgraph"] = model([
        H.make_node("Shape", ["x"], ["sh"]),
        H.make_node("Gather", ["sh", "i0"], ["n0"], axis=0),
        H.make_node("Unsqueeze", ["n0", "ax0"], ["n1"]),
        H.make_node("Concat", ["n1", "minus1"], ["tgt"], axis=0),
        H.make_node("Reshape", ["x", "tgt"], ["flat"]),
        H.make_node("ConstantOfShape", ["cs"], ["ones"], value=NH.from_array(np.ones(1, np.float32))),
        H.make_node("Mul", ["flat", "ones"], ["y"])],
        [x], [H.make_tensor_value_info("y", TP.FLOAT, None)],
        [init("i0", np.array(0, np.int64)), init("ax0", np.array([0], np.int64)),
         init("minus1", np.array([-1], np.int64)), init("cs", np.array([1, 192], np.int64))])
    out["resize_pad"] = model([
        H.make_node("Resize", ["x", "", "sc"], ["u"], mode="linear", coordinate_transformation_mode="half_pixel"),
        H.make_node("Pad", ["u", "pads"], ["pd"], mode="reflect"),
        H.make_node("Slice", ["pd", "st", "en", "axs", "stp"], ["sl"]),
        H.make_node("Split", ["sl", "spl"], ["a", "b"], axis=1),
        H.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1]),
        H.make_node("ReduceMean", ["t"], ["y"], axes=[1, 2], keepdims=1)],
        [x], [H.make_tensor_value_info("y", TP.FLOAT, None)],
        [init("sc", np.array([1, 1, 2, 2], np.float32)), init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
         init("st", np.array([1, 1], np.int64)), init("en", np.array([-1, 17], np.int64)),
         init("axs", np.array([2, 3], np.int64)), init("stp", np.array([1, 2], np.int64)),
         init("spl", np.array([1, 2], np.int64))])
    typed = [H.make_tensor("w", TP.FLOAT, [2, 3, 1, 1], rng.standard_normal(6).tolist()),
             H.make_tensor("b", TP.DOUBLE, [2], [0.5, -0.5]),
             H.make_tensor("k", TP.INT64, [1], [2]),
             H.make_tensor("h", TP.FLOAT16, [1], np.array([0.25], np.float16).view(np.uint16).tolist(), raw=False)]
    out["typed_fields"] = model([
        H.make_node("Conv", ["x", "w"], ["c"]),
        H.make_node("Cast", ["b"], ["bf"], to=TP.FLOAT),
        H.make_node("Unsqueeze", ["bf", "ax"], ["b4"]),
        H.make_node("Add", ["c", "b4"], ["a"]),
        H.make_node("Cast", ["h"], ["hf"], to=TP.FLOAT),
        H.make_node("Mul", ["a", "hf"], ["m"]),
        H.make_node("TopK", ["m", "k"], ["y", "yi"], axis=3),
        H.make_node("Constant", [], ["c2"], value=H.make_tensor("cv", TP.FLOAT, [1], [2.0])),
        H.make_node("PRelu", ["y", "c2"], ["z"])],
        [x], [H.make_tensor_value_info("z", TP.FLOAT, None), H.make_tensor_value_info("yi", TP.INT64, None)],
        typed + [init("ax", np.array([1, 2], np.int64))])
    legacy_x = H.make_tensor_value_info("x", TP.FLOAT, [1, 3, 8, 8])
    out["legacy_opset7"] = model([
        H.make_node("Upsample", ["x"], ["u"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest"),
        H.make_node("AveragePool", ["u"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        H.make_node("Clip", ["p"], ["c"], min=0.0, max=6.0),
        H.make_node("Softmax", ["c"], ["y"], axis=1)],
        [legacy_x], [H.make_tensor_value_info("y", TP.FLOAT, None)], [], opset=7)
    onnx.checker.check_model(out["cnn"])
    return out


@lru_cache(maxsize=1)
def onnx_seeds() -> tuple[F.Seed, ...]:
    seeds = []
    for name, m in _models().items():
        data = m.SerializeToString()
        bounds, fields = F._wire_boundaries(data)
        seeds.append(F.Seed(f"syn_{name}", "onnx", {"onnx": data}, "onnx", bounds,
                            {"fields": fields, "model": m}))
    return tuple(seeds)


def load(data: bytes):
    from refnet.weights_import.onnx import read_onnx

    return read_onnx(ONNX_NAME, data=data)


# ---- semantic mutators ----------------------------------------------------------------------------
def _copy(seed: F.Seed, data: bytes):
    """A fresh ModelProto for the mutated file, or None when it no longer parses in onnx."""
    import onnx

    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:  # noqa: BLE001 - a byte-mutated file: fall back to wire mutators
        return None
    return m


def _semantic(fn):
    def mut(seed: F.Seed, data: bytes, rnd: random.Random) -> bytes:
        m = _copy(seed, data)
        if m is None or not m.graph.node:
            return F.m_wire_length(seed, data, rnd)
        try:  # protobuf refuses out-of-range values (e.g. -(2**63) * -1): that edit is skipped
            fn(m, rnd)
            return m.SerializeToString()
        except (ValueError, TypeError, OverflowError, IndexError):  # or the edit found nothing to change
            return F.m_wire_varint(seed, data, rnd)
    mut.__name__ = fn.__name__
    return mut


@_semantic
def m_onnx_attr(m, rnd):
    """An attribute set to an extreme or wrong-typed value."""
    nodes = [n for n in m.graph.node if n.attribute] or list(m.graph.node)
    n = rnd.choice(nodes)
    if not n.attribute:
        return
    a = rnd.choice(n.attribute)
    v = rnd.choice(F.INTERESTING_INTS)
    if a.ints:
        i = rnd.randrange(len(a.ints))
        a.ints[i] = max(min(v * rnd.choice((1, -1)), 2**63 - 1), -(2**63))
        if rnd.random() < 0.3:
            del a.ints[rnd.randrange(len(a.ints)):]
    elif a.type == 2:
        a.i = max(min(v * rnd.choice((1, -1)), 2**63 - 1), -(2**63))
    elif a.type == 1:
        a.f = rnd.choice((0.0, -1.0, 1e30, float("nan"), float("inf"), 1e-30))
    elif a.type == 3:
        a.s = rnd.choice((b"", b"\xff\xfe", b"SAME_UPPER", b"VALID", b"cubic", b"bogus", b"CRD"))
    else:
        a.type = rnd.randrange(16)


@_semantic
def m_onnx_dims(m, rnd):
    """A tensor's dims (initializer or input shape) changed: huge, negative, zero, more or fewer."""
    targets = list(m.graph.initializer)
    if targets and rnd.random() < 0.6:
        t = rnd.choice(targets)
        if t.dims and rnd.random() < 0.7:
            t.dims[rnd.randrange(len(t.dims))] = rnd.choice(F.INTERESTING_INTS) * rnd.choice((1, -1))
        else:
            t.dims.append(rnd.choice((0, 1, 2, 2**31)))
        return
    vi = rnd.choice(list(m.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if dims:
        d = dims[rnd.randrange(len(dims))]
        if rnd.random() < 0.2:
            d.dim_param = "H"
        else:
            d.dim_value = rnd.choice(F.INTERESTING_INTS) * rnd.choice((1, 1, -1))


_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Reshape", "Resize", "Gather", "Concat", "Slice", "Pad",
        "Split", "Squeeze", "Unsqueeze", "Softmax", "Gemm", "MatMul", "TopK", "Shape", "Expand", "Tile", "Range",
        "ConstantOfShape", "Loop", "If", "NonMaxSuppression", "RoiAlign", "MaxUnpool", "DepthToSpace", "Cast",
        "BatchNormalization", "LayerNormalization", "Where", "NoSuchOp")


@_semantic
def m_onnx_op_type(m, rnd):
    """A node's op type swapped for another (same inputs and attributes)."""
    n = rnd.choice(list(m.graph.node))
    n.op_type = rnd.choice(_OPS)
    if rnd.random() < 0.1:
        n.domain = rnd.choice(("com.microsoft", "ai.onnx", "x"))


@_semantic
def m_onnx_rewire(m, rnd):
    """A node input or output renamed to another tensor (cycles, dangling, duplicates, empty)."""
    names = [t for n in m.graph.node for t in list(n.input) + list(n.output)] + ["", "nope"]
    n = rnd.choice(list(m.graph.node))
    if n.input and rnd.random() < 0.7:
        n.input[rnd.randrange(len(n.input))] = rnd.choice(names)
    elif n.output:
        n.output[rnd.randrange(len(n.output))] = rnd.choice(names)
    if rnd.random() < 0.2:
        n.input.append(rnd.choice(names))


@_semantic
def m_onnx_dtype(m, rnd):
    """An initializer's data type changed (its data kept), or its data moved to another field."""
    if not m.graph.initializer:
        return
    t = rnd.choice(list(m.graph.initializer))
    t.data_type = rnd.choice((0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 13, 14, 16, 17, 22, 99))
    if rnd.random() < 0.3 and t.raw_data:
        t.int64_data.extend([1, 2, 3])


@_semantic
def m_onnx_nodes(m, rnd):
    """A node duplicated, dropped, or the node list reversed (order matters in ONNX)."""
    nodes = list(m.graph.node)
    k = rnd.randrange(3)
    if k == 0:
        m.graph.node.insert(rnd.randrange(len(nodes) + 1), nodes[rnd.randrange(len(nodes))])
    elif k == 1:
        del m.graph.node[rnd.randrange(len(nodes))]
    else:
        m.graph.node.reverse()


@_semantic
def m_onnx_opset(m, rnd):
    """The default-domain opset changed (old or future), or removed."""
    if m.opset_import and rnd.random() < 0.8:
        m.opset_import[0].version = rnd.choice((0, 1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 19, 99, 2**40, -1))
    else:
        del m.opset_import[:]


@_semantic
def m_onnx_external(m, rnd):
    """An initializer's data declared external (no file next to an in-memory model; traversal paths)."""
    if not m.graph.initializer:
        return
    t = rnd.choice(list(m.graph.initializer))
    t.data_location = 1
    t.ClearField("raw_data")
    for k, v in (("location", rnd.choice(("w.bin", "../../etc/passwd", "/etc/passwd", "a/../../b", ""))),
                 ("offset", rnd.choice(("0", "-1", "99999999999", "x"))), ("length", rnd.choice(("4", "-4", "")))):
        e = t.external_data.add()
        e.key, e.value = k, v


MUTATORS = F.COMMON + (F.m_wire_length, F.m_wire_varint, F.m_wire_packed_dims, F.m_wire_tag, F.m_wire_groups,
                       F.m_wire_splice, F.m_wire_drop_field, F.m_float_data,
                       m_onnx_attr, m_onnx_attr, m_onnx_attr, m_onnx_dims, m_onnx_dims, m_onnx_op_type,
                       m_onnx_op_type, m_onnx_rewire, m_onnx_rewire, m_onnx_dtype, m_onnx_nodes, m_onnx_opset,
                       m_onnx_external)
