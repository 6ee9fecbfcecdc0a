"""rltpu: distributed reinforcement learning with Ray actors and a data-parallel JAX learner.

The public surface for writing and training an agent::

    import rltpu
    summary = rltpu.train(MyAgent(), MyAgent.Config(), rltpu.RunConfig(env="CartPole-v1"))
"""
from rltpu import networks
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.types import ActorOutput, EnvSpec, TrainState, Trajectory, Unroll

__all__ = ["networks", "Agent", "AgentFns", "RunConfig", "train", "validate", "ActorOutput", "EnvSpec",
           "TrainState", "Trajectory", "Unroll"]


def __getattr__(name: str):
    # The driver (and with it orbax and the metric sinks) loads on first use: a rollout
    # actor's process imports rltpu.actor only, and starts a second sooner without them.
    if name == "train":
        from rltpu.run import train
        return train
    if name == "validate":
        from rltpu.plan import validate
        return validate
    raise AttributeError(f"module 'rltpu' has no attribute {name!r}")
