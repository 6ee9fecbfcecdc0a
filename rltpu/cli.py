"""``rltpu train`` (flags from the run config and the chosen agent's config, optionally
starting from a ``--preset`` and a ``--config`` file), ``rltpu train --resume RUN_DIR``,
``rltpu eval RUN_DIR`` and ``rltpu plot RUN_DIR ...``.

Every bad setting is one line on stderr naming the value and what is valid (for an unknown
flag, command or key, the nearest valid one), and exit status 2, before any process starts.
Flags are never abbreviated.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import sys
import types
import typing

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with rltpu's conventions: no abbreviated flags (``--num-actor`` is not
    ``--num-actors``: a flag added later would change what an old command line means), and
    every error one line, an unknown flag's with the nearest known one."""

    #: Put before every error (``--config FILE: ``, when the parser reads a file's values).
    error_prefix = ""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, not argparse's usage block
        if message.startswith("unrecognized arguments: "):
            unknown = [a.split("=", 1)[0] for a in message.split(": ", 1)[1].split()
                       if a.startswith("-")]
            if unknown:
                message += _did_you_mean(unknown[0], list(self._option_string_actions))
        raise SystemExit(_fail(self.error_prefix + message))


def _did_you_mean(word: str, valid: list[str]) -> str:
    """``"; did you mean X?"`` with the nearest of ``valid`` to ``word`` ("" if none is near)."""
    import difflib
    close = difflib.get_close_matches(word, valid, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _fail(message: str, status: int = USAGE_ERROR) -> int:
    print(f"rltpu: error: {message}", file=sys.stderr)
    return status


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (a string right after a field) of a dataclass."""
    docs = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(inspect.getsource(klass).lstrip())
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = nxt.value.value.strip()
    return docs


def _add_fields(parser: argparse.ArgumentParser, cls, title: str,
                defaults: typing.Mapping[str, typing.Any] = {}) -> None:
    """A flag for each field of the dataclass ``cls``, its docstring as help.

    Args:
      defaults: values to show as a field's default instead of the dataclass's (a preset's
        or a config file's); the flags still default to not given.
    """
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        optional = False
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            optional, kind = True, args[0]
        flag = "--" + field.name.replace("_", "-")
        default = defaults.get(field.name, field.default)
        kwargs: dict = {"dest": field.name, "default": argparse.SUPPRESS,
                        "help": f"{docs.get(field.name, '')} (default: {default})"}
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(kind) is typing.Literal:  # one of a few words: shown and enforced
            kwargs["choices"] = typing.get_args(kind)
            group.add_argument(flag, **kwargs)
            continue
        if typing.get_origin(kind) is tuple:
            kwargs["nargs"] = "+"
            kind = typing.get_args(kind)[0]
        kwargs["type"] = _none_or(kind) if optional else kind
        kwargs["metavar"] = field.metadata.get("metavar", kind.__name__.upper())
        group.add_argument(flag, **kwargs)


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _build(cls, values: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    return cls(**kwargs)


def train_main(argv: list[str]) -> int:
    from rltpu import hosts
    try:
        status = _train_main(argv)
    except SystemExit:  # argparse's refusal, alike on every host
        if hosts.watchdog() is not None:
            hosts.watchdog().finished()
        raise
    except Exception:
        # A collective whose peer died raises at once on CPUs: if a learner process was
        # lost, the watchdog says which and exits; a failure of this process alone exits
        # without waiting for the others, which wait for it (see Watchdog.failed).
        if hosts.watchdog() is not None and hosts.watchdog().watching:
            hosts.watchdog().failed()
        raise
    # A run that ended, or settings refused everywhere, is no lost process; a failure of
    # this one alone (status 1) is, for the others, which must not wait for it.
    if hosts.watchdog() is not None and status != 1:
        hosts.watchdog().finished()
    return status


def _train_main(argv: list[str]) -> int:
    from rltpu.hosts import JoinError
    known = _train_pre_parser().parse_known_args(argv)[0]
    try:
        placed, preset, configured, saved, agent = _train_setup(known, argv)
    except JoinError as e:
        return _fail(str(e), status=1)
    except ValueError as e:
        return _fail(str(e))
    parser = _train_parser(agent, preset, configured)
    values = vars(parser.parse_args(argv))
    quiet = values.pop("quiet", False)
    resume = values.pop("resume", None)
    print_config = values.pop("print_config", False)
    for name in ("preset", "config", "trust_run_code", "distributed", "coordinator",
                 "num_processes", "process_id", "learner_hosts", "learner_resources",
                 "join_timeout_s", "peer_timeout_s"):
        values.pop(name, None)  # used by _train_setup
    # The preset's settings, then the config file's, then the flags given.
    values = {**file_values(parser, agent, preset, configured, known.preset, known.config),
              **values}
    if placed and not print_config:
        return _train_on_placed_learners(for_other_hosts(argv, values), placed, agent, values,
                                         resume)
    try:
        from rltpu import resume as resuming
        from rltpu.config import RunConfig
        from rltpu.plan import validate
        if saved is not None:
            values = _resumed(saved, values, agent, resume)
        run = _build(RunConfig, values)
        agent_config = _build(agent.Config, values)
        if print_config:
            print(json.dumps(resolved_config(run, agent_config), indent=2))
            return 0
        plan = validate(agent, agent_config, run, resume=saved is not None)
        restored = None
        if saved is not None:
            try:
                restored = resuming.restore_on_first_process(run.run_dir, plan.fns.init)
            except ValueError:
                if plan.run_dir_lock is not None:
                    plan.run_dir_lock.release()
                raise
    except ValueError as e:
        return _fail(str(e))
    return _train_and_report(plan, quiet, restored)


def _train_pre_parser() -> argparse.ArgumentParser:
    """The flags read before the agent is known (its config's flags depend on it)."""
    pre = _Parser(add_help=False)
    for flag in ("--agent", "--env", "--resume", "--preset", "--config", "--distributed",
                 "--coordinator", "--learner-resources"):
        pre.add_argument(flag, default=None)
    for flag in ("--num-processes", "--process-id", "--learner-hosts"):
        pre.add_argument(flag, type=int, default=None)
    for flag in ("--join-timeout-s", "--peer-timeout-s"):
        pre.add_argument(flag, type=_positive_float, default=None)
    pre.add_argument("--trust-run-code", action="store_true")
    return pre


def _train_setup(known, argv: list[str]):
    """What the flags read first decide: ``(placed, preset, configured, saved, agent)``.
    Joins the other learner processes (multi-host) and reads a resumed run's settings.

    Raises:
      ValueError: naming the bad flag, file or run directory.
    """
    from rltpu import agents, resume as resuming
    from rltpu.config import RunConfig
    from rltpu.hosts import on_first_process
    placed = _placement(known)
    distributed = _distributed(known.distributed, known.coordinator, known.num_processes,
                               known.process_id)
    if distributed is not None:
        # Before anything asks JAX for its devices (the mesh spans every host's), and
        # before a resumed run's settings are read (process 0 reads them for all).
        from rltpu import hosts
        timeouts = {"join_timeout_s": known.join_timeout_s or hosts.JOIN_TIMEOUT_S,
                    "peer_timeout_s": known.peer_timeout_s or hosts.PEER_TIMEOUT_S}
        hosts.join(distributed.get("coordinator"), distributed.get("num_processes"),
                   distributed.get("process_id"), **timeouts)
    preset, configured = setting_files(known, argv)
    # With Ray-placed learners the run directory is on learner 0's host, which reads it.
    saved = None if known.resume is None or placed else on_first_process(
        lambda: resuming.read_run_config(known.resume))
    name = known.agent or file_agent(preset, configured) or RunConfig.agent
    if saved is not None:
        resuming.check_run_code(saved, f"--resume {known.resume}", known.agent, known.env,
                                known.trust_run_code)
    agent = agents.get(name if saved is None else saved["run"]["agent"])
    if saved is not None:
        resuming.check_saved_settings(saved, agent.Config, f"--resume {known.resume}")
    return placed, preset, configured, saved, agent


def _train_parser(agent, preset, configured) -> argparse.ArgumentParser:
    """``rltpu train``'s full parser for ``agent``; its defaults shown with the preset's
    and the config file's settings."""
    from rltpu.agents import presets
    from rltpu.config import RunConfig
    parser = _Parser(prog="rltpu train", description="Train an agent with Ray actors and a "
                     "data-parallel JAX learner.")
    defaults = file_defaults(preset, configured)
    _add_fields(parser, RunConfig, "run", defaults)
    _add_fields(parser, agent.Config, f"agent {agent.name}", defaults)
    add_file_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--preset", metavar="NAME|FILE", default=argparse.SUPPRESS,
                        help="start from a named set of run and agent settings (flags given "
                        f"override them): {', '.join(sorted(presets.PRESETS))}, or a JSON, "
                        "YAML or TOML file of the same shape; see README.md")
    parser.add_argument("--resume", metavar="RUN_DIR", default=argparse.SUPPRESS,
                        help="continue the run in RUN_DIR from its newest complete checkpoint "
                        "(its saved settings; only step budget, target, logging, actor count "
                        "and checkpointing flags may change)")
    _add_trust_flags(parser, with_names=False)
    _add_host_flags(parser)
    return parser


def _add_host_flags(parser: argparse.ArgumentParser) -> None:
    hosts = parser.add_argument_group(
        "multi-host learner (one rltpu train per host of a pod slice, all with the same flags)")
    hosts.add_argument("--distributed", choices=["auto"], default=argparse.SUPPRESS,
                       help="join the other hosts' learner processes with jax.distributed, "
                       "the TPU VM's metadata telling where they are (Cloud TPU)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", default=argparse.SUPPRESS,
                       help="join them at this address (process 0's host) instead")
    hosts.add_argument("--num-processes", type=int, metavar="N", default=argparse.SUPPRESS,
                       help="learner processes in all (with --coordinator)")
    hosts.add_argument("--process-id", type=int, metavar="I", default=argparse.SUPPRESS,
                       help="this one's index, 0 to N-1; process 0 writes the run directory")
    hosts.add_argument("--join-timeout-s", type=_positive_float, metavar="S",
                       default=argparse.SUPPRESS,
                       help="at start, give up (one line, status 1) when not every learner "
                       "process has joined within S seconds; meanwhile each says every 5 s how "
                       "many of how many have joined (default 300)")
    hosts.add_argument("--peer-timeout-s", type=_positive_float, metavar="S",
                       default=argparse.SUPPRESS,
                       help="when a learner process is unheard for S seconds (its host died), "
                       "the others stop with one line naming it, status 1 (default 30)")
    hosts.add_argument("--learner-hosts", type=int, metavar="N", default=argparse.SUPPRESS,
                       help="or: let Ray start the N learner processes, one on each of N hosts "
                       "of the running cluster holding --learner-resources (run this once, "
                       "on any node)")
    hosts.add_argument("--learner-resources", metavar="JSON", default=argparse.SUPPRESS,
                       help='what each learner host holds and reserves (default: all of a TPU '
                       'host\'s chips, {"TPU": chips})')


def _train_and_report(plan, quiet: bool, restored) -> int:
    """Trains the validated plan; prints the summary's line, and how to resume if stopped."""
    from rltpu import checkpoint, cluster, hosts, storage
    from rltpu.faults import ActorsExhaustedError
    from rltpu.hosts import HostsDisagreeError
    from rltpu.run import train_plan
    from rltpu.validation import NonFiniteUpdatesError
    try:
        summary = train_plan(plan, quiet=quiet, resume=restored)
        if hosts.watchdog() is not None:  # (before the exits below, which skip the caller)
            hosts.watchdog().finished()
    except HostsDisagreeError as e:
        return _fail(str(e))
    except (NonFiniteUpdatesError, ActorsExhaustedError, storage.WriteError) as e:
        # Every complete checkpoint is good (a skipped update never changes the state, and
        # a failed write never replaces a complete checkpoint); a write cut off is cleaned
        # up when the run is resumed.
        last = checkpoint.list_checkpoints(plan.run_dir)[0]
        status = _fail(f"{e}; the last good checkpoint is "
                       + (storage.join(checkpoint.checkpoint_dir(plan.run_dir), str(last[0]))
                          if last else "none"), status=1)
        if isinstance(e, storage.WriteError):
            # orbax's writer threads still hold callbacks for the failed save, which at
            # interpreter exit land on its closed event loop and print tracebacks: the one
            # line above is the whole report, so leave without running them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    print(json.dumps({k: summary[k] for k in ("run_dir", "env_steps", "time_to_target_s",
                                                "final_return", "env_sps")}))
    if summary["stopped_by"] is not None and summary["checkpoint"] is not None:
        print(f"rltpu: stopped by {summary['stopped_by']} after update "
              f"{summary['learner_updates']:,}; checkpoint {summary['checkpoint']} is complete. "
              f"Resume with: rltpu train --resume {summary['run_dir']}", file=sys.stderr)
    if summary["stopped_by"] is not None or cluster.stuck():
        # Everything is written. After a signal Ray's processes may be gone (a preempted
        # VM signals them all), and Ray's client would then hold the exit for a minute in
        # its exit handlers, past the grace period: leave without them (process 0 of a pod
        # once the others have: JAX's service, which they still talk to, leaves with it).
        sys.stdout.flush()
        sys.stderr.flush()
        if hosts.watchdog() is not None:
            hosts.watchdog().wait_for_peers()
        os._exit(0)
    return 0


