"""Environments: ``make(env_id, num_envs, seed)`` for any gymnasium id or ``module:Class``."""
from envs.make import make, make_one, make_spec

__all__ = ["make", "make_one", "make_spec"]
