"""DQN's Q-network: an MLP from observations to one value per action (Flax or Haiku)."""
from __future__ import annotations

from typing import Sequence

from agents.networks import mlp
from rltpu.networks import Network
from rltpu.types import EnvSpec


def q_network(spec: EnvSpec, hidden_sizes: Sequence[int], lib: str) -> Network:
    return mlp(hidden_sizes, spec.num_actions, len(spec.observation_space.shape), lib)
