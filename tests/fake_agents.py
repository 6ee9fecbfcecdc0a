"""Agents built for tests of the runtime, loaded with ``--agent tests.fake_agents:Name``."""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from rltpu.agents.impala import IMPALA, IMPALAConfig


@dataclasses.dataclass(frozen=True)
class SlowLearnerConfig(IMPALAConfig):
    update_delay_s: float = 0.5
    """Seconds each learner update takes on top of IMPALA's own (the devices are busy)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.update_delay_s >= 0:
            raise ValueError(f"--update-delay-s must be >= 0, got {self.update_delay_s}")


class SlowLearnerIMPALA(IMPALA):
    """IMPALA whose learner update is deliberately slow and whose actors are IMPALA's own.

    The update waits ``update_delay_s`` inside a host callback, so the update is not
    finished before then: to the runtime it is a heavy update. It sleeps rather than
    computes so that, on a small shared CPU machine, the slow learner does not take the
    actors' cores too (a learner-bound run that stays learner-bound under any load).
    """

    name = "slow-learner-impala"
    Config = SlowLearnerConfig

    def build(self, spec, config: SlowLearnerConfig, run=None):
        fns = super().build(spec, config, run)
        impala_update, delay = fns.update, config.update_delay_s

        def wait_and_return(x):
            time.sleep(delay)
            return x

        def update(state, trajectory):
            state, metrics = impala_update(state, trajectory)
            # The result is a metric, so the callback is part of the update's output.
            waited = jax.pure_callback(wait_and_return, jax.ShapeDtypeStruct((), jnp.float32),
                                       metrics["loss"])
            return state, {**metrics, "slow_loss": waited}

        return dataclasses.replace(fns, update=update)
