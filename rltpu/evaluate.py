"""``rltpu eval``: the greedy policy of a checkpoint (``rltpu.load``), on fresh episodes,
optionally on video.

Runs in this process on the CPU (no Ray): a checkpoint's params and one env.
"""
from __future__ import annotations

import datetime
import importlib.util
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rltpu import checkpoint, envs, recurrent, storage
from rltpu.envs import jax_envs
from rltpu.envs.make import normalize_one
from rltpu.agent import Agent
from rltpu.policy import Policy, policy_step

VIDEO_DIR = "videos"


def video_available() -> bool:
    """Whether gymnasium's RecordVideo can write MP4 here (it needs moviepy)."""
    return importlib.util.find_spec("moviepy") is not None


def evaluate(agent: Agent, agent_config: Any, env_id: str, run_dir: str, step: int | None = None,
             episodes: int = 10, video: bool = False, seed: int = 12345, run=None) -> dict:
    """``play`` with the policy of a checkpoint of ``run_dir`` of this agent and config.

    Args:
      step: the checkpoint to use (default: the newest complete one).
      run: the run's settings (default: ``RunConfig(env=env_id)``).
    """
    from rltpu.config import RunConfig
    run = run if run is not None else RunConfig(env=env_id)
    if jax_envs.is_jax_env(env_id):
        _, spec = jax_envs.make(env_id)
    else:
        spec = envs.make_spec(env_id, **run.env_options())
    fns = agent.build(spec, agent_config, run)
    restored = checkpoint.restore(run_dir, fns.init, step)
    policy = Policy(agent, agent_config, run, spec, restored.state.params, restored.step, run_dir)
    return play(policy, episodes, video, seed)


def play(policy: Policy, episodes: int = 10, video: bool = False, seed: int = 12345) -> dict:
    """Plays ``episodes`` greedy episodes with ``policy`` (``rltpu.load``) in its run's env.

    Args:
      video: record every episode to ``RUN_DIR/videos/<time>-checkpoint-<step>/*.mp4``, a
        new folder for each evaluation (so none overwrites an earlier one's).
      seed: episode ``i`` starts from ``env.reset(seed=seed + i)``.

    Returns:
      ``{"run_dir", "checkpoint", "episodes", "mean_return", "returns", "lengths", "videos"}``.

    Raises:
      ValueError: an agent without ``greedy_step``, or a video of a JAX env.
    """
    env_id, run = policy.spec.env_id, policy.run
    if policy.fns.greedy_step is None:
        raise ValueError(f"agent {policy.agent.name!r} has no greedy_step to evaluate with")
    report = {"run_dir": policy.run_dir, "checkpoint": policy.checkpoint, "episodes": episodes}
    fns, spec = policy.fns, policy.spec
    if jax_envs.is_jax_env(env_id):  # an Anakin run: play its own JAX env
        if video:
            raise ValueError(f"--video records gymnasium envs; {env_id} is a JAX env, which "
                             "rltpu cannot render")
        jax_env, _ = jax_envs.make(env_id)
        returns, lengths = _play_jax(jax_env, spec, fns, policy.params, episodes, seed)
        return {**report, "mean_return": float(np.mean(returns)), "returns": returns,
                "lengths": lengths, "videos": []}
    env = envs.make_one(env_id, render_mode="rgb_array" if video else None,
                        full_action_space=run.full_action_space, env_kwargs=run.env_kwargs_dict())
    folder = recording = None
    if video:
        import gymnasium as gym
        folder = video_folder(policy.run_dir, policy.checkpoint)
        # RecordVideo writes local files: a gs:// run's are recorded here, then uploaded.
        recording = (tempfile.mkdtemp(prefix="rltpu-videos-") if storage.is_remote(folder)
                     else folder)
        env = gym.wrappers.RecordVideo(env, recording, episode_trigger=lambda _: True,
                                       name_prefix="eval", disable_logger=True)
    try:
        if policy.recurrent:  # the policy object carries the core state (Policy.act)
            returns, lengths = _play_policy(policy, env, episodes, seed)
        else:
            if policy.observation_statistics is not None:  # (Policy.act normalises alike)
                env = normalize_one(env)
                env.statistics.load(policy.observation_statistics)
            returns, lengths = EpisodePlayer(fns, spec).play(env, policy.params, episodes, seed)
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
    return {**report, "mean_return": float(np.mean(returns)), "returns": returns,
            "lengths": lengths, "videos": videos}


def _play_policy(policy: Policy, env, episodes: int, seed: int) -> tuple[list[float], list[int]]:
    """Greedy episodes with ``policy.act`` (which keeps a recurrent core state): episode
    ``i`` starts from ``env.reset(seed=seed + i)`` and ``policy.reset()``."""
    returns, lengths = [], []
    for i in range(episodes):
        observation, _ = env.reset(seed=seed + i)
        policy.reset()
        reward, total, length, done = None, 0.0, 0, False
        while not done:
            action = policy.act(observation, reward=reward)
            observation, reward, terminated, truncated, _ = env.step(action)
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    return returns, lengths


