"""ONNX node conformance: run refnet on onnx's own node test cases (regenerated from the
installed onnx package's case generators) and check against the cases' stored expected outputs.

The oracle is each case's expected output (computed by the case's own NumPy code in
``onnx.backend.test.case.node``), not ``onnx.reference.ReferenceEvaluator``, which is wrong for
old opsets. A case is *CNN-relevant* when its op (the op of the un-expanded case) is in
:data:`CNN_OPS` and every graph input and output is a float or int64 tensor whose first input
is float. Every input but the first is bound as an initializer (refnet builds a static graph:
weights, shapes, scales are constants, as in the models exporters write); the first input is
fed at run time. Tolerances are the case's own (rtol 1e-3, atol 1e-7 by default).

Run as a script to print the per-op table (markdown) and the failures:
    .venv/bin/python tests/onnx_reader/conformance.py [--extended | --index] [--json out.json]
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CNN_OPS = frozenset("""
Conv ConvTranspose MaxPool AveragePool GlobalMaxPool GlobalAveragePool BatchNormalization InstanceNormalization
LRN LpNormalization Gemm MatMul Relu LeakyRelu PRelu Clip Elu Selu HardSigmoid HardSwish Sigmoid Tanh Softplus
Mish Softmax LogSoftmax Add Sub Mul Div Pow Sqrt Exp Log Max Min Sum Concat Split Slice Transpose Reshape Flatten
Squeeze Unsqueeze Pad Resize Upsample DepthToSpace SpaceToDepth MaxUnpool ReduceMean ReduceMax ReduceSum ArgMax
TopK NonMaxSuppression RoiAlign LayerNormalization Identity Dropout Constant Shape Gather Cast ConstantOfShape
""".split())

#: further ops refnet reads that CNN graphs (or exporters around them) use; reported separately
EXTENDED_OPS = frozenset("""
Abs Neg Reciprocal Floor Ceil Round Sign Erf Softsign Celu ThresholdedRelu Hardmax Mean ArgMin LpPool Expand Tile
Where Equal Greater Less GreaterOrEqual LessOrEqual Not And Or Xor Size Range ReduceMin ReduceProd ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceSumSquare Gelu
""".split())

#: the run-time index ops refnet's converter writes (SSD's DetectionOutput, ENet's max unpooling, YOLO
#: heads with in-layer NMS) and its reader runs on tensors computed at run time; reported separately
INDEX_OPS = frozenset("GatherElements GatherND Mod Scatter ScatterElements ScatterND".split())

#: every case refnet fails (either precision), with its cause; docs/onnx-conformance.md lists them
KNOWN_FAILURES = {
    "test_batchnorm_epsilon_training_mode": "training_mode=1 asks for batch statistics and running-mean outputs; "
                                            "refnet's BatchNormalization is inference-only by design",
    "test_batchnorm_example_training_mode": "as test_batchnorm_epsilon_training_mode",
    "test_training_dropout": "training_mode=1 with ratio > 0: random dropout (the expected output depends on "
                             "numpy's random stream); refnet runs inference only",
    "test_training_dropout_default": "as test_training_dropout",
    "test_training_dropout_default_mask": "as test_training_dropout",
    "test_training_dropout_mask": "as test_training_dropout",
    "test_convtranspose_3d": "3-D spatial ConvTranspose: refnet's conv kernels are 1-D/2-D",
    "test_range_float_type_positive_delta": "Range on a run-time input (its start is fed at run time here): refnet "
                                            "folds Range only on constants (static graph)",
    "test_range_float_type_positive_delta_expanded": "the expansion uses Loop (control flow is not supported)",
}

FLOAT_TYPES = {1, 11}  # FLOAT, DOUBLE
OK_TYPES = {1, 11, 7, 9}  # + INT64 (indices, shapes), BOOL (masks)


@dataclass
class Result:
    name: str
    op: str
    status: str  # "pass" | "fail"
    cause: str = ""


def _op_of(case) -> str:
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    base = re.sub(r"_expanded.*$", "", case.name)
    return _BASE_OPS.get(base, nodes[-1].op_type if nodes else "?")


_BASE_OPS: dict[str, str] = {}


def cnn_cases(ops: frozenset[str] = CNN_OPS) -> list:
    """The node test cases of the installed onnx for ``ops`` with float I/O (regenerated, ~5-8 s)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cases = collect_testcases(None)
    for c in cases:
        if len(c.model.graph.node) == 1:
            _BASE_OPS[c.name] = c.model.graph.node[0].op_type
    out = []
    for c in cases:
        if c.kind != "node" or not c.data_sets:
            continue
        op = _op_of(c)
        if op not in ops:
            continue
        g = c.model.graph
        types = [vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
                 for vi in list(g.input) + list(g.output)]
        if not g.input or not types or any(t not in OK_TYPES for t in types):
            continue
        if g.input[0].type.tensor_type.elem_type not in FLOAT_TYPES:
            continue
        ins, outs = c.data_sets[0]
        if not all(isinstance(a, (np.ndarray, np.generic)) and np.asarray(a).dtype.kind in "fiub"
                   for a in list(ins) + list(outs)):
            continue
        out.append(c)
    return sorted(out, key=lambda c: c.name)


