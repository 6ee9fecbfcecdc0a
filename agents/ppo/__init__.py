"""PPO (Schulman et al. 2017): clipped surrogate objective with GAE.

Run it on-policy (``rltpu train --agent ppo --on-policy``: the learner consumes only
trajectories acted with its current params) or asynchronously (the default: it consumes
what the actors send, and the probability ratio is taken against the behaviour policy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agents import distributions
from agents.ppo.acting import make_actor_step, make_greedy_step
from agents.ppo.config import PPOConfig
from agents.ppo.learning import make_optimizer, make_update_fn
from agents.ppo.losses import gae, ppo_loss
from agents.ppo.networks import actor_critic, init_actor_critic
from rltpu.agent import AgentFns
from rltpu.types import EnvSpec, TrainState


class PPO:
    """Discrete (softmax) or continuous (diagonal Gaussian) actions."""

    name = "ppo"
    Config = PPOConfig

    def check_spec(self, spec: EnvSpec) -> None:
        import gymnasium as gym
        if not isinstance(spec.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"agent 'ppo' acts in Discrete or Box action spaces; "
                             f"{spec.env_id} has {spec.action_space}")

    def check_run(self, config: PPOConfig, run) -> None:
        samples = run.unroll_length * run.batch_size
        if samples % config.num_minibatches:
            raise ValueError(f"--num-minibatches {config.num_minibatches} does not divide the "
                             f"{samples} samples of a batch (--unroll-length x --batch-size)")

    def build(self, spec: EnvSpec, config: PPOConfig, run) -> AgentFns:
        self.check_spec(spec)
        self.check_run(config, run)
        networks = actor_critic(spec, config.hidden_sizes, config.network_lib)
        distribution = distributions.for_spec(spec)
        num_updates = run.total_env_steps // (run.unroll_length * run.batch_size)
        optimizer = make_optimizer(config, num_updates)

        def init(key) -> TrainState:
            init_key, key = jax.random.split(key)
            dummy = jnp.zeros((1, *spec.observation_space.shape), spec.observation_space.dtype)
            params = init_actor_critic(networks, init_key, dummy)
            return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

        return AgentFns(init=init, actor_step=make_actor_step(networks, distribution),
                        update=make_update_fn(networks, distribution, optimizer, config),
                        greedy_step=make_greedy_step(networks, distribution))


__all__ = ["PPO", "PPOConfig", "gae", "ppo_loss"]
