"""PPO's networks: separate policy and value MLPs (Flax or Haiku), as IMPALA's."""
from agents.networks import ActorCriticNetworks, actor_critic, init_actor_critic

__all__ = ["ActorCriticNetworks", "actor_critic", "init_actor_critic"]
