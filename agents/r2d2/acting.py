"""R2D2's acting: epsilon-greedy on the recurrent Q-network, each actor with its own epsilon
from the Ape-X ladder."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rltpu.types import ActorOutput


def make_actor_step(network, epsilon: float):
    def actor_step(params, observation, key, core_state, context):
        q, core_state = network.step(params["online"], observation, core_state, context)
        explore_key, action_key = jax.random.split(key)
        random_action = jax.random.randint(action_key, q.shape[:-1], 0, q.shape[-1])
        explore = jax.random.uniform(explore_key, q.shape[:-1]) < epsilon
        return ActorOutput(jnp.where(explore, random_action, jnp.argmax(q, axis=-1)), {}), core_state
    return actor_step


def make_greedy_step(network):
    def greedy_step(params, observation, key, core_state, context):
        del key
        q, core_state = network.step(params["online"], observation, core_state, context)
        return ActorOutput(jnp.argmax(q, axis=-1), {}), core_state
    return greedy_step
