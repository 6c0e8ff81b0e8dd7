"""cv2 5.1's silent wrong results found by the ONNX node conformance run
(tests/onnx_reader/conformance_backends.py; docs/cv2-deviations.md, section ONNX), and the
cv2 4.14/5.1 ones found by a random differential run against onnxruntime (last two tests). Each builds a
single-node ONNX model with onnx.helper from a node test case's inputs, runs it in the cv2@cv5
worker and in refnet float64, and checks both against the node test's own expected output
(recomputed with the function the onnx case generator uses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import refnet  # noqa: E402
from refnet.errors import UnsupportedLayerError  # noqa: E402


def _save(tmp_path: Path, node, x: np.ndarray, out_shape, inits, opset: int) -> str:
    g = h.make_graph([node], "t", [h.make_tensor_value_info("X", T.FLOAT, list(x.shape))],
                     [h.make_tensor_value_info("Y", T.FLOAT, list(out_shape))], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    return path


# the inputs of test_resize_downsample_scales_{linear,cubic}_align_corners (onnx 1.23 node tests)
RESIZE_CASES = {
    "linear": (np.array([[[[1, 2, 3, 4], [5, 6, 7, 8]]]], np.float32), [1.0, 1.0, 0.6, 0.6]),
    "cubic": (np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4), [1.0, 1.0, 0.8, 0.8]),
}


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_cv5_resize_align_corners_with_scales_uses_the_rounded_size(tmp_path, cv5, mode):
    """ONNX Resize, align_corners, given `scales`: x_in = x_out * (L_in - 1) / (L_in * scale - 1)
    (the un-rounded resized length). cv2 5.1 uses the rounded output length instead, i.e. it
    computes what the spec gives for `sizes = floor(L_in * scale)`; refnet follows the spec."""
    from onnx.backend.test.case.node.resize import cubic_coeffs, interpolate_nd, linear_coeffs

    x, scales = RESIZE_CASES[mode]
    coeffs = (lambda r, _: linear_coeffs(r, None)) if mode == "linear" else (lambda r, _: cubic_coeffs(r))
    expected = interpolate_nd(x, coeffs, scale_factors=scales,
                              coordinate_transformation_mode="align_corners").astype(np.float32)
    sizes = [int(np.floor(n * s)) for n, s in zip(x.shape, scales)]
    by_sizes = interpolate_nd(x, coeffs, output_size=sizes, coordinate_transformation_mode="align_corners")
    assert expected.shape == tuple(sizes)
    node = h.make_node("Resize", ["X", "", "scales"], ["Y"], mode=mode, coordinate_transformation_mode="align_corners")
    path = _save(tmp_path, node, x, expected.shape, [nh.from_array(np.array(scales, np.float32), "scales")], 19)

    ours = refnet.load_onnx(path).forward({"X": x}, outputs=["Y"], precision="float64")["Y"]
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-7)      # the node test's rule

    got = cv5.run(path, {"X": x}, ["Y"])["Y"]
    assert got.shape == expected.shape
    assert not np.allclose(got, expected, rtol=1e-3, atol=1e-7)            # silently wrong ...
    np.testing.assert_allclose(got, by_sizes, rtol=1e-5, atol=1e-5)        # ... by the rounded length
    assert np.max(np.abs(got - expected)) > 0.1


def test_cv5_training_mode_dropout_returns_the_input(tmp_path, cv5):
    """Dropout with training_mode=True and ratio 0.5 (test_training_dropout_default): every output
    element must be 0 or x / (1 - ratio). cv2 5.1 returns x unchanged, with no error; refnet
    refuses the node (inference only), onnxruntime draws a valid dropout."""
    rng = np.random.default_rng(0)
    x = (rng.random((3, 4, 5)) + 0.5).astype(np.float32)           # no zeros: 0 and 2x are distinct
    inits = [nh.from_array(np.array(0.5, np.float32), "r"), nh.from_array(np.array(True), "t")]
    node = h.make_node("Dropout", ["X", "r", "t"], ["Y"])
    path = _save(tmp_path, node, x, x.shape, inits, 13)

    def valid_dropout(y):
        return y.shape == x.shape and bool(np.all(np.isclose(y, 0) | np.isclose(y, 2 * x, rtol=1e-6)))

    with pytest.raises(UnsupportedLayerError, match="training_mode"):
        refnet.load_onnx(path)
    got = cv5.run(path, {"X": x}, ["Y"])["Y"]
    np.testing.assert_array_equal(got, x)
    assert not valid_dropout(got)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert valid_dropout(sess.run(["Y"], {"X": x})[0])


@pytest.mark.parametrize("op,want", [("ReduceL1", np.abs), ("ReduceL2", np.abs), ("ReduceSumSquare", np.square),
                                     ("ReduceLogSum", np.log)])
def test_cv2_reduce_noop_with_empty_axes_drops_the_elementwise_part(tmp_path, cv5, op, want):
    """noop_with_empty_axes=1 without axes: no reduction, 'but other operations will be performed'
    (the spec: ReduceSumSquare acts as a vanilla Square). cv2 4.14 and 5.1 return the input;
    refnet and onnxruntime give |x|, x*x, log x."""
    from refnet.crosscheck.cv2_backend import Cv2WorkerBackend

    x = np.array([[[[-2.0, 0.5], [3.0, 1.5]]]], np.float32)
    if op == "ReduceLogSum":
        x = np.abs(x)
    node = h.make_node(op, ["X"], ["Y"], noop_with_empty_axes=1)
    path = _save(tmp_path, node, x, x.shape, [], 18)
    expected = want(x.astype(np.float64))
    ours = refnet.load_onnx(path).forward({"X": x}, outputs=["Y"], precision="float64")["Y"]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    ort = pytest.importorskip("onnxruntime")
    np.testing.assert_allclose(ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["Y"], {"X": x})[0],
                               expected, rtol=1e-6)
    for backend in (cv5, Cv2WorkerBackend()):  # cv2 5.1, and this environment's cv2 4.14
        got = backend.run(path, {"X": x}, ["Y"])["Y"]
        np.testing.assert_array_equal(got, x)
        assert not np.allclose(got, expected)


def test_cv2_4_cast_to_float16_keeps_the_value(tmp_path):
    """Cast to FLOAT16 and back: the value rounded to float16 (NumPy's conversion; onnxruntime,
    refnet and cv2 5.1 agree). cv2 4.14 keeps the float32 value (1 + 2**-12 stays, 70000 is not
    inf): a mixed-precision graph differs from the spec by up to 2**-11 relative per cast."""
    from refnet.crosscheck.cv2_backend import Cv2WorkerBackend

    pytest.importorskip("cv2")
    x = np.array([[1 + 2**-12, 1.0001, 0.1, 70000.0]], np.float32)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).astype(np.float32)
    nodes = [h.make_node("Cast", ["X"], ["H"], to=T.FLOAT16), h.make_node("Cast", ["H"], ["Y"], to=T.FLOAT)]
    io = [h.make_tensor_value_info(n, T.FLOAT, [1, 4]) for n in "XY"]
    g = h.make_graph(nodes, "t", io[:1], io[1:])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 9
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    ours = refnet.load_onnx(path).forward({"X": x}, outputs=["Y"], precision="float64")["Y"]
    np.testing.assert_array_equal(ours, expected)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(["Y"], {"X": x})[0], expected)
    got = Cv2WorkerBackend().run(path, {"X": x}, ["Y"])["Y"]
    np.testing.assert_array_equal(got, x)
