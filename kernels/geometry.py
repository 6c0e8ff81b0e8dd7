"""Geometry rules, one home: output sizes of convolution, transposed convolution and pooling (Caffe's
ceil mode and ONNX's), SAME padding, and the readers of kernel/stride/pad tuples.

Every layer that slides a window uses these: the kernels (conv.py, pool.py, grad_*.py), the ops'
shape rules (refnet/ops), the ONNX reader (weights_import/onnx_ops.py), the architecture builder
(refnet/archs.py) and the ONNX exporter. Each rule is written (and cited) once here.

- Convolution (Caffe ``ConvolutionLayer::compute_output_shape``, cv2.dnn, Torch7, ONNX ``NOTSET``):
  ``out = floor((size + pb + pe - extent) / stride) + 1`` with ``extent = dilation * (k - 1) + 1``.
- Transposed convolution (Caffe Deconvolution, Torch7 SpatialFullConvolution, ONNX ConvTranspose):
  ``out = (size - 1) * stride - pb - pe + extent + output_padding``.
- Pooling (Caffe ``PoolingLayer::Reshape``): ``out = ceil((size + pb + pe - k) / stride) + 1``
  (floor when ``ceil_mode`` is False), minus one when the input is padded and the last window
  would start inside the end padding: ``(out - 1) * stride >= size + pb``. ONNX's rule
  (``rule="onnx"``) applies that correction in ceil mode whether padded or not, and dilates the
  window. cv2 4.x tests the condition against ``size + pe``: equal for symmetric pads.
- SAME padding (ONNX ``auto_pad``, TF): ``out = ceil(size / stride)``, the total pad
  ``max((out - 1) * stride + extent - size, 0)``, its odd extra pixel at the end (SAME_UPPER) or
  at the beginning (SAME_LOWER).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refnet.errors import ShapeError

IntPair = int | Sequence[int]  # an int or (h, w): stride, dilation, kernel size
Pad = int | Sequence[int]  # an int, (ph, pw) or (top, left, bottom, right)

__all__ = ["pair", "pad4", "conv_output_size", "conv_transpose_output_size", "pool_output_size", "same_pads"]


def pair(v: int | Sequence[int], name: str, *, positive: bool = True, allow_zero: bool = False) -> tuple[int, int]:
    """Normalise an int or a 2-sequence to ``(h, w)``; check positivity."""
    if isinstance(v, (int, np.integer)):
        t = (int(v), int(v))
    else:
        t = tuple(int(i) for i in v)
        if len(t) != 2:
            raise ShapeError(f"{name} must be an int or a pair", expected="2 values", got=v)
    if positive:
        lo = 0 if allow_zero else 1
        if t[0] < lo or t[1] < lo:
            raise ShapeError(f"{name} must be >= {lo}", expected=f">= {lo}", got=t)
    return t  # type: ignore[return-value]


def pad4(v: int | Sequence[int], name: str = "pad") -> tuple[int, int, int, int]:
    """Normalise padding to ``(top, left, bottom, right)``.

    Accepts an int (all sides), ``(ph, pw)`` (symmetric) or ``(top, left, bottom, right)``.
    """
    if isinstance(v, (int, np.integer)):
        t = (int(v),) * 4
    else:
        vals = tuple(int(i) for i in v)
        if len(vals) == 2:
            t = (vals[0], vals[1], vals[0], vals[1])
        elif len(vals) == 4:
            t = vals
        else:
            raise ShapeError(f"{name} must be an int, (ph, pw) or (top, left, bottom, right)", got=v)
    if min(t) < 0:
        raise ShapeError(f"{name} must be non-negative", got=t)
    return t  # type: ignore[return-value]


def conv_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int
) -> int:
    """Output length of a convolution along one axis, Caffe/cv2 rule (floor):
    ``(size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1``.

    Raises ShapeError when the dilated kernel is larger than the padded input.
    """
    size, kernel, stride = int(size), int(kernel), int(stride)
    pad_begin, pad_end, dilation = int(pad_begin), int(pad_end), int(dilation)
    if kernel < 1 or stride < 1 or dilation < 1 or pad_begin < 0 or pad_end < 0 or size < 0:
        raise ShapeError(
            "conv_output_size: kernel, stride, dilation must be >= 1 and size, pads >= 0",
            got=dict(size=size, kernel=kernel, stride=stride, pad=(pad_begin, pad_end),
                     dilation=dilation),
        )
    extent = dilation * (kernel - 1) + 1
    padded = size + pad_begin + pad_end
    if extent > padded:
        raise ShapeError(
            f"dilated kernel extent {extent} (kernel {kernel}, dilation {dilation}) is larger "
            f"than the padded input {padded} (size {size} + pads {pad_begin}+{pad_end})",
            expected=f"<= {padded}",
            got=extent,
        )
    return (padded - extent) // stride + 1


def conv_transpose_output_size(
    size: int,
    kernel: int,
    stride: int,
    pad_begin: int,
    pad_end: int,
    dilation: int,
    output_padding: int = 0,
) -> int:
    """Output length of a transposed convolution along one axis (Caffe Deconvolution /
    Torch SpatialFullConvolution): ``(size-1)*stride - pads + dilation*(kernel-1) + 1 + adj``.
    """
    out = (
        (int(size) - 1) * int(stride)
        - int(pad_begin)
        - int(pad_end)
        + int(dilation) * (int(kernel) - 1)
        + 1
        + int(output_padding)
    )
    if out < 1:
        raise ShapeError(
            "transposed convolution output would be empty (pads larger than the full output)",
            expected=">= 1",
            got=out,
        )
    return out


def pool_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, ceil_mode: bool = True,
    *, dilation: int = 1, rule: str = "caffe",
) -> int:
    """Pooled length along one axis, Caffe rule: ``1 + ceil((size + pb + pe - k) / s)``
    (``floor`` when ``ceil_mode`` is False), minus one when the input is padded and the last
    window would start inside the end padding, i.e. ``(out - 1) * s >= size + pb``.

    For symmetric pads this equals Caffe, Torch7 and cv2.dnn. (cv2 4.x tests the condition
    against ``size + pad_end`` instead, which differs only for asymmetric pads.)
    ``rule="onnx"``: the window spans ``dilation * (k - 1) + 1`` and the last-window correction
    applies in ceil mode (padded or not) and never in floor mode (ONNX MaxPool/AveragePool).
    """
    size, kernel, stride = int(size), int(kernel), int(stride)
    pad_begin, pad_end, dilation = int(pad_begin), int(pad_end), int(dilation)
    if rule not in ("caffe", "onnx"):
        raise ValueError(f"rule must be 'caffe' or 'onnx'; got {rule!r}")
    if kernel < 1 or stride < 1 or dilation < 1 or pad_begin < 0 or pad_end < 0 or size < 1:
        raise ShapeError(
            "pool_output_size: size, kernel, stride must be >= 1 and pads >= 0",
            got=dict(size=size, kernel=kernel, stride=stride, pad=(pad_begin, pad_end)),
        )
    extent = dilation * (kernel - 1) + 1
    span = size + pad_begin + pad_end - extent
    if span < 0:
        raise ShapeError(
            f"pooling kernel {kernel} is larger than the padded input {size + pad_begin + pad_end}"
            f" (size {size} + pads {pad_begin}+{pad_end})",
            expected=f"<= {size + pad_begin + pad_end}",
            got=kernel,
        )
    out = 1 + (-(-span // stride) if ceil_mode else span // stride)
    correct = ceil_mode if rule == "onnx" else bool(pad_begin or pad_end)
    if correct and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1, *, upper: bool = True) -> tuple[int, int]:
    """``(pad_begin, pad_end)`` of SAME padding (ONNX ``auto_pad=SAME_UPPER``/``SAME_LOWER``):
    the output is ``ceil(size / stride)``; the odd extra pixel goes at the end when ``upper``."""
    out = -(-int(size) // int(stride))
    total = max((out - 1) * int(stride) + (int(kernel) - 1) * int(dilation) + 1 - int(size), 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)
