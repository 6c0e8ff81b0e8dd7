"""A/B of the ops math moved into kernels (issue 12): the former refnet/ops code (copied here from git
history, commit 666ac1c) against the kernels the ops now call, on one float32 input, in one process.

    .venv/bin/python bench/moved_ops_ab.py
"""

from __future__ import annotations

import timeit

import numpy as np

from refnet import kernels as K


def old_upsample_bilinear_ac(x: np.ndarray, ho: int, wo: int) -> np.ndarray:
    def ac(n_in: int, n_out: int, dtype: np.dtype) -> tuple:
        r = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = np.arange(n_out, dtype=np.float64) * r
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(dtype)

    h0, h1, lh = ac(x.shape[2], ho, x.dtype)
    w0, w1, lw = ac(x.shape[3], wo, x.dtype)
    one = x.dtype.type(1)
    rows = x[:, :, h0, :] * (one - lh)[:, None] + x[:, :, h1, :] * lh[:, None]
    return np.ascontiguousarray(rows[:, :, :, w0] * (one - lw) + rows[:, :, :, w1] * lw)


def old_mvn_cv2(x: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    x64 = x.astype(np.float64)
    y = x64 - x64.mean(axis=(2, 3), keepdims=True)
    return (y / np.sqrt(np.mean(y * y, axis=(2, 3), keepdims=True) + eps)).astype(x.dtype)


def main() -> None:
    x = np.random.default_rng(0).normal(size=(1, 64, 128, 128)).astype(np.float32)
    pairs = {
        "upsample_bilinear_ac 128->255": (lambda: old_upsample_bilinear_ac(x, 255, 255),
                                          lambda: K.resize_bilinear(x, (255, 255), align_corners=True)),
        "mvn_cv2": (lambda: old_mvn_cv2(x), lambda: K.mvn_cv2(x)),
    }
    for name, (old, new) in pairs.items():
        new()  # compile / warm up
        diff = float(np.max(np.abs(old() - new())))
        t_old, t_new = [], []
        for _ in range(3):  # alternate, keep the best of each
            t_old.append(min(timeit.repeat(old, number=3, repeat=3)) / 3)
            t_new.append(min(timeit.repeat(new, number=3, repeat=3)) / 3)
        print(f"{name:32s} old {min(t_old) * 1e3:8.2f} ms  new {min(t_new) * 1e3:8.2f} ms  "
              f"old/new {min(t_old) / min(t_new):5.2f}  max|diff| {diff:.2g}")


if __name__ == "__main__":
    main()
