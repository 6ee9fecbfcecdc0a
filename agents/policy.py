"""The behaviour policy of the actor-critic agents: sample an action, keep the policy's
outputs (logits, or a Gaussian's mean and log-std) for the learner's off-policy terms.
Recurrent networks (``rltpu.agents.cores``) get the recurrent step form of
``rltpu.recurrent``."""
from __future__ import annotations

from rltpu.agents.cores import is_recurrent
from rltpu.types import ActorOutput


def _make_step(networks, distribution, greedy: bool):
    def act(key, policy_out):
        action = distribution.mode(policy_out) if greedy else distribution.sample(key, policy_out)
        return ActorOutput(action, {"policy": policy_out})

    if is_recurrent(networks):
        def recurrent_step(params, observation, key, core_state, context):
            (policy_out, _), core_state = networks.step(params, observation, core_state, context)
            return act(key, policy_out), core_state
        return recurrent_step

    def step(params, observation, key) -> ActorOutput:
        return act(key, networks.policy(params, observation))
    return step


def make_actor_step(networks, distribution):
    return _make_step(networks, distribution, greedy=False)


def make_greedy_step(networks, distribution):
    return _make_step(networks, distribution, greedy=True)
