"""IMPALA (Espeholt et al. 2018): actor-critic with V-trace off-policy correction."""
from __future__ import annotations

from rltpu.agents import cores, distributions
from rltpu.agents.impala.acting import make_actor_step, make_greedy_step
from rltpu.agents.impala.config import IMPALAConfig
from rltpu.agents.impala.learning import make_optimizer, make_update_fn
from rltpu.agents.impala.losses import impala_loss, impala_targets, vtrace
from rltpu.agents.impala.networks import make_actor_critic_init
from rltpu.agent import AgentFns
from rltpu.types import EnvSpec


class IMPALA:
    """Discrete (softmax) or continuous (diagonal Gaussian) actions."""

    name = "impala"
    Config = IMPALAConfig

    def check_spec(self, spec: EnvSpec) -> None:
        distributions.check_discrete_or_box(self.name, spec)

    def build(self, spec: EnvSpec, config: IMPALAConfig, run=None) -> AgentFns:
        self.check_spec(spec)
        networks = cores.actor_critic_networks(spec, config)
        distribution = distributions.for_spec(spec)
        num_updates = (run.total_env_steps // run.samples_per_batch
                       if run is not None else 1)
        optimizer = make_optimizer(config, num_updates * config.num_epochs)
        return AgentFns(init=make_actor_critic_init(networks, optimizer, spec),
                        actor_step=make_actor_step(networks, distribution),
                        update=make_update_fn(networks, distribution, optimizer, config),
                        greedy_step=make_greedy_step(networks, distribution),
                        initial_core_state=cores.initial_core_state(networks))


__all__ = ["IMPALA", "IMPALAConfig", "impala_loss", "impala_targets", "vtrace"]
