"""Tensor kernels: fast vs reference (hypothesis, both dtypes) and independent oracles:
cv2.dnn single-layer Caffe nets (Concat, Slice, Flatten, Reshape, Permute, Crop, Eltwise,
ShuffleChannel, Interp), a cv2 Darknet [reorg] net, cv2.resize, numpy.pad, scipy.ndimage."""

from __future__ import annotations

import importlib
import math

import cv2
import numpy as np
import pytest
from conftest import assert_close, cv2_layer
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import map_coordinates

from refnet.errors import ShapeError

T = importlib.import_module("refnet.kernels.tensor")

HYP = settings(max_examples=30, deadline=None, derandomize=True)
DTYPES = st.sampled_from(["float32", "float64"])


# ---- cv2 single-layer nets: conftest.cv2_layer ------------------------------------------------
def _cv2_2d(got: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """cv2 Mats have >= 2 dims: a 1-D result comes back as (n, 1). Undo that, check the rest."""
    if len(shape) == 1 and got.shape == (shape[0], 1):
        return got.reshape(shape)
    assert got.shape == tuple(shape)
    return got


def _f(rng, shape, dt="float32"):
    return rng.normal(size=shape).astype(dt)


# ---- concat -------------------------------------------------------------------------------
@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, nd=st.integers(1, 4), k=st.integers(1, 4),
       data=st.data())
def test_concat_fast_vs_reference(seed, dt, nd, k, data):
    rng = np.random.default_rng(seed)
    base = [int(v) for v in rng.integers(1, 5, nd)]
    axis = data.draw(st.integers(-nd, nd - 1))
    xs = []
    for _ in range(k):
        s = list(base)
        s[axis] = int(rng.integers(0, 4))
        xs.append(_f(rng, s, dt))
    a, b = T.concat(xs, axis=axis), T.concat_reference(xs, axis=axis)
    want = np.concatenate(xs, axis=axis)
    assert a.dtype == b.dtype == np.dtype(dt)
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(b, want)


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_concat_vs_cv2(tmp_path, rng, axis):
    shapes = [[2, 3, 4, 5] for _ in range(3)]
    for i, s in enumerate(shapes):
        s[axis] += i
    xs = {f"x{i}": _f(rng, s) for i, s in enumerate(shapes)}
    layer = ('layer { name: "l" type: "Concat" bottom: "x0" bottom: "x1" bottom: "x2" top: "l" '
             f"concat_param {{ axis: {axis} }} }}")
    want = cv2_layer(tmp_path, layer, xs)
    for fn in (T.concat, T.concat_reference):
        np.testing.assert_array_equal(fn(list(xs.values()), axis=axis), want)


def test_concat_errors():
    a = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ShapeError, match="xs\\[1\\]"):
        T.concat([a, np.zeros((1, 2, 4), np.float32)], axis=1)
    with pytest.raises(TypeError, match="dtype"):
        T.concat([a, a.astype(np.float64)])
    with pytest.raises(TypeError):
        T.concat(a)
    with pytest.raises(ShapeError, match="axis"):
        T.concat_reference([a, a], axis=3)


def _rng_shape(seed: int, data, hi: int) -> tuple[np.random.Generator, list[int]]:
    """The test's generator (from ``seed``) and a shape: rank 1..4 drawn by hypothesis, each dim
    in 1..hi-1 from the generator."""
    rng = np.random.default_rng(seed)
    nd = data.draw(st.integers(1, 4))
    return rng, [int(v) for v in rng.integers(1, hi, nd)]


# ---- slice --------------------------------------------------------------------------------
@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, data=st.data())
def test_slice_fast_vs_reference(seed, dt, data):
    rng, shape = _rng_shape(seed, data, 6)
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    dim = shape[axis]
    x = _f(rng, shape, dt)
    if dim > 1 and data.draw(st.booleans()):
        pts = sorted(data.draw(st.sets(st.integers(1, dim - 1), min_size=1)))
        n = len(pts) + 1
    else:
        pts = []
        n = data.draw(st.sampled_from([d for d in range(1, dim + 1) if dim % d == 0]))
    a = T.slice(x, axis, pts, n=n)
    b = T.slice_reference(x, axis, pts, n=n)
    want = np.split(x, pts if pts else n, axis=axis)
    assert len(a) == len(b) == len(want) == n
    for u, v, w in zip(a, b, want):
        assert u.dtype == v.dtype == np.dtype(dt)
        np.testing.assert_array_equal(u, w)
        np.testing.assert_array_equal(v, w)


