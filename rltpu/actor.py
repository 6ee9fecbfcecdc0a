"""Rollout actors: each owns a vector env and a jitted policy on its CPU and produces
time-major trajectories on request.

``RolloutActor`` is plain Python (tests run it in-process); ``RayRolloutActor`` is the
same in a Ray actor process of its own, with JAX pinned to the CPU before it starts.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
import ray

from rltpu import envs
from rltpu import cluster, devices, recurrent, spaces
from rltpu.config import RunConfig
from rltpu.env_actor import StatisticsAccess
from rltpu.types import ActorTimings, Trajectory, Unroll


class RolloutActor(StatisticsAccess):
    """Steps ``num_envs`` envs with the latest params it has been given.

    Args:
      actor_id: index of this actor, carried in every unroll.
      agent: the agent (see ``rltpu.agent.Agent``); only its policy step is used here.
      agent_config: the agent's config.
      run: the run's config: the actor uses ``env``, ``envs_per_actor`` (trajectory columns
        ``B``) and ``unroll_length`` (``T``).
      seed: seeds the envs and the policy's sampling key.
    """

    def __init__(self, actor_id: int, agent: Any, agent_config: Any, run: RunConfig, seed: int):
        self.actor_id = actor_id
        self.unroll_length = run.unroll_length
        self._reward_discount = envs.reward_discount(run, agent_config)
        self.env, spec = envs.make(run.env, run.envs_per_actor, seed, run.normalize_observations,
                                   reward_discount=self._reward_discount, **run.env_options())
        fns = agent.build(spec, agent_config, run)
        self._run, self._spec, self._fns = run, spec, fns  # for new_run
        policy = fns.actor_step if fns.actor_step_for is None else fns.actor_step_for(
            actor_id, run.num_actors)

        self._key = jax.random.key(seed)
        self._observation = self.env.first_observation
        self._episode_ended = np.zeros(run.envs_per_actor, bool)  # the next step is an autoreset step
        self.params = None
        self.version = -1
        self._last_return = None  # perf_counter when the previous unroll was returned
        shapes = jax.eval_shape(fns.init, jax.random.key(0)).params
        placeholder = devices.to_actor_device(
            jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes))
        self._recurrent = recurrent.is_recurrent(fns)
        if self._recurrent:
            # Each env's core state and context live here across steps and unrolls; the
            # agent resets a core where its context says an episode starts.
            def step(params, observation, key, core_state, context):
                key, sample_key = jax.random.split(key)
                out, core_state = policy(params, observation, sample_key, core_state, context)
                return out, core_state, key

            self._core_state = fns.initial_core_state(run.envs_per_actor)
            self._context = recurrent.initial_context(spec, run.envs_per_actor)
            self._step = jax.jit(step)
            warm_up = (self._core_state, self._context)
        else:
            def step(params, observation, key):
                key, sample_key = jax.random.split(key)
                return policy(params, observation, sample_key), key

            self._step = jax.jit(step)
            warm_up = ()
        # Compile the policy step now, with placeholder params of the right shapes, so the
        # first unroll does not wait for it (this overlaps with the learner's compile).
        jax.block_until_ready(self._step(placeholder, self._observation, self._key, *warm_up))

    def pid(self) -> int:
        return os.getpid()

    def new_run(self, seed: int) -> None:
        """Starts over for another run of the same settings, keeping the compiled policy
        step (a notebook's next ``rltpu.train`` reuses its actors: ``rltpu.session``):
        fresh envs seeded with ``seed``, no params (version -1), fresh core states."""
        run = self._run
        self.env.close()
        self.env, _ = envs.make(run.env, run.envs_per_actor, seed, run.normalize_observations,
                                reward_discount=self._reward_discount, **run.env_options())
        self._key = jax.random.key(seed)
        self._observation = self.env.first_observation
        self._episode_ended = np.zeros(run.envs_per_actor, bool)
        self.params, self.version, self._last_return = None, -1, None
        if self._recurrent:
            self._core_state = self._fns.initial_core_state(run.envs_per_actor)
            self._context = recurrent.initial_context(self._spec, run.envs_per_actor)

    def set_params(self, version: int, params) -> None:
        """Takes ``params`` if newer than what the actor has."""
        if version > self.version:
            self.params = devices.to_actor_device(params)
            self.version = version

    def unroll(self, version: int, params_box: list) -> Unroll:
        """Acts for ``unroll_length`` steps.

        Args:
          version: version of the newest published params.
          params_box: ``[ObjectRef]`` of those params, boxed in a list so Ray does not fetch
            them unless this actor's params are older.
        """
        start = time.perf_counter()
        # The gap since the previous unroll was returned: Ray serialising it, then waiting
        # for this request, which the driver only sends when the learner takes an unroll.
        idle_s = 0.0 if self._last_return is None else start - self._last_return
        if version > self.version:
            self.set_params(version, ray.get(params_box[0]))
        params_s = time.perf_counter() - start
        unroll = self.unroll_with_current()
        self._last_return = time.perf_counter()
        return unroll._replace(timings=unroll.timings._replace(params_s=params_s, idle_s=idle_s))

    def unroll_with_current(self) -> Unroll:
        """Acts for ``unroll_length`` steps with the params the actor has."""
        params = self.params
        start = time.perf_counter()
        T, B = self.unroll_length, self._episode_ended.shape[0]
        observation = spaces.empty_buffer(self._observation, T + 1)  # a pytree for Dict/Tuple spaces
        reward = np.empty((T, B), np.float32)
        terminated = np.empty((T, B), bool)
        truncated = np.empty((T, B), bool)
        valid = np.empty((T, B), bool)
        actions, extras = [], []
        returns, lengths = [], []
        spaces.write(observation, 0, self._observation)
        acting_start = None  # the acting state before step 0, for the learner to replay from
        if self._recurrent:
            acting_start = jax.tree.map(np.asarray,
                                        recurrent.start_of(self._core_state, self._context))
        # perf_counter costs well under a microsecond: cheap next to a policy step.
        inference_s = env_s = 0.0
        for t in range(T):
            t0 = time.perf_counter()
            if self._recurrent:
                out, self._core_state, self._key = self._step(
                    params, spaces.read(observation, t), self._key, self._core_state,
                    self._context)
            else:
                out, self._key = self._step(params, spaces.read(observation, t), self._key)
            action = np.asarray(out.action)
            t1 = time.perf_counter()
            next_obs, r, term, trunc, info = self.env.step(action)
            actions.append(action)
            extras.append(out.extras)
            valid[t] = ~self._episode_ended
            self._episode_ended = term | trunc
            spaces.write(observation, t + 1, next_obs)
            reward[t], terminated[t], truncated[t] = r, term, trunc
            if self._recurrent:
                self._context = recurrent.next_context(self._context, action, reward[t], ~valid[t])
            if "_episode" in info:
                done = info["_episode"]
                returns.append(info["episode"]["r"][done])
                lengths.append(info["episode"]["l"][done])
            inference_s += t1 - t0
            env_s += time.perf_counter() - t1
        packing = time.perf_counter()
        self._observation = spaces.read(observation, T)
        extras = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *extras)
        trajectory = Trajectory(
            observation=observation, action=np.stack(actions), reward=reward,
            terminated=terminated, truncated=truncated, valid=valid, extras=extras,
            policy_version=np.full((T, B), self.version, np.int32), start=acting_start)
        return Unroll(trajectory,
                      np.concatenate(returns).astype(np.float32) if returns else np.zeros(0, np.float32),
                      np.concatenate(lengths).astype(np.int32) if lengths else np.zeros(0, np.int32),
                      self.actor_id, int(valid.sum()), time.perf_counter() - start,
                      ActorTimings(env_s, inference_s, send_s=time.perf_counter() - packing))


@ray.remote(num_cpus=1)
class RayRolloutActor(RolloutActor):
    def __init__(self, actor_id: int, agent: Any, agent_config: Any, run: RunConfig, seed: int):
        cluster.unblock_sigterm()
        devices.pin_process_to_cpu()
        devices.use_compilation_cache(run.compilation_cache)
        super().__init__(actor_id, agent, agent_config, run, seed)
