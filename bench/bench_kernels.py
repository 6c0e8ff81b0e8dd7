"""Kernel benchmarks: conv / deconv / pooling shapes of MobileNet-SSD, GoogLeNet and
fast-neural-style, each implementation side by side (``impl``), plus numpy.matmul float32 on
GEMMs of the same size as the machine's yardstick.

    .venv/bin/pytest bench/bench_kernels.py --benchmark-only --benchmark-group-by=group
    .venv/bin/pytest bench/bench_kernels.py --benchmark-disable     # CI smoke run: once each

``reference`` runs the float64 reference kernels on float64 data (refnet's
``precision="float64"``), ``fast`` the optimised kernels on float32 data as the executor runs
them (``conv2d_plan`` / ``conv_transpose2d_plan``: planned once, outside the timed calls). JIT compilation and
the first call happen outside the timed calls. ``extra_info`` records the work (``gflop``) and,
when timing is on, the rate of the fastest round (``gflops``).

``cv2`` runs the same layer as a single-layer cv2.dnn net on float32 data (cv2's thread count
is 1 unless ``REFNET_BENCH_THREADS`` says otherwise, as for numba and the BLAS): pooling from a
prototxt alone, convolutions from a prototxt + caffemodel written by the test suite's Caffe
writer (tests/writers/caffe_writer.py) with the benchmark's weights, transposed convolutions
with ``output_padding`` from a Torch7 file written by tests/writers/t7_writer.py (Caffe's
Deconvolution has no output padding; the weights are the writer's own seeded ones).

Adding an implementation: write a factory ``(case) -> zero-argument callable`` and register it
in ``RUNNERS[op][impl]``; the test parametrisation picks it up.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from refnet.kernels.conv import (
    conv2d_plan,
    conv2d_reference,
    conv_transpose2d_plan,
    conv_transpose2d_reference,
)
from refnet.kernels.pool import avg_pool, avg_pool_reference, max_pool, max_pool_reference

_TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(_TESTS) not in sys.path:  # the test suite's model writers (cv2 single-layer nets)
    sys.path.insert(0, str(_TESTS))

THREADS = int(os.environ.get("REFNET_BENCH_THREADS", "1"))


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """One thread count for numba, the BLAS and cv2 (refnet.net.set_num_threads)."""
    import cv2  # noqa: F401  (imported first so that set_num_threads reaches it)

    from refnet.net import set_num_threads

    set_num_threads(THREADS)
    yield


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    x: tuple[int, int, int, int]
    w: tuple[int, int, int, int] = (0, 0, 0, 0)  # conv/deconv weights; pooling: unused
    kw: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.group}:{self.name}"


CONV_CASES = [
    Case("mobilenet_ssd", "conv0_3x3s2_3-32@300", (1, 3, 300, 300), (32, 3, 3, 3),
         dict(stride=2, pad=1)),
    Case("mobilenet_ssd", "dw3x3_32@150", (1, 32, 150, 150), (32, 1, 3, 3),
         dict(pad=1, groups=32)),
    Case("mobilenet_ssd", "pw1x1_32-64@150", (1, 32, 150, 150), (64, 32, 1, 1)),
    Case("mobilenet_ssd", "dw3x3s2_64@150", (1, 64, 150, 150), (64, 1, 3, 3),
         dict(stride=2, pad=1, groups=64)),
    Case("mobilenet_ssd", "pw1x1_512-512@19", (1, 512, 19, 19), (512, 512, 1, 1)),
    Case("googlenet", "conv1_7x7s2_3-64@224", (1, 3, 224, 224), (64, 3, 7, 7),
         dict(stride=2, pad=3)),
    Case("googlenet", "3x3_96-128@28", (1, 96, 28, 28), (128, 96, 3, 3), dict(pad=1)),
    Case("googlenet", "1x1_192-64@28", (1, 192, 28, 28), (64, 192, 1, 1)),
    Case("googlenet", "5x5_16-32@28", (1, 16, 28, 28), (32, 16, 5, 5), dict(pad=2)),
    Case("fast_neural_style", "9x9_3-32@240x320", (1, 3, 240, 320), (32, 3, 9, 9), dict(pad=4)),
    Case("fast_neural_style", "3x3_128-128@60x80", (1, 128, 60, 80), (128, 128, 3, 3),
         dict(pad=1)),
]

DECONV_CASES = [
    # fast-neural-style upsampling: 3x3 stride 2, 128 -> 64, 60x80 -> 120x160
    Case("fast_neural_style", "deconv3x3s2_128-64@60x80", (1, 128, 60, 80), (128, 64, 3, 3),
         dict(stride=2, pad=1, output_padding=1)),
]

POOL_CASES = [
    Case("pool", "googlenet_pool1_max3x3s2_64@112", (1, 64, 112, 112), kw=dict(kernel=3, stride=2)),
    Case("pool", "googlenet_inception_max3x3s1p1_480@28", (1, 480, 28, 28),
         kw=dict(kernel=3, stride=1, pad=1)),
    Case("pool", "googlenet_avg7x7_1024@7", (1, 1024, 7, 7), kw=dict(kernel=7, stride=1)),
    Case("pool", "enet_max2x2s2_idx_16@256x512", (1, 16, 256, 512),
         kw=dict(kernel=2, stride=2, return_indices=True)),
    Case("pool", "avg3x3s2p1_valid_64@56", (1, 64, 56, 56),
         kw=dict(kernel=3, stride=2, pad=1, divisor="valid")),
]

# numpy.matmul float32, (M, K) @ (K, N): the GEMMs the conv paths above reduce to
GEMM_CASES = [
    ("3x3_128-128@60x80", (128, 1152, 4800)),
    ("conv1_7x7s2_3-64@224", (64, 147, 12544)),
    ("pw1x1_512-512@19", (512, 512, 361)),
    ("square_1024", (1024, 1024, 1024)),
]


def _is_avg(case: Case) -> bool:
    return "avg" in case.name


# --------------------------------------------------------------------------------------
# runners: impl -> (case -> zero-argument callable)
# --------------------------------------------------------------------------------------


def _data(case: Case, dtype, deconv: bool = False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.x).astype(dtype)
    if case.w == (0, 0, 0, 0):
        return x, None, None
    fan_in = case.w[1] * case.w[2] * case.w[3]
    w = (rng.standard_normal(case.w) / np.sqrt(fan_in)).astype(dtype)
    b = rng.standard_normal(case.w[1] * case.kw.get("groups", 1) if deconv else case.w[0])
    return x, w, b.astype(dtype)


def _conv_runner(fn, dtype) -> Callable[[Case], Callable[[], object]]:
    def make(case: Case):
        x, w, b = _data(case, dtype)
        return lambda: fn(x, w, b, **case.kw)

    return make


def _deconv_runner(fn, dtype) -> Callable[[Case], Callable[[], object]]:
    def make(case: Case):
        x, w, b = _data(case, dtype, deconv=True)
        return lambda: fn(x, w, b, **case.kw)

    return make


def _pool_runner(max_fn, avg_fn, dtype) -> Callable[[Case], Callable[[], object]]:
    def make(case: Case):
        x, _, _ = _data(case, dtype)
        fn = avg_fn if _is_avg(case) else max_fn
        return lambda: fn(x, **case.kw)

    return make


def _cv2_pool_runner(case: Case) -> Callable[[], object]:
    """A single-layer cv2.dnn Caffe Pooling net (prototxt only, no weights needed)."""
    import cv2

    kw = case.kw
    k, s = kw["kernel"], kw.get("stride", kw["kernel"])
    p = kw.get("pad", 0)
    if kw.get("divisor", "padded") != "padded":
        pytest.skip("cv2's Caffe Pooling divides by the padded window only")
    n, c, h, w = case.x
    text = (
        f'name: "b"\ninput: "data"\ninput_dim: {n}\ninput_dim: {c}\ninput_dim: {h}\n'
        f'input_dim: {w}\nlayer {{ name: "p" type: "Pooling" bottom: "data" top: "p"\n'
        f"  pooling_param {{ pool: {'AVE' if _is_avg(case) else 'MAX'} kernel_size: {k} "
        f"stride: {s} pad: {p} }} }}\n"
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pool.prototxt"
        path.write_text(text)
        net = cv2.dnn.readNetFromCaffe(str(path))
    x, _, _ = _data(case, np.float32)
    net.setInput(x, "data")

    def run():
        net.setInput(x, "data")
        return net.forward("p")

    return run


def _cv2_conv_runner(case: Case) -> Callable[[], object]:
    """A single-layer cv2.dnn Caffe Convolution net with the case's weights (float32)."""
    import cv2
    from writers.caffe_writer import Layer, NetSpec, write_net

    x, w, b = _data(case, np.float32)
    kw = case.kw
    sh, sw = _pair(kw.get("stride", 1))
    pad = kw.get("pad", 0)
    ph, pw = _pair(pad if isinstance(pad, int) or len(pad) == 2 else (pad[0], pad[1]))
    dh, dw = _pair(kw.get("dilation", 1))
    p = {"num_output": case.w[0], "kernel_h": case.w[2], "kernel_w": case.w[3], "stride_h": sh,
         "stride_w": sw, "pad_h": ph, "pad_w": pw, "group": kw.get("groups", 1)}
    if (dh, dw) != (1, 1):
        p["dilation"] = dh
    spec = NetSpec([Layer("c", "Convolution", ["data"], ["c"], {"convolution_param": p}, [w, b])],
                   {"data": case.x})
    with tempfile.TemporaryDirectory() as d:
        proto, model = write_net(spec, Path(d))
        net = cv2.dnn.readNetFromCaffe(str(proto), str(model))

    def run():
        net.setInput(x, "data")
        return net.forward("c")

    return run


