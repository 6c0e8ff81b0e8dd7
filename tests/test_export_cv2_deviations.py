"""The ONNX deviations of cv2 4.14 / 5.1 that `refnet convert` works around or reports
(docs/cv2-deviations.md, section ONNX). Each builds a two-node ONNX file with onnx.helper and
runs it in onnxruntime (the ONNX spec's behaviour) and in cv2 (4.x here, 5.x in the worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

from refnet.crosscheck.cv2_backend import BackendFailure, Cv2WorkerBackend  # noqa: E402
from refnet.crosscheck.ort_backend import OrtBackend  # noqa: E402


def _save(tmp_path: Path, nodes, inputs, outputs, inits=()) -> str:
    g = h.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    return path


def _nms_model(tmp_path: Path) -> str:
    inits = [nh.from_array(np.array([10], np.int64), "m"), nh.from_array(np.array([0.5], np.float32), "iou"),
             nh.from_array(np.array([0.0], np.float32), "st")]
    return _save(tmp_path, [h.make_node("NonMaxSuppression", ["b", "s", "m", "iou", "st"], ["sel"])],
                 [h.make_tensor_value_info("b", T.FLOAT, [1, 3, 4]), h.make_tensor_value_info("s", T.FLOAT, [1, 1, 3])],
                 [h.make_tensor_value_info("sel", T.INT64, [None, 3])], inits)


NMS_FEEDS = {"b": np.array([[[0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]], np.float32),
             "s": np.array([[[0.9, 0.8, 0.7]]], np.float32)}


def test_cv2_4_has_no_nonmaxsuppression(tmp_path):
    path = _nms_model(tmp_path)
    with pytest.raises(BackendFailure, match="NonMaxSuppression"):
        Cv2WorkerBackend().run(path, NMS_FEEDS, ["sel"])


def test_cv2_5_nms_suppresses_identical_empty_boxes(tmp_path, cv5):
    path = _nms_model(tmp_path)
    want = OrtBackend().run(path, NMS_FEEDS, ["sel"])["sel"][:, 2].tolist()
    got = cv5.run(path, NMS_FEEDS, ["sel"])["sel"][:, 2].tolist()
    assert want == [0, 1, 2]  # empty boxes overlap nothing (IoU 0)
    assert got == [0, 2]  # cv2 5.1: the second empty box is suppressed by the first


def _pool_unpool(tmp_path: Path, with_shape: bool) -> str:
    nodes = [h.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])]
    ins = ["y", "i"]
    inits = []
    if with_shape:
        inits.append(nh.from_array(np.array([1, 2, 4, 4], np.int64), "os"))
        ins.append("os")
    nodes.append(h.make_node("MaxUnpool", ins, ["z"], kernel_shape=[2, 2], strides=[2, 2]))
    outs = [h.make_tensor_value_info("z", T.FLOAT, [1, 2, 4, 4])]
    return _save(tmp_path, nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 4, 4])], outs, inits)


def test_cv2_5_maxunpool_reads_indices_per_plane(tmp_path, cv5):
    x = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    want = OrtBackend().run(_pool_unpool(tmp_path, False), x, ["z"])["z"]
    assert np.count_nonzero(want) == 8  # the spec: each max back at its place
    for with_shape in (False, True):
        with pytest.raises(BackendFailure, match="Assertion failed"):
            cv5.run(_pool_unpool(tmp_path, with_shape), x, ["z"])


def test_cv2_4_cannot_output_maxpool_indices(tmp_path):
    x = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    cv4 = Cv2WorkerBackend()
    np.testing.assert_allclose(cv4.run(_pool_unpool(tmp_path, False), x, ["z"])["z"],
                               OrtBackend().run(_pool_unpool(tmp_path, False), x, ["z"])["z"])
    only_pool = _save(tmp_path, [h.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])],
                      [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 4, 4])],
                      [h.make_tensor_value_info("i", T.INT64, [1, 2, 2, 2])])
    assert OrtBackend().run(only_pool, x, ["i"])["i"].shape == (1, 2, 2, 2)
    with pytest.raises(BackendFailure, match="out_port"):
        cv4.run(only_pool, x, ["i"])
