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


CASES = {
    "2a thin 1x5000 png": make_thin_png,
    "2b png bomb 60000^2": make_png_bomb,
    "2c 4.8 GB declared input": make_big_input,
    "2d float64 deconv 2000^2": make_deconv,
    "2e compare 1500-layer chain": make_chain_compare,
    "3 pooling compute bomb": make_pool_bomb,
}
