"""rltpu plot's arithmetic: throughput over a window of log intervals, mean and spread."""
import numpy as np

from rltpu import plot


def test_windowed_rate_smooths_a_short_last_interval():
    steps = np.array([100.0, 200, 300, 400, 500, 600, 1000])
    times = np.array([1.0, 2, 3, 4, 5, 6, 6.1])  # the last interval: 400 steps in 0.1 s
    rate = plot.windowed_rate(steps, times, window=5)
    assert np.isnan(rate[0])
    np.testing.assert_allclose(rate[1:6], 100.0)
    assert rate[6] == (1000 - 200) / (6.1 - 2)  # not 4000


def test_mean_and_spread_on_the_shared_range():
    xs = [np.array([0.0, 10.0]), np.array([0.0, 5.0, 20.0])]
    ys = [np.array([0.0, 10.0]), np.array([np.nan, 5.0, 20.0])]  # NaN: no episode yet
    grid, mean, low, high = plot.mean_and_spread(xs, ys, points=3)
    np.testing.assert_allclose(grid, [5.0, 7.5, 10.0])  # where both curves have data
    np.testing.assert_allclose(mean, [5.0, 7.5, 10.0])
    np.testing.assert_allclose(low, [5.0, 7.5, 10.0])
    np.testing.assert_allclose(high, [5.0, 7.5, 10.0])
    grid, mean, low, high = plot.mean_and_spread([np.array([0.0, 10.0])] * 2,
                                                 [np.array([0.0, 10.0]), np.array([2.0, 4.0])],
                                                 points=2)
    np.testing.assert_allclose(mean, [1.0, 7.0])
    np.testing.assert_allclose(low, [0.0, 4.0])
    np.testing.assert_allclose(high, [2.0, 10.0])


def test_curves_that_share_no_x_have_no_mean():
    grid, *_ = plot.mean_and_spread([np.array([0.0, 1.0]), np.array([2.0, 3.0])],
                                    [np.array([1.0, 1.0]), np.array([2.0, 2.0])])
    assert len(grid) == 0
