"""ONNX ops on run-time index tensors, as refnet's own converter writes them (SSD DetectionOutput:
TopK indices into GatherElements, NonMaxSuppression's rows into GatherND/Gather, a TopK whose k
is a Shape; Torch max pooling with indices: Mod and Div of int64 indices): GatherElements,
ScatterElements, Mod, integer Div, GatherND, Gather/TopK/Pad/Shape on run-time values.

Oracles: values worked out by hand (plain Python integer arithmetic or typed in), onnxruntime
(ORT_DISABLE_ALL), and the onnx package's own node test cases (their stored outputs) -- never
refnet's own output."""

from __future__ import annotations

import math
import os
import tempfile
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as H  # noqa: E402
from onnx import numpy_helper as NH  # noqa: E402
from test_onnx_reader import _ort, _save, _vi  # noqa: E402 (the same file builders)

import refnet  # noqa: E402
from refnet.errors import ModelFormatError, ShapeError  # noqa: E402

PRECISIONS = ("float64", "float32")


def _refnet(path, feeds, precision, outputs=None):
    """refnet on ``feeds`` (refnet carries every tensor as floats in the run precision)."""
    net = refnet.load_onnx(path, input_shapes={k: v.shape for k, v in feeds.items()})
    got = net.forward({k: np.asarray(v, np.float64) for k, v in feeds.items()}, precision=precision,
                      outputs=outputs or list(net.graph.meta["onnx_outputs"]))
    return [got[k] for k in (outputs or net.graph.meta["onnx_outputs"])]


def _gather_elements_by_hand(data: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """out[i...] = data[i... with i[axis] replaced by idx[i...]], element by element in Python."""
    out = np.empty(idx.shape, data.dtype)
    for pos in np.ndindex(*idx.shape):
        j = int(idx[pos])
        j = j + data.shape[axis] if j < 0 else j
        src = list(pos)
        src[axis] = j
        out[pos] = data[tuple(src)]
    return out


# ---- GatherElements ----------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_gather_elements_run_time_indices_on_each_axis(tmp_path, opset, axis, precision):
    rng = np.random.default_rng(axis + 10 * opset)
    data = rng.standard_normal((3, 4, 5)).astype(np.float32)
    ishape = [2, 3, 4]  # smaller than the data off the axis (allowed), 6 long along it
    a = axis % 3
    ishape[a] = 6
    d = data.shape[a]
    idx = rng.integers(-d, d, ishape).astype(np.int64)  # negative indices count from the end
    p = _save(tmp_path, [H.make_node("GatherElements", ["x", "i"], ["y"], axis=axis)],
              [_vi("x", list(data.shape)), _vi("i", ishape, TP.INT64)], [_vi("y", None)], opset=opset)
    got = _refnet(p, {"x": data, "i": idx}, precision)[0]
    want = _gather_elements_by_hand(data, idx, a)
    assert got.shape == tuple(ishape)
    np.testing.assert_array_equal(got, want)  # a pure copy: exact in both precisions
    np.testing.assert_array_equal(got, _ort(p, {"x": data, "i": idx})[0])


@pytest.mark.parametrize("const_indices", [False, True])
def test_gather_elements_negative_indices_hand_values(tmp_path, const_indices):
    data = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)
    idx = np.array([[-1, -2, 0], [-2, 0, 0]], np.int64)
    inits = [NH.from_array(idx, "i")] if const_indices else []
    inputs = [_vi("x", [3, 3])] + ([] if const_indices else [_vi("i", [2, 3], TP.INT64)])
    p = _save(tmp_path, [H.make_node("GatherElements", ["x", "i"], ["y"], axis=0)], inputs, [_vi("y", None)], inits)
    feeds = {"x": data} if const_indices else {"x": data, "i": idx}
    want = np.array([[7, 5, 3], [4, 2, 3]], np.float32)  # rows -1 = 2, -2 = 1, 0 per column
    for precision in PRECISIONS:
        np.testing.assert_array_equal(_refnet(p, feeds, precision)[0], want)
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)


