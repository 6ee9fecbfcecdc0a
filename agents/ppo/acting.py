"""PPO's behaviour policy: sample, and keep the policy's outputs for the probability ratio."""
from rltpu.agents.policy import make_actor_step, make_greedy_step

__all__ = ["make_actor_step", "make_greedy_step"]
