"""Built-in architecture generators: Caffe nets written by refnet itself, with seeded weights.

A :class:`CaffeNetBuilder` tracks every blob's shape while layers are added, so it can emit
both the deploy ``.prototxt`` (text) and a ``.caffemodel`` (protobuf wire format, V2 layers)
of seeded random weights: He-scaled convolutions so activations stay in range, positive
BatchNorm variances. cv2.dnn reads the files, so every generated net can be cross-checked.

Generators: :func:`deeplab_v3plus` (MobileNetV2-style backbone with depthwise-separable
convs, output stride 16 with atrous rates, ASPP 6/12/18 + image pooling, bilinear decoder
with a low-level skip).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["CaffeNetBuilder", "deeplab_v3plus", "write_caffemodel"]


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
    out = bytearray()
    if net_name:
        out += _field_bytes(1, net_name.encode())
    for name, typ, blobs in layers:
        body = _field_bytes(1, name.encode()) + _field_bytes(2, typ.encode())
        for b in blobs:
            body += _field_bytes(7, _blob(b))
        out += _field_bytes(100, body)
    Path(path).write_bytes(bytes(out))


# ---- the builder ---------------------------------------------------------------------------------
class CaffeNetBuilder:
    """Add layers with shape tracking; emit prototxt text and seeded weights."""

    def __init__(self, name: str, input_shape: tuple[int, int, int, int], seed: int = 0,
                 input_name: str = "data") -> None:
        self.name = name
        self.input_name = input_name
        self.input_shape = tuple(int(d) for d in input_shape)
        self.rng = np.random.default_rng(seed)
        self.text: list[str] = []
        self.weights: list[tuple[str, str, list[np.ndarray]]] = []
        self.shape: dict[str, tuple[int, int, int]] = {input_name: self.input_shape[1:]}  # blob -> (C, H, W)

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
        head = f'name: "{self.name}"\ninput: "{self.input_name}"\ninput_shape {{ {dims} }}\n'
        return head + "".join(self.text)

    def write(self, prefix: str | Path) -> tuple[Path, Path]:
        """Write ``<prefix>.prototxt`` and ``<prefix>.caffemodel``; return both paths."""
        prefix = Path(prefix)
        proto, model = prefix.with_suffix(".prototxt"), prefix.with_suffix(".caffemodel")
        proto.write_text(self.prototxt())
        write_caffemodel(model, self.weights, self.name)
        return proto, model

    # -- layers
    def conv(self, name: str, bottom: str, num_output: int, kernel: int, stride: int = 1, pad: int | None = None,
             dilation: int = 1, group: int = 1, bias: bool = True) -> str:
        c, h, w = self.shape[bottom]
        if pad is None:
            pad = dilation * (kernel - 1) // 2
        oh = (h + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
        ow = (w + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
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
