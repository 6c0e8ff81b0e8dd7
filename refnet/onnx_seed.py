"""Seeded weights for architecture-only ONNX graphs (the onnx package's light zoo models,
whose every large tensor is a ConstantOfShape of 0.02), written back as a new .onnx.

The model is decoded with refnet's own reader, every weight-role tensor (Conv/ConvTranspose
weights and biases, BatchNormalization/InstanceNormalization parameters, Gemm/MatMul
operands, PRelu slopes) gets deterministic values from ``numpy.random.default_rng(seed)`` in
graph order -- He-scaled weights (std sqrt(2 / fan_in)), small biases, BN scale ~ 1, mean ~ 0,
variance in [0.5, 1.5] -- the ConstantOfShape nodes that produced them are dropped, and the
ModelProto is re-encoded (the schema fields refnet reads; anything else is left out).
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from refnet.weights_import import onnx_schema as S
from refnet.weights_import.onnx import _read_file, parse_model, tensor_array
from refnet.weights_import.protobuf import Message

__all__ = ["seed_onnx_weights", "encode_message", "tensor_message"]

_ROLES = {  # op -> {input index: role}
    "Conv": {1: "weight", 2: "bias"}, "ConvTranspose": {1: "weight_t", 2: "bias"},
    "BatchNormalization": {1: "scale", 2: "bias", 3: "mean", 4: "var"},
    "InstanceNormalization": {1: "scale", 2: "bias"}, "Gemm": {1: "gemm_b", 2: "bias"},
    "MatMul": {1: "matmul_b"}, "PRelu": {1: "slope"}, "Add": {1: "bias"}, "Mul": {1: "scale"},
    "Sum": {1: "bias"},
}


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def encode_message(msg: Message) -> bytes:
    """Serialize a decoded Message with its schema (proto3 packing for repeated numbers)."""
    out = bytearray()
    for f in sorted(msg.type.fields, key=lambda f: f.number or 0):
        if f.number is None or f.name not in msg.values:
            continue
        v = msg.values[f.name]
        vals = list(v) if f.repeated else [v]
        if f.kind == "message":
            for m in vals:
                body = encode_message(m)
                out += _key(f.number, 2) + _varint(len(body)) + body
        elif f.kind in ("string", "bytes"):
            for s in vals:
                b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
                out += _key(f.number, 2) + _varint(len(b)) + b
        elif f.kind in ("float", "double"):
            fmt = "<f" if f.kind == "float" else "<d"
            if f.repeated:
                body = np.asarray(vals, fmt).tobytes()
                out += _key(f.number, 2) + _varint(len(body)) + body
            else:
                out += _key(f.number, 5 if f.kind == "float" else 1) + struct.pack(fmt, float(v))
        else:
            if f.repeated:
                body = b"".join(_varint(int(x)) for x in vals)
                out += _key(f.number, 2) + _varint(len(body)) + body
            else:
                out += _key(f.number, 0) + _varint(int(v))
    return bytes(out)


def tensor_message(name: str, arr: np.ndarray) -> Message:
    """A TensorProto Message holding ``arr`` (float32) as raw_data."""
    t = Message(S.MESSAGES["TensorProto"])
    a = np.ascontiguousarray(arr, np.float32)
    t.values.update(dims=list(a.shape), data_type=1, name=name, raw_data=a.astype("<f4").tobytes())
    return t


def _seeded(role: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if role in ("weight", "weight_t", "gemm_b", "matmul_b"):
        if role == "weight":
            fan_in = math.prod(shape[1:])
        elif role == "weight_t":
            fan_in = shape[0] * math.prod(shape[2:])
        else:
            fan_in = shape[0] if len(shape) >= 1 else 1
        return rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))
    if role == "scale":
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if role == "var":
        return rng.uniform(0.5, 1.5, shape)
    if role == "slope":
        return rng.uniform(0.05, 0.3, shape)
    return 0.05 * rng.standard_normal(shape)  # bias, mean


def seed_onnx_weights(path: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> Path:
    """Write ``out``: the model at ``path`` with seeded weights in place of its placeholder
    ConstantOfShape tensors (and of its weight-role initializers). Returns ``out``."""
    file = str(path)
    model = parse_model(_read_file(path, file), file)
    graph = model.get("graph")
    init = {t.get("name"): t for t in graph.get("initializer")}
    producers = {o: nd for nd in graph.get("node") for o in nd.get("output")}
    roles: dict[str, str] = {}
    for nd in graph.get("node"):
        for i, t in enumerate(nd.get("input")):
            role = _ROLES.get(nd.get("op_type") or "", {}).get(i)
            if role and t and t not in roles and (t in init or (t in producers and producers[t].get("op_type")
                                                               == "ConstantOfShape")):
                roles[t] = role
    rng = np.random.default_rng(seed)
    seeded: dict[str, np.ndarray] = {}
    for name, role in roles.items():  # graph order: deterministic
        if name in init:
            shape = tuple(tensor_array(init[name], Path(file).parent).shape)
        else:
            shape_t = init.get(producers[name].get("input")[0])
            if shape_t is None:
                continue
            shape = tuple(int(d) for d in tensor_array(shape_t).reshape(-1))
        seeded[name] = _seeded(role, shape, rng)
    nodes = [nd for nd in graph.get("node")
             if not (nd.get("op_type") == "ConstantOfShape" and any(o in seeded for o in nd.get("output")))]
    inits = [t for t in graph.get("initializer") if t.get("name") not in seeded]
    inits += [tensor_message(k, v) for k, v in seeded.items()]
    graph.values["node"] = nodes
    graph.values["initializer"] = inits
    graph.values["input"] = [vi for vi in graph.get("input") if vi.get("name") not in seeded]
    out = Path(out)
    out.write_bytes(encode_message(model))
    return out
