"""Writing checkpoints during a run (the layout and reading: ``rltpu.checkpoint``):
asynchronous orbax saves when due, keeping the newest and, optionally, the best.
"""
from __future__ import annotations

import logging
import os
import sys
import time

import jax
import orbax.checkpoint as ocp

from rltpu import storage
from rltpu.checkpoint import checkpoint_dir, host_state
from rltpu.config import RunConfig
from rltpu.types import TrainState


def _manager(run_dir: str, run: RunConfig) -> ocp.CheckpointManager:
    """Async saves; keeps the newest ``keep_checkpoints`` and, optionally, the best by mean
    return. Temporary folders of cut-off saves are left for resume to name and set aside."""
    policies = [ocp.checkpoint_managers.LatestN(run.keep_checkpoints)]
    if run.keep_best:
        policies.append(ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda m: m["mean_return"], n=1,
            keep_checkpoints_without_metrics=False))
    kwargs = {}
    if jax.process_count() > 1:
        # Only learner process 0 saves: the state is replicated and saved from host memory,
        # so its copy is the whole checkpoint, and the other hosts need no shared file
        # system. orbax then syncs process 0 with itself alone; the folder is made here
        # (orbax cannot create it for a subset of processes).
        storage.makedirs(checkpoint_dir(run_dir), exist_ok=True)
        kwargs["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={0})
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=True, create=jax.process_count() == 1,
        cleanup_tmp_directories=False, **kwargs)
    return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options,
                                 item_names=("state", "counters", "config"))


class Checkpointer:
    """Saves the learner's state asynchronously when due; keeps the newest (and best).

    Only the copy to host memory happens on the caller's thread; orbax writes the files in
    the background while training goes on.
    """

    def __init__(self, run_dir: str, run: RunConfig, config: dict):
        self.run_dir = run_dir
        self._every_updates = run.checkpoint_every_updates
        self._every_s = None if run.checkpoint_every_minutes is None else 60 * run.checkpoint_every_minutes
        self._config = config
        self._manager = _manager(run_dir, run)
        # orbax logs a failed background save with a page of traceback, then raises it at
        # the next save or wait, where it becomes one line (storage.WriteError)
        self._quiet = _DropOrbaxErrors()
        logging.getLogger("absl").addFilter(self._quiet)
        _drop_closed_loop_callbacks()
        self.last_step = self._manager.latest_step()
        self._checked = self.last_step or 0  # the step of the previous ``due`` call
        self._last_time = time.monotonic()

    def due(self, step: int) -> bool:
        """Whether to save at ``step``; call it after every update (or every Anakin call)."""
        previous, self._checked = self._checked, step
        if step == self.last_step:
            return False
        # Due when a multiple of the period was reached since the previous check (Anakin
        # mode advances several updates at a time, so it may step over the multiple itself).
        if (self._every_updates is not None
                and step // self._every_updates > previous // self._every_updates):
            return True
        return self._every_s is not None and time.monotonic() - self._last_time >= self._every_s

    def save(self, step: int, state: TrainState, counters: dict,
             mean_return: float | None) -> bool:
        """Starts saving ``state`` as checkpoint ``step``; False if that step already exists."""
        if step == self.last_step or step in self._manager.all_steps():
            return False
        metrics = None if mean_return is None else {"mean_return": float(mean_return)}
        # (orbax reports a failed background write at the next save or wait)
        with storage.writing(f"checkpoints in {checkpoint_dir(self.run_dir)}"):
            self._manager.save(step, metrics=metrics, args=ocp.args.Composite(
                state=ocp.args.StandardSave(host_state(state)),
                counters=ocp.args.JsonSave(counters),
                config=ocp.args.JsonSave(self._config)))
        self.last_step, self._last_time = step, time.monotonic()
        return True

    def wait(self) -> None:
        """Blocks until every save started has been written completely.

        Raises:
          storage.WriteError: a save failed (the checkpoints before it are intact).
        """
        with storage.writing(f"checkpoints in {checkpoint_dir(self.run_dir)}"):
            self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
        logging.getLogger("absl").removeFilter(self._quiet)


class _DropOrbaxErrors(logging.Filter):
    """Drops orbax's error records (its failed background saves), which the Checkpointer
    reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


def _drop_closed_loop_callbacks() -> None:
    """Silences one leftover of orbax's writer threads: after a failed save (and at exit)
    they post callbacks to orbax's event loop once it is closed, which Python reports as
    "Exception ignored ... RuntimeError: Event loop is closed" tracebacks, a page each,
    saying nothing the ``WriteError``'s one line does not. Every other unraisable error is
    reported as before."""
    previous = sys.unraisablehook
    if getattr(previous, "rltpu_drops_closed_loop", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.rltpu_drops_closed_loop = True
    sys.unraisablehook = hook


class NoCheckpoints:
    """What learner processes other than 0 have instead of a ``Checkpointer``."""

    last_step = None

    def due(self, step: int) -> bool:
        return False

    def save(self, *args) -> bool:
        return False

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass
