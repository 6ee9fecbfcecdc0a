"""``rltpu sweep SPEC``: a family of runs (a grid, random draws, many seeds) as Ray Tune
trials, each an ordinary run directory.

A SPEC (YAML, JSON or TOML, or a dict from Python) names the settings every trial shares,
the fields that vary and how, the seeds, and what to optimise::

    base: {env: CartPole-v1, total_env_steps: 60000, target_return: null}
    space:
      learning_rate: {grid: [0.001, 0.005]}
      entropy_cost: {grid: [0.0, 0.01]}
    seeds: [0, 1]
    metric: return
    mode: max

Every configuration (a point of the grid, times ``num_samples`` draws of the random
dimensions) runs once per seed. The draws are made here, once, from ``search_seed``, so all
seeds of a configuration share its values and the sweep's trials are known before it
starts: Tune runs the list (queueing trials for their CPUs and devices, stopping bad ones
with ASHA, restoring an interrupted sweep), this module builds it and reads the results.

A sweep directory holds ``sweep.json`` (the validated SPEC and its trials), ``runs/`` (one
run directory per trial, readable by ``rltpu eval``, ``plot`` and ``train --resume``),
``tune/`` (Tune's own state, for ``--resume``), ``trials.csv`` and ``results.csv``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import itertools
import json
import math
import os
import signal
import threading
from typing import Any, Mapping, NamedTuple

SPEC_KEYS = ("base", "space", "seeds", "num_samples", "search_seed", "metric", "mode", "budget",
             "max_concurrent_trials", "scheduler")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
#: SPEC metric -> metrics-row column: the training return (mean of the last 20 training
#: episodes) or the evaluation return (``--eval-every-updates``/``--eval-every-s`` rows; the
#: default metric when the base evaluates).
METRICS = {"return": "mean_return", "eval_return": "eval/return"}
MODES = ("max", "min")
#: ``rltpu train`` flags that place a learner over several hosts: not per trial.
MULTI_HOST = ("distributed", "coordinator", "num_processes", "process_id", "learner_hosts",
              "learner_resources")
#: Base keys that name settings files (their settings are the base's starting point).
FILE_KEYS = ("config", "preset")
#: Fields the sweep sets itself.
NOT_IN_BASE = ("run_dir", "seed")
NOT_IN_SPACE = {"agent": "one agent per sweep (its fields are the space's)",
                "seed": "seeds are the SPEC's 'seeds'",
                "run_dir": "the sweep gives each trial its directory",
                "total_env_steps": "the budget is the same for every trial ('budget' or base)"}
SPEC_FILE = "sweep.json"
RUNS_DIR = "runs"
TUNE_DIR = "tune"
#: ``stopped_by`` of a trial's run that the sweep ended (ASHA, or the sweep interrupted).
SWEEP_STOP = "rltpu sweep"
SCHEDULERS = ("asha",)
TUNE_MISSING = ("rltpu sweep needs Ray Tune, which is not installed (pyarrow is missing): "
                "pip install 'rltpu[tune]'")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated SPEC and the trials it makes."""

    agent: str
    """The agent every trial trains (a built-in name, or a module path given from Python)."""
    base: dict
    """Run and agent settings every trial shares (field name -> value, as config.json has it)."""
    varied: tuple[str, ...]
    """The fields of the space, in the SPEC's order."""
    trials: tuple[dict, ...]
    """Each trial: ``{"index", "config" (its configuration's index), "values" (the varied
    fields' values), "seed"}``; the seeds of one configuration are adjacent."""
    metric: str
    """The SPEC's metric name (``return``)."""
    mode: str
    """``max`` or ``min``."""
    budget: int
    """Env steps per trial (``total_env_steps``)."""
    max_concurrent_trials: int | None
    """At most this many trials at once (None: as many as the resources allow)."""
    scheduler: dict | None
    """``{"name": "asha", "grace": env steps, "reduction": factor}`` or None."""
    spec: dict
    """The SPEC as given (for the record)."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Sweep":
        data = dict(data)
        data["varied"] = tuple(data["varied"])
        data["trials"] = tuple(data["trials"])
        return cls(**data)

    def trial_values(self, trial: dict) -> dict:
        """Every setting of ``trial`` (the base, its varied values, its seed and budget)."""
        return {**self.base, **trial["values"], "seed": trial["seed"],
                "total_env_steps": self.budget}

    def run_dir(self, sweep_dir: str, trial: dict) -> str:
        """The trial's run directory: ``SWEEP_DIR/runs/NNNN-field=value-...-seed=S``."""
        words = [f"{k}={_short(v)}" for k, v in trial["values"].items()] + [f"seed={trial['seed']}"]
        name = f"{trial['index']:04d}-" + "-".join(words)
        name = "".join(c if c.isalnum() or c in "=.-_" else "_" for c in name)[:120]
        return os.path.join(os.path.abspath(sweep_dir), RUNS_DIR, name)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- Reading and checking a SPEC (nothing starts) -----------------------------------------

