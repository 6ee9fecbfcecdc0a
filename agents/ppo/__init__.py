"""PPO (Schulman et al. 2017): clipped surrogate objective with GAE.

Run it on-policy (``rltpu train --agent ppo --on-policy``: the learner consumes only
trajectories acted with its current params) or asynchronously (the default: it consumes
what the actors send, and the probability ratio is taken against the behaviour policy).
"""
from __future__ import annotations

from rltpu.agents import cores, distributions
from rltpu.agents.ppo.acting import make_actor_step, make_greedy_step
from rltpu.agents.ppo.config import PPOConfig
from rltpu.agents.ppo.learning import make_optimizer, make_update_fn
from rltpu.agents.ppo.losses import gae, ppo_loss
from rltpu.agents.ppo.networks import make_actor_critic_init
from rltpu.agent import AgentFns
from rltpu.types import EnvSpec


class PPO:
    """Discrete (softmax) or continuous (diagonal Gaussian) actions."""

    name = "ppo"
    Config = PPOConfig

    def check_spec(self, spec: EnvSpec) -> None:
        distributions.check_discrete_or_box(self.name, spec)

    def check_run(self, config: PPOConfig, run) -> None:
        if config.core != "none":
            if run.batch_size % config.num_minibatches:
                raise ValueError(f"--num-minibatches {config.num_minibatches} does not divide "
                                 f"--batch-size {run.batch_size}: with --core {config.core} "
                                 "minibatches are whole sequences")
            return
        samples = run.samples_per_batch
        if samples % config.num_minibatches:
            raise ValueError(f"--num-minibatches {config.num_minibatches} does not divide the "
                             f"{samples} samples of a batch (--unroll-length x --batch-size)")

    def build(self, spec: EnvSpec, config: PPOConfig, run) -> AgentFns:
        self.check_spec(spec)
        self.check_run(config, run)
        networks = cores.actor_critic_networks(spec, config)
        distribution = distributions.for_spec(spec)
        num_updates = run.total_env_steps // run.samples_per_batch
        optimizer = make_optimizer(config, num_updates)
        return AgentFns(init=make_actor_critic_init(networks, optimizer, spec),
                        actor_step=make_actor_step(networks, distribution),
                        update=make_update_fn(networks, distribution, optimizer, config),
                        greedy_step=make_greedy_step(networks, distribution),
                        initial_core_state=cores.initial_core_state(networks))


__all__ = ["PPO", "PPOConfig", "gae", "ppo_loss"]
