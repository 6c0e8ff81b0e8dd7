"""The side-by-side conformance harness (conformance_backends.py) on three node test cases whose
outcome in cv2 4.14 is known from the full run: a pass (test_relu), a crash of the worker
(test_celu_expanded, SIGSEGV: it must be charged to that case alone) and a silent wrong result
(test_resize_downsample_scales_linear_align_corners). The oracle is each case's stored output."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import conformance as C  # noqa: E402
import conformance_backends as B  # noqa: E402

NAMES = ("test_relu", "test_celu_expanded", "test_resize_downsample_scales_linear_align_corners")


@pytest.fixture(scope="module")
def cases_and_files(tmp_path_factory):
    every = {c.name: c for c in C.cnn_cases(C.CNN_OPS | C.EXTENDED_OPS)}
    cases = [every[n] for n in NAMES]
    return cases, B.write_models(cases, str(tmp_path_factory.mktemp("conf")))


def test_cv2_4_worker_crash_is_charged_to_its_case(cases_and_files):
    cases, files = cases_and_files
    _, res = B.run_cv2(cases, files, sys.executable)  # refnet's venv holds cv2 4.x
    assert res["test_relu"][0] == "pass"
    assert res["test_celu_expanded"][0] == "crash", res["test_celu_expanded"]
    assert res["test_resize_downsample_scales_linear_align_corners"][0] == "wrong"


def test_onnxruntime_column_and_the_live_rule(cases_and_files):
    cases, files = cases_and_files
    _, res = B.run_ort(cases, files)
    assert res["test_relu"][0] == "pass" and res["test_celu_expanded"][0] == "pass"
    relu = cases[0]
    ins, outs = relu.data_sets[0]
    got = {relu.model.graph.output[0].name: np.asarray(outs[0]) + 1e-2}
    assert B.classify(relu, [relu.model.graph.output[0].name], got)[0] == "wrong"
    got = {relu.model.graph.output[0].name: np.asarray(outs[0]).reshape(-1, 1)}
    assert B.classify(relu, [relu.model.graph.output[0].name], got)[0] == "layout"
