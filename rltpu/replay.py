"""Replay: a prioritised (or uniform) buffer of transitions in its own Ray actor.

Prioritised experience replay (Schaul et al. 2016), as Ape-X uses it (Horgan et al. 2018):
transition i is sampled with probability P(i) = p_i^alpha / sum_k p_k^alpha and weighted by
w_i = (N P(i))^-beta / max_j w_j (the max over the sampled batch). New transitions get the
largest priority seen so far; the learner writes |TD error| back. ``priority_exponent=0``
is uniform sampling. Actors' unrolls reach the buffer as ObjectRefs (straight from the
actor's object store, not through the driver); ``add`` turns each into transitions with
the agent's ``to_transitions`` and returns only the unroll's small episode statistics.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
import ray

from rltpu.types import Unroll


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
    """What an agent that learns from replay hands the runtime (in ``AgentFns.replay``)."""

    to_transitions: Callable[[Any], Any]  # numpy Trajectory [T, B] -> transitions [N, ...]
    capacity: int  # transitions held at most; the oldest are overwritten
    sample_size: int  # transitions per learner batch (global, split over the devices)
    min_size: int  # transitions to hold before the learner starts sampling
    priority_exponent: float = 0.6  # alpha; 0 is uniform sampling
    importance_exponent: float = 0.4  # beta
    samples_per_insert: float | None = None  # replay ratio the learner keeps to (None: free)


class TooFewTransitions(RuntimeError):
    pass


class SumTree:
    """Priorities in a binary tree of sums: O(log N) updates and proportional sampling,
    vectorised over a batch of indices."""

    def __init__(self, capacity: int):
        self.leaves = 1 << max(capacity - 1, 1).bit_length()
        self.tree = np.zeros(2 * self.leaves)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.tree[indices + self.leaves]

    def set(self, indices: np.ndarray, values: np.ndarray) -> None:
        nodes = indices + self.leaves
        self.tree[nodes] = values
        for _ in range(self.leaves.bit_length() - 1):
            nodes = np.unique(nodes // 2)
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]

    def find(self, masses: np.ndarray) -> np.ndarray:
        """Leaf indices whose cumulative-sum interval holds each of ``masses``."""
        nodes = np.ones(len(masses), np.int64)
        masses = masses.copy()
        while nodes[0] < self.leaves:
            left = self.tree[2 * nodes]
            right = masses > left
            masses -= left * right
            nodes = 2 * nodes + right
        return nodes - self.leaves


class ReplayBuffer:
    """The buffer itself (plain Python; ``RayReplayBuffer`` runs it in an actor)."""

    def __init__(self, spec: ReplaySpec, seed: int):
        self.spec = spec
        self._rng = np.random.default_rng(seed)
        self._tree = SumTree(spec.capacity)
        self._storage = None  # pytree of [capacity, ...] arrays, made on the first add
        self._next = 0
        self.size = 0
        self._max_priority = 1.0

    def add(self, unroll: Unroll) -> dict:
        transitions = self.spec.to_transitions(unroll.trajectory)
        n = len(jax.tree.leaves(transitions)[0])
        if self._storage is None:
            self._storage = jax.tree.map(
                lambda x: np.zeros((self.spec.capacity, *x.shape[1:]), x.dtype), transitions)
        indices = (self._next + np.arange(n)) % self.spec.capacity
        for store, new in zip(jax.tree.leaves(self._storage), jax.tree.leaves(transitions)):
            store[indices] = new
        self._tree.set(indices, np.full(n, self._max_priority ** self.spec.priority_exponent))
        self._next = int((self._next + n) % self.spec.capacity)
        self.size = min(self.size + n, self.spec.capacity)
        return {"episode_returns": unroll.episode_returns, "env_steps": unroll.env_steps,
                "transitions": n,
                "acting_s": unroll.acting_s, "policy_version": int(unroll.trajectory.policy_version[0, 0]),
                "timings": unroll.timings, "replay_size": self.size}

    def bytes_per_transition(self) -> int:
        if self._storage is None:
            return 0
        return sum(x[0].nbytes for x in jax.tree.leaves(self._storage))

    def memory_estimate_mb(self) -> float:
        """Memory the buffer holds when full."""
        return self.bytes_per_transition() * self.spec.capacity / 2**20

    def probabilities(self, indices: np.ndarray) -> np.ndarray:
        return self._tree.get(indices) / self._tree.total

    def sample(self, batch_size: int) -> dict:
        """``batch_size`` transitions, stratified over the priority mass, with their buffer
        indices and normalised importance weights.

        Raises:
          TooFewTransitions: the buffer holds fewer than ``max(batch_size, min_size)``.
        """
        need = max(batch_size, self.spec.min_size)
        if self.size < need:
            raise TooFewTransitions(f"replay holds {self.size} transitions; sampling needs "
                                    f"at least {need} (batch {batch_size}, min_size "
                                    f"{self.spec.min_size})")
        bounds = np.linspace(0.0, self._tree.total, batch_size + 1)
        masses = self._rng.uniform(bounds[:-1], bounds[1:])
        indices = np.minimum(self._tree.find(masses), self.size - 1)
        weights = (self.size * self.probabilities(indices)) ** -self.spec.importance_exponent
        return {"transitions": jax.tree.map(lambda x: x[indices], self._storage),
                "weights": (weights / weights.max()).astype(np.float32), "indices": indices}

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        priorities = np.asarray(priorities, np.float64)
        self._max_priority = max(self._max_priority, float(priorities.max()))
        self._tree.set(np.asarray(indices), priorities ** self.spec.priority_exponent)


RayReplayBuffer = ray.remote(num_cpus=0)(ReplayBuffer)