def _cv2_deconv_runner(case: Case) -> Callable[[], object]:
    """A single-layer cv2.dnn net: Torch7 SpatialFullConvolution (with adjW/adjH, which Caffe's
    Deconvolution lacks), seeded weights of the case's shape."""
    import cv2
    from writers.t7_writer import nn_Sequential, nn_SpatialFullConvolution, save

    if case.kw.get("groups", 1) != 1 or case.kw.get("dilation", 1) not in (1, (1, 1)):
        pytest.skip("Torch7 SpatialFullConvolution has no groups or dilation")
    x, _, _ = _data(case, np.float32)
    ci, co, kh, kw = case.w
    sh, sw = _pair(case.kw.get("stride", 1))
    ph, pw = _pair(case.kw.get("pad", 0))
    ah, aw = _pair(case.kw.get("output_padding", 0))
    mod = nn_Sequential(nn_SpatialFullConvolution(np.random.default_rng(0), ci, co, kw, kh, sw, sh, pw, ph, aw, ah))
    with tempfile.TemporaryDirectory() as d:
        path = save(Path(d) / "deconv.t7", mod)
        net = cv2.dnn.readNetFromTorch(str(path))

    def run():
        net.setInput(x)
        return net.forward()

    return run


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_plan_runner(case: Case) -> Callable[[], object]:
    """The fast conv as the executor runs it: planned once (weights laid out, algorithm chosen)."""
    x, w, b = _data(case, np.float32)
    plan = conv2d_plan(x.shape, w, b, **case.kw)
    return lambda: plan(x)