@pytest.mark.parametrize(("param", "points", "n"), [
    ("axis: 1 slice_point: 1 slice_point: 4", (1, 4), 3),
    ("axis: 1", (), 2),
    ("axis: 1", (), 3),
    ("axis: 2", (), 4),
    ("axis: 3 slice_point: 2", (2,), 2),
    ("axis: -2 slice_point: 1 slice_point: 2 slice_point: 3", (1, 2, 3), 4),
])
def test_slice_vs_cv2(tmp_path, rng, param, points, n):
    x = _f(rng, (2, 6, 4, 5))
    names = tuple(f"t{i}" for i in range(n))
    tops = " ".join(f'top: "{t}"' for t in names)
    layer = f'layer {{ name: "l" type: "Slice" bottom: "x" {tops} slice_param {{ {param} }} }}'
    want = cv2_layer(tmp_path, layer, {"x": x}, tops=names)
    axis = int(param.split()[1])
    for fn in (T.slice, T.slice_reference):
        got = fn(x, axis, points, n=n)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_slice_errors():
    x = np.zeros((2, 6), np.float32)
    for pts in [(0,), (3, 3), (4, 2), (6,)]:
        with pytest.raises(ShapeError, match="slice points"):
            T.slice(x, 1, pts)
    with pytest.raises(ShapeError, match="equal parts"):
        T.slice_reference(x, 1, (), n=4)


# ---- flatten / reshape --------------------------------------------------------------------
@pytest.mark.parametrize(("axis", "end"), [(1, -1), (0, -1), (1, 2), (2, 3), (-3, -2), (3, 3)])
def test_flatten_vs_cv2(tmp_path, rng, axis, end):
    x = _f(rng, (2, 3, 4, 5))
    layer = (f'layer {{ name: "l" type: "Flatten" bottom: "x" top: "l" flatten_param {{ '
             f"axis: {axis} end_axis: {end} }} }}")
    want = cv2_layer(tmp_path, layer, {"x": x})
    for fn in (T.flatten, T.flatten_reference):
        got = fn(x, axis=axis, end_axis=end)
        np.testing.assert_array_equal(got, _cv2_2d(want, got.shape))
    with pytest.raises(ShapeError):
        T.flatten(x, axis=2, end_axis=1)


@pytest.mark.parametrize(("in_shape", "shape", "axis", "num_axes", "want"), [
    # hand-worked Caffe ReshapeParameter examples
    ((2, 3, 4, 5), (0, -1), 0, -1, (2, 60)),
    ((2, 3, 4, 5), (-1, 0, 1), 1, 2, (2, 3, 4, 1, 5)),  # 0 copies in[2]; -1 = 120 / 40
    ((2, 3, 4, 5), (0, -1, 2), 1, 2, (2, 3, 2, 2, 5)),
    ((2, 3, 4, 5), (1,), -1, 0, (2, 3, 4, 5, 1)),  # append a singleton axis
    ((2, 3, 4, 5), (1,), 0, 0, (1, 2, 3, 4, 5)),  # prepend one
    ((2, 3, 4, 5), (6, -1), 1, 2, (2, 6, 2, 5)),
    ((2, 3, 4, 5), (0, 0, -1), 0, -1, (2, 3, 20)),
    ((2, 3, 4, 5), (-1,), 2, -1, (2, 3, 20)),
    ((6, 1, 1, 2), (3, 2), 0, 1, (3, 2, 1, 1, 2)),
])
def test_reshape_output_shape_hand(in_shape, shape, axis, num_axes, want):
    assert T.reshape_output_shape(in_shape, shape, axis, num_axes) == want


@pytest.mark.parametrize(("shape", "axis", "num_axes"), [
    ((0, -1), 0, -1), ((0, -1, 2), 1, 2), ((-1, 10), 1, -1), ((1, 0, -1), 1, 2),
    ((0, 0, 0, 0), 0, -1), ((6, 4), 0, 3), ((-1,), 0, -1), ((2, 2), 2, 1), ((3, 1), 1, 1),
])
def test_reshape_vs_cv2(tmp_path, rng, shape, axis, num_axes):
    x = _f(rng, (2, 3, 4, 5))
    dims = " ".join(f"dim: {d}" for d in shape)
    layer = (f'layer {{ name: "l" type: "Reshape" bottom: "x" top: "l" reshape_param {{ '
             f"shape {{ {dims} }} axis: {axis} num_axes: {num_axes} }} }}")
    want = _cv2_2d(cv2_layer(tmp_path, layer, {"x": x}),
                   T.reshape_output_shape(x.shape, shape, axis, num_axes))
    for fn in (T.reshape, T.reshape_reference):
        np.testing.assert_array_equal(fn(x, shape, axis=axis, num_axes=num_axes), want)


