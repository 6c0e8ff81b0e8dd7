"""Built-in architecture generators: Caffe nets written by refnet itself, with seeded weights.

A :class:`CaffeNetBuilder` tracks every blob's shape while layers are added, so it can emit
both the deploy ``.prototxt`` (text) and a ``.caffemodel`` (protobuf wire format, V2 layers)
of seeded random weights: He-scaled convolutions so activations stay in range, positive
BatchNorm variances. cv2.dnn reads the files, so every generated net can be cross-checked.

Generators: :func:`deeplab_v3plus` (MobileNetV2-style backbone with depthwise-separable
convs, output stride 16 with atrous rates, ASPP 6/12/18 + image pooling, bilinear decoder
with a low-level skip); :func:`mobilenet_ssd` (chuanqi305's MobileNet-SSD VOC deploy net:
depthwise convs, PriorBox, Permute/Flatten/Concat, DetectionOutput); :func:`googlenet`
(BVLC GoogLeNet: inception modules, LRN, ceil-mode pooling, dropout, softmax).
:func:`seeded_caffemodel` writes seeded weights for any architecture-only deploy prototxt.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from refnet.kernels.geometry import conv_output_size, pool_output_size

__all__ = ["CaffeNetBuilder", "deeplab_v3plus", "mobilenet_ssd", "googlenet", "seeded_caffemodel",
           "write_caffemodel", "BUILTINS", "seed_onnx_weights"]


# ---- protobuf wire encoding (only what a V2 caffemodel with float blobs needs) ------------------
def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _blob(arr: np.ndarray) -> bytes:
    dims = b"".join(_varint(int(d)) for d in arr.shape)
    shape = _field_bytes(1, dims)  # BlobShape.dim, packed int64
    data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    return _field_bytes(7, shape) + _field_bytes(5, data)  # BlobProto.shape = 7, .data = 5 (packed)


def write_caffemodel(path: str | Path, layers: list[tuple[str, str, list[np.ndarray]]], net_name: str = "") -> None:
    """Write a V2 NetParameter holding, per layer, its name, type and float blobs."""
    Path(path).write_bytes(_caffemodel_bytes(layers, net_name))


# ---- the builder ---------------------------------------------------------------------------------
class CaffeNetBuilder:
    """Add layers with shape tracking; emit prototxt text and seeded weights."""

    def __init__(self, name: str, input_shape: tuple[int, int, int, int], seed: int = 0,
                 input_name: str = "data", input_layer: bool = False) -> None:
        self.name = name
        self.input_name = input_name
        self.input_layer = input_layer  # an `Input` layer (BVLC style) instead of `input:` + `input_shape`
        self.input_shape = tuple(int(d) for d in input_shape)
        self.rng = np.random.default_rng(seed)
        self.text: list[str] = []
        self.weights: list[tuple[str, str, list[np.ndarray]]] = []
        self.shape: dict[str, tuple[int, ...]] = {input_name: self.input_shape[1:]}  # blob -> shape without N

    # -- emission helpers
    def _layer(self, name: str, typ: str, bottoms: list[str], tops: list[str], params: str = "") -> None:
        lines = [f'layer {{\n  name: "{name}"\n  type: "{typ}"']
        lines += [f'  bottom: "{b}"' for b in bottoms]
        lines += [f'  top: "{t}"' for t in tops]
        if params:
            lines.append("  " + params)
        self.text.append("\n".join(lines) + "\n}\n")

    def prototxt(self) -> str:
        dims = " ".join(f"dim: {d}" for d in self.input_shape)
        if self.input_layer:
            head = (f'name: "{self.name}"\nlayer {{\n  name: "{self.input_name}"\n  type: "Input"\n'
                    f'  top: "{self.input_name}"\n  input_param {{ shape {{ {dims} }} }}\n}}\n')
        else:
            head = f'name: "{self.name}"\ninput: "{self.input_name}"\ninput_shape {{ {dims} }}\n'
        return head + "".join(self.text)

    def write(self, prefix: str | Path) -> tuple[Path, Path]:
        """Write ``<prefix>.prototxt`` and ``<prefix>.caffemodel``; return both paths."""
        prefix = Path(prefix)
        proto, model = prefix.with_name(prefix.name + ".prototxt"), prefix.with_name(prefix.name + ".caffemodel")
        proto.write_text(self.prototxt())
        write_caffemodel(model, self.weights, self.name)
        return proto, model

    # -- layers
    def conv(self, name: str, bottom: str, num_output: int, kernel: int, stride: int = 1, pad: int | None = None,
             dilation: int = 1, group: int = 1, bias: bool = True) -> str:
        c, h, w = self.shape[bottom]
        if pad is None:
            pad = dilation * (kernel - 1) // 2
        oh = conv_output_size(h, kernel, stride, pad, pad, dilation)
        ow = conv_output_size(w, kernel, stride, pad, pad, dilation)
        fan_in = c // group * kernel * kernel
        wt = self.rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(num_output, c // group, kernel, kernel))
        blobs = [wt.astype(np.float32)]
        if bias:
            blobs.append(self.rng.normal(0.0, 0.05, size=num_output).astype(np.float32))
        p = (f"convolution_param {{ num_output: {num_output} kernel_size: {kernel} stride: {stride} pad: {pad}"
             f" dilation: {dilation} group: {group} bias_term: {'true' if bias else 'false'} }}")
        self._layer(name, "Convolution", [bottom], [name], p)
        self.weights.append((name, "Convolution", blobs))
        self.shape[name] = (num_output, oh, ow)
        return name

    def bn_scale(self, name: str, bottom: str) -> str:
        """BatchNorm + Scale, in place (the Caffe idiom); returns the blob name."""
        c = self.shape[bottom][0]
        mean = self.rng.normal(0.0, 0.1, size=c).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, size=c).astype(np.float32)
        self._layer(f"{name}/bn", "BatchNorm", [bottom], [bottom], "batch_norm_param { eps: 1e-5 }")
        self.weights.append((f"{name}/bn", "BatchNorm", [mean, var, np.ones(1, np.float32)]))
        gamma = self.rng.uniform(0.8, 1.2, size=c).astype(np.float32)
        beta = self.rng.normal(0.0, 0.05, size=c).astype(np.float32)
        self._layer(f"{name}/scale", "Scale", [bottom], [bottom], "scale_param { bias_term: true }")
        self.weights.append((f"{name}/scale", "Scale", [gamma, beta]))
        return bottom

    def relu(self, name: str, bottom: str, relu6: bool = False) -> str:
        self._layer(name, "ReLU6" if relu6 else "ReLU", [bottom], [bottom])
        return bottom

    def conv_bn_relu(self, name: str, bottom: str, num_output: int, kernel: int, stride: int = 1,
                     dilation: int = 1, group: int = 1, relu: bool = True) -> str:
        top = self.conv(name, bottom, num_output, kernel, stride, dilation=dilation, group=group, bias=False)
        self.bn_scale(name, top)
        if relu:
            self.relu(f"{name}/relu", top, relu6=True)
        return top

    def eltwise_sum(self, name: str, a: str, b: str) -> str:
        self._layer(name, "Eltwise", [a, b], [name], "eltwise_param { operation: SUM }")
        self.shape[name] = self.shape[a]
        return name

    def concat(self, name: str, bottoms: list[str]) -> str:
        self._layer(name, "Concat", bottoms, [name], "concat_param { axis: 1 }")
        c = sum(self.shape[b][0] for b in bottoms)
        self.shape[name] = (c,) + self.shape[bottoms[0]][1:]
        return name

    def global_avg_pool(self, name: str, bottom: str) -> str:
        self._layer(name, "Pooling", [bottom], [name], "pooling_param { pool: AVE global_pooling: true }")
        self.shape[name] = (self.shape[bottom][0], 1, 1)
        return name

    def interp(self, name: str, bottom: str, height: int, width: int) -> str:
        """Caffe (DeepLab) Interp: bilinear with align_corners to an explicit size."""
        self._layer(name, "Interp", [bottom], [name], f"interp_param {{ height: {height} width: {width} }}")
        self.shape[name] = (self.shape[bottom][0], height, width)
        return name

    def pool(self, name: str, bottom: str, method: str, kernel: int, stride: int, pad: int = 0) -> str:
        """Caffe Pooling (MAX/AVE); output size with Caffe's ceil rule."""
        c, h, w = self.shape[bottom]
        out = lambda n: pool_output_size(n, kernel, stride, pad, pad, ceil_mode=True)  # noqa: E731
        p = f"pooling_param {{ pool: {method} kernel_size: {kernel} stride: {stride}" + (f" pad: {pad}" if pad else "")
        self._layer(name, "Pooling", [bottom], [name], p + " }")
        self.shape[name] = (c, out(h), out(w))
        return name

    def lrn(self, name: str, bottom: str, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
            k: float | None = None) -> str:
        p = f"lrn_param {{ local_size: {local_size} alpha: {alpha!r} beta: {beta!r}" + (
            f" k: {k!r}" if k is not None else "") + " }"
        self._layer(name, "LRN", [bottom], [name], p)
        self.shape[name] = self.shape[bottom]
        return name

    def dropout(self, name: str, bottom: str, ratio: float) -> str:
        """Dropout in place (an identity at inference)."""
        self._layer(name, "Dropout", [bottom], [bottom], f"dropout_param {{ dropout_ratio: {ratio!r} }}")
        return bottom

    def inner_product(self, name: str, bottom: str, num_output: int, gain: float = 1.0) -> str:
        k = math.prod(self.shape[bottom])
        wt = self.rng.normal(0.0, gain * math.sqrt(2.0 / k), size=(num_output, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.05, size=num_output).astype(np.float32)
        self._layer(name, "InnerProduct", [bottom], [name], f"inner_product_param {{ num_output: {num_output} }}")
        self.weights.append((name, "InnerProduct", [wt, b]))
        self.shape[name] = (num_output,)
        return name

    def softmax(self, name: str, bottom: str, axis: int | None = None) -> str:
        self._layer(name, "Softmax", [bottom], [name], f"softmax_param {{ axis: {axis} }}" if axis is not None else "")
        self.shape[name] = self.shape[bottom]
        return name

    def permute(self, name: str, bottom: str, order: tuple[int, ...]) -> str:
        self._layer(name, "Permute", [bottom], [name],
                    "permute_param { " + " ".join(f"order: {o}" for o in order) + " }")
        full = (1,) + tuple(self.shape[bottom])
        self.shape[name] = tuple(full[o] for o in order)[1:]
        return name

    def flatten(self, name: str, bottom: str, axis: int = 1) -> str:
        self._layer(name, "Flatten", [bottom], [name], f"flatten_param {{ axis: {axis} }}")
        self.shape[name] = (math.prod(self.shape[bottom]),)
        return name

    def reshape(self, name: str, bottom: str, dims: tuple[int, ...]) -> str:
        """Caffe Reshape with a leading batch dim of 0 (copy) and at most one -1."""
        self._layer(name, "Reshape", [bottom], [name],
                    "reshape_param { shape { " + " ".join(f"dim: {d}" for d in dims) + " } }")
        rest = list(dims[1:])
        total = math.prod(self.shape[bottom])
        if -1 in rest:
            known = math.prod(d for d in rest if d != -1)
            rest[rest.index(-1)] = total // known
        self.shape[name] = tuple(rest)
        return name

    def concat_axis(self, name: str, bottoms: list[str], axis: int) -> str:
        self._layer(name, "Concat", bottoms, [name], f"concat_param {{ axis: {axis} }}")
        first = list(self.shape[bottoms[0]])
        first[axis - 1] = sum(self.shape[b][axis - 1] for b in bottoms)
        self.shape[name] = tuple(first)
        return name

    def prior_box(self, name: str, feature: str, image: str, min_size: float, max_size: float | None,
                  aspect_ratios: tuple[float, ...], flip: bool = True, clip: bool = False,
                  variance: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2), offset: float = 0.5) -> str:
        _, h, w = self.shape[feature]
        ars = [1.0]
        for a in aspect_ratios:
            for v in ((a, 1.0 / a) if flip else (a,)):
                if all(abs(v - u) > 1e-6 for u in ars):
                    ars.append(v)
        n = len(ars) + (1 if max_size else 0)
        p = [f"min_size: {min_size!r}"] + ([f"max_size: {max_size!r}"] if max_size else [])
        p += [f"aspect_ratio: {a!r}" for a in aspect_ratios]
        p += [f"flip: {'true' if flip else 'false'}", f"clip: {'true' if clip else 'false'}"]
        p += [f"variance: {v!r}" for v in variance] + [f"offset: {offset!r}"]
        self._layer(name, "PriorBox", [feature, image], [name], "prior_box_param { " + " ".join(p) + " }")
        self.shape[name] = (2, h * w * n * 4)
        return name

    def detection_output(self, name: str, loc: str, conf: str, priors: str, num_classes: int,
                         nms_threshold: float = 0.45, top_k: int = 100, keep_top_k: int = 100,
                         confidence_threshold: float = 0.25, code_type: str = "CENTER_SIZE") -> str:
        p = (f"detection_output_param {{ num_classes: {num_classes} share_location: true background_label_id: 0 "
             f"nms_param {{ nms_threshold: {nms_threshold!r} top_k: {top_k} }} code_type: {code_type} "
             f"keep_top_k: {keep_top_k} confidence_threshold: {confidence_threshold!r} }}")
        self._layer(name, "DetectionOutput", [loc, conf, priors], [name], p)
        self.shape[name] = (1, -1, 7)
        return name

    def conv_relu(self, name: str, relu_name: str, bottom: str, num_output: int, kernel: int, stride: int = 1,
                  pad: int | None = None, group: int = 1, gain: float = 1.0) -> str:
        """Convolution with bias followed by an in-place ReLU (the BVLC / merged-BN deploy idiom)."""
        top = self.conv(name, bottom, num_output, kernel, stride, pad, group=group)
        if gain != 1.0:
            self.weights[-1][2][0] *= np.float32(gain)
        self.relu(relu_name, top)
        return top