def _deconv_plan_runner(case: Case) -> Callable[[], object]:
    x, w, b = _data(case, np.float32, deconv=True)
    plan = conv_transpose2d_plan(x.shape, w, b, **case.kw)
    return lambda: plan(x)


RUNNERS: dict[str, dict[str, Callable[[Case], Callable[[], object]]]] = {
    "conv": {
        "reference": _conv_runner(conv2d_reference, np.float64),
        "fast": _conv_plan_runner,
        "cv2": _cv2_conv_runner,
    },
    "deconv": {
        "reference": _deconv_runner(conv_transpose2d_reference, np.float64),
        "fast": _deconv_plan_runner,
        "cv2": _cv2_deconv_runner,
    },
    "pool": {
        "reference": _pool_runner(max_pool_reference, avg_pool_reference, np.float64),
        "fast": _pool_runner(max_pool, avg_pool, np.float32),
        "cv2": _cv2_pool_runner,
    },
}


# --------------------------------------------------------------------------------------
# work counts
# --------------------------------------------------------------------------------------


def conv_gflop(case: Case, out_shape) -> float:
    _, cig, kh, kw = case.w
    return 2.0 * float(np.prod(out_shape)) * cig * kh * kw / 1e9


def deconv_gflop(case: Case) -> float:
    n, ci, h, w = case.x
    _, cog, kh, kw = case.w
    return 2.0 * n * ci * h * w * cog * kh * kw / 1e9


def pool_gop(case: Case, out_shape) -> float:
    k = case.kw["kernel"]
    return float(np.prod(out_shape)) * k * k / 1e9


def _record(benchmark, work: float, unit: str) -> None:
    benchmark.extra_info[unit] = round(work, 6)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        best = stats.stats.min
        if best > 0:
            benchmark.extra_info[unit + "s"] = round(work / best, 2)


def _run(benchmark, fn: Callable[[], object]):
    fn()  # JIT compilation and first-touch allocations outside the timed calls
    return benchmark(fn)


# --------------------------------------------------------------------------------------
# benchmarks
# --------------------------------------------------------------------------------------


def _params(cases: list[Case], op: str):
    return [
        pytest.param(case, impl, id=f"{case.id}-{impl}")
        for case in cases
        for impl in RUNNERS[op]
    ]


@pytest.mark.parametrize("case,impl", _params(CONV_CASES, "conv"))
def test_conv2d(benchmark, case: Case, impl: str):
    benchmark.group = f"conv {case.id}"
    out = _run(benchmark, RUNNERS["conv"][impl](case))
    _record(benchmark, conv_gflop(case, out.shape), "gflop")


@pytest.mark.parametrize("case,impl", _params(DECONV_CASES, "deconv"))
def test_conv_transpose2d(benchmark, case: Case, impl: str):
    benchmark.group = f"deconv {case.id}"
    _run(benchmark, RUNNERS["deconv"][impl](case))
    _record(benchmark, deconv_gflop(case), "gflop")


@pytest.mark.parametrize("case,impl", _params(POOL_CASES, "pool"))
def test_pool2d(benchmark, case: Case, impl: str):
    benchmark.group = f"pool {case.name}"
    out = _run(benchmark, RUNNERS["pool"][impl](case))
    y = out[0] if isinstance(out, tuple) else out
    _record(benchmark, pool_gop(case, y.shape), "gop")


@pytest.mark.parametrize("name,mkn", [pytest.param(n, s, id=n) for n, s in GEMM_CASES])
def test_numpy_matmul_float32(benchmark, name: str, mkn: tuple[int, int, int]):
    """The machine's BLAS GEMM rate, the yardstick for the conv GFLOP/s above."""
    benchmark.group = "gemm numpy.matmul float32"
    m, k, n = mkn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    _run(benchmark, lambda: np.matmul(a, b, out=c))
    _record(benchmark, 2.0 * m * k * n / 1e9, "gflop")