def add_file_flags(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--print-config`` (``--preset`` is added beside the others)."""
    from rltpu import configfile
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="start from the run and agent settings in FILE (JSON, YAML or "
                        'TOML, shaped like a run\'s config.json: {"run": {...}, "agent": '
                        "{...}}; a run's config.json repeats that run); applied after "
                        "--preset, and flags given override it. Its "
                        f"{', '.join(configfile.NOT_FROM_FILES)} is not used: every run gets "
                        "a new directory")
    parser.add_argument("--print-config", action="store_true", default=argparse.SUPPRESS,
                        help="print the resolved settings (the shape of config.json) and exit "
                        "without starting anything")


def setting_files(known, argv: list[str]):
    """The preset (by name or from a file) and the config file's sections given to ``rltpu
    train``, read and checked: ``(preset or None, {"run", "agent"} or None)``.

    Raises:
      ValueError: a file cannot be read or holds an unknown key; a preset or config with
        --resume; a preset for another agent than the one given; a file naming code to
        import that the command line does not name.
    """
    from rltpu import agents, configfile
    from rltpu.agents import presets
    preset = configured = None
    if known.preset is not None:
        preset = (configfile.read_preset(known.preset) if configfile.is_file(known.preset)
                  else presets.get(known.preset))
    if known.config is not None:
        configured = configfile.read_config(known.config)
    for flag, given in (("--preset", preset), ("--config", configured)):
        if given is not None and known.resume is not None:
            raise ValueError(f"{flag} cannot be combined with --resume (a resumed run keeps "
                             "its saved settings)")
    env_flag = _given(argv, "--env")
    if preset is not None:
        configfile.check_no_code(f"--preset {known.preset}", {"agent": preset.agent, **preset.run},
                                 known.agent, env_flag, agents.BUILTIN)
        if known.agent not in (None, preset.agent):
            raise ValueError(f"--preset {known.preset} is for agent {preset.agent}, "
                             f"not {known.agent!r}")
    if configured is not None:
        configfile.check_no_code(f"--config {known.config}", configured["run"], known.agent,
                                 env_flag, agents.BUILTIN)
        agent = configured["run"].get("agent")
        if preset is not None and known.agent is None and agent not in (None, preset.agent):
            raise ValueError(f"--preset {known.preset} is for agent {preset.agent}, not "
                             f"{agent!r} (--config {known.config})")
    return preset, configured


def file_agent(preset, configured) -> str | None:
    """The agent that a config file, else a preset, names (None: neither)."""
    if configured is not None and configured["run"].get("agent") is not None:
        return configured["run"]["agent"]
    return preset.agent if preset is not None else None


def file_defaults(preset, configured) -> dict:
    """The settings of a preset and a config file, as ``--help`` shows them."""
    from rltpu import configfile
    values = {}
    if preset is not None:
        values.update({"agent": preset.agent, **preset.run, **preset.agent_config})
    if configured is not None:
        values.update({**configured["run"], **configured["agent"]})
    return {k: v for k, v in values.items() if k not in configfile.NOT_FROM_FILES}


def file_values(parser: argparse.ArgumentParser, agent, preset, configured,
                preset_name: str | None, config_path: str | None) -> dict:
    """The settings of a preset, then of a config file, parsed by ``parser`` as the flags
    they stand for (so that a value is checked as its flag would be).

    Raises:
      SystemExit: a key that is no setting of the run or of ``agent``, or a value its flag
        refuses (one line naming the file, exit status 2).
    """
    from rltpu import configfile
    from rltpu.config import RunConfig
    sources = []
    if preset is not None:
        sources.append((f"--preset {preset_name}", {"agent": preset.agent, **preset.run},
                        preset.agent_config))
    if configured is not None:
        sources.append((f"--config {config_path}", configured["run"], configured["agent"]))
    values: dict = {}
    for where, run_values, agent_values in sources:
        try:
            configfile.check_fields(f"{where}: run", run_values, RunConfig)
            configfile.check_fields(f"{where}: agent {agent.name}", agent_values, agent.Config)
        except ValueError as e:
            raise SystemExit(_fail(str(e))) from None
        given = {k: v for k, v in {**run_values, **agent_values}.items()
                 if k not in configfile.NOT_FROM_FILES}
        parser.error_prefix = f"{where}: "
        try:
            values.update(vars(parser.parse_args(configfile.to_flags(given))))
        finally:
            parser.error_prefix = ""
    return values


def for_other_hosts(argv: list[str], values: dict) -> list[str]:
    """``argv`` for learner processes on other hosts, which may not have the files it
    names: the settings of ``--config FILE`` and ``--preset FILE`` as flags instead."""
    from rltpu import configfile
    preset = _given(argv, "--preset")
    files = ("--config",) + (("--preset",) if preset and configfile.is_file(preset) else ())
    if not any(_given(argv, flag) for flag in files):
        return argv
    return configfile.to_flags({k: v for k, v in values.items()
                                if k not in configfile.NOT_FROM_FILES}) + _without(argv, files)


def resolved_config(run, agent_config) -> dict:
    """The settings a run would start with, in config.json's shape."""
    return {"run": dataclasses.asdict(run), "agent": dataclasses.asdict(agent_config)}


def _given(argv: list[str], flag: str) -> str | None:
    """The last value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``; None if absent)."""
    value = None
    for arg, nxt in zip(argv, argv[1:] + [None]):
        if arg == flag:
            value = nxt
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def _placement(known) -> tuple[int, dict | None] | None:
    """``--learner-hosts N`` and its resources (None: not given).

    Raises:
      ValueError: N is not positive, the resources are not valid, or the flags are mixed
        with those of learner processes started by hand.
    """
    if known.learner_hosts is None:
        if known.learner_resources is not None:
            raise ValueError("--learner-resources needs --learner-hosts N")
        return None
    if known.learner_hosts < 1:
        raise ValueError(f"--learner-hosts must be a positive integer, got {known.learner_hosts}")
    if any(x is not None for x in (known.distributed, known.coordinator, known.num_processes,
                                   known.process_id)):
        raise ValueError("--learner-hosts starts the learner processes itself; it takes no "
                         "--distributed, --coordinator, --num-processes or --process-id")
    from rltpu import placement
    return known.learner_hosts, placement.parse_resources(known.learner_resources)


def _train_on_placed_learners(argv: list[str], placed: tuple[int, dict | None], agent,
                              values: dict, resume: str | None) -> int:
    """Checks what can be checked here (the flags; a new run's env and agent: the devices
    are the learners'), then has Ray start the learner processes and waits for them."""
    from rltpu import placement
    from rltpu.config import RunConfig
    try:
        if resume is None:  # (a resumed run's settings are on learner 0's host)
            run = _build(RunConfig, values)
            if run.mode == "anakin":
                raise ValueError("--learner-hosts places Ray-mode learners; --mode anakin runs "
                                 "on one host without Ray")
            from rltpu.plan import check_env_and_agent
            check_env_and_agent(agent, _build(agent.Config, values), run)
        return placement.run_learners(_without(argv, ("--learner-hosts", "--learner-resources")),
                                      *placed)
    except ValueError as e:
        return _fail(str(e))


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` less the given flags (each with its value, as ``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in flags)):
            out.append(arg)
    return out


def _distributed(mode: str | None, coordinator: str | None, num_processes: int | None,
                 process_id: int | None) -> dict | None:
    """``initialize_distributed``'s arguments from the multi-host flags (None: one process).

    Raises:
      ValueError: the flags are incomplete, contradict each other or are out of range.
    """
    explicit = (coordinator, num_processes, process_id)
    if mode == "auto":
        if any(x is not None for x in explicit):
            raise ValueError("--distributed auto takes no --coordinator, --num-processes or "
                             "--process-id (the TPU runtime supplies them); give one or the other")
        return {}
    if all(x is None for x in explicit):
        return None
    if any(x is None for x in explicit):
        raise ValueError("a multi-host learner needs all of --coordinator HOST:PORT, "
                         "--num-processes N and --process-id I (or --distributed auto on Cloud TPU)")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator {coordinator!r} is not HOST:PORT with a port "
                         "from 1 to 65535")
    if num_processes < 1:
        raise ValueError(f"--num-processes must be a positive integer, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is not in 0..{num_processes - 1} "
                         f"(--num-processes {num_processes})")
    return {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}


def _resumed(saved: dict, given: dict, agent, run_dir: str) -> dict:
    """The flags of a resumed run: the saved ones, changed only where that is safe."""
    from rltpu import resume as resuming
    from rltpu.config import RunConfig
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    agent_fields = {f.name for f in dataclasses.fields(agent.Config)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    run_values, agent_values = resuming.resumed_values(saved, given, run_fields,
                                                         agent_fields, run_dir)
    return {**agent_values, **run_values}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def eval_main(argv: list[str]) -> int:
    from rltpu import evaluate

    parser = _Parser(prog="rltpu eval", description="Mean return of greedy episodes played with "
                     "a run's checkpoint.")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--checkpoint", type=int, metavar="STEP", default=None,
                        help="the checkpoint (its update count) to use (default: the newest "
                        "complete one)")
    parser.add_argument("--episodes", type=_positive_int, default=10, help="episodes to play")
    parser.add_argument("--seed", type=int, default=12345, help="episode i resets with seed+i")
    parser.add_argument("--video", action="store_true", help="record every episode to "
                        "RUN_DIR/videos/TIME-checkpoint-STEP/*.mp4, a new folder each time "
                        "(needs moviepy: pip install 'rltpu[video]')")
    _add_trust_flags(parser, with_names=True)
    args = parser.parse_args(argv)
    if args.video:
        if not evaluate.video_available():
            return _fail("--video needs moviepy, which is not installed; "
                         "pip install 'rltpu[video]' (or moviepy)")
        # Render off-screen: pygame needs no display (and complains without one).
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        from rltpu import agents, resume as resuming
        from rltpu.policy import load
        saved = resuming.read_run_config(args.run_dir, flag="")
        # Code the user names here is theirs to choose (it may differ from the run's, a
        # module renamed since, say); what config.json alone names must be built in or trusted.
        resuming.check_run_code(saved, args.run_dir,
                                saved["run"]["agent"] if args.agent else None,
                                saved["run"]["env"] if args.env else None, args.trust_run_code)
        # Named again on the command line, or trusted: the run's own agent and env.
        trusted = args.trust_run_code
        agent_name = args.agent or (saved["run"]["agent"] if trusted else None)
        agent = None if agent_name is None else agents.get(agent_name)
        env = args.env or (saved["run"]["env"] if trusted else None)
        policy = load(args.run_dir, args.checkpoint, agent=agent, env=env)
        report = evaluate.play(policy, args.episodes, args.video, args.seed)
    except ValueError as e:
        return _fail(str(e))
    print(json.dumps(report))
    return 0


def _add_trust_flags(parser: argparse.ArgumentParser, with_names: bool) -> None:
    """``--trust-run-code`` (and, for eval, ``--agent``/``--env``): how a user allows the
    ``module:Class`` code a run directory's config.json names (``resume.check_run_code``)."""
    from rltpu import resume as resuming
    if with_names:
        parser.add_argument("--agent", metavar="MODULE:CLASS", default=None,
                            help="the run's own agent, named again to allow importing it")
        parser.add_argument("--env", metavar="MODULE:CLASS", default=None,
                            help="the run's own env, named again to allow importing it")
    parser.add_argument(resuming.TRUST_FLAG, action="store_true",
                        default=False if with_names else argparse.SUPPRESS,
                        help="import the module:Class agent or env the run directory's "
                        "config.json names (only for run directories you trust: that code runs)")


def plot_main(argv: list[str]) -> int:
    parser = _Parser(prog="rltpu plot", description="Learning curves (return against env steps "
                     "and wall time, runs with the same settings as mean and spread) and "
                     "throughput of run directories, as a PNG; of a sweep directory, every "
                     "configuration with its seeds, the best highlighted.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR|SWEEP_DIR")
    parser.add_argument("--out", metavar="FILE", help="PNG to write (default: RUN_DIR/curves.png "
                        "for one run, curves.png here for several)")
    args = parser.parse_args(argv)
    from rltpu import plot, sweeps
    try:
        if any(sweeps.is_sweep_dir(d) for d in args.run_dirs):
            if len(args.run_dirs) > 1:
                raise ValueError("rltpu plot takes one sweep directory, or run directories")
            out = plot.plot_sweep(args.run_dirs[0], args.out or os.path.join(args.run_dirs[0],
                                                                             "curves.png"))
        else:
            out = plot.plot(args.run_dirs, args.out or plot.default_out(args.run_dirs))
    except ValueError as e:
        return _fail(str(e))
    print(out)
    return 0


def sweep_main(argv: list[str]) -> int:
    from rltpu import sweeps
    return sweeps.main(argv)


COMMANDS = {
    "train": "train an agent (flags, a --preset, a --config file), or --resume a run",
    "sweep": "run a sweep (grid, random draws, seeds) as Ray Tune trials, or --resume one",
    "eval": "play greedy episodes with a run's checkpoint (optionally on video)",
    "plot": "draw run directories' learning curves and throughput as a PNG",
}


def main_help() -> str:
    """``rltpu --help``: the commands, a line each."""
    import rltpu
    width = max(map(len, COMMANDS))
    lines = ["usage: rltpu [--version] COMMAND [flags]", "",
             f"rltpu {rltpu.__version__}: distributed RL with Ray actors and a data-parallel "
             "JAX learner.", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "rltpu COMMAND --help shows a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "sweep": sweep_main, "eval": eval_main, "plot": plot_main}
    if not argv:
        return _fail(f"no command; valid: {', '.join(commands)} (rltpu --help says more)")
    if argv[0] in ("-h", "--help"):
        print(main_help())
        return 0
    if argv[0] == "--version":
        import rltpu
        print(f"rltpu {rltpu.__version__}")
        return 0
    if argv[0] not in commands:
        return _fail(f"unknown command {argv[0]!r}; valid: {', '.join(commands)}"
                     + _did_you_mean(argv[0], list(commands)))
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