def deeplab_v3plus(input_hw: tuple[int, int] = (129, 129), num_classes: int = 21, width: float = 0.5,
                   seed: int = 0) -> CaffeNetBuilder:
    """A DeepLab-v3+-style segmentation net in Caffe terms, output stride 16.

    MobileNetV2-like inverted residual backbone (1x1 expand, 3x3 depthwise, 1x1 project,
    residual sums), the last stages dilated (rate 2) instead of strided; ASPP with a 1x1
    branch, three depthwise-separable atrous 3x3 branches (rates 6, 12, 18) and an image
    pooling branch; decoder: x4 bilinear upsampling, concat with a 1x1-reduced stride-4
    skip, two depthwise-separable 3x3 convs, 1x1 classifier, bilinear upsampling to the input.
    """
    b = CaffeNetBuilder("deeplab_v3plus_mnv2", (1, 3, input_hw[0], input_hw[1]), seed)

    def ch(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    x = b.conv_bn_relu("conv1", "data", ch(32), 3, stride=2)
    # (expansion, output channels, repeats, stride, dilation)
    stages = [(1, 16, 1, 1, 1), (6, 24, 2, 2, 1), (6, 32, 3, 2, 1), (6, 64, 2, 2, 1), (6, 96, 2, 1, 1),
              (6, 160, 2, 1, 2), (6, 320, 1, 1, 2)]
    low_level = None
    for si, (t, c, n, s, d) in enumerate(stages):
        for i in range(n):
            stride = s if i == 0 else 1
            cin = b.shape[x][0]
            name = f"block{si + 1}_{i + 1}"
            h = b.conv_bn_relu(f"{name}/expand", x, cin * t, 1) if t != 1 else x
            h = b.conv_bn_relu(f"{name}/dw", h, cin * t, 3, stride=stride, dilation=d, group=cin * t)
            h = b.conv_bn_relu(f"{name}/project", h, ch(c), 1, relu=False)
            if stride == 1 and cin == ch(c):
                h = b.eltwise_sum(f"{name}/add", x, h)
            x = h
        if si == 1:
            low_level = x  # stride 4 features for the decoder skip
    assert low_level is not None
    fc, fh, fw = b.shape[x]
    aspp_c = ch(256)
    branches = [b.conv_bn_relu("aspp0", x, aspp_c, 1)]
    for rate in (6, 12, 18):
        h = b.conv_bn_relu(f"aspp{rate}/dw", x, fc, 3, dilation=rate, group=fc)
        branches.append(b.conv_bn_relu(f"aspp{rate}/pw", h, aspp_c, 1))
    pooled = b.global_avg_pool("image_pool", x)
    pooled = b.conv_bn_relu("image_pool/conv", pooled, aspp_c, 1)
    branches.append(b.interp("image_pool/up", pooled, fh, fw))
    x = b.concat("aspp_concat", branches)
    x = b.conv_bn_relu("aspp_proj", x, aspp_c, 1)
    lc, lh, lw = b.shape[low_level]
    x = b.interp("decoder/up4", x, lh, lw)
    skip = b.conv_bn_relu("decoder/skip", low_level, ch(48), 1)
    x = b.concat("decoder/concat", [x, skip])
    for i in (1, 2):
        c = b.shape[x][0]
        x = b.conv_bn_relu(f"decoder/sep{i}/dw", x, c, 3, group=c)
        x = b.conv_bn_relu(f"decoder/sep{i}/pw", x, aspp_c, 1)
    x = b.conv("logits", x, num_classes, 1)
    b.interp("upsample_logits", x, input_hw[0], input_hw[1])
    return b


# ---- MobileNet-SSD (chuanqi305, VOC) -------------------------------------------------------------------
# (name, channels, depthwise stride) of the backbone's depthwise-separable blocks conv1..conv13
_MNSSD_BLOCKS = ((1, 64, 1), (2, 128, 2), (3, 128, 1), (4, 256, 2), (5, 256, 1), (6, 512, 2), (7, 512, 1),
                 (8, 512, 1), (9, 512, 1), (10, 512, 1), (11, 512, 1), (12, 1024, 2), (13, 1024, 1))
# extra feature layers: (name, 1x1 channels, 3x3 stride-2 channels)
_MNSSD_EXTRAS = (("conv14", 256, 512), ("conv15", 128, 256), ("conv16", 128, 256), ("conv17", 64, 128))
# heads: (source, min_size, max_size, aspect ratios)
_MNSSD_HEADS = (("conv11", 60.0, None, (2.0,)), ("conv13", 105.0, 150.0, (2.0, 3.0)),
                ("conv14_2", 150.0, 195.0, (2.0, 3.0)), ("conv15_2", 195.0, 240.0, (2.0, 3.0)),
                ("conv16_2", 240.0, 285.0, (2.0, 3.0)), ("conv17_2", 285.0, 300.0, (2.0, 3.0)))


def mobilenet_ssd(input_hw: tuple[int, int] = (300, 300), num_classes: int = 21, width: float = 1.0,
                  seed: int = 0, conf_gain: float = 2.5, batch_norm: bool = False) -> CaffeNetBuilder:
    """MobileNet-SSD as in chuanqi305's VOC ``MobileNetSSD_deploy.prototxt`` (BatchNorm merged
    into the convolutions' biases, as in that deploy file): a MobileNet-v1 backbone of 3x3
    depthwise + 1x1 convolutions with ReLU, four extra stride-2 feature layers, and SSD heads
    on conv11, conv13, conv14_2..conv17_2 (loc/conf 1x1 convs, Permute(0,2,3,1), Flatten,
    PriorBox), Concat, softmax over classes and DetectionOutput (CENTER_SIZE, NMS 0.45, keep
    100, confidence 0.25). ``width`` scales the channel counts (1.0 = the original);
    ``conf_gain`` scales the seeded class-score weights so random weights still yield some
    detections above the 0.25 threshold. ``batch_norm=True`` gives the un-merged form of
    chuanqi305's training prototxt instead: bias-free convolutions, each followed by in-place
    ``<conv>/bn`` (BatchNorm) and ``<conv>/scale`` (Scale) layers, then the ReLU.
    """
    b = CaffeNetBuilder("MobileNet-SSD", (1, 3, input_hw[0], input_hw[1]), seed)

    def ch(c: int) -> int:
        return max(8, int(round(c * width / 8.0)) * 8) if width != 1.0 else c

    def unit(name: str, bottom: str, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        pad = (k - 1) // 2
        if not batch_norm:
            return b.conv_relu(name, f"{name}/relu", bottom, cout, k, stride=stride, pad=pad, group=group)
        top = b.conv(name, bottom, cout, k, stride, pad, group=group, bias=False)
        b.bn_scale(name, top)
        return b.relu(f"{name}/relu", top)

    x = unit("conv0", "data", ch(32), 3, 2)
    for i, c, s in _MNSSD_BLOCKS:
        cin = b.shape[x][0]
        x = unit(f"conv{i}/dw", x, cin, 3, s, cin)
        x = unit(f"conv{i}", x, ch(c), 1)
    for name, c1, c2 in _MNSSD_EXTRAS:
        x = unit(f"{name}_1", x, ch(c1), 1)
        x = unit(f"{name}_2", x, ch(c2), 3, 2)
    locs, confs, priors = [], [], []
    for src, mn, mx, ars in _MNSSD_HEADS:
        n = (2 + 2 * len(ars)) if mx else (1 + 2 * len(ars))
        for kind, per, gain in (("loc", 4, 1.0), ("conf", num_classes, conf_gain)):
            t = b.conv(f"{src}_mbox_{kind}", src, n * per, 1, pad=0)
            if gain != 1.0:
                b.weights[-1][2][0] *= np.float32(gain)
            t = b.permute(f"{src}_mbox_{kind}_perm", t, (0, 2, 3, 1))
            (locs if kind == "loc" else confs).append(b.flatten(f"{src}_mbox_{kind}_flat", t))
        priors.append(b.prior_box(f"{src}_mbox_priorbox", src, "data", mn, mx, ars))
    loc = b.concat_axis("mbox_loc", locs, 1)
    conf = b.concat_axis("mbox_conf", confs, 1)
    pri = b.concat_axis("mbox_priorbox", priors, 2)
    conf = b.reshape("mbox_conf_reshape", conf, (0, -1, num_classes))
    conf = b.softmax("mbox_conf_softmax", conf, axis=2)
    conf = b.flatten("mbox_conf_flatten", conf)
    b.detection_output("detection_out", loc, conf, pri, num_classes)
    return b


# ---- BVLC GoogLeNet --------------------------------------------------------------------------------------
# inception module: (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj); None = a stride-2 max pool
_INCEPTION = (("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool3/3x3_s2",
              ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64),
              ("4d", 112, 144, 288, 32, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "pool4/3x3_s2",
              ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128))


def googlenet(input_hw: tuple[int, int] = (224, 224), num_classes: int = 1000, width: float = 1.0, seed: int = 0,
              batch: int = 1) -> CaffeNetBuilder:
    """BVLC GoogLeNet (``models/bvlc_googlenet/deploy.prototxt``): 7x7/2 conv, max pool 3/2
    (Caffe ceil rounding), LRN, 1x1 + 3x3 convs, LRN, pool, nine inception modules (1x1,
    3x3-reduce/3x3, 5x5-reduce/5x5, 3x3 max pool + projection, concatenated), 7x7 average
    pooling, dropout 0.4, a 1000-way InnerProduct and softmax. ``width`` scales the channel
    counts (1.0 = the original); the input needs to be at least ~193 px for the final 7x7 pool.
    """
    b = CaffeNetBuilder("GoogleNet", (batch, 3, input_hw[0], input_hw[1]), seed, input_layer=True)

    def ch(c: int) -> int:
        return max(4, int(round(c * width))) if width != 1.0 else c

    x = b.conv_relu("conv1/7x7_s2", "conv1/relu_7x7", "data", ch(64), 7, stride=2, pad=3)
    x = b.pool("pool1/3x3_s2", x, "MAX", 3, 2)
    x = b.lrn("pool1/norm1", x)
    x = b.conv_relu("conv2/3x3_reduce", "conv2/relu_3x3_reduce", x, ch(64), 1, pad=0)
    x = b.conv_relu("conv2/3x3", "conv2/relu_3x3", x, ch(192), 3, pad=1)
    x = b.lrn("conv2/norm2", x)
    x = b.pool("pool2/3x3_s2", x, "MAX", 3, 2)
    for m in _INCEPTION:
        if isinstance(m, str):
            x = b.pool(m, x, "MAX", 3, 2)
            continue
        name, c1, c3r, c3, c5r, c5, pp = m
        p = f"inception_{name}"
        a = b.conv_relu(f"{p}/1x1", f"{p}/relu_1x1", x, ch(c1), 1, pad=0)
        t = b.conv_relu(f"{p}/3x3_reduce", f"{p}/relu_3x3_reduce", x, ch(c3r), 1, pad=0)
        t = b.conv_relu(f"{p}/3x3", f"{p}/relu_3x3", t, ch(c3), 3, pad=1)
        u = b.conv_relu(f"{p}/5x5_reduce", f"{p}/relu_5x5_reduce", x, ch(c5r), 1, pad=0)
        u = b.conv_relu(f"{p}/5x5", f"{p}/relu_5x5", u, ch(c5), 5, pad=2)
        v = b.pool(f"{p}/pool", x, "MAX", 3, 1, pad=1)
        v = b.conv_relu(f"{p}/pool_proj", f"{p}/relu_pool_proj", v, ch(pp), 1, pad=0)
        x = b.concat(f"{p}/output", [a, t, u, v])
    x = b.pool("pool5/7x7_s1", x, "AVE", 7, 1)
    x = b.dropout("pool5/drop_7x7_s1", x, 0.4)
    x = b.inner_product("loss3/classifier", x, num_classes)
    b.softmax("prob", x)
    return b


BUILTINS = {
    "mobilenet-ssd": ("detect", mobilenet_ssd),
    "googlenet": ("classify", googlenet),
    "deeplab-v3plus": ("segment", deeplab_v3plus),
}

# OpenCV's Faster R-CNN / R-FCN test prototxts (from $REFNET_MODELS) with calibrated seeded weights
from refnet.two_stage import BUILTINS as _TWO_STAGE  # noqa: E402

BUILTINS.update(_TWO_STAGE)


# ---- seeded weights for an architecture-only deploy prototxt -------------------------------------------
_WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Bias", "PReLU", "Normalize")
_V1_WEIGHTED = {"CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "INNER_PRODUCT": "InnerProduct"}


def _kernel_hw(p) -> tuple[int, int]:
    if p is not None and (p.has("kernel_h") or p.has("kernel_w")):
        return int(p.get("kernel_h")), int(p.get("kernel_w"))
    ks = [int(v) for v in (p.get("kernel_size") if p is not None else [])]
    if not ks:
        raise ValueError("convolution without kernel_size")
    return ks[0], ks[-1]


def _placeholder_blobs(typ: str, L) -> list[np.ndarray]:
    """Blobs with the right count and the dimensions the layer's own parameters fix (channel
    counts that depend on the input are 1: :func:`seeded_caffemodel` replaces them)."""
    one = np.ones(1, np.float32)
    if typ in ("Convolution", "Deconvolution"):
        p = L.get("convolution_param")
        co, g = int(p.get("num_output")), int(p.get("group"))
        kh, kw = _kernel_hw(p)
        w = np.ones((co, 1, kh, kw) if typ == "Convolution" else (1, co // g, kh, kw), np.float32)
        return [w, np.ones(co, np.float32)] if p.get("bias_term") else [w]
    if typ == "InnerProduct":
        p = L.get("inner_product_param")
        n = int(p.get("num_output"))
        w = np.ones((1, n) if p.get("transpose") else (n, 1), np.float32)
        return [w, np.ones(n, np.float32)] if p.get("bias_term") else [w]
    if typ == "BatchNorm":
        return [one, one, one]
    if typ in ("Scale", "Bias"):
        if len(L.get("bottom")) > 1:
            return [one] if typ == "Scale" and L.get("scale_param").get("bias_term") else []
        p = L.get("scale_param" if typ == "Scale" else "bias_param")
        na = int(p.get("num_axes"))
        first = np.ones((1,) * max(na, 1) if na != 0 else (1,), np.float32)
        return [first, one] if typ == "Scale" and p.get("bias_term") else [first]
    return [one]  # PReLU slopes, Normalize scale


def _seeded_size(typ: str, L, x: tuple[int, ...], ph: list[np.ndarray]) -> int:
    """Elements of the weight :func:`_seeded_blobs` draws for a Convolution/Deconvolution/
    InnerProduct (the only blobs sized by a product of attributes and input dims; the others
    have one value per channel); 0 for other layers."""
    if typ in ("Convolution", "Deconvolution"):
        g = max(1, int(L.get("convolution_param").get("group")))
        kh, kw = ph[0].shape[2:]
        co = ph[0].shape[0] if typ == "Convolution" else ph[0].shape[1]
        return int(co) * (int(x[1]) // g if typ == "Convolution" else int(x[1])) * int(kh) * int(kw)
    if typ == "InnerProduct":
        p = L.get("inner_product_param")
        axis = int(p.get("axis"))
        axis = axis + len(x) if axis < 0 else axis
        return math.prod(int(d) for d in x[axis:]) * int(p.get("num_output"))
    return 0


def _seeded_blobs(typ: str, L, x: tuple[int, ...], ph: list[np.ndarray], rng: np.random.Generator
                  ) -> list[np.ndarray]:
    """Seeded blobs for layer ``L`` of type ``typ`` whose (first) input has shape ``x``."""
    f32 = np.float32
    if typ in ("Convolution", "Deconvolution"):
        p = L.get("convolution_param")
        g = int(p.get("group"))
        kh, kw = ph[0].shape[2:]
        if typ == "Convolution":
            shape = (ph[0].shape[0], x[1] // g, kh, kw)
        else:
            shape = (x[1], ph[0].shape[1], kh, kw)
        fan = shape[1] * kh * kw
        out = [rng.normal(0.0, math.sqrt(2.0 / fan), size=shape).astype(f32)]
    elif typ == "InnerProduct":
        p = L.get("inner_product_param")
        axis = int(p.get("axis"))
        axis = axis + len(x) if axis < 0 else axis
        k, n = math.prod(x[axis:]), int(p.get("num_output"))
        w = rng.normal(0.0, math.sqrt(2.0 / k), size=(n, k)).astype(f32)
        out = [np.ascontiguousarray(w.T) if p.get("transpose") else w]
    elif typ == "BatchNorm":
        c = x[1]
        return [rng.normal(0.0, 0.1, c).astype(f32), rng.uniform(0.5, 1.5, c).astype(f32), np.ones(1, f32)]
    elif typ in ("Scale", "Bias"):
        if len(L.get("bottom")) > 1:
            return [rng.normal(0.0, 0.05, b.shape).astype(f32) for b in ph]
        p = L.get("scale_param" if typ == "Scale" else "bias_param")
        axis, na = int(p.get("axis")), int(p.get("num_axes"))
        axis = axis + len(x) if axis < 0 else axis
        shape = tuple(x[axis:]) if na < 0 else tuple(x[axis:axis + na]) if na > 0 else (1,)
        if typ == "Bias":
            return [rng.normal(0.0, 0.05, shape).astype(f32)]
        out = [rng.uniform(0.8, 1.2, shape).astype(f32)]
        return out + ([rng.normal(0.0, 0.05, shape).astype(f32)] if len(ph) > 1 else [])
    elif typ == "PReLU":
        shared = L.get("prelu_param").get("channel_shared")
        return [rng.uniform(0.05, 0.3, 1 if shared else x[1]).astype(f32)]
    else:  # Normalize
        shared = L.get("norm_param").get("channel_shared")
        return [rng.uniform(10.0, 20.0, 1 if shared else x[1]).astype(f32)]
    if len(ph) > 1:
        out.append(rng.normal(0.0, 0.05, ph[1].shape).astype(f32))
    return out


def _ir_params(typ: str, node, blobs: list[np.ndarray], L) -> dict[str, np.ndarray]:
    """The IR params the importer makes of ``blobs`` (only their shapes matter: shape inference)."""
    if typ in ("Convolution", "Deconvolution"):
        out = {"weight": blobs[0]}
    elif typ == "InnerProduct":
        w = blobs[0]
        out = {"weight": w.T if L.get("inner_product_param").get("transpose") else w}
    elif typ == "BatchNorm":
        return {k: v for k, v in (("mean", blobs[0]), ("var", blobs[1])) if k in node.params} | {
            k: np.ones_like(blobs[0]) for k in ("weight", "bias") if k in node.params}
    elif typ == "PReLU":
        return {"slope": blobs[0]}
    elif typ == "Normalize":
        return {"scale": blobs[0]}
    else:  # Scale / Bias
        out = {k: blobs[0] for k in node.params}
        return out
    if "bias" in node.params and len(blobs) > 1:
        out["bias"] = blobs[1]
    return out


def seeded_caffemodel(prototxt: str | Path, seed: int = 0, input_shape: tuple[int, ...] | None = None, *,
                      calibrate: bool = True, preprocess=None) -> bytes:
    """A V2 caffemodel (bytes) of seeded weights for an architecture-only deploy prototxt.

    He-scaled convolution/InnerProduct weights (std sqrt(2 / fan_in)), small biases, positive
    BatchNorm variances, Scale factors near 1; blob shapes follow Caffe's rules, with the input
    channel counts found by walking the net with refnet's shape inference (``input_shape``
    overrides the declared input shape of a single-input net). With ``calibrate`` (default) every
    Convolution/Deconvolution/InnerProduct's weights and bias are then rescaled so that its output
    RMS is 1 on a seeded random image (through ``preprocess``, a :class:`refnet.zoo.Preprocess`,
    when given): :func:`refnet.seeded.calibrate_scales`. He scaling alone overflows through BN-free
    nets such as the ResNet-10 SSD face detector.
    """
    from refnet.errors import ShapeError
    from refnet.graph import Node
    from refnet.ops import registry
    from refnet.runtime.budget import check_memory
    from refnet.weights_import.caffe import parse_net_text, read_caffe

    text = Path(prototxt).read_bytes()
    msg = parse_net_text(text, file=str(prototxt))
    layers = [(L, L.get("type")) for L in msg.get("layer")] + [
        (L, _V1_WEIGHTED.get(L.get("type"), str(L.get("type")))) for L in msg.get("layers")]
    weighted = {L.get("name"): (L, t) for L, t in layers if t in _WEIGHTED}
    placeholders = {n: _placeholder_blobs(t, L) for n, (L, t) in weighted.items()}
    ph_layers = [(n, weighted[n][1], b) for n, b in placeholders.items()]
    graph = read_caffe(prototxt, caffemodel_bytes=_caffemodel_bytes(ph_layers))
    shapes: dict[str, tuple[int, ...]] = {}
    for k in graph.inputs:
        s = graph.input_shapes.get(k)
        if input_shape is not None and len(graph.inputs) == 1:
            s = tuple(input_shape)
        if not s:
            raise ShapeError(f"{prototxt}: input {k!r} has no declared shape; give it (input_shape=, or "
                             "--input-shape N C H W on the command line)")
        shapes[k] = tuple(int(d) for d in s)
    rng = np.random.default_rng(seed)
    final: dict[str, list[np.ndarray]] = {}
    held = 0  # weight values drawn so far (and the next layer's)
    # cv2 (and the importer) name a Convolution node after its first top: map it back to its layer
    by_top = {L.get("top")[0]: n for n, (L, t) in weighted.items() if t == "Convolution" and L.get("top")}
    for node in graph.nodes:
        ins = [shapes[t] for t in node.inputs]
        lname = node.name if node.name in weighted else by_top.get(node.name)
        if lname is not None and lname not in final:
            L, typ = weighted[lname]
            n = _seeded_size(typ, L, ins[0], placeholders[lname])
            held += n
            # every layer's float32 weights three times (the blobs, the caffemodel bytes, the net
            # read from them) and this layer's float64 draw, refused before drawing (BudgetError)
            check_memory(held * 4 * 3 + n * 8, f"seeded weights of {held:,} values (layer {lname!r}: {n:,})",
                         layer=lname)
            blobs = _seeded_blobs(typ, L, ins[0], placeholders[lname], rng)
            final[lname] = blobs
            node = Node(node.name, node.op, node.inputs, node.outputs, node.attrs, _ir_params(typ, node, blobs, L))
        outs = registry.get(node.op, node.name).shape(node, ins)
        for t, s in zip(node.outputs, outs):
            shapes[t] = tuple(int(d) for d in s)
    layers_out = [(n, weighted[n][1], final[n]) for n in placeholders if n in final]
    if calibrate and len(graph.inputs) == 1:
        layers_out = _calibrated(prototxt, layers_out, shapes[graph.inputs[0]], preprocess, seed)
    return _caffemodel_bytes(layers_out, msg.get("name"))


def _calibrated(prototxt, layers: list[tuple[str, str, list[np.ndarray]]], shape: tuple[int, ...], preprocess,
                seed: int) -> list[tuple[str, str, list[np.ndarray]]]:
    """``layers`` with each Convolution/Deconvolution/InnerProduct's blobs (weights, bias) scaled by
    :func:`refnet.seeded.calibrate_scales` on a seeded calibration blob of ``shape``."""
    from refnet.net import Net
    from refnet.seeded import calibrate_scales, calibration_blob
    from refnet.weights_import.caffe import read_caffe

    net = Net(read_caffe(prototxt, caffemodel_bytes=_caffemodel_bytes(layers)))
    scales = calibrate_scales(net, calibration_blob(shape, preprocess, seed))
    out = []
    for name, typ, blobs in layers:
        f = scales.get(name)
        if f is not None and typ in ("Convolution", "Deconvolution", "InnerProduct"):
            blobs = [(b * np.float32(f)).astype(np.float32) for b in blobs]
        out.append((name, typ, blobs))
    return out


def _caffemodel_bytes(layers: list[tuple[str, str, list[np.ndarray]]], net_name: str = "") -> bytes:
    out = bytearray()
    if net_name:
        out += _field_bytes(1, net_name.encode())
    for name, typ, blobs in layers:
        body = _field_bytes(1, name.encode()) + _field_bytes(2, typ.encode())
        for b in blobs:
            body += _field_bytes(7, _blob(b))
        out += _field_bytes(100, body)
    return bytes(out)


def seed_onnx_weights(path: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Seeded He-scaled weights for an architecture-only ONNX graph (see refnet.onnx_seed)."""
    from refnet.onnx_seed import seed_onnx_weights as _seed

    return _seed(path, out, seed)
