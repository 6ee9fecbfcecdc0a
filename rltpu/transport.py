"""Moving trajectories to the learner and params to the actors, through Ray.

``ParamStore`` holds the newest published params: one ``ray.put`` per version, whatever
the number of actors. ``UnrollQueue`` is the bounded trajectory queue: each actor has at
most ``max_in_flight`` unroll requests outstanding, so when the learner stops consuming,
the actors stop acting (backpressure) and the object store holds at most
``num_actors * max_in_flight`` trajectories. On-policy (synchronous) runs request unrolls
only after each update, with its params. Trajectories stay in the object store as
ObjectRefs until the learner takes them; the driver never re-sends them.

A request whose actor died or whose env raised is counted (``dropped``) and its
trajectory, lost or half-made, never reaches the learner; with a supervisor (see
``rltpu.faults.ActorSupervisor``) the actor is restarted and asked again once it is back.
"""
from __future__ import annotations

import collections
from typing import Callable, Sequence

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
                 on_policy: bool = False, supervisor=None,
                 check_stop: Callable[[], None] | None = None):
        """``check_stop`` is called at least once a second while waiting and raises to
        give up the wait (``rltpu.faults.StopRequest.check``)."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._actors = list(actors)
        self._params = params
        self._on_policy = on_policy
        self._supervisor = supervisor
        self._check_stop = check_stop or (lambda: None)
        self._pending: dict = {}  # ObjectRef -> (actor index, its incarnation when asked)
        self._owed: collections.Counter = collections.Counter()  # requests held while restarting
        self.dropped = 0
        if not on_policy:
            for index in range(len(self._actors)):
                for _ in range(max_in_flight):
                    self._request(index)

    def _request(self, index: int) -> None:
        if self._supervisor is not None and not self._supervisor.in_service(index):
            self._owed[index] += 1
            return
        version, box = self._params.latest()
        incarnation = 0 if self._supervisor is None else self._supervisor.incarnation[index]
        self._pending[self._actors[index].unroll.remote(version, box)] = (index, incarnation)

    def close(self) -> None:
        """Nothing to stop (``rltpu.inference.CentralQueue`` has a server thread)."""

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def take_ready(self, block: bool) -> list:
        """ObjectRefs of the unrolls finished so far (at least one if ``block``), without
        fetching them; their actors are asked for the next. For consumers that pass the
        unrolls on (to a replay actor) rather than read them here."""
        refs = list(self._pending)
        while block:
            self._check_stop()
            if ray.wait(refs, num_returns=1, fetch_local=False, timeout=1.0)[0]:
                break
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in ready:
            index, _ = self._pending.pop(ref)
            if not self._on_policy:
                self._request(index)
        return ready

    def get(self, num_unrolls: int) -> list[Unroll]:
        """Blocks until ``num_unrolls`` unrolls are ready; asks their actors for the next.

        On-policy, nothing is requested ahead: this asks the actors (round robin) for
        ``num_unrolls`` unrolls with the newest params and waits for exactly those.

        Raises:
          ray.exceptions.RayError: a request failed and there is no supervisor.
          rltpu.faults.ActorsExhaustedError: every actor is out of restarts.
          rltpu.faults.Stopped: ``check_stop`` gave up the wait.
        """
        if self._on_policy:
            for i in range(num_unrolls):
                self._request(i % len(self._actors))
        unrolls: list[Unroll] = []
        while len(unrolls) < num_unrolls:
            self._check_stop()  # e.g. actors that never answer must not hold off a SIGTERM
            if self._supervisor is not None:
                # Actors back from a restart get the requests they missed.
                for index in self._supervisor.poll(timeout=0 if self._pending else 1.0):
                    for _ in range(self._owed.pop(index, 0)):
                        self._request(index)
                self._supervisor.check_any_left()
                if not self._pending:
                    continue
            done, _ = ray.wait(list(self._pending), fetch_local=False, timeout=1.0,
                               num_returns=min(num_unrolls - len(unrolls), len(self._pending)))
            for ref in done:
                # (after a signal to the whole group the actors' failures are Ray going
                # down: handling them would ask Ray's dead GCS)
                self._check_stop()
                index, incarnation = self._pending.pop(ref)
                try:
                    unrolls.append(ray.get(ref))
                except ray.exceptions.RayError as error:
                    self._check_stop()
                    if self._supervisor is None:
                        raise
                    self.dropped += 1
                    self._supervisor.failed(index, error, incarnation)
                    if self._on_policy:
                        self._request(index)  # the batch still needs an unroll in its place
                        continue
                if not self._on_policy:
                    self._request(index)
        return unrolls
