"""Resuming a run: which settings may change, reading a run's saved settings, where the
run goes on from, and (on a pod) one host reading the checkpoint for all.

``rltpu train --resume RUN_DIR`` continues from the newest complete checkpoint with the
run's saved settings; only the fields in ``RESUMABLE_RUN_FIELDS`` may be given anew.
"""
from __future__ import annotations

import dataclasses
import json
import time
import types
import typing
from typing import Callable

import jax

from rltpu import checkpoint, console, devices, hosts, storage
from rltpu.checkpoint import CheckpointError

SKIPPED_DIR = "skipped-checkpoints"

# Run settings a resumed run may change; every other run setting and every agent setting
# must stay as saved (they shape the params, the batch or the data the agent learns from).
RESUMABLE_RUN_FIELDS = frozenset({
    "total_env_steps", "target_return", "log_every_s", "updates_per_call", "num_actors",
    "oversubscribe", "max_in_flight",
    "publish_every", "num_devices", "checkpoint_every_updates", "checkpoint_every_minutes",
    "keep_checkpoints", "keep_best", "max_actor_restarts", "max_nonfinite_updates",
    "env_backend", "compilation_cache",
    "eval_every_updates", "eval_every_s", "eval_episodes", "eval_policy"})  # (every Atari backend gives the same observations)


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
    """The run's ``config.json`` (``{"run", "agent"}``), checked for shape: both objects,
    the run's ``agent`` and ``env`` strings (the values' types are checked against the
    settings' by ``check_saved_settings``).

    Args:
      flag: how the user named ``run_dir``, for error messages.

    Raises:
      CheckpointError: ``run_dir`` is not a run directory or its config.json is not one's.
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
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot read its config.json ({_one_line(e)})") from None
    if not (isinstance(config, dict) and isinstance(config.get("run"), dict)
            and isinstance(config.get("agent"), dict)
            and all(isinstance(config["run"].get(k), str) for k in ("agent", "env"))):
        raise CheckpointError(f"{where}: its config.json is not a run's settings (an object "
                              'with "run" and "agent" objects, the run naming its agent and env)')
    return config


TRUST_FLAG = "--trust-run-code"


def check_run_code(config: dict, where: str, agent: str | None = None, env: str | None = None,
                   trust: bool = False) -> None:
    """Refuses code that a run directory's ``config.json`` would have rltpu import.

    A run directory is data (it may come from anyone): from it rltpu takes only built-in
    agents (``rltpu.agents.BUILTIN`` or a ``rltpu.agents...:Class`` path), registered
    gymnasium ids, JAX envs (``gymnax:NAME``) and ``rltpu.envs...:Class`` paths. An agent or env given there as ``module:Class`` is imported only
    when the user names the same value on the command line (``agent``, ``env``) or passes
    ``--trust-run-code`` (``trust``).

    Raises:
      CheckpointError: naming the value and how to allow it.
    """
    from rltpu.agents import BUILTIN
    from rltpu.envs import jax_envs
    saved_agent, saved_env = config["run"]["agent"], config["run"]["env"]
    for what, value, given, builtin in (
            ("agent", saved_agent, agent,
             saved_agent in BUILTIN or _in_package(saved_agent, "rltpu.agents")),
            ("env", saved_env, env, ":" not in saved_env or jax_envs.is_jax_env(saved_env)
             or _in_package(saved_env, "rltpu.envs"))):
        if not (builtin or trust or given == value):
            raise CheckpointError(
                f"{where}: its config.json names {what} {value!r}, code from outside rltpu, "
                f"which a run directory cannot choose; if you trust that code, name it again "
                f"(--{what} {value}) or pass {TRUST_FLAG}")


def _in_package(path: str, package: str) -> bool:
    """Whether ``module:Class`` names a module of rltpu's own ``package`` (which Python finds
    only in the installed package's folder, never beside a run directory)."""
    module = path.split(":", 1)[0]
    return ":" in path and (module == package or module.startswith(package + "."))


def check_saved_settings(config: dict, agent_config_cls: type, where: str) -> None:
    """Checks the types of a run's saved settings against ``RunConfig``'s and the agent
    config's fields (a hand-edited or damaged config.json fails here, in one line, rather
    than deep inside the agent). Unknown names are ignored, as when the run is built.

    Raises:
      CheckpointError: naming the setting, its value and the type it needs.
    """
    from rltpu.config import RunConfig
    for cls, values in ((RunConfig, config["run"]), (agent_config_cls, config["agent"])):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.name in values and not _fits(values[field.name], hints[field.name]):
                raise CheckpointError(
                    f"{where}: its config.json has {field.name} = {values[field.name]!r:.60}, "
                    f"not a {_type_name(hints[field.name])}")


def _fits(value, kind) -> bool:
    """Whether a JSON value fits a config field's type."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True  # a type config.json cannot hold: the config's own checks decide


def _type_name(kind) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


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
