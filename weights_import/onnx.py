"""ONNX reader: ``.onnx`` bytes -> refnet Graph, with refnet's own bounded protobuf reader.

Phases: read the file (bounded), decode the ModelProto subset of ``onnx_schema`` with
:func:`refnet.weights_import.protobuf.decode_message`, turn initializers and Constant nodes
into arrays (raw_data or typed fields, every numeric dtype, external data next to the file),
then walk the nodes in order. A node whose inputs are all known constants (initializers,
Constant, or tensor shapes once the input shapes are fixed) is folded at load by
``weights_import/onnx_fold.py``; every other node becomes IR nodes through the op table of
``weights_import/onnx_ops.py``, opset-aware. Shapes are inferred as nodes are emitted (the IR's
own shape functions), so Shape/Gather/Concat/Reshape subgraphs fold for the given or
declared input shapes.

Names: an IR layer is named like its ONNX node, or like the node's first output tensor when
the node has no name; output ``i`` of a layer is ``"<layer>:<i>"``. ``graph.meta["tensors"]``
maps every ONNX tensor name that exists at run time to its IR tensor name, so
``net.forward(x, outputs=[onnx_tensor_name])`` works.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refnet.errors import ModelFormatError, RefnetError, ShapeError, UnsupportedLayerError
from refnet.graph import Graph, Node, output_name
from refnet.weights_import import onnx_schema as S
from refnet.weights_import.protobuf import Message, Reader, decode_message

__all__ = ["read_onnx", "parse_model", "tensor_array", "MAX_FILE_BYTES", "MAX_TENSOR_ELEMENTS", "MAX_OPSET",
           "declared_input_dims"]

#: refuse model files (and external-data files) larger than this
MAX_FILE_BYTES = 1 << 33
#: refuse any single tensor with more elements than this (2**31 - 1, as cv2/protobuf limit)
MAX_TENSOR_ELEMENTS = (1 << 31) - 1
#: refuse graphs with more nodes than this
MAX_NODES = 1 << 20
#: the constants computed at load (folds) may hold this many bytes in all, or twice the file's
#: size when that is larger (each alone is at most onnx_ops.MAX_FOLDED elements): the loader's
#: bound of max(256 MiB, 4x the file) with the file's bytes and its initializers
MAX_FOLDED_BYTES = 256 << 20
#: the newest ai.onnx opset refnet reads (onnx 1.23's); a newer one may change an op's rules
MAX_OPSET = 28


# ---- bytes -> ModelProto ----------------------------------------------------------------------
def parse_model(data: bytes, file: str = "<onnx>") -> Message:
    """Decode a serialized ModelProto (bounded: every length checked before use)."""
    return decode_message(Reader(data, file=file), S.MESSAGES["ModelProto"], messages=S.MESSAGES,
                          enums=S.ENUMS)


def _read_file(path: str | os.PathLike, label: str) -> bytes:
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise ModelFormatError(f"file of {size} bytes is larger than refnet reads ({MAX_FILE_BYTES})",
                                       file=label, offset=0, expected=f"at most {MAX_FILE_BYTES} bytes")
            return f.readall()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ModelFormatError("is a directory, not an ONNX file", file=label, offset=0,
                               expected="an .onnx file") from None
    except OSError as e:
        raise ModelFormatError(f"cannot read the file: {e.strerror or e}", file=label, offset=0,
                               expected="a readable file") from None


# ---- TensorProto -> numpy ---------------------------------------------------------------------
def _external_bytes(t: Message, base: Path | None, file: str, name: str, nbytes: int, held: int = 0) -> bytes:
    """The bytes of an external-data tensor: a file beside the model (no absolute path, no way
    out of the model's folder), ``offset``/``length`` checked against the file's size, and the
    bytes read and their array (twice ``nbytes``) with the ``held`` bytes of external data read
    before checked against the memory budget (BudgetError) before reading: a sparse file of
    8 GB is a few bytes on disk."""
    info = {e.get("key"): e.get("value") for e in t.get("external_data")}
    loc = info.get("location")
    if not loc or base is None:
        raise t.error(f"tensor {name!r} has external data without a location (or the model was not read "
                      "from a file)", expected="external_data with key 'location' next to the model file")
    rel = Path(loc)
    if rel.is_absolute() or ".." in rel.parts or "\x00" in loc:
        raise t.error(f"tensor {name!r}: external data location {loc!r} leaves the model's folder",
                      expected="a relative path inside the model's folder")
    path = (base / rel).resolve()
    try:
        path.relative_to(base.resolve())
    except ValueError:
        raise t.error(f"tensor {name!r}: external data location {loc!r} resolves outside the model's folder",
                      expected="a relative path inside the model's folder") from None
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise t.error(f"tensor {name!r}: external data offset/length are not integers",
                      expected="decimal offset and length") from None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if length is None:
                length = nbytes
            if offset < 0 or length < 0 or offset + length > size:
                raise t.error(f"tensor {name!r}: external data [{offset}, {offset + length}) is outside "
                              f"{loc!r} ({size} bytes)", expected="offset + length within the file")
            if length != nbytes:
                raise t.error(f"tensor {name!r}: external data has {length} bytes, dims need {nbytes}",
                              expected=f"{nbytes} bytes")
            from refnet.runtime.budget import check_memory

            check_memory(held + 2 * nbytes, f"the external data of tensor {name!r} ({nbytes:,} bytes"
                         + (f", after {held:,} bytes of other tensors)" if held else ")"))
            f.seek(offset)
            data = f.read(length)
    except OSError as e:
        raise t.error(f"tensor {name!r}: cannot read external data {loc!r}: {e.strerror or e}",
                      expected="a readable file next to the model") from None
    if len(data) != length:
        raise t.error(f"tensor {name!r}: external data {loc!r} is truncated", expected=f"{length} bytes")
    return data


def tensor_array(t: Message, base: Path | None = None, what: str = "tensor", held: int = 0) -> np.ndarray:
    """A TensorProto as a numpy array (its own dtype; float16/bfloat16 widened to float32).

    Data come from ``raw_data`` (little-endian), the typed repeated field the ONNX spec assigns
    to the type (``float_data``; ``int32_data`` for int8/16/32, uint8/16, bool, float16,
    bfloat16; ``int64_data``; ``double_data``; ``uint64_data`` for uint32/64), or external
    data (``held``: bytes of external data already read for the model, for the memory budget).
    The element count must match the dims exactly."""
    name = t.get("name") or what
    dims = [int(d) for d in t.get("dims")]
    if any(d < 0 for d in dims):
        raise t.error(f"{what} {name!r} has negative dims {dims}", "dims", expected="dims >= 0")
    n = 1
    for d in dims:
        n *= d
        if n > MAX_TENSOR_ELEMENTS:
            raise t.error(f"{what} {name!r} has more than {MAX_TENSOR_ELEMENTS} elements (dims {dims})",
                          "dims", expected="a smaller tensor")
    code = int(t.get("data_type") or 0)
    dt = S.DTYPES.get(code)
    if dt is None:
        raise t.error(f"{what} {name!r} has data type {S.DTYPE_NAMES.get(code, code)}, which refnet does not read",
                      "data_type", expected="a numeric type (float, double, float16, bfloat16, (u)int8-64, bool)")
    if int(t.get("data_location") or 0) == 1:
        arr = np.frombuffer(_external_bytes(t, base, t.file, name, n * dt.itemsize, held), dt)
    elif t.has("raw_data"):
        raw = t.get("raw_data")
        if len(raw) != n * dt.itemsize:
            raise t.error(f"{what} {name!r}: raw_data has {len(raw)} bytes, dims {dims} x {dt.itemsize} need "
                          f"{n * dt.itemsize}", "raw_data", expected=f"{n * dt.itemsize} bytes")
        arr = np.frombuffer(raw, dt)
    else:
        if code == 1:
            vals = np.asarray(t.get("float_data"), np.float32)
        elif code == 11:
            vals = np.asarray(t.get("double_data"), np.float64)
        elif code == 7:
            vals = np.asarray(t.get("int64_data"), np.int64)
        elif code in (12, 13):
            vals = np.asarray(t.get("uint64_data"), np.uint64)
        else:
            vals = np.asarray(t.get("int32_data"), np.int64)
        if vals.size != n:
            raise t.error(f"{what} {name!r} has {vals.size} values for dims {dims} ({n} elements)",
                          expected=f"{n} values")
        if code in (10, 16):  # float16/bfloat16 bits stored in int32_data
            arr = (vals & 0xFFFF).astype(np.uint16).view(np.float16 if code == 10 else np.uint16)
        elif code == 9:
            arr = vals != 0
        else:
            with np.errstate(over="ignore"):
                arr = vals.astype(dt, casting="unsafe")
    if code == 16:  # bfloat16: the upper 16 bits of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    elif code == 10:
        arr = arr.astype(np.float32)
    return np.array(arr.reshape(dims), dtype=arr.dtype.newbyteorder("="))


# ---- attributes ---------------------------------------------------------------------------------
def _attributes(node: Message, layer: str, base: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.get("attribute"):
        name = a.get("name") or ""
        kind = int(a.get("type") or 0)
        if a.get("ref_attr_name"):
            raise a.error(f"attribute {name!r} refers to a function attribute, which only functions may",
                          layer=layer, expected="a plain attribute value")
        if kind == 0:  # old files leave type unset: infer it from the field present
            kind = next((k for k, f in ((1, "f"), (2, "i"), (3, "s"), (4, "t"), (5, "g"), (6, "floats"),
                                         (7, "ints"), (8, "strings"), (9, "tensors"), (10, "graphs"))
                         if a.has(f)), 0)
        if kind == 1:
            v: Any = float(a.get("f") or 0.0)
        elif kind == 2:
            v = int(a.get("i") or 0)
        elif kind == 3:
            v = _text(a, a.get("s") or b"", layer)
        elif kind == 4:
            if not a.has("t"):
                raise a.error(f"tensor attribute {name!r} has no tensor", layer=layer, expected="field t")
            v = tensor_array(a.get("t"), base, f"attribute {name!r} tensor")
        elif kind == 6:
            v = tuple(float(x) for x in a.get("floats"))
        elif kind == 7:
            v = tuple(int(x) for x in a.get("ints"))
        elif kind == 8:
            v = tuple(_text(a, s, layer) for s in a.get("strings"))
        elif kind in (5, 10):
            v = _GraphAttr(name)
        else:
            raise a.error(f"attribute {name!r} has type {S.ATTR_TYPES.get(kind, kind)}, which refnet does not read",
                          "type", layer=layer, expected="FLOAT, INT, STRING, TENSOR, FLOATS, INTS or STRINGS")
        out[name] = v
    return out


class _GraphAttr:
    """A subgraph attribute (If/Loop/Scan bodies): kept as a marker; no supported op takes one."""

    def __init__(self, name: str) -> None:
        self.name = name


def _text(msg: Message, raw: bytes, layer: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise msg.error("string attribute is not valid UTF-8", layer=layer, expected="UTF-8 text") from None


# ---- value info ---------------------------------------------------------------------------------
def _declared_shape(vi: Message) -> tuple[tuple[int | str | None, ...] | None, int]:
    """(dims, elem_type) of a ValueInfoProto; a dim is an int, a dim_param string or None."""
    ty = vi.get("type")
    if ty is None or not ty.has("tensor_type"):
        return None, 0
    tt = ty.get("tensor_type")
    elem = int(tt.get("elem_type") or 0)
    if not tt.has("shape"):
        return None, elem
    dims: list[int | str | None] = []
    for d in tt.get("shape").get("dim"):
        if d.has("dim_value"):
            dims.append(int(d.get("dim_value")))
        elif d.get("dim_param"):
            dims.append(str(d.get("dim_param")))
        else:
            dims.append(None)
    return tuple(dims), elem


# ---- the builder ---------------------------------------------------------------------------------
class Builder:
    """State of one import: constants, runtime tensors with their shapes, emitted IR nodes."""

    def __init__(self, file: str, opset: int, quirks: str, fold_limit: int = MAX_FOLDED_BYTES) -> None:
        self.file = file
        #: bytes the folded constants may hold in all (:data:`MAX_FOLDED_BYTES`), and hold so far
        self.fold_limit = fold_limit
        self.folded = 0
        self.opset = opset
        self.quirks = quirks
        self.consts: dict[str, np.ndarray] = {}
        self.tensor: dict[str, str] = {}  # ONNX tensor name -> IR tensor name (runtime tensors)
        self.shape: dict[str, tuple[int, ...]] = {}  # IR tensor -> shape
        self.nodes: list[Node] = []
        self.layers: list[str] = []
        self.used: set[str] = set()
        self.const_nodes: dict[int, str] = {}
        #: ONNX tensors computed at run time whose ONNX type is an integer type (refnet carries them as
        #: integer-valued floats; Div and Mod need to know): graph inputs, index outputs, casts, and
        #: what ops that keep their input type make of them (onnx_ops.convert_node)
        self.ints: set[str] = set()
        #: ONNX tensors of type float16 (10) or bfloat16 (16), which refnet holds as float32: CastLike to
        #: one of them rounds to its values (initializers, graph inputs, Cast / CastLike outputs)
        self.halfs: dict[str, int] = {}

    # names ------------------------------------------------------------------------------------------
    def fresh(self, want: str) -> str:
        name = want or "node"
        k = 1
        while name in self.used or any(f"{name}:{i}" in self.used for i in range(1, 4)):
            name = f"{want}_{k}"
            k += 1
        self.used.add(name)
        return name

    # values ------------------------------------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.consts

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        return self.shape[self.tensor[name]]

    def rt(self, name: str) -> str:
        """The IR tensor of ONNX tensor ``name``, materialising a constant as a `constant` layer."""
        if name in self.tensor:
            return self.tensor[name]
        v = self.consts[name]
        key = id(v)
        if key not in self.const_nodes:
            out = self.emit("constant", [], name=f"{name}", params={"value": np.asarray(v)}, layer=False)[0]
            self.const_nodes[key] = out
        return self.const_nodes[key]

    def emit(self, op: str, inputs: Sequence[str], *, name: str, n_out: int = 1,
             attrs: Mapping[str, Any] | None = None, params: Mapping[str, np.ndarray] | None = None,
             layer: bool = True) -> list[str]:
        """Append an IR node (its output shapes inferred now) and return its output tensors."""
        from refnet.ops import registry

        lname = self.fresh(name)
        outs = [output_name(lname, i) for i in range(n_out)]
        self.used.update(outs)
        node = Node(lname, op, tuple(inputs), tuple(outs), attrs or {}, params or {})
        spec = registry.get(op, lname)
        shapes = [self.shape[t] for t in inputs]
        try:
            got = spec.shape(node, shapes)
        except ShapeError as e:
            raise e.with_context(layer=lname) from e
        except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError) as e:
            raise ShapeError(f"cannot infer the output shape: {e}", layer=lname, got=shapes) from e
        for t, s in zip(outs, got):
            s = tuple(int(d) for d in s)
            if math.prod(max(d, 0) for d in s) > MAX_TENSOR_ELEMENTS:
                raise ShapeError(f"output has more than {MAX_TENSOR_ELEMENTS} elements", layer=lname, got=s)
            self.shape[t] = s
        self.nodes.append(node)
        if layer:
            self.layers.append(lname)
        return outs


def _opset(model: Message) -> int:
    version = None
    for o in model.get("opset_import"):
        if (o.get("domain") or "") in ("", "ai.onnx"):
            version = int(o.get("version") or 0)
    if version is None:
        version = 1 if not model.get("opset_import") else None
    if version is None:
        raise model.error("no opset import for the default ONNX domain", "opset_import",
                          expected="an OperatorSetIdProto with domain '' (ai.onnx)")
    if not 1 <= version <= MAX_OPSET:
        raise model.error(f"opset version {version} is out of range: refnet reads the ai.onnx opsets released "
                          f"so far (an op's rules may change in a newer one)", "opset_import",
                          expected=f"1 .. {MAX_OPSET}")
    return version


def _input_shapes(graph: Message, consts: Mapping[str, np.ndarray], given: Mapping[str, Sequence[int]] | None,
                  file: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    given = dict(given or {})
    names = []
    for vi in graph.get("input"):
        name = vi.get("name") or ""
        if name in consts:
            continue  # an initializer with a default value: a constant for refnet (as in cv2)
        if name in shapes or name in names:
            raise vi.error(f"graph input {name!r} is declared twice", expected="distinct input names")
        names.append(name)
        dims, elem = _declared_shape(vi)
        if name in given:
            shp = tuple(int(d) for d in given.pop(name))
            if dims is not None and len(dims) != len(shp):
                raise ShapeError(f"input {name!r} is declared with rank {len(dims)}", expected=dims, got=shp)
            if dims is not None and any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, shp)):
                raise ShapeError(f"input {name!r} is declared with other fixed dims", expected=dims, got=shp)
        else:
            if dims is None or any(not isinstance(d, int) or d < 0 for d in dims):
                raise ShapeError(f"input {name!r} has no fixed shape in the file (dims {dims}); pass "
                                 f"input_shapes={{{name!r}: (...)}}", expected="fixed dims", got=dims)
            shp = tuple(int(d) for d in dims)
        if any(d < 0 for d in shp) or math.prod(shp) > MAX_TENSOR_ELEMENTS:
            raise ShapeError(f"input {name!r} shape {shp} is negative or too large",
                             expected=f"dims >= 0 and at most {MAX_TENSOR_ELEMENTS} elements", got=shp)
        shapes[name] = shp
    if given:
        raise ShapeError(f"input_shapes names {sorted(given)}, which are not graph inputs",
                         expected=names, got=sorted(given))
    return shapes


def declared_input_dims(path: str | os.PathLike) -> tuple[int | str | None, ...] | None:
    """The declared dims of the file's first run-time graph input (an int, a ``dim_param``
    string or None each), None when it declares none; refnet errors as :func:`read_onnx`."""
    return next(iter(declared_inputs(path).values()), None)


def declared_inputs(path: str | os.PathLike) -> dict[str, tuple[int | str | None, ...] | None]:
    """The file's run-time graph inputs (initializers excluded) with their declared dims (an int,
    a ``dim_param`` string or None each; None without a shape), in order; refnet errors as
    :func:`read_onnx`."""
    file = str(path)
    graph = parse_model(_read_file(path, file), file).get("graph")
    if graph is None:
        return {}
    inits = {t.get("name") or "" for t in graph.get("initializer")}
    return {vi.get("name") or "": _declared_shape(vi)[0] for vi in graph.get("input")
            if (vi.get("name") or "") not in inits}


def read_onnx(path: str | os.PathLike | None = None, *, data: bytes | None = None, quirks: str = "none",
              input_shapes: Mapping[str, Sequence[int]] | Sequence[int] | None = None) -> Graph:
    """Read an ONNX model (a file, or ``data`` bytes) into a refnet Graph for fixed input shapes."""
    file = str(path) if path is not None else "<bytes>"
    if data is None:
        if path is None:
            raise ValueError("read_onnx needs a path or data")
        data = _read_file(path, file)
    base = Path(path).parent if path is not None else None
    model = parse_model(data, file)
    try:
        return _build(model, file, base, quirks, input_shapes, max(MAX_FOLDED_BYTES, 2 * len(data)))
    except RecursionError:
        raise ModelFormatError("the graph nests too deeply", file=file, offset=0,
                               expected="shallower nesting") from None


def _read_initializers(graph: Message, b: Builder, base: Path | None) -> None:
    """The graph's initializers into ``b.consts`` (external data counted against the memory budget
    with what was read before it), float16/bfloat16 ones noted in ``b.halfs``."""
    held = 0  # bytes of external data read so far
    for t in graph.get("initializer"):
        name = t.get("name") or ""
        b.consts[name] = tensor_array(t, base, "initializer", held)
        if int(t.get("data_location") or 0) == 1:
            held += b.consts[name].nbytes
        if int(t.get("data_type") or 0) in (10, 16):
            b.halfs[name] = int(t.get("data_type"))


def _build(model: Message, file: str, base: Path | None, quirks: str, input_shapes: Any,
           fold_limit: int = MAX_FOLDED_BYTES) -> Graph:
    from refnet.weights_import.onnx_ops import convert_node

    if not model.has("graph"):
        raise model.error("the model has no graph", "graph", expected="ModelProto.graph")
    graph = model.get("graph")
    opset = _opset(model)
    b = Builder(file, opset, quirks, fold_limit)
    _read_initializers(graph, b, base)
    if graph.get("sparse_initializer"):
        raise graph.error("sparse initializers are not supported", "sparse_initializer",
                          expected="dense initializers")
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        runtime = [vi.get("name") for vi in graph.get("input") if vi.get("name") not in b.consts]
        if len(runtime) != 1:
            raise ShapeError(f"the model has inputs {runtime}; pass input_shapes as a dict")
        input_shapes = {runtime[0]: input_shapes}
    shapes = _input_shapes(graph, b.consts, input_shapes, file)
    for vi in graph.get("input"):
        if (vi.get("name") or "") in shapes and _declared_shape(vi)[1] in S.INT_TYPES:
            b.ints.add(vi.get("name") or "")
        if (vi.get("name") or "") in shapes and _declared_shape(vi)[1] in (10, 16):
            b.halfs[vi.get("name") or ""] = _declared_shape(vi)[1]
    for name, shp in shapes.items():
        b.used.add(name)
        b.tensor[name] = name
        b.shape[name] = shp
    nodes = graph.get("node")
    if len(nodes) > MAX_NODES:
        raise graph.error(f"{len(nodes)} nodes is more than refnet reads ({MAX_NODES})", "node",
                          expected=f"at most {MAX_NODES} nodes")
    for nd in nodes:
        op = nd.get("op_type") or ""
        outs = list(nd.get("output"))
        layer = nd.get("name") or (next((o for o in outs if o), "") or op)
        domain = nd.get("domain") or ""
        if not op:
            raise nd.error("node has no op_type", layer=layer, expected="NodeProto.op_type")
        attrs = _attributes(nd, layer, base)
        ins = list(nd.get("input"))
        for t in ins:
            if t and t not in b.consts and t not in b.tensor:
                raise nd.error(f"input tensor {t!r} is not produced by an earlier node, an initializer or a "
                               "graph input", layer=layer, expected="nodes in topological order")
        for t in outs:
            if t and (t in b.consts or t in b.tensor):
                raise nd.error(f"tensor {t!r} is produced twice", layer=layer, expected="one producer per tensor")
        if domain not in ("", "ai.onnx"):
            from refnet.weights_import.onnx_ops import known_ops

            raise UnsupportedLayerError(layer, f"{domain}.{op}", known_ops(), file=file,
                                        detail="only the default ONNX domain is supported")
        try:
            with np.errstate(all="ignore"):  # hostile constants (NaN casts, overflow) fold silently
                convert_node(b, op, layer, ins, outs, attrs)
        except (RefnetError, RecursionError):
            raise
        except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError,
                MemoryError) as e:
            raise ModelFormatError(f"{op}: {type(e).__name__}: {e}", file=file, offset=nd.pos(),
                                   layer=layer, expected="attributes and inputs the ONNX spec allows") from None
    outputs = []
    for vi in graph.get("output"):
        name = vi.get("name") or ""
        if name not in b.tensor and name not in b.consts:
            raise vi.error(f"graph output {name!r} is not produced by any node", expected="a produced tensor")
        outputs.append(b.rt(name))
    tensors = {k: v for k, v in b.tensor.items()}
    for k, v in b.consts.items():
        if id(v) in b.const_nodes:
            tensors.setdefault(k, b.const_nodes[id(v)])
    return Graph(tuple(b.nodes), tuple(shapes), shapes, layer_names=tuple(b.layers) or (),
                 output_names=tuple(dict.fromkeys(outputs)), framework="onnx", source=file,
                 meta={"tensors": tensors, "opset": opset, "quirks": [], "quirks_mode": quirks,
                       "input_types": {vi.get("name") or "": _declared_shape(vi)[1] for vi in graph.get("input")
                                       if (vi.get("name") or "") in shapes},
                       "onnx_outputs": tuple(vi.get("name") or "" for vi in graph.get("output")),
                       "producer": f"{model.get('producer_name') or ''} {model.get('producer_version') or ''}".strip()})
