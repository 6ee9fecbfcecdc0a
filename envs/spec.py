"""``EnvSpec``: the envs' description of themselves that agents build networks from."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from rltpu import spaces


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What networks and actors are built from: one environment's spaces."""

    env_id: str
    observation_space: gym.Space
    action_space: gym.Space

    @property
    def observation_spec(self):
        """One observation's shapes and dtypes (``jax.ShapeDtypeStruct``), as a pytree:
        one leaf for a Box, a dict or tuple of leaves for a Dict or Tuple space (see
        ``rltpu.spaces``)."""
        return spaces.observation_spec(self.observation_space)

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, or the size of a continuous action vector."""
        if self.discrete:
            return int(self.action_space.n)
        return int(np.prod(self.action_space.shape))
