"""``rltpu eval``: the greedy policy of a checkpoint, on fresh episodes, optionally on video.

Runs in this process on the CPU (no Ray): a checkpoint's params and one env.
"""
from __future__ import annotations

import datetime
import importlib.util
import os
import tempfile
from typing import Any

import jax
import numpy as np

from rltpu import checkpoint, devices, envs, resume as resuming, storage
from rltpu.envs import jax_envs
from rltpu.agent import Agent

VIDEO_DIR = "videos"


def video_available() -> bool:
    """Whether gymnasium's RecordVideo can write MP4 here (it needs moviepy)."""
    return importlib.util.find_spec("moviepy") is not None


def load_run(run_dir: str, builtin_agents) -> tuple[Agent, Any, dict]:
    """The agent, its config and the run's saved config, from ``RUN_DIR/config.json``."""
    saved = resuming.read_run_config(run_dir, flag="")
    agent = builtin_agents(saved["run"]["agent"])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["agent"].items()}
    return agent, agent.Config(**values), saved


def evaluate(agent: Agent, agent_config: Any, env_id: str, run_dir: str, step: int | None = None,
             episodes: int = 10, video: bool = False, seed: int = 12345, run=None) -> dict:
    """Plays ``episodes`` greedy episodes with a checkpoint's params.

    Args:
      step: the checkpoint to use (default: the newest complete one).
      video: record every episode to ``RUN_DIR/videos/<time>-checkpoint-<step>/*.mp4``, a
        new folder for each evaluation (so none overwrites an earlier one's).
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
    folder = recording = None
    if video:
        import gymnasium as gym
        folder = video_folder(run_dir, restored.step)
        # RecordVideo writes local files: a gs:// run's are recorded here, then uploaded.
        recording = tempfile.mkdtemp(prefix="rltpu-videos-") if storage.is_remote(run_dir) \
            else folder
        env = gym.wrappers.RecordVideo(env, recording, episode_trigger=lambda _: True,
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
    videos = []
    for name in sorted(os.listdir(recording)) if recording else []:
        if name.endswith(".mp4"):
            videos.append(storage.join(folder, name))
            if recording != folder:
                with open(os.path.join(recording, name), "rb") as src, \
                        storage.open_file(videos[-1], "wb") as dst:
                    dst.write(src.read())
    if recording is not None and recording != folder:
        storage.remove(recording)
    return {"run_dir": run_dir, "checkpoint": restored.step, "episodes": episodes,
            "mean_return": float(np.mean(returns)), "returns": returns, "lengths": lengths,
            "videos": videos}


def video_folder(run_dir: str, step: int) -> str:
    """A new folder for one evaluation's videos: ``RUN_DIR/videos/<time>-checkpoint-<step>``
    (suffixed ``-2``, ``-3``, ... if that exists already)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = folder = storage.join(run_dir, VIDEO_DIR, f"{stamp}-checkpoint-{step}")
    n = 2
    while storage.exists(folder):
        folder, n = f"{base}-{n}", n + 1
    return folder


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