@pytest.mark.parametrize(("axis", "want"), [(-1, (2, 3, 4, 5, 1)), (4, (2, 3, 4, 5, 1)),
                                          (0, (1, 2, 3, 4, 5)), (2, (2, 3, 1, 4, 5))])
def test_cv2_quirk_reshape_cannot_insert_axes(tmp_path, rng, axis, want):
    """cv2 quirk: Caffe's Reshape ``num_axes: 0`` (insert axes, e.g. ``axis: -1`` appends a
    singleton) is rejected by cv2.dnn 4.14."""
    x = _f(rng, (2, 3, 4, 5))
    assert T.reshape(x, (1,), axis=axis, num_axes=0).shape == want
    with pytest.raises(cv2.error):
        cv2_layer(tmp_path, 'layer { name: "l" type: "Reshape" bottom: "x" top: "l" '
                            f"reshape_param {{ shape {{ dim: 1 }} axis: {axis} num_axes: 0 }} }}",
                  {"x": x})


@pytest.mark.parametrize(("shape", "axis", "num_axes", "match"), [
    ((-1, -1), 0, -1, "at most one -1"),
    ((7, -1), 0, -1, "infer"),
    ((5, 5), 0, -1, "element count"),
    ((1,), 5, -1, "axis"),
    ((1,), 1, 4, "exceeds"),
    ((0, 0), 3, -1, "copy"),
])
def test_reshape_errors(shape, axis, num_axes, match):
    with pytest.raises(ShapeError, match=match):
        T.reshape(np.zeros((2, 3, 4, 5), np.float32), shape, axis, num_axes)


# ---- permute ------------------------------------------------------------------------------
@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, data=st.data())
def test_permute_fast_vs_reference(seed, dt, data):
    rng = np.random.default_rng(seed)
    nd = data.draw(st.integers(1, 5))
    x = _f(rng, [int(v) for v in rng.integers(1, 5, nd)], dt)
    full = data.draw(st.permutations(list(range(nd))))
    order = full[:data.draw(st.integers(0, nd))]  # Caffe-SSD: a prefix, the rest in order
    want = np.transpose(x, list(order) + [i for i in range(nd) if i not in order])
    for fn in (T.permute, T.permute_reference):
        got = fn(x, order)
        assert got.dtype == np.dtype(dt) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("order", [(0, 2, 3, 1), (0, 1, 2, 3), (3, 2, 1, 0), (1, 0, 3, 2)])
def test_permute_vs_cv2(tmp_path, rng, order):
    x = _f(rng, (2, 3, 4, 5))
    ords = " ".join(f"order: {o}" for o in order)
    want = cv2_layer(tmp_path, f'layer {{ name: "l" type: "Permute" bottom: "x" top: "l" '
                               f"permute_param {{ {ords} }} }}", {"x": x})
    for fn in (T.permute, T.permute_reference):
        np.testing.assert_array_equal(fn(x, order), want)


def test_cv2_quirk_permute_needs_full_order(tmp_path, rng):
    """cv2 quirk: Permute must list every axis; Caffe-SSD appends the unlisted ones in order."""
    x = _f(rng, (2, 3, 4, 5))
    np.testing.assert_array_equal(T.permute(x, (0, 2)), np.transpose(x, (0, 2, 1, 3)))
    with pytest.raises(cv2.error):
        cv2_layer(tmp_path, 'layer { name: "l" type: "Permute" bottom: "x" top: "l" '
                            "permute_param { order: 0 order: 2 } }", {"x": x})


def test_permute_errors():
    x = np.zeros((2, 3, 4), np.float32)
    for order in [(0, 0), (3,), (-1,)]:
        with pytest.raises(ShapeError, match="permute order"):
            T.permute(x, order)


