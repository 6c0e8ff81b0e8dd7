"""Kernels that used to live as NumPy inside refnet/ops (Torch7 nn.Normalize, nn.Padding, nn.Narrow,
SpatialUpSamplingBilinear, Darknet shortcut): fast vs reference, and each against an independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from refnet import kernels as K
from refnet.errors import ShapeError


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, np.inf])
def test_lp_normalize_vs_numpy_norm(rng, p):
    x = rng.normal(0, 2, (3, 4, 5, 2))
    # oracle: numpy's vector norm of each flattened sample (eps = 0)
    want = x / np.linalg.norm(x.reshape(3, -1), ord=p, axis=1).reshape(3, 1, 1, 1)
    assert_close(K.lp_normalize_reference(x, p, 0.0), want, "f64_vs_oracle", f"reference p={p}")
    assert_close(K.lp_normalize(x.astype(np.float32), p, 0.0), want, "f32_vs_f64", f"fast p={p}")
    # eps: inside the p-th root (Torch7's rule); p = inf: added to the max
    got = K.lp_normalize_reference(np.array([[3.0, 4.0]]), 2.0, 11.0)
    assert np.allclose(got, [[0.5, 2 / 3]], rtol=0, atol=1e-15)  # sqrt(9 + 16 + 11) = 6
    got = K.lp_normalize_reference(np.array([[3.0, -4.0]]), np.inf, 1.0)
    assert np.allclose(got, [[0.6, -0.8]], rtol=0, atol=1e-15)  # max |x| + eps = 5
    assert K.lp_normalize(x.astype(np.float32), p).dtype == np.float32


def test_upsample_bilinear_align_corners_vs_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(0, 1, (2, 3, 4, 5))
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(7, 13), mode="bilinear",
                                           align_corners=True).numpy()
    assert_close(K.resize_bilinear_reference(x, (7, 13), align_corners=True), want, "f64_vs_oracle", "reference")
    assert_close(K.resize_bilinear(x.astype(np.float32), (7, 13), align_corners=True), want, "f32_vs_f64", "fast")


def test_upsample_bilinear_ac_op_is_the_resize_kernel(rng):
    """The Torch7 op runs the resize kernel: out = (in - 1) * scale + 1 corners stay put."""
    from refnet.graph import Graph, Node
    from refnet.net import Net

    x = rng.normal(0, 1, (1, 2, 3, 4))
    net = Net(Graph([Node("up", "upsample_bilinear_ac", ("data",), ("up",), attrs={"scale": 2})], ("data",),
                    {"data": (1, 2, 3, 4)}))
    for precision in ("float64", "float32"):
        y = net.forward(x, precision=precision)["up"]
        want = K.resize_bilinear_reference(x, (5, 7), align_corners=True)
        assert_close(y, want, "f32_vs_f64" if precision == "float32" else 0.0, precision)
        assert np.array_equal(y[..., ::2, ::2].astype(np.float64), x.astype(y.dtype).astype(np.float64))


def test_shortcut_vs_explicit_sum(rng):
    x = rng.normal(0, 1, (2, 5, 3, 3))
    a = rng.normal(0, 1, (2, 3, 3, 3))  # fewer channels: added to the first 3
    b = rng.normal(0, 1, (2, 7, 3, 3))  # more channels: its first 5 added
    # oracle: zero-pad / cut each input to x's channels, then one weighted sum
    want = 0.5 * x + 2.0 * (np.pad(a, ((0, 0), (0, 2), (0, 0), (0, 0))) + b[:, :5])
    assert_close(K.shortcut_reference(x, [a, b], 0.5, 2.0), want, "f64_vs_oracle", "reference")
    f = [v.astype(np.float32) for v in (x, a, b)]
    assert_close(K.shortcut(f[0], f[1:], 0.5, 2.0), want, "f32_vs_f64", "fast")
    assert np.array_equal(K.shortcut(x, [a]), x + np.pad(a, ((0, 0), (0, 2), (0, 0), (0, 0))))
    with pytest.raises(ShapeError):
        K.shortcut(x, [np.zeros((2, 5, 2, 3))])


def test_torch_padding_and_torch_narrow_hand():
    x = np.arange(6.0).reshape(2, 3)
    assert K.torch_padding(x, 1, 2, 1, -1.0).tolist() == [[0, -1, -1, 1, 2], [3, -1, -1, 4, 5]]
    assert K.torch_padding(x, 0, 1, 2).tolist() == [[0, 1, 2], [3, 4, 5], [0, 0, 0]]
    assert K.torch_narrow(x, 1, 1, 2).tolist() == [[1, 2], [4, 5]]
    assert K.torch_narrow(x, -2, 1, 1).tolist() == [[3, 4, 5]]
    with pytest.raises(ShapeError):
        K.torch_narrow(x, 1, 2, 2)
    with pytest.raises(ShapeError):
        K.torch_padding(x, 1, 1, 4)
