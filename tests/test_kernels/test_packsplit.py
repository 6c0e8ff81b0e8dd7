"""The packed, packedwide and direct_cin conv kernels split over threads (refnet.kernels._packsplit):
the drivers (as Python under NUMBA_DISABLE_JIT=1) against the float64 reference convolution and
bit for bit against the one-thread kernels (packed GEMM + the plan's epilogue, the wide GEMM, direct_rows),
on ragged shapes (panels and column tiles cut short, rows cut into bands), with residuals and
activations; the unit tables; the conv plan running them in one numba parallel region at
several threads, and the A/B switch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from split_fixtures import counting_pool_runs, numba_regions, split_pool  # noqa: F401 - the fixtures

import refnet.kernels.conv as C
from refnet.kernels import _direct as D
from refnet.kernels import _packgemm as PG
from refnet.kernels import _packsplit as PS
from refnet.kernels import _workers
from refnet.kernels._lazyjit import load_numba

# (x shape, w shape, kwargs): M not a multiple of 32, N not a multiple of 7, padding, strides
PACKED = {
    "1x1": ((1, 24, 5, 9), (70, 24, 1, 1), {}),
    "3x3_pad": ((2, 6, 6, 5), (40, 6, 3, 3), dict(pad=1)),
    "5x5_s2_asym": ((1, 4, 11, 9), (33, 4, 5, 5), dict(stride=2, pad=(2, 1, 0, 2))),
    "1x1_s2": ((2, 24, 9, 11), (40, 24, 1, 1), dict(stride=2)),  # (a subsampled copy: _packgemm.SUBSAMPLE)
}
DIRECT = {
    "3x3_s2": ((1, 3, 9, 75), (16, 3, 3, 3), dict(stride=2)),  # Wo 37: a last tile of 16
    "7x7_s2_pad3": ((2, 3, 8, 63), (24, 3, 7, 7), dict(stride=2, pad=3)),  # Wo 32
}


def _want(x, w, b, activation, kw, res=None):
    y = C.conv2d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    if res is not None:
        y = y + res
    return np.maximum(y, 0) if activation == "relu" else y


def _data(rng, xs, ws):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("m,n,nt,per", [(70, 45, 2, 4), (32, 7, 2, 4), (300, 196, 2, 4), (64, 49, 3, 8), (5, 1, 2, 4)])
def test_packed_table_covers_every_block_once(m, n, nt, per):
    t = PS.packed_table(m, n, nt, per, 0)
    cover = np.zeros((-(-m // PG.MR), n), int)
    for p, n0, n1, q, mode in t:
        assert n0 % PG.NR == 0 and n0 < n1 <= n
        assert (q, mode) == (-1, 0)  # (no prefetch)
        cover[p, n0:n1] += 1
    # with the prefetch: each unit's target the panel of the unit nt on, where that is another
    pt = PS.packed_table(m, n, nt, per, 2)
    assert np.array_equal(pt[:, :3], t[:, :3])
    for j, (p, _n0, _n1, q, mode) in enumerate(pt):
        other = j + nt < len(t) and t[j + nt][0] != p
        assert (q, mode) == ((t[j + nt][0], 2) if other else (-1, 0))
    assert (cover == 1).all()
    assert len(t) >= min(per * nt, cover.shape[0] * -(-n // PG.NR))


def test_direct_table_covers_every_block_once():
    t = PS.direct_table(24, 5, 2, 4)
    cover = np.zeros((3, 5), int)
    for blk, r0, r1 in t:
        cover[blk, r0:r1] += 1
    assert (cover == 1).all() and len(t) == 9


@pytest.mark.parametrize("name", list(PACKED))
@pytest.mark.parametrize("activation,residual", [(None, False), ("relu", False), ("relu", True)])
def test_packed_units_vs_reference_and_one_thread(name, activation, residual, rng):
    xs, ws, kw = PACKED[name]
    x, w, b = _data(rng, xs, ws)
    plan = C.conv2d_plan(xs, w, b, activation=activation, residual=residual, algorithm="packed", **kw)
    co, ho, wo = plan.y_shape[1:]
    r = rng.standard_normal(plan.y_shape).astype(np.float32) if residual else None
    got = np.full(plan.y_shape, np.nan, np.float32)
    one = np.full(plan.y_shape, np.nan, np.float32)
    for i in range(xs[0]):
        args = plan._packed_args(x, got, r, i)
        PS.PARALLEL["packed_units"](2, *args, PS.packed_table(co, ho * wo, 2), np.zeros(1, np.int64))
        for pf in (1, 2):  # the units' weight prefetch (a hint): the same bits
            again = np.full((co, ho * wo), np.nan, np.float32)
            PS.PARALLEL["packed_units"](2, *args[:4], again, *args[5:], PS.packed_table(co, ho * wo, 2, 1, pf),
                                        np.zeros(1, np.int64))
            assert np.array_equal(again, got[i].reshape(co, -1)), pf
        # the one-thread kernel and epilogue (the plan's path at one thread, with numba)
        yi = one[i].reshape(co, ho * wo)
        PG.packed_gemm(plan.packed.wp, *args[1:4], yi)
        if residual:
            C._bias_res_act_cols(yi, r[i].reshape(co, -1), plan.b, plan.res_act, plan.slope, plan.six, 0, ho * wo)
        elif args[-1]:
            C._bias_act_cols(yi, plan.b, plan.act, plan.slope, 0, ho * wo)
    assert_close(got, _want(x, w, b, activation, kw, r), "f32_vs_f64", name)
    assert np.array_equal(got, one), "bit for bit the one-thread kernel"


@pytest.mark.parametrize("name", list(DIRECT))
def test_direct_units_vs_reference_and_one_thread(name, rng):
    xs, ws, kw = DIRECT[name]
    x, w, b = _data(rng, xs, ws)
    plan = C.conv2d_plan(xs, w, b, activation="relu", algorithm="direct_cin", **kw)
    co, ho = plan.y_shape[1:3]
    got = np.full(plan.y_shape, np.nan, np.float32)
    one = np.full(plan.y_shape, np.nan, np.float32)
    d = plan.direct
    for i in range(xs[0]):
        args = plan._direct_args(x, got, None, i)
        PS.PARALLEL["direct_units"](2, *args, PS.direct_table(co, ho, 2, 3), np.zeros(1, np.int64))
        D.direct_rows(d.wp, d._phases(x[i]), d.kofs, d.rowstep, d.b, d.act, d.slope, d.six, one[i])
    assert_close(got, _want(x, w, b, "relu", kw), "f32_vs_f64", name)
    assert np.array_equal(got, one), "bit for bit the one-thread kernel"


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("nbw", [None, 32])
def test_wide_units_vs_reference_and_one_thread(residual, nbw, rng):
    """The wide packed GEMM's split (1x1 stride-1; 3 panels of 8 rows, the last short; 66 columns:
    a last partial tile; ``nbw`` 32: three column blocks)."""
    xs, ws = (2, 16, 6, 11), (20, 16, 1, 1)
    x, w, b = _data(rng, xs, ws)
    plan = C.conv2d_plan(xs, w, b, activation="relu", residual=residual, algorithm="packedwide")
    if nbw:
        plan.wide.nbw = nbw
    co, hw = ws[0], xs[2] * xs[3]
    r = rng.standard_normal(plan.y_shape).astype(np.float32) if residual else None
    got = np.full(plan.y_shape, np.nan, np.float32)
    one = np.full(plan.y_shape, np.nan, np.float32)
    table = PS.wide_table(co, hw, plan.wide.nbw, 2)
    cover = [(nb0, p) for nb0, p0, p1 in table for p in range(p0, p1)]  # every (block, panel) once
    assert sorted(cover) == [(nb0, p) for nb0 in range(0, hw, plan.wide.nbw) for p in range(3)]
    for i in range(xs[0]):
        args = plan._wide_args(x, got, r, i)
        PS.PARALLEL["wide_units"](2, *args, table, np.zeros(1, np.int64))
        yi = one[i].reshape(co, hw)
        PG.packed_gemm_wide(args[0], args[1], yi, *args[3:4], yi if r is None else r[i].reshape(co, hw), *args[5:])
    assert_close(got, _want(x, w, b, "relu", {}, r), "f32_vs_f64", "wide")
    assert np.array_equal(got, one), "bit for bit the one-thread kernel"


def _launch_numba_threads():
    """Start numba's threading layer (the region needs it started: refnet.kernels._parallel)."""
    z = np.zeros((2, 4), np.float32)
    C._bias_act_cols.parallel(z, np.zeros(2, np.float32), 0, np.zeros(2, np.float32), 0, 4)


