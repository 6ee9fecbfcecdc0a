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


def write_rows(path, rows, tail=""):
    import json
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def row(update, steps, t):
    return {"learner_updates": update, "env_steps": steps, "time_s": t, "mean_return": 1.0}


def test_a_resumed_run_has_no_backward_lines(tmp_path, capsys):
    """Killed after update 30, resumed from checkpoint 20: the rows past update 20 were
    redone, so they are dropped, and the second leg's time goes on from the kept rows."""
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [row(10, 1000, 5.0), row(20, 2000, 10.0), row(30, 3000, 15.0),
                      {"resumed_from_update": 20, "env_steps": 2000, "time": 1.7e9},
                      row(25, 2500, 4.0), row(30, 3000, 6.0)])
    rows = plot.read_rows(str(path))
    assert [(r["learner_updates"], r["env_steps"], r["time_s"]) for r in rows] == \
        [(10, 1000, 5.0), (20, 2000, 10.0), (25, 2500, 14.0), (30, 3000, 16.0)]
    assert capsys.readouterr().err == ""


def test_a_cut_off_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [row(10, 1000, 5.0)], tail='{"learner_updates": 20, "env_st')
    assert [r["env_steps"] for r in plot.read_rows(str(path))] == [1000]
    assert capsys.readouterr().err == \
        f"rltpu: warning: {path}: skipping its last line, cut off mid-write\n"
    write_rows(path, [row(10, 1000, 5.0)], tail='{"broken\n' + '{"learner_updates": 1}\n')
    import pytest
    with pytest.raises(ValueError, match=f"{path}:2 is not a JSON row"):
        plot.read_rows(str(path))
    (tmp_path / "run").mkdir()
    write_rows(tmp_path / "run" / "metrics.jsonl", [row(10, 1000, 5.0), row(20, 2000, 9.0)],
               tail='{"learner_updates": 30')
    curves = plot.load_run(str(tmp_path / "run"))
    assert list(curves.env_steps) == [1000, 2000]