class _ValueParser(argparse.ArgumentParser):
    """Parses settings as the ``rltpu train`` flags they stand for, raising ValueError."""

    error_prefix = ""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ValueError(self.error_prefix + message)


def _parser(agent) -> _ValueParser:
    from rltpu import cli
    from rltpu.config import RunConfig
    parser = _ValueParser(prog="rltpu sweep", add_help=False)
    cli._add_fields(parser, RunConfig, "run")
    cli._add_fields(parser, agent.Config, f"agent {agent.name}")
    return parser


def _parse(parser: _ValueParser, where: str, values: Mapping[str, Any]) -> dict:
    """``values`` checked and converted as their flags would be (``1e-3`` from YAML, a
    string there, becomes a float)."""
    from rltpu import configfile
    parser.error_prefix = f"{where}: "
    return vars(parser.parse_args(configfile.to_flags(values)))


def read_spec(path: str) -> dict:
    """The mapping in a SPEC file (JSON, YAML or TOML, by its suffix).

    Raises:
      ValueError: it cannot be read or is not a mapping.
    """
    from rltpu import configfile
    return configfile.read(path, "SPEC")


def load(spec: Mapping[str, Any], from_file: str | None = None) -> Sweep:
    """Checks a SPEC and makes its trials: every trial's settings are built as
    ``RunConfig`` and the agent's config, and the env and agent are checked once per
    configuration. Starts nothing.

    Args:
      from_file: the file the SPEC came from (None: a dict from Python). A file never
        decides what code is imported: its agent and env must be built-in ones.

    Raises:
      ValueError: one line naming the bad key or value and what is valid.
    """
    from rltpu import configfile
    where = f"SPEC {from_file}" if from_file else "SPEC"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: holds a {type(spec).__name__}, not a mapping")
    configfile.check_keys(where, spec, SPEC_KEYS)
    base = spec.get("base", {})
    agent, parser, fields, base_values = _read_base(where, base, from_file)
    search = _check_search(where, spec, base_values, fields)
    trials = _expand(where, agent, parser, base_values, search)
    base_values.pop("total_env_steps", None)
    record = dict(spec)
    if "config" in base:  # kept as read: --resume reads the SPEC from elsewhere
        record["base"] = {**base, "config": _config_path(base["config"], from_file)}
    return Sweep(agent=base_values["agent"], base=_plain(base_values), varied=tuple(search.dims),
                 trials=tuple(_plain(t) for t in trials), metric=search.metric,
                 mode=search.mode, budget=search.budget,
                 max_concurrent_trials=search.max_concurrent_trials,
                 scheduler=search.scheduler, spec=_plain(record))


