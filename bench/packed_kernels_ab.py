"""Paired kernel-level A/B of issue 17 session 8's packed kernels, one thread, in one process.

    python bench/packed_kernels_ab.py [--rounds 40]

* tiles: ``packed_gemm_epi`` (32 x 7 tiles) against ``packed_gemm16_epi`` (16 x 13 tiles) on
  SqueezeNet's conv10 (1000 x 512 x 169, ReLU) and ResNet-50's 7 x 7 / 14 x 14 shapes, the same
  packed weights, the weights cold (a 32 MB buffer written before every call) with X and C warm,
  as in a forward pass; both kernels' outputs checked equal bit for bit;
* ``--drivers``: instead, the packed drivers' A/B switches of session 8 (packed2) on ResNet-50's
  7 x 7 / 14 x 14 shapes with a residual and SqueezeNet's conv10 (cold weights, bits checked): a
  tile call per tile against one per row panel (:data:`PACKED_RUN`, the ``step`` arguments) and the
  epilogue per row against per panel (:data:`PANEL_EPI`), the scalar stores against the vector
  transpose (:data:`VSTORE`, session 8 packed3), and the fixed vs per-k cost of the
  32 x 7 tiles: hot calls at K = 128..1024 on 1024 x 196, a least-squares line;
* ``--cold``: instead, the packed GEMM's next-panel weight prefetch (session 8, packed3) on
  ResNet-50's 14 x 14 / 7 x 7 1x1 shapes and SqueezeNet's conv10 (ReLU): hot calls (everything in
  the caches) against cold weights (a 96 MB buffer written before each call, X and C read back)
  with the prefetch into L2 (prefetcht1, ``prefetch`` = 1), into all levels (prefetcht0, 2:
  :data:`PREFETCH_L1`) and none (0); bits checked;
* gemv: ResNet-50's fully connected layer (1000 x 2048, one row), ``x @ w.T`` (the BLAS, as the
  generic gemm / linear ops run it) against ``gemv_packed`` on the packed weights, cold weights.

Rounds alternate the variants; prints the minimum and median ms of each and the ratio of the
medians. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TILE_SHAPES = ((1000, 512, 169), (512, 2048, 49), (2048, 512, 49), (1024, 256, 196), (256, 1024, 196))


def _paired(fns: dict, rounds: int, flush: np.ndarray, warm: tuple = ()) -> dict:
    ts: dict = {k: [] for k in fns}
    for i in range(rounds):
        for name in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            flush += 1
            for a in warm:
                a.sum()
            t = time.perf_counter()
            fns[name]()
            ts[name].append(time.perf_counter() - t)
    return ts


def _line(label: str, ts: dict) -> str:
    a, b = (np.median(v) for v in ts.values())
    return label + "  " + "  ".join(f"{k} {min(v) * 1e3:.3f} / {np.median(v) * 1e3:.3f} ms" for k, v in ts.items()) + \
        f"  (min / median); B/A {b / a:.3f}"


DRIVER_SHAPES = ((1024, 256, 196, True), (2048, 512, 49, True), (1024, 512, 196, True), (1000, 512, 169, False))


def _drivers(rounds: int) -> int:
    from threadpoolctl import threadpool_limits

    from refnet.kernels import _packgemm as PG

    threadpool_limits(1)
    rng = np.random.default_rng(0)
    flush = np.ones(8 << 20, np.float32)
    six = np.float32(6)
    for m, k, n, res in DRIVER_SHAPES:
        w, x = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        wp, b, r = PG.pack_weights(w), rng.standard_normal(m).astype(np.float32), rng.standard_normal((m, n)).astype(
            np.float32)
        offs, sl = PG.matrix_offsets(k, n), np.zeros(m, np.float32)
        tall = PG.tall16_fits(offs[1])
        for switch, variants in (("PACKED_RUN", ((7, False, True), (0, False, True))),
                                 ("PANEL_EPI", ((0, False, True), (0, True, True))),
                                 ("VSTORE", ((0, True, False), (0, True, True)))):
            cs = {v: np.empty((m, n), np.float32) for v in variants}

            def call(v, cs=cs, wp=wp, x=x, b=b, r=r, offs=offs, sl=sl, tall=tall, res=res) -> None:
                step, pepi, vs = v
                args = (wp, x.reshape(-1), *offs, cs[v], PG.PREFETCH, True, b, r.reshape(-1), res, 1, sl, six)
                if tall:
                    PG.packed_gemm16_epi(*args, pepi, False, min(step, 1), vs, vs)  # (VSTORE16 too)
                else:
                    PG.packed_gemm_epi(*args, step, pepi, False, vs)

            fns = {f"{switch}={v != variants[0]}": (lambda v=v, call=call: call(v)) for v in variants}
            for f in fns.values():
                f()
            if not np.array_equal(*cs.values()):
                raise SystemExit(f"{switch} changed the bits")
            print(_line(f"{switch} {m} x {k} x {n}{' + R' if res else ''}:", _paired(fns, rounds, flush, (x, r))))
    ks, n, m = (128, 256, 512, 1024), 196, 1024
    best = []
    for k in ks:
        w, x = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        wp, c = PG.pack_weights(w), np.empty((m, n), np.float32)
        PG.packed_gemm(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, True)
        ts = []
        for _ in range(rounds):
            t = time.perf_counter()
            PG.packed_gemm(wp, x.reshape(-1), *PG.matrix_offsets(k, n), c, True)
            ts.append(time.perf_counter() - t)
        best.append(min(ts))
        print(f"32 x 7 tiles {m} x {k} x {n}, hot, no epilogue: {min(ts) * 1e3:.3f} ms, "
              f"{2 * m * k * n / min(ts) / 1e9:.1f} GFLOP/s")
    fixed, per_k = np.polyfit(ks, best, 1)[::-1]
    tiles = (m // 32) * -(-n // 7)
    print(f"line: fixed {fixed * 1e3:.3f} ms ({fixed / tiles * 1e9:.0f} ns per tile), per k "
          f"{per_k / tiles * 1e9:.2f} ns per tile ({2 * 32 * 7 / (per_k / tiles) / 1e9:.0f} GFLOP/s in the k loop); "
          f"share of the fixed cost at K = 256 {fixed / (fixed + 256 * per_k):.2f}")
    return 0


COLD_SHAPES = ((1024, 256, 196), (256, 1024, 196), (2048, 512, 49), (512, 2048, 49), (512, 4608, 49),
               (1000, 512, 169))


def _cold(rounds: int) -> int:
    from threadpoolctl import threadpool_limits

    from refnet.kernels import _packgemm as PG

    threadpool_limits(1)
    rng = np.random.default_rng(0)
    flush = np.ones(24 << 20, np.float32)
    six = np.float32(6)
    variants = {"hot": 2, "cold_t1": 1, "cold_t0": 2, "cold_none": 0}
    for m, k, n in COLD_SHAPES:
        w, x = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        wp, b = PG.pack_weights(w), np.zeros(m, np.float32)
        offs = PG.matrix_offsets(k, n)
        kern = PG.packed_gemm16_epi if PG.tall16_fits(offs[1]) else PG.packed_gemm_epi
        cs = {v: np.empty((m, n), np.float32) for v in variants}

        def call(v: str, wp=wp, x=x, b=b, offs=offs, kern=kern, cs=cs) -> None:
            kern(wp, x.reshape(-1), *offs, cs[v], variants[v], True, b, b, False, 1, b, six)

        for v in variants:
            call(v)
        ts: dict = {v: [] for v in variants}
        for i in range(rounds):
            for v in (list(variants) if i % 2 == 0 else list(variants)[::-1]):
                flush += 1
                x.sum()
                cs[v].sum()
                if v == "hot":
                    call(v)
                t = time.perf_counter()
                call(v)
                ts[v].append(time.perf_counter() - t)
        if not all(np.array_equal(c, cs["hot"]) for c in cs.values()):
            raise SystemExit("the prefetch changed the bits")
        med = {v: np.median(t) for v, t in ts.items()}
        print(f"{m} x {k} x {n} ({wp.nbytes / 1e6:.1f} MB): " + "  ".join(
            f"{v} {min(t) * 1e3:.3f} / {med[v] * 1e3:.3f}" for v, t in ts.items()) +
            f" ms (min / median); t0/t1 {med['cold_t0'] / med['cold_t1']:.3f}, cold_t0/hot "
            f"{med['cold_t0'] / med['hot']:.3f}, cold_t1/hot {med['cold_t1'] / med['hot']:.3f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--drivers", action="store_true", help="the run / panel-epilogue switches and the K line")
    ap.add_argument("--cold", action="store_true", help="the weight prefetch: hot vs cold, prefetcht0 / t1 / none")
    args = ap.parse_args(argv)
    if args.cold:
        return _cold(args.rounds)
    if args.drivers:
        return _drivers(args.rounds)
    from threadpoolctl import threadpool_limits

    from refnet.kernels import _gemv
    from refnet.kernels import _packgemm as PG

    threadpool_limits(1)
    rng = np.random.default_rng(0)
    flush = np.ones(8 << 20, np.float32)
    for m, k, n in TILE_SHAPES:
        w = rng.standard_normal((m, k)).astype(np.float32)
        x = rng.standard_normal((k, n)).astype(np.float32)
        wp, b = PG.pack_weights(w), np.zeros(m, np.float32)
        kofs, coffs = PG.matrix_offsets(k, n)
        cs = {name: np.empty((m, n), np.float32) for name in ("32x7", "16x13")}
        kernels = {"32x7": PG.packed_gemm_epi, "16x13": PG.packed_gemm16_epi}

        def call(name: str, x=x, wp=wp, b=b, kofs=kofs, coffs=coffs, cs=cs, kernels=kernels) -> None:
            c = cs[name]
            kernels[name](wp, x.reshape(-1), kofs, coffs, c, PG.PREFETCH, True, b, c.reshape(-1), False, 1, b,
                          np.float32(6))

        fns = {name: (lambda name=name: call(name)) for name in cs}
        for f in fns.values():
            f()
        if not np.array_equal(cs["32x7"], cs["16x13"]):
            raise SystemExit("the 16 x 13 tiles differ from the 32 x 7 tiles")
        ts = _paired(fns, args.rounds, flush, (x, *cs.values()))
        print(_line(f"tiles {m} x {k} x {n}:", ts))
    w = rng.standard_normal((1000, 2048)).astype(np.float32)
    x = rng.standard_normal((1, 2048)).astype(np.float32)
    wp, y = PG.pack_weights(w), np.empty(1000, np.float32)
    fns = {"blas": lambda: x @ w.T, "gemv_packed": lambda: _gemv.gemv_packed(wp, x[0], y)}
    for f in fns.values():
        f()
    print(_line("fc 1000 x 2048, one row:", _paired(fns, args.rounds, flush)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