# ---- crop ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("like", "axis", "offset"), [
    ((2, 6, 2, 3), 2, (1, 2)), ((2, 6, 3, 3), 2, (1,)), ((2, 4, 2, 5), 1, (2, 1, 0)),
    ((1, 6, 4, 5), 0, ()), ((2, 6, 4, 2), 3, (3,)), ((2, 6, 2, 2), -2, (0, 3)),
])
def test_crop_vs_cv2(tmp_path, rng, like, axis, offset):
    x = _f(rng, (2, 6, 4, 5))
    y = _f(rng, like)
    offs = " ".join(f"offset: {o}" for o in offset)
    layer = (f'layer {{ name: "l" type: "Crop" bottom: "x" bottom: "y" top: "l" '
             f"crop_param {{ axis: {axis} {offs} }} }}")
    want = cv2_layer(tmp_path, layer, {"x": x, "y": y})
    for fn in (T.crop, T.crop_reference):
        np.testing.assert_array_equal(fn(x, like, axis=axis, offset=offset), want)


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, data=st.data())
def test_crop_fast_vs_reference(seed, dt, data):
    rng, shape = _rng_shape(seed, data, 7)
    nd = len(shape)
    axis = data.draw(st.integers(0, nd - 1))
    like = [d if i < axis else int(rng.integers(0, d + 1)) for i, d in enumerate(shape)]
    offs = [int(rng.integers(0, shape[i] - like[i] + 1)) for i in range(axis, nd)]
    x = _f(rng, shape, dt)
    a, b = T.crop(x, like, axis, offs), T.crop_reference(x, like, axis, offs)
    want = x[tuple(slice(0, d) for d in shape[:axis])
             + tuple(slice(o, o + like[axis + i]) for i, o in enumerate(offs))]
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(b, want)


def test_crop_errors():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ShapeError, match="does not fit"):
        T.crop(x, (1, 2, 3, 3), axis=2, offset=(2,))
    with pytest.raises(ShapeError, match="offset"):
        T.crop(x, (1, 2, 3, 3), axis=2, offset=(0, 0, 0))
    with pytest.raises(ShapeError, match="rank"):
        T.crop(x, (3, 3), axis=2)


# ---- pad ----------------------------------------------------------------------------------
@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, mode=st.sampled_from(["constant", "reflect",
                                                                         "edge"]),
       data=st.data())
def test_pad_vs_numpy(seed, dt, mode, data):
    rng, shape = _rng_shape(seed, data, 6)
    nd = len(shape)
    pads = [(int(rng.integers(0, 9)), int(rng.integers(0, 9))) for _ in range(nd)]
    x = _f(rng, shape, dt)
    value = float(rng.normal())
    kw = {"constant_values": value} if mode == "constant" else {}
    want = np.pad(x, pads, mode=mode, **kw)
    for fn in (T.pad, T.pad_reference):
        got = fn(x, pads, mode=mode, value=value)
        assert got.dtype == np.dtype(dt)
        np.testing.assert_array_equal(got, want)


def test_pad_reflect_is_torch_reflection_padding():
    # Torch SpatialReflectionPadding(1, 1, 1, 1) on [[1, 2, 3], [4, 5, 6]], hand-worked
    x = np.array([[[[1, 2, 3], [4, 5, 6]]]], np.float64)
    want = [[5, 4, 5, 6, 5], [2, 1, 2, 3, 2], [5, 4, 5, 6, 5], [2, 1, 2, 3, 2]]
    for fn in (T.pad, T.pad_reference):
        np.testing.assert_array_equal(fn(x, ((0, 0), (0, 0), (1, 1), (1, 1)), "reflect")[0, 0],
                                      want)


def test_pad_errors_and_nan():
    x = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ShapeError, match="pair per axis"):
        T.pad(x, ((1, 1), (1, 1)))
    with pytest.raises(ShapeError, match="non-negative"):
        T.pad(x, ((0, 0), (0, 0), (-1, 0), (0, 0)))
    with pytest.raises(ValueError, match="mode"):
        T.pad(x, ((0, 0),) * 4, mode="wrap")
    with pytest.raises(TypeError, match="float32 or float64"):
        T.pad(x.astype(np.int32), ((0, 0),) * 4)
    y = T.pad(np.full((1, 1, 1, 1), np.nan, np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)),
              "edge")
    assert np.isnan(y).all()


# ---- nearest resampling -------------------------------------------------------------------
def _cv2_resize_planes(x, out_hw, interp):
    n, c = x.shape[:2]
    return np.stack([np.stack([cv2.resize(x[i, j], (out_hw[1], out_hw[0]),
                                          interpolation=interp) for j in range(c)])
                     for i in range(n)])


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, h=st.integers(1, 12), w=st.integers(1, 12),
       oh=st.integers(1, 30), ow=st.integers(1, 30))
