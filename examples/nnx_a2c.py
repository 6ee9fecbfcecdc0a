"""The A2C agent of ``examples/a2c.py`` with its network written in Flax NNX.

``rltpu.networks.nnx_factory`` marks a ``rngs -> nnx.Module`` constructor; ``as_network``
turns it into the pure ``init``/``apply`` pair the agent's losses are written against (the
params are the module's state), so nothing else of the agent changes::

    PYTHONPATH=. rltpu train --agent examples.nnx_a2c:NNXA2C --on-policy
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

import rltpu
from examples.a2c import A2C


class ActorCritic(nnx.Module):
    """Separate two-layer tanh MLPs for the policy's logits and the value."""

    def __init__(self, num_inputs: int, num_actions: int, hidden: int, *, rngs: nnx.Rngs):
        def mlp(out: int) -> nnx.Sequential:
            return nnx.Sequential(nnx.Linear(num_inputs, hidden, rngs=rngs), nnx.tanh,
                                  nnx.Linear(hidden, hidden, rngs=rngs), nnx.tanh,
                                  nnx.Linear(hidden, out, rngs=rngs))
        self.policy, self.value = mlp(num_actions), mlp(1)

    def __call__(self, observation):
        x = observation.reshape(*observation.shape[:-1], -1).astype(jnp.float32)
        return self.policy(x), self.value(x)[..., 0]


class NNXA2C(A2C):
    name = "nnx-a2c"

    def network(self, spec: rltpu.EnvSpec, config) -> rltpu.networks.Network:
        num_inputs = int(jnp.prod(jnp.asarray(spec.observation_space.shape)))
        return rltpu.networks.as_network(rltpu.networks.nnx_factory(
            lambda rngs: ActorCritic(num_inputs, spec.action_space.n, config.hidden_size,
                                     rngs=rngs)))


if __name__ == "__main__":
    print(rltpu.train(NNXA2C(), NNXA2C.Config(), rltpu.RunConfig(on_policy=True)))
