"""One trial of ``rltpu sweep`` as a Ray Tune ``Trainable``: an ordinary rltpu run, in a
thread of the trial's actor, that hands Tune each metrics row.

A class trainable rather than a function one, for a clean stop: when Tune ends a trial
(ASHA, or the sweep interrupted) it calls ``cleanup`` and then removes the actor. A
function trainable's thread is left to die with its actor mid-update; here ``cleanup``
asks the run to stop (``rltpu.run.RowHook``), which saves a final checkpoint and writes
``summary.json``, and waits for it. So every trial's directory can be evaluated, plotted
and resumed, whatever ended it.

The run reuses the trial actor's Ray (``rltpu.cluster.connect`` joins it): its rollout
actors land in the trial's placement group, which Tune captures child actors in.
"""
from __future__ import annotations

import os
import queue
import threading
import time

from ray import tune

from rltpu import cluster, console
from rltpu.sweeps import METRICS, SWEEP_STOP, trial_result


class SweepTrial(tune.Trainable):
    """Trains the trial ``config["trial"]`` (``rltpu.sweeps._run_tune`` makes it) in its
    run directory: afresh, resumed from its newest checkpoint, or, when the run finished
    already (a restored sweep whose state predates the finish), not at all."""

    def setup(self, config: dict) -> None:
        cluster.unblock_sigterm()
        trial = config["trial"]
        self._metric_column = trial["metric"]
        self._rows: queue.Queue = queue.Queue()
        self._pending: tuple | None = None
        self._stop_reason: str | None = None
        self._last: dict = {}
        self._thread = None
        run_dir = self._run_dir = trial["run_dir"]
        metric = next(name for name, column in METRICS.items() if column == trial["metric"])
        done = trial_result(run_dir, metric) if os.path.isdir(run_dir) else None
        if done is not None and done["finished"]:
            self._rows.put(("end", None))  # nothing to run: report its end at once
            self._last = self._tune_row({"env_steps": done["env_steps"],
                                         trial["metric"]: done["value"]})
            return
        plan, restored = _plan(trial)
        self._thread = threading.Thread(target=self._train, args=(plan, restored),
                                        name=f"rltpu-trial-{trial['index']}", daemon=True)
        self._thread.start()

    def _train(self, plan, restored) -> None:
        from rltpu.run import train_plan
        try:
            self._rows.put(("end", train_plan(plan, quiet=True, resume=restored,
                                              on_row=self._on_row)))
        except BaseException as e:  # noqa: BLE001 -- handed to step(), which raises it in Tune
            self._rows.put(("error", e))

    def _on_row(self, row: dict) -> str | None:
        self._rows.put(("row", row))
        return self._stop_reason

    def _tune_row(self, row: dict) -> dict:
        """What Tune gets of a metrics row: its numbers, and the sweep's metric under its
        SPEC name (left out while no episode has finished, so ASHA never compares a None)."""
        result = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "done"}
        value = row.get(self._metric_column)
        for name, column in METRICS.items():
            if column == self._metric_column and value is not None:
                result[name] = value
        return result

    def step(self) -> dict:
        kind, item = self._pending or self._rows.get()
        self._pending = None
        if kind == "row":
            # Tune may fall behind the rows (each result costs it time, more on a busy
            # machine): it gets the newest, so ASHA decides on where the run is now.
            while True:
                try:
                    newer = self._rows.get_nowait()
                except queue.Empty:
                    break
                if newer[0] != "row":
                    self._pending = newer  # the end (or an error) comes with the next step
                    break
                item = newer[1]
            self._last = self._tune_row(item)
            return dict(self._last)
        if kind == "error":
            raise item
        return {**self._last, "done": True}

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        # Tune saves a trial as it ends; the run's own checkpoints (in its run directory)
        # are what a trial resumes from, so Tune's keeps only where they are.
        return {"run_dir": self._run_dir}

    def load_checkpoint(self, checkpoint: dict) -> None:
        pass  # setup() already resumed the run directory from its newest checkpoint

    def cleanup(self) -> None:
        # Tune ends this trial: stop the run at its next metrics row (a final checkpoint and
        # summary.json, as SIGTERM would) and wait, so the actor is removed only after.
        if self._thread is not None and self._thread.is_alive():
            self._stop_reason = SWEEP_STOP
            self._thread.join()


def _plan(trial: dict):
    """The trial's validated plan and, when its run directory has a checkpoint, the
    checkpoint it resumes from. A directory without a usable one is set aside (renamed,
    never deleted) and the trial starts afresh."""
    from rltpu import agents, checkpoint, cli
    from rltpu.config import RunConfig
    from rltpu.plan import validate
    agent = agents.get(trial["agent"])
    settings = {**trial["settings"], "run_dir": trial["run_dir"], "agent": trial["agent"]}
    run, agent_config = cli._build(RunConfig, settings), cli._build(agent.Config, settings)
    run_dir = run.run_dir
    if os.path.isdir(run_dir):
        plan = validate(agent, agent_config, run, resume=True)
        try:
            return plan, checkpoint.restore(run_dir, plan.fns.init)
        except checkpoint.CheckpointError as e:
            aside = f"{run_dir}.set-aside-{int(time.time())}"
            console.warn(f"trial {run_dir} cannot resume ({e}); it starts afresh, its old "
                         f"directory kept as {aside}")
            os.rename(run_dir, aside)
    return validate(agent, agent_config, run), None


def trial_dirname(trial) -> str:
    """Tune's folder of a trial (its own logs): ``trial-NNNN``, the index of its run."""
    return f"trial-{trial.config['trial']['index']:04d}"


class TrialProgress(tune.Callback):
    """One line on stderr as each trial ends."""

    def __init__(self, num_trials: int, quiet: bool = False):
        self.num_trials, self.quiet = num_trials, quiet

    def _say(self, trial, how: str) -> None:
        if self.quiet:
            return
        t = trial.config["trial"]
        values = ", ".join(f"{k}={v}" for k, v in t["values"].items())
        value = (trial.last_result or {}).get("return")
        console.say(f"trial {t['index'] + 1}/{self.num_trials} ({values}{', ' if values else ''}"
                    f"seed={t['seed']}) {how}"
                    + ("" if value is None else f": return {value:.4g}")
                    + f" at {(trial.last_result or {}).get('env_steps', 0):,} env steps")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(trial, "ended")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(trial, "failed (see its error in the Tune log above)")