def test_gather_elements_all_constant_folds(tmp_path):
    data = NH.from_array(np.array([[1, 2], [3, 4]], np.int64), "d")
    idx = NH.from_array(np.array([[0, 0], [1, 0]], np.int64), "i")
    nodes = [H.make_node("GatherElements", ["d", "i"], ["g"], axis=1), H.make_node("Cast", ["g"], ["gf"], to=1),
             H.make_node("Add", ["x", "gf"], ["y"])]
    p = _save(tmp_path, nodes, [_vi("x", [2, 2])], [_vi("y", None)], [data, idx])
    net = refnet.load_onnx(p)
    assert [n.op for n in net.graph.nodes if n.op != "constant"] == ["add"]  # the gather folded at load
    y = net.forward(np.zeros((2, 2)), precision="float64")["y"]
    np.testing.assert_array_equal(y, [[1, 1], [4, 3]])


def test_gather_elements_bad_indices_are_refused(tmp_path):
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    big = NH.from_array(np.array([[0, 3, 0]], np.int64), "i")  # 3 is outside an axis of size 3
    p = _save(tmp_path, [H.make_node("GatherElements", ["x", "i"], ["y"], axis=1)], [_vi("x", [2, 3])],
              [_vi("y", None)], [big])
    with pytest.raises(ModelFormatError, match="out of range"):
        refnet.load_onnx(p)
    p2 = _save(tmp_path, [H.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
               [_vi("x", [2, 3]), _vi("i", [1, 3], TP.INT64)], [_vi("y", None)], name="rt.onnx")
    with pytest.raises(ShapeError, match="out of range"):
        _refnet(p2, {"x": data, "i": np.array([[0, -4, 1]], np.int64)}, "float64")
    p3 = _save(tmp_path, [H.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
               [_vi("x", [2, 3]), _vi("i", [3], TP.INT64)], [_vi("y", None)], name="rank.onnx")
    with pytest.raises(ModelFormatError, match="rank"):
        refnet.load_onnx(p3)


# ---- ScatterElements (Torch MaxUnpool as refnet's converter writes it) ---------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_scatter_elements_run_time_indices_hand_values(tmp_path, precision):
    data = np.zeros((3, 3), np.float32)
    idx = np.array([[1, 0, 2], [0, 2, 1]], np.int64)
    upd = np.array([[1.0, 1.1, 1.2], [2.0, 2.1, 2.2]], np.float32)
    p = _save(tmp_path, [H.make_node("ScatterElements", ["d", "i", "u"], ["y"], axis=0)],
              [_vi("d", [3, 3]), _vi("i", [2, 3], TP.INT64), _vi("u", [2, 3])], [_vi("y", None)])
    feeds = {"d": data, "i": idx, "u": upd}
    # column j: row idx[0, j] gets upd[0, j], row idx[1, j] gets upd[1, j]
    want = np.array([[2.0, 1.1, 0.0], [1.0, 0.0, 2.2], [0.0, 2.1, 1.2]], np.float32)
    got = _refnet(p, feeds, precision)[0]
    np.testing.assert_allclose(got, want, rtol=1e-7 if precision == "float32" else 0, atol=0)
    np.testing.assert_allclose(got, _ort(p, feeds)[0], rtol=1e-7, atol=0)


# ---- Mod --------------------------------------------------------------------------------------------
X_INT = [-4, 7, 5, 4, -7, 8, 0, -9]
Y_INT = [2, -3, 8, -2, 3, 5, 3, -4]


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("divisor_const", [False, True])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mod_int64_mixed_signs(tmp_path, fmod, divisor_const, precision):
    x, y = np.array(X_INT, np.int64), np.array(Y_INT, np.int64)
    # by hand: Python's % takes the divisor's sign (fmod=0); C's takes the dividend's (fmod=1)
    want = [a % b if not fmod else int(math.copysign(abs(a) % abs(b), a)) for a, b in zip(X_INT, Y_INT)]
    assert want == ([0, -2, 5, 0, 2, 3, 0, -1] if not fmod else [0, 1, 5, 0, -1, 3, 0, -1])
    inits = [NH.from_array(y, "y")] if divisor_const else []
    inputs = [_vi("x", [8], TP.INT64)] + ([] if divisor_const else [_vi("y", [8], TP.INT64)])
    p = _save(tmp_path, [H.make_node("Mod", ["x", "y"], ["z"], fmod=fmod)], inputs, [_vi("z", None, TP.INT64)],
              inits)
    feeds = {"x": x} if divisor_const else {"x": x, "y": y}
    got = _refnet(p, feeds, precision)[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_mod_float_fmod_1_mixed_signs(tmp_path, precision):
    x = np.array([-4.5, 7.5, 5.0, 4.5, -7.5, 8.0, -1.0], np.float32)
    y = np.array([2.0, -3.0, 8.0, -2.0, 3.0, 5.0, 0.5], np.float32)
    want = np.array([-0.5, 1.5, 5.0, 0.5, -1.5, 3.0, -0.0], np.float32)  # the dividend's sign (binary fractions)
    p = _save(tmp_path, [H.make_node("Mod", ["x", "y"], ["z"], fmod=1)], [_vi("x", [7]), _vi("y", [7])],
              [_vi("z", None)])
    got = _refnet(p, {"x": x, "y": y}, precision)[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_ort(p, {"x": x, "y": y})[0], want)


def test_mod_float_fmod_0_takes_the_divisor_sign(tmp_path):
    """Floats with fmod=0 (allowed from opset 28; onnxruntime refuses it): A - floor(A / B) * B."""
    x = np.array([-4.5, 7.5, 5.0, 4.5, -7.5, 8.0], np.float64)
    y = np.array([2.0, -3.0, 8.0, -2.0, 3.0, 5.0], np.float64)
    want = [1.5, -1.5, 5.0, -1.5, 1.5, 3.0]
    p = _save(tmp_path, [H.make_node("Mod", ["x", "y"], ["z"], fmod=0)], [_vi("x", [6], TP.DOUBLE),
                                                                         _vi("y", [6], TP.DOUBLE)],
              [_vi("z", None, TP.DOUBLE)])
    for precision in PRECISIONS:
        np.testing.assert_array_equal(_refnet(p, {"x": x, "y": y}, precision)[0], want)


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mod_is_exact_on_large_integer_valued_floats(tmp_path, fmod, precision):
    """Indices up to 2**24 (float32's exact integers; float64: up to 2**53) stay exact."""
    top = 2 ** 24 if precision == "float32" else 2 ** 53
    xs = [top - 1, -(top - 1), top - 3, 12345678, -16777213, 65536 * 255 + 17]
    ys = [1000, 7, -3, 65536, 262144, -65536]
    want = [a % b if not fmod else int(math.copysign(abs(a) % abs(b), a)) for a, b in zip(xs, ys)]
    p = _save(tmp_path, [H.make_node("Mod", ["x", "y"], ["z"], fmod=fmod)],
              [_vi("x", [6], TP.INT64), _vi("y", [6], TP.INT64)], [_vi("z", None, TP.INT64)])
    feeds = {"x": np.array(xs, np.int64), "y": np.array(ys, np.int64)}
    got = _refnet(p, feeds, precision)[0]
    assert [int(v) for v in got] == want
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_by_zero(tmp_path, fmod):
    """Integers: refnet gives 0 (onnxruntime's integer kernels divide by zero -- undefined
    behaviour, a crash on x86 -- so it is not run here); floats: NaN, as the spec and onnxruntime."""
    p = _save(tmp_path, [H.make_node("Mod", ["x", "y"], ["z"], fmod=fmod)],
              [_vi("x", [3], TP.INT64), _vi("y", [3], TP.INT64)], [_vi("z", None, TP.INT64)])
    got = _refnet(p, {"x": np.array([5, -5, 0]), "y": np.array([0, 0, 0])}, "float64")[0]
    np.testing.assert_array_equal(got, [0, 0, 0])
    if fmod:
        pf = _save(tmp_path, [H.make_node("Mod", ["x", "y"], ["z"], fmod=1)], [_vi("x", [2]), _vi("y", [2])],
                   [_vi("z", None)], name="f.onnx")
        feeds = {"x": np.array([5.0, -5.0], np.float32), "y": np.array([0.0, 0.0], np.float32)}
        for precision in PRECISIONS:
            assert np.isnan(_refnet(pf, feeds, precision)[0]).all()
        assert np.isnan(_ort(pf, feeds)[0]).all()


# ---- integer Div -------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_div_of_int64_tensors_rounds_toward_zero(tmp_path, precision):
    xs, ys = [7, -7, 7, -7, 6, 0, 16777215, -16777215], [2, 2, -2, -2, 3, 5, 512, 7]
    want = [(abs(a) // abs(b)) * (1 if (a < 0) == (b < 0) else -1) for a, b in zip(xs, ys)]  # C: toward 0
    assert want[:6] == [3, -3, -3, 3, 2, 0]
    p = _save(tmp_path, [H.make_node("Div", ["x", "y"], ["z"])], [_vi("x", [8], TP.INT64), _vi("y", [8], TP.INT64)],
              [_vi("z", None, TP.INT64)])
    feeds = {"x": np.array(xs, np.int64), "y": np.array(ys, np.int64)}
    got = _refnet(p, feeds, precision)[0]
    assert [int(v) for v in got] == want
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)
    pz = _save(tmp_path, [H.make_node("Div", ["x", "y"], ["z"])], [_vi("x", [2], TP.INT64), _vi("y", [2], TP.INT64)],
               [_vi("z", None, TP.INT64)], name="zero.onnx")
    np.testing.assert_array_equal(_refnet(pz, {"x": np.array([3, -3]), "y": np.array([0, 0])}, precision)[0], [0, 0])


def test_max_pool_indices_through_div_and_mod(tmp_path):
    """refnet's converter maps ONNX's global MaxPool indices to Torch's per-plane (row, col) ones
    with Mod and Div on int64: indices of a padded plane back to the input's."""
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 7)).astype(np.float32)
    nodes = [H.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2]),
             H.make_node("Mod", ["i", "hw"], ["plane"]), H.make_node("Div", ["plane", "w"], ["row"]),
             H.make_node("Mod", ["plane", "w"], ["col"])]
    inits = [NH.from_array(np.array(35, np.int64), "hw"), NH.from_array(np.array(7, np.int64), "w")]
    p = _save(tmp_path, nodes, [_vi("x", [1, 2, 5, 7])], [_vi("row", None, TP.INT64), _vi("col", None, TP.INT64)],
              inits)
    ref = _ort(p, {"x": x})
    # by hand: the argmax of each 2x2 window, its row and column in the 5x7 plane
    rows, cols = np.zeros((1, 2, 2, 3), int), np.zeros((1, 2, 2, 3), int)
    for c in range(2):
        for i in range(2):
            for j in range(3):
                win = x[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                r, q = divmod(int(np.argmax(win)), 2)
                rows[0, c, i, j], cols[0, c, i, j] = 2 * i + r, 2 * j + q
    for precision in PRECISIONS:
        got = _refnet(p, {"x": x}, precision)
        np.testing.assert_array_equal(got[0], rows)
        np.testing.assert_array_equal(got[1], cols)
    np.testing.assert_array_equal(ref[0], rows)
    np.testing.assert_array_equal(ref[1], cols)


# ---- the SSD head's run-time chain: NMS rows -> GatherND / Gather / Shape -> TopK(k) -> Pad ------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_nms_rows_through_gathernd_topk_and_pad(tmp_path, precision):
    rng = np.random.default_rng(7)
    n, keep = 12, 8
    xy = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(0.3, 0.8, (n, 2)).astype(np.float32)], 1)[None]  # (1, n, 4)
    scores = rng.uniform(0, 1, (1, 1, n)).astype(np.float32)
    i64 = lambda name, v: NH.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        H.make_node("NonMaxSuppression", ["b", "s", "mo", "iou", "st"], ["sel"]),
        H.make_node("Gather", ["sel", "c12"], ["bc"], axis=1),            # (S, 2): batch, candidate
        H.make_node("GatherND", ["b", "bc"], ["sb"]),                     # (S, 4)
        H.make_node("Gather", ["sel", "c2"], ["cand2"], axis=1),
        H.make_node("Squeeze", ["cand2", "ax1"], ["cand"]),               # (S,)
        H.make_node("Squeeze", ["s", "ax01"], ["s1"]),                    # (n,)
        H.make_node("Gather", ["s1", "cand"], ["ss"], axis=0),            # (S,) run-time indices
        H.make_node("Shape", ["ss"], ["cnt"]),
        H.make_node("Min", ["cnt", "kmax"], ["k"]),
        H.make_node("TopK", ["ss", "k"], ["ts", "order"], axis=0),       # run-time k
        H.make_node("Gather", ["sb", "order"], ["tb"], axis=0),
        H.make_node("Unsqueeze", ["ts", "ax1"], ["ts1"]),
        H.make_node("Concat", ["ts1", "tb"], ["rows"], axis=1),           # (k, 5)
        H.make_node("Sub", ["kmax", "k"], ["extra"]),
        H.make_node("Concat", ["z2", "extra", "z1"], ["pads"], axis=0),
        H.make_node("Pad", ["rows", "pads", "zero"], ["padded"], mode="constant"),
        H.make_node("Reshape", ["padded", "shp"], ["out"]),
    ]
    inits = [i64("mo", [n]), NH.from_array(np.array([0.3], np.float32), "iou"),
             NH.from_array(np.array([0.2], np.float32), "st"), i64("c12", [0, 2]), i64("c2", [2]), i64("ax1", [1]),
             i64("ax01", [0, 1]), i64("kmax", [keep]), i64("z2", [0, 0]), i64("z1", [0]),
             NH.from_array(np.array(0.0, np.float32), "zero"), i64("shp", [1, 1, -1, 5])]
    p = _save(tmp_path, nodes, [_vi("b", [1, n, 4]), _vi("s", [1, 1, n])], [_vi("out", None)], inits, opset=13)
    feeds = {"b": boxes, "s": scores}
    ref = _ort(p, feeds)[0]
    # by hand: greedy NMS (IoU > 0.3 suppressed, score > 0.2), best first, up to keep rows, zero-padded
    order = [i for i in np.argsort(-scores[0, 0], kind="stable") if scores[0, 0, i] > 0.2]
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            a, b = boxes[0, i].astype(np.float64), boxes[0, j].astype(np.float64)
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            ok &= inter / union <= 0.3
        if ok:
            kept.append(i)
    kept = kept[:keep]
    want = np.zeros((keep, 5))
    for r, i in enumerate(kept):
        want[r] = [scores[0, 0, i], *boxes[0, i]]
    assert 2 <= len(kept) < keep  # rows to pad: the run-time pads matter
    got = _refnet(p, feeds, precision)[0]
    assert got.shape == ref.shape == (1, 1, keep, 5)
    np.testing.assert_allclose(got[0, 0], want, rtol=0, atol=1e-7)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


