"""DQN, distributed the Ape-X way (Horgan et al. 2018): actors on an exploration ladder,
n-step returns, double Q-learning with a target network, prioritised replay in its own
Ray actor with priorities written back by the learner."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rltpu.agents.dqn.acting import exploration_epsilon, make_actor_step
from rltpu.agents.dqn.config import DQNConfig
from rltpu.agents.dqn.learning import make_optimizer, make_update_fn
from rltpu.agents.dqn.losses import double_q_target, dqn_loss, huber
from rltpu.agents.dqn.networks import q_network
from rltpu.agents.dqn.transitions import n_step_transitions
from rltpu import spaces
from rltpu.agent import AgentFns
from rltpu.replay import ReplaySpec
from rltpu.types import ActorOutput, EnvSpec, TrainState


class DQN:
    name = "dqn"
    Config = DQNConfig

    def check_spec(self, spec: EnvSpec) -> None:
        if not spec.discrete:
            raise ValueError(f"agent 'dqn' needs a Discrete action space; {spec.env_id} has "
                             f"{spec.action_space}")

    def build(self, spec: EnvSpec, config: DQNConfig, run) -> AgentFns:
        self.check_spec(spec)
        network = q_network(spec, config.hidden_sizes, config.network_lib, config.torso,
                            config.activation, config.dueling, config.weight_init)
        optimizer = make_optimizer(config)

        def init(key) -> TrainState:
            init_key, key = jax.random.split(key)
            online = network.init(init_key, spaces.zeros(spec.observation_space, (1,)))
            return TrainState({"online": online, "target": online}, optimizer.init(online), key,
                              jnp.zeros((), jnp.int32))

        def actor_step_for(actor_id: int, num_actors: int):
            eps = exploration_epsilon(actor_id, num_actors, config.epsilon, config.epsilon_alpha)
            return make_actor_step(network, eps)

        def greedy_step(params, observation, key) -> ActorOutput:
            return ActorOutput(jnp.argmax(network.apply(params["online"], observation), -1), {})

        replay = ReplaySpec(
            to_transitions=functools.partial(n_step_transitions, n=config.n_step,
                                             discount=config.discount,
                                             clip_rewards=config.clip_rewards),
            capacity=config.replay_capacity, sample_size=config.sample_size,
            min_size=config.min_replay_size, priority_exponent=config.priority_exponent,
            importance_exponent=config.importance_exponent,
            samples_per_insert=config.samples_per_insert or None)
        return AgentFns(init=init, actor_step=actor_step_for(0, 1),
                        update=make_update_fn(network, optimizer, config),
                        greedy_step=greedy_step, actor_step_for=actor_step_for, replay=replay)


__all__ = ["DQN", "DQNConfig", "double_q_target", "dqn_loss", "huber", "n_step_transitions",
           "exploration_epsilon"]
