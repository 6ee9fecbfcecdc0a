"""Settings read from files: ``rltpu train --config FILE`` and ``rltpu train --preset FILE``.

A config file has the shape of a run's ``config.json``::

    {"run": {"env": "CartPole-v1", "num_actors": 4}, "agent": {"learning_rate": 0.001}}

(JSON, YAML or TOML, by its suffix), so a run's own ``config.json`` passed back repeats the
run. A preset file has the shape of the built-in presets (``rltpu.agents.presets.Preset``):
``{"agent": "impala", "run": {...}, "agent_config": {...}, "source": "...",
"deviations": [...]}``.

The values become flags (``to_flags``), which the CLI parses like the ones typed: a value a
flag would refuse, the file's value is refused the same way.

A file is data: it never decides what code is imported. A ``module:Class`` agent or env in
one is used only when the same value is also given as ``--agent`` or ``--env``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Any, Iterable, Mapping

SUFFIXES = (".json", ".yaml", ".yml", ".toml")
CONFIG_SECTIONS = ("run", "agent")
#: Top-level keys of config.json that describe the run rather than set it (versions,
#: commit); a config file may hold them and they are not used.
RECORD_KEYS = ("provenance",)
#: Settings a file does not apply: a run's directory is chosen per run (--run-dir, or a
#: new folder under runs/), so that a run's config.json passed back starts a new run.
NOT_FROM_FILES = ("run_dir",)
PRESET_KEYS = ("agent", "run", "agent_config", "source", "deviations")


def read(path: str, flag: str) -> dict[str, Any]:
    """The mapping in a JSON, YAML or TOML file (by its suffix).

    Args:
      flag: the flag that named the file, for error messages.

    Raises:
      ValueError: the file is missing, of another kind, not parseable or not a mapping.
    """
    where = f"{flag} {path}"
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{where}: not a config file; valid suffixes: {', '.join(SUFFIXES)}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror or e})") from None
    try:
        if suffix == ".json":
            data = json.loads(raw)
        elif suffix == ".toml":
            import tomllib
            data = tomllib.loads(raw.decode())
        else:
            import yaml  # PyYAML: a dependency of rltpu (and of Ray)
            data = yaml.safe_load(raw)
    except Exception as e:  # noqa: BLE001 -- each parser has its own error types
        message = " ".join(str(e).split())  # one line
        raise ValueError(f"{where}: not valid {suffix[1:].upper()} ({message})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: holds a {type(data).__name__}, not a mapping of settings")
    return data


def read_config(path: str) -> dict[str, dict[str, Any]]:
    """``{"run": {...}, "agent": {...}}`` from a config file (either section may be absent).

    Raises:
      ValueError: as ``read``, or a key other than the sections (and config.json's record
        of the run), or a section that is not a mapping.
    """
    data = read(path, "--config")
    check_keys(f"--config {path}", data, CONFIG_SECTIONS + RECORD_KEYS)
    sections = {}
    for name in CONFIG_SECTIONS:
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise ValueError(f"--config {path}: {name!r} holds a {type(section).__name__}, "
                             "not a mapping of settings")
        sections[name] = section
    return sections


def is_file(name: str) -> bool:
    """Whether a ``--preset`` value names a file rather than a built-in preset."""
    return name.lower().endswith(SUFFIXES) or os.sep in name


def read_preset(path: str):
    """A ``rltpu.agents.presets.Preset`` from a file of the same shape.

    Raises:
      ValueError: as ``read``, or an unknown or missing key, or a value of the wrong kind.
    """
    from rltpu.agents.presets import Preset
    where = f"--preset {path}"
    data = read(path, "--preset")
    check_keys(where, data, PRESET_KEYS)
    if not isinstance(data.get("agent"), str):
        raise ValueError(f"{where}: needs 'agent', the name of the agent it is for")
    for name in ("run", "agent_config"):
        if not isinstance(data.get(name, {}), dict):
            raise ValueError(f"{where}: {name!r} holds a {type(data[name]).__name__}, not a "
                             "mapping of settings")
    deviations = data.get("deviations", [])
    if not isinstance(deviations, list):
        raise ValueError(f"{where}: 'deviations' is not a list")
    return Preset(agent=data["agent"], run=data.get("run", {}),
                  agent_config=data.get("agent_config", {}),
                  source=str(data.get("source", path)), deviations=tuple(map(str, deviations)))


def check_keys(where: str, values: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raises ValueError naming the first key of ``values`` not in ``valid``, with the
    nearest valid one."""
    valid = list(valid)
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"
            raise ValueError(f"{where}: unknown key {key!r}{hint}")


def check_fields(where: str, values: Mapping[str, Any], cls) -> None:
    """Raises ValueError naming the first key of ``values`` that is no field of the
    dataclass ``cls``."""
    check_keys(where, values, [f.name for f in dataclasses.fields(cls)])


def check_no_code(where: str, run_values: Mapping[str, Any], agent_flag: str | None,
                  env_flag: str | None, builtin_agents: Iterable[str]) -> None:
    """Raises ValueError if a file names an agent or env by a module path that the command
    line does not name too: importing it would run code chosen by the file.

    Args:
      run_values: the file's run settings.
      agent_flag, env_flag: ``--agent`` and ``--env`` as given (None: not given).
      builtin_agents: the built-in agents' names.
    """
    from rltpu.envs.jax_envs import is_jax_env
    agent, env = run_values.get("agent"), run_values.get("env")
    if agent is not None and agent not in builtin_agents and agent != agent_flag:
        raise ValueError(f"{where}: agent {agent!r} is not a built-in agent; a file never "
                         f"decides what code is imported: pass --agent {agent} to use it")
    if (isinstance(env, str) and ":" in env and not is_jax_env(env) and env != env_flag):
        raise ValueError(f"{where}: env {env!r} is a module path; a file never decides what "
                         f"code is imported: pass --env {env} to use it")


def to_flags(values: Mapping[str, Any]) -> list[str]:
    """Command-line flags that set ``values`` (field name -> value as JSON/YAML/TOML gives
    it): ``--name=value``, ``--flag``/``--no-flag`` for booleans, several words for lists,
    ``none`` for None, JSON for a mapping (``env_kwargs``)."""
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(_word, value)] if value else [f"{flag}="]
        else:
            flags.append(f"{flag}={_word(value)}")
    return flags


def _word(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)
