"""IMPALA's networks: separate policy and value MLPs (Flax or Haiku)."""
from rltpu.agents.networks import ActorCriticNetworks, actor_critic, make_actor_critic_init

__all__ = ["ActorCriticNetworks", "actor_critic", "make_actor_critic_init"]
