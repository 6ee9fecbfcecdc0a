"""Moving trajectories to the learner and params to the actors, through Ray.

``ParamStore`` holds the newest published params: one ``ray.put`` per version, whatever
the number of actors. ``UnrollQueue`` is the bounded trajectory queue: each actor has at
most ``max_in_flight`` unroll requests outstanding, so when the learner stops consuming,
the actors stop acting (backpressure) and the object store holds at most
``num_actors * max_in_flight`` trajectories. On-policy (synchronous) runs request unrolls
only after each update, with its params. Trajectories stay in the object store as
ObjectRefs until the learner takes them; the driver never re-sends them.
"""
from __future__ import annotations

from typing import Sequence

import ray

from rltpu.types import Unroll


class ParamStore:
    """The latest params, as one object-store copy shared by every actor."""

    def __init__(self):
        self.version = -1
        self._ref = None

    def publish(self, version: int, host_params) -> None:
        if version <= self.version:
            raise ValueError(f"param version {version} is not newer than {self.version}")
        self._ref = ray.put(host_params)
        self.version = version

    def latest(self) -> tuple[int, list]:
        """``(version, [ObjectRef])``; boxed so a Ray call does not resolve it eagerly."""
        if self._ref is None:
            raise RuntimeError("no params published yet")
        return self.version, [self._ref]


class UnrollQueue:
    """Requests unrolls from actors and hands back finished ones, oldest first.

    Each request carries the newest params version; an actor fetches the params only when
    it is behind, between unrolls, and never waits on the learner to act as long as it has
    a request outstanding (``max_in_flight >= 2`` keeps one queued behind the running one).
    """

    def __init__(self, actors: Sequence, params: ParamStore, max_in_flight: int = 2,
                 on_policy: bool = False):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._actors = list(actors)
        self._params = params
        self._on_policy = on_policy
        self._pending: dict = {}  # ObjectRef -> actor index
        if not on_policy:
            for index in range(len(self._actors)):
                for _ in range(max_in_flight):
                    self._request(index)

    def _request(self, index: int) -> None:
        version, box = self._params.latest()
        self._pending[self._actors[index].unroll.remote(version, box)] = index

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def take_ready(self, block: bool) -> list:
        """ObjectRefs of the unrolls finished so far (at least one if ``block``), without
        fetching them; their actors are asked for the next. For consumers that pass the
        unrolls on (to a replay actor) rather than read them here."""
        refs = list(self._pending)
        if block:
            ray.wait(refs, num_returns=1, fetch_local=False)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in ready:
            index = self._pending.pop(ref)
            if not self._on_policy:
                self._request(index)
        return ready

    def get(self, num_unrolls: int) -> list[Unroll]:
        """Blocks until ``num_unrolls`` unrolls are ready; asks their actors for the next.

        On-policy, nothing is requested ahead: this asks the actors (round robin) for
        ``num_unrolls`` unrolls with the newest params and waits for exactly those.
        """
        if self._on_policy:
            for i in range(num_unrolls):
                self._request(i % len(self._actors))
        ready: list = []
        while len(ready) < num_unrolls:
            done, _ = ray.wait(list(self._pending), num_returns=num_unrolls - len(ready),
                               fetch_local=True)
            ready.extend(done)
        unrolls = ray.get(ready)
        for ref in ready:
            index = self._pending.pop(ref)
            if not self._on_policy:
                self._request(index)
        return unrolls
