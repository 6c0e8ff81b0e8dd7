"""refnet.kernels.geometry: the one home of the window geometry rules, against hand-computed sizes.

(The Caffe pooling table and the conv hand values stay in test_pool.py / test_conv.py; this file covers
the ONNX pooling rule, SAME padding, the pair/pad readers, and that every former copy is the one rule.)
"""

from __future__ import annotations

import pytest

from refnet.errors import ShapeError
from refnet.kernels import geometry as G


@pytest.mark.parametrize(
    "size,k,s,pb,pe,d,want",
    [
        (224, 7, 2, 3, 3, 1, 112),  # ResNet conv1: (224 + 6 - 7) // 2 + 1 = 112
        (7, 3, 1, 0, 0, 3, 1),  # extent 3*2+1 = 7 on 7: one output
        (10, 3, 3, 1, 0, 1, 3),  # (11 - 3) // 3 + 1 = 3 (floor drops the partial window)
        (0, 1, 1, 1, 1, 1, 2),  # empty input, pads only: (2 - 1) // 1 + 1
    ],
)
def test_conv_output_size_hand(size, k, s, pb, pe, d, want):
    assert G.conv_output_size(size, k, s, pb, pe, d) == want


@pytest.mark.parametrize(
    "size,k,s,pb,pe,d,adj,want",
    [
        (3, 3, 2, 0, 0, 1, 0, 7),  # (3-1)*2 + 3 = 7
        (3, 3, 2, 1, 1, 1, 1, 6),  # 4 - 2 + 3 + 1
        (2, 2, 1, 0, 0, 2, 0, 4),  # 1 + 2*1 + 1
    ],
)
def test_conv_transpose_output_size_hand(size, k, s, pb, pe, d, adj, want):
    assert G.conv_transpose_output_size(size, k, s, pb, pe, d, adj) == want


def test_conv_transpose_output_size_empty():
    with pytest.raises(ShapeError, match="empty"):
        G.conv_transpose_output_size(1, 1, 1, 1, 1, 1)  # 0 - 2 + 1 = -1


@pytest.mark.parametrize(
    "size,k,s,pb,pe,d,ceil,want",
    [
        # no padding, ceil: Caffe keeps a window that starts past the input (3), ONNX drops it (2):
        # windows start at 0, 3, 6 on 5 pixels
        (5, 1, 3, 0, 0, 1, True, 2),
        (5, 2, 2, 0, 0, 1, True, 3),  # starts 0, 2, 4: the last (partial) window starts inside
        (5, 2, 2, 0, 0, 1, False, 2),
        (5, 2, 2, 1, 1, 1, True, 3),  # 1 + ceil(5/2) = 4, last start 6 >= 5 + 1: dropped
        (7, 3, 2, 0, 0, 2, False, 2),  # dilated extent 5: (7 - 5) // 2 + 1
        (7, 3, 2, 0, 0, 2, True, 2),  # ceil(2/2) = 1: exact, nothing to round
        (8, 3, 2, 0, 0, 2, True, 3),  # ceil(3/2) + 1 = 3, last start 4 < 8
        (2, 1, 1, 0, 3, 1, False, 5),  # floor mode never corrects: pads as wide as the kernel count
    ],
)
def test_pool_output_size_onnx_rule(size, k, s, pb, pe, d, ceil, want):
    assert G.pool_output_size(size, k, s, pb, pe, ceil, dilation=d, rule="onnx") == want


def test_pool_rules_differ_only_where_documented():
    # Caffe: the last-window correction only when padded; ONNX: only in ceil mode
    assert G.pool_output_size(5, 1, 3, 0, 0, True) == 3
    assert G.pool_output_size(5, 1, 3, 0, 0, True, rule="onnx") == 2
    with pytest.raises(ValueError):
        G.pool_output_size(5, 1, 3, 0, 0, True, rule="tf")


@pytest.mark.parametrize(
    "size,k,s,d,upper,want",
    [
        (5, 3, 1, 1, True, (1, 1)),  # out 5: total 2
        (5, 2, 2, 1, True, (0, 1)),  # out 3: (3-1)*2 + 2 - 5 = 1, the odd pixel at the end
        (5, 2, 2, 1, False, (1, 0)),  # SAME_LOWER: at the beginning
        (6, 3, 2, 1, True, (0, 1)),  # out 3: 4 + 3 - 6 = 1
        (4, 3, 1, 2, True, (2, 2)),  # extent 5, out 4: 3 + 5 - 4 = 4
        (7, 1, 3, 1, True, (0, 0)),  # out 3: 6 + 1 - 7 = 0
    ],
)
def test_same_pads_hand(size, k, s, d, upper, want):
    assert G.same_pads(size, k, s, d, upper=upper) == want
    # SAME keeps ceil(size / stride) outputs
    b, e = want
    assert G.conv_output_size(size, k, s, b, e, d) == -(-size // s)


def test_pair_and_pad4_readers():
    assert G.pair(3, "k") == (3, 3)
    assert G.pair((2, 5), "k") == (2, 5)
    assert G.pair((0, 1), "p", positive=False) == (0, 1)
    with pytest.raises(ShapeError):
        G.pair((1, 2, 3), "k")
    with pytest.raises(ShapeError):
        G.pair(0, "stride")
    assert G.pad4(1) == (1, 1, 1, 1)
    assert G.pad4((1, 2)) == (1, 2, 1, 2)
    assert G.pad4((1, 2, 3, 4)) == (1, 2, 3, 4)
    with pytest.raises(ShapeError):
        G.pad4((1, 2, 3))
    with pytest.raises(ShapeError):
        G.pad4(-1)


def test_one_home_every_reader_is_the_geometry_rule():
    """The kernels, the ops' attribute readers and the ONNX reader use these functions, not copies."""
    from refnet import kernels as K
    from refnet.kernels import _check, conv, pool
    from refnet.ops import registry
    from refnet.weights_import import onnx_ops

    assert conv.conv_output_size is G.conv_output_size is K.conv_output_size
    assert conv.conv_transpose_output_size is G.conv_transpose_output_size
    assert pool.pool_output_size is G.pool_output_size is K.pool_output_size
    assert _check.pair is G.pair and _check.pad4 is G.pad4
    assert registry.pair(None, 1) == (1, 1) and registry.pair(2, 1) == (2, 2)
    assert registry.pad4(None) == (0, 0, 0, 0) and registry.pad4((1, 2)) == (1, 2, 1, 2)
    assert onnx_ops._pool_out(5, 1, 3, 0, 0, 1, True) == 2  # the ONNX rule, through the importer
    assert onnx_ops._pool_out(2, 4, 1, 0, 0, 1, False) == 0  # does not fit: 0, the caller raises
