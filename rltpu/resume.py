"""Resuming a run: which settings may change, reading a run's saved settings, where the
run goes on from, and (on a pod) one host reading the checkpoint for all.

``rltpu train --resume RUN_DIR`` continues from the newest complete checkpoint with the
run's saved settings; only the fields in ``RESUMABLE_RUN_FIELDS`` may be given anew.
"""
from __future__ import annotations

import json
import time
from typing import Callable

import jax

from rltpu import checkpoint, console, devices, hosts, storage
from rltpu.checkpoint import CheckpointError

SKIPPED_DIR = "skipped-checkpoints"

# Run settings a resumed run may change; every other run setting and every agent setting
# must stay as saved (they shape the params, the batch or the data the agent learns from).
RESUMABLE_RUN_FIELDS = frozenset({
    "total_env_steps", "target_return", "log_every_s", "updates_per_call", "num_actors", "max_in_flight",
    "publish_every", "num_devices", "checkpoint_every_updates", "checkpoint_every_minutes",
    "keep_checkpoints", "keep_best", "max_actor_restarts", "max_nonfinite_updates",
    "env_backend", "compilation_cache"})  # (every Atari backend gives the same observations)


def restore_on_first_process(run_dir: str, init: Callable, step: int | None = None
                             ) -> checkpoint.Restored:
    """``checkpoint.restore`` by learner process 0 alone, its result given to every learner
    process: the other hosts of a pod need no copy of the run directory, which process 0
    writes. A collective (every process calls it); with one process it is ``restore``.

    Raises:
      ValueError (``CheckpointError`` in process 0): in every process, when process 0 finds
        no usable checkpoint.
    """
    if devices.process_count() == 1:
        return checkpoint.restore(run_dir, init, step)
    restored = None

    def read() -> dict:
        nonlocal restored
        restored = checkpoint.restore(run_dir, init, step)
        return {"step": restored.step, "counters": restored.counters, "config": restored.config,
                "path": restored.path, "skipped": list(restored.skipped)}
    meta = hosts.on_first_process(read)
    template, key_impl = checkpoint.state_template(init)
    state = hosts.tree_from_first_process(
        None if restored is None else checkpoint.host_state(restored.state), template)
    state = state._replace(key=jax.random.wrap_key_data(state.key, impl=key_impl))
    return checkpoint.Restored(meta["step"], state, meta["counters"], meta["config"],
                               meta["path"], tuple(meta["skipped"]))


def announce_resume(restored: checkpoint.Restored, params) -> None:
    """Tells stderr where a resumed run goes on from, with its params' digest (which the
    multi-host tests compare across hosts)."""
    console.say(f"resumed from {restored.path} (update {restored.step:,}, "
                f"{restored.counters.get('env_steps', 0):,} env steps; params sha256 "
                f"{checkpoint.params_digest(params)})")


def set_aside(run_dir: str, restored: checkpoint.Restored) -> None:
    """Clears the checkpoints skipped on resume out of the way of new saves: a save cut off
    mid-write is deleted (it never held a whole checkpoint); a complete-looking one that
    could not be read is moved to ``RUN_DIR/skipped-checkpoints`` (kept for inspection,
    never deleted)."""
    if not restored.skipped:
        return
    directory = checkpoint.checkpoint_dir(run_dir)
    incomplete = set(checkpoint.list_checkpoints(run_dir)[1])
    target = storage.join(run_dir, SKIPPED_DIR)
    for name in restored.skipped:
        if name in incomplete:
            storage.remove(storage.join(directory, name))
            console.say(f"deleted {storage.join(directory, name)} (a save cut off mid-write)")
            continue
        storage.makedirs(target, exist_ok=True)
        destination = storage.join(target, f"{name}-{int(time.time())}")
        storage.move(storage.join(directory, name), destination)
        console.say(f"moved unreadable checkpoint {name} to {destination}")


def read_run_config(run_dir: str, flag: str = "--resume") -> dict:
    """The run's ``config.json`` (``{"run", "agent"}``).

    Args:
      flag: how the user named ``run_dir``, for error messages.

    Raises:
      CheckpointError: ``run_dir`` is not a run directory.
    """
    path = storage.join(run_dir, "config.json")
    where = f"{flag} {run_dir}".strip()
    try:
        storage.check_path(run_dir, flag or "run directory")
        if not storage.isdir(run_dir):
            raise CheckpointError(f"{where}: no such run directory")
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 -- a bucket that cannot be reached
        raise CheckpointError(f"{where}: cannot read it ({storage.describe_error(e)})") from None
    try:
        config = json.loads(storage.read_text(path))
        config["run"], config["agent"]  # noqa: B018 -- both must be there
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: cannot read its config.json ({e})") from None
    return config


def resumed_values(saved: dict, given: dict, run_fields: set[str], agent_fields: set[str],
                   run_dir: str) -> tuple[dict, dict]:
    """Merges flags given on resume into the saved run and agent settings.

    Args:
      saved: the run's ``config.json``.
      given: the flags given on the command line (name -> parsed value).

    Returns:
      ``(run_values, agent_values)`` for the config dataclasses.

    Raises:
      CheckpointError: a flag would change a setting that cannot change on resume.
    """
    run_values = dict(saved["run"])
    agent_values = dict(saved["agent"])
    for name, value in given.items():
        if name in run_fields:
            old = run_values.get(name)
            if name == "run_dir" or (name not in RESUMABLE_RUN_FIELDS and _plain(value) != _plain(old)):
                raise CheckpointError(_refusal(name, old, value, run_dir))
            run_values[name] = value
        elif name in agent_fields and _plain(value) != _plain(agent_values.get(name)):
            raise CheckpointError(_refusal(name, agent_values.get(name), value, run_dir))
    run_values["run_dir"] = run_dir
    agent_values = {k: tuple(v) if isinstance(v, list) else v for k, v in agent_values.items()}
    return run_values, agent_values


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _refusal(name: str, old, new, run_dir: str) -> str:
    flag = "--" + name.replace("_", "-")
    if name == "run_dir":
        return f"{flag} cannot be given with --resume; the run continues in {run_dir}"
    old, new = (tuple(v) if isinstance(v, list) else v for v in (old, new))
    return (f"{flag} cannot change on --resume (saved {old!r}, got {new!r}); "
            "start a new run to change it")