WIDE = {"wide": ((1, 16, 6, 11), (20, 16, 1, 1), {})}


@pytest.mark.parametrize("alg,cases", [("packed", PACKED), ("direct_cin", DIRECT), ("packedwide", WIDE)])
def test_plans_run_the_split_in_one_region(pool, regions, monkeypatch, alg, cases, rng):
    """With several threads the packed / direct_cin plans run these drivers in one numba region
    (no pool run), bit for bit their one-thread results; REFNET_PACKED_SPLIT=0: the split BLAS
    paths of before (float32 rounding-level differences)."""
    if load_numba().config.DISABLE_JIT:
        pytest.skip("numba parallel regions need the JIT")
    _launch_numba_threads()
    name = {"packed": "packed_units", "direct_cin": "direct_units", "packedwide": "wide_units"}[alg]
    calls = []
    real = PS.PARALLEL[name]
    monkeypatch.setitem(PS.PARALLEL, name, lambda *a: (calls.append(a[0]), real(*a))[1])
    for case, (xs, ws, kw) in cases.items():
        x, w, b = _data(rng, xs, ws)
        plan = C.conv2d_plan(xs, w, b, activation="relu", algorithm=alg, **kw)
        want = _want(x, w, b, "relu", kw)
        calls.clear()
        split, runs = counting_pool_runs(plan, x)
        # (one region per image, 2 numba threads)
        assert runs == [] and calls == [2] * xs[0] and plan._units[0] == 2, case
        assert_close(split, want, "f32_vs_f64", case)
        monkeypatch.setenv(PS.ENV, "0")
        calls.clear()
        assert_close(plan(x), want, "f32_vs_f64_long", case)
        assert calls == [], f"{case}: switched off"
        monkeypatch.delenv(PS.ENV)
        _workers.set_workers(1)
        assert np.array_equal(split, plan(x)), f"{case}: one thread"
        _workers.set_workers(3)


def test_twins_parallel_threshold_on_tbb(monkeypatch):
    """At several threads a Twin runs its parallel build from TBB_MIN_WORK work elements on the
    TBB layer, from PARALLEL_MIN_WORK on the others (both builds give the same results:
    tests/test_kernels/test_conv_fast.py)."""
    import refnet.kernels._parallel as P

    def body(y):
        return y

    t = P.Twin(body, 0)
    ran = []
    monkeypatch.setattr(t, "parallel", lambda y: ran.append("parallel"))
    monkeypatch.setattr(t, "_serial", lambda y: ran.append("serial"))
    monkeypatch.setattr(P, "_GET_NUM_THREADS", [lambda: 2])
    monkeypatch.setattr(P, "PARALLEL_MIN_WORK", 1000)
    monkeypatch.setattr(P, "TBB_MIN_WORK", 100)
    for tbb in (True, False):
        monkeypatch.setattr(P, "_tbb_layer", lambda tbb=tbb: tbb)
        ran.clear()
        for size in (99, 100, 999, 1000):
            t(np.zeros(size, np.float32))
        want = ["serial", "parallel", "parallel", "parallel"] if tbb else ["serial", "serial", "serial", "parallel"]
        assert ran == want
