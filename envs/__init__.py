"""Environments: ``make(env_id, num_envs, seed)`` for any gymnasium id or ``module:Class``;
Atari games (``ALE/Pong-v5``) with standard preprocessing (``envs.atari``)."""
from envs.make import make, make_one, make_spec, run_options

__all__ = ["make", "make_one", "make_spec", "run_options"]