def _read_base(where: str, base, from_file: str | None):
    """The SPEC's ``base``, checked: its agent, a parser of that agent's settings, the
    settings' field names, and the base's values (its files' first, then its own).

    Returns:
      ``(agent, parser, fields, base_values)``; ``base_values["agent"]`` names the agent.
    """
    from rltpu import agents, configfile
    from rltpu.config import RunConfig
    if not isinstance(base, Mapping):
        raise ValueError(f"{where}: 'base' holds a {type(base).__name__}, not a mapping of "
                         "settings")
    for key in MULTI_HOST:
        if key in base:
            raise ValueError(f"{where}: base {key!r}: a multi-host learner per trial is out of "
                             "scope of rltpu sweep (each trial's learner runs in one process)")
    for key in NOT_IN_BASE:
        if key in base:
            raise ValueError(f"{where}: base {key!r} is set by the sweep "
                             + ("(use 'seeds')" if key == "seed" else
                                "(each trial gets SWEEP_DIR/runs/NAME)"))
    start, agent_name = _files(where, base, from_file)
    given = {k: v for k, v in base.items() if k not in FILE_KEYS}
    agent_name = given.get("agent", agent_name) or "impala"
    if from_file:
        configfile.check_no_code(where, {**start, **given, "agent": agent_name}, None, None,
                                 agents.BUILTIN)
    try:
        agent = agents.get(agent_name)
    except ValueError as e:
        raise ValueError(f"{where}: base 'agent': {e}") from None
    fields = [f.name for f in dataclasses.fields(RunConfig)] + [
        f.name for f in dataclasses.fields(agent.Config)]
    configfile.check_keys(f"{where}: base", {k: v for k, v in given.items()},
                          fields + list(FILE_KEYS))
    parser = _parser(agent)
    base_values = {**_parse(parser, f"{where}: base", start),
                   **_parse(parser, f"{where}: base", given), "agent": agent_name}
    return agent, parser, fields, base_values


class _Search(NamedTuple):
    """A SPEC's search, checked (``_check_search``)."""

    dims: dict  # name -> (kind, values): what varies
    seeds: list  # every configuration runs once per seed
    num_samples: int  # draws of the random dimensions
    search_seed: int  # seeds those draws
    metric: str
    mode: str
    budget: int  # env steps per trial
    max_concurrent_trials: int | None
    scheduler: dict | None


