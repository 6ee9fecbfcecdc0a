"""rltpu: distributed reinforcement learning with Ray actors and a data-parallel JAX learner.

The public surface for writing and training an agent::

    import rltpu
    summary = rltpu.train(MyAgent(), MyAgent.Config(), rltpu.RunConfig(env="CartPole-v1"))
"""
from rltpu import networks, recurrent
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.types import (ActorOutput, EnvSpec, RecurrentStart, StepContext, TrainState,
                         Trajectory, Unroll)

__all__ = ["networks", "recurrent", "Agent", "AgentFns", "RunConfig", "train", "validate",
           "ActorOutput", "EnvSpec", "RecurrentStart", "StepContext", "TrainState", "Trajectory",
           "Unroll"]


def __getattr__(name: str):
    # The driver (and with it orbax and the metric sinks) loads on first use: a rollout
    # actor's process imports rltpu.actor only, and starts a second sooner without them.
    if name in ("train", "validate"):
        from rltpu import driver
        return getattr(driver, name)
    raise AttributeError(f"module 'rltpu' has no attribute {name!r}")
