"""Model benchmarks: refnet float32, refnet float64 and cv2.dnn side by side on the issue's
reference models (``impl`` in {refnet-f32, refnet-f64, cv2}; one ``group`` per model).

    .venv/bin/pytest bench/bench_models.py --benchmark-only --benchmark-group-by=group
    .venv/bin/pytest bench/bench_models.py --benchmark-disable      # CI smoke run: once each

Random-weight models are written once per session into a temporary folder by the test suite's
own writers: GoogLeNet and MobileNet-SSD from the arch-only prototxts of REFNET_MODELS
(tests/writers/caffe_writer.write_random_caffemodel), fast-neural-style (instance norm) from
tests/writers/t7_writer.write_fast_neural_style. Real models (ENet, yufacedetectnet v2,
UltraFace RFB-320) come from REFNET_MODELS; cases whose files are missing are skipped.

Numba, the BLAS and cv2 use ``REFNET_BENCH_THREADS`` threads (default 1; ``auto``: refnet's
load-aware default and cv2's own), set by :func:`refnet.net.set_num_threads`. Every case runs
once (JIT, planning, cv2 set-up) before the timed calls. Fair timing (issue 17): each of the
``REFNET_BENCH_ROUNDS`` timed rounds (default 7) is preceded, untimed, by a pause of
``REFNET_BENCH_PAUSE`` seconds (default 0.1) and a warm-up call of the same engine, so that
the worker threads of the engine timed before (which spin-wait for a while after each call)
are asleep and this engine's are awake. ``extra_info`` holds the work (``gflop``, 2 x MACs, grouped convs per
group) and, when timing is on, the rate of the median round (``gflops``). ``refnet-f64`` (the
readable reference path) runs only where the issue sets a target for it (GoogLeNet) and on the
small face detectors, so that a single run of bench/ stays short.

ONNX rows (issue 17): ResNet-50, SqueezeNet and GoogLeNet (``inception_v1``) are the onnx
package's light zoo graphs with seeded weights (:func:`refnet.archs.seed_onnx_weights`, seed
0), read by refnet's own ONNX reader; beside refnet and cv2 4.x (``readNetFromONNX``) they run
in ``ort`` (onnxruntime, ORT_ENABLE_ALL, the same intra-op thread count) and ``cv2-5`` (OpenCV
5 in ``REFNET_CV5_PYTHON`` or the checkout's ``.venv-cv5``; skipped without it). ``cv2-5``
runs in its own interpreter (``cv2_worker.py --serve``) and each round's time is the one
measured inside the worker around ``setInput`` + ``forward`` (a clock fed to pytest-benchmark),
with the same pause and warm-up protocol.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from refnet.zoo import models_dir as _models_dir  # REFNET_MODELS, else ../shared/models beside the checkout

_TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(_TESTS) not in sys.path:  # the test suite's model writers
    sys.path.insert(0, str(_TESTS))

_THREADS = os.environ.get("REFNET_BENCH_THREADS", "1")
THREADS: int | str = "auto" if _THREADS == "auto" else int(_THREADS)
PAUSE = float(os.environ.get("REFNET_BENCH_PAUSE", "0.1"))
ROUNDS = int(os.environ.get("REFNET_BENCH_ROUNDS", "7"))
IMPLS = ("refnet-f32", "refnet-f64", "cv2")
ONNX_IMPLS = ("refnet-f32", "cv2", "ort", "cv2-5")


@dataclass(frozen=True)
class ModelCase:
    name: str
    files: tuple[str, ...]  # relative to REFNET_MODELS, or "gen:<key>" for a generated file
    shape: tuple[int, int, int, int]
    impls: tuple[str, ...] = ("refnet-f32", "cv2")


CASES = [
    ModelCase("googlenet_random", ("arch_only/bvlc_googlenet/deploy.prototxt", "gen:googlenet"),
              (1, 3, 224, 224), IMPLS),
    ModelCase("googlenet_random_batch8", ("arch_only/bvlc_googlenet/deploy.prototxt", "gen:googlenet"),
              (8, 3, 224, 224)),
    ModelCase("mobilenet_ssd_random", ("arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt",
                                       "gen:mobilenet_ssd"), (1, 3, 300, 300)),
    ModelCase("fast_neural_style_instance_norm_random", ("gen:fns_instance_norm",), (1, 3, 480, 640)),
    ModelCase("enet_cityscapes", ("enet_cityscapes_torch/model-best.cpu.net",), (1, 3, 256, 512)),
    ModelCase("yufacedetectnet_v2", ("yufacedetectnet_caffe/yufacedetectnet-open-v2.prototxt",
                                     "yufacedetectnet_caffe/yufacedetectnet-open-v2.caffemodel"),
              (1, 3, 240, 320), IMPLS),
    ModelCase("ultraface_rfb320", ("ultraface_caffe/RFB-320.prototxt", "ultraface_caffe/RFB-320.caffemodel"),
              (1, 3, 240, 320), IMPLS),
    ModelCase("resnet50_onnx_random", ("onnx:resnet50",), (1, 3, 224, 224), ONNX_IMPLS),
    ModelCase("squeezenet_onnx_random", ("onnx:squeezenet",), (1, 3, 224, 224), ONNX_IMPLS),
    ModelCase("googlenet_inception_v1_onnx_random", ("onnx:inception_v1",), (1, 3, 224, 224), ONNX_IMPLS),
]


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Callable[[str], Path]:
    """Seeded random-weight model files, written on first use."""
    folder = tmp_path_factory.mktemp("bench_models")
    made: dict[str, Path] = {}

    def get(key: str) -> Path:
        if key not in made:
            from writers.caffe_writer import write_random_caffemodel
            from writers.t7_writer import write_fast_neural_style

            models = _models_dir()
            if key.startswith("onnx:"):
                onnx = pytest.importorskip("onnx")
                import refnet

                light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
                made[key] = refnet.archs.seed_onnx_weights(light / f"light_{key[5:]}.onnx",
                                                           folder / f"{key[5:]}.onnx", seed=0)
            elif key == "fns_instance_norm":
                made[key] = write_fast_neural_style(folder / "fns_instance_norm.t7", "instance_norm", seed=0)
            else:
                proto = {"googlenet": "arch_only/bvlc_googlenet/deploy.prototxt",
                         "mobilenet_ssd": "arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt"}[key]
                if models is None or not (models / proto).exists():
                    pytest.skip(f"{proto} not available (REFNET_MODELS)")
                out = folder / f"{key}.caffemodel"
                write_random_caffemodel(models / proto, out, seed=0)
                made[key] = out
        return made[key]

    return get


@pytest.fixture(scope="session")
def loaded(generated) -> Callable[[ModelCase], tuple[object, list[str]]]:
    """refnet Nets per case (loaded once per session) and their file paths."""
    import refnet

    cache: dict[tuple[str, ...], tuple[object, list[str]]] = {}

    def get(case: ModelCase):
        if case.files not in cache:
            models = _models_dir()
            paths = []
            for f in case.files:
                if f.startswith(("gen:", "onnx:")):
                    paths.append(str(generated(f[4:] if f.startswith("gen:") else f)))
                    continue
                if models is None or not (models / f).exists():
                    pytest.skip(f"model file {f} not available (REFNET_MODELS)")
                paths.append(str(models / f))
            cache[case.files] = (refnet.load(*paths), paths)
        return cache[case.files]

    return get


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import cv2  # noqa: F401  (imported first so that set_num_threads reaches it)

    from refnet.net import set_num_threads

    set_num_threads(THREADS)
    yield


def _engine_threads(impl: str) -> None:
    """The engine's thread counts (refnet's calls also set cv2's when explicit; auto leaves it)."""
    import cv2

    from refnet.net import set_num_threads

    if impl in ("ort", "cv2-5"):  # thread counts fixed at session / worker start
        return
    if impl == "cv2":
        cv2.setNumThreads(-1 if THREADS == "auto" else int(THREADS))
    else:
        set_num_threads(THREADS)


