"""The window of recent training returns that decides when a run has reached its target
(full, and its mean at least --target-return: the 475 every CartPole learning test asks for)."""
import numpy as np

from rltpu.metrics import EPISODE_WINDOW, EpisodeWindow


def test_the_mean_of_the_last_twenty_episodes_once_there_are_twenty():
    assert EPISODE_WINDOW == 20
    window = EpisodeWindow()
    assert window.mean is None and not window.full and window.count == 0
    window.add(np.full(19, 500.0, np.float32))
    assert window.mean == 500.0 and not window.full  # 19 episodes: not yet a verdict
    window.add(np.array([], np.float32))  # an unroll that finished no episode
    assert window.count == 19 and not window.full
    window.add(np.array([500.0], np.float32))
    assert window.full and window.mean == 500.0 and window.count == 20
    window.add(np.array([0.0], np.float32))  # the oldest 500 leaves: 19 x 500 + 0
    assert window.mean == 475.0 and window.count == 21 and len(window.returns) == 20
    window.add(np.arange(25, dtype=np.float32))  # more than the window in one go: the last 20
    assert list(window.returns) == list(np.arange(5.0, 25.0))
    assert window.mean == 14.5 and window.count == 46


def test_resumed_where_the_checkpoint_left_it():
    window = EpisodeWindow(size=3)
    window.add(np.array([1.0, 2.0, 3.0, 4.0]))
    counters = {"episodes": window.count, "recent_returns": list(window.returns)}
    resumed = EpisodeWindow.resumed(counters, size=3)
    assert resumed.count == 4 and list(resumed.returns) == [2.0, 3.0, 4.0] and resumed.full
    resumed.add(np.array([10.0]))
    assert list(resumed.returns) == [3.0, 4.0, 10.0] and resumed.mean == 17.0 / 3
    fresh = EpisodeWindow.resumed({}, size=3)
    assert fresh.count == 0 and fresh.mean is None
