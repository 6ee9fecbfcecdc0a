"""Actor-critic MLPs shared by the built-in agents, in Flax (linen) and in Haiku.

``actor_critic(spec, hidden_sizes, lib)`` returns a policy network (logits, or a Gaussian's
``{"mean", "log_std"}`` with a state-independent ``log_std``) and a value network, as
``rltpu.networks.Network``s, so agents are written once for both libraries.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rltpu.networks import Network, as_network
from rltpu.types import EnvSpec, TrainState

NETWORK_LIBS = ("flax", "haiku")


class ActorCriticNetworks(NamedTuple):
    policy: Network
    value: Network


def _flatten(observation, obs_ndim: int):
    lead = observation.shape[:observation.ndim - obs_ndim]
    return observation.reshape(*lead, -1).astype(jnp.float32)


def _head(out, gaussian: bool, log_std):
    if not gaussian:
        return out
    return {"mean": out, "log_std": jnp.broadcast_to(log_std, out.shape)}


class FlaxMLP(nn.Module):
    hidden_sizes: Sequence[int]
    output_size: int
    obs_ndim: int
    output_scale: float = 1.0
    gaussian: bool = False

    @nn.compact
    def __call__(self, observation):
        x = _flatten(observation, self.obs_ndim)
        for width in self.hidden_sizes:
            x = nn.tanh(nn.Dense(width)(x))
        # A small last layer starts the policy near uniform. (Variance scaling rather than
        # orthogonal init: same effect here, and it compiles in a fraction of the time.)
        last_init = nn.initializers.variance_scaling(self.output_scale ** 2, "fan_in", "normal")
        out = nn.Dense(self.output_size, kernel_init=last_init)(x)
        log_std = self.param("log_std", nn.initializers.zeros, (self.output_size,)) if self.gaussian else None
        return _head(out, self.gaussian, log_std)


def haiku_mlp(hidden_sizes: Sequence[int], output_size: int, obs_ndim: int,
              output_scale: float = 1.0, gaussian: bool = False):
    def forward(observation):
        import haiku as hk
        x = _flatten(observation, obs_ndim)
        for width in hidden_sizes:
            x = jnp.tanh(hk.Linear(width)(x))
        last_init = hk.initializers.VarianceScaling(output_scale ** 2, "fan_in", "truncated_normal")
        out = hk.Linear(output_size, w_init=last_init)(x)
        log_std = hk.get_parameter("log_std", (output_size,), init=jnp.zeros) if gaussian else None
        return _head(out, gaussian, log_std)
    return forward


def mlp(hidden_sizes: Sequence[int], output_size: int, obs_ndim: int, lib: str,
        output_scale: float = 1.0, gaussian: bool = False) -> Network:
    """An MLP on the flattened observation, in ``lib`` ("flax" or "haiku")."""
    if lib == "flax":
        return as_network(FlaxMLP(tuple(hidden_sizes), output_size, obs_ndim, output_scale, gaussian))
    if lib == "haiku":
        return as_network(haiku_mlp(tuple(hidden_sizes), output_size, obs_ndim, output_scale, gaussian))
    raise ValueError(f"unknown network library {lib!r}; valid: {', '.join(NETWORK_LIBS)}")


def actor_critic(spec: EnvSpec, hidden_sizes: Sequence[int], lib: str) -> ActorCriticNetworks:
    """Separate policy and value MLPs for ``spec``'s observations and actions."""
    obs_ndim = len(spec.observation_space.shape)
    policy = mlp(hidden_sizes, spec.num_actions, obs_ndim, lib, output_scale=0.01,
                 gaussian=not spec.discrete)
    value = mlp(hidden_sizes, 1, obs_ndim, lib)
    value = Network(value.init, lambda params, obs, _apply=value.apply: _apply(params, obs)[..., 0])
    return ActorCriticNetworks(policy, value)


def init_actor_critic(networks: ActorCriticNetworks, key, example_observation):
    policy_key, value_key = jax.random.split(key)
    return {"policy": networks.policy.init(policy_key, example_observation),
            "value": networks.value.init(value_key, example_observation)}


def make_actor_critic_init(networks: ActorCriticNetworks, optimizer, spec: EnvSpec):
    """``init(key) -> TrainState`` for the actor-critic agents."""
    def init(key) -> TrainState:
        init_key, key = jax.random.split(key)
        dummy = jnp.zeros((1, *spec.observation_space.shape), spec.observation_space.dtype)
        params = init_actor_critic(networks, init_key, dummy)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))
    return init
