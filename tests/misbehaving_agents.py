"""Agents that misbehave on purpose, loadable as ``--agent tests.misbehaving_agents:Name``."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rltpu.agents.impala import IMPALA


class _Poisoned(IMPALA):
    """IMPALA whose rewards (so its loss and gradients) turn NaN on the updates ``poison``
    picks; its actors are IMPALA's."""

    def poison(self, state, trajectory):
        raise NotImplementedError

    def build(self, spec, config, run=None):
        fns = super().build(spec, config, run)

        def update(state, trajectory):
            reward = jnp.where(self.poison(state, trajectory), jnp.nan, trajectory.reward)
            return fns.update(state, trajectory._replace(reward=reward))

        return dataclasses.replace(fns, update=update)


class NaNFromUpdate5(_Poisoned):
    """Every update from the 6th applied one on is NaN (a skipped update leaves the step at
    5, so they stay NaN): the run must stop after --max-nonfinite-updates of them."""

    name = "nan-from-update-5"

    def poison(self, state, trajectory):
        return state.step >= 5


class SometimesNaN(_Poisoned):
    """About one update in four is NaN: those whose batch was acted with a params version
    of 1 mod 4. (Picking by the actions in the batch, as before, let a policy that turned
    deterministic on the fake env poison every update; versions keep rising, skipped
    updates included, so the NaNs stay sporadic.)"""

    name = "sometimes-nan"

    def poison(self, state, trajectory):
        return jnp.max(trajectory.policy_version) % 4 == 1
