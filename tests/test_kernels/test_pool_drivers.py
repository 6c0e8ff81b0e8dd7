"""One nogil call per thread and layer for the split convolutions (issue 17,
refnet.kernels._blasjit): each worker runs its share of the blocks -- GEMM (NumPy's own
``cblas_?gemm`` called from numba), im2col / Winograd transforms and epilogue -- in one numba
call, taking blocks from an atomic counter. Oracles: the same plan's Python-block path
(``REFNET_POOL_DRIVERS=0``: bit for bit, the same BLAS calls with the same arguments), the
unsplit plan in the calling thread and the float64 reference kernel. Also the busy wait of the
pool (refnet.kernels._spin). Under NUMBA_DISABLE_JIT=1 the drivers and the busy wait are off
and the Python blocks must still give the same results."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from split_fixtures import numba_regions, split_pool  # noqa: F401 - the `pool` and `regions` fixtures

import refnet.kernels.conv as C
from refnet.kernels import _workers
from refnet.kernels._lazyjit import load_numba

JITTING = not load_numba().config.DISABLE_JIT

CASES = [  # (x shape, w shape, conv kwargs, algorithm, which driver)
    ((1, 19, 13, 11), (37, 19, 1, 1), {}, "gemm1x1", "gemm_blocks"),
    ((3, 12, 9, 7), (21, 4, 1, 1), dict(groups=3), "gemm1x1", "gemm_blocks"),
    ((1, 5, 37, 29), (11, 5, 3, 3), dict(stride=2, pad=1), "im2col", "im2col_bands"),
    ((2, 6, 21, 9), (10, 3, 3, 3), dict(pad=(1, 0, 2, 1), groups=2, dilation=(2, 1)), "im2col", "im2col_bands"),
    ((1, 9, 3, 5), (13, 9, 5, 5), dict(pad=2), "im2col", "im2col_small"),  # small map: 2 phases
    ((1, 6, 2, 9), (8, 3, 3, 3), dict(pad=1, groups=2), "im2col", "im2col_small"),  # per group
    ((1, 10, 45, 39), (7, 10, 3, 3), dict(pad=1), "winograd", "wino_bands"),
    ((2, 8, 23, 17), (6, 8, 3, 3), dict(pad=(0, 1, 1, 0)), "winograd", "wino_bands"),
    ((1, 11, 9, 13), (17, 11, 3, 3), dict(pad=1), "winograd", "wino_small"),  # small map: 3 phases
    ((2, 9, 4, 12), (14, 9, 3, 3), dict(pad=(1, 1, 0, 1)), "winograd", "wino_small"),  # per image
    ((1, 6, 64, 57), (9, 6, 3, 3), dict(pad=1), "winograd4", "wino_bands"),  # F(4,3): 36 GEMMs per band
    ((1, 11, 9, 13), (17, 11, 3, 3), dict(pad=1), "winograd4", "wino_small"),
    ((2, 9, 10, 14), (14, 9, 3, 3), dict(pad=(1, 1, 0, 1)), "winograd4", "wino_small"),
]


def _case(case: int, activation, dtype, rng):
    """CASES[case] with seeded data: (x, w, b, slope, conv kwargs, plan, driver name)."""
    xs, ws, kw, alg, driver = CASES[case]
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal(ws) * 0.3).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) * 3
    slope = rng.uniform(0.05, 0.5, ws[0]) if activation == "prelu" else 0.1
    plan = C.conv2d_plan(xs, w, b, activation=activation, negative_slope=slope, algorithm=alg, **kw)
    plan(x)  # (numba loaded and its threads started: the drivers are decided)
    return x, w, b, slope, kw, plan, driver


def _reference(x, w, b, activation, slope, kw) -> np.ndarray:
    return C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                              activation=activation, negative_slope=slope, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [None, "relu", "prelu"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_driver_equals_python_blocks_unsplit_and_reference(pool, monkeypatch, case, activation, dtype, rng):
    x, w, b, slope, kw, plan, driver = _case(case, activation, dtype, rng)
    used = []
    drv = C._drivers()
    assert (drv is not None) == JITTING
    if drv is not None:
        real = getattr(drv, driver)
        monkeypatch.setattr(drv, driver, lambda *a: (used.append(1), real(*a))[1])
    fast = plan(x)
    assert bool(used) == JITTING, "the driver ran (when numba jits)"
    monkeypatch.setenv("REFNET_POOL_DRIVERS", "0")
    assert C._drivers() is None
    python_blocks = plan(x)
    monkeypatch.delenv("REFNET_POOL_DRIVERS")
    _workers.set_workers(1)
    unsplit = plan(x)
    np.testing.assert_array_equal(fast, python_blocks)
    np.testing.assert_allclose(fast, unsplit, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    ref = _reference(x, w, b, activation, slope, kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)


def test_driver_blocks_taken_once_by_every_thread(pool, rng):
    """Each block of a driver call is computed exactly once whichever thread takes it: a split
    1x1 conv of many blocks equals the plain matrix product."""
    x = rng.standard_normal((2, 24, 16, 16)).astype(np.float32)
    w = rng.standard_normal((40, 24, 1, 1)).astype(np.float32)
    plan = C.conv2d_plan(x.shape, w, algorithm="gemm1x1")
    for _ in range(20):
        y = plan(x)
        want = np.einsum("oc,ncp->nop", w[:, :, 0, 0].astype(np.float64), x.reshape(2, 24, -1).astype(np.float64))
        np.testing.assert_allclose(y.reshape(2, 40, -1), want, rtol=1e-4, atol=1e-4)
    # the three phases of a small-map Winograd, repeatedly (a thread must not pass a phase early)
    x = rng.standard_normal((2, 16, 4, 10)).astype(np.float32)  # 2 x 5 tiles per image: small map
    w = (rng.standard_normal((24, 16, 3, 3)) * 0.3).astype(np.float32)
    plan = C.conv2d_plan(x.shape, w, pad=1, algorithm="winograd")
    ref = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), pad=1)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        if C._drivers() is not None:
            real = C._drivers().wino_small
            mp.setattr(C._drivers(), "wino_small", lambda *a: (calls.append(1), real(*a))[1])
        first = plan(x)
    assert bool(calls) == JITTING
    np.testing.assert_allclose(first, ref, rtol=1e-4, atol=1e-4)
    for _ in range(30):
        np.testing.assert_array_equal(plan(x), first)


@pytest.mark.skipif(not JITTING, reason="the busy wait needs numba jitting")
def test_spin_until_sees_another_threads_write():
    from refnet.kernels._spin import reads_per_us, spin_until

    flag = np.zeros(2, np.int64)
    assert not spin_until(flag, 1, 1, 1000)  # times out
    assert spin_until(flag, 0, 0, 0)  # already there

    def later():
        time.sleep(0.02)
        flag[1] = 7

    t = threading.Thread(target=later)
    t.start()
    assert spin_until(flag, 1, 7, 10**12)  # released the GIL meanwhile, saw the write
    t.join()
    assert reads_per_us() >= 1


@pytest.mark.parametrize("spin", [(0.0, 0.0), (300.0, 3000.0)])
def test_pool_with_and_without_busy_wait_runs_every_block_once(spin):
    before_spin = (_workers.SPIN_US, _workers.WAIT_SPIN_US)
    before = _workers.workers()
    _workers.set_spin(*spin)
    _workers.set_workers(2)
    try:
        counts = np.zeros(64, np.int64)
        lock = threading.Lock()

        def fn(k):
            with lock:
                counts[k] += 1

        for n in (1, 2, 5, 64):
            counts[:] = 0
            for _ in range(10):
                _workers.run(fn, n)
                time.sleep(0.0005 * (n == 5))  # (a pause: a pool thread may be asleep or spinning)
            assert (counts[:n] == 10).all() and not counts[n:].any()
    finally:
        _workers.set_spin(*before_spin)
        _workers.set_workers(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [None, "prelu"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_region_equals_pool_drivers_and_reference(pool, regions, monkeypatch, case, activation, dtype, rng):
    """REFNET_NUMBA_DRIVERS: the same drivers launched in one numba parallel region give the
    worker pool's result bit for bit (and the reference's within tolerance); without numba
    jitting the Python blocks run instead."""
    x, w, b, slope, kw, plan, driver = _case(case, activation, dtype, rng)
    used = []
    drv = C._drivers()
    if drv is not None:
        real = drv.PARALLEL[driver]
        monkeypatch.setitem(drv.PARALLEL, driver, lambda *a: (used.append(a[0]), real(*a))[1])
    fast = plan(x)
    multi = JITTING and load_numba().config.NUMBA_NUM_THREADS > 1
    assert bool(used) == multi, "the region ran (when numba jits with several threads)"
    assert all(n == 2 for n in used)
    monkeypatch.setenv("REFNET_NUMBA_DRIVERS", "0")
    pooled = plan(x)
    monkeypatch.setenv("REFNET_POOL_DRIVERS", "0")
    python_blocks = plan(x)
    np.testing.assert_array_equal(fast, pooled)
    np.testing.assert_array_equal(fast, python_blocks)
    ref = _reference(x, w, b, activation, slope, kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)


def test_region_threads_switch(monkeypatch):
    """REFNET_NUMBA_DRIVERS: "1" (default) only on numba's TBB layer, "any" on any layer, "0"
    never; at most numba's thread count; 0 (the pool) for one thread."""
    from refnet.kernels import _parallel

    monkeypatch.setattr(_parallel, "_LAYER", ["workqueue"])
    monkeypatch.setattr(_parallel, "_GET_NUM_THREADS", [lambda: 3])
    monkeypatch.delenv("REFNET_NUMBA_DRIVERS", raising=False)
    assert _parallel.region_drivers() and _parallel.region_threads(2) == 0
    monkeypatch.setattr(_parallel, "_LAYER", ["tbb"])
    assert _parallel.region_threads(2) == 2 and _parallel.region_threads(5) == 3 and _parallel.region_threads(1) == 0
    monkeypatch.setenv("REFNET_NUMBA_DRIVERS", "0")
    assert not _parallel.region_drivers() and _parallel.region_threads(2) == 0
    monkeypatch.setenv("REFNET_NUMBA_DRIVERS", "any")
    monkeypatch.setattr(_parallel, "_LAYER", ["omp"])
    assert _parallel.region_threads(2) == 2


