"""Ape-X acting: each actor is epsilon-greedy with its own epsilon from a ladder."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rltpu.networks import Network
from rltpu.types import ActorOutput


def exploration_epsilon(actor_id: int, num_actors: int, base: float, alpha: float) -> float:
    """Horgan et al. 2018: eps_i = base^(1 + alpha i / (N - 1))."""
    if num_actors == 1:
        return base
    return base ** (1 + alpha * actor_id / (num_actors - 1))


def make_actor_step(network: Network, epsilon: float):
    def actor_step(params, observation, key) -> ActorOutput:
        q = network.apply(params["online"], observation)
        explore_key, action_key = jax.random.split(key)
        random_action = jax.random.randint(action_key, q.shape[:-1], 0, q.shape[-1])
        explore = jax.random.uniform(explore_key, q.shape[:-1]) < epsilon
        return ActorOutput(jnp.where(explore, random_action, jnp.argmax(q, axis=-1)), {})
    return actor_step
