"""Paired kernel-level A/B of issue 17 session 8's packed kernels, one thread, in one process.

    python bench/packed_kernels_ab.py [--rounds 40]

* tiles: ``packed_gemm_epi`` (32 x 7 tiles) against ``packed_gemm16_epi`` (16 x 13 tiles) on
  SqueezeNet's conv10 (1000 x 512 x 169, ReLU) and ResNet-50's 7 x 7 / 14 x 14 shapes, the same
  packed weights, the weights cold (a 32 MB buffer written before every call) with X and C warm,
  as in a forward pass; both kernels' outputs checked equal bit for bit;
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
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
