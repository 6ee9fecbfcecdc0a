"""IMPALA's behaviour policy: sample from the softmax, keep the logits for V-trace."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agents.impala.networks import ActorCritic
from rltpu.types import ActorOutput


def make_actor_step(network: ActorCritic):
    def actor_step(params, observation, key) -> ActorOutput:
        logits = network.apply(params, observation, method=ActorCritic.policy)
        return ActorOutput(jax.random.categorical(key, logits), {"logits": logits})
    return actor_step


def make_greedy_step(network: ActorCritic):
    def greedy_step(params, observation, key) -> ActorOutput:
        del key
        logits = network.apply(params, observation, method=ActorCritic.policy)
        return ActorOutput(jnp.argmax(logits, axis=-1), {"logits": logits})
    return greedy_step