def _bound_model(case, inputs: list[np.ndarray]) -> bytes:
    """The case's model with every input but the first moved into the initializers."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    g = m.graph
    names = [vi.name for vi in g.input]
    for name, value in list(zip(names, inputs))[1:]:
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    keep = [vi for vi in g.input if vi.name == names[0]]
    del g.input[:]
    g.input.extend(keep)
    return m.SerializeToString()


def run_case(case, precision: str) -> Result:
    import refnet
    from refnet.errors import RefnetError, UnsupportedLayerError

    op = _op_of(case)
    inputs, expected = case.data_sets[0]
    g = case.model.graph
    first = g.input[0].name
    out_names = [vi.name for vi in g.output]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        with open(path, "wb") as f:
            f.write(_bound_model(case, inputs))
        x0 = np.asarray(inputs[0])
        try:
            net = refnet.load_onnx(path, input_shapes={first: x0.shape})
            with np.errstate(all="ignore"):
                got = net.forward({first: x0}, outputs=out_names, precision=precision)
        except UnsupportedLayerError as e:
            return Result(case.name, op, "fail", f"unsupported: {str(e).split('; supported')[0][-160:]}")
        except RefnetError as e:
            return Result(case.name, op, "fail", f"refused: {type(e).__name__}: {str(e)[-160:]}")
        except Exception as e:  # noqa: BLE001 - a harness: every other failure is recorded with its type
            return Result(case.name, op, "fail", f"error: {type(e).__name__}: {str(e)[-160:]}")
    cause = judge(case, out_names, got, expected)
    return Result(case.name, op, "fail", cause) if cause else Result(case.name, op, "pass")


def tolerance(case) -> tuple[float, float]:
    """The case's (rtol, atol): onnx's backend test runner defaults, 1e-3 and 1e-7."""
    return getattr(case, "rtol", 1e-3) or 1e-3, getattr(case, "atol", 1e-7) or 1e-7


def judge(case, out_names: list[str], got: dict, expected: list) -> str:
    """The pass rule, the same for every backend: each output has the expected shape and is
    ``allclose`` to the case's expected value (case tolerance, NaN equals NaN). Returns "" on
    a pass, else the cause ("missing output", "wrong shape ...", "wrong values ...")."""
    rtol, atol = tolerance(case)
    for name, ref in zip(out_names, expected):
        if name not in got:
            return f"missing output {name}"
        a = np.asarray(got[name]).astype(np.float64)
        r = np.asarray(ref).astype(np.float64)
        if a.shape != r.shape:
            return f"wrong shape for {name}: {a.shape} vs {r.shape}"
        if not np.allclose(a, r, rtol=rtol, atol=atol, equal_nan=True):
            with np.errstate(all="ignore"):
                err = np.max(np.abs(a - r) / (atol + rtol * np.abs(r)), initial=0.0, where=np.isfinite(r))
            return f"wrong values for {name} ({err:.3g} x tolerance)"
    return ""


def run_all(precisions: tuple[str, ...] = ("float64", "float32"), ops: frozenset[str] = CNN_OPS
            ) -> dict[str, list[Result]]:
    cases = cnn_cases(ops)
    return {p: [run_case(c, p) for c in cases] for p in precisions}


def table(results: dict[str, list[Result]]) -> str:
    per: dict[str, dict[str, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
    for p, rs in results.items():
        for r in rs:
            per[r.op][p][1] += 1
            per[r.op][p][0] += r.status == "pass"
    ps = list(results)
    lines = ["| op | " + " | ".join(ps) + " |", "|---|" + "---|" * len(ps)]
    for op in sorted(per):
        lines.append(f"| {op} | " + " | ".join(f"{per[op][p][0]}/{per[op][p][1]}" for p in ps) + " |")
    tot = [(sum(r.status == "pass" for r in results[p]), len(results[p])) for p in ps]
    lines.append("| **all** | " + " | ".join(f"**{a}/{b}**" for a, b in tot) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run_all(ops=EXTENDED_OPS if "--extended" in sys.argv else INDEX_OPS if "--index" in sys.argv else CNN_OPS)
    print(table(res))
    for p, rs in res.items():
        for r in rs:
            if r.status != "pass":
                print(f"{p}\t{r.name}\t{r.cause}")
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(
            {p: [r.__dict__ for r in rs] for p, rs in res.items()}, indent=1))
