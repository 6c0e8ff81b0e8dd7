"""``refnet stylize --optimize``: Gatys et al. neural style transfer by optimising the pixels.

The generated image ``x`` (in the net's input blob space, started from the content image)
minimises

    L(x) = a * Lc(x) + b * Ls(x) + c * Ltv(x)

- content: ``Lc = mean((F(x) - F(content))^2) / mean(F(content)^2)`` at the content layer;
- style: ``Ls = 1/L sum_l mean((G_l(x) - G_l(style))^2) / mean(G_l(style)^2)`` with ``G_l`` the
  Gram matrix of layer l divided by C*H*W (kernels/style.py: ``style_loss``);
- total variation: ``Ltv = tv_loss(x) / (numel(x) * mean(content^2))`` (squared neighbour
  differences, kernels/style.py).

Each term is divided by a scale taken from the targets, so one set of weights ``a b c``
works for nets whose feature magnitudes differ by orders of magnitude (real weights, seeded
He weights, Caffe's 0..255 inputs or Torch's 0..1). The gradient w.r.t. the pixels comes
from the loss kernels' feature gradients carried back through the net by
:class:`refnet.runtime.backward.Tape`; scipy's L-BFGS-B minimises it with the pixels boxed to
what an 8-bit image can hold. L-BFGS-B accepts an iterate only after its line search found a
lower L, so the printed totals decrease from step to step.

Default recipes (README "Gradients"):
- VGG-style Caffe nets (layers ``relu1_1`` ... ``relu5_1``, e.g. ``--model builtin:vgg19``, the
  19-layer VGG with seeded He weights that refnet writes once into ``$REFNET_CACHE/builtin``,
  default ``~/.cache/refnet/builtin``): content ``relu4_2``, style
  ``relu1_1 relu2_1 relu3_1 relu4_1 relu5_1`` (Gatys et al. 2016), weights ``1 1000 10``.
  Seeded weights give the style image's colours and textures, real VGG weights the classic result.
- any other net: content and style layers picked from its activation layers (ReLU, PReLU, ...)
  over the first two thirds of the net (content the middle one, five style layers spread from the
  first), same weights; name them with ``--content-layer`` / ``--style-layers`` to choose. The
  real-weight models of ``$REFNET_MODELS`` want a stronger style weight, e.g. ``yolo-fastest-1.1``
  with ``--weights 1 100000 10 --steps 60``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refnet import kernels as K
from refnet.errors import RefnetError
from refnet.runtime.backward import Tape

VGG_CONTENT = "relu4_2"
VGG_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_WEIGHTS = (1.0, 1000.0, 10.0)
ACTIVATIONS = ("relu", "prelu", "elu", "clip", "sigmoid", "tanh")
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


class StylizeError(RefnetError, ValueError):
    """A stylisation request that cannot work (unknown layer, a layer without an image-like output)."""


# ---- the built-in VGG-19 feature net -------------------------------------------------------------------
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 1))  # channels, convs per block (to conv5_1)


def vgg19_features(input_hw: tuple[int, int] = (224, 224), seed: int = 0):
    """VGG-19's convolutional part up to ``relu5_1`` (Simonyan & Zisserman; the layers Gatys et al.
    use), as a Caffe net with seeded He-scaled weights (:class:`refnet.archs.CaffeNetBuilder`)."""
    from refnet.archs import CaffeNetBuilder

    b = CaffeNetBuilder("VGG19-features", (1, 3, input_hw[0], input_hw[1]), seed)
    x = "data"
    for i, (ch, n) in enumerate(VGG19_BLOCKS, 1):
        if i > 1:
            x = b.pool(f"pool{i - 1}", x, "MAX", 2, 2)
        for j in range(1, n + 1):
            x = b.conv_relu(f"conv{i}_{j}", f"relu{i}_{j}", x, ch, 3, pad=1)
    return b


def load_model(files: Sequence[str], zoo_name: str | None = None, cache: Path | None = None):
    """Net, zoo entry and preprocessing for MODEL_FILES (``builtin:vgg19`` writes the seeded VGG-19)."""
    from refnet import pipelines
    from refnet.zoo import Preprocess

    if len(files) == 1 and str(files[0]).startswith("builtin:"):
        name = str(files[0]).split(":", 1)[1]
        if name != "vgg19":
            raise StylizeError(f"unknown built-in {files[0]!r}; try builtin:vgg19")
        import refnet

        folder = Path(cache or os.environ.get("REFNET_CACHE") or Path.home() / ".cache" / "refnet") / "builtin"
        proto, model = folder / "vgg19_features_seed0.prototxt", folder / "vgg19_features_seed0.caffemodel"
        if not (proto.is_file() and model.is_file()):  # written once (about 80 MB), then reused
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                p, m = vgg19_features(seed=0).write(Path(tmp) / "vgg19_features_seed0")
                os.replace(p, proto)
                os.replace(m, model)
        return refnet.load(proto, model), None, Preprocess(1.0, None, CAFFE_MEAN_BGR, False)
    net, entry, _ = pipelines.resolve_model(files, zoo_name)
    pre = entry.preprocess if entry is not None else pipelines.default_preprocess(net, "classify")
    return net, entry, pre


def fit_size(net, size: tuple[int, int], channels: int = 3) -> tuple[int, int]:
    """The working size ``(W, H)`` itself when the net takes it, else the nearest multiple of 8, 16,
    32 or 64 that it takes (a Darknet YOLO's route/concat layers want multiples of 32, ENet 16), else
    ``size`` unchanged (the shape error then names the layer)."""
    from refnet.errors import ShapeError

    name = net.input_names[0]
    for m in (1, 8, 16, 32, 64):
        w, h = (max(m, int(round(v / m)) * m) for v in size)
        try:
            net.infer_shapes({name: (1, channels, h, w)})
        except ShapeError:
            continue
        return w, h
    return size


def default_layers(net, x_shape: tuple[int, ...]) -> tuple[str, list[str]]:
    """The recipe's content layer and style layers for ``net`` at input ``x_shape`` (module docstring)."""
    names = set(net.layer_names)
    if VGG_CONTENT in names and all(s in names for s in VGG_STYLE):
        return VGG_CONTENT, list(VGG_STYLE)
    shapes = net.infer_shapes({net.input_names[0]: x_shape})
    acts = [n.name for n in net.graph.nodes if n.op in ACTIVATIONS and n.name in names
            and len(shapes[n.name]) == 4 and min(shapes[n.name][2:]) >= 4]
    if not acts:
        acts = [n.name for n in net.graph.nodes if n.op == "conv" and len(shapes[n.name]) == 4]
    if not acts:
        raise StylizeError("found no convolution or activation layer with an image-like output: name the layers "
                           "with --content-layer and --style-layers")
    span = acts[: max(1, (2 * len(acts)) // 3)]
    content = span[len(span) // 2]
    idx = np.unique(np.linspace(0, len(span) - 1, min(5, len(span))).round().astype(int))
    return content, [span[i] for i in idx]


# ---- the optimisation ------------------------------------------------------------------------------------
@dataclass
class Step:
    """One accepted L-BFGS iterate: the weighted terms and their sum."""

    step: int
    total: float
    content: float
    style: float
    tv: float
    evals: int
    seconds: float


@dataclass
class Result:
    blob: np.ndarray
    history: list[Step] = field(default_factory=list)
    content_layer: str = ""
    style_layers: list[str] = field(default_factory=list)
    message: str = ""


class GatysLoss:
    """L(x) and dL/dx for one content/style pair (module docstring), evaluated in float64."""

    def __init__(self, net, content: np.ndarray, style: np.ndarray, content_layer: str,
                 style_layers: Sequence[str], weights: Sequence[float] = DEFAULT_WEIGHTS,
                 precision: str = "float32") -> None:
        self.net, self.precision = net, precision
        self.content_layer, self.style_layers = content_layer, list(style_layers)
        self.layers = list(dict.fromkeys([content_layer, *style_layers]))
        for name in self.layers:
            if name not in net.layer_names:
                raise StylizeError(f"no layer {name!r} in the model; layers are e.g. {list(net.layer_names[:10])}")
        a, b, c = (float(w) for w in weights)
        fc = self._features(content)
        fs = self._features(style)
        for name in self.layers:
            if fc[name].ndim != 4:
                raise StylizeError(f"layer {name!r} has output shape {fc[name].shape}: style transfer needs "
                                   "(N, C, H, W) feature maps")
        self.target = fc[content_layer]
        self.w_content = a / max(float(np.mean(self.target ** 2)), 1e-30)
        self.grams = []
        self.w_style = []
        for name in self.style_layers:
            f = fs[name]
            g = K.gram_matrix_reference(f) / (f.shape[1] * f.shape[2] * f.shape[3])
            self.grams.append(g)
            self.w_style.append(b / len(self.style_layers) / max(float(np.mean(g ** 2)), 1e-30))
        self.w_tv = c / (content.size * max(float(np.mean(np.asarray(content, np.float64) ** 2)), 1e-30))
        self.evals = 0

    def _features(self, x: np.ndarray) -> dict[str, np.ndarray]:
        tape = Tape(self.net, x, self.layers, self.precision)
        return {k: np.asarray(tape.values[k], np.float64) for k in self.layers}

    def __call__(self, x: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        """The three weighted terms and the gradient of their sum w.r.t. ``x``."""
        self.evals += 1
        tape = Tape(self.net, x, self.layers, self.precision)
        feats = {k: np.asarray(tape.values[k], np.float64) for k in self.layers}
        grads: dict[str, np.ndarray] = {}
        # the loss kernels' fast twins (BLAS Gram products) on float64 features
        lc = float(K.content_loss(feats[self.content_layer], self.target, self.w_content))
        grads[self.content_layer] = K.content_loss_grad(feats[self.content_layer], self.target, self.w_content)
        fl = [feats[k] for k in self.style_layers]
        ls = float(K.style_loss(fl, self.grams, self.w_style))
        for k, g in zip(self.style_layers, K.style_loss_grad(fl, self.grams, self.w_style)):
            grads[k] = grads[k] + g if k in grads else g
        xd = np.asarray(x, np.float64)
        ltv = float(K.tv_loss(xd, self.w_tv))
        dx = np.asarray(tape.backward(grads).input, np.float64) + K.tv_loss_grad(xd, self.w_tv)
        return {"content": lc, "style": ls, "tv": ltv, "total": lc + ls + ltv}, dx


def optimize(loss: GatysLoss, x0: np.ndarray, bounds: tuple[np.ndarray, np.ndarray] | None = None,
             steps: int = 50, progress: Callable[[Step], None] | None = None) -> Result:
    """Minimise ``loss`` over the pixels with scipy's L-BFGS-B from ``x0`` for up to ``steps``
    iterations; ``progress`` gets every accepted iterate (step 0 = the start)."""
    from scipy.optimize import minimize

    shape = x0.shape
    last: dict = {}
    t0 = time.perf_counter()

    def fun(z):
        terms, g = loss(z.reshape(shape))
        last.update(z=z.copy(), terms=terms)
        return terms["total"], g.reshape(-1)

    history: list[Step] = []

    def record(z):
        if "z" not in last or not np.array_equal(z, last["z"]):
            fun(z)
        t = last["terms"]
        s = Step(len(history), t["total"], t["content"], t["style"], t["tv"], loss.evals, time.perf_counter() - t0)
        history.append(s)
        if progress is not None:
            progress(s)

    z0 = np.asarray(x0, np.float64).reshape(-1)
    record(z0)
    lb = ub = None
    if bounds is not None:
        lb = np.broadcast_to(bounds[0], shape).reshape(-1)
        ub = np.broadcast_to(bounds[1], shape).reshape(-1)
    res = minimize(fun, z0, jac=True, method="L-BFGS-B", callback=record,
                   bounds=None if lb is None else list(zip(lb, ub)),
                   options={"maxiter": int(steps), "maxcor": 20})
    return Result(res.x.reshape(shape), history, loss.content_layer, loss.style_layers, str(res.message))


def pixel_bounds(pre, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Blob-space bounds of 8-bit pixels [0, 255] under ``pre`` (blob = (pixel - mean) * scale)."""
    m = np.zeros(3)
    mean = np.atleast_1d(np.asarray(pre.mean, np.float64))
    m[: min(3, mean.size)] = mean[:3]
    c = shape[1]
    lo = ((0.0 - m[:c]) * pre.scale).reshape(1, c, 1, 1)
    hi = ((255.0 - m[:c]) * pre.scale).reshape(1, c, 1, 1)
    return np.minimum(lo, hi), np.maximum(lo, hi)
