"""A run's lifecycle, the same in both modes: ``train`` validates and hands the plan to
Ray mode's (``rltpu.startup``, then ``rltpu.driver``'s loop) or Anakin mode's
(``rltpu.anakin_host``); each loop keeps its ``Run`` up to date, and the ``Run`` keeps the
run directory, the counters, the episode window, checkpoint timing, the metrics rows, the
final checkpoint and the summary.

A run directory holds ``config.json`` (the settings), ``metrics.jsonl`` (one row per log
interval, appended to on resume), TensorBoard events, ``checkpoints/`` and, at the end,
``summary.json``. Only learner process 0 writes it; it may be local or in Cloud Storage
(``gs://``; every read and write goes through ``rltpu.storage``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from rltpu import checkpoint, checkpointer, devices, provenance, sinks, storage
from rltpu.agent import Agent
from rltpu.config import RunConfig
from rltpu.faults import StopRequest
from rltpu.metrics import EpisodeWindow, MemoryMonitor, write_json
from rltpu.plan import Plan, validate
from rltpu.validation import NonFiniteGuard, NonFiniteUpdatesError

RowHook = Callable[[dict], "str | None"]
"""Called with each metrics row as it is written (learner process 0 only); a string it
returns stops the run as SIGTERM does (after the current update, with a final checkpoint),
and becomes the summary's ``stopped_by``. ``rltpu sweep`` reports rows to Ray Tune with it."""


def train(agent: Agent, agent_config: Any, run: RunConfig, quiet: bool = False,
          resume: checkpoint.Restored | None = None, on_row: RowHook | None = None) -> dict:
    """Trains ``agent`` with rollout actors on Ray and a learner on this process's devices,
    or, with ``run.mode == "anakin"``, in one compiled program.

    Stops when the mean return of the last 20 finished training episodes reaches
    ``run.target_return``, after ``run.total_env_steps``, or on SIGTERM/SIGINT (after the
    current update; ``summary["stopped_by"]`` names the signal). Writes the run directory
    (see the module's doc; always a checkpoint at the end) and returns the summary.

    Args:
      resume: a checkpoint of ``run.run_dir`` (``checkpoint.restore``) to continue from.
      on_row: called with each metrics row; may stop the run (``RowHook``).

    Raises:
      ValueError: a bad setting (``rltpu.plan.validate``), before anything starts.
    """
    return train_plan(validate(agent, agent_config, run, resume=resume is not None), quiet, resume,
                      on_row)


def train_plan(plan: Plan, quiet: bool = False, resume: checkpoint.Restored | None = None,
               on_row: RowHook | None = None) -> dict:
    """``train`` for settings already validated (the CLI validates before it restores);
    releases the run directory's lock when the run ends."""
    try:
        devices.use_compilation_cache(plan.run.compilation_cache)
        if plan.run.mode == "anakin":
            from rltpu import anakin_host
            return anakin_host.train(plan, quiet, resume, on_row)
        from rltpu import startup
        return startup.train(plan, quiet, resume, on_row)
    finally:
        if plan.run_dir_lock is not None:
            plan.run_dir_lock.release()


def counters(version: int, env_steps: int, samples: int, episodes: EpisodeWindow,
             faults: dict) -> dict:
    """What a checkpoint keeps to resume a run's counting from (``Restored.counters``)."""
    return {"learner_updates": version, "env_steps": env_steps, "episodes": episodes.count,
            "recent_returns": list(episodes.returns), "samples": samples, **faults}


