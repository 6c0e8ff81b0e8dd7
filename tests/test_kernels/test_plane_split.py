"""Pooling and across-channel LRN over the worker pool (issue 17): with several workers
(refnet.kernels._workers) the fast kernels run their serial builds on blocks of (n, c) planes or
of output channels. Oracles: the same kernel run whole in the calling thread (bit for bit: a plane's
values do not depend on the thread count) and the plain-loop ``_reference`` kernels; odd plane
counts that no block count divides, several images, NaN staying in its plane."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from refnet.kernels import _workers
from refnet.kernels.norm import lrn, lrn_reference
from refnet.kernels.pool import avg_pool, avg_pool_reference, max_pool, max_pool_reference


@pytest.fixture
def split(monkeypatch):
    """3 workers (the caller + 2), every call split however small; yields the block counts of
    the pool's runs."""
    monkeypatch.setattr(_workers, "MIN_BLOCK_WORK", 1)
    monkeypatch.setattr(_workers, "SPLIT_PLANES", True)
    calls: list[int] = []
    real_run = _workers.run
    monkeypatch.setattr(_workers, "run", lambda fn, n: (calls.append(n), real_run(fn, n))[1])
    before = _workers.workers()
    _workers.set_workers(3)
    yield calls
    _workers.set_workers(before)


def _split_and_whole(split, fn):
    """fn() over the pool in several blocks, then whole in this thread."""
    split.clear()
    a = fn()
    assert split and max(split) >= 3, "the split path ran in several blocks"
    _workers.set_workers(1)
    split.clear()
    b = fn()
    assert not split or max(split) == 1
    _workers.set_workers(3)
    return a, b


SHAPES = [(1, 7, 13, 11), (2, 5, 9, 10), (3, 13, 6, 7)]  # (n, c): 7, 10, 39 planes
POOLS = [  # (kernel, stride, pad): separable 3x3, small 2x2, one-row kernel, padded
    (3, 2, 0),
    (2, 2, 0),
    ((1, 3), 1, (0, 1, 0, 1)),
    (3, 1, 1),
    ((3, 2), (2, 1), (1, 0, 0, 1)),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("geom", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_split_equals_whole_and_reference(split, shape, geom, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    k, s, p = geom
    y_split, y_whole = _split_and_whole(split, lambda: max_pool(x, k, s, p))
    np.testing.assert_array_equal(y_split, y_whole)
    np.testing.assert_array_equal(y_split, max_pool_reference(x, k, s, p))
    (ys, ids), (yw, idw) = _split_and_whole(split, lambda: max_pool(x, k, s, p, return_indices=True))
    yr, idr = max_pool_reference(x, k, s, p, return_indices=True)
    np.testing.assert_array_equal(ys, yw)
    np.testing.assert_array_equal(ids, idw)
    np.testing.assert_array_equal(ys, yr)
    np.testing.assert_array_equal(ids, idr)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("geom", POOLS)
@pytest.mark.parametrize("divisor", ["padded", "valid", "kernel"])
def test_avg_pool_split_equals_whole_and_reference(split, shape, geom, divisor, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    k, s, p = geom
    y_split, y_whole = _split_and_whole(split, lambda: avg_pool(x, k, s, p, divisor=divisor))
    np.testing.assert_array_equal(y_split, y_whole)
    ref = avg_pool_reference(x.astype(np.float64), k, s, p, divisor=divisor)
    np.testing.assert_allclose(y_split, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size,beta,k", [(5, 0.75, 1.0), (3, 0.6, 2.0), (7, 0.75, 1.5), (1, 0.9, 1.0), (9, 0.75, 1.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lrn_split_equals_whole_and_reference(split, shape, size, beta, k, dtype, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y_split, y_whole = _split_and_whole(split, lambda: lrn(x, size, 0.2, beta, k))
    np.testing.assert_array_equal(y_split, y_whole)
    ref = lrn_reference(x.astype(np.float64), size, 0.2, beta, k)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y_split, ref, rtol=tol, atol=tol)


def test_lrn_of_a_strided_input(split, rng):
    x = rng.standard_normal((2, 9, 7, 12)).astype(np.float32)[:, ::2, :, ::3]
    y_split, y_whole = _split_and_whole(split, lambda: lrn(x, 3, 0.2, 0.75, 1.0))
    np.testing.assert_array_equal(y_split, y_whole)
    np.testing.assert_allclose(y_split, lrn_reference(x.astype(np.float64), 3, 0.2, 0.75, 1.0), rtol=2e-6)


def test_split_nan_stays_in_its_plane(split, rng):
    x = rng.standard_normal((1, 11, 8, 9)).astype(np.float32)
    x[0, 6, 3, 4] = np.nan
    y = max_pool(x, 3, 2, 1)
    assert split and max(split) >= 3
    bad = np.isnan(y)
    assert bad[0, 6].any() and bad.sum() == bad[0, 6].sum()
    z = lrn(x, 3, 0.2, 0.75, 1.0)
    assert np.isnan(z[0, 5:8, 3, 4]).all() and np.isnan(z).sum() == 3  # its pixel in channels 5..7


def test_small_calls_and_one_worker_run_whole(monkeypatch):
    before = _workers.workers()
    try:
        _workers.set_workers(2)
        monkeypatch.setattr(_workers, "SPLIT_PLANES", False)
        assert _workers.ranges(100, 10**7) == [(0, 100)]  # (REFNET_SPLIT_PLANES unset: off)
        monkeypatch.setattr(_workers, "SPLIT_PLANES", True)
        assert _workers.ranges(64, _workers.MIN_BLOCK_WORK - 1) == [(0, 64)]
        parts = _workers.ranges(7, 10**7)
        assert len(parts) == 7 and parts[0] == (0, 1) and parts[-1] == (6, 7)
        parts = _workers.ranges(1000, 10**7)
        assert len(parts) == 2 * _workers.BLOCKS_PER_THREAD
        assert [lo for lo, _ in parts[1:]] == [hi for _, hi in parts[:-1]] and parts[-1][1] == 1000
        _workers.set_workers(1)
        assert _workers.ranges(1000, 10**9) == [(0, 1000)]
    finally:
        _workers.set_workers(before)


def test_pool_blocks_see_the_callers_errstate(split):
    """numpy's errstate is a context variable: the pool's threads run blocks in the caller's."""
    seen: list[tuple[bool, str]] = []
    other_ran = threading.Event()
    caller = threading.get_ident()

    def block(k: int) -> None:
        mine = threading.get_ident() == caller
        if mine:
            other_ran.wait(30)  # hold the caller until a pool thread took a block
        else:
            other_ran.set()
        seen.append((mine, np.geterr()["over"]))

    with np.errstate(over="ignore"):
        _workers.run(block, 6)
    assert len(seen) == 6 and {e for _, e in seen} == {"ignore"}
    assert any(not mine for mine, _ in seen)
