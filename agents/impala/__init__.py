"""IMPALA (Espeholt et al. 2018): actor-critic with V-trace off-policy correction."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agents.impala.acting import make_actor_step, make_greedy_step
from agents.impala.config import IMPALAConfig
from agents.impala.learning import make_optimizer, make_update_fn
from agents.impala.losses import impala_loss, vtrace
from agents.impala.networks import ActorCritic
from rltpu.agent import AgentFns
from rltpu.types import EnvSpec, TrainState


class IMPALA:
    name = "impala"
    Config = IMPALAConfig

    def check_spec(self, spec: EnvSpec) -> None:
        if not spec.discrete:
            raise ValueError(f"agent 'impala' needs a Discrete action space; {spec.env_id} has "
                             f"{spec.action_space}")

    def build(self, spec: EnvSpec, config: IMPALAConfig) -> AgentFns:
        self.check_spec(spec)
        network = ActorCritic(spec.num_actions, len(spec.observation_space.shape),
                              tuple(config.hidden_sizes))
        optimizer = make_optimizer(config)

        def init(key) -> TrainState:
            init_key, key = jax.random.split(key)
            dummy = jnp.zeros((1, *spec.observation_space.shape), spec.observation_space.dtype)
            params = network.init(init_key, dummy)
            return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

        return AgentFns(init=init, actor_step=make_actor_step(network),
                        update=make_update_fn(network, optimizer, config),
                        greedy_step=make_greedy_step(network))


__all__ = ["IMPALA", "IMPALAConfig", "ActorCritic", "impala_loss", "vtrace"]
