"""Image dimensions from the file header, read before decoding (decompression bombs).

An 875 KB PNG can declare 60000 x 60000 pixels and decode to 10.9 GB. :func:`header_size`
reads width, height, channels and bytes per sample from the first bytes of PNG, JPEG, BMP,
GIF, PNM (PBM/PGM/PPM) and WebP files; :func:`check_image_file` refuses a file whose decoded
size exceeds the memory budget (refnet.runtime.budget) before OpenCV decodes it. Other
formats (TIFF, JPEG 2000, EXR, ...) go to OpenCV unchecked by refnet; OpenCV refuses more than
``OPENCV_IO_MAX_IMAGE_PIXELS`` (2^30 by default) pixels itself.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

from refnet.runtime import budget

__all__ = ["ImageHeader", "header_size", "check_image_file"]

_HEAD = 1 << 16  # JPEG SOF markers may follow EXIF/ICC segments: read up to 64 KiB, then seek


class ImageHeader(NamedTuple):
    format: str
    width: int
    height: int
    channels: int
    bytes_per_sample: int


def _png(b: bytes) -> ImageHeader | None:
    if len(b) < 33 or b[12:16] != b"IHDR":
        return None
    w, h, depth, color = struct.unpack(">IIBB", b[16:26])
    ch = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color, 4)
    return ImageHeader("png", w, h, ch, 2 if depth == 16 else 1)


def _jpeg(f, head: bytes) -> ImageHeader | None:
    pos = 2
    data = head
    for _ in range(10000):  # segments; a SOFn marker carries the frame size
        if pos + 4 > len(data):
            f.seek(pos)
            data = b"\0" * pos + f.read(_HEAD)
            if pos + 4 > len(data):
                return None
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 10 > len(data):
                f.seek(pos)
                data = b"\0" * pos + f.read(16)
            depth, h, w, ch = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return ImageHeader("jpeg", w, h, max(ch, 1), 2 if depth > 8 else 1)
        if length < 2:
            return None
        pos += 2 + length
    return None


def _bmp(b: bytes) -> ImageHeader | None:
    if len(b) < 30:
        return None
    (hsize,) = struct.unpack("<I", b[14:18])
    if hsize == 12:
        w, h = struct.unpack("<HH", b[18:22])
    else:
        w, h = struct.unpack("<ii", b[18:26])
    return ImageHeader("bmp", abs(w), abs(h), 4, 1)


def _gif(b: bytes) -> ImageHeader | None:
    if len(b) < 10:
        return None
    w, h = struct.unpack("<HH", b[6:10])
    return ImageHeader("gif", w, h, 4, 1)


def _pnm(b: bytes) -> ImageHeader | None:
    tokens: list[bytes] = []
    i = 2
    while len(tokens) < 2 and i < len(b):
        c = b[i : i + 1]
        if c == b"#":
            j = b.find(b"\n", i)
            i = len(b) if j < 0 else j + 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(b) and not b[j : j + 1].isspace() and b[j : j + 1] != b"#":
                j += 1
            tokens.append(b[i:j])
            i = j
    if len(tokens) < 2 or not all(t.isdigit() for t in tokens):
        return None
    ch = 3 if b[1:2] in (b"3", b"6") else 1
    return ImageHeader("pnm", int(tokens[0]), int(tokens[1]), ch, 2)


def _webp(b: bytes) -> ImageHeader | None:
    kind = b[12:16]
    if kind == b"VP8 " and len(b) >= 30:
        w, h = struct.unpack("<HH", b[26:30])
        return ImageHeader("webp", w & 0x3FFF, h & 0x3FFF, 4, 1)
    if kind == b"VP8L" and len(b) >= 25:
        (v,) = struct.unpack("<I", b[21:25])
        return ImageHeader("webp", (v & 0x3FFF) + 1, ((v >> 14) & 0x3FFF) + 1, 4, 1)
    if kind == b"VP8X" and len(b) >= 30:
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return ImageHeader("webp", w, h, 4, 1)
    return None


def header_size(path: str | os.PathLike) -> ImageHeader | None:
    """The dimensions a file's header declares, or None when refnet does not read that format."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(head)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(f, head)
        if head.startswith(b"BM"):
            return _bmp(head)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(head)
        if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
            return _pnm(head)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
    return None


def check_image_file(path: str | os.PathLike) -> ImageHeader | None:
    """Refuse (BudgetError) an image whose file or decoded pixels exceed the memory budget,
    from its size on disk and its header, before anything is decoded; return the header."""
    p = Path(path)
    size = p.stat().st_size
    budget.check_memory(size, f"reading image {p.name} ({size:,} bytes)")
    hdr = header_size(p)
    if hdr is not None:
        need = budget.image_need(hdr.width, hdr.height, hdr.channels, hdr.bytes_per_sample) + size
        budget.check_memory(need, f"decoding image {p.name} ({hdr.format} {hdr.width}x{hdr.height} pixels, "
                                  f"{hdr.channels} channel(s))")
    return hdr
