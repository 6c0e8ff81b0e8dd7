"""Float32 error of Winograd F(4x4, 3x3) by interpolation points, on a real model's 3x3 convs
(issue 17: F(4,3) on yufacedetectnet v2's conv3_x puts float32 1.1e-5..3.3e-5 from float64,
over the suite's 1e-5; would other points do?).

    python bench/winograd_points.py [yufacedetectnet-open-v2] [--image voc2007_000001.jpg]

Every 3x3 stride-1 pad-1 conv of the Caffe model (REFNET_MODELS/yufacedetectnet_caffe/), on
its float64 input for one real image (REFNET_MODELS/../images, 320x240 as the suite feeds it),
through a NumPy Winograd F(m, 3) in float32 built from the points' Toom-Cook matrices
(A^T: the points' powers; G: ``p^k / prod(p - q)``; B^T: the coefficients of ``prod(x - q)``
without the point, the point at infinity last), against a float64 direct correlation: per layer
``max |y32 - y64| / max |y64|``, then the maximum and median over the layers per point set.
The kernels' own F(2,3) and F(4,3) (Lavin's 0, +-1, +-2) use these points with rows scaled
differently, so the numbers show the points' effect, not the kernels' exact error.

Measured (2026-12-06, yufacedetectnet v2, 18 convs; max / median over the layers):
F(2,3) 3.3e-7 / 1.8e-7; F(4,3) Lavin 0,+-1,+-2 3.1e-6 / 1.2e-6; 0,+-1,+-1/2 2.3e-6 / 1.1e-6;
0,+-1,1/2,-2 1.4e-6 / 5.9e-7; 0,+-1,-1/2,2 1.3e-6 / 6.1e-7; 0,+-1/2,+-2 1.7e-6 / 7.1e-7;
0,+-1,+-3/4 2.1e-6 / 9.8e-7. The mixed points (Barabasz et al.'s choice 0, -1, 1, 1/2, -2)
halve Lavin's error; the symmetric +-1/2 alone does not; all stay 4-7x over F(2,3), so the
1e-5 end-to-end bound (Lavin's F(4,3): 1.1e-5..3.3e-5) would at best be met narrowly: not
wired into the kernels. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from fractions import Fraction as Fr
from pathlib import Path

import numpy as np

POINT_SETS = {
    "F(2,3) 0,+-1": ([0, 1, -1], 2),
    "F(4,3) Lavin 0,+-1,+-2": ([0, 1, -1, 2, -2], 4),
    "F(4,3) 0,+-1,+-1/2": ([0, 1, -1, Fr(1, 2), Fr(-1, 2)], 4),
    "F(4,3) 0,+-1,1/2,-2": ([0, 1, -1, Fr(1, 2), -2], 4),
    "F(4,3) 0,+-1,-1/2,2": ([0, 1, -1, Fr(-1, 2), 2], 4),
    "F(4,3) 0,+-1/2,+-2": ([0, Fr(1, 2), Fr(-1, 2), 2, -2], 4),
    "F(4,3) 0,+-1,+-3/4": ([0, 1, -1, Fr(3, 4), Fr(-3, 4)], 4),
}


def _poly(roots: list[Fr]) -> list[Fr]:
    """Ascending coefficients of prod(x - q) over ``roots``."""
    c = [Fr(1)]
    for q in roots:
        c = [(c[i - 1] if i else Fr(0)) - q * (c[i] if i < len(c) else Fr(0)) for i in range(len(c) + 1)]
    return c


def toom_cook(points: list, m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T (m, n), G (n, r), B^T (n, n) of F(m, r) on the finite ``points`` (n - 1 of them) and infinity."""
    n = m + r - 1
    pts = [Fr(p) for p in points]
    at, g, bt = np.zeros((m, n)), np.zeros((n, r)), np.zeros((n, n))
    for j, p in enumerate(pts):
        others = pts[:j] + pts[j + 1:]
        f = np.prod([p - q for q in others])
        at[:, j] = [float(p ** i) for i in range(m)]
        g[j] = [float(p ** k / f) for k in range(r)]
        bt[j, : n - 1] = [float(v) for v in _poly(others)]
    at[m - 1, n - 1] = g[n - 1, r - 1] = 1
    bt[n - 1] = [float(v) for v in _poly(pts)]
    return at, g, bt