# ---- the onnx package's own node test cases ------------------------------------------------------------
_PREFIXES = ("test_gather_elements", "test_mod_", "test_scatter_elements", "test_gathernd", "test_scatternd")


@pytest.fixture(scope="module")
def node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cases = collect_testcases(None)
    out = [c for c in cases if c.kind == "node" and c.data_sets and c.name.startswith(_PREFIXES)
           and "expanded" not in c.name]
    return sorted(out, key=lambda c: c.name)


def _run_node_case(case, precision: str, bind: bool):
    """Every input fed at run time (``bind`` False) or all but the first bound as initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    inputs, expected = case.data_sets[0]
    names = [vi.name for vi in m.graph.input]
    feeds = dict(zip(names, [np.asarray(v) for v in inputs]))
    if bind:
        for name in names[1:]:
            m.graph.initializer.append(NH.from_array(feeds.pop(name), name))
        keep = [vi for vi in m.graph.input if vi.name == names[0]]
        del m.graph.input[:]
        m.graph.input.extend(keep)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        with open(path, "wb") as f:
            f.write(m.SerializeToString())
        outs = [vi.name for vi in m.graph.output]
        with np.errstate(all="ignore"):
            got = _refnet(path, feeds, precision, outputs=outs)
    return got, [np.asarray(e) for e in expected]


@pytest.mark.parametrize("bind", [False, True])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnx_node_cases(node_cases, precision, bind):
    names = {c.name for c in node_cases}
    assert {"test_gather_elements_0", "test_gather_elements_1", "test_gather_elements_negative_indices",
            "test_mod_mixed_sign_int64", "test_mod_int64_fmod", "test_mod_mixed_sign_float32",
            "test_mod_broadcast"} <= names
    failures = []
    for case in node_cases:
        got, expected = _run_node_case(case, precision, bind)
        for g, e in zip(got, expected):
            e64 = e.astype(np.float64)
            # the cases' own tolerance rule (onnx's backend runner: rtol 1e-3, atol 1e-7); float16
            # cases were computed in float16 (np.mod's sign fix-up rounds there), refnet in float32/64
            tol = dict(rtol=1e-3, atol=1e-7) if e.dtype != np.float16 else dict(rtol=1e-2, atol=1e-3)
            if g.shape != e.shape or not np.allclose(g, e64, equal_nan=True, **tol):
                failures.append(f"{case.name}: got {g.ravel()[:8]} want {e64.ravel()[:8]}")
    assert not failures, "\n".join(failures)


# ---- ConstantOfShape of a run-time shape into ScatterND (refnet's `--quirks cv2` YOLO in-layer NMS) ---------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_nms_rows_through_constant_of_shape_and_scatternd(tmp_path, precision):
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 0.9, 1, 1.9], [5, 5, 6, 6]]], np.float32)  # (1, 4, 4)
    scores = np.array([[[0.9, 0.8, 0.7, 0.1], [0.3, 0.6, 0.05, 0.5]]], np.float32)  # (1, 2 classes, 4 rows)
    i64 = lambda name, v: NH.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [H.make_node("NonMaxSuppression", ["b", "s", "mo", "iou", "st"], ["sel"]),
             H.make_node("Gather", ["sel", "c12"], ["cls_row"], axis=1),
             H.make_node("Shape", ["sel"], ["ss"]), H.make_node("Gather", ["ss", "c0"], ["count"], axis=0),
             H.make_node("ConstantOfShape", ["count"], ["ones"], value=NH.from_array(np.ones(1, np.float32))),
             H.make_node("ScatterND", ["zeros", "cls_row", "ones"], ["mask"])]
    inits = [i64("mo", [4]), NH.from_array(np.array([0.5], np.float32), "iou"),
             NH.from_array(np.array([0.2], np.float32), "st"), i64("c12", [1, 2]), i64("c0", [0]),
             NH.from_array(np.zeros((2, 4), np.float32), "zeros")]
    p = _save(tmp_path, nodes, [_vi("b", [1, 4, 4]), _vi("s", [1, 2, 4])], [_vi("mask", None)], inits)
    feeds = {"b": boxes, "s": scores}
    # by hand: class 0 keeps row 0 (0.9), drops row 1 (IoU 0.9/1.1 with row 0), keeps row 2 (IoU 0.1/1.9
    # with row 0); row 3 scores 0.1 <= 0.2. Class 1: row 1 (0.6), row 3 (0.5, far away), row 0 (0.3)
    # overlaps row 1 by 0.9/1.1: dropped; row 2 scores 0.05.
    want = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], np.float32)
    np.testing.assert_array_equal(_refnet(p, feeds, precision)[0], want)
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_reshape_to_a_shape_computed_at_run_time(tmp_path, precision):
    """Reshape(sel, Concat([1], Shape(sel))): a target known only at run time (NMS rows)."""
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 0.9, 1, 1.9], [5, 5, 6, 6]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7, 0.1], [0.3, 0.6, 0.05, 0.5]]], np.float32)
    i64 = lambda name, v: NH.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [H.make_node("NonMaxSuppression", ["b", "s", "mo", "iou", "st"], ["sel"]),
             H.make_node("Shape", ["sel"], ["ss"]), H.make_node("Concat", ["one", "ss"], ["target"], axis=0),
             H.make_node("Reshape", ["sel", "target"], ["y"])]
    inits = [i64("mo", [4]), NH.from_array(np.array([0.5], np.float32), "iou"),
             NH.from_array(np.array([0.2], np.float32), "st"), i64("one", [1])]
    p = _save(tmp_path, nodes, [_vi("b", [1, 4, 4]), _vi("s", [1, 2, 4])], [_vi("y", None, TP.INT64)], inits)
    feeds = {"b": boxes, "s": scores}
    # by hand (see the ScatterND test): class 0 keeps rows 0, 2; class 1 rows 1, 3; best first
    want = np.array([[[0, 0, 0], [0, 0, 2], [0, 1, 1], [0, 1, 3]]])
    net = refnet.load_onnx(p)
    assert "reshape_dyn" in {n.op for n in net.graph.nodes}
    np.testing.assert_array_equal(_refnet(p, feeds, precision)[0], want)
    np.testing.assert_array_equal(_ort(p, feeds)[0], want)


def test_outputs_sized_at_run_time_are_budgeted(tmp_path):
    """Outputs whose size comes from run-time values -- ConstantOfShape of a computed shape, Pad by
    computed pads, Gather/GatherND rows -- are refused with a BudgetError naming the layer before
    they are allocated (the plan's up-front check cannot see them); the same files run within it."""
    from refnet.errors import BudgetError
    from refnet.runtime import budget

    cos = _save(tmp_path, [H.make_node("Cast", ["s"], ["si"], to=TP.INT64),
                           H.make_node("ConstantOfShape", ["si"], ["y"])],
                [_vi("s", [2])], [_vi("y", None)], name="cos.onnx")
    pad = _save(tmp_path, [H.make_node("Cast", ["p"], ["pi"], to=TP.INT64),
                           H.make_node("Pad", ["x", "pi"], ["y"], mode="constant")],
                [_vi("x", [2, 3]), _vi("p", [4])], [_vi("y", None)], name="pad.onnx")
    gat = _save(tmp_path, [H.make_node("Cast", ["i"], ["ii"], to=TP.INT64),
                           H.make_node("Gather", ["x", "ii"], ["y"], axis=0)],
                [_vi("x", [100, 1000]), _vi("i", [1000, 100])], [_vi("y", None)], name="gather.onnx")
    budget.set_memory_budget("100M")
    try:
        cases = [(cos, {"s": np.array([20000.0, 20000.0])}, "(20000, 20000), known only at run time"),
                 (pad, {"x": np.ones((2, 3)), "p": np.array([0.0, 0.0, 0.0, 2e7])}, "(2, 20000003), known only"),
                 # the indices' shape is static: the plan's check refuses it before the run
                 (gat, {"x": np.ones((100, 1000)), "i": np.zeros((1000, 100))}, "needs 2.2 GiB")]
        for path, feeds, what in cases:
            with pytest.raises(BudgetError) as e:
                _refnet(path, feeds, "float64")
            assert what in str(e.value) and "layer 'y'" in str(e.value) and "budget" in str(e.value), str(e.value)
        small = _refnet(pad, {"x": np.ones((2, 3)), "p": np.array([1.0, 0.0, 0.0, 2.0])}, "float64")[0]
        want = np.zeros((3, 5))
        want[1:, :3] = 1.0  # one row before, two columns after: worked by hand
        np.testing.assert_array_equal(small, want)
    finally:
        budget.set_memory_budget()


def test_steps_on_tensors_sized_at_run_time_are_budgeted(tmp_path):
    """ConstantOfShape of run-time shapes (10000, 1) and (1, 10000), each small (80 KB), then Add:
    the broadcast result (10^8 elements, 800 MB in float64) was allocated with no check (the
    plan sees only run-time dims; the Add has no check of its own). The executor now checks each
    run-time sized step's outputs, from its inputs' real shapes, before it runs; small ones run."""
    from refnet.errors import BudgetError
    from refnet.runtime import budget

    nodes = [H.make_node("Cast", ["s"], ["si"], to=TP.INT64), H.make_node("Cast", ["t"], ["ti"], to=TP.INT64),
             H.make_node("ConstantOfShape", ["si"], ["a"], value=NH.from_array(np.ones(1, np.float32))),
             H.make_node("ConstantOfShape", ["ti"], ["b"], value=NH.from_array(np.ones(1, np.float32))),
             H.make_node("Add", ["a", "b"], ["y"])]
    p = _save(tmp_path, nodes, [_vi("s", [2]), _vi("t", [2])], [_vi("y", None)], name="bcast.onnx")
    budget.set_memory_budget("100M")
    try:
        with pytest.raises(BudgetError) as e:
            _refnet(p, {"s": np.array([10000.0, 1.0]), "t": np.array([1.0, 10000.0])}, "float64")
        assert "layer 'y'" in str(e.value) and "sized at run time" in str(e.value), str(e.value)
        small = _refnet(p, {"s": np.array([3.0, 1.0]), "t": np.array([1.0, 2.0])}, "float64")[0]
        np.testing.assert_array_equal(small, np.full((3, 2), 2.0))  # 1 + 1 everywhere, by hand
    finally:
        budget.set_memory_budget()


@pytest.mark.parametrize("sampling,roi,samples", [(300, 8.0, 300 * 300), (0, 600.0, 600 * 600)])
def test_roi_align_sampling_grids_are_budgeted(tmp_path, sampling, roi, samples):
    """RoiAlign's work is its bilinear samples, 4 taps each: sampling_ratio^2 per output bin, or
    (sampling_ratio 0) ceil(roi side / bins) per axis from the ROI's own coordinates. It had no
    MAC rule: sampling_ratio 10^6 ran for ever (7x7 bins x 10^12 samples), as did a 10^7-pixel ROI.
    Here one 1x1 bin of one channel: 4 x ``samples`` MACs, worked by hand, over a 10^5 budget."""
    from refnet.errors import BudgetError
    from refnet.runtime import budget

    nodes = [H.make_node("RoiAlign", ["x", "r", "bi"], ["y"], output_height=1, output_width=1,
                         sampling_ratio=sampling)]
    inits = [NH.from_array(np.array([[0.0, 0.0, roi, roi]], np.float32), "r"),
             NH.from_array(np.zeros(1, np.int64), "bi")]
    p = _save(tmp_path, nodes, [_vi("x", [1, 1, 8, 8])], [_vi("y", None)], inits)
    budget.set_compute_budget(10**5)
    try:
        with pytest.raises(BudgetError) as e:
            _refnet(p, {"x": np.ones((1, 1, 8, 8))}, "float64")
        assert e.value.layer == "y" and e.value.need == 4 * samples, str(e.value)
        budget.set_compute_budget(4 * samples)  # at the limit it runs: mean of ones inside the image
        assert _refnet(p, {"x": np.ones((1, 1, 8, 8))}, "float64")[0].shape == (1, 1, 1, 1)
    finally:
        budget.set_compute_budget()


def test_nms_work_is_budgeted(tmp_path):
    """NonMaxSuppression visits every candidate of every class and overlaps it with up to
    max_output_boxes_per_class kept boxes: B x C x N x (min(N, max) + 1000 for the visit) MACs,
    here 1 x 10 x 2000 x (2000 + 1000) = 6 x 10^7 by hand. It had no rule (10^6 boxes with
    max_output_boxes_per_class 10^9 ran for ever); over a 10^7 budget it is refused up front."""
    from refnet.errors import BudgetError
    from refnet.runtime import budget

    p = _save(tmp_path, [H.make_node("NonMaxSuppression", ["b", "s", "mo"], ["sel"])],
              [_vi("b", [1, 2000, 4]), _vi("s", [1, 10, 2000])], [_vi("sel", None, TP.INT64)],
              [NH.from_array(np.array([10**9], np.int64), "mo")])
    rng = np.random.default_rng(0)
    feeds = {"b": rng.uniform(0, 1, (1, 2000, 4)), "s": rng.uniform(0, 1, (1, 10, 2000))}
    budget.set_compute_budget(10**7)
    try:
        with pytest.raises(BudgetError) as e:
            _refnet(p, feeds, "float64")
        assert e.value.need == 10 * 2000 * (2000 + 1000), str(e.value)
    finally:
        budget.set_compute_budget()