def _check_search(where: str, spec: Mapping, base_values: dict, fields: list[str]) -> _Search:
    """The SPEC's space, seeds, samples, metric, mode, budget, concurrency and scheduler,
    each checked against the base's settings."""
    from rltpu.config import RunConfig
    dims = _dimensions(where, spec.get("space"), fields)
    seeds = _seeds(where, spec.get("seeds", [0]))
    num_samples = _positive_int(where, "num_samples", spec.get("num_samples", 1))
    random_dims = [name for name, (kind, _) in dims.items() if kind != "grid"]
    if num_samples > 1 and not random_dims:
        raise ValueError(f"{where}: num_samples {num_samples} would repeat the same "
                         "configurations (the space has no random dimension); use 'seeds' "
                         "for repeats")
    search_seed = spec.get("search_seed", 0)
    if not isinstance(search_seed, int) or isinstance(search_seed, bool):
        raise ValueError(f"{where}: search_seed must be an integer, got {search_seed!r}")
    evaluates = any(base_values.get(k) is not None
                    for k in ("eval_every_updates", "eval_every_s"))
    metric = spec.get("metric", "eval_return" if evaluates else "return")
    if metric not in METRICS:
        raise ValueError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)} (the "
                         "training return, or the evaluation return)")
    if metric == "eval_return" and not evaluates:
        raise ValueError(f"{where}: metric eval_return needs evaluation during training: set "
                         "eval_every_updates or eval_every_s in base")
    mode = spec.get("mode", "max")
    if mode not in MODES:
        raise ValueError(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
    budget = spec.get("budget", base_values.get("total_env_steps", RunConfig.total_env_steps))
    budget = _positive_int(where, "budget", budget)
    concurrent = spec.get("max_concurrent_trials")
    if concurrent is not None:
        concurrent = _positive_int(where, "max_concurrent_trials", concurrent)
    return _Search(dims, seeds, num_samples, search_seed, metric, mode, budget, concurrent,
                   _scheduler(where, spec.get("scheduler"), budget))


def _expand(where: str, agent, parser, base_values: dict, search: _Search) -> list[dict]:
    """The trials: every configuration of the space once per seed, each built as
    ``RunConfig`` and the agent's config; the env and agent are checked once per
    configuration (the seed changes nothing there)."""
    from rltpu.plan import check_env_and_agent
    trials, checked = [], set()
    for c, values in enumerate(_configurations(search.dims, search.num_samples,
                                               search.search_seed)):
        parsed = _parse(parser, f"{where}: configuration {describe(values)}", values)
        for seed in search.seeds:
            trial = {"index": len(trials), "config": c, "values": values, "seed": seed}
            settings = {**base_values, **parsed, "seed": seed, "total_env_steps": search.budget}
            run, agent_config = _configs(agent, settings, f"{where}: configuration "
                                         f"{describe({**values, 'seed': seed})}")
            key = json.dumps({**dataclasses.asdict(run), "seed": 0,
                              **dataclasses.asdict(agent_config)}, sort_keys=True, default=str)
            if key not in checked:
                try:
                    check_env_and_agent(agent, agent_config, run)
                except ValueError as e:
                    raise ValueError(f"{where}: configuration {describe(values)}: {e}") from None
                checked.add(key)
            trials.append(trial)
    return trials


def _config_path(path: str, from_file: str | None) -> str:
    """A base's ``config: FILE``, made absolute: relative to the SPEC file (or, for a SPEC
    from Python, to the working directory), as a reader of the SPEC expects."""
    base = os.path.dirname(os.path.abspath(from_file)) if from_file else os.getcwd()
    return os.path.join(base, os.path.expanduser(path))


def _files(where: str, base: Mapping, from_file: str | None) -> tuple[dict, str | None]:
    """The settings of the base's ``preset`` and ``config`` files (in that order) and the
    agent they name."""
    from rltpu import configfile
    from rltpu.agents import presets
    values: dict = {}
    agent = None
    if "preset" in base:
        name = base["preset"]
        preset = (configfile.read_preset(name) if configfile.is_file(name) else presets.get(name))
        values.update({**preset.run, **preset.agent_config})
        agent = preset.agent
    if "config" in base:
        configured = configfile.read_config(_config_path(base["config"], from_file))
        values.update({**configured["run"], **configured["agent"]})
        agent = configured["run"].get("agent", agent)
    for key in configfile.NOT_FROM_FILES + ("seed",):
        values.pop(key, None)
    values.pop("agent", None)
    return values, agent


def _dimensions(where: str, space, fields: list[str]) -> dict[str, tuple[str, Any]]:
    """``{field: (distribution, its arguments)}``, checked."""
    from rltpu import configfile
    if space is None:
        return {}
    if not isinstance(space, Mapping):
        raise ValueError(f"{where}: 'space' holds a {type(space).__name__}, not a mapping of "
                         "fields to distributions")
    if not space:
        raise ValueError(f"{where}: 'space' is empty; give at least one field (e.g. "
                         "learning_rate: {grid: [0.001, 0.005]}), or leave it out to run "
                         "only the seeds")
    configfile.check_keys(f"{where}: space", space, fields)
    dims = {}
    for name, dist in space.items():
        at = f"{where}: space {name!r}"
        if name in NOT_IN_SPACE:
            raise ValueError(f"{at} cannot vary: {NOT_IN_SPACE[name]}")
        if not isinstance(dist, Mapping) or len(dist) != 1:
            raise ValueError(f"{at} must be one distribution, e.g. {{grid: [1, 2]}}; valid: "
                             f"{', '.join(DISTRIBUTIONS)}")
        (kind, args), = dist.items()
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"{at}: unknown distribution {kind!r}; valid: "
                             f"{', '.join(DISTRIBUTIONS)}")
        if not isinstance(args, list):
            raise ValueError(f"{at}: {kind} takes a list, got {args!r}")
        if kind in ("grid", "choice"):
            if not args:
                raise ValueError(f"{at}: {kind} is empty; give at least one value")
            if len(set(map(json.dumps, args))) != len(args):
                raise ValueError(f"{at}: {kind} {args} repeats a value")
        else:
            numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool)
                          and math.isfinite(a) for a in args)
            if len(args) != 2 or not numbers or not args[0] < args[1]:
                raise ValueError(f"{at}: {kind} takes [low, high] with low < high, got {args}")
            if kind == "loguniform" and args[0] <= 0:
                raise ValueError(f"{at}: loguniform needs 0 < low, got {args}")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise ValueError(f"{at}: randint takes integers [low, high) , got {args}")
        dims[name] = (kind, args)
    return dims


