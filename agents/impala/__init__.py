"""IMPALA (Espeholt et al. 2018): actor-critic with V-trace off-policy correction."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agents import distributions
from agents.impala.acting import make_actor_step, make_greedy_step
from agents.impala.config import IMPALAConfig
from agents.impala.learning import make_optimizer, make_update_fn
from agents.impala.losses import impala_loss, impala_targets, vtrace
from agents.impala.networks import actor_critic, init_actor_critic
from rltpu.agent import AgentFns
from rltpu.types import EnvSpec, TrainState


class IMPALA:
    """Discrete (softmax) or continuous (diagonal Gaussian) actions."""

    name = "impala"
    Config = IMPALAConfig

    def check_spec(self, spec: EnvSpec) -> None:
        import gymnasium as gym
        if not isinstance(spec.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"agent 'impala' acts in Discrete or Box action spaces; "
                             f"{spec.env_id} has {spec.action_space}")

    def build(self, spec: EnvSpec, config: IMPALAConfig, run=None) -> AgentFns:
        self.check_spec(spec)
        networks = actor_critic(spec, config.hidden_sizes, config.network_lib)
        distribution = distributions.for_spec(spec)
        optimizer = make_optimizer(config)

        def init(key) -> TrainState:
            init_key, key = jax.random.split(key)
            dummy = jnp.zeros((1, *spec.observation_space.shape), spec.observation_space.dtype)
            params = init_actor_critic(networks, init_key, dummy)
            return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

        return AgentFns(init=init, actor_step=make_actor_step(networks, distribution),
                        update=make_update_fn(networks, distribution, optimizer, config),
                        greedy_step=make_greedy_step(networks, distribution))


__all__ = ["IMPALA", "IMPALAConfig", "impala_loss", "impala_targets", "vtrace"]
