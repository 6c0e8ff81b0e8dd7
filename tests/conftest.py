"""Shared test configuration: the tolerance table, model lookup, the double-import guard."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

# every attribute a test graph carries must be declared by its op spec (refnet.ops.registry)
os.environ.setdefault("REFNET_CHECK_ATTRS", "1")

from refnet import tolerances as _TOLERANCES  # noqa: E402
from refnet.zoo import models_dir  # noqa: E402,F401  (REFNET_MODELS, else ../shared/models beside the checkout)

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # lets tests import the test-side writers: `from writers import ...`
    sys.path.insert(0, str(TESTS_DIR))

# --- tolerances: one table for the whole suite (refnet/tolerances.py) ---------------------
# Each entry is a bound on max|a - b| / max(max|ref|, tiny) unless noted: f32_vs_f64 (a fast
# float32 kernel vs the float64 reference), f32_vs_f64_long (long reductions), vs_cv2 (refnet vs
# cv2.dnn per layer), f64_vs_oracle (reference kernels vs scipy / hand-computed), grad_fd.
TOL = dict(_TOLERANCES.TOL)


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """max|a - ref| / max|ref| (with a floor so an all-zero reference stays meaningful)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs {ref.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    return float(np.max(np.abs(a - ref))) / scale


def assert_close(a: np.ndarray, ref: np.ndarray, tol: str | float, what: str = "") -> None:
    """Assert rel_err(a, ref) <= tolerance (a TOL key or a number)."""
    t = TOL[tol] if isinstance(tol, str) else float(tol)
    e = rel_err(a, ref)
    assert e <= t, f"{what}: relative error {e:.3g} > {t:g}"


def conv_oracle(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 convolution by explicit shifted einsum in float64 (an oracle independent of refnet's kernels)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    co, ci, kh, kw = w.shape
    ho, wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    y = np.zeros((x.shape[0], co, ho, wo))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", x[:, :, i:i + ho, j:j + wo], w[:, :, i, j])
    return y + b[None, :, None, None]


def caffe_inputs(shapes: dict[str, tuple[int, ...]]) -> str:
    """Prototxt declarations ``input: "k" input_shape { dim: ... }`` of named input blobs."""
    return "".join(f'input: "{k}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in s)} }}\n'
                   for k, s in shapes.items())


def cv2_layer(tmp_path: Path, layer: str, inputs: dict[str, np.ndarray], tops: tuple[str, ...] = ()):
    """Run one Caffe layer named "l" (prototxt text, no weights) in cv2.dnn with fusion off, the
    inputs as float32. With ``tops``, every top gets an identity Power consumer (cv2 sizes an
    equal Slice by its consumers) and all tops are returned."""
    import cv2

    p = tmp_path / f"net{len(list(tmp_path.iterdir()))}.prototxt"
    extra = "".join(f'layer {{ name: "o_{t}" type: "Power" bottom: "{t}" top: "o_{t}" }}\n' for t in tops)
    p.write_text(caffe_inputs({k: v.shape for k, v in inputs.items()}) + layer + "\n" + extra)
    net = cv2.dnn.readNetFromCaffe(str(p))
    net.enableFusion(False)
    for k, v in inputs.items():
        net.setInput(np.ascontiguousarray(v, dtype=np.float32), k)
    if tops:
        return list(net.forward([f"o_{t}" for t in tops]))
    return net.forward("l")


@st.composite
def pool_window(draw, kmax: int, smax: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...]]:
    """A pooling window: kernel (kh, kw) in 1..kmax, stride in 1..smax, pads (top, left, bottom,
    right) each smaller than the kernel."""
    kh, kw = draw(st.integers(1, kmax)), draw(st.integers(1, kmax))
    sh, sw = draw(st.integers(1, smax)), draw(st.integers(1, smax))
    pad = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
           draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    return (kh, kw), (sh, sw), pad


def run_threads(work, n: int) -> list[BaseException]:
    """Call ``work(k)`` for k in 0..n-1, each in its own thread, all at once; join them and return
    what they raised (an exception in a thread is otherwise lost, not a test failure)."""
    import threading

    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            work(k)
        except BaseException as e:  # noqa: BLE001 - handed back to the test to assert on
            errors.append(e)

    ts = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


# --- real models --------------------------------------------------------------------------
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def models() -> Path:
    """The REFNET_MODELS folder. Skips outside CI when missing; fails in CI."""
    d = models_dir()
    if d is None:
        if IN_CI:
            pytest.fail("REFNET_MODELS is not set or missing; CI must have ../shared/models")
        pytest.skip("REFNET_MODELS not available")
    return d


def require_model(models: Path, rel: str) -> Path:
    p = models / rel
    if not p.exists():
        if IN_CI:
            pytest.fail(f"model file missing in CI: {p}")
        pytest.skip(f"model file missing: {p}")
    return p


@pytest.fixture(scope="session")
def cv5_python() -> str:
    """The OpenCV 5 interpreter (REFNET_CV5_PYTHON, installed by the Makefile as .venv-cv5).
    Skips outside CI when absent; fails in CI."""
    py = os.environ.get("REFNET_CV5_PYTHON")
    if not py or not Path(py).exists():
        if IN_CI:
            pytest.fail("REFNET_CV5_PYTHON is not set or missing in CI (make test sets it)")
        pytest.skip("no OpenCV 5 interpreter (REFNET_CV5_PYTHON)")
    return py


@pytest.fixture(scope="session")
def cv5(cv5_python):
    """cv2 5.x as a cross-check backend: the cv2@PYTHON worker on :func:`cv5_python`."""
    from refnet.crosscheck.cv2_backend import Cv2WorkerBackend

    return Cv2WorkerBackend(cv5_python)


@pytest.fixture(scope="session")
def images_dir() -> Path:
    d = models_dir()
    cand = d.parent / "images" if d is not None else TESTS_DIR.parent.parent / "shared" / "images"
    if not cand.is_dir():
        if IN_CI:
            pytest.fail(f"images folder missing in CI: {cand}")
        pytest.skip("shared images not available")
    return cand


@pytest.fixture(scope="session", autouse=True)
def _cv2_threads():
    """Deterministic, comparable threading for cv2 comparisons."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def restore_threads():
    """Put refnet's thread settings back as they were (explicit counts or the load-aware default)."""
    from refnet.runtime import threads

    state = dict(threads._STATE)
    yield
    if state["auto"]:
        threads.set_num_threads("auto")
    else:
        threads.set_num_threads(state["numba"], state["blas"])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_sessionfinish(session, exitstatus):  # the double-import guard (DESIGN.md)
    bad = [m for m in ("kernels", "weights_import") if m in sys.modules]
    if bad:
        session.exitstatus = 1
        print(f"\nERROR: bare modules imported (two copies of refnet's code): {bad}", file=sys.stderr)


def perturb_cv2(monkeypatch: pytest.MonkeyPatch, layers: tuple[str, ...] | list[str], change) -> None:
    """Make cv2's per-layer outputs (refnet.crosscheck.backends.cv2_layer_outputs) report
    ``change(output)`` for each of ``layers`` it computed: a cv2 that differs where a test says."""
    from refnet.crosscheck import backends

    real = backends.cv2_layer_outputs

    def broken(cvnet, feeds, names, single, fusion=False, winograd=None):
        out = real(cvnet, feeds, names, single, fusion, winograd)
        for n in layers:
            if n in out:
                out[n] = change(out[n])
        return out

    monkeypatch.setattr(backends, "cv2_layer_outputs", broken)