def _configurations(dims: dict, num_samples: int, search_seed: int) -> list[dict]:
    """Every configuration: ``num_samples`` draws of the random dimensions, each with every
    point of the grid (the first grid field varies slowest)."""
    import numpy as np
    rng = np.random.default_rng(search_seed)
    grid = [(name, args) for name, (kind, args) in dims.items() if kind == "grid"]
    points = list(itertools.product(*[args for _, args in grid]))
    configurations = []
    for _ in range(num_samples):
        drawn = {}
        for name, (kind, args) in dims.items():
            if kind == "choice":
                drawn[name] = args[int(rng.integers(len(args)))]
            elif kind == "uniform":
                drawn[name] = float(rng.uniform(*args))
            elif kind == "loguniform":
                drawn[name] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
            elif kind == "randint":
                drawn[name] = int(rng.integers(*args))
        for point in points:
            values = dict(zip([name for name, _ in grid], point))
            configurations.append({name: values.get(name, drawn.get(name)) for name in dims})
    return configurations


def _configs(agent, settings: dict, where: str):
    """``(RunConfig, agent config)`` of a trial's settings; a bad value is ValueError."""
    from rltpu import cli
    from rltpu.config import RunConfig
    try:
        return cli._build(RunConfig, settings), cli._build(agent.Config, settings)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None


def _seeds(where: str, seeds) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_positive_int(where, "seeds", seeds)))
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ValueError(f"{where}: seeds must be a non-empty list of non-negative integers "
                         f"(or a count), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds {seeds} repeats a seed")
    return seeds