def test_resize_nearest_vs_cv2_resize(seed, dt, h, w, oh, ow):
    x = _f(np.random.default_rng(seed), (2, 2, h, w), dt)
    want = _cv2_resize_planes(x.astype(np.float32), (oh, ow), cv2.INTER_NEAREST)
    for fn in (T.resize_nearest, T.resize_nearest_reference):
        got = fn(x, (oh, ow))
        assert got.dtype == np.dtype(dt)
        np.testing.assert_array_equal(got.astype(np.float32), want)


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, sh=st.integers(1, 4), sw=st.integers(1, 4))
def test_upsample_nearest(seed, dt, sh, sw):
    x = _f(np.random.default_rng(seed), (2, 3, 4, 5), dt)
    want = np.kron(x, np.ones((1, 1, sh, sw), dt))  # y[i, j] = x[i // sh, j // sw]
    for fn in (T.upsample_nearest, T.upsample_nearest_reference):
        np.testing.assert_array_equal(fn(x, (sh, sw)), want)
    np.testing.assert_array_equal(T.resize_nearest(x, (4 * sh, 5 * sw)), want)


# ---- bilinear resampling ------------------------------------------------------------------
def _scipy_bilinear(x, out_hw, rule):
    """Oracle: scipy.ndimage.map_coordinates (order 1, edge-clamped) at the rule's points."""
    h, w = x.shape[2:]
    oh, ow = out_hw

    def src(n_in, n_out):
        d = np.arange(n_out, dtype=np.float64)
        if rule == "align":
            return d * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
        if rule == "half":
            return np.maximum((d + 0.5) * n_in / n_out - 0.5, 0)
        return d * n_in / n_out

    yy, xx = np.meshgrid(src(h, oh), src(w, ow), indexing="ij")
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = map_coordinates(x[i, j].astype(np.float64), [yy, xx], order=1,
                                        mode="nearest")
    return out


RULES = {"align": {"align_corners": True}, "half": {"half_pixel": True}, "plain": {}}


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, rule=st.sampled_from(sorted(RULES)),
       h=st.integers(1, 9), w=st.integers(1, 9), oh=st.integers(1, 20), ow=st.integers(1, 20))
def test_resize_bilinear_vs_scipy(seed, dt, rule, h, w, oh, ow):
    x = _f(np.random.default_rng(seed), (1, 2, h, w), dt)
    want = _scipy_bilinear(x, (oh, ow), rule)
    r = T.resize_bilinear_reference(x.astype(np.float64), (oh, ow), **RULES[rule])
    assert_close(r, want, "f64_vs_oracle", f"reference {rule}")
    got = T.resize_bilinear(x, (oh, ow), **RULES[rule])
    assert got.dtype == np.dtype(dt)
    assert_close(got, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle", f"fast {rule}")


@HYP
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 20), ow=st.integers(1, 20))
def test_resize_bilinear_half_pixel_vs_cv2_resize(seed, h, w, oh, ow):
    x = _f(np.random.default_rng(seed), (1, 3, h, w))
    want = _cv2_resize_planes(x, (oh, ow), cv2.INTER_LINEAR)
    for fn in (T.resize_bilinear, T.resize_bilinear_reference):
        assert_close(fn(x, (oh, ow), half_pixel=True), want, "vs_cv2", "cv2.resize INTER_LINEAR")


@pytest.mark.parametrize(("param", "in_hw"), [
    ("height: 7 width: 9", (4, 5)), ("zoom_factor: 2", (4, 5)), ("zoom_factor: 3", (3, 6)),
    ("height: 3 width: 2", (6, 7)), ("height: 1 width: 1", (4, 5)), ("height: 8 width: 8", (1, 1)),
])
def test_resize_bilinear_align_corners_vs_cv2_interp(tmp_path, rng, param, in_hw):
    x = _f(rng, (2, 3) + in_hw)
    want = cv2_layer(tmp_path, f'layer {{ name: "l" type: "Interp" bottom: "x" top: "l" '
                               f"interp_param {{ {param} }} }}", {"x": x})
    nums = [int(v) for v in param.split() if v.isdigit()]
    kw = ({"zoom_factor": nums[0]} if "zoom" in param else {"height": nums[0], "width": nums[1]})
    assert T.interp_output_size(in_hw, **kw) == want.shape[2:]
    for fn in (T.resize_bilinear, T.resize_bilinear_reference):
        assert_close(fn(x, want.shape[2:], align_corners=True), want, "vs_cv2", param)


