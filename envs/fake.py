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


class HangingEnv(CountingEnv):
    """A CountingEnv whose steps never return (a simulator that hung): its actors never
    answer, so a run waits for its first batch until it is stopped."""

    def step(self, action):
        time.sleep(3600)
        return super().step(action)


class MultiBinaryActionEnv(CountingEnv):
    """CountingEnv with a MultiBinary action space (no built-in agent acts in it)."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.MultiBinary(3)

    def step(self, action):
        return super().step(int(np.sum(action) > 1))
class EnvCrashed(RuntimeError):
    """What ``FlakyCartPole`` raises: an env failing the way real simulators sometimes do."""


class FlakyCartPole(gym.Wrapper):
    """CartPole-v1 (500-step limit) that raises ``EnvCrashed`` at random steps.

    Each step raises with probability ``crash_probability``, drawn from an unseeded
    generator: a restarted actor, seeded as before, does not crash at the same step again.
    """

    def __init__(self, crash_probability: float = 1 / 20_000):
        super().__init__(gym.make("CartPole-v1"))
        self.crash_probability = crash_probability
        self._crashes = np.random.default_rng()

    def step(self, action):
        if self._crashes.random() < self.crash_probability:
            raise EnvCrashed("the simulator crashed (fault injected by rltpu.envs.fake.FlakyCartPole)")
        return self.env.step(action)


class NaNRewardEnv(CountingEnv):
    """A CountingEnv (episodes of 10 steps) whose reward is NaN on step 7 of its first
    episode: an actor's first unroll (if 7 steps or longer) is malformed, later ones not."""

    def __init__(self):
        super().__init__(terminate_at=10)

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, (np.nan if (self._t, self._episode) == (7, 0) else reward), terminated, truncated, info


class CrashingEnv(CountingEnv):
    """A CountingEnv that raises ``EnvCrashed`` on the 3rd step of every episode."""

    def step(self, action):
        if self._t == 2:
            raise EnvCrashed("the simulator crashed on step 3 (rltpu.envs.fake.CrashingEnv)")
        return super().step(action)
