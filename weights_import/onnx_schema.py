"""The subset of onnx.proto (IR version <= 10) that refnet reads: field numbers and kinds.

Numbers follow onnx/onnx.proto3. ``data_type`` / ``elem_type`` / attribute ``type`` are read as
plain integers (the enums below give their meaning), so a number this reader does not know
stays visible and is refused by the importer with its value, instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from refnet.weights_import.caffe_schema import Field, MessageType

__all__ = ["MESSAGES", "ENUMS", "DTYPES", "DTYPE_NAMES", "ATTR_TYPES", "INT_TYPES"]


def _f(number: int, name: str, kind: str, *, rep: bool = False) -> Field:
    if kind in ("int32", "int64", "uint64", "float", "double", "string", "bytes"):
        return Field(number, name, kind, rep, None, None)
    return Field(number, name, "message", rep, kind, None)


def _r(number: int, name: str, kind: str) -> Field:
    return _f(number, name, kind, rep=True)


_MESSAGES = [
    MessageType("ModelProto", (
        _f(1, "ir_version", "int64"), _r(8, "opset_import", "OperatorSetIdProto"),
        _f(2, "producer_name", "string"), _f(3, "producer_version", "string"),
        _f(4, "domain", "string"), _f(5, "model_version", "int64"), _f(6, "doc_string", "string"),
        _f(7, "graph", "GraphProto"), _r(14, "metadata_props", "StringStringEntryProto"),
        _r(25, "functions", "FunctionProto"),
    )),
    MessageType("OperatorSetIdProto", (_f(1, "domain", "string"), _f(2, "version", "int64"))),
    MessageType("StringStringEntryProto", (_f(1, "key", "string"), _f(2, "value", "string"))),
    MessageType("FunctionProto", (_f(1, "name", "string"), _f(10, "domain", "string"))),
    MessageType("GraphProto", (
        _r(1, "node", "NodeProto"), _f(2, "name", "string"), _r(5, "initializer", "TensorProto"),
        _r(15, "sparse_initializer", "SparseTensorProto"), _f(10, "doc_string", "string"),
        _r(11, "input", "ValueInfoProto"), _r(12, "output", "ValueInfoProto"),
        _r(13, "value_info", "ValueInfoProto"),
    )),
    MessageType("NodeProto", (
        _r(1, "input", "string"), _r(2, "output", "string"), _f(3, "name", "string"),
        _f(4, "op_type", "string"), _f(7, "domain", "string"), _r(5, "attribute", "AttributeProto"),
        _f(6, "doc_string", "string"),
    )),
    MessageType("AttributeProto", (
        _f(1, "name", "string"), _f(21, "ref_attr_name", "string"), _f(13, "doc_string", "string"),
        _f(20, "type", "int32"), _f(2, "f", "float"), _f(3, "i", "int64"), _f(4, "s", "bytes"),
        _f(5, "t", "TensorProto"), _f(6, "g", "GraphProto"), _f(22, "sparse_tensor", "SparseTensorProto"),
        _r(7, "floats", "float"), _r(8, "ints", "int64"), _r(9, "strings", "bytes"),
        _r(10, "tensors", "TensorProto"), _r(11, "graphs", "GraphProto"),
    )),
    MessageType("SparseTensorProto", (_f(1, "values", "TensorProto"), _f(2, "indices", "TensorProto"),
                                      _r(3, "dims", "int64"))),
    MessageType("ValueInfoProto", (_f(1, "name", "string"), _f(2, "type", "TypeProto"),
                                   _f(3, "doc_string", "string"))),
    MessageType("TypeProto", (_f(1, "tensor_type", "TypeProtoTensor"), _f(6, "denotation", "string"))),
    MessageType("TypeProtoTensor", (_f(1, "elem_type", "int32"), _f(2, "shape", "TensorShapeProto"))),
    MessageType("TensorShapeProto", (_r(1, "dim", "Dimension"),)),
    MessageType("Dimension", (_f(1, "dim_value", "int64"), _f(2, "dim_param", "string"),
                              _f(3, "denotation", "string"))),
    MessageType("TensorProto", (
        _r(1, "dims", "int64"), _f(2, "data_type", "int32"), _r(4, "float_data", "float"),
        _r(5, "int32_data", "int32"), _r(6, "string_data", "bytes"), _r(7, "int64_data", "int64"),
        _f(8, "name", "string"), _f(12, "doc_string", "string"), _f(9, "raw_data", "bytes"),
        _r(13, "external_data", "StringStringEntryProto"), _f(14, "data_location", "int32"),
        _r(10, "double_data", "double"), _r(11, "uint64_data", "uint64"),
    )),
]

MESSAGES: Mapping[str, MessageType] = MappingProxyType({m.name: m for m in _MESSAGES})
ENUMS: Mapping[str, Mapping[str, int]] = MappingProxyType({})

#: TensorProto.DataType number -> numpy dtype (little-endian), for the numeric types refnet reads
DTYPES: Mapping[int, np.dtype] = MappingProxyType({
    1: np.dtype("<f4"), 2: np.dtype("u1"), 3: np.dtype("i1"), 4: np.dtype("<u2"), 5: np.dtype("<i2"),
    6: np.dtype("<i4"), 7: np.dtype("<i8"), 9: np.dtype("bool"), 10: np.dtype("<f2"), 11: np.dtype("<f8"),
    12: np.dtype("<u4"), 13: np.dtype("<u8"), 16: np.dtype("<u2"),  # bfloat16: upper halves of float32
})
#: the integer element types, (u)int8..64 (not bool; not bfloat16, which DTYPES holds as uint16)
INT_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})


def declared_values(a: np.ndarray, code: int) -> tuple[np.ndarray, str | None]:
    """A float blob fed to an input the model declares of element type ``code``, as the values
    that input can hold: integers rounded toward zero (as a C cast, NumPy's ``astype``), bool as
    ``!= 0``, float16 / bfloat16 rounded to that type (nearest, ties to even); the dtype kept.
    Returns (values, the type's name) where they are rounded, else (``a``, None)."""
    if code in INT_TYPES or code == 9:
        with np.errstate(invalid="ignore"):
            return ((a != 0) if code == 9 else np.trunc(a)).astype(a.dtype, copy=False), DTYPES[code].name
    if code in (10, 16):
        from refnet.ops.elementwise import round_bfloat16

        with np.errstate(over="ignore"):
            return ((a.astype(np.float16) if code == 10 else round_bfloat16(a)).astype(a.dtype, copy=False),
                    "float16" if code == 10 else "bfloat16")
    return a, None


DTYPE_NAMES: Mapping[int, str] = MappingProxyType({
    0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
    15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
})
#: AttributeProto.AttributeType
ATTR_TYPES: Mapping[int, str] = MappingProxyType({
    0: "UNDEFINED", 1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS", 7: "INTS",
    8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR", 12: "SPARSE_TENSORS", 13: "TYPE_PROTO",
    14: "TYPE_PROTOS",
})
