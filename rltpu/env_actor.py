"""Env actors of central inference (``--inference central``): they step envs, nothing else.

An env actor owns a vector env of ``envs_per_actor`` envs and answers one request at a
time, ``step(actions)``, with what the envs returned. It never imports JAX and never holds
params: the learner host chooses every action (``rltpu.inference``). A process that
imports numpy, gymnasium and the env alone starts faster and takes about a fifth of the
memory of a rollout actor with JAX and a compiled policy (measured in ``bench/inference.py``).

``tests/test_central_inference.py`` checks that this module's process never loads JAX:
import nothing here (nor in ``rltpu.envs``, ``rltpu.config``, ``rltpu.types``) that does.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np
import ray

from rltpu import cluster, envs
from rltpu.config import RunConfig


class EnvStep(NamedTuple):
    """What one ``step`` of an actor's ``B`` envs returned."""

    observation: np.ndarray  # [B, *obs_shape]: the next observation of each env
    reward: np.ndarray  # [B] float32
    terminated: np.ndarray  # [B] bool
    truncated: np.ndarray  # [B] bool
    episode_returns: np.ndarray  # [n] float32: returns of the episodes that ended at this step
    episode_lengths: np.ndarray  # [n] int32
    env_s: float  # seconds the envs took to step (the rest of a round trip is transport)


class StatisticsAccess:
    """What the learner loop asks of an actor whose vector env is ``self.env``, for its
    running statistics (``--normalize-observations``, ``--normalize-rewards``): both kinds
    of actor have it."""

    def observation_statistics(self):
        """The running statistics this actor's envs normalise observations by
        (``--normalize-observations``; ``rltpu.envs.make.ObservationStatistics.state``),
        for evaluation and checkpoints; None without normalisation."""
        return envs.observation_statistics(self.env)

    def load_statistics(self, saved: dict) -> None:
        """This actor's envs go on from the statistics ``saved`` (a resumed run's, from its
        checkpoint; ``envs.load_statistics``)."""
        envs.load_statistics(self.env, saved)

    def exchange_statistics(self, shared: dict) -> dict:
        """Hands over the observations and returns this actor's envs added to their
        statistics since it was last asked and goes on from ``shared``, all actors'
        (``rltpu.driver.SharedStatistics``; ``envs.exchange_statistics``)."""
        return envs.exchange_statistics(self.env, shared)


class EnvActor(StatisticsAccess):
    """Steps ``run.envs_per_actor`` envs of ``run.env`` with the actions it is sent.

    Args:
      actor_id: index of this actor.
      run: the run's config (``env``, its options, ``envs_per_actor``,
        ``normalize_observations``).
      seed: seeds the envs (the learner host seeds this actor's sampling key with it).
      reward_discount: with ``--normalize-rewards``, the agent's discount
        (``envs.reward_discount``).
    """

    def __init__(self, actor_id: int, run: RunConfig, seed: int,
                 reward_discount: float | None = None):
        self.actor_id, self.seed = actor_id, seed
        self.env, _ = envs.make(run.env, run.envs_per_actor, seed, run.normalize_observations,
                                reward_discount=reward_discount, **run.env_options())

    def pid(self) -> int:
        return os.getpid()

    def first_observation(self) -> tuple[int, np.ndarray]:
        """``(seed, observation [B, ...])`` of the freshly reset envs. Asked once after each
        start, restarts included: a restarted actor's envs are new ones."""
        return self.seed, self.env.first_observation

    def step(self, action: np.ndarray) -> EnvStep:
        """Steps every env with its action (``[B, *action_shape]``)."""
        start = time.perf_counter()
        observation, reward, terminated, truncated, info = self.env.step(action)
        returns = lengths = ()
        if "_episode" in info:
            done = info["_episode"]
            returns, lengths = info["episode"]["r"][done], info["episode"]["l"][done]
        return EnvStep(observation, np.asarray(reward, np.float32), np.asarray(terminated, bool),
                       np.asarray(truncated, bool), np.asarray(returns, np.float32),
                       np.asarray(lengths, np.int32), time.perf_counter() - start)

    def loaded_modules(self) -> list[str]:
        """The names of the modules this process has loaded (tests check JAX is not one)."""
        import sys
        return sorted(sys.modules)


@ray.remote(num_cpus=1)
class RayEnvActor(EnvActor):
    """``EnvActor`` in a Ray actor process of its own."""

    def __init__(self, *args, **kwargs):
        cluster.unblock_sigterm()
        super().__init__(*args, **kwargs)