@pytest.mark.parametrize(("kw", "want"), [
    # Caffe/DeepLab Interp, hand-worked: E = in + pad_beg + pad_end
    ({"zoom_factor": 2}, (7, 9)),  # 4 + 3*1, 5 + 4*1
    ({"shrink_factor": 2}, (2, 3)),  # (4-1)//2 + 1, (5-1)//2 + 1
    ({"shrink_factor": 3, "zoom_factor": 4}, (5, 5)),  # shrink: (2, 2); zoom: 2 + 1*3
    ({"zoom_factor": 2, "pad_beg": -1, "pad_end": -1}, (3, 5)),  # E = (2, 3)
    ({"height": 11, "width": 13}, (11, 13)),
    ({"height": 11, "width": 13, "zoom_factor": 2}, (7, 9)),  # a factor wins over height/width
    ({}, (4, 5)),
])
def test_interp_output_size_hand(kw, want):
    assert T.interp_output_size((4, 5), **kw) == want


def test_cv2_quirk_interp_ignores_shrink_and_pads(tmp_path, rng):
    """cv2 quirk: Interp takes only zoom_factor / height / width; pad_beg, pad_end and
    shrink_factor are ignored (shrink alone even yields an empty output and an error)."""
    x = _f(rng, (1, 2, 4, 5))
    got = cv2_layer(tmp_path, 'layer { name: "l" type: "Interp" bottom: "x" top: "l" '
                              "interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 } }",
                    {"x": x})
    assert got.shape[2:] == T.interp_output_size((4, 5), zoom_factor=2)  # pads ignored
    assert got.shape[2:] != T.interp_output_size((4, 5), zoom_factor=2, pad_beg=-1, pad_end=-1)
    with pytest.raises(cv2.error):
        cv2_layer(tmp_path, 'layer { name: "l" type: "Interp" bottom: "x" top: "l" '
                            "interp_param { shrink_factor: 2 } }", {"x": x})


def test_interp_and_resize_errors():
    with pytest.raises(ShapeError):
        T.interp_output_size((4, 5), pad_beg=1)
    with pytest.raises(ShapeError):
        T.interp_output_size((4, 5), zoom_factor=0)
    with pytest.raises(ShapeError):
        T.interp_output_size((4, 5), height=3)
    with pytest.raises(ValueError, match="exclusive"):
        T.resize_bilinear(np.zeros((1, 1, 2, 2), np.float32), (3, 3), align_corners=True,
                          half_pixel=True)
    with pytest.raises(ShapeError, match="4-D"):
        T.resize_nearest(np.zeros((2, 2), np.float32), (3, 3))
    with pytest.raises(ShapeError):
        T.resize_bilinear(np.zeros((1, 1, 2, 2), np.float32), (0, 3))


def test_resize_nan_propagates():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    for fn in (T.resize_bilinear, T.resize_bilinear_reference):
        y = fn(x, (7, 7), align_corners=True)  # NaN reaches outputs that read pixel (0, 0)
        assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1, 1])
        assert np.isfinite(y[0, 0, 3:, 3:]).all()
    assert np.isnan(T.resize_nearest(x, (8, 8))).sum() == 4


# ---- eltwise ------------------------------------------------------------------------------
@pytest.mark.parametrize(("param", "op", "coeffs"), [
    ("operation: SUM coeff: 0.5 coeff: -2 coeff: 3", "sum", (0.5, -2.0, 3.0)),
    ("operation: SUM", "sum", None),
    ("operation: PROD", "prod", None),
    ("operation: MAX", "max", None),
])
def test_eltwise_vs_cv2(tmp_path, rng, param, op, coeffs):
    xs = {f"x{i}": _f(rng, (2, 3, 4, 5)) for i in range(3)}
    layer = ('layer { name: "l" type: "Eltwise" bottom: "x0" bottom: "x1" bottom: "x2" top: "l" '
             f"eltwise_param {{ {param} }} }}")
    want = cv2_layer(tmp_path, layer, xs)
    arrs = list(xs.values())
    assert_close(T.eltwise(arrs, op, coeffs), want, "vs_cv2", op)
    assert_close(T.eltwise_reference(arrs, op, coeffs), want, "vs_cv2", op)


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, op=st.sampled_from(["sum", "prod", "max"]),
       k=st.integers(1, 4), with_coeffs=st.booleans())
