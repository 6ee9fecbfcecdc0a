"""Environments: ``make(env_id, num_envs, seed)`` for any gymnasium id or ``module:Class``;
Atari games (``ALE/Pong-v5``) with standard preprocessing (``rltpu.envs.atari``); the
partially observed ``CartPoleNoVel-v1`` (``rltpu.envs.partial``); ``CartPoleDict-v1`` and
``CartPoleTuple-v1``, with Dict and Tuple observations (``rltpu.envs.structured``)."""
if __name__ != "rltpu.envs":  # one copy of each module (the folder is rltpu/envs, see pyproject.toml)
    raise ImportError(f"the built-in environments are rltpu.envs; import that, not {__name__}")
from rltpu.envs import partial, structured
from rltpu.envs.make import (exchange_statistics, load_statistics, make, make_one, make_spec,
                             observation_statistics, reward_discount, shared_statistics)
from rltpu.envs.spec import EnvSpec

partial.register()  # CartPoleNoVel-v1, so --env CartPoleNoVel-v1 works like a gymnasium id
structured.register()  # CartPoleDict-v1, CartPoleTuple-v1

__all__ = ["EnvSpec", "exchange_statistics", "load_statistics", "make", "make_one", "make_spec",
           "observation_statistics", "reward_discount", "shared_statistics"]
