"""Image -> NCHW blob, with cv2.dnn.blobFromImage's semantics.

Resizing uses ``cv2.resize`` (INTER_LINEAR) on purpose: it is what cv2.dnn does, and calling
it makes the blob bit-identical to cv2's, so a per-layer comparison starts from the same
numbers. Everything else (crop, channel swap, mean, scale, layout) is refnet's own code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError

__all__ = ["blob_from_image", "blob_from_images"]


def _as_hwc(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ShapeError("image must be H x W (gray) or H x W x C with C in 1, 3, 4",
                         expected="(H, W[, C])", got=a.shape)
    if a.dtype.kind not in "fiu":
        raise ShapeError("image must be numeric", got=f"dtype {a.dtype}")
    return a


def _mean4(mean: float | Sequence[float], channels: int) -> np.ndarray:
    if np.isscalar(mean):
        # cv2 turns a Python number into Scalar(v, 0, 0, 0): only the first channel gets it
        m = [float(mean)] + [0.0] * (channels - 1)  # type: ignore[arg-type]
    else:
        m = [float(v) for v in mean]  # type: ignore[union-attr]
        if len(m) < channels:
            m += [0.0] * (channels - len(m))  # cv2 Scalar semantics: missing entries are 0
        m = m[:channels]
    return np.asarray(m, dtype=np.float32)


def blob_from_image(img: np.ndarray, scale: float = 1.0, size: tuple[int, int] | None = None,
                    mean: float | Sequence[float] = 0.0, swap_rb: bool = False, crop: bool = False,
                    ) -> np.ndarray:
    """Return a 1xCxHxW float32 blob exactly as ``cv2.dnn.blobFromImage`` builds it.

    ``size`` is (width, height) as in cv2; without ``crop`` the image is resized to it, with
    ``crop`` it is resized (aspect kept) to cover it and centre-cropped. Channels are swapped
    (``swap_rb``) first, then ``mean`` (in the swapped order) is subtracted, then ``scale``
    multiplies. As in cv2, a plain number for ``mean`` is ``Scalar(v, 0, 0, 0)``: it is
    subtracted from the first channel only; pass ``(v, v, v)`` for all channels.
    """
    return blob_from_images([img], scale, size, mean, swap_rb, crop)


def blob_from_images(images: Sequence[np.ndarray], scale: float = 1.0, size: tuple[int, int] | None = None,
                     mean: float | Sequence[float] = 0.0, swap_rb: bool = False, crop: bool = False,
                     ) -> np.ndarray:
    """Several images, all resized to ``size`` -> NxCxHxW float32. As in cv2.dnn.blobFromImages,
    without a size (None or (0, 0)) the first image's size is the size: later images of
    another size are resized (or resized and cropped) to it."""
    import cv2

    from refnet.runtime.budget import check_memory

    if (size is None or tuple(size) == (0, 0)) and images:
        h0, w0 = _as_hwc(images[0]).shape[:2]
        size = (w0, h0)  # cv2: `if (size == Size()) size = images[0].size()`
    if size is not None and tuple(size) != (0, 0) and images:
        tw, th = (max(0, int(v)) for v in size)  # the blob and its float32 working copies, before resizing
        ch = _as_hwc(images[0]).shape[2]
        check_memory(len(images) * tw * th * ch * (4 * 3 + 1), f"a blob of {len(images)}x{ch}x{th}x{tw}")
    planes = []
    for img in images:
        a = _as_hwc(img)
        h, w = a.shape[:2]
        if size is not None and tuple(size) != (0, 0) and (w, h) != tuple(size):
            tw, th = int(size[0]), int(size[1])
            if tw <= 0 or th <= 0:
                raise ShapeError("size must be (width, height) with positive values", got=size)
            if crop:
                f = max(tw / float(w), th / float(h))  # cv2 computes the factor in float
                f = float(np.float32(f))
                a = cv2.resize(a, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
                if a.ndim == 2:
                    a = a[:, :, None]
                y0 = int(0.5 * (a.shape[0] - th))
                x0 = int(0.5 * (a.shape[1] - tw))
                a = a[y0:y0 + th, x0:x0 + tw]
            else:
                a = cv2.resize(a, (tw, th), interpolation=cv2.INTER_LINEAR)
                if a.ndim == 2:
                    a = a[:, :, None]
        a = a.astype(np.float32)
        if swap_rb and a.shape[2] >= 3:
            a = a[:, :, [2, 1, 0] + list(range(3, a.shape[2]))]
        a = (a - _mean4(mean, a.shape[2])) * np.float32(scale)
        planes.append(np.ascontiguousarray(a.transpose(2, 0, 1)))
    if not planes:
        raise ShapeError("no images given")
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ShapeError("images differ in their number of channels", got=sorted(shapes))
    return np.stack(planes).astype(np.float32, copy=False)
