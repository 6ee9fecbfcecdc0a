"""Central inference (``--inference central``): env actors step envs, the learner host acts.

SEED RL's loop (Espeholt et al. 2020) over Ray. Each env actor (``rltpu.env_actor``) has
one request in flight at a time, ``step(actions)``. A server thread in the learner process
waits for the requests that are done (``ray.wait``), gathers every other one that finishes
within ``batch_wait_s`` (the bounded wait: a slow actor is left for the next round, never
waited for), chooses the actions of all of them in one jitted policy call on this host's
first device with the newest published params, and sends each actor its actions. It
builds the time-major trajectories the learner consumes as rollout actors do, with the
same fields: every step's params version, the behaviour outputs (``extras``), and for
recurrent agents the core state and context, which live here, on the learner host.

Why a thread beside the update loop: the update runs on the devices while the loop's
thread mostly waits; the server's work is Ray calls and small host copies on the CPU
plus one short device call per round, so the two interleave on one process (as Sebulba's
actor threads do) and inference needs no device of its own.

Why Ray for the transport: the actors already are Ray actors (placement, restarts,
multi-host), and a step's arrays are small. A round (Ray's round trip and the policy
call) took about 3 ms with 2 CartPole env actors of 16 envs on the loaded 2-core
development machine, far more than a CartPole step: central inference loses throughput on
CartPole on CPUs and is there for networks that cost more than that (``bench/inference.py``
measures both; README, "Central inference").

The transport is all in this module: ``CentralQueue`` answers the same calls as
``rltpu.transport.UnrollQueue`` (``get``, ``take_ready``, ``dropped``), so the feeds and the
loop take its unrolls as they take rollout actors'. ``ServedParams`` is the ``ParamStore``
the loop publishes to; it also hands each version to the server.

Multi-host learners: each learner process serves its own actors (its share) on its own
first device; nothing of inference crosses hosts.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import ray

from rltpu import devices, recurrent
from rltpu.config import RunConfig
from rltpu.env_actor import RayEnvActor
from rltpu.transport import ParamStore
from rltpu.types import ActorTimings, Trajectory, Unroll

BATCH_WAIT_S = 0.0005
"""After the first actor's step is back, how long the server waits for more to batch with
it; a slow actor costs the others at most this much per round. Measured with 8 CartPole env
actors on 2 CPUs, side by side (load average 27-48): 2 ms gave 10,900 env steps/s (4.3
actors per call), 0.5 ms 14,400 (2.3), none 14,000 (2.3). Waiting longer batches more,
which pays only where a policy call costs more than the wait (big networks)."""


def start_env_actors(run: RunConfig, actor_seeds: Sequence[tuple[int, int]],
                     reward_discount: float | None = None) -> list:
    """Starts ``RayEnvActor``s, one per ``(actor_id, seed)``."""
    actor_class = RayEnvActor.options(max_restarts=run.max_actor_restarts, max_task_retries=0)
    return [actor_class.remote(actor_id, run, seed, reward_discount)
            for actor_id, seed in actor_seeds]


def make_queue(plan, actor_ids: Sequence[int], actors: Sequence, params: "ServedParams",
               supervisor=None, check_stop: Callable[[], None] | None = None) -> "CentralQueue":
    """The ``CentralQueue`` serving this host's env actors for ``plan`` (``rltpu.plan.Plan``)."""
    fns, run = plan.fns, plan.run
    def initial_state(num_envs: int):
        return (jax.tree.map(np.asarray, fns.initial_core_state(num_envs)),
                recurrent.initial_context(plan.spec, num_envs))

    def policy_for(index: int):
        return fns.actor_step_for(actor_ids[index], run.num_actors)
    return CentralQueue(actors, params, fns.actor_step,
                        initial_state if recurrent.is_recurrent(fns) else None,
                        actor_ids=actor_ids, unroll_length=run.unroll_length,
                        envs_per_actor=run.envs_per_actor, max_in_flight=run.max_in_flight,
                        on_policy=run.on_policy,
                        policy_for=None if fns.actor_step_for is None else policy_for,
                        supervisor=supervisor, check_stop=check_stop)


