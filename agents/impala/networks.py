"""Actor-critic MLP for vector observations (Flax linen)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    output_size: int
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_sizes:
            x = nn.tanh(nn.Dense(width)(x))
        # A small last layer starts the policy near uniform. (Variance scaling rather than
        # orthogonal init: same effect here, and it compiles in a fraction of the time.)
        last_init = nn.initializers.variance_scaling(self.output_scale ** 2, "fan_in", "normal")
        return nn.Dense(self.output_size, kernel_init=last_init)(x)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs on the flattened observation.

    Observations of shape ``[..., *obs_shape]`` give logits ``[..., num_actions]`` and
    values ``[...]``.
    """

    num_actions: int
    obs_ndim: int
    hidden_sizes: Sequence[int] = (64, 64)

    def setup(self):
        self.policy_net = MLP(self.hidden_sizes, self.num_actions, output_scale=0.01)
        self.value_net = MLP(self.hidden_sizes, 1, output_scale=1.0)

    def _flatten(self, observation):
        lead = observation.shape[:observation.ndim - self.obs_ndim]
        return observation.reshape(*lead, -1).astype(jnp.float32)

    def __call__(self, observation):
        x = self._flatten(observation)
        return self.policy_net(x), self.value_net(x)[..., 0]

    def policy(self, observation):
        return self.policy_net(self._flatten(observation))
