"""Evaluation during training (``--eval-every-updates``/``--eval-every-s``): whole episodes
with the current params on envs of their own, apart from the training envs, without
holding training back.

Ray mode: an evaluation actor (``RayEvaluator``, JAX on its CPU) plays with the params
version it is handed while the learner goes on; ``AsyncEvaluation`` hands it the newest
params when an evaluation is due and the previous one has finished, and picks results up
without waiting. Anakin mode: ``JaxEvaluation``, one compiled program that plays every
episode at once (the env vmapped, ``lax.while_loop`` until all have ended), run between
compiled training calls. Each evaluation is a metrics row (``rltpu.run.Run.evaluated``).
"""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import ray

from rltpu import cluster, console, devices, envs
from rltpu.config import RunConfig
from rltpu.envs.make import normalize_one
from rltpu.evaluate import MAX_EVAL_STEPS, EpisodePlayer, make_jax_evaluation

def eval_seed(run: RunConfig, resume_step: int = 0) -> int:
    """The first evaluation's first episode seed: apart from the training envs' seeds
    (``seed * 10_000 + 1000 * (i + 1)``), and new on a resumed leg as theirs are."""
    return (run.seed * 10_000 + 500_000 + 7919 * resume_step) % 2**31


class EvalSchedule:
    """When an evaluation is due: at each multiple of ``eval_every_updates`` updates (the
    first update at or past it, when none is running) and/or every ``eval_every_s`` seconds.

    Args:
      run: the run's settings.
      version: the updates done at the start (a resumed run's count).
      now: the start time (``time.time()``).
    """

    def __init__(self, run: RunConfig, version: int, now: float):
        self.every_updates, self.every_s = run.eval_every_updates, run.eval_every_s
        self.started(version, now)

    def due(self, version: int, now: float) -> bool:
        return ((self.every_updates is not None and version >= self._next_version)
                or (self.every_s is not None and now >= self._next_time))

    def started(self, version: int, now: float) -> None:
        """An evaluation of params ``version`` started at ``now``."""
        if self.every_updates is not None:
            self._next_version = (version // self.every_updates + 1) * self.every_updates
        if self.every_s is not None:
            self._next_time = now + self.every_s


class Evaluator:
    """Plays evaluation episodes of the run's gymnasium env with the params it is given.

    Args:
      agent: the agent.
      agent_config: its config.
      run: the run's settings (env, its options, ``eval_policy``, ``eval_episodes``).
    """

    def __init__(self, agent: Any, agent_config: Any, run: RunConfig):
        self.env = envs.make_one(run.env, full_action_space=run.full_action_space,
                                 env_kwargs=run.env_kwargs_dict())
        self.statistics = None
        if run.normalize_observations:
            # Running statistics of its own until it is handed a rollout actor's: then it
            # plays with those, frozen, as that actor's policy sees the env.
            self.env = normalize_one(self.env)
            self.statistics = self.env.statistics
        spec = envs.make_spec(run.env, **run.env_options())
        fns = agent.build(spec, agent_config, run)
        self.player = EpisodePlayer(fns, spec, greedy=run.eval_policy == "greedy")
        self.episodes = run.eval_episodes

    def evaluate(self, version: int, params, seed: int, observation_statistics=None) -> dict:
        """Plays ``episodes`` episodes with ``params`` (version ``version``), episode ``i``
        from ``reset(seed=seed + i)``; ``{"version", "returns", "lengths"}``. With
        ``--normalize-observations``, ``observation_statistics`` (a rollout actor's
        ``observation_statistics()``) normalise the observations, frozen; without them the
        evaluator's own running statistics do."""
        if self.statistics is not None and observation_statistics is not None:
            self.statistics.load(observation_statistics)
        params = devices.to_actor_device(params)
        returns, lengths = self.player.play(self.env, params, self.episodes, seed)
        return {"version": version, "returns": returns, "lengths": lengths}


# Asks no CPU: it plays a few episodes now and then, and a local Ray has one CPU per
# rollout actor, which would leave it unscheduled when the actors take them all.
@ray.remote(num_cpus=0)
class RayEvaluator(Evaluator):
    def __init__(self, agent: Any, agent_config: Any, run: RunConfig):
        cluster.unblock_sigterm()
        devices.pin_process_to_cpu()
        devices.use_compilation_cache(run.compilation_cache)
        super().__init__(agent, agent_config, run)

    def evaluate_boxed(self, version: int, params, seed: int, statistics_box: list) -> dict:
        """``evaluate`` with the observation statistics of ``statistics_box``: ``[]`` or
        ``[ObjectRef]`` of a rollout actor's (boxed, so that an actor that failed to answer
        leaves the evaluator the statistics it has instead of failing the evaluation)."""
        statistics = None
        if statistics_box:
            try:
                statistics = ray.get(statistics_box[0])
            except ray.exceptions.RayError:
                pass
        return self.evaluate(version, params, seed, statistics)


class AsyncEvaluation:
    """The driver's side of Ray mode's evaluation: starts the evaluation actor, hands it
    params when an evaluation is due and the previous one has finished, and records the
    results it finds finished, never waiting for one while training goes on.

    Args:
      plan: the validated settings.
      bookkeeping: the run's ``Run`` (where results are recorded).
      version: the params version training starts from.
      resume_step: the checkpoint a resumed run continues from (0: none), for new seeds.
      statistics_actor: a rollout actor whose observation statistics each evaluation plays
        with (``--normalize-observations``), asked when the evaluation starts.
    """

    def __init__(self, plan, bookkeeping, version: int, resume_step: int = 0,
                 statistics_actor=None):
        run = plan.run
        # (a rollout actor, asked for its observation statistics at each evaluation)
        self.statistics_actor = statistics_actor if run.normalize_observations else None
        self.run, self.bookkeeping = run, bookkeeping
        self.actor = RayEvaluator.options(max_restarts=0).remote(plan.agent, plan.agent_config, run)
        self.schedule = EvalSchedule(run, version, time.time())
        self._seed = eval_seed(run, resume_step)
        self._pending = None  # (ObjectRef of the result, env steps when its params were taken)
        self.last_version: int | None = None
        self.failed = False

    def _start(self, version: int, params, env_steps: int) -> None:
        # ``params`` may be an ObjectRef (the params the actors were given): Ray resolves it
        # in the evaluator, and nothing is copied here.
        box = ([] if self.statistics_actor is None
               else [self.statistics_actor.observation_statistics.remote()])
        self._pending = (self.actor.evaluate_boxed.remote(version, params, self._seed, box),
                         env_steps)
        self._seed = (self._seed + self.run.eval_episodes) % 2**31
        self.schedule.started(version, time.time())

    def _take(self, ref, env_steps: int) -> None:
        self._pending = None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as e:  # the evaluator failed: training goes on
            console.warn(f"evaluation failed, no more evaluations in this run: "
                         f"{str(e).strip().splitlines()[-1]}")
            self.failed = True
            return
        self.last_version = result["version"]
        self.bookkeeping.evaluated(result["version"], env_steps, result["returns"])

    def step(self, version: int, latest_params) -> None:
        """Between updates: records a finished evaluation; starts one if due and none is
        running. ``latest_params()`` gives ``(version, params or ObjectRef)``: the newest
        params the actors have."""
        if self.failed:
            return
        if self._pending is not None:
            ready, _ = ray.wait([self._pending[0]], timeout=0)
            if ready:
                self._take(*self._pending)
        if self._pending is None and not self.failed and self.schedule.due(version, time.time()):
            params_version, params = latest_params()
            self._start(params_version, params, self.bookkeeping.env_steps)

    def finish(self, version: int, host_params, final: bool = True) -> None:
        """Training is over: waits for the running evaluation and, with ``final``, evaluates
        the final params unless they were just evaluated."""
        if self._pending is not None:
            self._take(*self._pending)
        if final and not self.failed and self.last_version != version:
            self._start(version, ray.put(host_params), self.bookkeeping.env_steps)
            self._take(*self._pending)
        ray.kill(self.actor)


class JaxEvaluation:
    """Anakin mode's evaluation: compiled once at the start, run between training calls
    when due (on the learner's devices; training waits for it, as for a checkpoint).

    Args:
      plan: the validated settings (an Anakin plan: ``plan.jax_env``).
      bookkeeping: the run's ``Run``.
      params: the params as training holds them (for their shapes and placement).
      version: the params version training starts from.
      resume_step: the checkpoint a resumed run continues from (0: none).
    """

    def __init__(self, plan, bookkeeping, params, version: int, resume_step: int = 0):
        run = plan.run
        self.run, self.bookkeeping = run, bookkeeping
        evaluate = make_jax_evaluation(plan.fns, plan.jax_env, plan.spec, run.eval_episodes,
                                       run.eval_policy == "greedy")
        self._evaluate = jax.jit(evaluate).lower(params, jnp.int32(0)).compile()
        self.schedule = EvalSchedule(run, version, time.time())
        self._seed = eval_seed(run, resume_step)
        self.last_version: int | None = None
        self._warned = False

    def evaluate(self, version: int, params) -> None:
        """Plays the episodes with ``params`` (version ``version``) and records them."""
        self.schedule.started(version, time.time())
        returns, lengths, ended = devices.to_host(self._evaluate(params, jnp.int32(self._seed)))
        self._seed = (self._seed + self.run.eval_episodes) % 2**31
        if not np.all(ended) and not self._warned:
            console.warn(f"evaluation: {int((~ended).sum())} episode(s) had not ended after "
                         f"{MAX_EVAL_STEPS:,} steps; counted as they stood")
            self._warned = True
        self.last_version = version
        self.bookkeeping.evaluated(version, self.bookkeeping.env_steps, list(returns))

    def step(self, version: int, params) -> None:
        if self.schedule.due(version, time.time()):
            self.evaluate(version, params)

    def finish(self, version: int, params, final: bool = True) -> None:
        if final and self.last_version != version:
            self.evaluate(version, params)
