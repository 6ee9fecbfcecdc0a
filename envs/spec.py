"""``EnvSpec``: the envs' description of themselves that agents build networks from."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What networks and actors are built from: one environment's spaces."""

    env_id: str
    observation_space: gym.Space
    action_space: gym.Space

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, or the size of a continuous action vector."""
        if self.discrete:
            return int(self.action_space.n)
        return int(np.prod(self.action_space.shape))
