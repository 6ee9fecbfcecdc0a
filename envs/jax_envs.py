"""JAX-native environments (gymnax) for Anakin mode: pure ``reset``/``step`` functions that
run inside a jitted program, vmapped over the env batch.

An env id ``gymnax:NAME`` names an env in gymnax's registry (``gymnax:CartPole-v1``,
``gymnax:Acrobot-v1``, ``gymnax:Breakout-MinAtar``, ...). Any env with gymnax's functional
interface can be trained after ``gymnax.register(NAME, factory)``.
"""
from __future__ import annotations

import difflib
import importlib.util
from typing import Any, Callable, NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from rltpu.envs.spec import EnvSpec

PREFIX = "gymnax:"
MISSING = ("JAX envs need the gymnax package, which is not installed: "
           "pip install 'rltpu[jax-envs]' (or gymnax)")


def is_jax_env(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


class Step(NamedTuple):
    """One env's transition, as the Anakin loop records it."""

    observation: Any  # the first observation of a new episode when this step ended one
    state: Any
    reward: Any  # float32 scalar
    terminated: Any  # bool scalar
    truncated: Any  # bool scalar
    final_observation: Any  # the true successor observation, even when the episode ended


class JaxEnv(NamedTuple):
    """Pure functions of one env (vmap them for a batch).

    Attributes:
      reset: ``key -> (observation, state)``.
      step: ``(key, state, action) -> Step``; an ended episode is reset within the step
        (gymnax's autoreset), with the true last observation in ``final_observation``.
    """

    reset: Callable[[Any], tuple[Any, Any]]
    step: Callable[[Any, Any, Any], Step]


def _gym_space(space, name: str) -> gym.Space:
    """gymnax's Discrete and Box as gymnasium spaces (what agents' ``check_spec`` reads);
    observations become float32, as networks take them."""
    kind = type(space).__name__
    if kind == "Discrete":
        return gym.spaces.Discrete(int(space.n))
    if kind == "Box":
        dtype = np.float32 if name == "observation" else np.dtype(space.dtype)
        low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).astype(dtype)
        high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).astype(dtype)
        return gym.spaces.Box(low, high, tuple(space.shape), dtype)
    raise ValueError(f"gymnax {name} space {kind} is not supported; Discrete and Box are")


def make(env_id: str) -> tuple[JaxEnv, EnvSpec]:
    """The pure functions and spec of ``gymnax:NAME`` (with gymnax's default env params).

    Raises:
      ValueError: not a ``gymnax:`` id, gymnax is missing, or the name is not registered.
    """
    if not is_jax_env(env_id):
        raise ValueError(f"env {env_id!r} is not a JAX env; name one as {PREFIX}NAME, "
                         f"e.g. {PREFIX}CartPole-v1")
    if importlib.util.find_spec("gymnax") is None:
        raise ValueError(MISSING)
    import gymnax

    from rltpu.envs import partial
    partial.register_gymnax()
    name = env_id[len(PREFIX):]
    if name not in gymnax.registered_envs:
        close = difflib.get_close_matches(name, gymnax.registered_envs, n=3)
        hint = (f"; did you mean {' or '.join(PREFIX + c for c in close)}?" if close
                else f"; registered: {', '.join(gymnax.registered_envs)}")
        raise ValueError(f"unknown env {env_id!r}: {name!r} is not a registered gymnax env{hint}")
    env, params = gymnax.make(name)
    observation_space = _gym_space(env.observation_space(params), "observation")
    action_space = _gym_space(env.action_space(params), "action")
    box_action = isinstance(action_space, gym.spaces.Box)
    low, high = (action_space.low, action_space.high) if box_action else (None, None)

    def reset(key):
        observation, state = env.reset(key, params)
        return observation.astype(jnp.float32), state

    def step(key, state, action):
        if box_action:  # as in Ray mode: agents sample unbounded actions, the env gets them clipped
            action = jnp.clip(action, low, high)
        observation, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return Step(observation.astype(jnp.float32), state, jnp.asarray(reward, jnp.float32),
                    jnp.asarray(terminated, bool), jnp.asarray(truncated, bool),
                    info["final_observation"].astype(jnp.float32))

    return JaxEnv(reset, step), EnvSpec(env_id, observation_space, action_space)


def random_actions(spec: EnvSpec) -> Callable[[Any, int], Any]:
    """``(key, n) -> n`` uniformly random actions of ``spec`` (for benchmarks)."""
    space = spec.action_space
    if isinstance(space, gym.spaces.Discrete):
        return lambda key, n: jax.random.randint(key, (n,), 0, int(space.n))
    return lambda key, n: jax.random.uniform(key, (n, *space.shape), minval=space.low,
                                             maxval=space.high)
