"""Training on an environment of your own: any ``gymnasium.Env`` class, named as
``module:Class`` (no registration needed)::

    PYTHONPATH=. rltpu train --env examples.custom_env:Corridor --target-return 0.9

The actors import the module themselves, so it must be importable where they run
(``PYTHONPATH`` here; on a cluster, installed or shipped with Ray's runtime env). A run
directory records the env as ``examples.custom_env:Corridor``; ``rltpu eval`` and ``--resume``
import it only when you name it again (``--env examples.custom_env:Corridor``), since a run
directory never decides what code runs.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along a corridor of ``length`` cells to its end (reward 1, minus 0.01 a
    step); ``max_steps`` steps at most. The observation is the position, one-hot."""

    def __init__(self, length: int = 8, max_steps: int = 50):
        self.length, self.max_steps = length, max_steps
        self.observation_space = gym.spaces.Box(0.0, 1.0, (length,), np.float32)
        self.action_space = gym.spaces.Discrete(2)  # 0: left, 1: right
        self._position = self._steps = 0

    def _observation(self) -> np.ndarray:
        one_hot = np.zeros(self.length, np.float32)
        one_hot[self._position] = 1.0
        return one_hot

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._position, self._steps = 0, 0
        return self._observation(), {}

    def step(self, action):
        self._position = int(np.clip(self._position + (1 if action == 1 else -1), 0,
                                     self.length - 1))
        self._steps += 1
        terminated = self._position == self.length - 1
        reward = (1.0 if terminated else 0.0) - 0.01
        return self._observation(), reward, terminated, self._steps >= self.max_steps, {}


if __name__ == "__main__":
    import rltpu
    from rltpu import agents
    agent = agents.get("impala")
    print(rltpu.train(agent, agent.Config(), rltpu.RunConfig(
        env="examples.custom_env:Corridor", target_return=0.9, total_env_steps=200_000)))