def video_folder(run_dir: str, step: int) -> str:
    """A new folder for one evaluation's videos: ``RUN_DIR/videos/<time>-checkpoint-<step>``
    (suffixed ``-2``, ``-3``, ... if that exists already)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = folder = storage.join(run_dir, VIDEO_DIR, f"{stamp}-checkpoint-{step}")
    n = 2
    while storage.exists(folder):
        folder, n = f"{base}-{n}", n + 1
    return folder


class EpisodePlayer:
    """Plays whole episodes of a gymnasium env, one at a time, with given params; the policy
    step is compiled once and kept (``play`` and Ray mode's evaluation actor use it).

    Args:
      fns: the agent's functions.
      spec: the env's spec.
      greedy: act with ``fns.greedy_step``; otherwise sample with ``fns.actor_step``.
    """

    def __init__(self, fns, spec, greedy: bool = True):
        self.fns, self.spec, self.greedy = fns, spec, greedy
        self._act = jax.jit(policy_step(fns, greedy))

    def play(self, env, params, episodes: int, seed: int) -> tuple[list[float], list[int]]:
        """``(returns, lengths)`` of ``episodes`` episodes; episode ``i`` starts from
        ``env.reset(seed=seed + i)`` with a fresh core state. A sampled policy's key is
        ``jax.random.key(seed)``, split every step; a greedy one gets that key unsplit."""
        fns, spec = self.fns, self.spec
        key = jax.random.key(seed)
        returns, lengths = [], []
        for i in range(episodes):
            observation, _ = env.reset(seed=seed + i)
            core, context = _initial(fns, spec)
            total, length, done = 0.0, 0, False
            while not done:
                step_key = key
                if not self.greedy:
                    key, step_key = jax.random.split(key)
                batch = jax.tree.map(lambda x: np.asarray(x)[None], observation)  # Dict/Tuple too
                action, core = self._act(params, batch, step_key, core, context)
                action = np.asarray(action)
                observation, reward, terminated, truncated, _ = env.step(action[0])
                if context is not None:  # a recurrent agent's next step context
                    context = recurrent.next_context(context, action, np.float32([reward]),
                                                     np.zeros(1, bool))
                total, length, done = total + float(reward), length + 1, terminated or truncated
            returns.append(total)
            lengths.append(length)
        return returns, lengths



def _initial(fns, spec, num_envs: int = 1):
    """The core state and context of ``num_envs`` envs at an episode's start (``()`` and
    None for a feed-forward agent). Each evaluation episode starts from a fresh core."""
    if not recurrent.is_recurrent(fns):
        return (), None
    return fns.initial_core_state(num_envs), recurrent.initial_context(spec, num_envs)


MAX_EVAL_STEPS = 100_000
"""A JAX env's evaluation stops after this many steps even if some episode has not ended
(an env without a time limit must not hang it); such episodes count as they stand."""


def make_jax_evaluation(fns, env, spec, episodes: int, greedy: bool = True,
                        max_steps: int = MAX_EVAL_STEPS):
    """``(params, seed) -> (returns [episodes], lengths [episodes], ended [episodes])``: plays
    ``episodes`` episodes of a JAX env at once (vmapped, ``lax.while_loop`` until every one
    has ended or ``max_steps``). Episode ``i`` resets with ``jax.random.key(seed + i)`` and
    splits its key every step. ``play`` uses it for a JAX env, and Anakin mode's evaluation
    during training (``rltpu.evaluation``): one program, so the same params, seeds and number
    of episodes give the same returns in both (a batch of another size may round a
    near-tie of the policy differently)."""
    act = policy_step(fns, greedy)
    reset, step = jax.vmap(env.reset), jax.vmap(env.step)
    split = jax.vmap(jax.random.split)

    def evaluate(params, seed):
        keys = jax.vmap(lambda i: jax.random.key(seed + i))(jnp.arange(episodes))
        observation, state = reset(keys)
        core, context = _initial(fns, spec, episodes)
        if context is not None:
            context = jax.tree.map(jnp.asarray, context)
        zeros = jnp.zeros(episodes, jnp.float32)
        # A sampled policy's own key (the env keys are the episodes', as in ``play``).
        carry = (jnp.zeros((), jnp.int32), keys, jax.random.fold_in(jax.random.key(seed), 1),
                 state, observation, core, context, jnp.zeros(episodes, bool), zeros,
                 jnp.zeros(episodes, jnp.int32))

        def running(carry):
            t, *_, ended, _, _ = carry
            return (t < max_steps) & ~jnp.all(ended)

        def body(carry):
            t, keys, policy_key, state, observation, core, context, ended, total, length = carry
            keys_and_step = split(keys)
            keys, step_keys = keys_and_step[:, 0], keys_and_step[:, 1]
            policy_key, act_key = jax.random.split(policy_key)
            action, core = act(params, observation, act_key, core, context)
            out = step(step_keys, state, action)
            reward = out.reward.astype(jnp.float32)
            if context is not None:
                context = recurrent.next_context(context, action, reward, jnp.zeros(episodes, bool))
            total = total + jnp.where(ended, 0.0, reward)
            length = length + (~ended).astype(jnp.int32)
            ended = ended | out.terminated | out.truncated
            return (t + 1, keys, policy_key, out.state, out.observation, core, context, ended,
                    total, length)

        *_, ended, total, length = jax.lax.while_loop(running, body, carry)
        return total, length, ended

    return evaluate


def _play_jax(env: jax_envs.JaxEnv, spec, fns, params, episodes: int, seed: int):
    """Greedy episodes of a JAX env (``make_jax_evaluation``, the evaluation Anakin runs
    during training: the same seeds and number of episodes give the same returns);
    episode ``i`` resets with ``jax.random.key(seed + i)``."""
    returns, lengths, _ = jax.jit(make_jax_evaluation(fns, env, spec, episodes))(params, seed)
    return [float(r) for r in np.asarray(returns)], [int(n) for n in np.asarray(lengths)]