def _runner(case: ModelCase, impl: str, net, paths: list[str], x: np.ndarray) -> Callable[[], object]:
    if impl.startswith("refnet"):
        from refnet.runtime.smallnet import end_numpy_phase

        end_numpy_phase()  # the steady state: mid-sized nets on numba from the first timed round
        precision = "float32" if impl == "refnet-f32" else "float64"
        return lambda: net.forward(x, precision=precision)
    import cv2

    from refnet.net import set_num_threads

    if paths[0].endswith(".onnx"):
        cv = cv2.dnn.readNetFromONNX(paths[0])
        outs = list(cv.getUnconnectedOutLayersNames())

        def run_onnx():
            cv.setInput(x, net.input_names[0])
            return cv.forward(outs)

        return run_onnx
    if paths[0].endswith((".t7", ".net")):
        cv = cv2.dnn.readNetFromTorch(paths[0])
    else:
        cv = cv2.dnn.readNetFromCaffe(paths[0], paths[1])
    set_num_threads(THREADS)
    outs = list(net.output_names)

    def run():
        cv.setInput(x)
        return cv.forward(outs)

    return run


class _WorkerClock:
    """A clock for pytest-benchmark that advances by the durations an out-of-process engine
    reports: the wrapped call adds the worker's measured seconds, so ``end - start`` of a round
    is exactly that measurement (no pipe round trip counted)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wrap(self, timed: Callable[[], float]) -> Callable[[], None]:
        def call() -> None:
            self.t += timed()

        return call


@pytest.mark.parametrize("case,impl", [pytest.param(c, i, id=f"{c.name}-{i}") for c in CASES for i in c.impls])
def test_model_forward(benchmark, loaded, request, tmp_path, case: ModelCase, impl: str):
    from refnet.bench import model_gflop

    net, paths = loaded(case)
    x = np.random.default_rng(0).uniform(0.0, 1.0, case.shape).astype(np.float32)
    if impl in ("ort", "cv2-5"):
        from refnet.bench_peers import Cv2WorkerTimer, cv5_python, ort_runner

        feeds = {net.input_names[0]: x}
        if impl == "ort":
            fn = ort_runner(paths[0], feeds, THREADS)[0]
        else:
            py = cv5_python()
            if py is None:
                pytest.skip("no OpenCV 5 interpreter (REFNET_CV5_PYTHON / make cv5)")
            timer = Cv2WorkerTimer(py, paths[0], feeds, THREADS, workdir=str(tmp_path))
            request.addfinalizer(timer.close)
            clock = _WorkerClock()
            fn = clock.wrap(timer)
            benchmark._timer = clock  # the round's time is the worker's own measurement
    else:
        fn = _runner(case, impl, net, paths, x)
    _engine_threads(impl)
    fn()  # JIT, planning, cv2 set-up outside the timed calls
    benchmark.group = f"model {case.name} {'x'.join(map(str, case.shape))}"
    benchmark.extra_info["threads"] = THREADS
    gflop = model_gflop(net, {net.input_names[0]: case.shape})
    benchmark.extra_info["gflop"] = round(gflop, 4)

    def pause_and_warm():  # untimed, before every timed round (see the module docstring)
        _engine_threads(impl)
        time.sleep(PAUSE)
        fn()

    benchmark.pedantic(fn, setup=pause_and_warm, rounds=ROUNDS, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median > 0:
        benchmark.extra_info["gflops"] = round(gflop / stats.stats.median, 2)
        benchmark.extra_info["images_per_s"] = round(case.shape[0] / stats.stats.median, 2)
