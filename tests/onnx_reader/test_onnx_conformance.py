"""refnet against onnx's own node test cases (regenerated from the installed onnx package):
the oracle is each case's stored expected output. See conformance.py for the selection."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")

import conformance as C  # noqa: E402

#: pass counts recorded on onnx 1.23.2 (README "ONNX"); a drop is a regression
FLOOR = {("cnn", "float64"): 495, ("cnn", "float32"): 495, ("extended", "float64"): 184,
         ("extended", "float32"): 184, ("index", "float64"): 26, ("index", "float32"): 26}
SETS = {"cnn": C.CNN_OPS, "extended": C.EXTENDED_OPS, "index": C.INDEX_OPS}


@pytest.fixture(scope="module", params=list(SETS))
def results(request):
    return request.param, C.run_all(("float64", "float32"), SETS[request.param])


def test_pass_count_does_not_drop(results):
    kind, res = results
    for precision, rs in res.items():
        passed = sum(r.status == "pass" for r in rs)
        assert passed >= FLOOR[(kind, precision)], (
            f"{kind} {precision}: {passed}/{len(rs)} pass, floor {FLOOR[(kind, precision)]}; failing: "
            + "; ".join(f"{r.name}: {r.cause}" for r in rs if r.status != "pass"))


def test_every_failure_has_a_written_cause(results):
    _, res = results
    undocumented = {r.name: r.cause for rs in res.values() for r in rs
                    if r.status != "pass" and r.name not in C.KNOWN_FAILURES}
    assert not undocumented, f"failing cases without a cause in KNOWN_FAILURES: {undocumented}"


def test_the_harness_can_fail():
    """A wrong expected output must be reported as a failure (the comparison is live)."""
    import numpy as np

    case = next(c for c in C.cnn_cases() if c.name == "test_relu")
    ins, outs = case.data_sets[0]
    case.data_sets[0] = (ins, [np.asarray(outs[0]) + 1.0])
    try:
        assert C.run_case(case, "float64").status == "fail"
    finally:
        case.data_sets[0] = (ins, outs)
