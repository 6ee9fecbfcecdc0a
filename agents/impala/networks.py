"""IMPALA's networks: separate policy and value MLPs (Flax or Haiku)."""
from agents.networks import ActorCriticNetworks, actor_critic, init_actor_critic

__all__ = ["ActorCriticNetworks", "actor_critic", "init_actor_critic"]
