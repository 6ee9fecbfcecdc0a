"""Atari games from ale-py with the preprocessing of Machado et al. 2018.

"Revisiting the Arcade Learning Environment: Evaluation Protocols and Open Problems for
General Agents" (JAIR 2018) recommends: sticky actions with probability 0.25 (instead of
no-op starts), the minimal action set (the full 18 optional), no loss-of-life signal
(an episode is a whole game), and reporting returns in the game's own units. On top of
that, the usual DQN-style observation processing: each action repeated for 4 frames, the
last two frames max-pooled, grey, 84x84, and the last 4 such frames stacked, giving uint8
observations ``[4, 84, 84]`` (frames first). Rewards are not clipped here: that is an agent
setting (``--clip-rewards``), so returns in ``info["episode"]`` stay in game units.

Three backends give the same observations:

* ``ale``: ale-py's threaded C++ ``AtariVectorEnv`` (the preprocessing runs in C++); the default.
* ``gymnasium``: gymnasium's ``AtariPreprocessing`` and ``FrameStackObservation`` over
  single ale-py envs in a ``SyncVectorEnv``; the reference the others are tested against.
* ``envpool``: EnvPool's C++ Atari, when the optional ``envpool`` package is installed.

Frame stacks start (and restart after each episode) with zero frames in all three. The
preprocessing is the same bit for bit; two things about episodes differ in EnvPool, which
has no setting for either: its reset plays one no-op frame after resetting the game, so
its episodes run one emulator frame later than ALE's, and its time limit counts agent
steps, not frames (``tests/test_atari.py`` checks its observations against the reference
given both).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os

import gymnasium as gym
import numpy as np

BACKENDS = ("ale", "gymnasium", "envpool")


@dataclasses.dataclass(frozen=True)
class AtariSettings:
    """The preprocessing; defaults are Machado et al. 2018's."""

    sticky_actions: float = 0.25
    """Probability that the emulator repeats the previous action on each frame."""
    full_action_space: bool = False
    """All 18 joystick actions instead of the game's minimal set."""
    frame_skip: int = 4
    """Frames each action is repeated for (the last two are max-pooled)."""
    screen_size: int = 84
    """Observations are grey screen_size x screen_size frames."""
    stack: int = 4
    """Frames stacked into one observation (first axis)."""
    max_episode_frames: int = 108_000
    """Episodes are truncated after this many emulator frames (30 minutes; ALE's v5 default)."""


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is an ale-py game id (``ALE/Pong-v5``), built by this module."""
    return env_id.startswith("ALE/")


def register() -> None:
    """Registers ale-py's ``ALE/...`` ids with gymnasium (importing ale_py does that)."""
    try:
        import ale_py
    except ImportError:
        raise ValueError("Atari envs need ale-py, which is not installed; "
                         "pip install 'rltpu[atari]'") from None
    gym.register_envs(ale_py)


def _game(env_id: str) -> str:
    register()
    if env_id not in gym.envs.registry:
        import difflib
        close = difflib.get_close_matches(env_id, [k for k in gym.envs.registry if is_atari(k)], n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown Atari env {env_id!r}{hint}")
    return gym.envs.registry[env_id].kwargs["game"]


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown Atari backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "envpool" and importlib.util.find_spec("envpool") is None:
        raise ValueError("--env-backend envpool needs the envpool package, which is not "
                         "installed (pip install envpool; it has no wheel for every Python)")


def make_one(env_id: str, settings: AtariSettings = AtariSettings(),
             render_mode: str | None = None) -> gym.Env:
    """One preprocessed game (gymnasium's wrappers), for the reference backend and for
    evaluation. ``render_mode="rgb_array"`` renders the full-colour screen."""
    _game(env_id)
    env = gym.make(env_id, frameskip=1, repeat_action_probability=settings.sticky_actions,
                   full_action_space=settings.full_action_space,
                   max_num_frames_per_episode=settings.max_episode_frames, render_mode=render_mode)
    # noop_max=0: sticky actions are the randomness (Machado et al. argue against no-op starts).
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=0, frame_skip=settings.frame_skip, screen_size=settings.screen_size,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    return gym.wrappers.FrameStackObservation(env, settings.stack, padding_type="zero")


def _import_envpool():
    """envpool, imported without the environment variables its import sets for the whole
    process (MPLBACKEND=Agg, TPU_SKIP_MDS_QUERY=1, ...): they would reach the learner's TPU
    runtime and every child process, and turn off a notebook's inline plots."""
    before = dict(os.environ)
    try:
        import envpool
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        os.environ.update(before)
    return envpool


def make_vector(env_id: str, num_envs: int, backend: str,
                settings: AtariSettings = AtariSettings()) -> gym.vector.VectorEnv:
    """``num_envs`` preprocessed copies of the game as one vector env (autoreset on the
    step after an episode ends, as every rltpu env), not yet reset."""
    check_backend(backend)
    if backend == "gymnasium":
        return gym.vector.SyncVectorEnv([lambda: make_one(env_id, settings)] * num_envs)
    if backend == "ale":
        from ale_py.vector_env import AtariVectorEnv
        game = _game(env_id)
        # One thread: a rollout actor holds one CPU, and the actor's policy step runs
        # between env steps anyway.
        return AtariVectorEnv(
            game, num_envs, num_threads=1, repeat_action_probability=settings.sticky_actions,
            full_action_space=settings.full_action_space, frameskip=settings.frame_skip,
            img_height=settings.screen_size, img_width=settings.screen_size, grayscale=True,
            stack_num=settings.stack, maxpool=True, noop_max=0, use_fire_reset=False,
            episodic_life=False, reward_clipping=False,
            max_num_frames_per_episode=settings.max_episode_frames)
    envpool = _import_envpool()
    _game(env_id)
    task = env_id.split("/", 1)[1]  # "Pong-v5"
    env = envpool.make_gymnasium(
        task, num_envs=num_envs, num_threads=1, repeat_action_probability=settings.sticky_actions,
        full_action_space=settings.full_action_space, frame_skip=settings.frame_skip,
        img_height=settings.screen_size, img_width=settings.screen_size, gray_scale=True,
        stack_num=settings.stack, noop_max=1, use_fire_reset=False, episodic_life=False,
        reward_clip=False, max_episode_steps=settings.max_episode_frames // settings.frame_skip)
    return ZeroPaddedStack(env, settings.stack)


class ZeroPaddedStack(gym.vector.VectorWrapper):
    """Zeros the frames before an episode's first in EnvPool's frame stacks ``[N, stack, H,
    W]``, which it fills with copies of the first frame, as ALE does. EnvPool reports each
    env's steps into its episode (``info["elapsed_step"]``, 0 on the first observation), so
    the stack holds ``elapsed_step + 1`` of the episode's frames."""

    def __init__(self, env: gym.vector.VectorEnv, stack: int):
        super().__init__(env)
        self._stack = stack

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return self._pad(observation, info), info

    def step(self, actions):
        observation, reward, terminated, truncated, info = self.env.step(actions)
        return self._pad(observation, info), reward, terminated, truncated, info

    def _pad(self, observation: np.ndarray, info: dict) -> np.ndarray:
        frames = info["elapsed_step"] + 1
        for i in np.flatnonzero(frames < self._stack):
            observation[i, :self._stack - frames[i]] = 0
        return observation