def test_eltwise_fast_vs_reference(seed, dt, op, k, with_coeffs):
    rng = np.random.default_rng(seed)
    xs = [_f(rng, (2, 3, 4), dt) for _ in range(k)]
    coeffs = tuple(rng.normal(size=k)) if with_coeffs and op == "sum" else None
    r = T.eltwise_reference([x.astype(np.float64) for x in xs], op, coeffs)
    want = {"sum": lambda: sum((1.0 if coeffs is None else c) * x.astype(np.float64)
                               for c, x in zip(coeffs or [1.0] * k, xs)),
            "prod": lambda: math.prod(x.astype(np.float64) for x in xs),
            "max": lambda: np.max(np.stack(xs).astype(np.float64), axis=0)}[op]()
    assert_close(r, want, "f64_vs_oracle", "reference vs numpy")
    got = T.eltwise(xs, op, coeffs)
    assert got.dtype == np.dtype(dt)
    assert_close(got, r, "f32_vs_f64" if dt == "float32" else "f64_vs_oracle", op)


def test_eltwise_errors_and_nan():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ShapeError, match="differs in shape"):
        T.eltwise([a, np.ones((3, 2), np.float32)])
    with pytest.raises(ShapeError, match="one coeff"):
        T.eltwise([a, a], "sum", (1.0,))
    with pytest.raises(ValueError, match="only defined"):
        T.eltwise([a, a], "max", (1.0, 2.0))
    with pytest.raises(ValueError, match="operation"):
        T.eltwise([a, a], "min")
    b = a.copy()
    b[0, 0] = np.nan
    for op in ("sum", "prod", "max"):
        for fn in (T.eltwise, T.eltwise_reference):
            y = fn([a, b], op)
            assert np.isnan(y[0, 0]) and not np.isnan(y[1, 1])
            y = fn([b, a], op)
            assert np.isnan(y[0, 0])


# ---- shuffle_channel / reorg ----------------------------------------------------------------
@pytest.mark.parametrize("group", [1, 2, 3, 6])
def test_shuffle_channel_vs_cv2(tmp_path, rng, group):
    x = _f(rng, (2, 6, 3, 4))
    want = cv2_layer(tmp_path, f'layer {{ name: "l" type: "ShuffleChannel" bottom: "x" top: "l" '
                               f"shuffle_channel_param {{ group: {group} }} }}", {"x": x})
    for fn in (T.shuffle_channel, T.shuffle_channel_reference):
        np.testing.assert_array_equal(fn(x, group), want)


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, g=st.integers(1, 4), cpg=st.integers(1, 4),
       nd=st.integers(2, 4))
def test_shuffle_channel_fast_vs_reference(seed, dt, g, cpg, nd):
    x = _f(np.random.default_rng(seed), (2, g * cpg) + (3,) * (nd - 2), dt)
    want = x.reshape((2, g, cpg) + x.shape[2:]).swapaxes(1, 2).reshape(x.shape)
    np.testing.assert_array_equal(T.shuffle_channel(x, g), want)
    np.testing.assert_array_equal(T.shuffle_channel_reference(x, g), want)


def test_shuffle_channel_errors():
    with pytest.raises(ShapeError, match="groups"):
        T.shuffle_channel(np.zeros((1, 6, 2), np.float32), 4)
    with pytest.raises(ShapeError, match="groups"):
        T.shuffle_channel_reference(np.zeros((1, 6, 2), np.float32), 0)


def _cv2_darknet_reorg(tmp_path, x, stride):
    n, c, h, w = x.shape
    cfg = tmp_path / "reorg.cfg"
    cfg.write_text(f"[net]\nbatch={n}\nwidth={w}\nheight={h}\nchannels={c}\n\n"
                   f"[reorg]\nstride={stride}\n")
    net = cv2.dnn.readNetFromDarknet(str(cfg))
    net.setInput(x.astype(np.float32))
    return net.forward()


@pytest.mark.parametrize(("shape", "stride"), [((1, 8, 6, 8), 2), ((2, 4, 4, 6), 2),
                                               ((1, 18, 6, 3), 3), ((1, 64, 26, 26), 2),
                                               ((2, 3, 5, 5), 1)])
