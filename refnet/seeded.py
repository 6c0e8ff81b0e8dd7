"""Seeded random weights that keep activations in range, for any architecture-only model.

He-scaled weights keep activations O(1) only through nets whose normalisation layers undo the
drift; through a BN-free net (OpenCV's ResNet-10 SSD face detector) they grow by a constant
factor per layer and overflow (4.96e+205, then inf). :func:`calibrate_scales` fixes that the
way data-dependent initialisation does (Mishkin & Matas, "All you need is a good init", LSUV):
one float64 forward pass on a calibration blob, layer by layer in execution order; each
convolution / deconvolution / fully connected layer's output is divided by its RMS, and the
factor is returned so the writer multiplies that layer's weights and bias by it. Because a
layer's output is linear in (weights, bias), the rescaled pass is exactly the pass of the
rescaled net, so one pass calibrates every layer.

:func:`seeded_darknet_weights` writes a Darknet ``.weights`` file for a ``.cfg``: the header
(major 0, minor 2, revision 0, a 64-bit ``seen``), then per convolutional layer in cfg order
biases, [BN scales, rolling means, rolling variances,] weights, and per connected layer
biases, weights[, BN scales, means, variances] (darknet's parser.c ``load_weights``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["calibrate_scales", "calibration_blob", "seeded_darknet_weights", "WEIGHTED_OPS"]

WEIGHTED_OPS = ("conv", "deconv", "linear")


def calibration_blob(shape: tuple[int, ...], preprocess: Any = None, seed: int = 0) -> np.ndarray:
    """A seeded calibration input: a random 8-bit image through ``preprocess`` (a
    :class:`refnet.zoo.Preprocess`) when given, else a mean-subtracted 8-bit image's range
    (uniform in [-128, 128), the Caffe convention) of ``shape``; refused up front (BudgetError)
    over the memory budget (12 bytes an element: the float64 draw and the float32 blob)."""
    from refnet.runtime.budget import check_memory

    check_memory(math.prod(max(0, int(d)) for d in shape) * 12,
                 f"a seeded calibration input of shape {tuple(int(d) for d in shape)}")
    rng = np.random.default_rng(seed)
    if preprocess is not None and len(shape) == 4:
        h, w = int(shape[2]), int(shape[3])
        if preprocess.layout == "NCWH":
            h, w = w, h
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        import dataclasses

        return dataclasses.replace(preprocess, size=(w, h), crop=False).blob(img)
    return rng.uniform(-128.0, 128.0, tuple(int(d) for d in shape)).astype(np.float32)


def calibrate_scales(net: Any, feeds: np.ndarray | Mapping[str, np.ndarray], target: float = 1.0
                     ) -> dict[str, float]:
    """Per weighted layer (conv, deconv, linear) the factor that brings its output RMS to
    ``target`` when every earlier layer is rescaled too: ``{layer name: factor}``. One float64
    pass in execution order (refnet's reference kernels); a layer whose output is zero or not
    finite keeps factor 1. Every tensor is kept, so the pass is refused up front (BudgetError)
    when it would exceed the memory or compute budget, as a forward pass is."""
    from types import SimpleNamespace

    from refnet.ops import registry
    from refnet.ops.registry import Ctx
    from refnet.runtime.budget import check_plan

    ctx = Ctx("float64")
    g = net.graph
    if not isinstance(feeds, Mapping):
        feeds = {g.inputs[0]: feeds}
    vals: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in feeds.items()}
    shapes = net.infer_shapes({k: v.shape for k, v in vals.items()})
    check_plan([SimpleNamespace(node=n, inputs=n.inputs, outputs=n.outputs, free=()) for n in g.nodes], shapes,
               vals, 8, "calibrating seeded weights (every layer's output kept)")
    scales: dict[str, float] = {}
    for node in g.nodes:
        spec = registry.get(node.op, node.name)
        p = {k: np.asarray(v, np.float64) for k, v in node.params.items() if v is not None}
        with np.errstate(all="ignore"):
            out = spec.run(node, [vals[t] for t in node.inputs], p, ctx)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if node.op in WEIGHTED_OPS and "weight" in node.params:
            y = np.asarray(outs[0], np.float64)
            with np.errstate(all="ignore"):
                rms = math.sqrt(float(np.mean(np.square(y)))) if y.size else 0.0
            f = target / rms if math.isfinite(rms) and rms > 0 else 1.0
            scales[node.name] = f
            outs[0] = y * f
        for t, v in zip(node.outputs, outs):
            vals[t] = np.asarray(v)
    return scales


# ---- Darknet ------------------------------------------------------------------------------------------
def _darknet_blobs(graph: Any, rng: np.random.Generator) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """Seeded arrays per weighted layer of a Darknet graph loaded with zero weights, in file order:
    (layer name, "conv" | "connected", {bias, weight[, scales, mean, var]})."""
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for n in graph.nodes:
        if n.op not in ("conv", "linear"):
            continue
        w = np.asarray(n.params["weight"])
        cout = w.shape[0]
        fan = max(1, math.prod(w.shape[1:]))
        d = {"weight": rng.normal(0.0, math.sqrt(2.0 / fan), w.shape).astype(np.float32),
             "bias": rng.normal(0.0, 0.05, cout).astype(np.float32)}
        bn = nodes.get(n.name.replace("conv_", "bn_").replace("fullyConnected_", "bn_"))
        if bn is not None and bn.op == "batch_norm" and bn.inputs and bn.inputs[0] in n.outputs:
            d.update(scales=rng.uniform(0.8, 1.2, cout).astype(np.float32),
                     mean=rng.normal(0.0, 0.1, cout).astype(np.float32),
                     var=rng.uniform(0.5, 1.5, cout).astype(np.float32))
        out.append((n.name, "conv" if n.op == "conv" else "connected", d))
    return out


def _darknet_bytes(blobs: list[tuple[str, str, dict[str, np.ndarray]]]) -> bytes:
    parts = [struct.pack("<iiiQ", 0, 2, 0, 0)]
    for _, kind, d in blobs:
        bn = ["scales", "mean", "var"] if "scales" in d else []
        order = ["bias"] + (bn + ["weight"] if kind == "conv" else ["weight"] + bn)
        parts += [np.ascontiguousarray(d[k], "<f4").tobytes() for k in order]
    return b"".join(parts)


def seeded_darknet_weights(cfg: str | Path, seed: int = 0, preprocess: Any = None, calibrate: bool = True) -> bytes:
    """A Darknet ``.weights`` file (bytes) of seeded weights for ``cfg``: He-scaled convolution and
    connected weights, small biases, BN scales near 1 and positive variances; with ``calibrate``
    each layer's weights and bias are rescaled so its output RMS is 1 on a seeded random image
    (:func:`calibrate_scales`; ``preprocess`` makes that image a real blob)."""
    from refnet.net import load_darknet

    graph = load_darknet(cfg, "zeros").graph
    rng = np.random.default_rng(seed)
    blobs = _darknet_blobs(graph, rng)
    data = _darknet_bytes(blobs)
    if not calibrate:
        return data
    from refnet.net import Net
    from refnet.weights_import.darknet import read_darknet

    net = Net(read_darknet(cfg, weights_bytes=data))
    shape = net.input_shapes.get(net.input_names[0])
    scales = calibrate_scales(net, calibration_blob(tuple(shape), preprocess, seed))
    for name, _, d in blobs:
        f = np.float32(scales.get(name, 1.0))
        d["weight"] = d["weight"] * f
        if "scales" not in d:  # with BN the bias is the BN shift, applied after the normalisation
            d["bias"] = d["bias"] * f
    return _darknet_bytes(blobs)
