"""The split GEMMs of the fast convolution (issue 17): with several worker threads
(refnet.kernels._workers) every conv algorithm that runs a GEMM cuts it into blocks (bands of
output rows, row x column blocks, Winograd frequencies) run by single-threaded GEMMs on a
pool. Oracles: the float64 reference kernel (conv2d_reference) and the same plan run unsplit
in the calling thread; odd worker counts and shapes that no block size divides. Also the pool
itself: every block exactly once, errors re-raised, concurrent callers and nested calls."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from split_fixtures import numba_regions, split_pool  # noqa: F401 - the `pool` and `regions` fixtures

import refnet.kernels.conv as C
from refnet.kernels import _workers
from refnet.kernels._lazyjit import load_numba

# (x shape, w shape, conv kwargs, algorithm): sizes chosen so no block count divides them
CASES = [
    ((1, 19, 13, 11), (37, 19, 1, 1), {}, "gemm1x1"),  # few columns: row blocks
    ((1, 7, 41, 43), (5, 7, 1, 1), {}, "gemm1x1"),  # few rows: column blocks
    ((3, 12, 9, 7), (21, 4, 1, 1), dict(groups=3), "gemm1x1"),  # several images x groups
    ((1, 5, 37, 29), (11, 5, 3, 3), dict(stride=2, pad=1), "im2col"),  # bands
    ((1, 9, 3, 5), (13, 9, 5, 5), dict(pad=2), "im2col"),  # small map: one im2col, split GEMM
    ((2, 6, 11, 9), (10, 3, 3, 3), dict(pad=(1, 0, 2, 1), groups=2, dilation=(2, 1)), "im2col"),
    ((1, 10, 45, 39), (7, 10, 3, 3), dict(pad=1), "winograd"),  # bands of tile rows
    ((1, 11, 9, 13), (17, 11, 3, 3), dict(pad=1), "winograd"),  # small map: split 16 GEMMs
    ((2, 8, 23, 17), (6, 8, 3, 3), dict(pad=(0, 1, 1, 0)), "winograd"),
    ((1, 13, 9, 11), (13, 1, 3, 3), dict(pad=1, groups=13), "depthwise"),  # small planes: flat 3x3
    ((2, 5, 70, 61), (10, 1, 3, 3), dict(stride=2, pad=(1, 0, 0, 1), groups=5), "depthwise"),  # 3x3, x2
    ((1, 7, 12, 10), (7, 1, 3, 3), dict(pad=2, dilation=2, groups=7), "depthwise"),
    ((3, 6, 9, 8), (12, 1, 5, 5), dict(pad=2, stride=(1, 2), groups=6), "depthwise"),  # general kernel
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("activation", [None, "relu", "prelu", "relu6"])
def test_split_equals_unsplit_and_reference(pool, case, activation, rng):
    xs, ws, kw, alg = CASES[case]
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.3).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) * 3
    slope = rng.uniform(0.05, 0.5, ws[0]) if activation == "prelu" else 0.1
    plan = C.conv2d_plan(xs, w, b, activation=activation, negative_slope=slope, algorithm=alg, **kw)
    calls = []
    real_run = _workers.run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_workers, "run", lambda fn, n: (calls.append(n), real_run(fn, n))[1])
        split = plan(x)
    assert calls and max(calls) >= 3, "the split path ran in several blocks"
    _workers.set_workers(1)
    unsplit = plan(x)
    ref = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                             activation=activation, negative_slope=slope, **kw)
    np.testing.assert_allclose(split, unsplit, rtol=1e-5, atol=1e-5)
    if alg == "depthwise":  # no GEMM: every output plane computed by the same loops
        np.testing.assert_array_equal(split, unsplit)
    np.testing.assert_allclose(split, ref, rtol=1e-4, atol=1e-4)


def test_small_map_winograd_transforms_run_in_bands(pool, rng, monkeypatch):
    """Small maps, Python blocks (REFNET_POOL_DRIVERS=0; the one-call drivers: test_pool_drivers):
    input transform, the 16 GEMMs and output transform each over the pool; the transforms in
    bands of tile rows (exact: every tile is computed the same way)."""
    monkeypatch.setenv("REFNET_POOL_DRIVERS", "0")
    xs, ws = (1, 11, 9, 13), (17, 11, 3, 3)  # 5 x 7 tiles
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.3).astype(np.float32)
    plan = C.conv2d_plan(xs, w, None, pad=1, algorithm="winograd")
    calls = []
    real_run = _workers.run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_workers, "run", lambda fn, n: (calls.append(n), real_run(fn, n))[1])
        split = plan(x)
    assert len(calls) == 3 and calls[0] == calls[2] == 5 and calls[1] > 1, calls  # in, GEMMs, out
    _workers.set_workers(1)
    np.testing.assert_allclose(split, plan(x), rtol=1e-5, atol=1e-5)
    ref = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), pad=1)
    np.testing.assert_allclose(split, ref, rtol=1e-4, atol=1e-4)


def test_split_nan_stays_in_its_receptive_field(pool, rng):
    x = rng.standard_normal((1, 6, 17, 19)).astype(np.float32)
    x[0, 2, 8, 9] = np.nan
    w = rng.standard_normal((9, 6, 3, 3)).astype(np.float32)
    y = C.conv2d_plan(x.shape, w, pad=1, algorithm="im2col")(x)
    bad = np.argwhere(np.isnan(y[0, 0]))
    assert bad.min(axis=0).tolist() == [7, 8] and bad.max(axis=0).tolist() == [9, 10]


def test_pool_runs_every_block_once_and_reraises():
    before = _workers.workers()
    _workers.set_workers(3)
    try:
        seen = []
        lock = threading.Lock()

        def fn(k):
            with lock:
                seen.append(k)

        for n in (0, 1, 2, 7, 101):
            seen.clear()
            _workers.run(fn, n)
            assert sorted(seen) == list(range(n))

        def bad(k):
            if k == 5:
                raise ValueError("block 5")

        with pytest.raises(ValueError, match="block 5"):
            _workers.run(bad, 9)
        seen.clear()
        _workers.run(fn, 4)  # still usable after an error
        assert sorted(seen) == [0, 1, 2, 3]
    finally:
        _workers.set_workers(before)


def test_pool_concurrent_and_nested_callers():
    """Four threads call run() at once, and blocks call run() themselves: all complete, each
    block once (a caller that finds the pool busy runs its blocks itself)."""
    before = _workers.workers()
    _workers.set_workers(2)
    try:
        counts = np.zeros((4, 50), np.int64)

        def caller(t):
            def inner(k):
                counts[t, k] += 1

            def outer(j):
                _workers.run(lambda k: inner(5 * j + k), 5)

            for _ in range(20):
                _workers.run(outer, 10)

        ts = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in ts)
        assert (counts == 20).all()
    finally:
        _workers.set_workers(before)


def test_set_num_threads_sizes_the_pool_and_the_blas(monkeypatch, restore_threads):
    from threadpoolctl import threadpool_info

    from refnet.runtime import threads as T

    monkeypatch.setenv("REFNET_CONV_SPLIT", "1")
    T.set_num_threads(2)
    assert _workers.workers() == 2 and T.get_num_threads()["gemm"] == 2
    assert all(d["num_threads"] == 1 for d in threadpool_info() if d["user_api"] == "blas")
    monkeypatch.setenv("REFNET_CONV_SPLIT", "0")
    T.set_num_threads(2)
    assert _workers.workers() == 1
    T.set_num_threads(1)
    assert _workers.workers() == 1


@pytest.mark.parametrize("shape,n_out", [((1, 37), 203), ((5, 3, 7, 3), 131), ((2, 64), 17)])
def test_split_linear_equals_unsplit_and_reference(pool, shape, n_out, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    k = int(np.prod(shape[1:]))
    w = rng.standard_normal((n_out, k)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    split = C.linear(x, w, b)
    _workers.set_workers(1)
    unsplit = C.linear(x, w, b)
    ref = C.linear_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(split, unsplit, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xs,ws,kw", [((1, 192, 28, 28), (64, 192, 1, 1), {}), ((1, 832, 7, 7), (384, 832, 1, 1), {}),
                                      ((1, 3, 112, 112), (64, 3, 7, 7), dict(stride=2, pad=3)),
                                      ((1, 64, 28, 28), (96, 64, 3, 3), dict(pad=1)),
                                      ((1, 32, 14, 14), (64, 32, 5, 5), dict(pad=2)),
                                      ((1, 96, 14, 14), (208, 96, 3, 3), dict(pad=1))])
@pytest.mark.parametrize("launch", ["pool", "region1", "region2"])
def test_split_at_real_sizes_matches_unsplit(xs, ws, kw, launch, rng, request, monkeypatch):
    """With the real block limits (no block under _BLAS_EXACT_MACS) the split result equals the
    unsplit one to the last bit on this project's machine (OpenBLAS SkylakeX); asserted to 1e-6
    so that another BLAS build may round a block differently. Over the worker pool, and as one
    numba parallel region with 1 or 2 blocks per thread (REFNET_NUMBA_DRIVERS, the reference
    as a second oracle). (The BLAS paths at one thread: the packed-weight GEMM that one thread
    uses on small maps sums in another order, tests/test_kernels/test_packgemm.py.)"""
    monkeypatch.setenv("REFNET_PACKGEMM", "0")
    if launch == "pool":
        monkeypatch.setenv("REFNET_NUMBA_DRIVERS", "0")
    else:
        request.getfixturevalue("regions")
        monkeypatch.setattr(C, "_REGION_BLOCKS_PER_THREAD", int(launch[-1]))
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    plan = C.conv2d_plan(xs, w, b, activation="relu", **kw)
    before = _workers.workers()
    try:
        _workers.set_workers(2)
        split = plan(x)
        _workers.set_workers(1)
        unsplit = plan(x)
    finally:
        _workers.set_workers(before)
    np.testing.assert_allclose(split, unsplit, rtol=1e-6, atol=1e-6)
    numba = load_numba()
    regions = launch != "pool" and not numba.config.DISABLE_JIT and numba.config.NUMBA_NUM_THREADS > 1
    assert C._per_thread(2) == (int(launch[-1]) if regions and C._drivers() is not None else C._BLOCKS_PER_THREAD)
    ref = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="relu", **kw)
    np.testing.assert_allclose(split, ref, rtol=1e-4, atol=1e-4)
