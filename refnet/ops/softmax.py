"""``softmax``, ``log_softmax`` (kernels: refnet.kernels.softmax)."""

from __future__ import annotations

from refnet import kernels as K
from refnet.ops.registry import Attr, attrs, axis_of, kern, prepares, register

_AXIS = {"axis": Attr(1, int)}


def _softmax_shape(node, shapes):
    axis_of(node, attrs(node)["axis"], len(shapes[0]))
    return [tuple(shapes[0])]


@register("softmax", shape=_softmax_shape, attrs=_AXIS, fresh=True)
def _softmax(node, xs, p, ctx):
    return kern("softmax", ctx)(xs[0], axis=attrs(node)["axis"])


@prepares("softmax")
def _softmax_prepare(node, p, shapes, ctx):
    """One-row float32 softmaxes (a classifier's last layer): the row kernel called straight."""
    step = K.softmax_step(tuple(shapes[0]), ctx.dtype, attrs(node)["axis"])
    return None if step is None else (step, False)


@register("log_softmax", shape=_softmax_shape, attrs=_AXIS, fresh=True)
def _log_softmax(node, xs, p, ctx):
    return kern("log_softmax", ctx)(xs[0], axis=attrs(node)["axis"])
