"""Partially observed envs, for recurrent agents: ``CartPoleNoVel-v1``.

``CartPoleNoVel-v1`` is gymnasium's CartPole-v1 (500 steps, solved at 475) with the cart's
velocity and the pole's angular velocity removed from the observation: it sees
``[cart position, pole angle]`` only, so a policy has to infer the velocities from the
observations' history (a memory task, as in rl-zoo's CartPoleNoVel). Registered with
gymnasium when ``rltpu.envs`` is imported, with a numpy-vectorised form as CartPole has.

``gymnax:CartPoleNoVel-v1`` is the same task as a JAX env for Anakin mode: gymnax's
CartPole-v1 with the same two observations, registered with gymnax the first time a
``gymnax:`` env is made.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv

ENV_ID = "CartPoleNoVel-v1"
OBSERVED = np.array([0, 2])  # cart position, pole angle (1, 3 are the velocities)


def _observed_space(space: gym.spaces.Box) -> gym.spaces.Box:
    return gym.spaces.Box(space.low[OBSERVED], space.high[OBSERVED], dtype=space.dtype)


def make_env(**kwargs) -> gym.Env:
    """One CartPoleNoVel env (``gym.make`` adds the 500-step time limit)."""
    env = CartPoleEnv(**kwargs)
    return gym.wrappers.TransformObservation(env, lambda o: o[OBSERVED],
                                             _observed_space(env.observation_space))


def make_vector_env(num_envs: int = 1, **kwargs) -> gym.vector.VectorEnv:
    """``num_envs`` CartPoleNoVel envs in CartPole's numpy-vectorised form."""
    env = CartPoleVectorEnv(num_envs=num_envs, **kwargs)
    return gym.wrappers.vector.TransformObservation(
        env, lambda o: o[:, OBSERVED],
        single_observation_space=_observed_space(env.single_observation_space))


def register_gymnax() -> None:
    """Registers ``CartPoleNoVel-v1`` with gymnax (once); gymnax must be installed."""
    import gymnax
    import jax.numpy as jnp  # here, not above: env actors import this module without JAX
    from gymnax.environments import spaces
    from gymnax.environments.classic_control.cartpole import CartPole

    class CartPoleNoVel(CartPole):
        """gymnax's CartPole-v1 seeing ``[cart position, pole angle]`` only."""

        def __init__(self):
            super().__init__()
            self.obs_shape = (len(OBSERVED),)

        def get_obs(self, state, params=None, key=None):
            return jnp.array([state.x, state.theta])

        @property
        def name(self) -> str:
            return ENV_ID

        def observation_space(self, params) -> spaces.Box:
            space = super().observation_space(params)
            return spaces.Box(space.low[OBSERVED], space.high[OBSERVED], self.obs_shape,
                              space.dtype)

    if ENV_ID not in gymnax.registered_envs:
        gymnax.register(ENV_ID, CartPoleNoVel)


def register() -> None:
    """Registers ``CartPoleNoVel-v1`` with gymnasium (once)."""
    if ENV_ID not in gym.envs.registry:
        gym.register(id=ENV_ID, entry_point="rltpu.envs.partial:make_env",
                     vector_entry_point="rltpu.envs.partial:make_vector_env",
                     max_episode_steps=500, reward_threshold=475.0)
