"""``rltpu train`` (flags from the run config and the chosen agent's config, optionally
starting from a ``--preset``), ``rltpu train --resume RUN_DIR``, ``rltpu eval RUN_DIR`` and ``rltpu plot RUN_DIR ...``.

Every bad setting is one line on stderr naming the value and what is valid, and exit
status 2, before any process starts.
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
    def error(self, message):  # one line, not argparse's usage block
        raise SystemExit(_fail(message))


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


def _add_fields(parser: argparse.ArgumentParser, cls, title: str) -> None:
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
        kwargs: dict = {"dest": field.name, "default": argparse.SUPPRESS,
                        "help": f"{docs.get(field.name, '')} (default: {field.default})"}
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
        kwargs["metavar"] = kind.__name__.upper()
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
    from rltpu import agents, resume as resuming
    from rltpu.agents import presets
    from rltpu.config import RunConfig
    from rltpu.hosts import on_first_process

    pre = _Parser(add_help=False)
    pre.add_argument("--agent", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--distributed", default=None)
    pre.add_argument("--coordinator", default=None)
    pre.add_argument("--num-processes", type=int, default=None)
    pre.add_argument("--process-id", type=int, default=None)
    pre.add_argument("--learner-hosts", type=int, default=None)
    pre.add_argument("--learner-resources", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        placed = _placement(known)
        distributed = _distributed(known.distributed, known.coordinator, known.num_processes,
                                   known.process_id)
        if distributed is not None:
            # Before anything asks JAX for its devices (the mesh spans every host's), and
            # before a resumed run's settings are read (process 0 reads them for all).
            from rltpu import devices
            devices.initialize_distributed(**distributed)
        preset = None if known.preset is None else presets.get(known.preset)
        if preset is not None and known.resume is not None:
            raise ValueError("--preset cannot be combined with --resume (a resumed run keeps "
                             "its saved settings)")
        if preset is not None and known.agent not in (None, preset.agent):
            raise ValueError(f"--preset {known.preset} is for agent {preset.agent}, "
                             f"not {known.agent!r}")
        # With Ray-placed learners the run directory is on learner 0's host, which reads it.
        saved = None if known.resume is None or placed else on_first_process(
            lambda: resuming.read_run_config(known.resume))
        name = known.agent or (preset.agent if preset is not None else RunConfig.agent)
        agent = agents.get(name if saved is None else saved["run"]["agent"])
    except ValueError as e:
        return _fail(str(e))

    parser = _Parser(prog="rltpu train", description="Train an agent with Ray actors and a "
                     "data-parallel JAX learner.")
    _add_fields(parser, RunConfig, "run")
    _add_fields(parser, agent.Config, f"agent {agent.name}")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--preset", default=argparse.SUPPRESS,
                        help="start from a named set of run and agent settings (flags given "
                        f"override them): {', '.join(sorted(presets.PRESETS))}; see README.md")
    parser.add_argument("--resume", metavar="RUN_DIR", default=argparse.SUPPRESS,
                        help="continue the run in RUN_DIR from its newest complete checkpoint "
                        "(its saved settings; only step budget, target, logging, actor count "
                        "and checkpointing flags may change)")
    hosts = parser.add_argument_group(
        "multi-host learner (one rltpu train per host of a pod slice, all with the same flags)")
    hosts.add_argument("--distributed", choices=["auto"], default=argparse.SUPPRESS,
                       help="join the other hosts' learner processes with jax.distributed, "
                       "the TPU runtime telling where they are (Cloud TPU)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", default=argparse.SUPPRESS,
                       help="join them at this address (process 0's host) instead")
    hosts.add_argument("--num-processes", type=int, metavar="N", default=argparse.SUPPRESS,
                       help="learner processes in all (with --coordinator)")
    hosts.add_argument("--process-id", type=int, metavar="I", default=argparse.SUPPRESS,
                       help="this one's index, 0 to N-1; process 0 writes the run directory")
    hosts.add_argument("--learner-hosts", type=int, metavar="N", default=argparse.SUPPRESS,
                       help="or: let Ray start the N learner processes, one on each of N hosts "
                       "of the running cluster holding --learner-resources (run this once, "
                       "on any node)")
    hosts.add_argument("--learner-resources", metavar="JSON", default=argparse.SUPPRESS,
                       help='what each learner host holds and reserves (default: all of a TPU '
                       'host\'s chips, {"TPU": chips})')
    values = vars(parser.parse_args(argv))
    quiet = values.pop("quiet", False)
    resume = values.pop("resume", None)
    values.pop("preset", None)
    if preset is not None:  # the preset's settings, then the flags given
        values = {"agent": preset.agent, **preset.run, **preset.agent_config, **values}
    for name in ("distributed", "coordinator", "num_processes", "process_id", "learner_hosts",
                 "learner_resources"):
        values.pop(name, None)  # used above
    if placed:
        return _train_on_placed_learners(argv, placed, agent, values, resume)
    try:
        if saved is not None:
            values = _resumed(saved, values, agent, resume)
        run = _build(RunConfig, values)
        agent_config = _build(agent.Config, values)
        from rltpu.plan import validate
        plan = validate(agent, agent_config, run, resume=saved is not None)
        restored = None
        if saved is not None:
            restored = resuming.restore_on_first_process(run.run_dir, plan.fns.init)
    except ValueError as e:
        return _fail(str(e))
    from rltpu import checkpoint, storage
    from rltpu.run import train_plan
    from rltpu.faults import ActorsExhaustedError
    from rltpu.hosts import HostsDisagreeError
    from rltpu.validation import NonFiniteUpdatesError
    try:
        summary = train_plan(plan, quiet=quiet, resume=restored)
    except HostsDisagreeError as e:
        return _fail(str(e))
    except (NonFiniteUpdatesError, ActorsExhaustedError, storage.WriteError) as e:
        # Every complete checkpoint is good (a skipped update never changes the state, and
        # a failed write never replaces a complete checkpoint); a write cut off is cleaned
        # up when the run is resumed.
        last = checkpoint.list_checkpoints(plan.run_dir)[0]
        return _fail(f"{e}; the last good checkpoint is "
                     + (storage.join(checkpoint.checkpoint_dir(plan.run_dir), str(last[0]))
                        if last else "none"), status=1)
    print(json.dumps({k: summary[k] for k in ("run_dir", "env_steps", "time_to_target_s",
                                                "final_return", "env_sps")}))
    if summary["stopped_by"] is not None and summary["checkpoint"] is not None:
        print(f"rltpu: stopped by {summary['stopped_by']} after update "
              f"{summary['learner_updates']:,}; checkpoint {summary['checkpoint']} is complete. "
              f"Resume with: rltpu train --resume {summary['run_dir']}", file=sys.stderr)
    from rltpu import cluster
    if summary["stopped_by"] is not None or cluster.stuck():
        # Everything is written. After a signal Ray's processes may be gone (a preempted
        # VM signals them all), and Ray's client would then hold the exit for a minute in
        # its exit handlers, past the grace period: leave without them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def eval_main(argv: list[str]) -> int:
    from rltpu import agents
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
    args = parser.parse_args(argv)
    if args.video:
        if not evaluate.video_available():
            return _fail("--video needs moviepy, which is not installed; "
                         "pip install 'rltpu[video]' (or moviepy)")
        # Render off-screen: pygame needs no display (and complains without one).
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        agent, agent_config, saved = evaluate.load_run(args.run_dir, agents.get)
        from rltpu.config import RunConfig
        report = evaluate.evaluate(agent, agent_config, saved["run"]["env"], args.run_dir,
                                   args.checkpoint, args.episodes, args.video, args.seed,
                                   run=_build(RunConfig, saved["run"]))
    except ValueError as e:
        return _fail(str(e))
    print(json.dumps(report))
    return 0


def plot_main(argv: list[str]) -> int:
    parser = _Parser(prog="rltpu plot", description="Learning curves (return against env steps "
                     "and wall time, runs with the same settings as mean and spread) and "
                     "throughput of run directories, as a PNG.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", metavar="FILE", help="PNG to write (default: RUN_DIR/curves.png "
                        "for one run, curves.png here for several)")
    args = parser.parse_args(argv)
    from rltpu import plot
    try:
        out = plot.plot(args.run_dirs, args.out or plot.default_out(args.run_dirs))
    except ValueError as e:
        return _fail(str(e))
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "eval": eval_main, "plot": plot_main}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: rltpu {{{','.join(commands)}}} [flags]   (rltpu COMMAND --help for the flags)")
        return 0 if argv else USAGE_ERROR
    if argv[0] not in commands:
        return _fail(f"unknown command {argv[0]!r}; valid: {', '.join(commands)}")
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
