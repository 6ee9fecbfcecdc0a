"""R2D2 (Kapturowski et al. 2019): a recurrent Q-network learning from prioritised replay of
fixed-length sequences stored with their start state, with burn-in, rescaled n-step double
Q-learning targets and sequence priorities mixed from the max and mean TD error, acted by
actors on the Ape-X exploration ladder. Runs on rltpu's replay actor, as DQN does.

Departures from the paper: sequences do not overlap (each is one actor unroll of
--unroll-length steps; the paper overlaps 80-step sequences by 40), and the stored state
is the one the actor had, as in the paper's "stored state" strategy."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rltpu.agents import cores
from rltpu.agents.dqn.acting import exploration_epsilon
from rltpu.agents.r2d2.acting import make_actor_step, make_greedy_step
from rltpu.agents.r2d2.config import R2D2Config
from rltpu.agents.r2d2.learning import make_optimizer, make_update_fn
from rltpu.agents.r2d2.losses import (inverse_value_rescale, n_step_double_q_targets,
                                      sequence_priority, value_rescale)
from rltpu.agents.r2d2.sequences import to_sequences
from rltpu.agent import AgentFns
from rltpu.replay import ReplaySpec
from rltpu.types import EnvSpec, TrainState


class R2D2:
    name = "r2d2"
    Config = R2D2Config

    def check_spec(self, spec: EnvSpec) -> None:
        if not spec.discrete:
            raise ValueError(f"agent 'r2d2' needs a Discrete action space; {spec.env_id} has "
                             f"{spec.action_space}")

    def check_run(self, config: R2D2Config, run) -> None:
        if config.burn_in >= run.unroll_length:
            raise ValueError(f"--burn-in {config.burn_in} is not shorter than the sequence "
                             f"length --unroll-length {run.unroll_length}")

    def build(self, spec: EnvSpec, config: R2D2Config, run) -> AgentFns:
        self.check_spec(spec)
        self.check_run(config, run)
        network = cores.recurrent_q_network(spec, config.hidden_sizes, config.network_lib,
                                            config.torso, config.core, config.core_size,
                                            config.activation)
        optimizer = make_optimizer(config)

        def init(key) -> TrainState:
            init_key, key = jax.random.split(key)
            online = network.init(init_key)
            return TrainState({"online": online, "target": online}, optimizer.init(online), key,
                              jnp.zeros((), jnp.int32))

        def actor_step_for(actor_id: int, num_actors: int):
            eps = exploration_epsilon(actor_id, num_actors, config.epsilon, config.epsilon_alpha)
            return make_actor_step(network, eps)

        replay = ReplaySpec(
            to_transitions=to_sequences, capacity=config.replay_capacity,
            sample_size=config.sample_size, min_size=config.min_replay_size,
            priority_exponent=config.priority_exponent,
            importance_exponent=config.importance_exponent,
            samples_per_insert=config.samples_per_insert or None)
        return AgentFns(init=init, actor_step=actor_step_for(0, 1),
                        update=make_update_fn(network, optimizer, config),
                        greedy_step=make_greedy_step(network), actor_step_for=actor_step_for,
                        replay=replay, initial_core_state=network.initial_state)


__all__ = ["R2D2", "R2D2Config", "value_rescale", "inverse_value_rescale", "sequence_priority",
           "n_step_double_q_targets", "to_sequences"]