def test_reorg_vs_cv2_darknet(tmp_path, rng, shape, stride):
    x = _f(rng, shape)
    want = _cv2_darknet_reorg(tmp_path, x, stride)
    for fn in (T.reorg, T.reorg_reference):
        got = fn(x, stride)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_reorg_is_not_space_to_depth(rng):
    x = _f(rng, (1, 8, 4, 4))
    s2d = x.reshape(1, 8, 2, 2, 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(1, 32, 2, 2)
    assert not np.array_equal(T.reorg(x, 2), s2d)


@HYP
@given(seed=st.integers(0, 2**31 - 1), dt=DTYPES, s=st.integers(1, 3), k=st.integers(1, 3),
       h=st.integers(1, 3), w=st.integers(1, 3))
def test_reorg_fast_vs_reference(seed, dt, s, k, h, w):
    x = _f(np.random.default_rng(seed), (2, k * s * s, h * s, w * s), dt)
    np.testing.assert_array_equal(T.reorg(x, s), T.reorg_reference(x, s))


def test_reorg_errors():
    with pytest.raises(ShapeError, match="reorg"):
        T.reorg(np.zeros((1, 4, 5, 4), np.float32), 2)
    with pytest.raises(ShapeError, match="reorg"):
        T.reorg_reference(np.zeros((1, 2, 4, 4), np.float32), 2)


# ---- add + activation (the float32 path's fused eltwise sum / add and the activation after it) ----
def _add_act_oracle(a, b, act, slope):
    v = a.astype(np.float64) + b.astype(np.float64)
    if act == "relu6":
        return np.clip(v, 0, 6)
    if act is None:
        return v
    s = np.asarray(slope, np.float64).reshape(-1)
    s = s.reshape((1, -1) + (1,) * (v.ndim - 2)) if s.size > 1 else s[0]
    return np.where(v > 0, v, v * s)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 7), (3, 6), (1, 5, 2, 3, 2)])
@pytest.mark.parametrize("act", [None, "relu", "leaky", "prelu", "prelu1", "relu6"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add_act_vs_formula(rng, shape, act, dtype):
    """One pass act(a + b) = the float64 formula (float32: to rounding), = the reference kernel;
    non-contiguous inputs and a preallocated output."""
    a = (rng.standard_normal(shape) * 4).astype(dtype)
    b = (rng.standard_normal(shape[:-1] + (2 * shape[-1],)) * 4).astype(dtype)[..., ::2]  # strided
    kind = {"leaky": "relu", "prelu1": "prelu"}.get(act, act)
    slope = {"relu": 0.0, "leaky": 0.15, "prelu": rng.uniform(-0.5, 0.5, shape[1]).astype(dtype),
             "prelu1": np.array([0.3], dtype)}.get(act, 0.0)
    want = _add_act_oracle(a, b, kind, slope)
    got = T.add_act(a, b, kind, slope)
    assert got.dtype == a.dtype and got.shape == a.shape
    assert_close(got, want, "f32_vs_f64" if dtype == "float32" else 1e-12, f"add_act {act}")
    assert_close(T.add_act_reference(a, b, kind, slope), want, 1e-6 if dtype == "float32" else 1e-15, "reference")
    out = np.full(shape, np.nan, dtype)
    assert T.add_act(a, b, kind, slope, out) is out
    np.testing.assert_array_equal(out, got)


def test_add_act_nonfinite_broadcast_and_errors():
    a = np.array([[[np.nan, -np.inf, np.inf, -2.0, 7.0]]], np.float32)
    b = np.zeros((1, 1, 1), np.float32)  # broadcasts
    for act, slope, want in [("relu", 0.0, [np.nan, np.nan, np.inf, -0.0, 7.0]),
                             ("prelu", np.array([0.5], np.float32), [np.nan, -np.inf, np.inf, -1.0, 7.0]),
                             ("relu6", 0.0, [np.nan, 0.0, 6.0, 0.0, 6.0])]:
        np.testing.assert_array_equal(T.add_act(a, b, act, slope)[0, 0], np.array(want, np.float32))
        np.testing.assert_array_equal(T.add_act_reference(a, b, act, slope)[0, 0], np.array(want, np.float32))
    with pytest.raises(ShapeError):
        T.add_act(a, np.zeros((1, 1, 3), np.float32), "relu")
    with pytest.raises(ShapeError):
        T.add_act(np.zeros((1, 3, 2), np.float32), np.zeros((1, 3, 2), np.float32), "prelu", np.ones(2))
    with pytest.raises(ValueError):
        T.add_act(a, a, "elu")
