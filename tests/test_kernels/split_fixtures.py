"""The split tests' shared fixture (imported by test_conv_split and test_pool_drivers; not a
conftest.py: the suite imports tests/conftest.py as ``conftest``)."""

from __future__ import annotations

import pytest

import refnet.kernels.conv as C
from refnet.kernels import _workers
from refnet.kernels._lazyjit import load_numba


@pytest.fixture(name="pool")
def split_pool(monkeypatch):
    """3 workers (the caller + 2), and every call split however small (test_conv_split,
    test_pool_drivers), over the worker pool (REFNET_NUMBA_DRIVERS=0: test_pool_drivers' `regions`
    fixture turns the numba-region launch on)."""
    monkeypatch.setenv("REFNET_NUMBA_DRIVERS", "0")
    monkeypatch.setattr(C, "_SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(C, "_BLAS_EXACT_MACS", 1)
    monkeypatch.setattr(C, "_SPLIT_MIN_COLS", 4)
    monkeypatch.setattr(C, "_SPLIT_MIN_ROWS", 2)
    monkeypatch.setattr(_workers, "MIN_BLOCK_WORK", 1)  # (the Winograd transforms of small maps too)
    monkeypatch.setattr(_workers, "SPLIT_PLANES", True)
    before = _workers.workers()
    _workers.set_workers(3)
    yield
    _workers.set_workers(before)


@pytest.fixture(name="regions")
def numba_regions(monkeypatch):
    """The split drivers as one numba parallel region per call (REFNET_NUMBA_DRIVERS=any: with
    whatever threading layer this process runs) at 2 numba threads, with as many blocks per
    thread as the pool (under the `pool` fixture's tiny block limits OpenBLAS's small-matrix
    kernel rounds differently, so other blocks would give other bits)."""
    monkeypatch.setenv("REFNET_NUMBA_DRIVERS", "any")
    monkeypatch.setattr(C, "_REGION_BLOCKS_PER_THREAD", C._BLOCKS_PER_THREAD)
    numba = load_numba()
    if numba.config.DISABLE_JIT:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(before)


def counting_pool_runs(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), runs)``: the result and the sizes of the worker-pool runs it made."""
    from refnet.kernels import _workers

    runs = []
    real_run = _workers.run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_workers, "run", lambda f, n: (runs.append(n), real_run(f, n))[1])
        return fn(*args, **kwargs), runs
