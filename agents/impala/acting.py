"""IMPALA's behaviour policy (shared with PPO): sample, and keep the policy's outputs for
V-trace's importance weights."""
from rltpu.agents.policy import make_actor_step, make_greedy_step

__all__ = ["make_actor_step", "make_greedy_step"]
