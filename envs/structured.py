"""Envs with structured observations, to test and show Dict and Tuple observation spaces:
``CartPoleDict-v1`` and ``CartPoleTuple-v1``.

Both are gymnasium's CartPole-v1 (500 steps, solved at 475) with its four numbers split
in two: ``{"position": [cart position, pole angle], "velocity": [cart velocity, pole
angular velocity]}`` (``CartPoleDict-v1``), or the tuple ``(position, velocity)``
(``CartPoleTuple-v1``). Nothing is hidden, so an agent should learn them as fast as
CartPole itself. Registered with gymnasium when ``rltpu.envs`` is imported, with
CartPole's numpy-vectorised form.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv
from gymnasium.vector.utils import batch_space

DICT_ID, TUPLE_ID = "CartPoleDict-v1", "CartPoleTuple-v1"
POSITION, VELOCITY = np.array([0, 2]), np.array([1, 3])  # indices into CartPole's observation


def _box(space: gym.spaces.Box, index: np.ndarray) -> gym.spaces.Box:
    return gym.spaces.Box(space.low[index], space.high[index], dtype=space.dtype)


def _space(box: gym.spaces.Box, kind: str) -> gym.Space:
    position, velocity = _box(box, POSITION), _box(box, VELOCITY)
    if kind == "dict":
        return gym.spaces.Dict({"position": position, "velocity": velocity})
    return gym.spaces.Tuple((position, velocity))


def _split(observation: np.ndarray, kind: str):
    """CartPole's ``[..., 4]`` observation(s) as this env's dict or tuple."""
    position, velocity = observation[..., POSITION], observation[..., VELOCITY]
    if kind == "dict":
        return {"position": position, "velocity": velocity}
    return position, velocity


def _make_env(kind: str, **kwargs) -> gym.Env:
    env = CartPoleEnv(**kwargs)
    return gym.wrappers.TransformObservation(env, lambda o: _split(o, kind),
                                             _space(env.observation_space, kind))


def _make_vector_env(kind: str, num_envs: int = 1, **kwargs) -> gym.vector.VectorEnv:
    env = CartPoleVectorEnv(num_envs=num_envs, **kwargs)
    single = _space(env.single_observation_space, kind)
    return gym.wrappers.vector.TransformObservation(
        env, lambda o: _split(o, kind), observation_space=batch_space(single, num_envs),
        single_observation_space=single)


def make_dict_env(**kwargs) -> gym.Env:
    """One ``CartPoleDict-v1`` env (``gym.make`` adds the 500-step time limit)."""
    return _make_env("dict", **kwargs)


def make_dict_vector_env(num_envs: int = 1, **kwargs) -> gym.vector.VectorEnv:
    return _make_vector_env("dict", num_envs, **kwargs)


def make_tuple_env(**kwargs) -> gym.Env:
    """One ``CartPoleTuple-v1`` env."""
    return _make_env("tuple", **kwargs)


def make_tuple_vector_env(num_envs: int = 1, **kwargs) -> gym.vector.VectorEnv:
    return _make_vector_env("tuple", num_envs, **kwargs)


def register() -> None:
    """Registers ``CartPoleDict-v1`` and ``CartPoleTuple-v1`` with gymnasium (once)."""
    for env_id, kind in ((DICT_ID, "dict"), (TUPLE_ID, "tuple")):
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=f"rltpu.envs.structured:make_{kind}_env",
                         vector_entry_point=f"rltpu.envs.structured:make_{kind}_vector_env",
                         max_episode_steps=500, reward_threshold=475.0)