class Run:
    """The bookkeeping of one leg of a run (a resumed run goes on counting from its
    checkpoint's counters).

    Args:
      plan: the validated settings.
      resume: the checkpoint this leg continues from.
      t_start: when the run started (``metrics.run_start_time``).
      loop_faults: the loop's own fault counts (``actor_restarts``, ``dropped_unrolls``,
        ``rejected_unrolls``) so far in this leg; skipped updates are counted here.
      primary: whether this process writes the run directory (learner process 0).
      quiet: no progress lines.
      stop: the loop's stop request, which a reason ``on_row`` returns sets.
      on_row: called with each metrics row (``RowHook``).
    """

    def __init__(self, plan: Plan, resume: checkpoint.Restored | None, t_start: float,
                 loop_faults: Callable[[], dict], primary: bool = True, quiet: bool = False,
                 stop: StopRequest | None = None, on_row: RowHook | None = None):
        if on_row is not None and stop is None:
            raise ValueError("a metrics-row hook needs the loop's stop request")
        self.plan, self.t_start, self._loop_faults = plan, t_start, loop_faults
        self._stop, self._on_row = stop, on_row
        self._resumed = {} if resume is None else resume.counters
        self.resumed_from = None if resume is None else resume.step
        run = plan.run
        if primary:
            config = plan.config()
            self.checkpoints = checkpointer.Checkpointer(plan.run_dir, run, config)
            from rltpu import hosts
            if hosts.watchdog() is not None:  # a lost peer ends the run: finish a write first
                hosts.watchdog().before_exit(self.checkpoints.wait)
            self._writer = sinks.MetricSinks(plan.run_dir, run.total_env_steps, config, run.wandb,
                                             quiet)
            if resume is not None:
                # Marks where this leg goes on from: the rows after an older checkpoint's
                # update repeat env steps, and ``rltpu plot`` drops the ones they replace.
                self._writer.jsonl.write({
                    "resumed_from_update": resume.step,
                    "env_steps": resume.counters.get("env_steps", 0),
                    "time": time.time()})
        else:  # the params are the same everywhere: process 0's checkpoints and metrics suffice
            self.checkpoints, self._writer = checkpointer.NoCheckpoints(), None
        self.nonfinite = NonFiniteGuard(run.max_nonfinite_updates)
        self.episodes = EpisodeWindow.resumed(self._resumed)
        self.env_steps = self._resumed.get("env_steps", 0)
        self.samples = self._resumed.get("samples", 0)
        self._leg_start = (self.env_steps, self.samples)
        self.memory = MemoryMonitor()
        self.time_to_target: float | None = None
        self.startup_s = self.t_train = self.t_end = None
        self._last_log, self._interval_steps = None, 0
        # Frozen at the final row: Ray may count a restart of an actor killed as the run ends
        # after it, and the final row, checkpoint and summary should say the same.
        self._final_faults: dict | None = None
        self.final_eval_return: float | None = None
        self.best_eval_return: float | None = None
        # --normalize-observations, --normalize-rewards: the actors' shared statistics by
        # name (``SharedStatistics.state``), which checkpoints keep
        self.shared_statistics: Callable[[], dict] = dict

    def started(self) -> None:
        """Start-up is over (the first batch is in, or the program compiled)."""
        self.t_train = self._last_log = time.time()
        self.startup_s = self.t_train - self.t_start

    def faults(self) -> dict:
        """Fault counts of the whole run (earlier legs included); from the final row on, the
        counts that row has."""
        if self._final_faults is not None:
            return self._final_faults
        leg = {**self._loop_faults(), "skipped_updates": self.nonfinite.skipped}
        return {k: v + self._resumed.get(k, 0) for k, v in leg.items()}

    def counters(self, version: int) -> dict:
        return {**counters(version, self.env_steps, self.samples, self.episodes, self.faults()),
                **self.shared_statistics()}

    def update_skipped(self, skipped: bool, version: int) -> None:
        """Counts a skipped update.

        Raises:
          NonFiniteUpdatesError: too many in a row (the last checkpoint is complete on disk).
        """
        try:
            self.nonfinite.record(skipped, version)
        except NonFiniteUpdatesError:
            self.checkpoints.wait()
            raise

    def record(self, env_steps: int, episode_returns, samples: int,
               episodes: int | None = None) -> None:
        """Counts what one update consumed: its env steps, the returns of the episodes that
        ended in it (``episodes`` of them if more ended than returns are given) and its samples."""
        self.env_steps += env_steps
        self._interval_steps += env_steps
        self.samples += samples
        self.episodes.add(episode_returns)
        if episodes is not None:
            self.episodes.count += episodes - len(episode_returns)
        if self.reached and self.time_to_target is None:
            self.time_to_target = time.time() - self.t_start

    @property
    def reached(self) -> bool:
        """The mean return of the last 20 episodes reached the target."""
        target = self.plan.run.target_return
        return target is not None and self.episodes.full and self.episodes.mean >= target

    @property
    def out_of_steps(self) -> bool:
        return self.env_steps >= self.plan.run.total_env_steps

    def checkpoint_if_due(self, version: int, state) -> None:
        if self.checkpoints.due(version):
            self.checkpoints.save(version, state, self.counters(version), self.episodes.mean)
            if self._writer is not None:
                self._writer.sync()  # the rows up to the checkpoint survive with it

    def log(self, version: int, final: bool, extras: Callable[[float], dict]) -> bool:
        """Writes a metrics row if one is due (always the loop's ``final`` one, whose fault
        counts are the run's from then on); ``extras(interval_s)`` adds the loop's own
        columns. Returns whether it wrote one."""
        now = time.time()
        if final:
            self._final_faults = self.faults()
        if self._writer is None or not (final or now - self._last_log >= self.plan.run.log_every_s):
            return False
        interval = now - self._last_log
        row = {"time_s": now - self.t_start, "env_steps": self.env_steps,
               "env_sps": self._interval_steps / max(interval, 1e-9),
               "mean_return": self.episodes.mean, "episodes": self.episodes.count,
               "learner_updates": version, "rss_mb": self.memory.sample(),
               **self.faults(), **extras(interval)}
        self._writer.write(row)
        self._last_log, self._interval_steps = now, 0
        if self._on_row is not None:
            reason = self._on_row(row)
            if reason is not None:
                self._stop.request(reason)
        return True

    def evaluated(self, version: int, env_steps: int, returns) -> None:
        """Records an evaluation (``rltpu.evaluation``) of params ``version``, taken at
        ``env_steps``: a metrics row of its own, whose ``env_steps`` is the count now (so
        every sink sees steps that never go back) and ``eval/env_steps`` the params'."""
        mean = float(np.mean(returns))
        self.final_eval_return = mean
        self.best_eval_return = mean if self.best_eval_return is None else max(
            self.best_eval_return, mean)
        if self._writer is not None:
            self._writer.write({"time_s": time.time() - self.t_start, "env_steps": self.env_steps,
                                "eval/return": mean, "eval/return_std": float(np.std(returns)),
                                "eval/episodes": len(returns), "eval/learner_updates": version,
                                "eval/env_steps": env_steps})

    def end(self, version: int, state) -> None:
        """Training is over: saves the final checkpoint, complete on disk when this returns."""
        self.t_end = time.time()
        self.checkpoints.save(version, state, self.counters(version), self.episodes.mean)
        self.checkpoints.wait()
        self.checkpoints.close()
        self.memory.sample()

    @property
    def train_s(self) -> float:
        return self.t_end - self.t_train

    @property
    def leg_env_steps(self) -> int:
        """Env steps of this leg (since the resume)."""
        return self.env_steps - self._leg_start[0]

    def summary(self, version: int, stopped_by: str | None, fields: dict) -> dict:
        """The run's summary: what both modes report, then the loop's own ``fields``;
        process 0 writes it to ``summary.json`` and the metric sinks."""
        plan = self.plan
        last = self.checkpoints.last_step
        summary = {
            "agent": plan.agent.name, "env": plan.run.env, "seed": plan.run.seed,
            "mode": plan.run.mode, "num_devices": plan.num_devices, "platform": devices.platform(),
            "env_steps": self.env_steps, "wall_s": self.t_end - self.t_start,
            "startup_s": self.startup_s, "time_to_target_s": self.time_to_target,
            "target_return": plan.run.target_return, "final_return": self.episodes.mean,
            "final_eval_return": self.final_eval_return, "best_eval_return": self.best_eval_return,
            "episodes": self.episodes.count, "env_sps": self.leg_env_steps / self.train_s,
            "learner_updates": version,
            "learner_samples_per_s": (self.samples - self._leg_start[1]) / self.train_s,
            "peak_rss_mb": self.memory.peak_mb, "run_dir": plan.run_dir, **self.faults(),
            "resumed_from_update": self.resumed_from, "stopped_by": stopped_by,
            "provenance": provenance(),
            "checkpoint": None if last is None else storage.join(
                checkpoint.checkpoint_dir(plan.run_dir), str(last)),
            **fields}
        if self._writer is not None:
            write_json(storage.join(plan.run_dir, "summary.json"), summary)
            self._writer.close(summary)
        return summary