@pytest.mark.skipif(not JITTING, reason="numba's threading layers start only when it jits")
@pytest.mark.parametrize("switch", ["1", "0"])
def test_threading_layer_for_several_threads_is_tbb_when_installed(switch):
    """In a fresh process, 2 threads start numba's TBB layer when the tbb extra is installed
    (found in <sys.prefix>/lib) and REFNET_NUMBA_DRIVERS is on, else workqueue."""
    import os
    import subprocess
    import sys

    from refnet.kernels import _parallel

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["REFNET_NUMBA_DRIVERS"] = switch
    code = ("import numba; from refnet.kernels._parallel import choose_threading_layer as c; "
            "n = int(__import__('sys').argv[1]); c(n); numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS)); "
            "print(numba.threading_layer())")
    got = subprocess.run([sys.executable, "-c", code, "2"], env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    want = "tbb" if switch == "1" and _parallel._load_tbb() else "workqueue"
    assert got.stdout.split()[-1] == want


@pytest.mark.skipif(not JITTING, reason="numba's threading layers start only when it jits")
def test_one_thread_first_then_two_threads_runs_the_regions():
    """A process that runs a forward pass at one thread first (numba's layer starts then and is
    fixed) still runs split convs as numba regions at two threads later: the layer is TBB from
    the start where installed, and at two threads the split conv computes what the float64
    reference does."""
    import os
    import subprocess
    import sys

    from refnet.kernels import _parallel

    if not _parallel._load_tbb():
        pytest.skip("the tbb extra is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "REFNET_NUMBA_DRIVERS")}
    code = """
import numpy as np, numba, refnet
import refnet.kernels.conv as C
from refnet.kernels import _parallel
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
w = rng.standard_normal((128, 64, 3, 3)).astype(np.float32)
refnet.set_num_threads(1)
p = C.conv2d_plan(x.shape, w, pad=1)
p(x)
refnet.set_num_threads(2)
y = p(x)
ref = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), None, pad=1)
print(numba.threading_layer(), _parallel.region_threads(2), float(np.abs(y - ref).max() / np.abs(ref).max()))
"""
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    layer, region, err = got.stdout.split()[-3:]
    assert layer == "tbb" and int(region) == 2
    assert float(err) < 1e-5
