"""rltpu: distributed reinforcement learning with Ray actors and a data-parallel JAX learner.

The public surface for writing and training an agent::

    import rltpu
    summary = rltpu.train(MyAgent(), MyAgent.Config(), rltpu.RunConfig(env="CartPole-v1"))
"""
from rltpu import networks
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.driver import train, validate
from rltpu.types import ActorOutput, EnvSpec, TrainState, Trajectory, Unroll

__all__ = ["networks", "Agent", "AgentFns", "RunConfig", "train", "validate", "ActorOutput", "EnvSpec",
           "TrainState", "Trajectory", "Unroll"]
