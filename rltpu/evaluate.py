"""``rltpu eval``: the greedy policy of a checkpoint, on fresh episodes, optionally on video.

Runs in this process on the CPU (no Ray): a checkpoint's params and one env.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

import jax
import numpy as np

from rltpu import checkpoint, devices, envs, resume as resuming
from rltpu.envs import jax_envs
from rltpu.agent import Agent

VIDEO_DIR = "videos"


def video_available() -> bool:
    """Whether gymnasium's RecordVideo can write MP4 here (it needs moviepy)."""
    return importlib.util.find_spec("moviepy") is not None


def load_run(run_dir: str, builtin_agents, agent: str | None = None, env: str | None = None,
             trust: bool = False) -> tuple[Agent, Any, dict]:
    """The agent, its config and the run's saved config, from ``RUN_DIR/config.json``.

    Args:
      agent, env, trust: what the user named on the command line: a ``module:Class`` agent
        or env in config.json is imported only if named again there, or with ``trust``
        (``resume.check_run_code``).

    Raises:
      ValueError: not a run directory, settings of the wrong shape or type, code the user
        did not name, or an agent or env given that is not the run's.
    """
    saved = resuming.read_run_config(run_dir, flag="")
    for what, given in (("agent", agent), ("env", env)):
        if given is not None and given != saved["run"][what]:
            raise ValueError(f"--{what} {given}: {run_dir} was trained with --{what} "
                             f"{saved['run'][what]}")
    resuming.check_run_code(saved, run_dir, agent, env, trust)
    agent = builtin_agents(saved["run"]["agent"])
    resuming.check_saved_settings(saved, agent.Config, run_dir)
    names = {f.name for f in dataclasses.fields(agent.Config)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["agent"].items()
              if k in names}
    return agent, agent.Config(**values), saved


def evaluate(agent: Agent, agent_config: Any, env_id: str, run_dir: str, step: int | None = None,
             episodes: int = 10, video: bool = False, seed: int = 12345, run=None) -> dict:
    """Plays ``episodes`` greedy episodes with a checkpoint's params.

    Args:
      step: the checkpoint to use (default: the newest complete one).
      video: record every episode to ``RUN_DIR/videos/checkpoint-<step>/*.mp4``.
      seed: episode ``i`` starts from ``env.reset(seed=seed + i)``.

    Returns:
      ``{"checkpoint", "episodes", "mean_return", "returns", "lengths", "videos"}``.

    Raises:
      ValueError (``checkpoint.CheckpointError``): no such or no usable checkpoint, or an
        agent without ``greedy_step``.
    """
    from rltpu.config import RunConfig
    run = run if run is not None else RunConfig(env=env_id)
    jax_env = None
    if jax_envs.is_jax_env(env_id):  # an Anakin run: play its own JAX env
        if video:
            raise ValueError(f"--video records gymnasium envs; {env_id} is a JAX env, which "
                             "rltpu cannot render")
        jax_env, spec = jax_envs.make(env_id)
    else:
        spec = envs.make_spec(env_id, full_action_space=run.full_action_space)
    fns = agent.build(spec, agent_config, run)
    if fns.greedy_step is None:
        raise ValueError(f"agent {agent.name!r} has no greedy_step to evaluate with")
    restored = checkpoint.restore(run_dir, fns.init, step)
    params = devices.to_actor_device(restored.state.params)
    key = jax.random.key(seed)  # a greedy policy should not use it; passed all the same
    policy = jax.jit(lambda p, obs: fns.greedy_step(p, obs, key).action)

    if jax_env is not None:
        returns, lengths = _play_jax(jax_env, fns.greedy_step, params, episodes, seed)
        return {"run_dir": run_dir, "checkpoint": restored.step, "episodes": episodes,
                "mean_return": float(np.mean(returns)), "returns": returns, "lengths": lengths,
                "videos": []}
    env = envs.make_one(env_id, render_mode="rgb_array" if video else None,
                        full_action_space=run.full_action_space)
    folder = None
    if video:
        import gymnasium as gym
        folder = os.path.join(run_dir, VIDEO_DIR, f"checkpoint-{restored.step}")
        env = gym.wrappers.RecordVideo(env, folder, episode_trigger=lambda _: True,
                                       name_prefix="eval", disable_logger=True)
    returns, lengths = [], []
    try:
        for i in range(episodes):
            observation, _ = env.reset(seed=seed + i)
            total, length, done = 0.0, 0, False
            while not done:
                action = np.asarray(policy(params, observation[None]))[0]
                observation, reward, terminated, truncated, _ = env.step(action)
                total, length, done = total + float(reward), length + 1, terminated or truncated
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    videos = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                    if f.endswith(".mp4")) if folder else []
    return {"run_dir": run_dir, "checkpoint": restored.step, "episodes": episodes,
            "mean_return": float(np.mean(returns)), "returns": returns, "lengths": lengths,
            "videos": videos}


def _play_jax(env: jax_envs.JaxEnv, greedy_step, params, episodes: int, seed: int):
    """Greedy episodes of a JAX env, one jitted step at a time; episode ``i`` resets with
    ``jax.random.key(seed + i)``."""
    @jax.jit
    def step(key, state, observation):
        action = greedy_step(params, observation[None], key).action[0]
        return env.step(key, state, action)

    returns, lengths = [], []
    for i in range(episodes):
        key = jax.random.key(seed + i)
        observation, state = env.reset(key)
        total, length, done = 0.0, 0, False
        while not done:
            key, step_key = jax.random.split(key)
            out = step(step_key, state, observation)
            observation, state = out.observation, out.state
            total, length = total + float(out.reward), length + 1
            done = bool(out.terminated) or bool(out.truncated)
        returns.append(total)
        lengths.append(length)
    return returns, lengths
