"""Report numbers of refnet.compare against values computed by hand."""

import math

import numpy as np

from refnet.compare import diff_stats


def test_diff_stats_hand_computed():
    ref = np.array([[1.0, -4.0], [2.0, 0.5]])
    a = np.array([[1.5, -4.0], [2.0, 0.25]])
    max_abs, max_rel, mean_abs, cos, worst = diff_stats(a, ref)
    assert max_abs == 0.5 and worst == (0, 0)
    assert max_rel == 0.5 / 4.0
    assert mean_abs == (0.5 + 0 + 0 + 0.25) / 4
    want_cos = (1.5 * 1 + 16 + 4 + 0.125) / (math.sqrt(1.5**2 + 16 + 4 + 0.0625) * math.sqrt(1 + 16 + 4 + 0.25))
    assert abs(cos - want_cos) < 1e-15


def test_diff_stats_nan_and_shapes():
    ref = np.array([1.0, np.nan, 3.0])
    a = np.array([1.0, np.nan, 2.0])
    max_abs, max_rel, _, _, worst = diff_stats(a, ref)
    assert max_abs == 1.0 and worst == (2,) and max_rel == 1.0 / 3.0
    # NaN where the reference is finite is the worst possible difference
    max_abs, _, _, _, worst = diff_stats(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    assert max_abs == math.inf and worst == (1,)
    # same size, different layout (cv2 flattens some outputs): compared elementwise
    assert diff_stats(np.arange(6.0).reshape(2, 3), np.arange(6.0))[0] == 0.0
    assert math.isnan(diff_stats(np.zeros(3), np.zeros(4))[1])
