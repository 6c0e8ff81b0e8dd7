"""Write a Caffe deploy model: an existing Caffe net cut after one layer, plus new layers on top.

Used by ``refnet transfer`` to save "frozen backbone up to L + trained head" as a
``.prototxt`` + ``.caffemodel`` pair that Caffe and ``cv2.dnn.readNetFromCaffe`` load.

- prototxt: the source file's own text with the blocks of the layers the cut layer does not
  depend on cut out (the header -- name, ``input:``/``input_shape``/Input layer -- and comments
  stay as written), then the new layers' blocks.
- caffemodel: a fresh V2 NetParameter (refnet.archs' wire writer) with the kept layers' blobs
  as the source caffemodel stores them (decoded by refnet's own protobuf reader, V1 or V2) and
  the new layers' blobs.

A top-level block splitter (quotes, ``#`` comments, nested braces) finds the layer blocks in
the text; refnet's prototxt parser finds their names, tops and bottoms, one per block.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refnet.errors import ModelFormatError

__all__ = ["NewLayer", "split_blocks", "write_cut_model"]


@dataclass(frozen=True)
class NewLayer:
    """A layer to append: its prototxt block body (without ``layer { }``) and its blobs in Caffe layout."""

    name: str
    type: str
    body: str
    blobs: tuple[np.ndarray, ...] = ()


def split_blocks(text: str) -> list[tuple[int, int, str]]:
    """Top-level message blocks of a prototxt as ``(start, end, field name)``, e.g. ``layer { ... }``
    or ``input_shape { ... }``. Quoted strings (with escapes) and ``#`` comments are skipped;
    ``field: { }`` and ``< >`` delimiters count as nesting; scalar statements are not blocks."""
    out: list[tuple[int, int, str]] = []
    i, n = 0, len(text)
    depth, start, key = 0, -1, ""
    while i < n:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if depth == 0 and (ch.isalpha() or ch == "_"):
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            start, key = i, text[i:j]
            i = j
            continue
        if ch in "{<":
            depth += 1
        elif ch in "}>":
            depth -= 1
            if depth < 0:
                raise ModelFormatError("unbalanced '}' in the prototxt", offset=i)
            if depth == 0:
                out.append((start, i + 1, key))
        i += 1
    if depth != 0:
        raise ModelFormatError("unbalanced '{' in the prototxt", offset=n)
    return out


def _layer_messages(path: Path):
    from refnet.weights_import.caffe import _layers_of, parse_net_text

    return _layers_of(parse_net_text(path.read_bytes(), file=str(path)))


def _needed(layers, cut: str) -> list[int]:
    """Indices of the layers ``cut`` depends on (itself included), all at or before it."""
    names = [L.name for L in layers]
    if cut not in names:
        raise KeyError(f"no layer {cut!r} in the prototxt; layers are e.g. {names[:10]}")
    end = names.index(cut)
    need_blobs = set(layers[end].bottom)
    keep = {end}
    for i in range(end - 1, -1, -1):
        if set(layers[i].top) & need_blobs:
            keep.add(i)
            need_blobs |= set(layers[i].bottom)  # an in-place layer keeps its producer as well
    return sorted(keep)


def write_cut_model(prototxt: str | os.PathLike, caffemodel: str | os.PathLike, cut: str,
                    new_layers: Sequence[NewLayer], out_prefix: str | os.PathLike) -> tuple[Path, Path, str]:
    """Write ``<out_prefix>.prototxt`` / ``.caffemodel``: the net up to layer ``cut`` and then
    ``new_layers``; returns the two paths and the blob name the cut layer writes (the bottom
    the first new layer should read)."""
    from refnet.archs import _caffemodel_bytes
    from refnet.weights_import.caffe import _layers_of, blob_array, parse_net_binary

    src, model = Path(prototxt), Path(caffemodel)
    text = src.read_text()
    layers = _layer_messages(src)
    blocks = [b for b in split_blocks(text) if b[2] in ("layer", "layers")]
    if len(blocks) != len(layers):
        raise ModelFormatError(f"found {len(blocks)} layer blocks but the parser read {len(layers)} layers",
                               file=str(src))
    keep = _needed(layers, cut)
    top = layers[keep[-1]].top[0]
    # the source text with the blocks of the layers not kept cut out (header statements stay as written)
    parts, pos = [], 0
    for i, (a, b, _) in enumerate(blocks):
        if i not in keep:
            parts.append(text[pos:a])
            pos = b
    parts.append(text[pos:].rstrip() + "\n")
    parts += [f'layer {{\n  name: "{L.name}"\n  type: "{L.type}"\n{L.body.rstrip()}\n}}\n' for L in new_layers]
    weights = {L.name: L for L in _layers_of(parse_net_binary(model.read_bytes(), file=str(model),
                                                              weights_only=True))}
    blobs = []
    for i in keep:
        L = weights.get(layers[i].name)
        if L is not None and L.blobs:
            blobs.append((L.name, layers[i].type, [blob_array(b, L.name) for b in L.blobs]))
    blobs += [(L.name, L.type, [np.asarray(b, np.float32) for b in L.blobs]) for L in new_layers if L.blobs]
    out = Path(out_prefix)
    p_out, m_out = out.with_name(out.name + ".prototxt"), out.with_name(out.name + ".caffemodel")
    p_out.write_text("".join(parts))
    m_out.write_bytes(_caffemodel_bytes(blobs, "transfer"))
    return p_out, m_out, top