def _positive_int(where: str, key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _scheduler(where: str, scheduler, budget: int) -> dict | None:
    """``scheduler: asha`` or ``{name: asha, grace: ENV_STEPS, reduction: FACTOR}``."""
    from rltpu import configfile
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        scheduler = {"name": scheduler}
    if not isinstance(scheduler, Mapping):
        raise ValueError(f"{where}: scheduler must be 'asha' or {{name: asha, grace: ENV_STEPS, "
                         f"reduction: FACTOR}}, got {scheduler!r}")
    configfile.check_keys(f"{where}: scheduler", scheduler, ("name", "grace", "reduction"))
    name = scheduler.get("name")
    if name not in SCHEDULERS:
        raise ValueError(f"{where}: scheduler {name!r} is not one of {', '.join(SCHEDULERS)}")
    grace = scheduler.get("grace", max(1, budget // 4))
    if not isinstance(grace, int) or isinstance(grace, bool) or not 0 < grace <= budget:
        raise ValueError(f"{where}: scheduler grace must be env steps from 1 to the budget "
                         f"{budget}, got {grace!r}")
    reduction = scheduler.get("reduction", 2)
    if not isinstance(reduction, (int, float)) or isinstance(reduction, bool) or not reduction > 1:
        raise ValueError(f"{where}: scheduler reduction must be a number > 1, got {reduction!r}")
    return {"name": name, "grace": grace, "reduction": float(reduction)}


def describe(values: Mapping) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or "(base)"


def _plain(value):
    """JSON's view of ``value`` (tuples as lists), so a sweep.json read back compares equal."""
    return json.loads(json.dumps(value))


# --- Running ------------------------------------------------------------------------------

def check_tune() -> None:
    """Raises ValueError with an install hint when Ray Tune cannot be imported."""
    import importlib.util
    if any(importlib.util.find_spec(m) is None for m in ("pyarrow", "pandas")):
        raise ValueError(TUNE_MISSING)


def trial_bundles(sweep: Sweep, trial: dict, accelerators: Mapping[str, float]) -> list[dict]:
    """The placement group of a trial: its learner (one CPU, and its devices where the
    cluster has accelerators) and, in Ray mode, one CPU per rollout actor, which the
    trial's actors are placed in (Tune captures a trial's child actors in its group)."""
    from rltpu.config import RunConfig
    values = sweep.trial_values(trial)
    mode = values.get("mode", RunConfig.mode)
    learner = {"CPU": 1.0}
    for kind in ("GPU", "TPU"):
        if accelerators.get(kind):
            learner[kind] = float(values.get("num_devices") or 1)
            break
    actors = values.get("num_actors", RunConfig.num_actors) if mode == "ray" else 0
    return [learner] + [{"CPU": 1.0}] * actors


def new_sweep_dir(sweep_dir: str | None, name: str) -> str:
    """The sweep directory: the one given (which must not exist) or a new one under sweeps/.

    Raises:
      ValueError: the given one exists.
    """
    if sweep_dir is not None:
        if os.path.exists(sweep_dir):
            raise ValueError(f"--dir {sweep_dir} already exists; sweeps are never overwritten "
                             "(pass a new path, or --resume it)")
        return sweep_dir
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = path = os.path.join("sweeps", f"{name}-{stamp}")
    n = 1
    while os.path.exists(path):
        path, n = f"{base}-{n}", n + 1
    return path


def read_sweep(sweep_dir: str) -> Sweep:
    """The sweep in ``SWEEP_DIR/sweep.json``, checked again as a SPEC file is (a sweep
    directory is data: it never decides what code is imported).

    Raises:
      ValueError: not a sweep directory, or its SPEC no longer passes.
    """
    path = os.path.join(sweep_dir, SPEC_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"--resume {sweep_dir}: not a sweep directory (it has no {SPEC_FILE})")
    try:
        with open(path) as f:
            saved = Sweep.from_json(json.load(f))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"--resume {sweep_dir}: cannot read its {SPEC_FILE} ({e})") from None
    again = load(saved.spec, from_file=path)
    if again.trials != saved.trials or again.base != saved.base:
        raise ValueError(f"--resume {sweep_dir}: its {SPEC_FILE} makes other trials than it "
                         "lists (was it edited, or the defaults changed?); start a new sweep")
    return saved


def sweep(spec: Mapping[str, Any] | str, sweep_dir: str | None = None, resume: bool = False,
          quiet: bool = False) -> list[dict]:
    """Runs a sweep (``rltpu sweep``) and returns its configurations, best first.

    Args:
      spec: a SPEC as a dict, or the path of a SPEC file; with ``resume``, ignored (None).
      sweep_dir: where the sweep goes (must not exist; default: a new folder under
        ``sweeps/``); with ``resume``, the sweep to resume.
      resume: go on with the interrupted sweep in ``sweep_dir``: finished trials are kept,
        unfinished ones resume from their checkpoints.
      quiet: no progress lines and no table on stdout.

    Returns:
      One dict per configuration (``results.csv``'s rows), best first.

    Raises:
      ValueError: a bad SPEC or directory, before Ray starts.
    """
    check_tune()
    if resume:
        if sweep_dir is None:
            raise ValueError("resuming a sweep needs its directory")
        plan = read_sweep(sweep_dir)
    else:
        from_file = spec if isinstance(spec, str) else None
        plan = load(read_spec(spec) if from_file else spec, from_file)
        name = (os.path.splitext(os.path.basename(from_file))[0] if from_file
                else f"{plan.agent}-sweep")
        sweep_dir = new_sweep_dir(sweep_dir, name.replace(":", "_"))
        os.makedirs(os.path.join(sweep_dir, RUNS_DIR))
        from rltpu.metrics import write_json
        write_json(os.path.join(sweep_dir, SPEC_FILE), plan.to_json())
    from rltpu import console
    if not quiet:
        console.say(f"sweep of {len(plan.trials)} trials in {sweep_dir}")
    statuses = _run_tune(plan, os.path.abspath(sweep_dir), resume, quiet)
    configs = write_results(plan, sweep_dir, statuses, quiet)
    if not complete(configs):
        console.say(f"the sweep did not finish (see {os.path.join(sweep_dir, 'trials.csv')}); "
                    f"resume it with: rltpu sweep --resume {sweep_dir}")
    return configs


def complete(configs: list[dict]) -> bool:
    """Whether every trial finished or was stopped early by the scheduler."""
    return all(set(c["status"].split("/")) <= {"finished", "stopped early"} for c in configs)


def _run_tune(plan: Sweep, sweep_dir: str, resume: bool, quiet: bool) -> dict[int, str]:
    """Runs (or restores) the Tune experiment; returns each trial's Tune status by index."""
    import ray
    from ray import tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from rltpu import cluster, console
    from rltpu.sweep_trial import SweepTrial, TrialProgress, trial_dirname

    # Tune's console tables repeat what the trials' lines and the final table say.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    need = max(sum(b["CPU"] for b in trial_bundles(plan, t, {})) for t in plan.trials)
    started = cluster.connect(int(need))
    previous = None
    if threading.current_thread() is threading.main_thread():
        # Ray Tune ends a sweep cleanly on SIGINT (each trial stops with a checkpoint, the
        # experiment's state is written): SIGTERM does the same. (After ray.init, which
        # installs a SIGTERM handler of its own.)
        previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        resources = ray.cluster_resources()
        accelerators = {k: resources.get(k, 0) for k in ("GPU", "TPU")}
        if resources.get("CPU", 0) < need:
            raise ValueError(f"a trial needs {need:g} CPUs (its learner and --num-actors) but "
                             f"the Ray cluster has {resources.get('CPU', 0):g}")

        def bundles(config: dict) -> PlacementGroupFactory:
            return PlacementGroupFactory(trial_bundles(plan, config["trial"], accelerators))

        trainable = tune.with_resources(SweepTrial, bundles)
        path = os.path.join(sweep_dir, TUNE_DIR)
        if resume and tune.Tuner.can_restore(path):
            console.say(f"resuming the sweep in {sweep_dir}")
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            trials = [{**t, "run_dir": plan.run_dir(sweep_dir, t), "agent": plan.agent,
                       "settings": plan.trial_values(t),
                       "metric": METRICS[plan.metric]} for t in plan.trials]
            scheduler = None
            if plan.scheduler is not None:
                from ray.tune.schedulers import ASHAScheduler
                scheduler = ASHAScheduler(time_attr="env_steps", metric=plan.metric,
                                          mode=plan.mode, max_t=plan.budget,
                                          grace_period=plan.scheduler["grace"],
                                          reduction_factor=plan.scheduler["reduction"])
            tuner = tune.Tuner(
                trainable, param_space={"trial": tune.grid_search(trials)},
                tune_config=tune.TuneConfig(
                    scheduler=scheduler, max_concurrent_trials=plan.max_concurrent_trials,
                    trial_dirname_creator=trial_dirname,
                    metric=None if scheduler else plan.metric,
                    mode=None if scheduler else plan.mode),
                run_config=tune.RunConfig(
                    storage_path=sweep_dir, name=TUNE_DIR, verbose=0,
                    callbacks=[TrialProgress(len(trials), quiet)],
                    failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
        analysis = tune.ExperimentAnalysis(path)
        return {t.config["trial"]["index"]: t.status for t in analysis.trials}
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if started:
            ray.shutdown()


# --- Results ------------------------------------------------------------------------------

def trial_result(run_dir: str, metric: str = "return") -> dict:
    """What a trial's run directory says: ``{"value" (the metric's last value), "env_steps",
    "stopped_by", "finished"}``; value None when no row has it yet."""
    column = METRICS[metric]
    value = env_steps = None
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    env_steps = row.get("env_steps", env_steps)
                    if row.get(column) is not None:
                        value = row[column]
    summary = None
    path = os.path.join(run_dir, "summary.json")
    if os.path.isfile(path):
        with open(path) as f:
            summary = json.load(f)
    return {"value": value, "env_steps": env_steps,
            "stopped_by": None if summary is None else summary.get("stopped_by"),
            "finished": summary is not None and summary.get("stopped_by") is None}


def _status(result: dict, tune_status: str | None) -> str:
    if tune_status == "ERROR":
        return "error"
    if result["finished"]:
        return "finished"
    if result["stopped_by"] == SWEEP_STOP and tune_status == "TERMINATED":
        return "stopped early"
    return "not run" if result["env_steps"] is None else "interrupted"


def results(plan: Sweep, sweep_dir: str, statuses: Mapping[int, str | None]
            ) -> tuple[list[dict], list[dict]]:
    """``(trials, configurations)``: one row per trial (its values, seed, the metric's last
    value, env steps, status, run directory relative to ``sweep_dir``) and one per
    configuration (the metric's mean, standard deviation, min and max over its seeds),
    best first.

    Args:
      statuses: each trial's Tune status by index (a trial missing: not known).
    """
    import numpy as np
    trials = []
    for t in plan.trials:
        run_dir = plan.run_dir(sweep_dir, t)
        result = trial_result(run_dir, plan.metric)
        trials.append({"trial": t["index"], "config": t["config"], **t["values"],
                       "seed": t["seed"], plan.metric: result["value"],
                       "env_steps": result["env_steps"],
                       "status": _status(result, statuses.get(t["index"])),
                       "run_dir": os.path.relpath(run_dir, sweep_dir)})
    configs = []
    for c, members in itertools.groupby(trials, key=lambda r: r["config"]):
        members = list(members)
        values = np.array([m[plan.metric] for m in members if m[plan.metric] is not None], float)
        statuses_ = sorted({m["status"] for m in members})
        configs.append({"config": c, **{k: members[0][k] for k in plan.varied},
                        "seeds": len(members), "with_metric": len(values),
                        "mean": float(values.mean()) if len(values) else None,
                        "std": float(values.std()) if len(values) else None,
                        "min": float(values.min()) if len(values) else None,
                        "max": float(values.max()) if len(values) else None,
                        "status": "/".join(statuses_)})
    sign = -1 if plan.mode == "max" else 1
    configs.sort(key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0.0), r["config"]))
    return trials, configs


def read_results(sweep_dir: str) -> tuple[Sweep, list[dict], list[dict]]:
    """A sweep directory's sweep and ``results`` (statuses from Tune unknown: a trial
    stopped by ASHA reads as interrupted), for plotting; nothing is imported or run.

    Raises:
      ValueError: not a sweep directory.
    """
    path = os.path.join(sweep_dir, SPEC_FILE)
    try:
        with open(path) as f:
            plan = Sweep.from_json(json.load(f))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{sweep_dir}: not a readable sweep directory ({e})") from None
    return (plan, *results(plan, sweep_dir, {}))


def write_results(plan: Sweep, sweep_dir: str, statuses: Mapping[int, str | None],
                  quiet: bool = False) -> list[dict]:
    """Writes ``trials.csv`` and ``results.csv`` (``results``), prints the latter as a
    markdown table unless ``quiet``, and returns it."""
    trials, configs = results(plan, sweep_dir, statuses)
    _write_csv(os.path.join(sweep_dir, "trials.csv"), trials)
    _write_csv(os.path.join(sweep_dir, "results.csv"), configs)
    if not quiet:
        print(markdown_table(configs, plan), flush=True)
    return configs


def _write_csv(path: str, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(configs: list[dict], plan: Sweep) -> str:
    """The configurations as a markdown table, best first."""
    number = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    head = ["rank", *plan.varied, "seeds", f"{plan.metric} mean", "std", "min", "max", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, c in enumerate(configs, 1):
        cells = [str(rank), *[number(c[k]) for k in plan.varied],
                 f"{c['with_metric']}/{c['seeds']}", number(c["mean"]), number(c["std"]),
                 number(c["min"]), number(c["max"]), c["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def is_sweep_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SPEC_FILE))


def main(argv: list[str]) -> int:
    """``rltpu sweep SPEC [--dir SWEEP_DIR]`` or ``rltpu sweep --resume SWEEP_DIR``."""
    from rltpu import cli
    parser = cli._Parser(prog="rltpu sweep", description="Run a sweep (a grid, random draws, "
                         "many seeds) as Ray Tune trials, each an ordinary run directory under "
                         "SWEEP_DIR/runs; see README.md, 'Sweeps'.")
    parser.add_argument("spec", nargs="?", metavar="SPEC",
                        help="the sweep: a YAML, JSON or TOML file with base, space, seeds, "
                        "num_samples, metric, mode, budget, max_concurrent_trials, scheduler")
    parser.add_argument("--dir", metavar="SWEEP_DIR", default=None,
                        help="where the sweep goes (must not exist; default: sweeps/NAME-TIME)")
    parser.add_argument("--resume", metavar="SWEEP_DIR", default=None,
                        help="go on with an interrupted sweep: finished trials are kept, "
                        "unfinished ones resume from their checkpoints")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if (args.spec is None) == (args.resume is None):
        return cli._fail("give a SPEC file, or --resume SWEEP_DIR (not both)")
    if args.resume is not None and args.dir is not None:
        return cli._fail("--dir cannot be given with --resume; the sweep goes on in its "
                         "directory")
    try:
        configs = sweep(args.spec, args.resume or args.dir, resume=args.resume is not None,
                        quiet=args.quiet)
    except ValueError as e:
        return cli._fail(str(e))
    return 0 if complete(configs) else 1
