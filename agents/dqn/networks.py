"""DQN's Q-network: observations to one value per action, through an MLP or a
convolutional torso (Flax or Haiku)."""
from rltpu.agents.networks import q_network

__all__ = ["q_network"]
