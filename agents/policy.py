"""The behaviour policy of the actor-critic agents: sample an action, keep the policy's
outputs (logits, or a Gaussian's mean and log-std) for the learner's off-policy terms."""
from __future__ import annotations

from rltpu.agents.networks import ActorCriticNetworks
from rltpu.types import ActorOutput


def make_actor_step(networks: ActorCriticNetworks, distribution):
    def actor_step(params, observation, key) -> ActorOutput:
        policy_out = networks.policy(params, observation)
        return ActorOutput(distribution.sample(key, policy_out), {"policy": policy_out})
    return actor_step


def make_greedy_step(networks: ActorCriticNetworks, distribution):
    def greedy_step(params, observation, key) -> ActorOutput:
        del key
        policy_out = networks.policy(params, observation)
        return ActorOutput(distribution.mode(policy_out), {"policy": policy_out})
    return greedy_step