def winograd32(x: np.ndarray, w: np.ndarray, b: np.ndarray, mats: tuple, m: int) -> np.ndarray:
    """3x3 correlation, pad 1, stride 1, of x (C, H, W) in float32 by F(m, 3) with ``mats``."""
    at, g, bt = mats
    c, h, wd = x.shape
    n = m + 2
    th, tw = -(-h // m), -(-wd // m)
    xp = np.zeros((c, th * m + 2, tw * m + 2), np.float32)
    xp[:, 1:h + 1, 1:wd + 1] = x
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (n, n), axis=(1, 2))[:, ::m, ::m]
    bt32, at32 = bt.astype(np.float32), at.astype(np.float32)
    v = np.einsum("ai,cxyij,bj->abcxy", bt32, tiles, bt32, dtype=np.float32, optimize=True)
    u = np.einsum("ai,ocij,bj->aboc", g, w.astype(np.float64), g).astype(np.float32)
    mm = np.einsum("aboc,abcxy->aboxy", u, v, dtype=np.float32, optimize=True)
    y = np.einsum("ia,aboxy,jb->oxiyj", at32, mm, at32, dtype=np.float32, optimize=True)
    return y.reshape(w.shape[0], th * m, tw * m)[:, :h, :wd] + b.astype(np.float32)[:, None, None]


def direct64(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
    return np.einsum("chwij,ocij->ohw", win, w) + b[:, None, None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="yufacedetectnet-open-v2")
    ap.add_argument("--image", default="voc2007_000001.jpg")
    a = ap.parse_args(argv)
    import cv2

    import refnet

    models = Path(os.environ.get("REFNET_MODELS", Path(__file__).resolve().parents[2] / "shared" / "models"))
    stem = models / "yufacedetectnet_caffe" / a.model
    net = refnet.load_caffe(str(stem.with_suffix(".prototxt")), str(stem.with_suffix(".caffemodel")))
    blob = cv2.dnn.blobFromImage(cv2.imread(str(models.parent / "images" / a.image)), 1.0, (320, 240), (0, 0, 0))
    mats = {k: (toom_cook(p, m), m) for k, (p, m) in POINT_SETS.items()}
    rng = np.random.default_rng(0)
    for k, ((at, g, bt), m) in mats.items():  # each set computes a 1-D correlation (float64)
        d, k3 = rng.normal(size=m + 2), rng.normal(size=3)
        assert np.allclose(at @ ((g @ k3) * (bt @ d)), [d[i:i + 3] @ k3 for i in range(m)]), k
    convs = [nd for nd in net.graph.nodes if nd.op == "conv" and nd.params["weight"].shape[2:] == (3, 3)]
    ins = net.forward(blob, outputs=[nd.inputs[0] for nd in convs], precision="float64")
    errs: dict[str, list[float]] = {k: [] for k in mats}
    print("layer, C_in->C_out HxW, max |y32 - y64| / max |y64|: " + " | ".join(mats))
    for nd in convs:
        x = ins[nd.inputs[0]][0]
        w = nd.params["weight"]
        b = nd.params.get("bias", np.zeros(w.shape[0]))
        y = direct64(x, w, b)
        row = []
        for k, (mt, m) in mats.items():
            errs[k].append(float(np.abs(winograd32(x.astype(np.float32), w, b, mt, m) - y).max() / np.abs(y).max()))
            row.append(f"{errs[k][-1]:.1e}")
        print(f"{nd.name[:24]:24s} {x.shape[0]:3d}->{w.shape[0]:3d} {x.shape[1]}x{x.shape[2]}: " + " ".join(row))
    for k, v in errs.items():
        print(f"{k:26s} max {max(v):.2e}  median {statistics.median(v):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
