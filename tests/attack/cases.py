"""The attack inputs of issue 16, small files that used to take gigabytes or minutes.

Each ``make_*`` writes its files into ``folder`` and returns the refnet argv that runs them.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the writers
from writers.caffe_writer import Layer, NetSpec, write_net  # noqa: E402


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, rows: int | None = None) -> bytes:
    """An RGB PNG declaring width x height; only ``rows`` rows of zero pixels really compressed
    inside (a decompression bomb's header with a small body), all rows when None."""
    co = zlib.compressobj(9)
    row = b"\0" * (width * 3 + 1)
    n = height if rows is None else rows
    body = b"".join(co.compress(row) for _ in range(n)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _digit(folder: Path) -> Path:
    p = folder / "digit.png"
    p.write_bytes(png_bytes(28, 28))
    return p


def make_thin_png(folder: Path) -> list[str]:
    """2a: a 1x5000 picture (97 bytes) classified by LeNet: was drawn 256x enlarged (3.1 GB)."""
    p = folder / "thin.png"
    p.write_bytes(png_bytes(5000, 1))
    return ["run", "--zoo", "lenet-mnist", "--image", str(p), "-o", str(folder / "thin_out.png")]


def make_png_bomb(folder: Path) -> list[str]:
    """2b: a PNG declaring 60000x60000 pixels (10.8 GB decoded) with a 35 KB body."""
    p = folder / "bomb.png"
    p.write_bytes(png_bytes(60000, 60000, rows=200))
    return ["run", "--zoo", "lenet-mnist", "--image", str(p), "-o", str(folder / "bomb_out.png")]


def make_big_input(folder: Path) -> list[str]:
    """2c: a prototxt of ~150 bytes declaring a 1x3x20000x20000 input (4.8 GB as float32)."""
    p = folder / "bigin.prototxt"
    p.write_text('name:"b" input:"data" input_shape{dim:1 dim:3 dim:20000 dim:20000}\n'
                 'layer{name:"r" type:"ReLU" bottom:"data" top:"r"}\n')
    return ["run", str(p), "--task", "classify", "--image", str(_digit(folder)), "-o", str(folder / "o.png")]


def make_deconv(folder: Path) -> list[str]:
    """2d: a float64 deconvolution to 1x500x2000x2000 (16 GB) from a 1x1x1000x1000 input."""
    w = np.ones((1, 500, 2, 2), np.float32)
    net = NetSpec([Layer("up", "Deconvolution", ["data"], ["up"],
                         {"convolution_param": {"num_output": 500, "kernel_size": 2, "stride": 2,
                                                "bias_term": False}}, [w])],
                  inputs={"data": (1, 1, 1000, 1000)}, input_style="input_shape")
    proto, model = write_net(net, folder, "deconv")
    return ["run", str(proto), str(model), "--task", "segment", "--precision", "float64",
            "--image", str(_digit(folder)), "-o", str(folder / "d.png")]


def make_chain_compare(folder: Path) -> list[str]:
    """2e: compare on a ~90 KB prototxt of 1500 ReLUs on 1x3x512x512: every layer kept (18 GB)."""
    p = folder / "chain.prototxt"
    layers = "".join(f'layer{{name:"r{i}" type:"ReLU" bottom:"{"data" if i == 0 else f"r{i - 1}"}" top:"r{i}"}}\n'
                     for i in range(1500))
    p.write_text('name:"c" input:"data" input_shape{dim:1 dim:3 dim:512 dim:512}\n' + layers)
    return ["compare", str(p), "--random", "--no-fusion"]


def make_pool_bomb(folder: Path) -> list[str]:
    """3: average pooling, kernel 1500 on 3000x3000 (~5 x 10^12 adds) in a ~170-byte prototxt."""
    p = folder / "pool.prototxt"
    p.write_text('name:"p" input:"data" input_shape{dim:1 dim:1 dim:3000 dim:3000}\n'
                 'layer{name:"pool" type:"Pooling" bottom:"data" top:"pool" '
                 'pooling_param{pool:AVE kernel_size:1500 stride:1}}\n')
    return ["run", str(p), "--task", "classify", "--image", str(_digit(folder)), "-o", str(folder / "p.png")]


def _onnx(folder: Path, name: str, nodes: list, x_shape: tuple, inits: list = ()) -> Path:
    """A one-input ONNX file (opset 17) written with the onnx package's helper API."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = folder / f"{name}.onnx"
    onnx.save(m, str(p))
    return p


def make_conv_pad_bomb(folder: Path) -> list[str]:
    """4a: a Caffe convolution with pad 10^8 and stride 10^8 on 1x3x8x8: a 1x1x3x3 output, but
    the reference kernel pads its input to 3 x (2 x 10^8)^2 samples (853 PiB)."""
    w = np.ones((1, 3, 1, 1), np.float32)
    net = NetSpec([Layer("cv", "Convolution", ["data"], ["cv"],
                         {"convolution_param": {"num_output": 1, "kernel_size": 1, "pad": 10**8, "stride": 10**8,
                                                "bias_term": False}}, [w])],
                  inputs={"data": (1, 3, 8, 8)}, input_style="input_shape")
    proto, model = write_net(net, folder, "padconv")
    return ["run", str(proto), str(model), "--task", "segment", "--precision", "float64",
            "--image", str(_digit(folder)), "-o", str(folder / "c.png")]


def make_onnx_pool_pad_bomb(folder: Path) -> list[str]:
    """4b: an ONNX MaxPool, pads 10^8, strides 10^8 (a 3x3 output): N-d pooling pads in float64."""
    from onnx import helper

    p = _onnx(folder, "padpool", [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1], pads=[10**8] * 4,
                                                   strides=[10**8, 10**8])], (1, 3, 8, 8))
    return ["run", str(p), "--task", "segment", "--image", str(_digit(folder)), "-o", str(folder / "p.png")]


def make_onnx_deconv_crop_bomb(folder: Path) -> list[str]:
    """4c: an ONNX ConvTranspose, strides 10^5, pads 349999: a 1x1x4x4 output cropped from a
    full map of 700001^2 samples."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 1, 2, 2), np.float32), "w")
    p = _onnx(folder, "cropdeconv", [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[10**5, 10**5],
                                                      pads=[349999] * 4)], (1, 3, 8, 8), [w])
    return ["run", str(p), "--task", "segment", "--image", str(_digit(folder)), "-o", str(folder / "t.png")]


def make_seeded_pad_bomb(folder: Path) -> list[str]:
    """5a: 4a's convolution as an architecture-only prototxt run with --seeded-weights: the
    weights' calibration pass ran every layer without the forward pass's budget check."""
    p = folder / "seedpad.prototxt"
    p.write_text('name:"s" input:"data" input_shape{dim:1 dim:3 dim:8 dim:8}\n'
                 'layer{name:"cv" type:"Convolution" bottom:"data" top:"cv" '
                 'convolution_param{num_output:1 kernel_size:1 pad:100000000 stride:100000000}}\n')
    return ["run", str(p), "--seeded-weights", "1", "--task", "segment", "--image", str(_digit(folder)),
            "-o", str(folder / "s.png")]


def make_seeded_big_input(folder: Path) -> list[str]:
    """5b: --seeded-weights on a prototxt declaring 1x3x20000x20000: the calibration input alone
    was drawn (9.6 GB of float64) before any check."""
    p = folder / "seedbig.prototxt"
    p.write_text('name:"s" input:"data" input_shape{dim:1 dim:3 dim:20000 dim:20000}\n'
                 'layer{name:"cv" type:"Convolution" bottom:"data" top:"cv" '
                 'convolution_param{num_output:1 kernel_size:1}}\n')
    return ["run", str(p), "--seeded-weights", "1", "--task", "segment", "--image", str(_digit(folder)),
            "-o", str(folder / "s.png")]


def make_seeded_big_weights(folder: Path) -> list[str]:
    """5c: --seeded-weights on an InnerProduct of 10^6 outputs over 1x3x100x100: 3 x 10^10
    weights were drawn (224 GiB of float64) before any check."""
    p = folder / "seedip.prototxt"
    p.write_text('name:"s" input:"data" input_shape{dim:1 dim:3 dim:100 dim:100}\n'
                 'layer{name:"ip" type:"InnerProduct" bottom:"data" top:"ip" '
                 'inner_product_param{num_output:1000000}}\n')
    return ["run", str(p), "--seeded-weights", "1", "--task", "classify", "--image", str(_digit(folder)),
            "-o", str(folder / "s.png")]


def make_bench_big_input(folder: Path) -> list[str]:
    """6: bench on a prototxt declaring 1x3x20000x20000: its random input was drawn (9.6 GB of
    float64) before the forward pass's budget check."""
    p = folder / "benchbig.prototxt"
    p.write_text('name:"b" input:"data" input_shape{dim:1 dim:3 dim:20000 dim:20000}\n'
                 'layer{name:"r" type:"ReLU" bottom:"data" top:"r"}\n')
    return ["bench", str(p), "--no-cv2", "--repeat", "1", "--warmup", "0"]


def _fc_net(folder: Path, hw: int) -> tuple[Path, Path]:
    """A fully convolutional Caffe net on 1x3xhwxhw: 1x1 convolution 3->3, ReLU, Sigmoid."""
    w = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    net = NetSpec([Layer("c", "Convolution", ["data"], ["c"],
                         {"convolution_param": {"num_output": 3, "kernel_size": 1, "bias_term": False}}, [w]),
                   Layer("r", "ReLU", ["c"], ["r"]), Layer("s", "Sigmoid", ["r"], ["s"])],
                  inputs={"data": (1, 3, hw, hw)}, input_style="input_shape")
    return write_net(net, folder, "fc")


def make_convert_big_input(folder: Path) -> list[str]:
    """7a: convert with --input-shape 1 3 20000 20000: its random input was drawn (9.6 GB of
    float64) before any check."""
    proto, model = _fc_net(folder, 8)
    return ["convert", str(proto), str(model), "-o", str(folder / "big.onnx"), "--input-shape", "1", "3", "20000",
            "20000"]


def make_convert_verify_bomb(folder: Path) -> list[str]:
    """7b: convert of a 3-layer net on 1x3x2500x2500: each pass fits, but the verification keeps
    every layer of refnet float64 and of a backend, and measures errors in float64 (~1.5 GB)."""
    proto, model = _fc_net(folder, 2500)
    return ["convert", str(proto), str(model), "-o", str(folder / "v.onnx"), "--backend", "ort"]


CASES = {
    "2a thin 1x5000 png": make_thin_png,
    "2b png bomb 60000^2": make_png_bomb,
    "2c 4.8 GB declared input": make_big_input,
    "2d float64 deconv 2000^2": make_deconv,
    "2e compare 1500-layer chain": make_chain_compare,
    "3 pooling compute bomb": make_pool_bomb,
    "4a conv pad 10^8 stride 10^8": make_conv_pad_bomb,
    "4b onnx maxpool pad 10^8": make_onnx_pool_pad_bomb,
    "4c onnx deconv cropped 700001^2": make_onnx_deconv_crop_bomb,
    "5a seeded-weights calibration pad bomb": make_seeded_pad_bomb,
    "5b seeded-weights 20000^2 calibration input": make_seeded_big_input,
    "5c seeded-weights 3 x 10^10 InnerProduct weights": make_seeded_big_weights,
    "6 bench random input 20000^2": make_bench_big_input,
    "7a convert random input 20000^2": make_convert_big_input,
    "7b convert verification 2500^2": make_convert_verify_bomb,
}
