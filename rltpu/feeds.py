"""Where the learner's batches come from.

``TrajectoryFeed``: whole unrolls from the trajectory queue, stacked on the batch axis
(IMPALA, PPO). ``ReplayFeed``: unrolls go from the queue to a replay actor, as ObjectRefs,
and batches are sampled from it (DQN). Both return the host batch (the loop hands it to
the learner: a batch flows one way, feed -> learner -> loop) with what arrived from the
actors since the last batch; ``data_ready_at`` is when the data was in hand
(``time.perf_counter``), for the bottleneck report.
"""
from __future__ import annotations

from typing import NamedTuple

import time

import numpy as np
import ray

from rltpu.learner import stack_unrolls
from rltpu.replay import RayReplayBuffer, ReplaySpec
from rltpu.transport import UnrollQueue
from rltpu.types import ActorTimings


class Arrival(NamedTuple):
    """What one unroll reported: finished episodes, env steps, the params version it was
    acted with, how long the actor took and where that time went."""

    episode_returns: np.ndarray
    env_steps: int
    policy_version: int
    acting_s: float
    timings: ActorTimings = ActorTimings()


class TrajectoryFeed:
    """Whole unrolls; with a validator, malformed ones are rejected (counted) and replaced."""

    def __init__(self, queue: UnrollQueue, unrolls_per_batch: int, samples_per_batch: int,
                 validator=None):
        self._queue, self._n, self._validator = queue, unrolls_per_batch, validator
        self.samples_per_batch = samples_per_batch
        self.data_ready_at = None

    def next(self, latest_version: int):
        """The next batch (host arrays) and its unrolls' arrivals; ``latest_version`` is the
        newest params version published (no valid unroll was acted with a newer one)."""
        unrolls = []
        while len(unrolls) < self._n:
            got = self._queue.get(self._n - len(unrolls))
            unrolls += got if self._validator is None else self._validator.accept(got, latest_version)
        self.data_ready_at = time.perf_counter()  # the rest is stacking and the copy
        arrivals = [Arrival(u.episode_returns, u.env_steps, int(u.trajectory.policy_version[0, 0]),
                            u.acting_s, u.timings) for u in unrolls]
        return stack_unrolls(unrolls), arrivals

    def after_update(self, metrics: dict) -> None:
        pass


class ReplayFeed:
    """Moves finished unrolls into the replay actor and samples the next batch.

    With ``spec.samples_per_insert`` it keeps that replay ratio: while the learner has
    sampled its share of what was inserted it waits for more unrolls, and while it has not,
    it leaves finished unrolls in the queue, whose bound then holds the actors back.
    """

    def __init__(self, queue: UnrollQueue, spec: ReplaySpec, seed: int):
        self._queue, self._spec = queue, spec
        self.replay = RayReplayBuffer.remote(spec, seed)
        self.samples_per_batch = spec.sample_size
        self._size = self._inserted = self._sampled = 0
        self._indices = None
        self.memory_estimate_mb = None
        self.data_ready_at = None

    def next(self, latest_version: int | None = None):
        """The next sampled batch (host arrays) and the arrivals of the unrolls inserted
        meanwhile. (Replayed unrolls are not validated: ``latest_version`` is unused.)"""
        need = max(self._spec.sample_size, self._spec.min_size)
        arrivals = []
        while True:
            starved = self._size < need or self._learner_ahead()
            refs = self._queue.take_ready(block=starved) if starved or self._spec.samples_per_insert is None else []
            added = [self.replay.add.remote(ref) for ref in refs]
            for stats in ray.get(added):
                arrivals.append(Arrival(stats["episode_returns"], stats["env_steps"],
                                        stats["policy_version"], stats["acting_s"],
                                        stats["timings"]))
                self._size = stats["replay_size"]
                self._inserted += stats["transitions"]
            if self.memory_estimate_mb is None and added:
                self.memory_estimate_mb = ray.get(self.replay.memory_estimate_mb.remote())
                print(f"replay: capacity {self._spec.capacity:,} transitions, about "
                      f"{self.memory_estimate_mb:,.0f} MB when full", flush=True)
            if self._size >= need and not self._learner_ahead():
                break
        sample = ray.get(self.replay.sample.remote(self._spec.sample_size))
        self.data_ready_at = time.perf_counter()  # the rest is the copy
        self._sampled += self._spec.sample_size
        self._indices = sample.pop("indices")
        return sample, arrivals

    def _learner_ahead(self) -> bool:
        ratio = self._spec.samples_per_insert
        if ratio is None:
            return False
        return self._sampled >= ratio * max(self._inserted - self._spec.min_size, 0)

    def after_update(self, metrics: dict) -> None:
        """Writes the update's new priorities back (asynchronously)."""
        self.replay.update_priorities.remote(self._indices, metrics.pop("priorities"))
