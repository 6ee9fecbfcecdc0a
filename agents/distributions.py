"""Action distributions as pure functions of a policy network's output.

``Categorical`` reads logits ``[..., A]``; ``Gaussian`` reads ``{"mean", "log_std"}``, each
``[..., A]`` (a diagonal Gaussian; actions outside the env's bounds are clipped by the env
wrapper, and the log-probability is that of the unclipped sample the agent drew).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rltpu.types import EnvSpec


class Categorical:
    @staticmethod
    def sample(key, logits):
        return jax.random.categorical(key, logits)

    @staticmethod
    def mode(logits):
        return jnp.argmax(logits, axis=-1)

    @staticmethod
    def log_prob(logits, action):
        log_p = jax.nn.log_softmax(logits)
        return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    @staticmethod
    def entropy(logits):
        log_p = jax.nn.log_softmax(logits)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


class Gaussian:
    @staticmethod
    def sample(key, params):
        noise = jax.random.normal(key, params["mean"].shape)
        return params["mean"] + jnp.exp(params["log_std"]) * noise

    @staticmethod
    def mode(params):
        return params["mean"]

    @staticmethod
    def log_prob(params, action):
        log_std = params["log_std"]
        z = (action - params["mean"]) * jnp.exp(-log_std)
        return jnp.sum(-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)

    @staticmethod
    def entropy(params):
        return jnp.sum(params["log_std"] + 0.5 * math.log(2 * math.pi * math.e), axis=-1)


def for_spec(spec: EnvSpec):
    """The distribution for the env's action space."""
    return Categorical if spec.discrete else Gaussian


def check_discrete_or_box(agent_name: str, spec: EnvSpec) -> None:
    """Raises, naming the space, unless the agent's policy can act in it."""
    import gymnasium as gym
    if not isinstance(spec.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ValueError(f"agent {agent_name!r} acts in Discrete or Box action spaces; "
                         f"{spec.env_id} has {spec.action_space}")
