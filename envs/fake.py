"""Small deterministic envs for tests: episode ends are known in advance."""
from __future__ import annotations

import time

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observation is ``[step, episode]``; reward is the action taken (0 or 1) plus 1.

    Episodes terminate after ``terminate_at`` steps; with ``max_episode_steps`` smaller
    than that, gymnasium's TimeLimit truncates them instead.
    """

    metadata = {"render_modes": []}

    def __init__(self, terminate_at: int = 5):
        self.terminate_at = terminate_at
        self.observation_space = gym.spaces.Box(0.0, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0
        self._episode = -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._episode += 1
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        reward = float(action) + 1.0
        return self._obs(), reward, self._t >= self.terminate_at, False, {}

    def _obs(self):
        return np.array([self._t, self._episode], np.float32)


class ShortCountingEnv(CountingEnv):
    """Terminates after 3 steps."""

    def __init__(self):
        super().__init__(terminate_at=3)


def truncated_counting_env() -> gym.Env:
    """A CountingEnv cut by a time limit of 4 steps (it would terminate at 100)."""
    return gym.wrappers.TimeLimit(CountingEnv(terminate_at=100), max_episode_steps=4)


class SlowCountingEnv(CountingEnv):
    """A CountingEnv whose every step takes 5 ms (an expensive simulator): with it, the
    actors are the bottleneck of a run."""

    step_s = 0.005

    def __init__(self):
        super().__init__(terminate_at=20)

    def step(self, action):
        time.sleep(self.step_s)
        return super().step(action)


class MultiBinaryActionEnv(CountingEnv):
    """CountingEnv with a MultiBinary action space (no built-in agent acts in it)."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.MultiBinary(3)

    def step(self, action):
        return super().step(int(np.sum(action) > 1))