class ServedParams(ParamStore):
    """The published params: in the object store (evaluation reads them there) and on the
    device the server acts on. Read by the server thread, published by the loop's."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._served = None  # (version, params on the inference device)

    def publish(self, version: int, host_params) -> None:
        super().publish(version, host_params)
        on_device = devices.to_inference_device(host_params)
        with self._lock:
            self._served = (version, on_device)

    def served(self) -> tuple[int, Any]:
        """``(version, params)`` of the newest published params, on the inference device."""
        with self._lock:
            return self._served


def make_batched_policy(policy: Callable, is_recurrent: bool) -> Callable:
    """The jitted step over ``A`` actors' observations at once.

    ``step(params, observation [A, B, ...], key_data [A, 2], *(core_state, context))``
    returns ``(ActorOutput [A, B, ...], key_data, *core_state)``. Each actor keeps its own
    key and splits it as a rollout actor does (``key, sample_key = split(key)``), so an actor
    samples the same actions whether it acts itself or is served here.
    """
    def one(params, observation, key_data, *state):
        key, sample_key = jax.random.split(jax.random.wrap_key_data(key_data))
        if is_recurrent:
            out, core_state = policy(params, observation, sample_key, *state)
            return out, jax.random.key_data(key), core_state
        return policy(params, observation, sample_key), jax.random.key_data(key)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0) + ((0, 0) if is_recurrent else ())))


class _ActorState:
    """What the server keeps of one env actor between its steps: where its envs are, its
    sampling key, its recurrent state, and the unroll it is filling."""

    def __init__(self, num_envs: int, seed: int, observation: np.ndarray, initial):
        self.observation = observation
        self.key_data = np.asarray(jax.random.key_data(jax.random.key(seed)))
        self.episode_ended = np.zeros(num_envs, bool)
        self.core_state, self.context = initial if initial is not None else (None, None)
        self.steps: list | None = None  # the unroll being filled: one dict per step
        self.start = None  # its RecurrentStart
        self.unroll_started = 0.0
        self.inference_s = self.env_s = self.transport_s = 0.0
        self.sent_at = 0.0


class CentralQueue:
    """Serves env actors from a thread and hands back finished unrolls, oldest first.

    Off-policy, an actor starts a new unroll while fewer than ``num_actors * max_in_flight``
    are being filled or wait to be taken (the bound of the rollout actors' queue), and
    otherwise waits (back-pressure). On-policy, ``get(n)`` allows ``n`` new unrolls, all
    acted with the params published before it.

    Args:
      actors: the ``RayEnvActor`` handles, indexed like the supervisor's.
      params: the ``ServedParams`` the loop publishes to (published at least once).
      policy: the agent's policy step, or ``policy_for(actor_id)`` below.
      initial_state: ``num_envs -> (core_state, context)`` for recurrent agents, else None.
      actor_ids: each actor's id (carried in its unrolls); default ``0..len(actors) - 1``.
      unroll_length, envs_per_actor, max_in_flight, on_policy: the run's settings.
      policy_for: per-actor policies (``AgentFns.actor_step_for``): each actor is then served
        in a call of its own.
      supervisor: ``rltpu.faults.ActorSupervisor`` of ``actors`` (restarts failed ones).
      check_stop: called at least once a second while ``get`` waits; raises to give up.
      batch_wait_s: the bounded wait (``BATCH_WAIT_S``).
    """

    def __init__(self, actors: Sequence, params: ServedParams, policy: Callable | None,
                 initial_state: Callable | None, *, actor_ids: Sequence[int] | None = None,
                 unroll_length: int, envs_per_actor: int,
                 max_in_flight: int = 2, on_policy: bool = False,
                 policy_for: Callable[[int], Callable] | None = None, supervisor=None,
                 check_stop: Callable[[], None] | None = None,
                 batch_wait_s: float = BATCH_WAIT_S):
        self._actors = list(actors)
        self._actor_ids = list(range(len(self._actors)) if actor_ids is None else actor_ids)
        self._params = params
        self._T, self._B = unroll_length, envs_per_actor
        self._initial_state = initial_state
        self._recurrent = initial_state is not None
        if policy_for is None:
            step = make_batched_policy(policy, self._recurrent)
            self._group_of = lambda index: 0
            self._steps = {0: step}
        else:  # one compiled step per actor: their policies differ (e.g. in exploration)
            self._group_of = lambda index: index
            self._steps = {i: make_batched_policy(policy_for(i), self._recurrent)
                           for i in range(len(self._actors))}
        self._limit = len(self._actors) * max_in_flight
        self._on_policy = on_policy
        self._supervisor = supervisor
        self._check_stop = check_stop or (lambda: None)
        self._batch_wait_s = batch_wait_s

        self._state: list[_ActorState | None] = [None] * len(self._actors)
        self._pending: dict = {}  # ObjectRef -> (actor index, incarnation, "first" | "step")
        self._parked: list[int] = []  # at an unroll's boundary, waiting to be allowed to start
        self._filling = 0  # unrolls being filled
        self._credits = 0  # on-policy: unrolls asked for and not yet started
        self._done: collections.deque[Unroll] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self.dropped = 0
        # The server's time in policy calls for the bottleneck report: from the first unrolls
        # handed over (when the loop's accounting starts), compiling calls left out.
        self.inference_s = 0.0
        self._compiled: set = set()  # (group, padded size) of the calls compiled so far
        self._handed_over = False
        self.inference_calls = 0
        self.served_steps = 0  # actor steps served (each of B envs)
        for index in range(len(self._actors)):
            self._ask_first(index)
        self._thread = threading.Thread(target=self._serve, name="central-inference", daemon=True)
        self._thread.start()

    # -- the consumer's side (the loop's thread) ------------------------------------------

    def get(self, num_unrolls: int) -> list[Unroll]:
        """Blocks until ``num_unrolls`` unrolls are finished and returns them.

        Raises:
          rltpu.faults.ActorsExhaustedError: every actor is out of restarts.
          rltpu.faults.Stopped: ``check_stop`` gave up the wait.
          Whatever stopped the server thread.
        """
        with self._cond:
            if self._on_policy:
                self._credits += num_unrolls
                self._cond.notify_all()
            while len(self._done) < num_unrolls:
                self._raise_if_failed()
                self._cond.wait(timeout=1.0)
                self._check_stop()
            unrolls = [self._done.popleft() for _ in range(num_unrolls)]
            self._started_handing_over()
            self._cond.notify_all()  # room for parked actors
        return unrolls

    def take_ready(self, block: bool) -> list:
        """ObjectRefs of the unrolls finished so far (at least one if ``block``), for
        consumers that pass them on (the replay feed)."""
        with self._cond:
            while block and not self._done:
                self._raise_if_failed()
                self._cond.wait(timeout=1.0)
                self._check_stop()
            unrolls = list(self._done)
            self._done.clear()
            if unrolls:
                self._started_handing_over()
            self._cond.notify_all()
        return [ray.put(u) for u in unrolls]

    def close(self) -> None:
        """Stops the server thread (before the actors are killed)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _started_handing_over(self) -> None:
        if not self._handed_over:  # (the server adds under the same lock)
            self._handed_over = True
            self.inference_s = 0.0

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the server thread ----------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closing:
                self._round()
        except BaseException as error:  # noqa: BLE001 -- handed to the consumer, raised there
            with self._cond:
                self._error = error
                self._cond.notify_all()

    def _ask_first(self, index: int) -> None:
        incarnation = 0 if self._supervisor is None else self._supervisor.incarnation[index]
        self._pending[self._actors[index].first_observation.remote()] = (index, incarnation, "first")

    def _round(self) -> None:
        """One round: take the steps that are back, act for all of them in one call each
        group, send the actions."""
        if self._supervisor is not None:
            for index in self._supervisor.poll(timeout=0):
                self._ask_first(index)  # back from a restart: its envs are new
            self._supervisor.check_any_left()
        acting = self._admit_parked()
        if self._pending:
            refs = list(self._pending)
            ready, rest = ray.wait(refs, num_returns=1, timeout=0.0 if acting else 0.1)
            if ready and rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=self._batch_wait_s)[0]
            for ref in ready:
                acting += self._take(ref)
        elif not acting:
            with self._cond:  # nothing out: wait for the consumer to make room or ask
                self._cond.wait(timeout=0.05 if self._supervisor is None or not
                                self._supervisor_probing() else 0.01)
            return
        if acting:
            self._act(acting)

    def _supervisor_probing(self) -> bool:
        return any(not self._supervisor.in_service(i) for i in range(len(self._actors)))

    def _take(self, ref) -> list[int]:
        """Records a step (or a first observation) that is back; returns ``[index]`` if the
        actor now needs actions, ``[]`` if it failed or waits to start an unroll."""
        index, incarnation, kind = self._pending.pop(ref)
        state = self._state[index]
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:
            if self._supervisor is None:
                raise
            if state is not None and state.steps is not None:
                with self._cond:
                    self._filling -= 1
                    if self._on_policy:
                        self._credits += 1  # the batch still needs an unroll in its place
                self.dropped += 1
            self._state[index] = None
            if index in self._parked:
                self._parked.remove(index)
            self._supervisor.failed(index, error, incarnation)
            return []
        now = time.perf_counter()
        if kind == "first":
            seed, observation = result
            initial = None if self._initial_state is None else self._initial_state(self._B)
            self._state[index] = _ActorState(self._B, seed, observation, initial)
            return self._begin_unroll(index)
        state.transport_s += now - state.sent_at - result.env_s
        state.env_s += result.env_s
        step = state.steps[-1]
        step["valid"] = ~state.episode_ended
        state.episode_ended = result.terminated | result.truncated
        step.update(reward=result.reward, terminated=result.terminated,
                    truncated=result.truncated, returns=result.episode_returns,
                    lengths=result.episode_lengths)
        if self._recurrent:
            state.context = recurrent.next_context(state.context, step["action"], result.reward,
                                                   ~step["valid"])
        state.observation = result.observation
        self.served_steps += 1
        if len(state.steps) == self._T:
            self._finish_unroll(index)
            return self._begin_unroll(index)
        return [index]

    def _begin_unroll(self, index: int) -> list[int]:
        """Starts actor ``index``'s next unroll if allowed, else parks it."""
        with self._cond:
            allowed = (self._credits > 0 if self._on_policy
                       else self._filling + len(self._done) < self._limit)
            if not allowed:
                self._parked.append(index)
                return []
            if self._on_policy:
                self._credits -= 1
            self._filling += 1
        state = self._state[index]
        state.steps = []
        state.unroll_started = time.perf_counter()
        state.inference_s = state.env_s = state.transport_s = 0.0
        state.start = (None if not self._recurrent else jax.tree.map(
            np.asarray, recurrent.start_of(state.core_state, state.context)))
        return [index]

    def _admit_parked(self) -> list[int]:
        admitted = []
        for index in list(self._parked):
            self._parked.remove(index)
            admitted += self._begin_unroll(index)
        return admitted

    def _act(self, acting: list[int]) -> None:
        """Chooses the actions of the actors in ``acting`` (one call per group) and sends them."""
        version, params = self._params.served()
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for index in acting:
            groups[self._group_of(index)].append(index)
        for group, members in groups.items():
            start = time.perf_counter()
            outputs, size = self._call(self._steps[group], params, members)
            elapsed = time.perf_counter() - start
            if (group, size) in self._compiled:
                with self._cond:
                    self.inference_s += elapsed
            self._compiled.add((group, size))
            self.inference_calls += 1
            out, key_data = outputs[0], outputs[1]
            for row, index in enumerate(members):
                state = self._state[index]
                state.key_data = key_data[row]
                if self._recurrent:
                    state.core_state = jax.tree.map(lambda x: x[row], outputs[2])
                action = out.action[row]
                state.steps.append({"observation": state.observation, "action": action,
                                    "extras": jax.tree.map(lambda x: x[row], out.extras),
                                    "version": version})
                state.inference_s += elapsed
                state.sent_at = time.perf_counter()
                incarnation = (0 if self._supervisor is None
                               else self._supervisor.incarnation[index])
                self._pending[self._actors[index].step.remote(action)] = (index, incarnation, "step")

    def _call(self, step: Callable, params, members: list[int]):
        """One policy call for ``members``, padded to a power of two actors (at most the
        number of actors) so the step compiles for a few sizes only: host arrays back, and
        the padded size."""
        size = min(1 << (len(members) - 1).bit_length(), len(self._actors))
        rows = members + [members[0]] * (size - len(members))  # padding: a real row, ignored
        stack = lambda *xs: np.stack(xs)
        observation = np.stack([self._state[i].observation for i in rows])
        key_data = np.stack([self._state[i].key_data for i in rows])
        args = [observation, key_data]
        if self._recurrent:
            args += [jax.tree.map(stack, *[self._state[i].core_state for i in rows]),
                     jax.tree.map(stack, *[self._state[i].context for i in rows])]
        return jax.tree.map(np.asarray, jax.device_get(step(params, *args))), size

    def _finish_unroll(self, index: int) -> None:
        """Packs actor ``index``'s filled unroll into an ``Unroll`` for the consumer."""
        state = self._state[index]
        packing = time.perf_counter()
        steps, B = state.steps, self._B
        returns = [s["returns"] for s in steps]
        lengths = [s["lengths"] for s in steps]
        trajectory = Trajectory(
            observation=np.stack([s["observation"] for s in steps] + [state.observation]),
            action=np.stack([s["action"] for s in steps]),
            reward=np.stack([s["reward"] for s in steps]),
            terminated=np.stack([s["terminated"] for s in steps]),
            truncated=np.stack([s["truncated"] for s in steps]),
            valid=np.stack([s["valid"] for s in steps]),
            extras=jax.tree.map(lambda *xs: np.stack(xs), *[s["extras"] for s in steps]),
            policy_version=np.repeat(np.asarray([s["version"] for s in steps], np.int32)[:, None],
                                     B, axis=1),
            start=state.start)
        end = time.perf_counter()
        # Where this unroll's wall time went, in the rollout actors' phases: the envs
        # stepping, waiting for the policy call, and the round trips through Ray
        # (``idle``: the transport, and waiting in a batch for other actors' steps).
        acting_s = end - state.unroll_started
        other = max(acting_s - state.env_s - state.inference_s, 0.0)
        unroll = Unroll(trajectory, np.concatenate(returns).astype(np.float32),
                        np.concatenate(lengths).astype(np.int32), self._actor_ids[index],
                        int(trajectory.valid.sum()), acting_s,
                        ActorTimings(env_s=state.env_s, inference_s=state.inference_s,
                                     send_s=end - packing, idle_s=max(other - (end - packing), 0.0)))
        state.steps = None
        with self._cond:
            self._filling -= 1
            self._done.append(unroll)
            self._cond.notify_all()
